//! One load run on a relay tree that the `tree` scenario started. One publisher sends stamped
//! comments at a steady rate to the origin, and subscribers at chosen nodes check and time every
//! delivery. Each node's CPU time is read from /proc over the run.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::check::{DeliveryCounts, SubscriberCheck};
use super::pool::{Handler, Pool, PoolCounters, PoolSpec};
use super::procfs::{self, ProcessSample, ProcessUsage};
use super::proto::{BrokerKind, SessionConfig};
use super::publish::{self, PublisherOutcome, PublisherSpec, RunningPublisher};
use super::rate::RateSchedule;
use super::shared::LoadShared;
use super::sockets;
use super::stamp::Stamp;
use super::tree::{Node, NodeSettings};
use crate::report::{new_histogram, record_latency};

/// How often the waiting thread checks for the end of the run.
const TICK: Duration = Duration::from_millis(100);

/// Time between the last connection being ready and the first publish.
const START_DELAY: Duration = Duration::from_millis(200);

/// Connections each pool thread has in their handshake at once.
const MAX_CONNECTING: usize = 256;

/// Position of a node in the tree. The discriminant is the number of relay links between the
/// node and the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Level {
    Origin = 0,
    Regional = 1,
    Edge = 2,
}

impl Level {
    pub(crate) const ALL: [Level; 3] = [Level::Origin, Level::Regional, Level::Edge];

    /// Returns the number of relay links between a node of this level and the origin.
    pub(crate) fn hops(self) -> usize {
        self as usize
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Level::Origin => "origin",
            Level::Regional => "regional",
            Level::Edge => "edge",
        }
    }
}

/// A running tree of chorusd processes, each stopped by PID when the tree is dropped.
pub(crate) struct Tree {
    pub(crate) origin: Node,
    pub(crate) regionals: Vec<Node>,
    pub(crate) edges: Vec<Node>,
}

impl Tree {
    /// Starts an origin, `regionals` relays below it, and `edges` relays with edge `i` below
    /// regional [`regional_of`]`(i)`. Each relay has connected upstream when this returns.
    pub(crate) fn start(
        settings: &NodeSettings,
        regionals: usize,
        edges: usize,
    ) -> anyhow::Result<Tree> {
        ensure!(regionals >= 1, "a tree needs at least one regional relay");
        let origin = settings.origin("origin")?;
        let regionals = (0..regionals)
            .map(|i| settings.relay(&format!("regional-{i}"), &origin.addr))
            .collect::<anyhow::Result<Vec<Node>>>()?;
        let edges = (0..edges)
            .map(|i| {
                let upstream = &regionals[regional_of(i, regionals.len())].addr;
                settings.relay(&format!("edge-{i}"), upstream)
            })
            .collect::<anyhow::Result<Vec<Node>>>()?;
        Ok(Tree {
            origin,
            regionals,
            edges,
        })
    }

    /// Returns every node with its name and level: the origin, the regionals, then the edges.
    pub(crate) fn nodes(&self) -> Vec<(String, Level, &Node)> {
        let mut nodes = vec![("origin".to_owned(), Level::Origin, &self.origin)];
        for (i, node) in self.regionals.iter().enumerate() {
            nodes.push((format!("regional-{i}"), Level::Regional, node));
        }
        for (i, node) in self.edges.iter().enumerate() {
            nodes.push((format!("edge-{i}"), Level::Edge, node));
        }
        nodes
    }
}

/// Returns the regional relay that edge `edge` connects to: edges are dealt to the regionals
/// round-robin.
pub(crate) fn regional_of(edge: usize, regionals: usize) -> usize {
    edge % regionals.max(1)
}

/// Returns how many regionals have at least one edge below them, and so how many relay links
/// of the origin carry the topic when only edges have subscribers.
pub(crate) fn busy_regionals(edges: usize, regionals: usize) -> usize {
    edges.min(regionals)
}

