//! The HTTP/1.1 server under the admin endpoint, with bounded memory and time per connection.
//!
//! Each connection carries one request and one response, sent with `Connection: close`. The
//! request head is read with a deadline and a size limit and parsed with `httparse`. No admin
//! endpoint takes a body, so the handler rejects a request that declares one with 413, and the
//! server never reads a body, whatever length it declares. The one exception is the first
//! chunk-size line of a chunked body, read within the same limits to tell an empty body from a
//! real one. Each connection gets a short-lived thread that reads the head and writes the
//! response, and at most [`MAX_CONNECTIONS`] are open at once. The admin thread only handles
//! parsed requests, so a slow client delays no other client.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};
use tracing::{debug, error, warn};

use super::http::Reply;

/// Maximum size of a request head: the request line and every header field.
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Maximum number of header fields in a request.
const MAX_HEADERS: usize = 64;

/// Time a client has, from the accepted connection, to send the whole request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Maximum number of connections served at once; further ones are rejected with 503.
const MAX_CONNECTIONS: usize = 16;

/// Time allowed for writing one response.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Time a connection waits for the admin thread to handle its request. Requests queue behind
/// each other, and each one waits at most a few seconds for the workers.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Bytes and time spent discarding what the client still sends after the response, so that
/// closing the socket does not reset the connection before the client reads the response.
const LINGER_MAX_BYTES: usize = 64 * 1024;
const LINGER_TIMEOUT: Duration = Duration::from_secs(1);

/// Pause before accepting again after `accept` failed, such as when file descriptors ran out.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Minimum time between two warnings of the same kind from the accept thread.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// A parsed request head.
#[derive(Debug)]
pub(super) struct Request {
    method: String,
    /// The request target as sent: path and query string.
    target: String,
    headers: Vec<(String, String)>,
    peer: SocketAddr,
    framing: Framing,
}

impl Request {
    pub(super) fn method(&self) -> &str {
        &self.method
    }

    /// Returns the request target: the path with its query string, if any.
    pub(super) fn target(&self) -> &str {
        &self.target
    }

    /// Returns the value of the first header field named `name`, compared case-insensitively.
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(field, _)| field.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub(super) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Returns whether the request declares a body that is not empty. Such a body is never
    /// read, whatever its declared length.
    pub(super) fn has_body(&self) -> bool {
        self.framing == Framing::Declared
    }
}

/// Body framing that a request declares. The body itself is never read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body, or an empty one.
    None,
    /// A Content-Length above zero, a chunked body whose first chunk is not empty, or a
    /// transfer coding other than chunked.
    Declared,
    /// A chunked body whose first chunk-size line is not read yet.
    Chunked,
}

/// A response before it is encoded.
#[derive(Debug)]
pub(super) struct Response {
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: Vec<u8>,
}

