//! One blocking connection to a chorus server.

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use chorus_protocol::{
    preamble, Cap, DecodeError, ErrorCode, Frame, Hello, ModAction, Moderate, Publish, PublishAck,
    React, StartAt, Subscribe, Subscribed, Topic, Welcome, VERSION,
};

use crate::split::{ConnectionReader, ConnectionWriter};
use crate::tls::{TlsConnector, TlsSession};
use crate::transport::Transport;
use crate::wire::{unexpected, FrameReader, FrameWriter};
use crate::{ClientError, Options};

/// A publish accepted and stored by the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number of the publish.
    pub seq: u64,
    /// Offset the server assigned to the comment.
    pub offset: u64,
    /// Stream id of the topic.
    pub stream: u64,
}

/// One connection after the handshake. Every method blocks.
///
/// Frames that arrive while a method waits for a particular reply (EVENTS during
/// [`Connection::publish`], for example) are kept in order and returned by later calls to
/// [`Connection::recv`]. Each PING is replied to with a PONG as soon as it is read.
///
/// With [`Options::read_timeout`] set, each method that waits for the server fails with
/// [`ClientError::Timeout`] when the frame it waits for has not arrived in that time, PINGs
/// notwithstanding. The connection stays usable after a timeout.
///
/// PINGs are read only while a method waits for the server. The server closes a connection
/// that sends nothing and waits for nothing for the idle timeout announced in
/// [`Welcome::idle_timeout_ms`]. The next call then fails, and the caller reconnects.
#[derive(Debug)]
pub struct Connection {
    reader: FrameReader,
    writer: FrameWriter,
    welcome: Welcome,
    read_timeout: Option<Duration>,
    next_seq: u64,
    pending: VecDeque<Frame>,
}

impl Connection {
    /// Connects to `addr` (`host:port`), runs the TLS handshake when [`Options::tls`] is set,
    /// exchanges preambles, sends HELLO and waits for WELCOME.
    ///
    /// Opening the TCP connection may take up to [`Options::connect_timeout`], and the TLS and
    /// chorus handshakes together as long again. An ERROR from the server comes back as
    /// [`ClientError::Server`]. A server that replies in TLS on a plaintext connection is
    /// [`ClientError::TlsRequired`], and one that does not reply to a TLS handshake in TLS is
    /// [`ClientError::TlsNotOffered`].
    pub fn connect(addr: &str, options: &Options) -> Result<Connection, ClientError> {
        let connector = match &options.tls {
            Some(tls) => Some(TlsConnector::new(tls, addr)?),
            None => None,
        };
        let stream = open_stream(addr, options.connect_timeout)?;
        stream.set_nodelay(true)?;
        let deadline = Instant::now() + options.connect_timeout;
        let (transport, received) = match connector {
            Some(connector) => {
                let (session, received) = TlsSession::handshake(stream, connector, deadline)?;
                (Transport::Tls(Arc::new(session)), received)
            }
            None => (Transport::Plain(Arc::new(stream)), BytesMut::new()),
        };
        let mut reader = FrameReader::new(transport.clone(), options.max_frame, received);
        let mut writer = FrameWriter::new(transport);

        let welcome = handshake(&mut reader, &mut writer, options, deadline)?;
        tracing::debug!(
            addr,
            tls = options.tls.is_some(),
            server = %welcome.server_name,
            max_frame = welcome.max_frame,
            max_payload = welcome.max_payload,
            "connected"
        );
        Ok(Connection {
            reader,
            writer,
            welcome,
            read_timeout: options.read_timeout,
            next_seq: 1,
            pending: VecDeque::new(),
        })
    }

