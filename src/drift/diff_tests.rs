//! Table tests for the diff: one realistic Deployment (created by `kubectl
//! apply`, so its managedFields are real fieldsV1) and the edit classes that
//! must, or must not, count as drift.

use serde_json::{Value, json};

use super::*;
use ChangeKind::{Added, Changed, ObjectMissing, Removed};

fn declared_deployment() -> Value {
    serde_yaml_ng::from_str(include_str!("testdata/deployment-declared.yaml")).expect("valid fixture")
}

fn live_deployment() -> Value {
    serde_json::from_str(include_str!("testdata/deployment-live.json")).expect("valid fixture")
}

/// Adds a managedFields entry, as the API server does for a write.
fn managed_by(live: &mut Value, manager: &str, subresource: Option<&str>, fields: Value) {
    let mut entry = json!({
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "fieldsV1": fields,
        "manager": manager, "operation": "Update", "time": "2025-05-02T09:00:00Z",
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    live["metadata"]["managedFields"].as_array_mut().expect("managedFields").push(entry);
}

fn set(live: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    let key = key.replace("~1", "/").replace("~0", "~");
    let parent = live.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent}"));
    match parent {
        Value::Array(items) => match key.parse::<usize>() {
            Ok(index) if index < items.len() => items[index] = value,
            _ => items.push(value),
        },
        Value::Object(map) => {
            map.insert(key, value);
        }
        _ => panic!("{pointer} is not in a container"),
    }
}

fn remove(live: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("a pointer");
    match live.pointer_mut(parent) {
        Some(Value::Array(items)) => {
            items.remove(key.parse::<usize>().expect("an index"));
        }
        Some(Value::Object(map)) => {
            map.remove(key);
        }
        _ => panic!("no {parent}"),
    }
}

fn container_fields(fields: Value) -> Value {
    json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"web\"}": fields}}}}})
}

fn changes(diff: &ObjectDiff) -> Vec<(String, ChangeKind)> {
    diff.changes.iter().map(|change| (change.path.clone(), change.kind)).collect()
}

fn expect(changes: &[(&str, ChangeKind)]) -> Vec<(String, ChangeKind)> {
    changes.iter().map(|(path, kind)| ((*path).to_owned(), *kind)).collect()
}

fn hpa_rule(pointers: &[&str], managers: &[&str]) -> IgnoreRule {
    IgnoreRule {
        json_pointers: pointers.iter().map(|p| (*p).to_owned()).collect(),
        field_managers: managers.iter().map(|m| (*m).to_owned()).collect(),
        kind: Some("Deployment".into()),
        name: None,
    }
}

