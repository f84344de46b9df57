//! "Codify instead of revert": when a session's window ends with its changes
//! still live, the patch to the declared YAML that would make Git say what
//! the engineer did. Pure: declared, live and their diff in, text out.

use serde_json::{Map, Value};
use similar::TextDiff;

use crate::drift::diff::{REDACTED, REDACTED_CHANGED};
use crate::drift::{ChangeKind, ObjectDiff};

/// Patches longer than this are cut (status must stay small).
pub const MAX_PATCH_BYTES: usize = 8 * 1024;

/// A unified diff from the declared object to the declared object as it is
/// live now, labelled with where it is declared (`a/<source>`, `b/<source>`).
/// Only what the diff reports moves: declared fields keep their spelling
/// where live merely normalizes them (`0.5` vs `500m`). A Secret shows which
/// keys differ, never a value.
pub fn session_patch(declared: &Value, live: Option<&Value>, diff: &ObjectDiff, source: &str) -> String {
    let is_secret = declared.get("kind").and_then(Value::as_str) == Some("Secret");
    let changed = |kind: ChangeKind| -> Vec<&str> {
        diff.changes.iter().filter(|c| c.kind == kind).map(|c| c.path.as_str()).collect()
    };
    let (changed_paths, added_paths) = (changed(ChangeKind::Changed), changed(ChangeKind::Added));
    let after = match live {
        // A Secret's new values are never shown: its keys are marked instead.
        Some(_) if is_secret && !diff.is_missing() => Some(declared.clone()),
        Some(live) if !diff.is_missing() => {
            let marks = Marks { changed: &changed_paths, added: &added_paths };
            let mut path = String::new();
            Some(merge(declared, live, &marks, &mut path))
        }
        _ => None,
    };
    let mut before = declared.clone();
    let mut after = after;
    if is_secret {
        redact(&mut before, &[]);
        if let Some(after) = &mut after {
            redact(after, &changed_paths);
        }
    }
    // The patch is committed to Git and read by kubectl: YAML it reads back
    // as these values (`tier: 'yes'`, not `tier: yes`).
    let [old, new]: [String; 2] = crate::drift::yaml::render_all(&[Some(&before), after.as_ref()])
        .try_into()
        .expect("two renderings for two values");
    let patch = TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a/{source}"), &format!("b/{source}"))
        .to_string();
    bounded(patch)
}

/// A patch that adds an object no source declares as a new manifest file
/// at `path`: the live object without what the API server sets (status,
/// uid, resourceVersion, managedFields, ...), a Secret's values redacted.
pub fn new_object_patch(live: &Value, path: &str) -> String {
    let mut object = live.clone();
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(Value::Object(meta)) = object.get_mut("metadata") {
        for server_set in [
            "uid",
            "resourceVersion",
            "generation",
            "creationTimestamp",
            "managedFields",
            "selfLink",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "ownerReferences",
        ] {
            meta.remove(server_set);
        }
        if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
            annotations.remove(crate::drift::diff::LAST_APPLIED);
            annotations.remove("deployment.kubernetes.io/revision");
            if annotations.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if object.get("kind").and_then(Value::as_str) == Some("Secret") {
        redact(&mut object, &[]);
    }
    let text = crate::drift::yaml::render_all(&[Some(&object)]).pop().unwrap_or_default();
    let mut patch = format!("--- /dev/null\n+++ b/{path}\n@@ -0,0 +1,{} @@\n", text.lines().count());
    for line in text.lines() {
        patch.push('+');
        patch.push_str(line);
        patch.push('\n');
    }
    bounded(patch)
}

/// The patch, cut to what status can hold.
fn bounded(mut patch: String) -> String {
    if patch.len() > MAX_PATCH_BYTES {
        let mut cut = MAX_PATCH_BYTES;
        while !patch.is_char_boundary(cut) {
            cut -= 1;
        }
        patch.truncate(cut);
        patch.push_str("\n# ... cut: the patch is longer than the status can hold\n");
    }
    patch
}

struct Marks<'a> {
    changed: &'a [&'a str],
    added: &'a [&'a str],
}

fn push(path: &mut String, step: &str) -> usize {
    let len = path.len();
    path.push('/');
    path.push_str(&step.replace('~', "~0").replace('/', "~1"));
    len
}

/// Declared, with live values where the diff says they changed and live
/// fields Git does not declare; `path` is the pointer into live.
fn merge(declared: &Value, live: &Value, marks: &Marks<'_>, path: &mut String) -> Value {
    if marks.changed.contains(&path.as_str()) {
        return live.clone();
    }
    match (declared, live) {
        (Value::Object(declared), Value::Object(live)) => {
            let mut out = Map::new();
            for (key, value) in declared {
                let len = push(path, key);
                if let Some(live_value) = live.get(key) {
                    out.insert(key.clone(), merge(value, live_value, marks, path));
                } else if value.is_null() {
                    out.insert(key.clone(), Value::Null);
                }
                path.truncate(len);
            }
            for (key, value) in live {
                let len = push(path, key);
                if !declared.contains_key(key)
                    && let Some(added) = pick_added(value, marks, path)
                {
                    out.insert(key.clone(), added);
                }
                path.truncate(len);
            }
            Value::Object(out)
        }
        (Value::Array(declared), Value::Array(live)) => {
            let mut out = Vec::new();
            let mut used = vec![false; live.len()];
            for (index, item) in declared.iter().enumerate() {
                let found = match item.get("name") {
                    Some(name) => live.iter().position(|l| l.get("name") == Some(name)),
                    None => (index < live.len()).then_some(index),
                };
                if let Some(at) = found {
                    used[at] = true;
                    let len = push(path, &at.to_string());
                    out.push(merge(item, &live[at], marks, path));
                    path.truncate(len);
                }
            }
            for (at, item) in live.iter().enumerate() {
                let len = push(path, &at.to_string());
                if !used[at]
                    && let Some(added) = pick_added(item, marks, path)
                {
                    out.push(added);
                }
                path.truncate(len);
            }
            Value::Array(out)
        }
        _ => declared.clone(),
    }
}

