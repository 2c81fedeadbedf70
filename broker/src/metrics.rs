//! Counters and latency histograms that the workers update on their hot paths, and their export
//! in the OpenMetrics text format that Prometheus scrapes.
//!
//! Each worker owns one block of counters, aligned to its own cache lines, and is the only
//! thread that writes to it. An update is therefore a relaxed load and store with no lock and no
//! contended cache line. A scrape sums the blocks of all workers, so the exported values are
//! exact totals taken a few nanoseconds apart, not one atomic snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::ErrorCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::server::Shared;

/// Error codes counted one by one; higher codes share the last slot.
const ERROR_SLOTS: usize = 32;

/// Upper bounds of the latency histogram buckets, in seconds: from 50 µs, well below one event
/// loop iteration, to 5 s, far past the 200 ms delivery budget.
const LATENCY_BOUNDS_S: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// The same bounds in nanoseconds, for the comparison on the hot path.
const LATENCY_BOUNDS_NS: [u64; 16] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Content type of [`Metrics::encode`]'s output.
pub(crate) const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The counters of every worker.
#[derive(Debug)]
pub(crate) struct Metrics {
    workers: Box<[WorkerMetrics]>,
}

/// The counters one worker writes.
///
/// Only the worker with this index writes these values; any thread may read them.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerMetrics {
    /// Comments stored and acknowledged.
    pub(crate) published: LocalCounter,
    /// Comments queued to live subscribers, counted once per subscriber.
    pub(crate) live_deliveries: LocalCounter,
    /// Comments queued to subscribers catching up from the log, counted once per subscriber.
    pub(crate) catch_up_deliveries: LocalCounter,
    /// Subscriptions switched from live batches to catch-up from the log.
    pub(crate) slow_consumer_switches: LocalCounter,
    /// Comments that capped subscriptions left out, counted once per subscriber.
    pub(crate) comments_skipped: LocalCounter,
    /// Batches not queued to another worker because its queue was full.
    pub(crate) worker_batches_dropped: LocalCounter,
    /// Connections accepted.
    pub(crate) connections_accepted: LocalCounter,
    /// ERROR frames and rejecting acknowledgements sent, indexed by error code.
    errors: [LocalCounter; ERROR_SLOTS],
    /// Time from decoding a PUBLISH to queuing its acknowledgement.
    pub(crate) publish_ack: LocalHistogram,
    /// Time from appending a batch's first comment to queuing the batch to subscribers.
    pub(crate) publish_deliver: LocalHistogram,
    /// Bytes queued to this worker's connections, as of the last tick.
    pub(crate) queued_bytes: LocalCounter,
    /// Subscriptions of this worker's connections that catch up from the log, as of the last
    /// tick.
    pub(crate) catch_up_subscriptions: LocalCounter,
    /// Reactions added up from REACT frames, a relay's sums included.
    pub(crate) reactions: LocalCounter,
    /// Reactions dropped, indexed by [`ReactionDrop`].
    reactions_dropped: [LocalCounter; ReactionDrop::ALL.len()],
}

/// Reason for dropping reactions, the `reason` label of `chorus_reactions_dropped`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReactionDrop {
    /// Their topic already had `audience.max_reaction_kinds` other kinds in the interval.
    KindLimit,
    /// The connection that sent them does not subscribe to their topic.
    NotSubscribed,
    /// Their topic has no companion topics: it is reserved, its name is too long, or it has no
    /// log at the origin.
    NoCompanionTopic,
}

impl ReactionDrop {
    const ALL: [ReactionDrop; 3] = [
        ReactionDrop::KindLimit,
        ReactionDrop::NotSubscribed,
        ReactionDrop::NoCompanionTopic,
    ];

    /// Returns the value of the metric's `reason` label.
    fn label(self) -> &'static str {
        match self {
            ReactionDrop::KindLimit => "kind_limit",
            ReactionDrop::NotSubscribed => "not_subscribed",
            ReactionDrop::NoCompanionTopic => "no_companion_topic",
        }
    }
}

/// A counter or gauge with a single writer.
#[derive(Debug, Default)]
pub(crate) struct LocalCounter(AtomicU64);

