//! The `splunk_hec` sink against [`Hec`], a collector that behaves as Splunk documents HEC
//! (see its module doc): first the collector itself, driven by hand, then the real agent.
//!
//! [`Hec`]: crate::harness::platforms::splunk::Hec

mod receiver;
