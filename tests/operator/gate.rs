//! The gate against a real API server with its audit webhook wired to the
//! operator: who changed a managed object decides whether the change is
//! held for an access session or reverted at once.

use std::time::{Duration, Instant};

use driftwarden::api::{
    AccessPhase, AccessRequest, Attribution, DesiredStateStatus, DriftAction, DriftClass, DriftedObject,
};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{AccessTest, drift_setup};
use crate::support::eventually;

pub(crate) const SHOP: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: safe
";

/// Applies the source as `kubectl apply` would (so Git's fields are owned by
/// an IaC manager) and waits until the DesiredState reports it in sync.
pub(crate) async fn managed_shop(t: &AccessTest, spec: Value) {
    t.kubectl(&["apply", "-f", "-"], Some(SHOP));
    t.desired_state_spec("shop", &[("shop.yaml", SHOP.to_owned())], spec).await;
    t.wait_for_status("shop", Duration::from_secs(20), |s| s.managed == Some(2) && s.drifted == Some(0)).await;
    t.wait_for_write_log().await;
}

/// alice holds an approved `edit` window of `duration`; returns its end.
pub(crate) async fn alice_window(t: &AccessTest, name: &str, duration: &str) -> Timestamp {
    t.request(User::Alice, name, "edit", duration).await.unwrap();
    t.review(User::Carol, &format!("{name}-ok"), name, "Approve").await.unwrap();
    let active = t.wait_for_phase(name, AccessPhase::Active, Duration::from_secs(10)).await;
    active.status.unwrap().expires_at.unwrap().0
}

pub(crate) async fn scale(t: &AccessTest, user: User, replicas: i32) {
    let api: Api<Deployment> = t.env.api(user).await;
    let patch = Patch::Merge(json!({"spec": {"replicas": replicas}}));
    api.patch_scale("web", &PatchParams::default(), &patch).await.unwrap();
}

pub(crate) async fn set_mode(t: &AccessTest, user: User, mode: &str) {
    let api: Api<ConfigMap> = t.env.api(user).await;
    api.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": mode}}))).await.unwrap();
}

pub(crate) async fn replicas(t: &AccessTest) -> i32 {
    let deployment = t.env.api::<Deployment>(User::Admin).await.get("web").await.unwrap();
    deployment.spec.and_then(|s| s.replicas).unwrap_or_default()
}

pub(crate) async fn mode(t: &AccessTest) -> String {
    let config_map = t.env.api::<ConfigMap>(User::Admin).await.get("settings").await.unwrap();
    config_map.data.and_then(|d| d.get("mode").cloned()).unwrap_or_default()
}

pub(crate) fn drifted<'a>(status: &'a DesiredStateStatus, name: &str) -> Option<&'a DriftedObject> {
    status.drifted_objects.iter().find(|d| d.object.name == name)
}

pub(crate) fn held_for(status: &DesiredStateStatus, name: &str, request: &str) -> bool {
    drifted(status, name).is_some_and(|d| {
        d.class == DriftClass::Authorized
            && d.action == Some(DriftAction::Hold)
            && d.access_request.as_deref() == Some(request)
            && d.attribution == Some(Attribution::AuditLog)
    })
}

pub(crate) async fn request_status(t: &AccessTest, name: &str) -> driftwarden::api::AccessRequestStatus {
    t.env.api::<AccessRequest>(User::Admin).await.get(name).await.unwrap().status.unwrap_or_default()
}

/// Gives bob standing `edit` here: access no AccessRequest stands behind.
pub(crate) async fn standing_edit(t: &AccessTest, user: &str) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": format!("standing-edit-{user}")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();
}

pub(crate) async fn until<F, Fut>(timeout: Duration, what: &str, check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    let mut check = check;
    let done = eventually(timeout, || {
        let fut = check();
        async move { fut.await.then_some(()) }
    })
    .await;
    assert!(done.is_some(), "{what} did not happen within {timeout:?}");
    started.elapsed()
}

