//! The client's error type.

use std::io;

use chorus_protocol::{DecodeError, ErrorCode, ErrorFrame};

/// Error of a client operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Reading from or writing to the connection failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),

    /// No TCP connection could be opened to the server.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Address as given by the caller.
        addr: String,
        /// Error of the last address tried.
        #[source]
        source: io::Error,
    },

    /// The server sent bytes that are not a valid frame, or a preamble of another protocol.
    #[error("invalid data from the server: {0}")]
    Decode(#[from] DecodeError),

    /// The server sent an ERROR frame.
    #[error("server error {code}{}: {message}", topic_suffix(topic))]
    Server {
        /// Error code sent by the server.
        code: ErrorCode,
        /// Topic the error concerns; empty when it concerns the connection.
        topic: String,
        /// The server's explanation.
        message: String,
        /// Whether the server closes the connection after the error.
        close: bool,
    },

    /// The server acknowledged a publish with a code other than OK, so it did not store it.
    #[error("publish {seq} rejected by the server: {code}")]
    Rejected {
        /// Sequence number of the rejected publish.
        seq: u64,
        /// Reason for the rejection.
        code: ErrorCode,
    },

    /// The server closed the connection.
    #[error("connection closed by the server")]
    Closed,

    /// No data arrived within the read timeout, or the handshake did not finish within the
    /// connect timeout.
    #[error("timed out waiting for the server")]
    Timeout,

    /// The server sent a frame that is not allowed at this point; the text names its type.
    #[error("unexpected {0} frame from the server")]
    Unexpected(String),

    /// The address is not of the form `host:port`.
    #[error("invalid server address {0:?}: expected host:port, such as 127.0.0.1:7400")]
    InvalidAddress(String),

    /// A publish payload is larger than the server accepts, so it was not sent.
    #[error("payload of {len} bytes exceeds the server's maximum of {max} bytes")]
    PayloadTooLarge {
        /// Payload length in bytes.
        len: usize,
        /// Largest payload the server accepts, in bytes.
        max: u32,
    },

    /// The topic was deleted and created again, so offsets restarted under a new stream id.
    ///
    /// [`crate::Subscriber`] returns this once per change and then continues with the new
    /// stream.
    #[error("topic was recreated: stream {old} was replaced by stream {new}")]
    StreamChanged {
        /// Stream id the subscriber held.
        old: u64,
        /// Stream id the topic has now.
        new: u64,
    },
}

impl ClientError {
    /// Returns whether a [`crate::Subscriber`] recovers from this error by reconnecting.
    ///
    /// Lost connections, timeouts, damaged frames and the server errors SHUTTING_DOWN,
    /// SLOW_CONSUMER, TIMEOUT and STORAGE_FAILED are transient. A peer that does not speak
    /// this protocol version, an invalid address and every other server error are permanent.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Io(_)
            | ClientError::Connect { .. }
            | ClientError::Closed
            | ClientError::Timeout => true,
            ClientError::Decode(e) => !matches!(
                e,
                DecodeError::BadPreamble | DecodeError::UnsupportedVersion(_)
            ),
            ClientError::Server { code, .. } => matches!(
                code,
                ErrorCode::ShuttingDown
                    | ErrorCode::SlowConsumer
                    | ErrorCode::Timeout
                    | ErrorCode::StorageFailed
            ),
            _ => false,
        }
    }
}

impl From<ErrorFrame> for ClientError {
    fn from(frame: ErrorFrame) -> ClientError {
        ClientError::Server {
            code: frame.code,
            topic: frame.topic,
            message: frame.message,
            close: frame.close,
        }
    }
}

fn topic_suffix(topic: &str) -> String {
    if topic.is_empty() {
        String::new()
    } else {
        format!(" on topic {topic}")
    }
}
