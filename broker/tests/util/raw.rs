//! Raw-socket helpers for tests that send bytes the client library would never produce, or that
//! need to control exactly when a connection reads.
//!
//! Frames from the broker are decoded with `chorus_protocol`'s `Decoder`, so a reply that is not
//! a valid frame fails the test. Every read is bounded by [`READ_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use chorus_protocol::frame::kind;
use chorus_protocol::{
    decode_preamble, preamble, Decoder, ErrorCode, ErrorFrame, Frame, Hello, Welcome,
    DEFAULT_MAX_FRAME, HEADER_LEN, VERSION,
};
use socket2::{Domain, Protocol, Socket, Type};

/// How long a raw read waits before the test fails.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a raw write may block before the test fails.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes requested from the socket by one read.
const READ_CHUNK: usize = 64 * 1024;

/// Topic of [`RawConn::flood_until_stalled`]. With a one-byte topic and an empty payload a
/// PUBLISH is 26 bytes and its PUBLISH_ACK [`FLOOD_ACK_LEN`] bytes, so the flood makes the broker
/// write more bytes than it reads.
pub const FLOOD_TOPIC: &str = "f";

/// Length of a PUBLISH_ACK frame: header, seq, code, offset and stream.
pub const FLOOD_ACK_LEN: u64 = 12 + 8 + 2 + 8 + 8;

/// Time a flood may write before the broker must have stopped reading from it.
const FLOOD_DEADLINE: Duration = Duration::from_secs(10);

/// Write timeout during a flood. [`STALLED_WRITES`] timeouts in a row end the flood.
const FLOOD_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
const STALLED_WRITES: u32 = 3;

/// A plain TCP connection to the broker with a frame decoder on its receiving side.
pub struct RawConn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: Decoder,
}

impl RawConn {
    /// Opens a TCP connection without sending anything.
    pub fn connect(addr: SocketAddr) -> RawConn {
        let stream = TcpStream::connect(addr).expect("failed to connect to chorusd");
        RawConn::from_stream(stream)
    }

    /// Opens a TCP connection whose kernel receive buffer is limited to about `bytes`, so that
    /// a connection that stops reading pushes back on the broker quickly.
    pub fn connect_with_recv_buffer(addr: SocketAddr, bytes: usize) -> RawConn {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        // Set before connecting, so the window announced in the handshake already honours it.
        socket.set_recv_buffer_size(bytes).unwrap();
        socket
            .connect(&addr.into())
            .expect("failed to connect to chorusd");
        RawConn::from_stream(socket.into())
    }

    fn from_stream(stream: TcpStream) -> RawConn {
        stream.set_nodelay(true).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
        RawConn {
            stream,
            buf: BytesMut::new(),
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
        }
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// Writes all of `bytes`, failing the test if the write fails.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("failed to write to chorusd");
    }

    /// Encodes a frame with the protocol crate and writes it.
    pub fn send_frame(&mut self, frame: &Frame) {
        self.send(&frame.to_bytes());
    }

    /// Sends the preamble and a version 1 HELLO, then reads the server's preamble and WELCOME.
    pub fn handshake(&mut self) -> Welcome {
        let mut opening = preamble().to_vec();
        opening.extend_from_slice(&hello_frame(VERSION));
        self.send(&opening);
        self.read_server_preamble();
        match self.read_frame() {
            Frame::Welcome(welcome) => welcome,
            other => panic!("expected WELCOME, got {other:?}"),
        }
    }

    /// Publishes to [`FLOOD_TOPIC`] as fast as the socket takes the bytes and never reads,
    /// until [`STALLED_WRITES`] writes in a row time out. Fails the test if that has not
    /// happened by [`FLOOD_DEADLINE`].
    pub fn flood_until_stalled(&mut self) {
        let mut burst = Vec::new();
        for seq in 0..1000 {
            burst.extend_from_slice(&raw_frame(
                kind::PUBLISH,
                &publish_body(seq, &str8(FLOOD_TOPIC.as_bytes()), &[]),
            ));
        }
        self.stream
            .set_write_timeout(Some(FLOOD_WRITE_TIMEOUT))
            .unwrap();

        // The write position cycles through `burst`, so a write cut short by the timeout
        // resumes mid-frame and the stream stays valid.
        let deadline = Instant::now() + FLOOD_DEADLINE;
        let (mut position, mut stalled) = (0, 0);
        while stalled < STALLED_WRITES {
            assert!(
                Instant::now() < deadline,
                "the broker kept reading from a client that ignores its acknowledgements"
            );
            match self.stream.write(&burst[position..]) {
                Ok(written) => {
                    position = (position + written) % burst.len();
                    stalled = 0;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    stalled += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => panic!("flood write failed: {e}"),
            }
        }
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT)).unwrap();
    }

    /// Reads the server's preamble and checks that it names version 1.
    pub fn read_server_preamble(&mut self) {
        loop {
            let decoded = decode_preamble(&mut self.buf).expect("invalid server preamble");
            if let Some(version) = decoded {
                assert_eq!(version, VERSION, "server preamble version");
                return;
            }
            self.fill();
        }
    }

    /// Reads the next frame, failing the test on a timeout, an early end of stream or bytes
    /// that do not decode.
    pub fn read_frame(&mut self) -> Frame {
        loop {
            let decoded = self.decoder.decode(&mut self.buf);
            if let Some(frame) = decoded.expect("server sent bytes that do not decode") {
                return frame;
            }
            self.fill();
        }
    }

    /// Reads the next frame, which must be an ERROR with `code` and close=1, and then the end
    /// of the stream. Returns the ERROR for further checks.
    pub fn expect_close_error(&mut self, code: ErrorCode) -> ErrorFrame {
        let frame = self.read_frame();
        let Frame::Error(error) = frame else {
            panic!("expected ERROR {code}, got {frame:?}");
        };
        assert_eq!(error.code, code, "ERROR message: {}", error.message);
        assert!(error.close, "ERROR {code} should have close=1");
        self.expect_eof();
        error
    }

    /// Checks that the broker closed the connection after the frames read so far.
    pub fn expect_eof(&mut self) {
        assert!(
            self.buf.is_empty(),
            "{} bytes arrived after the last frame",
            self.buf.len()
        );
        let read = self.read_some();
        assert!(
            matches!(read, Ok(0)),
            "expected the end of the stream, got {read:?}"
        );
    }

    /// Appends what one read returns to the buffer. Fails the test on a timeout, an error or
    /// the end of the stream.
    fn fill(&mut self) {
        match self.read_some() {
            Ok(0) => panic!(
                "chorusd closed the connection before the next frame or preamble arrived \
                 ({} bytes of it received)",
                self.buf.len()
            ),
            Ok(_) => {}
            Err(e) => panic!("read from chorusd failed: {e}"),
        }
    }

    fn read_some(&mut self) -> io::Result<usize> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Builds a frame from a type byte and a body, with a correct length and CRC.
