//! `tree`: what a relay tree adds to delivery latency per hop, and whether the origin's CPU
//! stays flat as edges and viewers are added below it.
//!
//! The scenario starts its own chorusd processes on loopback: an origin, regional relays below
//! it, and edge relays dealt round-robin to the regionals. It makes two kinds of run, each on a
//! fresh tree with one publisher at the origin sending stamped comments at a steady rate:
//!
//! - the hop run puts the same number of subscribers at every node, and reports publish to
//!   delivery latency at the origin (hop 0), the regionals (hop 1) and the edges (hop 2);
//! - the sweep runs put viewers at the edges only, for each edge count and viewers per edge,
//!   and report the deliveries per second at the edges and each node's CPU seconds per second.
//!
//! Every subscriber checks that each comment arrives once, in order, with consecutive offsets.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::ensure;
use clap::{Args, ValueEnum};
use serde::Serialize;

use super::check::DeliveryCounts;
use super::machine::Machine;
use super::procfs::ProcessUsage;
use super::stamp::STAMP_LEN;
use super::tree::NodeSettings;
use super::tree_load::{self, busy_regionals, Level, LoadOutcome, LoadSettings, NodeUsage, Tree};
use super::{now_rfc3339, positive_secs, print_result};
use crate::report::{per_sec, round_to, LatencySummary};

/// Arguments of `chorus-bench tree`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct TreeArgs {
    /// chorusd binary to start [default: chorusd in the same directory as this program].
    #[arg(long, value_name = "FILE")]
    pub(crate) chorusd: Option<PathBuf>,

    /// Runs to make: the hop run, the sweep, or both.
    #[arg(long, value_enum, default_value_t = Part::All)]
    pub(crate) part: Part,

    /// Regional relays below the origin, in every run.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) regionals: usize,

    /// Edge relays in the hop run. Edge i connects to regional i modulo --regionals.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub(crate) edges: usize,

    /// Subscribers at every node (origin, regionals and edges) in the hop run.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) subscribers: usize,

    /// Edge counts of the sweep, comma-separated.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [1, 2, 4])]
    pub(crate) sweep_edges: Vec<usize>,

    /// Viewers per edge in the sweep, comma-separated. Each edge count runs with each of them.
    #[arg(long, value_name = "N,...", value_delimiter = ',', default_values_t = [50, 200])]
    pub(crate) viewers: Vec<usize>,

    /// Comments per second published at the origin in every run.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    pub(crate) rate: f64,

    /// Seconds of publishing in each run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) duration: f64,

    /// Payload size in bytes, including the bench's 40-byte stamp.
    #[arg(long, value_name = "BYTES", default_value_t = 200)]
    pub(crate) payload_size: usize,

    /// Max unacknowledged publishes, or 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub(crate) max_in_flight: u64,

    /// Event-loop threads of each chorusd.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) broker_workers: usize,

    /// Threads that read the subscribers of each node.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) sub_threads: usize,

    /// Seconds each subscriber may take from connect to a confirmed subscription.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) connect_timeout: f64,

    /// Seconds to wait for outstanding deliveries after the last publish of a run.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,

    /// Print the result as JSON on stdout, and the text on stderr.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) json: bool,

    /// Also write the JSON result to this file.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub(crate) out: Option<PathBuf>,
}

/// Runs of `chorus-bench tree`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Part {
    /// The hop run, then the sweep.
    All,
    /// Latency per hop only.
    Hops,
    /// Origin and relay CPU as edges and viewers are added only.
    Sweep,
}

/// Outcome of `chorus-bench tree`.
#[derive(Debug, Serialize)]
pub(crate) struct TreeResult {
    scenario: &'static str,
    /// Start of the scenario, RFC 3339 in UTC.
    date: String,
    machine: Machine,
    parameters: TreeArgs,
    hops: Option<HopReport>,
    sweep: Vec<SweepPoint>,
    /// Whether every run passed its checks.
    passed: bool,
}

