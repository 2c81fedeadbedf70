//! Helpers for tests that run the real chorusd binary on loopback.

#![allow(dead_code, unreachable_pub)]

pub mod chatlog;
pub mod client;
pub mod pki;
pub mod raw;

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a restarted broker may keep failing to bind its previous address.
const RESTART_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a broker may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Worker threads a test broker runs unless the test passes `--workers`: two, so that fan-out
/// between workers is exercised on any machine.
const DEFAULT_WORKERS: &str = "2";

/// Log lines printed when a test fails while a broker runs.
const LOG_TAIL_ON_FAILURE: usize = 80;

/// A chorusd process on a loopback port, killed when dropped.
pub struct Broker {
    child: Option<Child>,
    pid: u32,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// Starts chorusd with its data in `data_dir` and any extra flags, on an ephemeral port.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts chorusd listening on `listen`, which may name port 0.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Broker {
        Broker::try_start_on(data_dir, listen, extra).unwrap_or_else(|message| panic!("{message}"))
    }

    /// Starts chorusd listening on `listen` again after a restart. Binding a port that was in
    /// use a moment ago can fail while the kernel still has a socket on it, so failed starts are
    /// retried for a few seconds.
    pub fn restart_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Broker {
        let deadline = Instant::now() + RESTART_TIMEOUT;
        loop {
            match Broker::try_start_on(data_dir, listen, extra) {
                Ok(broker) => return broker,
                Err(message) if Instant::now() >= deadline => panic!("{message}"),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// Starts chorusd listening on `listen`. Returns the log as the error when the process
    /// exits before it listens.
    pub fn try_start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Result<Broker, String> {
        let mut command = Command::new(env!("CARGO_BIN_EXE_chorusd"));
        command.arg("--data-dir").arg(data_dir).args([
            "--listen",
            listen,
            "--log",
            "info,chorus_broker=debug",
        ]);
        if !extra.contains(&"--workers") {
            command.args(["--workers", DEFAULT_WORKERS]);
        }
        // The admin endpoint's default port is fixed, so brokers running side by side in
        // tests would collide on it.
        if !extra.contains(&"--admin-listen") {
            command.args(["--admin-listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start chorusd");

        // Drain stderr on a thread for the whole life of the process, so the pipe never fills,
        // and keep the lines for assertions and failure messages.
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        let addr = loop {
            if let Some(addr) = find_listen_addr(&log.lock().unwrap()) {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                let lines = log.lock().unwrap().join("\n");
                return Err(format!(
                    "chorusd exited with {status} before listening; log:\n{lines}"
                ));
            }
            assert!(
                Instant::now() < deadline,
                "chorusd did not start listening in time"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(Broker {
            pid: child.id(),
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
            log,
        })
    }

    /// Returns the address as "host:port" for the client.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Returns whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Returns the resident set size of the process in bytes, from `/proc/<pid>/status`.
    pub fn rss_bytes(&self) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status =
            fs::read_to_string(&path).unwrap_or_else(|e| panic!("failed to read {path}: {e}"));
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap_or_else(|| panic!("no VmRSS line in {path}"));
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("unreadable VmRSS line {line:?}"));
        kib * 1024
    }

    /// Returns the log lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Returns the address of the admin endpoint, from its `admin listening addr=...` log line.
    pub fn admin_addr(&self) -> SocketAddr {
        let line = self.wait_for_log("admin listening", START_TIMEOUT);
        parse_addr_field(&line)
            .unwrap_or_else(|| panic!("no address in the admin log line {line:?}"))
    }

    /// Waits until a log line contains `needle`, or panics after `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log_lines().into_iter().find(|l| l.contains(needle)) {
                return line;
            }
            assert!(
                Instant::now() < deadline,
                "no log line contains {needle:?}; log:\n{}",
                self.log_lines().join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the broker with SIGTERM and waits for it to exit; returns whether it exited 0.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the broker with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let lines = self.log_lines();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
            eprintln!(
                "chorusd {} log, last {} lines:\n{}",
                self.pid,
                tail.len(),
                tail.join("\n")
            );
        }
        self.kill();
    }
}

/// Parses the `addr=` field of a log line.
fn parse_addr_field(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("addr=")? + 5..];
    rest.split_whitespace().next()?.parse().ok()
}

/// Finds the address of the plain TCP listener, whose log line has the bare message
/// "listening" (the WebSocket, TLS and admin listeners add words to it).
fn find_listen_addr(lines: &[String]) -> Option<SocketAddr> {
    const MARKER: &str = ": listening addr=";
    lines.iter().find_map(|line| {
        let rest = &line[line.find(MARKER)? + MARKER.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A temporary directory that contains a broker's data directory (`data/`) and, when a test
/// needs one, its configuration file, so that the data directory contains only what the
/// broker writes.
pub struct TestDir {
    root: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            root: tempfile::tempdir().expect("failed to create a temporary directory"),
        }
    }

    /// Returns the directory that contains the data directory.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Returns the broker's data directory, which the broker creates on start.
    pub fn data(&self) -> PathBuf {
        self.root.path().join("data")
    }

    /// Writes a TOML configuration file next to the data directory and returns its path.
    pub fn write_config(&self, text: &str) -> String {
        let path = self.root.path().join("chorusd.toml");
        fs::write(&path, text).expect("failed to write the configuration file");
        path.to_str().expect("temporary paths are UTF-8").to_owned()
    }
}

/// Returns the names of the entries in `dir`, or an empty set when it does not exist.
pub fn list_dir(dir: &Path) -> BTreeSet<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Polls `check` until it returns true or `timeout` passes; returns the last result.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Ports that [`free_addr`] hands out. They are below the kernel's ephemeral range (32768 and
/// up by default on Linux), so no outgoing connection of another process takes one between the
/// check and the start of the broker. They also avoid the ports the bench scripts use.
const FREE_PORTS: std::ops::Range<u16> = 20_000..27_000;

/// Returns a loopback address with a port that was free a moment ago and that this test process
/// has not handed out before. It is for a broker whose address must be known before it starts,
/// such as a relay that others name as their upstream, or a node restarted on one address.
#[allow(dead_code)]
pub fn free_addr() -> String {
    use rand::Rng;
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        let port = rng.gen_range(FREE_PORTS);
        let mut handed_out = HANDED_OUT.lock().expect("port list lock");
        if handed_out.contains(&port) {
            continue;
        }
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return format!("127.0.0.1:{port}");
        }
    }
    panic!("no free loopback port in {FREE_PORTS:?} after 1000 tries");
}
