//! The relay role: upstream links, the per-topic upstream state and edge cache, the cluster's
//! topic map, and loop detection.
//!
//! A relay keeps no log. It subscribes upstream to a topic when the first local subscriber asks
//! for it, with one upstream subscription per topic however many subscribers sit below, and ends
//! it `relay.linger_ms` after the last one leaves. Upstream EVENTS frames go into the topic's
//! [`cache::EdgeCache`] and to the workers as [`Batch`]es, which the origin's delivery path
//! then fans out. Publishes and MODERATE frames are forwarded upstream ([`forward`]) and their
//! acknowledgements mapped back.
//!
//! Upstream links run on threads of their own with the blocking client ([`link`]); they hand
//! everything to the workers through the workers' channels and never wait on a worker.

pub(crate) mod cache;
pub(crate) mod config;
pub(crate) mod forward;
mod link;
pub(crate) mod loops;
#[cfg(test)]
mod sim;
pub(crate) mod status;

use std::collections::HashSet;
use std::io;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_protocol::{ModAction, Topic};
use parking_lot::Mutex;
use tracing::{error, info};

use crate::config::Config;
use crate::server::{Shared, WorkerMsg};
use crate::topics::{Batch, Position, TopicInner, TopicState};
use cache::EdgeCache;
use forward::{Author, ModerateReply};
pub(crate) use link::{Command, PublishReply};

/// State of a relay topic's upstream subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upstream {
    /// No upstream subscription and no cache.
    Idle,
    /// SUBSCRIBE sent; local subscriptions wait for the SUBSCRIBED.
    Subscribing,
    /// Subscribed upstream; the cache fills from the upstream's EVENTS.
    Subscribed,
}

/// The relay part of a topic, behind the topic's lock.
#[derive(Debug)]
pub(crate) struct RelayTopic {
    pub(crate) upstream: Upstream,
    pub(crate) cache: EdgeCache,
    /// Since when the topic has had no local subscriber, for the linger timer.
    pub(crate) idle_since: Option<Instant>,
    /// Number of the link connection that the last SUBSCRIBE went out on, or 0, so that a
    /// topic is subscribed once per connection.
    pub(crate) requested_on: u64,
}

impl RelayTopic {
    pub(crate) fn new(config: &config::RelayConfig) -> RelayTopic {
        RelayTopic {
            upstream: Upstream::Idle,
            cache: EdgeCache::new(config.cache_comments, config.cache_bytes),
            idle_since: None,
            requested_on: 0,
        }
    }

    /// Returns the position a new subscription starts from; see [`EdgeCache::position`].
    pub(crate) fn position(&self) -> Position {
        self.cache.position()
    }

    /// Ends the upstream subscription's state and drops the cache.
    fn clear(&mut self) {
        self.upstream = Upstream::Idle;
        self.cache.reset(0, 0, 0);
        self.idle_since = None;
        self.requested_on = 0;
    }
}

/// The cluster's topic map: which origin owns each topic.
#[derive(Debug, Clone)]
pub(crate) struct ClusterMap {
    origins: Vec<String>,
    /// This node's index in `origins`, on an origin.
    self_index: Option<usize>,
}

impl ClusterMap {
    /// Returns the map of `config`, or `None` when `cluster.origins` is empty.
    pub(crate) fn from_config(config: &Config) -> Option<ClusterMap> {
        let cluster = &config.cluster;
        if cluster.origins.is_empty() {
            return None;
        }
        Some(ClusterMap {
            origins: cluster.origins.clone(),
            self_index: cluster.self_index(&config.listen),
        })
    }

    /// Returns the index of the origin that owns `topic`.
    ///
    /// The companion topics `_viewers/T` and `_reactions/T` go with `T`, because the origin
    /// that owns `T` counts its viewers and reactions and writes them.
    pub(crate) fn owner(&self, topic: &Topic) -> usize {
        let name = crate::audience::routing_name(topic);
        // The remainder is below `origins.len()`, so it fits in usize.
        (fnv1a64(name.as_bytes()) % self.origins.len() as u64) as usize
    }