impl Response {
    pub(super) fn new(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub(super) fn add_header(&mut self, name: &'static str, value: &'static str) {
        self.headers.push((name, value));
    }

    /// Encodes the status line, the header fields and the body, ready to write.
    fn encode(&self) -> Vec<u8> {
        let mut head = format!(
            "HTTP/1.1 {} {}\r\nDate: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            reason_phrase(self.status),
            httpdate::fmt_http_date(SystemTime::now()),
            self.body.len(),
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}

/// Returns the reason phrase of the status codes the admin endpoint sends.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// Input of the admin thread.
pub(super) enum Message {
    /// A parsed request, and where to send its response.
    Request(Request, SyncSender<Response>),
    /// Ends the admin thread.
    Stop,
}

/// Error reading a request head. Every case except a closed or broken connection gets a
/// response.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error("the client closed the connection before sending a request")]
    Closed,
    #[error("failed to read the request head: {0}")]
    Io(io::Error),
    #[error("timed out after {}s waiting for the request head", HEAD_TIMEOUT.as_secs())]
    TimedOut,
    #[error("the connection closed before the request head was complete")]
    Incomplete,
    #[error("the request head is larger than {MAX_HEAD_BYTES} bytes")]
    TooLarge,
    #[error("the request has more than {MAX_HEADERS} header fields")]
    TooManyHeaders,
    #[error("malformed HTTP request: {0}")]
    Malformed(#[source] httparse::Error),
    #[error("invalid Content-Length {0:?}: expected a decimal number of bytes")]
    InvalidContentLength(String),
    #[error("invalid chunk size in the chunked request body")]
    InvalidChunkSize,
}

impl HeadError {
    /// Returns the response to send, or `None` when the client cannot read one.
    fn response(&self) -> Option<Response> {
        let status = match self {
            HeadError::Closed | HeadError::Io(_) => return None,
            HeadError::TimedOut => 408,
            HeadError::TooLarge | HeadError::TooManyHeaders => 431,
            HeadError::Incomplete
            | HeadError::Malformed(_)
            | HeadError::InvalidContentLength(_)
            | HeadError::InvalidChunkSize => 400,
        };
        Some(Reply::error(status, self.to_string()).into_response())
    }
}

/// The listening socket of the admin endpoint, bound but not yet accepting.
pub(super) struct Listener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl Listener {
    pub(super) fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(Listener { listener, addr })
    }

    /// Returns the bound address, with an ephemeral port resolved.
    pub(super) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

/// The thread that accepts connections and starts a thread for each.
pub(super) struct Acceptor {
    waker: Waker,
    thread: Option<JoinHandle<()>>,
}

impl Acceptor {
    /// Starts accepting on `listener` and sends each parsed request to `messages`.
    pub(super) fn spawn(listener: Listener, messages: Sender<Message>) -> io::Result<Acceptor> {
        let mut listener = listener.listener;
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Waker::new(poll.registry(), WAKER)?;
        let accept = AcceptLoop {
            poll,
            listener,
            messages,
            open: Arc::new(AtomicUsize::new(0)),
            reject_warnings: RateLimit::default(),
            accept_warnings: RateLimit::default(),
        };
        let thread = std::thread::Builder::new()
            .name("chorusd-admin-accept".into())
            .spawn(move || accept.run())?;
        Ok(Acceptor {
            waker,
            thread: Some(thread),
        })
    }

    /// Stops accepting and waits for the thread. Connections already accepted finish on their
    /// own threads, each within its deadlines.
    pub(super) fn stop(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = self.waker.wake() {
            // Without the wake-up the thread would block in poll forever, so it is left
            // running rather than joined.
            error!(error = %e, "failed to wake the admin accept thread");
            return;
        }
        if thread.join().is_err() {
            error!("the admin accept thread panicked");
        }
    }
}

struct AcceptLoop {
    poll: Poll,
    listener: TcpListener,
    messages: Sender<Message>,
    /// Connections being served.
    open: Arc<AtomicUsize>,
    reject_warnings: RateLimit,
    accept_warnings: RateLimit,
}

/// A limit of one log line per [`WARN_INTERVAL`], counting the events in between.
#[derive(Default)]
struct RateLimit {
    last: Option<Instant>,
    events: u64,
}

impl RateLimit {
    /// Counts an event, and returns the events counted since the last line when one is due.
    fn record(&mut self) -> Option<u64> {
        self.events += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_INTERVAL)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.events))
    }
}

impl AcceptLoop {
    fn run(mut self) {
        let mut events = Events::with_capacity(4);
        let mut timeout = None;
        loop {
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    error!(error = %e, "admin endpoint failed to wait for connections");
                    std::thread::sleep(ACCEPT_RETRY);
                }
                continue;
            }
            if events.iter().any(|event| event.token() == WAKER) {
                debug!("admin accept thread stopped");
                return;
            }
            timeout = self.accept_pending();
        }
    }

    /// Accepts until no connection is pending, and returns the poll timeout: `None` normally,
    /// or a short pause to retry after a failed `accept`, which raises no new readiness event.
    fn accept_pending(&mut self) -> Option<Duration> {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(failures) = self.accept_warnings.record() {
                        warn!(error = %e, failures, "admin endpoint failed to accept a connection");
                    }
                    return Some(ACCEPT_RETRY);
                }
            }
        }
    }

    /// Starts a thread for the connection, or rejects it with 503 when too many are open.
    fn admit(&mut self, stream: mio::net::TcpStream, peer: SocketAddr) {
        // mio accepts sockets in non-blocking mode; the connection threads use blocking reads
        // and writes with timeouts.
        let stream = TcpStream::from(stream);
        if let Err(e) = stream.set_nonblocking(false) {
            warn!(%peer, error = %e, "failed to make an admin connection blocking");
            return;
        }
        let Some(slot) = Slot::take(&self.open) else {
            self.reject(stream, peer);
            return;
        };
        let messages = self.messages.clone();
        let spawned = std::thread::Builder::new()
            .name("chorusd-admin-conn".into())
            .spawn(move || serve_connection(stream, peer, &messages, slot));
        if let Err(e) = spawned {
            // The closure, with the stream and the slot, was dropped, so the connection is
            // closed and its slot is free again.
            warn!(%peer, error = %e, "failed to start a thread for an admin connection");
        }
    }

    fn reject(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if let Some(rejected) = self.reject_warnings.record() {
            warn!(
                %peer,
                rejected,
                max = MAX_CONNECTIONS,
                "admin endpoint rejected connections because too many are open"
            );
        }
        let message = format!(
            "the admin endpoint is serving its maximum of {MAX_CONNECTIONS} connections; retry \
             shortly"
        );
        let response = Reply::error(503, message).into_response();
        // The response fits in the empty send buffer of a new socket, so this write does not
        // wait for the client. The write timeout only bounds the unexpected case.
        if let Err(e) = write_response(&mut stream, &response) {
            debug!(%peer, error = %e, "failed to send 503 to an admin connection");
            return;
        }
        discard_received(&mut stream);
    }
}

