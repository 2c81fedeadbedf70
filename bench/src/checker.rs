//! Checks what one subscriber receives against what was published.

use serde::Serialize;

use crate::workload::{decode_payload, Workload};

/// Delivery counters of one subscriber, or of all of them added up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    /// Comments received for the first time.
    pub(crate) delivered: u64,
    /// Offsets skipped: each gap between consecutive offsets adds its width.
    pub(crate) losses: u64,
    /// Offsets received again, or one comment received under a second offset.
    pub(crate) duplicates: u64,
    /// Comments that arrived before an earlier comment of the same publisher.
    pub(crate) out_of_order: u64,
    /// Comments whose author or text differs from what was published under their index.
    pub(crate) wrong_text: u64,
    /// Payloads that name no comment of this run: not this bench's JSON, or an unknown index.
    pub(crate) unknown: u64,
}

impl Counts {
    pub(crate) fn add(&mut self, other: &Counts) {
        self.delivered += other.delivered;
        self.losses += other.losses;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.wrong_text += other.wrong_text;
        self.unknown += other.unknown;
    }

    /// Returns whether any check failed.
    pub(crate) fn has_failures(&self) -> bool {
        self.losses + self.duplicates + self.out_of_order + self.wrong_text + self.unknown > 0
    }
}

/// Per-subscriber delivery state.
#[derive(Debug)]
pub(crate) struct DeliveryChecker {
    next_offset: u64,
    seen: Vec<bool>,
    last_index_by_publisher: Vec<Option<usize>>,
    counts: Counts,
}

impl DeliveryChecker {
    /// Starts checking a subscription whose first comment has offset `start`.
    pub(crate) fn new(start: u64, workload: &Workload) -> DeliveryChecker {
        DeliveryChecker {
            next_offset: start,
            seen: vec![false; workload.len()],
            last_index_by_publisher: vec![None; workload.publishers()],
            counts: Counts::default(),
        }
    }

    /// Checks one received comment and returns its index when it is received for the first
    /// time, so the caller can record its latency.
    pub(crate) fn check(
        &mut self,
        workload: &Workload,
        offset: u64,
        payload: &[u8],
    ) -> Option<usize> {
        if !self.check_offset(offset) {
            return None;
        }
        let Some((index, intact)) = identify(workload, payload) else {
            self.counts.unknown += 1;
            return None;
        };
        if self.seen[index] {
            self.counts.duplicates += 1;
            return None;
        }
        self.seen[index] = true;
        self.counts.delivered += 1;
        if !intact {
            self.counts.wrong_text += 1;
        }
        self.check_order(workload.publisher_of(index), index);
        Some(index)
    }

    /// Advances the expected offset; returns `false` for an offset already passed.
    fn check_offset(&mut self, offset: u64) -> bool {
        if offset < self.next_offset {
            self.counts.duplicates += 1;
            return false;
        }
        self.counts.losses += offset - self.next_offset;
        self.next_offset = offset + 1;
        true
    }

    fn check_order(&mut self, publisher: usize, index: usize) {
        let last = &mut self.last_index_by_publisher[publisher];
        match *last {
            Some(previous) if index < previous => self.counts.out_of_order += 1,
            _ => *last = Some(index),
        }
    }

    pub(crate) fn counts(&self) -> Counts {
        self.counts
    }

    /// Returns whether every comment of the run has been received.
    pub(crate) fn is_complete(&self) -> bool {
        self.counts.delivered as usize == self.seen.len()
    }

    /// Returns the indices not received yet.
    pub(crate) fn missing(&self) -> impl Iterator<Item = usize> + '_ {
        self.seen
            .iter()
            .enumerate()
            .filter(|(_, &seen)| !seen)
            .map(|(index, _)| index)
    }
}

/// Finds the comment a payload names and whether its author and text are the published ones.
///
/// The fast path reads the index from the `{"i":N,` prefix that [`crate::workload`] writes and
/// compares the payload byte for byte. A payload that fails the fast path is decoded as JSON in
/// full.
fn identify(workload: &Workload, payload: &[u8]) -> Option<(usize, bool)> {
    if let Some(index) = leading_index(payload).filter(|&i| i < workload.len()) {
        if payload == workload.payload(index) {
            return Some((index, true));
        }
    }
    let decoded = decode_payload(payload)?;
    let index = usize::try_from(decoded.i)
        .ok()
        .filter(|&i| i < workload.len())?;
    let expected = workload.comment(index);
    let intact = decoded.t == expected.text && decoded.a == expected.author;
    Some((index, intact))
}

