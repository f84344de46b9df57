//! Target `kubectl`: driftwarden's parser (`drift::parse_sources`, the one
//! `publish`, `diff` and the operator use) against the pinned kubectl, the
//! reader users' manifests are written for.
//!
//! Generated manifests put tricky scalars (YAML 1.1 integers, booleans,
//! nulls, floats, timestamps, sexagesimals, quoted and tagged forms) in many
//! places: labels, annotations, data, replicas, ports, env values, lists,
//! keys; with anchors and aliases, merge keys, duplicate keys, comments,
//! tabs, CRLF, flow and block styles, several documents, JSON. Each batch
//! is written to files and read by one `kubectl create --dry-run=client
//! --validate=false -o json -f DIR` against a real API server (kubectl needs
//! discovery to map kinds; a CRD with `x-kubernetes-preserve-unknown-fields`
//! keeps the API types out of it, so what is compared is the reader).
//! Property: for every file, the same objects (as JSON values) or both
//! refuse it. The shared corpora (`tests/data/corpus/`,
//! `tests/fuzz/corpus/sources/`) run on every run too.
//!
//! `DRIFTWARDEN_FUZZ_CASES=N` files (default 10,000), or
//! `DRIFTWARDEN_FUZZ_SECONDS=S` of batches; `DRIFTWARDEN_FUZZ_SEED` replays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use driftwarden::drift::{Scope, SourceConfigMap, SourceScope, parse_sources};
use driftwarden_dev::controlplane::{self, ControlPlane, User};
use serde_json::Value;

const DEFAULT_CASES: u64 = 10_000;
const BATCH: usize = 500;
const GROUP: &str = "fuzz.driftwarden.io";

/// A control plane with the `Fuzz` CRD, on a thread of its own; the tests'
/// runtimes come and go.
struct Oracle {
    cp: ControlPlane,
}

fn oracle() -> &'static Oracle {
    static ORACLE: std::sync::OnceLock<Result<Oracle, String>> = std::sync::OnceLock::new();
    let started = ORACLE.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let cp =
                runtime.block_on(ControlPlane::start(controlplane::Options::default())).map_err(|e| e.to_string())?;
            let crd = serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": format!("fuzzes.{GROUP}")},
                "spec": {
                    "group": GROUP,
                    "scope": "Namespaced",
                    "names": {"plural": "fuzzes", "singular": "fuzz", "kind": "Fuzz", "listKind": "FuzzList"},
                    "versions": [{
                        "name": "v1", "served": true, "storage": true,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
                    }],
                },
            });
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let path = dir.path().join("crd.json");
            std::fs::write(&path, crd.to_string()).map_err(|e| e.to_string())?;
            let applied =
                cp.kubectl(User::Admin).arg("apply").arg("-f").arg(&path).output().map_err(|e| e.to_string())?;
            if !applied.status.success() {
                return Err(format!("installing the Fuzz CRD: {}", String::from_utf8_lossy(&applied.stderr)));
            }
            let waited = cp
                .kubectl(User::Admin)
                .args(["wait", "--for=condition=Established", "--timeout=60s", &format!("crd/fuzzes.{GROUP}")])
                .output()
                .map_err(|e| e.to_string())?;
            if !waited.status.success() {
                return Err(format!("waiting for the Fuzz CRD: {}", String::from_utf8_lossy(&waited.stderr)));
            }
            Ok(Oracle { cp })
        })
        .join()
        .unwrap_or_else(|_| Err("starting the control plane panicked".into()))
    });
    started.as_ref().unwrap_or_else(|err| panic!("the kubectl oracle did not start: {err}"))
}

/// What one reader made of one file.
#[derive(Debug, PartialEq)]
enum Reading {
    Objects(Vec<Value>),
    Refused(String),
}

