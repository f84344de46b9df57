//! Undeclared objects: which kinds a DesiredState owns beyond what its
//! sources declare, and which objects of those kinds are never drift.
//!
//! Pure: the drift controller hands over each candidate's metadata (as the
//! API server set it) and what it knows of the namespace; these rules say
//! whether the object is exempt. No exemption can be claimed by whoever
//! creates the object: labels, annotations and field manager names are
//! never read. What counts is server-set (`creationTimestamp`, `uid`), a
//! name the control plane itself takes, a controller that exists and could
//! have made the object, or what the DesiredState's own spec lists.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;

use crate::api::{KindRef, NamedObject, Undeclared};

/// The kinds owned without configuration: workloads, RBAC, credentials,
/// configuration and networking (plus every declared kind).
pub const DEFAULT_KINDS: &[(&str, &str)] = &[
    ("apps", "Deployment"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ReplicaSet"),
    ("batch", "CronJob"),
    ("batch", "Job"),
    ("", "Pod"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("", "ServiceAccount"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("", "Service"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "NetworkPolicy"),
];

/// (API group, kind).
type GroupKind = (&'static str, &'static str);

/// Built-in controllers and what they create: an object controlled by one
/// of these is exempt only as a child of the kind that makes it.
const CONTROLLERS: &[(GroupKind, GroupKind)] = &[
    (("apps", "Deployment"), ("apps", "ReplicaSet")),
    (("apps", "ReplicaSet"), ("", "Pod")),
    (("apps", "StatefulSet"), ("", "Pod")),
    (("apps", "StatefulSet"), ("apps", "ControllerRevision")),
    (("apps", "DaemonSet"), ("", "Pod")),
    (("apps", "DaemonSet"), ("apps", "ControllerRevision")),
    (("batch", "Job"), ("", "Pod")),
    (("batch", "CronJob"), ("batch", "Job")),
];

/// Kinds that carry credentials or rights: never exempt by an owner
/// reference to anything but a built-in controller (a RoleBinding "owned"
/// by someone's AccessRequest is still a RoleBinding someone made).
const CREDENTIALS: &[(&str, &str)] = &[
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("", "ServiceAccount"),
    ("", "Secret"),
];

/// Objects the control plane creates in every namespace, by kind and name.
const CONTROL_PLANE: &[(&str, &str, &str)] =
    &[("", "ConfigMap", "kube-root-ca.crt"), ("", "ServiceAccount", "default")];

/// Namespaces the control plane owns: nothing in them is undeclared drift.
pub fn is_control_plane_namespace(namespace: &str) -> bool {
    namespace.starts_with("kube-")
}

/// The kinds a DesiredState owns: the default set (or the spec's own),
/// with `include`, without `exclude`, plus the declared kinds. Empty when
/// undeclared objects are off.
pub fn owned_kinds(policy: &Undeclared, declared: impl IntoIterator<Item = KindRef>) -> BTreeSet<KindRef> {
    if !policy.enabled {
        return BTreeSet::new();
    }
    let base: Vec<KindRef> = match &policy.kinds {
        Some(kinds) => kinds.clone(),
        None => DEFAULT_KINDS.iter().map(|(group, kind)| kind_ref(group, kind)).collect(),
    };
    let mut kinds: BTreeSet<KindRef> = base.into_iter().chain(policy.include.iter().cloned()).collect();
    kinds.extend(declared);
    for excluded in &policy.exclude {
        kinds.remove(excluded);
    }
    kinds
}

fn kind_ref(group: &str, kind: &str) -> KindRef {
    KindRef { group: group.to_owned(), kind: kind.to_owned() }
}

/// An undeclared object's metadata, as the rules read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub created: Option<Timestamp>,
    /// The controller owner reference, if any.
    pub controller: Option<Owner<'a>>,
}

/// An owner reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner<'a> {
    /// `apiVersion` as the reference has it (`apps/v1`).
    pub api_version: &'a str,
    pub kind: &'a str,
    pub uid: &'a str,
}

impl Owner<'_> {
    fn group(&self) -> &str {
        self.api_version.split_once('/').map_or("", |(group, _)| group)
    }
}

