//! The drift controller: DesiredState -> its source ConfigMaps -> the
//! declared objects -> watches on exactly their kinds -> the diff against
//! live -> the gate's verdict per drifted object (hold, revert, report) ->
//! reverts, status, Events and metrics.
//!
//! A source that does not parse is reported and changes nothing.

pub mod cached;
mod rejected;
mod snapshot;
pub mod status;
mod trust;
mod watches;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PartialObjectMeta};
use kube::core::{ApiResource, GroupVersionKind, Selector, SelectorExt};
use kube::discovery::{Discovery, Scope as DiscoveryScope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use k8s_openapi::api::rbac::v1::{ClusterRole, Role};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::gate::{self, Caches, RevertLimiter, Subject};
use super::metrics::{ErrorLabels, Metrics, RevertLabels, RevertReason};
use crate::api::{
    AccessRequest, Attribution, DesiredState, DesiredStateStatus, DriftAction, DriftClass, DriftCounts, RevertRecord,
    SessionChange, SourceRef,
};
use crate::drift::{self, DiffOptions, KindResolver, Scope, SourceConfigMap, SourceScope, signature};
use crate::gate::Decision;
use crate::operator::ready::Ready;
use cached::Declarations;
use watches::{WatchKey, Watches};

const CONTROLLER: &str = "drift";
/// How long to wait for a new watch's first list before deciding anything.
const WATCH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Discovery is refreshed at most this often (when a kind is unknown).
const DISCOVERY_REFRESH: Duration = Duration::from_secs(10);
/// Reverts of one reconcile in flight at once.
const REVERT_CONCURRENCY: usize = 16;
/// Objects a pending AccessRequest lists by name.
const PENDING_LISTED: usize = 10;
/// How long a split source may look half-published before it is refused.
const PUBLISH_SETTLE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading source ConfigMaps of {desired_state}: {source}")]
    ReadSources { desired_state: String, source: kube::Error },
    #[error("discovering the API server's resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("writing the status of DesiredState {desired_state}: {source}")]
    WriteStatus { desired_state: String, source: kube::Error },
    #[error("the AccessRequests and roles the gate judges by have not been listed yet")]
    GateNotReady,
    #[error("the PublisherKeys and namespaces signatures are checked against have not been listed yet")]
    TrustNotReady,
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadSources { .. } => "read_sources",
            Error::Discovery(_) => "discovery",
            Error::WriteStatus { .. } => "write_status",
            Error::GateNotReady => "gate_not_ready",
            Error::TrustNotReady => "trust_not_ready",
        }
    }
}

/// Settings of the drift controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// DesiredStates in this namespace may declare other namespaces and
    /// cluster-scoped objects.
    pub operator_namespace: String,
    /// JSON pointers every DesiredState ignores besides its own rules
    /// (the chart's default: the metadata Helm adds).
    pub ignore_pointers: Vec<String>,
    pub instance: Option<String>,
    /// Reverts per second per DesiredState, after a burst of `revert_burst`.
    pub revert_rate: f64,
    pub revert_burst: u32,
    /// Refuse sources that no trusted PublisherKey signed (on unless the
    /// operator runs with --insecure-skip-source-verification).
    pub verify_sources: bool,
}

struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    desired_states: Store<DesiredState>,
    watches: Watches,
    discovery: tokio::sync::RwLock<(Arc<Discovery>, Instant)>,
    /// When a watch first saw a change that a DesiredState has not yet
    /// reconciled: the start of the detection latency.
    pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
    /// Drift counts and the oldest unauthorized drift per DesiredState, for
    /// the cluster-wide gauges.
    drifted: Mutex<DriftTally>,
    /// Grants, their roles and the audit receiver's logs, for the gate.
    gate: Caches,
    limiter: RevertLimiter,
    /// The resourceVersion each object was left at by its last revert.
    reverted: Mutex<HashMap<(ObjectRef<DesiredState>, crate::api::ObjectRef), String>>,
    /// When each object was last seen to match Git: writes before that did
    /// not make its drift.
    clean_at: Mutex<HashMap<(ObjectRef<DesiredState>, crate::api::ObjectRef), Timestamp>>,
    /// Metadata of every ConfigMap: which sources changed, without reading them.
    source_meta: Store<PartialObjectMeta<ConfigMap>>,
    /// Every reconcile waits for it at once: see `operator::ready`.
    source_meta_listed: crate::operator::ready::Ready,
    /// The last good (verified, parsed) sources per DesiredState: reused
    /// while they are unchanged, and enforced while newer ones are refused.
    parsed: Mutex<HashMap<ObjectRef<DesiredState>, CachedParse>>,
    /// DesiredStates whose current sources are refused, and why.
    refused: Mutex<HashMap<ObjectRef<DesiredState>, Refused>>,
    /// The PublisherKeys and namespace labels signatures are checked against.
    trust: trust::Anchors,
    last_diffs: Mutex<HashMap<ObjectRef<DesiredState>, LastDiffs>>,
    /// Declared objects whose revert the API server refused, per parse.
    rejected: rejected::Rejections,
}

/// Per DesiredState: drift counts by class, and when its oldest unauthorized drift began.
type DriftTally = HashMap<ObjectRef<DesiredState>, (DriftCounts, Option<Timestamp>)>;

/// The diffs of the last reconcile, with the live resourceVersions they saw.
struct LastDiffs {
    sources: Arc<Declarations>,
    versions: Vec<Option<String>>,
    diffs: Vec<drift::ObjectDiff>,
    /// Which objects were left drifting (not in sync, not reverted).
    drifting: Vec<bool>,
}