/// A histogram of durations with fixed buckets and a single writer.
#[derive(Debug, Default)]
pub(crate) struct LocalHistogram {
    /// Observations per bucket of [`LATENCY_BOUNDS_NS`], then the overflow bucket.
    buckets: [LocalCounter; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: LocalCounter,
}

/// Totals over all workers at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Totals {
    pub(crate) published: u64,
    pub(crate) live_deliveries: u64,
    pub(crate) catch_up_deliveries: u64,
    pub(crate) slow_consumer_switches: u64,
    pub(crate) comments_skipped: u64,
    pub(crate) worker_batches_dropped: u64,
    pub(crate) connections_accepted: u64,
    pub(crate) errors: [u64; ERROR_SLOTS],
    pub(crate) publish_ack: HistogramTotals,
    pub(crate) publish_deliver: HistogramTotals,
    pub(crate) queued_bytes: u64,
    pub(crate) catch_up_subscriptions: u64,
    pub(crate) reactions: u64,
    pub(crate) reactions_dropped: [u64; ReactionDrop::ALL.len()],
}

/// A histogram summed over all workers.
#[derive(Debug, Clone, Default)]
pub(crate) struct HistogramTotals {
    buckets: [u64; LATENCY_BOUNDS_NS.len() + 1],
    sum_ns: u64,
}

impl Metrics {
    pub(crate) fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
        }
    }

    /// Returns the block that worker `index` writes.
    pub(crate) fn worker(&self, index: usize) -> &WorkerMetrics {
        &self.workers[index]
    }

    /// Sums the counters of all workers.
    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for worker in self.workers.iter() {
            totals.published += worker.published.get();
            totals.live_deliveries += worker.live_deliveries.get();
            totals.catch_up_deliveries += worker.catch_up_deliveries.get();
            totals.slow_consumer_switches += worker.slow_consumer_switches.get();
            totals.comments_skipped += worker.comments_skipped.get();
            totals.worker_batches_dropped += worker.worker_batches_dropped.get();
            totals.connections_accepted += worker.connections_accepted.get();
            for (total, counter) in totals.errors.iter_mut().zip(&worker.errors) {
                *total += counter.get();
            }
            totals.publish_ack.add(&worker.publish_ack);
            totals.publish_deliver.add(&worker.publish_deliver);
            totals.queued_bytes += worker.queued_bytes.get();
            totals.catch_up_subscriptions += worker.catch_up_subscriptions.get();
            totals.reactions += worker.reactions.get();
            let dropped = totals.reactions_dropped.iter_mut();
            for (total, counter) in dropped.zip(&worker.reactions_dropped) {
                *total += counter.get();
            }
        }
        totals
    }
}

impl WorkerMetrics {
    /// Counts one ERROR frame or rejecting acknowledgement with `code`.
    pub(crate) fn error(&self, code: ErrorCode) {
        let slot = usize::from(code.as_u16()).min(ERROR_SLOTS - 1);
        self.errors[slot].add(1);
    }

    /// Counts `count` reactions dropped for `reason`.
    pub(crate) fn reactions_dropped(&self, reason: ReactionDrop, count: u64) {
        if count > 0 {
            self.reactions_dropped[reason as usize].add(count);
        }
    }
}

impl LocalCounter {
    /// Adds `n`. Only the owning worker may call this: two writers could lose updates, because
    /// the addition is a load and a store rather than one atomic read-modify-write.
    pub(crate) fn add(&self, n: u64) {
        let value = self.0.load(Ordering::Relaxed);
        self.0.store(value.wrapping_add(n), Ordering::Relaxed);
    }

    /// Replaces the value, for gauges. Only the owning worker may call this.
    pub(crate) fn set(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl LocalHistogram {
    /// Records one duration. Only the owning worker may call this.
    pub(crate) fn observe(&self, elapsed: Duration) {
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let bucket = LATENCY_BOUNDS_NS
            .iter()
            .position(|&bound| ns <= bound)
            .unwrap_or(LATENCY_BOUNDS_NS.len());
        self.buckets[bucket].add(1);
        self.sum_ns.add(ns);
    }
}

impl HistogramTotals {
    fn add(&mut self, histogram: &LocalHistogram) {
        for (total, bucket) in self.buckets.iter_mut().zip(&histogram.buckets) {
            *total += bucket.get();
        }
        self.sum_ns = self.sum_ns.wrapping_add(histogram.sum_ns.get());
    }

    /// Returns the number of observations.
    pub(crate) fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    fn encode(&self, encoder: &mut DescriptorEncoder, name: &str, help: &str) -> fmt::Result {
        let buckets: Vec<(f64, u64)> = LATENCY_BOUNDS_S
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.buckets.iter().copied())
            .collect();
        let sum = self.sum_ns as f64 / 1e9;
        let mut metric =
            encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Histogram)?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            sum,
            self.count(),
            &buckets,
            None,
        )
    }
}

