//! One upstream link of a relay: a connection through the blocking chorus client, kept up with
//! backoff and failover, and the threads that drive it.
//!
//! The link thread owns the connection's writing half. It takes [`Command`]s from the workers,
//! reconnects after a loss, and on every new connection resumes each topic from the end of its
//! cache. A reader thread per connection receives the upstream's frames: it puts EVENTS into
//! the caches and hands them to the workers, completes subscriptions, and routes PUBLISH_ACK
//! and MODERATE_ACK frames back. Neither thread ever waits on a worker: they only send on the
//! workers' channels.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_client::{
    ClientError, Connection, ConnectionReader, ConnectionWriter, Options, TlsOptions,
};
use chorus_protocol::frame::features;
use chorus_protocol::{
    ErrorCode, Events, EventsZstd, Frame, ModAction, Moderate, Publish, PublishAck, RelayPublish,
    StartAt, Subscribe, Subscribed, Topic, Welcome,
};
use mio::Token;
use parking_lot::Mutex;
use rand::Rng;
use tracing::{debug, error, info, info_span, trace, warn};

use super::cache::{frame_span, tail_frame, tombstone_targets};
use super::forward::{Author, ModerateReply};
use super::status::update_link;
use super::{hand_to_workers, tell_workers, RelayTopic, Upstream};
use crate::compress::CompressedCopy;
use crate::handler::EVENTS_HEAD_ROOM;
use crate::server::{Shared, WorkerMsg};
use crate::topics::{Batch, TopicState};

/// How often a reader blocked on a silent upstream wakes to check the silence limit.
const READ_POLL: Duration = Duration::from_secs(1);

/// Time allowed to open the TCP connection, and again for the handshakes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Silence accepted from an upstream that announced no idle timeout, and the slack added to
/// twice an announced one before the connection counts as dead.
const SILENCE_SLACK: Duration = Duration::from_secs(10);

/// A request to a link.
#[derive(Debug)]
pub(crate) enum Command {
    /// Subscribes upstream to the topic as its state requires: from the last
    /// `relay.cache_comments` comments while subscribing, from the cache's end once subscribed.
    Subscribe(Arc<TopicState>),
    /// Ends the upstream subscription to the topic, unless a later one already went out on
    /// this connection (see [`unsubscribe_applies`]).
    Unsubscribe(Arc<TopicState>),
    /// Forwards a client's publish upstream: as RELAY_PUBLISH when it has an author, as
    /// PUBLISH otherwise.
    Publish {
        topic: Topic,
        payload: Bytes,
        author: Option<Author>,
        reply: PublishReply,
    },
    /// Forwards a MODERATE upstream.
    Moderate {
        action: ModAction,
        reply: ModerateReply,
    },
    /// Viewer counts and reaction sums for the upstream (AUDIENCE and REACT frames). They are
    /// dropped while the link has no connection, because the next interval's report replaces
    /// them.
    Report(Vec<Frame>),
    /// The reader of connection number `generation` stopped, for the reason given.
    Lost { generation: u64, error: String },
    /// The reader of connection number `generation` received nothing for half its silence
    /// limit, so the link sends a PING. Its PONG distinguishes a quiet upstream from a dead one.
    /// The upstream's own PINGs never reach the reader, and the upstream sends none to a relay
    /// that reports viewer counts, because those keep the relay's side of the connection busy.
    Ping { generation: u64 },
    /// A probe started during connection number `generation` finished: with the connection
    /// to upstream number `target` after its WELCOME, or with the error. A probe goes to the
    /// primary while the link is on a fallback, or, to announce the relay chain, to the
    /// upstream the link is on.
    Probe {
        generation: u64,
        target: usize,
        /// Ids of the relays below that the probe's HELLO named.
        chain: Vec<String>,
        result: Result<Box<Connection>, String>,
    },
    /// A relay joined below this one with ids that the chain in this link's HELLO lacks: the
    /// link connects to its upstream again, so that the upstream checks the longer chain for
    /// a loop. The new connection replaces the current one as a return to the primary does.
    AnnounceChain,
    /// Closes the connection and ends the link.
    Stop,
}

/// Destination of a forwarded publish's acknowledgement: a client connection on a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishReply {
    pub(crate) worker: usize,
    pub(crate) token: Token,
    pub(crate) conn_id: u64,
    /// The client's sequence number.
    pub(crate) seq: u64,
}

impl PublishReply {
    /// Sends the client its PUBLISH_ACK through the worker that owns its connection.
    pub(crate) fn answer(self, shared: &Shared, code: ErrorCode, offset: u64, stream: u64) {
        let ack = PublishAck {
            seq: self.seq,
            code,
            offset,
            stream,
        };
        let worker = &shared.workers[self.worker];
        worker.send(WorkerMsg::PublishAck {
            token: self.token,
            conn_id: self.conn_id,
            ack,
        });
        worker.wake();
    }

    fn fail(self, shared: &Shared) {
        self.answer(shared, ErrorCode::UpstreamUnavailable, 0, 0);
    }
}

/// Forwarded publishes waiting for their acknowledgement, by the link's sequence number.
type InFlight = Arc<Mutex<HashMap<u64, PublishReply>>>;

/// Forwarded MODERATE frames waiting for their MODERATE_ACK, by the link's sequence number.
type Moderations = Arc<Mutex<HashMap<u64, ModerateReply>>>;

/// Reconnect plan of a link: exponential backoff with full jitter, failover through the
/// targets in order, and back to the primary after every loss.
///
/// It reads no clock: callers pass the time, so tests step it.
#[derive(Debug)]
pub(crate) struct Failover {
    targets: usize,
    initial: Duration,
    max: Duration,
    next_target: usize,
    /// Attempts since the last connection that lasted, which set the backoff ceiling.
    failures: u32,
    /// Whether the next attempt is the first one, which waits for nothing.
    first: bool,
    connected_at: Option<Instant>,
    /// Target of the current or last connection.
    current: usize,
    /// Connections in a row that ended before lasting the maximum delay.
    short_sessions: u32,
}

/// Number of connections in a row to one upstream that end early before the link tries the
/// next upstream. An upstream that accepts the relay and then drops it (for example for a
/// missing relay token) must not keep the link while a fallback works.
pub(super) const SHORT_SESSIONS_BEFORE_FAILOVER: u32 = 3;

/// One connection attempt: the index of its target and the ceiling of its random delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    pub(crate) target: usize,
    pub(crate) ceiling: Duration,
}

