//! The grant, pure: what the machine reads of a request and its reviews,
//! the status and the RoleBinding a decision calls for, and which bindings
//! the sweep removes. The access controller fetches, applies and publishes.

use std::sync::Arc;

use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};

use super::machine::{self, Decision};
use crate::api::{AccessPhase, AccessRequest, AccessRequestStatus, AccessReview, Approval, IgnoredReview, RoleKind};

/// The label on every object the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "driftwarden");
/// The label with the owning request's uid (a request re-created under the
/// same name is another request; names can be too long for a label).
pub const REQUEST_UID_LABEL: &str = "driftwarden.io/access-request-uid";
/// The annotation naming the request a grant belongs to.
pub const REQUEST_ANNOTATION: &str = "driftwarden.io/access-request";
/// How long the sweep leaves a young, or just-ended, grant alone.
pub const SWEEP_GRACE: SignedDuration = SignedDuration::from_secs(30);

fn to_timestamp(time: &Time) -> Timestamp {
    time.0
}

/// What the machine reads of a request: its spec and what the API server
/// recorded. Never its status, which is output only.
pub fn machine_request(request: &AccessRequest) -> machine::Request<'_> {
    machine::Request {
        uid: request.metadata.uid.as_deref(),
        requester: request.spec.requester.as_deref(),
        duration: request.spec.duration.into(),
        reason: &request.spec.reason,
        start_at: request.spec.start_at.as_ref().map(to_timestamp),
        revoked: request.spec.revoked,
        deleting: request.metadata.deletion_timestamp.is_some(),
        created_at: request.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or_else(Timestamp::now),
    }
}

pub fn machine_reviews(reviews: &[Arc<AccessReview>]) -> Vec<machine::Review<'_>> {
    reviews
        .iter()
        .map(|review| machine::Review {
            name: review.metadata.name.as_deref().unwrap_or_default(),
            reviewer: review.spec.reviewer.as_deref(),
            groups: &review.spec.reviewer_groups,
            decision: review.spec.decision,
            reason: &review.spec.reason,
            created_at: review.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or(Timestamp::MAX),
            request_uid: review.spec.access_request_uid.as_deref(),
        })
        .collect()
}

/// `driftwarden-<request>`, shortened with a hash when the request's name
/// is so long that the result would not be a valid name.
pub fn binding_name(request: &str) -> String {
    const PREFIX: &str = "driftwarden-";
    if PREFIX.len() + request.len() <= 253 {
        return format!("{PREFIX}{request}");
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = request.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    format!("{PREFIX}{}-{hash:016x}", &request[..253 - PREFIX.len() - 17])
}

/// The status the controller writes for a decision (its own fields only:
/// the activity log and the gate's fields belong to others).
pub fn next_status(
    old: &AccessRequestStatus,
    decision: &Decision,
    binding_name: &str,
    now: Timestamp,
) -> AccessRequestStatus {
    let condition = crate::conditions::condition(
        &old.conditions,
        "Granted",
        decision.phase == AccessPhase::Active,
        &format!("{:?}", decision.phase),
        decision.message.clone(),
        None,
        now,
    );
    AccessRequestStatus {
        phase: Some(decision.phase),
        message: Some(decision.message.clone()),
        policy: decision.policy.clone(),
        approvals: decision
            .approvals
            .iter()
            .map(|a| Approval {
                reviewer: a.reviewer.clone(),
                review: a.review.clone(),
                reason: a.reason.clone(),
                at: Time(a.at),
            })
            .collect(),
        ignored_reviews: decision
            .ignored
            .iter()
            .map(|i| IgnoredReview { review: i.review.clone(), reviewer: i.reviewer.clone(), reason: i.reason.clone() })
            .collect(),
        granted_at: decision.window.map(|w| Time(w.starts_at)),
        expires_at: decision.window.map(|w| Time(w.expires_at)),
        role_binding: matches!(decision.phase, AccessPhase::Active | AccessPhase::Approved)
            .then(|| binding_name.to_owned()),
        conditions: vec![condition],
        // The activity log and the gate's fields are written by others,
        // under their own field manager.
        ..AccessRequestStatus::default()
    }
}

/// The RoleBinding that grants a request.
pub fn desired_binding(request: &AccessRequest, binding_name: &str) -> RoleBinding {
    let requester = request.spec.requester.clone().unwrap_or_default();
    let subject = match requester.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        Some((namespace, name)) => serde_json::json!({"kind": "ServiceAccount", "name": name, "namespace": namespace}),
        None => serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": requester}),
    };
    let kind = match request.spec.role.kind {
        RoleKind::Role => "Role",
        RoleKind::ClusterRole => "ClusterRole",
    };
    let owner = OwnerReference {
        api_version: AccessRequest::api_version(&()).into_owned(),
        kind: AccessRequest::kind(&()).into_owned(),
        name: request.name_any(),
        uid: request.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": binding_name,
            "namespace": request.namespace(),
            "labels": {MANAGED_BY.0: MANAGED_BY.1, REQUEST_UID_LABEL: request.uid()},
            "annotations": {REQUEST_ANNOTATION: request.name_any()},
            "ownerReferences": [owner],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": request.spec.role.name},
        "subjects": [subject],
    }))
    .expect("a well-formed RoleBinding")
}

/// Whether a live binding grants what `desired` does.
pub fn same_binding(live: &RoleBinding, desired: &RoleBinding) -> bool {
    live.role_ref == desired.role_ref
        && live.subjects == desired.subjects
        && live.metadata.owner_references == desired.metadata.owner_references
        && desired.labels().iter().all(|(k, v)| live.labels().get(k) == Some(v))
}

