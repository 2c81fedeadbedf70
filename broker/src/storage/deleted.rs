//! The deleted comments of one topic: a small append-only file of offsets in the topic directory.
//!
//! `spec/STORAGE.md` describes the file byte by byte. Each record is the offset of one deleted
//! comment, as a big-endian u64, followed by a big-endian CRC-32 of those 8 bytes. Loading stops
//! at the first short or damaged record, which is what a crash in the middle of an append leaves
//! behind, and the next append overwrites it.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io;
use std::ops::RangeBounds;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::StorageError;
use super::log::TopicLog;
use super::segment::sync_dir;

/// Name of the file in the topic directory.
pub const DELETED_FILE: &str = "deleted.offsets";

/// Bytes of one record: the offset and its CRC-32.
const RECORD_LEN: usize = 8 + 4;

/// The offsets of a topic's deleted comments, loaded from the topic directory.
#[derive(Debug)]
pub struct DeletedOffsets {
    path: PathBuf,
    offsets: BTreeSet<u64>,
    /// Length of the valid records in the file; appends start here.
    valid_len: u64,
}

impl DeletedOffsets {
    /// Loads the deleted offsets of the topic whose directory is `dir`. A missing file means
    /// that no comment was deleted.
    pub fn load(dir: &Path) -> Result<DeletedOffsets, StorageError> {
        let path = dir.join(DELETED_FILE);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io("read", &path)(e)),
        };
        let (offsets, valid_len) = parse_records(&bytes);
        if valid_len < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                valid_bytes = valid_len,
                file_bytes = bytes.len(),
                "ignoring a damaged or incomplete record at the end of the deleted offsets file"
            );
        }
        Ok(DeletedOffsets {
            path,
            offsets,
            valid_len: valid_len as u64,
        })
    }

    /// Returns whether the comment at `offset` was deleted.
    pub fn contains(&self, offset: u64) -> bool {
        self.offsets.contains(&offset)
    }

    /// Returns the deleted offsets in `range`, in increasing order.
    pub fn range(&self, range: impl RangeBounds<u64>) -> impl Iterator<Item = u64> + '_ {
        self.offsets.range(range).copied()
    }

    /// Returns the number of deleted offsets.
    pub fn len(&self) -> usize {
        self.offsets.len()
    }

    /// Returns whether no comment was deleted.
    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Appends `offsets` to the file and flushes it to the disk, then adds them to the set.
    ///
    /// On error the set is unchanged. Offsets already in the set are written again, which is
    /// harmless, so callers filter them out only to save bytes.
    pub fn record(&mut self, offsets: &[u64]) -> Result<(), StorageError> {
        if offsets.is_empty() {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity(offsets.len() * RECORD_LEN);
        for &offset in offsets {
            bytes.extend_from_slice(&encode_record(offset));
        }
        let created = !self.path.exists();
        let file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&self.path)
            .map_err(StorageError::io("open", &self.path))?;
        // A damaged tail from a crash is cut off, so the new records follow the valid ones.
        file.set_len(self.valid_len)
            .map_err(StorageError::io("truncate", &self.path))?;
        file.write_all_at(&bytes, self.valid_len)
            .map_err(StorageError::io("write", &self.path))?;
        file.sync_data()
            .map_err(StorageError::io("fdatasync", &self.path))?;
        if created {
            if let Some(dir) = self.path.parent() {
                sync_dir(dir)?;
            }
        }
        self.valid_len += bytes.len() as u64;
        self.offsets.extend(offsets.iter().copied());
        Ok(())
    }
}

impl TopicLog {
    /// Loads the offsets of the topic's deleted comments from its directory.
    pub fn load_deleted(&self) -> Result<DeletedOffsets, StorageError> {
        DeletedOffsets::load(&self.dir)
    }
}

fn encode_record(offset: u64) -> [u8; RECORD_LEN] {
    let value = offset.to_be_bytes();
    let mut record = [0u8; RECORD_LEN];
    record[..8].copy_from_slice(&value);
    record[8..].copy_from_slice(&crc32fast::hash(&value).to_be_bytes());
    record
}

/// Returns the offsets of the valid records at the start of `bytes`, and their length in bytes.
fn parse_records(bytes: &[u8]) -> (BTreeSet<u64>, usize) {
    let mut offsets = BTreeSet::new();
    let mut valid = 0;
    for record in bytes.chunks_exact(RECORD_LEN) {
        let (value, crc) = record.split_at(8);
        let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32fast::hash(value) != stored {
            break;
        }
        let mut offset = [0u8; 8];
        offset.copy_from_slice(value);
        offsets.insert(u64::from_be_bytes(offset));
        valid += RECORD_LEN;
    }
    (offsets, valid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_has_no_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let deleted = DeletedOffsets::load(dir.path()).unwrap();
        assert!(deleted.is_empty());
    }

    #[test]
    fn recorded_offsets_survive_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let mut deleted = DeletedOffsets::load(dir.path()).unwrap();
        deleted.record(&[7, 3]).unwrap();
        deleted.record(&[12]).unwrap();
        let reloaded = DeletedOffsets::load(dir.path()).unwrap();
        assert_eq!(reloaded.range(..).collect::<Vec<_>>(), vec![3, 7, 12]);
    }

    #[test]
    fn damaged_tail_is_ignored_and_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let mut deleted = DeletedOffsets::load(dir.path()).unwrap();
        deleted.record(&[5]).unwrap();
        let path = dir.path().join(DELETED_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9, 1, 2]);
        fs::write(&path, &bytes).unwrap();

        let mut reloaded = DeletedOffsets::load(dir.path()).unwrap();
        assert_eq!(reloaded.range(..).collect::<Vec<_>>(), vec![5]);
        reloaded.record(&[6]).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 2 * RECORD_LEN as u64);
        let again = DeletedOffsets::load(dir.path()).unwrap();
        assert_eq!(again.range(..).collect::<Vec<_>>(), vec![5, 6]);
    }

    #[test]
    fn record_with_wrong_crc_ends_the_load() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&encode_record(1));
        let mut bad = encode_record(2);
        bad[11] ^= 0xff;
        bytes.extend_from_slice(&bad);
        bytes.extend_from_slice(&encode_record(3));
        let (offsets, valid) = parse_records(&bytes);
        assert_eq!(offsets.into_iter().collect::<Vec<_>>(), vec![1]);
        assert_eq!(valid, RECORD_LEN);
    }

    #[test]
    fn range_lists_offsets_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut deleted = DeletedOffsets::load(dir.path()).unwrap();
        deleted.record(&[9, 2, 5]).unwrap();
        assert_eq!(deleted.range(3..).collect::<Vec<_>>(), vec![5, 9]);
        assert!(deleted.contains(2));
        assert!(!deleted.contains(3));
    }
}
