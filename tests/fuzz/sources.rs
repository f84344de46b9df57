//! Target `sources`: `drift::parse_sources` on arbitrary ConfigMaps: text
//! and binary keys (plain, gzip, broken gzip), almost-valid YAML and JSON,
//! huge fields, deep nesting, revisions that are garbage.
//!
//! Properties: no panic, no stack overflow; the same input gives the same
//! answer whatever order the ConfigMaps come in; a valid parse only holds
//! objects the DesiredState may manage; every error names its ConfigMap and
//! stays short, whatever the input echoes.

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;

use driftwarden::drift::source::validate_revision;
use driftwarden::drift::{
    ParsedSources, REVISION_ANNOTATION, Scope, SourceConfigMap, SourceErrors, SourceScope, parse_sources,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::fuzz;
use crate::values::{TextEdit, json as any_json, mutate, pick, text_edit};

const NAMESPACE: &str = "shop";
const OPERATOR_NAMESPACE: &str = "driftwarden";
/// No error message may be longer than this, whatever the input holds: it
/// ends up in a status condition and an Event.
const MAX_MESSAGE: usize = 4096;

fn resolver(api_version: &str, kind: &str) -> Option<Scope> {
    match (api_version, kind) {
        ("v1", "ConfigMap" | "Secret" | "Service") | ("apps/v1" | "apps/v1beta2", "Deployment") => {
            Some(Scope::Namespaced)
        }
        ("v1", "Namespace") | ("rbac.authorization.k8s.io/v1", "ClusterRole") => Some(Scope::Cluster),
        _ => None,
    }
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).expect("write to memory");
    encoder.finish().expect("finish in memory")
}

/// A string that is sometimes very long (one character repeated).
fn maybe_long(pool: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![
        6 => pick(pool),
        2 => any::<String>(),
        1 => (any::<char>(), 0usize..5_000).prop_map(|(c, n)| c.to_string().repeat(n)),
    ]
}

/// One document: usually an object with identity fields from small pools.
fn document() -> impl Strategy<Value = Value> {
    let object = (
        maybe_long(&[
            "v1",
            "apps/v1",
            "apps/v1beta2",
            "rbac.authorization.k8s.io/v1",
            "example.com/v1",
            "",
            "a/b/c",
            "/v1",
            "v1/",
        ]),
        maybe_long(&["ConfigMap", "Secret", "Deployment", "Service", "ClusterRole", "Namespace", "Widget", ""]),
        maybe_long(&["web", "db", "settings", ""]),
        proptest::option::of(maybe_long(&["shop", "kube-system", "driftwarden", ""])),
        any_json(3),
    )
        .prop_map(|(api_version, kind, name, namespace, extra)| {
            let mut object = json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
            if let Some(namespace) = namespace {
                object["metadata"]["namespace"] = namespace.into();
            }
            if let Value::Object(extra) = extra {
                for (key, value) in extra {
                    object.as_object_mut().expect("an object").entry(key).or_insert(value);
                }
            }
            object
        })
        .boxed();
    prop_oneof![
        6 => object.clone(),
        1 => proptest::collection::vec(object, 0..4)
            .prop_map(|items| json!({"apiVersion": "v1", "kind": "List", "items": items})),
        1 => any_json(4),
    ]
}

/// How a key's documents are written down.
#[derive(Debug, Clone, Copy)]
enum Syntax {
    Yaml,
    Json,
    JsonPretty,
}

fn render(documents: &[Value], syntax: Syntax) -> String {
    documents
        .iter()
        .map(|document| match syntax {
            Syntax::Yaml => format!("---\n{}", serde_yaml_ng::to_string(document).unwrap_or_default()),
            Syntax::Json => serde_json::to_string(document).unwrap_or_default(),
            Syntax::JsonPretty => serde_json::to_string_pretty(document).unwrap_or_default() + "\n",
        })
        .collect()
}

/// Text that nests `depth` levels in one of several ways.
fn nested(style: u8, depth: usize) -> String {
    match style % 5 {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{a: ".repeat(depth), "}".repeat(depth)),
        2 => format!("{}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)),
        3 => (0..depth.min(200)).map(|level| format!("{}- \n", "  ".repeat(level))).collect(),
        _ => format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: deep}}\nspec: {}x{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    }
}

fn syntax() -> impl Strategy<Value = Syntax> {
    prop_oneof![Just(Syntax::Yaml), Just(Syntax::Json), Just(Syntax::JsonPretty)]
}

/// The text of one key.
fn key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => (proptest::collection::vec(document(), 0..4), syntax(), proptest::collection::vec(text_edit(), 0..3))
            .prop_map(|(documents, syntax, edits): (Vec<Value>, Syntax, Vec<TextEdit>)| {
                mutate(render(&documents, syntax), &edits)
            }),
        1 => (any::<u8>(), 1usize..20_000).prop_map(|(style, depth)| nested(style, depth)),
        1 => any::<String>(),
    ]
}

