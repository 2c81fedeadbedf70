//! MQTT 3.1.1 (OASIS standard, 2014) for brokers such as Mosquitto: CONNECT with a clean
//! session, SUBSCRIBE to one topic filter, PUBLISH at QoS 0 or 1, PUBACK, PINGREQ and
//! PINGRESP.
//!
//! Written by hand rather than with `rumqttc`, which runs on tokio: the packets used here take
//! a hundred lines, and a hand-written codec lets MQTT run on the same blocking publisher threads
//! and non-blocking connection pool as every other broker's client.

use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, BytesMut};

use super::{Incoming, Role, Session, SessionConfig, SessionError};

/// Keepalive announced in CONNECT. The pool sends PINGREQ at half of it.
const KEEPALIVE: Duration = Duration::from_secs(60);

/// Largest packet accepted, in bytes; MQTT allows 256 MiB.
const MAX_PACKET: usize = 16 * 1024 * 1024;

/// Packet type nibbles.
mod packet {
    pub(super) const CONNECT: u8 = 1;
    pub(super) const CONNACK: u8 = 2;
    pub(super) const PUBLISH: u8 = 3;
    pub(super) const PUBACK: u8 = 4;
    pub(super) const SUBSCRIBE: u8 = 8;
    pub(super) const SUBACK: u8 = 9;
    pub(super) const PINGREQ: u8 = 12;
    pub(super) const PINGRESP: u8 = 13;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Connack,
    Suback,
    Ready,
}

#[derive(Debug, Clone)]
pub(super) struct MqttSession {
    role: Role,
    config: SessionConfig,
    qos: u8,
    client_id: String,
    state: State,
    /// Next packet identifier; 0 is not a valid identifier.
    next_packet_id: u16,
    next_ping: Option<Instant>,
}

impl MqttSession {
    pub(super) fn new(config: &SessionConfig, role: Role, conn: usize) -> MqttSession {
        MqttSession {
            role,
            config: config.clone(),
            qos: config.mqtt_qos.min(1),
            client_id: format!("{}-{conn}", config.client_name),
            state: State::Connack,
            next_packet_id: 1,
            next_ping: None,
        }
    }

    fn take_packet_id(&mut self) -> u16 {
        let id = self.next_packet_id;
        self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
        id
    }

    fn topic(&self, index: usize) -> &str {
        self.config.topic(index)
    }

    fn on_packet(
        &mut self,
        header: u8,
        mut body: bytes::Bytes,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        match header >> 4 {
            packet::CONNACK if self.state == State::Connack => self.on_connack(&body, out, events),
            packet::SUBACK if self.state == State::Suback => {
                if body.len() < 3 || body[2] == 0x80 {
                    return Err(SessionError::Server("SUBSCRIBE rejected".into()));
                }
                self.state = State::Ready;
                events.push(Incoming::Ready { start: None });
                Ok(())
            }
            packet::PUBLISH => {
                let qos = (header >> 1) & 0b11;
                let topic_len = take_u16(&mut body)? as usize;
                if body.len() < topic_len {
                    return Err(SessionError::Protocol("PUBLISH topic is truncated".into()));
                }
                body.advance(topic_len);
                if qos > 0 {
                    let id = take_u16(&mut body)?;
                    put_puback(out, id);
                }
                events.push(Incoming::Message {
                    payload: body,
                    offset: None,
                });
                Ok(())
            }
            packet::PUBACK => {
                let id = take_u16(&mut body)?;
                events.push(Incoming::Ack {
                    key: u64::from(id),
                    accepted: true,
                });
                Ok(())
            }
            packet::PINGRESP => {
                events.push(Incoming::BarrierReply);
                Ok(())
            }
            other => Err(SessionError::Protocol(format!(
                "unexpected packet type {other} in state {:?}",
                self.state
            ))),
        }
    }

    fn on_connack(
        &mut self,
        body: &[u8],
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        match body.get(1) {
            Some(0) => {}
            Some(code) => {
                return Err(SessionError::Server(format!(
                    "CONNECT refused with return code {code}"
                )))
            }
            None => return Err(SessionError::Protocol("CONNACK is truncated".into())),
        }
        match self.role {
            Role::Publisher => {
                self.state = State::Ready;
                events.push(Incoming::Ready { start: None });
            }
            Role::Subscriber(index) => {
                let id = self.take_packet_id();
                let topic = self.topic(index).to_owned();
                let mut body = BytesMut::new();
                body.put_u16(id);
                put_str(&mut body, &topic);
                body.put_u8(self.qos);
                put_packet(out, (packet::SUBSCRIBE << 4) | 0b0010, &body);
                self.state = State::Suback;
            }
        }
        Ok(())
    }
}

impl Session for MqttSession {
    fn start(&mut self, out: &mut BytesMut) {
        let mut body = BytesMut::new();
        put_str(&mut body, "MQTT");
        body.put_u8(4); // protocol level of 3.1.1
        body.put_u8(0b0000_0010); // clean session, no will, no credentials
        body.put_u16(KEEPALIVE.as_secs() as u16);
        put_str(&mut body, &self.client_id);
        put_packet(out, packet::CONNECT << 4, &body);
        self.state = State::Connack;
    }

