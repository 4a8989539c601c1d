//! The warming engine. (being written)

pub mod cost;
pub mod strategy;
