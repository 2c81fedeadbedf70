//! The budget of open segment files: many topics share it, idle files are closed, and a closed
//! file opens again for reads, appends and recovery.
//!
//! Descriptors and memory maps are counted from `/proc/self/fd` and `/proc/self/maps`, keeping
//! only those whose path lies in the test's own data directory, so that tests running beside
//! this one in the same process do not change the count.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use chorus_broker::storage::{DataDir, FileCacheConfig, LogConfig, TopicLog};

use crate::util::{append_and_commit, read_all, small_config, topic};

/// Segment files that may be open beyond the budget while no read is in progress. None are
/// expected, but the cache opens a file before it closes the least recently used one.
const SLACK: usize = 2;

fn open_data_dir(path: &Path, max_open_files: usize, idle_close: Duration) -> DataDir {
    let files = FileCacheConfig {
        max_open_files,
        idle_close,
    };
    DataDir::open_with(path, files).unwrap()
}

/// Returns the number of this process's descriptors that point to segment files under `dir`.
fn open_segment_descriptors(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.starts_with(&dir) && is_segment(target))
        .count()
}

/// Returns the number of this process's memory maps of segment files under `dir`.
fn segment_maps(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    let dir = dir.to_string_lossy().into_owned();
    fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(dir.as_str()) && line.contains(".log"))
        .count()
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "log")
}

/// Creates the data directory in memory (`/dev/shm`) where that exists: creating a thousand
/// topics flushes several files each, which on a disk takes far longer than the test's checks.
fn fast_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Polls `close_idle_files` until no segment file is open, for at most five seconds.
fn wait_until_all_closed(data: &DataDir) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while data.open_segment_files() > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        data.close_idle_files();
    }
}

#[test]
fn thousand_topics_stay_within_file_budget() {
    const TOPICS: usize = 1_000;
    const BUDGET: usize = 64;
    let tmp = fast_tempdir();
    let data = open_data_dir(tmp.path(), BUDGET, Duration::from_secs(600));
    let config = LogConfig {
        segment_bytes: 2048,
        ..small_config(true)
    };

    let mut logs: Vec<TopicLog> = Vec::with_capacity(TOPICS);
    let mut written = Vec::with_capacity(TOPICS);
    let mut max_descriptors = 0;
    for i in 0..TOPICS {
        let mut log = data
            .open_topic(&topic(&format!("live/{i}")), &config)
            .unwrap();
        // About 3 segments per topic.
        written.push(append_and_commit(&mut log, 40, 100));
        logs.push(log);
        max_descriptors = max_descriptors.max(open_segment_descriptors(tmp.path()));
    }
    assert!(
        logs.iter().all(|log| log.segment_count() >= 3),
        "every topic has closed segments"
    );
    assert!(
        max_descriptors <= BUDGET + SLACK,
        "{max_descriptors} while writing"
    );
    assert!(data.open_segment_files() <= BUDGET);

    for (log, entries) in logs.iter().zip(&written) {
        let read: Vec<Vec<u8>> = read_all(log, 0).into_iter().map(|(_, e)| e).collect();
        assert_eq!(&read, entries, "topic {}", log.topic());
    }
    let descriptors = open_segment_descriptors(tmp.path());
    assert!(descriptors <= BUDGET + SLACK, "{descriptors} after reading");
    let maps = segment_maps(tmp.path());
    assert!(maps <= BUDGET + SLACK, "{maps} maps after reading");
}

#[test]
fn idle_topic_closes_and_reopens_its_file() {
    let tmp = tempfile::tempdir().unwrap();
    let data = open_data_dir(tmp.path(), 64, Duration::from_millis(1));
    let mut log = data
        .open_topic(&topic("quiet"), &small_config(true))
        .unwrap();
    let mut expected = append_and_commit(&mut log, 3, 20);
    assert_eq!(log.segment_count(), 1, "only the active segment");

    wait_until_all_closed(&data);
    assert_eq!(data.open_segment_files(), 0);
    assert_eq!(open_segment_descriptors(tmp.path()), 0);
    assert_eq!(segment_maps(tmp.path()), 0);

    let read: Vec<Vec<u8>> = read_all(&log, 0).into_iter().map(|(_, e)| e).collect();
    assert_eq!(read, expected, "read after the file was closed");

    wait_until_all_closed(&data);
    expected.extend(append_and_commit(&mut log, 3, 20));
    let read: Vec<Vec<u8>> = read_all(&log, 0).into_iter().map(|(_, e)| e).collect();
    assert_eq!(read, expected, "read after an append to a closed file");
    assert_eq!(log.committed_offset(), 6);
}

#[test]
fn closed_files_sync_and_recover() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(false);
    let expected = {
        let data = open_data_dir(tmp.path(), 1, Duration::ZERO);
        let mut first = data.open_topic(&topic("a"), &config).unwrap();
        let mut second = data.open_topic(&topic("b"), &config).unwrap();
        let mut expected = Vec::new();
        // Each commit of one topic closes the other's file, since the budget is one file.
        for _ in 0..10 {
            expected.extend(append_and_commit(&mut first, 2, 30));
            append_and_commit(&mut second, 1, 30);
        }
        assert!(first.segment_count() > 1, "segments were closed and rolled");
        assert!(data.open_segment_files() <= 1);
        // Flushing reopens each unflushed segment file in turn.
        first.sync().unwrap();
        second.sync().unwrap();
        expected
    };

    let data = open_data_dir(tmp.path(), 1, Duration::ZERO);
    let log = data.open_topic(&topic("a"), &config).unwrap();
    assert_eq!(log.committed_offset(), 20);
    let read: Vec<Vec<u8>> = read_all(&log, 0).into_iter().map(|(_, e)| e).collect();
    assert_eq!(read, expected);
}

#[test]
fn torn_tail_after_release_is_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let (expected, active_path) = {
        let data = open_data_dir(tmp.path(), 4, Duration::from_millis(1));
        let mut log = data.open_topic(&topic("t"), &config).unwrap();
        let expected = append_and_commit(&mut log, 5, 10);
        wait_until_all_closed(&data);
        let active = data.topic_dir(&topic("t")).join("00000000000000000000.log");
        (expected, active)
    };
    // A write cut short: half a record header after the last record.
    let mut bytes = fs::read(&active_path).unwrap();
    bytes.extend_from_slice(&[0, 0, 0]);
    fs::write(&active_path, &bytes).unwrap();

    let data = open_data_dir(tmp.path(), 4, Duration::from_millis(1));
    let mut log = data.open_topic(&topic("t"), &config).unwrap();
    let read: Vec<Vec<u8>> = read_all(&log, 0).into_iter().map(|(_, e)| e).collect();
    assert_eq!(read, expected);
    let more = append_and_commit(&mut log, 1, 10);
    assert_eq!(log.committed_offset(), 6);
    let last = read_all(&log, 5);
    assert_eq!(last, vec![(5, more[0].clone())]);
}
