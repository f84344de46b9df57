//! What the drift controller remembers of each DesiredState from one pass
//! to the next, in one place: forgetting a DesiredState is one removal.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;

use super::status;
use super::trust;
use crate::api::{self, DesiredState, DesiredStateStatus};
use crate::drift::kept::Declarations;
use crate::drift::{self, signature};

/// What a set of sources is, as far as the caches know: what of the
/// DesiredState's spec the parse depends on ([`spec_of_sources`]), each
/// source ConfigMap's resourceVersion, and the trust anchors' versions.
pub(super) type Fingerprint = (String, SourceVersions, trust::Fingerprint);

/// The fields of a DesiredState's spec its sources' verification and parse
/// read: which ConfigMaps, and which keys may sign them. A change of any
/// other field (remediation, ignore rules, undeclared objects) keeps the
/// parse: at 10,000 objects a parse takes seconds and several times the
/// memory the kept form does.
pub(super) fn spec_of_sources(state: &DesiredState) -> String {
    serde_json::to_string(&(&state.spec.sources, &state.spec.trusted_keys)).unwrap_or_default()
}

/// The source ConfigMaps found, as (name, resourceVersion).
pub(super) type SourceVersions = Vec<(String, String)>;

/// A verified parse, and what it was parsed from.
#[derive(Clone)]
pub(super) struct CachedParse {
    pub fingerprint: Fingerprint,
    pub sources: Arc<Declarations>,
    /// The signature that verified (None: verification is off).
    pub signature: Option<signature::Verified>,
    /// The DesiredState generation these declarations are enforced under.
    pub generation: Option<i64>,
}

impl CachedParse {
    /// The same parse under another generation of the DesiredState: a new
    /// `Arc` of a copy. What a pass keeps from the last (its diffs, the
    /// objects it follows, refused reverts) is kept per parse by `Arc`
    /// identity, and the spec that changed (ignore rules, remediation) may
    /// change every diff and verdict: a copy makes them all start afresh,
    /// as a new parse would, without verifying and parsing again.
    pub fn under(self, generation: Option<i64>) -> Self {
        Self { sources: Arc::new(Declarations::clone(&self.sources)), generation, ..self }
    }
}

/// Sources that were refused, until they change.
pub(super) struct Refused {
    pub fingerprint: Fingerprint,
    pub refusal: status::Refusal,
    /// When the refusal began.
    pub since: Instant,
}

/// The diffs of the last pass, with the live resourceVersions they saw.
#[derive(Debug)]
pub(super) struct LastDiffs {
    pub sources: Arc<Declarations>,
    pub versions: Vec<Option<String>>,
    pub diffs: Vec<drift::ObjectDiff>,
    /// The declared objects whose diff is not in sync (by index).
    pub differing: BTreeSet<usize>,
    /// Which of them were left drifting (not reverted).
    pub drifting: BTreeSet<usize>,
    /// Declared objects this DesiredState manages (no older one does).
    pub managed: usize,
    /// The undeclared objects left in place: uid -> watch and name.
    pub undeclared: HashMap<String, (super::watches::WatchKey, String)>,
}

/// Everything remembered of one DesiredState.
#[derive(Default)]
pub(super) struct Memory {
    /// The last good (verified, parsed) sources: reused while they are
    /// unchanged, and enforced while newer ones are refused.
    pub parsed: Option<CachedParse>,
    /// Why the current sources are refused, while they are.
    pub refused: Option<Refused>,
    /// The source ConfigMaps (name, resourceVersion) the last pass found,
    /// and the DesiredState generation it looked for them at.
    pub sources_found: Option<(Option<i64>, SourceVersions)>,
    pub last: Option<LastDiffs>,
    /// The resourceVersion each object was left at by its last revert.
    pub reverted: HashMap<api::ObjectRef, String>,
    /// When each object was last seen to match Git: writes before that did
    /// not make its drift.
    pub clean_at: HashMap<api::ObjectRef, Timestamp>,
    /// Declared objects (by index) whose revert the API server refused, and
    /// the parse they belong to.
    pub rejected: Option<(Arc<Declarations>, BTreeMap<usize, String>)>,
    /// Reverts of each object in the last few seconds: an object someone
    /// else keeps rewriting is contested, and its reverts back off.
    pub contest: super::contest::Contests,
    /// The inventory as stored (None: not read since the start).
    pub inventory: Option<Vec<crate::drift::inventory::Entry>>,
    /// The uids of the objects whose prune was announced.
    pub pruning: HashSet<String>,
    /// The token of the blocked prune last announced.
    pub prune_blocked: Option<String>,
    /// The counts this process last wrote to status.
    pub counts_written: Option<Counts>,
    /// What the last full pass read, for the passes that follow a few
    /// named objects' changes (None: the next pass is a full one).
    pub steady: Option<super::steady::Steady>,
}

/// Counts only status carries from pass to pass.
pub(super) struct Counts {
    pub reverts: i64,
    pub last_revert: Option<api::RevertRecord>,
    pub pruned: i64,
}

