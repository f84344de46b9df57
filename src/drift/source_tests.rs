//! Table tests for source parsing.

use std::io::Write as _;

use serde_json::json;

use super::*;
use crate::drift::test_support::resolver;

const NAMESPACE: &str = "shop";
const OPERATOR: &str = "driftwarden-system";

fn config_map(name: &str, entries: &[(&str, &str)]) -> SourceConfigMap {
    SourceConfigMap {
        name: name.into(),
        data: entries.iter().map(|(key, text)| ((*key).into(), (*text).into())).collect(),
        ..SourceConfigMap::default()
    }
}

fn with_revision(mut config_map: SourceConfigMap, revision: &str) -> SourceConfigMap {
    config_map.annotations.insert(REVISION_ANNOTATION.into(), revision.into());
    config_map
}

fn gzip(text: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(text).expect("write to memory");
    encoder.finish().expect("finish in memory")
}

fn parse_in(namespace: &str, sources: &[SourceConfigMap]) -> Result<ParsedSources, SourceErrors> {
    parse_sources(sources, &SourceScope { namespace, operator_namespace: OPERATOR }, &resolver)
}

fn parse(sources: &[SourceConfigMap]) -> Result<ParsedSources, SourceErrors> {
    parse_in(NAMESPACE, sources)
}

fn messages(result: Result<ParsedSources, SourceErrors>) -> Vec<String> {
    match result {
        Ok(parsed) => panic!("expected errors, parsed {} objects", parsed.objects.len()),
        Err(errors) => errors.0.iter().map(ToString::to_string).collect(),
    }
}

