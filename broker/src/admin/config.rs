//! Settings of the admin endpoint: the `[admin]` table of the configuration file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// Default address of the admin endpoint: loopback only.
pub const DEFAULT_ADMIN_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 7480);

/// Settings of the HTTP admin endpoint and the Prometheus metrics it serves.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Whether the admin endpoint runs.
    pub enabled: bool,
    /// Address of the admin endpoint.
    pub listen: SocketAddr,
    /// Bearer token that every request must carry. Never written out when the configuration is
    /// serialized.
    #[serde(skip_serializing)]
    pub token: Option<String>,
    /// File whose contents, without surrounding white space, are the bearer token.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: true,
            listen: DEFAULT_ADMIN_LISTEN,
            token: None,
            token_file: None,
        }
    }
}

/// Shows whether a token is set without showing the token.
impl fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminConfig")
            .field("enabled", &self.enabled)
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .finish()
    }
}

impl AdminConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token.is_some() && self.token_file.is_some() {
            return Err(ConfigError::Invalid(
                "admin.token and admin.token_file are both set; keep one of them".into(),
            ));
        }
        if self.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(ConfigError::Invalid(
                "admin.token is empty; remove it to run without a token, or set a secret".into(),
            ));
        }
        Ok(())
    }

    /// Returns the bearer token from `token` or by reading `token_file`, or `None` when neither
    /// is set.
    pub fn resolve_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(token) = &self.token {
            return Ok(Some(token.trim().to_owned()));
        }
        let Some(path) = &self.token_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let token = text.trim();
        if token.is_empty() {
            return Err(ConfigError::Invalid(format!(
                "admin.token_file {} is empty; write the token into it",
                path.display()
            )));
        }
        Ok(Some(token.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_listens_on_loopback() {
        let config = AdminConfig::default();
        assert!(config.listen.ip().is_loopback());
        assert_eq!(config.listen.port(), 7480);
        assert!(config.enabled);
    }

    #[test]
    fn token_and_token_file_together_are_invalid() {
        let config = AdminConfig {
            token: Some("secret".into()),
            token_file: Some(PathBuf::from("/nonexistent")),
            ..AdminConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn token_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cret\n").unwrap();
        let config = AdminConfig {
            token_file: Some(path),
            ..AdminConfig::default()
        };
        assert_eq!(config.resolve_token().unwrap().as_deref(), Some("s3cret"));
    }

    #[test]
    fn empty_token_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, " \n").unwrap();
        let config = AdminConfig {
            token_file: Some(path),
            ..AdminConfig::default()
        };
        assert!(config.resolve_token().is_err());
    }

    #[test]
    fn debug_hides_token() {
        let config = AdminConfig {
            token: Some("s3cret".into()),
            ..AdminConfig::default()
        };
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
