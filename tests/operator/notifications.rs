//! Notifications against the real control plane: a local HTTP receiver
//! plays the team's webhook endpoint and Slack, and checks every delivery's
//! signature; a real Alertmanager receives standing drift and resolves it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use driftwarden::api::{AccessPhase, DesiredState, Notifier};
use driftwarden_dev::controlplane::operator::OPERATOR_NAMESPACE;
use driftwarden_dev::controlplane::{self, Supervisor, User};
use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::common::{AccessTest, drift_setup};
use crate::gate::{managed_shop, scale, set_mode, until};
use crate::support::{eventually, http_get, required};

/// One request the receiver took.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Inbox {
    received: Vec<Received>,
    /// Requests answered 503 before the next is taken (a flaky receiver).
    fail_next: usize,
}

/// A local HTTP endpoint that keeps what it is sent.
pub(crate) struct Receiver {
    pub port: u16,
    inbox: Arc<Mutex<Inbox>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn take(State(inbox): State<Arc<Mutex<Inbox>>>, uri: Uri, headers: HeaderMap, body: Bytes) -> StatusCode {
    let mut inbox = inbox.lock().unwrap();
    if uri.path() == "/refuses" {
        return StatusCode::BAD_REQUEST;
    }
    if inbox.fail_next > 0 {
        inbox.fail_next -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    inbox.received.push(Received { path: uri.path().to_owned(), headers, body: body.to_vec() });
    StatusCode::OK
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Self {
        let inbox = Arc::new(Mutex::new(Inbox { received: Vec::new(), fail_next: fail_first }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new().fallback(take).with_state(inbox.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { port, inbox, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn all(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().received.clone()
    }

    /// Waits for a delivery to `path` whose JSON body satisfies `done`.
    pub async fn wait_for(&self, path: &str, what: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        let found = eventually(timeout, || async {
            self.all().iter().filter(|r| r.path == path).map(Received::json).find(|body| done(body))
        })
        .await;
        found.unwrap_or_else(|| {
            let seen: Vec<String> = self.all().iter().map(|r| format!("{} {}", r.path, r.json())).collect();
            panic!("no {what} at {path} within {timeout:?}; received:\n{}", seen.join("\n"))
        })
    }
}

/// Sets `key` of a Secret in the operator's namespace (created if absent):
/// each test keeps its values under its own key of the shared Secrets.
pub(crate) async fn set_operator_secret(t: &AccessTest, name: &str, key: &str, value: &str) {
    let secrets: Api<Secret> = Api::namespaced(t.env.admin.clone(), OPERATOR_NAMESPACE);
    let patch = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": {key: value}});
    let params = PatchParams::apply(&format!("test-{key}")).force();
    secrets.patch(name, &params, &Patch::Apply(patch)).await.unwrap();
}

/// A Notifier in the operator's namespace for this test's namespace only.
pub(crate) async fn notifier(t: &AccessTest, name: &str, spec: Value) {
    let notifiers: Api<Notifier> = Api::namespaced(t.env.admin.clone(), OPERATOR_NAMESPACE);
    let mut spec = spec;
    spec["namespaces"] = json!([t.env.namespace]);
    let object =
        json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "Notifier", "metadata": {"name": name}, "spec": spec});
    notifiers.patch(name, &PatchParams::apply("test").force(), &Patch::Apply(object)).await.unwrap();
}

/// A signed webhook Notifier for this test's namespace, delivering to
/// `receiver` at `/hook`; returns the HMAC key.
pub(crate) async fn webhook_notifier(t: &AccessTest, receiver: &Receiver) -> String {
    let key = format!("hmac-key-{}", t.env.namespace);
    set_operator_secret(t, "notify-hmac", &t.env.namespace, &key).await;
    let spec = json!({"type": "Webhook", "url": receiver.url("/hook"),
                      "hmacSecretRef": {"name": "notify-hmac", "key": t.env.namespace}});
    notifier(t, &format!("hook-{}", t.env.namespace), spec).await;
    key
}

/// Checks a webhook delivery's signature and headers as a receiver would.
pub(crate) fn verify(received: &Received, key: &str) {
    let header = |name: &str| received.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let timestamp: i64 = header("x-driftwarden-timestamp").parse().expect("a timestamp header");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((now - timestamp).abs() < 300, "the signed timestamp is {timestamp}, now is {now}");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&received.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(header("x-driftwarden-signature"), format!("sha256={expected}"), "{}", received.json());
    assert_eq!(header("x-driftwarden-event"), received.json()["kind"], "the event header names the body's kind");
    assert!(!header("x-driftwarden-delivery").is_empty());
}

fn kind_of(body: &Value) -> &str {
    body["kind"].as_str().unwrap_or_default()
}

async fn notifier_status(name: &str, t: &AccessTest, done: impl Fn(&Value) -> bool) -> Value {
    let notifiers: Api<Notifier> = Api::namespaced(t.env.admin.clone(), OPERATOR_NAMESPACE);
    let found = eventually(Duration::from_secs(30), || async {
        let status = serde_json::to_value(notifiers.get(name).await.ok()?.status?).ok()?;
        done(&status).then_some(status)
    })
    .await;
    found.unwrap_or_else(|| panic!("Notifier {name}'s status did not come"))
}

async fn report_unauthorized(t: &AccessTest) {
    let states: Api<DesiredState> = t.env.api(User::Admin).await;
    let report = json!({"spec": {"remediation": {"unauthorized": "Report", "windowEnd": "Revert"}}});
    states.patch("shop", &PatchParams::default(), &Patch::Merge(report)).await.unwrap();
}

#[tokio::test]
async fn every_event_reaches_a_signed_webhook_and_slack_and_reported_drift_pairs_with_a_request() {
    let t = drift_setup("notify").await;
    let ns = t.env.namespace.clone();
    // The webhook's receiver fails its first two deliveries: they are retried.
    let hook = Receiver::start(2).await;
    let key = webhook_notifier(&t, &hook).await;
    let slack = Receiver::start(0).await;
    set_operator_secret(&t, "notify-slack", &ns, &slack.url("/services/T0/B0/secret")).await;
    notifier(&t, &format!("slack-{ns}"), json!({"type": "Slack", "urlSecretRef": {"name": "notify-slack", "key": ns}}))
        .await;
    // Misconfigured Notifiers say so in their status and lose nothing else.
    notifier(
        &t,
        &format!("nokey-{ns}"),
        json!({"type": "Webhook", "url": hook.url("/nokey"),
        "hmacSecretRef": {"name": "notify-hmac", "key": "no-such-key"}}),
    )
    .await;
    notifier(
        &t,
        &format!("refused-{ns}"),
        json!({"type": "Webhook", "url": hook.url("/refuses"),
        "hmacSecretRef": {"name": "notify-hmac", "key": ns}}),
    )
    .await;
    managed_shop(&t, json!({})).await;

    // Unauthorized drift, reverted at once.
    set_mode(&t, User::Admin, "debug").await;
    hook.wait_for("/hook", "a revert", Duration::from_secs(30), |b| kind_of(b) == "DriftReverted").await;

    // alice asks: the notice shows the drift pending in the namespace.
    report_unauthorized(&t).await;
    scale(&t, User::Admin, 4).await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| s.drifted == Some(1)).await;
    let reported = hook
        .wait_for("/hook", "reported drift", Duration::from_secs(10), |b| {
            kind_of(b) == "DriftReported" && b["drift"]["action"] == "Reported"
        })
        .await;
    assert_eq!(reported["drift"]["object"]["name"], "web");
    assert_eq!(reported["drift"]["fields"], json!(["/spec/replicas (changed)"]));
    // The fix command is ready to run: alice runs it as it stands.
    let fix = reported["fix"].as_str().unwrap().to_owned();
    assert!(fix.starts_with(&format!("driftwarden request edit --namespace {ns} ")), "{fix}");
    let command = fix.replacen("driftwarden", env!("CARGO_BIN_EXE_driftwarden"), 1);
    let kubeconfig = t.env.cp.kubeconfig(User::Alice);
    let ran = Command::new("sh")
        .arg("-c")
        .arg(format!("{command} --name alice-fix --nowait --kubeconfig {}", kubeconfig.display()))
        .output()
        .unwrap();
    assert!(ran.status.success(), "{}{}", String::from_utf8_lossy(&ran.stdout), String::from_utf8_lossy(&ran.stderr));
    // Its notice shows the drift it would let stand.
    let created = hook
        .wait_for("/hook", "the request", Duration::from_secs(10), |b| {
            kind_of(b) == "RequestCreated" && b["request"]["name"] == "alice-fix"
        })
        .await;
    assert_eq!(created["request"]["pendingDrift"]["drifted"], 1);
    assert_eq!(created["request"]["pendingDrift"]["objects"], json!([format!("Deployment {ns}/web")]));
    t.review(User::Carol, "alice-fix-no", "alice-fix", "Deny").await.unwrap();
    let denied = hook.wait_for("/hook", "a denial", Duration::from_secs(10), |b| kind_of(b) == "RequestDenied").await;
    assert!(denied["summary"].as_str().unwrap().contains("denied"), "{denied}");
    // The reported drift is put back by hand: resolved.
    scale(&t, User::Admin, 2).await;
    hook.wait_for("/hook", "the resolution", Duration::from_secs(10), |b| {
        kind_of(b) == "DriftReported" && b["drift"]["action"] == "Resolved"
    })
    .await;

    // A short window: approved; she changes the setting; the window ends:
    // expiring, ended, reverted at its end, and the patch that keeps it.
    t.request(User::Alice, "alice-short", "edit", "15s").await.unwrap();
    t.review(User::Carol, "alice-short-ok", "alice-short", "Approve").await.unwrap();
    t.wait_for_phase("alice-short", AccessPhase::Active, Duration::from_secs(10)).await;
    set_mode(&t, User::Alice, "maintenance").await;
    for kind in ["RequestApproved", "RequestExpiring", "RequestEnded", "WindowEndReverted", "SessionCodified"] {
        hook.wait_for("/hook", kind, Duration::from_secs(40), |b| kind_of(b) == kind).await;
    }
    let ended = hook.wait_for("/hook", "the end", Duration::from_secs(1), |b| kind_of(b) == "RequestEnded").await;
    let activity = ended["request"]["activity"].as_array().unwrap();
    // (A patch is an UPDATE to admission, and so in the write log.)
    let settings = format!("configmaps {ns}/settings by alice");
    assert!(activity.iter().any(|a| a.as_str().is_some_and(|a| a.ends_with(&settings))), "{ended}");
    let codified =
        hook.wait_for("/hook", "the patch", Duration::from_secs(1), |b| kind_of(b) == "SessionCodified").await;
    assert!(codified["request"]["patch"].as_str().unwrap().contains("+  mode: maintenance"), "{codified}");

    // Every delivery is signed; every kind came; Slack got them readable.
    let deliveries: Vec<Received> = hook.all().into_iter().filter(|r| r.path == "/hook").collect();
    for received in &deliveries {
        verify(received, &key);
    }
    let kinds: BTreeSet<String> = deliveries.iter().map(|r| kind_of(&r.json()).to_owned()).collect();
    let every = [
        "DriftReported",
        "DriftReverted",
        "RequestApproved",
        "RequestCreated",
        "RequestDenied",
        "RequestEnded",
        "RequestExpiring",
        "SessionCodified",
        "WindowEndReverted",
    ];
    assert_eq!(kinds, every.iter().map(|k| k.to_string()).collect(), "every kind of notice, and no other");
    let reports = deliveries.iter().filter(|r| r.json()["drift"]["action"] == "Reported").count();
    assert_eq!(reports, 1, "standing drift is announced once, however often its status is written");
    let texts: Vec<String> =
        slack.all().iter().map(|r| r.json()["text"].as_str().unwrap_or_default().to_owned()).collect();
    assert!(texts.iter().all(|r| !r.is_empty()));
    assert!(texts.iter().any(|t| t.starts_with(&format!(":rotating_light: *Drift reported* in `{ns}`"))), "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("To fix it: `driftwarden request edit")), "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("Review: `driftwarden approve alice-fix")), "{texts:#?}");
    let same = eventually(Duration::from_secs(10), || async {
        let (slack, hook) = (slack.all().len(), hook.all().iter().filter(|r| r.path == "/hook").count());
        (slack == hook).then_some(())
    })
    .await;
    assert!(same.is_some(), "Slack got what the webhook got");
    assert!(hook.all().iter().all(|r| r.path != "/nokey"), "nothing unsigned is ever sent");

    let ready = |status: &Value| status["conditions"][0]["status"].clone();
    let nokey = notifier_status(&format!("nokey-{ns}"), &t, |s| s["deadLettered"].as_i64() > Some(0)).await;
    assert_eq!((ready(&nokey), nokey["conditions"][0]["reason"].clone()), (json!("False"), json!("SecretMissing")));
    let refused = notifier_status(&format!("refused-{ns}"), &t, |s| s["deadLettered"].as_i64() > Some(0)).await;
    assert_eq!(refused["conditions"][0]["reason"], "DeliveryFailing");
    assert_eq!(refused["lastError"], "the receiver answered 400 Bad Request");
    let good =
        notifier_status(&format!("hook-{ns}"), &t, |s| s["delivered"].as_i64() >= Some(deliveries.len() as i64)).await;
    assert_eq!((ready(&good), good["deadLettered"].clone()), (json!("True"), json!(0)));
    let (_, metrics) = http_get(t.operator.http_port, "/metrics").unwrap();
    assert!(metrics.contains(r#"driftwarden_notifications_total{sink="webhook",outcome="retried"}"#), "retries count");
    assert!(metrics.contains(r#"driftwarden_notifications_total{sink="webhook",outcome="dead_lettered"}"#));
    // No message carries the Slack URL (a credential) anywhere.
    let everything: String = hook.all().iter().chain(slack.all().iter()).map(|r| r.json().to_string()).collect();
    assert!(!everything.contains("/services/T0/B0/secret"));
}

/// An Alertmanager process with its own storage and no cluster peers.
struct Alertmanager {
    port: u16,
    log: PathBuf,
    _supervisor: Supervisor,
}

impl Alertmanager {
    fn binary() -> Option<PathBuf> {
        let how = format!(
            "the harness builds it with Go from the Go module proxy (`bash dev/controlplane/build.sh alertmanager`); \
             or set {} to an alertmanager executable",
            controlplane::ALERTMANAGER_ENV
        );
        required("Alertmanager", controlplane::alertmanager_binary().map_err(|e| e.to_string()), &how)
    }

    fn start(binary: &std::path::Path, dir: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::create_dir_all(dir).unwrap();
        let config = dir.join("alertmanager.yml");
        // JSON is YAML.
        let routes = json!({"route": {"receiver": "nobody"}, "receivers": [{"name": "nobody"}]});
        std::fs::write(&config, routes.to_string()).unwrap();
        let log = dir.join("alertmanager.log");
        let mut command = Command::new(binary);
        command
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        let supervisor = Supervisor::new().unwrap();
        supervisor.spawn("alertmanager", command, log.clone()).unwrap();
        Self { port, log, _supervisor: supervisor }
    }

    /// The alerts Alertmanager holds for `namespace` (firing or resolved,
    /// with their state).
    fn alerts(&self, namespace: &str) -> Option<Vec<Value>> {
        let path = format!("/api/v2/alerts?filter=namespace%3D%22{namespace}%22");
        let (status, body) = http_get(self.port, &path)?;
        (status == 200).then(|| serde_json::from_str::<Vec<Value>>(&body).ok()).flatten()
    }
}

#[tokio::test]
async fn alertmanager_fires_while_drift_stands_and_resolves_when_it_is_gone() {
    let Some(binary) = Alertmanager::binary() else { return };
    let t = drift_setup("notify-am").await;
    let ns = t.env.namespace.clone();
    let alertmanager = Alertmanager::start(&binary, &t.operator.cp.dir().join(format!("alertmanager-{ns}")));
    let up = eventually(Duration::from_secs(30), || async { alertmanager.alerts(&ns) }).await;
    assert!(up.is_some(), "Alertmanager did not answer; see {}", alertmanager.log.display());
    let url = format!("http://127.0.0.1:{}", alertmanager.port);
    notifier(&t, &format!("am-{ns}"), json!({"type": "Alertmanager", "url": url})).await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report", "windowEnd": "Revert"}})).await;

    scale(&t, User::Admin, 5).await;
    let firing = eventually(Duration::from_secs(20), || async {
        let alerts = alertmanager.alerts(&ns)?;
        alerts.into_iter().find(|a| a["status"]["state"] == "active")
    })
    .await
    .unwrap_or_else(|| panic!("no alert fired; see {}", alertmanager.log.display()));
    assert_eq!(firing["labels"]["alertname"], "DriftwardenDriftStands");
    assert_eq!(firing["labels"]["object"], format!("Deployment {ns}/web"));
    assert_eq!(firing["labels"]["desiredstate"], "shop");
    assert!(firing["annotations"]["fix"].as_str().unwrap().starts_with("driftwarden request edit"), "{firing}");

    // Put back by hand: the alert resolves (Alertmanager drops it from
    // the active ones at once, its endsAt being now).
    let deployments: Api<Deployment> = t.env.api(User::Admin).await;
    scale(&t, User::Admin, 2).await;
    until(Duration::from_secs(20), "the alert resolved", || async {
        alertmanager.alerts(&ns).is_some_and(|alerts| alerts.iter().all(|a| a["status"]["state"] != "active"))
    })
    .await;
    assert_eq!(deployments.get("web").await.unwrap().spec.unwrap().replicas, Some(2));
}
