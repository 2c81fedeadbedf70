//! Measures how long opening a topic of 1,000 segments takes with and without index files.
//! Ignored by default because it writes 256 MiB; run it with:
//!
//! ```text
//! cargo test --release -p chorus-broker --test storage open_time -- --ignored --nocapture
//! ```
//!
//! It prints its figures and asserts only that every open sees the same log. "Cold" figures
//! evict the topic's files from the page cache first (a flush, then GNU `dd iflag=nocache
//! count=0`, which asks the kernel to drop the file's cached pages), so the open reads from the
//! disk.

use std::fs::{self, File};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use chorus_broker::storage::{DataDir, LogConfig};

use crate::util::*;

const SEGMENTS: u64 = 1_000;
const SEGMENT_BYTES: u64 = 256 * 1024;
const PAYLOAD: usize = 200;

#[test]
#[ignore = "writes 256 MiB and prints timings"]
fn open_time_with_and_without_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: SEGMENT_BYTES,
        segment_ms: 0,
        ..LogConfig::default()
    };
    let name = topic("bench/open");
    let data = DataDir::open(tmp.path()).unwrap();
    {
        let mut log = data.open_topic(&name, &config).unwrap();
        while (log.segment_count() as u64) < SEGMENTS {
            for _ in 0..1000 {
                let offset = log.next_offset();
                log.append(&entry(offset, PAYLOAD)).unwrap();
            }
            log.commit().unwrap();
        }
    }
    let dir = data.topic_dir(&name);
    let (segments, end, bytes) = {
        let log = data.open_topic(&name, &config).unwrap();
        (
            log.segment_count(),
            log.committed_offset(),
            log.bytes_on_disk(),
        )
    };
    let timed_open = |cold: bool| -> Duration {
        if cold {
            evict_from_page_cache(&dir);
        }
        let start = Instant::now();
        let log = data.open_topic(&name, &config).unwrap();
        let elapsed = start.elapsed();
        assert_eq!(log.segment_count(), segments);
        assert_eq!(log.committed_offset(), end);
        elapsed
    };
    let remove_indexes = || {
        for extension in ["index", "timeindex"] {
            for path in files_with_extension(&dir, extension) {
                fs::remove_file(path).unwrap();
            }
        }
    };

    let warm_indexed = timed_open(false);
    let cold_indexed = timed_open(true);
    remove_indexes();
    let warm_scanned = timed_open(false);
    remove_indexes();
    let cold_scanned = timed_open(true);
    eprintln!(
        "{segments} segments, {end} entries, {bytes} bytes. With index files: warm \
         {warm_indexed:?}, cold {cold_indexed:?}. Without (scan and rewrite): warm \
         {warm_scanned:?}, cold {cold_scanned:?}"
    );
}

/// Flushes every file in `dir` and asks the kernel to drop its cached pages.
fn evict_from_page_cache(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        File::open(&path).unwrap().sync_all().unwrap();
        let mut input = std::ffi::OsString::from("if=");
        input.push(&path);
        let status = Command::new("dd")
            .arg(input)
            .args(["iflag=nocache", "count=0", "status=none"])
            .status()
            .expect("failed to run dd");
        assert!(status.success(), "dd failed for {}", path.display());
    }
}