/// One of the [`MAX_CONNECTIONS`] connection slots, released when dropped.
struct Slot {
    open: Arc<AtomicUsize>,
}

impl Slot {
    fn take(open: &Arc<AtomicUsize>) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_CONNECTIONS).then_some(n + 1)
        })
        .ok()?;
        Some(Slot { open: open.clone() })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reads one request, has the admin thread handle it, and writes the response.
fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    messages: &Sender<Message>,
    _slot: Slot,
) {
    let response = match read_request(&mut stream, peer) {
        Ok(request) => dispatch(request, messages),
        Err(e) => {
            debug!(%peer, error = %e, "admin request rejected");
            match e.response() {
                Some(response) => response,
                None => return,
            }
        }
    };
    if let Err(e) = write_response(&mut stream, &response) {
        debug!(%peer, error = %e, "failed to send an admin response");
        return;
    }
    linger(&mut stream);
}

/// Sends the request to the admin thread and waits for the response.
fn dispatch(request: Request, messages: &Sender<Message>) -> Response {
    let (reply_to, reply) = mpsc::sync_channel(1);
    if messages.send(Message::Request(request, reply_to)).is_err() {
        return Reply::error(503, "the admin endpoint is stopping").into_response();
    }
    match reply.recv_timeout(HANDLER_TIMEOUT) {
        Ok(response) => response,
        Err(RecvTimeoutError::Timeout) => Reply::error(
            503,
            format!(
                "timed out after {}s waiting for the admin thread; retry shortly",
                HANDLER_TIMEOUT.as_secs()
            ),
        )
        .into_response(),
        Err(RecvTimeoutError::Disconnected) => {
            Reply::error(503, "the admin endpoint is stopping").into_response()
        }
    }
}

