//! Key patterns for `POST /warm/pattern`: the glob subset that both the
//! in-process matcher ([`globset`]) and Redis `SCAN MATCH` understand.
//!
//! # Accepted syntax
//!
//! | syntax        | meaning                                                   |
//! |---------------|-----------------------------------------------------------|
//! | `*`           | any run of bytes, `:` and `/` included (keys are flat); `**` is the same as `*` |
//! | `?`           | exactly one byte                                          |
//! | `[abc]`       | one of the listed characters                              |
//! | `[a-z]`       | one character in the range (ASCII, `a <= z`)              |
//! | `[^a]` `[!a]` | one byte that is not listed (both are written `[^a]` for Redis) |
//! | `\c`          | the character `c` literally, inside or outside a class    |
//!
//! Refused: `{a,b}` alternation (Redis has none; write `\{` for a literal
//! brace), unbalanced brackets, an empty class, a class opening with `]`
//! (globset reads `[]a]` as "`]` or `a`", Redis as an empty class: write
//! `[\]a]`), reversed or non-ASCII ranges, non-ASCII characters inside
//! classes, a dangling `\`, control characters, the empty pattern and
//! patterns over [`MAX_PATTERN_LEN`] bytes.
//!
//! # How agreement is guaranteed
//!
//! The pattern is parsed once into tokens; both the globset pattern and the
//! Redis pattern are *rendered* from those tokens in a canonical form each
//! side reads unambiguously (for example a literal `-` in a class is escaped
//! for Redis and put last for globset, which knows no escapes inside
//! classes). globset runs in byte mode (`(?-u)`), so `?` and classes match one
//! byte, exactly like Redis, and the two agree on every key, ASCII or not.
//! Tests check both renderings against a reference matcher.

use std::fmt::Write as _;

use globset::{GlobBuilder, GlobMatcher};

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;

/// A validated glob pattern.
#[derive(Debug, Clone)]
pub struct KeyPattern {
    source: String,
    redis: String,
    matcher: GlobMatcher,
    /// `Some(text)` when the pattern has no wildcard at all: matching is
    /// string equality.
    literal: Option<String>,
    /// The pattern is `*` (or `**`...): everything matches.
    match_all: bool,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pub pattern: String,
    pub reason: String,
}

/// One element of a parsed pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    /// `?`
    Any,
    /// `*` (runs collapsed)
    Star,
    Class {
        negated: bool,
        items: Vec<ClassItem>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClassItem {
    Char(char),
    Range(char, char),
}

#[cfg(test)]
impl ClassItem {
    fn contains(self, b: u8) -> bool {
        match self {
            ClassItem::Char(c) => c as u32 == u32::from(b),
            ClassItem::Range(lo, hi) => (lo as u32..=hi as u32).contains(&u32::from(b)),
        }
    }
}

impl KeyPattern {
    /// Accepts `*`, `?`, `[abc]`, `[a-z]`, `[^a]`/`[!a]` and `\` escapes; refuses
    /// `{a,b}`, unbalanced brackets, empty or over-long patterns.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let err = |reason: &str| PatternError {
            pattern: truncate(pattern),
            reason: reason.to_string(),
        };
        if pattern.is_empty() {
            return Err(err("the pattern is empty"));
        }
        if pattern.len() > MAX_PATTERN_LEN {
            return Err(err(&format!(
                "the pattern is {} bytes long; the limit is {MAX_PATTERN_LEN}",
                pattern.len()
            )));
        }
        if pattern.chars().any(char::is_control) {
            return Err(err("the pattern contains a control character"));
        }
        let tokens = tokenize(pattern).map_err(|reason| err(&reason))?;

        let glob_text = render_globset(&tokens);
        let matcher = GlobBuilder::new(&glob_text)
            .literal_separator(false)
            .backslash_escape(true)
            .case_insensitive(false)
            .build()
            .map_err(|e| {
                err(&format!(
                    "internal: rendered glob {glob_text:?} refused: {e}"
                ))
            })?
            .compile_matcher();
        let literal = tokens
            .iter()
            .map(|t| match t {
                Token::Literal(c) => Some(*c),
                _ => None,
            })
            .collect::<Option<String>>();
        let match_all = tokens == [Token::Star];
        Ok(KeyPattern {
            source: pattern.to_string(),
            redis: render_redis(&tokens),
            matcher,
            literal,
            match_all,
        })
    }

    pub fn is_match(&self, key: &str) -> bool {
        if self.match_all {
            return true;
        }
        if let Some(lit) = &self.literal {
            return lit == key;
        }
        self.matcher.is_match(key)
    }

    /// The pattern in the syntax of Redis `SCAN MATCH`.
    pub fn redis_pattern(&self) -> &str {
        &self.redis
    }

    /// The pattern as given to [`KeyPattern::parse`].
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The exact key when the pattern has no wildcard (then a lookup beats a scan).
    pub fn as_literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// Whether the pattern matches every key (`*`).
    pub fn matches_everything(&self) -> bool {
        self.match_all
    }
}

