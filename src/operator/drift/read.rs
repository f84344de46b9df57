//! The read step of a drift pass: the sources (verified, then parsed, or
//! the last verified state while newer ones are refused), the live
//! declared objects and the undeclared objects of the owned kinds, from the
//! watch caches. Nothing here decides what to do about them.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, PartialObjectMeta};
use kube::core::{GroupVersionKind, Selector, SelectorExt};
use kube::discovery::{Discovery, Scope as DiscoveryScope};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tracing::{info, warn};

use super::cache::Cache;
use super::memory::{CachedParse, Fingerprint, Memory, Refused};
use super::plan::Extra;
use super::watches::{self, WatchKey};
use super::{Context, DISCOVERY_REFRESH, Error, PUBLISH_SETTLE, WATCH_READY_TIMEOUT, claims, snapshot, status};
use crate::api::{DesiredState, DesiredStateStatus, KindRef, SourceRef};
use crate::drift::kept::Declarations;
use crate::drift::{self, KindResolver, Scope, SourceConfigMap, SourceScope, signature, undeclared};

/// The sources a pass enforces.
pub(super) enum Sources {
    /// The current sources, or (while they are refused) the last verified ones.
    Enforce { entry: CachedParse, refusal: Option<status::Refusal>, resolver: Resolver },
    /// Refused, and nothing verified is known yet.
    Refused(status::Refusal),
    /// A split source caught half-way through a publish: look again in a moment.
    Settling,
}

/// Waits until the caches a pass reads have listed: the source ConfigMaps,
/// the trust anchors and what the gate reads (those two not forever).
pub(super) async fn caches_listed(context: &Context) -> Result<(), Error> {
    context.source_meta_listed.wait().await;
    if tokio::time::timeout(WATCH_READY_TIMEOUT, context.trust.listed.wait()).await.is_err() {
        return Err(Error::TrustNotReady);
    }
    if tokio::time::timeout(WATCH_READY_TIMEOUT, context.gate.listed.wait()).await.is_err() {
        return Err(Error::GateNotReady);
    }
    Ok(())
}

/// Fetches the sources, verifies their signature and parses them (pure),
/// unless they are unchanged since the last good parse (or the last
/// refusal). Refused sources change nothing: the last verified state is
/// still enforced, so breaking or forging a source never switches the
/// operator off. `quiet`: only named objects changed since the last pass
/// (no source ConfigMap, key or namespace did), so the sources found then
/// stand; with a label selector, finding them walks every ConfigMap.
pub(super) async fn sources(
    context: &Context,
    state: &DesiredState,
    old: &DesiredStateStatus,
    memory: &mut Memory,
    quiet: bool,
) -> Result<Sources, Error> {
    let namespace = state.namespace().unwrap_or_default();
    let name = state.name_any();
    let generation = state.metadata.generation;
    let found = match memory.sources_found.take() {
        Some((of, found)) if quiet && of == generation => found,
        _ => {
            let found = source_fingerprint(&context.source_meta, &namespace, &state.spec.sources);
            let names = found.iter().map(|(name, _)| name.clone()).collect();
            let me = ObjectRef::from_obj(state);
            context.sources_found.lock().unwrap_or_else(|p| p.into_inner()).insert(me, names);
            found
        }
    };
    memory.sources_found = Some((generation, found.clone()));
    let fingerprint: Fingerprint = (super::memory::spec_of_sources(state), found, context.trust.fingerprint(state));
    let remembered = memory.parsed.clone();
    let still_refused = memory.refused.as_ref().filter(|r| r.fingerprint == fingerprint).map(|r| r.refusal.clone());
    let scope = SourceScope { namespace: &namespace, operator_namespace: &context.settings.operator_namespace };
    // The highest sequence this DesiredState accepted: in memory, or (after
    // a restart) in its status.
    let accepted = remembered
        .as_ref()
        .and_then(|c| c.signature.as_ref().map(|s| s.sequence))
        .max(old.signature.as_ref().and_then(|s| u64::try_from(s.sequence).ok()));
    let (current, resolver, refusal) =
        match (remembered.clone().filter(|c| c.fingerprint == fingerprint), still_refused) {
            (Some(current), _) => {
                let current = if current.generation == generation {
                    current
                } else {
                    let renewed = current.under(generation);
                    memory.parsed = Some(renewed.clone());
                    memory.new_parse();
                    renewed
                };
                (Some(current), Resolver::now(context).await, None)
            }
            (None, Some(refusal)) => (None, Resolver::now(context).await, Some(refusal)),
            (None, None) => {
                let (config_maps, missing) = read_sources(&context.client, &namespace, &state.spec.sources)
                    .await
                    .map_err(|source| Error::ReadSources { desired_state: format!("{namespace}/{name}"), source })?;
                let config_maps = Arc::new(config_maps);
                match check_sources(context, state, accepted, config_maps.clone(), missing, &scope).await? {
                    Ok((sources, signature, resolver)) => {
                        let known = remembered.as_ref().and_then(|c| c.signature.as_ref());
                        if signature.is_some() && known != signature.as_ref() {
                            keep_verified(context, &namespace, &name, &config_maps).await;
                        }
                        let entry = CachedParse { fingerprint: fingerprint.clone(), sources, signature, generation };
                        memory.parsed = Some(entry.clone());
                        memory.refused = None;
                        memory.new_parse();
                        (Some(entry), resolver, None)
                    }
                    Err((refusal, resolver)) => {
                        let since = memory.refused.as_ref().map_or_else(Instant::now, |r| r.since);
                        memory.refused =
                            Some(Refused { fingerprint: fingerprint.clone(), refusal: refusal.clone(), since });
                        // A split source is written one ConfigMap at a time: a
                        // set caught half-way through a publish is given a moment
                        // to complete before it is reported.
                        if refusal.reason == "SignatureIncomplete" && since.elapsed() < PUBLISH_SETTLE {
                            return Ok(Sources::Settling);
                        }
                        (None, resolver, Some(refusal))
                    }
                }
            }
        };
    // What is enforced: the current sources, else the last verified ones
    // (after a restart, the copy kept of them).
    let enforced = match current.or(remembered) {
        Some(entry) => Some(entry),
        None if context.settings.verify_sources => recover_verified(context, state, old, &scope, memory).await,
        None => None,
    };
    Ok(match enforced {
        Some(entry) => Sources::Enforce { entry, refusal, resolver },
        None => Sources::Refused(refusal.unwrap_or_else(status::Refusal::unknown)),
    })
}

