//! Connection settings and error helpers shared by publishers and subscribers.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use chorus_client::{ClientError, Options, TlsOptions};
use clap::Args;

/// How long a blocking read waits before the thread checks its deadline again.
pub(crate) const READ_POLL: Duration = Duration::from_millis(100);

/// Options for a bench connection named `name`, with a short read timeout so that reader
/// threads can notice the end of the run.
pub(crate) fn options(name: String, connect_timeout: Duration, tls: Option<TlsOptions>) -> Options {
    Options {
        client_name: name,
        connect_timeout,
        read_timeout: Some(READ_POLL),
        tls,
        ..Options::default()
    }
}

/// TLS options of the scenarios that connect with the chorus client.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct TlsArgs {
    /// Connect over TLS. Any other TLS option implies it.
    #[arg(long, help_heading = "TLS")]
    pub(crate) tls: bool,

    /// PEM file with the CA certificates that sign the broker's certificate [default: the
    /// system's CA certificates].
    #[arg(long, value_name = "FILE", help_heading = "TLS")]
    pub(crate) ca: Option<PathBuf>,

    /// PEM file with the client certificate chain, for a broker that requires client
    /// certificates (mutual TLS); needs --key.
    #[arg(long, value_name = "FILE", requires = "key", help_heading = "TLS")]
    pub(crate) cert: Option<PathBuf>,

    /// PEM file with the private key of --cert.
    #[arg(long, value_name = "FILE", requires = "cert", help_heading = "TLS")]
    pub(crate) key: Option<PathBuf>,

    /// Name the broker's certificate must carry [default: the host part of --server].
    #[arg(long, value_name = "NAME", help_heading = "TLS")]
    pub(crate) server_name: Option<String>,

    /// Accept any broker certificate: encrypted but not authenticated, for tests with
    /// throwaway certificates only.
    #[arg(long, help_heading = "TLS")]
    pub(crate) insecure_skip_verify_for_testing: bool,
}

impl TlsArgs {
    /// Returns the client's TLS settings, or `None` for plain TCP.
    pub(crate) fn options(&self) -> Option<TlsOptions> {
        let wanted = self.tls
            || self.ca.is_some()
            || self.cert.is_some()
            || self.server_name.is_some()
            || self.insecure_skip_verify_for_testing;
        wanted.then(|| TlsOptions {
            ca_file: self.ca.clone(),
            client_cert: self.cert.clone().zip(self.key.clone()),
            server_name: self.server_name.clone(),
            insecure_skip_verify_for_testing: self.insecure_skip_verify_for_testing,
        })
    }
}

/// Returns whether `error` only means that no frame arrived within the read timeout.
pub(crate) fn is_timeout(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout => true,
        ClientError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        tls: TlsArgs,
    }

    fn tls_options(args: &[&str]) -> Option<TlsOptions> {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        TestCli::try_parse_from(argv).unwrap().tls.options()
    }

    #[test]
    fn no_tls_option_is_plain_tcp() {
        assert!(tls_options(&[]).is_none());
    }

    #[test]
    fn ca_option_implies_tls() {
        let tls = tls_options(&["--ca", "ca.pem"]).unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn tls_flag_alone_uses_system_roots() {
        let tls = tls_options(&["--tls"]).unwrap();
        assert_eq!(tls.ca_file, None);
    }

    #[test]
    fn cert_needs_key() {
        let argv = ["bench", "--cert", "client.pem"];
        let err = TestCli::try_parse_from(argv).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }
}
