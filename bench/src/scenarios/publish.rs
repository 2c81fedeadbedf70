//! Publisher connections: a writer thread that paces stamped publishes and a reader thread that
//! collects the broker's replies, with a window of unconfirmed publishes between them.
//!
//! A publish is confirmed by its own reply where the protocol has one (chorus PUBLISH_ACK,
//! Redis's integer reply to PUBLISH, MQTT PUBACK at QoS 1). NATS and MQTT at QoS 0 reply to no
//! publish, so the writer sends a barrier (NATS PING, MQTT PINGREQ) after every quarter window,
//! and its reply confirms everything sent before it: the broker has read those publishes.

use std::collections::{HashMap, VecDeque};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;
use hdrhistogram::Histogram;

use super::blocking;
use super::proto::{new_session, Incoming, Role, Session, SessionConfig};
use super::rate::RateSchedule;
use super::shared::LoadShared;
use super::sockets;
use super::stamp::Stamp;
use crate::report::{new_histogram, record_latency};
use crate::state::ErrorLog;

/// Publishes encoded before the buffer is written, when sending as fast as possible.
const BATCH: usize = 64;

/// Read timeout of the reader thread, so that it checks for the end of the run that often.
const READ_POLL: Duration = Duration::from_millis(100);

/// Interval at which a writer held back by the delivery lag limit checks it again.
const LAG_POLL: Duration = Duration::from_micros(200);

/// Connection number of publisher 0, far above any subscriber's, so that MQTT client ids stay
/// unique.
const PUBLISHER_IDS: usize = 1 << 30;

/// One publisher's settings.
#[derive(Debug, Clone)]
pub(crate) struct PublisherSpec {
    pub(crate) id: usize,
    pub(crate) server: SocketAddr,
    pub(crate) session: SessionConfig,
    /// Topics the publisher cycles through, one message each in turn.
    pub(crate) topics: Vec<usize>,
    pub(crate) schedule: RateSchedule,
    pub(crate) payload_size: usize,
    /// Max unconfirmed publishes; 0 sets no limit.
    pub(crate) max_in_flight: u64,
    pub(crate) connect_timeout: Duration,
}

/// Counts and latencies of one publisher.
#[derive(Debug)]
pub(crate) struct PublisherOutcome {
    pub(crate) sent: u64,
    /// Send time of the last publish, in nanoseconds of the run clock.
    pub(crate) last_send_nanos: Option<u64>,
    /// Messages sent to each topic, indexed by topic.
    pub(crate) sent_per_topic: Vec<u64>,
    /// Publishes the broker rejected, per topic.
    pub(crate) rejected_per_topic: Vec<u64>,
    /// Publishes confirmed by a reply or a barrier.
    pub(crate) confirmed: u64,
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) ack_latency: Histogram<u64>,
    pub(crate) errors: ErrorLog,
}

/// A connected publisher, ready to start.
pub(crate) struct Publisher {
    spec: PublisherSpec,
    stream: TcpStream,
    session: Box<dyn Session>,
    /// Bytes read past the handshake.
    leftover: BytesMut,
}

/// A publisher whose threads are running.
pub(crate) struct RunningPublisher {
    writer: JoinHandle<WriterOutcome>,
    reader: JoinHandle<ReaderOutcome>,
    topics: usize,
}

/// Connects and completes the handshake.
pub(crate) fn connect(spec: PublisherSpec) -> anyhow::Result<Publisher> {
    let mut stream = sockets::connect_blocking(spec.server, None, spec.connect_timeout)
        .with_context(|| {
            format!(
                "publisher {}: failed to connect to {}",
                spec.id, spec.server
            )
        })?;
    let mut session = new_session(&spec.session, Role::Publisher, PUBLISHER_IDS + spec.id);
    let (leftover, _) = blocking::handshake(&mut stream, session.as_mut(), spec.connect_timeout)
        .with_context(|| format!("publisher {}", spec.id))?;
    stream.set_read_timeout(Some(READ_POLL))?;
    Ok(Publisher {
        spec,
        stream,
        session,
        leftover,
    })
}

