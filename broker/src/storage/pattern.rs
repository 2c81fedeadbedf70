//! Glob patterns over topic names, which select per-topic storage settings.
//!
//! `*` matches any run of characters within one `/`-separated segment, `**` matches any run of
//! characters including `/`, and every other character matches itself. So `live/*` matches
//! `live/final` but not `live/final/chat`, and `live/**` matches both but not `live` itself.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A parsed topic name pattern.
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct TopicPattern {
    text: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Byte(u8),
    /// `*`: any bytes except `/`.
    Star,
    /// `**`: any bytes.
    DoubleStar,
}

/// Error for an invalid topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PatternError {
    /// The pattern is empty.
    #[error("topic pattern is empty")]
    Empty,
    /// Three or more `*` in a row have no meaning.
    #[error("topic pattern {0:?} has three or more '*' in a row; use '*' or '**'")]
    TooManyStars(String),
    /// The pattern contains a byte that no topic name contains.
    #[error(
        "topic pattern {pattern:?} contains {byte:?}, which no topic name contains; topic names \
         use ASCII letters, digits, '_', '-', '.' and '/'"
    )]
    InvalidByte {
        /// The whole pattern.
        pattern: String,
        /// The offending character.
        byte: char,
    },
}

impl TopicPattern {
    /// Parses `text`.
    pub fn new(text: &str) -> Result<TopicPattern, PatternError> {
        if text.is_empty() {
            return Err(PatternError::Empty);
        }
        let bytes = text.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let stars = bytes[i..].iter().take_while(|&&b| b == b'*').count();
            match stars {
                0 => {
                    check_byte(text, bytes[i])?;
                    tokens.push(Token::Byte(bytes[i]));
                    i += 1;
                }
                1 => {
                    tokens.push(Token::Star);
                    i += 1;
                }
                2 => {
                    tokens.push(Token::DoubleStar);
                    i += 2;
                }
                _ => return Err(PatternError::TooManyStars(text.to_owned())),
            }
        }
        Ok(TopicPattern {
            text: text.to_owned(),
            tokens,
        })
    }

    /// Returns the pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Returns whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let name = name.as_bytes();
        // matched[j]: the tokens so far can match exactly the first j bytes of the name. Topic
        // names are at most 255 bytes, so this costs at most 256 steps per token.
        let mut matched = vec![false; name.len() + 1];
        matched[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; name.len() + 1];
            for j in 0..=name.len() {
                next[j] = match *token {
                    Token::Byte(b) => j > 0 && matched[j - 1] && name[j - 1] == b,
                    Token::Star => matched[j] || (j > 0 && next[j - 1] && name[j - 1] != b'/'),
                    Token::DoubleStar => matched[j] || (j > 0 && next[j - 1]),
                };
            }
            matched = next;
        }
        matched[name.len()]
    }
}

impl TryFrom<String> for TopicPattern {
    type Error = PatternError;

    fn try_from(text: String) -> Result<TopicPattern, PatternError> {
        TopicPattern::new(&text)
    }
}

impl From<TopicPattern> for String {
    fn from(pattern: TopicPattern) -> String {
        pattern.text
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({:?})", self.text)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn check_byte(pattern: &str, byte: u8) -> Result<(), PatternError> {
    let allowed = byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.' | b'/');
    if allowed {
        return Ok(());
    }
    Err(PatternError::InvalidByte {
        pattern: pattern.to_owned(),
        byte: char::from(byte),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, name: &str) -> bool {
        TopicPattern::new(pattern).unwrap().matches(name)
    }

    #[test]
    fn literal_matches_only_itself() {
        assert!(matches("live/final", "live/final"));
        assert!(!matches("live/final", "live/finals"));
        assert!(!matches("live/final", "live"));
    }

    #[test]
    fn star_stays_within_one_segment() {
        assert!(matches("live/*", "live/final"));
        assert!(!matches("live/*", "live/final/chat"));
        assert!(matches("live/*/chat", "live/final/chat"));
        assert!(matches("live-*", "live-2026"));
        assert!(matches("*", "news"));
        assert!(!matches("*", "news/today"));
    }

    #[test]
    fn double_star_crosses_segments() {
        assert!(matches("live/**", "live/final"));
        assert!(matches("live/**", "live/final/chat"));
        assert!(!matches("live/**", "live"));
        assert!(matches("**", "a/b/c"));
        assert!(matches("**/chat", "a/b/chat"));
        assert!(!matches("**/chat", "chat"));
    }

    #[test]
    fn invalid_patterns_are_rejected() {
        assert_eq!(TopicPattern::new(""), Err(PatternError::Empty));
        assert!(matches!(
            TopicPattern::new("a/***"),
            Err(PatternError::TooManyStars(_))
        ));
        assert!(matches!(
            TopicPattern::new("a b"),
            Err(PatternError::InvalidByte { byte: ' ', .. })
        ));
        assert!(matches!(
            TopicPattern::new("a/?"),
            Err(PatternError::InvalidByte { byte: '?', .. })
        ));
    }

    #[test]
    fn pattern_deserializes_from_string() {
        #[derive(Deserialize)]
        struct Wrapper {
            pattern: TopicPattern,
        }
        let parsed: Wrapper = toml::from_str(r#"pattern = "live/**""#).unwrap();
        assert!(parsed.pattern.matches("live/x/y"));
        assert!(toml::from_str::<Wrapper>(r#"pattern = "a b""#).is_err());
    }
}
