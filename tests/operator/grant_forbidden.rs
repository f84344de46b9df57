//! A role an AccessPolicy allows but the chart may not `bind` (ClusterRole
//! `admin` is not in `access.grantableRoles`): the API server refuses the
//! operator's RoleBinding with 403, nobody gets the role, and the failure
//! is visible to whoever looks.

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest};
use driftwarden_dev::controlplane::User;
use driftwarden_dev::controlplane::operator::OPERATOR_NAMESPACE;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::common::{AccessTest, setup};
use crate::support::{eventually, http_get};

const REQUEST: &str = "alice-admin";

/// A policy that allows `admin` (the API server accepts it: policies are
/// not checked against what the operator may bind) and alice's approved
/// request for it.
async fn approved_admin_request(test: &str) -> AccessTest {
    let roles = json!([{"kind": "ClusterRole", "name": "admin"}]);
    let t = setup(test, json!({"roles": roles})).await;
    t.request(User::Alice, REQUEST, "admin", "10m").await.expect("the policy allows admin, so admission does");
    t.wait_for_phase(REQUEST, AccessPhase::Pending, Duration::from_secs(10)).await;
    t.review(User::Carol, "carol-approves", REQUEST, "Approve").await.unwrap();
    t
}

/// The operator's log lines (JSON) about `request` in `namespace` that say
/// the grant was forbidden.
fn forbidden_log_lines(t: &AccessTest, request: &str) -> Vec<String> {
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    log.lines()
        .filter(|line| line.contains(&t.env.namespace) && line.contains(request) && line.contains(" is forbidden: "))
        .map(str::to_owned)
        .collect()
}

/// `driftwarden_reconcile_errors_total{controller="access",category="bind_forbidden"}`.
fn apply_binding_errors(t: &AccessTest) -> f64 {
    let (_, body) = http_get(t.operator.http_port, "/metrics").expect("the operator serves /metrics");
    body.lines()
        .find(|l| l.starts_with("driftwarden_reconcile_errors_total{") && l.contains(r#"category="bind_forbidden""#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_role_outside_binds_resource_names_is_refused_with_403_and_never_granted() {
    let t = approved_admin_request("grant-forbidden").await;

    // What the operator meets: its own credentials, the chart's RBAC, the
    // API server's escalation check.
    let kubeconfig = Kubeconfig::read_from(t.operator.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.unwrap();
    let as_operator: Api<RoleBinding> = Api::namespaced(kube::Client::try_from(config).unwrap(), &t.env.namespace);
    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "probe-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }))
    .unwrap();
    let params = PatchParams::apply("driftwarden").force();
    match as_operator.patch("probe-admin", &params, &Patch::Apply(&binding)).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            // The identity is the chart's ServiceAccount.
            let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{}", t.operator.service_account);
            assert!(status.message.contains(&format!("user \"{user}\"")), "{status:?}");
            assert!(status.message.contains("attempting to grant RBAC permissions not currently held"), "{status:?}");
        }
        other => panic!("the chart's ServiceAccount bound admin: {other:?}"),
    }

    // The operator tries, is refused the same way, and says so in its log.
    let lines = eventually(Duration::from_secs(20), || async {
        let lines = forbidden_log_lines(&t, REQUEST);
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no log line about the refused grant of {REQUEST} in {}", t.operator.log().display()));
    assert!(lines[0].contains("attempting to grant RBAC permissions not currently held"), "{}", lines[0]);
    assert!(lines[0].contains("\"WARN\""), "{}", lines[0]);
    assert!(apply_binding_errors(&t) >= 1.0, "the refusal is not counted in driftwarden_reconcile_errors_total");

    // Nobody got admin, and the request does not claim otherwise.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(t.binding(REQUEST).await.is_none(), "a RoleBinding to admin exists");
    let request = t.env.api::<AccessRequest>(User::Admin).await.get(REQUEST).await.unwrap();
    let status = request.status.unwrap_or_default();
    assert_ne!(status.phase, Some(AccessPhase::Active), "{status:#?}");
    assert!(status.granted_at.is_none() && status.role_binding.is_none(), "{status:#?}");
    // It waits a minute between attempts (other changes, such as a new
    // AccessPolicy anywhere, may still prompt one sooner).
    assert!(status.message.as_deref().is_some_and(|m| m.contains("retrying every 60s")), "{status:#?}");
}

/// The requester and the approvers learn, on the request itself, that the
/// grant was refused and why.
#[tokio::test]
async fn a_refused_grant_is_reported_in_the_request_status_and_a_warning_event() {
    let t = approved_admin_request("grant-forbidden-reported").await;
    let reported = eventually(Duration::from_secs(20), || async {
        let request = t.env.api::<AccessRequest>(User::Admin).await.get(REQUEST).await.ok()?;
        let message = request.status?.message?;
        message.contains("forbidden").then_some(message)
    })
    .await;
    assert!(reported.is_some_and(|m| m.contains("admin")), "the status does not say the grant of admin was refused");
    let events = t.events_until(REQUEST, |e| e.iter().any(|l| l.contains("forbidden"))).await;
    assert!(events.iter().any(|l| l.contains("forbidden") && l.contains("admin")), "{events:#?}");
}