impl Failover {
    pub(crate) fn new(targets: usize, initial: Duration, max: Duration) -> Failover {
        Failover {
            targets: targets.max(1),
            initial,
            max,
            next_target: 0,
            failures: 0,
            first: true,
            connected_at: None,
            current: 0,
            short_sessions: 0,
        }
    }

    /// Returns the next attempt.
    pub(crate) fn next_attempt(&self) -> Attempt {
        if self.first {
            return Attempt {
                target: 0,
                ceiling: Duration::ZERO,
            };
        }
        let factor = 1u32.checked_shl(self.failures).unwrap_or(u32::MAX);
        Attempt {
            target: self.next_target,
            ceiling: self.initial.saturating_mul(factor).min(self.max),
        }
    }

    /// Records a failed attempt: the next one goes to the next target in the list.
    pub(crate) fn failed(&mut self) {
        self.first = false;
        self.failures = self.failures.saturating_add(1);
        self.next_target = (self.next_target + 1) % self.targets;
    }

    /// Records a connection made at `now`.
    pub(crate) fn connected(&mut self, now: Instant) {
        self.first = false;
        self.connected_at = Some(now);
    }

    /// Records a connection to target number `target` made at `now`.
    pub(crate) fn connected_to(&mut self, now: Instant, target: usize) {
        self.connected(now);
        self.current = target;
    }

    /// Records the loss of the connection at `now`. The next attempt goes to the primary.
    ///
    /// A connection that lasted at least the maximum delay starts the backoff over. A shorter
    /// one counts as a failure, so an upstream that accepts and then drops every connection is
    /// retried with growing delays, and after [`SHORT_SESSIONS_BEFORE_FAILOVER`] of them in a
    /// row the next attempt goes to the target after it instead.
    pub(crate) fn lost(&mut self, now: Instant) {
        let lasted = self
            .connected_at
            .take()
            .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        if lasted >= self.max {
            self.failures = 0;
            self.short_sessions = 0;
            self.next_target = 0;
            return;
        }
        self.failures = self.failures.saturating_add(1);
        self.short_sessions += 1;
        if self.short_sessions >= SHORT_SESSIONS_BEFORE_FAILOVER {
            self.short_sessions = 0;
            self.next_target = (self.current + 1) % self.targets;
        } else {
            self.next_target = 0;
        }
    }
}

/// Draws a delay uniformly from zero to `ceiling` (full jitter) with `rng`.
pub(super) fn jitter(ceiling: Duration, rng: &mut impl Rng) -> Duration {
    if ceiling.is_zero() {
        return ceiling;
    }
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rng.gen_range(0..=nanos))
}

/// Returns when the next probe of the primary starts for a connection to target number
/// `target` made or probed at `now`: `retry` later on a fallback, and never on the primary or
/// when `retry` is zero.
pub(super) fn probe_deadline(target: usize, retry: Duration, now: Instant) -> Option<Instant> {
    (target != 0 && !retry.is_zero()).then(|| now + retry)
}

/// A running link thread.
#[derive(Debug)]
pub(crate) struct LinkThread {
    shared: Arc<Shared>,
    index: usize,
    handle: JoinHandle<()>,
}

impl LinkThread {
    /// Starts the link to `targets` (primary first), reading `commands`.
    pub(crate) fn start(
        shared: Arc<Shared>,
        index: usize,
        targets: Vec<String>,
        commands: Receiver<Command>,
    ) -> std::io::Result<LinkThread> {
        let relay = &shared.config.relay;
        let failover = Failover::new(
            targets.len(),
            Duration::from_millis(relay.reconnect_initial_ms),
            Duration::from_millis(relay.reconnect_max_ms),
        );
        let link = Link {
            shared: shared.clone(),
            index,
            targets,
            commands,
            failover,
            generation: 0,
            probe_due: None,
            probing: false,
            current: 0,
            announce_pending: false,
            probe_failures: 0,
        };
        let handle = std::thread::Builder::new()
            .name(format!("chorusd-link-{index}"))
            .spawn(move || link.run())?;
        Ok(LinkThread {
            shared,
            index,
            handle,
        })
    }

    /// Stops the link and waits for its threads.
    pub(crate) fn stop(self) {
        if let Some(relay) = self.shared.relay.as_ref() {
            relay.send(self.index, Command::Stop);
        }
        if self.handle.join().is_err() {
            error!(link = self.index, "a relay link thread panicked");
        }
    }
}

/// Outcome of one command for the link thread.
enum Step {
    Continue,
    Lost(String),
    Stop,
    /// A probe succeeded: the link moves to this connection to upstream number `usize`,
    /// whose HELLO named the relay ids listed.
    Switch(Box<Connection>, usize, Vec<String>),
}

/// The way a connection's session ended.
enum SessionEnd {
    Lost,
    Stop,
    Switch(Box<Connection>, usize, Vec<String>),
}

/// Maximum wait, when leaving a fallback for the primary, for the acknowledgements of publishes
/// and MODERATE frames already forwarded on the fallback.
const RETURN_DRAIN: Duration = Duration::from_secs(2);

/// The state of the link thread.
struct Link {
    shared: Arc<Shared>,
    index: usize,
    targets: Vec<String>,
    commands: Receiver<Command>,
    failover: Failover,
    /// Number of the current connection, so that a late report from an old reader is ignored.
    generation: u64,
    /// When the next probe of the primary starts, while connected to a fallback.
    probe_due: Option<Instant>,
    /// Whether a probe is running.
    probing: bool,
    /// Upstream number of the current connection.
    current: usize,
    /// Whether the relay chain changed while a probe was running, whose HELLO may lack it.
    announce_pending: bool,
    /// Failed probes of the primary during the current session.
    probe_failures: u32,
}

impl Link {
    fn run(mut self) {
        let span = info_span!("relay_link", link = self.index);
        let _entered = span.enter();
        loop {
            let attempt = self.failover.next_attempt();
            if !self.wait_disconnected(jitter(attempt.ceiling, &mut rand::thread_rng())) {
                return;
            }
            let target = self.targets[attempt.target].clone();
            let (options, chain) = self.hello();
            match Connection::connect(&target, &options) {
                Ok(conn) => {
                    self.set_announced(chain);
                    if self.serve_until_lost(conn, attempt.target) {
                        return;
                    }
                }
                Err(e) => {
                    if is_auth_failure(&e) {
                        error!(
                            upstream = %target, error = %e,
                            "upstream rejected the relay's token; renew relay.token_file (read at \
                             every reconnect) or relay.token (needs a restart)"
                        );
                    } else {
                        warn!(upstream = %target, error = %e, "failed to connect upstream");
                    }
                    self.failover.failed();
                    let next = self.failover.next_attempt().target;
                    let moved = next != attempt.target;
                    update_link(&self.shared, self.index, |s| {
                        s.attempt_failed(&target, e.to_string(), moved);
                    });
                    if moved {
                        info!(from = %target, to = %self.targets[next], "failing over to the next upstream");
                    }
                }
            }
        }
    }

