//! The `[relay]` and `[cluster]` sections of the configuration file, and the `role` key.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Part a chorusd plays in the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The authority for its topics: it stores comments in its log and assigns their offsets.
    #[default]
    Origin,
    /// Holds no log: it subscribes upstream for its own subscribers, forwards publishes
    /// upstream, and keeps a cache of recent comments per topic.
    Relay,
}

/// Upstream and cache settings of a relay, in the `[relay]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// Upstream nodes (origins or relays) as `host:port`, primary first, then fallbacks in
    /// order. Ignored when `cluster.origins` is set.
    pub upstreams: Vec<String>,
    /// Milliseconds after the last local subscriber of a topic leaves before the relay ends its
    /// upstream subscription and drops the topic's cache.
    pub linger_ms: u64,
    /// Most comments cached per topic.
    pub cache_comments: u64,
    /// Most bytes of EVENTS frames cached per topic.
    pub cache_bytes: usize,
    /// Ceiling of the first reconnect delay, in milliseconds; each failed attempt doubles it.
    pub reconnect_initial_ms: u64,
    /// Largest ceiling of a reconnect delay, in milliseconds.
    pub reconnect_max_ms: u64,
    /// Token sent in HELLO to the upstream; empty sends none.
    pub token: String,
    /// File holding the upstream token, read again before every connection to the upstream, so
    /// that a renewed token takes effect at the next reconnect without a restart. Replaces
    /// `token` when set.
    pub token_file: Option<PathBuf>,
    /// Name sent in HELLO to the upstream, before the relay chain used for loop detection.
    pub client_name: String,
    /// TLS for the upstream links; absent connects over plain TCP.
    pub tls: Option<RelayTlsConfig>,
    /// Whether to ask the upstream for zstd-compressed batches (EVENTS_ZSTD). The relay
    /// decompresses them, so its own subscribers get plain EVENTS unless they ask too.
    pub compression: bool,
    /// Milliseconds between attempts to return to the primary upstream (the first entry of
    /// `upstreams`) while the link is connected to a fallback; 0 stays on the fallback until
    /// it fails.
    pub primary_retry_ms: u64,
}

/// TLS settings of the upstream links, in the `[relay.tls]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayTlsConfig {
    /// PEM file with the CA certificates that may sign the upstream's certificate; absent
    /// trusts the operating system's CA certificates.
    pub ca_file: Option<PathBuf>,
    /// PEM file with this relay's certificate chain, leaf first, for upstreams that require
    /// client certificates (mutual TLS). Needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// PEM file with the private key of `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name checked against the upstream's certificate and sent as SNI; absent takes the host
    /// part of each upstream address.
    pub server_name: Option<String>,
}

/// Topics spread over several origins, in the `[cluster]` table.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Every origin as `host:port`, in the same order on every node. A topic belongs to
    /// `origins[fnv1a64(topic) % origins.len()]`.
    pub origins: Vec<String>,
    /// This origin's entry in `origins`, written exactly as there. An origin with a non-empty
    /// `origins` needs it, unless one of its `listen` addresses equals an entry.
    pub self_origin: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            upstreams: Vec::new(),
            linger_ms: 30_000,
            cache_comments: 100_000,
            cache_bytes: 64 * 1024 * 1024,
            reconnect_initial_ms: 100,
            reconnect_max_ms: 5_000,
            token: String::new(),
            token_file: None,
            client_name: format!("chorusd/{}", env!("CARGO_PKG_VERSION")),
            tls: None,
            compression: true,
            primary_retry_ms: 30_000,
        }
    }
}

impl RelayConfig {
    /// Checks the relay values that parse but cannot work; `cluster` may replace `upstreams`.
    pub(crate) fn validate(&self, cluster: &ClusterConfig) -> Result<(), ConfigError> {
        if self.upstreams.is_empty() && cluster.origins.is_empty() {
            return Err(invalid(
                "role = \"relay\" needs relay.upstreams (or cluster.origins) with at least one \
                 host:port",
            ));
        }
        for upstream in &self.upstreams {
            check_host_port("relay.upstreams", upstream)?;
        }
        if self.token_file.is_some() && !self.token.is_empty() {
            return Err(invalid("set relay.token or relay.token_file, not both"));
        }
        if self.cache_comments == 0 {
            return Err(invalid("relay.cache_comments must be above 0"));
        }
        if self.cache_bytes == 0 {
            return Err(invalid("relay.cache_bytes must be above 0"));
        }
        if self.reconnect_initial_ms == 0 {
            return Err(invalid("relay.reconnect_initial_ms must be above 0"));
        }
        if self.reconnect_max_ms < self.reconnect_initial_ms {
            return Err(invalid(format!(
                "relay.reconnect_max_ms ({}) must be at least relay.reconnect_initial_ms ({})",
                self.reconnect_max_ms, self.reconnect_initial_ms
            )));
        }
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return Err(invalid(
                    "relay.tls.cert_file and relay.tls.key_file must be set together",
                ));
            }
        }
        Ok(())
    }
}

