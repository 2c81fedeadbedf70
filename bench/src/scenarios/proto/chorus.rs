//! The chorus protocol, through the shared codec in `chorus_protocol`.

use bytes::{Bytes, BytesMut};
use chorus_protocol::{
    decode_preamble, preamble, Decoder, ErrorCode, Frame, Hello, Publish, StartAt, Subscribe,
    Topic, DEFAULT_MAX_FRAME, VERSION,
};

use super::{Incoming, Role, Session, SessionConfig, SessionError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Waiting for the broker's preamble.
    Preamble,
    /// Waiting for WELCOME.
    Welcome,
    /// Waiting for SUBSCRIBED.
    Subscribing,
    Ready,
}

#[derive(Debug, Clone)]
pub(super) struct ChorusSession {
    role: Role,
    config: SessionConfig,
    decoder: Decoder,
    state: State,
    next_seq: u64,
}

impl ChorusSession {
    pub(super) fn new(config: &SessionConfig, role: Role) -> ChorusSession {
        ChorusSession {
            role,
            config: config.clone(),
            decoder: Decoder::new(DEFAULT_MAX_FRAME),
            state: State::Preamble,
            next_seq: 1,
        }
    }

    fn topic(&self, index: usize) -> Result<&Topic, SessionError> {
        self.config
            .chorus_topic(index)
            .ok_or_else(|| SessionError::Protocol(format!("no topic {index}")))
    }

    fn on_frame(
        &mut self,
        frame: Frame,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        match frame {
            Frame::Welcome(_) if self.state == State::Welcome => self.on_welcome(out, events)?,
            Frame::Subscribed(s) if self.state == State::Subscribing => {
                self.state = State::Ready;
                events.push(Incoming::Ready {
                    start: Some(s.start),
                });
            }
            Frame::Events(batch) => {
                for event in batch.iter() {
                    events.push(Incoming::Message {
                        payload: event.payload,
                        offset: Some(event.offset),
                    });
                }
            }
            Frame::PublishAck(ack) => events.push(Incoming::Ack {
                key: ack.seq,
                accepted: ack.code == ErrorCode::Ok,
            }),
            Frame::Ping(nonce) => {
                Frame::Pong(nonce).encode(out);
                events.push(Incoming::Ping);
            }
            Frame::Pong(_) => {}
            Frame::Error(e) if e.close => {
                return Err(SessionError::Server(format!("{}: {}", e.code, e.message)));
            }
            Frame::Error(e) => events.push(Incoming::Notice(format!("{}: {}", e.code, e.message))),
            other => {
                return Err(SessionError::Protocol(format!(
                    "unexpected frame of type {:#04x}",
                    other.kind()
                )));
            }
        }
        Ok(())
    }

    fn on_welcome(
        &mut self,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        match self.role {
            Role::Publisher => {
                self.state = State::Ready;
                events.push(Incoming::Ready { start: None });
            }
            Role::Subscriber(index) => {
                let subscribe = Subscribe {
                    topic: self.topic(index)?.clone(),
                    start: StartAt::Latest,
                    stream: 0,
                };
                Frame::Subscribe(subscribe).encode(out);
                self.state = State::Subscribing;
            }
        }
        Ok(())
    }
}

impl Session for ChorusSession {
    fn start(&mut self, out: &mut BytesMut) {
        out.extend_from_slice(&preamble());
        let hello = Hello {
            version: VERSION,
            max_frame: DEFAULT_MAX_FRAME,
            client_name: self.config.client_name.clone(),
            token: String::new(),
            features: 0,
        };
        Frame::Hello(hello).encode(out);
        self.state = State::Preamble;
    }

    fn publish(&mut self, topic: usize, payload: &[u8], out: &mut BytesMut) -> Option<u64> {
        let seq = self.next_seq;
        self.next_seq += 1;
        // Topic indices come from the run's own topic list, so an unknown one is a bench bug; the
        // publish is then skipped and counts as unacknowledged.
        let topic = self.topic(topic).ok()?.clone();
        let publish = Publish {
            seq,
            topic,
            payload: Bytes::copy_from_slice(payload),
        };
        Frame::Publish(publish).encode(out);
        Some(seq)
    }

    fn barrier(&mut self, _out: &mut BytesMut) -> bool {
        false
    }

