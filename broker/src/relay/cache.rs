//! The edge cache of a relay topic: the most recent upstream EVENTS frames, so that resumes,
//! catch-up and "last N" requests are served at the relay.
//!
//! Frames are cached as they arrived, except that a tombstone passing through replaces the
//! cached frame holding the deleted comment by one in which that entry has the `DELETED` flag
//! and an empty payload.

use std::collections::VecDeque;

use bytes::Bytes;
use chorus_protocol::event::{flags, measure_entry, EventsFrameBuilder, ENTRY_FIXED_LEN};
use chorus_protocol::{Topic, HEADER_LEN};

use crate::topics::{Batch, Position};

/// Cached batches of one topic, oldest first, bounded in comments and bytes.
#[derive(Debug)]
pub(crate) struct EdgeCache {
    batches: VecDeque<Cached>,
    /// Stream id of every cached batch; 0 while the topic has no stream upstream.
    stream: u64,
    /// Offset of the next comment expected from upstream.
    end: u64,
    /// The upstream's end offset from its last SUBSCRIBED. It can be ahead of `end` while the
    /// backlog that SUBSCRIBED announced is still arriving.
    announced_end: u64,
    comments: u64,
    bytes: usize,
    max_comments: u64,
    max_bytes: usize,
}

#[derive(Debug)]
struct Cached {
    batch: Batch,
    comments: u64,
}

/// Comments read from the cache for one subscriber: a whole cached frame, or the tail of one
/// encoded again.
#[derive(Debug)]
pub(crate) struct CacheRead {
    pub(crate) frame: Bytes,
    /// Offset after the last comment in `frame`.
    pub(crate) end: u64,
    pub(crate) comments: u64,
}

impl EdgeCache {
    pub(crate) fn new(max_comments: u64, max_bytes: usize) -> EdgeCache {
        EdgeCache {
            batches: VecDeque::new(),
            stream: 0,
            end: 0,
            announced_end: 0,
            comments: 0,
            bytes: 0,
            max_comments,
            max_bytes,
        }
    }

    /// Empties the cache and starts over on `stream`, expecting the comment at `start` next
    /// from upstream, which announced `announced_end` as its end.
    pub(crate) fn reset(&mut self, stream: u64, start: u64, announced_end: u64) {
        self.batches.clear();
        self.comments = 0;
        self.bytes = 0;
        self.stream = stream;
        self.end = start;
        self.announced_end = announced_end;
    }

    /// Records the stream id that the upstream's first comments of a new topic carry, for a
    /// cache that was started before the topic existed.
    pub(crate) fn adopt_stream(&mut self, stream: u64) {
        debug_assert_eq!(self.stream, 0, "adopt_stream on a cache that has a stream");
        self.stream = stream;
    }

    /// Raises the announced end after a SUBSCRIBED on the same stream.
    pub(crate) fn announce_end(&mut self, end: u64) {
        self.announced_end = self.announced_end.max(end);
    }

    pub(crate) fn stream(&self) -> u64 {
        self.stream
    }

    /// Returns the offset of the next comment expected from upstream.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Returns the offset of the oldest cached comment, or the end when nothing is cached.
    pub(crate) fn earliest(&self) -> u64 {
        self.batches.front().map_or(self.end, |c| c.batch.first)
    }

    /// Returns where a new subscription at this relay stands: the end is the larger of what
    /// arrived and what the upstream announced.
    pub(crate) fn position(&self) -> Position {
        Position {
            stream: self.stream,
            earliest: self.earliest(),
            end: self.end.max(self.announced_end),
        }
    }

