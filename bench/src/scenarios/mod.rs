//! Load scenarios that run the same way against chorusd, NATS, Redis and MQTT brokers: fan-out
//! to many subscribers, many topics, a rate spike, slow subscribers among fast ones, and many
//! idle connections.
//!
//! Every scenario stamps its payloads itself ([`stamp`]), so latency, loss and duplicates are
//! measured the same way whatever the broker, and reads the broker's CPU time and memory from
//! /proc.

mod blocking;
mod check;
pub(crate) mod fanout;
pub(crate) mod idle;
mod load;
mod machine;
pub(crate) mod moderation;
mod pool;
mod procfs;
mod proto;
mod publish;
mod rate;
mod render;
mod shared;
pub(crate) mod slow;
mod slow_reader;
mod sockets;
pub(crate) mod spike;
mod stamp;
mod timeline;
pub(crate) mod topics;
mod tree;
mod tree_load;
pub(crate) mod tree_scenario;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{ensure, Context};
use clap::Args;
use serde::Serialize;

use proto::BrokerKind;

/// Broker under test and the connection settings for it.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct TargetArgs {
    /// Broker address as HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub(crate) server: String,

    /// Protocol of the broker under test.
    #[arg(long, value_enum, default_value_t = BrokerKind::Chorus)]
    pub(crate) broker: BrokerKind,

    /// MQTT quality of service for publishes and subscriptions: 0 (at most once) or 1 (at
    /// least once, each publish acknowledged with PUBACK).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=1))]
    pub(crate) mqtt_qos: u8,

    /// PID of the broker, whose CPU time and memory are reported [default: the process that
    /// listens on the port of --server, if this user may see it].
    #[arg(long, value_name = "PID")]
    pub(crate) broker_pid: Option<u32>,

    /// Seconds each connection may take from connect to a confirmed subscription.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) connect_timeout: f64,

    /// Prefix of the topic names [default: bench/<scenario>-<unix time>, fresh per run].
    #[arg(long, value_name = "NAME")]
    pub(crate) topic_prefix: Option<String>,

    /// Print the result as JSON on stdout, and the text on stderr.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) json: bool,

    /// Also write the JSON result to this file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub(crate) out: Option<PathBuf>,
}

impl TargetArgs {
    pub(crate) fn connect_timeout(&self) -> anyhow::Result<Duration> {
        ensure!(
            self.connect_timeout.is_finite() && self.connect_timeout > 0.0,
            "--connect-timeout must be a number of seconds above 0"
        );
        Ok(Duration::from_secs_f64(self.connect_timeout))
    }

    /// Returns `count` topic names under the run's prefix.
    pub(crate) fn topic_names(&self, scenario: &str, count: usize) -> Vec<String> {
        let prefix = match &self.topic_prefix {
            Some(prefix) => prefix.clone(),
            None => {
                let secs = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                format!("bench/{scenario}-{secs}")
            }
        };
        (0..count).map(|i| format!("{prefix}/{i}")).collect()
    }

    /// Returns the broker's PID: the one given, or the listener of the server's port.
    pub(crate) fn find_broker_pid(&self, server: std::net::SocketAddr) -> Option<u32> {
        if let Some(pid) = self.broker_pid {
            return Some(pid);
        }
        match procfs::find_listener_pid(server.port()) {
            Ok(pid) => Some(pid),
            Err(e) => {
                eprintln!("warning: broker CPU and memory are not reported: {e:#}");
                None
            }
        }
    }
}

/// Settings of the scenarios that publish.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct LoadArgs {
    /// Payload size in bytes, including the 40-byte stamp that identifies and times it.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub(crate) payload_size: usize,

    /// Max unconfirmed publishes per publisher; 0 sets no limit. Brokers that reply to no
    /// publish (NATS, MQTT QoS 0) confirm them with a PING after every quarter of it.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) max_in_flight: u64,

    /// Maximum messages per subscriber, on average, that publishers may be ahead of the
    /// deliveries before they wait; 0 sets no limit. With a limit, "--rate max" measures the
    /// fan-out rate the broker sustains with a bounded backlog.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) max_lag: u64,

    /// Seconds to wait for outstanding deliveries and replies after the last publish.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,

    /// Threads that read the subscribers' connections.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) sub_threads: usize,
}

/// A publish rate in messages per second, or `max` for as fast as possible.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate(pub(crate) Option<f64>);

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate(None));
        }
        match s.parse::<f64>() {
            Ok(rate) if rate.is_finite() && rate > 0.0 => Ok(Rate(Some(rate))),
            _ => Err(format!(
                "invalid rate {s:?}: expected messages per second above 0, or \"max\""
            )),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("max"),
            Some(rate) => write!(f, "{rate}"),
        }
    }
}

impl Serialize for Rate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None => serializer.serialize_str("max"),
            Some(rate) => serializer.serialize_f64(rate),
        }
    }
}

/// Checks that `secs` is a finite number of seconds above 0.
pub(crate) fn positive_secs(name: &str, secs: f64) -> anyhow::Result<f64> {
    ensure!(
        secs.is_finite() && secs > 0.0,
        "{name} must be a number of seconds above 0"
    );
    Ok(secs)
}

/// Prints a result as text, or as JSON with the text on stderr, and writes the JSON to `out`.
pub(crate) fn print_result<T: Serialize>(
    result: &T,
    text: &str,
    json: bool,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let encoded = serde_json::to_string_pretty(result).context("failed to encode the result")?;
    if json {
        eprint!("{text}");
        println!("{encoded}");
    } else {
        print!("{text}");
    }
    if let Some(path) = out {
        std::fs::write(path, format!("{encoded}\n"))
            .with_context(|| format!("failed to write the result to {}", path.display()))?;
    }
    Ok(())
}

/// Returns the current time as RFC 3339 in UTC, to date results.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_parses_numbers_and_max() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate(None)));
        assert_eq!("5000".parse::<Rate>(), Ok(Rate(Some(5000.0))));
        assert!("0".parse::<Rate>().is_err());
        assert!("fast".parse::<Rate>().is_err());
    }
}
