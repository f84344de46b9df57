//! Targets `diff_*` and `quantities`: the normalizer and the apply-semantics
//! diff on arbitrary JSON.
//!
//! Properties: no panic on any pair; an object read back as the API server
//! stores it (system metadata, status, managedFields under any manager
//! name) is in sync with its manifest; a field someone adds is reported at
//! its path under any manager name, and also when nobody owns it; no Secret value ever shows in a changed path or in
//! the unified diff; quantities compare by value.

use base64::Engine as _;
use driftwarden::api::IgnoreRule;
use driftwarden::drift::{DiffOptions, FieldChange, ObjectDiff, diff, parse_quantity};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

use crate::fuzz;
use crate::values::{json as any_json, key, pick, text};

/// Field manager names, every one of which a person can send
/// (`--field-manager`): the operator's, the IaC tools', the controllers'.
const MANAGERS: &[&str] = &[
    "driftwarden",
    "kubectl-client-side-apply",
    "kubectl",
    "helm",
    "kustomize-controller",
    "argocd-controller",
    "kube-controller-manager",
    "kube-scheduler",
    "kubelet",
    "horizontal-pod-autoscaler",
    "before-first-apply",
    "kubectl-edit",
    "kubectl-patch",
    "mallory-script",
    "",
];

/// An object shaped like a manifest: identity from small pools, the body
/// arbitrary.
fn manifest() -> impl Strategy<Value = Value> {
    let identity = proptest::sample::select(&[
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("v1", "Service"),
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("v1", "Pod"),
    ]);
    (identity, "[a-z]{1,8}", proptest::collection::btree_map(key(), any_json(4), 0..6)).prop_map(
        |((api_version, kind), name, body)| {
            let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
            for (key, value) in body {
                object.as_object_mut().expect("an object").entry(key).or_insert(value);
            }
            object
        },
    )
}

/// The fieldsV1 of a manager that set every field of `value` (lists whole).
fn fields_of(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            Value::Object(map.iter().map(|(key, value)| (format!("f:{key}"), fields_of(value))).collect())
        }
        _ => json!({}),
    }
}

fn managed_fields(entries: &[(&str, Value)]) -> Value {
    entries
        .iter()
        .map(|(manager, fields)| json!({"manager": manager, "operation": "Apply", "fieldsV1": fields}))
        .collect()
}

/// The manifest as the API server returns it: stringData folded into data,
/// system metadata and status added, every declared field owned by
/// `manager`, and `unowned` fields that no manager owns.
fn as_live(declared: &Value, manager: &str, unowned: &Map<String, Value>) -> Value {
    let mut live = declared.clone();
    let Value::Object(object) = &mut live else { return live };
    if object.get("kind").and_then(Value::as_str) == Some("Secret")
        && let Some(Value::Object(string_data)) = object.remove("stringData")
    {
        let data = object.entry("data").or_insert_with(|| json!({}));
        for (key, value) in string_data {
            let encoded = base64::engine::general_purpose::STANDARD.encode(value.as_str().unwrap_or_default());
            data[key] = Value::String(encoded);
        }
    }
    let fields = fields_of(&Value::Object(object.clone()));
    if let Some(Value::Object(metadata)) = object.get_mut("metadata") {
        metadata.insert("uid".into(), json!("6b1d3c1e-0000-4000-8000-000000000000"));
        metadata.insert("resourceVersion".into(), json!("4242"));
        metadata.insert("generation".into(), json!(3));
        metadata.insert("creationTimestamp".into(), json!("2026-01-01T00:00:00Z"));
        metadata.insert("managedFields".into(), managed_fields(&[(manager, fields)]));
    }
    object.insert("status".into(), json!({"observedGeneration": 3, "conditions": [{"type": "Ready"}]}));
    for (key, value) in unowned {
        object.entry(key.clone()).or_insert_with(|| value.clone());
    }
    live
}

fn any_manager() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(MANAGERS)
}

#[test]
fn diff_of_an_object_with_itself_is_in_sync() {
    fuzz("diff_self", 1200, (manifest(), any_manager()), |(declared, manager)| {
        let live = as_live(&declared, manager, &Map::new());
        let result = diff(&declared, Some(&live), &DiffOptions::default());
        prop_assert!(result.in_sync(), "{:?}\n{}", result.changes, result.unified);
        prop_assert!(result.unified.is_empty());
        Ok(())
    });
}

