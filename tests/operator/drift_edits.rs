//! Every class of edit shows up in DesiredState status with its exact field
//! path and kind of change; Secret values never show anywhere.

use std::time::Duration;

use driftwarden::api::DesiredState;
use driftwarden_dev::controlplane::User;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::common::{condition, drift_setup};

const CANARY_DECLARED: &str = "canary-7f3a9c1e-declared";
const CANARY_EDITED: &str = "canary-5b2d8e4f-edited";

fn manifests() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - name: http
    port: 80
    targetPort: 80
  - name: metrics
    port: 9090
    targetPort: 9090
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
rules:
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list]
---
apiVersion: v1
kind: Secret
metadata:
  name: creds
type: Opaque
stringData:
  password: {CANARY_DECLARED}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
"#
    )
}

#[tokio::test]
async fn each_kind_of_edit_is_reported_with_its_field_path_and_no_secret_value() {
    let t = drift_setup("drift-edits").await;
    t.kubectl(&["apply", "-f", "-"], Some(&manifests()));
    t.desired_state("app", &[("app.yaml", manifests())], json!([])).await;
    let clean =
        t.wait_for_status("app", Duration::from_secs(30), |s| s.managed == Some(5) && s.drifted == Some(0)).await;
    assert_eq!(clean.revision.as_deref(), Some("0123abcd"));
    assert_eq!(condition(&clean, "Ready").unwrap().status, "True");

    let privileged = json!([{"op": "add", "path": "/spec/template/spec/containers/0/securityContext", "value": {"privileged": true}}]).to_string();
    let extra_rule = json!([{"op": "add", "path": "/rules/-", "value": {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}}]).to_string();
    let drop_port = json!([{"op": "remove", "path": "/spec/ports/1"}]).to_string();
    let secret = json!({"stringData": {"password": CANARY_EDITED}}).to_string();
    t.kubectl(&["scale", "deployment/web", "--replicas=5"], None);
    t.kubectl(&["set", "image", "deployment/web", "web=nginx:1.28"], None);
    t.kubectl(&["label", "deployment/web", "team=night-shift"], None);
    t.kubectl(&["annotate", "service/web", "owner=eve"], None);
    t.kubectl(&["patch", "deployment/web", "--field-manager=kubectl-edit", "--type=json", "-p", &privileged], None);
    t.kubectl(&["patch", "role/reader", "--field-manager=kubectl-edit", "--type=json", "-p", &extra_rule], None);
    t.kubectl(&["patch", "service/web", "--field-manager=kubectl-edit", "--type=json", "-p", &drop_port], None);
    t.kubectl(&["patch", "secret/creds", "--field-manager=kubectl-edit", "-p", &secret], None);
    t.kubectl(&["delete", "configmap/settings"], None);

    let expected: [(&str, &[&str]); 5] = [
        (
            "web",
            &[
                "/spec/replicas (changed)",
                "/spec/template/spec/containers/0/image (changed)",
                "/metadata/labels/team (added)",
                "/spec/template/spec/containers/0/securityContext/privileged (added)",
            ],
        ),
        ("reader", &["/rules/1 (added)"]),
        ("creds", &["/data/password (changed)"]),
        ("settings", &["deleted"]),
        ("web-service", &["/metadata/annotations/owner (added)"]),
    ];
    let matches = |status: &driftwarden::api::DesiredStateStatus| {
        expected.iter().all(|(name, fields)| {
            let (kind, name) = if *name == "web-service" { ("Service", "web") } else { ("", *name) };
            status.drifted_objects.iter().any(|d| {
                d.object.name == name
                    && (kind.is_empty() || d.object.kind == kind)
                    && fields.iter().all(|f| d.fields.iter().any(|g| g == f))
            })
        })
    };
    let status = t.wait_for_status("app", Duration::from_secs(30), matches).await;
    assert_eq!(status.drifted, Some(5), "{status:#?}");
    let service = status.drifted_objects.iter().find(|d| d.object.kind == "Service").unwrap();
    assert!(service.fields.iter().any(|f| f.starts_with("/spec/ports/") && f.ends_with("(removed)")), "{service:#?}");
    let drifted = condition(&status, "Drifted").unwrap();
    assert_eq!((drifted.status.as_str(), drifted.message.as_str()), ("True", "5 of 5 objects differ from Git"));

    // No Secret value anywhere: status, Events, the operator's log.
    let status_yaml = t.kubectl(&["get", "desiredstate", "app", "-o", "yaml"], None);
    let events = t.kubectl(&["get", "events", "-o", "yaml"], None);
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    for (place, text) in [("status", &status_yaml), ("events", &events), ("operator log", &log)] {
        for canary in [CANARY_DECLARED, CANARY_EDITED] {
            assert!(!text.contains(canary), "a Secret value leaked into the {place}");
        }
    }
    assert!(events.contains("DriftDetected"), "no DriftDetected event");

    // Putting an object back resolves its drift.
    t.kubectl(&["apply", "-f", "-"], Some(&manifests()));
    let status = t
        .wait_for_status("app", Duration::from_secs(30), |s| {
            !s.drifted_objects.iter().any(|d| d.object.name == "settings")
        })
        .await;
    assert!(status.drifted.unwrap() < 5);
}

#[tokio::test]
async fn replicas_owned_by_an_autoscaler_are_not_drift_when_an_ignore_rule_says_so() {
    let t = drift_setup("drift-hpa").await;
    let deployment = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  replicas: 2
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: "busybox:1.36"}]
"#
    .to_string();
    t.kubectl(&["apply", "-f", "-"], Some(&deployment));
    let ignore = json!([{"jsonPointers": ["/spec/replicas"], "fieldManagers": ["horizontal-pod-autoscaler"]}]);
    t.desired_state("hpa", &[("api.yaml", deployment.clone())], ignore).await;
    t.wait_for_status("hpa", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;

    // The autoscaler scales: not drift.
    let scale = json!({"spec": {"replicas": 7}}).to_string();
    t.kubectl(&["patch", "deployment/api", "--field-manager=horizontal-pod-autoscaler", "-p", &scale], None);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = t.wait_for_status("hpa", Duration::from_secs(5), |s| s.drifted == Some(0)).await;
    assert_eq!(status.managed, Some(1));

    // A person scales: drift, the rule names only the autoscaler.
    let scale = json!({"spec": {"replicas": 9}}).to_string();
    t.kubectl(&["patch", "deployment/api", "--field-manager=kubectl-edit", "-p", &scale], None);
    let status = t.wait_for_status("hpa", Duration::from_secs(30), |s| s.drifted == Some(1)).await;
    assert_eq!(status.drifted_objects[0].fields, ["/spec/replicas (changed)"]);

    // The rules change and nothing else does (the sources are not parsed
    // again for it): every object is judged again under the new rules.
    let states: Api<DesiredState> = t.env.api(User::Admin).await;
    let rules = |managers: Value| json!({"spec": {"ignore": [{"jsonPointers": ["/spec/replicas"], "fieldManagers": managers}]}});
    let patch = |managers: Value| Patch::Merge(rules(managers));
    states.patch("hpa", &PatchParams::default(), &patch(json!([]))).await.unwrap();
    t.wait_for_status("hpa", Duration::from_secs(30), |s| s.drifted == Some(0)).await;
    states.patch("hpa", &PatchParams::default(), &patch(json!(["horizontal-pod-autoscaler"]))).await.unwrap();
    let status = t.wait_for_status("hpa", Duration::from_secs(30), |s| s.drifted == Some(1)).await;
    assert_eq!(status.drifted_objects[0].fields, ["/spec/replicas (changed)"]);
}