impl std::fmt::Display for KeyPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for KeyPattern {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for KeyPattern {}

fn truncate(p: &str) -> String {
    p.chars().take(80).collect()
}

fn tokenize(pattern: &str) -> Result<Vec<Token>, String> {
    let mut out = Vec::new();
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if out.last() != Some(&Token::Star) {
                    out.push(Token::Star);
                }
            }
            '?' => out.push(Token::Any),
            '\\' => match chars.next() {
                Some(e) => out.push(Token::Literal(e)),
                None => return Err("dangling `\\` at the end".into()),
            },
            '{' | '}' => {
                return Err(
                    "`{a,b}` alternation is not supported (Redis SCAN MATCH has none); \
                     write `\\{` or `\\}` for a literal brace"
                        .into(),
                );
            }
            ']' => return Err("unbalanced `]`; write `\\]` for a literal bracket".into()),
            '[' => out.push(parse_class(&mut chars)?),
            c => out.push(Token::Literal(c)),
        }
    }
    Ok(out)
}

/// Parses a class after its `[`, up to and including its `]`.
fn parse_class(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Result<Token, String> {
    let negated = matches!(chars.peek(), Some('^') | Some('!'));
    if negated {
        chars.next();
    }
    // Members as (char, escaped) so that `\-` is never a range operator.
    let mut members: Vec<(char, bool)> = Vec::new();
    loop {
        match chars.next() {
            None => return Err("unbalanced `[`: the class is not closed".into()),
            Some(']') if members.is_empty() => {
                return Err(
                    "a class may not start with `]` (globset and Redis read it differently); \
                     write `\\]`"
                        .into(),
                );
            }
            Some(']') => break,
            Some('\\') => match chars.next() {
                Some(e) => members.push((e, true)),
                None => return Err("dangling `\\` in a class".into()),
            },
            Some('[') => return Err("`[` inside a class must be escaped as `\\[`".into()),
            Some(c) => members.push((c, false)),
        }
    }
    let mut items = Vec::new();
    let mut i = 0;
    while i < members.len() {
        let (c, _) = members[i];
        if !c.is_ascii() {
            return Err(format!(
                "non-ASCII character {c:?} in a class (Redis matches classes byte by byte)"
            ));
        }
        // `a-z`: an unescaped `-` between two members.
        if i + 2 < members.len() && members[i + 1] == ('-', false) {
            let (hi, _) = members[i + 2];
            if !hi.is_ascii() {
                return Err(format!("non-ASCII character {hi:?} in a class"));
            }
            if hi < c {
                return Err(format!("reversed range `{c}-{hi}`"));
            }
            if [c, hi].iter().any(|e| "]\\[-^!".contains(*e)) {
                return Err(format!(
                    "range `{c}-{hi}` may not start or end with one of `] \\ [ - ^ !`"
                ));
            }
            items.push(ClassItem::Range(c, hi));
            i += 3;
        } else {
            // A leading or trailing `-` (or an escaped one) is literal.
            items.push(ClassItem::Char(c));
            i += 1;
        }
    }
    Ok(Token::Class { negated, items })
}

/// Redis `SCAN MATCH` form: escapes every special character, `^` for negation.
fn render_redis(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        match t {
            Token::Literal(c) => {
                if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                    s.push('\\');
                }
                s.push(*c);
            }
            Token::Any => s.push('?'),
            Token::Star => s.push('*'),
            Token::Class { negated, items } => {
                s.push('[');
                if *negated {
                    s.push('^');
                }
                for item in items {
                    match *item {
                        ClassItem::Char(c) => {
                            if matches!(c, ']' | '\\' | '-' | '^' | '[') {
                                s.push('\\');
                            }
                            s.push(c);
                        }
                        // Range ends are never special (the parser refuses it).
                        ClassItem::Range(lo, hi) => {
                            let _ = write!(s, "{lo}-{hi}");
                        }
                    }
                }
                s.push(']');
            }
        }
    }
    s
}

