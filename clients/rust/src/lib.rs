//! Blocking Rust client for the chorus live-comment broker.
//!
//! [`Connection`] is one TCP connection after the handshake, over TLS when [`Options::tls`] is
//! set: publish, subscribe and receive frames, one call at a time, or [`Connection::split`] it
//! for a sending and a receiving thread. [`Subscriber`] follows one topic across lost
//! connections and returns each comment once, in offset order.
//!
//! All encoding and decoding is done by [`chorus_protocol`]; this crate adds sockets, buffering,
//! timeouts and reconnection.
//!
//! ```no_run
//! use chorus_client::{Connection, Options, StartAt, Subscriber, Topic};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let topic = Topic::new("event/final")?;
//! let mut conn = Connection::connect("127.0.0.1:7400", &Options::default())?;
//! let ack = conn.publish(&topic, b"what a goal")?;
//! println!("stored at offset {}", ack.offset);
//!
//! let mut subscriber =
//!     Subscriber::connect("127.0.0.1:7400", topic, StartAt::Last(10), Options::default())?;
//! let event = subscriber.next_event()?;
//! println!("{}: {}", event.offset, String::from_utf8_lossy(&event.payload));
//! # Ok(())
//! # }
//! ```
//!
//! Over TLS, [`Options::tls`] names the CA that signs the server's certificate (or leaves it to
//! the system's CA certificates) and, for mutual TLS, the client's certificate and key:
//!
//! ```no_run
//! use chorus_client::{Connection, Options, TlsOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let options = Options {
//!     tls: Some(TlsOptions {
//!         ca_file: Some("/etc/chorus/tls/ca.pem".into()),
//!         ..TlsOptions::default()
//!     }),
//!     ..Options::default()
//! };
//! let conn = Connection::connect("127.0.0.1:7443", &options)?;
//! # Ok(())
//! # }
//! ```

mod connection;
mod error;
mod options;
mod split;
mod subscriber;
mod tls;
mod transport;
mod wire;

#[cfg(test)]
mod tests;

/// The rustls version whose errors [`ClientError::Tls`] carries.
pub use rustls;

pub use chorus_protocol::{
    ErrorCode, Event, Events, Frame, PublishAck, StartAt, Subscribed, Topic, Welcome,
};
pub use connection::{Ack, Connection};
pub use error::ClientError;
pub use options::{Backoff, Options, TlsOptions};
pub use split::{ConnectionReader, ConnectionWriter};
pub use subscriber::Subscriber;