    /// Returns whether this origin owns `topic`.
    pub(crate) fn owns(&self, topic: &Topic) -> bool {
        self.self_index == Some(self.owner(topic))
    }
}

/// FNV-1a, 64-bit: offset basis 0xcbf29ce484222325, prime 0x100000001b3. The topic map uses it
/// because every node, in any language or version, computes the same value, which Rust's
/// `DefaultHasher` does not promise.
pub(crate) fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Command channels of the upstream links, one per link, through which workers reach them.
#[derive(Debug)]
pub(crate) struct Relay {
    links: Vec<Sender<Command>>,
    /// Routes topics to links when the cluster map is in use.
    map: Option<ClusterMap>,
    /// State of each link, for the admin endpoint.
    pub(crate) statuses: status::LinkStatuses,
    /// Per link, the ids of the relays below that the HELLO of its current connection named.
    announced: Mutex<Vec<HashSet<String>>>,
}

impl Relay {
    /// Creates the command channels; [`RelayThreads::start`] starts the threads that read them.
    pub(crate) fn new(config: &Config) -> (Relay, Vec<Receiver<Command>>) {
        let map = ClusterMap::from_config(config);
        let count = map.as_ref().map_or(1, |m| m.origins.len());
        let (links, receivers) = (0..count).map(|_| mpsc::channel()).unzip();
        let targets = (0..count)
            .map(|index| link_targets(config, index))
            .collect();
        let statuses = status::LinkStatuses::new(targets);
        let relay = Relay {
            links,
            map,
            statuses,
            announced: Mutex::new(vec![HashSet::new(); count]),
        };
        (relay, receivers)
    }

    /// Returns the index of the link that carries `topic`.
    pub(crate) fn link_index(&self, topic: &Topic) -> usize {
        self.map.as_ref().map_or(0, |map| map.owner(topic))
    }

    /// Asks the topic's link to subscribe upstream. The caller holds the topic's lock and has
    /// set the state to [`Upstream::Subscribing`].
    pub(crate) fn subscribe_upstream(&self, topic: &Arc<TopicState>) {
        let link = self.link_index(&topic.name);
        self.send(link, Command::Subscribe(topic.clone()));
    }

    /// Returns the number of links.
    pub(crate) fn links(&self) -> usize {
        self.links.len()
    }

    /// Asks each link whose current connection's HELLO lacks one of `chain`'s ids, just
    /// admitted below this relay, to connect to its upstream again with the current chain.
    pub(crate) fn announce_if_new(&self, chain: &[String]) {
        if chain.is_empty() {
            return;
        }
        let announced = self.announced.lock();
        for (link, ids) in announced.iter().enumerate() {
            if chain.iter().any(|id| !ids.contains(id)) {
                self.send(link, Command::AnnounceChain);
            }
        }
    }

    /// Returns whether the HELLO of link `link`'s current connection named every id of `ids`.
    pub(crate) fn announced_all(&self, link: usize, ids: &[String]) -> bool {
        self.announced
            .lock()
            .get(link)
            .is_some_and(|set| ids.iter().all(|id| set.contains(id)))
    }

    /// Records the relay ids that the HELLO of link `link`'s new connection carried.
    pub(crate) fn set_announced(&self, link: usize, ids: Vec<String>) {
        if let Some(set) = self.announced.lock().get_mut(link) {
            *set = ids.into_iter().collect();
        }
    }

    /// Hands a publish to the topic's link. Returns the reply back when the link has stopped.
    pub(crate) fn forward_publish(
        &self,
        topic: Topic,
        payload: Bytes,
        author: Option<Author>,
        reply: PublishReply,
    ) -> Result<(), PublishReply> {
        let link = self.link_index(&topic);
        let command = Command::Publish {
            topic,
            payload,
            author,
            reply,
        };
        self.links[link].send(command).map_err(|e| match e.0 {
            Command::Publish { reply, .. } => reply,
            _ => unreachable!("the command sent was a publish"),
        })
    }

