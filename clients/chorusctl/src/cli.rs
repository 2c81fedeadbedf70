//! Command-line arguments.

use chorus_client::{StartAt, Topic};
use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  usage error: invalid arguments or topic name
  2  cannot connect: connection refused or timed out, invalid or unresolvable address, or the
     peer does not speak the chorus protocol
  3  rejected by the server: an ERROR frame (such as INVALID_TOPIC or TOPIC_NOT_FOUND), or a
     publish that was not stored
  4  connection lost or broken after the handshake
  5  reading standard input or writing standard output failed

Logs go to standard error; set RUST_LOG (for example RUST_LOG=debug) to see reconnects.";

/// Publish to and tail topics of a chorus broker.
#[derive(Debug, Parser)]
#[command(name = "chorusctl", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    /// Broker address as host:port.
    #[arg(
        long,
        global = true,
        env = "CHORUS_SERVER",
        default_value = "127.0.0.1:7400"
    )]
    pub(crate) server: String,

    /// Authentication token sent in HELLO.
    #[arg(
        long,
        global = true,
        env = "CHORUS_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    pub(crate) token: String,

    /// Print results as JSON, one object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Publish one comment, or one comment per line of standard input.
    #[command(after_help = AFTER_HELP)]
    Publish(PublishArgs),

    /// Print the comments of a topic as they arrive, resuming after a lost connection.
    #[command(after_help = AFTER_HELP)]
    Tail(TailArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PublishArgs {
    /// Topic to publish to; it is created by its first comment.
    #[arg(value_parser = parse_topic)]
    pub(crate) topic: Topic,

    /// Comment text, or `-` to publish each line of standard input as one comment (empty lines
    /// are skipped, and the lines are pipelined rather than sent one round trip at a time).
    pub(crate) text: String,
}

#[derive(Debug, Args)]
pub(crate) struct TailArgs {
    /// Topic to follow.
    #[arg(value_parser = parse_topic)]
    pub(crate) topic: Topic,

    /// Start at this offset.
    #[arg(long, value_name = "OFFSET", group = "start")]
    pub(crate) from: Option<u64>,

    /// Start with the last N comments.
    #[arg(long, value_name = "N", group = "start")]
    pub(crate) last: Option<u64>,

    /// Start at the oldest comment the broker still keeps.
    #[arg(long, group = "start")]
    pub(crate) earliest: bool,

    /// Stop after printing N comments; without it, tail runs until interrupted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) count: Option<u64>,
}

impl TailArgs {
    /// Returns where the subscription starts; without an option, only new comments are shown.
    pub(crate) fn start(&self) -> StartAt {
        if let Some(offset) = self.from {
            StartAt::Offset(offset)
        } else if let Some(count) = self.last {
            StartAt::Last(count)
        } else if self.earliest {
            StartAt::Earliest
        } else {
            StartAt::Latest
        }
    }
}

fn parse_topic(name: &str) -> Result<Topic, String> {
    Topic::new(name).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("chorusctl").chain(args.iter().copied()))
    }

    fn tail_start(args: &[&str]) -> StartAt {
        match parse(args).unwrap().command {
            Command::Tail(tail) => tail.start(),
            other => panic!("expected tail, got {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_valid() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn tail_starts_latest_by_default() {
        assert_eq!(tail_start(&["tail", "live"]), StartAt::Latest);
    }

    #[test]
    fn tail_start_options_map_to_start_at() {
        assert_eq!(
            tail_start(&["tail", "live", "--from", "12"]),
            StartAt::Offset(12)
        );
        assert_eq!(
            tail_start(&["tail", "live", "--last", "5"]),
            StartAt::Last(5)
        );
        assert_eq!(
            tail_start(&["tail", "live", "--earliest"]),
            StartAt::Earliest
        );
    }

    #[test]
    fn tail_start_options_exclude_each_other() {
        let err = parse(&["tail", "live", "--from", "1", "--earliest"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn invalid_topic_is_usage_error() {
        let err = parse(&["publish", "../etc", "hi"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn count_zero_is_usage_error() {
        let err = parse(&["tail", "live", "--count", "0"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn server_option_is_global() {
        let cli = parse(&["tail", "live", "--server", "127.0.0.1:9000"]).unwrap();
        assert_eq!(cli.server, "127.0.0.1:9000");
    }
}
