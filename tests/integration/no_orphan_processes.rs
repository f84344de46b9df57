//! A test that panics must not leave etcd or kube-apiserver running, nor,
//! with a node, a container, a mount, a network device or a rule.

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

const NODE_PROBE_ENV: &str = "DRIFTWARDEN_NODE_ORPHAN_PROBE";

/// The same with a node running a Pod: reports the node's directory.
#[tokio::test]
#[ignore = "helper, run by a_node_is_torn_down_when_its_test_dies"]
async fn node_orphan_probe() {
    let Some(report) = std::env::var_os(NODE_PROBE_ENV) else { return };
    let cp = ControlPlane::start(controlplane::Options { node: true, ..Default::default() }).await.unwrap();
    let admin = cp.client(controlplane::User::Admin).await.unwrap();
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(admin, "default");
    // The sandbox image is on the node already; run it as a container too.
    let pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sleeper"},
        "spec": {"containers": [{"name": "pause", "image": "localhost/driftwarden-pause:1", "imagePullPolicy": "Never"}],
                 "automountServiceAccountToken": true},
    }))
    .unwrap();
    crate::support::eventually(Duration::from_secs(30), || async {
        pods.create(&Default::default(), &pod).await.ok() // the default ServiceAccount comes first
    })
    .await
    .expect("the Pod was created");
    let running = crate::support::eventually(Duration::from_secs(60), || async {
        let pod = pods.get("sleeper").await.ok()?;
        (pod.status?.phase.as_deref() == Some("Running")).then_some(())
    })
    .await;
    assert!(running.is_some(), "the Pod never ran");
    let node = cp.node().unwrap();
    std::fs::write(report, format!("{}\n{}", cp.dir().display(), node.dir().display())).unwrap();
    std::mem::forget(cp);
    panic!("deliberate panic with a node running a Pod");
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

#[test]
fn a_node_is_torn_down_when_its_test_dies() {
    // SAFETY: a plain syscall.
    let root = unsafe { libc::geteuid() } == 0;
    let how = "run as root (a kubelet needs it)";
    if crate::support::required("a real node", if root { Ok(()) } else { Err("not root".to_owned()) }, how).is_none() {
        return;
    }
    let report = tempfile::NamedTempFile::new().unwrap();
    let probe = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "no_orphan_processes::node_orphan_probe", "--ignored"])
        .env(NODE_PROBE_ENV, report.path())
        .output()
        .unwrap();
    let dirs = std::fs::read_to_string(report.path()).unwrap();
    let Some((cp_dir, node_dir)) = dirs.split_once('\n') else {
        panic!(
            "the probe should have started a node with a Pod and panicked:\n{}{}",
            String::from_utf8_lossy(&probe.stdout),
            String::from_utf8_lossy(&probe.stderr)
        );
    };
    // The watchdog's teardown: processes (the shims and the container
    // included), then mounts, the bridge, kube-proxy's tables, the files.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut left = processes_mentioning(node_dir);
        left.extend(processes_mentioning(cp_dir));
        left.extend(processes_mentioning("/pause").into_iter().filter(|p| p.ends_with(": /pause ")));
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
        left.extend(mounts.lines().filter(|l| l.contains(node_dir)).map(|l| format!("mount: {l}")));
        if std::path::Path::new("/sys/class/net/dwnode0").exists() {
            left.push("the bridge dwnode0".into());
        }
        if std::path::Path::new(node_dir).exists() {
            left.push(format!("the directory {node_dir}"));
        }
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the node outlived its test: {left:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let nft = Command::new("nft").args(["list", "tables"]).output().unwrap();
    let tables = String::from_utf8_lossy(&nft.stdout);
    assert!(!tables.contains("kube-proxy"), "kube-proxy's rules outlived the node: {tables}");
    let _ = std::fs::remove_dir_all(cp_dir);
}
