//! Admission decisions for AccessRequests and AccessReviews. Pure: the
//! shell hands over the admission request and the facts it looked up.
//!
//! Identity comes from the API server (`userInfo`), never from what a user
//! typed: the mutating step stamps it, the validating step (which runs after
//! every mutation and after schema validation) checks it again.

use std::collections::BTreeMap;

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

use crate::access::{self, policy};
use crate::api::{AccessPolicy, AccessRequest, AccessReview};

/// The authenticated user, as the API server reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub groups: Vec<String>,
}

impl Identity {
    pub fn of(request: &AdmissionRequest<DynamicObject>) -> Self {
        Self {
            username: request.user_info.username.clone().unwrap_or_default(),
            groups: request.user_info.groups.clone().unwrap_or_default(),
        }
    }
}

/// Which of our kinds an admission request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    AccessRequest,
    AccessReview,
}

impl Kind {
    pub fn of(request: &AdmissionRequest<DynamicObject>) -> Option<Self> {
        match (request.kind.group.as_str(), request.kind.kind.as_str()) {
            (crate::api::GROUP, "AccessRequest") => Some(Kind::AccessRequest),
            (crate::api::GROUP, "AccessReview") => Some(Kind::AccessReview),
            _ => None,
        }
    }
}

/// Stamps the requester (or reviewer, groups and the reviewed request's UID)
/// on create. A value that names someone else is refused, not silently
/// replaced: it is either a mistake or an attempt to act in another's name.
/// `reviewed_uid` is the UID of the AccessRequest a review names, as the
/// shell found it (`None`: it does not exist; validation refuses it).
pub fn mutate(request: &AdmissionRequest<DynamicObject>, reviewed_uid: Option<&str>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let (Some(kind), Operation::Create, Some(object)) = (Kind::of(request), &request.operation, &request.object) else {
        return response;
    };
    let who = Identity::of(request);
    if who.username.is_empty() {
        return response.deny("the API server sent no user name; refusing to admit an object without an identity");
    }
    let spec = object.data.get("spec");
    let mut stamps: Vec<(&str, Value)> = Vec::new();
    match kind {
        Kind::AccessRequest => stamps.push(("requester", Value::from(who.username.clone()))),
        Kind::AccessReview => {
            stamps.push(("reviewer", Value::from(who.username.clone())));
            stamps.push(("reviewerGroups", Value::from(who.groups.clone())));
            if let Some(uid) = reviewed_uid {
                stamps.push(("accessRequestUID", Value::from(uid)));
            }
        }
    }
    let mut operations = Vec::new();
    for (field, value) in stamps {
        match spec.and_then(|s| s.get(field)) {
            Some(given) if *given != value && field == "accessRequestUID" => {
                return response.deny(format!(
                    "spec.accessRequestUID is set from the AccessRequest as it exists now ({value}); leave it out"
                ));
            }
            Some(given) if *given != value => {
                return response.deny(format!(
                    "spec.{field} is set from your identity ({}) and cannot name anyone else; leave it out",
                    who.username
                ));
            }
            Some(_) => {}
            None => operations
                .push(PatchOperation::Add(AddOperation { path: PointerBuf::from_tokens(["spec", field]), value })),
        }
    }
    if spec.is_none() {
        // The schema will reject the object anyway; do not invent a spec.
        return response;
    }
    match response.clone().with_patch(Patch(operations)) {
        Ok(patched) => patched,
        Err(err) => response.deny(format!("internal error building the patch: {err}")),
    }
}

/// What the shell looked up for [`validate`].
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Every AccessPolicy.
    pub policies: Vec<AccessPolicy>,
    /// The labels of the object's namespace (`None`: namespace not found).
    pub namespace_labels: Option<BTreeMap<String, String>>,
    /// For a review: the request it answers (`None`: does not exist).
    pub reviewed_request: Option<AccessRequest>,
    /// Who may revoke any request (break-glass).
    pub break_glass: BreakGlass,
}

/// The cluster admins who may revoke any request in an incident, whoever
/// asked for it and whatever the policy says about approvers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakGlass {
    pub users: Vec<String>,
    pub groups: Vec<String>,
}

impl Default for BreakGlass {
    fn default() -> Self {
        BreakGlass { users: Vec::new(), groups: vec!["system:masters".into()] }
    }
}

