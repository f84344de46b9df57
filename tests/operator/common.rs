//! What every access test sets up: a namespace of its own, an AccessPolicy
//! aimed at it alone, and the requester/approver roles bound to the dev and
//! sre groups there.

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessPolicy, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde_json::{Value, json};

use crate::support::operator::{OPERATOR, OperatorEnv, operator_env};
use crate::support::{TestEnv, access_request, eventually};

pub const REASON: &str = "INC-4242: checkout pods crash-looping";

pub struct AccessTest {
    pub env: TestEnv,
    pub operator: &'static OperatorEnv,
    /// Keeps the operator running for this test; a test that stops the
    /// operator gives this up first and takes the lock for writing.
    pub running: Option<tokio::sync::RwLockReadGuard<'static, ()>>,
}

/// `policy` is merged over a default policy: ClusterRole edit and view,
/// at most 1h, one approval from group sre.
pub async fn setup(test: &str, policy: Value) -> AccessTest {
    let running = OPERATOR.read().await;
    let mut t = setup_unlocked(test, policy).await;
    t.running = Some(running);
    t
}

/// A second namespace for a test that already holds one [`AccessTest`]
/// (whose hold on the running operator covers both). Taking a second hold
/// could deadlock: a test waiting to stop the operator queues between them.
pub async fn another(test: &str, policy: Value) -> AccessTest {
    setup_unlocked(test, policy).await
}

async fn setup_unlocked(test: &str, policy: Value) -> AccessTest {
    setup_on(operator_env(), test, policy).await
}

/// A drift test's namespace on the control plane without an audit webhook
/// (a managed cluster's): only the operator's write log attributes writes.
pub async fn drift_setup_without_audit(test: &str) -> AccessTest {
    let running = crate::support::operator::OPERATOR_WITHOUT_AUDIT.read().await;
    let mut t = setup_on(crate::support::operator::operator_env_without_audit(), test, json!({})).await;
    t.running = Some(running);
    t
}

async fn setup_on(operator: &'static OperatorEnv, test: &str, policy: Value) -> AccessTest {
    let env = TestEnv::on(&operator.cp, test).await;
    for (role, group) in [("driftwarden-requester", "dev"), ("driftwarden-approver", "sre")] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{group}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }))
        .unwrap();
        env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();
    }
    let mut spec = json!({
        "namespaceSelector": {"matchLabels": {"driftwarden.io/test-namespace": env.namespace}},
        "roles": [{"kind": "ClusterRole", "name": "edit"}, {"kind": "ClusterRole", "name": "view"}],
        "maxDuration": "1h",
        "approvers": {"groups": ["sre"]},
    });
    for (key, value) in policy.as_object().unwrap() {
        spec[key] = value.clone();
    }
    let policy: AccessPolicy =
        serde_json::from_value(json!({"metadata": {"name": env.namespace}, "spec": spec})).unwrap();
    Api::<AccessPolicy>::all(env.admin.clone()).create(&PostParams::default(), &policy).await.unwrap();
    AccessTest { env, operator, running: None }
}

impl AccessTest {
    /// `user` asks for ClusterRole `role` for `duration`.
    pub async fn request(
        &self,
        user: User,
        name: &str,
        role: &str,
        duration: &str,
    ) -> Result<DynamicObject, kube::Error> {
        let api = self.env.raw_api::<AccessRequest>(user).await;
        api.create(&PostParams::default(), &access_request(name, None, role, duration, REASON)).await
    }

    /// `user` asks for a role of `kind` (`Role` or `ClusterRole`) for `duration`.
    pub async fn request_role(
        &self,
        user: User,
        name: &str,
        kind: &str,
        role: &str,
        duration: &str,
    ) -> Result<DynamicObject, kube::Error> {
        let mut request = access_request(name, None, role, duration, REASON);
        request.data["spec"]["role"]["kind"] = kind.into();
        self.env.raw_api::<AccessRequest>(user).await.create(&PostParams::default(), &request).await
    }

