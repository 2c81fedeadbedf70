//! Viewer counts and reactions with real chorusd processes on loopback: a tree of origin,
//! regional relay and edge relay, viewers at every node, and subscribers of the companion
//! topics `_viewers/T` and `_reactions/T` that the origin writes.

mod util;

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chorus_client::{ClientError, Connection, ErrorCode, Frame, Options, StartAt, Topic};
use chorus_protocol::{AudienceEntry, React, Subscribe};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use util::client::{connect, publish_pipelined, topic};
use util::raw::RawConn;
use util::{free_addr, Broker, TestDir};

/// Maximum wait for a count or a sum to reach its expected value.
const WAIT: Duration = Duration::from_secs(20);

/// Time for which a converged value must stay unchanged: many intervals of [`AUDIENCE`].
const SETTLE: Duration = Duration::from_millis(1500);

/// Reaction interval set in [`AUDIENCE`], which `_reactions/T` records carry.
const REACTION_INTERVAL_MS: u64 = 50;

/// Short intervals, so that counts cross the tree in well under a second.
const AUDIENCE: &str = "[audience]\ninterval_ms = 100\nreaction_interval_ms = 50\n";

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

fn origin() -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(AUDIENCE);
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node { broker, _dir: dir }
}

fn relay(upstream: &str) -> Node {
    let dir = TestDir::new();
    let text = format!(
        "role = \"relay\"\n{AUDIENCE}[relay]\nupstreams = [{upstream:?}]\n\
         reconnect_initial_ms = 20\nreconnect_max_ms = 300\n"
    );
    let config = dir.write_config(&text);
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    Node { broker, _dir: dir }
}

/// Starts origin -> regional relay -> edge relay.
fn tree() -> [Node; 3] {
    let origin = origin();
    let regional = relay(&origin.addr());
    let edge = relay(&regional.addr());
    [origin, regional, edge]
}

/// Publishes one comment, which creates the topic at the origin: the origin writes companion
/// topics only for topics that exist.
fn create_topic(origin: &Node, topic: &Topic) {
    publish_pipelined(&mut connect(&origin.addr()), topic, &[b"first".to_vec()]);
}

/// Connects `count` viewers of `topic` at `addr`, each subscribed from the latest comment.
fn viewers(addr: &str, topic: &Topic, count: usize) -> Vec<Connection> {
    (0..count)
        .map(|_| {
            let mut conn = connect(addr);
            conn.subscribe(topic, StartAt::Latest, 0)
                .expect("viewer subscribes");
            conn
        })
        .collect()
}

/// A subscriber of a companion topic with short reads, so that it can poll with a deadline.
struct Watcher {
    conn: Connection,
    topic: Topic,
    /// Payloads of every record received, parsed as JSON.
    records: Vec<serde_json::Value>,
}

impl Watcher {
    fn new(addr: &str, name: &str, start: StartAt) -> Watcher {
        Watcher::with_token(addr, name, start, "")
    }

    fn with_token(addr: &str, name: &str, start: StartAt, token: &str) -> Watcher {
        let topic = topic(name);
        let options = Options {
            read_timeout: Some(Duration::from_millis(100)),
            token: token.to_owned(),
            ..util::client::options()
        };
        let mut conn = Connection::connect(addr, &options).expect("watcher connects");
        conn.subscribe(&topic, start, 0)
            .expect("watcher subscribes");
        Watcher {
            conn,
            topic,
            records: Vec::new(),
        }
    }

    /// Reads what arrives until `deadline`, or until `done` holds for the records so far.
    /// Returns whether `done` held.
    fn read_until(
        &mut self,
        deadline: Instant,
        mut done: impl FnMut(&[serde_json::Value]) -> bool,
    ) -> bool {
        while !done(&self.records) {
            if Instant::now() >= deadline {
                return false;
            }
            match self.conn.recv() {
                Ok(Frame::Events(batch)) => {
                    assert_eq!(batch.topic(), &self.topic, "EVENTS topic");
                    for event in batch.iter() {
                        assert_eq!(event.publisher, "", "publisher of a companion record");
                        let value = serde_json::from_slice(&event.payload)
                            .expect("companion record is JSON");
                        self.records.push(value);
                    }
                }
                Ok(other) => panic!("expected EVENTS, got {other:?}"),
                Err(ClientError::Timeout) => {}
                Err(e) => panic!("watcher failed: {e}"),
            }
        }
        true
    }