pub fn raw_frame(kind: u8, body: &[u8]) -> Vec<u8> {
    raw_frame_with_header(kind, 0, 0, body)
}

/// Builds a frame with the given header flags and reserved bytes, which version 1 requires to
/// be 0, and a correct length and CRC.
pub fn raw_frame_with_header(kind: u8, flags: u8, reserved: u16, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    let len = u32::try_from(body.len()).expect("test bodies fit a u32 length");
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[kind, flags]);
    frame.extend_from_slice(&reserved.to_be_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame[..8]);
    crc.update(body);
    frame.extend_from_slice(&crc.finalize().to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

/// Returns the largest send buffer TCP autotuning gives a socket, from `tcp_wmem`.
pub fn max_tcp_send_buffer() -> u64 {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap();
    text.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// Encodes a str8 field: a length byte, then the bytes, which need not be a valid topic.
pub fn str8(bytes: &[u8]) -> Vec<u8> {
    let len = u8::try_from(bytes.len()).expect("a str8 holds at most 255 bytes");
    let mut field = vec![len];
    field.extend_from_slice(bytes);
    field
}

/// Builds a PUBLISH body around an already encoded topic field.
pub fn publish_body(seq: u64, topic_field: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut body = seq.to_be_bytes().to_vec();
    body.extend_from_slice(topic_field);
    let len = u32::try_from(payload.len()).expect("test payloads fit a u32 length");
    body.extend_from_slice(&len.to_be_bytes());
    body.extend_from_slice(payload);
    body
}

/// Builds a SUBSCRIBE body around an already encoded topic field.
pub fn subscribe_body(
    topic_field: &[u8],
    start_mode: u8,
    start_value: u64,
    stream: u64,
) -> Vec<u8> {
    let mut body = topic_field.to_vec();
    body.push(start_mode);
    body.extend_from_slice(&start_value.to_be_bytes());
    body.extend_from_slice(&stream.to_be_bytes());
    body
}

/// Encodes a HELLO that names `version` and accepts frames of the default maximum.
pub fn hello_frame(version: u16) -> Vec<u8> {
    hello_frame_with_max(version, DEFAULT_MAX_FRAME)
}

/// Encodes a HELLO that names `version` and accepts frame bodies of up to `max_frame` bytes.
pub fn hello_frame_with_max(version: u16, max_frame: u32) -> Vec<u8> {
    let hello = Hello {
        version,
        max_frame,
        client_name: "chorus-broker-tests/raw".to_owned(),
        token: String::new(),
        features: 0,
    };
    Frame::Hello(hello).to_bytes().to_vec()
}

/// Plays an upstream for a relay on `listener`: accepts its connection within `wait`, answers
/// its preamble and HELLO, reads frames until one for which `stop` returns true, and then
/// drops the connection without acknowledging that frame.
#[allow(dead_code)]
pub fn accept_and_drop_at(
    listener: &std::net::TcpListener,
    wait: Duration,
    stop: fn(&Frame) -> bool,
) {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + wait;
    let mut socket = loop {
        match listener.accept() {
            Ok((socket, _)) => break socket,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "relay did not connect upstream");
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    };
    socket.set_nonblocking(false).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();

    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let mut read_more = |socket: &mut TcpStream, buf: &mut BytesMut| {
        let n = socket.read(&mut chunk).expect("read from the relay");
        assert!(n > 0, "relay closed the connection");
        buf.extend_from_slice(&chunk[..n]);
    };
    while decode_preamble(&mut buf).expect("relay preamble").is_none() {
        read_more(&mut socket, &mut buf);
    }
    let welcome = Frame::Welcome(Welcome {
        version: VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        server_name: "test upstream".into(),
        max_payload: 64 * 1024,
        idle_timeout_ms: 0,
        features: 0,
    });
    socket.write_all(&preamble()).unwrap();
    socket.write_all(&welcome.to_bytes()).unwrap();
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
    loop {
        match decoder.decode(&mut buf).expect("frame from the relay") {
            Some(frame) if stop(&frame) => return,
            Some(_) => {}
            None => read_more(&mut socket, &mut buf),
        }
    }
}
