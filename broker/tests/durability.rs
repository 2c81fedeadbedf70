//! The segment log through a real chorusd: acknowledged comments survive SIGKILL, retention
//! deletes old segments and idle topics, per-topic settings apply, and subscriptions can start
//! at a broker time.

mod util;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::{Connection, ErrorCode, Frame, StartAt, Topic};
use util::client::{collect_events, connect, padded_payload, publish_pipelined, topic};
use util::{list_dir, wait_until, Broker, TestDir};

/// Publishes sent before their acknowledgements are read, in the SIGKILL test.
const WINDOW: usize = 256;

/// Acknowledged comments to wait for before each kill.
const ACKED_BEFORE_KILL: usize = 3_000;

/// How long a test waits for the retention thread to act.
const RETENTION_TIMEOUT: Duration = Duration::from_secs(20);

/// Acknowledged (offset, payload) pairs, shared with the publishing thread.
type Acked = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// Publishes numbered comments in windows of [`WINDOW`] until the connection fails, and records
/// each acknowledged one. Returns when the broker is gone.
fn publish_until_killed(mut conn: Connection, topic: Topic, label: String, acked: Acked) {
    let mut next = 0u64;
    loop {
        let mut by_seq = HashMap::with_capacity(WINDOW);
        for _ in 0..WINDOW {
            let payload = padded_payload(&format!("{label} comment {next}"), 120);
            next += 1;
            match conn.send_publish(&topic, &payload) {
                Ok(seq) => by_seq.insert(seq, payload),
                Err(_) => return,
            };
        }
        if conn.flush().is_err() {
            return;
        }
        while !by_seq.is_empty() {
            match conn.recv() {
                Ok(Frame::PublishAck(ack)) => {
                    assert_eq!(ack.code, ErrorCode::Ok, "publish {} rejected", ack.seq);
                    let payload = by_seq.remove(&ack.seq).expect("ack for a sent publish");
                    acked.lock().unwrap().push((ack.offset, payload));
                }
                Ok(other) => panic!("expected PUBLISH_ACK, got {other:?}"),
                Err(_) => return,
            }
        }
    }
}

/// Subscribes from the earliest comment and returns every comment up to the end of the topic,
/// as (offset, payload) in delivery order.
fn read_whole_topic(addr: &str, topic: &Topic) -> Vec<(u64, Vec<u8>)> {
    let mut conn = connect(addr);
    let subscribed = conn.subscribe(topic, StartAt::Earliest, 0).unwrap();
    let count = (subscribed.end - subscribed.start) as usize;
    collect_events(&mut conn, topic, count)
        .into_iter()
        .map(|e| (e.offset, e.payload.to_vec()))
        .collect()
}

