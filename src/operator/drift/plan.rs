//! The drift reconcile's decisions, as a value. No client, no clock: what
//! was read (declared objects, the live ones, undeclared objects, the
//! memory of the last pass) and the gate's verdicts go in; the diffs, which
//! objects to revert or delete, what to codify, the status and the Events
//! come out. `execute` carries it out.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::DynamicObject;
use kube::runtime::events::EventType;

use super::memory::{LastDiffs, Memory};
use super::status::{self, Judgement};
use super::watches::WatchKey;
use crate::api::{self, Attribution, DesiredStateSpec, DesiredStateStatus, DriftAction, DriftClass, RevertRecord};
use crate::drift::kept::{self, Declarations};
use crate::drift::{self, DiffOptions, undeclared};
use crate::gate::{Decision, Remediation};
use crate::operator::gate::{Subject, Verdict};

/// What the plan asks of the gate: read-only lookups in its caches.
pub(super) trait Gate {
    fn verdict(&self, subject: &Subject<'_>, remediation: Remediation, now: Timestamp) -> Verdict;
    /// Whether `request` already lists `object` among its codified changes.
    fn codified(&self, namespace: &str, request: &str, object: &api::ObjectRef) -> bool;
}

/// An object of an owned kind that no source declares, as its metadata
/// watch (or the declared kind's watch) has it.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Extra {
    /// Shared by every object of the watch (there may be tens of thousands).
    pub key: Arc<WatchKey>,
    pub name: String,
    pub uid: String,
    pub created: Option<Timestamp>,
    /// Already being deleted (a deletionTimestamp is set).
    pub deleting: bool,
    /// The controller owner reference: apiVersion, kind, uid.
    pub controller: Option<(String, String, String)>,
}

impl Extra {
    pub fn object_ref(&self) -> api::ObjectRef {
        let api_version = if self.key.group.is_empty() {
            self.key.version.clone()
        } else {
            format!("{}/{}", self.key.group, self.key.version)
        };
        api::ObjectRef {
            api_version,
            kind: self.key.kind.clone(),
            namespace: self.key.namespace.clone(),
            name: self.name.clone(),
        }
    }

    /// Where the object of `key` and `name` is (or would go) in `extras`,
    /// which are kept in the order of watch and name.
    pub fn position(extras: &[Extra], key: &WatchKey, name: &str) -> Result<usize, usize> {
        extras.binary_search_by(|e| (&*e.key, e.name.as_str()).cmp(&(key, name)))
    }

    fn candidate(&self) -> undeclared::Candidate<'_> {
        undeclared::Candidate {
            group: &self.key.group,
            kind: &self.key.kind,
            namespace: self.key.namespace.as_deref().unwrap_or_default(),
            name: &self.name,
            created: self.created,
            controller: self.controller.as_ref().map(|(api_version, kind, uid)| undeclared::Owner {
                api_version,
                kind,
                uid,
            }),
        }
    }
}

/// Everything a plan is made from.
pub(super) struct Inputs<'a> {
    pub spec: &'a DesiredStateSpec,
    pub old: &'a DesiredStateStatus,
    pub parsed: &'a Arc<Declarations>,
    /// Per declared object: its watch (None: a kind discovery does not know).
    pub resources: &'a [Option<WatchKey>],
    /// Per declared object: the live object, if it exists.
    pub lives: &'a [Option<Arc<DynamicObject>>],
    pub extras: &'a [Extra],
    /// Per declared object: the (older) DesiredState that owns it instead
    /// of this one. Such an object is neither diffed nor acted on here.
    pub owners: &'a [Option<super::claims::Claimant>],
    pub known: undeclared::Known<'a>,
    /// uids of objects an earlier revision declared (the inventory's):
    /// Git's removals, pruned or left alone, never undeclared drift.
    pub removed_from_git: &'a BTreeSet<String>,
    pub options: &'a DiffOptions,
    pub now: Timestamp,
    /// Some: only what this names may have changed since the last pass
    /// over the same parse, whose diffs the plan is given. None: anything
    /// may have.
    pub changed: Option<&'a Followed>,
}

