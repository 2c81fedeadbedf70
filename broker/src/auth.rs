//! Client authentication with JSON Web Tokens, and the permissions a token grants.
//!
//! With `[auth] enabled = true`, the token in HELLO is a JWT signed by the platform's backend
//! with HS256 (a shared secret) or EdDSA (an Ed25519 key pair, whose public key the broker
//! reads from a file). Its claims name the user (`sub`), a role, the topic patterns the user may
//! subscribe and publish to, and the expiry (`exp`). A HELLO without a token opens an anonymous
//! session, which may only subscribe to the configured `anonymous_subscribe` patterns.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use chorus_protocol::ErrorCode;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::storage::TopicPattern;

/// Maximum length in bytes of a token's `sub`, because the `publisher` field of a stored comment
/// is a str8.
const MAX_SUB_BYTES: usize = 255;

/// Settings of client authentication: the `[auth]` table of the configuration file.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Whether clients need a token; when false every client may subscribe and publish to every
    /// topic, and tokens are ignored.
    pub enabled: bool,
    /// Shared secret of HS256 tokens. Never written out when the configuration is serialized.
    #[serde(skip_serializing)]
    pub hs256_secret: Option<String>,
    /// File whose contents, without surrounding white space, are the HS256 secret.
    pub hs256_secret_file: Option<PathBuf>,
    /// PEM file with the Ed25519 public key that verifies EdDSA tokens.
    pub eddsa_public_key_file: Option<PathBuf>,
    /// Topic patterns that clients without a token may subscribe to.
    pub anonymous_subscribe: Vec<TopicPattern>,
    /// Seconds of clock difference allowed between the token issuer and the broker: a token
    /// stays valid until `exp` plus this many seconds.
    pub leeway_s: u64,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            enabled: false,
            hs256_secret: None,
            hs256_secret_file: None,
            eddsa_public_key_file: None,
            anonymous_subscribe: Vec::new(),
            leeway_s: 30,
        }
    }
}

/// Shows whether a secret is set without showing the secret.
impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("enabled", &self.enabled)
            .field(
                "hs256_secret",
                &self.hs256_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("hs256_secret_file", &self.hs256_secret_file)
            .field("eddsa_public_key_file", &self.eddsa_public_key_file)
            .field("anonymous_subscribe", &self.anonymous_subscribe)
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

impl AuthConfig {
    /// Checks values that parse but cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.hs256_secret.is_some() && self.hs256_secret_file.is_some() {
            return Err(ConfigError::Invalid(
                "auth.hs256_secret and auth.hs256_secret_file are both set; keep one of them"
                    .into(),
            ));
        }
        if self
            .hs256_secret
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(ConfigError::Invalid(
                "auth.hs256_secret is empty; remove it or set a secret".into(),
            ));
        }
        let has_key = self.hs256_secret.is_some()
            || self.hs256_secret_file.is_some()
            || self.eddsa_public_key_file.is_some();
        if self.enabled && !has_key {
            return Err(ConfigError::Invalid(
                "auth.enabled is true but no key is set; set auth.hs256_secret, \
                 auth.hs256_secret_file or auth.eddsa_public_key_file"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// Error loading the token keys at start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthKeyError {
    /// A key file could not be read.
    #[error("failed to read token key file {path}: {source}")]
    Read {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The HS256 secret file is empty.
    #[error("token secret file {0} is empty")]
    EmptySecret(PathBuf),
    /// The HS256 secret was rejected as a key.
    #[error("invalid HS256 token secret: {0}")]
    InvalidSecret(jsonwebtoken::errors::Error),
    /// The EdDSA public key file contains no Ed25519 public key in PEM.
    #[error("invalid Ed25519 public key in {path}: {source}")]
    InvalidKey {
        /// Path of the file.
        path: PathBuf,
        /// Underlying error.
        source: jsonwebtoken::errors::Error,
    },
}

/// A role claim of a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenRole {
    /// Subscribes to `sub_topics`; never publishes.
    #[default]
    Viewer,
    /// Subscribes to `sub_topics` and publishes to `pub_topics`.
    Commenter,
    /// Same permissions as a commenter.
    Moderator,
    /// A relay's upstream connection: subscribes to `sub_topics` and publishes to `pub_topics`
    /// on behalf of the relay's clients.
    Relay,
    /// Subscribes and publishes to every topic.
    Admin,
}

/// The claims the broker reads from a token; others are ignored.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    role: TokenRole,
    #[serde(default)]
    sub_topics: Vec<TopicPattern>,
    #[serde(default)]
    pub_topics: Vec<TopicPattern>,
    exp: u64,
    /// Whether the holder's comments get the PRIORITY flag, as for the host of an event. Any
    /// value other than a boolean makes the token invalid.
    #[serde(default)]
    priority: bool,
}

/// Verifies HELLO tokens with the keys named in `[auth]`.
pub(crate) struct Verifier {
    hs256: Option<DecodingKey>,
    eddsa: Option<DecodingKey>,
    leeway_s: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("hs256", &self.hs256.is_some())
            .field("eddsa", &self.eddsa.is_some())
            .field("leeway_s", &self.leeway_s)
            .finish()
    }
}

