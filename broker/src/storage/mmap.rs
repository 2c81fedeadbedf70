//! Read access to the committed bytes of a segment file, through a memory map or through
//! positioned reads (`pread`).
//!
//! This is the only module of the broker that uses `unsafe`. A memory map turns the file into
//! memory that the kernel can change or withdraw under the process, so reading it as a `&[u8]`
//! is sound only under the following contract:
//!
//! 1. **One process.** The data directory is locked by one process ([`super::DataDir`] holds an
//!    exclusive lock on `<data>/LOCK`, and every topic log keeps that lock alive), and within the
//!    process each topic has at most one [`super::TopicLog`]. No other writer modifies or
//!    truncates our segment files. The lock is advisory: a program that ignores it, such as an
//!    administrator's `truncate`, breaks the contract and can crash the broker with `SIGBUS`.
//! 2. **No truncation below the readable length.** Recovery truncates a segment before its
//!    [`SegmentFile`] exists: it scans and cuts the file through a descriptor of its own, which
//!    it closes before the segment is first read. After that the only truncation is the
//!    rollback of a failed write, which cuts bytes at or above the readable length only.
//! 3. **Readable bytes are immutable.** Each segment tracks a readable length, which it passes
//!    to [`SegmentFile::bytes`]. The log writes only at or above it and raises it after a write
//!    completes, so bytes below it never change again.
//! 4. **Only readable bytes are referenced.** [`SegmentFile::bytes`] checks every range against
//!    the readable length and the mapping's length before it forms a slice, and no reference
//!    ever spans the rest of the mapping. The mapping may be longer than the file (see below);
//!    its pages past the end of the file are never touched.
//! 5. **No slice outlives its mapping.** A mapping is owned by one [`SegmentFile`], which is
//!    shared through an `Arc` and never changed. The file cache (`file_cache` module) keeps one
//!    `Arc`, and each read takes another for its duration; every slice borrows from the
//!    reader's `Arc`. Closing the file to stay within the open file budget, closing it after it
//!    was idle, deleting the segment, or closing the log drops only the cache's `Arc`, so the
//!    mapping is removed when the last reader finishes, never under a slice. Retention unlinks
//!    the file while a reader may still map it, which is fine on Linux: an unlinked file keeps
//!    its pages until its last mapping and descriptor are gone.
//!
//! The map is made at the first read of an open file, not when it opens. A segment whose file
//! was closed opens it again on its next read or append, and maps it again on its next read.
//! Both mappings show the same page cache pages, and the file never shrank below the readable
//! length in between (contract 2), so the new mapping shows the same readable bytes.
//!
//! The active segment grows after it is mapped. Rather than remapping on every commit, the file
//! maps the full segment size at its first read (address space only: the file is not extended, so its
//! length stays the true end of the data and recovery needs no special case). Writes through the
//! file descriptor are visible through a shared mapping because both go through the page cache.
//! A new mapping is needed only when a segment outgrows its mapping, which only a record larger
//! than the segment size can cause: the log then closes the file, and the next open maps the
//! larger length.
//!
//! If mapping fails (for example when the process reaches `vm.max_map_count`), the file logs a
//! warning and falls back to positioned reads.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use memmap2::{MmapOptions, MmapRaw};

/// Maximum bytes fetched by one positioned read when the caller did not ask for a larger range.
const PLAIN_WINDOW: usize = 256 * 1024;

/// An open segment file, with a read-only memory map of it unless mapping is off or failed.
///
/// The map is made at the first read, not when the file opens, so that appends to a topic that
/// no one reads, and files opened only to be flushed, cost no mapping.
#[derive(Debug)]
pub(super) struct SegmentFile {
    file: File,
    path: PathBuf,
    /// Minimum bytes to map at the first read, or `None` when reads use `pread`.
    map_len: Option<u64>,
    /// The map, once the first read made it; `None` inside when mapping failed.
    map: OnceLock<Option<MmapRaw>>,
}

impl SegmentFile {
    /// Wraps `file`. With `use_mmap`, the first read maps at least `map_len` bytes of it, so
    /// that the file can grow that far without a new mapping.
    pub(super) fn new(file: File, path: &Path, map_len: u64, use_mmap: bool) -> SegmentFile {
        SegmentFile {
            file,
            path: path.to_path_buf(),
            map_len: use_mmap.then_some(map_len),
            map: OnceLock::new(),
        }
    }

    /// Returns the map for a read of a segment with `readable` committed bytes, mapping the
    /// file at the first call. Returns `None` when reads use `pread`.
    fn mapping(&self, readable: u64) -> Option<&MmapRaw> {
        let map_len = self.map_len?;
        self.map
            .get_or_init(|| map_or_warn(&self.file, &self.path, map_len.max(readable)))
            .as_ref()
    }

    /// Returns the file, for writes and syncs.
    pub(super) fn file(&self) -> &File {
        &self.file
    }

    /// Returns whether every byte below `readable` can be read through this value: always for
    /// positioned reads and before the first read, and for a map at least `readable` bytes long.
    pub(super) fn covers(&self, readable: u64) -> bool {
        match self.map.get() {
            Some(Some(map)) => map.len() as u64 >= readable,
            _ => true,
        }
    }

