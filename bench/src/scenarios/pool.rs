//! Many subscriber connections driven by a few threads, each with its own mio poll and
//! non-blocking sockets, so that tens of thousands of connections cost no thread each.
//!
//! Each connection runs a [`Session`]: the pool connects it from a spread source address,
//! sends the handshake, answers keepalives and hands every delivered message to the thread's
//! [`Handler`].

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::proto::{new_session, Incoming, Role, Session, SessionConfig};
use super::sockets;
use crate::state::ErrorLog;

/// Bytes read from a socket per system call.
const READ_CHUNK: usize = 64 * 1024;

/// Longest a poll waits, so that stop requests and handshake deadlines are seen promptly.
const POLL_WAIT: Duration = Duration::from_millis(20);

/// Interval of keepalive checks over every ready connection.
const TICK: Duration = Duration::from_secs(1);

/// Receives what the connections of one pool thread deliver. `slot` numbers the thread's
/// connections in the order of the ids given to the handler's constructor.
pub(crate) trait Handler: Send + 'static {
    /// The connection's subscription is confirmed; `start` is its first offset, if any.
    fn on_ready(&mut self, slot: usize, start: Option<u64>);

    /// A message arrived on the connection.
    fn on_message(&mut self, slot: usize, payload: &Bytes, offset: Option<u64>);

    /// Called once per loop iteration, after the events of one poll were handled.
    fn end_iteration(&mut self) {}
}

/// What the pool connects.
#[derive(Debug, Clone)]
pub(crate) struct PoolSpec {
    pub(crate) server: SocketAddr,
    pub(crate) session: SessionConfig,
    /// Topic index of each connection; its length is the number of connections.
    pub(crate) topic_of: Vec<usize>,
    /// Number the first connection gets, so that MQTT client ids stay unique across pools.
    pub(crate) first_id: usize,
    pub(crate) threads: usize,
    /// Connections each thread has between connect and ready at once.
    pub(crate) max_connecting: usize,
    /// Time from connect to a confirmed subscription after which a connection counts as failed.
    pub(crate) connect_timeout: Duration,
}

/// Counters the pool threads share with the thread that runs the scenario.
#[derive(Debug, Default)]
pub(crate) struct PoolCounters {
    /// Connections whose subscription was confirmed.
    pub(crate) ready: AtomicU64,
    /// Connections that failed before their subscription was confirmed.
    pub(crate) failed: AtomicU64,
    /// Ready connections that were closed or failed later.
    pub(crate) lost: AtomicU64,
    /// Keepalive pings the brokers sent and the pool answered.
    pub(crate) pings: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<ErrorLog>,
}

impl PoolCounters {
    pub(crate) fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn push_error(&self, message: String) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        errors.push(message);
    }

    /// Returns the first error messages and the number of the rest.
    pub(crate) fn errors(&self) -> (Vec<String>, u64) {
        let errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        (errors.messages.clone(), errors.dropped)
    }
}

/// A running pool.
pub(crate) struct Pool<H> {
    counters: Arc<PoolCounters>,
    threads: Vec<JoinHandle<H>>,
    total: u64,
}

impl<H: Handler> Pool<H> {
    /// Starts the threads; `make_handler` gets each thread's index and its connection indices.
    pub(crate) fn start(
        spec: PoolSpec,
        make_handler: impl Fn(usize, &[usize]) -> H,
    ) -> anyhow::Result<Pool<H>> {
        let threads = spec.threads.max(1);
        let total = spec.topic_of.len() as u64;
        let spec = Arc::new(spec);
        let counters = Arc::new(PoolCounters::default());
        let mut handles = Vec::with_capacity(threads);
        for index in 0..threads {
            let conns: Vec<usize> = (index..spec.topic_of.len()).step_by(threads).collect();
            let handler = make_handler(index, &conns);
            let worker = Worker::new(Arc::clone(&spec), Arc::clone(&counters), conns, handler)?;
            let handle = thread::Builder::new()
                .name(format!("pool-{index}"))
                .spawn(move || worker.run())?;
            handles.push(handle);
        }
        Ok(Pool {
            counters,
            threads: handles,
            total,
        })
    }

    pub(crate) fn counters(&self) -> &PoolCounters {
        &self.counters
    }

