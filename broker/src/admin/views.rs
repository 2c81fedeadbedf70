//! The read-only endpoints: status, topics, connections, tree and metrics.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant};

use chorus_protocol::Topic;
use serde_json::{json, Value};
use tracing::error;

use super::http::{query_param, Reply};
use super::rates::WINDOW;
use super::tree::connected_upstreams;
use super::Admin;
use crate::server::{Shared, WorkerMsg};
use crate::storage::{LogConfig, RetentionOverride, TopicFiles};
use crate::topics::TopicState;
use crate::worker_admin::{AdminRequest, ConnInfo, ConnList};

/// How long the endpoint waits for the workers' replies to a request.
const WORKER_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections listed when the request sets no limit.
const DEFAULT_CONN_LIMIT: usize = 1000;

/// Most connections one request may list.
const MAX_CONN_LIMIT: usize = 100_000;

/// The workers' replies to one request.
pub(super) struct Replies<T> {
    pub(super) replies: Vec<T>,
    /// Workers that sent no reply within [`WORKER_TIMEOUT`].
    pub(super) unanswered: usize,
}

/// Sends a request built by `request` to every worker, wakes them, and collects the replies
/// that arrive within [`WORKER_TIMEOUT`].
pub(super) fn ask_workers<T>(
    shared: &Shared,
    request: impl Fn(Sender<T>) -> AdminRequest,
) -> Replies<T> {
    let (tx, rx) = mpsc::channel();
    for worker in &shared.workers {
        worker.send(WorkerMsg::Admin(request(tx.clone())));
        worker.wake();
    }
    // Dropping the last sender here lets the loop below end early if a stopped worker drops
    // its message unanswered.
    drop(tx);

    let deadline = Instant::now() + WORKER_TIMEOUT;
    let mut replies = Vec::with_capacity(shared.workers.len());
    while replies.len() < shared.workers.len() {
        let wait = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(wait) {
            Ok(reply) => replies.push(reply),
            Err(_) => break,
        }
    }
    Replies {
        unanswered: shared.workers.len() - replies.len(),
        replies,
    }
}

impl Admin {
    pub(super) fn metrics_text(&self) -> Reply {
        match crate::metrics::encode(&self.metrics) {
            Ok(text) => Reply::text(crate::metrics::CONTENT_TYPE, text),
            Err(e) => {
                error!(error = %e, "failed to encode metrics");
                Reply::error(500, "failed to encode the metrics")
            }
        }
    }

    pub(super) fn status(&self) -> Reply {
        let now = Instant::now();
        let totals = self.shared.metrics.totals();
        let (published, delivered) = self.rates.totals(&totals, now);
        Reply::ok(&json!({
            "version": env!("CARGO_PKG_VERSION"),
            "role": self.role(),
            "uptime_s": now.saturating_duration_since(self.started).as_secs(),
            "workers": self.shared.workers.len(),
            "connections": self.shared.connections.load(Ordering::Relaxed),
            "topics_loaded": self.shared.registry.loaded().len(),
            "published_per_s": round(published.per_s),
            "delivered_per_s": round(delivered.per_s),
            "rate_window_s": round(published.window_s),
            "published_total": totals.published,
            "delivered_total": totals.live_deliveries + totals.catch_up_deliveries,
            "segments_quarantined": self.shared.registry.quarantined_segments(),
            "upstream": connected_upstreams(&self.link_statuses()),
            "links_reported": true,
        }))
    }

    pub(super) fn topics(&self) -> Reply {
        match self.topic_list() {
            Ok(topics) => Reply::ok(&json!({
                "topics": topics,
                "rate_window_s": WINDOW.as_secs(),
            })),
            Err(reply) => reply,
        }
    }

    pub(super) fn topic(&self, name: &str) -> Reply {
        if let Err(e) = Topic::new(name) {
            return Reply::error(400, format!("invalid topic name {name:?}: {e}"));
        }
        let topics = match self.topic_list() {
            Ok(topics) => topics,
            Err(reply) => return reply,
        };
        match topics.into_iter().find(|t| t["name"] == name) {
            Some(topic) => Reply::ok(&topic),
            None => Reply::error(404, format!("topic {name} not found")),
        }
    }

    /// Lists the loaded topics and those only on disk, sorted by name.
    fn topic_list(&self) -> Result<Vec<Value>, Reply> {
        let now = Instant::now();
        let mut topics: Vec<Value> = self
            .shared
            .registry
            .loaded()
            .iter()
            .map(|topic| self.loaded_topic(topic, now))
            .collect();
        let on_disk = self.shared.registry.unloaded_on_disk().map_err(|e| {
            error!(error = %e, "failed to list the topics directory");
            Reply::error(500, format!("failed to list topics on disk: {e}"))
        })?;
        for (name, files) in &on_disk {
            let retention = self.topic_retention(name, None);
            topics.push(unloaded_topic(name, files, retention));
        }
        topics.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        Ok(topics)
    }

