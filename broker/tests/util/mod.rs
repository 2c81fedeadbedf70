//! Helpers for tests that run the real chorusd binary on loopback.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a broker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A chorusd process on an ephemeral loopback port, stopped when dropped.
pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl Broker {
    /// Starts chorusd with its data in `data_dir` and any extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Broker {
        Broker::start_on(data_dir, "127.0.0.1:0", extra)
    }

    /// Starts chorusd listening on `listen`, which may name port 0.
    pub fn start_on(data_dir: &Path, listen: &str, extra: &[&str]) -> Broker {
        let mut child = Command::new(env!("CARGO_BIN_EXE_chorusd"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", listen, "--log", "info,chorus_broker=debug"])
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
                panic!("chorusd exited with {status} before listening; log:\n{}", log.lock().unwrap().join("\n"));
            }
            assert!(Instant::now() < deadline, "chorusd did not start listening in time");
            std::thread::sleep(Duration::from_millis(20));
        };
        Broker {
            child: Some(child),
            addr,
            data_dir: data_dir.to_owned(),
            log,
        }
    }

    /// Returns the address as "host:port" for the client.
    pub fn addr_string(&self) -> String {
        self.addr.to_string()
    }

    /// Returns the log lines written so far.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
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
        let deadline = Instant::now() + Duration::from_secs(20);
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
        self.kill();
    }
}

fn find_listen_addr(lines: &[String]) -> Option<SocketAddr> {
    lines.iter().find_map(|line| {
        if !line.contains("listening") {
            return None;
        }
        let rest = &line[line.find("addr=")? + 5..];
        rest.split_whitespace().next()?.parse().ok()
    })
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
