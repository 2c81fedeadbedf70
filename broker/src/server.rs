//! Starting and stopping the broker: listeners, workers and shared state.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use chorus_protocol::{ErrorCode, ModerateAck, PublishAck};
use mio::{Poll, Token, Waker};
use parking_lot::{Mutex, RwLock};
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{error, info};

use crate::admin::{AdminError, AdminServer, ConfigLoader};
use crate::audience::Audience;
use crate::auth::{AuthKeyError, Verifier};
use crate::config::{Config, Role};
use crate::metrics::Metrics;
use crate::moderation::Moderation;
pub use crate::moderation::ModerationError;
use crate::relay::loops::Lineage;
use crate::relay::{ClusterMap, Relay, RelayThreads};
use crate::retention::RetentionThread;
use crate::storage::{DataDir, StorageError};
use crate::tls::{TlsConfigs, TlsError};
use crate::topics::{Batch, Registry, TopicState};
use crate::transport::ListenerKind;
use crate::worker::{Worker, WAKER};
use crate::worker_admin::AdminRequest;

/// A message from one worker to another.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// A committed batch for the receiving worker's subscribers of the topic.
    Batch {
        topic: Arc<TopicState>,
        batch: Batch,
    },
    /// A committed batch of the topic did not fit the receiving worker's queue; its
    /// subscribers of the topic catch up from the log or the cache.
    MissedBatch { topic: Arc<TopicState> },
    /// A request from the admin endpoint, answered on the channel it carries.
    Admin(AdminRequest),
    /// A relay topic's upstream SUBSCRIBED arrived: subscriptions waiting for it can complete,
    /// and subscribers of a replaced stream move to the new one.
    UpstreamSubscribed { topic: Arc<TopicState> },
    /// The upstream rejected a relay topic's subscription; local subscribers get the error.
    UpstreamError {
        topic: Arc<TopicState>,
        code: ErrorCode,
        message: String,
    },
    /// The acknowledgement of a publish that a relay forwarded upstream, for a client
    /// connection of the receiving worker.
    PublishAck {
        token: Token,
        conn_id: u64,
        ack: PublishAck,
    },
    /// The MODERATE_ACK of a MODERATE that a relay forwarded upstream, for a client connection
    /// of the receiving worker.
    ModerateAck {
        token: Token,
        conn_id: u64,
        ack: ModerateAck,
    },
}

/// Handle through which other threads reach one worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    tx: Mutex<Sender<WorkerMsg>>,
    waker: Waker,
    woken: AtomicBool,
    /// Bytes of batch frames in the worker's channel, bounded by `limits.worker_queue_bytes`.
    batch_budget: ByteBudget,
}

/// A count of bytes in flight, bounded by a maximum that a single item may exceed only when
/// nothing else is in flight.
#[derive(Debug)]
pub(crate) struct ByteBudget {
    used: AtomicUsize,
    max: usize,
}

