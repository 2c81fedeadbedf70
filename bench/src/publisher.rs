//! Publisher connections: a writer thread that paces publishes and a reader thread that
//! collects their acknowledgements.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use chorus_client::{
    ClientError, Connection, ConnectionReader, ConnectionWriter, ErrorCode, Frame, Options,
};
use hdrhistogram::Histogram;

use crate::net::{is_timeout, READ_POLL};
use crate::pacing::{sleep_until, Speed};
use crate::report::{new_histogram, record_latency};
use crate::state::{ErrorLog, RunState};

/// Publishes written into the client's buffer before it is flushed to the socket.
const FLUSH_EVERY: u32 = 64;

/// How long the ack reader waits for the writer to report the sequence number of an ack that
/// arrived first.
const SEQ_WAIT: Duration = Duration::from_secs(1);

/// Settings that every publisher of a run shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishPlan {
    pub(crate) speed: Speed,
    /// Max publishes sent but not yet acknowledged, per publisher connection.
    pub(crate) max_in_flight: u64,
    /// Instant that comment times are measured from.
    pub(crate) start: Instant,
}

/// Result of one publisher connection: acks, rejections, ack latencies and errors.
#[derive(Debug)]
pub(crate) struct PublisherOutcome {
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) ack_latency: Histogram<u64>,
    /// Time of the last ack, in nanoseconds of the run clock.
    pub(crate) last_ack_nanos: Option<u64>,
    pub(crate) errors: ErrorLog,
}

/// A running publisher.
#[derive(Debug)]
pub(crate) struct Publisher {
    id: usize,
    writer: JoinHandle<WriterOutcome>,
    reader: JoinHandle<ReaderOutcome>,
}

#[derive(Debug, Default)]
struct WriterOutcome {
    sent: u64,
    /// Comments the client library rejected before sending because they exceed the broker's
    /// payload limit.
    too_large: u64,
    errors: ErrorLog,
}

#[derive(Debug)]
struct ReaderOutcome {
    acked: u64,
    rejected: u64,
    ack_latency: Histogram<u64>,
    last_ack_nanos: Option<u64>,
    errors: ErrorLog,
}

/// Connects a publisher and splits its connection into a writer and a reader half.
pub(crate) fn connect(
    addr: &str,
    options: &Options,
) -> anyhow::Result<(ConnectionWriter, ConnectionReader)> {
    let connection = Connection::connect(addr, options)
        .context("failed to connect; check that chorusd listens on --server")?;
    connection
        .split()
        .context("failed to split the publisher connection")
}

impl Publisher {
    /// Starts publishing the comments that the workload assigns to publisher `id`.
    pub(crate) fn spawn(
        id: usize,
        halves: (ConnectionWriter, ConnectionReader),
        state: Arc<RunState>,
        plan: PublishPlan,
    ) -> Publisher {
        let (writer, reader) = halves;
        let indices = state.workload.indices_of(id);
        let assigned = indices.len() as u64;
        let window = Arc::new(Window::new(plan.max_in_flight));
        let (seq_tx, seq_rx) = mpsc::channel();
        let sends = Arc::new(SendCount::new(assigned));

        let writer = {
            let state = Arc::clone(&state);
            let window = Arc::clone(&window);
            let task = WriteTask {
                writer,
                state,
                window,
                seqs: seq_tx,
                sends: Arc::clone(&sends),
                plan,
            };
            thread::spawn(move || task.run(&indices))
        };
        let reader = thread::spawn(move || {
            let task = ReadTask {
                reader,
                state,
                window,
                seqs: seq_rx,
                pending: HashMap::new(),
                sends,
            };
            task.run()
        });
        Publisher { id, writer, reader }
    }

    pub(crate) fn writer_finished(&self) -> bool {
        self.writer.is_finished()
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.writer.is_finished() && self.reader.is_finished()
    }

