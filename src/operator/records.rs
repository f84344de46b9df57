//! What the webhooks report, taken in by the operator: the `/writes`
//! webhook's admitted writes go into the write log, an audit batch's writes
//! too (each write once) and then, with the writes the watches confirm, to
//! the requests' status and the structured log by a worker; commands in
//! Pods go to the sessions' record. The webhooks only parse and
//! authenticate ([`crate::webhook::Records`]).

use std::sync::Arc;

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::gate::log_writes;
use super::sessions::Sessions;
use super::writelog::SharedLog;
use crate::api::{AccessPhase, AccessRequest};
use crate::gate::audit::{self, AuditWrite, Window};
use crate::gate::commands::Command;
use crate::gate::writes::{Expect, Record};

/// Batches waiting to be logged; beyond this, callers are told to retry.
const QUEUE: usize = 256;

/// The operator's side of [`crate::webhook::Records`].
pub struct Intake {
    pub write_log: Arc<SharedLog>,
    pub sessions: Arc<Sessions>,
    /// The log worker's queue (see [`queue`]).
    pub queue: mpsc::Sender<Vec<AuditWrite>>,
}

impl crate::webhook::Records for Intake {
    fn write(&self, record: Record, expect: Expect) {
        self.write_log.admit(record, expect);
    }

    fn audited(&self, writes: Vec<AuditWrite>) -> bool {
        let Ok(permit) = self.queue.try_reserve() else { return false };
        // Into the write log first; only writes it did not already know
        // from admission are summarized (each write once).
        let fresh = self.write_log.audited(writes);
        if !fresh.is_empty() {
            permit.send(fresh);
        }
        true
    }

    fn command(&self, command: Command) {
        self.sessions.note(command);
    }
}

/// Starts the worker that logs writes on the requests and in the structured
/// log; `requests` must be kept current by a reflector. `queue` and
/// `batches` are the two ends of [`queue`]; the write log sends what it
/// confirms into the same queue.
pub fn start_log(
    client: Client,
    requests: Store<AccessRequest>,
    operator: String,
    batches: mpsc::Receiver<Vec<AuditWrite>>,
) {
    tokio::spawn(log_batches(client, requests, operator, batches));
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

/// The windows that are or were open (a late batch still finds the window
/// its writes were made in).
pub fn windows(requests: &[Arc<AccessRequest>]) -> Vec<(String, String, String, Timestamp, Timestamp)> {
    requests
        .iter()
        .filter_map(|request| {
            let status = request.status.as_ref()?;
            let opens = status.granted_at.as_ref()?.0;
            let expires = status.expires_at.as_ref()?.0;
            let closes = match status.phase? {
                AccessPhase::Revoked => super::gate::revoked_at(status).map_or(expires, |r| r.min(expires)),
                AccessPhase::Active | AccessPhase::Expired => expires,
                _ => return None,
            };
            Some((request.namespace()?, request.name_any(), request.spec.requester.clone()?, opens, closes))
        })
        .collect()
}

/// [`windows`] as the pure attribution reads them.
pub fn borrowed(owned: &[(String, String, String, Timestamp, Timestamp)]) -> Vec<Window<'_>> {
    owned
        .iter()
        .map(|(namespace, request, requester, opens, closes)| Window {
            namespace,
            request,
            requester,
            opens: *opens,
            closes: *closes,
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
        let windows = borrowed(&owned);
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
