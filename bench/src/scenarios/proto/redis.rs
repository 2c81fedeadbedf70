//! Redis publish/subscribe over RESP2: `SUBSCRIBE` and `PUBLISH` as arrays of bulk strings, and
//! the replies and pushed messages they bring.
//!
//! Written by hand rather than with the `redis` crate: its blocking connection owns its socket,
//! so it cannot run inside the bench's non-blocking connection pool, and its pub/sub reader
//! copies every message into owned values. RESP2 needs only a small reader and writer.

use std::fmt::Write as _;
use std::ops::Range;

use bytes::{BufMut, Bytes, BytesMut};

use super::{find_crlf, Incoming, Role, Session, SessionConfig, SessionError, MAX_LINE};

/// Deepest nesting of RESP arrays accepted; pub/sub replies are flat arrays.
const MAX_DEPTH: usize = 2;

/// Largest bulk string accepted, in bytes.
const MAX_BULK: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub(super) struct RedisSession {
    role: Role,
    config: SessionConfig,
    ready: bool,
    /// Key of the next publish. Redis replies to commands in order, so the n-th integer reply
    /// is the reply to the n-th publish.
    next_publish: u64,
    next_reply: u64,
}

/// One parsed RESP value; strings are byte ranges into the parsed message.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Simple(Range<usize>),
    Error(Range<usize>),
    Integer(i64),
    Bulk(Option<Range<usize>>),
    Array(Option<Vec<Value>>),
}

impl RedisSession {
    pub(super) fn new(config: &SessionConfig, role: Role) -> RedisSession {
        RedisSession {
            role,
            config: config.clone(),
            ready: false,
            next_publish: 0,
            next_reply: 0,
        }
    }

    fn on_value(
        &mut self,
        message: &Bytes,
        value: Value,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        let text = |range: &Range<usize>| String::from_utf8_lossy(&message[range.clone()]);
        match value {
            Value::Simple(range) if !self.ready && &message[range.clone()] == b"PONG" => {
                self.ready = true;
                events.push(Incoming::Ready { start: None });
            }
            Value::Error(range) => return Err(SessionError::Server(text(&range).into_owned())),
            Value::Integer(_) if self.role == Role::Publisher => {
                events.push(Incoming::Ack {
                    key: self.next_reply,
                    accepted: true,
                });
                self.next_reply += 1;
            }
            Value::Array(Some(items)) => self.on_push(message, &items, events)?,
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected reply {other:?}"
                )))
            }
        }
        Ok(())
    }

    /// Handles a pushed pub/sub array: `subscribe` confirmations and `message` deliveries.
    fn on_push(
        &mut self,
        message: &Bytes,
        items: &[Value],
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        let bulk = |i: usize| match items.get(i) {
            Some(Value::Bulk(Some(range))) => Some(range.clone()),
            _ => None,
        };
        let kind = bulk(0).map(|r| message[r].to_ascii_lowercase());
        match kind.as_deref() {
            Some(b"subscribe") if !self.ready => {
                self.ready = true;
                events.push(Incoming::Ready { start: None });
            }
            Some(b"message") => {
                let range = bulk(2).ok_or_else(|| {
                    SessionError::Protocol("message push without a payload".into())
                })?;
                events.push(Incoming::Message {
                    payload: message.slice(range),
                    offset: None,
                });
            }
            _ => return Err(SessionError::Protocol(format!("unexpected push {items:?}"))),
        }
        Ok(())
    }
}

impl Session for RedisSession {
    fn start(&mut self, out: &mut BytesMut) {
        match self.role {
            Role::Publisher => put_command(out, &[b"PING"]),
            Role::Subscriber(index) => {
                let channel = self.config.topic(index);
                put_command(out, &[b"SUBSCRIBE", channel.as_bytes()]);
            }
        }
    }

    fn publish(&mut self, topic: usize, payload: &[u8], out: &mut BytesMut) -> Option<u64> {
        let channel = self.config.topic(topic);
        put_command(out, &[b"PUBLISH", channel.as_bytes(), payload]);
        let key = self.next_publish;
        self.next_publish += 1;
        Some(key)
    }

    fn barrier(&mut self, _out: &mut BytesMut) -> bool {
        false
    }

    fn receive(
        &mut self,
        input: &mut BytesMut,
        _out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        loop {
            let Some((value, len)) = parse(input, 0, 0)? else {
                return Ok(());
            };
            let message = input.split_to(len).freeze();
            self.on_value(&message, value, events)?;
        }
    }

    fn clone_box(&self) -> Box<dyn Session> {
        Box::new(self.clone())
    }
}