    fn loaded_topic(&self, topic: &TopicState, now: Instant) -> Value {
        let inner = topic.inner.lock();
        let position = inner.position();
        let exists = inner.log.is_some();
        let bytes = inner.log.as_ref().map_or(0, |log| log.bytes_on_disk());
        let segments = inner.log.as_ref().map_or(0, |log| log.segment_count());
        let subscribers: u64 = inner.interest.iter().map(|&n| u64::from(n)).sum();
        let failed = inner.failed.clone();
        let config = inner.log.as_ref().map(|log| log.config().clone());
        drop(inner);
        let retention = self.topic_retention(&topic.name, config);

        let rate = self.rates.topic(topic.id, position.end, now);
        json!({
            "name": topic.name.as_str(),
            "loaded": true,
            "exists": exists,
            "stream": (exists).then_some(position.stream),
            "earliest": (exists).then_some(position.earliest),
            "end": (exists).then_some(position.end),
            "comments_per_s": round(rate.per_s),
            "subscribers": subscribers,
            "bytes_on_disk": bytes,
            "segments": segments,
            "retention": retention,
            "failed": failed,
        })
    }

    pub(super) fn connections(&self, query: &str) -> Reply {
        let limit = match query_param(query, "limit") {
            None => DEFAULT_CONN_LIMIT,
            Some(text) => match text.parse::<usize>() {
                Ok(limit) if limit <= MAX_CONN_LIMIT => limit,
                _ => {
                    let message = format!(
                        "invalid limit {text:?}: expected a number from 0 to {MAX_CONN_LIMIT}"
                    );
                    return Reply::error(400, message);
                }
            },
        };
        let topic = query_param(query, "topic");
        if let Some(name) = &topic {
            if let Err(e) = Topic::new(name.as_str()) {
                return Reply::error(400, format!("invalid topic name {name:?}: {e}"));
            }
        }

        let replies = ask_workers(&self.shared, |reply| AdminRequest::Connections {
            topic: topic.clone(),
            limit,
            reply,
        });
        let total: usize = replies.replies.iter().map(|list| list.total).sum();
        let mut connections: Vec<ConnInfo> = replies
            .replies
            .into_iter()
            .flat_map(|list: ConnList| list.connections)
            .collect();
        connections.sort_by_key(|c| c.id);
        connections.truncate(limit);
        Reply::ok(&json!({
            "connections": connections,
            "total": total,
            "truncated": total > connections.len(),
            "unanswered_workers": replies.unanswered,
        }))
    }

    /// Returns a topic's retention limits: those of `config`, the settings of its open log,
    /// or else the configured ones with the limits set at run time.
    fn topic_retention(&self, name: &Topic, config: Option<LogConfig>) -> Value {
        let registry = &self.shared.registry;
        let (config, limits) = match (config, registry.retention_override(name)) {
            (Some(config), Ok(limits)) => (config, limits),
            (None, Ok(limits)) => {
                let mut config = self.shared.config.log_config_for(name);
                limits.apply(&mut config);
                (config, limits)
            }
            (config, Err(e)) => {
                error!(topic = %name, error = %e, "failed to read the topic's retention override");
                let config = config.unwrap_or_else(|| self.shared.config.log_config_for(name));
                return retention(&config, None);
            }
        };
        retention(&config, Some(limits))
    }

    /// Returns the configured role, "origin" or "relay".
    pub(super) fn role(&self) -> Value {
        serde_json::to_value(self.shared.config.role).unwrap_or(Value::Null)
    }
}

fn unloaded_topic(name: &Topic, files: &TopicFiles, retention: Value) -> Value {
    json!({
        "name": name.as_str(),
        "loaded": false,
        "exists": true,
        "stream": Value::Null,
        "earliest": Value::Null,
        "end": Value::Null,
        "comments_per_s": 0.0,
        "subscribers": 0,
        "bytes_on_disk": files.bytes,
        "segments": files.segments,
        "retention": retention,
        "failed": Value::Null,
    })
}

/// Returns a topic's retention limits in force, where `null` means no limit. The `_set` fields
/// tell whether a limit was set at run time rather than by the configuration file. They are
/// `null` when the stored override could not be read.
fn retention(config: &LogConfig, limits: Option<RetentionOverride>) -> Value {
    let limit = |value: u64| (value > 0).then_some(value);
    json!({
        "max_age_ms": limit(config.retention_ms),
        "max_bytes": limit(config.retention_bytes),
        "idle_delete_ms": limit(config.topic_idle_delete_ms),
        "max_age_set": limits.map(|l| l.retention_ms.is_some()),
        "max_bytes_set": limits.map(|l| l.retention_bytes.is_some()),
    })
}

/// Rounds to three decimals for readable JSON.
fn round(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}