/// What a set of sources is, as far as the caches know: the DesiredState's
/// generation, each source ConfigMap's resourceVersion, and the trust
/// anchors' versions.
type Fingerprint = (Option<i64>, Vec<(String, String)>, trust::Fingerprint);

/// A verified parse, and what it was parsed from.
#[derive(Clone)]
struct CachedParse {
    fingerprint: Fingerprint,
    sources: Arc<Declarations>,
    /// The signature that verified (None: verification is off).
    signature: Option<signature::Verified>,
}

/// Sources that were refused, until they change.
struct Refused {
    fingerprint: Fingerprint,
    refusal: status::Refusal,
    /// When the refusal began.
    since: Instant,
}

/// Runs until `shutdown` is cancelled.
pub async fn run(client: Client, metrics: Arc<Metrics>, settings: Settings, shutdown: CancellationToken) {
    let discovery = match Discovery::new(client.clone()).run().await {
        Ok(discovery) => discovery,
        Err(error) => {
            warn!(%error, "discovery failed; the drift controller is not running");
            return;
        }
    };
    let (trigger, triggers) = tokio::sync::mpsc::unbounded_channel();
    let pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>> = Arc::default();
    let controller = Controller::new(Api::<DesiredState>::all(client.clone()), watcher::Config::default())
        .trigger_backoff(super::backoff::WatchBackoff::default());
    let desired_states = controller.store();
    let reporter = Reporter { controller: "driftwarden".into(), instance: settings.instance.clone() };
    let (source_meta, source_meta_writer) = reflector::store();
    let (requests, requests_writer) = reflector::store::<AccessRequest>();
    let (cluster_roles, cluster_roles_writer) = reflector::store::<ClusterRole>();
    let (roles, roles_writer) = reflector::store::<Role>();
    // The roles' rules are only read: their reflectors run on their own.
    let role_watches = [
        tokio::spawn(drive(
            watcher(Api::<ClusterRole>::all(client.clone()), watcher::Config::default()),
            cluster_roles_writer,
        )),
        tokio::spawn(drive(watcher(Api::<Role>::all(client.clone()), watcher::Config::default()), roles_writer)),
    ];
    let (approvals, approvals_listed) = gate::Approvals::watch(&client, shutdown.clone());
    let limiter = RevertLimiter::new(settings.revert_rate, settings.revert_burst);
    if !settings.verify_sources {
        warn!(
            "source signature verification is OFF (--insecure-skip-source-verification): anyone who can write a source ConfigMap decides what is enforced"
        );
    }
    let (trust, key_events, namespace_events) = trust::Anchors::start(&client);
    // The same watch that keeps the anchors current feeds the keys' status.
    let (key_changes, changed_keys) = tokio::sync::mpsc::unbounded_channel();
    let key_status = tokio::spawn(trust::keep_key_status(client.clone(), trust.keys.clone(), changed_keys));
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        settings,
        desired_states: desired_states.clone(),
        watches: Watches::new(client.clone(), trigger, pending_since.clone()),
        discovery: tokio::sync::RwLock::new((Arc::new(discovery), Instant::now())),
        pending_since,
        drifted: Mutex::default(),
        gate: Caches {
            listed: Ready::all_of(vec![
                Ready::of(&requests),
                Ready::of(&cluster_roles),
                Ready::of(&roles),
                approvals_listed,
            ]),
            requests: requests.clone(),
            cluster_roles,
            roles,
            approvals,
        },
        limiter,
        reverted: Mutex::default(),
        clean_at: Mutex::default(),
        source_meta_listed: crate::operator::ready::Ready::of(&source_meta),
        source_meta,
        parsed: Mutex::default(),
        refused: Mutex::default(),
        trust,
        last_diffs: Mutex::default(),
        rejected: rejected::Rejections::default(),
    });

    // Source ConfigMaps by metadata only, and of that only what selects and
    // fingerprints a source: their contents are read when a DesiredState
    // that uses them reconciles.
    let sources = watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()), watcher::Config::default())
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .modify(cached::source_identity)
        .reflect(source_meta_writer)
        .touched_objects();
    // A grant that opens, ends or logs a write may change the gate's verdict
    // on any drift in its namespace.
    let access_requests = watcher(Api::<AccessRequest>::all(client.clone()), watcher::Config::default())
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(requests_writer)
        .touched_objects();
    let states = desired_states.clone();
    let states_of_requests = desired_states.clone();
    let (states_of_keys, states_of_namespaces) = (desired_states.clone(), desired_states.clone());
    controller
        .watches_stream(sources, move |config_map: PartialObjectMeta<ConfigMap>| users_of(&states, &config_map))
        .watches_stream(access_requests, move |request: AccessRequest| in_namespace(&states_of_requests, &request))
        // A key added, changed or removed may accept or refuse any source.
        .watches_stream(key_events.map(Ok), move |key: crate::api::PublisherKey| {
            let _ = key_changes.send(key);
            all_of(&states_of_keys)
        })
        .watches_stream(namespace_events.map(Ok), move |ns: PartialObjectMeta<Namespace>| {
            states_of_namespaces
                .state()
                .iter()
                .filter(|ds| ds.namespace() == Some(ns.name_any()))
                .map(|ds| ObjectRef::from_obj(&**ds))
                .collect::<Vec<_>>()
        })
        .reconcile_on(tokio_stream_from(triggers))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
    role_watches.iter().for_each(|task| task.abort());
    key_status.abort();
}

fn all_of(states: &Store<DesiredState>) -> Vec<ObjectRef<DesiredState>> {
    states.state().iter().map(|ds| ObjectRef::from_obj(&**ds)).collect()
}

