//! Moderation through a relay tree with real chorusd processes on loopback: an origin, a
//! regional relay below it and an edge relay below that, all with token authentication. Comments
//! published at the edge keep their author at every node, MODERATE frames sent to the edge are
//! carried out by the origin, and tombstones reach every subscriber and the edge cache.

mod util;

use std::net::TcpListener;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_client::{ClientError, Connection, ErrorCode, Event, Frame, Options, StartAt, Topic};
use chorus_protocol::event::flags;
use chorus_protocol::{ModAction, RelayPublish};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use util::client::{options, topic};
use util::raw::accept_and_drop_at;
use util::{free_addr, Broker, TestDir};

/// Shared secret of the test's HS256 tokens, trusted by every node.
const SECRET: &str = "relay-moderation-test-secret";

/// Maximum wait for a connection, an acknowledgement or a delivery.
const WAIT: Duration = Duration::from_secs(20);

/// A broker and the directory that contains its data and configuration.
struct Node {
    broker: Broker,
    _dir: TestDir,
}

impl Node {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }
}

/// An origin, a regional relay below it, and an edge relay below the regional one.
struct Tree {
    origin: Node,
    regional: Node,
    edge: Node,
}

impl Tree {
    /// Starts the tree with `moderation`, TOML lines for the origin's `[moderation]` table, and
    /// waits until both relays are connected upstream.
    fn start(moderation: &str) -> Tree {
        let origin = start_node(&format!("[moderation]\n{moderation}\n"));
        let regional = start_relay(&origin.addr(), "relay-regional");
        let edge = start_relay(&regional.addr(), "relay-edge");
        for relay in [&regional, &edge] {
            relay.broker.wait_for_log("connected upstream", WAIT);
        }
        Tree {
            origin,
            regional,
            edge,
        }
    }

    /// Returns the address of each node, origin first.
    fn addrs(&self) -> [String; 3] {
        [self.origin.addr(), self.regional.addr(), self.edge.addr()]
    }
}

/// Starts a broker with authentication on, with `extra` TOML before the `[auth]` table.
fn start_node(extra: &str) -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "{extra}[auth]\nenabled = true\nhs256_secret = {SECRET:?}\nleeway_s = 0\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node { broker, _dir: dir }
}

/// Starts a relay below `upstream` whose link authenticates as `sub` with the relay role.
fn start_relay(upstream: &str, sub: &str) -> Node {
    let token = token(sub, "relay");
    start_node(&format!(
        "role = \"relay\"\n[relay]\nupstreams = [{upstream:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\ntoken = {token:?}\n"
    ))
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
}

