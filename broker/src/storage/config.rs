//! Settings of a topic log.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::error::StorageError;
use super::segment::SEGMENT_HEADER_LEN;

/// Smallest accepted [`LogConfig::segment_bytes`].
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// Largest accepted [`LogConfig::segment_bytes`]: record positions in the sparse index are
/// `u32`, and each active segment reserves this much address space for its memory map.
pub const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

/// When committed records are flushed to the disk with `fdatasync`.
///
/// In a configuration file this is `"always"`, `"never"` or `{ interval_ms = 100 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every commit syncs before it returns, so a committed entry survives a power loss.
    Always,
    /// A commit syncs when at least this long has passed since the last sync. Entries committed
    /// in between survive a crash of the process but not a power loss.
    Interval(Duration),
    /// Commits never sync; the kernel writes data back on its own schedule.
    /// [`super::TopicLog::sync`] still syncs.
    Never,
}

/// Settings of one topic log.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size in bytes, header included, past which a segment is closed and a new one started.
    pub segment_bytes: u64,
    /// Milliseconds of broker time after a segment's first record past which the segment is
    /// closed, minus a per-topic jitter of up to a tenth of this value; 0 closes segments by
    /// size only.
    pub segment_ms: u64,
    /// Bytes of records between two entries of the sparse offset index. Smaller values make
    /// reads from the middle of a segment scan less and cost more memory; 0 indexes every
    /// record.
    pub index_interval_bytes: u32,
    /// Bytes of records between two entries of the sparse time index, which serves reads that
    /// start at a time; 0 indexes every record.
    pub time_index_interval_bytes: u32,
    /// When commits flush to the disk.
    pub fsync: FsyncPolicy,
    /// Whether reads go through memory maps (true) or positioned reads (false).
    pub use_mmap: bool,
    /// Milliseconds a closed segment is kept after its newest record's broker time; 0 keeps
    /// segments whatever their age.
    pub retention_ms: u64,
    /// Bytes the topic's segment files may take in total before the oldest closed segments are
    /// deleted; 0 sets no limit. The active segment is never deleted, so a topic can exceed
    /// this by up to one segment.
    pub retention_bytes: u64,
    /// Milliseconds without an append after which the whole topic is deleted; 0 keeps idle
    /// topics.
    pub topic_idle_delete_ms: u64,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 64 * 1024 * 1024,
            segment_ms: DAY_MS,
            index_interval_bytes: 4096,
            time_index_interval_bytes: 64 * 1024,
            fsync: FsyncPolicy::Never,
            use_mmap: true,
            retention_ms: 7 * DAY_MS,
            retention_bytes: 0,
            topic_idle_delete_ms: 0,
        }
    }
}

/// Milliseconds in a day.
const DAY_MS: u64 = 24 * 60 * 60 * 1000;

impl LogConfig {
    /// Checks that the values are within their accepted ranges.
    pub fn validate(&self) -> Result<(), StorageError> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&self.segment_bytes) {
            return Err(StorageError::InvalidConfig(format!(
                "segment_bytes is {}, it must be between {MIN_SEGMENT_BYTES} and \
                 {MAX_SEGMENT_BYTES}",
                self.segment_bytes
            )));
        }
        debug_assert!(MIN_SEGMENT_BYTES > SEGMENT_HEADER_LEN as u64);
        Ok(())
    }

    /// Returns the age in microseconds past which a segment rolls, before jitter, or `None`
    /// when segments roll by size only.
    pub(super) fn segment_age_us(&self) -> Option<u64> {
        (self.segment_ms > 0).then(|| self.segment_ms.saturating_mul(1000))
    }
}

impl<'de> Deserialize<'de> for FsyncPolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<FsyncPolicy, D::Error> {
        deserializer.deserialize_any(FsyncPolicyVisitor)
    }
}

struct FsyncPolicyVisitor;

impl<'de> Visitor<'de> for FsyncPolicyVisitor {
    type Value = FsyncPolicy;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#""always", "never" or a table { interval_ms = <milliseconds> }"#)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<FsyncPolicy, E> {
        match value {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FsyncPolicy, A::Error> {
        let mut interval_ms = None;
        while let Some(key) = map.next_key::<String>()? {
            if key != "interval_ms" {
                return Err(de::Error::unknown_field(&key, &["interval_ms"]));
            }
            if interval_ms.is_some() {
                return Err(de::Error::duplicate_field("interval_ms"));
            }
            interval_ms = Some(map.next_value::<u64>()?);
        }
        let interval_ms = interval_ms.ok_or_else(|| de::Error::missing_field("interval_ms"))?;
        Ok(FsyncPolicy::Interval(Duration::from_millis(interval_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct Wrapper {
        fsync: FsyncPolicy,
    }

    fn parse_policy(text: &str) -> Result<FsyncPolicy, toml::de::Error> {
        toml::from_str::<Wrapper>(text).map(|w| w.fsync)
    }

    #[test]
    fn fsync_policy_parses_words() {
        assert_eq!(
            parse_policy(r#"fsync = "always""#).unwrap(),
            FsyncPolicy::Always
        );
        assert_eq!(
            parse_policy(r#"fsync = "never""#).unwrap(),
            FsyncPolicy::Never
        );
    }

    #[test]
    fn fsync_policy_parses_interval() {
        let policy = parse_policy("fsync = { interval_ms = 250 }").unwrap();
        assert_eq!(policy, FsyncPolicy::Interval(Duration::from_millis(250)));
    }

    #[test]
    fn fsync_policy_rejects_unknown_forms() {
        assert!(parse_policy(r#"fsync = "sometimes""#).is_err());
        assert!(parse_policy("fsync = { interval = 250 }").is_err());
        assert!(parse_policy("fsync = {}").is_err());
        assert!(parse_policy("fsync = 5").is_err());
    }

    #[test]
    fn log_config_fills_missing_fields_with_defaults() {
        let config: LogConfig = toml::from_str("segment_bytes = 1000").unwrap();
        let expected = LogConfig {
            segment_bytes: 1000,
            ..LogConfig::default()
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn log_config_rejects_unknown_fields() {
        assert!(toml::from_str::<LogConfig>("segment_size = 1000").is_err());
    }

    #[test]
    fn validate_rejects_tiny_segments() {
        let config = LogConfig {
            segment_bytes: MIN_SEGMENT_BYTES - 1,
            ..LogConfig::default()
        };
        assert!(matches!(
            config.validate(),
            Err(StorageError::InvalidConfig(_))
        ));
    }

    #[test]
    fn default_config_is_valid() {
        assert!(LogConfig::default().validate().is_ok());
    }
}
