//! Publish and subscribe through the real chorusd and the Rust client: start modes, resume after
//! a restart or a crash, a `Subscriber` that reconnects, fan-out, and a subscriber that stops
//! reading: it catches up from the log, the broker's memory stays bounded meanwhile, and one
//! that falls behind retention jumps to the oldest comment kept.

mod util;

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chorus_client::{
    Ack, Backoff, ClientError, Connection, ErrorCode, Event, Frame, Options, StartAt, Subscriber,
    Topic,
};
use chorus_protocol::{Publish, Subscribe};
use util::client::{
    assert_in_order, collect_events, connect, options, padded_payload, publish_pipelined, topic,
};
use util::raw::RawConn;
use util::{wait_until, Broker, TestDir};

/// Comments published before each start-mode test subscribes.
const EARLIER: u64 = 10;

/// A leak guard, not a benchmark: how much the broker's resident memory may grow while a test
/// pushes a few megabytes through it. Bounded queues keep the real growth far below this.
const RSS_GROWTH_LIMIT: u64 = 64 * 1024 * 1024;

fn payload(offset: u64) -> Vec<u8> {
    format!("comment {offset}").into_bytes()
}

fn payloads(offsets: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    offsets.map(payload).collect()
}

/// Checks that `acks` hold consecutive offsets from `first`, all on `stream`.
fn assert_acks(acks: &[Ack], first: u64, stream: u64) {
    for (i, ack) in acks.iter().enumerate() {
        assert_eq!(
            ack.offset,
            first + i as u64,
            "acknowledged offset of publish {i}"
        );
        assert_eq!(ack.stream, stream, "stream of publish {i}");
    }
}

#[test]
fn subscriber_at_latest_receives_new_comments() {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let addr = broker.addr_string();
    let topic = topic("live/final");

    let mut subscriber = connect(&addr);
    let subscribed = subscriber.subscribe(&topic, StartAt::Latest, 0).unwrap();
    assert_eq!(subscribed.start, 0);

    let mut publisher = connect(&addr);
    let acks = publish_pipelined(&mut publisher, &topic, &payloads(0..100));
    assert_ne!(acks[0].stream, 0, "a created topic has a nonzero stream id");
    assert_acks(&acks, 0, acks[0].stream);

    let events = collect_events(&mut subscriber, &topic, 100);
    assert_in_order(&events, 0, payload);
}

/// Starts a broker whose topic already contains [`EARLIER`] comments, subscribes from `start`,
/// and checks that delivery begins at `expected_first` and continues with live comments.
fn check_start_mode(start: StartAt, expected_first: u64) {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let addr = broker.addr_string();
    let topic = topic("event/start-modes");
    let mut publisher = connect(&addr);
    publish_pipelined(&mut publisher, &topic, &payloads(0..EARLIER));

    let mut subscriber = connect(&addr);
    let subscribed = subscriber.subscribe(&topic, start, 0).unwrap();
    assert_eq!(subscribed.start, expected_first, "SUBSCRIBED start");
    assert_eq!(subscribed.end, EARLIER, "SUBSCRIBED end");
    let stored = collect_events(&mut subscriber, &topic, (EARLIER - expected_first) as usize);
    assert_in_order(&stored, expected_first, payload);

    publish_pipelined(&mut publisher, &topic, &payloads(EARLIER..EARLIER + 2));
    let live = collect_events(&mut subscriber, &topic, 2);
    assert_in_order(&live, EARLIER, payload);
}

#[test]
fn start_at_latest_excludes_earlier_comments() {
    check_start_mode(StartAt::Latest, EARLIER);
}

#[test]
fn start_at_offset_delivers_from_that_offset() {
    check_start_mode(StartAt::Offset(4), 4);
}

#[test]
fn start_at_last_delivers_last_n_then_live() {
    check_start_mode(StartAt::Last(3), EARLIER - 3);
}

#[test]
fn start_at_earliest_delivers_everything() {
    check_start_mode(StartAt::Earliest, 0);
}

