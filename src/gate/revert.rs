//! How to put a drifted object back, the pure part.
//!
//! A revert is two writes at most:
//! 1. server-side apply of the declared object under the operator's field
//!    manager, with force: it sets every declared field (and re-creates a
//!    deleted object). Fields an ignore rule covers are left out of it, so
//!    an HPA keeps `spec.replicas`;
//! 2. if the applied object still holds fields Git does not declare (a
//!    sidecar, `privileged: true`, a label), a JSON patch that removes them,
//!    each guarded by a `test` of the value it removes.
//!
//! When the apply itself is refused as invalid although Git's object is
//! valid, the live object is what makes the merge invalid: a changed key of
//! a keyed list (a Service's `port`) makes the apply keep the foreign item
//! beside the declared one. Then a JSON patch first puts the declared values
//! back where live changed them (and removes what was added), and the apply
//! is tried again.

use serde_json::{Map, Value, json};

use crate::api::IgnoreRule;
use crate::drift::{ChangeKind, ObjectDiff};

/// Metadata the API server owns; never sent in an apply.
const SERVER_METADATA: &[&str] =
    &["uid", "resourceVersion", "generation", "managedFields", "creationTimestamp", "deletionTimestamp", "selfLink"];

/// The object to apply: what is declared, minus what ignore rules keep out
/// of the comparison (a pointer rule always; a field-manager rule where one
/// of its managers owns the field in `live`).
pub fn applied_object(declared: &Value, live: Option<&Value>, ignore: &[IgnoreRule]) -> Value {
    let mut object = declared.clone();
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.retain(|key, _| !SERVER_METADATA.contains(&key.as_str()));
    }
    object.as_object_mut().map(|o| o.remove("status"));
    let kind = declared.get("kind").and_then(Value::as_str);
    let name = declared.pointer("/metadata/name").and_then(Value::as_str);
    let owned_by =
        |managers: &[String]| -> Vec<Vec<String>> { live.map(|live| owned_paths(live, managers)).unwrap_or_default() };
    for rule in ignore {
        if rule.kind.as_deref().is_some_and(|k| Some(k) != kind)
            || rule.name.as_deref().is_some_and(|n| Some(n) != name)
        {
            continue;
        }
        let pointers: Vec<Vec<String>> = rule.json_pointers.iter().map(|p| split(p)).collect();
        let targets = if rule.field_managers.is_empty() {
            pointers
        } else {
            // Only where one of the rule's managers owns the field (and, with
            // pointers, within them).
            owned_by(&rule.field_managers)
                .into_iter()
                .filter(|owned| pointers.is_empty() || pointers.iter().any(|p| covers(p, owned)))
                .collect()
        };
        for target in targets {
            remove_matching(&mut object, &target);
        }
    }
    object
}

fn split(pointer: &str) -> Vec<String> {
    pointer
        .strip_prefix('/')
        .map(|rest| rest.split('/').map(|s| s.replace("~1", "/").replace("~0", "~")).collect())
        .unwrap_or_default()
}

fn covers(rule: &[String], path: &[String]) -> bool {
    rule.len() <= path.len() && rule.iter().zip(path).all(|(r, p)| r == "*" || r == p)
}

