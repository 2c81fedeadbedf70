//! The board on which workers publish their viewer counts and reaction sums for the worker
//! that adds them up.
//!
//! Each worker counts its own connections and REACT frames without any lock, and at each tick
//! moves its numbers into its own slot here. The aggregating worker reads every slot at its own
//! tick. A slot's lock is therefore taken twice per interval, never per frame.

use parking_lot::Mutex;

use super::sums::{add_counts, ReactionSums, ViewerCounts};

/// The slots of all workers, indexed by worker number.
#[derive(Debug)]
pub(crate) struct Audience {
    slots: Box<[Mutex<Slot>]>,
}

/// The numbers that one worker published last.
#[derive(Debug, Default)]
struct Slot {
    /// Viewers at the worker's last viewer tick, replaced at each one.
    viewers: ViewerCounts,
    /// Reactions published since the aggregating worker last took them.
    reactions: ReactionSums,
}

impl Audience {
    pub(crate) fn new(workers: usize) -> Audience {
        Audience {
            slots: (0..workers).map(|_| Mutex::default()).collect(),
        }
    }

    /// Replaces the viewer counts of worker `index`.
    pub(crate) fn publish_viewers(&self, index: usize, counts: ViewerCounts) {
        self.slots[index].lock().viewers = counts;
    }

    /// Adds the reaction sums of worker `index` to those waiting for the aggregating worker.
    /// Returns the number of reactions dropped because their topic reached `max_kinds` kinds.
    pub(crate) fn publish_reactions(
        &self,
        index: usize,
        sums: ReactionSums,
        max_kinds: usize,
    ) -> u64 {
        if sums.is_empty() {
            return 0;
        }
        self.slots[index].lock().reactions.merge(sums, max_kinds)
    }

    /// Returns the sum of the latest viewer counts of every worker.
    pub(crate) fn total_viewers(&self) -> ViewerCounts {
        let mut total = ViewerCounts::new();
        for slot in self.slots.iter() {
            add_counts(&mut total, &slot.lock().viewers);
        }
        total
    }

    /// Takes the reactions every worker published, added up. Returns them with the number of
    /// reactions dropped because their topic reached `max_kinds` kinds.
    pub(crate) fn take_reactions(&self, max_kinds: usize) -> (ReactionSums, u64) {
        let mut total = ReactionSums::default();
        let mut dropped = 0u64;
        for slot in self.slots.iter() {
            let sums = std::mem::take(&mut slot.lock().reactions);
            dropped = dropped.saturating_add(total.merge(sums, max_kinds));
        }
        (total, dropped)
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::Topic;

    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    #[test]
    fn totals_add_every_worker() {
        let board = Audience::new(3);
        board.publish_viewers(0, ViewerCounts::from([(topic("t"), 2)]));
        board.publish_viewers(2, ViewerCounts::from([(topic("t"), 5)]));
        assert_eq!(board.total_viewers()[&topic("t")], 7);
    }

    #[test]
    fn new_counts_replace_old_ones() {
        let board = Audience::new(1);
        board.publish_viewers(0, ViewerCounts::from([(topic("t"), 2)]));
        board.publish_viewers(0, ViewerCounts::new());
        assert!(board.total_viewers().is_empty());
    }

    #[test]
    fn reactions_are_taken_once() {
        let board = Audience::new(2);
        for index in 0..2 {
            let mut sums = ReactionSums::default();
            sums.add(topic("t"), "heart".into(), 3, 8);
            assert_eq!(board.publish_reactions(index, sums, 8), 0);
        }
        let (taken, dropped) = board.take_reactions(8);
        assert_eq!(taken.total(), 6);
        assert_eq!(dropped, 0);
        assert!(board.take_reactions(8).0.is_empty());
    }

    /// A worker that publishes twice before the aggregating worker takes them loses nothing.
    #[test]
    fn reactions_published_twice_accumulate() {
        let board = Audience::new(1);
        for _ in 0..2 {
            let mut sums = ReactionSums::default();
            sums.add(topic("t"), "heart".into(), 4, 8);
            board.publish_reactions(0, sums, 8);
        }
        assert_eq!(board.take_reactions(8).0.total(), 8);
    }

    /// Simulated time: two workers tick every 100 ms, and worker 0 also writes the totals. A
    /// record goes out at the first tick and when the total changes, and never in between.
    #[test]
    fn counts_over_simulated_ticks() {
        use std::time::{Duration, Instant};

        use crate::audience::sums::{Ticker, ViewerLedger};

        let interval = Duration::from_millis(100);
        let start = Instant::now();
        let board = Audience::new(2);
        let mut tickers = [Ticker::new(interval, start), Ticker::new(interval, start)];
        let mut ledger = ViewerLedger::default();
        let mut written = Vec::new();
        for ms in (0..=1000).step_by(10) {
            let now = start + Duration::from_millis(ms);
            // Worker 1 has 3 viewers until 450 ms; worker 0 has 2 all along.
            let viewers = [2, if ms < 450 { 3 } else { 0 }];
            for index in [1, 0] {
                if !tickers[index].due(now) {
                    continue;
                }
                let counts = match viewers[index] {
                    0 => ViewerCounts::new(),
                    n => ViewerCounts::from([(topic("t"), n)]),
                };
                board.publish_viewers(index, counts);
                if index == 0 {
                    for (topic, count) in ledger.changes(&board.total_viewers()) {
                        ledger.record(topic, count);
                        written.push((ms, count));
                    }
                }
            }
        }
        assert_eq!(written, [(100, 5), (500, 2)]);
    }

    #[test]
    fn kind_limit_applies_across_workers() {
        let board = Audience::new(2);
        for (index, kind) in ["a", "b"].into_iter().enumerate() {
            let mut sums = ReactionSums::default();
            sums.add(topic("t"), kind.into(), 1, 1);
            board.publish_reactions(index, sums, 1);
        }
        let (taken, dropped) = board.take_reactions(1);
        assert_eq!(taken.total(), 1);
        assert_eq!(dropped, 1);
    }
}
