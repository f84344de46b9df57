//! The drift controller: DesiredState -> its source ConfigMaps -> the
//! declared objects -> watches on exactly their kinds (and, as metadata,
//! on the owned kinds of the namespaces it manages) -> the diff against
//! live, undeclared objects -> the gate's verdict per drifted object (hold,
//! revert or delete, report) -> reverts, deletions, status, Events and
//! metrics.
//!
//! Each pass is three steps: [`read`] (sources and caches), [`plan`] (pure:
//! what to do, as a value) and [`execute`] (do it, then tell).
//! A source that does not parse is reported and changes nothing.

mod cache;
mod changes;
mod claims;
mod contest;
mod execute;
mod inventory;
mod memory;
mod plan;
mod read;
mod rejected;
mod report;
mod snapshot;
pub mod status;
mod steady;
mod trust;
pub mod watches;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, PartialObjectMeta};
use kube::core::{Selector, SelectorExt};
use kube::discovery::Discovery;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use k8s_openapi::api::rbac::v1::{ClusterRole, Role};

use super::gate::{Caches, RevertLimiter, Subject, Verdict};
use crate::api::{AccessRequest, DesiredState, SourceRef};
use crate::drift::{self, DiffOptions, kept, undeclared};
use crate::gate::writes;
use crate::metrics::{ErrorLabels, Metrics};
use crate::operator::ready::Ready;
use crate::operator::{watch, writelog};
use memory::Memories;
use read::Sources;
use watches::Watches;

const CONTROLLER: &str = "drift";
/// How long to wait for a new watch's first list before deciding anything.
const WATCH_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Discovery is refreshed at most this often (when a kind is unknown).
const DISCOVERY_REFRESH: Duration = Duration::from_secs(10);
/// Reverts of one reconcile in flight at once.
const REVERT_CONCURRENCY: usize = 16;
/// How long a split source may look half-published before it is refused.
const PUBLISH_SETTLE: Duration = Duration::from_secs(10);
/// How long after a start a pass waits for every DesiredState to have been
/// read once (then it goes on without those that could not be).
const CLAIMS_SETTLE: Duration = Duration::from_secs(30);

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
#[derive(Clone)]
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
    /// The write log the watches confirm and the gate reads.
    pub write_log: Option<Arc<crate::operator::writelog::SharedLog>>,
    /// The write-log webhook's configuration, kept by the leader.
    pub writes_hook: Option<Arc<crate::webhook::configuration::WritesHook>>,
    /// Where drift's notifications go.
    pub notices: crate::operator::notify::Outbox,
    /// The reviews, policies and namespaces grants are computed from: the
    /// access controller's caches (`access::DecisionCaches`).
    pub approvals: (super::gate::Approvals, Ready),
    /// The process's caches of AccessRequests and of Namespaces.
    pub requests: watch::Shared<AccessRequest>,
    pub namespaces: watch::Shared<Namespace>,
}

struct Context {
    client: Client,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    settings: Settings,
    desired_states: Store<DesiredState>,
    /// Declared kinds, whole objects.
    watches: Watches<DynamicObject>,
    /// Owned kinds no source declares in a namespace: metadata only.
    metadata_watches: Watches<PartialObjectMeta<DynamicObject>>,
    discovery: tokio::sync::RwLock<(Arc<Discovery>, Instant)>,
    /// When a watch first saw a change that a DesiredState has not yet
    /// reconciled: the start of the detection latency.
    pending_since: Arc<Mutex<HashMap<ObjectRef<DesiredState>, Instant>>>,
    /// What changed for each DesiredState since its last pass.
    changes: changes::Changes,
    /// Drift counts per DesiredState, for the cluster-wide gauges.
    drifted: Mutex<execute::DriftTally>,
    /// Grants, their roles and the audit receiver's logs, for the gate.
    gate: Caches,
    limiter: RevertLimiter,
    /// Metadata of every ConfigMap: which sources changed, without reading them.
    source_meta: Store<PartialObjectMeta<ConfigMap>>,
    /// Every reconcile waits for it at once: see `operator::ready`.
    source_meta_listed: crate::operator::ready::Ready,
    /// The source ConfigMaps each DesiredState's sources last named: a
    /// change to one of them is a change to its sources even when it no
    /// longer matches (a label taken off).
    sources_found: Arc<SourcesFound>,
    /// The PublisherKeys and namespace labels signatures are checked against.
    trust: trust::Anchors,
    /// What each DesiredState's last pass left for the next.
    memories: Memories,
    /// Which DesiredState declares (and owns) which object.
    claims: claims::Claims,
    started: Instant,
}