impl BreakGlass {
    /// The user or group that makes `who` a break-glass admin, if any.
    pub fn grants(&self, who: &Identity) -> Option<String> {
        if self.users.contains(&who.username) {
            return Some(format!("user {}", who.username));
        }
        who.groups.iter().find(|group| self.groups.contains(group)).map(|group| format!("group {group}"))
    }
}

/// Who revoked a request, and on what authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Revoker {
    Requester,
    Approver,
    /// A break-glass admin; the user or group that made them one.
    BreakGlass(String),
}

/// Whether this admission request revokes an AccessRequest, and by whose
/// authority (for the log line and the Event). `None` when it does not, or
/// when the revocation is not allowed.
pub fn revocation(request: &AdmissionRequest<DynamicObject>, facts: &Facts) -> Option<Revoker> {
    if Kind::of(request) != Some(Kind::AccessRequest) || request.operation != Operation::Update {
        return None;
    }
    let new = typed::<AccessRequest>(request.object.as_ref()).ok()?;
    let old = typed::<AccessRequest>(request.old_object.as_ref()).ok()?;
    if !new.spec.revoked || old.spec.revoked {
        return None;
    }
    revoker(&old, &Identity::of(request), facts)
}

fn revoker(old: &AccessRequest, who: &Identity, facts: &Facts) -> Option<Revoker> {
    if old.spec.requester.as_deref() == Some(who.username.as_str()) {
        return Some(Revoker::Requester);
    }
    if judge(old, facts).is_ok_and(|j| policy::is_approver(j.spec, &who.username, &who.groups)) {
        return Some(Revoker::Approver);
    }
    facts.break_glass.grants(who).map(Revoker::BreakGlass)
}

/// Checks a create (or a revocation) against identity and policy, naming
/// the rule that is broken.
pub fn validate(request: &AdmissionRequest<DynamicObject>, facts: &Facts) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let Some(kind) = Kind::of(request) else { return response };
    let who = Identity::of(request);
    let verdict = match (kind, &request.operation) {
        (Kind::AccessRequest, Operation::Create) => {
            typed(request.object.as_ref()).and_then(|r| create_request(&r, &who, facts))
        }
        (Kind::AccessRequest, Operation::Update) => typed::<AccessRequest>(request.object.as_ref())
            .and_then(|new| Ok((new, typed::<AccessRequest>(request.old_object.as_ref())?)))
            .and_then(|(new, old)| update_request(&new, &old, &who, facts)),
        (Kind::AccessReview, Operation::Create) => {
            typed(request.object.as_ref()).and_then(|r| create_review(&r, &who, facts))
        }
        _ => Ok(()),
    };
    match verdict {
        Ok(()) => response,
        Err(message) => response.deny(message),
    }
}

fn typed<T: serde::de::DeserializeOwned>(object: Option<&DynamicObject>) -> Result<T, String> {
    let object = object.ok_or("the admission request carries no object")?;
    let value = serde_json::to_value(object).map_err(|e| e.to_string())?;
    serde_json::from_value(value).map_err(|e| format!("the object does not match the schema: {e}"))
}

fn create_request(request: &AccessRequest, who: &Identity, facts: &Facts) -> Result<(), String> {
    match request.spec.requester.as_deref() {
        Some(requester) if requester == who.username => {}
        Some(requester) => {
            return Err(format!("spec.requester must be the authenticated user {}, not {requester}", who.username));
        }
        None => return Err("spec.requester was not stamped by the mutating webhook; refusing".into()),
    }
    let judge = judge(request, facts)?;
    access::policy::check_request(request.spec.duration.into(), &request.spec.reason, &judge).map_err(|v| v.to_string())
}

fn update_request(new: &AccessRequest, old: &AccessRequest, who: &Identity, facts: &Facts) -> Result<(), String> {
    if new.spec.revoked && !old.spec.revoked && revoker(old, who, facts).is_none() {
        let requester = old.spec.requester.as_deref().unwrap_or_default();
        return Err(format!(
            "only the requester ({requester}), an approver or a break-glass admin may revoke this request"
        ));
    }
    Ok(())
}

