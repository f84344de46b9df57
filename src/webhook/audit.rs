//! The audit webhook receiver: the API server's `--audit-webhook-config-file`
//! backend posts batches of audit events here. Each write by someone while
//! an access window is open in that namespace is logged on the
//! AccessRequest: the requester's own writes in `activity`, anyone else's
//! in `scopeWrites`. The gate reads both to attribute drift.
//!
//! The caller must present the bearer token kept in a Secret in the
//! operator's namespace (key `token`); without that Secret every call is
//! refused. Batches are answered at once and logged by a worker; when the
//! worker falls behind, calls get 503 and the API server retries them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::api::{AccessPhase, AccessRequest};
use crate::gate::audit::{self, AuditWrite, Window};
use crate::operator::gate::log_writes;
use crate::operator::metrics::{AuditLabels, AuditOutcome, Metrics};
use crate::operator::writelog::SharedLog;

/// How long a token read from the Secret is trusted before it is read again.
const TOKEN_TTL: Duration = Duration::from_secs(30);
/// Batches waiting to be logged; beyond this, callers are told to retry.
const QUEUE: usize = 256;

pub struct AuditReceiver {
    client: Client,
    namespace: String,
    secret: String,
    token: Mutex<Option<(Option<String>, Instant)>>,
    queue: mpsc::Sender<Vec<AuditWrite>>,
    metrics: Arc<Metrics>,
    writes: Arc<SharedLog>,
    sessions: Arc<super::sessions::Sessions>,
}

/// The queue of writes to summarize on AccessRequests and log.
pub fn queue() -> (mpsc::Sender<Vec<AuditWrite>>, mpsc::Receiver<Vec<AuditWrite>>) {
    mpsc::channel(QUEUE)
}

/// Who the operator is to the API server: its own writes are no one's session.
pub async fn own_username(client: &Client) -> Result<String, kube::Error> {
    let review: SelfSubjectReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"
    }))
    .expect("a valid SelfSubjectReview");
    let answered = Api::<SelfSubjectReview>::all(client.clone()).create(&PostParams::default(), &review).await?;
    Ok(answered.status.and_then(|s| s.user_info).and_then(|u| u.username).unwrap_or_default())
}