impl Verifier {
    /// Loads the keys of an enabled `[auth]` table; returns `None` when authentication is off.
    pub(crate) fn from_config(config: &AuthConfig) -> Result<Option<Verifier>, AuthKeyError> {
        if !config.enabled {
            return Ok(None);
        }
        let secret = match (&config.hs256_secret, &config.hs256_secret_file) {
            (Some(secret), _) => Some(secret.trim().to_owned()),
            (None, Some(path)) => Some(read_secret(path)?),
            (None, None) => None,
        };
        let eddsa = match &config.eddsa_public_key_file {
            Some(path) => Some(read_ed25519_key(path)?),
            None => None,
        };
        let hs256 = match secret {
            Some(secret) => Some(
                DecodingKey::from_secret(secret.as_bytes()).map_err(AuthKeyError::InvalidSecret)?,
            ),
            None => None,
        };
        Ok(Some(Verifier {
            hs256,
            eddsa,
            leeway_s: config.leeway_s,
        }))
    }

    /// Opens the session of a HELLO token: anonymous when the token is empty.
    pub(crate) fn session(&self, token: &str) -> Result<Session, String> {
        if token.is_empty() {
            return Ok(Session::Anonymous);
        }
        self.verify(token).map(Session::Token)
    }

    /// Checks the token's signature, algorithm, expiry and claims.
    fn verify(&self, token: &str) -> Result<Grant, String> {
        let header = jsonwebtoken::decode_header(token).map_err(describe_jwt_error)?;
        let key = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::EdDSA => self.eddsa.as_ref(),
            _ => None,
        };
        let Some(key) = key else {
            return Err(format!(
                "token is signed with {:?}, for which this broker has no key",
                header.alg
            ));
        };
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        // NOTE: the audience is not checked, so a token for another service signed with the
        // same key is accepted.
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(describe_jwt_error)?
            .claims;
        Grant::new(claims, self.leeway_s)
    }
}

fn read_secret(path: &Path) -> Result<String, AuthKeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| AuthKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(AuthKeyError::EmptySecret(path.to_owned()));
    }
    Ok(secret.to_owned())
}

fn read_ed25519_key(path: &Path) -> Result<DecodingKey, AuthKeyError> {
    let pem = std::fs::read(path).map_err(|source| AuthKeyError::Read {
        path: path.to_owned(),
        source,
    })?;
    DecodingKey::from_ed_pem(&pem).map_err(|source| AuthKeyError::InvalidKey {
        path: path.to_owned(),
        source,
    })
}

/// Returns a message for a rejected token, without the token itself.
fn describe_jwt_error(error: jsonwebtoken::errors::Error) -> String {
    match error.kind() {
        ErrorKind::InvalidSignature => "token signature is invalid".into(),
        ErrorKind::ExpiredSignature => "token expired".into(),
        ErrorKind::ImmatureSignature => "token is not valid yet (nbf is in the future)".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("token has no {claim} claim"),
        ErrorKind::InvalidAlgorithm => "token algorithm does not match its key".into(),
        ErrorKind::Json(e) => format!("token claims are invalid: {e}"),
        _ => format!("invalid token: {error}"),
    }
}

/// Permissions of a verified token.
#[derive(Debug)]
pub(crate) struct Grant {
    /// User id, stored as the publisher of the session's comments.
    sub: String,
    role: TokenRole,
    sub_topics: Vec<TopicPattern>,
    pub_topics: Vec<TopicPattern>,
    /// Unix time in seconds after which the token is expired: `exp` plus the leeway.
    valid_until_s: u64,
    /// Value of the `priority` claim.
    priority: bool,
}

impl Grant {
    fn new(claims: Claims, leeway_s: u64) -> Result<Grant, String> {
        if claims.sub.is_empty() {
            return Err("token sub claim is empty".into());
        }
        if claims.sub.len() > MAX_SUB_BYTES {
            return Err(format!(
                "token sub claim is {} bytes, the maximum is {MAX_SUB_BYTES}",
                claims.sub.len()
            ));
        }
        Ok(Grant {
            sub: claims.sub,
            role: claims.role,
            sub_topics: claims.sub_topics,
            pub_topics: claims.pub_topics,
            valid_until_s: claims.exp.saturating_add(leeway_s),
            priority: claims.priority,
        })
    }