/// The bytes of one binaryData key.
fn binary() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => key_text().prop_map(|text| gzip(text.as_bytes())),
        1 => key_text().prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 0..256),
        1 => proptest::collection::vec(any::<u8>(), 0..256).prop_map(|junk| [&[0x1f, 0x8b][..], &junk].concat()),
        1 => (key_text(), any::<usize>()).prop_map(|(text, cut)| {
            let mut bytes = gzip(text.as_bytes());
            bytes.truncate(cut % (bytes.len() + 1));
            bytes
        }),
        1 => (key_text(), key_text()).prop_map(|(a, b)| [gzip(a.as_bytes()), gzip(b.as_bytes())].concat()),
    ]
}

fn revision() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        3 => Just(None),
        3 => Just(Some("3f2a9c0d1e".to_owned())),
        1 => pick(&["", "main@sha1:3f2a9c0d1e", "v1.2.0", "not a revision; rm -rf /", "line\nbreak"]).prop_map(Some),
        1 => any::<String>().prop_map(Some),
        1 => (0usize..400).prop_map(|n| Some("a".repeat(n))),
    ]
}

fn config_maps() -> impl Strategy<Value = Vec<SourceConfigMap>> {
    let one = (
        proptest::collection::btree_map("[a-z.]{1,8}(\\.yaml|\\.json)?", key_text(), 0..4),
        proptest::collection::btree_map("[a-z]{1,8}\\.gz", binary(), 0..3),
        revision(),
    );
    proptest::collection::vec(one, 0..4).prop_map(|maps| {
        maps.into_iter()
            .enumerate()
            .map(|(index, (data, binary_data, revision))| SourceConfigMap {
                name: format!("source-{index}"),
                data,
                binary_data,
                annotations: revision.into_iter().map(|r| (REVISION_ANNOTATION.to_owned(), r)).collect(),
                ..SourceConfigMap::default()
            })
            .collect()
    })
}

fn parse(config_maps: &[SourceConfigMap], privileged: bool) -> Result<ParsedSources, SourceErrors> {
    let namespace = if privileged { OPERATOR_NAMESPACE } else { NAMESPACE };
    let scope = SourceScope { namespace, operator_namespace: OPERATOR_NAMESPACE };
    parse_sources(config_maps, &scope, &resolver)
}

/// What must hold of any parse.
pub fn check(config_maps: &[SourceConfigMap], privileged: bool) -> Result<(), TestCaseError> {
    let result = parse(config_maps, privileged);
    let mut reversed = config_maps.to_vec();
    reversed.reverse();
    prop_assert_eq!(&parse(&reversed, privileged), &result, "the order of the ConfigMaps changed the answer");
    match result {
        Ok(parsed) => {
            let mut identities = HashSet::new();
            for declared in &parsed.objects {
                let key = &declared.key;
                prop_assert!(!key.kind.is_empty() && !key.name.is_empty() && !key.version.is_empty(), "{key:?}");
                prop_assert_eq!(declared.object.pointer("/metadata/name").and_then(Value::as_str), Some(&*key.name));
                prop_assert_eq!(
                    declared.object.pointer("/metadata/namespace").and_then(Value::as_str),
                    key.namespace.as_deref()
                );
                if !privileged {
                    prop_assert_eq!(key.namespace.as_deref(), Some(NAMESPACE), "{} escaped its namespace", key);
                }
                prop_assert!(identities.insert((&key.group, &key.kind, &key.namespace, &key.name)), "{key} twice");
            }
            if let Some(revision) = &parsed.revision {
                prop_assert!(validate_revision(revision).is_ok(), "accepted revision {revision:?}");
            }
        }
        Err(errors) => {
            prop_assert!(!errors.0.is_empty(), "an error without a reason");
            for error in &errors.0 {
                let message = error.to_string();
                prop_assert!(
                    message.len() <= MAX_MESSAGE,
                    "an error message of {} bytes: {}...",
                    message.len(),
                    &message[..message.char_indices().nth(300).map_or(message.len(), |(i, _)| i)]
                );
                prop_assert!(message.contains("configmap"), "the message names no ConfigMap: {message}");
            }
        }
    }
    Ok(())
}

#[test]
fn sources() {
    fuzz("sources", 600, (config_maps(), any::<bool>()), |(config_maps, privileged)| check(&config_maps, privileged));
}

