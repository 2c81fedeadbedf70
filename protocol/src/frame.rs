//! Frame types and their encoding.

use bytes::{BufMut, Bytes, BytesMut};

use crate::compressed::EventsZstd;
use crate::error::ErrorCode;
use crate::event::Events;
use crate::topic::Topic;
use crate::HEADER_LEN;

/// Frame type bytes.
pub mod kind {
    /// HELLO: client to server, first frame after the preamble.
    pub const HELLO: u8 = 0x01;
    /// WELCOME: server to client, answer to HELLO.
    pub const WELCOME: u8 = 0x02;
    /// SUBSCRIBE: client to server.
    pub const SUBSCRIBE: u8 = 0x03;
    /// SUBSCRIBED: server to client, confirms a subscription and where it starts.
    pub const SUBSCRIBED: u8 = 0x04;
    /// UNSUBSCRIBE: client to server.
    pub const UNSUBSCRIBE: u8 = 0x05;
    /// PUBLISH: client to server.
    pub const PUBLISH: u8 = 0x06;
    /// PUBLISH_ACK: server to client.
    pub const PUBLISH_ACK: u8 = 0x07;
    /// EVENTS: server to client, a batch of consecutive comments of one topic.
    pub const EVENTS: u8 = 0x08;
    /// PING: either direction.
    pub const PING: u8 = 0x09;
    /// PONG: either direction, answer to PING.
    pub const PONG: u8 = 0x0a;
    /// ERROR: either direction.
    pub const ERROR: u8 = 0x0b;
    /// MODERATE: client to server, a moderation action.
    pub const MODERATE: u8 = 0x0c;
    /// MODERATE_ACK: server to client, answer to MODERATE.
    pub const MODERATE_ACK: u8 = 0x0d;
    /// REACT: client to server, reactions to a topic.
    pub const REACT: u8 = 0x0e;
    /// CAP: client to server, caps the delivery rate of one subscription.
    pub const CAP: u8 = 0x0f;
    /// SKIPPED: server to client, how many comments a capped subscription did not deliver.
    pub const SKIPPED: u8 = 0x10;
    /// AUDIENCE: relay to upstream, subscriber counts per topic below the relay.
    pub const AUDIENCE: u8 = 0x11;
    /// RELAY_PUBLISH: relay to upstream, a publish on behalf of a verified user.
    pub const RELAY_PUBLISH: u8 = 0x12;
    /// EVENTS_ZSTD: server to client, an EVENTS batch whose entries are compressed with zstd.
    /// Sent only on connections that negotiated [`super::features::ZSTD_EVENTS`].
    pub const EVENTS_ZSTD: u8 = 0x13;
}

/// Bits of the `features` field of HELLO and WELCOME.
pub mod features {
    /// The client accepts EVENTS_ZSTD frames; in WELCOME, the server may send them.
    pub const ZSTD_EVENTS: u32 = 0x1;
    /// Every bit defined so far. A server sets only bits it supports, so it ignores the others.
    pub const KNOWN: u32 = ZSTD_EVENTS;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Opens a session.
    Hello(Hello),
    /// Accepts a session.
    Welcome(Welcome),
    /// Starts a subscription.
    Subscribe(Subscribe),
    /// Confirms a subscription.
    Subscribed(Subscribed),
    /// Ends a subscription.
    Unsubscribe(Topic),
    /// Publishes one comment.
    Publish(Publish),
    /// Acknowledges or rejects one publish.
    PublishAck(PublishAck),
    /// Delivers a batch of comments.
    Events(Events),
    /// Asks the peer to answer with PONG.
    Ping(u64),
    /// Answers PING with its nonce.
    Pong(u64),
    /// Reports an error.
    Error(ErrorFrame),
    /// Asks for a moderation action.
    Moderate(Moderate),
    /// Answers a moderation action.
    ModerateAck(ModerateAck),
    /// Adds reactions to a topic.
    React(React),
    /// Caps the delivery rate of one subscription.
    Cap(Cap),
    /// Counts the comments a capped subscription did not deliver.
    Skipped(Skipped),
    /// Reports subscriber counts per topic below a relay.
    Audience(Vec<AudienceEntry>),
    /// Publishes on behalf of a user that a relay verified.
    RelayPublish(RelayPublish),
    /// Delivers a batch of comments whose entries are compressed with zstd.
    EventsZstd(EventsZstd),
}

