//! Relay trees of real chorusd processes on loopback. The tests replay the recorded chat through
//! three levels, kill a regional relay in the middle of a replay, start loop configurations in
//! every order, and resume ten thousand viewers at once from one edge's cache.

mod util;

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use chorus_client::{Connection, Frame, StartAt, Topic};
use serde_json::Value;
use util::chatlog::{print_skip, recorded_chat};
use util::client::{assert_in_order, collect_events, connect, options, publish_pipelined, topic};
use util::{free_addr, wait_until, Broker, TestDir};

/// Maximum wait for a log line, a connection or a change in the tree.
const WAIT: Duration = Duration::from_secs(20);

/// Comments of the recorded chat that the replay tests publish: the whole log, 28,013 comments.
const REPLAY_COMMENTS: usize = 28_013;

/// Subscribers at each edge relay in the replay tests.
const SUBSCRIBERS_PER_EDGE: usize = 2;

/// A broker and the temporary directory that contains its data and configuration.
struct Node {
    broker: Broker,
    dir: TestDir,
}

impl Node {
    fn addr(&self) -> String {
        self.broker.addr_string()
    }

    /// Counts the log lines that contain every one of `needles`.
    fn count_log(&self, needles: &[&str]) -> usize {
        self.broker
            .log_lines()
            .iter()
            .filter(|line| needles.iter().all(|needle| line.contains(needle)))
            .count()
    }

    /// Counts the subscriptions started for `topic`, from their log lines. At an origin, each
    /// one is a request from a client or a relay below it.
    fn subscriptions_started(&self, topic: &str) -> usize {
        self.count_log(&["subscription started", &format!("topic={topic} ")])
    }

    /// Counts the times the relay's link connected upstream.
    fn upstream_connections(&self) -> usize {
        self.count_log(&["connected upstream"])
    }

    /// Sends an admin request and returns the JSON body of its 200 response.
    fn admin(&self, method: &str, path: &str) -> Value {
        let url = format!("http://{}{path}", self.broker.admin_addr());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(WAIT))
            .build()
            .into();
        let request = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .body(())
            .expect("valid admin request");
        let mut response = agent
            .run(request)
            .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
        let body = response
            .body_mut()
            .read_to_string()
            .expect("readable admin body");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{method} {url} returned non-JSON {body:?}: {e}"))
    }

    /// Returns the address of the upstream the relay is connected to, from `/v1/tree`.
    fn connected_upstream(&self) -> Option<String> {
        self.admin("GET", "/v1/tree")["upstream"]
            .as_str()
            .map(str::to_owned)
    }

    /// Closes the connection of the relay below this node whose node id is `child`, with the
    /// admin kick action.
    fn kick_relay(&self, child: &str) {
        let marker = format!("chorus-relay/{child}");
        let connections = self.admin("GET", "/v1/connections");
        let id = connections["connections"]
            .as_array()
            .expect("connections array")
            .iter()
            .find(|conn| conn["client"].as_str().is_some_and(|c| c.contains(&marker)))
            .unwrap_or_else(|| panic!("no connection of relay {child} in {connections}"))["id"]
            .as_u64()
            .expect("numeric connection id");
        let reply = self.admin("POST", &format!("/v1/connections/{id}/kick"));
        assert_eq!(reply["kicked"]["id"], id, "kicked connection");
    }
}

fn origin() -> Node {
    let dir = TestDir::new();
    let broker = Broker::start(&dir.data(), &[]);
    Node { broker, dir }
}

/// Starts a relay on an ephemeral port below `upstreams` (primary first).
fn relay(upstreams: &[&str]) -> Node {
    relay_on("127.0.0.1:0", "", upstreams, "")
}

/// Starts a relay listening on `listen`, with node id `node_id` (random when empty), below
/// `upstreams`, with short reconnect delays and `extra` at the end of its `[relay]` table.
fn relay_on(listen: &str, node_id: &str, upstreams: &[&str], extra: &str) -> Node {
    let dir = TestDir::new();
    let config = dir.write_config(&relay_config(node_id, upstreams, extra));
    let broker = Broker::start_on(&dir.data(), listen, &["--config", &config]);
    Node { broker, dir }
}