/// Publishes of one run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Publishes {
    published: u64,
    /// Publishes the origin acknowledged as stored.
    acked: u64,
    rejected: u64,
    /// From the start of publishing to the last publish.
    publish_secs: f64,
    /// From handing a publish to the socket to reading its PUBLISH_ACK.
    publish_ack_ms: LatencySummary,
}

/// Deliveries to the subscribers of one level of the tree.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LevelReport {
    /// Relay links between the level and the origin.
    hop: usize,
    level: Level,
    /// Nodes of the level with subscribers.
    nodes: usize,
    subscribers: usize,
    expected: u64,
    losses: u64,
    #[serde(flatten)]
    counts: DeliveryCounts,
    /// First-time deliveries per second over the level's subscribers, from the start of
    /// publishing to the level's last delivery.
    delivered_per_sec: f64,
    /// From handing a publish to the socket to a subscriber of this level reading it.
    publish_deliver_ms: LatencySummary,
    /// This level's p50 minus the p50 of the level one hop closer to the origin, or absent at
    /// the origin. A difference of percentiles, not a percentile of per-comment differences.
    added_p50_ms: Option<f64>,
    /// This level's p99 minus the p99 of the level one hop closer to the origin.
    added_p99_ms: Option<f64>,
}

/// The hop run: subscribers at every node of the tree.
#[derive(Debug, Serialize)]
pub(crate) struct HopReport {
    regionals: usize,
    edges: usize,
    subscribers_per_node: usize,
    /// The 1, 5 and 15 minute load averages of /proc/loadavg when the run started.
    load_average: Option<[f64; 3]>,
    #[serde(flatten)]
    publishes: Publishes,
    levels: Vec<LevelReport>,
    nodes: Vec<NodeUsage>,
    /// The bench's own CPU seconds per second. Its subscribers share the machine with the
    /// nodes.
    bench_cpu_secs_per_sec: Option<f64>,
    errors: Vec<String>,
    passed: bool,
}

/// One sweep run: viewers at the edges only.
#[derive(Debug, Serialize)]
pub(crate) struct SweepPoint {
    edges: usize,
    viewers_per_edge: usize,
    /// Regionals with an edge below them: the origin's relay links that carry the topic.
    origin_links: usize,
    /// The 1, 5 and 15 minute load averages of /proc/loadavg when the run started.
    load_average: Option<[f64; 3]>,
    #[serde(flatten)]
    publishes: Publishes,
    /// Deliveries at the edges' viewers.
    edge_deliveries: LevelReport,
    /// The origin's CPU seconds per second of the run.
    origin_cpu_secs_per_sec: Option<f64>,
    nodes: Vec<NodeUsage>,
    /// The bench's own CPU seconds per second. Its viewers share the machine with the nodes.
    bench_cpu_secs_per_sec: Option<f64>,
    errors: Vec<String>,
    passed: bool,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: TreeArgs) -> anyhow::Result<bool> {
    validate(&args)?;
    let date = now_rfc3339();
    let machine = Machine::read();
    let settings = NodeSettings::new(args.chorusd.clone(), args.broker_workers)?;
    let mut index = 0;
    let mut next_topic = || {
        index += 1;
        format!("bench/tree-{}-{index}", std::process::id())
    };

    let hops = match args.part {
        Part::All | Part::Hops => Some(run_hops(&args, &settings, &next_topic())?),
        Part::Sweep => None,
    };
    let mut sweep = Vec::new();
    if args.part != Part::Hops {
        for &edges in &args.sweep_edges {
            for &viewers in &args.viewers {
                sweep.push(run_sweep_point(
                    &args,
                    &settings,
                    edges,
                    viewers,
                    &next_topic(),
                )?);
            }
        }
    }

    let passed = hops.as_ref().is_none_or(|h| h.passed) && sweep.iter().all(|p| p.passed);
    let result = TreeResult {
        scenario: "tree",
        date,
        machine,
        parameters: args.clone(),
        hops,
        sweep,
        passed,
    };
    print_result(&result, &render(&result), args.json, args.out.as_deref())?;
    Ok(result.passed)
}