    /// Serves `conn` to target number `target`, and after it each connection to the primary
    /// that replaces a fallback. Returns whether the link stops.
    fn serve_until_lost(&mut self, mut conn: Connection, mut target: usize) -> bool {
        // Each pass either ends the loop or moves to the connection of a successful probe: to
        // the primary, or to the same upstream with a longer relay chain, which relays joining
        // below bound.
        loop {
            let address = self.targets[target].clone();
            self.failover.connected_to(Instant::now(), target);
            update_link(&self.shared, self.index, |s| s.connected(&address));
            match self.serve(conn, &address, target) {
                SessionEnd::Stop => return true,
                SessionEnd::Lost => {
                    self.failover.lost(Instant::now());
                    update_link(&self.shared, self.index, |s| s.lost());
                    return false;
                }
                SessionEnd::Switch(next, next_target, chain) => {
                    self.set_announced(chain);
                    if next_target == target {
                        info!(upstream = %address, "connected upstream again to announce the relays below");
                        update_link(&self.shared, self.index, |s| s.lost());
                    } else {
                        info!(from = %address, to = %self.targets[next_target], "returning to the primary upstream");
                        update_link(&self.shared, self.index, |s| {
                            s.lost();
                            s.primary_returns += 1;
                        });
                    }
                    conn = *next;
                    target = next_target;
                }
            }
        }
    }

    /// Starts a thread that connects to the primary upstream with a plain connect and HELLO,
    /// and reports the outcome as [`Command::Probe`].
    fn start_probe(&mut self) {
        self.start_probe_of(0);
    }

    /// Starts a probe of upstream number `target`, as [`Link::start_probe`] does for the
    /// primary.
    fn start_probe_of(&mut self, target: usize) {
        let Some(primary) = self.targets.get(target).cloned() else {
            return;
        };
        let (options, chain) = self.hello();
        let generation = self.generation;
        let shared = self.shared.clone();
        let index = self.index;
        // The upstream the link is on already serves it, and announcing the chain must not
        // wait for a subscription.
        let check = if target == self.current {
            None
        } else {
            self.probe_topic()
        };
        let spawned = std::thread::Builder::new()
            .name(format!("chorusd-link-{index}-probe"))
            .spawn(move || {
                let result = probe_primary(&primary, &options, check.as_ref());
                if let Some(relay) = shared.relay.as_ref() {
                    relay.send(
                        index,
                        Command::Probe {
                            generation,
                            target,
                            chain,
                            result,
                        },
                    );
                }
            });
        match spawned {
            Ok(_) => self.probing = true,
            Err(e) => {
                warn!(error = %e, "failed to start the primary probe thread");
                self.schedule_probe(1);
            }
        }
    }

    /// Handles the outcome of a connection made to announce the relay chain: the link moves
    /// to it, or leaves its upstream when the upstream found a loop in the chain.
    fn on_announced(
        &mut self,
        result: Result<Box<Connection>, String>,
        chain: Vec<String>,
    ) -> Step {
        match result {
            Ok(conn) => Step::Switch(conn, self.current, chain),
            Err(error) if error.contains("relay loop") => {
                error!(upstream = %self.targets[self.current], %error, "the relay chain announced upstream closes a loop; leaving that upstream");
                Step::Lost(error)
            }
            Err(error) => {
                warn!(upstream = %self.targets[self.current], %error, "failed to announce the relay chain upstream; it goes with the next reconnect");
                self.resume_announce();
                Step::Continue
            }
        }
    }

    /// Starts the announcement of the relay chain that arrived while a probe was running.
    fn resume_announce(&mut self) {
        if self.announce_pending && !self.probing {
            self.announce_pending = false;
            self.start_probe_of(self.current);
        }
    }

    /// Returns a topic this link subscribes to upstream, for the probe of the primary to
    /// subscribe to; `None` when the link has none.
    fn probe_topic(&self) -> Option<Topic> {
        let relay = self.shared.relay.as_ref()?;
        self.shared.registry.loaded().into_iter().find_map(|topic| {
            if relay.link_index(&topic.name) != self.index {
                return None;
            }
            let inner = topic.inner.lock();
            let state = inner.relay.as_ref()?;
            (state.upstream != Upstream::Idle).then(|| topic.name.clone())
        })
    }

    /// Schedules the next probe of the primary, when connected to fallback number `target`
    /// and `relay.primary_retry_ms` is above 0.
    fn schedule_probe(&mut self, target: usize) {
        let retry = Duration::from_millis(self.shared.config.relay.primary_retry_ms);
        self.probe_due = probe_deadline(target, retry, Instant::now());
    }

