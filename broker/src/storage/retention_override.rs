//! Retention limits set on one topic while the broker runs, stored in the topic directory so
//! that they outlive a restart.
//!
//! The file `topic.retention` contains the limits that replace the configured ones. A limit the
//! file does not set keeps following the configuration file. Deleting the topic deletes the
//! file with it, so a topic created again under the same name starts with the configured
//! limits.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use chorus_protocol::topic::Topic;

use super::config::LogConfig;
use super::data_dir::DataDir;
use super::error::StorageError;
use super::log::TopicLog;
use super::segment::sync_dir;

/// Name of the retention override file inside a topic directory.
pub(super) const RETENTION_FILE: &str = "topic.retention";

/// Name of the file a new override is written to before it is renamed into place.
pub(super) const RETENTION_TMP_FILE: &str = "topic.retention.tmp";

const MAGIC: &[u8; 6] = b"CHRRET";
const VERSION: u16 = 1;
/// Magic, version, a flags byte, two u64 limits and a CRC-32.
const FILE_LEN: usize = 6 + 2 + 1 + 8 + 8 + 4;

/// Bit of the flags byte that marks `retention_ms` as set.
const HAS_AGE: u8 = 1;
/// Bit of the flags byte that marks `retention_bytes` as set.
const HAS_BYTES: u8 = 2;

/// Retention limits of one topic that replace the configured ones. `None` keeps the configured
/// value; `Some(0)` removes the limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionOverride {
    /// Replaces [`LogConfig::retention_ms`].
    pub retention_ms: Option<u64>,
    /// Replaces [`LogConfig::retention_bytes`].
    pub retention_bytes: Option<u64>,
}

impl RetentionOverride {
    /// Returns whether neither limit is set, so that the override changes nothing.
    pub fn is_empty(&self) -> bool {
        self.retention_ms.is_none() && self.retention_bytes.is_none()
    }

    /// Replaces the retention limits of `config` with the ones this override sets.
    pub fn apply(&self, config: &mut LogConfig) {
        if let Some(ms) = self.retention_ms {
            config.retention_ms = ms;
        }
        if let Some(bytes) = self.retention_bytes {
            config.retention_bytes = bytes;
        }
    }
}

impl DataDir {
    /// Reads the retention override of `topic`, or returns `None` when it has none.
    pub fn retention_override(
        &self,
        topic: &Topic,
    ) -> Result<Option<RetentionOverride>, StorageError> {
        read(&self.topic_dir(topic))
    }
}

impl TopicLog {
    /// Stores `limits` as the topic's retention override and applies them on top of
    /// `configured`, the topic's settings from the configuration file. An empty override
    /// removes the file, so the configured limits apply again.
    ///
    /// The next call of [`TopicLog::enforce_retention`] uses the new limits. On error the
    /// limits in force stay as they were.
    pub fn set_retention_override(
        &mut self,
        limits: RetentionOverride,
        configured: &LogConfig,
    ) -> Result<(), StorageError> {
        if limits.is_empty() {
            remove(&self.dir)?;
        } else {
            write(&self.dir, &limits)?;
        }
        self.config.retention_ms = configured.retention_ms;
        self.config.retention_bytes = configured.retention_bytes;
        limits.apply(&mut self.config);
        Ok(())
    }
}

/// Reads the override file in `dir`, or returns `None` when it is missing.
pub(super) fn read(dir: &Path) -> Result<Option<RetentionOverride>, StorageError> {
    let path = dir.join(RETENTION_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StorageError::io("read", &path)(e)),
    };
    decode(&bytes)
        .map(Some)
        .map_err(|reason| StorageError::corrupt(&path, 0, reason))
}

/// Writes the override file into `dir` atomically: a crash leaves the old file or the new one,
/// never a mix.
fn write(dir: &Path, limits: &RetentionOverride) -> Result<(), StorageError> {
    let tmp = dir.join(RETENTION_TMP_FILE);
    let path = dir.join(RETENTION_FILE);

    let mut file = File::create(&tmp).map_err(StorageError::io("create", &tmp))?;
    file.write_all(&encode(limits))
        .map_err(StorageError::io("write", &tmp))?;
    file.sync_all().map_err(StorageError::io("fsync", &tmp))?;
    drop(file);

    fs::rename(&tmp, &path).map_err(StorageError::io("rename into place", &path))?;
    sync_dir(dir)
}

