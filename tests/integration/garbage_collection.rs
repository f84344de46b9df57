use std::time::Duration;

use driftwarden::api::AccessRequest;
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{DeleteParams, PostParams};

use crate::support::{TestEnv, access_request, eventually};

/// The operator will own each grant's RoleBinding by its AccessRequest, so a
/// deleted request takes its binding with it even if the operator is down.
#[tokio::test]
async fn a_role_binding_is_garbage_collected_after_its_access_request_is_deleted() {
    let env = TestEnv::new("owner-gc").await;
    let requests = env.raw_api::<AccessRequest>(User::Admin).await;
    let owner = requests
        .create(
            &PostParams::default(),
            &access_request("grant", Some("admin"), "edit", "30m", "incident INC-7: scale the workers"),
        )
        .await
        .unwrap();

    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "grant",
            "ownerReferences": [{
                "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
                "name": "grant", "uid": owner.metadata.uid.unwrap(),
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    let bindings = env.api::<RoleBinding>(User::Admin).await;
    bindings.create(&PostParams::default(), &binding).await.unwrap();

    requests.delete("grant", &DeleteParams::background()).await.unwrap();
    let gone = eventually(Duration::from_secs(60), || async {
        bindings.get_opt("grant").await.unwrap().is_none().then_some(())
    })
    .await;
    assert!(gone.is_some(), "the RoleBinding outlived its AccessRequest by 60s");
}