/// The names of the source ConfigMaps each DesiredState's last read found.
type SourcesFound = Mutex<HashMap<ObjectRef<DesiredState>, Vec<String>>>;

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
    let changes = changes::Changes::default();
    let controller = Controller::new(Api::<DesiredState>::all(client.clone()), watcher::Config::default())
        .trigger_backoff(super::backoff::WatchBackoff::default());
    let desired_states = controller.store();
    let reporter = Reporter { controller: "driftwarden".into(), instance: settings.instance.clone() };
    let (source_meta, source_meta_writer) = reflector::store();
    let sources_found: Arc<SourcesFound> = Arc::default();
    let (cluster_roles, cluster_role_events) =
        watch::reflect(Api::<ClusterRole>::all(client.clone()), watcher::Config::default());
    let (roles, role_events) = watch::reflect(Api::<Role>::all(client.clone()), watcher::Config::default());
    // The roles' rules are only read: their reflectors run on their own.
    let role_watches = [tokio::spawn(watch::drive(cluster_role_events)), tokio::spawn(watch::drive(role_events))];
    let requests = settings.requests.clone();
    let (approvals, approvals_listed) = settings.approvals.clone();
    let limiter = RevertLimiter::new(settings.revert_rate, settings.revert_burst);
    if !settings.verify_sources {
        warn!(
            "source signature verification is OFF (--insecure-skip-source-verification): anyone who can write a source ConfigMap decides what is enforced"
        );
    }
    let (trust, key_events) = trust::Anchors::start(&client, &settings.namespaces);
    let namespace_events = settings.namespaces.changes().map(|change| change.object().clone());
    // The same watch that keeps the anchors current feeds the keys' status.
    let (key_changes, changed_keys) = tokio::sync::mpsc::unbounded_channel();
    let key_status = tokio::spawn(trust::keep_key_status(client.clone(), trust.keys.clone(), changed_keys));
    let writes_hook = settings.writes_hook.clone();
    let write_log = settings.write_log.clone();
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        metrics,
        settings,
        desired_states: desired_states.clone(),
        watches: Watches::new(
            client.clone(),
            trigger.clone(),
            pending_since.clone(),
            changes.clone(),
            write_log.clone(),
        ),
        metadata_watches: Watches::new(
            client.clone(),
            trigger,
            pending_since.clone(),
            changes.clone(),
            write_log.clone(),
        ),
        discovery: tokio::sync::RwLock::new((Arc::new(discovery), Instant::now())),
        pending_since,
        changes: changes.clone(),
        drifted: Mutex::default(),
        gate: Caches {
            listed: Ready::all_of(vec![
                requests.listed.clone(),
                Ready::of(&cluster_roles),
                Ready::of(&roles),
                approvals_listed,
            ]),
            requests: requests.store.clone(),
            cluster_roles,
            roles,
            approvals,
            write_log,
        },
        limiter,
        source_meta_listed: crate::operator::ready::Ready::of(&source_meta),
        sources_found: sources_found.clone(),
        source_meta,
        trust,
        memories: Memories::default(),
        claims: claims::Claims::default(),
        started: Instant::now(),
    });

    let hook_keeper = writes_hook.map(|hook| tokio::spawn(keep_writes_hook(context.clone(), hook)));
    let first_watches = context.gate.write_log.as_ref().map(|log| {
        let listing = log.listing();
        tokio::spawn(first_watches_started(context.clone(), Ready::of(&desired_states), listing))
    });
    // Source ConfigMaps by metadata only, and of that only what selects and
    // fingerprints a source: their contents are read when a DesiredState
    // that uses them reconciles.
    // A relist may have missed a deletion (no event says so): every
    // DesiredState reads its sources again on its next pass.
    let (relisted, states_relisted) = (changes.clone(), desired_states.clone());
    let sources = watch::retrying(Api::<PartialObjectMeta<ConfigMap>>::all(client.clone()), watcher::Config::default())
        .modify(kept::source_identity)
        .reflect(source_meta_writer)
        .inspect_ok(move |event| {
            if matches!(event, watcher::Event::InitDone) {
                relisted.anything_for(all_of(&states_relisted));
            }
        })
        .touched_objects();
    // A grant that opens, ends or logs a write may change the gate's verdict
    // on any drift in its namespace.
    let access_requests = requests.changes().map(|change| change.object().clone());
    let states = desired_states.clone();
    let states_of_requests = desired_states.clone();
    let (states_of_keys, states_of_namespaces) = (desired_states.clone(), desired_states.clone());
    // What these triggers change is not one named object: the pass they
    // start reads everything.
    let (of_sources, of_requests, of_keys, of_namespaces) =
        (changes.clone(), changes.clone(), changes.clone(), changes.clone());
    controller
        .watches_stream(sources, move |config_map: PartialObjectMeta<ConfigMap>| {
            of_sources.anything_for(users_of(&states, &sources_found, &config_map))
        })
        .watches_shared_stream(access_requests, move |request: Arc<AccessRequest>| {
            of_requests.anything_for(in_namespace(&states_of_requests, &request))
        })
        // A key added, changed or removed may accept or refuse any source.
        .watches_stream(key_events.map(Ok), move |key: crate::api::PublisherKey| {
            let _ = key_changes.send(key);
            of_keys.anything_for(all_of(&states_of_keys))
        })
        .watches_shared_stream(namespace_events, move |ns: Arc<Namespace>| {
            let states = states_of_namespaces.state();
            let in_it = states.iter().filter(|ds| ds.namespace() == Some(ns.name_any()));
            of_namespaces.anything_for(in_it.map(|ds| ObjectRef::from_obj(&**ds)).collect())
        })
        .reconcile_on(tokio_stream_from(triggers))
        .graceful_shutdown_on(shutdown.cancelled_owned())
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
    role_watches.iter().for_each(|task| task.abort());
    key_status.abort();
    for task in hook_keeper.into_iter().chain(first_watches) {
        task.abort();
    }
}

