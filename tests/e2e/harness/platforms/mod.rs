pub mod splunk;