/// Body of HELLO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u16,
    /// Largest frame body, in bytes, the client accepts.
    pub max_frame: u32,
    /// Free-form client name and version, for logs; at most 255 bytes.
    pub client_name: String,
    /// Authentication token; empty when the client has none.
    pub token: String,
    /// Optional protocol features the client asks for, a combination of the bits in
    /// [`features`]. Encoded only when nonzero; a body that ends before it means 0.
    pub features: u32,
}

/// Body of WELCOME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Welcome {
    /// Protocol version the server speaks on this connection.
    pub version: u16,
    /// Largest frame body, in bytes, the server accepts.
    pub max_frame: u32,
    /// Free-form server name and version; at most 255 bytes.
    pub server_name: String,
    /// Largest publish payload, in bytes, the server accepts.
    pub max_payload: u32,
    /// Milliseconds of silence after which the server closes the connection; 0 for never.
    pub idle_timeout_ms: u32,
    /// Features of the HELLO that the server supports too, and so uses on this connection.
    /// Encoded only when nonzero; a body that ends before it means 0.
    pub features: u32,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// Only comments published after the subscription.
    Latest,
    /// From this offset on; the offset of the next comment when it equals the topic's end.
    Offset(u64),
    /// The last N comments, then everything after them.
    Last(u64),
    /// The oldest comment still kept.
    Earliest,
    /// The first comment whose broker time is at or after this many microseconds since the
    /// Unix epoch; the next comment published when none is.
    Since(u64),
}

impl StartAt {
    pub(crate) fn encode(self) -> (u8, u64) {
        match self {
            StartAt::Latest => (0, 0),
            StartAt::Offset(offset) => (1, offset),
            StartAt::Last(count) => (2, count),
            StartAt::Earliest => (3, 0),
            StartAt::Since(time_us) => (4, time_us),
        }
    }

    pub(crate) fn decode(mode: u8, value: u64) -> Option<StartAt> {
        match (mode, value) {
            (0, 0) => Some(StartAt::Latest),
            (1, offset) => Some(StartAt::Offset(offset)),
            (2, count) => Some(StartAt::Last(count)),
            (3, 0) => Some(StartAt::Earliest),
            (4, time_us) => Some(StartAt::Since(time_us)),
            _ => None,
        }
    }
}

/// Body of SUBSCRIBE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// Topic to subscribe to.
    pub topic: Topic,
    /// Where delivery starts.
    pub start: StartAt,
    /// Stream id the client last saw on this topic, or 0 when it has none. A resume with a
    /// stream id that no longer matches the topic's is answered from the new stream's start.
    pub stream: u64,
}

/// Body of SUBSCRIBED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribed {
    /// Topic of the subscription.
    pub topic: Topic,
    /// The topic's current stream id.
    pub stream: u64,
    /// Offset of the first comment this subscription delivers.
    pub start: u64,
    /// Oldest offset the topic still keeps.
    pub earliest: u64,
    /// Offset the next published comment will get.
    pub end: u64,
}

/// Body of PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Client-chosen sequence number echoed in the PUBLISH_ACK.
    pub seq: u64,
    /// Topic to publish to; created by its first publish.
    pub topic: Topic,
    /// Comment payload, opaque to the broker.
    pub payload: Bytes,
}

/// Body of PUBLISH_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishAck {
    /// Sequence number of the PUBLISH this acknowledges.
    pub seq: u64,
    /// [`ErrorCode::Ok`] when the comment was stored, otherwise the reason it was rejected.
    pub code: ErrorCode,
    /// Offset assigned to the comment; 0 when rejected.
    pub offset: u64,
    /// Stream id of the topic; 0 when rejected.
    pub stream: u64,
}

