//! chorus-bench: load generator and checker for the chorus broker.
//!
//! Exit status: 0 when every check passed, 1 when a check failed (a comment lost, repeated,
//! reordered, altered, rejected or missing), 2 when the run could not be carried out.

mod chatlog;
mod checker;
mod compression;
#[cfg(test)]
mod fake_broker;
mod net;
mod pacing;
mod progress;
mod publisher;
mod replay;
mod report;
mod scenarios;
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
    /// Fan one topic out to many subscribers at a fixed rate or as fast as possible.
    Fanout(scenarios::fanout::FanoutArgs),
    /// Publish to many topics with subscribers spread over them.
    Topics(scenarios::topics::TopicsArgs),
    /// Hold many idle subscribed connections and measure the broker's memory per connection.
    Idle(scenarios::idle::IdleArgs),
    /// Publish at a steady rate that jumps for a while, and compare latency around the jump.
    Spike(scenarios::spike::SpikeArgs),
    /// Mix slow subscribers with fast ones and check that the fast ones do not notice.
    Slow(scenarios::slow::SlowArgs),
    /// Start an origin and edge relays, delete comments through an edge, and time the
    /// tombstones.
    Moderation(scenarios::moderation::ModerationArgs),
    /// Start an origin, regional relays and edges, and measure the latency each hop adds and
    /// the origin's CPU as edges and viewers are added.
    Tree(scenarios::tree_scenario::TreeArgs),
    /// Compress EVENTS batches of a recorded chat with zstd as chorusd does for its relays,
    /// and report the ratio and the compression and decoding throughput.
    Compression(compression::CompressionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Replay(args) => replay::run(args),
        Command::Fanout(args) => scenarios::fanout::run(args),
        Command::Topics(args) => scenarios::topics::run(args),
        Command::Idle(args) => scenarios::idle::run(args),
        Command::Spike(args) => scenarios::spike::run(args),
        Command::Slow(args) => scenarios::slow::run(args),
        Command::Moderation(args) => scenarios::moderation::run(args),
        Command::Tree(args) => scenarios::tree_scenario::run(args),
        Command::Compression(args) => compression::run(args),
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