fn validate(args: &TreeArgs) -> anyhow::Result<()> {
    positive_secs("--duration", args.duration)?;
    positive_secs("--connect-timeout", args.connect_timeout)?;
    ensure!(
        args.drain_timeout.is_finite() && args.drain_timeout >= 0.0,
        "--drain-timeout must be a number of seconds >= 0"
    );

    ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a number of comments per second above 0"
    );

    ensure!(args.regionals >= 1, "--regionals must be at least 1");
    ensure!(args.edges >= 1, "--edges must be at least 1");
    ensure!(args.subscribers >= 1, "--subscribers must be at least 1");
    ensure!(
        args.sweep_edges.iter().all(|&n| n >= 1),
        "every --sweep-edges count must be at least 1"
    );
    ensure!(
        args.viewers.iter().all(|&n| n >= 1),
        "every --viewers count must be at least 1"
    );

    ensure!(
        args.broker_workers >= 1,
        "--broker-workers must be at least 1"
    );
    ensure!(args.sub_threads >= 1, "--sub-threads must be at least 1");
    ensure!(
        args.payload_size >= STAMP_LEN,
        "--payload-size must be at least {STAMP_LEN} bytes, the size of the bench's stamp"
    );
    Ok(())
}

fn load_settings(args: &TreeArgs, subscribers_per_node: [usize; 3]) -> LoadSettings {
    LoadSettings {
        rate: args.rate,
        duration: Duration::from_secs_f64(args.duration),
        payload_size: args.payload_size,
        max_in_flight: args.max_in_flight,
        drain: Duration::from_secs_f64(args.drain_timeout),
        connect_timeout: Duration::from_secs_f64(args.connect_timeout),
        sub_threads: args.sub_threads,
        subscribers_per_node,
    }
}

fn run_hops(args: &TreeArgs, settings: &NodeSettings, topic: &str) -> anyhow::Result<HopReport> {
    eprintln!(
        "tree: hop run, origin + {} regional(s) + {} edge(s), {} subscriber(s) per node, {} s",
        args.regionals, args.edges, args.subscribers, args.duration
    );
    let load_average = Machine::read().load_average;
    let tree = Tree::start(settings, args.regionals, args.edges)?;
    let load = load_settings(args, [args.subscribers; 3]);
    let outcome = tree_load::run(&tree, &load, topic)?;
    // Dropping the tree stops every node by PID before the next run starts its own.
    drop(tree);

    let levels = level_reports(&outcome);
    let publishes = publishes(&outcome);
    let passed = all_passed(&publishes, &levels, &outcome.errors);
    Ok(HopReport {
        regionals: args.regionals,
        edges: args.edges,
        subscribers_per_node: args.subscribers,
        load_average,
        publishes,
        levels,
        bench_cpu_secs_per_sec: cpu_secs_per_sec(outcome.bench.as_ref()),
        nodes: outcome.nodes,
        errors: outcome.errors,
        passed,
    })
}

