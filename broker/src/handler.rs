//! Handling of each frame a client sends.

use std::sync::Arc;
use std::time::Instant;

use chorus_protocol::{
    decode_preamble, DecodeError, Decoder, ErrorCode, ErrorFrame, Frame, Hello, Publish,
    PublishAck, StartAt, Subscribe, Subscribed, Topic, Welcome, VERSION,
};
use mio::Token;
use tracing::{debug, error};

use crate::auth::{unix_now_s, Denial, Session, TokenRole};
use crate::conn::{Delivery, Phase, Subscription};
use crate::moderation::{is_reserved, Comment};
use crate::relay::loops::parse_chain;
use crate::topics::{Position, TopicState};
use crate::worker::{Worker, FIRST_CONN};

/// Bytes an EVENTS frame takes beyond its entries at most: header, longest topic, stream id and
/// count.
pub(crate) const EVENTS_HEAD_ROOM: usize = chorus_protocol::HEADER_LEN + 1 + 255 + 8 + 4;

impl Worker {
    /// Decodes and handles every whole frame in the connection's read buffer.
    pub(crate) fn handle_frames(&mut self, token: Token) {
        let max_frame = self.limits.max_frame;
        loop {
            let Some(conn) = self.conn_mut(token) else {
                return;
            };
            let decoded = match conn.phase {
                Phase::Closing => return,
                Phase::Preamble => match decode_preamble(&mut conn.read_buf) {
                    Ok(Some(_)) => {
                        conn.phase = Phase::Hello;
                        conn.out
                            .push(bytes::Bytes::copy_from_slice(&chorus_protocol::preamble()));
                        self.to_flush.insert(token);
                        continue;
                    }
                    Ok(None) => return,
                    Err(e) => Err(e),
                },
                Phase::Hello | Phase::Ready => Decoder::new(max_frame).decode(&mut conn.read_buf),
            };
            match decoded {
                Ok(Some(frame)) => {
                    // Only whole frames count as traffic for the idle timeout, so a client
                    // that sends a frame one byte at a time cannot hold a connection open.
                    if let Some(conn) = self.conn_mut(token) {
                        conn.last_read = Instant::now();
                        conn.ping_sent = false;
                    }
                    self.on_frame(token, frame)
                }
                Ok(None) => return,
                Err(e) => {
                    self.on_decode_error(token, e);
                    return;
                }
            }
        }
    }

    fn on_decode_error(&mut self, token: Token, error: DecodeError) {
        self.fail_conn(token, error.code(), error.to_string());
    }

    fn on_frame(&mut self, token: Token, frame: Frame) {
        // A relay forwards MODERATE and RELAY_PUBLISH upstream instead of carrying them out.
        let relay = self.shared.relay.is_some();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let phase = conn.phase;
        match (phase, frame) {
            (Phase::Hello, Frame::Hello(hello)) => self.on_hello(token, hello),
            (Phase::Hello, other) => self.fail_conn(
                token,
                ErrorCode::UnexpectedFrame,
                format!("expected HELLO, got frame type 0x{:02x}", other.kind()),
            ),
            (Phase::Ready, Frame::Publish(publish)) => self.on_publish(token, publish),
            (Phase::Ready, Frame::Subscribe(subscribe)) => self.on_subscribe(token, subscribe),
            (Phase::Ready, Frame::Unsubscribe(topic)) => self.on_unsubscribe(token, &topic),
            (Phase::Ready, Frame::Moderate(moderate)) if relay => {
                self.forward_moderate(token, moderate)
            }
            (Phase::Ready, Frame::RelayPublish(publish)) if relay => {
                self.forward_relay_publish(token, publish)
            }
            (Phase::Ready, Frame::Moderate(moderate)) => self.on_moderate(token, moderate),
            (Phase::Ready, Frame::RelayPublish(publish)) => self.on_relay_publish(token, publish),
            (Phase::Ready, Frame::React(react)) => self.on_react(token, react),
            (Phase::Ready, Frame::Audience(entries)) => self.on_audience(token, entries),
            (Phase::Ready, Frame::Cap(cap)) => self.on_cap(token, cap),
            (Phase::Ready, Frame::Ping(nonce)) => self.send(token, &Frame::Pong(nonce)),
            (Phase::Ready, Frame::Pong(_)) => {}
            (Phase::Ready, Frame::Error(e)) => {
                debug!(conn = conn.id, peer = %conn.peer, code = e.code.name(), message = %e.message, "client sent ERROR");
                self.close_conn(token);
            }
            (_, other) => self.fail_conn(
                token,
                ErrorCode::UnexpectedFrame,
                format!(
                    "frame type 0x{:02x} is not allowed from a client",
                    other.kind()
                ),
            ),
        }
    }

