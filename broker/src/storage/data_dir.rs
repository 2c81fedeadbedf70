//! The locked data directory and the mapping from topic names to topic directories.

use std::collections::HashSet;
use std::fs::{self, File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use chorus_protocol::topic::Topic;
use parking_lot::Mutex;

use super::config::LogConfig;
use super::error::StorageError;
use super::file_cache::{effective_max_open_files, nofile_soft_limit, FileCache, FileCacheConfig};
use super::log::TopicLog;
use super::meta::META_FILE;
use super::retention::TRASH_DIR;
use super::segment::{parse_segment_file_name, sync_dir};

/// Name of the lock file in the data directory.
const LOCK_FILE: &str = "LOCK";

/// Name of the directory that contains one directory per topic.
const TOPICS_DIR: &str = "topics";

/// The broker's data directory, locked against every other user while this value, any clone of
/// it, or any [`TopicLog`] opened from it is alive.
#[derive(Debug, Clone)]
pub struct DataDir {
    shared: Arc<Shared>,
}

/// State shared by a [`DataDir`] and the topic logs opened from it. The lock on the data
/// directory lasts until the last of them is dropped.
#[derive(Debug)]
pub(super) struct Shared {
    root: PathBuf,
    topics: PathBuf,
    /// Open file that carries the exclusive lock; closing it releases the lock.
    _lock: File,
    open_topics: Mutex<HashSet<Topic>>,
    /// Open segment files of every topic, within the budget of open files.
    files: Arc<FileCache>,
    /// Closed segments that recovery found damaged since the directory was opened.
    quarantined_segments: AtomicU64,
}

/// The segment files of a topic, as [`DataDir::topic_files`] finds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicFiles {
    /// Number of segment files.
    pub segments: usize,
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Modification time of the segment with the lowest base offset, in microseconds since the
    /// Unix epoch: about the broker time of its newest record.
    pub oldest_modified_us: u64,
    /// Latest modification time of any segment file, in microseconds since the Unix epoch.
    pub newest_modified_us: u64,
}

/// Proof that a topic has exactly one open [`TopicLog`] in this process; releases the topic when
/// dropped.
#[derive(Debug)]
pub(super) struct TopicClaim {
    shared: Arc<Shared>,
    topic: Topic,
}

impl DataDir {
    /// Opens the data directory at `path`, creating it if missing, and takes an exclusive lock on
    /// `<path>/LOCK`.
    ///
    /// The lock is held until this value and every topic log opened from it are dropped. If
    /// another process or another `DataDir` in this process has it, returns
    /// [`StorageError::Locked`].
    pub fn open(path: &Path) -> Result<DataDir, StorageError> {
        DataDir::open_with(path, FileCacheConfig::default())
    }

    /// Opens the data directory like [`DataDir::open`], keeping at most
    /// `files.max_open_files` segment files open across all topics.
    ///
    /// That budget is lowered to a quarter of the process's soft `RLIMIT_NOFILE` when that is
    /// smaller, so that most descriptors stay free for client connections. The limit is read
    /// now, so a caller that raises it does so first.
    pub fn open_with(path: &Path, files: FileCacheConfig) -> Result<DataDir, StorageError> {
        fs::create_dir_all(path).map_err(StorageError::io("create directory", path))?;

        let lock_path = path.join(LOCK_FILE);
        let lock = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(StorageError::io("open", &lock_path))?;
        lock_exclusive(&lock, &lock_path)?;

        let topics = path.join(TOPICS_DIR);
        match fs::create_dir(&topics) {
            Ok(()) => sync_dir(path)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(StorageError::io("create directory", &topics)(e)),
        }
        empty_trash(&path.join(TRASH_DIR));

        let shared = Shared {
            root: path.to_path_buf(),
            topics,
            _lock: lock,
            open_topics: Mutex::new(HashSet::new()),
            files: Arc::new(open_file_cache(files)),
            quarantined_segments: AtomicU64::new(0),
        };
        Ok(DataDir {
            shared: Arc::new(shared),
        })
    }

    /// Returns the number of closed segments that recovery found damaged in the middle since
    /// this directory was opened. Recovery cuts each such log at the damage and moves what
    /// follows into the topic's `quarantine` directory.
    pub fn quarantined_segments(&self) -> u64 {
        self.shared.quarantined_segments.load(Ordering::Relaxed)
    }

    /// Returns the number of segment files open now, across all topics. Reads in progress may
    /// keep a few more open for their duration.
    pub fn open_segment_files(&self) -> usize {
        self.shared.files.open_files()
    }

