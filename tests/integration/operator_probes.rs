//! `driftwarden run` connects with a kubeconfig and serves its probes.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use driftwarden::controlplane::User;

use crate::support::{control_plane, eventually};

/// Kills the operator when the test ends, however it ends.
struct Operator(Child);

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((status, body))
}

#[tokio::test]
async fn run_connects_and_serves_healthz_and_readyz() {
    let cp = control_plane();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // Any authenticated user may read discovery, so the operator needs no
    // special rights to become ready; mallory has none at all.
    let child = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["run", "--http-addr", &format!("127.0.0.1:{port}"), "--log-format", "json"])
        .env("KUBECONFIG", cp.kubeconfig(User::Mallory))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut operator = Operator(child);

    let healthy =
        eventually(Duration::from_secs(30), || async { get(port, "/healthz").filter(|(s, _)| *s == 200) }).await;
    assert_eq!(healthy.map(|(_, body)| body), Some("ok".to_string()), "/healthz never answered 200");
    let ready = eventually(Duration::from_secs(30), || async { get(port, "/readyz").filter(|(s, _)| *s == 200) }).await;
    assert!(ready.is_some(), "/readyz never answered 200 although the CRDs are installed");

    // SIGTERM stops it cleanly, as Kubernetes stops a Pod.
    unsafe { libc::kill(operator.0.id() as libc::pid_t, libc::SIGTERM) };
    let status =
        tokio::task::spawn_blocking(move || operator.0.wait().map(|s| (s, operator))).await.unwrap().unwrap().0;
    assert!(status.success(), "exit status after SIGTERM: {status}");
}

#[test]
fn run_without_a_reachable_cluster_fails_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {server: 'https://127.0.0.1:1'}\nusers:\n- name: u\n  user: {token: t}\ncontexts:\n- name: x\n  context: {cluster: c, user: u}\ncurrent-context: x\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .args(["run", "--http-addr", "127.0.0.1:0", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: cannot reach the API server"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
