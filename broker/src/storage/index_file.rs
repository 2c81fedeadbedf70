//! The index files of a closed segment, `<base>.index` and `<base>.timeindex`, and the boot id
//! that decides whether their segment's unsynced bytes can still be trusted.
//!
//! Both files start with the same header. It names the segment they describe (base offset, file
//! length, next offset) and says whether the segment was flushed with `fdatasync` before the
//! files were written. A file is used only if its CRC, its header and every entry check out
//! against the segment file on disk; otherwise the segment is scanned and the files rewritten.
//! `spec/STORAGE.md` gives the layout byte by byte.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::error::StorageError;
use super::index::{SparseIndex, TimeEntry, TimeIndex};
use super::segment::SEGMENT_HEADER_LEN;

/// File name suffix of an offset index.
pub(super) const OFFSET_INDEX_SUFFIX: &str = ".index";

/// File name suffix of a time index.
pub(super) const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// Suffix of a file being written, before it is renamed into place.
pub(super) const TMP_SUFFIX: &str = ".tmp";

const OFFSET_INDEX_MAGIC: &[u8; 6] = b"CHROIX";
const TIME_INDEX_MAGIC: &[u8; 6] = b"CHRTIX";

/// Version of the index file format written by this code.
pub(super) const INDEX_VERSION: u16 = 1;

/// Bytes of the common header: magic, version, base offset, segment length, next offset, flags,
/// reserved, boot id and entry count.
const HEADER_LEN: usize = 6 + 2 + 8 + 8 + 8 + 1 + 7 + 16 + 4;

/// Header flag: the segment was flushed to the disk before the index file was written.
const FLAG_SEGMENT_SYNCED: u8 = 0x01;

const OFFSET_ENTRY_LEN: usize = 4 + 4;
const TIME_ENTRY_LEN: usize = 8 + 4 + 4;
const CRC_LEN: usize = 4;

/// Identifies one boot of the kernel: 16 bytes, all zero when unknown.
pub(super) type BootId = [u8; 16];

/// Returns the id of the running kernel's boot, read once from
/// `/proc/sys/kernel/random/boot_id`, or `None` when that file cannot be read or parsed.
pub(super) fn current_boot_id() -> Option<BootId> {
    static BOOT_ID: OnceLock<Option<BootId>> = OnceLock::new();
    *BOOT_ID.get_or_init(|| {
        let text = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        parse_boot_id(&text)
    })
}

/// Parses a boot id such as `0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0`, ignoring dashes and
/// surrounding whitespace.
fn parse_boot_id(text: &str) -> Option<BootId> {
    let digits: Vec<u8> = text.trim().bytes().filter(|&b| b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (byte, pair) in id.iter_mut().zip(digits.chunks(2)) {
        let pair = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    (id != [0u8; 16]).then_some(id)
}

/// Returns the path of the offset index beside the segment at `segment_path`.
pub(super) fn offset_index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(&OFFSET_INDEX_SUFFIX[1..])
}

/// Returns the path of the time index beside the segment at `segment_path`.
pub(super) fn time_index_path(segment_path: &Path) -> PathBuf {
    segment_path.with_extension(&TIME_INDEX_SUFFIX[1..])
}

/// Contents of the index files of a closed segment.
#[derive(Debug)]
pub(super) struct SegmentIndexes<'a> {
    pub(super) base_offset: u64,
    pub(super) segment_len: u64,
    pub(super) next_offset: u64,
    pub(super) offsets: &'a SparseIndex,
    pub(super) times: &'a TimeIndex,
}

/// Index files read back and checked against their segment.
#[derive(Debug)]
pub(super) struct LoadedIndexes {
    pub(super) offsets: SparseIndex,
    pub(super) times: TimeIndex,
    pub(super) next_offset: u64,
    /// Whether the segment was flushed before the files were written.
    pub(super) synced: bool,
    /// Boot during which the files were written, when the segment was not flushed.
    pub(super) boot_id: BootId,
}

