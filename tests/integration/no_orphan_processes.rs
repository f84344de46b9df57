//! A test that panics must not leave etcd or kube-apiserver running.

use std::process::Command;
use std::time::Duration;

use driftwarden_dev::controlplane::{self, ControlPlane};

const PROBE_ENV: &str = "DRIFTWARDEN_ORPHAN_PROBE";

/// Runs only as a child process of the test below: starts a control plane,
/// reports where it lives, then panics.
#[tokio::test]
#[ignore = "helper, run by control_plane_processes_die_with_a_panicking_test"]
async fn orphan_probe() {
    let Some(report) = std::env::var_os(PROBE_ENV) else { return };
    let cp = ControlPlane::start(controlplane::Options::default()).await.unwrap();
    std::fs::write(report, cp.dir().display().to_string()).unwrap();
    std::mem::forget(cp); // as a static would be: never dropped
    panic!("deliberate panic with a control plane running");
}

fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(needle) {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

#[test]
fn control_plane_processes_die_with_a_panicking_test() {
    let report = tempfile::NamedTempFile::new().unwrap();
    // Its output is captured: its own "test result: FAILED" line is expected
    // and must not be mistaken for this run's.
    let probe = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_orphan_processes::orphan_probe", "--ignored"])
        .env(PROBE_ENV, report.path())
        .output()
        .unwrap();
    let dir = std::fs::read_to_string(report.path()).unwrap();
    assert!(
        !probe.status.success() && !dir.is_empty(),
        "the probe should have started a control plane and panicked:\n{}{}",
        String::from_utf8_lossy(&probe.stdout),
        String::from_utf8_lossy(&probe.stderr)
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_mentioning(&dir);
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "processes outlived the test: {left:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_dir_all(dir);
}
