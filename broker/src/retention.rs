//! The background thread that keeps topic logs within their limits and bounds the `interval`
//! fsync window.
//!
//! Every `storage.retention_check_interval_ms` it visits each topic: it deletes a topic that
//! had no publish for `topic_idle_delete_ms` and has no subscriber, closes an active segment
//! that aged without new comments, and deletes the closed segments past `retention_ms` or
//! `retention_bytes`. Topics on disk that no client has touched since the start are opened only
//! when their files' sizes and modification times show that there may be work.
//!
//! Between checks it syncs every topic whose `interval` fsync is due, because a commit syncs
//! only when a publish arrives: without this thread, comments acknowledged just before a topic
//! went quiet would stay unsynced indefinitely.
//!
//! All work on a topic happens under the topic's lock, the same lock that reads and commits
//! take, so no reader holds a slice of a segment while it is deleted.

use std::collections::HashSet;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_protocol::Topic;
use parking_lot::{Condvar, Mutex};
use tracing::{debug, error, info};

use crate::config::{Config, Role};
use crate::server::Shared;
use crate::storage::{DataDir, FsyncPolicy, LogConfig, StorageError, TopicFiles};
use crate::topics::{TopicInner, TopicState};

/// Shortest wait between two sync passes, so that a tiny fsync interval cannot make the thread
/// spin.
const MIN_SYNC_POLL: Duration = Duration::from_millis(1);

/// The running retention thread; stopped by [`RetentionThread::stop`].
#[derive(Debug)]
pub(crate) struct RetentionThread {
    control: Arc<Control>,
    thread: JoinHandle<()>,
}

/// Wakes the thread early when it must stop.
#[derive(Debug, Default)]
struct Control {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl RetentionThread {
    /// Starts the thread. `data_dir` lists the topics on disk, and `shared` contains the loaded
    /// ones.
    pub(crate) fn start(shared: Arc<Shared>, data_dir: DataDir) -> io::Result<RetentionThread> {
        let control = Arc::new(Control::default());
        let worker = Retention::new(shared, data_dir);
        let thread_control = Arc::clone(&control);
        let thread = std::thread::Builder::new()
            .name("chorusd-retention".to_owned())
            .spawn(move || worker.run(&thread_control))?;
        Ok(RetentionThread { control, thread })
    }

    /// Stops the thread and waits for it to finish the topic it is working on.
    pub(crate) fn stop(self) {
        *self.control.stopped.lock() = true;
        self.control.wake.notify_all();
        if self.thread.join().is_err() {
            error!("the retention thread panicked");
        }
    }
}

impl Control {
    fn is_stopped(&self) -> bool {
        *self.stopped.lock()
    }

    /// Waits until `deadline` or until the thread is stopped; returns whether it is stopped.
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut stopped = self.stopped.lock();
        while !*stopped && Instant::now() < deadline {
            self.wake.wait_until(&mut stopped, deadline);
        }
        *stopped
    }
}

/// State of the retention thread.
struct Retention {
    shared: Arc<Shared>,
    data_dir: DataDir,
    check_interval: Duration,
    /// How often to look for topics whose `interval` fsync is due; `None` when no topic uses
    /// that policy.
    sync_poll: Option<Duration>,
    /// Operations that failed on their last attempt, as (topic or path, operation), so that
    /// an error that repeats every check is logged once.
    failing: HashSet<(String, &'static str)>,
}

impl Retention {
    fn new(shared: Arc<Shared>, data_dir: DataDir) -> Retention {
        let config = &shared.config;
        Retention {
            check_interval: Duration::from_millis(config.storage.retention_check_interval_ms),
            sync_poll: sync_poll_interval(config),
            data_dir,
            failing: HashSet::new(),
            shared,
        }
    }

    fn run(mut self, control: &Control) {
        info!(
            check_interval_ms = self.check_interval.as_millis() as u64,
            "retention thread started"
        );
        let mut next_check = Instant::now();
        loop {
            if Instant::now() >= next_check {
                self.check_all(control);
                next_check = Instant::now() + self.check_interval;
            }
            let mut wake = next_check;
            if let Some(deadline) = self.sync_due_topics() {
                wake = wake.min(deadline);
            }
            if let Some(poll) = self.sync_poll {
                wake = wake.min(Instant::now() + poll);
            }
            if control.wait_until(wake) {
                break;
            }
        }
        info!("retention thread stopped");
    }

