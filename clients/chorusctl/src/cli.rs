//! Command-line arguments.

use std::path::PathBuf;

use chorus_client::{StartAt, Topic};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, ArgGroup, Args, Parser, Subcommand};
use clap_complete::Shell;

use crate::limits::{parse_age, parse_size, Limit};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  usage error: invalid arguments or topic name, an unreadable TLS certificate or key file,
     or a deletion that was not confirmed
  2  cannot connect: connection refused or timed out, invalid or unresolvable address, the
     peer does not speak the chorus protocol, or TLS failed (the broker's certificate was
     rejected, the broker rejected ours, or the port does or does not serve TLS)
  3  rejected by the server: an ERROR frame (such as INVALID_TOPIC or TOPIC_NOT_FOUND), a
     publish that was not stored, or an admin request answered with 4xx (invalid token, not
     found) or 501 (the feature is not in this version of chorusd)
  4  connection lost or broken after the handshake, or an admin request answered with another
     5xx status or an invalid response
  5  reading standard input or writing standard output failed

Tokens: --token and --token-file apply to every command. Without them, publish and tail send
CHORUS_TOKEN in HELLO, and the admin commands send CHORUS_ADMIN_TOKEN to the admin endpoint.

TLS: publish and tail connect over TLS with --tls or CHORUS_TLS=1, and also when --ca,
--cert, --server-name or --insecure-skip-verify-for-testing is given. The broker's
certificate must be signed by a CA from --ca, else from the file CHORUS_CA names, else from
the system's CA certificates. The admin commands use plain HTTP and ignore these options.

Logs go to standard error; set RUST_LOG (for example RUST_LOG=debug) to see reconnects.";

/// Publish to and tail topics of a chorus broker, and inspect and steer it through its admin
/// endpoint.
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

    /// Admin endpoint address as host:port, for the admin commands.
    #[arg(
        long,
        global = true,
        value_name = "ADDR",
        env = "CHORUS_ADMIN",
        default_value = "127.0.0.1:7480"
    )]
    pub(crate) admin: String,

    /// Token: sent in HELLO by publish and tail, and as the bearer token by the admin
    /// commands [default: CHORUS_TOKEN or CHORUS_ADMIN_TOKEN, see below].
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        conflicts_with = "token_file"
    )]
    pub(crate) token: Option<String>,

    /// File whose contents, without surrounding white space, are the token.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) token_file: Option<PathBuf>,

    /// Print results as JSON, one object per line.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Connect to the broker over TLS (publish and tail).
    #[arg(
        long,
        global = true,
        env = "CHORUS_TLS",
        value_parser = BoolishValueParser::new(),
        action = ArgAction::SetTrue,
        help_heading = "TLS"
    )]
    pub(crate) tls: bool,

    /// PEM file with the CA certificates that sign the broker's certificate; implies --tls
    /// [default: CHORUS_CA, else the system's CA certificates].
    #[arg(long, global = true, value_name = "FILE", help_heading = "TLS")]
    pub(crate) ca: Option<PathBuf>,

    /// PEM file with this client's certificate chain, leaf first, for a broker that requires
    /// client certificates (mutual TLS); needs --key and implies --tls.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "key",
        help_heading = "TLS"
    )]
    pub(crate) cert: Option<PathBuf>,

    /// PEM file with the private key of --cert.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        requires = "cert",
        help_heading = "TLS"
    )]
    pub(crate) key: Option<PathBuf>,

    /// Name the broker's certificate must carry; implies --tls [default: the host part of
    /// --server].
    #[arg(long, global = true, value_name = "NAME", help_heading = "TLS")]
    pub(crate) server_name: Option<String>,

    /// Accept any broker certificate, so the connection is encrypted but the broker is not
    /// authenticated; for tests with throwaway certificates only. Implies --tls.
    #[arg(long, global = true, help_heading = "TLS")]
    pub(crate) insecure_skip_verify_for_testing: bool,

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

    /// Show the broker's version, uptime, connections and publish and delivery rates.
    #[command(after_help = AFTER_HELP)]
    Status,

    /// List the topics with their offsets, rates, subscribers and size on disk.
    #[command(after_help = AFTER_HELP)]
    Topics(TopicsArgs),

    /// List the connections with their subscriptions.
    #[command(after_help = AFTER_HELP)]
    Conns(ConnsArgs),

    /// Send an ERROR to a connection and close it; the client may reconnect.
    #[command(after_help = AFTER_HELP)]
    Kick(KickArgs),

    /// Delete a topic and all its comments, or with an offset only that comment. Subscribers of
    /// a deleted topic receive an ERROR, and the next publish creates it again.
    #[command(after_help = AFTER_HELP)]
    Delete(DeleteArgs),

    /// Show this node's place in the relay tree: its upstream links, how far each relay topic
    /// is behind its upstream, and the relays connected below it.
    #[command(after_help = AFTER_HELP)]
    Tree,

    /// Make the broker read its configuration file again, apply the limits and reload the TLS
    /// certificate and key files. Reports the changed settings that need a restart.
    #[command(after_help = AFTER_HELP)]
    Reload,

    /// Ban a user from publishing to any topic of the broker, and optionally delete their
    /// recent comments in one topic.
    #[command(after_help = AFTER_HELP)]
    Ban(BanArgs),

    /// Lift a ban.
    #[command(after_help = AFTER_HELP)]
    Unban(UnbanArgs),

    /// Change how long and how much a topic keeps of its comments while chorusd runs. The
    /// change survives a restart and takes effect at the broker's next retention check.
    #[command(after_help = AFTER_HELP)]
    Retention(RetentionArgs),

    /// Print a shell completion script to standard output.
    #[command(
        after_help = "Example: chorusctl completions bash > /etc/bash_completion.d/chorusctl"
    )]
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TopicsArgs {
    /// Show only this topic.
    #[arg(value_parser = parse_topic)]
    pub(crate) topic: Option<Topic>,
}