    /// Waits until every connection is ready or has failed, or until `deadline`; calls
    /// `on_wait` about ten times a second meanwhile. Returns the number of ready connections.
    pub(crate) fn wait_settled(&self, deadline: Instant, mut on_wait: impl FnMut(u64)) -> u64 {
        loop {
            let ready = PoolCounters::get(&self.counters.ready);
            let failed = PoolCounters::get(&self.counters.failed);
            if ready + failed >= self.total || Instant::now() >= deadline {
                return ready;
            }
            on_wait(ready);
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the threads, which close their connections, and returns their handlers.
    pub(crate) fn stop(self) -> Vec<H> {
        self.counters.stop.store(true, Ordering::Release);
        let mut handlers = Vec::new();
        for handle in self.threads {
            match handle.join() {
                Ok(handler) => handlers.push(handler),
                Err(_) => self.counters.push_error("a pool thread panicked".into()),
            }
        }
        handlers
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Handshake,
    Ready,
}

struct Conn {
    stream: TcpStream,
    session: Box<dyn Session>,
    input: BytesMut,
    out: BytesMut,
    phase: Phase,
}

struct Worker<H> {
    spec: Arc<PoolSpec>,
    counters: Arc<PoolCounters>,
    poll: Poll,
    /// Pool-wide connection index of each slot.
    ids: Vec<usize>,
    conns: Vec<Option<Conn>>,
    handler: H,
    next_open: usize,
    connecting: usize,
    /// Handshake deadlines in the order the connections were opened.
    deadlines: VecDeque<(Instant, usize)>,
    scratch: Vec<u8>,
    incoming: Vec<Incoming>,
}

impl<H: Handler> Worker<H> {
    fn new(
        spec: Arc<PoolSpec>,
        counters: Arc<PoolCounters>,
        ids: Vec<usize>,
        handler: H,
    ) -> io::Result<Worker<H>> {
        let slots = ids.len();
        Ok(Worker {
            spec,
            counters,
            poll: Poll::new()?,
            ids,
            conns: (0..slots).map(|_| None).collect(),
            handler,
            next_open: 0,
            connecting: 0,
            deadlines: VecDeque::new(),
            scratch: vec![0; READ_CHUNK],
            incoming: Vec::new(),
        })
    }

    fn run(mut self) -> H {
        let mut events = Events::with_capacity(1024);
        let mut next_tick = Instant::now() + TICK;
        while !self.counters.stop.load(Ordering::Acquire) {
            self.open_more();
            if let Err(e) = self.poll.poll(&mut events, Some(POLL_WAIT)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.counters.push_error(format!("poll failed: {e}"));
                    break;
                }
            }
            for event in events.iter() {
                let slot = event.token().0;
                self.on_event(slot, event.is_readable(), event.is_writable());
            }
            let now = Instant::now();
            self.expire(now);
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
            }
            self.handler.end_iteration();
        }
        // Dropping the connections closes their sockets.
        self.conns.clear();
        self.handler
    }

    fn open_more(&mut self) {
        while self.connecting < self.spec.max_connecting && self.next_open < self.ids.len() {
            let slot = self.next_open;
            self.next_open += 1;
            if let Err(e) = self.open(slot) {
                PoolCounters::bump(&self.counters.failed);
                let id = self.ids[slot];
                self.counters
                    .push_error(format!("connection {id}: connect failed: {e}"));
            }
        }
    }

    fn open(&mut self, slot: usize) -> io::Result<()> {
        let id = self.ids[slot];
        let server = self.spec.server;
        let mut stream = sockets::connect_nonblocking(server, sockets::source_for(server, id))?;
        let interest = Interest::READABLE | Interest::WRITABLE;
        self.poll
            .registry()
            .register(&mut stream, Token(slot), interest)?;
        let role = Role::Subscriber(self.spec.topic_of[id]);
        let session = new_session(&self.spec.session, role, self.spec.first_id + id);
        self.conns[slot] = Some(Conn {
            stream,
            session,
            input: BytesMut::new(),
            out: BytesMut::new(),
            phase: Phase::Connecting,
        });
        self.connecting += 1;
        let deadline = Instant::now() + self.spec.connect_timeout;
        self.deadlines.push_back((deadline, slot));
        Ok(())
    }

    fn on_event(&mut self, slot: usize, readable: bool, writable: bool) {
        let Some(Some(conn)) = self.conns.get_mut(slot) else {
            return;
        };
        let result = service(
            conn,
            readable,
            writable,
            &mut self.scratch,
            &mut self.incoming,
        );
        // Events are handed out even when the connection then failed: they were received.
        let was_ready = conn.phase == Phase::Ready;
        let mut became_ready = None;
        for incoming in self.incoming.drain(..) {
            match incoming {
                Incoming::Ready { start } => became_ready = Some(start),
                Incoming::Message { payload, offset } => {
                    self.handler.on_message(slot, &payload, offset);
                }
                Incoming::Ping => PoolCounters::bump(&self.counters.pings),
                Incoming::Notice(message) => {
                    let id = self.ids[slot];
                    self.counters
                        .push_error(format!("connection {id}: {message}"));
                }
                Incoming::Ack { .. } | Incoming::BarrierReply => {}
            }
        }
        if let (Some(start), false) = (became_ready, was_ready) {
            conn.phase = Phase::Ready;
            self.connecting -= 1;
            PoolCounters::bump(&self.counters.ready);
            self.handler.on_ready(slot, start);
        }
        if let Err(reason) = result {
            self.fail(slot, &reason);
        }
    }

    /// Fails connections whose handshake passed its deadline.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, slot)) = self.deadlines.front() {
            if deadline > now {
                return;
            }
            self.deadlines.pop_front();
            let pending = matches!(&self.conns[slot], Some(c) if c.phase != Phase::Ready);
            if pending {
                self.fail(slot, "no confirmed subscription within the connect timeout");
            }
        }
    }

    /// Lets every ready session send the keepalives it owes.
    fn tick(&mut self, now: Instant) {
        let mut failed = Vec::new();
        for (slot, conn) in self.conns.iter_mut().enumerate() {
            let Some(conn) = conn else { continue };
            if conn.phase != Phase::Ready {
                continue;
            }
            conn.session.tick(now, &mut conn.out);
            if let Err(e) = flush(conn) {
                failed.push((slot, e));
            }
        }
        for (slot, reason) in failed {
            self.fail(slot, &reason);
        }
    }

    fn fail(&mut self, slot: usize, reason: &str) {
        let Some(conn) = self.conns[slot].take() else {
            return;
        };
        if conn.phase == Phase::Ready {
            PoolCounters::bump(&self.counters.lost);
        } else {
            self.connecting -= 1;
            PoolCounters::bump(&self.counters.failed);
        }
        let id = self.ids[slot];
        self.counters
            .push_error(format!("connection {id}: {reason}"));
    }
}

