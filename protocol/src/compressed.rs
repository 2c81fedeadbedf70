//! EVENTS_ZSTD frames: an EVENTS batch whose entries travel as one zstd frame.
//!
//! The head (topic, stream id, count) stays plain. The entries, laid out exactly as in EVENTS,
//! are compressed as one zstd frame and announced by their decompressed length `raw_len`. A
//! receiver decompresses into a buffer of at most `raw_len` bytes and rejects a `raw_len` above
//! its own maximum frame body, so a small frame cannot make it allocate more than that.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::event::Events;
use crate::frame::{begin_frame, finish_frame, kind, put_str8};
use crate::topic::Topic;
use crate::HEADER_LEN;

/// A decoded EVENTS_ZSTD frame: the compressed bytes as received and the batch they hold.
///
/// zstd encoders may compress the same input to different bytes, so two frames with equal
/// batches can differ in [`EventsZstd::data`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsZstd {
    events: Events,
    raw_len: u32,
    data: Bytes,
}

impl EventsZstd {
    /// Compresses the entries of `events` at zstd `level` (1 to 22; 0 is zstd's default, 3).
    pub fn compress(events: &Events, level: i32) -> io::Result<EventsZstd> {
        let entries = events.entries();
        let raw_len = u32::try_from(entries.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "entries exceed 4 GiB"))?;
        let data = zstd::bulk::compress(entries, level)?;
        Ok(EventsZstd {
            events: events.clone(),
            raw_len,
            data: Bytes::from(data),
        })
    }

    /// Returns the decompressed batch.
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Returns the decompressed batch, consuming the frame.
    pub fn into_events(self) -> Events {
        self.events
    }

    /// Returns the length of the entries once decompressed, in bytes.
    pub fn raw_len(&self) -> u32 {
        self.raw_len
    }

    /// Returns the zstd frame that holds the entries.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        put_str8(dst, self.events.topic().as_str());
        dst.put_u64(self.events.stream());
        dst.put_u32(self.events.len() as u32);
        dst.put_u32(self.raw_len);
        dst.put_slice(&self.data);
    }

    /// Decodes the body after the topic, decompressing the entries into at most `max_frame`
    /// bytes and checking them as an EVENTS body is checked.
    pub(crate) fn decode_body(
        topic: Topic,
        mut body: Bytes,
        max_frame: u32,
    ) -> Result<EventsZstd, DecodeError> {
        if body.remaining() < 8 + 4 + 4 {
            return Err(DecodeError::Malformed(
                "EVENTS_ZSTD body ends before its raw_len",
            ));
        }
        let stream = body.get_u64();
        let count = body.get_u32();
        let raw_len = body.get_u32();
        if raw_len > max_frame {
            return Err(DecodeError::FrameTooLarge {
                len: raw_len,
                max: max_frame,
            });
        }
        let entries = decompress_exact(&body, raw_len)?;
        let events = Events::from_entries(topic, stream, count, Bytes::from(entries))?;
        Ok(EventsZstd {
            events,
            raw_len,
            data: body,
        })
    }
}

/// Decompresses `data`, which must be exactly one zstd frame, into exactly `raw_len` bytes.
///
/// The output buffer is allocated once at `raw_len` bytes and never grows, so content beyond
/// that fails the decompression instead of allocating more.
fn decompress_exact(data: &[u8], raw_len: u32) -> Result<Vec<u8>, DecodeError> {
    let frame_len = zstd::zstd_safe::find_frame_compressed_size(data)
        .map_err(|_| DecodeError::Malformed("EVENTS_ZSTD data is not a zstd frame"))?;
    if frame_len != data.len() {
        return Err(DecodeError::Malformed(
            "EVENTS_ZSTD data has bytes after its zstd frame",
        ));
    }
    let mut out = Vec::with_capacity(raw_len as usize);
    let mut decompressor = zstd::bulk::Decompressor::new()
        .map_err(|_| DecodeError::Malformed("EVENTS_ZSTD decompressor failed to start"))?;
    decompressor
        .decompress_to_buffer(data, &mut out)
        .map_err(|_| {
            DecodeError::Malformed("EVENTS_ZSTD data is corrupt or decompresses past raw_len")
        })?;
    if out.len() != raw_len as usize {
        return Err(DecodeError::Malformed(
            "EVENTS_ZSTD data decompresses to fewer bytes than raw_len",
        ));
    }
    Ok(out)
}