/// Keeps a reflector's store current (retrying with backoff).
async fn drive<K>(
    stream: impl futures::Stream<Item = watcher::Result<watcher::Event<K>>>,
    writer: reflector::store::Writer<K>,
) where
    K: kube::Resource + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Default,
{
    stream.backoff(crate::operator::backoff::WatchBackoff::default()).reflect(writer).for_each(|_| async {}).await;
}

/// The DesiredStates in a request's namespace.
fn in_namespace(states: &Store<DesiredState>, request: &AccessRequest) -> Vec<ObjectRef<DesiredState>> {
    let namespace = request.namespace();
    states.state().iter().filter(|ds| ds.namespace() == namespace).map(|ds| ObjectRef::from_obj(&**ds)).collect()
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::UnboundedReceiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The DesiredStates whose sources include this ConfigMap.
fn users_of(states: &Store<DesiredState>, config_map: &PartialObjectMeta<ConfigMap>) -> Vec<ObjectRef<DesiredState>> {
    let namespace = config_map.namespace();
    let name = config_map.name_any();
    let labels = config_map.labels().clone();
    states
        .state()
        .iter()
        .filter(|ds| ds.namespace() == namespace)
        .filter(|ds| ds.spec.sources.iter().any(|source| selects(source, &name, &labels)))
        .map(|ds| ObjectRef::from_obj(&**ds))
        .collect()
}

fn selects(source: &SourceRef, name: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
    match (&source.name, &source.selector) {
        (Some(wanted), _) => wanted == name,
        (None, Some(selector)) => Selector::try_from(selector.clone()).is_ok_and(|s| s.matches(labels)),
        (None, None) => false,
    }
}

fn error_policy(state: Arc<DesiredState>, error: &Error, context: Arc<Context>) -> Action {
    warn!(desired_state = %state.name_any(), namespace = ?state.namespace(), %error, "reconcile failed");
    context
        .metrics
        .reconcile_errors
        .get_or_create(&ErrorLabels { controller: CONTROLLER, category: error.category() })
        .inc();
    Action::requeue(Duration::from_secs(2))
}

async fn reconcile(state: Arc<DesiredState>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_timer(CONTROLLER);
    let me = ObjectRef::from_obj(&*state);
    let triggered_at = context.pending_since.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
    forget_deleted(&context);
    context.source_meta_listed.wait().await;
    if tokio::time::timeout(WATCH_READY_TIMEOUT, context.trust.listed.wait()).await.is_err() {
        return Err(Error::TrustNotReady);
    }
    if tokio::time::timeout(WATCH_READY_TIMEOUT, context.gate.listed.wait()).await.is_err() {
        return Err(Error::GateNotReady);
    }
    if state.spec.suspend {
        context.watches.release(&me);
        return Ok(Action::await_change());
    }
    let namespace = state.namespace().unwrap_or_default();
    let name = state.name_any();
    let now = Timestamp::now();
    let old = state.status.clone().unwrap_or_default();
    let generation = state.metadata.generation;

    // Fetch the sources, verify their signature and parse them (pure),
    // unless they are unchanged since the last good parse (or the last
    // refusal). Refused sources change nothing: the last verified state is
    // still enforced, so breaking or forging a source never switches the
    // operator off.
    let fingerprint = (
        generation,
        source_fingerprint(&context.source_meta, &namespace, &state.spec.sources),
        context.trust.fingerprint(&state),
    );
    let remembered = context.parsed.lock().unwrap_or_else(|p| p.into_inner()).get(&me).cloned();
    let still_refused = context
        .refused
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&me)
        .filter(|r| r.fingerprint == fingerprint)
        .map(|r| r.refusal.clone());
    let scope = SourceScope { namespace: &namespace, operator_namespace: &context.settings.operator_namespace };
    let discovered = || async { Resolver { discovery: context.discovery.read().await.0.clone() } };
    // The highest sequence this DesiredState accepted: in memory, or (after
    // a restart) in its status.
    let accepted = remembered
        .as_ref()
        .and_then(|c| c.signature.as_ref().map(|s| s.sequence))
        .max(old.signature.as_ref().and_then(|s| u64::try_from(s.sequence).ok()));
    let (current, resolver, refusal) =
        match (remembered.clone().filter(|c| c.fingerprint == fingerprint), still_refused) {
            (Some(current), _) => (Some(current), discovered().await, None),
            (None, Some(refusal)) => (None, discovered().await, Some(refusal)),
            (None, None) => {
                let (config_maps, missing) = read_sources(&context.client, &namespace, &state.spec.sources)
                    .await
                    .map_err(|source| Error::ReadSources { desired_state: format!("{namespace}/{name}"), source })?;
                let config_maps = Arc::new(config_maps);
                match check_sources(&context, &state, accepted, config_maps.clone(), missing, &scope).await? {
                    Ok((sources, signature, resolver)) => {
                        let known = remembered.as_ref().and_then(|c| c.signature.as_ref());
                        if signature.is_some() && known != signature.as_ref() {
                            keep_verified(&context, &namespace, &name, &config_maps).await;
                        }
                        let entry = CachedParse { fingerprint: fingerprint.clone(), sources, signature };
                        context.parsed.lock().unwrap_or_else(|p| p.into_inner()).insert(me.clone(), entry.clone());
                        context.refused.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
                        // "Already reverted at this version" held for the old
                        // declarations: a new revision may declare other values.
                        context.reverted.lock().unwrap_or_else(|p| p.into_inner()).retain(|(owner, _), _| *owner != me);
                        (Some(entry), resolver, None)
                    }
                    Err((refusal, resolver)) => {
                        let mut refused = context.refused.lock().unwrap_or_else(|p| p.into_inner());
                        let since = refused.get(&me).map_or_else(Instant::now, |r| r.since);
                        refused.insert(
                            me.clone(),
                            Refused { fingerprint: fingerprint.clone(), refusal: refusal.clone(), since },
                        );
                        drop(refused);
                        // A split source is written one ConfigMap at a time: a
                        // set caught half-way through a publish is given a moment
                        // to complete before it is reported.
                        if refusal.reason == "SignatureIncomplete" && since.elapsed() < PUBLISH_SETTLE {
                            return Ok(Action::requeue(Duration::from_secs(1)));
                        }
                        (None, resolver, Some(refusal))
                    }
                }
            }
        };
    context.metrics.sources_refused.set(context.refused.lock().unwrap_or_else(|p| p.into_inner()).len() as i64);
    // What is enforced: the current sources, else the last verified ones
    // (after a restart, the copy kept of them).
    let enforced = match current.or(remembered) {
        Some(entry) => Some(entry),
        None if context.settings.verify_sources => recover_verified(&context, &state, &old, &scope).await,
        None => None,
    };
    let (parsed, enforced_signature) = match enforced {
        Some(entry) => (entry.sources, entry.signature),
        None => {
            // Nothing verified to enforce yet: report, and wait for a good source.
            let refusal = refusal.unwrap_or_else(status::Refusal::unknown);
            let status = status::invalid(&old, generation, &refusal, now);
            write_status(&context, &state, &old, &status).await?;
            announce_refusal(&context, &state, &old, &refusal).await;
            warn!(desired_state = %name, %namespace, reason = refusal.reason, "sources refused; nothing will be changed");
            return Ok(Action::await_change());
        }
    };

    // Watch exactly the declared kinds, where they are declared.
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
    if !watches::wait_until_ready(&stores, WATCH_READY_TIMEOUT).await {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }

    // Diff (pure) against the caches.
    let options =
        DiffOptions::with_ignore(drift::with_global_ignore(&state.spec.ignore, &context.settings.ignore_pointers));
    // An object whose live resourceVersion is what it was at the last
    // reconcile of the same parse has the same diff: only changed objects
    // are diffed again, so one edit costs one diff, not one per object.
    let kinds: HashMap<&WatchKey, ApiResource> = keys.iter().map(|key| (key, key_resource(key))).collect();
    let previous = context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
    let previous = previous.filter(|p| Arc::ptr_eq(&p.sources, &parsed));
    let mut versions = Vec::with_capacity(parsed.objects.len());
    let mut lives = Vec::with_capacity(parsed.objects.len());
    let mut clean = Vec::new();
    let diffs: Vec<drift::ObjectDiff> = parsed
        .objects
        .iter()
        .zip(&resources)
        .enumerate()
        .map(|(index, (declared, key))| {
            let live = key.as_ref().and_then(|key| {
                let reference = ObjectRef::new_with(&declared.key.name, kinds.get(key)?.clone())
                    .within_opt(key.namespace.as_deref());
                stores.get(key)?.0.get(&reference)
            });
            let version = live.as_ref().and_then(|l| l.metadata.resource_version.clone());
            let unchanged = previous.as_ref().and_then(|p| p.versions.get(index).zip(p.diffs.get(index)));
            let diff = match unchanged {
                Some((seen, diff)) if *seen == version && version.is_some() => diff.clone(),
                _ => {
                    let live = live.as_deref().and_then(cached::live_value);
                    let diff = drift::diff(&declared.object(), live.as_ref(), &options);
                    if diff.in_sync() {
                        clean.push(declared.key.object_ref());
                    }
                    diff
                }
            };
            versions.push(version);
            lives.push(live);
            diff
        })
        .collect();

    // A version seen to match Git: later writes are what drift is made of.
    if !clean.is_empty() {
        let mut clean_at = context.clean_at.lock().unwrap_or_else(|p| p.into_inner());
        for object in clean {
            clean_at.insert((me.clone(), object), now);
        }
    }

    // The gate: per drifted object, hold it, revert it or report it.
    let gated = judge(&context, &state, &me, &parsed, &resources, &diffs, &old, now);
    let outcome = act(&context, &state, &me, &parsed, &resources, &kinds, &diffs, &lives, &gated, &options).await;

    // A reverted object matches Git again: status says so at once.
    let in_sync = drift::ObjectDiff::default();
    let observed: Vec<status::Observed<'_>> = parsed
        .objects
        .iter()
        .zip(&diffs)
        .zip(&gated)
        .enumerate()
        .map(|(index, ((declared, diff), judgement))| {
            let reverted = outcome.reverted.contains(&index);
            status::Observed {
                object: declared.key.object_ref(),
                diff: if reverted { &in_sync } else { diff },
                judgement: judgement.as_ref(),
            }
        })
        .collect();
    let mut status = status::observed(&old, generation, parsed.revision.clone(), &observed, now);
    if let Some(verified) = enforced_signature {
        let sequence = i64::try_from(verified.sequence).unwrap_or(i64::MAX);
        status.signature = Some(crate::api::SourceSignature { key: verified.key, sequence });
    }
    if !context.settings.verify_sources {
        status::unverified(&mut status, &old, now);
    }
    // Declarations the API server refused on a revert (this parse's).
    let rejected: Vec<String> = (context.rejected.of(&me, &parsed).into_iter())
        .map(|(index, reason)| {
            let declared = &parsed.objects[index];
            format!("{}: {} cannot be applied: {reason}", declared.origin, declared.key)
        })
        .collect();
    if !rejected.is_empty() {
        status::rejected(&mut status, &old, generation, &rejected, now);
    }
    if let Some(refusal) = &refusal {
        status::enforce_last_verified(&mut status, &old, refusal, now);
        announce_refusal(&context, &state, &old, refusal).await;
    } else if rejected.is_empty() && old.conditions.iter().any(|c| c.type_ == "SourceValid" && c.status == "False") {
        let revision = status.revision.as_deref().unwrap_or("without a revision");
        let by = status.signature.as_ref().map(|s| format!(", signed by {}", s.key)).unwrap_or_default();
        let note = format!("the sources are valid again{by}: enforcing revision {revision}");
        publish(&context, &state, EventType::Normal, "SourceAccepted", note).await;
    }
    if outcome.last.is_some() {
        status.reverts = Some(old.reverts.unwrap_or(0) + i64::try_from(outcome.reverted.len()).unwrap_or(0));
        status.last_revert = outcome.last.clone();
    }
    write_status(&context, &state, &old, &status).await?;

    // Tell: Events and metrics on what started or stopped drifting.
    let object_refs: Vec<crate::api::ObjectRef> = parsed.objects.iter().map(|d| d.key.object_ref()).collect();
    // What was drifting before: the last reconcile of the same parse knows
    // every object; otherwise status (which lists only the first ones).
    let was_drifting = |index: usize| match &previous {
        Some(previous) => previous.drifting.get(index).copied().unwrap_or(false),
        None => old.drifted_objects.iter().any(|d| d.object == object_refs[index]),
    };
    for (index, diff) in diffs.iter().enumerate() {
        if diff.in_sync() || was_drifting(index) && !outcome.reverted.contains(&index) {
            continue;
        }
        let object = describe(&object_refs[index]);
        let fields = status::fields(diff).join(", ");
        info!(desired_state = %name, %namespace, %object, %fields, "drift detected");
        debug!(desired_state = %name, %object, unified = %diff.unified, "drift");
        context.metrics.drift_detections.inc();
        if let Some(since) = triggered_at {
            context.metrics.drift_detection_latency.observe(since.elapsed().as_secs_f64());
        }
        publish(&context, &state, EventType::Warning, "DriftDetected", format!("{object} differs from Git: {fields}"))
            .await;
    }
    for drifted in &status.drifted_objects {
        let was = old.drifted_objects.iter().find(|d| d.object == drifted.object);
        let newly = |action| drifted.action == Some(action) && was.is_none_or(|w| w.action != Some(action));
        let object = describe(&drifted.object);
        let request = drifted.access_request.clone().unwrap_or_default();
        if newly(DriftAction::Hold) {
            let until = drifted.revert_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            let how = if drifted.class == DriftClass::AuthorizedByScope { " (by scope: no audit record)" } else { "" };
            info!(desired_state = %name, %object, access_request = %request, %until, "drift held for an access session");
            let note = format!("{object} changed within AccessRequest {request}{how}; held until {until}");
            publish(&context, &state, EventType::Normal, "DriftHeld", note).await;
        } else if newly(DriftAction::WouldRevert) {
            let note = format!("dry run: {object} would be reverted ({:?})", drifted.class);
            publish(&context, &state, EventType::Warning, "WouldRevert", note).await;
        }
    }
    let (_, stopped) = status::transitions(&old, &status);
    for object in &stopped {
        let index = object_refs.iter().position(|o| o == object);
        if index.is_some_and(|i| outcome.reverted.contains(&i)) {
            continue;
        }
        let object = describe(object);
        info!(desired_state = %name, %namespace, %object, "drift resolved");
        publish(&context, &state, EventType::Normal, "DriftResolved", format!("{object} matches Git again")).await;
    }
    record_drifted(&context, &me, &status);
    show_pending_drift(&context, &state, &status).await;
    let drifting = diffs.iter().enumerate().map(|(i, d)| !d.in_sync() && !outcome.reverted.contains(&i)).collect();
    let remembered = LastDiffs { sources: parsed.clone(), versions, diffs, drifting };
    context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).insert(me, remembered);

    // Come back when a held change's window ends, or a deferred revert is due.
    let wake = gated.iter().flatten().filter(|j| j.action == DriftAction::Hold).filter_map(|j| j.revert_at).min();
    let mut after = wake.map(|at| Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or_default());
    if let Some(retry) = outcome.retry_after {
        after = Some(after.map_or(retry, |a| a.min(retry)));
    }
    Ok(after.map_or_else(Action::await_change, |a| Action::requeue(a.max(Duration::from_millis(10)))))
}

