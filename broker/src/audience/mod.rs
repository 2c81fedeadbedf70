//! Viewer counts and reactions, added up at every node of the relay tree and written by the
//! origin to the companion topics `_viewers/T` and `_reactions/T`.
//!
//! Every worker counts, per topic, its connections' subscriptions that are not relay sessions,
//! and adds the latest AUDIENCE report of each relay connection it holds. It also adds up the
//! REACT frames it receives per topic and kind. At each tick it moves these numbers into its
//! slot of the shared [`Audience`] board, with no lock on the path of each frame.
//!
//! Worker 0 aggregates: at its own ticks it adds up every worker's slot. A relay sends the
//! totals upstream, as one AUDIENCE frame per link every `audience.interval_ms` and as REACT
//! frames with the sums every `audience.reaction_interval_ms`, over the link that serves each
//! topic. An origin appends `{"viewers":N}` to `_viewers/T` when a count changed, and the
//! reactions of each interval to `_reactions/T`, through the normal append path, so that
//! subscribers, relays and edge caches receive them like comments.

mod board;
mod companion;
mod config;
mod origin;
mod sums;
mod upstream;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chorus_protocol::{AudienceEntry, ErrorCode, React, Topic};
use mio::Token;
use rustc_hash::FxHashMap;
use tracing::debug;

pub(crate) use board::Audience;
pub(crate) use companion::{is_companion, routing_name};
pub use config::AudienceConfig;

use crate::config::{Config, Role};
use crate::conn::Conn;
use crate::metrics::ReactionDrop;
use crate::worker::{Worker, FIRST_CONN};
use companion::has_companions;
use sums::{ReactionSums, Ticker, UpstreamLedger, ViewerCounts, ViewerLedger};

/// The viewer and reaction state of one worker.
#[derive(Debug)]
pub(crate) struct WorkerAudience {
    viewer_ticker: Ticker,
    reaction_ticker: Ticker,
    /// REACT sums since this worker's last reaction tick.
    reactions: ReactionSums,
    /// The latest AUDIENCE of each relay connection of this worker.
    reports: FxHashMap<Token, RelayReport>,
    /// State of the aggregating worker, worker 0, kept between ticks, or `None` on the others.
    aggregator: Option<Aggregator>,
}

/// One AUDIENCE frame from a relay connection, reduced to the topics that connection
/// subscribes to.
#[derive(Debug)]
struct RelayReport {
    /// Id of the connection that sent it, so that a report outlives no connection even when
    /// its token is reused.
    conn_id: u64,
    entries: Vec<ReportEntry>,
}

#[derive(Debug)]
struct ReportEntry {
    topic_id: u64,
    topic: Topic,
    viewers: u64,
}

/// State of the aggregating worker by role: an origin writes the companion topics, and a relay
/// sends the totals upstream.
#[derive(Debug)]
enum Aggregator {
    /// Writes the companion topics.
    Origin(ViewerLedger),
    /// Sends the totals upstream.
    Relay(UpstreamLedger),
}

impl WorkerAudience {
    /// Creates the state of worker `index`. Worker 0 also aggregates.
    pub(crate) fn new(index: usize, config: &Config, now: Instant) -> WorkerAudience {
        let audience = &config.audience;
        let aggregator = (index == 0).then(|| match config.role {
            Role::Origin => Aggregator::Origin(ViewerLedger::default()),
            Role::Relay => Aggregator::Relay(UpstreamLedger::default()),
        });
        WorkerAudience {
            viewer_ticker: Ticker::new(Duration::from_millis(audience.interval_ms), now),
            reaction_ticker: Ticker::new(Duration::from_millis(audience.reaction_interval_ms), now),
            reactions: ReactionSums::default(),
            reports: FxHashMap::default(),
            aggregator,
        }
    }

    /// Returns when the next viewer or reaction tick is due.
    pub(crate) fn next_due(&self) -> Instant {
        self.viewer_ticker.next().min(self.reaction_ticker.next())
    }
}

impl Worker {
    /// Handles REACT: adds the reactions to this worker's sums for the current interval.
    ///
    /// A count above 1 from a session that is not a relay closes the connection with ERROR
    /// `FORBIDDEN`: an ERROR with close=0 would tell the client its subscription ended.
    /// Reactions about a topic that the connection does not subscribe to, or that has no
    /// companion topics, are dropped without a reply and counted.
    pub(crate) fn on_react(&mut self, token: Token, react: React) {
        let Some(conn) = conn_at(&self.conns, token) else {
            return;
        };
        let relay = conn.is_relay_session();
        if react.count > 1 && !relay {
            debug!(conn = conn.id, topic = %react.topic, count = react.count, "REACT sum from a session that is not a relay rejected");
            let message = format!(
                "REACT count {} is above 1, which only relay sessions may send",
                react.count
            );
            self.fail_conn(token, ErrorCode::Forbidden, message);
            return;
        }
        let count = u64::from(react.count);
        let drop = if !has_companions(&react.topic) {
            Some(ReactionDrop::NoCompanionTopic)
        } else if !self.subscribes(conn, &react.topic, relay) {
            Some(ReactionDrop::NotSubscribed)
        } else {
            None
        };
        if let Some(reason) = drop {
            self.metrics().reactions_dropped(reason, count);
            return;
        }
        let max_kinds = self.shared.config.audience.max_reaction_kinds;
        if self
            .audience
            .reactions
            .add(react.topic, react.kind, count, max_kinds)
        {
            self.metrics().reactions.add(count);
        } else {
            self.metrics()
                .reactions_dropped(ReactionDrop::KindLimit, count);
        }
    }

