//! Segment files: header, record layout, sparse index and record iteration.

use std::fs::File;
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::BufMut;
use chorus_protocol::event::ENTRY_FIXED_LEN;

use super::config::LogConfig;
use super::error::StorageError;
use super::file_cache::{FileCache, FileHandle};
use super::index::{SparseIndex, TimeIndex};
use super::index_file::{write_index_files, SegmentIndexes};
use super::mmap::SegmentFile;

/// Magic bytes at the start of every segment file.
pub(super) const SEGMENT_MAGIC: &[u8; 6] = b"CHRSEG";

/// Version of the segment file format written by this code.
pub(super) const SEGMENT_VERSION: u16 = 1;

/// Bytes of the segment header: magic, version and base offset.
pub(super) const SEGMENT_HEADER_LEN: usize = 6 + 2 + 8;

/// Bytes of a record header: entry length and CRC-32.
pub(super) const RECORD_HEADER_LEN: usize = 4 + 4;

/// Length of the smallest well-formed entry: no publisher id and an empty payload.
pub(super) const MIN_ENTRY_LEN: usize = ENTRY_FIXED_LEN + 4;

/// Returns the file name of the segment whose first offset is `base_offset`.
pub(super) fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// Returns the base offset named by a segment file name, or `None` for any other name.
pub(super) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Encodes the header of a segment that starts at `base_offset`.
pub(super) fn encode_header(base_offset: u64) -> [u8; SEGMENT_HEADER_LEN] {
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    header[..6].copy_from_slice(SEGMENT_MAGIC);
    header[6..8].copy_from_slice(&SEGMENT_VERSION.to_be_bytes());
    header[8..].copy_from_slice(&base_offset.to_be_bytes());
    header
}

/// Checks a segment header against the base offset from the file name, returning what is wrong.
pub(super) fn check_header(
    header: &[u8; SEGMENT_HEADER_LEN],
    base_offset: u64,
) -> Result<(), String> {
    if &header[..6] != SEGMENT_MAGIC {
        return Err(format!(
            "not a chorus segment file: expected magic {:?}, found {:02x?}",
            "CHRSEG",
            &header[..6]
        ));
    }
    let version = u16::from_be_bytes([header[6], header[7]]);
    if version != SEGMENT_VERSION {
        return Err(format!(
            "segment format version {version} is not supported; this build reads version \
             {SEGMENT_VERSION}"
        ));
    }
    let mut base = [0u8; 8];
    base.copy_from_slice(&header[8..]);
    let header_base = u64::from_be_bytes(base);
    if header_base != base_offset {
        return Err(format!(
            "header names base offset {header_base}, but the file name names {base_offset}"
        ));
    }
    Ok(())
}

/// Appends the record for `entry`: length, CRC-32, entry bytes.
///
/// The caller has checked that the entry is at most `u32::MAX` bytes long.
pub(super) fn put_record(dst: &mut impl BufMut, entry: &[u8]) {
    dst.put_u32(entry.len() as u32);
    dst.put_u32(crc32fast::hash(entry));
    dst.put_slice(entry);
}

/// Reads the entry length from a record header.
pub(super) fn record_entry_len(header: &[u8]) -> usize {
    let mut len = [0u8; 4];
    len.copy_from_slice(&header[..4]);
    u32::from_be_bytes(len) as usize
}

/// Reads the CRC-32 from a record header.
pub(super) fn record_crc(header: &[u8]) -> u32 {
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&header[4..8]);
    u32::from_be_bytes(crc)
}

/// Reads the offset at the front of an entry that is at least 8 bytes long.
pub(super) fn entry_offset(entry: &[u8]) -> u64 {
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&entry[..8]);
    u64::from_be_bytes(offset)
}

/// Reads the broker time from an entry that is at least 16 bytes long.
pub(super) fn entry_time(entry: &[u8]) -> u64 {
    let mut time = [0u8; 8];
    time.copy_from_slice(&entry[8..16]);
    u64::from_be_bytes(time)
}

