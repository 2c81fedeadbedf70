//! zstd-compressed relay links and the return to the primary upstream, with real chorusd
//! processes on loopback.

mod util;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use chorus_client::{Connection, Event, Frame, Options, StartAt, Topic};
use chorus_protocol::frame::features;
use serde_json::Value;
use util::client::{
    assert_in_order, collect_events, collect_through, connect, options, publish_pipelined,
    publish_until, topic,
};
use util::{wait_until, Broker, TestDir};

/// Maximum wait for a log line, a connection or a delivery.
const WAIT: Duration = Duration::from_secs(30);

/// Comments published through the compressed link.
const COMMENTS: u64 = 5_000;

/// A broker and the temporary directory that contains its data and configuration.
struct Node {
    broker: Broker,
    dir: TestDir,
    /// Path of the configuration file, for a restart.
    config: Option<String>,
}

impl Node {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }

    /// Returns `GET /v1/tree` of the admin endpoint.
    fn tree(&self) -> Value {
        let url = format!("http://{}/v1/tree", self.broker.admin_addr());
        serde_json::from_str(&http_get(&url)).expect("/v1/tree returns JSON")
    }

    /// Returns the first upstream link of `/v1/tree`.
    fn link(&self) -> Value {
        self.tree()["links"][0].clone()
    }
}

fn http_get(url: &str) -> String {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into();
    let mut response = agent.get(url).call().expect("admin request failed");
    response.body_mut().read_to_string().expect("readable body")
}

fn origin() -> Node {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    Node {
        broker,
        dir,
        config: None,
    }
}

/// Starts a relay below `upstreams` with short reconnect delays and `extra` at the end of its
/// `[relay]` table.
fn relay(upstreams: &[String], extra: &str) -> Node {
    let dir = TestDir::new();
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    let text = format!(
        "role = \"relay\"\n[relay]\nupstreams = [{}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n{extra}\n",
        list.join(", ")
    );
    let config = dir.write_config(&text);
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node {
        broker,
        dir,
        config: Some(config),
    }
}

/// Returns a chat-like payload: short, repetitive text, as live comments are.
fn payload(offset: u64) -> Vec<u8> {
    format!(
        "{{\"user\":\"viewer-{}\",\"text\":\"what a play, number {offset}!\"}}",
        offset % 17
    )
    .into_bytes()
}

fn payloads(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

fn subscribe(addr: &str, topic: &Topic, start: StartAt) -> Connection {
    let mut conn = connect(addr);
    conn.subscribe(topic, start, 0).expect("subscribe");
    conn
}

/// Options of a client that asks for EVENTS_ZSTD.
fn zstd_options() -> Options {
    Options {
        features: features::ZSTD_EVENTS,
        ..options()
    }
}

fn as_u64(value: &Value, field: &str) -> u64 {
    value[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a number in {value}"))
}

#[test]
fn compressed_link_delivers_each_comment_once() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "");
    let topic = topic("zstd/live");
    let mut subscribers: Vec<Connection> = (0..3)
        .map(|_| subscribe(&relay.addr(), &topic, StartAt::Latest))
        .collect();
    relay.broker.wait_for_log("subscribed upstream", WAIT);

    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..COMMENTS));

    // collect_events fails on any frame but EVENTS, so the relay's own subscribers, which did
    // not ask for compression, also show that they get plain EVENTS only.
    for subscriber in &mut subscribers {
        let events = collect_events(subscriber, &topic, COMMENTS as usize);
        assert_in_order(&events, 0, payload);
    }
    let link = relay.link();
    assert_eq!(link["zstd_events"], Value::Bool(true), "link {link}");
    let received = as_u64(&link, "zstd_bytes_received");
    let decompressed = as_u64(&link, "zstd_bytes_decompressed");
    assert!(received > 0, "no compressed bytes received: {link}");
    assert!(
        decompressed > received,
        "decompressed {decompressed} bytes from {received}"
    );
}

#[test]
fn compressed_bytes_appear_in_metrics() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "");
    let topic = topic("zstd/metrics");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Latest);
    relay.broker.wait_for_log("subscribed upstream", WAIT);
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..1000));
    collect_events(&mut subscriber, &topic, 1000);

    let url = format!("http://{}/metrics", relay.broker.admin_addr());
    let metrics = http_get(&url);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("chorus_relay_zstd_received_bytes_total{link=\"0\"}"))
        .unwrap_or_else(|| panic!("no compressed byte counter in:\n{metrics}"));
    let value: u64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable counter line {line:?}"));
    assert!(value > 0, "{line}");
}

#[test]
fn relay_without_compression_gets_plain_events() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "compression = false");
    let topic = topic("zstd/off");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Latest);
    relay.broker.wait_for_log("subscribed upstream", WAIT);

    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..1000));
    let events = collect_events(&mut subscriber, &topic, 1000);

    assert_in_order(&events, 0, payload);
    let link = relay.link();
    assert_eq!(link["zstd_events"], Value::Bool(false), "link {link}");
    assert_eq!(as_u64(&link, "zstd_bytes_received"), 0, "link {link}");
    let payload_bytes: usize = payloads(0..1000).iter().map(Vec::len).sum();
    let plain = as_u64(&link, "events_bytes_received");
    assert!(
        plain > payload_bytes as u64,
        "{plain} bytes of EVENTS frames carry {payload_bytes} bytes of payload"
    );
}

