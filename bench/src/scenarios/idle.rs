//! `idle`: many connections, each subscribed to a topic and otherwise silent, to measure the
//! broker's memory per connection: (RSS with the connections - RSS before) / connections.

use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::ensure;
use bytes::Bytes;
use clap::Args;
use serde::Serialize;

use super::pool::{Handler, Pool, PoolCounters, PoolSpec};
use super::procfs::{self, ProcessSample, SockStat};
use super::proto::{BrokerKind, SessionConfig};
use super::render::write_errors;
use super::sockets::{self, FileLimit};
use super::{now_rfc3339, positive_secs, print_result, TargetArgs};
use crate::report::round_to;

/// Arguments of `chorus-bench idle`.
#[derive(Debug, Clone, Args, Serialize)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    pub(crate) target: TargetArgs,

    /// Idle connections to open.
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    pub(crate) connections: usize,

    /// Topics the connections subscribe to, spread evenly.
    #[arg(long, value_name = "T", default_value_t = 1)]
    pub(crate) topics: usize,

    /// Threads that drive the connections.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub(crate) threads: usize,

    /// Connections per thread between connect and confirmed subscription at once.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub(crate) max_connecting: usize,

    /// Seconds allowed for opening every connection.
    #[arg(long, value_name = "SECS", default_value_t = 180.0)]
    pub(crate) ramp_timeout: f64,

    /// Seconds between opening the last connection and measuring the broker's memory.
    #[arg(long, value_name = "SECS", default_value_t = 3.0)]
    pub(crate) settle: f64,

    /// Seconds to keep the connections open after the first measurement, answering the
    /// broker's keepalives, before measuring again. chorusd pings a connection after half its
    /// idle timeout (30 s by default), so a hold of 35 s or more includes a ping to every one.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub(crate) hold: f64,
}

/// Outcome of an idle run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct IdleReport {
    pub(crate) scenario: &'static str,
    pub(crate) date: String,
    pub(crate) broker: BrokerKind,
    pub(crate) mqtt_qos: Option<u8>,
    pub(crate) server: String,
    pub(crate) parameters: serde_json::Value,
    pub(crate) requested: usize,
    /// Connections tried: the requested number, or fewer when the open-file limit is lower.
    pub(crate) attempted: usize,
    /// Connections whose subscription was confirmed.
    pub(crate) established: u64,
    pub(crate) failed: u64,
    /// Established connections closed before the end of the hold.
    pub(crate) lost: u64,
    /// Why fewer connections were tried than requested.
    pub(crate) limited_by: Option<String>,
    pub(crate) bench_file_limit: FileLimit,
    pub(crate) broker_file_limit: Option<u64>,
    pub(crate) ramp_secs: f64,
    pub(crate) connections_per_sec: f64,
    pub(crate) broker_pid: Option<u32>,
    pub(crate) broker_rss_before_kib: Option<u64>,
    pub(crate) broker_rss_connected_kib: Option<u64>,
    pub(crate) broker_rss_held_kib: Option<u64>,
    pub(crate) broker_rss_closed_kib: Option<u64>,
    pub(crate) broker_hwm_kib: Option<u64>,
    /// (RSS after connecting - RSS before) / established connections.
    pub(crate) bytes_per_connection: Option<f64>,
    /// The same with the RSS at the end of the hold.
    pub(crate) bytes_per_connection_held: Option<f64>,
    pub(crate) broker_cpu_ramp_secs: Option<f64>,
    pub(crate) broker_cpu_hold_secs: Option<f64>,
    /// Growth of the kernel's TCP buffer memory, both ends of every loopback connection.
    pub(crate) kernel_tcp_mem_kib: i64,
    pub(crate) kernel_tcp_sockets: i64,
    /// Keepalive pings the broker sent during the run and the bench answered.
    pub(crate) pings_answered: u64,
    pub(crate) hold_secs: f64,
    pub(crate) errors: Vec<String>,
    pub(crate) passed: bool,
}

/// Counts messages, which idle subscribers should not get.
struct IdleHandler {
    messages: u64,
}

impl Handler for IdleHandler {
    fn on_ready(&mut self, _slot: usize, _start: Option<u64>) {}

    fn on_message(&mut self, _slot: usize, _payload: &Bytes, _offset: Option<u64>) {
        self.messages += 1;
    }
}

/// Broker samples at the moments an idle run measures.
#[derive(Default)]
struct Samples {
    before: Option<ProcessSample>,
    ramped: Option<ProcessSample>,
    connected: Option<ProcessSample>,
    held: Option<ProcessSample>,
    closed: Option<ProcessSample>,
}

/// Runs the scenario and prints its report; returns whether every connection was established
/// and kept.
pub(crate) fn run(args: IdleArgs) -> anyhow::Result<bool> {
    let report = execute(&args)?;
    let text = idle_text(&report);
    print_result(&report, &text, args.target.json, args.target.out.as_deref())?;
    Ok(report.passed)
}

