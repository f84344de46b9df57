//! The gate's I/O shell: gathers what [`crate::gate::decide`] needs from the
//! caches (grants, their roles' rules, the writes the audit receiver logged
//! on AccessRequests), and carries out reverts and codify patches.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use serde_json::Value;
use tracing::info;

use crate::access;
use crate::api::{
    AccessPhase, AccessPolicy, AccessRequest, AccessRequestStatus, AccessReview, ActivityEntry, DesiredState, RoleKind,
    SessionChange,
};
use crate::drift::{self, DiffOptions, OPERATOR_MANAGER};
use crate::gate::{self, Decision, Drifted, Grant, Remediation, Rule, Write, audit, codify, revert};
use crate::operator::ready::Ready;

/// Writes logged up to this long before drift was first seen still count
/// toward it (audit batches and watch events race; clocks differ a little).
const WRITE_SLACK: SignedDuration = SignedDuration::from_secs(5);
/// Field manager of the audit receiver's and the gate's AccessRequest status fields.
pub const STATUS_MANAGER: &str = "driftwarden-gate";
/// Attempts of a revert that meets a concurrent write.
const REVERT_ATTEMPTS: u32 = 3;
/// Rounds of removing foreign fields within one revert.
const REMOVAL_ROUNDS: usize = 3;
/// At most this many codified objects per request.
const MAX_SESSION_CHANGES: usize = 20;

/// A grant, owned, with its role's rules.
struct OwnedGrant {
    request: String,
    namespace: String,
    requester: String,
    phase: AccessPhase,
    starts_at: Timestamp,
    expires_at: Timestamp,
    ended_at: Option<Timestamp>,
    rules: Vec<Rule>,
}

/// A write to one object, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedWrite {
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub at: Timestamp,
}

/// A request's log entry as a write to `subject` (whose resource is `base`,
/// `plural.group`) after `from`, if it is one. A command in a Pod is never
/// a write: it explains no drift, whoever reported it.
fn logged_write(entry: &ActivityEntry, base: &str, subject: &Subject<'_>, from: Timestamp) -> Option<LoggedWrite> {
    if entry.is_command() {
        return None;
    }
    let sub = match entry.resource.strip_prefix(base)? {
        "" => None,
        rest => Some(rest.strip_prefix('/')?),
    };
    if entry.name.as_deref() != Some(subject.name) || entry.time.0 <= from {
        return None;
    }
    Some(LoggedWrite {
        user: entry.user.clone(),
        verb: entry.verb.clone(),
        resource: sub.map_or_else(|| subject.plural.to_owned(), |sub| format!("{}/{sub}", subject.plural)),
        at: entry.time.0,
    })
}

/// A drifted object as the gate sees it.
pub struct Subject<'a> {
    pub namespace: Option<&'a str>,
    pub group: &'a str,
    pub plural: &'a str,
    pub name: &'a str,
    /// When the drift was first seen.
    pub since: Timestamp,
    /// When this operator last saw the object match Git (after which every
    /// write may have made the drift); unknown after a restart.
    pub clean_at: Option<Timestamp>,
}

/// The gate's verdict and what it was based on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// Whether audit data decided it (else the scope, or nothing).
    pub from_audit: bool,
    /// Who wrote it, where the audit log says.
    pub writers: Vec<String>,
}

/// Caches the gate reads (kept by reflectors the drift controller runs).
#[derive(Clone)]
pub struct Caches {
    pub requests: Store<AccessRequest>,
    pub cluster_roles: Store<ClusterRole>,
    pub roles: Store<Role>,
    /// What a grant's window is computed from (see [`Approvals`]).
    pub approvals: Approvals,
    /// Ready once all of them have listed. Until then an open window would
    /// look like none, and a session's held change like unauthorized drift
    /// (after a restart or a takeover): nothing is judged before.
    pub listed: crate::operator::ready::Ready,
    /// The operator's write log (complete since this process started;
    /// the AccessRequests' logs keep a bounded summary that outlives it).
    pub write_log: Option<Arc<crate::operator::writelog::SharedLog>>,
}