/// Completes a pending connect, reads and parses what arrived and writes what is owed.
fn service(
    conn: &mut Conn,
    readable: bool,
    writable: bool,
    scratch: &mut [u8],
    incoming: &mut Vec<Incoming>,
) -> Result<(), String> {
    if conn.phase == Phase::Connecting {
        if !(readable || writable) || !finish_connect(conn)? {
            return Ok(());
        }
        conn.phase = Phase::Handshake;
        conn.session.start(&mut conn.out);
    }
    if readable {
        read_all(conn, scratch, incoming)?;
    }
    flush(conn)
}

/// Returns whether the connect finished; an error when it failed.
fn finish_connect(conn: &mut Conn) -> Result<bool, String> {
    match conn.stream.take_error() {
        Ok(None) => {}
        Ok(Some(e)) | Err(e) => return Err(format!("connect failed: {e}")),
    }
    match conn.stream.peer_addr() {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
        Err(e) => return Err(format!("connect failed: {e}")),
    }
    conn.stream
        .set_nodelay(true)
        .map_err(|e| format!("failed to set TCP_NODELAY: {e}"))?;
    Ok(true)
}

/// Reads until the socket has nothing more, parsing after every read so that the input buffer
/// holds at most one read beyond a partial message.
fn read_all(
    conn: &mut Conn,
    scratch: &mut [u8],
    incoming: &mut Vec<Incoming>,
) -> Result<(), String> {
    loop {
        match conn.stream.read(scratch) {
            Ok(0) => return Err("closed by the broker".into()),
            Ok(n) => {
                conn.input.extend_from_slice(&scratch[..n]);
                conn.session
                    .receive(&mut conn.input, &mut conn.out, incoming)
                    .map_err(|e| e.to_string())?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
    // An idle connection should hold no buffer; payloads handed out keep their own reference.
    if conn.input.is_empty() {
        conn.input = BytesMut::new();
    }
    Ok(())
}

/// Writes as much of the output buffer as the socket takes; the rest waits for writability.
fn flush(conn: &mut Conn) -> Result<(), String> {
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(0) => return Err("write returned 0 bytes".into()),
            Ok(n) => conn.out.advance(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    conn.out = BytesMut::new();
    Ok(())
}
