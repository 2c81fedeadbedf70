//! Publishes and moderation that a relay forwards upstream on behalf of its clients.
//!
//! A client's PUBLISH goes upstream as RELAY_PUBLISH, which names the user from the session's
//! verified token and whether that token gives priority. The origin stores that user as the
//! publisher and applies bans and limits to them rather than to the relay. A session without a
//! user (authentication off, or an anonymous session) has no user to name, and its publishes go
//! upstream as plain PUBLISH. A child relay's RELAY_PUBLISH goes upstream unchanged.
//!
//! A MODERATE is checked against the client's session here and then carried out by the origin
//! of its topic. Ban and unban apply to every origin of the cluster map, so they go over every
//! link, and the client gets `OK` only when every origin returned `OK`.

use std::sync::Arc;

use chorus_protocol::{
    ErrorCode, Frame, ModAction, Moderate, ModerateAck, Publish, RelayPublish, Topic,
};
use mio::Token;
use parking_lot::Mutex;
use tracing::{debug, info};

use crate::auth::{unix_now_s, Session};
use crate::server::{Shared, WorkerMsg};
use crate::worker::Worker;

/// The user a forwarded publish is stored under, from a token the relay verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Author {
    /// The token's `sub`, 1 to 255 bytes.
    pub(crate) user: String,
    /// Whether the user's comments get the PRIORITY flag.
    pub(crate) priority: bool,
}

impl Author {
    /// Returns the author of the session's publishes, or `None` when the session has no user.
    pub(crate) fn of_session(session: &Session) -> Option<Author> {
        let user = session.publisher();
        (!user.is_empty()).then(|| Author {
            user: user.to_owned(),
            priority: session.has_priority(),
        })
    }
}

/// Destination of a forwarded MODERATE's acknowledgement: a client connection on a worker. When
/// the MODERATE went over several links, every clone shares one [`Gather`], and the client gets
/// its MODERATE_ACK once the last link has replied.
#[derive(Debug, Clone)]
pub(crate) struct ModerateReply {
    worker: usize,
    token: Token,
    conn_id: u64,
    /// The client's sequence number.
    seq: u64,
    gather: Arc<Mutex<Gather>>,
}

impl ModerateReply {
    /// Creates the reply of a MODERATE that goes over `links` links.
    fn new(worker: usize, token: Token, conn_id: u64, seq: u64, links: usize) -> ModerateReply {
        ModerateReply {
            worker,
            token,
            conn_id,
            seq,
            gather: Arc::new(Mutex::new(Gather::new(links))),
        }
    }

    /// Records one upstream's code, and sends the client its MODERATE_ACK once every link has
    /// replied.
    pub(crate) fn answer(&self, shared: &Shared, code: ErrorCode) {
        let Some(code) = self.gather.lock().record(code) else {
            return;
        };
        let worker = &shared.workers[self.worker];
        worker.send(WorkerMsg::ModerateAck {
            token: self.token,
            conn_id: self.conn_id,
            ack: ModerateAck {
                seq: self.seq,
                code,
            },
        });
        worker.wake();
    }

    /// Records that the MODERATE could not be forwarded, or that its link dropped before the
    /// MODERATE_ACK arrived.
    pub(crate) fn fail(&self, shared: &Shared) {
        self.answer(shared, ErrorCode::UpstreamUnavailable);
    }
}

/// The codes that the links return for one MODERATE forwarded over several of them.
#[derive(Debug)]
struct Gather {
    /// Links that have not replied yet.
    waiting: usize,
    /// `OK` while every code so far was `OK`, then the first other code.
    code: ErrorCode,
}

impl Gather {
    fn new(links: usize) -> Gather {
        Gather {
            waiting: links,
            code: ErrorCode::Ok,
        }
    }

