//! ServiceAccount tokens: a review or request made with one is the
//! ServiceAccount's, as the API server authenticated it, whatever the
//! object says; it approves only if the policy names the ServiceAccount
//! (or one of its groups), and a grant to a ServiceAccount binds it.

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessPolicy, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ApiResource;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::common::{AccessTest, REASON, setup};
use crate::support::{access_request, api_error, eventually};

/// A ServiceAccount `name` in the test's namespace, bound to the ClusterRoles
/// `roles` there: its user name and a client that authenticates with a token
/// issued by TokenRequest (as the kubelet mounts one into a Pod).
async fn service_account(t: &AccessTest, name: &str, roles: &[&str]) -> (String, Client) {
    let namespace = &t.env.namespace;
    let accounts: Api<ServiceAccount> = t.env.api(User::Admin).await;
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
    for role in roles {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{name}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
        }))
        .unwrap();
        t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();
    }
    let request: TokenRequest =
        serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token =
        accounts.create_token_request(name, &PostParams::default(), &request).await.unwrap().status.unwrap().token;
    let path = t.operator.cp.write_kubeconfig(&format!("{namespace}-{name}"), &token).unwrap();
    let config =
        kube::Config::from_custom_kubeconfig(Kubeconfig::read_from(path).unwrap(), &KubeConfigOptions::default())
            .await
            .unwrap();
    (format!("system:serviceaccount:{namespace}:{name}"), Client::try_from(config).unwrap())
}

fn review(name: &str, request: &str, extra: Value) -> DynamicObject {
    let mut spec = json!({"accessRequest": request, "decision": "Approve", "reason": "checked the incident ticket"});
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn raw<K: kube::Resource<DynamicType = ()>>(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &ApiResource::erase::<K>(&()))
}

#[tokio::test]
async fn a_review_made_with_a_service_account_token_is_the_service_accounts_and_counts_only_if_the_policy_names_it() {
    let t = setup("sa-review", json!({})).await;
    let namespace = t.env.namespace.clone();
    t.request(User::Alice, "needs-review", "edit", "30m").await.unwrap();
    let (bot, client) = service_account(&t, "review-bot", &["driftwarden-approver"]).await;
    let reviews = raw::<AccessReview>(&client, &namespace);

    // It cannot speak for an approver, by name or by group.
    let as_carol = review("as-carol", "needs-review", json!({"reviewer": "carol"}));
    let (code, message) = api_error(reviews.create(&PostParams::default(), &as_carol).await);
    assert_eq!(code, 400, "{message}");
    assert!(message.contains(&format!("spec.reviewer is set from your identity ({bot})")), "{message}");
    let as_sre = review("as-sre", "needs-review", json!({"reviewerGroups": ["sre"]}));
    let (_, message) = api_error(reviews.create(&PostParams::default(), &as_sre).await);
    assert!(message.contains("spec.reviewerGroups is set from your identity"), "{message}");

    // Its own review is stamped with what the API server authenticated.
    reviews.create(&PostParams::default(), &review("bot-approves", "needs-review", json!({}))).await.unwrap();
    let stored = t.env.api::<AccessReview>(User::Admin).await.get("bot-approves").await.unwrap();
    assert_eq!(stored.spec.reviewer.as_deref(), Some(bot.as_str()));
    for group in ["system:serviceaccounts".to_owned(), format!("system:serviceaccounts:{namespace}")] {
        assert!(stored.spec.reviewer_groups.contains(&group), "{:?}", stored.spec.reviewer_groups);
    }
    assert!(!stored.spec.reviewer_groups.iter().any(|g| g == "sre"), "{:?}", stored.spec.reviewer_groups);

    // The policy names group sre only: the review is ignored, with the reason.
    let api = t.env.api::<AccessRequest>(User::Admin).await;
    let status = eventually(Duration::from_secs(10), || async {
        let status = api.get("needs-review").await.ok()?.status?;
        (!status.ignored_reviews.is_empty()).then_some(status)
    })
    .await
    .expect("the ServiceAccount's review was not reported as ignored");
    let ignored: Vec<(&str, &str)> =
        status.ignored_reviews.iter().map(|i| (i.review.as_str(), i.reason.as_str())).collect();
    assert_eq!(
        ignored,
        [("bot-approves", format!("{bot} is not an approver under AccessPolicy {namespace}").as_str())]
    );
    assert_eq!(status.phase, Some(AccessPhase::Pending));
    assert!(status.approvals.is_empty(), "{:?}", status.approvals);
    assert!(t.binding("needs-review").await.is_none());

    // The platform team names the namespace's ServiceAccounts as approvers:
    // the same review now counts, as the ServiceAccount's.
    let policies = Api::<AccessPolicy>::all(t.env.admin.clone());
    let approvers = json!({"spec": {"approvers": {"groups": ["sre", format!("system:serviceaccounts:{namespace}")]}}});
    policies.patch(&namespace, &PatchParams::default(), &Patch::Merge(approvers)).await.unwrap();
    let active = t.wait_for_phase("needs-review", AccessPhase::Active, Duration::from_secs(10)).await;
    let approvals: Vec<(String, String)> =
        active.status.unwrap().approvals.into_iter().map(|a| (a.reviewer, a.review)).collect();
    assert_eq!(approvals, [(bot.clone(), "bot-approves".to_owned())]);
    let binding = t.binding("needs-review").await.expect("the grant's RoleBinding");
    let subjects: Vec<(String, String)> =
        binding.subjects.unwrap_or_default().into_iter().map(|s| (s.kind, s.name)).collect();
    assert_eq!(subjects, [("User".to_owned(), "alice".to_owned())]);
    let by_bot = format!("approved by {bot}");
    let approved = |events: &[String]| events.iter().any(|e| e.starts_with("Granted") && e.contains(&by_bot));
    let events = t.events_until("needs-review", approved).await;
    assert!(approved(&events), "{events:#?}");
}

