//! The incremental decoder.

use bytes::{Buf, Bytes, BytesMut};

use crate::compressed::EventsZstd;
use crate::error::{DecodeError, ErrorCode};
use crate::event::Events;
use crate::frame::{
    frame_crc, kind, AudienceEntry, Cap, ErrorFrame, Frame, Hello, ModAction, Moderate,
    ModerateAck, Publish, PublishAck, React, RelayPublish, Skipped, StartAt, Subscribe, Subscribed,
    Welcome,
};
use crate::topic::Topic;
use crate::{DEFAULT_MAX_FRAME, HEADER_LEN, MAGIC, PREAMBLE_LEN, VERSION};

/// Decodes frames from a buffer that the caller fills with whatever the transport delivers.
///
/// The decoder keeps no bytes of its own: the caller appends received bytes to a [`BytesMut`]
/// and calls [`Decoder::decode`] until it returns `Ok(None)`. A frame's length is checked against
/// the maximum before the buffer grows for it, and its CRC before its body is parsed. After an
/// error the stream cannot be resynchronised and the connection should be closed.
#[derive(Debug, Clone)]
pub struct Decoder {
    max_frame: u32,
}

impl Decoder {
    /// Creates a decoder that rejects frame bodies longer than `max_frame` bytes.
    pub fn new(max_frame: u32) -> Decoder {
        Decoder { max_frame }
    }

    /// Returns the largest frame body accepted, in bytes.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Removes one complete frame from the front of `buf` and decodes it.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame; in that case it reserves
    /// room for the rest of the frame, but never more than the maximum allows.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        if len > self.max_frame {
            return Err(DecodeError::FrameTooLarge {
                len,
                max: self.max_frame,
            });
        }
        let total = HEADER_LEN + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let frame = buf.split_to(total).freeze();
        decode_frame_with_max(frame, self.max_frame).map(Some)
    }
}

/// Checks the connection preamble at the front of `buf` and removes it.
///
/// Returns `Ok(None)` while fewer than [`PREAMBLE_LEN`] bytes have arrived, but rejects wrong
/// magic bytes as soon as the first one arrives.
pub fn decode_preamble(buf: &mut BytesMut) -> Result<Option<u16>, DecodeError> {
    let seen = buf.len().min(MAGIC.len());
    if buf[..seen] != MAGIC[..seen] {
        return Err(DecodeError::BadPreamble);
    }
    if buf.len() < PREAMBLE_LEN {
        return Ok(None);
    }
    let version = u16::from_be_bytes([buf[6], buf[7]]);
    if version != VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    buf.advance(PREAMBLE_LEN);
    Ok(Some(version))
}

/// Decodes one complete frame, header included, with a maximum frame body of
/// [`DEFAULT_MAX_FRAME`]; see [`decode_frame_with_max`].
pub fn decode_frame(frame: Bytes) -> Result<Frame, DecodeError> {
    decode_frame_with_max(frame, DEFAULT_MAX_FRAME)
}

/// Decodes one complete frame, header included.
///
/// `frame` must be exactly one frame long; the decoder guarantees this by splitting on the
/// length field. `max_frame` bounds the decompressed entries of EVENTS_ZSTD: a larger
/// `raw_len` is [`DecodeError::FrameTooLarge`].
pub fn decode_frame_with_max(frame: Bytes, max_frame: u32) -> Result<Frame, DecodeError> {
    if frame.len() < HEADER_LEN {
        return Err(DecodeError::Malformed("frame is shorter than its header"));
    }
    let declared = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
    if declared != frame.len() - HEADER_LEN {
        return Err(DecodeError::Malformed(
            "frame length does not match its bytes",
        ));
    }
    let expected = u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]);
    let actual = frame_crc(&frame[..8], &frame[HEADER_LEN..]);
    if expected != actual {
        return Err(DecodeError::BadCrc { expected, actual });
    }

    let frame_kind = frame[4];
    if frame[5] != 0 {
        return Err(DecodeError::Malformed(
            "flags are set that version 1 does not define",
        ));
    }
    if frame[6] != 0 || frame[7] != 0 {
        return Err(DecodeError::Malformed("reserved header bytes are not zero"));
    }
    let body = Reader(frame.slice(HEADER_LEN..));
    decode_body(frame_kind, body, max_frame)
}

