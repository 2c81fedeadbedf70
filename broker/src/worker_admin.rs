//! The worker's side of operations: requests from the admin endpoint, and the metric updates
//! made on the worker's hot paths.
//!
//! The admin endpoint runs on its own thread. It sends an [`AdminRequest`] to each worker
//! through the worker's channel, wakes it, and waits for the replies with a deadline, so that it
//! never touches a worker's connections directly.

use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_protocol::{ErrorCode, Frame, ModAction};
use mio::Token;
use serde::Serialize;

use crate::config::Limits;
use crate::conn::{Conn, Delivery, Phase};
use crate::metrics::WorkerMetrics;
use crate::moderation::Outcome;
use crate::relay::loops::parse_chain;
use crate::topics::{Batch, TopicState};
use crate::worker::{Worker, FIRST_CONN};

/// A request from the admin endpoint to one worker. Each carries the channel for the reply.
#[derive(Debug)]
pub(crate) enum AdminRequest {
    /// Lists the worker's connections.
    Connections {
        /// Keeps only connections subscribed to this topic.
        topic: Option<String>,
        /// Most connections returned.
        limit: usize,
        reply: Sender<ConnList>,
    },
    /// Closes the connection with this id, if this worker has it, after an ERROR.
    Kick {
        id: u64,
        reply: Sender<Option<ConnSummary>>,
    },
    /// Ends every subscription to a deleted topic with an ERROR naming the topic. The reply is
    /// the number of subscriptions ended.
    DropTopic {
        topic: Arc<TopicState>,
        reply: Sender<usize>,
    },
    /// Replaces the limits the worker enforces.
    SetLimits { limits: Limits, reply: Sender<()> },
    /// Carries out a moderation action for the admin endpoint, as a MODERATE would. Sent to
    /// one worker only.
    Moderate {
        action: ModAction,
        /// Reason kept with a ban.
        reason: Option<String>,
        reply: Sender<Result<Outcome, ErrorCode>>,
    },
    /// Lists the worker's connections from relays: those whose HELLO `client_name` carries a
    /// relay chain.
    RelayChildren { reply: Sender<Vec<ConnInfo>> },
}

/// One worker's reply to [`AdminRequest::Connections`].
#[derive(Debug, Default)]
pub(crate) struct ConnList {
    /// Matching connections, at most the requested limit.
    pub(crate) connections: Vec<ConnInfo>,
    /// Matching connections, including those past the limit.
    pub(crate) total: usize,
}

/// A connection as the admin endpoint shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ConnInfo {
    pub(crate) id: u64,
    pub(crate) worker: usize,
    pub(crate) peer: String,
    /// Client name and version from HELLO; empty before HELLO.
    pub(crate) client: String,
    /// "preamble", "hello", "ready" or "closing".
    pub(crate) phase: &'static str,
    /// Seconds since the connection was accepted.
    pub(crate) age_s: f64,
    /// Seconds since the last byte was read from the connection.
    pub(crate) idle_s: f64,
    /// Bytes queued to the connection and not yet written.
    pub(crate) queued_bytes: usize,
    /// Whether reading is paused because the outbound queue is full.
    pub(crate) read_paused: bool,
    /// Whether any subscription is catching up from the log because it fell behind.
    pub(crate) slow_consumer: bool,
    pub(crate) subscriptions: Vec<SubInfo>,
}

/// One subscription of a listed connection.
#[derive(Debug, Serialize)]
pub(crate) struct SubInfo {
    pub(crate) topic: String,
    /// Offset of the next comment the subscriber receives.
    pub(crate) next: u64,
    /// "live" or "catch-up".
    pub(crate) delivery: &'static str,
}

/// A kicked connection.
#[derive(Debug, Serialize)]
pub(crate) struct ConnSummary {
    pub(crate) id: u64,
    pub(crate) peer: String,
    pub(crate) client: String,
}

/// Name of the admin endpoint as the author of moderation actions: the ban's `by` and the
/// publisher of its tombstones.
const ADMIN_ACTOR: &str = "admin";

/// Message of the ERROR that a kicked client receives.
const KICK_MESSAGE: &str = "connection closed by an administrator";

impl Worker {
    /// Handles one request from the admin endpoint. The endpoint may have stopped waiting, so a
    /// failed reply is ignored.
    pub(crate) fn on_admin(&mut self, request: AdminRequest) {
        match request {
            AdminRequest::Connections {
                topic,
                limit,
                reply,
            } => {
                let _ = reply.send(self.list_connections(topic.as_deref(), limit));
            }
            AdminRequest::Kick { id, reply } => {
                let _ = reply.send(self.kick(id));
            }
            AdminRequest::DropTopic { topic, reply } => {
                let _ = reply.send(self.drop_topic_subscribers(&topic));
            }
            AdminRequest::SetLimits { limits, reply } => {
                self.limits = limits;
                let _ = reply.send(());
            }
            AdminRequest::Moderate {
                action,
                reason,
                reply,
            } => {
                let _ = reply.send(self.moderate(&action, ADMIN_ACTOR, reason));
            }
            AdminRequest::RelayChildren { reply } => {
                let _ = reply.send(self.list_relay_children());
            }
        }
    }

    fn list_relay_children(&self) -> Vec<ConnInfo> {
        let now = Instant::now();
        self.conns
            .iter()
            .filter(|(_, conn)| parse_chain(&conn.client_name).is_some())
            .map(|(_, conn)| self.conn_info(conn, now))
            .collect()
    }

