//! The drift controller: DesiredState -> its source ConfigMaps -> the
//! declared objects -> watches on exactly their kinds -> the diff against
//! live -> status, Events and metrics.
//!
//! It only reports; remediation is the gate's decision. A source that does
//! not parse is reported and changes nothing.

pub mod status;
mod watches;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
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

use super::metrics::{ErrorLabels, Metrics};
use crate::api::{DesiredState, DesiredStateStatus, SourceRef};
use crate::drift::{self, DiffOptions, KindResolver, Scope, SourceConfigMap, SourceScope};
use watches::{WatchKey, Watches};

const CONTROLLER: &str = "drift";
/// How long to wait for a new watch's first list before deciding anything.
const WATCH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Discovery is refreshed at most this often (when a kind is unknown).
const DISCOVERY_REFRESH: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading source ConfigMaps of {desired_state}: {source}")]
    ReadSources { desired_state: String, source: kube::Error },
    #[error("discovering the API server's resources: {0}")]
    Discovery(#[source] kube::Error),
    #[error("writing the status of DesiredState {desired_state}: {source}")]
    WriteStatus { desired_state: String, source: kube::Error },
}

impl Error {
    pub fn category(&self) -> &'static str {
        match self {
            Error::ReadSources { .. } => "read_sources",
            Error::Discovery(_) => "discovery",
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

/// Settings of the drift controller.
#[derive(Clone, Debug)]
pub struct Settings {
    /// DesiredStates in this namespace may declare other namespaces and
    /// cluster-scoped objects.
    pub operator_namespace: String,
    /// Field managers, besides the defaults, whose fields are the declared
    /// state (an in-house deploy tool, say).
    pub iac_field_managers: Vec<String>,
    pub instance: Option<String>,
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
    /// Drifted objects per DesiredState, for the cluster-wide gauge.
    drifted: Mutex<HashMap<ObjectRef<DesiredState>, i64>>,
    /// Metadata of every ConfigMap: which sources changed, without reading them.
    source_meta: Store<PartialObjectMeta<ConfigMap>>,
    /// The last good parse per DesiredState, reused while its sources are unchanged.
    parsed: Mutex<HashMap<ObjectRef<DesiredState>, CachedParse>>,
    last_diffs: Mutex<HashMap<ObjectRef<DesiredState>, LastDiffs>>,
}

/// The diffs of the last reconcile, with the live resourceVersions they saw.
struct LastDiffs {
    sources: Arc<drift::ParsedSources>,
    versions: Vec<Option<String>>,
    diffs: Vec<drift::ObjectDiff>,
}

/// A parse, and what it was parsed from: the DesiredState's generation and
/// each source ConfigMap's resourceVersion.
struct CachedParse {
    fingerprint: (Option<i64>, Vec<(String, String)>),
    sources: Arc<drift::ParsedSources>,
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
    let controller = Controller::new(Api::<DesiredState>::all(client.clone()), watcher::Config::default());
    let desired_states = controller.store();
    let reporter = Reporter { controller: "driftwarden".into(), instance: settings.instance.clone() };
    let (source_meta, source_meta_writer) = reflector::store();
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
        source_meta,
        parsed: Mutex::default(),
        last_diffs: Mutex::default(),
    });

    // Source ConfigMaps by metadata only: their contents are read when a
    // DesiredState that uses them reconciles.
    let sources = watcher(Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(source_meta_writer)
        .touched_objects();
    let states = desired_states.clone();
    controller
        .watches_stream(sources, move |config_map: PartialObjectMeta<ConfigMap>| users_of(&states, &config_map))
        .reconcile_on(tokio_stream_from(triggers))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
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
    let _ = context.source_meta.wait_until_ready().await;
    if state.spec.suspend {
        context.watches.release(&me);
        return Ok(Action::await_change());
    }
    let namespace = state.namespace().unwrap_or_default();
    let name = state.name_any();
    let now = Timestamp::now();
    let old = state.status.clone().unwrap_or_default();
    let generation = state.metadata.generation;

    // Fetch the sources and parse them (pure), unless they are unchanged
    // since the last good parse.
    let fingerprint = (generation, source_fingerprint(&context.source_meta, &namespace, &state.spec.sources));
    let cached = context
        .parsed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&me)
        .filter(|c| c.fingerprint == fingerprint)
        .map(|c| c.sources.clone());
    let scope = SourceScope { namespace: &namespace, operator_namespace: &context.settings.operator_namespace };
    let (parsed, resolver, missing) = match cached {
        Some(sources) => (Ok(sources), Resolver { discovery: context.discovery.read().await.0.clone() }, Vec::new()),
        None => {
            let (config_maps, missing) = read_sources(&context.client, &namespace, &state.spec.sources)
                .await
                .map_err(|source| Error::ReadSources { desired_state: format!("{namespace}/{name}"), source })?;
            let (parsed, resolver) = parse(&context, &config_maps, &scope).await?;
            let parsed = parsed.map(Arc::new);
            if let (Ok(sources), true) = (&parsed, missing.is_empty()) {
                let entry = CachedParse { fingerprint: fingerprint.clone(), sources: sources.clone() };
                context.parsed.lock().unwrap_or_else(|p| p.into_inner()).insert(me.clone(), entry);
            }
            (parsed, resolver, missing)
        }
    };

