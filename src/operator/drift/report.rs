//! What a pass tells once its plan is carried out (pure, like [`plan`]):
//! the status, the Events beyond the plan's, what the next pass remembers,
//! and when to look again.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::DynamicObject;

use super::claims::Claimant;
use super::memory::{LastDiffs, Memory};
use super::plan::{self, Inputs, Notice, Outcome, Plan};
use super::status::{self, Refusal};
use crate::api::DesiredStateStatus;
use crate::drift::kept::Declarations;
use crate::drift::{self, inventory, signature};

/// What carrying out the plan left, besides the plan's own outcome.
pub(super) struct Done<'a> {
    pub generation: Option<i64>,
    pub outcome: &'a Outcome,
    /// The signature that verified the enforced sources (None: not checked).
    pub signature: Option<signature::Verified>,
    pub verified: bool,
    /// Why the newest sources are refused, while older ones are enforced.
    pub refusal: Option<&'a Refusal>,
    /// Owned kinds the operator may not watch.
    pub unwatched: &'a [String],
    /// None: a pass that did not read the inventory (it stays as it was).
    pub inventory: Option<Kept<'a>>,
    /// What the PruneBlocked condition says (None: no prune is held back).
    pub prune_blocked: Option<String>,
}

/// The inventory after the pass.
pub(super) struct Kept<'a> {
    /// Declared objects this DesiredState (not an older one) manages.
    pub declared: usize,
    pub entries: &'a [inventory::Entry],
    pub blocked: Option<&'a inventory::Blocked>,
    pub pruned: usize,
    /// Where it is stored (`namespace/name`).
    pub config_map: &'a str,
}

/// The inventory's view of what this revision declares: each declared
/// object this DesiredState (not an older one) manages, with its live uid.
pub(super) fn declared_now<'a>(
    parsed: &'a Declarations,
    lives: &'a [Option<Arc<DynamicObject>>],
    owners: &[Option<Claimant>],
) -> Vec<inventory::Current<'a>> {
    (parsed.objects.iter().zip(lives).zip(owners))
        .filter(|(_, owner)| owner.is_none())
        .map(|((declared, live), _)| inventory::Current {
            key: &declared.key,
            uid: live.as_ref().and_then(|l| l.metadata.uid.as_deref()),
        })
        .collect()
}

/// The status after the pass.
pub(super) fn status(inputs: &Inputs<'_>, plan: &Plan, memory: &Memory, done: Done<'_>) -> DesiredStateStatus {
    let parsed = inputs.parsed;
    let describe = |index: usize| plan::describe(&parsed.objects[index].key.object_ref());
    let foreign: Vec<String> = (inputs.owners.iter().enumerate())
        // The owner first: only an object another DesiredState owns is described.
        .filter_map(|(index, owner)| owner.as_ref().map(|owner| format!("{} (DesiredState {owner})", describe(index))))
        .collect();
    let contested: Vec<String> = plan.contested.iter().map(|index| describe(*index)).collect();
    let rejected = rejected(inputs, memory);
    let in_sync = drift::ObjectDiff::default();
    let observed = plan::observations(inputs, plan, done.outcome, &in_sync);
    status::after_pass(status::Pass {
        old: inputs.old,
        generation: done.generation,
        revision: parsed.revision.clone(),
        observed: &observed,
        managed: plan.managed,
        signature: done.signature,
        verified: done.verified,
        rejected: &rejected,
        refusal: done.refusal,
        contested: &contested,
        unwatched: done.unwatched,
        foreign: &foreign,
        reverted: done.outcome.reverted.len() + done.outcome.deleted.len(),
        last_revert: done.outcome.last.clone(),
        inventory: done.inventory.as_ref().map(|kept| {
            status::inventory(inputs.old, kept.declared, kept.entries, kept.blocked, kept.pruned, kept.config_map)
        }),
        prune_blocked: done.prune_blocked,
        now: inputs.now,
    })
}

/// Declarations the API server refused on a revert, described.
fn rejected(inputs: &Inputs<'_>, memory: &Memory) -> Vec<String> {
    (memory.rejected_of(inputs.parsed).into_iter())
        .map(|(index, reason)| {
            let declared = &inputs.parsed.objects[index];
            format!("{}: {} cannot be applied: {reason}", declared.origin, declared.key)
        })
        .collect()
}

/// The Events of the pass: the plan's, and `SourceAccepted` when sources
/// that were refused are enforced again (a refusal that stands is
/// announced by the executor, once).
pub(super) fn notices(
    inputs: &Inputs<'_>,
    plan: &Plan,
    outcome: &Outcome,
    memory: &Memory,
    (status, refused): (&DesiredStateStatus, bool),
) -> Vec<Notice> {
    let mut notices = plan::notices(inputs, plan, outcome, status);
    let was_refused = inputs.old.conditions.iter().any(|c| c.type_ == "SourceValid" && c.status == "False");
    if !refused && was_refused && rejected(inputs, memory).is_empty() {
        let revision = status.revision.as_deref().unwrap_or("without a revision");
        let by = status.signature.as_ref().map(|s| format!(", signed by {}", s.key)).unwrap_or_default();
        let note = format!("the sources are valid again{by}: enforcing revision {revision}");
        notices.push(Notice::normal("SourceAccepted", note));
    }
    notices
}

/// What the next pass remembers of this one's diffs.
pub(super) fn remembered(inputs: &Inputs<'_>, plan: Plan, outcome: &Outcome) -> LastDiffs {
    let drifting = plan.differing.iter().copied().filter(|i| !outcome.reverted.contains(i)).collect();
    let undeclared = (plan.extras.iter().enumerate())
        .filter(|(at, _)| !outcome.deleted.contains(at))
        .map(|(_, (index, _))| {
            let extra = &inputs.extras[*index];
            (extra.uid.clone(), (super::watches::WatchKey::clone(&extra.key), extra.name.clone()))
        })
        .collect();
    LastDiffs {
        sources: inputs.parsed.clone(),
        versions: plan.versions,
        diffs: plan.diffs,
        differing: plan.differing,
        drifting,
        managed: plan.managed,
        undeclared,
    }
}

/// When to look again without a change: the plan's wake-up (a held
/// change's window ends, a contested object's wait is over) or the
/// soonest retry of what the executor could not finish. None: on the next
/// change.
pub(super) fn next_pass(wake: Option<Timestamp>, retries: &[Option<Duration>], now: Timestamp) -> Option<Duration> {
    let wake = wake.map(|at| Duration::try_from(at.duration_since(now)).unwrap_or_default());
    let soonest = wake.into_iter().chain(retries.iter().flatten().copied()).min()?;
    // Never a busy loop.
    Some(soonest.max(Duration::from_millis(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn the_next_pass_is_the_soonest_of_wake_up_and_retries() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let in_5s = Some(Timestamp::from_second(1_000_005).unwrap());
        type Row = (Option<Timestamp>, Vec<Option<Duration>>, Option<Duration>);
        let table: [Row; 5] = [
            (None, vec![None, None], None),
            (in_5s, vec![None], secs(5)),
            (in_5s, vec![secs(2), None, secs(3)], secs(2)),
            (None, vec![None, secs(7)], secs(7)),
            // A wake-up already past comes back at once, but not in a loop.
            (Some(Timestamp::from_second(999_000).unwrap()), vec![], Some(Duration::from_millis(10))),
        ];
        for (wake, retries, expected) in table {
            assert_eq!(next_pass(wake, &retries, now), expected, "{wake:?} {retries:?}");
        }
    }
}
