//! Nothing outlives a session: objects no source declares, created in a
//! namespace a DesiredState manages, are drift. Created inside an approved
//! window they are held and deleted when it ends (each codified); created
//! with standing rights and no window they are deleted at once, or only
//! reported. What the control plane and its controllers make, and the
//! operator's own grant bindings, are never touched.

use std::time::{Duration, Instant};

use driftwarden::api::{AccessPhase, AccessRequest, DesiredStateStatus, DriftAction, DriftedObject};
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::{Value, json};

use crate::common::{AccessTest, setup};

use crate::gate::managed_shop;
use crate::support::eventually;

fn undeclared<'a>(status: &'a DesiredStateStatus, name: &str) -> Option<&'a DriftedObject> {
    status.drifted_objects.iter().find(|d| d.undeclared && d.object.name == name)
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}},
        },
    }))
    .unwrap()
}

async fn create<K>(t: &AccessTest, user: User, object: Value) -> K
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let object: K = serde_json::from_value(object).unwrap();
    t.env.api::<K>(user).await.create(&PostParams::default(), &object).await.unwrap()
}

async fn exists<K>(t: &AccessTest, name: &str) -> bool
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    t.env
        .api::<K>(User::Admin)
        .await
        .get_opt(name)
        .await
        .unwrap()
        .is_some_and(|o| o.meta().deletion_timestamp.is_none())
}

/// bob gets standing `edit` here before the DesiredState exists (so his
/// binding predates it and is not its to judge).
async fn standing_edit_for_bob(t: &AccessTest) {
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "standing-edit-bob"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
    }))
    .unwrap();
    t.env.api::<RoleBinding>(User::Admin).await.create(&PostParams::default(), &binding).await.unwrap();
}

#[tokio::test]
async fn what_a_window_creates_is_held_then_deleted_and_codified_when_it_ends() {
    let roles = json!({"roles": [{"kind": "Role", "name": "window-admin"}]});
    let t = setup("undeclared-window", roles).await;
    // A role that may also bind `view`: a window that can leave a binding behind.
    let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(json!({
        "metadata": {"name": "window-admin"},
        "rules": [
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "create", "patch", "delete"]},
            {"apiGroups": [""], "resources": ["configmaps", "serviceaccounts", "secrets"], "verbs": ["get", "list", "create", "patch", "delete"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["rolebindings"], "verbs": ["get", "list", "create"]},
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["bind"], "resourceNames": ["view"]},
        ],
    }))
    .unwrap();
    t.env
        .api::<k8s_openapi::api::rbac::v1::Role>(User::Admin)
        .await
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    managed_shop(&t, json!({})).await;
    crate::common::next_second().await;
    t.request_role(User::Alice, "alice-admin", "Role", "window-admin", "10m").await.unwrap();
    t.review(User::Carol, "alice-admin-ok", "alice-admin", "Approve").await.unwrap();
    t.wait_for_phase("alice-admin", AccessPhase::Active, Duration::from_secs(10)).await;

    // What someone with a short window leaves behind: a workload, config,
    // an identity, a credential and a binding of her own.
    let miner: Deployment =
        t.env.api(User::Alice).await.create(&PostParams::default(), &deployment("miner")).await.unwrap();
    create::<ConfigMap>(&t, User::Alice, json!({"metadata": {"name": "stash"}, "data": {"k": "v"}})).await;
    create::<ServiceAccount>(&t, User::Alice, json!({"metadata": {"name": "backdoor"}})).await;
    create::<Secret>(
        &t,
        User::Alice,
        json!({"metadata": {"name": "loot"}, "stringData": {"token": "secret-canary-5c1"}}),
    )
    .await;
    create::<RoleBinding>(
        &t,
        User::Alice,
        json!({
            "metadata": {"name": "alice-forever"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
        }),
    )
    .await;
    let created = ["miner", "stash", "backdoor", "loot", "alice-forever"];

    // Held while the window is open, attributed to it.
    let status = t
        .wait_for_status("shop", Duration::from_secs(20), |s| {
            created.iter().all(|name| {
                undeclared(s, name).is_some_and(|d| {
                    d.action == Some(DriftAction::Hold) && d.access_request.as_deref() == Some("alice-admin")
                })
            })
        })
        .await;
    assert_eq!(status.drift_counts.unwrap().undeclared, 5, "{:?}", status.drifted_objects);
    assert!(exists::<Deployment>(&t, "miner").await && exists::<RoleBinding>(&t, "alice-forever").await);

    // The window ends: everything it created goes.
    let requests: Api<AccessRequest> = t.env.api(User::Alice).await;
    let revoked_at = Instant::now();
    requests
        .patch("alice-admin", &PatchParams::default(), &Patch::Merge(json!({"spec": {"revoked": true}})))
        .await
        .unwrap();
    let gone = eventually(Duration::from_secs(20), || async {
        let all = [
            exists::<Deployment>(&t, "miner").await,
            exists::<ConfigMap>(&t, "stash").await,
            exists::<ServiceAccount>(&t, "backdoor").await,
            exists::<Secret>(&t, "loot").await,
            exists::<RoleBinding>(&t, "alice-forever").await,
        ];
        all.iter().all(|e| !e).then_some(())
    })
    .await;
    assert!(gone.is_some(), "what the window created outlived it");
    eprintln!("undeclared objects deleted {:?} after the revocation", revoked_at.elapsed());
    // The workload's ReplicaSets went with it (foreground deletion).
    let replica_sets: Api<ReplicaSet> = t.env.api(User::Admin).await;
    let left = eventually(Duration::from_secs(20), || async {
        let all = replica_sets.list(&ListParams::default()).await.ok()?.items;
        let owned =
            all.iter().filter(|rs| rs.owner_references().iter().any(|o| o.uid == miner.uid().unwrap_or_default()));
        (owned.count() == 0).then_some(())
    })
    .await;
    assert!(left.is_some(), "the miner's ReplicaSets outlived it");

    // Each is in the codify patch, as a new file; the Secret's value is not.
    let request = requests.get("alice-admin").await.unwrap();
    let changes = request.status.unwrap().session_changes;
    for name in created {
        let change = changes.iter().find(|c| c.object.name == name);
        let change = change.unwrap_or_else(|| panic!("{name} is not codified: {changes:?}"));
        assert!(change.patch.starts_with("--- /dev/null\n+++ b/shop-source/"), "{}", change.patch);
    }
    assert!(changes.iter().all(|c| !c.patch.contains("secret-canary-5c1")), "a Secret value leaked into codify");
    let status = t
        .wait_for_status("shop", Duration::from_secs(10), |s| created.iter().all(|n| undeclared(s, n).is_none()))
        .await;
    assert_eq!(status.drift_counts.unwrap().undeclared, 0);
}