/// kubectl's reading of each file, in one process.
fn kubectl_read(files: &[String]) -> Vec<Reading> {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = files
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let path = dir.path().join(file_name(index, text));
            std::fs::write(&path, text).unwrap();
            path
        })
        .collect();
    let output = oracle()
        .cp
        .kubectl(User::Admin)
        .args(["create", "--dry-run=client", "--validate=false", "-o", "json", "-f"])
        .arg(dir.path())
        .output()
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let mut objects: BTreeMap<usize, Vec<(usize, Value)>> = BTreeMap::new();
    for (order, value) in serde_json::Deserializer::from_slice(&output.stdout).into_iter::<Value>().enumerate() {
        let value = value.unwrap_or_else(|e| panic!("kubectl printed something that is not JSON: {e}"));
        let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_owned();
        let (file, document) = match parse_name(&name) {
            Some(place) => place,
            None if files.len() == 1 => (0, order),
            None => panic!("kubectl printed an object named {name:?}"),
        };
        objects.entry(file).or_default().push((document, strip(value)));
    }
    paths
        .iter()
        .enumerate()
        .map(|(index, path)| {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            match stderr.lines().find(|line| line.contains(&format!("/{name}"))) {
                Some(line) => Reading::Refused(line.to_owned()),
                None => {
                    let mut found = objects.remove(&index).unwrap_or_default();
                    found.sort_by_key(|(document, _)| *document);
                    Reading::Objects(found.into_iter().map(|(_, value)| value).collect())
                }
            }
        })
        .collect()
}

/// JSON files need a `.json` name for kubectl to take them from a directory.
fn file_name(index: usize, text: &str) -> String {
    let extension = if text.trim_start().starts_with('{') { "json" } else { "yaml" };
    format!("case-{index:05}.{extension}")
}

/// Generated objects are named `c<file>-d<document>`; corpus objects keep
/// their names and are matched by order.
fn parse_name(name: &str) -> Option<(usize, usize)> {
    let (file, document) = name.strip_prefix('c')?.split_once("-d")?;
    Some((file.parse().ok()?, document.parse().ok()?))
}

/// The namespace is the reader's caller's business (kubectl leaves it out
/// here, driftwarden defaults it).
fn strip(mut value: Value) -> Value {
    if let Some(metadata) = value.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("namespace");
    }
    value
}

fn resolver(api_version: &str, kind: &str) -> Option<Scope> {
    let cluster = [
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "IngressClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
    ];
    if api_version.is_empty() || kind.is_empty() {
        return None;
    }
    Some(if cluster.contains(&kind) { Scope::Cluster } else { Scope::Namespaced })
}

/// driftwarden's reading of one file.
fn driftwarden_read(text: &str) -> Reading {
    let source = SourceConfigMap {
        name: "fuzz".into(),
        data: [("file".to_owned(), text.to_owned())].into(),
        ..Default::default()
    };
    let scope = SourceScope { namespace: "default", operator_namespace: "default" };
    match parse_sources(&[source], &scope, &resolver) {
        Ok(parsed) => Reading::Objects(parsed.objects.into_iter().map(|object| strip(object.object)).collect()),
        Err(errors) => Reading::Refused(errors.to_string()),
    }
}

/// Whether a refusal is about reading the text (rather than the object).
fn is_reading_error(errors: &str) -> bool {
    errors.contains("invalid YAML") || errors.contains("nested deeper")
}

#[derive(Default)]
struct Counts {
    files: u64,
    documents: u64,
    agreed: u64,
    refused: u64,
    /// Files driftwarden refuses because kubectl's reading is chance.
    ambiguous: u64,
    /// How often driftwarden gave each reason for a refusal.
    reasons: BTreeMap<String, u64>,
}

/// Compares both readers on `files`; panics on the first disagreement.
fn compare(files: &[String], origin: &str, counts: &mut Counts) {
    let theirs = kubectl_read(files);
    for (index, (text, kubectl)) in files.iter().zip(theirs).enumerate() {
        let ours = driftwarden_read(text);
        counts.files += 1;
        match (&kubectl, &ours) {
            (Reading::Objects(a), Reading::Objects(b)) if a == b => {
                counts.agreed += 1;
                counts.documents += a.len() as u64;
            }
            // Two YAML keys that are one JSON key (`true` and `'true'`):
            // kubectl keeps one at random, driftwarden refuses the file.
            (_, Reading::Refused(reason)) if reason.contains("at random") => counts.ambiguous += 1,
            (Reading::Refused(_), Reading::Refused(reason)) => {
                counts.refused += 1;
                let reason =
                    reason.split(": ").skip(1).filter(|part| !part.starts_with("line ")).collect::<Vec<_>>().join(": ");
                if std::env::var("DRIFTWARDEN_KUBECTL_SHOW").is_ok_and(|show| reason.contains(&show)) {
                    eprintln!("--- refused for {reason}:\n{text}");
                }
                *counts.reasons.entry(reason.chars().take(90).collect()).or_default() += 1;
            }
            _ => {
                panic!("{origin} file {index} read differently: {}\n--- file ---\n{text}", difference(&kubectl, &ours))
            }
        }
    }
}

