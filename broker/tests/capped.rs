//! Capped delivery with real chorusd processes on loopback, at an origin and through a relay.
//! A subscription capped with CAP gets at most R comments per second of broker time and every
//! comment with the PRIORITY flag. Its SKIPPED frames count exactly the comments left out.

mod util;

use std::collections::{BTreeMap, HashSet};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_client::{ClientError, Connection, ErrorCode, Event, Frame, Options, StartAt, Topic};
use chorus_protocol::event::flags;
use chorus_protocol::Skipped;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::client::{collect_events, options, publish_pipelined, topic};
use util::{wait_until, Broker, TestDir};

/// Shared secret of the test's HS256 tokens.
const SECRET: &str = "test-secret-for-capped-delivery";

/// Minimum milliseconds between two SKIPPED frames of one subscription in these tests.
const SKIP_NOTICE_MS: u64 = 200;

/// Time after the last expected SKIPPED during which no further one may arrive: the notice
/// interval plus the longest worker tick (500 ms), with room for a loaded machine.
const QUIET: Duration = Duration::from_millis(SKIP_NOTICE_MS + 1_300);

/// Maximum wait for a connection, a delivery or a notice.
const WAIT: Duration = Duration::from_secs(30);

/// Read timeout of subscriber connections, short so that a reader can check its deadline.
const SUBSCRIBER_READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Microseconds in a second of broker time.
const SECOND_US: u64 = 1_000_000;

/// A broker and the temporary directory that contains its data and configuration.
struct Node {
    broker: Broker,
    _dir: TestDir,
}

impl Node {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }
}

/// Starts a broker with `extra` TOML before the `[delivery]` table that sets
/// [`SKIP_NOTICE_MS`].
fn start(extra: &str) -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "{extra}\n[delivery]\nskip_notice_ms = {SKIP_NOTICE_MS}\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node { broker, _dir: dir }
}

/// Starts a broker that requires HS256 tokens signed with [`SECRET`].
fn start_with_auth() -> Node {
    start(&format!(
        "[auth]\nenabled = true\nhs256_secret = {SECRET:?}\nleeway_s = 0\n"
    ))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
}

/// Returns a token for `sub` with `role`, allowed to subscribe and publish to `cap/**`, valid
/// for an hour, with the `priority` claim when `priority` is set.
fn token(sub: &str, role: &str, priority: bool) -> String {
    let mut claims: Value = json!({
        "sub": sub,
        "role": role,
        "sub_topics": ["cap/**"],
        "pub_topics": ["cap/**"],
        "exp": now_s() + 3600,
    });
    if priority {
        claims["priority"] = json!(true);
    }
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token")
}

/// Connects with `token` (empty for none) and the given read timeout.
fn connect(addr: &str, token: &str, read_timeout: Duration) -> Connection {
    let options = Options {
        token: token.to_owned(),
        read_timeout: Some(read_timeout),
        ..options()
    };
    Connection::connect(addr, &options).expect("failed to connect to chorusd")
}

/// Connects a subscriber to `topic` at `start`, and returns it with the offset its delivery
/// starts at.
fn subscriber(addr: &str, token: &str, topic: &Topic, start: StartAt) -> (Connection, u64) {
    let mut conn = connect(addr, token, SUBSCRIBER_READ_TIMEOUT);
    let subscribed = conn.subscribe(topic, start, 0).expect("subscribe");
    (conn, subscribed.start)
}

/// Sends CAP and waits until the broker has handled it. The broker handles a connection's
/// frames in order and CAP has no reply, so a SUBSCRIBE to another topic sent after it serves
/// as a barrier.
fn cap(conn: &mut Connection, topic: &Topic, max_per_sec: u32) {
    conn.cap(topic, max_per_sec).expect("send CAP");
    let barrier = util::client::topic("cap/barrier");
    conn.subscribe(&barrier, StartAt::Latest, 0)
        .expect("subscribe to the barrier topic");
}

fn payloads(label: &str, range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(|i| format!("{label} {i}").into_bytes()).collect()
}

/// Publishes `count` comments and returns their offsets.
fn publish(conn: &mut Connection, topic: &Topic, label: &str, count: u64) -> Vec<u64> {
    publish_pipelined(conn, topic, &payloads(label, 0..count))
        .iter()
        .map(|ack| ack.offset)
        .collect()
}