fn decode_body(frame_kind: u8, mut r: Reader, max_frame: u32) -> Result<Frame, DecodeError> {
    let frame = match frame_kind {
        kind::HELLO => Frame::Hello(Hello {
            version: r.u16("HELLO version")?,
            max_frame: r.u32("HELLO max_frame")?,
            client_name: r.str8("HELLO client_name")?,
            token: r.str16("HELLO token")?,
            features: r.optional_u32("HELLO features")?,
        }),
        kind::WELCOME => Frame::Welcome(Welcome {
            version: r.u16("WELCOME version")?,
            max_frame: r.u32("WELCOME max_frame")?,
            server_name: r.str8("WELCOME server_name")?,
            max_payload: r.u32("WELCOME max_payload")?,
            idle_timeout_ms: r.u32("WELCOME idle_timeout_ms")?,
            features: r.optional_u32("WELCOME features")?,
        }),
        kind::SUBSCRIBE => {
            let topic = r.topic("SUBSCRIBE topic")?;
            let mode = r.u8("SUBSCRIBE start mode")?;
            let value = r.u64("SUBSCRIBE start value")?;
            let start = StartAt::decode(mode, value)
                .ok_or(DecodeError::Malformed("SUBSCRIBE start mode is invalid"))?;
            let stream = r.u64("SUBSCRIBE stream")?;
            Frame::Subscribe(Subscribe {
                topic,
                start,
                stream,
            })
        }
        kind::SUBSCRIBED => Frame::Subscribed(Subscribed {
            topic: r.topic("SUBSCRIBED topic")?,
            stream: r.u64("SUBSCRIBED stream")?,
            start: r.u64("SUBSCRIBED start")?,
            earliest: r.u64("SUBSCRIBED earliest")?,
            end: r.u64("SUBSCRIBED end")?,
        }),
        kind::UNSUBSCRIBE => Frame::Unsubscribe(r.topic("UNSUBSCRIBE topic")?),
        kind::PUBLISH => Frame::Publish(Publish {
            seq: r.u64("PUBLISH seq")?,
            topic: r.topic("PUBLISH topic")?,
            payload: r.bytes32("PUBLISH payload")?,
        }),
        kind::PUBLISH_ACK => Frame::PublishAck(PublishAck {
            seq: r.u64("PUBLISH_ACK seq")?,
            code: ErrorCode::from_u16(r.u16("PUBLISH_ACK code")?),
            offset: r.u64("PUBLISH_ACK offset")?,
            stream: r.u64("PUBLISH_ACK stream")?,
        }),
        kind::EVENTS => {
            let topic = r.topic("EVENTS topic")?;
            let rest = std::mem::take(&mut r.0);
            Frame::Events(Events::decode_body(rest, topic)?)
        }
        kind::PING => Frame::Ping(r.u64("PING nonce")?),
        kind::PONG => Frame::Pong(r.u64("PONG nonce")?),
        kind::ERROR => Frame::Error(ErrorFrame {
            code: ErrorCode::from_u16(r.u16("ERROR code")?),
            close: r.bool("ERROR close")?,
            topic: r.str8("ERROR topic")?,
            message: r.str16("ERROR message")?,
        }),
        kind::MODERATE => {
            let seq = r.u64("MODERATE seq")?;
            let action = r.u8("MODERATE action")?;
            let topic = r.optional_topic("MODERATE topic")?;
            let offset = r.u64("MODERATE offset")?;
            let user = r.str8("MODERATE user")?;
            let value = r.u64("MODERATE value")?;
            let action = ModAction::from_parts(action, topic, offset, user, value)
                .map_err(DecodeError::Malformed)?;
            Frame::Moderate(Moderate { seq, action })
        }
        kind::MODERATE_ACK => Frame::ModerateAck(ModerateAck {
            seq: r.u64("MODERATE_ACK seq")?,
            code: ErrorCode::from_u16(r.u16("MODERATE_ACK code")?),
        }),
        kind::REACT => {
            let topic = r.topic("REACT topic")?;
            let kind = r.str8("REACT kind")?;
            if kind.is_empty() || kind.len() > crate::frame::MAX_REACTION_KIND {
                return Err(DecodeError::Malformed(
                    "REACT kind is empty or longer than 32 bytes",
                ));
            }
            let count = r.u32("REACT count")?;
            if count == 0 {
                return Err(DecodeError::Malformed("REACT count is 0"));
            }
            Frame::React(React { topic, kind, count })
        }
        kind::CAP => Frame::Cap(Cap {
            topic: r.topic("CAP topic")?,
            max_per_sec: r.u32("CAP max_per_sec")?,
        }),
        kind::SKIPPED => Frame::Skipped(Skipped {
            topic: r.topic("SKIPPED topic")?,
            count: r.u64("SKIPPED count")?,
            through: r.u64("SKIPPED through")?,
        }),
        kind::AUDIENCE => {
            let count = r.u32("AUDIENCE count")?;
            // Each entry takes at least 10 bytes, so a count larger than the body allows is
            // rejected before anything is allocated for it.
            if count as usize > r.0.remaining() / 10 {
                return Err(DecodeError::Malformed("AUDIENCE count runs past the body"));
            }
            let mut entries = Vec::with_capacity(count as usize);
            for _ in 0..count {
                entries.push(AudienceEntry {
                    topic: r.topic("AUDIENCE topic")?,
                    viewers: r.u64("AUDIENCE viewers")?,
                });
            }
            Frame::Audience(entries)
        }
        kind::RELAY_PUBLISH => {
            let seq = r.u64("RELAY_PUBLISH seq")?;
            let topic = r.topic("RELAY_PUBLISH topic")?;
            let user = r.str8("RELAY_PUBLISH user")?;
            if user.is_empty() {
                return Err(DecodeError::Malformed("RELAY_PUBLISH user is empty"));
            }
            let priority = r.bool("RELAY_PUBLISH priority")?;
            let payload = r.bytes32("RELAY_PUBLISH payload")?;
            Frame::RelayPublish(RelayPublish {
                seq,
                topic,
                user,
                priority,
                payload,
            })
        }
        kind::EVENTS_ZSTD => {
            let topic = r.topic("EVENTS_ZSTD topic")?;
            let rest = std::mem::take(&mut r.0);
            Frame::EventsZstd(EventsZstd::decode_body(topic, rest, max_frame)?)
        }
        other => return Err(DecodeError::UnknownFrameType(other)),
    };
    if r.0.has_remaining() {
        return Err(DecodeError::Malformed(
            "frame body has bytes after its last field",
        ));
    }
    Ok(frame)
}