fn relay_config(node_id: &str, upstreams: &[&str], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    let node_id = match node_id {
        "" => String::new(),
        id => format!("node_id = {id:?}\n"),
    };
    format!(
        "{node_id}role = \"relay\"\n[relay]\nupstreams = [{}]\nreconnect_initial_ms = 20\n\
         reconnect_max_ms = 300\n{extra}\n",
        list.join(", ")
    )
}

/// Waits until the relay's link has connected upstream `count` times in all.
fn wait_connected(node: &Node, count: usize) {
    let connected = wait_until(WAIT, || node.upstream_connections() >= count);
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
        .expect("subscribe at a relay");
    conn
}

/// Starts one thread per connection that receives `count` comments of `topic`.
///
/// These are plain connections rather than Subscribers, because a Subscriber drops repeated
/// comments itself, which would hide a duplicate. It also reconnects, which would hide a
/// dropped connection.
fn spawn_collectors(
    subscribers: Vec<Connection>,
    topic: &Topic,
    count: usize,
) -> Vec<thread::JoinHandle<Vec<chorus_client::Event>>> {
    subscribers
        .into_iter()
        .map(|mut conn| {
            let topic = topic.clone();
            thread::spawn(move || collect_events(&mut conn, &topic, count))
        })
        .collect()
}

/// The tree of the replay tests: one origin, two regional relays below it, and four edges, two
/// below each regional relay.
struct Tree {
    origin: Node,
    regionals: Vec<Node>,
    edges: Vec<Node>,
}

impl Tree {
    /// Starts the tree. With `cross_fallback`, each edge lists the other regional relay as its
    /// fallback upstream.
    fn start(cross_fallback: bool) -> Tree {
        let origin = origin();
        let regionals = vec![relay(&[&origin.addr()]), relay(&[&origin.addr()])];
        let mut edges = Vec::new();
        for (index, regional) in regionals.iter().enumerate() {
            let primary = regional.addr();
            let fallback = regionals[1 - index].addr();
            for _ in 0..2 {
                let upstreams = match cross_fallback {
                    true => vec![primary.as_str(), fallback.as_str()],
                    false => vec![primary.as_str()],
                };
                edges.push(relay(&upstreams));
            }
        }
        Tree {
            origin,
            regionals,
            edges,
        }
    }

    /// Subscribes [`SUBSCRIBERS_PER_EDGE`] connections at every edge from the earliest comment.
    fn subscribe_at_edges(&self, topic: &Topic) -> Vec<Connection> {
        self.edges
            .iter()
            .flat_map(|edge| {
                (0..SUBSCRIBERS_PER_EDGE).map(|_| subscribe(&edge.addr(), topic, StartAt::Earliest))
            })
            .collect()
    }
}

/// Checks that every collector received exactly the recorded chat, in order.
fn assert_every_collector_got(
    collectors: Vec<thread::JoinHandle<Vec<chorus_client::Event>>>,
    texts: &[Vec<u8>],
) {
    for (number, collector) in collectors.into_iter().enumerate() {
        let events = collector
            .join()
            .unwrap_or_else(|_| panic!("subscriber {number} failed; see its panic above"));
        assert_eq!(events.len(), texts.len(), "comments of subscriber {number}");
        assert_in_order(&events, 0, |offset| texts[offset as usize].clone());
    }
}

#[test]
fn tree_replays_chat_to_every_edge() {
    let Some(texts) = recorded_chat(REPLAY_COMMENTS) else {
        print_skip("tree_replays_chat_to_every_edge");
        return;
    };
    assert_eq!(
        texts.len(),
        REPLAY_COMMENTS,
        "comments read from the chat log"
    );
    let tree = Tree::start(false);
    let name = "tree/replay";
    let topic = topic(name);
    let collectors = spawn_collectors(tree.subscribe_at_edges(&topic), &topic, texts.len());

    let acks = publish_pipelined(&mut connect(&tree.origin.addr()), &topic, &texts);
    let offsets: Vec<u64> = acks.iter().map(|ack| ack.offset).collect();
    assert_eq!(
        offsets,
        (0..texts.len() as u64).collect::<Vec<u64>>(),
        "offsets acknowledged by the origin"
    );
    assert_every_collector_got(collectors, &texts);

    assert_eq!(
        tree.origin.subscriptions_started(name),
        2,
        "subscriptions at the origin, one per regional relay"
    );
    for (index, regional) in tree.regionals.iter().enumerate() {
        assert_eq!(
            regional.subscriptions_started(name),
            2,
            "subscriptions at regional relay {index}, one per edge"
        );
    }
    for (index, edge) in tree.edges.iter().enumerate() {
        assert_eq!(
            edge.subscriptions_started(name),
            SUBSCRIBERS_PER_EDGE,
            "subscriptions at edge {index}"
        );
    }
}