fn run_sweep_point(
    args: &TreeArgs,
    settings: &NodeSettings,
    edges: usize,
    viewers: usize,
    topic: &str,
) -> anyhow::Result<SweepPoint> {
    eprintln!(
        "tree: sweep run, origin + {} regional(s) + {edges} edge(s), {viewers} viewer(s) per \
         edge, {} s",
        args.regionals, args.duration
    );
    let load_average = Machine::read().load_average;
    let tree = Tree::start(settings, args.regionals, edges)?;
    let load = load_settings(args, [0, 0, viewers]);
    let outcome = tree_load::run(&tree, &load, topic)?;
    drop(tree);

    let levels = level_reports(&outcome);
    let publishes = publishes(&outcome);
    let passed = all_passed(&publishes, &levels, &outcome.errors);
    let edge_deliveries = levels
        .into_iter()
        .find(|l| l.level == Level::Edge)
        .ok_or_else(|| anyhow::anyhow!("the sweep run reported no deliveries at the edges"))?;
    let origin_cpu_secs_per_sec = outcome
        .nodes
        .iter()
        .find(|n| n.level == Level::Origin)
        .and_then(|n| n.cpu_secs_per_sec);
    Ok(SweepPoint {
        edges,
        viewers_per_edge: viewers,
        origin_links: busy_regionals(edges, args.regionals),
        load_average,
        publishes,
        edge_deliveries,
        origin_cpu_secs_per_sec,
        bench_cpu_secs_per_sec: cpu_secs_per_sec(outcome.bench.as_ref()),
        nodes: outcome.nodes,
        errors: outcome.errors,
        passed,
    })
}

fn cpu_secs_per_sec(process: Option<&ProcessUsage>) -> Option<f64> {
    process.map(|p| round_to(p.cpu_percent / 100.0, 3))
}

fn publishes(outcome: &LoadOutcome) -> Publishes {
    Publishes {
        published: outcome.published,
        acked: outcome.acked,
        rejected: outcome.rejected,
        publish_secs: round_to(outcome.publish_secs, 3),
        publish_ack_ms: LatencySummary::from_histogram(&outcome.ack_latency),
    }
}

/// Reports each level with subscribers, with the latency it adds over the level above it.
fn level_reports(outcome: &LoadOutcome) -> Vec<LevelReport> {
    let mut reports: Vec<LevelReport> = Vec::new();
    for level in Level::ALL {
        let Some(found) = outcome.level(level) else {
            continue;
        };
        let latency = LatencySummary::from_histogram(&found.latency);
        let above = reports
            .last()
            .filter(|r| r.hop + 1 == level.hops())
            .map(|r| r.publish_deliver_ms);
        let (added_p50_ms, added_p99_ms) = added_latency(above.as_ref(), &latency);
        reports.push(LevelReport {
            hop: level.hops(),
            level,
            nodes: found.nodes,
            subscribers: found.subscribers,
            expected: found.expected,
            losses: found.losses,
            counts: found.counts,
            delivered_per_sec: per_sec(found.counts.delivered, found.delivery_secs),
            publish_deliver_ms: latency,
            added_p50_ms,
            added_p99_ms,
        });
    }
    reports
}

/// Returns the p50 and p99 of `level` minus those of the level one hop closer to the origin,
/// or `None` for each when there is no such level or either level had no delivery.
fn added_latency(
    above: Option<&LatencySummary>,
    level: &LatencySummary,
) -> (Option<f64>, Option<f64>) {
    match above {
        Some(above) if above.count > 0 && level.count > 0 => (
            Some(round_to(level.p50 - above.p50, 3)),
            Some(round_to(level.p99 - above.p99, 3)),
        ),
        _ => (None, None),
    }
}

/// Returns whether every publish was stored and delivered once, in order, to every
/// subscriber, and no connection or process failed.
fn all_passed(publishes: &Publishes, levels: &[LevelReport], errors: &[String]) -> bool {
    let delivered_cleanly = levels.iter().all(|l| {
        l.losses == 0
            && l.counts.duplicates == 0
            && l.counts.out_of_order == 0
            && l.counts.unknown == 0
            && l.counts.offset_gaps == 0
    });
    delivered_cleanly
        && publishes.rejected == 0
        && publishes.acked == publishes.published
        && errors.is_empty()
}

