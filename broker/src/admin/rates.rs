//! Publish, delivery and per-topic comment rates over the last ten seconds, from totals sampled
//! once a second.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::metrics::Totals;
use crate::server::Shared;

/// Period the rates are measured over.
pub(super) const WINDOW: Duration = Duration::from_secs(10);

/// Samples older than this are dropped; one interval of slack keeps a sample at least
/// [`WINDOW`] old available.
const KEEP: Duration = Duration::from_secs(12);

/// Recent samples, oldest first.
#[derive(Debug, Default)]
pub(super) struct Rates {
    samples: VecDeque<Sample>,
}

/// Totals at one moment.
#[derive(Debug)]
struct Sample {
    at: Instant,
    published: u64,
    delivered: u64,
    /// End offset of each loaded topic, by topic id.
    topic_ends: HashMap<u64, u64>,
}

/// A rate and the period it was measured over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Rate {
    pub(super) per_s: f64,
    pub(super) window_s: f64,
}

impl Rates {
    /// Records the current totals and drops samples that are too old to be used.
    pub(super) fn sample(&mut self, shared: &Shared, now: Instant) {
        let totals = shared.metrics.totals();
        let topic_ends = shared
            .registry
            .loaded()
            .iter()
            .map(|topic| (topic.id, topic.inner.lock().position().end))
            .collect();
        self.push(Sample {
            at: now,
            published: totals.published,
            delivered: delivered(&totals),
            topic_ends,
        });
    }

    fn push(&mut self, sample: Sample) {
        let now = sample.at;
        self.samples.push_back(sample);
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > KEEP)
        {
            self.samples.pop_front();
        }
    }

    /// Returns the sample to measure against: the newest one at least [`WINDOW`] old, or the
    /// oldest one while the endpoint has run for less than that.
    fn base(&self, now: Instant) -> Option<&Sample> {
        self.samples
            .iter()
            .rev()
            .find(|s| now.saturating_duration_since(s.at) >= WINDOW)
            .or_else(|| self.samples.front())
    }

    /// Returns the comments published and delivered per second.
    pub(super) fn totals(&self, totals: &Totals, now: Instant) -> (Rate, Rate) {
        let Some(base) = self.base(now) else {
            return (Rate::ZERO, Rate::ZERO);
        };
        let elapsed = now.saturating_duration_since(base.at);
        (
            Rate::between(base.published, totals.published, elapsed),
            Rate::between(base.delivered, delivered(totals), elapsed),
        )
    }

    /// Returns the comments per second appended to the topic with id `topic_id`, whose end
    /// offset is `end` now. A topic first seen after the oldest sample is measured from the
    /// first sample that has it.
    pub(super) fn topic(&self, topic_id: u64, end: u64, now: Instant) -> Rate {
        let base = self
            .samples
            .iter()
            .rev()
            .filter_map(|s| s.topic_ends.get(&topic_id).map(|&e| (s.at, e)))
            .find(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
            .or_else(|| {
                self.samples
                    .iter()
                    .find_map(|s| s.topic_ends.get(&topic_id).map(|&e| (s.at, e)))
            });
        match base {
            Some((at, base_end)) => Rate::between(base_end, end, now.saturating_duration_since(at)),
            None => Rate::ZERO,
        }
    }
}

impl Rate {
    const ZERO: Rate = Rate {
        per_s: 0.0,
        window_s: 0.0,
    };

    fn between(before: u64, after: u64, elapsed: Duration) -> Rate {
        let window_s = elapsed.as_secs_f64();
        if window_s < 0.001 {
            return Rate::ZERO;
        }
        Rate {
            per_s: after.saturating_sub(before) as f64 / window_s,
            window_s,
        }
    }
}

fn delivered(totals: &Totals) -> u64 {
    totals.live_deliveries + totals.catch_up_deliveries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: Instant, published: u64) -> Sample {
        Sample {
            at,
            published,
            delivered: 0,
            topic_ends: HashMap::from([(7, published)]),
        }
    }

    #[test]
    fn rate_uses_sample_ten_seconds_old() {
        let start = Instant::now();
        let mut rates = Rates::default();
        for second in 0..=12 {
            rates.push(sample(start + Duration::from_secs(second), second * 100));
        }
        let now = start + Duration::from_secs(12);
        let totals = Totals {
            published: 1200,
            ..Totals::default()
        };
        let (published, _) = rates.totals(&totals, now);
        assert_eq!(published.window_s, 10.0);
        assert_eq!(published.per_s, 100.0);
    }

    #[test]
    fn short_history_uses_oldest_sample() {
        let start = Instant::now();
        let mut rates = Rates::default();
        rates.push(sample(start, 0));
        let now = start + Duration::from_secs(2);
        let rate = rates.topic(7, 50, now);
        assert_eq!(rate.window_s, 2.0);
        assert_eq!(rate.per_s, 25.0);
    }

    #[test]
    fn old_samples_are_dropped() {
        let start = Instant::now();
        let mut rates = Rates::default();
        for second in 0..30 {
            rates.push(sample(start + Duration::from_secs(second), 0));
        }
        assert_eq!(rates.samples.len(), 13);
    }

    #[test]
    fn unknown_topic_has_zero_rate() {
        let rates = Rates::default();
        assert_eq!(rates.topic(1, 10, Instant::now()), Rate::ZERO);
    }
}