    fn is_expired(&self, now_s: u64) -> bool {
        now_s > self.valid_until_s
    }
}

/// The permissions of one connection, set by its HELLO.
#[derive(Debug)]
pub(crate) enum Session {
    /// Authentication is off, so everything is allowed.
    Open,
    /// No token: subscribes to the `anonymous_subscribe` patterns only, which every session
    /// may also subscribe to.
    Anonymous,
    /// A verified token.
    Token(Grant),
}

/// A request that the session does not allow, with the code that rejects it.
#[derive(Debug)]
pub(crate) struct Denial {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl Session {
    /// Returns the publisher id stored with the session's comments: the token's `sub`, or empty.
    pub(crate) fn publisher(&self) -> &str {
        match self {
            Session::Token(grant) => &grant.sub,
            Session::Open | Session::Anonymous => "",
        }
    }

    /// Returns whether the session's comments get the PRIORITY entry flag: those of moderators,
    /// admins and holders of a token with `"priority": true`. Sessions without a token never do.
    pub(crate) fn has_priority(&self) -> bool {
        match self {
            Session::Token(grant) => {
                grant.priority || matches!(grant.role, TokenRole::Moderator | TokenRole::Admin)
            }
            Session::Open | Session::Anonymous => false,
        }
    }

    /// Returns the role claim of the session's token, or `None` for a session without a token.
    pub(crate) fn role(&self) -> Option<TokenRole> {
        match self {
            Session::Token(grant) => Some(grant.role),
            Session::Open | Session::Anonymous => None,
        }
    }

    /// Returns whether the session may send MODERATE: without authentication every session
    /// may; with it, an unexpired token with the moderator, admin or relay role.
    pub(crate) fn may_moderate(&self, now_s: u64) -> bool {
        match self {
            Session::Open => true,
            Session::Anonymous => false,
            Session::Token(grant) => {
                !grant.is_expired(now_s)
                    && matches!(
                        grant.role,
                        TokenRole::Moderator | TokenRole::Admin | TokenRole::Relay
                    )
            }
        }
    }

    /// Returns whether the session's token has expired at `now_s`.
    pub(crate) fn is_expired(&self, now_s: u64) -> bool {
        match self {
            Session::Token(grant) => grant.is_expired(now_s),
            Session::Open | Session::Anonymous => false,
        }
    }

    /// Checks a SUBSCRIBE to `topic`; `anonymous` lists the patterns open to every client.
    pub(crate) fn check_subscribe(
        &self,
        topic: &str,
        anonymous: &[TopicPattern],
        now_s: u64,
    ) -> Result<(), Denial> {
        let allowed = match self {
            Session::Open => true,
            Session::Anonymous => matches_any(anonymous, topic),
            // A signed-in client may read whatever an anonymous one may.
            Session::Token(grant) => {
                check_expiry(grant, now_s)?;
                grant.role == TokenRole::Admin
                    || matches_any(&grant.sub_topics, topic)
                    || matches_any(anonymous, topic)
            }
        };
        if allowed {
            return Ok(());
        }
        Err(Denial {
            code: ErrorCode::Forbidden,
            message: format!("this session may not subscribe to topic {topic}"),
        })
    }

    /// Checks a PUBLISH to `topic`.
    pub(crate) fn check_publish(&self, topic: &str, now_s: u64) -> Result<(), Denial> {
        let grant = match self {
            Session::Open => return Ok(()),
            Session::Anonymous => {
                return Err(Denial {
                    code: ErrorCode::Forbidden,
                    message: "anonymous sessions may not publish; connect with a token".into(),
                });
            }
            Session::Token(grant) => grant,
        };
        check_expiry(grant, now_s)?;
        let allowed = match grant.role {
            TokenRole::Viewer => false,
            TokenRole::Admin => true,
            TokenRole::Commenter | TokenRole::Moderator | TokenRole::Relay => {
                matches_any(&grant.pub_topics, topic)
            }
        };
        if allowed {
            return Ok(());
        }
        Err(Denial {
            code: ErrorCode::Forbidden,
            message: format!("this session may not publish to topic {topic}"),
        })
    }
}

fn check_expiry(grant: &Grant, now_s: u64) -> Result<(), Denial> {
    if grant.is_expired(now_s) {
        return Err(Denial {
            code: ErrorCode::TokenExpired,
            message: "token expired; reconnect with a new token".into(),
        });
    }
    Ok(())
}

fn matches_any(patterns: &[TopicPattern], topic: &str) -> bool {
    patterns.iter().any(|p| p.matches(topic))
}

/// Returns the current Unix time in whole seconds, 0 if the clock is before 1970.
pub(crate) fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(role: TokenRole, sub_topics: &[&str], pub_topics: &[&str]) -> Session {
        let patterns = |list: &[&str]| list.iter().map(|p| TopicPattern::new(p).unwrap()).collect();
        Session::Token(Grant {
            sub: "user-1".into(),
            role,
            sub_topics: patterns(sub_topics),
            pub_topics: patterns(pub_topics),
            valid_until_s: 1000,
            priority: false,
        })
    }

