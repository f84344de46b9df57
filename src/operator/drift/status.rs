//! DesiredState status from what a reconcile observed. Pure: the same
//! observations give the same status, so an unchanged world writes nothing.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;

use crate::api::{Attribution, DesiredStateStatus, DriftAction, DriftClass, DriftCounts, DriftedObject, ObjectRef};
use crate::conditions::condition;
use crate::drift::signature::SignatureError;
use crate::drift::{ObjectDiff, SourceErrors, inventory};

/// At most this many drifted objects are listed; `drifted` counts them all.
pub const MAX_LISTED: usize = 50;
pub use crate::drift::diff::{MAX_FIELDS, fields};
/// At most this many source errors in the condition message.
const MAX_ERRORS: usize = 10;

/// What one reconcile saw of one declared object.
pub struct Observed<'a> {
    pub object: ObjectRef,
    pub diff: &'a ObjectDiff,
    /// The gate's verdict on a drifted object (None: not judged, which
    /// reads as unauthorized and reported).
    pub judgement: Option<&'a Judgement>,
    /// An object no source declares (its diff is not read).
    pub undeclared: bool,
}

/// What the gate decided about one drifted object, as status shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub class: DriftClass,
    pub request: Option<String>,
    pub attribution: Option<Attribution>,
    pub action: DriftAction,
    pub revert_at: Option<Timestamp>,
    /// When the object was last seen matching Git, if known: only writes
    /// after it are part of this drift.
    pub in_sync_at: Option<Timestamp>,
}

/// Status after a reconcile of valid sources.
pub fn observed(
    old: &DesiredStateStatus,
    generation: Option<i64>,
    revision: Option<String>,
    (observed, managed): (&[Observed<'_>], usize),
    now: Timestamp,
) -> DesiredStateStatus {
    let mut drifted: Vec<DriftedObject> = observed
        .iter()
        .filter(|o| o.undeclared || !o.diff.in_sync())
        .map(|o| {
            // Drift keeps the time it was first seen for as long as it lasts.
            let since =
                old.drifted_objects.iter().find(|d| d.object == o.object).map(|d| d.since.clone()).unwrap_or(Time(now));
            let judgement = o.judgement;
            DriftedObject {
                object: o.object.clone(),
                since,
                class: judgement.map_or(DriftClass::Unauthorized, |j| j.class),
                fields: if o.undeclared { Vec::new() } else { fields(o.diff) },
                access_request: judgement.and_then(|j| j.request.clone()),
                attribution: judgement.and_then(|j| j.attribution),
                action: judgement.map(|j| j.action),
                revert_at: judgement.and_then(|j| j.revert_at).map(Time),
                in_sync_at: judgement.and_then(|j| j.in_sync_at).map(MicroTime),
                undeclared: o.undeclared,
            }
        })
        .collect();
    let total = i64::try_from(drifted.len()).unwrap_or(i64::MAX);
    let mut counts = DriftCounts::default();
    for object in &drifted {
        if object.undeclared {
            counts.undeclared += 1;
            continue;
        }
        match object.class {
            DriftClass::Unauthorized => counts.unauthorized += 1,
            DriftClass::Authorized => counts.authorized += 1,
            DriftClass::AuthorizedByScope => counts.authorized_by_scope += 1,
            DriftClass::WindowEnded => counts.window_ended += 1,
        }
    }
    drifted.sort_by(|a, b| (a.since.0, &a.object).cmp(&(b.since.0, &b.object)));
    drifted.truncate(MAX_LISTED);
    let managed = i64::try_from(managed).unwrap_or(i64::MAX);
    let differing = total - counts.undeclared;
    let mut message = if differing == 0 {
        format!("all {managed} objects match Git")
    } else {
        format!("{differing} of {managed} objects differ from Git")
    };
    if counts.undeclared > 0 {
        message.push_str(&format!("; {} objects are not declared in Git", counts.undeclared));
    }
    let conditions = vec![
        condition(&old.conditions, "Ready", true, "Reconciled", format!("watching {managed} objects"), generation, now),
        condition(
            &old.conditions,
            "Drifted",
            total > 0,
            if total > 0 { "DriftDetected" } else { "InSync" },
            message,
            generation,
            now,
        ),
        condition(
            &old.conditions,
            "SourceValid",
            true,
            "Verified",
            "the sources are signed by a trusted key, parse and stay in scope".into(),
            generation,
            now,
        ),
    ];
    DesiredStateStatus {
        observed_generation: generation,
        revision,
        managed: Some(managed),
        in_sync: Some(managed - differing),
        drifted: Some(total),
        drift_counts: Some(counts),
        drifted_objects: drifted,
        reverts: old.reverts,
        last_revert: old.last_revert.clone(),
        signature: old.signature.clone(),
        inventory: old.inventory.clone(),
        conditions,
    }
}

/// Everything a pass of valid (or last verified) sources tells status.
pub struct Pass<'a> {
    pub old: &'a DesiredStateStatus,
    pub generation: Option<i64>,
    pub revision: Option<String>,
    /// The objects that differ from Git, and those not declared.
    pub observed: &'a [Observed<'a>],
    /// Declared objects this DesiredState manages (in sync or not).
    pub managed: usize,
    /// The signature that verified the enforced sources.
    pub signature: Option<crate::drift::signature::Verified>,
    /// Whether signatures are checked at all.
    pub verified: bool,
    /// Declarations the API server refused on a revert (this parse's).
    pub rejected: &'a [String],
    /// Why the current sources are refused (the last verified ones are enforced).
    pub refusal: Option<&'a Refusal>,
    /// Objects whose reverts back off, described.
    pub contested: &'a [String],
    /// Owned kinds the operator may not watch (`secrets in shop`).
    pub unwatched: &'a [String],
    /// Declared objects an older DesiredState owns, described with it.
    pub foreign: &'a [String],
    /// Reverts and deletions made in this pass.
    pub reverted: usize,
    pub last_revert: Option<crate::api::RevertRecord>,
    /// The inventory's summary (None: it could not be read; the last stays).
    pub inventory: Option<crate::api::InventoryStatus>,
    /// Why a prune is held back, if one is.
    pub prune_blocked: Option<String>,
    pub now: Timestamp,
}