/// Returns an HS256 token for `sub` with `role`, allowed every topic, valid for an hour.
fn token(sub: &str, role: &str) -> String {
    let claims: Value = json!({
        "sub": sub,
        "role": role,
        "sub_topics": ["**"],
        "pub_topics": ["**"],
        "exp": now_s() + 3600,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token")
}

fn connect_as(addr: &str, sub: &str, role: &str) -> Connection {
    let options = Options {
        token: token(sub, role),
        ..options()
    };
    Connection::connect(addr, &options).expect("connect with a valid token")
}

/// Connects a viewer to every address and subscribes each to `topic` from `start`.
fn subscribe_everywhere(addrs: &[String], topic: &Topic, start: StartAt) -> Vec<Connection> {
    addrs
        .iter()
        .map(|addr| {
            let mut conn = connect_as(addr, "viewer", "viewer");
            conn.subscribe(topic, start, 0)
                .unwrap_or_else(|e| panic!("subscribe at {addr}: {e}"));
            conn
        })
        .collect()
}

/// Receives entries of `topic` until `count` arrived, and returns them.
fn collect(conn: &mut Connection, topic: &Topic, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
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

/// Returns the rejection code of a publish, and fails the test on any other result.
fn rejection<T: std::fmt::Debug>(result: Result<T, ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Rejected { code, .. }) => code,
        other => panic!("expected a rejected publish, got {other:?}"),
    }
}

/// Returns the code of a refused MODERATE, and fails the test on any other result.
fn moderate_rejection(result: Result<(), ClientError>) -> ErrorCode {
    match result {
        Err(ClientError::Refused { code, .. }) => code,
        other => panic!("expected a refused MODERATE, got {other:?}"),
    }
}

/// Publishes `count` comments at once on `conn`, then returns the code of each
/// acknowledgement in publish order.
fn publish_burst(conn: &mut Connection, topic: &Topic, count: usize) -> Vec<ErrorCode> {
    let seqs: Vec<u64> = (0..count)
        .map(|i| {
            let payload = format!("burst comment {i}");
            conn.send_publish(topic, payload.as_bytes())
                .expect("send_publish")
        })
        .collect();
    conn.flush().expect("flush");
    let mut codes = vec![None; count];
    while codes.iter().any(Option::is_none) {
        match conn.recv().expect("failed to read an acknowledgement") {
            Frame::PublishAck(ack) => {
                let index = seqs
                    .iter()
                    .position(|seq| *seq == ack.seq)
                    .expect("acknowledgement of a sent publish");
                codes[index] = Some(ack.code);
            }
            other => panic!("expected PUBLISH_ACK, got {other:?}"),
        }
    }
    codes.into_iter().flatten().collect()
}

fn delete(topic: &Topic, offset: u64) -> ModAction {
    ModAction::DeleteComment {
        topic: topic.clone(),
        offset,
    }
}

#[test]
fn edge_comment_carries_author_everywhere() {
    let tree = Tree::start("");
    let topic = topic("live/authors");
    let mut subscribers = subscribe_everywhere(&tree.addrs(), &topic, StartAt::Latest);

    connect_as(&tree.edge.addr(), "alice", "commenter")
        .publish(&topic, b"hello from the edge")
        .expect("publish at the edge");

    for (node, subscriber) in ["origin", "regional", "edge"].iter().zip(&mut subscribers) {
        let events = collect(subscriber, &topic, 1);
        assert_eq!(events[0].publisher, "alice", "publisher at the {node}");
        assert_eq!(events[0].flags, 0, "flags at the {node}");
    }
}

#[test]
fn edge_moderator_comment_keeps_priority() {
    let tree = Tree::start("");
    let topic = topic("live/priority");
    let mut subscriber = subscribe_everywhere(&[tree.origin.addr()], &topic, StartAt::Latest);

    connect_as(&tree.edge.addr(), "host", "moderator")
        .publish(&topic, b"welcome, everyone")
        .expect("publish at the edge");

    let events = collect(&mut subscriber[0], &topic, 1);
    assert_eq!(events[0].publisher, "host");
    assert_eq!(events[0].flags, flags::PRIORITY);
}

#[test]
fn delete_at_edge_reaches_every_node() {
    let tree = Tree::start("");
    let topic = topic("live/delete");
    let mut subscribers = subscribe_everywhere(&tree.addrs(), &topic, StartAt::Latest);
    let mut author = connect_as(&tree.edge.addr(), "bob", "commenter");
    let offsets: Vec<u64> = ["first", "rude", "third"]
        .iter()
        .map(|text| {
            author
                .publish(&topic, text.as_bytes())
                .expect("publish")
                .offset
        })
        .collect();

    connect_as(&tree.edge.addr(), "mod", "moderator")
        .moderate(delete(&topic, offsets[1]))
        .expect("delete through the edge");

    for (node, subscriber) in ["origin", "regional", "edge"].iter().zip(&mut subscribers) {
        let events = collect(subscriber, &topic, 4);
        let tombstone = &events[3];
        assert_eq!(
            tombstone.flags,
            flags::TOMBSTONE,
            "tombstone flags at the {node}"
        );
        assert_eq!(
            tombstone.tombstone_target(),
            Some(offsets[1]),
            "tombstone target at the {node}"
        );
    }
}

/// A subscriber from earliest, after a delete, sees the deleted comment as an entry with the
/// DELETED flag and no text, then the tombstone.
fn assert_history_hides_deleted(addr: &str, topic: &Topic, deleted: u64, node: &str) {
    let mut conn = connect_as(addr, "late-viewer", "viewer");
    conn.subscribe(topic, StartAt::Earliest, 0)
        .expect("subscribe from earliest");
    let events = collect(&mut conn, topic, 4);
    let entry = events
        .iter()
        .find(|e| e.offset == deleted)
        .unwrap_or_else(|| panic!("no entry at offset {deleted} at the {node}"));
    assert_eq!(
        entry.flags,
        flags::DELETED,
        "flags of the deleted entry at the {node}"
    );
    assert!(
        entry.payload.is_empty(),
        "payload of the deleted entry at the {node}"
    );
    assert_eq!(
        entry.publisher, "carol",
        "publisher of the deleted entry at the {node}"
    );
    assert_eq!(
        events[3].tombstone_target(),
        Some(deleted),
        "tombstone at the {node}"
    );
}

#[test]
fn history_after_delete_has_no_text() {
    let tree = Tree::start("");
    let topic = topic("live/history");
    // The edge subscribes upstream and caches the comments before the delete.
    let mut watcher = subscribe_everywhere(&[tree.edge.addr()], &topic, StartAt::Earliest);
    let mut author = connect_as(&tree.edge.addr(), "carol", "commenter");
    let offsets: Vec<u64> = ["one", "spam", "three"]
        .iter()
        .map(|text| {
            author
                .publish(&topic, text.as_bytes())
                .expect("publish")
                .offset
        })
        .collect();
    collect(&mut watcher[0], &topic, 3);

    connect_as(&tree.edge.addr(), "mod", "moderator")
        .moderate(delete(&topic, offsets[1]))
        .expect("delete through the edge");
    collect(&mut watcher[0], &topic, 1);

    assert_history_hides_deleted(&tree.edge.addr(), &topic, offsets[1], "edge");
    assert_history_hides_deleted(&tree.regional.addr(), &topic, offsets[1], "regional relay");
    assert_history_hides_deleted(&tree.origin.addr(), &topic, offsets[1], "origin");
}

#[test]
fn banned_user_at_edge_gets_banned() {
    let tree = Tree::start("");
    let topic = topic("live/ban");
    connect_as(&tree.edge.addr(), "mod", "moderator")
        .moderate(ModAction::Ban {
            user: "mallory".into(),
            purge: None,
        })
        .expect("ban through the edge");

    let mut banned = connect_as(&tree.edge.addr(), "mallory", "commenter");
    let result = banned.publish(&topic, b"let me in");
    let mut other = connect_as(&tree.edge.addr(), "dave", "commenter");
    let allowed = other.publish(&topic, b"still here");

    assert_eq!(rejection(result), ErrorCode::Banned);
    assert!(allowed.is_ok(), "publish of another user: {allowed:?}");
}

#[test]
fn slow_mode_through_edge_allows_one() {
    let tree = Tree::start("");
    let topic = topic("live/slow");
    connect_as(&tree.edge.addr(), "mod", "moderator")
        .moderate(ModAction::SlowMode {
            topic: topic.clone(),
            interval_ms: 600_000,
        })
        .expect("slow mode through the edge");

    let mut author = connect_as(&tree.edge.addr(), "erin", "commenter");
    let codes = publish_burst(&mut author, &topic, 4);

    assert_eq!(codes[0], ErrorCode::Ok);
    assert_eq!(codes[1..], [ErrorCode::SlowMode; 3]);
}

#[test]
fn rate_limit_through_edge_allows_burst() {
    // One comment a minute after a burst of three, so the bucket gains no token during the
    // test and exactly three of four publishes pass.
    let tree = Tree::start("rate_per_minute = 1\nrate_burst = 3");
    let topic = topic("live/rate");

    let mut author = connect_as(&tree.edge.addr(), "frank", "commenter");
    let codes = publish_burst(&mut author, &topic, 4);

    assert_eq!(codes[..3], [ErrorCode::Ok; 3]);
    assert_eq!(codes[3], ErrorCode::RateLimited);
}

#[test]
fn viewer_moderate_at_edge_is_forbidden() {
    let tree = Tree::start("");
    let mut viewer = connect_as(&tree.edge.addr(), "grace", "viewer");
    let result = viewer.moderate(ModAction::Ban {
        user: "mallory".into(),
        purge: None,
    });
    assert_eq!(moderate_rejection(result), ErrorCode::Forbidden);
}

#[test]
fn commenter_relay_publish_at_edge_is_forbidden() {
    let tree = Tree::start("");
    let mut commenter = connect_as(&tree.edge.addr(), "heidi", "commenter");
    commenter
        .send(&Frame::RelayPublish(RelayPublish {
            seq: 7,
            topic: topic("live/spoof"),
            user: "someone-else".into(),
            priority: true,
            payload: bytes::Bytes::from_static(b"spoofed"),
        }))
        .expect("send RELAY_PUBLISH");

    match commenter.recv().expect("PUBLISH_ACK of RELAY_PUBLISH") {
        Frame::PublishAck(ack) => {
            assert_eq!(ack.seq, 7);
            assert_eq!(ack.code, ErrorCode::Forbidden);
        }
        other => panic!("expected PUBLISH_ACK, got {other:?}"),
    }
}

/// Starts a relay without authentication below `upstream`.
fn open_relay(upstream: &str) -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "role = \"relay\"\n[relay]\nupstreams = [{upstream:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n"
    ));
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node { broker, _dir: dir }
}