/// One segment file of a topic log.
///
/// The file is open only while the data directory's file cache keeps it open: each read, write
/// or sync takes it from the cache, which opens it again if it was closed.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) base_offset: u64,
    pub(super) path: PathBuf,
    /// Offset after the last readable record.
    pub(super) next_offset: u64,
    pub(super) index: SparseIndex,
    pub(super) time_index: TimeIndex,
    /// Committed length of the file, header included: readers access only the bytes below it.
    readable: u64,
    /// Bytes to map when the file is opened: the segment size while the segment is active, so
    /// that it can grow without a new mapping, and its length once it is closed.
    map_len: u64,
    use_mmap: bool,
    /// Whether the file is opened for writing, which only the active segment needs.
    writable: bool,
    /// The segment's entry in the file cache.
    handle: FileHandle,
    /// Whether the file may hold bytes that no `fdatasync` has flushed yet. Set after every
    /// write, and also after recovery wherever the log cannot vouch for an earlier flush.
    pub(super) unsynced: bool,
}

impl Segment {
    /// Creates the file of a new, empty segment and writes its header. With `sync`, flushes the
    /// file and its directory so that the new segment survives a power loss.
    ///
    /// Removes the file again if anything after its creation fails. The error reports whether
    /// that removal failed too.
    pub(super) fn create(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        sync: bool,
        cache: &Arc<FileCache>,
    ) -> Result<Segment, CreateError> {
        let path = dir.join(segment_file_name(base_offset));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| CreateError::clean(StorageError::io("create", &path)(e)))?;

        if let Err(error) = write_header(&file, &path, base_offset, sync) {
            return Err(match std::fs::remove_file(&path) {
                Ok(()) => CreateError::clean(error),
                Err(_) => CreateError {
                    error,
                    left_file: true,
                },
            });
        }
        if sync {
            // The file is complete, so it stays if only the directory sync fails. Recovery
            // treats it like any empty trailing segment.
            sync_dir(dir).map_err(|error| CreateError {
                error,
                left_file: true,
            })?;
        }