#[test]
fn regional_crash_leaves_edges_no_gap() {
    let Some(texts) = recorded_chat(REPLAY_COMMENTS) else {
        print_skip("regional_crash_leaves_edges_no_gap");
        return;
    };
    let mut tree = Tree::start(true);
    let topic = topic("tree/crash");
    let collectors = spawn_collectors(tree.subscribe_at_edges(&topic), &topic, texts.len());

    // The publisher stops after the first third and waits until the regional relay is killed,
    // so the kill falls inside the replay whatever the speed of the machine.
    let split = texts.len() / 3;
    let (published_tx, published_rx) = mpsc::channel();
    let (killed_tx, killed_rx) = mpsc::channel::<()>();
    let publisher = {
        let addr = tree.origin.addr();
        let (topic, texts) = (topic.clone(), texts.clone());
        thread::spawn(move || {
            let mut conn = connect(&addr);
            let mut acks = publish_pipelined(&mut conn, &topic, &texts[..split]);
            published_tx.send(()).expect("test thread waits");
            killed_rx.recv_timeout(WAIT).expect("regional relay killed");
            acks.extend(publish_pipelined(&mut conn, &topic, &texts[split..]));
            acks
        })
    };
    published_rx
        .recv_timeout(Duration::from_secs(120))
        .expect("first third of the chat published");
    let killed_addr = tree.regionals[0].addr();
    let survivor_addr = tree.regionals[1].addr();
    tree.regionals[0].broker.kill();
    killed_tx.send(()).expect("publisher waits");

    let acks = publisher.join().expect("publisher thread");
    assert_eq!(acks.len(), texts.len(), "acknowledged comments");
    assert_eq!(
        acks.last().map(|ack| ack.offset),
        Some(texts.len() as u64 - 1),
        "offset of the last comment"
    );
    assert_every_collector_got(collectors, &texts);

    for (index, edge) in tree.edges.iter().enumerate().take(2) {
        assert_eq!(
            edge.count_log(&["failing over to the next upstream", &killed_addr]),
            1,
            "failover lines of edge {index}"
        );
        assert_eq!(
            edge.connected_upstream().as_deref(),
            Some(survivor_addr.as_str()),
            "upstream of edge {index} after the crash"
        );
        let resumed = edge.count_log(&["resuming topic upstream", "topic=tree/crash "]);
        assert_eq!(
            resumed, 1,
            "resumes of edge {index} at the end of its cache"
        );
    }
    for (index, edge) in tree.edges.iter().enumerate().skip(2) {
        assert_eq!(
            edge.upstream_connections(),
            1,
            "upstream connections of edge {index}, below the surviving regional relay"
        );
    }
}

/// Node id of loop member `index`.
fn loop_node_id(index: usize) -> String {
    format!("loop-{index}")
}

/// Starts relays `0..n` in the order `order`. Each names the next relay as its primary upstream,
/// so that they form a loop, and the origin as its fallback. Each relay starts after the one
/// before it has connected upstream. A relay on the fallback tries its primary again every
/// 250 ms, so the loop is attempted again and again during the test.
fn start_loop(origin: &Node, order: &[usize]) -> Vec<Node> {
    let n = order.len();
    let addrs: Vec<String> = (0..n).map(|_| free_addr()).collect();
    let mut started: Vec<Option<Node>> = (0..n).map(|_| None).collect();
    for &index in order {
        let upstreams = [addrs[(index + 1) % n].as_str(), &origin.addr()];
        let node = relay_on(
            &addrs[index],
            &loop_node_id(index),
            &upstreams,
            "primary_retry_ms = 250",
        );
        wait_connected(&node, 1);
        started[index] = Some(node);
    }
    started
        .into_iter()
        .map(|node| node.expect("every relay started"))
        .collect()
}