    /// Returns how many bytes a read should fetch when `remaining` of the segment's `readable`
    /// bytes are left.
    ///
    /// A mapped file returns everything because it copies nothing. A plain file caps the amount,
    /// so that one read does not allocate the size of a segment.
    pub(super) fn window_len(&self, remaining: u64, readable: u64) -> usize {
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        match self.mapping(readable) {
            Some(_) => remaining,
            None => remaining.min(PLAIN_WINDOW),
        }
    }

    /// Returns the bytes at `pos..pos + len` of the file. `readable` is the segment's readable
    /// length, and the range must lie below it.
    ///
    /// A mapped file returns a slice of the mapping and leaves `scratch` alone; a plain file
    /// reads into `scratch` and returns a slice of it.
    pub(super) fn bytes<'a>(
        &'a self,
        pos: u64,
        len: usize,
        readable: u64,
        scratch: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        let end = pos.checked_add(len as u64).filter(|&end| end <= readable);
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("range {pos}+{len} is past the readable length {readable}"),
            ));
        }

        match self.mapping(readable) {
            Some(map) => mapped_slice(map, pos, len),
            None => {
                scratch.resize(len, 0);
                self.file.read_exact_at(scratch, pos)?;
                Ok(scratch)
            }
        }
    }

    /// Returns whether reads went through a memory map; false before the first read.
    #[cfg(test)]
    pub(super) fn is_mapped(&self) -> bool {
        matches!(self.map.get(), Some(Some(_)))
    }
}

/// Returns `map[pos..pos + len]`, or an error if the range does not lie inside the mapping.
/// The caller has checked the range against the segment's readable length.
fn mapped_slice(map: &MmapRaw, pos: u64, len: usize) -> io::Result<&[u8]> {
    // A segment that raises its readable length past its mapping closes the file, so the next
    // read maps the new length. This check fails only if that invariant breaks, and an error is
    // safer than reading past the mapping.
    if pos as u128 + len as u128 > map.len() as u128 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "readable range {pos}+{len} lies outside the mapping of {} bytes",
                map.len()
            ),
        ));
    }
    let start = pos as usize;

    // SAFETY: the range was checked against the readable length by `bytes` and against the
    // mapping just above, so the pointer arithmetic stays inside one mapping. The bytes are below
    // the readable length, which the file never shrinks below (contract 2) and which no writer
    // modifies (contracts 1 and 3), so they stay valid and unchanged for as long as the returned
    // slice borrows `map`. The mapping is not dropped while a slice borrows it (contract 5).
    // The slice covers only these bytes (contract 4).
    Ok(unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), len) })
}

/// Maps `len` bytes of `file` read-only, or logs why it cannot and returns `None`.
fn map_or_warn(file: &File, path: &Path, len: u64) -> Option<MmapRaw> {
    let Ok(len) = usize::try_from(len) else {
        tracing::warn!(path = %path.display(), len, "segment too large to map, using plain reads");
        return None;
    };
    match MmapOptions::new().len(len).map_raw_read_only(file) {
        Ok(map) => Some(map),
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                len,
                %error,
                "failed to map segment, using plain reads"
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("segment");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        file.write_all(bytes).unwrap();
        (dir, file, path)
    }

    #[test]
    fn both_modes_return_the_same_bytes() {
        for use_mmap in [true, false] {
            let (_dir, file, path) = file_with(b"0123456789");
            let segment = SegmentFile::new(file, &path, 4096, use_mmap);
            assert!(
                !segment.is_mapped(),
                "nothing is mapped before the first read"
            );
            let mut scratch = Vec::new();
            let bytes = segment.bytes(3, 4, 10, &mut scratch).unwrap();
            assert_eq!(bytes, b"3456");
            assert_eq!(segment.is_mapped(), use_mmap);
        }
    }

    #[test]
    fn bytes_past_readable_length_are_rejected() {
        for use_mmap in [true, false] {
            let (_dir, file, path) = file_with(b"0123456789");
            let segment = SegmentFile::new(file, &path, 4096, use_mmap);
            let mut scratch = Vec::new();
            let error = segment.bytes(4, 3, 6, &mut scratch).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn bytes_past_the_mapping_are_rejected() {
        let (_dir, file, path) = file_with(b"0123456789");
        let segment = SegmentFile::new(file, &path, 4, true);
        let mut scratch = Vec::new();
        segment.bytes(0, 4, 4, &mut scratch).unwrap();
        assert!(!segment.covers(10));
        let error = segment.bytes(2, 4, 10, &mut scratch).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn written_bytes_become_readable() {
        for use_mmap in [true, false] {
            let (_dir, file, path) = file_with(b"abc");
            let segment = SegmentFile::new(file, &path, 64, use_mmap);
            segment.file().write_all_at(b"defghijklmnop", 3).unwrap();
            let mut scratch = Vec::new();
            let bytes = segment.bytes(0, 16, 16, &mut scratch).unwrap();
            assert_eq!(bytes, b"abcdefghijklmnop");
        }
    }
}
