//! The log of one topic: buffered appends, commits, reads and syncs.

use std::fmt;
use std::fs;
use std::io;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use chorus_protocol::event::{encode_entry, entry_len, measure_entry};
use chorus_protocol::topic::Topic;
use chorus_protocol::DecodeError;
use rand::Rng;

use super::config::{FsyncPolicy, LogConfig};
use super::data_dir::TopicClaim;
use super::error::StorageError;
use super::meta::{self, META_FILE, META_TMP_FILE};
use super::recovery::{list_segment_files, open_segments};
use super::segment::{
    entry_time, put_record, record_entry_len, sync_dir, Segment, RECORD_HEADER_LEN,
};

/// Maximum length of a publisher id in an entry. `encode_entry` cuts longer ones.
const MAX_PUBLISHER_LEN: usize = u8::MAX as usize;

/// The append-only log of one topic.
///
/// Appends are buffered in memory until [`TopicLog::commit`] writes them to the active segment.
/// Readers see only committed entries.
pub struct TopicLog {
    pub(super) dir: PathBuf,
    pub(super) config: LogConfig,
    pub(super) stream_id: u64,
    /// Segments in offset order; never empty, and the last one is the active segment.
    pub(super) segments: Vec<Segment>,
    /// Encoded records appended since the last commit.
    pending: BytesMut,
    pending_count: u64,
    pub(super) committed: u64,
    last_sync: Instant,
    /// Whether a segment was created since the topic directory was last synced.
    dir_unsynced: bool,
    /// This topic's share of the segment age, in microseconds, subtracted from
    /// [`LogConfig::segment_ms`] so that topics created together do not roll together.
    roll_jitter_us: u64,
    /// Modification time of the active segment file when the log was opened, in microseconds
    /// since the Unix epoch. Used in place of the newest record's time while the log has none.
    pub(super) opened_mtime_us: u64,
    /// Set when a write or sync failure left the files in a state this value cannot vouch for.
    failed: bool,
    /// Declared last so that it is dropped last: the topic becomes free for another open, and
    /// the data directory lock may be released, only after the files and maps are closed.
    pub(super) claim: TopicClaim,
}

/// Outcome of a [`TopicLog::read`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadSummary {
    /// Number of entries passed to the sink.
    pub count: usize,
    /// Offset after the last delivered entry: where the next read continues.
    pub next_offset: u64,
}

/// Progress of one read across segments.
struct ReadState {
    next: u64,
    count: usize,
    bytes: usize,
    max_count: usize,
    max_bytes: usize,
}

impl TopicLog {
    /// Opens the log in `dir`, creating the topic if needed and recovering its segments.
    pub(super) fn open(
        claim: TopicClaim,
        dir: PathBuf,
        config: &LogConfig,
    ) -> Result<TopicLog, StorageError> {
        create_topic_dir(&dir)?;
        remove_stale_meta_tmp(&dir)?;

        // Without segments the topic has no entries, even if a metadata file survived a crash
        // during creation, so it starts a new stream: offsets restart at 0 under a new id.
        let files = list_segment_files(&dir)?;
        let stream_id = if files.is_empty() {
            create_stream_id(&dir, claim.topic())?
        } else {
            meta::read_stream_id(&dir)?.ok_or_else(|| {
                StorageError::corrupt(
                    &dir.join(META_FILE),
                    0,
                    "metadata file is missing, but segment files exist, so the stream id is lost",
                )
            })?
        };

        let segments = if files.is_empty() {
            // The first segment is synced whatever the policy: creating a topic is rare.
            let cache = claim.file_cache();
            let first = Segment::create(&dir, 0, config, true, cache).map_err(|e| e.error)?;
            vec![first]
        } else {
            open_segments(&dir, &files, config, &claim)?
        };
        let opened_mtime_us = segments
            .last()
            .map_or_else(now_us, |s| modified_us(&s.path));

        let log = TopicLog {
            dir,
            config: config.clone(),
            stream_id,
            committed: segments.last().map_or(0, |s| s.next_offset),
            segments,
            pending: BytesMut::new(),
            pending_count: 0,
            last_sync: Instant::now(),
            dir_unsynced: false,
            roll_jitter_us: roll_jitter_us(config),
            opened_mtime_us,
            failed: false,
            claim,
        };
        tracing::info!(
            topic = %log.topic(),
            stream_id = log.stream_id,
            earliest = log.earliest_offset(),
            next = log.committed,
            segments = log.segments.len(),
            "opened topic log"
        );
        Ok(log)
    }