impl Publisher {
    /// Starts the writer and reader threads; the writer waits for the run's start time.
    pub(crate) fn start(self, shared: Arc<LoadShared>) -> anyhow::Result<RunningPublisher> {
        let topics = self.spec.session.topic_count();
        let read_stream = self
            .stream
            .try_clone()
            .context("failed to clone the socket")?;
        let write_stream = Arc::new(Mutex::new(self.stream));
        let acks_each = self
            .spec
            .session
            .kind
            .acks_each_publish(self.spec.session.mqtt_qos);
        let window = Arc::new(Window::new(self.spec.max_in_flight));

        let reader = ReadTask {
            stream: read_stream,
            replies: Arc::clone(&write_stream),
            session: self.session.clone_box(),
            input: self.leftover,
            window: Arc::clone(&window),
            shared: Arc::clone(&shared),
            topics,
        };
        let writer = WriteTask {
            spec: self.spec,
            stream: write_stream,
            session: self.session,
            window,
            shared,
            acks_each,
        };
        let writer = thread::Builder::new()
            .name("pub-writer".into())
            .spawn(move || writer.run())?;
        let reader = thread::Builder::new()
            .name("pub-reader".into())
            .spawn(move || reader.run())?;
        Ok(RunningPublisher {
            writer,
            reader,
            topics,
        })
    }
}

impl RunningPublisher {
    pub(crate) fn is_finished(&self) -> bool {
        self.writer.is_finished() && self.reader.is_finished()
    }

    /// Waits for both threads; call after the run's stop flag is set.
    pub(crate) fn join(self) -> PublisherOutcome {
        let mut errors = ErrorLog::default();
        let write = self.writer.join().unwrap_or_else(|_| {
            errors.push("writer thread panicked".into());
            WriterOutcome::empty(self.topics)
        });
        let read = self.reader.join().unwrap_or_else(|_| {
            errors.push("reader thread panicked".into());
            ReaderOutcome::empty(self.topics)
        });
        for message in write
            .errors
            .messages
            .into_iter()
            .chain(read.errors.messages)
        {
            errors.push(message);
        }
        errors.dropped += write.errors.dropped + read.errors.dropped;
        PublisherOutcome {
            sent: write.sent,
            last_send_nanos: write.last_send_nanos,
            sent_per_topic: write.sent_per_topic,
            rejected_per_topic: read.rejected_per_topic,
            confirmed: read.confirmed,
            acked: read.acked,
            rejected: read.rejected,
            ack_latency: read.ack_latency,
            errors,
        }
    }
}

struct WriterOutcome {
    sent: u64,
    last_send_nanos: Option<u64>,
    sent_per_topic: Vec<u64>,
    errors: ErrorLog,
}

impl WriterOutcome {
    fn empty(topics: usize) -> WriterOutcome {
        WriterOutcome {
            sent: 0,
            last_send_nanos: None,
            sent_per_topic: vec![0; topics],
            errors: ErrorLog::default(),
        }
    }
}

struct WriteTask {
    spec: PublisherSpec,
    stream: Arc<Mutex<TcpStream>>,
    session: Box<dyn Session>,
    window: Arc<Window>,
    shared: Arc<LoadShared>,
    acks_each: bool,
}

/// Send state of the writer.
struct Sending {
    out: BytesMut,
    payload: Vec<u8>,
    sent_per_topic: Vec<u64>,
    sent: u64,
    last_send_nanos: Option<u64>,
    /// Publishes since the last barrier.
    since_barrier: u64,
}

impl WriteTask {
    fn run(mut self) -> WriterOutcome {
        let mut outcome = WriterOutcome::empty(self.session_topics());
        let mut sending = Sending {
            out: BytesMut::with_capacity(64 * 1024),
            payload: Vec::with_capacity(self.spec.payload_size),
            sent_per_topic: vec![0; self.session_topics()],
            sent: 0,
            last_send_nanos: None,
            since_barrier: 0,
        };
        if let Err(e) = self.publish_all(&mut sending) {
            outcome.errors.push(format!("publishing failed: {e:#}"));
        }
        if let Err(e) = self.finish(&mut sending) {
            outcome.errors.push(format!("final flush failed: {e:#}"));
        }
        outcome.sent = sending.sent;
        outcome.last_send_nanos = sending.last_send_nanos;
        outcome.sent_per_topic = sending.sent_per_topic;
        outcome
    }

    fn session_topics(&self) -> usize {
        self.spec.session.topic_count()
    }

    fn publish_all(&mut self, sending: &mut Sending) -> anyhow::Result<()> {
        let start = self.shared.start();
        if !self.shared.sleep_until(start) {
            return Ok(());
        }
        loop {
            let elapsed = Instant::now().saturating_duration_since(start);
            if elapsed >= self.spec.schedule.duration() || self.shared.should_stop() {
                return Ok(());
            }
            let due = self.spec.schedule.due_count(elapsed);
            if sending.sent >= due {
                self.write(sending)?;
                let next = start + self.spec.schedule.time_of(sending.sent);
                let end = start + self.spec.schedule.duration();
                if !self.shared.sleep_until(next.min(end)) {
                    return Ok(());
                }
                continue;
            }
            let batch = (due - sending.sent).min(BATCH as u64);
            for _ in 0..batch {
                if !self.acquire_slot(sending)? {
                    return Ok(());
                }
                self.publish_one(sending);
            }
            self.write(sending)?;
        }
    }

