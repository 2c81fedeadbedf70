//! Moderation at the origin: deleted comments, bans, slow mode and the publish limits.
//!
//! Every publish that reaches the origin, as PUBLISH or as a relay's RELAY_PUBLISH, passes the
//! checks of [`publish`] in the order the protocol gives. These are reserved topics, the ban
//! list, the payload limit, blocked words, slow mode, the per-user rate limit and the duplicate
//! window. The decisions themselves are plain functions in [`policy`].
//!
//! MODERATE from a moderator, an admin or a relay (or any session without authentication), and
//! the admin endpoint's ban, unban and delete routes, all end in [`Worker::moderate`]. Deleting
//! a comment appends a tombstone entry and records the offset in the topic's deleted offsets
//! file, so that every later read of the offset from the log returns it with the DELETED flag
//! and an empty payload. Bans and slow-mode intervals live in one file of the data directory.

mod config;
mod delete;
mod policy;
mod publish;
mod state;

use chorus_protocol::{ErrorCode, Frame, ModAction, Moderate, ModerateAck, RelayPublish};
use mio::Token;
use tracing::{debug, info};

pub use config::ModerationConfig;
pub(crate) use delete::{push_entry, Deletion};
pub(crate) use policy::{is_reserved, TopicPublishers};
pub(crate) use publish::Comment;
pub use state::ModerationError;
pub(crate) use state::{Ban, Moderation};

use crate::auth::unix_now_s;
use crate::worker::{Worker, FIRST_CONN};

/// Result of a moderation action that was carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A comment was deleted, or had been deleted before.
    Deleted(Deletion),
    /// A user was banned, unless `newly` is false because the ban existed; `purged` comments
    /// were deleted.
    Banned { newly: bool, purged: usize },
    /// A ban was lifted, unless `was_banned` is false.
    Unbanned { was_banned: bool },
    /// A topic's slow-mode interval was set; `changed` is false when it had that value.
    SlowMode { changed: bool },
}

/// Returns the action's name and target, for logs.
fn describe(action: &ModAction) -> (&'static str, String) {
    match action {
        ModAction::DeleteComment { topic, offset } => {
            ("delete comment", format!("{topic}@{offset}"))
        }
        ModAction::Ban { user, purge: None } => ("ban", user.clone()),
        ModAction::Ban {
            user,
            purge: Some((topic, seconds)),
        } => ("ban", format!("{user}, purging {topic} for {seconds} s")),
        ModAction::Unban { user } => ("unban", user.clone()),
        ModAction::SlowMode { topic, interval_ms } => {
            ("slow mode", format!("{topic} at {interval_ms} ms"))
        }
    }
}

impl Worker {
    /// Handles MODERATE: a relay forwards it upstream; an origin checks the session and carries
    /// the action out.
    pub(crate) fn on_moderate(&mut self, token: Token, moderate: Moderate) {
        if self.shared.relay.is_some() {
            self.forward_moderate(token, moderate);
            return;
        }
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let code = if conn.session.may_moderate(unix_now_s()) {
            let actor = conn.session.publisher().to_owned();
            match self.moderate(&moderate.action, &actor, None) {
                Ok(_) => ErrorCode::Ok,
                Err(code) => code,
            }
        } else {
            debug!(
                conn = conn.id,
                user = conn.session.publisher(),
                "MODERATE rejected: the session may not moderate"
            );
            ErrorCode::Forbidden
        };
        let ack = ModerateAck {
            seq: moderate.seq,
            code,
        };
        self.send(token, &Frame::ModerateAck(ack));
    }