    /// Returns the viewer count of the latest record, if any.
    fn latest_viewers(&self) -> Option<u64> {
        self.records.last().map(|record| {
            record["viewers"]
                .as_u64()
                .expect("viewers record has a number")
        })
    }

    /// Waits until the viewer count settles at `expected`: a reading of SETTLE brings no new
    /// record and the latest one reports `expected`. A record read first with `StartAt::Last` may
    /// predate changes still on their way, so reaching `expected` once is not enough.
    fn expect_viewers(&mut self, expected: u64) {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.records.len();
            let until = (Instant::now() + SETTLE).min(deadline);
            self.read_until(until, |_| false);
            if self.records.len() == seen && self.latest_viewers() == Some(expected) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "viewer count did not settle at {expected}; records: {:?}",
                self.records
            );
        }
    }
}

/// Returns the value of the metric sample that `line_start` begins, such as
/// `chorus_reactions_total `, from the broker's admin endpoint.
fn metric(broker: &Broker, line_start: &str) -> Option<u64> {
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
    let line = text.lines().find(|line| line.starts_with(line_start))?;
    line[line_start.len()..].trim().parse().ok()
}

fn viewers_of(record: Option<&serde_json::Value>) -> Option<u64> {
    record?["viewers"].as_u64()
}

/// Adds up the reactions of `_reactions/T` records per kind.
fn reaction_totals(records: &[serde_json::Value]) -> BTreeMap<String, u64> {
    let mut totals = BTreeMap::new();
    for record in records {
        let kinds = record["reactions"]
            .as_object()
            .expect("reactions record has an object of kinds");
        for (kind, count) in kinds {
            *totals.entry(kind.clone()).or_default() += count.as_u64().expect("count is a number");
        }
    }
    totals
}

#[test]
fn viewers_across_tree_are_counted_exactly() {
    let [origin, regional, edge] = tree();
    let topic = topic("audience/final");
    create_topic(&origin, &topic);
    let mut watcher = Watcher::new(&edge.addr(), "_viewers/audience/final", StartAt::Last(1));

    let mut at_origin = viewers(&origin.addr(), &topic, 3);
    let _at_regional = viewers(&regional.addr(), &topic, 4);
    let mut at_edge = viewers(&edge.addr(), &topic, 5);
    watcher.expect_viewers(12);

    at_origin.truncate(1);
    at_edge.truncate(2);
    watcher.expect_viewers(7);
}

#[test]
fn last_record_gives_current_count() {
    let [origin, _regional, edge] = tree();
    let topic = topic("audience/late");
    create_topic(&origin, &topic);
    let _viewers = viewers(&edge.addr(), &topic, 6);
    let mut first = Watcher::new(&origin.addr(), "_viewers/audience/late", StartAt::Last(1));
    first.expect_viewers(6);

    let mut late = Watcher::new(&edge.addr(), "_viewers/audience/late", StartAt::Last(1));
    let got_one = late.read_until(Instant::now() + WAIT, |records| !records.is_empty());
    assert!(got_one, "a last-1 subscription received no record");
    assert_eq!(
        late.latest_viewers(),
        Some(6),
        "first record of a last-1 subscription"
    );
}

/// A viewer at the edge passes through two relay connections. Were those counted, the origin
/// would see 2 or 3 viewers at some point.
#[test]
fn relay_subscriptions_are_not_viewers() {
    let [origin, _regional, edge] = tree();
    let topic = topic("audience/relays");
    create_topic(&origin, &topic);
    let _viewer = viewers(&edge.addr(), &topic, 1);

    let mut watcher = Watcher::new(
        &origin.addr(),
        "_viewers/audience/relays",
        StartAt::Earliest,
    );
    watcher.expect_viewers(1);
    for record in &watcher.records {
        assert_eq!(viewers_of(Some(record)), Some(1), "every viewer record");
    }
}

