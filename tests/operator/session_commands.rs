//! Every command of a session, kept for the audit: a grantee's `kubectl
//! exec` reaches the operator's admission webhook as a CONNECT on
//! `pods/exec`; it is listed in her request's activity with its command
//! line, and written to the operator's structured log, which outlives the
//! request.
//!
//! The test control plane has no kubelet: the API server runs validating
//! admission for a CONNECT before it looks up the Pod's node, so the exec
//! is recorded and then fails ("does not have a host assigned"). The test
//! relies on exactly that.

use std::time::Duration;

use driftwarden::api::{AccessRequest, AccessRequestStatus, ActivityEntry};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use serde_json::{Value, json};

use crate::common::{AccessTest, drift_setup_without_audit};
use crate::gate::{alice_window, request_status, standing_edit};
use crate::notifications::{Receiver, verify, webhook_notifier};
use crate::support::eventually;

/// A Pod that no node will ever run (there is no kubelet).
async fn toolbox(t: &AccessTest) {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "toolbox"},
        "spec": {"automountServiceAccountToken": false,
                 "containers": [{"name": "app", "image": "busybox"}, {"name": "sidecar", "image": "busybox"}]},
    }))
    .unwrap();
    let api = t.env.api::<Pod>(User::Admin).await;
    // The namespace's default ServiceAccount may not exist yet.
    eventually(Duration::from_secs(10), || async { api.create(&PostParams::default(), &pod).await.ok() })
        .await
        .expect("the toolbox Pod was created");
}

/// `kubectl exec` as `user`; returns its stderr (it fails: no kubelet).
fn exec(t: &AccessTest, user: User, args: &[&str]) -> String {
    let out = t.env.kubectl(user).arg("exec").args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "exec succeeded without a kubelet?");
    stderr
}

fn exec_entry<'a>(status: &'a AccessRequestStatus, command: &[&str]) -> Option<&'a ActivityEntry> {
    status.activity.iter().find(|e| e.resource == "pods/exec" && e.command == command)
}

/// The operator's log lines that record a command in `namespace`.
fn logged_commands(t: &AccessTest) -> Vec<Value> {
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["record"] == "session-command" && line["namespace"] == t.env.namespace.as_str())
        .collect()
}

#[tokio::test]
async fn a_grantees_exec_is_in_her_activity_and_its_record_outlives_the_request() {
    let t = drift_setup_without_audit("session-exec").await;
    standing_edit(&t, "bob").await;
    toolbox(&t).await;
    alice_window(&t, "alice-shell", "5m").await;
    let receiver = Receiver::start(0).await;
    let key = webhook_notifier(&t, &receiver).await;

    let started = std::time::Instant::now();
    let failed = exec(&t, User::Alice, &["toolbox", "-c", "app", "--", "sh", "-c", "id"]);
    let exec_took = started.elapsed();
    assert!(failed.contains("does not have a host assigned"), "the exec failed for another reason: {failed}");
    eprintln!("session commands: kubectl exec failed after admission, as expected: {}", failed.trim());
    // Bob has standing rights and no window: his command is logged, never
    // in alice's activity.
    let long = "x".repeat(5000);
    exec(&t, User::Bob, &["toolbox", "--", "echo", &long]);

    let shown = eventually(Duration::from_secs(10), || async {
        let status = request_status(&t, "alice-shell").await;
        exec_entry(&status, &["sh", "-c", "id"]).cloned()
    })
    .await;
    let listed_after = started.elapsed();
    let status = request_status(&t, "alice-shell").await;
    let entry = shown.unwrap_or_else(|| panic!("alice's exec is not in her activity: {:#?}", status.activity));
    eprintln!(
        "session commands: kubectl exec returned after {exec_took:?}; listed in the request's activity {listed_after:?} after it started"
    );
    assert_eq!(
        (entry.user.as_str(), entry.verb.as_str(), entry.name.as_deref(), entry.container.as_deref()),
        ("alice", "connect", Some("toolbox"), Some("app"))
    );
    assert_eq!(entry.sources, ["admission"], "no audit webhook here: the webhook's word only");
    assert!(status.activity.iter().all(|e| e.user == "alice"), "{:#?}", status.activity);

    // The notification sinks hear both, signed, with the window (per typed
    // exec, kubectl's WebSocket try and its SPDY fallback: up to two).
    let hers = receiver
        .wait_for("/hook", "alice's command", Duration::from_secs(10), |b| {
            b["kind"] == "SessionCommand" && b["command"]["user"] == "alice"
        })
        .await;
    assert_eq!(hers["command"]["command"], serde_json::json!(["sh", "-c", "id"]));
    assert_eq!(hers["command"]["accessRequests"], serde_json::json!(["alice-shell"]));
    assert!(
        hers["summary"].as_str().unwrap().ends_with("in the window of AccessRequest alice-shell: sh -c id"),
        "{hers}"
    );
    let his = receiver
        .wait_for("/hook", "bob's command", Duration::from_secs(10), |b| {
            b["kind"] == "SessionCommand" && b["command"]["user"] == "bob"
        })
        .await;
    assert_eq!(his["command"]["accessRequests"], serde_json::json!([]));
    assert_eq!(his["command"]["commandTruncated"], true, "bounded: {his}");
    for received in receiver.all() {
        verify(&received, &key);
    }

    // The log has both commands, complete (bob's bounded), with who and which request.
    let lines = eventually(Duration::from_secs(5), || async {
        let lines = logged_commands(&t);
        (lines.len() >= 2).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("the commands are not in the operator's log: {:#?}", logged_commands(&t)));
    let alice = lines.iter().find(|l| l["user"] == "alice").expect("alice's command is logged");
    assert_eq!(alice["access_request"], "alice-shell");
    assert_eq!(alice["pod"], "toolbox");
    assert_eq!(alice["container"], "app");
    assert_eq!(alice["command"], "sh -c id");
    assert_eq!(alice["argv"], r#"["sh","-c","id"]"#);
    assert_eq!(alice["source"], "admission");
    let bob = lines.iter().find(|l| l["user"] == "bob").expect("bob's command is logged");
    assert_eq!(bob["access_request"], "", "bob holds no window");
    // kubectl picked the Pod's first container.
    assert_eq!(bob["container"], "app");
    assert_eq!((&bob["truncated"], &bob["args"], &bob["bytes"]), (&json!(true), &json!(2), &json!(5004)));
    let argv: Vec<String> = serde_json::from_str(bob["argv"].as_str().unwrap()).unwrap();
    assert_eq!((argv[0].as_str(), argv[1].len()), ("echo", driftwarden::gate::commands::LOG_BOUNDS.arg_bytes));

    // Deleting the request erases its status, not the record.
    let requests = t.env.api::<AccessRequest>(User::Admin).await;
    requests.delete("alice-shell", &Default::default()).await.unwrap();
    eventually(Duration::from_secs(20), || async {
        requests.get_opt("alice-shell").await.unwrap().is_none().then_some(())
    })
    .await
    .expect("the request is gone");
    let after = logged_commands(&t);
    assert!(
        after.iter().any(|l| l["access_request"] == "alice-shell" && l["command"] == "sh -c id"),
        "the record went with the request: {after:#?}"
    );
    eprintln!("session commands: alice's exec, kept in the log after her request was deleted: {alice}");
}

/// Posts an AdmissionReview to the operator's `/sessions` as anyone in the
/// cluster network could: no credentials (the API server presents none).
fn forge(t: &AccessTest, user: &str, command: &[&str]) -> String {
    use std::io::Write as _;
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "forged", "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": "exec",
        "name": "toolbox", "namespace": t.env.namespace, "operation": "CONNECT",
        "userInfo": {"username": user, "groups": ["dev"]},
        "object": {"kind": "PodExecOptions", "apiVersion": "v1", "container": "app", "command": command},
    }});
    let mut curl = std::process::Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--insecure"])
        .args(["-H", "Content-Type: application/json", "--data-binary", "@-"])
        .arg(format!("https://127.0.0.1:{}/sessions", t.operator.webhook_port))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    curl.stdin.take().unwrap().write_all(review.to_string().as_bytes()).unwrap();
    String::from_utf8_lossy(&curl.wait_with_output().unwrap().stdout).into_owned()
}