#[tokio::test]
async fn a_session_change_is_held_logged_and_reverted_with_a_codify_patch_when_the_window_ends() {
    let t = drift_setup("gate-session").await;
    managed_shop(&t, json!({})).await;
    let expires_at = alice_window(&t, "alice-fix", "20s").await;

    scale(&t, User::Alice, 5).await;
    set_mode(&t, User::Alice, "debug").await;
    let status = t
        .wait_for_status("shop", Duration::from_secs(10), |s| {
            held_for(s, "web", "alice-fix") && held_for(s, "settings", "alice-fix")
        })
        .await;
    assert_eq!(status.drift_counts.as_ref().unwrap().authorized, 2);
    assert_eq!(drifted(&status, "web").unwrap().revert_at.as_ref().map(|t| t.0), Some(expires_at));

    // Her activity log lists both writes; nothing was reverted meanwhile.
    let activity = request_status(&t, "alice-fix").await.activity;
    let touched: Vec<(&str, Option<&str>)> =
        activity.iter().map(|e| (e.resource.as_str(), e.name.as_deref())).collect();
    assert!(touched.contains(&("deployments.apps/scale", Some("web"))), "{activity:#?}");
    assert!(touched.contains(&("configmaps", Some("settings"))), "{activity:#?}");
    assert!(activity.iter().all(|e| e.user == "alice"));
    assert_eq!((replicas(&t).await, mode(&t).await.as_str()), (5, "debug"));

    // The window ends: both go back to Git at once.
    let wait = expires_at.duration_since(Timestamp::now());
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    let lag = until(Duration::from_secs(10), "the revert at window end", || async {
        replicas(&t).await == 2 && mode(&t).await == "safe"
    })
    .await;
    assert!(lag < Duration::from_secs(2), "reverted {lag:?} after the window ended");

    let status =
        t.wait_for_status("shop", Duration::from_secs(10), |s| s.drifted == Some(0) && s.last_revert.is_some()).await;
    assert_eq!(status.last_revert.unwrap().class, DriftClass::WindowEnded);
    let changes = eventually(Duration::from_secs(5), || async {
        let changes = request_status(&t, "alice-fix").await.session_changes;
        (changes.len() == 2).then_some(changes)
    })
    .await
    .expect("both objects codified");
    let web = changes.iter().find(|c| c.object.name == "web").unwrap();
    assert!(web.patch.contains("-  replicas: 2\n+  replicas: 5"), "{}", web.patch);
    assert_eq!(web.source, "shop-source/shop.yaml");
    let events = t.events_until("alice-fix", |e| e.iter().any(|l| l.starts_with("SessionChangesCodified"))).await;
    assert!(events.iter().any(|l| l.starts_with("SessionChangesCodified")), "{events:#?}");
}

#[tokio::test]
async fn a_change_without_a_grant_is_reverted_at_once_even_while_another_window_is_open() {
    let t = drift_setup("gate-unauthorized").await;
    standing_edit(&t, "bob").await;
    managed_shop(&t, json!({})).await;
    alice_window(&t, "alice-open", "1m").await;

    let changed = Instant::now();
    set_mode(&t, User::Bob, "bob-was-here").await;
    let took = until(Duration::from_secs(10), "bob's change reverted", || async { mode(&t).await == "safe" }).await;
    let status = t.wait_for_status("shop", Duration::from_secs(5), |s| s.last_revert.is_some()).await;
    let last = status.last_revert.unwrap();
    assert_eq!((last.class, last.object.name.as_str()), (DriftClass::Unauthorized, "settings"));
    assert!(took < Duration::from_secs(5), "took {took:?} (from {changed:?})");

    // alice's window logged bob's write as someone else's, not as hers.
    let status = request_status(&t, "alice-open").await;
    assert!(status.activity.is_empty(), "{:#?}", status.activity);
    assert!(status.scope_writes.iter().any(|e| e.user == "bob" && e.name.as_deref() == Some("settings")));
}

#[tokio::test]
async fn report_mode_reports_unauthorized_drift_and_leaves_it() {
    let t = drift_setup("gate-report").await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report"}})).await;
    set_mode(&t, User::Admin, "hotfix").await;
    let status = t
        .wait_for_status("shop", Duration::from_secs(10), |s| {
            drifted(s, "settings").is_some_and(|d| d.action == Some(DriftAction::Report))
        })
        .await;
    assert_eq!(drifted(&status, "settings").unwrap().class, DriftClass::Unauthorized);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mode(&t).await, "hotfix");
    assert!(t.wait_for_status("shop", Duration::from_secs(1), |_| true).await.last_revert.is_none());
}

#[tokio::test]
async fn dry_run_says_what_it_would_revert() {
    let t = drift_setup("gate-dry-run").await;
    managed_shop(&t, json!({"dryRun": true})).await;
    set_mode(&t, User::Admin, "hotfix").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| {
        drifted(s, "settings").is_some_and(|d| d.action == Some(DriftAction::WouldRevert))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mode(&t).await, "hotfix");
}