    /// `user` reviews `request` with `decision` (Approve or Deny).
    pub async fn review(
        &self,
        user: User,
        name: &str,
        request: &str,
        decision: &str,
    ) -> Result<DynamicObject, kube::Error> {
        let api = self.env.raw_api::<AccessReview>(user).await;
        let review: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview", "metadata": {"name": name},
            "spec": {"accessRequest": request, "decision": decision, "reason": "checked the incident ticket"},
        }))
        .unwrap();
        api.create(&PostParams::default(), &review).await
    }

    /// Waits for `request` to reach `phase`.
    pub async fn wait_for_phase(&self, name: &str, phase: AccessPhase, timeout: Duration) -> AccessRequest {
        let api = self.env.api::<AccessRequest>(User::Admin).await;
        let reached = eventually(timeout, || async {
            let request = api.get(name).await.ok()?;
            (request.status.as_ref()?.phase? == phase).then_some(request)
        })
        .await;
        match reached {
            Some(request) => request,
            None => {
                let request = api.get(name).await.ok();
                panic!(
                    "{name} did not reach {phase:?} within {timeout:?}; status: {:#?}",
                    request.and_then(|r| r.status)
                );
            }
        }
    }

    pub async fn binding(&self, request: &str) -> Option<RoleBinding> {
        let name = driftwarden::access::grant::binding_name(request);
        self.env.api::<RoleBinding>(User::Admin).await.get_opt(&name).await.unwrap()
    }

    /// The Events recorded for `request`, as "Reason: note" lines.
    pub async fn events(&self, request: &str) -> Vec<String> {
        let api: Api<k8s_openapi::api::events::v1::Event> =
            Api::namespaced(self.env.admin.clone(), &self.env.namespace);
        let mut events: Vec<_> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(request))
            .collect();
        events.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
        events
            .into_iter()
            .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect()
    }

    /// The Events of `request` once `done` says they are complete (they are
    /// published just after the status is written), or after 10 s.
    pub async fn events_until(&self, request: &str, done: impl Fn(&[String]) -> bool) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.events(request).await;
            if done(&events) || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Can `user` create ConfigMaps here, according to the API server?
    pub async fn can_create_configmaps(&self, user: User) -> bool {
        let review: k8s_openapi::api::authorization::v1::SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": {"namespace": self.env.namespace, "verb": "create", "resource": "configmaps"}}
        }))
        .unwrap();
        let api: Api<k8s_openapi::api::authorization::v1::SelfSubjectAccessReview> =
            Api::all(self.env.client(user).await);
        let answer = api.create(&PostParams::default(), &review).await.unwrap();
        answer.status.is_some_and(|s| s.allowed)
    }
}

/// The untyped API of AccessRequests as `user`, for patches.
pub async fn raw_requests(test: &AccessTest, user: User) -> Api<DynamicObject> {
    Api::namespaced_with(test.env.client(user).await, &test.env.namespace, &ApiResource::erase::<AccessRequest>(&()))
}

/// Sleeps into the next whole second: creation times are whole seconds, and
/// an object created in the same second as its DesiredState counts as older.
pub async fn next_second() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    tokio::time::sleep(Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())) + Duration::from_millis(5))
        .await;
}

/// [`another`], for drift tests.
pub async fn another_drift(test: &str) -> AccessTest {
    another(test, json!({})).await
}

/// A namespace of its own with the operator running, for drift tests.
pub async fn drift_setup(test: &str) -> AccessTest {
    setup(test, json!({})).await
}

impl AccessTest {
    /// Waits until the write-log webhook routes writes in this test's
    /// namespace. The leader adds a namespace within about half a second of
    /// watching it; a write before that has no record, so its drift is
    /// judged unauthorized (fail closed), whoever made it.
    pub async fn wait_for_write_log(&self) {
        use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
        let api: Api<ValidatingWebhookConfiguration> = Api::all(self.env.admin.clone());
        let namespace = self.env.namespace.as_str();
        let routed = eventually(Duration::from_secs(10), || async {
            let hooks = api.get_opt(driftwarden::webhook::configuration::WRITES_NAME).await.ok()??;
            let writes = hooks.webhooks?.into_iter().find(|w| w.name == "writes.driftwarden.io")?;
            let expressions = writes.namespace_selector?.match_expressions?;
            let listed = |e: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement| {
                e.operator == "In" && e.values.iter().flatten().any(|v| *v == namespace)
            };
            expressions.iter().any(listed).then_some(())
        })
        .await;
        assert!(routed.is_some(), "the write-log webhook never routed namespace {}", self.env.namespace);
    }