/// Body of ERROR.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// Whether the sender closes the connection after this frame.
    pub close: bool,
    /// Topic the error concerns; empty when it concerns the connection.
    pub topic: String,
    /// Human-readable explanation; at most 65,535 bytes.
    pub message: String,
}

/// Body of MODERATE: a moderation action and the number that pairs it with its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moderate {
    /// Client-chosen sequence number echoed in the MODERATE_ACK.
    pub seq: u64,
    /// What to do.
    pub action: ModAction,
}

/// A moderation action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModAction {
    /// Deletes one comment: its text leaves history and a tombstone entry tells subscribers.
    DeleteComment {
        /// Topic of the comment.
        topic: Topic,
        /// Offset of the comment.
        offset: u64,
    },
    /// Bans a user from publishing anywhere, and optionally deletes their recent comments in
    /// one topic.
    Ban {
        /// User id, as in the `sub` claim of the user's tokens.
        user: String,
        /// Topic and number of seconds back whose comments by the user are deleted too.
        purge: Option<(Topic, u64)>,
    },
    /// Lifts a ban.
    Unban {
        /// User id.
        user: String,
    },
    /// Sets the minimum interval between two comments of one user in a topic; 0 turns slow
    /// mode off.
    SlowMode {
        /// Topic the setting applies to.
        topic: Topic,
        /// Minimum interval in milliseconds.
        interval_ms: u64,
    },
}

impl ModAction {
    /// Wire values: action byte, topic (empty when none), offset, user, value.
    fn parts(&self) -> (u8, &str, u64, &str, u64) {
        match self {
            ModAction::DeleteComment { topic, offset } => (1, topic.as_str(), *offset, "", 0),
            ModAction::Ban { user, purge: None } => (2, "", 0, user, 0),
            ModAction::Ban {
                user,
                purge: Some((topic, seconds)),
            } => (2, topic.as_str(), 0, user, *seconds),
            ModAction::Unban { user } => (3, "", 0, user, 0),
            ModAction::SlowMode { topic, interval_ms } => (4, topic.as_str(), 0, "", *interval_ms),
        }
    }

    /// Builds an action from its wire values, or names the rule they break.
    pub(crate) fn from_parts(
        action: u8,
        topic: Option<Topic>,
        offset: u64,
        user: String,
        value: u64,
    ) -> Result<ModAction, &'static str> {
        match (action, topic) {
            (1, Some(topic)) if user.is_empty() && value == 0 => {
                Ok(ModAction::DeleteComment { topic, offset })
            }
            (2, topic) if !user.is_empty() && offset == 0 => match (topic, value) {
                (None, 0) => Ok(ModAction::Ban { user, purge: None }),
                (Some(topic), seconds) if seconds > 0 => Ok(ModAction::Ban {
                    user,
                    purge: Some((topic, seconds)),
                }),
                _ => Err("MODERATE ban needs both a topic and a purge window, or neither"),
            },
            (3, None) if !user.is_empty() && offset == 0 && value == 0 => {
                Ok(ModAction::Unban { user })
            }
            (4, Some(topic)) if user.is_empty() && offset == 0 => Ok(ModAction::SlowMode {
                topic,
                interval_ms: value,
            }),
            (1..=4, _) => Err("MODERATE fields do not fit its action"),
            _ => Err("MODERATE action is unknown"),
        }
    }
}

/// Body of MODERATE_ACK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerateAck {
    /// Sequence number of the MODERATE this answers.
    pub seq: u64,
    /// [`ErrorCode::Ok`] when the action was carried out, otherwise why it was not.
    pub code: ErrorCode,
}

/// Maximum length of a reaction kind, in bytes.
pub const MAX_REACTION_KIND: usize = 32;

/// Body of REACT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct React {
    /// Topic the reactions are about.
    pub topic: Topic,
    /// Reaction kind, 1 to 32 bytes of UTF-8, such as `heart`.
    pub kind: String,
    /// Number of reactions: 1 from a viewer, a sum from a relay; never 0.
    pub count: u32,
}

