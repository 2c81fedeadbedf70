//! Connection settings and the reconnect schedule.

use std::time::Duration;

use rand::Rng;

/// Settings for [`crate::Connection`] and [`crate::Subscriber`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Client name and version sent in HELLO, for the server's logs; at most 255 bytes.
    pub client_name: String,
    /// Authentication token sent in HELLO; empty when the client has none.
    pub token: String,
    /// Time allowed to open the TCP connection and, separately, to finish the handshake.
    pub connect_timeout: Duration,
    /// Time a read may wait for data before it fails with [`crate::ClientError::Timeout`];
    /// `None` waits forever. Writes are not bounded by it.
    pub read_timeout: Option<Duration>,
    /// Largest frame body, in bytes, the client accepts; sent to the server in HELLO.
    pub max_frame: u32,
    /// Delays between reconnect attempts of a [`crate::Subscriber`].
    pub backoff: Backoff,
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
        }
    }
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