    /// Creates a source ConfigMap holding `files` and a DesiredState reading
    /// it that only reports drift (the detection tests watch drift stay).
    pub async fn desired_state(&self, name: &str, files: &[(&str, String)], ignore: Value) {
        let report = json!({"unauthorized": "Report", "windowEnd": "Report"});
        self.desired_state_spec(name, files, json!({"ignore": ignore, "remediation": report})).await;
    }

    /// Creates a source ConfigMap holding `files` and a DesiredState reading
    /// it, with `spec` merged into its spec (remediation, ignore, dryRun).
    pub async fn desired_state_spec(&self, name: &str, files: &[(&str, String)], spec: Value) {
        let data: serde_json::Map<String, Value> =
            files.iter().map(|(k, v)| ((*k).to_owned(), Value::from(v.clone()))).collect();
        let source = format!("{name}-source");
        let mut config_map: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "metadata": {
                "name": source,
                "labels": {"driftwarden.io/source": source},
                "annotations": {"driftwarden.io/revision": "0123abcd"},
            },
            "data": data,
        }))
        .unwrap();
        self.operator.publisher.sign(&self.env.namespace, std::slice::from_mut(&mut config_map));
        self.env
            .api::<k8s_openapi::api::core::v1::ConfigMap>(User::Admin)
            .await
            .create(&PostParams::default(), &config_map)
            .await
            .unwrap();
        let mut full_spec = json!({"sources": [{"name": format!("{name}-source")}]});
        for (key, value) in spec.as_object().expect("spec is an object") {
            full_spec[key] = value.clone();
        }
        let state: driftwarden::api::DesiredState =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": full_spec})).unwrap();
        self.env
            .api::<driftwarden::api::DesiredState>(User::Admin)
            .await
            .create(&PostParams::default(), &state)
            .await
            .unwrap();
    }

    /// Changes the source ConfigMap `name` with `change` and writes it back
    /// signed, in one write, as the publisher would.
    pub async fn update_source(&self, name: &str, change: impl FnOnce(&mut k8s_openapi::api::core::v1::ConfigMap)) {
        let api = self.env.api::<k8s_openapi::api::core::v1::ConfigMap>(User::Admin).await;
        let mut source = api.get(name).await.unwrap();
        change(&mut source);
        self.operator.publisher.sign(&self.env.namespace, std::slice::from_mut(&mut source));
        api.replace(name, &PostParams::default(), &source).await.unwrap();
    }

    /// Waits until the DesiredState's status satisfies `done`; fails with the status.
    pub async fn wait_for_status(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&driftwarden::api::DesiredStateStatus) -> bool,
    ) -> driftwarden::api::DesiredStateStatus {
        let api = self.env.api::<driftwarden::api::DesiredState>(User::Admin).await;
        let reached = eventually(timeout, || async {
            let status = api.get(name).await.ok()?.status?;
            done(&status).then_some(status)
        })
        .await;
        match reached {
            Some(status) => status,
            None => {
                let status = api.get(name).await.ok().and_then(|s| s.status);
                panic!("DesiredState {name} did not reach the expected status within {timeout:?}: {status:#?}");
            }
        }
    }

    /// Runs kubectl as admin in this namespace with `args`, feeding `stdin`.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let mut command = self.env.kubectl(User::Admin);
        command
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        if let Some(input) = stdin {
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "kubectl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The condition `type_` of a DesiredState status.
pub fn condition<'a>(
    status: &'a driftwarden::api::DesiredStateStatus,
    type_: &str,
) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}