    fn publish(&mut self, topic: usize, payload: &[u8], out: &mut BytesMut) -> Option<u64> {
        let mut head = BytesMut::with_capacity(64);
        put_str(&mut head, self.topic(topic));
        let id = (self.qos > 0).then(|| self.take_packet_id());
        if let Some(id) = id {
            head.put_u16(id);
        }
        let header = (packet::PUBLISH << 4) | (self.qos << 1);
        out.put_u8(header);
        put_remaining_len(out, head.len() + payload.len());
        out.put_slice(&head);
        out.put_slice(payload);
        id.map(u64::from)
    }

    fn barrier(&mut self, out: &mut BytesMut) -> bool {
        put_packet(out, packet::PINGREQ << 4, &[]);
        true
    }

    fn tick(&mut self, now: Instant, out: &mut BytesMut) {
        let due = *self.next_ping.get_or_insert(now + KEEPALIVE / 2);
        if now >= due {
            put_packet(out, packet::PINGREQ << 4, &[]);
            self.next_ping = Some(now + KEEPALIVE / 2);
        }
    }

    fn receive(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        while let Some((header, head_len, body_len)) = parse_header(input)? {
            if input.len() < head_len + body_len {
                input.reserve(head_len + body_len - input.len());
                return Ok(());
            }
            input.advance(head_len);
            let body = input.split_to(body_len).freeze();
            self.on_packet(header, body, out, events)?;
        }
        Ok(())
    }

    fn clone_box(&self) -> Box<dyn Session> {
        Box::new(self.clone())
    }
}

/// Reads a fixed header: the first byte, the header's length and the remaining length; `None`
/// while the header is incomplete.
fn parse_header(buf: &[u8]) -> Result<Option<(u8, usize, usize)>, SessionError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if len > MAX_PACKET {
                return Err(SessionError::Protocol(format!("packet of {len} bytes")));
            }
            return Ok(Some((first, 2 + i, len)));
        }
    }
    Err(SessionError::Protocol(
        "remaining length longer than 4 bytes".into(),
    ))
}

fn put_packet(out: &mut BytesMut, header: u8, body: &[u8]) {
    out.put_u8(header);
    put_remaining_len(out, body.len());
    out.put_slice(body);
}

fn put_remaining_len(out: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if len == 0 {
            return;
        }
    }
}

fn put_puback(out: &mut BytesMut, id: u16) {
    put_packet(out, packet::PUBACK << 4, &id.to_be_bytes());
}

/// Appends an MQTT UTF-8 string: a big-endian length and the bytes.
fn put_str(out: &mut BytesMut, s: &str) {
    out.put_u16(s.len() as u16);
    out.put_slice(s.as_bytes());
}

fn take_u16(body: &mut bytes::Bytes) -> Result<u16, SessionError> {
    if body.len() < 2 {
        return Err(SessionError::Protocol("packet is truncated".into()));
    }
    Ok(body.get_u16())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::scenarios::proto::{test_config, BrokerKind};

    fn session(role: Role, qos: u8) -> MqttSession {
        MqttSession::new(&test_config(BrokerKind::Mqtt, &["bench/m"], qos), role, 3)
    }

    #[test]
    fn connect_packet_bytes() {
        let mut out = BytesMut::new();
        session(Role::Publisher, 0).start(&mut out);
        let expected: &[u8] = b"\x10\x18\x00\x04MQTT\x04\x02\x00\x3c\x00\x0cbench-test-3";
        assert_eq!(&out[..], expected);
    }

    #[test]
    fn subscriber_subscribes_after_connack() {
        let mut s = session(Role::Subscriber(0), 1);
        let mut input = BytesMut::from(&b"\x20\x02\x00\x00\x90\x03\x00\x01\x01"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        s.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(&out[..], b"\x82\x0c\x00\x01\x00\x07bench/m\x01");
        assert_eq!(events, vec![Incoming::Ready { start: None }]);
    }

    #[test]
    fn qos1_publish_is_acknowledged() {
        let mut s = session(Role::Subscriber(0), 1);
        s.state = State::Ready;
        let mut input = BytesMut::from(&b"\x32\x0d\x00\x07bench/m\x00\x2ahi"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        s.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(&out[..], b"\x40\x02\x00\x2a");
        assert_eq!(
            events,
            vec![Incoming::Message {
                payload: Bytes::from_static(b"hi"),
                offset: None
            }]
        );
    }

    #[test]
    fn publish_qos1_returns_packet_id() {
        let mut s = session(Role::Publisher, 1);
        let mut out = BytesMut::new();
        assert_eq!(s.publish(0, b"hi", &mut out), Some(1));
        assert_eq!(&out[..], b"\x32\x0d\x00\x07bench/m\x00\x01hi");
    }

    #[test]
    fn publish_qos0_has_no_id() {
        let mut s = session(Role::Publisher, 0);
        let mut out = BytesMut::new();
        assert_eq!(s.publish(0, b"hi", &mut out), None);
        assert_eq!(&out[..], b"\x30\x0b\x00\x07bench/mhi");
    }

    #[test]
    fn long_remaining_length_is_varint() {
        let mut out = BytesMut::new();
        put_remaining_len(&mut out, 321);
        assert_eq!(&out[..], b"\xc1\x02");
        assert_eq!(parse_header(b"\x30\xc1\x02").unwrap(), Some((0x30, 3, 321)));
    }

    #[test]
    fn refused_connect_fails() {
        let mut s = session(Role::Publisher, 0);
        let mut input = BytesMut::from(&b"\x20\x02\x00\x05"[..]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        assert!(s.receive(&mut input, &mut out, &mut events).is_err());
    }
}