    /// Waits for the next command, starting the probe of the primary when it is due. Returns
    /// `None` when the command channel is closed.
    fn recv_command(&mut self) -> Option<Command> {
        // At most two passes: after a probe starts, the next pass blocks on the channel.
        for _ in 0..2 {
            let Some(due) = self.probe_due.filter(|_| !self.probing) else {
                break;
            };
            let left = due.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(left) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => self.start_probe(),
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
        self.commands.recv().ok()
    }

    /// Handles the outcome of a probe.
    fn on_probe(
        &mut self,
        generation: u64,
        target: usize,
        chain: Vec<String>,
        result: Result<Box<Connection>, String>,
    ) -> Step {
        if generation != self.generation {
            // A probe from an earlier connection; its connection, if any, closes on drop.
            return Step::Continue;
        }
        self.probing = false;
        if target == self.current {
            return self.on_announced(result, chain);
        }
        match result {
            // A chain that changed while the probe ran is announced once the new session starts.
            Ok(conn) => Step::Switch(conn, target, chain),
            Err(error) => {
                // Said once per session at info, as every probe repeats it.
                if self.probe_failures == 0 {
                    info!(upstream = %self.targets[0], %error, "primary upstream still unavailable; staying on the fallback");
                } else {
                    debug!(upstream = %self.targets[0], %error, "primary upstream still unavailable");
                }
                self.probe_failures += 1;
                let primary = self.targets[0].clone();
                update_link(&self.shared, self.index, |s| {
                    s.last_error = Some(format!("probe of the primary {primary}: {error}"));
                });
                self.schedule_probe(1);
                self.resume_announce();
                Step::Continue
            }
        }
    }

    /// Returns the token for the next connection: the contents of `relay.token_file`, read now
    /// so that a renewed token is picked up, or `relay.token`.
    fn upstream_token(&self) -> String {
        let relay = &self.shared.config.relay;
        let Some(path) = &relay.token_file else {
            return relay.token.clone();
        };
        match std::fs::read_to_string(path) {
            Ok(token) => token.trim().to_owned(),
            Err(e) => {
                error!(path = %path.display(), error = %e, "failed to read relay.token_file; connecting without a token");
                String::new()
            }
        }
    }

    /// Returns the client options for the next connection.
    /// Returns the options of a new connection upstream, and the ids of the relays below that
    /// its HELLO names.
    fn hello(&self) -> (Options, Vec<String>) {
        let config = &self.shared.config;
        let (client_name, chain) = self.shared.lineage.hello_chain(&config.relay.client_name);
        let options = Options {
            client_name,
            token: self.upstream_token(),
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: Some(READ_POLL),
            // The relay forwards its upstream's batches unchanged, and announces to its own
            // clients frames of up to max_batch_bytes plus the head room. Requesting no more from
            // the upstream makes an upstream with larger batches reject the link with
            // FRAME_TOO_LARGE, so this relay never sends clients more than it announced.
            max_frame: u32::try_from(config.limits.max_batch_bytes + EVENTS_HEAD_ROOM)
                .unwrap_or(u32::MAX),
            features: match config.relay.compression {
                true => features::ZSTD_EVENTS,
                false => 0,
            },
            tls: config.relay.tls.as_ref().map(|tls| TlsOptions {
                ca_file: tls.ca_file.clone(),
                client_cert: tls.cert_file.clone().zip(tls.key_file.clone()),
                server_name: tls.server_name.clone(),
                ..TlsOptions::default()
            }),
            ..Options::default()
        };
        (options, chain)
    }

    /// Records the relay ids that the HELLO of this link's new connection named, against
    /// which later joins below are compared.
    fn set_announced(&self, chain: Vec<String>) {
        if let Some(relay) = self.shared.relay.as_ref() {
            relay.set_announced(self.index, chain);
        }
    }

    /// Handles commands while there is no connection, for `delay`. Returns false on
    /// [`Command::Stop`].
    fn wait_disconnected(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let command = match self.commands.recv_timeout(left) {
                Ok(command) => command,
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            };
            match command {
                Command::Stop => return false,
                Command::Publish { topic, reply, .. } => {
                    debug!(%topic, "no upstream connection; publish rejected");
                    reply.fail(&self.shared);
                }
                Command::Moderate { reply, .. } => {
                    debug!("no upstream connection; MODERATE rejected");
                    reply.fail(&self.shared);
                }
                // Topic states are read again when the next connection resumes them.
                Command::Subscribe(_) | Command::Unsubscribe(_) | Command::Lost { .. } => {}
                Command::Report(_) | Command::Ping { .. } => {}
                // A probe of an earlier connection; its connection closes on drop.
                Command::Probe { .. } => {}
                // The next connection's HELLO carries the current chain.
                Command::AnnounceChain => {}
            }
            if left.is_zero() {
                return true;
            }
        }
    }

    /// Runs one connection to target number `index` until it is lost, the link stops, or the
    /// primary answers a probe.
    fn serve(&mut self, conn: Connection, target: &str, index: usize) -> SessionEnd {
        self.generation += 1;
        self.probing = false;
        self.current = index;
        self.probe_failures = 0;
        self.schedule_probe(index);
        let welcome = conn.welcome().clone();
        let zstd = welcome.features & features::ZSTD_EVENTS != 0;
        info!(upstream = %target, server = %welcome.server_name, zstd, "connected upstream");
        update_link(&self.shared, self.index, |s| s.zstd_events = zstd);
        let (writer, upstream) = match conn.split() {
            Ok(halves) => halves,
            Err(e) => {
                warn!(upstream = %target, error = %e, "failed to split the upstream connection");
                return SessionEnd::Lost;
            }
        };
        let inflight = InFlight::default();
        let moderations = Moderations::default();
        let silence = match welcome.idle_timeout_ms {
            0 => SILENCE_SLACK,
            ms => Duration::from_millis(u64::from(ms)) * 2 + SILENCE_SLACK,
        };
        let reader = Reader {
            shared: self.shared.clone(),
            index: self.index,
            generation: self.generation,
            inflight: inflight.clone(),
            moderations: moderations.clone(),
            silence,
            forbidden_logged: Cell::new(false),
        };
        let reader_thread = std::thread::Builder::new()
            .name(format!("chorusd-link-{}-reader", self.index))
            .spawn(move || reader.run(upstream));
        let reader_thread = match reader_thread {
            Ok(handle) => Some(handle),
            Err(e) => {
                error!(error = %e, "failed to start the upstream reader thread");
                None
            }
        };

        let mut session = Session {
            writer,
            inflight,
            moderations,
            next_seq: 1,
        };
        let outcome = match reader_thread {
            Some(_) => self.run_session(&mut session),
            None => Step::Lost("no reader thread".into()),
        };
        let end = match outcome {
            Step::Stop => SessionEnd::Stop,
            Step::Lost(reason) => {
                warn!(upstream = %target, error = %reason, "upstream connection lost");
                let loss = format!("{target}: {reason}");
                update_link(&self.shared, self.index, |s| s.last_loss = Some(loss));
                SessionEnd::Lost
            }
            Step::Continue => SessionEnd::Lost,
            Step::Switch(next, next_target, chain) => {
                session.wait_for_acks(RETURN_DRAIN);
                SessionEnd::Switch(next, next_target, chain)
            }
        };

        // Shutting the socket down wakes the reader, which then reports and ends.
        if let Err(e) = session.writer.shutdown() {
            debug!(error = %e, "upstream socket already closed");
        }
        if let Some(handle) = reader_thread {
            if handle.join().is_err() {
                error!("the upstream reader thread panicked");
            }
        }
        let stranded: Vec<PublishReply> = session.inflight.lock().drain().map(|(_, r)| r).collect();
        if !stranded.is_empty() {
            warn!(
                count = stranded.len(),
                "forwarded publishes lost with the upstream connection"
            );
        }
        for reply in stranded {
            reply.fail(&self.shared);
        }
        let stranded: Vec<ModerateReply> =
            session.moderations.lock().drain().map(|(_, r)| r).collect();
        if !stranded.is_empty() {
            warn!(
                count = stranded.len(),
                "forwarded MODERATE frames lost with the upstream connection"
            );
        }
        for reply in stranded {
            reply.fail(&self.shared);
        }
        end
    }

