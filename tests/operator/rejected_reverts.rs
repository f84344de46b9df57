//! Declarations the API server refuses are source errors, not drift that a
//! revert loop retries forever: a value the API's types cannot hold is
//! refused at parse time; one only the server's validation refuses (a 422
//! on the revert) is reported once, with the object and the server's
//! reason, and not tried again until the sources change.

use std::time::Duration;

use k8s_openapi::api::events::v1::Event;
use kube::Api;
use serde_json::json;

use crate::common::{condition, drift_setup};

const SERVICE: &str =
    "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  ports:\n  - {port: 80, protocol: TCP}\n";

/// How many times the operator said so, per reason (Event series count).
async fn event_counts(t: &crate::common::AccessTest, name: &str) -> Vec<(String, i32)> {
    let api: Api<Event> = Api::namespaced(t.env.admin.clone(), &t.env.namespace);
    let events = api.list(&Default::default()).await.unwrap().items;
    events
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.series.map_or(1, |s| s.count)))
        .collect()
}

#[tokio::test]
async fn a_value_of_the_wrong_type_for_the_api_is_a_source_error_with_its_path() {
    let t = drift_setup("schema-type").await;
    t.kubectl(&["apply", "-f", "-"], Some(SERVICE));
    let declared = SERVICE.replace("port: 80,", "port: '80',");
    let revert = json!({"remediation": {"unauthorized": "Revert"}});
    t.desired_state_spec("typed", &[("web.yaml", declared)], revert).await;
    let status = t
        .wait_for_status("typed", Duration::from_secs(30), |s| {
            condition(s, "SourceValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let message = &condition(&status, "SourceValid").unwrap().message;
    assert!(message.contains("key web.yaml document 0: spec.ports[0].port must be an integer"), "{message}");
    assert!(message.contains("found a string"), "{message}");
}

#[tokio::test]
async fn a_revert_the_api_server_refuses_is_reported_once_as_a_source_problem() {
    let t = drift_setup("rejected-revert").await;
    t.kubectl(&["apply", "-f", "-"], Some(SERVICE));
    // The types allow any protocol string; the server's validation only TCP, UDP, SCTP.
    let declared = SERVICE.replace("protocol: TCP", "protocol: tcp");
    let revert = json!({"remediation": {"unauthorized": "Revert"}});
    t.desired_state_spec("rejected", &[("web.yaml", declared)], revert).await;
    let status = t
        .wait_for_status("rejected", Duration::from_secs(60), |s| {
            condition(s, "SourceValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let source_valid = condition(&status, "SourceValid").unwrap();
    assert_eq!(source_valid.reason, "DeclarationRejected");
    assert!(source_valid.message.contains("core/Service"), "{}", source_valid.message);
    assert!(source_valid.message.contains("web.yaml"), "{}", source_valid.message);
    assert!(source_valid.message.contains("Unsupported value: \"tcp\""), "{}", source_valid.message);
    // The drift is still reported: the live object does differ from Git.
    assert_eq!(status.drifted, Some(1));

    // No retry loop: several reconciles later, one rejection and no more.
    tokio::time::sleep(Duration::from_secs(10)).await;
    t.kubectl(&["annotate", "service/web", "poke=1"], None);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let counts = event_counts(&t, "rejected").await;
    let rejected: i32 = counts.iter().filter(|(r, _)| r == "DeclarationRejected").map(|(_, n)| n).sum();
    let failed: i32 = counts.iter().filter(|(r, _)| r == "RevertFailed").map(|(_, n)| n).sum();
    assert_eq!((rejected, failed), (1, 0), "{counts:?}");

    // Fixed in Git (and signed again by the publisher): valid again, and the
    // revert goes through.
    let fixed = SERVICE.replace("port: 80,", "port: 80, name: http,");
    t.update_source("rejected-source", |source| {
        source.data.get_or_insert_default().insert("web.yaml".into(), fixed);
    })
    .await;
    t.wait_for_status("rejected", Duration::from_secs(60), |s| {
        condition(s, "SourceValid").is_some_and(|c| c.status == "True") && s.drifted == Some(0)
    })
    .await;
}

#[tokio::test]
async fn a_changed_key_of_a_keyed_list_is_reverted_not_reported_as_a_source_error() {
    // Server-side apply merges `ports` by `port`: applying Git's port 80 onto
    // a live port 81 keeps both, which the API server refuses (two ports
    // need names). The change must still be reverted.
    let t = drift_setup("changed-list-key").await;
    t.kubectl(&["apply", "-f", "-"], Some(SERVICE));
    let revert = json!({"remediation": {"unauthorized": "Revert"}});
    t.desired_state_spec("keyed", &[("web.yaml", SERVICE.to_owned())], revert).await;
    t.wait_for_status("keyed", Duration::from_secs(60), |s| s.drifted == Some(0) && s.managed == Some(1)).await;
    t.kubectl(
        &["patch", "service/web", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/ports/0/port","value":81}]"#],
        None,
    );
    let services: Api<k8s_openapi::api::core::v1::Service> = Api::namespaced(t.env.admin.clone(), &t.env.namespace);
    let ports = || async {
        let service = services.get("web").await.unwrap();
        service.spec.and_then(|s| s.ports).unwrap_or_default().iter().map(|p| p.port).collect::<Vec<_>>()
    };
    let reverted =
        crate::support::eventually(Duration::from_secs(30), || async { (ports().await == [80]).then_some(()) }).await;
    let status = t.wait_for_status("keyed", Duration::from_secs(5), |_| true).await;
    assert!(reverted.is_some(), "the port was left at {:?}: {status:#?}", ports().await);
    let source_valid = condition(&status, "SourceValid").unwrap();
    assert_eq!(source_valid.status, "True", "{source_valid:?}");
}

#[tokio::test]
async fn a_renamed_container_is_reverted_to_the_declared_one_alone() {
    // Containers merge by `name`: applying Git's `web` onto a live `evil`
    // keeps both; the foreign one must go, the declared one stay.
    const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers:\n      - {name: web, image: 'nginx:1.27'}\n";
    let t = drift_setup("renamed-container").await;
    t.kubectl(&["apply", "-f", "-"], Some(DEPLOYMENT));
    let revert = json!({"remediation": {"unauthorized": "Revert"}});
    t.desired_state_spec("renamed", &[("web.yaml", DEPLOYMENT.to_owned())], revert).await;
    t.wait_for_status("renamed", Duration::from_secs(60), |s| s.drifted == Some(0) && s.managed == Some(1)).await;
    let patch = r#"[{"op":"replace","path":"/spec/template/spec/containers/0/name","value":"evil"},{"op":"replace","path":"/spec/template/spec/containers/0/image","value":"evil:1"}]"#;
    t.kubectl(&["patch", "deployment/web", "--type=json", "-p", patch], None);
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(t.env.admin.clone(), &t.env.namespace);
    let containers = || async {
        let deployment = deployments.get("web").await.unwrap();
        let spec = deployment.spec.unwrap().template.spec.unwrap();
        spec.containers
            .iter()
            .map(|c| format!("{}={}", c.name, c.image.clone().unwrap_or_default()))
            .collect::<Vec<_>>()
    };
    let reverted = crate::support::eventually(Duration::from_secs(30), || async {
        (containers().await == ["web=nginx:1.27"]).then_some(())
    })
    .await;
    let status = t.wait_for_status("renamed", Duration::from_secs(5), |_| true).await;
    assert!(reverted.is_some(), "left: {:?}: {status:#?}", containers().await);
}
