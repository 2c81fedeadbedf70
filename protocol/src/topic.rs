//! Topic names.
//!
//! A topic name is also a relative path under the broker's data directory, so the rules below
//! are chosen to make every valid name a safe file name on Linux:
//!
//! - 1 to [`MAX_TOPIC_LEN`] bytes;
//! - one or more segments separated by `/`, each 1 to [`MAX_SEGMENT_LEN`] bytes;
//! - a segment contains only ASCII letters, digits, `_`, `-` and `.`, and does not start with
//!   `.`, so `.`, `..` and hidden files are impossible;
//! - no leading or trailing `/` and no empty segment, so a name is never absolute.

use std::fmt;

/// Maximum length of a topic name in bytes.
pub const MAX_TOPIC_LEN: usize = 255;

/// Maximum length of one `/`-separated segment of a topic name in bytes.
pub const MAX_SEGMENT_LEN: usize = 64;

/// A validated topic name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Topic(String);

/// Why a topic name is invalid.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is empty.
    Empty,
    /// The name is longer than [`MAX_TOPIC_LEN`] bytes.
    TooLong(usize),
    /// A segment is empty: the name starts or ends with `/`, or contains `//`.
    EmptySegment,
    /// A segment is longer than [`MAX_SEGMENT_LEN`] bytes.
    SegmentTooLong(usize),
    /// A segment starts with `.`, which covers `.` and `..`.
    DotSegment,
    /// The name contains a byte outside the allowed set.
    InvalidByte(u8),
}

impl Topic {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Topic, TopicError> {
        let name = name.into();
        validate(name.as_bytes())?;
        Ok(Topic(name))
    }

    /// Validates a name given as raw bytes, as it arrives off the wire.
    pub fn from_bytes(raw: &[u8]) -> Result<Topic, TopicError> {
        validate(raw)?;
        // Validation admits only ASCII bytes, so the conversion cannot fail.
        let name = std::str::from_utf8(raw).map_err(|_| TopicError::InvalidByte(raw[0]))?;
        Ok(Topic(name.to_owned()))
    }

    /// Returns the name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Returns the `/`-separated segments of the name.
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

fn validate(raw: &[u8]) -> Result<(), TopicError> {
    if raw.is_empty() {
        return Err(TopicError::Empty);
    }
    if raw.len() > MAX_TOPIC_LEN {
        return Err(TopicError::TooLong(raw.len()));
    }
    for segment in raw.split(|&b| b == b'/') {
        validate_segment(segment)?;
    }
    Ok(())
}

fn validate_segment(segment: &[u8]) -> Result<(), TopicError> {
    if segment.is_empty() {
        return Err(TopicError::EmptySegment);
    }
    if segment.len() > MAX_SEGMENT_LEN {
        return Err(TopicError::SegmentTooLong(segment.len()));
    }
    if segment[0] == b'.' {
        return Err(TopicError::DotSegment);
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    match segment.iter().find(|&&b| !allowed(b)) {
        Some(&b) => Err(TopicError::InvalidByte(b)),
        None => Ok(()),
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl std::str::FromStr for Topic {
    type Err = TopicError;

    fn from_str(s: &str) -> Result<Topic, TopicError> {
        Topic::new(s)
    }
}

impl AsRef<str> for Topic {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicError::Empty => write!(f, "topic name is empty"),
            TopicError::TooLong(len) => {
                write!(f, "topic name is {len} bytes, the maximum is {MAX_TOPIC_LEN}")
            }
            TopicError::EmptySegment => write!(
                f,
                "topic name has an empty segment (leading, trailing or doubled '/')"
            ),
            TopicError::SegmentTooLong(len) => write!(
                f,
                "topic segment is {len} bytes, the maximum is {MAX_SEGMENT_LEN}"
            ),
            TopicError::DotSegment => write!(f, "topic segment starts with '.'"),
            TopicError::InvalidByte(b) => write!(
                f,
                "topic name contains byte 0x{b:02x}; allowed are ASCII letters, digits, '_', '-', '.' and '/'"
            ),
        }
    }
}

impl std::error::Error for TopicError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_hierarchical_names() {
        for name in [
            "live",
            "event/2026-final",
            "a/b/c.d_e-f",
            "x".repeat(64).as_str(),
        ] {
            assert!(Topic::new(name).is_ok(), "{name} should be valid");
        }
    }

    #[test]
    fn rejects_unsafe_names() {
        let cases: &[(&str, TopicError)] = &[
            ("", TopicError::Empty),
            ("..", TopicError::DotSegment),
            ("../x", TopicError::DotSegment),
            ("a/../b", TopicError::DotSegment),
            (".hidden", TopicError::DotSegment),
            ("/etc/passwd", TopicError::EmptySegment),
            ("a/", TopicError::EmptySegment),
            ("a//b", TopicError::EmptySegment),
            ("a\nb", TopicError::InvalidByte(b'\n')),
            ("a\0b", TopicError::InvalidByte(0)),
            ("a b", TopicError::InvalidByte(b' ')),
            ("a\\b", TopicError::InvalidByte(b'\\')),
        ];
        for (name, expected) in cases {
            assert_eq!(Topic::new(*name).unwrap_err(), *expected, "name {name:?}");
        }
    }

    #[test]
    fn rejects_long_names() {
        let long = vec!["a".repeat(60); 5].join("/");
        assert_eq!(
            Topic::new(long.clone()).unwrap_err(),
            TopicError::TooLong(long.len())
        );
        let long_segment = "b".repeat(65);
        assert_eq!(
            Topic::new(long_segment).unwrap_err(),
            TopicError::SegmentTooLong(65)
        );
    }

    #[test]
    fn rejects_non_ascii_bytes() {
        assert_eq!(
            Topic::from_bytes(&[0xff]).unwrap_err(),
            TopicError::InvalidByte(0xff)
        );
        assert_eq!(Topic::new("é").unwrap_err(), TopicError::InvalidByte(0xc3));
    }
}