impl ByteBudget {
    pub(crate) fn new(max: usize) -> ByteBudget {
        ByteBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Reserves `len` bytes and returns true, unless that would pass the maximum while other
    /// bytes are in flight.
    pub(crate) fn try_reserve(&self, len: usize) -> bool {
        let before = self.used.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before + len > self.max {
            self.used.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Returns `len` reserved bytes.
    pub(crate) fn release(&self, len: usize) {
        self.used.fetch_sub(len, Ordering::AcqRel);
    }
}

impl WorkerHandle {
    /// Queues a batch for the worker unless its channel already contains
    /// `limits.worker_queue_bytes` of batches, and returns whether it was queued. In place of a batch that does not fit,
    /// the worker gets [`WorkerMsg::MissedBatch`], which moves its subscribers of the topic to
    /// catch-up from the log or the cache. A batch always fits an empty channel.
    pub(crate) fn send_batch(&self, topic: Arc<TopicState>, batch: Batch) -> bool {
        if !self.batch_budget.try_reserve(batch.frame.len()) {
            self.send(WorkerMsg::MissedBatch { topic });
            return false;
        }
        self.send(WorkerMsg::Batch { topic, batch });
        true
    }

    /// Records that the worker took a batch of `len` bytes from its channel.
    pub(crate) fn batch_taken(&self, len: usize) {
        self.batch_budget.release(len);
    }

    pub(crate) fn send(&self, message: WorkerMsg) {
        // The receiver lives as long as the worker; a send to a stopped worker is dropped,
        // which only happens during shutdown.
        let _ = self.tx.lock().send(message);
    }

    /// Wakes the worker unless a wake-up is already pending, to save system calls.
    pub(crate) fn wake(&self) {
        if !self.woken.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.waker.wake() {
                error!(error = %e, "failed to wake worker");
            }
        }
    }

    pub(crate) fn clear_woken(&self) {
        self.woken.store(false, Ordering::Release);
    }
}

/// State shared by all workers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) registry: Registry,
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) connections: AtomicUsize,
    pub(crate) next_conn_id: AtomicU64,
    /// Counters for the metrics, one block per worker.
    pub(crate) metrics: Metrics,
    /// Viewer counts and reaction sums that each worker publishes for worker 0 to add up.
    pub(crate) audience: Audience,
    /// TLS configurations for new connections; replaced on reload.
    pub(crate) tls: RwLock<Option<TlsConfigs>>,
    /// This node's id and the relays connected below it, for loop detection.
    pub(crate) lineage: Lineage,
    /// The upstream links, on a relay.
    pub(crate) relay: Option<Relay>,
    /// The topic map over several origins, when `cluster.origins` is set.
    pub(crate) cluster: Option<ClusterMap>,
    /// Token verifier, when `auth.enabled` is set.
    pub(crate) auth: Option<Verifier>,
    /// Bans, slow mode and the publish limits, applied at an origin.
    pub(crate) moderation: Moderation,
}

impl Shared {
    /// Reloads the certificate and key files named in the configuration. On failure the
    /// configuration in use stays, and the error says why.
    pub(crate) fn reload_tls(&self) -> Result<(), TlsError> {
        if let Some(configs) = self.load_tls()? {
            self.install_tls(configs);
        }
        Ok(())
    }

    /// Reads the certificate, key and client CA files named in the configuration without
    /// putting them in use. Returns `None` when no TLS listener is configured.
    pub(crate) fn load_tls(&self) -> Result<Option<TlsConfigs>, TlsError> {
        if !self.config.tls.enabled() {
            return Ok(None);
        }
        TlsConfigs::load(&self.config.tls).map(Some)
    }

    /// Puts loaded TLS configurations in use for new connections; existing connections keep
    /// the ones they started with.
    pub(crate) fn install_tls(&self, configs: TlsConfigs) {
        *self.tls.write() = Some(configs);
    }
}