/// globset form: escapes outside classes; inside, globset knows no escapes,
/// so `]` goes first, `-` last, and `^`/`!` never first.
fn render_globset(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        match t {
            Token::Literal(c) => {
                if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | ',') {
                    s.push('\\');
                }
                s.push(*c);
            }
            Token::Any => s.push('?'),
            Token::Star => s.push('*'),
            Token::Class { negated, items } => {
                let mut chars: Vec<char> = Vec::new();
                let mut ranges: Vec<(char, char)> = Vec::new();
                for item in items {
                    match *item {
                        ClassItem::Char(c) => chars.push(c),
                        ClassItem::Range(lo, hi) => ranges.push((lo, hi)),
                    }
                }
                let has = |chars: &mut Vec<char>, x: char| {
                    let before = chars.len();
                    chars.retain(|&c| c != x);
                    chars.len() != before
                };
                let close = has(&mut chars, ']');
                let mut dash = has(&mut chars, '-');
                let caret = has(&mut chars, '^');
                let bang = has(&mut chars, '!');
                let mut body = String::new();
                // globset reads `]` and `-` literally when first, `-` also
                // when last, and `^`/`!` as negation when first.
                if close {
                    body.push(']');
                } else if ranges.is_empty() && chars.is_empty() && dash {
                    body.push('-');
                    dash = false;
                }
                for (lo, hi) in &ranges {
                    let _ = write!(body, "{lo}-{hi}");
                }
                body.extend(chars.iter());
                if body.is_empty() && !*negated {
                    // Only `^` and/or `!`: no class can start with them
                    // without negating, so write a literal or an alternation.
                    match (caret, bang) {
                        (true, true) => s.push_str("{\\^,!}"),
                        (true, false) => s.push_str("\\^"),
                        _ => s.push('!'),
                    }
                    continue;
                }
                if caret {
                    body.push('^');
                }
                if bang {
                    body.push('!');
                }
                if dash {
                    body.push('-');
                }
                s.push('[');
                if *negated {
                    s.push('!');
                }
                s.push_str(&body);
                s.push(']');
            }
        }
    }
    s
}

/// Reference matcher on the parsed tokens (byte semantics), used by tests.
#[cfg(test)]
fn reference_match(tokens: &[Token], key: &[u8]) -> bool {
    match tokens.split_first() {
        None => key.is_empty(),
        Some((Token::Star, rest)) => (0..=key.len()).any(|i| reference_match(rest, &key[i..])),
        Some((Token::Any, rest)) => !key.is_empty() && reference_match(rest, &key[1..]),
        Some((Token::Literal(c), rest)) => {
            let mut buf = [0u8; 4];
            let enc = c.encode_utf8(&mut buf).as_bytes();
            key.starts_with(enc) && reference_match(rest, &key[enc.len()..])
        }
        Some((Token::Class { negated, items }, rest)) => match key.split_first() {
            None => false,
            Some((&b, tail)) => {
                (items.iter().any(|i| i.contains(b)) != *negated) && reference_match(rest, tail)
            }
        },
    }
}

