//! Who asked the API server for what: the harness's API server is restarted
//! with an audit log of every request (reads included, at Metadata level),
//! and requests are counted per user and verb from it.
//!
//! `apiserver_request_total` in /metrics has no user or user-agent label
//! (v1.35: verb, dry_run, group, version, resource, subresource, scope,
//! component, code), so it cannot tell the operator's requests from the
//! controller manager's; the audit log can.
//!
//! The restart is also what the operator sees when a control plane is
//! upgraded: every watch breaks and must resume or list again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context as _;
use driftwarden_dev::controlplane::operator::OperatorEnv;
use driftwarden_dev::controlplane::{Supervisor, User};
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// The restarted API server (stopped when this is dropped) and its audit log.
pub struct AuditLog {
    path: PathBuf,
    apiserver: Command,
    log: PathBuf,
    supervisor: Supervisor,
    admin: kube::Client,
}

/// Requests counted by (verb, resource).
pub type Counts = BTreeMap<(String, String), usize>;

/// One request, as the audit log has it.
pub struct Request {
    pub verb: String,
    /// The resource (`leases`, `configmaps/status`), or the path of a
    /// request for no object (discovery).
    pub resource: String,
    pub uri: String,
    pub at: Timestamp,
}

/// The requests counted by (verb, resource).
pub fn count(requests: &[Request]) -> Counts {
    let mut counts = Counts::new();
    for request in requests {
        *counts.entry((request.verb.clone(), request.resource.clone())).or_default() += 1;
    }
    counts
}

impl AuditLog {
    /// Stops the harness's kube-apiserver and starts it again with the same
    /// flags, except: an audit log file of every request instead of the
    /// audit webhook (whose policy drops reads). Returns once it is ready.
    pub async fn restart_apiserver(env: &OperatorEnv) -> anyhow::Result<Self> {
        let port = env.cp.server_url().rsplit(':').next().unwrap_or_default().to_owned();
        let secure_port = format!("--secure-port={port}");
        let pid = crate::process::find_process(|c| c.contains("kube-apiserver") && c.contains(&secure_port))
            .context("the harness's kube-apiserver is not running")?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
        let original: Vec<String> =
            String::from_utf8(cmdline)?.split('\0').skip(1).filter(|a| !a.is_empty()).map(str::to_owned).collect();

        // The harness's policy, with reads logged (Metadata) instead of dropped.
        let dir = env.cp.dir();
        let policy = std::fs::read_to_string(dir.join("audit-policy.yaml"))?;
        anyhow::ensure!(policy.contains("- level: None"), "the harness's audit policy changed shape");
        let policy_file = dir.join("audit-policy-all.yaml");
        std::fs::write(&policy_file, policy.replace("- level: None", "- level: Metadata"))?;
        let path = dir.join("audit.log");
        let mut args: Vec<String> = original.into_iter().filter(|a| !a.starts_with("--audit-")).collect();
        args.push(format!("--audit-policy-file={}", policy_file.display()));
        args.push(format!("--audit-log-path={}", path.display()));
        args.push("--audit-log-format=json".into());
        let mut apiserver = Command::new(env.cp.bin_dir().join("kube-apiserver"));
        apiserver.args(&args);

        env.cp.stop_component("kube-apiserver");
        let log = dir.join("kube-apiserver-audited.log");
        let audit =
            Self { path, apiserver, log, supervisor: Supervisor::new()?, admin: env.cp.client(User::Admin).await? };
        audit.start().await?;
        Ok(audit)
    }

    /// Stops the API server (SIGTERM, as a rolling upgrade does) and starts
    /// it again; the audit log goes on.
    pub async fn restart(&self) -> anyhow::Result<()> {
        self.supervisor.stop("kube-apiserver");
        self.start().await
    }

    async fn start(&self) -> anyhow::Result<()> {
        let mut command = Command::new(self.apiserver.get_program());
        command.args(self.apiserver.get_args());
        self.supervisor.spawn("kube-apiserver", command, self.log.clone())?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let request = http::Request::get("/readyz").body(Vec::new())?;
            if matches!(self.admin.request_text(request).await, Ok(body) if body.trim() == "ok") {
                return Ok(());
            }
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "the restarted kube-apiserver is not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Requests `username` made that the API server received in `[from, to)`.
    pub fn requests(&self, username: &str, from: Timestamp, to: Timestamp) -> anyhow::Result<Vec<Request>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Event {
            #[serde(rename = "auditID")]
            audit_id: String,
            verb: String,
            #[serde(rename = "requestURI")]
            request_uri: String,
            user: UserInfo,
            object_ref: Option<ObjectRef>,
            request_received_timestamp: String,
        }
        #[derive(Deserialize)]
        struct UserInfo {
            username: Option<String>,
        }
        #[derive(Deserialize)]
        struct ObjectRef {
            resource: Option<String>,
            subresource: Option<String>,
        }
        let text = std::fs::read_to_string(&self.path)?;
        let mut seen = std::collections::HashSet::new();
        let mut requests = Vec::new();
        for line in text.lines() {
            let Ok(event) = serde_json::from_str::<Event>(line) else { continue };
            let Ok(at) = event.request_received_timestamp.parse::<Timestamp>() else { continue };
            // A watch is logged when its response starts and again when it ends.
            if event.user.username.as_deref() != Some(username) || at < from || at >= to || !seen.insert(event.audit_id)
            {
                continue;
            }
            // Requests for no object (discovery, /version) by their path.
            let path = event.request_uri.split('?').next().unwrap_or_default().to_owned();
            let resource = event.object_ref.map_or(path, |o| match o.subresource {
                Some(sub) => format!("{}/{sub}", o.resource.unwrap_or_default()),
                None => o.resource.unwrap_or_default(),
            });
            requests.push(Request { verb: event.verb, resource, uri: event.request_uri, at });
        }
        Ok(requests)
    }
}

/// Whether a verb changes something.
pub fn is_write(verb: &str) -> bool {
    matches!(verb, "create" | "update" | "patch" | "delete" | "deletecollection")
}

/// `n verb resource` for each entry, joined.
pub fn describe(counts: &Counts) -> String {
    if counts.is_empty() {
        return "none".into();
    }
    counts.iter().map(|((verb, resource), n)| format!("{n} {verb} {resource}")).collect::<Vec<_>>().join(", ")
}
