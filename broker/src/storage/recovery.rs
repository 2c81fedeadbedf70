//! Opening the segments of a topic: header checks, index files instead of scans where they can
//! be trusted, a full scan of every other segment, and truncation of the log at the first
//! damaged record.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chorus_protocol::event::measure_entry;

use super::config::{FsyncPolicy, LogConfig};
use super::data_dir::TopicClaim;
use super::error::StorageError;
use super::file_cache::FileCache;
use super::index::{SparseIndex, TimeIndex};
use super::index_file::{
    read_index_files, remove_index_files, write_index_files, LoadedIndexes, SegmentIndexes,
    OFFSET_INDEX_SUFFIX, TIME_INDEX_SUFFIX, TMP_SUFFIX,
};
use super::meta::{META_FILE, META_TMP_FILE};
use super::retention_override::{RETENTION_FILE, RETENTION_TMP_FILE};
use super::segment::{
    check_header, encode_header, entry_time, parse_segment_file_name, record_crc, record_entry_len,
    sync_dir, Segment, SegmentBuilder, MIN_ENTRY_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Read buffer for scanning a segment.
const SCAN_BUFFER_LEN: usize = 256 * 1024;

/// Returns the segment files in `dir` as (base offset, path), sorted by base offset.
///
/// Removes temporary index files and index files whose segment is gone, which a crash while
/// closing or deleting a segment leaves behind. Logs a warning for every other unknown entry.
pub(super) fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = fs::read_dir(dir).map_err(StorageError::io("list", dir))?;
    let mut segments = Vec::new();
    let mut index_files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == META_FILE || name == META_TMP_FILE || name == QUARANTINE_DIR {
            continue;
        }
        if name == RETENTION_FILE || name == RETENTION_TMP_FILE {
            continue;
        }
        if name == super::deleted::DELETED_FILE {
            continue;
        }
        if let Some(base) = parse_segment_file_name(&name) {
            segments.push((base, entry.path()));
        } else if let Some(base) = parse_index_file_name(&name) {
            index_files.push((base, entry.path()));
        } else if name.ends_with(TMP_SUFFIX) {
            remove_leftover(&entry.path(), "temporary index file")?;
        } else {
            let path = entry.path();
            tracing::warn!(path = %path.display(), "ignoring unknown file in topic directory");
        }
    }
    segments.sort_unstable_by_key(|&(base, _)| base);

    for (base, path) in index_files {
        if segments.binary_search_by_key(&base, |&(b, _)| b).is_err() {
            remove_leftover(&path, "index file without a segment")?;
        }
    }
    Ok(segments)
}

/// Returns the base offset named by an index file name, or `None` for any other name.
fn parse_index_file_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_suffix(OFFSET_INDEX_SUFFIX)
        .or_else(|| name.strip_suffix(TIME_INDEX_SUFFIX))?;
    parse_segment_file_name(&format!("{digits}.log"))
}

fn remove_leftover(path: &Path, what: &str) -> Result<(), StorageError> {
    tracing::info!(path = %path.display(), "removing leftover {what}");
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", path)(e)),
    }
}

/// Opens the segments in `files`, which are sorted and not empty, in directory `dir`.
///
/// Closed segments with trusted index files are opened without reading their records; every
/// other segment is scanned. The log ends at the first invalid or incomplete record: the segment
/// that contains it is truncated there and becomes the active segment, and any later segments are
/// deleted, because offsets must stay consecutive.
///
/// Closed segments are left closed: their files open on their first read, through the data
/// directory's file cache. Only the active segment's file stays open, in that cache.
pub(super) fn open_segments(
    dir: &Path,
    files: &[(u64, PathBuf)],
    config: &LogConfig,
    claim: &TopicClaim,
) -> Result<Vec<Segment>, StorageError> {
    let cache = claim.file_cache();
    let mut segments: Vec<Segment> = Vec::with_capacity(files.len());
    let mut synced_indexes = false;
    for (i, (base, path)) in files.iter().enumerate() {
        if let Some(previous) = segments.last() {
            check_consecutive(previous, *base, path)?;
        }
        if i + 1 == files.len() {
            segments.push(open_active(path, *base, config, cache)?);
            break;
        }
        let next_base = files[i + 1].0;
        match open_closed(path, *base, next_base, config, cache)? {
            Closed::Opened { segment, rewrote } => {
                synced_indexes |= rewrote && !segment.unsynced;
                segments.push(segment);
            }
            Closed::Damaged { position, reason } => {
                claim.count_quarantined_segment();
                drop_later_segments(path, *base, position, &reason, &files[i + 1..])?;
                segments.push(open_active(path, *base, config, cache)?);
                break;
            }
        }
    }
    if synced_indexes {
        sync_dir(dir)?;
    }
    Ok(segments)
}

