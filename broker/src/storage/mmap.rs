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
//! 2. **No truncation below the readable length.** Recovery truncates a segment before it is
//!    mapped. After that the only truncation is the rollback of a failed write, which cuts bytes
//!    at or above the readable length only.
//! 3. **Readable bytes are immutable.** [`SegmentView`] tracks a readable length. The log writes
//!    only at or above it and raises it with [`SegmentView::publish`] after a write completes, so
//!    bytes below it never change again.
//! 4. **Only readable bytes are referenced.** [`SegmentView::bytes`] checks every range against
//!    the readable length before it forms a slice, and no reference ever spans the rest of the
//!    mapping. The mapping may be longer than the file (see below); its pages past the end of
//!    the file are never touched.
//! 5. **No slice outlives its mapping.** A mapping is dropped only with its [`SegmentView`]:
//!    when the log closes, when retention deletes the segment, or when the topic is deleted.
//!    Each of these takes the [`super::TopicLog`] by `&mut` or by value, while every slice
//!    borrows it shared, so the borrow checker rules out a slice at that moment (in the broker,
//!    readers and retention also take the same topic lock). Retention unlinks the file before
//!    it drops the mapping, which is fine on Linux: an unlinked file keeps its pages until its
//!    last mapping and descriptor are gone, so the mapped bytes stay valid and unchanged.
//!
//! The active segment grows after it is mapped. Rather than remapping on every commit, the view
//! maps the full segment size up front (address space only: the file is not extended, so its
//! length stays the true end of the data and recovery needs no special case). Writes through the
//! file descriptor are visible through a shared mapping because both go through the page cache.
//! A remap happens only when a segment outgrows its mapping, which only a record larger than the
//! segment size can cause.
//!
//! If mapping fails (for example when the process reaches `vm.max_map_count`), the view logs a
//! warning and falls back to positioned reads for that segment.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use memmap2::{MmapOptions, MmapRaw};

/// Maximum bytes fetched by one positioned read when the caller did not ask for a larger range.
const PLAIN_WINDOW: usize = 256 * 1024;

/// Read access to the first `readable` bytes of one segment file.
#[derive(Debug)]
pub(super) struct SegmentView {
    readable: u64,
    map: Option<MmapRaw>,
}

impl SegmentView {
    /// Creates a view of the first `readable` bytes of `file`. With `use_mmap`, maps `reserve`
    /// bytes (at least `readable`) so that the file can grow that far without a remap.
    pub(super) fn new(
        file: &File,
        path: &Path,
        readable: u64,
        reserve: u64,
        use_mmap: bool,
    ) -> SegmentView {
        let map = if use_mmap {
            map_or_warn(file, path, reserve.max(readable))
        } else {
            None
        };
        SegmentView { readable, map }
    }

    /// Returns the number of bytes readers may access.
    pub(super) fn readable(&self) -> u64 {
        self.readable
    }

    /// Makes the first `readable` bytes accessible. The caller has finished writing them and will
    /// never write below this length again.
    pub(super) fn publish(&mut self, file: &File, path: &Path, readable: u64, reserve: u64) {
        debug_assert!(
            readable >= self.readable,
            "the readable length never shrinks"
        );
        let outgrown = self
            .map
            .as_ref()
            .is_some_and(|map| (map.len() as u64) < readable);
        if outgrown {
            // Unmap before mapping again. No slice of the old mapping can exist here, because
            // `bytes` borrows `self` and this method takes `&mut self`.
            self.map = None;
            self.map = map_or_warn(file, path, reserve.max(readable));
        }
        self.readable = readable;
    }

    /// Returns how many bytes a read should fetch when `remaining` readable bytes are left.
    ///
    /// A mapped view returns everything because it copies nothing. A plain view caps the amount,
    /// so that one read does not allocate the size of a segment.
    pub(super) fn window_len(&self, remaining: u64) -> usize {
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        match self.map {
            Some(_) => remaining,
            None => remaining.min(PLAIN_WINDOW),
        }
    }

    /// Returns the bytes at `pos..pos + len` of the file, which must be readable.
    ///
    /// A mapped view returns a slice of the mapping and leaves `scratch` alone; a plain view
    /// reads into `scratch` and returns a slice of it.
    pub(super) fn bytes<'a>(
        &'a self,
        file: &File,
        pos: u64,
        len: usize,
        scratch: &'a mut Vec<u8>,
    ) -> io::Result<&'a [u8]> {
        let end = pos
            .checked_add(len as u64)
            .filter(|&end| end <= self.readable);
        if end.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {pos}+{len} is past the readable length {}",
                    self.readable
                ),
            ));
        }

        match &self.map {
            Some(map) => Ok(mapped_slice(map, pos, len)),
            None => {
                scratch.resize(len, 0);
                file.read_exact_at(scratch, pos)?;
                Ok(scratch)
            }
        }
    }

    /// Returns whether reads go through a memory map.
    #[cfg(test)]
    pub(super) fn is_mapped(&self) -> bool {
        self.map.is_some()
    }
}

/// Returns `map[pos..pos + len]`. The range must lie below the view's readable length, which is
/// at most the mapping's length.
fn mapped_slice(map: &MmapRaw, pos: u64, len: usize) -> &[u8] {
    // The readable length never exceeds the mapping: `new` maps at least `readable` bytes and
    // `publish` remaps before raising it. An unmapped view has no `MmapRaw` at all.
    assert!(
        pos as u128 + len as u128 <= map.len() as u128,
        "readable range {pos}+{len} lies outside the mapping of {} bytes",
        map.len()
    );
    let start = pos as usize;

    // SAFETY: the range was checked against the readable length by `bytes` and against the
    // mapping just above, so the pointer arithmetic stays inside one mapping. The bytes are below
    // the readable length, which the file never shrinks below (contract 2) and which no writer
    // modifies (contracts 1 and 3), so they stay valid and unchanged for as long as the returned
    // slice borrows `map`. The mapping is not dropped while a slice borrows it (contract 5).
    // The slice covers only these bytes (contract 4).
    unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), len) }
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

    fn file_with(bytes: &[u8]) -> (tempfile::TempDir, File, std::path::PathBuf) {
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
        let (_dir, file, path) = file_with(b"0123456789");
        for use_mmap in [true, false] {
            let view = SegmentView::new(&file, &path, 10, 4096, use_mmap);
            assert_eq!(view.is_mapped(), use_mmap);
            let mut scratch = Vec::new();
            let bytes = view.bytes(&file, 3, 4, &mut scratch).unwrap();
            assert_eq!(bytes, b"3456");
        }
    }

    #[test]
    fn bytes_past_readable_length_are_rejected() {
        let (_dir, file, path) = file_with(b"0123456789");
        for use_mmap in [true, false] {
            let view = SegmentView::new(&file, &path, 6, 4096, use_mmap);
            let mut scratch = Vec::new();
            let error = view.bytes(&file, 4, 3, &mut scratch).unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn published_bytes_become_readable() {
        for use_mmap in [true, false] {
            let (_dir, mut file, path) = file_with(b"abc");
            let mut view = SegmentView::new(&file, &path, 3, 8, use_mmap);
            file.write_all(b"defghijklmnop").unwrap();
            view.publish(&file, &path, 16, 8);
            let mut scratch = Vec::new();
            let bytes = view.bytes(&file, 0, 16, &mut scratch).unwrap();
            assert_eq!(bytes, b"abcdefghijklmnop");
        }
    }
}
