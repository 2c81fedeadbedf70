//! The endpoints that change the broker: kick, topic deletion and configuration reload.

use std::collections::BTreeMap;

use chorus_protocol::Topic;
use serde_json::{json, Value};
use tracing::{error, info, warn};

use super::http::Reply;
use super::views::ask_workers;
use super::Admin;
use crate::config::{Config, Limits};
use crate::tls::TlsConfigs;
use crate::worker_admin::AdminRequest;

/// Configuration keys that a reload applies without a restart. Every other changed key is
/// reported as needing a restart.
///
/// `limits.max_frame` and `limits.max_batch_bytes` are not among them: both are agreed with each
/// client in HELLO and WELCOME, so changing them under open connections could break them.
const LIVE_KEYS: [&str; 7] = [
    "limits.max_payload",
    "limits.max_connections",
    "limits.max_subscriptions",
    "limits.outbound_queue_bytes",
    "limits.hello_timeout_ms",
    "limits.idle_timeout_ms",
    "admin.token_file",
];

impl Admin {
    pub(super) fn kick(&self, id: &str) -> Reply {
        let Ok(id) = id.parse::<u64>() else {
            return Reply::error(
                400,
                format!("invalid connection id {id:?}: expected a number"),
            );
        };
        let replies = ask_workers(&self.shared, |reply| AdminRequest::Kick { id, reply });
        if let Some(conn) = replies.replies.into_iter().flatten().next() {
            info!(conn = id, peer = %conn.peer, client = %conn.client, "connection kicked by an administrator");
            return Reply::ok(&json!({ "kicked": conn }));
        }
        if replies.unanswered > 0 {
            let message = format!(
                "{} of {} workers did not answer in time, and connection {id} is not on the \
                 others; try again",
                replies.unanswered,
                self.shared.workers.len()
            );
            return Reply::error(503, message);
        }
        Reply::error(404, format!("connection {id} not found"))
    }

    pub(super) fn delete_topic(&self, name: &str) -> Reply {
        let topic = match Topic::new(name) {
            Ok(topic) => topic,
            Err(e) => return Reply::error(400, format!("invalid topic name {name:?}: {e}")),
        };
        let deleted = match self.shared.registry.delete(&topic) {
            Ok(Some(deleted)) => deleted,
            Ok(None) => return Reply::error(404, format!("topic {topic} not found")),
            Err(e) => {
                error!(%topic, error = %e, "failed to delete topic");
                return Reply::error(500, format!("failed to delete topic {topic}: {e}"));
            }
        };

        let replies = ask_workers(&self.shared, |reply| AdminRequest::DropTopic {
            topic: deleted.state.clone(),
            reply,
        });
        let ended: usize = replies.replies.iter().sum();
        let position = deleted.position;
        info!(
            %topic,
            stream = position.stream,
            end = position.end,
            bytes = deleted.bytes,
            subscriptions_ended = ended,
            "topic deleted by an administrator"
        );
        Reply::ok(&json!({
            "deleted": topic.as_str(),
            "stream": position.stream,
            "end": position.end,
            "bytes_freed": deleted.bytes,
            "subscriptions_ended": ended,
            "unanswered_workers": replies.unanswered,
        }))
    }

