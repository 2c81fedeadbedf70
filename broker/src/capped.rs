//! Capped delivery: a subscription that asked, with CAP, for at most R comments a second.
//!
//! A capped subscription does not take the shared EVENTS frame of a batch as it is. Each entry
//! goes through the subscription's [`Sampler`], and the kept entries are encoded into an EVENTS
//! frame of its own. Entries flagged `PRIORITY`, `TOMBSTONE` or `DELETED` are always kept and do
//! not count against R. Every comment left out is counted, and the worker tick reports the count
//! in a SKIPPED frame at most once per `delivery.skip_notice_ms`. CAP 0, UNSUBSCRIBE and a
//! SUBSCRIBE that replaces the subscription report what is left at once.
//!
//! # Sampler
//!
//! The sampler works on the entries' broker times (`time_us`, set by the origin), not on the
//! time of delivery. So a live batch, a catch-up read from the log and a read from a relay's
//! cache give the same sample, and a viewer that subscribes to "last 50" gets the history
//! sampled at R a second instead of a single comment.
//!
//! Each second of broker time, counted from the Unix epoch, is cut into R slots of 1/R s, and
//! a slot delivers at most one comment: the first one whose time falls in it. Comments can only
//! be kept or left out as they arrive, because holding them back to pick a better one would add
//! latency. This gives:
//!
//! - at most R comments in every whole second of broker time, one per slot, so they are
//!   spread over the second rather than sent in a burst at its start;
//! - at most R + 1 in any window of one second that starts inside a second;
//! - R a second whenever comments arrive in every slot, so a viewer receives as many comments
//!   as it asked for.
//!
//! A token bucket of capacity 1 refilled at R/s was rejected because it is unfair when the
//! rate is just above R. The bucket is then empty after each comment it lets through, and
//! the next comment that arrives before the bucket has refilled is left out, which wastes
//! the rest of that interval. With comments 99 ms apart and R = 10 the bucket delivers 5 a
//! second where the slots deliver nearly 10. A deeper bucket would send bursts instead of an
//! even spread.
//!
//! Broker time has a resolution of one microsecond, so entries with the same `time_us` share a
//! slot even when R is above 1,000,000, and such a cap delivers at most one comment per
//! microsecond.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::event::{flags, measure_entry, EventsFrameBuilder, ENTRY_FIXED_LEN};
use chorus_protocol::{Cap, Frame, Skipped, Topic, HEADER_LEN};
use mio::Token;
use rustc_hash::FxHashMap as HashMap;
use tracing::{debug, error};

use crate::conn::{Conn, Delivery, OutQueue, Subscription};
use crate::delivery::Offer;
use crate::topics::Batch;
use crate::worker::{Worker, FIRST_CONN};

/// Microseconds in a second, the unit of entry times.
const MICROS_PER_SEC: u128 = 1_000_000;

/// Flags of entries that a capped subscription always delivers, outside its rate.
const ALWAYS_DELIVERED: u8 = flags::PRIORITY | flags::TOMBSTONE | flags::DELETED;

/// Maximum number of log reads for one capped subscription per catch-up turn. A capped
/// subscription can leave out almost everything it reads, so its queue may never fill up and
/// end the turn. This bound keeps one long backlog from stalling the worker.
pub(crate) const MAX_CAPPED_READS_PER_TURN: usize = 16;

/// Decides which comments a capped subscription delivers: at most one per slot of 1/R second
/// of broker time. See the module documentation for why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Sampler {
    per_sec: NonZeroU32,
    /// Slot of the last comment delivered; slot `n` covers broker times from `n / R` seconds
    /// (inclusive) to `(n + 1) / R` seconds (exclusive) after the Unix epoch.
    last_slot: Option<u128>,
}

impl Sampler {
    pub(crate) fn new(per_sec: NonZeroU32) -> Sampler {
        Sampler {
            per_sec,
            last_slot: None,
        }
    }