    /// Resumes every topic, then handles commands until the connection is lost or the link
    /// stops. Commands that arrive together are written with one flush.
    fn run_session(&mut self, session: &mut Session) -> Step {
        if let Err(e) = self.resume_topics(session) {
            return Step::Lost(e.to_string());
        }
        // A relay that joined below while this connection's HELLO was on its way is not in it.
        let below = self.shared.lineage.below();
        let covered = self
            .shared
            .relay
            .as_ref()
            .is_none_or(|relay| relay.announced_all(self.index, &below));
        self.announce_pending = !covered;
        self.resume_announce();
        loop {
            let Some(command) = self.recv_command() else {
                return Step::Stop;
            };
            let mut step = self.handle(command, session);
            while matches!(step, Step::Continue) {
                match self.commands.try_recv() {
                    Ok(command) => step = self.handle(command, session),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => step = Step::Stop,
                }
            }
            if !matches!(step, Step::Continue) {
                return step;
            }
            if let Err(e) = session.writer.flush() {
                return Step::Lost(e.to_string());
            }
        }
    }

    fn handle(&mut self, command: Command, session: &mut Session) -> Step {
        let written = match command {
            Command::Stop => return Step::Stop,
            Command::Lost { generation, error } if generation == self.generation => {
                return Step::Lost(error);
            }
            Command::Lost { .. } => Ok(()),
            Command::Probe {
                generation,
                target,
                chain,
                result,
            } => return self.on_probe(generation, target, chain, result),
            Command::AnnounceChain => {
                self.announce_pending = true;
                self.resume_announce();
                Ok(())
            }
            Command::Subscribe(topic) => match self.subscribe_request(&topic) {
                Some(subscribe) => session.writer.send(&Frame::Subscribe(subscribe)),
                None => Ok(()),
            },
            Command::Unsubscribe(topic) => {
                let applies = topic
                    .inner
                    .lock()
                    .relay
                    .as_ref()
                    .is_none_or(|relay| unsubscribe_applies(relay, self.generation));
                if applies {
                    session.writer.send(&Frame::Unsubscribe(topic.name.clone()))
                } else {
                    debug!(topic = %topic.name, "subscribed again on this connection; UNSUBSCRIBE dropped");
                    Ok(())
                }
            }
            Command::Publish {
                topic,
                payload,
                author,
                reply,
            } => session.publish(&self.shared, topic, payload, author, reply),
            Command::Moderate { action, reply } => session.moderate(&self.shared, action, reply),
            Command::Report(frames) => queue_report(&mut session.writer, &frames),
            Command::Ping { generation } if generation == self.generation => {
                session.writer.send(&Frame::Ping(generation))
            }
            Command::Ping { .. } => Ok(()),
        };
        match written {
            Ok(()) => Step::Continue,
            Err(e) => Step::Lost(e.to_string()),
        }
    }

    /// Returns the SUBSCRIBE that the topic's upstream state calls for, or `None` when the
    /// topic needs no upstream subscription or already has one on this connection.
    fn subscribe_request(&self, topic: &TopicState) -> Option<Subscribe> {
        let mut inner = topic.inner.lock();
        let relay = inner.relay.as_mut()?;
        let cache_comments = self.shared.config.relay.cache_comments;
        subscribe_request(relay, &topic.name, self.generation, cache_comments)
    }

    /// Subscribes again to every topic of this link that has an upstream subscription.
    fn resume_topics(&self, session: &mut Session) -> Result<(), ClientError> {
        let Some(relay) = self.shared.relay.as_ref() else {
            return Ok(());
        };
        for topic in self.shared.registry.loaded() {
            if relay.link_index(&topic.name) != self.index {
                continue;
            }
            let Some(subscribe) = self.subscribe_request(&topic) else {
                continue;
            };
            if let StartAt::Offset(offset) = subscribe.start {
                info!(topic = %topic.name, offset, stream = subscribe.stream, "resuming topic upstream");
            }
            session.writer.send(&Frame::Subscribe(subscribe))?;
        }
        Ok(())
    }
}

/// Maximum wait for the primary's SUBSCRIBED during a probe. A primary that is a relay sends it
/// once its own upstream has, and one cut off from its upstream keeps the subscription pending.
const PROBE_SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the primary and checks that it can serve the link's topics. When `check` names a
/// topic, a first connection must receive SUBSCRIBED for it. A relay without an upstream of its
/// own never sends it, so the link does not move to a primary that would stall every topic.
/// That connection is then closed and a fresh one returned, so the link's session starts with
/// no subscription and resumes every topic from its cache.
fn probe_primary(
    primary: &str,
    options: &Options,
    check: Option<&Topic>,
) -> Result<Box<Connection>, String> {
    if let Some(topic) = check {
        let probe_options = Options {
            read_timeout: Some(PROBE_SUBSCRIBE_TIMEOUT),
            ..options.clone()
        };
        let mut conn = Connection::connect(primary, &probe_options).map_err(|e| e.to_string())?;
        conn.subscribe(topic, StartAt::Latest, 0).map_err(|e| {
            format!("connected, but no SUBSCRIBED for topic {topic} within 5 s: {e}")
        })?;
    }
    Connection::connect(primary, options)
        .map(Box::new)
        .map_err(|e| e.to_string())
}

/// Returns the SUBSCRIBE for topic `name` that its upstream state calls for on connection
/// number `generation`, and records it as sent. Returns `None` when the topic needs no upstream
/// subscription or already has one on this connection.
pub(super) fn subscribe_request(
    relay: &mut RelayTopic,
    name: &Topic,
    generation: u64,
    cache_comments: u64,
) -> Option<Subscribe> {
    if relay.requested_on == generation {
        return None;
    }
    let (start, stream) = match relay.upstream {
        Upstream::Idle => return None,
        // The first subscription warms the cache, so "last N" is served at this relay.
        Upstream::Subscribing => (StartAt::Last(cache_comments), 0),
        Upstream::Subscribed => (StartAt::Offset(relay.cache.end()), relay.cache.stream()),
    };
    relay.requested_on = generation;
    Some(Subscribe {
        topic: name.clone(),
        start,
        stream,
    })
}

