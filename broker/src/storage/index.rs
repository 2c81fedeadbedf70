//! In-memory sparse indexes of a segment: by offset and by broker time.
//!
//! Both map a key to the file position of a record at or before the wanted one, so that a read
//! scans at most about one index interval of records. Their on-disk form is in `index_file`.

use super::segment::SEGMENT_HEADER_LEN;

/// In-memory sparse index of one segment: the file position of one record every
/// `interval` bytes, so a read from the middle of a segment scans at most about that much.
///
/// Entries hold the offset relative to the segment base and the position as `u32` each. A record
/// whose values do not fit is not indexed, which only makes reads near it scan further.
#[derive(Debug)]
pub(super) struct SparseIndex {
    base_offset: u64,
    interval: u64,
    entries: Vec<(u32, u32)>,
    last_position: Option<u64>,
}

impl SparseIndex {
    /// Creates an empty index for a segment starting at `base_offset`.
    pub(super) fn new(base_offset: u64, interval: u32) -> SparseIndex {
        SparseIndex {
            base_offset,
            interval: u64::from(interval),
            entries: Vec::new(),
            last_position: None,
        }
    }

    /// Records that the record for `offset` starts at `position`. Records are observed in order.
    pub(super) fn observe(&mut self, offset: u64, position: u64) {
        let due = match self.last_position {
            None => true,
            Some(last) => position >= last.saturating_add(self.interval),
        };
        if !due {
            return;
        }
        let relative = u32::try_from(offset - self.base_offset);
        let position32 = u32::try_from(position);
        if let (Ok(relative), Ok(position32)) = (relative, position32) {
            self.entries.push((relative, position32));
            self.last_position = Some(position);
        }
    }

    /// Returns the position of the last indexed record at or before `offset`, or of the first
    /// record when none is indexed.
    pub(super) fn lookup(&self, offset: u64) -> u64 {
        let relative = offset.saturating_sub(self.base_offset);
        let after = self
            .entries
            .partition_point(|&(entry, _)| u64::from(entry) <= relative);
        match after.checked_sub(1) {
            Some(i) => u64::from(self.entries[i].1),
            None => SEGMENT_HEADER_LEN as u64,
        }
    }

    /// Returns the number of index entries.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Builds the index of a closed segment from entries read from its index file.
    pub(super) fn from_entries(base_offset: u64, entries: Vec<(u32, u32)>) -> SparseIndex {
        let last_position = entries.last().map(|&(_, position)| u64::from(position));
        SparseIndex {
            base_offset,
            interval: 0,
            entries,
            last_position,
        }
    }

    /// Returns the entries: offset relative to the segment base and file position.
    pub(super) fn entries(&self) -> &[(u32, u32)] {
        &self.entries
    }
}

/// One entry of a [`TimeIndex`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TimeEntry {
    /// Largest broker time of the records up to and including the indexed one, in microseconds.
    pub(super) max_time_us: u64,
    /// Offset of the indexed record relative to the segment base.
    pub(super) relative_offset: u32,
    /// File position of the indexed record.
    pub(super) position: u32,
}

/// In-memory sparse time index of one segment: for one record every `interval` bytes, the
/// largest broker time seen up to that record, with the record's offset and position.
///
/// Storing the running maximum rather than the record's own time keeps the entries sorted even
/// if broker times ever go backwards. It also keeps lookups exact, because every record at or
/// before an entry whose running maximum is below a time T is older than T.
#[derive(Debug)]
pub(super) struct TimeIndex {
    base_offset: u64,
    interval: u64,
    entries: Vec<TimeEntry>,
    /// Broker time of the first record, or `None` while the segment is empty or, for a closed
    /// segment loaded from its index file, when the file has no entries.
    first_time_us: Option<u64>,
    /// Largest broker time of any record observed, or `None` while none is.
    max_time_us: Option<u64>,
    last_position: Option<u64>,
}

impl TimeIndex {
    /// Creates an empty time index for a segment starting at `base_offset`.
    pub(super) fn new(base_offset: u64, interval: u32) -> TimeIndex {
        TimeIndex {
            base_offset,
            interval: u64::from(interval),
            entries: Vec::new(),
            first_time_us: None,
            max_time_us: None,
            last_position: None,
        }
    }

    /// Builds the time index of a closed segment from its index file.
    pub(super) fn from_entries(
        base_offset: u64,
        max_time_us: Option<u64>,
        entries: Vec<TimeEntry>,
    ) -> TimeIndex {
        TimeIndex {
            base_offset,
            interval: 0,
            first_time_us: entries.first().map(|e| e.max_time_us),
            max_time_us,
            last_position: entries.last().map(|e| u64::from(e.position)),
            entries,
        }
    }

