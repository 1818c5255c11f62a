//! Receivers that play the platforms gapless sends to, each following the platform's own
//! documentation (cited in its module), not gapless's code.

pub mod azure;
pub mod elastic;
pub mod splunk;