        let mut segment = Segment::existing(path, base_offset, SEGMENT_HEADER_LEN as u64, true);
        segment.unsynced = !sync;
        let segment = segment.with_config(config, cache);
        // The new segment is about to be appended to, so its file stays open.
        segment.handle.insert(segment.new_file(file));
        Ok(segment)
    }

    /// Describes a segment file of `readable` committed bytes that exists on disk, without
    /// opening it. The caller fills in the offsets and indexes, then calls
    /// [`SegmentBuilder::with_config`].
    pub(super) fn existing(
        path: PathBuf,
        base_offset: u64,
        readable: u64,
        active: bool,
    ) -> SegmentBuilder {
        SegmentBuilder {
            base_offset,
            path,
            next_offset: base_offset,
            index: None,
            time_index: None,
            readable,
            active,
            unsynced: true,
        }
    }

    /// Returns the committed length of the file in bytes, header included.
    pub(super) fn len(&self) -> u64 {
        self.readable
    }

    /// Returns the open file, opening it if the file cache closed it.
    pub(super) fn open_file(&self) -> Result<Arc<SegmentFile>, StorageError> {
        self.handle
            .acquire(|| {
                let file = File::options()
                    .read(true)
                    .write(self.writable)
                    .open(&self.path)?;
                Ok(self.new_file(file))
            })
            .map_err(StorageError::io("open", &self.path))
    }

    /// Hands the file that recovery opened and checked to the file cache, saving a second open.
    pub(super) fn keep_file(&self, file: File) {
        self.handle.insert(self.new_file(file));
    }

    fn new_file(&self, file: File) -> SegmentFile {
        let map_len = self.map_len.max(self.readable);
        SegmentFile::new(file, &self.path, map_len, self.use_mmap)
    }

    /// Raises the committed length to `readable` after a write through `file` ended there.
    pub(super) fn publish(&mut self, file: &SegmentFile, readable: u64) {
        debug_assert!(
            readable >= self.readable,
            "the readable length never shrinks"
        );
        self.readable = readable;
        if !file.covers(readable) {
            // Only a record larger than the segment size gets here. Readers in progress keep the
            // old mapping; the next open maps the new length.
            self.handle.close();
        }
    }

    /// Marks the segment as closed: it is never written again, so a new open of its file is
    /// read-only and maps only its length.
    pub(super) fn seal(&mut self) {
        self.writable = false;
        self.map_len = self.readable;
    }

    /// Returns whether the segment contains no records.
    pub(super) fn is_empty(&self) -> bool {
        self.next_offset == self.base_offset
    }

    /// Adds a record written at `position` to both indexes.
    pub(super) fn observe(&mut self, offset: u64, time_us: u64, position: u64) {
        self.index.observe(offset, position);
        self.time_index.observe(time_us, offset, position);
    }

    /// Writes the index files of this segment, which is closed. They record whether the segment
    /// is flushed; with `sync_files` they are flushed too, and the caller syncs the directory.
    pub(super) fn write_indexes(&self, sync_files: bool) -> Result<(), StorageError> {
        let indexes = SegmentIndexes {
            base_offset: self.base_offset,
            segment_len: self.len(),
            next_offset: self.next_offset,
            offsets: &self.index,
            times: &self.time_index,
        };
        write_index_files(&self.path, &indexes, !self.unsynced, sync_files)
    }

    /// Flushes the data of `file`, this segment's open file, to the disk.
    ///
    /// The file may have been closed and opened again since the write. `fdatasync` flushes the
    /// file's dirty pages whichever descriptor wrote them. Since Linux 4.17 a write-back error
    /// that no descriptor has reported yet is reported to a descriptor opened after it.
    // NOTE: the kernel drops such an error if it evicts the inode while no descriptor is open,
    // so a file that the budget closed with unflushed data may lose one error report.
    pub(super) fn sync(&mut self, file: &SegmentFile) -> Result<(), StorageError> {
        file.file()
            .sync_data()
            .map_err(StorageError::io("fdatasync", &self.path))?;
        self.unsynced = false;
        Ok(())
    }

    /// Calls `visit(position, offset, entry)` for each readable record from file position `pos`
    /// on, in order, until `visit` breaks or the readable bytes end. `pos` is a record boundary.
    ///
    /// Checks each record's length and CRC before visiting it, and returns
    /// [`StorageError::Corrupt`] at the first that fails, so a record damaged after recovery
    /// checked it, or in a closed segment that recovery did not scan, is never passed on.
    pub(super) fn for_each_record(
        &self,
        mut pos: u64,
        mut visit: impl FnMut(u64, u64, &[u8]) -> ControlFlow<()>,
    ) -> Result<(), StorageError> {
        let end = self.len();
        if pos >= end {
            return Ok(());
        }
        let file = self.open_file()?;
        let mut scratch = Vec::new();
        let mut need = 0usize;
        while pos < end {
            let remaining = end - pos;
            let want = file.window_len(remaining, end).max(need);
            let window = file
                .bytes(pos, want, end, &mut scratch)
                .map_err(StorageError::io("read", &self.path))?;
            let walked = walk_records(window, pos, &mut visit);
            pos += walked.consumed as u64;
            need = 0;
            match walked.stop {
                WalkStop::Visitor => return Ok(()),
                WalkStop::WindowEnd => {}
                WalkStop::Incomplete(record_len) if walked.consumed == 0 => {
                    if record_len as u64 > remaining {
                        return Err(StorageError::corrupt(
                            &self.path,
                            pos,
                            "record extends past the committed end of the segment",
                        ));
                    }
                    need = record_len;
                }
                WalkStop::Incomplete(_) => {}
                WalkStop::Invalid(reason) => {
                    return Err(StorageError::corrupt(&self.path, pos, reason));
                }
            }
        }
        Ok(())
    }
}

/// A [`Segment`] under construction: a file found on disk, before it joins the file cache.
#[derive(Debug)]
pub(super) struct SegmentBuilder {
    pub(super) base_offset: u64,
    pub(super) path: PathBuf,
    pub(super) next_offset: u64,
    pub(super) index: Option<SparseIndex>,
    pub(super) time_index: Option<TimeIndex>,
    pub(super) readable: u64,
    /// Whether the segment is the active one, which is opened for writing.
    pub(super) active: bool,
    pub(super) unsynced: bool,
}

