//! chorusd's command line, kept in the library so that its man page can be generated from it.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The chorus live-comment broker.
///
/// Runs on built-in defaults when started with no options: data in ./chorus-data, clients on
/// 127.0.0.1:7400. Flags override the configuration file, which overrides the defaults.
#[derive(Debug, Parser)]
#[command(name = "chorusd", version, about, long_about)]
pub struct Args {
    /// Configuration file (TOML).
    #[arg(long, short = 'c', value_name = "FILE", env = "CHORUSD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Directory for the topic logs [default: ./chorus-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Address for client connections; repeat for several [default: 127.0.0.1:7400].
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<SocketAddr>,

    /// Address for WebSocket clients (browsers); repeat for several [default: none, so
    /// WebSocket is off; the usual address is 127.0.0.1:7401].
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Vec<SocketAddr>,

    /// Address of the HTTP admin endpoint and Prometheus metrics [default: 127.0.0.1:7480].
    #[arg(long, value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Role of this node: "origin" stores topics and assigns offsets, "relay" serves them from
    /// the upstreams in the [relay] section [default: origin].
    #[arg(long, value_enum, value_name = "ROLE")]
    pub role: Option<crate::config::Role>,

    /// Number of event-loop threads [default: one per core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,

    /// Log filter, in the syntax of RUST_LOG (for example "info" or "chorus_broker=debug").
    #[arg(
        long,
        value_name = "FILTER",
        env = "CHORUSD_LOG",
        default_value = "info"
    )]
    pub log: String,
}
