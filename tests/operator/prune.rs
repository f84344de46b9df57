//! Git's removals: with `spec.prune` an object a new revision no longer
//! declares is deleted (exactly that object), without it it is left alone;
//! either way it is never judged as an undeclared creation. A revision that
//! would prune most of what was declared waits for a confirmation.

use std::time::{Duration, Instant};

use driftwarden::api::DesiredState;
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{AccessTest, condition, drift_setup};
use crate::restart::Outage;
use crate::support::eventually;
use crate::support::operator::OPERATOR;

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}}}\ndata: {{owner: git}}\n")
}

fn files(names: &[&str]) -> Vec<(String, String)> {
    names.iter().map(|n| (format!("{n}.yaml"), config_map(n))).collect()
}

async fn declare(t: &AccessTest, name: &str, names: &[&str], spec: Value) {
    let files = files(names);
    let files: Vec<(&str, String)> = files.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    t.desired_state_spec(name, &files, spec).await;
    let count = names.len() as i64;
    t.wait_for_status(name, Duration::from_secs(30), |s| {
        s.in_sync == Some(count) && s.inventory.as_ref().is_some_and(|i| i.declared == count)
    })
    .await;
}

/// Publishes a revision of the source that declares only `names`.
async fn publish(t: &AccessTest, name: &str, names: &[&str]) {
    let kept = files(names);
    t.update_source(&format!("{name}-source"), |source| {
        let mut data: std::collections::BTreeMap<String, String> = kept.into_iter().collect();
        // A source with nothing in it is still a source: a comment.
        data.entry("keep.yaml".into()).or_insert_with(|| "# nothing declared\n".into());
        source.data = Some(data);
    })
    .await;
}

async fn live_uid(t: &AccessTest, name: &str) -> Option<String> {
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    api.get_opt(name).await.unwrap().filter(|c| c.metadata.deletion_timestamp.is_none()).and_then(|c| c.uid())
}

async fn set_spec(t: &AccessTest, name: &str, spec: Value) {
    let api = t.env.api::<DesiredState>(User::Admin).await;
    api.patch(name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await.unwrap();
}

#[tokio::test]
async fn an_object_removed_from_git_is_pruned_or_with_prune_off_left_alone() {
    let t = drift_setup("prune-removed").await;
    declare(&t, "shop", &["alpha", "beta", "gamma", "delta"], json!({"prune": true})).await;

    // Git drops gamma: it goes, and only it.
    let removed = Instant::now();
    publish(&t, "shop", &["alpha", "beta", "delta"]).await;
    let gone =
        eventually(Duration::from_secs(20), || async { live_uid(&t, "gamma").await.is_none().then_some(()) }).await;
    assert!(gone.is_some(), "gamma was not pruned");
    let took = removed.elapsed();
    let status = t
        .wait_for_status("shop", Duration::from_secs(20), |s| {
            s.inventory.as_ref().is_some_and(|i| i.pruned == 1 && i.pruning_count == 0 && i.declared == 3)
        })
        .await;
    eprintln!("pruned {took:?} after the revision was published");
    for name in ["alpha", "beta", "delta"] {
        assert!(live_uid(&t, name).await.is_some(), "{name} is still declared");
    }
    assert!(status.drifted_objects.is_empty(), "{:#?}", status.drifted_objects);
    let events = t.events_until("shop", |e| e.iter().any(|e| e.starts_with("Pruned"))).await;
    assert!(events.iter().any(|e| e.starts_with("Pruned: ConfigMap/gamma")), "{events:#?}");

    // A later revision adds epsilon, which the operator creates seconds
    // after the DesiredState (what is created in its first second counts
    // as older than it).
    crate::common::next_second().await;
    publish(&t, "shop", &["alpha", "beta", "delta", "epsilon"]).await;
    t.wait_for_status("shop", Duration::from_secs(20), |s| s.in_sync == Some(4)).await;

    // Prune off: Git drops delta and epsilon, which stay, and are not
    // undeclared drift (judged as creations with no window behind them,
    // they would be deleted).
    set_spec(&t, "shop", json!({"prune": false})).await;
    publish(&t, "shop", &["alpha", "beta"]).await;
    t.wait_for_status("shop", Duration::from_secs(20), |s| s.inventory.as_ref().is_some_and(|i| i.retired == 2)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(live_uid(&t, "delta").await.is_some(), "delta was deleted with prune off");
    assert!(live_uid(&t, "epsilon").await.is_some(), "epsilon was deleted with prune off");
    let status = t.wait_for_status("shop", Duration::from_secs(5), |_| true).await;
    assert!(status.drifted_objects.is_empty(), "{:#?}", status.drifted_objects);
    assert_eq!(status.drift_counts.map(|c| c.undeclared), Some(0));
    // And turning prune on later does not reach back for what was left behind.
    set_spec(&t, "shop", json!({"prune": true})).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(live_uid(&t, "delta").await.is_some(), "delta, retired, was pruned later");
    assert!(live_uid(&t, "epsilon").await.is_some(), "epsilon, retired, was pruned later");
}

#[tokio::test]
async fn an_empty_revision_prunes_nothing_until_confirmed_and_spares_a_recreated_object() {
    let t = drift_setup("prune-guard").await;
    declare(&t, "shop", &["one", "two"], json!({"prune": true})).await;
    // `three` comes seconds after the DesiredState (see above).
    crate::common::next_second().await;
    publish(&t, "shop", &["one", "two", "three"]).await;
    t.wait_for_status("shop", Duration::from_secs(20), |s| s.in_sync == Some(3)).await;
    let first_three = live_uid(&t, "three").await.unwrap();

    // An empty source pushed by mistake: nothing is deleted, neither by the
    // prune nor as undeclared objects; the DesiredState says why.
    publish(&t, "shop", &[]).await;
    let status = t
        .wait_for_status("shop", Duration::from_secs(20), |s| {
            condition(s, "PruneBlocked").is_some_and(|c| c.status == "True")
        })
        .await;
    let blocked = status.inventory.as_ref().and_then(|i| i.blocked.clone()).expect("status.inventory.blocked");
    assert_eq!((blocked.deletions, blocked.of), (3, 3));
    let message = &condition(&status, "PruneBlocked").unwrap().message;
    assert!(message.contains(&format!("spec.confirmPrune: {}", blocked.token)), "{message}");
    let events = t.events_until("shop", |e| e.iter().any(|e| e.starts_with("PruneBlocked"))).await;
    assert!(events.iter().any(|e| e.starts_with("PruneBlocked")), "{events:#?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["one", "two", "three"] {
        assert!(live_uid(&t, name).await.is_some(), "{name} was deleted by a blocked prune");
    }
    let status = t.wait_for_status("shop", Duration::from_secs(5), |_| true).await;
    assert_eq!(status.drift_counts.map(|c| c.undeclared), Some(0), "{:#?}", status.drifted_objects);

    // Meanwhile someone deletes `three` and makes another of that name: the
    // inventory's entry is stale. (Undeclared objects are not judged in
    // this DesiredState, so only the prune could touch it.)
    set_spec(&t, "shop", json!({"undeclared": {"enabled": false}})).await;
    let api = t.env.api::<ConfigMap>(User::Admin).await;
    api.delete("three", &DeleteParams::default()).await.unwrap();
    let again: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "three"}, "data": {"owner": "someone"}})).unwrap();
    let again = api.create(&PostParams::default(), &again).await.unwrap();
    assert_ne!(again.uid().unwrap(), first_three);

    // Confirmed: exactly what was held back goes, the new `three` stays.
    set_spec(&t, "shop", json!({"confirmPrune": blocked.token})).await;
    let gone = eventually(Duration::from_secs(20), || async {
        (live_uid(&t, "one").await.is_none() && live_uid(&t, "two").await.is_none()).then_some(())
    })
    .await;
    assert!(gone.is_some(), "the confirmed prune did not happen");
    let status = t
        .wait_for_status("shop", Duration::from_secs(20), |s| {
            s.inventory.as_ref().is_some_and(|i| i.pruning_count == 0 && i.blocked.is_none())
                && condition(s, "PruneBlocked").is_some_and(|c| c.status == "False")
        })
        .await;
    assert_eq!(status.inventory.map(|i| i.pruned), Some(2));
    assert_eq!(live_uid(&t, "three").await, again.uid(), "a re-created object was pruned by a stale entry");
}