/// Body of CAP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cap {
    /// Topic of the subscription to cap.
    pub topic: Topic,
    /// Maximum comments per second to deliver. 0 removes the cap.
    pub max_per_sec: u32,
}

/// Body of SKIPPED.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// Topic of the capped subscription.
    pub topic: Topic,
    /// Comments not delivered since the previous SKIPPED for this subscription.
    pub count: u64,
    /// Offset after the last comment this notice accounts for.
    pub through: u64,
}

/// One topic of an AUDIENCE frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AudienceEntry {
    /// Topic.
    pub topic: Topic,
    /// Subscribers of the topic at the relay and below it.
    pub viewers: u64,
}

/// Body of RELAY_PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayPublish {
    /// Sequence number echoed in the PUBLISH_ACK.
    pub seq: u64,
    /// Topic to publish to.
    pub topic: Topic,
    /// User id that the relay verified, stored as the comment's publisher; 1 to 255 bytes.
    pub user: String,
    /// Whether the user's token gives their comments priority.
    pub priority: bool,
    /// Comment payload.
    pub payload: Bytes,
}

impl Frame {
    /// Returns the frame's type byte.
    pub fn kind(&self) -> u8 {
        match self {
            Frame::Hello(_) => kind::HELLO,
            Frame::Welcome(_) => kind::WELCOME,
            Frame::Subscribe(_) => kind::SUBSCRIBE,
            Frame::Subscribed(_) => kind::SUBSCRIBED,
            Frame::Unsubscribe(_) => kind::UNSUBSCRIBE,
            Frame::Publish(_) => kind::PUBLISH,
            Frame::PublishAck(_) => kind::PUBLISH_ACK,
            Frame::Events(_) => kind::EVENTS,
            Frame::Ping(_) => kind::PING,
            Frame::Pong(_) => kind::PONG,
            Frame::Error(_) => kind::ERROR,
            Frame::Moderate(_) => kind::MODERATE,
            Frame::ModerateAck(_) => kind::MODERATE_ACK,
            Frame::React(_) => kind::REACT,
            Frame::Cap(_) => kind::CAP,
            Frame::Skipped(_) => kind::SKIPPED,
            Frame::Audience(_) => kind::AUDIENCE,
            Frame::RelayPublish(_) => kind::RELAY_PUBLISH,
            Frame::EventsZstd(_) => kind::EVENTS_ZSTD,
        }
    }

