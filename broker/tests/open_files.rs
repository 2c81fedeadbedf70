//! A real chorusd with `storage.max_open_files = 64` serves 1,000 topics with several segments
//! each, and its open segment files, counted in `/proc/<pid>/fd`, stay within that budget.

mod util;

use std::fs;
use std::path::Path;

use chorus_client::StartAt;
use util::client::{collect_events, connect, padded_payload, publish_pipelined, topic};
use util::{Broker, TestDir};

const TOPICS: usize = 1_000;
const COMMENTS_PER_TOPIC: usize = 30;
const BUDGET: usize = 64;

/// Descriptors that chorusd may open beyond its idle count besides segment files: the client
/// connection, one in flight while it opens a segment before closing the least recently used,
/// and one for an index file or directory flush.
const SLACK: usize = 4;

/// Returns the descriptors of process `pid` as the paths they point to.
fn descriptor_targets(pid: u32) -> Vec<String> {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list the broker's descriptors")
        .filter_map(|entry| fs::read_link(entry.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect()
}

/// Returns the number of descriptors of process `pid` that point to segment files in `data`.
fn open_segment_files(pid: u32, data: &Path) -> usize {
    let data = data.canonicalize().expect("the data directory exists");
    let data = data.to_string_lossy().into_owned();
    descriptor_targets(pid)
        .iter()
        .filter(|target| target.starts_with(&data) && target.ends_with(".log"))
        .count()
}

fn payload(topic_index: usize, offset: usize) -> Vec<u8> {
    padded_payload(&format!("t{topic_index}-c{offset}"), 150)
}

#[test]
fn chorusd_stays_within_file_budget() {
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[storage]\nsegment_bytes = 2048\nmax_open_files = {BUDGET}\nidle_close_ms = 600000\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let pid = broker.pid();
    let idle_descriptors = descriptor_targets(pid).len();

    let mut publisher = connect(&broker.addr_string());
    let mut max_segment_files = 0;
    let mut max_descriptors = 0;
    for t in 0..TOPICS {
        let payloads: Vec<Vec<u8>> = (0..COMMENTS_PER_TOPIC).map(|c| payload(t, c)).collect();
        let acks = publish_pipelined(&mut publisher, &topic(&format!("live/{t}")), &payloads);
        assert_eq!(acks.len(), COMMENTS_PER_TOPIC);
        if t % 50 == 0 {
            max_segment_files = max_segment_files.max(open_segment_files(pid, &dir.data()));
            max_descriptors = max_descriptors.max(descriptor_targets(pid).len());
        }
    }
    drop(publisher);
    let segment_files = fs::read_dir(dir.data().join("topics/live+0"))
        .expect("list a topic directory")
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".log"))
        .count();
    assert!(segment_files >= 3, "{segment_files} segments per topic");

    let mut reader = connect(&broker.addr_string());
    for t in 0..TOPICS {
        let name = topic(&format!("live/{t}"));
        let subscribed = reader.subscribe(&name, StartAt::Earliest, 0).unwrap();
        assert_eq!(subscribed.end, COMMENTS_PER_TOPIC as u64, "end of {name}");
        let events = collect_events(&mut reader, &name, COMMENTS_PER_TOPIC);
        for (c, event) in events.iter().enumerate() {
            assert_eq!(event.offset, c as u64, "offset in {name}");
            assert_eq!(event.payload.as_ref(), payload(t, c), "payload in {name}");
        }
        reader.unsubscribe(&name).unwrap();
        if t % 50 == 0 {
            max_segment_files = max_segment_files.max(open_segment_files(pid, &dir.data()));
            max_descriptors = max_descriptors.max(descriptor_targets(pid).len());
        }
    }

    assert!(
        max_segment_files <= BUDGET + SLACK,
        "{max_segment_files} segment files open"
    );
    assert!(
        max_descriptors <= idle_descriptors + BUDGET + SLACK,
        "{max_descriptors} descriptors open, {idle_descriptors} before the first publish"
    );
    let at_rest = open_segment_files(pid, &dir.data());
    assert!(
        at_rest <= BUDGET,
        "{at_rest} segment files open after the run"
    );
}
