//! The decisions behind the publish limits, as plain values and functions with the time passed
//! in: reserved topics, blocked words, the per-user token bucket, slow mode and duplicate
//! suppression.
//!
//! Times are microseconds on a monotonic clock that the caller chooses, so tests can drive the
//! arithmetic exactly.

use std::collections::{HashMap, HashSet, VecDeque};

/// Returns whether `topic` is reserved for streams the server writes itself: its first segment
/// starts with `_`.
pub(crate) fn is_reserved(topic: &str) -> bool {
    topic.starts_with('_')
}

/// Splits `text` into lowercase words: maximal runs of letters and digits.
pub(crate) fn normalize_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The blocked words and phrases of the configuration, matched case-insensitively as whole
/// words of a UTF-8 payload.
#[derive(Debug, Default)]
pub(crate) struct BlockedWords {
    /// Entries of one word.
    words: HashSet<String>,
    /// Entries of several words, which match a run of consecutive words of the payload.
    phrases: Vec<Vec<String>>,
}

impl BlockedWords {
    /// Builds the matcher. An entry is split into words the way a payload is, so `"bad-word"`
    /// blocks the phrase `bad word` as well.
    pub(crate) fn new(entries: &[String]) -> BlockedWords {
        let mut blocked = BlockedWords::default();
        for entry in entries {
            let mut words = normalize_words(entry);
            match words.len() {
                0 => {}
                1 => {
                    blocked.words.insert(words.remove(0));
                }
                _ => blocked.phrases.push(words),
            }
        }
        blocked
    }

    /// Returns whether no word is blocked.
    pub(crate) fn is_empty(&self) -> bool {
        self.words.is_empty() && self.phrases.is_empty()
    }

    /// Returns whether `payload` is UTF-8 and contains a blocked word or phrase. Payloads that
    /// are not UTF-8 are opaque to the broker and never match.
    pub(crate) fn matches(&self, payload: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        let Ok(text) = std::str::from_utf8(payload) else {
            return false;
        };
        let words = normalize_words(text);
        words.iter().enumerate().any(|(i, word)| {
            self.words.contains(word)
                || self
                    .phrases
                    .iter()
                    .any(|phrase| words[i..].starts_with(phrase))
        })
    }
}

/// Units of a [`TokenBucket`] in one token: the microseconds in a minute. Refilling `rate`
/// tokens a minute adds exactly `rate` units a microsecond, so the arithmetic has no rounding.
const UNITS_PER_TOKEN: u64 = 60_000_000;

/// One user's token bucket: `burst` tokens at most, refilled at `rate` tokens a minute, one
/// token per comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TokenBucket {
    units: u64,
    updated_us: u64,
}

impl TokenBucket {
    /// Returns a full bucket.
    pub(crate) fn full(burst: u32, now_us: u64) -> TokenBucket {
        TokenBucket {
            units: u64::from(burst) * UNITS_PER_TOKEN,
            updated_us: now_us,
        }
    }

    fn refill(&mut self, rate: u32, burst: u32, now_us: u64) {
        let elapsed = now_us.saturating_sub(self.updated_us);
        let added = elapsed.saturating_mul(u64::from(rate));
        let capacity = u64::from(burst) * UNITS_PER_TOKEN;
        self.units = self.units.saturating_add(added).min(capacity);
        self.updated_us = self.updated_us.max(now_us);
    }

    /// Takes one token if the bucket has one at `now_us`, and returns whether it did.
    pub(crate) fn try_take(&mut self, rate: u32, burst: u32, now_us: u64) -> bool {
        self.refill(rate, burst, now_us);
        if self.units < UNITS_PER_TOKEN {
            return false;
        }
        self.units -= UNITS_PER_TOKEN;
        true
    }

    /// Returns a token taken for a comment that was then rejected or not stored.
    pub(crate) fn give_back(&mut self, burst: u32) {
        let capacity = u64::from(burst) * UNITS_PER_TOKEN;
        self.units = (self.units + UNITS_PER_TOKEN).min(capacity);
    }