    /// Returns the topic.
    pub fn topic(&self) -> &Topic {
        self.claim.topic()
    }

    /// Returns the settings the log was opened with.
    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Returns the topic's stream id: random, nonzero, chosen when the topic was created.
    pub fn stream_id(&self) -> u64 {
        self.stream_id
    }

    /// Returns the oldest stored offset.
    pub fn earliest_offset(&self) -> u64 {
        self.segments.first().map_or(0, |s| s.base_offset)
    }

    /// Returns the offset the next appended entry must carry, counting buffered entries.
    pub fn next_offset(&self) -> u64 {
        self.committed + self.pending_count
    }

    /// Returns the offset after the last committed entry; readers see only offsets below it.
    pub fn committed_offset(&self) -> u64 {
        self.committed
    }

    /// Returns the number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Returns the committed bytes of all segment files, headers included.
    pub fn bytes_on_disk(&self) -> u64 {
        self.segments.iter().map(Segment::len).sum()
    }

    /// Returns whether an earlier write or sync failure stopped the log from accepting writes.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// Buffers one encoded entry, which must carry [`TopicLog::next_offset`].
    ///
    /// Appends nothing and returns an error if `entry` is not exactly one well-formed entry or
    /// carries another offset.
    pub fn append(&mut self, entry: &[u8]) -> Result<(), StorageError> {
        self.check_writable()?;
        let (offset, len) = measure_entry(entry).map_err(StorageError::InvalidEntry)?;
        if len != entry.len() {
            return Err(StorageError::InvalidEntry(DecodeError::Malformed(
                "entry has bytes after its payload",
            )));
        }
        if u32::try_from(len).is_err() {
            return Err(StorageError::EntryTooLarge { len });
        }
        if offset != self.next_offset() {
            return Err(StorageError::OffsetMismatch {
                expected: self.next_offset(),
                got: offset,
            });
        }

        put_record(&mut self.pending, entry);
        self.pending_count += 1;
        Ok(())
    }

    /// Encodes a comment with the next offset straight into the buffer and returns that offset.
    ///
    /// Saves the copy that building the entry first and calling [`TopicLog::append`] costs. A
    /// publisher id longer than 255 bytes is cut at a character boundary, as on the wire.
    pub fn append_comment(
        &mut self,
        time_us: u64,
        flags: u8,
        publisher: &str,
        payload: &[u8],
    ) -> Result<u64, StorageError> {
        self.check_writable()?;
        if entry_len(MAX_PUBLISHER_LEN, payload.len()) > u32::MAX as usize {
            let len = entry_len(publisher.len().min(MAX_PUBLISHER_LEN), payload.len());
            return Err(StorageError::EntryTooLarge { len });
        }

        let offset = self.next_offset();
        let start = self.pending.len();
        // Reserve the record header and fill it in once the entry's length and CRC are known.
        self.pending.put_bytes(0, RECORD_HEADER_LEN);
        encode_entry(
            &mut self.pending,
            offset,
            time_us,
            flags,
            publisher,
            payload,
        );
        let entry = &self.pending[start + RECORD_HEADER_LEN..];
        let len = (entry.len() as u32).to_be_bytes();
        let crc = crc32fast::hash(entry).to_be_bytes();
        self.pending[start..start + 4].copy_from_slice(&len);
        self.pending[start + 4..start + 8].copy_from_slice(&crc);

        self.pending_count += 1;
        Ok(offset)
    }

    /// Writes all buffered entries to the log and returns the new committed offset.
    ///
    /// Records go to the active segment with one write per segment they touch. The active
    /// segment is closed, its index files written and a new one started when the next record
    /// would take it past `segment_bytes`. The same happens when that record's broker time is
    /// `segment_ms` (less this topic's jitter) or more after the segment's first record.
    /// Before returning, the commit syncs as the [`FsyncPolicy`] requires; entries become
    /// readable only after that sync.
    ///
    /// On failure the error is [`StorageError::CommitFailed`]: entries below its `committed`
    /// offset are stored, the rest of the buffer is discarded, and [`TopicLog::next_offset`]
    /// equals the committed offset again. A failed sync, or a failed cleanup after a failed
    /// write, leaves bytes of unknown state in a file. The log then also stops accepting writes
    /// until it is reopened (see [`TopicLog::is_failed`]), and entries written before a failed
    /// sync may reappear after a restart.
    pub fn commit(&mut self) -> Result<u64, StorageError> {
        self.check_writable()?;
        if self.pending_count == 0 {
            return Ok(self.committed);
        }

        let records = std::mem::take(&mut self.pending);
        let requested_end = self.next_offset();
        self.pending_count = 0;
        let result = self.write_records(&records);

        // Keep the buffer's capacity for the next batch.
        self.pending = records;
        self.pending.clear();

        match result {
            Ok(()) => Ok(self.committed),
            Err(error) => {
                let discarded = requested_end - self.committed;
                tracing::error!(
                    topic = %self.topic(),
                    committed = self.committed,
                    discarded,
                    failed = self.failed,
                    %error,
                    "commit failed"
                );
                Err(StorageError::CommitFailed {
                    committed: self.committed,
                    discarded,
                    source: Box::new(error),
                })
            }
        }
    }