impl SegmentBuilder {
    /// Finishes the segment. Missing indexes start empty.
    pub(super) fn with_config(self, config: &LogConfig, cache: &Arc<FileCache>) -> Segment {
        let base = self.base_offset;
        let map_len = if self.active {
            config.segment_bytes
        } else {
            self.readable
        };
        Segment {
            base_offset: base,
            path: self.path,
            next_offset: self.next_offset,
            index: self
                .index
                .unwrap_or_else(|| SparseIndex::new(base, config.index_interval_bytes)),
            time_index: self
                .time_index
                .unwrap_or_else(|| TimeIndex::new(base, config.time_index_interval_bytes)),
            readable: self.readable,
            map_len,
            use_mmap: config.use_mmap,
            writable: self.active,
            handle: FileHandle::new(cache),
            unsynced: self.unsynced,
        }
    }
}

/// A failure to create a segment file.
#[derive(Debug)]
pub(super) struct CreateError {
    pub(super) error: StorageError,
    /// Whether a file that is not a valid segment may remain on disk.
    pub(super) left_file: bool,
}

impl CreateError {
    fn clean(error: StorageError) -> CreateError {
        CreateError {
            error,
            left_file: false,
        }
    }
}

fn write_header(
    file: &File,
    path: &Path,
    base_offset: u64,
    sync: bool,
) -> Result<(), StorageError> {
    file.write_all_at(&encode_header(base_offset), 0)
        .map_err(StorageError::io("write", path))?;
    if sync {
        file.sync_data()
            .map_err(StorageError::io("fdatasync", path))?;
    }
    Ok(())
}

/// Flushes a directory, so that file creations, renames and removals in it survive a power loss.
pub(super) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StorageError::io("fsync directory", dir))
}

/// Reason [`walk_records`] stopped.
enum WalkStop {
    /// The visitor broke before the record at `consumed`.
    Visitor,
    /// The window ends exactly after the last visited record.
    WindowEnd,
    /// The record at `consumed` is this many bytes long but the window ends inside it.
    Incomplete(usize),
    /// The record at `consumed` has an impossible length or a CRC that does not match.
    Invalid(&'static str),
}

struct Walked {
    consumed: usize,
    stop: WalkStop,
}

/// Visits the complete records at the front of `window`, which starts at file position
/// `window_pos`.
fn walk_records(
    window: &[u8],
    window_pos: u64,
    visit: &mut impl FnMut(u64, u64, &[u8]) -> ControlFlow<()>,
) -> Walked {
    let mut at = 0;
    let stop = loop {
        let rest = &window[at..];
        if rest.is_empty() {
            break WalkStop::WindowEnd;
        }
        if rest.len() < RECORD_HEADER_LEN {
            break WalkStop::Incomplete(RECORD_HEADER_LEN);
        }
        let entry_len = record_entry_len(rest);
        if entry_len < MIN_ENTRY_LEN {
            break WalkStop::Invalid("record is shorter than the smallest entry");
        }
        let record_len = RECORD_HEADER_LEN + entry_len;
        if rest.len() < record_len {
            break WalkStop::Incomplete(record_len);
        }
        let entry = &rest[RECORD_HEADER_LEN..record_len];
        if record_crc(rest) != crc32fast::hash(entry) {
            break WalkStop::Invalid("record CRC does not match its entry");
        }
        if visit(window_pos + at as u64, entry_offset(entry), entry).is_break() {
            break WalkStop::Visitor;
        }
        at += record_len;
    };
    Walked { consumed: at, stop }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_name_round_trips() {
        let name = segment_file_name(1234);
        assert_eq!(name, "00000000000000001234.log");
        assert_eq!(parse_segment_file_name(&name), Some(1234));
    }

    #[test]
    fn file_name_parser_rejects_other_names() {
        for name in [
            "topic.meta",
            "1234.log",
            "0000000000000000123x.log",
            "00000000000000001234",
        ] {
            assert_eq!(parse_segment_file_name(name), None, "{name}");
        }
    }

    #[test]
    fn header_check_accepts_own_header() {
        assert_eq!(check_header(&encode_header(77), 77), Ok(()));
    }

    #[test]
    fn header_check_rejects_other_base() {
        assert!(check_header(&encode_header(77), 78).is_err());
    }

    #[test]
    fn header_check_rejects_other_magic() {
        let mut header = encode_header(0);
        header[0] = b'X';
        assert!(check_header(&header, 0).is_err());
    }

    #[test]
    fn header_check_rejects_other_version() {
        let mut header = encode_header(0);
        header[7] = 2;
        assert!(check_header(&header, 0).is_err());
    }
}