    /// Waits for both threads and returns what they did.
    pub(crate) fn join(self) -> PublisherOutcome {
        let id = self.id;
        let write = self.writer.join().unwrap_or_else(|_| WriterOutcome {
            errors: panicked(id, "writer"),
            ..WriterOutcome::default()
        });
        let read = self.reader.join().unwrap_or_else(|_| ReaderOutcome {
            acked: 0,
            rejected: 0,
            ack_latency: new_histogram(),
            last_ack_nanos: None,
            errors: panicked(id, "ack reader"),
        });
        let mut errors = write.errors;
        for message in read.errors.messages {
            errors.push(message);
        }
        errors.dropped += read.errors.dropped;
        PublisherOutcome {
            acked: read.acked,
            rejected: read.rejected + write.too_large,
            ack_latency: read.ack_latency,
            last_ack_nanos: read.last_ack_nanos,
            errors,
        }
    }
}

fn panicked(id: usize, thread: &str) -> ErrorLog {
    let mut errors = ErrorLog::default();
    errors.push(format!("publisher {id}: {thread} thread panicked"));
    errors
}

struct WriteTask {
    writer: ConnectionWriter,
    state: Arc<RunState>,
    window: Arc<Window>,
    seqs: Sender<(u64, usize)>,
    sends: Arc<SendCount>,
    plan: PublishPlan,
}

impl WriteTask {
    fn run(mut self, indices: &[usize]) -> WriterOutcome {
        let mut outcome = WriterOutcome::default();
        if let Err(e) = self.publish_all(indices, &mut outcome) {
            outcome.errors.push(format!("publish failed: {e}"));
        }
        if let Err(e) = self.writer.flush() {
            outcome.errors.push(format!("flush failed: {e}"));
        }
        self.sends.finish(outcome.sent);
        outcome
    }

    fn publish_all(
        &mut self,
        indices: &[usize],
        outcome: &mut WriterOutcome,
    ) -> Result<(), ClientError> {
        let state = Arc::clone(&self.state);
        let mut unflushed = 0u32;
        for &index in indices {
            let due = self.plan.start + self.plan.speed.due(state.workload.comment(index).at);
            if Instant::now() < due {
                self.writer.flush()?;
                unflushed = 0;
                if !sleep_until(due, || state.should_stop()) {
                    return Ok(());
                }
            }
            if !self.window.try_acquire() {
                self.writer.flush()?;
                unflushed = 0;
                if !self.window.acquire(|| state.should_stop()) {
                    return Ok(());
                }
            }

            state.record_send(index);
            let payload = state.workload.payload(index);
            let seq = match self.writer.send_publish(&state.topic, payload) {
                Ok(seq) => seq,
                Err(e @ ClientError::PayloadTooLarge { .. }) => {
                    self.window.release();
                    outcome.too_large += 1;
                    outcome
                        .errors
                        .push(format!("comment {index} not sent: {e}"));
                    continue;
                }
                Err(e) => return Err(e),
            };
            // A send error only means the reader has stopped, and then no thread needs the mapping.
            let _ = self.seqs.send((seq, index));
            outcome.sent += 1;
            RunState::bump(&state.published);

            unflushed += 1;
            if unflushed >= FLUSH_EVERY {
                self.writer.flush()?;
                unflushed = 0;
            }
        }
        Ok(())
    }
}

struct ReadTask {
    reader: ConnectionReader,
    state: Arc<RunState>,
    window: Arc<Window>,
    seqs: Receiver<(u64, usize)>,
    pending: HashMap<u64, usize>,
    sends: Arc<SendCount>,
}

impl ReadTask {
    fn run(mut self) -> ReaderOutcome {
        let mut outcome = ReaderOutcome {
            acked: 0,
            rejected: 0,
            ack_latency: new_histogram(),
            last_ack_nanos: None,
            errors: ErrorLog::default(),
        };
        while !self.sends.all_acked(outcome.acked) && !self.state.should_stop() {
            match self.reader.recv() {
                Ok(Frame::PublishAck(ack)) => {
                    let received = self.state.now_nanos();
                    self.window.release();
                    outcome.acked += 1;
                    outcome.last_ack_nanos = Some(received);
                    RunState::bump(&self.state.acked);
                    if ack.code != ErrorCode::Ok {
                        outcome.rejected += 1;
                        let message = format!("publish {} rejected: {}", ack.seq, ack.code);
                        outcome.errors.push(message);
                        continue;
                    }
                    let sent = self
                        .index_of(ack.seq)
                        .and_then(|i| self.state.send_nanos(i));
                    if let Some(sent) = sent {
                        record_latency(&mut outcome.ack_latency, received.saturating_sub(sent));
                    }
                }
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(e @ ClientError::Server { close: false, .. }) => {
                    outcome.errors.push(e.to_string());
                }
                Err(e) => {
                    outcome.errors.push(format!("reading acks failed: {e}"));
                    break;
                }
            }
        }
        self.window.close();
        outcome
    }

