//! The Helm chart (`charts/driftwarden`), with a helm built from its Go
//! module: lint and schema, what default and custom values render, and CRDs
//! equal to the generated ones here; least privilege in the rendered RBAC,
//! the Grafana dashboard's queries, and an install into the real API server
//! in the submodules.

mod dashboard;
mod install;
mod on_a_node;
mod rbac;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::{Value, json};

use crate::support::{helm_binary, output};

const RELEASE: &str = "dw-test";
const NAMESPACE: &str = "dw-system";

fn repo_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn chart() -> PathBuf {
    repo_path("charts/driftwarden")
}

/// The chart's own values.yaml: passing it changes nothing, and the tests
/// read their expectations from it as from the custom file.
fn default_values() -> PathBuf {
    chart().join("values.yaml")
}

fn custom_values() -> PathBuf {
    repo_path("tests/data/chart-values-custom.yaml")
}

/// What the operator tests run under (`controlplane::operator` renders the
/// chart with it and applies its RBAC).
fn operator_test_values() -> PathBuf {
    repo_path("tests/data/chart-values-operator-tests.yaml")
}

/// helm, with its cache, configuration and data kept out of $HOME.
fn helm() -> Command {
    let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("helm-home");
    let mut command = Command::new(helm_binary());
    for (var, dir) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        command.env(var, home.join(dir));
    }
    command
}

fn yaml_documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| Value::deserialize(doc).expect("a YAML document"))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn read_yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// `helm template` with a values file, as one JSON value per object.
fn render(values: &Path) -> Vec<Value> {
    render_with(values, &[])
}

/// Renders with `values` and `--set` overrides.
fn render_with(values: &Path, set: &[&str]) -> Vec<Value> {
    let mut helm = helm();
    helm.args(["template", RELEASE]).arg(chart()).args(["--namespace", NAMESPACE, "--values"]).arg(values);
    for value in set {
        helm.args(["--set", value]);
    }
    yaml_documents(&output(helm))
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn the<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(objects, kind)[..] {
        [one] => one,
        ref found => panic!("expected one {kind}, found {}", found.len()),
    }
}

fn kinds(objects: &[Value]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for object in objects {
        *counts.entry(object["kind"].as_str().unwrap()).or_default() += 1;
    }
    counts
}

fn strings(value: &Value) -> Vec<&str> {
    value.as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect()
}

/// The value that follows `flag` in the container's args.
fn arg<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|pair| pair[0] == flag).map(|pair| pair[1])
}

#[test]
fn chart_passes_helm_lint_with_default_custom_and_operator_test_values() {
    for values in [default_values(), custom_values(), operator_test_values()] {
        let mut helm = helm();
        helm.args(["lint", "--strict"]).arg(chart()).arg("--values").arg(&values);
        let report = output(helm);
        assert!(report.contains("1 chart(s) linted, 0 chart(s) failed"), "{}: {report}", values.display());
    }
}

#[test]
fn values_that_break_the_schema_are_refused_naming_each_field() {
    let invalid = repo_path("tests/data/chart-values-invalid.yaml");
    for subcommand in ["template", "lint"] {
        let out = helm().arg(subcommand).arg(chart()).arg("--values").arg(&invalid).output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "helm {subcommand} accepted invalid values: {text}");
        assert!(text.contains("don't meet the specifications of the schema"), "{text}");
        let fields = [
            "/replicaCount",
            "/access/grantableRoles/0/name",
            "/managedResources/0/resources/0",
            "/undeclaredResources/0/apiGroup",
        ];
        for field in fields {
            assert!(text.contains(&format!("at '{field}'")), "helm {subcommand} did not name {field}: {text}");
        }
    }
}