impl LoadedIndexes {
    /// Returns whether the segment's contents can be used without a scan: either it was flushed
    /// before the index files were written, or the kernel has not rebooted since, so its page
    /// cache still contains every byte the log wrote.
    pub(super) fn trusted(&self) -> bool {
        self.synced || current_boot_id().is_some_and(|id| id == self.boot_id)
    }
}

/// Writes both index files of a closed segment, each to a temporary file renamed into place, so
/// that a crash leaves the old file, the new file, or a temporary file that recovery removes.
///
/// `synced` records that the segment was flushed first. With `sync_files`, each file is flushed
/// before its rename; the caller then syncs the directory.
pub(super) fn write_index_files(
    segment_path: &Path,
    indexes: &SegmentIndexes<'_>,
    synced: bool,
    sync_files: bool,
) -> Result<(), StorageError> {
    let header = Header {
        base_offset: indexes.base_offset,
        segment_len: indexes.segment_len,
        next_offset: indexes.next_offset,
        synced,
        boot_id: if synced {
            [0; 16]
        } else {
            current_boot_id().unwrap_or([0; 16])
        },
    };
    let offsets = encode_offset_index(&header, indexes.offsets);
    write_atomically(&offset_index_path(segment_path), &offsets, sync_files)?;
    let times = encode_time_index(&header, indexes.times);
    write_atomically(&time_index_path(segment_path), &times, sync_files)
}

/// Reason the index files of a segment cannot be used.
#[derive(Debug)]
pub(super) struct Unusable {
    /// Whether a file is missing, as after a crash right after the segment closed.
    pub(super) missing: bool,
    /// Description of the problem, naming the file.
    pub(super) reason: String,
}

impl Unusable {
    fn invalid(path: &Path, reason: impl fmt::Display) -> Unusable {
        Unusable {
            missing: false,
            reason: format!("{}: {reason}", path.display()),
        }
    }
}

/// Reads both index files of the segment at `segment_path` and checks them against its base
/// offset and length. Returns why they cannot be used, including when one is missing.
pub(super) fn read_index_files(
    segment_path: &Path,
    base_offset: u64,
    segment_len: u64,
) -> Result<LoadedIndexes, Unusable> {
    let expected = Expected {
        base_offset,
        segment_len,
    };
    let offset_path = offset_index_path(segment_path);
    let offset_bytes = read_file(&offset_path)?;
    let (header, offsets) = decode_offset_index(&offset_bytes, &expected)
        .map_err(|reason| Unusable::invalid(&offset_path, reason))?;

    let time_path = time_index_path(segment_path);
    let time_bytes = read_file(&time_path)?;
    let (time_header, max_time_us, times) = decode_time_index(&time_bytes, &expected)
        .map_err(|reason| Unusable::invalid(&time_path, reason))?;
    if time_header != header {
        let reason = format!(
            "describes another state of the segment than {}",
            offset_path.display()
        );
        return Err(Unusable::invalid(&time_path, reason));
    }

    Ok(LoadedIndexes {
        offsets: SparseIndex::from_entries(base_offset, offsets),
        times: TimeIndex::from_entries(base_offset, max_time_us, times),
        next_offset: header.next_offset,
        synced: header.synced,
        boot_id: header.boot_id,
    })
}

