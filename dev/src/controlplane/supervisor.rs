//! Runs child processes from one long-lived thread, so that none outlives us.
//!
//! Every child asks the kernel for SIGKILL when its parent *thread* exits
//! (`PR_SET_PDEATHSIG`). Spawning from a dedicated thread that lives as long
//! as the supervisor means: a normal stop terminates children gracefully, and
//! a panic, `process::exit` or a SIGKILL of the test binary still kills them.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a child gets to exit after SIGTERM before it is killed.
const GRACE: Duration = Duration::from_secs(10);

enum Request {
    Spawn { name: String, command: Box<Command>, log: PathBuf, reply: mpsc::Sender<io::Result<u32>> },
    Exited { name: String, reply: mpsc::Sender<Option<ExitStatus>> },
    Stop { name: String, kill: bool, reply: mpsc::Sender<()> },
}

/// Owns a set of named child processes. Dropping it stops them all.
pub struct Supervisor {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Supervisor {
    pub fn new() -> io::Result<Self> {
        let (requests, inbox) = mpsc::channel();
        let thread = thread::Builder::new().name("process-supervisor".into()).spawn(move || serve(inbox))?;
        Ok(Self { requests: Some(requests), thread: Some(thread) })
    }

    /// Starts `command` under `name`, with stdout and stderr appended to `log`.
    /// Returns the child's pid.
    pub fn spawn(&self, name: &str, command: Command, log: PathBuf) -> io::Result<u32> {
        self.ask(|reply| Request::Spawn { name: name.to_owned(), command: Box::new(command), log, reply })?
    }

    /// The exit status of `name` if it has exited (or was never started).
    pub fn exited(&self, name: &str) -> Option<ExitStatus> {
        self.ask(|reply| Request::Exited { name: name.to_owned(), reply }).ok().flatten()
    }

    /// Stops `name`: SIGTERM, then SIGKILL after a grace period.
    pub fn stop(&self, name: &str) {
        let _ = self.ask(|reply| Request::Stop { name: name.to_owned(), kill: false, reply });
    }

    /// Kills `name` with SIGKILL at once, as a crash or an OOM kill would.
    pub fn kill(&self, name: &str) {
        let _ = self.ask(|reply| Request::Stop { name: name.to_owned(), kill: true, reply });
    }

    fn ask<T>(&self, request: impl FnOnce(mpsc::Sender<T>) -> Request) -> io::Result<T> {
        let gone = || io::Error::other("process supervisor thread is gone");
        let (reply, answer) = mpsc::channel();
        self.requests.as_ref().ok_or_else(gone)?.send(request(reply)).map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        // Closing the channel tells the thread to stop every child and return.
        drop(self.requests.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(inbox: mpsc::Receiver<Request>) {
    // Kept in start order, so they can be stopped in reverse (the API server
    // before etcd).
    let mut children: BTreeMap<usize, (String, Child)> = BTreeMap::new();
    let mut next = 0;
    while let Ok(request) = inbox.recv() {
        match request {
            Request::Spawn { name, command, log, reply } => {
                let result = start(*command, &log).map(|child| {
                    let pid = child.id();
                    children.insert(next, (name, child));
                    next += 1;
                    pid
                });
                let _ = reply.send(result);
            }
            Request::Exited { name, reply } => {
                let status = match children.values_mut().find(|(n, _)| *n == name) {
                    Some((_, child)) => child.try_wait().ok().flatten(),
                    None => None,
                };
                let _ = reply.send(status);
            }
            Request::Stop { name, kill, reply } => {
                children.retain(|_, (n, child)| {
                    if *n == name && kill {
                        let _ = child.kill();
                        let _ = child.wait();
                    } else if *n == name {
                        terminate(child);
                    }
                    *n != name
                });
                let _ = reply.send(());
            }
        }
    }
    for (_, (_, mut child)) in children.into_iter().rev() {
        terminate(&mut child);
    }
}

fn start(mut command: Command, log: &PathBuf) -> io::Result<Child> {
    let out = OpenOptions::new().create(true).append(true).open(log)?;
    let err = out.try_clone()?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

fn terminate(child: &mut Child) {
    if matches!(child.try_wait(), Ok(Some(_))) {
        return;
    }
    // SAFETY: plain syscall on a pid we own and have not reaped yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alive(pid: u32) -> bool {
        // A zombie would still answer kill(0); the supervisor reaps, so this is exact.
        unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
    }

    #[test]
    fn dropping_the_supervisor_stops_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let supervisor = Supervisor::new().unwrap();
        let mut sleep = Command::new("sleep");
        sleep.arg("600");
        let pid = supervisor.spawn("sleep", sleep, dir.path().join("sleep.log")).unwrap();
        assert!(alive(pid));
        assert!(supervisor.exited("sleep").is_none());
        drop(supervisor);
        assert!(!alive(pid));
    }

    #[test]
    fn reports_a_child_that_exited_and_keeps_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("echo.log");
        let supervisor = Supervisor::new().unwrap();
        let mut sh = Command::new("sh");
        sh.args(["-c", "echo hello; exit 3"]);
        supervisor.spawn("sh", sh, log.clone()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(status) = supervisor.exited("sh") {
                break status;
            }
            assert!(Instant::now() < deadline, "child did not exit");
            thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.code(), Some(3));
        assert_eq!(tail(&log, 5), "hello");
    }
}
