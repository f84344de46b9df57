//! Only the publisher's key says what Git declares. Someone who can write a
//! source ConfigMap but does not hold the key (here the cluster admin, who
//! passes the source guard; a grantee is stopped by the guard before that)
//! cannot add, change or remove a declaration, copy another namespace's
//! signed source in, or put an older signed revision back: the DesiredState
//! says why, nothing of that content is applied, and the last verified state
//! is still enforced. A new signed publish is taken; keys rotate.

use std::time::Duration;

use driftwarden::api::{AccessPhase, DesiredStateStatus};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::json;

use crate::common::{AccessTest, condition, drift_setup};
use crate::support::api_error;

fn settings(mode: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: {mode}\n")
}

/// A ConfigMap `settings` declared `mode: fast` by a DesiredState that
/// reverts unauthorized drift.
async fn enforced(t: &AccessTest) {
    t.kubectl(&["apply", "-f", "-"], Some(&settings("fast")));
    let spec = json!({"remediation": {"unauthorized": "Revert", "windowEnd": "Revert"}});
    t.desired_state_spec("state", &[("settings.yaml", settings("fast"))], spec).await;
    t.wait_for_status("state", Duration::from_secs(30), |s| s.managed == Some(1) && s.drifted == Some(0)).await;
}

fn refused_with(reason: &'static str) -> impl Fn(&DesiredStateStatus) -> bool {
    move |s| condition(s, "SourceValid").is_some_and(|c| c.status == "False" && c.reason == reason)
}

async fn mode(t: &AccessTest) -> String {
    let config_map = t.env.api::<ConfigMap>(User::Admin).await.get("settings").await.unwrap();
    config_map.data.and_then(|d| d.get("mode").cloned()).unwrap_or_default()
}

/// Writes the source as someone without the key would: changed, not re-signed.
async fn forge(t: &AccessTest, change: impl FnOnce(&mut ConfigMap)) {
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    let mut source = api.get("state-source").await.unwrap();
    change(&mut source);
    api.replace("state-source", &PostParams::default(), &source).await.unwrap();
}

/// Whether the managed ConfigMap comes back to `expected` within `within`.
async fn comes_back_to(t: &AccessTest, expected: &str, within: Duration) -> bool {
    crate::support::eventually(within, || async { (mode(t).await == expected).then_some(()) }).await.is_some()
}

async fn set_mode(t: &AccessTest, mode: &str) {
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    api.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": mode}}))).await.unwrap();
}

const SELF_GRANT: &str = "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: alice-forever\nroleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: edit\nsubjects:\n- apiGroup: rbac.authorization.k8s.io\n  kind: User\n  name: alice\n";

