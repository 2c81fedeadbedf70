//! Upstream subscriptions of relay topics on simulated time: local subscribers join and leave,
//! the linger timer ends idle subscriptions, and the link sends SUBSCRIBE and UNSUBSCRIBE
//! across reconnects.

use std::collections::VecDeque;
use std::time::Duration;

use chorus_protocol::{StartAt, Subscribed, Topic};

use super::{SimClock, MAX_STEPS};
use crate::relay::config::RelayConfig;
use crate::relay::link::{apply_subscribed, subscribe_request, unsubscribe_applies};
use crate::relay::{linger_expired, linger_tick, RelayTopic, Upstream};
use crate::topics::TopicInner;

/// A relay topic in [`InterestSim`], with its local subscriptions per worker.
#[derive(Debug)]
struct SimTopic {
    name: Topic,
    inner: TopicInner,
    /// When the last local subscriber left, while none is left.
    idle_from: Option<Duration>,
}

impl SimTopic {
    fn relay(&mut self) -> &mut RelayTopic {
        self.inner.relay.as_mut().expect("a relay topic")
    }

    fn interested(&self) -> bool {
        self.inner.interest.iter().any(|&count| count > 0)
    }
}

/// A command queued to the link, by topic number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SimCommand {
    Subscribe(usize),
    Unsubscribe(usize),
}

/// A frame that the simulated upstream received from the link.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UpstreamFrame {
    Subscribe {
        at: Duration,
        topic: usize,
        start: StartAt,
    },
    Unsubscribe {
        at: Duration,
        topic: usize,
    },
}

/// Stream id of every topic at the simulated upstream.
const UPSTREAM_STREAM: u64 = 7;

/// End offset of every topic at the simulated upstream.
const UPSTREAM_END: u64 = 1000;

/// Relay topics with local subscribers on several workers, the linger timer, one link, and
/// the upstream's subscriptions on the link's current connection.
///
/// Time moves only in [`InterestSim::advance`], which runs the linger timer's passes at its
/// own interval. Queued commands and SUBSCRIBED replies wait until a test delivers them, so
/// that tests can interleave them with the other steps as the threads can.
#[derive(Debug)]
struct InterestSim {
    config: RelayConfig,
    linger: Duration,
    tick: Duration,
    clock: SimClock,
    next_tick: Duration,
    topics: Vec<SimTopic>,
    /// Commands from the workers and the linger timer to the link thread, in channel order.
    commands: VecDeque<SimCommand>,
    /// Number of the link's current connection, counted from 1 as `Link::serve` does.
    generation: u64,
    connected: bool,
    /// Whether the upstream has a subscription of each topic on the current connection. A
    /// repeated SUBSCRIBE replaces the earlier subscription, as the broker's handler does.
    subscriptions: Vec<bool>,
    /// SUBSCRIBE frames for a topic that the current connection already had a subscription
    /// of. They cost the upstream a second backlog, which the cache drops.
    repeated_subscribes: usize,
    /// SUBSCRIBED replies of the current connection not yet read by the link's reader.
    replies: VecDeque<Subscribed>,
    /// Every SUBSCRIBE and UNSUBSCRIBE that reached the upstream, on any connection.
    received: Vec<UpstreamFrame>,
}

impl InterestSim {
    /// Creates `topics` idle relay topics on `workers` workers, with a link that is connected.
    fn new(topics: usize, workers: usize, config: RelayConfig) -> InterestSim {
        let linger = Duration::from_millis(config.linger_ms);
        let topics = (0..topics)
            .map(|index| {
                let mut inner = TopicInner::new(None, workers);
                inner.relay = Some(RelayTopic::new(&config));
                SimTopic {
                    name: Topic::new(format!("event/{index}")).expect("a valid topic name"),
                    inner,
                    idle_from: None,
                }
            })
            .collect::<Vec<_>>();
        let mut sim = InterestSim {
            config,
            linger,
            tick: linger_tick(linger),
            clock: SimClock::new(),
            next_tick: linger_tick(linger),
            subscriptions: vec![false; topics.len()],
            repeated_subscribes: 0,
            topics,
            commands: VecDeque::new(),
            generation: 0,
            connected: false,
            replies: VecDeque::new(),
            received: Vec::new(),
        };
        sim.connect();
        sim
    }

