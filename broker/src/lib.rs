//! chorusd, the chorus live-comment broker.
//!
//! The origin role: it accepts publishes, gives each comment the next offset of its topic,
//! appends it to the topic's segment log, acknowledges it once stored, and fans it out to
//! subscribers in EVENTS batches that are encoded once and shared.
//!
//! The relay role (`role = "relay"`): it holds no log, subscribes upstream for its own
//! subscribers, forwards publishes upstream, and serves resumes from a cache of recent comments.

pub mod admin;
mod audience;
pub mod auth;
mod capped;
pub mod cli;
pub mod compress;
pub mod config;
mod conn;
mod delivery;
mod handler;
mod metrics;
mod moderation;
mod relay;
mod retention;
pub mod server;
pub mod storage;
pub mod tls;
mod topics;
mod transport;
mod worker;
mod worker_admin;
mod worker_relay;

pub use config::Config;
pub use server::Server;