/// The gate's verdict on every drifted object (None for objects in sync).
#[allow(clippy::too_many_arguments)]
fn judge(
    context: &Context,
    state: &DesiredState,
    me: &ObjectRef<DesiredState>,
    parsed: &Declarations,
    resources: &[Option<WatchKey>],
    diffs: &[drift::ObjectDiff],
    old: &DesiredStateStatus,
    now: Timestamp,
) -> Vec<Option<status::Judgement>> {
    let remediation = crate::gate::Remediation {
        unauthorized: state.spec.remediation.unauthorized,
        window_end: state.spec.remediation.window_end,
    };
    parsed
        .objects
        .iter()
        .zip(resources)
        .zip(diffs)
        .map(|((declared, key), diff)| {
            if diff.in_sync() {
                return None;
            }
            let key = key.as_ref()?;
            let object = declared.key.object_ref();
            let listed = old.drifted_objects.iter().find(|d| d.object == object);
            let since = listed.map_or(now, |d| d.since.0);
            // After a restart or a takeover this process has not seen the
            // object in sync: the status remembers when an earlier one did.
            let clean_at = context
                .clean_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&(me.clone(), object))
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
            let verdict = context.gate.verdict(&subject, remediation, now);
            let attribution = |class: DriftClass| match class {
                DriftClass::AuthorizedByScope => Some(Attribution::Scope),
                _ if verdict.from_audit => Some(Attribution::AuditLog),
                _ => None,
            };
            let revert = if state.spec.dry_run { DriftAction::WouldRevert } else { DriftAction::Revert };
            Some(match verdict.decision {
                Decision::Hold { request, class, until } => status::Judgement {
                    class,
                    request: Some(request),
                    attribution: attribution(class),
                    action: DriftAction::Hold,
                    revert_at: Some(until),
                    in_sync_at: clean_at,
                },
                Decision::Revert { class, request } => status::Judgement {
                    class,
                    request,
                    attribution: attribution(class),
                    action: revert,
                    revert_at: Some(now),
                    in_sync_at: clean_at,
                },
                Decision::Report { class, request } => status::Judgement {
                    class,
                    request,
                    attribution: attribution(class),
                    action: DriftAction::Report,
                    revert_at: None,
                    in_sync_at: clean_at,
                },
                Decision::Nothing => return None,
            })
        })
        .collect()
}