/// What may have changed since the last pass over the same parse, in a
/// pass that follows the changes the watches named.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Followed {
    /// Declared objects, by index.
    pub declared: BTreeSet<usize>,
    /// Undeclared objects, by watch and name. None: any of them (one went
    /// whose uid may have exempted others).
    pub undeclared: Option<BTreeSet<(WatchKey, String)>>,
}

/// What to do, and what it means for status.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Per declared object: its diff, and the live resourceVersion it was made at.
    pub diffs: Vec<drift::ObjectDiff>,
    pub versions: Vec<Option<String>>,
    /// The declared objects whose diff is not in sync (by index): all that
    /// is judged and shown, so that their number, not all objects', sets
    /// the cost of a pass.
    pub differing: BTreeSet<usize>,
    /// Declared objects this DesiredState manages (no older one does).
    pub managed: usize,
    /// Declared objects seen matching Git in this pass.
    pub clean: Vec<api::ObjectRef>,
    /// The gate's verdict on each differing declared object (by index).
    pub judgements: BTreeMap<usize, Judgement>,
    /// What the last pass over the same parse left drifting (None: no such pass).
    pub was_drifting: Option<BTreeSet<usize>>,
    /// The undeclared objects the last pass left in place: uid -> watch and name.
    pub seen_undeclared: HashMap<String, (WatchKey, String)>,
    /// Declared objects to put back now (by index).
    pub reverts: Vec<usize>,
    /// Declared objects whose window ended, to codify on their request.
    pub codify: Vec<(String, usize)>,
    /// Undeclared objects that are drift (index into the inputs' extras), judged.
    pub extras: Vec<(usize, Judgement)>,
    /// Undeclared objects to delete now (index into `extras`).
    pub deletions: Vec<usize>,
    /// Undeclared objects whose window ended, to codify (index into `extras`).
    pub codify_extras: Vec<(String, usize)>,
    /// Declared objects someone keeps rewriting after each revert: their
    /// revert waits (by index).
    pub contested: Vec<usize>,
    /// When to look again (a held change's window ends, a contested
    /// object's wait is over).
    pub wake: Option<Timestamp>,
}

/// Writes up to this long before an undeclared object's creation second
/// count toward it (its creationTimestamp is whole seconds).
const CREATED_SLACK: SignedDuration = SignedDuration::from_secs(1);

