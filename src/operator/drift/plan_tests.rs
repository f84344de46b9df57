//! The plan, asserted as a value: what a pass would revert, delete, hold,
//! codify and announce, from declared, live and undeclared objects and a
//! gate with fixed verdicts. No client, no cluster.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;
use serde_json::{Value, json};

use super::*;
use crate::api::{DesiredStateSpec, KindRef, NamedObject, RemediationAction};
use crate::drift::{DeclaredObject, ObjectKey, Origin, ParsedSources, kept};
use crate::operator::drift::memory::Memory;

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap()
}

/// A gate whose verdicts are looked up by object name.
#[derive(Default)]
struct FixedGate {
    verdicts: HashMap<String, Decision>,
    codified: HashSet<String>,
    /// The subjects it was asked about, by name.
    asked: std::sync::Mutex<Vec<(String, Option<Timestamp>)>>,
}

impl Gate for FixedGate {
    fn verdict(&self, subject: &Subject<'_>, remediation: Remediation, _now: Timestamp) -> Verdict {
        self.asked.lock().unwrap().push((subject.name.to_owned(), subject.clean_at));
        let decision = self.verdicts.get(subject.name).cloned().unwrap_or(match remediation.unauthorized {
            RemediationAction::Revert => Decision::Revert { class: DriftClass::Unauthorized, request: None },
            RemediationAction::Report => Decision::Report { class: DriftClass::Unauthorized, request: None },
        });
        Verdict { decision, from_audit: true, writers: Vec::new() }
    }

    fn codified(&self, _namespace: &str, _request: &str, object: &api::ObjectRef) -> bool {
        self.codified.contains(&object.name)
    }
}

fn deployment(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "shop"},
           "spec": {"replicas": replicas}})
}

fn declarations(names: &[&str]) -> Arc<Declarations> {
    let objects = names
        .iter()
        .map(|name| DeclaredObject {
            key: ObjectKey {
                api_version: "apps/v1".into(),
                group: "apps".into(),
                version: "v1".into(),
                kind: "Deployment".into(),
                namespace: Some("shop".into()),
                name: (*name).into(),
            },
            object: deployment(name, 2),
            origin: Origin {
                config_map: "shop-state".into(),
                key: format!("apps__{name}.yaml"),
                document: 0,
                item: None,
            },
        })
        .collect();
    Arc::new(Declarations::from(ParsedSources { revision: Some("abc".into()), objects }))
}

