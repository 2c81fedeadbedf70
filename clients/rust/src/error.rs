//! The client's error type.

use std::io;
use std::path::PathBuf;

use chorus_protocol::{DecodeError, ErrorCode, ErrorFrame};

/// Error of a client operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Reading from or writing to the connection failed.
    #[error("connection I/O failed: {0}")]
    Io(#[from] io::Error),

    /// No TCP connection could be opened to the server.
    #[error("cannot connect to {addr}")]
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

    /// The server refused a moderation action.
    #[error("moderation action {seq} refused by the server: {code}")]
    Refused {
        /// Sequence number of the refused action.
        seq: u64,
        /// Reason for the refusal.
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

    /// The TLS handshake failed, or a TLS record from the server was rejected. The rustls error
    /// gives the reason, such as `invalid peer certificate: UnknownIssuer`.
    #[error("TLS error: {0}")]
    Tls(rustls::Error),

    /// A file of the TLS settings, or the system's CA certificates, could not be loaded.
    #[error("cannot load the TLS {what}{}", path_suffix(path.as_ref()))]
    TlsSetup {
        /// Item that failed to load, such as "CA certificates".
        what: &'static str,
        /// File it was loaded from; `None` for the system's CA certificates.
        path: Option<PathBuf>,
        /// Cause of the failure.
        #[source]
        source: io::Error,
    },

    /// The TLS server name is neither a DNS name nor an IP address.
    #[error("invalid TLS server name {0:?}: expected a DNS name or an IP address")]
    InvalidServerName(String),

    /// A plaintext connection got a TLS record back, so the port serves TLS only.
    #[error("the server speaks TLS on this port; connect with TLS")]
    TlsRequired,

    /// A TLS ClientHello got a reply that is not TLS, so the port does not serve TLS.
    #[error("the server does not speak TLS on this port; connect without TLS or to its TLS port")]
    TlsNotOffered,

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
    /// this protocol version, an invalid address, TLS failures (a rejected certificate, a port
    /// that does or does not serve TLS, unreadable TLS files) and every other server error are
    /// permanent.
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

fn path_suffix(path: Option<&PathBuf>) -> String {
    match path {
        Some(path) => format!(" from {}", path.display()),
        None => " from the system's certificate store".to_owned(),
    }
}

fn topic_suffix(topic: &str) -> String {
    if topic.is_empty() {
        String::new()
    } else {
        format!(" on topic {topic}")
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    #[test]
    fn connect_error_leaves_cause_to_source() {
        let error = ClientError::Connect {
            addr: "127.0.0.1:1".to_owned(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(error.to_string(), "cannot connect to 127.0.0.1:1");
        let source = error.source().map(ToString::to_string);
        assert_eq!(source.as_deref(), Some("connection refused"));
    }

    #[test]
    fn tls_error_shows_rustls_reason() {
        let cause = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let error = ClientError::Tls(cause);
        assert_eq!(
            error.to_string(),
            "TLS error: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn tls_errors_are_permanent() {
        let cause = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        assert!(!ClientError::Tls(cause).is_transient());
        assert!(!ClientError::TlsRequired.is_transient());
        assert!(!ClientError::TlsNotOffered.is_transient());
    }
}