/// Status after a pass.
pub fn after_pass(pass: Pass<'_>) -> DesiredStateStatus {
    let (old, now) = (pass.old, pass.now);
    let mut status = observed(old, pass.generation, pass.revision, (pass.observed, pass.managed), now);
    if let Some(verified) = pass.signature {
        let sequence = i64::try_from(verified.sequence).unwrap_or(i64::MAX);
        status.signature = Some(crate::api::SourceSignature { key: verified.key, sequence });
    }
    if !pass.verified {
        unverified(&mut status, old, now);
    }
    if !pass.rejected.is_empty() {
        rejected(&mut status, old, pass.generation, pass.rejected, now);
    }
    if let Some(refusal) = pass.refusal {
        enforce_last_verified(&mut status, old, refusal, now);
    }
    if !pass.unwatched.is_empty()
        && let Some(ready) = status.conditions.iter_mut().find(|c| c.type_ == "Ready")
    {
        let listed = bounded_list(pass.unwatched);
        let note =
            format!("; undeclared objects are not checked where RBAC forbids listing them: {}", listed.join(", "));
        if !ready.message.ends_with(&note) {
            ready.message.push_str(&note);
        }
    }
    let conflict = Problem {
        type_: "Conflict",
        items: pass.foreign,
        reasons: ("NoConflict", "ManagedElsewhere"),
        resolved: "no declared object is managed by another DesiredState",
        listing: "declared here, managed by the DesiredState that declared them first",
    };
    let contested = Problem {
        type_: "Contested",
        items: pass.contested,
        reasons: ("Uncontested", "RevertsContested"),
        resolved: "no object is rewritten right after its reverts",
        listing: "rewritten right after each revert, reverts back off",
    };
    let blocked: Vec<String> = pass.prune_blocked.iter().cloned().collect();
    let prune = Problem {
        type_: "PruneBlocked",
        items: &blocked,
        reasons: ("PruneAllowed", "MostOfTheInventory"),
        resolved: "no prune is held back",
        listing: "held back",
    };
    for problem in [conflict, contested, prune] {
        problem.apply(&mut status, old, pass.generation, now);
    }
    status.inventory = pass.inventory.or_else(|| old.inventory.clone());
    if pass.last_revert.is_some() {
        status.reverts = Some(old.reverts.unwrap_or(0) + i64::try_from(pass.reverted).unwrap_or(0));
        status.last_revert = pass.last_revert;
    }
    status
}

