//! Throughput of the segment log through the storage API, with data in a temporary directory
//! under the target directory.
//!
//! - `append_one_topic`: batches of 200-byte records committed to one topic, with
//!   `fsync = { interval_ms = 10 }` and with `fsync = "never"`.
//! - `append_1000_topics`: one batch of 10 records committed to each of 1,000 topics in turn,
//!   as a worker does when many topics each receive a few comments per event loop turn.
//! - `read`: reads of 16 MiB of records from a committed offset, through memory maps and through
//!   positioned reads. The data was just written, so it is in the page cache.
//! - `recovery`: opening a topic with 1 GiB of segments, built once per run outside the timed
//!   part, with its index files and with the index files removed (a full scan).
//!
//! Run with `cargo bench -p chorus-broker --bench storage`. Without `--bench` (as under
//! `cargo test --benches`) criterion runs each benchmark once, and the data sizes shrink so
//! that the run stays short.

use std::fs;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use chorus_broker::storage::{DataDir, FileCacheConfig, FsyncPolicy, LogConfig, TopicLog};
use chorus_protocol::Topic;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};

/// Bytes of one record on disk: 8 bytes of record header and a 192-byte entry.
const RECORD_BYTES: usize = 200;

/// Publisher id of every record.
const PUBLISHER: &str = "bench";

/// Payload bytes that make a record of [`RECORD_BYTES`]: record header 8, entry fixed part 22,
/// publisher id.
const PAYLOAD_BYTES: usize = RECORD_BYTES - 8 - 22 - PUBLISHER.len();

/// Records committed together to one topic in `append_one_topic`.
const BATCH_ONE_TOPIC: u64 = 1_000;

/// Topics in `append_1000_topics`, and records committed to each per turn.
const TOPICS: usize = 1_000;
const BATCH_PER_TOPIC: u64 = 10;

/// A topic's log is deleted and started again outside the timed part once its files pass this,
/// so that the benchmark does not fill the disk.
const MAX_LOG_BYTES: u64 = 512 * 1024 * 1024;

/// Bytes of records delivered by one timed read.
const READ_BYTES: usize = 16 * 1024 * 1024;

/// Returns whether criterion measures (`cargo bench`) rather than runs each benchmark once as a
/// test.
fn measuring() -> bool {
    std::env::args().any(|arg| arg == "--bench")
}

/// Bytes of records in the log that the recovery benchmark opens.
fn recovery_log_bytes() -> u64 {
    if measuring() {
        1024 * 1024 * 1024
    } else {
        8 * 1024 * 1024
    }
}

fn bench_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("create a temporary directory")
}

fn topic(name: &str) -> Topic {
    Topic::new(name).expect("benchmark topic names are valid")
}

fn config(fsync: FsyncPolicy, use_mmap: bool) -> LogConfig {
    LogConfig {
        fsync,
        use_mmap,
        // Keeps every segment: the benchmarks delete whole topics themselves.
        retention_ms: 0,
        ..LogConfig::default()
    }
}

/// Appends `count` records with a fixed payload and commits them.
fn append_batch(log: &mut TopicLog, count: u64, payload: &[u8]) {
    for i in 0..count {
        log.append_comment(1_000_000 + i, 0, PUBLISHER, payload)
            .expect("append a record");
    }
    log.commit().expect("commit a batch");
}

/// Opens `name` afresh: deletes the topic with all its files first if `log` is given.
fn reopen_empty(
    data: &DataDir,
    log: Option<TopicLog>,
    name: &Topic,
    config: &LogConfig,
) -> TopicLog {
    if let Some(log) = log {
        log.delete()
            .map_err(|(error, _)| error)
            .expect("delete a topic");
    }
    data.open_topic(name, config).expect("open a topic")
}