fn execute(args: &IdleArgs) -> anyhow::Result<IdleReport> {
    ensure!(args.connections >= 1, "--connections must be at least 1");
    ensure!(args.topics >= 1, "--topics must be at least 1");
    let ramp_timeout = positive_secs("--ramp-timeout", args.ramp_timeout)?;
    let settle = Duration::from_secs_f64(positive_secs("--settle", args.settle)?);
    ensure!(
        args.hold.is_finite() && args.hold >= 0.0,
        "--hold must be a number of seconds >= 0"
    );
    let date = now_rfc3339();
    let server = sockets::resolve(&args.target.server)?;
    let connect_timeout = args.target.connect_timeout()?;

    let mut errors = Vec::new();
    let file_limit = sockets::raise_file_limit()?;
    let (attempted, limited_by) = cap_by_file_limit(args.connections, file_limit);
    if let Some(reason) = &limited_by {
        eprintln!("warning: {reason}");
        errors.push(reason.clone());
    }
    let broker_pid = args.target.find_broker_pid(server);
    let broker_file_limit = broker_pid.and_then(procfs::open_file_limit);
    if let Some(limit) = broker_file_limit.filter(|&l| (l as usize) < attempted) {
        let message = format!(
            "the broker's open-file limit is {limit}, below the {attempted} connections tried"
        );
        eprintln!("warning: {message}");
        errors.push(message);
    }

    let names = args.target.topic_names("idle", args.topics);
    let client_name = format!("cb{}", std::process::id());
    let session = SessionConfig::new(
        args.target.broker,
        &names,
        args.target.mqtt_qos,
        client_name,
    )?;
    let spec = PoolSpec {
        server,
        session,
        topic_of: (0..attempted).map(|i| i % args.topics).collect(),
        first_id: 0,
        threads: args.threads.max(1),
        max_connecting: args.max_connecting.max(1),
        connect_timeout,
    };

    let sample = |pid: Option<u32>| pid.and_then(|p| procfs::sample(p).ok());
    let mut samples = Samples {
        before: sample(broker_pid),
        ..Samples::default()
    };
    let sockets_before = procfs::sockstat();

    let ramp_start = Instant::now();
    let pool = Pool::start(spec, |_, _| IdleHandler { messages: 0 })?;
    let deadline = ramp_start + Duration::from_secs_f64(ramp_timeout);
    let mut last_report = Instant::now();
    let established = pool.wait_settled(deadline, |ready| {
        if last_report.elapsed() >= Duration::from_secs(5) {
            eprintln!("idle: {ready} of {attempted} connections ready");
            last_report = Instant::now();
        }
    });
    let ramp_secs = ramp_start.elapsed().as_secs_f64();
    samples.ramped = sample(broker_pid);
    eprintln!("idle: {established} of {attempted} connections ready after {ramp_secs:.1} s");

    thread::sleep(settle);
    samples.connected = sample(broker_pid);
    let sockets_connected = procfs::sockstat();
    thread::sleep(Duration::from_secs_f64(args.hold));
    samples.held = sample(broker_pid);

    let counters = pool.counters();
    let failed = PoolCounters::get(&counters.failed);
    let lost = PoolCounters::get(&counters.lost);
    let pings = PoolCounters::get(&counters.pings);
    let (messages, more) = counters.errors();
    errors.extend(messages);
    if more > 0 {
        errors.push(format!("{more} more connection errors"));
    }
    let handlers = pool.stop();
    let unexpected: u64 = handlers.iter().map(|h| h.messages).sum();
    if unexpected > 0 {
        errors.push(format!("{unexpected} messages arrived on idle connections"));
    }
    thread::sleep(settle);
    samples.closed = sample(broker_pid);

    let mut report = IdleReport {
        scenario: "idle",
        date,
        broker: args.target.broker,
        mqtt_qos: (args.target.broker == BrokerKind::Mqtt).then_some(args.target.mqtt_qos),
        server: args.target.server.clone(),
        parameters: serde_json::to_value(args)?,
        requested: args.connections,
        attempted,
        established,
        failed,
        lost,
        limited_by,
        bench_file_limit: file_limit,
        broker_file_limit,
        ramp_secs: round_to(ramp_secs, 2),
        connections_per_sec: round_to(established as f64 / ramp_secs.max(1e-9), 1),
        broker_pid,
        broker_rss_before_kib: samples.before.map(|s| s.rss_kib),
        broker_rss_connected_kib: samples.connected.map(|s| s.rss_kib),
        broker_rss_held_kib: samples.held.map(|s| s.rss_kib),
        broker_rss_closed_kib: samples.closed.map(|s| s.rss_kib),
        broker_hwm_kib: samples.closed.or(samples.held).map(|s| s.hwm_kib),
        bytes_per_connection: per_connection(samples.before, samples.connected, established),
        bytes_per_connection_held: per_connection(samples.before, samples.held, established),
        broker_cpu_ramp_secs: cpu_between(samples.before, samples.ramped),
        broker_cpu_hold_secs: cpu_between(samples.connected, samples.held),
        kernel_tcp_mem_kib: kernel_growth_kib(sockets_before, sockets_connected),
        kernel_tcp_sockets: sockets_connected.tcp_inuse as i64 - sockets_before.tcp_inuse as i64,
        pings_answered: pings,
        hold_secs: args.hold,
        errors,
        passed: false,
    };
    report.passed =
        report.established == args.connections as u64 && report.lost == 0 && unexpected == 0;
    Ok(report)
}

