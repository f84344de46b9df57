//! The pure drift engine, per object: `cargo bench --bench diff`.
//! Goal: <= 20 µs per typical object in sync.
//!
//! The objects are in `benches/data`: each declared manifest with its live
//! copy as a real API server returned it after `kubectl apply` (server
//! defaults, managedFields, the last-applied annotation) and after a hand
//! edit by another field manager (`kubectl patch`). `driftwarden-bench
//! fixtures --out benches/data` captures them again.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwarden::drift::{self, DiffOptions, Scope, SourceConfigMap, SourceScope, normalize};
use serde_json::Value;

/// The captured objects, typical first.
const CAPTURED: &[&str] = &["deployment", "service", "configmap-100-keys", "role-20-rules", "crd-50kb"];

fn data(file: &str) -> String {
    let path = format!("{}/benches/data/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

struct Fixture {
    name: String,
    declared: Value,
    live: Value,
    drifted: Value,
}

fn fixtures() -> Vec<Fixture> {
    let mut all: Vec<Fixture> = CAPTURED
        .iter()
        .map(|name| Fixture {
            name: (*name).to_owned(),
            declared: serde_yaml_ng::from_str(&data(&format!("{name}.yaml"))).unwrap(),
            live: serde_json::from_str(&data(&format!("{name}.live.json"))).unwrap(),
            drifted: serde_json::from_str(&data(&format!("{name}.drifted.json"))).unwrap(),
        })
        .collect();
    // A Deployment as a full cluster shows it: status, and the deployment
    // controller's fields (the bench's control plane runs no such controller).
    let declared: Value =
        serde_yaml_ng::from_str(include_str!("../src/drift/testdata/deployment-declared.yaml")).unwrap();
    let live: Value = serde_json::from_str(include_str!("../src/drift/testdata/deployment-live.json")).unwrap();
    let mut drifted = live.clone();
    drifted["spec"]["replicas"] = 9.into();
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:9".into();
    all.insert(1, Fixture { name: "deployment-with-status".into(), declared, live, drifted });
    all
}

fn diff(c: &mut Criterion) {
    let options = DiffOptions::default();
    let mut group = c.benchmark_group("diff");
    group.throughput(Throughput::Elements(1));
    for fixture in fixtures() {
        let Fixture { name, declared, live, drifted } = &fixture;
        assert!(drift::diff(declared, Some(live), &options).in_sync(), "{name}: live must be in sync");
        assert!(!drift::diff(declared, Some(drifted), &options).in_sync(), "{name}: drifted must drift");
        group.bench_function(format!("{name}/in_sync"), |b| {
            b.iter(|| drift::diff(black_box(declared), Some(black_box(live)), &options))
        });
        group.bench_function(format!("{name}/drifted"), |b| {
            b.iter(|| drift::diff(black_box(declared), Some(black_box(drifted)), &options))
        });
    }
    group.finish();
}

/// The comparisons the diff makes where the API server normalizes a value.
fn normalization(c: &mut Criterion) {
    let pairs: Vec<(Value, Value)> = [
        ("0.5", "500m"),
        ("1", "1"),
        ("250m", "250m"),
        ("128Mi", "128Mi"),
        ("0.25Gi", "256Mi"),
        ("1Gi", "1Gi"),
        ("2", "2000m"),
        ("1e3", "1k"),
    ]
    .iter()
    .map(|(declared, live)| (Value::from(*declared), Value::from(*live)))
    .collect();
    for (declared, live) in &pairs {
        assert!(normalize::quantities_equal(declared, live), "{declared} = {live}");
    }
    let mut group = c.benchmark_group("normalize");
    group.throughput(Throughput::Elements(pairs.len() as u64));
    group.bench_function("quantities_equal", |b| {
        b.iter(|| pairs.iter().filter(|(d, l)| normalize::quantities_equal(black_box(d), black_box(l))).count())
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let resolver =
        |_: &str, kind: &str| Some(if kind == "CustomResourceDefinition" { Scope::Cluster } else { Scope::Namespaced });
    let scope = SourceScope { namespace: "bench", operator_namespace: "bench" };
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/GoogleCloudPlatform__microservices-demo__release_kubernetes-manifests.yaml"
    ))
    .unwrap();
    let (large, objects) = large_source();
    let mut group = c.benchmark_group("parse");
    for (name, source) in [("microservices_demo", one_key(&corpus)), ("large_source", large)] {
        let bytes: usize = source.data.values().map(String::len).sum();
        let parsed = drift::parse_sources(std::slice::from_ref(&source), &scope, &resolver).unwrap();
        if name == "large_source" {
            assert_eq!(parsed.objects.len(), objects);
        }
        group.throughput(Throughput::Bytes(bytes as u64));
        group.bench_function(name, |b| {
            b.iter(|| drift::parse_sources(black_box(std::slice::from_ref(&source)), &scope, &resolver))
        });
    }
    group.finish();
}

fn one_key(text: &str) -> SourceConfigMap {
    SourceConfigMap { name: "bench".into(), data: [("demo.yaml".into(), text.into())].into(), ..Default::default() }
}

/// Objects `range`: the typical captured kinds in turn, each renamed `<name>-<i>`.
fn typical_documents(range: std::ops::Range<usize>) -> Vec<String> {
    let typical: Vec<String> = CAPTURED[..4].iter().map(|name| data(&format!("{name}.yaml"))).collect();
    range
        .map(|i| {
            let text = &typical[i % typical.len()];
            // Each fixture's first `name:` is its metadata.name.
            let (before, after) = text.split_once("\n  name: ").unwrap();
            let (name, rest) = after.split_once('\n').unwrap();
            format!("{before}\n  name: {name}-{i}\n{rest}")
        })
        .collect()
}

/// 1,000 objects (the typical captured kinds in turn, renamed) in keys of
/// 100 documents, and the 50 KB CRD once.
fn large_source() -> (SourceConfigMap, usize) {
    let mut source = SourceConfigMap { name: "large".into(), ..Default::default() };
    let documents = typical_documents(0..1000);
    for (key, chunk) in documents.chunks(100).enumerate() {
        source.data.insert(format!("part{key:02}.yaml"), chunk.join("---\n"));
    }
    source.data.insert("crd.yaml".into(), data("crd-50kb.yaml"));
    (source, documents.len() + 1)
}

/// The cost of checking a source's signature next to parsing it, for a
/// 10,000-object state packed and signed as `driftwarden publish` does.
fn verify(c: &mut Criterion) {
    use driftwarden::drift::signature::{self, TrustedKey};
    let files: Vec<driftwarden::drift::pack::ManifestFile> = (0..20)
        .map(|f| {
            let documents = typical_documents(f * 500..(f + 1) * 500);
            driftwarden::drift::pack::ManifestFile {
                path: format!("part{f:02}.yaml"),
                content: documents.join("---\n").into_bytes(),
            }
        })
        .collect();
    let key = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
    let mut packed = driftwarden::drift::pack::pack(&files, "state", "bench", Some("0123abcd")).unwrap();
    driftwarden::drift::pack::sign(&mut packed, &key, "bench", 1);
    let sources: Vec<SourceConfigMap> = packed.iter().map(SourceConfigMap::from_config_map).collect();
    let bytes: usize = sources
        .iter()
        .map(|s| s.data.values().map(String::len).sum::<usize>() + s.binary_data.values().map(Vec::len).sum::<usize>())
        .sum();
    let trusted = [TrustedKey { name: "ci".into(), key: key.verifying_key() }];
    let scope = SourceScope { namespace: "bench", operator_namespace: "driftwarden" };
    let resolver = |_: &str, _: &str| Some(Scope::Namespaced);
    assert_eq!(drift::parse_sources(&sources, &scope, &resolver).unwrap().objects.len(), 10_000);
    let mut group = c.benchmark_group("source_10k_objects");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("verify_signature", |b| {
        b.iter(|| signature::verify("bench", black_box(&sources), &trusted, None).unwrap())
    });
    group.bench_function("parse", |b| b.iter(|| drift::parse_sources(black_box(&sources), &scope, &resolver).unwrap()));
    group.finish();
}

criterion_group!(benches, diff, normalization, parse, verify);
criterion_main!(benches);
