//! The harness shared by cachesweeper's end-to-end tests, benchmarks and examples: real
//! memcached, Redis (standalone, and a three-master Redis Cluster), PostgreSQL and Varnish
//! processes on free loopback ports, and temporary database files.

#![deny(missing_docs)]

pub mod memcached;
pub mod postgres;
mod process;

pub use process::free_port;
pub mod redis;
pub mod silent;
pub mod slow_link;
pub mod temp_file;
pub mod varnish;