fn check_consecutive(previous: &Segment, base: u64, path: &Path) -> Result<(), StorageError> {
    if previous.next_offset == base {
        return Ok(());
    }
    Err(StorageError::corrupt(
        path,
        0,
        format!(
            "segment starts at offset {base}, but the previous segment ends at offset {}",
            previous.next_offset
        ),
    ))
}

/// Outcome of opening a closed segment.
enum Closed {
    Opened {
        segment: Segment,
        /// Whether its index files were rebuilt from a scan.
        rewrote: bool,
    },
    /// The segment contains an invalid record at `position`, or an incomplete header.
    Damaged { position: u64, reason: String },
}

/// Opens a segment that is not the last one, from its index files if they can be trusted and
/// by scanning it otherwise. `next_base` is the base offset of the segment after it.
fn open_closed(
    path: &Path,
    base_offset: u64,
    next_base: u64,
    config: &LogConfig,
    cache: &Arc<FileCache>,
) -> Result<Closed, StorageError> {
    let file = File::open(path).map_err(StorageError::io("open", path))?;
    let file_len = file_len(&file, path)?;
    if let Header::Incomplete = read_header(&file, path, file_len, base_offset)? {
        return Ok(Closed::Damaged {
            position: 0,
            reason: "segment header is missing or zeroed".to_owned(),
        });
    }

    match read_index_files(path, base_offset, file_len) {
        Ok(loaded) if loaded.trusted() => {
            let segment = segment_from_indexes(path, base_offset, file_len, loaded)
                .with_config(config, cache);
            return Ok(Closed::Opened {
                segment,
                rewrote: false,
            });
        }
        Ok(_) => tracing::info!(
            path = %path.display(),
            "segment was not flushed before a reboot; scanning it"
        ),
        Err(unusable) if unusable.missing => tracing::info!(
            path = %path.display(),
            reason = %unusable.reason,
            "index files of a closed segment are missing; scanning it and rewriting them"
        ),
        Err(unusable) => tracing::warn!(
            path = %path.display(),
            reason = %unusable.reason,
            "index files of a closed segment are invalid; scanning it and rewriting them"
        ),
    }

    let scan = scan_records(&file, path, base_offset, file_len, config)?;
    if let Some(reason) = scan.invalid {
        return Ok(Closed::Damaged {
            position: scan.valid_len,
            reason,
        });
    }
    if scan.next_offset < next_base {
        // Whole records are missing from the end, as when a power loss kept only part of the
        // file's growth.
        let reason = format!(
            "segment ends at offset {}, but the next segment starts at offset {next_base}",
            scan.next_offset
        );
        return Ok(Closed::Damaged {
            position: scan.valid_len,
            reason,
        });
    }
    let segment = rebuilt_segment(path, &file, base_offset, scan, config)?;
    let segment = segment.with_config(config, cache);
    Ok(Closed::Opened {
        segment,
        rewrote: true,
    })
}

