//! The platform sinks end to end: the real binary against each platform's receiver.

mod azure;
mod elastic;
mod splunk;
