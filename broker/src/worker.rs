//! The event loop: one worker thread per core, each with its own listener socket
//! (SO_REUSEPORT), connections and poll instance.
//!
//! A worker reads frames from its connections and appends publishes to the topic logs. At the
//! end of every loop iteration it commits the topics it touched and sends acknowledgements. Then
//! it hands each committed batch to every worker that has subscribers for it. The batch is an
//! encoded EVENTS frame whose bytes every subscriber shares.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
// The worker's maps are keyed by tokens and topic ids that the broker assigns, so a fast hasher
// without flood resistance is safe. With SipHash, hashing tokens was about a third of the
// user-space instructions of fan-out in a callgrind profile.
use chorus_protocol::{ErrorCode, ErrorFrame, Frame};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use slab::Slab;
use tracing::{debug, info, warn};

use crate::audience::WorkerAudience;
use crate::config::Limits;
use crate::conn::{Conn, Phase};
use crate::relay::loops;
use crate::server::{Shared, WorkerMsg};
use crate::topics::{Batch, TopicState};
use crate::transport::{ListenerKind, ReadOutcome, Transport, TransportError, WsSettings};
use crate::worker_relay::PendingSubscribe;

pub(crate) const WAKER: Token = Token(usize::MAX);
/// Encoded size of a PUBLISH_ACK frame: header, seq, code, offset and stream.
const ACK_FRAME_LEN: usize = chorus_protocol::HEADER_LEN + 8 + 2 + 8 + 8;
/// Tokens below this number name listeners; connection tokens start here.
pub(crate) const FIRST_CONN: usize = 1 << 16;
/// Bytes read from one connection per readiness event before others get their turn.
const READ_BUDGET: usize = 1 << 20;
/// Longest interval between checks of the hello and idle timeouts; shorter idle timeouts get
/// proportionally shorter ticks so that a PING always goes out before the timeout.
const MAX_TICK: Duration = Duration::from_millis(500);
/// How long a connection that is being closed with an ERROR may take to receive it.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// An acknowledgement waiting for its topic's commit.
#[derive(Debug)]
pub(crate) struct PendingAck {
    pub(crate) token: Token,
    pub(crate) conn_id: u64,
    pub(crate) seq: u64,
    pub(crate) offset: u64,
    /// When the PUBLISH frame was decoded, for the acknowledgement latency metric.
    pub(crate) received: Instant,
}

/// One event-loop thread.
pub(crate) struct Worker {
    pub(crate) index: usize,
    poll: Poll,
    pub(crate) shared: Arc<Shared>,
    /// Limits in force; a configuration reload from the admin endpoint replaces them.
    pub(crate) limits: Limits,
    listeners: Vec<(TcpListener, ListenerKind)>,
    ws_settings: WsSettings,
    pub(crate) conns: Slab<Conn>,
    rx: Receiver<WorkerMsg>,
    /// Batches for this worker's subscribers, in commit order per topic.
    pub(crate) inbox: VecDeque<(Arc<TopicState>, Batch)>,
    /// Connections subscribed to each topic id.
    pub(crate) local_subs: HashMap<u64, HashSet<Token>>,
    /// Topics appended to in this iteration, with the acknowledgements waiting for them.
    pub(crate) dirty: HashMap<u64, (Arc<TopicState>, Vec<PendingAck>)>,
    /// When the earliest topic held back by the batching window is due for its commit.
    pub(crate) batch_due: Option<Instant>,
    /// Connections with new output to write.
    pub(crate) to_flush: HashSet<Token>,
    /// Connections with a subscription that is catching up from the log.
    pub(crate) catching_up: HashSet<Token>,
    /// Connections that have or had a capped subscription, for the SKIPPED notices. The notice
    /// tick removes those that have none any more.
    pub(crate) capped: HashSet<Token>,
    /// Connections that stopped reading because of the read budget.
    more_to_read: Vec<Token>,
    /// Connections being closed, with the time by which they are dropped.
    closing: HashMap<Token, Instant>,
    pub(crate) scratch: BytesMut,
    read_chunk: Box<[u8]>,
    pub(crate) log_limiter: LogLimiter,
    /// At a relay, subscriptions waiting for their topic's upstream SUBSCRIBED, by topic id.
    pub(crate) relay_pending: HashMap<u64, Vec<PendingSubscribe>>,
    /// Viewer counts and reaction sums of this worker's connections.
    pub(crate) audience: WorkerAudience,
}