/// The live side of a pass, from the watch caches.
#[derive(Default)]
pub(super) struct Live {
    /// Per declared object: its watch (None: a kind discovery does not know).
    pub resources: Vec<Option<WatchKey>>,
    pub lives: Vec<Option<Arc<DynamicObject>>>,
    /// Objects of the owned kinds in the managed namespaces that no source declares.
    pub extras: Vec<Extra>,
    /// What the exemption rules read besides each object.
    pub watched: HashSet<KindRef>,
    pub uids: HashMap<String, Arc<KindRef>>,
    pub grant_bindings: HashSet<(String, String)>,
    pub source_config_maps: HashSet<(String, String)>,
    /// Owned kinds the operator may not watch, as `kind in namespace`.
    pub unwatched: Vec<String>,
    /// Per declared object: the (older) DesiredState that owns it instead.
    pub owners: Vec<Option<super::claims::Claimant>>,
    /// The declared kinds' caches, which a later pass reads changed objects from.
    pub stores: HashMap<WatchKey, Cache<DynamicObject>>,
    /// The caches of kinds watched only for undeclared objects.
    pub metadata: HashMap<WatchKey, Cache<PartialObjectMeta<DynamicObject>>>,
    /// The watches whose undeclared objects are `extras`.
    pub extra_keys: HashSet<WatchKey>,
}

