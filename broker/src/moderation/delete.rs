//! Deleting comments at the origin: tombstones, the durable set of deleted offsets, purges of a
//! banned user's recent comments, and the rewriting of deleted entries on every log read.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chorus_protocol::event::{flags, take_entry, EventsFrameBuilder};
use chorus_protocol::{DecodeError, ErrorCode, Topic};
use tracing::error;

use crate::storage::{DeletedOffsets, StorageError, TopicLog};
use crate::topics::{TopicInner, TopicState};
use crate::worker::Worker;

/// Entries read from the log under one hold of the topic lock while a purge scans it, so that
/// publishes to the topic wait for a short read at most.
const PURGE_SCAN_CHUNK: usize = 4096;

/// Outcome of a delete that the origin carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deletion {
    /// A tombstone was appended at this offset.
    Tombstone(u64),
    /// The comment had been deleted before, so nothing was appended.
    AlreadyDeleted,
}

impl TopicInner {
    /// Returns the topic's deleted offsets, loading them on first use, or `None` when the topic
    /// has no log.
    pub(crate) fn deleted_offsets(&mut self) -> Result<Option<&mut DeletedOffsets>, StorageError> {
        if self.deleted.is_none() {
            let Some(log) = self.log.as_ref() else {
                return Ok(None);
            };
            self.deleted = Some(log.load_deleted()?);
        }
        Ok(self.deleted.as_mut())
    }

    /// Returns a [`Redactor`] for a log read of the offsets from `from` to `end`.
    pub(crate) fn redactor(&mut self, from: u64, end: u64) -> Result<Redactor, StorageError> {
        let offsets = match self.deleted_offsets()? {
            Some(deleted) if !deleted.is_empty() => deleted.range(from..end).collect(),
            _ => Vec::new(),
        };
        Ok(Redactor { offsets, next: 0 })
    }
}

/// The deleted offsets within one log read, so that each entry read can be checked in order.
#[derive(Debug)]
pub(crate) struct Redactor {
    /// Deleted offsets in the range read, in increasing order.
    offsets: Vec<u64>,
    /// Index of the first of `offsets` not yet passed.
    next: usize,
}

impl Redactor {
    /// Returns whether the comment at `offset` was deleted. Offsets must be asked in increasing
    /// order.
    pub(crate) fn is_deleted(&mut self, offset: u64) -> bool {
        while self.offsets.get(self.next).is_some_and(|&o| o < offset) {
            self.next += 1;
        }
        self.offsets.get(self.next) == Some(&offset)
    }
}

/// Adds a stored entry to `builder`: unchanged, or when `deleted`, with the DELETED flag and an
/// empty payload, keeping its offset, time, other flags and publisher.
pub(crate) fn push_entry(
    builder: &mut EventsFrameBuilder,
    entry: &[u8],
    deleted: bool,
) -> Result<(), DecodeError> {
    if !deleted {
        return builder.push_encoded(entry);
    }
    let event = take_entry(&mut Bytes::copy_from_slice(entry))?;
    builder.push(
        event.offset,
        event.time_us,
        event.flags | flags::DELETED,
        &event.publisher,
        &[],
    );
    Ok(())
}

/// Returns the flags and publisher id of a stored entry, or `None` when it is too short.
fn entry_flags_and_publisher(entry: &[u8]) -> Option<(u8, &[u8])> {
    let flags = *entry.get(16)?;
    let publisher_len = usize::from(*entry.get(17)?);
    let publisher = entry.get(18..18 + publisher_len)?;
    Some((flags, publisher))
}

/// Returns the flags of the committed entry at `offset`.
fn entry_flags(log: &TopicLog, offset: u64) -> Result<Option<u8>, StorageError> {
    let mut found = None;
    log.read(offset, 1, usize::MAX, |_, entry| {
        found = entry_flags_and_publisher(entry).map(|(flags, _)| flags);
    })?;
    Ok(found)
}

/// Returns the current wall-clock time in microseconds since the Unix epoch, the clock of the
/// entries' broker times.
fn wall_now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn storage_failed(topic: &Topic, action: &str, e: impl std::fmt::Display) -> ErrorCode {
    error!(%topic, error = %e, "{action} failed");
    ErrorCode::StorageFailed
}