/// Appends a command as a RESP array of bulk strings.
fn put_command(out: &mut BytesMut, args: &[&[u8]]) {
    let mut head = String::with_capacity(16);
    let _ = write!(head, "*{}\r\n", args.len());
    out.put_slice(head.as_bytes());
    for arg in args {
        head.clear();
        let _ = write!(head, "${}\r\n", arg.len());
        out.put_slice(head.as_bytes());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

/// Parses the value that starts at `at` in `buf`; returns it with the position just past it, or
/// `None` while it is incomplete.
fn parse(buf: &[u8], at: usize, depth: usize) -> Result<Option<(Value, usize)>, SessionError> {
    let Some(line_len) = find_crlf(&buf[at..]) else {
        if buf.len() - at > MAX_LINE {
            return Err(SessionError::Protocol("RESP line too long".into()));
        }
        return Ok(None);
    };
    if line_len == 0 {
        return Err(SessionError::Protocol("empty RESP line".into()));
    }
    let line = at + 1..at + line_len;
    let next = at + line_len + 2;
    match buf[at] {
        b'+' => Ok(Some((Value::Simple(line), next))),
        b'-' => Ok(Some((Value::Error(line), next))),
        b':' => Ok(Some((Value::Integer(number(&buf[line])?), next))),
        b'$' => parse_bulk(buf, number(&buf[line])?, next),
        b'*' => parse_array(buf, number(&buf[line])?, next, depth),
        other => Err(SessionError::Protocol(format!(
            "unknown RESP type byte {other:#04x}"
        ))),
    }
}

fn parse_bulk(buf: &[u8], len: i64, at: usize) -> Result<Option<(Value, usize)>, SessionError> {
    if len < 0 {
        return Ok(Some((Value::Bulk(None), at)));
    }
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BULK)
        .ok_or_else(|| SessionError::Protocol(format!("bulk string of {len} bytes")))?;
    let end = at + len;
    if buf.len() < end + 2 {
        return Ok(None);
    }
    if &buf[end..end + 2] != b"\r\n" {
        return Err(SessionError::Protocol(
            "bulk string not followed by CRLF".into(),
        ));
    }
    Ok(Some((Value::Bulk(Some(at..end)), end + 2)))
}

fn parse_array(
    buf: &[u8],
    count: i64,
    mut at: usize,
    depth: usize,
) -> Result<Option<(Value, usize)>, SessionError> {
    if count < 0 {
        return Ok(Some((Value::Array(None), at)));
    }
    if depth >= MAX_DEPTH || count > 64 {
        return Err(SessionError::Protocol(format!(
            "RESP array of {count} items at depth {depth}"
        )));
    }
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let Some((item, next)) = parse(buf, at, depth + 1)? else {
            return Ok(None);
        };
        items.push(item);
        at = next;
    }
    Ok(Some((Value::Array(Some(items)), at)))
}

fn number(digits: &[u8]) -> Result<i64, SessionError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            SessionError::Protocol(format!(
                "invalid RESP number {:?}",
                String::from_utf8_lossy(digits)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::proto::{test_config, BrokerKind};

    fn session(role: Role) -> RedisSession {
        RedisSession::new(&test_config(BrokerKind::Redis, &["bench/r"], 0), role)
    }

    fn receive(session: &mut RedisSession, bytes: &[u8]) -> Vec<Incoming> {
        let mut input = BytesMut::from(bytes);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        events
    }

    #[test]
    fn subscribe_command_is_resp_array() {
        let mut out = BytesMut::new();
        session(Role::Subscriber(0)).start(&mut out);
        assert_eq!(&out[..], b"*2\r\n$9\r\nSUBSCRIBE\r\n$7\r\nbench/r\r\n");
    }

    #[test]
    fn confirmation_then_message() {
        let mut s = session(Role::Subscriber(0));
        let bytes = b"*3\r\n$9\r\nsubscribe\r\n$7\r\nbench/r\r\n:1\r\n\
                      *3\r\n$7\r\nmessage\r\n$7\r\nbench/r\r\n$4\r\na\r\nb\r\n";
        let events = receive(&mut s, bytes);
        assert_eq!(events[0], Incoming::Ready { start: None });
        assert_eq!(
            events[1],
            Incoming::Message {
                payload: Bytes::from_static(b"a\r\nb"),
                offset: None
            }
        );
    }

    #[test]
    fn partial_message_waits() {
        let mut s = session(Role::Subscriber(0));
        let bytes = b"*3\r\n$7\r\nmessage\r\n$7\r\nbench/r\r\n$4\r\nab";
        let mut input = BytesMut::from(&bytes[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        s.receive(&mut input, &mut out, &mut events).unwrap();
        assert!(events.is_empty());
        assert_eq!(input.len(), bytes.len());
    }

    #[test]
    fn publish_replies_ack_in_order() {
        let mut s = session(Role::Publisher);
        let mut out = BytesMut::new();
        assert_eq!(s.publish(0, b"x", &mut out), Some(0));
        assert_eq!(s.publish(0, b"y", &mut out), Some(1));
        let events = receive(&mut s, b"+PONG\r\n:3\r\n:3\r\n");
        assert_eq!(events[0], Incoming::Ready { start: None });
        assert_eq!(
            events[2],
            Incoming::Ack {
                key: 1,
                accepted: true
            }
        );
    }

    #[test]
    fn error_reply_fails_session() {
        let mut s = session(Role::Publisher);
        let mut input = BytesMut::from(&b"-ERR max number of clients reached\r\n"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        let result = s.receive(&mut input, &mut out, &mut events);
        assert!(matches!(result, Err(SessionError::Server(m)) if m.contains("max number")));
    }
}