fn live(name: &str, replicas: i64, version: &str) -> Arc<DynamicObject> {
    let mut object = deployment(name, replicas);
    object["metadata"]["resourceVersion"] = version.into();
    object["metadata"]["managedFields"] = json!([{"manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]);
    let mut object: DynamicObject = serde_json::from_value(object).unwrap();
    kept::for_watch_cache(&mut object);
    Arc::new(object)
}

fn key(kind: &str, group: &str, plural: &str) -> WatchKey {
    WatchKey {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        plural: plural.into(),
        namespace: Some("shop".into()),
    }
}

fn extra(kind: &str, group: &str, plural: &str, name: &str, created: Timestamp) -> Extra {
    Extra {
        key: key(kind, group, plural).into(),
        name: name.into(),
        uid: format!("uid-{name}"),
        created: Some(created),
        deleting: false,
        controller: None,
    }
}

struct World {
    spec: DesiredStateSpec,
    old: DesiredStateStatus,
    parsed: Arc<Declarations>,
    resources: Vec<Option<WatchKey>>,
    lives: Vec<Option<Arc<DynamicObject>>>,
    extras: Vec<Extra>,
    watched: HashSet<KindRef>,
    uids: HashMap<String, Arc<KindRef>>,
    ignore: Vec<NamedObject>,
    grants: HashSet<(String, String)>,
    sources: HashSet<(String, String)>,
    options: DiffOptions,
    owners: Vec<Option<crate::operator::drift::claims::Claimant>>,
    removed_from_git: std::collections::BTreeSet<String>,
}

impl World {
    fn new(lives: Vec<Option<Arc<DynamicObject>>>, extras: Vec<Extra>) -> World {
        let parsed = declarations(&["web", "api"]);
        let spec: DesiredStateSpec = serde_json::from_value(json!({"sources": [{"name": "shop-state"}]})).unwrap();
        World {
            spec,
            old: DesiredStateStatus::default(),
            resources: vec![Some(key("Deployment", "apps", "deployments")); parsed.objects.len()],
            parsed,
            lives,
            extras,
            watched: [KindRef { group: "apps".into(), kind: "Deployment".into() }].into(),
            uids: HashMap::new(),
            ignore: Vec::new(),
            grants: HashSet::new(),
            sources: HashSet::new(),
            options: DiffOptions::default(),
            owners: vec![None; 2],
            removed_from_git: Default::default(),
        }
    }

    fn inputs(&self) -> Inputs<'_> {
        Inputs {
            spec: &self.spec,
            old: &self.old,
            parsed: &self.parsed,
            resources: &self.resources,
            lives: &self.lives,
            extras: &self.extras,
            owners: &self.owners,
            known: undeclared::Known {
                owner_since: Some(at(0)),
                watched: &self.watched,
                uids: &self.uids,
                ignore: &self.ignore,
                grant_bindings: &self.grants,
                sources: &self.sources,
                now: at(100),
            },
            removed_from_git: &self.removed_from_git,
            options: &self.options,
            now: at(100),
            changed: None,
        }
    }
}

#[test]
fn unauthorized_drift_is_reverted_and_announced_once() {
    let world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    let gate = FixedGate::default();
    let memory = Memory::default();
    let plan = plan(&world.inputs(), &memory, None, &gate);
    assert_eq!(plan.reverts, vec![0]);
    assert!(plan.diffs[1].in_sync());
    assert_eq!(plan.clean.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["api"]);
    assert_eq!(plan.judgements[&0].class, DriftClass::Unauthorized);
    assert!(plan.deletions.is_empty() && plan.wake.is_none());

    let outcome = Outcome { reverted: vec![0], ..Outcome::default() };
    let in_sync = drift::ObjectDiff::default();
    let inputs = world.inputs();
    let observed = observations(&inputs, &plan, &outcome, &in_sync);
    let status = status::observed(&world.old, None, None, (&observed, plan.managed), at(100));
    assert_eq!(status.drifted, Some(0), "a reverted object matches Git again");
    let notices = notices(&world.inputs(), &plan, &outcome, &status);
    let reasons: Vec<&str> = notices.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["DriftDetected"]);
}

#[test]
fn our_own_revert_is_not_repeated_and_a_fight_backs_off() {
    let world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    let gate = FixedGate::default();
    let web = world.parsed.objects[0].key.object_ref();

    // Left at this version by our last revert (a field the server keeps
    // changing back): reported, not reverted in a loop.
    let mut memory = Memory::default();
    memory.reverted.insert(web.clone(), "10".into());
    assert!(plan(&world.inputs(), &memory, None, &gate).reverts.is_empty());

    // Rewritten right after each of three reverts: contested, waits.
    let mut memory = Memory::default();
    for second in [97, 98, 99] {
        memory.contest.reverted(&web, at(second));
    }
    let plan = plan(&world.inputs(), &memory, None, &gate);
    assert!(plan.reverts.is_empty());
    assert_eq!(plan.contested, vec![0]);
    assert!(plan.wake.is_some_and(|wake| wake > at(100)), "it comes back when the wait is over");
}

#[test]
fn held_drift_wakes_the_pass_when_its_window_ends_and_codifies_after() {
    let mut world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    let mut gate = FixedGate::default();
    let hold = Decision::Hold { request: "alice-fix".into(), class: DriftClass::Authorized, until: at(400) };
    gate.verdicts.insert("web".into(), hold);
    let plan_held = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert!(plan_held.reverts.is_empty());
    assert_eq!(plan_held.wake, Some(at(400)));
    assert_eq!(plan_held.judgements[&0].action, DriftAction::Hold);

    // Ended and kept (windowEnd: Report): codified once, then not again.
    world.spec.remediation.window_end = RemediationAction::Report;
    let ended = Decision::Report { class: DriftClass::WindowEnded, request: Some("alice-fix".into()) };
    gate.verdicts.insert("web".into(), ended);
    let first = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!(first.codify, vec![("alice-fix".to_owned(), 0)]);
    gate.codified.insert("web".into());
    assert!(plan(&world.inputs(), &Memory::default(), None, &gate).codify.is_empty());
}

#[test]
fn undeclared_objects_are_judged_deleted_held_or_exempt() {
    let lives = vec![Some(live("web", 2, "10")), Some(live("api", 2, "11"))];
    let mut replica_set = extra("ReplicaSet", "apps", "replicasets", "web-6f7", at(50));
    replica_set.controller = Some(("apps/v1".into(), "Deployment".into(), "uid-web".into()));
    let mut leaving = extra("Deployment", "apps", "deployments", "going", at(50));
    leaving.deleting = true;
    let extras = vec![
        extra("Deployment", "apps", "deployments", "miner", at(50)),
        extra("ServiceAccount", "", "serviceaccounts", "backdoor", at(60)),
        extra("ServiceAccount", "", "serviceaccounts", "default", at(60)),
        extra("Deployment", "apps", "deployments", "legacy", at(-10)),
        replica_set,
        leaving,
    ];
    let mut world = World::new(lives, extras);
    world.uids.insert("uid-web".into(), KindRef { group: "apps".into(), kind: "Deployment".into() }.into());
    let mut gate = FixedGate::default();
    let hold = Decision::Hold { request: "alice-fix".into(), class: DriftClass::Authorized, until: at(400) };
    gate.verdicts.insert("backdoor".into(), hold);
    let memory = Memory::default();
    let plan = plan(&world.inputs(), &memory, None, &gate);

    let judged: Vec<(&str, DriftAction)> =
        plan.extras.iter().map(|(index, j)| (world.extras[*index].name.as_str(), j.action)).collect();
    assert_eq!(judged, [("miner", DriftAction::Revert), ("backdoor", DriftAction::Hold)]);
    assert_eq!(plan.deletions, vec![0], "the unauthorized one goes now; the held one waits");
    assert_eq!(plan.wake, Some(at(400)));
    // The gate looks at writes from just before its creation on.
    let asked = gate.asked.lock().unwrap();
    assert!(asked.contains(&("miner".to_owned(), Some(at(50) - SignedDuration::from_secs(1)))));
    drop(asked);

    let outcome = Outcome { deleted: vec![0], ..Outcome::default() };
    let in_sync = drift::ObjectDiff::default();
    let inputs = world.inputs();
    let observed = observations(&inputs, &plan, &outcome, &in_sync);
    let status = status::observed(&world.old, None, None, (&observed, plan.managed), at(100));
    let counts = status.drift_counts.clone().unwrap();
    assert_eq!((counts.undeclared, counts.authorized, status.managed), (1, 0, Some(2)));
    let listed = &status.drifted_objects[0];
    assert!(listed.undeclared && listed.object.name == "backdoor" && listed.action == Some(DriftAction::Hold));
    let notices = notices(&world.inputs(), &plan, &outcome, &status);
    let reasons: Vec<&str> = notices.iter().map(|n| n.reason).collect();
    assert_eq!(reasons, ["UndeclaredObject", "UndeclaredObject", "DriftHeld"]);
    assert!(notices[2].note.contains("created within AccessRequest alice-fix"), "{:?}", notices[2]);

    // Dry run: nothing is deleted, it would be.
    world.spec.dry_run = true;
    let dry = super::plan(&world.inputs(), &memory, None, &gate);
    assert!(dry.deletions.is_empty());
    assert_eq!(dry.extras[0].1.action, DriftAction::WouldRevert);
    // Removed from Git (the inventory has it): Git's, not a creation.
    world.spec.dry_run = false;
    world.removed_from_git.insert("uid-miner".into());
    let judged = super::plan(&world.inputs(), &memory, None, &gate);
    assert_eq!(judged.extras.iter().map(|(i, _)| world.extras[*i].name.as_str()).collect::<Vec<_>>(), ["backdoor"]);
    // Turned off: not looked at.
    world.extras.truncate(0);
    assert!(super::plan(&world.inputs(), &memory, None, &gate).extras.is_empty());
}

#[test]
fn a_codified_new_object_is_a_file_beside_the_declared_ones() {
    let parsed = declarations(&["web"]);
    let miner = extra("Deployment", "apps", "deployments", "miner", at(0));
    assert_eq!(new_manifest_path(&parsed, &miner), "shop-state/apps/deployment-miner.yaml");
    let empty = Arc::new(Declarations::from(ParsedSources::default()));
    assert_eq!(new_manifest_path(&empty, &miner), "deployment-miner.yaml");
}

#[test]
fn an_object_another_desired_state_owns_is_left_to_it() {
    let mut world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    let platform = crate::operator::drift::claims::Claimant {
        created: Some(at(-100)),
        namespace: "shop".into(),
        name: "platform".into(),
    };
    world.owners[0] = Some(platform);
    let gate = FixedGate::default();
    let memory = Memory::default();
    let plan = plan(&world.inputs(), &memory, None, &gate);
    assert!(plan.reverts.is_empty() && !plan.judgements.contains_key(&0), "no revert fight");
    let in_sync = drift::ObjectDiff::default();
    let inputs = world.inputs();
    let observed = observations(&inputs, &plan, &Outcome::default(), &in_sync);
    assert!(observed.is_empty(), "api is in sync; web is not observed here");
    assert_eq!(plan.managed, 1, "web is not counted as managed here");
    let status = status::observed(&world.old, None, None, (&observed, plan.managed), at(100));
    let notices = notices(&inputs, &plan, &Outcome::default(), &status);
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].reason, "ManagedElsewhere");
    assert!(notices[0].note.contains("managed by DesiredState shop/platform"), "{:?}", notices[0]);
}

