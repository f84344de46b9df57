use driftwarden::api::AccessRequest;
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};

use crate::support::{TestEnv, access_request, api_error};

#[tokio::test]
async fn alice_may_create_an_access_request_where_rbac_lets_her_and_mallory_is_forbidden() {
    let env = TestEnv::new("request-rbac").await;
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "access-requester"},
        "rules": [{"apiGroups": ["driftwarden.io"], "resources": ["accessrequests"], "verbs": ["create", "get", "list", "watch"]}],
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "developers-may-request"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "access-requester"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "dev"}],
    }))
    .unwrap();
    env.api::<Role>(User::Admin).await.create(&PostParams::default(), &role).await.unwrap();
    env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();

    let reason = "investigate the failing checkout pods";
    let as_alice = env.raw_api::<AccessRequest>(User::Alice).await;
    let created =
        as_alice.create(&PostParams::default(), &access_request("alice-view", None, "view", "1h", reason)).await;
    assert!(created.is_ok(), "alice (group dev) was refused: {created:?}");

    let as_mallory = env.raw_api::<AccessRequest>(User::Mallory).await;
    let (code, message) = api_error(
        as_mallory.create(&PostParams::default(), &access_request("mallory-view", None, "view", "1h", reason)).await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("mallory"), "{message}");

    // The binding is namespaced: alice has nothing elsewhere.
    let elsewhere: Api<AccessRequest> = Api::namespaced(env.client(User::Alice).await, "default");
    let (code, _) = api_error(elsewhere.list(&Default::default()).await);
    assert_eq!(code, 403);
}
