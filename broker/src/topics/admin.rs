//! Registry operations for the admin endpoint: deleting a topic, changing its retention, and
//! listing the topics that are on disk but not loaded.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use chorus_protocol::Topic;
use parking_lot::Mutex;

use super::{Position, Registry, TopicInner, TopicState};
use crate::config::Role;
use crate::storage::{LogConfig, RetentionOverride, StorageError, TopicFiles, TopicLog};

/// Reason a topic rejects publishes while it is being deleted.
const BEING_DELETED: &str = "the topic is being deleted";

/// Reason a topic's old state rejects publishes after it was deleted.
const DELETED: &str = "the topic was deleted";

/// A topic removed by [`Registry::delete`].
#[derive(Debug)]
pub(crate) struct RemovedTopic {
    /// The removed state. Subscriptions may still hold it until the caller ends them; it has
    /// no log and rejects publishes.
    pub(crate) state: Arc<TopicState>,
    /// Stream id and committed end the topic had.
    pub(crate) position: Position,
    /// Bytes of the segment files removed.
    pub(crate) bytes: u64,
}

/// A topic taken out of service for deletion.
struct TakenTopic {
    state: Arc<TopicState>,
    /// The log, or `None` when the topic was on disk but not loaded, so that `state` is a
    /// placeholder made for the deletion.
    log: Option<TopicLog>,
    /// The topic's failure before the deletion, restored if the deletion fails.
    failed: Option<String>,
}

impl Registry {
    /// Deletes a topic: removes it from the registry and deletes its log with
    /// [`TopicLog::delete`]. Returns `Ok(None)` when the topic has no log, loaded or on disk.
    ///
    /// The next publish creates the topic again under a new stream id, with offsets from 0.
    ///
    /// While the files are deleted, the registry keeps the topic's state with its log taken
    /// out and marked as failed, so that publishes are rejected and no worker opens the old
    /// files again. The log is taken out under the topic's lock, so no reader holds a slice of
    /// a segment when it is deleted. No lock is held while the files go, because removing large
    /// files can take a while.
    pub(crate) fn delete(&self, name: &Topic) -> Result<Option<RemovedTopic>, StorageError> {
        let Some(taken) = self.take_for_delete(name) else {
            return Ok(None);
        };
        let state = taken.state;
        let placeholder = taken.log.is_none();
        let log = match taken.log {
            Some(log) => log,
            None => match self.open_for_delete(name) {
                Ok(log) => log,
                Err(e) => {
                    self.remove_if_same(name, &state);
                    return Err(e);
                }
            },
        };

        let deleted = match log.delete() {
            Ok(deleted) => deleted,
            Err((e, log)) => {
                if placeholder {
                    // Closing the log first lets the topic load again on its next use.
                    drop(log);
                    self.remove_if_same(name, &state);
                } else {
                    let mut inner = state.inner.lock();
                    inner.log = Some(log);
                    inner.failed = taken.failed;
                }
                return Err(e);
            }
        };
        state.inner.lock().failed = Some(DELETED.to_owned());
        self.remove_if_same(name, &state);
        Ok(Some(RemovedTopic {
            state,
            position: Position {
                stream: deleted.stream_id,
                earliest: 0,
                end: deleted.end,
            },
            bytes: deleted.bytes,
        }))
    }

    /// Marks the topic as being deleted and takes its log out, or returns `None` when it has
    /// no log. An unloaded topic on disk gets a placeholder state without a log, which keeps
    /// it from being loaded until the deletion ends.
    fn take_for_delete(&self, name: &Topic) -> Option<TakenTopic> {
        let mut topics = self.topics.write();
        if let Some(state) = topics.get(name) {
            let mut inner = state.inner.lock();
            let log = inner.log.take()?;
            let failed = inner.failed.replace(BEING_DELETED.to_owned());
            inner.pending = None;
            inner.ready.clear();
            drop(inner);
            return Some(TakenTopic {
                state: state.clone(),
                log: Some(log),
                failed,
            });
        }
        if !self.data_dir.topic_exists(name) {
            return None;
        }
        let mut inner = TopicInner::new(None, self.workers);
        inner.failed = Some(BEING_DELETED.to_owned());
        let state = Arc::new(TopicState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            name: name.clone(),
            inner: Mutex::new(inner),
        });
        topics.insert(name.clone(), state.clone());
        Some(TakenTopic {
            state,
            log: None,
            failed: None,
        })
    }

    /// Opens the log of a topic that is on disk but was not loaded, only to delete it.
    fn open_for_delete(&self, name: &Topic) -> Result<TopicLog, StorageError> {
        let config = self.config.log_config_for(name);
        self.data_dir.open_topic(name, &config)
    }

    /// Removes the registry entry for `name` if it is still `state`.
    fn remove_if_same(&self, name: &Topic, state: &Arc<TopicState>) {
        let mut topics = self.topics.write();
        if topics.get(name).is_some_and(|s| Arc::ptr_eq(s, state)) {
            topics.remove(name);
        }
    }

    /// Returns every topic that has a log on disk but is not loaded, with its segment files.
    pub(crate) fn unloaded_on_disk(&self) -> Result<Vec<(Topic, TopicFiles)>, StorageError> {
        let on_disk = self.data_dir.list_topics()?;
        let unloaded: Vec<Topic> = {
            let topics = self.topics.read();
            on_disk
                .into_iter()
                .filter(|name| !topics.contains_key(name))
                .collect()
        };
        // A topic deleted since the listing has no files any more and is left out.
        Ok(unloaded
            .into_iter()
            .filter_map(|name| {
                let files = self.data_dir.topic_files(&name).ok()?;
                Some((name, files))
            })
            .collect())
    }
}

