//! The log API against real files: appends, commits, reads, rolls, indexes and reopening.

use std::fs;

use chorus_broker::storage::{DataDir, FsyncPolicy, LogConfig, StorageError};
use proptest::prelude::*;

use crate::util::*;

#[test]
fn round_trip_across_segment_rolls() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data
            .open_topic(&topic("live"), &small_config(use_mmap))
            .unwrap();

        let mut entries = Vec::new();
        for batch in 0..30u64 {
            entries.extend(append_and_commit(
                &mut log,
                1 + batch % 7,
                (batch * 13 % 90) as usize,
            ));
        }

        assert!(
            log.segment_count() > 5,
            "mmap {use_mmap}: {}",
            log.segment_count()
        );
        assert_eq!(log.committed_offset(), entries.len() as u64);
        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries, 0),
            "mmap {use_mmap}"
        );
    }
}

#[test]
fn segment_size_stays_within_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = small_config(true);
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    for payload_len in [10, 300, 600, 20, 20, 1000, 5] {
        append_and_commit(&mut log, 3, payload_len);
    }

    for path in segment_files(&data.topic_dir(&topic("live"))) {
        let len = fs::metadata(&path).unwrap().len();
        let bytes = fs::read(&path).unwrap();
        let first_record = 8 + u32::from_be_bytes(bytes[16..20].try_into().unwrap()) as u64;
        let single_record = len == SEGMENT_HEADER_LEN + first_record;
        assert!(
            len <= config.segment_bytes || single_record,
            "{}",
            path.display()
        );
    }
}

#[test]
fn read_from_every_offset_matches() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let config = LogConfig {
            segment_bytes: 64 * 1024,
            index_interval_bytes: 100,
            ..small_config(use_mmap)
        };
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let entries = append_and_commit(&mut log, 300, 40);

        for from in 0..=300u64 {
            let mut first = None;
            let summary = log
                .read(from, 1, usize::MAX, |offset, e| {
                    first = Some((offset, e.to_vec()))
                })
                .unwrap();
            let expected = entries.get(from as usize).map(|e| (from, e.clone()));
            assert_eq!(first, expected, "mmap {use_mmap}, from {from}");
            assert_eq!(summary.next_offset, (from + 1).min(300));
        }
    }
}

#[test]
fn read_stops_after_max_count() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data
            .open_topic(&topic("live"), &small_config(use_mmap))
            .unwrap();
        append_and_commit(&mut log, 50, 30);

        let summary = log.read(10, 7, usize::MAX, |_, _| {}).unwrap();
        assert_eq!(summary.count, 7);
        assert_eq!(summary.next_offset, 17);
    }
}

#[test]
fn read_stops_before_max_bytes() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data
            .open_topic(&topic("live"), &small_config(use_mmap))
            .unwrap();
        let entries = append_and_commit(&mut log, 50, 30);
        let entry_len = entries[0].len();

        // Room for three entries and part of a fourth.
        let summary = log
            .read(5, usize::MAX, 3 * entry_len + 1, |_, _| {})
            .unwrap();
        assert_eq!(summary.count, 3);
        assert_eq!(summary.next_offset, 8);
    }
}

#[test]
fn read_returns_first_entry_larger_than_max_bytes() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data
            .open_topic(&topic("live"), &small_config(use_mmap))
            .unwrap();
        let entries = append_and_commit(&mut log, 3, 2000);

        let mut got = Vec::new();
        let summary = log
            .read(1, usize::MAX, 10, |_, e| got.push(e.to_vec()))
            .unwrap();
        assert_eq!(summary.count, 1);
        assert_eq!(got, vec![entries[1].clone()]);
    }
}

/// Entries larger than one positioned read, and a run of entries whose total passes it, so that
/// records straddle the read window of the plain reader.
#[test]
fn large_entries_cross_read_windows() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let config = LogConfig {
            segment_bytes: 4 * 1024 * 1024,
            ..small_config(use_mmap)
        };
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let mut entries = append_and_commit(&mut log, 60, 9_000);
        entries.extend(append_and_commit(&mut log, 1, 300_000));
        entries.extend(append_and_commit(&mut log, 10, 9_000));

        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries, 0),
            "mmap {use_mmap}"
        );
        assert_eq!(
            read_all(&log, 59),
            expected_from(&entries, 59),
            "mmap {use_mmap}"
        );
    }
}

