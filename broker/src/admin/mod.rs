//! The admin endpoint: an HTTP server on its own port and threads that reports the broker's
//! state as JSON, carries out operator actions, and serves Prometheus metrics.
//!
//! Every request must carry `Authorization: Bearer <token>` when a token is configured. Without
//! one, only requests from loopback addresses are served. Each connection is read and written
//! on its own short-lived thread, and the parsed requests are handled one at a time on the admin
//! thread. It sends requests for state or actions to the workers through their channels and
//! waits for the replies with a deadline, so it never touches a worker's connections itself.
//!
//! | method and path | what it does |
//! | --- | --- |
//! | `GET /v1/status` | version, role, uptime, connections, topics, publish and delivery rates |
//! | `GET /v1/topics` | every topic loaded or on disk, with offsets, rate, subscribers, size |
//! | `GET /v1/topics/{topic}` | one topic |
//! | `DELETE /v1/topics/{topic}` | ends its subscriptions and deletes its log |
//! | `PUT /v1/topics/{topic}/retention?max_age_ms=A&max_bytes=B` | changes its retention |
//! | `DELETE /v1/topics/{topic}/retention` | goes back to the configured retention |
//! | `DELETE /v1/topics/{topic}/comments/{offset}` | deletes one comment with a tombstone |
//! | `GET /v1/bans` | the banned users and the topics in slow mode |
//! | `POST /v1/bans?user=U&reason=R&purge_topic=T&purge_s=N` | bans a user, optionally purging |
//! | `DELETE /v1/bans/{user}` | lifts a ban |
//! | `GET /v1/connections?topic=T&limit=N` | connections with their subscriptions |
//! | `POST /v1/connections/{id}/kick` | sends ERROR to the connection and closes it |
//! | `GET /v1/tree` | upstream links, relay topic lag, and the relays connected below |
//! | `POST /v1/reload` | rereads the configuration file, applies the limits, reloads TLS |
//! | `GET /metrics` | Prometheus metrics in the OpenMetrics text format |
//!
//! A topic name is one path segment, with each `/` written as `%2F`. The `moderation` module
//! describes the moderation parameters, the `retention` module the retention parameters, and
//! the `tree` module how lag is measured.
//!
//! `POST /v1/reload` reads the TLS certificate, key and client CA files again at the paths the
//! running configuration names, as SIGHUP does. It checks the configuration file and the
//! certificates before it applies anything, so a bad certificate rejects the whole reload
//! with 400 and leaves the certificates in use and every setting unchanged.

mod actions;
mod config;
mod http;
mod moderation;
mod rates;
mod retention;
mod server;
mod tree;
mod views;

use std::net::SocketAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tracing::{debug, error, info, warn};

pub use config::{AdminConfig, DEFAULT_ADMIN_LISTEN};

use crate::config::{Config, ConfigError};
use crate::server::Shared;
use rates::Rates;
use server::{Acceptor, Listener, Message, Request, Response};

/// Reads the configuration again for `POST /v1/reload`: the file and the command-line flags,
/// merged and validated as at startup.
pub type ConfigLoader = Box<dyn Fn() -> Result<Config, ConfigError> + Send>;

/// How often the publish and delivery totals are sampled for the rates.
const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);

