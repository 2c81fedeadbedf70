//! Results of the load scenarios, as JSON and as text.

use std::fmt::Write as _;

use serde::Serialize;

use super::check::DeliveryCounts;
use super::machine::Machine;
use super::procfs::ProcessUsage;
use super::proto::BrokerKind;
use super::timeline::TimelineEntry;
use crate::report::LatencySummary;

/// Deliveries of one class of subscribers within one phase of the run, by send time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PhaseReport {
    pub(crate) phase: String,
    /// `fast` or `slow` subscribers.
    pub(crate) class: &'static str,
    /// Start and end of the phase, in seconds since publishing started.
    pub(crate) from_secs: f64,
    pub(crate) to_secs: f64,
    /// First-time deliveries of messages sent within the phase.
    pub(crate) deliveries: u64,
    /// Those deliveries divided by the phase's length.
    pub(crate) delivered_per_sec: f64,
    pub(crate) publish_deliver_ms: LatencySummary,
}

/// Delivery checks of one class of subscribers.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClassReport {
    pub(crate) class: &'static str,
    pub(crate) subscribers: usize,
    /// Deliveries due: every message sent to a subscriber's topic and not rejected, summed
    /// over subscribers.
    pub(crate) expected: u64,
    /// Deliveries due that never arrived.
    pub(crate) losses: u64,
    #[serde(flatten)]
    pub(crate) counts: DeliveryCounts,
    pub(crate) publish_deliver_ms: LatencySummary,
    /// Deliveries per second of delivery time; absent for the fast subscribers, whose
    /// timeline is the report's `timeline`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) timeline: Option<Vec<TimelineEntry>>,
}

/// Outcome of one load run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadReport {
    pub(crate) scenario: &'static str,
    /// Start of the run, RFC 3339 in UTC.
    pub(crate) date: String,
    /// The machine the bench ran on, which for loopback runs is also the broker's.
    pub(crate) machine: Machine,
    pub(crate) broker: BrokerKind,
    /// MQTT quality of service; absent for other brokers.
    pub(crate) mqtt_qos: Option<u8>,
    pub(crate) server: String,
    pub(crate) parameters: serde_json::Value,
    pub(crate) topics: usize,
    pub(crate) publishers: usize,
    /// From the start of publishing to the last publish.
    pub(crate) publish_secs: f64,
    /// From the start of publishing to the last delivery, or to the end of the wait when
    /// deliveries were missing.
    pub(crate) duration_secs: f64,
    pub(crate) published: u64,
    pub(crate) published_per_sec: f64,
    /// Publishes confirmed by their own reply or by a later barrier's reply.
    pub(crate) confirmed: u64,
    /// Per-publish replies received; 0 for brokers that send none.
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) expected: u64,
    pub(crate) delivered: u64,
    /// First-time deliveries per second over all subscribers.
    pub(crate) delivered_per_sec: f64,
    pub(crate) losses: u64,
    pub(crate) duplicates: u64,
    pub(crate) out_of_order: u64,
    pub(crate) unknown: u64,
    pub(crate) offset_gaps: u64,
    /// From handing a publish to the socket to reading its reply; absent for brokers that
    /// reply to no publish.
    pub(crate) publish_ack_ms: Option<LatencySummary>,
    /// From handing a publish to the socket to a fast subscriber reading it.
    pub(crate) publish_deliver_ms: LatencySummary,
    pub(crate) classes: Vec<ClassReport>,
    pub(crate) phases: Vec<PhaseReport>,
    /// The fast subscribers' deliveries per second of delivery time, from the start of
    /// publishing to the last delivery.
    pub(crate) timeline: Vec<TimelineEntry>,
    pub(crate) broker_process: Option<ProcessUsage>,
    /// The bench's own CPU time and memory over the same interval.
    pub(crate) bench_process: Option<ProcessUsage>,
    pub(crate) errors: Vec<String>,
    /// Whether nothing was lost, repeated, reordered, unknown, rejected or left unconfirmed,
    /// and no connection failed.
    pub(crate) passed: bool,
}

