//! Errors that end the program, and their exit statuses.

use std::fmt;
use std::io;
use std::process::ExitCode;

use chorus_client::ClientError;
use chorus_protocol::DecodeError;

/// Exit statuses, as listed in the help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Usage = 1,
    CannotConnect = 2,
    Rejected = 3,
    ConnectionLost = 4,
    LocalIo = 5,
}

/// An error that ends the program with a message and an exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: Status,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: Status, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    /// Wraps a client error, adding a hint when the broker could not be reached.
    pub(crate) fn client(server: &str, error: ClientError) -> Failure {
        let status = status_of(&error);
        let message = match error {
            ClientError::InvalidAddress(_) => error.to_string(),
            _ if status == Status::CannotConnect => format!(
                "{error}\nhint: is chorusd running at {server}? Set --server or CHORUS_SERVER."
            ),
            _ => error.to_string(),
        };
        Failure::new(status, message)
    }

    /// Wraps a failed read of standard input or write to standard output.
    pub(crate) fn local_io(what: &str, error: io::Error) -> Failure {
        Failure::new(Status::LocalIo, format!("{what} failed: {error}"))
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.status as u8)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Maps a client error to the exit status documented in the help text.
pub(crate) fn status_of(error: &ClientError) -> Status {
    match error {
        // chorusctl sets no read timeout, so a timeout can only happen while connecting.
        ClientError::Connect { .. } | ClientError::InvalidAddress(_) | ClientError::Timeout => {
            Status::CannotConnect
        }
        ClientError::Decode(DecodeError::BadPreamble | DecodeError::UnsupportedVersion(_)) => {
            Status::CannotConnect
        }
        ClientError::Server { .. }
        | ClientError::Rejected { .. }
        | ClientError::PayloadTooLarge { .. } => Status::Rejected,
        _ => Status::ConnectionLost,
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::ErrorCode;

    use super::*;

    #[test]
    fn refused_connection_is_cannot_connect() {
        let error = ClientError::Connect {
            addr: "127.0.0.1:1".to_owned(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(status_of(&error), Status::CannotConnect);
    }

    #[test]
    fn foreign_peer_is_cannot_connect() {
        let error = ClientError::Decode(DecodeError::BadPreamble);
        assert_eq!(status_of(&error), Status::CannotConnect);
    }

    #[test]
    fn server_error_is_rejected() {
        let error = ClientError::Server {
            code: ErrorCode::InvalidTopic,
            topic: "x".to_owned(),
            message: "bad".to_owned(),
            close: false,
        };
        assert_eq!(status_of(&error), Status::Rejected);
    }

    #[test]
    fn rejected_publish_is_rejected() {
        let error = ClientError::Rejected {
            seq: 1,
            code: ErrorCode::PayloadTooLarge,
        };
        assert_eq!(status_of(&error), Status::Rejected);
    }

    #[test]
    fn closed_connection_is_connection_lost() {
        assert_eq!(status_of(&ClientError::Closed), Status::ConnectionLost);
    }

    #[test]
    fn exit_codes_match_help_text() {
        assert_eq!(Status::Usage as u8, 1);
        assert_eq!(Status::CannotConnect as u8, 2);
        assert_eq!(Status::Rejected as u8, 3);
        assert_eq!(Status::ConnectionLost as u8, 4);
        assert_eq!(Status::LocalIo as u8, 5);
    }
}
