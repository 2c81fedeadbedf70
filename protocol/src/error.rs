//! Error codes carried in ERROR and PUBLISH_ACK frames, and decoding errors.

use std::fmt;

use crate::topic::TopicError;

/// A numeric error code as carried on the wire.
///
/// Codes are stable: a code is never reused for another meaning. Peers must accept codes they do
/// not know and treat them as [`ErrorCode::Unknown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// No error; used in PUBLISH_ACK for an accepted publish.
    Ok,
    /// The connection preamble did not start with the magic bytes.
    BadPreamble,
    /// The peer speaks a protocol version this side does not support.
    UnsupportedVersion,
    /// A frame's declared body length exceeds the receiver's maximum.
    FrameTooLarge,
    /// A frame's CRC-32 does not match its bytes.
    BadCrc,
    /// A frame has a type byte this side does not know.
    UnknownFrameType,
    /// A frame's body does not match the layout of its type, or uses reserved bits.
    MalformedFrame,
    /// A topic name breaks the naming rules.
    InvalidTopic,
    /// The connection closed in the middle of a frame.
    TruncatedFrame,
    /// A frame arrived that is not allowed in the connection's current state.
    UnexpectedFrame,
    /// A publish payload exceeds the broker's maximum payload size.
    PayloadTooLarge,
    /// A subscription asked for an offset past the end of the topic.
    OffsetOutOfRange,
    /// The subscriber's outbound queue reached its byte limit.
    SlowConsumer,
    /// The broker failed to store or read the topic's log.
    StorageFailed,
    /// The broker is shutting down.
    ShuttingDown,
    /// The peer sent no HELLO, or nothing at all, within the allowed time.
    Timeout,
    /// The connection already has the maximum number of subscriptions.
    TooManySubscriptions,
    /// The topic does not exist (it has never been published to).
    TopicNotFound,
    /// A publish reached an origin that the cluster's topic map does not assign the topic to.
    WrongOrigin,
    /// A relay could not forward a publish upstream, or lost its upstream link before the
    /// acknowledgement came back; a retry may store the comment twice.
    UpstreamUnavailable,
    /// The server requires a valid token and HELLO carried an invalid one: a bad signature, an
    /// expired or malformed token, or missing claims.
    Unauthenticated,
    /// The session's token expired while the connection was open.
    TokenExpired,
    /// The session's role or topic patterns do not allow the request.
    Forbidden,
    /// The publishing user is banned by a moderator.
    Banned,
    /// The user published faster than the per-user rate limit allows.
    RateLimited,
    /// The topic is in slow mode and the user's previous comment is too recent.
    SlowMode,
    /// The user published the same text to the topic within the duplicate window.
    DuplicateComment,
    /// The comment contains a word on the server's blocked list.
    BlockedContent,
    /// A moderation action named a comment that the topic does not keep.
    CommentNotFound,
    /// A code this side does not know.
    Unknown(u16),
}

impl ErrorCode {
    /// Returns the code's wire value.
    pub fn as_u16(self) -> u16 {
        match self {
            ErrorCode::Ok => 0,
            ErrorCode::BadPreamble => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::FrameTooLarge => 3,
            ErrorCode::BadCrc => 4,
            ErrorCode::UnknownFrameType => 5,
            ErrorCode::MalformedFrame => 6,
            ErrorCode::InvalidTopic => 7,
            ErrorCode::TruncatedFrame => 8,
            ErrorCode::UnexpectedFrame => 9,
            ErrorCode::PayloadTooLarge => 10,
            ErrorCode::OffsetOutOfRange => 11,
            ErrorCode::SlowConsumer => 12,
            ErrorCode::StorageFailed => 13,
            ErrorCode::ShuttingDown => 14,
            ErrorCode::Timeout => 15,
            ErrorCode::TooManySubscriptions => 16,
            ErrorCode::TopicNotFound => 17,
            ErrorCode::WrongOrigin => 18,
            ErrorCode::UpstreamUnavailable => 19,
            ErrorCode::Unauthenticated => 20,
            ErrorCode::TokenExpired => 21,
            ErrorCode::Forbidden => 22,
            ErrorCode::Banned => 23,
            ErrorCode::RateLimited => 24,
            ErrorCode::SlowMode => 25,
            ErrorCode::DuplicateComment => 26,
            ErrorCode::BlockedContent => 27,
            ErrorCode::CommentNotFound => 28,
            ErrorCode::Unknown(code) => code,
        }
    }

