//! State shared by the publisher and subscriber threads of one run.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_client::Topic;

use crate::workload::Workload;

/// Marks "no deadline yet" in [`RunState::deadline_nanos`].
const NO_DEADLINE: u64 = u64::MAX;

/// Max error messages kept per thread; later ones are only counted.
pub(crate) const MAX_ERRORS_KEPT: usize = 10;

/// Counters, send times and stop signals shared by every thread of a run.
#[derive(Debug)]
pub(crate) struct RunState {
    pub(crate) workload: Workload,
    pub(crate) topic: Topic,
    /// Origin of every time stamp below.
    clock: Instant,
    /// Send time of each comment in nanoseconds since `clock`; 0 while not sent.
    send_nanos: Vec<AtomicU64>,
    /// Publishes handed to the client library.
    pub(crate) published: AtomicU64,
    /// PUBLISH_ACK frames received, accepted or not.
    pub(crate) acked: AtomicU64,
    /// First-time deliveries, added up over subscribers.
    pub(crate) delivered: AtomicU64,
    /// Time after which threads stop waiting for acks and events; set once publishing ends.
    deadline_nanos: AtomicU64,
    /// Set when the run is abandoned.
    stop: AtomicBool,
}

impl RunState {
    pub(crate) fn new(workload: Workload, topic: Topic) -> RunState {
        let send_nanos = (0..workload.len()).map(|_| AtomicU64::new(0)).collect();
        RunState {
            workload,
            topic,
            clock: Instant::now(),
            send_nanos,
            published: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            deadline_nanos: AtomicU64::new(NO_DEADLINE),
            stop: AtomicBool::new(false),
        }
    }

    /// Returns nanoseconds since the run's clock started, at least 1 so that 0 can mean "unset".
    pub(crate) fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    pub(crate) fn nanos_at(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.clock).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// Stores now as the send time of comment `index`.
    pub(crate) fn record_send(&self, index: usize) {
        self.send_nanos[index].store(self.now_nanos(), Ordering::Release);
    }

    /// Returns the send time of comment `index`, if it was sent.
    pub(crate) fn send_nanos(&self, index: usize) -> Option<u64> {
        match self.send_nanos[index].load(Ordering::Acquire) {
            0 => None,
            nanos => Some(nanos),
        }
    }

    /// Returns the latest send time of any comment.
    pub(crate) fn last_send_nanos(&self) -> Option<u64> {
        self.send_nanos
            .iter()
            .map(|n| n.load(Ordering::Acquire))
            .max()
            .filter(|&n| n > 0)
    }

    /// Lets threads wait `grace` more for acks and events, then stop.
    pub(crate) fn set_deadline(&self, grace: Duration) {
        let at = self.nanos_at(Instant::now() + grace);
        self.deadline_nanos.store(at, Ordering::Release);
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// Returns whether threads should stop: the run was abandoned or its deadline passed.
    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
            || self.now_nanos() >= self.deadline_nanos.load(Ordering::Acquire)
    }

    pub(crate) fn count(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Error messages of one thread: the first [`MAX_ERRORS_KEPT`] and a count of the rest.
#[derive(Debug, Default)]
pub(crate) struct ErrorLog {
    pub(crate) messages: Vec<String>,
    pub(crate) dropped: u64,
}

impl ErrorLog {
    pub(crate) fn push(&mut self, message: String) {
        if self.messages.len() < MAX_ERRORS_KEPT {
            self.messages.push(message);
        } else {
            self.dropped += 1;
        }
    }
}
