//! Subscriber connections that receive every comment and check it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use anyhow::{bail, Context};
use chorus_client::{ClientError, Connection, Events, Frame, Options, StartAt, Subscribed};
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
    let mut tally = Tally {
        checker: DeliveryChecker::new(subscribed.start, &state.workload),
        latency: new_histogram(),
        errors: ErrorLog::default(),
        stream: subscribed.stream,
        last_delivery: None,
    };

    while !tally.checker.is_complete() && !state.should_stop() {
        match connection.recv() {
            Ok(Frame::Events(events)) => tally.add_events(&events, state),
            Ok(_) => {}
            Err(e) if is_timeout(&e) => {}
            Err(e @ ClientError::Server { close: false, .. }) => tally.errors.push(e.to_string()),
            Err(e) => {
                tally.errors.push(format!("receiving events failed: {e}"));
                break;
            }
        }
    }
    tally.finish(id)
}

/// Delivery state of one subscriber thread: checks, latencies and errors.
struct Tally {
    checker: DeliveryChecker,
    latency: Histogram<u64>,
    errors: ErrorLog,
    /// Stream id of the topic as last seen.
    stream: u64,
    last_delivery: Option<u64>,
}

impl Tally {
    fn add_events(&mut self, events: &Events, state: &RunState) {
        let received = state.now_nanos();
        // A topic that had no comments yet may report stream 0 in SUBSCRIBED, and its first
        // EVENTS then carry the stream id it got when the first comment was stored.
        if self.stream == 0 {
            self.stream = events.stream();
        }
        if events.stream() != self.stream {
            let message = format!(
                "stream id changed from {} to {}",
                self.stream,
                events.stream()
            );
            self.errors.push(message);
            self.stream = events.stream();
        }

        let mut first_time = 0;
        for event in events.iter() {
            let checked = self
                .checker
                .check(&state.workload, event.offset, &event.payload);
            let Some(index) = checked else {
                continue;
            };
            first_time += 1;
            if let Some(sent) = state.send_nanos(index) {
                record_latency(&mut self.latency, received.saturating_sub(sent));
            }
        }
        if first_time > 0 {
            self.last_delivery = Some(received);
            // One shared update per frame: a per-event update contends across hundreds of
            // subscriber threads.
            state.delivered.fetch_add(first_time, Ordering::Relaxed);
        }
    }

    fn finish(self, id: usize) -> SubscriberOutcome {
        SubscriberOutcome {
            id,
            counts: self.checker.counts(),
            deliver_latency: self.latency,
            missing: self.checker.missing().count() as u64,
            missing_examples: self.checker.missing().take(MISSING_EXAMPLES).collect(),
            last_delivery_nanos: self.last_delivery,
            errors: self.errors,
        }
    }
}