/// Publish rate, payload and subscribers of one run.
#[derive(Debug, Clone)]
pub(crate) struct LoadSettings {
    /// Comments per second.
    pub(crate) rate: f64,
    pub(crate) duration: Duration,
    /// Payload size in bytes, including the bench's stamp.
    pub(crate) payload_size: usize,
    /// Max unacknowledged publishes, or 0 for no limit.
    pub(crate) max_in_flight: u64,
    /// Time to wait for outstanding deliveries and acknowledgements after the last publish.
    pub(crate) drain: Duration,
    pub(crate) connect_timeout: Duration,
    /// Threads that read the subscribers of each node.
    pub(crate) sub_threads: usize,
    /// Subscribers at each node of a level, indexed by [`Level::hops`].
    pub(crate) subscribers_per_node: [usize; 3],
}

/// Deliveries to the subscribers of one level.
#[derive(Debug)]
pub(crate) struct LevelOutcome {
    pub(crate) level: Level,
    /// Nodes of this level with subscribers.
    pub(crate) nodes: usize,
    pub(crate) subscribers: usize,
    /// Deliveries due: every accepted publish once per subscriber.
    pub(crate) expected: u64,
    /// Deliveries due that never arrived, added up over subscribers.
    pub(crate) losses: u64,
    pub(crate) counts: DeliveryCounts,
    /// Publish to first-time delivery, in microseconds.
    pub(crate) latency: Histogram<u64>,
    /// Time of the last first-time delivery, in nanoseconds of the run clock.
    pub(crate) last_delivery_nanos: Option<u64>,
    /// From the start of publishing to the last first-time delivery, in seconds, or 0 without
    /// deliveries.
    pub(crate) delivery_secs: f64,
}

/// CPU time and memory of one node over the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeUsage {
    pub(crate) node: String,
    pub(crate) level: Level,
    /// CPU seconds per second of the measured interval, or absent when /proc could not be read.
    pub(crate) cpu_secs_per_sec: Option<f64>,
    pub(crate) process: Option<ProcessUsage>,
}

/// Outcome of one run.
#[derive(Debug)]
pub(crate) struct LoadOutcome {
    pub(crate) published: u64,
    /// Publishes the origin acknowledged as stored.
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    /// Publish to PUBLISH_ACK, in microseconds.
    pub(crate) ack_latency: Histogram<u64>,
    /// From the start of publishing to the last publish, in seconds.
    pub(crate) publish_secs: f64,
    /// Levels that had subscribers, origin first.
    pub(crate) levels: Vec<LevelOutcome>,
    /// Every node, origin first, over the interval from the start of publishing to the end
    /// of the run.
    pub(crate) nodes: Vec<NodeUsage>,
    /// The bench's own CPU time and memory over the same interval. Its subscribers share the
    /// machine with the nodes.
    pub(crate) bench: Option<ProcessUsage>,
    pub(crate) errors: Vec<String>,
}

impl LoadOutcome {
    /// Returns the outcome of `level`, if it had subscribers.
    pub(crate) fn level(&self, level: Level) -> Option<&LevelOutcome> {
        self.levels.iter().find(|l| l.level == level)
    }
}

/// A pool of subscribers at one node.
struct NodePool {
    level: Level,
    subscribers: usize,
    pool: Pool<NodeHandler>,
}