    /// Hands a MODERATE to link number `link`; when the link has stopped, the reply records
    /// `UPSTREAM_UNAVAILABLE` at once.
    pub(crate) fn forward_moderate(
        &self,
        link: usize,
        action: ModAction,
        reply: ModerateReply,
        shared: &Shared,
    ) {
        let command = Command::Moderate { action, reply };
        if let Err(e) = self.links[link].send(command) {
            if let Command::Moderate { reply, .. } = e.0 {
                reply.fail(shared);
            }
        }
    }

    fn send(&self, link: usize, command: Command) {
        // A link stops only at shutdown, when commands no longer matter.
        let _ = self.links[link].send(command);
    }
}

/// The threads of a relay: one pair per link, and the linger timer.
#[derive(Debug)]
pub(crate) struct RelayThreads {
    links: Vec<link::LinkThread>,
    maintenance: Option<(Sender<()>, JoinHandle<()>)>,
}

impl RelayThreads {
    /// Starts one link per upstream target, and the thread that ends idle subscriptions.
    pub(crate) fn start(
        shared: &Arc<Shared>,
        receivers: Vec<Receiver<Command>>,
    ) -> io::Result<RelayThreads> {
        let config = &shared.config;
        let mut threads = RelayThreads {
            links: Vec::new(),
            maintenance: None,
        };
        for (index, commands) in receivers.into_iter().enumerate() {
            let targets = link_targets(config, index);
            match link::LinkThread::start(shared.clone(), index, targets, commands) {
                Ok(thread) => threads.links.push(thread),
                Err(e) => {
                    threads.stop();
                    return Err(e);
                }
            }
        }
        let (stop, stopped) = mpsc::channel();
        let shared = shared.clone();
        let handle = std::thread::Builder::new()
            .name("chorusd-relay-linger".into())
            .spawn(move || run_linger(&shared, &stopped));
        match handle {
            Ok(handle) => threads.maintenance = Some((stop, handle)),
            Err(e) => {
                threads.stop();
                return Err(e);
            }
        }
        Ok(threads)
    }

    /// Stops the links, which fail the forwarded publishes still in flight, and the linger
    /// timer.
    pub(crate) fn stop(self) {
        for link in self.links {
            link.stop();
        }
        if let Some((stop, handle)) = self.maintenance {
            let _ = stop.send(());
            if handle.join().is_err() {
                error!("the relay linger thread panicked");
            }
        }
    }
}

/// Returns the upstream addresses of link `index`, primary first: the origin that owns the
/// link's topics when `cluster.origins` is set, else `relay.upstreams`.
fn link_targets(config: &Config, index: usize) -> Vec<String> {
    match ClusterMap::from_config(config) {
        Some(map) => vec![map.origins[index].clone()],
        None => config.relay.upstreams.clone(),
    }
}

/// Ends the upstream subscription of every topic that has had no local subscriber for
/// `relay.linger_ms`, until `stop` receives a message or is disconnected.
fn run_linger(shared: &Shared, stop: &Receiver<()>) {
    let linger = Duration::from_millis(shared.config.relay.linger_ms);
    let tick = linger_tick(linger);
    loop {
        match stop.recv_timeout(tick) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        for topic in shared.registry.loaded() {
            let mut inner = topic.inner.lock();
            if linger_expired(&mut inner, now, linger) {
                end_upstream(shared, &topic, &mut inner);
            }
        }
    }
}