/// Watches exactly the declared kinds where they are declared, and the
/// owned kinds (as metadata) in every managed namespace; waits until they
/// have listed (None: not yet) and reads the live objects from them.
pub(super) async fn live(
    context: &Context,
    state: &DesiredState,
    parsed: &Declarations,
    resolver: &Resolver,
    now: Timestamp,
) -> Option<Live> {
    let me = ObjectRef::from_obj(state);
    let mut keys = BTreeSet::new();
    let mut resources = Vec::with_capacity(parsed.objects.len());
    for declared in &parsed.objects {
        let resource = resolver.resource(&declared.key.api_version, &declared.key.kind);
        let key = resource
            .as_ref()
            .map(|(r, namespaced)| WatchKey::new(r, namespaced.then(|| declared.key.namespace.clone()).flatten()));
        if let Some(key) = &key {
            keys.insert(key.clone());
        }
        resources.push(key);
    }
    let stores = context.watches.use_exactly(&me, &keys);

    // The owned kinds, in the namespaces this DesiredState manages: those
    // of declared kinds are in the declared watches already.
    let namespaces = managed_namespaces(state, parsed, &context.settings.operator_namespace);
    let declared_kinds = keys.iter().map(WatchKey::kind_ref);
    let owned = undeclared::owned_kinds(&state.spec.undeclared, declared_kinds);
    let mut extra_keys = BTreeSet::new();
    let mut from_declared = Vec::new();
    for kind in &owned {
        let Some((resource, true)) = resolver.kind(&kind.group, &kind.kind) else { continue };
        for namespace in &namespaces {
            let declared = keys.iter().find(|k| {
                k.group == kind.group && k.kind == kind.kind && k.namespace.as_deref() == Some(namespace.as_str())
            });
            match declared {
                Some(key) => from_declared.push(key.clone()),
                None => {
                    extra_keys.insert(WatchKey::new(&resource, Some(namespace.clone())));
                }
            }
        }
    }
    let metadata = context.metadata_watches.use_exactly(&me, &extra_keys);
    let ready = watches::wait_until_ready(&stores, WATCH_READY_TIMEOUT).await
        && watches::wait_until_ready(&metadata, WATCH_READY_TIMEOUT).await;
    if !ready {
        return None;
    }

    let forbidden = context.metadata_watches.forbidden(&extra_keys);
    let unwatched =
        forbidden.iter().map(|k| format!("{} in {}", k.plural, k.namespace.as_deref().unwrap_or_default())).collect();
    let lives = parsed
        .objects
        .iter()
        .zip(&resources)
        .map(|(declared, key)| stores.get(key.as_ref()?)?.0.get(&declared.key.name))
        .collect();

    // Every object of the owned kinds, and which of them no source declares.
    let declared_names: HashSet<(&str, &str, Option<&str>, &str)> = parsed
        .objects
        .iter()
        .map(|d| (group_of(&d.key.api_version), d.key.kind.as_str(), d.key.namespace.as_deref(), d.key.name.as_str()))
        .collect();
    let mut extras = Vec::new();
    let mut uids = HashMap::new();
    let mut watched = HashSet::new();
    let mut consider = |(key, kind): &(Arc<WatchKey>, Arc<KindRef>), meta: &ObjectMeta| {
        let (Some(uid), Some(name)) = (&meta.uid, &meta.name) else { return };
        uids.insert(uid.clone(), kind.clone());
        if declared_names.contains(&(key.group.as_str(), key.kind.as_str(), key.namespace.as_deref(), name.as_str())) {
            return;
        }
        extras.extend(extra_of(key, meta));
    };
    let mut extra_keys: HashSet<WatchKey> = HashSet::new();
    // One key and kind per watch, shared by all its objects.
    let shared = |key: &WatchKey| (Arc::new(key.clone()), Arc::new(key.kind_ref()));
    for key in &from_declared {
        extra_keys.insert(key.clone());
        watched.insert(key.kind_ref());
        let shared = shared(key);
        for object in stores.get(key).map(|(store, _)| store.state()).unwrap_or_default() {
            consider(&shared, &object.metadata);
        }
    }
    for (key, (store, _)) in metadata.iter().filter(|(key, _)| !forbidden.contains(key)) {
        extra_keys.insert(key.clone());
        watched.insert(key.kind_ref());
        let shared = shared(key);
        for object in store.state() {
            consider(&shared, &object.metadata);
        }
    }
    // Declared by another DesiredState: its, not undeclared.
    extras.retain(|e| {
        !context.claims.declared(&claims::id_of(&e.key.group, &e.key.kind, e.key.namespace.as_deref(), &e.name))
    });
    extras.sort_by(|a, b| (&a.key, &a.name).cmp(&(&b.key, &b.name)));
    let me_claimant = claims::Claimant {
        created: state.metadata.creation_timestamp.as_ref().map(|t| t.0),
        namespace: state.namespace().unwrap_or_default(),
        name: state.name_any(),
    };
    let ids: Vec<claims::ObjectId> = parsed
        .objects
        .iter()
        .map(|d| claims::id_of(&d.key.group, &d.key.kind, d.key.namespace.as_deref(), &d.key.name))
        .collect();
    let owners = context.claims.owners_other_than(&me_claimant, &ids);

    let mut grant_bindings = HashSet::new();
    let mut source_config_maps = HashSet::new();
    for namespace in &namespaces {
        for binding in context.gate.open_grant_bindings(namespace, now) {
            grant_bindings.insert((namespace.clone(), binding));
        }
        // Published sources (the label only publishers may write, under the
        // chart's source guard), whether or not a DesiredState reads them yet.
        for config_map in context.source_meta.state().iter().filter(|cm| {
            cm.metadata.namespace.as_deref() == Some(namespace.as_str())
                && cm.labels().contains_key(signature::SOURCE_LABEL)
        }) {
            source_config_maps.insert((namespace.clone(), config_map.name_any()));
        }
        for other in context.desired_states.state().iter().filter(|ds| ds.namespace().as_deref() == Some(namespace)) {
            for (config_map, _) in source_fingerprint(&context.source_meta, namespace, &other.spec.sources) {
                source_config_maps.insert((namespace.clone(), config_map));
            }
        }
    }
    let stores = stores.into_iter().map(|(key, (store, _))| (key, store)).collect();
    let metadata = metadata.into_iter().map(|(key, (store, _))| (key, store)).collect();
    Some(Live {
        resources,
        lives,
        extras,
        watched,
        uids,
        grant_bindings,
        source_config_maps,
        unwatched,
        owners,
        stores,
        metadata,
        extra_keys,
    })
}

