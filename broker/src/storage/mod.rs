//! The segment log: one append-only log of comment entries per topic.
//!
//! Entries are stored in exactly the layout they have inside an EVENTS frame
//! ([`chorus_protocol::event::encode_entry`]), so a run of stored entries becomes a frame with one
//! copy and no re-encoding.
//!
//! # Data directory
//!
//! ```text
//! <data>/LOCK                        exclusive lock held while a DataDir or TopicLog is alive
//! <data>/topics/<dir name>/          one directory per topic
//! <data>/topics/<dir name>/topic.meta
//! <data>/topics/<dir name>/00000000000000000000.log
//! ```
//!
//! A topic's directory name is the topic name with every `/` replaced by `+`. Topic names never
//! contain `+`, so the mapping is one to one and all topic directories sit side by side.
//!
//! # `topic.meta`
//!
//! 22 bytes, all integers big-endian, written once when the topic is created (to a temporary
//! file, synced, renamed into place, then the directory is synced):
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..6 | magic `CHRTOP` |
//! | 6..8 | format version `u16`, currently 1 |
//! | 8..16 | stream id `u64`, random and nonzero |
//! | 16..18 | reserved `u16`, zero |
//! | 18..22 | CRC-32 (IEEE, as computed by `crc32fast`) `u32` of bytes 0..18 |
//!
//! # Segment files
//!
//! A topic's log is split into segment files named after the offset of their first entry, as 20
//! zero-padded decimal digits followed by `.log`. Each file starts with a 16-byte header:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..6 | magic `CHRSEG` |
//! | 6..8 | format version `u16`, currently 1 |
//! | 8..16 | base offset `u64`, equal to the number in the file name |
//!
//! Records follow back to back, with nothing between them:
//!
//! | bytes | field |
//! | --- | --- |
//! | 0..4 | entry length `u32` |
//! | 4..8 | CRC-32 `u32` of the entry bytes |
//! | 8.. | the entry, in the wire layout, starting with its offset `u64` |
//!
//! Offsets are consecutive: the first record of a segment carries the base offset, each later
//! record the previous offset plus one, and each segment starts where the previous one ends.
//! A segment is closed when the next record would take it past the configured size. A record
//! larger than that size gets a segment of its own.
//!
//! # Recovery
//!
//! Opening a topic scans every segment in full and checks each record's length, CRC, entry layout
//! and offset. The last segment is cut at its first invalid or incomplete record, which is what a
//! crash in the middle of a write leaves behind. A warning reports how many bytes were dropped.
//! An invalid record in any earlier segment is reported as [`StorageError::Corrupt`], because a
//! segment is synced before the next one is created.
//!
//! NOTE: with `fsync = "never"` nothing is synced on a roll, so after a power loss the kernel
//! may have written a later segment but not the end of an earlier one. Opening such a topic
//! fails with [`StorageError::Corrupt`] and needs manual repair.
//!
//! The scan also builds each segment's sparse offset index, which is kept in memory only: one
//! (offset, file position) pair per `index_interval_bytes` of records.
//!
//! # Reads
//!
//! Readers see only entries below [`TopicLog::committed_offset`]. By default committed bytes are
//! read through memory maps (see the `mmap` module for the contract that keeps them sound);
//! `use_mmap = false` in [`LogConfig`] reads with positioned reads instead.

mod config;
mod data_dir;
mod error;
mod log;
mod meta;
mod mmap;
mod recovery;
mod segment;

pub use config::{FsyncPolicy, LogConfig, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES};
pub use data_dir::DataDir;
pub use error::StorageError;
pub use log::{ReadSummary, TopicLog};
