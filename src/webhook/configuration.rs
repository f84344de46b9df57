//! The Mutating- and ValidatingWebhookConfiguration that route our kinds
//! to the operator, built here (pure) and applied by the operator so their
//! caBundle always matches the certificate it serves. The chart creates
//! them (`templates/webhookconfigurations.yaml`, the same webhooks: a test
//! compares them); the operator may only patch them by name, so it cannot
//! install admission configuration of its own.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

/// Name of both configurations.
pub const NAME: &str = "driftwarden";
pub const MUTATE_PATH: &str = "/mutate";
pub const VALIDATE_PATH: &str = "/validate";

/// How the API server reaches the webhook server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// In the cluster: a Service in front of the operator's Pods.
    Service { namespace: String, name: String, port: u16 },
    /// Anywhere else, e.g. `https://127.0.0.1:9443` for a local control plane.
    Url(String),
}

impl Endpoint {
    /// The names the serving certificate must carry.
    pub fn tls_names(&self) -> Vec<String> {
        match self {
            Endpoint::Service { namespace, name, .. } => {
                vec![format!("{name}.{namespace}.svc"), format!("{name}.{namespace}.svc.cluster.local")]
            }
            Endpoint::Url(url) => {
                let host = url.trim_start_matches("https://").split(['/', ':']).next().unwrap_or_default();
                vec![host.to_owned()]
            }
        }
    }

    fn client_config(&self, path: &str, ca_pem: &str) -> Value {
        let ca_bundle = k8s_openapi::ByteString(ca_pem.as_bytes().to_vec());
        match self {
            Endpoint::Service { namespace, name, port } => json!({
                "service": {"namespace": namespace, "name": name, "path": path, "port": port},
                "caBundle": ca_bundle,
            }),
            Endpoint::Url(url) => json!({"url": format!("{}{path}", url.trim_end_matches('/')), "caBundle": ca_bundle}),
        }
    }
}

fn rules(operations: &[&str], resources: &[&str]) -> Value {
    json!([{"apiGroups": [crate::api::GROUP], "apiVersions": [crate::api::VERSION], "operations": operations,
            "resources": resources, "scope": "Namespaced"}])
}

// Fail closed: without the webhook nobody's identity can be checked, so
// nothing of ours is admitted. Only our own kinds are routed here, so an
// operator outage never blocks anything else in the cluster.
fn webhook(name: &str, endpoint: &Endpoint, path: &str, ca_pem: &str, rules: Value) -> Value {
    json!({
        "name": name,
        "clientConfig": endpoint.client_config(path, ca_pem),
        "rules": rules,
        "failurePolicy": "Fail",
        "matchPolicy": "Equivalent",
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "admissionReviewVersions": ["v1"],
    })
}

pub fn mutating(endpoint: &Endpoint, ca_pem: &str) -> MutatingWebhookConfiguration {
    let hook = webhook(
        "identity.driftwarden.io",
        endpoint,
        MUTATE_PATH,
        ca_pem,
        rules(&["CREATE"], &["accessrequests", "accessreviews"]),
    );
    let mut hook = hook;
    hook["reinvocationPolicy"] = "IfNeeded".into();
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [hook],
    }))
    .expect("a well-formed MutatingWebhookConfiguration")
}

pub fn validating(endpoint: &Endpoint, ca_pem: &str) -> ValidatingWebhookConfiguration {
    let mut all_rules = rules(&["CREATE", "UPDATE"], &["accessrequests"]);
    if let (Some(list), Value::Array(more)) = (all_rules.as_array_mut(), rules(&["CREATE"], &["accessreviews"])) {
        list.extend(more);
    }
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": NAME},
        "webhooks": [webhook("policy.driftwarden.io", endpoint, VALIDATE_PATH, ca_pem, all_rules)],
    }))
    .expect("a well-formed ValidatingWebhookConfiguration")
}

/// Applies both configurations (server-side apply; a no-op when unchanged).
pub async fn apply(client: &Client, endpoint: &Endpoint, ca_pem: &str) -> Result<(), kube::Error> {
    let params = PatchParams::apply(crate::drift::OPERATOR_MANAGER).force();
    let mutating_api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
    mutating_api.patch(NAME, &params, &Patch::Apply(mutating(endpoint, ca_pem))).await?;
    let validating_api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
    validating_api.patch(NAME, &params, &Patch::Apply(validating(endpoint, ca_pem))).await?;
    Ok(())
}

/// Name of the write-log webhook's configuration (only the leader keeps it).
pub const WRITES_NAME: &str = "driftwarden-writes";

/// The write-log webhook's configuration: the kinds and namespaces the
/// DesiredStates manage change, so the leader keeps it (see
/// [`WritesHook::apply`]); the CA comes from the webhook server.
#[derive(Debug)]
pub struct WritesHook {
    endpoint: Endpoint,
    operator_namespace: String,
    enabled: bool,
    ca: std::sync::Mutex<Option<String>>,
    /// What was last applied (with the CA): apply only on a change.
    applied: std::sync::Mutex<Option<Value>>,
}

