//! Opening the segments of a topic: header checks, a full scan of every record, and truncation of
//! a torn tail in the last segment.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use chorus_protocol::event::measure_entry;

use super::config::LogConfig;
use super::error::StorageError;
use super::meta::{META_FILE, META_TMP_FILE};
use super::mmap::SegmentView;
use super::segment::{
    check_header, encode_header, parse_segment_file_name, record_crc, record_entry_len, Segment,
    SparseIndex, MIN_ENTRY_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// Read buffer for scanning a segment.
const SCAN_BUFFER_LEN: usize = 256 * 1024;

/// Returns the segment files in `dir` as (base offset, path), sorted by base offset. Logs a
/// warning for every other entry except the metadata files.
pub(super) fn list_segment_files(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let entries = fs::read_dir(dir).map_err(StorageError::io("list", dir))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(StorageError::io("list", dir))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == META_FILE || name == META_TMP_FILE {
            continue;
        }
        match parse_segment_file_name(&name) {
            Some(base) => segments.push((base, entry.path())),
            None => {
                let path = entry.path();
                tracing::warn!(path = %path.display(), "ignoring unknown file in topic directory");
            }
        }
    }
    segments.sort_unstable_by_key(|&(base, _)| base);
    Ok(segments)
}

/// Opens and checks every segment in `files`, which are sorted and not empty, and truncates the
/// last one after its last valid record.
pub(super) fn open_segments(
    files: &[(u64, PathBuf)],
    config: &LogConfig,
) -> Result<Vec<Segment>, StorageError> {
    let mut segments: Vec<Segment> = Vec::with_capacity(files.len());
    for (i, (base, path)) in files.iter().enumerate() {
        if let Some(previous) = segments.last() {
            if previous.next_offset != *base {
                return Err(StorageError::corrupt(
                    path,
                    0,
                    format!(
                        "segment starts at offset {base}, but the previous segment ends at \
                         offset {}",
                        previous.next_offset
                    ),
                ));
            }
        }
        let is_last = i + 1 == files.len();
        segments.push(open_segment(path, *base, is_last, config)?);
    }
    Ok(segments)
}

fn open_segment(
    path: &Path,
    base_offset: u64,
    is_last: bool,
    config: &LogConfig,
) -> Result<Segment, StorageError> {
    let file = File::options()
        .read(true)
        .write(is_last)
        .open(path)
        .map_err(StorageError::io("open", path))?;
    let mut file_len = file
        .metadata()
        .map_err(StorageError::io("read metadata of", path))?
        .len();

    match read_header(&file, path, file_len, base_offset)? {
        Header::Valid => {}
        Header::Incomplete if is_last => {
            rewrite_header(&file, path, base_offset, file_len)?;
            file_len = SEGMENT_HEADER_LEN as u64;
        }
        Header::Incomplete => {
            return Err(StorageError::corrupt(
                path,
                0,
                "segment header is missing or zeroed, but later segments exist",
            ))
        }
    }

    let scan = scan_records(
        &file,
        path,
        base_offset,
        file_len,
        config.index_interval_bytes,
    )?;
    if let Some(reason) = &scan.invalid {
        if !is_last {
            return Err(StorageError::corrupt(path, scan.valid_len, reason.clone()));
        }
        truncate_tail(&file, path, &scan, file_len)?;
    }

    let reserve = if is_last {
        config.segment_bytes
    } else {
        scan.valid_len
    };
    let view = SegmentView::new(&file, path, scan.valid_len, reserve, config.use_mmap);
    Ok(Segment {
        base_offset,
        path: path.to_path_buf(),
        file,
        next_offset: scan.next_offset,
        index: scan.index,
        view,
        unsynced: false,
    })
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
    tracing::warn!(
        path = %path.display(),
        offset = scan.next_offset,
        position = scan.valid_len,
        dropped_bytes = file_len - scan.valid_len,
        reason = scan.invalid.as_deref().unwrap_or_default(),
        "dropping torn or invalid records at the end of the log"
    );
    file.set_len(scan.valid_len)
        .map_err(StorageError::io("truncate", path))?;
    file.sync_all().map_err(StorageError::io("fsync", path))
}

/// Result of scanning the records of one segment.
struct Scan {
    /// Position after the last valid record.
    valid_len: u64,
    /// Offset after the last valid record.
    next_offset: u64,
    index: SparseIndex,
    /// Why the record at `valid_len` is invalid, if the scan stopped before the end of the file.
    invalid: Option<String>,
}

fn scan_records(
    file: &File,
    path: &Path,
    base_offset: u64,
    file_len: u64,
    index_interval: u32,
) -> Result<Scan, StorageError> {
    let mut reader = BufReader::with_capacity(SCAN_BUFFER_LEN, file);
    reader
        .seek(SeekFrom::Start(SEGMENT_HEADER_LEN as u64))
        .map_err(StorageError::io("seek", path))?;

    let mut index = SparseIndex::new(base_offset, index_interval);
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
                pos += record_len;
                expected += 1;
            }
        }
    };
    Ok(Scan {
        valid_len: pos,
        next_offset: expected,
        index,
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