/// Removes the index files of the segment at `segment_path`, if they exist.
pub(super) fn remove_index_files(segment_path: &Path) -> Result<(), StorageError> {
    for path in [
        offset_index_path(segment_path),
        time_index_path(segment_path),
    ] {
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(StorageError::io("remove", &path)(e)),
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    base_offset: u64,
    segment_len: u64,
    next_offset: u64,
    synced: bool,
    boot_id: BootId,
}

/// Values an index file must agree with.
struct Expected {
    base_offset: u64,
    segment_len: u64,
}

fn read_file(path: &Path) -> Result<Vec<u8>, Unusable> {
    fs::read(path).map_err(|e| Unusable {
        missing: e.kind() == io::ErrorKind::NotFound,
        reason: format!("{}: {e}", path.display()),
    })
}

fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> Result<(), StorageError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(TMP_SUFFIX);
    let tmp = PathBuf::from(tmp_name);

    let mut file = File::create(&tmp).map_err(StorageError::io("create", &tmp))?;
    file.write_all(bytes)
        .map_err(StorageError::io("write", &tmp))?;
    if sync {
        file.sync_data()
            .map_err(StorageError::io("fdatasync", &tmp))?;
    }
    drop(file);
    fs::rename(&tmp, path).map_err(StorageError::io("rename into place", path))
}

fn encode_header(dst: &mut Vec<u8>, magic: &[u8; 6], header: &Header, count: usize) {
    dst.extend_from_slice(magic);
    dst.extend_from_slice(&INDEX_VERSION.to_be_bytes());
    dst.extend_from_slice(&header.base_offset.to_be_bytes());
    dst.extend_from_slice(&header.segment_len.to_be_bytes());
    dst.extend_from_slice(&header.next_offset.to_be_bytes());
    dst.push(if header.synced {
        FLAG_SEGMENT_SYNCED
    } else {
        0
    });
    dst.extend_from_slice(&[0u8; 7]);
    dst.extend_from_slice(&header.boot_id);
    // Entry counts stay far below u32::MAX: one entry per record at most, and segment positions
    // are u32.
    dst.extend_from_slice(&(count as u32).to_be_bytes());
}

fn finish_with_crc(mut bytes: Vec<u8>) -> Vec<u8> {
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

fn encode_offset_index(header: &Header, index: &SparseIndex) -> Vec<u8> {
    let entries = index.entries();
    let mut bytes = Vec::with_capacity(HEADER_LEN + entries.len() * OFFSET_ENTRY_LEN + CRC_LEN);
    encode_header(&mut bytes, OFFSET_INDEX_MAGIC, header, entries.len());
    for &(relative, position) in entries {
        bytes.extend_from_slice(&relative.to_be_bytes());
        bytes.extend_from_slice(&position.to_be_bytes());
    }
    finish_with_crc(bytes)
}

fn encode_time_index(header: &Header, index: &TimeIndex) -> Vec<u8> {
    let entries = index.entries();
    let mut bytes = Vec::with_capacity(HEADER_LEN + 8 + entries.len() * TIME_ENTRY_LEN + CRC_LEN);
    encode_header(&mut bytes, TIME_INDEX_MAGIC, header, entries.len());
    bytes.extend_from_slice(&index.max_time_us().unwrap_or(0).to_be_bytes());
    for entry in entries {
        bytes.extend_from_slice(&entry.max_time_us.to_be_bytes());
        bytes.extend_from_slice(&entry.relative_offset.to_be_bytes());
        bytes.extend_from_slice(&entry.position.to_be_bytes());
    }
    finish_with_crc(bytes)
}

/// Big-endian reader over a checked byte slice.
struct Fields<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }

    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }

    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
}

