//! Topics shared by all workers: their logs, pending batches and which workers want them.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use chorus_protocol::event::{encode_entry, EventsFrameBuilder};
use chorus_protocol::Topic;
use parking_lot::{Mutex, RwLock};

use crate::compress::CompressedCopy;
use crate::config::{Config, Role};
use crate::moderation::TopicPublishers;
use crate::relay::RelayTopic;
use crate::storage::{DataDir, DeletedOffsets, StorageError, TopicLog};

pub(crate) mod admin;

/// A batch of consecutive comments, encoded once as an EVENTS frame and shared by every
/// subscriber of the topic.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// Offset of the first comment in the frame.
    pub(crate) first: u64,
    /// Offset after the last comment in the frame.
    pub(crate) end: u64,
    /// The encoded frame.
    pub(crate) frame: Bytes,
    /// When the first comment of the frame was appended, for the delivery latency metric. At a
    /// relay, when the frame arrived from upstream.
    pub(crate) appended: Instant,
    /// Stream id the frame carries.
    pub(crate) stream: u64,
    /// The EVENTS_ZSTD copy of `frame`, made when a connection that negotiated it first needs
    /// it and shared by every clone.
    pub(crate) compressed: CompressedCopy,
}

/// One topic, as seen by every worker.
#[derive(Debug)]
pub(crate) struct TopicState {
    /// Process-wide number that names the topic in worker-local maps.
    pub(crate) id: u64,
    pub(crate) name: Topic,
    pub(crate) inner: Mutex<TopicInner>,
}

/// The part of a topic that changes, behind its lock.
#[derive(Debug)]
pub(crate) struct TopicInner {
    /// The log, opened when the topic is first published to or found on disk.
    pub(crate) log: Option<TopicLog>,
    /// Comments appended but not yet committed, encoded as a frame in progress.
    pending: Option<EventsFrameBuilder>,
    /// First offset of `pending`.
    pending_first: u64,
    /// When the first comment of `pending` was appended.
    pending_since: Instant,
    /// Committed batches not yet handed to the workers.
    pub(crate) ready: Vec<Batch>,
    /// Number of subscriptions per worker, indexed by worker number.
    pub(crate) interest: Vec<u32>,
    /// Set when a commit failed; further publishes are rejected until restart.
    pub(crate) failed: Option<String>,
    last_time_us: u64,
    /// Upstream state and edge cache, on a relay; a relay topic never has a log.
    pub(crate) relay: Option<RelayTopic>,
    /// Offsets of deleted comments, loaded from the log's directory on first use.
    pub(crate) deleted: Option<DeletedOffsets>,
    /// Recent publishers of the topic, for slow mode and duplicate suppression.
    pub(crate) publishers: TopicPublishers,
}

/// Position of a topic when a subscription starts: stream id, earliest offset and end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Position {
    pub(crate) stream: u64,
    pub(crate) earliest: u64,
    /// Offset after the last committed comment.
    pub(crate) end: u64,
}

impl TopicInner {
    pub(crate) fn new(log: Option<TopicLog>, workers: usize) -> TopicInner {
        TopicInner {
            log,
            pending: None,
            pending_first: 0,
            pending_since: Instant::now(),
            ready: Vec::new(),
            interest: vec![0; workers],
            failed: None,
            last_time_us: 0,
            relay: None,
            deleted: None,
            publishers: TopicPublishers::default(),
        }
    }

    /// Returns the stream id, earliest offset and committed end; all zero before the first
    /// publish. At a relay, returns the position of the edge cache.
    pub(crate) fn position(&self) -> Position {
        match &self.log {
            Some(log) => Position {
                stream: log.stream_id(),
                earliest: log.earliest_offset(),
                end: log.committed_offset(),
            },
            None => match &self.relay {
                Some(relay) => relay.position(),
                None => Position {
                    stream: 0,
                    earliest: 0,
                    end: 0,
                },
            },
        }
    }

    /// Appends one entry to the log buffer and to the pending batch, and returns its offset.
    ///
    /// `flags` is the entry's flags byte (bits of [`chorus_protocol::event::flags`]), such as
    /// `PRIORITY` for a comment of a moderator or `TOMBSTONE` for a deletion. The entry becomes
    /// visible to readers and subscribers at the next [`Self::commit`].
    pub(crate) fn append(
        &mut self,
        name: &Topic,
        publisher: &str,
        payload: &[u8],
        flags: u8,
        max_batch_bytes: usize,
        scratch: &mut BytesMut,
    ) -> Result<u64, LogError> {
        // Broker time never goes backwards within a topic, even if the wall clock does.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let time_us = now.max(self.last_time_us);

        let offset = self.log.as_ref().ok_or(LogError::NotOpen)?.next_offset();
        scratch.clear();
        encode_entry(scratch, offset, time_us, flags, publisher, payload);

        // A full batch is committed before this comment joins the log buffer, so that the
        // committed end and the end of the ready batches stay equal.
        let full = self
            .pending
            .as_ref()
            .is_some_and(|p| p.len() + scratch.len() > max_batch_bytes);
        if full {
            self.commit()?;
        }

        let log = self.log.as_mut().ok_or(LogError::NotOpen)?;
        log.append(scratch)?;
        self.last_time_us = time_us;

        let stream = log.stream_id();
        let pending = self
            .pending
            .get_or_insert_with(|| EventsFrameBuilder::new(name, stream, 16 * 1024));
        if pending.is_empty() {
            self.pending_first = offset;
            self.pending_since = Instant::now();
        }
        pending.push_encoded(scratch).map_err(LogError::Entry)?;
        Ok(offset)
    }

