//! DesiredState: "this Git state must hold here".

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::RemediationAction;

/// The desired state: which sources, and what to do with drift.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "DesiredState",
    doc = "The state declared in Git that must hold in this namespace. The operator watches the objects the sources declare, reports every difference and, depending on `remediation` and on approved access windows, puts them back.",
    namespaced,
    status = "DesiredStateStatus",
    shortname = "dst",
    category = "driftwarden",
    printcolumn(name = "Revision", type_ = "string", json_path = ".status.revision"),
    printcolumn(name = "Managed", type_ = "integer", json_path = ".status.managed"),
    printcolumn(name = "Drifted", type_ = "integer", json_path = ".status.drifted"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct DesiredStateSpec {
    /// ConfigMaps in this namespace that carry the manifests, by name or by
    /// label selector. Every key holds YAML (several documents allowed) or
    /// JSON, optionally gzip-compressed in binaryData. The Git commit is read
    /// from the `driftwarden.io/revision` annotation.
    #[schemars(length(min = 1, max = 64))]
    pub sources: Vec<SourceRef>,

    /// What to do with drift.
    #[serde(default)]
    pub remediation: Remediation,

    /// Fields that are never drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ignore: Vec<IgnoreRule>,

    /// Stop watching and remediating; the last status stays as it was.
    #[serde(default)]
    pub suspend: bool,

    /// Report what would be reverted without changing anything.
    #[serde(default)]
    pub dry_run: bool,

    /// The PublisherKeys (by name) whose signatures this DesiredState
    /// accepts. Empty: any PublisherKey trusted for this namespace. Keys are
    /// only ever named here, never supplied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(min = 1, max = 253)))]
    pub trusted_keys: Vec<String>,

    /// Objects no source declares, in the namespaces this DesiredState
    /// manages: which kinds it owns (a default set of workloads, RBAC,
    /// credentials and networking, plus every declared kind) and what is
    /// never one. An owned undeclared object is drift, judged by the gate
    /// like any other: deleted at once when no approved window covers its
    /// creation, held until the window ends when one does.
    #[serde(default)]
    pub undeclared: Undeclared,

    /// Delete objects an earlier revision declared and the current one does
    /// not (the operator keeps an inventory of what it declared). Off: such
    /// objects are left in the cluster, and never judged as undeclared.
    #[serde(default)]
    pub prune: bool,

    /// A revision that would prune more than half of what was declared
    /// waits (condition `PruneBlocked`) until this names the token the
    /// condition and `status.inventory.blocked.token` show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub confirm_prune: Option<String>,

    /// How a drifted object is tied to an access window. `Record` (the
    /// default): only a record of the write (the operator's admission
    /// write log, or the API server's audit events) ties it to the
    /// grantee's window; drift no record explains is unauthorized. `Scope`
    /// (opt-in, weaker): drift no record explains is also held while an
    /// open window's role could have written it, whoever wrote it; such a
    /// hold is shown as `AuthorizedByScope`, never as a person's activity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<AttributionPolicy>,
}

/// See `spec.attribution`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum AttributionPolicy {
    #[default]
    Record,
    Scope,
}

/// Which undeclared objects a DesiredState owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Undeclared {
    /// Off: undeclared objects are neither reported nor removed.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// The kinds owned instead of the default set (declared kinds are
    /// always owned). Unset: the default set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub kinds: Option<Vec<KindRef>>,
    /// Kinds owned besides the default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub include: Vec<KindRef>,
    /// Kinds never owned as undeclared objects (declared ones are still managed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub exclude: Vec<KindRef>,
    /// Objects by kind and name that are never undeclared drift.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub ignore: Vec<NamedObject>,
}

fn enabled() -> bool {
    true
}

impl Default for Undeclared {
    fn default() -> Self {
        Self { enabled: true, kinds: None, include: Vec::new(), exclude: Vec::new(), ignore: Vec::new() }
    }
}

/// A kind, by API group (empty for the core group) and name.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KindRef {
    /// The API group, e.g. `apps`; empty for the core group.
    #[serde(default)]
    #[schemars(length(max = 253))]
    pub group: String,
    /// The kind, e.g. `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
}

/// An object by kind and name (in every managed namespace, or in one).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NamedObject {
    /// The kind, e.g. `ConfigMap`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// The name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Only in this namespace; every managed namespace when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: Option<String>,
}

/// One source ConfigMap, or a set of them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.name) != has(self.selector)").message("set exactly one of name and selector"))]
pub struct SourceRef {
    /// Name of a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
    /// Label selector for ConfigMaps in this namespace; all that match are
    /// merged into one state (a large state may be split this way).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Remediation per class of drift.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Remediation {
    /// Drift that no approved access window covers: `Revert` it at once
    /// (default) or only `Report` it.
    #[serde(default)]
    pub unauthorized: RemediationAction,
    /// Drift made inside an approved access window, once that window has
    /// ended: `Revert` it to Git (default) or keep reporting it.
    #[serde(default)]
    pub window_end: RemediationAction,
}

