//! The arithmetic of viewer counts and reaction sums, with no sockets and no clock: callers
//! pass the time, so tests step it.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chorus_protocol::{AudienceEntry, React, Topic};

/// Viewers per topic. String keys come from clients, so the maps use the standard hasher,
/// which resists collision floods.
pub(crate) type ViewerCounts = HashMap<Topic, u64>;

/// Adds the counts of `part` to `total`.
pub(crate) fn add_counts(total: &mut ViewerCounts, part: &ViewerCounts) {
    for (topic, viewers) in part {
        let sum = total.entry(topic.clone()).or_default();
        *sum = sum.saturating_add(*viewers);
    }
}

/// Reactions per topic and kind over one reaction interval, with at most a fixed number of
/// kinds per topic.
#[derive(Debug, Default)]
pub(crate) struct ReactionSums {
    topics: HashMap<Topic, HashMap<String, u64>>,
}

impl ReactionSums {
    /// Adds `count` reactions of `kind`. Returns false, and adds nothing, when the topic already
    /// has `max_kinds` other kinds in this interval.
    pub(crate) fn add(&mut self, topic: Topic, kind: String, count: u64, max_kinds: usize) -> bool {
        let kinds = self.topics.entry(topic).or_default();
        let kinds_before = kinds.len();
        match kinds.entry(kind) {
            Entry::Occupied(mut sum) => {
                *sum.get_mut() = sum.get().saturating_add(count);
                true
            }
            Entry::Vacant(_) if kinds_before >= max_kinds => false,
            Entry::Vacant(sum) => {
                sum.insert(count);
                true
            }
        }
    }

    /// Adds every sum of `other`, within the kind limit. Returns the number of reactions
    /// dropped because their topic had `max_kinds` other kinds already.
    pub(crate) fn merge(&mut self, other: ReactionSums, max_kinds: usize) -> u64 {
        if self.topics.is_empty() {
            self.topics = other.topics;
            return 0;
        }
        let mut dropped = 0u64;
        for (topic, kinds) in other.topics {
            for (kind, count) in kinds {
                if !self.add(topic.clone(), kind, count, max_kinds) {
                    dropped = dropped.saturating_add(count);
                }
            }
        }
        dropped
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.topics.is_empty()
    }

    /// Returns the total of every kind of every topic.
    #[cfg(test)]
    pub(crate) fn total(&self) -> u64 {
        self.topics
            .values()
            .flat_map(HashMap::values)
            .fold(0, |sum, count| sum.saturating_add(*count))
    }

    /// Returns the sums of each topic, with the kinds in byte order.
    pub(crate) fn into_topics(self) -> impl Iterator<Item = (Topic, BTreeMap<String, u64>)> {
        self.topics
            .into_iter()
            .map(|(topic, kinds)| (topic, kinds.into_iter().collect()))
    }
}

/// Splits the sum of one kind into REACT frames, each with a count that fits the u32 field.
pub(crate) fn react_frames(topic: &Topic, kind: &str, sum: u64) -> Vec<React> {
    let mut frames = Vec::with_capacity(1);
    let mut left = sum;
    while left > 0 {
        let count = u32::try_from(left).unwrap_or(u32::MAX);
        frames.push(React {
            topic: topic.clone(),
            kind: kind.to_owned(),
            count,
        });
        left -= u64::from(count);
    }
    frames
}

/// The viewer counts an origin has written to `_viewers/T`, to write a new record only when a
/// count changes.
#[derive(Debug, Default)]
pub(crate) struct ViewerLedger {
    /// Last count written per topic. A topic whose last count was 0 has no entry.
    written: HashMap<Topic, u64>,
}

impl ViewerLedger {
    /// Returns the counts to write: every topic whose count in `totals` differs from the last
    /// one written. A topic missing from `totals` has 0 viewers, and a topic with no record
    /// written counts as 0, so the first nonzero count is always written.
    pub(crate) fn changes(&self, totals: &ViewerCounts) -> Vec<(Topic, u64)> {
        let mut changes: Vec<(Topic, u64)> = totals
            .iter()
            .filter(|(topic, viewers)| self.written.get(*topic).copied().unwrap_or(0) != **viewers)
            .map(|(topic, viewers)| (topic.clone(), *viewers))
            .collect();
        let emptied = self
            .written
            .keys()
            .filter(|topic| !totals.contains_key(*topic))
            .map(|topic| (topic.clone(), 0));
        changes.extend(emptied);
        changes
    }

    /// Records that `viewers` was written for `topic`.
    pub(crate) fn record(&mut self, topic: Topic, viewers: u64) {
        if viewers == 0 {
            self.written.remove(&topic);
        } else {
            self.written.insert(topic, viewers);
        }
    }
}

