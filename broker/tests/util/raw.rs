//! Raw-socket helpers for tests that send bytes the client library would never produce, or that
//! need to control exactly when a connection reads.
//!
//! Frames from the broker are decoded with `chorus_protocol`'s `Decoder`, so a reply that is not
//! a valid frame fails the test. Every read is bounded by [`READ_TIMEOUT`].

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::BytesMut;
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

    /// Appends what one read returns to the buffer; fails the test on a timeout, an error or
    /// the end of the stream.
    fn fill(&mut self) {
        match self.read_some() {
            Ok(0) => panic!(
                "connection closed with {} bytes of an incomplete frame or preamble buffered",
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
    let mut frame = Vec::with_capacity(HEADER_LEN + body.len());
    let len = u32::try_from(body.len()).expect("test bodies fit a u32 length");
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[kind, 0, 0, 0]);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&frame[..8]);
    crc.update(body);
    frame.extend_from_slice(&crc.finalize().to_be_bytes());
    frame.extend_from_slice(body);
    frame
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

/// Builds a SUBSCRIBE body with start mode latest around an already encoded topic field.
pub fn subscribe_latest_body(topic_field: &[u8]) -> Vec<u8> {
    let mut body = topic_field.to_vec();
    body.push(0);
    body.extend_from_slice(&0u64.to_be_bytes());
    body.extend_from_slice(&0u64.to_be_bytes());
    body
}

/// Encodes a HELLO that names `version` and accepts frames of the default maximum.
pub fn hello_frame(version: u16) -> Vec<u8> {
    let hello = Hello {
        version,
        max_frame: DEFAULT_MAX_FRAME,
        client_name: "chorus-broker-tests/raw".to_owned(),
        token: String::new(),
    };
    Frame::Hello(hello).to_bytes().to_vec()
}