    /// Appends the encoded frame, header included, to `dst`.
    ///
    /// Strings longer than their length field allows are cut at the last character boundary
    /// that fits, so encoding never fails.
    pub fn encode(&self, dst: &mut BytesMut) {
        let start = begin_frame(dst, self.kind());
        match self {
            Frame::Hello(h) => {
                dst.put_u16(h.version);
                dst.put_u32(h.max_frame);
                put_str8(dst, &h.client_name);
                put_str16(dst, &h.token);
                if h.features != 0 {
                    dst.put_u32(h.features);
                }
            }
            Frame::Welcome(w) => {
                dst.put_u16(w.version);
                dst.put_u32(w.max_frame);
                put_str8(dst, &w.server_name);
                dst.put_u32(w.max_payload);
                dst.put_u32(w.idle_timeout_ms);
                if w.features != 0 {
                    dst.put_u32(w.features);
                }
            }
            Frame::Subscribe(s) => {
                put_str8(dst, s.topic.as_str());
                let (mode, value) = s.start.encode();
                dst.put_u8(mode);
                dst.put_u64(value);
                dst.put_u64(s.stream);
            }
            Frame::Subscribed(s) => {
                put_str8(dst, s.topic.as_str());
                dst.put_u64(s.stream);
                dst.put_u64(s.start);
                dst.put_u64(s.earliest);
                dst.put_u64(s.end);
            }
            Frame::Unsubscribe(topic) => put_str8(dst, topic.as_str()),
            Frame::Publish(p) => {
                dst.put_u64(p.seq);
                put_str8(dst, p.topic.as_str());
                dst.put_u32(p.payload.len() as u32);
                dst.put_slice(&p.payload);
            }
            Frame::PublishAck(a) => {
                dst.put_u64(a.seq);
                dst.put_u16(a.code.as_u16());
                dst.put_u64(a.offset);
                dst.put_u64(a.stream);
            }
            Frame::Events(e) => {
                e.encode_body(dst);
            }
            Frame::Ping(nonce) | Frame::Pong(nonce) => dst.put_u64(*nonce),
            Frame::Error(e) => {
                dst.put_u16(e.code.as_u16());
                dst.put_u8(u8::from(e.close));
                put_str8(dst, &e.topic);
                put_str16(dst, &e.message);
            }
            Frame::Moderate(m) => {
                let (action, topic, offset, user, value) = m.action.parts();
                dst.put_u64(m.seq);
                dst.put_u8(action);
                put_str8(dst, topic);
                dst.put_u64(offset);
                put_str8(dst, user);
                dst.put_u64(value);
            }
            Frame::ModerateAck(a) => {
                dst.put_u64(a.seq);
                dst.put_u16(a.code.as_u16());
            }
            Frame::React(r) => {
                put_str8(dst, r.topic.as_str());
                put_str8(dst, &r.kind);
                dst.put_u32(r.count);
            }
            Frame::Cap(c) => {
                put_str8(dst, c.topic.as_str());
                dst.put_u32(c.max_per_sec);
            }
            Frame::Skipped(s) => {
                put_str8(dst, s.topic.as_str());
                dst.put_u64(s.count);
                dst.put_u64(s.through);
            }
            Frame::Audience(entries) => {
                dst.put_u32(entries.len() as u32);
                for entry in entries {
                    put_str8(dst, entry.topic.as_str());
                    dst.put_u64(entry.viewers);
                }
            }
            Frame::RelayPublish(p) => {
                dst.put_u64(p.seq);
                put_str8(dst, p.topic.as_str());
                put_str8(dst, &p.user);
                dst.put_u8(u8::from(p.priority));
                dst.put_u32(p.payload.len() as u32);
                dst.put_slice(&p.payload);
            }
            Frame::EventsZstd(e) => e.encode_body(dst),
        }
        finish_frame(dst, start);
    }

    /// Encodes the frame into a new buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut dst = BytesMut::new();
        self.encode(&mut dst);
        dst.freeze()
    }
}

/// Writes a header with zero length and CRC, and returns where the frame starts in `dst`.
pub(crate) fn begin_frame(dst: &mut BytesMut, kind: u8) -> usize {
    let start = dst.len();
    dst.put_u32(0);
    dst.put_u8(kind);
    dst.put_u8(0);
    dst.put_u16(0);
    dst.put_u32(0);
    start
}

/// Fills in the length and CRC of the frame that starts at `start` and runs to the end of `dst`.
pub(crate) fn finish_frame(dst: &mut BytesMut, start: usize) {
    let body_len = dst.len() - start - HEADER_LEN;
    dst[start..start + 4].copy_from_slice(&(body_len as u32).to_be_bytes());
    let crc = frame_crc(&dst[start..start + 8], &dst[start + HEADER_LEN..]);
    dst[start + 8..start + 12].copy_from_slice(&crc.to_be_bytes());
}

/// Computes a frame's CRC-32 over the first 8 header bytes followed by the body.
pub(crate) fn frame_crc(header_head: &[u8], body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(header_head);
    hasher.update(body);
    hasher.finalize()
}

fn truncate_to_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

pub(crate) fn put_str8(dst: &mut BytesMut, s: &str) {
    let s = truncate_to_boundary(s, u8::MAX as usize);
    dst.put_u8(s.len() as u8);
    dst.put_slice(s.as_bytes());
}

pub(crate) fn put_str16(dst: &mut BytesMut, s: &str) {
    let s = truncate_to_boundary(s, u16::MAX as usize);
    dst.put_u16(s.len() as u16);
    dst.put_slice(s.as_bytes());
}