    /// Handles RELAY_PUBLISH: at an origin, stores the comment under the frame's user after the
    /// same checks as a PUBLISH; a relay forwards it upstream. Only relay sessions may send it.
    pub(crate) fn on_relay_publish(&mut self, token: Token, publish: RelayPublish) {
        if self.shared.relay.is_some() {
            self.forward_relay_publish(token, publish);
            return;
        }
        let received = std::time::Instant::now();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if !conn.is_relay_session() {
            debug!(conn = conn.id, topic = %publish.topic, "RELAY_PUBLISH rejected: not a relay session");
            self.reject_publish(token, publish.seq, ErrorCode::Forbidden);
            return;
        }
        if let Err(denial) = conn
            .session
            .check_publish(publish.topic.as_str(), unix_now_s())
        {
            debug!(conn = conn.id, topic = %publish.topic, code = denial.code.name(), "RELAY_PUBLISH rejected: {}", denial.message);
            self.reject_publish(token, publish.seq, denial.code);
            return;
        }
        let flags = match publish.priority {
            true => chorus_protocol::event::flags::PRIORITY,
            false => 0,
        };
        let comment = Comment {
            seq: publish.seq,
            topic: publish.topic,
            publisher: publish.user,
            flags,
            payload: publish.payload,
            received,
        };
        self.publish_at_origin(token, comment);
    }

    /// Returns the publisher id and entry flags of a connection's comments, from its session.
    pub(crate) fn session_author(&self, token: Token) -> (String, u8) {
        let session = token
            .0
            .checked_sub(FIRST_CONN)
            .and_then(|index| self.conns.get(index))
            .map(|conn| &conn.session);
        let publisher = session.map_or("", |s| s.publisher()).to_owned();
        let flags = match session {
            Some(s) if s.has_priority() => chorus_protocol::event::flags::PRIORITY,
            _ => 0,
        };
        (publisher, flags)
    }

    /// Carries out a moderation action for `actor` (a user id, or a name such as
    /// `admin endpoint`), logs it, and returns what it did or the code that rejects it.
    pub(crate) fn moderate(
        &mut self,
        action: &ModAction,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Outcome, ErrorCode> {
        let result = match action {
            ModAction::DeleteComment { topic, offset } => self
                .delete_comment(topic, *offset, actor)
                .map(Outcome::Deleted),
            ModAction::Ban { user, purge } => self.ban_user(user, purge.as_ref(), actor, reason),
            ModAction::Unban { user } => {
                let moderation = &self.shared.moderation;
                match moderation.unban(user) {
                    Ok(was_banned) => Ok(Outcome::Unbanned { was_banned }),
                    Err(e) => Err(moderation_failed(&e)),
                }
            }
            ModAction::SlowMode { topic, interval_ms } => {
                self.check_owner(topic)?;
                let moderation = &self.shared.moderation;
                match moderation.set_slow_mode(topic.as_str(), *interval_ms) {
                    Ok(changed) => Ok(Outcome::SlowMode { changed }),
                    Err(e) => Err(moderation_failed(&e)),
                }
            }
        };
        let (name, target) = describe(action);
        match &result {
            Ok(outcome) => info!(actor, action = name, target, ?outcome, "moderation action"),
            Err(code) => info!(
                actor,
                action = name,
                target,
                code = code.name(),
                "moderation action rejected"
            ),
        }
        result
    }

    /// Bans `user`, then deletes their comments of the purge window, if any.
    fn ban_user(
        &mut self,
        user: &str,
        purge: Option<&(chorus_protocol::Topic, u64)>,
        actor: &str,
        reason: Option<String>,
    ) -> Result<Outcome, ErrorCode> {
        if let Some((topic, seconds)) = purge {
            let max = self.shared.moderation.config.max_purge_s;
            if *seconds > max {
                debug!(user, %topic, seconds, max, "ban purge window is above moderation.max_purge_s");
                return Err(ErrorCode::Forbidden);
            }
        }
        let ban = Ban {
            since_s: unix_now_s(),
            by: actor.to_owned(),
            reason,
        };
        let newly = self
            .shared
            .moderation
            .ban(user, ban)
            .map_err(|e| moderation_failed(&e))?;
        let purged = match purge {
            Some((topic, seconds)) => self.purge_comments(topic, user, *seconds, actor)?,
            None => 0,
        };
        Ok(Outcome::Banned { newly, purged })
    }
}

fn moderation_failed(error: &ModerationError) -> ErrorCode {
    tracing::error!(error = %error, "failed to write the moderation file");
    ErrorCode::StorageFailed
}