/// The parts of a live-only value the diff reports as added (it
/// names the added leaves, e.g. `.../securityContext/privileged`).
fn pick_added(live: &Value, marks: &Marks<'_>, path: &mut String) -> Option<Value> {
    if marks.added.contains(&path.as_str()) {
        return Some(live.clone());
    }
    let prefix = format!("{path}/");
    if !marks.added.iter().any(|added| added.starts_with(&prefix)) {
        return None;
    }
    match live {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                let len = push(path, key);
                if let Some(added) = pick_added(value, marks, path) {
                    out.insert(key.clone(), added);
                }
                path.truncate(len);
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => {
            let mut out = Vec::new();
            for (at, item) in items.iter().enumerate() {
                let len = push(path, &at.to_string());
                out.extend(pick_added(item, marks, path));
                path.truncate(len);
            }
            Some(Value::Array(out))
        }
        _ => None,
    }
}

/// Replaces every Secret value with a marker: `REDACTED_CHANGED` where the
/// diff says the value differs, `REDACTED` elsewhere.
fn redact(secret: &mut Value, changed: &[&str]) {
    for field in ["data", "stringData"] {
        if let Some(Value::Object(values)) = secret.get_mut(field) {
            for (key, value) in values.iter_mut() {
                let pointer = format!("/{field}/{}", key.replace('~', "~0").replace('/', "~1"));
                let differs = changed.iter().any(|c| *c == pointer || *c == format!("/data/{key}"));
                *value = Value::String(if differs { REDACTED_CHANGED } else { REDACTED }.into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DiffOptions, diff};
    use serde_json::json;

    fn managed(object: Value, foreign: Value) -> Value {
        let mut live = object;
        live["metadata"]["managedFields"] = json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsV1": {"f:spec": {}}},
            {"manager": "kubectl-edit", "operation": "Update", "fieldsV1": foreign},
        ]);
        live
    }

    #[test]
    fn a_new_object_is_a_new_file_without_server_fields_or_secret_values() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "stash", "namespace": "shop", "uid": "u-1", "resourceVersion": "7",
                         "creationTimestamp": "2026-12-01T00:00:00Z", "managedFields": [{"manager": "kubectl"}]},
            "data": {"token": "c2VjcmV0LWNhbmFyeQ=="}});
        let patch = new_object_patch(&secret, "shop-state/secret-stash.yaml");
        assert!(patch.starts_with("--- /dev/null\n+++ b/shop-state/secret-stash.yaml\n@@ -0,0 +1,"), "{patch}");
        assert!(patch.contains("+kind: Secret\n") && patch.contains("+  name: stash\n"), "{patch}");
        for leaked in ["c2VjcmV0LWNhbmFyeQ==", "u-1", "resourceVersion", "managedFields", "creationTimestamp"] {
            assert!(!patch.contains(leaked), "{leaked} in {patch}");
        }
        let lines = patch.lines().skip(3).count();
        assert!(patch.contains(&format!("+1,{lines} @@")), "the hunk counts its lines: {patch}");
    }

    #[test]
    fn shows_changed_and_added_fields_and_keeps_declared_spelling() {
        let declared = json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1.27", "resources": {"limits": {"cpu": "0.5"}}}]}}},
        });
        let live = managed(
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "shop"},
                "spec": {"replicas": 5, "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27", "resources": {"limits": {"cpu": "500m"}},
                     "securityContext": {"privileged": true}}]}}},
            }),
            json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"web\"}": {"f:securityContext": {"f:privileged": {}}}}}}}}),
        );
        let drift = diff(&declared, Some(&live), &DiffOptions::default());
        assert!(!drift.in_sync());
        let patch = session_patch(&declared, Some(&live), &drift, "shop-state/web.yaml");
        assert!(patch.starts_with("--- a/shop-state/web.yaml\n+++ b/shop-state/web.yaml\n"), "{patch}");
        assert!(patch.contains("-  replicas: 2\n+  replicas: 5\n"), "{patch}");
        assert!(patch.contains("+          privileged: true"), "{patch}");
        assert!(!patch.contains("500m"), "normalized values stay as declared: {patch}");
    }

    #[test]
    fn a_deleted_object_deletes_the_document_and_secrets_stay_secret() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                            "stringData": {"password": "canary-7f3a"}});
        let gone = diff(&secret, None, &DiffOptions::default());
        let patch = session_patch(&secret, None, &gone, "s/db.yaml");
        assert!(patch.contains("-kind: Secret"), "{patch}");
        assert!(!patch.contains("canary-7f3a"), "{patch}");

        let live = managed(
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                   "data": {"password": "b3RoZXItY2FuYXJ5"}}),
            json!({"f:data": {"f:password": {}}}),
        );
        let changed = diff(&secret, Some(&live), &DiffOptions::default());
        let patch = session_patch(&secret, Some(&live), &changed, "s/db.yaml");
        assert!(!patch.contains("canary-7f3a") && !patch.contains("b3RoZXItY2FuYXJ5"), "{patch}");
    }
}
