//! Clock, counters and stop signal shared by every thread of a load run.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Maximum length of one sleep while waiting for a time, so that a stop request takes effect
/// promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(20);

/// State every thread of a load run shares.
#[derive(Debug)]
pub(crate) struct LoadShared {
    /// Origin of every nanosecond time stamp of the run, including those in payloads.
    clock: Instant,
    /// When publishing starts; set once every connection is up.
    start: OnceLock<Instant>,
    stop: AtomicBool,
    /// Publishes handed to the socket, over all publishers.
    pub(crate) published: AtomicU64,
    /// First-time deliveries, over all subscribers.
    pub(crate) delivered: AtomicU64,
    /// Messages each publisher has sent, the bound for genuine sequence numbers.
    sent_by: Vec<AtomicU64>,
    /// Subscribers of each topic.
    fanout: Vec<u64>,
    /// Deliveries due for the messages sent so far: each message counts once per subscriber
    /// of its topic.
    due: AtomicU64,
    /// Most deliveries due but not yet made before publishers wait; 0 for no limit.
    max_lag: u64,
    writers_done: AtomicUsize,
    /// Messages sent to each topic by the writers that have finished.
    sent_per_topic: Mutex<Vec<u64>>,
}

impl LoadShared {
    /// Creates the state of a run. `fanout` gives the subscribers of each topic, and `max_lag`
    /// the maximum messages per subscriber, on average, that publishers may be ahead of the
    /// deliveries (0 for no limit).
    pub(crate) fn new(publishers: usize, fanout: Vec<u64>, max_lag: u64) -> LoadShared {
        let topics = fanout.len();
        let subscribers: u64 = fanout.iter().sum();
        LoadShared {
            clock: Instant::now(),
            start: OnceLock::new(),
            stop: AtomicBool::new(false),
            published: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sent_by: (0..publishers).map(|_| AtomicU64::new(0)).collect(),
            fanout,
            due: AtomicU64::new(0),
            max_lag: max_lag.saturating_mul(subscribers),
            writers_done: AtomicUsize::new(0),
            sent_per_topic: Mutex::new(vec![0; topics]),
        }
    }

    /// Returns nanoseconds since the run's clock started, at least 1.
    pub(crate) fn now_nanos(&self) -> u64 {
        self.nanos_at(Instant::now())
    }

    pub(crate) fn nanos_at(&self, instant: Instant) -> u64 {
        let nanos = instant.saturating_duration_since(self.clock).as_nanos();
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }

    /// Sets when publishing starts; only the first call has an effect.
    pub(crate) fn set_start(&self, at: Instant) {
        let _ = self.start.set(at);
    }

    /// Returns when publishing starts, or the clock's origin before it is set.
    pub(crate) fn start(&self) -> Instant {
        self.start.get().copied().unwrap_or(self.clock)
    }

    /// Returns the start of publishing in nanoseconds of the run clock; 0 before it is set.
    pub(crate) fn start_nanos(&self) -> u64 {
        self.start.get().map_or(0, |&at| self.nanos_at(at))
    }

    pub(crate) fn record_send(&self, publisher: usize, topic: usize) {
        self.sent_by[publisher].fetch_add(1, Ordering::Release);
        self.published.fetch_add(1, Ordering::Relaxed);
        let fanout = self.fanout.get(topic).copied().unwrap_or(0);
        self.due.fetch_add(fanout, Ordering::Relaxed);
    }

    /// Returns whether publishers may send more under the delivery lag limit.
    pub(crate) fn lag_allows(&self) -> bool {
        if self.max_lag == 0 {
            return true;
        }
        let due = self.due.load(Ordering::Relaxed);
        let delivered = self.delivered.load(Ordering::Relaxed);
        due.saturating_sub(delivered) < self.max_lag
    }

    /// Returns how many messages `publisher` has sent; 0 for an unknown publisher.
    pub(crate) fn sent_by(&self, publisher: usize) -> u64 {
        self.sent_by
            .get(publisher)
            .map_or(0, |n| n.load(Ordering::Acquire))
    }

    /// Records that a writer finished after sending `per_topic` messages to each topic.
    pub(crate) fn writer_done(&self, per_topic: &[u64]) {
        let mut totals = self
            .sent_per_topic
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (total, sent) in totals.iter_mut().zip(per_topic) {
            *total += sent;
        }
        self.writers_done.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn writers_done(&self) -> usize {
        self.writers_done.load(Ordering::Acquire)
    }

    /// Returns the messages sent to each topic by the writers that have finished.
    pub(crate) fn sent_per_topic(&self) -> Vec<u64> {
        self.sent_per_topic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn load(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    pub(crate) fn should_stop(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Sleeps until `deadline` in short slices; returns `false` early once a stop is requested.
    pub(crate) fn sleep_until(&self, deadline: Instant) -> bool {
        loop {
            if self.should_stop() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            std::thread::sleep((deadline - now).min(SLEEP_SLICE));
        }
    }
}
