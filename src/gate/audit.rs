//! The API server's audit events, the pure part: an `audit.k8s.io/v1`
//! EventList in, the successful writes it records out, and which access
//! session each belongs to.
//!
//! Only what attribution needs is kept: who, which verb, which object, when,
//! and, for patches, the paths the patch touched. Request bodies are read
//! for those paths and dropped; Secret bodies are never read.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;
use serde_json::Value;

use super::commands::{Command, Kind, LOG_BOUNDS, bound};
use crate::api::ActivityEntry;

/// At most this many field paths per write.
pub const MAX_FIELDS: usize = 20;
/// At most this many bytes per field path. A patch may carry keys no schema
/// knows (the API server drops them with a warning and the write succeeds),
/// of any length: each path is kept to its longest parent that fits, so a
/// few such writes cannot fill an AccessRequest's status past what etcd
/// stores and make the activity of later writes fail to be logged.
pub const MAX_FIELD_BYTES: usize = 256;
/// At most this many entries in each bounded list of a request's status.
pub const MAX_ENTRIES: usize = 100;
/// The largest EventList accepted (the API server sends at most 400 events a batch).
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// Resources whose request bodies are never looked at.
const SECRET_RESOURCES: &[&str] = &["secrets", "serviceaccounts/token", "tokenreviews"];

/// One successful write, as an audit event records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditWrite {
    pub audit_id: String,
    /// The user the write was made as (the impersonated one, if any).
    pub user: String,
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource, without the subresource.
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    /// When the API server received it.
    pub at: Timestamp,
    /// JSON pointers a patch touched (empty for other verbs).
    pub fields: Vec<String>,
}

