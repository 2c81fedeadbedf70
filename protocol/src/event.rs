//! EVENTS frames and the comment entries inside them.
//!
//! An entry is laid out as: offset `u64`, broker time in microseconds since the Unix epoch `u64`,
//! flags `u8`, publisher id (`u8` length, UTF-8), payload (`u32` length, bytes). The broker's
//! segment log stores entries in the same layout, so a run of stored entries becomes an EVENTS
//! body by prefixing the topic, stream id and count.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::DecodeError;
use crate::frame::{begin_frame, finish_frame, kind, put_str8};
use crate::topic::Topic;

/// Bits of an entry's `flags` byte.
pub mod flags {
    /// The origin gave the comment priority: its publisher is a moderator, an admin or a host.
    /// A capped subscription always delivers it.
    pub const PRIORITY: u8 = 0x01;
    /// The entry is a tombstone, not a comment: its payload is the 8-byte big-endian offset of
    /// a deleted comment of the same topic, and its publisher is the moderator who deleted it.
    pub const TOMBSTONE: u8 = 0x02;
    /// The comment at this offset was deleted; its payload is empty.
    pub const DELETED: u8 = 0x04;
    /// Every bit defined so far; receivers ignore the others.
    pub const KNOWN: u8 = PRIORITY | TOMBSTONE | DELETED;
}

/// Bytes of an entry before the publisher id: offset, time, flags and publisher length.
pub const ENTRY_FIXED_LEN: usize = 8 + 8 + 1 + 1;

/// Bytes an entry takes on the wire for a publisher id and payload of the given lengths.
pub fn entry_len(publisher_len: usize, payload_len: usize) -> usize {
    ENTRY_FIXED_LEN + publisher_len + 4 + payload_len
}

/// One comment as delivered to subscribers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Position of the comment in its topic, assigned by the origin.
    pub offset: u64,
    /// Broker time at which the origin accepted the comment, in microseconds since the epoch.
    pub time_us: u64,
    /// Entry flags, a combination of the bits in [`flags`].
    pub flags: u8,
    /// Publisher id, empty when the broker has none for the publisher.
    pub publisher: String,
    /// Comment payload, a slice of the received frame.
    pub payload: Bytes,
}

impl Event {
    /// Returns the offset of the deleted comment when this entry is a tombstone.
    pub fn tombstone_target(&self) -> Option<u64> {
        if self.flags & flags::TOMBSTONE == 0 {
            return None;
        }
        let bytes: [u8; 8] = self.payload.as_ref().try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }
}

/// A decoded EVENTS frame: consecutive comments of one topic.
///
/// The entries stay in their encoded form, so decoding copies no payload; [`Events::iter`]
/// hands out payloads as slices of the received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    topic: Topic,
    stream: u64,
    count: u32,
    entries: Bytes,
}

impl Events {
    /// Builds an EVENTS value from already validated parts; used by encoders and tests.
    pub fn new(topic: Topic, stream: u64, events: &[Event]) -> Events {
        let mut entries = BytesMut::new();
        for e in events {
            encode_entry(
                &mut entries,
                e.offset,
                e.time_us,
                e.flags,
                &e.publisher,
                &e.payload,
            );
        }
        Events {
            topic,
            stream,
            count: events.len() as u32,
            entries: entries.freeze(),
        }
    }

    /// Returns the topic of the batch.
    pub fn topic(&self) -> &Topic {
        &self.topic
    }

    /// Returns the topic's stream id.
    pub fn stream(&self) -> u64 {
        self.stream
    }

    /// Returns the number of comments in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// Returns whether the batch has no comments.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Iterates over the comments in offset order.
    pub fn iter(&self) -> EventIter {
        EventIter {
            entries: self.entries.clone(),
            remaining: self.count,
        }
    }

    pub(crate) fn encode_body(&self, dst: &mut BytesMut) {
        put_events_head(dst, &self.topic, self.stream, self.count);
        dst.put_slice(&self.entries);
    }

    /// Returns the encoded entries, back to back.
    pub(crate) fn entries(&self) -> &Bytes {
        &self.entries
    }