/// Exports the broker's metrics on each scrape.
#[derive(Debug)]
struct BrokerCollector {
    shared: Arc<Shared>,
}

/// Builds the registry that `GET /metrics` encodes.
pub(crate) fn registry(shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector { shared }));
    registry
}

/// Encodes every metric of `registry` in the OpenMetrics text format.
pub(crate) fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(8 * 1024);
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let totals = self.shared.metrics.totals();
        let disk = disk_usage(&self.shared);

        counter(
            &mut encoder,
            "chorus_comments_published",
            "Comments stored in a topic log and acknowledged to their publisher",
            totals.published,
        )?;
        encode_deliveries(&mut encoder, &totals)?;
        counter(
            &mut encoder,
            "chorus_connections_accepted",
            "Client connections accepted",
            totals.connections_accepted,
        )?;
        gauge(
            &mut encoder,
            "chorus_connections",
            "Client connections open now",
            self.shared.connections.load(Ordering::Relaxed) as u64,
            None,
        )?;
        totals.publish_ack.encode(
            &mut encoder,
            "chorus_publish_ack_latency",
            "Time from decoding a PUBLISH frame to queuing its acknowledgement",
        )?;
        totals.publish_deliver.encode(
            &mut encoder,
            "chorus_publish_deliver_latency",
            "Time from appending the first comment of a batch to queuing the batch to live \
             subscribers",
        )?;
        gauge(
            &mut encoder,
            "chorus_outbound_queue",
            "Bytes queued to client connections and not yet written, summed over all \
             connections as of the last worker tick (every 500 ms)",
            totals.queued_bytes,
            Some(&Unit::Bytes),
        )?;
        counter(
            &mut encoder,
            "chorus_slow_consumer_switches",
            "Subscriptions switched from live batches to catch-up from the log because their \
             queue was full or they missed a batch",
            totals.slow_consumer_switches,
        )?;
        counter(
            &mut encoder,
            "chorus_comments_skipped",
            "Comments that capped subscriptions left out, counted once per subscriber",
            totals.comments_skipped,
        )?;
        counter(
            &mut encoder,
            "chorus_worker_batches_dropped",
            "Batches not queued to a worker whose queue held limits.worker_queue_bytes; its \
             subscribers caught up from the log or the cache instead",
            totals.worker_batches_dropped,
        )?;
        gauge(
            &mut encoder,
            "chorus_catch_up_subscriptions",
            "Subscriptions catching up from the log, as of the last worker tick (every 500 ms)",
            totals.catch_up_subscriptions,
            None,
        )?;
        gauge(
            &mut encoder,
            "chorus_topics_loaded",
            "Topics loaded in memory",
            disk.topics,
            None,
        )?;
        gauge(
            &mut encoder,
            "chorus_segment_files_open",
            "Segment files open now, each with a file descriptor and usually a memory map; at \
             most storage.max_open_files, plus those that reads in progress keep open",
            self.shared.registry.data_dir().open_segment_files() as u64,
            None,
        )?;
        gauge(
            &mut encoder,
            "chorus_disk",
            "Bytes of segment files of the loaded topics",
            disk.bytes,
            Some(&Unit::Bytes),
        )?;
        counter(
            &mut encoder,
            "chorus_segments_quarantined",
            "Closed segments that recovery found damaged in the middle when it opened their \
             topic; the log was cut at the damage and the bytes after it moved to the topic's \
             quarantine directory",
            self.shared.registry.quarantined_segments(),
        )?;
        encode_reactions(&mut encoder, &totals)?;
        crate::relay::status::encode_link_metrics(&mut encoder, &self.shared)?;
        encode_errors(&mut encoder, &totals)
    }
}

