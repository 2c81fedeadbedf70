//! `moderation`: how long a delete takes to reach every viewer of a relay tree.
//!
//! The scenario starts its own tree of chorusd processes on loopback: an origin, optionally one
//! regional relay, and edge relays, with subscribers at every edge. A publisher sends comments
//! to the origin at a steady rate while a moderator, connected to the first edge, deletes the
//! newest acknowledged comment at a steady rate. Each MODERATE goes from the edge to the origin,
//! and the tombstone the origin appends comes back down the tree.
//!
//! Figures, from the moderator's clock, which every thread shares:
//! - MODERATE sent to MODERATE_ACK received by the moderator;
//! - MODERATE sent to the tombstone read by one subscriber, over every subscriber;
//! - MODERATE sent to the tombstone read by the last of all subscribers.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use chorus_client::{ClientError, Connection, ErrorCode, Frame, Options, StartAt, Topic};
use chorus_protocol::event::flags;
use chorus_protocol::ModAction;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::tree::{Node, NodeSettings};
use super::{now_rfc3339, positive_secs, print_result};

/// How long a client read waits before it checks whether the run is over.
const READ_POLL: Duration = Duration::from_millis(100);

/// Interval at which the publisher sends the comments that are due.
const PUBLISH_TICK: Duration = Duration::from_millis(2);

