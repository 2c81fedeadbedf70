//! Connection settings and the reconnect schedule.

use std::path::PathBuf;
use std::time::Duration;

use rand::Rng;

/// Settings for [`crate::Connection`] and [`crate::Subscriber`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Client name and version sent in HELLO, for the server's logs; at most 255 bytes.
    pub client_name: String,
    /// Authentication token sent in HELLO; empty when the client has none.
    pub token: String,
    /// Time allowed to open the TCP connection and, separately, to finish the handshake (the
    /// TLS handshake, when [`Options::tls`] is set, and the chorus handshake together).
    pub connect_timeout: Duration,
    /// Time a read may wait for data before it fails with [`crate::ClientError::Timeout`];
    /// `None` waits forever. Writes are not bounded by it.
    pub read_timeout: Option<Duration>,
    /// Largest frame body, in bytes, the client accepts; sent to the server in HELLO.
    pub max_frame: u32,
    /// Delays between reconnect attempts of a [`crate::Subscriber`].
    pub backoff: Backoff,
    /// TLS settings; `None` connects over plain TCP.
    pub tls: Option<TlsOptions>,
    /// Protocol features asked for in HELLO, bits of `chorus_protocol::frame::features`; the
    /// server's WELCOME says which it granted. Ask only for features this client handles: with
    /// `ZSTD_EVENTS`, [`crate::Connection::recv`] returns EVENTS_ZSTD frames as they come.
    pub features: u32,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            client_name: concat!("chorus-client-rust/", env!("CARGO_PKG_VERSION")).to_owned(),
            token: String::new(),
            connect_timeout: Duration::from_secs(5),
            read_timeout: None,
            max_frame: chorus_protocol::DEFAULT_MAX_FRAME,
            backoff: Backoff::default(),
            tls: None,
            features: 0,
        }
    }
}

/// TLS settings of a connection.
///
/// The client offers TLS 1.3 and 1.2, and the ALPN protocol `chorus/1`. Files are read at each
/// connect, so renewed certificates take effect on the next connection.
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    /// PEM file with the CA certificates that may sign the server's certificate; `None` trusts
    /// the operating system's CA certificates, as loaded by `rustls-native-certs`.
    pub ca_file: Option<PathBuf>,
    /// PEM files with the client's certificate chain (leaf first) and its private key, for
    /// servers that require client certificates (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// Name checked against the server's certificate and sent as SNI; `None` takes the host
    /// part of the address, which may be an IP address.
    pub server_name: Option<String>,
    /// Accepts any server certificate, so the connection is encrypted but the server is not
    /// authenticated. For tests against throwaway certificates only; every connect logs a
    /// warning.
    pub insecure_skip_verify_for_testing: bool,
}

/// Exponential backoff with full jitter.
///
/// Before attempt `n` (counted from 0) the delay is drawn uniformly from zero to
/// `min(max, initial * 2^n)`, so clients that lost their connections at the same moment do not
/// come back at the same moment.
#[derive(Clone, Debug)]
pub struct Backoff {
    /// Ceiling of the first delay.
    pub initial: Duration,
    /// Largest ceiling any delay can have.
    pub max: Duration,
    /// Reconnect attempts allowed after a connection is lost; `None` retries forever.
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: None,
        }
    }
}

impl Backoff {
    /// Returns the largest delay before attempt `attempt`, counted from 0.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(u32::MAX);
        self.initial.saturating_mul(factor).min(self.max)
    }

    /// Draws the delay before attempt `attempt`, counted from 0.
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }

    /// Returns whether another attempt is allowed after `attempts` failed ones.
    pub fn allows(&self, attempts: u32) -> bool {
        self.max_attempts.is_none_or(|max| attempts < max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            max_attempts: Some(3),
        }
    }

    #[test]
    fn ceiling_doubles_per_attempt() {
        assert_eq!(backoff().ceiling(0), Duration::from_millis(100));
        assert_eq!(backoff().ceiling(1), Duration::from_millis(200));
        assert_eq!(backoff().ceiling(3), Duration::from_millis(800));
    }

    #[test]
    fn ceiling_stops_at_max() {
        assert_eq!(backoff().ceiling(6), Duration::from_secs(5));
        assert_eq!(backoff().ceiling(200), Duration::from_secs(5));
    }

    #[test]
    fn delay_stays_within_ceiling() {
        for attempt in 0..10 {
            let delay = backoff().delay(attempt);
            assert!(
                delay <= backoff().ceiling(attempt),
                "attempt {attempt}: {delay:?}"
            );
        }
    }

    #[test]
    fn max_attempts_limits_retries() {
        assert!(backoff().allows(2));
        assert!(!backoff().allows(3));
    }

    #[test]
    fn no_max_attempts_retries_forever() {
        let forever = Backoff::default();
        assert!(forever.allows(u32::MAX));
    }
}
