//! Storing a comment at the origin, for PUBLISH and RELAY_PUBLISH: the moderation checks in the
//! order the protocol gives, then the append.

use std::collections::hash_map::Entry;
use std::time::Instant;

use bytes::Bytes;
use chorus_protocol::{ErrorCode, Topic};
use mio::Token;
use tracing::{debug, error};

use super::policy::{Limit, TopicCheck};
use crate::worker::{PendingAck, Worker};

/// A comment to store at the origin, after the session's permissions were checked.
#[derive(Debug)]
pub(crate) struct Comment {
    /// `seq` of the PUBLISH or RELAY_PUBLISH, echoed in the PUBLISH_ACK.
    pub(crate) seq: u64,
    pub(crate) topic: Topic,
    /// User id stored as the publisher: from the session's token, or from a relay's frame.
    pub(crate) publisher: String,
    /// Entry flags, such as PRIORITY.
    pub(crate) flags: u8,
    pub(crate) payload: Bytes,
    /// When the frame was decoded, for the acknowledgement latency metric.
    pub(crate) received: Instant,
}

/// Reason an append did not happen.
enum NotStored {
    /// A limit rejected the comment.
    Rejected(ErrorCode),
    /// The log failed; the reason is logged unless the topic had failed before.
    Failed(Option<String>),
}

impl From<Limit> for ErrorCode {
    fn from(limit: Limit) -> ErrorCode {
        match limit {
            Limit::SlowMode => ErrorCode::SlowMode,
            Limit::RateLimited => ErrorCode::RateLimited,
            Limit::Duplicate => ErrorCode::DuplicateComment,
        }
    }
}

impl Worker {
    /// Checks a comment against the cluster map, the ban list, the payload limit, the blocked
    /// words, slow mode, the rate limit and the duplicate window, and appends it to its topic.
    /// The PUBLISH_ACK follows the topic's commit at the end of the iteration, or goes out at
    /// once when the comment is rejected.
    pub(crate) fn publish_at_origin(&mut self, token: Token, comment: Comment) {
        if let Err(code) = self.check_comment(&comment) {
            debug!(topic = %comment.topic, user = %comment.publisher, code = code.name(), "publish rejected");
            self.reject_publish(token, comment.seq, code);
            return;
        }
        let topic = match self.shared.registry.get(&comment.topic) {
            Ok(topic) => topic,
            Err(e) => {
                error!(topic = %comment.topic, error = %e, "failed to open topic log");
                self.reject_publish(token, comment.seq, ErrorCode::StorageFailed);
                return;
            }
        };
        let offset = match self.append_checked(&topic, &comment) {
            Ok(offset) => offset,
            Err(NotStored::Rejected(code)) => {
                debug!(topic = %comment.topic, user = %comment.publisher, code = code.name(), "publish rejected");
                self.reject_publish(token, comment.seq, code);
                return;
            }
            Err(NotStored::Failed(reason)) => {
                if let Some(reason) = reason {
                    error!(topic = %comment.topic, error = %reason, "failed to append comment");
                }
                self.reject_publish(token, comment.seq, ErrorCode::StorageFailed);
                return;
            }
        };

        let conn_id = self.conn_mut(token).map_or(0, |c| {
            c.pending_acks += 1;
            c.id
        });
        let ack = PendingAck {
            token,
            conn_id,
            seq: comment.seq,
            offset,
            received: comment.received,
        };
        match self.dirty.entry(topic.id) {
            Entry::Occupied(mut e) => e.get_mut().1.push(ack),
            Entry::Vacant(e) => {
                e.insert((topic, vec![ack]));
            }
        }
    }

    /// Runs the checks that need no topic state: the cluster map, reserved topics, the ban
    /// list, the payload limit and the blocked words.
    fn check_comment(&self, comment: &Comment) -> Result<(), ErrorCode> {
        let shared = &self.shared;
        if shared
            .cluster
            .as_ref()
            .is_some_and(|map| !map.owns(&comment.topic))
        {
            return Err(ErrorCode::WrongOrigin);
        }
        if super::policy::is_reserved(comment.topic.as_str()) {
            return Err(ErrorCode::Forbidden);
        }
        if shared.moderation.is_banned(&comment.publisher) {
            return Err(ErrorCode::Banned);
        }
        if comment.payload.len() > self.limits.max_payload as usize {
            return Err(ErrorCode::PayloadTooLarge);
        }
        if shared.moderation.blocked.matches(&comment.payload) {
            return Err(ErrorCode::BlockedContent);
        }
        Ok(())
    }

    /// Checks slow mode, the rate limit and the duplicate window under the topic's lock, and
    /// appends the comment if they pass. Only an appended comment counts against them.
    fn append_checked(
        &mut self,
        topic: &crate::topics::TopicState,
        comment: &Comment,
    ) -> Result<u64, NotStored> {
        let moderation = &self.shared.moderation;
        let config = &moderation.config;
        let check = TopicCheck {
            slow_mode_ms: moderation.slow_mode_ms(comment.topic.as_str()),
            payload_hash: (config.duplicate_window_ms > 0)
                .then(|| moderation.payload_hash(&comment.payload)),
            duplicate_window_us: config.duplicate_window_ms.saturating_mul(1000),
            now_us: moderation.now_us(),
        };
        let user = comment.publisher.as_str();

        let mut inner = topic.inner.lock();
        if inner.failed.is_some() {
            return Err(NotStored::Failed(None));
        }
        if let Err(e) = self.shared.registry.ensure_log(topic, &mut inner) {
            return Err(NotStored::Failed(Some(e.to_string())));
        }
        let take_token = || moderation.take_token(user, check.now_us);
        let give_back = || moderation.give_back_token(user);
        inner
            .publishers
            .check(user, &check, take_token, give_back)
            .map_err(|limit| NotStored::Rejected(limit.into()))?;

        let appended = inner.append(
            &topic.name,
            user,
            &comment.payload,
            comment.flags,
            self.limits.max_batch_bytes,
            &mut self.scratch,
        );
        match appended {
            Ok(offset) => {
                let keep_us = check
                    .slow_mode_ms
                    .saturating_mul(1000)
                    .max(check.duplicate_window_us);
                // With slow mode and duplicate suppression off, nothing needs remembering.
                if keep_us > 0 {
                    inner
                        .publishers
                        .record(user, &check, config.duplicate_memory, keep_us);
                }
                Ok(offset)
            }
            Err(e) => {
                moderation.give_back_token(user);
                Err(NotStored::Failed(Some(e.to_string())))
            }
        }
    }
}