    /// Returns the comment index published under `seq`, waiting briefly when the ack overtook
    /// the writer's report of the sequence number.
    fn index_of(&mut self, seq: u64) -> Option<usize> {
        while let Ok((s, index)) = self.seqs.try_recv() {
            self.pending.insert(s, index);
        }
        if let Some(index) = self.pending.remove(&seq) {
            return Some(index);
        }
        let deadline = Instant::now() + SEQ_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.seqs.recv_timeout(left.min(READ_POLL)) {
                Ok((s, index)) if s == seq => return Some(index),
                Ok((s, index)) => {
                    self.pending.insert(s, index);
                }
                Err(RecvTimeoutError::Timeout) if !left.is_zero() => {}
                Err(_) => return None,
            }
        }
    }
}

/// Number of acks the reader waits for: the comments assigned to the publisher until the writer
/// finishes, then the publishes it actually sent.
#[derive(Debug)]
struct SendCount {
    expected: AtomicU64,
}

impl SendCount {
    fn new(assigned: u64) -> SendCount {
        SendCount {
            expected: AtomicU64::new(assigned),
        }
    }

    fn finish(&self, sent: u64) {
        self.expected.store(sent, Ordering::Release);
    }

    fn all_acked(&self, acked: u64) -> bool {
        acked >= self.expected.load(Ordering::Acquire)
    }
}

/// Limit on unacknowledged publishes of one connection.
#[derive(Debug)]
struct Window {
    cap: u64,
    slots: Mutex<WindowSlots>,
    freed: Condvar,
}

#[derive(Debug)]
struct WindowSlots {
    in_flight: u64,
    closed: bool,
}

impl Window {
    fn new(cap: u64) -> Window {
        Window {
            cap: cap.max(1),
            slots: Mutex::new(WindowSlots {
                in_flight: 0,
                closed: false,
            }),
            freed: Condvar::new(),
        }
    }

    /// Takes a slot if one is free, without waiting.
    fn try_acquire(&self) -> bool {
        let mut slots = lock(&self.slots);
        if slots.in_flight < self.cap && !slots.closed {
            slots.in_flight += 1;
            return true;
        }
        false
    }

    /// Waits for a free slot; returns `false` when the window closed or `stop` became true.
    fn acquire(&self, stop: impl Fn() -> bool) -> bool {
        let mut slots = lock(&self.slots);
        loop {
            if slots.closed || stop() {
                return false;
            }
            if slots.in_flight < self.cap {
                slots.in_flight += 1;
                return true;
            }
            slots = match self.freed.wait_timeout(slots, READ_POLL) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    fn release(&self) {
        let mut slots = lock(&self.slots);
        slots.in_flight = slots.in_flight.saturating_sub(1);
        self.freed.notify_one();
    }

    /// Wakes the writer for good: no more acks will free slots.
    fn close(&self) {
        lock(&self.slots).closed = true;
        self.freed.notify_all();
    }
}

/// Locks `mutex`, recovering from poisoning because the slot counts stay valid after a panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_caps_in_flight() {
        let window = Window::new(2);
        assert!(window.try_acquire());
        assert!(window.try_acquire());
        assert!(!window.try_acquire());
        window.release();
        assert!(window.try_acquire());
    }

    #[test]
    fn closed_window_stops_waiting() {
        let window = Window::new(1);
        assert!(window.try_acquire());
        window.close();
        assert!(!window.acquire(|| false));
    }

    #[test]
    fn stop_ends_wait_for_slot() {
        let window = Window::new(1);
        assert!(window.try_acquire());
        assert!(!window.acquire(|| true));
    }
}