    /// Returns whether a comment with broker time `time_us` is delivered, and takes its slot
    /// if so. A comment whose slot is at or before the last one taken is left out, so times
    /// that go backwards never deliver more than R a second.
    pub(crate) fn admit(&mut self, time_us: u64) -> bool {
        let slot = self.slot(time_us);
        if self.last_slot.is_some_and(|last| slot <= last) {
            return false;
        }
        self.last_slot = Some(slot);
        true
    }

    /// Changes the rate. The slot of the new rate that contains the end of the last slot taken
    /// counts as taken, so the next comment delivered is still after that slot.
    pub(crate) fn set_rate(&mut self, per_sec: NonZeroU32) {
        let old_rate = u128::from(self.per_sec.get());
        self.per_sec = per_sec;
        if let Some(last) = self.last_slot {
            // Last microsecond of the old slot: the start of the next slot, rounded up, minus 1.
            let next_start_us = ((last + 1) * MICROS_PER_SEC).div_ceil(old_rate);
            let end_us = u64::try_from(next_start_us.saturating_sub(1)).unwrap_or(u64::MAX);
            self.last_slot = Some(self.slot(end_us));
        }
    }

    fn slot(&self, time_us: u64) -> u128 {
        u128::from(time_us) * u128::from(self.per_sec.get()) / MICROS_PER_SEC
    }
}

/// Cap state of one subscription.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CapState {
    sampler: Sampler,
    /// Comments left out and not yet reported in a SKIPPED.
    unreported: u64,
    /// Offset after the last entry the sampler examined: the `through` of the next SKIPPED.
    ///
    /// NOTE: when a relay moves a subscription to a new stream of its topic, offsets start
    /// again at 0, so the next `through` can be below the previous one.
    through: u64,
    /// When the last SKIPPED was queued, or when the cap was set.
    last_notice: Instant,
}

impl CapState {
    pub(crate) fn new(per_sec: NonZeroU32, now: Instant) -> CapState {
        CapState {
            sampler: Sampler::new(per_sec),
            unreported: 0,
            through: 0,
            last_notice: now,
        }
    }

    /// Decides whether the subscription delivers one encoded entry, and counts the entry as
    /// skipped if not. An entry too short to read is kept, so that the frame builder reports
    /// it.
    pub(crate) fn keep(&mut self, entry: &[u8]) -> bool {
        let Some(fixed) = entry.get(..ENTRY_FIXED_LEN) else {
            return true;
        };
        let offset = read_u64(&fixed[0..8]);
        let time_us = read_u64(&fixed[8..16]);
        let entry_flags = fixed[16];
        self.through = offset.saturating_add(1);
        if entry_flags & ALWAYS_DELIVERED != 0 || self.sampler.admit(time_us) {
            return true;
        }
        self.unreported += 1;
        false
    }

    /// Samples the entries of an EVENTS frame and returns the kept ones as a new frame for
    /// `topic`. This state does not change until [`CapState::apply`] commits the outcome.
    pub(crate) fn sample_frame(&self, topic: &Topic, frame: &[u8]) -> Sampled {
        let mut state = *self;
        let Some((stream, body)) = events_body(frame) else {
            error!(%topic, "EVENTS frame too short to sample; nothing delivered");
            return Sampled::nothing(self);
        };
        let mut kept = Vec::new();
        let mut kept_bytes = 0;
        let mut seen = 0;
        for entry in entries(body) {
            seen += 1;
            if state.keep(entry) {
                kept_bytes += entry.len();
                kept.push(entry);
            }
        }
        // The builder gets the exact size, because a queued frame keeps its whole allocation.
        let mut builder = EventsFrameBuilder::new(topic, stream, kept_bytes);
        for entry in &kept {
            // Entries come from a frame built by this broker or checked when it arrived from
            // upstream, in increasing offset order, which is all that `push_encoded` checks.
            if let Err(e) = builder.push_encoded(entry) {
                error!(%topic, error = %e, "invalid entry in an EVENTS frame; left out");
            }
        }
        let kept_count = u64::from(builder.count());
        Sampled {
            frame: (!builder.is_empty()).then(|| builder.finish()),
            kept: kept_count,
            skipped: state.unreported - self.unreported,
            sampler: state.sampler,
            through: (seen > 0).then_some(state.through),
        }
    }

