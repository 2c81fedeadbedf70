//! chorus-bench: load generator and checker for the chorus broker.
//!
//! Exit status: 0 when every check passed, 1 when a check failed (a comment lost, repeated,
//! reordered, altered, rejected or missing), 2 when the run could not be carried out.

mod chatlog;
mod checker;
#[cfg(test)]
mod fake_broker;
mod net;
mod pacing;
mod progress;
mod publisher;
mod replay;
mod report;
mod state;
mod subscriber;
mod summary;
mod synthetic;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Load generator and delivery checker for the chorus broker.
#[derive(Debug, Parser)]
#[command(name = "chorus-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a recorded or synthetic chat through the broker and check every delivery.
    Replay(replay::ReplayArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
