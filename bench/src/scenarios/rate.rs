//! Publish rates over time: a steady rate, steps such as a spike, or as fast as possible.

use std::time::Duration;

use serde::Serialize;

/// One stretch of constant rate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub(crate) struct Step {
    pub(crate) secs: f64,
    /// Messages per second; above 0.
    pub(crate) rate: f64,
}

/// When each message of a run is due.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum RateSchedule {
    /// Send as fast as the window allows for this many seconds.
    Max { secs: f64 },
    /// Send at these rates, one step after the other.
    Steps(Vec<Step>),
}

impl RateSchedule {
    /// Builds a schedule of `secs` seconds at a steady `rate`, or as fast as possible when
    /// `rate` is `None`.
    pub(crate) fn steady(rate: Option<f64>, secs: f64) -> RateSchedule {
        match rate {
            None => RateSchedule::Max { secs },
            Some(rate) => RateSchedule::Steps(vec![Step { secs, rate }]),
        }
    }

    /// Returns the same schedule with every rate divided by `parts`, one part per publisher.
    pub(crate) fn split(&self, parts: usize) -> RateSchedule {
        match self {
            RateSchedule::Max { secs } => RateSchedule::Max { secs: *secs },
            RateSchedule::Steps(steps) => RateSchedule::Steps(
                steps
                    .iter()
                    .map(|s| Step {
                        secs: s.secs,
                        rate: s.rate / parts.max(1) as f64,
                    })
                    .collect(),
            ),
        }
    }

    pub(crate) fn duration(&self) -> Duration {
        match self {
            RateSchedule::Max { secs } => Duration::from_secs_f64(*secs),
            RateSchedule::Steps(steps) => {
                Duration::from_secs_f64(steps.iter().map(|s| s.secs).sum())
            }
        }
    }

    /// Returns the number of messages due within `elapsed` of the start: message n is due at
    /// [`RateSchedule::time_of`]`(n)`, so message 0 is due at once.
    pub(crate) fn due_count(&self, elapsed: Duration) -> u64 {
        let RateSchedule::Steps(steps) = self else {
            return u64::MAX;
        };
        let mut left = elapsed.as_secs_f64();
        let mut due = 0.0;
        for step in steps {
            let part = left.min(step.secs);
            due += part * step.rate;
            left -= part;
            if left <= 0.0 {
                break;
            }
        }
        (due.floor() as u64 + 1).min(self.total())
    }

    /// Returns the number of messages the whole schedule sends; `u64::MAX` when unbounded.
    pub(crate) fn total(&self) -> u64 {
        match self {
            RateSchedule::Max { .. } => u64::MAX,
            RateSchedule::Steps(steps) => {
                steps.iter().map(|s| s.secs * s.rate).sum::<f64>().round() as u64
            }
        }
    }

    /// Returns when message `n` is due, relative to the start; the schedule's end for a message
    /// past its total.
    pub(crate) fn time_of(&self, n: u64) -> Duration {
        let RateSchedule::Steps(steps) = self else {
            return Duration::ZERO;
        };
        let mut before = 0.0;
        let mut at = 0.0;
        for step in steps {
            let count = step.secs * step.rate;
            if (n as f64) < before + count {
                return Duration::from_secs_f64(at + (n as f64 - before) / step.rate);
            }
            before += count;
            at += step.secs;
        }
        self.duration()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spike() -> RateSchedule {
        RateSchedule::Steps(vec![
            Step {
                secs: 1.0,
                rate: 10.0,
            },
            Step {
                secs: 1.0,
                rate: 100.0,
            },
        ])
    }

    #[test]
    fn first_message_is_due_at_once() {
        assert_eq!(spike().due_count(Duration::ZERO), 1);
        assert_eq!(spike().time_of(0), Duration::ZERO);
    }

    #[test]
    fn due_count_follows_steps() {
        assert_eq!(spike().due_count(Duration::from_millis(500)), 6);
        assert_eq!(spike().due_count(Duration::from_millis(1500)), 61);
        assert_eq!(spike().due_count(Duration::from_secs(5)), 110);
    }

    #[test]
    fn time_of_inverts_due_count() {
        assert_eq!(spike().time_of(5), Duration::from_millis(500));
        assert_eq!(spike().time_of(60), Duration::from_millis(1500));
        assert_eq!(spike().time_of(110), Duration::from_secs(2));
    }

    #[test]
    fn split_divides_rates() {
        let RateSchedule::Steps(steps) = spike().split(2) else {
            panic!("steps expected");
        };
        assert_eq!(steps[1].rate, 50.0);
    }

    #[test]
    fn max_is_always_due() {
        let max = RateSchedule::steady(None, 3.0);
        assert_eq!(max.due_count(Duration::from_secs(1)), u64::MAX);
        assert_eq!(max.duration(), Duration::from_secs(3));
    }
}
