//! Connection settings and error helpers shared by publishers and subscribers.

use std::io;
use std::time::Duration;

use chorus_client::{ClientError, Options};

/// How long a blocking read waits before the thread checks its deadline again.
pub(crate) const READ_POLL: Duration = Duration::from_millis(100);

/// Options for a bench connection named `name`, with a short read timeout so that reader
/// threads can notice the end of the run.
pub(crate) fn options(name: String, connect_timeout: Duration) -> Options {
    Options {
        client_name: name,
        connect_timeout,
        read_timeout: Some(READ_POLL),
        ..Options::default()
    }
}

/// Returns whether `error` only means that no frame arrived within the read timeout.
pub(crate) fn is_timeout(error: &ClientError) -> bool {
    match error {
        ClientError::Timeout => true,
        ClientError::Io(e) => matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        _ => false,
    }
}