/// Error that stops the admin endpoint from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// The listening socket could not be bound.
    #[error(
        "failed to listen on {addr} for the admin endpoint: {source}; set admin.listen or \
         --admin-listen to a free address, or admin.enabled = false"
    )]
    Bind {
        /// Address that was requested.
        addr: SocketAddr,
        /// Underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The token could not be read.
    #[error(transparent)]
    Token(#[from] ConfigError),
    /// The admin thread could not be started.
    #[error("failed to start the admin thread: {0}")]
    Thread(std::io::Error),
}

/// A running admin endpoint; stopped by [`AdminServer::stop`] or when dropped.
pub(crate) struct AdminServer {
    addr: SocketAddr,
    acceptor: Acceptor,
    /// Sends [`Message::Stop`] to the admin thread.
    messages: Sender<Message>,
    loader: Arc<Mutex<Option<ConfigLoader>>>,
    thread: Option<JoinHandle<()>>,
}

/// State of the admin thread.
struct Admin {
    shared: Arc<Shared>,
    started: Instant,
    token: Option<String>,
    /// The configuration in force: the startup configuration with the reloaded limits.
    running: Config,
    loader: Arc<Mutex<Option<ConfigLoader>>>,
    rates: Rates,
    metrics: prometheus_client::registry::Registry,
}

impl AdminServer {
    /// Binds the admin endpoint and starts its thread, or returns `None` when
    /// `admin.enabled` is false.
    pub(crate) fn start(shared: &Arc<Shared>) -> Result<Option<AdminServer>, AdminError> {
        let config = &shared.config.admin;
        if !config.enabled {
            info!("admin endpoint disabled by admin.enabled = false");
            return Ok(None);
        }
        let token = config.resolve_token()?;
        let listener = Listener::bind(config.listen).map_err(|source| AdminError::Bind {
            addr: config.listen,
            source: source.into(),
        })?;
        let addr = listener.addr();
        log_start(addr, token.is_some());

        let (messages, received) = mpsc::channel();
        let loader = Arc::new(Mutex::new(None));
        let admin = Admin {
            shared: shared.clone(),
            started: Instant::now(),
            token,
            running: shared.config.clone(),
            loader: loader.clone(),
            rates: Rates::default(),
            metrics: crate::metrics::registry(shared.clone()),
        };
        let thread = std::thread::Builder::new()
            .name("chorusd-admin".into())
            .spawn(move || admin.run(received))
            .map_err(AdminError::Thread)?;
        let acceptor = match Acceptor::spawn(listener, messages.clone()) {
            Ok(acceptor) => acceptor,
            Err(e) => {
                stop_admin_thread(&messages, thread);
                return Err(AdminError::Thread(e));
            }
        };
        Ok(Some(AdminServer {
            addr,
            acceptor,
            messages,
            loader,
            thread: Some(thread),
        }))
    }

    /// Returns the bound address, with an ephemeral port resolved.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets how `POST /v1/reload` reads the configuration again.
    pub(crate) fn set_config_loader(&self, loader: ConfigLoader) {
        *self.loader.lock() = Some(loader);
    }

    /// Stops accepting connections, and stops the admin thread after the request in progress,
    /// if any.
    pub(crate) fn stop(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.acceptor.stop();
        if let Some(thread) = self.thread.take() {
            stop_admin_thread(&self.messages, thread);
        }
    }
}

fn stop_admin_thread(messages: &Sender<Message>, thread: JoinHandle<()>) {
    // The receiver lives as long as the admin thread, so the send fails only after a panic,
    // which the join reports.
    let _ = messages.send(Message::Stop);
    if thread.join().is_err() {
        error!("the admin thread panicked");
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Logs the address, and warns when requests are not authenticated.
fn log_start(addr: SocketAddr, has_token: bool) {
    // Tests and scripts find the port of an ephemeral address in this line.
    info!(%addr, authenticated = has_token, "admin listening");
    if !has_token {
        warn!(
            %addr,
            "the admin endpoint is unauthenticated: no admin.token or admin.token_file is set, \
             so it serves requests from loopback addresses only"
        );
    }
}

impl Admin {
    fn run(mut self, messages: Receiver<Message>) {
        let mut next_sample = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_sample {
                self.rates.sample(&self.shared, now);
                next_sample = now + SAMPLE_INTERVAL;
            }
            let wait = next_sample.saturating_duration_since(now);
            match messages.recv_timeout(wait) {
                Ok(Message::Request(request, reply_to)) => self.serve(&request, &reply_to),
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
        debug!("admin endpoint stopped");
    }

    fn serve(&mut self, request: &Request, reply_to: &SyncSender<Response>) {
        let reply = self.handle(request);
        let (method, target) = (request.method(), request.target());
        if reply.status >= 500 {
            warn!(%method, %target, status = reply.status, "admin request failed");
        } else {
            debug!(%method, %target, status = reply.status, "admin request");
        }
        if reply_to.send(reply.into_response()).is_err() {
            debug!(%method, %target, "admin client stopped waiting before the response was ready");
        }
    }
}
