//! Runs `chorus-bench spike` with small numbers against a real chorusd on loopback and checks
//! the delivery counts of its JSON report.
//!
//! The test runs the chorusd binary that cargo built into the same target directory. Cargo does
//! not build another package's binaries for this test, so `cargo build --workspace
//! --all-targets` (which `./test.sh` runs) must come first, or the test runs a stale chorusd.

use std::fs::{self, File};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Subscribers of the spike's topic.
const SUBSCRIBERS: u64 = 10;

/// Steady rate before and after the spike, in comments per second.
const RATE: u64 = 200;

/// Rate multiplier during the spike.
const FACTOR: u64 = 10;

/// Seconds of each phase: before, during and after the spike.
const PHASE_SECS: u64 = 2;

/// Comments the publisher sends over the three phases.
const PUBLISHED: u64 = RATE * PHASE_SECS + RATE * FACTOR * PHASE_SECS + RATE * PHASE_SECS;

/// How long chorusd may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the bench may run: 6 s of publishing, at most 10 s waiting for deliveries (the
/// bench's default --drain-timeout) and the time to connect, with room for a loaded machine.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// Log lines printed when the test fails while chorusd runs.
const LOG_TAIL_ON_FAILURE: usize = 40;

/// A chorusd process on a loopback port, killed when dropped.
struct Chorusd {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl Chorusd {
    /// Starts chorusd with its data in `data_dir`, on ephemeral loopback ports.
    fn start(data_dir: &Path) -> Chorusd {
        let mut child = Command::new(chorusd_path())
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(["--workers", "2"])
            .args(["--log", "info"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("failed to start chorusd");

        // Drains stderr for the life of the process, so the pipe never fills.
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let found = find_listen_addr(&log.lock().unwrap());
            if let Some(addr) = found {
                return Chorusd { child, addr, log };
            }
            if let Ok(Some(status)) = child.try_wait() {
                let lines = log.lock().unwrap().join("\n");
                panic!("chorusd exited with {status} before listening; log:\n{lines}");
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("chorusd did not start listening within {START_TIMEOUT:?}");
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Chorusd {
    fn drop(&mut self) {
        if thread::panicking() {
            let lines = self.log.lock().unwrap();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_ON_FAILURE)..];
            eprintln!(
                "chorusd {} log, last {} lines:\n{}",
                self.child.id(),
                tail.len(),
                tail.join("\n")
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns the path of chorusd in the target directory of this test executable, which runs
/// from `target/<profile>/deps/`, or fails the test with the command that builds it.
fn chorusd_path() -> PathBuf {
    let exe = std::env::current_exe().expect("failed to find the test executable's path");
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or_else(|| {
        panic!(
            "test executable {} is not in a deps directory",
            exe.display()
        )
    });
    let path = profile_dir.join(format!("chorusd{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "chorusd not found at {}; build it first with `cargo build --workspace --all-targets`",
        path.display()
    );
    path
}

/// Finds the address of the plain TCP listener in chorusd's log line
/// `chorus_broker::server: listening addr=...`. The WebSocket, TLS and admin listeners add
/// words before "listening".
fn find_listen_addr(lines: &[String]) -> Option<SocketAddr> {
    const MARKER: &str = ": listening addr=";
    lines.iter().find_map(|line| {
        let rest = &line[line.find(MARKER)? + MARKER.len()..];
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Waits for `child` to exit, or kills it and fails the test after `timeout`.
fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("failed to wait for chorus-bench") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chorus-bench spike did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// Returns the unsigned integer field `name` of the report.
fn count(report: &Value, name: &str) -> u64 {
    report[name]
        .as_u64()
        .unwrap_or_else(|| panic!("report field {name:?} is not an unsigned integer: {report}"))
}

#[test]
fn spike_delivers_all_comments_in_order() {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let chorusd = Chorusd::start(&dir.path().join("data"));

    // The report goes to files rather than pipes, so a large report cannot block the bench
    // while the test waits for it to exit.
    let json_path = dir.path().join("spike.json");
    let text_path = dir.path().join("spike.txt");
    let mut bench = Command::new(env!("CARGO_BIN_EXE_chorus-bench"))
        .arg("spike")
        .args(["--server", &chorusd.addr.to_string()])
        .args(["--broker-pid", &chorusd.child.id().to_string()])
        .args(["--topic-prefix", "test/spike"])
        .args(["--subscribers", &SUBSCRIBERS.to_string()])
        .args(["--rate", &RATE.to_string()])
        .args(["--factor", &FACTOR.to_string()])
        .args(["--before", &PHASE_SECS.to_string()])
        .args(["--spike-secs", &PHASE_SECS.to_string()])
        .args(["--after", &PHASE_SECS.to_string()])
        .arg("--json")
        .stdout(File::create(&json_path).expect("failed to create the JSON report file"))
        .stderr(File::create(&text_path).expect("failed to create the text report file"))
        .spawn()
        .expect("failed to start chorus-bench");
    let status = wait_with_timeout(&mut bench, RUN_TIMEOUT);

    let text = fs::read_to_string(&text_path).expect("failed to read the text report");
    let json = fs::read_to_string(&json_path).expect("failed to read the JSON report");
    let report: Value = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("chorus-bench exited with {status} and no JSON report ({e}); stderr:\n{text}")
    });

    assert_eq!(count(&report, "published"), PUBLISHED, "published");
    assert_eq!(count(&report, "confirmed"), PUBLISHED, "confirmed");
    assert_eq!(count(&report, "acked"), PUBLISHED, "acked");
    assert_eq!(count(&report, "rejected"), 0, "rejected");
    assert_eq!(
        count(&report, "expected"),
        PUBLISHED * SUBSCRIBERS,
        "expected deliveries"
    );
    assert_eq!(
        count(&report, "delivered"),
        PUBLISHED * SUBSCRIBERS,
        "delivered"
    );
    assert_eq!(count(&report, "losses"), 0, "losses");
    assert_eq!(count(&report, "duplicates"), 0, "duplicates");
    assert_eq!(count(&report, "out_of_order"), 0, "out of order");
    assert_eq!(count(&report, "unknown"), 0, "unknown payloads");
    assert_eq!(count(&report, "offset_gaps"), 0, "offset gaps");
    assert_eq!(report["errors"], Value::Array(Vec::new()), "errors");

    // Each delivery falls into the phase in which its comment was sent, so the phases add up
    // to every delivery.
    let phases = report["phases"].as_array().expect("phases is an array");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["before", "spike", "after"], "phase names");
    let phase_deliveries: u64 = phases.iter().map(|p| count(p, "deliveries")).sum();
    assert_eq!(
        phase_deliveries,
        PUBLISHED * SUBSCRIBERS,
        "deliveries summed over the phases"
    );

    assert_eq!(report["passed"], Value::Bool(true), "passed");
    assert!(status.success(), "chorus-bench exited with {status}");
}