    /// Returns whether the bucket is full at `now_us`, so that forgetting it changes nothing.
    pub(crate) fn is_full(&self, rate: u32, burst: u32, now_us: u64) -> bool {
        let mut copy = *self;
        copy.refill(rate, burst, now_us);
        copy.units == u64::from(burst) * UNITS_PER_TOKEN
    }
}

/// Returns whether slow mode lets a user publish at `now_us` when their previous accepted
/// comment in the topic was at `last_us`. An interval of 0 is slow mode off.
pub(crate) fn slow_mode_allows(last_us: Option<u64>, interval_ms: u64, now_us: u64) -> bool {
    match last_us {
        Some(last) if interval_ms > 0 => {
            now_us.saturating_sub(last) >= interval_ms.saturating_mul(1000)
        }
        _ => true,
    }
}

/// Hashes of one user's recent payloads in one topic, newest last, with the times they were
/// accepted.
#[derive(Debug, Default)]
pub(crate) struct RecentPayloads {
    entries: VecDeque<(u64, u64)>,
}

impl RecentPayloads {
    /// Returns whether a payload with `hash` was accepted less than `window_us` before `now_us`.
    pub(crate) fn contains(&self, hash: u64, window_us: u64, now_us: u64) -> bool {
        self.entries
            .iter()
            .any(|&(h, at)| h == hash && now_us.saturating_sub(at) < window_us)
    }

    /// Remembers an accepted payload, forgetting the oldest beyond `capacity`.
    pub(crate) fn remember(&mut self, hash: u64, now_us: u64, capacity: usize) {
        while self.entries.len() >= capacity.max(1) {
            self.entries.pop_front();
        }
        self.entries.push_back((hash, now_us));
    }
}

/// Slow-mode time and recent payloads of one user in one topic.
#[derive(Debug, Default)]
pub(crate) struct PublisherMemory {
    /// When the user's last comment in the topic was accepted.
    last_accepted_us: Option<u64>,
    recent: RecentPayloads,
}

/// Limit that rejects a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The user's previous comment in the topic is more recent than the slow-mode interval.
    SlowMode,
    /// The user's token bucket is empty.
    RateLimited,
    /// The user published the same payload to the topic within the duplicate window.
    Duplicate,
}

/// The per-topic limits of a publish: slow mode, and the duplicate check when `payload_hash` is
/// set.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TopicCheck {
    pub(crate) slow_mode_ms: u64,
    pub(crate) payload_hash: Option<u64>,
    pub(crate) duplicate_window_us: u64,
    pub(crate) now_us: u64,
}

/// Slow-mode times and recent payloads of every user that published to one topic lately.
///
/// Entries older than the longest interval that matters are dropped whenever the map has
/// doubled since the last pruning, so the memory follows the number of recently active users.
#[derive(Debug)]
pub(crate) struct TopicPublishers {
    users: HashMap<String, PublisherMemory>,
    prune_at: usize,
}

/// Size below which the map of a topic's publishers is never pruned.
const MIN_PRUNE_AT: usize = 1024;

impl Default for TopicPublishers {
    fn default() -> TopicPublishers {
        TopicPublishers {
            users: HashMap::new(),
            prune_at: MIN_PRUNE_AT,
        }
    }
}

impl TopicPublishers {
    /// Checks slow mode, then the rate limit, then the duplicate window, for `user`, in the
    /// order the protocol gives.
    ///
    /// `take_token` takes a token from the user's bucket and returns whether there was one. A
    /// token taken for a publish that the duplicate check rejects goes back through
    /// `give_back`, because a rejected comment does not count against the rate limit.
    pub(crate) fn check(
        &self,
        user: &str,
        check: &TopicCheck,
        take_token: impl FnOnce() -> bool,
        give_back: impl FnOnce(),
    ) -> Result<(), Limit> {
        // With slow mode and duplicate suppression off, the lookup is skipped.
        let remembered = check.slow_mode_ms > 0 || check.payload_hash.is_some();
        let memory = remembered.then(|| self.users.get(user)).flatten();
        let last_accepted = memory.and_then(|m| m.last_accepted_us);
        if !slow_mode_allows(last_accepted, check.slow_mode_ms, check.now_us) {
            return Err(Limit::SlowMode);
        }
        if !take_token() {
            return Err(Limit::RateLimited);
        }
        let duplicate = match (memory, check.payload_hash) {
            (Some(memory), Some(hash)) => {
                memory
                    .recent
                    .contains(hash, check.duplicate_window_us, check.now_us)
            }
            _ => false,
        };
        if duplicate {
            give_back();
            return Err(Limit::Duplicate);
        }
        Ok(())
    }