/// The topics a relay reported upstream with viewers, so that a topic whose viewers all left is
/// reported once more, with 0.
#[derive(Debug, Default)]
pub(crate) struct UpstreamLedger {
    reported: HashSet<Topic>,
}

impl UpstreamLedger {
    /// Returns the AUDIENCE entries of this interval: every topic of `totals` with viewers, and,
    /// once, an entry of 0 for each topic reported with viewers last time that has none now.
    pub(crate) fn entries(&mut self, totals: &ViewerCounts) -> Vec<AudienceEntry> {
        let mut entries: Vec<AudienceEntry> = totals
            .iter()
            .filter(|(_, viewers)| **viewers > 0)
            .map(|(topic, viewers)| AudienceEntry {
                topic: topic.clone(),
                viewers: *viewers,
            })
            .collect();
        let now_reported: HashSet<Topic> = entries.iter().map(|e| e.topic.clone()).collect();
        let fallen = self
            .reported
            .difference(&now_reported)
            .map(|topic| AudienceEntry {
                topic: topic.clone(),
                viewers: 0,
            });
        entries.extend(fallen);
        self.reported = now_reported;
        entries
    }
}

/// Encoded size of an AUDIENCE body with no entries: the u32 count.
const AUDIENCE_HEAD: usize = 4;

/// Returns the encoded size of one AUDIENCE entry: the topic as a str8, then the u64 count.
fn audience_entry_len(entry: &AudienceEntry) -> usize {
    1 + entry.topic.as_str().len() + 8
}

/// Keeps the entries with the most viewers whose AUDIENCE body fits `max_body` bytes. Returns
/// the number of entries left out.
pub(crate) fn fit_audience(entries: &mut Vec<AudienceEntry>, max_body: usize) -> usize {
    let total: usize = AUDIENCE_HEAD + entries.iter().map(audience_entry_len).sum::<usize>();
    if total <= max_body {
        return 0;
    }
    entries.sort_unstable_by_key(|entry| std::cmp::Reverse(entry.viewers));
    let mut size = AUDIENCE_HEAD;
    let keep = entries
        .iter()
        .take_while(|entry| {
            size += audience_entry_len(entry);
            size <= max_body
        })
        .count();
    let dropped = entries.len() - keep;
    entries.truncate(keep);
    dropped
}

/// A periodic deadline.
#[derive(Debug)]
pub(crate) struct Ticker {
    interval: Duration,
    next: Instant,
}

impl Ticker {
    /// Creates a ticker whose first deadline is one interval after `now`.
    pub(crate) fn new(interval: Duration, now: Instant) -> Ticker {
        Ticker {
            interval,
            next: now + interval,
        }
    }

    /// Returns the next deadline.
    pub(crate) fn next(&self) -> Instant {
        self.next
    }