    fn on_hello(&mut self, token: Token, hello: Hello) {
        if hello.version != VERSION {
            let message = format!(
                "HELLO asks for protocol version {}, this broker speaks {VERSION}",
                hello.version
            );
            self.fail_conn(token, ErrorCode::UnsupportedVersion, message);
            return;
        }
        let limits = &self.limits;
        // EVENTS frames are shared by all subscribers and cannot be cut to suit one client.
        let needed = limits.max_batch_bytes + EVENTS_HEAD_ROOM;
        if (hello.max_frame as usize) < needed {
            let message = format!(
                "HELLO max_frame is {} bytes, this broker sends frames of up to {needed} bytes \
                 (a chorusd relay below needs limits.max_batch_bytes of at least {})",
                hello.max_frame, limits.max_batch_bytes
            );
            self.fail_conn(token, ErrorCode::FrameTooLarge, message);
            return;
        }
        let features = self
            .shared
            .config
            .compression
            .granted_features(hello.features);
        let welcome = Frame::Welcome(Welcome {
            version: VERSION,
            max_frame: limits.max_frame,
            server_name: format!("chorusd {}", env!("CARGO_PKG_VERSION")),
            max_payload: limits.max_payload,
            idle_timeout_ms: u32::try_from(limits.idle_timeout_ms).unwrap_or(u32::MAX),
            features,
        });
        let session = match self.open_session(&hello.token) {
            Ok(session) => session,
            Err(message) => {
                self.fail_conn(token, ErrorCode::Unauthenticated, message);
                return;
            }
        };
        let conn_id = self
            .conn_mut(token)
            .expect("caller checked the connection exists")
            .id;
        // The loop check comes first, so that a loop is reported as one even among relays
        // that have no upstream yet.
        let chain = match self.shared.lineage.admit(conn_id, &hello.client_name) {
            Ok(chain) => chain,
            Err(message) => {
                self.fail_conn(token, ErrorCode::UnexpectedFrame, message);
                return;
            }
        };
        // A relay below would wait on every subscription here, while another upstream in its
        // list may serve it: refusing it sends it there.
        let child_relay = match &session {
            Session::Open => parse_chain(&hello.client_name).is_some(),
            Session::Token(_) => session.role() == Some(TokenRole::Relay),
            Session::Anonymous => false,
        };
        if child_relay
            && self
                .shared
                .relay
                .as_ref()
                .is_some_and(|relay| !relay.statuses.any_connected())
        {
            let message = "this relay has no upstream connection; connect to another upstream \
                           and come back later"
                .to_owned();
            self.shared.lineage.forget(conn_id);
            self.fail_conn(token, ErrorCode::UpstreamUnavailable, message);
            return;
        }
        if let Some(relay) = self.shared.relay.as_ref() {
            relay.announce_if_new(&chain);
        }

        let conn = self
            .conn_mut(token)
            .expect("caller checked the connection exists");
        conn.phase = Phase::Ready;
        conn.session = session;
        debug!(
            conn = conn.id,
            peer = %conn.peer,
            client = %hello.client_name,
            user = conn.session.publisher(),
            "session opened"
        );
        conn.client_name = hello.client_name;
        conn.features = features;
        self.send(token, &welcome);
    }

    /// Verifies a HELLO token. Every session is open when authentication is off, and the token
    /// is ignored.
    fn open_session(&self, token: &str) -> Result<Session, String> {
        match self.shared.auth.as_ref() {
            Some(verifier) => verifier.session(token),
            None => Ok(Session::Open),
        }
    }

    /// Queues a frame for the connection; it is written at the end of the iteration.
    pub(crate) fn send(&mut self, token: Token, frame: &Frame) {
        self.count_sent_error(frame);
        if let Some(conn) = self.conn_mut(token) {
            conn.out.push(frame.to_bytes());
            self.to_flush.insert(token);
        }
    }

    pub(crate) fn reject_publish(&mut self, token: Token, seq: u64, code: ErrorCode) {
        let ack = Frame::PublishAck(PublishAck {
            seq,
            code,
            offset: 0,
            stream: 0,
        });
        self.send(token, &ack);
    }

