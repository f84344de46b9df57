//! A ValidatingAdmissionPolicy that holds identity at the API server itself:
//! a request or review may only name the user who creates it. The operator's
//! webhooks stamp and check the same, but this needs no operator running, so
//! it also holds before the webhooks are configured (a fresh install) or
//! while they are down.

use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use serde_json::json;

/// Name of the policy and its binding.
pub const NAME: &str = "identity.driftwarden.io";

pub fn policy() -> ValidatingAdmissionPolicy {
    let is = |resource: &str| format!("request.resource.resource != '{resource}'");
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NAME},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": [{
                "apiGroups": [super::GROUP], "apiVersions": [super::VERSION],
                "operations": ["CREATE"], "resources": ["accessrequests", "accessreviews"],
            }]},
            "validations": [
                {
                    "expression": format!("{} || !has(object.spec.requester) || object.spec.requester == request.userInfo.username", is("accessrequests")),
                    "messageExpression": "'spec.requester must be the authenticated user ' + request.userInfo.username",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!("{} || !has(object.spec.reviewer) || object.spec.reviewer == request.userInfo.username", is("accessreviews")),
                    "messageExpression": "'spec.reviewer must be the authenticated user ' + request.userInfo.username",
                    "reason": "Forbidden",
                },
                {
                    "expression": format!(
                        "{} || !has(object.spec.reviewerGroups) || (has(request.userInfo.groups) && object.spec.reviewerGroups == request.userInfo.groups)",
                        is("accessreviews")
                    ),
                    "message": "spec.reviewerGroups must be the groups the API server authenticated",
                    "reason": "Forbidden",
                },
            ],
        },
    }))
    .expect("a well-formed ValidatingAdmissionPolicy")
}

pub fn binding() -> ValidatingAdmissionPolicyBinding {
    serde_json::from_value(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NAME},
        "spec": {"policyName": NAME, "validationActions": ["Deny"]},
    }))
    .expect("a well-formed ValidatingAdmissionPolicyBinding")
}
