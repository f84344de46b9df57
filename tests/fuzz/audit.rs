//! Targets `audit_*`: the audit EventList parser (`gate::audit::parse`) and
//! the attribution of its writes to access windows.
//!
//! Input: arbitrary bytes (also a valid batch with bytes flipped or cut),
//! arbitrary JSON (as the body and as the items of an EventList), and
//! events shaped like the API server's with every field drawn at random:
//! verbs, stages, users, impersonation, objectRefs, response codes, request
//! URIs with and without `dryRun`, patch bodies of every type, request and
//! response objects, huge keys and values, deep nesting.
//!
//! Properties: no panic; a batch only fails to parse for a reason (not
//! JSON, not an EventList, a field of the wrong type, nesting past the JSON
//! parser's limit); the writes kept are exactly the successful, non-dry-run
//! writes to objects that are not driftwarden's own or a status, nor a
//! command in a Pod (`pods/exec` and the like: read apart, from the URI
//! only, bounded, never a body's byte), each with
//! the impersonated user when there is one, oldest first; output is bounded
//! (no more writes than events, at most `MAX_FIELDS` paths of at most
//! `MAX_FIELD_BYTES` each, fields only for patches outside Secrets); no
//! byte of a Secret's (or a token's) body survives into any output, its
//! `Debug`, an activity entry or an attribution; windows get only writes in
//! their namespace and time, the operator's and the system's never.

use driftwarden::gate::audit::{
    AuditWrite, MAX_FIELD_BYTES, MAX_FIELDS, Window, attribute, parse, parse_with_commands,
};
use driftwarden::gate::commands::{LOG_BOUNDS, STATUS_BOUNDS};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::fuzz;
use crate::values::{json as any_json, pick};

/// Planted in every Secret and token body; must never come out.
const CANARY: &str = "CANARY-7f3a9c-do-not-leak";
/// The operator's own user in these cases.
const OPERATOR: &str = "system:serviceaccount:driftwarden-system:driftwarden";

const VERBS: &[&str] = &[
    "create",
    "update",
    "patch",
    "delete",
    "get",
    "list",
    "watch",
    "deletecollection",
    "PATCH",
    "Create",
    "bind",
    "escalate",
    "impersonate",
    "approve",
    "",
];
const STAGES: &[&str] = &["ResponseComplete", "RequestReceived", "ResponseStarted", "Panic", "responsecomplete", ""];
const USERS: &[&str] = &[
    "alice",
    "bob",
    "carol",
    "admin",
    OPERATOR,
    "system:kube-controller-manager",
    "system:serviceaccount:kube-system:horizontal-pod-autoscaler",
    "system:serviceaccount:ci:deployer",
    "system:node:n1",
    "system:anonymous",
    "",
    "é\u{200b}\u{0}",
];
const NAMESPACES: &[&str] = &["shop", "other", "driftwarden-system", "kube-system", ""];
/// (apiGroup, resource, subresource, whether its bodies are secret)
const RESOURCES: &[(&str, &str, Option<&str>, bool)] = &[
    ("", "secrets", None, true),
    ("", "serviceaccounts", Some("token"), true),
    ("authentication.k8s.io", "tokenreviews", None, true),
    ("", "configmaps", None, false),
    ("apps", "deployments", None, false),
    ("apps", "deployments", Some("scale"), false),
    ("apps", "deployments", Some("status"), false),
    ("", "pods", Some("exec"), false),
    ("", "pods", Some("eviction"), false),
    ("rbac.authorization.k8s.io", "rolebindings", None, false),
    ("driftwarden.io", "accessrequests", None, false),
    ("driftwarden.io", "accessrequests", Some("status"), false),
    ("driftwarden.io", "desiredstates", None, false),
    ("", "", None, false),
    ("", "namespaces", Some(""), false),
];
const URIS: &[&str] = &[
    "/api/v1/namespaces/shop/configmaps/settings",
    "/apis/apps/v1/namespaces/shop/deployments/web?fieldManager=kubectl-edit",
    "/api/v1/namespaces/shop/configmaps?dryRun=All",
    "/api/v1/namespaces/shop/configmaps/settings?fieldManager=x&dryRun=All",
    "/api/v1/namespaces/shop/configmaps/settings?dryRun=",
    "/api/v1/namespaces/shop/configmaps/settings?dryRunX=All",
    "/api/v1/namespaces/shop/configmaps/settings?fieldManager=dryRun=All",
    "/api/v1/namespaces/shop/configmaps/settings?dryrun=All",
    "/api/v1/namespaces/shop/configmaps/dryRun=All",
    "/api/v1/namespaces/shop/pods/web-0/exec?command=sh&command=-c&command=cat+%2Fetc%2Fsecret&container=app&stdin=true",
    "?",
    "",
];
const TIMES: &[&str] = &[
    "2026-11-21T10:00:00.123456Z",
    "2026-11-21T10:00:00Z",
    "2026-11-21T09:59:59.999999Z",
    "2026-11-21T11:30:00.5Z",
    "1970-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
];

