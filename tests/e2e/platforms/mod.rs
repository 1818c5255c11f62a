mod elastic;
mod splunk;