/// Returns whether the UNSUBSCRIBE that the linger timer queued for a topic, now in state
/// `relay`, still goes out on connection number `generation`.
///
/// It does not when a SUBSCRIBE for a later subscription of the topic already went out on this
/// connection, because the upstream would end that one. That happens when the link handles the
/// commands late: the resume after a reconnect, or a Subscribe queued before the UNSUBSCRIBE,
/// sends the SUBSCRIBE that the topic's current state calls for. Ending a subscription clears
/// `requested_on`, so a value equal to `generation` means such a SUBSCRIBE.
pub(super) fn unsubscribe_applies(relay: &RelayTopic, generation: u64) -> bool {
    relay.requested_on != generation
}

/// The writing half of one connection and the requests in flight on it.
struct Session {
    writer: ConnectionWriter,
    inflight: InFlight,
    moderations: Moderations,
    /// The sequence number of the next PUBLISH, RELAY_PUBLISH or MODERATE, counted from 1 on
    /// each connection.
    next_seq: u64,
}

impl Session {
    /// Queues a forwarded publish. Its entry goes in before the frame is written, so the
    /// acknowledgement always finds it.
    fn publish(
        &mut self,
        shared: &Shared,
        topic: Topic,
        payload: Bytes,
        author: Option<Author>,
        reply: PublishReply,
    ) -> Result<(), ClientError> {
        if !fits_upstream(self.writer.welcome(), &topic, &payload) {
            reply.answer(shared, ErrorCode::PayloadTooLarge, 0, 0);
            return Ok(());
        }
        let seq = self.take_seq();
        let frame = match author {
            Some(Author { user, priority }) => Frame::RelayPublish(RelayPublish {
                seq,
                topic,
                user,
                priority,
                payload,
            }),
            None => Frame::Publish(Publish {
                seq,
                topic,
                payload,
            }),
        };
        self.inflight.lock().insert(seq, reply);
        if let Err(e) = self.writer.queue(&frame) {
            self.inflight.lock().remove(&seq);
            reply.fail(shared);
            return Err(e);
        }
        Ok(())
    }

