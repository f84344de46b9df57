//! Faults: the API server and etcd restart under the operator, another
//! writer fights over the same objects, a restart forces a full reconcile.
//! The operator recovers by itself, loses no revert, duplicates no grant
//! and writes nothing it need not.

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest, DesiredState};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::json;

use crate::common::{AccessTest, drift_setup};
use crate::gate::{managed_shop, mode, set_mode, until};
use crate::restart::Outage;
use crate::support::operator::OPERATOR;

/// RoleBindings that grant `request` (there must never be two).
async fn bindings_of(t: &AccessTest, request: &str) -> usize {
    let uid = t.env.api::<AccessRequest>(User::Admin).await.get(request).await.unwrap().uid().unwrap();
    let selector = format!("driftwarden.io/access-request-uid={uid}");
    let api = t.env.api::<RoleBinding>(User::Admin).await;
    api.list(&ListParams::default().labels(&selector)).await.unwrap().items.len()
}

/// A grant of `view`: it cannot write what the DesiredState manages, so it
/// holds no drift even when audit events are lost in a restart.
async fn grant(t: &AccessTest, name: &str) {
    t.request(User::Alice, name, "view", "10m").await.unwrap();
    t.review(User::Carol, &format!("{name}-ok"), name, "Approve").await.unwrap();
}

#[tokio::test]
async fn the_operator_rides_out_api_server_and_etcd_restarts() {
    let mut t = drift_setup("fault-restarts").await;
    t.running.take();
    let exclusive = OPERATOR.write().await;
    let operator = t.operator;
    operator.wait_until_serving().await.unwrap();
    managed_shop(&t, json!({})).await;
    grant(&t, "before").await;
    t.wait_for_phase("before", AccessPhase::Active, Duration::from_secs(10)).await;

    // A drift, then the API server goes away before (or while) it is reverted.
    set_mode(&t, User::Admin, "during-apiserver-restart").await;
    operator.cp.restart_apiserver(Duration::from_secs(2)).await.unwrap();
    until(Duration::from_secs(30), "the revert across the API server restart", || async { mode(&t).await == "safe" })
        .await;
    operator.wait_until_serving().await.unwrap();
    grant(&t, "after-apiserver").await;
    t.wait_for_phase("after-apiserver", AccessPhase::Active, Duration::from_secs(30)).await;

    // etcd goes away under a running API server.
    set_mode(&t, User::Admin, "before-etcd-restart").await;
    operator.cp.restart_etcd(Duration::from_secs(2)).await.unwrap();
    until(Duration::from_secs(60), "the revert across the etcd restart", || async {
        tokio::time::timeout(Duration::from_secs(5), mode(&t)).await.is_ok_and(|m| m == "safe")
    })
    .await;
    set_mode(&t, User::Admin, "after-etcd-restart").await;
    until(Duration::from_secs(30), "a revert after etcd is back", || async { mode(&t).await == "safe" }).await;

    // One binding per grant, whatever was retried; the operator never crashed.
    for request in ["before", "after-apiserver"] {
        assert_eq!(bindings_of(&t, request).await, 1, "RoleBindings of {request}");
    }
    assert!(!operator.operator_exited(), "the operator exited");
    let log = std::fs::read_to_string(operator.log()).unwrap_or_default();
    assert!(!log.contains("panicked"), "the operator panicked");
    drop(exclusive);
}

#[tokio::test]
async fn a_revert_converges_against_a_busy_writer_and_leaves_its_fields_alone() {
    let t = drift_setup("fault-conflicts").await;
    let ignore = json!([{"jsonPointers": ["/metadata/annotations/tick"]}]);
    managed_shop(&t, json!({"ignore": ignore})).await;
    let deployments: Api<Deployment> = t.env.api(User::Admin).await;

    // Another writer bumps an annotation of its own as fast as it can, so
    // the resourceVersion the revert's removal is guarded by keeps moving.
    let writer = {
        let api = deployments.clone();
        tokio::spawn(async move {
            let params = PatchParams { field_manager: Some("ticker".into()), ..Default::default() };
            for tick in 0u64.. {
                let patch = json!({"metadata": {"annotations": {"tick": tick.to_string()}}});
                let _ = api.patch("web", &params, &Patch::Merge(patch)).await;
            }
        })
    };
    let edit = PatchParams { field_manager: Some("kubectl-edit".into()), ..Default::default() };
    let privileged = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "securityContext": {"privileged": true}}]}}}});
    deployments.patch("web", &edit, &Patch::Strategic(privileged)).await.unwrap();
    let edited = std::time::Instant::now();
    until(Duration::from_secs(20), "the revert under contention", || async {
        let web = deployments.get("web").await.unwrap();
        web.spec.unwrap().template.spec.unwrap().containers[0].security_context.is_none()
    })
    .await;
    eprintln!("reverted under contention after {:?}", edited.elapsed());
    // (`-- --nocapture` prints it: the figure in docs/GATE.md.)
    writer.abort();
    let web = deployments.get("web").await.unwrap();
    assert!(web.annotations().contains_key("tick"), "the revert removed the other writer's field");
    t.wait_for_status("shop", Duration::from_secs(10), |s| s.drifted == Some(0) && s.reverts.unwrap_or(0) >= 1).await;
}

/// The resourceVersions of everything the operator could write in the test.
async fn versions(t: &AccessTest) -> [Option<String>; 5] {
    let web = t.env.api::<Deployment>(User::Admin).await.get("web").await.unwrap();
    let settings = t.env.api::<ConfigMap>(User::Admin).await.get("settings").await.unwrap();
    let state = t.env.api::<DesiredState>(User::Admin).await.get("shop").await.unwrap();
    let request = t.env.api::<AccessRequest>(User::Admin).await.get("steady").await.unwrap();
    let binding = t.binding("steady").await.unwrap();
    [
        web.resource_version(),
        settings.resource_version(),
        state.resource_version(),
        request.resource_version(),
        binding.resource_version(),
    ]
}

#[tokio::test]
async fn a_full_reconcile_after_sync_writes_nothing() {
    let mut t = drift_setup("fault-idempotent").await;
    managed_shop(&t, json!({})).await;
    grant(&t, "steady").await;
    t.wait_for_phase("steady", AccessPhase::Active, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = versions(&t).await;

    // A restart reconciles every DesiredState and AccessRequest from scratch.
    t.running.take();
    let exclusive = OPERATOR.write().await;
    let outage = Outage::begin(t.operator);
    outage.end();
    t.operator.wait_until_serving().await.unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(versions(&t).await, before, "a full reconcile of an unchanged world wrote something");
    drop(exclusive);
}