fn segment_from_indexes(
    path: &Path,
    base_offset: u64,
    file_len: u64,
    loaded: LoadedIndexes,
) -> SegmentBuilder {
    let mut segment = Segment::existing(path.to_path_buf(), base_offset, file_len, false);
    segment.next_offset = loaded.next_offset;
    segment.index = Some(loaded.offsets);
    segment.time_index = Some(loaded.times);
    segment.unsynced = !loaded.synced;
    segment
}

/// Builds a closed segment from a clean scan and writes its index files. Unless the policy is
/// `never`, flushes the segment first, so that the new index files can record it as flushed.
fn rebuilt_segment(
    path: &Path,
    file: &File,
    base_offset: u64,
    scan: Scan,
    config: &LogConfig,
) -> Result<SegmentBuilder, StorageError> {
    let sync = config.fsync != FsyncPolicy::Never;
    if sync {
        file.sync_data()
            .map_err(StorageError::io("fdatasync", path))?;
    }
    let indexes = SegmentIndexes {
        base_offset,
        segment_len: scan.valid_len,
        next_offset: scan.next_offset,
        offsets: &scan.index,
        times: &scan.time_index,
    };
    if let Err(error) = write_index_files(path, &indexes, sync, sync) {
        // The indexes only speed up the next start, which scans the segment again without them.
        tracing::warn!(path = %path.display(), %error, "failed to write index files");
    }

    let mut segment = Segment::existing(path.to_path_buf(), base_offset, scan.valid_len, false);
    segment.next_offset = scan.next_offset;
    segment.index = Some(scan.index);
    segment.time_index = Some(scan.time_index);
    segment.unsynced = !sync;
    Ok(segment)
}