/// What the reverts of one reconcile did.
#[derive(Default)]
struct Outcome {
    /// Indices of the objects put back.
    reverted: Vec<usize>,
    last: Option<RevertRecord>,
    /// Reverts deferred by the rate limit or failed: when to try again.
    retry_after: Option<Duration>,
}

/// Carries out the gate's verdicts: codifies session changes whose window
/// ended, then reverts what must be reverted (several at once, rate-limited
/// per DesiredState).
#[allow(clippy::too_many_arguments)]
async fn act(
    context: &Context,
    state: &DesiredState,
    me: &ObjectRef<DesiredState>,
    parsed: &Arc<Declarations>,
    resources: &[Option<WatchKey>],
    kinds: &HashMap<&WatchKey, ApiResource>,
    diffs: &[drift::ObjectDiff],
    lives: &[Option<Arc<kube::api::DynamicObject>>],
    gated: &[Option<status::Judgement>],
    options: &DiffOptions,
) -> Outcome {
    let namespace = state.namespace().unwrap_or_default();
    let name = state.name_any();
    let now = Timestamp::now();
    let mut outcome = Outcome::default();
    let live_value = |index: usize| lives[index].as_deref().and_then(cached::live_value);

    // Codify: a window that ended with its changes still live. The patches
    // are made now, from what the drift was seen on, and written after the
    // reverts (which must not wait for them).
    let mut codified: BTreeMap<String, Vec<SessionChange>> = BTreeMap::new();
    for (index, judgement) in gated.iter().enumerate() {
        let Some(judgement) = judgement else { continue };
        let (DriftClass::WindowEnded, Some(request)) = (judgement.class, &judgement.request) else { continue };
        let declared = &parsed.objects[index];
        // Already codified (a change that is kept and reported): nothing new.
        let cached = context.gate.requests.get(&ObjectRef::new(request).within(&namespace));
        let object = declared.key.object_ref();
        let seen = cached.and_then(|r| r.status.as_ref().map(|s| s.session_changes.iter().any(|c| c.object == object)));
        if seen == Some(true) && judgement.action != DriftAction::Revert {
            continue;
        }
        let change = gate::session_change(
            object,
            &name,
            &declared.origin,
            &declared.object(),
            live_value(index).as_ref(),
            &diffs[index],
            now,
        );
        codified.entry(request.clone()).or_default().push(change);
    }

    // Revert.
    let mut work = Vec::new();
    for (index, judgement) in gated.iter().enumerate() {
        let Some(judgement) = judgement.as_ref().filter(|j| j.action == DriftAction::Revert) else { continue };
        if resources[index].is_none() || context.rejected.contains(me, parsed, index) {
            continue;
        }
        // Our own last revert left the object at this version: reverting
        // again would change nothing, so it stays reported instead of looping.
        if let Some(version) = lives[index].as_ref().and_then(|l| l.resource_version()) {
            let key = (me.clone(), parsed.objects[index].key.object_ref());
            if context.reverted.lock().unwrap_or_else(|p| p.into_inner()).get(&key) == Some(&version) {
                continue;
            }
        }
        work.push((index, judgement.clone()));
    }
    let mut admitted = Vec::new();
    for (index, judgement) in work {
        match context.limiter.take(me) {
            Ok(()) => admitted.push((index, judgement)),
            Err(wait) => {
                outcome.retry_after = Some(outcome.retry_after.map_or(wait, |w| w.min(wait)));
                break;
            }
        }
    }
    let reverts = admitted.into_iter().map(|(index, judgement)| {
        let declared = &parsed.objects[index];
        let resource = resources[index].as_ref().and_then(|key| kinds.get(key)).cloned();
        let kind = declared.key.kind.clone();
        let (declared, live) = (declared.object(), live_value(index));
        async move {
            let started = Instant::now();
            let result = match resource {
                Some(resource) => gate::revert(&context.client, &resource, &declared, live, options).await,
                None => return (index, judgement, Err((None, "unknown kind".to_owned())), started),
            };
            let result = result.map_err(|e| (rejected::refused_declaration(&e, &kind), e.to_string()));
            (index, judgement, result, started)
        }
    });
    let results: Vec<_> = futures::stream::iter(reverts).buffer_unordered(REVERT_CONCURRENCY).collect().await;
    for (index, judgement, result, started) in results {
        let declared = &parsed.objects[index];
        let object_ref = declared.key.object_ref();
        let object = describe(&object_ref);
        let reason = match judgement.class {
            DriftClass::WindowEnded => RevertReason::window_ended,
            _ => RevertReason::unauthorized,
        };
        let request = judgement.request.clone().unwrap_or_default();
        let requester = context.gate.requester(&namespace, &request).unwrap_or_default();
        let approvers = context.gate.approvers(&namespace, &request).join(",");
        match result {
            Ok(version) => {
                context
                    .reverted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((me.clone(), object_ref.clone()), version);
                context
                    .clean_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((me.clone(), object_ref.clone()), Timestamp::now());
                context.metrics.reverts.get_or_create(&RevertLabels { reason: reason.clone() }).inc();
                if let (RevertReason::window_ended, Some(end)) =
                    (&reason, context.gate.window_end(&namespace, &request))
                {
                    let lag = Timestamp::now().duration_since(end).as_secs_f64().max(0.0);
                    context.metrics.revert_latency_after_window_end.observe(lag);
                }
                let why = match reason {
                    RevertReason::window_ended => format!("the window of AccessRequest {request} ({requester}) ended"),
                    RevertReason::unauthorized => "no approved access window covers the change".to_owned(),
                };
                info!(desired_state = %name, %namespace, %object, access_request = %request, %requester, %approvers,
                      class = ?judgement.class, took_ms = started.elapsed().as_millis() as u64, "drift reverted to Git");
                let note = format!("{object} reverted to Git: {why}");
                publish(context, state, EventType::Normal, "Reverted", note).await;
                outcome.reverted.push(index);
                outcome.last = Some(RevertRecord {
                    object: object_ref,
                    at: Time(Timestamp::now()),
                    class: judgement.class,
                    access_request: judgement.request.clone(),
                });
            }
            Err((Some(refused), _)) => {
                // Git declares what the server will not take: say so once,
                // as a source problem, and leave it until the sources change.
                context.metrics.revert_failures.get_or_create(&RevertLabels { reason }).inc();
                warn!(desired_state = %name, %namespace, %object, reason = %refused, "the API server refused the declared object; not retried");
                let note = format!("{object} as declared in {} cannot be applied: {refused}", declared.origin);
                publish(context, state, EventType::Warning, "DeclarationRejected", note).await;
                context.rejected.insert(me, parsed, index, refused);
            }
            Err((None, error)) => {
                context.metrics.revert_failures.get_or_create(&RevertLabels { reason }).inc();
                warn!(desired_state = %name, %namespace, %object, %error, "revert failed; will retry");
                let note = format!("reverting {object} failed: {error}");
                publish(context, state, EventType::Warning, "RevertFailed", note).await;
                let retry = Duration::from_secs(2);
                outcome.retry_after = Some(outcome.retry_after.map_or(retry, |w| w.min(retry)));
            }
        }
    }
    outcome.reverted.sort_unstable();

    for (request, changes) in codified {
        match gate::record_session_changes(&context.client, &namespace, &request, &changes).await {
            Ok(new) => {
                for change in new {
                    let object = describe(&change.object);
                    info!(access_request = %request, %object, source = %change.source, "session change codified");
                    let note = format!(
                        "The window ended with {object} still changed. To keep the change, commit this to {}:\n{}",
                        change.source, change.patch
                    );
                    publish_on_request(context, &namespace, &request, "SessionChangesCodified", note).await;
                }
            }
            Err(error) => warn!(%error, access_request = %request, "recording the session's changes failed"),
        }
    }
    outcome
}

