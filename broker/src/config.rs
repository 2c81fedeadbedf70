//! Broker configuration: a TOML file, overridden by command-line flags, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_protocol::Topic;
use serde::{Deserialize, Serialize};

use crate::admin::AdminConfig;
pub use crate::audience::AudienceConfig;
pub use crate::auth::AuthConfig;
use crate::compress::CompressionConfig;
pub use crate::moderation::ModerationConfig;
pub use crate::relay::config::{ClusterConfig, RelayConfig, RelayTlsConfig, Role};
use crate::storage::{FileCacheConfig, FsyncPolicy, LogConfig, TopicPattern};
use crate::tls::TlsConfig;

/// Everything chorusd needs to run, after the file and the flags are merged.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Directory that holds the topic logs; locked by one chorusd at a time.
    pub data_dir: PathBuf,
    /// Addresses of the client listeners.
    pub listen: Vec<SocketAddr>,
    /// Number of event-loop threads; 0 means one per available core.
    pub workers: usize,
    /// Connection and frame limits.
    pub limits: Limits,
    /// Segment log settings.
    pub storage: StorageConfig,
    /// WebSocket listener for browsers.
    pub websocket: WebSocketConfig,
    /// TLS listeners and certificates.
    pub tls: TlsConfig,
    /// HTTP admin endpoint and Prometheus metrics.
    pub admin: AdminConfig,
    /// "origin" (the default) or "relay".
    pub role: Role,
    /// This node's id in the relay tree, for loop detection; empty picks a random id at start.
    pub node_id: String,
    /// Upstream links of a relay.
    pub relay: RelayConfig,
    /// Topic map over several origins.
    pub cluster: ClusterConfig,
    /// Client authentication with tokens.
    pub auth: AuthConfig,
    /// Publish limits and moderation at the origin.
    pub moderation: ModerationConfig,
    /// Delivery to subscriptions capped with CAP.
    pub delivery: DeliveryConfig,
    /// Viewer counts and reactions.
    pub audience: AudienceConfig,
    /// zstd compression of batches sent to relays below this node.
    pub compression: CompressionConfig,
}

/// WebSocket listener settings. The listener carries the same protocol frames as the TCP
/// listener, one frame per binary message, with the same limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebSocketConfig {
    /// Addresses of the WebSocket listeners; empty disables WebSocket. The usual address is
    /// 127.0.0.1:7401.
    pub listen: Vec<SocketAddr>,
    /// Origins (such as "https://example.com") browsers may connect from; "*" allows any.
    /// Clients that send no Origin header, which browsers always send, are not checked.
    pub allowed_origins: Vec<String>,
}

impl Default for WebSocketConfig {
    fn default() -> WebSocketConfig {
        WebSocketConfig {
            listen: Vec::new(),
            allowed_origins: vec!["*".to_owned()],
        }
    }
}

/// Settings of delivery to subscriptions capped with CAP: the `[delivery]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Minimum milliseconds between two SKIPPED frames of one capped subscription. Notices go
    /// out on the worker tick, which runs every 500 ms at most, so the interval is rounded up
    /// to the next tick.
    pub skip_notice_ms: u64,
    /// Microseconds a topic's first uncommitted comment may wait for others before the batch
    /// is committed, acknowledged and sent. 0 commits at the end of every pass of a worker's
    /// event loop, which already gathers the comments that arrived together.
    pub batch_window_us: u64,
    /// Milliseconds a connection may spend with a subscription catching up from the log
    /// without interruption before it is closed with ERROR SLOW_CONSUMER; 0 never closes it.
    /// Checked on the worker tick, every 500 ms at most.
    pub max_catch_up_ms: u64,
}

/// Maximum batching window accepted, in microseconds, because every acknowledgement waits for it.
pub const MAX_BATCH_WINDOW_US: u64 = 100_000;

impl Default for DeliveryConfig {
    fn default() -> DeliveryConfig {
        DeliveryConfig {
            skip_notice_ms: 1000,
            batch_window_us: 0,
            max_catch_up_ms: 300_000,
        }
    }
}

