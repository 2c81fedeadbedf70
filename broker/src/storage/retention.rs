//! Retention of one topic log: closing an aged active segment, deleting the oldest closed
//! segments past the age or size limit, and deleting a whole topic. The broker's background
//! thread in `crate::retention` decides when to call these.
//!
//! Deleting a segment drops its memory map. That is sound because every method here takes the
//! log by `&mut self` or by value, so no reader can hold a slice of the mapping at that moment
//! (see the `mmap` module's contract).

use std::fs;
use std::io;
use std::path::Path;

use super::error::StorageError;
use super::index_file::remove_index_files;
use super::log::TopicLog;
use super::segment::sync_dir;

/// Summary of the segments that [`TopicLog::enforce_retention`] deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionReport {
    /// Number of segment files deleted.
    pub segments: usize,
    /// Bytes of the deleted segment files.
    pub bytes: u64,
    /// The oldest offset still stored after the deletion.
    pub earliest: u64,
}

/// Summary of a topic that [`TopicLog::delete`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeletedTopic {
    /// Stream id of the deleted topic.
    pub stream_id: u64,
    /// Number of segment files it had.
    pub segments: usize,
    /// Bytes of its segment files.
    pub bytes: u64,
    /// Its committed offset: one past the newest entry.
    pub end: u64,
}

/// Name of the directory, beside `topics`, that deleted topic directories are moved to before
/// their files are removed.
pub(super) const TRASH_DIR: &str = "trash";

impl TopicLog {
    /// Returns the broker time of the newest committed entry in microseconds since the Unix
    /// epoch. While the log has no entries, returns the modification time its newest segment
    /// file had when the log was opened.
    pub fn last_write_time_us(&self) -> u64 {
        self.segments
            .iter()
            .filter_map(|s| s.time_index.max_time_us())
            .max()
            .unwrap_or(self.opened_mtime_us)
    }

    /// Closes the active segment if it has entries and either its first entry's broker time
    /// is `segment_ms` (less this topic's jitter) before `now_us`, or its newest entry is past
    /// `retention_ms`. Returns whether it closed it.
    ///
    /// Commits close segments by age only when an entry arrives; this lets a topic that went
    /// quiet close its last segment, so that retention can delete it.
    pub fn roll_if_due(&mut self, now_us: u64) -> Result<bool, StorageError> {
        self.check_writable()?;
        let times = &self.active().time_index;
        let (Some(first), Some(newest)) = (times.first_time_us(), times.max_time_us()) else {
            return Ok(false);
        };
        if !self.age_due(first, now_us) && !self.is_expired(newest, now_us) {
            return Ok(false);
        }
        self.roll()?;
        tracing::debug!(
            topic = %self.topic(),
            base_offset = self.committed,
            "closed an aged segment"
        );
        Ok(true)
    }

    /// Deletes the oldest closed segments whose newest entry is older than `retention_ms` at
    /// `now_us`, then more of the oldest closed segments while the segment files take more
    /// than `retention_bytes`. The active segment is never deleted. Logs and returns what was
    /// deleted, or `None` when nothing was.
    ///
    /// Segments are deleted oldest first, and each removal is flushed to the directory before
    /// the next, so a crash in between leaves a log that starts later but has no gap.
    pub fn enforce_retention(
        &mut self,
        now_us: u64,
    ) -> Result<Option<RetentionReport>, StorageError> {
        let count = self.expired_segments(now_us);
        if count == 0 {
            return Ok(None);
        }
        let mut report = RetentionReport {
            segments: 0,
            bytes: 0,
            earliest: self.earliest_offset(),
        };
        let result = self.delete_oldest(count, &mut report);
        report.earliest = self.earliest_offset();
        if report.segments > 0 {
            tracing::info!(
                topic = %self.topic(),
                segments = report.segments,
                bytes = report.bytes,
                earliest = report.earliest,
                "deleted segments past retention"
            );
        }
        result.map(|()| Some(report))
    }