fn render(result: &TreeResult) -> String {
    let params = &result.parameters;
    let mut text = format!(
        "tree: {} comments/s of {} bytes for {} s per run, {} regional relay(s)\n",
        params.rate, params.payload_size, params.duration, params.regionals
    );
    if let Some(hops) = &result.hops {
        text += &render_hops(hops);
    }
    if !result.sweep.is_empty() {
        text += &render_sweep(&result.sweep);
    }
    text += if result.passed {
        "checks passed\n"
    } else {
        "CHECKS FAILED\n"
    };
    text
}

/// Formats the 1-minute load average, or `-` when /proc/loadavg could not be read.
fn load_1m(load_average: Option<[f64; 3]>) -> String {
    load_average.map_or_else(|| "-".to_owned(), |[one, _, _]| format!("{one:.2}"))
}

fn dash_or(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.3}"))
}

fn render_hops(hops: &HopReport) -> String {
    let mut text = format!(
        "\nhop run: {} edge(s), {} subscriber(s) per node; published {}, acked {}, rejected {}\n",
        hops.edges,
        hops.subscribers_per_node,
        hops.publishes.published,
        hops.publishes.acked,
        hops.publishes.rejected
    );
    text += &format!(
        "{:<4} {:<9} {:>5} {:>6} {:>10} {:>6} {:>5} {:>5} {:>5} {:>8} {:>8} {:>8} {:>8}\n",
        "hop",
        "level",
        "nodes",
        "subs",
        "delivered",
        "lost",
        "dup",
        "order",
        "gaps",
        "p50 ms",
        "p99 ms",
        "+p50 ms",
        "+p99 ms"
    );
    for level in &hops.levels {
        text += &format!(
            "{:<4} {:<9} {:>5} {:>6} {:>10} {:>6} {:>5} {:>5} {:>5} {:>8.3} {:>8.3} {:>8} {:>8}\n",
            level.hop,
            level.level.name(),
            level.nodes,
            level.subscribers,
            level.counts.delivered,
            level.losses,
            level.counts.duplicates,
            level.counts.out_of_order,
            level.counts.offset_gaps,
            level.publish_deliver_ms.p50,
            level.publish_deliver_ms.p99,
            dash_or(level.added_p50_ms),
            dash_or(level.added_p99_ms)
        );
    }
    text += "CPU s/s:";
    for node in &hops.nodes {
        text += &format!(" {} {}", node.node, dash_or(node.cpu_secs_per_sec));
    }
    text += &format!(", bench {}\n", dash_or(hops.bench_cpu_secs_per_sec));
    text += &format!(
        "load average at the start: {}\n",
        load_1m(hops.load_average)
    );
    text += &render_errors(&hops.errors);
    text
}

fn render_sweep(points: &[SweepPoint]) -> String {
    let mut text = String::from("\nsweep: viewers at the edges only\n");
    text += &format!(
        "{:>5} {:>7} {:>6} {:>12} {:>8} {:>8} {:>6} {:>5} {:>5} {:>5} {:>11} {:>6}\n",
        "edges",
        "viewers",
        "links",
        "delivered/s",
        "p50 ms",
        "p99 ms",
        "lost",
        "dup",
        "order",
        "gaps",
        "origin CPU",
        "load"
    );
    for point in points {
        let edge = &point.edge_deliveries;
        text += &format!(
            "{:>5} {:>7} {:>6} {:>12.0} {:>8.3} {:>8.3} {:>6} {:>5} {:>5} {:>5} {:>11} {:>6}\n",
            point.edges,
            point.viewers_per_edge,
            point.origin_links,
            edge.delivered_per_sec,
            edge.publish_deliver_ms.p50,
            edge.publish_deliver_ms.p99,
            edge.losses,
            edge.counts.duplicates,
            edge.counts.out_of_order,
            edge.counts.offset_gaps,
            dash_or(point.origin_cpu_secs_per_sec),
            load_1m(point.load_average)
        );
    }

    // One column per node name, in the order of the run with the most nodes.
    let names: Vec<&str> = points
        .iter()
        .max_by_key(|p| p.nodes.len())
        .map(|p| p.nodes.iter().map(|n| n.node.as_str()).collect())
        .unwrap_or_default();
    text += "\nCPU seconds per second of each node\n";
    text += &format!("{:>5} {:>7}", "edges", "viewers");
    for name in &names {
        text += &format!(" {name:>10}");
    }
    text += &format!(" {:>10}\n", "bench");
    for point in points {
        text += &format!("{:>5} {:>7}", point.edges, point.viewers_per_edge);
        for name in &names {
            let cpu = point
                .nodes
                .iter()
                .find(|n| n.node == *name)
                .and_then(|n| n.cpu_secs_per_sec);
            text += &format!(" {:>10}", dash_or(cpu));
        }
        text += &format!(" {:>10}\n", dash_or(point.bench_cpu_secs_per_sec));
    }
    for point in points {
        text += &render_errors(&point.errors);
    }
    text
}