/// Connection and frame limits.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest frame body accepted from a client, in bytes.
    pub max_frame: u32,
    /// Largest publish payload accepted, in bytes.
    pub max_payload: u32,
    /// Maximum number of concurrent client connections; further ones are closed at accept.
    pub max_connections: usize,
    /// Maximum number of topics one connection may subscribe to at once.
    pub max_subscriptions: usize,
    /// Bytes of outbound frames a connection may have queued. A subscriber whose queue reaches
    /// this limit stops receiving live batches and is fed from the log as it drains its queue.
    pub outbound_queue_bytes: usize,
    /// Largest EVENTS batch the broker builds, in bytes.
    pub max_batch_bytes: usize,
    /// Bytes of batches that may wait in one worker's queue from the other workers and the
    /// relay links. Batches beyond it are not queued; that worker's subscribers of the topic
    /// see the gap and catch up from the log or the relay's cache.
    pub worker_queue_bytes: usize,
    /// Milliseconds a new connection has to send its preamble and HELLO.
    pub hello_timeout_ms: u64,
    /// Milliseconds without a complete frame after which a connection is closed; the broker
    /// sends a PING after half of it. A client that trickles a frame byte by byte counts as
    /// silent. 0 disables the check.
    pub idle_timeout_ms: u64,
}

/// Segment log settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Size in bytes at which the active segment is closed and a new one started.
    pub segment_bytes: u64,
    /// When appended records are flushed to the disk: "always" (before every acknowledgement),
    /// "never" (left to the page cache), or "interval" with `fsync_interval_ms`.
    pub fsync: FsyncMode,
    /// Milliseconds between flushes when `fsync = "interval"`.
    pub fsync_interval_ms: u64,
    /// Read segments through memory maps (true) or with plain reads (false).
    pub use_mmap: bool,
    /// Milliseconds of broker time after its first record past which a segment is closed, less
    /// a random per-topic jitter of up to a tenth; 0 closes segments by size only.
    pub segment_ms: u64,
    /// Milliseconds a closed segment is kept after its newest record; 0 keeps every segment.
    pub retention_ms: u64,
    /// Bytes of segment files a topic may keep before its oldest closed segments are deleted;
    /// 0 sets no limit.
    pub retention_bytes: u64,
    /// Milliseconds without a publish after which a topic with no subscribers is deleted
    /// entirely; 0 keeps idle topics.
    pub topic_idle_delete_ms: u64,
    /// Milliseconds between two retention checks of every topic.
    pub retention_check_interval_ms: u64,
    /// Maximum segment files open at once across all topics, each with a descriptor and a
    /// memory map. chorusd lowers it to a quarter of the soft open-file limit (`RLIMIT_NOFILE`)
    /// when that is smaller. Segments beyond it open their files on demand.
    pub max_open_files: usize,
    /// Milliseconds without an append or read after which a segment file is closed; the next
    /// use opens it again. 0 keeps files open until `max_open_files` needs them.
    pub idle_close_ms: u64,
    /// Settings for topics whose names match a pattern; the first match applies.
    pub topics: Vec<TopicStorageConfig>,
}

/// Storage settings for the topics whose names match `pattern`, in a `[[storage.topics]]`
/// table. Keys it omits keep the broker-wide `[storage]` value.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicStorageConfig {
    /// Topic names this applies to: `*` matches within one `/`-separated segment, `**` across
    /// segments.
    pub pattern: TopicPattern,
    /// Overrides `storage.retention_ms`.
    pub retention_ms: Option<u64>,
    /// Overrides `storage.retention_bytes`.
    pub retention_bytes: Option<u64>,
    /// Overrides `storage.topic_idle_delete_ms`.
    pub topic_idle_delete_ms: Option<u64>,
    /// Overrides `storage.fsync`.
    pub fsync: Option<FsyncMode>,
    /// Overrides `storage.fsync_interval_ms`.
    pub fsync_interval_ms: Option<u64>,
}

/// How often appended records are flushed to the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Flush before every acknowledgement.
    Always,
    /// Flush at most every `fsync_interval_ms`.
    Interval,
    /// Leave flushing to the operating system.
    Never,
}