/// Returns whether the relays' connected upstreams form a tree under the origin: from every
/// relay, following the upstreams reaches the origin within `relays.len()` steps.
fn forms_tree_under(origin: &Node, relays: &[Node]) -> bool {
    let upstream_of: HashMap<String, Option<String>> = relays
        .iter()
        .map(|relay| (relay.addr(), relay.connected_upstream()))
        .collect();
    relays.iter().all(|relay| {
        let mut current = relay.addr();
        for _ in 0..relays.len() {
            match upstream_of.get(&current) {
                Some(Some(upstream)) if *upstream == origin.addr() => return true,
                Some(Some(upstream)) => current = upstream.clone(),
                _ => return false,
            }
        }
        false
    })
}

/// Counts the relay loop rejections in the logs of `relays`: the upstream's side, which closes
/// the connection with a message naming itself and the chain.
fn loop_rejections(relays: &[Node]) -> usize {
    relays
        .iter()
        .enumerate()
        .map(|(index, relay)| {
            let message = format!(
                "relay loop: this node ({}) is already in the relay chain",
                loop_node_id(index)
            );
            relay.count_log(&[&message])
        })
        .sum()
}

/// Starts a loop of `order.len()` relays in `order`, and checks that the loop is rejected and
/// that every relay delivers each comment once, while the rejected relay keeps trying.
fn check_loop_rejected(order: &[usize]) {
    let case = format!("start order {order:?}");
    let origin = origin();
    let relays = start_loop(&origin, order);
    let topic = topic("loop/comments");

    assert!(
        wait_until(WAIT, || loop_rejections(&relays) >= 1),
        "no relay rejected the loop, {case}"
    );
    assert!(
        wait_until(WAIT, || forms_tree_under(&origin, &relays)),
        "the relays' upstreams do not form a tree under the origin, {case}"
    );
    // The side whose link was rejected names the reason too, for its operator.
    let reported = relays
        .iter()
        .map(|relay| relay.count_log(&["relay loop: this node", "upstream"]))
        .sum::<usize>();
    assert!(reported >= 1, "no relay logged its rejected link, {case}");

    let mut subscribers: Vec<Connection> = relays
        .iter()
        .map(|relay| subscribe(&relay.addr(), &topic, StartAt::Earliest))
        .collect();
    let mut publisher = connect(&origin.addr());
    publish_pipelined(&mut publisher, &topic, &payloads(0..100));
    for (index, conn) in subscribers.iter_mut().enumerate() {
        let events = collect_events(conn, &topic, 100);
        assert_eq!(
            events.first().map(|e| e.offset),
            Some(0),
            "first offset at relay {index}, {case}"
        );
        assert_in_order(&events, 0, payload);
    }

    // Further rejected attempts leave the tree and the delivery as they are.
    let before = loop_rejections(&relays);
    assert!(
        wait_until(WAIT, || loop_rejections(&relays) >= before + 2),
        "the rejected relay stopped trying its primary, {case}"
    );
    publish_pipelined(&mut publisher, &topic, &payloads(100..200));
    for (index, conn) in subscribers.iter_mut().enumerate() {
        let events = collect_events(conn, &topic, 100);
        assert_eq!(
            events.first().map(|e| e.offset),
            Some(100),
            "first offset at relay {index}, {case}"
        );
        assert_in_order(&events, 100, payload);
    }
    assert!(
        forms_tree_under(&origin, &relays),
        "the tree changed after further attempts, {case}"
    );
}

/// NOTE: the loop can still form when relay A tries relay B at the moment B starts. B admits
/// A's chain, while B's own link to A already carries a chain without A, so A admits it too.
/// The window is one process start, so the test rarely hits it.
#[test]
fn two_relay_loop_is_rejected() {
    for order in [[0, 1], [1, 0]] {
        check_loop_rejected(&order);
    }
}