    fn on_publish(&mut self, token: Token, publish: Publish) {
        let received = Instant::now();
        let now_s = unix_now_s();
        let checked = self
            .conn_mut(token)
            .map(|c| c.session.check_publish(publish.topic.as_str(), now_s));
        if let Some(Err(denial)) = checked {
            let (code, message) = (denial.code.name(), denial.message);
            debug!(topic = %publish.topic, code, "publish rejected: {message}");
            self.reject_publish(token, publish.seq, denial.code);
            return;
        }
        if is_reserved(publish.topic.as_str()) {
            debug!(topic = %publish.topic, "publish rejected: the topic is reserved for the server");
            self.reject_publish(token, publish.seq, ErrorCode::Forbidden);
            return;
        }
        if self.shared.relay.is_some() {
            if publish.payload.len() > self.limits.max_payload as usize {
                self.reject_publish(token, publish.seq, ErrorCode::PayloadTooLarge);
                return;
            }
            self.forward_publish(token, publish);
            return;
        }
        // The publisher id and the PRIORITY flag come from the session's verified token, never
        // from the client's payload.
        let (publisher, flags) = self.session_author(token);
        let comment = Comment {
            seq: publish.seq,
            topic: publish.topic,
            publisher,
            flags,
            payload: publish.payload,
            received,
        };
        self.publish_at_origin(token, comment);
    }

    fn on_subscribe(&mut self, token: Token, subscribe: Subscribe) {
        if let Err(denial) = self.check_subscribe(token, &subscribe.topic) {
            if denial.code == ErrorCode::TokenExpired {
                self.fail_conn(token, denial.code, denial.message);
            } else {
                self.send_topic_error(token, denial.code, &subscribe.topic, denial.message);
            }
            return;
        }
        let max_subscriptions = self.limits.max_subscriptions;
        let conn = self
            .conn_mut(token)
            .expect("caller checked the connection exists");
        let count = conn.subs.len();
        let replaces = conn.subs.values().any(|s| s.topic.name == subscribe.topic);
        if count >= max_subscriptions && !replaces {
            let message = format!("connection already has {count} subscriptions, the maximum");
            self.send_topic_error(
                token,
                ErrorCode::TooManySubscriptions,
                &subscribe.topic,
                message,
            );
            return;
        }

        let topic = match self.shared.registry.get(&subscribe.topic) {
            Ok(topic) => topic,
            Err(e) => {
                error!(topic = %subscribe.topic, error = %e, "failed to open topic log");
                let message = format!("failed to open the topic log: {e}");
                self.send_topic_error(token, ErrorCode::StorageFailed, &subscribe.topic, message);
                return;
            }
        };
        // A repeated SUBSCRIBE replaces the earlier subscription to the same topic, and keeps
        // its cap.
        let topic_id = topic.id;
        let cap = self.take_cap(token, topic_id);
        self.remove_subscription(token, topic_id);
        if self.shared.relay.is_some() {
            self.on_relay_subscribe(token, subscribe, topic);
            self.restore_cap(token, topic_id, cap);
            return;
        }

        let (position, start) = {
            let mut inner = topic.inner.lock();
            let position = inner.position();
            // A start time is resolved under the topic lock, against the same log state as
            // `position`.
            let offset_for_time = |time_us| {
                inner
                    .log
                    .as_ref()
                    .map_or(position.end, |log| log.offset_for_time(time_us))
            };
            let start = match start_offset(&subscribe, position, offset_for_time) {
                Ok(start) => start,
                Err(message) => {
                    drop(inner);
                    self.send_topic_error(
                        token,
                        ErrorCode::OffsetOutOfRange,
                        &subscribe.topic,
                        message,
                    );
                    return;
                }
            };
            inner.interest[self.index] += 1;
            (position, start)
        };
        self.attach_subscription(token, topic, position, start);
        self.restore_cap(token, topic_id, cap);
    }

    /// Checks the connection's session allows a SUBSCRIBE to `topic`.
    fn check_subscribe(&self, token: Token, topic: &Topic) -> Result<(), Denial> {
        let anonymous = &self.shared.config.auth.anonymous_subscribe;
        let conn = token
            .0
            .checked_sub(FIRST_CONN)
            .and_then(|index| self.conns.get(index));
        match conn {
            Some(conn) => conn
                .session
                .check_subscribe(topic.as_str(), anonymous, unix_now_s()),
            None => Ok(()),
        }
    }

    /// Adds a subscription that starts at `start`, for which the topic's interest is already
    /// counted, and sends SUBSCRIBED with `position`.
    pub(crate) fn attach_subscription(
        &mut self,
        token: Token,
        topic: Arc<TopicState>,
        position: Position,
        start: u64,
    ) {
        let delivery = if start == position.end {
            Delivery::Live
        } else {
            self.catching_up.insert(token);
            Delivery::CatchUp
        };
        let topic_id = topic.id;
        let name = topic.name.clone();
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        debug!(conn = conn.id, topic = %name, start, stream = position.stream, "subscription started");
        // At a relay, a CAP may have reached the subscription while it waited for the upstream.
        let cap = conn.subs.get_mut(&topic_id).and_then(|s| s.cap.take());
        conn.subs.insert(
            topic_id,
            Subscription {
                topic,
                next: start,
                delivery,
                stream: position.stream,
                cap,
            },
        );
        self.local_subs.entry(topic_id).or_default().insert(token);

        let subscribed = Frame::Subscribed(Subscribed {
            topic: name,
            stream: position.stream,
            start,
            earliest: position.earliest,
            end: position.end,
        });
        self.send(token, &subscribed);
    }