#[test]
fn moderate_without_upstream_is_unavailable() {
    // Nothing listens on the upstream's port once the listener is dropped.
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let addr = upstream.local_addr().unwrap().to_string();
    drop(upstream);
    let relay = open_relay(&addr);

    let mut conn = Connection::connect(&relay.addr(), &options()).expect("connect");
    let result = conn.moderate(delete(&topic("live/nowhere"), 0));

    assert_eq!(moderate_rejection(result), ErrorCode::UpstreamUnavailable);
}

#[test]
fn moderate_lost_with_upstream_is_unavailable() {
    let upstream = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    let relay = open_relay(&upstream.local_addr().unwrap().to_string());
    let dropper = thread::spawn(move || {
        accept_and_drop_at(&upstream, WAIT, |f| matches!(f, Frame::Moderate(_)))
    });
    relay.broker.wait_for_log("connected upstream", WAIT);

    let mut conn = Connection::connect(&relay.addr(), &options()).expect("connect");
    let result = conn.moderate(delete(&topic("live/dropped"), 0));
    dropper.join().expect("test upstream thread");

    assert_eq!(moderate_rejection(result), ErrorCode::UpstreamUnavailable);
}

#[test]
fn unauthenticated_edge_forwards_plain_publish() {
    // Without authentication at the relay the session has no user, so the relay sends PUBLISH
    // and the origin, which has authentication on, stores the relay's own user.
    let origin = start_node("");
    let dir = TestDir::new();
    let relay_token = token("relay-open", "relay");
    let config = dir.write_config(&format!(
        "role = \"relay\"\n[relay]\nupstreams = [{:?}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\ntoken = {relay_token:?}\n",
        origin.addr()
    ));
    let relay = Broker::start(&dir.data(), &["--config", &config]);
    relay.wait_for_log("connected upstream", WAIT);
    let topic = topic("live/open-edge");
    let mut subscriber = subscribe_everywhere(&[origin.addr()], &topic, StartAt::Latest);

    let mut conn = Connection::connect(&relay.addr_string(), &options()).expect("connect");
    conn.publish(&topic, b"anonymous comment")
        .expect("publish at the relay");

    let events = collect(&mut subscriber[0], &topic, 1);
    assert_eq!(events[0].publisher, "relay-open");
}