    /// Decodes an EVENTS body, validating every entry so that iteration cannot fail.
    pub(crate) fn decode_body(mut body: Bytes, topic: Topic) -> Result<Events, DecodeError> {
        if body.remaining() < 8 + 4 {
            return Err(DecodeError::Malformed("EVENTS body ends before its count"));
        }
        let stream = body.get_u64();
        let count = body.get_u32();
        Events::from_entries(topic, stream, count, body)
    }

    /// Builds a batch from `count` encoded entries, checking that `body` holds exactly that
    /// many well-formed entries in strictly increasing offset order.
    pub(crate) fn from_entries(
        topic: Topic,
        stream: u64,
        count: u32,
        body: Bytes,
    ) -> Result<Events, DecodeError> {
        let mut rest = body.clone();
        let mut previous: Option<u64> = None;
        for _ in 0..count {
            let event = take_entry(&mut rest)?;
            if previous.is_some_and(|p| event.offset <= p) {
                return Err(DecodeError::Malformed("EVENTS offsets are not increasing"));
            }
            previous = Some(event.offset);
        }
        if rest.has_remaining() {
            return Err(DecodeError::Malformed(
                "EVENTS body has bytes after its last entry",
            ));
        }
        Ok(Events {
            topic,
            stream,
            count,
            entries: body,
        })
    }
}

/// Iterator over the comments of an [`Events`] batch.
#[derive(Debug, Clone)]
pub struct EventIter {
    entries: Bytes,
    remaining: u32,
}

impl Iterator for EventIter {
    type Item = Event;

    fn next(&mut self) -> Option<Event> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        // Entries were validated when the frame was decoded or built, so this succeeds.
        take_entry(&mut self.entries).ok()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining as usize, Some(self.remaining as usize))
    }
}

/// Appends one encoded entry to `dst`.
///
/// A publisher id longer than 255 bytes is cut at a character boundary.
pub fn encode_entry(
    dst: &mut BytesMut,
    offset: u64,
    time_us: u64,
    flags: u8,
    publisher: &str,
    payload: &[u8],
) {
    dst.put_u64(offset);
    dst.put_u64(time_us);
    dst.put_u8(flags);
    put_str8(dst, publisher);
    dst.put_u32(payload.len() as u32);
    dst.put_slice(payload);
}

/// Decodes one entry from the front of `buf` and advances past it.
pub fn take_entry(buf: &mut Bytes) -> Result<Event, DecodeError> {
    if buf.remaining() < ENTRY_FIXED_LEN {
        return Err(DecodeError::Malformed("event entry is truncated"));
    }
    let offset = buf.get_u64();
    let time_us = buf.get_u64();
    let flags = buf.get_u8();
    let publisher_len = buf.get_u8() as usize;
    if buf.remaining() < publisher_len + 4 {
        return Err(DecodeError::Malformed("event publisher id is truncated"));
    }
    let publisher = std::str::from_utf8(&buf[..publisher_len])
        .map_err(|_| DecodeError::Malformed("event publisher id is not UTF-8"))?
        .to_owned();
    buf.advance(publisher_len);
    let payload_len = buf.get_u32() as usize;
    if buf.remaining() < payload_len {
        return Err(DecodeError::Malformed("event payload is truncated"));
    }
    let payload = buf.split_to(payload_len);
    Ok(Event {
        offset,
        time_us,
        flags,
        publisher,
        payload,
    })
}

/// Reads the offset and encoded length of the entry at the front of `buf` without copying.
///
/// Checks lengths only; the publisher id's UTF-8 is checked when the entry is decoded.
pub fn measure_entry(buf: &[u8]) -> Result<(u64, usize), DecodeError> {
    if buf.len() < ENTRY_FIXED_LEN {
        return Err(DecodeError::Malformed("event entry is truncated"));
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&buf[..8]);
    let publisher_len = buf[ENTRY_FIXED_LEN - 1] as usize;
    let len_pos = ENTRY_FIXED_LEN + publisher_len;
    if buf.len() < len_pos + 4 {
        return Err(DecodeError::Malformed("event publisher id is truncated"));
    }
    let mut payload_len = [0u8; 4];
    payload_len.copy_from_slice(&buf[len_pos..len_pos + 4]);
    let total = len_pos + 4 + u32::from_be_bytes(payload_len) as usize;
    if buf.len() < total {
        return Err(DecodeError::Malformed("event payload is truncated"));
    }
    Ok((u64::from_be_bytes(offset), total))
}

