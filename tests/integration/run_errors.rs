//! `driftwarden run` fails clearly without a cluster. (Its probes are
//! tested in the access suite, where it runs against a real cluster.)

use std::process::Command;

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
    assert_eq!(out.status.code(), Some(2), "errors exit 2 (1 means drift, for diff)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("error: cannot reach the API server"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