    /// Commits the outcome of [`CapState::sample_frame`], which may have been computed from
    /// another subscription whose sampler was in the same state.
    pub(crate) fn apply(&mut self, sampled: &Sampled) {
        self.sampler = sampled.sampler;
        self.unreported += sampled.skipped;
        if let Some(through) = sampled.through {
            self.through = through;
        }
    }

    /// Returns the number of comments left out since `earlier`, an earlier copy of this state
    /// with no notice taken in between.
    pub(crate) fn skipped_since(&self, earlier: &CapState) -> u64 {
        self.unreported - earlier.unreported
    }

    /// Returns the SKIPPED body for the comments not reported yet and resets the count, or
    /// returns `None` when there are none.
    pub(crate) fn take_notice(&mut self, topic: &Topic, now: Instant) -> Option<Skipped> {
        if self.unreported == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.unreported);
        self.last_notice = now;
        Some(Skipped {
            topic: topic.clone(),
            count,
            through: self.through,
        })
    }

    /// Returns whether a SKIPPED is due: comments are unreported and the last notice is at
    /// least `interval` old.
    fn notice_due(&self, now: Instant, interval: Duration) -> bool {
        self.unreported > 0 && now.saturating_duration_since(self.last_notice) >= interval
    }
}

/// Outcome of sampling one EVENTS frame for a capped subscription.
#[derive(Debug, Clone)]
pub(crate) struct Sampled {
    /// EVENTS frame of the kept entries, or `None` when none was kept.
    pub(crate) frame: Option<Bytes>,
    /// Entries kept.
    pub(crate) kept: u64,
    /// Comments left out.
    pub(crate) skipped: u64,
    /// Sampler state after the frame.
    sampler: Sampler,
    /// Offset after the last entry of the frame, or `None` when the frame has no entry.
    through: Option<u64>,
}

impl Sampled {
    fn nothing(state: &CapState) -> Sampled {
        Sampled {
            frame: None,
            kept: 0,
            skipped: 0,
            sampler: state.sampler,
            through: None,
        }
    }
}

/// Samples of one shared batch by sampler state. Capped subscriptions whose samplers are in the
/// same state (the usual case for viewers with the same cap) get the same frame, so the batch
/// is sampled and encoded once per state rather than once per subscription.
pub(crate) type SampleCache = HashMap<Sampler, Sampled>;

/// Offers a shared batch to a capped subscription: queues the kept entries as a frame of its
/// own, or switches the subscription to catch-up when the batch leaves a gap or the frame does
/// not fit in the queue. The caller has checked that the batch is of the subscription's stream
/// and not behind it.
pub(crate) fn offer_sampled(
    sub: &mut Subscription,
    out: &mut OutQueue,
    batch: &Batch,
    limit: usize,
    cache: &mut SampleCache,
) -> Offer {
    let Some(cap) = sub.cap.as_mut() else {
        return Offer::Skipped;
    };
    if batch.first != sub.next {
        sub.delivery = Delivery::CatchUp;
        return Offer::Behind;
    }
    let sampled = cache
        .entry(cap.sampler)
        .or_insert_with(|| cap.sample_frame(&sub.topic.name, &batch.frame));
    let frame_len = sampled.frame.as_ref().map_or(0, Bytes::len);
    if out.bytes() + frame_len > limit {
        // Nothing is committed, so catch-up samples the same entries again from the log.
        sub.delivery = Delivery::CatchUp;
        return Offer::Behind;
    }
    cap.apply(sampled);
    if let Some(frame) = &sampled.frame {
        out.push(frame.clone());
    }
    sub.next = batch.end;
    Offer::Sampled {
        kept: sampled.kept,
        skipped: sampled.skipped,
    }
}