/// Runs one load on `tree` with the topic `topic`, which should be new to the tree.
pub(crate) fn run(
    tree: &Tree,
    settings: &LoadSettings,
    topic: &str,
) -> anyhow::Result<LoadOutcome> {
    ensure!(
        settings.sub_threads >= 1,
        "--sub-threads must be at least 1"
    );
    let session = SessionConfig::new(
        BrokerKind::Chorus,
        &[topic.to_owned()],
        0,
        format!("cb{}", std::process::id()),
    )?;
    let nodes = tree.nodes();
    let subscribers: usize = nodes
        .iter()
        .map(|(_, level, _)| settings.subscribers_per_node[level.hops()])
        .sum();
    ensure!(subscribers >= 1, "a run needs at least one subscriber");
    check_file_limit(subscribers as u64 + 2)?;

    let shared = Arc::new(LoadShared::new(1, vec![subscribers as u64], 0));
    let pools = start_pools(&nodes, settings, &session, &shared)?;
    let publisher = connect_publisher(tree, settings, &session);
    let publisher = match publisher {
        Ok(publisher) => publisher,
        Err(e) => {
            stop_pools(pools);
            return Err(e);
        }
    };

    shared.set_start(Instant::now() + START_DELAY);
    let running = match publisher.start(Arc::clone(&shared)) {
        Ok(running) => running,
        Err(e) => {
            stop_pools(pools);
            return Err(e);
        }
    };
    // CPU time is measured from the first publish, not from the start delay before it.
    shared.sleep_until(shared.start());
    let cpu_start: Vec<Option<ProcessSample>> = nodes
        .iter()
        .map(|(_, _, node)| procfs::sample(node.pid()).ok())
        .collect();
    let bench_start = procfs::sample(std::process::id()).ok();
    let measured_from = Instant::now();

    let mut errors = Vec::new();
    wait_for_end(settings, &shared, &running, subscribers as u64, &mut errors);
    let wall = measured_from.elapsed().as_secs_f64();
    let usage = node_usage(&nodes, &cpu_start, wall, &mut errors);
    let bench_end = procfs::sample(std::process::id()).ok();
    let bench = match (bench_start, bench_end) {
        (Some(start), Some(end)) => {
            Some(ProcessUsage::between(std::process::id(), start, end, wall))
        }
        _ => None,
    };

    shared.request_stop();
    let outcome = running.join();
    for message in &outcome.errors.messages {
        errors.push(format!("publisher: {message}"));
    }
    let start = shared.start_nanos();
    let mut levels = collect_levels(pools, &outcome, &mut errors);
    for level in &mut levels {
        level.delivery_secs = level
            .last_delivery_nanos
            .map_or(0.0, |last| last.saturating_sub(start) as f64 / 1e9);
    }
    let publish_secs = outcome
        .last_send_nanos
        .map_or(0.0, |last| last.saturating_sub(start) as f64 / 1e9);
    Ok(LoadOutcome {
        published: outcome.sent,
        acked: outcome.acked,
        rejected: outcome.rejected,
        ack_latency: outcome.ack_latency,
        publish_secs,
        levels,
        nodes: usage,
        bench,
        errors,
    })
}

fn check_file_limit(connections: u64) -> anyhow::Result<()> {
    let limit = sockets::raise_file_limit().context("failed to read the open-file limit")?;
    ensure!(
        connections <= limit.connections(),
        "{connections} connections need more descriptors than the open-file limit of {} \
         (hard limit {}) leaves; raise the hard limit (ulimit -Hn as root) or use fewer \
         subscribers",
        limit.soft,
        limit.hard
    );
    Ok(())
}