/// Holds `listing` until every DesiredState has started its watches, whose
/// own lists are waited for from then on (or, at most, for
/// [`writes::PROVISIONAL_MAX_WAIT`]): a write admitted while a new leader
/// starts stays provisional until a watch can have delivered it.
async fn first_watches_started(context: Arc<Context>, listed: Ready, listing: writelog::Listing) {
    let started = async {
        listed.wait().await;
        loop {
            let users: HashSet<ObjectRef<DesiredState>> =
                context.watches.users().into_iter().chain(context.metadata_watches.users()).collect();
            if context.desired_states.state().iter().all(|state| users.contains(&ObjectRef::from_obj(&**state))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let _ = tokio::time::timeout(writes::PROVISIONAL_MAX_WAIT.unsigned_abs(), started).await;
    drop(listing);
}

/// How often the leader compares the write-log webhook's rules with the watches.
const WRITES_HOOK_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the write-log webhook routing exactly the kinds and namespaces
/// watched (declared kinds and those watched for undeclared objects) to
/// this replica, the leader, whose watches confirm the records.
async fn keep_writes_hook(context: Arc<Context>, hook: Arc<crate::webhook::configuration::WritesHook>) {
    use crate::webhook::configuration::ManagedKind;
    use std::collections::BTreeSet;
    let mut round: u32 = 0;
    loop {
        // Applied again now and then even when unchanged: someone may have
        // deleted or edited the configuration.
        if round.is_multiple_of(60) {
            hook.forget();
        }
        round = round.wrapping_add(1);
        let keys: Vec<watches::WatchKey> =
            context.watches.keys().into_iter().chain(context.metadata_watches.keys()).collect();
        let kinds: BTreeSet<ManagedKind> =
            keys.iter().map(|k| ManagedKind { group: k.group.clone(), plural: k.plural.clone() }).collect();
        let namespaces: Option<BTreeSet<String>> = keys.iter().map(|k| k.namespace.clone()).collect();
        if let Err(error) = hook.apply(&context.client, &kinds, namespaces.as_ref()).await {
            warn!(%error, "updating the write-log webhook failed; will retry");
        }
        tokio::time::sleep(WRITES_HOOK_INTERVAL).await;
    }
}

fn all_of(states: &Store<DesiredState>) -> Vec<ObjectRef<DesiredState>> {
    states.state().iter().map(|ds| ObjectRef::from_obj(&**ds)).collect()
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

/// The DesiredStates whose sources include this ConfigMap, or did when
/// their sources were last read.
fn users_of(
    states: &Store<DesiredState>,
    found: &SourcesFound,
    config_map: &PartialObjectMeta<ConfigMap>,
) -> Vec<ObjectRef<DesiredState>> {
    let namespace = config_map.namespace();
    let name = config_map.name_any();
    let labels = config_map.labels().clone();
    let found = found.lock().unwrap_or_else(|p| p.into_inner());
    states
        .state()
        .iter()
        .filter(|ds| ds.namespace() == namespace)
        .map(|ds| (ObjectRef::from_obj(&**ds), ds))
        .filter(|(me, ds)| {
            ds.spec.sources.iter().any(|source| selects(source, &name, &labels))
                || found.get(me).is_some_and(|names| names.contains(&name))
        })
        .map(|(me, _)| me)
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

/// The gate's caches, as the plan asks for them.
impl plan::Gate for Caches {
    fn verdict(&self, subject: &Subject<'_>, remediation: crate::gate::Remediation, now: Timestamp) -> Verdict {
        Caches::verdict(self, subject, remediation, now)
    }

    fn codified(&self, namespace: &str, request: &str, object: &crate::api::ObjectRef) -> bool {
        Caches::codified(self, namespace, request, object)
    }
}

/// One pass: read, plan, execute. A pass after a full one that only
/// named declared objects changed since reads, diffs and judges just those
/// and the drifting ones ([`steady`]).
async fn reconcile(state: Arc<DesiredState>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_timer(CONTROLLER);
    let started = Instant::now();
    let me = ObjectRef::from_obj(&*state);
    let triggered_at = context.pending_since.lock().unwrap_or_else(|p| p.into_inner()).remove(&me);
    let changed = context.changes.take(&me);
    forget_deleted(&context);
    read::caches_listed(&context).await?;
    if state.spec.suspend {
        context.watches.release(&me);
        context.metadata_watches.release(&me);
        return Ok(Action::await_change());
    }
    let mut old = state.status.clone().unwrap_or_default();
    let generation = state.metadata.generation;
    let mut memory = context.memories.take(&me);
    // Put back only by a pass that completes: any other ends in a full one.
    let mut steady = memory.steady.take();
    memory.catch_up(&mut old);

    // Read.
    // Only named objects changed since the last pass: the sources did not.
    let quiet = !changed.anything && steady.is_some();
    let sources = read::sources(&context, &state, &old, &mut memory, quiet).await;
    let refused_now = context.memories.refused() + usize::from(memory.refused.is_some());
    context.metrics.sources_refused.set(refused_now as i64);
    let claimant = claims::Claimant {
        created: state.metadata.creation_timestamp.as_ref().map(|t| t.0),
        namespace: state.namespace().unwrap_or_default(),
        name: state.name_any(),
    };
    let (entry, refusal, resolver) = match sources? {
        Sources::Enforce { entry, refusal, resolver } => (entry, refusal, resolver),
        Sources::Settling => return Ok(Action::requeue(Duration::from_secs(1))),
        Sources::Refused(refusal) => {
            context.claims.register(&claimant, &Arc::new(kept::Declarations { revision: None, objects: Vec::new() }));
            // Nothing verified to enforce yet: report, and wait for a good source.
            execute::refuse(&context, &state, (&old, generation), &refusal).await?;
            return Ok(Action::await_change());
        }
    };
    let parsed = entry.sources.clone();
    context.claims.register(&claimant, &parsed);
    // Who owns an object, and what is undeclared, depends on the other
    // DesiredStates' declarations: after a start, wait (a little) until
    // each that could declare here has been read once.
    if !neighbours_registered(&context, &state) && context.started.elapsed() < CLAIMS_SETTLE {
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let now = Timestamp::now();
    let claims_generation = context.claims.generation();
    let mut doubt = match &steady {
        None => Some("no full pass to follow"),
        Some(_) if refusal.is_some() => Some("the sources are refused"),
        Some(kept) => kept.doubt(&parsed, claims_generation, &changed, Instant::now()),
    };
    let followed = match steady.take() {
        Some(mut kept) if doubt.is_none() => match kept.refresh(&changed, &|id| context.claims.declared(id)) {
            Some(objects) => Some((kept, objects)),
            None => {
                doubt = Some("a named change a full read must follow");
                steady = Some(kept);
                None
            }
        },
        other => {
            steady = other;
            None
        }
    };
    let index = steady.map(|s| s.index);
    // A full pass also reads and advances the inventory (`full`).
    // A wake-up the full pass asked for stands: this pass replaces its timer.
    let mut due = None;
    let (live, changed_objects, removed_from_git, mut prune_blocked, index, mut full) = match followed {
        Some((kept, objects)) => {
            due = kept.due;
            (kept.live, Some(objects), kept.removed_from_git, kept.prune_blocked, kept.index, None)
        }
        None => {
            let Some(live) = read::live(&context, &state, &parsed, &resolver, now).await else {
                return Ok(Action::requeue(Duration::from_secs(1)));
            };
            // What earlier revisions declared: Git's removals are pruned or left
            // alone, never judged as undeclared creations.
            let Some(previous) = read::inventory(&context, &state, &mut memory).await else {
                return Ok(Action::requeue(Duration::from_secs(2)));
            };
            let current = report::declared_now(&parsed, &live.lives, &live.owners);
            let policy =
                drift::inventory::Policy { prune: state.spec.prune, confirmed: state.spec.confirm_prune.as_deref() };
            let step = drift::inventory::advance(&previous, &current, policy, |(group, kind, namespace, name)| {
                context.claims.declared(&claims::id_of(group, kind, namespace.as_deref(), name))
            });
            let declared = current.len();
            let index = steady::Index::of(&parsed, &live.resources, index);
            // Said after the prune below, from the step it leaves.
            (live, None, step.removed_from_git(), None, index, Some((step, declared)))
        }
    };

    let read_took = started.elapsed();

    // Plan (pure).
    let options =
        DiffOptions::with_ignore(drift::with_global_ignore(&state.spec.ignore, &context.settings.ignore_pointers));
    let inputs = plan::Inputs {
        spec: &state.spec,
        old: &old,
        parsed: &parsed,
        resources: &live.resources,
        lives: &live.lives,
        extras: &live.extras,
        owners: &live.owners,
        known: undeclared::Known {
            owner_since: state.metadata.creation_timestamp.as_ref().map(|t| t.0),
            watched: &live.watched,
            uids: &live.uids,
            ignore: &state.spec.undeclared.ignore,
            grant_bindings: &live.grant_bindings,
            sources: &live.source_config_maps,
            now,
        },
        removed_from_git: &removed_from_git,
        options: &options,
        now,
        changed: changed_objects.as_ref(),
    };
    let previous = memory.last.take();
    let plan = plan::plan(&inputs, &memory, previous, &context.gate);
    for object in &plan.clean {
        memory.clean_at.insert(object.clone(), now);
    }

    let planned = started.elapsed();

    // Execute.
    let outcome = execute::carry_out(&context, &state, &inputs, &plan, &mut memory).await;
    let mut inventory_saved = true;
    let mut inventory = None;
    if let Some((step, declared)) = &mut full {
        step.learn_uids(outcome.uids.iter().map(|(index, uid)| (&parsed.objects[*index].key, uid.as_str())));
        let pruned = if state.spec.dry_run {
            execute::Pruned::default()
        } else {
            execute::prune(&context, &state, &resolver, step, &mut memory.pruning).await
        };
        let (entries, saved) = execute::keep_inventory(&context, &state, step, &pruned, &mut memory).await;
        inventory_saved = saved;
        prune_blocked = step.blocked.as_ref().map(status::prune_blocked);
        inventory = Some((entries, pruned, *declared));
    }

    // Tell: status, Events, metrics (what to tell is pure).
    let inventory_at = format!(
        "{}/{}",
        context.settings.operator_namespace,
        inventory::config_map_name(&state.namespace().unwrap_or_default(), &state.name_any())
    );
    let blocked = full.as_ref().and_then(|(step, _)| step.blocked.as_ref());
    let done = report::Done {
        generation,
        outcome: &outcome,
        signature: entry.signature.clone(),
        verified: context.settings.verify_sources,
        refusal: refusal.as_ref(),
        unwatched: &live.unwatched,
        inventory: inventory.as_ref().map(|(entries, pruned, declared)| report::Kept {
            declared: *declared,
            entries,
            blocked,
            pruned: pruned.deleted.len(),
            config_map: &inventory_at,
        }),
        prune_blocked: prune_blocked.clone(),
    };
    let executed = started.elapsed();
    let status = report::status(&inputs, &plan, &memory, done);
    execute::write_status(&context, &state, &old, &status).await?;
    let written = started.elapsed();
    memory.wrote(&status);
    let notices = report::notices(&inputs, &plan, &outcome, &memory, (&status, refusal.is_some()));
    if let Some(refusal) = &refusal {
        execute::announce_refusal(&context, &state, &old, refusal).await;
    }
    execute::announce(&context, &state, notices, triggered_at).await;
    memory.contest.expire(now);
    execute::record_drifted(&context, &me, &status, memory.contest.contested(now));
    execute::show_pending_drift(&context, &state, &status).await;
    if !plan.deletions.is_empty() && outcome.deleted.len() < plan.deletions.len() {
        info!(desired_state = %state.name_any(), "deletions deferred");
    }

    // Come back when a held change's window ends, or a deferred step is due.
    let saving_again = (!inventory_saved).then_some(Duration::from_secs(2));
    let pruning_again = inventory.as_ref().and_then(|(_, pruned, _)| pruned.retry_after);
    let still_due = due.map(|due: Instant| due.saturating_duration_since(Instant::now()));
    let after =
        report::next_pass(plan.wake, &[outcome.retry_after, pruning_again, saving_again, still_due], Timestamp::now());
    memory.last = Some(report::remembered(&inputs, plan, &outcome));
    // A revert that re-created an object gave it a new uid: the inventory
    // learns it in a full pass.
    let recreated = outcome
        .uids
        .iter()
        .any(|(index, uid)| live.lives[*index].as_ref().and_then(|l| l.metadata.uid.as_deref()) != Some(uid.as_str()));
    debug!(desired_state = %state.name_any(), namespace = ?state.namespace(), full = ?doubt,
           changed = changed_objects.as_ref().map(|f| f.declared.len()),
           undeclared_changed = changed_objects.as_ref().map(|f| f.undeclared.as_ref().map(BTreeSet::len)), differing = memory.last.as_ref().map(|l| l.differing.len()),
           read_us = read_took.as_micros() as u64, planned_us = planned.as_micros() as u64,
           executed_us = executed.as_micros() as u64, written_us = written.as_micros() as u64,
           took_us = started.elapsed().as_micros() as u64, "drift pass");
    if !recreated && inventory_saved {
        let mut next = steady::Steady::new(parsed, live, index, claims_generation, removed_from_git, prune_blocked);
        next.due = after.map(|after| Instant::now() + after);
        memory.steady = Some(next);
    }
    Ok(after.map_or_else(Action::await_change, Action::requeue))
}

/// Whether every DesiredState that could declare what `state` manages has
/// been read: those of its namespace and of the operator's (which may
/// declare anywhere); for one in the operator's namespace, all of them.
fn neighbours_registered(context: &Context, state: &DesiredState) -> bool {
    let operator_namespace = context.settings.operator_namespace.as_str();
    let own = state.namespace().unwrap_or_default();
    context
        .desired_states
        .state()
        .iter()
        .filter(|ds| !ds.spec.suspend)
        .filter(|ds| {
            let namespace = ds.namespace().unwrap_or_default();
            own == operator_namespace || namespace == own || namespace == operator_namespace
        })
        .all(|ds| context.claims.has(&ds.namespace().unwrap_or_default(), &ds.name_any()))
}

/// A DesiredState that is gone no longer holds watches open, nor memory.
fn forget_deleted(context: &Context) {
    let mut known = context.watches.users();
    known.extend(context.metadata_watches.users());
    known.extend(context.memories.known());
    for user in known {
        if context.desired_states.get(&user).is_none() {
            context.watches.release(&user);
            context.metadata_watches.release(&user);
            context.drifted.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.limiter.forget(&user);
            context.memories.forget(&user);
            context.sources_found.lock().unwrap_or_else(|p| p.into_inner()).remove(&user);
            context.claims.forget(user.namespace.as_deref().unwrap_or_default(), &user.name);
            context.settings.notices.drift_status(user.namespace.as_deref().unwrap_or_default(), &user.name, None);
            let (client, operator_namespace) = (context.client.clone(), context.settings.operator_namespace.clone());
            let (namespace, name) = (user.namespace.clone().unwrap_or_default(), user.name.clone());
            tokio::spawn(async move {
                if let Err(error) = snapshot::forget(&client, &operator_namespace, &namespace, &name).await {
                    warn!(%error, desired_state = %name, %namespace, "removing the copy of its verified sources failed");
                }
                if let Err(error) = inventory::forget(&client, &operator_namespace, &namespace, &name).await {
                    warn!(%error, desired_state = %name, %namespace, "removing its inventory failed");
                }
            });
        }
    }
}