/// The whole pass after the plan, as values: status, the next pass's
/// memory, the Events, the wake-up.
#[test]
fn a_pass_is_reported_remembered_and_a_recovered_source_announced() {
    use crate::operator::drift::report;
    let mut world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    world.old.conditions.push(crate::conditions::condition(
        &[],
        "SourceValid",
        false,
        "SignatureInvalid",
        "no trusted key signed it".into(),
        None,
        at(0),
    ));
    let gate = FixedGate::default();
    let memory = Memory::default();
    let inputs = world.inputs();
    let plan = plan(&inputs, &memory, None, &gate);
    assert_eq!(plan.reverts, vec![0]);
    // The revert of web was deferred (the rate limit): it is still drift.
    let outcome = Outcome { retry_after: Some(std::time::Duration::from_secs(1)), ..Outcome::default() };
    let current = report::declared_now(&world.parsed, &world.lives, &world.owners);
    assert_eq!(current.len(), 2);
    let done = report::Done {
        generation: Some(3),
        outcome: &outcome,
        signature: None,
        verified: true,
        refusal: None,
        unwatched: &[],
        inventory: Some(report::Kept {
            declared: current.len(),
            entries: &[],
            blocked: None,
            pruned: 0,
            config_map: "ops/inv",
        }),
        prune_blocked: None,
    };
    let status = report::status(&inputs, &plan, &memory, done);
    assert_eq!((status.drifted, status.observed_generation), (Some(1), Some(3)));
    assert_eq!(status.drifted_objects.iter().map(|d| d.object.name.as_str()).collect::<Vec<_>>(), ["web"]);

    let reasons = |refused| {
        let notices = report::notices(&inputs, &plan, &outcome, &memory, (&status, refused));
        notices.into_iter().map(|n| n.reason).collect::<Vec<_>>()
    };
    assert_eq!(reasons(false), ["DriftDetected", "SourceAccepted"]);
    assert_eq!(reasons(true), ["DriftDetected"], "a refusal that stands is announced by the executor");

    assert_eq!(report::next_pass(plan.wake, &[outcome.retry_after, None], at(100)), outcome.retry_after);
    let last = report::remembered(&inputs, plan, &outcome);
    assert_eq!(last.drifting, [0].into());
    assert_eq!(last.versions, [Some("10".to_owned()), Some("11".to_owned())]);
}

