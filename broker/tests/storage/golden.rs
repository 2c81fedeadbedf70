//! Golden files of storage format version 1, checked in under `spec/storage/v1/`.
//!
//! `golden_files_read_back` opens the checked-in files and reads the entries listed in
//! `expected.txt`, so a reader that stops understanding version 1 fails here.
//! `writer_reproduces_golden_files` writes the same entries again and compares every byte, so a
//! change to what the log writes fails here too, and needs either a fix or a new format version
//! with new golden files.
//!
//! To regenerate the files after a deliberate format change:
//!
//! ```text
//! cargo test -p chorus-broker --test storage golden::regenerate_golden_files -- --ignored
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use bytes::BytesMut;
use chorus_broker::storage::{DataDir, FsyncPolicy, LogConfig};
use chorus_protocol::event::encode_entry;

use crate::util::*;

/// Topic of the golden log; its directory is `live+final`.
const GOLDEN_TOPIC: &str = "live/final";

/// Stream id written into the golden `topic.meta`, in place of a random one.
const GOLDEN_STREAM_ID: u64 = 0x0123_4567_89ab_cdef;

/// Broker time of the first golden entry: 2026-01-01T00:00:00Z in microseconds.
const GOLDEN_START_US: u64 = 1_767_225_600_000_000;

/// Returns `spec/storage/v1` in the source tree.
fn golden_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../spec/storage/v1")
}

/// Settings the golden files are written with: small segments so that there are several, and
/// `always` so that index files record flushed segments and carry no boot id.
fn golden_config() -> LogConfig {
    LogConfig {
        segment_bytes: 256,
        segment_ms: 0,
        index_interval_bytes: 64,
        time_index_interval_bytes: 128,
        fsync: FsyncPolicy::Always,
        use_mmap: true,
        retention_ms: 0,
        retention_bytes: 0,
        topic_idle_delete_ms: 0,
    }
}

/// One golden entry: offset, broker time, flags, publisher id and payload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GoldenEntry {
    offset: u64,
    time_us: u64,
    flags: u8,
    publisher: String,
    payload: Vec<u8>,
}

impl GoldenEntry {
    fn encode(&self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode_entry(
            &mut buf,
            self.offset,
            self.time_us,
            self.flags,
            &self.publisher,
            &self.payload,
        );
        buf.to_vec()
    }
}

/// The entries the generator writes: a mix of publisher ids, empty and non-ASCII payloads, and
/// times 250 ms apart.
fn golden_entries() -> Vec<GoldenEntry> {
    let payloads: [&[u8]; 12] = [
        b"what a goal",
        b"",
        "\u{26bd}\u{26bd}\u{26bd}".as_bytes(),
        b"offside?",
        &[0x00, 0xff, 0x10, 0x80],
        b"VAR check",
        b"a longer comment that fills most of a segment on its own, to make a roll happen early",
        b"penalty",
        b"saved!",
        b"",
        b"full time",
        b"see you next week",
    ];
    payloads
        .iter()
        .enumerate()
        .map(|(i, payload)| GoldenEntry {
            offset: i as u64,
            time_us: GOLDEN_START_US + 250_000 * i as u64,
            flags: 0,
            publisher: ["", "user-1", "moderation"][i % 3].to_owned(),
            payload: payload.to_vec(),
        })
        .collect()
}

/// Writes the golden topic into the data directory at `root` and returns its topic directory.
fn write_golden_topic(root: &Path) -> PathBuf {
    let data = DataDir::open(root).unwrap();
    let name = topic(GOLDEN_TOPIC);
    let mut log = data.open_topic(&name, &golden_config()).unwrap();
    for golden in golden_entries() {
        log.append(&golden.encode()).unwrap();
        log.commit().unwrap();
    }
    assert!(log.segment_count() >= 3, "{}", log.segment_count());
    drop(log);

    let dir = data.topic_dir(&name);
    fs::write(dir.join("topic.meta"), encode_meta(GOLDEN_STREAM_ID)).unwrap();
    dir
}

/// Encodes `topic.meta` as `spec/STORAGE.md` describes it.
fn encode_meta(stream_id: u64) -> Vec<u8> {
    let mut bytes = b"CHRTOP".to_vec();
    bytes.extend_from_slice(&1u16.to_be_bytes());
    bytes.extend_from_slice(&stream_id.to_be_bytes());
    bytes.extend_from_slice(&0u16.to_be_bytes());
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_be_bytes());
    bytes
}