fn remove(dir: &Path) -> Result<(), StorageError> {
    let path = dir.join(RETENTION_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(dir),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StorageError::io("remove", &path)(e)),
    }
}

fn encode(limits: &RetentionOverride) -> [u8; FILE_LEN] {
    let mut flags = 0;
    if limits.retention_ms.is_some() {
        flags |= HAS_AGE;
    }
    if limits.retention_bytes.is_some() {
        flags |= HAS_BYTES;
    }
    let mut bytes = [0u8; FILE_LEN];
    bytes[..6].copy_from_slice(MAGIC);
    bytes[6..8].copy_from_slice(&VERSION.to_be_bytes());
    bytes[8] = flags;
    bytes[9..17].copy_from_slice(&limits.retention_ms.unwrap_or(0).to_be_bytes());
    bytes[17..25].copy_from_slice(&limits.retention_bytes.unwrap_or(0).to_be_bytes());
    let crc = crc32fast::hash(&bytes[..FILE_LEN - 4]);
    bytes[FILE_LEN - 4..].copy_from_slice(&crc.to_be_bytes());
    bytes
}

fn decode(bytes: &[u8]) -> Result<RetentionOverride, String> {
    if bytes.len() != FILE_LEN {
        return Err(format!(
            "retention file is {} bytes, expected {FILE_LEN}",
            bytes.len()
        ));
    }
    if &bytes[..6] != MAGIC {
        return Err("not a chorus retention file: wrong magic".to_owned());
    }
    let crc = u32::from_be_bytes([bytes[25], bytes[26], bytes[27], bytes[28]]);
    if crc != crc32fast::hash(&bytes[..FILE_LEN - 4]) {
        return Err("retention file CRC does not match its contents".to_owned());
    }
    let version = u16::from_be_bytes([bytes[6], bytes[7]]);
    if version != VERSION {
        return Err(format!(
            "retention file format version {version} is not supported; this build reads \
             version {VERSION}"
        ));
    }
    let flags = bytes[8];
    if flags & !(HAS_AGE | HAS_BYTES) != 0 {
        return Err(format!("retention file has unknown flags {flags:#04x}"));
    }
    let value = |at: usize| {
        let mut field = [0u8; 8];
        field.copy_from_slice(&bytes[at..at + 8]);
        u64::from_be_bytes(field)
    };
    Ok(RetentionOverride {
        retention_ms: (flags & HAS_AGE != 0).then(|| value(9)),
        retention_bytes: (flags & HAS_BYTES != 0).then(|| value(17)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RetentionOverride {
            retention_ms: Some(7_200_000),
            retention_bytes: None,
        };
        write(dir.path(), &limits).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(limits));
    }

    #[test]
    fn zero_limit_is_kept_apart_from_unset() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RetentionOverride {
            retention_ms: Some(0),
            retention_bytes: Some(1 << 30),
        };
        write(dir.path(), &limits).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(limits));
    }

    #[test]
    fn missing_file_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
    }

    #[test]
    fn flipped_bit_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let limits = RetentionOverride {
            retention_ms: Some(1000),
            retention_bytes: Some(2000),
        };
        write(dir.path(), &limits).unwrap();
        let path = dir.path().join(RETENTION_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[12] ^= 1;
        fs::write(&path, bytes).unwrap();
        let error = read(dir.path()).unwrap_err();
        assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
    }

    #[test]
    fn remove_of_missing_file_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        remove(dir.path()).unwrap();
        assert!(!dir.path().join(RETENTION_FILE).exists());
    }

    #[test]
    fn apply_replaces_only_set_limits() {
        let mut config = LogConfig {
            retention_ms: 1000,
            retention_bytes: 5000,
            ..LogConfig::default()
        };
        let limits = RetentionOverride {
            retention_ms: None,
            retention_bytes: Some(0),
        };
        limits.apply(&mut config);
        assert_eq!(config.retention_ms, 1000);
        assert_eq!(config.retention_bytes, 0);
    }
}
