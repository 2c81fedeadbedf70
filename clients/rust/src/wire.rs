//! Frame I/O over a blocking byte stream: a buffered reader that feeds the protocol decoder and a
//! buffered writer that encodes frames back to back.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_protocol::frame::kind;
use chorus_protocol::{decode_preamble, Decoder, Frame};

use crate::transport::Transport;
use crate::ClientError;

/// Size of the reader's scratch buffer, and so the most bytes one read takes from the socket.
const READ_CHUNK: usize = 64 * 1024;

/// How much later than its deadline a read may end; see [`needs_update`].
const TIMEOUT_SLACK: Duration = Duration::from_millis(1);

/// Buffered bytes past which queued frames are written without waiting for a flush.
pub(crate) const FLUSH_THRESHOLD: usize = 64 * 1024;

/// Reads frames from a stream, keeping a partly received frame across timeouts.
///
/// The stream is shared with the [`FrameWriter`] of the same connection.
#[derive(Debug)]
pub(crate) struct FrameReader {
    transport: Transport,
    buf: BytesMut,
    /// Bytes of one read before they are appended to `buf` (plaintext) or decrypted (TLS).
    /// Safe code cannot read into the spare capacity of `buf`, and zeroing that capacity before
    /// every read cost more than copying what arrived.
    scratch: Box<[u8]>,
    decoder: Decoder,
    /// Read timeout last set on the socket, so that waiting forever costs no system call.
    socket_timeout: Option<Duration>,
}

impl FrameReader {
    /// Creates a reader whose buffer starts with `received`, bytes that arrived before the
    /// reader existed.
    pub(crate) fn new(transport: Transport, max_frame: u32, received: BytesMut) -> FrameReader {
        let mut buf = received;
        buf.reserve(READ_CHUNK);
        FrameReader {
            transport,
            buf,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            decoder: Decoder::new(max_frame),
            socket_timeout: None,
        }
    }

    /// Reads the peer's preamble, failing with [`ClientError::Timeout`] at `deadline`.
    ///
    /// A TLS record in place of the preamble on a plaintext connection is
    /// [`ClientError::TlsRequired`].
    pub(crate) fn read_preamble(&mut self, deadline: Instant) -> Result<u16, ClientError> {
        loop {
            if !self.buf.is_empty() {
                // A TLS server replies to a plaintext client with an alert record (0x15). A
                // handshake record (0x16) would mean that it expects one from the client.
                if !self.transport.is_tls() && matches!(self.buf[0], 0x15 | 0x16) {
                    return Err(ClientError::TlsRequired);
                }
                if let Some(version) = decode_preamble(&mut self.buf)? {
                    return Ok(version);
                }
            }
            self.fill_until(Some(deadline))?;
        }
    }

    /// Reads one frame, failing with [`ClientError::Timeout`] at `deadline`; `None` waits
    /// forever. A frame partly received at the deadline stays buffered for the next call.
    pub(crate) fn read_frame(&mut self, deadline: Option<Instant>) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = self.decoder.decode(&mut self.buf)? {
                trace_frame("received", &frame);
                return Ok(frame);
            }
            self.fill_until(deadline)?;
        }
    }

    fn fill_until(&mut self, deadline: Option<Instant>) -> Result<(), ClientError> {
        let timeout = match deadline {
            None => None,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout);
                }
                Some(left)
            }
        };
        if needs_update(self.socket_timeout, timeout) {
            self.transport.socket().set_read_timeout(timeout)?;
            self.socket_timeout = timeout;
        }
        self.fill()
    }

    /// Appends what one read returns to the buffer.
    fn fill(&mut self) -> Result<(), ClientError> {
        let result = self.transport.read(&mut self.scratch, &mut self.buf);
        if let Err(ClientError::Closed) = result {
            tracing::debug!(buffered = self.buf.len(), "connection closed by the server");
        }
        result
    }
}

/// Encodes frames into a buffer and writes it to the stream on flush.
#[derive(Debug)]
pub(crate) struct FrameWriter {
    transport: Transport,
    buf: BytesMut,
}

impl FrameWriter {
    pub(crate) fn new(transport: Transport) -> FrameWriter {
        FrameWriter {
            transport,
            buf: BytesMut::with_capacity(FLUSH_THRESHOLD),
        }
    }

    pub(crate) fn transport(&self) -> &Transport {
        &self.transport
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
        let result = self.transport.write_all(&self.buf);
        // After a failed write the stream may contain part of a frame, so the connection is
        // unusable. Clearing the buffer keeps it from growing while the caller notices.
        self.buf.clear();
        result
    }
}

/// Returns whether the socket's read timeout must change from `current` to `wanted`.
///
/// A timeout up to [`TIMEOUT_SLACK`] longer than the wanted one is kept, so consecutive reads
/// with the same deadline cost no extra system call. Such a read may end that much late.
fn needs_update(current: Option<Duration>, target: Option<Duration>) -> bool {
    match (current, target) {
        (Some(current), Some(target)) => current < target || current - target > TIMEOUT_SLACK,
        (current, target) => current != target,
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

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn timeout_within_slack_is_kept() {
        assert!(!needs_update(Some(100 * MS), Some(100 * MS)));
        assert!(!needs_update(Some(100 * MS), Some(99 * MS + MS / 2)));
    }

    #[test]
    fn shorter_timeout_is_set() {
        assert!(needs_update(Some(100 * MS), Some(90 * MS)));
    }

    #[test]
    fn longer_timeout_is_set() {
        assert!(needs_update(Some(90 * MS), Some(100 * MS)));
    }

    #[test]
    fn switch_to_or_from_no_timeout_is_set() {
        assert!(needs_update(None, Some(100 * MS)));
        assert!(needs_update(Some(100 * MS), None));
        assert!(!needs_update(None, None));
    }
}