/// Compresses the entries of an encoded EVENTS frame, header included, into an EVENTS_ZSTD
/// frame with the same topic, stream id and count.
///
/// This is the broker's path: it compresses a batch's shared frame without decoding it. The
/// caller guarantees that `frame` is a well-formed EVENTS frame; an input that is too short or
/// of another type is an [`io::ErrorKind::InvalidInput`] error.
pub fn compress_events_frame(frame: &[u8], level: i32) -> io::Result<Bytes> {
    let invalid = |message| io::Error::new(io::ErrorKind::InvalidInput, message);
    if frame.len() < HEADER_LEN + 1 || frame[4] != kind::EVENTS {
        return Err(invalid("input is not an EVENTS frame"));
    }
    let topic_len = frame[HEADER_LEN] as usize;
    let head_end = HEADER_LEN + 1 + topic_len + 8 + 4;
    if frame.len() < head_end {
        return Err(invalid("EVENTS frame ends inside its head"));
    }
    let entries = &frame[head_end..];
    let raw_len =
        u32::try_from(entries.len()).map_err(|_| invalid("EVENTS entries exceed 4 GiB"))?;
    let data = zstd::bulk::compress(entries, level)?;

    let mut dst = BytesMut::with_capacity(head_end + 4 + data.len());
    let start = begin_frame(&mut dst, kind::EVENTS_ZSTD);
    // Topic, stream id and count, copied from the EVENTS head unchanged.
    dst.put_slice(&frame[HEADER_LEN..head_end]);
    dst.put_u32(raw_len);
    dst.put_slice(&data);
    finish_frame(&mut dst, start);
    Ok(dst.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_frame_with_max;
    use crate::event::{encode_entry, encode_events_frame, Event};
    use crate::frame::Frame;
    use crate::ErrorCode;

    fn topic() -> Topic {
        Topic::new("live/zstd").unwrap()
    }

    fn sample_events(count: u64) -> Events {
        let events: Vec<Event> = (0..count)
            .map(|i| Event {
                offset: 100 + i,
                time_us: 1_700_000_000_000_000 + i,
                flags: 0,
                publisher: "viewer".into(),
                payload: Bytes::from(format!("comment number {i}, nice stream")),
            })
            .collect();
        Events::new(topic(), 7, &events)
    }

    /// Builds an EVENTS_ZSTD frame from raw parts, so tests can lie in any field.
    fn raw_frame(count: u32, raw_len: u32, data: &[u8]) -> Bytes {
        let mut dst = BytesMut::new();
        let start = begin_frame(&mut dst, kind::EVENTS_ZSTD);
        put_str8(&mut dst, topic().as_str());
        dst.put_u64(7);
        dst.put_u32(count);
        dst.put_u32(raw_len);
        dst.put_slice(data);
        finish_frame(&mut dst, start);
        dst.freeze()
    }

    fn decode_code(frame: Bytes, max_frame: u32) -> Option<ErrorCode> {
        decode_frame_with_max(frame, max_frame)
            .err()
            .map(|e| e.code())
    }

    #[test]
    fn compressed_frame_round_trips() {
        let events = sample_events(50);
        let frame = Frame::EventsZstd(EventsZstd::compress(&events, 3).unwrap());
        let decoded = decode_frame_with_max(frame.to_bytes(), 1 << 20).unwrap();
        assert_eq!(decoded, frame);
    }

    #[test]
    fn compressed_frame_holds_same_entries() {
        let events = sample_events(50);
        let frame = Frame::EventsZstd(EventsZstd::compress(&events, 3).unwrap());
        let Ok(Frame::EventsZstd(decoded)) = decode_frame_with_max(frame.to_bytes(), 1 << 20)
        else {
            panic!("not decoded as EVENTS_ZSTD");
        };
        assert_eq!(decoded.into_events(), events);
    }

    #[test]
    fn compress_events_frame_matches_compress() {
        let events = sample_events(20);
        let plain = Frame::Events(events.clone()).to_bytes();
        let compressed = compress_events_frame(&plain, 3).unwrap();
        let Ok(Frame::EventsZstd(decoded)) = decode_frame_with_max(compressed, 1 << 20) else {
            panic!("not decoded as EVENTS_ZSTD");
        };
        assert_eq!(decoded.events(), &events);
    }

    #[test]
    fn compress_events_frame_rejects_other_frames() {
        let ping = Frame::Ping(1).to_bytes();
        let error = compress_events_frame(&ping, 3).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn raw_len_above_max_frame_is_too_large() {
        let data = zstd::bulk::compress(b"x", 3).unwrap();
        let frame = raw_frame(0, 1 << 21, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::FrameTooLarge));
    }

    /// A zstd bomb: a few hundred bytes that decompress to 64 MiB. It announces a small
    /// raw_len, and decompression stops at that many bytes.
    #[test]
    fn bomb_beyond_raw_len_is_malformed() {
        let content = vec![0u8; 64 << 20];
        let data = zstd::bulk::compress(&content, 19).unwrap();
        assert!(data.len() < 64 << 10);
        let frame = raw_frame(1, 4096, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn bomb_announcing_its_size_is_too_large() {
        let content = vec![0u8; 64 << 20];
        let data = zstd::bulk::compress(&content, 19).unwrap();
        let frame = raw_frame(1, 64 << 20, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::FrameTooLarge));
    }

    #[test]
    fn content_shorter_than_raw_len_is_malformed() {
        let events = sample_events(3);
        let entries = events.entries().clone();
        let data = zstd::bulk::compress(&entries, 3).unwrap();
        let frame = raw_frame(3, entries.len() as u32 + 1, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn count_mismatch_is_malformed() {
        let events = sample_events(3);
        let entries = events.entries().clone();
        let data = zstd::bulk::compress(&entries, 3).unwrap();
        let frame = raw_frame(4, entries.len() as u32, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn decreasing_offsets_are_malformed() {
        let mut entries = BytesMut::new();
        encode_entry(&mut entries, 5, 1, 0, "a", b"one");
        encode_entry(&mut entries, 4, 2, 0, "a", b"two");
        let data = zstd::bulk::compress(&entries, 3).unwrap();
        let frame = raw_frame(2, entries.len() as u32, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn trailing_bytes_after_zstd_frame_are_malformed() {
        let events = sample_events(3);
        let entries = events.entries().clone();
        let mut data = zstd::bulk::compress(&entries, 3).unwrap();
        data.extend_from_slice(&[0, 0]);
        let frame = raw_frame(3, entries.len() as u32, &data);
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn data_that_is_not_zstd_is_malformed() {
        let frame = raw_frame(0, 0, b"not zstd");
        assert_eq!(decode_code(frame, 1 << 20), Some(ErrorCode::MalformedFrame));
    }

    #[test]
    fn empty_batch_compresses() {
        let frame = encode_events_frame(&topic(), 7, 0, &[]);
        let compressed = compress_events_frame(&frame, 1).unwrap();
        let decoded = decode_frame_with_max(compressed, 1 << 20).unwrap();
        let Frame::EventsZstd(decoded) = decoded else {
            panic!("not decoded as EVENTS_ZSTD");
        };
        assert!(decoded.events().is_empty());
    }
}