/// The reviews, policies and namespaces a grant's window is computed from,
/// with the access state machine, as the access controller computes it: the
/// gate never takes a window or a phase from a request's status.
#[derive(Clone)]
pub struct Approvals {
    pub reviews: Store<AccessReview>,
    pub policies: Store<AccessPolicy>,
    pub namespaces: Store<Namespace>,
}

impl Approvals {
    /// The access controller's caches (one watch per kind, see
    /// `access::DecisionCaches`) and their one readiness: the gate never
    /// judges by a grant the controller has not seen, nor misses one it made.
    pub fn of(caches: &crate::operator::access::DecisionCaches) -> (Approvals, Ready) {
        let approvals = Approvals {
            reviews: caches.reviews.clone(),
            policies: caches.policies.clone(),
            namespaces: caches.namespaces.clone(),
        };
        (approvals, caches.listed.clone())
    }

    /// What the access state machine decides for `request` at `now`.
    fn decide(&self, request: &AccessRequest, now: Timestamp) -> Option<access::Decision> {
        let namespace = request.namespace()?;
        let labels = self.namespaces.get(&ObjectRef::new(&namespace))?.metadata.labels.clone().unwrap_or_default();
        let policies: Vec<AccessPolicy> = self.policies.state().iter().map(|p| (**p).clone()).collect();
        let name = request.name_any();
        let reviews: Vec<Arc<AccessReview>> = self
            .reviews
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(&namespace) && r.spec.access_request == name)
            .collect();
        let judge = access::policy::select(&namespace, &labels, &request.spec.role, &policies);
        let machine_reviews = crate::access::grant::machine_reviews(&reviews);
        let request = crate::access::grant::machine_request(request);
        Some(access::evaluate(&request, &machine_reviews, judge.as_ref(), now))
    }
}

fn to_rules(rules: Option<&Vec<PolicyRule>>) -> Vec<Rule> {
    rules
        .into_iter()
        .flatten()
        .filter(|rule| rule.resource_names.as_ref().is_none_or(Vec::is_empty))
        .map(|rule| Rule {
            api_groups: rule.api_groups.clone().unwrap_or_default(),
            resources: rule.resources.clone().unwrap_or_default(),
            verbs: rule.verbs.clone(),
        })
        .collect()
}

/// When a revoked request's window closed: when its `Granted` condition
/// turned false. Conditions keep whole seconds, so the end of that second:
/// a write made just before the revocation still counts as the session's.
pub fn revoked_at(status: &AccessRequestStatus) -> Option<Timestamp> {
    let condition = status.conditions.iter().find(|c| c.type_ == "Granted" && c.status == "False")?;
    Some(condition.last_transition_time.0 + SignedDuration::from_secs(1))
}

impl Caches {
    /// The grants of `namespace` at `now`: each request's window and phase
    /// computed from its approvals and `spec.duration` (never read from its
    /// status). Only when a revoked grant's window closed is a record: the
    /// operator's own, in status (which only it may write), or, before it
    /// has written it, now.
    fn grants(&self, namespace: &str, now: Timestamp) -> Vec<OwnedGrant> {
        self.requests
            .state()
            .iter()
            .filter(|request| request.namespace().as_deref() == Some(namespace))
            .filter_map(|request| {
                let decision = self.approvals.decide(request, now)?;
                let window = decision.window?;
                let rules = match request.spec.role.kind {
                    RoleKind::ClusterRole => {
                        let role = self.cluster_roles.get(&ObjectRef::new(&request.spec.role.name));
                        to_rules(role.as_ref().and_then(|r| r.rules.as_ref()))
                    }
                    RoleKind::Role => {
                        let role = self.roles.get(&ObjectRef::new(&request.spec.role.name).within(namespace));
                        to_rules(role.as_ref().and_then(|r| r.rules.as_ref()))
                    }
                };
                let phase = decision.phase;
                let ended_at = (phase == AccessPhase::Revoked)
                    .then(|| request.status.as_ref().and_then(revoked_at).unwrap_or(now).min(now));
                Some(OwnedGrant {
                    request: request.name_any(),
                    namespace: namespace.to_owned(),
                    requester: request.spec.requester.clone()?,
                    phase,
                    starts_at: window.starts_at,
                    expires_at: window.expires_at,
                    ended_at,
                    rules,
                })
            })
            .collect()
    }