    /// Records an accepted comment of `user`. `keep_us` is how long an entry matters: the
    /// longest of the slow-mode interval and the duplicate window.
    pub(crate) fn record(&mut self, user: &str, check: &TopicCheck, capacity: usize, keep_us: u64) {
        if self.users.len() >= self.prune_at {
            self.prune(check.now_us, keep_us);
        }
        let memory = match self.users.get_mut(user) {
            Some(memory) => memory,
            None => self.users.entry(user.to_owned()).or_default(),
        };
        memory.last_accepted_us = Some(check.now_us);
        if let Some(hash) = check.payload_hash {
            memory.recent.remember(hash, check.now_us, capacity);
        }
    }

    /// Returns the number of users remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.users.len()
    }

    fn prune(&mut self, now_us: u64, keep_us: u64) {
        self.users.retain(|_, memory| {
            memory
                .last_accepted_us
                .is_some_and(|at| now_us.saturating_sub(at) < keep_us)
        });
        self.prune_at = (self.users.len() * 2).max(MIN_PRUNE_AT);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn underscore_topics_are_reserved() {
        assert!(is_reserved("_viewers/live"));
        assert!(is_reserved("_x"));
        assert!(!is_reserved("live/_viewers"));
        assert!(!is_reserved("live"));
    }

    #[test]
    fn blocked_word_matches_whole_words_only() {
        let blocked = BlockedWords::new(&["spam".into()]);
        assert!(blocked.matches(b"buy SPAM now"));
        assert!(blocked.matches(b"spam!"));
        assert!(!blocked.matches(b"spammer here"));
        assert!(!blocked.matches(b"antispam"));
    }

    #[test]
    fn blocked_word_matches_case_insensitively_beyond_ascii() {
        let blocked = BlockedWords::new(&["Ärger".into()]);
        assert!(blocked.matches("so ein ÄRGER".as_bytes()));
        assert!(blocked.matches("ärger".as_bytes()));
    }

    #[test]
    fn blocked_phrase_needs_consecutive_words() {
        let blocked = BlockedWords::new(&["free money".into()]);
        assert!(blocked.matches(b"get FREE  money today"));
        assert!(!blocked.matches(b"free the money"));
        assert!(!blocked.matches(b"money free"));
    }

    #[test]
    fn non_utf8_payload_never_matches() {
        let blocked = BlockedWords::new(&["spam".into()]);
        assert!(!blocked.matches(&[0xff, b's', b'p', b'a', b'm']));
    }

    #[test]
    fn empty_list_matches_nothing() {
        let blocked = BlockedWords::new(&[]);
        assert!(blocked.is_empty());
        assert!(!blocked.matches(b"anything"));
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let mut bucket = TokenBucket::full(3, 0);
        let taken = (0..5).filter(|_| bucket.try_take(120, 3, 0)).count();
        assert_eq!(taken, 3);
        // Two tokens a second: one more after half a second, none before.
        assert!(!bucket.try_take(120, 3, SECOND / 2 - 1));
        assert!(bucket.try_take(120, 3, SECOND / 2));
        assert!(!bucket.try_take(120, 3, SECOND / 2));
    }

    #[test]
    fn bucket_never_exceeds_burst() {
        let mut bucket = TokenBucket::full(2, 0);
        assert!(bucket.try_take(60, 2, 0));
        let later = 3600 * SECOND;
        let taken = (0..10).filter(|_| bucket.try_take(60, 2, later)).count();
        assert_eq!(taken, 2);
    }

    #[test]
    fn given_back_token_can_be_taken_again() {
        let mut bucket = TokenBucket::full(1, 0);
        assert!(bucket.try_take(1, 1, 0));
        bucket.give_back(1);
        assert!(bucket.try_take(1, 1, 0));
        assert!(!bucket.try_take(1, 1, 0));
    }

    #[test]
    fn bucket_is_full_once_refilled() {
        let mut bucket = TokenBucket::full(2, 0);
        assert!(bucket.try_take(240, 2, 0));
        assert!(!bucket.is_full(240, 2, SECOND / 4 - 1));
        assert!(bucket.is_full(240, 2, SECOND / 4));
    }

    #[test]
    fn slow_mode_allows_after_exact_interval() {
        assert!(slow_mode_allows(None, 1000, 5));
        assert!(!slow_mode_allows(Some(0), 1000, SECOND - 1));
        assert!(slow_mode_allows(Some(0), 1000, SECOND));
        assert!(slow_mode_allows(Some(0), 0, 0));
    }

    #[test]
    fn recent_payloads_expire_after_window() {
        let mut recent = RecentPayloads::default();
        recent.remember(42, 0, 4);
        assert!(recent.contains(42, SECOND, SECOND - 1));
        assert!(!recent.contains(42, SECOND, SECOND));
        assert!(!recent.contains(43, SECOND, 0));
    }

    #[test]
    fn recent_payloads_forget_beyond_capacity() {
        let mut recent = RecentPayloads::default();
        for hash in 0..3 {
            recent.remember(hash, 0, 2);
        }
        assert!(!recent.contains(0, SECOND, 0));
        assert!(recent.contains(1, SECOND, 0));
        assert!(recent.contains(2, SECOND, 0));
    }

    fn check(slow_mode_ms: u64, hash: Option<u64>, now_us: u64) -> TopicCheck {
        TopicCheck {
            slow_mode_ms,
            payload_hash: hash,
            duplicate_window_us: 10 * SECOND,
            now_us,
        }
    }

    /// Runs [`TopicPublishers::check`] against a bucket of `tokens` tokens, and returns the
    /// result and the tokens left.
    fn check_with_tokens(
        publishers: &TopicPublishers,
        user: &str,
        check: &TopicCheck,
        tokens: u32,
    ) -> (Result<(), Limit>, u32) {
        let left = std::cell::Cell::new(tokens);
        let take = || {
            let available = left.get() > 0;
            if available {
                left.set(left.get() - 1);
            }
            available
        };
        let result = publishers.check(user, check, take, || left.set(left.get() + 1));
        (result, left.get())
    }

    #[test]
    fn limits_apply_in_protocol_order() {
        let mut publishers = TopicPublishers::default();
        publishers.record("u", &check(1000, Some(7), 0), 4, 10 * SECOND);

        let early = check(1000, Some(7), SECOND / 2);
        assert_eq!(
            check_with_tokens(&publishers, "u", &early, 0),
            (Err(Limit::SlowMode), 0)
        );
        let later = check(1000, Some(7), SECOND);
        assert_eq!(
            check_with_tokens(&publishers, "u", &later, 0),
            (Err(Limit::RateLimited), 0)
        );
        assert_eq!(
            check_with_tokens(&publishers, "u", &later, 1),
            (Err(Limit::Duplicate), 1)
        );
        let other_payload = check(1000, Some(8), SECOND);
        assert_eq!(
            check_with_tokens(&publishers, "u", &other_payload, 1),
            (Ok(()), 0)
        );
    }

    #[test]
    fn limits_tell_users_apart() {
        let mut publishers = TopicPublishers::default();
        publishers.record("u", &check(1000, Some(7), 0), 4, 10 * SECOND);
        let result = check_with_tokens(&publishers, "v", &check(1000, Some(7), 0), 1);
        assert_eq!(result, (Ok(()), 0));
    }

    #[test]
    fn pruning_drops_only_stale_users() {
        let mut publishers = TopicPublishers::default();
        for i in 0..MIN_PRUNE_AT {
            publishers.record(&format!("old-{i}"), &check(0, None, 0), 4, SECOND);
        }
        publishers.record("fresh", &check(0, None, 2 * SECOND), 4, SECOND);
        assert_eq!(publishers.len(), 1);
    }
}
