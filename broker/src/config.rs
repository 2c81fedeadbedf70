//! Broker configuration: a TOML file, overridden by command-line flags, over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::storage::{FsyncPolicy, LogConfig};

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
    /// Milliseconds a new connection has to send its preamble and HELLO.
    pub hello_timeout_ms: u64,
    /// Milliseconds of silence after which a connection is closed; the broker sends a PING
    /// after half of it. 0 disables the check.
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

/// Why a configuration could not be loaded.
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
        if limits.max_batch_bytes > limits.max_frame as usize {
            return Err(ConfigError::Invalid(format!(
                "limits.max_batch_bytes ({}) must not exceed limits.max_frame ({})",
                limits.max_batch_bytes, limits.max_frame
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
        Ok(())
    }

    /// Returns the number of worker threads to start.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            return self.workers;
        }
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }

    /// Returns the segment log settings in the storage layer's terms.
    pub fn log_config(&self) -> LogConfig {
        let fsync = match self.storage.fsync {
            FsyncMode::Always => FsyncPolicy::Always,
            FsyncMode::Never => FsyncPolicy::Never,
            FsyncMode::Interval => {
                FsyncPolicy::Interval(Duration::from_millis(self.storage.fsync_interval_ms))
            }
        };
        LogConfig {
            segment_bytes: self.storage.segment_bytes,
            fsync,
            use_mmap: self.storage.use_mmap,
            ..LogConfig::default()
        }
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
}