#[test]
fn offset_past_end_is_rejected_without_closing() {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let topic = topic("event/out-of-range");
    let mut conn = connect(&broker.addr_string());
    publish_pipelined(&mut conn, &topic, &payloads(0..EARLIER));

    let result = conn.subscribe(&topic, StartAt::Offset(EARLIER + 1), 0);
    let Err(ClientError::Server {
        code,
        topic: error_topic,
        close,
        ..
    }) = result
    else {
        panic!("expected an ERROR for an offset past the end, got {result:?}");
    };
    assert_eq!(code, ErrorCode::OffsetOutOfRange);
    assert!(!close, "OFFSET_OUT_OF_RANGE must not close the connection");
    assert_eq!(error_topic, topic.as_str());

    let ack = conn.publish(&topic, &payload(EARLIER)).unwrap();
    assert_eq!(ack.offset, EARLIER);
}

/// Subscribes from `start` with the stream id the comments were published under, and checks
/// that the stored comments `first..end` arrive, then that new publishes continue at `end`.
fn check_resume(broker: &Broker, topic: &Topic, stream: u64, start: StartAt, first: u64) -> u64 {
    let addr = broker.addr_string();
    let mut subscriber = connect(&addr);
    let subscribed = subscriber.subscribe(topic, start, stream).unwrap();
    assert_eq!(subscribed.stream, stream, "stream id after the restart");
    assert_eq!(subscribed.start, first, "SUBSCRIBED start");
    let end = subscribed.end;

    let stored = collect_events(&mut subscriber, topic, (end - first) as usize);
    assert_in_order(&stored, first, payload);

    let mut publisher = connect(&addr);
    let acks = publish_pipelined(&mut publisher, topic, &payloads(end..end + 10));
    assert_acks(&acks, end, stream);
    let live = collect_events(&mut subscriber, topic, 10);
    assert_in_order(&live, end, payload);
    end
}

#[test]
fn resume_after_restart_has_no_gap() {
    let dir = TestDir::new();
    let mut broker = Broker::start(&dir.data(), &[]);
    let topic = topic("event/restart");
    let mut publisher = connect(&broker.addr_string());
    let acks = publish_pipelined(&mut publisher, &topic, &payloads(0..1000));
    let stream = acks[0].stream;
    assert_acks(&acks, 0, stream);
    drop(publisher);

    assert!(
        broker.stop(),
        "chorusd did not exit with status 0 after SIGTERM"
    );
    let broker = Broker::start(&dir.data(), &[]);
    let end = check_resume(&broker, &topic, stream, StartAt::Offset(400), 400);
    assert_eq!(end, 1000, "end offset after the restart");
}

#[test]
fn crash_keeps_every_acknowledged_comment() {
    let dir = TestDir::new();
    let mut broker = Broker::start(&dir.data(), &[]);
    let topic = topic("event/crash");
    let mut publisher = connect(&broker.addr_string());
    let acks = publish_pipelined(&mut publisher, &topic, &payloads(0..1000));
    let stream = acks[0].stream;
    assert_acks(&acks, 0, stream);

    // More publishes are in flight when the process dies. Some of them may be stored, and
    // whatever is stored must continue the acknowledged comments without a gap.
    for offset in 1000..1500 {
        publisher.send_publish(&topic, &payload(offset)).unwrap();
    }
    publisher.flush().unwrap();
    broker.kill();

    let broker = Broker::start(&dir.data(), &[]);
    let end = check_resume(&broker, &topic, stream, StartAt::Earliest, 0);
    assert!(
        end >= 1000,
        "acknowledged comments are missing: end is {end}"
    );
    assert!(
        end <= 1500,
        "more comments stored than published: end is {end}"
    );
}

#[test]
fn stop_tells_clients_the_broker_is_shutting_down() {
    let dir = TestDir::new();
    let mut broker = Broker::start(&dir.data(), &[]);
    let mut conn = RawConn::connect(broker.addr);
    conn.handshake();

    assert!(
        broker.stop(),
        "chorusd did not exit with status 0 after SIGTERM"
    );
    conn.expect_close_error(ErrorCode::ShuttingDown);
}

/// A client may send its publishes and then close its sending half, as `nc -N` or a batch
/// import does. The broker can still write, and every PUBLISH gets exactly one PUBLISH_ACK,
/// so the acknowledgements must arrive before the broker closes its side.
#[test]
fn half_closed_publisher_still_gets_acks() {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let topic = topic("event/half-closed");
    let mut conn = RawConn::connect(broker.addr);
    conn.handshake();

    let mut bytes = Vec::new();
    for seq in 1..=3 {
        let publish = Publish {
            seq,
            topic: topic.clone(),
            payload: payload(seq).into(),
        };
        bytes.extend_from_slice(&Frame::Publish(publish).to_bytes());
    }
    conn.send(&bytes);
    conn.stream().shutdown(Shutdown::Write).unwrap();

    for seq in 1..=3 {
        let frame = conn.read_frame();
        let Frame::PublishAck(ack) = frame else {
            panic!("expected PUBLISH_ACK {seq}, got {frame:?}");
        };
        assert_eq!(ack.seq, seq);
        assert_eq!(ack.code, ErrorCode::Ok);
    }
    conn.expect_eof();
}