fn names(parsed: &ParsedSources) -> Vec<String> {
    parsed.objects.iter().map(|object| object.key.to_string()).collect()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n";
const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n";

#[test]
fn valid_sources_declare_their_objects() {
    let multi_doc = format!("---\n{DEPLOYMENT}---\n{SERVICE}");
    let list = r#"{"apiVersion":"v1","kind":"List","items":[
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}},
        {"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"b","namespace":"shop"}}]}"#;
    let cases: Vec<(&str, Vec<SourceConfigMap>, Vec<&str>)> = vec![
        ("empty source", vec![], vec![]),
        ("empty configmap", vec![config_map("state", &[])], vec![]),
        ("empty documents", vec![config_map("state", &[("a.yaml", "---\n---\n# only a comment\n")])], vec![]),
        (
            "multi-document YAML",
            vec![config_map("state", &[("app.yaml", &multi_doc)])],
            vec!["apps/Deployment shop/web", "core/Service shop/web"],
        ),
        (
            "JSON",
            vec![config_map(
                "state",
                &[("svc.json", r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"}}"#)],
            )],
            vec!["core/Service shop/x"],
        ),
        (
            "JSON indented with tabs",
            vec![config_map(
                "state",
                &[(
                    "svc.json",
                    "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"Service\",\n\t\"metadata\": {\"name\": \"t\"}\n}",
                )],
            )],
            vec!["core/Service shop/t"],
        ),
        (
            "kind List",
            vec![config_map("state", &[("list.json", list)])],
            vec!["core/ConfigMap shop/a", "core/ConfigMap shop/b"],
        ),
        ("empty List", vec![config_map("state", &[("l.yaml", "apiVersion: v1\nkind: List\nitems: []\n")])], vec![]),
        (
            "several configmaps, read in name order",
            vec![config_map("state-b", &[("svc.yaml", SERVICE)]), config_map("state-a", &[("app.yaml", DEPLOYMENT)])],
            vec!["apps/Deployment shop/web", "core/Service shop/web"],
        ),
        (
            "same name, different kinds",
            vec![config_map("state", &[("a.yaml", DEPLOYMENT), ("b.yaml", SERVICE)])],
            vec!["apps/Deployment shop/web", "core/Service shop/web"],
        ),
    ];
    for (name, sources, expected) in cases {
        let parsed = parse(&sources).unwrap_or_else(|errors| panic!("{name}: {errors}"));
        assert_eq!(names(&parsed), expected, "{name}");
        assert_eq!(parsed.revision, None, "{name}");
    }
}

#[test]
fn gzip_binary_data_is_decompressed() {
    let mut source = config_map("state", &[]);
    source.binary_data.insert("app.yaml.gz".into(), gzip(DEPLOYMENT.as_bytes()));
    source.binary_data.insert("svc.yaml".into(), SERVICE.as_bytes().to_vec());
    let parsed = parse(&[source]).expect("valid");
    assert_eq!(names(&parsed), ["apps/Deployment shop/web", "core/Service shop/web"]);
    assert_eq!(parsed.objects[0].origin.key, "app.yaml.gz");
}

#[test]
fn namespaces_are_defaulted_and_cluster_objects_have_none() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns\n  namespace: ignored\n";
    let parsed = parse_in(OPERATOR, &[config_map("state", &[("ns.yaml", text), ("app.yaml", DEPLOYMENT)])])
        .expect("the operator namespace may declare cluster objects");
    let deployment = &parsed.objects[0];
    assert_eq!(deployment.key.namespace.as_deref(), Some(OPERATOR));
    assert_eq!(deployment.object.pointer("/metadata/namespace"), Some(&json!(OPERATOR)));
    assert_eq!((deployment.key.group.as_str(), deployment.key.version.as_str()), ("apps", "v1"));
    let namespace = &parsed.objects[1];
    assert_eq!(namespace.key.namespace, None);
    assert_eq!(namespace.object.pointer("/metadata/namespace"), None);
    assert_eq!(namespace.key.object_ref().api_version, "v1");
    assert_eq!(namespace.origin, Origin { config_map: "state".into(), key: "ns.yaml".into(), document: 0, item: None });
}

#[test]
fn invalid_documents_are_reported_with_their_place() {
    let deep = format!("{}1{}", "[".repeat(150), "]".repeat(150));
    let deep_yaml = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: deep\ndata: {}x{}\n",
        "[".repeat(101),
        "]".repeat(101)
    );
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "missing name",
            "apiVersion: v1\nkind: Service\nmetadata: {}\n",
            "configmap state key k document 0: missing metadata.name",
        ),
        (
            "missing metadata",
            "apiVersion: v1\nkind: Service\n",
            "configmap state key k document 0: missing metadata.name",
        ),
        (
            "empty name",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: ''\n",
            "configmap state key k document 0: missing metadata.name",
        ),
        (
            "missing apiVersion",
            "kind: Service\nmetadata:\n  name: x\n",
            "configmap state key k document 0: missing apiVersion",
        ),
        ("missing kind", "apiVersion: v1\nmetadata:\n  name: x\n", "configmap state key k document 0: missing kind"),
        (
            "kind not a string",
            "apiVersion: v1\nkind: 3\nmetadata:\n  name: x\n",
            "configmap state key k document 0: kind must be a string",
        ),
        (
            "name not a string",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: [x]\n",
            "configmap state key k document 0: metadata.name must be a string",
        ),
        (
            "bad apiVersion",
            "apiVersion: a/b/c\nkind: Service\nmetadata:\n  name: x\n",
            "configmap state key k document 0: invalid apiVersion \"a/b/c\"",
        ),
        (
            "empty group",
            "apiVersion: /v1\nkind: Service\nmetadata:\n  name: x\n",
            "configmap state key k document 0: invalid apiVersion \"/v1\"",
        ),
        (
            "not a mapping",
            "- a\n- b\n",
            "configmap state key k document 0: expected an object (a mapping), found a list",
        ),
        ("a scalar", "hello\n", "configmap state key k document 0: expected an object (a mapping), found a string"),
        (
            "third document",
            "---\nkind: Service\napiVersion: v1\nmetadata: {name: a}\n---\n\n---\nkind: Service\napiVersion: v1\nmetadata: {}\n",
            "configmap state key k document 2: missing metadata.name",
        ),
        (
            "unknown kind",
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: x\n",
            "configmap state key k document 0: unknown kind Widget in example.com/v1 (not served by the API server)",
        ),
        (
            "other namespace",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: x\n  namespace: payments\n",
            "configmap state key k document 0: core/Service payments/x is outside namespace shop; only a DesiredState in namespace driftwarden-system may manage other namespaces",
        ),
        (
            "cluster-scoped",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: admin2\n",
            "configmap state key k document 0: rbac.authorization.k8s.io/ClusterRole admin2 is cluster-scoped; only a DesiredState in namespace driftwarden-system may manage cluster-scoped objects",
        ),
        (
            "List item",
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n",
            "configmap state key k document 0 item 1: missing metadata.name",
        ),
        (
            "List items not a list",
            "apiVersion: v1\nkind: List\nitems: 3\n",
            "configmap state key k document 0: items must be a list",
        ),
        // Refused before the YAML parser runs (its cost grows with the nesting).
        ("deep JSON", &deep, "configmap state key k document 0: nested deeper than 100 levels"),
        ("101 levels", &deep_yaml, "configmap state key k document 0: nested deeper than 100 levels"),
    ];
    for (name, text, expected) in cases {
        let errors = messages(parse(&[config_map("state", &[("k", text)])]));
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert!(errors[0].starts_with(expected), "{name}: {} does not start with {expected}", errors[0]);
    }
}