#[tokio::test]
async fn a_foreign_addition_is_removed_and_autoscaler_replicas_are_left_alone() {
    let t = drift_setup("gate-foreign").await;
    let ignore = json!([{"jsonPointers": ["/spec/replicas"], "fieldManagers": ["horizontal-pod-autoscaler"]}]);
    managed_shop(&t, json!({"ignore": ignore})).await;
    let api: Api<Deployment> = t.env.api(User::Admin).await;
    let hpa = PatchParams { field_manager: Some("horizontal-pod-autoscaler".into()), ..Default::default() };
    api.patch_scale("web", &hpa, &Patch::Merge(json!({"spec": {"replicas": 7}}))).await.unwrap();
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let privileged = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "securityContext": {"privileged": true}}]}}}});
    api.patch("web", &edit, &Patch::Strategic(privileged)).await.unwrap();

    until(Duration::from_secs(10), "privileged removed", || async {
        let web = api.get("web").await.unwrap();
        let container = &web.spec.unwrap().template.spec.unwrap().containers[0];
        container.security_context.as_ref().and_then(|s| s.privileged).is_none()
    })
    .await;
    assert_eq!(replicas(&t).await, 7, "the autoscaler's replicas stay");
    // The in-sync status from before the edit would satisfy "drifted 0":
    // wait for the one that counts the revert.
    let status =
        t.wait_for_status("shop", Duration::from_secs(10), |s| s.drifted == Some(0) && s.reverts.is_some()).await;
    assert_eq!(status.reverts, Some(1));
    // Reverted once, then left alone: a second look writes nothing. (The
    // deployment controller keeps writing status, so the resourceVersion
    // moves: the spec's generation and the revert count must not.)
    let generation = api.get("web").await.unwrap().metadata.generation;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.get("web").await.unwrap().metadata.generation, generation);
    let again = t.wait_for_status("shop", Duration::from_secs(5), |s| s.drifted == Some(0)).await;
    assert_eq!(again.reverts, Some(1));
}

#[tokio::test]
async fn when_git_catches_up_during_the_window_nothing_is_reverted() {
    let t = drift_setup("gate-catch-up").await;
    managed_shop(&t, json!({})).await;
    let expires_at = alice_window(&t, "alice-commit", "12s").await;
    scale(&t, User::Alice, 4).await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "web", "alice-commit")).await;

    // The team commits alice's change; the new revision arrives.
    let committed = SHOP.replace("replicas: 2", "replicas: 4");
    t.update_source("shop-source", |source| {
        source.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), "4567cdef".into());
        source.data.get_or_insert_default().insert("shop.yaml".into(), committed);
    })
    .await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| {
        s.drifted == Some(0) && s.revision.as_deref() == Some("4567cdef")
    })
    .await;

    let wait = expires_at.duration_since(Timestamp::now()) + k8s_openapi::jiff::SignedDuration::from_secs(3);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    assert_eq!(replicas(&t).await, 4);
    let status = t.wait_for_status("shop", Duration::from_secs(1), |_| true).await;
    assert!(status.last_revert.is_none(), "{:?}", status.last_revert);
}

#[tokio::test]
async fn revoking_a_window_reverts_its_changes_at_once() {
    let t = drift_setup("gate-revoke").await;
    managed_shop(&t, json!({})).await;
    alice_window(&t, "alice-revoked", "10m").await;
    set_mode(&t, User::Alice, "experiment").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "settings", "alice-revoked")).await;

    let requests = crate::common::raw_requests(&t, User::Alice).await;
    requests
        .patch("alice-revoked", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}})))
        .await
        .unwrap();
    let took = until(Duration::from_secs(10), "revert on revocation", || async { mode(&t).await == "safe" }).await;
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let status = t.wait_for_status("shop", Duration::from_secs(5), |s| s.last_revert.is_some()).await;
    let last = status.last_revert.unwrap();
    assert_eq!((last.class, last.access_request.as_deref()), (DriftClass::WindowEnded, Some("alice-revoked")));
}

#[tokio::test]
async fn a_pending_request_shows_approvers_the_drift_it_would_approve_into() {
    let t = drift_setup("gate-blast-radius").await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report"}})).await;
    set_mode(&t, User::Admin, "hotfix").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| s.drifted == Some(1)).await;
    t.request(User::Alice, "alice-wants-in", "edit", "30m").await.unwrap();
    let shown = eventually(Duration::from_secs(10), || async {
        request_status(&t, "alice-wants-in").await.pending_drift.filter(|d| d.drifted == 1)
    })
    .await
    .expect("the pending request lists the drift");
    let namespace = &t.env.namespace;
    assert_eq!(shown.objects, [format!("ConfigMap {namespace}/settings")]);
}
