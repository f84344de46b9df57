//! What changed for each DesiredState since its last pass: the declared
//! objects its watches saw change, or "maybe anything" (a relist, a source,
//! a grant, a key, a namespace, an undeclared object). A pass that knows
//! exactly which declared objects changed diffs and judges only those and
//! the ones already drifting ([`super::steady`]); any other pass reads
//! everything.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use kube::runtime::reflector::ObjectRef;

use super::watches::WatchKey;
use crate::api::DesiredState;

/// The changes one DesiredState has not reconciled yet.
#[derive(Debug, Default)]
pub(super) struct Changed {
    /// Declared-kind objects that changed, by watch and name.
    pub objects: HashSet<(WatchKey, String)>,
    /// Something other than named objects changed: read everything.
    pub anything: bool,
}

/// The changes of every DesiredState, shared with the watches and the
/// controller's other triggers.
#[derive(Clone, Default)]
pub(super) struct Changes(Arc<Mutex<HashMap<ObjectRef<DesiredState>, Changed>>>);

impl Changes {
    pub fn object(&self, user: &ObjectRef<DesiredState>, key: &WatchKey, name: &str) {
        let mut all = self.lock();
        let changed = all.entry(user.clone()).or_default();
        if !changed.anything {
            changed.objects.insert((key.clone(), name.to_owned()));
        }
    }

    pub fn anything(&self, user: &ObjectRef<DesiredState>) {
        let mut all = self.lock();
        let changed = all.entry(user.clone()).or_default();
        changed.anything = true;
        changed.objects.clear();
    }

    /// Marks every one of `users` (a trigger's targets) as "anything changed".
    pub fn anything_for(&self, users: Vec<ObjectRef<DesiredState>>) -> Vec<ObjectRef<DesiredState>> {
        users.iter().for_each(|user| self.anything(user));
        users
    }

    /// What changed since the last call, for a pass about to start.
    pub fn take(&self, user: &ObjectRef<DesiredState>) -> Changed {
        self.lock().remove(user).unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<DesiredState>, Changed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> WatchKey {
        WatchKey {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespace: Some("shop".into()),
        }
    }

    #[test]
    fn named_changes_add_up_until_anything_changes_and_a_pass_takes_them() {
        let changes = Changes::default();
        let me = ObjectRef::<DesiredState>::new("state").within("shop");
        assert!(!changes.take(&me).anything, "nothing recorded: nothing changed");
        changes.object(&me, &key(), "a");
        changes.object(&me, &key(), "b");
        changes.object(&me, &key(), "a");
        let taken = changes.take(&me);
        assert_eq!((taken.objects.len(), taken.anything), (2, false));
        assert!(changes.take(&me).objects.is_empty(), "taken once");

        changes.object(&me, &key(), "a");
        changes.anything_for(vec![me.clone()]);
        changes.object(&me, &key(), "b");
        let taken = changes.take(&me);
        assert!(taken.anything && taken.objects.is_empty(), "{taken:?}");
    }
}