/// An object of an owned kind as the plan judges it, if it has a name and uid.
fn extra_of(key: &Arc<WatchKey>, meta: &ObjectMeta) -> Option<Extra> {
    let controller = meta.owner_references.iter().flatten().find(|o| o.controller == Some(true));
    Some(Extra {
        key: key.clone(),
        name: meta.name.clone()?,
        uid: meta.uid.clone()?,
        created: meta.creation_timestamp.as_ref().map(|t| t.0),
        deleting: meta.deletion_timestamp.is_some(),
        controller: controller.map(|o| (o.api_version.clone(), o.kind.clone(), o.uid.clone())),
    })
}

/// What following one undeclared change leaves the plan to judge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rejudge {
    /// Nothing here: not a kind and namespace whose undeclared objects
    /// count here, or an object another DesiredState declares.
    Nothing,
    /// The object named, and only it.
    It,
    /// Every undeclared object: one went whose uid may have exempted others
    /// (the controller of a ReplicaSet, say).
    All,
    /// A change this cannot follow: a full pass reads everything.
    Cannot,
}

impl Live {
    /// Follows a change of an object no source here declares, named by a
    /// watch of `key`, into `extras` and `uids` as a full read would leave
    /// them.
    pub fn follow_undeclared(
        &mut self,
        key: &WatchKey,
        name: &str,
        declared_elsewhere: &dyn Fn(&claims::ObjectId) -> bool,
    ) -> Rejudge {
        if !self.extra_keys.contains(key) {
            return Rejudge::Nothing;
        }
        let meta = match (self.stores.get(key), self.metadata.get(key)) {
            (Some(store), _) => store.get(name).map(|o| o.metadata.clone()),
            (None, Some(store)) => store.get(name).map(|o| o.metadata.clone()),
            (None, None) => return Rejudge::Cannot,
        };
        let fresh = meta.as_ref().and_then(|meta| extra_of(&Arc::new(key.clone()), meta));
        let known = Extra::position(&self.extras, key, name);
        let id = claims::id_of(&key.group, &key.kind, key.namespace.as_deref(), name);
        match (known, fresh) {
            // Still there: its times, owner and deletion are read again.
            (Ok(at), Some(fresh)) if fresh.uid == self.extras[at].uid => {
                self.extras[at] = fresh;
                Rejudge::It
            }
            // Gone, or re-created: what was known of it goes.
            (Ok(at), fresh) => {
                let gone = self.extras.remove(at);
                self.uids.remove(&gone.uid);
                match fresh.map(|fresh| self.insert(fresh, &id, declared_elsewhere)) {
                    Some(Rejudge::Cannot) => Rejudge::Cannot,
                    _ => Rejudge::All,
                }
            }
            (Err(_), Some(fresh)) => self.insert(fresh, &id, declared_elsewhere),
            // Gone, and not known as undeclared here (another DesiredState
            // declares it, say): its uid may be in `uids`, which only a full
            // read clears.
            (Err(_), None) => Rejudge::Cannot,
        }
    }

