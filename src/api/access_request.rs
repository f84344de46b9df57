//! AccessRequest: "I need this role here for this long".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{RoleRef, validation};

/// What is asked for, for how long, and why.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "AccessRequest",
    doc = "A request for time-bound access: a role in this namespace, for a while, for a reason. Approvers answer it with AccessReviews; once approved, the operator binds the role to the requester and removes the binding when the window ends. A request cannot be extended: ask again.",
    namespaced,
    status = "AccessRequestStatus",
    shortname = "areq",
    category = "driftwarden",
    printcolumn(name = "Requester", type_ = "string", json_path = ".spec.requester"),
    printcolumn(name = "Role", type_ = "string", json_path = ".spec.role.name"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.requester) == has(oldSelf.requester)").message("requester is immutable"))]
#[x_kube(validation = Rule::new("has(self.startAt) == has(oldSelf.startAt)").message("startAt is immutable"))]
#[x_kube(validation = Rule::new("has(self.target) == has(oldSelf.target)").message("target is immutable"))]
pub struct AccessRequestSpec {
    /// The user who asks. Set by the API server's admission from the
    /// authenticated user; a different value is rejected. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = validation::immutable("requester"))]
    pub requester: Option<String>,

    /// The role to bind, in this namespace only. Immutable.
    #[x_kube(validation = validation::immutable("role"))]
    pub role: RoleRef,

    /// How long the access lasts once granted, as a Go duration such as
    /// `30m` or `2h`; at most 24h, and at most what the policy allows.
    /// Immutable: a request cannot be extended.
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = validation::go_duration_format())]
    #[x_kube(validation = validation::positive_duration())]
    #[x_kube(validation = validation::duration_ceiling())]
    #[x_kube(validation = validation::immutable("duration"))]
    pub duration: Duration,

    /// Why the access is needed (an incident, a ticket). Shown to approvers
    /// and kept in the audit trail. Immutable.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = validation::non_trivial_reason())]
    #[x_kube(validation = validation::immutable("reason"))]
    pub reason: String,

    /// When the window should open, where the policy lets requesters choose;
    /// otherwise the window opens at approval. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validation::immutable("startAt"))]
    pub start_at: Option<Time>,

    /// What the access is for, so changes made with it can be tied to the
    /// desired state they touch. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = validation::immutable("target"))]
    pub target: Option<AccessTarget>,

    /// Set to true to end the access now (the requester or an approver).
    /// A revoked request stays revoked.
    #[serde(default)]
    #[x_kube(validation = Rule::new("!oldSelf || self").message("a revoked request cannot be reinstated; create a new one"))]
    pub revoked: bool,
}

/// What a request is for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessTarget {
    /// A DesiredState in this namespace whose objects the access is meant to change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub desired_state: Option<String>,
}

/// Where a request is in its life.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum AccessPhase {
    /// Waiting for approvals.
    Pending,
    /// Approved; the window has not opened yet.
    Approved,
    /// Refused by an approver, by policy, or by timing out. Final.
    Denied,
    /// The RoleBinding exists; the window is open.
    Active,
    /// The window ended and the RoleBinding is gone. Final.
    Expired,
    /// Ended early by `spec.revoked` or deletion. Final.
    Revoked,
}

/// What the operator decided and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessRequestStatus {
    /// Where the request is in its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccessPhase>,
    /// Why the request is in this phase, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The AccessPolicy the request was judged by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Approvals that counted, one per distinct approver.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvals: Vec<Approval>,
    /// Reviews that did not count, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored_reviews: Vec<IgnoredReview>,
    /// When the RoleBinding was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granted_at: Option<Time>,
    /// When the access ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Time>,
    /// The RoleBinding that grants the access, in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_binding: Option<String>,
    /// The latest writes made with this access, and the commands run in
    /// its Pods (`kubectl exec`, `attach`, `port-forward`, `cp`), each
    /// bounded (see `activityCount`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<ActivityEntry>,
    /// How many writes (and commands in Pods) were made with this access in all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity_count: Option<i64>,
    /// Writes by other users in this namespace while the window was open
    /// (bounded), so that drift they cause is not taken for this session's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scope_writes: Vec<ActivityEntry>,
    /// When the window ended with changes still differing from Git: per
    /// object, a unified diff of the desired YAML that would make Git match
    /// what was done (Secret values redacted). Commit it before the window
    /// ends and nothing is reverted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub session_changes: Vec<SessionChange>,
    /// While the request is pending: the drift in this namespace now, so
    /// approvers know what they approve into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_drift: Option<PendingDrift>,
    /// `Ready` and the phase transitions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// An approval that counted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// Who approved (from the API server, never from user input).
    pub reviewer: String,
    /// The AccessReview that carried the approval.
    pub review: String,
    /// The approver's reason.
    #[serde(default)]
    pub reason: String,
    /// When it was counted.
    pub at: Time,
}

/// A review that did not count.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IgnoredReview {
    /// The AccessReview.
    pub review: String,
    /// Who wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewer: Option<String>,
    /// Why it did not count, e.g. "requesters cannot review their own request".
    pub reason: String,
}

/// One write, as the API server's audit log saw it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ActivityEntry {
    /// When the API server received the write (to the microsecond: the gate
    /// orders writes against what it saw in sync).
    pub time: MicroTime,
    /// Who wrote (the authenticated user, from the API server).
    #[serde(default)]
    pub user: String,
    /// create, update, patch or delete.
    pub verb: String,
    /// The resource, as `resource.group` (e.g. `deployments.apps`), with
    /// the subresource after a slash where there is one (`deployments.apps/scale`).
    pub resource: String,
    /// Namespace of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// JSON pointers of the fields the request body touched, where known.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// For a command in a Pod (verb `connect` on `pods/exec`, `pods/attach`
    /// or `pods/portforward`): the container, where named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// For `pods/exec`: the command line as typed, bounded (see
    /// `commandTruncated`); for `pods/portforward`: the ports. Only what
    /// the API server was asked: never what went through the streams.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// The command line was longer than a status keeps: cut (the
    /// operator's log line keeps more).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub command_truncated: bool,
    /// For a command: who reported it. `admission`: the operator's webhook
    /// was called (anyone who can reach it could forge such a call, so on
    /// its own this is a claim); `audit`: the API server's authenticated
    /// audit log saw it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<String>,
}

impl ActivityEntry {
    /// A command in a Pod, not a write: it never explains drift.
    pub fn is_command(&self) -> bool {
        self.verb == "connect"
    }
}

/// What a session changed in one object, as a patch to Git.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionChange {
    /// The object.
    pub object: super::ObjectRef,
    /// The DesiredState that manages it.
    pub desired_state: String,
    /// Where the object is declared: `<ConfigMap>/<key>`.
    pub source: String,
    /// Unified diff of the object's YAML, Git's version to the live one
    /// (bounded; Secret values redacted).
    pub patch: String,
    /// When the window's end caught it.
    pub at: Time,
}

/// Drift in a namespace, for approvers.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingDrift {
    /// How many managed objects differ from Git in this namespace.
    pub drifted: i64,
    /// The first of them, as `Kind namespace/name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<String>,
}

impl AccessRequestStatus {
    /// The fields the access controller owns: everything but what the audit
    /// receiver and the gate write (they write those under their own field
    /// manager, so neither overwrites the other).
    pub fn access_fields(&self) -> AccessRequestStatus {
        AccessRequestStatus {
            activity: Vec::new(),
            activity_count: None,
            scope_writes: Vec::new(),
            session_changes: Vec::new(),
            pending_drift: None,
            ..self.clone()
        }
    }
}
