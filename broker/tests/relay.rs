//! The relay role with real chorusd processes on loopback: relays linked to origins and to each
//! other, with the origin killed, restarted, recreated and replaced under them.

mod util;

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use chorus_client::{ClientError, Connection, ErrorCode, Event, Frame, StartAt, Subscriber, Topic};
use util::client::{
    assert_in_order, collect_events, collect_through, connect, options, publish_pipelined,
    publish_until, topic,
};
use util::pki::Pki;
use util::raw::accept_and_drop_at;
use util::{free_addr, wait_until, Broker, TestDir};

/// Maximum wait for a log line, a connection or a delivery.
const WAIT: Duration = Duration::from_secs(20);

/// A broker and the temporary directory that contains its data and configuration.
struct Node {
    broker: Broker,
    dir: TestDir,
}

impl Node {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }

    /// Counts the log lines of subscriptions started for `topic`.
    fn subscriptions_started(&self, topic: &str) -> usize {
        let field = format!("topic={topic} ");
        self.broker
            .log_lines()
            .iter()
            .filter(|line| line.contains("subscription started") && line.contains(&field))
            .count()
    }
}

fn origin() -> Node {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    Node { broker, dir }
}

/// Starts a relay with `upstreams`, short reconnect delays, and the extra TOML in `extra`,
/// which goes at the end of the `[relay]` table.
fn relay(upstreams: &[String], extra: &str) -> Node {
    relay_on("127.0.0.1:0", upstreams, extra)
}

fn relay_on(listen: &str, upstreams: &[String], extra: &str) -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(&relay_config(upstreams, extra));
    let broker = Broker::start_on(&dir.data(), listen, &["--config", &config]);
    Node { broker, dir }
}

fn relay_config(upstreams: &[String], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "role = \"relay\"\n[relay]\nupstreams = [{}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n{extra}\n",
        list.join(", ")
    )
}

/// Waits until the node's link has connected upstream `count` times in all.
fn wait_connected(node: &Node, count: usize) {
    let connected = wait_until(WAIT, || {
        let lines = node.broker.log_lines();
        lines
            .iter()
            .filter(|l| l.contains("connected upstream"))
            .count()
            >= count
    });
    assert!(connected, "relay did not connect upstream {count} time(s)");
}

fn payload(offset: u64) -> Vec<u8> {
    format!("comment {offset}").into_bytes()
}

fn payloads(range: std::ops::Range<u64>) -> Vec<Vec<u8>> {
    range.map(payload).collect()
}

fn subscribe(addr: &str, topic: &Topic, start: StartAt) -> Connection {
    let mut conn = connect(addr);
    conn.subscribe(topic, start, 0)
        .expect("subscribe at the relay");
    conn
}

/// The FNV-1a 64-bit hash that the cluster's topic map uses, written out again here so the
/// test checks the documented function rather than the broker's copy of it.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Returns a topic name that the map over `origins` origins assigns to origin `index`.
fn topic_owned_by(index: u64, origins: u64, prefix: &str) -> String {
    (0..1000)
        .map(|i| format!("{prefix}/{i}"))
        .find(|name| fnv1a64(name.as_bytes()) % origins == index)
        .expect("some topic name maps to each origin")
}

#[test]
fn relay_delivers_publishes_from_origin_and_relay() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "");
    let topic = topic("relay/basic");

    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Latest);
    let at_origin = publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..10));
    let at_relay = publish_pipelined(&mut connect(&relay.addr()), &topic, &payloads(10..20));

    let offsets: Vec<u64> = at_relay.iter().map(|ack| ack.offset).collect();
    assert_eq!(
        offsets,
        (10..20).collect::<Vec<u64>>(),
        "origin offsets in relay acks"
    );
    assert_eq!(
        at_relay[0].stream, at_origin[0].stream,
        "stream id in relay acks"
    );
    let events = collect_events(&mut subscriber, &topic, 20);
    assert_in_order(&events, 0, payload);
}

