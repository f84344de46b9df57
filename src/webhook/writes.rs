//! The write-log webhook (`/writes`): the API server calls it for every
//! create, update and delete (and the subresource writes that change what a
//! DesiredState declares, such as `scale`) of the managed kinds in the
//! managed namespaces. It always allows; it only notes who asked for which
//! write, as a provisional record the watch must confirm
//! ([`crate::gate::writes`]). Dry-run requests are never noted.
//!
//! Anyone who can reach the endpoint can post to it: a record therefore
//! proves nothing until a watch delivers the write it describes, and a
//! forged record beside a real one only adds a writer (see
//! docs/THREAT_MODEL.md).

use k8s_openapi::jiff::Timestamp;
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::core::admission::{AdmissionRequest, Operation};
use serde_json::Value;

use crate::gate::writes::{Expect, Record};

/// Path of the write-log webhook.
pub const WRITES_PATH: &str = "/writes";

/// What one admission call says about a write, if it is one to note: not a
/// dry run, not a connect, in a namespace, with an object uid to confirm by.
pub fn record_of(request: &AdmissionRequest<DynamicObject>, now: Timestamp) -> Option<(Record, Expect)> {
    if request.dry_run {
        return None;
    }
    let namespace = request.namespace.clone()?;
    let verb = match request.operation {
        Operation::Create => "create",
        // A patch reaches admission as an UPDATE too.
        Operation::Update => "update",
        Operation::Delete => "delete",
        Operation::Connect => return None,
    };
    let user = request.user_info.username.clone().unwrap_or_default();
    let subresource = request.sub_resource.clone().filter(|s| !s.is_empty());
    let expect = match (&request.operation, subresource.as_deref()) {
        (Operation::Delete, _) => {
            let old = request.old_object.as_ref()?;
            Expect::Deletion { uid: old.metadata.uid.clone()? }
        }
        (_, Some("scale")) => {
            let scale = request.object.as_ref()?;
            let replicas = scale.data.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
            Expect::Replicas {
                uid: scale.metadata.uid.clone()?,
                previous: scale.metadata.resource_version.clone(),
                replicas,
            }
        }
        _ => {
            let object = request.object.as_ref()?;
            let previous = match request.operation {
                Operation::Create => None,
                _ => request.old_object.as_ref().and_then(|o| o.metadata.resource_version.clone()),
            };
            Expect::Content { uid: object.metadata.uid.clone()?, previous, fingerprints: fingerprints(object) }
        }
    };
    let record = Record {
        user,
        groups: request.user_info.groups.clone().unwrap_or_default(),
        verb: verb.to_owned(),
        group: request.resource.group.clone(),
        resource: request.resource.resource.clone(),
        subresource,
        namespace: Some(namespace),
        name: request.name.clone(),
        at: now,
    };
    Some((record, expect))
}

/// The object's fingerprints in each form a watch keeps it: whole (declared
/// kinds) and metadata only (kinds watched for undeclared objects).
fn fingerprints(object: &DynamicObject) -> Vec<u64> {
    use crate::operator::drift::watches::Cached as _;
    let mut whole = object.clone();
    whole.for_cache();
    let mut meta = PartialObjectMeta::<DynamicObject> {
        types: None,
        metadata: object.metadata.clone(),
        _phantom: Default::default(),
    };
    meta.for_cache();
    vec![whole.fingerprint(), meta.fingerprint()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn review(operation: &str, dry_run: bool, sub: Option<&str>) -> AdmissionRequest<DynamicObject> {
        let object = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "u1", "resourceVersion": "10"},
            "spec": {"replicas": 3}});
        let mut request = json!({
            "uid": "r1", "kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
            "resource": {"group": "apps", "version": "v1", "resource": "deployments"},
            "name": "web", "namespace": "shop", "operation": operation,
            "userInfo": {"username": "alice", "groups": ["dev"]},
            "object": object, "oldObject": object, "dryRun": dry_run,
        });
        if let Some(sub) = sub {
            request["subResource"] = sub.into();
        }
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request});
        let review: kube::core::admission::AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn writes_are_noted_dry_runs_are_not() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (record, expect) = record_of(&review("UPDATE", false, None), now).unwrap();
        assert_eq!(
            (record.user.as_str(), record.verb.as_str(), record.rbac_resource().as_str()),
            ("alice", "update", "deployments")
        );
        assert!(matches!(expect, Expect::Content { previous: Some(ref v), .. } if v == "10"));
        assert!(record_of(&review("UPDATE", true, None), now).is_none());
        assert!(record_of(&review("CONNECT", false, Some("exec")), now).is_none());
        let (scale, expect) = record_of(&review("UPDATE", false, Some("scale")), now).unwrap();
        assert_eq!(scale.rbac_resource(), "deployments/scale");
        assert_eq!(expect, Expect::Replicas { uid: "u1".into(), previous: Some("10".into()), replicas: 3 });
        let (_, expect) = record_of(&review("DELETE", false, None), now).unwrap();
        assert_eq!(expect, Expect::Deletion { uid: "u1".into() });
    }
}