    fn list_connections(&self, topic: Option<&str>, limit: usize) -> ConnList {
        let now = Instant::now();
        let mut list = ConnList::default();
        for (_, conn) in &self.conns {
            let subscribed = |name: &str| conn.subs.values().any(|s| s.topic.name.as_str() == name);
            if topic.is_some_and(|name| !subscribed(name)) {
                continue;
            }
            list.total += 1;
            if list.connections.len() < limit {
                list.connections.push(self.conn_info(conn, now));
            }
        }
        list
    }

    fn conn_info(&self, conn: &Conn, now: Instant) -> ConnInfo {
        let mut subscriptions: Vec<SubInfo> = conn
            .subs
            .values()
            .map(|sub| SubInfo {
                topic: sub.topic.name.to_string(),
                next: sub.next,
                delivery: match sub.delivery {
                    Delivery::Live => "live",
                    Delivery::CatchUp => "catch-up",
                },
            })
            .collect();
        subscriptions.sort_by(|a, b| a.topic.cmp(&b.topic));
        ConnInfo {
            id: conn.id,
            worker: self.index,
            peer: conn.peer.to_string(),
            client: conn.client_name.clone(),
            phase: phase_name(conn.phase),
            age_s: seconds(now.saturating_duration_since(conn.opened)),
            idle_s: seconds(now.saturating_duration_since(conn.last_read)),
            queued_bytes: conn.out.bytes(),
            read_paused: conn.read_paused,
            slow_consumer: conn.is_catching_up(),
            subscriptions,
        }
    }

    /// Sends ERROR to the connection with `id` and closes it.
    ///
    /// NOTE: the protocol has no error code for a close ordered by an administrator, so the
    /// ERROR carries SHUTTING_DOWN, on which clients reconnect after a back-off, and its message
    /// names the cause.
    fn kick(&mut self, id: u64) -> Option<ConnSummary> {
        let (index, conn) = self.conns.iter().find(|(_, conn)| conn.id == id)?;
        let summary = ConnSummary {
            id,
            peer: conn.peer.to_string(),
            client: conn.client_name.clone(),
        };
        self.fail_conn(
            Token(index + FIRST_CONN),
            ErrorCode::ShuttingDown,
            KICK_MESSAGE.to_owned(),
        );
        Some(summary)
    }

    /// Ends this worker's subscriptions to a topic that was deleted.
    fn drop_topic_subscribers(&mut self, topic: &Arc<TopicState>) -> usize {
        let Some(tokens) = self.local_subs.get(&topic.id) else {
            return 0;
        };
        let tokens: Vec<Token> = tokens.iter().copied().collect();
        let message = format!(
            "topic {} was deleted by an administrator; a new publish creates it again with a \
             new stream id",
            topic.name
        );
        for &token in &tokens {
            self.send_topic_error(
                token,
                ErrorCode::TopicNotFound,
                &topic.name,
                message.clone(),
            );
            self.remove_subscription(token, topic.id);
        }
        tokens.len()
    }

    /// Returns the metrics block this worker writes.
    pub(crate) fn metrics(&self) -> &WorkerMetrics {
        self.shared.metrics.worker(self.index)
    }

    /// Counts a frame about to be queued if it reports an error: an ERROR frame or a PUBLISH_ACK
    /// that rejects the publish.
    pub(crate) fn count_sent_error(&self, frame: &Frame) {
        match frame {
            Frame::Error(error) => self.metrics().error(error.code),
            Frame::PublishAck(ack) if ack.code != ErrorCode::Ok => self.metrics().error(ack.code),
            _ => {}
        }
    }

    /// Counts a stored comment and the time since its PUBLISH frame was decoded.
    pub(crate) fn record_publish(&self, received: Instant) {
        let metrics = self.metrics();
        metrics.published.add(1);
        metrics.publish_ack.observe(received.elapsed());
    }

    /// Counts a batch queued to `queued` live subscribers, and `behind` subscribers that switched
    /// to catch-up instead.
    pub(crate) fn record_delivery(&self, batch: &Batch, queued: u64, behind: u64) {
        let metrics = self.metrics();
        if queued > 0 {
            metrics
                .live_deliveries
                .add(queued * (batch.end - batch.first));
            metrics.publish_deliver.observe(batch.appended.elapsed());
        }
        if behind > 0 {
            metrics.slow_consumer_switches.add(behind);
        }
    }

    /// Stores this worker's queued bytes and catch-up subscriptions for the gauges.
    pub(crate) fn update_gauges(&self) {
        let mut queued = 0;
        let mut catching_up = 0;
        for (_, conn) in &self.conns {
            queued += conn.out.bytes() as u64;
            catching_up += conn
                .subs
                .values()
                .filter(|s| s.delivery == Delivery::CatchUp)
                .count() as u64;
        }
        let metrics = self.metrics();
        metrics.queued_bytes.set(queued);
        metrics.catch_up_subscriptions.set(catching_up);
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Preamble => "preamble",
        Phase::Hello => "hello",
        Phase::Ready => "ready",
        Phase::Closing => "closing",
    }
}

/// Converts to seconds, rounded to milliseconds for readable JSON.
fn seconds(duration: Duration) -> f64 {
    (duration.as_millis() as f64) / 1000.0
}
