//! `slow`: slow subscribers among fast ones on one topic. For the first phase every subscriber
//! reads at full speed; in the second the slow ones read small chunks with a sleep after each,
//! through a small receive buffer. The fast subscribers' latency in the two phases of the same
//! run shows whether they notice; after publishing ends the slow ones read at full speed again
//! and must still receive every message exactly once.

use std::time::Duration;

use clap::Args;
use serde::Serialize;

use super::load::{self, LoadPlan};
use super::rate::RateSchedule;
use super::slow_reader::SlowReading;
use super::{positive_secs, LoadArgs, TargetArgs};

/// Arguments of `chorus-bench slow`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct SlowArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Subscribers that read at full speed throughout.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub(crate) subscribers: usize,

    /// Subscribers that read slowly in the second phase.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub(crate) slow: usize,

    /// Messages per second, from one publisher.
    #[arg(long, value_name = "PER_SEC", default_value_t = 5000.0)]
    pub(crate) rate: f64,

    /// Seconds of each phase: first without, then with slow readers.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) phase_secs: f64,

    /// Receive buffer the slow subscribers request (SO_RCVBUF), in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub(crate) slow_rcvbuf: usize,

    /// Bytes a slow subscriber reads at a time.
    #[arg(long, value_name = "BYTES", default_value_t = 4096)]
    pub(crate) slow_read_bytes: usize,

    /// Milliseconds a slow subscriber sleeps after each read.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    pub(crate) slow_delay_ms: u64,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: SlowArgs) -> anyhow::Result<bool> {
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a number of messages per second above 0"
    );
    let phase = positive_secs("--phase-secs", args.phase_secs)?;
    let reading = SlowReading {
        rcvbuf: args.slow_rcvbuf,
        read_bytes: args.slow_read_bytes,
        delay: Duration::from_millis(args.slow_delay_ms),
        from: Duration::from_secs_f64(phase),
        until: Duration::from_secs_f64(2.0 * phase),
    };
    let plan = LoadPlan {
        scenario: "slow",
        target: args.target.clone(),
        load: args.load.clone(),
        topics: 1,
        subscribers: args.subscribers,
        publishers: 1,
        schedule: RateSchedule::steady(Some(args.rate), 2.0 * phase),
        phases: vec![
            ("without slow".to_owned(), phase),
            ("with slow".to_owned(), 2.0 * phase),
        ],
        slow: (args.slow > 0).then_some((args.slow, reading)),
        parameters: serde_json::to_value(&args)?,
    };
    load::run(plan)
}
