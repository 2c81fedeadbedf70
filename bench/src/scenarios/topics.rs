//! `topics`: many topics with their subscribers spread over them, and several publishers that
//! each cycle through every topic.

use clap::Args;
use serde::Serialize;

use super::load::{self, LoadPlan};
use super::rate::RateSchedule;
use super::{positive_secs, LoadArgs, Rate, TargetArgs};

/// Arguments of `chorus-bench topics`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct TopicsArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    #[command(flatten)]
    pub(crate) load: LoadArgs,

    /// Number of topics.
    #[arg(long, value_name = "T", default_value_t = 100)]
    pub(crate) topics: usize,

    /// Subscribers in all; subscriber i subscribes to topic i % T.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) subscribers: usize,

    /// Publisher connections; each sends to every topic in turn.
    #[arg(long, value_name = "P", default_value_t = 4)]
    pub(crate) publishers: usize,

    /// Messages per second over all publishers and topics, or "max".
    #[arg(long, default_value = "10000")]
    pub(crate) rate: Rate,

    /// Seconds of publishing.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) duration: f64,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: TopicsArgs) -> anyhow::Result<bool> {
    let duration = positive_secs("--duration", args.duration)?;
    let plan = LoadPlan {
        scenario: "topics",
        target: args.target.clone(),
        load: args.load.clone(),
        topics: args.topics,
        subscribers: args.subscribers,
        publishers: args.publishers,
        schedule: RateSchedule::steady(args.rate.0, duration),
        phases: Vec::new(),
        slow: None,
        parameters: serde_json::to_value(&args)?,
    };
    load::run(plan)
}