/// Makes the plan; `previous` is what the last pass remembered of its diffs.
pub(super) fn plan(inputs: &Inputs<'_>, memory: &Memory, previous: Option<LastDiffs>, gate: &dyn Gate) -> Plan {
    let mut plan = Plan::default();
    diff_declared(inputs, previous, &mut plan);
    let remediation = Remediation {
        unauthorized: inputs.spec.remediation.unauthorized,
        window_end: inputs.spec.remediation.window_end,
        hold_by_scope: inputs.spec.attribution == Some(crate::api::AttributionPolicy::Scope),
    };
    let revert = if inputs.spec.dry_run { DriftAction::WouldRevert } else { DriftAction::Revert };

    // Declared objects: the gate's verdict on each drifted one.
    for &index in &plan.differing {
        let declared = &inputs.parsed.objects[index];
        let judgement = match &inputs.resources[index] {
            _ if inputs.owners[index].is_some() => None,
            Some(key) => {
                let object = declared.key.object_ref();
                let listed = inputs.old.drifted_objects.iter().find(|d| d.object == object);
                let since = listed.map_or(inputs.now, |d| d.since.0);
                // After a restart or a takeover this process has not seen the
                // object in sync: the status remembers when an earlier one did.
                let clean_at = memory
                    .clean_at
                    .get(&object)
                    .copied()
                    .or_else(|| listed.and_then(|d| d.in_sync_at.as_ref()).map(|t| t.0));
                let subject = Subject {
                    clean_at,
                    namespace: declared.key.namespace.as_deref(),
                    group: &key.group,
                    plural: &key.plural,
                    name: &declared.key.name,
                    since,
                };
                judgement(gate.verdict(&subject, remediation, inputs.now), revert, clean_at, inputs.now)
            }
            None => None,
        };
        if let Some(judgement) = judgement {
            plan.judgements.insert(index, judgement);
        }
    }
    for (&index, judgement) in &plan.judgements {
        let object = inputs.parsed.objects[index].key.object_ref();
        if let Some(request) = to_codify(judgement, &object, gate) {
            plan.codify.push((request, index));
        }
        if judgement.action != DriftAction::Revert || inputs.resources[index].is_none() {
            continue;
        }
        if memory.is_rejected(inputs.parsed, index) {
            continue;
        }
        // Our own last revert left the object at this version: reverting
        // again would change nothing, so it stays reported instead of looping.
        let version = inputs.lives[index].as_ref().and_then(|l| l.metadata.resource_version.as_ref());
        if version.is_some() && memory.reverted.get(&object) == version {
            continue;
        }
        let next = memory.contest.next_revert(&object, inputs.now);
        if next > inputs.now {
            plan.contested.push(index);
            plan.wake = earliest(plan.wake, next);
            continue;
        }
        plan.reverts.push(index);
    }

    // Undeclared objects: exempt, or judged like any drift (created under
    // a window: held until it ends; else removed at once or reported).
    for index in undeclared_to_judge(inputs, &plan) {
        let extra = &inputs.extras[index];
        if extra.deleting || inputs.removed_from_git.contains(&extra.uid) {
            continue;
        }
        match undeclared::exemption(&extra.candidate(), &inputs.known) {
            Some(undeclared::Exemption::GrantPending) => {
                // Judged once the caches have had time to know its request.
                if let Some(created) = extra.created {
                    plan.wake = earliest(plan.wake, created + undeclared::GRANT_CACHE_GRACE);
                }
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        let object = extra.object_ref();
        let listed = inputs.old.drifted_objects.iter().find(|d| d.undeclared && d.object == object);
        let created = extra.created.unwrap_or(inputs.now);
        let clean_at = Some(created - CREATED_SLACK);
        let subject = Subject {
            clean_at,
            namespace: extra.key.namespace.as_deref(),
            group: &extra.key.group,
            plural: &extra.key.plural,
            name: &extra.name,
            since: listed.map_or(created, |d| d.since.0.min(created)),
        };
        let Some(judgement) = judgement(gate.verdict(&subject, remediation, inputs.now), revert, None, inputs.now)
        else {
            continue;
        };
        let at = plan.extras.len();
        if let Some(request) = to_codify(&judgement, &object, gate) {
            plan.codify_extras.push((request, at));
        }
        if judgement.action == DriftAction::Revert {
            plan.deletions.push(at);
        }
        plan.extras.push((index, judgement));
    }

    let held = plan.judgements.values().chain(plan.extras.iter().map(|(_, j)| j));
    for judgement in held.filter(|j| j.action == DriftAction::Hold) {
        if let Some(at) = judgement.revert_at {
            plan.wake = earliest(plan.wake, at);
        }
    }
    plan
}

/// The undeclared objects to judge, by index into the extras, in order:
/// every one; or, in a pass that follows named changes, those named and
/// those the last pass left in place (their verdict follows the gate's:
/// a window ends, a grant opens). An exemption of one not named stands:
/// what it rests on (the spec, grants, sources, the owner's uid) makes a
/// full pass or [`Followed::undeclared`] None when it changes.
fn undeclared_to_judge(inputs: &Inputs<'_>, plan: &Plan) -> Vec<usize> {
    // What the last pass left is known only when its plan is the one followed.
    let followed = inputs.changed.filter(|_| plan.was_drifting.is_some());
    let Some(named) = followed.and_then(|followed| followed.undeclared.as_ref()) else {
        return (0..inputs.extras.len()).collect();
    };
    let seen = &plan.seen_undeclared;
    let find = |(key, name): &(WatchKey, String)| Extra::position(inputs.extras, key, name).ok();
    let mut indices: Vec<usize> = named.iter().chain(seen.values()).filter_map(find).collect();
    indices.sort_unstable();
    indices.dedup();
    indices
}

/// The request whose codified changes get `object`: a window ended with it
/// still changed, and it is not already listed there (a change that is kept
/// and reported is codified once).
fn to_codify(judgement: &Judgement, object: &api::ObjectRef, gate: &dyn Gate) -> Option<String> {
    let request = judgement.request.as_ref().filter(|_| judgement.class == DriftClass::WindowEnded)?;
    let namespace = object.namespace.as_deref().unwrap_or_default();
    (judgement.action == DriftAction::Revert || !gate.codified(namespace, request, object)).then(|| request.clone())
}

fn earliest(a: Option<Timestamp>, b: Timestamp) -> Option<Timestamp> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// The diffs of the declared objects: an object whose live resourceVersion
/// is what it was at the last pass over the same parse has the same diff,
/// so one edit costs one diff, not one per object; and when the pass knows
/// which objects changed, only those are looked at.
fn diff_declared(inputs: &Inputs<'_>, previous: Option<LastDiffs>, plan: &mut Plan) {
    let mut previous = previous.filter(|p| Arc::ptr_eq(&p.sources, inputs.parsed));
    if let Some(previous) = &mut previous {
        plan.was_drifting = Some(std::mem::take(&mut previous.drifting));
        plan.seen_undeclared = std::mem::take(&mut previous.undeclared);
    }
    let objects = inputs.parsed.objects.len();
    match (inputs.changed, previous) {
        (Some(changed), Some(previous)) if previous.diffs.len() == objects && previous.versions.len() == objects => {
            (plan.diffs, plan.versions) = (previous.diffs, previous.versions);
            (plan.differing, plan.managed) = (previous.differing, previous.managed);
            for &index in &changed.declared {
                let (diff, version) = diff_one(inputs, index, None, &mut plan.clean);
                if diff.in_sync() || inputs.owners[index].is_some() {
                    plan.differing.remove(&index);
                } else {
                    plan.differing.insert(index);
                }
                (plan.diffs[index], plan.versions[index]) = (diff, version);
            }
        }
        (_, mut previous) => {
            plan.diffs.reserve(objects);
            plan.versions.reserve(objects);
            for index in 0..objects {
                let seen = previous.as_mut().and_then(|p| {
                    let version = p.versions.get_mut(index).map(std::mem::take)?;
                    Some((version, p.diffs.get_mut(index).map(std::mem::take)?))
                });
                let (diff, version) = diff_one(inputs, index, seen, &mut plan.clean);
                if !diff.in_sync() {
                    plan.differing.insert(index);
                }
                plan.managed += usize::from(inputs.owners[index].is_none());
                plan.diffs.push(diff);
                plan.versions.push(version);
            }
        }
    }
}

/// One declared object's diff, and the live resourceVersion it was made
/// at: `seen` again if the object is still at the version it was made at.
/// An object an older DesiredState owns is not diffed.
fn diff_one(
    inputs: &Inputs<'_>,
    index: usize,
    seen: Option<(Option<String>, drift::ObjectDiff)>,
    clean: &mut Vec<api::ObjectRef>,
) -> (drift::ObjectDiff, Option<String>) {
    if inputs.owners[index].is_some() {
        return (drift::ObjectDiff::default(), None);
    }
    let declared = &inputs.parsed.objects[index];
    let live = inputs.lives[index].as_deref();
    let version = live.and_then(|l| l.metadata.resource_version.clone());
    if let Some((seen, diff)) = seen
        && seen == version
        && version.is_some()
    {
        return (diff, version);
    }
    let live = live.and_then(kept::live_value);
    let diff = drift::diff(&declared.object(), live.as_ref(), inputs.options);
    if diff.in_sync() {
        clean.push(declared.key.object_ref());
    }
    (diff, version)
}

/// The gate's verdict as status shows it (None: nothing to do).
fn judgement(
    verdict: Verdict,
    revert: DriftAction,
    in_sync_at: Option<Timestamp>,
    now: Timestamp,
) -> Option<Judgement> {
    let attribution = |class: DriftClass| match class {
        DriftClass::AuthorizedByScope => Some(Attribution::Scope),
        _ if verdict.from_audit => Some(Attribution::AuditLog),
        _ => None,
    };
    Some(match verdict.decision {
        Decision::Hold { request, class, until } => Judgement {
            class,
            request: Some(request),
            attribution: attribution(class),
            action: DriftAction::Hold,
            revert_at: Some(until),
            in_sync_at,
        },
        Decision::Revert { class, request } => Judgement {
            class,
            request,
            attribution: attribution(class),
            action: revert,
            revert_at: Some(now),
            in_sync_at,
        },
        Decision::Report { class, request } => Judgement {
            class,
            request,
            attribution: attribution(class),
            action: DriftAction::Report,
            revert_at: None,
            in_sync_at,
        },
        Decision::Nothing => return None,
    })
}

/// What carrying out a plan did.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Declared objects put back (indices, sorted).
    pub reverted: Vec<usize>,
    /// The uid each reverted object has now (a re-created one has a new one).
    pub uids: Vec<(usize, String)>,
    /// Undeclared objects deleted (indices into the plan's extras, sorted).
    pub deleted: Vec<usize>,
    pub last: Option<RevertRecord>,
    /// Reverts deferred by the rate limit or failed: when to try again.
    pub retry_after: Option<std::time::Duration>,
}

/// What status observes of this pass: every declared object (a reverted
/// one matches Git again) and every undeclared one left in place.
/// Objects in sync are counted (`plan.managed`), not listed.
pub(super) fn observations<'a>(
    inputs: &'a Inputs<'_>,
    plan: &'a Plan,
    outcome: &Outcome,
    in_sync: &'a drift::ObjectDiff,
) -> Vec<status::Observed<'a>> {
    let declared =
        plan.differing.iter().filter(|index| inputs.owners[**index].is_none()).map(|&index| status::Observed {
            object: inputs.parsed.objects[index].key.object_ref(),
            diff: if outcome.reverted.contains(&index) { in_sync } else { &plan.diffs[index] },
            judgement: plan.judgements.get(&index),
            undeclared: false,
        });
    let extras = plan.extras.iter().enumerate().filter(|(at, _)| !outcome.deleted.contains(at)).map(
        |(_, (index, judgement))| status::Observed {
            object: inputs.extras[*index].object_ref(),
            diff: in_sync,
            judgement: Some(judgement),
            undeclared: true,
        },
    );
    declared.chain(extras).collect()
}

