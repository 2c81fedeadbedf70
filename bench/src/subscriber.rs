//! Subscriber connections that receive every comment and check it.

use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anyhow::{bail, Context};
use chorus_client::{ClientError, Connection, Frame, Options, StartAt, Subscribed};
use hdrhistogram::Histogram;

use crate::checker::{Counts, DeliveryChecker};
use crate::net::is_timeout;
use crate::report::{new_histogram, record_latency};
use crate::state::{ErrorLog, RunState};

/// Missing indices listed per subscriber in the report.
const MISSING_EXAMPLES: usize = 10;

/// Result of one subscriber: delivery counters, latencies and errors.
#[derive(Debug)]
pub(crate) struct SubscriberOutcome {
    pub(crate) id: usize,
    pub(crate) counts: Counts,
    pub(crate) deliver_latency: Histogram<u64>,
    pub(crate) missing: u64,
    pub(crate) missing_examples: Vec<usize>,
    /// Time of the last first-time delivery, in nanoseconds of the run clock.
    pub(crate) last_delivery_nanos: Option<u64>,
    pub(crate) errors: ErrorLog,
}

/// A subscribed connection that has not started reading yet.
#[derive(Debug)]
pub(crate) struct Ready {
    connection: Connection,
    subscribed: Subscribed,
}

/// Connects and subscribes at the topic's end, so that only comments published afterwards
/// arrive.
pub(crate) fn subscribe(addr: &str, options: &Options, state: &RunState) -> anyhow::Result<Ready> {
    let mut connection = Connection::connect(addr, options)
        .context("failed to connect; check that chorusd listens on --server")?;
    let subscribed = connection
        .subscribe(&state.topic, StartAt::Latest, 0)
        .with_context(|| format!("failed to subscribe to {}", state.topic))?;
    if subscribed.topic != state.topic {
        bail!(
            "SUBSCRIBED names topic {}, expected {}",
            subscribed.topic,
            state.topic
        );
    }
    Ok(Ready {
        connection,
        subscribed,
    })
}

/// Starts the thread that reads and checks events for subscriber `id`.
pub(crate) fn spawn(
    id: usize,
    ready: Ready,
    state: Arc<RunState>,
) -> JoinHandle<SubscriberOutcome> {
    thread::spawn(move || receive(id, ready, &state))
}

/// Returns the outcome of a subscriber thread that panicked.
pub(crate) fn panicked(id: usize, state: &RunState) -> SubscriberOutcome {
    let mut errors = ErrorLog::default();
    errors.push(format!("subscriber {id}: thread panicked"));
    SubscriberOutcome {
        id,
        counts: Counts::default(),
        deliver_latency: new_histogram(),
        missing: state.workload.len() as u64,
        missing_examples: Vec::new(),
        last_delivery_nanos: None,
        errors,
    }
}

fn receive(id: usize, ready: Ready, state: &RunState) -> SubscriberOutcome {
    let Ready {
        mut connection,
        subscribed,
    } = ready;
    let mut checker = DeliveryChecker::new(subscribed.start, &state.workload);
    let mut latency = new_histogram();
    let mut errors = ErrorLog::default();
    let mut last_delivery = None;
    let mut stream = subscribed.stream;

    while !checker.is_complete() && !state.should_stop() {
        match connection.recv() {
            Ok(Frame::Events(events)) => {
                let received = state.now_nanos();
                // A topic that had no comments yet may report stream 0 in SUBSCRIBED, and its
                // first EVENTS then carry the stream id it got when the first comment was stored.
                if stream == 0 {
                    stream = events.stream();
                }
                if events.stream() != stream {
                    let message = format!("stream id changed from {stream} to {}", events.stream());
                    errors.push(message);
                    stream = events.stream();
                }
                for event in events.iter() {
                    let Some(index) = checker.check(&state.workload, event.offset, &event.payload)
                    else {
                        continue;
                    };
                    RunState::bump(&state.delivered);
                    last_delivery = Some(received);
                    if let Some(sent) = state.send_nanos(index) {
                        record_latency(&mut latency, received.saturating_sub(sent));
                    }
                }
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e @ ClientError::Server { close: false, .. }) => errors.push(e.to_string()),
            Err(e) => {
                errors.push(format!("receiving events failed: {e}"));
                break;
            }
        }
    }

    let missing = checker.missing().count() as u64;
    SubscriberOutcome {
        id,
        counts: checker.counts(),
        deliver_latency: latency,
        missing,
        missing_examples: checker.missing().take(MISSING_EXAMPLES).collect(),
        last_delivery_nanos: last_delivery,
        errors,
    }
}
