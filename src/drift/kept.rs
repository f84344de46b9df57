//! What the drift controller's caches keep of each object, and how the
//! reconcile reads a cached object back. Pure: the watches apply these
//! before an object is stored (`WatchStreamExt::modify`), the reconcile
//! calls [`live_value`] on the objects it diffs; the parsed sources are
//! kept as [`Declarations`].
//!
//! Memory is the reason: at 10,000 managed objects the caches were most of
//! the operator's heap (docs/BENCHMARKS.md, "The missed goal"). Each object
//! is kept in the smallest form its readers can use; what no reader uses is
//! dropped.

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DynamicObject, PartialObjectMeta};
use serde_json::Value;

use crate::drift::{ObjectKey, Origin, ParsedSources};

/// kubectl's copy of the whole last applied manifest: as large as the object.
pub use crate::drift::diff::LAST_APPLIED;

/// A live object as the watch cache keeps it: without what no reader uses
/// ([`drop_unread`]), and with its body and the metadata no pass reads
/// for every object as one JSON text ([`compact_body`]). [`live_value`]
/// reads it back.
pub fn for_watch_cache(object: &mut DynamicObject) {
    drop_unread(object);
    compact_body(object);
}

/// An object watched for undeclared drift only: its identity, times and
/// controller reference; labels, annotations and managedFields go (no
/// rule reads them, and they are most of an object's metadata).
pub fn metadata_only(object: &mut PartialObjectMeta<DynamicObject>) {
    let meta = &mut object.metadata;
    meta.labels = None;
    meta.annotations = None;
    meta.managed_fields = None;
    meta.finalizers = None;
    if let Some(owners) = meta.owner_references.as_mut() {
        owners.retain(|owner| owner.controller == Some(true));
        if owners.is_empty() {
            meta.owner_references = None;
        }
    }
}

/// Keeps the object's body (everything but apiVersion, kind and metadata:
/// `spec`, `data`, `rules`...) and the metadata only a diff reads (labels,
/// annotations, finalizers, managedFields) as one JSON text, the folded
/// metadata under the key `metadata` (which a body never has: the
/// metadata is a field of its own). Parsed, each JSON object costs a
/// B-tree node (hundreds of bytes, even with one entry) and `ObjectMeta`'s
/// maps and managedFields entries were most of a cached object; only the
/// objects that changed are read back. What every pass reads of every
/// object (name, uid, resourceVersion, times, owner references) stays parsed.
///
/// The API server only ever sends a body that is a JSON object, so a string
/// there can only be this encoding.
pub fn compact_body(object: &mut DynamicObject) {
    if object.data.is_string() {
        return;
    }
    let meta = &mut object.metadata;
    let folded = ObjectMeta {
        labels: meta.labels.take(),
        annotations: meta.annotations.take(),
        finalizers: meta.finalizers.take(),
        managed_fields: meta.managed_fields.take(),
        ..ObjectMeta::default()
    };
    let mut body = std::mem::take(&mut object.data);
    if let (Some(fields), Ok(folded)) = (body.as_object_mut(), serde_json::to_value(folded)) {
        fields.insert(FOLDED.into(), folded);
    }
    object.data = Value::String(body.to_string());
}

/// Where [`compact_body`] keeps the folded metadata in the body text.
const FOLDED: &str = "metadata";

/// Drops the object's `status` and the last-applied annotation. The diff
/// skips both (in either direction), reverts and codify work from the diff
/// and managedFields, so their results are the same; together they are
/// often half of an object. managedFields stay: the diff needs them to find
/// foreign additions.
pub fn drop_unread(object: &mut DynamicObject) {
    if let Some(annotations) = object.metadata.annotations.as_mut() {
        annotations.remove(LAST_APPLIED);
        // The API server never serves an empty map there; neither do we (an
        // empty map nobody declared reads as drift).
        if annotations.is_empty() {
            object.metadata.annotations = None;
        }
    }
    if let Some(fields) = object.data.as_object_mut() {
        fields.remove("status");
    }
}

