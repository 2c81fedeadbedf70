//! Tests of the segment log against real files in temporary directories.

use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use chorus_broker::storage::{DataDir, FsyncPolicy, LogConfig, StorageError, TopicLog};
use chorus_protocol::event::encode_entry;
use chorus_protocol::Topic;
use proptest::prelude::*;

const SEGMENT_HEADER_LEN: u64 = 16;

fn topic(name: &str) -> Topic {
    Topic::new(name).unwrap()
}

/// Encodes a wire entry whose payload bytes are derived from its offset.
fn entry(offset: u64, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (offset as usize + i) as u8)
        .collect();
    let mut buf = BytesMut::new();
    encode_entry(&mut buf, offset, 1_000 + offset, 0, "publisher", &payload);
    buf.to_vec()
}

/// Length of the record that stores `entry`.
fn record_len(entry: &[u8]) -> u64 {
    8 + entry.len() as u64
}

fn small_config(use_mmap: bool) -> LogConfig {
    LogConfig {
        segment_bytes: 512,
        index_interval_bytes: 64,
        fsync: FsyncPolicy::Never,
        use_mmap,
    }
}

/// Appends entries for offsets `next_offset()..next_offset() + count` and commits them.
fn append_and_commit(log: &mut TopicLog, count: u64, payload_len: usize) -> Vec<Vec<u8>> {
    let start = log.next_offset();
    let entries: Vec<Vec<u8>> = (start..start + count)
        .map(|o| entry(o, payload_len))
        .collect();
    for e in &entries {
        log.append(e).unwrap();
    }
    log.commit().unwrap();
    entries
}

fn read_all(log: &TopicLog, from: u64) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    log.read(from, usize::MAX, usize::MAX, |offset, e| {
        out.push((offset, e.to_vec()))
    })
    .unwrap();
    out
}

fn expected_from(entries: &[Vec<u8>], from: u64) -> Vec<(u64, Vec<u8>)> {
    entries
        .iter()
        .enumerate()
        .skip(from as usize)
        .map(|(i, e)| (i as u64, e.clone()))
        .collect()
}

fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    files.sort();
    files
}

fn flip_byte(path: &Path, position: u64) {
    let mut bytes = fs::read(path).unwrap();
    bytes[position as usize] ^= 0x55;
    fs::write(path, bytes).unwrap();
}

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

/// Cuts the last record at every byte position, as a crash in the middle of a write would, and
/// checks that recovery keeps every earlier entry and that the log accepts the lost offset again.
#[test]
fn recovery_truncates_torn_last_record_at_every_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..small_config(true)
    };
    let name = topic("live");
    let (entries, segment, full) = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &config).unwrap();
        let entries = append_and_commit(&mut log, 10, 50);
        let segment = segment_files(&data.topic_dir(&name)).pop().unwrap();
        let full = fs::read(&segment).unwrap();
        (entries, segment, full)
    };
    let last_start = full.len() as u64 - record_len(&entries[9]);

    for cut in last_start..full.len() as u64 {
        fs::write(&segment, &full[..cut as usize]).unwrap();

        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &config).unwrap();
        assert_eq!(log.committed_offset(), 9, "cut at {cut}");
        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries[..9], 0),
            "cut at {cut}"
        );
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            last_start,
            "cut at {cut}"
        );

        log.append(&entries[9]).unwrap();
        assert_eq!(log.commit().unwrap(), 10, "cut at {cut}");
    }
    assert_eq!(fs::read(&segment).unwrap(), full);
}

#[test]
fn recovery_drops_garbage_after_last_record() {
    for garbage in [
        vec![0u8; 100],
        vec![0xff; 3],
        (0..=255u8).collect::<Vec<u8>>(),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let name = topic("live");
        let entries = {
            let data = DataDir::open(tmp.path()).unwrap();
            let mut log = data.open_topic(&name, &small_config(true)).unwrap();
            append_and_commit(&mut log, 5, 20)
        };
        let data = DataDir::open(tmp.path()).unwrap();
        let segment = segment_files(&data.topic_dir(&name)).pop().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let clean_len = bytes.len() as u64;
        bytes.extend_from_slice(&garbage);
        fs::write(&segment, bytes).unwrap();

        let log = data.open_topic(&name, &small_config(true)).unwrap();
        assert_eq!(log.committed_offset(), 5);
        assert_eq!(read_all(&log, 0), expected_from(&entries, 0));
        assert_eq!(fs::metadata(&segment).unwrap().len(), clean_len);
    }
}