type Edit = fn(&mut Value);
type Expected = Vec<(&'static str, ChangeKind)>;

#[test]
fn deployment_edits_are_classified() {
    let cases: Vec<(&str, Edit, Vec<IgnoreRule>, Expected)> = vec![
        ("untouched (server defaults, quantities, status, metadata)", |_| {}, vec![], vec![]),
        (
            "field replaced by kubectl edit",
            |live| {
                set(live, "/spec/template/spec/containers/0/env/0/value", json!("debug"));
                managed_by(
                    live,
                    "kubectl-edit",
                    None,
                    container_fields(json!({"f:env": {"k:{\"name\":\"MODE\"}": {"f:value": {}}}})),
                );
            },
            vec![],
            vec![("/spec/template/spec/containers/0/env/0/value", Changed)],
        ),
        (
            "replicas scaled by kubectl scale",
            |live| {
                set(live, "/spec/replicas", json!(5));
                managed_by(live, "kubectl", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
            },
            vec![],
            vec![("/spec/replicas", Changed)],
        ),
        (
            "image changed by kubectl set image",
            |live| {
                set(live, "/spec/template/spec/containers/0/image", json!("nginx:1.28"));
                managed_by(live, "kubectl-set", None, container_fields(json!({"f:image": {}})));
            },
            vec![],
            vec![("/spec/template/spec/containers/0/image", Changed)],
        ),
        (
            "quantity changed",
            |live| set(live, "/spec/template/spec/containers/0/resources/limits/memory", json!("512Mi")),
            vec![],
            vec![("/spec/template/spec/containers/0/resources/limits/memory", Changed)],
        ),
        (
            "label added by kubectl label",
            |live| {
                set(live, "/metadata/labels/owner", json!("mallory"));
                managed_by(live, "kubectl-label", None, json!({"f:metadata": {"f:labels": {"f:owner": {}}}}));
            },
            vec![],
            vec![("/metadata/labels/owner", Added)],
        ),
        (
            "label removed by kubectl label",
            |live| {
                remove(live, "/metadata/labels/tier");
            },
            vec![],
            vec![("/metadata/labels/tier", Removed)],
        ),
        (
            "annotation added by kubectl annotate",
            |live| {
                set(live, "/metadata/annotations/note~1why", json!("hotfix"));
                managed_by(
                    live,
                    "kubectl-annotate",
                    None,
                    json!({"f:metadata": {"f:annotations": {"f:note/why": {}}}}),
                );
            },
            vec![],
            vec![("/metadata/annotations/note~1why", Added)],
        ),
        (
            "privileged added by kubectl edit",
            |live| {
                set(live, "/spec/template/spec/containers/0/securityContext", json!({"privileged": true}));
                managed_by(
                    live,
                    "kubectl-edit",
                    None,
                    container_fields(json!({"f:securityContext": {".": {}, "f:privileged": {}}})),
                );
            },
            vec![],
            vec![("/spec/template/spec/containers/0/securityContext/privileged", Added)],
        ),
        (
            "container added by kubectl edit, with its defaults",
            |live| {
                set(
                    live,
                    "/spec/template/spec/containers/1",
                    json!({
                        "name": "miner", "image": "evil:latest", "imagePullPolicy": "Always",
                        "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File", "resources": {},
                    }),
                );
                managed_by(
                    live,
                    "kubectl-edit",
                    None,
                    json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"miner\"}": {".": {}, "f:image": {}, "f:imagePullPolicy": {}, "f:name": {},
                        "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}}}}}}}),
                );
            },
            vec![],
            vec![("/spec/template/spec/containers/1", Added)],
        ),
        (
            "env var added by kubectl set env",
            |live| {
                set(live, "/spec/template/spec/containers/0/env/2", json!({"name": "DEBUG", "value": "1"}));
                managed_by(
                    live,
                    "kubectl-set",
                    None,
                    container_fields(
                        json!({"f:env": {"k:{\"name\":\"DEBUG\"}": {".": {}, "f:name": {}, "f:value": {}}}}),
                    ),
                );
            },
            vec![],
            vec![("/spec/template/spec/containers/0/env/2", Added)],
        ),
        (
            "container port removed",
            |live| remove(live, "/spec/template/spec/containers/0/ports/0"),
            vec![],
            vec![("/spec/template/spec/containers/0/ports/0", Removed)],
        ),
        (
            "argument appended (atomic list)",
            |live| set(live, "/spec/template/spec/containers/0/args/2", json!("--debug")),
            vec![],
            vec![("/spec/template/spec/containers/0/args/2", Added)],
        ),
        (
            "the deployment controller's revision annotation is not drift",
            |live| {
                set(live, "/metadata/annotations/deployment.kubernetes.io~1revision", json!("2"));
            },
            vec![],
            vec![],
        ),
        (
            "a label under the controller manager's name is drift: a name proves nothing",
            |live| {
                set(live, "/metadata/labels/pod-template-hash", json!("abc"));
                managed_by(
                    live,
                    "kube-controller-manager",
                    None,
                    json!({"f:metadata": {"f:labels": {"f:pod-template-hash": {}}}}),
                );
            },
            vec![],
            vec![("/metadata/labels/pod-template-hash", Added)],
        ),
        (
            "privileged under the controller manager's name is drift",
            |live| {
                set(live, "/spec/template/spec/containers/0/securityContext", json!({"privileged": true}));
                managed_by(
                    live,
                    "kube-controller-manager",
                    None,
                    container_fields(json!({"f:securityContext": {".": {}, "f:privileged": {}}})),
                );
            },
            vec![],
            vec![("/spec/template/spec/containers/0/securityContext/privileged", Added)],
        ),
        (
            "a label added by plain kubectl apply is drift",
            |live| {
                set(live, "/metadata/labels/owner", json!("mallory"));
                managed_by(
                    live,
                    "kubectl-client-side-apply",
                    None,
                    json!({"f:metadata": {"f:labels": {"f:owner": {}}}}),
                );
            },
            vec![],
            vec![("/metadata/labels/owner", Added)],
        ),
        (
            "a label Helm adds is drift without the chart's ignore rule",
            |live| {
                set(live, "/metadata/labels/helm.sh~1chart", json!("web-1.0"));
                managed_by(live, "helm", None, json!({"f:metadata": {"f:labels": {"f:helm.sh/chart": {}}}}));
            },
            vec![],
            vec![("/metadata/labels/helm.sh~1chart", Added)],
        ),
        (
            "a label Helm adds is not drift under an ignore rule for it",
            |live| {
                set(live, "/metadata/labels/helm.sh~1chart", json!("web-1.0"));
                managed_by(live, "helm", None, json!({"f:metadata": {"f:labels": {"f:helm.sh/chart": {}}}}));
            },
            with_global_ignore(&[], &["/metadata/labels/helm.sh~1chart".to_owned()]),
            vec![],
        ),
        (
            "ownership reset (managedFields cleared): the defaults are still not drift",
            |live| {
                live["metadata"]["managedFields"] = json!([]);
            },
            vec![],
            vec![],
        ),
        (
            "ownership reset hides nothing: a field nobody owns is drift unless it is a default",
            |live| {
                set(live, "/spec/template/spec/containers/0/securityContext", json!({"privileged": true}));
                live["metadata"]["managedFields"] = json!([]);
            },
            vec![],
            vec![("/spec/template/spec/containers/0/securityContext/privileged", Added)],
        ),
        (
            "a default field nobody owns is not drift",
            |live| {
                remove(live, "/metadata/managedFields/0");
                set(live, "/spec/template/spec/containers/0/readinessProbe/timeoutSeconds", json!(1));
            },
            vec![],
            vec![],
        ),
        (
            "an empty map nobody declared is drift (a revert leaves none behind)",
            |live| set(live, "/spec/template/spec/containers/0/securityContext", json!({})),
            vec![],
            vec![("/spec/template/spec/containers/0/securityContext", Added)],
        ),
        (
            "an empty list nobody declared adds nothing",
            |live| set(live, "/spec/template/spec/containers/0/command", json!([])),
            vec![],
            vec![],
        ),
        (
            "a default-named field at another value is drift",
            |live| set(live, "/spec/progressDeadlineSeconds", json!(60)),
            vec![],
            vec![("/spec/progressDeadlineSeconds", Added)],
        ),
        (
            "HPA-owned replicas, not ignored",
            |live| {
                set(live, "/spec/replicas", json!(7));
                managed_by(live, "horizontal-pod-autoscaler", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
            },
            vec![],
            vec![("/spec/replicas", Changed)],
        ),
        (
            "HPA-owned replicas ignored by rule with pointer and manager",
            |live| {
                set(live, "/spec/replicas", json!(7));
                managed_by(live, "horizontal-pod-autoscaler", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
            },
            vec![hpa_rule(&["/spec/replicas"], &["horizontal-pod-autoscaler"])],
            vec![],
        ),
        (
            "HPA-owned replicas ignored by a manager-only rule",
            |live| {
                set(live, "/spec/replicas", json!(7));
                managed_by(live, "horizontal-pod-autoscaler", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
            },
            vec![hpa_rule(&[], &["horizontal-pod-autoscaler"])],
            vec![],
        ),
        (
            "replicas scaled by someone else despite the HPA rule",
            |live| {
                set(live, "/spec/replicas", json!(7));
                managed_by(live, "kubectl", Some("scale"), json!({"f:spec": {"f:replicas": {}}}));
            },
            vec![hpa_rule(&["/spec/replicas"], &["horizontal-pod-autoscaler"])],
            vec![("/spec/replicas", Changed)],
        ),
        (
            "pointer rule with a wildcard",
            |live| set(live, "/spec/template/spec/containers/0/image", json!("nginx:1.28")),
            vec![hpa_rule(&["/spec/template/spec/containers/*/image"], &[])],
            vec![],
        ),
        (
            "rule for another kind does not apply",
            |live| set(live, "/spec/replicas", json!(3)),
            vec![IgnoreRule { kind: Some("StatefulSet".into()), ..hpa_rule(&["/spec/replicas"], &[]) }],
            vec![("/spec/replicas", Changed)],
        ),
        (
            "rule for another name does not apply",
            |live| set(live, "/spec/replicas", json!(3)),
            vec![IgnoreRule { name: Some("api".into()), ..hpa_rule(&["/spec/replicas"], &[]) }],
            vec![("/spec/replicas", Changed)],
        ),
        (
            "additions by a manager an ignore rule names are not drift",
            |live| {
                set(live, "/spec/template/spec/containers/1", json!({"name": "sidecar", "image": "mesh:1"}));
                managed_by(
                    live,
                    "mesh-injector",
                    None,
                    json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"sidecar\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}}),
                );
            },
            vec![IgnoreRule { kind: None, ..hpa_rule(&[], &["mesh-injector"]) }],
            vec![],
        ),
        (
            "foreign addition under an ignored pointer",
            |live| {
                set(live, "/metadata/labels/owner", json!("mallory"));
                managed_by(live, "kubectl-label", None, json!({"f:metadata": {"f:labels": {"f:owner": {}}}}));
            },
            vec![hpa_rule(&["/metadata/labels"], &[])],
            vec![],
        ),
    ];
    for (name, edit, ignore, expected) in cases {
        let declared = declared_deployment();
        let mut live = live_deployment();
        edit(&mut live);
        let result = diff(&declared, Some(&live), &DiffOptions::with_ignore(ignore));
        assert_eq!(changes(&result), expect(&expected), "{name}\n{}", result.unified);
        assert_eq!(result.in_sync(), expected.is_empty(), "{name}");
        assert_eq!(result.unified.is_empty(), expected.is_empty(), "{name}: {}", result.unified);
    }
}

#[test]
fn deleted_object_is_missing() {
    let result = diff(&declared_deployment(), None, &DiffOptions::default());
    assert_eq!(changes(&result), expect(&[("", ObjectMissing)]));
    assert!(result.is_missing());
    assert!(result.unified.contains("-kind: Deployment"), "{}", result.unified);
}

#[test]
fn unified_diff_shows_declared_fields_and_foreign_additions() {
    let mut live = live_deployment();
    set(&mut live, "/spec/template/spec/containers/0/image", json!("nginx:1.28"));
    set(&mut live, "/spec/template/spec/containers/0/securityContext", json!({"privileged": true}));
    managed_by(
        &mut live,
        "kubectl-edit",
        None,
        container_fields(json!({"f:securityContext": {".": {}, "f:privileged": {}}})),
    );
    let result = diff(&declared_deployment(), Some(&live), &DiffOptions::default());
    let unified = &result.unified;
    assert!(unified.starts_with("--- declared\n+++ live\n"), "{unified}");
    assert!(unified.contains("\n-        image: nginx:1.27\n+        image: nginx:1.28\n"), "{unified}");
    assert!(unified.contains("\n+          privileged: true\n"), "{unified}");
    // Defaults and equal quantities are not noise in the diff.
    assert!(!unified.contains("imagePullPolicy"), "{unified}");
    assert!(!unified.contains("500m"), "{unified}");
    assert!(!unified.contains("last-applied"), "{unified}");
}

#[test]
fn own_server_side_apply_without_defaults_ownership_is_in_sync() {
    // Under server-side apply the manager owns exactly what it sent;
    // defaults belong to nobody.
    let mut live = live_deployment();
    let fields = live["metadata"]["managedFields"][0]["fieldsV1"].clone();
    live["metadata"]["managedFields"] = json!([{
        "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": OPERATOR_MANAGER, "operation": "Apply",
        "fieldsV1": {"f:metadata": fields["f:metadata"], "f:spec": {"f:replicas": {}, "f:selector": {}}},
    }]);
    let result = diff(&declared_deployment(), Some(&live), &DiffOptions::default());
    assert!(result.in_sync(), "{result:?}");
}

fn service(ports: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "shop"},
        "spec": {"selector": {"app": "web"}, "ports": ports}})
}

#[test]
fn service_ports_merge_by_port_and_protocol() {
    let declared = service(json!([
        {"name": "http", "port": 80, "targetPort": "http"},
        {"name": "metrics", "port": 9090, "targetPort": 9090},
    ]));
    let live_ports = json!([
        {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": 9090},
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
    ]);
    let mut live = service(live_ports.clone());
    live["spec"]["clusterIP"] = json!("10.0.0.12");
    live["spec"]["type"] = json!("ClusterIP");
    live["spec"]["sessionAffinity"] = json!("None");
    let cases: Vec<(&str, Value, Expected)> = vec![
        ("reordered, defaulted protocol", live_ports, vec![]),
        (
            "port removed",
            json!([{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]),
            vec![("/spec/ports/1", Removed)],
        ),
        (
            "targetPort as a numeric string is a different value",
            json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "port": 9090, "protocol": "TCP", "targetPort": "9090"},
            ]),
            vec![("/spec/ports/1/targetPort", Changed)],
        ),
        (
            "UDP is another port",
            json!([
                {"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"},
                {"name": "metrics", "port": 9090, "protocol": "UDP", "targetPort": 9090},
            ]),
            // Nobody declared a UDP port: it is drift whoever owns it.
            vec![("/spec/ports/1", Removed), ("/spec/ports/1", Added)],
        ),
    ];
    for (name, ports, expected) in cases {
        live["spec"]["ports"] = ports;
        let result = diff(&declared, Some(&live), &DiffOptions::default());
        assert_eq!(changes(&result), expect(&expected), "{name}");
    }
}

#[test]
fn role_rules_are_atomic() {
    let rule = json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]});
    let declared = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader", "namespace": "shop"}, "rules": [rule]});
    let extra = json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]});
    let cases: Vec<(&str, Value, Expected)> = vec![
        ("equal", json!([rule]), vec![]),
        ("rule added", json!([rule, extra]), vec![("/rules/1", Added)]),
        (
            "rule replaced",
            json!([extra]),
            vec![("/rules/0/resources/0", Changed), ("/rules/0/verbs/0", Changed), ("/rules/0/verbs/1", Removed)],
        ),
        (
            "verb added",
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "delete"]}]),
            vec![("/rules/0/verbs/2", Added)],
        ),
        ("rules gone", json!([]), vec![("/rules/0", Removed)]),
    ];
    for (name, rules, expected) in cases {
        let mut live = declared.clone();
        live["rules"] = rules;
        live["metadata"]["managedFields"] = json!([{"manager": "kubectl-edit", "operation": "Update",
            "fieldsType": "FieldsV1", "fieldsV1": {"f:rules": {}}}]);
        let result = diff(&declared, Some(&live), &DiffOptions::default());
        assert_eq!(changes(&result), expect(&expected), "{name}");
    }
}

