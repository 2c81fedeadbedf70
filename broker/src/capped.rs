//! Capped delivery: a subscription that asked for at most R comments a second.

use chorus_protocol::Cap;
use mio::Token;

use crate::worker::Worker;

impl Worker {
    /// Handles CAP.
    pub(crate) fn on_cap(&mut self, _token: Token, _cap: Cap) {}
}
