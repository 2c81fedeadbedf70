//! NATS core publish/subscribe, over the text protocol of NATS server 2.x: `CONNECT`, `SUB`,
//! `PUB`, `PING`/`PONG` from the client; `INFO`, `MSG`, `PING`/`PONG`, `+OK` and `-ERR` from the
//! server. Headers (`HPUB`/`HMSG`) and JetStream are not used.
//!
//! Written by hand on the bench's own sockets rather than with the `async-nats` crate, which
//! needs tokio, or the `nats` crate, whose blocking client is deprecated: the subset a load
//! generator needs is a few dozen lines, and it then runs on the same threads and sockets as
//! the other brokers' clients.

use std::fmt::Write as _;

use bytes::{Buf, BufMut, BytesMut};

use super::{find_crlf, Incoming, Role, Session, SessionConfig, SessionError, MAX_LINE};

/// Subscription id the bench uses; each connection has at most one subscription.
const SID: &str = "1";

#[derive(Debug, Clone)]
pub(super) struct NatsSession {
    role: Role,
    config: SessionConfig,
    /// Whether the PONG that confirms the handshake (and subscription) has arrived.
    ready: bool,
}

impl NatsSession {
    pub(super) fn new(config: &SessionConfig, role: Role) -> NatsSession {
        NatsSession {
            role,
            config: config.clone(),
            ready: false,
        }
    }

    /// Handles one control line (without its CRLF); returns the payload length when it is a
    /// `MSG` line, whose payload follows.
    fn on_line(
        &mut self,
        line: &[u8],
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<Option<usize>, SessionError> {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_ascii_whitespace();
        let verb = words.next().unwrap_or("").to_ascii_uppercase();
        match verb.as_str() {
            "MSG" => {
                // MSG <subject> <sid> [reply-to] <#bytes>
                let rest: Vec<&str> = words.collect();
                if !(3..=4).contains(&rest.len()) {
                    return Err(SessionError::Protocol(format!("invalid MSG line {text:?}")));
                }
                let len = rest[rest.len() - 1].parse::<usize>().map_err(|_| {
                    SessionError::Protocol(format!("invalid MSG length in {text:?}"))
                })?;
                Ok(Some(len))
            }
            "PING" => {
                out.put_slice(b"PONG\r\n");
                events.push(Incoming::Ping);
                Ok(None)
            }
            "PONG" if !self.ready => {
                self.ready = true;
                events.push(Incoming::Ready { start: None });
                Ok(None)
            }
            "PONG" => {
                events.push(Incoming::BarrierReply);
                Ok(None)
            }
            "INFO" | "+OK" => Ok(None),
            "-ERR" => Err(SessionError::Server(text.into_owned())),
            _ => Err(SessionError::Protocol(format!("unexpected line {text:?}"))),
        }
    }
}

impl Session for NatsSession {
    fn start(&mut self, out: &mut BytesMut) {
        let name =
            serde_json::to_string(&self.config.client_name).unwrap_or_else(|_| "\"\"".into());
        let mut text = format!(
            "CONNECT {{\"verbose\":false,\"pedantic\":false,\"name\":{name},\
             \"lang\":\"rust\",\"version\":\"0.1.0\",\"protocol\":1,\"echo\":true}}\r\n"
        );
        if let Role::Subscriber(index) = self.role {
            let subject = self.config.topic(index);
            let _ = write!(text, "SUB {subject} {SID}\r\n");
        }
        // The PONG to this PING shows that the server has processed CONNECT and SUB.
        text.push_str("PING\r\n");
        out.put_slice(text.as_bytes());
    }

    fn publish(&mut self, topic: usize, payload: &[u8], out: &mut BytesMut) -> Option<u64> {
        let subject = self.config.topic(topic);
        let mut line = String::with_capacity(subject.len() + 16);
        let _ = write!(line, "PUB {subject} {}\r\n", payload.len());
        out.put_slice(line.as_bytes());
        out.put_slice(payload);
        out.put_slice(b"\r\n");
        None
    }

