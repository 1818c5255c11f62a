pub mod elastic;
pub mod splunk;
