//! A process-wide budget of open segment files, shared by every topic of a data directory.
//!
//! Each open segment file costs a file descriptor and, with `use_mmap`, a memory mapping. A
//! broker with tens of thousands of topics would run out of descriptors if every segment kept
//! its file open, so segments open their files on demand through this cache, which keeps at most
//! `max_open_files` of them open. Opening one more closes the least recently used. A file that
//! no append or read used for `idle_close` is closed too, so the active segments of idle topics
//! give their descriptors back; the next append or read opens the file again.
//!
//! Readers take an `Arc<SegmentFile>` for the duration of one read. Closing a file drops only
//! the cache's `Arc`, so a reader that still holds one keeps its descriptor and mapping until it
//! finishes (see the `mmap` module's contract). The number of open segment files can therefore
//! exceed the budget by the number of reads in progress at that moment.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::mmap::SegmentFile;

/// Default of [`FileCacheConfig::max_open_files`].
pub const DEFAULT_MAX_OPEN_FILES: usize = 65_536;

/// Default of [`FileCacheConfig::idle_close`]: one minute.
pub const DEFAULT_IDLE_CLOSE: Duration = Duration::from_secs(60);

/// The budget takes at most this fraction (1 / N) of the soft `RLIMIT_NOFILE`, so that the rest
/// stays available for client connections, listeners and index file writes.
pub const NOFILE_SHARE_DIVISOR: u64 = 4;

/// Settings of the open segment file budget of a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileCacheConfig {
    /// Maximum segment files kept open at once, across all topics. The data directory lowers it
    /// to a quarter of the soft `RLIMIT_NOFILE` when that is smaller.
    pub max_open_files: usize,
    /// Time after its last append or read after which a segment file is closed; zero keeps
    /// files open until the budget needs them.
    pub idle_close: Duration,
}

impl Default for FileCacheConfig {
    fn default() -> FileCacheConfig {
        FileCacheConfig {
            max_open_files: DEFAULT_MAX_OPEN_FILES,
            idle_close: DEFAULT_IDLE_CLOSE,
        }
    }
}

/// Returns the number of segment files that may be open at once: `configured`, lowered to
/// `nofile_limit / NOFILE_SHARE_DIVISOR` when that is smaller, and at least 1.
pub fn effective_max_open_files(configured: usize, nofile_limit: u64) -> usize {
    let share = nofile_limit / NOFILE_SHARE_DIVISOR;
    let share = usize::try_from(share).unwrap_or(usize::MAX);
    configured.min(share).max(1)
}

