//! HTTP API (axum). (being written)
