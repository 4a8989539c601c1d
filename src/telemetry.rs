//! Metric names and the per-instance Prometheus recorder. (being written)