    /// Reads the configuration again, applies the keys in [`LIVE_KEYS`], reloads the TLS
    /// certificate, key and client CA files (at the paths the running configuration names),
    /// and reports the changed keys that need a restart. When any of it fails, nothing is
    /// applied.
    pub(super) fn reload(&mut self) -> Reply {
        let loaded = match self.loader.lock().as_ref() {
            Some(load) => load(),
            None => {
                return Reply::error(
                    400,
                    "this server was started without a configuration source, so there is \
                     nothing to reload",
                )
            }
        };
        let file = match loaded {
            Ok(file) => file,
            Err(e) => return not_reloaded(&e.to_string()),
        };

        let mut next = self.running.clone();
        next.limits = live_limits(&self.running.limits, &file.limits);
        next.admin.token = file.admin.token.clone();
        next.admin.token_file = file.admin.token_file.clone();
        if let Err(e) = next.validate() {
            return not_reloaded(&e.to_string());
        }
        let token = match next.admin.resolve_token() {
            Ok(token) => token,
            Err(e) => return not_reloaded(&e.to_string()),
        };

        let (applied, restart) = match classify(&self.running, &file) {
            Ok(changes) => changes,
            Err(e) => return not_reloaded(&format!("failed to compare the configurations: {e}")),
        };
        // Loaded before anything is applied, so that a bad certificate leaves every setting
        // as it was.
        let tls = match self.shared.load_tls() {
            Ok(tls) => tls,
            Err(e) => {
                let reason = format!("failed to load the TLS certificate or key: {e}");
                return not_reloaded(&reason);
            }
        };
        let limits_changed = applied.iter().any(|c| c.key.starts_with("limits."));
        let unanswered = if limits_changed {
            let limits = next.limits.clone();
            ask_workers(&self.shared, |reply| AdminRequest::SetLimits {
                limits: limits.clone(),
                reply,
            })
            .unanswered
        } else {
            0
        };
        let token_changed = token != self.token;
        self.apply_token(token);
        self.running = next;
        log_reload(&applied, &restart, token_changed);
        let tls_reloaded = self.install_tls(tls);

        let mut applied: Vec<Value> = applied.into_iter().map(change_json).collect();
        if token_changed {
            applied.push(
                json!({ "key": "admin.token", "running": "<redacted>", "file": "<redacted>" }),
            );
        }
        Reply::ok(&json!({
            "applied": applied,
            "restart_required": restart.into_iter().map(change_json).collect::<Vec<_>>(),
            "unanswered_workers": unanswered,
            "tls_reloaded": tls_reloaded,
        }))
    }

    /// Puts reloaded TLS configurations in use, if any TLS listener has them; returns whether it
    /// did.
    fn install_tls(&self, tls: Option<TlsConfigs>) -> bool {
        let Some(tls) = tls else {
            return false;
        };
        self.shared.install_tls(tls);
        let config = &self.shared.config.tls;
        info!(
            cert_file = ?config.cert_file,
            key_file = ?config.key_file,
            "TLS certificates reloaded for new connections"
        );
        true
    }

    fn apply_token(&mut self, token: Option<String>) {
        if self.token.is_some() && token.is_none() {
            warn!("admin token removed by a reload: the admin endpoint now serves loopback addresses only, without authentication");
        }
        self.token = token;
    }
}

/// One configuration key whose value differs between the running configuration and the file.
#[derive(Debug, PartialEq)]
struct Change {
    key: String,
    running: Value,
    file: Value,
}

fn change_json(change: Change) -> Value {
    json!({ "key": change.key, "running": change.running, "file": change.file })
}

fn not_reloaded(reason: &str) -> Reply {
    warn!(error = %reason, "configuration reload rejected");
    Reply::error(
        400,
        format!("configuration not reloaded, the running configuration is unchanged: {reason}"),
    )
}

fn log_reload(applied: &[Change], restart: &[Change], token_changed: bool) {
    for change in applied {
        info!(key = %change.key, old = %change.running, new = %change.file, "configuration reloaded");
    }
    if token_changed {
        info!("admin token changed by a reload");
    }
    for change in restart {
        warn!(key = %change.key, running = %change.running, file = %change.file, "configuration key changed, but it takes effect only after a restart");
    }
}

/// Returns `running` with the limits that can change live taken from `file`.
fn live_limits(running: &Limits, file: &Limits) -> Limits {
    Limits {
        max_payload: file.max_payload,
        max_connections: file.max_connections,
        max_subscriptions: file.max_subscriptions,
        outbound_queue_bytes: file.outbound_queue_bytes,
        hello_timeout_ms: file.hello_timeout_ms,
        idle_timeout_ms: file.idle_timeout_ms,
        ..running.clone()
    }
}

