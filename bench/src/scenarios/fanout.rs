//! `fanout`: one topic, many subscribers, one or more publishers at a fixed rate or as fast as
//! possible.

use clap::Args;
use serde::Serialize;

use super::load::{self, LoadPlan};
use super::rate::RateSchedule;
use super::{positive_secs, LoadArgs, Rate, TargetArgs};

/// Arguments of `chorus-bench fanout`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct FanoutArgs {
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

    /// Messages per second over all publishers, or "max" for as fast as the window allows.
    #[arg(long, default_value = "max")]
    pub(crate) rate: Rate,

    /// Seconds of publishing.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) duration: f64,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: FanoutArgs) -> anyhow::Result<bool> {
    let duration = positive_secs("--duration", args.duration)?;
    let plan = LoadPlan {
        scenario: "fanout",
        target: args.target.clone(),
        load: args.load.clone(),
        topics: 1,
        subscribers: args.subscribers,
        publishers: args.publishers,
        schedule: RateSchedule::steady(args.rate.0, duration),
        phases: Vec::new(),
        slow: None,
        parameters: serde_json::to_value(&args)?,
    };
    load::run(plan)
}
