//! Who did it cannot be faked: the measured holes of issue 14, each against
//! the real API server and the operator under the chart's RBAC and
//! admission policy. A field manager name hides no drift, an approval never
//! carries over to a re-created request, status is the operator's alone,
//! and a cluster admin can revoke any request.

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{drift_setup, raw_requests, setup};
use crate::support::{api_error, eventually};

fn deployment(labels: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: frontend
  labels: {{app: frontend{labels}}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: frontend}}
  template:
    metadata:
      labels: {{app: frontend}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
"#
    )
}

fn has_field(status: &driftwarden::api::DesiredStateStatus, field: &str) -> bool {
    status.drifted_objects.iter().any(|d| d.object.name == "frontend" && d.fields.iter().any(|f| f == field))
}

/// Measured case 1: `--field-manager=kube-controller-manager` made
/// `privileged: true` invisible.
#[tokio::test]
async fn privileged_under_the_controller_managers_name_is_drift() {
    let t = drift_setup("trust-manager-name").await;
    t.kubectl(&["apply", "-f", "-"], Some(&deployment("")));
    t.desired_state("app", &[("app.yaml", deployment(""))], json!([])).await;
    t.wait_for_status("app", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;

    let privileged = json!([{"op": "add", "path": "/spec/template/spec/containers/0/securityContext",
        "value": {"privileged": true}}])
    .to_string();
    for manager in ["kube-controller-manager", "driftwarden", "helm"] {
        let patch = json!([{"op": "add", "path": "/metadata/labels/by", "value": manager}]).to_string();
        t.kubectl(
            &["patch", "deployment/frontend", &format!("--field-manager={manager}"), "--type=json", "-p", &patch],
            None,
        );
    }
    t.kubectl(
        &["patch", "deployment/frontend", "--field-manager=kube-controller-manager", "--type=json", "-p", &privileged],
        None,
    );
    let status = t
        .wait_for_status("app", Duration::from_secs(30), |s| {
            has_field(s, "/spec/template/spec/containers/0/securityContext/privileged (added)")
                && has_field(s, "/metadata/labels/by (added)")
        })
        .await;
    assert_eq!(status.drifted, Some(1), "{status:#?}");
}

/// Measured case 2: a label added with a plain `kubectl apply` of a modified
/// manifest was not reported, and survived the revert of the same object.
#[tokio::test]
async fn a_label_added_by_plain_kubectl_apply_is_drift_and_reverted() {
    let t = drift_setup("trust-apply-label").await;
    t.kubectl(&["apply", "-f", "-"], Some(&deployment("")));
    let revert = json!({"unauthorized": "Revert", "windowEnd": "Revert"});
    t.desired_state_spec("app", &[("app.yaml", deployment(""))], json!({"remediation": revert})).await;
    t.wait_for_status("app", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;

    // The same manifest, with a label added and the image changed, applied
    // the way people apply manifests.
    let modified = deployment(", owner: mallory").replace("nginx:1.27", "nginx:1.28");
    t.kubectl(&["apply", "-f", "-"], Some(&modified));
    let reverted = eventually(Duration::from_secs(30), || async {
        let live = t.kubectl(&["get", "deployment", "frontend", "-o", "json"], None);
        let live: serde_json::Value = serde_json::from_str(&live).ok()?;
        let image = live["spec"]["template"]["spec"]["containers"][0]["image"].as_str().map(str::to_owned);
        (image.as_deref() == Some("nginx:1.27") && live["metadata"]["labels"].get("owner").is_none()).then_some(live)
    })
    .await;
    assert!(reverted.is_some(), "the image or the label survived the revert");
    t.wait_for_status("app", Duration::from_secs(30), |s| s.drifted == Some(0) && s.last_revert.is_some()).await;
}

/// Measured case 2, inside a window: alice's plain `kubectl apply` adds a
/// label and changes the image; when her window ends both are reverted.
#[tokio::test]
async fn a_label_added_in_a_window_is_reverted_with_the_rest_when_it_ends() {
    let t = drift_setup("trust-window-label").await;
    t.kubectl(&["apply", "-f", "-"], Some(&deployment("")));
    let revert = json!({"unauthorized": "Revert", "windowEnd": "Revert"});
    t.desired_state_spec("app", &[("app.yaml", deployment(""))], json!({"remediation": revert})).await;
    t.wait_for_status("app", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;
    crate::gate::alice_window(&t, "alice-apply", "30m").await;

    let modified = deployment(", owner: alice").replace("nginx:1.27", "nginx:1.28");
    let mut apply = t.env.kubectl(User::Alice);
    apply.args(["apply", "-f", "-"]).stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped());
    let mut child = apply.spawn().unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), modified.as_bytes()).unwrap();
    assert!(child.wait_with_output().unwrap().status.success(), "alice's kubectl apply failed");
    let held = t
        .wait_for_status("app", Duration::from_secs(30), |s| {
            crate::gate::held_for(s, "frontend", "alice-apply") && has_field(s, "/metadata/labels/owner (added)")
        })
        .await;
    assert!(has_field(&held, "/spec/template/spec/containers/0/image (changed)"), "{held:#?}");

    let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
    raw_requests(&t, User::Alice).await.patch("alice-apply", &PatchParams::default(), &revoke).await.unwrap();
    let reverted = eventually(Duration::from_secs(30), || async {
        let live = t.kubectl(&["get", "deployment", "frontend", "-o", "json"], None);
        let live: serde_json::Value = serde_json::from_str(&live).ok()?;
        let image = live["spec"]["template"]["spec"]["containers"][0]["image"].as_str().map(str::to_owned);
        (image.as_deref() == Some("nginx:1.27") && live["metadata"]["labels"].get("owner").is_none()).then_some(())
    })
    .await;
    assert!(reverted.is_some(), "the image or the label survived the window-end revert");
}