    /// Returns the server's WELCOME.
    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    /// Publishes one comment and waits for its acknowledgement.
    ///
    /// Returns [`ClientError::Rejected`] when the server does not store the comment. Other
    /// frames that arrive meanwhile, including acknowledgements of earlier
    /// [`Connection::send_publish`] calls, are kept for [`Connection::recv`].
    pub fn publish(&mut self, topic: &Topic, payload: &[u8]) -> Result<Ack, ClientError> {
        let seq = self.send_publish(topic, payload)?;
        self.write_buffered(false)?;
        let deadline = self.deadline();
        loop {
            match self.read_next(deadline)? {
                Frame::PublishAck(ack) if ack.seq == seq => return ack_result(&ack),
                Frame::Error(e) if e.close => return Err(e.into()),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Queues one publish without waiting for its acknowledgement and returns its sequence
    /// number.
    ///
    /// The frame is buffered: it is written by [`Connection::flush`], by any method that waits
    /// for the server, or once 64 KiB are buffered. Its PUBLISH_ACK comes back through
    /// [`Connection::recv`]; read the acknowledgements as they come, because the server stops
    /// reading from, or closes, a connection whose unread output passes its queue limit. A
    /// payload larger than the server accepts fails with [`ClientError::PayloadTooLarge`] and
    /// is not sent.
    pub fn send_publish(&mut self, topic: &Topic, payload: &[u8]) -> Result<u64, ClientError> {
        check_payload(&self.welcome, topic, payload)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        self.writer.queue(&publish_frame(seq, topic, payload));
        self.write_buffered(true)?;
        Ok(seq)
    }

    /// Subscribes to `topic` and waits for SUBSCRIBED.
    ///
    /// `stream` is the topic's stream id from an earlier subscription, or 0. An ERROR about
    /// this topic comes back as [`ClientError::Server`]. The topic's EVENTS follow through
    /// [`Connection::recv`].
    pub fn subscribe(
        &mut self,
        topic: &Topic,
        start: StartAt,
        stream: u64,
    ) -> Result<Subscribed, ClientError> {
        let subscribe = Subscribe {
            topic: topic.clone(),
            start,
            stream,
        };
        self.writer.queue(&Frame::Subscribe(subscribe));
        self.write_buffered(false)?;
        let deadline = self.deadline();
        loop {
            match self.read_next(deadline)? {
                Frame::Subscribed(s) if s.topic == *topic => return Ok(s),
                Frame::Error(e) if e.close || e.topic == topic.as_str() => return Err(e.into()),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Sends UNSUBSCRIBE for `topic`.
    ///
    /// The server does not confirm it, so EVENTS it sent before reading the frame may still
    /// arrive through [`Connection::recv`].
    pub fn unsubscribe(&mut self, topic: &Topic) -> Result<(), ClientError> {
        self.writer.queue(&Frame::Unsubscribe(topic.clone()));
        self.write_buffered(false)
    }

    /// Asks for a moderation action and waits for its MODERATE_ACK.
    ///
    /// Returns [`ClientError::Refused`] with the server's code when it does not carry the
    /// action out, for example `FORBIDDEN` for a session that may not moderate. Other frames
    /// that arrive meanwhile are kept for [`Connection::recv`].
    pub fn moderate(&mut self, action: ModAction) -> Result<(), ClientError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.writer
            .queue(&Frame::Moderate(Moderate { seq, action }));
        self.write_buffered(false)?;
        let deadline = self.deadline();
        loop {
            match self.read_next(deadline)? {
                Frame::ModerateAck(ack) if ack.seq == seq => {
                    if ack.code == ErrorCode::Ok {
                        return Ok(());
                    }
                    return Err(ClientError::Refused {
                        seq,
                        code: ack.code,
                    });
                }
                Frame::Error(e) if e.close => return Err(e.into()),
                other => self.pending.push_back(other),
            }
        }
    }

    /// Sends `count` reactions of one kind to `topic`. The server does not answer; sessions
    /// other than relays send a count of 1.
    pub fn react(&mut self, topic: &Topic, kind: &str, count: u32) -> Result<(), ClientError> {
        self.send(&Frame::React(React {
            topic: topic.clone(),
            kind: kind.to_owned(),
            count,
        }))
    }

    /// Caps the subscription to `topic` at `max_per_sec` comments a second; 0 removes the cap.
    /// The server then sends SKIPPED frames counting the comments it leaves out.
    pub fn cap(&mut self, topic: &Topic, max_per_sec: u32) -> Result<(), ClientError> {
        self.send(&Frame::Cap(Cap {
            topic: topic.clone(),
            max_per_sec,
        }))
    }

    /// Sends any frame at once, without waiting for an answer. Answers come back through
    /// [`Connection::recv`].
    pub fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        self.writer.queue(frame);
        self.write_buffered(false)
    }

    /// Writes every buffered frame.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        self.write_buffered(false)
    }

    /// Returns the next frame from the server other than PING, which gets its PONG.
    ///
    /// An ERROR frame comes back as [`ClientError::Server`]. After one with `close` set, the
    /// server closes the connection. The end of the stream is [`ClientError::Closed`], and
    /// [`Options::read_timeout`] expiring is [`ClientError::Timeout`], after which the
    /// connection can still be used.
    pub fn recv(&mut self) -> Result<Frame, ClientError> {
        self.recv_until(self.deadline())
    }

    /// Returns the next frame like [`Connection::recv`], but waits until `deadline` rather
    /// than for the read timeout.
    pub(crate) fn recv_until(&mut self, deadline: Option<Instant>) -> Result<Frame, ClientError> {
        let frame = match self.pending.pop_front() {
            Some(frame) => frame,
            None => self.read_next(deadline)?,
        };
        frame_result(frame)
    }

    /// Splits the connection into halves that two threads can use at the same time.
    ///
    /// Both halves share one socket. Frames already received and not yet returned go to the
    /// reader, which keeps replying to PING (see [`ConnectionReader`] for how). This
    /// currently never fails.
    pub fn split(self) -> Result<(ConnectionWriter, ConnectionReader), ClientError> {
        Ok(crate::split::split(
            self.reader,
            self.writer,
            self.welcome,
            self.read_timeout,
            self.next_seq,
            self.pending,
        ))
    }

    /// Writes the buffered frames, or only once they pass the flush threshold when `if_full`.
    ///
    /// A write usually fails because the server closed the connection, and then an ERROR
    /// saying why may already be waiting to be read. That error is returned instead of the
    /// bare I/O error when it can be read within [`EXPLAIN_WAIT`].
    fn write_buffered(&mut self, if_full: bool) -> Result<(), ClientError> {
        let result = if if_full {
            self.writer.flush_if_full()
        } else {
            self.writer.flush()
        };
        match result {
            Err(ClientError::Io(e)) => Err(self.server_reason().unwrap_or(ClientError::Io(e))),
            other => other,
        }
    }

    /// Looks through the frames already received for an ERROR that closed the connection.
    fn server_reason(&mut self) -> Option<ClientError> {
        if let Some(position) = self.pending.iter().position(is_closing_error) {
            if let Some(Frame::Error(e)) = self.pending.remove(position) {
                return Some(e.into());
            }
        }
        let deadline = Some(Instant::now() + EXPLAIN_WAIT);
        for _ in 0..EXPLAIN_FRAMES {
            match self.reader.read_frame(deadline) {
                Ok(Frame::Error(e)) if e.close => return Some(e.into()),
                Ok(frame) => self.pending.push_back(frame),
                Err(_) => return None,
            }
        }
        None
    }

    /// Returns when a wait that starts now times out, if the options set a read timeout.
    fn deadline(&self) -> Option<Instant> {
        self.read_timeout.map(|timeout| Instant::now() + timeout)
    }

    /// Reads the next frame from the socket, replying to PING frames on the way.
    ///
    /// A PONG that cannot be written is not an error here: the server closed the connection,
    /// and reading on returns the ERROR that explains why, or the end of the stream.
    fn read_next(&mut self, deadline: Option<Instant>) -> Result<Frame, ClientError> {
        loop {
            match self.reader.read_frame(deadline)? {
                Frame::Ping(nonce) => {
                    self.writer.queue(&Frame::Pong(nonce));
                    if let Err(e) = self.writer.flush() {
                        tracing::debug!(error = %e, "PONG not written");
                    }
                }
                frame => return Ok(frame),
            }
        }
    }
}

/// How long a failed write waits for the ERROR that may explain it.
const EXPLAIN_WAIT: Duration = Duration::from_millis(50);

/// Most received frames looked through for that ERROR.
const EXPLAIN_FRAMES: usize = 64;

fn is_closing_error(frame: &Frame) -> bool {
    matches!(frame, Frame::Error(e) if e.close)
}

/// Resolves `addr` and connects to the first address that accepts.
fn open_stream(addr: &str, timeout: Duration) -> Result<TcpStream, ClientError> {
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(addrs) => addrs.collect(),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            return Err(ClientError::InvalidAddress(addr.to_owned()))
        }
        Err(source) => {
            return Err(ClientError::Connect {
                addr: addr.to_owned(),
                source,
            })
        }
    };
    let mut last = io::Error::new(io::ErrorKind::NotFound, "the name resolved to no address");
    for socket_addr in addrs {
        match TcpStream::connect_timeout(&socket_addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(e) => {
                tracing::debug!(addr = %socket_addr, error = %e, "connect failed");
                last = e;
            }
        }
    }
    Err(ClientError::Connect {
        addr: addr.to_owned(),
        source: last,
    })
}

/// Exchanges preambles, sends HELLO and waits for WELCOME until `deadline`.
fn handshake(
    reader: &mut FrameReader,
    writer: &mut FrameWriter,
    options: &Options,
    deadline: Instant,
) -> Result<Welcome, ClientError> {
    let hello = Hello {
        version: VERSION,
        max_frame: options.max_frame,
        client_name: options.client_name.clone(),
        token: options.token.clone(),
        features: options.features,
    };
    writer.queue_bytes(&preamble());
    writer.queue(&Frame::Hello(hello));
    writer.flush()?;

    reader.read_preamble(deadline)?;
    loop {
        match reader.read_frame(Some(deadline))? {
            Frame::Welcome(welcome) if welcome.version == VERSION => return Ok(welcome),
            Frame::Welcome(welcome) => {
                return Err(DecodeError::UnsupportedVersion(welcome.version).into())
            }
            Frame::Error(e) => return Err(e.into()),
            Frame::Ping(nonce) => {
                writer.queue(&Frame::Pong(nonce));
                writer.flush()?;
            }
            other => return Err(unexpected(&other)),
        }
    }
}

/// Rejects a payload that the server would reject for its size, so the connection survives.
pub(crate) fn check_payload(
    welcome: &Welcome,
    topic: &Topic,
    payload: &[u8],
) -> Result<(), ClientError> {
    // A limit of 0 means the server announced none.
    if welcome.max_payload != 0 && payload.len() > welcome.max_payload as usize {
        return Err(ClientError::PayloadTooLarge {
            len: payload.len(),
            max: welcome.max_payload,
        });
    }
    // PUBLISH body: seq, topic length and bytes, payload length and bytes.
    let overhead = 8 + 1 + topic.as_str().len() + 4;
    let max_frame = welcome.max_frame as usize;
    if welcome.max_frame != 0 && overhead + payload.len() > max_frame {
        return Err(ClientError::PayloadTooLarge {
            len: payload.len(),
            max: max_frame.saturating_sub(overhead) as u32,
        });
    }
    Ok(())
}

pub(crate) fn publish_frame(seq: u64, topic: &Topic, payload: &[u8]) -> Frame {
    Frame::Publish(Publish {
        seq,
        topic: topic.clone(),
        payload: Bytes::copy_from_slice(payload),
    })
}

/// Turns an ERROR frame into [`ClientError::Server`] and passes every other frame through.
pub(crate) fn frame_result(frame: Frame) -> Result<Frame, ClientError> {
    match frame {
        Frame::Error(e) => Err(e.into()),
        frame => Ok(frame),
    }
}

fn ack_result(ack: &PublishAck) -> Result<Ack, ClientError> {
    if ack.code != ErrorCode::Ok {
        return Err(ClientError::Rejected {
            seq: ack.seq,
            code: ack.code,
        });
    }
    Ok(Ack {
        seq: ack.seq,
        offset: ack.offset,
        stream: ack.stream,
    })
}
