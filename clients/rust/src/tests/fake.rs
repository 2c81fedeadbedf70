//! A scripted fake server on 127.0.0.1 that speaks the protocol through chorus_protocol.

use std::io::Write;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chorus_protocol::{preamble, Frame, Hello, Welcome, DEFAULT_MAX_FRAME, VERSION};

use crate::transport::Transport;
use crate::wire::{FrameReader, FrameWriter};
use crate::{ClientError, Options};

/// How long the fake server waits for the client at any step.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A script run on one accepted connection.
pub(crate) type Script = Box<dyn FnOnce(&mut Peer) + Send>;

/// A server thread that accepts one connection per script, in order.
pub(crate) struct FakeServer {
    addr: String,
    handle: JoinHandle<()>,
}

impl FakeServer {
    pub(crate) fn start(scripts: Vec<Script>) -> FakeServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let handle = thread::spawn(move || {
            for script in scripts {
                let mut peer = Peer::new(accept_before(&listener, Instant::now() + WAIT));
                script(&mut peer);
                peer.close();
            }
        });
        FakeServer { addr, handle }
    }

    /// Starts a server for one connection.
    pub(crate) fn one(script: impl FnOnce(&mut Peer) + Send + 'static) -> FakeServer {
        FakeServer::start(vec![Box::new(script)])
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Waits for the server thread, re-raising a failed assertion of a script.
    pub(crate) fn join(self) {
        if let Err(panic) = self.handle.join() {
            std::panic::resume_unwind(panic);
        }
    }
}

fn accept_before(listener: &TcpListener, deadline: Instant) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                return stream;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "no client connected within {WAIT:?}"
                );
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

/// The server's side of one connection.
pub(crate) struct Peer {
    stream: Arc<TcpStream>,
    reader: FrameReader,
    writer: FrameWriter,
    closed: bool,
}

impl Peer {
    fn new(stream: TcpStream) -> Peer {
        let stream = Arc::new(stream);
        let transport = Transport::Plain(Arc::clone(&stream));
        Peer {
            reader: FrameReader::new(transport.clone(), DEFAULT_MAX_FRAME, Default::default()),
            writer: FrameWriter::new(transport),
            stream,
            closed: false,
        }
    }

    /// Reads the client's preamble and HELLO, then sends the server preamble and `welcome`.
    pub(crate) fn handshake_with(&mut self, welcome: Welcome) -> Hello {
        self.reader.read_preamble(Instant::now() + WAIT).unwrap();
        let hello = match self.recv() {
            Frame::Hello(hello) => hello,
            other => panic!("expected HELLO, got {other:?}"),
        };
        self.send_raw(&preamble());
        self.send(Frame::Welcome(welcome));
        hello
    }

    /// Completes the handshake with [`welcome`].
    pub(crate) fn handshake(&mut self) -> Hello {
        self.handshake_with(welcome())
    }

    /// Reads the next frame from the client.
    pub(crate) fn recv(&mut self) -> Frame {
        match self.try_recv() {
            Ok(frame) => frame,
            Err(e) => panic!("fake server could not read a frame: {e}"),
        }
    }

    /// Reads the next frame from the client, returning the error when there is none.
    pub(crate) fn try_recv(&mut self) -> Result<Frame, ClientError> {
        self.reader.read_frame(Some(Instant::now() + WAIT))
    }

    /// Waits until the client closes the connection; any frame instead fails the test.
    pub(crate) fn expect_closed(&mut self) {
        match self.reader.read_frame(Some(Instant::now() + WAIT)) {
            Err(ClientError::Closed | ClientError::Io(_)) => {}
            other => panic!("expected the client to close, got {other:?}"),
        }
    }

    pub(crate) fn send(&mut self, frame: Frame) {
        self.try_send(frame).unwrap();
    }

    /// Sends a frame, returning the error when the client has gone.
    pub(crate) fn try_send(&mut self, frame: Frame) -> Result<(), ClientError> {
        self.writer.queue(&frame);
        self.writer.flush()
    }

    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        (&*self.stream).write_all(bytes).unwrap();
    }

    /// Closes the connection at once, without waiting for the client.
    pub(crate) fn close_now(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        self.closed = true;
    }

    /// Closes the sending side and waits until the client closes too, so no unread bytes
    /// make the kernel reset the connection and discard what the client has not read yet.
    fn close(mut self) {
        if self.closed {
            return;
        }
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + WAIT;
        loop {
            match self.reader.read_frame(Some(deadline)) {
                Ok(_) => continue,
                Err(ClientError::Timeout) => panic!("client kept the connection open"),
                Err(_) => return,
            }
        }
    }
}

/// Returns the WELCOME the fake server sends unless a test gives another.
pub(crate) fn welcome() -> Welcome {
    Welcome {
        version: VERSION,
        max_frame: DEFAULT_MAX_FRAME,
        server_name: "fake/1".to_owned(),
        max_payload: 64 * 1024,
        idle_timeout_ms: 0,
        features: 0,
    }
}

/// Client options that bound every wait of a test.
pub(crate) fn options() -> Options {
    let mut options = Options {
        client_name: "unit-test".to_owned(),
        read_timeout: Some(WAIT),
        ..Options::default()
    };
    options.backoff.initial = Duration::from_millis(1);
    options.backoff.max = Duration::from_millis(10);
    options
}
