//! The platform sinks end to end: the real binary against each platform's receiver (a
//! real server where one runs here: NATS).

mod azure;
mod elastic;
mod nats;
mod splunk;