    /// Calls `sink(offset, entry)` for committed entries from `from` on, in offset order.
    ///
    /// Stops after `max_count` entries, or before the entry that would take the total entry bytes
    /// past `max_bytes`; the first entry is delivered whatever its size. `from` equal to the
    /// committed offset delivers nothing. `from` below the earliest offset or above the committed
    /// offset is [`StorageError::OffsetOutOfRange`]. A record whose CRC does not match stops the
    /// read with [`StorageError::Corrupt`]; the entries before it have been passed to the sink.
    pub fn read(
        &self,
        from: u64,
        max_count: usize,
        max_bytes: usize,
        mut sink: impl FnMut(u64, &[u8]),
    ) -> Result<ReadSummary, StorageError> {
        let earliest = self.earliest_offset();
        if from < earliest || from > self.committed {
            return Err(StorageError::OffsetOutOfRange {
                requested: from,
                earliest,
                end: self.committed,
            });
        }

        let mut state = ReadState {
            next: from,
            count: 0,
            bytes: 0,
            max_count,
            max_bytes,
        };
        let first = self
            .segments
            .partition_point(|s| s.base_offset <= from)
            .saturating_sub(1);
        for segment in &self.segments[first..] {
            if state.next >= self.committed || state.count >= max_count {
                break;
            }
            if segment.next_offset <= state.next {
                continue;
            }
            if read_segment(segment, &mut state, &mut sink)? {
                break;
            }
        }
        Ok(ReadSummary {
            count: state.count,
            next_offset: state.next,
        })
    }

