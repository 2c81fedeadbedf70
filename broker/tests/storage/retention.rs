//! Retention at the storage level: deleting closed segments by age and by size, closing an aged
//! active segment, and deleting a whole topic.

use std::fs;

use chorus_broker::storage::{DataDir, LogConfig, RetentionReport, StorageError, TopicLog};

use crate::util::*;

/// One second in microseconds.
const SECOND_US: u64 = 1_000_000;

/// Settings with a retention of 10 s and no other limit.
fn ten_seconds() -> LogConfig {
    LogConfig {
        segment_bytes: 256,
        segment_ms: 0,
        retention_ms: 10_000,
        ..small_config(true)
    }
}

/// Appends `count` entries with broker times `first_time_us`, one second apart, in one commit.
fn append_timed(log: &mut TopicLog, count: u64, first_time_us: u64) -> Vec<Vec<u8>> {
    let start = log.next_offset();
    let entries: Vec<Vec<u8>> = (0..count)
        .map(|i| entry_at(start + i, first_time_us + i * SECOND_US, 40))
        .collect();
    for e in &entries {
        log.append(e).unwrap();
    }
    log.commit().unwrap();
    entries
}

/// Returns the base offset of every segment file of the topic `live`.
fn segment_bases(data: &DataDir) -> Vec<u64> {
    segment_files(&data.topic_dir(&topic("live")))
        .iter()
        .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn segments_past_retention_are_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    let entries = append_timed(&mut log, 20, 100 * SECOND_US);
    let bases = segment_bases(&data);
    assert!(bases.len() >= 4, "{bases:?}");

    // Entries have times 100 s to 119 s. At 125 s, the entries up to 114 s are past retention.
    let report = log.enforce_retention(125 * SECOND_US).unwrap().unwrap();
    let earliest = report.earliest;
    assert!(earliest <= 15, "{report:?}");
    assert!(earliest > 0, "{report:?}");
    assert_eq!(log.earliest_offset(), earliest);
    assert_eq!(segment_bases(&data)[0], earliest);
    assert_eq!(
        report.segments,
        bases.iter().filter(|&&b| b < earliest).count()
    );
    assert_eq!(read_all(&log, earliest), expected_from(&entries, earliest));
}

#[test]
fn segment_with_recent_entry_is_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);
    let bases = segment_bases(&data);

    // Only the first segment's entries are past retention at 113 s.
    let report = log.enforce_retention(113 * SECOND_US).unwrap().unwrap();
    assert_eq!(report.segments, 1);
    assert_eq!(report.earliest, bases[1]);
}

#[test]
fn nothing_past_retention_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);
    let bases = segment_bases(&data);

    assert_eq!(log.enforce_retention(105 * SECOND_US).unwrap(), None);
    assert_eq!(segment_bases(&data), bases);
}

#[test]
fn active_segment_is_never_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);
    let active = *segment_bases(&data).last().unwrap();

    log.enforce_retention(u64::MAX).unwrap();
    assert_eq!(segment_bases(&data), vec![active]);
    assert_eq!(log.earliest_offset(), active);
    assert_eq!(log.committed_offset(), 20);
}

/// A topic that went quiet: its last segment closes once its entries pass retention, so that
/// the next check deletes them, and the topic keeps its offsets.
#[test]
fn quiet_topic_is_emptied_by_roll_and_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);

    let now = 200 * SECOND_US;
    assert!(log.roll_if_due(now).unwrap());
    log.enforce_retention(now).unwrap();
    assert_eq!(segment_bases(&data), vec![20]);
    assert_eq!(log.earliest_offset(), 20);
    assert_eq!(log.committed_offset(), 20);
    append_timed(&mut log, 1, now);
    assert_eq!(read_all(&log, 20).len(), 1);
}