/// A cached object as the diff, reverts and codify read it: as JSON, with
/// its metadata whole again. Every reader of a watch-cached object's body,
/// labels, annotations or managedFields must go through here.
pub fn live_value(object: &DynamicObject) -> Option<Value> {
    let (meta, mut value) = unfold(object)?;
    let fields = value.as_object_mut()?;
    if let Some(types) = &object.types {
        fields.insert("apiVersion".into(), types.api_version.clone().into());
        fields.insert("kind".into(), types.kind.clone().into());
    }
    fields.insert("metadata".into(), meta);
    Some(value)
}

/// A cached object's whole metadata and its body, as JSON (see
/// [`compact_body`]; an object not compacted is read as it is).
fn unfold(object: &DynamicObject) -> Option<(Value, Value)> {
    let mut meta = serde_json::to_value(&object.metadata).ok()?;
    let body = match &object.data {
        // Our own encoding of a JSON object: it parses.
        Value::String(text) => {
            let mut body: Value = serde_json::from_str(text).ok()?;
            if let (Some(Value::Object(folded)), Some(meta)) =
                (body.as_object_mut()?.remove(FOLDED), meta.as_object_mut())
            {
                meta.extend(folded);
            }
            body
        }
        body => body.clone(),
    };
    Some((meta, body))
}

/// A kept object as the write log matches it (`gate::writes`): what the
/// watch cache keeps, without its resourceVersion and managedFields. The
/// `/writes` webhook computes the same of the object it admits.
pub fn whole_fingerprint(object: &DynamicObject) -> u64 {
    let (mut meta, body) = unfold(object).unwrap_or_default();
    if let Some(meta) = meta.as_object_mut() {
        meta.remove("resourceVersion");
        meta.remove("managedFields");
    }
    crate::gate::writes::fingerprint(&serde_json::json!([meta, body]))
}

/// The same of metadata only (kinds watched for undeclared objects).
pub fn meta_fingerprint(meta: &ObjectMeta) -> u64 {
    let mut meta = meta.clone();
    meta.resource_version = None;
    meta.managed_fields = None;
    crate::gate::writes::fingerprint(&serde_json::to_value(meta).unwrap_or_default())
}

/// `spec.replicas` of a kept object (a `scale` is confirmed by it).
pub fn replicas(object: &DynamicObject) -> Option<i64> {
    unfold(object)?.1.pointer("/spec/replicas").and_then(Value::as_i64)
}

/// A ConfigMap's metadata as the sources' metadata cache keeps it. That
/// cache holds every ConfigMap of the cluster, sources or not, and its only
/// readers (`users_of`, `source_fingerprint`) read the name, namespace,
/// labels and resourceVersion: the rest, managedFields and annotations
/// above all, is dropped.
pub fn source_identity(config_map: &mut PartialObjectMeta<ConfigMap>) {
    let metadata = std::mem::take(&mut config_map.metadata);
    config_map.metadata = ObjectMeta {
        name: metadata.name,
        namespace: metadata.namespace,
        labels: metadata.labels,
        resource_version: metadata.resource_version,
        ..ObjectMeta::default()
    };
}

/// The parsed sources as the drift controller keeps them between
/// reconciles: each manifest as its JSON text. A parsed manifest is nested
/// serde_json maps, several times the size of its text, and only the objects
/// whose live resourceVersion changed are diffed again: [`Declared::object`]
/// parses those, a few microseconds each.
#[derive(Clone, Debug)]
pub struct Declarations {
    /// The Git revision, when the ConfigMaps carry one.
    pub revision: Option<String>,
    /// The declared objects, in source order.
    pub objects: Vec<Declared>,
}

/// A declared object: its identity and origin as parsed, its manifest as text.
#[derive(Clone, Debug)]
pub struct Declared {
    pub key: ObjectKey,
    pub origin: Origin,
    manifest: Box<str>,
}

impl Declared {
    /// The manifest, as the parser made it.
    pub fn object(&self) -> Value {
        // Our own serialization of a `Value`: it always parses back.
        serde_json::from_str(&self.manifest).expect("a declared manifest is JSON text")
    }
}