#[test]
fn atomic_list_items_owned_by_a_foreign_manager_report_extra_fields() {
    let declared = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "reader", "namespace": "shop"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]});
    let mut live = declared.clone();
    live["rules"][0]["resourceNames"] = json!(["app-config"]);
    live["metadata"]["managedFields"] = json!([{"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {"f:rules": {}}}]);
    let result = diff(&declared, Some(&live), &DiffOptions::default());
    assert_eq!(changes(&result), expect(&[("/rules/0/resourceNames", Added)]));
}

#[test]
fn zero_values_the_server_drops_are_not_drift() {
    let declared = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop", "annotations": {}, "labels": {}},
        "data": {"a": "1"}, "binaryData": {}, "immutable": false});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "c", "namespace": "shop", "uid": "u", "resourceVersion": "1"},
        "data": {"a": "1"}});
    assert!(diff(&declared, Some(&live), &DiffOptions::default()).in_sync());
}

const CANARY: &str = "canary-7f3e9a1c5b2d4e6f";

fn secret_declared() -> Value {
    json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "type": "Opaque",
        "data": {"password": base64_of("old-password"), "user": base64_of("app")},
        "stringData": {"token": CANARY}})
}

fn base64_of(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

#[test]
fn secret_values_never_appear() {
    let mut live = secret_declared();
    let live_object = live.as_object_mut().expect("object");
    live_object.remove("stringData");
    live["data"] = json!({
        "password": base64_of(CANARY),
        "user": base64_of("app"),
        "token": base64_of(&format!("{CANARY}-2")),
        "stolen": base64_of(CANARY),
    });
    live["metadata"]["annotations"] = json!({LAST_APPLIED: format!("{{\"stringData\":{{\"token\":\"{CANARY}\"}}}}")});
    live["metadata"]["managedFields"] = json!([
        {"manager": "kubectl-client-side-apply", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:data": {".": {}, "f:password": {}, "f:user": {}, "f:token": {}}, "f:type": {}}},
        {"manager": "kubectl-edit", "operation": "Update", "fieldsType": "FieldsV1",
         "fieldsV1": {"f:data": {"f:stolen": {}}}},
    ]);
    let result = diff(&secret_declared(), Some(&live), &DiffOptions::default());
    assert_eq!(
        changes(&result),
        expect(&[("/data/password", Changed), ("/data/token", Changed), ("/data/stolen", Added)])
    );
    let encoded = base64_of(CANARY);
    let shown = [format!("{result:?}"), result.unified.clone(), format!("{:?}", result.paths())];
    for text in shown {
        for secret in [CANARY, encoded.as_str(), "old-password", &base64_of("old-password")] {
            assert!(!text.contains(secret), "{secret} leaked into {text}");
        }
    }
    assert!(result.unified.contains(REDACTED_CHANGED), "{}", result.unified);

    let missing = diff(&secret_declared(), None, &DiffOptions::default());
    assert!(!format!("{missing:?}").contains(CANARY), "{missing:?}");
    assert!(!missing.unified.contains(&base64_of("old-password")), "{}", missing.unified);
}

#[test]
fn secret_in_sync_through_string_data_and_reencoding() {
    let mut live = secret_declared();
    live.as_object_mut().expect("object").remove("stringData");
    live["data"] = json!({
        "password": base64_of("old-password"),
        "user": "YX\nBw",
        "token": base64_of(CANARY),
    });
    let result = diff(&secret_declared(), Some(&live), &DiffOptions::default());
    assert!(result.in_sync(), "{result:?}");
}

#[test]
fn pointers_escape_per_rfc_6901() {
    let cases: Vec<(Vec<Step<'_>>, &str)> = vec![
        (vec![], ""),
        (vec![Step::Key("metadata"), Step::Key("annotations"), Step::Key("a/b~c")], "/metadata/annotations/a~1b~0c"),
        (vec![Step::Key("spec"), Step::Index(3)], "/spec/3"),
    ];
    for (path, expected) in cases {
        assert_eq!(pointer(&path), expected);
    }
    assert_eq!(split_pointer("/metadata/annotations/a~1b~0c"), ["metadata", "annotations", "a/b~c"]);
}

#[test]
fn deep_nesting_is_bounded() {
    let mut declared = json!("leaf");
    for _ in 0..1000 {
        declared = json!({"a": declared});
    }
    let mut live = json!("other");
    for _ in 0..1000 {
        live = json!({"a": live});
    }
    let declared = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": declared});
    let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": live,
        "extra": {"b": {"c": 1}}});
    let result = diff(&declared, Some(&live), &DiffOptions::default());
    assert_eq!(result.changes.len(), 2, "{:?}", result.changes);
    assert_eq!(result.changes[0].kind, Changed);
    assert_eq!((result.changes[1].path.as_str(), result.changes[1].kind), ("/extra/b/c", Added));
}