#[test]
fn three_level_tree_delivers_each_comment_once() {
    const COMMENTS: u64 = 10_000;
    const PER_EDGE: usize = 5;
    let origin = origin();
    let regional = relay(&[origin.addr()], "");
    let edges = [relay(&[regional.addr()], ""), relay(&[regional.addr()], "")];
    let name = "tree/final";
    let topic = topic(name);

    let mut subscribers: Vec<Connection> = edges
        .iter()
        .flat_map(|edge| (0..PER_EDGE).map(|_| subscribe(&edge.addr(), &topic, StartAt::Earliest)))
        .collect();
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..COMMENTS));

    let handles: Vec<_> = subscribers
        .drain(..)
        .map(|mut conn| {
            let topic = topic.clone();
            thread::spawn(move || collect_events(&mut conn, &topic, COMMENTS as usize))
        })
        .collect();
    for handle in handles {
        let events = handle.join().expect("subscriber thread");
        assert_in_order(&events, 0, payload);
    }
    assert_eq!(
        origin.subscriptions_started(name),
        1,
        "subscriptions at the origin"
    );
    assert_eq!(
        regional.subscriptions_started(name),
        2,
        "subscriptions at the regional relay"
    );
}

#[test]
fn last_n_at_edge_is_served_from_cache() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "");
    let name = "relay/last";
    let topic = topic(name);

    let mut first = subscribe(&relay.addr(), &topic, StartAt::Latest);
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..50));
    collect_events(&mut first, &topic, 50);

    let mut late = connect(&relay.addr());
    let subscribed = late.subscribe(&topic, StartAt::Last(10), 0).unwrap();
    let events = collect_events(&mut late, &topic, 10);

    assert_eq!(subscribed.start, 40, "start of the last-10 subscription");
    assert_in_order(&events, 40, payload);
    assert_eq!(
        origin.subscriptions_started(name),
        1,
        "subscriptions at the origin"
    );
}

#[test]
fn cold_relay_warms_cache_for_last_n() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "");
    let topic = topic("relay/cold");
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..30));

    let mut late = connect(&relay.addr());
    let subscribed = late.subscribe(&topic, StartAt::Last(5), 0).unwrap();
    let events = collect_events(&mut late, &topic, 5);

    assert_eq!(subscribed.start, 25, "start of the last-5 subscription");
    assert_in_order(&events, 25, payload);
}

#[test]
fn origin_crash_leaves_relay_subscribers_no_gap() {
    let mut origin = origin();
    let origin_addr = origin.addr();
    let relay = relay(std::slice::from_ref(&origin_addr), "");
    let topic = topic("relay/crash");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Earliest);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let publisher = {
        let (topic, stop, acked) = (topic.clone(), stop.clone(), acked.clone());
        let addr = origin_addr.clone();
        thread::spawn(move || {
            publish_until(
                &addr,
                &topic,
                |n| format!("crash test {n}").into_bytes(),
                &stop,
                &acked,
                Duration::from_secs(60),
            )
        })
    };
    assert!(
        wait_until(WAIT, || acked.lock().unwrap().len() >= 200),
        "publishes before the crash"
    );
    origin.broker.kill();
    let restarted = Broker::restart_on(&origin.dir.data(), &origin_addr, &[]);
    let before = acked.lock().unwrap().len();
    assert!(
        wait_until(WAIT, || acked.lock().unwrap().len() >= before + 200),
        "publishes after the restart"
    );
    stop.store(true, Ordering::Release);
    publisher.join().expect("publisher thread");

    let last = *acked
        .lock()
        .unwrap()
        .iter()
        .max()
        .expect("some publish acknowledged");
    let events = collect_through(&mut subscriber, &topic, last);
    let offsets: Vec<u64> = events.iter().map(|e| e.offset).collect();
    assert_eq!(
        offsets,
        (0..=last).collect::<Vec<u64>>(),
        "offsets at the relay"
    );
    let received: HashSet<u64> = offsets.into_iter().collect();
    let missing: Vec<u64> = acked
        .lock()
        .unwrap()
        .iter()
        .copied()
        .filter(|o| !received.contains(o))
        .collect();
    assert_eq!(
        missing,
        Vec::<u64>::new(),
        "acknowledged comments missing at the relay"
    );
    drop(restarted);
}