/// A condition that is only set once something is wrong, and then stays
/// (False) to say it was mended.
struct Problem<'a> {
    type_: &'static str,
    /// What is wrong, described; empty: nothing.
    items: &'a [String],
    /// The reasons when nothing is and when something is wrong.
    reasons: (&'static str, &'static str),
    resolved: &'static str,
    listing: &'static str,
}

impl Problem<'_> {
    fn apply(self, status: &mut DesiredStateStatus, old: &DesiredStateStatus, generation: Option<i64>, now: Timestamp) {
        let was = old.conditions.iter().any(|c| c.type_ == self.type_);
        if self.items.is_empty() && !was {
            return;
        }
        let wrong = !self.items.is_empty();
        let message = if wrong {
            format!("{}: {}", self.listing, bounded_list(self.items).join(", "))
        } else {
            self.resolved.to_owned()
        };
        let reason = if wrong { self.reasons.1 } else { self.reasons.0 };
        set(status, condition(&old.conditions, self.type_, wrong, reason, message, generation, now));
    }
}

/// The inventory's summary after a pass that began deleting `newly_pruned` objects.
pub fn inventory(
    old: &DesiredStateStatus,
    declared: usize,
    entries: &[inventory::Entry],
    blocked: Option<&inventory::Blocked>,
    newly_pruned: usize,
    config_map: &str,
) -> crate::api::InventoryStatus {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let pruning: Vec<&inventory::Entry> = entries.iter().filter(|e| e.state == inventory::State::Pruning).collect();
    let before = old.inventory.as_ref().map_or(0, |i| i.pruned);
    crate::api::InventoryStatus {
        declared: count(declared),
        retired: count(entries.iter().filter(|e| e.state == inventory::State::Retired).count()),
        pruning: pruning.iter().take(MAX_ERRORS).map(|e| e.object_ref()).collect(),
        pruning_count: count(pruning.len()),
        pruned: before.saturating_add(count(newly_pruned)),
        blocked: blocked.map(|b| crate::api::PruneBlock {
            deletions: count(b.deletions.len()),
            of: count(b.of),
            token: b.token.clone(),
            objects: b.deletions.iter().take(MAX_ERRORS).map(|e| e.object_ref()).collect(),
        }),
        config_map: Some(config_map.to_owned()),
    }
}

/// What the PruneBlocked condition (and Event) says.
pub fn prune_blocked(blocked: &inventory::Blocked) -> String {
    let first: Vec<String> = blocked.deletions.iter().take(3).map(|e| e.describe()).collect();
    let more = if blocked.deletions.len() > first.len() { ", ..." } else { "" };
    format!(
        "this revision would prune {} of the {} objects the last one declared ({}{more}); set spec.confirmPrune: {} to let exactly these go",
        blocked.deletions.len(),
        blocked.of,
        first.join(", "),
        blocked.token
    )
}

/// The first few of `items`, and `...` when there are more.
fn bounded_list(items: &[String]) -> Vec<&str> {
    let mut listed: Vec<&str> = items.iter().take(MAX_ERRORS).map(String::as_str).collect();
    if items.len() > MAX_ERRORS {
        listed.push("...");
    }
    listed
}

/// Why the current sources are not what is enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// The SourceValid reason: `SourceInvalid` (does not parse, out of
    /// scope, missing) or a signature reason (`SignatureMissing`, ...).
    pub reason: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn from_errors(errors: &SourceErrors) -> Refusal {
        let mut lines: Vec<String> = errors.0.iter().take(MAX_ERRORS).map(ToString::to_string).collect();
        if errors.0.len() > MAX_ERRORS {
            lines.push(format!("... and {} more", errors.0.len() - MAX_ERRORS));
        }
        Refusal { reason: "SourceInvalid", message: lines.join("; ") }
    }

    pub fn from_signature(error: &SignatureError) -> Refusal {
        Refusal { reason: error.reason(), message: error.to_string() }
    }

    pub fn unknown() -> Refusal {
        Refusal { reason: "SourceInvalid", message: "the sources could not be read".into() }
    }
}

