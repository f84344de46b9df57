//! What a full pass leaves for the passes after it, so that an edit costs
//! work for the edited object only: when nothing changed since but
//! declared objects the watches named (the same parse, the same claims, no
//! relist, no grant, key, namespace, source or undeclared object, no
//! wake-up due), a pass reads just those objects from the caches, diffs
//! them and judges them with the objects already drifting. Anything else,
//! or anything unexpected (a named object that was created, deleted or
//! re-created, one not declared here), makes a full pass.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::DynamicObject;

use super::changes::Changed;
use super::plan::Followed;
use super::read::{self, Live};
use super::watches::WatchKey;
use crate::drift::kept::Declarations;

/// A wake-up due this soon makes the pass a full one (timers are not
/// exact, and what the wake-up is for must not be missed).
const DUE_SLACK: Duration = Duration::from_millis(50);

/// What the last full pass read, kept current by the passes after it.
pub(super) struct Steady {
    /// The parse it read: a new parse reads everything.
    pub parsed: Arc<Declarations>,
    pub live: Live,
    pub index: Index,
    /// The claims' generation it read the owners at.
    pub claims: u64,
    /// uids an earlier revision declared (Git's removals).
    pub removed_from_git: BTreeSet<String>,
    /// What the PruneBlocked condition said.
    pub prune_blocked: Option<String>,
    /// When the pass asked to come back (a window ends, a retry).
    pub due: Option<Instant>,
}

/// The declared objects by watch and name: what a watch's event names.
pub(super) struct Index {
    parsed: Arc<Declarations>,
    by_name: HashMap<(usize, Box<str>), usize>,
    watches: HashMap<WatchKey, usize>,
}

impl Index {
    /// The index of a parse: `reuse`d when it is of the same one (it
    /// depends on the parse only, so it is built once per parse).
    pub fn of(parsed: &Arc<Declarations>, resources: &[Option<WatchKey>], reuse: Option<Index>) -> Index {
        if let Some(index) = reuse
            && Arc::ptr_eq(&index.parsed, parsed)
        {
            return index;
        }
        let mut watches: HashMap<WatchKey, usize> = HashMap::new();
        let mut by_name = HashMap::with_capacity(parsed.objects.len());
        for (at, (declared, key)) in parsed.objects.iter().zip(resources).enumerate() {
            let Some(key) = key else { continue };
            let next = watches.len();
            let watch = *watches.entry(key.clone()).or_insert(next);
            by_name.insert((watch, Box::from(declared.key.name.as_str())), at);
        }
        Index { parsed: parsed.clone(), by_name, watches }
    }

    fn find(&self, key: &WatchKey, name: &str) -> Option<usize> {
        let watch = *self.watches.get(key)?;
        self.by_name.get(&(watch, Box::from(name))).copied()
    }
}

impl Steady {
    pub fn new(
        parsed: Arc<Declarations>,
        live: Live,
        index: Index,
        claims: u64,
        removed_from_git: BTreeSet<String>,
        prune_blocked: Option<String>,
    ) -> Steady {
        Steady { parsed, live, index, claims, removed_from_git, prune_blocked, due: None }
    }