    /// Records that the record for `offset`, stored at `position`, has broker time `time_us`.
    /// Records are observed in order.
    pub(super) fn observe(&mut self, time_us: u64, offset: u64, position: u64) {
        let running = self.max_time_us.map_or(time_us, |max| max.max(time_us));
        self.max_time_us = Some(running);
        self.first_time_us.get_or_insert(time_us);

        let due = match self.last_position {
            None => true,
            Some(last) => position >= last.saturating_add(self.interval),
        };
        if !due {
            return;
        }
        let relative = u32::try_from(offset - self.base_offset);
        let position32 = u32::try_from(position);
        if let (Ok(relative_offset), Ok(position)) = (relative, position32) {
            self.entries.push(TimeEntry {
                max_time_us: running,
                relative_offset,
                position,
            });
            self.last_position = Some(u64::from(position));
        }
    }

    /// Returns the offset and position of a record at or before the first record whose broker
    /// time is `time_us` or later: the last indexed record whose running maximum is below
    /// `time_us`, or the first record when there is none.
    pub(super) fn lookup(&self, time_us: u64) -> (u64, u64) {
        let after = self.entries.partition_point(|e| e.max_time_us < time_us);
        match after.checked_sub(1) {
            Some(i) => {
                let entry = &self.entries[i];
                let offset = self.base_offset + u64::from(entry.relative_offset);
                (offset, u64::from(entry.position))
            }
            None => (self.base_offset, SEGMENT_HEADER_LEN as u64),
        }
    }

    /// Returns the largest broker time of the segment's records, or `None` when it has none.
    pub(super) fn max_time_us(&self) -> Option<u64> {
        self.max_time_us
    }

    /// Returns the broker time of the segment's first record, when known.
    pub(super) fn first_time_us(&self) -> Option<u64> {
        self.first_time_us
    }

    /// Returns the entries in record order.
    pub(super) fn entries(&self) -> &[TimeEntry] {
        &self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_index_keeps_one_entry_per_interval() {
        let mut index = SparseIndex::new(100, 50);
        for i in 0..10u64 {
            index.observe(100 + i, 16 + 20 * i);
        }
        // Records sit every 20 bytes from 16; each of 76, 136 and 196 is the first position at
        // least 50 bytes after the previous indexed one.
        assert_eq!(index.len(), 4);
        assert_eq!(index.lookup(100), 16);
        assert_eq!(index.lookup(102), 16);
        assert_eq!(index.lookup(103), 76);
        assert_eq!(index.lookup(108), 136);
        assert_eq!(index.lookup(109), 196);
    }

    #[test]
    fn sparse_index_with_zero_interval_indexes_every_record() {
        let mut index = SparseIndex::new(0, 0);
        for i in 0..5u64 {
            index.observe(i, 16 + 30 * i);
        }
        assert_eq!(index.len(), 5);
        assert_eq!(index.lookup(3), 106);
    }

    #[test]
    fn empty_sparse_index_points_at_first_record() {
        let index = SparseIndex::new(5, 4096);
        assert_eq!(index.lookup(9), SEGMENT_HEADER_LEN as u64);
    }

    #[test]
    fn time_index_keeps_running_maximum() {
        let mut index = TimeIndex::new(10, 0);
        for (i, time) in [100u64, 300, 200, 400].into_iter().enumerate() {
            index.observe(time, 10 + i as u64, 16 + 40 * i as u64);
        }
        let maxima: Vec<u64> = index.entries().iter().map(|e| e.max_time_us).collect();
        assert_eq!(maxima, vec![100, 300, 300, 400]);
        assert_eq!(index.max_time_us(), Some(400));
        assert_eq!(index.first_time_us(), Some(100));
    }

    #[test]
    fn time_lookup_points_before_first_newer_record() {
        let mut index = TimeIndex::new(0, 0);
        for i in 0..5u64 {
            index.observe(1_000 * (i + 1), i, 16 + 30 * i);
        }
        // Times are 1000, 2000, ..., 5000 at positions 16, 46, 76, 106, 136.
        assert_eq!(index.lookup(0), (0, 16));
        assert_eq!(index.lookup(1_000), (0, 16));
        assert_eq!(index.lookup(2_500), (1, 46));
        assert_eq!(index.lookup(5_000), (3, 106));
        assert_eq!(index.lookup(9_000), (4, 136));
    }

    #[test]
    fn sparse_time_index_skips_records_within_interval() {
        let mut index = TimeIndex::new(0, 100);
        for i in 0..10u64 {
            index.observe(i, i, 16 + 30 * i);
        }
        // Positions 16, 136 and 256 are each at least 100 bytes after the previous entry.
        assert_eq!(index.entries().len(), 3);
        assert_eq!(index.max_time_us(), Some(9));
    }
}