/// Pending requests in this namespace show the drift they would approve into.
async fn show_pending_drift(context: &Context, state: &DesiredState, fresh: &DesiredStateStatus) {
    let namespace = state.namespace().unwrap_or_default();
    let pending = context.gate.pending(&namespace);
    if pending.is_empty() {
        return;
    }
    let me = state.name_any();
    let mut drift = crate::api::PendingDrift::default();
    let states = context.desired_states.state();
    let statuses = states
        .iter()
        .filter(|ds| ds.namespace().as_deref() == Some(namespace.as_str()) && ds.name_any() != me)
        .filter_map(|ds| ds.status.as_ref())
        .chain(std::iter::once(fresh));
    for status in statuses {
        drift.drifted += status.drifted.unwrap_or(0);
        for object in &status.drifted_objects {
            if drift.objects.len() < PENDING_LISTED {
                drift.objects.push(describe(&object.object));
            }
        }
    }
    for request in pending {
        if let Err(error) = gate::show_pending_drift(&context.client, &request, &drift).await {
            warn!(%error, access_request = %request.name_any(), "showing drift on a pending request failed");
        }
    }
}

fn key_resource(key: &WatchKey) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(&key.group, &key.version, &key.kind), &key.plural)
}

trait WithinOpt {
    fn within_opt(self, namespace: Option<&str>) -> Self;
}

