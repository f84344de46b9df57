//! The operator process as the kernel sees it: resident memory (now and
//! its peak) and CPU time, from /proc.

use std::time::Duration;

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Memory {
    /// VmRSS: resident now.
    pub rss: u64,
    /// VmHWM: the peak since the process started (or since [`reset_peak`]).
    pub peak: u64,
}

/// The operator's pid, found by its `--http-addr` on its command line.
pub fn operator_pid(http_port: u16) -> Option<u32> {
    let port = format!("127.0.0.1:{http_port}");
    find_process(|cmdline| cmdline.contains("driftwarden") && cmdline.contains(&port))
}

/// The first process whose command line (arguments joined by spaces) passes `matches`.
pub fn find_process(matches: impl Fn(&str) -> bool) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        matches(&cmdline).then(|| entry.file_name().to_str()?.parse().ok())?
    })
}

pub fn memory(pid: u32) -> Option<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |field: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|k| k * 1024)
    };
    Some(Memory { rss: kib("VmRSS:")?, peak: kib("VmHWM:")? })
}

/// Starts a new peak: VmHWM drops to the current RSS (`clear_refs` 5).
pub fn reset_peak(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// User plus system CPU time the process has used, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses:
    // state is field 3, utime 14 and stime 15.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    Some(ticks as f64 / per_second.max(1) as f64)
}

/// User plus system CPU time of this process's children that have exited
/// and been waited for (with their own children), in seconds.
pub fn children_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the struct it is given, nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// RSS samples taken every 50 ms.
#[derive(Debug, Default)]
pub struct Samples(Vec<u64>);

impl Samples {
    pub fn median(&self) -> u64 {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        sorted.get(sorted.len() / 2).copied().unwrap_or(0)
    }

    pub fn max(&self) -> u64 {
        self.0.iter().copied().max().unwrap_or(0)
    }
}

/// Samples `pid`'s RSS every 50 ms until `until` completes.
pub async fn sample_rss_while<F: Future>(pid: u32, until: F) -> (F::Output, Samples) {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut until = std::pin::pin!(until);
    loop {
        tokio::select! {
            output = &mut until => return (output, Samples(samples)),
            _ = tick.tick() => samples.extend(memory(pid).map(|m| m.rss)),
        }
    }
}

/// Bytes as MiB, for tables.
pub fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}
