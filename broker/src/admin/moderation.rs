//! The moderation endpoints: list, add and lift bans, and delete a comment.
//!
//! The actions run on a worker, through the same code as a MODERATE frame, so a deletion's
//! tombstone is committed and fanned out like any other. The author of every action is
//! `admin`.
//!
//! | method and path | what it does |
//! | --- | --- |
//! | `GET /v1/bans` | every banned user, with when, by whom and why |
//! | `POST /v1/bans?user=U&reason=R` | bans U, with an optional reason |
//! | `POST /v1/bans?user=U&purge_topic=T&purge_s=N` | also deletes U's comments in T of the last N seconds |
//! | `DELETE /v1/bans/{user}` | lifts the ban |
//! | `DELETE /v1/topics/{topic}/comments/{offset}` | deletes one comment |

use std::sync::mpsc;
use std::time::Duration;

use chorus_protocol::{ErrorCode, ModAction, Topic};
use serde_json::{json, Value};

use super::http::{query_param, unknown_param, Reply};
use super::Admin;
use crate::moderation::{Deletion, Outcome};
use crate::server::WorkerMsg;
use crate::worker_admin::AdminRequest;

/// How long the endpoint waits for the worker that carries out an action. A purge scans the
/// log and may take longer than the other admin requests.
const MODERATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Maximum length of a user id in bytes, because the publisher of a stored comment is a str8.
const MAX_USER_BYTES: usize = 255;

impl Admin {
    /// Lists the bans.
    pub(super) fn bans(&self) -> Reply {
        let lists = self.shared.moderation.lists();
        let bans: Vec<Value> = lists
            .bans
            .iter()
            .map(|(user, ban)| {
                json!({ "user": user, "since_s": ban.since_s, "by": ban.by, "reason": ban.reason })
            })
            .collect();
        let slow_mode: Vec<Value> = lists
            .slow_mode_ms
            .iter()
            .map(|(topic, interval_ms)| json!({ "topic": topic, "interval_ms": interval_ms }))
            .collect();
        Reply::ok(&json!({ "bans": bans, "slow_mode": slow_mode }))
    }

    /// Bans the user named in the query, and purges their recent comments when asked.
    pub(super) fn ban(&self, query: &str) -> Reply {
        const KNOWN: [&str; 4] = ["user", "reason", "purge_topic", "purge_s"];
        if let Some(name) = unknown_param(query, &KNOWN) {
            return Reply::error(
                400,
                format!(
                    "unknown query parameter {name}; this route takes user, reason, \
                     purge_topic and purge_s"
                ),
            );
        }
        let user = match query_param(query, "user") {
            Some(user) => user,
            None => return Reply::error(400, "missing query parameter user=<user id>"),
        };
        if let Err(reply) = check_user(&user) {
            return reply;
        }
        let purge = match purge_window(query) {
            Ok(purge) => purge,
            Err(reply) => return reply,
        };
        let reason = query_param(query, "reason").filter(|r| !r.is_empty());
        let action = ModAction::Ban {
            user: user.clone(),
            purge,
        };
        match self.run_moderation(action, reason) {
            Ok(Outcome::Banned { newly, purged }) => Reply::ok(&json!({
                "user": user,
                "already_banned": !newly,
                "purged": purged,
            })),
            Ok(other) => unexpected(other),
            Err(reply) => reply,
        }
    }

    /// Lifts the ban on `user`.
    pub(super) fn unban(&self, user: &str) -> Reply {
        if let Err(reply) = check_user(user) {
            return reply;
        }
        let action = ModAction::Unban {
            user: user.to_owned(),
        };
        match self.run_moderation(action, None) {
            Ok(Outcome::Unbanned { was_banned: true }) => Reply::ok(&json!({ "user": user })),
            Ok(Outcome::Unbanned { was_banned: false }) => {
                Reply::error(404, format!("user {user} is not banned"))
            }
            Ok(other) => unexpected(other),
            Err(reply) => reply,
        }
    }