/// Error that prevents the broker from starting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The data directory could not be opened or locked.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A listener could not be bound.
    #[error("failed to listen on {addr}: {source}")]
    Bind {
        /// Address that was requested.
        addr: SocketAddr,
        /// Underlying error.
        source: io::Error,
    },
    /// The TLS certificate, key or client CA could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A worker's poll instance or thread could not be created.
    #[error("failed to start worker: {0}")]
    Worker(io::Error),
    /// The admin endpoint could not be started.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The retention thread could not be created.
    #[error("failed to start the retention thread: {0}")]
    Retention(io::Error),
    /// A relay thread could not be created.
    #[error("failed to start the relay threads: {0}")]
    Relay(io::Error),
    /// The keys that verify client tokens could not be loaded.
    #[error(transparent)]
    Auth(#[from] AuthKeyError),
    /// The file of bans and slow-mode intervals could not be read.
    #[error(transparent)]
    Moderation(#[from] ModerationError),
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    admin: Option<AdminServer>,
    /// Applies retention and due `interval` syncs in the background.
    retention: RetentionThread,
    /// Upstream links and the linger timer, on a relay.
    relay: Option<RelayThreads>,
}

impl Server {
    /// Opens the data directory, binds the listeners and starts one worker per configured core.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let auth = Verifier::from_config(&config.auth)?;
        // main raised RLIMIT_NOFILE before this, and the file budget takes a share of it.
        let data_dir = DataDir::open_with(&config.data_dir, config.storage.file_cache_config())?;
        info!(path = %data_dir.path().display(), "data directory opened");
        let moderation = Moderation::open(&config.moderation, data_dir.path())?;
        let workers = config.worker_count();

        let mut per_worker: Vec<Vec<(std::net::TcpListener, ListenerKind)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        let mut ws_addrs = Vec::new();
        let mut tls_addrs = Vec::new();
        let tls_configs = if config.tls.enabled() {
            Some(TlsConfigs::load(&config.tls)?)
        } else {
            None
        };
        let websocket = config
            .websocket
            .listen
            .iter()
            .map(|a| (*a, ListenerKind::WebSocket));
        let tls = config.tls.listen.iter().map(|a| (*a, ListenerKind::TcpTls));
        let wss = config
            .tls
            .ws_listen
            .iter()
            .map(|a| (*a, ListenerKind::WebSocketTls));
        let listeners = config
            .listen
            .iter()
            .map(|a| (*a, ListenerKind::Tcp))
            .chain(websocket)
            .chain(tls)
            .chain(wss);
        for (addr, kind) in listeners {
            let (bound, sockets) = bind_reuseport(addr, workers)?;
            match kind {
                ListenerKind::Tcp => {
                    info!(addr = %bound, workers, "listening");
                    local_addrs.push(bound);
                }
                ListenerKind::WebSocket => {
                    info!(addr = %bound, workers, "listening for WebSocket");
                    ws_addrs.push(bound);
                }
                ListenerKind::TcpTls => {
                    info!(addr = %bound, workers, "listening with TLS");
                    tls_addrs.push(bound);
                }
                ListenerKind::WebSocketTls => {
                    info!(addr = %bound, workers, "listening for WebSocket with TLS");
                    tls_addrs.push(bound);
                }
            }
            for (worker, socket) in sockets.into_iter().enumerate() {
                per_worker[worker].push((socket, kind));
            }
        }

        let mut polls = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        let mut receivers = Vec::with_capacity(workers);
        for _ in 0..workers {
            let poll = Poll::new().map_err(StartError::Worker)?;
            let waker = Waker::new(poll.registry(), WAKER).map_err(StartError::Worker)?;
            let (tx, rx) = mpsc::channel();
            handles.push(WorkerHandle {
                tx: Mutex::new(tx),
                waker,
                woken: AtomicBool::new(false),
                batch_budget: ByteBudget::new(config.limits.worker_queue_bytes),
            });
            polls.push(poll);
            receivers.push(rx);
        }

        let registry = Registry::new(data_dir.clone(), config.clone(), workers);
        let (relay, link_commands) = match config.role {
            Role::Relay => {
                let (relay, commands) = Relay::new(&config);
                (Some(relay), commands)
            }
            Role::Origin => (None, Vec::new()),
        };
        let node_id = match config.node_id.as_str() {
            "" => crate::relay::loops::stored_node_id(data_dir.path()),
            id => id.to_owned(),
        };
        let lineage = Lineage::new(&node_id);
        info!(node = lineage.node_id(), role = ?config.role, "node id");
        let cluster = ClusterMap::from_config(&config);
        let shared = Arc::new(Shared {
            config,
            registry,
            workers: handles,
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
            metrics: Metrics::new(workers),
            audience: Audience::new(workers),
            tls: RwLock::new(tls_configs),
            lineage,
            relay,
            cluster,
            auth,
            moderation,
        });

        // Started before the workers, so that a failure leaves no worker running; its requests
        // wait in the workers' channels until they run.
        let admin = AdminServer::start(&shared)?;
        let retention = match RetentionThread::start(Arc::clone(&shared), data_dir) {
            Ok(retention) => retention,
            Err(e) => {
                if let Some(admin) = admin {
                    admin.stop();
                }
                return Err(StartError::Retention(e));
            }
        };
        let relay = if shared.relay.is_some() {
            match RelayThreads::start(&shared, link_commands) {
                Ok(threads) => Some(threads),
                Err(e) => {
                    if let Some(admin) = admin {
                        admin.stop();
                    }
                    retention.stop();
                    return Err(StartError::Relay(e));
                }
            }
        } else {
            None
        };

        let mut threads = Vec::with_capacity(workers);
        let parts = polls.into_iter().zip(receivers).zip(per_worker);
        for (index, ((poll, rx), listeners)) in parts.enumerate() {
            let worker = Worker::new(index, poll, shared.clone(), listeners, rx)
                .map_err(StartError::Worker)?;
            let thread = std::thread::Builder::new()
                .name(format!("chorusd-worker-{index}"))
                .spawn(move || worker.run())
                .map_err(StartError::Worker)?;
            threads.push(thread);
        }
        Ok(Server {
            shared,
            threads,
            local_addrs,
            ws_addrs,
            tls_addrs,
            admin,
            retention,
            relay,
        })
    }

    /// Returns the addresses the listeners are bound to, with ephemeral ports resolved.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Returns the addresses the WebSocket listeners are bound to.
    pub fn ws_addrs(&self) -> &[SocketAddr] {
        &self.ws_addrs
    }

    /// Returns the addresses the TLS listeners (protocol and WebSocket) are bound to.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// Reloads the TLS certificate and key: new connections get the new ones, existing
    /// connections keep theirs, and after an error the ones in use stay.
    pub fn reload_tls(&self) -> Result<(), TlsError> {
        self.shared.reload_tls()
    }

    /// Returns the address of the admin endpoint, or `None` when `admin.enabled` is false.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::addr)
    }

    /// Sets how the admin endpoint's reload reads the configuration again.
    pub fn set_config_loader(&self, loader: ConfigLoader) {
        if let Some(admin) = &self.admin {
            admin.set_config_loader(loader);
        }
    }

    /// Stops the workers, commits and flushes every loaded topic, and returns once done.
    pub fn shutdown(self) {
        if let Some(admin) = self.admin {
            admin.stop();
        }
        self.shared.shutdown.store(true, Ordering::Release);
        for worker in &self.shared.workers {
            worker.wake();
        }
        for thread in self.threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
        if let Some(relay) = self.relay {
            relay.stop();
        }
        self.retention.stop();
        for topic in self.shared.registry.loaded() {
            let mut inner = topic.inner.lock();
            if let Some(log) = inner.log.as_mut() {
                if let Err(e) = log.sync() {
                    error!(topic = %topic.name, error = %e, "failed to flush topic log at shutdown");
                }
            }
        }
    }
}