fn render_errors(errors: &[String]) -> String {
    errors.iter().map(|e| format!("error: {e}\n")).collect()
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::tree_load::LevelOutcome;
    use super::*;
    use crate::report::{new_histogram, record_latency};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: TreeArgs,
    }

    fn parse(extra: &[&str]) -> TreeArgs {
        let argv = std::iter::once("tree").chain(extra.iter().copied());
        Cli::try_parse_from(argv).unwrap().args
    }

    fn summary(count: u64, p50: f64, p99: f64) -> LatencySummary {
        LatencySummary {
            count,
            p50,
            p95: p99,
            p99,
            max: p99,
        }
    }

    /// Returns a level whose `delivered` deliveries each took `latency_us`, over
    /// `delivery_secs` seconds.
    fn level(level: Level, delivered: u64, latency_us: u64, delivery_secs: f64) -> LevelOutcome {
        let mut latency = new_histogram();
        for _ in 0..delivered {
            record_latency(&mut latency, latency_us * 1_000);
        }
        LevelOutcome {
            level,
            nodes: 1,
            subscribers: 2,
            expected: delivered,
            losses: 0,
            counts: DeliveryCounts {
                delivered,
                ..DeliveryCounts::default()
            },
            latency,
            last_delivery_nanos: Some(1),
            delivery_secs,
        }
    }

    fn outcome(levels: Vec<LevelOutcome>) -> LoadOutcome {
        LoadOutcome {
            published: 100,
            acked: 100,
            rejected: 0,
            ack_latency: new_histogram(),
            publish_secs: 1.0,
            levels,
            nodes: Vec::new(),
            bench: None,
            errors: Vec::new(),
        }
    }

    #[test]
    fn defaults_match_documentation() {
        let args = parse(&[]);
        assert_eq!(args.regionals, 2);
        assert_eq!(args.edges, 4);
        assert_eq!(args.sweep_edges, [1, 2, 4]);
        assert_eq!(args.viewers, [50, 200]);
        assert_eq!(args.rate, 1000.0);
        assert_eq!(args.payload_size, 200);
        assert_eq!(args.part, Part::All);
    }

    #[test]
    fn sweep_lists_split_on_commas() {
        let args = parse(&["--sweep-edges", "1,3", "--viewers", "10", "--part", "sweep"]);
        assert_eq!(args.sweep_edges, [1, 3]);
        assert_eq!(args.viewers, [10]);
        assert_eq!(args.part, Part::Sweep);
    }

    #[test]
    fn validate_rejects_zero_counts_and_short_payload() {
        assert!(validate(&parse(&[])).is_ok());
        assert!(validate(&parse(&["--viewers", "50,0"])).is_err());
        assert!(validate(&parse(&["--sweep-edges", "0"])).is_err());
        assert!(validate(&parse(&["--regionals", "0"])).is_err());
        assert!(validate(&parse(&["--payload-size", "39"])).is_err());
        assert!(validate(&parse(&["--rate", "0"])).is_err());
    }

    #[test]
    fn added_latency_subtracts_level_above() {
        let above = summary(10, 0.5, 1.25);
        let (p50, p99) = added_latency(Some(&above), &summary(10, 0.75, 2.0));
        assert_eq!(p50, Some(0.25));
        assert_eq!(p99, Some(0.75));
    }

    #[test]
    fn added_latency_absent_without_deliveries() {
        let empty = summary(0, 0.0, 0.0);
        assert_eq!(added_latency(None, &summary(10, 1.0, 2.0)), (None, None));
        assert_eq!(
            added_latency(Some(&empty), &summary(10, 1.0, 2.0)),
            (None, None)
        );
        assert_eq!(
            added_latency(Some(&summary(10, 1.0, 2.0)), &empty),
            (None, None)
        );
    }

    #[test]
    fn level_reports_chain_hops() {
        // Below 2,048 µs the histogram stores every microsecond exactly.
        let outcome = outcome(vec![
            level(Level::Origin, 200, 300, 1.0),
            level(Level::Regional, 200, 500, 1.0),
            level(Level::Edge, 200, 900, 2.0),
        ]);
        let reports = level_reports(&outcome);
        let hops: Vec<usize> = reports.iter().map(|r| r.hop).collect();
        assert_eq!(hops, [0, 1, 2]);
        assert_eq!(reports[0].added_p50_ms, None);
        assert_eq!(reports[1].added_p50_ms, Some(0.2));
        assert_eq!(reports[2].added_p50_ms, Some(0.4));
        assert_eq!(reports[2].added_p99_ms, Some(0.4));
        assert_eq!(reports[2].delivered_per_sec, 100.0);
    }

    #[test]
    fn edge_only_level_adds_nothing() {
        let reports = level_reports(&outcome(vec![level(Level::Edge, 50, 900, 1.0)]));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].hop, 2);
        assert_eq!(reports[0].added_p50_ms, None);
    }

    #[test]
    fn passed_needs_clean_deliveries_and_acks() {
        let outcome = outcome(vec![level(Level::Edge, 100, 900, 1.0)]);
        let mut levels = level_reports(&outcome);
        let mut publishes = publishes(&outcome);
        assert!(all_passed(&publishes, &levels, &[]));
        assert!(!all_passed(&publishes, &levels, &["lost".to_owned()]));
        publishes.acked = 99;
        assert!(!all_passed(&publishes, &levels, &[]));
        publishes.acked = 100;
        levels[0].counts.offset_gaps = 1;
        assert!(!all_passed(&publishes, &levels, &[]));
    }

    #[test]
    fn sweep_table_lists_cpu_per_node() {
        let outcome = outcome(vec![level(Level::Edge, 100, 900, 1.0)]);
        let usage = |node: &str, level, cpu| NodeUsage {
            node: node.to_owned(),
            level,
            cpu_secs_per_sec: Some(cpu),
            process: None,
        };
        let point = SweepPoint {
            edges: 1,
            viewers_per_edge: 50,
            origin_links: 1,
            load_average: None,
            publishes: publishes(&outcome),
            edge_deliveries: level_reports(&outcome).remove(0),
            origin_cpu_secs_per_sec: Some(0.125),
            nodes: vec![
                usage("origin", Level::Origin, 0.125),
                usage("edge-0", Level::Edge, 0.5),
            ],
            bench_cpu_secs_per_sec: Some(1.25),
            errors: Vec::new(),
            passed: true,
        };
        let text = render_sweep(&[point]);
        let rows: Vec<&str> = text.lines().collect();
        assert!(rows[3].contains("0.125"), "{text}");
        assert!(rows[6].contains("origin"), "{text}");
        assert!(rows[6].contains("edge-0"), "{text}");
        assert!(rows[7].contains("0.500"), "{text}");
        assert!(rows[7].ends_with("1.250"), "{text}");
    }
}