    /// Deletes the comment at `offset` of `topic`.
    pub(super) fn delete_comment(&self, topic: &str, offset: &str) -> Reply {
        let topic = match Topic::new(topic) {
            Ok(topic) => topic,
            Err(e) => return Reply::error(400, format!("invalid topic name {topic:?}: {e}")),
        };
        let Ok(offset) = offset.parse::<u64>() else {
            return Reply::error(400, format!("invalid offset {offset:?}: expected a number"));
        };
        let action = ModAction::DeleteComment {
            topic: topic.clone(),
            offset,
        };
        let deletion = match self.run_moderation(action, None) {
            Ok(Outcome::Deleted(deletion)) => deletion,
            Ok(other) => return unexpected(other),
            Err(reply) => return reply,
        };
        let tombstone = match deletion {
            Deletion::Tombstone(tombstone) => Value::from(tombstone),
            Deletion::AlreadyDeleted => Value::Null,
        };
        Reply::ok(&json!({
            "topic": topic.as_str(),
            "offset": offset,
            "tombstone": tombstone,
            "already_deleted": deletion == Deletion::AlreadyDeleted,
        }))
    }

    /// Sends the action to the first worker and waits for its outcome.
    fn run_moderation(&self, action: ModAction, reason: Option<String>) -> Result<Outcome, Reply> {
        let Some(worker) = self.shared.workers.first() else {
            return Err(Reply::error(503, "the broker has no worker running"));
        };
        let (reply, outcome) = mpsc::channel();
        worker.send(WorkerMsg::Admin(AdminRequest::Moderate {
            action,
            reason,
            reply,
        }));
        worker.wake();
        match outcome.recv_timeout(MODERATION_TIMEOUT) {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(code)) => Err(rejection(code)),
            Err(_) => Err(Reply::error(
                503,
                "the worker did not answer in time; the action may still complete, so check \
                 the result before trying again",
            )),
        }
    }
}

/// Checks a user id from a request.
fn check_user(user: &str) -> Result<(), Reply> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(Reply::error(
            400,
            format!("invalid user id {user:?}: expected 1 to {MAX_USER_BYTES} bytes"),
        ));
    }
    Ok(())
}

/// Reads `purge_topic` and `purge_s` from a ban request: both or neither.
fn purge_window(query: &str) -> Result<Option<(Topic, u64)>, Reply> {
    let topic = query_param(query, "purge_topic");
    let seconds = query_param(query, "purge_s");
    let (topic, seconds) = match (topic, seconds) {
        (None, None) => return Ok(None),
        (Some(topic), Some(seconds)) => (topic, seconds),
        _ => {
            return Err(Reply::error(
                400,
                "purge_topic and purge_s go together: give both to delete the user's recent \
                 comments, or neither",
            ))
        }
    };
    let topic = Topic::new(topic.as_str())
        .map_err(|e| Reply::error(400, format!("invalid purge_topic {topic:?}: {e}")))?;
    let seconds = match seconds.parse::<u64>() {
        Ok(seconds) if seconds > 0 => seconds,
        _ => {
            return Err(Reply::error(
                400,
                format!("invalid purge_s {seconds:?}: expected a number of seconds above 0"),
            ))
        }
    };
    Ok(Some((topic, seconds)))
}

/// Maps the code that rejected an action to a reply.
fn rejection(code: ErrorCode) -> Reply {
    let (status, message) = match code {
        ErrorCode::CommentNotFound => (
            404,
            "comment not found: the topic does not keep that offset, or it is a tombstone",
        ),
        ErrorCode::WrongOrigin => (
            409,
            "the cluster's topic map assigns this topic to another origin; send the request there",
        ),
        ErrorCode::Forbidden => (
            400,
            "the purge window is longer than moderation.max_purge_s allows",
        ),
        _ => (500, "the action failed; the broker's log has the details"),
    };
    Reply::json(status, &json!({ "error": message, "code": code.name() }))
}

/// Reply for an outcome that does not belong to the action; it points to a bug in the broker.
fn unexpected(outcome: Outcome) -> Reply {
    Reply::error(500, format!("unexpected moderation outcome {outcome:?}"))
}