    /// The writes to `subject` that the audit receiver logged on any
    /// request of its namespace since it was last seen matching Git (or,
    /// when that is unknown, from a little before the drift was seen).
    fn writes(&self, subject: &Subject<'_>) -> Vec<LoggedWrite> {
        let Some(namespace) = subject.namespace else { return Vec::new() };
        let base = if subject.group.is_empty() {
            subject.plural.to_owned()
        } else {
            format!("{}.{}", subject.plural, subject.group)
        };
        let from = subject.clean_at.unwrap_or(subject.since - WRITE_SLACK);
        let mut writes: Vec<LoggedWrite> = Vec::new();
        for request in self.requests.state().iter().filter(|r| r.namespace().as_deref() == Some(namespace)) {
            let Some(status) = &request.status else { continue };
            for entry in status.activity.iter().chain(&status.scope_writes) {
                let Some(write) = logged_write(entry, &base, subject, from) else { continue };
                if !writes.contains(&write) {
                    writes.push(write);
                }
            }
        }
        // The write log: complete since this process started, so no write
        // pushed out of a request's bounded summary goes unseen.
        if let Some(log) = &self.write_log {
            let (records, incomplete_until) =
                log.writes_to(namespace, subject.group, subject.plural, subject.name, from);
            for record in records {
                let write = LoggedWrite {
                    user: record.user.clone(),
                    verb: record.verb.clone(),
                    resource: record.rbac_resource(),
                    at: record.at,
                };
                if !writes.contains(&write) {
                    writes.push(write);
                }
            }
            // Records were dropped to keep within the budget: a write nobody
            // can explain may be among them (fail closed).
            if let Some(until) = incomplete_until.filter(|until| *until > from) {
                writes.push(LoggedWrite {
                    user: "(unknown: the write log was over its budget)".into(),
                    verb: "update".into(),
                    resource: subject.plural.to_owned(),
                    at: until,
                });
            }
        }
        writes
    }

    /// Decides for one drifted object (see [`gate::decide`]).
    pub fn verdict(&self, subject: &Subject<'_>, remediation: Remediation, now: Timestamp) -> Verdict {
        let grants = subject.namespace.map(|ns| self.grants(ns, now)).unwrap_or_default();
        let grants: Vec<Grant<'_>> = grants
            .iter()
            .map(|g| Grant {
                request: &g.request,
                namespace: &g.namespace,
                requester: &g.requester,
                phase: g.phase,
                starts_at: g.starts_at,
                expires_at: g.expires_at,
                ended_at: g.ended_at,
                rules: &g.rules,
            })
            .collect();
        let logged = self.writes(subject);
        let writes: Vec<Write<'_>> =
            logged.iter().map(|w| Write { user: &w.user, verb: &w.verb, resource: &w.resource, at: w.at }).collect();
        let drifted = Drifted {
            namespace: subject.namespace,
            group: subject.group,
            resource: subject.plural,
            since: Some(subject.since),
        };
        let decision = gate::decide(&drifted, &writes, &grants, remediation, true, now);
        let from_audit = !writes.is_empty();
        let mut writers: Vec<String> = writes.iter().map(|w| w.user.to_owned()).collect();
        writers.dedup();
        Verdict { decision, from_audit, writers }
    }

    /// The RoleBindings the access controller keeps (or is about to make)
    /// for the requests of `namespace` that are not over: pending,
    /// approved or active, as computed from their approvals.
    pub fn open_grant_bindings(&self, namespace: &str, now: Timestamp) -> Vec<String> {
        self.requests
            .state()
            .iter()
            .filter(|request| request.namespace().as_deref() == Some(namespace))
            .filter(|request| {
                self.approvals.decide(request, now).is_some_and(|d| {
                    matches!(d.phase, AccessPhase::Pending | AccessPhase::Approved | AccessPhase::Active)
                })
            })
            .map(|request| crate::access::grant::binding_name(&request.name_any()))
            .collect()
    }

    /// Whether `request` already lists `object` among its codified changes.
    pub fn codified(&self, namespace: &str, request: &str, object: &crate::api::ObjectRef) -> bool {
        let cached = self.requests.get(&ObjectRef::new(request).within(namespace));
        cached.is_some_and(|r| r.status.as_ref().is_some_and(|s| s.session_changes.iter().any(|c| c.object == *object)))
    }