    /// Returns whether the deadline has passed at `now`, and if so sets the next one. A ticker
    /// that fell more than one interval behind starts again from `now` rather than firing in a
    /// burst.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        if now < self.next {
            return false;
        }
        self.next += self.interval;
        if self.next <= now {
            self.next = now + self.interval;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    fn counts(pairs: &[(&str, u64)]) -> ViewerCounts {
        pairs.iter().map(|(t, n)| (topic(t), *n)).collect()
    }

    fn sorted(mut entries: Vec<AudienceEntry>) -> Vec<(String, u64)> {
        entries.sort_by(|a, b| a.topic.as_str().cmp(b.topic.as_str()));
        entries
            .into_iter()
            .map(|e| (e.topic.as_str().to_owned(), e.viewers))
            .collect()
    }

    #[test]
    fn counts_of_workers_add_up() {
        let mut total = ViewerCounts::new();
        add_counts(&mut total, &counts(&[("a", 2), ("b", 1)]));
        add_counts(&mut total, &counts(&[("a", 3)]));
        assert_eq!(total[&topic("a")], 5);
        assert_eq!(total[&topic("b")], 1);
    }

    #[test]
    fn reactions_of_one_kind_add_up() {
        let mut sums = ReactionSums::default();
        for _ in 0..3 {
            assert!(sums.add(topic("t"), "heart".into(), 2, 4));
        }
        let topics: Vec<_> = sums.into_topics().collect();
        assert_eq!(topics.len(), 1);
        assert_eq!(topics[0].1["heart"], 6);
    }

    #[test]
    fn kinds_past_limit_are_dropped() {
        let mut sums = ReactionSums::default();
        assert!(sums.add(topic("t"), "a".into(), 1, 2));
        assert!(sums.add(topic("t"), "b".into(), 1, 2));
        assert!(!sums.add(topic("t"), "c".into(), 1, 2));
        assert!(
            sums.add(topic("t"), "a".into(), 1, 2),
            "a known kind still adds"
        );
        assert!(
            sums.add(topic("u"), "c".into(), 1, 2),
            "the limit is per topic"
        );
        assert_eq!(sums.total(), 4);
    }

    #[test]
    fn merge_counts_reactions_dropped_by_limit() {
        let mut total = ReactionSums::default();
        total.add(topic("t"), "a".into(), 5, 2);
        total.add(topic("t"), "b".into(), 5, 2);
        let mut part = ReactionSums::default();
        part.add(topic("t"), "a".into(), 1, 2);
        part.add(topic("t"), "c".into(), 7, 2);
        let dropped = total.merge(part, 2);
        assert_eq!(dropped, 7);
        assert_eq!(total.total(), 11);
    }

    #[test]
    fn merge_into_empty_takes_everything() {
        let mut part = ReactionSums::default();
        part.add(topic("t"), "a".into(), 3, 2);
        let mut total = ReactionSums::default();
        assert_eq!(total.merge(part, 2), 0);
        assert_eq!(total.total(), 3);
    }

    #[test]
    fn huge_sum_splits_into_u32_frames() {
        let sum = u64::from(u32::MAX) * 2 + 5;
        let frames = react_frames(&topic("t"), "heart", sum);
        let counts: Vec<u32> = frames.iter().map(|f| f.count).collect();
        assert_eq!(counts, [u32::MAX, u32::MAX, 5]);
    }

    #[test]
    fn small_sum_is_one_frame() {
        let frames = react_frames(&topic("t"), "heart", 9);
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].count, 9);
    }

    #[test]
    fn ledger_writes_first_count_and_changes_only() {
        let mut ledger = ViewerLedger::default();
        let first = ledger.changes(&counts(&[("t", 3)]));
        assert_eq!(first, [(topic("t"), 3)]);
        ledger.record(topic("t"), 3);
        assert!(ledger.changes(&counts(&[("t", 3)])).is_empty());
        assert_eq!(ledger.changes(&counts(&[("t", 4)])), [(topic("t"), 4)]);
    }

    #[test]
    fn ledger_writes_zero_once_when_viewers_leave() {
        let mut ledger = ViewerLedger::default();
        ledger.record(topic("t"), 3);
        let changes = ledger.changes(&ViewerCounts::new());
        assert_eq!(changes, [(topic("t"), 0)]);
        ledger.record(topic("t"), 0);
        assert!(ledger.changes(&ViewerCounts::new()).is_empty());
    }

    #[test]
    fn ledger_ignores_zero_never_written() {
        let ledger = ViewerLedger::default();
        assert!(ledger.changes(&counts(&[("t", 0)])).is_empty());
    }

    #[test]
    fn upstream_reports_fallen_topic_once() {
        let mut ledger = UpstreamLedger::default();
        let first = ledger.entries(&counts(&[("a", 2), ("b", 1)]));
        assert_eq!(sorted(first), [("a".into(), 2), ("b".into(), 1)]);
        let second = ledger.entries(&counts(&[("a", 2)]));
        assert_eq!(sorted(second), [("a".into(), 2), ("b".into(), 0)]);
        let third = ledger.entries(&counts(&[("a", 2)]));
        assert_eq!(sorted(third), [("a".to_owned(), 2)]);
    }

    #[test]
    fn upstream_skips_zero_counts_never_reported() {
        let mut ledger = UpstreamLedger::default();
        assert!(ledger.entries(&counts(&[("a", 0)])).is_empty());
    }

    #[test]
    fn audience_that_fits_is_kept_whole() {
        let mut entries = UpstreamLedger::default().entries(&counts(&[("a", 1), ("b", 2)]));
        // 4 bytes of count, then 1 + 1 + 8 bytes per entry.
        assert_eq!(fit_audience(&mut entries, 24), 0);
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn oversized_audience_keeps_largest_counts() {
        let mut entries =
            UpstreamLedger::default().entries(&counts(&[("a", 1), ("b", 9), ("c", 5)]));
        assert_eq!(fit_audience(&mut entries, 24), 1);
        assert_eq!(sorted(entries), [("b".into(), 9), ("c".into(), 5)]);
    }

    #[test]
    fn ticker_fires_once_per_interval() {
        let start = Instant::now();
        let mut ticker = Ticker::new(100 * MS, start);
        assert!(!ticker.due(start + 99 * MS));
        assert!(ticker.due(start + 100 * MS));
        assert!(!ticker.due(start + 150 * MS));
        assert!(ticker.due(start + 210 * MS));
        assert_eq!(ticker.next(), start + 300 * MS);
    }

    #[test]
    fn late_ticker_restarts_from_now() {
        let start = Instant::now();
        let mut ticker = Ticker::new(100 * MS, start);
        assert!(ticker.due(start + 1000 * MS));
        assert!(!ticker.due(start + 1050 * MS));
        assert_eq!(ticker.next(), start + 1100 * MS);
    }
}