/// One managed kind: API group and plural resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ManagedKind {
    pub group: String,
    pub plural: String,
}

impl WritesHook {
    pub fn new(endpoint: Endpoint, operator_namespace: String, enabled: bool) -> Self {
        Self { endpoint, operator_namespace, enabled, ca: Default::default(), applied: Default::default() }
    }

    pub fn set_ca(&self, ca_pem: &str) {
        *self.ca.lock().unwrap_or_else(|p| p.into_inner()) = Some(ca_pem.to_owned());
    }

    /// Makes the configuration route writes of `kinds` in `namespaces`
    /// (None: every namespace but the operator's) to this replica's endpoint.
    pub async fn apply(
        &self,
        client: &Client,
        kinds: &std::collections::BTreeSet<ManagedKind>,
        namespaces: Option<&std::collections::BTreeSet<String>>,
    ) -> Result<(), kube::Error> {
        if !self.enabled {
            return Ok(());
        }
        let Some(ca) = self.ca.lock().unwrap_or_else(|p| p.into_inner()).clone() else { return Ok(()) };
        let wanted = serde_json::to_value(writes(&self.endpoint, &ca, kinds, namespaces, &self.operator_namespace))
            .unwrap_or_default();
        if self.applied.lock().unwrap_or_else(|p| p.into_inner()).as_ref() == Some(&wanted) {
            return Ok(());
        }
        let params = PatchParams::apply(crate::drift::OPERATOR_MANAGER).force();
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        api.patch(WRITES_NAME, &params, &Patch::Apply(&wanted)).await?;
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = Some(wanted);
        Ok(())
    }