/// Loaded topics and the bytes of their segment files.
struct DiskUsage {
    topics: u64,
    bytes: u64,
}

/// Sums the segment bytes of every loaded topic, taking each topic's lock briefly.
fn disk_usage(shared: &Shared) -> DiskUsage {
    let topics = shared.registry.loaded();
    let bytes = topics
        .iter()
        .filter_map(|topic| {
            topic
                .inner
                .lock()
                .log
                .as_ref()
                .map(|log| log.bytes_on_disk())
        })
        .sum();
    DiskUsage {
        topics: topics.len() as u64,
        bytes,
    }
}

fn encode_deliveries(encoder: &mut DescriptorEncoder, totals: &Totals) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        "chorus_deliveries",
        "Comments queued to subscribers, counted once per subscriber; mode is live for shared \
         batches and catch_up for reads from the log",
        None,
        MetricType::Counter,
    )?;
    let modes = [
        ("live", totals.live_deliveries),
        ("catch_up", totals.catch_up_deliveries),
    ];
    for (mode, value) in modes {
        let labels = [("mode", mode)];
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_reactions(encoder: &mut DescriptorEncoder, totals: &Totals) -> fmt::Result {
    counter(
        encoder,
        "chorus_reactions",
        "Reactions received in REACT frames and added up, the sums from relays included",
        totals.reactions,
    )?;
    let mut metric = encoder.encode_descriptor(
        "chorus_reactions_dropped",
        "Reactions dropped; reason is kind_limit (the topic had audience.max_reaction_kinds \
         other kinds in the interval), not_subscribed (the sender does not subscribe to the \
         topic) or no_companion_topic (the topic is reserved, too long, or has no log)",
        None,
        MetricType::Counter,
    )?;
    for (reason, value) in ReactionDrop::ALL.iter().zip(totals.reactions_dropped) {
        let labels = [("reason", reason.label())];
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn encode_errors(encoder: &mut DescriptorEncoder, totals: &Totals) -> fmt::Result {
    let mut metric = encoder.encode_descriptor(
        "chorus_errors",
        "ERROR frames and rejecting PUBLISH_ACK frames sent to clients, by error code",
        None,
        MetricType::Counter,
    )?;
    // Code 0 is OK and never counted; codes that never occurred are left out.
    for (slot, &value) in totals.errors.iter().enumerate().skip(1) {
        if value == 0 {
            continue;
        }
        // The slot index is below ERROR_SLOTS, so it fits a u16; the last slot maps to UNKNOWN.
        let labels = [("code", ErrorCode::from_u16(slot as u16).name())];
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    ConstCounter::new(value).encode(metric)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
    unit: Option<&Unit>,
) -> fmt::Result {
    let metric = encoder.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX)).encode(metric)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_agree_in_both_units() {
        for (seconds, ns) in LATENCY_BOUNDS_S.iter().zip(LATENCY_BOUNDS_NS) {
            assert_eq!((seconds * 1e9).round() as u64, ns);
        }
    }

    #[test]
    fn observation_lands_in_first_bucket_that_holds_it() {
        let histogram = LocalHistogram::default();
        histogram.observe(Duration::from_micros(50));
        histogram.observe(Duration::from_micros(51));
        histogram.observe(Duration::from_secs(60));
        assert_eq!(histogram.buckets[0].get(), 1);
        assert_eq!(histogram.buckets[1].get(), 1);
        assert_eq!(histogram.buckets[LATENCY_BOUNDS_NS.len()].get(), 1);
    }

    #[test]
    fn totals_sum_workers() {
        let metrics = Metrics::new(3);
        metrics.worker(0).published.add(2);
        metrics.worker(2).published.add(5);
        metrics.worker(1).error(ErrorCode::BadCrc);
        metrics.worker(2).error(ErrorCode::Unknown(900));
        let totals = metrics.totals();
        assert_eq!(totals.published, 7);
        assert_eq!(totals.errors[usize::from(ErrorCode::BadCrc.as_u16())], 1);
        assert_eq!(totals.errors[ERROR_SLOTS - 1], 1);
    }
}