#[test]
fn malformed_yaml_is_an_error_with_its_document() {
    let text = format!("{DEPLOYMENT}---\nkey: [unclosed\n");
    let errors = messages(parse(&[config_map("state", &[("app.yaml", &text)])]));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("configmap state key app.yaml document 1: invalid YAML"), "{}", errors[0]);
}

#[test]
fn every_error_is_collected() {
    let sources = [
        config_map("a", &[("one.yaml", "apiVersion: v1\nkind: Service\nmetadata: {}\n"), ("two.yaml", DEPLOYMENT)]),
        config_map(
            "b",
            &[("three.yaml", &format!("{DEPLOYMENT}---\nkind: Widget\napiVersion: x/v1\nmetadata: {{name: w}}\n"))],
        ),
    ];
    let errors = messages(parse(&sources));
    assert_eq!(
        errors,
        [
            "configmap a key one.yaml document 0: missing metadata.name",
            "configmap b key three.yaml document 1: unknown kind Widget in x/v1 (not served by the API server)",
            "configmap b key three.yaml document 0: apps/Deployment shop/web is declared twice (first in configmap a key two.yaml document 0)",
        ]
    );
}

#[test]
fn duplicates_are_rejected_across_versions_and_namespacing() {
    let explicit = "apiVersion: apps/v1beta2\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n";
    let errors = messages(parse(&[config_map("state", &[("a.yaml", DEPLOYMENT), ("b.yaml", explicit)])]));
    assert_eq!(
        errors,
        [
            "configmap state key b.yaml document 0: apps/Deployment shop/web is declared twice (first in configmap state key a.yaml document 0)"
        ]
    );
}

#[test]
fn binary_junk_is_an_error_not_a_panic() {
    let mut huge = Vec::new();
    {
        let mut encoder = flate2::write::GzEncoder::new(&mut huge, flate2::Compression::best());
        let zeros = vec![0u8; 1024 * 1024];
        for _ in 0..9 {
            encoder.write_all(&zeros).expect("write to memory");
        }
        encoder.finish().expect("finish in memory");
    }
    let mut truncated = gzip(DEPLOYMENT.as_bytes());
    truncated.truncate(truncated.len() / 2);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8",
            vec![b'a', 0xff, 0xfe, b'b'],
            "configmap state key k: not UTF-8 text (invalid byte at offset 1)",
        ),
        ("zip bomb", huge, "configmap state key k: gzip data expands beyond 8388608 bytes"),
        ("truncated gzip", truncated, "configmap state key k: invalid gzip data"),
        ("gzip of junk", gzip(&[0xc3, 0x28]), "configmap state key k: not UTF-8 text (invalid byte at offset 0)"),
        ("control characters", vec![0x00, 0x01, 0x02, b'\n'], "configmap state key k document 0: invalid YAML"),
    ];
    for (name, bytes, expected) in cases {
        let mut source = config_map("state", &[]);
        source.binary_data.insert("k".into(), bytes);
        let errors = messages(parse(&[source]));
        assert_eq!(errors.len(), 1, "{name}: {errors:?}");
        assert!(errors[0].starts_with(expected), "{name}: {}", errors[0]);
    }
}