#[test]
fn default_values_render_two_hardened_replicas_with_probes_and_the_dashboard() {
    let objects = render(&default_values());
    let expected = [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ];
    // Two Services: every replica's webhooks, and the leader's write log;
    // two validating configurations: the access webhooks and the write log.
    let count = |k: &str| if k == "Service" || k == "ValidatingWebhookConfiguration" { 2 } else { 1 };
    assert_eq!(kinds(&objects), expected.into_iter().map(|k| (k, count(k))).collect());

    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "dw-test-driftwarden");
    let container = &pod["containers"][0];
    let args = strings(&container["args"]);
    assert_eq!(args[..5], ["run", "--namespace", NAMESPACE, "--log-format", "json"]);
    assert!(args.contains(&"--leader-election=true"), "{args:?}");
    assert_eq!(arg(&args, "--lease-name"), Some("driftwarden"));
    assert_eq!(arg(&args, "--webhook-service"), Some("dw-test-driftwarden"));
    assert_eq!(arg(&args, "--webhook-cert-dir"), None);
    assert_eq!(
        container["env"][0],
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}})
    );
    assert_eq!(
        container["ports"],
        json!([
            {"name": "http", "containerPort": 8080, "protocol": "TCP"},
            {"name": "webhook", "containerPort": 9443, "protocol": "TCP"},
        ])
    );
    assert_eq!(container["livenessProbe"]["httpGet"], json!({"path": "/healthz", "port": "http"}));
    assert_eq!(container["readinessProbe"]["httpGet"], json!({"path": "/readyz", "port": "http"}));
    assert_eq!(
        container["securityContext"],
        json!({
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        })
    );
    assert!(container["resources"]["requests"]["memory"].is_string(), "{container}");

    let services = of_kind(&objects, "Service");
    let service = services.iter().find(|s| s["metadata"]["name"] == "dw-test-driftwarden").unwrap();
    let leader = services.iter().find(|s| s["metadata"]["name"] == "dw-test-driftwarden-leader").unwrap();
    assert_eq!(leader["spec"]["selector"]["driftwarden.io/leader"], "true");
    assert_eq!(
        service["spec"]["ports"],
        json!([
            {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"},
            {"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"},
        ])
    );
    assert_eq!(the(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);

    let dashboard = the(&objects, "ConfigMap");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let shipped: Value = serde_json::from_str(dashboard["data"]["driftwarden.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, dashboard::dashboard_json());
}

#[test]
fn custom_values_turn_on_cert_manager_monitoring_network_policy_and_the_example_policy() {
    let objects = render(&custom_values());
    let counts = kinds(&objects);
    for (kind, count) in
        [("Certificate", 2), ("Issuer", 2), ("ServiceMonitor", 1), ("NetworkPolicy", 1), ("AccessPolicy", 1)]
    {
        assert_eq!(counts.get(kind), Some(&count), "{kind} in {counts:?}");
    }

    let deployment = the(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 3);
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example.com/platform/driftwarden:0.1.0-test");
    let args = strings(&container["args"]);
    assert_eq!(arg(&args, "--log-format"), Some("text"));
    assert_eq!(arg(&args, "--lease-name"), Some("dw-leader"));
    assert_eq!(arg(&args, "--ignore-pointers"), Some("/metadata/labels/team,/metadata/annotations/owner"));
    assert_eq!(arg(&args, "--break-glass-groups"), Some("system:masters"));
    assert_eq!(arg(&args, "--webhook-service"), Some("dw"));

    // cert-manager's Secret is mounted where --webhook-cert-dir points, and
    // its certificate names the Service the webhooks are called through.
    let cert_dir = arg(&args, "--webhook-cert-dir").expect("--webhook-cert-dir");
    let mount = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == cert_dir).unwrap();
    let volume = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == mount["name"]).unwrap();
    let serving = of_kind(&objects, "Certificate").into_iter().find(|c| c["spec"]["isCA"].is_null()).unwrap();
    assert_eq!(volume["secret"]["secretName"], serving["spec"]["secretName"]);
    assert_eq!(
        serving["spec"]["dnsNames"],
        json!([
            "dw.dw-system.svc",
            "dw.dw-system.svc.cluster.local",
            "dw-leader.dw-system.svc",
            "dw-leader.dw-system.svc.cluster.local"
        ])
    );
    let services: Vec<&str> =
        of_kind(&objects, "Service").iter().filter_map(|s| s["metadata"]["name"].as_str()).collect();
    assert_eq!(services, ["dw", "dw-leader"]);

    assert_eq!(the(&objects, "ServiceMonitor")["spec"]["endpoints"][0]["port"], "http-metrics");
    assert_eq!(the(&objects, "ConfigMap")["metadata"]["namespace"], "monitoring");
    assert_eq!(the(&objects, "AccessPolicy")["spec"]["roles"], json!([{"kind": "Role", "name": "app-operator"}]));
}

#[test]
fn the_chart_crds_are_the_generated_crds() {
    let files = |dir: PathBuf| -> BTreeMap<String, String> {
        std::fs::read_dir(&dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&path).unwrap())
            })
            .collect()
    };
    let (chart_crds, generated) = (files(chart().join("crds")), files(repo_path("crds")));
    let fix = "run `cp crds/*.yaml charts/driftwarden/crds/` (crds/ comes from `cargo run -- crds --dir crds`)";
    assert_eq!(chart_crds.keys().collect::<Vec<_>>(), generated.keys().collect::<Vec<_>>(), "{fix}");
    for (name, content) in &generated {
        assert!(&chart_crds[name] == content, "charts/driftwarden/crds/{name} differs from crds/{name}: {fix}");
    }
}

/// The chart creates the webhook configurations the operator then patches
/// (by name, the caBundle): both must describe the same webhooks, or each
/// start of the operator would rewrite what the chart installed.
#[test]
fn the_charts_webhook_configurations_are_the_ones_the_operator_keeps() {
    use driftwarden::webhook::configuration::{self, Endpoint};
    let without_ca = |config: Value| {
        let mut webhooks = config["webhooks"].clone();
        for hook in webhooks.as_array_mut().unwrap() {
            hook["clientConfig"].as_object_mut().unwrap().remove("caBundle");
        }
        webhooks
    };
    let service = Endpoint::Service { namespace: NAMESPACE.into(), name: format!("{RELEASE}-driftwarden"), port: 443 };
    let url = Endpoint::Url("https://127.0.0.1:9443".into());
    for (endpoint, set) in [(service, vec![]), (url, vec!["webhook.url=https://127.0.0.1:9443/"])] {
        let objects = render_with(&default_values(), &set);
        let named = |kind: &str, name: &str| {
            let found = of_kind(&objects, kind).into_iter().find(|o| o["metadata"]["name"] == name);
            found.unwrap_or_else(|| panic!("the chart renders no {kind} {name}")).clone()
        };
        let operator = serde_json::to_value(configuration::mutating(&endpoint, "")).unwrap();
        assert_eq!(named("MutatingWebhookConfiguration", configuration::NAME)["webhooks"], without_ca(operator));
        let operator = serde_json::to_value(configuration::validating(&endpoint, "")).unwrap();
        assert_eq!(named("ValidatingWebhookConfiguration", configuration::NAME)["webhooks"], without_ca(operator));
        // The write log's webhooks are the leader's to fill in.
        assert!(named("ValidatingWebhookConfiguration", configuration::WRITES_NAME)["webhooks"].is_null());
    }
    let objects = render_with(&default_values(), &["writeLog.enabled=false"]);
    let writes = of_kind(&objects, "ValidatingWebhookConfiguration");
    assert!(
        writes.iter().all(|o| o["metadata"]["name"] != configuration::WRITES_NAME),
        "no write log, no configuration"
    );
}