impl From<ParsedSources> for Declarations {
    fn from(parsed: ParsedSources) -> Self {
        let objects = parsed
            .objects
            .into_iter()
            .map(|declared| Declared {
                key: declared.key,
                origin: declared.origin,
                manifest: declared.object.to_string().into_boxed_str(),
            })
            .collect();
        Declarations { revision: parsed.revision, objects }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::api::IgnoreRule;
    use crate::drift::{self, DiffOptions};
    use crate::gate::revert;

    /// Live objects as a real API server returns them (defaults,
    /// managedFields, status, the last-applied annotation), in sync and
    /// edited by hand, with what was declared.
    fn cases() -> Vec<(&'static str, Value, Value)> {
        let yaml = |text: &str| serde_yaml_ng::from_str::<Value>(text).unwrap();
        let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        let deployment = yaml(include_str!("testdata/deployment-declared.yaml"));
        let live = json(include_str!("testdata/deployment-live.json"));
        let mut scaled = live.clone();
        scaled["spec"]["replicas"] = 9.into();
        scaled["status"]["replicas"] = 9.into();
        let mut annotated = live.clone();
        annotated["metadata"]["annotations"][LAST_APPLIED] = "{}".into();
        macro_rules! captured {
            ($name:literal) => {{
                let declared = yaml(include_str!(concat!("../../benches/data/", $name, ".yaml")));
                let live = json(include_str!(concat!("../../benches/data/", $name, ".live.json")));
                let drifted = json(include_str!(concat!("../../benches/data/", $name, ".drifted.json")));
                [($name, declared.clone(), live), ($name, declared, drifted)]
            }};
        }
        let mut all = vec![
            ("deployment", deployment.clone(), live),
            ("deployment scaled", deployment.clone(), scaled),
            ("deployment, last-applied edited", deployment, annotated),
        ];
        all.extend(captured!("deployment"));
        all.extend(captured!("service"));
        all.extend(captured!("configmap-100-keys"));
        all.extend(captured!("role-20-rules"));
        all.extend(captured!("crd-50kb"));
        all
    }

    /// The captured ConfigMap edited by hand (`setting-042` changed, `extra`
    /// added), with the managedFields a real API server would give it: the
    /// captures have none. The foreign `kubectl-patch` owns both edits.
    fn configmap_edited_by_a_foreign_manager() -> (Value, Value) {
        let declared: Value =
            serde_yaml_ng::from_str(include_str!("../../benches/data/configmap-100-keys.yaml")).unwrap();
        let mut live: Value =
            serde_json::from_str(include_str!("../../benches/data/configmap-100-keys.drifted.json")).unwrap();
        let applied: serde_json::Map<String, Value> = declared["data"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|key| *key != "setting-042")
            .map(|key| (format!("f:{key}"), json!({})))
            .collect();
        let entry = |manager: &str, fields: Value| {
            json!({"manager": manager, "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1",
                   "time": "2026-11-21T22:08:00Z", "fieldsV1": fields})
        };
        live["metadata"]["managedFields"] = json!([
            entry("kubectl-client-side-apply", json!({"f:data": applied, "f:metadata": {"f:labels": {"f:app": {}}}})),
            entry("kubectl-patch", json!({"f:data": {"f:extra": {}, "f:setting-042": {}}})),
        ]);
        (declared, live)
    }

    #[test]
    fn caching_an_object_changes_no_diff() {
        let options = DiffOptions::default();
        let mut drifted = 0;
        let edited = configmap_edited_by_a_foreign_manager();
        for (name, declared, live) in cases().into_iter().chain([("edited", edited.0, edited.1)]) {
            let whole: DynamicObject = serde_json::from_value(live).unwrap();
            let mut cached = whole.clone();
            for_watch_cache(&mut cached);
            let read_back = live_value(&cached).unwrap();
            assert!(read_back.get("status").is_none(), "{name}");
            let before = drift::diff(&declared, Some(&serde_json::to_value(&whole).unwrap()), &options);
            let after = drift::diff(&declared, Some(&read_back), &options);
            assert_eq!(before, after, "{name}");
            drifted += usize::from(!after.in_sync());
        }
        assert_eq!(drifted, 7, "the cases must include drift");
    }

    #[test]
    fn dropping_what_the_diff_never_reads_keeps_other_annotations_and_managed_fields() {
        let live: DynamicObject = serde_json::from_str(include_str!("testdata/deployment-live.json")).unwrap();
        let mut stripped = live.clone();
        drop_unread(&mut stripped);
        let annotations = stripped.metadata.annotations.unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert!(annotations.contains_key("deployment.kubernetes.io/revision"));
        assert_eq!(stripped.metadata.managed_fields, live.metadata.managed_fields);
        assert_eq!(stripped.data["spec"], live.data["spec"]);
    }

    #[test]
    fn a_cached_object_read_back_is_the_object_without_what_is_dropped() {
        let (_, edited) = configmap_edited_by_a_foreign_manager();
        let mut with_managed_fields = 0;
        for (name, live) in cases().into_iter().map(|(name, _, live)| (name, live)).chain([("edited", edited)]) {
            let whole: DynamicObject = serde_json::from_value(live).unwrap();
            with_managed_fields += usize::from(whole.metadata.managed_fields.as_ref().is_some_and(|m| !m.is_empty()));
            let mut cached = whole.clone();
            for_watch_cache(&mut cached);
            // What only a diff reads is in the text, not parsed.
            let meta = &cached.metadata;
            assert!(meta.labels.is_none() && meta.annotations.is_none() && meta.managed_fields.is_none(), "{name}");
            assert_eq!(
                (&meta.name, &meta.uid, &meta.resource_version),
                (&whole.metadata.name, &whole.metadata.uid, &whole.metadata.resource_version)
            );
            let mut expected = whole.clone();
            drop_unread(&mut expected);
            assert_eq!(live_value(&cached), Some(serde_json::to_value(&expected).unwrap()), "{name}");
            assert_eq!(replicas(&cached), expected.data.pointer("/spec/replicas").and_then(Value::as_i64), "{name}");
        }
        assert!(with_managed_fields >= 4, "the cases must have managedFields");
    }

    #[test]
    fn the_fingerprint_of_a_cached_object_is_that_of_the_object_it_keeps() {
        for (name, _, live) in cases() {
            let whole: DynamicObject = serde_json::from_value(live).unwrap();
            let mut expected = whole.clone();
            drop_unread(&mut expected);
            expected.metadata.resource_version = None;
            expected.metadata.managed_fields = None;
            let meta = serde_json::to_value(&expected.metadata).unwrap();
            let fingerprint = crate::gate::writes::fingerprint(&json!([meta, expected.data]));
            let mut cached = whole.clone();
            for_watch_cache(&mut cached);
            assert_eq!(whole_fingerprint(&cached), fingerprint, "{name}");
            // Another resourceVersion is the same write's object.
            let mut later = cached.clone();
            later.metadata.resource_version = Some("999999".into());
            assert_eq!(whole_fingerprint(&later), fingerprint, "{name}");
        }
    }

    #[test]
    fn compacting_twice_is_compacting_once() {
        let mut once: DynamicObject = serde_json::from_str(include_str!("testdata/deployment-live.json")).unwrap();
        for_watch_cache(&mut once);
        let mut twice = once.clone();
        for_watch_cache(&mut twice);
        assert_eq!(once.metadata, twice.metadata);
        assert_eq!(once.data, twice.data);
    }

    #[test]
    fn a_revert_from_a_cached_object_is_the_revert_from_the_whole_object() {
        let (declared, live) = configmap_edited_by_a_foreign_manager();
        let whole_object: DynamicObject = serde_json::from_value(live).unwrap();
        let mut cached = whole_object.clone();
        for_watch_cache(&mut cached);
        let whole = serde_json::to_value(&whole_object).unwrap();
        let read_back = live_value(&cached).unwrap();
        let options = DiffOptions::default();
        let diff = drift::diff(&declared, Some(&whole), &options);
        assert_eq!(drift::diff(&declared, Some(&read_back), &options), diff);

        // The removal patch: the foreign addition goes.
        let removal = revert::removal_patch(&diff, &whole).expect("a foreign addition to remove");
        assert!(removal.to_string().contains(r#"{"op":"remove","path":"/data/extra"}"#), "{removal}");
        let from_cache = drift::diff(&declared, Some(&read_back), &options);
        assert_eq!(revert::removal_patch(&from_cache, &read_back), Some(removal));

        // The applied object: an ignore rule by field manager reads managedFields.
        let ignore = [IgnoreRule {
            json_pointers: Vec::new(),
            field_managers: vec!["kubectl-patch".into()],
            kind: None,
            name: None,
        }];
        let applied = revert::applied_object(&declared, Some(&whole), &ignore);
        assert!(applied.pointer("/data/setting-042").is_none(), "kubectl-patch owns it: left alone");
        assert_eq!(revert::applied_object(&declared, Some(&read_back), &ignore), applied);

        // The body is text: an object read without live_value does not even
        // serialize. With the body but not the folded metadata decoded, the
        // declared labels would read as removed, the manager an ignore rule
        // names would be invisible and the ignored field would be applied.
        assert!(serde_json::to_value(&cached).is_err());
        let mut undecoded = cached.clone();
        undecoded.data = serde_json::from_str(undecoded.data.as_str().unwrap()).unwrap();
        undecoded.data.as_object_mut().unwrap().remove("metadata");
        let undecoded = serde_json::to_value(&undecoded).unwrap();
        assert_ne!(drift::diff(&declared, Some(&undecoded), &options), diff);
        assert_ne!(revert::applied_object(&declared, Some(&undecoded), &ignore), applied);
    }

    #[test]
    fn source_identity_keeps_what_selects_and_fingerprints_a_source() {
        let config_map: PartialObjectMeta<ConfigMap> = serde_json::from_value(json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "state", "namespace": "team", "resourceVersion": "42", "uid": "u-1",
                         "labels": {"driftwarden.io/source": "true"},
                         "annotations": {LAST_APPLIED: "{\"data\": {}}"},
                         "managedFields": [{"manager": "kubectl", "operation": "Update",
                                            "fieldsV1": {"f:data": {"f:a": {}}}}]}
        }))
        .unwrap();
        let mut kept = config_map.clone();
        source_identity(&mut kept);
        let expected = ObjectMeta {
            name: Some("state".into()),
            namespace: Some("team".into()),
            labels: config_map.metadata.labels.clone(),
            resource_version: Some("42".into()),
            ..ObjectMeta::default()
        };
        assert_eq!(kept.metadata, expected);
        assert_eq!(kept.types, config_map.types);
    }

