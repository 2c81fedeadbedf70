//! The chorus wire format, version 1: frames, their encoding and an incremental decoder.
//!
//! This crate does no I/O and reads no clock. Callers append received bytes to a
//! [`bytes::BytesMut`] and ask a [`Decoder`] for frames; they encode frames into buffers and
//! write those themselves. Payloads are handed out as [`bytes::Bytes`] slices of the received
//! frame, so decoding copies no payload. No input, however malformed, makes the decoder panic:
//! every problem is a [`DecodeError`] that maps to the [`ErrorCode`] to send back.
//!
//! What the crate leaves to callers: connection state (which frames are allowed when), limits
//! beyond the frame size, timeouts, and the meaning of offsets and stream ids.
//!
//! The byte-level specification is `spec/PROTOCOL.md` in the repository.

#![forbid(unsafe_code)]

mod compressed;
mod decode;
mod error;
pub mod event;
pub mod frame;
pub mod topic;

pub use compressed::{compress_events_frame, EventsZstd};
pub use decode::{decode_frame, decode_frame_with_max, decode_preamble, Decoder};
pub use error::{DecodeError, ErrorCode};
pub use event::{Event, Events};
pub use frame::{
    AudienceEntry, Cap, ErrorFrame, Frame, Hello, ModAction, Moderate, ModerateAck, Publish,
    PublishAck, React, RelayPublish, Skipped, StartAt, Subscribe, Subscribed, Welcome,
};
pub use topic::{Topic, TopicError};

/// Protocol version spoken by this crate.
pub const VERSION: u16 = 1;

/// Magic bytes that open every connection, in both directions.
pub const MAGIC: [u8; 6] = *b"CHORUS";

/// Length of the connection preamble: the magic bytes and a big-endian version.
pub const PREAMBLE_LEN: usize = 8;

/// Length of every frame header: body length, type, flags, reserved, CRC-32.
pub const HEADER_LEN: usize = 12;

/// Default maximum frame body length in bytes (1 MiB).
pub const DEFAULT_MAX_FRAME: u32 = 1 << 20;

/// Returns the preamble for [`VERSION`].
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let mut out = [0u8; PREAMBLE_LEN];
    out[..6].copy_from_slice(&MAGIC);
    out[6..].copy_from_slice(&VERSION.to_be_bytes());
    out
}
