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
