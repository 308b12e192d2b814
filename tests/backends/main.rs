//! The backends: the conformance suite on every one (and through a forwarding wrapper), the
//! round trips a page costs on each, and several memcached servers.

#[path = "../common/mod.rs"]
mod common;

mod cluster;
mod conformance;
mod round_trips;