    /// The approvers of a request, for log lines.
    pub fn approvers(&self, namespace: &str, request: &str) -> Vec<String> {
        self.requests
            .get(&ObjectRef::new(request).within(namespace))
            .and_then(|r| r.status.as_ref().map(|s| s.approvals.iter().map(|a| a.reviewer.clone()).collect()))
            .unwrap_or_default()
    }

    /// The requester of a request, for log lines.
    pub fn requester(&self, namespace: &str, request: &str) -> Option<String> {
        self.requests.get(&ObjectRef::new(request).within(namespace)).and_then(|r| r.spec.requester.clone())
    }

    /// When a request's window closed (for the revert latency after it).
    pub fn window_end(&self, namespace: &str, request: &str) -> Option<Timestamp> {
        let request = self.requests.get(&ObjectRef::new(request).within(namespace))?;
        let status = request.status.as_ref()?;
        let expires = status.expires_at.as_ref()?.0;
        Some(revoked_at(status).map_or(expires, |revoked| revoked.min(expires)))
    }

    /// Pending requests in `namespace`.
    pub fn pending(&self, namespace: &str) -> Vec<Arc<AccessRequest>> {
        self.requests
            .state()
            .into_iter()
            .filter(|r| r.namespace().as_deref() == Some(namespace))
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(AccessPhase::Pending))
            .collect()
    }
}

// ---------------------------------------------------------------- rate limit

/// A token bucket per DesiredState: bursts of reverts go out at once, a
/// storm is spread out.
pub struct RevertLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<ObjectRef<DesiredState>, (f64, Instant)>>,
}

impl RevertLimiter {
    pub fn new(rate: f64, burst: u32) -> Self {
        Self { rate: rate.max(0.01), burst: f64::from(burst.max(1)), buckets: Mutex::default() }
    }

    /// Takes a token; or says how long until one is free.
    pub fn take(&self, state: &ObjectRef<DesiredState>) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let (tokens, last) = buckets.entry(state.clone()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    pub fn forget(&self, state: &ObjectRef<DesiredState>) {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).remove(state);
    }
}

// ---------------------------------------------------------------- revert

