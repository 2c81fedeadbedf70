//! Per-subscriber delivery checks by stamp: each (publisher, sequence number) of the
//! subscriber's topic must arrive once. Works for every broker; offsets are checked in addition
//! where the broker assigns them.

use serde::Serialize;

use super::stamp::Stamp;

/// Set of sequence numbers seen, as a growable bitmap.
#[derive(Debug, Default, Clone)]
pub(crate) struct SeqSet {
    words: Vec<u64>,
    distinct: u64,
}

impl SeqSet {
    /// Adds `seq` and returns whether it was new.
    pub(crate) fn insert(&mut self, seq: u64) -> bool {
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        if self.words[word] & bit != 0 {
            return false;
        }
        self.words[word] |= bit;
        self.distinct += 1;
        true
    }

    pub(crate) fn distinct(&self) -> u64 {
        self.distinct
    }
}

/// Delivery counters of one subscriber, or of several added up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct DeliveryCounts {
    /// Messages received for the first time.
    pub(crate) delivered: u64,
    /// Messages received again.
    pub(crate) duplicates: u64,
    /// Messages that arrived after a later message of the same publisher and topic.
    pub(crate) out_of_order: u64,
    /// Payloads without a valid stamp, or naming a publisher, topic or sequence number that
    /// was never sent to this subscriber's topic.
    pub(crate) unknown: u64,
    /// Offsets skipped between consecutive deliveries, for brokers that assign offsets.
    pub(crate) offset_gaps: u64,
}

impl DeliveryCounts {
    pub(crate) fn add(&mut self, other: &DeliveryCounts) {
        self.delivered += other.delivered;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unknown += other.unknown;
        self.offset_gaps += other.offset_gaps;
    }
}

/// Checks what one subscriber of one topic receives.
#[derive(Debug, Clone)]
pub(crate) struct SubscriberCheck {
    pub(crate) topic: usize,
    seen: Vec<SeqSet>,
    highest: Vec<Option<u64>>,
    next_offset: Option<u64>,
    counts: DeliveryCounts,
}

impl SubscriberCheck {
    pub(crate) fn new(topic: usize, publishers: usize) -> SubscriberCheck {
        SubscriberCheck {
            topic,
            seen: vec![SeqSet::default(); publishers],
            highest: vec![None; publishers],
            next_offset: None,
            counts: DeliveryCounts::default(),
        }
    }

    /// Sets the offset of the first message the subscription delivers.
    pub(crate) fn start_at(&mut self, offset: u64) {
        self.next_offset = Some(offset);
    }

    /// Checks one delivery; returns whether it is a first-time delivery of a message sent to
    /// this subscriber's topic.
    ///
    /// `sent` returns how many messages a publisher has sent in all; a sequence number at or
    /// above it cannot be genuine, and bounding it also bounds the bitmap.
    pub(crate) fn check(
        &mut self,
        stamp: Option<Stamp>,
        offset: Option<u64>,
        sent: impl Fn(usize) -> u64,
    ) -> bool {
        if let Some(offset) = offset {
            self.check_offset(offset);
        }
        let Some(stamp) = stamp else {
            self.counts.unknown += 1;
            return false;
        };
        let publisher = usize::from(stamp.publisher);
        let genuine = publisher < self.seen.len()
            && stamp.topic as usize == self.topic
            && stamp.seq < sent(publisher);
        if !genuine {
            self.counts.unknown += 1;
            return false;
        }
        if !self.seen[publisher].insert(stamp.seq) {
            self.counts.duplicates += 1;
            return false;
        }
        self.counts.delivered += 1;
        let highest = &mut self.highest[publisher];
        match *highest {
            Some(h) if stamp.seq < h => self.counts.out_of_order += 1,
            _ => *highest = Some(stamp.seq),
        }
        true
    }

    fn check_offset(&mut self, offset: u64) {
        if let Some(next) = self.next_offset {
            self.counts.offset_gaps += offset.saturating_sub(next);
        }
        self.next_offset = Some(offset + 1);
    }

    pub(crate) fn counts(&self) -> DeliveryCounts {
        self.counts
    }

    /// Returns how many distinct messages of `publisher` arrived.
    pub(crate) fn distinct_from(&self, publisher: usize) -> u64 {
        self.seen.get(publisher).map_or(0, SeqSet::distinct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(publisher: u16, topic: u32, seq: u64) -> Option<Stamp> {
        Some(Stamp {
            publisher,
            topic,
            seq,
            sent_nanos: 1,
        })
    }

    const SENT: fn(usize) -> u64 = |_| 100;

    #[test]
    fn seq_set_counts_distinct() {
        let mut set = SeqSet::default();
        assert!(set.insert(5));
        assert!(set.insert(200));
        assert!(!set.insert(5));
        assert_eq!(set.distinct(), 2);
    }

    #[test]
    fn repeat_is_duplicate() {
        let mut check = SubscriberCheck::new(0, 2);
        assert!(check.check(stamp(1, 0, 3), None, SENT));
        assert!(!check.check(stamp(1, 0, 3), None, SENT));
        assert_eq!(check.counts().duplicates, 1);
        assert_eq!(check.distinct_from(1), 1);
    }

    #[test]
    fn late_message_is_out_of_order() {
        let mut check = SubscriberCheck::new(0, 1);
        check.check(stamp(0, 0, 4), None, SENT);
        check.check(stamp(0, 0, 2), None, SENT);
        assert_eq!(check.counts().out_of_order, 1);
        assert_eq!(check.counts().delivered, 2);
    }

    #[test]
    fn other_topic_or_unsent_seq_is_unknown() {
        let mut check = SubscriberCheck::new(0, 1);
        assert!(!check.check(stamp(0, 1, 0), None, SENT));
        assert!(!check.check(stamp(0, 0, 100), None, SENT));
        assert!(!check.check(stamp(7, 0, 0), None, SENT));
        assert!(!check.check(None, None, SENT));
        assert_eq!(check.counts().unknown, 4);
    }

    #[test]
    fn offset_gap_is_counted() {
        let mut check = SubscriberCheck::new(0, 1);
        check.start_at(10);
        check.check(stamp(0, 0, 0), Some(10), SENT);
        check.check(stamp(0, 0, 1), Some(13), SENT);
        assert_eq!(check.counts().offset_gaps, 2);
    }
}
