use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest};
use driftwarden_dev::controlplane::User;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::common::{raw_requests, setup};
use crate::support::{api_error, eventually};

fn revoke() -> Patch<serde_json::Value> {
    Patch::Merge(json!({"spec": {"revoked": true}}))
}

#[tokio::test]
async fn the_requester_or_an_approver_can_revoke_and_nobody_else() {
    let t = setup("revocation", json!({})).await;
    for name in ["by-requester", "by-approver", "by-bystander"] {
        t.request(User::Alice, name, "edit", "30m").await.unwrap();
        t.review(User::Carol, &format!("{name}-ok"), name, "Approve").await.unwrap();
        t.wait_for_phase(name, AccessPhase::Active, Duration::from_secs(10)).await;
    }

    raw_requests(&t, User::Alice).await.patch("by-requester", &PatchParams::default(), &revoke()).await.unwrap();
    raw_requests(&t, User::Carol).await.patch("by-approver", &PatchParams::default(), &revoke()).await.unwrap();
    let (_, message) =
        api_error(raw_requests(&t, User::Bob).await.patch("by-bystander", &PatchParams::default(), &revoke()).await);
    assert!(message.contains("only the requester (alice), an approver or a break-glass admin may revoke"), "{message}");

    for name in ["by-requester", "by-approver"] {
        t.wait_for_phase(name, AccessPhase::Revoked, Duration::from_secs(10)).await;
        assert!(t.binding(name).await.is_none(), "{name}: the RoleBinding outlived the revocation");
    }
    t.wait_for_phase("by-bystander", AccessPhase::Active, Duration::from_secs(1)).await;
    assert!(t.binding("by-bystander").await.is_some());
}

#[tokio::test]
async fn deleting_the_request_removes_the_binding() {
    let t = setup("deletion", json!({})).await;
    t.request(User::Alice, "short-lived", "view", "30m").await.unwrap();
    t.review(User::Dave, "dave-ok", "short-lived", "Approve").await.unwrap();
    t.wait_for_phase("short-lived", AccessPhase::Active, Duration::from_secs(10)).await;
    t.env.api::<AccessRequest>(User::Admin).await.delete("short-lived", &DeleteParams::background()).await.unwrap();
    let gone =
        eventually(Duration::from_secs(60), || async { t.binding("short-lived").await.is_none().then_some(()) }).await;
    assert!(gone.is_some(), "the RoleBinding outlived its deleted AccessRequest");
}

#[tokio::test]
async fn a_faked_expiry_in_status_is_refused_and_ends_nothing() {
    let t = setup("sweep", json!({})).await;
    t.request(User::Alice, "edited", "view", "30m").await.unwrap();
    t.review(User::Dave, "dave-ok", "edited", "Approve").await.unwrap();
    t.wait_for_phase("edited", AccessPhase::Active, Duration::from_secs(10)).await;
    // Even a cluster admin cannot write status: only the operator's
    // identity may (the chart's ValidatingAdmissionPolicy).
    let status = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
        "status": {"phase": "Expired", "message": "tampered"}});
    let (_, message) = api_error(
        t.env
            .api::<AccessRequest>(User::Admin)
            .await
            .patch_status("edited", &PatchParams::apply("tamper").force(), &Patch::Apply(status))
            .await,
    );
    assert!(message.contains("written only by the operator"), "{message}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    t.wait_for_phase("edited", AccessPhase::Active, Duration::from_secs(1)).await;
    assert!(t.binding("edited").await.is_some(), "a refused write ended the grant");
}
