//! The `[audience]` table of the configuration: viewer counts and reactions.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::storage::LogConfig;

/// Settings of viewer counts and reactions.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AudienceConfig {
    /// Milliseconds between two viewer counts: a relay sends AUDIENCE upstream this often, and
    /// an origin writes `_viewers/T` this often when the count changed.
    pub interval_ms: u64,
    /// Milliseconds over which reactions are added up: a relay sends its sums upstream this
    /// often, and an origin writes one `_reactions/T` record per interval with reactions.
    pub reaction_interval_ms: u64,
    /// Maximum number of distinct reaction kinds per topic in one reaction interval. Reactions
    /// of further kinds are dropped and counted in `chorus_reactions_dropped`.
    pub max_reaction_kinds: usize,
    /// Milliseconds that the companion topics `_viewers/T` and `_reactions/T` keep their
    /// records, unless a `[[storage.topics]]` pattern matches them. With 0 they follow the
    /// `[storage]` settings.
    pub retention_ms: u64,
}

impl Default for AudienceConfig {
    fn default() -> AudienceConfig {
        AudienceConfig {
            interval_ms: 1000,
            reaction_interval_ms: 250,
            max_reaction_kinds: 64,
            retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl AudienceConfig {
    /// Checks values that parse but cannot work.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "audience.interval_ms must be above 0".into(),
            ));
        }
        if self.reaction_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "audience.reaction_interval_ms must be above 0".into(),
            ));
        }
        if self.max_reaction_kinds == 0 {
            return Err(ConfigError::Invalid(
                "audience.max_reaction_kinds must be above 0".into(),
            ));
        }
        Ok(())
    }

    /// Sets the retention of a companion topic in `log`. Its segments close after a quarter of
    /// `retention_ms`, at most, so that the retention thread can delete a record about a
    /// quarter of the retention time after it expires, not a whole `storage.segment_ms` later.
    pub(crate) fn apply_retention(&self, log: &mut LogConfig) {
        if self.retention_ms == 0 {
            return;
        }
        log.retention_ms = self.retention_ms;
        let segment_ms = (self.retention_ms / 4).max(1);
        if log.segment_ms == 0 || log.segment_ms > segment_ms {
            log.segment_ms = segment_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(AudienceConfig::default().validate().is_ok());
    }

    #[test]
    fn zero_intervals_are_invalid() {
        let viewers = AudienceConfig {
            interval_ms: 0,
            ..AudienceConfig::default()
        };
        assert!(viewers.validate().is_err());
        let reactions = AudienceConfig {
            reaction_interval_ms: 0,
            ..AudienceConfig::default()
        };
        assert!(reactions.validate().is_err());
    }

    #[test]
    fn retention_closes_segments_at_a_quarter() {
        let mut log = LogConfig::default();
        AudienceConfig::default().apply_retention(&mut log);
        assert_eq!(log.retention_ms, 24 * 60 * 60 * 1000);
        assert_eq!(log.segment_ms, 6 * 60 * 60 * 1000);
    }

    #[test]
    fn zero_retention_keeps_storage_settings() {
        let mut log = LogConfig::default();
        let config = AudienceConfig {
            retention_ms: 0,
            ..AudienceConfig::default()
        };
        config.apply_retention(&mut log);
        assert_eq!(log, LogConfig::default());
    }

    #[test]
    fn zero_reaction_kinds_is_invalid() {
        let config = AudienceConfig {
            max_reaction_kinds: 0,
            ..AudienceConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