/// Reads and parses the request head within [`HEAD_TIMEOUT`] and [`MAX_HEAD_BYTES`]. The body is
/// left unread, except that a chunked body is read up to its first chunk-size line, to tell an
/// empty body (as some clients send with POST) from a real one.
fn read_request(stream: &mut TcpStream, peer: SocketAddr) -> Result<Request, HeadError> {
    let deadline = Instant::now() + HEAD_TIMEOUT;
    let mut buf = vec![0u8; MAX_HEAD_BYTES];
    let mut len = 0;
    let mut head: Option<(Request, usize)> = None;
    // Every pass reads at least one byte or returns, so the loop ends after at most
    // MAX_HEAD_BYTES passes, and at the deadline.
    loop {
        let read = read_some(stream, &mut buf[len..], deadline)?;
        if read == 0 {
            return Err(if len == 0 {
                HeadError::Closed
            } else {
                HeadError::Incomplete
            });
        }
        // A blank line can straddle two reads, so the search starts three bytes back.
        let search_from = len.saturating_sub(3);
        len += read;
        if head.is_none() && contains_blank_line(&buf[search_from..len]) {
            head = parse_head(&buf[..len], peer)?;
        }
        if let Some((request, head_len)) = head.take() {
            match finish_request(request, &buf[head_len..len])? {
                Ok(request) => return Ok(request),
                Err(request) => head = Some((request, head_len)),
            }
        }
        if len == buf.len() {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Reads into `buf` before `deadline`, and returns the number of bytes read: 0 at end of stream.
fn read_some(
    stream: &mut TcpStream,
    buf: &mut [u8],
    deadline: Instant,
) -> Result<usize, HeadError> {
    // Interrupted reads retry; each retry either reads, fails or comes closer to the deadline.
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(HeadError::TimedOut);
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(HeadError::Io)?;
        match stream.read(buf) {
            Ok(read) => return Ok(read),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(HeadError::TimedOut),
            Err(e) => return Err(HeadError::Io(e)),
        }
    }
}

/// Completes a parsed head with what follows it: returns the request once its body is known to
/// be empty or not, or gives it back when a chunked body needs more bytes to tell.
fn finish_request(
    mut request: Request,
    after_head: &[u8],
) -> Result<Result<Request, Request>, HeadError> {
    if request.framing != Framing::Chunked {
        return Ok(Ok(request));
    }
    match chunked_body_is_empty(after_head)? {
        Some(empty) => {
            request.framing = if empty {
                Framing::None
            } else {
                Framing::Declared
            };
            Ok(Ok(request))
        }
        None => Ok(Err(request)),
    }
}

/// Returns whether a chunked body is empty: a last chunk (`0`) and the end of the trailer
/// section. Returns `None` while the bytes do not tell yet.
fn chunked_body_is_empty(bytes: &[u8]) -> Result<Option<bool>, HeadError> {
    let (size_line, size) = match httparse::parse_chunk_size(bytes) {
        Ok(httparse::Status::Complete(parsed)) => parsed,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::InvalidChunkSize) => return Err(HeadError::InvalidChunkSize),
    };
    if size > 0 {
        return Ok(Some(false));
    }
    let trailers = &bytes[size_line..];
    if trailers.starts_with(b"\r\n") || trailers.starts_with(b"\n") || contains_blank_line(trailers)
    {
        return Ok(Some(true));
    }
    Ok(None)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Returns whether `bytes` contain the blank line that ends a head, with CRLF or bare LF line
/// endings, both of which `httparse` accepts.
fn contains_blank_line(bytes: &[u8]) -> bool {
    bytes.windows(2).any(|w| w == b"\n\n") || bytes.windows(3).any(|w| w == b"\n\r\n")
}

/// Parses a head, and returns the request with the length of the head, or `None` when the head
/// is not complete yet.
fn parse_head(bytes: &[u8], peer: SocketAddr) -> Result<Option<(Request, usize)>, HeadError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut fields);
    let head_len = match parsed.parse(bytes) {
        Ok(httparse::Status::Complete(head_len)) => head_len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooManyHeaders),
        Err(e) => return Err(HeadError::Malformed(e)),
    };
    // A complete parse sets the method and the path; the check only avoids an unwrap.
    let (Some(method), Some(target)) = (parsed.method, parsed.path) else {
        return Err(HeadError::Malformed(httparse::Error::Token));
    };
    let framing = body_framing(parsed.headers)?;
    let headers = parsed
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let request = Request {
        method: method.to_owned(),
        target: target.to_owned(),
        headers,
        peer,
        framing,
    };
    Ok(Some((request, head_len)))
}

/// Returns how the head declares a body. Transfer-Encoding takes precedence over
/// Content-Length, as RFC 9112 section 6.3 requires. The length is never converted to a number,
/// so no value can overflow.
fn body_framing(headers: &[httparse::Header<'_>]) -> Result<Framing, HeadError> {
    let mut transfer_coding = None;
    let mut sized = false;
    for header in headers {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coding = Some(header.value);
        } else if header.name.eq_ignore_ascii_case("content-length") {
            let value = header.value.trim_ascii();
            if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
                let shown = String::from_utf8_lossy(header.value).into_owned();
                return Err(HeadError::InvalidContentLength(shown));
            }
            sized |= value.iter().any(|&digit| digit != b'0');
        }
    }
    let Some(codings) = transfer_coding else {
        return Ok(if sized {
            Framing::Declared
        } else {
            Framing::None
        });
    };
    // Only a body whose final coding is chunked can be checked for emptiness.
    let last = codings.rsplit(|&b| b == b',').next().unwrap_or_default();
    if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
        Ok(Framing::Chunked)
    } else {
        Ok(Framing::Declared)
    }
}

fn write_response(stream: &mut TcpStream, response: &Response) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.write_all(&response.encode())?;
    stream.flush()
}