/// An Event to publish on the DesiredState.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Notice {
    pub type_: EventType,
    pub reason: &'static str,
    pub note: String,
}

impl Notice {
    fn warning(reason: &'static str, note: String) -> Self {
        Notice { type_: EventType::Warning, reason, note }
    }
    pub fn normal(reason: &'static str, note: String) -> Self {
        Notice { type_: EventType::Normal, reason, note }
    }
}

/// The Events this pass's observations call for: drift that started,
/// undeclared objects newly found, changes newly held, dry-run reverts, and
/// drift that ended by itself (a revert or a deletion announces itself).
pub(super) fn notices(inputs: &Inputs<'_>, plan: &Plan, outcome: &Outcome, new: &DesiredStateStatus) -> Vec<Notice> {
    let old = inputs.old;
    let mut notices = Vec::new();
    let object_ref = |index: usize| inputs.parsed.objects[index].key.object_ref();
    // What was drifting before: the last pass over the same parse knows
    // every object; otherwise status (which lists only the first ones).
    let was_drifting = |index: usize| match &plan.was_drifting {
        Some(drifting) => drifting.contains(&index),
        None => old.drifted_objects.iter().any(|d| d.object == object_ref(index)),
    };
    for &index in &plan.differing {
        if was_drifting(index) && !outcome.reverted.contains(&index) {
            continue;
        }
        let object = describe(&object_ref(index));
        let fields = status::fields(&plan.diffs[index]).join(", ");
        notices.push(Notice::warning("DriftDetected", format!("{object} differs from Git: {fields}")));
    }
    for (index, judgement) in &plan.extras {
        let extra = &inputs.extras[*index];
        let listed = old.drifted_objects.iter().any(|d| d.undeclared && d.object == extra.object_ref());
        if plan.seen_undeclared.contains_key(extra.uid.as_str()) || listed {
            continue;
        }
        let object = describe(&extra.object_ref());
        let what = match judgement.action {
            DriftAction::Hold => format!(
                "created within AccessRequest {}; removed when its window ends",
                judgement.request.as_deref().unwrap_or_default()
            ),
            DriftAction::Revert => "no approved access window covers its creation; deleting it".into(),
            DriftAction::WouldRevert => "dry run: it would be deleted".into(),
            DriftAction::Report => "reported (remediation is Report)".into(),
        };
        notices.push(Notice::warning("UndeclaredObject", format!("{object} is not declared in Git: {what}")));
    }
    for drifted in &new.drifted_objects {
        let was = old.drifted_objects.iter().find(|d| d.object == drifted.object);
        let newly = |action| drifted.action == Some(action) && was.is_none_or(|w| w.action != Some(action));
        let object = describe(&drifted.object);
        let request = drifted.access_request.clone().unwrap_or_default();
        if newly(DriftAction::Hold) {
            let until = drifted.revert_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let how = if drifted.class == DriftClass::AuthorizedByScope { " (by scope: no audit record)" } else { "" };
            let verb = if drifted.undeclared { "created" } else { "changed" };
            let note = format!("{object} {verb} within AccessRequest {request}{how}; held until {until}");
            notices.push(Notice::normal("DriftHeld", note));
        } else if newly(DriftAction::WouldRevert) && !drifted.undeclared {
            notices.push(Notice::warning(
                "WouldRevert",
                format!("dry run: {object} would be reverted ({:?})", drifted.class),
            ));
        }
    }
    let (_, stopped) = status::transitions(old, new);
    let deleted: BTreeSet<api::ObjectRef> =
        outcome.deleted.iter().map(|at| inputs.extras[plan.extras[*at].0].object_ref()).collect();
    for object in &stopped {
        if outcome.reverted.iter().any(|&i| object_ref(i) == *object) || deleted.contains(object) {
            continue;
        }
        let undeclared = old.drifted_objects.iter().any(|d| d.undeclared && d.object == *object);
        let note = if undeclared {
            format!("{} is gone (or no longer owned)", describe(object))
        } else {
            format!("{} matches Git again", describe(object))
        };
        notices.push(Notice::normal("DriftResolved", note));
    }
    let conflicted = old.conditions.iter().any(|c| c.type_ == "Conflict" && c.status == "True");
    if !conflicted && let Some((index, Some(owner))) = inputs.owners.iter().enumerate().find(|(_, o)| o.is_some()) {
        let others = inputs.owners.iter().filter(|o| o.is_some()).count() - 1;
        let more = if others > 0 { format!(" (and {others} more)") } else { String::new() };
        let object = describe(&object_ref(index));
        let note = format!(
            "{object}{more} is declared here but managed by DesiredState {owner}, which declared it first: left to it"
        );
        notices.push(Notice::warning("ManagedElsewhere", note));
    }
    for index in &plan.contested {
        let was = old.conditions.iter().any(|c| c.type_ == "Contested" && c.status == "True");
        if !was {
            let object = describe(&object_ref(*index));
            let note = format!(
                "{object} is rewritten right after each revert (a webhook, an autoscaler, another tool?): reverts back off"
            );
            notices.push(Notice::warning("Contested", note));
        }
    }
    notices
}

/// Where a codified undeclared object goes: a new file beside the
/// declared objects of its namespace (in the first one's ConfigMap and
/// directory), named after its kind and name.
pub(super) fn new_manifest_path(parsed: &Declarations, extra: &Extra) -> String {
    let file = format!("{}-{}.yaml", extra.key.kind.to_lowercase(), extra.name);
    let beside = parsed.objects.iter().find(|d| d.key.namespace == extra.key.namespace).or(parsed.objects.first());
    match beside {
        Some(declared) => {
            // Keys are paths with `/` written as `__` (see `publish`).
            let path = declared.origin.key.replace("__", "/");
            match path.rsplit_once('/') {
                Some((directory, _)) => format!("{}/{directory}/{file}", declared.origin.config_map),
                None => format!("{}/{file}", declared.origin.config_map),
            }
        }
        None => file,
    }
}

pub(super) fn describe(object: &api::ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