fn huge_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z/~.$-]{0,12}",
        1 => (1usize..20_000).prop_map(|n| "k".repeat(n)),
        1 => (1usize..2_000).prop_map(|n| "/~é".repeat(n)),
        1 => any::<String>(),
    ]
}

/// A JSON value `depth` levels deep.
fn nested(depth: usize, leaf: Value) -> Value {
    (0..depth).fold(leaf, |inner, i| if i % 2 == 0 { json!({"d": inner}) } else { json!([inner]) })
}

/// Bodies a request can carry: merge and strategic-merge patches (with
/// directives), JSON patches, apply configurations, and anything at all.
fn body() -> impl Strategy<Value = Value> {
    let op = (pick(&["add", "replace", "remove", "test", "move", "copy", ""]), huge_text(), any_json(2))
        .prop_map(|(op, path, value)| json!({"op": op, "path": path, "value": value}));
    prop_oneof![
        3 => any_json(4),
        2 => proptest::collection::vec(op, 0..30).prop_map(Value::Array),
        1 => proptest::collection::btree_map(huge_text(), any_json(2), 0..40)
            .prop_map(|m| json!({"metadata": {"name": "web", "labels": m.clone()}, "spec": m})),
        1 => Just(json!({"$setElementOrder/containers": [{"name": "a"}], "$patch": "replace", "spec": {"$retainKeys": ["a"]}})),
        1 => (0usize..140, any_json(1)).prop_map(|(depth, leaf)| nested(depth, leaf)),
        1 => Just(Value::String("k".repeat(50_000))),
    ]
}

/// The canary everywhere a Secret or token request carries a value.
fn secret_body(shape: u8, name: &str) -> Value {
    match shape % 4 {
        0 => json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                    "data": {"password": CANARY, CANARY: "eA=="}, "stringData": {"token": CANARY}}),
        1 => json!([{"op": "add", "path": format!("/data/{CANARY}"), "value": CANARY},
                    {"op": "replace", "path": "/stringData/password", "value": CANARY}]),
        2 => json!({"data": {CANARY: CANARY}, "metadata": {"annotations": {CANARY: CANARY}}}),
        _ => json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": CANARY},
                    "status": {"user": {"username": CANARY}}}),
    }
}

/// One event and the properties it has by construction.
#[derive(Clone, Debug)]
struct Generated {
    event: Value,
    secret: bool,
}