/// Starts one pool per node that has subscribers and waits until every subscription is
/// confirmed.
fn start_pools(
    nodes: &[(String, Level, &Node)],
    settings: &LoadSettings,
    session: &SessionConfig,
    shared: &Arc<LoadShared>,
) -> anyhow::Result<Vec<NodePool>> {
    let mut pools = Vec::new();
    let mut first_id = 0;
    for (name, level, node) in nodes {
        let count = settings.subscribers_per_node[level.hops()];
        if count == 0 {
            continue;
        }
        let server = sockets::resolve(&node.addr)?;
        let spec = PoolSpec {
            server,
            session: session.clone(),
            topic_of: vec![0; count],
            first_id,
            threads: settings.sub_threads.min(count),
            max_connecting: MAX_CONNECTING,
            connect_timeout: settings.connect_timeout,
        };
        first_id += count;
        let make =
            |_thread: usize, conns: &[usize]| NodeHandler::new(Arc::clone(shared), conns.len());
        match Pool::start(spec, make)
            .with_context(|| format!("failed to start subscribers at {name}"))
        {
            Ok(pool) => pools.push(NodePool {
                level: *level,
                subscribers: count,
                pool,
            }),
            Err(e) => {
                stop_pools(pools);
                return Err(e);
            }
        }
    }

    let deadline = Instant::now() + settings.connect_timeout + Duration::from_secs(1);
    let mut shortfall = None;
    for node_pool in &pools {
        let ready = node_pool.pool.wait_settled(deadline, |_| {});
        if ready < node_pool.subscribers as u64 {
            let (messages, _) = node_pool.pool.counters().errors();
            let first = messages.into_iter().next().unwrap_or_else(|| "none".into());
            shortfall = Some(format!(
                "only {ready} of {} subscribers at a {} node were ready in time; first error: {first}",
                node_pool.subscribers,
                node_pool.level.name()
            ));
            break;
        }
    }
    if let Some(message) = shortfall {
        stop_pools(pools);
        bail!(message);
    }
    Ok(pools)
}

fn stop_pools(pools: Vec<NodePool>) {
    for node_pool in pools {
        drop(node_pool.pool.stop());
    }
}

fn connect_publisher(
    tree: &Tree,
    settings: &LoadSettings,
    session: &SessionConfig,
) -> anyhow::Result<publish::Publisher> {
    let spec = PublisherSpec {
        id: 0,
        server: sockets::resolve(&tree.origin.addr)?,
        session: session.clone(),
        topics: vec![0],
        schedule: RateSchedule::steady(Some(settings.rate), settings.duration.as_secs_f64()),
        payload_size: settings.payload_size,
        max_in_flight: settings.max_in_flight,
        connect_timeout: settings.connect_timeout,
    };
    publish::connect(spec)
}

/// Waits until the publisher has finished and every due delivery arrived, or until the drain
/// time after the last publish.
fn wait_for_end(
    settings: &LoadSettings,
    shared: &LoadShared,
    publisher: &RunningPublisher,
    subscribers: u64,
    errors: &mut Vec<String>,
) {
    let hard_end = shared.start() + settings.duration + settings.drain + Duration::from_secs(10);
    let mut expected: Option<(u64, Instant)> = None;
    loop {
        thread::sleep(TICK);
        let now = Instant::now();
        if expected.is_none() && shared.writers_done() == 1 {
            let sent: u64 = shared.sent_per_topic().iter().sum();
            expected = Some((sent * subscribers, now + settings.drain));
        }
        if let Some((total, drain_end)) = expected {
            let delivered = LoadShared::load(&shared.delivered);
            if (delivered >= total && publisher.is_finished()) || now >= drain_end {
                return;
            }
        }
        if now >= hard_end {
            errors.push("the run did not end in time; the publisher may be stuck".into());
            return;
        }
    }
}

/// Reads each node's CPU time since `start`, over `wall` seconds.
fn node_usage(
    nodes: &[(String, Level, &Node)],
    start: &[Option<ProcessSample>],
    wall: f64,
    errors: &mut Vec<String>,
) -> Vec<NodeUsage> {
    nodes
        .iter()
        .zip(start)
        .map(|((name, level, node), start)| {
            let pid = node.pid();
            let end = procfs::sample(pid);
            let process = match (start, end) {
                (Some(start), Ok(end)) => Some(ProcessUsage::between(pid, *start, end, wall)),
                (_, Err(e)) => {
                    errors.push(format!("failed to read /proc for {name} (PID {pid}): {e}"));
                    None
                }
                (None, Ok(_)) => {
                    errors.push(format!(
                        "failed to read /proc for {name} (PID {pid}) at the start"
                    ));
                    None
                }
            };
            NodeUsage {
                node: name.clone(),
                level: *level,
                cpu_secs_per_sec: process
                    .map(|p| crate::report::round_to(p.cpu_percent / 100.0, 3)),
                process,
            }
        })
        .collect()
}

