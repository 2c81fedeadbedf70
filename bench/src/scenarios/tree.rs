//! chorusd processes that a scenario starts itself, on loopback ports chosen by the kernel, with
//! data in a temporary directory: an origin and relays below it.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// How long a node may take to listen, and a relay to connect upstream.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Marker of the log line that gives the plain TCP listener's address.
const LISTEN_MARKER: &str = ": listening addr=";

/// Log lines kept for the error message of a node that fails to start.
const KEPT_LINES: usize = 40;

/// A running chorusd, killed and its directory removed when dropped.
pub(crate) struct Node {
    child: Child,
    /// Address of the client listener, as HOST:PORT.
    pub(crate) addr: String,
    dir: PathBuf,
    connected: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
}

/// Settings shared by every node of a tree.
#[derive(Debug, Clone)]
pub(crate) struct NodeSettings {
    /// The chorusd binary.
    pub(crate) chorusd: PathBuf,
    /// Event-loop threads per node.
    pub(crate) workers: usize,
}

impl NodeSettings {
    /// Returns the settings with `chorusd`, or the `chorusd` next to this program.
    pub(crate) fn new(chorusd: Option<PathBuf>, workers: usize) -> anyhow::Result<NodeSettings> {
        let chorusd = match chorusd {
            Some(path) => path,
            None => std::env::current_exe()
                .context("failed to find this program's path")?
                .with_file_name("chorusd"),
        };
        if !chorusd.is_file() {
            bail!(
                "chorusd not found at {}; build it with `cargo build --release -p chorus-broker` \
                 or pass --chorusd",
                chorusd.display()
            );
        }
        Ok(NodeSettings { chorusd, workers })
    }

    /// Starts an origin.
    pub(crate) fn origin(&self, name: &str) -> anyhow::Result<Node> {
        Node::start(self, name, "")
    }

    /// Starts a relay below `upstream` and waits until it is connected.
    pub(crate) fn relay(&self, name: &str, upstream: &str) -> anyhow::Result<Node> {
        let config = format!(
            "role = \"relay\"\n[relay]\nupstreams = [{upstream:?}]\nreconnect_initial_ms = 20\n\
             reconnect_max_ms = 300\n"
        );
        let node = Node::start(self, name, &config)?;
        node.wait_connected()?;
        Ok(node)
    }
}

impl Node {
    fn start(settings: &NodeSettings, name: &str, config: &str) -> anyhow::Result<Node> {
        let dir = std::env::temp_dir().join(format!("chorus-bench-{}-{name}", std::process::id()));
        // A directory left by an earlier run with the same process id contains nothing needed.
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).with_context(|| format!("failed to create {}", dir.display()))?;
        let config_file = dir.join("chorusd.toml");
        fs::write(&config_file, config)
            .with_context(|| format!("failed to write {}", config_file.display()))?;

        let mut child = Command::new(&settings.chorusd)
            .arg("--config")
            .arg(&config_file)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .args(["--workers", &settings.workers.to_string(), "--log", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("failed to start {}", settings.chorusd.display()))?;
        let stderr = child.stderr.take().context("chorusd stderr is not piped")?;
        let connected = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Vec::new()));
        drain_log(stderr, connected.clone(), log.clone());

        let mut node = Node {
            child,
            addr: String::new(),
            dir,
            connected,
            log,
        };
        node.addr = node.wait_listening(name)?;
        Ok(node)
    }

    /// Waits for the listener's log line and returns its address.
    fn wait_listening(&mut self, name: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = self.lines().iter().find_map(|line| {
                let rest = &line[line.find(LISTEN_MARKER)? + LISTEN_MARKER.len()..];
                rest.split_whitespace().next().map(str::to_owned)
            });
            if let Some(addr) = found {
                return Ok(addr);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                bail!(
                    "chorusd {name} exited with {status}; log:\n{}",
                    self.lines().join("\n")
                );
            }
            if Instant::now() >= deadline {
                bail!("chorusd {name} did not listen within {START_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_connected(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        while !self.connected.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                bail!(
                    "relay {} did not connect upstream within {START_TIMEOUT:?}; log:\n{}",
                    self.addr,
                    self.lines().join("\n")
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Returns the process id of the chorusd.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn lines(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|lines| lines.clone())
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Reads a node's log on a thread for the life of the process, so the pipe never fills. Keeps
/// the first lines, which contain the listen address and any start-up error, and notes when the
/// relay link connects.
fn drain_log(
    stderr: std::process::ChildStderr,
    connected: Arc<AtomicBool>,
    log: Arc<Mutex<Vec<String>>>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("connected upstream") {
                connected.store(true, Ordering::Release);
            }
            if let Ok(mut lines) = log.lock() {
                if lines.len() < KEPT_LINES {
                    lines.push(line);
                }
            }
        }
    });
}
