//! chorusctl: publish to and tail topics of a chorus broker from the command line.

mod cli;
mod failure;
mod output;
mod publish;
mod tail;

use std::process::ExitCode;

use chorus_client::Options;
use clap::Parser;

use crate::cli::{Cli, Command};
use crate::failure::Status;

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

    let result = match &cli.command {
        Command::Publish(args) => publish::run(&cli, args),
        Command::Tail(args) => tail::run(&cli, args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("chorusctl: {failure}");
            failure.exit_code()
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
        .init();
}

/// Returns the client options for the global command-line settings.
pub(crate) fn client_options(cli: &Cli) -> Options {
    Options {
        client_name: concat!("chorusctl/", env!("CARGO_PKG_VERSION")).to_owned(),
        token: cli.token.clone(),
        ..Options::default()
    }
}