    /// Deletes the topic: its directory is moved to `<data>/trash` in one rename, flushed, and
    /// then removed with everything in it.
    ///
    /// On failure before the rename, returns the error together with the unchanged log. A
    /// failure after it is logged, and the leftover directory is removed when the data
    /// directory is next opened.
    // The error variant is large because it hands the log back. It is built only when a
    // rename fails, and moving the log costs less than the file operations around it.
    #[allow(clippy::result_large_err)]
    pub fn delete(self) -> Result<DeletedTopic, (StorageError, TopicLog)> {
        let trash = self.claim.trash_dir();
        let target = match self.trash_target(&trash) {
            Ok(target) => target,
            Err(error) => return Err((error, self)),
        };
        if let Err(error) = fs::rename(&self.dir, &target) {
            return Err((StorageError::io("move to trash", &self.dir)(error), self));
        }

        let deleted = DeletedTopic {
            stream_id: self.stream_id,
            segments: self.segment_count(),
            bytes: self.bytes_on_disk(),
            end: self.committed,
        };
        let topic = self.topic().clone();
        let topics_dir = self.dir.parent().map(Path::to_path_buf);
        // Closes the files and maps and releases the topic, so it can be created again.
        drop(self);

        for dir in topics_dir.iter().chain([&trash]) {
            if let Err(error) = sync_dir(dir) {
                tracing::warn!(%topic, %error, "failed to flush the removal of a topic");
            }
        }
        if let Err(error) = fs::remove_dir_all(&target) {
            tracing::warn!(
                %topic,
                path = %target.display(),
                %error,
                "failed to remove a deleted topic's files; they are removed at the next start"
            );
        }
        tracing::info!(
            %topic,
            stream_id = deleted.stream_id,
            segments = deleted.segments,
            bytes = deleted.bytes,
            end = deleted.end,
            "deleted topic"
        );
        Ok(deleted)
    }

    /// Returns the number of oldest closed segments that retention deletes at `now_us`.
    fn expired_segments(&self, now_us: u64) -> usize {
        let closed = &self.segments[..self.segments.len() - 1];
        let mut count = closed
            .iter()
            .take_while(|s| {
                s.time_index
                    .max_time_us()
                    .is_none_or(|newest| self.is_expired(newest, now_us))
            })
            .count();

        let budget = self.config.retention_bytes;
        if budget > 0 {
            let mut total: u64 = self.segments[count..].iter().map(|s| s.len()).sum();
            while count < closed.len() && total > budget {
                total -= closed[count].len();
                count += 1;
            }
        }
        count
    }

    /// Returns whether an entry with broker time `time_us` is past `retention_ms` at `now_us`.
    fn is_expired(&self, time_us: u64, now_us: u64) -> bool {
        let retention_us = self.config.retention_ms.saturating_mul(1000);
        retention_us > 0 && now_us.saturating_sub(time_us) > retention_us
    }

    /// Deletes the `count` oldest segments, which are closed, adding each to `report`.
    fn delete_oldest(
        &mut self,
        count: usize,
        report: &mut RetentionReport,
    ) -> Result<(), StorageError> {
        for _ in 0..count {
            let path = self.segments[0].path.clone();
            fs::remove_file(&path).map_err(StorageError::io("remove", &path))?;
            // The file is gone, so the segment leaves the log even if the flush fails.
            let segment = self.segments.remove(0);
            report.segments += 1;
            report.bytes += segment.len();
            drop(segment);

            sync_dir(&self.dir)?;
            if let Err(error) = remove_index_files(&path) {
                // Recovery removes index files whose segment is gone.
                tracing::warn!(path = %path.display(), %error, "failed to remove index files");
            }
        }
        Ok(())
    }

    /// Creates the trash directory if needed and returns a path in it for this topic.
    fn trash_target(&self, trash: &Path) -> Result<std::path::PathBuf, StorageError> {
        match fs::create_dir(trash) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io("create directory", trash)(e)),
        }
        let name = self
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Stream ids are unique per topic, so one life of a topic never meets another here.
        Ok(trash.join(format!("{name}.{:016x}", self.stream_id)))
    }
}