fn event(id: usize) -> impl Strategy<Value = Generated> {
    // Mostly what the parser keeps, so that its bounds are exercised too.
    let verb = prop_oneof![3 => pick(&["create", "update", "patch", "patch", "delete"]), 1 => pick(VERBS)];
    let stage = prop_oneof![3 => Just("ResponseComplete".to_owned()), 1 => pick(STAGES)];
    let identity = (verb, stage, pick(USERS), proptest::option::weighted(0.2, pick(USERS)));
    let object = (
        proptest::sample::select(RESOURCES),
        proptest::option::of(pick(NAMESPACES)),
        proptest::option::of(prop_oneof![4 => "[a-z]{1,8}", 1 => huge_text()]),
        proptest::bool::weighted(0.9),
    );
    let outcome = (
        proptest::option::of(prop_oneof![
            4 => Just(200i64),
            1 => Just(201),
            1 => Just(299),
            1 => Just(300),
            1 => Just(199),
            1 => Just(403),
            1 => Just(409),
            1 => Just(500),
            1 => -3i64..3,
            1 => Just(i64::from(i32::MAX)),
        ]),
        pick(URIS),
        proptest::option::weighted(0.9, pick(TIMES)),
    );
    let bodies = (proptest::option::of(body()), proptest::option::of(any_json(3)), any::<u8>());
    (identity, object, outcome, bodies).prop_map(
        move |((verb, stage, user, impersonated), (resource, namespace, name, has_ref), (code, uri, time), bodies)| {
            let (group, plural, subresource, secret) = resource;
            let (request_object, response_object, shape) = bodies;
            let mut object_ref = json!({"resource": plural, "apiGroup": group, "apiVersion": "v1"});
            if let Some(sub) = subresource {
                object_ref["subresource"] = sub.into();
            }
            if let Some(namespace) = namespace {
                object_ref["namespace"] = namespace.into();
            }
            if let Some(name) = &name {
                object_ref["name"] = name.clone().into();
            }
            let mut event = json!({
                "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
                "auditID": format!("id-{id}"), "stage": stage, "requestURI": uri, "verb": verb,
                "user": {"username": user, "groups": ["dev", "system:authenticated"], "extra": {"k": [CANARY.len().to_string()]}},
                "sourceIPs": ["127.0.0.1"], "userAgent": "kubectl/v1.34",
                "annotations": {"authorization.k8s.io/decision": "allow"},
            });
            if has_ref {
                event["objectRef"] = object_ref;
            }
            if let Some(impersonated) = impersonated {
                event["impersonatedUser"] = json!({"username": impersonated, "groups": ["sre"]});
            }
            if let Some(code) = code {
                event["responseStatus"] = json!({"metadata": {}, "code": code});
            }
            if let Some(time) = time {
                event["requestReceivedTimestamp"] = time.clone().into();
                event["stageTimestamp"] = time.into();
            }
            if secret {
                event["requestObject"] = secret_body(shape, name.as_deref().unwrap_or("db"));
                event["responseObject"] = json!({"status": {"token": CANARY}, "data": {"password": CANARY}});
            } else {
                if let Some(body) = request_object {
                    event["requestObject"] = body;
                }
                if let Some(body) = response_object {
                    event["responseObject"] = body;
                }
            }
            Generated { event, secret }
        },
    )
}

fn event_list(items: Vec<Value>) -> Vec<u8> {
    serde_json::to_vec(&json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {}, "items": items}))
        .expect("JSON serializes")
}

fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// What the parser must keep of `event`, written from the audit API's
/// documentation, not from the parser: `(auditID, user)`.
fn expected(event: &Value) -> Option<(String, String)> {
    let text = |pointer: &str| event.pointer(pointer).and_then(Value::as_str);
    if text("/stage")? != "ResponseComplete" || !["create", "update", "patch", "delete"].contains(&text("/verb")?) {
        return None;
    }
    if !(200..300).contains(&event.pointer("/responseStatus/code")?.as_i64()?) {
        return None;
    }
    let uri = text("/requestURI").unwrap_or_default();
    if let Some((_, query)) = uri.split_once('?')
        && query.split('&').any(|pair| pair.split_once('=').is_some_and(|(key, _)| key == "dryRun"))
    {
        return None;
    }
    let object = event.get("objectRef")?;
    if object.get("subresource").and_then(Value::as_str) == Some("status")
        || object.get("apiGroup").and_then(Value::as_str) == Some("driftwarden.io")
    {
        return None;
    }
    // A command in a Pod (exec, attach, port-forward) in a namespace is a
    // session's command, never a write (docs/ACCESS.md).
    let named = |key: &str| object.get(key).and_then(Value::as_str);
    if named("resource") == Some("pods")
        && named("apiGroup").unwrap_or_default().is_empty()
        && ["exec", "attach", "portforward"].contains(&named("subresource").unwrap_or_default())
        && !named("namespace").unwrap_or_default().is_empty()
        && named("name").is_some()
    {
        return None;
    }
    object.get("name").and_then(Value::as_str).or_else(|| text("/requestObject/metadata/name"))?;
    // A time the operator can represent (Go's range is wider than jiff's).
    text("/requestReceivedTimestamp")?.parse::<Timestamp>().ok()?;
    let user = text("/impersonatedUser/username").or_else(|| text("/user/username")).unwrap_or_default();
    Some((text("/auditID").unwrap_or_default().to_owned(), user.to_owned()))
}

/// Whatever parsed: bounded and in order.
fn check_bounds(writes: &[AuditWrite], events: usize) -> Result<(), TestCaseError> {
    prop_assert!(writes.len() <= events, "{} writes from {events} events", writes.len());
    prop_assert!(writes.windows(2).all(|pair| pair[0].at <= pair[1].at), "not oldest first");
    for write in writes {
        prop_assert!(write.fields.len() <= MAX_FIELDS, "{} fields", write.fields.len());
        for field in &write.fields {
            prop_assert!(field.len() <= MAX_FIELD_BYTES, "a field path of {} bytes", field.len());
        }
        prop_assert!(["create", "update", "patch", "delete"].contains(&write.verb.as_str()), "verb {}", write.verb);
        prop_assert!(write.verb == "patch" || write.fields.is_empty(), "fields of a {}", write.verb);
        prop_assert!(write.subresource.as_deref() != Some("status"));
        prop_assert!(write.group != "driftwarden.io");
    }
    Ok(())
}

