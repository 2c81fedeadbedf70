//! `spike`: a steady rate that jumps tenfold for a while, as at a goal, then falls back; reports
//! latency before, during and after the jump.

use anyhow::ensure;
use clap::Args;
use serde::Serialize;

use super::load::{self, LoadPlan};
use super::rate::{RateSchedule, Step};
use super::{positive_secs, LoadArgs, TargetArgs};

/// Arguments of `chorus-bench spike`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct SpikeArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Subscribers of the topic.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub(crate) subscribers: usize,

    /// Publisher connections; the rate is shared among them.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) publishers: usize,

    /// Steady rate before and after the spike, in messages per second.
    #[arg(long, value_name = "PER_SEC", default_value_t = 1000.0)]
    pub(crate) rate: f64,

    /// Rate multiplier during the spike.
    #[arg(long, value_name = "X", default_value_t = 10.0)]
    pub(crate) factor: f64,

    /// Seconds at the steady rate before the spike.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) before: f64,

    /// Seconds the spike lasts.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) spike_secs: f64,

    /// Seconds at the steady rate after the spike.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) after: f64,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: SpikeArgs) -> anyhow::Result<bool> {
    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a number of messages per second above 0"
    );
    ensure!(
        args.factor.is_finite() && args.factor >= 1.0,
        "--factor must be a number >= 1"
    );
    let before = positive_secs("--before", args.before)?;
    let spike = positive_secs("--spike-secs", args.spike_secs)?;
    let after = positive_secs("--after", args.after)?;
    let schedule = RateSchedule::Steps(vec![
        Step {
            secs: before,
            rate: args.rate,
        },
        Step {
            secs: spike,
            rate: args.rate * args.factor,
        },
        Step {
            secs: after,
            rate: args.rate,
        },
    ]);
    let phases = vec![
        ("before".to_owned(), before),
        ("spike".to_owned(), before + spike),
        ("after".to_owned(), before + spike + after),
    ];
    let plan = LoadPlan {
        scenario: "spike",
        target: args.target.clone(),
        load: args.load.clone(),
        topics: 1,
        subscribers: args.subscribers,
        publishers: args.publishers,
        schedule,
        phases,
        slow: None,
        parameters: serde_json::to_value(&args)?,
    };
    load::run(plan)
}
