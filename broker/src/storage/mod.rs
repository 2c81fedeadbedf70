//! The segment log: one append-only log of comment entries per topic.
//!
//! Entries are stored in exactly the layout they have inside an EVENTS frame
//! ([`chorus_protocol::event::encode_entry`]), so a run of stored entries becomes a frame with one
//! copy and no re-encoding. `spec/STORAGE.md` describes every file byte by byte, the durability
//! of each fsync policy, and what recovery does after a crash or a power loss.
//!
//! # Data directory
//!
//! ```text
//! <data>/LOCK                        exclusive lock held while a DataDir or TopicLog is alive
//! <data>/topics/<dir name>/          one directory per topic
//! <data>/topics/<dir name>/topic.meta
//! <data>/topics/<dir name>/deleted.offsets                 offsets of deleted comments
//! <data>/topics/<dir name>/topic.retention                retention limits set at run time
//! <data>/topics/<dir name>/00000000000000000000.log        a closed segment
//! <data>/topics/<dir name>/00000000000000000000.index      its sparse offset index
//! <data>/topics/<dir name>/00000000000000000000.timeindex  its sparse time index
//! <data>/topics/<dir name>/00000000000000004711.log        the active segment
//! <data>/trash/                      deleted topic directories, until their files are removed
//! ```
//!
//! A topic's directory name is the topic name with every `/` replaced by `+`. Topic names never
//! contain `+`, so the mapping is one to one and all topic directories sit side by side.
//!
//! # Segments
//!
//! A topic's log is split into segment files named after the offset of their first entry. Each
//! record is an entry with its length and a CRC-32 of its own. Offsets are consecutive across
//! segments. The active segment is closed, and a new one started, when the next record would
//! take it past `segment_bytes`. The same happens when that record's broker time is `segment_ms`
//! after the segment's first record, less a random per-topic jitter of up to a tenth of
//! `segment_ms`.
//! Closing a segment writes its offset and time index files; only closed segments are ever
//! deleted.
//!
//! # Recovery
//!
//! Opening a topic reads the index files of each closed segment instead of its records, when
//! their CRC and header match the segment file and the segment was either flushed before they
//! were written or written since the last boot. Every other segment, and always the active one,
//! is scanned: each record's length, CRC, entry layout and offset is checked. The log ends at
//! the first invalid or incomplete record, which is what a crash in the middle of a write
//! leaves behind; a closed segment damaged that way becomes the active segment and the segments
//! after it are deleted. Reads check each record's CRC again, so a record damaged later is
//! reported as [`StorageError::Corrupt`] and never returned.
//!
//! # Reads
//!
//! Readers see only entries below [`TopicLog::committed_offset`]. By default committed bytes are
//! read through memory maps (see the `mmap` module for the contract that keeps them sound);
//! `use_mmap = false` in [`LogConfig`] reads with positioned reads instead.
//! [`TopicLog::offset_for_time`] finds where a read from a broker time starts.
//!
//! # Open files
//!
//! Segments do not keep their files open. Every read, append and sync takes the file from a
//! cache shared by all topics of the [`DataDir`]. The cache keeps at most
//! [`FileCacheConfig::max_open_files`] open, lowered to a quarter of the soft `RLIMIT_NOFILE`.
//! It closes the least recently used file first, and files unused for
//! [`FileCacheConfig::idle_close`]. A closed file opens again on its next use.
//!
//! # Retention
//!
//! [`TopicLog::enforce_retention`] deletes the oldest closed segments past `retention_ms` or
//! `retention_bytes`, [`TopicLog::roll_if_due`] closes an active segment that aged without new
//! entries, and [`TopicLog::delete`] removes a whole topic. The broker calls them from a
//! background thread.

mod config;
mod data_dir;
mod deleted;
mod error;
mod file_cache;
mod index;
mod index_file;
mod log;
mod meta;
mod mmap;
mod pattern;
mod recovery;
mod retention;
mod retention_override;
mod segment;

pub use config::{FsyncPolicy, LogConfig, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
pub use data_dir::{DataDir, TopicFiles};
pub use deleted::{DeletedOffsets, DELETED_FILE};
pub use error::StorageError;
pub use file_cache::{
    effective_max_open_files, FileCacheConfig, DEFAULT_IDLE_CLOSE, DEFAULT_MAX_OPEN_FILES,
    NOFILE_SHARE_DIVISOR,
};
pub use log::{ReadSummary, TopicLog};
pub use pattern::{PatternError, TopicPattern};
pub use retention::{DeletedTopic, RetentionReport};
pub use retention_override::RetentionOverride;