#[test]
fn resume_at_edge_hides_deleted_text() {
    let tree = Tree::start("");
    let topic = topic("live/resume");
    let mut first = subscribe_everywhere(&[tree.edge.addr()], &topic, StartAt::Earliest);
    let mut author = connect_as(&tree.edge.addr(), "ivan", "commenter");
    let offsets: Vec<u64> = (0..5)
        .map(|i| {
            let text = format!("comment {i}");
            author
                .publish(&topic, text.as_bytes())
                .expect("publish")
                .offset
        })
        .collect();
    collect(&mut first[0], &topic, 5);
    connect_as(&tree.edge.addr(), "mod", "moderator")
        .moderate(delete(&topic, offsets[3]))
        .expect("delete through the edge");
    collect(&mut first[0], &topic, 1);

    // A client that had seen the first two comments resumes after them at the edge.
    let mut resumed = connect_as(&tree.edge.addr(), "judy", "viewer");
    resumed
        .subscribe(&topic, StartAt::Offset(offsets[2]), 0)
        .expect("resume at the edge");
    let events = collect(&mut resumed, &topic, 4);

    let received: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(received[..3], offsets[2..]);
    assert_eq!(events[0].payload, "comment 2");
    assert_eq!(events[1].flags, flags::DELETED);
    assert!(
        events[1].payload.is_empty(),
        "payload of the deleted comment"
    );
    assert_eq!(events[3].tombstone_target(), Some(offsets[3]));
}

