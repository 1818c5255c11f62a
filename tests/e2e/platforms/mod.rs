mod azure;
