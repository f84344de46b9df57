//! One owner per object. Every DesiredState's declared objects are
//! registered here; an object two of them declare belongs to the older one
//! (by creationTimestamp, then namespace and name), whatever order they were
//! created or reconciled in and across restarts, and the other reports it
//! instead of fighting over it. The same index says which objects some
//! DesiredState declares, so that no other one takes them for undeclared.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::jiff::Timestamp;

use crate::drift::kept::Declarations;

/// An object as the API server tells objects apart: group, kind, namespace
/// and name, in one string (one allocation per declared object: the index
/// holds one for every object of every DesiredState).
pub(super) type ObjectId = Box<str>;

/// A DesiredState that declares an object: the oldest one owns it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Claimant {
    pub created: Option<Timestamp>,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for Claimant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[derive(Default)]
struct Index {
    /// Who declares each object, oldest first (almost always one).
    by_object: HashMap<ObjectId, Vec<Arc<Claimant>>>,
    /// Per DesiredState (namespace, name): who it is and the parse its
    /// claims come from (the objects it claims are that parse's).
    by_state: HashMap<(String, String), Registered>,
    /// Counts every change: a pass that read owners at one generation
    /// reads them again at another.
    generation: u64,
}

/// What one DesiredState registered: who, and from which parse.
type Registered = (Arc<Claimant>, Arc<Declarations>);

/// The claims of every DesiredState.
#[derive(Default)]
pub(super) struct Claims(Mutex<Index>);

/// The id of an object. The parts are joined by NUL, which no group, kind,
/// namespace or name holds; a cluster-scoped object has no namespace part.
pub(super) fn id_of(group: &str, kind: &str, namespace: Option<&str>, name: &str) -> ObjectId {
    match namespace {
        Some(namespace) => format!("{group}\0{kind}\0{namespace}\0{name}"),
        None => format!("{group}\0{kind}\0{name}"),
    }
    .into_boxed_str()
}

fn ids(parsed: &Declarations) -> impl Iterator<Item = ObjectId> + '_ {
    parsed.objects.iter().map(|d| id_of(&d.key.group, &d.key.kind, d.key.namespace.as_deref(), &d.key.name))
}

impl Claims {
    /// `claimant` declares what `parsed` declares (replacing what it
    /// declared before; nothing to do when the parse is the same).
    pub fn register(&self, claimant: &Claimant, parsed: &Arc<Declarations>) {
        let mut index = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let key = (claimant.namespace.clone(), claimant.name.clone());
        if let Some((known, previous)) = index.by_state.get(&key)
            && **known == *claimant
            && Arc::ptr_eq(previous, parsed)
        {
            return;
        }
        remove(&mut index, &key);
        index.generation += 1;
        let shared = Arc::new(claimant.clone());
        for id in ids(parsed) {
            let claimants = index.by_object.entry(id).or_default();
            if let Err(at) = claimants.binary_search(&shared) {
                claimants.insert(at, shared.clone());
            }
        }
        index.by_state.insert(key, (shared, parsed.clone()));
    }

    pub fn forget(&self, namespace: &str, name: &str) {
        let mut index = self.0.lock().unwrap_or_else(|p| p.into_inner());
        remove(&mut index, &(namespace.to_owned(), name.to_owned()));
        index.generation += 1;
    }

    pub fn generation(&self) -> u64 {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).generation
    }

    /// Whether a DesiredState (namespace, name) has registered yet.
    pub fn has(&self, namespace: &str, name: &str) -> bool {
        let index = self.0.lock().unwrap_or_else(|p| p.into_inner());
        index.by_state.contains_key(&(namespace.to_owned(), name.to_owned()))
    }

    /// For each of `ids`: its owner when that is not `me` (None: `me`, or nobody).
    pub fn owners_other_than(&self, me: &Claimant, ids: &[ObjectId]) -> Vec<Option<Claimant>> {
        let index = self.0.lock().unwrap_or_else(|p| p.into_inner());
        ids.iter()
            .map(|id| {
                let owner = index.by_object.get(id).and_then(|claimants| claimants.first());
                owner.filter(|owner| ***owner != *me).map(|owner| (**owner).clone())
            })
            .collect()
    }

    /// Whether some DesiredState declares the object.
    pub fn declared(&self, id: &ObjectId) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).by_object.contains_key(id)
    }
}

fn remove(index: &mut Index, key: &(String, String)) {
    if let Some((claimant, parsed)) = index.by_state.remove(key) {
        for id in ids(&parsed) {
            if let Some(claimants) = index.by_object.get_mut(&id) {
                claimants.retain(|c| *c != claimant);
                if claimants.is_empty() {
                    index.by_object.remove(&id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drift::{DeclaredObject, ObjectKey, Origin, ParsedSources};

    fn parse(names: &[&str]) -> Arc<Declarations> {
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
                object: serde_json::json!({}),
                origin: Origin { config_map: "c".into(), key: "k".into(), document: 0, item: None },
            })
            .collect();
        Arc::new(Declarations::from(ParsedSources { revision: None, objects }))
    }

    fn claimant(name: &str, second: i64) -> Claimant {
        Claimant { created: Some(Timestamp::from_second(second).unwrap()), namespace: "shop".into(), name: name.into() }
    }

    #[test]
    fn the_oldest_declaration_owns_whatever_order_they_register_in() {
        let (old, young) = (claimant("platform", 100), claimant("team", 200));
        let frontend = id_of("apps", "Deployment", Some("shop"), "frontend");
        let api = id_of("apps", "Deployment", Some("shop"), "api");
        for order in [[&old, &young], [&young, &old]] {
            let claims = Claims::default();
            for who in order {
                let names: &[&str] = if *who == old { &["frontend"] } else { &["frontend", "api"] };
                claims.register(who, &parse(names));
            }
            let ids = [frontend.clone(), api.clone()];
            assert_eq!(claims.owners_other_than(&young, &ids), vec![Some(old.clone()), None]);
            assert_eq!(claims.owners_other_than(&old, &ids), vec![None, Some(young.clone())]);
            assert!(claims.declared(&api) && claims.declared(&frontend));
            // The owner drops it: the other takes it over.
            claims.register(&old, &parse(&[]));
            assert_eq!(claims.owners_other_than(&young, &ids), vec![None, None]);
            claims.forget("shop", "team");
            assert!(!claims.declared(&api) && !claims.has("shop", "team") && claims.has("shop", "platform"));
        }
    }
}
