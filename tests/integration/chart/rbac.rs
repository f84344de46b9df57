//! Least privilege in the RBAC the chart renders, for default and custom values.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::{custom_values, default_values, read_yaml, render, render_with, repo_path, strings, yaml_documents};

/// Verbs that change objects.
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// What the operator writes besides the managed kinds: its status, grants,
/// Events and webhook configurations cluster-wide ...
const CLUSTER_WRITES: &[(&str, &str)] = &[
    ("driftwarden.io", "accessrequests/status"),
    ("driftwarden.io", "accessreviews/status"),
    ("driftwarden.io", "desiredstates/status"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("events.k8s.io", "events"),
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
];
/// ... and its Lease and Secrets in its own namespace.
const NAMESPACE_WRITES: &[(&str, &str)] = &[("coordination.k8s.io", "leases"), ("", "secrets")];
const OWN_SECRETS: &[&str] = &["driftwarden-webhook-tls", "driftwarden-audit"];

/// Every rule of the rendered ClusterRoles and Roles, with the kind that holds it.
fn rules(objects: &[Value]) -> Vec<(&str, PolicyRule)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "ClusterRole" || o["kind"] == "Role")
        .flat_map(|o| {
            let kind = o["kind"].as_str().unwrap();
            let rules: Vec<PolicyRule> = serde_json::from_value(o["rules"].clone()).unwrap();
            rules.into_iter().map(move |rule| (kind, rule))
        })
        .collect()
}

fn group_resources(rule: &PolicyRule) -> Vec<(String, String)> {
    let (groups, resources) = (rule.api_groups.clone().unwrap_or_default(), rule.resources.clone().unwrap_or_default());
    groups.iter().flat_map(|g| resources.iter().map(move |r| (g.clone(), r.clone()))).collect()
}

/// `(group, resource)` pairs of a values list shaped like managedResources.
fn values_kinds(list: &Value) -> BTreeSet<(String, String)> {
    let entries = list.as_array().unwrap();
    entries
        .iter()
        .flat_map(|e| {
            strings(&e["resources"]).into_iter().map(move |r| (e["apiGroup"].as_str().unwrap().into(), r.into()))
        })
        .collect()
}

#[test]
fn rendered_rbac_has_no_wildcard_escalate_or_impersonate_and_binds_only_grantable_roles() {
    for values_file in [default_values(), custom_values()] {
        let values = read_yaml(&values_file);
        let managed = values_kinds(&values["managedResources"]);
        let grantable: BTreeSet<(String, String)> = values["access"]["grantableRoles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (format!("{}s", r["kind"].as_str().unwrap().to_lowercase()), r["name"].as_str().unwrap().into()))
            .collect();
        let context = values_file.display();

        let mut bindable = BTreeSet::new();
        for (kind, rule) in rules(&render(&values_file)) {
            let names = rule.resource_names.clone().unwrap_or_default();
            let wildcard = [&rule.api_groups, &rule.resources, &rule.resource_names, &rule.non_resource_urls]
                .into_iter()
                .flat_map(|list| list.iter().flatten())
                .chain(&rule.verbs)
                .any(|s| s.contains('*'));
            assert!(!wildcard, "{context}: wildcard in {kind} rule {rule:?}");
            for forbidden in ["escalate", "impersonate"] {
                assert!(!rule.verbs.iter().any(|v| v == forbidden), "{context}: {forbidden} in {kind} rule {rule:?}");
            }
            if rule.verbs.iter().any(|v| v == "bind") {
                assert!(!names.is_empty(), "{context}: bind without resourceNames in {kind} rule {rule:?}");
                assert_eq!(rule.verbs, ["bind"], "{context}: bind shares a rule with other verbs");
                for (_, resource) in group_resources(&rule) {
                    bindable.extend(names.iter().map(|n| (resource.clone(), n.clone())));
                }
            }
            if rule.verbs.iter().any(|v| WRITE_VERBS.contains(&v.as_str())) && names.is_empty() {
                for (group, resource) in group_resources(&rule) {
                    let allowed = match kind {
                        "ClusterRole" => {
                            managed.contains(&(group.clone(), resource.clone()))
                                || CLUSTER_WRITES.contains(&(group.as_str(), resource.as_str()))
                        }
                        _ => NAMESPACE_WRITES.contains(&(group.as_str(), resource.as_str())),
                    };
                    assert!(allowed, "{context}: {kind} may write {group}/{resource}, which is not managed: {rule:?}");
                }
            }
            if kind == "Role" && rule.resources.iter().flatten().any(|r| r == "secrets") && rule.verbs != ["create"] {
                assert_eq!(names, OWN_SECRETS, "{context}: the Role reaches Secrets besides the operator's own");
            }
        }
        assert_eq!(bindable, grantable, "{context}: bind must cover exactly access.grantableRoles");
    }
}

/// Whether any of `rules` allows `verb` on `group`/`resource` (named `name`,
/// or any object when `name` is None).
fn allows(rules: &[PolicyRule], group: &str, resource: &str, verb: &str, name: Option<&str>) -> bool {
    rules.iter().any(|rule| {
        let has = |list: &Option<Vec<String>>, item: &str| list.iter().flatten().any(|s| s == item);
        let names = rule.resource_names.clone().unwrap_or_default();
        has(&rule.api_groups, group)
            && has(&rule.resources, resource)
            && rule.verbs.iter().any(|v| v == verb)
            && (names.is_empty() || name.is_some_and(|n| names.iter().any(|m| m == n)))
    })
}

// tests/data/operator-rbac.yaml is what the operator tests run under; the
// chart (with the fixture's kinds in its values) must allow at least that.
#[test]
fn the_chart_grants_everything_the_operator_test_fixture_grants() {
    // The fixture names the default Lease.
    let rendered = render_with(&custom_values(), &["leaderElection.leaseName=driftwarden"]);
    let chart = rules(&rendered);
    let fixture_objects = yaml_documents(&std::fs::read_to_string(repo_path("tests/data/operator-rbac.yaml")).unwrap());
    for (kind, rule) in rules(&fixture_objects) {
        let granted: Vec<PolicyRule> = chart.iter().filter(|(k, _)| *k == kind).map(|(_, r)| r.clone()).collect();
        let names: Vec<Option<&str>> = match &rule.resource_names {
            Some(names) if !names.is_empty() => names.iter().map(|n| Some(n.as_str())).collect(),
            _ => vec![None],
        };
        let groups = rule.api_groups.clone().unwrap_or_default();
        for resource in rule.resources.iter().flatten() {
            for verb in &rule.verbs {
                for name in &names {
                    // The fixture lists many groups and kinds in one rule; each kind lives in one of them.
                    let covered = groups.iter().any(|group| allows(&granted, group, resource, verb, *name));
                    assert!(covered, "the chart's {kind} does not allow {verb} {resource} {name:?} ({groups:?})");
                }
            }
        }
    }
}