    /// Maps a wire value to a code.
    pub fn from_u16(value: u16) -> ErrorCode {
        match value {
            0 => ErrorCode::Ok,
            1 => ErrorCode::BadPreamble,
            2 => ErrorCode::UnsupportedVersion,
            3 => ErrorCode::FrameTooLarge,
            4 => ErrorCode::BadCrc,
            5 => ErrorCode::UnknownFrameType,
            6 => ErrorCode::MalformedFrame,
            7 => ErrorCode::InvalidTopic,
            8 => ErrorCode::TruncatedFrame,
            9 => ErrorCode::UnexpectedFrame,
            10 => ErrorCode::PayloadTooLarge,
            11 => ErrorCode::OffsetOutOfRange,
            12 => ErrorCode::SlowConsumer,
            13 => ErrorCode::StorageFailed,
            14 => ErrorCode::ShuttingDown,
            15 => ErrorCode::Timeout,
            16 => ErrorCode::TooManySubscriptions,
            17 => ErrorCode::TopicNotFound,
            18 => ErrorCode::WrongOrigin,
            19 => ErrorCode::UpstreamUnavailable,
            20 => ErrorCode::Unauthenticated,
            21 => ErrorCode::TokenExpired,
            22 => ErrorCode::Forbidden,
            23 => ErrorCode::Banned,
            24 => ErrorCode::RateLimited,
            25 => ErrorCode::SlowMode,
            26 => ErrorCode::DuplicateComment,
            27 => ErrorCode::BlockedContent,
            28 => ErrorCode::CommentNotFound,
            other => ErrorCode::Unknown(other),
        }
    }

    /// Returns the code's name as written in the specification, such as `BAD_CRC`.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Ok => "OK",
            ErrorCode::BadPreamble => "BAD_PREAMBLE",
            ErrorCode::UnsupportedVersion => "UNSUPPORTED_VERSION",
            ErrorCode::FrameTooLarge => "FRAME_TOO_LARGE",
            ErrorCode::BadCrc => "BAD_CRC",
            ErrorCode::UnknownFrameType => "UNKNOWN_FRAME_TYPE",
            ErrorCode::MalformedFrame => "MALFORMED_FRAME",
            ErrorCode::InvalidTopic => "INVALID_TOPIC",
            ErrorCode::TruncatedFrame => "TRUNCATED_FRAME",
            ErrorCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::OffsetOutOfRange => "OFFSET_OUT_OF_RANGE",
            ErrorCode::SlowConsumer => "SLOW_CONSUMER",
            ErrorCode::StorageFailed => "STORAGE_FAILED",
            ErrorCode::ShuttingDown => "SHUTTING_DOWN",
            ErrorCode::Timeout => "TIMEOUT",
            ErrorCode::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            ErrorCode::TopicNotFound => "TOPIC_NOT_FOUND",
            ErrorCode::WrongOrigin => "WRONG_ORIGIN",
            ErrorCode::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::Forbidden => "FORBIDDEN",
            ErrorCode::Banned => "BANNED",
            ErrorCode::RateLimited => "RATE_LIMITED",
            ErrorCode::SlowMode => "SLOW_MODE",
            ErrorCode::DuplicateComment => "DUPLICATE_COMMENT",
            ErrorCode::BlockedContent => "BLOCKED_CONTENT",
            ErrorCode::CommentNotFound => "COMMENT_NOT_FOUND",
            ErrorCode::Unknown(_) => "UNKNOWN",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.as_u16())
    }
}

/// Why a byte sequence could not be decoded.
///
/// Every variant maps to the [`ErrorCode`] that the receiver sends back before closing.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The preamble's magic bytes are wrong.
    BadPreamble,
    /// The preamble names a protocol version other than [`crate::VERSION`].
    UnsupportedVersion(u16),
    /// The declared body length exceeds the configured maximum.
    FrameTooLarge {
        /// Declared body length in bytes.
        len: u32,
        /// Maximum body length in bytes.
        max: u32,
    },
    /// The CRC-32 in the header does not match the frame.
    BadCrc {
        /// CRC carried in the header.
        expected: u32,
        /// CRC computed over the received bytes.
        actual: u32,
    },
    /// The frame type byte is not one of the defined types.
    UnknownFrameType(u8),
    /// The body does not follow its type's layout; the text names the field.
    Malformed(&'static str),
    /// A topic field breaks the naming rules.
    InvalidTopic(TopicError),
}

impl DecodeError {
    /// Returns the wire code that reports this error to the peer.
    pub fn code(&self) -> ErrorCode {
        match self {
            DecodeError::BadPreamble => ErrorCode::BadPreamble,
            DecodeError::UnsupportedVersion(_) => ErrorCode::UnsupportedVersion,
            DecodeError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            DecodeError::BadCrc { .. } => ErrorCode::BadCrc,
            DecodeError::UnknownFrameType(_) => ErrorCode::UnknownFrameType,
            DecodeError::Malformed(_) => ErrorCode::MalformedFrame,
            DecodeError::InvalidTopic(_) => ErrorCode::InvalidTopic,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::BadPreamble => write!(f, "invalid preamble: expected magic \"CHORUS\""),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "unsupported protocol version {v}, this side speaks {}",
                crate::VERSION
            ),
            DecodeError::FrameTooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the maximum of {max}")
            }
            DecodeError::BadCrc { expected, actual } => write!(
                f,
                "frame CRC mismatch: header has {expected:#010x}, bytes give {actual:#010x}"
            ),
            DecodeError::UnknownFrameType(t) => write!(f, "unknown frame type 0x{t:02x}"),
            DecodeError::Malformed(what) => write!(f, "malformed frame: {what}"),
            DecodeError::InvalidTopic(e) => write!(f, "invalid topic: {e}"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<TopicError> for DecodeError {
    fn from(e: TopicError) -> DecodeError {
        DecodeError::InvalidTopic(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for value in 0..=40u16 {
            assert_eq!(ErrorCode::from_u16(value).as_u16(), value);
        }
    }
}
