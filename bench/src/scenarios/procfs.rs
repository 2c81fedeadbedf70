//! CPU time and memory of the broker process, read from Linux's /proc.

use std::fs;
use std::io;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

/// CPU time and memory of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcessSample {
    /// User plus system CPU time, in clock ticks.
    pub(crate) cpu_ticks: u64,
    /// Resident set size (VmRSS), in KiB.
    pub(crate) rss_kib: u64,
    /// Peak resident set size (VmHWM), in KiB.
    pub(crate) hwm_kib: u64,
    pub(crate) threads: u64,
}

/// Reads CPU time and memory of `pid`.
pub(crate) fn sample(pid: u32) -> io::Result<ProcessSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let cpu_ticks = parse_cpu_ticks(&stat).ok_or_else(|| invalid("stat", pid))?;
    let field = |name| status_field(&status, name).ok_or_else(|| invalid("status", pid));
    Ok(ProcessSample {
        cpu_ticks,
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
        threads: field("Threads:")?,
    })
}

fn invalid(file: &str, pid: u32) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("unexpected layout of /proc/{pid}/{file}"),
    )
}

/// Returns utime + stime from the text of /proc/PID/stat.
///
/// The second field, the command name in parentheses, may contain spaces and parentheses, so
/// fields are counted from the last `)`: utime and stime are fields 14 and 15 of the line.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_ascii_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Returns the number in a `Name:   value [kB]` line of /proc/PID/status.
fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Returns the soft open-file limit of `pid` from /proc/PID/limits, if it can be read.
pub(crate) fn open_file_limit(pid: u32) -> Option<u64> {
    let limits = fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Clock ticks per second, the unit of CPU times in /proc.
fn ticks_per_second() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

/// Usage of a process between two samples, as reported.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub(crate) struct ProcessUsage {
    pub(crate) pid: u32,
    /// User plus system CPU time between the samples, in seconds.
    pub(crate) cpu_secs: f64,
    /// CPU time divided by wall time, in percent of one core.
    pub(crate) cpu_percent: f64,
    pub(crate) rss_start_kib: u64,
    pub(crate) rss_end_kib: u64,
    /// Peak resident set size of the process's whole life, at the end sample.
    pub(crate) hwm_kib: u64,
    pub(crate) threads: u64,
}

impl ProcessUsage {
    pub(crate) fn between(
        pid: u32,
        start: ProcessSample,
        end: ProcessSample,
        wall_secs: f64,
    ) -> ProcessUsage {
        let cpu_secs =
            end.cpu_ticks.saturating_sub(start.cpu_ticks) as f64 / ticks_per_second() as f64;
        let cpu_percent = if wall_secs > 0.0 {
            cpu_secs / wall_secs * 100.0
        } else {
            0.0
        };
        ProcessUsage {
            pid,
            cpu_secs: round(cpu_secs, 2),
            cpu_percent: round(cpu_percent, 1),
            rss_start_kib: start.rss_kib,
            rss_end_kib: end.rss_kib,
            hwm_kib: end.hwm_kib,
            threads: end.threads,
        }
    }
}

fn round(value: f64, decimals: i32) -> f64 {
    crate::report::round_to(value, decimals)
}

/// Finds the process that listens on TCP `port` through /proc/net/tcp{,6} and the socket
/// links under /proc/*/fd. Needs permission to read the broker's fd directory, which root or
/// the broker's own user has.
pub(crate) fn find_listener_pid(port: u16) -> anyhow::Result<u32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = fs::read_to_string(table) {
            inodes.extend(listening_inodes(&text, port));
        }
    }
    anyhow::ensure!(
        !inodes.is_empty(),
        "no socket listens on port {port}; start the broker or pass --broker-pid"
    );
    let targets: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in fs::read_dir("/proc").context("failed to list /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if has_socket(&entry.path(), &targets) {
            return Ok(pid);
        }
    }
    anyhow::bail!(
        "found the listening socket of port {port} but no process that owns it; \
         pass --broker-pid"
    )
}

fn has_socket(proc_dir: &Path, targets: &[String]) -> bool {
    let Ok(fds) = fs::read_dir(proc_dir.join("fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        fs::read_link(fd.path())
            .ok()
            .and_then(|link| link.to_str().map(|l| targets.iter().any(|t| t == l)))
            .unwrap_or(false)
    })
}

/// Returns the inodes of sockets in state LISTEN on `port` in a /proc/net/tcp table.
fn listening_inodes(table: &str, port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            let local = fields.get(1)?;
            let port_hex = local.rsplit(':').next()?;
            let local_port = u16::from_str_radix(port_hex, 16).ok()?;
            let state = fields.get(3)?;
            if local_port != port || *state != LISTEN {
                return None;
            }
            fields.get(9)?.parse().ok()
        })
        .collect()
}

/// Kernel-wide TCP figures from /proc/net/sockstat.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub(crate) struct SockStat {
    /// TCP sockets in use.
    pub(crate) tcp_inuse: u64,
    /// Pages of memory the kernel holds in TCP socket buffers.
    pub(crate) tcp_mem_pages: u64,
}

/// Reads /proc/net/sockstat; zeros when it cannot be read.
pub(crate) fn sockstat() -> SockStat {
    let Ok(text) = fs::read_to_string("/proc/net/sockstat") else {
        return SockStat::default();
    };
    parse_sockstat(&text)
}

fn parse_sockstat(text: &str) -> SockStat {
    let mut stat = SockStat::default();
    let Some(line) = text.lines().find(|l| l.starts_with("TCP:")) else {
        return stat;
    };
    let words: Vec<&str> = line.split_ascii_whitespace().collect();
    for pair in words[1..].chunks(2) {
        if let [name, value] = pair {
            let value = value.parse().unwrap_or(0);
            match *name {
                "inuse" => stat.tcp_inuse = value,
                "mem" => stat.tcp_mem_pages = value,
                _ => {}
            }
        }
    }
    stat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_skip_name_with_spaces() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    250 75 0 0 20 0 4 0 12345 1000000 300 18446744073709551615";
        assert_eq!(parse_cpu_ticks(stat), Some(325));
    }

    #[test]
    fn status_fields_in_kib() {
        let status = "Name:\tchorusd\nVmHWM:\t  20480 kB\nVmRSS:\t  10240 kB\nThreads:\t4\n";
        assert_eq!(status_field(status, "VmRSS:"), Some(10240));
        assert_eq!(status_field(status, "VmHWM:"), Some(20480));
        assert_eq!(status_field(status, "Threads:"), Some(4));
        assert_eq!(status_field(status, "VmSwap:"), None);
    }

    #[test]
    fn listening_socket_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
           0: 0100007F:1CE8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5551 1 0\n\
           1: 0100007F:1CE8 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 5552 1 0\n";
        assert_eq!(listening_inodes(table, 7400), vec![5551]);
        assert!(listening_inodes(table, 7401).is_empty());
    }

    #[test]
    fn sockstat_tcp_line() {
        let text =
            "sockets: used 300\nTCP: inuse 12 orphan 0 tw 3 alloc 20 mem 7\nUDP: inuse 1 mem 0\n";
        let stat = parse_sockstat(text);
        assert_eq!(stat.tcp_inuse, 12);
        assert_eq!(stat.tcp_mem_pages, 7);
    }

    #[test]
    fn own_process_can_be_sampled() {
        let own = sample(std::process::id()).unwrap();
        assert!(own.rss_kib > 0);
        assert!(own.threads >= 1);
    }
}
