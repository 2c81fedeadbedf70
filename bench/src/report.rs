//! Latency histograms and the run summary, as JSON and as text.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::chatlog::LogFormat;
use crate::checker::Counts;
use crate::pacing::Speed;
use crate::synthetic::SyntheticConfig;

/// Highest latency a histogram tracks, in microseconds (one hour); larger values are clamped.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// Returns an empty latency histogram in microseconds with three significant digits.
pub(crate) fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low >= 1, high >= 2 * low, sigfig <= 5).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Records a latency given in nanoseconds.
pub(crate) fn record_latency(histogram: &mut Histogram<u64>, nanos: u64) {
    let micros = (nanos / 1_000).clamp(1, MAX_LATENCY_US);
    histogram.saturating_record(micros);
}

/// Latency percentiles in milliseconds, rounded to microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub(crate) struct LatencySummary {
    pub(crate) count: u64,
    pub(crate) p50: f64,
    pub(crate) p95: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl LatencySummary {
    pub(crate) fn from_histogram(histogram: &Histogram<u64>) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1_000.0;
        LatencySummary {
            count: histogram.len(),
            p50: ms(histogram.value_at_quantile(0.50)),
            p95: ms(histogram.value_at_quantile(0.95)),
            p99: ms(histogram.value_at_quantile(0.99)),
            max: ms(histogram.max()),
        }
    }
}

/// The command's parameters as recorded in the JSON summary.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Parameters {
    pub(crate) server: String,
    pub(crate) topic: String,
    /// `log` or `synthetic`.
    pub(crate) source: &'static str,
    pub(crate) log: Option<String>,
    pub(crate) format: Option<LogFormat>,
    pub(crate) synthetic: Option<SyntheticConfig>,
    pub(crate) speed: Speed,
    pub(crate) limit: Option<usize>,
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    pub(crate) max_in_flight: u64,
    pub(crate) timeout_secs: f64,
}

/// Comments one subscriber never received.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Missing {
    pub(crate) subscriber: usize,
    pub(crate) count: u64,
    /// The lowest missing comment indices.
    pub(crate) first_indices: Vec<usize>,
}

/// Outcome of one replay run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    /// Start of the run, RFC 3339 in UTC.
    pub(crate) date: String,
    /// Server name and version from the broker's WELCOME.
    pub(crate) server_name: String,
    pub(crate) parameters: Parameters,
    pub(crate) comments: u64,
    pub(crate) publishers: usize,
    pub(crate) subscribers: usize,
    /// From the start of publishing to the last delivery, or to the end of the wait.
    pub(crate) duration_secs: f64,
    /// From the start of publishing to the last publish handed to the client library.
    pub(crate) publish_secs: f64,
    pub(crate) published: u64,
    pub(crate) published_per_sec: f64,
    /// From the start of publishing to the last ack.
    pub(crate) ack_secs: f64,
    /// Acks per second; unlike `published_per_sec` it does not count publishes still buffered.
    pub(crate) acked_per_sec: f64,
    /// First-time deliveries per second, added up over subscribers.
    pub(crate) delivered_per_sec: f64,
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) unacked: u64,
    pub(crate) publish_ack_ms: LatencySummary,
    pub(crate) publish_deliver_ms: LatencySummary,
    #[serde(flatten)]
    pub(crate) counts: Counts,
    /// Comments not delivered, added up over subscribers.
    pub(crate) missing: u64,
    pub(crate) missing_by_subscriber: Vec<Missing>,
    pub(crate) errors: Vec<String>,
    /// Whether every check held: nothing lost, repeated, reordered, altered, rejected, missing,
    /// unacknowledged, and no connection error.
    pub(crate) passed: bool,
}

impl Summary {
    /// Sets `passed` from the counters.
    pub(crate) fn judge(&mut self) {
        self.passed = !self.counts.has_failures()
            && self.rejected == 0
            && self.unacked == 0
            && self.missing == 0
            && self.published == self.comments
            && self.errors.is_empty();
    }
}

/// Returns `count / secs`, or 0 for an empty interval.
pub(crate) fn per_sec(count: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        round_to(count as f64 / secs, 1)
    } else {
        0.0
    }
}

/// Rounds `value` to `decimals` decimal places.
pub(crate) fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Renders the summary for people.
pub(crate) fn render_text(s: &Summary) -> String {
    let mut out = String::new();
    write_throughput(&mut out, s);
    let _ = writeln!(
        out,
        "latency ms           p50       p95       p99       max"
    );
    write_latency(&mut out, "publish->ack", &s.publish_ack_ms);
    write_latency(&mut out, "publish->deliver", &s.publish_deliver_ms);
    write_checks(&mut out, s);
    out
}

// Writing into a String cannot fail, so the `fmt::Result`s below are ignored.