#[test]
fn topic_without_comments_gets_count_once_created() {
    let [origin, _regional, edge] = tree();
    let topic = topic("audience/waiting");
    let _viewers = viewers(&edge.addr(), &topic, 2);
    let mut watcher = Watcher::new(
        &origin.addr(),
        "_viewers/audience/waiting",
        StartAt::Earliest,
    );
    watcher.read_until(Instant::now() + SETTLE, |_| false);
    assert!(
        watcher.records.is_empty(),
        "records for a topic that does not exist: {:?}",
        watcher.records
    );

    create_topic(&origin, &topic);
    watcher.expect_viewers(2);
}

#[test]
fn reactions_add_up_exactly() {
    const PER_NODE: usize = 4;
    let nodes = tree();
    let [origin, _, edge] = &nodes;
    let topic = topic("audience/reactions");
    create_topic(origin, &topic);
    let mut watcher = Watcher::new(
        &edge.addr(),
        "_reactions/audience/reactions",
        StartAt::Earliest,
    );

    let mut expected = BTreeMap::<String, u64>::new();
    let mut all = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for (v, mut viewer) in viewers(&node.addr(), &topic, PER_NODE)
            .into_iter()
            .enumerate()
        {
            let hearts = 20 + 7 * n + v;
            let claps = 3 + v;
            for _ in 0..hearts {
                viewer.react(&topic, "heart", 1).expect("send REACT");
            }
            for _ in 0..claps {
                viewer.react(&topic, "clap", 1).expect("send REACT");
            }
            *expected.entry("heart".into()).or_default() += hearts as u64;
            *expected.entry("clap".into()).or_default() += claps as u64;
            all.push(viewer);
        }
    }
    // A connection that does not subscribe to the topic has its reactions dropped.
    let mut outsider = connect(&edge.addr());
    outsider
        .react(&topic, "heart", 1)
        .expect("send REACT without a subscription");

    let reached = watcher.read_until(Instant::now() + WAIT, |records| {
        reaction_totals(records) == expected
    });
    assert!(
        reached,
        "reaction totals {:?} did not reach {expected:?}",
        reaction_totals(&watcher.records)
    );
    watcher.read_until(Instant::now() + SETTLE, |_| false);
    assert_eq!(
        reaction_totals(&watcher.records),
        expected,
        "totals after settling"
    );
    assert_eq!(
        metric(
            &edge.broker,
            "chorus_reactions_dropped_total{reason=\"not_subscribed\"} "
        ),
        Some(1),
        "reactions dropped at the edge for want of a subscription"
    );
    for record in &watcher.records {
        assert_eq!(
            record["interval_ms"].as_u64(),
            Some(REACTION_INTERVAL_MS),
            "interval_ms of {record}"
        );
    }
}

#[test]
fn react_count_above_one_is_forbidden() {
    let [origin, _regional, edge] = tree();
    let topic = topic("audience/forbidden");
    create_topic(&origin, &topic);
    for addr in [origin.addr(), edge.addr()] {
        let mut viewer = connect(&addr);
        viewer.subscribe(&topic, StartAt::Latest, 0).unwrap();
        viewer.react(&topic, "heart", 2).expect("send REACT");
        match viewer.recv() {
            Err(ClientError::Server {
                code,
                topic: named,
                close,
                ..
            }) => {
                assert_eq!(code, ErrorCode::Forbidden, "error code at {addr}");
                assert_eq!(named, "", "topic of the error at {addr}");
                assert!(close, "the error at {addr} closes the connection");
            }
            other => panic!("expected ERROR FORBIDDEN at {addr}, got {other:?}"),
        }
        let after = viewer.subscribe(&topic, StartAt::Latest, 0);
        assert!(after.is_err(), "connection after the error at {addr}");
    }
}