/// Status when the sources are refused and nothing verified is known yet:
/// says why, and otherwise keeps the last observation (nothing is acted on).
pub fn invalid(
    old: &DesiredStateStatus,
    generation: Option<i64>,
    refusal: &Refusal,
    now: Timestamp,
) -> DesiredStateStatus {
    let mut status = old.clone();
    status.observed_generation = generation;
    let drifted = old.drifted.unwrap_or(0) > 0;
    status.conditions = vec![
        condition(
            &old.conditions,
            "Ready",
            false,
            refusal.reason,
            "the sources are refused and no verified state is known; nothing is changed until a good source arrives"
                .into(),
            generation,
            now,
        ),
        condition(
            &old.conditions,
            "Drifted",
            drifted,
            old.conditions.iter().find(|c| c.type_ == "Drifted").map(|c| c.reason.as_str()).unwrap_or("Unknown"),
            old.conditions.iter().find(|c| c.type_ == "Drifted").map(|c| c.message.clone()).unwrap_or_default(),
            generation,
            now,
        ),
        condition(&old.conditions, "SourceValid", false, refusal.reason, refusal.message.clone(), generation, now),
    ];
    status
}

/// Status when the API server refused declared objects on a revert: the
/// observation stands (they do drift), and `SourceValid` says which
/// declarations Git must fix, and why.
pub fn rejected(
    status: &mut DesiredStateStatus,
    old: &DesiredStateStatus,
    generation: Option<i64>,
    reasons: &[String],
    now: Timestamp,
) {
    let mut lines: Vec<String> = reasons.iter().take(MAX_ERRORS).cloned().collect();
    if reasons.len() > MAX_ERRORS {
        lines.push(format!("... and {} more", reasons.len() - MAX_ERRORS));
    }
    let source_valid =
        condition(&old.conditions, "SourceValid", false, "DeclarationRejected", lines.join("; "), generation, now);
    status.conditions.retain(|c| c.type_ != "SourceValid");
    status.conditions.push(source_valid);
}

/// A status built from the last verified sources while the current ones
/// are refused: SourceValid says why, Ready says what is enforced instead.
pub fn enforce_last_verified(
    status: &mut DesiredStateStatus,
    old: &DesiredStateStatus,
    refusal: &Refusal,
    now: Timestamp,
) {
    let generation = status.observed_generation;
    let revision = status.revision.as_deref().unwrap_or("without a revision");
    let ready = format!("the current sources are refused; enforcing the last verified state (revision {revision})");
    set(status, condition(&old.conditions, "Ready", true, "EnforcingLastVerified", ready, generation, now));
    let source =
        condition(&old.conditions, "SourceValid", false, refusal.reason, refusal.message.clone(), generation, now);
    set(status, source);
}

/// Marks a status made with signature verification switched off.
pub fn unverified(status: &mut DesiredStateStatus, old: &DesiredStateStatus, now: Timestamp) {
    let generation = status.observed_generation;
    let message = "the sources parse and stay in scope; their signatures are NOT checked \
                   (the operator runs with --insecure-skip-source-verification)";
    set(
        status,
        condition(&old.conditions, "SourceValid", true, "VerificationDisabled", message.into(), generation, now),
    );
}

fn set(status: &mut DesiredStateStatus, fresh: k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition) {
    match status.conditions.iter_mut().find(|c| c.type_ == fresh.type_) {
        Some(existing) => *existing = fresh,
        None => status.conditions.push(fresh),
    }
}