/// Samples an EVENTS frame read from a relay's cache for a capped subscription. Returns the
/// frame to queue, if any entry was kept, and the number of entries kept.
pub(crate) fn sample_cached(
    cap: &mut CapState,
    topic: &Topic,
    frame: &[u8],
    skipped: &mut u64,
) -> (Option<Bytes>, u64) {
    let sampled = cap.sample_frame(topic, frame);
    cap.apply(&sampled);
    *skipped += sampled.skipped;
    (sampled.frame, sampled.kept)
}

impl Worker {
    /// Handles CAP: sets, changes or removes the cap of the connection's subscription to the
    /// topic. A CAP for a topic the connection is not subscribed to is ignored. Removing the
    /// cap first queues a SKIPPED for the comments not reported yet.
    pub(crate) fn on_cap(&mut self, token: Token, cap: Cap) {
        let now = Instant::now();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let conn_id = conn.id;
        let Some(sub) = conn.subs.values_mut().find(|s| s.topic.name == cap.topic) else {
            debug!(conn = conn_id, topic = %cap.topic, "CAP for a topic without subscription ignored");
            return;
        };
        let notice = match (NonZeroU32::new(cap.max_per_sec), sub.cap.as_mut()) {
            (Some(rate), Some(state)) => {
                state.sampler.set_rate(rate);
                None
            }
            (Some(rate), None) => {
                sub.cap = Some(Box::new(CapState::new(rate, now)));
                None
            }
            (None, Some(state)) => {
                let notice = state.take_notice(&cap.topic, now);
                sub.cap = None;
                notice
            }
            (None, None) => None,
        };
        debug!(conn = conn_id, topic = %cap.topic, max_per_sec = cap.max_per_sec, "subscription cap changed");
        if cap.max_per_sec > 0 {
            self.capped.insert(token);
        }
        if let Some(notice) = notice {
            self.send(token, &Frame::Skipped(notice));
        }
    }

    /// Takes the cap of the subscription to `topic_id` before a SUBSCRIBE replaces it, and
    /// queues a SKIPPED for the comments the old subscription has not reported yet. Returns the
    /// cap for [`Worker::restore_cap`], with the sampler kept so that the rate still applies
    /// across the replacement.
    pub(crate) fn take_cap(&mut self, token: Token, topic_id: u64) -> Option<Box<CapState>> {
        let now = Instant::now();
        let conn = self.conn_mut(token)?;
        let sub = conn.subs.get_mut(&topic_id)?;
        let mut cap = sub.cap.take()?;
        if let Some(notice) = cap.take_notice(&sub.topic.name, now) {
            self.send(token, &Frame::Skipped(notice));
        }
        Some(cap)
    }

    /// Puts a cap taken with [`Worker::take_cap`] on the new subscription to `topic_id`, if
    /// the SUBSCRIBE created one.
    pub(crate) fn restore_cap(&mut self, token: Token, topic_id: u64, cap: Option<Box<CapState>>) {
        let Some(cap) = cap else {
            return;
        };
        if let Some(sub) = self
            .conn_mut(token)
            .and_then(|conn| conn.subs.get_mut(&topic_id))
        {
            sub.cap = Some(cap);
        }
    }

    /// Queues a SKIPPED for the comments that the subscription to `topic_id` has not reported
    /// yet, before the subscription ends, so that the counts add up to every comment left out.
    pub(crate) fn flush_skipped(&mut self, token: Token, topic_id: u64) {
        let now = Instant::now();
        let notice = self
            .conn_mut(token)
            .and_then(|conn| conn.subs.get_mut(&topic_id))
            .and_then(|sub| {
                let name = &sub.topic.name;
                sub.cap.as_mut()?.take_notice(name, now)
            });
        if let Some(notice) = notice {
            self.send(token, &Frame::Skipped(notice));
        }
    }

