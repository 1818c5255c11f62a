mod elastic;