    /// A new undeclared object (or one another DesiredState declares:
    /// known by uid only). A uid already known is not followed.
    fn insert(
        &mut self,
        fresh: Extra,
        id: &claims::ObjectId,
        declared_elsewhere: &dyn Fn(&claims::ObjectId) -> bool,
    ) -> Rejudge {
        if self.uids.insert(fresh.uid.clone(), Arc::new(fresh.key.kind_ref())).is_some() {
            return Rejudge::Cannot;
        }
        if declared_elsewhere(id) {
            return Rejudge::Nothing;
        }
        let (Ok(at) | Err(at)) = Extra::position(&self.extras, &fresh.key, &fresh.name);
        self.extras.insert(at, fresh);
        Rejudge::It
    }
}

/// The inventory as stored, read once after a start (None: it could not be
/// read; the pass waits rather than judge Git's removals as creations).
/// A damaged one is reported and started afresh.
pub(super) async fn inventory(
    context: &Context,
    state: &DesiredState,
    memory: &mut Memory,
) -> Option<Vec<crate::drift::inventory::Entry>> {
    if let Some(stored) = &memory.inventory {
        return Some(stored.clone());
    }
    let (namespace, name) = (state.namespace().unwrap_or_default(), state.name_any());
    let operator_namespace = &context.settings.operator_namespace;
    match super::inventory::load(&context.client, operator_namespace, &namespace, &name).await {
        Ok(stored) => {
            let stored = stored.unwrap_or_default();
            memory.inventory = Some(stored.clone());
            Some(stored)
        }
        Err(super::inventory::Error::Api(error)) => {
            warn!(%error, desired_state = %name, %namespace, "reading the inventory failed; will retry");
            None
        }
        Err(error) => {
            warn!(%error, desired_state = %name, %namespace, "the inventory is damaged; starting a new one");
            let note = format!(
                "{error}: a new inventory starts from the current revision; nothing is pruned from the old one"
            );
            super::execute::publish(context, state, EventType::Warning, "InventoryDamaged", note).await;
            memory.inventory = Some(Vec::new());
            Some(Vec::new())
        }
    }
}

fn group_of(api_version: &str) -> &str {
    api_version.split_once('/').map_or("", |(group, _)| group)
}

/// The namespaces whose undeclared objects a DesiredState owns: its own,
/// or (in the operator's namespace) those its sources declare objects in.
/// Never the operator's own namespace, nor the control plane's.
fn managed_namespaces(state: &DesiredState, parsed: &Declarations, operator_namespace: &str) -> BTreeSet<String> {
    let own = state.namespace().unwrap_or_default();
    let mut namespaces: BTreeSet<String> = if own == operator_namespace {
        parsed.objects.iter().filter_map(|d| d.key.namespace.clone()).collect()
    } else {
        [own].into()
    };
    namespaces.retain(|ns| ns != operator_namespace && !undeclared::is_control_plane_namespace(ns));
    namespaces
}

/// What the sources are, as far as the metadata cache knows: the name and
/// resourceVersion of every ConfigMap they select, sorted.
pub(super) fn source_fingerprint(
    meta: &Store<PartialObjectMeta<ConfigMap>>,
    namespace: &str,
    sources: &[SourceRef],
) -> Vec<(String, String)> {
    // Selectors are parsed once here, not once per ConfigMap.
    let names: Vec<&str> = sources.iter().filter_map(|s| s.name.as_deref()).collect();
    let selectors: Vec<Selector> = sources
        .iter()
        .filter(|s| s.name.is_none())
        .filter_map(|s| s.selector.clone().and_then(|sel| Selector::try_from(sel).ok()))
        .collect();
    let version = |cm: &PartialObjectMeta<ConfigMap>| (cm.name_any(), cm.resource_version().unwrap_or_default());
    // Every pass asks: sources named one by one are looked up, not searched
    // for among all the cluster's ConfigMaps.
    let mut found: Vec<(String, String)> = if selectors.is_empty() {
        let named = names.iter().filter_map(|name| meta.get(&ObjectRef::new(name).within(namespace)));
        named.map(|cm| version(&cm)).collect()
    } else {
        meta.state()
            .iter()
            .filter(|cm| cm.metadata.namespace.as_deref() == Some(namespace))
            .filter(|cm| {
                let name = cm.metadata.name.as_deref().unwrap_or_default();
                names.contains(&name) || selectors.iter().any(|s| s.matches(cm.labels()))
            })
            .map(|cm| version(cm))
            .collect()
    };
    found.sort();
    found.dedup();
    found
}