impl AuditWrite {
    /// The resource as RBAC rules name it: `deployments` or `deployments/scale`.
    pub fn rbac_resource(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// As an entry of an AccessRequest's activity log.
    pub fn entry(&self) -> ActivityEntry {
        let group = if self.group.is_empty() { String::new() } else { format!(".{}", self.group) };
        let sub = self.subresource.as_ref().map(|s| format!("/{s}")).unwrap_or_default();
        ActivityEntry {
            // MicroTime keeps microseconds: truncating here keeps an entry
            // equal to itself after a round trip (for de-duplication).
            time: MicroTime(Timestamp::from_microsecond(self.at.as_microsecond()).unwrap_or(self.at)),
            user: self.user.clone(),
            verb: self.verb.clone(),
            resource: format!("{}{group}{sub}", self.resource),
            namespace: self.namespace.clone(),
            name: Some(self.name.clone()),
            fields: self.fields.clone(),
            container: None,
            command: Vec::new(),
            command_truncated: false,
            sources: Vec::new(),
        }
    }
}

/// Why an EventList was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("not an audit.k8s.io/v1 EventList: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("expected kind EventList of audit.k8s.io/v1, got {kind} of {api_version}")]
    WrongKind { kind: String, api_version: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EventList {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    items: Vec<Event>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Event {
    #[serde(default, rename = "auditID")]
    audit_id: String,
    #[serde(default)]
    stage: String,
    #[serde(default, rename = "requestURI")]
    request_uri: String,
    #[serde(default)]
    verb: String,
    #[serde(default)]
    user: UserInfo,
    #[serde(default)]
    impersonated_user: Option<UserInfo>,
    #[serde(default)]
    object_ref: Option<ObjectReference>,
    #[serde(default)]
    response_status: Option<ResponseStatus>,
    #[serde(default)]
    request_object: Option<Value>,
    /// Read as text and parsed per event: a time outside what the operator
    /// can represent (Go's range is wider) drops that event, not the batch.
    #[serde(default)]
    request_received_timestamp: Option<String>,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectReference {
    #[serde(default)]
    resource: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    api_group: String,
    #[serde(default)]
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct ResponseStatus {
    #[serde(default)]
    code: i32,
}

const WRITE_VERBS: &[&str] = &["create", "update", "patch", "delete"];

/// The successful writes in an EventList, oldest first. Reads, failed or
/// dry-run requests, status updates and events of other stages are left out.
pub fn parse(body: &[u8]) -> Result<Vec<AuditWrite>, Error> {
    parse_with_commands(body).map(|(writes, _)| writes)
}

/// [`parse`], and the commands in Pods the list records (see
/// [`super::commands`]).
pub fn parse_with_commands(body: &[u8]) -> Result<(Vec<AuditWrite>, Vec<Command>), Error> {
    let list: EventList = serde_json::from_slice(body)?;
    if list.kind != "EventList" || list.api_version != "audit.k8s.io/v1" {
        return Err(Error::WrongKind { kind: list.kind, api_version: list.api_version });
    }
    let mut commands = Vec::new();
    let mut writes = Vec::new();
    for event in list.items {
        match command_of(&event) {
            Some(command) => commands.push(command),
            None => writes.extend(write_of(event)),
        }
    }
    writes.sort_by_key(|w| w.at);
    Ok((writes, commands))
}

/// A command in a Pod, from any stage of its event (each event ID is
/// noted once), unless the API server refused it before admission (401,
/// 403: nothing ran). The options are read from the request URI only.
fn command_of(event: &Event) -> Option<Command> {
    let object = event.object_ref.as_ref()?;
    if object.resource != "pods" || !object.api_group.is_empty() {
        return None;
    }
    let kind = Kind::of(object.subresource.as_deref()?)?;
    if event.response_status.as_ref().is_some_and(|s| s.code == 401 || s.code == 403) {
        return None;
    }
    let (container, argv) = Command::uri_options(&event.request_uri);
    let user = event.impersonated_user.as_ref().unwrap_or(&event.user);
    Some(Command {
        user: user.username.clone(),
        groups: user.groups.clone(),
        kind,
        namespace: object.namespace.clone().filter(|ns| !ns.is_empty())?,
        pod: object.name.clone()?,
        container,
        command: bound(&argv, LOG_BOUNDS),
        at: event.request_received_timestamp.as_deref()?.parse().ok()?,
        source: super::writes::Source::Audit,
        audit_id: Some(event.audit_id.clone()).filter(|id| !id.is_empty()),
    })
}

/// Whether a request body says it is a Secret (whatever resource the
/// event names).
fn is_secret_body(body: &serde_json::Value) -> bool {
    body.get("kind").and_then(serde_json::Value::as_str) == Some("Secret")
}

fn write_of(event: Event) -> Option<AuditWrite> {
    if event.stage != "ResponseComplete" || !WRITE_VERBS.contains(&event.verb.as_str()) {
        return None;
    }
    if !(200..300).contains(&event.response_status?.code) || is_dry_run(&event.request_uri) {
        return None;
    }
    let object = event.object_ref?;
    // Status updates are controllers reporting; the access workflow's own
    // objects are not state anyone declares.
    if object.subresource.as_deref() == Some("status") || object.api_group == crate::api::GROUP {
        return None;
    }
    let name = object
        .name
        .or_else(|| event.request_object.as_ref()?.pointer("/metadata/name")?.as_str().map(str::to_owned))?;
    let rbac_resource = match &object.subresource {
        Some(sub) => format!("{}/{sub}", object.resource),
        None => object.resource.clone(),
    };
    // A body is read only when the event says what it belongs to and that
    // is no Secret: an event without a resource (the API server never
    // sends one for a write) might be one.
    let readable = !object.resource.is_empty() && !SECRET_RESOURCES.contains(&rbac_resource.as_str());
    let fields = match (&event.request_object, event.verb.as_str()) {
        (Some(body), "patch") if readable && !is_secret_body(body) => patched_paths(body),
        _ => Vec::new(),
    };
    let user = event.impersonated_user.map_or(event.user.username, |u| u.username);
    Some(AuditWrite {
        audit_id: event.audit_id,
        user,
        verb: event.verb,
        group: object.api_group,
        resource: object.resource,
        subresource: object.subresource,
        namespace: object.namespace.filter(|ns| !ns.is_empty()),
        name,
        at: event.request_received_timestamp?.parse().ok()?,
        fields,
    })
}

fn is_dry_run(uri: &str) -> bool {
    uri.split_once('?').is_some_and(|(_, query)| query.split('&').any(|pair| pair.starts_with("dryRun=")))
}

/// The paths a patch body sets: the leaves of a merge, strategic-merge or
/// apply patch (lists as a whole), or the `path` of each JSON-patch op.
fn patched_paths(body: &Value) -> Vec<String> {
    let mut paths = Vec::new();
    match body {
        Value::Array(ops) => paths.extend(ops.iter().filter_map(|op| op.get("path")?.as_str().map(str::to_owned))),
        Value::Object(_) => leaves(body, &mut String::new(), &mut paths),
        _ => {}
    }
    paths.retain(|path| !is_bookkeeping(path));
    paths.truncate(MAX_FIELDS);
    for path in &mut paths {
        bound_path(path);
    }
    paths.dedup();
    paths
}

/// Cuts `path` back to its longest parent of at most [`MAX_FIELD_BYTES`]
/// (the root, `""`, when even its first token is longer).
fn bound_path(path: &mut String) {
    if path.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut end = MAX_FIELD_BYTES;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    // A `/` at `end` itself ends a whole token; otherwise the token there is cut.
    let keep = if path.as_bytes().get(end) == Some(&b'/') { end } else { path[..end].rfind('/').unwrap_or(0) };
    path.truncate(keep);
}

fn leaves(value: &Value, path: &mut String, out: &mut Vec<String>) {
    if out.len() >= MAX_FIELDS {
        return;
    }
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                // Strategic-merge directives ($patch, $setElementOrder/...) are not fields.
                if key.starts_with('$') {
                    continue;
                }
                let len = path.len();
                path.push('/');
                path.push_str(&key.replace('~', "~0").replace('/', "~1"));
                leaves(child, path, out);
                path.truncate(len);
            }
        }
        _ => out.push(path.clone()),
    }
}

fn is_bookkeeping(path: &str) -> bool {
    ["/apiVersion", "/kind", "/metadata/name", "/metadata/namespace", "/metadata/resourceVersion"].contains(&path)
        || path.starts_with("/metadata/managedFields")
}

/// Users whose writes are the cluster's own (controllers, the API server,
/// nodes): never drift by a person, so never anyone's session activity.
/// ServiceAccounts outside kube-system are workloads and count.
pub fn is_system_user(user: &str) -> bool {
    match user.strip_prefix("system:serviceaccount:") {
        Some(account) => account.starts_with("kube-system:"),
        None => user.starts_with("system:"),
    }
}

/// An access window as the audit receiver sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window<'a> {
    pub namespace: &'a str,
    pub request: &'a str,
    pub requester: &'a str,
    pub opens: Timestamp,
    pub closes: Timestamp,
}

/// New log entries for one AccessRequest.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Attributed {
    /// Writes by the requester inside the window.
    pub activity: Vec<ActivityEntry>,
    /// Writes by anyone else in the namespace while the window was open.
    pub scope_writes: Vec<ActivityEntry>,
}