/// Error from loading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read configuration file {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("invalid configuration file {path}: {source}")]
    Parse {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error.
        source: Box<toml::de::Error>,
    },
    /// A value is out of its allowed range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Default for Config {
    fn default() -> Config {
        Config {
            data_dir: PathBuf::from("./chorus-data"),
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 7400))],
            workers: 0,
            limits: Limits::default(),
            storage: StorageConfig::default(),
            websocket: WebSocketConfig::default(),
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            role: Role::Origin,
            node_id: String::new(),
            relay: RelayConfig::default(),
            cluster: ClusterConfig::default(),
            auth: AuthConfig::default(),
            moderation: ModerationConfig::default(),
            delivery: DeliveryConfig::default(),
            audience: AudienceConfig::default(),
            compression: CompressionConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame: chorus_protocol::DEFAULT_MAX_FRAME,
            max_payload: 64 * 1024,
            max_connections: 1_000_000,
            max_subscriptions: 1024,
            outbound_queue_bytes: 1024 * 1024,
            max_batch_bytes: 256 * 1024,
            worker_queue_bytes: 64 * 1024 * 1024,
            hello_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            segment_bytes: 64 * 1024 * 1024,
            fsync: FsyncMode::Never,
            fsync_interval_ms: 1000,
            use_mmap: true,
            segment_ms: 24 * HOUR_MS,
            retention_ms: 7 * 24 * HOUR_MS,
            retention_bytes: 0,
            topic_idle_delete_ms: 0,
            retention_check_interval_ms: 60_000,
            max_open_files: crate::storage::DEFAULT_MAX_OPEN_FILES,
            idle_close_ms: 60_000,
            topics: Vec::new(),
        }
    }
}

/// Milliseconds in an hour.
const HOUR_MS: u64 = 60 * 60 * 1000;

impl StorageConfig {
    /// Checks the storage values that parse but cannot work.
    fn validate(&self) -> Result<(), ConfigError> {
        let defaults = self.log_config_with(None);
        defaults
            .validate()
            .map_err(|e| ConfigError::Invalid(format!("storage: {e}")))?;
        if self.max_open_files == 0 {
            return Err(ConfigError::Invalid(
                "storage.max_open_files must be above 0".into(),
            ));
        }
        if self.retention_check_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.retention_check_interval_ms must be above 0".into(),
            ));
        }
        for (i, topic) in self.topics.iter().enumerate() {
            let mode = topic.fsync.unwrap_or(self.fsync);
            let interval = topic.fsync_interval_ms.unwrap_or(self.fsync_interval_ms);
            if mode == FsyncMode::Interval && interval == 0 {
                return Err(ConfigError::Invalid(format!(
                    "storage.topics[{i}] (pattern {:?}) has fsync = \"interval\" with an \
                     interval of 0 ms; set fsync_interval_ms above 0",
                    topic.pattern.as_str()
                )));
            }
        }
        Ok(())
    }

    /// Returns the settings of the data directory's open segment file budget.
    pub(crate) fn file_cache_config(&self) -> FileCacheConfig {
        FileCacheConfig {
            max_open_files: self.max_open_files,
            idle_close: Duration::from_millis(self.idle_close_ms),
        }
    }

    /// Returns the log settings with the values of `topic` where it sets them.
    pub(crate) fn log_config_with(&self, topic: Option<&TopicStorageConfig>) -> LogConfig {
        let mode = topic.and_then(|t| t.fsync).unwrap_or(self.fsync);
        let interval_ms = topic
            .and_then(|t| t.fsync_interval_ms)
            .unwrap_or(self.fsync_interval_ms);
        let fsync = match mode {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Never => FsyncPolicy::Never,
            FsyncMode::Interval => FsyncPolicy::Interval(Duration::from_millis(interval_ms)),
        };
        LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            fsync,
            use_mmap: self.use_mmap,
            retention_ms: topic
                .and_then(|t| t.retention_ms)
                .unwrap_or(self.retention_ms),
            retention_bytes: topic
                .and_then(|t| t.retention_bytes)
                .unwrap_or(self.retention_bytes),
            topic_idle_delete_ms: topic
                .and_then(|t| t.topic_idle_delete_ms)
                .unwrap_or(self.topic_idle_delete_ms),
            ..LogConfig::default()
        }
    }
}

