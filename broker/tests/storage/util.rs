//! Helpers shared by the storage tests: entries with known contents, reads that record where
//! they stop, file snapshots, and index file patches that follow `spec/STORAGE.md`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use chorus_broker::storage::{FsyncPolicy, LogConfig, StorageError, TopicLog};
use chorus_protocol::event::encode_entry;
use chorus_protocol::Topic;

pub(crate) const SEGMENT_HEADER_LEN: u64 = 16;

/// Broker time of the entry at offset 0 in [`entry`]; later entries are one microsecond apart.
pub(crate) const BASE_TIME_US: u64 = 1_000;

pub(crate) fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// Encodes a wire entry whose payload bytes are derived from its offset, with broker time
/// `BASE_TIME_US + offset`.
pub(crate) fn entry(offset: u64, payload_len: usize) -> Vec<u8> {
    entry_at(offset, BASE_TIME_US + offset, payload_len)
}

/// Encodes a wire entry with the given broker time and a payload derived from its offset.
pub(crate) fn entry_at(offset: u64, time_us: u64, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (offset as usize + i) as u8)
        .collect();
    let mut buf = BytesMut::new();
    encode_entry(&mut buf, offset, time_us, 0, "publisher", &payload);
    buf.to_vec()
}

/// Length of the record that stores `entry`.
pub(crate) fn record_len(entry: &[u8]) -> u64 {
    8 + entry.len() as u64
}

pub(crate) fn small_config(use_mmap: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        time_index_interval_bytes: 128,
        fsync: FsyncPolicy::Never,
        use_mmap,
        ..LogConfig::default()
    }
}

/// Appends entries for offsets `next_offset()..next_offset() + count` and commits them.
pub(crate) fn append_and_commit(
    log: &mut TopicLog,
    count: u64,
    payload_len: usize,
) -> Vec<Vec<u8>> {
    let start = log.next_offset();
    let entries: Vec<Vec<u8>> = (start..start + count)
        .map(|o| entry(o, payload_len))
        .collect();
    for e in &entries {
        log.append(e).unwrap();
    }
    log.commit().unwrap();
    entries
}

pub(crate) fn read_all(log: &TopicLog, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    log.read(from, usize::MAX, usize::MAX, |offset, e| {
        out.push((offset, e.to_vec()))
    })
    .unwrap();
    out
}

/// Reads from the earliest offset until the end or the first error, and returns the entries
/// passed to the sink together with the error, if any.
pub(crate) fn read_until_error(log: &TopicLog) -> (Vec<(u64, Vec<u8>)>, Option<StorageError>) {
    let mut out = Vec::new();
    let result = log.read(
        log.earliest_offset(),
        usize::MAX,
        usize::MAX,
        |offset, e| out.push((offset, e.to_vec())),
    );
    (out, result.err())
}

pub(crate) fn expected_from(entries: &[Vec<u8>], from: u64) -> Vec<(u64, Vec<u8>)> {
    entries
        .iter()
        .enumerate()
        .skip(from as usize)
        .map(|(i, e)| (i as u64, e.clone()))
        .collect()
}

/// Returns the files in `dir` whose names end with `.<extension>`, sorted.
pub(crate) fn files_with_extension(dir: &Path, extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == extension))
        .collect();
    files.sort();
    files
}

pub(crate) fn segment_files(dir: &Path) -> Vec<PathBuf> {
    files_with_extension(dir, "log")
}

pub(crate) fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

/// The files of one directory, by name.
pub(crate) type Snapshot = BTreeMap<String, Vec<u8>>;

/// Reads every file in `dir`.
pub(crate) fn snapshot(dir: &Path) -> Snapshot {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, fs::read(e.path()).unwrap())
        })
        .collect()
}

/// Replaces the contents of `dir` with `files`.
pub(crate) fn restore(dir: &Path, files: &Snapshot) {
    if dir.exists() {
        fs::remove_dir_all(dir).unwrap();
    }
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Byte position of the flags in an index file header. Bit 0 is set when the segment was
/// flushed.
pub(crate) const INDEX_FLAGS_AT: usize = 32;

/// Byte range of the boot id in an index file header.
pub(crate) const INDEX_BOOT_ID: std::ops::Range<usize> = 40..56;

/// Returns whether `bytes` is an index file whose trailing CRC-32 matches its contents.
pub(crate) fn index_crc_is_valid(bytes: &[u8]) -> bool {
    if bytes.len() < 4 {
        return false;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    crc32fast::hash(body).to_be_bytes() == crc
}

/// Rewrites the boot id of an intact index file whose segment was not flushed, as if the file
/// had been written before a reboot, and fixes up its CRC. Leaves other files alone and
/// returns whether it changed `bytes`.
pub(crate) fn move_index_to_earlier_boot(bytes: &mut [u8]) -> bool {
    if !index_crc_is_valid(bytes) || bytes.len() < INDEX_BOOT_ID.end + 4 {
        return false;
    }
    if bytes[INDEX_FLAGS_AT] & 1 != 0 {
        return false;
    }
    bytes[INDEX_BOOT_ID].copy_from_slice(&[0xee; 16]);
    let end = bytes.len() - 4;
    let crc = crc32fast::hash(&bytes[..end]);
    bytes[end..].copy_from_slice(&crc.to_be_bytes());
    true
}

/// Applies [`move_index_to_earlier_boot`] to every index file in `dir`.
pub(crate) fn move_indexes_to_earlier_boot(dir: &Path) {
    for extension in ["index", "timeindex"] {
        for path in files_with_extension(dir, extension) {
            let mut bytes = fs::read(&path).unwrap();
            if move_index_to_earlier_boot(&mut bytes) {
                fs::write(&path, bytes).unwrap();
            }
        }
    }
}
