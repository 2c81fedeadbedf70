//! Relay state for the admin endpoint: the state of each upstream link, and how far each relay
//! topic is behind its upstream.
//!
//! The link threads write a [`LinkStatus`] at every connect, loss, failover and compressed
//! batch; the admin thread and the metrics scrape read it. Topic lag is read from the topics' edge caches under their locks.

use std::fmt;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use serde::Serialize;

use super::Upstream;
use crate::server::Shared;
use crate::topics::TopicInner;

/// State of one upstream link.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LinkStatus {
    /// Number of the link; a relay has one, or one per origin when `cluster.origins` is set.
    pub(crate) link: usize,
    /// The upstream addresses, primary first.
    pub(crate) upstreams: Vec<String>,
    /// Address of the connected upstream, or of the last one tried while disconnected.
    pub(crate) address: Option<String>,
    pub(crate) connected: bool,
    /// When `connected` last changed, in milliseconds since the Unix epoch; the start of the
    /// link before its first attempt.
    pub(crate) since_unix_ms: u64,
    /// Connections made since the start.
    pub(crate) connections: u64,
    /// Failed connection attempts after which the link moved on to the next upstream address.
    pub(crate) failovers: u64,
    /// Error of the last failed connection attempt; cleared at the next connection.
    pub(crate) last_error: Option<String>,
    /// Reason the last connection ended, kept across reconnects, so that an upstream that
    /// accepts and then drops every connection shows its reason.
    pub(crate) last_loss: Option<String>,
    /// Whether the current or last connection negotiated zstd-compressed batches.
    pub(crate) zstd_events: bool,
    /// Bytes of plain EVENTS frames received since the start, headers included.
    pub(crate) events_bytes_received: u64,
    /// Bytes of EVENTS_ZSTD frames received since the start, headers included.
    pub(crate) zstd_bytes_received: u64,
    /// Bytes of the EVENTS frames that those EVENTS_ZSTD frames decompressed into.
    pub(crate) zstd_bytes_decompressed: u64,
    /// Times the link left a fallback upstream for the primary after a successful probe.
    pub(crate) primary_returns: u64,
}

impl LinkStatus {
    pub(crate) fn new(link: usize, upstreams: Vec<String>) -> LinkStatus {
        LinkStatus {
            link,
            upstreams,
            address: None,
            connected: false,
            since_unix_ms: unix_ms(SystemTime::now()),
            connections: 0,
            failovers: 0,
            last_error: None,
            last_loss: None,
            zstd_events: false,
            events_bytes_received: 0,
            zstd_bytes_received: 0,
            zstd_bytes_decompressed: 0,
            primary_returns: 0,
        }
    }

    /// Records a connection to `address`.
    pub(crate) fn connected(&mut self, address: &str) {
        self.address = Some(address.to_owned());
        self.connected = true;
        self.since_unix_ms = unix_ms(SystemTime::now());
        self.connections += 1;
        self.last_error = None;
    }

    /// Records the loss of the connection.
    pub(crate) fn lost(&mut self) {
        if self.connected {
            self.connected = false;
            self.since_unix_ms = unix_ms(SystemTime::now());
        }
    }

    /// Records a failed attempt to connect to `address`, and whether the next attempt goes to
    /// another address.
    pub(crate) fn attempt_failed(&mut self, address: &str, error: String, failover: bool) {
        self.address = Some(address.to_owned());
        self.last_error = Some(error);
        if failover {
            self.failovers += 1;
        }
    }
}

/// The link states of a relay, one per link, shared by the link threads and the admin thread.
#[derive(Debug)]
pub(crate) struct LinkStatuses {
    links: Vec<Mutex<LinkStatus>>,
}

impl LinkStatuses {
    pub(crate) fn new(targets: Vec<Vec<String>>) -> LinkStatuses {
        let links = targets
            .into_iter()
            .enumerate()
            .map(|(index, upstreams)| Mutex::new(LinkStatus::new(index, upstreams)))
            .collect();
        LinkStatuses { links }
    }

    /// Applies `change` to the status of link `index`.
    pub(crate) fn update(&self, index: usize, change: impl FnOnce(&mut LinkStatus)) {
        if let Some(status) = self.links.get(index) {
            change(&mut status.lock());
        }
    }

    /// Returns a copy of every link's status, in link order.
    /// Returns whether any link is connected to an upstream.
    pub(crate) fn any_connected(&self) -> bool {
        self.links.iter().any(|status| status.lock().connected)
    }

    pub(crate) fn snapshot(&self) -> Vec<LinkStatus> {
        self.links
            .iter()
            .map(|status| status.lock().clone())
            .collect()
    }
}

/// A per-link counter: metric name, help text, and the status field it reads.
type LinkCounter = (&'static str, &'static str, fn(&LinkStatus) -> u64);