    /// Applies retention to every loaded topic, and to every topic on disk that may need it.
    /// Stops early when the thread is stopped.
    fn check_all(&mut self, control: &Control) {
        // Opening a segment file also closes idle ones, but an idle broker opens none.
        self.data_dir.close_idle_files();
        let now_us = now_us();
        self.load_topics_with_work(now_us, control);
        for topic in self.shared.registry.loaded() {
            if control.is_stopped() {
                return;
            }
            let mut inner = topic.inner.lock();
            self.check_topic(&topic, &mut inner, now_us);
        }
    }

    /// Opens the topics on disk that are not loaded yet and whose files show work: an idle
    /// topic to delete, a segment past retention, or files past the size limit.
    ///
    /// NOTE: this lists every unloaded topic's directory at every check, which costs one
    /// `stat` per segment file of those topics.
    fn load_topics_with_work(&mut self, now_us: u64, control: &Control) {
        // A relay opens no log from disk, so loading its topics would do nothing.
        if self.shared.config.role == Role::Relay {
            return;
        }
        let topics = match self.data_dir.list_topics() {
            Ok(topics) => topics,
            Err(e) => {
                let path = self.data_dir.path().display().to_string();
                self.report(&path, "list topics", Err(e));
                return;
            }
        };
        let loaded: HashSet<Topic> = self
            .shared
            .registry
            .loaded()
            .iter()
            .map(|t| t.name.clone())
            .collect();
        for topic in topics.into_iter().filter(|t| !loaded.contains(t)) {
            if control.is_stopped() {
                return;
            }
            // The limits may have been changed at run time, which the topic's directory records.
            let config = match self.shared.registry.log_config_for(&topic) {
                Ok(config) => config,
                Err(e) => {
                    self.report(topic.as_str(), "read the retention override", Err(e));
                    continue;
                }
            };
            let has_work = self
                .data_dir
                .topic_files(&topic)
                .is_ok_and(|files| files_need_work(&config, &files, now_us));
            if has_work {
                let result = self.shared.registry.get(&topic).map(drop);
                self.report(topic.as_str(), "open", result);
            }
        }
    }

    fn check_topic(&mut self, topic: &TopicState, inner: &mut TopicInner, now_us: u64) {
        // A failed log waits for a restart, and recovery, before anything else touches it.
        let usable = inner.failed.is_none() && inner.log.as_ref().is_some_and(|l| !l.is_failed());
        if !usable {
            return;
        }
        if is_idle(inner, now_us) {
            self.delete_topic(topic, inner);
            return;
        }
        let Some(log) = inner.log.as_mut() else {
            return;
        };
        let rolled = log.roll_if_due(now_us).map(drop);
        let enforced = log.enforce_retention(now_us).map(drop);
        let name = topic.name.as_str();
        self.report(name, "close an aged segment", rolled);
        self.report(name, "delete segments past retention", enforced);
    }

    /// Deletes an idle topic's log; the next publish creates the topic again with a new stream
    /// id.
    fn delete_topic(&mut self, topic: &TopicState, inner: &mut TopicInner) {
        let Some(log) = inner.log.take() else {
            return;
        };
        let idle_ms = log.config().topic_idle_delete_ms;
        let last_write_us = log.last_write_time_us();
        match log.delete() {
            Ok(_) => {
                info!(
                    topic = %topic.name,
                    idle_ms,
                    last_write_us,
                    "deleted a topic that had no publish for its idle period"
                );
                self.report(topic.name.as_str(), "delete an idle topic", Ok(()));
            }
            Err((e, log)) => {
                inner.log = Some(log);
                self.report(topic.name.as_str(), "delete an idle topic", Err(e));
            }
        }
    }

    /// Syncs every loaded topic whose `interval` fsync is due, and returns the earliest time
    /// at which another topic's becomes due.
    fn sync_due_topics(&mut self) -> Option<Instant> {
        self.sync_poll?;
        let mut earliest: Option<Instant> = None;
        for topic in self.shared.registry.loaded() {
            let mut inner = topic.inner.lock();
            let Some(log) = inner.log.as_mut() else {
                continue;
            };
            if log.is_failed() {
                continue;
            }
            let synced = log.sync_if_due().map(drop);
            let deadline = log.sync_deadline();
            drop(inner);
            self.report(topic.name.as_str(), "sync", synced);
            if let Some(deadline) = deadline {
                earliest = Some(earliest.map_or(deadline, |e| e.min(deadline)));
            }
        }
        earliest
    }