    /// Queues a forwarded MODERATE, registered before it is written like a publish.
    fn moderate(
        &mut self,
        shared: &Shared,
        action: ModAction,
        reply: ModerateReply,
    ) -> Result<(), ClientError> {
        let seq = self.take_seq();
        self.moderations.lock().insert(seq, reply);
        let frame = Frame::Moderate(Moderate { seq, action });
        if let Err(e) = self.writer.queue(&frame) {
            if let Some(reply) = self.moderations.lock().remove(&seq) {
                reply.fail(shared);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Waits until every forwarded publish and MODERATE has its acknowledgement, for at most
    /// `limit`; the reader thread removes them as they arrive.
    fn wait_for_acks(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.inflight.lock().is_empty() && self.moderations.lock().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn take_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }
}

/// Returns whether the upstream that sent `welcome` accepts a publish of `payload` to `topic`:
/// within its `max_payload`, and within its `max_frame` with the largest RELAY_PUBLISH head. A
/// limit of 0 means the upstream announced none.
fn fits_upstream(welcome: &Welcome, topic: &Topic, payload: &[u8]) -> bool {
    // RELAY_PUBLISH body: seq, topic, user of up to 255 bytes, priority, payload length.
    let head = 8 + 1 + topic.as_str().len() + 1 + 255 + 1 + 4;
    let max_payload = welcome.max_payload as usize;
    let max_frame = welcome.max_frame as usize;
    (max_payload == 0 || payload.len() <= max_payload)
        && (max_frame == 0 || head + payload.len() <= max_frame)
}

/// The reader thread of one connection.
struct Reader {
    shared: Arc<Shared>,
    index: usize,
    generation: u64,
    inflight: InFlight,
    moderations: Moderations,
    /// Silence after which the upstream counts as dead.
    silence: Duration,
    /// Whether the upstream's first FORBIDDEN for a forwarded publish was logged.
    forbidden_logged: Cell<bool>,
}

impl Reader {
    /// Receives frames until the connection fails, then reports the loss to the link thread.
    fn run(self, mut upstream: ConnectionReader) {
        let span = info_span!(
            "relay_link",
            link = self.index,
            generation = self.generation
        );
        let _entered = span.enter();
        let mut last_frame = Instant::now();
        let mut pinged = false;
        let error = loop {
            match upstream.recv() {
                Ok(frame) => {
                    last_frame = Instant::now();
                    pinged = false;
                    self.on_frame(frame);
                }
                Err(ClientError::Timeout) => {
                    let quiet = last_frame.elapsed();
                    if quiet >= self.silence {
                        break format!("upstream silent for {:?}", self.silence);
                    }
                    if quiet >= self.silence / 2 && !pinged {
                        pinged = true;
                        if let Some(relay) = self.shared.relay.as_ref() {
                            let generation = self.generation;
                            relay.send(self.index, Command::Ping { generation });
                        }
                    }
                }
                Err(ClientError::Server {
                    code,
                    topic,
                    message,
                    close: false,
                }) => {
                    last_frame = Instant::now();
                    self.on_topic_error(&topic, code, message);
                }
                Err(e) => break e.to_string(),
            }
        };
        if let Some(relay) = self.shared.relay.as_ref() {
            relay.send(
                self.index,
                Command::Lost {
                    generation: self.generation,
                    error,
                },
            );
        }
    }

    fn on_frame(&self, frame: Frame) {
        match frame {
            Frame::Events(events) => {
                let len = self.on_events(events);
                update_link(&self.shared, self.index, |s| {
                    s.events_bytes_received += len as u64;
                });
            }
            Frame::EventsZstd(compressed) => self.on_compressed_events(compressed),
            Frame::Subscribed(subscribed) => self.on_subscribed(&subscribed),
            Frame::PublishAck(ack) => {
                if ack.code == ErrorCode::Forbidden && !self.forbidden_logged.replace(true) {
                    // Once per connection, because every later publish would repeat it.
                    warn!(
                        "upstream rejected a forwarded publish with FORBIDDEN: either the topic \
                         is reserved, or relay.token lacks the relay role (which RELAY_PUBLISH \
                         needs) or pub_topics that cover the topic"
                    );
                }
                let reply = self.inflight.lock().remove(&ack.seq);
                match reply {
                    Some(reply) => reply.answer(&self.shared, ack.code, ack.offset, ack.stream),
                    None => warn!(seq = ack.seq, "PUBLISH_ACK for no forwarded publish"),
                }
            }
            Frame::ModerateAck(ack) => {
                let reply = self.moderations.lock().remove(&ack.seq);
                match reply {
                    Some(reply) => reply.answer(&self.shared, ack.code),
                    None => warn!(seq = ack.seq, "MODERATE_ACK for no forwarded MODERATE"),
                }
            }
            other => trace!(kind = other.kind(), "ignored a frame from upstream"),
        }
    }

    /// Counts a compressed batch's bytes for the link status, then handles its entries as an
    /// EVENTS batch, so the cache and local subscribers see plain EVENTS.
    fn on_compressed_events(&self, compressed: EventsZstd) {
        let received = compressed_frame_len(compressed.events(), compressed.data().len());
        let plain = chorus_protocol::event::events_overhead(compressed.events().topic())
            + compressed.raw_len() as usize;
        let events = compressed.into_events();
        update_link(&self.shared, self.index, |s| {
            s.zstd_bytes_received += received as u64;
            s.zstd_bytes_decompressed += plain as u64;
        });
        // The frame is counted above as compressed, not as plain EVENTS.
        let _ = self.on_events(events);
    }

    /// Caches an upstream batch and hands it to the workers with subscribers, and returns the
    /// length of its EVENTS frame.
    ///
    /// The decoded frame is encoded again, which gives back the upstream's bytes exactly
    /// (the encoding has one form), because the client hands out frames decoded.
    fn on_events(&self, events: Events) -> usize {
        let topic = self.shared.registry.get(events.topic());
        let stream = events.stream();
        let frame = Frame::Events(events).to_bytes();
        let len = frame.len();
        let Ok(topic) = topic else {
            return len;
        };
        let Some(span) = frame_span(&frame) else {
            return len;
        };

        let mut inner = topic.inner.lock();
        let Some(relay) = inner.relay.as_mut() else {
            return len;
        };
        let appended = Instant::now();
        let Some(batch) = cache_upstream_batch(relay, &topic.name, stream, frame, span, appended)
        else {
            return len;
        };
        let wake = hand_to_workers(&self.shared, &topic, &inner, &batch);
        drop(inner);
        for worker in wake {
            self.shared.workers[worker].wake();
        }
        len
    }

    /// Marks the topic subscribed and notifies the workers. They complete the subscriptions
    /// waiting for it and move subscribers of a replaced stream to the new one.
    fn on_subscribed(&self, subscribed: &Subscribed) {
        let Ok(topic) = self.shared.registry.get(&subscribed.topic) else {
            return;
        };
        let mut inner = topic.inner.lock();
        let Some(relay) = inner.relay.as_mut() else {
            return;
        };
        if !apply_subscribed(relay, &topic.name, subscribed) {
            return;
        }
        let wake = tell_workers(&self.shared, &inner, || WorkerMsg::UpstreamSubscribed {
            topic: topic.clone(),
        });
        drop(inner);
        for worker in wake {
            self.shared.workers[worker].wake();
        }
    }

    /// Ends the topic's upstream state after the upstream rejected its subscription, and
    /// passes the error on to the local subscribers.
    fn on_topic_error(&self, name: &str, code: ErrorCode, message: String) {
        let Ok(name) = Topic::new(name) else {
            warn!(topic = name, code = code.name(), %message, "upstream ERROR for an invalid topic");
            return;
        };
        let Ok(topic) = self.shared.registry.get(&name) else {
            return;
        };
        let mut inner = topic.inner.lock();
        let Some(relay) = inner.relay.as_mut() else {
            return;
        };
        if relay.upstream == Upstream::Idle {
            return;
        }
        warn!(topic = %name, code = code.name(), %message, "upstream rejected the topic subscription");
        relay.clear();
        let wake = tell_workers(&self.shared, &inner, || WorkerMsg::UpstreamError {
            topic: topic.clone(),
            code,
            message: message.clone(),
        });
        drop(inner);
        for worker in wake {
            self.shared.workers[worker].wake();
        }
    }
}

/// Puts an upstream EVENTS frame of `stream` into the topic's cache, and returns it as the batch
/// for the workers. `span` is the frame's first offset, last offset and number of comments, as
/// [`frame_span`] reads them.
///
/// Returns `None` when the topic is not subscribed upstream or every comment is already
/// cached. A frame that overlaps the cache is cut to the comments after it. A frame on another
/// stream starts the cache over, and only the cached copy loses the text that the frame's
/// tombstones delete.
pub(super) fn cache_upstream_batch(
    relay: &mut RelayTopic,
    name: &Topic,
    stream: u64,
    mut frame: Bytes,
    span: (u64, u64, u64),
    appended: Instant,
) -> Option<Batch> {
    let (mut first, last, mut count) = span;
    if relay.upstream != Upstream::Subscribed {
        trace!(topic = %name, first, "EVENTS for a topic not subscribed upstream; dropped");
        return None;
    }
    if relay.cache.stream() == 0 {
        relay.cache.adopt_stream(stream);
    } else if stream != relay.cache.stream() {
        // The topic was recreated upstream during the subscription. The cache starts over
        // on the new stream; subscribers switch when they see it (see `offer_batch`).
        info!(topic = %name, old = relay.cache.stream(), new = stream, first, "stream changed upstream; cache cleared");
        relay.cache.reset(stream, first, first);
    }
    let end = relay.cache.end();
    if last < end {
        trace!(topic = %name, first, last, "EVENTS already cached; dropped");
        return None;
    }
    if first < end {
        // A repeated SUBSCRIBE can make the upstream send comments again.
        (frame, count) = tail_frame(name, stream, &frame, end);
        first = end;
    }
    let batch = Batch {
        first,
        end: last + 1,
        frame,
        appended,
        stream,
        compressed: CompressedCopy::default(),
    };
    relay.cache.push(batch.clone(), count);
    // The batch goes to the workers unchanged, and only the cached copy loses deleted text.
    for target in tombstone_targets(&batch.frame) {
        let applied = relay.cache.apply_tombstone(name, target);
        debug!(
            topic = %name,
            offset = target,
            cached = applied,
            "tombstone passed through"
        );
    }
    Some(batch)
}

/// Applies an upstream SUBSCRIBED to the topic's upstream state and cache. Returns false when
/// the topic no longer wants an upstream subscription, so the workers need not hear of it.
pub(super) fn apply_subscribed(
    relay: &mut RelayTopic,
    name: &Topic,
    subscribed: &Subscribed,
) -> bool {
    let Subscribed {
        stream, start, end, ..
    } = *subscribed;
    match relay.upstream {
        Upstream::Idle => {
            debug!(topic = %name, "SUBSCRIBED for a topic no longer wanted; ignored");
            return false;
        }
        Upstream::Subscribing => {
            info!(topic = %name, stream, start, end, "subscribed upstream");
            relay.upstream = Upstream::Subscribed;
            relay.cache.reset(stream, start, end);
        }
        Upstream::Subscribed if relay.cache.stream() == stream => {
            if start > relay.cache.end() {
                warn!(topic = %name, expected = relay.cache.end(), start, "upstream no longer keeps the comments after the cache; offsets jump");
            }
            debug!(topic = %name, stream, start, end, "resumed upstream");
            relay.cache.announce_end(end);
        }
        Upstream::Subscribed => {
            let old = relay.cache.stream();
            if old != 0 {
                info!(topic = %name, old, new = stream, start, "stream changed upstream; cache cleared");
            }
            relay.cache.reset(stream, start, end);
        }
    }
    true
}

impl super::Relay {
    /// Hands viewer counts and reaction sums to link number `link`, to be sent upstream.
    pub(crate) fn send_report(&self, link: usize, frames: Vec<Frame>) {
        self.send(link, Command::Report(frames));
    }
}

/// Queues AUDIENCE and REACT frames for the next flush. A frame longer than the upstream's
/// `max_frame` is dropped with a warning, because sending it would close the connection.
fn queue_report(writer: &mut ConnectionWriter, frames: &[Frame]) -> Result<(), ClientError> {
    let max_body = writer.welcome().max_frame as usize;
    for frame in frames {
        let body = frame.to_bytes().len() - chorus_protocol::HEADER_LEN;
        if body > max_body {
            warn!(
                kind = frame.kind(),
                body, max_body, "report frame larger than the upstream accepts; dropped"
            );
            continue;
        }
        writer.queue(frame)?;
    }
    Ok(())
}

/// Returns the length of an EVENTS_ZSTD frame, header included, for a batch of `events` with
/// `data_len` bytes of zstd data.
fn compressed_frame_len(events: &Events, data_len: usize) -> usize {
    // Compared with EVENTS, the head has a raw_len of 4 bytes more.
    chorus_protocol::event::events_overhead(events.topic()) + 4 + data_len
}

/// Returns whether the upstream refused the connection because of the relay's token.
fn is_auth_failure(error: &ClientError) -> bool {
    matches!(
        error,
        ClientError::Server {
            code: ErrorCode::Unauthenticated | ErrorCode::TokenExpired | ErrorCode::Forbidden,
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn failover() -> Failover {
        Failover::new(2, 100 * MS, 800 * MS)
    }

    #[test]
    fn first_attempt_goes_to_primary_at_once() {
        let attempt = failover().next_attempt();
        assert_eq!(attempt.target, 0);
        assert_eq!(attempt.ceiling, Duration::ZERO);
    }

    #[test]
    fn failed_attempt_fails_over_to_next_upstream() {
        let mut failover = failover();
        failover.failed();
        assert_eq!(failover.next_attempt().target, 1);
    }

    #[test]
    fn failover_wraps_around_to_primary() {
        let mut failover = failover();
        failover.failed();
        failover.failed();
        assert_eq!(failover.next_attempt().target, 0);
    }

    #[test]
    fn backoff_ceiling_doubles_up_to_max() {
        let mut failover = failover();
        let mut ceilings = Vec::new();
        for _ in 0..5 {
            failover.failed();
            ceilings.push(failover.next_attempt().ceiling);
        }
        assert_eq!(ceilings, [200 * MS, 400 * MS, 800 * MS, 800 * MS, 800 * MS]);
    }

    /// Simulated time: the link is on the fallback when the fallback drops after a long
    /// session, so the next attempt goes back to the primary with the backoff started over.
    #[test]
    fn loss_after_long_session_returns_to_primary() {
        let start = Instant::now();
        let mut failover = failover();
        failover.failed();
        failover.connected(start);
        failover.lost(start + Duration::from_secs(60));
        let attempt = failover.next_attempt();
        assert_eq!(attempt.target, 0);
        assert_eq!(attempt.ceiling, 100 * MS);
    }

    /// Simulated time: an upstream that drops each connection at once (as one that rejects a
    /// relay loop does) is retried with a growing delay, not in a tight loop.
    #[test]
    fn short_sessions_keep_backing_off() {
        let start = Instant::now();
        let mut failover = failover();
        let mut now = start;
        for _ in 0..3 {
            failover.connected(now);
            now += 10 * MS;
            failover.lost(now);
        }
        assert_eq!(failover.next_attempt().ceiling, 800 * MS);
    }

    #[test]
    fn repeated_short_sessions_fail_over() {
        let start = Instant::now();
        let mut failover = failover();
        let mut now = start;
        let mut targets = Vec::new();
        for _ in 0..SHORT_SESSIONS_BEFORE_FAILOVER {
            failover.connected_to(now, 0);
            now += 10 * MS;
            failover.lost(now);
            targets.push(failover.next_attempt().target);
        }
        assert_eq!(targets, [0, 0, 1], "targets after each short session");
    }

    #[test]
    fn long_session_ends_the_short_streak() {
        let start = Instant::now();
        let mut failover = failover();
        let mut now = start;
        for lasted in [10 * MS, 10 * MS, 900 * MS, 10 * MS, 10 * MS] {
            failover.connected_to(now, 0);
            now += lasted;
            failover.lost(now);
        }
        assert_eq!(failover.next_attempt().target, 0);
    }

    #[test]
    fn jitter_stays_within_ceiling() {
        for _ in 0..100 {
            assert!(jitter(50 * MS, &mut rand::thread_rng()) <= 50 * MS);
        }
        assert_eq!(
            jitter(Duration::ZERO, &mut rand::thread_rng()),
            Duration::ZERO
        );
    }
}