/// Fields to leave out of the comparison.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("size(self.jsonPointers) > 0 || size(self.fieldManagers) > 0").message("name at least one JSON pointer or field manager"))]
pub struct IgnoreRule {
    /// JSON pointers (RFC 6901) to ignore, e.g. `/spec/replicas`. With
    /// `fieldManagers`, they are ignored only where one of those managers
    /// owns them.
    #[serde(default)]
    #[schemars(length(max = 64), inner(length(min = 1, max = 1024), regex(pattern = "^/")))]
    pub json_pointers: Vec<String>,
    /// Field managers (as in `metadata.managedFields`) whose fields are not
    /// drift, e.g. `horizontal-pod-autoscaler`. Without `jsonPointers`,
    /// every field they own is ignored.
    #[serde(default)]
    #[schemars(length(max = 32), inner(length(min = 1, max = 128)))]
    pub field_managers: Vec<String>,
    /// Only objects of this kind (e.g. `Deployment`); all kinds when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub kind: Option<String>,
    /// Only objects with this name; all names when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub name: Option<String>,
}

/// What the operator last observed.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DesiredStateStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Git commit of the sources this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// How many objects the sources declare.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<i64>,
    /// How many of them match Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync: Option<i64>,
    /// How many of them differ from Git.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drifted: Option<i64>,
    /// How many reverts the operator has made for this DesiredState.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverts: Option<i64>,
    /// Drifted objects by class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_counts: Option<DriftCounts>,
    /// The drifted objects, oldest first (bounded; see `drifted` for the total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drifted_objects: Vec<DriftedObject>,
    /// The last revert the operator made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_revert: Option<RevertRecord>,
    /// The signed publish the enforced state comes from. A publish with a
    /// lower sequence is refused as a replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SourceSignature>,
    /// What the inventory of declared objects holds (the entries themselves
    /// are kept in the operator's namespace: status is too small for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<InventoryStatus>,
    /// `Ready`, `Drifted` and `SourceValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}

/// A summary of the inventory.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryStatus {
    /// Objects the current revision declares.
    pub declared: i64,
    /// Objects removed from Git while prune was off, left in the cluster.
    pub retired: i64,
    /// Objects removed from Git being deleted (up to 10; `pruningCount` is the total).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruning: Vec<ObjectRef>,
    /// How many objects are being pruned.
    #[serde(default)]
    pub pruning_count: i64,
    /// Objects this DesiredState has pruned since it was created.
    #[serde(default)]
    pub pruned: i64,
    /// A prune the guard holds back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked: Option<PruneBlock>,
    /// The ConfigMap (in the operator's namespace) that holds the entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<String>,
}

/// A prune held back: the revision would delete more than half of what was declared.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PruneBlock {
    /// How many objects it would delete...
    pub deletions: i64,
    /// ...of how many declared.
    pub of: i64,
    /// Set `spec.confirmPrune` to this to let exactly these deletions go.
    pub token: String,
    /// The first of them (up to 10).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<ObjectRef>,
}

/// The signature of the publish that was last accepted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceSignature {
    /// The PublisherKey that verified it.
    pub key: String,
    /// Its publish sequence (publish time in milliseconds, or higher).
    pub sequence: i64,
}

/// Drifted objects by class.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftCounts {
    /// Changed with no approved access window behind the change.
    pub unauthorized: i64,
    /// Changed by a grantee inside an active window (attributed by audit log).
    pub authorized: i64,
    /// Changed while an active window covered the scope, without audit data.
    pub authorized_by_scope: i64,
    /// Changed in a window that has since ended.
    pub window_ended: i64,
    /// Objects no source declares (counted here and not under the others).
    #[serde(default)]
    pub undeclared: i64,
}

/// One object that differs from Git.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftedObject {
    /// The object.
    pub object: ObjectRef,
    /// When the drift was first seen.
    pub since: Time,
    /// Why it is (or is not) allowed.
    pub class: DriftClass,
    /// JSON pointers of the fields that differ (values are never shown here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    /// The AccessRequest the change is attributed to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
    /// How the class was decided: `AuditLog` (who wrote it, from the API
    /// server's audit events) or `Scope` (no audit data: an open window
    /// covers the namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribution: Option<Attribution>,
    /// What the operator does about it: `Hold` (until `revertAt`), `Revert`,
    /// `Report`, or `WouldRevert` (dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<DriftAction>,
    /// When it will be reverted (a held change: when its window ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_at: Option<Time>,
    /// When the object was last seen matching Git before this drift (to the
    /// microsecond): writes before it are not part of the drift. Kept here
    /// so that a restarted or new leader judges the same writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_sync_at: Option<MicroTime>,
    /// The object is not declared by any source (it was created beside
    /// them): its remedy is deletion.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub undeclared: bool,
}

/// How a drifted object's class was decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Attribution {
    AuditLog,
    Scope,
}

/// What the operator does about a drifted object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DriftAction {
    Hold,
    Revert,
    Report,
    WouldRevert,
}

/// Class of a drifted object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum DriftClass {
    Unauthorized,
    Authorized,
    AuthorizedByScope,
    WindowEnded,
}

/// A reference to a managed object.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API version, e.g. `apps/v1`.
    pub api_version: String,
    /// Kind, e.g. `Deployment`.
    pub kind: String,
    /// Namespace; unset for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    pub name: String,
}

/// A revert the operator made.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevertRecord {
    /// The object.
    pub object: ObjectRef,
    /// When it was reverted.
    pub at: Time,
    /// Which class of drift was reverted.
    pub class: DriftClass,
    /// The AccessRequest whose window ended, for session drift.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
}