    fn barrier(&mut self, out: &mut BytesMut) -> bool {
        out.put_slice(b"PING\r\n");
        true
    }

    fn receive(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        loop {
            let Some(end) = find_crlf(input) else {
                if input.len() > MAX_LINE {
                    return Err(SessionError::Protocol("control line too long".into()));
                }
                return Ok(());
            };
            let Some(len) = self.on_line(&input[..end], out, events)? else {
                input.advance(end + 2);
                continue;
            };
            // The payload and its CRLF must be complete before the line is consumed.
            let total = end + 2 + len + 2;
            if input.len() < total {
                input.reserve(total - input.len());
                return Ok(());
            }
            input.advance(end + 2);
            let payload = input.split_to(len).freeze();
            if &input[..2] != b"\r\n" {
                return Err(SessionError::Protocol(
                    "MSG payload not followed by CRLF".into(),
                ));
            }
            input.advance(2);
            events.push(Incoming::Message {
                payload,
                offset: None,
            });
        }
    }

    fn clone_box(&self) -> Box<dyn Session> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::scenarios::proto::{test_config, BrokerKind};

    fn subscriber() -> NatsSession {
        let config = test_config(BrokerKind::Nats, &["bench/fanout/0"], 0);
        NatsSession::new(&config, Role::Subscriber(0))
    }

    #[test]
    fn start_subscribes_with_dotted_subject() {
        let mut out = BytesMut::new();
        subscriber().start(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        assert!(text.starts_with("CONNECT {"), "{text}");
        assert!(
            text.contains("\r\nSUB bench.fanout.0 1\r\nPING\r\n"),
            "{text}"
        );
    }

    #[test]
    fn later_pongs_are_barrier_replies() {
        let mut session = subscriber();
        let mut input = BytesMut::from(&b"INFO {\"x\":1}\r\nPONG\r\nPONG\r\n"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(
            events,
            vec![Incoming::Ready { start: None }, Incoming::BarrierReply]
        );
    }

    #[test]
    fn msg_waits_for_whole_payload() {
        let mut session = subscriber();
        let mut input = BytesMut::from(&b"MSG bench.fanout.0 1 5\r\nhel"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert!(events.is_empty());
        input.extend_from_slice(b"lo\r\nMSG bench.fanout.0 1 _INBOX.x 2\r\nab\r\n");
        session.receive(&mut input, &mut out, &mut events).unwrap();
        let payloads: Vec<Incoming> = [&b"hello"[..], b"ab"]
            .iter()
            .map(|p| Incoming::Message {
                payload: Bytes::copy_from_slice(p),
                offset: None,
            })
            .collect();
        assert_eq!(events, payloads);
        assert!(input.is_empty());
    }

    #[test]
    fn payload_may_contain_crlf() {
        let mut session = subscriber();
        let mut input = BytesMut::from(&b"MSG s 1 4\r\na\r\nb\r\n"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(
            events,
            vec![Incoming::Message {
                payload: Bytes::from_static(b"a\r\nb"),
                offset: None
            }]
        );
    }

    #[test]
    fn server_ping_gets_pong() {
        let mut session = subscriber();
        let mut input = BytesMut::from(&b"PING\r\n"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(&out[..], b"PONG\r\n");
        assert_eq!(events, vec![Incoming::Ping]);
    }

    #[test]
    fn err_line_fails_session() {
        let mut session = subscriber();
        let mut input = BytesMut::from(&b"-ERR 'Slow Consumer Detected'\r\n"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        let result = session.receive(&mut input, &mut out, &mut events);
        assert!(matches!(result, Err(SessionError::Server(m)) if m.contains("Slow Consumer")));
    }

    #[test]
    fn publish_writes_pub_line() {
        let config = test_config(BrokerKind::Nats, &["a/b"], 0);
        let mut session = NatsSession::new(&config, Role::Publisher);
        let mut out = BytesMut::new();
        assert_eq!(session.publish(0, b"xyz", &mut out), None);
        assert_eq!(&out[..], b"PUB a.b 3\r\nxyz\r\n");
    }
}