#[tokio::test]
async fn a_service_account_requests_in_its_own_name_and_is_granted_as_a_service_account() {
    let t = setup("sa-request", json!({})).await;
    let namespace = t.env.namespace.clone();
    let (deployer, deployer_client) = service_account(&t, "deployer", &["driftwarden-requester"]).await;
    let (approver, approver_client) = service_account(&t, "approver-bot", &["driftwarden-approver"]).await;
    let policies = Api::<AccessPolicy>::all(t.env.admin.clone());
    let approvers = json!({"spec": {"approvers": {"users": [approver.clone()], "groups": ["sre"]}}});
    policies.patch(&namespace, &PatchParams::default(), &Patch::Merge(approvers)).await.unwrap();

    let requests = raw::<AccessRequest>(&deployer_client, &namespace);
    let as_alice = access_request("as-alice", Some("alice"), "edit", "30m", REASON);
    let (_, message) = api_error(requests.create(&PostParams::default(), &as_alice).await);
    assert!(message.contains(&format!("spec.requester is set from your identity ({deployer})")), "{message}");
    requests.create(&PostParams::default(), &access_request("deploy", None, "edit", "30m", REASON)).await.unwrap();
    let stored = t.env.api::<AccessRequest>(User::Admin).await.get("deploy").await.unwrap();
    assert_eq!(stored.spec.requester.as_deref(), Some(deployer.as_str()));

    // Before the grant the ServiceAccount cannot write here; an approver
    // that is itself a ServiceAccount, named by the policy, approves.
    let config_maps: Api<ConfigMap> = Api::namespaced(deployer_client.clone(), &namespace);
    let config_map: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "deployed"}})).unwrap();
    let (code, _) = api_error(config_maps.create(&PostParams::default(), &config_map).await);
    assert_eq!(code, 403);
    let reviews = raw::<AccessReview>(&approver_client, &namespace);
    reviews.create(&PostParams::default(), &review("bot-approves", "deploy", json!({}))).await.unwrap();
    let active = t.wait_for_phase("deploy", AccessPhase::Active, Duration::from_secs(10)).await;
    let approvals: Vec<String> = active.status.unwrap().approvals.into_iter().map(|a| a.reviewer).collect();
    assert_eq!(approvals, std::slice::from_ref(&approver));

    let binding = t.binding("deploy").await.expect("the grant's RoleBinding");
    let subject = binding.subjects.unwrap_or_default().into_iter().next().expect("a subject");
    assert_eq!(
        (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
        ("ServiceAccount", "deployer", Some(namespace.as_str()))
    );
    // The grant works for the ServiceAccount's own token (RBAC may take a moment).
    let created = eventually(Duration::from_secs(10), || async {
        config_maps.create(&PostParams::default(), &config_map).await.ok()
    })
    .await
    .expect("the granted ServiceAccount could not create a ConfigMap");
    assert_eq!(created.name_any(), "deployed");
}