impl Worker {
    /// Deletes the comment at `offset` of `topic`: records the offset as deleted, appends a
    /// tombstone published by `actor`, and commits it before returning.
    ///
    /// The offset is recorded before the tombstone is appended. So a crash between the two
    /// leaves a comment that reads as deleted without a tombstone, and never a tombstone whose
    /// comment still reads in full.
    pub(crate) fn delete_comment(
        &mut self,
        topic: &Topic,
        offset: u64,
        actor: &str,
    ) -> Result<Deletion, ErrorCode> {
        self.check_owner(topic)?;
        let state = self
            .shared
            .registry
            .get(topic)
            .map_err(|e| storage_failed(topic, "opening the topic to delete a comment", e))?;
        let tombstone = {
            let mut inner = state.inner.lock();
            if inner.failed.is_some() {
                return Err(ErrorCode::StorageFailed);
            }
            check_deletable(&inner, offset)
                .map_err(|e| e.into_code(topic, "reading the comment to delete"))?;
            let deleted = inner
                .deleted_offsets()
                .map_err(|e| storage_failed(topic, "loading the deleted offsets", e))?
                .ok_or(ErrorCode::CommentNotFound)?;
            if deleted.contains(offset) {
                return Ok(Deletion::AlreadyDeleted);
            }
            deleted
                .record(&[offset])
                .map_err(|e| storage_failed(topic, "recording a deleted offset", e))?;
            self.append_tombstones(&state, &mut inner, &[offset], actor)?
        };
        self.commit_tombstones(&state)?;
        Ok(Deletion::Tombstone(tombstone))
    }

    /// Deletes the comments of `user` in `topic` whose broker time is within the last `seconds`,
    /// as [`Worker::delete_comment`] does, and returns how many it deleted. A topic that another
    /// origin owns, or that has no log, has nothing to purge here.
    ///
    /// NOTE: the log scan runs on this worker's thread, so its other connections wait until it
    /// ends. Only `moderation.max_purge_s` bounds how much of the log it reads.
    pub(crate) fn purge_comments(
        &mut self,
        topic: &Topic,
        user: &str,
        seconds: u64,
        actor: &str,
    ) -> Result<usize, ErrorCode> {
        if self.check_owner(topic).is_err() {
            return Ok(0);
        }
        let state = self
            .shared
            .registry
            .get(topic)
            .map_err(|e| storage_failed(topic, "opening the topic to purge", e))?;
        let since_us = wall_now_us().saturating_sub(seconds.saturating_mul(1_000_000));
        let found = scan_user_comments(&state, user, since_us)
            .map_err(|e| storage_failed(topic, "scanning the log for a purge", e))?;
        if found.is_empty() {
            return Ok(0);
        }
        let count = {
            let mut inner = state.inner.lock();
            if inner.failed.is_some() {
                return Err(ErrorCode::StorageFailed);
            }
            let Some(deleted) = inner
                .deleted_offsets()
                .map_err(|e| storage_failed(topic, "loading the deleted offsets", e))?
            else {
                return Ok(0);
            };
            let fresh: Vec<u64> = found
                .into_iter()
                .filter(|&o| !deleted.contains(o))
                .collect();
            deleted
                .record(&fresh)
                .map_err(|e| storage_failed(topic, "recording deleted offsets", e))?;
            if !fresh.is_empty() {
                self.append_tombstones(&state, &mut inner, &fresh, actor)?;
            }
            fresh.len()
        };
        self.commit_tombstones(&state)?;
        Ok(count)
    }

    /// Returns `WRONG_ORIGIN` when the cluster map assigns `topic` to another origin.
    pub(crate) fn check_owner(&self, topic: &Topic) -> Result<(), ErrorCode> {
        let foreign = self
            .shared
            .cluster
            .as_ref()
            .is_some_and(|map| !map.owns(topic));
        if foreign {
            return Err(ErrorCode::WrongOrigin);
        }
        Ok(())
    }

    /// Appends one tombstone per offset, published by `actor`, and returns the offset of the
    /// last one.
    fn append_tombstones(
        &mut self,
        state: &TopicState,
        inner: &mut TopicInner,
        targets: &[u64],
        actor: &str,
    ) -> Result<u64, ErrorCode> {
        let mut last = 0;
        for target in targets {
            last = inner
                .append(
                    &state.name,
                    actor,
                    &target.to_be_bytes(),
                    flags::TOMBSTONE,
                    self.limits.max_batch_bytes,
                    &mut self.scratch,
                )
                .map_err(|e| storage_failed(&state.name, "appending a tombstone", e))?;
        }
        Ok(last)
    }

    /// Commits the topic and hands its batches, with the tombstones, to the subscribers.
    fn commit_tombstones(&mut self, state: &std::sync::Arc<TopicState>) -> Result<(), ErrorCode> {
        if self.commit_topic(state).result.is_err() {
            return Err(ErrorCode::StorageFailed);
        }
        Ok(())
    }
}

/// Reason a comment cannot be deleted.
enum NotDeletable {
    NotFound,
    Storage(StorageError),
}