/// Checks length, CRC, magic, version and header fields, and returns the header, the entry count
/// and a reader positioned after the header.
fn decode_header<'a>(
    bytes: &'a [u8],
    magic: &[u8; 6],
    expected: &Expected,
) -> Result<(Header, usize, Fields<'a>), String> {
    if bytes.len() < HEADER_LEN + CRC_LEN {
        return Err(format!(
            "file is {} bytes, shorter than a header",
            bytes.len()
        ));
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if stored != crc32fast::hash(body) {
        return Err("CRC does not match the contents".to_owned());
    }

    let mut fields = Fields { bytes: body, at: 0 };
    if &fields.take::<6>() != magic {
        return Err("wrong magic".to_owned());
    }
    let version = u16::from_be_bytes(fields.take());
    if version != INDEX_VERSION {
        return Err(format!(
            "format version {version} is not supported; this build reads version \
             {INDEX_VERSION}"
        ));
    }
    let header = decode_header_fields(&mut fields)?;
    let count = fields.u32() as usize;
    check_header(&header, expected)?;
    Ok((header, count, fields))
}

fn decode_header_fields(fields: &mut Fields<'_>) -> Result<Header, String> {
    let base_offset = fields.u64();
    let segment_len = fields.u64();
    let next_offset = fields.u64();
    let [flags] = fields.take::<1>();
    if flags & !FLAG_SEGMENT_SYNCED != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    if fields.take::<7>() != [0u8; 7] {
        return Err("reserved bytes are not zero".to_owned());
    }
    Ok(Header {
        base_offset,
        segment_len,
        next_offset,
        synced: flags & FLAG_SEGMENT_SYNCED != 0,
        boot_id: fields.take(),
    })
}

fn check_header(header: &Header, expected: &Expected) -> Result<(), String> {
    if header.base_offset != expected.base_offset {
        return Err(format!(
            "names base offset {}, but the segment starts at {}",
            header.base_offset, expected.base_offset
        ));
    }
    if header.segment_len != expected.segment_len {
        return Err(format!(
            "describes a segment of {} bytes, but the segment file has {}",
            header.segment_len, expected.segment_len
        ));
    }
    if header.next_offset < header.base_offset {
        return Err(format!(
            "next offset {} is below the base offset {}",
            header.next_offset, header.base_offset
        ));
    }
    Ok(())
}

fn decode_offset_index(
    bytes: &[u8],
    expected: &Expected,
) -> Result<(Header, Vec<(u32, u32)>), String> {
    let (header, count, mut fields) = decode_header(bytes, OFFSET_INDEX_MAGIC, expected)?;
    check_entry_bytes(fields.bytes.len() - fields.at, 0, count, OFFSET_ENTRY_LEN)?;

    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = (fields.u32(), fields.u32());
        check_entry(&header, entries.last().copied(), entry)?;
        entries.push(entry);
    }
    Ok((header, entries))
}

fn decode_time_index(
    bytes: &[u8],
    expected: &Expected,
) -> Result<(Header, Option<u64>, Vec<TimeEntry>), String> {
    let (header, count, mut fields) = decode_header(bytes, TIME_INDEX_MAGIC, expected)?;
    check_entry_bytes(fields.bytes.len() - fields.at, 8, count, TIME_ENTRY_LEN)?;
    let max_time_us = fields.u64();

    let mut entries: Vec<TimeEntry> = Vec::with_capacity(count);
    for _ in 0..count {
        let entry = TimeEntry {
            max_time_us: fields.u64(),
            relative_offset: fields.u32(),
            position: fields.u32(),
        };
        let previous = entries.last().map(|e| (e.relative_offset, e.position));
        check_entry(&header, previous, (entry.relative_offset, entry.position))?;
        let previous_time = entries.last().map_or(0, |e| e.max_time_us);
        if entry.max_time_us < previous_time || entry.max_time_us > max_time_us {
            return Err(format!(
                "entry time {} is out of order or above the segment's newest time {max_time_us}",
                entry.max_time_us
            ));
        }
        entries.push(entry);
    }
    let has_records = header.next_offset > header.base_offset;
    Ok((header, has_records.then_some(max_time_us), entries))
}

/// Checks that `remaining` bytes hold `fixed_len` bytes of fields and then exactly `count`
/// entries of `entry_len` bytes.
fn check_entry_bytes(
    remaining: usize,
    fixed_len: usize,
    count: usize,
    entry_len: usize,
) -> Result<(), String> {
    let expected = count
        .checked_mul(entry_len)
        .and_then(|n| n.checked_add(fixed_len));
    if expected != Some(remaining) {
        return Err(format!(
            "header counts {count} entries, but {remaining} bytes follow it"
        ));
    }
    Ok(())
}