/// Returns the value of the `chorus_comments_skipped_total` counter on the broker's admin
/// endpoint.
fn skipped_metric(broker: &Broker) -> u64 {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(WAIT))
        .build()
        .into();
    let url = format!("http://{}/metrics", broker.admin_addr());
    let mut response = agent.get(&url).call().expect("GET /metrics");
    let text = response
        .body_mut()
        .read_to_string()
        .expect("readable metrics");
    let line = text
        .lines()
        .find(|l| l.starts_with("chorus_comments_skipped_total "))
        .unwrap_or_else(|| panic!("no skipped comments counter in:\n{text}"));
    let value = line.rsplit(' ').next().unwrap_or_default();
    value
        .parse()
        .unwrap_or_else(|e| panic!("invalid counter line {line:?}: {e}"))
}

/// What a capped subscriber received, in order of arrival within each kind.
#[derive(Debug, Default)]
struct Received {
    events: Vec<Event>,
    notices: Vec<Skipped>,
}

impl Received {
    fn skipped(&self) -> u64 {
        self.notices.iter().map(|n| n.count).sum()
    }

    fn offsets(&self) -> HashSet<u64> {
        self.events.iter().map(|e| e.offset).collect()
    }

    /// Returns the number of comments accounted for: delivered or counted in a SKIPPED.
    fn accounted(&self) -> u64 {
        self.events.len() as u64 + self.skipped()
    }

    /// Takes EVENTS and SKIPPED frames of `topic`, and fails the test on any other frame.
    fn take(&mut self, frame: Frame, topic: &Topic) {
        match frame {
            Frame::Events(batch) => {
                assert_eq!(batch.topic(), topic, "EVENTS topic");
                self.events.extend(batch.iter());
            }
            Frame::Skipped(notice) => {
                assert_eq!(&notice.topic, topic, "SKIPPED topic");
                self.notices.push(notice);
            }
            Frame::Subscribed(_) => {}
            other => panic!("expected EVENTS or SKIPPED, got {other:?}"),
        }
    }
}

/// Reads frames of `topic` into `received` until `done` returns true or [`WAIT`] passes.
/// Returns whether `done` returned true.
fn read_until(
    conn: &mut Connection,
    topic: &Topic,
    received: &mut Received,
    done: impl Fn(&Received) -> bool,
) -> bool {
    let deadline = Instant::now() + WAIT;
    while !done(received) {
        if Instant::now() >= deadline {
            return false;
        }
        match conn.recv() {
            Ok(frame) => received.take(frame, topic),
            Err(ClientError::Timeout) => {}
            Err(e) => panic!("subscriber read failed: {e}"),
        }
    }
    true
}

/// Reads frames of `topic` into `received` for `duration`.
fn read_for(conn: &mut Connection, topic: &Topic, received: &mut Received, duration: Duration) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        match conn.recv() {
            Ok(frame) => received.take(frame, topic),
            Err(ClientError::Timeout) => {}
            Err(e) => panic!("subscriber read failed: {e}"),
        }
    }
}

/// Checks that each SKIPPED counts exactly the comments from the previous notice's `through`
/// (the first from `start`) up to its own `through` that were not delivered, and that
/// `through` never decreases nor passes `end`.
fn assert_notices_exact(received: &Received, start: u64, end: u64) {
    let delivered = received.offsets();
    let mut from = start;
    for notice in &received.notices {
        assert!(
            notice.through >= from,
            "SKIPPED through {} is below the previous {from}",
            notice.through
        );
        assert!(
            notice.through <= end,
            "SKIPPED through {} is past the end {end}",
            notice.through
        );
        let missing = (from..notice.through)
            .filter(|offset| !delivered.contains(offset))
            .count() as u64;
        assert_eq!(
            notice.count, missing,
            "SKIPPED count for offsets {from}..{}",
            notice.through
        );
        from = notice.through;
    }
}

/// Checks that the comments without PRIORITY number at most `per_sec` in every whole second of
/// broker time, and at most `per_sec + 1` in any one-second window, the bounds of a sampler that
/// delivers one comment per slot of 1/`per_sec` second.
fn assert_rate(events: &[Event], per_sec: usize) {
    let mut times: Vec<u64> = events
        .iter()
        .filter(|e| e.flags & flags::PRIORITY == 0)
        .map(|e| e.time_us)
        .collect();
    times.sort_unstable();
    let mut per_second: BTreeMap<u64, usize> = BTreeMap::new();
    for &time in &times {
        *per_second.entry(time / SECOND_US).or_default() += 1;
    }
    for (second, count) in per_second {
        assert!(
            count <= per_sec,
            "{count} comments in second {second} of broker time, cap {per_sec}"
        );
    }
    for (i, &first) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|&&t| t < first + SECOND_US)
            .count();
        assert!(
            in_window <= per_sec + 1,
            "{in_window} comments in the second from {first} µs, cap {per_sec}"
        );
    }
}