/// Parses `N` from a payload that starts with `{"i":N,`.
fn leading_index(payload: &[u8]) -> Option<usize> {
    let rest = payload.strip_prefix(br#"{"i":"#)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || rest.get(digits) != Some(&b',') {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{comment, encode_payload};

    /// Six comments by two authors; with two publishers, `ann` (even indices) uses publisher 0
    /// and `bob` (odd indices) publisher 1.
    fn workload() -> Workload {
        let comments = (0..6)
            .map(|i| {
                let author = if i % 2 == 0 { "ann" } else { "bob" };
                comment(i * 10, author, &format!("text {i}"))
            })
            .collect();
        Workload::new(comments, 2)
    }

    /// Feeds `(offset, index)` pairs carrying the published payload of each index.
    fn feed(pairs: &[(u64, usize)]) -> DeliveryChecker {
        let workload = workload();
        let mut checker = DeliveryChecker::new(100, &workload);
        for &(offset, index) in pairs {
            checker.check(&workload, offset, workload.payload(index));
        }
        checker
    }

    #[test]
    fn clean_run_is_complete() {
        let checker = feed(&[(100, 0), (101, 1), (102, 2), (103, 3), (104, 4), (105, 5)]);
        assert_eq!(checker.counts().delivered, 6);
        assert!(!checker.counts().has_failures());
        assert!(checker.is_complete());
    }

    #[test]
    fn offset_gap_counts_losses() {
        let checker = feed(&[(100, 0), (101, 1), (104, 4), (105, 5)]);
        assert_eq!(checker.counts().losses, 2);
        assert_eq!(checker.missing().collect::<Vec<_>>(), vec![2, 3]);
        assert!(!checker.is_complete());
    }

    #[test]
    fn gap_before_first_event_counts_losses() {
        let checker = feed(&[(103, 0)]);
        assert_eq!(checker.counts().losses, 3);
    }

    #[test]
    fn repeated_offset_counts_duplicate() {
        let checker = feed(&[(100, 0), (101, 1), (101, 1), (102, 2)]);
        assert_eq!(checker.counts().duplicates, 1);
        assert_eq!(checker.counts().delivered, 3);
        assert_eq!(checker.counts().losses, 0);
    }

    #[test]
    fn repeated_comment_under_new_offset_counts_duplicate() {
        let checker = feed(&[(100, 0), (101, 1), (102, 1)]);
        assert_eq!(checker.counts().duplicates, 1);
        assert_eq!(checker.counts().delivered, 2);
    }

    #[test]
    fn reordering_within_publisher_counts_out_of_order() {
        // Publisher 0 sends indices 0, 2, 4; index 2 arrives after 4.
        let checker = feed(&[(100, 0), (101, 4), (102, 2)]);
        assert_eq!(checker.counts().out_of_order, 1);
    }

    #[test]
    fn interleaving_publishers_is_in_order() {
        // Publisher 1's index 1 after publisher 0's index 4 is allowed.
        let checker = feed(&[(100, 0), (101, 4), (102, 1), (103, 3)]);
        assert_eq!(checker.counts().out_of_order, 0);
    }

    #[test]
    fn wrong_text_is_counted() {
        let workload = workload();
        let mut checker = DeliveryChecker::new(0, &workload);
        let forged = encode_payload(2, "ann", "not text 2");
        let index = checker.check(&workload, 0, &forged);
        assert_eq!(index, Some(2));
        assert_eq!(checker.counts().wrong_text, 1);
    }

    #[test]
    fn wrong_author_is_counted() {
        let workload = workload();
        let mut checker = DeliveryChecker::new(0, &workload);
        checker.check(&workload, 0, &encode_payload(2, "bob", "text 2"));
        assert_eq!(checker.counts().wrong_text, 1);
    }

    #[test]
    fn foreign_payloads_are_unknown() {
        let workload = workload();
        let mut checker = DeliveryChecker::new(0, &workload);
        checker.check(&workload, 0, b"not json");
        checker.check(&workload, 1, &encode_payload(99, "ann", "text 99"));
        assert_eq!(checker.counts().unknown, 2);
        assert_eq!(checker.counts().delivered, 0);
    }

    #[test]
    fn reordered_json_keys_are_accepted() {
        let workload = workload();
        let mut checker = DeliveryChecker::new(0, &workload);
        let index = checker.check(&workload, 0, br#"{"t":"text 2","a":"ann","i":2}"#);
        assert_eq!(index, Some(2));
        assert_eq!(checker.counts().wrong_text, 0);
    }

    #[test]
    fn leading_index_reads_prefix() {
        assert_eq!(leading_index(br#"{"i":42,"a":"x","t":"y"}"#), Some(42));
        assert_eq!(leading_index(br#"{"i":,"a":"x"}"#), None);
        assert_eq!(leading_index(br#"{"i":4}"#), None);
        assert_eq!(leading_index(br#"{"a":"x","i":4}"#), None);
    }

    #[test]
    fn counts_add_up() {
        let mut total = feed(&[(100, 0), (102, 2)]).counts();
        total.add(&feed(&[(100, 0), (100, 0)]).counts());
        assert_eq!(total.delivered, 3);
        assert_eq!(total.losses, 1);
        assert_eq!(total.duplicates, 1);
    }
}