#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("applying the declared object: {0}")]
    Apply(#[source] kube::Error),
    #[error("removing fields another manager added: {0}")]
    Remove(#[source] kube::Error),
    #[error("reading the object again: {0}")]
    Read(#[source] kube::Error),
    #[error("the object kept changing under the revert ({0} attempts)")]
    Contended(u32),
}

fn api_for(client: &Client, resource: &ApiResource, namespace: Option<&str>) -> Api<DynamicObject> {
    match namespace {
        Some(namespace) => Api::namespaced_with(client.clone(), namespace, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

fn is_conflict(error: &kube::Error) -> bool {
    // 409: a resourceVersion precondition failed; 422 on a JSON patch: one
    // of its `test`s failed (someone changed a value it removes).
    matches!(error, kube::Error::Api(status) if status.code == 409 || (status.code == 422 && status.message.contains("test")))
}

/// 422 Unprocessable: the API server's validation refused the object.
fn is_invalid(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 422)
}

/// What a revert left: the object's resourceVersion and uid (a new uid if
/// it re-created a deleted object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reverted {
    pub version: String,
    pub uid: String,
}

/// Puts one object back to its declared state. `live` is the cached copy
/// the drift was seen on.
pub async fn revert(
    client: &Client,
    resource: &ApiResource,
    declared: &Value,
    mut live: Option<Value>,
    options: &DiffOptions,
) -> Result<Reverted, RevertError> {
    let left_at = |object: &DynamicObject| Reverted {
        version: object.resource_version().unwrap_or_default(),
        uid: object.uid().unwrap_or_default(),
    };
    let namespace = declared.pointer("/metadata/namespace").and_then(Value::as_str);
    let name = declared.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let api = api_for(client, resource, namespace);
    for attempt in 1..=REVERT_ATTEMPTS {
        let body = revert::applied_object(declared, live.as_ref(), &options.ignore);
        let params = PatchParams::apply(OPERATOR_MANAGER).force();
        let mut current = match api.patch(name, &params, &Patch::Apply(body.clone())).await {
            Ok(applied) => applied,
            // Refused as invalid: if that is the live object's doing (a
            // changed list key kept beside the declared item), put the
            // declared values back by JSON patch and apply again. If Git's
            // object is what is invalid, that patch is refused too, and the
            // apply's refusal is what is reported.
            Err(refused) if is_invalid(&refused) && live.is_some() => {
                let value = live.clone().unwrap_or_default();
                let left = drift::diff(declared, Some(&value), options);
                let Some(restore) = revert::restore_patch(&left, declared, &value) else {
                    return Err(RevertError::Apply(refused));
                };
                let restore: json_patch::Patch =
                    serde_json::from_value(restore).expect("restore patches are valid JSON patches");
                let json = PatchParams { field_manager: Some(OPERATOR_MANAGER.into()), ..Default::default() };
                match api.patch(name, &json, &Patch::<()>::Json(restore)).await {
                    Ok(_) => api.patch(name, &params, &Patch::Apply(body)).await.map_err(RevertError::Apply)?,
                    Err(error) if is_conflict(&error) && attempt < REVERT_ATTEMPTS => {
                        live = api
                            .get_opt(name)
                            .await
                            .map_err(RevertError::Read)?
                            .and_then(|o| serde_json::to_value(o).ok());
                        continue;
                    }
                    Err(_) => return Err(RevertError::Apply(refused)),
                }
            }
            Err(refused) => return Err(RevertError::Apply(refused)),
        };
        // Removing a foreign field can leave its foreign parent behind (an
        // emptied `securityContext: {}`): look again, a few levels at most.
        let mut conflict = None;
        for _ in 0..REMOVAL_ROUNDS {
            let value = serde_json::to_value(&current).unwrap_or_default();
            let left = drift::diff(declared, Some(&value), options);
            let Some(removal) = revert::removal_patch(&left, &value) else { return Ok(left_at(&current)) };
            let removal: json_patch::Patch =
                serde_json::from_value(removal).expect("removal patches are valid JSON patches");
            let params = PatchParams { field_manager: Some(OPERATOR_MANAGER.into()), ..Default::default() };
            match api.patch(name, &params, &Patch::<()>::Json(removal)).await {
                Ok(done) => current = done,
                Err(error) if is_conflict(&error) => {
                    conflict = Some(error);
                    break;
                }
                Err(error) => return Err(RevertError::Remove(error)),
            }
        }
        match conflict {
            None => return Ok(left_at(&current)),
            Some(_) if attempt < REVERT_ATTEMPTS => {
                tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
                live = api.get_opt(name).await.map_err(RevertError::Read)?.and_then(|o| serde_json::to_value(o).ok());
            }
            Some(_) => return Err(RevertError::Contended(attempt)),
        }
    }
    Err(RevertError::Contended(REVERT_ATTEMPTS))
}

// ---------------------------------------------------------------- AccessRequest status

/// Changes the gate's fields of an AccessRequest's status: reads it, lets
/// `change` compute a merge patch of `status` (None: nothing to do), and
/// writes it guarded by the resourceVersion read, so replicas that log
/// audit events at the same time never drop each other's entries.
pub async fn update_request_status(
    client: &Client,
    namespace: &str,
    name: &str,
    change: impl Fn(&AccessRequestStatus) -> Option<Value>,
) -> Result<bool, kube::Error> {
    let api: Api<AccessRequest> = Api::namespaced(client.clone(), namespace);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let Some(request) = api.get_opt(name).await? else { return Ok(false) };
        let Some(status) = change(&request.status.clone().unwrap_or_default()) else { return Ok(false) };
        let patch = serde_json::json!({"metadata": {"resourceVersion": request.resource_version()}, "status": status});
        let params = PatchParams { field_manager: Some(STATUS_MANAGER.into()), ..Default::default() };
        match api.patch_status(name, &params, &Patch::Merge(patch)).await {
            Ok(_) => return Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 && attempt < 8 => {
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Appends audit entries to a request's activity log and scope writes.
pub async fn log_writes(
    client: &Client,
    namespace: &str,
    request: &str,
    attributed: &audit::Attributed,
) -> Result<bool, kube::Error> {
    update_request_status(client, namespace, request, |status| {
        let (activity, added) = audit::append(&status.activity, &attributed.activity);
        let (scope_writes, scope_added) = audit::append(&status.scope_writes, &attributed.scope_writes);
        // A corroborated command adds no entry but a source to one.
        if added == 0 && scope_added == 0 && activity == status.activity {
            return None;
        }
        let count = status.activity_count.unwrap_or(0) + i64::try_from(added).unwrap_or(0);
        Some(serde_json::json!({"activity": activity, "activityCount": count, "scopeWrites": scope_writes}))
    })
    .await
}

/// Records a session's changes as patches to Git, one status write for all
/// of them; returns those that were new.
pub async fn record_session_changes(
    client: &Client,
    namespace: &str,
    request: &str,
    changes: &[SessionChange],
) -> Result<Vec<SessionChange>, kube::Error> {
    let fresh = std::sync::Mutex::new(Vec::new());
    update_request_status(client, namespace, request, |status| {
        let new: Vec<&SessionChange> = changes
            .iter()
            .filter(|change| {
                !status.session_changes.iter().any(|c| c.object == change.object && c.patch == change.patch)
            })
            .collect();
        if new.is_empty() {
            return None;
        }
        let mut kept: Vec<SessionChange> =
            status.session_changes.iter().filter(|c| !new.iter().any(|n| n.object == c.object)).cloned().collect();
        kept.extend(new.iter().map(|c| (*c).clone()));
        let excess = kept.len().saturating_sub(MAX_SESSION_CHANGES);
        kept.drain(..excess);
        *fresh.lock().unwrap_or_else(|p| p.into_inner()) = new.into_iter().cloned().collect();
        Some(serde_json::json!({"sessionChanges": kept}))
    })
    .await?;
    Ok(fresh.into_inner().unwrap_or_else(|p| p.into_inner()))
}

/// Builds the codify record for one object.
pub fn session_change(
    object: crate::api::ObjectRef,
    desired_state: &str,
    origin: &drift::Origin,
    declared: &Value,
    live: Option<&Value>,
    diff: &drift::ObjectDiff,
    now: Timestamp,
) -> SessionChange {
    let source = format!("{}/{}", origin.config_map, origin.key);
    SessionChange {
        object,
        desired_state: desired_state.to_owned(),
        patch: codify::session_patch(declared, live, diff, &source),
        source,
        at: Time(now),
    }
}

/// Sets a pending request's view of the drift in its namespace.
pub async fn show_pending_drift(
    client: &Client,
    request: &AccessRequest,
    drift: &crate::api::PendingDrift,
) -> Result<(), kube::Error> {
    let (namespace, name) = (request.namespace().unwrap_or_default(), request.name_any());
    let wanted = serde_json::to_value(drift).unwrap_or_default();
    let written = update_request_status(client, &namespace, &name, |status| {
        (status.phase == Some(AccessPhase::Pending) && status.pending_drift.as_ref() != Some(drift))
            .then(|| serde_json::json!({"pendingDrift": wanted}))
    })
    .await?;
    if written {
        info!(request = %name, %namespace, drifted = drift.drifted, "pending request shows the drift it would approve into");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    #[test]
    fn only_writes_to_the_object_count_never_commands() {
        let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).unwrap();
        let subject = Subject {
            namespace: Some("shop"),
            group: "",
            plural: "pods",
            name: "web-0",
            since: at(10),
            clean_at: Some(at(0)),
        };
        let entry = |verb: &str, resource: &str, name: &str, second: i64| ActivityEntry {
            time: MicroTime(at(second)),
            user: "alice".into(),
            verb: verb.into(),
            resource: resource.into(),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            fields: vec![],
            container: None,
            command: vec![],
            command_truncated: false,
            sources: vec![],
        };
        let write = |e: &ActivityEntry| logged_write(e, "pods", &subject, at(0)).map(|w| w.resource);
        assert_eq!(write(&entry("patch", "pods", "web-0", 5)).as_deref(), Some("pods"));
        assert_eq!(
            write(&entry("create", "pods/ephemeralcontainers", "web-0", 5)).as_deref(),
            Some("pods/ephemeralcontainers")
        );
        assert_eq!(write(&entry("patch", "podsx", "web-0", 5)), None);
        assert_eq!(write(&entry("patch", "pods", "web-1", 5)), None);
        assert_eq!(write(&entry("patch", "pods", "web-0", 0)), None, "before the object was last in sync");
        let mut exec = entry("connect", "pods/exec", "web-0", 5);
        exec.command = vec!["sh".into()];
        exec.sources = vec!["admission".into(), "audit".into()];
        assert_eq!(write(&exec), None, "a command explains no drift");
    }

    fn settings(data: Value, version: &str) -> Value {
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop", "uid": "u1", "resourceVersion": version},
            "data": data})
    }

    /// A foreign field whose value changes between the revert's apply and
    /// its removal patch: the patch's `test` fails (422), the revert reads
    /// the object again and starts over, and the field goes.
    #[tokio::test]
    async fn a_conflict_on_a_revert_reads_again_and_retries() {
        use crate::operator::mock_api;
        let (client, mut api) = mock_api::client();
        let declared = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop"}, "data": {"mode": "safe"}});
        let live = settings(serde_json::json!({"mode": "debug", "extra": "x"}), "1");
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let revert =
            tokio::spawn(
                async move { revert(&client, &resource, &declared, Some(live), &DiffOptions::default()).await },
            );

        let path = "/api/v1/namespaces/shop/configmaps/settings";
        let apply = api.answer(200, settings(serde_json::json!({"mode": "safe", "extra": "x"}), "2")).await;
        assert_eq!((apply.method.as_str(), apply.path.as_str()), ("PATCH", path));
        assert_eq!(apply.content_type, "application/apply-patch+yaml");
        assert!(
            apply.query.contains("fieldManager=driftwarden") && apply.query.contains("force=true"),
            "{}",
            apply.query
        );
        assert_eq!(apply.body["data"], serde_json::json!({"mode": "safe"}));
        // Someone rewrote the foreign field meanwhile: the guarded removal fails.
        let refused =
            mock_api::status(422, "Invalid", "the server rejected our request: testing value /data/extra failed");
        let removal = api.answer(422, refused).await;
        assert_eq!(removal.content_type, "application/json-patch+json");
        assert_eq!(
            removal.body,
            serde_json::json!([{"op": "test", "path": "/data/extra", "value": "x"}, {"op": "remove", "path": "/data/extra"}])
        );
        let read = api.answer(200, settings(serde_json::json!({"mode": "safe", "extra": "y"}), "3")).await;
        assert_eq!((read.method.as_str(), read.path.as_str()), ("GET", path));
        // The second round removes the new value.
        api.answer(200, settings(serde_json::json!({"mode": "safe", "extra": "y"}), "4")).await;
        let removal = api.answer(200, settings(serde_json::json!({"mode": "safe"}), "5")).await;
        assert_eq!(removal.body[0], serde_json::json!({"op": "test", "path": "/data/extra", "value": "y"}));
        let reverted = revert.await.unwrap().expect("reverted on the second round");
        assert_eq!(reverted, Reverted { version: "5".into(), uid: "u1".into() });
        assert!(api.is_quiet().await, "nothing after the revert");
    }

    /// A conflict on every round: the revert gives up (and is retried by
    /// the reconcile), it does not loop.
    #[tokio::test]
    async fn a_revert_contended_every_round_gives_up() {
        use crate::operator::mock_api;
        let (client, mut api) = mock_api::client();
        let declared = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": "shop"}, "data": {"mode": "safe"}});
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&());
        let revert =
            tokio::spawn(async move { revert(&client, &resource, &declared, None, &DiffOptions::default()).await });
        for round in 1..=REVERT_ATTEMPTS {
            api.answer(200, settings(serde_json::json!({"mode": "safe", "extra": round.to_string()}), "2")).await;
            api.answer(409, mock_api::status(409, "Conflict", "the object has been modified")).await;
            if round < REVERT_ATTEMPTS {
                api.answer(200, settings(serde_json::json!({"mode": "safe", "extra": "z"}), "3")).await;
            }
        }
        let error = revert.await.unwrap().expect_err("contended");
        assert!(matches!(error, RevertError::Contended(n) if n == REVERT_ATTEMPTS), "{error}");
    }
}