/// Nothing of a Secret's or token's body anywhere we can see.
fn check_no_canary(writes: &[AuditWrite]) -> Result<(), TestCaseError> {
    let shown = format!("{writes:?}");
    prop_assert!(!shown.contains(CANARY), "a Secret body leaked: {shown}");
    let entries: Vec<_> = writes.iter().map(AuditWrite::entry).collect();
    let shown = format!("{entries:?}{}", serde_json::to_string(&entries).expect("entries serialize"));
    prop_assert!(!shown.contains(CANARY), "a Secret body leaked into an activity entry: {shown}");
    Ok(())
}

#[test]
fn audit_events() {
    let batch = (0usize..24).prop_flat_map(|n| (0..n).map(event).collect::<Vec<_>>());
    fuzz("audit_events", 300, batch, |generated| {
        let items: Vec<Value> = generated.iter().map(|g| g.event.clone()).collect();
        let body = event_list(items.clone());
        let writes = match parse(&body) {
            Ok(writes) => writes,
            Err(error) => {
                // Only nesting past serde_json's limit (128) explains a refusal here.
                let deepest = items.iter().map(depth).max().unwrap_or(0);
                prop_assert!(deepest + 2 >= 120, "refused a well-formed batch (depth {deepest}): {error}");
                return Ok(());
            }
        };
        check_bounds(&writes, items.len())?;
        check_no_canary(&writes)?;
        // Commands: read from the URI only, never from a body; bounded.
        let (_, commands) = parse_with_commands(&body).expect("parsed once already");
        prop_assert!(writes.len() + commands.len() <= items.len());
        for command in &commands {
            let shown = format!("{command:?}{:?}", command.entry());
            prop_assert!(!shown.contains(CANARY), "a body leaked into a command: {shown}");
            prop_assert!(command.command.argv.iter().map(String::len).sum::<usize>() <= LOG_BOUNDS.total_bytes);
            prop_assert!(command.entry().command.iter().map(String::len).sum::<usize>() <= STATUS_BOUNDS.total_bytes);
        }
        let mut kept: Vec<(String, String)> = writes.iter().map(|w| (w.audit_id.clone(), w.user.clone())).collect();
        let mut wanted: Vec<(String, String)> = items.iter().filter_map(expected).collect();
        kept.sort();
        wanted.sort();
        prop_assert_eq!(kept, wanted);
        for write in &writes {
            let source = generated.iter().find(|g| g.event["auditID"] == write.audit_id.as_str()).expect("its event");
            prop_assert!(!source.secret || write.fields.is_empty(), "fields read from a secret body");
        }

        // Attribution: windows get only their namespace's writes in their
        // time; the operator and the system are nobody's session.
        let at = |s: &str| s.parse::<Timestamp>().expect("a valid time");
        let windows = [
            Window {
                namespace: "shop",
                request: "alice-fix",
                requester: "alice",
                opens: at("2026-11-21T10:00:00Z"),
                closes: at("2026-11-21T11:00:00Z"),
            },
            Window {
                namespace: "other",
                request: "bob-fix",
                requester: "bob",
                opens: at("1970-01-01T00:00:00Z"),
                closes: Timestamp::MAX,
            },
        ];
        let attributed = attribute(&writes, &windows, OPERATOR);
        for ((namespace, request), found) in &attributed {
            let window = windows.iter().find(|w| w.request == request && w.namespace == namespace).expect("a window");
            for (entry, own) in
                found.activity.iter().map(|e| (e, true)).chain(found.scope_writes.iter().map(|e| (e, false)))
            {
                prop_assert_eq!(entry.namespace.as_deref(), Some(window.namespace));
                prop_assert!(
                    window.opens <= entry.time.0 && entry.time.0 < window.closes,
                    "{entry:?} outside {window:?}"
                );
                prop_assert!(entry.user != OPERATOR && !driftwarden::gate::audit::is_system_user(&entry.user));
                prop_assert_eq!(entry.user == window.requester, own);
            }
        }
        let shown = format!("{attributed:?}");
        prop_assert!(!shown.contains(CANARY), "a Secret body leaked into an attribution: {}", shown);
        Ok(())
    });
}