    pub(crate) fn comments(&self) -> u64 {
        self.comments
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Returns when the newest cached batch arrived and the broker time of its newest comment,
    /// or `None` when nothing is cached.
    pub(crate) fn last_arrival(&self) -> Option<(std::time::Instant, u64)> {
        let newest = self.batches.back()?;
        let time_us = entries(&newest.batch.frame)
            .map(|(_, entry)| entry_time(entry))
            .max()?;
        Some((newest.batch.appended, time_us))
    }

    /// Appends a batch that starts at or after the end, then evicts the oldest batches until
    /// the limits hold again. The newest batch always stays, even when it alone passes a
    /// limit, so the cache can serve what it just received.
    pub(crate) fn push(&mut self, batch: Batch, comments: u64) {
        debug_assert!(batch.first >= self.end, "batch overlaps the cache");
        self.end = batch.end;
        self.comments += comments;
        self.bytes += batch.frame.len();
        self.batches.push_back(Cached { batch, comments });
        while self.batches.len() > 1
            && (self.comments > self.max_comments || self.bytes > self.max_bytes)
        {
            let Some(old) = self.batches.pop_front() else {
                break;
            };
            self.comments -= old.comments;
            self.bytes -= old.batch.frame.len();
        }
    }

    /// Returns the comments from offset `next` on that the first cached batch holding any of
    /// them has, or `None` when nothing at or after `next` is cached.
    ///
    /// A batch that starts at `next`, or after it, is returned as it is. When `next` falls
    /// inside a batch, the entries from `next` on are encoded again into a new frame.
    pub(crate) fn read_from(&self, topic: &Topic, next: u64) -> Option<CacheRead> {
        // Batches are in offset order, so the first one that ends after `next` holds it.
        let index = self.batches.partition_point(|c| c.batch.end <= next);
        let cached = self.batches.get(index)?;
        let batch = &cached.batch;
        if batch.first >= next {
            return Some(CacheRead {
                frame: batch.frame.clone(),
                end: batch.end,
                comments: cached.comments,
            });
        }
        let (frame, comments) = tail_frame(topic, batch.stream, &batch.frame, next);
        Some(CacheRead {
            frame,
            end: batch.end,
            comments,
        })
    }

    /// Replaces the cached frame that contains the comment at `target` by one in which that entry
    /// has the `DELETED` flag and an empty payload. Returns false, and changes nothing, when
    /// the comment is not cached, is a tombstone, or is already marked deleted.
    ///
    /// Workers that hold the old frame keep it: only reads from the cache see the change.
    pub(crate) fn apply_tombstone(&mut self, topic: &Topic, target: u64) -> bool {
        let index = self.batches.partition_point(|c| c.batch.end <= target);
        let Some(cached) = self.batches.get_mut(index) else {
            return false;
        };
        let batch = &mut cached.batch;
        if batch.first > target {
            return false;
        }
        let Some(frame) = delete_entry(topic, batch.stream, &batch.frame, target) else {
            return false;
        };
        self.bytes = self.bytes - batch.frame.len() + frame.len();
        batch.frame = frame;
        // The shared compressed copy still contains the deleted text, so this batch drops it.
        batch.compressed = Default::default();
        true
    }

    /// Returns the offset of the first cached comment whose broker time is at or after
    /// `time_us`. When none is, returns the end, or the first offset not cached yet while the
    /// announced backlog is still arriving (its comments may be that recent).
    pub(crate) fn offset_for_time(&self, time_us: u64) -> u64 {
        for cached in &self.batches {
            for (offset, entry) in entries(&cached.batch.frame) {
                if entry_time(entry) >= time_us {
                    return offset;
                }
            }
        }
        self.end
    }
}

/// Returns the first offset, the last offset and the number of comments of a valid EVENTS
/// frame, or `None` when it has no comment.
pub(crate) fn frame_span(frame: &Bytes) -> Option<(u64, u64, u64)> {
    let mut span: Option<(u64, u64, u64)> = None;
    for (offset, _) in entries(frame) {
        span = Some(match span {
            None => (offset, offset, 1),
            Some((first, _, count)) => (first, offset, count + 1),
        });
    }
    span
}

/// Encodes a new EVENTS frame with the entries of `frame` from offset `from` on, and returns it
/// with its number of comments.
pub(crate) fn tail_frame(topic: &Topic, stream: u64, frame: &Bytes, from: u64) -> (Bytes, u64) {
    let mut builder = EventsFrameBuilder::new(topic, stream, frame.len());
    for (_, entry) in entries(frame).filter(|(offset, _)| *offset >= from) {
        // The entries come from a frame validated when it arrived, in increasing offset order,
        // which is all that `push_encoded` checks.
        if let Err(e) = builder.push_encoded(entry) {
            tracing::error!(%topic, error = %e, "invalid entry in a cached frame; skipped");
        }
    }
    let comments = u64::from(builder.count());
    (builder.finish(), comments)
}

/// Returns the offsets that the tombstones of a valid EVENTS frame delete, in frame order.
pub(crate) fn tombstone_targets(frame: &Bytes) -> Vec<u64> {
    entries(frame)
        .filter(|(_, entry)| entry_flags(entry) & flags::TOMBSTONE != 0)
        .filter_map(|(_, entry)| tombstone_target(entry))
        .collect()
}

/// Reads the deleted offset from a tombstone entry, whose payload is exactly that u64.
fn tombstone_target(entry: &[u8]) -> Option<u64> {
    let len_at = ENTRY_FIXED_LEN + usize::from(entry[ENTRY_FIXED_LEN - 1]);
    let payload = entry.get(len_at + 4..)?;
    (payload.len() == 8).then(|| read_u64(payload))
}

/// Encodes `frame` again with the entry at `target` marked `DELETED` and its payload removed,
/// keeping its offset, time, other flags and publisher. Returns `None` when the frame has no
/// such entry, or the entry is a tombstone or already deleted.
fn delete_entry(topic: &Topic, stream: u64, frame: &Bytes, target: u64) -> Option<Bytes> {
    let (_, entry) = entries(frame).find(|(offset, _)| *offset == target)?;
    if entry_flags(entry) & (flags::TOMBSTONE | flags::DELETED) != 0 {
        return None;
    }
    let mut builder = EventsFrameBuilder::new(topic, stream, frame.len());
    for (offset, entry) in entries(frame) {
        let pushed = if offset == target {
            builder.push_encoded(&deleted_entry(entry))
        } else {
            builder.push_encoded(entry)
        };
        // The entries come from a frame validated when it arrived, in increasing offset order,
        // which is all that `push_encoded` checks.
        if let Err(e) = pushed {
            tracing::error!(%topic, offset, error = %e, "invalid entry in a cached frame; skipped");
        }
    }
    Some(builder.finish())
}

/// Returns a copy of an encoded entry with the `DELETED` flag set and an empty payload.
fn deleted_entry(entry: &[u8]) -> Vec<u8> {
    let publisher_len = usize::from(entry[ENTRY_FIXED_LEN - 1]);
    let mut deleted = entry[..ENTRY_FIXED_LEN + publisher_len].to_vec();
    deleted[ENTRY_FLAGS_AT] |= flags::DELETED;
    deleted.extend_from_slice(&0u32.to_be_bytes());
    deleted
}

/// Position of the flags byte in an encoded entry, after the offset and the broker time.
const ENTRY_FLAGS_AT: usize = 16;

fn entry_flags(entry: &[u8]) -> u8 {
    entry.get(ENTRY_FLAGS_AT).copied().unwrap_or(0)
}

fn read_u64(bytes: &[u8]) -> u64 {
    let mut value = [0u8; 8];
    value.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(value)
}

/// Iterates over the encoded entries of a valid EVENTS frame, with their offsets.
fn entries(frame: &Bytes) -> impl Iterator<Item = (u64, &[u8])> {
    // Header, topic (length byte and name), stream id and count come before the entries.
    let topic_len = frame.get(HEADER_LEN).map_or(0, |len| usize::from(*len));
    let start = (HEADER_LEN + 1 + topic_len + 8 + 4).min(frame.len());
    let mut rest = &frame[start..];
    std::iter::from_fn(move || {
        let (offset, len) = measure_entry(rest).ok()?;
        let (entry, tail) = rest.split_at(len);
        rest = tail;
        Some((offset, entry))
    })
}

/// Reads the broker time of an encoded entry: the u64 after its offset.
fn entry_time(entry: &[u8]) -> u64 {
    entry.get(8..ENTRY_FLAGS_AT).map_or(0, read_u64)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use chorus_protocol::{decode_frame, Event, Events, Frame};

    use super::*;

    const STREAM: u64 = 7;

    fn topic() -> Topic {
        Topic::new("live/final").unwrap()
    }

    /// Builds the batch of comments `first..end`, with broker time `offset * 1000`.
    fn batch(first: u64, end: u64) -> Batch {
        let events: Vec<Event> = (first..end)
            .map(|offset| Event {
                offset,
                time_us: offset * 1000,
                flags: 0,
                publisher: String::new(),
                payload: Bytes::from(format!("comment {offset}")),
            })
            .collect();
        Batch {
            first,
            end,
            frame: Frame::Events(Events::new(topic(), STREAM, &events)).to_bytes(),
            appended: Instant::now(),
            stream: STREAM,
            compressed: Default::default(),
        }
    }

    fn offsets(frame: &Bytes) -> Vec<u64> {
        match decode_frame(frame.clone()).unwrap() {
            Frame::Events(events) => events.iter().map(|e| e.offset).collect(),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }

    fn filled(max_comments: u64) -> EdgeCache {
        let mut cache = EdgeCache::new(max_comments, usize::MAX);
        cache.reset(STREAM, 0, 30);
        for first in [0, 10, 20] {
            cache.push(batch(first, first + 10), 10);
        }
        cache
    }

    #[test]
    fn oldest_batches_are_evicted_past_comment_limit() {
        let cache = filled(25);
        assert_eq!(cache.earliest(), 10);
        assert_eq!(cache.comments(), 20);
    }

    #[test]
    fn newest_batch_stays_past_byte_limit() {
        let mut cache = EdgeCache::new(1000, 1);
        cache.reset(STREAM, 0, 0);
        cache.push(batch(0, 10), 10);
        cache.push(batch(10, 20), 10);
        assert_eq!(cache.earliest(), 10);
        assert_eq!(cache.end(), 20);
    }

    #[test]
    fn read_at_batch_start_returns_same_bytes() {
        let cache = filled(100);
        let read = cache.read_from(&topic(), 10).unwrap();
        assert_eq!(read.frame, batch(10, 20).frame);
        assert_eq!(read.end, 20);
    }

    #[test]
    fn read_inside_batch_returns_its_tail() {
        let cache = filled(100);
        let read = cache.read_from(&topic(), 14).unwrap();
        assert_eq!(offsets(&read.frame), (14..20).collect::<Vec<u64>>());
        assert_eq!(read.comments, 6);
    }

    #[test]
    fn read_before_cache_starts_at_oldest_batch() {
        let cache = filled(25);
        let read = cache.read_from(&topic(), 3).unwrap();
        assert_eq!(offsets(&read.frame).first(), Some(&10));
    }

    #[test]
    fn read_at_end_returns_nothing() {
        let cache = filled(100);
        assert!(cache.read_from(&topic(), 30).is_none());
    }

    #[test]
    fn position_end_includes_announced_backlog() {
        let mut cache = EdgeCache::new(100, usize::MAX);
        cache.reset(STREAM, 0, 30);
        cache.push(batch(0, 10), 10);
        assert_eq!(cache.position().end, 30);
        assert_eq!(cache.end(), 10);
    }

    #[test]
    fn span_covers_first_to_last_comment() {
        assert_eq!(frame_span(&batch(5, 9).frame), Some((5, 8, 4)));
    }

    #[test]
    fn tail_frame_keeps_entries_from_offset() {
        let (frame, comments) = tail_frame(&topic(), STREAM, &batch(0, 10).frame, 7);
        assert_eq!(offsets(&frame), [7, 8, 9]);
        assert_eq!(comments, 3);
    }

    fn decoded(frame: &Bytes) -> Vec<Event> {
        match decode_frame(frame.clone()).unwrap() {
            Frame::Events(events) => events.iter().collect(),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }

    /// Builds a frame with one tombstone at `offset` that deletes `target`.
    fn tombstone(offset: u64, target: u64) -> Bytes {
        let event = Event {
            offset,
            time_us: offset * 1000,
            flags: flags::TOMBSTONE,
            publisher: "mod".into(),
            payload: Bytes::copy_from_slice(&target.to_be_bytes()),
        };
        Frame::Events(Events::new(topic(), STREAM, &[event])).to_bytes()
    }

    #[test]
    fn tombstone_marks_cached_comment_deleted() {
        let mut cache = filled(100);
        assert!(cache.apply_tombstone(&topic(), 15));
        let events = decoded(&cache.read_from(&topic(), 10).unwrap().frame);
        let deleted = &events[5];
        assert_eq!(deleted.offset, 15);
        assert_eq!(deleted.flags, flags::DELETED);
        assert!(deleted.payload.is_empty());
        assert_eq!(deleted.time_us, 15_000);
    }

    #[test]
    fn tombstone_keeps_other_cached_comments() {
        let mut cache = filled(100);
        cache.apply_tombstone(&topic(), 15);
        let events = decoded(&cache.read_from(&topic(), 10).unwrap().frame);
        let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, (10..20).collect::<Vec<u64>>());
        assert_eq!(events[4].payload, "comment 14");
        assert_eq!(events[4].flags, 0);
    }

    #[test]
    fn tombstone_keeps_byte_count_exact() {
        let mut cache = filled(100);
        cache.apply_tombstone(&topic(), 25);
        let expected: usize = [0, 10, 20]
            .iter()
            .map(|first| cache.read_from(&topic(), *first).unwrap().frame.len())
            .sum();
        assert_eq!(cache.bytes(), expected);
    }

    #[test]
    fn tail_read_after_tombstone_has_no_text() {
        let mut cache = filled(100);
        cache.apply_tombstone(&topic(), 17);
        let events = decoded(&cache.read_from(&topic(), 16).unwrap().frame);
        assert_eq!(events[1].offset, 17);
        assert!(events[1].payload.is_empty());
    }

    #[test]
    fn second_tombstone_changes_nothing() {
        let mut cache = filled(100);
        assert!(cache.apply_tombstone(&topic(), 3));
        assert!(!cache.apply_tombstone(&topic(), 3));
    }

    #[test]
    fn tombstone_for_evicted_comment_changes_nothing() {
        let mut cache = filled(25);
        assert!(!cache.apply_tombstone(&topic(), 3));
        assert!(!cache.apply_tombstone(&topic(), 30));
    }

    #[test]
    fn tombstone_entry_is_never_marked_deleted() {
        let mut cache = filled(100);
        let frame = tombstone(30, 4);
        cache.push(
            Batch {
                first: 30,
                end: 31,
                frame,
                appended: Instant::now(),
                stream: STREAM,
                compressed: Default::default(),
            },
            1,
        );
        assert!(!cache.apply_tombstone(&topic(), 30));
    }

    #[test]
    fn tombstone_targets_are_read_from_frame() {
        assert_eq!(tombstone_targets(&tombstone(40, 12)), [12]);
        assert!(tombstone_targets(&batch(0, 10).frame).is_empty());
    }

    #[test]
    fn time_lookup_finds_first_recent_comment() {
        let cache = filled(100);
        assert_eq!(cache.offset_for_time(12_500), 13);
        assert_eq!(cache.offset_for_time(99_000), 30);
    }
}
