//! Typed Rust client of the HTTP API. (stub: being written)