impl Worker {
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        shared: Arc<Shared>,
        listeners: Vec<(std::net::TcpListener, ListenerKind)>,
        rx: Receiver<WorkerMsg>,
    ) -> io::Result<Worker> {
        let mut mio_listeners = Vec::with_capacity(listeners.len());
        for (i, (listener, kind)) in listeners.into_iter().enumerate() {
            let mut listener = TcpListener::from_std(listener);
            poll.registry()
                .register(&mut listener, Token(i), Interest::READABLE)?;
            mio_listeners.push((listener, kind));
        }
        let ws_settings = WsSettings::new(
            shared.config.websocket.allowed_origins.clone(),
            shared.config.limits.max_frame,
        );
        let limits = shared.config.limits.clone();
        let audience = WorkerAudience::new(index, &shared.config, Instant::now());
        Ok(Worker {
            index,
            poll,
            shared,
            limits,
            listeners: mio_listeners,
            ws_settings,
            conns: Slab::new(),
            rx,
            inbox: VecDeque::new(),
            local_subs: HashMap::default(),
            dirty: HashMap::default(),
            batch_due: None,
            to_flush: HashSet::default(),
            catching_up: HashSet::default(),
            capped: HashSet::default(),
            more_to_read: Vec::new(),
            closing: HashMap::default(),
            scratch: BytesMut::with_capacity(64 * 1024),
            read_chunk: vec![0u8; 64 * 1024].into_boxed_slice(),
            log_limiter: LogLimiter::default(),
            relay_pending: HashMap::default(),
            audience,
        })
    }

    /// Runs the loop until the server shuts down.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let tick = tick_interval(self.shared.config.limits.idle_timeout_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let timeout = if self.has_immediate_work() {
                Duration::ZERO
            } else {
                let mut deadline = next_tick.min(self.audience.next_due());
                if let Some(due) = self.batch_due {
                    deadline = deadline.min(due);
                }
                deadline.saturating_duration_since(Instant::now())
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    warn!(worker = self.index, error = %e, "poll failed");
                }
                continue;
            }

            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    Token(i) if i < FIRST_CONN => self.accept(i),
                    token => self.on_conn_event(token, event.is_readable(), event.is_writable()),
                }
            }
            self.resume_reads();
            self.drain_channel();
            // Before the commit, so that companion records appended now go out in this
            // iteration.
            self.audience_tick(Instant::now());

            self.end_iteration();

            let now = Instant::now();
            if now >= next_tick {
                self.tick(now);
                next_tick = now + tick;
            }
            if self.shared.shutdown.load(Ordering::Acquire) {
                self.shutdown();
                return;
            }
        }
    }

    /// Commits, acknowledges, delivers and writes what this iteration produced.
    fn end_iteration(&mut self) {
        self.commit_dirty_topics();
        self.deliver_inbox();
        self.serve_catch_up();
        self.flush_pending_writes();
    }

    fn has_immediate_work(&self) -> bool {
        !self.more_to_read.is_empty() || self.catch_up_can_progress()
    }

    fn accept(&mut self, listener: usize) {
        loop {
            let (socket, kind) = &self.listeners[listener];
            let kind = *kind;
            let (stream, peer) = match socket.accept() {
                Ok(pair) => pair,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Running out of descriptors is the usual cause; the listener stays
                    // registered and is retried on its next readiness event.
                    if self.log_limiter.allow() {
                        warn!(worker = self.index, error = %e, "accept failed");
                    }
                    return;
                }
            };
            self.register_conn(stream, peer, kind);
        }
    }

    fn register_conn(
        &mut self,
        mut stream: TcpStream,
        peer: std::net::SocketAddr,
        kind: ListenerKind,
    ) {
        let limit = self.limits.max_connections;
        let count = self.shared.connections.fetch_add(1, Ordering::AcqRel);
        if count >= limit {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            if self.log_limiter.allow() {
                warn!(%peer, limit, "rejected connection: limits.max_connections reached");
            }
            return;
        }
        if let Err(e) = stream.set_nodelay(true) {
            debug!(%peer, error = %e, "failed to set TCP_NODELAY");
        }

        let id = self.shared.next_conn_id.fetch_add(1, Ordering::Relaxed);
        self.metrics().connections_accepted.add(1);
        let entry = self.conns.vacant_entry();
        let token = Token(entry.key() + FIRST_CONN);
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            warn!(%peer, error = %e, "failed to register connection");
            return;
        }
        debug!(conn = id, %peer, ?kind, "connection accepted");
        let tls = self.shared.tls.read();
        match Transport::accept(stream, kind, &self.ws_settings, tls.as_ref()) {
            Ok(transport) => {
                entry.insert(Conn::new(id, transport, peer, Instant::now()));
            }
            Err(e) => {
                self.shared.connections.fetch_sub(1, Ordering::AcqRel);
                warn!(%peer, error = %e, "failed to set up connection");
            }
        }
    }

    pub(crate) fn conn_mut(&mut self, token: Token) -> Option<&mut Conn> {
        self.conns.get_mut(token.0.checked_sub(FIRST_CONN)?)
    }

    fn on_conn_event(&mut self, token: Token, readable: bool, writable: bool) {
        if writable {
            self.to_flush.insert(token);
        }
        if readable {
            self.read_conn(token);
        }
    }

    fn resume_reads(&mut self) {
        for token in std::mem::take(&mut self.more_to_read) {
            self.read_conn(token);
        }
    }

    /// Reads what the socket has, up to the read budget, and handles every whole frame.
    fn read_conn(&mut self, token: Token) {
        let mut total = 0;
        loop {
            let Some(conn) = token
                .0
                .checked_sub(FIRST_CONN)
                .and_then(|index| self.conns.get_mut(index))
            else {
                return;
            };
            if conn.read_closed {
                return;
            }
            if conn.phase == Phase::Closing {
                if conn.write_shut {
                    self.discard_input(token);
                }
                return;
            }
            // Acknowledgements still waiting for their commit count too: they join the queue at
            // the end of this iteration.
            let owed = conn.out.bytes() + conn.pending_acks * ACK_FRAME_LEN;
            if owed >= self.limits.outbound_queue_bytes {
                conn.read_paused = true;
                return;
            }
            match conn
                .transport
                .read(&mut self.read_chunk, &mut conn.read_buf)
            {
                Ok(ReadOutcome::Closed) => {
                    conn.read_closed = true;
                    self.on_peer_closed(token);
                    return;
                }
                Ok(ReadOutcome::Data(n)) => total += n,
                Ok(ReadOutcome::WouldBlock) => return,
                Err(TransportError::TooLarge(e)) => {
                    self.fail_conn(token, ErrorCode::FrameTooLarge, e);
                    return;
                }
                Err(TransportError::WebSocket(e)) => {
                    self.fail_conn(token, ErrorCode::MalformedFrame, e);
                    return;
                }
                Err(e) => {
                    if self.log_limiter.allow() {
                        info!(conn = conn.id, peer = %conn.peer, error = %e, "read failed");
                    }
                    self.close_conn(token);
                    return;
                }
            }
            self.handle_frames(token);
            if total >= READ_BUDGET {
                self.more_to_read.push(token);
                return;
            }
        }
    }

    /// Reads and drops what a closing peer still sends, and closes once it is done.
    fn discard_input(&mut self, token: Token) {
        let mut total = 0;
        while total < READ_BUDGET {
            let Some(conn) = token
                .0
                .checked_sub(FIRST_CONN)
                .and_then(|index| self.conns.get_mut(index))
            else {
                return;
            };
            conn.read_buf.clear();
            match conn
                .transport
                .read(&mut self.read_chunk, &mut conn.read_buf)
            {
                Ok(ReadOutcome::Data(n)) => total += n,
                Ok(ReadOutcome::WouldBlock) => return,
                Ok(ReadOutcome::Closed) | Err(_) => {
                    self.close_conn(token);
                    return;
                }
            }
        }
        self.more_to_read.push(token);
    }

    /// Handles a clean close by the peer: a partial frame left behind is reported.
    fn on_peer_closed(&mut self, token: Token) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.read_buf.is_empty() {
            // The peer may only have closed its sending side: what it is owed, such as the
            // acknowledgements of its last publishes, is written before the connection closes.
            debug!(conn = conn.id, peer = %conn.peer, "connection closed by peer");
            self.to_flush.insert(token);
            self.closing.insert(token, Instant::now() + CLOSE_GRACE);
            return;
        }
        let pending = conn.read_buf.len();
        self.fail_conn(
            token,
            ErrorCode::TruncatedFrame,
            format!("connection closed with {pending} bytes of an incomplete frame"),
        );
    }

    /// Queues an ERROR that closes the connection, stops reading, and drops the connection
    /// once the ERROR is written or the grace period ends.
    pub(crate) fn fail_conn(&mut self, token: Token, code: ErrorCode, message: String) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        if conn.phase == Phase::Closing {
            return;
        }
        let (id, peer, before_hello) = (conn.id, conn.peer, conn.phase == Phase::Preamble);
        if before_hello {
            // The peer sent no valid preamble, so it gets ours first to make the ERROR
            // readable by a chorus client that speaks another version.
            conn.out
                .push(bytes::Bytes::copy_from_slice(&chorus_protocol::preamble()));
        }
        conn.phase = Phase::Closing;
        let frame = Frame::Error(ErrorFrame {
            code,
            close: true,
            topic: String::new(),
            message: message.clone(),
        });
        conn.out.push(frame.to_bytes());
        if self.log_limiter.allow() {
            warn!(conn = id, %peer, code = code.name(), "closing connection: {message}");
        }
        self.to_flush.insert(token);
        self.closing.insert(token, Instant::now() + CLOSE_GRACE);
        self.metrics().error(code);
    }

    /// Drops a connection and its subscriptions at once.
    pub(crate) fn close_conn(&mut self, token: Token) {
        let Some(index) = token.0.checked_sub(FIRST_CONN) else {
            return;
        };
        let Some(mut conn) = self.conns.try_remove(index) else {
            return;
        };
        for (topic_id, sub) in conn.subs.drain() {
            sub.topic.inner.lock().interest[self.index] -= 1;
            if let Some(set) = self.local_subs.get_mut(&topic_id) {
                set.remove(&token);
                if set.is_empty() {
                    self.local_subs.remove(&topic_id);
                }
            }
        }
        if loops::parse_chain(&conn.client_name).is_some() {
            self.shared.lineage.forget(conn.id);
        }
        conn.transport.close();
        if let Some(socket) = conn.transport.socket() {
            if let Err(e) = self.poll.registry().deregister(socket) {
                debug!(conn = conn.id, error = %e, "failed to deregister connection");
            }
        }
        self.to_flush.remove(&token);
        self.catching_up.remove(&token);
        self.closing.remove(&token);
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }

    fn drain_channel(&mut self) {
        while let Ok(message) = self.rx.try_recv() {
            match message {
                WorkerMsg::Batch { topic, batch } => {
                    self.shared.workers[self.index].batch_taken(batch.frame.len());
                    self.inbox.push_back((topic, batch));
                }
                WorkerMsg::MissedBatch { topic } => self.on_missed_batch(&topic),
                WorkerMsg::Admin(request) => self.on_admin(request),
                WorkerMsg::UpstreamSubscribed { topic } => self.on_upstream_subscribed(&topic),
                WorkerMsg::UpstreamError {
                    topic,
                    code,
                    message,
                } => self.on_upstream_error(&topic, code, &message),
                WorkerMsg::PublishAck {
                    token,
                    conn_id,
                    ack,
                } => self.on_forwarded_ack(token, conn_id, ack),
                WorkerMsg::ModerateAck {
                    token,
                    conn_id,
                    ack,
                } => self.on_forwarded_moderate_ack(token, conn_id, ack),
            }
        }
        self.shared.workers[self.index].clear_woken();
    }

    /// Writes every connection that has new output, and drops closing ones that are done.
    fn flush_pending_writes(&mut self) {
        let limit = self.limits.outbound_queue_bytes;
        for token in std::mem::take(&mut self.to_flush) {
            let Some(conn) = self.conn_mut(token) else {
                continue;
            };
            match conn.transport.write(&mut conn.out) {
                Ok(true) if conn.phase == Phase::Closing && conn.read_closed => {
                    self.close_conn(token)
                }
                Ok(true) if conn.phase == Phase::Closing => {
                    // Closing a socket with unread input makes the kernel send a reset, which can
                    // destroy the ERROR before the peer reads it. So the sending side is shut
                    // first and the input drained until the peer closes or the grace ends.
                    if !conn.write_shut {
                        conn.write_shut = true;
                        conn.transport.shutdown_write();
                        self.more_to_read.push(token);
                    }
                }
                Ok(true) if conn.read_closed && conn.pending_acks == 0 => self.close_conn(token),
                Ok(_) => {
                    if conn.read_paused && conn.out.bytes() < limit {
                        conn.read_paused = false;
                        self.more_to_read.push(token);
                    }
                }
                Err(e) => {
                    let (id, peer) = (conn.id, conn.peer);
                    if self.log_limiter.allow() {
                        info!(conn = id, %peer, error = %e, "write failed");
                    }
                    self.close_conn(token);
                }
            }
        }
    }

    /// Enforces the hello and idle timeouts, the catch-up time limit and the close grace
    /// period.
    fn tick(&mut self, now: Instant) {
        let limits = &self.limits;
        let hello_timeout = Duration::from_millis(limits.hello_timeout_ms);
        let idle_timeout = Duration::from_millis(limits.idle_timeout_ms);
        let max_catch_up = Duration::from_millis(self.shared.config.delivery.max_catch_up_ms);

        let mut expired = Vec::new();
        let mut pings = Vec::new();
        let mut stuck = Vec::new();
        for (index, conn) in &mut self.conns {
            let token = Token(index + FIRST_CONN);
            match conn.phase {
                Phase::Preamble | Phase::Hello if now - conn.opened > hello_timeout => {
                    expired.push((token, "no HELLO within limits.hello_timeout_ms"));
                }
                Phase::Ready if !idle_timeout.is_zero() => {
                    let silent = now - conn.last_read;
                    if silent > idle_timeout {
                        expired.push((token, "no traffic within limits.idle_timeout_ms"));
                    } else if silent > idle_timeout / 2 && !conn.ping_sent {
                        pings.push(token);
                    }
                }
                _ => {}
            }
            if conn.phase != Phase::Ready || conn.write_shut {
                continue;
            }
            let since = conn.catching_up_since(now);
            if since.is_some_and(|since| !max_catch_up.is_zero() && now - since > max_catch_up) {
                stuck.push(token);
            }
        }
        for token in stuck {
            let message = format!(
                "a subscription has been catching up from the log for more than \
                 delivery.max_catch_up_ms ({} ms); reconnect and resume from the last offset \
                 processed, or subscribe from the latest",
                max_catch_up.as_millis()
            );
            self.fail_conn(token, ErrorCode::SlowConsumer, message);
        }
        for (token, reason) in expired {
            self.fail_conn(token, ErrorCode::Timeout, reason.to_owned());
        }
        self.close_expired_sessions();
        for token in pings {
            let conn = self.conn_mut(token).expect("collected from the slab above");
            conn.ping_sent = true;
            conn.out.push(Frame::Ping(conn.id).to_bytes());
            self.to_flush.insert(token);
        }

        let overdue: Vec<Token> = self
            .closing
            .iter()
            .filter(|(_, deadline)| now >= **deadline)
            .map(|(token, _)| *token)
            .collect();
        for token in overdue {
            self.close_conn(token);
        }
        self.send_skip_notices(now);
        self.flush_pending_writes();
        self.update_gauges();
        self.log_limiter.report(self.index);
    }

    /// Closes with TOKEN_EXPIRED every open session whose token has expired.
    fn close_expired_sessions(&mut self) {
        if self.shared.auth.is_none() {
            return;
        }
        let now_s = crate::auth::unix_now_s();
        let expired: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, conn)| conn.phase == Phase::Ready && conn.session.is_expired(now_s))
            .map(|(index, _)| Token(index + FIRST_CONN))
            .collect();
        for token in expired {
            let message = "token expired; reconnect with a new token".to_owned();
            self.fail_conn(token, ErrorCode::TokenExpired, message);
        }
    }

    /// Commits what is pending, tells every connection the broker is stopping, and drops them.
    fn shutdown(&mut self) {
        self.end_iteration();
        let tokens: Vec<Token> = self
            .conns
            .iter()
            .map(|(i, _)| Token(i + FIRST_CONN))
            .collect();
        for token in &tokens {
            let conn = self
                .conn_mut(*token)
                .expect("collected from the slab above");
            let frame = Frame::Error(ErrorFrame {
                code: ErrorCode::ShuttingDown,
                close: true,
                topic: String::new(),
                message: "broker is shutting down".into(),
            });
            conn.out.push(frame.to_bytes());
            // Best effort: a client that does not read in time misses the notice.
            let _ = conn.transport.write(&mut conn.out);
        }
        for token in tokens {
            self.close_conn(token);
        }
        debug!(worker = self.index, "worker stopped");
    }
}

/// Returns how often timeouts are checked: a quarter of the idle timeout, at most
/// [`MAX_TICK`] and at least 10 ms.
fn tick_interval(idle_timeout_ms: u64) -> Duration {
    if idle_timeout_ms == 0 {
        return MAX_TICK;
    }
    Duration::from_millis(idle_timeout_ms / 4).clamp(Duration::from_millis(10), MAX_TICK)
}

/// Caps connection log lines per worker at a fixed number per tick, and reports how many were
/// dropped, so that a storm of bad clients cannot flood the log.
#[derive(Debug, Default)]
pub(crate) struct LogLimiter {
    emitted: u32,
    suppressed: u64,
}

impl LogLimiter {
    const PER_TICK: u32 = 50;

    pub(crate) fn allow(&mut self) -> bool {
        if self.emitted < Self::PER_TICK {
            self.emitted += 1;
            return true;
        }
        self.suppressed += 1;
        false
    }

    fn report(&mut self, worker: usize) {
        if self.suppressed > 0 {
            warn!(
                worker,
                suppressed = self.suppressed,
                "connection log lines suppressed by the rate limit"
            );
        }
        self.emitted = 0;
        self.suppressed = 0;
    }
}