    fn on_unsubscribe(&mut self, token: Token, topic: &Topic) {
        let Ok(state) = self.shared.registry.get(topic) else {
            return;
        };
        self.flush_skipped(token, state.id);
        self.remove_subscription(token, state.id);
        if self.shared.relay.is_some() {
            self.forget_pending_subscribe(token, state.id);
        }
    }

    pub(crate) fn remove_subscription(&mut self, token: Token, topic_id: u64) {
        let Some(conn) = self.conn_mut(token) else {
            return;
        };
        let Some(sub) = conn.subs.remove(&topic_id) else {
            return;
        };
        let still_catching_up = conn.is_catching_up();
        sub.topic.inner.lock().interest[self.index] -= 1;
        if !still_catching_up {
            self.catching_up.remove(&token);
        }
        if let Some(set) = self.local_subs.get_mut(&topic_id) {
            set.remove(&token);
            if set.is_empty() {
                self.local_subs.remove(&topic_id);
            }
        }
    }

    pub(crate) fn send_topic_error(
        &mut self,
        token: Token,
        code: ErrorCode,
        topic: &Topic,
        message: String,
    ) {
        let frame = Frame::Error(ErrorFrame {
            code,
            close: false,
            topic: topic.to_string(),
            message,
        });
        self.send(token, &frame);
    }
}

/// Works out the first offset a new subscription receives.
///
/// A nonzero stream id that differs from the topic's means the topic was recreated since the
/// client last saw it, so the client gets the new stream from its start. `offset_for_time`
/// returns the first offset whose broker time is at or after a time, for the since mode.
pub(crate) fn start_offset(
    subscribe: &Subscribe,
    position: Position,
    offset_for_time: impl FnOnce(u64) -> u64,
) -> Result<u64, String> {
    let Position {
        stream,
        earliest,
        end,
    } = position;
    if subscribe.stream != 0 && subscribe.stream != stream {
        return Ok(earliest);
    }
    let start = match subscribe.start {
        StartAt::Latest => end,
        StartAt::Earliest => earliest,
        StartAt::Last(count) => end.saturating_sub(count).max(earliest),
        StartAt::Offset(offset) if offset > end => {
            return Err(format!(
                "offset {offset} is past the end of topic {} (next offset is {end})",
                subscribe.topic
            ));
        }
        StartAt::Offset(offset) => offset.max(earliest),
        StartAt::Since(time_us) => offset_for_time(time_us).clamp(earliest, end),
    };
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(start: StartAt, stream: u64) -> Subscribe {
        Subscribe {
            topic: Topic::new("t").unwrap(),
            start,
            stream,
        }
    }

    const POSITION: Position = Position {
        stream: 7,
        earliest: 10,
        end: 50,
    };

    /// Stands in for a log whose entry at offset N has broker time N milliseconds.
    fn offset_at_time(time_us: u64) -> u64 {
        time_us / 1000
    }

    #[test]
    fn start_modes_map_to_offsets() {
        let cases = [
            (StartAt::Latest, 50),
            (StartAt::Earliest, 10),
            (StartAt::Last(5), 45),
            (StartAt::Last(500), 10),
            (StartAt::Offset(20), 20),
            (StartAt::Offset(3), 10),
            (StartAt::Offset(50), 50),
            (StartAt::Since(20_000), 20),
            (StartAt::Since(1_000), 10),
            (StartAt::Since(90_000), 50),
        ];
        for (start, expected) in cases {
            assert_eq!(
                start_offset(&subscribe(start, 0), POSITION, offset_at_time),
                Ok(expected),
                "{start:?}"
            );
        }
    }

    #[test]
    fn offset_past_end_is_rejected() {
        let start = start_offset(&subscribe(StartAt::Offset(51), 7), POSITION, offset_at_time);
        assert!(start.is_err());
    }

    #[test]
    fn resume_of_missing_topic_starts_at_zero() {
        let empty = Position {
            stream: 0,
            earliest: 0,
            end: 0,
        };
        let start = start_offset(&subscribe(StartAt::Offset(40), 99), empty, offset_at_time);
        assert_eq!(start, Ok(0));
    }

    #[test]
    fn stale_stream_restarts_at_earliest() {
        let start = start_offset(
            &subscribe(StartAt::Offset(40), 99),
            POSITION,
            offset_at_time,
        );
        assert_eq!(start, Ok(10));
    }
}