    /// Logs a failed operation on `topic` (or a path) once until it succeeds again.
    fn report(&mut self, topic: &str, op: &'static str, result: Result<(), StorageError>) {
        let key = (topic.to_owned(), op);
        match result {
            Ok(()) => {
                if self.failing.remove(&key) {
                    info!(topic, op, "retention operation works again");
                }
            }
            Err(e) if self.failing.insert(key) => {
                error!(topic, op, error = %e, "retention operation failed; retrying at every check");
            }
            Err(e) => debug!(topic, op, error = %e, "retention operation failed again"),
        }
    }
}

/// Returns whether a topic may be deleted as idle: deletion is configured, nothing was appended
/// for the idle period, no subscriber on this broker follows it, and no comment waits to be
/// committed or delivered.
fn is_idle(inner: &TopicInner, now_us: u64) -> bool {
    let Some(log) = inner.log.as_ref() else {
        return false;
    };
    let idle_us = log.config().topic_idle_delete_ms.saturating_mul(1000);
    if idle_us == 0 || now_us.saturating_sub(log.last_write_time_us()) < idle_us {
        return false;
    }
    let subscribed = inner.interest.iter().any(|&count| count > 0);
    let pending = log.next_offset() != log.committed_offset() || !inner.ready.is_empty();
    !subscribed && !pending
}

/// Returns whether the files of a topic that is not loaded suggest retention work. Segment
/// modification times stand in for the broker times of their newest records.
fn files_need_work(config: &LogConfig, files: &TopicFiles, now_us: u64) -> bool {
    let idle_us = config.topic_idle_delete_ms.saturating_mul(1000);
    let retention_us = config.retention_ms.saturating_mul(1000);
    let idle = idle_us > 0 && now_us.saturating_sub(files.newest_modified_us) >= idle_us;
    let aged = retention_us > 0
        && files.segments > 0
        && now_us.saturating_sub(files.oldest_modified_us) > retention_us;
    let oversized =
        config.retention_bytes > 0 && files.segments > 1 && files.bytes > config.retention_bytes;
    idle || aged || oversized
}

/// Returns how often to look for due `interval` syncs: a quarter of the shortest interval
/// configured, so that a comment waits at most about 1.25 intervals for its sync.
fn sync_poll_interval(config: &Config) -> Option<Duration> {
    let broker = config.log_config();
    let overrides = config
        .storage
        .topics
        .iter()
        .map(|t| config.storage.log_config_with(Some(t)));
    std::iter::once(broker)
        .chain(overrides)
        .filter_map(|c| match c.fsync {
            FsyncPolicy::Interval(interval) => Some(interval),
            _ => None,
        })
        .min()
        .map(|interval| (interval / 4).max(MIN_SYNC_POLL))
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(segments: usize, bytes: u64, oldest_s: u64, newest_s: u64) -> TopicFiles {
        TopicFiles {
            segments,
            bytes,
            oldest_modified_us: oldest_s * 1_000_000,
            newest_modified_us: newest_s * 1_000_000,
        }
    }

    /// One million seconds after the epoch; the file times above are in seconds.
    const NOW_US: u64 = 1_000_000 * 1_000_000;

    #[test]
    fn fresh_files_need_no_work() {
        let config = LogConfig::default();
        assert!(!files_need_work(
            &config,
            &files(3, 1000, 999_000, 999_990),
            NOW_US
        ));
    }

    #[test]
    fn old_first_segment_needs_work() {
        let config = LogConfig {
            retention_ms: 60_000,
            ..LogConfig::default()
        };
        assert!(files_need_work(
            &config,
            &files(2, 1000, 999_000, 999_990),
            NOW_US
        ));
    }

    #[test]
    fn idle_topic_needs_work() {
        let config = LogConfig {
            retention_ms: 0,
            topic_idle_delete_ms: 5_000,
            ..LogConfig::default()
        };
        assert!(files_need_work(
            &config,
            &files(1, 100, 999_990, 999_990),
            NOW_US
        ));
    }

    #[test]
    fn oversized_topic_needs_work_only_with_closed_segments() {
        let config = LogConfig {
            retention_ms: 0,
            retention_bytes: 500,
            ..LogConfig::default()
        };
        assert!(files_need_work(
            &config,
            &files(2, 1000, 999_990, 999_990),
            NOW_US
        ));
        assert!(!files_need_work(
            &config,
            &files(1, 1000, 999_990, 999_990),
            NOW_US
        ));
    }

    #[test]
    fn sync_poll_follows_shortest_interval() {
        let text = r#"
            [storage]
            fsync = "interval"
            fsync_interval_ms = 1000
            [[storage.topics]]
            pattern = "fast/**"
            fsync_interval_ms = 200
        "#;
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(sync_poll_interval(&config), Some(Duration::from_millis(50)));
    }

    #[test]
    fn sync_poll_is_off_without_interval_policy() {
        assert_eq!(sync_poll_interval(&Config::default()), None);
    }
}
