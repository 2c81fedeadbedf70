//! The reconnect plan of one upstream link on simulated time: which upstream it tries when,
//! with which delay, and when it returns to the primary.

use std::time::Duration;

use rand::rngs::StdRng;

use super::{SimClock, MAX_STEPS};
use crate::relay::config::RelayConfig;
use crate::relay::link::{jitter, probe_deadline, Failover, SHORT_SESSIONS_BEFORE_FAILOVER};

/// A period in which one upstream is down, in simulated time: from `from`, until `until`.
#[derive(Debug, Clone, Copy)]
struct Outage {
    upstream: usize,
    from: Duration,
    until: Duration,
}

/// The upstreams of a link, primary first, and when each one is down.
///
/// A connection attempt to an upstream that is down fails at once, as a refused connection on
/// loopback does. A connection drops when its upstream's next outage starts.
///
/// NOTE: an attempt to a host that does not respond takes up to `CONNECT_TIMEOUT` for the TCP
/// connection and again for the handshakes, which delays every later attempt. The harness
/// leaves that time out.
#[derive(Debug, Clone)]
struct Upstreams {
    count: usize,
    outages: Vec<Outage>,
}

impl Upstreams {
    fn new(count: usize) -> Upstreams {
        Upstreams {
            count,
            outages: Vec::new(),
        }
    }

    /// Adds an outage of upstream number `upstream` from `from` until `until`.
    fn down(mut self, upstream: usize, from: Duration, until: Duration) -> Upstreams {
        assert!(upstream < self.count, "no upstream number {upstream}");
        self.outages.push(Outage {
            upstream,
            from,
            until,
        });
        self
    }

    fn is_up(&self, upstream: usize, at: Duration) -> bool {
        !self
            .outages
            .iter()
            .any(|o| o.upstream == upstream && o.from <= at && at < o.until)
    }

    /// Returns when the next outage of `upstream` after `after` starts.
    fn next_outage(&self, upstream: usize, after: Duration) -> Option<Duration> {
        self.outages
            .iter()
            .filter(|o| o.upstream == upstream && o.from > after)
            .map(|o| o.from)
            .min()
    }
}

/// Source of the simulated link's reconnect delays.
#[derive(Debug)]
enum Delays {
    /// The ceiling itself, the longest delay that the jitter allows, so that tests can state
    /// exact times.
    Ceiling,
    /// The link's own [`jitter`], drawing from a seeded generator.
    Jittered(Box<StdRng>),
}

/// Something the simulated link did, at a simulated time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LinkEvent {
    /// A connection attempt to upstream number `target`, which `connected` or failed.
    Attempt {
        at: Duration,
        target: usize,
        connected: bool,
    },
    /// The connection to upstream number `target` dropped.
    Lost { at: Duration, target: usize },
    /// A probe of the primary while connected to a fallback. When it `connected`, the link
    /// moved to the primary.
    Probe { at: Duration, connected: bool },
}

/// The delay before one connection attempt and the ceiling it was drawn under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Backoff {
    ceiling: Duration,
    delay: Duration,
}

/// One upstream link on simulated time: the reconnect and failover plan of `Link::run`.
#[derive(Debug)]
struct LinkSim {
    upstreams: Upstreams,
    failover: Failover,
    primary_retry: Duration,
    delays: Delays,
    clock: SimClock,
    events: Vec<LinkEvent>,
    backoffs: Vec<Backoff>,
    steps: usize,
}

impl LinkSim {
    /// Creates a link to `upstreams` with the reconnect settings of `config`.
    fn new(upstreams: Upstreams, config: &RelayConfig, delays: Delays) -> LinkSim {
        let failover = Failover::new(
            upstreams.count,
            Duration::from_millis(config.reconnect_initial_ms),
            Duration::from_millis(config.reconnect_max_ms),
        );
        LinkSim {
            upstreams,
            failover,
            primary_retry: Duration::from_millis(config.primary_retry_ms),
            delays,
            clock: SimClock::new(),
            events: Vec::new(),
            backoffs: Vec::new(),
            steps: 0,
        }
    }

    /// Counts one step, and panics past [`MAX_STEPS`].
    fn step(&mut self) {
        self.steps += 1;
        assert!(
            self.steps <= MAX_STEPS,
            "link simulation passed {MAX_STEPS} steps at {:?}",
            self.clock.now
        );
    }