    /// Handles AUDIENCE: the report replaces the previous one of the same connection. Only
    /// relay sessions may send it; others get ERROR `FORBIDDEN` and the connection closes.
    ///
    /// Entries for topics that the connection does not subscribe to, or that have no companion
    /// topics, are left out, so that a report cannot create topics or count viewers of topics
    /// the relay does not carry. A topic listed twice keeps its last count.
    pub(crate) fn on_audience(&mut self, token: Token, entries: Vec<AudienceEntry>) {
        let Some(conn) = conn_at(&self.conns, token) else {
            return;
        };
        if !conn.is_relay_session() {
            debug!(
                conn = conn.id,
                "AUDIENCE from a session that is not a relay rejected"
            );
            let message = "AUDIENCE is allowed only from relay sessions".to_owned();
            self.fail_conn(token, ErrorCode::Forbidden, message);
            return;
        }
        let conn_id = conn.id;
        let mut accepted: HashMap<u64, ReportEntry> = HashMap::with_capacity(entries.len());
        for entry in entries {
            if !has_companions(&entry.topic) {
                continue;
            }
            let Some(state) = self.shared.registry.find(&entry.topic) else {
                continue;
            };
            if conn.subs.contains_key(&state.id) {
                let topic_id = state.id;
                let viewers = entry.viewers;
                let topic = entry.topic;
                accepted.insert(
                    topic_id,
                    ReportEntry {
                        topic_id,
                        topic,
                        viewers,
                    },
                );
            }
        }
        let report = RelayReport {
            conn_id,
            entries: accepted.into_values().collect(),
        };
        self.audience.reports.insert(token, report);
    }

    /// Runs the viewer tick and the reaction tick when they are due at `now`.
    pub(crate) fn audience_tick(&mut self, now: Instant) {
        if self.audience.viewer_ticker.due(now) {
            self.viewer_tick();
        }
        if self.audience.reaction_ticker.due(now) {
            self.reaction_tick();
        }
    }

    /// Publishes this worker's viewer counts. The aggregating worker then adds up every
    /// worker's counts and writes or sends the totals.
    fn viewer_tick(&mut self) {
        let counts = self.count_viewers();
        self.shared.audience.publish_viewers(self.index, counts);
        let Some(mut aggregator) = self.audience.aggregator.take() else {
            return;
        };
        let totals = self.shared.audience.total_viewers();
        match &mut aggregator {
            Aggregator::Origin(ledger) => self.write_viewer_records(ledger, &totals),
            Aggregator::Relay(ledger) => self.send_audience_upstream(ledger, &totals),
        }
        self.audience.aggregator = Some(aggregator);
    }

    /// Publishes this worker's reaction sums. The aggregating worker then takes the sums of all
    /// workers and writes or sends them.
    fn reaction_tick(&mut self) {
        let max_kinds = self.shared.config.audience.max_reaction_kinds;
        let sums = std::mem::take(&mut self.audience.reactions);
        let dropped = self
            .shared
            .audience
            .publish_reactions(self.index, sums, max_kinds);
        self.metrics()
            .reactions_dropped(ReactionDrop::KindLimit, dropped);

        let origin = match &self.audience.aggregator {
            None => return,
            Some(aggregator) => matches!(aggregator, Aggregator::Origin(_)),
        };
        let (sums, dropped) = self.shared.audience.take_reactions(max_kinds);
        self.metrics()
            .reactions_dropped(ReactionDrop::KindLimit, dropped);
        if sums.is_empty() {
            return;
        }
        if origin {
            self.write_reaction_records(sums);
        } else {
            self.send_reactions_upstream(sums);
        }
    }

    /// Counts the viewers of each topic at this worker: subscriptions of connections that are
    /// not relay sessions, plus the latest report of each relay connection for the topics it
    /// still subscribes to. Reports of closed connections are dropped here.
    fn count_viewers(&mut self) -> ViewerCounts {
        let conns = &self.conns;
        self.audience.reports.retain(|token, report| {
            conn_at(conns, *token).is_some_and(|conn| conn.id == report.conn_id)
        });

        let mut counts = ViewerCounts::new();
        for (topic_id, tokens) in &self.local_subs {
            let mut name = None;
            let mut viewers = 0u64;
            for token in tokens {
                let Some(conn) = conn_at(conns, *token) else {
                    continue;
                };
                let Some(sub) = conn.subs.get(topic_id) else {
                    continue;
                };
                if !conn.is_relay_session() {
                    name = Some(&sub.topic.name);
                    viewers += 1;
                }
            }
            if let Some(name) = name.filter(|name| has_companions(name)) {
                counts.insert(name.clone(), viewers);
            }
        }

        for (token, report) in &self.audience.reports {
            let Some(conn) = conn_at(conns, *token) else {
                continue;
            };
            for entry in &report.entries {
                if entry.viewers > 0 && conn.subs.contains_key(&entry.topic_id) {
                    let sum = counts.entry(entry.topic.clone()).or_default();
                    *sum = sum.saturating_add(entry.viewers);
                }
            }
        }
        counts
    }

    /// Returns whether `conn` subscribes to `topic`. A viewer has a few subscriptions, which are
    /// compared by name. A relay may have thousands, so its lookup goes through the registry.
    fn subscribes(&self, conn: &Conn, topic: &Topic, relay: bool) -> bool {
        if relay {
            return self
                .shared
                .registry
                .find(topic)
                .is_some_and(|state| conn.subs.contains_key(&state.id));
        }
        conn.subs.values().any(|sub| sub.topic.name == *topic)
    }
}

/// Returns the connection of `token`, if it is still open.
fn conn_at(conns: &slab::Slab<Conn>, token: Token) -> Option<&Conn> {
    conns.get(token.0.checked_sub(FIRST_CONN)?)
}