/// Splits the keys that differ into those applied live and those that need a restart.
///
/// Fails when a configuration cannot be serialized, which happens for a path that is not valid
/// UTF-8.
fn classify(
    running_config: &Config,
    file_config: &Config,
) -> Result<(Vec<Change>, Vec<Change>), String> {
    let running = flatten(running_config)?;
    let mut file = flatten(file_config)?;
    let mut applied = Vec::new();
    let mut restart = Vec::new();
    for (key, running_value) in running {
        let file_value = file.remove(&key).unwrap_or(Value::Null);
        if file_value == running_value {
            continue;
        }
        let change = Change {
            running: redact(&key, running_value),
            file: redact(&key, file_value),
            key,
        };
        if LIVE_KEYS.contains(&change.key.as_str()) {
            applied.push(change);
        } else {
            restart.push(change);
        }
    }
    restart.extend(file.into_iter().map(|(key, value)| Change {
        running: Value::Null,
        file: redact(&key, value),
        key,
    }));
    // The HS256 secret is never serialized, so the comparison above cannot see it.
    if running_config.auth.hs256_secret != file_config.auth.hs256_secret {
        restart.push(Change {
            key: "auth.hs256_secret".to_owned(),
            running: Value::from(REDACTED),
            file: Value::from(REDACTED),
        });
    }
    Ok((applied, restart))
}

/// Keys whose values are credentials: reload reports show that they changed, never the value.
const SECRET_KEYS: &[&str] = &["relay.token", "admin.token"];

const REDACTED: &str = "<redacted>";

fn redact(key: &str, value: Value) -> Value {
    if SECRET_KEYS.contains(&key) && !value.is_null() {
        return Value::from(REDACTED);
    }
    value
}

/// Returns every leaf of the serialized configuration under its dotted key, such as
/// `limits.max_payload`. Secrets are not serialized, so they never appear.
fn flatten(config: &Config) -> Result<BTreeMap<String, Value>, String> {
    let value = serde_json::to_value(config).map_err(|e| e.to_string())?;
    let mut leaves = BTreeMap::new();
    collect_leaves(String::new(), value, &mut leaves);
    Ok(leaves)
}

fn collect_leaves(prefix: String, value: Value, leaves: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let key = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                collect_leaves(key, value, leaves);
            }
        }
        other => {
            leaves.insert(prefix, other);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changed_secrets_are_reported_redacted() {
        let running = Config::default();
        let mut file = Config::default();
        file.relay.token = "eyJ.secret.token".to_owned();
        file.auth.hs256_secret = Some("new-secret".to_owned());
        let (applied, restart) = classify(&running, &file).unwrap();
        assert!(applied.is_empty());
        let keys: Vec<&str> = restart.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["relay.token", "auth.hs256_secret"]);
        for change in &restart {
            assert_eq!(change.file, Value::from(REDACTED), "{}", change.key);
        }
    }

    #[test]
    fn limit_change_is_applied_live() {
        let running = Config::default();
        let mut file = Config::default();
        file.limits.max_payload = 1000;
        let (applied, restart) = classify(&running, &file).unwrap();
        assert_eq!(applied.len(), 1);
        assert_eq!(applied[0].key, "limits.max_payload");
        assert!(restart.is_empty());
    }

    #[test]
    fn storage_change_needs_restart() {
        let running = Config::default();
        let mut file = Config::default();
        file.storage.segment_bytes = 1 << 20;
        file.limits.max_frame = 2 << 20;
        let (applied, restart) = classify(&running, &file).unwrap();
        assert!(applied.is_empty());
        let keys: Vec<&str> = restart.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["limits.max_frame", "storage.segment_bytes"]);
    }

    #[test]
    fn live_limits_keep_handshake_limits() {
        let running = Limits::default();
        let file = Limits {
            max_frame: 4 << 20,
            max_subscriptions: 3,
            ..Limits::default()
        };
        let merged = live_limits(&running, &file);
        assert_eq!(merged.max_frame, running.max_frame);
        assert_eq!(merged.max_subscriptions, 3);
    }

    #[test]
    fn token_is_not_in_the_diff() {
        let running = Config::default();
        let mut file = Config::default();
        file.admin.token = Some("s3cret".into());
        let (applied, restart) = classify(&running, &file).unwrap();
        assert!(applied.is_empty());
        assert!(restart.is_empty());
    }
}