#[tokio::test]
async fn with_audit_the_api_servers_event_corroborates_an_exec_and_a_forged_one_stays_a_claim() {
    let t = crate::common::drift_setup("session-exec-audit").await;
    toolbox(&t).await;
    alice_window(&t, "alice-shell", "5m").await;

    exec(&t, User::Alice, &["toolbox", "-c", "app", "--", "sh", "-c", "id"]);
    assert_eq!(forge(&t, "alice", &["rm", "-rf", "/data"]), "200");

    // kubectl tries a WebSocket first and, when the upgrade fails (here:
    // no node), SPDY: one typed command may be two requests to the API
    // server, each admitted, audited and recorded.
    let ids = |status: &AccessRequestStatus| -> Vec<Vec<String>> {
        status.activity.iter().filter(|e| e.command == ["sh", "-c", "id"]).map(|e| e.sources.clone()).collect()
    };
    // Audit batches wait at most 1 s.
    let corroborated = eventually(Duration::from_secs(10), || async {
        let status = request_status(&t, "alice-shell").await;
        let ids = ids(&status);
        (!ids.is_empty() && ids.iter().all(|s| s.len() == 2)).then_some(status)
    })
    .await;
    let status = request_status(&t, "alice-shell").await;
    let status = corroborated.unwrap_or_else(|| panic!("alice's exec was not corroborated: {:#?}", status.activity));
    let requests = ids(&status);
    assert!(requests.iter().all(|s| s == &["admission", "audit"]), "{requests:?}");
    let forged = exec_entry(&status, &["rm", "-rf", "/data"]).expect("a forged call adds an entry");
    assert_eq!(forged.sources, ["admission"], "no audit event stands behind it");
    let commands = status.activity.iter().filter(|e| e.is_command()).count();
    assert_eq!(commands, requests.len() + 1, "each request once: {:#?}", status.activity);
    assert_eq!(status.activity_count, Some(commands as i64));

    let lines = logged_commands(&t);
    let reports = |source: &str, corroborated: bool| {
        lines
            .iter()
            .filter(|l| l["command"] == "sh -c id" && l["source"] == source && l["corroborated"] == corroborated)
            .count()
    };
    assert_eq!(
        (reports("admission", false), reports("audit", true), reports("audit", false)),
        (requests.len(), requests.len(), 0),
        "{lines:#?}"
    );
    eprintln!(
        "session commands: with the audit webhook, alice's exec ({} request(s)) is {:?}; the forged one {:?}",
        requests.len(),
        requests[0],
        forged.sources
    );
}