fn write_throughput(out: &mut String, s: &Summary) {
    let p = &s.parameters;
    let _ = writeln!(
        out,
        "replay of {} comments on topic {} at {} ({}), speed {}",
        s.comments, p.topic, p.server, s.server_name, p.speed
    );
    let _ = writeln!(
        out,
        "  {} publisher(s), {} subscriber(s), in-flight limit {}",
        s.publishers, s.subscribers, p.max_in_flight
    );
    let _ = writeln!(
        out,
        "duration     {:.3} s (publishing {:.3} s)",
        s.duration_secs, s.publish_secs
    );
    let _ = writeln!(
        out,
        "published    {} ({:.1}/s), acked {} ({:.1}/s), rejected {}, unacked {}",
        s.published, s.published_per_sec, s.acked, s.acked_per_sec, s.rejected, s.unacked
    );
    let _ = writeln!(
        out,
        "delivered    {} ({:.1}/s across subscribers)",
        s.counts.delivered, s.delivered_per_sec
    );
}

fn write_checks(out: &mut String, s: &Summary) {
    let c = &s.counts;
    let _ = writeln!(
        out,
        "checks       losses {}, duplicates {}, out of order {}, wrong text {}, unknown {}, \
         missing {}",
        c.losses, c.duplicates, c.out_of_order, c.wrong_text, c.unknown, s.missing
    );
    for m in &s.missing_by_subscriber {
        let _ = writeln!(
            out,
            "  subscriber {} missed {} comment(s), first indices {:?}",
            m.subscriber, m.count, m.first_indices
        );
    }
    for e in &s.errors {
        let _ = writeln!(out, "error        {e}");
    }
    let verdict = if s.passed { "PASS" } else { "FAIL" };
    let _ = writeln!(out, "result       {verdict}");
}

fn write_latency(out: &mut String, name: &str, l: &LatencySummary) {
    let _ = writeln!(
        out,
        "  {name:<16} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        l.p50, l.p95, l.p99, l.max
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_in_milliseconds() {
        let mut h = new_histogram();
        for micros in 1..=1000u64 {
            record_latency(&mut h, micros * 1_000);
        }
        let s = LatencySummary::from_histogram(&h);
        assert_eq!(s.count, 1000);
        assert_eq!(s.p50, 0.5);
        assert_eq!(s.max, 1.0);
    }

    #[test]
    fn sub_microsecond_latency_counts_as_one() {
        let mut h = new_histogram();
        record_latency(&mut h, 10);
        assert_eq!(h.max(), 1);
    }

    #[test]
    fn empty_histogram_gives_zeros() {
        let s = LatencySummary::from_histogram(&new_histogram());
        assert_eq!(s, LatencySummary::default());
    }

    fn summary() -> Summary {
        let parameters = Parameters {
            server: "127.0.0.1:7400".to_owned(),
            topic: "bench/replay-1".to_owned(),
            source: "synthetic",
            log: None,
            format: None,
            synthetic: None,
            speed: Speed::Max,
            limit: Some(10),
            publishers: 1,
            subscribers: 2,
            max_in_flight: 100,
            timeout_secs: 10.0,
        };
        Summary {
            date: "2026-01-01T00:00:00Z".to_owned(),
            server_name: "chorusd/0.1.0".to_owned(),
            parameters,
            comments: 10,
            publishers: 1,
            subscribers: 2,
            duration_secs: 1.0,
            publish_secs: 0.5,
            published: 10,
            published_per_sec: 20.0,
            ack_secs: 0.5,
            acked_per_sec: 20.0,
            delivered_per_sec: 20.0,
            acked: 10,
            rejected: 0,
            unacked: 0,
            publish_ack_ms: LatencySummary::default(),
            publish_deliver_ms: LatencySummary::default(),
            counts: Counts {
                delivered: 20,
                ..Counts::default()
            },
            missing: 0,
            missing_by_subscriber: Vec::new(),
            errors: Vec::new(),
            passed: false,
        }
    }

    #[test]
    fn clean_summary_passes() {
        let mut s = summary();
        s.judge();
        assert!(s.passed);
    }

    #[test]
    fn each_failure_fails_summary() {
        let failures: [fn(&mut Summary); 7] = [
            |s| s.rejected = 1,
            |s| s.unacked = 1,
            |s| s.missing = 1,
            |s| s.published = 9,
            |s| s.counts.losses = 1,
            |s| s.counts.wrong_text = 1,
            |s| s.errors.push("subscriber 0: closed".to_owned()),
        ];
        for (n, fail) in failures.iter().enumerate() {
            let mut s = summary();
            fail(&mut s);
            s.judge();
            assert!(!s.passed, "failure case {n} passed");
        }
    }

    #[test]
    fn json_has_flat_counters_and_parameters() {
        let json = serde_json::to_value(summary()).unwrap();
        assert_eq!(json["delivered"], 20);
        assert_eq!(json["losses"], 0);
        assert_eq!(json["out_of_order"], 0);
        assert_eq!(json["publish_ack_ms"]["p99"], 0.0);
        assert_eq!(json["parameters"]["speed"], "max");
        assert_eq!(json["parameters"]["limit"], 10);
    }

    #[test]
    fn text_names_verdict_and_counters() {
        let mut s = summary();
        s.counts.duplicates = 3;
        s.judge();
        let text = render_text(&s);
        assert!(text.contains("duplicates 3"), "{text}");
        assert!(text.contains("result       FAIL"), "{text}");
    }

    #[test]
    fn per_sec_of_empty_interval_is_zero() {
        assert_eq!(per_sec(10, 0.0), 0.0);
        assert_eq!(per_sec(10, 4.0), 2.5);
    }
}