/// Returns how many connections to try given this process's open-file limit, and why it is
/// fewer than requested when it is.
fn cap_by_file_limit(requested: usize, limit: FileLimit) -> (usize, Option<String>) {
    let available = limit.connections() as usize;
    if requested <= available {
        return (requested, None);
    }
    let reason = format!(
        "the bench's open-file limit is {} (hard limit {}), so it holds at most {available} of \
         the {requested} connections requested; raising the hard limit needs CAP_SYS_RESOURCE \
         (root outside a restricted container, or LimitNOFILE in systemd)",
        limit.soft, limit.hard
    );
    (available, Some(reason))
}

fn per_connection(
    before: Option<ProcessSample>,
    after: Option<ProcessSample>,
    connections: u64,
) -> Option<f64> {
    let (before, after) = (before?, after?);
    if connections == 0 {
        return None;
    }
    let growth = after.rss_kib as f64 - before.rss_kib as f64;
    Some(round_to(growth * 1024.0 / connections as f64, 1))
}

fn cpu_between(start: Option<ProcessSample>, end: Option<ProcessSample>) -> Option<f64> {
    let ticks = end?.cpu_ticks.saturating_sub(start?.cpu_ticks);
    Some(round_to(
        ticks as f64 / rustix::param::clock_ticks_per_second().max(1) as f64,
        2,
    ))
}

fn kernel_growth_kib(before: SockStat, after: SockStat) -> i64 {
    let page_kib = (rustix::param::page_size() / 1024) as i64;
    (after.tcp_mem_pages as i64 - before.tcp_mem_pages as i64) * page_kib
}

/// Renders an idle report for people.
pub(crate) fn idle_text(r: &IdleReport) -> String {
    let mut out = String::new();
    let qos = r.mqtt_qos.map_or(String::new(), |q| format!(" QoS {q}"));
    let kib = |v: Option<u64>| v.map_or("-".to_owned(), |v| format!("{v} KiB"));
    let _ = writeln!(out, "idle against {}{qos} at {}", r.broker, r.server);
    let _ = writeln!(
        out,
        "connections  {} established of {} tried ({} requested), {} failed, {} lost",
        r.established, r.attempted, r.requested, r.failed, r.lost
    );
    let _ = writeln!(
        out,
        "ramp         {:.2} s ({:.0} connections/s)",
        r.ramp_secs, r.connections_per_sec
    );
    let _ = writeln!(
        out,
        "broker RSS   before {}, connected {}, after {:.0} s hold {}, closed {}, peak {}",
        kib(r.broker_rss_before_kib),
        kib(r.broker_rss_connected_kib),
        r.hold_secs,
        kib(r.broker_rss_held_kib),
        kib(r.broker_rss_closed_kib),
        kib(r.broker_hwm_kib)
    );
    let per = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.0} bytes"));
    let _ = writeln!(
        out,
        "per conn     {} connected, {} after the hold",
        per(r.bytes_per_connection),
        per(r.bytes_per_connection_held)
    );
    let _ = writeln!(
        out,
        "kernel TCP   {:+} KiB of buffers, {:+} sockets (both ends of loopback connections)",
        r.kernel_tcp_mem_kib, r.kernel_tcp_sockets
    );
    let cpu = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.2} s"));
    let _ = writeln!(
        out,
        "broker CPU   {} while connecting, {} during the hold; {} keepalive pings answered",
        cpu(r.broker_cpu_ramp_secs),
        cpu(r.broker_cpu_hold_secs),
        r.pings_answered
    );
    write_errors(&mut out, &r.errors);
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "result       {verdict}");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rss_kib: u64) -> Option<ProcessSample> {
        Some(ProcessSample {
            cpu_ticks: 0,
            rss_kib,
            hwm_kib: rss_kib,
            threads: 1,
        })
    }

    #[test]
    fn per_connection_in_bytes() {
        assert_eq!(
            per_connection(sample(1000), sample(2000), 1024),
            Some(1000.0)
        );
        assert_eq!(per_connection(sample(1000), sample(2000), 0), None);
        assert_eq!(per_connection(None, sample(2000), 10), None);
    }

    #[test]
    fn file_limit_caps_connections() {
        let limit = FileLimit {
            soft: 20_000,
            hard: 20_000,
        };
        let (tried, reason) = cap_by_file_limit(100_000, limit);
        assert_eq!(tried, 20_000 - sockets::SPARE_DESCRIPTORS as usize);
        assert!(reason.unwrap().contains("hard limit 20000"));
        assert_eq!(cap_by_file_limit(10, limit), (10, None));
    }
}