#[test]
fn plain_client_never_gets_compressed_frames() {
    let origin = origin();
    let topic = topic("zstd/plain-client");
    let mut subscriber = subscribe(&origin.addr(), &topic, StartAt::Latest);

    assert_eq!(subscriber.welcome().features, 0, "WELCOME features");
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..2000));
    let events = collect_events(&mut subscriber, &topic, 2000);

    assert_in_order(&events, 0, payload);
}

/// Receives frames of `topic` until `count` comments arrived; returns them and the number of
/// EVENTS_ZSTD frames among the frames.
fn collect_mixed(conn: &mut Connection, topic: &Topic, count: usize) -> (Vec<Event>, usize) {
    let mut events = Vec::with_capacity(count);
    let mut compressed = 0;
    while events.len() < count {
        match conn.recv().expect("failed to read EVENTS") {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), topic, "EVENTS topic");
                events.extend(batch.iter());
            }
            Frame::EventsZstd(batch) => {
                assert_eq!(batch.events().topic(), topic, "EVENTS_ZSTD topic");
                events.extend(batch.events().iter());
                compressed += 1;
            }
            other => panic!("expected EVENTS or EVENTS_ZSTD, got {other:?}"),
        }
    }
    (events, compressed)
}

#[test]
fn client_asking_for_zstd_gets_compressed_batches() {
    let origin = origin();
    let topic = topic("zstd/asking-client");
    let mut subscriber =
        Connection::connect(&origin.addr(), &zstd_options()).expect("connect with features");
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe");

    assert_eq!(
        subscriber.welcome().features,
        features::ZSTD_EVENTS,
        "WELCOME features"
    );
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..2000));
    let (events, compressed) = collect_mixed(&mut subscriber, &topic, 2000);

    assert_in_order(&events, 0, payload);
    assert!(compressed > 0, "no EVENTS_ZSTD frame among the batches");
}

#[test]
fn level_zero_grants_no_compression() {
    let dir = TestDir::new();
    let config = dir.write_config("[compression]\nzstd_level = 0\n");
    let origin = Broker::start(&dir.data(), &["--config", &config]);
    let topic = topic("zstd/level-zero");
    let mut subscriber =
        Connection::connect(&origin.addr_string(), &zstd_options()).expect("connect");
    subscriber
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe");

    assert_eq!(subscriber.welcome().features, 0, "WELCOME features");
    publish_pipelined(
        &mut connect(&origin.addr_string()),
        &topic,
        &payloads(0..500),
    );
    let (events, compressed) = collect_mixed(&mut subscriber, &topic, 500);

    assert_in_order(&events, 0, payload);
    assert_eq!(compressed, 0, "EVENTS_ZSTD frames sent with zstd_level = 0");
}

/// Waits until `node` logged `needle` at least `count` times.
fn wait_for_lines(node: &Node, needle: &str, count: usize) {
    let seen = wait_until(WAIT, || {
        let lines = node.broker.log_lines();
        lines.iter().filter(|l| l.contains(needle)).count() >= count
    });
    assert!(seen, "{needle:?} not logged {count} time(s)");
}

/// Waits until `acked` contains at least `count` offsets.
fn wait_for_acks(acked: &Mutex<Vec<u64>>, count: usize, phase: &str) {
    let reached = wait_until(WAIT, || acked.lock().unwrap().len() >= count);
    assert!(reached, "fewer than {count} publishes acknowledged {phase}");
}

/// Relays A and B sit below one origin, so their offsets agree. The edge relay's primary is
/// A: after A is killed it fails over to B, and once A is back it returns to A, while its
/// subscriber sees every comment once, in order.
#[test]
fn relay_returns_to_primary_without_gap() {
    let origin = origin();
    let mut primary = relay(&[origin.addr()], "");
    let fallback = relay(&[origin.addr()], "");
    let primary_addr = primary.addr();
    let edge = relay(
        &[primary_addr.clone(), fallback.addr()],
        "primary_retry_ms = 300",
    );
    let topic = topic("zstd/return");
    let mut subscriber = subscribe(&edge.addr(), &topic, StartAt::Earliest);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (topic, stop, acked) = (topic.clone(), stop.clone(), acked.clone());
        let addr = origin.addr();
        thread::spawn(move || {
            publish_until(
                &addr,
                &topic,
                payload,
                &stop,
                &acked,
                Duration::from_secs(90),
            )
        })
    };
    wait_for_acks(&acked, 200, "before the kill");

    primary.broker.kill();
    edge.broker
        .wait_for_log("failing over to the next upstream", WAIT);
    wait_for_lines(&edge, "connected upstream", 2);
    let count = acked.lock().unwrap().len();
    wait_for_acks(&acked, count + 200, "on the fallback");

    let config = primary.config.clone().expect("relays have a config file");
    let restarted = Broker::restart_on(&primary.dir.data(), &primary_addr, &["--config", &config]);
    edge.broker
        .wait_for_log("returning to the primary upstream", WAIT);
    let count = acked.lock().unwrap().len();
    wait_for_acks(&acked, count + 200, "after the return");
    stop.store(true, Ordering::Release);
    publisher.join().expect("publisher thread");

    let acked = acked.lock().unwrap().clone();
    let last = *acked.iter().max().expect("some publish acknowledged");
    let events = collect_through(&mut subscriber, &topic, last);
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (0..=last).collect::<Vec<u64>>(),
        "offsets at the edge"
    );
    assert_eq!(
        as_u64(&edge.link(), "primary_returns"),
        1,
        "primary returns"
    );
    assert_eq!(
        edge.link()["address"],
        Value::String(primary_addr),
        "address of the edge's upstream"
    );
    drop(restarted);
}