/// Arguments of `chorus-bench moderation`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct ModerationArgs {
    /// chorusd binary to start [default: chorusd in the same directory as this program].
    #[arg(long, value_name = "FILE")]
    pub(crate) chorusd: Option<PathBuf>,

    /// Edge relays below the origin, or below the regional relay.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) edges: usize,

    /// Put one regional relay between the origin and the edges.
    #[arg(long)]
    pub(crate) regional: bool,

    /// Subscribers at each edge.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub(crate) subscribers: usize,

    /// Comments per second published at the origin during the run.
    #[arg(long, value_name = "N", default_value_t = 1000.0)]
    pub(crate) comment_rate: f64,

    /// Deletes per second sent by the moderator at the first edge.
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub(crate) delete_rate: f64,

    /// Seconds of publishing and deleting.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub(crate) duration: f64,

    /// Comment payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 100)]
    pub(crate) payload_size: usize,

    /// Event-loop threads of each chorusd.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) broker_workers: usize,

    /// Seconds to wait for the last tombstones after the run.
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

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub(crate) struct Percentiles {
    samples: u64,
    p50_ms: f64,
    p95_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Percentiles {
        let ms = |us: u64| us as f64 / 1000.0;
        Percentiles {
            samples: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

/// Result of one run.
#[derive(Debug, Serialize)]
pub(crate) struct ModerationResult {
    scenario: &'static str,
    date: String,
    parameters: ModerationArgs,
    comments_acked: u64,
    deletes_sent: u64,
    deletes_ok: u64,
    /// Tombstones every subscriber should have received: deletes acknowledged OK times
    /// subscribers.
    tombstones_expected: u64,
    tombstones_received: u64,
    /// Tombstones for no delete of this run, or received twice by one subscriber.
    tombstones_unexpected: u64,
    ack: Percentiles,
    tombstone_each_subscriber: Percentiles,
    tombstone_all_subscribers: Percentiles,
    passed: bool,
}

/// State the threads of a run share.
struct Run {
    topic: Topic,
    /// Set when publishing and deleting stop.
    stop: AtomicBool,
    /// Set when the moderator has its last MODERATE_ACK, so subscribers know how many tombstones
    /// to expect.
    moderation_done: AtomicBool,
    deletes_ok: AtomicU64,
    /// Offsets of acknowledged comments not yet considered for deletion, oldest first.
    acked: Mutex<VecDeque<u64>>,
    /// When each delete was sent, by the offset it deletes.
    sent: Mutex<HashMap<u64, Instant>>,
}

/// Tombstones received by one subscriber.
#[derive(Default)]
struct Seen {
    /// Latency of each tombstone, by the offset it deletes.
    tombstones: HashMap<u64, Duration>,
    unexpected: u64,
}

/// Deletes the moderator sent, and the latency of their acknowledgements.
struct ModeratorTally {
    deletes_sent: u64,
    ack_latency: Histogram<u64>,
}

/// Runs the scenario; returns whether every check passed.
pub(crate) fn run(args: ModerationArgs) -> anyhow::Result<bool> {
    let duration = Duration::from_secs_f64(positive_secs("--duration", args.duration)?);
    let drain = Duration::from_secs_f64(positive_secs("--drain-timeout", args.drain_timeout)?);
    anyhow::ensure!(args.edges > 0, "--edges must be at least 1");
    anyhow::ensure!(args.subscribers > 0, "--subscribers must be at least 1");
    let rates = [args.comment_rate, args.delete_rate];
    anyhow::ensure!(
        rates.iter().all(|rate| rate.is_finite() && *rate > 0.0),
        "--comment-rate and --delete-rate must be numbers above 0"
    );

    let settings = NodeSettings::new(args.chorusd.clone(), args.broker_workers)?;
    // The nodes stay up until the end of this function, and are stopped when dropped.
    let (origin, _regional, edges) = start_tree(&settings, &args)?;
    let origin_addr = origin.addr.clone();
    let run = Arc::new(Run {
        topic: Topic::new(format!("bench/moderation-{}", std::process::id()))?,
        stop: AtomicBool::new(false),
        moderation_done: AtomicBool::new(false),
        deletes_ok: AtomicU64::new(0),
        acked: Mutex::new(VecDeque::new()),
        sent: Mutex::new(HashMap::new()),
    });

    let mut subscribers = Vec::new();
    for edge in &edges {
        for _ in 0..args.subscribers {
            subscribers.push(start_subscriber(&edge.addr, &run, drain)?);
        }
    }
    eprintln!(
        "tree up: origin {origin_addr}, {} edge(s), {} subscriber(s); running {:.0} s",
        edges.len(),
        subscribers.len(),
        duration.as_secs_f64()
    );
    let publisher = start_publisher(&origin_addr, &run, args.comment_rate, args.payload_size)?;
    let moderator = start_moderator(&edges[0].addr, &run, args.delete_rate)?;

    thread::sleep(duration);
    run.stop.store(true, Ordering::Release);
    let comments_acked = join(publisher, "publisher")??;
    let tally = join(moderator, "moderator")??;
    run.moderation_done.store(true, Ordering::Release);
    let seen: Vec<Seen> = subscribers
        .into_iter()
        .map(|handle| join(handle, "subscriber"))
        .collect::<anyhow::Result<_>>()?;

    let result = summarize(&args, &run, &seen, comments_acked, &tally)?;
    print_result(&result, &render(&result), args.json, args.out.as_deref())?;
    Ok(result.passed)
}

/// Starts the origin, the regional relay when asked for, and the edges.
fn start_tree(
    settings: &NodeSettings,
    args: &ModerationArgs,
) -> anyhow::Result<(Node, Option<Node>, Vec<Node>)> {
    let origin = settings.origin("origin")?;
    let regional = match args.regional {
        true => Some(settings.relay("regional", &origin.addr)?),
        false => None,
    };
    let upstream = regional.as_ref().map_or(&origin.addr, |node| &node.addr);
    let edges = (0..args.edges)
        .map(|i| settings.relay(&format!("edge-{i}"), upstream))
        .collect::<anyhow::Result<Vec<Node>>>()?;
    Ok((origin, regional, edges))
}

fn client_options() -> Options {
    Options {
        read_timeout: Some(READ_POLL),
        ..Options::default()
    }
}

fn join<T>(handle: JoinHandle<T>, name: &str) -> anyhow::Result<T> {
    handle
        .join()
        .map_err(|_| anyhow!("the {name} thread panicked"))
}

/// Subscribes at `addr` from the topic's end, then records every tombstone until the run is
/// over and every expected tombstone arrived, or `drain` after the moderator's last
/// MODERATE_ACK.
fn start_subscriber(
    addr: &str,
    run: &Arc<Run>,
    drain: Duration,
) -> anyhow::Result<JoinHandle<Seen>> {
    let mut conn = Connection::connect(addr, &client_options())
        .with_context(|| format!("failed to connect a subscriber to {addr}"))?;
    subscribe(&mut conn, &run.topic)?;
    let run = run.clone();
    Ok(thread::spawn(move || {
        let mut seen = Seen::default();
        let mut drain_deadline = None;
        loop {
            if run.moderation_done.load(Ordering::Acquire) {
                let expected = run.deletes_ok.load(Ordering::Acquire) as usize;
                let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
                if seen.tombstones.len() >= expected || Instant::now() >= deadline {
                    return seen;
                }
            }
            match conn.recv() {
                Ok(Frame::Events(events)) => record_tombstones(&run, &events, &mut seen),
                Ok(_) | Err(ClientError::Timeout) => {}
                Err(e) => {
                    eprintln!("subscriber failed: {e}");
                    return seen;
                }
            }
        }
    }))
}

/// Subscribes from the topic's end. The SUBSCRIBE is sent again when SUBSCRIBED takes longer
/// than the read timeout, as it can while the edge subscribes upstream, for up to 10 seconds.
fn subscribe(conn: &mut Connection, topic: &Topic) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match conn.subscribe(topic, StartAt::Latest, 0) {
            Ok(_) => return Ok(()),
            Err(ClientError::Timeout) if Instant::now() < deadline => {}
            Err(e) => return Err(e).context("failed to subscribe"),
        }
    }
}

fn record_tombstones(run: &Run, events: &chorus_client::Events, seen: &mut Seen) {
    let now = Instant::now();
    for event in events.iter() {
        if event.flags & flags::TOMBSTONE == 0 {
            continue;
        }
        let sent = event
            .tombstone_target()
            .and_then(|target| Some((target, *run.sent.lock().ok()?.get(&target)?)));
        match sent {
            Some((target, at)) if !seen.tombstones.contains_key(&target) => {
                seen.tombstones
                    .insert(target, now.saturating_duration_since(at));
            }
            _ => seen.unexpected += 1,
        }
    }
}

/// Publishes comments at `rate` per second to `addr` until the run stops; returns the number
/// acknowledged. Acknowledged offsets go to the moderator's queue.
fn start_publisher(
    addr: &str,
    run: &Arc<Run>,
    rate: f64,
    payload_size: usize,
) -> anyhow::Result<JoinHandle<anyhow::Result<u64>>> {
    let conn = Connection::connect(addr, &client_options())
        .with_context(|| format!("failed to connect the publisher to {addr}"))?;
    let (mut writer, mut reader) = conn.split().context("failed to split the publisher")?;
    let sent = Arc::new(AtomicU64::new(0));
    let acks = {
        let (run, sent) = (run.clone(), sent.clone());
        thread::spawn(move || -> anyhow::Result<u64> {
            let mut acked = 0u64;
            let mut deadline = None;
            loop {
                if run.stop.load(Ordering::Acquire) {
                    let last =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
                    if acked >= sent.load(Ordering::Acquire) || Instant::now() >= last {
                        return Ok(acked);
                    }
                }
                match reader.recv() {
                    Ok(Frame::PublishAck(ack)) if ack.code == ErrorCode::Ok => {
                        acked += 1;
                        if let Ok(mut queue) = run.acked.lock() {
                            queue.push_back(ack.offset);
                        }
                    }
                    Ok(Frame::PublishAck(ack)) => {
                        return Err(anyhow!("publish rejected with {}", ack.code.name()))
                    }
                    Ok(_) | Err(ClientError::Timeout) => {}
                    Err(e) => return Err(e).context("publisher connection failed"),
                }
            }
        })
    };
    let run = run.clone();
    let payload = vec![b'c'; payload_size];
    Ok(thread::spawn(move || -> anyhow::Result<u64> {
        let started = Instant::now();
        while !run.stop.load(Ordering::Acquire) {
            let due = (started.elapsed().as_secs_f64() * rate) as u64;
            while sent.load(Ordering::Acquire) < due {
                writer.send_publish(&run.topic, &payload)?;
                sent.fetch_add(1, Ordering::AcqRel);
            }
            writer.flush()?;
            thread::sleep(PUBLISH_TICK);
        }
        join(acks, "publisher acknowledgement")?
    }))
}

/// Deletes the newest acknowledged comment `rate` times a second, through the edge at `addr`,
/// until the run stops.
fn start_moderator(
    addr: &str,
    run: &Arc<Run>,
    rate: f64,
) -> anyhow::Result<JoinHandle<anyhow::Result<ModeratorTally>>> {
    let options = Options {
        read_timeout: Some(Duration::from_secs(10)),
        ..Options::default()
    };
    let mut conn = Connection::connect(addr, &options)
        .with_context(|| format!("failed to connect the moderator to {addr}"))?;
    let run = run.clone();
    let interval = Duration::from_secs_f64(1.0 / rate);
    Ok(thread::spawn(move || {
        let mut ack = latency_histogram()?;
        let mut sent = 0u64;
        let mut next = Instant::now();
        while !run.stop.load(Ordering::Acquire) {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            // The newest comment is the one most likely still in every edge's cache.
            let target = run.acked.lock().ok().and_then(|mut queue| {
                let newest = queue.pop_back();
                queue.clear();
                newest
            });
            let Some(target) = target else {
                continue;
            };
            let at = Instant::now();
            if let Ok(mut sent_at) = run.sent.lock() {
                sent_at.insert(target, at);
            }
            sent += 1;
            let action = ModAction::DeleteComment {
                topic: run.topic.clone(),
                offset: target,
            };
            match conn.moderate(action) {
                Ok(()) => {
                    run.deletes_ok.fetch_add(1, Ordering::AcqRel);
                    ack.record(micros(at.elapsed()))?;
                }
                Err(ClientError::Refused { code, .. }) => {
                    eprintln!("delete of offset {target} rejected with {}", code.name());
                }
                Err(e) => return Err(e).context("moderator connection failed"),
            }
        }
        Ok(ModeratorTally {
            deletes_sent: sent,
            ack_latency: ack,
        })
    }))
}

fn latency_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds from 1 to 60 s with 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).context("failed to create a histogram")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn summarize(
    args: &ModerationArgs,
    run: &Run,
    seen: &[Seen],
    comments_acked: u64,
    tally: &ModeratorTally,
) -> anyhow::Result<ModerationResult> {
    let deletes_sent = tally.deletes_sent;
    let deletes_ok = run.deletes_ok.load(Ordering::Acquire);
    let mut each = latency_histogram()?;
    let mut slowest: HashMap<u64, Duration> = HashMap::new();
    for subscriber in seen {
        for (target, latency) in &subscriber.tombstones {
            each.record(micros(*latency))?;
            let entry = slowest.entry(*target).or_default();
            *entry = (*entry).max(*latency);
        }
    }
    let mut all = latency_histogram()?;
    for latency in slowest.values() {
        all.record(micros(*latency))?;
    }
    let tombstones_expected = deletes_ok * seen.len() as u64;
    let tombstones_received: u64 = seen.iter().map(|s| s.tombstones.len() as u64).sum();
    let tombstones_unexpected: u64 = seen.iter().map(|s| s.unexpected).sum();
    Ok(ModerationResult {
        scenario: "moderation",
        date: now_rfc3339(),
        parameters: args.clone(),
        comments_acked,
        deletes_sent,
        deletes_ok,
        tombstones_expected,
        tombstones_received,
        tombstones_unexpected,
        ack: Percentiles::of(&tally.ack_latency),
        tombstone_each_subscriber: Percentiles::of(&each),
        tombstone_all_subscribers: Percentiles::of(&all),
        passed: deletes_ok == deletes_sent
            && tombstones_received == tombstones_expected
            && tombstones_unexpected == 0,
    })
}