fn put_events_head(dst: &mut BytesMut, topic: &Topic, stream: u64, count: u32) {
    put_str8(dst, topic.as_str());
    dst.put_u64(stream);
    dst.put_u32(count);
}

/// Encodes a whole EVENTS frame from entries that are already encoded back to back, as the
/// segment log stores them.
///
/// This is the broker's fast path: the frame is built once per batch and its bytes are shared by
/// every subscriber. The caller guarantees that `entries` holds exactly `count` well-formed
/// entries in increasing offset order.
pub fn encode_events_frame(topic: &Topic, stream: u64, count: u32, entries: &[u8]) -> Bytes {
    let head_len = 1 + topic.as_str().len() + 8 + 4;
    let mut dst = BytesMut::with_capacity(crate::HEADER_LEN + head_len + entries.len());
    let start = begin_frame(&mut dst, kind::EVENTS);
    put_events_head(&mut dst, topic, stream, count);
    dst.put_slice(entries);
    finish_frame(&mut dst, start);
    dst.freeze()
}

/// Builds one EVENTS frame entry by entry, writing straight into the frame buffer.
///
/// The broker uses this to turn entries it appends or reads from its log into a frame with a
/// single copy of each payload.
#[derive(Debug)]
pub struct EventsFrameBuilder {
    buf: BytesMut,
    count_pos: usize,
    count: u32,
    last_offset: Option<u64>,
}

impl EventsFrameBuilder {
    /// Starts a frame for `topic` and `stream` with room for `capacity` bytes of entries.
    pub fn new(topic: &Topic, stream: u64, capacity: usize) -> EventsFrameBuilder {
        let mut buf = BytesMut::with_capacity(events_overhead(topic) + capacity);
        begin_frame(&mut buf, kind::EVENTS);
        put_str8(&mut buf, topic.as_str());
        buf.put_u64(stream);
        let count_pos = buf.len();
        buf.put_u32(0);
        EventsFrameBuilder {
            buf,
            count_pos,
            count: 0,
            last_offset: None,
        }
    }

    /// Appends one comment.
    pub fn push(&mut self, offset: u64, time_us: u64, flags: u8, publisher: &str, payload: &[u8]) {
        encode_entry(&mut self.buf, offset, time_us, flags, publisher, payload);
        self.count += 1;
        self.last_offset = Some(offset);
    }

    /// Appends one entry that is already encoded, such as one read from the segment log.
    ///
    /// Returns an error, and appends nothing, unless `entry` is exactly one well-formed entry
    /// whose offset is above the previous entry's.
    pub fn push_encoded(&mut self, entry: &[u8]) -> Result<(), DecodeError> {
        let (offset, len) = measure_entry(entry)?;
        if len != entry.len() {
            return Err(DecodeError::Malformed("entry has bytes after its payload"));
        }
        if self.last_offset.is_some_and(|last| offset <= last) {
            return Err(DecodeError::Malformed("EVENTS offsets are not increasing"));
        }
        self.buf.put_slice(entry);
        self.count += 1;
        self.last_offset = Some(offset);
        Ok(())
    }

    /// Returns the number of comments appended so far.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Returns the offset of the last comment appended, if any.
    pub fn last_offset(&self) -> Option<u64> {
        self.last_offset
    }

    /// Returns the frame's size so far in bytes, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Returns whether no comment has been appended.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Fills in the count, length and CRC and returns the finished frame.
    pub fn finish(mut self) -> Bytes {
        let count = self.count.to_be_bytes();
        self.buf[self.count_pos..self.count_pos + 4].copy_from_slice(&count);
        finish_frame(&mut self.buf, 0);
        self.buf.freeze()
    }
}

/// Bytes an EVENTS frame for `topic` takes beyond its entries, header included.
pub fn events_overhead(topic: &Topic) -> usize {
    crate::HEADER_LEN + 1 + topic.as_str().len() + 8 + 4
}