/// Objects that started or stopped drifting between two statuses.
pub fn transitions(old: &DesiredStateStatus, new: &DesiredStateStatus) -> (Vec<DriftedObject>, Vec<ObjectRef>) {
    let started = new
        .drifted_objects
        .iter()
        .filter(|n| !old.drifted_objects.iter().any(|o| o.object == n.object))
        .cloned()
        .collect();
    let stopped = old
        .drifted_objects
        .iter()
        .filter(|o| !new.drifted_objects.iter().any(|n| n.object == o.object))
        .map(|o| o.object.clone())
        .collect();
    (started, stopped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{ChangeKind, FieldChange};

    fn object(name: &str) -> ObjectRef {
        ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        }
    }

    fn drift(path: &str, kind: ChangeKind) -> ObjectDiff {
        ObjectDiff { changes: vec![FieldChange { path: path.into(), kind }], unified: String::new() }
    }

    #[test]
    fn counts_fields_conditions_and_a_stable_since() {
        let in_sync = ObjectDiff::default();
        let scaled = drift("/spec/replicas", ChangeKind::Changed);
        let gone = drift("", ChangeKind::ObjectMissing);
        let t1 = Timestamp::from_second(1_000).unwrap();
        let t2 = Timestamp::from_second(2_000).unwrap();
        let seen = [
            Observed { object: object("a"), diff: &in_sync, judgement: None, undeclared: false },
            Observed { object: object("b"), diff: &scaled, judgement: None, undeclared: false },
            Observed { object: object("c"), diff: &gone, judgement: None, undeclared: false },
        ];
        let first = observed(&DesiredStateStatus::default(), Some(1), Some("abc".into()), (&seen, 3), t1);
        assert_eq!((first.managed, first.in_sync, first.drifted), (Some(3), Some(1), Some(2)));
        assert_eq!(first.drifted_objects[0].fields, ["/spec/replicas (changed)"]);
        assert_eq!(first.drifted_objects[1].fields, ["deleted"]);
        let drifted = first.conditions.iter().find(|c| c.type_ == "Drifted").unwrap();
        assert_eq!((drifted.status.as_str(), drifted.message.as_str()), ("True", "2 of 3 objects differ from Git"));

        // The same world later: identical status (no write), same `since`.
        let again = observed(&first, Some(1), Some("abc".into()), (&seen, 3), t2);
        assert_eq!(again, first);
        let (started, stopped) = transitions(&DesiredStateStatus::default(), &first);
        assert_eq!((started.len(), stopped.len()), (2, 0));
    }

    #[test]
    fn the_list_is_bounded_but_the_count_is_not() {
        let scaled = drift("/spec/replicas", ChangeKind::Changed);
        let names: Vec<String> = (0..120).map(|i| format!("d{i:03}")).collect();
        let seen: Vec<Observed<'_>> = names
            .iter()
            .map(|n| Observed { object: object(n), diff: &scaled, judgement: None, undeclared: false })
            .collect();
        let status =
            observed(&DesiredStateStatus::default(), None, None, (&seen, 120), Timestamp::from_second(1).unwrap());
        assert_eq!(status.drifted, Some(120));
        assert_eq!(status.drifted_objects.len(), MAX_LISTED);
    }

    #[test]
    fn refused_sources_say_why_and_what_is_enforced_instead() {
        let t = Timestamp::from_second(1).unwrap();
        let scaled = drift("/spec/replicas", ChangeKind::Changed);
        let seen = [Observed { object: object("a"), diff: &scaled, judgement: None, undeclared: false }];
        let good = observed(&DesiredStateStatus::default(), Some(1), Some("abc".into()), (&seen, 1), t);
        let refusal = Refusal { reason: "SignatureInvalid", message: "changed after signing".into() };
        let mut enforcing = good.clone();
        enforce_last_verified(&mut enforcing, &good, &refusal, t);
        let source = enforcing.conditions.iter().find(|c| c.type_ == "SourceValid").unwrap();
        assert_eq!((source.status.as_str(), source.reason.as_str()), ("False", "SignatureInvalid"));
        let ready = enforcing.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "EnforcingLastVerified"));
        assert!(ready.message.contains("revision abc"), "{}", ready.message);
        assert_eq!(enforcing.drifted, Some(1), "drift is still counted");
        // Nothing verified yet: not ready, nothing enforced.
        let nothing = invalid(&DesiredStateStatus::default(), Some(1), &refusal, t);
        let ready = nothing.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "SignatureInvalid"));
        // Verification off: status says so.
        let mut unchecked = good.clone();
        unverified(&mut unchecked, &good, t);
        let source = unchecked.conditions.iter().find(|c| c.type_ == "SourceValid").unwrap();
        assert_eq!(source.reason, "VerificationDisabled");
        assert!(source.message.contains("NOT checked"), "{}", source.message);
    }

    #[test]
    fn an_empty_source_manages_nothing_and_is_in_sync() {
        let status = observed(&DesiredStateStatus::default(), None, None, (&[], 0), Timestamp::from_second(1).unwrap());
        assert_eq!((status.managed, status.drifted), (Some(0), Some(0)));
        assert!(status.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    }
}