    fn draw(&mut self, ceiling: Duration) -> Duration {
        match &mut self.delays {
            Delays::Ceiling => ceiling,
            Delays::Jittered(rng) => jitter(ceiling, rng.as_mut()),
        }
    }

    /// Runs the link until simulated time `until`, as `Link::run` does: wait the drawn delay,
    /// connect to the attempt's target, and serve the connection until it drops.
    fn run_until(&mut self, until: Duration) {
        while self.clock.now < until {
            self.step();
            let attempt = self.failover.next_attempt();
            let delay = self.draw(attempt.ceiling);
            let at = self.clock.now + delay;
            if at > until {
                self.clock.now = until;
                return;
            }
            self.backoffs.push(Backoff {
                ceiling: attempt.ceiling,
                delay,
            });
            self.clock.now = at;
            let connected = self.upstreams.is_up(attempt.target, at);
            self.events.push(LinkEvent::Attempt {
                at,
                target: attempt.target,
                connected,
            });
            if connected {
                self.serve(attempt.target, until);
            } else {
                self.failover.failed();
            }
        }
    }

    /// Serves a connection to `target` made now, as `Link::serve_until_lost` does: probes the
    /// primary every `primary_retry` while on a fallback, and moves to the primary when a probe
    /// connects. Returns when the connection drops or at `until`.
    fn serve(&mut self, mut target: usize, until: Duration) {
        'connection: loop {
            let now = self.clock.instant();
            self.failover.connected_to(now, target);
            let mut probe_due = probe_deadline(target, self.primary_retry, now);
            let drop_at = self.upstreams.next_outage(target, self.clock.now);
            loop {
                self.step();
                let probe_at = probe_due.map(|due| self.clock.elapsed_at(due));
                // A drop at the same time as a probe comes first: the probe would go out from
                // a connection that no longer exists.
                let dropped_first = match (drop_at, probe_at) {
                    (Some(dropped), Some(probe)) => dropped <= probe,
                    (Some(_), None) => true,
                    (None, _) => false,
                };
                let next = if dropped_first { drop_at } else { probe_at };
                let Some(at) = next.filter(|at| *at <= until) else {
                    self.clock.now = until;
                    return;
                };
                self.clock.now = at;
                if dropped_first {
                    self.failover.lost(self.clock.instant());
                    self.events.push(LinkEvent::Lost { at, target });
                    return;
                }
                let connected = self.upstreams.is_up(0, at);
                self.events.push(LinkEvent::Probe { at, connected });
                if connected {
                    target = 0;
                    continue 'connection;
                }
                // `Link::on_probe` plans the next probe from a fallback.
                probe_due = probe_deadline(1, self.primary_retry, self.clock.instant());
            }
        }
    }
}

mod tests {
    use proptest::prelude::*;
    use rand::SeedableRng;

    use super::*;
    use crate::relay::sim::{ms, secs};

    fn config(initial_ms: u64, max_ms: u64, primary_retry_ms: u64) -> RelayConfig {
        RelayConfig {
            reconnect_initial_ms: initial_ms,
            reconnect_max_ms: max_ms,
            primary_retry_ms,
            ..RelayConfig::default()
        }
    }

    fn attempt(at: Duration, target: usize, connected: bool) -> LinkEvent {
        LinkEvent::Attempt {
            at,
            target,
            connected,
        }
    }

    fn probe(at: Duration, connected: bool) -> LinkEvent {
        LinkEvent::Probe { at, connected }
    }

    fn lost(at: Duration, target: usize) -> LinkEvent {
        LinkEvent::Lost { at, target }
    }

    #[test]
    fn link_fails_over_then_returns_to_primary() {
        // The primary is down for the first 45 s. The probe at 30.2 s finds it down, and the
        // one at 60.2 s moves the link back, where it stays.
        let upstreams = Upstreams::new(2).down(0, Duration::ZERO, secs(45));
        let mut link = LinkSim::new(upstreams, &config(100, 2_000, 30_000), Delays::Ceiling);
        link.run_until(secs(300));
        let expected = [
            attempt(Duration::ZERO, 0, false),
            attempt(ms(200), 1, true),
            probe(ms(30_200), false),
            probe(ms(60_200), true),
        ];
        assert_eq!(link.events, expected);
    }