#[test]
fn audience_from_viewer_is_forbidden() {
    let origin = origin();
    let topic = topic("audience/claims");
    create_topic(&origin, &topic);
    let mut honest = connect(&origin.addr());
    honest.subscribe(&topic, StartAt::Latest, 0).unwrap();
    let mut viewer = connect(&origin.addr());
    viewer.subscribe(&topic, StartAt::Latest, 0).unwrap();
    let claim = Frame::Audience(vec![AudienceEntry {
        topic: topic.clone(),
        viewers: 1_000_000,
    }]);
    viewer.send(&claim).expect("send AUDIENCE");
    match viewer.recv() {
        Err(ClientError::Server { code, close, .. }) => {
            assert_eq!(code, ErrorCode::Forbidden, "error code");
            assert!(close, "the error closes the connection");
        }
        other => panic!("expected ERROR FORBIDDEN, got {other:?}"),
    }

    let mut watcher = Watcher::new(&origin.addr(), "_viewers/audience/claims", StartAt::Last(1));
    watcher.expect_viewers(1);
}

/// Shared secret of the HS256 tokens of [`relay_role_marks_relay_sessions`].
const SECRET: &str = "test-secret-for-audience-tokens";

/// Returns an HS256 token for `sub` with `role` that may subscribe and publish to every topic.
fn token(sub: &str, role: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock is after 1970")
        .as_secs()
        + 3600;
    let claims = serde_json::json!({
        "sub": sub,
        "role": role,
        "sub_topics": ["**"],
        "pub_topics": ["**"],
        "exp": exp,
    });
    let key = EncodingKey::from_secret(SECRET.as_bytes()).expect("HS256 key");
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).expect("encode token")
}

fn connect_as(addr: &str, token: &str, client_name: &str) -> Connection {
    let options = Options {
        token: token.to_owned(),
        client_name: client_name.to_owned(),
        ..util::client::options()
    };
    Connection::connect(addr, &options).expect("connect with a valid token")
}

/// With authentication, a relay session is one whose token has the relay role. A viewer that
/// writes a relay chain into its client name is still a viewer. A relay whose upstream link
/// carries a relay token may send sums.
#[test]
fn relay_role_marks_relay_sessions() {
    let auth = format!("[auth]\nenabled = true\nhs256_secret = {SECRET:?}\n");
    let origin_dir = TestDir::new();
    let config = origin_dir.write_config(&format!("{AUDIENCE}{auth}"));
    let origin = Broker::start(&origin_dir.data(), &["--config", &config]);
    let relay_dir = TestDir::new();
    let config = relay_dir.write_config(&format!(
        "role = \"relay\"\n{AUDIENCE}{auth}[relay]\nupstreams = [{:?}]\n\
         reconnect_initial_ms = 20\nreconnect_max_ms = 300\ntoken = {:?}\n",
        origin.addr_string(),
        token("relay-1", "relay"),
    ));
    let relay = Broker::start(&relay_dir.data(), &["--config", &config]);
    let topic = topic("audience/auth");
    connect_as(&origin.addr_string(), &token("host", "admin"), "test")
        .publish(&topic, b"first")
        .expect("admin publishes");

    let viewer_token = token("viewer", "viewer");
    let mut impostor = connect_as(
        &relay.addr_string(),
        &viewer_token,
        "app/1.0 chorus-relay/fake-edge",
    );
    impostor.subscribe(&topic, StartAt::Latest, 0).unwrap();
    impostor.react(&topic, "heart", 2).expect("send REACT");
    match impostor.recv() {
        Err(ClientError::Server { code, close, .. }) => {
            assert_eq!(code, ErrorCode::Forbidden, "error code for the impostor");
            assert!(close, "the error closes the impostor's connection");
        }
        other => panic!("expected ERROR FORBIDDEN, got {other:?}"),
    }
    let mut viewers: Vec<Connection> = (0..2)
        .map(|_| {
            let mut conn = connect_as(&relay.addr_string(), &viewer_token, "app/1.0");
            conn.subscribe(&topic, StartAt::Latest, 0).unwrap();
            conn
        })
        .collect();
    for viewer in &mut viewers {
        for _ in 0..5 {
            viewer.react(&topic, "heart", 1).expect("send REACT");
        }
    }

    let mut counts = Watcher::with_token(
        &origin.addr_string(),
        "_viewers/audience/auth",
        StartAt::Last(1),
        &viewer_token,
    );
    // The impostor's connection closed with the error, so the two viewers remain.
    counts.expect_viewers(2);
    let mut reactions = Watcher::with_token(
        &origin.addr_string(),
        "_reactions/audience/auth",
        StartAt::Earliest,
        &viewer_token,
    );
    let expected = BTreeMap::from([("heart".to_owned(), 10)]);
    let reached = reactions.read_until(Instant::now() + WAIT, |records| {
        reaction_totals(records) == expected
    });
    assert!(
        reached,
        "reaction totals {:?} did not reach {expected:?}",
        reaction_totals(&reactions.records)
    );
}