/// The source ConfigMaps, by name or selector, and the names of those that
/// do not exist (an error: a missing source must not read as "manage nothing").
async fn read_sources(
    client: &Client,
    namespace: &str,
    sources: &[SourceRef],
) -> Result<(Vec<SourceConfigMap>, Vec<String>), kube::Error> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut found: Vec<ConfigMap> = Vec::new();
    let mut missing = Vec::new();
    for source in sources {
        match (&source.name, &source.selector) {
            (Some(name), _) => match api.get_opt(name).await? {
                Some(config_map) => found.push(config_map),
                None => missing.push(name.clone()),
            },
            (None, Some(selector)) => {
                let selector = Selector::try_from(selector.clone()).map(|s| s.to_string()).unwrap_or_default();
                found.extend(api.list(&ListParams::default().labels(&selector)).await?.items);
            }
            (None, None) => {}
        }
    }
    found.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    found.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    Ok((found.iter().map(SourceConfigMap::from_config_map).collect(), missing))
}

/// What checking the sources gave: the verified parse, or why they are
/// refused (with the resolver either way).
type Checked = Result<(Arc<Declarations>, Option<signature::Verified>, Resolver), (status::Refusal, Resolver)>;

/// Verifies the sources' signature (unless verification is off) and only
/// then parses them: nothing of unverified content is decompressed, parsed
/// or acted on.
async fn check_sources(
    context: &Context,
    state: &DesiredState,
    accepted: Option<u64>,
    config_maps: Arc<Vec<SourceConfigMap>>,
    missing: Vec<String>,
    scope: &SourceScope<'_>,
) -> Result<Checked, Error> {
    let namespace = scope.namespace;
    if !missing.is_empty() {
        let errors = missing.into_iter().map(|config_map| drift::SourceError::ConfigMap {
            config_map,
            reason: format!("not found in namespace {namespace}"),
        });
        let refusal = status::Refusal::from_errors(&drift::SourceErrors(errors.collect()));
        return Ok(Err((refusal, Resolver::now(context).await)));
    }
    let verified = if context.settings.verify_sources {
        let trusted = context.trust.trusted_for(state);
        match signature::verify(namespace, &config_maps, &trusted, accepted) {
            Ok(verified) => Some(verified),
            Err(error) => {
                let refusal = status::Refusal::from_signature(&error);
                return Ok(Err((refusal, Resolver::now(context).await)));
            }
        }
    } else {
        None
    };
    let (parsed, resolver) = parse(context, &config_maps, scope).await?;
    Ok(match parsed {
        Ok(parsed) => Ok((Arc::new(parsed), verified, resolver)),
        Err(errors) => Err((status::Refusal::from_errors(&errors), resolver)),
    })
}

/// Keeps a copy of sources that just verified, for a restarted operator.
async fn keep_verified(context: &Context, namespace: &str, name: &str, sources: &[SourceConfigMap]) {
    let operator_namespace = &context.settings.operator_namespace;
    if let Err(error) = snapshot::save(&context.client, operator_namespace, namespace, name, sources).await {
        warn!(%error, desired_state = %name, %namespace, "keeping a copy of the verified sources failed");
    }
}

/// The copy of the last verified sources, verified and parsed again, as the
/// state to enforce while the current sources are refused. Remembered under
/// a fingerprint no live source has, so the current sources stay refused.
async fn recover_verified(
    context: &Context,
    state: &DesiredState,
    old: &DesiredStateStatus,
    scope: &SourceScope<'_>,
    memory: &mut Memory,
) -> Option<CachedParse> {
    let (namespace, name) = (scope.namespace, state.name_any());
    let copy = snapshot::load(&context.client, &context.settings.operator_namespace, namespace, &name).await;
    let copy = match copy {
        Ok(copy) if !copy.is_empty() => copy,
        Ok(_) => return None,
        Err(error) => {
            warn!(%error, desired_state = %name, %namespace, "reading the copy of the verified sources failed");
            return None;
        }
    };
    // No older than what status says was enforced.
    let accepted = old.signature.as_ref().and_then(|s| u64::try_from(s.sequence).ok());
    let verified = signature::verify(namespace, &copy, &context.trust.trusted_for(state), accepted).ok()?;
    let (parsed, _) = parse(context, &Arc::new(copy), scope).await.ok()?;
    info!(desired_state = %name, %namespace, sequence = verified.sequence, "enforcing the kept copy of the last verified sources");
    let entry = CachedParse {
        fingerprint: (String::new(), Vec::new(), Vec::new()),
        sources: Arc::new(parsed.ok()?),
        signature: Some(verified),
        generation: state.metadata.generation,
    };
    memory.parsed = Some(entry.clone());
    Some(entry)
}

