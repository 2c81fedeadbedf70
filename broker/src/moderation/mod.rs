//! Moderation at the origin: deleted comments, bans, slow mode and the publish limits.

use chorus_protocol::Frame;
use chorus_protocol::{ErrorCode, Moderate, ModerateAck, RelayPublish};
use mio::Token;

use crate::worker::Worker;

impl Worker {
    /// Handles MODERATE.
    pub(crate) fn on_moderate(&mut self, token: Token, moderate: Moderate) {
        let ack = Frame::ModerateAck(ModerateAck {
            seq: moderate.seq,
            code: ErrorCode::Forbidden,
        });
        self.send(token, &ack);
    }

    /// Handles RELAY_PUBLISH.
    pub(crate) fn on_relay_publish(&mut self, token: Token, publish: RelayPublish) {
        self.reject_publish(token, publish.seq, ErrorCode::Forbidden);
    }
}