/// The hand-made corpus, each file as a data key and as a gzip binary key.
#[test]
fn sources_corpus() {
    let dir = crate::corpus_dir().join("sources");
    let mut files: Vec<_> = std::fs::read_dir(&dir).expect("the corpus directory").flatten().collect();
    files.sort_by_key(std::fs::DirEntry::path);
    assert!(!files.is_empty());
    for file in files {
        let name = file.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(file.path()).expect("a corpus file");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let config_maps = vec![
            SourceConfigMap {
                name: "as-text".into(),
                data: BTreeMap::from([(name.clone(), text)]),
                ..Default::default()
            },
            SourceConfigMap {
                name: "as-gzip".into(),
                binary_data: BTreeMap::from([(name.clone(), gzip(&bytes))]),
                ..Default::default()
            },
        ];
        for config_map in &config_maps {
            for privileged in [false, true] {
                if let Err(error) = check(std::slice::from_ref(config_map), privileged) {
                    panic!("corpus file {name} in {}: {error}", config_map.name);
                }
            }
        }
    }
}

// ---------------------------------------------------------------- findings
// What this target found, kept as plain tests (docs/RELIABILITY.md).

fn one_key(key: &str, text: String) -> Vec<SourceConfigMap> {
    vec![SourceConfigMap { name: "src".into(), data: BTreeMap::from([(key.to_owned(), text)]), ..Default::default() }]
}

fn only_error(config_maps: &[SourceConfigMap]) -> String {
    match parse(config_maps, false) {
        Ok(parsed) => panic!("parsed {} objects", parsed.objects.len()),
        Err(errors) => {
            assert_eq!(errors.0.len(), 1, "{errors}");
            errors.0[0].to_string()
        }
    }
}

/// Errors quoted the apiVersion, kind, name or namespace whole: a source
/// with a megabyte-long kind made a megabyte-long condition message, and a
/// gzip key (up to 8 MiB) one too large for the API server to store.
#[test]
fn identity_fields_longer_than_kubernetes_allows_are_refused_in_a_short_message() {
    let long = "x".repeat(1 << 20);
    let documents = [
        (
            format!("apiVersion: {long}\nkind: ConfigMap\nmetadata: {{name: a}}\n"),
            "apiVersion is 1048576 bytes long (at most 317)",
        ),
        (format!("apiVersion: v1\nkind: {long}\nmetadata: {{name: a}}\n"), "kind is 1048576 bytes long (at most 63)"),
        (
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {long}}}\n"),
            "metadata.name is 1048576 bytes long (at most 253)",
        ),
        (
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a, namespace: {long}}}\n"),
            "metadata.namespace is 1048576 bytes long (at most 63)",
        ),
    ];
    for (document, expected) in documents {
        let message = only_error(&one_key("big.yaml", document));
        assert!(message.ends_with(expected), "{message}");
        assert!(message.len() < 200, "{message}");
    }
}

/// The YAML parser spends microseconds per character on deep flow nesting
/// (`[[[[...`): a 1 MiB source took ~6 s to refuse in a release build and
/// ~30 s in a debug one, on the operator's reconcile thread. The nesting is
/// now refused by a linear scan first.
#[test]
fn deep_flow_nesting_is_refused_before_the_yaml_parser_runs() {
    let fine = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
    let text = format!("# two fine documents first\n---\n{fine}---\n{fine}---\nspec: {}\n", "[".repeat(1 << 20));
    let started = std::time::Instant::now();
    let message = only_error(&one_key("deep.yaml", text));
    assert_eq!(message, "configmap src key deep.yaml document 2: nested deeper than 100 levels");
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "took {:?}", started.elapsed());
    // Nesting within the limit still parses.
    let shallow =
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\nx: {}{}\n", "[".repeat(90), "]".repeat(90));
    assert!(parse(&one_key("ok.yaml", shallow), false).is_ok());
}

/// Each gzip key may expand to 8 MiB, and nothing bounded their sum: a 1 MiB
/// ConfigMap of ~120 such keys expanded to ~1 GiB at once. Now all keys of
/// one set of sources share a 64 MiB budget.
#[test]
fn gzip_keys_share_one_expansion_budget() {
    // Not UTF-8, so each key is refused right after it expands.
    let bomb = gzip(&vec![0xff; 8 << 20]);
    let keys: BTreeMap<String, Vec<u8>> = (0..9).map(|i| (format!("k{i}"), bomb.clone())).collect();
    let config_maps = [SourceConfigMap { name: "src".into(), binary_data: keys, ..Default::default() }];
    let errors = match parse(&config_maps, false) {
        Ok(_) => panic!("binary junk parsed"),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
    };
    assert_eq!(errors.len(), 9, "{errors:#?}");
    assert!(errors[..8].iter().all(|e| e.ends_with("not UTF-8 text (invalid byte at offset 0)")), "{errors:#?}");
    assert_eq!(
        errors[8],
        "configmap src key k8: all gzip data of these sources together expands beyond 67108864 bytes"
    );
}