/// Where two readings first differ, in a line.
fn difference(kubectl: &Reading, ours: &Reading) -> String {
    fn first(a: &Value, b: &Value, path: String) -> Option<String> {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for key in x.keys().chain(y.keys()) {
                    let (left, right) = (x.get(key).unwrap_or(&Value::Null), y.get(key).unwrap_or(&Value::Null));
                    if x.contains_key(key) != y.contains_key(key) {
                        return Some(format!("{path}/{key}: kubectl {:?}, driftwarden {:?}", x.get(key), y.get(key)));
                    }
                    if let Some(found) = first(left, right, format!("{path}/{key}")) {
                        return Some(found);
                    }
                }
                None
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                x.iter().zip(y).enumerate().find_map(|(i, (l, r))| first(l, r, format!("{path}/{i}")))
            }
            _ if a == b => None,
            _ => Some(format!("{path}: kubectl {a}, driftwarden {b}")),
        }
    }
    match (kubectl, ours) {
        (Reading::Objects(a), Reading::Objects(b)) => {
            first(&Value::Array(a.clone()), &Value::Array(b.clone()), String::new()).unwrap_or_default()
        }
        _ => format!("kubectl {kubectl:?}, driftwarden {ours:?}"),
    }
}

fn corpus_files() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["tests/data/corpus", "tests/data/corpus/extra", "tests/fuzz/corpus/sources"] {
        let mut entries: Vec<PathBuf> =
            std::fs::read_dir(root.join(dir)).unwrap().map(|entry| entry.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if !(name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json")) {
                continue;
            }
            files.push((format!("{dir}/{name}"), std::fs::read_to_string(&path).unwrap()));
        }
    }
    files
}

#[test]
fn kubectl_corpus() {
    let mut counts = Counts::default();
    // One process per file: corpus objects keep their own names, so files
    // cannot share a run.
    for (name, text) in corpus_files() {
        let theirs = kubectl_read(std::slice::from_ref(&text)).remove(0);
        let ours = driftwarden_read(&text);
        counts.files += 1;
        match (&theirs, &ours) {
            (Reading::Objects(a), Reading::Objects(b)) if a == b => {
                counts.agreed += 1;
                counts.documents += a.len() as u64;
            }
            (Reading::Refused(a), Reading::Refused(b)) => {
                eprintln!("{name}: refused by both\n  kubectl: {a}\n  driftwarden: {b}");
                counts.refused += 1;
            }
            _ => panic!("{name} read differently\n--- kubectl ---\n{theirs:#?}\n--- driftwarden ---\n{ours:#?}"),
        }
    }
    eprintln!(
        "kubectl corpus: {} files, {} documents agreed in {} files, {} files refused by both",
        counts.files, counts.documents, counts.agreed, counts.refused
    );
}

#[test]
fn kubectl() {
    let seconds = std::env::var("DRIFTWARDEN_FUZZ_SECONDS").ok().map(|s| s.parse::<u64>().expect("whole seconds"));
    let cases = std::env::var("DRIFTWARDEN_FUZZ_CASES").ok().map_or(DEFAULT_CASES, |s| s.parse().expect("a count"));
    let mut seed = std::env::var("DRIFTWARDEN_FUZZ_SEED").ok().map_or_else(
        || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64,
        |s| s.parse().expect("a seed"),
    );
    eprintln!("kubectl target: seed {seed} (DRIFTWARDEN_FUZZ_SEED replays)");
    let started = Instant::now();
    let mut counts = Counts::default();
    let mut reading_refusals = 0u64;
    loop {
        let files: Vec<String> = (0..BATCH).map(|index| generate::file(&mut seed, index)).collect();
        compare(&files, &format!("batch at seed {seed}"), &mut counts);
        reading_refusals +=
            files.iter().filter(|f| matches!(driftwarden_read(f), Reading::Refused(e) if is_reading_error(&e))).count()
                as u64;
        let done = match seconds {
            Some(seconds) => started.elapsed() >= Duration::from_secs(seconds),
            None => counts.files >= cases,
        };
        if done {
            break;
        }
    }
    eprintln!(
        "kubectl target: {} files, {} documents agreed in {} files, {} files refused by both ({reading_refusals} as unreadable), {} with keys kubectl picks from at random, {:.1} s",
        counts.files,
        counts.documents,
        counts.agreed,
        counts.refused,
        counts.ambiguous,
        started.elapsed().as_secs_f64()
    );
    let mut reasons: Vec<_> = counts.reasons.iter().collect();
    reasons.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    for (reason, n) in reasons.iter().take(12) {
        eprintln!("  {n:6} refused: {reason}");
    }
    assert!(
        counts.agreed > counts.files / 3,
        "a third of the generated files or more should be readable: {} of {}",
        counts.agreed,
        counts.files
    );
}