/// Publishes one comment at a time until `stop` is set, reconnecting whenever the broker goes
/// away. Returns the acknowledged comments as (offset, payload).
fn publish_until_stopped(
    addr: String,
    topic: Topic,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
) -> Vec<(u64, Vec<u8>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stored = Vec::new();
    let mut conn: Option<Connection> = None;
    let mut attempt = 0u64;
    while !stop.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "publisher ran past its deadline");
        let Some(current) = conn.as_mut() else {
            conn = Connection::connect(&addr, &options()).ok();
            if conn.is_none() {
                thread::sleep(Duration::from_millis(20));
            }
            continue;
        };
        // Every attempt has its own payload, so a publish that was stored but whose
        // acknowledgement was lost in the restart cannot be mistaken for a later one.
        let payload = format!("attempt {attempt}").into_bytes();
        attempt += 1;
        match current.publish(&topic, &payload) {
            Ok(ack) => {
                stored.push((ack.offset, payload));
                acked.fetch_add(1, Ordering::AcqRel);
            }
            Err(_) => conn = None,
        }
    }
    stored
}

/// Reads the subscriber until a comment with `marker` as payload arrives.
fn read_until_marker(mut subscriber: Subscriber, marker: &[u8]) -> (Subscriber, Vec<Event>) {
    let mut events = Vec::new();
    loop {
        let event = subscriber.next_event().expect("subscriber failed");
        let done = event.payload.as_ref() == marker;
        events.push(event);
        if done {
            return (subscriber, events);
        }
        assert!(events.len() < 1_000_000, "marker never arrived");
    }
}

#[test]
fn subscriber_reconnects_across_restart_without_gap() {
    let dir = TestDir::new();
    let mut broker = Broker::start(&dir.data(), &[]);
    let addr = broker.addr_string();
    let topic = topic("event/reconnect");
    // The topic exists before the subscriber connects, so it has a stream id from the start.
    connect(&addr).publish(&topic, b"first").unwrap();

    let subscriber_options = Options {
        backoff: Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            max_attempts: Some(200),
        },
        ..options()
    };
    let subscriber =
        Subscriber::connect(&addr, topic.clone(), StartAt::Earliest, subscriber_options).unwrap();
    let stream = subscriber.stream();
    let marker = b"last comment".to_vec();
    let reader = {
        let marker = marker.clone();
        thread::spawn(move || read_until_marker(subscriber, &marker))
    };

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicUsize::new(0));
    let publisher = {
        let (addr, topic, stop, acked) = (addr.clone(), topic.clone(), stop.clone(), acked.clone());
        thread::spawn(move || publish_until_stopped(addr, topic, stop, acked))
    };

    let enough = |count: usize| {
        wait_until(Duration::from_secs(30), || {
            acked.load(Ordering::Acquire) >= count
        })
    };
    assert!(enough(50), "publisher made no progress before the restart");
    assert!(
        broker.stop(),
        "chorusd did not exit with status 0 after SIGTERM"
    );
    let before_restart = acked.load(Ordering::Acquire);
    let broker = Broker::restart_on(&dir.data(), &addr, &[]);
    assert!(
        enough(before_restart + 50),
        "publisher made no progress after the restart"
    );
    stop.store(true, Ordering::Release);
    let published = publisher.join().unwrap();

    let last = connect(&broker.addr_string())
        .publish(&topic, &marker)
        .unwrap();
    let (subscriber, events) = reader.join().unwrap();

    assert!(
        subscriber.reconnects() >= 1,
        "the subscriber never reconnected"
    );
    assert_eq!(subscriber.stream(), stream, "stream id after the restart");
    assert_eq!(
        events.len() as u64,
        last.offset + 1,
        "number of comments received"
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.offset, i as u64, "offset of comment number {i}");
    }
    for (offset, payload) in &published {
        let received = &events[*offset as usize].payload;
        assert_eq!(
            received.as_ref(),
            payload.as_slice(),
            "payload at offset {offset}"
        );
    }
}