/// A loop of three relays, started in every order. The link that closes the loop may connect
/// before the relay it goes through has a child, so the loop shows only when that relay
/// announces its longer chain upstream.
#[test]
fn three_relay_loop_is_rejected() {
    let orders = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    for order in orders {
        check_loop_rejected(&order);
    }
}

/// Checks that no log line of `nodes` mentions a relay loop.
fn assert_no_loop_reported(nodes: &[&Node], when: &str) {
    for (index, node) in nodes.iter().enumerate() {
        assert_eq!(
            node.count_log(&["relay loop"]),
            0,
            "relay loop lines of node {index} {when}"
        );
    }
}

#[test]
fn quick_reconnect_is_not_a_loop() {
    let origin = origin();
    let regional_addr = free_addr();
    let mut regional = relay_on(&regional_addr, "regional", &[&origin.addr()], "");
    let edge = relay_on("127.0.0.1:0", "edge", &[&regional_addr], "");
    let topic = topic("tree/reconnect");
    let mut subscriber = subscribe(&edge.addr(), &topic, StartAt::Earliest);
    let mut publisher = connect(&origin.addr());

    publish_pipelined(&mut publisher, &topic, &payloads(0..50));
    assert_in_order(&collect_events(&mut subscriber, &topic, 50), 0, payload);

    // The origin closes the regional relay's link, which reconnects at once.
    origin.kick_relay("regional");
    wait_connected(&regional, 2);
    publish_pipelined(&mut publisher, &topic, &payloads(50..100));
    assert_in_order(&collect_events(&mut subscriber, &topic, 50), 50, payload);
    assert_no_loop_reported(&[&origin, &regional, &edge], "after the origin's kick");

    // The regional relay closes the edge's link.
    regional.kick_relay("edge");
    wait_connected(&edge, 2);
    publish_pipelined(&mut publisher, &topic, &payloads(100..150));
    assert_in_order(&collect_events(&mut subscriber, &topic, 50), 100, payload);
    assert_no_loop_reported(&[&origin, &regional, &edge], "after the regional kick");

    // The regional relay crashes and comes back on its address with the same node id.
    regional.broker.kill();
    let config = regional
        .dir
        .write_config(&relay_config("regional", &[&origin.addr()], ""));
    regional.broker =
        Broker::restart_on(&regional.dir.data(), &regional_addr, &["--config", &config]);
    wait_connected(&regional, 1);
    wait_connected(&edge, 3);
    publish_pipelined(&mut publisher, &topic, &payloads(150..200));
    assert_in_order(&collect_events(&mut subscriber, &topic, 50), 150, payload);
    assert_no_loop_reported(&[&origin, &regional, &edge], "after the regional restart");
}

/// Viewers that connect to one edge at once and resume from offsets they held.
const VIEWERS: usize = 10_000;

/// Threads that open and read the viewers' connections, each for an equal share.
const VIEWER_THREADS: usize = 8;

/// Maximum wait for every viewer to connect.
const VIEWERS_CONNECT_WAIT: Duration = Duration::from_secs(120);

/// Comments in the edge cache before the viewers reconnect; viewer `i` resumes from offset
/// `i % CACHED`.
const CACHED: u64 = 100;

/// Comments published after the viewers resumed, which they receive live.
const LIVE: u64 = 10;

/// Open files allowed for this test process besides the viewers' sockets, an estimate: the other
/// tests of this file use a few dozen.
const SPARE_FILES: u64 = 256;

/// Raises this process's soft open-file limit to what [`VIEWERS`] viewers need, or to the hard
/// limit when that is lower, and returns how many viewers fit. The edge relay raises its own
/// limit to the hard limit, which is the same for the processes of this test.
fn viewers_within_file_limit() -> usize {
    let needed = VIEWERS as u64 + SPARE_FILES;
    let limit = rlimit::increase_nofile_limit(needed).expect("read RLIMIT_NOFILE");
    if limit >= needed {
        return VIEWERS;
    }
    let viewers = limit.saturating_sub(SPARE_FILES) as usize;
    println!(
        "the open-file limit is {limit}, below the {needed} that {VIEWERS} viewers need; \
         running {viewers} viewers instead"
    );
    viewers
}

