//! The audit webhook receiver: the API server's `--audit-webhook-config-file`
//! backend posts batches of audit events here. Each write by someone while
//! an access window is open in that namespace is logged on the
//! AccessRequest: the requester's own writes in `activity`, anyone else's
//! in `scopeWrites`. The gate reads both to attribute drift.
//!
//! The caller must present the bearer token kept in a Secret in the
//! operator's namespace (key `token`); without that Secret every call is
//! refused. The receiver only authenticates and parses: what a batch
//! reports goes to the operator ([`super::Records`]), which logs it on the
//! requests; when that falls behind, calls get 503 and the API server
//! retries them.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::Api;
use tracing::warn;

use crate::gate::audit;
use crate::metrics::{AuditLabels, AuditOutcome, Metrics};

/// How long a token read from the Secret is trusted before it is read again.
const TOKEN_TTL: Duration = Duration::from_secs(30);

pub struct AuditReceiver {
    client: Client,
    namespace: String,
    secret: String,
    token: Mutex<Option<(Option<String>, Instant)>>,
    metrics: Arc<Metrics>,
    records: Arc<dyn super::Records>,
}

impl AuditReceiver {
    /// A receiver that checks callers against the Secret `namespace/secret`
    /// and hands what they report to `records`.
    pub fn new(
        client: Client,
        (namespace, secret): (String, String),
        metrics: Arc<Metrics>,
        records: Arc<dyn super::Records>,
    ) -> Arc<Self> {
        Arc::new(Self { client, namespace, secret, token: Mutex::new(None), metrics, records })
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
                for command in commands {
                    self.records.command(command);
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
        if self.records.audited(writes) {
            count(AuditOutcome::accepted);
            (StatusCode::OK, "")
        } else {
            count(AuditOutcome::overloaded);
            (StatusCode::SERVICE_UNAVAILABLE, "busy; retry")
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