#[tokio::test]
async fn standing_rights_leave_nothing_behind_or_it_is_reported() {
    let t = setup("undeclared-standing", json!({})).await;
    standing_edit_for_bob(&t).await;
    managed_shop(&t, json!({})).await;
    crate::common::next_second().await;
    let created = Instant::now();
    t.env.api::<Deployment>(User::Bob).await.create(&PostParams::default(), &deployment("rogue")).await.unwrap();
    let deleted =
        eventually(Duration::from_secs(20), || async { (!exists::<Deployment>(&t, "rogue").await).then_some(()) })
            .await;
    assert!(deleted.is_some(), "bob's undeclared Deployment was not deleted");
    eprintln!("bob's undeclared Deployment deleted {:?} after its creation", created.elapsed());
    let deleted_event = |e: &String| e.starts_with("Deleted: Deployment") && e.contains("rogue");
    let events = t.events_until("shop", |events| events.iter().any(deleted_event)).await;
    assert!(events.iter().any(deleted_event), "{events:?}");

    // Report: it stays, and is listed.
    let t = crate::common::another("undeclared-report", json!({})).await;
    standing_edit_for_bob(&t).await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report"}})).await;
    crate::common::next_second().await;
    t.env.api::<Deployment>(User::Bob).await.create(&PostParams::default(), &deployment("rogue")).await.unwrap();
    let status = t
        .wait_for_status("shop", Duration::from_secs(20), |s| {
            undeclared(s, "rogue").is_some_and(|d| d.action == Some(DriftAction::Report))
        })
        .await;
    assert_eq!(status.drift_counts.unwrap().undeclared, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists::<Deployment>(&t, "rogue").await, "reported, not deleted");
}