/// A burst of 2,000 comments over about two seconds, from a commenter, an event host with the
/// `priority` claim and a moderator, to one capped and one uncapped subscriber. The capped one
/// must get every comment with PRIORITY, the others within the rate, and SKIPPED counts that
/// add up to every comment it did not get.
#[test]
fn capped_subscriber_gets_priority_and_exact_skip_counts() {
    const ROUNDS: u64 = 20;
    const PER_SEC: u32 = 20;
    let node = start_with_auth();
    let addr = node.addr();
    let topic = topic("cap/final");
    let viewer = token("viewer-1", "viewer", false);
    let (mut capped, start) = subscriber(&addr, &viewer, &topic, StartAt::Latest);
    cap(&mut capped, &topic, PER_SEC);
    let (mut uncapped, _) = subscriber(&addr, &viewer, &topic, StartAt::Latest);

    let mut commenter = connect(&addr, &token("fan-1", "commenter", false), WAIT);
    let mut host = connect(&addr, &token("host-1", "commenter", true), WAIT);
    let mut moderator = connect(&addr, &token("mod-1", "moderator", false), WAIT);
    let mut priority = HashSet::new();
    let mut published = 0;
    for round in 0..ROUNDS {
        let label = format!("round {round}");
        published += publish(&mut commenter, &topic, &label, 94).len() as u64;
        let host_offsets = publish(&mut host, &topic, &label, 1);
        let moderator_offsets = publish(&mut moderator, &topic, &label, 5);
        published += (host_offsets.len() + moderator_offsets.len()) as u64;
        priority.extend(host_offsets.into_iter().chain(moderator_offsets));
        // Pacing, not a wait for a condition: the burst spreads over about two seconds.
        thread::sleep(Duration::from_millis(100));
    }
    let end = start + published;
    let last = end - 1;
    assert!(priority.contains(&last), "the moderator published last");

    let everything = collect_events(&mut uncapped, &topic, published as usize);
    let offsets: Vec<u64> = everything.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (start..end).collect::<Vec<_>>(),
        "uncapped offsets"
    );
    let with_flag = everything
        .iter()
        .filter(|e| e.flags & flags::PRIORITY != 0)
        .map(|e| e.offset)
        .collect::<HashSet<_>>();
    assert_eq!(with_flag, priority, "offsets with PRIORITY");

    let mut received = Received::default();
    let complete = read_until(&mut capped, &topic, &mut received, |r| {
        r.offsets().contains(&last) && r.accounted() >= published
    });
    read_for(&mut capped, &topic, &mut received, QUIET);
    assert!(
        complete,
        "capped subscriber accounted for {} of {published} comments: {} delivered, {} skipped",
        received.accounted(),
        received.events.len(),
        received.skipped()
    );

    let delivered = received.offsets();
    let missing: Vec<u64> = priority.difference(&delivered).copied().collect();
    assert!(
        missing.is_empty(),
        "priority comments not delivered: {missing:?}"
    );
    assert_eq!(
        received.skipped(),
        published - received.events.len() as u64,
        "sum of SKIPPED counts"
    );
    assert_notices_exact(&received, start, end);
    assert_rate(&received.events, PER_SEC as usize);
    assert_eq!(
        skipped_metric(&node.broker),
        received.skipped(),
        "skipped comments metric"
    );
    let sampled = received.events.len() - priority.len();
    assert!(sampled > 0, "no comment without PRIORITY was delivered");
    assert!(
        received.notices.len() >= 2,
        "{} SKIPPED frames for a burst of two seconds",
        received.notices.len()
    );
}

/// Publishes `count` comments from `commenter` and one marker comment from `moderator`, which
/// has PRIORITY; returns the marker's offset.
fn burst_with_marker(
    commenter: &mut Connection,
    moderator: &mut Connection,
    topic: &Topic,
    count: u64,
) -> u64 {
    publish(commenter, topic, "burst", count);
    publish(moderator, topic, "marker", 1)[0]
}