    /// Writes buffered comments to the log under its durability policy and moves the pending
    /// batch to `ready`. Returns the committed end offset.
    pub(crate) fn commit(&mut self) -> Result<u64, LogError> {
        let log = self.log.as_mut().ok_or(LogError::NotOpen)?;
        let end = log.commit()?;
        let stream = log.stream_id();
        if let Some(pending) = self.pending.take() {
            if let Some(last) = pending.last_offset() {
                self.ready.push(Batch {
                    first: self.pending_first,
                    end: last + 1,
                    frame: pending.finish(),
                    appended: self.pending_since,
                    stream,
                    compressed: CompressedCopy::default(),
                });
            }
        }
        Ok(end)
    }
}

/// Error from appending or committing a comment.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LogError {
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The topic has no log yet; the caller must open it first.
    #[error("topic log is not open")]
    NotOpen,
    /// An encoded entry was rejected; this points to a bug in the broker.
    #[error("invalid entry: {0}")]
    Entry(chorus_protocol::DecodeError),
    /// An earlier commit failed, and the topic takes no appends until restart.
    #[error("topic log failed earlier: {0}")]
    Failed(String),
}

/// All topics known to this process.
#[derive(Debug)]
pub(crate) struct Registry {
    data_dir: DataDir,
    /// Source of each topic's log settings, through [`Config::log_config_for`].
    config: Config,
    workers: usize,
    topics: RwLock<HashMap<Topic, Arc<TopicState>>>,
    next_id: AtomicU64,
}

impl Registry {
    pub(crate) fn new(data_dir: DataDir, config: Config, workers: usize) -> Registry {
        Registry {
            data_dir,
            config,
            workers,
            topics: RwLock::new(HashMap::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// Returns the topic, loading its log from disk if it has one.
    ///
    /// A topic without a log on disk is held in memory only, so that subscribing to a topic
    /// nobody has published to yet writes nothing to the disk.
    pub(crate) fn get(&self, name: &Topic) -> Result<Arc<TopicState>, StorageError> {
        if let Some(topic) = self.topics.read().get(name) {
            return Ok(topic.clone());
        }
        let mut topics = self.topics.write();
        if let Some(topic) = topics.get(name) {
            return Ok(topic.clone());
        }
        let relay = self.config.role == Role::Relay;
        let log = if !relay && self.data_dir.topic_exists(name) {
            Some(
                self.data_dir
                    .open_topic(name, &self.log_config_for(name)?)?,
            )
        } else {
            None
        };
        let mut inner = TopicInner::new(log, self.workers);
        if relay {
            inner.relay = Some(RelayTopic::new(&self.config.relay));
        }
        let topic = Arc::new(TopicState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.clone(),
            inner: Mutex::new(inner),
        });
        topics.insert(name.clone(), topic.clone());
        Ok(topic)
    }

    /// Opens or creates the topic's log on disk; called under the topic's lock before the first
    /// append.
    pub(crate) fn ensure_log(
        &self,
        topic: &TopicState,
        inner: &mut TopicInner,
    ) -> Result<(), StorageError> {
        if inner.log.is_none() {
            let config = self.log_config_for(&topic.name)?;
            inner.log = Some(self.data_dir.open_topic(&topic.name, &config)?);
        }
        Ok(())
    }

    /// Returns the data directory that the topic logs live in.
    pub(crate) fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Returns every topic loaded so far.
    pub(crate) fn loaded(&self) -> Vec<Arc<TopicState>> {
        self.topics.read().values().cloned().collect()
    }

    /// Returns the topic if it is loaded, without loading or creating it.
    pub(crate) fn find(&self, name: &Topic) -> Option<Arc<TopicState>> {
        self.topics.read().get(name).cloned()
    }

    /// Appends a record that the broker writes itself, such as a viewer count, with an empty
    /// publisher and no flags, opening the topic's log first if needed. Returns its offset; the
    /// caller commits the topic.
    pub(crate) fn append_internal(
        &self,
        topic: &TopicState,
        payload: &[u8],
        max_batch_bytes: usize,
        scratch: &mut BytesMut,
    ) -> Result<u64, LogError> {
        let mut inner = topic.inner.lock();
        if let Some(reason) = &inner.failed {
            return Err(LogError::Failed(reason.clone()));
        }
        self.ensure_log(topic, &mut inner)?;
        inner.append(&topic.name, "", payload, 0, max_batch_bytes, scratch)
    }
}