/// Every field manager name a person can send (`--field-manager`), the
/// IaC tools', the controllers' and driftwarden's own included: an
/// undeclared field under that name is drift, and a declared field it
/// changed is drift.
#[test]
fn no_field_manager_name_makes_a_field_declared() {
    let names = [
        OPERATOR_MANAGER,
        "kubectl",
        "kubectl-client-side-apply",
        "kubectl-edit",
        "kubectl-patch",
        "helm",
        "kustomize-controller",
        "argocd-controller",
        "terraform",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-apiserver",
        "kubelet",
        "cloud-controller-manager",
        "horizontal-pod-autoscaler",
        "before-first-apply",
    ];
    for name in names {
        for operation in ["Update", "Apply"] {
            let mut live = live_deployment();
            set(&mut live, "/metadata/labels/owner", json!("mallory"));
            set(&mut live, "/spec/template/spec/containers/0/securityContext", json!({"privileged": true}));
            set(&mut live, "/spec/template/spec/containers/0/image", json!("evil:1"));
            live["metadata"]["managedFields"].as_array_mut().unwrap().push(json!({
                "apiVersion": "apps/v1", "fieldsType": "FieldsV1", "manager": name, "operation": operation,
                "fieldsV1": {"f:metadata": {"f:labels": {"f:owner": {}}}, "f:spec": {"f:template": {"f:spec": {
                    "f:containers": {"k:{\"name\":\"web\"}": {"f:image": {},
                        "f:securityContext": {".": {}, "f:privileged": {}}}}}}}}}));
            let result = diff(&declared_deployment(), Some(&live), &DiffOptions::default());
            assert_eq!(
                changes(&result),
                expect(&[
                    ("/metadata/labels/owner", Added),
                    ("/spec/template/spec/containers/0/image", Changed),
                    ("/spec/template/spec/containers/0/securityContext/privileged", Added),
                ]),
                "{name} ({operation})"
            );
        }
    }
}