    /// Flushes every written byte and created segment to the disk now, whatever the policy.
    ///
    /// Closed segments that were not flushed when they closed get their index files rewritten,
    /// so that the next start can trust them even after a reboot.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        let active = self.segments.len() - 1;
        let mut rewrote = false;
        for (i, segment) in self.segments.iter_mut().enumerate() {
            if !segment.unsynced {
                continue;
            }
            // A failure to open the file writes nothing, so unlike a failed flush it does not
            // fail the log.
            let file = segment.open_file()?;
            if let Err(error) = segment.sync(&file) {
                self.failed = true;
                return Err(error);
            }
            if i < active {
                rewrote |= write_indexes_or_warn(segment, true);
            }
        }
        if self.dir_unsynced || rewrote {
            if let Err(error) = sync_dir(&self.dir) {
                self.failed = true;
                return Err(error);
            }
            self.dir_unsynced = false;
        }
        self.last_sync = Instant::now();
        Ok(())
    }

    /// Syncs if the policy is [`FsyncPolicy::Interval`], unsynced data exists, and the interval
    /// has passed since the last sync. Returns whether it synced.
    ///
    /// A commit checks the interval only when it runs, so a caller that wants the interval to
    /// hold while no commits arrive calls this from a timer.
    pub fn sync_if_due(&mut self) -> Result<bool, StorageError> {
        let FsyncPolicy::Interval(interval) = self.config.fsync else {
            return Ok(false);
        };
        let unsynced = self.dir_unsynced || self.segments.iter().any(|s| s.unsynced);
        if !unsynced || self.last_sync.elapsed() < interval {
            return Ok(false);
        }
        self.sync()?;
        Ok(true)
    }

    /// Returns when [`TopicLog::sync_if_due`] will next sync: the last sync plus the interval,
    /// while unsynced data exists under [`FsyncPolicy::Interval`], and `None` otherwise.
    pub fn sync_deadline(&self) -> Option<Instant> {
        let FsyncPolicy::Interval(interval) = self.config.fsync else {
            return None;
        };
        let unsynced = self.dir_unsynced || self.segments.iter().any(|s| s.unsynced);
        unsynced.then(|| self.last_sync + interval)
    }

    /// Returns the first committed offset whose entry's broker time is `time_us` or later, or
    /// the committed offset when every entry is older.
    ///
    /// Uses the segments' time indexes and scans at most about one time index interval of
    /// records. A record that fails its CRC check ends the scan early; the result is then an
    /// earlier offset, so a reader starting there receives every newer entry and meets the
    /// damage itself.
    pub fn offset_for_time(&self, time_us: u64) -> u64 {
        let found = self
            .segments
            .iter()
            .find(|s| s.time_index.max_time_us().is_some_and(|max| max >= time_us));
        match found {
            Some(segment) => find_time_in_segment(segment, time_us),
            None => self.committed,
        }
    }

    pub(super) fn check_writable(&self) -> Result<(), StorageError> {
        if self.failed {
            return Err(StorageError::Failed {
                path: self.dir.clone(),
            });
        }
        Ok(())
    }

    fn sync_due(&self) -> bool {
        match self.config.fsync {
            FsyncPolicy::Always => true,
            FsyncPolicy::Interval(interval) => self.last_sync.elapsed() >= interval,
            FsyncPolicy::Never => false,
        }
    }

    pub(super) fn active(&self) -> &Segment {
        // The constructor never builds a log without segments, and retention removes closed
        // segments only.
        self.segments
            .last()
            .expect("a topic log always has an active segment")
    }

    /// Returns whether `record` must go to a new segment rather than to one that is
    /// `segment_len` bytes long and whose first record has broker time `first_time_us`.
    fn closes_before(&self, segment_len: u64, first_time_us: Option<u64>, record: &[u8]) -> bool {
        if segment_len + record_len_at(record) > self.config.segment_bytes {
            return true;
        }
        first_time_us.is_some_and(|first| self.age_due(first, record_time_at(record)))
    }

    /// Returns whether a segment whose first record has broker time `first_time_us` has reached
    /// its maximum age at time `time_us`.
    pub(super) fn age_due(&self, first_time_us: u64, time_us: u64) -> bool {
        match self.config.segment_age_us() {
            // The jitter is at most a tenth of the age, so the subtraction cannot underflow.
            Some(age) => time_us.saturating_sub(first_time_us) >= age - self.roll_jitter_us,
            None => false,
        }
    }

    /// Writes `records`, rolling segments as needed.
    fn write_records(&mut self, records: &[u8]) -> Result<(), StorageError> {
        let sync_now = self.sync_due();
        let mut start = 0;
        while start < records.len() {
            let active = self.active();
            let first_time = active.time_index.first_time_us();
            if !active.is_empty() && self.closes_before(active.len(), first_time, &records[start..])
            {
                self.roll()?;
            }
            let end = self.run_end(records, start);
            self.write_run(&records[start..end], sync_now)?;
            start = end;
        }
        if sync_now {
            self.last_sync = Instant::now();
        }
        Ok(())
    }

    /// Returns the end of the run of records from `start` that fits into the active segment,
    /// which is at least one record.
    fn run_end(&self, records: &[u8], start: usize) -> usize {
        let active = self.active();
        let first_time = active
            .time_index
            .first_time_us()
            .unwrap_or_else(|| record_time_at(&records[start..]));
        let mut size = active.len();
        let mut end = start;
        while end < records.len() {
            let record = &records[end..];
            if end > start && self.closes_before(size, Some(first_time), record) {
                break;
            }
            let len = record_len_at(record);
            size += len;
            end += len as usize;
        }
        end
    }

    /// Writes one run of whole records to the end of the active segment, syncs it if
    /// `sync_now`, then makes it readable.
    fn write_run(&mut self, run: &[u8], sync_now: bool) -> Result<(), StorageError> {
        let Some(segment) = self.segments.last_mut() else {
            unreachable!("a topic log always has an active segment");
        };
        let pos = segment.len();
        // Opens the file again if the file cache closed it; nothing is written yet on failure.
        let file = segment.open_file()?;

        if let Err(error) = file.file().write_all_at(run, pos) {
            // Cut off whatever part of the run reached the file, so that it ends at the committed
            // length again and a later commit starts clean.
            if let Err(cleanup) = file.file().set_len(pos) {
                tracing::error!(
                    path = %segment.path.display(),
                    error = %cleanup,
                    "failed to truncate a segment after a failed write"
                );
                self.failed = true;
            }
            return Err(StorageError::io("write", &segment.path)(error));
        }
        segment.unsynced = true;
        if sync_now {
            if let Err(error) = segment.sync(&file) {
                // After a failed fdatasync the kernel may have dropped the dirty pages, so nothing
                // later in this file can be trusted to reach the disk.
                self.failed = true;
                return Err(error);
            }
        }

        let mut offset = segment.next_offset;
        let mut at = 0;
        while at < run.len() {
            let record = &run[at..];
            segment.observe(offset, record_time_at(record), pos + at as u64);
            at += record_len_at(record) as usize;
            offset += 1;
        }
        segment.publish(&file, pos + run.len() as u64);
        segment.next_offset = offset;
        self.committed = offset;
        Ok(())
    }

    /// Closes the active segment, writes its index files, and starts a new segment at the
    /// committed offset.
    ///
    /// Unless the policy is `never`, the closed segment and its index files are flushed before
    /// the new segment exists, so a segment followed by another is always complete on disk.
    pub(super) fn roll(&mut self) -> Result<(), StorageError> {
        let sync = self.config.fsync != FsyncPolicy::Never;
        let Some(active) = self.segments.last_mut() else {
            unreachable!("a topic log always has an active segment");
        };
        if sync && active.unsynced {
            let file = active.open_file()?;
            if let Err(error) = active.sync(&file) {
                self.failed = true;
                return Err(error);
            }
        }
        write_indexes_or_warn(active, sync);

        let cache = self.claim.file_cache();
        let created = Segment::create(&self.dir, self.committed, &self.config, sync, cache);
        match created {
            Ok(segment) => {
                tracing::debug!(
                    topic = %self.topic(),
                    base_offset = self.committed,
                    "started a new segment"
                );
                if let Some(closed) = self.segments.last_mut() {
                    closed.seal();
                }
                self.segments.push(segment);
                self.dir_unsynced |= !sync;
                Ok(())
            }
            Err(created) => {
                // A leftover file at the committed offset would no longer be the last segment
                // once the active segment grew past it, and recovery would report it as corrupt.
                self.failed |= created.left_file;
                Err(created.error)
            }
        }
    }
}