/// Five kinds sent in one write land in one reaction interval, of which the limit keeps the
/// first three.
#[test]
fn kinds_past_limit_are_dropped() {
    let dir = TestDir::new();
    let config = dir.write_config(
        "[audience]\ninterval_ms = 100\nreaction_interval_ms = 1000\nmax_reaction_kinds = 3\n",
    );
    let origin = Broker::start(&dir.data(), &["--config", &config]);
    let origin = Node {
        broker: origin,
        _dir: dir,
    };
    let topic = topic("audience/kinds");
    create_topic(&origin, &topic);
    let mut watcher = Watcher::new(
        &origin.addr(),
        "_reactions/audience/kinds",
        StartAt::Earliest,
    );

    let mut viewer = RawConn::connect(origin.broker.addr);
    viewer.handshake();
    viewer.send_frame(&Frame::Subscribe(Subscribe {
        topic: topic.clone(),
        start: StartAt::Latest,
        stream: 0,
    }));
    match viewer.read_frame() {
        Frame::Subscribed(_) => {}
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    let burst: Vec<u8> = ["a", "b", "c", "d", "e"]
        .into_iter()
        .flat_map(|kind| {
            let react = React {
                topic: topic.clone(),
                kind: kind.to_owned(),
                count: 1,
            };
            Frame::React(react).to_bytes()
        })
        .collect();
    viewer.send(&burst);

    let got_one = watcher.read_until(Instant::now() + WAIT, |records| !records.is_empty());
    assert!(got_one, "no reactions record");
    watcher.read_until(Instant::now() + SETTLE, |_| false);
    let expected = BTreeMap::from([("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]);
    assert_eq!(reaction_totals(&watcher.records), expected, "kinds kept");
    assert_eq!(
        metric(
            &origin.broker,
            "chorus_reactions_dropped_total{reason=\"kind_limit\"} "
        ),
        Some(2),
        "reactions dropped by the kind limit"
    );
}

/// The FNV-1a 64-bit hash of the cluster's topic map, written out again here so the test checks
/// the documented function.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// With two origins, `_viewers/T` hashed by its own name would land on the origin that does
/// not own `T`. The map places it with `T`, so the count reaches subscribers at the relay.
#[test]
fn cluster_places_companions_with_topic() {
    let origins = [free_addr(), free_addr()];
    let list = format!("{:?}, {:?}", origins[0], origins[1]);
    let _origins: Vec<Node> = origins
        .iter()
        .map(|addr| {
            let dir = TestDir::new();
            let config = dir.write_config(&format!(
                "{AUDIENCE}[cluster]\norigins = [{list}]\nself_origin = {addr:?}\n"
            ));
            let broker = Broker::start_on(&dir.data(), addr, &["--config", &config]);
            Node { broker, _dir: dir }
        })
        .collect();
    let dir = TestDir::new();
    let config = dir.write_config(&format!(
        "role = \"relay\"\n{AUDIENCE}[relay]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n[cluster]\norigins = [{list}]\n"
    ));
    let relay = Node {
        broker: Broker::start(&dir.data(), &["--config", &config]),
        _dir: dir,
    };
    let name = (0..1000)
        .map(|i| format!("audience/cluster/{i}"))
        .find(|name| {
            let companion = format!("_viewers/{name}");
            fnv1a64(name.as_bytes()) % 2 != fnv1a64(companion.as_bytes()) % 2
        })
        .expect("some name hashes apart from its companion");
    let topic = topic(&name);
    publish_pipelined(&mut connect(&relay.addr()), &topic, &[b"first".to_vec()]);

    let _viewers = viewers(&relay.addr(), &topic, 3);
    let mut watcher = Watcher::new(&relay.addr(), &format!("_viewers/{name}"), StartAt::Last(1));
    watcher.expect_viewers(3);
}