/// Removes what `path` names (`*` matches any key or index).
fn remove_matching(value: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else { return };
    match value {
        Value::Object(map) if rest.is_empty() => {
            if first == "*" {
                map.clear();
            } else {
                map.remove(first);
            }
        }
        Value::Object(map) => {
            for (key, child) in map.iter_mut() {
                if first == "*" || key == first {
                    remove_matching(child, rest);
                }
            }
        }
        Value::Array(items) if rest.is_empty() => {
            if first == "*" {
                items.clear();
            } else if let Ok(index) = first.parse::<usize>()
                && index < items.len()
            {
                items.remove(index);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter_mut().enumerate() {
                if first == "*" || first.parse::<usize>().ok() == Some(index) {
                    remove_matching(child, rest);
                }
            }
        }
        _ => {}
    }
}

/// The map fields (`f:` keys of `metadata.managedFields`) that `managers`
/// own in `live`, as paths. List items (`k:`/`v:` keys) are not followed.
fn owned_paths(live: &Value, managers: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let Some(Value::Array(entries)) = live.pointer("/metadata/managedFields") else { return out };
    for entry in entries {
        let manager = entry.get("manager").and_then(Value::as_str).unwrap_or_default();
        if !managers.iter().any(|m| m == manager) {
            continue;
        }
        if let Some(Value::Object(fields)) = entry.get("fieldsV1") {
            walk_owned(fields, &mut Vec::new(), &mut out);
        }
    }
    out
}

fn walk_owned(fields: &Map<String, Value>, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    for (key, child) in fields {
        let Some(name) = key.strip_prefix("f:") else { continue };
        path.push(name.to_owned());
        match child {
            Value::Object(inner) if inner.keys().any(|k| k.starts_with("f:")) => walk_owned(inner, path, out),
            _ => out.push(path.clone()),
        }
        path.pop();
    }
}

/// A JSON patch that removes the fields `diff` reports as added by a foreign
/// manager, or None when there are none. Paths index into `object`, the
/// object the diff was taken against, so each removal is guarded by a
/// `test` of the value it removes: if anyone changed that value (or shifted
/// the list it is in) in between, the API server refuses the patch and the
/// revert is retried against the new object. A write elsewhere in the
/// object does not: a busy writer of other fields cannot keep a foreign
/// field in place by outpacing the revert.
pub fn removal_patch(diff: &ObjectDiff, object: &Value) -> Option<Value> {
    let mut paths: Vec<Vec<String>> = diff
        .changes
        .iter()
        .filter(|change| change.kind == ChangeKind::Added)
        .map(|change| split(&change.path))
        .filter(|path| !path.is_empty())
        .collect();
    if paths.is_empty() {
        return None;
    }
    // Deepest and highest index first, so earlier removals never shift
    // the index of a later one; nothing inside something already removed.
    paths.sort_by(|a, b| compare_paths(b, a));
    paths.dedup();
    let all = paths.clone();
    paths.retain(|path| !all.iter().any(|other| other.len() < path.len() && path.starts_with(other)));
    let mut ops = Vec::with_capacity(paths.len() * 2);
    for path in &paths {
        let at = pointer(path);
        // Not there (cannot happen for a diff of `object`): guard the whole
        // patch by the version instead.
        let Some(value) = object.pointer(&at) else {
            let version = object.pointer("/metadata/resourceVersion").cloned().unwrap_or_default();
            ops.insert(0, json!({"op": "test", "path": "/metadata/resourceVersion", "value": version}));
            ops.push(json!({"op": "remove", "path": at}));
            continue;
        };
        ops.push(json!({"op": "test", "path": at, "value": value}));
        ops.push(json!({"op": "remove", "path": at}));
    }
    Some(Value::Array(ops))
}

/// A JSON patch that puts the declared value back at every path `diff`
/// reports as changed in `live` (each guarded by a `test` of the live
/// value), then removes what it reports as added (as [`removal_patch`]).
/// None when there is nothing to put back or remove.
pub fn restore_patch(diff: &ObjectDiff, declared: &Value, live: &Value) -> Option<Value> {
    let mut ops = Vec::new();
    for change in diff.changes.iter().filter(|c| c.kind == ChangeKind::Changed && !c.path.is_empty()) {
        let (Some(now), Some(wanted)) = (live.pointer(&change.path), declared.pointer(&change.path)) else { continue };
        ops.push(json!({"op": "test", "path": change.path, "value": now}));
        ops.push(json!({"op": "replace", "path": change.path, "value": wanted}));
    }
    if let Some(Value::Array(removals)) = removal_patch(diff, live) {
        ops.extend(removals);
    }
    (!ops.is_empty()).then_some(Value::Array(ops))
}

fn compare_paths(a: &[String], b: &[String]) -> std::cmp::Ordering {
    for (x, y) in a.iter().zip(b) {
        let order = match (x.parse::<usize>(), y.parse::<usize>()) {
            (Ok(x), Ok(y)) => x.cmp(&y),
            _ => x.cmp(y),
        };
        if order.is_ne() {
            return order;
        }
    }
    a.len().cmp(&b.len())
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1"))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::FieldChange;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "9", "uid": "u"},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 3},
        })
    }

    fn rule(pointers: &[&str], managers: &[&str]) -> IgnoreRule {
        IgnoreRule {
            json_pointers: pointers.iter().map(|p| (*p).to_owned()).collect(),
            field_managers: managers.iter().map(|m| (*m).to_owned()).collect(),
            kind: None,
            name: None,
        }
    }

    #[test]
    fn a_restore_puts_declared_values_back_where_live_changed_them() {
        let declared = json!({"spec": {"ports": [{"port": 80, "protocol": "TCP"}]}});
        let live = json!({"spec": {"ports": [{"port": 81, "protocol": "TCP", "appProtocol": "http"}]}});
        let diff = ObjectDiff {
            changes: vec![
                FieldChange { path: "/spec/ports/0/port".into(), kind: ChangeKind::Changed },
                FieldChange { path: "/spec/ports/0/appProtocol".into(), kind: ChangeKind::Added },
                FieldChange { path: "/spec/ports/1".into(), kind: ChangeKind::Removed },
            ],
            unified: String::new(),
        };
        let patch = restore_patch(&diff, &declared, &live).unwrap();
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/spec/ports/0/port", "value": 81},
                {"op": "replace", "path": "/spec/ports/0/port", "value": 80},
                {"op": "test", "path": "/spec/ports/0/appProtocol", "value": "http"},
                {"op": "remove", "path": "/spec/ports/0/appProtocol"},
            ])
        );
        let mut restored = live.clone();
        let patch: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut restored, &patch).unwrap();
        assert_eq!(restored, declared);
        assert_eq!(restore_patch(&ObjectDiff::default(), &declared, &live), None);
    }

    #[test]
    fn the_applied_object_leaves_out_server_fields_and_ignored_ones() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "horizontal-pod-autoscaler", "operation": "Update", "subresource": "scale",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": {"f:metadata": {"f:labels": {"f:x": {}}}}},
        ]}});
        let cases: Vec<(&str, Vec<IgnoreRule>, Value)> = vec![
            ("no rules", vec![], json!(3)),
            ("a pointer", vec![rule(&["/spec/replicas"], &[])], Value::Null),
            ("the manager that owns it", vec![rule(&[], &["horizontal-pod-autoscaler"])], Value::Null),
            (
                "pointer and owning manager",
                vec![rule(&["/spec/replicas"], &["horizontal-pod-autoscaler"])],
                Value::Null,
            ),
            ("a manager that does not own it", vec![rule(&["/spec/replicas"], &["kubectl-edit"])], json!(3)),
            (
                "another kind",
                vec![IgnoreRule { kind: Some("Service".into()), ..rule(&["/spec/replicas"], &[]) }],
                json!(3),
            ),
        ];
        for (case, rules, replicas) in cases {
            let applied = applied_object(&deployment(), Some(&live), &rules);
            assert_eq!(applied.pointer("/spec/replicas").cloned().unwrap_or(Value::Null), replicas, "{case}");
            assert!(
                applied.get("status").is_none() && applied.pointer("/metadata/resourceVersion").is_none(),
                "{case}"
            );
            assert_eq!(applied.pointer("/metadata/name"), Some(&json!("web")), "{case}");
        }
        let wildcard = rule(&["/spec/template/spec/containers/*/image"], &[]);
        let applied = applied_object(&deployment(), None, &[wildcard]);
        assert_eq!(applied.pointer("/spec/template/spec/containers/0"), Some(&json!({"name": "web"})));
    }

    #[test]
    fn removals_run_back_to_front_and_each_is_guarded_by_its_value() {
        let added = |path: &str| FieldChange { path: path.into(), kind: ChangeKind::Added };
        let diff = ObjectDiff {
            changes: vec![
                added("/spec/template/spec/containers/0/securityContext/privileged"),
                added("/spec/template/spec/containers/1"),
                added("/spec/template/spec/containers/1/image"),
                added("/metadata/labels/team~1x"),
                FieldChange { path: "/spec/replicas".into(), kind: ChangeKind::Changed },
            ],
            unified: String::new(),
        };
        let object = json!({
            "metadata": {"resourceVersion": "42", "labels": {"team/x": "red"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "web", "securityContext": {"privileged": true}},
                {"name": "miner", "image": "xmr:1"},
            ]}}},
        });
        let patch = removal_patch(&diff, &object).unwrap();
        let ops: Vec<(&str, &str)> = patch
            .as_array()
            .unwrap()
            .iter()
            .map(|op| (op["op"].as_str().unwrap(), op["path"].as_str().unwrap()))
            .collect();
        assert_eq!(
            ops,
            [
                ("test", "/spec/template/spec/containers/1"),
                ("remove", "/spec/template/spec/containers/1"),
                ("test", "/spec/template/spec/containers/0/securityContext/privileged"),
                ("remove", "/spec/template/spec/containers/0/securityContext/privileged"),
                ("test", "/metadata/labels/team~1x"),
                ("remove", "/metadata/labels/team~1x"),
            ]
        );
        assert_eq!(patch[0]["value"], json!({"name": "miner", "image": "xmr:1"}), "exactly that container");
        assert_eq!(patch[2]["value"], json!(true));
        // The patch applies to the object it was made for...
        let patch_ops: json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
        let mut applied = object.clone();
        json_patch::patch(&mut applied, &patch_ops).unwrap();
        assert_eq!(applied.pointer("/spec/template/spec/containers").unwrap().as_array().unwrap().len(), 1);
        // ...and to one changed elsewhere, but not to one whose list shifted.
        let mut elsewhere = object.clone();
        elsewhere["metadata"]["annotations"] = json!({"tick": "7"});
        assert!(json_patch::patch(&mut elsewhere, &patch_ops).is_ok());
        let mut shifted = object.clone();
        shifted["spec"]["template"]["spec"]["containers"].as_array_mut().unwrap().swap(0, 1);
        assert!(
            json_patch::patch(&mut shifted, &patch_ops).is_err(),
            "a shifted list must not lose the wrong container"
        );
        let changed_only = ObjectDiff { changes: vec![diff.changes[4].clone()], unified: String::new() };
        assert_eq!(removal_patch(&changed_only, &object), None);
    }
}