/// A field nobody declared is drift also when nobody owns it (ownership
/// can be reset by anyone who may write the object), unless it is one of the
/// server's own fields; the generated names never are.
#[test]
fn a_field_nobody_declared_or_owns_is_drift() {
    let added = proptest::collection::btree_map("zz-[a-z]{1,6}", any_json(2), 1..3);
    fuzz("diff_unowned", 600, (manifest(), any_manager(), added), |(declared, manager, added)| {
        let added: Map<String, Value> = added.into_iter().filter(|(_, v)| !is_empty(v)).collect();
        let live = as_live(&declared, manager, &added);
        let result = diff(&declared, Some(&live), &DiffOptions::default());
        for key in added.keys() {
            let path = format!("/{key}");
            let reported = result.changes.iter().any(|c| c.path == path || c.path.starts_with(&format!("{path}/")));
            prop_assert!(reported, "{path} not reported: {:?}", result.changes);
        }
        Ok(())
    });
}

/// Whether a value adds no field: null, an empty list, or a map of nothing
/// else (an empty map is a field).
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        // Null items add nothing to a list merged by item (the API server
        // stores none: a set's or a map-list's items are never null).
        Value::Array(items) => items.iter().all(Value::is_null),
        Value::Object(map) => !map.is_empty() && map.values().all(is_empty),
        _ => false,
    }
}

/// The map paths of `value` (through maps only) where a field can be added,
/// outside what the diff never compares.
fn map_paths(value: &Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![(value, Vec::<String>::new())];
    while let Some((value, path)) = stack.pop() {
        let Value::Object(map) = value else { continue };
        out.push(path.clone());
        for (key, child) in map {
            let skipped = match path.as_slice() {
                [] => matches!(key.as_str(), "status" | "apiVersion" | "kind"),
                [metadata] => metadata == "metadata" && key == "managedFields",
                _ => false,
            };
            if !skipped {
                stack.push((child, [path.clone(), vec![key.clone()]].concat()));
            }
        }
    }
    out
}

fn pointer(path: &[String]) -> String {
    path.iter().map(|segment| format!("/{}", segment.replace('~', "~0").replace('/', "~1"))).collect()
}

#[test]
fn diff_reports_a_field_a_foreign_manager_added() {
    let case = (manifest(), any_manager(), any::<proptest::sample::Index>(), any_json(2), any_manager());
    fuzz("diff_foreign", 1200, case, |(declared, manager, at, added, foreign)| {
        // Null and empty lists add no field.
        prop_assume!(!is_empty(&added));
        let mut live = as_live(&declared, manager, &Map::new());
        let paths = map_paths(&declared);
        let parent = at.get(&paths).clone();
        let field = "zz-added-by-hand".to_owned();
        let mut target = &mut live;
        for segment in &parent {
            target = target.get_mut(segment).expect("the path exists in live");
        }
        target.as_object_mut().expect("a map").insert(field.clone(), added);
        // The foreign manager owns exactly the new field.
        let mut owned = json!({});
        let mut node = &mut owned;
        for segment in parent.iter().chain([&field]) {
            node = node.as_object_mut().expect("a map").entry(format!("f:{segment}")).or_insert_with(|| json!({}));
        }
        let entries = live["metadata"]["managedFields"].as_array_mut().expect("managedFields");
        entries.extend(managed_fields(&[(foreign, owned)]).as_array().cloned().unwrap_or_default());

        let result = diff(&declared, Some(&live), &DiffOptions::default());
        let path = pointer(&[parent, vec![field]].concat());
        let reported =
            result.changes.iter().any(|change| change.path == path || change.path.starts_with(&format!("{path}/")));
        prop_assert!(reported, "{path} not reported: {:?}", result.changes);
        prop_assert!(!result.unified.is_empty());
        Ok(())
    });
}

fn ignore_rule() -> impl Strategy<Value = IgnoreRule> {
    let pointer = prop_oneof![
        proptest::sample::select(
            &["/spec/replicas", "/data/key-1", "/metadata/labels", "/*", "/spec/*/image", "/", "", "~", "/a~1b/~0"][..]
        )
        .prop_map(str::to_owned),
        text(),
    ];
    (
        proptest::collection::vec(pointer, 0..3),
        proptest::collection::vec(proptest::sample::select(MANAGERS).prop_map(str::to_owned), 0..2),
        proptest::option::of(pick(&["Secret", "ConfigMap", "Deployment"])),
    )
        .prop_map(|(json_pointers, field_managers, kind)| IgnoreRule {
            json_pointers,
            field_managers,
            kind,
            name: None,
        })
}

fn options() -> impl Strategy<Value = DiffOptions> {
    proptest::collection::vec(ignore_rule(), 0..3).prop_map(DiffOptions::with_ignore)
}