    #[test]
    fn link_backoff_doubles_while_all_down() {
        // Both upstreams are down for a minute: attempts alternate between them, and each
        // delay doubles up to reconnect_max_ms.
        let upstreams =
            Upstreams::new(2)
                .down(0, Duration::ZERO, secs(60))
                .down(1, Duration::ZERO, secs(60));
        let mut link = LinkSim::new(upstreams, &config(100, 5_000, 30_000), Delays::Ceiling);
        link.run_until(secs(90));
        let expected = [
            attempt(ms(0), 0, false),
            attempt(ms(200), 1, false),
            attempt(ms(600), 0, false),
            attempt(ms(1_400), 1, false),
            attempt(ms(3_000), 0, false),
            attempt(ms(6_200), 1, false),
            attempt(ms(11_200), 0, false),
            attempt(ms(16_200), 1, false),
            attempt(ms(21_200), 0, false),
            attempt(ms(26_200), 1, false),
            attempt(ms(31_200), 0, false),
            attempt(ms(36_200), 1, false),
            attempt(ms(41_200), 0, false),
            attempt(ms(46_200), 1, false),
            attempt(ms(51_200), 0, false),
            attempt(ms(56_200), 1, false),
            attempt(ms(61_200), 0, true),
        ];
        assert_eq!(link.events, expected);
    }

    #[test]
    fn link_loss_on_fallback_tries_primary_first() {
        // The link is on the fallback when the fallback drops after a long session. The next
        // attempt goes to the primary with the backoff started over, and because the primary
        // is still down, the link fails over through the list again.
        let upstreams =
            Upstreams::new(3)
                .down(0, Duration::ZERO, secs(600))
                .down(1, secs(100), secs(101));
        let mut link = LinkSim::new(upstreams, &config(100, 2_000, 0), Delays::Ceiling);
        link.run_until(secs(200));
        let expected = [
            attempt(Duration::ZERO, 0, false),
            attempt(ms(200), 1, true),
            lost(secs(100), 1),
            attempt(ms(100_100), 0, false),
            attempt(ms(100_300), 1, false),
            attempt(ms(100_700), 2, true),
        ];
        assert_eq!(link.events, expected);
    }

    #[test]
    fn link_stays_on_fallback_without_primary_retry() {
        // With relay.primary_retry_ms = 0 the link never probes, so it stays on the fallback
        // after the primary comes back, until the fallback drops.
        let upstreams =
            Upstreams::new(2)
                .down(0, Duration::ZERO, secs(10))
                .down(1, secs(120), secs(130));
        let mut link = LinkSim::new(upstreams, &config(100, 2_000, 0), Delays::Ceiling);
        link.run_until(secs(180));
        let expected = [
            attempt(Duration::ZERO, 0, false),
            attempt(ms(200), 1, true),
            lost(secs(120), 1),
            attempt(ms(120_100), 0, true),
        ];
        assert_eq!(link.events, expected);
    }

    #[test]
    fn link_probes_primary_at_fixed_interval() {
        // The primary is down for 5 minutes: the link probes it every primary_retry_ms, with no
        // jitter, and moves at the first probe after it came back.
        let upstreams = Upstreams::new(2).down(0, Duration::ZERO, secs(300));
        let mut link = LinkSim::new(upstreams, &config(100, 2_000, 30_000), Delays::Ceiling);
        link.run_until(secs(600));
        let probes: Vec<LinkEvent> = link
            .events
            .iter()
            .filter(|e| matches!(e, LinkEvent::Probe { .. }))
            .copied()
            .collect();
        let mut expected: Vec<LinkEvent> = (1..=9)
            .map(|n| probe(ms(200) + secs(30) * n, false))
            .collect();
        expected.push(probe(ms(300_200), true));
        assert_eq!(probes, expected);
    }

