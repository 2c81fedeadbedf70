//! chorusctl: publish to and tail topics of a chorus broker, and inspect and steer it through its
//! admin endpoint, from the command line.

mod admin;
mod admin_commands;
mod cli;
mod failure;
mod limits;
mod output;
mod publish;
mod tables;
mod tail;

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use chorus_client::{Options, TlsOptions};
use clap::{CommandFactory, Parser};

use crate::cli::{Cli, Command};
use crate::failure::{Failure, Status};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version requests print to standard output and succeed; everything else
            // is a usage error with status 1, keeping status 2 for "cannot connect".
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(Status::Usage as u8)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging();

    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("chorusctl: {failure}");
            failure.exit_code()
        }
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    match &cli.command {
        Command::Publish(args) => publish::run(cli, args),
        Command::Tail(args) => tail::run(cli, args),
        Command::Status => admin_commands::status(cli),
        Command::Topics(args) => admin_commands::topics(cli, args),
        Command::Conns(args) => admin_commands::conns(cli, args),
        Command::Kick(args) => admin_commands::kick(cli, args),
        Command::Delete(args) => admin_commands::delete(cli, args),
        Command::Tree => admin_commands::tree(cli),
        Command::Reload => admin_commands::reload(cli),
        Command::Ban(args) => admin_commands::ban(cli, args),
        Command::Unban(args) => admin_commands::unban(cli, args),
        Command::Retention(args) => admin_commands::retention(cli, args),
        Command::Completions(args) => {
            // Generated into memory, because clap_complete panics when a write fails, and a
            // closed pipe is not worth a panic.
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "chorusctl", &mut script);
            output::emit(String::from_utf8_lossy(&script).trim_end())
        }
    }
}

/// Logs to standard error at the level RUST_LOG sets, warnings and errors by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Returns the client options for the global command-line settings.
pub(crate) fn client_options(cli: &Cli) -> Result<Options, Failure> {
    Ok(Options {
        client_name: concat!("chorusctl/", env!("CARGO_PKG_VERSION")).to_owned(),
        token: resolve_token(cli, "CHORUS_TOKEN")?.unwrap_or_default(),
        tls: tls_options(cli, std::env::var_os("CHORUS_CA")),
        ..Options::default()
    })
}

/// Returns the TLS settings, or `None` for plain TCP; `env_ca` is the value of CHORUS_CA.
///
/// Any TLS option on the command line turns TLS on. CHORUS_CA does not, so that it can stay
/// set in a shell that also talks to brokers without TLS.
fn tls_options(cli: &Cli, env_ca: Option<OsString>) -> Option<TlsOptions> {
    let wanted = cli.tls
        || cli.ca.is_some()
        || cli.cert.is_some()
        || cli.server_name.is_some()
        || cli.insecure_skip_verify_for_testing;
    if !wanted {
        return None;
    }
    let env_ca = env_ca.filter(|value| !value.is_empty()).map(PathBuf::from);
    Some(TlsOptions {
        ca_file: cli.ca.clone().or(env_ca),
        client_cert: cli.cert.clone().zip(cli.key.clone()),
        server_name: cli.server_name.clone(),
        insecure_skip_verify_for_testing: cli.insecure_skip_verify_for_testing,
    })
}

/// Returns the token from `--token`, from `--token-file`, or from the environment variable
/// `env`, in that order.
pub(crate) fn resolve_token(cli: &Cli, env: &str) -> Result<Option<String>, Failure> {
    if let Some(token) = &cli.token {
        return Ok(Some(token.clone()));
    }
    if let Some(path) = &cli.token_file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let message = format!("cannot read the token file {}: {e}", path.display());
            Failure::new(Status::Usage, message)
        })?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(std::env::var(env).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("chorusctl").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn no_tls_option_is_plain_tcp() {
        let cli = parse(&["tail", "live"]);
        assert!(tls_options(&cli, Some("ca.pem".into())).is_none());
    }

    #[test]
    fn tls_flag_uses_ca_from_environment() {
        let cli = parse(&["tail", "live", "--tls"]);
        let tls = tls_options(&cli, Some("env-ca.pem".into())).unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("env-ca.pem")));
    }

    #[test]
    fn ca_option_implies_tls_and_wins_over_environment() {
        let cli = parse(&["tail", "live", "--ca", "flag-ca.pem"]);
        let tls = tls_options(&cli, Some("env-ca.pem".into())).unwrap();
        assert_eq!(tls.ca_file, Some(PathBuf::from("flag-ca.pem")));
    }

    #[test]
    fn empty_environment_ca_means_system_roots() {
        let cli = parse(&["tail", "live", "--tls"]);
        let tls = tls_options(&cli, Some(OsString::new())).unwrap();
        assert_eq!(tls.ca_file, None);
    }

    #[test]
    fn client_certificate_pairs_cert_and_key() {
        let cli = parse(&["publish", "live", "hi", "--cert", "c.pem", "--key", "c.key"]);
        let tls = tls_options(&cli, None).unwrap();
        let expected = (PathBuf::from("c.pem"), PathBuf::from("c.key"));
        assert_eq!(tls.client_cert, Some(expected));
    }

    #[test]
    fn server_name_and_insecure_flag_are_passed_on() {
        let cli = parse(&[
            "tail",
            "live",
            "--server-name",
            "chorus.internal",
            "--insecure-skip-verify-for-testing",
        ]);
        let tls = tls_options(&cli, None).unwrap();
        assert_eq!(tls.server_name.as_deref(), Some("chorus.internal"));
        assert!(tls.insecure_skip_verify_for_testing);
    }
}
