//! Errors that end the program, and their exit statuses.

use std::error::Error;
use std::fmt;
use std::io;
use std::process::ExitCode;

use chorus_client::{rustls, ClientError};
use chorus_protocol::DecodeError;

/// Exit statuses, as listed in the help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Usage = 1,
    CannotConnect = 2,
    Rejected = 3,
    /// The connection was lost after the handshake, or the admin endpoint failed.
    Broken = 4,
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

    /// Wraps a client error with its causes, adding a hint when the broker could not be reached
    /// or TLS failed.
    pub(crate) fn client(server: &str, error: ClientError) -> Failure {
        let status = status_of(&error);
        let mut message = with_causes(&error);
        if let Some(hint) = hint(server, &error, status) {
            message.push_str("\nhint: ");
            message.push_str(&hint);
        }
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

/// Returns the error's message followed by those of its sources, leaving out a source whose
/// message the text already contains.
fn with_causes(error: &ClientError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Returns what to try next after `error`, when the command line can fix it.
fn hint(server: &str, error: &ClientError, status: Status) -> Option<String> {
    let hint = match error {
        ClientError::InvalidAddress(_) => return None,
        ClientError::TlsRequired => {
            format!("the port at {server} serves TLS; add --tls or set CHORUS_TLS=1.")
        }
        ClientError::TlsNotOffered => format!(
            "{server} serves plain TCP; drop the TLS options, or set --server to the broker's TLS \
             port."
        ),
        ClientError::Tls(rustls::Error::InvalidCertificate(cause)) => certificate_hint(cause)?,
        ClientError::Tls(rustls::Error::AlertReceived(
            rustls::AlertDescription::CertificateRequired,
        )) => "the broker requires a client certificate; pass --cert and --key.".to_owned(),
        _ if status == Status::CannotConnect => {
            format!("is chorusd running at {server}? Set --server or CHORUS_SERVER.")
        }
        _ => return None,
    };
    Some(hint)
}

fn certificate_hint(cause: &rustls::CertificateError) -> Option<String> {
    use rustls::CertificateError;
    let hint = match cause {
        CertificateError::UnknownIssuer => {
            "pass the CA that signed the broker's certificate with --ca or CHORUS_CA."
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the broker's certificate does not name the host of --server; set --server-name to \
             a name it carries."
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            "the broker's certificate has expired; renew it on the broker."
        }
        _ => return None,
    };
    Some(hint.to_owned())
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
        ClientError::Tls(_) | ClientError::TlsRequired | ClientError::TlsNotOffered => {
            Status::CannotConnect
        }
        ClientError::TlsSetup { .. } | ClientError::InvalidServerName(_) => Status::Usage,
        ClientError::Server { .. }
        | ClientError::Rejected { .. }
        | ClientError::PayloadTooLarge { .. } => Status::Rejected,
        _ => Status::Broken,
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
        assert_eq!(status_of(&ClientError::Closed), Status::Broken);
    }

    #[test]
    fn refused_connection_message_names_cause_once() {
        let error = ClientError::Connect {
            addr: "127.0.0.1:1".to_owned(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        let failure = Failure::client("127.0.0.1:1", error);
        assert_eq!(
            failure.message,
            "cannot connect to 127.0.0.1:1: connection refused\n\
             hint: is chorusd running at 127.0.0.1:1? Set --server or CHORUS_SERVER."
        );
    }

    #[test]
    fn tls_port_hint_names_tls_flag() {
        let failure = Failure::client("127.0.0.1:7443", ClientError::TlsRequired);
        assert_eq!(failure.status, Status::CannotConnect);
        assert!(failure.message.contains("add --tls"), "{}", failure.message);
    }

    #[test]
    fn plain_port_hint_names_tls_port() {
        let failure = Failure::client("127.0.0.1:7400", ClientError::TlsNotOffered);
        assert_eq!(failure.status, Status::CannotConnect);
        assert!(
            failure.message.contains("serves plain TCP"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn unknown_issuer_hint_names_ca_option() {
        let cause = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let failure = Failure::client("127.0.0.1:7443", ClientError::Tls(cause));
        assert_eq!(failure.status, Status::CannotConnect);
        assert!(failure.message.contains("--ca"), "{}", failure.message);
    }

    #[test]
    fn missing_client_certificate_hint_names_cert_option() {
        let alert = rustls::AlertDescription::CertificateRequired;
        let error = ClientError::Tls(rustls::Error::AlertReceived(alert));
        let failure = Failure::client("127.0.0.1:7443", error);
        assert!(
            failure.message.contains("--cert and --key"),
            "{}",
            failure.message
        );
    }

    #[test]
    fn unreadable_tls_file_is_usage_error() {
        let error = ClientError::TlsSetup {
            what: "CA certificates",
            path: Some("/missing/ca.pem".into()),
            source: io::Error::from(io::ErrorKind::NotFound),
        };
        let failure = Failure::client("127.0.0.1:7443", error);
        assert_eq!(failure.status, Status::Usage);
        assert_eq!(
            failure.message,
            "cannot load the TLS CA certificates from /missing/ca.pem: entity not found"
        );
    }

    #[test]
    fn exit_codes_match_help_text() {
        assert_eq!(Status::Usage as u8, 1);
        assert_eq!(Status::CannotConnect as u8, 2);
        assert_eq!(Status::Rejected as u8, 3);
        assert_eq!(Status::Broken as u8, 4);
        assert_eq!(Status::LocalIo as u8, 5);
    }
}