    /// Queues a SKIPPED for every capped subscription with unreported comments whose last
    /// notice is at least `delivery.skip_notice_ms` old, and removes connections that have no
    /// capped subscription any more from [`Worker::capped`].
    pub(crate) fn send_skip_notices(&mut self, now: Instant) {
        let interval = Duration::from_millis(self.shared.config.delivery.skip_notice_ms);
        let mut notices = Vec::new();
        let conns = &mut self.conns;
        self.capped.retain(|token| {
            let Some(conn) = token
                .0
                .checked_sub(FIRST_CONN)
                .and_then(|index| conns.get_mut(index))
            else {
                return false;
            };
            collect_notices(conn, now, interval, |notice| notices.push((*token, notice)))
        });
        for (token, notice) in notices {
            self.send(token, &Frame::Skipped(notice));
        }
    }
}

/// Passes the due SKIPPED notices of `conn` to `sink`. Returns whether the connection still has
/// a capped subscription.
fn collect_notices(
    conn: &mut Conn,
    now: Instant,
    interval: Duration,
    mut sink: impl FnMut(Skipped),
) -> bool {
    let closing = conn.phase == crate::conn::Phase::Closing;
    let mut capped = false;
    for sub in conn.subs.values_mut() {
        let Some(cap) = sub.cap.as_mut() else {
            continue;
        };
        capped = true;
        if closing || !cap.notice_due(now, interval) {
            continue;
        }
        if let Some(notice) = cap.take_notice(&sub.topic.name, now) {
            sink(notice);
        }
    }
    capped
}

/// Returns the stream id and the encoded entries of an EVENTS frame.
fn events_body(frame: &[u8]) -> Option<(u64, &[u8])> {
    // Header, topic (length byte and name), stream id and count come before the entries.
    let topic_len = usize::from(*frame.get(HEADER_LEN)?);
    let stream_at = HEADER_LEN + 1 + topic_len;
    let stream = read_u64(frame.get(stream_at..stream_at + 8)?);
    let body = frame.get(stream_at + 8 + 4..)?;
    Some((stream, body))
}

/// Iterates over encoded entries laid out back to back. Stops at the first entry whose lengths
/// do not fit, which a frame built by this broker or checked on arrival never has.
fn entries(mut rest: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let (_, len) = measure_entry(rest).ok()?;
        let (entry, tail) = rest.split_at(len);
        rest = tail;
        Some(entry)
    })
}