#[test]
fn cap_zero_restores_lossless_delivery() {
    let node = start_with_auth();
    let addr = node.addr();
    let topic = topic("cap/restore");
    let viewer = token("viewer-2", "viewer", false);
    let (mut conn, start) = subscriber(&addr, &viewer, &topic, StartAt::Latest);
    cap(&mut conn, &topic, 1);
    let mut commenter = connect(&addr, &token("fan-2", "commenter", false), WAIT);
    let mut moderator = connect(&addr, &token("mod-2", "moderator", false), WAIT);

    let marker = burst_with_marker(&mut commenter, &mut moderator, &topic, 50);
    let mut received = Received::default();
    let reached = read_until(&mut conn, &topic, &mut received, |r| {
        r.offsets().contains(&marker)
    });
    assert!(reached, "marker comment {marker} not delivered");

    conn.cap(&topic, 0).expect("send CAP 0");
    let barrier = util::client::topic("cap/barrier");
    conn.subscribe(&barrier, StartAt::Latest, 0)
        .expect("subscribe to the barrier topic");
    // The SKIPPED that CAP 0 queues arrives before the barrier's SUBSCRIBED, so it is among the
    // frames that the client kept while it waited.
    let total = marker + 1 - start;
    while received.accounted() < total {
        match conn.recv() {
            Ok(frame) => received.take(frame, &topic),
            Err(ClientError::Timeout) => break,
            Err(e) => panic!("subscriber read failed: {e}"),
        }
    }
    assert_eq!(
        received.accounted(),
        total,
        "comments delivered or skipped before CAP 0"
    );
    assert_eq!(
        received.notices.last().map(|n| n.through),
        Some(marker + 1),
        "through of the SKIPPED sent for CAP 0"
    );
    assert_notices_exact(&received, start, marker + 1);

    let next = burst_with_marker(&mut commenter, &mut moderator, &topic, 50) - 50;
    let events = collect_events(&mut conn, &topic, 51);
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (next..next + 51).collect::<Vec<_>>(),
        "offsets after CAP 0"
    );
}

#[test]
fn cap_on_unsubscribed_topic_is_ignored() {
    let node = start("");
    let addr = node.addr();
    let topic = topic("cap/ignored");
    let mut conn = connect(&addr, "", SUBSCRIBER_READ_TIMEOUT);
    cap(&mut conn, &topic, 1);
    let subscribed = conn
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe after CAP");

    let mut publisher = connect(&addr, "", WAIT);
    publish(&mut publisher, &topic, "comment", 40);
    let events = collect_events(&mut conn, &topic, 40);
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    let start = subscribed.start;
    assert_eq!(offsets, (start..start + 40).collect::<Vec<_>>());
}

#[test]
fn resubscribe_keeps_cap() {
    let node = start_with_auth();
    let addr = node.addr();
    let topic = topic("cap/resubscribe");
    let viewer = token("viewer-3", "viewer", false);
    let (mut conn, _) = subscriber(&addr, &viewer, &topic, StartAt::Latest);
    cap(&mut conn, &topic, 1);
    let start = conn
        .subscribe(&topic, StartAt::Latest, 0)
        .expect("subscribe again")
        .start;

    let mut commenter = connect(&addr, &token("fan-3", "commenter", false), WAIT);
    let mut moderator = connect(&addr, &token("mod-3", "moderator", false), WAIT);
    let marker = burst_with_marker(&mut commenter, &mut moderator, &topic, 60);
    let mut received = Received::default();
    let total = marker + 1 - start;
    let complete = read_until(&mut conn, &topic, &mut received, |r| {
        r.offsets().contains(&marker) && r.accounted() >= total
    });
    read_for(&mut conn, &topic, &mut received, QUIET);
    assert!(
        complete,
        "{} delivered and {} skipped of {total} comments",
        received.events.len(),
        received.skipped()
    );
    assert_eq!(received.accounted(), total, "comments accounted for");
    assert!(received.skipped() > 0, "no comment skipped after SUBSCRIBE");
    assert_notices_exact(&received, start, marker + 1);
}