#[test]
fn relay_fails_over_and_resumes() {
    let origin = origin();
    let mut primary = relay(&[origin.addr()], "");
    let relay = relay(&[primary.addr(), origin.addr()], "");
    let topic = topic("relay/failover");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Earliest);
    let mut publisher = connect(&origin.addr());

    publish_pipelined(&mut publisher, &topic, &payloads(0..100));
    let before = collect_events(&mut subscriber, &topic, 100);
    primary.broker.kill();
    relay
        .broker
        .wait_for_log("failing over to the next upstream", WAIT);
    publish_pipelined(&mut publisher, &topic, &payloads(100..200));
    let after = collect_events(&mut subscriber, &topic, 100);

    assert_in_order(&before, 0, payload);
    assert_in_order(&after, 100, payload);
    let resumed = relay.broker.wait_for_log("resuming topic upstream", WAIT);
    assert!(resumed.contains("offset=100"), "resume line {resumed:?}");
}

#[test]
fn recreated_topic_is_not_spliced() {
    let mut origin = origin();
    let origin_addr = origin.addr();
    let relay = relay(std::slice::from_ref(&origin_addr), "");
    let name = "relay/recreated";
    let topic = topic(name);
    let mut subscriber =
        Subscriber::connect(&relay.addr(), topic.clone(), StartAt::Earliest, options()).unwrap();
    let old = publish_pipelined(&mut connect(&origin_addr), &topic, &payloads(0..20));
    for offset in 0..20 {
        assert_eq!(subscriber.next_event().unwrap().offset, offset);
    }

    assert!(origin.broker.stop(), "origin stopped cleanly");
    std::fs::remove_dir_all(origin.dir.data().join("topics").join("relay+recreated"))
        .expect("delete the topic's folder");
    let restarted = Broker::restart_on(&origin.dir.data(), &origin_addr, &[]);
    relay.broker.wait_for_log("stream changed upstream", WAIT);
    let new = publish_pipelined(&mut connect(&origin_addr), &topic, &payloads(0..5));

    assert_ne!(new[0].stream, old[0].stream, "stream id after recreation");
    match subscriber.next_event() {
        Err(ClientError::StreamChanged { old: from, new: to }) => {
            assert_eq!(from, old[0].stream, "old stream reported");
            assert_eq!(to, new[0].stream, "new stream reported");
        }
        other => panic!("expected StreamChanged, got {other:?}"),
    }
    let events: Vec<Event> = (0..5).map(|_| subscriber.next_event().unwrap()).collect();
    assert_in_order(&events, 0, payload);
    drop(restarted);
}

#[test]
fn relay_pointing_at_itself_is_rejected_as_loop() {
    let addr = free_addr();
    let relay = relay_on(&addr, std::slice::from_ref(&addr), "");
    relay.broker.wait_for_log("relay loop", WAIT);
}

#[test]
fn publish_without_upstream_is_upstream_unavailable() {
    let relay = relay(&[free_addr()], "");
    let mut conn = connect(&relay.addr());
    let result = conn.publish(&topic("relay/nowhere"), b"hello");
    match result {
        Err(ClientError::Rejected { code, .. }) => {
            assert_eq!(code, ErrorCode::UpstreamUnavailable)
        }
        other => panic!("expected UPSTREAM_UNAVAILABLE, got {other:?}"),
    }
}

#[test]
fn publish_lost_with_upstream_is_upstream_unavailable() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let relay = relay(&[upstream.local_addr().unwrap().to_string()], "");
    let dropper = thread::spawn(move || {
        accept_and_drop_at(&upstream, WAIT, |f| matches!(f, Frame::Publish(_)))
    });

    let mut conn = connect(&relay.addr());
    wait_connected(&relay, 1);
    let result = conn.publish(&topic("relay/dropped"), b"hello");
    dropper.join().expect("test upstream thread");
    match result {
        Err(ClientError::Rejected { code, .. }) => {
            assert_eq!(code, ErrorCode::UpstreamUnavailable)
        }
        other => panic!("expected UPSTREAM_UNAVAILABLE, got {other:?}"),
    }
}