#[tokio::test]
async fn what_the_control_plane_and_controllers_make_is_never_touched() {
    let t = setup("undeclared-untouched", json!({})).await;
    managed_shop(&t, json!({})).await;
    // The declared Deployment's ReplicaSet (the controller manager runs),
    // the namespace's root CA and default ServiceAccount, a grant binding.
    let replica_sets: Api<ReplicaSet> = t.env.api(User::Admin).await;
    let replica_set = eventually(Duration::from_secs(20), || async {
        replica_sets
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|rs| rs.name_any().starts_with("web-"))
    })
    .await
    .expect("the controller manager made web's ReplicaSet");
    let root_ca = t.env.api::<ConfigMap>(User::Admin).await.get("kube-root-ca.crt").await.unwrap();
    let default_sa = t.env.api::<ServiceAccount>(User::Admin).await.get("default").await.unwrap();
    t.request(User::Alice, "alice-look", "edit", "10m").await.unwrap();
    t.review(User::Carol, "alice-look-ok", "alice-look", "Approve").await.unwrap();
    t.wait_for_phase("alice-look", AccessPhase::Active, Duration::from_secs(10)).await;
    let binding = t.binding("alice-look").await.expect("the grant's RoleBinding");

    // A few passes later (an edit makes one): all still there, unchanged,
    // and none of them listed.
    let api: Api<ConfigMap> = t.env.api(User::Admin).await;
    api.patch("settings", &PatchParams::default(), &Patch::Merge(json!({"data": {"mode": "edited"}}))).await.unwrap();
    t.wait_for_status("shop", Duration::from_secs(20), |s| s.reverts.unwrap_or(0) >= 1).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let same_uid = |a: Option<String>, b: Option<String>| a.is_some() && a == b;
    let rs_now = replica_sets.get_opt(&replica_set.name_any()).await.unwrap();
    assert!(same_uid(rs_now.and_then(|r| r.uid()), replica_set.uid()), "web's ReplicaSet was touched");
    let root_now = t.env.api::<ConfigMap>(User::Admin).await.get("kube-root-ca.crt").await.unwrap();
    assert!(same_uid(root_now.uid(), root_ca.uid()), "the root CA ConfigMap was touched");
    let sa_now = t.env.api::<ServiceAccount>(User::Admin).await.get("default").await.unwrap();
    assert!(same_uid(sa_now.uid(), default_sa.uid()), "the default ServiceAccount was touched");
    let binding_now = t.binding("alice-look").await;
    assert!(same_uid(binding_now.and_then(|b| b.uid()), binding.uid()), "the grant's RoleBinding was touched");
    let status =
        t.env.api::<driftwarden::api::DesiredState>(User::Admin).await.get("shop").await.unwrap().status.unwrap();
    assert!(status.drifted_objects.iter().all(|d| !d.undeclared), "{:?}", status.drifted_objects);
}

/// The Deployment's generation: one more for every write that changed its spec.
async fn generation(t: &AccessTest, name: &str) -> i64 {
    let deployment = t.env.api::<Deployment>(User::Admin).await.get(name).await.unwrap();
    deployment.metadata.generation.unwrap_or_default()
}

#[tokio::test]
async fn two_desired_states_declaring_one_object_do_not_fight_over_it() {
    let t = setup("one-owner", json!({})).await;
    managed_shop(&t, json!({})).await;
    // A second DesiredState declares web with other replicas.
    let other = crate::gate::SHOP.replace("replicas: 2", "replicas: 4");
    t.desired_state_spec("team", &[("shop.yaml", other)], json!({})).await;
    let status = t
        .wait_for_status("team", Duration::from_secs(20), |s| {
            s.conditions.iter().any(|c| c.type_ == "Conflict" && c.status == "True")
        })
        .await;
    let conflict = status.conditions.iter().find(|c| c.type_ == "Conflict").unwrap();
    assert!(conflict.message.contains("DesiredState") && conflict.message.contains("/shop"), "{conflict:?}");
    let before = generation(&t, "web").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let after = generation(&t, "web").await;
    eprintln!("web's generation over 30 s with two DesiredStates declaring it: {before} -> {after}");
    assert_eq!(after, before, "the two DesiredStates fought over web");
    assert_eq!(crate::gate::replicas(&t).await, 2, "the older DesiredState owns it");
    let events = t.events_until("team", |e| e.iter().any(|e| e.starts_with("ManagedElsewhere"))).await;
    assert!(events.iter().any(|e| e.starts_with("ManagedElsewhere")), "{events:?}");
}

#[tokio::test]
async fn a_field_rewritten_after_every_revert_is_contested_and_backed_off() {
    let t = setup("contested", json!({})).await;
    managed_shop(&t, json!({})).await;
    // Another tool puts replicas back to 7 whenever they are not.
    let api: Api<Deployment> = t.env.api(User::Admin).await;
    let fighter = tokio::spawn({
        let api = api.clone();
        async move {
            loop {
                if let Ok(web) = api.get("web").await
                    && web.spec.and_then(|s| s.replicas) != Some(7)
                {
                    let _ = api
                        .patch(
                            "web",
                            &PatchParams::apply("other-gitops").force(),
                            &Patch::Apply(json!({
                            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                            "spec": {"replicas": 7}})),
                        )
                        .await;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    });
    let status = t
        .wait_for_status("shop", Duration::from_secs(30), |s| {
            s.conditions.iter().any(|c| c.type_ == "Contested" && c.status == "True")
        })
        .await;
    let contested = status.conditions.iter().find(|c| c.type_ == "Contested").unwrap();
    assert!(contested.message.contains("Deployment"), "{contested:?}");
    // Backed off: a few reverts in the next 20 s, not one per write.
    let reverts = status.reverts.unwrap_or(0);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let later = t.env.api::<driftwarden::api::DesiredState>(User::Admin).await.get("shop").await.unwrap();
    let more = later.status.unwrap().reverts.unwrap_or(0) - reverts;
    let metrics = crate::support::http_get(t.operator.http_port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    fighter.abort();
    eprintln!("reverts of a contested object in 20 s: {more}");
    assert!(more <= 6, "{more} reverts in 20 s: not backed off");
    assert!(metrics.lines().any(|l| l.starts_with("driftwarden_contested_objects") && !l.ends_with(" 0")), "{metrics}");
}
