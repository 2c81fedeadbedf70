//! Replay speed and the send schedule derived from it.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Serialize, Serializer};

/// Max duration of one sleep while waiting for a send time, so a stop request is seen promptly.
const SLEEP_SLICE: Duration = Duration::from_millis(50);

/// Replay speed relative to the recorded times of a log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Speed {
    /// Send every comment as soon as possible.
    Max,
    /// Divide recorded times by this factor: 1 is real time, 100 is a hundred times faster.
    Factor(f64),
}

impl Speed {
    /// Returns when a comment recorded `at` after the first one is due, relative to the start
    /// of publishing.
    pub(crate) fn due(self, at: Duration) -> Duration {
        match self {
            Speed::Max => Duration::ZERO,
            Speed::Factor(factor) => at.div_f64(factor),
        }
    }
}

impl FromStr for Speed {
    type Err = String;

    fn from_str(s: &str) -> Result<Speed, String> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Speed::Max);
        }
        let factor: f64 = s
            .parse()
            .map_err(|_| format!("invalid speed {s:?}: expected a number or \"max\""))?;
        if !factor.is_finite() || factor < 0.0 {
            return Err(format!("invalid speed {s:?}: must be a finite number >= 0"));
        }
        if factor == 0.0 {
            Ok(Speed::Max)
        } else {
            Ok(Speed::Factor(factor))
        }
    }
}

impl fmt::Display for Speed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Speed::Max => f.write_str("max"),
            Speed::Factor(factor) => write!(f, "{factor}"),
        }
    }
}

impl Serialize for Speed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Speed::Max => serializer.serialize_str("max"),
            Speed::Factor(factor) => serializer.serialize_f64(*factor),
        }
    }
}

/// Sleeps until `deadline` in short slices; returns early, with `false`, once `stop` is true.
pub(crate) fn sleep_until(deadline: Instant, stop: impl Fn() -> bool) -> bool {
    loop {
        if stop() {
            return false;
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::sleep((deadline - now).min(SLEEP_SLICE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_keeps_recorded_times() {
        let due = Speed::Factor(1.0).due(Duration::from_millis(1500));
        assert_eq!(due, Duration::from_millis(1500));
    }

    #[test]
    fn factor_divides_recorded_times() {
        let due = Speed::Factor(100.0).due(Duration::from_secs(36 * 60));
        assert_eq!(due, Duration::from_millis(21_600));
    }

    #[test]
    fn slower_than_real_time_stretches() {
        let due = Speed::Factor(0.5).due(Duration::from_secs(2));
        assert_eq!(due, Duration::from_secs(4));
    }

    #[test]
    fn max_sends_everything_at_once() {
        assert_eq!(Speed::Max.due(Duration::from_secs(3600)), Duration::ZERO);
    }

    #[test]
    fn parse_accepts_max_and_zero() {
        assert_eq!("max".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("MAX".parse::<Speed>(), Ok(Speed::Max));
        assert_eq!("0".parse::<Speed>(), Ok(Speed::Max));
    }

    #[test]
    fn parse_accepts_factors() {
        assert_eq!("1".parse::<Speed>(), Ok(Speed::Factor(1.0)));
        assert_eq!("2.5".parse::<Speed>(), Ok(Speed::Factor(2.5)));
    }

    #[test]
    fn parse_rejects_bad_speeds() {
        for bad in ["-1", "fast", "inf", "NaN", ""] {
            assert!(bad.parse::<Speed>().is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn sleep_until_stops_early() {
        let far = Instant::now() + Duration::from_secs(3600);
        assert!(!sleep_until(far, || true));
    }

    #[test]
    fn sleep_until_past_deadline_returns_at_once() {
        assert!(sleep_until(Instant::now(), || false));
    }
}