/// Returns the soft `RLIMIT_NOFILE` of this process, or `None` if it cannot be read.
pub(super) fn nofile_soft_limit() -> Option<u64> {
    rlimit::getrlimit(rlimit::Resource::NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

/// The open segment files of one data directory, closed least recently used first.
#[derive(Debug)]
pub(super) struct FileCache {
    max_open: usize,
    idle_close: Option<Duration>,
    next_id: AtomicU64,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    entries: FxHashMap<u64, Entry>,
    /// Segment ids by their last use, oldest first: the keys are use stamps.
    by_use: BTreeMap<u64, u64>,
    next_stamp: u64,
}

#[derive(Debug)]
struct Entry {
    file: Arc<SegmentFile>,
    stamp: u64,
    last_used: Instant,
}

impl FileCache {
    /// Creates a cache that keeps at most `max_open` files open (at least 1).
    pub(super) fn new(max_open: usize, idle_close: Duration) -> FileCache {
        FileCache {
            max_open: max_open.max(1),
            idle_close: (!idle_close.is_zero()).then_some(idle_close),
            next_id: AtomicU64::new(1),
            state: Mutex::new(CacheState::default()),
        }
    }

    /// Returns the maximum number of files the cache keeps open.
    pub(super) fn max_open(&self) -> usize {
        self.max_open
    }

    /// Returns the number of files the cache keeps open now.
    pub(super) fn open_files(&self) -> usize {
        self.state.lock().entries.len()
    }

    /// Returns a new id for a segment, never used before in this process.
    pub(super) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Returns the open file of segment `id`, calling `open` to open it when the cache does not
    /// have it. Marks the file as used now.
    pub(super) fn acquire(
        &self,
        id: u64,
        open: impl FnOnce() -> io::Result<SegmentFile>,
    ) -> io::Result<Arc<SegmentFile>> {
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut state = self.state.lock();
            if let Some(file) = state.touch(id, now) {
                self.close_idle(&mut state, now, &mut closed);
                drop(state);
                drop(closed);
                return Ok(file);
            }
        }

        // Open outside the lock: other topics keep using the cache meanwhile.
        let opened = Arc::new(open()?);
        let file = self.insert_at(id, opened, now, &mut closed);
        // The closed files are dropped here, after the lock is released, because closing a
        // descriptor and removing a mapping are system calls.
        drop(closed);
        Ok(file)
    }

    /// Adds the file of segment `id`, just created or opened by the caller, as used now.
    pub(super) fn insert(&self, id: u64, file: SegmentFile) {
        let mut closed = Vec::new();
        self.insert_at(id, Arc::new(file), Instant::now(), &mut closed);
        drop(closed);
    }

    /// Closes the file of segment `id`, if open: the segment was deleted, its log closed, or
    /// its mapping became too short.
    pub(super) fn forget(&self, id: u64) {
        let removed = self.state.lock().remove(id);
        drop(removed);
    }

    /// Closes every file unused for the idle time, and returns how many it closed.
    pub(super) fn close_idle_files(&self) -> usize {
        let mut closed = Vec::new();
        {
            let mut state = self.state.lock();
            self.close_idle(&mut state, Instant::now(), &mut closed);
        }
        closed.len()
    }

    fn insert_at(
        &self,
        id: u64,
        opened: Arc<SegmentFile>,
        now: Instant,
        closed: &mut Vec<Arc<SegmentFile>>,
    ) -> Arc<SegmentFile> {
        let mut state = self.state.lock();
        // Another reader of the same segment may have opened it meanwhile; keep one of the two.
        if let Some(existing) = state.touch(id, now) {
            closed.push(opened);
            return existing;
        }
        let stamp = state.take_stamp();
        state.by_use.insert(stamp, id);
        let entry = Entry {
            file: Arc::clone(&opened),
            stamp,
            last_used: now,
        };
        state.entries.insert(id, entry);
        while state.entries.len() > self.max_open {
            match state.remove_least_recent() {
                Some(file) => closed.push(file),
                None => break,
            }
        }
        self.close_idle(&mut state, now, closed);
        opened
    }

    /// Moves the files unused since `now - idle_close` into `closed`, oldest first.
    fn close_idle(&self, state: &mut CacheState, now: Instant, closed: &mut Vec<Arc<SegmentFile>>) {
        let Some(idle) = self.idle_close else {
            return;
        };
        // Bounded by the number of open files.
        while let Some((_, &id)) = state.by_use.first_key_value() {
            let idle_since = state.entries.get(&id).map(|e| e.last_used);
            if idle_since.is_some_and(|used| now.saturating_duration_since(used) < idle) {
                break;
            }
            match state.remove(id) {
                Some(file) => closed.push(file),
                None => break,
            }
        }
    }
}

impl CacheState {
    fn take_stamp(&mut self) -> u64 {
        let stamp = self.next_stamp;
        self.next_stamp += 1;
        stamp
    }

    /// Returns the file of segment `id` and marks it as the most recently used, if open.
    fn touch(&mut self, id: u64, now: Instant) -> Option<Arc<SegmentFile>> {
        let stamp = self.take_stamp();
        let entry = self.entries.get_mut(&id)?;
        self.by_use.remove(&entry.stamp);
        entry.stamp = stamp;
        entry.last_used = now;
        self.by_use.insert(stamp, id);
        Some(Arc::clone(&entry.file))
    }

    fn remove(&mut self, id: u64) -> Option<Arc<SegmentFile>> {
        let entry = self.entries.remove(&id)?;
        self.by_use.remove(&entry.stamp);
        Some(entry.file)
    }

    fn remove_least_recent(&mut self) -> Option<Arc<SegmentFile>> {
        let (_, id) = self.by_use.pop_first()?;
        self.entries.remove(&id).map(|entry| entry.file)
    }
}

/// A segment's place in the [`FileCache`]; closes the segment's file when dropped.
#[derive(Debug)]
pub(super) struct FileHandle {
    cache: Arc<FileCache>,
    id: u64,
}

impl FileHandle {
    /// Creates the handle of a new segment, whose file is not open yet.
    pub(super) fn new(cache: &Arc<FileCache>) -> FileHandle {
        FileHandle {
            cache: Arc::clone(cache),
            id: cache.new_id(),
        }
    }

    /// Returns the open file, calling `open` if the cache closed it or never had it.
    pub(super) fn acquire(
        &self,
        open: impl FnOnce() -> io::Result<SegmentFile>,
    ) -> io::Result<Arc<SegmentFile>> {
        self.cache.acquire(self.id, open)
    }

    /// Hands a file that the caller opened to the cache.
    pub(super) fn insert(&self, file: SegmentFile) {
        self.cache.insert(self.id, file);
    }

    /// Closes the file, if open, so that the next [`FileHandle::acquire`] opens it again.
    pub(super) fn close(&self) {
        self.cache.forget(self.id);
    }
}

impl Drop for FileHandle {
    fn drop(&mut self) {
        self.cache.forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;

    fn open_file(dir: &tempfile::TempDir, opens: &mut usize) -> io::Result<SegmentFile> {
        *opens += 1;
        let path = dir.path().join("segment");
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        Ok(SegmentFile::new(file, &path, 0, false))
    }

    #[test]
    fn budget_closes_least_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FileCache::new(2, Duration::ZERO));
        let handles: Vec<_> = (0..3).map(|_| FileHandle::new(&cache)).collect();
        let mut opens = 0;
        for handle in &handles[..2] {
            handle.acquire(|| open_file(&dir, &mut opens)).unwrap();
        }
        // Use the first again, so that the second is the least recently used.
        handles[0].acquire(|| open_file(&dir, &mut opens)).unwrap();
        handles[2].acquire(|| open_file(&dir, &mut opens)).unwrap();
        assert_eq!(cache.open_files(), 2);
        assert_eq!(opens, 3);

        handles[0].acquire(|| open_file(&dir, &mut opens)).unwrap();
        assert_eq!(opens, 3, "the first file stayed open");
        handles[1].acquire(|| open_file(&dir, &mut opens)).unwrap();
        assert_eq!(opens, 4, "the second file was closed and opened again");
    }

    #[test]
    fn idle_files_are_closed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FileCache::new(10, Duration::from_millis(1)));
        let handle = FileHandle::new(&cache);
        let mut opens = 0;
        handle.acquire(|| open_file(&dir, &mut opens)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.open_files() > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
            cache.close_idle_files();
        }
        assert_eq!(cache.open_files(), 0);
    }

    #[test]
    fn dropped_handle_closes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FileCache::new(10, Duration::ZERO));
        let handle = FileHandle::new(&cache);
        let mut opens = 0;
        handle.acquire(|| open_file(&dir, &mut opens)).unwrap();
        drop(handle);
        assert_eq!(cache.open_files(), 0);
    }

    #[test]
    fn reader_keeps_a_closed_file_usable() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FileCache::new(1, Duration::ZERO));
        let first = FileHandle::new(&cache);
        let second = FileHandle::new(&cache);
        let mut opens = 0;
        let held = first.acquire(|| open_file(&dir, &mut opens)).unwrap();
        second.acquire(|| open_file(&dir, &mut opens)).unwrap();
        assert_eq!(cache.open_files(), 1);
        assert_eq!(
            Arc::strong_count(&held),
            1,
            "only the reader holds the first file"
        );
    }

    #[test]
    fn budget_is_a_quarter_of_the_descriptor_limit() {
        assert_eq!(effective_max_open_files(65_536, 20_000), 5_000);
        assert_eq!(effective_max_open_files(64, 1_024), 64);
        assert_eq!(effective_max_open_files(64, 3), 1);
    }
}