#[test]
fn read_at_committed_offset_returns_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 4, 10);

    let summary = log.read(4, usize::MAX, usize::MAX, |_, _| {}).unwrap();
    assert_eq!(summary.count, 0);
    assert_eq!(summary.next_offset, 4);
}

#[test]
fn read_past_committed_offset_is_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 4, 10);

    let error = log.read(5, usize::MAX, usize::MAX, |_, _| {}).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::OffsetOutOfRange {
                requested: 5,
                earliest: 0,
                end: 4
            }
        ),
        "{error}"
    );
}

#[test]
fn read_below_earliest_offset_is_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    drop(
        data.open_topic(&topic("live"), &small_config(true))
            .unwrap(),
    );

    // Replace the first segment by an empty one that starts at offset 100, as if older
    // segments had been deleted.
    fs::remove_file(dir.join("00000000000000000000.log")).unwrap();
    let mut header = b"CHRSEG\x00\x01".to_vec();
    header.extend_from_slice(&100u64.to_be_bytes());
    fs::write(dir.join("00000000000000000100.log"), header).unwrap();

    let log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    assert_eq!(log.earliest_offset(), 100);
    let error = log.read(50, usize::MAX, usize::MAX, |_, _| {}).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::OffsetOutOfRange {
                requested: 50,
                earliest: 100,
                end: 100
            }
        ),
        "{error}"
    );
}

#[test]
fn uncommitted_entries_are_not_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 2, 10);
    log.append(&entry(2, 10)).unwrap();

    assert_eq!(log.next_offset(), 3);
    assert_eq!(log.committed_offset(), 2);
    assert_eq!(read_all(&log, 0).len(), 2);
}

#[test]
fn reopen_sees_committed_entries_and_same_stream_id() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let config = small_config(use_mmap);
        let (entries, stream_id) = {
            let data = DataDir::open(tmp.path()).unwrap();
            let mut log = data.open_topic(&topic("a/b"), &config).unwrap();
            let entries = append_and_commit(&mut log, 40, 25);
            (entries, log.stream_id())
        };

        let data = DataDir::open(tmp.path()).unwrap();
        let log = data.open_topic(&topic("a/b"), &config).unwrap();
        assert_ne!(stream_id, 0);
        assert_eq!(log.stream_id(), stream_id);
        assert_eq!(log.committed_offset(), 40);
        assert_eq!(read_all(&log, 0), expected_from(&entries, 0));
    }
}

#[test]
fn reopen_drops_uncommitted_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 3, 10);
    log.append(&entry(3, 10)).unwrap();
    drop(log);

    let log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    assert_eq!(log.next_offset(), 3);
}

#[test]
fn distinct_topics_get_distinct_stream_ids() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let a = data.open_topic(&topic("a"), &small_config(true)).unwrap();
    let b = data.open_topic(&topic("b"), &small_config(true)).unwrap();
    assert_ne!(a.stream_id(), b.stream_id());
}

#[test]
fn second_data_dir_is_locked() {
    let tmp = tempfile::tempdir().unwrap();
    let _data = DataDir::open(tmp.path()).unwrap();
    let error = DataDir::open(tmp.path()).unwrap_err();
    assert!(matches!(error, StorageError::Locked { .. }), "{error}");
    assert!(error.to_string().contains("LOCK"), "{error}");
}

#[test]
fn topic_dir_maps_slash_to_plus() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("a/b");
    assert_eq!(data.topic_dir(&name), tmp.path().join("topics").join("a+b"));
    assert!(!data.topic_exists(&name));

    drop(data.open_topic(&name, &small_config(true)).unwrap());
    assert!(data.topic_exists(&name));
    assert_eq!(data.list_topics().unwrap(), vec![name]);
}

#[test]
fn entry_with_wrong_offset_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    let error = log.append(&entry(5, 10)).unwrap_err();
    assert!(
        matches!(
            error,
            StorageError::OffsetMismatch {
                expected: 0,
                got: 5
            }
        ),
        "{error}"
    );
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn malformed_entries_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    let good = entry(0, 10);
    let truncated = &good[..good.len() - 1];
    let mut trailing = good.clone();
    trailing.push(0);

    for bad in [&b""[..], &good[..10], truncated, &trailing] {
        let error = log.append(bad).unwrap_err();
        assert!(matches!(error, StorageError::InvalidEntry(_)), "{error}");
    }
    assert_eq!(log.next_offset(), 0);
    assert_eq!(log.commit().unwrap(), 0);
}