/// The inventory is kept where a restarted operator finds it: a removal
/// published while the operator was down is pruned when it is back.
#[tokio::test]
async fn a_removal_published_while_the_operator_was_down_is_pruned_when_it_is_back() {
    let mut t = drift_setup("prune-restart").await;
    t.running.take();
    let exclusive = OPERATOR.write().await;
    t.operator.wait_until_serving().await.unwrap();
    declare(&t, "shop", &["left", "right", "centre"], json!({"prune": true})).await;
    let stored = t
        .wait_for_status("shop", Duration::from_secs(10), |s| {
            s.inventory.as_ref().is_some_and(|i| i.config_map.is_some())
        })
        .await
        .inventory
        .and_then(|i| i.config_map)
        .unwrap();
    let (namespace, name) = stored.split_once('/').unwrap();
    let config_maps: Api<ConfigMap> = Api::namespaced(t.env.admin.clone(), namespace);
    // The pass that re-created the objects stored them without uids (they
    // were not live yet); the next one, on their watch events, adds them.
    let with_uids = eventually(Duration::from_secs(10), || async {
        let stored = config_maps.get_opt(name).await.ok()??;
        let bytes = stored.binary_data?.get("inventory.gz")?.0.clone();
        let entries = driftwarden::drift::inventory::decode(&bytes).ok()?;
        (entries.len() == 3 && entries.iter().all(|e| !e.uid.is_empty())).then_some(())
    })
    .await;
    assert!(with_uids.is_some(), "{stored} does not hold the three objects with their uids");

    let outage = Outage::begin(t.operator);
    publish(&t, "shop", &["left", "right"]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(live_uid(&t, "centre").await.is_some());
    outage.end();
    let gone =
        eventually(Duration::from_secs(30), || async { live_uid(&t, "centre").await.is_none().then_some(()) }).await;
    assert!(gone.is_some(), "after a restart, a removal from Git was not pruned");
    assert!(live_uid(&t, "left").await.is_some() && live_uid(&t, "right").await.is_some());
    drop(exclusive);
}