mod generate {
    //! Manifests from a seed: a small xorshift generator, so a seed replays
    //! exactly.

    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }
        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        pub fn chance(&mut self, percent: u64) -> bool {
            self.next() % 100 < percent
        }
        pub fn permille(&mut self, n: u64) -> bool {
            self.next() % 1000 < n
        }
        pub fn pick<'a>(&mut self, pool: &[&'a str]) -> &'a str {
            pool[self.below(pool.len())]
        }
    }

    /// Plain scalars whose reading differs between YAML 1.1 and 1.2, or
    /// between go-yaml and a careless reader.
    const SCALARS: &[&str] = &[
        "0x1F",
        "0X1f",
        "-0x10",
        "+0x10",
        "0o17",
        "0O17",
        "017",
        "-017",
        "08",
        "09",
        "0b101",
        "-0b11",
        "0B11",
        "1_000",
        "1__0",
        "_1",
        "1_",
        "+12",
        "-12",
        "+0",
        "-0",
        "00",
        "000",
        "007",
        "1.0",
        "1.",
        "0.",
        ".5",
        "-.5",
        "+.5",
        "1e3",
        "1E+3",
        "1e-3",
        "1.5e3",
        "1e400",
        "-1e400",
        "6.02e23",
        "1e21",
        "1e20",
        "123456789012345678901",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "-9223372036854775809",
        "18446744073709551615",
        "18446744073709551616",
        "0xFFFFFFFFFFFFFFFF",
        "0x8000000000000000",
        "1_0.5",
        "0x_1F",
        "0_17",
        "1e",
        "e3",
        "+",
        ".",
        "..",
        "+-1",
        "0x",
        "0o",
        "0b",
        "0xG",
        "yes",
        "Yes",
        "YES",
        "yEs",
        "no",
        "No",
        "NO",
        "on",
        "On",
        "ON",
        "off",
        "Off",
        "OFF",
        "y",
        "Y",
        "n",
        "N",
        "true",
        "True",
        "TRUE",
        "tRUE",
        "false",
        "False",
        "FALSE",
        "~",
        "null",
        "Null",
        "NULL",
        "nULL",
        "inf",
        "nan",
        "NaN",
        "Infinity",
        "1:20",
        "190:20:30",
        "-1:20",
        "1:20.5",
        "2001-12-14",
        "2001-12-14t21:59:43.10-05:00",
        "2001-12-14 21:59:43.10 -5",
        "12:30:00",
        "1.2.3",
        "v1",
        "0.1",
        "3.14159",
        "-0.0",
        "80",
        "8080",
        "443",
        "1",
        "0",
        "3",
        "100m",
        "512Mi",
        "1Gi",
        "0.5",
        "http",
        "TCP",
        "<<",
        "=",
        "a b",
        "é",
        "10%",
        "$HOME",
        "-x",
    ];

    /// Rarer: values JSON cannot hold, and text that is not a plain scalar
    /// at all (each ends most documents it is in). Not a tag right before a
    /// `,` in a flow collection (`[!x, y]`): go-yaml v2's older scanner takes
    /// the comma into the tag, libyaml 0.2.5's ends the tag there (and
    /// libyaml-safer panics, which driftwarden turns into a refusal); see
    /// docs/DRIFT.md.
    const NASTY: &[&str] = &[
        ".inf", ".Inf", "-.inf", "+.inf", ".nan", ".NaN", "@x", "`x", "%x", "x: y", "? x", "&x", "*x", "|", ">", "- x",
        "[", "{", "}", "a, b", "-", "x #y",
    ];

    /// Keys, some of which are not strings to a YAML 1.1 reader.
    const KEYS: &[&str] = &[
        "app",
        "tier",
        "version",
        "enabled",
        "port",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "true",
        "0x1F",
        "017",
        "1",
        "1.5",
        "1e3",
        "1e6",
        "0.00001",
        "-1",
        "2001-12-14",
        "1:20",
        "a.b/c",
        "example.com/key",
        "'quoted'",
        "\"0x1F\"",
        "K",
    ];
    const NASTY_KEYS: &[&str] = &["~", "null", "", "18446744073709551615", "[a]", "{a: b}", "? a", "<<", "- a"];

    fn scalar(rng: &mut Rng) -> String {
        let plain = if rng.permille(4) { rng.pick(NASTY) } else { rng.pick(SCALARS) };
        match rng.below(24) {
            0 => format!("'{}'", plain.replace('\'', "''")),
            1 => format!("\"{}\"", plain.replace('\\', "\\\\").replace('"', "\\\"")),
            2 => format!("{} {plain}", rng.pick(&["!!str", "!!int", "!!float", "!!bool", "!!null", "!custom", "!"])),
            _ => plain.to_owned(),
        }
    }

    fn key(rng: &mut Rng) -> String {
        let key = if rng.permille(5) { rng.pick(NASTY_KEYS) } else { rng.pick(KEYS) };
        if rng.chance(5) { format!("'{key}'") } else { key.to_owned() }
    }

    /// A value on a `key: ` line: a scalar, sometimes a flow collection.
    fn inline(rng: &mut Rng) -> String {
        match rng.below(10) {
            0 => format!("[{}, {}]", scalar(rng), scalar(rng)),
            1 => format!("{{{}: {}, {}: {}}}", key(rng), scalar(rng), key(rng), scalar(rng)),
            _ => scalar(rng),
        }
    }

    fn comment(rng: &mut Rng) -> &'static str {
        if rng.chance(10) { rng.pick(&[" # a comment", " #", "  # 0x1F: yes"]) } else { "" }
    }

    /// A block mapping of tricky pairs at `indent`; `text` when the values
    /// must be strings (labels, annotations), where only now and then one is
    /// left plain.
    fn pairs(rng: &mut Rng, indent: &str, text: bool, out: &mut String) {
        for _ in 0..1 + rng.below(4) {
            let key = key(rng);
            let value = if text && !rng.chance(8) {
                format!("'{}'", rng.pick(SCALARS).replace('\'', "''"))
            } else {
                inline(rng)
            };
            let separator = if rng.permille(5) { ":\t" } else { ": " };
            out.push_str(&format!("{indent}{key}{separator}{value}{}\n", comment(rng)));
            if rng.chance(5) {
                out.push_str(&format!("{indent}{key}: '{}'\n", rng.pick(SCALARS))); // a duplicate key
            }
        }
    }

    /// One document, named `c<file>-d<document>`.
    pub fn one_document(rng: &mut Rng, file: usize, document: usize) -> String {
        let mut out = String::new();
        if rng.chance(5) {
            out.push_str("# leading comment\n");
        }
        out.push_str(&format!(
            "apiVersion: fuzz.driftwarden.io/v1\nkind: Fuzz\nmetadata:\n  name: c{file}-d{document}\n"
        ));
        if rng.chance(70) {
            out.push_str("  labels:\n");
            pairs(rng, "    ", true, &mut out);
        }
        if rng.chance(40) {
            out.push_str("  annotations:\n");
            pairs(rng, "    ", true, &mut out);
        }
        let anchored = rng.chance(20);
        if anchored {
            out.push_str(&format!("base: &base\n  shared: {}\n  other: {}\n", scalar(rng), scalar(rng)));
        }
        out.push_str("spec:\n");
        out.push_str(&format!("  replicas: {}{}\n", scalar(rng), comment(rng)));
        if anchored && rng.chance(60) {
            out.push_str("  merged:\n    <<: *base\n");
            if rng.chance(50) {
                out.push_str(&format!("    shared: {}\n", scalar(rng)));
            }
            out.push_str("  copy: *base\n");
        }
        out.push_str("  template:\n    spec:\n      containers:\n");
        for _ in 0..1 + rng.below(2) {
            out.push_str(&format!("      - name: {}\n", scalar(rng)));
            out.push_str(&format!("        image: {}\n", rng.pick(&["nginx:1.27", "app", "registry/x:1.0"])));
            if rng.chance(70) {
                out.push_str("        ports:\n");
                out.push_str(&format!("        - containerPort: {}\n", scalar(rng)));
                out.push_str(&format!("          protocol: {}\n", scalar(rng)));
            }
            if rng.chance(70) {
                out.push_str("        env:\n");
                for _ in 0..1 + rng.below(3) {
                    out.push_str(&format!(
                        "        - name: {}\n          value: {}\n",
                        rng.pick(&["A", "DEBUG", "PORT"]),
                        inline(rng)
                    ));
                }
            }
        }
        if rng.chance(50) {
            out.push_str(&format!("  flags: [{}, {}, {}]\n", scalar(rng), scalar(rng), scalar(rng)));
        }
        if rng.chance(40) {
            out.push_str(&format!(
                "  nested:\n  - [{}, {{{}: {}}}]\n  - - {}\n    - {}\n",
                scalar(rng),
                key(rng),
                scalar(rng),
                scalar(rng),
                scalar(rng)
            ));
        }
        if rng.chance(30) {
            out.push_str(&format!(
                "  text: |\n    {}\n    second line\n  folded: >-\n    {}\n    more\n",
                rng.pick(SCALARS),
                rng.pick(SCALARS)
            ));
        }
        if rng.chance(60) {
            out.push_str("data:\n");
            pairs(rng, "  ", false, &mut out);
        }
        if rng.chance(3) {
            // A tab where indentation is expected.
            out.push_str("\tbroken: indentation\n");
        }
        out
    }

    fn json_document(rng: &mut Rng, file: usize, document: usize) -> String {
        let numbers =
            ["1", "1.0", "1e2", "-0.0", "2.5", "1E3", "0", "9007199254740993", "1e400", "true", "null", "\"0x1F\""];
        format!(
            "{{\"apiVersion\": \"fuzz.driftwarden.io/v1\", \"kind\": \"Fuzz\", \"metadata\": {{\"name\": \"c{file}-d{document}\"}}, \"spec\": {{\"replicas\": {}, \"list\": [{}, {}]}}}}\n",
            rng.pick(&numbers),
            rng.pick(&numbers),
            rng.pick(&numbers)
        )
    }

    /// One file: one to three documents, their separators and the odd
    /// stray line.
    pub fn file(seed: &mut u64, file: usize) -> String {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(file as u64) | 1);
        for _ in 0..4 {
            rng.next();
        }
        *seed = seed.wrapping_add(1);
        if rng.chance(5) {
            return (0..1 + rng.below(2)).map(|d| json_document(&mut rng, file, d)).collect();
        }
        let mut out = String::new();
        if rng.chance(20) {
            out.push_str(rng.pick(&["---\n", "--- # first\n", "# only a comment\n---\n"]));
        }
        let documents = 1 + rng.below(3);
        for document in 0..documents {
            if document > 0 {
                out.push_str(rng.pick(&["---\n", "---\n", "--- # next\n", "---   \n", "---\n---\n", "...\n---\n"]));
            }
            out.push_str(&one_document(&mut rng, file, document));
        }
        if rng.chance(2) {
            out.push_str("--- x\n"); // kubectl allows only a comment after the dashes
        }
        if rng.chance(5) {
            out.push_str(rng.pick(&["...\n", "---\n", "... # end\nstray: [\n"]));
        }
        if rng.chance(5) {
            out = out.replace('\n', "\r\n");
        }
        out
    }
}

/// Both readings of the files named in `DRIFTWARDEN_KUBECTL_FILES`
/// (colon-separated), printed: to see how kubectl reads a manifest.
#[test]
#[ignore = "a tool: set DRIFTWARDEN_KUBECTL_FILES"]
fn kubectl_files() {
    let names = std::env::var("DRIFTWARDEN_KUBECTL_FILES").expect("DRIFTWARDEN_KUBECTL_FILES");
    for name in names.split(':') {
        let text = std::fs::read_to_string(name).unwrap();
        let theirs = kubectl_read(std::slice::from_ref(&text)).remove(0);
        let ours = driftwarden_read(&text);
        eprintln!("{name}\n  kubectl: {theirs:?}\n  driftwarden: {ours:?}");
    }
}
