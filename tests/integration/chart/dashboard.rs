//! The Grafana dashboard: its variables, and that every query names a metric
//! the operator exports.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::chart;

/// Gauges and counters as Prometheus names them (OpenMetrics counters end in `_total`).
const GAUGES_AND_COUNTERS: &[&str] = &[
    "driftwarden_access_requests",
    "driftwarden_active_grants",
    "driftwarden_access_reviews_total",
    "driftwarden_drifted_objects",
    "driftwarden_drift_detections_total",
    "driftwarden_reconcile_errors_total",
    "driftwarden_leader",
    "driftwarden_build_info",
    "driftwarden_reverts_total",
    "driftwarden_revert_failures_total",
    "driftwarden_unauthorized_drift_age_seconds",
    "driftwarden_audit_events_total",
    "driftwarden_webhook_requests_total",
    "driftwarden_sources_refused",
    "driftwarden_source_refusals_total",
];
/// Histograms, each queried as `_bucket`, `_sum` or `_count`.
const HISTOGRAMS: &[&str] = &[
    "driftwarden_grant_expiry_lag_seconds",
    "driftwarden_drift_detection_latency_seconds",
    "driftwarden_reconcile_duration_seconds",
    "driftwarden_revert_latency_after_window_end_seconds",
    "driftwarden_webhook_duration_seconds",
];
/// What the dashboard must show (DESIGN section 5): drifted objects by
/// class, unauthorized drift age, detections and reverts, revert latency,
/// active grants, requests by phase, expiry lag, approvals/denials,
/// reconcile errors, leader.
const REQUIRED: &[&str] = &[
    "driftwarden_drifted_objects",
    "driftwarden_unauthorized_drift_age_seconds",
    "driftwarden_drift_detections_total",
    "driftwarden_reverts_total",
    "driftwarden_revert_latency_after_window_end_seconds_bucket",
    "driftwarden_active_grants",
    "driftwarden_access_requests",
    "driftwarden_grant_expiry_lag_seconds_bucket",
    "driftwarden_access_reviews_total",
    "driftwarden_reconcile_errors_total",
    "driftwarden_leader",
    "driftwarden_sources_refused",
];
const DATASOURCE: &str = "${datasource}";

pub(super) fn dashboard_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(chart().join("dashboards/driftwarden.json")).unwrap()).unwrap()
}

/// `(metric, label matchers)` of every `metric{...}` selector in a PromQL expression.
fn selectors(expr: &str) -> Vec<(&str, &str)> {
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let before = &rest[..open];
        let start = before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).map_or(0, |i| i + 1);
        let close = open + rest[open..].find('}').expect("a closing brace");
        found.push((&before[start..], &rest[open + 1..close]));
        rest = &rest[close + 1..];
    }
    found
}

#[test]
fn dashboard_queries_use_the_datasource_variable_the_namespace_and_known_metrics() {
    let dashboard = dashboard_json();
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39, "schemaVersion {}", dashboard["schemaVersion"]);
    let variables = dashboard["templating"]["list"].as_array().unwrap();
    let variable = |name: &str| variables.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name}"));
    assert_eq!(
        (&variable("datasource")["type"], &variable("datasource")["query"]),
        (&json!("datasource"), &json!("prometheus"))
    );
    assert_eq!(variable("namespace")["datasource"]["uid"], DATASOURCE);

    let known: BTreeSet<String> = GAUGES_AND_COUNTERS
        .iter()
        .map(|m| m.to_string())
        .chain(HISTOGRAMS.iter().flat_map(|h| ["_bucket", "_sum", "_count"].map(|suffix| format!("{h}{suffix}"))))
        .collect();
    // Rows hold their panels while collapsed.
    let top = dashboard["panels"].as_array().unwrap();
    let panels: Vec<&Value> =
        top.iter().flat_map(|p| std::iter::once(p).chain(p["panels"].as_array().into_iter().flatten())).collect();
    let mut ids = BTreeSet::new();
    let mut used = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id of {title} is not unique");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"], json!({"type": "prometheus", "uid": DATASOURCE}), "{title}");
        let targets =
            panel["targets"].as_array().filter(|t| !t.is_empty()).unwrap_or_else(|| panic!("{title}: no query"));
        for target in targets {
            assert_eq!(target["datasource"]["uid"], DATASOURCE, "{title}");
            let expr = target["expr"].as_str().unwrap();
            let metrics = selectors(expr);
            // Every metric is written as a selector, so none escapes the checks below.
            assert_eq!(metrics.len(), expr.matches("driftwarden_").count(), "{title}: {expr}");
            assert!(!metrics.is_empty(), "{title}: {expr} queries no driftwarden metric");
            for (metric, matchers) in metrics {
                assert!(known.contains(metric), "{title}: {metric} is not a metric the operator exports");
                assert!(matchers.contains(r#"namespace=~"$namespace""#), "{title}: {metric} ignores $namespace");
                used.insert(metric);
            }
        }
    }
    let missing: Vec<_> = REQUIRED.iter().filter(|m| !used.contains(**m)).collect();
    assert!(missing.is_empty(), "no panel shows {missing:?}");
}