#[test]
fn fan_out_delivers_every_comment_to_every_subscriber() {
    const SUBSCRIBERS: usize = 10;
    const PUBLISHERS: u64 = 2;
    const PER_PUBLISHER: u64 = 5_000;
    const TOTAL: usize = (PUBLISHERS * PER_PUBLISHER) as usize;

    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    let addr = broker.addr_string();
    let topic = topic("event/fan-out");

    let readers: Vec<_> = (0..SUBSCRIBERS)
        .map(|_| {
            let mut conn = connect(&addr);
            let subscribed = conn.subscribe(&topic, StartAt::Latest, 0).unwrap();
            assert_eq!(subscribed.start, 0);
            let topic = topic.clone();
            thread::spawn(move || collect_events(&mut conn, &topic, TOTAL))
        })
        .collect();

    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let (addr, topic) = (addr.clone(), topic.clone());
            thread::spawn(move || {
                let sent: Vec<Vec<u8>> = (0..PER_PUBLISHER)
                    .map(|i| format!("publisher {p} comment {i}").into_bytes())
                    .collect();
                let acks = publish_pipelined(&mut connect(&addr), &topic, &sent);
                acks.into_iter()
                    .map(|a| a.offset)
                    .zip(sent)
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut by_offset: HashMap<u64, Vec<u8>> = HashMap::new();
    for publisher in publishers {
        by_offset.extend(publisher.join().unwrap());
    }
    assert_eq!(by_offset.len(), TOTAL, "distinct offsets acknowledged");

    for reader in readers {
        let events = reader.join().unwrap();
        assert_in_order(&events, 0, |offset| by_offset[&offset].clone());
    }
}

#[test]
fn slow_subscriber_catches_up_from_the_log() {
    const COMMENTS: u64 = 20_000;
    const PAYLOAD_LEN: usize = 200;

    let dir = TestDir::new();
    let config = dir.write_config(
        "[limits]\noutbound_queue_bytes = 262144\nmax_batch_bytes = 65536\nmax_payload = 32768\n",
    );
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let addr = broker.addr_string();
    let topic = topic("event/slow");
    let sent: Vec<Vec<u8>> = (0..COMMENTS)
        .map(|i| padded_payload(&format!("comment {i} "), PAYLOAD_LEN))
        .collect();

    // The slow subscriber subscribes, then reads nothing until every comment is published. Its
    // small receive buffer makes the broker's queue for it fill early.
    let mut slow = RawConn::connect_with_recv_buffer(broker.addr, 16 * 1024);
    slow.handshake();
    slow.send_frame(&Frame::Subscribe(Subscribe {
        topic: topic.clone(),
        start: StartAt::Latest,
        stream: 0,
    }));
    match slow.read_frame() {
        Frame::Subscribed(subscribed) => assert_eq!(subscribed.start, 0),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }

    let mut fast = connect(&addr);
    fast.subscribe(&topic, StartAt::Latest, 0).unwrap();
    let fast_reader = {
        let topic = topic.clone();
        thread::spawn(move || collect_events(&mut fast, &topic, COMMENTS as usize))
    };

    let rss_before = broker.rss_bytes();
    publish_pipelined(&mut connect(&addr), &topic, &sent);
    let fast_events = fast_reader.join().unwrap();
    assert_in_order(&fast_events, 0, |offset| sent[offset as usize].clone());
    let rss_after = broker.rss_bytes();
    assert!(
        rss_after < rss_before + RSS_GROWTH_LIMIT,
        "chorusd grew from {rss_before} to {rss_after} bytes of resident memory"
    );

    let mut slow_events = Vec::with_capacity(COMMENTS as usize);
    while slow_events.len() < COMMENTS as usize {
        match slow.read_frame() {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), &topic, "EVENTS topic");
                slow_events.extend(batch.iter());
            }
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
    assert_eq!(
        slow_events.len(),
        COMMENTS as usize,
        "comments received by the slow subscriber"
    );
    assert_in_order(&slow_events, 0, |offset| sent[offset as usize].clone());
}

/// Timeout of one request to the admin endpoint.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a test waits for the broker to reach a state it reports through the admin endpoint.
const ADMIN_WAIT: Duration = Duration::from_secs(30);

/// An HTTP client for one broker's admin endpoint.
struct Admin {
    base: String,
    agent: ureq::Agent,
}

/// One subscription as `GET /v1/connections` lists it, with its connection's outbound queue.
#[derive(Debug)]
struct SubscriptionState {
    /// Bytes queued to the subscriber's connection and not yet written to its socket.
    queued_bytes: u64,
    /// Whether the subscription is fed from the log rather than from live batches.
    catching_up: bool,
    /// Offset of the next comment the broker queues for the subscriber.
    next: u64,
}

impl Admin {
    fn new(broker: &Broker) -> Admin {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(ADMIN_TIMEOUT))
            .build()
            .into();
        Admin {
            base: format!("http://{}", broker.admin_addr()),
            agent,
        }
    }

    /// Sends GET `path` and returns the JSON body of a 200 response.
    fn get(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let response = self.agent.get(&url).call();
        Admin::read_json(path, response)
    }

    /// Returns the JSON body of a 200 response, or fails the test.
    fn read_json(
        path: &str,
        response: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> serde_json::Value {
        let mut response = response.unwrap_or_else(|e| panic!("request for {path} failed: {e}"));
        let status = response.status().as_u16();
        let body = response.body_mut().read_to_string().expect("readable body");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path} returned non-JSON {body:?}: {e}"))
    }

    /// Sends PUT `path` with an empty body and returns the JSON body of a 200 response.
    fn put(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.base);
        let response = self.agent.put(&url).send_empty();
        Admin::read_json(path, response)
    }

    /// Returns `topic` as `GET /v1/topics` lists it.
    fn topic(&self, topic: &Topic) -> serde_json::Value {
        let topics = self.get("/v1/topics");
        topics["topics"]
            .as_array()
            .expect("topics is an array")
            .iter()
            .find(|t| t["name"] == topic.as_str())
            .unwrap_or_else(|| panic!("topic {topic} not listed in {topics}"))
            .clone()
    }

    /// Returns the one subscription to `topic` among the broker's connections.
    fn subscription(&self, topic: &Topic) -> SubscriptionState {
        let conns = self.get("/v1/connections");
        let mut found = Vec::new();
        for conn in conns["connections"]
            .as_array()
            .expect("connections is an array")
        {
            let subs = conn["subscriptions"]
                .as_array()
                .expect("subscriptions is an array");
            for sub in subs.iter().filter(|s| s["topic"] == topic.as_str()) {
                found.push(SubscriptionState {
                    queued_bytes: conn["queued_bytes"].as_u64().expect("queued_bytes"),
                    catching_up: sub["delivery"] == "catch-up",
                    next: sub["next"].as_u64().expect("subscription next"),
                });
            }
        }
        assert_eq!(found.len(), 1, "subscriptions to {topic} in {conns}");
        found.remove(0)
    }
}