    /// Returns the maximum number of segment files kept open at once, after the limit on
    /// descriptors was applied.
    pub fn max_open_segment_files(&self) -> usize {
        self.shared.files.max_open()
    }

    /// Closes the segment files that no append or read used for the idle time, and returns how
    /// many it closed. Opening a file does this too, so a caller needs it only while no topic
    /// is used, for example from a timer.
    pub fn close_idle_files(&self) -> usize {
        self.shared.files.close_idle_files()
    }

    /// Returns the path the directory was opened with.
    pub fn path(&self) -> &Path {
        &self.shared.root
    }

    /// Returns the directory of `topic`: `<data>/topics/<topic with '/' replaced by '+'>`.
    ///
    /// Topic names never contain `+`, so distinct topics get distinct directories, and a valid
    /// topic name contains no `.`-led segment, so the result never leaves `<data>/topics`.
    pub fn topic_dir(&self, topic: &Topic) -> PathBuf {
        let dir = self.shared.topics.join(topic.as_str().replace('/', "+"));
        debug_assert_eq!(dir.parent(), Some(self.shared.topics.as_path()));
        dir
    }

    /// Returns whether `topic` has been created, that is, whether its metadata file exists.
    pub fn topic_exists(&self, topic: &Topic) -> bool {
        self.topic_dir(topic).join(META_FILE).is_file()
    }

    /// Returns every created topic, sorted by name.
    ///
    /// Logs a warning and skips directory entries whose names do not map back to a valid topic
    /// name. Skips topic directories without a metadata file, which a crash during topic creation
    /// leaves behind and which [`DataDir::open_topic`] completes.
    pub fn list_topics(&self) -> Result<Vec<Topic>, StorageError> {
        let topics_dir = &self.shared.topics;
        let entries = fs::read_dir(topics_dir).map_err(StorageError::io("list", topics_dir))?;
        let mut topics = Vec::new();
        for entry in entries {
            let entry = entry.map_err(StorageError::io("list", topics_dir))?;
            if let Some(topic) = topic_from_dir_name(&entry.path()) {
                if entry.path().join(META_FILE).is_file() {
                    topics.push(topic);
                }
            }
        }
        topics.sort_unstable();
        Ok(topics)
    }

    /// Returns what the segment files of `topic` take on disk, from a directory listing and file
    /// metadata only, without opening the topic. Lets a caller decide whether a topic that is
    /// not open needs retention work.
    pub fn topic_files(&self, topic: &Topic) -> Result<TopicFiles, StorageError> {
        let dir = self.topic_dir(topic);
        let entries = fs::read_dir(&dir).map_err(StorageError::io("list", &dir))?;
        let mut files = TopicFiles::default();
        let mut oldest_base = u64::MAX;
        for entry in entries {
            let entry = entry.map_err(StorageError::io("list", &dir))?;
            let Some(base) = parse_segment_file_name(&entry.file_name().to_string_lossy()) else {
                continue;
            };
            let metadata = entry
                .metadata()
                .map_err(StorageError::io("read metadata of", &entry.path()))?;
            let modified_us = metadata
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_micros() as u64);
            files.segments += 1;
            files.bytes += metadata.len();
            files.newest_modified_us = files.newest_modified_us.max(modified_us);
            if base < oldest_base {
                oldest_base = base;
                files.oldest_modified_us = modified_us;
            }
        }
        Ok(files)
    }

    /// Opens the log of `topic`, creating the topic if it does not exist and recovering its
    /// segments if it does.
    ///
    /// Returns [`StorageError::TopicInUse`] if the topic's log is already open in this process.
    pub fn open_topic(&self, topic: &Topic, config: &LogConfig) -> Result<TopicLog, StorageError> {
        config.validate()?;
        let claim = TopicClaim::new(&self.shared, topic)?;
        TopicLog::open(claim, self.topic_dir(topic), config)
    }
}

/// Creates the file cache, with the budget lowered to a share of the descriptor limit.
fn open_file_cache(config: FileCacheConfig) -> FileCache {
    let nofile = nofile_soft_limit();
    let max_open = match nofile {
        Some(limit) => effective_max_open_files(config.max_open_files, limit),
        None => config.max_open_files.max(1),
    };
    if max_open < config.max_open_files {
        tracing::info!(
            configured = config.max_open_files,
            max_open,
            nofile_limit = nofile,
            "lowered max_open_files to a quarter of the open-file limit"
        );
    }
    FileCache::new(max_open, config.idle_close)
}

/// Takes the exclusive lock on the open lock file, failing at once if another holder has it.
fn lock_exclusive(lock: &File, path: &Path) -> Result<(), StorageError> {
    match lock.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(StorageError::Locked {
            path: path.to_path_buf(),
        }),
        Err(TryLockError::Error(e)) => Err(StorageError::io("lock", path)(e)),
    }
}