    #[test]
    fn declarations_give_back_each_object_as_parsed() {
        let files = [
            ("deployment.yaml", include_str!("testdata/deployment-declared.yaml")),
            ("configmap.yaml", include_str!("../../benches/data/configmap-100-keys.yaml")),
            ("crd.yaml", include_str!("../../benches/data/crd-50kb.yaml")),
            ("role.yaml", include_str!("../../benches/data/role-20-rules.yaml")),
            (
                "numbers.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: numbers}\nx: [1, -2, 0.5, 1e300, true, null]\n",
            ),
        ];
        let source = drift::SourceConfigMap {
            name: "state".into(),
            data: files.iter().map(|(key, text)| ((*key).to_owned(), (*text).to_owned())).collect(),
            ..Default::default()
        };
        let scope = drift::SourceScope { namespace: "driftwarden", operator_namespace: "driftwarden" };
        let parsed = drift::parse_sources(&[source], &scope, &|_: &str, kind: &str| {
            Some(if kind == "CustomResourceDefinition" { drift::Scope::Cluster } else { drift::Scope::Namespaced })
        })
        .unwrap();
        assert_eq!(parsed.objects.len(), files.len());
        let kept = Declarations::from(parsed.clone());
        assert_eq!(kept.revision, parsed.revision);
        for (declared, kept) in parsed.objects.iter().zip(&kept.objects) {
            assert_eq!(kept.key, declared.key);
            assert_eq!(kept.origin, declared.origin);
            assert_eq!(kept.object(), declared.object, "{}", declared.key.name);
        }
    }
}
