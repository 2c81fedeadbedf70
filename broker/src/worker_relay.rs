//! The worker's side of the relay role: local subscriptions that wait for the topic's upstream
//! subscription, subscribers moved to a new stream, and forwarded publishes.
//!
//! A subscription that waits for the upstream is a normal [`Subscription`] whose next offset is
//! [`PENDING`], so that it counts as interest in the topic (which keeps the upstream
//! subscription) and is cleaned up with its connection like any other. No batch reaches it,
//! because every batch ends before that offset.

use std::sync::Arc;

use chorus_protocol::{ErrorCode, Frame, Publish, PublishAck, StartAt, Subscribe};
use mio::Token;
use tracing::debug;

use crate::conn::{Delivery, Subscription};
use crate::handler::start_offset;
use crate::relay::forward::Author;
use crate::relay::{PublishReply, Upstream};
use crate::topics::{TopicInner, TopicState};
use crate::worker::{Worker, FIRST_CONN};

/// Next offset of a subscription that waits for the upstream SUBSCRIBED.
///
/// NOTE: the admin endpoint lists such a subscription with this value as its next offset.
pub(crate) const PENDING: u64 = u64::MAX;

/// A SUBSCRIBE waiting for its topic's upstream SUBSCRIBED.
#[derive(Debug)]
pub(crate) struct PendingSubscribe {
    token: Token,
    conn_id: u64,
    subscribe: Subscribe,
}

impl Worker {
    /// Handles SUBSCRIBE at a relay: served from the cache once the topic is subscribed
    /// upstream, otherwise held until the upstream's SUBSCRIBED. The first local subscriber
    /// starts the upstream subscription.
    pub(crate) fn on_relay_subscribe(
        &mut self,
        token: Token,
        subscribe: Subscribe,
        topic: Arc<TopicState>,
    ) {
        let shared = self.shared.clone();
        let ready = {
            let mut inner = topic.inner.lock();
            let Some(relay) = inner.relay.as_mut() else {
                return;
            };
            let subscribed = relay.upstream == Upstream::Subscribed;
            // Every join restarts the linger time, even one that leaves again before the
            // linger timer's next pass.
            relay.idle_since = None;
            if relay.upstream == Upstream::Idle {
                relay.upstream = Upstream::Subscribing;
                debug!(topic = %topic.name, "first local subscriber; subscribing upstream");
                if let Some(links) = shared.relay.as_ref() {
                    links.subscribe_upstream(&topic);
                }
            }
            inner.interest[self.index] += 1;
            subscribed.then(|| (inner.position(), relay_start(&subscribe, &inner)))
        };
        match ready {
            Some((position, start)) => self.attach_subscription(token, topic, position, start),
            None => self.add_pending(token, subscribe, topic),
        }
    }

    /// Holds a subscription until the upstream SUBSCRIBED; its interest is already counted.
    fn add_pending(&mut self, token: Token, subscribe: Subscribe, topic: Arc<TopicState>) {
        let topic_id = topic.id;
        let Some(conn) = self.conn_mut(token) else {
            topic.inner.lock().interest[self.index] -= 1;
            return;
        };
        let conn_id = conn.id;
        conn.subs.insert(
            topic_id,
            Subscription {
                topic,
                next: PENDING,
                delivery: Delivery::Live,
                stream: 0,
                cap: None,
            },
        );
        self.local_subs.entry(topic_id).or_default().insert(token);

        // Entries of closed connections, and an earlier SUBSCRIBE of this one, go first.
        let conns = &self.conns;
        let waiting = self.relay_pending.entry(topic_id).or_default();
        waiting.retain(|p| {
            p.token != token
                && conns
                    .get(p.token.0 - FIRST_CONN)
                    .is_some_and(|c| c.id == p.conn_id)
        });
        waiting.push(PendingSubscribe {
            token,
            conn_id,
            subscribe,
        });
    }

    /// Drops a waiting SUBSCRIBE of `token`, after an UNSUBSCRIBE.
    pub(crate) fn forget_pending_subscribe(&mut self, token: Token, topic_id: u64) {
        if let Some(waiting) = self.relay_pending.get_mut(&topic_id) {
            waiting.retain(|p| p.token != token);
        }
    }

    /// Completes the subscriptions waiting for the topic's upstream SUBSCRIBED, and moves
    /// subscribers of a replaced stream to catch-up, which restarts them on the new one.
    pub(crate) fn on_upstream_subscribed(&mut self, topic: &Arc<TopicState>) {
        // Batches received before this message belong to the position before it.
        self.deliver_inbox();
        let stream = topic.inner.lock().position().stream;
        let tokens: Vec<Token> = self
            .local_subs
            .get(&topic.id)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for token in tokens {
            let Some(conn) = self.conns.get_mut(token.0 - FIRST_CONN) else {
                continue;
            };
            let Some(sub) = conn.subs.get_mut(&topic.id) else {
                continue;
            };
            if sub.next != PENDING && sub.stream != 0 && sub.stream != stream {
                sub.delivery = Delivery::CatchUp;
                self.catching_up.insert(token);
            }
        }

        let Some(waiting) = self.relay_pending.remove(&topic.id) else {
            return;
        };
        for pending in waiting {
            self.complete_pending(topic, pending);
        }
    }