/// Sorts writes into the windows that were open when they were made, keyed
/// by (namespace, request). Writes by `operator` (ourselves) and by the
/// system are nobody's session.
pub fn attribute(
    writes: &[AuditWrite],
    windows: &[Window<'_>],
    operator: &str,
) -> BTreeMap<(String, String), Attributed> {
    let mut out: BTreeMap<(String, String), Attributed> = BTreeMap::new();
    for write in writes {
        if write.user == operator || is_system_user(&write.user) {
            continue;
        }
        let Some(namespace) = write.namespace.as_deref() else { continue };
        for window in windows.iter().filter(|w| w.namespace == namespace && w.opens <= write.at && write.at < w.closes)
        {
            let entry = out.entry((window.namespace.to_owned(), window.request.to_owned())).or_default();
            let list = if write.user == window.requester { &mut entry.activity } else { &mut entry.scope_writes };
            list.push(write.entry());
        }
    }
    out
}

/// `old` with `new` appended: no entry twice (the API server retries
/// batches), the newest [`MAX_ENTRIES`] writes kept, and apart from them
/// the newest commands in Pods ([`super::commands::merge`]). Returns the
/// list and how many entries were new.
pub fn append(old: &[ActivityEntry], new: &[ActivityEntry]) -> (Vec<ActivityEntry>, usize) {
    let (old_commands, mut merged): (Vec<ActivityEntry>, Vec<ActivityEntry>) =
        old.iter().cloned().partition(ActivityEntry::is_command);
    let (new_commands, new_writes): (Vec<&ActivityEntry>, Vec<&ActivityEntry>) =
        new.iter().partition(|e| e.is_command());
    let mut added = 0;
    for entry in new_writes {
        if !merged.contains(entry) {
            merged.push(entry.clone());
            added += 1;
        }
    }
    merged.sort_by_key(|e| e.time.0);
    let excess = merged.len().saturating_sub(MAX_ENTRIES);
    merged.drain(..excess);
    let new_commands: Vec<ActivityEntry> = new_commands.into_iter().cloned().collect();
    let (commands, commands_added) = super::commands::merge(&old_commands, &new_commands);
    merged.extend(commands);
    merged.sort_by_key(|e| e.time.0);
    (merged, added + commands_added)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(verb: &str, user: &str, object: Value, extra: Value) -> Value {
        let mut event = json!({
            "level": "Request", "auditID": format!("id-{verb}-{user}"), "stage": "ResponseComplete",
            "requestURI": "/apis/apps/v1/namespaces/shop/deployments/web", "verb": verb,
            "user": {"username": user, "groups": ["dev"]}, "objectRef": object,
            "responseStatus": {"metadata": {}, "code": 200},
            "requestReceivedTimestamp": "2026-11-21T10:00:00.123456Z", "stageTimestamp": "2026-11-21T10:00:00.2Z",
        });
        if let (Value::Object(event), Value::Object(extra)) = (&mut event, extra) {
            event.extend(extra);
        }
        event
    }

    fn deployment() -> Value {
        json!({"resource": "deployments", "namespace": "shop", "name": "web", "apiGroup": "apps", "apiVersion": "v1"})
    }

    fn list(items: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items})).unwrap()
    }

    #[test]
    fn keeps_successful_writes_only() {
        let scale = json!({"resource": "deployments", "namespace": "shop", "name": "web", "apiGroup": "apps", "subresource": "scale"});
        let status = json!({"resource": "deployments", "namespace": "shop", "name": "web", "apiGroup": "apps", "subresource": "status"});
        let body = list(vec![
            event("patch", "alice", deployment(), json!({"requestObject": {"spec": {"replicas": 5}}})),
            event("get", "alice", deployment(), json!({})),
            event("patch", "bob", deployment(), json!({"responseStatus": {"code": 403}})),
            event("patch", "carol", deployment(), json!({"stage": "ResponseStarted"})),
            event("update", "kcm", status, json!({})),
            event("patch", "dave", scale, json!({"requestObject": {"spec": {"replicas": 2}}})),
            event(
                "patch",
                "erin",
                deployment(),
                json!({"requestURI": "/apis/apps/v1/namespaces/shop/deployments/web?dryRun=All"}),
            ),
        ]);
        let writes = parse(&body).unwrap();
        let users: Vec<&str> = writes.iter().map(|w| w.user.as_str()).collect();
        assert_eq!(users, ["alice", "dave"]);
        assert_eq!(writes[0].fields, ["/spec/replicas"]);
        assert_eq!(writes[1].rbac_resource(), "deployments/scale");
        assert_eq!(writes[1].entry().resource, "deployments.apps/scale");
    }

    #[test]
    fn a_body_of_unknown_or_secret_kind_is_not_read() {
        let unknown = json!({"namespace": "shop", "name": "db", "apiVersion": "v1"});
        let configmap = json!({"resource": "configmaps", "namespace": "shop", "name": "db", "apiVersion": "v1"});
        let body = json!({"requestObject": {"data": {"password": "aHVudGVyMg=="}}});
        let secret_body = json!({"requestObject": {"kind": "Secret", "data": {"password": "aHVudGVyMg=="}}});
        let writes =
            parse(&list(vec![event("patch", "alice", unknown, body), event("patch", "alice", configmap, secret_body)]))
                .unwrap();
        assert!(writes.iter().all(|w| w.fields.is_empty()), "{writes:?}");
    }

    #[test]
    fn patch_paths_never_come_from_secrets_and_skip_directives() {
        let secret = json!({"resource": "secrets", "namespace": "shop", "name": "db", "apiVersion": "v1"});
        let body = list(vec![
            event("patch", "alice", secret, json!({"requestObject": {"data": {"password": "aHVudGVyMg=="}}})),
            event(
                "patch",
                "alice",
                deployment(),
                json!({"requestObject": {"$setElementOrder/containers": [{"name": "a"}], "metadata": {"labels": {"a/b": "x"}, "resourceVersion": "7"}, "spec": {"template": {"spec": {"containers": [{"name": "a", "securityContext": {"privileged": true}}]}}}}}),
            ),
            event(
                "patch",
                "alice",
                deployment(),
                json!({"requestObject": [{"op": "replace", "path": "/spec/replicas", "value": 3}]}),
            ),
        ]);
        let writes = parse(&body).unwrap();
        assert!(writes[0].fields.is_empty());
        assert_eq!(writes[1].fields, ["/metadata/labels/a~1b", "/spec/template/spec/containers"]);
        assert_eq!(writes[2].fields, ["/spec/replicas"]);
    }

    #[test]
    fn overlong_patch_paths_are_cut_back_to_a_parent() {
        let long = "k".repeat(100_000);
        let body = list(vec![
            event("patch", "alice", deployment(), json!({"requestObject": {"spec": {long.clone(): 1}}})),
            event("patch", "alice", deployment(), json!({"requestObject": {long.clone(): {"a": 1, "b": 2}}})),
            event(
                "patch",
                "alice",
                deployment(),
                json!({"requestObject": [{"op": "add", "path": format!("/metadata/labels/{long}")}]}),
            ),
        ]);
        let writes = parse(&body).unwrap();
        assert_eq!(writes[0].fields, ["/spec"]);
        // Both leaves cut back to the root: kept once.
        assert_eq!(writes[1].fields, [""]);
        assert_eq!(writes[2].fields, ["/metadata/labels"]);
        let mut exact = format!("/{}", "a".repeat(MAX_FIELD_BYTES - 1));
        bound_path(&mut exact);
        assert_eq!(exact.len(), MAX_FIELD_BYTES);
        let mut unicode = format!("/a/{}", "é".repeat(MAX_FIELD_BYTES));
        bound_path(&mut unicode);
        assert_eq!(unicode, "/a");
    }

    #[test]
    fn a_time_out_of_range_drops_its_event_not_the_batch() {
        let late =
            event("patch", "bob", deployment(), json!({"requestReceivedTimestamp": "9999-12-31T23:59:59.999999Z"}));
        let body = list(vec![late, event("patch", "alice", deployment(), json!({}))]);
        let users: Vec<String> = parse(&body).unwrap().into_iter().map(|w| w.user).collect();
        assert_eq!(users, ["alice"]);
    }

    #[test]
    fn commands_in_pods_are_read_from_the_uri_and_never_counted_as_writes() {
        let exec = json!({"resource": "pods", "namespace": "shop", "name": "web-0", "apiVersion": "v1", "subresource": "exec"});
        let uri = "/api/v1/namespaces/shop/pods/web-0/exec?command=sh&command=-c&command=id&container=app&stdin=true";
        let body = list(vec![
            event("create", "alice", exec.clone(), json!({"requestURI": uri, "responseStatus": {"code": 101}})),
            event(
                "get",
                "bob",
                exec.clone(),
                json!({"requestURI": uri, "auditID": "b", "responseStatus": {"code": 403}}),
            ),
            event(
                "get",
                "admin",
                exec,
                json!({"requestURI": uri, "auditID": "c", "impersonatedUser": {"username": "carol", "groups": ["dev"]}}),
            ),
            event("patch", "alice", deployment(), json!({})),
        ]);
        let (writes, commands) = parse_with_commands(&body).unwrap();
        assert_eq!(writes.len(), 1);
        let who: Vec<(&str, &[String])> = commands.iter().map(|c| (c.user.as_str(), &c.groups[..])).collect();
        assert_eq!(who, [("alice", &["dev".to_owned()][..]), ("carol", &["dev".to_owned()][..])]);
        assert_eq!(commands[0].command.argv, ["sh", "-c", "id"]);
        assert_eq!((commands[0].container.as_deref(), commands[0].pod.as_str()), (Some("app"), "web-0"));
        assert_eq!(commands[0].audit_id.as_deref(), Some("id-create-alice"));
        assert_eq!(parse(&body).unwrap().len(), 1);
    }

    #[test]
    fn impersonation_names_the_impersonated_user() {
        let body =
            list(vec![event("delete", "admin", deployment(), json!({"impersonatedUser": {"username": "alice"}}))]);
        assert_eq!(parse(&body).unwrap()[0].user, "alice");
    }

    #[test]
    fn refuses_what_is_not_an_event_list() {
        assert!(matches!(parse(b"{not json"), Err(Error::Malformed(_))));
        assert!(matches!(
            parse(br#"{"kind": "Policy", "apiVersion": "audit.k8s.io/v1"}"#),
            Err(Error::WrongKind { .. })
        ));
        assert!(parse(&list(vec![json!({"weird": true})])).unwrap().is_empty());
    }

    #[test]
    fn system_users_are_not_people() {
        for (user, system) in [
            ("alice", false),
            ("system:kube-controller-manager", true),
            ("system:node:n1", true),
            ("system:serviceaccount:kube-system:horizontal-pod-autoscaler", true),
            ("system:serviceaccount:ci:deployer", false),
        ] {
            assert_eq!(is_system_user(user), system, "{user}");
        }
    }

    #[test]
    fn writes_go_to_the_windows_open_at_the_time() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let write = |user: &str, time: &str| AuditWrite {
            audit_id: format!("{user}{time}"),
            user: user.into(),
            verb: "patch".into(),
            group: "apps".into(),
            resource: "deployments".into(),
            subresource: None,
            namespace: Some("shop".into()),
            name: "web".into(),
            at: at(time),
            fields: vec![],
        };
        let windows = [
            Window {
                namespace: "shop",
                request: "alice-fix",
                requester: "alice",
                opens: at("2026-01-01T10:00:00Z"),
                closes: at("2026-01-01T11:00:00Z"),
            },
            Window {
                namespace: "other",
                request: "x",
                requester: "alice",
                opens: at("2026-01-01T10:00:00Z"),
                closes: at("2026-01-01T11:00:00Z"),
            },
        ];
        let writes = [
            write("alice", "2026-01-01T10:30:00Z"),
            write("bob", "2026-01-01T10:31:00Z"),
            write("alice", "2026-01-01T11:30:00Z"),
            write("driftwarden-sa", "2026-01-01T10:32:00Z"),
            write("system:kube-controller-manager", "2026-01-01T10:33:00Z"),
        ];
        let attributed = attribute(&writes, &windows, "driftwarden-sa");
        let alice = &attributed[&("shop".to_owned(), "alice-fix".to_owned())];
        assert_eq!(alice.activity.len(), 1);
        assert_eq!(alice.scope_writes.iter().map(|e| e.user.as_str()).collect::<Vec<_>>(), ["bob"]);
        assert_eq!(attributed.len(), 1);

        // A retried batch adds nothing; the list stays bounded.
        let (once, added) = append(&[], &alice.activity);
        let (twice, again) = append(&once, &alice.activity);
        assert_eq!((once.len(), added, twice.len(), again), (1, 1, 1, 0));
        let many: Vec<ActivityEntry> =
            (0..150).map(|i| write("alice", &format!("2026-01-01T10:{:02}:{:02}Z", i / 60, i % 60)).entry()).collect();
        let (bounded, added) = append(&once, &many);
        assert_eq!((bounded.len(), added), (MAX_ENTRIES, 150));
        assert!(bounded.windows(2).all(|pair| pair[0].time.0 <= pair[1].time.0));
    }
}