/// Ends the connection after the response. Closing a socket with unread bytes resets the
/// connection, which can discard the response before the client reads it, so this sends FIN and
/// then discards what still arrives, up to [`LINGER_MAX_BYTES`] within [`LINGER_TIMEOUT`].
fn linger(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() {
        return;
    }
    let deadline = Instant::now() + LINGER_TIMEOUT;
    let mut discarded = 0;
    let mut buf = [0u8; 4096];
    while discarded < LINGER_MAX_BYTES {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.set_read_timeout(Some(remaining)).is_err() {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(read) => discarded += read,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// Sends FIN and discards the bytes already received, without waiting for more, so that the
/// close that follows is less likely to reset the connection. The accept thread uses this
/// because it must not wait for a client.
fn discard_received(stream: &mut TcpStream) {
    if stream.shutdown(Shutdown::Write).is_err() || stream.set_nonblocking(true).is_err() {
        return;
    }
    let mut discarded = 0;
    let mut buf = [0u8; 4096];
    while discarded < LINGER_MAX_BYTES {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(read) => discarded += read,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "127.0.0.1:5000".parse().unwrap()
    }

    fn parse(head: &str) -> Result<Option<Request>, HeadError> {
        Ok(parse_head(head.as_bytes(), peer())?.map(|(request, _)| request))
    }

    #[test]
    fn head_parses_method_target_and_headers() {
        let head =
            "GET /v1/connections?topic=a HTTP/1.1\r\nHost: x\r\nauthorization: Bearer t\r\n\r\n";
        let request = parse(head).unwrap().unwrap();
        assert_eq!(request.method(), "GET");
        assert_eq!(request.target(), "/v1/connections?topic=a");
        assert_eq!(request.header("Authorization"), Some("Bearer t"));
        assert_eq!(request.header("Cookie"), None);
        assert_eq!(request.peer(), peer());
    }

    #[test]
    fn partial_head_needs_more_bytes() {
        assert!(parse("GET /v1/status HTTP/1.1\r\nHost:").unwrap().is_none());
    }

    #[test]
    fn huge_content_length_is_body() {
        let head = "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n";
        assert!(parse(head).unwrap().unwrap().has_body());
    }

    #[test]
    fn zero_content_length_is_no_body() {
        let head = "GET / HTTP/1.1\r\nContent-Length: 000\r\n\r\n";
        assert!(!parse(head).unwrap().unwrap().has_body());
    }

    #[test]
    fn chunked_waits_for_first_chunk() {
        let head = "POST /v1/reload HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let request = parse(head).unwrap().unwrap();
        assert_eq!(request.framing, Framing::Chunked);
    }

    #[test]
    fn empty_chunked_body_is_no_body() {
        assert_eq!(chunked_body_is_empty(b"0\r\n\r\n").unwrap(), Some(true));
        assert_eq!(
            chunked_body_is_empty(b"0\r\nX-Trailer: 1\r\n\r\n").unwrap(),
            Some(true)
        );
    }

    #[test]
    fn nonempty_chunked_body_is_body() {
        assert_eq!(chunked_body_is_empty(b"5\r\nhello").unwrap(), Some(false));
    }

    #[test]
    fn partial_chunked_body_needs_more_bytes() {
        assert_eq!(chunked_body_is_empty(b"").unwrap(), None);
        assert_eq!(chunked_body_is_empty(b"0\r\n").unwrap(), None);
        assert_eq!(
            chunked_body_is_empty(b"0\r\nX-Trailer: 1\r\n").unwrap(),
            None
        );
    }

    #[test]
    fn gzip_transfer_coding_is_body() {
        let head = "POST /v1/reload HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert!(parse(head).unwrap().unwrap().has_body());
    }

    #[test]
    fn non_numeric_content_length_is_invalid() {
        let head = "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n";
        assert!(matches!(
            parse(head),
            Err(HeadError::InvalidContentLength(_))
        ));
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(matches!(
            parse("\x16\x03\x01 hello\r\n\r\n"),
            Err(HeadError::Malformed(_))
        ));
    }

    #[test]
    fn blank_line_found_with_crlf_and_lf() {
        assert!(contains_blank_line(b"x\r\n\r\n"));
        assert!(contains_blank_line(b"x\n\n"));
        assert!(!contains_blank_line(b"x\r\ny\r\n"));
    }

    #[test]
    fn error_responses_carry_status() {
        let cases = [
            (HeadError::TimedOut, 408),
            (HeadError::TooLarge, 431),
            (HeadError::Incomplete, 400),
        ];
        for (error, status) in cases {
            assert_eq!(error.response().unwrap().status, status, "{error}");
        }
        assert!(HeadError::Closed.response().is_none());
    }

    #[test]
    fn response_closes_connection_and_counts_body() {
        let mut response = Response::new(404, b"{}\n".to_vec());
        response.add_header("Content-Type", "application/json");
        let text = String::from_utf8(response.encode()).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
        assert!(text.contains("\r\nContent-Length: 3\r\n"), "{text}");
        assert!(text.contains("\r\nConnection: close\r\n"), "{text}");
        assert!(
            text.contains("\r\nContent-Type: application/json\r\n"),
            "{text}"
        );
        assert!(text.ends_with("\r\n\r\n{}\n"), "{text}");
    }
}
