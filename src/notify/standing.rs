//! Which drift stands: objects a DesiredState reports (or would revert, in
//! a dry run) rather than reverts. Each status the drift controller writes
//! is compared with the last one seen: drift that appears is announced once,
//! drift that is gone is announced resolved, and what stands is what
//! Alertmanager keeps firing.

use std::collections::{BTreeMap, btree_map::Entry};

use k8s_openapi::jiff::Timestamp;

use super::{DriftFacts, Notice, describe, fix_command};
use crate::api::{DriftAction, DriftedObject, NoticeKind, ObjectRef};

fn key(object: &ObjectRef) -> String {
    format!("{} {}", object.api_version, describe(object))
}

/// A DesiredState, as `namespace/name`.
pub type StateKey = (String, String);

/// One standing drift.
#[derive(Clone, Debug, PartialEq)]
pub struct Standing {
    pub desired_state: StateKey,
    pub drift: DriftedObject,
}

impl Standing {
    /// The notice for it (`Reported`, or `Resolved` once it is gone).
    pub fn notice(&self, resolved: bool, now: Timestamp) -> Notice {
        let (namespace, name) = &self.desired_state;
        let object = &self.drift.object;
        let what = if self.drift.undeclared { "is not declared in Git" } else { "differs from Git" };
        let summary = if resolved {
            format!("{} matches DesiredState {name} again", describe(object))
        } else {
            let fields = if self.drift.fields.is_empty() {
                String::new()
            } else {
                format!(" at {}", self.drift.fields.join(", "))
            };
            format!(
                "{} {what}{fields} (DesiredState {name}, {:?}); reported, not reverted",
                describe(object),
                self.drift.class
            )
        };
        Notice {
            kind: NoticeKind::DriftReported,
            namespace: namespace.clone(),
            time: now,
            summary,
            request: None,
            drift: Some(DriftFacts {
                desired_state: name.clone(),
                object: object.clone(),
                class: self.drift.class,
                action: if resolved { "Resolved" } else { "Reported" },
                fields: self.drift.fields.clone(),
                since: Some(self.drift.since.0),
                access_request: self.drift.access_request.clone(),
            }),
            fix: (!resolved).then(|| fix_command(namespace, name, object)),
            command: None,
        }
    }
}

/// Whether a drifted object stands (is left in place for people to act on).
pub fn stands(drift: &DriftedObject) -> bool {
    matches!(drift.action, Some(DriftAction::Report | DriftAction::WouldRevert))
}

/// Whether two sightings are one drift: the same start, to the second
/// (status keeps seconds; a fresh pass has the instant it saw).
fn same_drift(old: &Standing, new: &Standing) -> bool {
    old.drift.since.0.as_second() == new.drift.since.0.as_second()
}

/// What changed since the last status of a DesiredState.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub appeared: Vec<Standing>,
    pub resolved: Vec<Standing>,
}

/// The standing drift of every DesiredState, as last seen.
#[derive(Debug, Default)]
pub struct StandingDrift {
    by_state: BTreeMap<StateKey, BTreeMap<String, Standing>>,
}

impl StandingDrift {
    /// Takes a DesiredState's drifted objects from its new status (none:
    /// it was deleted).
    pub fn update(&mut self, state: StateKey, drifted: &[DriftedObject]) -> Changes {
        let now: BTreeMap<String, Standing> = drifted
            .iter()
            .filter(|d| stands(d))
            .map(|d| (key(&d.object), Standing { desired_state: state.clone(), drift: d.clone() }))
            .collect();
        let mut changes = Changes::default();
        let before = match self.by_state.entry(state) {
            Entry::Occupied(mut entry) if now.is_empty() => std::mem::take(entry.get_mut()),
            Entry::Occupied(mut entry) => std::mem::replace(entry.get_mut(), now.clone()),
            Entry::Vacant(entry) => {
                if !now.is_empty() {
                    entry.insert(now.clone());
                }
                BTreeMap::new()
            }
        };
        self.by_state.retain(|_, objects| !objects.is_empty());
        for (object, standing) in &now {
            // The same drift, or a new one on the same object (it was fixed
            // and drifted again since the last status).
            match before.get(object) {
                Some(old) if same_drift(old, standing) => {}
                _ => changes.appeared.push(standing.clone()),
            }
        }
        for (object, standing) in before {
            if !now.contains_key(&object) {
                changes.resolved.push(standing);
            }
        }
        changes
    }

    /// Every standing drift, for a receiver that must be reminded
    /// (Alertmanager resolves an alert it is not sent again).
    pub fn all(&self) -> impl Iterator<Item = &Standing> {
        self.by_state.values().flat_map(|objects| objects.values())
    }
}
