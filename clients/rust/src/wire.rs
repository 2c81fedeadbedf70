//! Frame I/O over a blocking TCP stream: a buffered reader that feeds the protocol decoder and a
//! buffered writer that encodes frames back to back.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use chorus_protocol::frame::kind;
use chorus_protocol::{decode_preamble, Decoder, Frame};

use crate::ClientError;

/// Free buffer space guaranteed before each read.
const READ_CHUNK: usize = 64 * 1024;

/// Most bytes requested from the socket by one read, which bounds the zeroing before it.
const MAX_READ: usize = 4 * READ_CHUNK;

/// Buffered bytes past which queued frames are written without waiting for a flush.
pub(crate) const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Reads frames from a stream, keeping a partly received frame across timeouts.
///
/// The stream is shared with the [`FrameWriter`] of the same connection rather than cloned, so a
/// connection uses one file descriptor.
#[derive(Debug)]
pub(crate) struct FrameReader {
    stream: Arc<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
}

impl FrameReader {
    pub(crate) fn new(stream: Arc<TcpStream>, max_frame: u32) -> FrameReader {
        FrameReader {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            decoder: Decoder::new(max_frame),
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Reads the peer's preamble, failing with [`ClientError::Timeout`] at `deadline`.
    pub(crate) fn read_preamble(&mut self, deadline: Instant) -> Result<u16, ClientError> {
        loop {
            if !self.buf.is_empty() {
                if let Some(version) = decode_preamble(&mut self.buf)? {
                    return Ok(version);
                }
            }
            self.fill_before(deadline)?;
        }
    }

    /// Reads one frame, failing with [`ClientError::Timeout`] at `deadline`.
    ///
    /// Changes the stream's read timeout, so callers restore their own afterwards.
    pub(crate) fn read_frame_before(&mut self, deadline: Instant) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                trace_frame("received", &frame);
                return Ok(frame);
            }
            self.fill_before(deadline)?;
        }
    }

    /// Reads one frame, waiting as long as the stream's read timeout allows.
    pub(crate) fn read_frame(&mut self) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                trace_frame("received", &frame);
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    fn fill_before(&mut self, deadline: Instant) -> Result<(), ClientError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout);
        }
        self.stream.set_read_timeout(Some(left))?;
        self.fill()
    }

    /// Appends what one read returns to the buffer.
    fn fill(&mut self) -> Result<(), ClientError> {
        // The decoder may have reserved room for a large frame whose header it has seen. Safe
        // code cannot read into spare capacity, so the part of it used by this read is zeroed.
        self.buf.reserve(READ_CHUNK);
        let start = self.buf.len();
        let end = self.buf.capacity().min(start + MAX_READ);
        self.buf.resize(end, 0);
        let read = loop {
            match (&*self.stream).read(&mut self.buf[start..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match read {
            Ok(0) => {
                self.buf.truncate(start);
                tracing::debug!(buffered = start, "connection closed by the server");
                Err(ClientError::Closed)
            }
            Ok(n) => {
                self.buf.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(map_read_error(e))
            }
        }
    }
}

/// Encodes frames into a buffer and writes it to the stream on flush.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    stream: Arc<TcpStream>,
    buf: BytesMut,
}

impl FrameWriter {
    pub(crate) fn new(stream: Arc<TcpStream>) -> FrameWriter {
        FrameWriter {
            stream,
            buf: BytesMut::with_capacity(FLUSH_THRESHOLD),
        }
    }

    pub(crate) fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Appends raw bytes, such as the preamble, to the buffer.
    pub(crate) fn queue_bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Encodes `frame` into the buffer without writing it.
    pub(crate) fn queue(&mut self, frame: &Frame) {
        trace_frame("queued", frame);
        frame.encode(&mut self.buf);
    }

    /// Writes the buffer if it has grown past [`FLUSH_THRESHOLD`].
    pub(crate) fn flush_if_full(&mut self) -> Result<(), ClientError> {
        if self.buf.len() >= FLUSH_THRESHOLD {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes everything buffered.
    pub(crate) fn flush(&mut self) -> Result<(), ClientError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let result = (&*self.stream).write_all(&self.buf);
        // After a failed write the stream may contain part of a frame, so the connection is
        // unusable. Clearing the buffer keeps it from growing while the caller notices.
        self.buf.clear();
        result.map_err(ClientError::from)
    }
}

/// Maps a failed read to the client's error, turning timeouts into [`ClientError::Timeout`].
fn map_read_error(e: io::Error) -> ClientError {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ClientError::Timeout,
        _ => ClientError::Io(e),
    }
}

fn trace_frame(action: &'static str, frame: &Frame) {
    tracing::trace!(kind = frame_name(frame), action, "frame");
}

/// Returns the specification's name of the frame's type, such as `PUBLISH_ACK`.
pub(crate) fn frame_name(frame: &Frame) -> &'static str {
    match frame.kind() {
        kind::HELLO => "HELLO",
        kind::WELCOME => "WELCOME",
        kind::SUBSCRIBE => "SUBSCRIBE",
        kind::SUBSCRIBED => "SUBSCRIBED",
        kind::UNSUBSCRIBE => "UNSUBSCRIBE",
        kind::PUBLISH => "PUBLISH",
        kind::PUBLISH_ACK => "PUBLISH_ACK",
        kind::EVENTS => "EVENTS",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::ERROR => "ERROR",
        _ => "unknown",
    }
}

/// Returns [`ClientError::Unexpected`] naming the frame's type.
pub(crate) fn unexpected(frame: &Frame) -> ClientError {
    ClientError::Unexpected(frame_name(frame).to_owned())
}