/// A SUBSCRIBE that replaces a capped subscription keeps the cap, so a start in the past
/// samples the stored comments at the same rate as live ones.
#[test]
fn capped_catch_up_samples_stored_comments() {
    const PER_SEC: u32 = 3;
    let node = start_with_auth();
    let addr = node.addr();
    let topic = topic("cap/history");
    let mut commenter = connect(&addr, &token("fan-4", "commenter", false), WAIT);
    let mut moderator = connect(&addr, &token("mod-4", "moderator", false), WAIT);
    let mut end = 0;
    for _ in 0..3 {
        end = burst_with_marker(&mut commenter, &mut moderator, &topic, 200) + 1;
        // Pacing, not a wait for a condition: the stored comments span more than a second.
        thread::sleep(Duration::from_millis(400));
    }

    let viewer = token("viewer-4", "viewer", false);
    let (mut conn, _) = subscriber(&addr, &viewer, &topic, StartAt::Latest);
    cap(&mut conn, &topic, PER_SEC);
    let start = conn
        .subscribe(&topic, StartAt::Earliest, 0)
        .expect("subscribe from the earliest comment")
        .start;
    assert_eq!(start, 0, "earliest offset");

    let mut received = Received::default();
    let complete = read_until(&mut conn, &topic, &mut received, |r| {
        r.accounted() >= end - start
    });
    read_for(&mut conn, &topic, &mut received, QUIET);
    assert!(
        complete,
        "{} delivered and {} skipped of {} stored comments",
        received.events.len(),
        received.skipped(),
        end - start
    );
    assert_eq!(received.accounted(), end - start, "comments accounted for");
    let markers = received
        .events
        .iter()
        .filter(|e| e.flags & flags::PRIORITY != 0)
        .count();
    assert_eq!(markers, 3, "marker comments delivered");
    assert_notices_exact(&received, start, end);
    assert_rate(&received.events, PER_SEC as usize);
}

#[test]
fn non_boolean_priority_claim_is_unauthenticated() {
    let node = start_with_auth();
    let claims = json!({
        "sub": "host-2",
        "role": "commenter",
        "pub_topics": ["cap/**"],
        "exp": now_s() + 3600,
        "priority": "yes",
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HS256 key");
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token");
    let options = Options { token, ..options() };
    match Connection::connect(&node.addr(), &options) {
        Err(ClientError::Server { code, close, .. }) => {
            assert_eq!(code, ErrorCode::Unauthenticated, "ERROR code");
            assert!(close, "ERROR closes the connection");
        }
        other => panic!("expected an ERROR from the server, got {other:?}"),
    }
}

/// Starts a relay below `upstream` with the same `[delivery]` settings.
fn start_relay(upstream: &str) -> Node {
    start(&format!(
        "role = \"relay\"\n[relay]\nupstreams = [{upstream:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n"
    ))
}

/// A viewer at a relay is capped by the relay itself, while another viewer of the same relay
/// gets every comment.
#[test]
fn relay_caps_its_own_subscriber() {
    const PER_SEC: u32 = 10;
    let origin = start("");
    let relay = start_relay(&origin.addr());
    let connected = wait_until(WAIT, || {
        relay
            .broker
            .log_lines()
            .iter()
            .any(|l| l.contains("connected upstream"))
    });
    assert!(connected, "relay did not connect upstream");
    let topic = topic("cap/relayed");
    let (mut capped, start) = subscriber(&relay.addr(), "", &topic, StartAt::Latest);
    cap(&mut capped, &topic, PER_SEC);
    let (mut uncapped, _) = subscriber(&relay.addr(), "", &topic, StartAt::Latest);

    let mut publisher = connect(&origin.addr(), "", WAIT);
    let mut published = 0;
    for round in 0..10 {
        published += publish(&mut publisher, &topic, &format!("round {round}"), 60).len() as u64;
        // Pacing, not a wait for a condition: the comments spread over about a second.
        thread::sleep(Duration::from_millis(100));
    }
    let end = start + published;

    let everything = collect_events(&mut uncapped, &topic, published as usize);
    let offsets: Vec<u64> = everything.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (start..end).collect::<Vec<_>>(),
        "uncapped offsets"
    );

    let mut received = Received::default();
    let complete = read_until(&mut capped, &topic, &mut received, |r| {
        r.accounted() >= published
    });
    read_for(&mut capped, &topic, &mut received, QUIET);
    assert!(
        complete,
        "{} delivered and {} skipped of {published} comments",
        received.events.len(),
        received.skipped()
    );
    assert_eq!(received.accounted(), published, "comments accounted for");
    assert!(received.skipped() > 0, "no comment skipped at the relay");
    assert_eq!(
        skipped_metric(&relay.broker),
        received.skipped(),
        "skipped comments metric at the relay"
    );
    assert_notices_exact(&received, start, end);
    assert_rate(&received.events, PER_SEC as usize);
}
