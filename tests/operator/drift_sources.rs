//! Bad sources are reported with the key, document and reason, and an empty
//! source manages nothing.

use std::time::Duration;

use serde_json::json;

use crate::common::{condition, drift_setup};

#[tokio::test]
async fn a_malformed_source_is_reported_and_the_last_good_state_is_kept() {
    let t = drift_setup("drift-bad-source").await;
    let good = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n".to_string();
    t.kubectl(&["apply", "-f", "-"], Some(&good));
    t.desired_state("broken", &[("good.yaml", good.clone())], json!([])).await;
    t.wait_for_status("broken", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;

    // The publisher signs a broken source: bad YAML in one key, another
    // namespace in another.
    t.update_source("broken-source", |source| {
        let data = source.data.get_or_insert_default();
        data.insert("bad.yaml".into(), "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x\n".into());
        data.insert(
            "elsewhere.yaml".into(),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: elsewhere, namespace: kube-system}\n".into(),
        );
    })
    .await;
    let status = t
        .wait_for_status("broken", Duration::from_secs(30), |s| {
            condition(s, "SourceValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let message = &condition(&status, "SourceValid").unwrap().message;
    assert!(message.contains("key bad.yaml document 0"), "{message}");
    assert!(message.contains("key elsewhere.yaml document 0"), "{message}");
    assert!(message.contains("kube-system"), "{message}");
    // The last verified state is still what is enforced.
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "EnforcingLastVerified"), "{ready:?}");
    assert_eq!(status.managed, Some(1));

    // Fixed again: valid.
    t.update_source("broken-source", |source| {
        let data = source.data.get_or_insert_default();
        data.remove("bad.yaml");
        data.remove("elsewhere.yaml");
    })
    .await;
    t.wait_for_status("broken", Duration::from_secs(30), |s| {
        condition(s, "SourceValid").is_some_and(|c| c.status == "True")
    })
    .await;
}

#[tokio::test]
async fn an_empty_source_manages_nothing_and_a_missing_one_is_an_error() {
    let t = drift_setup("drift-empty").await;
    t.desired_state("empty", &[], json!([])).await;
    let status = t.wait_for_status("empty", Duration::from_secs(30), |s| s.managed.is_some()).await;
    assert_eq!((status.managed, status.drifted), (Some(0), Some(0)));
    assert_eq!(condition(&status, "Ready").unwrap().status, "True");

    t.kubectl(&["delete", "configmap/empty-source"], None);
    let status = t
        .wait_for_status("empty", Duration::from_secs(30), |s| {
            condition(s, "SourceValid").is_some_and(|c| c.status == "False")
        })
        .await;
    let message = &condition(&status, "SourceValid").unwrap().message;
    assert!(message.contains("configmap empty-source: not found"), "{message}");
}

#[tokio::test]
async fn a_source_that_stops_matching_its_selector_is_seen_at_once() {
    let t = drift_setup("drift-selected").await;
    let settings = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: fast}\n".to_string();
    t.kubectl(&["apply", "-f", "-"], Some(&settings));
    let by_label = json!([{"selector": {"matchLabels": {"driftwarden.io/source": "selected-source"}}}]);
    let report = json!({"unauthorized": "Report", "windowEnd": "Report"});
    t.desired_state_spec(
        "selected",
        &[("settings.yaml", settings)],
        json!({"sources": by_label, "remediation": report}),
    )
    .await;
    t.wait_for_status("selected", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;
    // Passes that follow one object's change: the sources are not looked
    // for again (with a selector that walks every ConfigMap)...
    t.kubectl(&["patch", "configmap/settings", "--type=merge", "-p", r#"{"data":{"mode":"slow"}}"#], None);
    t.wait_for_status("selected", Duration::from_secs(30), |s| s.drifted == Some(1)).await;

    // ...but the label taken off the source, which the selector then no
    // longer matches, is a change of the sources, and its pass starts at
    // once: nothing else happens in the namespace to start one.
    t.kubectl(&["label", "configmap/selected-source", "driftwarden.io/source-"], None);
    t.wait_for_status("selected", Duration::from_secs(15), |s| {
        s.managed != Some(1) || condition(s, "SourceValid").is_some_and(|c| c.status == "False")
    })
    .await;
}