    /// Waits for room in the window, writing what is buffered first; returns `false` when the
    /// run stops or the reader has finished.
    fn acquire_slot(&mut self, sending: &mut Sending) -> anyhow::Result<bool> {
        if !self.shared.lag_allows() {
            self.write(sending)?;
            while !self.shared.lag_allows() {
                if self.shared.should_stop() {
                    return Ok(false);
                }
                thread::sleep(LAG_POLL);
            }
        }
        if self.window.has_room(sending.sent) {
            return Ok(true);
        }
        self.write(sending)?;
        Ok(self
            .window
            .wait_for_room(sending.sent, || self.shared.should_stop()))
    }

    fn publish_one(&mut self, sending: &mut Sending) {
        let topics = &self.spec.topics;
        let topic = topics[(sending.sent as usize + self.spec.id) % topics.len()];
        let stamp = Stamp {
            publisher: self.spec.id as u16,
            topic: topic as u32,
            seq: sending.sent_per_topic[topic],
            sent_nanos: self.shared.now_nanos(),
        };
        stamp.write(self.spec.payload_size, &mut sending.payload);
        let key = self
            .session
            .publish(topic, &sending.payload, &mut sending.out);
        if let Some(key) = key {
            self.window.track(key, stamp.sent_nanos, topic);
        }
        sending.sent_per_topic[topic] += 1;
        sending.sent += 1;
        sending.last_send_nanos = Some(stamp.sent_nanos);
        self.shared.record_send(self.spec.id, topic);

        sending.since_barrier += 1;
        let every = (self.spec.max_in_flight / 4).max(1);
        if !self.acks_each && self.spec.max_in_flight > 0 && sending.since_barrier >= every {
            self.barrier(sending);
        }
    }

    fn barrier(&mut self, sending: &mut Sending) {
        if self.session.barrier(&mut sending.out) {
            self.window.push_barrier(sending.sent);
            sending.since_barrier = 0;
        }
    }

    fn write(&self, sending: &mut Sending) -> anyhow::Result<()> {
        if sending.out.is_empty() {
            return Ok(());
        }
        let result = lock(&self.stream).write_all(&sending.out);
        sending.out.clear();
        result.context("write to the broker failed")
    }

    /// Sends the closing barrier, writes everything and records for the reader how many
    /// publishes to wait for.
    fn finish(&mut self, sending: &mut Sending) -> anyhow::Result<()> {
        if !self.acks_each {
            self.barrier(sending);
        }
        let result = self.write(sending);
        self.window.finish_sending(sending.sent);
        self.shared.writer_done(&sending.sent_per_topic);
        result
    }
}

struct ReaderOutcome {
    confirmed: u64,
    acked: u64,
    rejected: u64,
    rejected_per_topic: Vec<u64>,
    ack_latency: Histogram<u64>,
    errors: ErrorLog,
}

impl ReaderOutcome {
    fn empty(topics: usize) -> ReaderOutcome {
        ReaderOutcome {
            confirmed: 0,
            acked: 0,
            rejected: 0,
            rejected_per_topic: vec![0; topics],
            ack_latency: new_histogram(),
            errors: ErrorLog::default(),
        }
    }
}

struct ReadTask {
    stream: TcpStream,
    /// The write side, for replies such as PONG.
    replies: Arc<Mutex<TcpStream>>,
    session: Box<dyn Session>,
    input: BytesMut,
    window: Arc<Window>,
    shared: Arc<LoadShared>,
    topics: usize,
}

