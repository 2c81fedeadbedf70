//! Recovery of files that a crash, a power loss or an outside change left damaged: every cut
//! and every garbled byte of the active segment, a closed segment, both index files and the
//! metadata file.

use std::fs;

use chorus_broker::storage::{DataDir, LogConfig, StorageError};

use crate::util::*;

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

        // The cut bytes are kept beside the log for an operator to inspect.
        let quarantine = data.topic_dir(&name).join("quarantine");
        let kept: Vec<_> = fs::read_dir(&quarantine)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(kept.len(), 1);
        assert_eq!(fs::read(&kept[0]).unwrap(), garbage);
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

/// A closed segment with trusted index files is not scanned at open, so damage inside it shows
/// only when a read reaches it. The read passes on every entry before the damaged record and
/// then fails, instead of returning the damaged record.
#[test]
fn damaged_record_in_indexed_segment_fails_the_read() {
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

    let log = data.open_topic(&name, &small_config(true)).unwrap();
    assert_eq!(log.committed_offset(), 30);
    let (read, error) = read_until_error(&log);
    assert_eq!(read, expected_from(&entries[..1], 0));
    match error {
        Some(StorageError::Corrupt { path, position, .. }) => {
            assert_eq!(path, first);
            assert_eq!(position, SEGMENT_HEADER_LEN + record_len(&entries[0]));
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

/// Without index files a closed segment is scanned. Damage found there ends the log: the
/// segment is cut before the damaged record, later segments are deleted, and appends continue
/// at the first lost offset.
#[test]
fn damaged_record_in_scanned_segment_cuts_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let name = topic("live");
    let entries = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&name, &small_config(true)).unwrap();
        append_and_commit(&mut log, 30, 40)
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&name);
    let first = segment_files(&dir).remove(0);
    for path in files_with_extension(&dir, "index") {
        fs::remove_file(path).unwrap();
    }
    let second_end = SEGMENT_HEADER_LEN + record_len(&entries[0]) + record_len(&entries[1]);
    flip_byte(&first, second_end - 1);

    let mut log = data.open_topic(&name, &small_config(true)).unwrap();
    assert_eq!(log.committed_offset(), 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(segment_files(&dir), vec![first]);
    assert_eq!(read_all(&log, 0), expected_from(&entries[..1], 0));
    append_and_commit(&mut log, 1, 40);
    assert_eq!(read_all(&log, 1), vec![(1, entry(1, 40))]);
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

/// Writes 30 entries of 40 payload bytes to topic `live` in segments of 512 bytes, closes the
/// log and returns the entries.
fn write_closed_segments(root: &std::path::Path, config: &LogConfig) -> Vec<Vec<u8>> {
    let data = DataDir::open(root).unwrap();
    let mut log = data.open_topic(&topic("live"), config).unwrap();
    let entries = append_and_commit(&mut log, 30, 40);
    assert!(log.segment_count() >= 3);
    entries
}

/// Returns the positions at which a test damages a segment of `len` bytes whose records are
/// `lens` long. Every byte of the first two records is one, which covers each field of a record
/// both at the start of a segment and after another record. After them every fifth byte is
/// one, which reaches every later record. Each case reopens the log after a repair that flushes
/// files, so damaging every byte would take minutes.
fn damage_positions(len: u64, lens: &[u64]) -> Vec<u64> {
    let every_byte_until = SEGMENT_HEADER_LEN + lens.iter().take(2).sum::<u64>();
    (SEGMENT_HEADER_LEN..len)
        .filter(|&p| p < every_byte_until || p % 5 == 0)
        .collect()
}

/// Returns the index of the record that contains byte `position` of a segment whose records
/// are `lens` long, or `None` for a byte of the segment header.
fn record_at(position: u64, lens: &[u64]) -> Option<usize> {
    let mut start = SEGMENT_HEADER_LEN;
    for (i, len) in lens.iter().enumerate() {
        if position < start + len {
            return (position >= start).then_some(i);
        }
        start += len;
    }
    None
}

/// Cuts each index file of the first closed segment at every length and garbles each of its
/// bytes. Every time the log opens with all entries readable, and the file is rebuilt with the
/// bytes it had.
#[test]
fn damaged_index_files_are_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let entries = write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let first = segment_files(&dir).remove(0);

    for index in [
        first.with_extension("index"),
        first.with_extension("timeindex"),
    ] {
        let good = fs::read(&index).unwrap();
        let cuts = (0..good.len()).map(|cut| good[..cut].to_vec());
        let flips = (0..good.len()).map(|i| {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            bad
        });
        for (case, bad) in cuts.chain(flips).enumerate() {
            fs::write(&index, &bad).unwrap();
            let log = data.open_topic(&topic("live"), &config).unwrap();
            let label = format!("{} case {case}", index.display());
            assert_eq!(read_all(&log, 0), expected_from(&entries, 0), "{label}");
            assert_eq!(fs::read(&index).unwrap(), good, "{label}");
        }
    }
}

/// The metadata file contains the stream id, which nothing else can restore. A cut or garbled
/// file makes the open fail rather than start a stream under another id.
#[test]
fn damaged_metadata_file_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let meta = data.topic_dir(&topic("live")).join("topic.meta");
    let good = fs::read(&meta).unwrap();

    let cuts = (0..good.len()).map(|cut| good[..cut].to_vec());
    let flips = (0..good.len()).map(|i| {
        let mut bad = good.clone();
        bad[i] ^= 0x01;
        bad
    });
    for (case, bad) in cuts.chain(flips).enumerate() {
        fs::write(&meta, &bad).unwrap();
        let error = data.open_topic(&topic("live"), &config).unwrap_err();
        assert!(
            matches!(error, StorageError::Corrupt { .. }),
            "case {case}: {error}"
        );
    }
}