/// Stops the pools and adds up their subscribers' checks by level.
fn collect_levels(
    pools: Vec<NodePool>,
    publisher: &PublisherOutcome,
    errors: &mut Vec<String>,
) -> Vec<LevelOutcome> {
    let sent: u64 = publisher.sent_per_topic.iter().sum();
    let rejected: u64 = publisher.rejected_per_topic.iter().sum();
    let due_each = sent.saturating_sub(rejected);
    let mut levels: Vec<LevelOutcome> = Vec::new();
    for node_pool in pools {
        let lost = PoolCounters::get(&node_pool.pool.counters().lost);
        let (messages, more) = node_pool.pool.counters().errors();
        let handlers = node_pool.pool.stop();
        if lost > 0 {
            errors.push(format!(
                "{lost} subscriber connection(s) at a {} node lost during the run",
                node_pool.level.name()
            ));
            errors.extend(messages);
            if more > 0 {
                errors.push(format!("{more} more subscriber errors"));
            }
        }
        let index = match levels.iter().position(|l| l.level == node_pool.level) {
            Some(index) => index,
            None => {
                levels.push(LevelOutcome {
                    level: node_pool.level,
                    nodes: 0,
                    subscribers: 0,
                    expected: 0,
                    losses: 0,
                    counts: DeliveryCounts::default(),
                    latency: new_histogram(),
                    last_delivery_nanos: None,
                    delivery_secs: 0.0,
                });
                levels.len() - 1
            }
        };
        let level = &mut levels[index];
        level.nodes += 1;
        for handler in &handlers {
            handler.add_to(level, due_each);
        }
    }
    levels.sort_by_key(|l| l.level.hops());
    levels
}

/// Checks and times what the subscribers of one pool thread receive.
struct NodeHandler {
    shared: Arc<LoadShared>,
    checks: Vec<SubscriberCheck>,
    latency: Histogram<u64>,
    /// First-time deliveries not yet added to the shared counter.
    pending: u64,
    last_delivery_nanos: Option<u64>,
}

impl NodeHandler {
    fn new(shared: Arc<LoadShared>, subscribers: usize) -> NodeHandler {
        NodeHandler {
            shared,
            checks: (0..subscribers)
                .map(|_| SubscriberCheck::new(0, 1))
                .collect(),
            latency: new_histogram(),
            pending: 0,
            last_delivery_nanos: None,
        }
    }

    /// Adds this thread's subscribers to `level`, each of which should have received
    /// `due_each` messages.
    fn add_to(&self, level: &mut LevelOutcome, due_each: u64) {
        for check in &self.checks {
            let counts = check.counts();
            level.subscribers += 1;
            level.expected += due_each;
            level.losses += due_each.saturating_sub(counts.delivered);
            level.counts.add(&counts);
        }
        // Histograms from `new_histogram` share their bounds, so adding one never fails.
        let _ = level.latency.add(&self.latency);
        level.last_delivery_nanos = level.last_delivery_nanos.max(self.last_delivery_nanos);
    }
}

impl Handler for NodeHandler {
    fn on_ready(&mut self, slot: usize, start: Option<u64>) {
        if let (Some(check), Some(start)) = (self.checks.get_mut(slot), start) {
            check.start_at(start);
        }
    }

    fn on_message(&mut self, slot: usize, payload: &Bytes, offset: Option<u64>) {
        let Some(check) = self.checks.get_mut(slot) else {
            return;
        };
        let stamp = Stamp::parse(payload);
        let shared = &self.shared;
        if !check.check(stamp, offset, |p| shared.sent_by(p)) {
            return;
        }
        let Some(stamp) = stamp else { return };
        let now = shared.now_nanos();
        record_latency(&mut self.latency, now.saturating_sub(stamp.sent_nanos));
        self.pending += 1;
        self.last_delivery_nanos = Some(now);
    }

