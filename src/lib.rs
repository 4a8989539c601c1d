//! # warming
//!
//! A proactive cache-warming service: it fills a cache (embedded or Redis)
//! with values fetched from a slow origin *before* clients ask for them, on
//! demand, on schedules and by prediction, while protecting the origin (rate
//! limit, retries with backoff, emergency stop) and reporting everything.
//!
//! ## Map
//! - [`config`]: one typed configuration (defaults -> file -> env -> validate).
//! - [`api`]: the HTTP layer (axum): the only place that knows JSON and status codes.
//! - [`warm`]: the engine: intake and dedup, priority queue, workers, jobs,
//!   emergency stop, strategies, origin cost model.
//! - [`access`]: bounded access history; [`predict`]: predictors built on it.
//! - [`schedule`]: cron schedules (built-in and custom, persisted).
//! - [`origin`]: the origin trait, HTTP and demo origins, rate limiter, retries.
//! - [`cache`]: the cache trait, embedded (moka) and Redis backends, batched writes.
//! - [`readthrough`]: coalesced read-through for `GET /cache/{key}`.
//! - [`events`]: warm-completed events to SSE subscribers and NATS JetStream.
//! - [`telemetry`]: metric names and the per-instance Prometheus recorder.
//! - [`client`]: a typed client of the HTTP API; [`protocol`]: its wire types.
//!
//! A warm request flows one way: `api -> warm (intake, queue) -> worker ->
//! origin -> cache -> events/metrics`; only the worker joins origin and cache.
//! See ARCHITECTURE.md for the full picture.

#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod cache;
pub mod client;
pub mod cluster;
pub mod config;
pub mod events;
pub mod glob;
pub mod keys;
pub mod origin;
pub mod predict;
pub mod protocol;
pub mod readthrough;
pub mod replay;
pub mod schedule;
pub mod telemetry;
pub mod warm;

/// Compiles the Rust examples of the README, so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