/// Random managedFields for `live`: entries from the pool owning what the
/// object holds, or garbage.
fn with_managers(mut live: Value, managers: Vec<(usize, bool)>, garbage: Value) -> Value {
    let fields = fields_of(&live);
    let entries: Vec<Value> = managers
        .into_iter()
        .map(|(manager, whole)| {
            let fields = if whole { fields.clone() } else { garbage.clone() };
            json!({"manager": MANAGERS[manager % MANAGERS.len()], "operation": "Update", "fieldsV1": fields})
        })
        .collect();
    if let Some(Value::Object(metadata)) = live.get_mut("metadata") {
        metadata.insert("managedFields".into(), Value::Array(entries));
    }
    live
}

fn check_consistent(result: &ObjectDiff, live_exists: bool) -> Result<(), TestCaseError> {
    prop_assert_eq!(result.in_sync(), result.changes.is_empty());
    if result.in_sync() {
        prop_assert!(result.unified.is_empty());
    }
    prop_assert_eq!(result.is_missing(), !live_exists);
    for FieldChange { path, .. } in &result.changes {
        prop_assert!(path.is_empty() || path.starts_with('/'), "not a JSON pointer: {path:?}");
    }
    Ok(())
}

#[test]
fn diff_of_any_pair_does_not_panic() {
    let live = prop_oneof![
        1 => Just(None),
        4 => (any_json(5), proptest::collection::vec((any::<usize>(), any::<bool>()), 0..3), any_json(3))
            .prop_map(|(live, managers, garbage)| Some(with_managers(live, managers, garbage))),
    ];
    let declared = prop_oneof![3 => manifest(), 1 => any_json(5)];
    fuzz("diff_any", 1200, (declared, live, options()), |(declared, live, options)| {
        let result = diff(&declared, live.as_ref(), &options);
        check_consistent(&result, live.is_some())?;
        prop_assert_eq!(&diff(&declared, live.as_ref(), &options), &result, "not deterministic");
        Ok(())
    });
}

// ---------------------------------------------------------------- Secrets

/// A value nobody could mistake for anything else in the output.
fn canary() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{16}".prop_map(|random| format!("canary-{random}"))
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// What happens to one declared key in live.
#[derive(Debug, Clone)]
enum LiveValue {
    Same,
    Changed(String),
    Gone,
}

fn live_value() -> impl Strategy<Value = LiveValue> {
    prop_oneof![Just(LiveValue::Same), canary().prop_map(LiveValue::Changed), Just(LiveValue::Gone)]
}

/// How the live side is broken, beyond changed values.
#[derive(Debug, Clone, Copy)]
enum LiveShape {
    Object,
    Missing,
    DataNotAMap,
    NotAnObject,
}

#[derive(Debug, Clone)]
struct SecretCase {
    data: Vec<(String, LiveValue)>,
    string_data: Vec<(String, LiveValue)>,
    added: Vec<String>,
    shape: LiveShape,
    managers: Vec<(usize, bool)>,
    with_last_applied: bool,
}

fn secret_case() -> impl Strategy<Value = SecretCase> {
    let entries = || proptest::collection::vec((canary(), live_value()), 0..4);
    let shape = prop_oneof![
        6 => Just(LiveShape::Object),
        1 => Just(LiveShape::Missing),
        1 => Just(LiveShape::DataNotAMap),
        1 => Just(LiveShape::NotAnObject),
    ];
    (
        entries(),
        entries(),
        proptest::collection::vec(canary(), 0..3),
        shape,
        proptest::collection::vec((any::<usize>(), any::<bool>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(data, string_data, added, shape, managers, with_last_applied)| SecretCase {
            data,
            string_data,
            added,
            shape,
            managers,
            with_last_applied,
        })
}

impl SecretCase {
    /// Every secret value in play, as text and as base64.
    fn values(&self) -> Vec<String> {
        let changed = self.data.iter().chain(&self.string_data).filter_map(|(_, live)| match live {
            LiveValue::Changed(value) => Some(value.clone()),
            _ => None,
        });
        let all: Vec<String> = self
            .data
            .iter()
            .chain(&self.string_data)
            .map(|(v, _)| v.clone())
            .chain(changed)
            .chain(self.added.clone())
            .collect();
        all.iter().flat_map(|v| [v.clone(), b64(v)]).collect()
    }

    fn declared(&self) -> Value {
        let data: Map<String, Value> =
            self.data.iter().enumerate().map(|(i, (v, _))| (format!("key-{i}"), b64(v).into())).collect();
        let string_data: Map<String, Value> =
            self.string_data.iter().enumerate().map(|(i, (v, _))| (format!("text-{i}"), v.clone().into())).collect();
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
               "type": "Opaque", "data": data, "stringData": string_data})
    }

    fn live(&self, declared: &Value) -> Option<Value> {
        let entries = self.data.iter().enumerate().map(|(i, entry)| (format!("key-{i}"), entry));
        let entries = entries.chain(self.string_data.iter().enumerate().map(|(i, entry)| (format!("text-{i}"), entry)));
        let mut data = Map::new();
        for (key, (value, live)) in entries {
            match live {
                LiveValue::Same => data.insert(key, b64(value).into()),
                LiveValue::Changed(other) => data.insert(key, b64(other).into()),
                LiveValue::Gone => None,
            };
        }
        for (i, value) in self.added.iter().enumerate() {
            data.insert(format!("added-{i}"), b64(value).into());
        }
        let mut live = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                              "type": "Opaque", "data": data});
        if self.with_last_applied {
            let applied = declared.to_string();
            live["metadata"]["annotations"] = json!({"kubectl.kubernetes.io/last-applied-configuration": applied});
        }
        let live = with_managers(live, self.managers.clone(), json!({"f:data": {"f:added-0": {}}}));
        match self.shape {
            LiveShape::Object => Some(live),
            LiveShape::Missing => None,
            LiveShape::DataNotAMap => {
                let mut live = live;
                live["data"] = Value::String(self.values().join(","));
                Some(live)
            }
            LiveShape::NotAnObject => Some(Value::Array(vec![live])),
        }
    }
}

