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

use crate::gate::commands::{Command, Kind, LOG_BOUNDS, bound};
use crate::gate::writes::{Expect, Record, Source};

/// Path of the write-log webhook.
pub const WRITES_PATH: &str = "/writes";
/// Path of the session-command webhook (CONNECT on `pods/exec` and the like).
pub const SESSIONS_PATH: &str = "/sessions";

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

/// What one admission call says about a command in a Pod (a CONNECT on
/// `pods/exec`, `pods/attach` or `pods/portforward`), if it is one: the
/// options, bounded; nothing else of the call is read.
pub fn command_of(request: &AdmissionRequest<DynamicObject>, now: Timestamp) -> Option<Command> {
    if request.operation != Operation::Connect
        || !request.resource.group.is_empty()
        || request.resource.resource != "pods"
    {
        return None;
    }
    let kind = Kind::of(request.sub_resource.as_deref()?)?;
    let (container, argv) = request.object.as_ref().map(|o| Command::options(&o.data)).unwrap_or_default();
    Some(Command {
        user: request.user_info.username.clone().unwrap_or_default(),
        groups: request.user_info.groups.clone().unwrap_or_default(),
        kind,
        namespace: request.namespace.clone()?,
        pod: request.name.clone(),
        container,
        command: bound(&argv, LOG_BOUNDS),
        at: now,
        source: Source::Admission,
        audit_id: None,
    })
}

/// The object's fingerprints in each form a watch keeps it: whole (declared
/// kinds) and metadata only (kinds watched for undeclared objects).
fn fingerprints(object: &DynamicObject) -> Vec<u64> {
    use crate::drift::kept;
    let mut whole = object.clone();
    kept::for_watch_cache(&mut whole);
    let mut meta = PartialObjectMeta::<DynamicObject> {
        types: None,
        metadata: object.metadata.clone(),
        _phantom: Default::default(),
    };
    kept::metadata_only(&mut meta);
    vec![kept::whole_fingerprint(&whole), kept::meta_fingerprint(&meta.metadata)]
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

    fn connect(sub: &str, object: serde_json::Value) -> AdmissionRequest<DynamicObject> {
        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "r2", "kind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "resource": {"group": "", "version": "v1", "resource": "pods"}, "subResource": sub,
            "requestKind": {"group": "", "version": "v1", "kind": "PodExecOptions"},
            "name": "web-0", "namespace": "shop", "operation": "CONNECT",
            "userInfo": {"username": "alice", "groups": ["dev", "system:authenticated"]},
            "object": object, "dryRun": false,
        }});
        let review: kube::core::admission::AdmissionReview<DynamicObject> = serde_json::from_value(review).unwrap();
        review.try_into().unwrap()
    }

    #[test]
    fn a_connect_is_a_command_with_its_options_bounded() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let exec = json!({"kind": "PodExecOptions", "apiVersion": "v1", "stdin": true, "stdout": true,
                          "container": "app", "command": ["sh", "-c", "id"]});
        let command = command_of(&connect("exec", exec), now).unwrap();
        assert_eq!(
            (command.user.as_str(), command.kind, command.pod.as_str(), command.container.as_deref()),
            ("alice", Kind::Exec, "web-0", Some("app"))
        );
        assert_eq!(command.command.argv, ["sh", "-c", "id"]);
        assert_eq!((command.groups.len(), command.source), (2, Source::Admission));
        let forward =
            command_of(&connect("portforward", json!({"kind": "PodPortForwardOptions", "ports": [5432]})), now);
        assert_eq!(forward.unwrap().command.argv, ["5432"]);
        let attach = command_of(&connect("attach", json!({"kind": "PodAttachOptions", "container": "app"})), now);
        assert!(attach.unwrap().command.argv.is_empty());
        let long = json!({"command": vec!["x".repeat(4096); 500]});
        let bounded = command_of(&connect("exec", long), now).unwrap().command;
        assert!(bounded.truncated && bounded.argv.iter().map(String::len).sum::<usize>() <= LOG_BOUNDS.total_bytes);
        // Not a session: a proxy, or a write.
        assert!(command_of(&connect("proxy", json!({})), now).is_none());
        assert!(command_of(&review("UPDATE", false, None), now).is_none());
        assert!(record_of(&connect("exec", json!({"command": ["id"]})), now).is_none());
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
