//! `PUT` and `DELETE /v1/topics/{topic}/retention`: changing a topic's retention limits while
//! the broker runs.
//!
//! The limits are query parameters, because the admin endpoint reads no request body:
//! `max_age_ms` (milliseconds after a closed segment's newest comment) and `max_bytes` (bytes of
//! segment files). Each takes a whole number, where 0 removes the limit, or `default`, which
//! goes back to the configuration file's value. A parameter left out keeps its limit as it is.
//! `DELETE` sets both back to the configuration file's values.

use chorus_protocol::Topic;
use tracing::{error, info, warn};

use super::http::{query_param, Reply};
use super::Admin;
use crate::topics::admin::{LimitChange, RetentionError};

/// Query parameters that `PUT /v1/topics/{topic}/retention` accepts.
const PARAMETERS: [&str; 2] = ["max_age_ms", "max_bytes"];

impl Admin {
    pub(super) fn set_retention(&self, name: &str, query: &str) -> Reply {
        let (max_age_ms, max_bytes) = match parse_changes(query) {
            Ok(changes) => changes,
            Err(message) => return Reply::error(400, message),
        };
        self.change_retention(name, max_age_ms, max_bytes)
    }

    pub(super) fn reset_retention(&self, name: &str) -> Reply {
        self.change_retention(name, LimitChange::Configured, LimitChange::Configured)
    }

    /// Applies the changes and returns the topic as `GET /v1/topics/{topic}` shows it.
    fn change_retention(
        &self,
        name: &str,
        max_age_ms: LimitChange,
        max_bytes: LimitChange,
    ) -> Reply {
        let topic = match Topic::new(name) {
            Ok(topic) => topic,
            Err(e) => return Reply::error(400, format!("invalid topic name {name:?}: {e}")),
        };
        let registry = &self.shared.registry;
        match registry.set_retention(&topic, max_age_ms, max_bytes) {
            Ok(changed) => {
                info!(
                    %topic,
                    retention_ms = changed.config.retention_ms,
                    retention_bytes = changed.config.retention_bytes,
                    retention_ms_set = changed.limits.retention_ms.is_some(),
                    retention_bytes_set = changed.limits.retention_bytes.is_some(),
                    "topic retention changed by an administrator"
                );
                self.topic(name)
            }
            Err(e @ RetentionError::NotFound(_)) => Reply::error(404, e.to_string()),
            Err(e @ RetentionError::Relay) => Reply::error(409, e.to_string()),
            Err(e @ RetentionError::Unavailable { .. }) => {
                warn!(%topic, error = %e, "retention change rejected");
                Reply::error(503, e.to_string())
            }
            Err(RetentionError::Storage(e)) => {
                error!(%topic, error = %e, "failed to change topic retention");
                let message = format!(
                    "failed to change the retention of topic {topic}, which keeps its previous \
                     limits: {e}"
                );
                Reply::error(500, message)
            }
        }
    }
}

/// Parses the query string into the changes of the age and size limits, or returns the message
/// of a 400 reply.
fn parse_changes(query: &str) -> Result<(LimitChange, LimitChange), String> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split_once('=').map_or(pair, |(key, _)| key);
        if !PARAMETERS.contains(&key) {
            return Err(format!(
                "unknown query parameter {key:?}; the retention is set with max_age_ms and \
                 max_bytes, such as ?max_age_ms=7200000&max_bytes=1073741824"
            ));
        }
    }
    let max_age_ms = parse_limit(query, "max_age_ms", "milliseconds")?;
    let max_bytes = parse_limit(query, "max_bytes", "bytes")?;
    if max_age_ms == LimitChange::Keep && max_bytes == LimitChange::Keep {
        return Err(
            "missing retention: set max_age_ms, max_bytes or both as query parameters, such as \
             ?max_age_ms=7200000; use DELETE to go back to the configured retention"
                .to_owned(),
        );
    }
    Ok((max_age_ms, max_bytes))
}

fn parse_limit(query: &str, name: &str, unit: &str) -> Result<LimitChange, String> {
    let Some(text) = query_param(query, name) else {
        return Ok(LimitChange::Keep);
    };
    if text == "default" {
        return Ok(LimitChange::Configured);
    }
    // `u64::from_str` accepts a leading '+', which a limit never needs.
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u64>() {
        Ok(value) if digits => Ok(LimitChange::Set(value)),
        _ => Err(format!(
            "invalid {name} {text:?}: expected a whole number of {unit} from 0 to {} (0 removes \
             the limit), or \"default\" for the configured value",
            u64::MAX
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_limits_are_parsed() {
        let changes = parse_changes("max_age_ms=7200000&max_bytes=1073741824").unwrap();
        assert_eq!(changes.0, LimitChange::Set(7_200_000));
        assert_eq!(changes.1, LimitChange::Set(1_073_741_824));
    }

    #[test]
    fn missing_limit_is_kept() {
        let changes = parse_changes("max_bytes=0").unwrap();
        assert_eq!(changes.0, LimitChange::Keep);
        assert_eq!(changes.1, LimitChange::Set(0));
    }

    #[test]
    fn default_goes_back_to_configuration() {
        let changes = parse_changes("max_age_ms=default").unwrap();
        assert_eq!(changes.0, LimitChange::Configured);
    }

    #[test]
    fn invalid_values_are_rejected() {
        for query in [
            "max_age_ms=-1",
            "max_age_ms=2h",
            "max_age_ms=",
            "max_age_ms=+5",
            "max_bytes=1.5",
            "max_bytes=18446744073709551616",
        ] {
            let message = parse_changes(query).unwrap_err();
            assert!(message.starts_with("invalid max_"), "{query}: {message}");
        }
    }

    #[test]
    fn empty_query_is_rejected() {
        let message = parse_changes("").unwrap_err();
        assert!(message.starts_with("missing retention"), "{message}");
    }

    #[test]
    fn unknown_parameter_is_rejected() {
        let message = parse_changes("max_age=5").unwrap_err();
        assert!(message.contains("unknown query parameter"), "{message}");
    }
}
