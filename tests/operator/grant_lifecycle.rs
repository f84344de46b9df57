use std::time::{Duration, Instant};

use driftwarden::api::AccessPhase;
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::common::setup;
use crate::support::{api_error, eventually};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap()
}

#[tokio::test]
async fn an_approved_request_grants_the_role_until_it_expires() {
    let t = setup("grant-expiry", json!({})).await;
    let as_alice: Api<ConfigMap> = Api::namespaced(t.env.client(User::Alice).await, &t.env.namespace);
    assert_eq!(api_error(as_alice.create(&PostParams::default(), &config_map("before")).await).0, 403);
    assert!(!t.can_create_configmaps(User::Alice).await);

    let created = t.request(User::Alice, "hotfix", "edit", "4s").await.unwrap();
    assert_eq!(created.data["spec"]["requester"], "alice", "the webhook stamps the authenticated user");
    t.wait_for_phase("hotfix", AccessPhase::Pending, Duration::from_secs(10)).await;
    t.review(User::Carol, "carol-approves", "hotfix", "Approve").await.unwrap();
    let active = t.wait_for_phase("hotfix", AccessPhase::Active, Duration::from_secs(10)).await;

    // alice really has the role now: the API server's own answer (once its
    // RBAC cache has seen the binding, milliseconds), and a real write.
    let granted =
        eventually(Duration::from_secs(5), || async { t.can_create_configmaps(User::Alice).await.then_some(()) }).await;
    assert!(granted.is_some(), "Active, but the API server does not let alice create ConfigMaps");
    as_alice.create(&PostParams::default(), &config_map("during")).await.unwrap();
    let binding = t.binding("hotfix").await.expect("the RoleBinding exists while Active");
    assert_eq!(binding.role_ref.name, "edit");
    assert_eq!(binding.subjects.as_ref().unwrap()[0].name, "alice");
    let owner = &binding.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("AccessRequest", "hotfix"));
    let status = active.status.unwrap();
    assert_eq!(status.approvals[0].reviewer, "carol");
    assert_eq!(status.approvals[0].reason, "checked the incident ticket");
    assert_eq!(status.policy.as_deref(), Some(t.env.namespace.as_str()));

    // Expiry: the binding goes at expiresAt, by a timer, not a resync.
    let expires_at = status.expires_at.unwrap().0;
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone_at = loop {
        if t.binding("hotfix").await.is_none() {
            break k8s_openapi::jiff::Timestamp::now();
        }
        assert!(Instant::now() < deadline, "the RoleBinding outlived expiresAt by far");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lag = gone_at.duration_since(expires_at).as_secs_f64();
    // The 1 s goal is measured in the benchmark; this bound only catches a
    // timer that is missing or off by a resync period.
    assert!(lag < 2.0, "RoleBinding removed {lag:.3}s after expiresAt");
    assert_eq!(api_error(as_alice.create(&PostParams::default(), &config_map("after")).await).0, 403);
    t.wait_for_phase("hotfix", AccessPhase::Expired, Duration::from_secs(5)).await;

    let events = t.events_until("hotfix", |events| events.iter().any(|e| e.starts_with("Expired"))).await;
    for reason in ["Requested", "Granted", "Expired"] {
        assert!(events.iter().any(|e| e.starts_with(reason)), "no {reason} event in {events:#?}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("Granted") && e.contains("alice") && e.contains("carol") && e.contains("edit")),
        "{events:#?}"
    );
}

#[tokio::test]
async fn two_required_approvals_need_two_distinct_approvers() {
    let t = setup("two-approvals", json!({"requiredApprovals": 2})).await;
    t.request(User::Bob, "scale-up", "edit", "10m").await.unwrap();
    t.review(User::Carol, "carol-1", "scale-up", "Approve").await.unwrap();
    t.review(User::Carol, "carol-2", "scale-up", "Approve").await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let request = t.wait_for_phase("scale-up", AccessPhase::Pending, Duration::from_secs(5)).await;
    let status = request.status.unwrap();
    assert_eq!(status.approvals.len(), 1);
    assert!(
        status.ignored_reviews.iter().any(|i| i.review == "carol-2" && i.reason.contains("distinct approvers")),
        "{status:#?}"
    );
    assert!(t.binding("scale-up").await.is_none());

    t.review(User::Dave, "dave-1", "scale-up", "Approve").await.unwrap();
    let active = t.wait_for_phase("scale-up", AccessPhase::Active, Duration::from_secs(10)).await;
    let approvers: Vec<String> = active.status.unwrap().approvals.into_iter().map(|a| a.reviewer).collect();
    assert_eq!(approvers, ["carol", "dave"]);
    assert!(t.binding("scale-up").await.is_some());
}

#[tokio::test]
async fn a_deny_from_an_approver_is_final() {
    let t = setup("denied", json!({})).await;
    t.request(User::Alice, "risky", "edit", "30m").await.unwrap();
    t.review(User::Dave, "dave-denies", "risky", "Deny").await.unwrap();
    let denied = t.wait_for_phase("risky", AccessPhase::Denied, Duration::from_secs(10)).await;
    assert!(denied.status.unwrap().message.unwrap().starts_with("denied by dave"));
    // A later approval is refused at admission: the request is finished.
    let (_, message) = api_error(t.review(User::Carol, "carol-approves", "risky", "Approve").await);
    assert!(message.contains("already Denied"), "{message}");
    assert!(t.binding("risky").await.is_none());
}

#[tokio::test]
async fn a_pending_request_times_out() {
    let t = setup("pending-timeout", json!({"pendingTimeout": "3s"})).await;
    t.request(User::Alice, "forgotten", "view", "10m").await.unwrap();
    let denied = t.wait_for_phase("forgotten", AccessPhase::Denied, Duration::from_secs(15)).await;
    assert_eq!(denied.status.unwrap().message.as_deref(), Some("no decision within 3s"));
}