/// Deletes the segments after a damaged one, which the log can no longer reach.
fn drop_later_segments(
    damaged: &Path,
    base_offset: u64,
    position: u64,
    reason: &str,
    later: &[(u64, PathBuf)],
) -> Result<(), StorageError> {
    let mut dropped_bytes = 0;
    for (_, path) in later {
        dropped_bytes += fs::metadata(path).map_or(0, |m| m.len());
    }
    tracing::error!(
        path = %damaged.display(),
        base_offset,
        position,
        reason,
        dropped_segments = later.len(),
        dropped_bytes,
        "closed segment is damaged, by a power loss under fsync = \"never\" or by a change \
         from outside chorusd; the log now ends at the damage and the later segments are moved \
         to the topic's quarantine directory"
    );
    for (_, path) in later.iter().rev() {
        let target = quarantine_path(path, "")?;
        fs::rename(path, &target).map_err(StorageError::io("move to quarantine", path))?;
        remove_index_files(path)?;
    }
    if let Some(dir) = damaged.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Opens the last segment for appending: checks every record, truncates it after the last valid
/// one, and removes index files left from an earlier close.
fn open_active(
    path: &Path,
    base_offset: u64,
    config: &LogConfig,
    cache: &Arc<FileCache>,
) -> Result<Segment, StorageError> {
    let file = File::options()
        .read(true)
        .write(true)
        .open(path)
        .map_err(StorageError::io("open", path))?;
    let mut file_len = file_len(&file, path)?;

    if let Header::Incomplete = read_header(&file, path, file_len, base_offset)? {
        rewrite_header(&file, path, base_offset, file_len)?;
        file_len = SEGMENT_HEADER_LEN as u64;
    }

    let scan = scan_records(&file, path, base_offset, file_len, config)?;
    if scan.invalid.is_some() {
        truncate_tail(&file, path, &scan, file_len)?;
    }
    // Index files of the active segment are rewritten when it closes, so any found now
    // describe an older state of it.
    remove_index_files(path)?;

    let mut segment = Segment::existing(path.to_path_buf(), base_offset, scan.valid_len, true);
    segment.next_offset = scan.next_offset;
    segment.index = Some(scan.index);
    segment.time_index = Some(scan.time_index);
    // Nothing records whether the records before a crash reached the disk, so the next sync
    // flushes them whatever happened before.
    segment.unsynced = true;
    let segment = segment.with_config(config, cache);
    // Recovery cut the file above, before any mapping of it existed, as the mmap module's
    // contract requires. The next append writes to it, so it stays open.
    segment.keep_file(file);
    Ok(segment)
}

fn file_len(file: &File, path: &Path) -> Result<u64, StorageError> {
    Ok(file
        .metadata()
        .map_err(StorageError::io("read metadata of", path))?
        .len())
}

enum Header {
    Valid,
    /// Shorter than a header or all zeros: a crash right after the file was created.
    Incomplete,
}

fn read_header(
    file: &File,
    path: &Path,
    file_len: u64,
    base_offset: u64,
) -> Result<Header, StorageError> {
    if file_len < SEGMENT_HEADER_LEN as u64 {
        return Ok(Header::Incomplete);
    }
    let mut header = [0u8; SEGMENT_HEADER_LEN];
    file.read_exact_at(&mut header, 0)
        .map_err(StorageError::io("read", path))?;
    if header.iter().all(|&b| b == 0) {
        return Ok(Header::Incomplete);
    }
    check_header(&header, base_offset).map_err(|reason| StorageError::corrupt(path, 0, reason))?;
    Ok(Header::Valid)
}

fn rewrite_header(
    file: &File,
    path: &Path,
    base_offset: u64,
    file_len: u64,
) -> Result<(), StorageError> {
    tracing::warn!(
        path = %path.display(),
        dropped_bytes = file_len,
        "last segment has an incomplete header; rewriting it"
    );
    file.set_len(0)
        .map_err(StorageError::io("truncate", path))?;
    file.write_all_at(&encode_header(base_offset), 0)
        .map_err(StorageError::io("write", path))?;
    file.sync_all().map_err(StorageError::io("fsync", path))
}

fn truncate_tail(file: &File, path: &Path, scan: &Scan, file_len: u64) -> Result<(), StorageError> {
    let kept = keep_dropped_tail(file, path, scan.valid_len, file_len)?;
    tracing::warn!(
        path = %path.display(),
        offset = scan.next_offset,
        position = scan.valid_len,
        dropped_bytes = file_len - scan.valid_len,
        kept = %kept.display(),
        reason = scan.invalid.as_deref().unwrap_or_default(),
        "dropping torn or invalid records at the end of the log; the dropped bytes are kept \
         for inspection"
    );
    file.set_len(scan.valid_len)
        .map_err(StorageError::io("truncate", path))?;
    file.sync_all().map_err(StorageError::io("fsync", path))
}

/// Directory inside a topic directory that keeps bytes recovery cut from the log, so that an
/// operator can inspect them; chorusd never reads or deletes it.
pub(super) const QUARANTINE_DIR: &str = "quarantine";

/// Returns a new path in the quarantine directory beside `segment`, named after it.
fn quarantine_path(segment: &Path, suffix: &str) -> Result<PathBuf, StorageError> {
    let dir = segment
        .parent()
        .unwrap_or(Path::new("."))
        .join(QUARANTINE_DIR);
    fs::create_dir_all(&dir).map_err(StorageError::io("create", &dir))?;
    let name = segment
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(dir.join(format!("{}{suffix}.{stamp}", name.unwrap_or_default())))
}

/// Copies the bytes from `from` to the end of a segment into the quarantine directory before
/// recovery truncates them, and returns the copy's path.
fn keep_dropped_tail(
    file: &File,
    path: &Path,
    from: u64,
    file_len: u64,
) -> Result<PathBuf, StorageError> {
    let target = quarantine_path(path, &format!(".tail-{from}"))?;
    let mut tail = vec![0u8; (file_len - from) as usize];
    file.read_exact_at(&mut tail, from)
        .map_err(StorageError::io("read", path))?;
    fs::write(&target, &tail).map_err(StorageError::io("write", &target))?;
    Ok(target)
}

/// Result of scanning the records of one segment.
struct Scan {
    /// Position after the last valid record.
    valid_len: u64,
    /// Offset after the last valid record.
    next_offset: u64,
    index: SparseIndex,
    time_index: TimeIndex,
    /// Reason the record at `valid_len` is invalid, if the scan stopped before the end of the
    /// file.
    invalid: Option<String>,
}

fn scan_records(
    file: &File,
    path: &Path,
    base_offset: u64,
    file_len: u64,
    config: &LogConfig,
) -> Result<Scan, StorageError> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_LEN, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64))
        .map_err(StorageError::io("seek", path))?;

    let mut index = SparseIndex::new(base_offset, config.index_interval_bytes);
    let mut time_index = TimeIndex::new(base_offset, config.time_index_interval_bytes);
    let mut pos = SEGMENT_HEADER_LEN as u64;
    let mut expected = base_offset;
    let mut entry = Vec::new();
    let invalid = loop {
        let check = check_record(&mut reader, file_len - pos, expected, &mut entry)
            .map_err(StorageError::io("read", path))?;
        match check {
            RecordCheck::End => break None,
            RecordCheck::Invalid(reason) => break Some(reason),
            RecordCheck::Valid { record_len } => {
                index.observe(expected, pos);
                time_index.observe(entry_time(&entry), expected, pos);
                pos += record_len;
                expected += 1;
            }
        }
    };
    Ok(Scan {
        valid_len: pos,
        next_offset: expected,
        index,
        time_index,
        invalid,
    })
}

