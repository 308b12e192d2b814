//! The harness shared by cachesweeper's end-to-end tests, benchmarks and examples: real
//! memcached processes on free loopback ports.

#![deny(missing_docs)]

pub mod memcached;