/// Kind lookups for the parser, from a snapshot of discovery.
pub(super) struct Resolver {
    discovery: Arc<Discovery>,
}

impl Resolver {
    async fn now(context: &Context) -> Resolver {
        Resolver { discovery: context.discovery.read().await.0.clone() }
    }

    /// The preferred resource of a kind, by group and kind name, and
    /// whether it is namespaced.
    fn kind(&self, group: &str, kind: &str) -> Option<(ApiResource, bool)> {
        let (resource, capabilities) =
            self.discovery.get(group)?.recommended_resources().into_iter().find(|(r, _)| r.kind == kind)?;
        Some((resource, capabilities.scope == DiscoveryScope::Namespaced))
    }

    /// The resource of `(apiVersion, kind)` and whether it is namespaced.
    pub(super) fn resource(&self, api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let (resource, capabilities) = self.discovery.resolve_gvk(&GroupVersionKind::gvk(group, version, kind))?;
        Some((resource, capabilities.scope == DiscoveryScope::Namespaced))
    }
}

impl KindResolver for Resolver {
    fn scope(&self, api_version: &str, kind: &str) -> Option<Scope> {
        self.resource(api_version, kind)
            .map(|(_, namespaced)| if namespaced { Scope::Namespaced } else { Scope::Cluster })
    }
}

fn has_unknown_kind(errors: &drift::SourceErrors) -> bool {
    errors
        .0
        .iter()
        .any(|e| matches!(e, drift::SourceError::Document { reason: drift::DocumentError::UnknownKind { .. }, .. }))
}

/// Parses the sources; when they name a kind discovery does not know (a CRD
/// installed a moment ago, say), refreshes discovery (at most every few
/// seconds) and parses once more.
async fn parse(
    context: &Context,
    config_maps: &Arc<Vec<SourceConfigMap>>,
    scope: &SourceScope<'_>,
) -> Result<(Result<Declarations, drift::SourceErrors>, Resolver), Error> {
    let resolver = Resolver::now(context).await;
    let parsed = parse_off_runtime(config_maps, scope, &resolver).await;
    match &parsed {
        Err(errors) if has_unknown_kind(errors) => {
            let mut guard = context.discovery.write().await;
            if guard.1.elapsed() > DISCOVERY_REFRESH {
                let fresh = Discovery::new(context.client.clone()).run().await.map_err(Error::Discovery)?;
                *guard = (Arc::new(fresh), Instant::now());
            }
            let resolver = Resolver { discovery: guard.0.clone() };
            drop(guard);
            Ok((parse_off_runtime(config_maps, scope, &resolver).await, resolver))
        }
        _ => Ok((parsed, resolver)),
    }
}

/// Parsing a large source takes a while (seconds for 10,000 documents on a
/// slow core): on a blocking thread, so that it never stalls the runtime's
/// workers (lease renewals, grant expiry, other reconciles). The result is
/// kept in its compact form, made there too.
async fn parse_off_runtime(
    config_maps: &Arc<Vec<SourceConfigMap>>,
    scope: &SourceScope<'_>,
    resolver: &Resolver,
) -> Result<Declarations, drift::SourceErrors> {
    let (config_maps, resolver) = (config_maps.clone(), Resolver { discovery: resolver.discovery.clone() });
    let (namespace, operator_namespace) = (scope.namespace.to_owned(), scope.operator_namespace.to_owned());
    tokio::task::spawn_blocking(move || {
        let scope = SourceScope { namespace: &namespace, operator_namespace: &operator_namespace };
        drift::parse_sources(&config_maps, &scope, &resolver).map(Declarations::from)
    })
    .await
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()))
}