impl NotDeletable {
    fn into_code(self, topic: &Topic, action: &str) -> ErrorCode {
        match self {
            NotDeletable::NotFound => ErrorCode::CommentNotFound,
            NotDeletable::Storage(e) => storage_failed(topic, action, e),
        }
    }
}

/// Checks that `offset` names a committed comment that the topic keeps and that is not a
/// tombstone.
fn check_deletable(inner: &TopicInner, offset: u64) -> Result<(), NotDeletable> {
    let Some(log) = inner.log.as_ref() else {
        return Err(NotDeletable::NotFound);
    };
    let position = inner.position();
    if offset < position.earliest || offset >= position.end {
        return Err(NotDeletable::NotFound);
    }
    match entry_flags(log, offset).map_err(NotDeletable::Storage)? {
        Some(flags) if flags & flags::TOMBSTONE == 0 => Ok(()),
        _ => Err(NotDeletable::NotFound),
    }
}

/// Returns the offsets of `user`'s comments, not tombstones, whose broker time is `since_us` or
/// later, up to the end the log had when the scan started.
///
/// The log is read in chunks of [`PURGE_SCAN_CHUNK`] entries, taking the topic lock for each.
fn scan_user_comments(
    state: &TopicState,
    user: &str,
    since_us: u64,
) -> Result<Vec<u64>, StorageError> {
    let (mut next, end) = {
        let inner = state.inner.lock();
        let Some(log) = inner.log.as_ref() else {
            return Ok(Vec::new());
        };
        (log.offset_for_time(since_us), log.committed_offset())
    };
    let mut found = Vec::new();
    while next < end {
        let inner = state.inner.lock();
        let Some(log) = inner.log.as_ref() else {
            break;
        };
        // Retention may have deleted segments since the last chunk.
        next = next.max(log.earliest_offset());
        if next >= end {
            break;
        }
        let summary = log.read(next, PURGE_SCAN_CHUNK, usize::MAX, |offset, entry| {
            let Some((entry_flags, publisher)) = entry_flags_and_publisher(entry) else {
                return;
            };
            let is_comment = entry_flags & flags::TOMBSTONE == 0;
            if offset < end && is_comment && publisher == user.as_bytes() {
                found.push(offset);
            }
        })?;
        if summary.count == 0 {
            break;
        }
        next = summary.next_offset;
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use chorus_protocol::event::encode_entry;

    use super::*;

    fn entry(offset: u64, flags: u8, publisher: &str, payload: &[u8]) -> Vec<u8> {
        let mut buf = bytes::BytesMut::new();
        encode_entry(&mut buf, offset, 1000 + offset, flags, publisher, payload);
        buf.to_vec()
    }

    #[test]
    fn entry_header_is_parsed() {
        let bytes = entry(3, flags::PRIORITY, "alice", b"hi");
        let (entry_flags, publisher) = entry_flags_and_publisher(&bytes).unwrap();
        assert_eq!(entry_flags, flags::PRIORITY);
        assert_eq!(publisher, b"alice");
    }

    #[test]
    fn short_entry_has_no_header() {
        assert_eq!(entry_flags_and_publisher(&[0; 17]), None);
    }

    #[test]
    fn redactor_rewrites_deleted_entries_only() {
        let topic = Topic::new("t").unwrap();
        let mut builder = EventsFrameBuilder::new(&topic, 1, 1024);
        let mut redactor = Redactor {
            offsets: vec![1, 3],
            next: 0,
        };
        for offset in 0..4 {
            let bytes = entry(offset, flags::PRIORITY, "bob", b"text");
            let deleted = redactor.is_deleted(offset);
            push_entry(&mut builder, &bytes, deleted).unwrap();
        }
        let frame = builder.finish();
        let decoded = chorus_protocol::Decoder::new(u32::MAX)
            .decode(&mut bytes::BytesMut::from(&frame[..]))
            .unwrap()
            .unwrap();
        let chorus_protocol::Frame::Events(events) = decoded else {
            panic!("expected EVENTS");
        };
        let events: Vec<_> = events.iter().collect();
        assert_eq!(events.len(), 4);
        for event in &events {
            let deleted = event.offset % 2 == 1;
            assert_eq!(
                event.flags & flags::DELETED != 0,
                deleted,
                "{}",
                event.offset
            );
            assert_eq!(event.flags & flags::PRIORITY, flags::PRIORITY);
            assert_eq!(event.publisher, "bob");
            assert_eq!(event.time_us, 1000 + event.offset);
            let payload: &[u8] = if deleted { b"" } else { b"text" };
            assert_eq!(event.payload.as_ref(), payload, "{}", event.offset);
        }
    }
}