/// Garbles every record byte of the active segment. Recovery keeps every entry before the
/// damaged record and nothing from it on, and the log takes the lost offset again.
#[test]
fn garbled_active_segment_keeps_entries_before_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 64 * 1024,
        ..small_config(true)
    };
    let entries = {
        let data = DataDir::open(tmp.path()).unwrap();
        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        append_and_commit(&mut log, 12, 25)
    };
    let data = DataDir::open(tmp.path()).unwrap();
    let segment = segment_files(&data.topic_dir(&topic("live"))).remove(0);
    let good = fs::read(&segment).unwrap();
    let lens: Vec<u64> = entries.iter().map(|e| record_len(e)).collect();

    for position in SEGMENT_HEADER_LEN..good.len() as u64 {
        let mut bad = good.clone();
        bad[position as usize] ^= 0x20;
        fs::write(&segment, &bad).unwrap();

        let mut log = data.open_topic(&topic("live"), &config).unwrap();
        let damaged = record_at(position, &lens).unwrap();
        assert_eq!(log.committed_offset(), damaged as u64, "byte {position}");
        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries[..damaged], 0),
            "byte {position}"
        );
        log.append(&entries[damaged]).unwrap();
        log.commit().unwrap();
        drop(log);
        fs::write(&segment, &good).unwrap();
    }
}

/// Garbles the record bytes of the first closed segment, whose index files record that it was
/// written before a reboot without a flush, so recovery scans it. The log ends before the damaged
/// record; no damaged entry is ever read.
#[test]
fn garbled_unflushed_closed_segment_cuts_at_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let entries = write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let pristine = snapshot(&dir);
    let first = segment_files(&dir).remove(0);
    let good = fs::read(&first).unwrap();
    let lens: Vec<u64> = entries.iter().map(|e| record_len(e)).collect();

    for position in damage_positions(good.len() as u64, &lens) {
        restore(&dir, &pristine);
        move_indexes_to_earlier_boot(&dir);
        flip_byte(&first, position);

        let log = data.open_topic(&topic("live"), &config).unwrap();
        let damaged = record_at(position, &lens).unwrap();
        assert_eq!(log.committed_offset(), damaged as u64, "byte {position}");
        assert_eq!(log.segment_count(), 1, "byte {position}");
        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries[..damaged], 0),
            "byte {position}"
        );
    }
}

/// Garbles every record byte of the first closed segment while its index files are trusted,
/// as after a crash of the process alone. The open does not scan it; a read returns the
/// entries before the damaged record and then fails.
#[test]
fn garbled_trusted_closed_segment_fails_reads_at_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let entries = write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let first = segment_files(&dir).remove(0);
    let good = fs::read(&first).unwrap();
    let lens: Vec<u64> = entries.iter().map(|e| record_len(e)).collect();

    for position in SEGMENT_HEADER_LEN..good.len() as u64 {
        flip_byte(&first, position);
        let log = data.open_topic(&topic("live"), &config).unwrap();
        let damaged = record_at(position, &lens).unwrap();
        let (read, error) = read_until_error(&log);
        assert_eq!(
            read,
            expected_from(&entries[..damaged], 0),
            "byte {position}"
        );
        assert!(
            matches!(error, Some(StorageError::Corrupt { .. })),
            "byte {position}: {error:?}"
        );
        drop(log);
        fs::write(&first, &good).unwrap();
    }
}

/// A garbled header is not a torn write: zeros are what a crash leaves, other bytes mean the
/// file is not a segment of this format, and the log refuses to guess.
#[test]
fn garbled_closed_segment_header_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let first = segment_files(&data.topic_dir(&topic("live"))).remove(0);
    let good = fs::read(&first).unwrap();

    for position in 0..SEGMENT_HEADER_LEN {
        flip_byte(&first, position);
        let error = data.open_topic(&topic("live"), &config).unwrap_err();
        assert!(
            matches!(error, StorageError::Corrupt { position: 0, .. }),
            "byte {position}: {error}"
        );
        fs::write(&first, &good).unwrap();
    }
}

/// A closed segment cut short, as a power loss under `fsync = "never"` can leave it, ends the
/// log at the cut whatever follows.
#[test]
fn cut_unflushed_closed_segment_ends_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let config = small_config(true);
    let entries = write_closed_segments(tmp.path(), &config);
    let data = DataDir::open(tmp.path()).unwrap();
    let dir = data.topic_dir(&topic("live"));
    let pristine = snapshot(&dir);
    let first = segment_files(&dir).remove(0);
    let good = fs::read(&first).unwrap();
    let lens: Vec<u64> = entries.iter().map(|e| record_len(e)).collect();

    let cuts = (0..SEGMENT_HEADER_LEN).chain(damage_positions(good.len() as u64, &lens));
    for cut in cuts {
        restore(&dir, &pristine);
        move_indexes_to_earlier_boot(&dir);
        fs::write(&first, &good[..cut as usize]).unwrap();

        let log = data.open_topic(&topic("live"), &config).unwrap();
        // Whole records before the cut survive.
        let kept = (0..lens.len())
            .take_while(|&i| SEGMENT_HEADER_LEN + lens[..=i].iter().sum::<u64>() <= cut)
            .count();
        assert_eq!(log.committed_offset(), kept as u64, "cut {cut}");
        assert_eq!(
            read_all(&log, 0),
            expected_from(&entries[..kept], 0),
            "cut {cut}"
        );
    }
}
