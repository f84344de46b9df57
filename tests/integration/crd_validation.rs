//! The API server itself rejects invalid objects, with messages that say
//! what is wrong (the CEL rules and schema of the CRDs).

use driftwarden::api::{AccessPolicy, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;

use crate::support::{TestEnv, access_request, api_error, unique_name};

const REASON: &str = "incident INC-42: restart the stuck consumer";

#[tokio::test]
async fn invalid_access_requests_are_rejected_with_a_clear_message() {
    let env = TestEnv::new("request-validation").await;
    let api = env.raw_api::<AccessRequest>(User::Admin).await;
    // (name, role, duration, reason, expected message)
    let cases = [
        ("not-a-duration", "edit", "banana", REASON, "must be a Go duration with a unit"),
        ("no-unit", "edit", "30", REASON, "must be a Go duration with a unit"),
        ("negative", "edit", "-5m", REASON, "must be a Go duration with a unit"),
        ("zero", "edit", "0s", REASON, "must be longer than zero"),
        ("too-long", "edit", "25h", REASON, "must be at most 24h"),
        ("way-too-long", "edit", "8760h", REASON, "must be at most 24h"),
        ("wildcard-role", "*", "30m", REASON, "wildcards (*) are not allowed"),
        ("wildcard-prefix", "admin-*", "30m", REASON, "wildcards (*) are not allowed"),
        ("empty-reason", "edit", "30m", "", "must explain why"),
        ("trivial-reason", "edit", "30m", "   fix    ", "must explain why"),
    ];
    for (name, role, duration, reason, expected) in cases {
        let request = access_request(name, Some("admin"), role, duration, reason);
        let (code, message) = api_error(api.create(&PostParams::default(), &request).await);
        assert_eq!(code, 422, "{name}: {message}");
        assert!(message.contains(expected), "{name}: expected {expected:?} in {message:?}");
    }

    // Missing required fields are named.
    let mut request = access_request("no-role", Some("admin"), "edit", "30m", REASON);
    request.data["spec"].as_object_mut().unwrap().remove("role");
    let (code, message) = api_error(api.create(&PostParams::default(), &request).await);
    assert_eq!(code, 422);
    assert!(message.contains("spec.role: Required value"), "{message}");

    // A valid one goes through: 24h is the ceiling, not beyond it.
    let ok = access_request("at-the-ceiling", Some("admin"), "edit", "23h59m", REASON);
    api.create(&PostParams::default(), &ok).await.unwrap();
}

#[tokio::test]
async fn requester_role_duration_and_reason_are_immutable_and_revocation_is_final() {
    let env = TestEnv::new("request-immutable").await;
    let api = env.raw_api::<AccessRequest>(User::Admin).await;
    api.create(&PostParams::default(), &access_request("r", Some("admin"), "edit", "30m", REASON)).await.unwrap();
    let patch = |spec: serde_json::Value| Patch::Merge(serde_json::json!({ "spec": spec }));
    let cases = [
        (serde_json::json!({"requester": "bob"}), "requester is immutable"),
        (serde_json::json!({"requester": null}), "requester is immutable"),
        (serde_json::json!({"duration": "2h"}), "duration is immutable"),
        (serde_json::json!({"role": {"kind": "ClusterRole", "name": "admin"}}), "role is immutable"),
        (serde_json::json!({"reason": "a different reason entirely"}), "reason is immutable"),
    ];
    for (change, expected) in cases {
        let (code, message) = api_error(api.patch("r", &PatchParams::default(), &patch(change.clone())).await);
        assert_eq!(code, 422, "{change}: {message}");
        assert!(message.contains(expected), "{change}: expected {expected:?} in {message:?}");
    }

    api.patch("r", &PatchParams::default(), &patch(serde_json::json!({"revoked": true}))).await.unwrap();
    let (code, message) =
        api_error(api.patch("r", &PatchParams::default(), &patch(serde_json::json!({"revoked": false}))).await);
    assert_eq!(code, 422);
    assert!(message.contains("cannot be reinstated"), "{message}");
}

#[tokio::test]
async fn access_reviews_are_immutable() {
    let env = TestEnv::new("review-immutable").await;
    let api = env.raw_api::<AccessReview>(User::Admin).await;
    let review: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "driftwarden.io/v1alpha1",
        "kind": "AccessReview",
        "metadata": {"name": "carol-approves"},
        "spec": {"accessRequest": "db-hotfix", "decision": "Approve", "reason": "checked the incident ticket", "reviewer": "admin"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &review).await.unwrap();
    let flip = Patch::Merge(serde_json::json!({"spec": {"decision": "Deny"}}));
    let (code, message) = api_error(api.patch("carol-approves", &PatchParams::default(), &flip).await);
    assert_eq!(code, 422);
    assert!(message.contains("an AccessReview is immutable"), "{message}");

    let mut bad = review.clone();
    bad.metadata.name = Some("maybe".into());
    bad.data["spec"]["decision"] = "Maybe".into();
    let (code, message) = api_error(api.create(&PostParams::default(), &bad).await);
    assert_eq!(code, 422);
    assert!(message.contains("supported values: \"Approve\", \"Deny\""), "{message}");
}

#[tokio::test]
async fn access_policies_need_a_non_empty_wildcard_free_allow_list_and_approvers() {
    let env = TestEnv::new("policy-validation").await;
    let api: Api<DynamicObject> = Api::all_with(env.admin.clone(), &ApiResource::erase::<AccessPolicy>(&()));
    let policy = |roles: serde_json::Value, approvers: serde_json::Value, max: &str| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1",
            "kind": "AccessPolicy",
            "metadata": {"name": unique_name("policy")},
            "spec": {"namespaceSelector": {}, "roles": roles, "maxDuration": max, "approvers": approvers},
        }))
        .unwrap()
    };
    let sre = serde_json::json!({"groups": ["sre"]});
    let edit = serde_json::json!([{"kind": "ClusterRole", "name": "edit"}]);
    let cases = [
        (policy(serde_json::json!([]), sre.clone(), "1h"), "should have at least 1 items"),
        (
            policy(serde_json::json!([{"kind": "ClusterRole", "name": "*"}]), sre.clone(), "1h"),
            "wildcards (*) are not allowed",
        ),
        (
            policy(serde_json::json!([{"kind": "Secret", "name": "x"}]), sre.clone(), "1h"),
            "supported values: \"Role\", \"ClusterRole\"",
        ),
        (policy(edit.clone(), serde_json::json!({}), "1h"), "name at least one approver user or group"),
        (policy(edit.clone(), sre.clone(), "48h"), "must be at most 24h"),
    ];
    for (object, expected) in cases {
        let (code, message) = api_error(api.create(&PostParams::default(), &object).await);
        assert_eq!(code, 422, "{message}");
        assert!(message.contains(expected), "expected {expected:?} in {message:?}");
    }

    // A valid policy is accepted, with defaults filled in by the API server.
    let created = api.create(&PostParams::default(), &policy(edit, sre, "4h")).await.unwrap();
    assert_eq!(created.data["spec"]["requiredApprovals"], 1);
    assert_eq!(created.data["spec"]["pendingTimeout"], "1h");
    assert_eq!(created.data["spec"]["windowStart"], "Approval");
    api.delete(&created.metadata.name.unwrap(), &Default::default()).await.unwrap();
}