#[test]
fn upstream_subscription_ends_after_linger() {
    let origin = origin();
    let relay = relay(&[origin.addr()], "linger_ms = 100");
    let topic = topic("relay/linger");
    let mut conn = subscribe(&relay.addr(), &topic, StartAt::Latest);
    conn.unsubscribe(&topic).unwrap();

    relay
        .broker
        .wait_for_log("no local subscriber for relay.linger_ms", WAIT);
    let mut again = subscribe(&relay.addr(), &topic, StartAt::Latest);
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..3));
    let events = collect_events(&mut again, &topic, 3);
    assert_in_order(&events, 0, payload);
}

/// Starts an origin configured with the cluster `origins`, as entry `index` of them.
fn cluster_origin(origins: &[String], index: usize) -> Node {
    let dir = TestDir::new();
    let list: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    let config = dir.write_config(&format!(
        "[cluster]\norigins = [{}]\nself_origin = {:?}\n",
        list.join(", "),
        origins[index]
    ));
    let broker = Broker::start_on(&dir.data(), &origins[index], &["--config", &config]);
    Node { broker, dir }
}

#[test]
fn origin_rejects_topic_of_other_origin() {
    let origins = [free_addr(), free_addr()];
    let own = cluster_origin(&origins, 0);
    let mut conn = connect(&own.addr());

    let mine = topic(&topic_owned_by(0, 2, "cluster"));
    let other = topic(&topic_owned_by(1, 2, "cluster"));
    assert!(
        conn.publish(&mine, b"kept").is_ok(),
        "publish to an own topic"
    );
    match conn.publish(&other, b"elsewhere") {
        Err(ClientError::Rejected { code, .. }) => assert_eq!(code, ErrorCode::WrongOrigin),
        other => panic!("expected WRONG_ORIGIN, got {other:?}"),
    }
}

#[test]
fn relay_routes_topics_by_cluster_map() {
    let origins = [free_addr(), free_addr()];
    let _first = cluster_origin(&origins, 0);
    let _second = cluster_origin(&origins, 1);
    let dir = TestDir::new();
    let list: Vec<String> = origins.iter().map(|o| format!("{o:?}")).collect();
    let config = dir.write_config(&format!(
        "role = \"relay\"\n[cluster]\norigins = [{}]\n",
        list.join(", ")
    ));
    let relay = Broker::start(&dir.data(), &["--config", &config]);
    let mut conn = connect(&relay.addr_string());

    for index in 0..2 {
        let topic = topic(&topic_owned_by(index, 2, "routed"));
        let mut subscriber = subscribe(&relay.addr_string(), &topic, StartAt::Latest);
        let acks = publish_pipelined(&mut conn, &topic, &payloads(0..5));
        assert_eq!(acks[4].offset, 4, "offset from origin {index}");
        let events = collect_events(&mut subscriber, &topic, 5);
        assert_in_order(&events, 0, payload);
    }
}

#[test]
fn relay_links_to_origin_over_mutual_tls() {
    let certs = TestDir::new();
    let pki = Pki::new(certs.root(), "tree");
    let server = pki.server("origin", false);
    let client = pki.client("relay");

    let origin_dir = TestDir::new();
    let origin_config = origin_dir.write_config(&format!(
        "[tls]\nlisten = [\"127.0.0.1:0\"]\ncert_file = {:?}\nkey_file = {:?}\nclient_ca_file = {:?}\n",
        server.cert, server.key, pki.ca_file
    ));
    let origin = Broker::start(&origin_dir.data(), &["--config", &origin_config]);
    let line = origin.wait_for_log("listening with TLS", WAIT);
    let tls_addr = line[line.find("addr=").unwrap() + 5..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();

    let tls = format!(
        "[relay.tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nserver_name = \"localhost\"",
        pki.ca_file, client.cert, client.key
    );
    let relay = relay(&[tls_addr], &tls);
    wait_connected(&relay, 1);
    let topic = topic("relay/tls");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Latest);
    publish_pipelined(
        &mut connect(&origin.addr_string()),
        &topic,
        &payloads(0..10),
    );
    let events = collect_events(&mut subscriber, &topic, 10);
    assert_in_order(&events, 0, payload);
}