/// A small model of Redis `stringmatchlen` (byte based), written from its
/// documented behaviour, to check [`KeyPattern::redis_pattern`].
#[cfg(test)]
fn redis_model_match(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| redis_model_match(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && redis_model_match(rest, &s[1..]),
        Some((b'\\', rest)) if !rest.is_empty() => {
            !s.is_empty() && s[0] == rest[0] && redis_model_match(&rest[1..], &s[1..])
        }
        Some((b'[', rest)) => {
            let Some((&c, tail)) = s.split_first() else {
                return false;
            };
            let mut p = rest;
            let not = p.first() == Some(&b'^');
            if not {
                p = &p[1..];
            }
            let mut matched = false;
            loop {
                match p {
                    [b'\\', e, more @ ..] => {
                        matched |= *e == c;
                        p = more;
                    }
                    [b']', more @ ..] => {
                        p = more;
                        break;
                    }
                    [] => break,
                    [lo, b'-', hi, more @ ..] => {
                        let (lo, hi) = if lo <= hi { (*lo, *hi) } else { (*hi, *lo) };
                        matched |= (lo..=hi).contains(&c);
                        p = more;
                    }
                    [x, more @ ..] => {
                        matched |= *x == c;
                        p = more;
                    }
                }
            }
            matched != not && redis_model_match(p, tail)
        }
        Some((&b, rest)) => !s.is_empty() && s[0] == b && redis_model_match(rest, &s[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn p(s: &str) -> KeyPattern {
        KeyPattern::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn star_crosses_colons_and_slashes() {
        let pat = p("user:*");
        assert!(pat.is_match("user:1:profile"));
        assert!(pat.is_match("user:a/b/c"));
        assert!(pat.is_match("user:"));
        assert!(!pat.is_match("users:1"));
        assert!(p("*:profile").is_match("user:1:profile"));
        assert!(p("a*b").is_match("a/x/y:z/b"));
    }

    #[test]
    fn double_star_is_star() {
        let pat = p("user:**:profile");
        assert!(pat.is_match("user:1:profile"));
        assert!(pat.is_match("user:1:2/3:profile"));
        assert_eq!(pat.redis_pattern(), "user:*:profile");
        assert!(p("**").matches_everything());
        assert!(p("**/x").is_match("a/b/x"));
    }

    #[test]
    fn question_mark_and_classes() {
        assert!(p("user:?").is_match("user:7"));
        assert!(!p("user:?").is_match("user:77"));
        assert!(p("k[abc]").is_match("kb"));
        assert!(!p("k[abc]").is_match("kd"));
        assert!(p("k[a-c]").is_match("kc"));
        assert!(p("k[0-9][0-9]").is_match("k42"));
        assert!(!p("k[^a]").is_match("ka"));
        assert!(p("k[^a]").is_match("kb"));
        assert!(!p("k[!a]").is_match("ka"));
        assert!(p("k[!a]").is_match("kb"));
    }

    #[test]
    fn negation_is_written_with_caret_for_redis() {
        assert_eq!(p("k[!a]").redis_pattern(), "k[^a]");
        assert_eq!(p("k[^a-c]").redis_pattern(), "k[^a-c]");
    }

    #[test]
    fn escapes() {
        let pat = p(r"a\*b");
        assert!(pat.is_match("a*b"));
        assert!(!pat.is_match("axb"));
        assert_eq!(pat.as_literal(), Some("a*b"));
        assert_eq!(pat.redis_pattern(), r"a\*b");
        assert!(p(r"a\{b\}").is_match("a{b}"));
        assert!(p(r"k[\]x]").is_match("k]"));
        assert!(p(r"k[\-x]").is_match("k-"));
        assert!(p(r"k[a\-c]").is_match("k-"));
        assert!(!p(r"k[a\-c]").is_match("kb"));
        assert!(p(r"q\?").is_match("q?"));
        assert!(!p(r"q\?").is_match("qx"));
    }

    #[test]
    fn literal_dash_at_class_edges() {
        let lead = p("k[-a]");
        assert!(lead.is_match("k-") && lead.is_match("ka") && !lead.is_match("kb"));
        let trail = p("k[a-]");
        assert!(trail.is_match("k-") && trail.is_match("ka") && !trail.is_match("k]"));
        // Redis would read `[a-]` as the range a..']': the rendering escapes it.
        assert_eq!(trail.redis_pattern(), r"k[a\-]");
    }

    #[test]
    fn caret_and_bang_as_members() {
        let pat = p(r"k[\^]");
        assert!(pat.is_match("k^") && !pat.is_match("ka"));
        let pat = p(r"k[\!]");
        assert!(pat.is_match("k!") && !pat.is_match("ka"));
        let pat = p(r"k[a^]");
        assert!(pat.is_match("k^") && pat.is_match("ka") && !pat.is_match("kb"));
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "{a,b}",
            "user:{1,2}",
            "a}",
            "[abc",
            "abc]",
            "[]",
            "[]a]",
            "[z-a]",
            "a\\",
            "a\nb",
            "a\tb",
            "[é]",
            "[a[]",
        ] {
            assert!(KeyPattern::parse(bad).is_err(), "{bad:?} should be refused");
        }
        let long = "a".repeat(MAX_PATTERN_LEN + 1);
        let e = KeyPattern::parse(&long).unwrap_err();
        assert!(e.reason.contains("limit"), "{e}");
        assert!(KeyPattern::parse(&"a".repeat(MAX_PATTERN_LEN)).is_ok());
    }

    #[test]
    fn error_message_names_pattern() {
        let e = KeyPattern::parse("x{a,b}").unwrap_err();
        assert_eq!(e.pattern, "x{a,b}");
        assert!(e.to_string().contains("alternation"));
    }

    #[test]
    fn literal_fast_path_and_accessors() {
        let pat = p("user:1:profile");
        assert_eq!(pat.as_literal(), Some("user:1:profile"));
        assert!(pat.is_match("user:1:profile"));
        assert!(!pat.is_match("user:1:profilex"));
        assert_eq!(pat.as_str(), "user:1:profile");
        assert_eq!(pat.to_string(), "user:1:profile");
        assert!(p("*").matches_everything());
        assert!(p("*").is_match(""));
    }

    #[test]
    fn non_ascii_keys_match_bytewise_like_redis() {
        assert!(p("caf*").is_match("café"));
        assert!(p("café").is_match("café"));
        // `?` is one byte, as in Redis: é is two.
        assert!(!p("caf?").is_match("café"));
        assert!(p("caf??").is_match("café"));
        assert!(redis_model_match(b"caf??", "café".as_bytes()));
    }

    /// Builds patterns from a small alphabet of pieces.
    fn pattern_strategy() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(":".to_string()),
            Just("/".to_string()),
            Just("-".to_string()),
            Just("*".to_string()),
            Just("**".to_string()),
            Just("?".to_string()),
            Just("[ab]".to_string()),
            Just("[^a]".to_string()),
            Just("[!b:]".to_string()),
            Just("[a-b]".to_string()),
            Just("[-a]".to_string()),
            Just("[a-]".to_string()),
            Just(r"[\]a]".to_string()),
            Just(r"[\^]".to_string()),
            Just(r"[\^\!]".to_string()),
            Just("[-^]".to_string()),
            Just("[!^]".to_string()),
            Just(r"[\-]".to_string()),
            Just(r"\*".to_string()),
            Just(r"\[".to_string()),
            Just(r"\]".to_string()),
            Just(r"\?".to_string()),
        ];
        prop::collection::vec(piece, 1..7).prop_map(|v| v.concat())
    }

    fn key_strategy() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop::sample::select(vec!['a', 'b', 'c', ':', '/', '-', '*', '?', '[', ']', '^']),
            0..9,
        )
        .prop_map(|v| v.into_iter().collect())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn globset_agrees_with_reference(pat in pattern_strategy(), key in key_strategy()) {
            let kp = KeyPattern::parse(&pat).unwrap();
            let tokens = tokenize(&pat).unwrap();
            prop_assert_eq!(kp.is_match(&key), reference_match(&tokens, key.as_bytes()),
                "pattern {:?} globset {:?} key {:?}", pat, render_globset(&tokens), key);
        }

        #[test]
        fn redis_form_agrees_with_reference(pat in pattern_strategy(), key in key_strategy()) {
            let kp = KeyPattern::parse(&pat).unwrap();
            let tokens = tokenize(&pat).unwrap();
            prop_assert_eq!(
                redis_model_match(kp.redis_pattern().as_bytes(), key.as_bytes()),
                reference_match(&tokens, key.as_bytes()),
                "pattern {:?} redis {:?} key {:?}", pat, kp.redis_pattern(), key);
        }

        #[test]
        fn every_key_matches_its_escaped_self(key in "[ -~]{1,20}") {
            let mut escaped = String::new();
            for c in key.chars() {
                if "*?[]{}\\".contains(c) { escaped.push('\\'); }
                escaped.push(c);
            }
            let kp = KeyPattern::parse(&escaped).unwrap();
            prop_assert!(kp.is_match(&key));
            prop_assert!(redis_model_match(kp.redis_pattern().as_bytes(), key.as_bytes()));
        }
    }
}