/// Reads the next EVENTS frame of `topic` from a raw connection and returns its comments.
/// A stalled subscriber sends nothing for a while, and the broker sends PING to a connection
/// that sent no frame for half of `limits.idle_timeout_ms`, so this replies to PING with PONG.
/// Any other frame fails the test.
fn read_raw_batch(conn: &mut RawConn, topic: &Topic) -> Vec<Event> {
    loop {
        match conn.read_frame() {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), topic, "EVENTS topic");
                return batch.iter().collect();
            }
            Frame::Ping(nonce) => conn.send_frame(&Frame::Pong(nonce)),
            other => panic!("expected EVENTS, got {other:?}"),
        }
    }
}

/// Reads EVENTS frames of `topic` from a raw connection until `count` comments arrived, and
/// returns them. More comments than `count` fail the test.
fn read_raw_events(conn: &mut RawConn, topic: &Topic, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        events.extend(read_raw_batch(conn, topic));
    }
    assert_eq!(
        events.len(),
        count,
        "comments received beyond the expected ones"
    );
    events
}

/// Opens a raw connection with a small receive buffer, subscribes it to `topic` before the
/// topic has any comment, and checks that delivery starts at offset 0.
fn subscribe_raw(broker: &Broker, topic: &Topic, recv_buffer: usize) -> RawConn {
    let mut conn = RawConn::connect_with_recv_buffer(broker.addr, recv_buffer);
    conn.handshake();
    conn.send_frame(&Frame::Subscribe(Subscribe {
        topic: topic.clone(),
        start: StartAt::Latest,
        stream: 0,
    }));
    match conn.read_frame() {
        Frame::Subscribed(subscribed) => assert_eq!(subscribed.start, 0, "SUBSCRIBED start"),
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    conn
}

/// Publishes a marker comment and checks that `subscriber` receives it next, at `offset`: the
/// subscription is back on live batches and received nothing beyond what the test read.
fn assert_next_is_marker(broker: &Broker, subscriber: &mut RawConn, topic: &Topic, offset: u64) {
    let marker = b"marker after catch-up".to_vec();
    let ack = connect(&broker.addr_string())
        .publish(topic, &marker)
        .unwrap();
    assert_eq!(ack.offset, offset, "offset of the marker");
    let events = read_raw_events(subscriber, topic, 1);
    assert_eq!(events[0].offset, offset, "offset after catch-up");
    assert_eq!(
        events[0].payload.as_ref(),
        marker.as_slice(),
        "payload after catch-up"
    );
}

/// Returns the payload of comment `offset` in the stalled-subscriber tests: `len` bytes, unique
/// per offset.
fn sized_payload(offset: u64, len: usize) -> Vec<u8> {
    padded_payload(&format!("comment {offset} "), len)
}

/// A subscriber stops reading while 64 MiB of comments are published. The broker's resident
/// memory stays within its configured queues plus a fixed allowance. When the subscriber reads
/// again, it receives every comment once and in order, from the log.
#[test]
fn stalled_subscriber_keeps_broker_memory_bounded() {
    const PAYLOAD_LEN: usize = 16 * 1024;
    // 64 MiB of payloads.
    const COMMENTS: u64 = 4096;
    const PUBLISH_CHUNK: u64 = 256;
    const OUTBOUND_QUEUE_BYTES: u64 = 1024 * 1024;
    const WORKERS: u64 = 2;
    const WORKER_QUEUE_BYTES: u64 = 1024 * 1024;
    // Memory that the configured queues do not cover. It contains the frames read from the
    // publisher and not yet committed (PUBLISH_CHUNK frames of 16 KiB, 4 MiB, in flight) and the
    // batch being committed and fanned out. It also contains the segment index (a few bytes per
    // comment), the pages of the memory-mapped log that catch-up read before the subscriber
    // stalled, and the blocks that the allocator keeps in its per-thread arenas after they are
    // freed. The allowance is half the data published, so a broker that kept the comments for
    // the stalled subscriber in memory fails.
    const ALLOWANCE: u64 = 32 * 1024 * 1024;

    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[limits]\noutbound_queue_bytes = {OUTBOUND_QUEUE_BYTES}\n\
         worker_queue_bytes = {WORKER_QUEUE_BYTES}\n"
    ));
    let workers = WORKERS.to_string();
    let broker = Broker::start(&dir.data(), &["--config", &config, "--workers", &workers]);
    let admin = Admin::new(&broker);
    let topic = topic("event/stalled");

    let mut stalled = subscribe_raw(&broker, &topic, 64 * 1024);
    let rss_before = broker.rss_bytes();
    let rss_limit = rss_before + OUTBOUND_QUEUE_BYTES + WORKERS * WORKER_QUEUE_BYTES + ALLOWANCE;

    let publisher = {
        let (addr, topic) = (broker.addr_string(), topic.clone());
        thread::spawn(move || {
            let mut conn = connect(&addr);
            let mut stream = 0;
            for first in (0..COMMENTS).step_by(PUBLISH_CHUNK as usize) {
                let chunk: Vec<Vec<u8>> = (first..first + PUBLISH_CHUNK)
                    .map(|offset| sized_payload(offset, PAYLOAD_LEN))
                    .collect();
                let acks = publish_pipelined(&mut conn, &topic, &chunk);
                stream = acks[0].stream;
                assert_acks(&acks, first, stream);
            }
            stream
        })
    };
    // Samples the resident memory until the publisher is done, bounded by the publisher's own
    // read timeouts.
    let mut rss_max = rss_before;
    while !publisher.is_finished() {
        rss_max = rss_max.max(broker.rss_bytes());
        thread::sleep(Duration::from_millis(10));
    }
    publisher.join().expect("publisher failed");
    rss_max = rss_max.max(broker.rss_bytes());
    assert!(
        rss_max < rss_limit,
        "chorusd grew from {rss_before} to {rss_max} bytes of resident memory; the limit is \
         {rss_limit}"
    );

    let state = admin.subscription(&topic);
    assert!(
        state.catching_up,
        "the stalled subscriber is not catching up: {state:?}"
    );
    assert!(
        state.queued_bytes <= OUTBOUND_QUEUE_BYTES,
        "queued bytes above outbound_queue_bytes: {state:?}"
    );
    assert!(
        state.next < COMMENTS,
        "the subscriber never stalled, because every comment was queued for it: {state:?}"
    );

    let events = read_raw_events(&mut stalled, &topic, COMMENTS as usize);
    assert_in_order(&events, 0, |offset| sized_payload(offset, PAYLOAD_LEN));
    assert_next_is_marker(&broker, &mut stalled, &topic, COMMENTS);
}