/// Reads big-endian fields from a frame body; each method names the field in its error.
struct Reader(Bytes);

impl Reader {
    fn need(&self, n: usize, field: &'static str) -> Result<(), DecodeError> {
        if self.0.remaining() < n {
            return Err(DecodeError::Malformed(field));
        }
        Ok(())
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        self.need(1, field)?;
        Ok(self.0.get_u8())
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Malformed(field)),
        }
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        self.need(2, field)?;
        Ok(self.0.get_u16())
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        self.need(4, field)?;
        Ok(self.0.get_u32())
    }

    /// Reads a trailing u32 that older peers leave out: 0 when the body has ended.
    fn optional_u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        if !self.0.has_remaining() {
            return Ok(0);
        }
        self.u32(field)
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        self.need(8, field)?;
        Ok(self.0.get_u64())
    }

    fn take(&mut self, len: usize, field: &'static str) -> Result<Bytes, DecodeError> {
        self.need(len, field)?;
        Ok(self.0.split_to(len))
    }

    fn string(&mut self, len: usize, field: &'static str) -> Result<String, DecodeError> {
        let raw = self.take(len, field)?;
        String::from_utf8(raw.to_vec()).map_err(|_| DecodeError::Malformed(field))
    }

    fn str8(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u8(field)? as usize;
        self.string(len, field)
    }

    fn str16(&mut self, field: &'static str) -> Result<String, DecodeError> {
        let len = self.u16(field)? as usize;
        self.string(len, field)
    }

    fn bytes32(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u32(field)? as usize;
        self.take(len, field)
    }

    /// Reads a str8 that is either empty or a valid topic name.
    fn optional_topic(&mut self, field: &'static str) -> Result<Option<Topic>, DecodeError> {
        let len = self.u8(field)? as usize;
        if len == 0 {
            return Ok(None);
        }
        let raw = self.take(len, field)?;
        Ok(Some(Topic::from_bytes(&raw)?))
    }

    fn topic(&mut self, field: &'static str) -> Result<Topic, DecodeError> {
        let len = self.u8(field)? as usize;
        let raw = self.take(len, field)?;
        Ok(Topic::from_bytes(&raw)?)
    }
}
