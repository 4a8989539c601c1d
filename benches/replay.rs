//! Replay throughput benchmark (placeholder until the replay module lands).

fn main() {}