impl WithinOpt for ObjectRef<kube::api::DynamicObject> {
    fn within_opt(self, namespace: Option<&str>) -> Self {
        match namespace {
            Some(namespace) => self.within(namespace),
            None => self,
        }
    }
}

fn describe(object: &crate::api::ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// A DesiredState that is gone no longer holds watches open.
fn forget_deleted(context: &Context) {
    for user in context.watches.users() {
        if context.desired_states.get(&user).is_none() {
            context.watches.release(&user);
            context.drifted.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.limiter.forget(&user);
            context.parsed.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.refused.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            let (client, operator_namespace) = (context.client.clone(), context.settings.operator_namespace.clone());
            let (namespace, name) = (user.namespace.clone().unwrap_or_default(), user.name.clone());
            tokio::spawn(async move {
                if let Err(error) = snapshot::forget(&client, &operator_namespace, &namespace, &name).await {
                    warn!(%error, desired_state = %name, %namespace, "removing the copy of its verified sources failed");
                }
            });
            context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.rejected.forget(&user);
            context.clean_at.lock().unwrap_or_else(|p| p.into_inner()).retain(|(owner, _), _| *owner != user);
            context.reverted.lock().unwrap_or_else(|p| p.into_inner()).retain(|(owner, _), _| *owner != user);
        }
    }
}

/// Sets the cluster-wide gauges: drifted objects by class, and the oldest
/// unauthorized drift (its age is computed when metrics are scraped).
fn record_drifted(context: &Context, me: &ObjectRef<DesiredState>, status: &DesiredStateStatus) {
    let oldest = status.drifted_objects.iter().filter(|d| d.class == DriftClass::Unauthorized).map(|d| d.since.0).min();
    let mut all = context.drifted.lock().unwrap_or_else(|p| p.into_inner());
    all.insert(me.clone(), (status.drift_counts.clone().unwrap_or_default(), oldest));
    publish_drift_gauges(&context.metrics, &all);
}

fn publish_drift_gauges(metrics: &Metrics, all: &DriftTally) {
    use super::metrics::{Class, ClassLabels};
    let sum = |f: fn(&DriftCounts) -> i64| all.values().map(|(c, _)| f(c)).sum::<i64>();
    for (class, total) in [
        (Class::Unauthorized, sum(|c| c.unauthorized)),
        (Class::Authorized, sum(|c| c.authorized)),
        (Class::AuthorizedByScope, sum(|c| c.authorized_by_scope)),
        (Class::WindowEnded, sum(|c| c.window_ended)),
    ] {
        metrics.drifted_objects.get_or_create(&ClassLabels { class }).set(total);
    }
    metrics.set_oldest_unauthorized_drift(all.values().filter_map(|(_, oldest)| *oldest).min());
}

/// What the sources are, as far as the metadata cache knows: the name and
/// resourceVersion of every ConfigMap they select, sorted.
fn source_fingerprint(
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
    let mut found: Vec<(String, String)> = meta
        .state()
        .iter()
        .filter(|cm| cm.metadata.namespace.as_deref() == Some(namespace))
        .filter(|cm| {
            let name = cm.metadata.name.as_deref().unwrap_or_default();
            names.contains(&name) || selectors.iter().any(|s| s.matches(cm.labels()))
        })
        .map(|cm| (cm.name_any(), cm.resource_version().unwrap_or_default()))
        .collect();
    found.sort();
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
        return Ok(Err((refusal, Resolver { discovery: context.discovery.read().await.0.clone() })));
    }
    let verified = if context.settings.verify_sources {
        let trusted = context.trust.trusted_for(state);
        match signature::verify(namespace, &config_maps, &trusted, accepted) {
            Ok(verified) => Some(verified),
            Err(error) => {
                let refusal = status::Refusal::from_signature(&error);
                return Ok(Err((refusal, Resolver { discovery: context.discovery.read().await.0.clone() })));
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
        fingerprint: (None, Vec::new(), Vec::new()),
        sources: Arc::new(parsed.ok()?),
        signature: Some(verified),
    };
    context.parsed.lock().unwrap_or_else(|p| p.into_inner()).insert(ObjectRef::from_obj(state), entry.clone());
    Some(entry)
}

/// An Event and a count when sources begin to be refused (or are refused
/// for a new reason); nothing while the same refusal lasts.
async fn announce_refusal(
    context: &Context,
    state: &DesiredState,
    old: &DesiredStateStatus,
    refusal: &status::Refusal,
) {
    let same =
        old.conditions.iter().any(|c| c.type_ == "SourceValid" && c.status == "False" && c.reason == refusal.reason);
    if same {
        return;
    }
    context.metrics.source_refusals.get_or_create(&super::metrics::RefusalLabels { reason: refusal.reason }).inc();
    publish(context, state, EventType::Warning, refusal.reason, refusal.message.clone()).await;
}

/// Kind lookups for the parser, from a snapshot of discovery.
struct Resolver {
    discovery: Arc<Discovery>,
}

impl Resolver {
    /// The resource of `(apiVersion, kind)` and whether it is namespaced.
    fn resource(&self, api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
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
    let resolver = Resolver { discovery: context.discovery.read().await.0.clone() };
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

async fn write_status(
    context: &Context,
    state: &DesiredState,
    old: &DesiredStateStatus,
    new: &DesiredStateStatus,
) -> Result<(), Error> {
    if old == new {
        return Ok(());
    }
    super::apply_status(&context.client, state, new).await.map_err(|source| Error::WriteStatus {
        desired_state: format!("{}/{}", state.namespace().unwrap_or_default(), state.name_any()),
        source,
    })
}

/// An Event on an AccessRequest (the requester and approvers watch it).
async fn publish_on_request(context: &Context, namespace: &str, request: &str, reason: &str, note: String) {
    let Some(request) = context.gate.requests.get(&ObjectRef::new(request).within(namespace)) else { return };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(super::event_note(note)),
        action: "Codify".into(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &request.object_ref(&())).await {
        warn!(%error, reason, "publishing an event failed");
    }
}

async fn publish(context: &Context, state: &DesiredState, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(super::event_note(note)),
        action: "Diff".into(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &state.object_ref(&())).await {
        warn!(%error, reason, "publishing an event failed");
    }
}