    let missing = missing.into_iter().map(|config_map| drift::SourceError::ConfigMap {
        config_map,
        reason: format!("not found in namespace {namespace}"),
    });
    let parsed = match parsed {
        Ok(parsed) if missing.len() == 0 => parsed,
        result => {
            let mut errors: Vec<drift::SourceError> = missing.collect();
            if let Err(parse_errors) = result {
                errors.extend(parse_errors.0);
            }
            let errors = drift::SourceErrors(errors);
            // Fail closed: report, keep the last good observation, touch nothing.
            let status = status::invalid(&old, generation, &errors, now);
            write_status(&context, &state, &old, &status).await?;
            let was_valid = old.conditions.iter().all(|c| c.type_ != "SourceValid" || c.status == "True");
            if was_valid {
                let note = status.conditions.iter().find(|c| c.type_ == "SourceValid").map(|c| c.message.clone());
                publish(&context, &state, EventType::Warning, "SourceInvalid", note.unwrap_or_default()).await;
            }
            warn!(desired_state = %name, %namespace, errors = errors.0.len(), "sources are invalid; nothing will be changed");
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
    let mut options = DiffOptions::with_ignore(state.spec.ignore.clone());
    options.own_managers.extend(context.settings.iac_field_managers.iter().cloned());
    // An object whose live resourceVersion is what it was at the last
    // reconcile of the same parse has the same diff: only changed objects
    // are diffed again, so one edit costs one diff, not one per object.
    let kinds: HashMap<&WatchKey, ApiResource> = keys.iter().map(|key| (key, key_resource(key))).collect();
    let previous = context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
    let previous = previous.filter(|p| Arc::ptr_eq(&p.sources, &parsed));
    let mut versions = Vec::with_capacity(parsed.objects.len());
    let diffs: Vec<drift::ObjectDiff> = parsed
        .objects
        .iter()
        .zip(&resources)
        .enumerate()
        .map(|(index, (declared, key))| {
            let live = key.as_ref().and_then(|key| {
                let reference = ObjectRef::new_with(&declared.key.name, kinds.get(key)?.clone())
                    .within_opt(key.namespace.as_deref());
                stores.get(key)?.get(&reference)
            });
            let version = live.as_ref().and_then(|l| l.metadata.resource_version.clone());
            let unchanged = previous.as_ref().and_then(|p| p.versions.get(index).zip(p.diffs.get(index)));
            let diff = match unchanged {
                Some((seen, diff)) if *seen == version && version.is_some() => diff.clone(),
                _ => {
                    let live = live.and_then(|object| serde_json::to_value(&*object).ok());
                    drift::diff(&declared.object, live.as_ref(), &options)
                }
            };
            versions.push(version);
            diff
        })
        .collect();
    let observed: Vec<status::Observed<'_>> = parsed
        .objects
        .iter()
        .zip(&diffs)
        .map(|(declared, diff)| status::Observed { object: declared.key.object_ref(), diff })
        .collect();
    let status = status::observed(&old, generation, parsed.revision.clone(), &observed, now);
    write_status(&context, &state, &old, &status).await?;

    // Tell: Events and metrics on what started or stopped drifting.
    let (started, stopped) = status::transitions(&old, &status);
    for drifted in &started {
        let diff = observed.iter().find(|o| o.object == drifted.object).map(|o| o.diff);
        let object = describe(&drifted.object);
        let fields = drifted.fields.join(", ");
        info!(desired_state = %name, %namespace, %object, %fields, "drift detected");
        if let Some(diff) = diff {
            debug!(desired_state = %name, %object, unified = %diff.unified, "drift");
        }
        context.metrics.drift_detections.inc();
        if let Some(since) = triggered_at {
            context.metrics.drift_detection_latency.observe(since.elapsed().as_secs_f64());
        }
        publish(&context, &state, EventType::Warning, "DriftDetected", format!("{object} differs from Git: {fields}"))
            .await;
    }
    for object in &stopped {
        let object = describe(object);
        info!(desired_state = %name, %namespace, %object, "drift resolved");
        publish(&context, &state, EventType::Normal, "DriftResolved", format!("{object} matches Git again")).await;
    }
    record_drifted(&context, &me, status.drifted.unwrap_or(0));
    let remembered = LastDiffs { sources: parsed.clone(), versions, diffs };
    context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).insert(me, remembered);
    Ok(Action::await_change())
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
            context.parsed.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.last_diffs.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
        }
    }
}

fn record_drifted(context: &Context, me: &ObjectRef<DesiredState>, drifted: i64) {
    let mut all = context.drifted.lock().unwrap_or_else(|p| p.into_inner());
    all.insert(me.clone(), drifted);
    let total: i64 = all.values().sum();
    let labels = super::metrics::ClassLabels { class: super::metrics::Class::Unauthorized };
    context.metrics.drifted_objects.get_or_create(&labels).set(total);
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
    config_maps: &[SourceConfigMap],
    scope: &SourceScope<'_>,
) -> Result<(Result<drift::ParsedSources, drift::SourceErrors>, Resolver), Error> {
    let resolver = Resolver { discovery: context.discovery.read().await.0.clone() };
    let parsed = drift::parse_sources(config_maps, scope, &resolver);
    match &parsed {
        Err(errors) if has_unknown_kind(errors) => {
            let mut guard = context.discovery.write().await;
            if guard.1.elapsed() > DISCOVERY_REFRESH {
                let fresh = Discovery::new(context.client.clone()).run().await.map_err(Error::Discovery)?;
                *guard = (Arc::new(fresh), Instant::now());
            }
            let resolver = Resolver { discovery: guard.0.clone() };
            drop(guard);
            Ok((drift::parse_sources(config_maps, scope, &resolver), resolver))
        }
        _ => Ok((parsed, resolver)),
    }
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
