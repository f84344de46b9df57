//! Least privilege in the RBAC the chart renders, for default and custom
//! values and for those the operator tests run under.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

use super::{custom_values, default_values, operator_test_values, read_yaml, render, strings};

/// Verbs that change objects.
const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete", "deletecollection"];

/// What the operator writes besides the managed kinds: its status, grants,
/// Events and webhook configurations cluster-wide ...
const CLUSTER_WRITES: &[(&str, &str)] = &[
    ("driftwarden.io", "accessrequests/status"),
    ("driftwarden.io", "accessreviews/status"),
    ("driftwarden.io", "desiredstates/status"),
    ("driftwarden.io", "publisherkeys/status"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("events.k8s.io", "events"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];
/// Admission configuration the operator may patch, by these names only: the
/// chart creates it. A `create` (which cannot be limited by name) would let
/// a compromised operator route any request to itself, or refuse them all.
const OWN_ADMISSION: &[&str] = &["driftwarden", "driftwarden-writes"];
/// ... and its Lease and Secrets in its own namespace.
/// In its own namespace: the leader Lease, its Secrets, and the copies of
/// the last verified sources (ConfigMaps).
/// In the release namespace: the Lease, its own Secrets, the last verified
/// sources, and the leader's label on its own Pod (`patch` only).
const NAMESPACE_WRITES: &[(&str, &str)] = &[
    ("coordination.k8s.io", "leases"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "pods"),
    ("driftwarden.io", "notifiers/status"),
];
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
    // The operator tests' values too: the tests pass under least privilege.
    for values_file in [default_values(), custom_values(), operator_test_values()] {
        let values = read_yaml(&values_file);
        let mut managed = values_kinds(&values["managedResources"]);
        // Undeclared objects are deleted (never created or changed) in the
        // kinds of undeclaredResources, the chart's default where a values
        // file does not set them.
        let undeclared = match &values["undeclaredResources"] {
            serde_json::Value::Null => read_yaml(&default_values())["undeclaredResources"].clone(),
            listed => listed.clone(),
        };
        managed.extend(values_kinds(&undeclared));
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
            // Reading admission configuration is fine (observedResources may
            // list it); writing it only as below.
            let admission =
                group_resources(&rule).into_iter().any(|(group, _)| group == "admissionregistration.k8s.io");
            if admission && rule.verbs.iter().any(|v| WRITE_VERBS.contains(&v.as_str())) {
                assert!(
                    rule.verbs.iter().all(|v| v == "get" || v == "patch"),
                    "{context}: {kind} may do more than get and patch admission configuration: {rule:?}"
                );
                assert_eq!(
                    names, OWN_ADMISSION,
                    "{context}: {kind} reaches admission configuration not its own: {rule:?}"
                );
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
                // Its own Secrets, or read-only the Notifiers' that the values name.
                let listed = &values["notifications"]["secretNames"];
                let notifiers = if listed.is_array() { strings(listed) } else { Vec::new() };
                let reaches_notifiers = rule.verbs == ["get"] && !names.is_empty() && names == notifiers;
                assert!(
                    names == OWN_SECRETS || reaches_notifiers,
                    "{context}: the Role reaches Secrets besides the operator's own and the Notifiers': {rule:?}"
                );
            }
        }
        assert_eq!(bindable, grantable, "{context}: bind must cover exactly access.grantableRoles");
    }
}
