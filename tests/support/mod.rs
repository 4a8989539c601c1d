//! Helpers shared by the integration tests. Each test file pulls them in with
//! `mod support;`; add one `pub mod ...;` line per helper module.
//!
//! Every test binary compiles this whole folder but uses only part of it, so
//! unused helpers are allowed here rather than warned about in every binary.
#![allow(dead_code)]

pub mod lateness;
pub mod origin;
pub mod redis;
pub mod redis_cluster;
pub mod server;

/// The per-mode figures issue 3 asks `warming replay --json` to report.
pub const REPLAY_FIELDS: [&str; 11] = [
    "requests",
    "hits",
    "hit_ratio",
    "misses_cold",
    "misses_expired",
    "misses_evicted",
    "origin_fetches_demand",
    "origin_fetches_warming",
    "wasted_warms",
    "peak_origin_rps",
    "stampedes",
];