/// A change to one retention limit of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LimitChange {
    /// Keeps the limit as it is.
    Keep,
    /// Sets the limit; 0 removes it.
    Set(u64),
    /// Goes back to the limit of the configuration file.
    Configured,
}

impl LimitChange {
    fn apply(self, current: Option<u64>) -> Option<u64> {
        match self {
            LimitChange::Keep => current,
            LimitChange::Set(value) => Some(value),
            LimitChange::Configured => None,
        }
    }
}

/// Error from [`Registry::set_retention`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum RetentionError {
    /// The topic has no log, loaded or on disk.
    #[error("topic {0} not found; retention can be changed only on a topic that has comments")]
    NotFound(Topic),
    /// This node is a relay, which keeps no log.
    #[error(
        "this node is a relay and keeps no log, so it has no retention to change; change the \
         topic's retention at its origin"
    )]
    Relay,
    /// The topic's log failed and waits for a restart.
    #[error("topic {topic} is unavailable: {reason}")]
    Unavailable { topic: Topic, reason: String },
    /// Reading or writing the override file failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The retention of a topic after a change.
#[derive(Debug, Clone)]
pub(crate) struct RetentionInForce {
    /// The topic's log settings with the override applied.
    pub(crate) config: LogConfig,
    /// The override now stored.
    pub(crate) limits: RetentionOverride,
}

impl Registry {
    /// Returns the log settings of `name`: the configured ones, with the retention limits set at
    /// run time (see [`Registry::set_retention`]) in place of the configured limits.
    pub(crate) fn log_config_for(&self, name: &Topic) -> Result<LogConfig, StorageError> {
        let mut config = self.config.log_config_for(name);
        if let Some(limits) = self.data_dir.retention_override(name)? {
            limits.apply(&mut config);
        }
        Ok(config)
    }

    /// Returns the retention override stored for `name`; empty when it has none.
    pub(crate) fn retention_override(
        &self,
        name: &Topic,
    ) -> Result<RetentionOverride, StorageError> {
        Ok(self.data_dir.retention_override(name)?.unwrap_or_default())
    }

    /// Changes a topic's retention limits and stores them in the topic's directory, so that
    /// they outlive a restart. The retention thread applies them at its next check. A topic on
    /// disk that is not loaded is loaded first.
    pub(crate) fn set_retention(
        &self,
        name: &Topic,
        max_age_ms: LimitChange,
        max_bytes: LimitChange,
    ) -> Result<RetentionInForce, RetentionError> {
        if self.config.role == Role::Relay {
            return Err(RetentionError::Relay);
        }
        if !self.is_loaded(name) && !self.data_dir.topic_exists(name) {
            return Err(RetentionError::NotFound(name.clone()));
        }
        let topic = self.get(name)?;
        let mut inner = topic.inner.lock();
        if let Some(reason) = &inner.failed {
            return Err(RetentionError::Unavailable {
                topic: name.clone(),
                reason: reason.clone(),
            });
        }
        let Some(log) = inner.log.as_mut() else {
            return Err(RetentionError::NotFound(name.clone()));
        };
        // Read under the topic's lock, so two changes at once cannot lose one of them.
        let current = self.retention_override(name)?;
        let limits = RetentionOverride {
            retention_ms: max_age_ms.apply(current.retention_ms),
            retention_bytes: max_bytes.apply(current.retention_bytes),
        };
        let configured = self.config.log_config_for(name);
        log.set_retention_override(limits, &configured)?;
        Ok(RetentionInForce {
            config: log.config().clone(),
            limits,
        })
    }

    /// Returns the number of closed segments that recovery found damaged since the start.
    pub(crate) fn quarantined_segments(&self) -> u64 {
        self.data_dir.quarantined_segments()
    }

    fn is_loaded(&self, name: &Topic) -> bool {
        self.topics.read().contains_key(name)
    }
}
