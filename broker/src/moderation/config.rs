//! Settings of the publish limits and moderation: the `[moderation]` table of the configuration
//! file.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Largest `duplicate_memory` accepted, so that the per-user memory stays small.
const MAX_DUPLICATE_MEMORY: usize = 1024;

/// Settings of the limits the origin applies to every publish, and of ban purges.
///
/// The per-user limits tell users apart by publisher id. Without authentication every
/// publisher has the empty id, so they share one rate limit, one slow-mode clock and one
/// duplicate memory. The rate limit and the duplicate window are off by default for that reason.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModerationConfig {
    /// Words and phrases that a UTF-8 payload may not contain, matched case-insensitively as
    /// whole words (`BLOCKED_CONTENT`).
    pub blocked_words: Vec<String>,
    /// Comments per minute one user may publish on average, over all topics; 0 turns the rate
    /// limit off (`RATE_LIMITED`).
    pub rate_per_minute: u32,
    /// Comments one user may publish at once after a quiet period: the size of the token
    /// bucket. Used only when `rate_per_minute` is above 0.
    pub rate_burst: u32,
    /// Milliseconds during which a user may not publish the same payload to the same topic
    /// again; 0 turns duplicate suppression off (`DUPLICATE_COMMENT`).
    pub duplicate_window_ms: u64,
    /// Number of recent payloads remembered per user and topic for duplicate suppression.
    pub duplicate_memory: usize,
    /// Largest purge window of a ban, in seconds: a ban may delete the user's comments of at
    /// most this long ago. It bounds the log scan that a purge makes.
    pub max_purge_s: u64,
}

impl Default for ModerationConfig {
    fn default() -> ModerationConfig {
        ModerationConfig {
            blocked_words: Vec::new(),
            rate_per_minute: 0,
            rate_burst: 10,
            duplicate_window_ms: 0,
            duplicate_memory: 16,
            max_purge_s: 24 * 3600,
        }
    }
}

impl ModerationConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for word in &self.blocked_words {
            if super::policy::normalize_words(word).is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "moderation.blocked_words contains {word:?}, which has no letter or digit; \
                     remove it"
                )));
            }
        }
        if self.rate_per_minute > 0 && self.rate_burst == 0 {
            return Err(ConfigError::Invalid(
                "moderation.rate_burst must be at least 1 when moderation.rate_per_minute is set"
                    .into(),
            ));
        }
        if self.duplicate_memory == 0 || self.duplicate_memory > MAX_DUPLICATE_MEMORY {
            return Err(ConfigError::Invalid(format!(
                "moderation.duplicate_memory is {}, it must be 1 to {MAX_DUPLICATE_MEMORY}",
                self.duplicate_memory
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        assert!(ModerationConfig::default().validate().is_ok());
    }

    #[test]
    fn blocked_word_without_letters_is_invalid() {
        let config = ModerationConfig {
            blocked_words: vec!["--".into()],
            ..ModerationConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn rate_without_burst_is_invalid() {
        let config = ModerationConfig {
            rate_per_minute: 5,
            rate_burst: 0,
            ..ModerationConfig::default()
        };
        assert!(config.validate().is_err());
    }
}
