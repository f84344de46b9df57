use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DynamicObject, PostParams};
use serde_json::json;

use crate::common::{REASON, setup};
use crate::support::{access_request, api_error};

#[tokio::test]
async fn nobody_can_request_or_review_in_someone_elses_name() {
    let t = setup("forgery", json!({})).await;
    let as_alice = t.env.raw_api::<AccessRequest>(User::Alice).await;
    let forged = access_request("as-bob", Some("bob"), "edit", "30m", REASON);
    let (code, message) = api_error(as_alice.create(&PostParams::default(), &forged).await);
    assert_eq!(code, 400, "{message}");
    assert!(message.contains("spec.requester is set from your identity (alice)"), "{message}");

    t.request(User::Alice, "real", "edit", "30m").await.unwrap();
    let as_carol = t.env.raw_api::<AccessReview>(User::Carol).await;
    let forged_review: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": "as-dave"},
        "spec": {"accessRequest": "real", "decision": "Approve", "reason": "checked the incident ticket", "reviewer": "dave"},
    }))
    .unwrap();
    let (_, message) = api_error(as_carol.create(&PostParams::default(), &forged_review).await);
    assert!(message.contains("spec.reviewer is set from your identity (carol)"), "{message}");
    // Nothing was admitted in their names.
    assert!(t.env.api::<AccessReview>(User::Admin).await.get_opt("as-dave").await.unwrap().is_none());
    assert!(t.env.api::<AccessRequest>(User::Admin).await.get_opt("as-bob").await.unwrap().is_none());
}

#[tokio::test]
async fn self_approval_and_approval_by_outsiders_are_ignored_and_reported() {
    let t = setup("self-approval", json!({})).await;
    // Let everyone write reviews here, so only the operator stands between
    // alice (or mallory) and an approval.
    let open_reviews: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "everyone-reviews"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "driftwarden-approver"},
        "subjects": [
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "mallory"},
        ],
    }))
    .unwrap();
    t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &open_reviews).await.unwrap();

    t.request(User::Alice, "mine", "edit", "30m").await.unwrap();
    t.review(User::Alice, "alice-approves-herself", "mine", "Approve").await.unwrap();
    t.review(User::Mallory, "mallory-approves", "mine", "Approve").await.unwrap();
    t.review(User::Bob, "bob-approves", "mine", "Approve").await.unwrap();

    let api = t.env.api::<AccessRequest>(User::Admin).await;
    let reported = crate::support::eventually(Duration::from_secs(10), || async {
        let status = api.get("mine").await.ok()?.status?;
        (status.ignored_reviews.len() == 3).then_some(status)
    })
    .await
    .expect("the three reviews were not reported as ignored");
    assert_eq!(reported.phase, Some(AccessPhase::Pending));
    let reasons: Vec<(String, String)> =
        reported.ignored_reviews.iter().map(|i| (i.review.clone(), i.reason.clone())).collect();
    let policy = &t.env.namespace;
    assert!(
        reasons.contains(&("alice-approves-herself".into(), "requesters cannot review their own request".into())),
        "{reasons:?}"
    );
    assert!(
        reasons
            .contains(&("mallory-approves".into(), format!("mallory is not an approver under AccessPolicy {policy}"))),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&("bob-approves".into(), format!("bob is not an approver under AccessPolicy {policy}"))),
        "{reasons:?}"
    );
    assert!(t.binding("mine").await.is_none());
    let ignored = |events: &[String]| events.iter().filter(|e| e.starts_with("ReviewIgnored")).count();
    let events = t.events_until("mine", |events| ignored(events) >= 3).await;
    if ignored(&events) != 3 {
        let mut kubectl = t.env.kubectl(User::Admin);
        kubectl.args(["get", "events", "-o", "wide"]);
        panic!("{events:#?}\n{}", crate::support::output(kubectl));
    }
}

#[tokio::test]
async fn a_requester_in_the_approver_group_still_cannot_approve_herself() {
    // carol is an SRE, so her group approves; her own request still needs someone else.
    let t = setup("approver-requests", json!({})).await;
    let requester: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "sre-may-request"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "driftwarden-requester"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "sre"}],
    }))
    .unwrap();
    t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &requester).await.unwrap();
    t.request(User::Carol, "carols", "edit", "30m").await.unwrap();
    t.review(User::Carol, "carol-self", "carols", "Approve").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let request = t.wait_for_phase("carols", AccessPhase::Pending, Duration::from_secs(5)).await;
    assert_eq!(request.status.unwrap().ignored_reviews[0].reason, "requesters cannot review their own request");
    t.review(User::Dave, "dave-approves", "carols", "Approve").await.unwrap();
    t.wait_for_phase("carols", AccessPhase::Active, Duration::from_secs(10)).await;
}
