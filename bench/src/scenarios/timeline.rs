//! Per-second timeline of a load run: deliveries and their publish->deliver latency, bucketed by
//! the second of the run in which each delivery arrived.
//!
//! The phases of a run group messages by send time; the timeline groups them by delivery time,
//! so a backlog that drains after a spike shows up in the seconds when it drained.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::{new_histogram, record_latency};

/// Seconds a timeline covers. A load run ends within its schedule, drain timeout and 10 s, far
/// below this; a delivery later than that is counted in the last second.
const MAX_SECONDS: usize = 24 * 3600;

const NANOS_PER_SEC: u64 = 1_000_000_000;

/// Latency histograms of deliveries, one per second since publishing started.
#[derive(Debug, Default)]
pub(crate) struct Timeline {
    /// Entry `s` counts the deliveries that arrived in `[s, s + 1)` seconds after the start; a
    /// histogram is allocated at the first delivery of its second.
    seconds: Vec<Option<Histogram<u64>>>,
}

impl Timeline {
    /// Records a delivery that arrived `since_start_nanos` after publishing started and took
    /// `latency_nanos` from publish to delivery.
    pub(crate) fn record(&mut self, since_start_nanos: u64, latency_nanos: u64) {
        let second = usize::try_from(since_start_nanos / NANOS_PER_SEC).unwrap_or(usize::MAX);
        let second = second.min(MAX_SECONDS - 1);
        if self.seconds.len() <= second {
            self.seconds.resize_with(second + 1, || None);
        }
        let histogram = self.seconds[second].get_or_insert_with(new_histogram);
        record_latency(histogram, latency_nanos);
    }

    /// Adds another timeline's deliveries to this one, second by second.
    pub(crate) fn merge(&mut self, other: &Timeline) {
        if self.seconds.len() < other.seconds.len() {
            self.seconds.resize_with(other.seconds.len(), || None);
        }
        for (mine, theirs) in self.seconds.iter_mut().zip(&other.seconds) {
            let Some(theirs) = theirs else { continue };
            // Histograms from `new_histogram` share their bounds, so adding one never fails.
            let _ = mine.get_or_insert_with(new_histogram).add(theirs);
        }
    }

    /// Returns one entry per second from the start to the last second with a delivery,
    /// including seconds without deliveries.
    pub(crate) fn entries(&self) -> Vec<TimelineEntry> {
        let ms = |micros: u64| micros as f64 / 1_000.0;
        self.seconds
            .iter()
            .enumerate()
            .map(|(second, histogram)| match histogram {
                Some(h) if !h.is_empty() => TimelineEntry {
                    second: second as u64,
                    deliveries: h.len(),
                    p50_ms: Some(ms(h.value_at_quantile(0.50))),
                    p99_ms: Some(ms(h.value_at_quantile(0.99))),
                    max_ms: Some(ms(h.max())),
                },
                _ => TimelineEntry {
                    second: second as u64,
                    deliveries: 0,
                    p50_ms: None,
                    p99_ms: None,
                    max_ms: None,
                },
            })
            .collect()
    }
}

/// Deliveries that arrived within one second of the run, and their publish->deliver latency
/// in milliseconds (absent when the second had no delivery).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct TimelineEntry {
    /// Start of the second, in whole seconds since publishing started.
    pub(crate) second: u64,
    /// First-time deliveries that arrived in this second, over all subscribers of the class.
    pub(crate) deliveries: u64,
    pub(crate) p50_ms: Option<f64>,
    pub(crate) p99_ms: Option<f64>,
    pub(crate) max_ms: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1_000;
    const MS: u64 = 1_000_000;

    #[test]
    fn deliveries_bucket_by_arrival_second() {
        let mut timeline = Timeline::default();
        timeline.record(0, MS);
        timeline.record(999_999_999, MS);
        timeline.record(NANOS_PER_SEC, MS);
        timeline.record(2 * NANOS_PER_SEC + 1, MS);
        let entries = timeline.entries();
        let counts: Vec<u64> = entries.iter().map(|e| e.deliveries).collect();
        assert_eq!(counts, [2, 1, 1]);
        let seconds: Vec<u64> = entries.iter().map(|e| e.second).collect();
        assert_eq!(seconds, [0, 1, 2]);
    }

    #[test]
    fn empty_second_has_zero_and_no_latency() {
        let mut timeline = Timeline::default();
        timeline.record(0, MS);
        timeline.record(3 * NANOS_PER_SEC, MS);
        let entries = timeline.entries();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1].deliveries, 0);
        assert_eq!(entries[1].p50_ms, None);
        assert_eq!(entries[2].max_ms, None);
        assert_eq!(entries[3].deliveries, 1);
    }

    #[test]
    fn latency_percentiles_per_second() {
        // Below 2,048 µs the histogram stores every microsecond exactly.
        let mut timeline = Timeline::default();
        for latency_us in 1..=100 {
            timeline.record(NANOS_PER_SEC / 2, latency_us * US);
        }
        timeline.record(NANOS_PER_SEC, 500 * US);
        let entries = timeline.entries();
        assert_eq!(entries[0].p50_ms, Some(0.05));
        assert_eq!(entries[0].p99_ms, Some(0.099));
        assert_eq!(entries[0].max_ms, Some(0.1));
        assert_eq!(entries[1].p50_ms, Some(0.5));
        assert_eq!(entries[1].max_ms, Some(0.5));
    }

    #[test]
    fn merge_adds_counts_per_second() {
        let mut a = Timeline::default();
        a.record(0, MS);
        let mut b = Timeline::default();
        b.record(0, 2 * MS);
        b.record(2 * NANOS_PER_SEC, 3 * MS);
        a.merge(&b);
        let entries = a.entries();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].deliveries, 2);
        assert_eq!(entries[0].max_ms, Some(2.0));
        assert_eq!(entries[1].deliveries, 0);
        assert_eq!(entries[2].deliveries, 1);
    }

    #[test]
    fn far_delivery_lands_in_last_second() {
        let mut timeline = Timeline::default();
        timeline.record(u64::MAX, MS);
        let entries = timeline.entries();
        assert_eq!(entries.len(), MAX_SECONDS);
        assert_eq!(entries[MAX_SECONDS - 1].deliveries, 1);
    }

    #[test]
    fn empty_timeline_has_no_entries() {
        assert!(Timeline::default().entries().is_empty());
    }

    #[test]
    fn entry_serializes_missing_latency_as_null() {
        let entry = TimelineEntry {
            second: 4,
            deliveries: 0,
            p50_ms: None,
            p99_ms: None,
            max_ms: None,
        };
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["second"], 4);
        assert_eq!(json["p99_ms"], serde_json::Value::Null);
    }
}
