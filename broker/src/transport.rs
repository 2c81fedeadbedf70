//! Byte transports under the chorus protocol: plain TCP, and WebSocket for browsers.
//!
//! Over WebSocket every chorus frame, and the preamble, travels in one binary message, so the
//! frame decoder sees the same byte stream as over TCP. The handshake and WebSocket framing are
//! done by tungstenite, driven by the worker's event loop on the non-blocking mio stream.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::BytesMut;
use mio::net::TcpStream;
use tungstenite::handshake::server::{ErrorResponse, Request, Response, ServerHandshake};
use tungstenite::handshake::{HandshakeError, MidHandshake};
use tungstenite::http::{HeaderValue, StatusCode};
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{Message, WebSocket};

use crate::conn::OutQueue;
use crate::tls::{TlsConfigs, TlsStream};

/// WebSocket subprotocol name for chorus protocol version 1.
pub(crate) const WS_SUBPROTOCOL: &str = "chorus.v1";

/// Protocol spoken by a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerKind {
    Tcp,
    WebSocket,
    TcpTls,
    WebSocketTls,
}

impl ListenerKind {
    pub(crate) fn is_tls(self) -> bool {
        matches!(self, ListenerKind::TcpTls | ListenerKind::WebSocketTls)
    }

    pub(crate) fn is_websocket(self) -> bool {
        matches!(self, ListenerKind::WebSocket | ListenerKind::WebSocketTls)
    }
}

/// A connected socket, with or without TLS.
pub(crate) enum Socket {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Socket {
    fn tcp(&mut self) -> &mut TcpStream {
        match self {
            Socket::Plain(stream) => stream,
            Socket::Tls(tls) => tls.socket(),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(stream) => stream.read(buf),
            Socket::Tls(tls) => tls.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(stream) => stream.write(buf),
            Socket::Tls(tls) => tls.write(buf),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Plain(stream) => stream.write_vectored(bufs),
            Socket::Tls(tls) => tls.write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Plain(stream) => stream.flush(),
            Socket::Tls(tls) => tls.flush(),
        }
    }
}

/// Settings shared by every WebSocket connection of a worker.
#[derive(Debug, Clone)]
pub(crate) struct WsSettings {
    /// Origins a browser may connect from; `*` allows any. Requests without an Origin header
    /// (not from a browser) are always allowed.
    pub(crate) allowed_origins: Arc<Vec<String>>,
    pub(crate) config: WebSocketConfig,
}

impl WsSettings {
    pub(crate) fn new(allowed_origins: Vec<String>, max_frame: u32) -> WsSettings {
        let max_message = max_frame as usize + chorus_protocol::HEADER_LEN;
        let config = WebSocketConfig::default()
            .read_buffer_size(16 * 1024)
            .write_buffer_size(64 * 1024)
            .max_write_buffer_size(256 * 1024 + max_message)
            .max_message_size(Some(max_message))
            .max_frame_size(Some(max_message));
        WsSettings {
            allowed_origins: Arc::new(allowed_origins),
            config,
        }
    }
}

/// Checks the Origin header and picks the subprotocol during the WebSocket handshake.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    allowed_origins: Arc<Vec<String>>,
}

type WsMid = MidHandshake<ServerHandshake<Socket, Handshake>>;

/// The connection's byte transport.
pub(crate) enum Transport {
    Tcp(Socket),
    /// A WebSocket handshake in progress; `None` only while a step of it runs.
    WsHandshake(Option<Box<WsMid>>),
    Ws(Box<WebSocket<Socket>>),
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Transport::Tcp(_) => "Tcp",
            Transport::WsHandshake(_) => "WsHandshake",
            Transport::Ws(_) => "Ws",
        };
        f.write_str(name)
    }
}

/// Outcome of a read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReadOutcome {
    /// Bytes were appended to the buffer.
    Data(usize),
    /// Nothing more to read now.
    WouldBlock,
    /// The peer closed the connection.
    Closed,
}