    /// Records one link's code. Returns the code for the client after the last link's, and
    /// `None` before it or after it.
    fn record(&mut self, code: ErrorCode) -> Option<ErrorCode> {
        if self.waiting == 0 {
            return None;
        }
        if self.code == ErrorCode::Ok {
            self.code = code;
        }
        self.waiting -= 1;
        (self.waiting == 0).then_some(self.code)
    }
}

/// Splits a MODERATE into what each link carries, for `links` links of which `link_of` picks
/// the one that serves a topic.
///
/// Deletes and slow mode go to the topic's origin. Ban and unban go to every origin. A ban that
/// also purges a topic purges it only at that topic's origin, and is a plain ban at the others.
pub(crate) fn route_moderation(
    action: &ModAction,
    links: usize,
    link_of: impl Fn(&Topic) -> usize,
) -> Vec<(usize, ModAction)> {
    match action {
        ModAction::DeleteComment { topic, .. } | ModAction::SlowMode { topic, .. } => {
            vec![(link_of(topic), action.clone())]
        }
        ModAction::Ban {
            user,
            purge: Some((topic, _)),
        } => {
            let owner = link_of(topic);
            let plain = ModAction::Ban {
                user: user.clone(),
                purge: None,
            };
            (0..links)
                .map(|link| match link == owner {
                    true => (link, action.clone()),
                    false => (link, plain.clone()),
                })
                .collect()
        }
        ModAction::Ban { purge: None, .. } | ModAction::Unban { .. } => {
            (0..links).map(|link| (link, action.clone())).collect()
        }
    }
}

impl Worker {
    /// Handles MODERATE at a relay: checks that the session may moderate, then forwards it to
    /// the origins that carry it out. The MODERATE_ACK comes back as
    /// [`Worker::on_forwarded_moderate_ack`].
    pub(crate) fn forward_moderate(&mut self, token: Token, moderate: Moderate) {
        let now_s = unix_now_s();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if !conn.session.may_moderate(now_s) {
            debug!(
                conn = conn.id,
                user = conn.session.publisher(),
                "MODERATE rejected: the session may not moderate"
            );
            let ack = ModerateAck {
                seq: moderate.seq,
                code: ErrorCode::Forbidden,
            };
            self.send(token, &Frame::ModerateAck(ack));
            return;
        }
        // The origin sees only this relay's session, so the moderator's user is logged here.
        info!(
            conn = conn.id,
            user = conn.session.publisher(),
            seq = moderate.seq,
            action = ?moderate.action,
            "forwarding MODERATE upstream"
        );
        // Counted like a publish waiting for its acknowledgement, so that a client that stops
        // sending still gets its MODERATE_ACK before its connection closes.
        conn.pending_acks += 1;
        let conn_id = conn.id;

        let Some(relay) = self.shared.relay.as_ref() else {
            return;
        };
        let routes = route_moderation(&moderate.action, relay.links(), |t| relay.link_index(t));
        let reply = ModerateReply::new(self.index, token, conn_id, moderate.seq, routes.len());
        for (link, action) in routes {
            relay.forward_moderate(link, action, reply.clone(), &self.shared);
        }
    }

