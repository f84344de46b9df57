//! The process's own CPU, memory and file descriptors, under the names every
//! Prometheus client uses (`process_*`), read from /proc when scraped: the
//! operator's cost per write, per event or per object, in Grafana.

use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Default)]
pub struct Process {
    cpu: Counter<f64, AtomicU64>,
    /// What `cpu` has counted, to add only the difference at a scrape.
    cpu_counted: AtomicU64,
    resident: Gauge,
    open_fds: Gauge,
}

impl Process {
    pub fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "process_cpu",
            "User and system CPU time of the operator process",
            Unit::Seconds,
            self.cpu.clone(),
        );
        registry.register_with_unit(
            "process_resident_memory",
            "Resident memory of the operator process",
            Unit::Bytes,
            self.resident.clone(),
        );
        registry.register("process_open_fds", "Open file descriptors of the operator process", self.open_fds.clone());
    }

    /// Reads /proc/self (on Linux; elsewhere the values stay 0).
    pub fn refresh(&self) {
        let ticks = clock_ticks();
        if let Some(seconds) = std::fs::read_to_string("/proc/self/stat").ok().and_then(|s| cpu_seconds(&s, ticks)) {
            let counted = f64::from_bits(self.cpu_counted.load(Ordering::Relaxed));
            if seconds > counted {
                self.cpu.inc_by(seconds - counted);
                self.cpu_counted.store(seconds.to_bits(), Ordering::Relaxed);
            }
        }
        if let Some(bytes) = std::fs::read_to_string("/proc/self/status").ok().and_then(|s| resident_bytes(&s)) {
            self.resident.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            self.open_fds.set(i64::try_from(fds.count()).unwrap_or(i64::MAX));
        }
    }
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of a /proc/<pid>/stat line, in seconds. The command name
/// (field 2) is in parentheses and may hold spaces or parentheses itself,
/// so the fields are counted from the last `)`.
fn cpu_seconds(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid, pgrp, session, tty_nr, tpgid, flags,
    // minflt, cminflt, majflt, cmajflt, then utime (14) and stime (15).
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

/// VmRSS of a /proc/<pid>/status text, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (drift (warden) x) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 75 0 0 20 0 9 0 100 1000 50";
        assert_eq!(cpu_seconds(stat, 100.0), Some(3.25));
        assert_eq!(cpu_seconds("garbage", 100.0), None);
        assert_eq!(cpu_seconds("1 (x) S 1", 100.0), None);
    }

    #[test]
    fn resident_memory_is_vmrss_in_bytes() {
        let status = "Name:\tdriftwarden\nVmPeak:\t  90000 kB\nVmRSS:\t   65536 kB\nThreads:\t9\n";
        assert_eq!(resident_bytes(status), Some(64 * 1024 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
    }

    #[test]
    fn a_scrape_reads_this_process() {
        let process = Process::default();
        process.refresh();
        let mut registry = Registry::default();
        process.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("process_cpu_seconds_total"), "{text}");
        let rss = text.lines().find(|l| l.starts_with("process_resident_memory_bytes ")).unwrap();
        assert!(rss.rsplit(' ').next().unwrap().parse::<f64>().unwrap() > 0.0, "{rss}");
    }
}