    #[test]
    fn viewer_may_not_publish() {
        let session = grant(TokenRole::Viewer, &["live/**"], &["live/**"]);
        let denial = session.check_publish("live/final", 10).unwrap_err();
        assert_eq!(denial.code, ErrorCode::Forbidden);
    }

    #[test]
    fn commenter_publishes_inside_patterns_only() {
        let session = grant(TokenRole::Commenter, &[], &["live/*"]);
        assert!(session.check_publish("live/final", 10).is_ok());
        assert!(session.check_publish("live/final/chat", 10).is_err());
    }

    #[test]
    fn admin_subscribes_anywhere() {
        let session = grant(TokenRole::Admin, &[], &[]);
        assert!(session.check_subscribe("any/topic", &[], 10).is_ok());
    }

    #[test]
    fn expired_grant_is_reported_as_expired() {
        let session = grant(TokenRole::Commenter, &["**"], &["**"]);
        let denial = session.check_publish("live", 1001).unwrap_err();
        assert_eq!(denial.code, ErrorCode::TokenExpired);
    }

    #[test]
    fn grant_is_valid_at_its_last_second() {
        let session = grant(TokenRole::Commenter, &["**"], &["**"]);
        assert!(!session.is_expired(1000));
    }

    #[test]
    fn anonymous_subscribes_to_configured_patterns_only() {
        let anonymous = [TopicPattern::new("public/**").unwrap()];
        let session = Session::Anonymous;
        assert!(session.check_subscribe("public/a", &anonymous, 0).is_ok());
        assert!(session.check_subscribe("private/a", &anonymous, 0).is_err());
    }

    #[test]
    fn token_holder_also_reads_anonymous_topics() {
        let anonymous = [TopicPattern::new("public/**").unwrap()];
        let session = grant(TokenRole::Viewer, &["live/**"], &[]);
        assert!(session.check_subscribe("public/a", &anonymous, 0).is_ok());
        assert!(session.check_subscribe("live/a", &anonymous, 0).is_ok());
        assert!(session.check_subscribe("private/a", &anonymous, 0).is_err());
    }

    #[test]
    fn enabled_without_key_is_invalid() {
        let config = AuthConfig {
            enabled: true,
            ..AuthConfig::default()
        };
        assert!(config.validate().is_err());
    }

    #[test]
    fn priority_goes_to_moderators_admins_and_claim_holders() {
        let cases = [
            (TokenRole::Viewer, false, false),
            (TokenRole::Commenter, false, false),
            (TokenRole::Relay, false, false),
            (TokenRole::Moderator, false, true),
            (TokenRole::Admin, false, true),
            (TokenRole::Commenter, true, true),
        ];
        for (role, claim, expected) in cases {
            let Session::Token(mut grant) = grant(role, &[], &[]) else {
                unreachable!("grant returns a token session");
            };
            grant.priority = claim;
            let session = Session::Token(grant);
            assert_eq!(session.has_priority(), expected, "{role:?}, claim {claim}");
        }
    }

    #[test]
    fn sessions_without_token_have_no_priority() {
        assert!(!Session::Open.has_priority());
        assert!(!Session::Anonymous.has_priority());
    }

    #[test]
    fn priority_claim_defaults_to_false() {
        let claims: Claims = serde_json::from_str(r#"{"sub":"u","exp":1}"#).unwrap();
        assert!(!claims.priority);
    }

    #[test]
    fn non_boolean_priority_is_rejected() {
        let claims = r#"{"sub":"u","exp":1,"priority":"yes"}"#;
        assert!(serde_json::from_str::<Claims>(claims).is_err());
    }

    #[test]
    fn unknown_role_is_rejected() {
        let claims = r#"{"sub":"u","exp":1,"role":"owner"}"#;
        assert!(serde_json::from_str::<Claims>(claims).is_err());
    }
}