fn append_one_topic(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_one_topic");
    group.throughput(Throughput::ElementsAndBytes {
        elements: BATCH_ONE_TOPIC,
        bytes: BATCH_ONE_TOPIC * RECORD_BYTES as u64,
    });
    let policies = [
        (
            "fsync_10ms",
            FsyncPolicy::Interval(Duration::from_millis(10)),
        ),
        ("fsync_never", FsyncPolicy::Never),
    ];
    let payload = vec![b'x'; PAYLOAD_BYTES];
    for (label, fsync) in policies {
        let tmp = bench_dir();
        let data = DataDir::open(tmp.path()).expect("open the data directory");
        let config = config(fsync, true);
        let name = topic("bench/one");
        let mut log = Some(reopen_empty(&data, None, &name, &config));
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    if log
                        .as_ref()
                        .is_some_and(|l| l.bytes_on_disk() > MAX_LOG_BYTES)
                    {
                        log = Some(reopen_empty(&data, log.take(), &name, &config));
                    }
                    let log = log.as_mut().expect("the log is open between iterations");
                    let start = Instant::now();
                    append_batch(log, BATCH_ONE_TOPIC, &payload);
                    timed += start.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

fn append_many_topics(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_1000_topics");
    // An iteration takes milliseconds to seconds, so every sample runs the same small number of
    // iterations instead of the linearly growing numbers of the default mode.
    group.sampling_mode(SamplingMode::Flat);
    let records = TOPICS as u64 * BATCH_PER_TOPIC;
    group.throughput(Throughput::ElementsAndBytes {
        elements: records,
        bytes: records * RECORD_BYTES as u64,
    });
    let cases = [
        (
            "fsync_10ms",
            FsyncPolicy::Interval(Duration::from_millis(10)),
            65_536,
        ),
        ("fsync_never", FsyncPolicy::Never, 65_536),
        ("fsync_never_64_open_files", FsyncPolicy::Never, 64),
    ];
    let payload = vec![b'x'; PAYLOAD_BYTES];
    for (label, fsync, max_open_files) in cases {
        let tmp = bench_dir();
        let files = FileCacheConfig {
            max_open_files,
            ..FileCacheConfig::default()
        };
        let data = DataDir::open_with(tmp.path(), files).expect("open the data directory");
        let config = config(fsync, true);
        let names: Vec<Topic> = (0..TOPICS).map(|i| topic(&format!("bench/{i}"))).collect();
        let mut logs: Vec<Option<TopicLog>> = names
            .iter()
            .map(|name| Some(reopen_empty(&data, None, name, &config)))
            .collect();
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let total: u64 = logs.iter().flatten().map(TopicLog::bytes_on_disk).sum();
                    if total > MAX_LOG_BYTES {
                        for (slot, name) in logs.iter_mut().zip(&names) {
                            *slot = Some(reopen_empty(&data, slot.take(), name, &config));
                        }
                    }
                    let start = Instant::now();
                    for log in logs.iter_mut().flatten() {
                        append_batch(log, BATCH_PER_TOPIC, &payload);
                    }
                    timed += start.elapsed();
                }
                timed
            });
        });
    }
    group.finish();
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    let records_per_read = (READ_BYTES / RECORD_BYTES) as u64;
    let entry_bytes = records_per_read * (RECORD_BYTES as u64 - 8);
    group.throughput(Throughput::ElementsAndBytes {
        elements: records_per_read,
        bytes: entry_bytes,
    });
    let total_records = if measuring() {
        16 * records_per_read
    } else {
        2 * records_per_read
    };
    let payload = vec![b'x'; PAYLOAD_BYTES];
    for (label, use_mmap) in [("mmap", true), ("pread", false)] {
        let tmp = bench_dir();
        let data = DataDir::open(tmp.path()).expect("open the data directory");
        let mut log = data
            .open_topic(&topic("bench/read"), &config(FsyncPolicy::Never, use_mmap))
            .expect("open a topic");
        while log.committed_offset() < total_records {
            append_batch(&mut log, BATCH_ONE_TOPIC, &payload);
        }
        let mut from = 0;
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| {
                if from + records_per_read > log.committed_offset() {
                    from = 0;
                }
                let mut bytes = 0usize;
                let summary = log
                    .read(from, records_per_read as usize, usize::MAX, |_, entry| {
                        bytes += entry.len();
                    })
                    .expect("read records");
                from = summary.next_offset;
                black_box(bytes)
            });
        });
    }
    group.finish();
}

/// Writes a topic with `bytes` of records in 64 MiB segments and flushes it, so that its index
/// files are trusted at the next open.
fn build_recovery_log(dir: &Path, name: &Topic, bytes: u64) {
    let data = DataDir::open(dir).expect("open the data directory");
    let mut log = data
        .open_topic(name, &config(FsyncPolicy::Never, true))
        .expect("open a topic");
    let payload = vec![b'x'; PAYLOAD_BYTES];
    while log.bytes_on_disk() < bytes {
        append_batch(&mut log, BATCH_ONE_TOPIC, &payload);
    }
    log.sync().expect("flush the log");
}

fn remove_index_files(topic_dir: &Path) {
    for entry in fs::read_dir(topic_dir).expect("list the topic directory") {
        let path = entry.expect("list the topic directory").path();
        let is_index = path
            .extension()
            .is_some_and(|ext| ext == "index" || ext == "timeindex");
        if is_index {
            fs::remove_file(&path).expect("remove an index file");
        }
    }
}

fn recovery(c: &mut Criterion) {
    let mut group = c.benchmark_group("recovery");
    group.sampling_mode(SamplingMode::Flat);
    let bytes = recovery_log_bytes();
    group.throughput(Throughput::Bytes(bytes));
    let tmp = bench_dir();
    let name = topic("bench/recovery");
    build_recovery_log(tmp.path(), &name, bytes);
    let data = DataDir::open(tmp.path()).expect("open the data directory");
    let topic_dir = data.topic_dir(&name);
    let config = config(FsyncPolicy::Never, true);

    for (label, keep_indexes) in [("with_index_files", true), ("full_scan", false)] {
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    if !keep_indexes {
                        remove_index_files(&topic_dir);
                    }
                    let start = Instant::now();
                    let log = data.open_topic(&name, &config).expect("recover the topic");
                    timed += start.elapsed();
                    black_box(log.committed_offset());
                }
                timed
            });
        });
    }
    group.finish();
}

fn short_runs() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = short_runs();
    targets = append_one_topic, append_many_topics, read, recovery
}
criterion_main!(benches);