/// A publisher streams pipelined comments while chorusd is killed with SIGKILL, three times
/// over. After each restart every acknowledged offset has its payload, and the topic's
/// offsets run from 0 without a gap or a repeat. Small segments make the stream cross segment
/// closes, so index files are written and then trusted across the restarts.
#[test]
fn acknowledged_comments_survive_sigkill() {
    let dir = TestDir::new();
    let config = dir.write_config("[storage]\nsegment_bytes = 65536\n");
    let topic = topic("live/sigkill");
    let mut all_acked: Vec<(u64, Vec<u8>)> = Vec::new();

    for round in 0..3 {
        let mut broker = Broker::start(&dir.data(), &["--config", &config]);
        let acked: Acked = Arc::new(Mutex::new(Vec::new()));
        let publisher = {
            let conn = connect(&broker.addr_string());
            let (topic, acked) = (topic.clone(), Arc::clone(&acked));
            thread::spawn(move || {
                publish_until_killed(conn, topic, format!("round {round}"), acked)
            })
        };
        let enough = wait_until(Duration::from_secs(60), || {
            acked.lock().unwrap().len() >= ACKED_BEFORE_KILL
        });
        assert!(
            enough,
            "round {round}: publishes were not acknowledged in time"
        );
        broker.kill();
        publisher.join().expect("publisher thread panicked");
        all_acked.extend(acked.lock().unwrap().drain(..));

        let broker = Broker::start(&dir.data(), &["--config", &config]);
        let stored = read_whole_topic(&broker.addr_string(), &topic);
        let offsets: Vec<u64> = stored.iter().map(|(offset, _)| *offset).collect();
        let expected: Vec<u64> = (0..stored.len() as u64).collect();
        assert_eq!(
            offsets, expected,
            "round {round}: offsets are not 0, 1, 2, ..."
        );
        for (offset, payload) in &all_acked {
            let found = stored.get(*offset as usize).map(|(_, p)| p);
            assert_eq!(
                found,
                Some(payload),
                "round {round}: acknowledged offset {offset}"
            );
        }
        drop(broker);
    }
    assert!(
        list_dir(&dir.data().join("topics/live+sigkill"))
            .iter()
            .any(|name| name.ends_with(".index")),
        "the stream never closed a segment"
    );
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

#[test]
fn subscribe_since_time_starts_at_first_newer_comment() {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let addr = broker.addr_string();
    let topic = topic("live/since");
    let mut publisher = connect(&addr);
    let early: Vec<Vec<u8>> = (0..5).map(|i| format!("early {i}").into_bytes()).collect();
    publish_pipelined(&mut publisher, &topic, &early);

    // Broker times are the broker's wall clock, which is this machine's clock.
    thread::sleep(Duration::from_millis(20));
    let since = now_us();
    thread::sleep(Duration::from_millis(20));
    let late: Vec<Vec<u8>> = (0..3).map(|i| format!("late {i}").into_bytes()).collect();
    publish_pipelined(&mut publisher, &topic, &late);

    let mut conn = connect(&addr);
    let subscribed = conn.subscribe(&topic, StartAt::Since(since), 0).unwrap();
    assert_eq!(subscribed.start, 5);
    assert_eq!(subscribed.end, 8);
    let events = collect_events(&mut conn, &topic, 3);
    assert_eq!(events[0].payload.as_ref(), b"late 0");
    assert!(events[0].time_us >= since);

    let mut conn = connect(&addr);
    let subscribed = conn.subscribe(&topic, StartAt::Since(0), 0).unwrap();
    assert_eq!(subscribed.start, 0);
    let mut conn = connect(&addr);
    let subscribed = conn
        .subscribe(&topic, StartAt::Since(now_us() + 60_000_000), 0)
        .unwrap();
    assert_eq!(subscribed.start, 8);
}

/// Returns a `[storage]` table with a retention check every 100 ms and segments of 1 KiB,
/// followed by `extra`.
fn fast_retention(extra: &str) -> String {
    format!("[storage]\nsegment_bytes = 1024\nretention_check_interval_ms = 100\n{extra}")
}

#[test]
fn retention_deletes_old_segments() {
    let dir = TestDir::new();
    let config = dir.write_config(&fast_retention("retention_ms = 500\n"));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let addr = broker.addr_string();
    let topic = topic("live/old");
    let payloads: Vec<Vec<u8>> = (0..50)
        .map(|i| padded_payload(&format!("c{i}"), 100))
        .collect();
    publish_pipelined(&mut connect(&addr), &topic, &payloads);

    // Every segment passes retention, the active one is closed, and all are deleted.
    let emptied = wait_until(RETENTION_TIMEOUT, || {
        let mut conn = connect(&addr);
        let subscribed = conn.subscribe(&topic, StartAt::Earliest, 0).unwrap();
        subscribed.earliest == 50
    });
    assert!(emptied, "earliest offset did not reach 50");
    broker.wait_for_log("deleted segments past retention", RETENTION_TIMEOUT);
    let files = list_dir(&dir.data().join("topics/live+old"));
    let segments: Vec<&String> = files.iter().filter(|f| f.ends_with(".log")).collect();
    assert_eq!(segments, vec!["00000000000000000050.log"]);

    // The topic goes on from its end.
    let acks = publish_pipelined(&mut connect(&addr), &topic, &payloads[..1]);
    assert_eq!(acks[0].offset, 50);
}

#[test]
fn per_topic_retention_overrides_broker_default() {
    let dir = TestDir::new();
    let extra =
        "retention_ms = 0\n[[storage.topics]]\npattern = \"short/**\"\nretention_ms = 300\n";
    let config = dir.write_config(&fast_retention(extra));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let addr = broker.addr_string();
    let payloads: Vec<Vec<u8>> = (0..30)
        .map(|i| padded_payload(&format!("c{i}"), 100))
        .collect();
    let short = topic("short/lived/topic");
    let kept = topic("kept/topic");
    publish_pipelined(&mut connect(&addr), &short, &payloads);
    publish_pipelined(&mut connect(&addr), &kept, &payloads);

    let trimmed = wait_until(RETENTION_TIMEOUT, || {
        let mut conn = connect(&addr);
        conn.subscribe(&short, StartAt::Earliest, 0)
            .unwrap()
            .earliest
            == 30
    });
    assert!(trimmed, "the short topic kept its segments");
    let mut conn = connect(&addr);
    let subscribed = conn.subscribe(&kept, StartAt::Earliest, 0).unwrap();
    assert_eq!(subscribed.earliest, 0);
}

#[test]
fn idle_topic_is_deleted_and_recreated() {
    let dir = TestDir::new();
    let config = dir.write_config(&fast_retention("topic_idle_delete_ms = 300\n"));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let addr = broker.addr_string();
    let topic = topic("event/ended");
    let first = publish_pipelined(&mut connect(&addr), &topic, &[b"bye".to_vec()]);

    let topic_dir = dir.data().join("topics/event+ended");
    let deleted = wait_until(RETENTION_TIMEOUT, || !topic_dir.exists());
    assert!(deleted, "idle topic was not deleted");
    broker.wait_for_log("deleted a topic that had no publish", RETENTION_TIMEOUT);

    let again = publish_pipelined(&mut connect(&addr), &topic, &[b"hello again".to_vec()]);
    assert_eq!(again[0].offset, 0);
    assert_ne!(again[0].stream, first[0].stream);
}

#[test]
fn idle_topic_with_subscriber_is_kept() {
    let dir = TestDir::new();
    let config = dir.write_config(&fast_retention("topic_idle_delete_ms = 200\n"));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let addr = broker.addr_string();
    let topic = topic("event/watched");
    publish_pipelined(&mut connect(&addr), &topic, &[b"still here".to_vec()]);
    let mut viewer = connect(&addr);
    viewer.subscribe(&topic, StartAt::Latest, 0).unwrap();

    // Several retention passes run in this time; none may delete the watched topic.
    let deleted = wait_until(Duration::from_millis(1_500), || {
        !dir.data().join("topics/event+watched").exists()
    });
    assert!(!deleted, "a topic with a subscriber was deleted");
}

/// Topics on disk that no client opened since the start are still found and trimmed.
#[test]
fn retention_reaches_topics_not_opened_since_start() {
    let dir = TestDir::new();
    let payloads: Vec<Vec<u8>> = (0..30)
        .map(|i| padded_payload(&format!("c{i}"), 100))
        .collect();
    let topic = topic("archive/cold");
    {
        let mut broker = Broker::start(&dir.data(), &[]);
        publish_pipelined(&mut connect(&broker.addr_string()), &topic, &payloads);
        assert!(broker.stop(), "chorusd did not stop cleanly");
    }
    let config = dir.write_config(&fast_retention("topic_idle_delete_ms = 200\n"));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let topic_dir = dir.data().join("topics/archive+cold");
    let deleted = wait_until(RETENTION_TIMEOUT, || !topic_dir.exists());
    assert!(deleted, "the untouched idle topic was not deleted");
    drop(broker);
}