    fn receive(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
        events: &mut Vec<Incoming>,
    ) -> Result<(), SessionError> {
        if self.state == State::Preamble {
            if input.is_empty() {
                return Ok(());
            }
            match decode_preamble(input) {
                Ok(Some(_)) => self.state = State::Welcome,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            }
        }
        loop {
            let frame = match self.decoder.decode(input) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ok(()),
                Err(e) => return Err(SessionError::Protocol(e.to_string())),
            };
            self.on_frame(frame, out, events)?;
        }
    }

    fn clone_box(&self) -> Box<dyn Session> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use chorus_protocol::{Event, Events, PublishAck, Subscribed, Welcome};

    use super::*;
    use crate::scenarios::proto::{test_config, BrokerKind};

    fn server_bytes(frames: &[Frame]) -> BytesMut {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&preamble());
        for frame in frames {
            frame.encode(&mut buf);
        }
        buf
    }

    fn welcome() -> Frame {
        Frame::Welcome(Welcome {
            version: VERSION,
            max_frame: DEFAULT_MAX_FRAME,
            server_name: "chorusd/test".to_owned(),
            max_payload: 65536,
            idle_timeout_ms: 60_000,
            features: 0,
        })
    }

    fn subscriber() -> ChorusSession {
        let config = test_config(BrokerKind::Chorus, &["bench/t0"], 0);
        ChorusSession::new(&config, Role::Subscriber(0))
    }

    #[test]
    fn subscriber_subscribes_after_welcome() {
        let mut session = subscriber();
        let mut out = BytesMut::new();
        session.start(&mut out);
        out.clear();
        let mut events = Vec::new();
        let mut input = server_bytes(&[welcome()]);
        session.receive(&mut input, &mut out, &mut events).unwrap();
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        let sent = decoder.decode(&mut out).unwrap().unwrap();
        assert!(matches!(sent, Frame::Subscribe(s) if s.topic.as_str() == "bench/t0"));
        assert!(events.is_empty());
    }

    #[test]
    fn subscribed_then_events_are_reported() {
        let mut session = subscriber();
        let topic = Topic::new("bench/t0").unwrap();
        let subscribed = Frame::Subscribed(Subscribed {
            topic: topic.clone(),
            stream: 7,
            start: 40,
            earliest: 0,
            end: 40,
        });
        let event = Event {
            offset: 40,
            time_us: 1,
            flags: 0,
            publisher: String::new(),
            payload: Bytes::from_static(b"hi"),
        };
        let batch = Frame::Events(Events::new(topic, 7, &[event]));
        let mut input = server_bytes(&[welcome(), subscribed, batch]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.start(&mut out);
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(events[0], Incoming::Ready { start: Some(40) });
        assert_eq!(
            events[1],
            Incoming::Message {
                payload: Bytes::from_static(b"hi"),
                offset: Some(40)
            }
        );
    }

    #[test]
    fn ping_is_answered_with_pong() {
        let mut session = subscriber();
        let mut input = server_bytes(&[welcome(), Frame::Ping(9)]);
        let (mut out, mut events) = (BytesMut::new(), Vec::new());
        session.receive(&mut input, &mut out, &mut events).unwrap();
        let mut decoder = Decoder::new(DEFAULT_MAX_FRAME);
        let _subscribe = decoder.decode(&mut out).unwrap().unwrap();
        assert_eq!(decoder.decode(&mut out).unwrap(), Some(Frame::Pong(9)));
        assert_eq!(events, vec![Incoming::Ping]);
    }

    #[test]
    fn publish_ack_carries_seq() {
        let config = test_config(BrokerKind::Chorus, &["bench/t0"], 0);
        let mut session = ChorusSession::new(&config, Role::Publisher);
        let mut out = BytesMut::new();
        assert_eq!(session.publish(0, b"x", &mut out), Some(1));
        let ack = Frame::PublishAck(PublishAck {
            seq: 1,
            code: ErrorCode::Ok,
            offset: 0,
            stream: 1,
        });
        let mut input = server_bytes(&[welcome(), ack]);
        let mut events = Vec::new();
        session.receive(&mut input, &mut out, &mut events).unwrap();
        assert_eq!(events[0], Incoming::Ready { start: None });
        assert_eq!(
            events[1],
            Incoming::Ack {
                key: 1,
                accepted: true
            }
        );
    }
}
