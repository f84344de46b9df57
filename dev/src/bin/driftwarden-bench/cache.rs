//! Where the operator's memory goes per managed object: the heap bytes of
//! what it keeps for each, measured by building the same values in this
//! process (see [`crate::footprint`]).

use driftwarden::drift::kept as cached;
use driftwarden::drift::{self, Scope, SourceConfigMap, SourceScope};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, PartialObjectMeta};
use serde_json::Value;

use crate::footprint::retained;

/// Heap bytes per object of each thing the operator keeps.
pub struct Footprint {
    rows: Vec<(&'static str, u64)>,
    objects: usize,
    /// Per captured kind: bytes whole, bytes as the watch cache keeps it.
    kinds: Vec<(String, u64, u64)>,
}

/// Reads the bench's managed objects as the operator's caches hold them and
/// measures each form.
pub async fn footprint(client: Client, namespace: &str, objects: usize) -> anyhow::Result<Footprint> {
    let mut live = Vec::with_capacity(objects);
    for kind in crate::mix::KINDS {
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &crate::mix::resource(kind));
        live.extend(api.list(&ListParams::default().labels("app=bench")).await?.items);
    }
    anyhow::ensure!(live.len() == objects, "listed {} of {objects} objects", live.len());
    // Only ConfigMaps are in the sources' metadata cache.
    let is_config_map = |o: &&DynamicObject| {
        let index = o.metadata.name.as_deref().and_then(|n| n.strip_prefix("obj-")?.parse().ok());
        index.is_some_and(|i| crate::mix::kind(i) == crate::mix::Kind::ConfigMap)
    };
    let config_maps: Vec<&DynamicObject> = live.iter().filter(is_config_map).collect();
    let whole = kept(&live, |_| {});
    let no_last_applied = kept(&live, cached::drop_unread);
    let cached = kept(&live, cached::for_watch_cache);
    let no_managed_fields = kept(&live, |o| {
        cached::drop_unread(o);
        o.metadata.managed_fields = None;
    });
    let metadata = |trim: fn(&mut PartialObjectMeta<ConfigMap>)| {
        let meta = |o: &DynamicObject| {
            let mut meta = PartialObjectMeta::<ConfigMap> { metadata: o.metadata.clone(), ..Default::default() };
            trim(&mut meta);
            meta
        };
        retained(|| config_maps.iter().map(|o| meta(o)).collect::<Vec<_>>()).1
    };
    let (metadata_whole, metadata_cached) = (metadata(|_| {}), metadata(cached::source_identity));
    let as_value =
        retained(|| live.iter().map(|o| serde_json::to_value(o).unwrap_or_default()).collect::<Vec<Value>>());
    let declared = retained(|| parse_declarations(objects));
    // A copy of the parse, turned into the kept form: what it still holds.
    let kept_declared = retained(|| declared.0.clone().map(cached::Declarations::from)).1;
    let per = |bytes: u64| bytes / objects.max(1) as u64;
    let kinds = captured_kinds()?;
    Ok(Footprint {
        objects,
        rows: vec![
            ("live object as listed (DynamicObject)", per(whole)),
            ("  without status and the last-applied-configuration annotation", per(no_last_applied)),
            ("  the same without managedFields", per(no_managed_fields)),
            ("  as the watch cache keeps it (the above, managedFields as JSON text)", per(cached)),
            ("whole metadata of the managed ConfigMaps (per managed object)", per(metadata_whole)),
            (
                "  as the sources' metadata cache keeps it (it holds every ConfigMap's; per managed object)",
                per(metadata_cached),
            ),
            ("live object as a serde_json::Value (made per diff, then dropped)", per(as_value.1)),
            ("declared object, parsed from the sources", per(declared.1)),
            ("  as the drift controller keeps it (the manifest as JSON text)", per(kept_declared)),
        ],
        kinds,
    })
}

/// Each object of `benches/data`, whole and as the watch cache keeps it.
fn captured_kinds() -> anyhow::Result<Vec<(String, u64, u64)>> {
    let dir = driftwarden_dev::repo_root().join("benches/data");
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()?.strip_suffix(".live.json")) else { continue };
        let object: DynamicObject = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let objects = std::slice::from_ref(&object);
        let trimmed = kept(objects, cached::for_watch_cache);
        kinds.push((name.to_owned(), kept(objects, |_| {}), trimmed));
    }
    kinds.sort();
    Ok(kinds)
}

/// Heap bytes of copies of `live`, each changed by `strip`.
fn kept(live: &[DynamicObject], strip: impl Fn(&mut DynamicObject)) -> u64 {
    let copy = |object: &DynamicObject| {
        let mut object = object.clone();
        strip(&mut object);
        object
    };
    retained(|| live.iter().map(copy).collect::<Vec<_>>()).1
}

fn parse_declarations(objects: usize) -> Option<drift::ParsedSources> {
    let files = crate::declarations(objects);
    let source = SourceConfigMap {
        name: "state".into(),
        data: files.into_iter().map(|f| (f.path, String::from_utf8(f.content).unwrap_or_default())).collect(),
        ..Default::default()
    };
    let scope = SourceScope { namespace: "bench", operator_namespace: "bench" };
    drift::parse_sources(&[source], &scope, &|_: &str, _: &str| Some(Scope::Namespaced)).ok()
}

impl Footprint {
    pub fn print(&self) {
        println!("| kept per managed object | heap bytes | x {} objects |", self.objects);
        println!("|---|---:|---:|");
        for (what, bytes) in &self.rows {
            println!("| {what} | {bytes} | {} |", crate::process::mib(bytes * self.objects as u64));
        }
        println!();
        println!("| captured object (benches/data) | cached whole | as the watch cache keeps it |");
        println!("|---|---:|---:|");
        for (name, whole, trimmed) in &self.kinds {
            println!("| {name} | {whole} B | {trimmed} B ({:.0}%) |", 100.0 * *trimmed as f64 / *whole as f64);
        }
    }
}
