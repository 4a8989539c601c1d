//! Rules every cache key must follow before the service accepts it.

/// Why a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("key is empty")]
    Empty,
    #[error("key is {len} bytes long; the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("key {0:?} contains a control character")]
    Control(String),
    #[error("key {0:?} is a relative path segment and cannot be sent to an origin")]
    DotSegment(String),
}

/// Accepts any non-empty key of at most `max_len` bytes without control
/// characters, except `.` and `..` (URL parsers collapse them, even encoded).
pub fn validate_key(key: &str, max_len: usize) -> Result<(), KeyError> {
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > max_len {
        return Err(KeyError::TooLong {
            len: key.len(),
            max: max_len,
        });
    }
    if key.chars().any(char::is_control) {
        return Err(KeyError::Control(key.chars().take(64).collect()));
    }
    if key == "." || key == ".." {
        return Err(KeyError::DotSegment(key.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        assert!(validate_key("user:1:profile", 10).is_err());
        assert!(validate_key("user:1", 10).is_ok());
        assert_eq!(validate_key("", 10), Err(KeyError::Empty));
        assert!(matches!(
            validate_key("a\nb", 10),
            Err(KeyError::Control(_))
        ));
        assert!(matches!(
            validate_key("..", 10),
            Err(KeyError::DotSegment(_))
        ));
        assert!(validate_key("../admin", 10).is_ok());
    }
}
