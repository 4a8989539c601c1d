//! Origin rate limiter: GCRA (governor), rate changeable at run time. (stub)

/// Limits requests to the origin; 0 requests/s means unlimited.
pub struct OriginLimiter {}

impl OriginLimiter {
    pub fn new(_rps: u32) -> Self { todo!() }
    /// Takes effect for the next `acquire`.
    pub fn set_rate(&self, _rps: u32) { todo!() }
    pub fn rate(&self) -> u32 { todo!() }
    /// Waits for a slot; returns true when the caller had to wait (a rate-limit hit).
    pub async fn acquire(&self) -> bool { todo!() }
}
