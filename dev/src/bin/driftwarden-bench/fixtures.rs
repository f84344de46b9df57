//! The objects the criterion benchmarks (`benches/diff.rs`) diff: each
//! declared manifest, and its live copy as a real API server returns it
//! after `kubectl apply` (defaults, managedFields, the last-applied
//! annotation) and after a hand edit (`kubectl patch`, a foreign manager).
//!
//!   driftwarden-bench fixtures --out benches/data

use std::path::Path;

use anyhow::Context as _;
use driftwarden_dev::controlplane::{ControlPlane, Options, User};
use serde_json::{Value, json};

/// The namespace the fixtures live in.
const NAMESPACE: &str = "bench";

struct Case {
    name: &'static str,
    /// The manifest, as YAML.
    declared: String,
    /// The hand edit, as a JSON patch.
    drift: Value,
}

fn cases() -> anyhow::Result<Vec<Case>> {
    let root = &driftwarden_dev::repo_root();
    // As written (it quotes "yes", which YAML 1.1 readers such as kubectl take for a bool).
    let deployment = std::fs::read_to_string(root.join("src/drift/testdata/deployment-declared.yaml"))?
        .replace("namespace: shop", &format!("namespace: {NAMESPACE}"));
    let yaml = |value: &Value| serde_yaml_ng::to_string(value);
    let service = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": NAMESPACE, "labels": {"app": "web", "tier": "frontend"}},
        "spec": {"selector": {"app": "web"}, "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": 9090, "protocol": "TCP"}]}});
    let data: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("setting-{i:03}"), format!("value {i} of a typical application setting, some text").into()))
        .collect();
    let config_map = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "settings", "namespace": NAMESPACE, "labels": {"app": "web"}}, "data": data});
    let groups = [("", "pods"), ("", "configmaps"), ("apps", "deployments"), ("batch", "jobs"), ("", "services")];
    let rules: Vec<Value> = (0..20)
        .map(|i| {
            let (group, resource) = groups[i % groups.len()];
            let verbs = [&["get", "list", "watch"][..], &["create", "update", "patch", "delete"]][i % 2];
            json!({"apiGroups": [group], "resources": [resource], "resourceNames": [format!("item-{i}")], "verbs": verbs})
        })
        .collect();
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "operator", "namespace": NAMESPACE}, "rules": rules});
    Ok(vec![
        Case {
            name: "deployment",
            declared: deployment,
            drift: json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:9"},
                {"op": "add", "path": "/spec/template/spec/containers/0/securityContext", "value": {"privileged": true}}]),
        },
        Case {
            name: "service",
            declared: yaml(&service)?,
            drift: json!([{"op": "replace", "path": "/spec/ports/1/targetPort", "value": 9191},
                {"op": "add", "path": "/metadata/labels/debug", "value": "true"}]),
        },
        Case {
            name: "configmap-100-keys",
            declared: yaml(&config_map)?,
            drift: json!([{"op": "replace", "path": "/data/setting-042", "value": "changed by hand"},
                {"op": "add", "path": "/data/extra", "value": "added by hand"}]),
        },
        Case {
            name: "role-20-rules",
            declared: yaml(&role)?,
            drift: json!([{"op": "add", "path": "/rules/-",
                "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}}]),
        },
        Case {
            name: "crd-50kb",
            declared: yaml(&large_crd(root)?)?,
            drift: json!([{"op": "replace", "path": "/spec/versions/0/schema/openAPIV3Schema/description",
                "value": "changed by hand"}]),
        },
    ])
}

/// A CustomResourceDefinition of about 50 KB: the AccessRequest CRD under
/// another group, served in three versions with the same schema (as CRDs
/// that keep old versions served are).
fn large_crd(root: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(root.join("crds/accessrequests.driftwarden.io.yaml"))?;
    let mut crd: Value = serde_yaml_ng::from_str(&text)?;
    crd["metadata"]["name"] = "accessrequests.bench.driftwarden.io".into();
    crd["spec"]["group"] = "bench.driftwarden.io".into();
    let stored = crd["spec"]["versions"][0].clone();
    let mut versions = vec![stored.clone()];
    for name in ["v1alpha2", "v1beta1"] {
        let mut version = stored.clone();
        version["name"] = name.into();
        version["storage"] = false.into();
        versions.push(version);
    }
    crd["spec"]["versions"] = versions.into();
    Ok(crd)
}

pub async fn run(out: &Path) -> anyhow::Result<()> {
    eprintln!("starting a control plane...");
    let cp = ControlPlane::start(Options::default()).await?;
    std::fs::create_dir_all(out)?;
    let kubectl = |args: &[&str]| -> anyhow::Result<String> {
        let output = cp.kubectl(User::Admin).args(args).output()?;
        anyhow::ensure!(output.status.success(), "kubectl {args:?}: {}", String::from_utf8_lossy(&output.stderr));
        Ok(String::from_utf8(output.stdout)?)
    };
    kubectl(&["create", "namespace", NAMESPACE])?;
    for case in cases()? {
        let declared = out.join(format!("{}.yaml", case.name));
        std::fs::write(&declared, &case.declared)?;
        let file = declared.to_str().context("non-UTF-8 path")?;
        kubectl(&["apply", "-f", file])?;
        let live = kubectl(&["get", "-f", file, "-o", "json"])?;
        kubectl(&["patch", "-f", file, "--type", "json", "-p", &case.drift.to_string()])?;
        let drifted = kubectl(&["get", "-f", file, "-o", "json"])?;
        for (suffix, text) in [("live", live), ("drifted", drifted)] {
            std::fs::write(out.join(format!("{}.{suffix}.json", case.name)), text)?;
        }
        let size = std::fs::metadata(&declared)?.len();
        eprintln!("{}: {size} bytes declared", case.name);
    }
    Ok(())
}