impl Memory {
    /// This parse's refused objects, by index.
    pub fn rejected_of(&self, parsed: &Arc<Declarations>) -> Vec<(usize, String)> {
        match &self.rejected {
            Some((of, by_index)) if Arc::ptr_eq(of, parsed) => {
                by_index.iter().map(|(index, reason)| (*index, reason.clone())).collect()
            }
            _ => Vec::new(),
        }
    }

    pub fn is_rejected(&self, parsed: &Arc<Declarations>, index: usize) -> bool {
        self.rejected.as_ref().is_some_and(|(of, by_index)| Arc::ptr_eq(of, parsed) && by_index.contains_key(&index))
    }

    /// Records a refusal; the refusals of an older parse are forgotten.
    pub fn reject(&mut self, parsed: &Arc<Declarations>, index: usize, reason: String) {
        let entry = self.rejected.get_or_insert_with(|| (parsed.clone(), BTreeMap::new()));
        if !Arc::ptr_eq(&entry.0, parsed) {
            *entry = (parsed.clone(), BTreeMap::new());
        }
        entry.1.insert(index, reason);
    }

    /// A new parse: what held for the old declarations may not hold now.
    pub fn new_parse(&mut self) {
        self.reverted.clear();
    }

    /// The cached status may not have caught up with this process's last
    /// write yet: counts only status carries must not go back (an apply
    /// without them would erase them).
    pub fn catch_up(&self, old: &mut DesiredStateStatus) {
        let Some(written) = &self.counts_written else { return };
        if old.reverts.unwrap_or(0) < written.reverts {
            old.reverts = Some(written.reverts);
            old.last_revert = written.last_revert.clone();
        }
        if let Some(inventory) = old.inventory.as_mut()
            && inventory.pruned < written.pruned
        {
            inventory.pruned = written.pruned;
        }
    }

    /// Remembers the counts of a status just written.
    pub fn wrote(&mut self, status: &DesiredStateStatus) {
        self.counts_written = Some(Counts {
            reverts: status.reverts.unwrap_or(0),
            last_revert: status.last_revert.clone(),
            pruned: status.inventory.as_ref().map_or(0, |i| i.pruned),
        });
    }
}

/// The memory of every DesiredState.
#[derive(Default)]
pub(super) struct Memories(Mutex<HashMap<ObjectRef<DesiredState>, Memory>>);

impl Memories {
    /// Takes `me`'s memory for one pass; it is put back when the guard
    /// drops, whatever way the pass ends. Passes of one DesiredState never
    /// overlap (the controller runs one reconcile per object at a time).
    pub fn take(&self, me: &ObjectRef<DesiredState>) -> Taken<'_> {
        let memory = self.lock().remove(me).unwrap_or_default();
        Taken { memories: self, me: me.clone(), memory: Some(memory) }
    }

    pub fn forget(&self, me: &ObjectRef<DesiredState>) {
        self.lock().remove(me);
    }

    pub fn known(&self) -> Vec<ObjectRef<DesiredState>> {
        self.lock().keys().cloned().collect()
    }

    /// How many DesiredStates' current sources are refused.
    pub fn refused(&self) -> usize {
        self.lock().values().filter(|m| m.refused.is_some()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DesiredState>, Memory>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One DesiredState's memory, out for a pass.
pub(super) struct Taken<'a> {
    memories: &'a Memories,
    me: ObjectRef<DesiredState>,
    memory: Option<Memory>,
}

impl std::ops::Deref for Taken<'_> {
    type Target = Memory;
    fn deref(&self) -> &Memory {
        self.memory.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Taken<'_> {
    fn deref_mut(&mut self) -> &mut Memory {
        self.memory.as_mut().expect("present until dropped")
    }
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        if let Some(memory) = self.memory.take() {
            self.memories.lock().insert(self.me.clone(), memory);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_process_wrote_do_not_go_back_in_a_stale_status() {
        let mut memory = Memory::default();
        let mut old = DesiredStateStatus::default();
        memory.catch_up(&mut old);
        assert_eq!(old.reverts, None, "nothing written yet: the status stands");

        let written = DesiredStateStatus {
            reverts: Some(4),
            inventory: Some(crate::api::InventoryStatus { pruned: 2, ..Default::default() }),
            ..Default::default()
        };
        memory.wrote(&written);
        let mut stale = DesiredStateStatus {
            reverts: Some(3),
            inventory: Some(crate::api::InventoryStatus { pruned: 1, ..Default::default() }),
            ..Default::default()
        };
        memory.catch_up(&mut stale);
        assert_eq!(stale.reverts, Some(4));
        assert_eq!(stale.inventory.as_ref().map(|i| i.pruned), Some(2));

        // A status that moved on (another replica wrote since) is kept.
        let mut newer = DesiredStateStatus { reverts: Some(9), ..Default::default() };
        memory.catch_up(&mut newer);
        assert_eq!(newer.reverts, Some(9));
    }
}
