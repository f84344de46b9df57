//! The driftwarden.io/v1alpha1 API: the custom resources users write and the
//! operator reconciles. Types only; behaviour lives in `core` and `operator`.
//!
//! `///` comments on these types become the descriptions `kubectl explain`
//! shows, so they are written for users. Invariants the API server can check
//! on its own are CEL rules (`x_kube(validation)`), so a bad object is
//! rejected at `kubectl apply` time, before any controller sees it.

// `printcolumn(...)` repeated in `#[kube(...)]` is how kube-derive takes
// several columns; clippy mistakes the repetition for a duplicate.
#![allow(clippy::duplicated_attributes)]

mod access_policy;
mod access_request;
mod access_review;
mod desired_state;
pub mod identity;
mod notifier;
mod publisher_key;
mod validation;

pub use access_policy::{AccessPolicy, AccessPolicySpec, AccessPolicyStatus, Approvers, WindowStart};
pub use access_request::{
    AccessPhase, AccessRequest, AccessRequestSpec, AccessRequestStatus, AccessTarget, ActivityEntry, Approval,
    IgnoredReview, PendingDrift, SessionChange,
};
pub use access_review::{AccessReview, AccessReviewSpec, AccessReviewStatus, ReviewDecision};
pub use desired_state::{
    Attribution, AttributionPolicy, DesiredState, DesiredStateSpec, DesiredStateStatus, DriftAction, DriftClass,
    DriftCounts, DriftedObject, IgnoreRule, InventoryStatus, KindRef, NamedObject, ObjectRef, PruneBlock, Remediation,
    RevertRecord, SourceRef, SourceSignature, Undeclared,
};
pub use notifier::{NoticeKind, Notifier, NotifierSpec, NotifierStatus, NotifierType, SecretKeyRef};
pub use publisher_key::{PublisherKey, PublisherKeySpec, PublisherKeyStatus};
pub use validation::MAX_ACCESS_DURATION;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResourceExt, KubeSchema};
use serde::{Deserialize, Serialize};

/// The API group of every driftwarden resource.
pub const GROUP: &str = "driftwarden.io";
/// The API version of every driftwarden resource.
pub const VERSION: &str = "v1alpha1";

/// A Role or ClusterRole that a request asks for and a policy allows.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoleRef {
    /// Kind of the role: `Role` (in the request's namespace) or `ClusterRole`
    /// (bound only in the request's namespace, through a RoleBinding).
    pub kind: RoleKind,
    /// Name of the role. Wildcards are never allowed.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = validation::no_wildcard())]
    pub name: String,
}

/// Kind of a role reference.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, schemars::JsonSchema)]
pub enum RoleKind {
    Role,
    ClusterRole,
}

/// What the operator does with a drifted object.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema)]
pub enum RemediationAction {
    /// Put the object back to what Git declares.
    #[default]
    Revert,
    /// Leave the object alone; report the drift in status, Events and metrics.
    Report,
}

/// Every CustomResourceDefinition driftwarden serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        DesiredState::crd(),
        AccessRequest::crd(),
        AccessReview::crd(),
        AccessPolicy::crd(),
        PublisherKey::crd(),
        Notifier::crd(),
    ]
}

/// The CRDs, and the admission policy that holds identity at the API
/// server, as YAML documents, one `(file name, YAML)` pair each. This is what
/// `driftwarden crds` prints and what `crds/` holds.
pub fn crd_documents() -> Vec<(String, String)> {
    fn yaml<T: Serialize>(value: &T) -> String {
        serde_yaml_ng::to_string(value).expect("API objects serialize to YAML")
    }
    let mut documents: Vec<(String, String)> = crds()
        .into_iter()
        .map(|crd| (format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default()), yaml(&crd)))
        .collect();
    let identity = format!("{}---\n{}", yaml(&identity::policy()), yaml(&identity::binding()));
    documents.push((format!("{}.yaml", identity::NAME), identity));
    documents
}

/// All CRDs as one multi-document YAML stream.
pub fn crds_yaml() -> String {
    crd_documents().into_iter().map(|(_, yaml)| format!("---\n{yaml}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` is generated; this fails when it is stale.
    #[test]
    fn committed_crds_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let mut expected_files = Vec::new();
        for (file, yaml) in crd_documents() {
            let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_default();
            assert!(
                committed == yaml,
                "crds/{file} is stale: run `cargo run -- crds --dir crds` and commit the result"
            );
            expected_files.push(file);
        }
        let mut present: Vec<String> =
            std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        present.sort();
        expected_files.sort();
        assert_eq!(present, expected_files, "crds/ holds files the binary does not generate");
    }

    #[test]
    fn the_identity_policy_covers_creates_of_requests_and_reviews() {
        let policy = serde_json::to_value(identity::policy()).unwrap();
        let rule = &policy["spec"]["matchConstraints"]["resourceRules"][0];
        assert_eq!(rule["operations"], serde_json::json!(["CREATE"]));
        assert_eq!(rule["resources"], serde_json::json!(["accessrequests", "accessreviews"]));
        assert_eq!(policy["spec"]["failurePolicy"], "Fail");
        assert_eq!(
            serde_json::to_value(identity::binding()).unwrap()["spec"]["validationActions"],
            serde_json::json!(["Deny"])
        );
    }

    #[test]
    fn every_crd_has_status_printer_columns_and_a_short_name() {
        for crd in crds() {
            let name = crd.metadata.name.clone().unwrap();
            let version = &crd.spec.versions[0];
            assert!(
                version.subresources.as_ref().and_then(|s| s.status.as_ref()).is_some(),
                "{name}: no status subresource"
            );
            assert!(
                !version.additional_printer_columns.as_deref().unwrap_or_default().is_empty(),
                "{name}: no printer columns"
            );
            assert!(!crd.spec.names.short_names.as_deref().unwrap_or_default().is_empty(), "{name}: no short name");
        }
    }

    /// Every field needs a description: it is what `kubectl explain` shows.
    #[test]
    fn every_field_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, child) in props {
                    let child_path = format!("{path}.{name}");
                    // metadata/apiVersion/kind are the API machinery's, documented upstream.
                    if path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                        continue;
                    }
                    if child.get("description").is_none() {
                        missing.push(child_path.clone());
                    }
                    walk(&child_path, child, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        for crd in crds() {
            let schema = serde_json::to_value(&crd.spec.versions[0].schema).unwrap();
            let mut missing = Vec::new();
            walk("", &schema["openAPIV3Schema"], &mut missing);
            assert!(missing.is_empty(), "{}: undocumented fields {missing:?}", crd.metadata.name.unwrap());
        }
    }
}