#[test]
fn append_comment_stores_the_same_bytes_as_append() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    let payload: Vec<u8> = (0..10u8).collect();

    let offset = log.append_comment(1_000, 0, "publisher", &payload).unwrap();
    log.commit().unwrap();

    assert_eq!(offset, 0);
    assert_eq!(read_all(&log, 0), vec![(0, entry(0, 10))]);
}

#[test]
fn commit_works_under_every_fsync_policy() {
    let policies = [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(std::time::Duration::ZERO),
        FsyncPolicy::Interval(std::time::Duration::from_secs(3600)),
        FsyncPolicy::Never,
    ];
    for fsync in policies {
        let tmp = tempfile::tempdir().unwrap();
        let data = DataDir::open(tmp.path()).unwrap();
        let config = LogConfig {
            fsync,
            ..small_config(true)
        };
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let entries = append_and_commit(&mut log, 20, 40);
        log.sync().unwrap();
        assert_eq!(read_all(&log, 0), expected_from(&entries, 0), "{fsync:?}");
    }
}

#[test]
fn bytes_on_disk_matches_segment_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 25, 33);

    let on_disk: u64 = segment_files(&data.topic_dir(&topic("live")))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(log.bytes_on_disk(), on_disk);
}

#[test]
fn segment_file_starts_with_header() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    drop(
        data.open_topic(&topic("live"), &small_config(true))
            .unwrap(),
    );
    let segment = data
        .topic_dir(&topic("live"))
        .join("00000000000000000000.log");
    let mut expected = b"CHRSEG\x00\x01".to_vec();
    expected.extend_from_slice(&0u64.to_be_bytes());
    assert_eq!(fs::read(segment).unwrap(), expected);
}

/// One step of the random workload.
#[derive(Debug, Clone)]
enum Op {
    Append { payload_len: usize },
    Commit,
    Reopen,
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..300).prop_map(|payload_len| Op::Append { payload_len }),
        3 => Just(Op::Commit),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_appends_commits_and_reopens_read_back(
        ops in prop::collection::vec(op_strategy(), 1..80),
        segment_bytes in 64u64..1024,
        index_interval_bytes in 0u32..300,
        use_mmap in any::<bool>(),
    ) {
        let tmp = tempfile::tempdir().unwrap();
        let config = LogConfig {
            segment_bytes,
            index_interval_bytes,
            fsync: FsyncPolicy::Never,
            use_mmap,
            ..LogConfig::default()
        };
        let name = topic("prop/test");
        let mut data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &config).unwrap();
        let stream_id = log.stream_id();
        let mut committed: Vec<Vec<u8>> = Vec::new();
        let mut pending: Vec<Vec<u8>> = Vec::new();

        for op in ops {
            match op {
                Op::Append { payload_len } => {
                    let e = entry(log.next_offset(), payload_len);
                    log.append(&e).unwrap();
                    pending.push(e);
                }
                Op::Commit => {
                    let end = log.commit().unwrap();
                    committed.append(&mut pending);
                    prop_assert_eq!(end, committed.len() as u64);
                }
                Op::Reopen => {
                    drop(log);
                    drop(data);
                    pending.clear();
                    data = DataDir::open(tmp.path()).unwrap();
                    log = data.open_topic(&name, &config).unwrap();
                    prop_assert_eq!(log.stream_id(), stream_id);
                }
            }
            prop_assert_eq!(log.committed_offset(), committed.len() as u64);
            prop_assert_eq!(log.next_offset(), (committed.len() + pending.len()) as u64);
        }

        prop_assert_eq!(read_all(&log, 0), expected_from(&committed, 0));
        let middle = committed.len() as u64 / 2;
        prop_assert_eq!(read_all(&log, middle), expected_from(&committed, middle));
    }
}

#[test]
fn closed_segments_get_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 30, 40);
    let dir = data.topic_dir(&topic("live"));

    let segments = segment_files(&dir);
    let closed = &segments[..segments.len() - 1];
    assert!(closed.len() >= 2, "{}", closed.len());
    let with_extension =
        |extension| -> Vec<_> { closed.iter().map(|p| p.with_extension(extension)).collect() };
    assert_eq!(files_with_extension(&dir, "index"), with_extension("index"));
    assert_eq!(
        files_with_extension(&dir, "timeindex"),
        with_extension("timeindex")
    );
}