/// The FNV-1a 64-bit hash of the cluster's topic map, written out again here so the test
/// checks the documented function rather than the broker's copy of it.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Returns a topic that the map over `origins` origins assigns to origin `index`.
fn topic_owned_by(index: u64, origins: u64, prefix: &str) -> Topic {
    let name = (0..1000)
        .map(|i| format!("{prefix}/{i}"))
        .find(|name| fnv1a64(name.as_bytes()) % origins == index)
        .expect("some topic name maps to each origin");
    topic(&name)
}

/// Two origins that share a topic map, and a relay that routes by it.
struct Cluster {
    origins: Vec<Node>,
    relay: Node,
}

impl Cluster {
    fn start() -> Cluster {
        let addrs = [free_addr(), free_addr()];
        let list: Vec<String> = addrs.iter().map(|addr| format!("{addr:?}")).collect();
        let cluster = format!("[cluster]\norigins = [{}]\n", list.join(", "));
        let origins = addrs
            .iter()
            .map(|addr| {
                let dir = TestDir::new();
                let config = dir.write_config(&format!(
                    "{cluster}self_origin = {addr:?}\n[auth]\nenabled = true\n\
                     hs256_secret = {SECRET:?}\nleeway_s = 0\n"
                ));
                let broker = Broker::start_on(&dir.data(), addr, &["--config", &config]);
                Node { broker, _dir: dir }
            })
            .collect();
        let relay_token = token("relay-cluster", "relay");
        let relay = start_node(&format!(
            "role = \"relay\"\n{cluster}[relay]\nreconnect_initial_ms = 20\n\
             reconnect_max_ms = 300\ntoken = {relay_token:?}\n"
        ));
        let connected = util::wait_until(WAIT, || {
            let lines = relay.broker.log_lines();
            lines
                .iter()
                .filter(|l| l.contains("connected upstream"))
                .count()
                >= 2
        });
        assert!(connected, "relay did not connect to both origins");
        Cluster { origins, relay }
    }
}

#[test]
fn ban_at_relay_reaches_every_origin() {
    let cluster = Cluster::start();
    let mut moderator = connect_as(&cluster.relay.addr(), "mod", "moderator");
    moderator
        .moderate(ModAction::Ban {
            user: "mallory".into(),
            purge: None,
        })
        .expect("ban through the relay");

    let mut banned = connect_as(&cluster.relay.addr(), "mallory", "commenter");
    for index in 0..2 {
        let topic = topic_owned_by(index, 2, "live/cluster");
        let result = banned.publish(&topic, b"let me in");
        assert_eq!(rejection(result), ErrorCode::Banned, "at origin {index}");
    }

    moderator
        .moderate(ModAction::Unban {
            user: "mallory".into(),
        })
        .expect("unban through the relay");
    for index in 0..2 {
        let topic = topic_owned_by(index, 2, "live/cluster");
        let result = banned.publish(&topic, b"back again");
        assert!(
            result.is_ok(),
            "publish at origin {index} after unban: {result:?}"
        );
    }
}

#[test]
fn ban_with_origin_down_is_unavailable() {
    let mut cluster = Cluster::start();
    cluster.origins[1].broker.kill();
    let mut moderator = connect_as(&cluster.relay.addr(), "mod", "moderator");

    let result = moderator.moderate(ModAction::Ban {
        user: "mallory".into(),
        purge: None,
    });

    assert_eq!(moderate_rejection(result), ErrorCode::UpstreamUnavailable);
}
