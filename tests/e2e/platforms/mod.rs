mod splunk;
