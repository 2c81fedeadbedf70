//! One client connection: its phase, read buffer, outbound queue and subscriptions.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rustc_hash::FxHashMap as HashMap;

use crate::auth::Session;
use crate::capped::CapState;
use crate::topics::TopicState;
use crate::transport::Transport;

/// Stage of a connection's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Waiting for the client's preamble.
    Preamble,
    /// Waiting for HELLO.
    Hello,
    /// Session open: any client frame is allowed.
    Ready,
    /// An ERROR that closes the connection is queued; nothing more is read.
    Closing,
}

/// Delivery mode of a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Shared live batches are queued as they are committed.
    Live,
    /// The subscriber is behind: it is fed from the log as it drains its queue, and live
    /// batches are skipped until it reaches the end of the log.
    CatchUp,
}

/// One subscription of one connection.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) topic: Arc<TopicState>,
    /// Offset of the next comment this subscriber must receive.
    pub(crate) next: u64,
    pub(crate) delivery: Delivery,
    /// Stream id that `next` belongs to; 0 until the topic has a stream.
    pub(crate) stream: u64,
    /// Rate cap set with CAP; `None` delivers every comment through the shared batches. Boxed,
    /// so that uncapped subscriptions stay small.
    pub(crate) cap: Option<Box<CapState>>,
}

/// A client connection owned by one worker.
#[derive(Debug)]
pub(crate) struct Conn {
    /// Process-wide connection number, for logs and to tell reused slab slots apart.
    pub(crate) id: u64,
    pub(crate) transport: Transport,
    pub(crate) peer: SocketAddr,
    /// Client name and version from HELLO, for the admin endpoint; empty before HELLO.
    pub(crate) client_name: String,
    pub(crate) phase: Phase,
    pub(crate) read_buf: BytesMut,
    pub(crate) out: OutQueue,
    /// Subscriptions by topic id.
    pub(crate) subs: HashMap<u64, Subscription>,
    pub(crate) opened: Instant,
    pub(crate) last_read: Instant,
    pub(crate) ping_sent: bool,
    /// Set once the peer has closed its side.
    pub(crate) read_closed: bool,
    /// Set while reading is paused because the outbound queue is full, so that a client that
    /// sends but does not read its acknowledgements is slowed by TCP instead of growing memory.
    pub(crate) read_paused: bool,
    /// Publishes read from this connection whose acknowledgement waits for a commit.
    pub(crate) pending_acks: usize,
    /// Set once a closing connection's sending side is shut; its input is then discarded.
    pub(crate) write_shut: bool,
    /// What the connection may do, set by its HELLO.
    pub(crate) session: Session,
    /// HELLO features granted in the WELCOME, bits of `chorus_protocol::frame::features`.
    pub(crate) features: u32,
    /// First worker tick that found a subscription catching up, since when every tick has.
    pub(crate) catch_up_since: Option<Instant>,
}

impl Conn {
    /// Returns whether the connection is a relay session: with authentication, its token has
    /// the `relay` role; without it, its HELLO carries a relay chain.
    pub(crate) fn is_relay_session(&self) -> bool {
        match &self.session {
            Session::Open => crate::relay::loops::parse_chain(&self.client_name).is_some(),
            Session::Anonymous => false,
            Session::Token(_) => self.session.role() == Some(crate::auth::TokenRole::Relay),
        }
    }

    pub(crate) fn new(id: u64, transport: Transport, peer: SocketAddr, now: Instant) -> Conn {
        Conn {
            id,
            transport,
            peer,
            phase: Phase::Preamble,
            read_buf: BytesMut::new(),
            out: OutQueue::default(),
            subs: HashMap::default(),
            opened: now,
            last_read: now,
            ping_sent: false,
            read_closed: false,
            read_paused: false,
            pending_acks: 0,
            write_shut: false,
            client_name: String::new(),
            session: Session::Open,
            features: 0,
            catch_up_since: None,
        }
    }

    /// Records whether any subscription is catching up at `now`, and returns since when the
    /// connection has had one without interruption, as sampled by the worker tick.
    pub(crate) fn catching_up_since(&mut self, now: Instant) -> Option<Instant> {
        if self.is_catching_up() {
            Some(*self.catch_up_since.get_or_insert(now))
        } else {
            self.catch_up_since = None;
            None
        }
    }

    /// Returns whether any subscription is catching up from the log.
    pub(crate) fn is_catching_up(&self) -> bool {
        self.subs.values().any(|s| s.delivery == Delivery::CatchUp)
    }
}

/// Frames waiting to be written to one connection, in order, with their total size.
#[derive(Debug, Default)]
pub(crate) struct OutQueue {
    frames: VecDeque<Bytes>,
    /// Bytes of the front frame already written.
    written: usize,
    bytes: usize,
}

/// Maximum number of buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;

impl OutQueue {
    pub(crate) fn push(&mut self, frame: Bytes) {
        self.bytes += frame.len();
        self.frames.push_back(frame);
    }

    /// Removes the front frame, or what is left of it after a partial write.
    pub(crate) fn pop_front(&mut self) -> Option<Bytes> {
        let mut frame = self.frames.pop_front()?;
        self.bytes -= frame.len();
        let rest = frame.split_off(self.written);
        self.written = 0;
        Some(rest)
    }

    /// Puts a frame back at the front, for a transport that could not take it yet.
    pub(crate) fn push_front(&mut self, frame: Bytes) {
        debug_assert_eq!(self.written, 0, "push_front after a partial write");
        self.bytes += frame.len();
        self.frames.push_front(frame);
    }

    /// Returns the bytes queued and not yet written.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes - self.written
    }

    /// Writes queued frames with vectored writes until the queue is empty or the socket would
    /// block. Returns whether the queue is now empty.
    pub(crate) fn write_to(&mut self, stream: &mut impl Write) -> io::Result<bool> {
        while !self.frames.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (i, frame) in self.frames.iter().take(MAX_IOVECS).enumerate() {
                let skip = if i == 0 { self.written } else { 0 };
                slices[i] = IoSlice::new(&frame[skip..]);
                count += 1;
            }
            let written = match stream.write_vectored(&slices[..count]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            self.advance(written);
        }
        Ok(true)
    }

    fn advance(&mut self, mut n: usize) {
        while n > 0 {
            let Some(front) = self.frames.front() else {
                return;
            };
            let left = front.len() - self.written;
            if n < left {
                self.written += n;
                return;
            }
            n -= left;
            self.bytes -= front.len();
            self.written = 0;
            self.frames.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that accepts at most `limit` bytes per call, then blocks after `budget`.
    struct Trickle {
        out: Vec<u8>,
        limit: usize,
        budget: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.write_vectored(&[IoSlice::new(buf)])
        }

        fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            if self.budget == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(self.limit - n).min(self.budget);
                self.out.extend_from_slice(&b[..take]);
                n += take;
                self.budget -= take;
                if n == self.limit || self.budget == 0 {
                    break;
                }
            }
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn partial_writes_keep_order() {
        let mut queue = OutQueue::default();
        for i in 0..100u8 {
            queue.push(Bytes::from(vec![i; 7]));
        }
        let mut sink = Trickle {
            out: Vec::new(),
            limit: 5,
            budget: 300,
        };
        assert!(!queue.write_to(&mut sink).unwrap());
        assert_eq!(queue.bytes(), 700 - 300);
        sink.budget = usize::MAX;
        assert!(queue.write_to(&mut sink).unwrap());
        let expected: Vec<u8> = (0..100u8).flat_map(|i| [i; 7]).collect();
        assert_eq!(sink.out, expected);
        assert_eq!(queue.bytes(), 0);
    }
}