#[test]
fn secret_values_never_show_in_a_diff() {
    fuzz("diff_secrets", 2500, (secret_case(), options()), |(case, options)| {
        let declared = case.declared();
        let live = case.live(&declared);
        let result = diff(&declared, live.as_ref(), &options);
        check_consistent(&result, live.is_some())?;
        for value in case.values() {
            for change in &result.changes {
                prop_assert!(!change.path.contains(&value), "{value} in path {}", change.path);
            }
            prop_assert!(!result.unified.contains(&value), "{value} in the unified diff:\n{}", result.unified);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- quantities

#[test]
fn quantities_compare_by_value() {
    fuzz("quantities", 10000, (0u64..1_000_000_000, any::<String>()), |(n, junk)| {
        let _ = parse_quantity(&junk);
        let q = |text: String| parse_quantity(&text).map_err(|e| TestCaseError::fail(e.to_string()));
        prop_assert_eq!(q(n.to_string())?, q(format!("{}m", u128::from(n) * 1000))?);
        prop_assert_eq!(q(format!("{n}k"))?, q(format!("{n}e3"))?);
        prop_assert_eq!(q(format!("{n}Mi"))?, q(format!("{}Ki", u128::from(n) * 1024))?);
        prop_assert_eq!(q(format!("{n}.5"))?, q(format!("{}m", u128::from(n) * 1000 + 500))?);
        prop_assert_eq!(q(format!("-{n}"))?, q(format!("-{n}.000"))?);
        if n > 0 {
            prop_assert_ne!(q(format!("{n}Ki"))?, q(format!("{n}k"))?);
        }
        Ok(())
    });
}

// ---------------------------------------------------------------- findings
// What these targets found, kept as plain tests (docs/RELIABILITY.md).

/// `kubectl edit` rewrites kubectl's last-applied annotation, which holds
/// the whole manifest, Secret values included. When the manifest declared
/// no annotations, the diff walked the live-only annotations as a foreign
/// addition and printed that copy in the unified diff.
#[test]
fn a_secrets_last_applied_copy_owned_by_kubectl_edit_is_not_shown() {
    let declared = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"},
                          "stringData": {"password": "canary-hunter2"}});
    let last_applied = declared.to_string();
    let live = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "db", "namespace": "shop",
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": last_applied, "touched": "by hand"},
            "managedFields": managed_fields(&[
                ("kubectl-client-side-apply", json!({"f:data": {"f:password": {}}})),
                ("kubectl-edit", json!({"f:metadata": {"f:annotations": {
                    "f:kubectl.kubernetes.io/last-applied-configuration": {}, "f:touched": {}}}})),
            ])},
        "data": {"password": b64("canary-hunter2")},
    });
    let result = diff(&declared, Some(&live), &DiffOptions::default());
    let paths: Vec<&str> = result.changes.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(paths, ["/metadata/annotations/touched"]);
    assert!(
        !result.unified.contains("hunter2") && !result.unified.contains(&b64("canary-hunter2")),
        "{}",
        result.unified
    );
}

/// A live "Secret" that is not even an object was shown as it was.
#[test]
fn a_live_secret_that_is_not_an_object_is_not_shown() {
    let data = json!({"k": b64("canary-declared")});
    let declared = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"}, "data": data});
    let live = json!([{"data": {"k": b64("canary-live")}}]);
    let result = diff(&declared, Some(&live), &DiffOptions::default());
    assert!(!result.in_sync());
    for value in ["canary-declared", "canary-live"] {
        assert!(!result.unified.contains(&b64(value)), "{}", result.unified);
    }
}