#[tokio::test]
async fn a_forged_source_creates_nothing_and_the_last_verified_state_is_still_enforced() {
    let t = drift_setup("signed-forged").await;
    enforced(&t).await;

    // A key added: a RoleBinding of edit to alice herself.
    forge(&t, |s| drop(s.data.get_or_insert_default().insert("grant.yaml".into(), SELF_GRANT.into()))).await;
    let status = t.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureInvalid")).await;
    let message = &condition(&status, "SourceValid").unwrap().message;
    assert!(message.contains("does not match the content"), "{message}");
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(ready.reason, "EnforcingLastVerified", "{ready:?}");
    assert_eq!(status.managed, Some(1), "the forged declaration is not managed");
    let events = t.events_until("state", |e| e.iter().any(|e| e.starts_with("SignatureInvalid: "))).await;
    assert_eq!(events.iter().filter(|e| e.starts_with("SignatureInvalid: ")).count(), 1, "{events:#?}");

    // An unauthorized change while the source is forged is still reverted.
    set_mode(&t, "slow").await;
    let back = comes_back_to(&t, "fast", Duration::from_secs(10)).await;
    assert!(back, "drift made while the source is forged was not reverted");
    let bindings = t.env.api::<RoleBinding>(User::Admin).await;
    assert!(bindings.get_opt("alice-forever").await.unwrap().is_none(), "the forged RoleBinding was created");

    // A key changed: the declared value is not applied.
    forge(&t, |s| {
        let data = s.data.get_or_insert_default();
        data.remove("grant.yaml");
        data.insert("settings.yaml".into(), settings("evil"));
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(mode(&t).await, "fast", "a forged change of a declaration was applied");
    let status = t.wait_for_status("state", Duration::from_secs(10), refused_with("SignatureInvalid")).await;
    assert_eq!(status.drifted, Some(0));

    // A key removed: the object stays managed (its drift still reverted).
    forge(&t, |s| drop(s.data.get_or_insert_default().remove("settings.yaml"))).await;
    t.wait_for_status("state", Duration::from_secs(10), refused_with("SignatureInvalid")).await;
    set_mode(&t, "slower").await;
    let back = comes_back_to(&t, "fast", Duration::from_secs(10)).await;
    assert!(back, "removing a key from a forged source stopped enforcement");

    // The signature removed altogether.
    forge(&t, |s| {
        s.metadata.annotations.get_or_insert_default().remove("driftwarden.io/signature");
    })
    .await;
    t.wait_for_status("state", Duration::from_secs(10), refused_with("SignatureMissing")).await;

    // The publisher's next revision is taken.
    t.update_source("state-source", |s| {
        s.data.get_or_insert_default().insert("settings.yaml".into(), settings("faster"));
        s.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), "feed0001".into());
    })
    .await;
    let status = t
        .wait_for_status("state", Duration::from_secs(20), |s| {
            s.revision.as_deref() == Some("feed0001")
                && condition(s, "SourceValid").is_some_and(|c| c.status == "True" && c.reason == "Verified")
        })
        .await;
    assert_eq!(status.signature.as_ref().map(|s| s.key.as_str()), Some("tests"));
    let applied = comes_back_to(&t, "faster", Duration::from_secs(10)).await;
    assert!(applied, "the newly published revision was not enforced");
    assert!(bindings.get_opt("alice-forever").await.unwrap().is_none());
}

#[tokio::test]
async fn an_older_signed_revision_put_back_is_refused_as_a_replay() {
    let t = drift_setup("signed-replay").await;
    enforced(&t).await;
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    let old = api.get("state-source").await.unwrap();

    t.update_source("state-source", |s| {
        s.data.get_or_insert_default().insert("settings.yaml".into(), settings("faster"));
        s.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), "feed0002".into());
    })
    .await;
    t.wait_for_status("state", Duration::from_secs(20), |s| s.revision.as_deref() == Some("feed0002")).await;
    let accepted = api.get("state-source").await.unwrap();

    // The older revision, validly signed, written back.
    let mut replay = old.clone();
    replay.metadata.resource_version = accepted.metadata.resource_version.clone();
    api.replace("state-source", &PostParams::default(), &replay).await.unwrap();
    let status = t.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureReplayed")).await;
    assert_eq!(status.revision.as_deref(), Some("feed0002"), "the enforced revision stays the newer one");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(mode(&t).await, "faster", "the replayed revision was applied");
}

#[tokio::test]
async fn a_signed_source_copied_from_another_namespace_is_refused() {
    let a = drift_setup("signed-copy-a").await;
    enforced(&a).await;
    let b = crate::common::another_drift("signed-copy-b").await;
    enforced(&b).await;
    // Namespace a's publisher signs a grant; its source is copied into b.
    a.update_source("state-source", |s| {
        s.data.get_or_insert_default().insert("grant.yaml".into(), SELF_GRANT.into());
    })
    .await;
    a.wait_for_status("state", Duration::from_secs(20), |s| s.managed == Some(2)).await;
    let from_a = a.env.api::<ConfigMap>(User::Admin).await.get("state-source").await.unwrap();
    let into_b = b.env.api::<ConfigMap>(User::Admin).await;
    let mut copy = into_b.get("state-source").await.unwrap();
    copy.data = from_a.data.clone();
    copy.metadata.annotations = from_a.metadata.annotations.clone();
    into_b.replace("state-source", &PostParams::default(), &copy).await.unwrap();
    let status = b.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureInvalid")).await;
    assert_eq!(status.managed, Some(1));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let bindings = b.env.api::<RoleBinding>(User::Admin).await;
    assert!(bindings.get_opt("alice-forever").await.unwrap().is_none(), "the copied declaration was applied in b");
}