    /// Sends the MODERATE_ACK of a forwarded MODERATE, unless the connection is gone.
    pub(crate) fn on_forwarded_moderate_ack(
        &mut self,
        token: Token,
        conn_id: u64,
        ack: ModerateAck,
    ) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.id != conn_id {
            return;
        }
        conn.pending_acks = conn.pending_acks.saturating_sub(1);
        self.send(token, &Frame::ModerateAck(ack));
    }

    /// Handles RELAY_PUBLISH at a relay: a child relay's publish goes upstream unchanged, with
    /// its user and priority. Other sessions get PUBLISH_ACK `FORBIDDEN`.
    pub(crate) fn forward_relay_publish(&mut self, token: Token, publish: RelayPublish) {
        let now_s = unix_now_s();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if !conn.is_relay_session() {
            debug!(
                conn = conn.id,
                topic = %publish.topic,
                "RELAY_PUBLISH rejected: not a relay session"
            );
            self.reject_publish(token, publish.seq, ErrorCode::Forbidden);
            return;
        }
        if let Err(denial) = conn.session.check_publish(publish.topic.as_str(), now_s) {
            debug!(
                conn = conn.id,
                topic = %publish.topic,
                code = denial.code.name(),
                "RELAY_PUBLISH rejected: {}",
                denial.message
            );
            self.reject_publish(token, publish.seq, denial.code);
            return;
        }
        if publish.payload.len() > self.limits.max_payload as usize {
            self.reject_publish(token, publish.seq, ErrorCode::PayloadTooLarge);
            return;
        }
        let RelayPublish {
            seq,
            topic,
            user,
            priority,
            payload,
        } = publish;
        let author = Author { user, priority };
        self.forward_publish_as(
            token,
            Publish {
                seq,
                topic,
                payload,
            },
            Some(author),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).unwrap()
    }

    /// Stands in for the cluster map: topics named `t/<n>` belong to origin n.
    fn link_of(topic: &Topic) -> usize {
        topic.as_str()[2..].parse().unwrap()
    }

    #[test]
    fn delete_goes_to_topic_origin_only() {
        let action = ModAction::DeleteComment {
            topic: topic("t/2"),
            offset: 5,
        };
        let routes = route_moderation(&action, 3, link_of);
        assert_eq!(routes, vec![(2, action)]);
    }

    #[test]
    fn slow_mode_goes_to_topic_origin_only() {
        let action = ModAction::SlowMode {
            topic: topic("t/1"),
            interval_ms: 1000,
        };
        let routes = route_moderation(&action, 3, link_of);
        assert_eq!(routes, vec![(1, action)]);
    }

    #[test]
    fn ban_and_unban_go_to_every_origin() {
        for action in [
            ModAction::Ban {
                user: "u".into(),
                purge: None,
            },
            ModAction::Unban { user: "u".into() },
        ] {
            let links: Vec<usize> = route_moderation(&action, 3, link_of)
                .into_iter()
                .map(|(link, routed)| {
                    assert_eq!(routed, action);
                    link
                })
                .collect();
            assert_eq!(links, [0, 1, 2], "{action:?}");
        }
    }

    #[test]
    fn ban_purges_only_at_topic_origin() {
        let action = ModAction::Ban {
            user: "u".into(),
            purge: Some((topic("t/1"), 60)),
        };
        let plain = ModAction::Ban {
            user: "u".into(),
            purge: None,
        };
        let routes = route_moderation(&action, 3, link_of);
        assert_eq!(routes, vec![(0, plain.clone()), (1, action), (2, plain)]);
    }

    #[test]
    fn gather_waits_for_every_answer() {
        let mut gather = Gather::new(3);
        assert_eq!(gather.record(ErrorCode::Ok), None);
        assert_eq!(gather.record(ErrorCode::Ok), None);
        assert_eq!(gather.record(ErrorCode::Ok), Some(ErrorCode::Ok));
    }

    #[test]
    fn gather_keeps_first_failure() {
        let mut gather = Gather::new(3);
        gather.record(ErrorCode::Ok);
        gather.record(ErrorCode::UpstreamUnavailable);
        assert_eq!(
            gather.record(ErrorCode::Forbidden),
            Some(ErrorCode::UpstreamUnavailable)
        );
    }

    #[test]
    fn gather_answers_once() {
        let mut gather = Gather::new(1);
        assert_eq!(gather.record(ErrorCode::Ok), Some(ErrorCode::Ok));
        assert_eq!(gather.record(ErrorCode::Ok), None);
    }

    #[test]
    fn anonymous_session_may_not_moderate() {
        assert!(!Session::Anonymous.may_moderate(0));
    }

    #[test]
    fn open_session_may_moderate() {
        assert!(Session::Open.may_moderate(0));
    }
}
