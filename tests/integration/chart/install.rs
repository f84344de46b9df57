//! `helm install` into the real API server, then what a token of the chart's
//! ServiceAccount may and may not do.

use std::path::Path;
use std::process::Command;

use std::sync::OnceLock;

use driftwarden::api::AccessRequest;
use driftwarden_dev::controlplane::{ControlPlane, User};
use kube::api::PostParams;

use super::{chart, helm};
use crate::support::{TestEnv, access_request, output, started_in};

/// The install's own control plane: the chart's access webhooks fail closed
/// and no operator answers them here, so on the shared one they would
/// refuse the other tests' AccessRequests until the uninstall.
static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// kubectl with a kubeconfig of our own (the harness's are per user).
fn kubectl_with(env: &TestEnv, kubeconfig: &Path) -> Command {
    let mut command = Command::new(env.cp.bin_dir().join("kubectl"));
    command.arg(format!("--kubeconfig={}", kubeconfig.display()));
    command
}

/// `kubectl auth can-i`, which asks the API server with a SelfSubjectAccessReview.
fn can_i(env: &TestEnv, kubeconfig: &Path, verb: &str, resource: &str, namespace: &str) -> bool {
    let mut kubectl = kubectl_with(env, kubeconfig);
    let out = kubectl.args(["auth", "can-i", verb, resource, "--namespace", namespace]).output().unwrap();
    match String::from_utf8_lossy(&out.stdout).trim() {
        "yes" => true,
        "no" => false,
        _ => panic!("kubectl auth can-i {verb} {resource}: {}", String::from_utf8_lossy(&out.stderr)),
    }
}

#[tokio::test]
async fn helm_install_lets_the_service_account_bind_the_listed_roles_and_nothing_more() {
    let env = TestEnv::on(started_in(&CONTROL_PLANE), "helm-install").await;
    let ns = env.namespace.as_str();
    // Cluster-scoped objects are named after the release: one per test run.
    let release = ns;
    let admin_kubeconfig = env.cp.kubeconfig(User::Admin);
    let mut install = helm();
    install
        .args(["install", release])
        .arg(chart())
        .args(["--namespace", ns, "--kubeconfig"])
        .arg(&admin_kubeconfig)
        .args(["--set", "examplePolicy.enabled=true", "--set"])
        .arg(format!("examplePolicy.namespaceSelector.matchLabels.driftwarden\\.io/test-namespace={ns}"));
    let installed = output(install);
    assert!(installed.contains("STATUS: deployed"), "{installed}");

    let account = format!("{release}-driftwarden");
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "deployment", &account, "--output=jsonpath={.spec.replicas}"]);
    assert_eq!(output(kubectl), "2");
    // The API server accepted the example AccessPolicy (its CEL rules included).
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "accesspolicy", &format!("{account}-example"), "--output=name"]);
    assert_eq!(output(kubectl).trim(), format!("accesspolicy.driftwarden.io/{account}-example"));

    // What the operator would run with in the cluster: a token of the
    // chart's ServiceAccount (`kubectl create token` is a TokenRequest).
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["create", "token", &account, "--duration=10m"]);
    let token = output(kubectl);
    let operator = env.cp.write_kubeconfig(&account, token.trim()).unwrap();

    let other_ns = "default";
    let checks = [
        ("bind", "clusterroles/edit", ns, true),
        ("bind", "clusterroles/view", ns, true),
        ("bind", "clusterroles/admin", ns, false),
        ("bind", "clusterroles/cluster-admin", ns, false),
        ("escalate", "clusterroles/edit", ns, false),
        ("escalate", "roles", ns, false),
        ("impersonate", "users", ns, false),
        ("impersonate", "groups", ns, false),
        ("impersonate", "serviceaccounts", ns, false),
        ("patch", "deployments.apps", other_ns, true),
        ("patch", "configmaps", other_ns, false),
        ("create", "rolebindings.rbac.authorization.k8s.io", other_ns, true),
        ("update", "leases.coordination.k8s.io/driftwarden", ns, true),
        ("update", "leases.coordination.k8s.io/someone-else", ns, false),
        ("get", "secrets/driftwarden-webhook-tls", ns, true),
        ("update", "secrets/driftwarden-audit", ns, true),
        ("get", "secrets/someone-else", ns, false),
        ("get", "secrets/driftwarden-webhook-tls", other_ns, false),
        // The chart creates the admission configuration; the operator may
        // only read and patch its own, by name.
        ("create", "validatingwebhookconfigurations.admissionregistration.k8s.io", ns, false),
        ("create", "mutatingwebhookconfigurations.admissionregistration.k8s.io", ns, false),
        ("create", "validatingadmissionpolicies.admissionregistration.k8s.io", ns, false),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/driftwarden", ns, true),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/driftwarden-writes", ns, true),
        ("patch", "mutatingwebhookconfigurations.admissionregistration.k8s.io/driftwarden", ns, true),
        ("patch", "validatingwebhookconfigurations.admissionregistration.k8s.io/someone-else", ns, false),
        ("delete", "validatingwebhookconfigurations.admissionregistration.k8s.io/driftwarden", ns, false),
    ];
    for (verb, resource, namespace, expected) in checks {
        let allowed = can_i(&env, &operator, verb, resource, namespace);
        assert_eq!(allowed, expected, "can the operator {verb} {resource} in {namespace}?");
    }

    // A grant as the operator makes it: a RoleBinding to a listed role is
    // created; to any other role the API server answers 403.
    let grant = |name: &str, role: &str| {
        kubectl_with(&env, &operator)
            .args(["create", "rolebinding", name, "--clusterrole", role, "--user", "alice", "--namespace", ns])
            .output()
            .unwrap()
    };
    let edit = grant("alice-edit", "edit");
    assert!(edit.status.success(), "{}", String::from_utf8_lossy(&edit.stderr));
    let admin = grant("alice-admin", "admin");
    let refused = String::from_utf8_lossy(&admin.stderr);
    // RBAC's escalation check: 403 Forbidden, listing what the operator lacks.
    assert!(!admin.status.success(), "the operator bound admin");
    assert!(refused.contains(r#"rolebindings.rbac.authorization.k8s.io "alice-admin" is forbidden"#), "{refused}");
    assert!(refused.contains("attempting to grant RBAC permissions not currently held"), "{refused}");

    // The access webhooks fail closed from the install on: with no operator
    // to check who asks, an AccessRequest is refused, never admitted unchecked.
    let requests = env.raw_api::<AccessRequest>(User::Admin).await;
    let request = access_request("alice-fix", None, "edit", "30m", "INC-1: roll back the frontend image");
    let refused = requests.create(&PostParams::default(), &request).await.expect_err("admitted with no operator");
    assert!(refused.to_string().contains("identity.driftwarden.io"), "{refused}");

    let mut uninstall = helm();
    uninstall.args(["uninstall", release, "--namespace", ns, "--kubeconfig"]).arg(&admin_kubeconfig);
    output(uninstall);
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "clusterrole", &account, "--ignore-not-found", "--output=name"]);
    assert_eq!(output(kubectl), "", "helm uninstall left the ClusterRole behind");
    // Nothing is left that would block the cluster.
    let mut kubectl = env.kubectl(User::Admin);
    kubectl.args(["get", "validatingwebhookconfigurations,mutatingwebhookconfigurations", "--output=name"]);
    assert_eq!(output(kubectl), "", "helm uninstall left admission configuration behind");
    if let Err(error) = requests.create(&PostParams::default(), &request).await {
        assert!(!error.to_string().contains("failed calling webhook"), "a webhook outlived the uninstall: {error}");
    }
}