/// Measured case 3: an approval for `view` for 10 minutes was carried over
/// to a request of the same name asking for `edit`.
#[tokio::test]
async fn an_approval_never_carries_over_to_a_recreated_request() {
    let t = setup("trust-recreated", json!({})).await;
    t.request(User::Alice, "same-name", "view", "10m").await.unwrap();
    t.review(User::Carol, "carol-ok", "same-name", "Approve").await.unwrap();
    t.wait_for_phase("same-name", AccessPhase::Active, Duration::from_secs(10)).await;

    let requests = t.env.api::<AccessRequest>(User::Admin).await;
    requests.delete("same-name", &DeleteParams::foreground()).await.unwrap();
    eventually(Duration::from_secs(30), || async {
        requests.get_opt("same-name").await.unwrap().is_none().then_some(())
    })
    .await
    .expect("the request was not deleted");
    t.request(User::Alice, "same-name", "edit", "1h").await.unwrap();
    let pending = t.wait_for_phase("same-name", AccessPhase::Pending, Duration::from_secs(10)).await;
    let ignored = &pending.status.unwrap().ignored_reviews;
    assert!(
        ignored.iter().any(|i| i.review == "carol-ok" && i.reason.contains("earlier request of the same name")),
        "{ignored:?}"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    t.wait_for_phase("same-name", AccessPhase::Pending, Duration::from_secs(1)).await;
    assert!(t.binding("same-name").await.is_none(), "the re-created request was granted on the old approval");

    // A review stamped for the old request cannot be replayed either.
    let api = t.env.raw_api::<driftwarden::api::AccessReview>(User::Dave).await;
    let replay: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": "replayed"},
        "spec": {"accessRequest": "same-name", "decision": "Approve", "reason": "checked the incident ticket",
                 "accessRequestUID": "00000000-0000-0000-0000-000000000000"},
    }))
    .unwrap();
    let (_, message) = api_error(api.create(&PostParams::default(), &replay).await);
    assert!(message.contains("accessRequestUID"), "{message}");
}

/// Measured case 4: the window, the activity and the phase were read back
/// from status, which anyone granted `accessrequests/status` could write.
#[tokio::test]
async fn a_user_with_status_rights_can_neither_extend_end_nor_erase_a_window() {
    let t = setup("trust-status", json!({})).await;
    // Bob is given write access to AccessRequest status in this namespace.
    let role: Role = serde_json::from_value(json!({"metadata": {"name": "status-writer"}, "rules": [
        {"apiGroups": ["driftwarden.io"], "resources": ["accessrequests/status"], "verbs": ["get", "patch", "update"]}]}))
    .unwrap();
    t.env.api::<Role>(User::Admin).await.create(&PostParams::default(), &role).await.unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({"metadata": {"name": "bob-status-writer"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "status-writer"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]}))
    .unwrap();
    t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();

    t.request(User::Alice, "alices", "edit", "30m").await.unwrap();
    t.review(User::Carol, "carol-ok", "alices", "Approve").await.unwrap();
    let active = t.wait_for_phase("alices", AccessPhase::Active, Duration::from_secs(10)).await;
    let expires = active.status.as_ref().and_then(|s| s.expires_at.clone()).expect("an expiry");

    let tamper = |status: serde_json::Value| Patch::Merge(json!({"status": status}));
    let attempts = [
        ("extend", json!({"expiresAt": "2099-01-01T00:00:00Z"})),
        ("end", json!({"phase": "Expired", "message": "tampered"})),
        ("erase activity", json!({"activity": [], "activityCount": 0, "scopeWrites": []})),
    ];
    for user in [User::Bob, User::Admin] {
        let api = t.env.raw_api::<AccessRequest>(user).await;
        for (what, status) in &attempts {
            let (code, message) =
                api_error(api.patch_status("alices", &PatchParams::default(), &tamper(status.clone())).await);
            assert!(code == 403 || code == 422 || code == 400, "{user:?} {what}: {code} {message}");
            assert!(message.contains("written only by the operator"), "{user:?} {what}: {message}");
        }
    }
    let after = t.wait_for_phase("alices", AccessPhase::Active, Duration::from_secs(1)).await;
    assert_eq!(after.status.and_then(|s| s.expires_at), Some(expires));
    assert!(t.binding("alices").await.is_some());
}

/// Measured case 6: a cluster admin could not revoke a request.
#[tokio::test]
async fn a_cluster_admin_can_revoke_any_request_and_it_is_recorded() {
    let t = setup("trust-break-glass", json!({})).await;
    t.request(User::Alice, "incident", "edit", "30m").await.unwrap();
    t.review(User::Carol, "carol-ok", "incident", "Approve").await.unwrap();
    t.wait_for_phase("incident", AccessPhase::Active, Duration::from_secs(10)).await;

    let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
    raw_requests(&t, User::Admin).await.patch("incident", &PatchParams::default(), &revoke).await.unwrap();
    t.wait_for_phase("incident", AccessPhase::Revoked, Duration::from_secs(10)).await;
    assert!(t.binding("incident").await.is_none(), "the RoleBinding outlived the revocation");
    let events = t.events_until("incident", |e| e.iter().any(|l| l.starts_with("BreakGlassRevocation"))).await;
    let line = events.iter().find(|l| l.starts_with("BreakGlassRevocation")).expect("a BreakGlassRevocation event");
    assert!(line.contains("revoked by admin") && line.contains("group system:masters"), "{line}");
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    assert!(log.lines().any(|l| l.contains("break-glass revocation") && l.contains("\"admin\"")), "not logged");
}