/// A pass told which objects changed since the last one over the same
/// parse diffs only those and judges them with the drifting ones: the same
/// plan a full pass makes, at a cost set by what changed and drifts.
#[test]
fn a_pass_that_knows_what_changed_plans_what_a_full_pass_would() {
    use crate::operator::drift::report;
    let gate = FixedGate::default();
    let spec = |world: &mut World| world.spec.remediation.unauthorized = RemediationAction::Report;
    // web drifts (5 replicas, Git says 2); api is in sync.
    let mut world = World::new(vec![Some(live("web", 5, "10")), Some(live("api", 2, "11"))], Vec::new());
    spec(&mut world);
    let first = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!((first.differing.iter().copied().collect::<Vec<_>>(), first.managed), (vec![0], 2));
    let last = report::remembered(&world.inputs(), first, &Outcome::default());

    // api is edited; web is not.
    world.lives[1] = Some(live("api", 7, "12"));
    let changed = declared(&[1]);
    let mut inputs = world.inputs();
    inputs.changed = Some(&changed);
    gate.asked.lock().unwrap().clear();
    let followed = plan(&inputs, &Memory::default(), Some(last), &gate);
    let full = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!(followed.differing, full.differing);
    assert_eq!(followed.judgements, full.judgements);
    assert_eq!(followed.diffs, full.diffs);
    assert_eq!(followed.versions, full.versions);
    assert_eq!(followed.managed, full.managed);
    assert_eq!(followed.was_drifting, Some([0].into()), "what the last pass left drifting");
    let asked: Vec<String> = gate.asked.lock().unwrap().iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(asked[..2], ["web".to_owned(), "api".to_owned()], "only the differing objects are judged");
    let notices = notices(&inputs, &followed, &Outcome::default(), &DesiredStateStatus::default());
    let detected: Vec<&str> = notices.iter().map(|n| n.note.as_str()).collect();
    assert_eq!(
        detected,
        ["Deployment shop/api differs from Git: /spec/replicas (changed)"],
        "web was announced before"
    );

    // Back in sync: api is seen clean, and no longer differs.
    let last = report::remembered(&inputs, followed, &Outcome::default());
    world.lives[1] = Some(live("api", 2, "13"));
    let mut inputs = world.inputs();
    inputs.changed = Some(&changed);
    let followed = plan(&inputs, &Memory::default(), Some(last), &gate);
    assert_eq!(followed.differing, [0].into());
    assert_eq!(followed.clean.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["api"], "web was not diffed again");

    // Told nothing of web, the pass does not read it: the watches name
    // every change (and a change they cannot name makes a full pass).
    let last = report::remembered(&inputs, followed, &Outcome::default());
    world.lives[0] = Some(live("web", 2, "14"));
    let nothing = declared(&[]);
    let mut inputs = world.inputs();
    inputs.changed = Some(&nothing);
    let followed = plan(&inputs, &Memory::default(), Some(last), &gate);
    assert_eq!(followed.differing, [0].into());
    assert!(followed.clean.is_empty());
}