fn judge<'a>(request: &AccessRequest, facts: &'a Facts) -> Result<policy::Judge<'a>, String> {
    let namespace = request.metadata.namespace.as_deref().unwrap_or_default();
    let labels = facts.namespace_labels.as_ref().ok_or_else(|| format!("namespace {namespace} not found"))?;
    policy::select(namespace, labels, &request.spec.role, &facts.policies).map_err(|e| e.to_string())
}

fn create_review(review: &AccessReview, who: &Identity, facts: &Facts) -> Result<(), String> {
    if review.spec.reviewer.as_deref() != Some(who.username.as_str()) {
        return Err(format!("spec.reviewer must be the authenticated user {}", who.username));
    }
    if review.spec.reviewer_groups != who.groups {
        return Err("spec.reviewerGroups must be the groups the API server authenticated".into());
    }
    let namespace = review.metadata.namespace.as_deref().unwrap_or_default();
    let target = &review.spec.access_request;
    let Some(request) = &facts.reviewed_request else {
        return Err(format!("AccessRequest {target} does not exist in namespace {namespace}"));
    };
    let uid = request.metadata.uid.as_deref().unwrap_or_default();
    if review.spec.access_request_uid.as_deref() != Some(uid) {
        return Err(format!(
            "spec.accessRequestUID must be the UID of AccessRequest {target} as it exists now ({uid}); it is stamped \
             by the mutating webhook"
        ));
    }
    if let Some(phase) = request.status.as_ref().and_then(|s| s.phase).filter(|p| access::is_final(*p)) {
        return Err(format!("AccessRequest {target} is already {phase:?}; a review can no longer change it"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessPhase, AccessPolicySpec, AccessRequestStatus, Approvers, RoleKind, RoleRef, WindowStart};
    use kube::core::admission::AdmissionReview;

    fn admission(
        kind: &str,
        operation: &str,
        user: &str,
        groups: &[&str],
        object: Value,
        old: Option<Value>,
    ) -> AdmissionRequest<DynamicObject> {
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "driftwarden.io", "version": "v1alpha1", "kind": kind},
                "resource": {"group": "driftwarden.io", "version": "v1alpha1", "resource": format!("{}s", kind.to_lowercase())},
                "namespace": "shop",
                "operation": operation,
                "userInfo": {"username": user, "groups": groups},
                "object": object,
                "oldObject": old,
            }
        });
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    fn request_object(spec: Value) -> Value {
        serde_json::json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r", "namespace": "shop"}, "spec": spec})
    }

    fn review_object(spec: Value) -> Value {
        serde_json::json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview",
            "metadata": {"name": "v", "namespace": "shop"}, "spec": spec})
    }

    fn base_spec() -> Value {
        serde_json::json!({"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "30m", "reason": "INC-1: roll back the frontend"})
    }

    fn patch_of(response: &AdmissionResponse) -> Value {
        serde_json::from_slice(response.patch.as_deref().unwrap_or(b"[]")).unwrap()
    }

    #[test]
    fn requester_is_stamped_from_the_authenticated_user() {
        let response =
            mutate(&admission("AccessRequest", "CREATE", "alice", &["dev"], request_object(base_spec()), None), None);
        assert!(response.allowed);
        assert_eq!(
            patch_of(&response),
            serde_json::json!([{"op": "add", "path": "/spec/requester", "value": "alice"}])
        );
    }

    #[test]
    fn mutation_table() {
        let mut forged = base_spec();
        forged["requester"] = "bob".into();
        let mut honest = base_spec();
        honest["requester"] = "alice".into();
        let review = serde_json::json!({"accessRequest": "r", "decision": "Approve", "reason": "checked INC-1 ok"});
        let mut forged_review = review.clone();
        forged_review["reviewer"] = "dave".into();
        let mut forged_groups = review.clone();
        forged_groups["reviewerGroups"] = serde_json::json!(["sre", "admins"]);
        // A review prepared for a request that was since deleted and created again.
        let mut stale_uid = review.clone();
        stale_uid["accessRequestUID"] = "uid-of-the-deleted-request".into();
        // (case, kind, user, groups, object, allowed, message fragment)
        let cases = [
            (
                "forged requester",
                "AccessRequest",
                "alice",
                vec!["dev"],
                request_object(forged),
                false,
                "cannot name anyone else",
            ),
            ("honest requester", "AccessRequest", "alice", vec!["dev"], request_object(honest), true, ""),
            (
                "forged reviewer",
                "AccessReview",
                "carol",
                vec!["sre"],
                review_object(forged_review),
                false,
                "cannot name anyone else",
            ),
            (
                "forged groups",
                "AccessReview",
                "carol",
                vec!["sre"],
                review_object(forged_groups),
                false,
                "reviewerGroups",
            ),
            ("no user name", "AccessRequest", "", vec![], request_object(base_spec()), false, "without an identity"),
            (
                "review of an earlier request",
                "AccessReview",
                "carol",
                vec!["sre"],
                review_object(stale_uid),
                false,
                "accessRequestUID is set from the AccessRequest",
            ),
        ];
        for (case, kind, user, groups, object, allowed, fragment) in cases {
            let response = mutate(&admission(kind, "CREATE", user, &groups, object, None), Some("uid-1"));
            assert_eq!(response.allowed, allowed, "{case}: {}", response.result.message);
            assert!(response.result.message.contains(fragment), "{case}: {}", response.result.message);
        }
        let stamped =
            mutate(&admission("AccessReview", "CREATE", "carol", &["sre"], review_object(review), None), Some("uid-1"));
        assert_eq!(
            patch_of(&stamped),
            serde_json::json!([
                {"op": "add", "path": "/spec/reviewer", "value": "carol"},
                {"op": "add", "path": "/spec/reviewerGroups", "value": ["sre"]},
                {"op": "add", "path": "/spec/accessRequestUID", "value": "uid-1"}
            ])
        );
    }

    fn facts(phase: Option<AccessPhase>) -> Facts {
        let policy = AccessPolicy::new(
            "oncall",
            AccessPolicySpec {
                namespace_selector: Default::default(),
                roles: vec![RoleRef { kind: RoleKind::ClusterRole, name: "edit".into() }],
                max_duration: "1h".parse().unwrap(),
                approvers: Approvers { users: vec![], groups: vec!["sre".into()] },
                required_approvals: 1,
                window_start: WindowStart::Approval,
                pending_timeout: "1h".parse().unwrap(),
                window_end: Default::default(),
            },
        );
        let mut spec = base_spec();
        spec["requester"] = "alice".into();
        let mut reviewed: AccessRequest = serde_json::from_value(request_object(spec)).unwrap();
        reviewed.metadata.uid = Some("uid-1".into());
        reviewed.status = phase.map(|phase| AccessRequestStatus { phase: Some(phase), ..Default::default() });
        Facts {
            policies: vec![policy],
            namespace_labels: Some(BTreeMap::new()),
            reviewed_request: Some(reviewed),
            break_glass: BreakGlass::default(),
        }
    }

    #[test]
    fn validation_table() {
        let with = |changes: Value| {
            let mut spec = base_spec();
            spec["requester"] = "alice".into();
            for (k, v) in changes.as_object().unwrap() {
                spec[k] = v.clone();
            }
            request_object(spec)
        };
        let review_of = |uid: &str, reviewer: &str, groups: &[&str]| {
            review_object(serde_json::json!({"accessRequest": "r", "decision": "Approve", "reason": "checked INC-1 ok",
                "reviewer": reviewer, "reviewerGroups": groups, "accessRequestUID": uid}))
        };
        let review = |reviewer: &str, groups: &[&str]| review_of("uid-1", reviewer, groups);
        let no_request = Facts { reviewed_request: None, ..facts(None) };
        let no_policy = Facts { policies: vec![], ..facts(None) };
        // (case, kind, user, groups, object, facts, allowed, message fragment)
        let cases = [
            ("fine", "AccessRequest", "alice", vec!["dev"], with(serde_json::json!({})), facts(None), true, ""),
            (
                "over the maximum",
                "AccessRequest",
                "alice",
                vec!["dev"],
                with(serde_json::json!({"duration": "2h"})),
                facts(None),
                false,
                "exceeds the maximum of 1h that AccessPolicy oncall allows",
            ),
            (
                "role not allowed",
                "AccessRequest",
                "alice",
                vec!["dev"],
                with(serde_json::json!({"role": {"kind": "ClusterRole", "name": "admin"}})),
                facts(None),
                false,
                "ClusterRole admin is not in the allow-list",
            ),
            (
                "trivial reason",
                "AccessRequest",
                "alice",
                vec!["dev"],
                with(serde_json::json!({"reason": "xxxxxxxxxxxx"})),
                facts(None),
                false,
                "reason is too short or trivial",
            ),
            (
                "no policy",
                "AccessRequest",
                "alice",
                vec!["dev"],
                with(serde_json::json!({})),
                no_policy,
                false,
                "no AccessPolicy covers namespace shop",
            ),
            (
                "someone else's name",
                "AccessRequest",
                "bob",
                vec!["dev"],
                with(serde_json::json!({})),
                facts(None),
                false,
                "must be the authenticated user bob",
            ),
            ("review ok", "AccessReview", "carol", vec!["sre"], review("carol", &["sre"]), facts(None), true, ""),
            (
                "review of unknown request",
                "AccessReview",
                "carol",
                vec!["sre"],
                review("carol", &["sre"]),
                no_request,
                false,
                "AccessRequest r does not exist in namespace shop",
            ),
            (
                "review of finished request",
                "AccessReview",
                "carol",
                vec!["sre"],
                review("carol", &["sre"]),
                facts(Some(AccessPhase::Expired)),
                false,
                "already Expired",
            ),
            (
                "review stamped for an earlier request of the same name",
                "AccessReview",
                "carol",
                vec!["sre"],
                review_of("uid-0", "carol", &["sre"]),
                facts(None),
                false,
                "must be the UID of AccessRequest r as it exists now (uid-1)",
            ),
            (
                "review without the request's UID",
                "AccessReview",
                "carol",
                vec!["sre"],
                review_object(serde_json::json!({"accessRequest": "r", "decision": "Approve",
                    "reason": "checked INC-1 ok", "reviewer": "carol", "reviewerGroups": ["sre"]})),
                facts(None),
                false,
                "accessRequestUID",
            ),
            (
                "review in another's name",
                "AccessReview",
                "carol",
                vec!["sre"],
                review("dave", &["sre"]),
                facts(None),
                false,
                "must be the authenticated user carol",
            ),
        ];
        for (case, kind, user, groups, object, facts, allowed, fragment) in cases {
            let response = validate(&admission(kind, "CREATE", user, &groups, object, None), &facts);
            assert_eq!(response.allowed, allowed, "{case}: {}", response.result.message);
            assert!(response.result.message.contains(fragment), "{case}: {}", response.result.message);
        }
    }

    #[test]
    fn only_the_requester_an_approver_or_a_break_glass_admin_may_revoke() {
        let mut old_spec = base_spec();
        old_spec["requester"] = "alice".into();
        let mut new_spec = old_spec.clone();
        new_spec["revoked"] = true.into();
        let on_call = BreakGlass { users: vec!["erin".into()], groups: vec!["platform".into()] };
        // (user, groups, break-glass set, on whose authority; None: refused)
        let cases = [
            ("alice", vec!["dev"], BreakGlass::default(), Some(Revoker::Requester)),
            ("carol", vec!["sre"], BreakGlass::default(), Some(Revoker::Approver)),
            ("bob", vec!["dev"], BreakGlass::default(), None),
            (
                "admin",
                vec!["system:masters", "system:authenticated"],
                BreakGlass::default(),
                Some(Revoker::BreakGlass("group system:masters".into())),
            ),
            ("admin", vec!["system:masters"], on_call.clone(), None),
            ("erin", vec![], on_call.clone(), Some(Revoker::BreakGlass("user erin".into()))),
            ("frank", vec!["platform"], on_call.clone(), Some(Revoker::BreakGlass("group platform".into()))),
            ("bob", vec!["dev"], on_call, None),
        ];
        for (user, groups, break_glass, revoker) in cases {
            let request = admission(
                "AccessRequest",
                "UPDATE",
                user,
                &groups,
                request_object(new_spec.clone()),
                Some(request_object(old_spec.clone())),
            );
            let facts = Facts { break_glass, ..facts(None) };
            let response = validate(&request, &facts);
            assert_eq!(response.allowed, revoker.is_some(), "{user} {groups:?}: {}", response.result.message);
            assert_eq!(revocation(&request, &facts), revoker, "{user} {groups:?}");
        }
    }
}