#[test]
fn index_files_of_never_policy_say_segment_unflushed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 30, 40);
    let dir = data.topic_dir(&topic("live"));

    for path in files_with_extension(&dir, "index") {
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[INDEX_FLAGS_AT] & 1, 0, "{}", path.display());
    }
}

#[test]
fn sync_marks_closed_segments_flushed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 30, 40);
    log.sync().unwrap();
    let dir = data.topic_dir(&topic("live"));

    for path in files_with_extension(&dir, "index") {
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[INDEX_FLAGS_AT] & 1, 1, "{}", path.display());
        assert_eq!(&bytes[INDEX_BOOT_ID], &[0u8; 16], "{}", path.display());
    }
}

#[test]
fn always_policy_writes_flushed_index_files() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        fsync: FsyncPolicy::Always,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    append_and_commit(&mut log, 30, 40);
    let dir = data.topic_dir(&topic("live"));

    let indexes = files_with_extension(&dir, "timeindex");
    assert!(!indexes.is_empty());
    for path in indexes {
        let bytes = fs::read(&path).unwrap();
        assert_eq!(bytes[INDEX_FLAGS_AT] & 1, 1, "{}", path.display());
    }
}

/// Reopening reads the closed segments from their index files; every read, from every offset,
/// still returns the same entries as before.
#[test]
fn reopen_with_index_files_reads_every_offset() {
    for use_mmap in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        let config = small_config(use_mmap);
        let entries = {
            let data = DataDir::open(tmp.path()).unwrap();
            let mut log = data.open_topic(&topic("live"), &config).unwrap();
            append_and_commit(&mut log, 100, 30)
        };
        let data = DataDir::open(tmp.path()).unwrap();
        let log = data.open_topic(&topic("live"), &config).unwrap();
        assert!(log.segment_count() > 5);
        for from in 0..=100u64 {
            assert_eq!(
                read_all(&log, from),
                expected_from(&entries, from),
                "mmap {use_mmap}, from {from}"
            );
        }
    }
}

#[test]
fn missing_index_files_are_rebuilt_identically() {
    let tmp = tempfile::tempdir().unwrap();
    let name = topic("live");
    {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        append_and_commit(&mut log, 40, 30);
    }
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&name);
    let before = snapshot(&dir);
    for extension in ["index", "timeindex"] {
        for path in files_with_extension(&dir, extension) {
            fs::remove_file(path).unwrap();
        }
    }

    drop(data.open_topic(&name, &small_config(true)).unwrap());
    assert_eq!(snapshot(&dir), before);
}

/// Entry times are 1000 µs apart, so every time between two entries has exactly one correct
/// offset.
#[test]
fn time_lookup_finds_first_newer_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let name = topic("live");
    let write = |data: &DataDir| {
        let mut log = data.open_topic(&name, &config).unwrap();
        for offset in 0..200u64 {
            log.append(&entry_at(offset, 10_000 + 1_000 * offset, 20))
                .unwrap();
        }
        log.commit().unwrap();
    };
    let data = DataDir::open(tmp.path()).unwrap();
    write(&data);

    // Reopened, closed segments come from their index files.
    let log = data.open_topic(&name, &config).unwrap();
    assert!(log.segment_count() > 5);
    assert_eq!(log.offset_for_time(0), 0);
    assert_eq!(log.offset_for_time(10_000), 0);
    for offset in 1..200u64 {
        let time = 10_000 + 1_000 * offset;
        assert_eq!(log.offset_for_time(time), offset, "time {time}");
        assert_eq!(
            log.offset_for_time(time - 999),
            offset,
            "time {}",
            time - 999
        );
    }
    assert_eq!(log.offset_for_time(10_000 + 1_000 * 199 + 1), 200);
    assert_eq!(log.offset_for_time(u64::MAX), 200);
}

/// Broker times can go backwards when the clock does. The result is still the first entry whose
/// own time is at or after the requested one.
#[test]
fn offset_for_time_handles_clock_going_back() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        index_interval_bytes: 0,
        time_index_interval_bytes: 0,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    let times = [100u64, 500, 200, 300, 600, 400, 700];
    for (offset, time) in times.iter().enumerate() {
        log.append(&entry_at(offset as u64, *time, 10)).unwrap();
    }
    log.commit().unwrap();

    for time in 0..=800u64 {
        let expected = times
            .iter()
            .position(|&t| t >= time)
            .map_or(times.len() as u64, |i| i as u64);
        assert_eq!(log.offset_for_time(time), expected, "time {time}");
    }
}