impl AuditReceiver {
    /// Starts the worker that logs batches; `requests` must be kept current
    /// by a reflector.
    /// `queue` and `batches` are the two ends of [`queue`]; the write log
    /// sends what it confirms into the same queue.
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        client: Client,
        namespace: String,
        secret: String,
        requests: Store<AccessRequest>,
        operator: String,
        metrics: Arc<Metrics>,
        (queue, batches): (mpsc::Sender<Vec<AuditWrite>>, mpsc::Receiver<Vec<AuditWrite>>),
        writes: Arc<SharedLog>,
        sessions: Arc<super::sessions::Sessions>,
    ) -> Arc<Self> {
        tokio::spawn(log_batches(client.clone(), requests, operator, batches));
        Arc::new(Self { client, namespace, secret, token: Mutex::new(None), queue, metrics, writes, sessions })
    }

    async fn token(&self, refresh: bool) -> Option<String> {
        let cached = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some((token, read_at)) = &cached {
            // A wrong token may mean the Secret was rotated: look again, at
            // most once a second.
            let fresh_enough = if refresh { Duration::from_secs(1) } else { TOKEN_TTL };
            if read_at.elapsed() < fresh_enough {
                return token.clone();
            }
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let token = match secrets.get_opt(&self.secret).await {
            Ok(secret) => secret
                .and_then(|s| s.data)
                .and_then(|data| data.get("token").cloned())
                .and_then(|bytes| String::from_utf8(bytes.0).ok())
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty()),
            Err(error) => {
                warn!(%error, secret = %self.secret, "reading the audit token failed; refusing audit events");
                None
            }
        };
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), Instant::now()));
        token
    }

    async fn authenticated(&self, headers: &HeaderMap) -> bool {
        let Some(presented) = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        for refresh in [false, true] {
            if let Some(token) = self.token(refresh).await
                && constant_time_eq(presented.trim().as_bytes(), token.as_bytes())
            {
                return true;
            }
        }
        false
    }

    /// Checks the caller before its body is read: an unauthenticated POST
    /// costs no more than its headers.
    pub async fn admit(&self, headers: &HeaderMap) -> Result<(), (StatusCode, &'static str)> {
        if self.authenticated(headers).await {
            return Ok(());
        }
        self.metrics.audit_events.get_or_create(&AuditLabels { outcome: AuditOutcome::unauthenticated }).inc();
        Err((StatusCode::UNAUTHORIZED, "a valid bearer token is required"))
    }

    /// Counts a batch that was refused for its size.
    pub fn too_large(&self) {
        self.metrics.audit_events.get_or_create(&AuditLabels { outcome: AuditOutcome::malformed }).inc();
    }

    /// Handles one POST from the API server, once [`Self::admit`] let it in.
    pub async fn receive(&self, body: &Bytes) -> (StatusCode, &'static str) {
        let count = |outcome| self.metrics.audit_events.get_or_create(&AuditLabels { outcome }).inc();
        let writes = match audit::parse_with_commands(body) {
            Ok((writes, commands)) => {
                // Commands in Pods: logged at once, listed by their own worker.
                for command in commands {
                    self.sessions.note(command);
                }
                writes
            }
            Err(error) => {
                count(AuditOutcome::malformed);
                warn!(%error, "refused an audit batch");
                return (StatusCode::BAD_REQUEST, "not an audit.k8s.io/v1 EventList");
            }
        };
        if writes.is_empty() {
            count(AuditOutcome::accepted);
            return (StatusCode::OK, "");
        }
        match self.queue.try_reserve() {
            Ok(permit) => {
                // Into the write log first; only writes it did not already
                // know from admission are summarized (each write once).
                let fresh = self.writes.audited(writes);
                if !fresh.is_empty() {
                    permit.send(fresh);
                }
                count(AuditOutcome::accepted);
                (StatusCode::OK, "")
            }
            Err(_) => {
                count(AuditOutcome::overloaded);
                (StatusCode::SERVICE_UNAVAILABLE, "busy; retry")
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The windows that are or were open (a late batch still finds the window
/// its writes were made in).
pub(crate) fn windows(requests: &[Arc<AccessRequest>]) -> Vec<(String, String, String, Timestamp, Timestamp)> {
    requests
        .iter()
        .filter_map(|request| {
            let status = request.status.as_ref()?;
            let opens = status.granted_at.as_ref()?.0;
            let expires = status.expires_at.as_ref()?.0;
            let closes = match status.phase? {
                AccessPhase::Revoked => crate::operator::gate::revoked_at(status).map_or(expires, |r| r.min(expires)),
                AccessPhase::Active | AccessPhase::Expired => expires,
                _ => return None,
            };
            Some((request.namespace()?, request.name_any(), request.spec.requester.clone()?, opens, closes))
        })
        .collect()
}

async fn log_batches(
    client: Client,
    requests: Store<AccessRequest>,
    operator: String,
    mut batches: mpsc::Receiver<Vec<AuditWrite>>,
) {
    while let Some(mut writes) = batches.recv().await {
        // Take whatever else is waiting: one status write per request for all of it.
        while let Ok(more) = batches.try_recv() {
            writes.extend(more);
        }
        let owned = windows(&requests.state());
        let windows: Vec<Window<'_>> = owned
            .iter()
            .map(|(namespace, request, requester, opens, closes)| Window {
                namespace,
                request,
                requester,
                opens: *opens,
                closes: *closes,
            })
            .collect();
        for ((namespace, request), attributed) in audit::attribute(&writes, &windows, &operator) {
            for entry in &attributed.activity {
                info!(target: "driftwarden::audit", access_request = %request, %namespace, user = %entry.user,
                      verb = %entry.verb, resource = %entry.resource, name = ?entry.name, fields = ?entry.fields,
                      time = %entry.time.0, "write made with access");
            }
            for entry in &attributed.scope_writes {
                info!(target: "driftwarden::audit", access_request = %request, %namespace, user = %entry.user,
                      verb = %entry.verb, resource = %entry.resource, name = ?entry.name,
                      time = %entry.time.0, "write by someone else during an access window");
            }
            if let Err(error) = log_writes(&client, &namespace, &request, &attributed).await {
                warn!(%error, access_request = %request, %namespace, "logging writes on the AccessRequest failed");
            }
        }
    }
}
