//! Real public manifests, applied the two ways people apply them, are in
//! sync with the same manifests declared in Git: zero drift, and it stays so.

use std::time::Duration;

use serde_json::Value;

use crate::common::drift_setup;

/// Kinds that are cluster-scoped (or need cluster-wide setup): a DesiredState
/// outside the operator's namespace may not declare them.
const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PriorityClass",
    "IngressClass",
    "ValidatingWebhookConfiguration",
];

/// Every namespaced document of the corpus that does not pin a namespace.
fn corpus() -> String {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).unwrap();
            let Some(kind) = value["kind"].as_str() else { continue };
            if CLUSTER_SCOPED.contains(&kind) || value["metadata"]["namespace"].is_string() {
                continue;
            }
            documents.push(serde_yaml_ng::to_string(&value).unwrap());
        }
    }
    documents.join("---\n")
}

#[tokio::test]
async fn corpus_applied_client_side_and_server_side_shows_no_drift() {
    let manifests = corpus();
    let count = manifests.matches("\nkind: ").count() + usize::from(manifests.starts_with("kind: "));
    assert!(count > 20, "the corpus should give many objects, got {count}");

    let client_side = drift_setup("corpus-csa").await;
    client_side.kubectl(&["apply", "-f", "-"], Some(&manifests));
    client_side.desired_state("corpus", &[("corpus.yaml", manifests.clone())], serde_json::json!([])).await;

    let server_side = crate::common::another_drift("corpus-ssa").await;
    server_side.kubectl(&["apply", "--server-side", "-f", "-"], Some(&manifests));
    server_side.desired_state("corpus", &[("corpus.yaml", manifests.clone())], serde_json::json!([])).await;

    for t in [&client_side, &server_side] {
        let status = t.wait_for_status("corpus", Duration::from_secs(60), |s| s.managed.is_some_and(|m| m > 0)).await;
        assert_eq!(status.drifted, Some(0), "{}: {:#?}", t.env.namespace, status.drifted_objects);
        assert!(status.managed.unwrap() >= 20);
    }
    // ... and it stays in sync (no controller of the cluster writes fields
    // that read as drift) for 30 s, with zero writes: the DesiredState's
    // resourceVersion does not move.
    let before = (resource_version(&client_side).await, resource_version(&server_side).await);
    tokio::time::sleep(Duration::from_secs(30)).await;
    for t in [&client_side, &server_side] {
        let status = t.wait_for_status("corpus", Duration::from_secs(5), |_| true).await;
        assert_eq!(status.drifted, Some(0), "{}: {:#?}", t.env.namespace, status.drifted_objects);
    }
    let after = (resource_version(&client_side).await, resource_version(&server_side).await);
    assert_eq!(before, after, "the operator wrote to an unchanged DesiredState");
}

async fn resource_version(t: &crate::common::AccessTest) -> Option<String> {
    let api = t.env.api::<driftwarden::api::DesiredState>(driftwarden_dev::controlplane::User::Admin).await;
    api.get("corpus").await.unwrap().metadata.resource_version
}
