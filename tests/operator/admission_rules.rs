//! Policy rules are enforced when the object is created, with a message
//! that names the rule, before any controller runs.

use driftwarden::api::AccessRequest;
use driftwarden_dev::controlplane::User;
use kube::api::PostParams;
use serde_json::json;

use crate::common::setup;
use crate::support::{access_request, api_error};

#[tokio::test]
async fn requests_that_break_the_policy_are_rejected_at_admission() {
    let t = setup("admission-rules", json!({"maxDuration": "2h"})).await;
    let as_alice = t.env.raw_api::<AccessRequest>(User::Alice).await;
    let policy = t.env.namespace.clone();
    // (case, role, duration, reason, expected message)
    let cases = [
        (
            "role not allowed",
            "admin",
            "30m",
            "INC-1: need to fix the quota objects",
            "ClusterRole admin is not in the allow-list".to_string(),
        ),
        (
            "cluster-admin",
            "cluster-admin",
            "30m",
            "INC-1: need to fix the quota objects",
            "ClusterRole cluster-admin is not in the allow-list".to_string(),
        ),
        (
            "over the maximum",
            "edit",
            "3h",
            "INC-1: need to fix the quota objects",
            format!("duration 3h exceeds the maximum of 2h that AccessPolicy {policy} allows"),
        ),
        ("trivial reason", "edit", "30m", "..........zz", "reason is too short or trivial".to_string()),
        ("wildcard", "*", "30m", "INC-1: need to fix the quota objects", "wildcards (*) are not allowed".to_string()),
    ];
    for (case, role, duration, reason, expected) in cases {
        let request = access_request(&case.replace(' ', "-"), None, role, duration, reason);
        let (code, message) = api_error(as_alice.create(&PostParams::default(), &request).await);
        assert!(code == 400 || code == 422, "{case}: {code} {message}");
        assert!(message.contains(&expected), "{case}: expected {expected:?} in {message:?}");
    }
}

#[tokio::test]
async fn a_review_of_an_unknown_request_is_rejected() {
    let t = setup("unknown-request", json!({})).await;
    let (_, message) = api_error(t.review(User::Carol, "ghost-review", "no-such-request", "Approve").await);
    assert!(message.contains("AccessRequest no-such-request does not exist"), "{message}");
}

#[tokio::test]
async fn a_namespace_that_no_policy_covers_gets_no_access() {
    let t = setup(
        "uncovered",
        json!({"namespaceSelector": {"matchLabels": {"driftwarden.io/test-namespace": "elsewhere"}}}),
    )
    .await;
    let (_, message) = api_error(t.request(User::Alice, "nope", "edit", "30m").await);
    assert!(message.contains(&format!("no AccessPolicy covers namespace {}", t.env.namespace)), "{message}");
}
