//! A test harness that drives the relay's decisions on simulated time, with no threads, sockets
//! or sleeps.
//!
//! Every decision is made by the relay's own code. [`Failover`], [`jitter`] and
//! [`probe_deadline`] plan the reconnects ([`link`]). [`subscribe_request`],
//! [`unsubscribe_applies`], [`apply_subscribed`], [`linger_expired`] and
//! [`RelayTopic::clear`] keep one upstream subscription per topic ([`interest`]).
//! [`EdgeCache`], [`cache_upstream_batch`] and [`start_offset`] decide where a resume starts
//! and what the cache serves ([`edge`]). The harness supplies the time, and the order in which
//! the link thread, the workers and the linger timer call that code. Its network is simple: an
//! upstream is either up or down, and a connection, a probe or a frame takes no time.
//!
//! NOTE: three short sequences are copies, because in the broker they sit inside threads or
//! worker code that takes no simulated clock: the loop of `Link::run` and
//! `Link::serve_until_lost` (`LinkSim::run_until`), the start of an upstream subscription in
//! `Worker::on_relay_subscribe` (`InterestSim::join` and `EdgeSim::resume`), and the clamp in
//! `relay_start` (`EdgeSim::resume`). A change to those needs the same change here.
//!
//! [`Failover`]: super::link::Failover
//! [`jitter`]: super::link::jitter
//! [`probe_deadline`]: super::link::probe_deadline
//! [`subscribe_request`]: super::link::subscribe_request
//! [`unsubscribe_applies`]: super::link::unsubscribe_applies
//! [`apply_subscribed`]: super::link::apply_subscribed
//! [`linger_expired`]: super::linger_expired
//! [`RelayTopic::clear`]: super::RelayTopic::clear
//! [`EdgeCache`]: super::cache::EdgeCache
//! [`cache_upstream_batch`]: super::link::cache_upstream_batch
//! [`start_offset`]: crate::handler::start_offset

mod edge;
mod interest;
mod link;

use std::time::{Duration, Instant};

/// Upper bound on the attempts, probes and linger passes of one simulation, so that a plan
/// that stops advancing time fails the test instead of hanging it.
const MAX_STEPS: usize = 1_000_000;

/// Simulated time: a fixed start, and the time elapsed since it, which only the harness moves.
#[derive(Debug, Clone, Copy)]
struct SimClock {
    start: Instant,
    now: Duration,
}

impl SimClock {
    fn new() -> SimClock {
        SimClock {
            start: Instant::now(),
            now: Duration::ZERO,
        }
    }

    /// Returns the current simulated time as the [`Instant`] that the relay's code takes.
    fn instant(&self) -> Instant {
        self.start + self.now
    }

    /// Returns the simulated time of an [`Instant`] made from this clock.
    fn elapsed_at(&self, instant: Instant) -> Duration {
        instant.duration_since(self.start)
    }
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}
