//! Helpers shared by the integration tests. Each test file pulls them in with
//! `mod support;`; add one `pub mod ...;` line per helper module.
//!
//! Every test binary compiles this whole folder but uses only part of it, so
//! unused helpers are allowed here rather than warned about in every binary.
#![allow(dead_code)]

pub mod origin;
pub mod redis;
pub mod redis_cluster;
pub mod server;
