//! A load run shared by the scenarios that publish: subscribers in a connection pool (and
//! optionally slow ones on their own threads), paced publishers, a wait for the deliveries,
//! and the report.

use std::io::IsTerminal;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;

use super::check::{DeliveryCounts, SubscriberCheck};
use super::machine::Machine;
use super::pool::{Handler, Pool, PoolCounters, PoolSpec};
use super::procfs::{self, ProcessSample, ProcessUsage};
use super::proto::{BrokerKind, SessionConfig};
use super::publish::{self, PublisherOutcome, PublisherSpec, RunningPublisher};
use super::rate::RateSchedule;
use super::render::{load_text, ClassReport, LoadReport, PhaseReport};
use super::shared::LoadShared;
use super::slow_reader::{self, SlowOutcome, SlowReading, SlowSpec};
use super::sockets::{self, FileLimit};
use super::stamp::Stamp;
use super::timeline::Timeline;
use super::{now_rfc3339, print_result, LoadArgs, TargetArgs};
use crate::progress::Progress;
use crate::report::{new_histogram, per_sec, record_latency, round_to, LatencySummary};

/// How often the main thread updates progress and checks for the end of the run.
const TICK: Duration = Duration::from_millis(100);

/// Time between the last connection being ready and the first publish.
const START_DELAY: Duration = Duration::from_millis(200);

/// Connections each pool thread has in their handshake at once.
const MAX_CONNECTING: usize = 256;

/// Largest window for MQTT QoS 1, whose packet identifiers are 16 bits wide.
const MQTT_MAX_IN_FLIGHT: u64 = 65_535;

/// Subscriber classes: the pool's subscribers and the slow ones.
const FAST: usize = 0;
const SLOW: usize = 1;
const CLASS_NAMES: [&str; 2] = ["fast", "slow"];

/// Everything a load run needs.
#[derive(Debug, Clone)]
pub(crate) struct LoadPlan {
    pub(crate) scenario: &'static str,
    pub(crate) target: TargetArgs,
    pub(crate) load: LoadArgs,
    pub(crate) topics: usize,
    /// Subscribers in the pool; subscriber i subscribes to topic i % topics.
    pub(crate) subscribers: usize,
    pub(crate) publishers: usize,
    /// Rates over all publishers together.
    pub(crate) schedule: RateSchedule,
    /// Named phases by their end, in seconds since publishing started; empty for one phase.
    pub(crate) phases: Vec<(String, f64)>,
    /// Slow subscribers, after the pool's in topic order, and how they read.
    pub(crate) slow: Option<(usize, SlowReading)>,
    /// The scenario's own arguments, for the report.
    pub(crate) parameters: serde_json::Value,
}

impl LoadPlan {
    fn slow_count(&self) -> usize {
        self.slow.map_or(0, |(count, _)| count)
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.topics >= 1, "--topics must be at least 1");
        ensure!(self.topics < 1 << 24, "--topics must be below 16,777,216");
        ensure!(
            (1..=usize::from(u16::MAX)).contains(&self.publishers),
            "--publishers must be between 1 and 65535"
        );
        ensure!(
            self.subscribers + self.slow_count() >= 1,
            "at least one subscriber is needed"
        );
        ensure!(
            self.load.sub_threads >= 1,
            "--sub-threads must be at least 1"
        );
        ensure!(
            self.load.drain_timeout.is_finite() && self.load.drain_timeout >= 0.0,
            "--drain-timeout must be a number of seconds >= 0"
        );
        Ok(())
    }

    /// Returns the window per publisher, capped where the protocol needs it.
    fn max_in_flight(&self) -> u64 {
        let wanted = self.load.max_in_flight;
        let mqtt_qos1 = self.target.broker == BrokerKind::Mqtt && self.target.mqtt_qos == 1;
        if mqtt_qos1 && (wanted == 0 || wanted > MQTT_MAX_IN_FLIGHT) {
            return MQTT_MAX_IN_FLIGHT;
        }
        wanted
    }
}