#[test]
fn recovery_drops_last_record_with_bad_crc() {
    let tmp = tempfile::tempdir().unwrap();
    let name = topic("live");
    let entries = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        append_and_commit(&mut log, 5, 20)
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let segment = segment_files(&data.topic_dir(&name)).pop().unwrap();
    let len = fs::metadata(&segment).unwrap().len();
    flip_byte(&segment, len - 1);

    let log = data.open_topic(&name, &small_config(true)).unwrap();
    assert_eq!(log.committed_offset(), 4);
    assert_eq!(read_all(&log, 0), expected_from(&entries[..4], 0));
}

#[test]
fn corrupt_record_in_closed_segment_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let name = topic("live");
    let entries = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        let entries = append_and_commit(&mut log, 30, 40);
        assert!(log.segment_count() >= 3);
        entries
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let first = segment_files(&data.topic_dir(&name)).remove(0);
    // The last byte of the second record's payload.
    let second_end = SEGMENT_HEADER_LEN + record_len(&entries[0]) + record_len(&entries[1]);
    flip_byte(&first, second_end - 1);

    let error = data.open_topic(&name, &small_config(true)).unwrap_err();
    match error {
        StorageError::Corrupt { path, position, .. } => {
            assert_eq!(path, first);
            assert_eq!(position, SEGMENT_HEADER_LEN + record_len(&entries[0]));
        }
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn gap_between_segments_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let name = topic("live");
    {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        append_and_commit(&mut log, 30, 40);
    }
    let data = DataDir::open(tmp.path()).unwrap();
    let files = segment_files(&data.topic_dir(&name));
    assert!(files.len() >= 3);
    fs::remove_file(&files[1]).unwrap();

    let error = data.open_topic(&name, &small_config(true)).unwrap_err();
    match error {
        StorageError::Corrupt { path, .. } => assert_eq!(path, files[2]),
        other => panic!("expected Corrupt, got {other}"),
    }
}

#[test]
fn empty_trailing_segment_file_is_repaired() {
    for contents in [Vec::new(), vec![b'C', b'H', b'R'], vec![0u8; 16]] {
        let tmp = tempfile::tempdir().unwrap();
        let name = topic("live");
        let entries = {
            let data = DataDir::open(tmp.path()).unwrap();
            let mut log = data.open_topic(&name, &small_config(true)).unwrap();
            append_and_commit(&mut log, 5, 20)
        };
        let data = DataDir::open(tmp.path()).unwrap();
        let trailing = data.topic_dir(&name).join("00000000000000000005.log");
        fs::write(&trailing, &contents).unwrap();

        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        assert_eq!(log.committed_offset(), 5);
        assert_eq!(log.segment_count(), 2);
        assert_eq!(fs::metadata(&trailing).unwrap().len(), SEGMENT_HEADER_LEN);
        assert_eq!(read_all(&log, 0), expected_from(&entries, 0));
        append_and_commit(&mut log, 1, 20);
        assert_eq!(read_all(&log, 5).len(), 1);
    }
}

#[test]
fn foreign_segment_header_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    drop(data.open_topic(&name, &small_config(true)).unwrap());
    let segment = segment_files(&data.topic_dir(&name)).pop().unwrap();
    fs::write(&segment, b"NOTASEGMENTFILE!").unwrap();

    let error = data.open_topic(&name, &small_config(true)).unwrap_err();
    assert!(
        matches!(error, StorageError::Corrupt { position: 0, .. }),
        "{error}"
    );
}

#[test]
fn missing_metadata_with_segments_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    drop(data.open_topic(&name, &small_config(true)).unwrap());
    fs::remove_file(data.topic_dir(&name).join("topic.meta")).unwrap();

    let error = data.open_topic(&name, &small_config(true)).unwrap_err();
    assert!(matches!(error, StorageError::Corrupt { .. }), "{error}");
}

#[test]
fn topic_without_segments_starts_new_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    let old_stream_id = {
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        append_and_commit(&mut log, 3, 10);
        log.stream_id()
    };
    for path in segment_files(&data.topic_dir(&name)) {
        fs::remove_file(path).unwrap();
    }

    let log = data.open_topic(&name, &small_config(true)).unwrap();
    assert_ne!(log.stream_id(), old_stream_id);
    assert_eq!(log.next_offset(), 0);
}

#[test]
fn unknown_file_in_topic_directory_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let data = DataDir::open(tmp.path()).unwrap();
    let name = topic("live");
    drop(data.open_topic(&name, &small_config(true)).unwrap());
    fs::write(data.topic_dir(&name).join("notes.txt"), b"hello").unwrap();

    assert!(data.open_topic(&name, &small_config(true)).is_ok());
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