/// What the rules know besides the candidate.
pub struct Known<'a> {
    /// When the DesiredState was created: what is older is not its to judge.
    pub owner_since: Option<Timestamp>,
    /// Kinds whose objects in the namespace are all watched: an owner of
    /// one of them that is not found does not exist.
    pub watched: &'a HashSet<KindRef>,
    /// uid -> (group, kind) of every watched object.
    pub uids: &'a HashMap<String, Arc<KindRef>>,
    /// The spec's ignore list.
    pub ignore: &'a [NamedObject],
    /// (namespace, name) of the RoleBindings the operator keeps for open grants.
    pub grant_bindings: &'a HashSet<(String, String)>,
    /// (namespace, name) of the DesiredStates' source ConfigMaps.
    pub sources: &'a HashSet<(String, String)>,
    /// Now: a young RoleBinding named like a grant's waits for the caches.
    pub now: Timestamp,
}

/// How long a RoleBinding named like a grant's (`driftwarden-...`) whose
/// request the caches do not know yet is left alone: the operator made it
/// for a request its watch has not delivered yet (after an API server
/// restart the watches back off up to 30 s). After that it is judged.
pub const GRANT_CACHE_GRACE: k8s_openapi::jiff::SignedDuration = k8s_openapi::jiff::SignedDuration::from_secs(60);

/// Why an undeclared object is not drift.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exemption {
    /// Created by the control plane (`kube-root-ca.crt`, `default`).
    ControlPlane,
    /// Made by a controller that exists and makes this kind.
    Controlled,
    /// A grant's RoleBinding, kept by the operator while the grant is open.
    Grant,
    /// Named like a grant's and younger than [`GRANT_CACHE_GRACE`]: judged
    /// once the grace is over (the caches may not know its request yet).
    GrantPending,
    /// A source ConfigMap.
    Source,
    /// Listed in `spec.undeclared.ignore`.
    Ignored,
    /// Older than the DesiredState: not created under it.
    Predates,
}

/// Why `candidate` is not drift, or None when it is.
pub fn exemption(candidate: &Candidate<'_>, known: &Known<'_>) -> Option<Exemption> {
    let (group, kind, name) = (candidate.group, candidate.kind, candidate.name);
    let names = |namespace: &str| (namespace.to_owned(), name.to_owned());
    if CONTROL_PLANE.iter().any(|(g, k, n)| *g == group && *k == kind && *n == name) {
        return Some(Exemption::ControlPlane);
    }
    if known.ignore.iter().any(|rule| {
        rule.kind == kind && rule.name == name && rule.namespace.as_deref().is_none_or(|ns| ns == candidate.namespace)
    }) {
        return Some(Exemption::Ignored);
    }
    if group == "rbac.authorization.k8s.io"
        && kind == "RoleBinding"
        && known.grant_bindings.contains(&names(candidate.namespace))
    {
        return Some(Exemption::Grant);
    }
    if group == "rbac.authorization.k8s.io"
        && kind == "RoleBinding"
        && name.starts_with("driftwarden-")
        && candidate.created.is_some_and(|created| known.now < created + GRANT_CACHE_GRACE)
    {
        return Some(Exemption::GrantPending);
    }
    if group.is_empty() && kind == "ConfigMap" && known.sources.contains(&names(candidate.namespace)) {
        return Some(Exemption::Source);
    }
    if let Some(owner) = &candidate.controller
        && controlled(group, kind, owner, known)
    {
        return Some(Exemption::Controlled);
    }
    // Second precision on both sides: an object created in the same second
    // as the DesiredState counts as older (`kubectl apply -f platform/` makes
    // the DesiredState and what the platform sets up beside it at once).
    if let (Some(created), Some(since)) = (candidate.created, known.owner_since)
        && created <= since
    {
        return Some(Exemption::Predates);
    }
    None
}