/// A PublisherKey for `key`, trusted only in this test's namespace.
async fn trust(t: &AccessTest, name: &str, key: &ed25519_dalek::SigningKey) {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    let public = key.verifying_key().to_public_key_pem(Default::default()).unwrap();
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "PublisherKey", "metadata": {"name": name},
        "spec": {"publicKey": public,
                 "namespaceSelector": {"matchLabels": {"driftwarden.io/test-namespace": t.env.namespace}}},
    }))
    .unwrap();
    keys(t).create(&PostParams::default(), &object).await.unwrap();
}

fn keys(t: &AccessTest) -> Api<DynamicObject> {
    Api::all_with(t.env.admin.clone(), &ApiResource::erase::<driftwarden::api::PublisherKey>(&()))
}

/// Signs and writes the source with `key` (another CI key than the harness's).
async fn publish_with(t: &AccessTest, key: &ed25519_dalek::SigningKey, mode: &str, revision: &str) {
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    let mut source = api.get("state-source").await.unwrap();
    source.data.get_or_insert_default().insert("settings.yaml".into(), settings(mode));
    source.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), revision.into());
    driftwarden::drift::pack::sign(
        std::slice::from_mut(&mut source),
        key,
        &t.env.namespace,
        t.operator.publisher.next_sequence(),
    );
    api.replace("state-source", &PostParams::default(), &source).await.unwrap();
}

#[tokio::test]
async fn untrusted_keys_are_refused_two_keys_rotate_and_a_removed_key_stops_working() {
    let t = drift_setup("signed-rotation").await;
    enforced(&t).await;
    let next = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let key_name = format!("{}-next", t.env.namespace);

    publish_with(&t, &next, "medium", "cafe0001").await;
    t.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureUntrusted")).await;
    assert_eq!(mode(&t).await, "fast");

    // Rotation: the new key trusted next to the old one; both verify.
    trust(&t, &key_name, &next).await;
    // Its status names the key ID signatures carry.
    let expected_id = driftwarden::drift::signature::key_id(&next.verifying_key());
    let shown = crate::support::eventually(Duration::from_secs(10), || async {
        let key = keys(&t).get(&key_name).await.ok()?;
        (key.data["status"]["keyId"] == expected_id.as_str()).then_some(())
    })
    .await;
    assert!(shown.is_some(), "the PublisherKey's status does not show its key ID {expected_id}");
    let status =
        t.wait_for_status("state", Duration::from_secs(20), |s| s.revision.as_deref() == Some("cafe0001")).await;
    assert_eq!(status.signature.as_ref().map(|s| s.key.clone()), Some(key_name.clone()));
    t.update_source("state-source", |s| {
        s.metadata.annotations.get_or_insert_default().insert("driftwarden.io/revision".into(), "cafe0002".into());
    })
    .await;
    t.wait_for_status("state", Duration::from_secs(20), |s| s.revision.as_deref() == Some("cafe0002")).await;

    // A DesiredState may pin its key: the harness key no longer counts for it.
    let states = t.env.api::<driftwarden::api::DesiredState>(User::Admin).await;
    let pin = Patch::Merge(json!({"spec": {"trustedKeys": [key_name]}}));
    states.patch("state", &PatchParams::default(), &pin).await.unwrap();
    t.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureUntrusted")).await;
    publish_with(&t, &next, "fast", "cafe0003").await;
    t.wait_for_status("state", Duration::from_secs(20), |s| s.revision.as_deref() == Some("cafe0003")).await;

    // The key removed: what it signs from now on is refused, and the last
    // verified state is still enforced.
    keys(&t).delete(&key_name, &Default::default()).await.unwrap();
    publish_with(&t, &next, "evil", "cafe0004").await;
    t.wait_for_status("state", Duration::from_secs(20), refused_with("SignatureUntrusted")).await;
    set_mode(&t, "slow").await;
    let back = comes_back_to(&t, "fast", Duration::from_secs(10)).await;
    assert!(back, "enforcement stopped when the key was removed");
}

