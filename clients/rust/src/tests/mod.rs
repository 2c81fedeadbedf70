//! Unit tests against in-process fake servers, plain and TLS.

mod connection;
mod fake;
mod split;
mod subscriber;
mod tls;