#[test]
fn size_budget_deletes_oldest_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        retention_ms: 0,
        retention_bytes: 600,
        ..ten_seconds()
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    append_timed(&mut log, 30, 100 * SECOND_US);
    let sizes: Vec<u64> = segment_files(&data.topic_dir(&topic("live")))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .collect();
    let mut total: u64 = sizes.iter().sum();
    let mut expected = 0;
    while total > 600 {
        total -= sizes[expected];
        expected += 1;
    }

    let report = log.enforce_retention(100 * SECOND_US).unwrap().unwrap();
    assert_eq!(report.segments, expected);
    assert_eq!(report.bytes, sizes[..expected].iter().sum::<u64>());
    assert_eq!(log.bytes_on_disk(), total);
}

#[test]
fn deleted_segments_leave_no_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);
    log.enforce_retention(125 * SECOND_US).unwrap();

    let dir = data.topic_dir(&topic("live"));
    let earliest = log.earliest_offset();
    for extension in ["index", "timeindex"] {
        for path in files_with_extension(&dir, extension) {
            let base: u64 = path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            assert!(base >= earliest, "{}", path.display());
        }
    }
}

#[test]
fn reopen_after_retention_starts_at_new_earliest() {
    let tmp = tempfile::tempdir().unwrap();
    let config = ten_seconds();
    let (entries, earliest) = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let entries = append_timed(&mut log, 20, 100 * SECOND_US);
        let report: RetentionReport = log.enforce_retention(125 * SECOND_US).unwrap().unwrap();
        (entries, report.earliest)
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let log = data.open_topic(&topic("live"), &config).unwrap();
    assert_eq!(log.earliest_offset(), earliest);
    assert_eq!(read_all(&log, earliest), expected_from(&entries, earliest));
    let error = log.read(0, 1, usize::MAX, |_, _| {}).unwrap_err();
    assert!(
        matches!(error, StorageError::OffsetOutOfRange { .. }),
        "{error}"
    );
}

#[test]
fn zero_limits_keep_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        retention_ms: 0,
        retention_bytes: 0,
        ..ten_seconds()
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    append_timed(&mut log, 20, 0);
    assert_eq!(log.enforce_retention(u64::MAX).unwrap(), None);
    assert!(!log.roll_if_due(u64::MAX).unwrap());
}

#[test]
fn deleted_topic_comes_back_as_new_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    let mut log = data.open_topic(&name, &ten_seconds()).unwrap();
    append_timed(&mut log, 20, 100 * SECOND_US);
    let old_stream = log.stream_id();
    let segments = log.segment_count();
    let bytes = log.bytes_on_disk();

    let deleted = log.delete().unwrap();
    assert_eq!(deleted.stream_id, old_stream);
    assert_eq!(deleted.segments, segments);
    assert_eq!(deleted.bytes, bytes);
    assert_eq!(deleted.end, 20);
    assert!(!data.topic_dir(&name).exists());
    assert!(!data.topic_exists(&name));
    assert!(fs::read_dir(tmp.path().join("trash"))
        .unwrap()
        .next()
        .is_none());

    let log = data.open_topic(&name, &ten_seconds()).unwrap();
    assert_ne!(log.stream_id(), old_stream);
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn trash_is_emptied_when_data_directory_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let leftover = tmp.path().join("trash").join("live.0000000000000001");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("00000000000000000000.log"), b"old").unwrap();

    let _data = DataDir::open(tmp.path()).unwrap();
    assert!(!leftover.exists());
}

#[test]
fn topic_files_reports_sizes_without_opening() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let bytes = {
        let mut log = data.open_topic(&topic("live"), &ten_seconds()).unwrap();
        append_timed(&mut log, 20, 100 * SECOND_US);
        log.bytes_on_disk()
    };
    let files = data.topic_files(&topic("live")).unwrap();
    assert_eq!(files.bytes, bytes);
    assert_eq!(files.segments, segment_bases(&data).len());
    assert!(files.oldest_modified_us > 0);
    assert!(files.newest_modified_us >= files.oldest_modified_us);
}