/// Binds one listening socket per worker to `addr` with SO_REUSEPORT, so the kernel spreads
/// new connections over the workers.
///
/// A plain bind without SO_REUSEPORT comes first: it fails if any other process already listens
/// on the address, which SO_REUSEPORT alone would silently allow for a process of the same user.
/// It also resolves port 0 to the port that all workers then share.
fn bind_reuseport(
    addr: SocketAddr,
    workers: usize,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), StartError> {
    let bind_error = |source| StartError::Bind { addr, source };
    let probe = std::net::TcpListener::bind(addr).map_err(bind_error)?;
    let bound = probe.local_addr().map_err(bind_error)?;
    drop(probe);

    let mut sockets = Vec::with_capacity(workers);
    for _ in 0..workers {
        let socket = Socket::new(
            Domain::for_address(bound),
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(bind_error)?;
        socket.set_reuse_address(true).map_err(bind_error)?;
        socket.set_reuse_port(true).map_err(bind_error)?;
        socket.set_nonblocking(true).map_err(bind_error)?;
        socket.bind(&bound.into()).map_err(bind_error)?;
        socket.listen(4096).map_err(bind_error)?;
        sockets.push(socket.into());
    }
    Ok((bound, sockets))
}

#[cfg(test)]
mod tests {
    use super::ByteBudget;

    #[test]
    fn budget_rejects_bytes_past_maximum() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(60));
    }

    #[test]
    fn budget_accepts_again_after_release() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(60));
        budget.release(60);
        assert!(budget.try_reserve(60));
    }

    #[test]
    fn budget_accepts_oversized_item_when_empty() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_reserve(500));
        assert!(!budget.try_reserve(1));
    }

    #[test]
    fn budget_fills_exactly_to_maximum() {
        let budget = ByteBudget::new(100);
        assert!(budget.try_reserve(40));
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(1));
    }
}
