//! Unit tests against an in-process fake server.

mod connection;
mod fake;
mod split;
mod subscriber;