/// Connects `count` viewers and counts them in `connected`, waits until all `viewers` are
/// connected, then subscribes each from its resume offset and checks the reply and the cached
/// comments. Returns the connections for the live part.
fn resume_viewers(
    addr: &str,
    topic: &Topic,
    stream: u64,
    first_viewer: usize,
    count: usize,
    connected: &AtomicUsize,
    viewers: usize,
) -> Vec<Connection> {
    let mut conns: Vec<Connection> = (0..count)
        .map(|_| Connection::connect(addr, &options()).expect("viewer connects to the edge"))
        .collect();
    connected.fetch_add(count, Ordering::AcqRel);
    assert!(
        wait_until(VIEWERS_CONNECT_WAIT, || connected.load(Ordering::Acquire)
            == viewers),
        "only {} of {viewers} viewers connected",
        connected.load(Ordering::Acquire)
    );

    let resume_offset = |i: usize| ((first_viewer + i) as u64) % CACHED;
    for (i, conn) in conns.iter_mut().enumerate() {
        let subscribe = chorus_protocol::Subscribe {
            topic: topic.clone(),
            start: StartAt::Offset(resume_offset(i)),
            stream,
        };
        conn.send(&Frame::Subscribe(subscribe))
            .expect("viewer sends SUBSCRIBE");
    }
    for (i, conn) in conns.iter_mut().enumerate() {
        let start = resume_offset(i);
        let viewer = first_viewer + i;
        match conn.recv().expect("viewer receives SUBSCRIBED") {
            Frame::Subscribed(subscribed) => {
                assert_eq!(subscribed.start, start, "start of viewer {viewer}");
                assert_eq!(subscribed.end, CACHED, "end announced to viewer {viewer}");
                assert_eq!(subscribed.stream, stream, "stream of viewer {viewer}");
            }
            other => panic!("viewer {viewer} expected SUBSCRIBED, got {other:?}"),
        }
        let events = collect_events(conn, topic, (CACHED - start) as usize);
        assert_in_order(&events, start, payload);
    }
    conns
}

#[test]
fn viewers_resume_from_edge_cache() {
    let viewers = viewers_within_file_limit();
    let origin = origin();
    let edge = relay(&[&origin.addr()]);
    let name = "tree/resume";
    let topic = topic(name);

    // One viewer that stays keeps the upstream subscription and fills the cache.
    let mut keeper = subscribe(&edge.addr(), &topic, StartAt::Earliest);
    let mut publisher = connect(&origin.addr());
    let acks = publish_pipelined(&mut publisher, &topic, &payloads(0..CACHED));
    let stream = acks[0].stream;
    assert_in_order(
        &collect_events(&mut keeper, &topic, CACHED as usize),
        0,
        payload,
    );
    assert!(
        wait_until(WAIT, || origin.subscriptions_started(name) == 1),
        "the edge subscribed at the origin"
    );

    let started = Instant::now();
    let connected = Arc::new(AtomicUsize::new(0));
    let share = viewers.div_ceil(VIEWER_THREADS);
    let threads: Vec<_> = (0..VIEWER_THREADS)
        .map(|index| {
            let first = index * share;
            let count = share.min(viewers.saturating_sub(first));
            let (addr, topic, connected) = (edge.addr(), topic.clone(), connected.clone());
            thread::spawn(move || {
                resume_viewers(&addr, &topic, stream, first, count, &connected, viewers)
            })
        })
        .collect();
    let shares: Vec<Vec<Connection>> = threads
        .into_iter()
        .map(|thread| thread.join().expect("viewer thread"))
        .collect();
    let resumed_in = started.elapsed();
    assert_eq!(
        shares.iter().map(Vec::len).sum::<usize>(),
        viewers,
        "viewers resumed"
    );

    publish_pipelined(&mut publisher, &topic, &payloads(CACHED..CACHED + LIVE));
    let readers: Vec<_> = shares
        .into_iter()
        .map(|mut conns| {
            let topic = topic.clone();
            thread::spawn(move || {
                for conn in &mut conns {
                    let events = collect_events(conn, &topic, LIVE as usize);
                    assert_in_order(&events, CACHED, payload);
                }
            })
        })
        .collect();
    for reader in readers {
        reader.join().expect("live reader thread");
    }
    assert_in_order(
        &collect_events(&mut keeper, &topic, LIVE as usize),
        CACHED,
        payload,
    );
    println!("{viewers} viewers resumed from the edge cache in {resumed_in:?}");

    assert_eq!(
        origin.subscriptions_started(name),
        1,
        "subscriptions at the origin"
    );
    assert_eq!(
        edge.count_log(&["first local subscriber; subscribing upstream", name]),
        1,
        "upstream subscriptions started by the edge"
    );
    assert_eq!(
        edge.subscriptions_started(name),
        viewers + 1,
        "subscriptions at the edge"
    );
}