#[derive(Debug, Args)]
pub(crate) struct ConnsArgs {
    /// Show only connections subscribed to this topic.
    #[arg(long, value_parser = parse_topic)]
    pub(crate) topic: Option<Topic>,

    /// Show at most N connections, lowest ids first.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) limit: usize,
}

#[derive(Debug, Args)]
pub(crate) struct KickArgs {
    /// Connection id, as listed by `chorusctl conns`.
    pub(crate) id: u64,
}

#[derive(Debug, Args)]
pub(crate) struct DeleteArgs {
    /// Topic to delete, or the topic of the comment to delete.
    #[arg(value_parser = parse_topic)]
    pub(crate) topic: Topic,

    /// Offset of one comment to delete instead of the topic. Its subscribers receive a
    /// tombstone, and later reads return the comment with the DELETED flag and no text.
    pub(crate) offset: Option<u64>,

    /// Delete a topic without a confirmation prompt. Deleting one comment never prompts.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
}

#[derive(Debug, Args)]
pub(crate) struct BanArgs {
    /// Publisher id of the user.
    pub(crate) user: String,

    /// Reason, kept with the ban.
    #[arg(long)]
    pub(crate) reason: Option<String>,

    /// Also delete the user's comments in this topic from the last --purge-seconds seconds.
    #[arg(long, value_name = "TOPIC", value_parser = parse_topic, requires = "purge_seconds")]
    pub(crate) purge: Option<Topic>,

    /// How far back --purge deletes the user's comments, in seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "purge",
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub(crate) purge_seconds: Option<u64>,
}

#[derive(Debug, Args)]
pub(crate) struct UnbanArgs {
    /// Publisher id of the user.
    pub(crate) user: String,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("limits").required(true).multiple(true)))]
pub(crate) struct RetentionArgs {
    /// Topic to change.
    #[arg(value_parser = parse_topic)]
    pub(crate) topic: Topic,

    /// Maximum age of a closed segment's newest comment before the segment is deleted, such as
    /// 2h or 7d (units ms, s, m, h, d, w). The word none removes the limit, and default goes
    /// back to the configuration file's value.
    #[arg(long, value_name = "DURATION", value_parser = parse_age, group = "limits")]
    pub(crate) max_age: Option<Limit>,

    /// Maximum size of the topic's segment files before the oldest are deleted, such as 1GiB
    /// or 500MB (a bare number is bytes). The word none removes the limit, and default goes
    /// back to the configuration file's value.
    #[arg(long, value_name = "SIZE", value_parser = parse_size, group = "limits")]
    pub(crate) max_bytes: Option<Limit>,

    /// Go back to the configuration file's limits for both age and size.
    #[arg(long, conflicts_with_all = ["max_age", "max_bytes"], group = "limits")]
    pub(crate) reset: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CompletionsArgs {
    /// Shell to generate the script for.
    pub(crate) shell: Shell,
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
    fn admin_defaults_to_loopback() {
        let cli = parse(&["status"]).unwrap();
        assert_eq!(cli.admin, "127.0.0.1:7480");
    }

    #[test]
    fn token_and_token_file_exclude_each_other() {
        let err = parse(&["status", "--token", "a", "--token-file", "f"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn delete_needs_valid_topic() {
        let err = parse(&["delete", "a//b"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn retention_needs_a_limit() {
        let err = parse(&["retention", "live"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn retention_reset_excludes_limits() {
        let err = parse(&["retention", "live", "--reset", "--max-age", "2h"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
    }

    #[test]
    fn retention_parses_both_limits() {
        let cli = parse(&[
            "retention",
            "live",
            "--max-age",
            "2h",
            "--max-bytes",
            "1GiB",
        ])
        .unwrap();
        let Command::Retention(args) = cli.command else {
            panic!("expected retention");
        };
        assert_eq!(args.max_age, Some(Limit::Value(7_200_000)));
        assert_eq!(args.max_bytes, Some(Limit::Value(1 << 30)));
    }

    #[test]
    fn retention_rejects_bad_duration() {
        let err = parse(&["retention", "live", "--max-age", "2 hours"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
    }

    #[test]
    fn delete_takes_an_optional_offset() {
        let offset_of = |args: &[&str]| match parse(args).unwrap().command {
            Command::Delete(delete) => delete.offset,
            other => panic!("expected delete, got {other:?}"),
        };
        assert_eq!(offset_of(&["delete", "live", "12"]), Some(12));
        assert_eq!(offset_of(&["delete", "live", "--yes"]), None);
    }

    #[test]
    fn ban_purge_needs_seconds() {
        let err = parse(&["ban", "spammer", "--purge", "live"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn completions_reject_unknown_shell() {
        let err = parse(&["completions", "cmd"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }

    #[test]
    fn tls_options_are_global() {
        let cli = parse(&["tail", "live", "--tls", "--ca", "ca.pem"]).unwrap();
        assert!(cli.tls);
        assert_eq!(cli.ca, Some(PathBuf::from("ca.pem")));
    }

    #[test]
    fn cert_needs_key() {
        let err = parse(&["tail", "live", "--cert", "client.pem"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn key_needs_cert() {
        let err = parse(&["tail", "live", "--key", "client.key"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn server_option_is_global() {
        let cli = parse(&["tail", "live", "--server", "127.0.0.1:9000"]).unwrap();
        assert_eq!(cli.server, "127.0.0.1:9000");
    }
}
