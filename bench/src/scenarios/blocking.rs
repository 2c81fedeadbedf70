//! The handshake of a session over a blocking socket, for publishers and slow subscribers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::BytesMut;

use super::proto::{Incoming, Session};

/// Sends the session's opening bytes and reads until it is ready, within `timeout`.
///
/// Returns the bytes read past the message that made it ready, and the subscription's first
/// offset where the broker assigns offsets. Leaves the socket's read timeout changed.
///
/// NOTE: messages parsed in the same read as the confirmation are dropped. The scenarios start
/// publishing only once every subscriber is ready, so none arrive that early.
pub(crate) fn handshake(
    stream: &mut TcpStream,
    session: &mut dyn Session,
    timeout: Duration,
) -> anyhow::Result<(BytesMut, Option<u64>)> {
    let mut out = BytesMut::new();
    session.start(&mut out);
    stream
        .write_all(&out)
        .context("failed to send the handshake")?;
    out.clear();

    let deadline = Instant::now() + timeout;
    let mut input = BytesMut::new();
    let mut events = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("handshake timed out after {:.1} s", timeout.as_secs_f64());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut buf).context("handshake read failed")?;
        if n == 0 {
            bail!("the broker closed the connection during the handshake");
        }
        input.extend_from_slice(&buf[..n]);
        session.receive(&mut input, &mut out, &mut events)?;
        if !out.is_empty() {
            stream.write_all(&out)?;
            out.clear();
        }
        let ready = events.iter().find_map(|e| match e {
            Incoming::Ready { start } => Some(*start),
            _ => None,
        });
        if let Some(start) = ready {
            return Ok((input, start));
        }
    }
}