/// Writes the per-link counters of a relay in the OpenMetrics text format; nothing on an
/// origin.
pub(crate) fn encode_link_metrics(encoder: &mut DescriptorEncoder, shared: &Shared) -> fmt::Result {
    let Some(relay) = shared.relay.as_ref() else {
        return Ok(());
    };
    let links = relay.statuses.snapshot();
    let families: [LinkCounter; 3] = [
        (
            "chorus_relay_zstd_received_bytes",
            "Bytes of EVENTS_ZSTD frames received from the upstream, headers included, by link",
            |s| s.zstd_bytes_received,
        ),
        (
            "chorus_relay_zstd_decompressed_bytes",
            "Bytes of the EVENTS frames that the received EVENTS_ZSTD frames decompressed into, \
             by link",
            |s| s.zstd_bytes_decompressed,
        ),
        (
            "chorus_relay_primary_returns",
            "Times a link left a fallback upstream for the primary after a successful probe, by \
             link",
            |s| s.primary_returns,
        ),
    ];
    for (name, help, value) in families {
        let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for link in &links {
            let labels = [("link", link.link.to_string())];
            ConstCounter::new(value(link)).encode(metric.encode_family(&labels)?)?;
        }
    }
    Ok(())
}

/// Applies `change` to the status of link `index`, on a relay.
pub(crate) fn update_link(shared: &Shared, index: usize, change: impl FnOnce(&mut LinkStatus)) {
    if let Some(relay) = shared.relay.as_ref() {
        relay.statuses.update(index, change);
    }
}

/// How far one relay topic is behind its upstream.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicLag {
    pub(crate) topic: String,
    /// "subscribing" until the upstream's SUBSCRIBED arrives, then "subscribed".
    pub(crate) state: &'static str,
    pub(crate) link: usize,
    pub(crate) stream: u64,
    /// Offset after the newest comment in the cache.
    pub(crate) cache_end: u64,
    /// The upstream's end offset as last reported: the larger of the end in its latest
    /// SUBSCRIBED and the offset after the newest comment received.
    pub(crate) upstream_end: u64,
    /// `upstream_end - cache_end`: comments the upstream announced that have not arrived.
    pub(crate) offset_lag: u64,
    /// Arrival time of the last batch at this relay minus the broker time of its newest
    /// comment, in milliseconds. It is `null` before the first batch.
    pub(crate) time_lag_ms: Option<u64>,
    /// Milliseconds since the last batch arrived; `null` before the first batch.
    pub(crate) last_batch_age_ms: Option<u64>,
    /// Local subscriptions to the topic on this relay.
    pub(crate) subscribers: u64,
}

/// Returns the lag of every relay topic with an upstream subscription, sorted by name.
pub(crate) fn topic_lags(shared: &Shared) -> Vec<TopicLag> {
    let now = Instant::now();
    let wall_now_us = unix_us(SystemTime::now());
    let mut lags: Vec<TopicLag> = shared
        .registry
        .loaded()
        .iter()
        .filter_map(|topic| {
            let link = shared
                .relay
                .as_ref()
                .map_or(0, |r| r.link_index(&topic.name));
            let inner = topic.inner.lock();
            topic_lag(&inner, topic.name.as_str(), link, now, wall_now_us)
        })
        .collect();
    lags.sort_by(|a, b| a.topic.cmp(&b.topic));
    lags
}

fn topic_lag(
    inner: &TopicInner,
    name: &str,
    link: usize,
    now: Instant,
    wall_now_us: u64,
) -> Option<TopicLag> {
    let relay = inner.relay.as_ref()?;
    let state = match relay.upstream {
        Upstream::Idle => return None,
        Upstream::Subscribing => "subscribing",
        Upstream::Subscribed => "subscribed",
    };
    let position = relay.position();
    let cache_end = relay.cache.end();
    let last = relay.cache.last_arrival();
    let age_us = last.map(|(arrived, _)| now.saturating_duration_since(arrived).as_micros() as u64);
    // The arrival is placed on the wall clock by going back from now by its age. Origin and
    // relay clocks are compared here, so a skew between them shows as lag too.
    let time_lag_ms = last.zip(age_us).map(|((_, newest_us), age_us)| {
        let arrival_us = wall_now_us.saturating_sub(age_us);
        arrival_us.saturating_sub(newest_us) / 1000
    });
    Some(TopicLag {
        topic: name.to_owned(),
        state,
        link,
        stream: position.stream,
        cache_end,
        upstream_end: position.end,
        offset_lag: position.end.saturating_sub(cache_end),
        time_lag_ms,
        last_batch_age_ms: age_us.map(|us| us / 1000),
        subscribers: inner.interest.iter().map(|&n| u64::from(n)).sum(),
    })
}

fn unix_us(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn unix_ms(time: SystemTime) -> u64 {
    unix_us(time) / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_clears_last_error() {
        let mut status = LinkStatus::new(0, vec!["a:1".into()]);
        status.attempt_failed("a:1", "refused".into(), false);
        status.connected("a:1");
        assert!(status.connected);
        assert_eq!(status.connections, 1);
        assert_eq!(status.last_error, None);
    }

    #[test]
    fn failover_counts_moves_only() {
        let mut status = LinkStatus::new(0, vec!["a:1".into(), "b:1".into()]);
        status.attempt_failed("a:1", "refused".into(), true);
        status.attempt_failed("b:1", "refused".into(), false);
        assert_eq!(status.failovers, 1);
        assert_eq!(status.address.as_deref(), Some("b:1"));
    }

    #[test]
    fn loss_keeps_address() {
        let mut status = LinkStatus::new(0, vec!["a:1".into()]);
        status.connected("a:1");
        status.lost();
        assert!(!status.connected);
        assert_eq!(status.address.as_deref(), Some("a:1"));
    }
}
