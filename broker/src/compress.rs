//! zstd compression of live batches for connections that negotiated `ZSTD_EVENTS` in HELLO,
//! and the `[compression]` table that sets it up.
//!
//! A batch is compressed at most once, by the first worker that delivers it to such a
//! connection, and every clone of the batch shares the result. The compressed frame replaces
//! the plain one only when it is at least [`MIN_SAVING_PERCENT`] percent smaller, because a
//! small saving does not pay for the receiver's decompression.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use chorus_protocol::frame::features;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::ConfigError;

/// Highest zstd level, as defined by the reference library (`ZSTD_maxCLevel()` in zstd 1.5).
pub const MAX_ZSTD_LEVEL: i32 = 22;

/// Smallest saving, in percent of the plain frame, for which the compressed frame is sent.
pub(crate) const MIN_SAVING_PERCENT: usize = 10;

/// Compression of live batches, in the `[compression]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// zstd level, 1 to 22, of the EVENTS_ZSTD frames sent to connections that ask for them in
    /// HELLO (relays below this node); 0 never grants `ZSTD_EVENTS` and sends plain EVENTS.
    pub zstd_level: i32,
}

impl Default for CompressionConfig {
    fn default() -> CompressionConfig {
        CompressionConfig { zstd_level: 3 }
    }
}

impl CompressionConfig {
    /// Checks that the level is one the reference library accepts.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(0..=MAX_ZSTD_LEVEL).contains(&self.zstd_level) {
            return Err(ConfigError::Invalid(format!(
                "compression.zstd_level is {}: use 0 (off) or 1 to {MAX_ZSTD_LEVEL}",
                self.zstd_level
            )));
        }
        Ok(())
    }

    /// Returns the HELLO features this node grants: the bits of `requested` that it supports.
    pub(crate) fn granted_features(&self, requested: u32) -> u32 {
        let supported = if self.zstd_level > 0 {
            features::ZSTD_EVENTS
        } else {
            0
        };
        requested & supported
    }
}

/// Returns whether a compressed frame saves at least [`MIN_SAVING_PERCENT`] of the plain one.
pub(crate) fn worth_sending(plain_len: usize, compressed_len: usize) -> bool {
    compressed_len * 100 <= plain_len * (100 - MIN_SAVING_PERCENT)
}

/// The EVENTS_ZSTD copy of a batch's frame, made on first use and shared by every clone of the
/// batch. It is `None` when compression failed or saved too little.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompressedCopy(Arc<OnceLock<Option<Bytes>>>);

impl CompressedCopy {
    /// Returns the frame to send to a connection that negotiated `ZSTD_EVENTS`: the
    /// EVENTS_ZSTD copy of `plain` when it is worth sending, else `plain`. The first call
    /// compresses at zstd `level`; calls from other threads meanwhile wait for it.
    pub(crate) fn frame_for_zstd(&self, plain: &Bytes, level: i32) -> Bytes {
        let copy = self.0.get_or_init(|| compress_if_worth(plain, level));
        copy.as_ref().unwrap_or(plain).clone()
    }
}

/// Compresses an EVENTS frame; `None` when the result saves too little or compression failed.
fn compress_if_worth(plain: &Bytes, level: i32) -> Option<Bytes> {
    match chorus_protocol::compress_events_frame(plain, level) {
        Ok(compressed) if worth_sending(plain.len(), compressed.len()) => Some(compressed),
        Ok(_) => None,
        Err(e) => {
            warn!(error = %e, len = plain.len(), "failed to compress a batch; sending it plain");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_protocol::event::encode_events_frame;
    use chorus_protocol::frame::kind;
    use chorus_protocol::{decode_frame, Event, Events, Frame, Topic};

    fn chatty_frame(count: u64) -> Bytes {
        let events: Vec<Event> = (0..count)
            .map(|i| Event {
                offset: i,
                time_us: 1_700_000_000_000_000 + i * 1000,
                flags: 0,
                publisher: format!("viewer-{}", i % 7),
                payload: Bytes::from(format!("{{\"text\":\"great play number {}\"}}", i % 5)),
            })
            .collect();
        Frame::Events(Events::new(Topic::new("live/1").unwrap(), 9, &events)).to_bytes()
    }

    #[test]
    fn saving_threshold_is_ten_percent() {
        assert!(worth_sending(1000, 900));
        assert!(!worth_sending(1000, 901));
    }

    #[test]
    fn repetitive_batch_is_sent_compressed() {
        let plain = chatty_frame(200);
        let sent = CompressedCopy::default().frame_for_zstd(&plain, 3);
        assert_eq!(sent[4], kind::EVENTS_ZSTD);
    }

    #[test]
    fn compressed_batch_decodes_to_plain_entries() {
        let plain = chatty_frame(200);
        let sent = CompressedCopy::default().frame_for_zstd(&plain, 3);
        let Ok(Frame::EventsZstd(compressed)) = decode_frame(sent) else {
            panic!("not an EVENTS_ZSTD frame");
        };
        let Ok(Frame::Events(events)) = decode_frame(plain) else {
            panic!("not an EVENTS frame");
        };
        assert_eq!(compressed.events(), &events);
    }

    #[test]
    fn tiny_batch_stays_plain() {
        let topic = Topic::new("t").unwrap();
        let plain = encode_events_frame(&topic, 1, 0, &[]);
        let sent = CompressedCopy::default().frame_for_zstd(&plain, 3);
        assert_eq!(sent, plain);
    }

    #[test]
    fn clones_share_one_compression() {
        let plain = chatty_frame(50);
        let copy = CompressedCopy::default();
        let clone = copy.clone();
        let first = copy.frame_for_zstd(&plain, 3);
        // A different level would give other bytes, so equal bytes show the result was shared.
        let second = clone.frame_for_zstd(&plain, 19);
        assert_eq!(first.as_ptr(), second.as_ptr());
    }

    #[test]
    fn level_zero_grants_nothing() {
        let config = CompressionConfig { zstd_level: 0 };
        assert_eq!(config.granted_features(features::ZSTD_EVENTS), 0);
    }

    #[test]
    fn grants_only_known_bits() {
        let config = CompressionConfig::default();
        assert_eq!(config.granted_features(0xffff_ffff), features::ZSTD_EVENTS);
    }

    #[test]
    fn level_above_max_is_invalid() {
        let config = CompressionConfig { zstd_level: 23 };
        assert!(config.validate().is_err());
    }
}
