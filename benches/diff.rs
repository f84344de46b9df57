//! The pure diff and parser, per object: `cargo bench --bench diff`.
//! Goal: <= 20 µs for a typical Deployment in sync.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use driftwarden::drift::{self, DiffOptions, Scope, SourceConfigMap, SourceScope};
use serde_json::Value;

fn fixtures() -> (Value, Value) {
    let declared: Value =
        serde_yaml_ng::from_str(include_str!("../src/drift/testdata/deployment-declared.yaml")).unwrap();
    let live: Value = serde_json::from_str(include_str!("../src/drift/testdata/deployment-live.json")).unwrap();
    (declared, live)
}

fn diff(c: &mut Criterion) {
    let (declared, live) = fixtures();
    let options = DiffOptions::default();
    assert!(drift::diff(&declared, Some(&live), &options).in_sync());
    let mut drifted = live.clone();
    drifted["spec"]["replicas"] = 9.into();
    drifted["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:9".into();
    assert!(!drift::diff(&declared, Some(&drifted), &options).in_sync());

    let mut group = c.benchmark_group("diff");
    group.throughput(Throughput::Elements(1));
    group.bench_function("deployment_in_sync", |b| {
        b.iter(|| drift::diff(black_box(&declared), Some(black_box(&live)), &options))
    });
    group.bench_function("deployment_drifted", |b| {
        b.iter(|| drift::diff(black_box(&declared), Some(black_box(&drifted)), &options))
    });
    group.finish();
}

fn parse(c: &mut Criterion) {
    let corpus = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/corpus/GoogleCloudPlatform__microservices-demo__release_kubernetes-manifests.yaml"
    ))
    .unwrap();
    let source = SourceConfigMap {
        name: "bench".into(),
        data: [("demo.yaml".into(), corpus.clone())].into(),
        ..Default::default()
    };
    let resolver = |_: &str, _: &str| Some(Scope::Namespaced);
    let scope = SourceScope { namespace: "bench", operator_namespace: "bench" };
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Bytes(corpus.len() as u64));
    group.bench_function("microservices_demo", |b| {
        b.iter(|| drift::parse_sources(black_box(std::slice::from_ref(&source)), &scope, &resolver))
    });
    group.finish();
}

criterion_group!(benches, diff, parse);
criterion_main!(benches);