#[test]
fn revisions_must_agree_and_look_like_git() {
    let sha = "3f2a9c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1";
    let state = || config_map("a", &[("app.yaml", DEPLOYMENT)]);
    let other = || config_map("b", &[("svc.yaml", SERVICE)]);
    let ok_cases: Vec<(Vec<SourceConfigMap>, Option<&str>)> = vec![
        (vec![state(), other()], None),
        (vec![with_revision(state(), sha), with_revision(other(), sha)], Some(sha)),
        (vec![with_revision(state(), "v1.2.3")], Some("v1.2.3")),
        (vec![with_revision(state(), "main@sha1:3f2a9c1d")], Some("main@sha1:3f2a9c1d")),
    ];
    for (sources, expected) in ok_cases {
        assert_eq!(parse(&sources).expect("valid").revision.as_deref(), expected);
    }
    let long = "a".repeat(300);
    let error_cases: Vec<(Vec<SourceConfigMap>, &str)> = vec![
        (
            vec![with_revision(state(), sha), with_revision(other(), "0000000")],
            "configmaps disagree on driftwarden.io/revision: a has \"3f2a9c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1\", b has \"0000000\"",
        ),
        (
            vec![with_revision(state(), sha), other()],
            "configmaps disagree on driftwarden.io/revision: a has \"3f2a9c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1\", b has none",
        ),
        (
            vec![with_revision(state(), "abc\u{7}def")],
            "configmap a annotation driftwarden.io/revision: character '\\u{7}' at byte 3 is not allowed in a revision (a git commit id or ref)",
        ),
        (
            vec![with_revision(state(), "main branch")],
            "configmap a annotation driftwarden.io/revision: character ' ' at byte 4 is not allowed in a revision (a git commit id or ref)",
        ),
        (vec![with_revision(state(), "")], "configmap a annotation driftwarden.io/revision: empty revision"),
        (
            vec![with_revision(state(), &long)],
            "configmap a annotation driftwarden.io/revision: revision is 300 bytes long (at most 255)",
        ),
    ];
    for (sources, expected) in error_cases {
        assert_eq!(messages(parse(&sources)), [expected]);
    }
}

#[test]
fn configmaps_are_read_from_json() {
    let value = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "state", "annotations": {REVISION_ANNOTATION: "abc1234"}},
        "data": {"app.yaml": DEPLOYMENT},
        "binaryData": {"svc.yaml.gz": base64::engine::general_purpose::STANDARD.encode(gzip(SERVICE.as_bytes()))},
    });
    let source = SourceConfigMap::from_value(&value).expect("valid configmap");
    let parsed = parse(&[source]).expect("valid");
    assert_eq!(names(&parsed), ["apps/Deployment shop/web", "core/Service shop/web"]);
    assert_eq!(parsed.revision.as_deref(), Some("abc1234"));

    let cases = [
        (json!({"metadata": {}}), "configmap : missing metadata.name"),
        (json!({"metadata": {"name": "s"}, "data": {"k": 1}}), "configmap s: data key k is not a string"),
        (json!({"metadata": {"name": "s"}, "binaryData": {"k": "!!"}}), "configmap s: binaryData key k is not base64"),
    ];
    for (value, expected) in cases {
        assert_eq!(SourceConfigMap::from_value(&value).map_err(|e| e.to_string()), Err(expected.to_owned()));
    }
}

#[test]
fn typed_configmaps_convert() {
    let mut typed = k8s_openapi::api::core::v1::ConfigMap::default();
    typed.metadata.name = Some("state".into());
    typed.data = Some([("app.yaml".to_owned(), DEPLOYMENT.to_owned())].into());
    typed.binary_data = Some([("svc.gz".to_owned(), k8s_openapi::ByteString(gzip(SERVICE.as_bytes())))].into());
    let parsed = parse(&[SourceConfigMap::from_config_map(&typed)]).expect("valid");
    assert_eq!(names(&parsed), ["apps/Deployment shop/web", "core/Service shop/web"]);
}