    /// Forgets what was applied (a new term of leadership applies again).
    pub fn forget(&self) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// The write-log webhook: every create, update and delete of `kinds` (and
/// the subresource writes that change what a DesiredState declares:
/// `scale`, a Pod's `ephemeralcontainers` and `resize`) in `namespaces`,
/// never in the operator's own. It always allows and must never slow the
/// cluster down: `failurePolicy: Ignore` (a write admitted while the
/// operator is unreachable has no record, so its drift is reverted) and a
/// 2 s timeout. The API server skips it for dry runs (`NoneOnDryRun`).
/// Beside it, the session-command webhook, on the same terms: every
/// CONNECT on `pods/exec`, `pods/attach` and `pods/portforward` in every
/// namespace but the operator's (a command unseen while the operator is
/// unreachable is in the API server's audit log only, where there is one).
pub fn writes(
    endpoint: &Endpoint,
    ca_pem: &str,
    kinds: &std::collections::BTreeSet<ManagedKind>,
    namespaces: Option<&std::collections::BTreeSet<String>>,
    operator_namespace: &str,
) -> ValidatingWebhookConfiguration {
    let mut by_group: std::collections::BTreeMap<&str, Vec<String>> = std::collections::BTreeMap::new();
    for kind in kinds {
        let resources = by_group.entry(kind.group.as_str()).or_default();
        resources.push(kind.plural.clone());
        resources.push(format!("{}/scale", kind.plural));
        if kind.group.is_empty() && kind.plural == "pods" {
            resources.extend(["pods/ephemeralcontainers".to_owned(), "pods/resize".to_owned()]);
        }
    }
    let rules: Vec<Value> = by_group
        .into_iter()
        .map(|(group, resources)| {
            json!({"apiGroups": [group], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE", "DELETE"],
                   "resources": resources, "scope": "Namespaced"})
        })
        .collect();
    let not_ours = json!({"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": [operator_namespace]});
    let mut expressions = vec![not_ours.clone()];
    if let Some(namespaces) = namespaces {
        expressions.push(json!({"key": "kubernetes.io/metadata.name", "operator": "In", "values": namespaces}));
    }
    let hook = |name: &str, path: &str, rules: Value, expressions: Vec<Value>| {
        json!({
            "name": name,
            "clientConfig": endpoint.client_config(path, ca_pem),
            "rules": rules,
            "namespaceSelector": {"matchExpressions": expressions},
            "failurePolicy": "Ignore",
            "matchPolicy": "Equivalent",
            "sideEffects": "NoneOnDryRun",
            "timeoutSeconds": 2,
            "admissionReviewVersions": ["v1"],
        })
    };
    let mut webhooks: Vec<Value> = Vec::new();
    if !rules.is_empty() {
        webhooks.push(hook("writes.driftwarden.io", super::writes::WRITES_PATH, rules.into(), expressions));
    }
    // Commands in Pods (`kubectl exec`, `attach`, `port-forward`, `cp`) in
    // every namespace but ours, whatever the DesiredStates manage: a
    // session's namespace need not be managed for its commands to count.
    let sessions = json!([{"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CONNECT"],
                           "resources": ["pods/exec", "pods/attach", "pods/portforward"], "scope": "Namespaced"}]);
    webhooks.push(hook("sessions.driftwarden.io", super::writes::SESSIONS_PATH, sessions, vec![not_ours]));
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": WRITES_NAME},
        "webhooks": webhooks,
    }))
    .expect("a well-formed ValidatingWebhookConfiguration")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_write_log_hook_allows_on_failure_skips_dry_runs_and_our_namespace() {
        let endpoint = Endpoint::Url("https://127.0.0.1:9443".into());
        let kinds = [("apps", "deployments"), ("", "pods")]
            .map(|(group, plural)| ManagedKind { group: group.into(), plural: plural.into() })
            .into_iter()
            .collect();
        let namespaces = ["shop".to_owned()].into_iter().collect();
        let config = writes(&endpoint, "CA", &kinds, Some(&namespaces), "driftwarden-system");
        let hook = &config.webhooks.unwrap()[0];
        assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
        assert_eq!(hook.side_effects, "NoneOnDryRun");
        assert!(hook.timeout_seconds.unwrap() <= 2);
        assert_eq!(hook.client_config.url.as_deref(), Some("https://127.0.0.1:9443/writes"));
        let rules = hook.rules.clone().unwrap();
        let core = rules.iter().find(|r| r.api_groups.as_deref() == Some(&[String::new()][..])).unwrap();
        assert!(core.resources.as_ref().unwrap().contains(&"pods/ephemeralcontainers".to_owned()));
        let apps = rules.iter().find(|r| r.api_groups.as_deref() == Some(&["apps".to_owned()][..])).unwrap();
        assert_eq!(apps.resources.as_deref().unwrap(), ["deployments", "deployments/scale"]);
        let selector = hook.namespace_selector.clone().unwrap().match_expressions.unwrap();
        assert_eq!(selector[0].values.as_deref().unwrap(), ["driftwarden-system"]);
        assert_eq!(selector[1].values.as_deref().unwrap(), ["shop"]);
    }

    #[test]
    fn commands_in_pods_are_routed_in_every_namespace_but_ours_and_always_allowed() {
        let endpoint = Endpoint::Url("https://127.0.0.1:9443".into());
        for kinds in [Default::default(), [ManagedKind { group: "apps".into(), plural: "deployments".into() }].into()] {
            let namespaces = ["shop".to_owned()].into_iter().collect();
            let config = writes(&endpoint, "CA", &kinds, Some(&namespaces), "driftwarden-system");
            let hooks = config.webhooks.unwrap();
            let hook = hooks.iter().find(|h| h.name == "sessions.driftwarden.io").unwrap();
            assert_eq!(hook.failure_policy.as_deref(), Some("Ignore"));
            assert!(hook.timeout_seconds.unwrap() <= 2);
            assert_eq!(hook.client_config.url.as_deref(), Some("https://127.0.0.1:9443/sessions"));
            let rule = &hook.rules.as_ref().unwrap()[0];
            assert_eq!(rule.operations.as_deref().unwrap(), ["CONNECT"]);
            assert_eq!(rule.resources.as_deref().unwrap(), ["pods/exec", "pods/attach", "pods/portforward"]);
            let selector = hook.namespace_selector.clone().unwrap().match_expressions.unwrap();
            assert_eq!(selector.len(), 1);
            assert_eq!(
                (selector[0].operator.as_str(), selector[0].values.as_deref().unwrap()),
                ("NotIn", &["driftwarden-system".to_owned()][..])
            );
        }
    }

    use super::*;

    #[test]
    fn configurations_route_only_our_kinds_and_fail_closed() {
        let endpoint = Endpoint::Url("https://127.0.0.1:9443".into());
        let mutating = mutating(&endpoint, "CA");
        let hook = &mutating.webhooks.as_ref().unwrap()[0];
        assert_eq!(hook.failure_policy.as_deref(), Some("Fail"));
        assert_eq!(hook.client_config.url.as_deref(), Some("https://127.0.0.1:9443/mutate"));
        assert_eq!(hook.client_config.ca_bundle.as_ref().unwrap().0, b"CA");
        let rules = hook.rules.as_ref().unwrap();
        assert_eq!(rules[0].api_groups.as_deref(), Some(&["driftwarden.io".to_string()][..]));

        let validating = validating(&endpoint, "CA");
        let rules = validating.webhooks.as_ref().unwrap()[0].rules.clone().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].operations.as_deref(), Some(&["CREATE".to_string(), "UPDATE".to_string()][..]));
    }

    #[test]
    fn tls_names_follow_the_endpoint() {
        let service = Endpoint::Service { namespace: "dw".into(), name: "hook".into(), port: 443 };
        assert_eq!(service.tls_names(), ["hook.dw.svc", "hook.dw.svc.cluster.local"]);
        assert_eq!(Endpoint::Url("https://127.0.0.1:9443/".into()).tls_names(), ["127.0.0.1"]);
        let config = validating(&service, "CA");
        let service_ref = config.webhooks.unwrap()[0].client_config.service.clone().unwrap();
        assert_eq!((service_ref.name.as_str(), service_ref.port), ("hook", Some(443)));
    }
}