/// Arbitrary JSON as the body, as the items, and as single fields of an
/// otherwise valid event.
#[test]
fn audit_json() {
    let shapes = prop_oneof![
        any_json(5).prop_map(|v| (serde_json::to_vec(&v).expect("serializes"), usize::MAX)),
        proptest::collection::vec(any_json(4), 0..8).prop_map(|items| {
            let n = items.len();
            (event_list(items), n)
        }),
        (
            event(0),
            pick(&[
                "verb",
                "stage",
                "user",
                "objectRef",
                "responseStatus",
                "requestObject",
                "requestURI",
                "requestReceivedTimestamp",
                "impersonatedUser",
                "auditID"
            ]),
            any_json(3)
        )
            .prop_map(|(generated, field, value)| {
                let mut event = generated.event;
                event[field] = value;
                (event_list(vec![event]), 1)
            }),
    ];
    fuzz("audit_json", 1500, shapes, |(body, events)| {
        if let Ok(writes) = parse(&body) {
            check_bounds(&writes, events)?;
            check_no_canary(&writes)?;
        }
        Ok(())
    });
}

/// Bytes: anything, and a valid batch with bytes flipped, inserted or cut.
#[test]
fn audit_bytes() {
    let batch = proptest::collection::vec(event(0), 1..4)
        .prop_map(|events| event_list(events.into_iter().map(|g| g.event).collect()));
    let damaged = (batch, proptest::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..6)).prop_map(
        |(mut body, edits)| {
            for (at, byte, how) in edits {
                let at = at % (body.len() + 1);
                match how {
                    0 if at < body.len() => body[at] = byte,
                    1 => body.insert(at, byte),
                    _ => body.truncate(at),
                }
            }
            body
        },
    );
    let bytes = prop_oneof![proptest::collection::vec(any::<u8>(), 0..4096), damaged];
    fuzz("audit_bytes", 1000, bytes, |body| {
        if let Ok(writes) = parse(&body) {
            check_bounds(&writes, body.len())?;
        }
        Ok(())
    });
}

/// The hand-made batches in `tests/fuzz/corpus/audit/`: each parses (or is
/// refused) without panic, stays bounded, and lets no canary through; a
/// file's `expect` sidecar, when present, lists the auditIDs it must keep.
#[test]
fn audit_corpus() {
    let dir = crate::corpus_dir().join("audit");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the audit corpus directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "the audit corpus is missing");
    for file in files {
        let body = std::fs::read(&file).expect("a corpus file");
        let name = file.display();
        let result = parse(&body);
        let expect = file.with_extension("expect");
        match (result, std::fs::read_to_string(&expect)) {
            (Ok(writes), wanted) => {
                check_bounds(&writes, usize::MAX).unwrap_or_else(|e| panic!("{name}: {e}"));
                check_no_canary(&writes).unwrap_or_else(|e| panic!("{name}: {e}"));
                if let Ok(wanted) = wanted {
                    let kept: Vec<&str> = writes.iter().map(|w| w.audit_id.as_str()).collect();
                    let wanted: Vec<&str> = wanted.split_whitespace().collect();
                    assert_eq!(kept, wanted, "{name}");
                }
            }
            (Err(error), Ok(wanted)) => {
                assert_eq!(wanted.trim(), "refused", "{name} was refused: {error}");
            }
            (Err(_), Err(_)) => {}
        }
    }
}

/// The canary check itself can fail: the same bodies on a ConfigMap do show.
#[test]
fn the_canary_shows_when_the_body_is_not_a_secrets() {
    let mut event = json!({
        "auditID": "control", "stage": "ResponseComplete", "verb": "patch", "requestURI": "/api/v1/namespaces/shop/configmaps/c",
        "user": {"username": "alice"}, "objectRef": {"resource": "configmaps", "namespace": "shop", "name": "c", "apiGroup": ""},
        "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2026-11-21T10:00:00Z",
    });
    event["requestObject"] = secret_body(2, "c");
    let writes = parse(&event_list(vec![event.clone()])).unwrap();
    assert!(check_no_canary(&writes).is_err(), "{writes:?}");
    event["objectRef"]["resource"] = "secrets".into();
    let writes = parse(&event_list(vec![event])).unwrap();
    assert_eq!(writes.len(), 1);
    assert!(check_no_canary(&writes).is_ok(), "{writes:?}");
}