/// A pass that follows named changes of these declared objects (and no
/// undeclared ones).
fn declared(indices: &[usize]) -> Followed {
    Followed { declared: indices.iter().copied().collect(), undeclared: Some(Default::default()) }
}

#[test]
fn a_pass_that_follows_undeclared_changes_judges_those_named_and_those_left() {
    use crate::operator::drift::report;
    let lives = vec![Some(live("web", 2, "10")), Some(live("api", 2, "11"))];
    let mut replica_set = extra("ReplicaSet", "apps", "replicasets", "web-6f7", at(50));
    replica_set.controller = Some(("apps/v1".into(), "Deployment".into(), "uid-web".into()));
    let backdoor = extra("ServiceAccount", "", "serviceaccounts", "backdoor", at(60));
    let mut world = World::new(lives, vec![replica_set, backdoor]);
    world.extras.sort_by(|a, b| (&a.key, &a.name).cmp(&(&b.key, &b.name)));
    world.watched.insert(KindRef { group: "apps".into(), kind: "ReplicaSet".into() });
    world.uids.insert("uid-web".into(), KindRef { group: "apps".into(), kind: "Deployment".into() }.into());
    world.spec.remediation.unauthorized = RemediationAction::Report;
    let mut gate = FixedGate::default();
    let hold = Decision::Hold { request: "alice-fix".into(), class: DriftClass::Authorized, until: at(400) };
    gate.verdicts.insert("backdoor".into(), hold);
    let judged = |plan: &Plan, world: &World| -> Vec<(String, DriftAction)> {
        plan.extras.iter().map(|(index, j)| (world.extras[*index].name.clone(), j.action)).collect()
    };
    let first = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!(judged(&first, &world), [("backdoor".to_owned(), DriftAction::Hold)]);
    let last = report::remembered(&world.inputs(), first, &Outcome::default());

    // A Deployment nobody declared appears: it, and the held one (whose
    // window may have ended), are judged; the ReplicaSet is not looked at.
    world.extras.push(extra("Deployment", "apps", "deployments", "miner", at(70)));
    world.extras.sort_by(|a, b| (&a.key, &a.name).cmp(&(&b.key, &b.name)));
    let named = Followed {
        declared: Default::default(),
        undeclared: Some([(key("Deployment", "apps", "deployments"), "miner".to_owned())].into()),
    };
    let mut inputs = world.inputs();
    inputs.changed = Some(&named);
    gate.asked.lock().unwrap().clear();
    let followed = plan(&inputs, &Memory::default(), Some(last), &gate);
    let full = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!(judged(&followed, &world), judged(&full, &world));
    assert_eq!(
        judged(&followed, &world),
        [("backdoor".to_owned(), DriftAction::Hold), ("miner".to_owned(), DriftAction::Report)]
    );
    let asked = gate.asked.lock().unwrap()[..2].iter().map(|(name, _)| name.clone()).collect::<Vec<_>>();
    assert_eq!(asked, ["backdoor", "miner"], "in the extras' order");
    let notices = notices(&inputs, &followed, &Outcome::default(), &DesiredStateStatus::default());
    assert_eq!(notices.iter().filter(|n| n.note.contains("miner")).count(), 1, "the new one is announced");
    assert!(!notices.iter().any(|n| n.note.contains("backdoor")), "the held one was announced before");
    let last = report::remembered(&inputs, followed, &Outcome::default());

    // The ReplicaSet's Deployment goes: its exemption rested on that uid,
    // so a pass told that an undeclared object went judges every one.
    world.uids.remove("uid-web");
    let nothing = declared(&[]);
    let mut inputs = world.inputs();
    inputs.changed = Some(&nothing);
    let told_nothing = plan(&inputs, &Memory::default(), Some(last), &gate);
    assert!(!judged(&told_nothing, &world).iter().any(|(name, _)| name == "web-6f7"), "told nothing of it: not judged");
    let last = report::remembered(&inputs, told_nothing, &Outcome::default());
    let all = Followed { declared: Default::default(), undeclared: None };
    let mut inputs = world.inputs();
    inputs.changed = Some(&all);
    let followed = plan(&inputs, &Memory::default(), Some(last), &gate);
    let full = plan(&world.inputs(), &Memory::default(), None, &gate);
    assert_eq!(judged(&followed, &world), judged(&full, &world));
    assert!(judged(&followed, &world).contains(&("web-6f7".to_owned(), DriftAction::Report)), "its owner is gone");

    // No last pass to follow: every one is judged, whatever the pass was told.
    let mut inputs = world.inputs();
    inputs.changed = Some(&nothing);
    assert_eq!(judged(&plan(&inputs, &Memory::default(), None, &gate), &world), judged(&full, &world));
}