/// Whether `owner` exists and is a controller that makes `group/kind`.
fn controlled(group: &str, kind: &str, owner: &Owner<'_>, known: &Known<'_>) -> bool {
    let owner_kind = kind_ref(owner.group(), owner.kind);
    let builtin = CONTROLLERS.iter().any(|((g, k), _)| *g == owner_kind.group && *k == owner_kind.kind);
    if builtin {
        let makes = CONTROLLERS.iter().any(|(parent, child)| {
            *parent == (owner_kind.group.as_str(), owner_kind.kind.as_str()) && *child == (group, kind)
        });
        // The owner must be the object it claims to be: a watched kind's
        // object that is not in the cache does not exist.
        return makes
            && match known.uids.get(owner.uid) {
                Some(found) => **found == owner_kind,
                None => !known.watched.contains(&owner_kind),
            };
    }
    if CREDENTIALS.iter().any(|(g, k)| *g == group && *k == kind) || owner_kind.group == "driftwarden.io" {
        return false;
    }
    // A controller of a kind the operator does not watch (a CRD's
    // operator): left to it. The garbage collector deletes the object when
    // that owner does not exist.
    match known.uids.get(owner.uid) {
        Some(found) => **found == owner_kind,
        None => !known.watched.contains(&owner_kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    struct World {
        watched: HashSet<KindRef>,
        uids: HashMap<String, Arc<KindRef>>,
        ignore: Vec<NamedObject>,
        grant_bindings: HashSet<(String, String)>,
        sources: HashSet<(String, String)>,
    }

    impl World {
        fn new() -> Self {
            let watched = DEFAULT_KINDS.iter().map(|(g, k)| kind_ref(g, k)).collect();
            let uids = [
                ("rs-1", ("apps", "ReplicaSet")),
                ("deploy-1", ("apps", "Deployment")),
                ("ar-1", ("driftwarden.io", "AccessRequest")),
                ("cert-1", ("cert-manager.io", "Certificate")),
            ]
            .into_iter()
            .map(|(uid, (g, k))| (uid.to_owned(), Arc::new(kind_ref(g, k))))
            .collect();
            World {
                watched,
                uids,
                ignore: vec![NamedObject { kind: "ConfigMap".into(), name: "keep-me".into(), namespace: None }],
                grant_bindings: [("shop".to_owned(), "driftwarden-alice-fix".to_owned())].into(),
                sources: [("shop".to_owned(), "shop-state".to_owned())].into(),
            }
        }

        fn known(&self) -> Known<'_> {
            Known {
                owner_since: Some(at(0)),
                watched: &self.watched,
                uids: &self.uids,
                ignore: &self.ignore,
                grant_bindings: &self.grant_bindings,
                sources: &self.sources,
                now: at(1000),
            }
        }
    }

    fn candidate<'a>(group: &'a str, kind: &'a str, name: &'a str, owner: Option<Owner<'a>>) -> Candidate<'a> {
        Candidate { group, kind, namespace: "shop", name, created: Some(at(60)), controller: owner }
    }

    fn owner<'a>(api_version: &'a str, kind: &'a str, uid: &'a str) -> Option<Owner<'a>> {
        Some(Owner { api_version, kind, uid })
    }

    #[test]
    fn exemptions() {
        let world = World::new();
        let known = world.known();
        let cases: Vec<(&str, Candidate<'_>, Option<Exemption>)> = vec![
            ("a new Deployment", candidate("apps", "Deployment", "miner", None), None),
            ("the root CA", candidate("", "ConfigMap", "kube-root-ca.crt", None), Some(Exemption::ControlPlane)),
            ("the default SA", candidate("", "ServiceAccount", "default", None), Some(Exemption::ControlPlane)),
            ("another SA", candidate("", "ServiceAccount", "miner", None), None),
            (
                "a Deployment's ReplicaSet",
                candidate("apps", "ReplicaSet", "web-1", owner("apps/v1", "Deployment", "deploy-1")),
                Some(Exemption::Controlled),
            ),
            (
                "a ReplicaSet's Pod",
                candidate("", "Pod", "web-1-x", owner("apps/v1", "ReplicaSet", "rs-1")),
                Some(Exemption::Controlled),
            ),
            (
                "a Pod claiming a ReplicaSet that does not exist",
                candidate("", "Pod", "p", owner("apps/v1", "ReplicaSet", "nope")),
                None,
            ),
            (
                "a Pod claiming a Deployment (which makes ReplicaSets)",
                candidate("", "Pod", "p", owner("apps/v1", "Deployment", "deploy-1")),
                None,
            ),
            (
                "a Service claiming a Deployment",
                candidate("", "Service", "s", owner("apps/v1", "Deployment", "deploy-1")),
                None,
            ),
            (
                "a Pod claiming a uid of another kind",
                candidate("", "Pod", "p", owner("apps/v1", "ReplicaSet", "deploy-1")),
                None,
            ),
            (
                "a RoleBinding owned by an AccessRequest",
                candidate(
                    "rbac.authorization.k8s.io",
                    "RoleBinding",
                    "mine",
                    owner("driftwarden.io/v1alpha1", "AccessRequest", "ar-1"),
                ),
                None,
            ),
            (
                "a Secret owned by a CRD",
                candidate("", "Secret", "tls", owner("cert-manager.io/v1", "Certificate", "cert-1")),
                None,
            ),
            (
                "a Service owned by a CRD",
                candidate("", "Service", "svc", owner("example.com/v1", "App", "app-1")),
                Some(Exemption::Controlled),
            ),
            (
                "a grant's binding",
                candidate("rbac.authorization.k8s.io", "RoleBinding", "driftwarden-alice-fix", None),
                Some(Exemption::Grant),
            ),
            (
                "an ended grant's binding",
                candidate("rbac.authorization.k8s.io", "RoleBinding", "driftwarden-old", None),
                None,
            ),
            ("a source", candidate("", "ConfigMap", "shop-state", None), Some(Exemption::Source)),
            ("ignored by name", candidate("", "ConfigMap", "keep-me", None), Some(Exemption::Ignored)),
        ];
        for (what, candidate, expected) in cases {
            assert_eq!(exemption(&candidate, &known), expected, "{what}");
        }
        let young = Candidate {
            created: Some(at(990)),
            ..candidate("rbac.authorization.k8s.io", "RoleBinding", "driftwarden-new", None)
        };
        assert_eq!(exemption(&young, &known), Some(Exemption::GrantPending), "its request may not be cached yet");
        let old = Candidate { created: Some(at(-1)), ..candidate("apps", "Deployment", "legacy", None) };
        assert_eq!(exemption(&old, &known), Some(Exemption::Predates));
        let same_second = Candidate { created: Some(at(0)), ..candidate("apps", "Deployment", "setup", None) };
        assert_eq!(exemption(&same_second, &known), Some(Exemption::Predates));
        let next_second = Candidate { created: Some(at(1)), ..candidate("apps", "Deployment", "later", None) };
        assert_eq!(exemption(&next_second, &known), None);
    }

    #[test]
    fn owned_kinds_default_narrow_widen_off() {
        let declared = [kind_ref("example.com", "Widget")];
        let default = owned_kinds(&Undeclared::default(), declared.clone());
        assert_eq!(default.len(), DEFAULT_KINDS.len() + 1);
        assert!(
            default.contains(&kind_ref("apps", "Deployment")) && default.contains(&kind_ref("example.com", "Widget"))
        );
        let narrowed = Undeclared {
            exclude: vec![kind_ref("", "ConfigMap")],
            include: vec![kind_ref("", "PersistentVolumeClaim")],
            ..Undeclared::default()
        };
        let kinds = owned_kinds(&narrowed, declared.clone());
        assert!(!kinds.contains(&kind_ref("", "ConfigMap")) && kinds.contains(&kind_ref("", "PersistentVolumeClaim")));
        let only = Undeclared { kinds: Some(vec![kind_ref("apps", "Deployment")]), ..Undeclared::default() };
        assert_eq!(owned_kinds(&only, []).len(), 1);
        let off = Undeclared { enabled: false, ..Undeclared::default() };
        assert!(owned_kinds(&off, declared).is_empty());
        assert!(is_control_plane_namespace("kube-system") && !is_control_plane_namespace("shop"));
    }
}