    fn end_iteration(&mut self) {
        if self.pending > 0 {
            self.shared
                .delivered
                .fetch_add(self.pending, Ordering::Relaxed);
            self.pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(seq: u64, sent_nanos: u64) -> Bytes {
        let stamp = Stamp {
            publisher: 0,
            topic: 0,
            seq,
            sent_nanos,
        };
        let mut buf = Vec::new();
        stamp.write(200, &mut buf);
        Bytes::from(buf)
    }

    fn empty_level() -> LevelOutcome {
        LevelOutcome {
            level: Level::Edge,
            nodes: 1,
            subscribers: 0,
            expected: 0,
            losses: 0,
            counts: DeliveryCounts::default(),
            latency: new_histogram(),
            last_delivery_nanos: None,
            delivery_secs: 0.0,
        }
    }

    /// Returns shared state in which the publisher has sent `sent` messages.
    fn shared_after(sent: u64) -> Arc<LoadShared> {
        let shared = Arc::new(LoadShared::new(1, vec![2], 0));
        for _ in 0..sent {
            shared.record_send(0, 0);
        }
        shared
    }

    #[test]
    fn edges_dealt_to_regionals_round_robin() {
        let regionals: Vec<usize> = (0..5).map(|edge| regional_of(edge, 2)).collect();
        assert_eq!(regionals, [0, 1, 0, 1, 0]);
    }

    #[test]
    fn busy_regionals_capped_by_edges() {
        assert_eq!(busy_regionals(1, 2), 1);
        assert_eq!(busy_regionals(2, 2), 2);
        assert_eq!(busy_regionals(4, 2), 2);
    }

    #[test]
    fn levels_count_hops_from_origin() {
        let hops: Vec<usize> = Level::ALL.iter().map(|l| l.hops()).collect();
        assert_eq!(hops, [0, 1, 2]);
    }

    #[test]
    fn handler_counts_deliveries_per_subscriber() {
        let mut handler = NodeHandler::new(shared_after(3), 2);
        handler.on_ready(0, Some(0));
        handler.on_ready(1, Some(0));
        for seq in 0..3 {
            handler.on_message(0, &payload(seq, 1), Some(seq));
        }
        handler.on_message(1, &payload(0, 1), Some(0));
        handler.on_message(1, &payload(2, 1), Some(2));
        handler.end_iteration();
        assert_eq!(LoadShared::load(&handler.shared.delivered), 5);

        let mut level = empty_level();
        handler.add_to(&mut level, 3);
        assert_eq!(level.subscribers, 2);
        assert_eq!(level.expected, 6);
        assert_eq!(level.losses, 1);
        assert_eq!(level.counts.delivered, 5);
        assert_eq!(level.counts.offset_gaps, 1);
        assert_eq!(level.latency.len(), 5);
    }

    #[test]
    fn handler_flags_repeat_and_reorder() {
        let mut handler = NodeHandler::new(shared_after(3), 1);
        handler.on_ready(0, Some(0));
        handler.on_message(0, &payload(1, 1), Some(1));
        handler.on_message(0, &payload(1, 1), Some(1));
        handler.on_message(0, &payload(0, 1), Some(0));
        let mut level = empty_level();
        handler.add_to(&mut level, 3);
        assert_eq!(level.counts.delivered, 2);
        assert_eq!(level.counts.duplicates, 1);
        assert_eq!(level.counts.out_of_order, 1);
        assert_eq!(level.losses, 1);
    }

    #[test]
    fn handler_rejects_unsent_sequence_number() {
        let mut handler = NodeHandler::new(shared_after(1), 1);
        handler.on_message(0, &payload(5, 1), None);
        handler.on_message(0, &Bytes::from_static(b"not stamped"), None);
        let mut level = empty_level();
        handler.add_to(&mut level, 1);
        assert_eq!(level.counts.unknown, 2);
        assert_eq!(level.counts.delivered, 0);
        assert!(level.last_delivery_nanos.is_none());
    }
}