/// Removes what deleted topics left in the trash directory, logging what fails: leftovers only
/// take space.
fn empty_trash(trash: &Path) {
    let Ok(entries) = fs::read_dir(trash) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match fs::remove_dir_all(&path) {
            Ok(()) => tracing::info!(path = %path.display(), "removed a deleted topic's files"),
            Err(error) => tracing::warn!(
                path = %path.display(),
                %error,
                "failed to remove a deleted topic's files"
            ),
        }
    }
}

/// Maps a topic directory back to its topic, or logs why it cannot.
fn topic_from_dir_name(path: &Path) -> Option<Topic> {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        tracing::warn!(path = %path.display(), "ignoring non-UTF-8 entry in the topics directory");
        return None;
    };
    match Topic::new(name.replace('+', "/")) {
        Ok(topic) => Some(topic),
        Err(error) => {
            tracing::warn!(
                path = %path.display(),
                %error,
                "ignoring entry in the topics directory that is not a valid topic"
            );
            None
        }
    }
}

impl TopicClaim {
    fn new(shared: &Arc<Shared>, topic: &Topic) -> Result<TopicClaim, StorageError> {
        if !shared.open_topics.lock().insert(topic.clone()) {
            return Err(StorageError::TopicInUse {
                topic: topic.clone(),
            });
        }
        Ok(TopicClaim {
            shared: Arc::clone(shared),
            topic: topic.clone(),
        })
    }

    /// Returns the claimed topic.
    pub(super) fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Counts a closed segment of this topic that recovery found damaged.
    pub(super) fn count_quarantined_segment(&self) {
        self.shared
            .quarantined_segments
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Returns the cache of open segment files, shared by every topic of the data directory.
    pub(super) fn file_cache(&self) -> &Arc<FileCache> {
        &self.shared.files
    }

    /// Returns the directory that deleted topic directories are moved to.
    pub(super) fn trash_dir(&self) -> PathBuf {
        self.shared.root.join(TRASH_DIR)
    }
}

impl Drop for TopicClaim {
    fn drop(&mut self) {
        self.shared.open_topics.lock().remove(&self.topic);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    #[test]
    fn topic_dir_replaces_slashes() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let expected = tmp.path().join("topics").join("a+b");
        assert_eq!(data.topic_dir(&topic("a/b")), expected);
    }

    #[test]
    fn second_open_is_locked() {
        let tmp = tempfile::tempdir().unwrap();
        let _first = DataDir::open(tmp.path()).unwrap();
        let error = DataDir::open(tmp.path()).unwrap_err();
        match error {
            StorageError::Locked { path } => assert_eq!(path, tmp.path().join("LOCK")),
            other => panic!("expected Locked, got {other}"),
        }
    }

    #[test]
    fn lock_is_released_after_drop() {
        let tmp = tempfile::tempdir().unwrap();
        drop(DataDir::open(tmp.path()).unwrap());
        assert!(DataDir::open(tmp.path()).is_ok());
    }

    #[test]
    fn open_topic_keeps_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let log = data.open_topic(&topic("t"), &LogConfig::default()).unwrap();
        drop(data);
        assert!(matches!(
            DataDir::open(tmp.path()),
            Err(StorageError::Locked { .. })
        ));
        drop(log);
        assert!(DataDir::open(tmp.path()).is_ok());
    }

    #[test]
    fn topic_opens_once_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let first = data.open_topic(&topic("t"), &LogConfig::default()).unwrap();
        let second = data.open_topic(&topic("t"), &LogConfig::default());
        assert!(matches!(second, Err(StorageError::TopicInUse { .. })));
        drop(first);
        assert!(data.open_topic(&topic("t"), &LogConfig::default()).is_ok());
    }

    #[test]
    fn list_topics_skips_invalid_names() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        drop(
            data.open_topic(&topic("a/b"), &LogConfig::default())
                .unwrap(),
        );
        fs::create_dir(tmp.path().join("topics").join("bad name")).unwrap();
        fs::create_dir(tmp.path().join("topics").join("a++c")).unwrap();
        assert_eq!(data.list_topics().unwrap(), vec![topic("a/b")]);
    }

    #[test]
    fn list_topics_skips_directories_without_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        fs::create_dir(data.topic_dir(&topic("half"))).unwrap();
        assert_eq!(data.list_topics().unwrap(), Vec::<Topic>::new());
        assert!(!data.topic_exists(&topic("half")));
    }
}
