//! Slow subscribers: one blocking thread each, a small receive buffer, small reads and a sleep
//! after each read while throttled, so that the broker's queue for them fills up.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::BytesMut;

use super::blocking;
use super::load::CheckHandler;
use super::pool::Handler;
use super::proto::{new_session, Incoming, Role, SessionConfig};
use super::shared::LoadShared;
use super::sockets;
use crate::state::ErrorLog;

/// Reading pattern of a slow subscriber.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub(crate) struct SlowReading {
    /// SO_RCVBUF requested before connecting, in bytes; the kernel doubles it for overhead
    /// and applies its minimum.
    pub(crate) rcvbuf: usize,
    /// Bytes asked for per read.
    pub(crate) read_bytes: usize,
    /// Sleep after each read while throttled.
    pub(crate) delay: Duration,
    /// Throttling starts this long after publishing starts...
    pub(crate) from: Duration,
    /// ...and ends this long after it; outside that the subscriber reads at full speed.
    pub(crate) until: Duration,
}

/// One slow subscriber's connection.
pub(crate) struct SlowSpec {
    pub(crate) server: SocketAddr,
    pub(crate) session: SessionConfig,
    pub(crate) topic: usize,
    pub(crate) conn_id: usize,
    pub(crate) reading: SlowReading,
    pub(crate) connect_timeout: Duration,
}

/// Outcome of a slow subscriber thread.
pub(crate) struct SlowOutcome {
    pub(crate) handler: CheckHandler,
    pub(crate) errors: ErrorLog,
}

/// Connects and subscribes, then starts the reading thread.
pub(crate) fn start(
    spec: SlowSpec,
    mut handler: CheckHandler,
    shared: Arc<LoadShared>,
) -> anyhow::Result<JoinHandle<SlowOutcome>> {
    let id = spec.conn_id;
    let mut stream =
        sockets::connect_blocking(spec.server, Some(spec.reading.rcvbuf), spec.connect_timeout)
            .with_context(|| {
                format!("slow subscriber {id}: failed to connect to {}", spec.server)
            })?;
    let mut session = new_session(&spec.session, Role::Subscriber(spec.topic), id);
    let (input, start) = blocking::handshake(&mut stream, session.as_mut(), spec.connect_timeout)
        .with_context(|| format!("slow subscriber {id}"))?;
    handler.on_ready(0, start);
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;

    let reading = spec.reading;
    let thread = thread::Builder::new()
        .name(format!("slow-{id}"))
        .spawn(move || {
            let mut errors = ErrorLog::default();
            let mut reader = Reader {
                stream,
                session,
                input,
                handler,
                shared,
                reading,
            };
            if let Err(e) = reader.run() {
                errors.push(format!("slow subscriber {id}: {e:#}"));
            }
            SlowOutcome {
                handler: reader.handler,
                errors,
            }
        })?;
    Ok(thread)
}

struct Reader {
    stream: std::net::TcpStream,
    session: Box<dyn super::proto::Session>,
    input: BytesMut,
    handler: CheckHandler,
    shared: Arc<LoadShared>,
    reading: SlowReading,
}

impl Reader {
    fn run(&mut self) -> anyhow::Result<()> {
        let mut buf = vec![0u8; self.reading.read_bytes.max(1)];
        let mut out = BytesMut::new();
        let mut events = Vec::new();
        while !self.shared.should_stop() {
            self.session
                .receive(&mut self.input, &mut out, &mut events)?;
            for event in events.drain(..) {
                if let Incoming::Message { payload, offset } = event {
                    self.handler.on_message(0, &payload, offset);
                }
            }
            self.handler.end_iteration();
            if !out.is_empty() {
                self.stream.write_all(&out).context("write failed")?;
                out.clear();
            }
            match self.stream.read(&mut buf) {
                Ok(0) => anyhow::bail!("closed by the broker"),
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("read failed"),
            }
            if self.throttled() {
                thread::sleep(self.reading.delay);
            }
        }
        Ok(())
    }

    fn throttled(&self) -> bool {
        if self.shared.start_nanos() == 0 {
            return false;
        }
        let elapsed = Instant::now().saturating_duration_since(self.shared.start());
        elapsed >= self.reading.from && elapsed < self.reading.until
    }
}