/// Formats the entries as `expected.txt`: one line per entry with offset, time, flags,
/// publisher id (`-` when empty) and payload in hexadecimal (`-` when empty).
fn format_expected(entries: &[GoldenEntry]) -> String {
    let mut text = String::from("# offset time_us flags publisher payload_hex\n");
    for e in entries {
        let publisher = if e.publisher.is_empty() {
            "-"
        } else {
            &e.publisher
        };
        let payload = if e.payload.is_empty() {
            "-".to_owned()
        } else {
            e.payload.iter().map(|b| format!("{b:02x}")).collect()
        };
        text.push_str(&format!(
            "{} {} {} {publisher} {payload}\n",
            e.offset, e.time_us, e.flags
        ));
    }
    text
}

/// Parses `expected.txt`.
fn parse_expected(text: &str) -> Vec<GoldenEntry> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 5, "line {line:?}");
            let text_or_empty = |field: &str| if field == "-" { "" } else { field }.to_owned();
            let hex = text_or_empty(fields[4]);
            GoldenEntry {
                offset: fields[0].parse().unwrap(),
                time_us: fields[1].parse().unwrap(),
                flags: fields[2].parse().unwrap(),
                publisher: text_or_empty(fields[3]),
                payload: (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                    .collect(),
            }
        })
        .collect()
}

/// Copies the golden topic directory into a new data directory and returns both.
fn copy_golden(root: &Path) -> (DataDir, PathBuf) {
    let data = DataDir::open(root).unwrap();
    let dir = data.topic_dir(&topic(GOLDEN_TOPIC));
    restore(&dir, &snapshot(&golden_root().join("live+final")));
    (data, dir)
}

#[test]
fn golden_files_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, _) = copy_golden(tmp.path());
    let expected = parse_expected(&fs::read_to_string(golden_root().join("expected.txt")).unwrap());

    let log = data
        .open_topic(&topic(GOLDEN_TOPIC), &golden_config())
        .unwrap();
    assert_eq!(log.stream_id(), GOLDEN_STREAM_ID);
    assert_eq!(log.earliest_offset(), 0);
    assert_eq!(log.committed_offset(), expected.len() as u64);
    let encoded: Vec<Vec<u8>> = expected.iter().map(GoldenEntry::encode).collect();
    assert_eq!(read_all(&log, 0), expected_from(&encoded, 0));
    for golden in &expected {
        assert_eq!(log.offset_for_time(golden.time_us), golden.offset);
        assert_eq!(log.offset_for_time(golden.time_us - 1), golden.offset);
    }
}

/// The golden index files must be accepted as they are. A byte garbled inside a closed segment
/// goes unnoticed at open only when its index files are used instead of a scan.
#[test]
fn golden_index_files_are_used() {
    let tmp = tempfile::tempdir().unwrap();
    let (data, dir) = copy_golden(tmp.path());
    let closed = segment_files(&dir).remove(0);
    let len = fs::metadata(&closed).unwrap().len();
    flip_byte(&closed, len - 1);

    let log = data
        .open_topic(&topic(GOLDEN_TOPIC), &golden_config())
        .unwrap();
    assert_eq!(log.committed_offset(), golden_entries().len() as u64);
    let (_, error) = read_until_error(&log);
    assert!(error.is_some());
}

#[test]
fn writer_reproduces_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    let written = snapshot(&write_golden_topic(tmp.path()));
    let golden = snapshot(&golden_root().join("live+final"));
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        golden.keys().collect::<Vec<_>>()
    );
    for (name, bytes) in &written {
        assert!(
            golden[name] == *bytes,
            "{name} differs from the golden file"
        );
    }
    let expected = fs::read_to_string(golden_root().join("expected.txt")).unwrap();
    assert_eq!(format_expected(&golden_entries()), expected);
}

/// Rewrites `spec/storage/v1` from the generator; run only after a deliberate format change.
#[test]
#[ignore = "rewrites the checked-in golden files"]
fn regenerate_golden_files() {
    let tmp = tempfile::tempdir().unwrap();
    let written = snapshot(&write_golden_topic(tmp.path()));
    restore(&golden_root().join("live+final"), &written);
    let expected = format_expected(&golden_entries());
    fs::write(golden_root().join("expected.txt"), expected).unwrap();
}