/// Whether the sweep removes `binding`, given the request its annotation
/// names (if the cache has it), at `now`, by a sweeper started at `started`.
///
/// A grant whose window has ended is the controller's to remove: it does so
/// on a timer, and on its first reconcile after a restart. The sweep leaves
/// it alone until [`SWEEP_GRACE`] after the later of the window's end and
/// its own start, so the two never race to delete the same binding (the
/// loser used to report a normal expiry as an orphan, and the expiry went
/// unmeasured). Young bindings are spared for the same reason.
pub fn orphaned(binding: &RoleBinding, request: Option<&AccessRequest>, now: Timestamp, started: Timestamp) -> bool {
    let grace = SWEEP_GRACE;
    let created = binding.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or(now);
    if now.duration_since(created) < grace {
        return false;
    }
    let Some(request) =
        request.filter(|r| r.uid().as_deref() == binding.labels().get(REQUEST_UID_LABEL).map(String::as_str))
    else {
        return true;
    };
    let status = request.status.as_ref();
    if status.and_then(|s| s.phase) != Some(AccessPhase::Active) {
        return true;
    }
    match status.and_then(|s| s.expires_at.as_ref()).map(to_timestamp) {
        Some(expires) if expires > now => false,
        Some(expires) => now.duration_since(expires.max(started)) >= grace,
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Binding;

    #[test]
    fn binding_names_are_valid_and_stable() {
        assert_eq!(binding_name("alice-hotfix"), "driftwarden-alice-hotfix");
        let long = "a".repeat(253);
        let name = binding_name(&long);
        assert_eq!(name.len(), 253);
        assert_eq!(name, binding_name(&long));
        assert_ne!(name, binding_name(&"b".repeat(253)));
    }

    #[test]
    fn service_account_requesters_are_bound_as_service_accounts() {
        let mut request: AccessRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r", "namespace": "shop", "uid": "u1"},
            "spec": {"requester": "system:serviceaccount:ci:deployer", "role": {"kind": "Role", "name": "deployer"},
                     "duration": "10m", "reason": "pipeline run 42 needs to fix the config"}
        }))
        .unwrap();
        let binding = desired_binding(&request, "driftwarden-r");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", "deployer", Some("ci"))
        );
        assert_eq!(binding.role_ref.kind, "Role");
        request.spec.requester = Some("alice".into());
        let binding = desired_binding(&request, "driftwarden-r");
        assert_eq!(binding.subjects.as_ref().unwrap()[0].kind, "User");
        assert_eq!(binding.labels().get(REQUEST_UID_LABEL).map(String::as_str), Some("u1"));
        assert!(same_binding(&binding, &desired_binding(&request, "driftwarden-r")));
    }

    #[test]
    fn the_sweep_leaves_ended_grants_to_the_controller_for_a_while() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "driftwarden-r", "namespace": "shop", "creationTimestamp": "2026-01-01T10:00:00Z",
                         "labels": {REQUEST_UID_LABEL: "u1"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        }))
        .unwrap();
        let request = |uid: &str, phase: AccessPhase, expires: &str| -> AccessRequest {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": "r", "namespace": "shop", "uid": uid},
                "spec": {"requester": "alice", "role": {"kind": "ClusterRole", "name": "edit"},
                         "duration": "10m", "reason": "INC-1: roll back the frontend"},
                "status": {"phase": phase, "expiresAt": expires},
            }))
            .unwrap()
        };
        let active = request("u1", AccessPhase::Active, "2026-01-01T10:10:00Z");
        let long_running = at("2026-01-01T09:00:00Z");
        // (case, request, now, sweeper started, swept)
        let cases = [
            ("young binding, no request", None, "2026-01-01T10:00:20Z", long_running, false),
            ("no request", None, "2026-01-01T10:05:00Z", long_running, true),
            (
                "another request's uid",
                Some(request("u2", AccessPhase::Active, "2026-01-01T10:10:00Z")),
                "2026-01-01T10:05:00Z",
                long_running,
                true,
            ),
            (
                "request finished",
                Some(request("u1", AccessPhase::Expired, "2026-01-01T10:10:00Z")),
                "2026-01-01T10:05:00Z",
                long_running,
                true,
            ),
            ("inside the window", Some(active.clone()), "2026-01-01T10:05:00Z", long_running, false),
            ("just ended: the controller's", Some(active.clone()), "2026-01-01T10:10:05Z", long_running, false),
            (
                "ended long ago: the controller is stuck",
                Some(active.clone()),
                "2026-01-01T10:11:00Z",
                long_running,
                true,
            ),
            (
                "ended during an outage, sweeper just started",
                Some(active.clone()),
                "2026-01-01T12:00:05Z",
                at("2026-01-01T12:00:00Z"),
                false,
            ),
            (
                "ended during an outage, sweeper started long ago",
                Some(active),
                "2026-01-01T12:01:00Z",
                at("2026-01-01T12:00:00Z"),
                true,
            ),
        ];
        for (case, request, now, started, swept) in cases {
            assert_eq!(orphaned(&binding, request.as_ref(), at(now), started), swept, "{case}");
        }
    }

    #[test]
    fn an_unchanged_decision_gives_an_identical_status() {
        let decision = Decision {
            phase: AccessPhase::Pending,
            message: "waiting".into(),
            policy: Some("p".into()),
            approvals: vec![],
            ignored: vec![],
            window: None,
            binding: Binding::Absent,
            wake_at: None,
        };
        let first = next_status(&AccessRequestStatus::default(), &decision, "b", Timestamp::from_second(1000).unwrap());
        let second = next_status(&first, &decision, "b", Timestamp::from_second(2000).unwrap());
        assert_eq!(first, second, "a second reconcile of an unchanged world must not write");
    }
}
