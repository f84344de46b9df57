//! Test support: one control plane per test binary, a fresh namespace per
//! test, clients and kubectl per user, logs pointed at when a test fails.
//! Shared by the test binaries; each uses only part of it.
#![allow(dead_code)]

pub mod operator;

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use driftwarden_dev::controlplane::{self, ControlPlane, User};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::{Client, Resource};

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// The shared control plane, started (and the CRDs installed) on first use.
///
/// It starts on a thread of its own with a runtime of its own, because each
/// test has its own runtime, which ends with the test. Its processes die with
/// the test binary, however that ends (see `controlplane::supervisor`).
pub fn control_plane() -> &'static ControlPlane {
    started_in(&CONTROL_PLANE)
}

/// A control plane of a test's own (in `slot`), started and set up as the
/// shared one: for a test whose cluster-wide objects would disturb others.
pub fn started_in(slot: &'static OnceLock<Result<ControlPlane, String>>) -> &'static ControlPlane {
    let started = slot.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let options = controlplane::Options { controller_manager: true, ..Default::default() };
                let cp = ControlPlane::start(options).await.map_err(|e| e.to_string())?;
                let admin = cp.client(User::Admin).await.map_err(|e| e.to_string())?;
                driftwarden::operator::crds::install(&admin, Duration::from_secs(60))
                    .await
                    .map_err(|e| e.to_string())?;
                eprintln!("control plane ready at {} (files and logs in {})", cp.server_url(), cp.dir().display());
                Ok(cp)
            })
        })
        .join()
        .unwrap_or_else(|_| Err("starting the control plane panicked".into()))
    });
    match started {
        Ok(cp) => cp,
        Err(err) => panic!("the test control plane did not start: {err}"),
    }
}

/// `helm`, from `DRIFTWARDEN_HELM` or built and cached by
/// `dev/controlplane/build.sh helm` (see `controlplane::helm_binary`).
pub fn helm_binary() -> PathBuf {
    controlplane::helm_binary().unwrap_or_else(|err| {
        panic!(
            "helm is not available: {err}\nto get it: the harness builds it with Go from the Go module proxy \
             (`bash dev/controlplane/build.sh helm`), or set DRIFTWARDEN_HELM to a helm v3 executable"
        )
    })
}

/// A tool a test needs that the harness could not provide: under CI
/// (`CI=true`) the test fails with `why` and `how`; elsewhere it prints them
/// and is skipped (returns None), so a developer's machine without the tool
/// still runs the rest.
pub fn required<T>(tool: &str, found: Result<T, String>, how: &str) -> Option<T> {
    match found {
        Ok(found) => Some(found),
        Err(why) if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{tool} is not available: {why}\nto get it: {how}")
        }
        Err(why) => {
            eprintln!("SKIPPED: {tool} is not available: {why}\nto get it: {how}");
            None
        }
    }
}

/// One test's view of the cluster: its own namespace and an admin client.
pub struct TestEnv {
    pub cp: &'static ControlPlane,
    pub namespace: String,
    pub admin: Client,
}

impl TestEnv {
    /// Creates a namespace named after the test on the shared control plane.
    pub async fn new(test: &str) -> Self {
        Self::on(control_plane(), test).await
    }

    /// Creates a namespace named after the test on `cp`. Its labels include
    /// `driftwarden.io/test-namespace=<name>`, so a test can aim a
    /// cluster-scoped object (an AccessPolicy) at its namespace alone.
    pub async fn on(cp: &'static ControlPlane, test: &str) -> Self {
        let admin = cp.client(User::Admin).await.expect("admin client");
        let namespace = unique_name(test);
        let mut ns = Namespace::default();
        ns.metadata.name = Some(namespace.clone());
        ns.metadata.labels = Some(
            [
                ("driftwarden.io/test".to_string(), "true".to_string()),
                ("driftwarden.io/test-namespace".to_string(), namespace.clone()),
            ]
            .into(),
        );
        Api::<Namespace>::all(admin.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("creating the test namespace");
        Self { cp, namespace, admin }
    }

    pub async fn client(&self, user: User) -> Client {
        self.cp.client(user).await.expect("user client")
    }

    /// A namespaced API for `K` as `user`.
    pub async fn api<K>(&self, user: User) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client(user).await, &self.namespace)
    }

    /// An untyped namespaced API for `K` as `user`, to send objects the
    /// typed structs could not even hold (invalid durations, missing fields).
    pub async fn raw_api<K>(&self, user: User) -> Api<DynamicObject>
    where
        K: Resource<DynamicType = ()>,
    {
        Api::namespaced_with(self.client(user).await, &self.namespace, &ApiResource::erase::<K>(&()))
    }

    /// kubectl as `user`, in this test's namespace.
    pub fn kubectl(&self, user: User) -> Command {
        let mut command = self.cp.kubectl(user);
        command.arg(format!("--namespace={}", self.namespace));
        command
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test failed: namespace {} is kept; control plane logs are in {}",
                self.namespace,
                self.cp.dir().display()
            );
        }
    }
}

/// A DNS label from the test name plus a random suffix.
pub fn unique_name(test: &str) -> String {
    let base: String =
        test.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).take(50).collect();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("{}-{:05x}", base.trim_matches('-'), nanos % 0xfffff)
}

/// Runs a command and returns its stdout, failing the test with stderr if it fails.
pub fn output(mut command: Command) -> String {
    let out = command.output().expect("running a command");
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An AccessRequest as JSON, for the raw API.
pub fn access_request(name: &str, requester: Option<&str>, role: &str, duration: &str, reason: &str) -> DynamicObject {
    let mut spec = serde_json::json!({
        "role": {"kind": "ClusterRole", "name": role},
        "duration": duration,
        "reason": reason,
    });
    if let Some(requester) = requester {
        spec["requester"] = requester.into();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "driftwarden.io/v1alpha1",
        "kind": "AccessRequest",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .expect("a valid DynamicObject")
}

/// The API server's error status code and message, failing the test on success.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.message),
        other => panic!("expected the API server to refuse, got {other:?}"),
    }
}

/// A plain HTTP/1.0 GET on loopback: `(status, body)`, or None if nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((status, body))
}