/// Error of a transport.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TransportError {
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The WebSocket handshake was rejected or broken.
    #[error("WebSocket handshake failed: {0}")]
    Handshake(String),
    /// The peer broke the WebSocket protocol or the chorus mapping onto it.
    #[error("WebSocket protocol error: {0}")]
    WebSocket(String),
    /// A WebSocket message exceeded the maximum frame size.
    #[error("WebSocket message exceeds the maximum frame size: {0}")]
    TooLarge(String),
}

impl Transport {
    /// Starts the transport for a freshly accepted stream; `tls` is the configuration in
    /// force for TLS listeners.
    pub(crate) fn accept(
        stream: TcpStream,
        kind: ListenerKind,
        ws: &WsSettings,
        tls: Option<&TlsConfigs>,
    ) -> io::Result<Transport> {
        let socket = match (kind.is_tls(), tls) {
            (false, _) => Socket::Plain(stream),
            (true, Some(configs)) => {
                let config = if kind.is_websocket() {
                    configs.websocket.clone()
                } else {
                    configs.chorus.clone()
                };
                Socket::Tls(Box::new(TlsStream::new(config, stream)?))
            }
            (true, None) => {
                return Err(io::Error::other("TLS listener without a TLS configuration"))
            }
        };
        if !kind.is_websocket() {
            return Ok(Transport::Tcp(socket));
        }
        let callback = Handshake {
            allowed_origins: ws.allowed_origins.clone(),
        };
        let mid = ServerHandshake::start(socket, callback, Some(ws.config));
        Ok(Transport::WsHandshake(Some(Box::new(mid))))
    }

    /// Returns the underlying socket, for registration with the poll.
    pub(crate) fn socket(&mut self) -> Option<&mut TcpStream> {
        match self {
            Transport::Tcp(socket) => Some(socket.tcp()),
            Transport::WsHandshake(Some(mid)) => Some(mid.get_mut().get_mut().tcp()),
            Transport::WsHandshake(None) => None,
            Transport::Ws(ws) => Some(ws.get_mut().tcp()),
        }
    }

    /// Reads what is available and appends the chorus bytes to `buf`.
    pub(crate) fn read(
        &mut self,
        chunk: &mut [u8],
        buf: &mut BytesMut,
    ) -> Result<ReadOutcome, TransportError> {
        if let Transport::WsHandshake(_) = self {
            if !self.advance_handshake()? {
                return Ok(ReadOutcome::WouldBlock);
            }
        }
        match self {
            Transport::Tcp(stream) => loop {
                match stream.read(chunk) {
                    Ok(0) => return Ok(ReadOutcome::Closed),
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        return Ok(ReadOutcome::Data(n));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Ok(ReadOutcome::WouldBlock)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e.into()),
                }
            },
            Transport::Ws(ws) => read_message(ws, buf),
            Transport::WsHandshake(_) => Ok(ReadOutcome::WouldBlock),
        }
    }

    /// Runs the handshake as far as the socket allows; returns whether it is complete.
    fn advance_handshake(&mut self) -> Result<bool, TransportError> {
        let Transport::WsHandshake(slot) = self else {
            return Ok(true);
        };
        let Some(mid) = slot.take() else {
            return Err(TransportError::Handshake("handshake state lost".into()));
        };
        match mid.handshake() {
            Ok(ws) => {
                *self = Transport::Ws(Box::new(ws));
                Ok(true)
            }
            Err(HandshakeError::Interrupted(mid)) => {
                *slot = Some(Box::new(mid));
                Ok(false)
            }
            Err(HandshakeError::Failure(e)) => Err(TransportError::Handshake(e.to_string())),
        }
    }

    /// Writes queued frames until the queue is empty or the socket would block. Returns whether
    /// everything was written.
    pub(crate) fn write(&mut self, out: &mut OutQueue) -> Result<bool, TransportError> {
        match self {
            Transport::Tcp(socket) => {
                if !out.write_to(socket)? {
                    return Ok(false);
                }
                match socket.flush() {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Transport::Ws(ws) => write_messages(ws, out),
            // Nothing is queued before the handshake completes, except frames that must wait.
            Transport::WsHandshake(_) => {
                if self.advance_handshake()? {
                    self.write(out)
                } else {
                    Ok(out.bytes() == 0)
                }
            }
        }
    }

    /// Ends the sending side after a clean close, so the peer reads everything queued before
    /// the end of the stream while the broker keeps reading and discarding its input.
    pub(crate) fn shutdown_write(&mut self) {
        self.close();
        if let Some(socket) = self.socket() {
            // Best effort: a socket the peer already reset is dropped at the deadline anyway.
            let _ = socket.shutdown(std::net::Shutdown::Write);
        }
    }

    /// Starts a clean close where the transport has one (a WebSocket Close message).
    pub(crate) fn close(&mut self) {
        // Best effort: the socket is dropped right after, whatever happens here.
        match self {
            Transport::Ws(ws) => {
                let _ = ws.close(None);
                let _ = ws.flush();
                if let Socket::Tls(tls) = ws.get_mut() {
                    tls.close();
                }
            }
            Transport::Tcp(Socket::Tls(tls)) => tls.close(),
            _ => {}
        }
    }
}

fn read_message(
    ws: &mut WebSocket<Socket>,
    buf: &mut BytesMut,
) -> Result<ReadOutcome, TransportError> {
    loop {
        match ws.read() {
            Ok(Message::Binary(data)) => {
                buf.extend_from_slice(&data);
                return Ok(ReadOutcome::Data(data.len()));
            }
            Ok(Message::Text(_)) => {
                return Err(TransportError::WebSocket(
                    "text message received; chorus frames travel in binary messages".into(),
                ))
            }
            // tungstenite queues the answer to a ping itself; it goes out with the next flush.
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => continue,
            Ok(Message::Close(_)) => return Ok(ReadOutcome::Closed),
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(ReadOutcome::WouldBlock)
            }
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                return Ok(ReadOutcome::Closed)
            }
            Err(tungstenite::Error::Io(e)) => return Err(e.into()),
            Err(tungstenite::Error::Capacity(e)) => {
                return Err(TransportError::TooLarge(e.to_string()))
            }
            Err(e) => return Err(TransportError::WebSocket(e.to_string())),
        }
    }
}

