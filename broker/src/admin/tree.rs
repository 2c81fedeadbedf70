//! `GET /v1/tree`: this node's place in the relay tree. It lists the upstream links of a relay
//! with the lag of each relay topic, and on every node the relays connected below it.
//!
//! Lag is measured against what the upstream reported, which for a relay below another relay
//! is that relay, not the origin. `offset_lag` is the upstream's end offset, from its latest
//! SUBSCRIBED or the newest comment received, minus the end of this relay's cache.
//! `time_lag_ms` is, for the last batch received, its arrival time at this relay minus the
//! broker time of its newest comment. It compares the relay's clock with the origin's, so a
//! clock skew between them adds to it. `last_batch_age_ms` distinguishes a quiet topic, whose
//! `time_lag_ms` stays at the last batch's value, from a stalled one.

use serde_json::{json, Value};

use super::http::Reply;
use super::views::ask_workers;
use super::Admin;
use crate::relay::loops::parse_chain;
use crate::relay::status::{topic_lags, LinkStatus};
use crate::worker_admin::{AdminRequest, ConnInfo};

impl Admin {
    pub(super) fn tree(&self) -> Reply {
        let replies = ask_workers(&self.shared, |reply| AdminRequest::RelayChildren { reply });
        let mut children: Vec<ConnInfo> = replies.replies.into_iter().flatten().collect();
        children.sort_by_key(|conn| conn.id);
        let children: Vec<Value> = children.iter().map(child_json).collect();

        let links = self.link_statuses();
        let topics = match &self.shared.relay {
            Some(_) => topic_lags(&self.shared),
            None => Vec::new(),
        };
        Reply::ok(&json!({
            "node_id": self.shared.lineage.node_id(),
            "role": self.role(),
            "version": env!("CARGO_PKG_VERSION"),
            "upstream": connected_upstreams(&links),
            "links": links,
            "topics": topics,
            "children": children,
            "links_reported": true,
            "unanswered_workers": replies.unanswered,
        }))
    }

    /// Returns the state of every upstream link; empty on an origin.
    pub(super) fn link_statuses(&self) -> Vec<LinkStatus> {
        self.shared
            .relay
            .as_ref()
            .map(|relay| relay.statuses.snapshot())
            .unwrap_or_default()
    }
}

/// Returns the addresses of the connected upstreams joined by ", ", or `null` when none is
/// connected.
pub(super) fn connected_upstreams(links: &[LinkStatus]) -> Value {
    let connected: Vec<&str> = links
        .iter()
        .filter(|link| link.connected)
        .filter_map(|link| link.address.as_deref())
        .collect();
    if connected.is_empty() {
        Value::Null
    } else {
        Value::from(connected.join(", "))
    }
}

/// Describes a relay connected below this node.
fn child_json(conn: &ConnInfo) -> Value {
    let chain = parse_chain(&conn.client).unwrap_or_default();
    let topics: Vec<&str> = conn
        .subscriptions
        .iter()
        .map(|s| s.topic.as_str())
        .collect();
    json!({
        "node_id": chain.first(),
        "relays_below": chain.get(1..).unwrap_or_default(),
        "conn": conn.id,
        "address": conn.peer,
        "client": conn.client,
        "topics": topics,
        "connected_s": conn.age_s,
    })
}
