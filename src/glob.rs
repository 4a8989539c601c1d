//! Key patterns for `POST /warm/pattern`: the glob subset that both the
//! in-process matcher and Redis `SCAN MATCH` understand. (stub: being written)

/// A validated glob pattern.
#[derive(Debug, Clone)]
pub struct KeyPattern {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

impl KeyPattern {
    /// Accepts `*`, `?`, `[abc]`, `[a-z]`, `[^a]`/`[!a]` and `\` escapes; refuses
    /// `{a,b}`, unbalanced brackets, empty or over-long patterns.
    pub fn parse(_pattern: &str) -> Result<Self, PatternError> { todo!() }
    pub fn is_match(&self, _key: &str) -> bool { todo!() }
    /// The pattern in the syntax of Redis `SCAN MATCH`.
    pub fn redis_pattern(&self) -> &str { todo!() }
    pub fn as_str(&self) -> &str { todo!() }
}