impl LoadReport {
    pub(crate) fn judge(&mut self) {
        self.passed = self.losses == 0
            && self.duplicates == 0
            && self.out_of_order == 0
            && self.unknown == 0
            && self.rejected == 0
            && self.confirmed == self.published
            && self.errors.is_empty();
    }
}

// Writing into a String cannot fail, so the `fmt::Result`s below are ignored.

/// Renders a load report for people.
pub(crate) fn load_text(r: &LoadReport) -> String {
    let mut out = String::new();
    write_counts(&mut out, r);
    write_latencies(&mut out, r);
    write_phases(&mut out, r);
    write_processes(&mut out, r);
    write_checks(&mut out, r);
    write_errors(&mut out, &r.errors);

    let verdict = if r.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "result       {verdict}");
    out
}

fn write_counts(out: &mut String, r: &LoadReport) {
    let qos = r.mqtt_qos.map_or(String::new(), |q| format!(" QoS {q}"));
    let _ = writeln!(
        out,
        "{} against {}{qos} at {}: {} topic(s), {} publisher(s)",
        r.scenario, r.broker, r.server, r.topics, r.publishers
    );
    let _ = writeln!(
        out,
        "published    {} in {:.3} s ({:.1}/s), confirmed {}, acked {}, rejected {}",
        r.published, r.publish_secs, r.published_per_sec, r.confirmed, r.acked, r.rejected
    );
    let _ = writeln!(
        out,
        "delivered    {} of {} in {:.3} s ({:.1}/s across subscribers)",
        r.delivered, r.expected, r.duration_secs, r.delivered_per_sec
    );
}

fn write_latencies(out: &mut String, r: &LoadReport) {
    let _ = writeln!(
        out,
        "latency ms               p50       p95       p99       max"
    );
    if let Some(ack) = &r.publish_ack_ms {
        write_latency(out, "publish->ack", ack);
    }
    write_latency(out, "publish->deliver", &r.publish_deliver_ms);
    for class in r.classes.iter().filter(|c| c.class != "fast") {
        let name = format!("  {} subscribers", class.class);
        write_latency(out, &name, &class.publish_deliver_ms);
    }
}

fn write_checks(out: &mut String, r: &LoadReport) {
    let _ = writeln!(
        out,
        "checks       losses {}, duplicates {}, out of order {}, unknown {}, offset gaps {}",
        r.losses, r.duplicates, r.out_of_order, r.unknown, r.offset_gaps
    );
    for class in r.classes.iter().filter(|c| c.class != "fast") {
        let _ = writeln!(
            out,
            "  {} subscribers: {} of {} delivered, losses {}, duplicates {}",
            class.class,
            class.counts.delivered,
            class.expected,
            class.losses,
            class.counts.duplicates
        );
    }
}

fn write_phases(out: &mut String, r: &LoadReport) {
    if r.phases.len() < 2 && r.classes.len() < 2 {
        return;
    }
    let _ = writeln!(
        out,
        "phases (by send time)   p50       p95       p99       max   delivered/s"
    );
    for p in &r.phases {
        let name = format!(
            "{} {} {:.0}-{:.0}s",
            p.phase, p.class, p.from_secs, p.to_secs
        );
        let l = &p.publish_deliver_ms;
        let _ = writeln!(
            out,
            "  {name:<20} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12.1}",
            l.p50, l.p95, l.p99, l.max, p.delivered_per_sec
        );
    }
}

fn write_processes(out: &mut String, r: &LoadReport) {
    for (name, usage) in [("broker", &r.broker_process), ("bench", &r.bench_process)] {
        if let Some(u) = usage {
            let _ = writeln!(
                out,
                "{name:<12} pid {}: CPU {:.2} s ({:.0}% of one core), RSS {} -> {} KiB, peak {} KiB",
                u.pid, u.cpu_secs, u.cpu_percent, u.rss_start_kib, u.rss_end_kib, u.hwm_kib
            );
        }
    }
}

pub(crate) fn write_errors(out: &mut String, errors: &[String]) {
    for e in errors {
        let _ = writeln!(out, "error        {e}");
    }
}

fn write_latency(out: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<20} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        l.p50, l.p95, l.p99, l.max
    );
}