    /// Why a pass may not read only what `changed` names (None: it may).
    pub fn doubt(
        &self,
        parsed: &Arc<Declarations>,
        claims: u64,
        changed: &Changed,
        now: Instant,
    ) -> Option<&'static str> {
        if !Arc::ptr_eq(&self.parsed, parsed) || !Arc::ptr_eq(&self.index.parsed, parsed) {
            Some("a new parse")
        } else if self.claims != claims {
            Some("claims changed")
        } else if changed.anything {
            Some("not only named objects changed")
        } else if self.due.is_some_and(|due| now + DUE_SLACK >= due) {
            Some("a wake-up is due")
        } else {
            None
        }
    }

    /// Reads the changed objects from the caches into `live`. Returns what
    /// may have changed, or None when the change is not one this can
    /// follow: a full pass must read everything.
    pub fn refresh(
        &mut self,
        changed: &Changed,
        declared_elsewhere: &dyn Fn(&super::claims::ObjectId) -> bool,
    ) -> Option<Followed> {
        let mut followed = Followed { undeclared: Some(BTreeSet::new()), ..Followed::default() };
        for (key, name) in &changed.objects {
            let Some(index) = self.index.find(key, name) else {
                // Not declared here: perhaps an undeclared object.
                match self.live.follow_undeclared(key, name, declared_elsewhere) {
                    read::Rejudge::Nothing => {}
                    read::Rejudge::It => {
                        if let Some(named) = &mut followed.undeclared {
                            named.insert((key.clone(), name.clone()));
                        }
                    }
                    read::Rejudge::All => followed.undeclared = None,
                    read::Rejudge::Cannot => return None,
                }
                continue;
            };
            let fresh = self.read(key, name)?;
            let uid = |live: &Option<Arc<DynamicObject>>| live.as_ref().and_then(|l| l.metadata.uid.clone());
            // Created, deleted or re-created: the inventory and the
            // undeclared objects may change too.
            let old = &self.live.lives[index];
            if old.is_none() || uid(old) != uid(&fresh) {
                return None;
            }
            self.live.lives[index] = fresh;
            followed.declared.insert(index);
        }
        Some(followed)
    }

    /// The object as its watch's cache has it now (Some(None): gone).
    fn read(&self, key: &WatchKey, name: &str) -> Option<Option<Arc<DynamicObject>>> {
        Some(self.live.stores.get(key)?.get(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DeclaredObject, ObjectKey, Origin, ParsedSources};
    use crate::operator::drift::cache::Writer;
    use kube::runtime::watcher::Event;

    fn key() -> WatchKey {
        WatchKey {
            group: String::new(),
            version: "v1".into(),
            kind: "ConfigMap".into(),
            plural: "configmaps".into(),
            namespace: Some("shop".into()),
        }
    }

    fn kind() -> crate::api::KindRef {
        crate::api::KindRef { group: String::new(), kind: "ConfigMap".into() }
    }

    fn config_map(name: &str, uid: &str, version: &str) -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "shop", "uid": uid, "resourceVersion": version},
        }))
        .unwrap()
    }

    fn parse(names: &[&str]) -> Arc<Declarations> {
        let objects = names
            .iter()
            .map(|name| DeclaredObject {
                key: ObjectKey {
                    api_version: "v1".into(),
                    group: String::new(),
                    version: "v1".into(),
                    kind: "ConfigMap".into(),
                    namespace: Some("shop".into()),
                    name: (*name).into(),
                },
                object: serde_json::json!({}),
                origin: Origin { config_map: "c".into(), key: "k".into(), document: 0, item: None },
            })
            .collect();
        Arc::new(Declarations::from(ParsedSources { revision: None, objects }))
    }

    /// What a refresh says changed: declared objects by index, undeclared
    /// by name (None: all).
    fn followed(declared: &[usize], undeclared: Option<&[&str]>) -> Followed {
        Followed {
            declared: declared.iter().copied().collect(),
            undeclared: undeclared.map(|names| names.iter().map(|n| (key(), (*n).to_owned())).collect()),
        }
    }

    fn changed(names: &[&str]) -> Changed {
        Changed { objects: names.iter().map(|n| (key(), (*n).to_owned())).collect(), anything: false }
    }

    /// A full pass over `a` and `b`, both live, and the cache it read.
    fn steady() -> (Steady, Writer<DynamicObject>) {
        let mut writer = Writer::new();
        let (a, b) = (config_map("a", "uid-a", "1"), config_map("b", "uid-b", "2"));
        writer.apply(&Event::Apply(a.clone()));
        writer.apply(&Event::Apply(b.clone()));
        let parsed = parse(&["a", "b"]);
        let live = Live {
            resources: vec![Some(key()), Some(key())],
            lives: vec![Some(Arc::new(a)), Some(Arc::new(b))],
            stores: [(key(), writer.cache())].into(),
            uids: [("uid-a".into(), kind().into()), ("uid-b".into(), kind().into())].into(),
            extra_keys: [key()].into(),
            ..Live::default()
        };
        let index = Index::of(&parsed, &live.resources, None);
        (Steady::new(parsed, live, index, 7, BTreeSet::new(), None), writer)
    }

    #[test]
    fn an_edit_is_read_alone_and_anything_else_makes_a_full_pass() {
        let (mut steady, mut writer) = steady();
        let nobody = |_: &crate::operator::drift::claims::ObjectId| false;
        let now = Instant::now();
        assert!(steady.doubt(&steady.parsed.clone(), 7, &changed(&["b"]), now).is_none());
        assert!(steady.doubt(&parse(&["a", "b"]), 7, &changed(&["b"]), now).is_some(), "another parse");
        assert!(steady.doubt(&steady.parsed.clone(), 8, &changed(&["b"]), now).is_some(), "the claims changed");
        let anything = Changed { anything: true, ..Changed::default() };
        assert!(steady.doubt(&steady.parsed.clone(), 7, &anything, now).is_some(), "a relist, a grant, a source...");
        steady.due = Some(now + Duration::from_millis(10));
        assert!(steady.doubt(&steady.parsed.clone(), 7, &changed(&["b"]), now).is_some(), "a wake-up is due");
        steady.due = None;

        // b is edited: only b is read again.
        writer.apply(&Event::Apply(config_map("b", "uid-b", "3")));
        assert_eq!(steady.refresh(&changed(&["b"]), &nobody), Some(followed(&[1], Some(&[]))));
        let version =
            |steady: &Steady, i: usize| steady.live.lives[i].as_ref().unwrap().metadata.resource_version.clone();
        assert_eq!(version(&steady, 1).as_deref(), Some("3"));
        assert_eq!(
            steady.refresh(&changed(&[]), &nobody),
            Some(followed(&[], Some(&[]))),
            "nothing named: nothing read"
        );

        // An undeclared object comes and goes: followed into what the plan judges.
        writer.apply(&Event::Apply(config_map("c", "uid-c", "5")));
        assert_eq!(steady.refresh(&changed(&["c"]), &nobody), Some(followed(&[], Some(&["c"]))), "c alone is judged");
        let extras = |steady: &Steady| steady.live.extras.iter().map(|e| e.name.clone()).collect::<Vec<_>>();
        assert_eq!(extras(&steady), ["c"]);
        assert!(steady.live.uids.contains_key("uid-c"));
        writer.apply(&Event::Apply(config_map("c", "uid-c", "7")));
        assert_eq!(steady.refresh(&changed(&["c", "b"]), &nobody), Some(followed(&[1], Some(&["c"]))), "edited");
        writer.apply(&Event::Delete(config_map("c", "uid-c", "5")));
        let all = Some(followed(&[], None));
        assert_eq!(steady.refresh(&changed(&["c"]), &nobody), all, "its uid went: every undeclared object is judged");
        assert!(extras(&steady).is_empty() && !steady.live.uids.contains_key("uid-c"), "its uid vouches for nothing");
        // Another DesiredState's: known by uid, not judged here.
        writer.apply(&Event::Apply(config_map("d", "uid-d", "6")));
        assert_eq!(steady.refresh(&changed(&["d"]), &|id| id.ends_with("\0d")), Some(followed(&[], Some(&[]))));
        assert!(extras(&steady).is_empty() && steady.live.uids.contains_key("uid-d"));
        // ... and when it goes, only a full read knows what to forget.
        writer.apply(&Event::Delete(config_map("d", "uid-d", "6")));
        assert_eq!(steady.refresh(&changed(&["d"]), &|id| id.ends_with("\0d")), None);

        // A declared object re-created or deleted: not followed.
        writer.apply(&Event::Apply(config_map("a", "uid-a2", "4")));
        assert_eq!(steady.refresh(&changed(&["a"]), &nobody), None, "re-created under a new uid");
        let (mut steady, mut writer) = self::steady();
        writer.apply(&Event::Delete(config_map("a", "uid-a", "1")));
        assert_eq!(steady.refresh(&changed(&["a"]), &nobody), None, "deleted");
    }

    #[test]
    fn the_index_is_built_once_per_parse() {
        let (steady, _writer) = steady();
        let parsed = steady.parsed.clone();
        let index = Index::of(&parsed, &steady.live.resources, Some(steady.index));
        assert!(Arc::ptr_eq(&index.parsed, &parsed));
        assert_eq!(index.find(&key(), "b"), Some(1));
        let other = parse(&["b"]);
        let rebuilt = Index::of(&other, &[Some(key())], Some(index));
        assert_eq!(rebuilt.find(&key(), "b"), Some(0));
        assert_eq!(rebuilt.find(&key(), "a"), None);
    }
}
