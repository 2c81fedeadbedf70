//! The per-topic metadata file, which stores the stream id.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use rand::Rng;

use super::error::StorageError;
use super::segment::sync_dir;

/// Name of the metadata file inside a topic directory.
pub(super) const META_FILE: &str = "topic.meta";

/// Name of the file a new metadata file is written to before it is renamed into place.
pub(super) const META_TMP_FILE: &str = "topic.meta.tmp";

const META_MAGIC: &[u8; 6] = b"CHRTOP";
const META_VERSION: u16 = 1;
const META_LEN: usize = 6 + 2 + 8 + 2 + 4;

/// Returns a random stream id, which is never zero.
pub(super) fn new_stream_id() -> u64 {
    rand::thread_rng().gen_range(1..=u64::MAX)
}

/// Reads the stream id from the metadata file in `dir`, or returns `None` if the file is missing.
pub(super) fn read_stream_id(dir: &Path) -> Result<Option<u64>, StorageError> {
    let path = dir.join(META_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| StorageError::corrupt(&path, 0, reason))
}

/// Writes a metadata file holding `stream_id` into `dir`, atomically: the file appears complete
/// or not at all, even after a power loss.
pub(super) fn write_stream_id(dir: &Path, stream_id: u64) -> Result<(), StorageError> {
    let tmp = dir.join(META_TMP_FILE);
    let path = dir.join(META_FILE);

    let mut file = File::create(&tmp).map_err(StorageError::io("create", &tmp))?;
    file.write_all(&encode(stream_id))
        .map_err(StorageError::io("write", &tmp))?;
    file.sync_all().map_err(StorageError::io("fsync", &tmp))?;
    drop(file);

    fs::rename(&tmp, &path).map_err(StorageError::io("rename into place", &path))?;
    sync_dir(dir)
}

fn encode(stream_id: u64) -> [u8; META_LEN] {
    let mut bytes = [0u8; META_LEN];
    bytes[..6].copy_from_slice(META_MAGIC);
    bytes[6..8].copy_from_slice(&META_VERSION.to_be_bytes());
    bytes[8..16].copy_from_slice(&stream_id.to_be_bytes());
    let crc = crc32fast::hash(&bytes[..META_LEN - 4]);
    bytes[META_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<u64, String> {
    if bytes.len() != META_LEN {
        return Err(format!(
            "metadata file is {} bytes, expected {META_LEN}",
            bytes.len()
        ));
    }
    if &bytes[..6] != META_MAGIC {
        return Err("not a chorus topic metadata file: wrong magic".to_owned());
    }
    let mut crc = [0u8; 4];
    crc.copy_from_slice(&bytes[META_LEN - 4..]);
    if u32::from_be_bytes(crc) != crc32fast::hash(&bytes[..META_LEN - 4]) {
        return Err("metadata file CRC does not match its contents".to_owned());
    }
    let version = u16::from_be_bytes([bytes[6], bytes[7]]);
    if version != META_VERSION {
        return Err(format!(
            "metadata format version {version} is not supported; this build reads version \
             {META_VERSION}"
        ));
    }
    let mut stream_id = [0u8; 8];
    stream_id.copy_from_slice(&bytes[8..16]);
    match u64::from_be_bytes(stream_id) {
        0 => Err("metadata file holds stream id 0, which is never assigned".to_owned()),
        id => Ok(id),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        write_stream_id(dir.path(), 0xdead_beef).unwrap();
        assert_eq!(read_stream_id(dir.path()).unwrap(), Some(0xdead_beef));
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_stream_id(dir.path()).unwrap(), None);
    }

    #[test]
    fn temporary_file_is_gone_after_write() {
        let dir = tempfile::tempdir().unwrap();
        write_stream_id(dir.path(), 7).unwrap();
        assert!(!dir.path().join(META_TMP_FILE).exists());
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        write_stream_id(dir.path(), 7).unwrap();
        let path = dir.path().join(META_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1;
        fs::write(&path, bytes).unwrap();
        let error = read_stream_id(dir.path()).unwrap_err();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn new_stream_ids_are_nonzero() {
        for _ in 0..1000 {
            assert_ne!(new_stream_id(), 0);
        }
    }
}
