//! The machine a run took place on, read from Linux's /proc at the start of the run, so that a
//! result file names its machine without the script's `machine.txt` beside it.

use std::fs;

use serde::Serialize;

/// Cores, processor model, memory, kernel and load of the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub(crate) struct Machine {
    /// Cores this process may use (`std::thread::available_parallelism`, as `nproc` counts).
    pub(crate) cores: Option<usize>,
    /// `model name` of the first processor in /proc/cpuinfo.
    pub(crate) cpu: Option<String>,
    /// `MemTotal` of /proc/meminfo, in MiB.
    pub(crate) memory_mib: Option<u64>,
    /// Kernel release, as `uname -r` prints it.
    pub(crate) kernel: Option<String>,
    /// The 1, 5 and 15 minute load averages of /proc/loadavg when the run started.
    pub(crate) load_average: Option<[f64; 3]>,
}

impl Machine {
    /// Reads the machine's description; a field that cannot be read stays absent.
    pub(crate) fn read() -> Machine {
        let read = |path: &str| fs::read_to_string(path).ok();
        Machine {
            cores: std::thread::available_parallelism().ok().map(usize::from),
            cpu: read("/proc/cpuinfo").and_then(|text| parse_cpu_model(&text)),
            memory_mib: read("/proc/meminfo").and_then(|text| parse_mem_total_mib(&text)),
            kernel: read("/proc/sys/kernel/osrelease").map(|text| text.trim().to_owned()),
            load_average: read("/proc/loadavg").and_then(|text| parse_load_average(&text)),
        }
    }
}

/// Returns the value of the first `model name` line of /proc/cpuinfo.
fn parse_cpu_model(cpuinfo: &str) -> Option<String> {
    let line = cpuinfo.lines().find(|l| l.starts_with("model name"))?;
    let (_, value) = line.split_once(':')?;
    Some(value.trim().to_owned())
}

/// Returns `MemTotal` of /proc/meminfo, given there in KiB, in MiB.
fn parse_mem_total_mib(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line["MemTotal:".len()..]
        .split_ascii_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

/// Returns the first three fields of /proc/loadavg.
fn parse_load_average(loadavg: &str) -> Option<[f64; 3]> {
    let mut fields = loadavg.split_ascii_whitespace().map(str::parse::<f64>);
    let one = fields.next()?.ok()?;
    let five = fields.next()?.ok()?;
    let fifteen = fields.next()?.ok()?;
    Some([one, five, fifteen])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_first_processor() {
        let cpuinfo = "processor\t: 0\nmodel name\t: AMD EPYC\nprocessor\t: 1\n\
                       model name\t: Other\n";
        assert_eq!(parse_cpu_model(cpuinfo).as_deref(), Some("AMD EPYC"));
    }

    #[test]
    fn mem_total_in_mib() {
        let meminfo = "MemTotal:       24683520 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total_mib(meminfo), Some(24105));
    }

    #[test]
    fn load_average_three_fields() {
        let loadavg = "12.94 9.85 5.95 3/812 41234\n";
        assert_eq!(parse_load_average(loadavg), Some([12.94, 9.85, 5.95]));
    }

    #[test]
    fn truncated_load_average_is_absent() {
        assert_eq!(parse_load_average("1.0 2.0"), None);
    }

    #[test]
    fn this_machine_has_cores() {
        assert!(Machine::read().cores.is_some());
    }
}