/// The source guard (a ValidatingAdmissionPolicy from the chart) and RBAC:
/// a grantee with an approved `edit` window cannot write source ConfigMaps,
/// the DesiredState, or a PublisherKey.
#[tokio::test]
async fn a_grantee_cannot_touch_sources_policy_or_keys() {
    let t = drift_setup("signed-grantee").await;
    enforced(&t).await;
    t.request(User::Alice, "alice-fix", "edit", "10m").await.unwrap();
    t.review(User::Carol, "alice-fix-ok", "alice-fix", "Approve").await.unwrap();
    t.wait_for_phase("alice-fix", AccessPhase::Active, Duration::from_secs(10)).await;
    assert!(t.can_create_configmaps(User::Alice).await);

    let as_alice = t.env.api::<ConfigMap>(User::Alice).await;
    let add = Patch::Merge(json!({"data": {"grant.yaml": SELF_GRANT}}));
    let (code, message) = api_error(as_alice.patch("state-source", &PatchParams::default(), &add).await);
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("only the publisher"), "{message}");
    let (code, _) = api_error(as_alice.delete("state-source", &Default::default()).await);
    assert_eq!(code, 403, "alice deleted the source");
    let extra: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "state-source-9", "labels": {"driftwarden.io/source": "state-source"}},
        "data": {"grant.yaml": SELF_GRANT},
    }))
    .unwrap();
    let (code, _) = api_error(as_alice.create(&PostParams::default(), &extra).await);
    assert_eq!(code, 403, "alice added a ConfigMap to the source");
    // Relabelling her own ConfigMap into the source is refused too.
    let own: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "mine"}})).unwrap();
    as_alice.create(&PostParams::default(), &own).await.unwrap();
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"driftwarden.io/source": "state-source"}}}));
    let (code, _) = api_error(as_alice.patch("mine", &PatchParams::default(), &relabel).await);
    assert_eq!(code, 403, "alice relabelled a ConfigMap into the source");

    // The DesiredState and the PublisherKeys are policy: not hers to write.
    let states = t.env.api::<driftwarden::api::DesiredState>(User::Alice).await;
    let suspend = Patch::Merge(json!({"spec": {"suspend": true}}));
    let (code, _) = api_error(states.patch("state", &PatchParams::default(), &suspend).await);
    assert_eq!(code, 403, "alice suspended the DesiredState");
    let alice_keys: Api<DynamicObject> =
        Api::all_with(t.env.client(User::Alice).await, &ApiResource::erase::<driftwarden::api::PublisherKey>(&()));
    let key: DynamicObject = serde_json::from_value(t.operator.publisher.publisher_key("alice-key")).unwrap();
    let (code, _) = api_error(alice_keys.create(&PostParams::default(), &key).await);
    assert_eq!(code, 403, "alice created a PublisherKey");
}

/// The last verified sources outlive the operator: restarted while a source
/// is forged, it still enforces them (from the copy it keeps in its own
/// namespace, verified again), and applies nothing of the forgery.
#[tokio::test]
async fn a_restarted_operator_facing_a_forged_source_still_enforces_the_last_verified_state() {
    let mut t = drift_setup("signed-restart").await;
    enforced(&t).await;
    t.running.take();
    let exclusive = crate::support::operator::OPERATOR.write().await;
    t.operator.wait_until_serving().await.unwrap();

    let outage = crate::restart::Outage::begin(t.operator);
    forge(&t, |s| drop(s.data.get_or_insert_default().insert("grant.yaml".into(), SELF_GRANT.into()))).await;
    set_mode(&t, "slow").await;
    outage.end();
    t.operator.wait_until_serving().await.unwrap();

    let status = t.wait_for_status("state", Duration::from_secs(30), refused_with("SignatureInvalid")).await;
    assert_eq!(condition(&status, "Ready").unwrap().reason, "EnforcingLastVerified", "{status:#?}");
    let back = comes_back_to(&t, "fast", Duration::from_secs(15)).await;
    assert!(back, "the drift made during the outage was not reverted to the last verified state");
    let bindings = t.env.api::<RoleBinding>(User::Admin).await;
    assert!(bindings.get_opt("alice-forever").await.unwrap().is_none(), "the forged RoleBinding was created");
    drop(exclusive);
}