impl fmt::Debug for TopicLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicLog")
            .field("topic", self.topic())
            .field("stream_id", &self.stream_id)
            .field("earliest", &self.earliest_offset())
            .field("committed", &self.committed)
            .field("pending", &self.pending_count)
            .field("segments", &self.segments.len())
            .field("failed", &self.failed)
            .finish()
    }
}

/// Returns the length of the record at the front of `records`, which this log encoded itself.
fn record_len_at(records: &[u8]) -> u64 {
    (RECORD_HEADER_LEN + record_entry_len(records)) as u64
}

/// Returns the broker time of the record at the front of `records`, which this log encoded
/// itself.
fn record_time_at(records: &[u8]) -> u64 {
    entry_time(&records[RECORD_HEADER_LEN..])
}

/// Writes the index files of a closed segment and returns whether that worked. A failure is
/// logged and otherwise ignored: the next start scans the segment instead.
fn write_indexes_or_warn(segment: &Segment, sync_files: bool) -> bool {
    match segment.write_indexes(sync_files) {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                path = %segment.path.display(),
                %error,
                "failed to write index files; the next start scans this segment"
            );
            false
        }
    }
}

/// Returns the first offset in `segment` whose broker time is `time_us` or later; the segment's
/// newest record is that recent.
fn find_time_in_segment(segment: &Segment, time_us: u64) -> u64 {
    let (lower_bound, start) = segment.time_index.lookup(time_us);
    let mut found = None;
    let scanned = segment.for_each_record(start, |_, offset, entry| {
        if entry_time(entry) >= time_us {
            found = Some(offset);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Err(error) = scanned {
        tracing::warn!(%error, time_us, "failed to scan a segment for a time");
    }
    found.unwrap_or(lower_bound)
}

/// Draws this topic's roll jitter: up to a tenth of the segment age.
fn roll_jitter_us(config: &LogConfig) -> u64 {
    match config.segment_age_us() {
        Some(age) => rand::thread_rng().gen_range(0..=age / 10),
        None => 0,
    }
}

/// Returns the current wall-clock time in microseconds since the Unix epoch.
pub(super) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Returns the modification time of `path` in microseconds since the Unix epoch, or the current
/// time when the file system does not report one.
fn modified_us(path: &Path) -> u64 {
    let modified = fs::metadata(path).and_then(|m| m.modified());
    match modified.map(|t| t.duration_since(UNIX_EPOCH)) {
        Ok(Ok(since_epoch)) => since_epoch.as_micros() as u64,
        _ => now_us(),
    }
}

/// Delivers entries of one segment into `state`. Returns whether a limit stopped the read.
fn read_segment(
    segment: &Segment,
    state: &mut ReadState,
    sink: &mut impl FnMut(u64, &[u8]),
) -> Result<bool, StorageError> {
    let start = segment.index.lookup(state.next);
    let mut limited = false;
    let mut unexpected = None;
    segment.for_each_record(start, |pos, offset, entry| {
        // The index points at or before the requested offset; skip up to it.
        if offset < state.next && state.count == 0 {
            return ControlFlow::Continue(());
        }
        if offset != state.next {
            unexpected = Some((pos, offset));
            return ControlFlow::Break(());
        }
        let over_bytes = state.bytes.saturating_add(entry.len()) > state.max_bytes;
        if state.count >= state.max_count || (state.count > 0 && over_bytes) {
            limited = true;
            return ControlFlow::Break(());
        }
        sink(offset, entry);
        state.count += 1;
        state.bytes += entry.len();
        state.next += 1;
        ControlFlow::Continue(())
    })?;

    if let Some((pos, offset)) = unexpected {
        return Err(StorageError::corrupt(
            &segment.path,
            pos,
            format!("record has offset {offset}, expected {}", state.next),
        ));
    }
    Ok(limited)
}

fn create_topic_dir(dir: &Path) -> Result<(), StorageError> {
    match fs::create_dir(dir) {
        Ok(()) => match dir.parent() {
            Some(parent) => sync_dir(parent),
            None => Ok(()),
        },
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StorageError::io("create directory", dir)(e)),
    }
}

/// Removes a temporary metadata file left by a crash while the topic was being created.
fn remove_stale_meta_tmp(dir: &Path) -> Result<(), StorageError> {
    let tmp = dir.join(META_TMP_FILE);
    match fs::remove_file(&tmp) {
        Ok(()) => {
            tracing::warn!(path = %tmp.display(), "removed a leftover temporary metadata file");
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", &tmp)(e)),
    }
}

fn create_stream_id(dir: &Path, topic: &Topic) -> Result<u64, StorageError> {
    let stream_id = meta::new_stream_id();
    meta::write_stream_id(dir, stream_id)?;
    tracing::info!(%topic, stream_id, "created topic");
    Ok(stream_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::segment::SEGMENT_HEADER_LEN;
    use crate::storage::DataDir;

    fn entry(offset: u64, payload_len: usize) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_entry(&mut buf, offset, 0, 0, "p", &vec![7u8; payload_len]);
        buf
    }

    #[test]
    fn topic_log_can_move_between_threads() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<TopicLog>();
    }

    #[test]
    fn read_from_middle_starts_at_indexed_position() {
        for use_mmap in [true, false] {
            let tmp = tempfile::tempdir().unwrap();
            let data = DataDir::open(tmp.path()).unwrap();
            let config = LogConfig {
                index_interval_bytes: 100,
                use_mmap,
                ..LogConfig::default()
            };
            let topic = Topic::new("t").unwrap();
            let mut log = data.open_topic(&topic, &config).unwrap();
            for offset in 0..300 {
                log.append(&entry(offset, 40)).unwrap();
            }
            log.commit().unwrap();

            let segment = &log.segments[0];
            assert!(segment.index.len() > 10, "{}", segment.index.len());
            assert!(segment.index.lookup(150) > SEGMENT_HEADER_LEN as u64);

            let mut offsets = Vec::new();
            log.read(150, 3, usize::MAX, |offset, _| offsets.push(offset))
                .unwrap();
            assert_eq!(offsets, vec![150, 151, 152]);
        }
    }

    #[test]
    fn record_larger_than_mapping_is_remapped() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let config = LogConfig {
            segment_bytes: 4096,
            ..LogConfig::default()
        };
        let mut log = data.open_topic(&Topic::new("t").unwrap(), &config).unwrap();
        let big = entry(0, 20_000);
        log.append(&big).unwrap();
        log.commit().unwrap();

        let mut got = Vec::new();
        log.read(0, 1, usize::MAX, |_, e| got.extend_from_slice(e))
            .unwrap();
        assert!(log.segments[0].open_file().unwrap().is_mapped());
        assert_eq!(got, big.to_vec());
    }
}
