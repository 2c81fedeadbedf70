//! Adds up what the publisher and subscriber threads reported into one [`Summary`].

use crate::checker::Counts;
use crate::publisher::PublisherOutcome;
use crate::report::{
    new_histogram, per_sec, round_to, LatencySummary, Missing, Parameters, Summary,
};
use crate::state::RunState;
use crate::subscriber::SubscriberOutcome;

/// Subscribers listed by name in the report's missing section; the total covers all of them.
const MISSING_LISTED: usize = 20;

/// Everything the threads of a run reported.
#[derive(Debug)]
pub(crate) struct RunOutcomes {
    pub(crate) publishers: Vec<PublisherOutcome>,
    pub(crate) subscribers: Vec<SubscriberOutcome>,
    /// Errors of the run and of every thread, prefixed with the thread's name.
    pub(crate) errors: Vec<String>,
    /// Start of publishing, in nanoseconds of the run clock.
    pub(crate) start_nanos: u64,
    /// End of the wait for acks and deliveries, in nanoseconds of the run clock.
    pub(crate) end_nanos: u64,
    /// Server name and version from the broker's WELCOME.
    pub(crate) server_name: String,
}

/// Builds the summary of a run.
pub(crate) fn summarize(
    outcomes: RunOutcomes,
    state: &RunState,
    date: String,
    parameters: Parameters,
) -> Summary {
    let mut errors = outcomes.errors;
    let comments = state.workload.len() as u64;
    let subscriber_count = parameters.subscribers;
    let publisher_count = parameters.publishers;

    let mut ack_latency = new_histogram();
    let (mut acked, mut rejected) = (0, 0);
    for p in &outcomes.publishers {
        acked += p.acked;
        rejected += p.rejected;
        if let Err(e) = ack_latency.add(&p.ack_latency) {
            errors.push(format!("failed to merge ack latencies: {e:?}"));
        }
    }

    let mut deliver_latency = new_histogram();
    let mut counts = Counts::default();
    let mut missing_by_subscriber = Vec::new();
    // Subscribers whose thread did not report count as missing everything.
    let unreported = subscriber_count.saturating_sub(outcomes.subscribers.len()) as u64;
    let mut missing = unreported * comments;
    for s in &outcomes.subscribers {
        counts.add(&s.counts);
        missing += s.missing;
        if let Err(e) = deliver_latency.add(&s.deliver_latency) {
            errors.push(format!("failed to merge delivery latencies: {e:?}"));
        }
        if s.missing > 0 && missing_by_subscriber.len() < MISSING_LISTED {
            missing_by_subscriber.push(Missing {
                subscriber: s.id,
                count: s.missing,
                first_indices: s.missing_examples.clone(),
            });
        }
    }

    // The run lasted until the last delivery when everything arrived, else until the wait ended.
    let last_delivery = outcomes
        .subscribers
        .iter()
        .filter_map(|s| s.last_delivery_nanos)
        .max();
    let end_nanos = match last_delivery {
        Some(last) if missing == 0 && subscriber_count > 0 => last,
        _ => outcomes.end_nanos,
    };
    let secs_since_start = |nanos: u64| nanos.saturating_sub(outcomes.start_nanos) as f64 / 1e9;
    let duration_secs = secs_since_start(end_nanos);
    let publish_secs = state.last_send_nanos().map_or(0.0, secs_since_start);
    let last_ack = outcomes
        .publishers
        .iter()
        .filter_map(|p| p.last_ack_nanos)
        .max();
    let ack_secs = last_ack.map_or(0.0, secs_since_start);

    let published = RunState::count(&state.published);
    let mut summary = Summary {
        date,
        server_name: outcomes.server_name,
        parameters,
        comments,
        publishers: publisher_count,
        subscribers: subscriber_count,
        duration_secs: round_to(duration_secs, 3),
        publish_secs: round_to(publish_secs, 3),
        published,
        published_per_sec: per_sec(published, publish_secs),
        ack_secs: round_to(ack_secs, 3),
        acked_per_sec: per_sec(acked, ack_secs),
        delivered_per_sec: per_sec(counts.delivered, duration_secs),
        acked,
        rejected,
        unacked: published.saturating_sub(acked),
        publish_ack_ms: LatencySummary::from_histogram(&ack_latency),
        publish_deliver_ms: LatencySummary::from_histogram(&deliver_latency),
        counts,
        missing,
        missing_by_subscriber,
        errors,
        passed: false,
    };
    summary.judge();
    summary
}
