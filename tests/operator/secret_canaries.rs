//! Secret canaries: unique values planted in a managed Secret, changed by
//! hand (reported), inside an access window (held, codified, reverted) and
//! without one (reverted at once). None of them may appear in any status,
//! Event, log line, metric, notification or `driftwarden diff` output.

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use driftwarden::api::{AccessRequest, DesiredState, DriftAction};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::common::drift_setup;
use crate::gate::{alice_window, until};
use crate::notifications::{Receiver, notifier, set_operator_secret, webhook_notifier};
use crate::support::http_get;

fn canary(n: u32) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("canary-{n}-{nanos:09}-{:08x}", nanos.wrapping_mul(2_654_435_761))
}

fn secret_manifest(password: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\ntype: Opaque\nstringData:\n  password: {password}\n")
}

#[tokio::test]
async fn secret_values_never_leave_the_secret() {
    let t = drift_setup("secret-canaries").await;
    // Every notification sink hears everything this test does.
    let receiver = Receiver::start(0).await;
    webhook_notifier(&t, &receiver).await;
    set_operator_secret(&t, "notify-slack", &t.env.namespace, &receiver.url("/slack")).await;
    let slack = json!({"type": "Slack", "urlSecretRef": {"name": "notify-slack", "key": t.env.namespace}});
    notifier(&t, &format!("slack-{}", t.env.namespace), slack).await;
    let alertmanager = json!({"type": "Alertmanager", "url": receiver.url("/am")});
    notifier(&t, &format!("am-{}", t.env.namespace), alertmanager).await;
    let canaries: Vec<String> = (1..=4).map(canary).collect();
    let declared = secret_manifest(&canaries[0]);
    t.kubectl(&["apply", "-f", "-"], Some(&declared));
    let report = json!({"remediation": {"unauthorized": "Report", "windowEnd": "Revert"}});
    t.desired_state_spec("vault", &[("db.yaml", declared.clone())], report).await;
    t.wait_for_status("vault", Duration::from_secs(20), |s| s.managed == Some(1) && s.drifted == Some(0)).await;
    let secrets: Api<Secret> = t.env.api(User::Admin).await;
    let set = |user_api: Api<Secret>, value: String| async move {
        let patch = json!({"stringData": {"password": value}});
        user_api.patch("db", &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
    };

    // 1. Changed by hand and only reported; `driftwarden diff` shows it too.
    set(secrets.clone(), canaries[1].clone()).await;
    t.wait_for_status("vault", Duration::from_secs(10), |s| s.drifted == Some(1)).await;
    receiver.wait_for("/am/api/v2/alerts", "the alert", Duration::from_secs(10), |_| true).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("db.yaml"), &declared).unwrap();
    let diff = Command::new(env!("CARGO_BIN_EXE_driftwarden"))
        .arg("diff")
        .arg(dir.path())
        .args(["--namespace", &t.env.namespace, "--kubeconfig"])
        .arg(t.env.cp.kubeconfig(User::Admin))
        .output()
        .unwrap();
    assert_eq!(diff.status.code(), Some(1), "driftwarden diff finds the drift");
    let diff_output = format!("{}{}", String::from_utf8_lossy(&diff.stdout), String::from_utf8_lossy(&diff.stderr));
    set(secrets.clone(), canaries[0].clone()).await;
    t.wait_for_status("vault", Duration::from_secs(10), |s| s.drifted == Some(0)).await;

    // 2. Changed inside alice's window: held, then codified and reverted.
    let states: Api<DesiredState> = t.env.api(User::Admin).await;
    let revert = json!({"spec": {"remediation": {"unauthorized": "Revert", "windowEnd": "Revert"}}});
    states.patch("vault", &PatchParams::default(), &Patch::Merge(revert)).await.unwrap();
    alice_window(&t, "alice-rotates", "10m").await;
    set(t.env.api(User::Alice).await, canaries[2].clone()).await;
    t.wait_for_status("vault", Duration::from_secs(10), |s| {
        s.drifted_objects.iter().any(|d| d.action == Some(DriftAction::Hold))
    })
    .await;
    let requests = crate::common::raw_requests(&t, User::Alice).await;
    let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
    requests.patch("alice-rotates", &PatchParams::default(), &revoke).await.unwrap();
    let password = |secrets: Api<Secret>| async move {
        let secret = secrets.get("db").await.unwrap();
        let bytes = secret.data.unwrap_or_default().get("password").map(|b| b.0.clone()).unwrap_or_default();
        String::from_utf8(bytes).unwrap()
    };
    until(Duration::from_secs(10), "the session's change reverted", || async {
        password(secrets.clone()).await == canaries[0]
    })
    .await;
    let codified = crate::support::eventually(Duration::from_secs(10), || async {
        let request = t.env.api::<AccessRequest>(User::Admin).await.get("alice-rotates").await.ok()?;
        let changes = request.status?.session_changes;
        (!changes.is_empty()).then_some(changes)
    })
    .await
    .expect("the session's change is codified");
    assert!(codified[0].patch.contains("<redacted"), "{}", codified[0].patch);

    // 3. Changed without a window: reverted at once.
    set(secrets.clone(), canaries[3].clone()).await;
    until(Duration::from_secs(10), "the unauthorized change reverted", || async {
        password(secrets.clone()).await == canaries[0]
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (path, kind) in [("/hook", "SessionCodified"), ("/hook", "DriftReverted"), ("/slack", "")] {
        receiver.wait_for(path, kind, Duration::from_secs(10), |b| kind.is_empty() || b["kind"] == kind).await;
    }
    let notified: String = receiver.all().iter().map(|r| String::from_utf8_lossy(&r.body).into_owned()).collect();

    // Everything the operator wrote or said.
    let state = states.get("vault").await.unwrap();
    let request = t.env.api::<AccessRequest>(User::Admin).await.get("alice-rotates").await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(t.env.admin.clone(), &t.env.namespace);
    let events = events.list(&Default::default()).await.unwrap();
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    let metrics = http_get(t.operator.http_port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    let outputs = [
        ("DesiredState status", serde_json::to_string(&state.status).unwrap()),
        ("AccessRequest status", serde_json::to_string(&request.status).unwrap()),
        ("Events", serde_json::to_string(&events.items).unwrap()),
        ("operator log", log),
        ("metrics", metrics),
        ("driftwarden diff", diff_output),
        ("notifications", notified),
    ];
    for value in &canaries {
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        for (place, text) in &outputs {
            assert!(!text.contains(value.as_str()), "{value} leaked into the {place}");
            assert!(!text.contains(&encoded), "{value} (base64) leaked into the {place}");
        }
    }
}