/// Runs a load plan and prints its report; returns whether every check passed.
pub(crate) fn run(plan: LoadPlan) -> anyhow::Result<bool> {
    let report = execute(&plan)?;
    let text = load_text(&report);
    print_result(&report, &text, plan.target.json, plan.target.out.as_deref())?;
    Ok(report.passed)
}

/// Connections and threads of a run that is set up.
struct Setup {
    shared: Arc<LoadShared>,
    pool: Pool<CheckHandler>,
    slow: Vec<JoinHandle<SlowOutcome>>,
    publishers: Vec<publish::Publisher>,
    broker_pid: Option<u32>,
}

fn execute(plan: &LoadPlan) -> anyhow::Result<LoadReport> {
    plan.validate()?;
    let date = now_rfc3339();
    let machine = Machine::read();
    let connections = plan.subscribers + plan.slow_count() + 2 * plan.publishers;
    check_file_limit(connections as u64)?;
    let setup = set_up(plan)?;

    let Setup {
        shared,
        pool,
        slow,
        publishers,
        broker_pid,
    } = setup;
    shared.set_start(Instant::now() + START_DELAY);
    let running = publishers
        .into_iter()
        .map(|p| p.start(Arc::clone(&shared)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let broker_start = broker_pid.and_then(|pid| procfs::sample(pid).ok());
    let bench_start = procfs::sample(std::process::id()).ok();

    let mut errors = Vec::new();
    let end_nanos = wait_for_end(plan, &shared, &running, &mut errors);

    let wall = (end_nanos.saturating_sub(shared.start_nanos())) as f64 / 1e9;
    let broker_process = usage(broker_pid, broker_start, wall);
    let bench_process = usage(Some(std::process::id()), bench_start, wall);

    shared.request_stop();
    let outcomes = collect(running, pool, slow, &mut errors);
    let mut report = build_report(plan, &shared, outcomes, end_nanos, errors);
    report.date = date;
    report.machine = machine;
    report.broker_process = broker_process;
    report.bench_process = bench_process;
    report.judge();
    Ok(report)
}

fn check_file_limit(connections: u64) -> anyhow::Result<FileLimit> {
    let limit = sockets::raise_file_limit().context("failed to read the open-file limit")?;
    ensure!(
        connections <= limit.connections(),
        "{connections} connections need more descriptors than the open-file limit of {} \
         (hard limit {}) leaves; raise the hard limit (ulimit -Hn as root) or use fewer \
         subscribers",
        limit.soft,
        limit.hard
    );
    Ok(limit)
}

/// Connects every subscriber, then every publisher.
fn set_up(plan: &LoadPlan) -> anyhow::Result<Setup> {
    let server = sockets::resolve(&plan.target.server)?;
    let connect_timeout = plan.target.connect_timeout()?;
    let names = plan.target.topic_names(plan.scenario, plan.topics);
    let client_name = format!("cb{}", std::process::id());
    let session = SessionConfig::new(
        plan.target.broker,
        &names,
        plan.target.mqtt_qos,
        client_name,
    )?;
    let fanout = subscribers_per_topic(plan);
    let shared = Arc::new(LoadShared::new(plan.publishers, fanout, plan.load.max_lag));
    let phases = Arc::new(Phases::new(&plan.phases, plan.schedule.duration()));
    let broker_pid = plan.target.find_broker_pid(server);

    let topic_of: Vec<usize> = (0..plan.subscribers).map(|i| i % plan.topics).collect();
    let spec = PoolSpec {
        server,
        session: session.clone(),
        topic_of: topic_of.clone(),
        first_id: 0,
        threads: plan.load.sub_threads.min(plan.subscribers.max(1)),
        max_connecting: MAX_CONNECTING,
        connect_timeout,
    };
    let make = |_thread: usize, conns: &[usize]| {
        let topics = conns.iter().map(|&c| topic_of[c]).collect();
        CheckHandler::new(
            Arc::clone(&shared),
            Arc::clone(&phases),
            FAST,
            topics,
            plan.publishers,
        )
    };
    let pool = Pool::start(spec, make)?;
    let deadline = Instant::now() + connect_timeout + Duration::from_secs(1);
    let ready = pool.wait_settled(deadline, |_| {});
    if ready < plan.subscribers as u64 {
        let (messages, _) = pool.counters().errors();
        drop(pool.stop());
        let first = messages.first().map_or("none", String::as_str);
        bail!(
            "only {ready} of {} subscribers were ready in time; first error: {}",
            plan.subscribers,
            shorten(first, 300)
        );
    }

    let slow = start_slow(plan, server, &session, &shared, &phases, connect_timeout)?;
    let publishers = (0..plan.publishers)
        .map(|id| {
            let spec = PublisherSpec {
                id,
                server,
                session: session.clone(),
                topics: (0..plan.topics).collect(),
                schedule: plan.schedule.split(plan.publishers),
                payload_size: plan.load.payload_size,
                max_in_flight: plan.max_in_flight(),
                connect_timeout,
            };
            publish::connect(spec)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    eprintln!(
        "{}: {} subscriber(s) and {} publisher(s) connected to {} ({})",
        plan.scenario,
        plan.subscribers + plan.slow_count(),
        plan.publishers,
        server,
        plan.target.broker
    );
    Ok(Setup {
        shared,
        pool,
        slow,
        publishers,
        broker_pid,
    })
}

/// Cuts `text` to at most `max` bytes at a character boundary, marking the cut.
fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

fn start_slow(
    plan: &LoadPlan,
    server: std::net::SocketAddr,
    session: &SessionConfig,
    shared: &Arc<LoadShared>,
    phases: &Arc<Phases>,
    connect_timeout: Duration,
) -> anyhow::Result<Vec<JoinHandle<SlowOutcome>>> {
    let Some((count, reading)) = plan.slow else {
        return Ok(Vec::new());
    };
    (0..count)
        .map(|k| {
            let conn_id = plan.subscribers + k;
            let topic = conn_id % plan.topics;
            let handler = CheckHandler::new(
                Arc::clone(shared),
                Arc::clone(phases),
                SLOW,
                vec![topic],
                plan.publishers,
            );
            let spec = SlowSpec {
                server,
                session: session.clone(),
                topic,
                conn_id,
                reading,
                connect_timeout,
            };
            slow_reader::start(spec, handler, Arc::clone(shared))
        })
        .collect()
}

/// Waits until every publisher has finished and every due delivery arrived, or until the drain
/// timeout after the last publish. Returns the end time in nanoseconds of the run clock.
fn wait_for_end(
    plan: &LoadPlan,
    shared: &LoadShared,
    publishers: &[RunningPublisher],
    errors: &mut Vec<String>,
) -> u64 {
    let drain = Duration::from_secs_f64(plan.load.drain_timeout);
    let hard_end = shared.start() + plan.schedule.duration() + drain + Duration::from_secs(10);
    let per_topic = subscribers_per_topic(plan);
    let visible = !plan.target.json && std::io::stderr().is_terminal();
    let progress = Progress::new(visible, estimate(&plan.schedule), 0);
    let mut expected: Option<(u64, Instant)> = None;
    loop {
        thread::sleep(TICK);
        let delivered = LoadShared::load(&shared.delivered);
        progress.update(LoadShared::load(&shared.published), delivered);
        let now = Instant::now();
        if expected.is_none() && shared.writers_done() == publishers.len() {
            let sent = shared.sent_per_topic();
            let total = sent.iter().zip(&per_topic).map(|(s, n)| s * n).sum();
            expected = Some((total, now + drain));
        }
        if let Some((total, drain_end)) = expected {
            let confirmed = publishers.iter().all(RunningPublisher::is_finished);
            if (delivered >= total && confirmed) || now >= drain_end {
                break;
            }
        }
        if now >= hard_end {
            errors.push("the run did not end in time; publishers may be stuck".into());
            break;
        }
    }
    progress.finish();
    shared.now_nanos()
}

fn subscribers_per_topic(plan: &LoadPlan) -> Vec<u64> {
    let mut counts = vec![0u64; plan.topics];
    for conn in 0..plan.subscribers + plan.slow_count() {
        counts[conn % plan.topics] += 1;
    }
    counts
}

fn estimate(schedule: &RateSchedule) -> u64 {
    match schedule.total() {
        u64::MAX => 0,
        total => total,
    }
}

fn usage(pid: Option<u32>, start: Option<ProcessSample>, wall: f64) -> Option<ProcessUsage> {
    let pid = pid?;
    let end = procfs::sample(pid).ok()?;
    Some(ProcessUsage::between(pid, start?, end, wall))
}

/// Outcomes of the threads of a run.
struct Outcomes {
    publishers: Vec<PublisherOutcome>,
    handlers: Vec<CheckHandler>,
}

fn collect(
    running: Vec<RunningPublisher>,
    pool: Pool<CheckHandler>,
    slow: Vec<JoinHandle<SlowOutcome>>,
    errors: &mut Vec<String>,
) -> Outcomes {
    let mut publishers = Vec::new();
    for (id, p) in running.into_iter().enumerate() {
        let outcome = p.join();
        for message in &outcome.errors.messages {
            errors.push(format!("publisher {id}: {message}"));
        }
        publishers.push(outcome);
    }
    let lost = PoolCounters::get(&pool.counters().lost);
    let (messages, more) = pool.counters().errors();
    let mut handlers = pool.stop();
    if lost > 0 {
        errors.push(format!(
            "{lost} subscriber connection(s) lost during the run"
        ));
        errors.extend(messages);
        if more > 0 {
            errors.push(format!("{more} more subscriber errors"));
        }
    }
    for thread in slow {
        match thread.join() {
            Ok(outcome) => {
                errors.extend(outcome.errors.messages);
                handlers.push(outcome.handler);
            }
            Err(_) => errors.push("a slow subscriber thread panicked".into()),
        }
    }
    Outcomes {
        publishers,
        handlers,
    }
}

/// Adds up the publishers' and subscribers' outcomes.
fn build_report(
    plan: &LoadPlan,
    shared: &LoadShared,
    outcomes: Outcomes,
    end_nanos: u64,
    errors: Vec<String>,
) -> LoadReport {
    let start = shared.start_nanos();
    let secs_since_start = |nanos: u64| nanos.saturating_sub(start) as f64 / 1e9;
    let publishers = &outcomes.publishers;
    let published: u64 = publishers.iter().map(|p| p.sent).sum();
    let last_send = publishers.iter().filter_map(|p| p.last_send_nanos).max();
    let publish_secs = last_send.map_or(0.0, secs_since_start);

    let mut classes = [ClassTotals::default(), ClassTotals::default()];
    for handler in &outcomes.handlers {
        classes[handler.class].add(handler, publishers);
    }
    let all_delivered = classes.iter().all(|c| c.losses == 0);
    let end = match classes.iter().filter_map(|c| c.last_delivery).max() {
        Some(last) if all_delivered => last,
        _ => end_nanos,
    };
    let duration_secs = secs_since_start(end);

    let mut total = DeliveryCounts::default();
    for class in &classes {
        total.add(&class.counts);
    }
    let phases = phase_reports(plan, &classes);
    let acks_each = plan.target.broker.acks_each_publish(plan.target.mqtt_qos);
    LoadReport {
        scenario: plan.scenario,
        date: String::new(),
        machine: Machine::default(),
        broker: plan.target.broker,
        mqtt_qos: (plan.target.broker == BrokerKind::Mqtt).then_some(plan.target.mqtt_qos),
        server: plan.target.server.clone(),
        parameters: plan.parameters.clone(),
        topics: plan.topics,
        publishers: plan.publishers,
        publish_secs: round_to(publish_secs, 3),
        duration_secs: round_to(duration_secs, 3),
        published,
        published_per_sec: per_sec(published, publish_secs),
        confirmed: publishers.iter().map(|p| p.confirmed).sum(),
        acked: publishers.iter().map(|p| p.acked).sum(),
        rejected: publishers.iter().map(|p| p.rejected).sum(),
        expected: classes.iter().map(|c| c.expected).sum(),
        delivered: total.delivered,
        delivered_per_sec: per_sec(total.delivered, duration_secs),
        losses: classes.iter().map(|c| c.losses).sum(),
        duplicates: total.duplicates,
        out_of_order: total.out_of_order,
        unknown: total.unknown,
        offset_gaps: total.offset_gaps,
        publish_ack_ms: acks_each.then(|| ack_summary(publishers)),
        publish_deliver_ms: classes[FAST].latency_summary(),
        classes: class_reports(plan, &classes),
        phases,
        timeline: classes[FAST].timeline.entries(),
        broker_process: None,
        bench_process: None,
        errors,
        passed: false,
    }
}

fn ack_summary(publishers: &[PublisherOutcome]) -> LatencySummary {
    let mut merged = new_histogram();
    for p in publishers {
        // Histograms with the same bounds always merge.
        let _ = merged.add(&p.ack_latency);
    }
    LatencySummary::from_histogram(&merged)
}

fn class_reports(plan: &LoadPlan, classes: &[ClassTotals; 2]) -> Vec<ClassReport> {
    let counts = [plan.subscribers, plan.slow_count()];
    (0..2)
        .filter(|&c| counts[c] > 0)
        .map(|c| ClassReport {
            class: CLASS_NAMES[c],
            subscribers: counts[c],
            expected: classes[c].expected,
            losses: classes[c].losses,
            counts: classes[c].counts,
            publish_deliver_ms: classes[c].latency_summary(),
            // The fast subscribers' timeline is the report's own `timeline`.
            timeline: (c != FAST).then(|| classes[c].timeline.entries()),
        })
        .collect()
}

fn phase_reports(plan: &LoadPlan, classes: &[ClassTotals; 2]) -> Vec<PhaseReport> {
    let phases = Phases::new(&plan.phases, plan.schedule.duration());
    let counts = [plan.subscribers, plan.slow_count()];
    let mut reports = Vec::new();
    for (c, class) in classes.iter().enumerate() {
        if counts[c] == 0 {
            continue;
        }
        for (i, name) in phases.names.iter().enumerate() {
            let from = if i == 0 {
                0.0
            } else {
                phases.ends[i - 1].as_secs_f64()
            };
            let to = phases.ends[i].as_secs_f64();
            let histogram = &class.latency[i];
            reports.push(PhaseReport {
                phase: name.clone(),
                class: CLASS_NAMES[c],
                from_secs: round_to(from, 3),
                to_secs: round_to(to, 3),
                deliveries: histogram.len(),
                delivered_per_sec: per_sec(histogram.len(), to - from),
                publish_deliver_ms: LatencySummary::from_histogram(histogram),
            });
        }
    }
    reports
}

/// Delivery totals of one class of subscribers.
#[derive(Default)]
struct ClassTotals {
    counts: DeliveryCounts,
    expected: u64,
    losses: u64,
    /// Latencies per phase.
    latency: Vec<Histogram<u64>>,
    timeline: Timeline,
    last_delivery: Option<u64>,
}

impl ClassTotals {
    fn add(&mut self, handler: &CheckHandler, publishers: &[PublisherOutcome]) {
        for check in &handler.checks {
            self.counts.add(&check.counts());
            let mut due = 0;
            let mut arrived = 0;
            for (p, outcome) in publishers.iter().enumerate() {
                let sent = outcome
                    .sent_per_topic
                    .get(check.topic)
                    .copied()
                    .unwrap_or(0);
                let rejected = outcome
                    .rejected_per_topic
                    .get(check.topic)
                    .copied()
                    .unwrap_or(0);
                due += sent.saturating_sub(rejected);
                arrived += check.distinct_from(p);
            }
            self.expected += due;
            self.losses += due.saturating_sub(arrived);
        }
        if self.latency.len() < handler.latency.len() {
            self.latency
                .resize_with(handler.latency.len(), new_histogram);
        }
        for (merged, h) in self.latency.iter_mut().zip(&handler.latency) {
            // Histograms with the same bounds always merge.
            let _ = merged.add(h);
        }
        self.timeline.merge(&handler.timeline);
        self.last_delivery = self.last_delivery.max(handler.last_delivery_nanos);
    }

    fn latency_summary(&self) -> LatencySummary {
        let mut all = new_histogram();
        for h in &self.latency {
            let _ = all.add(h);
        }
        LatencySummary::from_histogram(&all)
    }
}

/// Named stretches of the run by send time, each ending at an offset from the start of
/// publishing. The last one also takes everything sent after its end.
#[derive(Debug)]
pub(crate) struct Phases {
    names: Vec<String>,
    ends: Vec<Duration>,
}

impl Phases {
    fn new(phases: &[(String, f64)], run: Duration) -> Phases {
        if phases.is_empty() {
            return Phases {
                names: vec!["run".to_owned()],
                ends: vec![run],
            };
        }
        Phases {
            names: phases.iter().map(|(n, _)| n.clone()).collect(),
            ends: phases
                .iter()
                .map(|&(_, end)| Duration::from_secs_f64(end))
                .collect(),
        }
    }

    fn len(&self) -> usize {
        self.names.len()
    }

    /// Returns the phase of a message sent `since_start` nanoseconds after publishing started.
    fn index(&self, since_start: u64) -> usize {
        let at = Duration::from_nanos(since_start);
        self.ends
            .iter()
            .position(|&end| at < end)
            .unwrap_or(self.len() - 1)
    }
}

/// Checks and times what the subscribers of one pool thread (or one slow subscriber) receive.
pub(crate) struct CheckHandler {
    shared: Arc<LoadShared>,
    phases: Arc<Phases>,
    class: usize,
    checks: Vec<SubscriberCheck>,
    /// Latencies per phase.
    latency: Vec<Histogram<u64>>,
    /// Latencies per second of delivery time.
    timeline: Timeline,
    /// First-time deliveries not yet added to the shared counter.
    pending: u64,
    last_delivery_nanos: Option<u64>,
}

impl CheckHandler {
    pub(crate) fn new(
        shared: Arc<LoadShared>,
        phases: Arc<Phases>,
        class: usize,
        topics: Vec<usize>,
        publishers: usize,
    ) -> CheckHandler {
        let latency = (0..phases.len()).map(|_| new_histogram()).collect();
        CheckHandler {
            shared,
            phases,
            class,
            checks: topics
                .into_iter()
                .map(|t| SubscriberCheck::new(t, publishers))
                .collect(),
            latency,
            timeline: Timeline::default(),
            pending: 0,
            last_delivery_nanos: None,
        }
    }
}

impl Handler for CheckHandler {
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
        let start = shared.start_nanos();
        let latency = now.saturating_sub(stamp.sent_nanos);
        let phase = self.phases.index(stamp.sent_nanos.saturating_sub(start));
        record_latency(&mut self.latency[phase], latency);
        self.timeline.record(now.saturating_sub(start), latency);
        self.pending += 1;
        self.last_delivery_nanos = Some(now);
    }

    fn end_iteration(&mut self) {
        if self.pending > 0 {
            self.shared
                .delivered
                .fetch_add(self.pending, std::sync::atomic::Ordering::Relaxed);
            self.pending = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_broker::{FakeBroker, Fault};

    /// Builds a plan of two seconds at 500 messages per second to `subscribers` subscribers of
    /// the fake broker's single topic.
    fn plan(broker: &FakeBroker, subscribers: usize) -> LoadPlan {
        let target = TargetArgs {
            server: broker.addr(),
            broker: BrokerKind::Chorus,
            mqtt_qos: 0,
            broker_pid: Some(std::process::id()),
            connect_timeout: 5.0,
            topic_prefix: Some("bench/test".to_owned()),
            json: true,
            out: None,
        };
        let load = LoadArgs {
            payload_size: 64,
            max_in_flight: 100,
            max_lag: 0,
            drain_timeout: 2.0,
            sub_threads: 2,
        };
        LoadPlan {
            scenario: "fanout",
            target,
            load,
            topics: 1,
            subscribers,
            publishers: 1,
            schedule: RateSchedule::steady(Some(500.0), 2.0),
            phases: Vec::new(),
            slow: None,
            parameters: serde_json::Value::Null,
        }
    }

    #[test]
    fn clean_fanout_delivers_everything() {
        let broker = FakeBroker::start(Fault::None);
        let report = execute(&plan(&broker, 3)).unwrap();
        assert!(report.passed, "{}", load_text(&report));
        assert_eq!(report.published, 1000);
        assert_eq!(report.confirmed, 1000);
        assert_eq!(report.delivered, 3000);
        assert_eq!(report.publish_deliver_ms.count, 3000);
    }

    #[test]
    fn timeline_counts_every_delivery() {
        let broker = FakeBroker::start(Fault::None);
        let report = execute(&plan(&broker, 3)).unwrap();
        let total: u64 = report.timeline.iter().map(|e| e.deliveries).sum();
        assert_eq!(total, 3000);
        // Two seconds of publishing at 500/s deliver in seconds 0 and 1, perhaps a few in 2.
        assert!(report.timeline.len() >= 2, "{:?}", report.timeline);
        assert!(report.timeline.len() <= 3, "{:?}", report.timeline);
        let fast = report.classes.iter().find(|c| c.class == "fast").unwrap();
        assert!(fast.timeline.is_none());
    }

    #[test]
    fn dropped_message_counts_loss_and_gap() {
        let broker = FakeBroker::start(Fault::Drop(5));
        let report = execute(&plan(&broker, 2)).unwrap();
        assert!(!report.passed);
        assert_eq!(report.losses, 2);
        assert_eq!(report.offset_gaps, 2);
        assert_eq!(report.delivered, 2 * 999);
    }

    #[test]
    fn repeated_message_is_a_duplicate() {
        let broker = FakeBroker::start(Fault::Duplicate(3));
        let report = execute(&plan(&broker, 2)).unwrap();
        assert!(!report.passed);
        assert_eq!(report.duplicates, 2);
        assert_eq!(report.losses, 0);
    }

    #[test]
    fn slow_subscribers_are_checked_too() {
        let broker = FakeBroker::start(Fault::None);
        let mut plan = plan(&broker, 2);
        let reading = SlowReading {
            rcvbuf: 4096,
            read_bytes: 512,
            delay: Duration::from_millis(1),
            from: Duration::from_millis(500),
            until: Duration::from_millis(1500),
        };
        plan.slow = Some((1, reading));
        plan.phases = vec![("without slow".into(), 1.0), ("with slow".into(), 2.0)];
        let report = execute(&plan).unwrap();
        assert!(report.passed, "{}", load_text(&report));
        let slow = report.classes.iter().find(|c| c.class == "slow").unwrap();
        assert_eq!(slow.counts.delivered, 1000);
        let slow_timeline = slow.timeline.as_ref().unwrap();
        let slow_total: u64 = slow_timeline.iter().map(|e| e.deliveries).sum();
        assert_eq!(slow_total, 1000);
        assert_eq!(report.phases.len(), 4);
    }

    #[test]
    fn phases_split_by_send_time() {
        let phases = Phases::new(
            &[
                ("before".into(), 1.0),
                ("spike".into(), 2.0),
                ("after".into(), 3.0),
            ],
            Duration::from_secs(3),
        );
        assert_eq!(phases.index(0), 0);
        assert_eq!(phases.index(1_500_000_000), 1);
        assert_eq!(phases.index(9_000_000_000), 2);
    }

    #[test]
    fn no_phases_is_one_run_phase() {
        let phases = Phases::new(&[], Duration::from_secs(3));
        assert_eq!(phases.len(), 1);
        assert_eq!(phases.index(5_000_000_000), 0);
    }
}