/// With no operator running at all (this control plane has no webhooks),
/// the API server itself refuses objects that name someone else.
#[tokio::test]
async fn nobody_can_act_in_anothers_name_even_with_no_operator_running() {
    let env = TestEnv::new("identity-policy").await;
    let requests = env.raw_api::<AccessRequest>(User::Admin).await;
    let (code, message) = api_error(
        requests.create(&PostParams::default(), &access_request("forged", Some("alice"), "edit", "30m", REASON)).await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("spec.requester must be the authenticated user admin"), "{message}");

    let reviews = env.raw_api::<AccessReview>(User::Admin).await;
    let review = |spec: serde_json::Value| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": unique_name("review")}, "spec": spec,
        }))
        .unwrap()
    };
    let base =
        serde_json::json!({"accessRequest": "x", "decision": "Approve", "reason": "checked the incident ticket"});
    let mut as_dave = base.clone();
    as_dave["reviewer"] = "dave".into();
    let (_, message) = api_error(reviews.create(&PostParams::default(), &review(as_dave)).await);
    assert!(message.contains("spec.reviewer must be the authenticated user admin"), "{message}");
    let mut in_sre = base.clone();
    in_sre["reviewerGroups"] = serde_json::json!(["sre"]);
    let (_, message) = api_error(reviews.create(&PostParams::default(), &review(in_sre)).await);
    assert!(message.contains("spec.reviewerGroups must be the groups the API server authenticated"), "{message}");

    // Naming oneself is fine.
    requests
        .create(&PostParams::default(), &access_request("honest", Some("admin"), "edit", "30m", REASON))
        .await
        .unwrap();
}