    fn complete_pending(&mut self, topic: &Arc<TopicState>, pending: PendingSubscribe) {
        let waits = self.conn_mut(pending.token).is_some_and(|conn| {
            conn.id == pending.conn_id
                && conn.subs.get(&topic.id).is_some_and(|s| s.next == PENDING)
        });
        if !waits {
            return;
        }
        let ready = {
            let inner = topic.inner.lock();
            let subscribed = inner
                .relay
                .as_ref()
                .is_some_and(|r| r.upstream == Upstream::Subscribed);
            subscribed.then(|| (inner.position(), relay_start(&pending.subscribe, &inner)))
        };
        match ready {
            Some((position, start)) => {
                self.attach_subscription(pending.token, topic.clone(), position, start);
            }
            // The topic went back to subscribing since the message was sent; keep waiting.
            None => self
                .relay_pending
                .entry(topic.id)
                .or_default()
                .push(pending),
        }
    }

    /// Ends every local subscription to a topic whose upstream subscription was rejected, with
    /// the upstream's error.
    pub(crate) fn on_upstream_error(
        &mut self,
        topic: &Arc<TopicState>,
        code: ErrorCode,
        message: &str,
    ) {
        self.deliver_inbox();
        self.relay_pending.remove(&topic.id);
        let tokens: Vec<Token> = self
            .local_subs
            .get(&topic.id)
            .map(|set| set.iter().copied().collect())
            .unwrap_or_default();
        for token in tokens {
            self.send_topic_error(token, code, &topic.name, message.to_owned());
            self.remove_subscription(token, topic.id);
        }
    }

    /// Forwards a client's publish upstream, as RELAY_PUBLISH with the user of the session's
    /// token when it has one; the acknowledgement comes back as [`Worker::on_forwarded_ack`].
    pub(crate) fn forward_publish(&mut self, token: Token, publish: Publish) {
        let author = self
            .conn_mut(token)
            .and_then(|conn| Author::of_session(&conn.session));
        self.forward_publish_as(token, publish, author);
    }

    /// Forwards a publish upstream under `author`, or as plain PUBLISH without one.
    pub(crate) fn forward_publish_as(
        &mut self,
        token: Token,
        publish: Publish,
        author: Option<Author>,
    ) {
        // Counted like a publish waiting for its commit, so that a client that stops sending
        // still gets the acknowledgement before its connection closes.
        let conn_id = self.conn_mut(token).map_or(0, |c| {
            c.pending_acks += 1;
            c.id
        });
        let reply = PublishReply {
            worker: self.index,
            token,
            conn_id,
            seq: publish.seq,
        };
        let Some(relay) = self.shared.relay.as_ref() else {
            return;
        };
        if let Err(reply) = relay.forward_publish(publish.topic, publish.payload, author, reply) {
            self.on_forwarded_ack(
                token,
                conn_id,
                PublishAck {
                    seq: reply.seq,
                    code: ErrorCode::UpstreamUnavailable,
                    offset: 0,
                    stream: 0,
                },
            );
        }
    }

    /// Sends the acknowledgement of a forwarded publish, unless the connection is gone.
    pub(crate) fn on_forwarded_ack(&mut self, token: Token, conn_id: u64, ack: PublishAck) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.id != conn_id {
            return;
        }
        conn.pending_acks = conn.pending_acks.saturating_sub(1);
        self.send(token, &Frame::PublishAck(ack));
    }
}

/// Works out where a subscription at a relay starts, with the origin's rules applied to the
/// cache.
///
/// NOTE: a relay cannot tell an offset past the origin's end from one that its cache has not
/// reached yet, so it starts such a subscription at its own end rather than rejecting it. A
/// client that resumes at another relay then gets at most some comments again, which it drops
/// by their offsets.
fn relay_start(subscribe: &Subscribe, inner: &TopicInner) -> u64 {
    let position = inner.position();
    let Some(relay) = inner.relay.as_ref() else {
        return position.end;
    };
    let start = match subscribe.start {
        StartAt::Offset(offset) if offset > position.end => StartAt::Offset(position.end),
        other => other,
    };
    let request = Subscribe {
        topic: subscribe.topic.clone(),
        start,
        stream: subscribe.stream,
    };
    let offset_for_time = |time_us| relay.cache.offset_for_time(time_us);
    start_offset(&request, position, offset_for_time).unwrap_or(position.end)
}