impl ClusterConfig {
    /// Checks the addresses, and on an origin that it can find its own entry.
    pub(crate) fn validate(&self, role: Role, listen: &[SocketAddr]) -> Result<(), ConfigError> {
        for (index, origin) in self.origins.iter().enumerate() {
            check_host_port("cluster.origins", origin)?;
            if self.origins[..index].contains(origin) {
                // Two entries for one origin would give it two shares of the topic map, and
                // every node must agree on which entry owns a topic.
                return Err(invalid(format!(
                    "cluster.origins lists {origin} twice; list each origin once"
                )));
            }
        }
        if role == Role::Origin && !self.origins.is_empty() && self.self_index(listen).is_none() {
            return Err(invalid(
                "cluster.origins does not name this origin: set cluster.self_origin to this \
                 origin's entry in cluster.origins",
            ));
        }
        Ok(())
    }

    /// Returns the index of this origin in `origins`: the entry equal to `self_origin`, or else
    /// the first entry that parses to one of the `listen` addresses.
    pub(crate) fn self_index(&self, listen: &[SocketAddr]) -> Option<usize> {
        if let Some(own) = &self.self_origin {
            return self.origins.iter().position(|o| o == own);
        }
        self.origins.iter().position(|origin| {
            origin
                .parse::<SocketAddr>()
                .is_ok_and(|addr| listen.contains(&addr))
        })
    }
}

/// Checks that a node id can travel in a HELLO relay chain: 1 to 32 ASCII letters, digits,
/// `_` or `-`.
pub(crate) fn validate_node_id(id: &str) -> Result<(), ConfigError> {
    let valid_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if id.is_empty() || id.len() > 32 || !valid_chars {
        return Err(invalid(format!(
            "node_id {id:?} is invalid: use 1 to 32 ASCII letters, digits, '_' or '-'"
        )));
    }
    Ok(())
}

fn check_host_port(key: &str, value: &str) -> Result<(), ConfigError> {
    let valid = value
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if !valid {
        return Err(invalid(format!(
            "{key} entry {value:?} is invalid: expected host:port, such as 127.0.0.1:7400"
        )));
    }
    Ok(())
}

fn invalid(message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(message.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(origins: &[&str], self_origin: Option<&str>) -> ClusterConfig {
        ClusterConfig {
            origins: origins.iter().map(|o| (*o).to_owned()).collect(),
            self_origin: self_origin.map(str::to_owned),
        }
    }

    #[test]
    fn relay_without_upstream_is_invalid() {
        let relay = RelayConfig::default();
        assert!(relay.validate(&ClusterConfig::default()).is_err());
    }

    #[test]
    fn relay_with_cluster_needs_no_upstreams() {
        let relay = RelayConfig::default();
        assert!(relay.validate(&cluster(&["127.0.0.1:7400"], None)).is_ok());
    }

    #[test]
    fn upstream_without_port_is_invalid() {
        let relay = RelayConfig {
            upstreams: vec!["origin.example".to_owned()],
            ..RelayConfig::default()
        };
        assert!(relay.validate(&ClusterConfig::default()).is_err());
    }

    #[test]
    fn origin_listed_twice_is_invalid() {
        let map = cluster(&["127.0.0.1:7400", "127.0.0.1:7400"], None);
        let message = map.validate(Role::Relay, &[]).unwrap_err().to_string();
        assert!(message.contains("twice"), "{message}");
    }

    #[test]
    fn origin_finds_itself_by_listen_address() {
        let map = cluster(&["127.0.0.1:7400", "127.0.0.1:7410"], None);
        let listen = [SocketAddr::from(([127, 0, 0, 1], 7410))];
        assert_eq!(map.self_index(&listen), Some(1));
    }

    #[test]
    fn self_origin_overrides_listen_addresses() {
        let map = cluster(
            &["a.example:7400", "b.example:7400"],
            Some("b.example:7400"),
        );
        assert_eq!(map.self_index(&[]), Some(1));
    }

    #[test]
    fn origin_missing_from_cluster_is_invalid() {
        let map = cluster(&["127.0.0.1:7400"], None);
        let listen = [SocketAddr::from(([127, 0, 0, 1], 7500))];
        assert!(map.validate(Role::Origin, &listen).is_err());
    }

    #[test]
    fn node_id_with_comma_is_invalid() {
        assert!(validate_node_id("a,b").is_err());
        assert!(validate_node_id("edge-1").is_ok());
    }
}
