//! AccessPolicy: the platform team's rules for access requests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::core::Duration;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::{RemediationAction, RoleRef, validation};

/// What the policy allows and who approves.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "AccessPolicy",
    doc = "Who may ask for which roles in which namespaces, for how long, and who must approve. A request that no policy matches is denied. Where several policies match a request, the strictest one applies.",
    status = "AccessPolicyStatus",
    shortname = "apol",
    category = "driftwarden",
    printcolumn(name = "Max Duration", type_ = "string", json_path = ".spec.maxDuration"),
    printcolumn(name = "Approvals", type_ = "integer", json_path = ".spec.requiredApprovals"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicySpec {
    /// Namespaces the policy applies to. An empty selector matches every namespace.
    pub namespace_selector: LabelSelector,

    /// Roles that may be requested: an allow-list by exact name, never a
    /// wildcard. `cluster-admin` is allowed only if listed here by name.
    #[schemars(length(min = 1, max = 64))]
    pub roles: Vec<RoleRef>,

    /// The longest window a request may ask for, as a Go duration (at most 24h).
    #[schemars(length(min = 2, max = 32))]
    #[x_kube(validation = validation::go_duration_format())]
    #[x_kube(validation = validation::positive_duration())]
    #[x_kube(validation = validation::duration_ceiling())]
    pub max_duration: Duration,

    /// Who may approve or deny. Requesters never count for their own request.
    pub approvers: Approvers,

    /// How many distinct approvers must approve.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 10))]
    pub required_approvals: i32,

    /// When the window opens: at approval (default), or at the request's
    /// `startAt` if it names one.
    #[serde(default)]
    pub window_start: WindowStart,

    /// How long a request may wait for approval before it is denied.
    #[serde(default = "one_hour")]
    #[schemars(length(min = 2, max = 32), extend("default" = "1h"))]
    #[x_kube(validation = validation::go_duration_format())]
    #[x_kube(validation = validation::positive_duration())]
    pub pending_timeout: Duration,

    /// What to do with changes made under this policy once their window has
    /// ended, where the DesiredState does not say: `Revert` or `Report`.
    #[serde(default)]
    pub window_end: RemediationAction,
}

fn one() -> i32 {
    1
}

fn one_hour() -> Duration {
    "1h".parse().expect("1h is a valid duration")
}

/// Approvers by user name or group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.users) + size(self.groups) > 0").message("name at least one approver user or group"))]
pub struct Approvers {
    /// User names, as the API server authenticates them.
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    pub users: Vec<String>,
    /// Group names, as the API server authenticates them.
    #[serde(default)]
    #[schemars(length(max = 100), inner(length(min = 1, max = 253)))]
    pub groups: Vec<String>,
}

/// When an approved window opens.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum WindowStart {
    /// When the last required approval arrives.
    #[default]
    Approval,
    /// At the request's `startAt` (or at approval, if that is later).
    RequestedStart,
}

/// What the operator observed about the policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessPolicyStatus {
    /// The generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