/// A subscriber stalls, and retention then deletes comments that the broker has not yet sent
/// it.
///
/// The right offsets: 0, 1, 2 and on without a gap up to some offset `k - 1`, then one jump to
/// `earliest`, the topic's first kept offset that `GET /v1/topics` reports after the deletion,
/// then every offset from there to the end. `k` is below `earliest` and at least the
/// subscription's position when it stalled, because every comment before that position was
/// already queued. Each payload is the one published at its offset.
///
/// A retention pass deletes everything past the limit at once under the topic's lock. The test
/// lowers the topic's size limit only after the last publish, so one pass moves `earliest`
/// from 0 to its final value and the subscriber can see only one jump. A limit in place while
/// the publisher runs would delete in several passes. The broker may still move bytes into the
/// kernel's socket buffers for a while after the stall and read more from the log each time,
/// so the subscriber could see a jump after each pass.
#[test]
fn subscriber_behind_retention_jumps_to_earliest() {
    const PAYLOAD_LEN: usize = 4096;
    const SEGMENT_BYTES: u64 = 1024 * 1024;
    const RETENTION_BYTES: u64 = 4 * 1024 * 1024;
    const OUTBOUND_QUEUE_BYTES: u64 = 64 * 1024;
    const MAX_BATCH_BYTES: u64 = 16 * 1024;
    const STALL_CHUNK: u64 = 64;
    // Maximum comments published before the subscriber must have stalled: 8 MiB. The kernel's
    // socket buffers take several MiB before the broker's queue fills, because Linux grows a
    // loopback send buffer up to the maximum of net.ipv4.tcp_wmem (4 MiB by default).
    const MAX_BEFORE_STALL: u64 = 2048;
    // Comments published after the stall: 16 MiB, so that after the deletion, which keeps the
    // newest RETENTION_BYTES, `earliest` is far above anything the socket buffers could take.
    const AFTER_STALL: u64 = 4096;

    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "[limits]\noutbound_queue_bytes = {OUTBOUND_QUEUE_BYTES}\n\
         max_batch_bytes = {MAX_BATCH_BYTES}\nmax_payload = 8192\n\
         [storage]\nsegment_bytes = {SEGMENT_BYTES}\n\
         retention_check_interval_ms = 100\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let admin = Admin::new(&broker);
    let topic = topic("event/behind-retention");
    let payload_at = |offset: u64| sized_payload(offset, PAYLOAD_LEN);

    let mut stalled = subscribe_raw(&broker, &topic, 16 * 1024);
    let mut publisher = connect(&broker.addr_string());
    let mut publish_range = |offsets: std::ops::Range<u64>| {
        let chunk: Vec<Vec<u8>> = offsets.clone().map(payload_at).collect();
        let acks = publish_pipelined(&mut publisher, &topic, &chunk);
        assert_acks(&acks, offsets.start, acks[0].stream);
    };

    // The subscriber has stalled when its subscription is catching up and its queue is at
    // least half of outbound_queue_bytes, because the broker feeds a catching-up subscriber
    // from the log only below that.
    let mut published = 0;
    let stalled_state = loop {
        let state = admin.subscription(&topic);
        if state.catching_up && state.queued_bytes >= OUTBOUND_QUEUE_BYTES / 2 {
            break state;
        }
        assert!(
            published < MAX_BEFORE_STALL,
            "the subscriber did not stall after {published} comments: {state:?}"
        );
        publish_range(published..published + STALL_CHUNK);
        published += STALL_CHUNK;
    };
    publish_range(published..published + AFTER_STALL);
    let end = published + AFTER_STALL;
    let before = admin.topic(&topic);
    assert_eq!(
        before["earliest"], 0,
        "earliest before the deletion: {before}"
    );

    let path = format!(
        "/v1/topics/{}/retention?max_bytes={RETENTION_BYTES}",
        topic.as_str().replace('/', "%2F")
    );
    admin.put(&path);
    let deleted = wait_until(ADMIN_WAIT, || admin.topic(&topic)["earliest"] != 0);
    assert!(
        deleted,
        "retention deleted nothing: {}",
        admin.topic(&topic)
    );
    // No comment is published from here on, so no later pass deletes more.
    let listed = admin.topic(&topic);
    assert_eq!(listed["end"], end, "end offset: {listed}");
    let bytes_on_disk = listed["bytes_on_disk"].as_u64().expect("bytes_on_disk");
    assert!(
        bytes_on_disk <= RETENTION_BYTES,
        "retention kept {bytes_on_disk} bytes"
    );
    let earliest = listed["earliest"].as_u64().expect("earliest");

    // Reads until the comment at `end - 1`, which may come after at most `end` comments.
    let mut events = Vec::new();
    while events.last().is_none_or(|e: &Event| e.offset + 1 < end) {
        assert!(events.len() < end as usize, "more comments than published");
        events.extend(read_raw_batch(&mut stalled, &topic));
    }
    let jump = events
        .iter()
        .enumerate()
        .position(|(i, event)| event.offset != i as u64)
        .expect("the offsets never jumped");
    assert!(
        jump as u64 >= stalled_state.next,
        "the offsets jumped at comment number {jump}, before the position {} queued before the \
         stall",
        stalled_state.next
    );
    assert!(
        (jump as u64) < earliest,
        "the offsets after comment number {jump} do not jump forward: earliest is {earliest}"
    );
    assert_eq!(events[jump].offset, earliest, "first offset after the jump");
    assert_eq!(
        events.len() as u64,
        jump as u64 + (end - earliest),
        "comments received"
    );
    for (i, event) in events.iter().enumerate() {
        let expected = if i < jump {
            i as u64
        } else {
            earliest + (i - jump) as u64
        };
        assert_eq!(event.offset, expected, "offset of comment number {i}");
        assert_eq!(
            event.payload.as_ref(),
            payload_at(expected).as_slice(),
            "payload at offset {expected}"
        );
    }
    assert_next_is_marker(&broker, &mut stalled, &topic, end);
}