#[test]
fn offset_for_time_ignores_uncommitted_entries() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 3, 10);
    log.append(&entry(3, 10)).unwrap();
    assert_eq!(log.offset_for_time(BASE_TIME_US + 3), 3);
    assert_eq!(log.committed_offset(), 3);
}

/// With `segment_ms` of one second, a tenth of it is jitter: entries within 900 ms of the
/// segment's first entry stay in it, and an entry a full second later starts a new segment.
#[test]
fn segments_roll_by_age() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        segment_ms: 1_000,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    for (offset, time_us) in [0u64, 500_000, 899_999].into_iter().enumerate() {
        log.append(&entry_at(offset as u64, time_us, 10)).unwrap();
        log.commit().unwrap();
    }
    assert_eq!(log.segment_count(), 1);

    log.append(&entry_at(3, 1_000_000, 10)).unwrap();
    log.commit().unwrap();
    assert_eq!(log.segment_count(), 2);
    let dir = data.topic_dir(&topic("live"));
    assert_eq!(
        segment_files(&dir).last().unwrap().file_name().unwrap(),
        "00000000000000000003.log"
    );
}

/// An age roll inside one commit splits the commit's records between two segments.
#[test]
fn age_roll_splits_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        segment_ms: 1_000,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    let entries: Vec<Vec<u8>> = (0..6u64)
        .map(|offset| entry_at(offset, offset * 400_000, 10))
        .collect();
    for e in &entries {
        log.append(e).unwrap();
    }
    log.commit().unwrap();

    // Times 0, 0.4 s, 0.8 s stay; 1.2 s starts a segment; 2.0 s is 0.8 s after it.
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log, 0), expected_from(&entries, 0));
}

#[test]
fn roll_if_due_closes_an_aged_quiet_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        segment_ms: 1_000,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    log.append(&entry_at(0, 5_000_000, 10)).unwrap();
    log.commit().unwrap();

    assert!(!log.roll_if_due(5_800_000).unwrap());
    assert_eq!(log.segment_count(), 1);
    assert!(log.roll_if_due(6_000_000).unwrap());
    assert_eq!(log.segment_count(), 2);
    // The new active segment is empty, so nothing is due.
    assert!(!log.roll_if_due(60_000_000).unwrap());
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn zero_segment_ms_rolls_by_size_only() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let config = LogConfig {
        segment_bytes: 1024 * 1024,
        segment_ms: 0,
        retention_ms: 0,
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    for offset in 0..3u64 {
        log.append(&entry_at(offset, offset * 1_000_000_000, 10))
            .unwrap();
        log.commit().unwrap();
    }
    assert_eq!(log.segment_count(), 1);
    assert!(!log.roll_if_due(u64::MAX).unwrap());
}

#[test]
fn sync_deadline_follows_interval_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let interval = std::time::Duration::from_secs(3600);
    let config = LogConfig {
        fsync: FsyncPolicy::Interval(interval),
        ..small_config(true)
    };
    let mut log = data.open_topic(&topic("live"), &config).unwrap();
    log.sync().unwrap();
    assert_eq!(log.sync_deadline(), None);

    append_and_commit(&mut log, 1, 10);
    let deadline = log.sync_deadline().expect("unsynced data has a deadline");
    assert!(deadline > std::time::Instant::now() + interval / 2);
    assert!(!log.sync_if_due().unwrap());
    log.sync().unwrap();
    assert_eq!(log.sync_deadline(), None);
}

#[test]
fn never_policy_has_no_sync_deadline() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 1, 10);
    assert_eq!(log.sync_deadline(), None);
}

#[test]
fn leftover_index_files_are_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    drop(data.open_topic(&name, &small_config(true)).unwrap());
    let dir = data.topic_dir(&name);
    let leftovers = [
        "00000000000000000500.index",
        "00000000000000000500.timeindex",
        "00000000000000000000.index.tmp",
        "00000000000000000000.index",
    ];
    for leftover in leftovers {
        fs::write(dir.join(leftover), b"left over").unwrap();
    }

    drop(data.open_topic(&name, &small_config(true)).unwrap());
    for leftover in leftovers {
        assert!(!dir.join(leftover).exists(), "{leftover}");
    }
}

#[test]
fn last_write_time_is_newest_entry_time() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let mut log = data
        .open_topic(&topic("live"), &small_config(true))
        .unwrap();
    append_and_commit(&mut log, 30, 40);
    assert_eq!(log.last_write_time_us(), BASE_TIME_US + 29);
}