/// Reads a big-endian u64 from the first 8 bytes of `bytes`, which has at least 8.
fn read_u64(bytes: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(value)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use chorus_protocol::event::encode_entry;
    use chorus_protocol::{decode_frame, Event};

    use super::*;

    fn rate(per_sec: u32) -> NonZeroU32 {
        NonZeroU32::new(per_sec).expect("test rates are above 0")
    }

    /// Counts the comments admitted in each whole second of `times_us`.
    fn admitted_per_second(sampler: &mut Sampler, times_us: &[u64]) -> Vec<u64> {
        let mut per_second = Vec::new();
        for &time_us in times_us {
            if !sampler.admit(time_us) {
                continue;
            }
            let second = usize::try_from(time_us / 1_000_000).unwrap();
            if per_second.len() <= second {
                per_second.resize(second + 1, 0);
            }
            per_second[second] += 1;
        }
        per_second
    }

    #[test]
    fn dense_stream_gives_rate_per_second() {
        // 1,000 comments a second for 5 seconds, one every millisecond.
        let times: Vec<u64> = (0..5_000).map(|i| i * 1_000).collect();
        let counts = admitted_per_second(&mut Sampler::new(rate(10)), &times);
        assert_eq!(counts, [10, 10, 10, 10, 10]);
    }

    #[test]
    fn delivered_comments_are_one_slot_apart() {
        let times: Vec<u64> = (0..20_000).map(|i| i * 50).collect();
        let mut sampler = Sampler::new(rate(7));
        let admitted: Vec<u64> = times.into_iter().filter(|&t| sampler.admit(t)).collect();
        for pair in admitted.windows(2) {
            let slots = [pair[0], pair[1]].map(|t| u128::from(t) * 7 / 1_000_000);
            assert!(slots[1] > slots[0], "two comments in one slot: {pair:?}");
        }
    }

    #[test]
    fn sliding_second_holds_at_most_rate_plus_one() {
        let times: Vec<u64> = (0..30_000).map(|i| i * 97).collect();
        let mut sampler = Sampler::new(rate(13));
        let admitted: Vec<u64> = times.into_iter().filter(|&t| sampler.admit(t)).collect();
        for (i, &start) in admitted.iter().enumerate() {
            let in_window = admitted[i..]
                .iter()
                .take_while(|&&t| t < start + 1_000_000)
                .count();
            assert!(in_window <= 14, "{in_window} comments from {start} µs");
        }
    }

    #[test]
    fn rate_just_above_cap_is_delivered_in_full() {
        // Comments 99 ms apart, about 10.1 a second, under a cap of 10: a token bucket of
        // capacity 1 would deliver every second comment, 5 a second.
        let times: Vec<u64> = (0..101).map(|i| i * 99_000).collect();
        let mut sampler = Sampler::new(rate(10));
        let delivered = times.iter().filter(|&&t| sampler.admit(t)).count();
        assert!(
            delivered >= 99,
            "{delivered} of 101 comments delivered in 10 s"
        );
    }

    #[test]
    fn sparse_stream_is_delivered_whole() {
        let times: Vec<u64> = (0..50).map(|i| i * 300_000).collect();
        let mut sampler = Sampler::new(rate(5));
        assert!(times.iter().all(|&t| sampler.admit(t)));
    }

    #[test]
    fn backwards_time_delivers_nothing_extra() {
        let mut sampler = Sampler::new(rate(2));
        assert!(sampler.admit(1_000_000));
        assert!(!sampler.admit(400_000));
        assert!(!sampler.admit(1_200_000));
        assert!(sampler.admit(1_500_000));
    }

    #[test]
    fn lower_rate_keeps_last_slot_taken() {
        let mut sampler = Sampler::new(rate(10));
        assert!(sampler.admit(1_050_000));
        sampler.set_rate(rate(2));
        // The old slot ended at 1.1 s, inside the new slot from 1.0 s to 1.5 s.
        assert!(!sampler.admit(1_300_000));
        assert!(sampler.admit(1_500_000));
    }

    #[test]
    fn higher_rate_starts_after_last_slot() {
        let mut sampler = Sampler::new(rate(1));
        assert!(sampler.admit(2_100_000));
        sampler.set_rate(rate(100));
        assert!(!sampler.admit(2_990_000));
        assert!(sampler.admit(3_000_000));
    }

    #[test]
    fn highest_rate_does_not_overflow() {
        let mut sampler = Sampler::new(rate(u32::MAX));
        assert!(sampler.admit(u64::MAX - 1));
        assert!(sampler.admit(u64::MAX));
        sampler.set_rate(rate(1));
        assert!(!sampler.admit(u64::MAX));
    }

    fn entry(offset: u64, time_us: u64, entry_flags: u8) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, offset, time_us, entry_flags, "user", b"comment");
        buf.to_vec()
    }

    #[test]
    fn flagged_entries_are_kept_outside_the_rate() {
        let mut cap = CapState::new(rate(1), Instant::now());
        assert!(cap.keep(&entry(0, 100, 0)));
        assert!(cap.keep(&entry(1, 200, flags::PRIORITY)));
        assert!(cap.keep(&entry(2, 300, flags::TOMBSTONE)));
        assert!(cap.keep(&entry(3, 400, flags::DELETED)));
        assert!(!cap.keep(&entry(4, 500, 0)));
        assert_eq!(cap.unreported, 1);
        assert_eq!(cap.through, 5);
    }

    fn topic() -> Topic {
        Topic::new("live/final").unwrap()
    }

    /// Builds an EVENTS frame of comments at `offsets`, one every millisecond of broker time,
    /// with PRIORITY on the offsets divisible by 10.
    fn frame(offsets: std::ops::Range<u64>) -> Bytes {
        let mut builder = EventsFrameBuilder::new(&topic(), 9, 1024);
        for offset in offsets {
            let entry_flags = if offset % 10 == 0 { flags::PRIORITY } else { 0 };
            builder.push(offset, offset * 1_000, entry_flags, "user", b"comment");
        }
        builder.finish()
    }

    fn decoded(frame: &Bytes) -> Vec<Event> {
        match decode_frame(frame.clone()).expect("sampled frame decodes") {
            Frame::Events(events) => events.iter().collect(),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }

    #[test]
    fn sampled_frame_holds_kept_entries() {
        let cap = CapState::new(rate(100), Instant::now());
        let sampled = cap.sample_frame(&topic(), &frame(0..40));
        let events = decoded(sampled.frame.as_ref().expect("some entries kept"));
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        // Slots are 10 ms wide. Each keeps its PRIORITY entry and, outside the rate, the
        // first comment without the flag.
        assert_eq!(offsets, [0, 1, 10, 11, 20, 21, 30, 31]);
        assert_eq!(sampled.kept, 8);
        assert_eq!(sampled.skipped, 32);
        assert_eq!(sampled.through, Some(40));
    }

    #[test]
    fn sampled_frame_keeps_topic_and_stream() {
        let cap = CapState::new(rate(100), Instant::now());
        let sampled = cap.sample_frame(&topic(), &frame(0..5));
        let frame = sampled.frame.expect("some entries kept");
        let Frame::Events(events) = decode_frame(frame).unwrap() else {
            panic!("expected EVENTS");
        };
        assert_eq!(events.topic(), &topic());
        assert_eq!(events.stream(), 9);
    }

    #[test]
    fn sampling_leaves_state_until_applied() {
        let mut cap = CapState::new(rate(100), Instant::now());
        let sampled = cap.sample_frame(&topic(), &frame(1..10));
        assert_eq!(cap.unreported, 0);
        cap.apply(&sampled);
        assert_eq!(cap.unreported, 8);
        let again = cap.sample_frame(&topic(), &frame(11..20));
        assert_eq!(again.kept, 1, "the slot from 10 ms to 20 ms is still free");
    }

    #[test]
    fn frame_with_nothing_kept_has_no_frame() {
        let mut cap = CapState::new(rate(1), Instant::now());
        cap.apply(&cap.sample_frame(&topic(), &frame(1..2)));
        let sampled = cap.sample_frame(&topic(), &frame(2..9));
        assert!(sampled.frame.is_none());
        assert_eq!(sampled.skipped, 7);
    }

    #[test]
    fn notices_add_up_to_skipped_comments() {
        let mut cap = CapState::new(rate(50), Instant::now());
        let mut skipped = 0;
        let mut reported = 0;
        for start in (1..1_000).step_by(50) {
            let sampled = cap.sample_frame(&topic(), &frame(start..start + 50));
            skipped += sampled.skipped;
            cap.apply(&sampled);
            if let Some(notice) = cap.take_notice(&topic(), Instant::now()) {
                assert_eq!(notice.through, start + 50);
                reported += notice.count;
            }
        }
        assert!(skipped > 0);
        assert_eq!(reported, skipped);
    }

    #[test]
    fn notice_waits_for_interval() {
        let start = Instant::now();
        let mut cap = CapState::new(rate(1), start);
        cap.unreported = 3;
        let interval = Duration::from_millis(1000);
        assert!(!cap.notice_due(start + Duration::from_millis(999), interval));
        assert!(cap.notice_due(start + Duration::from_millis(1000), interval));
    }

    #[test]
    fn notice_without_skipped_comments_is_none() {
        let mut cap = CapState::new(rate(1), Instant::now());
        assert!(cap.take_notice(&topic(), Instant::now()).is_none());
    }
}