fn render(result: &ModerationResult) -> String {
    let line = |name: &str, p: &Percentiles| {
        format!(
            "{name:<34} {:>7.2} {:>7.2} {:>7.2} {:>8.2}   ({} samples)\n",
            p.p50_ms, p.p95_ms, p.p99_ms, p.max_ms, p.samples
        )
    };
    let params = &result.parameters;
    let mut text = format!(
        "moderation: {} edge(s){}, {} subscriber(s) each, {} comments/s, {} deletes/s, {} s\n",
        params.edges,
        if params.regional {
            " below a regional relay"
        } else {
            ""
        },
        params.subscribers,
        params.comment_rate,
        params.delete_rate,
        params.duration
    );
    text += &format!(
        "comments acked {}, deletes sent {}, OK {}; tombstones received {} of {}, unexpected {}\n",
        result.comments_acked,
        result.deletes_sent,
        result.deletes_ok,
        result.tombstones_received,
        result.tombstones_expected,
        result.tombstones_unexpected
    );
    text += &format!(
        "{:<34} {:>7} {:>7} {:>7} {:>8}\n",
        "latency (ms)", "p50", "p95", "p99", "max"
    );
    text += &line("MODERATE -> MODERATE_ACK", &result.ack);
    text += &line(
        "MODERATE -> tombstone, each",
        &result.tombstone_each_subscriber,
    );
    text += &line(
        "MODERATE -> tombstone, all",
        &result.tombstone_all_subscribers,
    );
    text += if result.passed {
        "checks passed\n"
    } else {
        "CHECKS FAILED\n"
    };
    text
}

