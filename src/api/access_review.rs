//! AccessReview: an approver's answer to an AccessRequest.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::validation;

/// The decision.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "driftwarden.io",
    version = "v1alpha1",
    kind = "AccessReview",
    doc = "An approver's decision on an AccessRequest in the same namespace. Immutable once created. Reviews by the requester, by someone the policy does not name as an approver, for an unknown request, or made for an earlier request of the same name do not count; the request's status says which were ignored and why.",
    namespaced,
    status = "AccessReviewStatus",
    shortname = "arev",
    category = "driftwarden",
    printcolumn(name = "Request", type_ = "string", json_path = ".spec.accessRequest"),
    printcolumn(name = "Decision", type_ = "string", json_path = ".spec.decision"),
    printcolumn(name = "Reviewer", type_ = "string", json_path = ".spec.reviewer"),
    printcolumn(name = "Counted", type_ = "string", json_path = ".status.conditions[?(@.type==\"Counted\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("an AccessReview is immutable; create a new one"))]
pub struct AccessReviewSpec {
    /// Name of the AccessRequest (in this namespace) this review answers:
    /// a DNS subdomain name, as every object name is.
    #[schemars(length(min = 1, max = 253), regex(pattern = "^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"))]
    pub access_request: String,

    /// `Approve` or `Deny`.
    pub decision: ReviewDecision,

    /// Why; kept in the audit trail.
    #[schemars(length(max = 1024))]
    #[x_kube(validation = validation::non_trivial_reason())]
    pub reason: String,

    /// The reviewer. Set by the API server's admission from the
    /// authenticated user; a different value is rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub reviewer: Option<String>,

    /// The reviewer's groups when the review was created, from the API server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(max = 253)))]
    pub reviewer_groups: Vec<String>,

    /// The UID of the AccessRequest this review answers. Set by the API
    /// server's admission from the request as it exists when the review is
    /// created; a different value is rejected. A review counts only for the
    /// request with this UID: deleting a request and creating another of
    /// the same name never carries an approval over.
    #[serde(default, rename = "accessRequestUID", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub access_request_uid: Option<String>,
}

/// An approver's decision.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum ReviewDecision {
    Approve,
    Deny,
}

/// Whether the review counted.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessReviewStatus {
    /// `Counted`: True when the review counted toward its request, False
    /// with the reason when it was ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = kube::core::ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
}