impl Config {
    /// Reads a TOML file; keys it omits keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let limits = &self.limits;
        if self.listen.is_empty() {
            return Err(ConfigError::Invalid(
                "listen needs at least one address".into(),
            ));
        }
        if limits.max_frame < 1024 {
            return Err(ConfigError::Invalid(format!(
                "limits.max_frame is {} bytes, the minimum is 1024",
                limits.max_frame
            )));
        }
        if limits.max_payload as usize + 1024 > limits.max_frame as usize {
            return Err(ConfigError::Invalid(format!(
                "limits.max_payload ({}) must be at least 1024 bytes below limits.max_frame ({})",
                limits.max_payload, limits.max_frame
            )));
        }
        if limits.max_batch_bytes == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_batch_bytes must be above 0".into(),
            ));
        }
        if limits.hello_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "limits.hello_timeout_ms must be above 0".into(),
            ));
        }
        // A batch contains at least one comment, so one of the largest comments with the longest
        // publisher id must fit. A relay below rejects frames above its own batch size.
        let largest_entry = chorus_protocol::event::entry_len(255, limits.max_payload as usize);
        if limits.max_batch_bytes < largest_entry {
            return Err(ConfigError::Invalid(format!(
                "limits.max_batch_bytes ({}) must hold the largest comment: at least {largest_entry} \
                 bytes for limits.max_payload ({}) and a 255-byte publisher id",
                limits.max_batch_bytes, limits.max_payload
            )));
        }
        if limits.max_batch_bytes > limits.max_frame as usize {
            return Err(ConfigError::Invalid(format!(
                "limits.max_batch_bytes ({}) must not exceed limits.max_frame ({})",
                limits.max_batch_bytes, limits.max_frame
            )));
        }
        if limits.worker_queue_bytes < limits.max_batch_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.worker_queue_bytes ({}) must be at least limits.max_batch_bytes ({})",
                limits.worker_queue_bytes, limits.max_batch_bytes
            )));
        }
        if limits.outbound_queue_bytes < limits.max_batch_bytes {
            return Err(ConfigError::Invalid(format!(
                "limits.outbound_queue_bytes ({}) must be at least limits.max_batch_bytes ({})",
                limits.outbound_queue_bytes, limits.max_batch_bytes
            )));
        }
        if self.storage.fsync == FsyncMode::Interval && self.storage.fsync_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "storage.fsync_interval_ms must be above 0 when storage.fsync = \"interval\""
                    .into(),
            ));
        }
        if self.delivery.skip_notice_ms == 0 {
            return Err(ConfigError::Invalid(
                "delivery.skip_notice_ms must be above 0".into(),
            ));
        }
        if self.delivery.batch_window_us > MAX_BATCH_WINDOW_US {
            return Err(ConfigError::Invalid(format!(
                "delivery.batch_window_us ({}) must be at most {MAX_BATCH_WINDOW_US}",
                self.delivery.batch_window_us
            )));
        }
        self.storage.validate()?;
        self.admin.validate()?;
        self.auth.validate()?;
        self.moderation.validate()?;
        self.audience.validate()?;
        self.compression.validate()?;
        self.validate_tree()?;
        Ok(())
    }

    /// Checks the role, node id, relay and cluster settings.
    fn validate_tree(&self) -> Result<(), ConfigError> {
        if !self.node_id.is_empty() {
            crate::relay::config::validate_node_id(&self.node_id)?;
        }
        if self.role == Role::Relay {
            self.relay.validate(&self.cluster)?;
        }
        self.cluster.validate(self.role, &self.listen)
    }

    /// Returns the number of worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Returns the broker-wide segment log settings in the storage layer's terms.
    pub fn log_config(&self) -> LogConfig {
        self.storage.log_config_with(None)
    }

    /// Returns the segment log settings of `topic`: the broker-wide settings, with the values
    /// of the first `[[storage.topics]]` entry whose pattern matches the topic's name. A
    /// companion topic that no entry matches gets the retention of `[audience]`.
    pub fn log_config_for(&self, topic: &Topic) -> LogConfig {
        let matched = self
            .storage
            .topics
            .iter()
            .find(|t| t.pattern.matches(topic.as_str()));
        let mut config = self.storage.log_config_with(matched);
        if matched.is_none() && crate::audience::is_companion(topic) {
            self.audience.apply_retention(&mut config);
        }
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.listen, Config::default().listen);
        assert_eq!(config.limits.max_payload, 64 * 1024);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let result: Result<Config, _> = toml::from_str("listne = []");
        assert!(result.is_err());
    }

    #[test]
    fn nested_values_override_defaults() {
        let text = "[limits]\nmax_payload = 1000\n[storage]\nfsync = \"always\"\n";
        let config: Config = toml::from_str(text).unwrap();
        assert_eq!(config.limits.max_payload, 1000);
        assert_eq!(config.storage.fsync, FsyncMode::Always);
        assert_eq!(config.limits.max_frame, chorus_protocol::DEFAULT_MAX_FRAME);
    }

    #[test]
    fn payload_close_to_frame_limit_is_invalid() {
        let mut config = Config::default();
        config.limits.max_payload = config.limits.max_frame;
        assert!(config.validate().is_err());
    }

    #[test]
    fn zero_batch_bytes_is_invalid() {
        let mut config = Config::default();
        config.limits.max_batch_bytes = 0;
        config.limits.worker_queue_bytes = 0;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("limits.max_batch_bytes"), "{message}");
    }

    #[test]
    fn batch_smaller_than_largest_comment_is_invalid() {
        let mut config = Config::default();
        config.limits.max_batch_bytes = config.limits.max_payload as usize;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("largest comment"), "{message}");
    }

    #[test]
    fn zero_hello_timeout_is_invalid() {
        let mut config = Config::default();
        config.limits.hello_timeout_ms = 0;
        let message = config.validate().unwrap_err().to_string();
        assert!(message.contains("limits.hello_timeout_ms"), "{message}");
    }

    const TOPIC_OVERRIDES: &str = r#"
        [storage]
        retention_ms = 1000
        fsync = "never"
        [[storage.topics]]
        pattern = "live/*/final"
        retention_ms = 5000
        fsync = "always"
        [[storage.topics]]
        pattern = "live/**"
        retention_bytes = 4096
        fsync = "interval"
    "#;

    #[test]
    fn first_matching_topic_override_applies() {
        let config: Config = toml::from_str(TOPIC_OVERRIDES).unwrap();
        let log = config.log_config_for(&Topic::new("live/cup/final").unwrap());
        assert_eq!(log.retention_ms, 5000);
        assert_eq!(log.retention_bytes, 0);
        assert_eq!(log.fsync, FsyncPolicy::Always);
    }

    #[test]
    fn later_override_applies_when_first_does_not_match() {
        let config: Config = toml::from_str(TOPIC_OVERRIDES).unwrap();
        let log = config.log_config_for(&Topic::new("live/cup/chat").unwrap());
        assert_eq!(log.retention_ms, 1000);
        assert_eq!(log.retention_bytes, 4096);
        assert_eq!(
            log.fsync,
            FsyncPolicy::Interval(Duration::from_millis(1000))
        );
    }

    #[test]
    fn unmatched_topic_gets_broker_settings() {
        let config: Config = toml::from_str(TOPIC_OVERRIDES).unwrap();
        let log = config.log_config_for(&Topic::new("news").unwrap());
        assert_eq!(log, config.log_config());
    }

    #[test]
    fn storage_defaults_keep_a_week() {
        let log = Config::default().log_config();
        assert_eq!(log.retention_ms, 7 * 24 * 3600 * 1000);
        assert_eq!(log.retention_bytes, 0);
        assert_eq!(log.topic_idle_delete_ms, 0);
        assert_eq!(log.segment_ms, 24 * 3600 * 1000);
    }

    #[test]
    fn invalid_topic_pattern_is_rejected() {
        let text = "[[storage.topics]]\npattern = \"live/***\"\n";
        assert!(toml::from_str::<Config>(text).is_err());
    }

    #[test]
    fn unknown_topic_override_key_is_rejected() {
        let text = "[[storage.topics]]\npattern = \"a\"\nsegment_size = 1\n";
        assert!(toml::from_str::<Config>(text).is_err());
    }

    #[test]
    fn zero_topic_fsync_interval_is_invalid() {
        let text =
            "[[storage.topics]]\npattern = \"a\"\nfsync = \"interval\"\nfsync_interval_ms = 0\n";
        let config: Config = toml::from_str(text).unwrap();
        assert!(config.validate().is_err());
    }

    #[test]
    fn zero_retention_check_interval_is_invalid() {
        let mut config = Config::default();
        config.storage.retention_check_interval_ms = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn skip_notice_interval_defaults_to_a_second() {
        let config: Config = toml::from_str("").unwrap();
        assert_eq!(config.delivery.skip_notice_ms, 1000);
    }

    #[test]
    fn zero_skip_notice_interval_is_invalid() {
        let mut config = Config::default();
        config.delivery.skip_notice_ms = 0;
        assert!(config.validate().is_err());
    }

    #[test]
    fn batch_window_above_maximum_is_invalid() {
        let mut config = Config::default();
        config.delivery.batch_window_us = MAX_BATCH_WINDOW_US + 1;
        assert!(config.validate().is_err());
    }

    #[test]
    fn tiny_segments_are_invalid() {
        let mut config = Config::default();
        config.storage.segment_bytes = 10;
        assert!(config.validate().is_err());
    }
}