/// A subscriber that stays in catch-up longer than `delivery.max_catch_up_ms` is closed with
/// ERROR SLOW_CONSUMER after the comments already queued for it, and the publisher and the
/// other subscribers go on.
#[test]
fn subscriber_catching_up_too_long_is_closed() {
    const PAYLOAD_LEN: usize = 16 * 1024;
    // 8 MiB of payloads, well past the queue limit and the socket buffers of a stalled reader.
    const COMMENTS: u64 = 512;

    let dir = TestDir::new();
    let config = dir.write_config(
        "[limits]\noutbound_queue_bytes = 1048576\n[delivery]\nmax_catch_up_ms = 300\n",
    );
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let topic = topic("event/stuck");
    let mut stalled = subscribe_raw(&broker, &topic, 64 * 1024);
    let mut reader = connect(&broker.addr_string());
    reader
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe the reading subscriber");

    let payloads: Vec<Vec<u8>> = (0..COMMENTS)
        .map(|offset| sized_payload(offset, PAYLOAD_LEN))
        .collect();
    let acks = publish_pipelined(&mut connect(&broker.addr_string()), &topic, &payloads);
    assert_eq!(acks.len(), COMMENTS as usize, "acknowledged publishes");
    let events = collect_events(&mut reader, &topic, COMMENTS as usize);
    assert_eq!(
        events.last().map(|e| e.offset),
        Some(COMMENTS - 1),
        "last offset at the reading subscriber"
    );
    broker.wait_for_log("delivery.max_catch_up_ms", Duration::from_secs(20));

    // The stalled subscriber reads what was queued before the ERROR, in order, then the ERROR.
    let mut next = 0;
    let error = loop {
        match stalled.read_frame() {
            Frame::Events(batch) => {
                for event in batch.iter() {
                    assert_eq!(event.offset, next, "offset at the stalled subscriber");
                    next += 1;
                }
            }
            Frame::Error(error) => break error,
            other => panic!("expected EVENTS or ERROR, got {other:?}"),
        }
    };
    assert_eq!(error.code, ErrorCode::SlowConsumer, "{}", error.message);
    assert!(error.close, "SLOW_CONSUMER closes the connection");
    assert!(
        next < COMMENTS,
        "the stalled subscriber got every comment before its ERROR"
    );
    stalled.expect_eof();
}
