//! Starting and stopping the broker: listeners, workers and shared state.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::{Poll, Waker};
use parking_lot::Mutex;
use socket2::{Domain, Protocol, Socket, Type};
use tracing::{error, info};

use crate::config::Config;
use crate::storage::{DataDir, StorageError};
use crate::topics::{Batch, Registry, TopicState};
use crate::transport::ListenerKind;
use crate::worker::{Worker, WAKER};

/// A message from one worker to another.
#[derive(Debug)]
pub(crate) enum WorkerMsg {
    /// A committed batch for the receiving worker's subscribers of the topic.
    Batch {
        topic: Arc<TopicState>,
        batch: Batch,
    },
}

/// How other threads reach one worker.
#[derive(Debug)]
pub(crate) struct WorkerHandle {
    tx: Mutex<Sender<WorkerMsg>>,
    waker: Waker,
    woken: AtomicBool,
}

impl WorkerHandle {
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
}

/// Why the broker could not start.
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
    /// A worker's poll instance or thread could not be created.
    #[error("failed to start worker: {0}")]
    Worker(io::Error),
}

/// A running broker.
#[derive(Debug)]
pub struct Server {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    local_addrs: Vec<SocketAddr>,
    ws_addrs: Vec<SocketAddr>,
}

impl Server {
    /// Opens the data directory, binds the listeners and starts one worker per configured core.
    pub fn start(config: Config) -> Result<Server, StartError> {
        let data_dir = DataDir::open(&config.data_dir)?;
        info!(path = %data_dir.path().display(), "data directory opened");
        let workers = config.worker_count();

        let mut per_worker: Vec<Vec<(std::net::TcpListener, ListenerKind)>> =
            (0..workers).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        let mut ws_addrs = Vec::new();
        let listeners = config.listen.iter().map(|a| (*a, ListenerKind::Tcp)).chain(
            config
                .websocket
                .listen
                .iter()
                .map(|a| (*a, ListenerKind::WebSocket)),
        );
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
            });
            polls.push(poll);
            receivers.push(rx);
        }

        let registry = Registry::new(data_dir, config.log_config(), workers);
        let shared = Arc::new(Shared {
            config,
            registry,
            workers: handles,
            shutdown: AtomicBool::new(false),
            connections: AtomicUsize::new(0),
            next_conn_id: AtomicU64::new(1),
        });

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

    /// Stops the workers, commits and flushes every loaded topic, and returns once done.
    pub fn shutdown(self) {
        self.shared.shutdown.store(true, Ordering::Release);
        for worker in &self.shared.workers {
            worker.wake();
        }
        for thread in self.threads {
            if thread.join().is_err() {
                error!("a worker thread panicked");
            }
        }
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