fn write_messages(ws: &mut WebSocket<Socket>, out: &mut OutQueue) -> Result<bool, TransportError> {
    while let Some(frame) = out.pop_front() {
        match ws.write(Message::Binary(frame)) {
            Ok(()) => {}
            Err(tungstenite::Error::WriteBufferFull(message)) => {
                if let Message::Binary(frame) = *message {
                    out.push_front(frame);
                }
                break;
            }
            // The message is queued; the socket is full, so stop and wait for writability.
            Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => {
                return Ok(false)
            }
            Err(tungstenite::Error::Io(e)) => return Err(e.into()),
            Err(e) => return Err(TransportError::WebSocket(e.to_string())),
        }
    }
    match ws.flush() {
        Ok(()) => Ok(out.bytes() == 0),
        Err(tungstenite::Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
        Err(tungstenite::Error::Io(e)) => Err(e.into()),
        Err(e) => Err(TransportError::WebSocket(e.to_string())),
    }
}

impl tungstenite::handshake::server::Callback for Handshake {
    fn on_request(
        self,
        request: &Request,
        mut response: Response,
    ) -> Result<Response, ErrorResponse> {
        if let Some(origin) = request.headers().get("origin") {
            let origin = origin.to_str().unwrap_or("");
            let allowed = self
                .allowed_origins
                .iter()
                .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
            if !allowed {
                return Err(reject(
                    StatusCode::FORBIDDEN,
                    format!("origin {origin} is not allowed"),
                ));
            }
        }

        let requested: Vec<&str> = request
            .headers()
            .get_all("sec-websocket-protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        if requested.contains(&WS_SUBPROTOCOL) {
            response.headers_mut().insert(
                "sec-websocket-protocol",
                HeaderValue::from_static(WS_SUBPROTOCOL),
            );
        } else if !requested.is_empty() {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                format!("unsupported subprotocol; this server speaks {WS_SUBPROTOCOL}"),
            ));
        }
        Ok(response)
    }
}

fn reject(status: StatusCode, message: String) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(message));
    *response.status_mut() = status;
    response
}
