//! chorusd, the chorus live-comment broker.
//!
//! The origin role: it accepts publishes, gives each comment the next offset of its topic,
//! appends it to the topic's segment log, acknowledges it once stored, and fans it out to
//! subscribers in EVENTS batches that are encoded once and shared.

pub mod cli;
pub mod config;
mod conn;
mod delivery;
mod handler;
pub mod server;
pub mod storage;
mod topics;
mod transport;
mod worker;

pub use config::Config;
pub use server::Server;
