//! Helpers around the Rust client: time-bounded options, pipelined publishing, collecting
//! comments, and a well-behaved client that checks the broker still serves it.

use std::collections::HashMap;
use std::time::Duration;

use chorus_client::{Ack, Connection, ErrorCode, Event, Frame, Options, StartAt, Topic};

/// How long a client read waits for a frame before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// Publishes sent before their acknowledgements are read.
const PUBLISH_WINDOW: usize = 500;

/// Client options whose reads are bounded by [`READ_TIMEOUT`].
pub fn options() -> Options {
    Options {
        read_timeout: Some(READ_TIMEOUT),
        ..Options::default()
    }
}

pub fn connect(addr: &str) -> Connection {
    Connection::connect(addr, &options()).expect("failed to connect to chorusd")
}

pub fn topic(name: &str) -> Topic {
    Topic::new(name).expect("test topic names are valid")
}

/// Returns a payload of exactly `len` bytes that starts with `label` and is unique per label.
pub fn padded_payload(label: &str, len: usize) -> Vec<u8> {
    let mut payload = label.as_bytes().to_vec();
    assert!(
        payload.len() <= len,
        "label {label:?} is longer than {len} bytes"
    );
    payload.resize(len, b'.');
    payload
}

/// Publishes `payloads` in windows of [`PUBLISH_WINDOW`], without waiting for each
/// acknowledgement, and returns the acknowledgements in publish order.
///
/// Fails the test if any publish is rejected. The connection must not be subscribed to
/// anything, because frames other than PUBLISH_ACK fail the test.
pub fn publish_pipelined(conn: &mut Connection, topic: &Topic, payloads: &[Vec<u8>]) -> Vec<Ack> {
    let mut acks = Vec::with_capacity(payloads.len());
    for window in payloads.chunks(PUBLISH_WINDOW) {
        let seqs: Vec<u64> = window
            .iter()
            .map(|payload| {
                conn.send_publish(topic, payload)
                    .expect("send_publish failed")
            })
            .collect();
        conn.flush().expect("flush failed");

        let mut by_seq = HashMap::with_capacity(seqs.len());
        while by_seq.len() < seqs.len() {
            match conn.recv().expect("failed to read an acknowledgement") {
                Frame::PublishAck(ack) => {
                    assert_eq!(ack.code, ErrorCode::Ok, "publish {} rejected", ack.seq);
                    let stored = Ack {
                        seq: ack.seq,
                        offset: ack.offset,
                        stream: ack.stream,
                    };
                    by_seq.insert(ack.seq, stored);
                }
                other => panic!("expected PUBLISH_ACK, got {other:?}"),
            }
        }
        acks.extend(seqs.iter().map(|seq| by_seq[seq]));
    }
    acks
}

/// Receives EVENTS frames of `topic` until `count` comments arrived, and returns them.
///
/// PUBLISH_ACK frames are skipped, so the connection may publish as well. Any other frame, a
/// comment of another topic or more comments than `count` fail the test.
pub fn collect_events(conn: &mut Connection, topic: &Topic, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        match conn.recv().expect("failed to read EVENTS") {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), topic, "EVENTS topic");
                events.extend(batch.iter());
            }
            Frame::PublishAck(_) => {}
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    assert_eq!(
        events.len(),
        count,
        "comments received beyond the expected ones"
    );
    events
}

/// Checks that `events` carry consecutive offsets from `first` and the payloads
/// `expected(offset)`.
pub fn assert_in_order(events: &[Event], first: u64, expected: impl Fn(u64) -> Vec<u8>) {
    for (i, event) in events.iter().enumerate() {
        let offset = first + i as u64;
        assert_eq!(event.offset, offset, "offset of comment number {i}");
        assert_eq!(
            event.payload.as_ref(),
            expected(offset).as_slice(),
            "payload at offset {offset}"
        );
    }
}

/// A well-behaved client, subscribed to its own topic, that publishes one comment at a time
/// and checks it comes back, so a test can show the broker still serves it.
pub struct GoodClient {
    conn: Connection,
    topic: Topic,
    next_offset: u64,
}

impl GoodClient {
    /// Connects, subscribes to `topic_name` at latest and runs one check.
    pub fn connect(addr: &str, topic_name: &str) -> GoodClient {
        let topic = topic(topic_name);
        let mut conn = connect(addr);
        let subscribed = conn
            .subscribe(&topic, StartAt::Latest, 0)
            .expect("good client failed to subscribe");
        let mut client = GoodClient {
            conn,
            topic,
            next_offset: subscribed.end,
        };
        client.check();
        client
    }

    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Publishes one comment, then checks its acknowledgement and its delivery back through
    /// the subscription.
    pub fn check(&mut self) {
        let offset = self.next_offset;
        let payload = format!("good client comment {offset}");
        let ack = self
            .conn
            .publish(&self.topic, payload.as_bytes())
            .expect("good client publish failed");
        assert_eq!(ack.offset, offset, "good client acknowledgement offset");

        let events = collect_events(&mut self.conn, &self.topic, 1);
        assert_eq!(events[0].offset, offset, "good client delivery offset");
        assert_eq!(
            events[0].payload.as_ref(),
            payload.as_bytes(),
            "good client delivery payload"
        );
        self.next_offset += 1;
    }
}

/// Publishes `payload(n)` for n = 0, 1, 2, … to `topic` at `addr`, about one every 2 ms, until
/// `stop` is set or `limit` has passed, and records each acknowledged offset in `acked`. A lost
/// connection is opened again, so the publisher goes on through a broker restart.
#[allow(dead_code)]
pub fn publish_until(
    addr: &str,
    topic: &Topic,
    payload: fn(u64) -> Vec<u8>,
    stop: &std::sync::atomic::AtomicBool,
    acked: &std::sync::Mutex<Vec<u64>>,
    limit: Duration,
) {
    let deadline = std::time::Instant::now() + limit;
    let mut conn: Option<Connection> = None;
    let mut sent = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Acquire) && std::time::Instant::now() < deadline {
        let Some(c) = conn.as_mut() else {
            conn = Connection::connect(addr, &options()).ok();
            if conn.is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        match c.publish(topic, &payload(sent)) {
            Ok(ack) => acked.lock().unwrap().push(ack.offset),
            Err(_) => conn = None,
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Receives comments of `topic` until one at offset `last` or beyond has arrived.
#[allow(dead_code)]
pub fn collect_through(conn: &mut Connection, topic: &Topic, last: u64) -> Vec<Event> {
    let mut events: Vec<Event> = Vec::new();
    while events.last().is_none_or(|e| e.offset < last) {
        match conn.recv().expect("failed to read EVENTS") {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), topic, "EVENTS topic");
                events.extend(batch.iter());
            }
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    events
}
