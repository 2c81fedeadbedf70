//! Viewer counts and reactions: added up per node and written by the origin to companion
//! streams.

use chorus_protocol::{AudienceEntry, React};
use mio::Token;

use crate::worker::Worker;

impl Worker {
    /// Handles REACT.
    pub(crate) fn on_react(&mut self, _token: Token, _react: React) {}

    /// Handles AUDIENCE.
    pub(crate) fn on_audience(&mut self, _token: Token, _entries: Vec<AudienceEntry>) {}
}