/// A relay forwards batches as its upstream cut them, so an upstream that cuts larger batches
/// than the relay sends must refuse the link, not make the relay exceed what it announced.
#[test]
fn upstream_with_larger_batches_refuses_the_link() {
    let dir = TestDir::new();
    let config = dir.write_config("[limits]\nmax_batch_bytes = 1000000\n");
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let origin = Node { broker, dir };
    let relay = relay(&[origin.addr()], "");

    relay.broker.wait_for_log("HELLO max_frame is", WAIT);
    let connected = relay
        .broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("connected upstream"))
        .count();
    assert_eq!(connected, 0, "links the upstream accepted");
}

/// A relay on its fallback moves back to the primary only once the primary serves a topic: a
/// primary that is up but cut off from every upstream of its own would hold every subscription.
#[test]
fn fallback_kept_while_primary_cut_off() {
    let origin = origin();
    let primary_addr = free_addr();
    let mut primary = relay_on(&primary_addr, &[origin.addr()], "");
    let fallback = relay(&[origin.addr()], "");
    let edge = relay(
        &[primary_addr.clone(), fallback.addr()],
        "primary_retry_ms = 200",
    );
    let topic = topic("relay/probe");
    let mut subscriber = subscribe(&edge.addr(), &topic, StartAt::Latest);
    let mut publisher = connect(&origin.addr());
    publish_pipelined(&mut publisher, &topic, &payloads(0..10));
    assert_in_order(&collect_events(&mut subscriber, &topic, 10), 0, payload);

    primary.broker.kill();
    wait_connected(&edge, 2);
    let cut_off = relay_on(&primary_addr, &[free_addr()], "");
    // The cut-off primary refuses the edge's probe, as it has no upstream to serve it from.
    cut_off
        .broker
        .wait_for_log("this relay has no upstream connection", WAIT);
    edge.broker
        .wait_for_log("primary upstream still unavailable", WAIT);

    publish_pipelined(&mut publisher, &topic, &payloads(10..20));
    assert_in_order(&collect_events(&mut subscriber, &topic, 10), 10, payload);
    let connections = edge
        .broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("connected upstream"))
        .count();
    assert_eq!(connections, 2, "upstream connections of the edge");
}

/// A link on which the upstream has nothing to send stays up: the relay PINGs a quiet upstream
/// and takes its PONG as a sign of life, rather than dropping the link as silent.
#[test]
fn quiet_link_stays_connected() {
    // The upstream's idle timeout sets the relay's silence limit: twice it, plus 10 s.
    const QUIET: Duration = Duration::from_secs(13);
    let dir = TestDir::new();
    let config = dir.write_config("[limits]\nidle_timeout_ms = 500\n");
    let broker = Broker::start(&dir.data(), &["--config", &config]);
    let origin = Node { broker, dir };
    let relay = relay(&[origin.addr()], "");
    let topic = topic("relay/quiet");
    let mut subscriber = subscribe(&relay.addr(), &topic, StartAt::Latest);
    relay.broker.wait_for_log("subscribed upstream", WAIT);
    let mut publisher = connect(&origin.addr());
    publish_pipelined(&mut publisher, &topic, &payloads(0..1));
    assert_in_order(&collect_events(&mut subscriber, &topic, 1), 0, payload);

    thread::sleep(QUIET);
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(1..2));
    assert_in_order(&collect_events(&mut subscriber, &topic, 1), 1, payload);
    let silent = relay
        .broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("upstream silent"))
        .count();
    assert_eq!(silent, 0, "links dropped as silent");
    wait_connected(&relay, 1);
    let connections = relay
        .broker
        .log_lines()
        .iter()
        .filter(|l| l.contains("connected upstream"))
        .count();
    assert_eq!(connections, 1, "upstream connections of the relay");
}