#[cfg(test)]
mod tests {
    use chorus_client::{Event, Events};

    use super::*;

    fn run_with_delete(target: u64) -> Run {
        let run = Run {
            topic: Topic::new("bench/moderation-test").unwrap(),
            stop: AtomicBool::new(false),
            moderation_done: AtomicBool::new(false),
            deletes_ok: AtomicU64::new(0),
            acked: Mutex::new(VecDeque::new()),
            sent: Mutex::new(HashMap::new()),
        };
        run.sent.lock().unwrap().insert(target, Instant::now());
        run
    }

    fn tombstones(run: &Run, targets: &[u64]) -> Events {
        let events: Vec<Event> = targets
            .iter()
            .enumerate()
            .map(|(i, target)| Event {
                offset: 100 + i as u64,
                time_us: 0,
                flags: flags::TOMBSTONE,
                publisher: String::new(),
                payload: bytes::Bytes::copy_from_slice(&target.to_be_bytes()),
            })
            .collect();
        Events::new(run.topic.clone(), 1, &events)
    }

    #[test]
    fn tombstone_of_sent_delete_is_timed() {
        let run = run_with_delete(7);
        let mut seen = Seen::default();
        record_tombstones(&run, &tombstones(&run, &[7]), &mut seen);
        assert!(seen.tombstones.contains_key(&7));
        assert_eq!(seen.unexpected, 0);
    }

    #[test]
    fn repeated_or_unknown_tombstone_is_unexpected() {
        let run = run_with_delete(7);
        let mut seen = Seen::default();
        record_tombstones(&run, &tombstones(&run, &[7, 7, 8]), &mut seen);
        assert_eq!(seen.tombstones.len(), 1);
        assert_eq!(seen.unexpected, 2);
    }
}
