//! The two halves of a split [`crate::Connection`].

use std::collections::VecDeque;
use std::net::Shutdown;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use chorus_protocol::{Frame, Topic, Welcome};

use crate::connection::{check_payload, frame_result, publish_frame};
use crate::wire::{FrameReader, FrameWriter};
use crate::ClientError;

/// The sending half of a connection.
#[derive(Debug)]
pub struct ConnectionWriter {
    shared: Arc<SharedWriter>,
    welcome: Welcome,
    next_seq: u64,
}

/// The receiving half of a connection.
///
/// It replies to PING like [`crate::Connection::recv`] does, through the writer that both
/// halves share. When the writer half is busy writing at that moment, the PONG is queued and
/// written by the writer half as soon as its current call ends. So every PING gets its PONG,
/// and the reader never waits for the writer.
#[derive(Debug)]
pub struct ConnectionReader {
    reader: FrameReader,
    read_timeout: Option<Duration>,
    pending: VecDeque<Frame>,
    shared: Arc<SharedWriter>,
}

/// The frame writer both halves use, and the PONG nonces waiting for it.
#[derive(Debug)]
struct SharedWriter {
    writer: Mutex<FrameWriter>,
    pongs: Mutex<Vec<u64>>,
}

pub(crate) fn split(
    reader: FrameReader,
    writer: FrameWriter,
    welcome: Welcome,
    read_timeout: Option<Duration>,
    next_seq: u64,
    pending: VecDeque<Frame>,
) -> (ConnectionWriter, ConnectionReader) {
    let shared = Arc::new(SharedWriter {
        writer: Mutex::new(writer),
        pongs: Mutex::new(Vec::new()),
    });
    let writer_half = ConnectionWriter {
        shared: Arc::clone(&shared),
        welcome,
        next_seq,
    };
    let reader_half = ConnectionReader {
        reader,
        read_timeout,
        pending,
        shared,
    };
    (writer_half, reader_half)
}

impl ConnectionWriter {
    /// Queues one publish and returns its sequence number, as
    /// [`crate::Connection::send_publish`] does.
    pub fn send_publish(&mut self, topic: &Topic, payload: &[u8]) -> Result<u64, ClientError> {
        check_payload(&self.welcome, topic, payload)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = publish_frame(seq, topic, payload);
        self.shared.with_writer(|writer| {
            writer.queue(&frame);
            writer.flush_if_full()
        })?;
        Ok(seq)
    }

    /// Writes every buffered frame.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.shared.with_writer(FrameWriter::flush)
    }

    /// Buffers `frame` without waiting for a reply. It is written by
    /// [`ConnectionWriter::flush`], by [`ConnectionWriter::send`], or once 64 KiB are buffered.
    /// Frames that carry a sequence number keep the one the caller gave them.
    pub fn queue(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.shared.with_writer(|writer| {
            writer.queue(frame);
            writer.flush_if_full()
        })
    }

    /// Writes `frame` together with everything buffered before it.
    pub fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.shared.with_writer(|writer| {
            writer.queue(frame);
            writer.flush()
        })
    }

    /// Returns the server's WELCOME.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Shuts the socket down in both directions, which wakes a reader blocked in
    /// [`ConnectionReader::recv`] with [`ClientError::Closed`]. Buffered frames are dropped.
    pub fn shutdown(&self) -> Result<(), ClientError> {
        let writer = lock(&self.shared.writer);
        writer.transport().socket().shutdown(Shutdown::Both)?;
        Ok(())
    }
}

impl ConnectionReader {
    /// Returns the next frame from the server other than PING, as
    /// [`crate::Connection::recv`] does.
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        if let Some(frame) = self.pending.pop_front() {
            return frame_result(frame);
        }
        let deadline = self.read_timeout.map(|timeout| Instant::now() + timeout);
        loop {
            match self.reader.read_frame(deadline)? {
                // A PONG that cannot be written means the server closed the connection, and
                // reading on returns the ERROR that explains why, or the end of the stream.
                Frame::Ping(nonce) => {
                    if let Err(e) = self.shared.answer_ping(nonce) {
                        tracing::debug!(error = %e, "PONG not written");
                    }
                }
                frame => return frame_result(frame),
            }
        }
    }
}

impl SharedWriter {
    /// Runs `f` on the writer, then writes the PONGs the reader queued while `f` held it.
    fn with_writer<R>(
        &self,
        f: impl FnOnce(&mut FrameWriter) -> Result<R, ClientError>,
    ) -> Result<R, ClientError> {
        let result = f(&mut lock(&self.writer));
        // The reader queues a nonce before it tries the lock, so a nonce it could not write
        // because `f` held the lock is visible here, after the lock was released.
        if !lock(&self.pongs).is_empty() {
            self.write_pongs(lock(&self.writer))?;
        }
        result
    }

    /// Queues a PONG and writes it, unless the writer half has the writer locked.
    fn answer_ping(&self, nonce: u64) -> Result<(), ClientError> {
        lock(&self.pongs).push(nonce);
        match self.writer.try_lock() {
            Ok(writer) => self.write_pongs(writer),
            Err(TryLockError::Poisoned(poisoned)) => self.write_pongs(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => Ok(()),
        }
    }

    fn write_pongs(&self, mut writer: MutexGuard<'_, FrameWriter>) -> Result<(), ClientError> {
        let nonces = std::mem::take(&mut *lock(&self.pongs));
        if nonces.is_empty() {
            return Ok(());
        }
        for nonce in nonces {
            writer.queue(&Frame::Pong(nonce));
        }
        writer.flush()
    }
}

/// Locks `mutex`, ignoring poisoning: code run under these locks only encodes frames, writes to
/// the socket and moves nonces, none of which panics on a valid frame.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