impl ReadTask {
    fn run(mut self) -> ReaderOutcome {
        let mut outcome = ReaderOutcome::empty(self.topics);
        let mut buf = vec![0u8; 64 * 1024];
        let mut out = BytesMut::new();
        let mut events = Vec::new();
        loop {
            if self.window.all_confirmed() || self.shared.should_stop() {
                break;
            }
            if !self.input.is_empty() {
                if let Err(e) = self.session.receive(&mut self.input, &mut out, &mut events) {
                    outcome.errors.push(format!("reading replies failed: {e}"));
                    break;
                }
                self.handle(&mut events, &mut outcome);
                if !out.is_empty() {
                    let _ = lock(&self.replies).write_all(&out);
                    out.clear();
                }
            }
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    outcome
                        .errors
                        .push("the broker closed the connection".into());
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    outcome.errors.push(format!("read failed: {e}"));
                    break;
                }
            }
        }
        self.window.close();
        outcome.confirmed = self.window.confirmed();
        outcome
    }

    fn handle(&mut self, events: &mut Vec<Incoming>, outcome: &mut ReaderOutcome) {
        for event in events.drain(..) {
            match event {
                Incoming::Ack { key, accepted } => {
                    let now = self.shared.now_nanos();
                    outcome.acked += 1;
                    let Some((sent, topic)) = self.window.ack(key) else {
                        continue;
                    };
                    if accepted {
                        record_latency(&mut outcome.ack_latency, now.saturating_sub(sent));
                    } else {
                        outcome.rejected += 1;
                        outcome.rejected_per_topic[topic] += 1;
                    }
                }
                Incoming::BarrierReply => self.window.barrier_reply(),
                Incoming::Notice(message) => outcome.errors.push(message),
                Incoming::Ready { .. } | Incoming::Message { .. } | Incoming::Ping => {}
            }
        }
    }
}

/// Publishes sent but not yet confirmed, shared by a publisher's writer and reader.
struct Window {
    limit: u64,
    state: Mutex<WindowState>,
    changed: Condvar,
}

struct WindowState {
    confirmed: u64,
    /// Send time and topic of each publish awaiting its reply, by reply key.
    in_flight: HashMap<u64, (u64, usize)>,
    /// Publishes sent before each barrier whose reply has not arrived, oldest first.
    barriers: VecDeque<u64>,
    /// Publishes sent in all, once the writer has finished.
    total: Option<u64>,
    closed: bool,
}

impl Window {
    fn new(limit: u64) -> Window {
        Window {
            limit,
            state: Mutex::new(WindowState {
                confirmed: 0,
                in_flight: HashMap::new(),
                barriers: VecDeque::new(),
                total: None,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn has_room(&self, sent: u64) -> bool {
        self.limit == 0 || sent - lock(&self.state).confirmed < self.limit
    }

    /// Waits until fewer than the limit are unconfirmed; `false` when the reader has finished
    /// or `stop` returns true.
    fn wait_for_room(&self, sent: u64, stop: impl Fn() -> bool) -> bool {
        let mut state = lock(&self.state);
        loop {
            if state.closed || stop() {
                return false;
            }
            if sent - state.confirmed < self.limit {
                return true;
            }
            state = match self.changed.wait_timeout(state, READ_POLL) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn track(&self, key: u64, sent_nanos: u64, topic: usize) {
        lock(&self.state).in_flight.insert(key, (sent_nanos, topic));
    }

    fn ack(&self, key: u64) -> Option<(u64, usize)> {
        let mut state = lock(&self.state);
        let entry = state.in_flight.remove(&key);
        state.confirmed += 1;
        self.changed.notify_all();
        entry
    }

    fn push_barrier(&self, sent: u64) {
        lock(&self.state).barriers.push_back(sent);
    }

    fn barrier_reply(&self) {
        let mut state = lock(&self.state);
        if let Some(sent) = state.barriers.pop_front() {
            state.confirmed = state.confirmed.max(sent);
        }
        self.changed.notify_all();
    }

    fn finish_sending(&self, total: u64) {
        lock(&self.state).total = Some(total);
    }

    fn all_confirmed(&self) -> bool {
        let state = lock(&self.state);
        state.total.is_some_and(|total| state.confirmed >= total)
    }

    fn confirmed(&self) -> u64 {
        lock(&self.state).confirmed
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.changed.notify_all();
    }
}

/// Locks `mutex`, recovering from poisoning: the guarded counters and socket stay usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_acks() {
        let window = Window::new(2);
        window.track(1, 10, 0);
        window.track(2, 20, 0);
        assert!(!window.has_room(2));
        assert_eq!(window.ack(1), Some((10, 0)));
        assert!(window.has_room(2));
    }

    #[test]
    fn barrier_reply_confirms_everything_before_it() {
        let window = Window::new(8);
        window.push_barrier(4);
        window.push_barrier(8);
        window.barrier_reply();
        assert_eq!(window.confirmed(), 4);
        window.finish_sending(8);
        assert!(!window.all_confirmed());
        window.barrier_reply();
        assert!(window.all_confirmed());
    }

    #[test]
    fn unlimited_window_always_has_room() {
        let window = Window::new(0);
        assert!(window.has_room(1_000_000));
    }

    #[test]
    fn closed_window_stops_waiting() {
        let window = Window::new(1);
        window.close();
        assert!(!window.wait_for_room(1, || false));
    }
}