    /// Adds a local subscriber of `topic` on `worker`. The first one starts the upstream
    /// subscription, as `Worker::on_relay_subscribe` does.
    fn join(&mut self, topic: usize, worker: usize) {
        let state = &mut self.topics[topic];
        let relay = state.relay();
        relay.idle_since = None;
        if relay.upstream == Upstream::Idle {
            relay.upstream = Upstream::Subscribing;
            self.commands.push_back(SimCommand::Subscribe(topic));
        }
        state.inner.interest[worker] += 1;
        state.idle_from = None;
    }

    /// Removes a local subscriber of `topic` on `worker`.
    fn leave(&mut self, topic: usize, worker: usize) {
        let state = &mut self.topics[topic];
        let count = &mut state.inner.interest[worker];
        assert!(
            *count > 0,
            "no subscriber of topic {topic} on worker {worker}"
        );
        *count -= 1;
        if !state.interested() {
            state.idle_from = Some(self.clock.now);
        }
    }

    /// Moves time forward by `by`, running each pass of the linger timer that falls due.
    fn advance(&mut self, by: Duration) {
        let until = self.clock.now + by;
        for _ in 0..MAX_STEPS {
            if self.next_tick > until {
                self.clock.now = until;
                return;
            }
            self.clock.now = self.next_tick;
            self.linger_pass();
            self.next_tick += self.tick;
        }
        panic!("more than {MAX_STEPS} linger passes in {by:?}");
    }

    /// Runs one pass of `run_linger`: ends the upstream subscription of each topic whose
    /// linger time ran out, as `end_upstream` does.
    fn linger_pass(&mut self) {
        let now = self.clock.instant();
        for (index, topic) in self.topics.iter_mut().enumerate() {
            if linger_expired(&mut topic.inner, now, self.linger) {
                topic.relay().clear();
                self.commands.push_back(SimCommand::Unsubscribe(index));
            }
        }
    }

    /// Has the link thread handle every queued command. Without a connection the commands are
    /// dropped, as `Link::wait_disconnected` drops them. With one, they reach the upstream as
    /// `Link::handle` sends them.
    fn deliver_commands(&mut self) {
        while let Some(command) = self.commands.pop_front() {
            if !self.connected {
                continue;
            }
            match command {
                SimCommand::Subscribe(topic) => self.send_subscribe(topic),
                SimCommand::Unsubscribe(topic) => {
                    let generation = self.generation;
                    if !unsubscribe_applies(self.topics[topic].relay(), generation) {
                        continue;
                    }
                    self.subscriptions[topic] = false;
                    self.received.push(UpstreamFrame::Unsubscribe {
                        at: self.clock.now,
                        topic,
                    });
                }
            }
        }
    }

    /// Sends the SUBSCRIBE that the topic's state calls for, if any, and queues the upstream's
    /// SUBSCRIBED for it.
    fn send_subscribe(&mut self, topic: usize) {
        let cache_comments = self.config.cache_comments;
        let state = &mut self.topics[topic];
        let name = state.name.clone();
        let Some(subscribe) =
            subscribe_request(state.relay(), &name, self.generation, cache_comments)
        else {
            return;
        };
        if self.subscriptions[topic] {
            self.repeated_subscribes += 1;
        }
        self.subscriptions[topic] = true;
        self.received.push(UpstreamFrame::Subscribe {
            at: self.clock.now,
            topic,
            start: subscribe.start,
        });
        let start = match subscribe.start {
            StartAt::Last(count) => UPSTREAM_END.saturating_sub(count),
            StartAt::Offset(offset) => offset.min(UPSTREAM_END),
            other => panic!("the link never subscribes from {other:?}"),
        };
        self.replies.push_back(Subscribed {
            topic: name,
            stream: UPSTREAM_STREAM,
            start,
            earliest: 0,
            end: UPSTREAM_END,
        });
    }

    /// Has the link's reader apply every queued SUBSCRIBED, as `Reader::on_subscribed` does.
    fn deliver_replies(&mut self) {
        while let Some(subscribed) = self.replies.pop_front() {
            let topic = self
                .topics
                .iter_mut()
                .find(|t| t.name == subscribed.topic)
                .expect("a SUBSCRIBED for a simulated topic");
            let name = topic.name.clone();
            apply_subscribed(topic.relay(), &name, &subscribed);
        }
    }

