//! The webhook endpoints survive a flood of junk: oversized bodies from
//! anyone, many at once, to the admission endpoints (`/writes` too) and to `/audit`. The
//! operator stays under the chart's memory limit (256 MiB) and keeps
//! answering admission (which fails closed: while it is down, nobody can
//! request, approve or revoke access).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use driftwarden::webhook::configuration::{MUTATE_PATH, VALIDATE_PATH};
use driftwarden::webhook::writes::{SESSIONS_PATH, WRITES_PATH};

use crate::support::http_get;
use crate::support::operator::{OPERATOR, operator_env};

/// The chart's memory limit for the operator container.
const CHART_MEMORY_LIMIT: u64 = 256 << 20;
/// Concurrent senders per endpoint, and the size of each body.
const SENDERS: usize = 6;
const BODY_BYTES: usize = 24 << 20;

fn operator_pid(http_port: u16) -> Option<u32> {
    let port = format!("127.0.0.1:{http_port}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (cmdline.contains(" run ") && cmdline.contains(&port)).then(|| entry.file_name().to_str()?.parse().ok())?
    })
}

/// VmHWM (peak resident bytes) of `pid`.
fn peak(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

fn curl(port: u16, path: &str, body: &std::path::Path) -> std::process::Child {
    Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "60", "--insecure"])
        .args(["-H", "Content-Type: application/json", "-H", "Authorization: Bearer not-the-token", "--data-binary"])
        .arg(format!("@{}", body.display()))
        .arg(format!("https://127.0.0.1:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn oversized_and_concurrent_junk_leaves_the_operator_small_and_answering() {
    // Alone: the flood must not slow other tests' operator.
    let exclusive = OPERATOR.write().await;
    let operator = operator_env();
    operator.wait_until_serving().await.unwrap();
    let pid = operator_pid(operator.http_port).expect("the operator's pid");
    // Start a new peak (VmHWM back to the current RSS).
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = peak(pid);

    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("junk.json");
    let mut junk = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","pad":""#.to_vec();
    junk.extend(std::iter::repeat_n(b'x', BODY_BYTES));
    junk.extend(br#""}"#);
    std::fs::write(&body, junk).unwrap();

    let started = Instant::now();
    let mut senders = Vec::new();
    for _round in 0..2 {
        for path in [VALIDATE_PATH, MUTATE_PATH, "/audit", WRITES_PATH, SESSIONS_PATH] {
            for _ in 0..SENDERS {
                senders.push(curl(operator.webhook_port, path, &body));
            }
        }
    }
    // While the flood is on, admission still answers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = tokio::time::timeout(Duration::from_secs(30), operator.wait_until_serving()).await;
    let answered_after = started.elapsed();
    let mut codes = Vec::new();
    for sender in senders {
        let out = sender.wait_with_output().unwrap();
        codes.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let peak = peak(pid);
    eprintln!(
        "flood of {} x {} MiB: peak RSS {} MiB (from {} MiB), admission answered after {answered_after:?}, codes {codes:?}",
        codes.len(),
        BODY_BYTES >> 20,
        peak >> 20,
        before >> 20
    );
    assert!(matches!(answered, Ok(Ok(()))), "admission did not answer during the flood: {answered:?}");
    assert!(!operator.operator_exited(), "the operator died");
    assert!(peak < CHART_MEMORY_LIMIT, "peak RSS {} MiB is over the chart's limit", peak >> 20);
    assert!(codes.iter().all(|c| c != "200"), "a junk body was accepted: {codes:?}");
    assert_eq!(http_get(operator.http_port, "/healthz").map(|(code, _)| code), Some(200));
    drop(exclusive);
}