enum RecordCheck {
    End,
    Valid { record_len: u64 },
    Invalid(String),
}

/// Reads and checks the next record, with `remaining` bytes left in the file.
fn check_record(
    reader: &mut impl Read,
    remaining: u64,
    expected: u64,
    entry: &mut Vec<u8>,
) -> io::Result<RecordCheck> {
    if remaining == 0 {
        return Ok(RecordCheck::End);
    }
    if remaining < RECORD_HEADER_LEN as u64 {
        return Ok(RecordCheck::Invalid(format!(
            "record header is incomplete: {remaining} bytes left in the file"
        )));
    }
    let mut header = [0u8; RECORD_HEADER_LEN];
    reader.read_exact(&mut header)?;

    // Check the length against the file before allocating for it.
    let len = record_entry_len(&header);
    if len < MIN_ENTRY_LEN {
        return Ok(RecordCheck::Invalid(format!(
            "record length {len} is below the smallest entry length {MIN_ENTRY_LEN}"
        )));
    }
    let available = remaining - RECORD_HEADER_LEN as u64;
    if len as u64 > available {
        return Ok(RecordCheck::Invalid(format!(
            "record of {len} bytes extends past the end of the file ({available} bytes left)"
        )));
    }
    entry.resize(len, 0);
    reader.read_exact(entry)?;

    let stored = record_crc(&header);
    let actual = crc32fast::hash(entry);
    if stored != actual {
        return Ok(RecordCheck::Invalid(format!(
            "CRC mismatch: record stores {stored:08x}, entry hashes to {actual:08x}"
        )));
    }
    let (offset, measured) = match measure_entry(entry) {
        Ok(measured) => measured,
        Err(e) => return Ok(RecordCheck::Invalid(format!("invalid entry: {e}"))),
    };
    if measured != len {
        return Ok(RecordCheck::Invalid(format!(
            "entry layout is {measured} bytes, but the record length is {len}"
        )));
    }
    if offset != expected {
        return Ok(RecordCheck::Invalid(format!(
            "record has offset {offset}, expected {expected}"
        )));
    }
    Ok(RecordCheck::Valid {
        record_len: (RECORD_HEADER_LEN + len) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_file_names_parse() {
        assert_eq!(
            parse_index_file_name("00000000000000000042.index"),
            Some(42)
        );
        assert_eq!(
            parse_index_file_name("00000000000000000042.timeindex"),
            Some(42)
        );
        assert_eq!(parse_index_file_name("42.index"), None);
        assert_eq!(parse_index_file_name("00000000000000000042.log"), None);
    }
}