    #[test]
    fn link_backs_off_on_flapping_upstream() {
        // A single upstream drops every connection within 100 ms, with a 1 ms outage every
        // 100 ms. Every session is shorter than reconnect_max_ms, so each loss counts as a
        // failure and the delay doubles instead of the link retrying in a tight loop.
        let mut upstreams = Upstreams::new(1);
        for tenth in 0..100 {
            let from = ms(tenth * 100 + 50);
            upstreams = upstreams.down(0, from, from + ms(1));
        }
        let mut link = LinkSim::new(upstreams, &config(110, 880, 0), Delays::Ceiling);
        link.run_until(secs(10));
        let delays: Vec<Duration> = link.backoffs.iter().map(|b| b.delay).collect();
        assert_eq!(delays[..5], [ms(0), ms(220), ms(440), ms(880), ms(880)]);
        assert!(delays[5..].iter().all(|d| *d == ms(880)), "{delays:?}");
        let connected = link
            .events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    LinkEvent::Attempt {
                        connected: true,
                        ..
                    }
                )
            })
            .count();
        assert_eq!(connected, delays.len());
    }

    #[test]
    fn link_jitter_draws_within_ceiling() {
        // Every upstream is down throughout, so every attempt fails and backs off.
        let upstreams = Upstreams::new(3)
            .down(0, Duration::ZERO, secs(3_600))
            .down(1, Duration::ZERO, secs(3_600))
            .down(2, Duration::ZERO, secs(3_600));
        let rng = Box::new(StdRng::seed_from_u64(1));
        let mut link = LinkSim::new(upstreams, &config(100, 5_000, 0), Delays::Jittered(rng));
        link.run_until(secs(600));
        assert!(
            link.backoffs.len() > 100,
            "{} attempts",
            link.backoffs.len()
        );
        for backoff in &link.backoffs {
            assert!(backoff.delay <= backoff.ceiling, "{backoff:?}");
        }
        let longest = link.backoffs.iter().map(|b| b.delay).max();
        assert!(longest > Some(ms(2_500)), "longest delay {longest:?}");
    }

    /// Generates an outage as upstream number, start and length in milliseconds.
    fn outage_strategy(upstreams: usize) -> impl Strategy<Value = (usize, u64, u64)> {
        (0..upstreams, 0u64..600_000, 1u64..120_000)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Any failure pattern over 10 simulated minutes: every delay is within its ceiling and
        /// reconnect_max_ms, the link tries the targets in the order that failover sets, and
        /// it probes the primary only from a fallback, every primary_retry_ms.
        #[test]
        fn link_backoff_stays_within_bounds(
            upstream_count in 1usize..4,
            outages in prop::collection::vec(outage_strategy(3), 0..20),
            initial_ms in 1u64..2_000,
            extra_ms in 0u64..20_000,
            primary_retry_ms in prop::sample::select(vec![0u64, 1_000, 30_000]),
            seed in any::<u64>(),
        ) {
            let max_ms = initial_ms + extra_ms;
            let mut upstreams = Upstreams::new(upstream_count);
            for (upstream, from, length) in outages {
                if upstream < upstream_count {
                    upstreams = upstreams.down(upstream, ms(from), ms(from + length));
                }
            }
            let rng = Box::new(StdRng::seed_from_u64(seed));
            let config = config(initial_ms, max_ms, primary_retry_ms);
            let mut link = LinkSim::new(upstreams, &config, Delays::Jittered(rng));
            link.run_until(secs(600));

            prop_assert_eq!(link.backoffs[0].ceiling, Duration::ZERO);
            for backoff in &link.backoffs {
                prop_assert!(backoff.ceiling <= ms(max_ms), "{:?}", backoff);
                prop_assert!(backoff.delay <= backoff.ceiling, "{:?}", backoff);
            }
            let retry = ms(primary_retry_ms);
            let mut expected_target = 0;
            // When the last connection to a fallback or failed probe was, while on a fallback.
            let mut on_fallback_since = None;
            // When the current connection was made, and how many in a row ended early.
            let mut connected_at = Duration::ZERO;
            let mut short_sessions = 0;
            for event in &link.events {
                match *event {
                    LinkEvent::Attempt { at, target, connected } => {
                        prop_assert_eq!(target, expected_target, "{:?}", link.events);
                        expected_target = if connected { 0 } else { (target + 1) % upstream_count };
                        on_fallback_since = (connected && target != 0).then_some(at);
                        if connected {
                            connected_at = at;
                        }
                    }
                    LinkEvent::Lost { at, target } => {
                        expected_target = 0;
                        if at - connected_at >= ms(max_ms) {
                            short_sessions = 0;
                        } else {
                            short_sessions += 1;
                            if short_sessions == SHORT_SESSIONS_BEFORE_FAILOVER {
                                short_sessions = 0;
                                expected_target = (target + 1) % upstream_count;
                            }
                        }
                        on_fallback_since = None;
                    }
                    LinkEvent::Probe { at, connected } => {
                        prop_assert!(!retry.is_zero());
                        prop_assert_eq!(on_fallback_since.map(|since| since + retry), Some(at));
                        on_fallback_since = (!connected).then_some(at);
                        if connected {
                            connected_at = at;
                        }
                    }
                }
            }
        }
    }
}