/// Checks one (relative offset, position) entry against the header and the previous entry.
fn check_entry(
    header: &Header,
    previous: Option<(u32, u32)>,
    (relative, position): (u32, u32),
) -> Result<(), String> {
    let records = header.next_offset - header.base_offset;
    let position = u64::from(position);
    if u64::from(relative) >= records
        || position < SEGMENT_HEADER_LEN as u64
        || position >= header.segment_len
    {
        return Err(format!(
            "entry ({relative}, {position}) lies outside the segment"
        ));
    }
    if let Some((previous_relative, previous_position)) = previous {
        if relative <= previous_relative || position <= u64::from(previous_position) {
            return Err(format!(
                "entry ({relative}, {position}) does not follow the previous entry"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_indexes() -> (SparseIndex, TimeIndex) {
        let mut offsets = SparseIndex::new(100, 0);
        let mut times = TimeIndex::new(100, 0);
        for i in 0..4u64 {
            offsets.observe(100 + i, 16 + 40 * i);
            times.observe(1_000 + i, 100 + i, 16 + 40 * i);
        }
        (offsets, times)
    }

    fn write_sample(dir: &Path, synced: bool) -> PathBuf {
        let segment = dir.join("00000000000000000100.log");
        let (offsets, times) = sample_indexes();
        let indexes = SegmentIndexes {
            base_offset: 100,
            segment_len: 176,
            next_offset: 104,
            offsets: &offsets,
            times: &times,
        };
        write_index_files(&segment, &indexes, synced, false).unwrap();
        segment
    }

    #[test]
    fn index_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        let loaded = read_index_files(&segment, 100, 176).unwrap();
        assert_eq!(loaded.next_offset, 104);
        assert!(loaded.synced);
        assert_eq!(loaded.offsets.entries(), sample_indexes().0.entries());
        assert_eq!(loaded.times.entries(), sample_indexes().1.entries());
        assert_eq!(loaded.times.max_time_us(), Some(1_003));
    }

    #[test]
    fn synced_index_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        assert!(read_index_files(&segment, 100, 176).unwrap().trusted());
    }

    #[test]
    fn unsynced_index_is_trusted_only_within_its_boot() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), false);
        let mut loaded = read_index_files(&segment, 100, 176).unwrap();
        assert_eq!(loaded.trusted(), current_boot_id().is_some());
        loaded.boot_id = [7; 16];
        assert!(!loaded.trusted());
    }

    #[test]
    fn index_for_other_segment_length_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        let unusable = read_index_files(&segment, 100, 177).unwrap_err();
        assert!(unusable.reason.contains("176"), "{}", unusable.reason);
        assert!(!unusable.missing);
    }

    #[test]
    fn index_for_other_base_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        assert!(read_index_files(&segment, 101, 176).is_err());
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        for path in [offset_index_path(&segment), time_index_path(&segment)] {
            let good = fs::read(&path).unwrap();
            for bit in 0..good.len() * 8 {
                let mut bad = good.clone();
                bad[bit / 8] ^= 1 << (bit % 8);
                fs::write(&path, &bad).unwrap();
                let result = read_index_files(&segment, 100, 176);
                assert!(result.is_err(), "{} bit {bit}", path.display());
            }
            fs::write(&path, &good).unwrap();
        }
    }

    #[test]
    fn missing_time_index_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let segment = write_sample(dir.path(), true);
        fs::remove_file(time_index_path(&segment)).unwrap();
        let unusable = read_index_files(&segment, 100, 176).unwrap_err();
        assert!(unusable.missing);
    }

    #[test]
    fn boot_id_parses_kernel_format() {
        let id = parse_boot_id("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n").unwrap();
        assert_eq!(id[0], 0x0f);
        assert_eq!(id[15], 0xf0);
    }

    #[test]
    fn boot_id_rejects_other_text() {
        assert_eq!(parse_boot_id("not a boot id"), None);
        assert_eq!(parse_boot_id("00000000-0000-0000-0000-000000000000"), None);
    }
}