/// A relay whose own upstream is gone refuses relays below it, which then use the next
/// upstream in their list instead of waiting on every subscription there.
#[test]
fn relay_without_upstream_sends_children_elsewhere() {
    let origin = origin();
    let cut_off = relay_on("127.0.0.1:0", "cut-off", &[&free_addr()], "");
    let edge = relay_on(
        "127.0.0.1:0",
        "edge",
        &[&cut_off.addr(), &origin.addr()],
        "primary_retry_ms = 200",
    );
    let topic = topic("tree/elsewhere");
    let mut subscriber = subscribe(&edge.addr(), &topic, StartAt::Earliest);
    publish_pipelined(&mut connect(&origin.addr()), &topic, &payloads(0..20));

    assert_in_order(&collect_events(&mut subscriber, &topic, 20), 0, payload);
    assert_eq!(
        edge.connected_upstream(),
        Some(origin.addr()),
        "upstream of the edge"
    );
    assert!(
        cut_off.count_log(&["this relay has no upstream connection"]) >= 1,
        "the cut-off relay did not refuse the edge"
    );
}

/// Accepts connections on a loopback port and sends nothing on them, for `hold`.
fn silent_listener(hold: Duration) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a silent listener");
    let addr = listener.local_addr().expect("listener address").to_string();
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let handle = thread::spawn(move || {
        let deadline = Instant::now() + hold;
        let mut held = Vec::new();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((stream, _)) => held.push(stream),
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (addr, handle)
}

/// Returns the relays of `relays` whose connected upstreams lead back to themselves.
fn relays_in_a_cycle(relays: &[&Node]) -> Vec<String> {
    let upstream_of: HashMap<String, Option<String>> = relays
        .iter()
        .map(|relay| (relay.addr(), relay.connected_upstream()))
        .collect();
    relays
        .iter()
        .map(|relay| relay.addr())
        .filter(|start| {
            let mut current = start.clone();
            for _ in 0..relays.len() {
                match upstream_of.get(&current) {
                    Some(Some(upstream)) if upstream == start => return true,
                    Some(Some(upstream)) => current = upstream.clone(),
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Three relays whose primaries never reply, so their links spend most of their time probing,
/// and whose fallbacks form a loop. The loop must never exist with every link connected.
#[test]
fn loop_behind_silent_primaries_never_stands() {
    const WATCH: Duration = Duration::from_secs(8);
    let (silent, listener) = silent_listener(WATCH + Duration::from_secs(4));
    let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
    let extra = "primary_retry_ms = 200";
    let first = relay_on(
        &addrs[0],
        "loop-x",
        &[&silent, &silent, &silent, &addrs[1]],
        extra,
    );
    thread::sleep(Duration::from_millis(500));
    let second = relay_on(&addrs[2], "loop-f", &[&silent, &addrs[0]], extra);
    thread::sleep(Duration::from_secs(2));
    let third = relay_on(&addrs[1], "loop-r", &[&silent, &addrs[2]], extra);

    let relays = [&first, &second, &third];
    let deadline = Instant::now() + WATCH;
    while Instant::now() < deadline {
        let cycle = relays_in_a_cycle(&relays);
        assert!(cycle.is_empty(), "relays {cycle:?} form a standing loop");
        thread::sleep(Duration::from_millis(200));
    }
    drop((first, second, third));
    listener.join().expect("silent listener thread");
}