/// Returns the interval at which the linger timer checks the topics: a quarter of the linger
/// time, within 10 ms and 1 s.
fn linger_tick(linger: Duration) -> Duration {
    (linger / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
}

/// Updates the idle timer of a relay topic; returns whether its linger time has run out.
fn linger_expired(inner: &mut TopicInner, now: Instant, linger: Duration) -> bool {
    let interested = inner.interest.iter().any(|&count| count > 0);
    let Some(relay) = inner.relay.as_mut() else {
        return false;
    };
    if relay.upstream == Upstream::Idle || interested {
        relay.idle_since = None;
        return false;
    }
    let since = *relay.idle_since.get_or_insert(now);
    now.duration_since(since) >= linger
}

/// Unsubscribes upstream and drops the cache; called under the topic's lock.
fn end_upstream(shared: &Shared, topic: &Arc<TopicState>, inner: &mut TopicInner) {
    let (Some(relay), Some(links)) = (inner.relay.as_mut(), shared.relay.as_ref()) else {
        return;
    };
    info!(
        topic = %topic.name,
        cached = relay.cache.comments(),
        cached_bytes = relay.cache.bytes(),
        "no local subscriber for relay.linger_ms; unsubscribing upstream"
    );
    relay.clear();
    let link = links.link_index(&topic.name);
    links.send(link, Command::Unsubscribe(topic.clone()));
}

/// Queues `batch` to every worker with subscribers of the topic, and returns those workers so
/// that the caller wakes them once the topic's lock is released.
pub(crate) fn hand_to_workers(
    shared: &Shared,
    topic: &Arc<TopicState>,
    inner: &TopicInner,
    batch: &Batch,
) -> Vec<usize> {
    let mut wake = Vec::new();
    for (worker, &count) in inner.interest.iter().enumerate() {
        if count == 0 {
            continue;
        }
        if !shared.workers[worker].send_batch(topic.clone(), batch.clone()) {
            shared.metrics.worker(worker).worker_batches_dropped.add(1);
        }
        wake.push(worker);
    }
    wake
}

/// Sends `message()` to every worker with subscribers of the topic; returns them for waking.
pub(crate) fn tell_workers(
    shared: &Shared,
    inner: &TopicInner,
    message: impl Fn() -> WorkerMsg,
) -> Vec<usize> {
    let mut wake = Vec::new();
    for (worker, &count) in inner.interest.iter().enumerate() {
        if count > 0 {
            shared.workers[worker].send(message());
            wake.push(worker);
        }
    }
    wake
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_matches_reference_values() {
        // Reference values of the FNV-1a 64-bit test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn cluster_map_spreads_topics_over_origins() {
        let map = ClusterMap {
            origins: vec!["a:1".into(), "b:1".into(), "c:1".into()],
            self_index: Some(1),
        };
        let owners: std::collections::BTreeSet<usize> = (0..30)
            .map(|i| map.owner(&Topic::new(format!("event/{i}")).unwrap()))
            .collect();
        assert_eq!(owners.len(), 3);
    }

    #[test]
    fn origin_owns_only_its_topics() {
        let map = ClusterMap {
            origins: vec!["a:1".into(), "b:1".into()],
            self_index: Some(0),
        };
        let topic = Topic::new("event/1").unwrap();
        let owner = map.owner(&topic);
        assert_eq!(map.owns(&topic), owner == 0);
    }

    #[test]
    fn linger_expires_only_after_the_delay() {
        let mut inner = TopicInner::new(None, 2);
        let mut relay = RelayTopic::new(&config::RelayConfig::default());
        relay.upstream = Upstream::Subscribed;
        inner.relay = Some(relay);
        let start = Instant::now();
        let linger = Duration::from_millis(100);
        assert!(!linger_expired(&mut inner, start, linger));
        assert!(!linger_expired(&mut inner, start + linger / 2, linger));
        assert!(linger_expired(&mut inner, start + linger, linger));
    }

    #[test]
    fn new_subscriber_resets_linger() {
        let mut inner = TopicInner::new(None, 2);
        let mut relay = RelayTopic::new(&config::RelayConfig::default());
        relay.upstream = Upstream::Subscribed;
        inner.relay = Some(relay);
        let start = Instant::now();
        let linger = Duration::from_millis(100);
        assert!(!linger_expired(&mut inner, start, linger));
        inner.interest[1] = 1;
        assert!(!linger_expired(&mut inner, start + linger, linger));
        inner.interest[1] = 0;
        assert!(!linger_expired(&mut inner, start + linger * 2, linger));
    }
}