    /// Drops the link's connection. The upstream ends its subscriptions, and replies that were
    /// still on their way are lost with it.
    fn disconnect(&mut self) {
        self.connected = false;
        self.subscriptions.fill(false);
        self.replies.clear();
    }

    /// Opens a new connection and resumes every topic on it, as `Link::resume_topics` does
    /// before the link handles any queued command.
    fn connect(&mut self) {
        self.generation += 1;
        self.connected = true;
        for topic in 0..self.topics.len() {
            self.send_subscribe(topic);
        }
    }

    /// Returns whether the upstream has a subscription of `topic` on the current connection.
    fn upstream_subscribed(&self, topic: usize) -> bool {
        self.subscriptions[topic]
    }

    fn upstream_state(&self, topic: usize) -> Upstream {
        self.topics[topic]
            .inner
            .relay
            .as_ref()
            .expect("a relay topic")
            .upstream
    }

    /// Returns the SUBSCRIBE frames that reached the upstream for `topic`, on any connection.
    fn subscribes_received(&self, topic: usize) -> usize {
        self.received
            .iter()
            .filter(|f| matches!(f, UpstreamFrame::Subscribe { topic: t, .. } if *t == topic))
            .count()
    }

    /// Returns when UNSUBSCRIBE frames for `topic` reached the upstream.
    fn unsubscribes_received(&self, topic: usize) -> Vec<Duration> {
        self.received
            .iter()
            .filter_map(|f| match f {
                UpstreamFrame::Unsubscribe { at, topic: t } if *t == topic => Some(*at),
                _ => None,
            })
            .collect()
    }
}

mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::relay::sim::{ms, secs};

    fn interest_config(linger_ms: u64) -> RelayConfig {
        RelayConfig {
            linger_ms,
            cache_comments: 100,
            ..RelayConfig::default()
        }
    }

    /// Delivers every queued command and reply, as the link thread and its reader do.
    fn settle(sim: &mut InterestSim) {
        sim.deliver_commands();
        sim.deliver_replies();
    }

    #[test]
    fn first_subscriber_subscribes_upstream_once() {
        let mut sim = InterestSim::new(1, 4, interest_config(10_000));
        for worker in 0..4 {
            sim.join(0, worker);
            sim.join(0, worker);
        }
        settle(&mut sim);
        sim.advance(secs(60));
        settle(&mut sim);
        assert_eq!(sim.subscribes_received(0), 1);
        assert_eq!(
            sim.received[0],
            UpstreamFrame::Subscribe {
                at: Duration::ZERO,
                topic: 0,
                start: StartAt::Last(100),
            }
        );
        assert_eq!(sim.repeated_subscribes, 0);
        assert_eq!(sim.upstream_state(0), Upstream::Subscribed);
    }

    #[test]
    fn last_leave_unsubscribes_after_linger() {
        // Linger 10 s, so the timer passes every 1 s. The last subscriber leaves at 2.5 s; the
        // pass at 3 s starts the idle timer, and the pass at 13 s ends the subscription.
        let mut sim = InterestSim::new(1, 2, interest_config(10_000));
        sim.join(0, 0);
        sim.join(0, 1);
        settle(&mut sim);
        sim.advance(ms(2_000));
        sim.leave(0, 0);
        sim.advance(ms(500));
        sim.leave(0, 1);
        sim.advance(ms(10_000));
        settle(&mut sim);
        assert!(sim.upstream_subscribed(0));
        assert!(sim.unsubscribes_received(0).is_empty());
        sim.advance(ms(500));
        settle(&mut sim);
        assert!(!sim.upstream_subscribed(0));
        assert_eq!(sim.unsubscribes_received(0), [ms(13_000)]);
        assert_eq!(sim.upstream_state(0), Upstream::Idle);
    }

    #[test]
    fn return_within_linger_keeps_subscription() {
        let mut sim = InterestSim::new(1, 1, interest_config(10_000));
        sim.join(0, 0);
        settle(&mut sim);
        sim.leave(0, 0);
        sim.advance(secs(8));
        sim.join(0, 0);
        sim.advance(secs(30));
        settle(&mut sim);
        assert_eq!(sim.subscribes_received(0), 1);
        assert!(sim.unsubscribes_received(0).is_empty());
        // Leaving again starts a new linger time from this leave.
        sim.leave(0, 0);
        sim.advance(ms(9_500));
        settle(&mut sim);
        assert!(sim.unsubscribes_received(0).is_empty());
        sim.advance(secs(2));
        settle(&mut sim);
        assert_eq!(sim.unsubscribes_received(0).len(), 1);
    }

    #[test]
    fn rejoin_between_passes_restarts_linger() {
        // Linger 10 s, timer passes every 1 s. The first leave at 0.5 s starts the idle timer
        // at the pass at 1 s. A subscriber then joins at 9.2 s and leaves at 9.6 s, between
        // two passes, and its leave should start the linger time over.
        let mut sim = InterestSim::new(1, 1, interest_config(10_000));
        sim.join(0, 0);
        settle(&mut sim);
        sim.advance(ms(500));
        sim.leave(0, 0);
        sim.advance(ms(8_700));
        sim.join(0, 0);
        sim.advance(ms(400));
        sim.leave(0, 0);
        sim.advance(ms(1_400));
        settle(&mut sim);
        assert!(
            sim.unsubscribes_received(0).is_empty(),
            "{:?}",
            sim.received
        );
    }

    #[test]
    fn return_after_linger_subscribes_again() {
        let mut sim = InterestSim::new(1, 1, interest_config(1_000));
        sim.join(0, 0);
        settle(&mut sim);
        sim.leave(0, 0);
        sim.advance(secs(5));
        sim.join(0, 0);
        settle(&mut sim);
        assert_eq!(sim.subscribes_received(0), 2);
        assert_eq!(sim.unsubscribes_received(0).len(), 1);
        assert!(sim.upstream_subscribed(0));
    }

    #[test]
    fn reconnect_resubscribes_each_topic_once() {
        let mut sim = InterestSim::new(3, 1, interest_config(10_000));
        sim.join(0, 0);
        sim.join(1, 0);
        settle(&mut sim);
        sim.disconnect();
        // A subscriber that arrives while the link reconnects queues a Subscribe that the
        // resumed connection already covers.
        sim.join(2, 0);
        sim.connect();
        settle(&mut sim);
        for topic in 0..3 {
            assert!(sim.upstream_subscribed(topic), "topic {topic}");
        }
        assert_eq!(sim.subscribes_received(0), 2);
        assert_eq!(sim.subscribes_received(2), 1);
        assert_eq!(sim.repeated_subscribes, 0);
    }

    #[test]
    fn late_unsubscribe_keeps_new_subscription() {
        // The link handles nothing while the topic's first subscription ends after the linger
        // time and a new subscriber arrives. The first Subscribe then subscribes the topic in
        // its current state, and the UNSUBSCRIBE queued after it must not end that.
        let mut sim = InterestSim::new(1, 1, interest_config(100));
        sim.join(0, 0);
        sim.leave(0, 0);
        sim.advance(secs(1));
        sim.join(0, 0);
        assert_eq!(
            sim.commands,
            [
                SimCommand::Subscribe(0),
                SimCommand::Unsubscribe(0),
                SimCommand::Subscribe(0),
            ]
        );
        settle(&mut sim);
        assert!(sim.upstream_subscribed(0));
        assert_eq!(sim.upstream_state(0), Upstream::Subscribed);
        assert_eq!(sim.subscribes_received(0), 1);
        assert!(sim.unsubscribes_received(0).is_empty());
    }

    #[test]
    fn stale_subscribe_after_resume_repeats_once() {
        // A Subscribe queued while the link reconnects outlives the topic's subscription,
        // which the resume already sent. After the topic is subscribed again, that Subscribe
        // sends a second SUBSCRIBE on the connection. The upstream replaces its subscription,
        // so the topic keeps exactly one, and the cache drops the comments sent twice.
        let mut sim = InterestSim::new(1, 1, interest_config(100));
        sim.disconnect();
        sim.join(0, 0);
        sim.connect();
        sim.leave(0, 0);
        sim.advance(secs(1));
        sim.join(0, 0);
        settle(&mut sim);
        assert!(sim.upstream_subscribed(0));
        assert_eq!(sim.subscribes_received(0), 2);
        assert_eq!(sim.repeated_subscribes, 1);
        assert!(sim.unsubscribes_received(0).is_empty());
        assert_eq!(sim.upstream_state(0), Upstream::Subscribed);
    }

    #[test]
    fn unsubscribe_after_resume_keeps_new_subscription() {
        // The subscription ends and a new subscriber arrives while the link reconnects. The
        // resume subscribes the topic before the link reads the queued UNSUBSCRIBE.
        let mut sim = InterestSim::new(1, 1, interest_config(100));
        sim.join(0, 0);
        settle(&mut sim);
        sim.leave(0, 0);
        sim.disconnect();
        sim.deliver_commands();
        sim.advance(secs(1));
        sim.join(0, 0);
        sim.connect();
        settle(&mut sim);
        assert!(sim.upstream_subscribed(0));
        assert_eq!(sim.upstream_state(0), Upstream::Subscribed);
    }

    /// One step of the interest property test.
    #[derive(Debug, Clone)]
    enum Step {
        Join { topic: usize, worker: usize },
        Leave { topic: usize, worker: usize },
        Advance(u64),
        DeliverCommands,
        DeliverReplies,
        Disconnect,
        Connect,
    }

    const TOPICS: usize = 3;
    const WORKERS: usize = 2;

    fn step_strategy() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..TOPICS, 0..WORKERS).prop_map(|(topic, worker)| Step::Join { topic, worker }),
            4 => (0..TOPICS, 0..WORKERS).prop_map(|(topic, worker)| Step::Leave { topic, worker }),
            4 => (0u64..15_000).prop_map(Step::Advance),
            3 => Just(Step::DeliverCommands),
            2 => Just(Step::DeliverReplies),
            1 => Just(Step::Disconnect),
            1 => Just(Step::Connect),
        ]
    }

    /// Applies one step; a step that does not apply (a leave with no subscriber, a connect
    /// while connected) does nothing.
    fn apply(sim: &mut InterestSim, step: &Step) {
        match *step {
            Step::Join { topic, worker } => sim.join(topic, worker),
            Step::Leave { topic, worker } => {
                if sim.topics[topic].inner.interest[worker] > 0 {
                    sim.leave(topic, worker);
                }
            }
            Step::Advance(millis) => sim.advance(ms(millis)),
            Step::DeliverCommands => sim.deliver_commands(),
            Step::DeliverReplies => sim.deliver_replies(),
            Step::Disconnect => sim.disconnect(),
            Step::Connect => {
                if !sim.connected {
                    sim.connect();
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Random joins, leaves, clock advances, deliveries and reconnects. Whenever the link
        /// is connected and has handled its commands, every topic with a subscriber has exactly
        /// one upstream subscription. A topic whose last subscriber left at least the linger
        /// time and two timer intervals ago has none.
        #[test]
        fn interest_keeps_one_upstream_subscription(
            steps in prop::collection::vec(step_strategy(), 1..150),
            linger_ms in 100u64..20_000,
        ) {
            let mut sim = InterestSim::new(TOPICS, WORKERS, interest_config(linger_ms));
            let settled_after = sim.linger + sim.tick * 2;
            for (number, step) in steps.iter().enumerate() {
                apply(&mut sim, step);
                if !sim.connected || !sim.commands.is_empty() {
                    continue;
                }
                for topic in 0..TOPICS {
                    let subscribed = sim.upstream_subscribed(topic);
                    let state = &sim.topics[topic];
                    if state.interested() {
                        prop_assert!(subscribed, "step {}: topic {} has a subscriber", number, topic);
                        prop_assert_ne!(sim.upstream_state(topic), Upstream::Idle);
                    }
                    // A topic without a subscriber and without a last leave never had one.
                    let expired = match state.idle_from {
                        Some(left) => sim.clock.now >= left + settled_after,
                        None => !state.interested(),
                    };
                    if expired {
                        prop_assert!(!subscribed, "step {}: topic {} lingered too long", number, topic);
                        prop_assert_eq!(sim.upstream_state(topic), Upstream::Idle);
                    }
                }
            }
        }
    }
}
