//! Errors of the segment log.

use std::io;
use std::path::{Path, PathBuf};

use chorus_protocol::topic::Topic;
use chorus_protocol::DecodeError;

/// An error from the data directory or a topic log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// A file system operation failed.
    #[error("failed to {op} {path}: {source}", path = path.display())]
    Io {
        /// The operation, such as "open" or "fdatasync".
        op: &'static str,
        /// The file or directory operated on.
        path: PathBuf,
        /// The error from the operating system.
        #[source]
        source: io::Error,
    },

    /// Another process, or another [`super::DataDir`] in this process, has locked the data
    /// directory.
    #[error(
        "data directory lock {path} is held by another chorusd process or another open data \
         directory handle; stop the other process or use a different data directory",
        path = path.display()
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },

    /// The topic already has an open [`super::TopicLog`] in this process.
    #[error("topic {topic} is already open; a topic log may have only one owner at a time")]
    TopicInUse {
        /// The topic.
        topic: Topic,
    },

    /// A file contains data that the log did not write, or that changed after it was written.
    #[error("corrupt data in {path} at byte {position}: {reason}", path = path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte position of the damage within the file.
        position: u64,
        /// Description of the damage.
        reason: String,
    },

    /// An appended entry does not carry the offset the log expects next.
    #[error("entry has offset {got}, but the next offset of the log is {expected}")]
    OffsetMismatch {
        /// The offset the log expects.
        expected: u64,
        /// The offset in the entry.
        got: u64,
    },

    /// A read asked for an offset outside the stored range.
    #[error(
        "offset {requested} is outside the log, which holds offsets {earliest} up to but not \
         including {end}"
    )]
    OffsetOutOfRange {
        /// The requested offset.
        requested: u64,
        /// The oldest stored offset.
        earliest: u64,
        /// The committed offset: one past the newest readable entry.
        end: u64,
    },

    /// An appended entry is not one well-formed wire entry.
    #[error("invalid entry: {0}")]
    InvalidEntry(#[source] DecodeError),

    /// An appended entry is too long for the record length field.
    #[error("entry is {len} bytes, the maximum is {max}", max = u32::MAX)]
    EntryTooLarge {
        /// The entry's length in bytes.
        len: usize,
    },

    /// A [`super::LogConfig`] value is out of range.
    #[error("invalid log configuration: {0}")]
    InvalidConfig(String),

    /// A commit wrote only part of the buffered entries. The log contains every entry below
    /// `committed`, and the remaining buffered entries were discarded and must be appended again.
    #[error(
        "commit stopped at offset {committed} and discarded {discarded} buffered entries: \
         {source}"
    )]
    CommitFailed {
        /// The committed offset after the failure.
        committed: u64,
        /// The number of buffered entries that were discarded.
        discarded: u64,
        /// What failed.
        #[source]
        source: Box<StorageError>,
    },

    /// The log stopped accepting writes after an earlier failure left the file in an unknown
    /// state. Reads of committed entries still work; reopening the topic runs recovery.
    #[error(
        "log in {path} stopped accepting writes after an earlier write or sync failure; \
         reopen the topic to recover it",
        path = path.display()
    )]
    Failed {
        /// The topic directory.
        path: PathBuf,
    },
}

impl StorageError {
    /// Builds a closure that wraps an [`io::Error`] with the operation and path.
    pub(super) fn io<'a>(
        op: &'static str,
        path: &'a Path,
    ) -> impl FnOnce(io::Error) -> StorageError + 'a {
        move |source| StorageError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Builds a [`StorageError::Corrupt`].
    pub(super) fn corrupt(path: &Path, position: u64, reason: impl Into<String>) -> StorageError {
        StorageError::Corrupt {
            path: path.to_path_buf(),
            position,
            reason: reason.into(),
        }
    }
}
