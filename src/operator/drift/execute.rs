//! The execute step of a drift pass: carries out a [`Plan`] (reverts,
//! deletions, codify patches), then writes status, Events and metrics.
//! It decides nothing the plan did not.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Preconditions, PropagationPolicy};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::memory::Memory;
use super::plan::{Inputs, Notice, Outcome, Plan, describe};
use super::{Context, Error, REVERT_CONCURRENCY, rejected, status};
use crate::api::{DesiredState, DesiredStateStatus, DriftClass, DriftCounts, RevertRecord, SessionChange};
use crate::drift::inventory;
use crate::metrics::{Metrics, RevertLabels, RevertReason};
use crate::notify;
use crate::operator::gate;

/// Carries out the plan's reverts, deletions and codify patches: codify
/// records are made first (from what the drift was seen on) and written
/// after the reverts and deletions, which must not wait for them.
pub(super) async fn carry_out(
    context: &Context,
    state: &DesiredState,
    inputs: &Inputs<'_>,
    plan: &Plan,
    memory: &mut Memory,
) -> Outcome {
    let me = ObjectRef::from_obj(state);
    let namespace = state.namespace().unwrap_or_default();
    let name = state.name_any();
    let now = Timestamp::now();
    let mut outcome = Outcome::default();
    let live_value = |index: usize| inputs.lives[index].as_deref().and_then(crate::drift::kept::live_value);

    let mut codified: BTreeMap<String, Vec<SessionChange>> = BTreeMap::new();
    for (request, index) in &plan.codify {
        let declared = &inputs.parsed.objects[*index];
        let change = gate::session_change(
            declared.key.object_ref(),
            &name,
            &declared.origin,
            &declared.object(),
            live_value(*index).as_ref(),
            &plan.diffs[*index],
            now,
        );
        codified.entry(request.clone()).or_default().push(change);
    }
    for (request, at) in &plan.codify_extras {
        let extra = &inputs.extras[plan.extras[*at].0];
        let Some(object_namespace) = extra.key.namespace.as_deref() else { continue };
        let api: Api<DynamicObject> =
            Api::namespaced_with(context.client.clone(), object_namespace, &extra.key.resource());
        match api.get_opt(&extra.name).await {
            Ok(Some(live)) if live.uid().as_deref() == Some(extra.uid.as_str()) => {
                let live = serde_json::to_value(&live).unwrap_or_default();
                let source = super::plan::new_manifest_path(inputs.parsed, extra);
                let patch = crate::gate::codify::new_object_patch(&live, &source);
                let change = SessionChange {
                    object: extra.object_ref(),
                    desired_state: name.clone(),
                    patch,
                    source,
                    at: Time(now),
                };
                codified.entry(request.clone()).or_default().push(change);
            }
            Ok(_) => {}
            Err(error) => {
                warn!(%error, object = %describe(&extra.object_ref()), "reading an undeclared object to codify it failed")
            }
        }
    }

    revert(context, state, &me, inputs, plan, memory, &mut outcome).await;
    delete(context, state, &me, inputs, plan, &mut outcome).await;

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
                    if let Some(access) = context.gate.requests.get(&ObjectRef::new(&request).within(&namespace)) {
                        let notice =
                            notify::codified_notice(&access, &change.object, &change.source, &change.patch, now);
                        context.settings.notices.notice(notice);
                    }
                }
            }
            Err(error) => warn!(%error, access_request = %request, "recording the session's changes failed"),
        }
    }
    outcome
}

fn reason_of(class: DriftClass) -> RevertReason {
    match class {
        DriftClass::WindowEnded => RevertReason::window_ended,
        _ => RevertReason::unauthorized,
    }
}

/// Reverts the plan's declared objects, several at once, rate-limited per
/// DesiredState.
async fn revert(
    context: &Context,
    state: &DesiredState,
    me: &ObjectRef<DesiredState>,
    inputs: &Inputs<'_>,
    plan: &Plan,
    memory: &mut Memory,
    outcome: &mut Outcome,
) {
    let (namespace, name) = (state.namespace().unwrap_or_default(), state.name_any());
    let admitted = admit(context, me, &plan.reverts, &mut outcome.retry_after);
    let reverts = admitted.into_iter().map(|index| {
        let declared = &inputs.parsed.objects[index];
        let resource = inputs.resources[index].as_ref().map(|key| key.resource());
        let kind = declared.key.kind.clone();
        let (object, live) =
            (declared.object(), inputs.lives[index].as_deref().and_then(crate::drift::kept::live_value));
        async move {
            let started = Instant::now();
            let result = match resource {
                Some(resource) => gate::revert(&context.client, &resource, &object, live, inputs.options).await,
                None => return (index, Err((None, "unknown kind".to_owned())), started),
            };
            let result = result.map_err(|e| (rejected::refused_declaration(&e, &kind), e.to_string()));
            (index, result, started)
        }
    });
    let results: Vec<_> = futures::stream::iter(reverts).buffer_unordered(REVERT_CONCURRENCY).collect().await;
    for (index, result, started) in results {
        let declared = &inputs.parsed.objects[index];
        let judgement = plan.judgements.get(&index).expect("a reverted object was judged");
        let object_ref = declared.key.object_ref();
        let object = describe(&object_ref);
        let reason = reason_of(judgement.class);
        let request = judgement.request.clone().unwrap_or_default();
        let requester = context.gate.requester(&namespace, &request).unwrap_or_default();
        let approvers = context.gate.approvers(&namespace, &request).join(",");
        match result {
            Ok(reverted) => {
                memory.reverted.insert(object_ref.clone(), reverted.version);
                outcome.uids.push((index, reverted.uid));
                memory.clean_at.insert(object_ref.clone(), Timestamp::now());
                memory.contest.reverted(&object_ref, Timestamp::now());
                context.metrics.reverts.get_or_create(&RevertLabels { reason: reason.clone() }).inc();
                if let (RevertReason::window_ended, Some(end)) =
                    (&reason, context.gate.window_end(&namespace, &request))
                {
                    let lag = Timestamp::now().duration_since(end).as_secs_f64().max(0.0);
                    context.metrics.revert_latency_after_window_end.observe(lag);
                }
                let why = match reason {
                    RevertReason::window_ended => format!("the window of AccessRequest {request} ({requester}) ended"),
                    _ => "no approved access window covers the change".to_owned(),
                };
                info!(desired_state = %name, %namespace, %object, access_request = %request, %requester, %approvers,
                      class = ?judgement.class, took_ms = started.elapsed().as_millis() as u64, "drift reverted to Git");
                publish(context, state, EventType::Normal, "Reverted", format!("{object} reverted to Git: {why}"))
                    .await;
                context.settings.notices.notice(notify::reverted_notice(
                    &name,
                    &object_ref,
                    judgement.class,
                    false,
                    judgement.request.as_deref(),
                    Timestamp::now(),
                ));
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
                memory.reject(inputs.parsed, index, refused);
            }
            Err((None, error)) => {
                context.metrics.revert_failures.get_or_create(&RevertLabels { reason }).inc();
                warn!(desired_state = %name, %namespace, %object, %error, "revert failed; will retry");
                publish(
                    context,
                    state,
                    EventType::Warning,
                    "RevertFailed",
                    format!("reverting {object} failed: {error}"),
                )
                .await;
                let retry = Duration::from_secs(2);
                outcome.retry_after = Some(outcome.retry_after.map_or(retry, |w| w.min(retry)));
            }
        }
    }
    outcome.reverted.sort_unstable();
}

/// Deletes the plan's undeclared objects: only the object that was judged
/// (a uid precondition: one re-created under the same name is judged
/// afresh), its dependents first (foreground: a workload's Pods go with it).
async fn delete(
    context: &Context,
    state: &DesiredState,
    me: &ObjectRef<DesiredState>,
    inputs: &Inputs<'_>,
    plan: &Plan,
    outcome: &mut Outcome,
) {
    let (namespace, name) = (state.namespace().unwrap_or_default(), state.name_any());
    let admitted = admit(context, me, &plan.deletions, &mut outcome.retry_after);
    let deletions = admitted.into_iter().map(|at| {
        let extra = &inputs.extras[plan.extras[at].0];
        async move {
            let result = delete_exactly(&context.client, &extra.key.resource(), extra).await;
            (at, result)
        }
    });
    let results: Vec<_> = futures::stream::iter(deletions).buffer_unordered(REVERT_CONCURRENCY).collect().await;
    for (at, result) in results {
        let (index, judgement) = &plan.extras[at];
        let extra = &inputs.extras[*index];
        let object = describe(&extra.object_ref());
        let reason = reason_of(judgement.class);
        let request = judgement.request.clone().unwrap_or_default();
        match result {
            // Gone already, or replaced by another object of that name.
            Ok(false) => outcome.deleted.push(at),
            Ok(true) => {
                context.metrics.deletions.get_or_create(&RevertLabels { reason: reason.clone() }).inc();
                let why = match reason {
                    RevertReason::window_ended => {
                        format!("it was created within AccessRequest {request}, whose window ended")
                    }
                    _ => "no approved access window covers its creation".to_owned(),
                };
                info!(desired_state = %name, %namespace, %object, access_request = %request, class = ?judgement.class,
                      "undeclared object deleted");
                publish(
                    context,
                    state,
                    EventType::Normal,
                    "Deleted",
                    format!("{object} deleted: not declared in Git, and {why}"),
                )
                .await;
                context.settings.notices.notice(notify::reverted_notice(
                    &name,
                    &extra.object_ref(),
                    judgement.class,
                    true,
                    judgement.request.as_deref(),
                    Timestamp::now(),
                ));
                outcome.deleted.push(at);
                outcome.last = Some(RevertRecord {
                    object: extra.object_ref(),
                    at: Time(Timestamp::now()),
                    class: judgement.class,
                    access_request: judgement.request.clone(),
                });
            }
            Err(error) => {
                context.metrics.revert_failures.get_or_create(&RevertLabels { reason }).inc();
                warn!(desired_state = %name, %namespace, %object, %error, "deleting an undeclared object failed; will retry");
                publish(
                    context,
                    state,
                    EventType::Warning,
                    "DeleteFailed",
                    format!("deleting {object} failed: {error}"),
                )
                .await;
                let retry = Duration::from_secs(2);
                outcome.retry_after = Some(outcome.retry_after.map_or(retry, |w| w.min(retry)));
            }
        }
    }
    outcome.deleted.sort_unstable();
}

/// The first of `items` the DesiredState's rate limit admits now, in
/// order; when it admits no more, `retry_after` says when to come back.
fn admit<T: Copy>(
    context: &Context,
    me: &ObjectRef<DesiredState>,
    items: &[T],
    retry_after: &mut Option<Duration>,
) -> Vec<T> {
    let mut admitted = Vec::with_capacity(items.len());
    for item in items {
        match context.limiter.take(me) {
            Ok(()) => admitted.push(*item),
            Err(wait) => {
                *retry_after = Some(retry_after.map_or(wait, |w| w.min(wait)));
                break;
            }
        }
    }
    admitted
}

/// What pruning did.
#[derive(Debug, Default)]
pub(super) struct Pruned {
    /// Deletions confirmed: the object is gone, or another has its name.
    pub gone: BTreeSet<inventory::Id>,
    /// Objects whose deletion began in this pass (their Event was published).
    pub deleted: Vec<inventory::Entry>,
    pub retry_after: Option<Duration>,
}

/// How a prune deletion went.
enum PruneResult {
    /// Gone, or replaced by another object of that name (the uid
    /// precondition failed), or its kind is no longer served.
    Gone,
    /// Accepted; the object is still there while its dependents go.
    Deleting,
    Failed(kube::Error),
}

/// Deletes the inventory's `pruning` objects (exactly those: a uid
/// precondition), dependents first, rate-limited with the reverts. An entry
/// leaves the inventory only once a later call finds the object gone.
pub(super) async fn prune(
    context: &Context,
    state: &DesiredState,
    resolver: &super::read::Resolver,
    step: &inventory::Step,
    announced: &mut std::collections::HashSet<String>,
) -> Pruned {
    let me = ObjectRef::from_obj(state);
    let mut pruned = Pruned::default();
    let targets: Vec<&inventory::Entry> = step.pruning().collect();
    let indices: Vec<usize> = (0..targets.len()).collect();
    let admitted = admit(context, &me, &indices, &mut pruned.retry_after);
    let deletions = admitted.into_iter().map(|at| {
        let entry = targets[at];
        async move {
            let Some((resource, namespaced)) = resolver.resource(&entry.api_version, &entry.kind) else {
                return (entry, PruneResult::Gone);
            };
            let api: Api<DynamicObject> = match (&entry.namespace, namespaced) {
                (Some(namespace), true) => Api::namespaced_with(context.client.clone(), namespace, &resource),
                (None, false) => Api::all_with(context.client.clone(), &resource),
                // The kind changed scope: no object of this identity exists.
                _ => return (entry, PruneResult::Gone),
            };
            let params = DeleteParams {
                preconditions: Some(Preconditions { uid: Some(entry.uid.clone()), resource_version: None }),
                propagation_policy: Some(PropagationPolicy::Foreground),
                ..DeleteParams::default()
            };
            let result = match api.delete(&entry.name, &params).await {
                // Foreground: it stays (with a deletionTimestamp) until its
                // dependents are gone; or the server deleted it at once.
                Ok(deleted) => match deleted.left() {
                    Some(_) => PruneResult::Deleting,
                    None => PruneResult::Gone,
                },
                Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => PruneResult::Gone,
                Err(error) => PruneResult::Failed(error),
            };
            (entry, result)
        }
    });
    let results: Vec<_> = futures::stream::iter(deletions).buffer_unordered(REVERT_CONCURRENCY).collect().await;
    let revision = step_revision(state);
    for (entry, result) in results {
        match result {
            PruneResult::Gone => {
                announced.remove(&entry.uid);
                pruned.gone.insert(entry.id());
            }
            PruneResult::Deleting => {
                // Deleting again while its dependents go: said once.
                if announced.insert(entry.uid.clone()) {
                    pruned.deleted.push(entry.clone());
                }
                let again = Duration::from_secs(1);
                pruned.retry_after = Some(pruned.retry_after.map_or(again, |w| w.min(again)));
            }
            PruneResult::Failed(error) => {
                let forbidden = matches!(&error, kube::Error::Api(status) if status.code == 403);
                warn!(desired_state = %state.name_any(), object = %entry.describe(), %error, "pruning failed; will retry");
                let note = format!("pruning {} failed: {error}", entry.describe());
                publish(context, state, EventType::Warning, "PruneFailed", note).await;
                let again = Duration::from_secs(if forbidden { 30 } else { 2 });
                pruned.retry_after = Some(pruned.retry_after.map_or(again, |w| w.min(again)));
            }
        }
    }
    for entry in &pruned.deleted {
        context.metrics.deletions.get_or_create(&RevertLabels { reason: RevertReason::pruned }).inc();
        info!(desired_state = %state.name_any(), namespace = ?state.namespace(), object = %entry.describe(), uid = %entry.uid, "pruned");
        let note = format!("{} deleted: {revision} no longer declares it (spec.prune)", entry.describe());
        publish(context, state, EventType::Normal, "Pruned", note).await;
    }
    pruned
}

/// Stores the inventory after a pass when it changed (confirmed deletions
/// leave it here, not before), and announces a prune the guard holds back,
/// once per set of deletions. Returns the inventory now, and false if
/// storing it failed (the pass comes back).
pub(super) async fn keep_inventory(
    context: &Context,
    state: &DesiredState,
    step: &inventory::Step,
    pruned: &Pruned,
    memory: &mut Memory,
) -> (Vec<inventory::Entry>, bool) {
    match &step.blocked {
        Some(blocked) if memory.prune_blocked.as_deref() != Some(blocked.token.as_str()) => {
            let note = status::prune_blocked(blocked);
            warn!(desired_state = %state.name_any(), namespace = ?state.namespace(), %note, "prune held back");
            publish(context, state, EventType::Warning, "PruneBlocked", note).await;
            memory.prune_blocked = Some(blocked.token.clone());
        }
        Some(_) => {}
        None => memory.prune_blocked = None,
    }
    let mut entries = step.entries.clone();
    inventory::settle(&mut entries, &pruned.gone);
    if memory.inventory.as_ref() == Some(&entries) {
        return (entries, true);
    }
    let (namespace, name) = (state.namespace().unwrap_or_default(), state.name_any());
    let operator_namespace = &context.settings.operator_namespace;
    match super::inventory::save(&context.client, operator_namespace, &namespace, &name, &entries).await {
        Ok(()) => {
            memory.inventory = Some(entries.clone());
            (entries, true)
        }
        Err(error) => {
            warn!(%error, desired_state = %name, %namespace, "storing the inventory failed; will retry");
            (entries, false)
        }
    }
}

fn step_revision(state: &DesiredState) -> String {
    match state.status.as_ref().and_then(|s| s.revision.as_deref()) {
        Some(revision) => format!("revision {revision}"),
        None => "the current revision".to_owned(),
    }
}

/// Deletes `extra` if it is still the object that was judged (true). Gone
/// already, or replaced by another of the same name: nothing to do (false).
async fn delete_exactly(
    client: &kube::Client,
    resource: &ApiResource,
    extra: &super::plan::Extra,
) -> Result<bool, kube::Error> {
    let Some(namespace) = extra.key.namespace.as_deref() else { return Ok(false) };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let params = DeleteParams {
        preconditions: Some(Preconditions { uid: Some(extra.uid.clone()), resource_version: None }),
        propagation_policy: Some(PropagationPolicy::Foreground),
        ..DeleteParams::default()
    };
    match api.delete(&extra.name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(false),
        Err(error) => Err(error),
    }
}

/// Publishes the plan's Events, counting detections.
pub(super) async fn announce(
    context: &Context,
    state: &DesiredState,
    notices: Vec<Notice>,
    triggered_at: Option<Instant>,
) {
    let (namespace, name) = (state.namespace().unwrap_or_default(), state.name_any());
    for notice in notices {
        if notice.reason == "DriftDetected" {
            context.metrics.drift_detections.inc();
            if let Some(since) = triggered_at {
                context.metrics.drift_detection_latency.observe(since.elapsed().as_secs_f64());
            }
        }
        info!(desired_state = %name, %namespace, reason = notice.reason, note = %notice.note, "drift");
        publish(context, state, notice.type_, notice.reason, notice.note).await;
    }
}

/// Sources refused with nothing verified to enforce yet: status says why,
/// and nothing is changed.
pub(super) async fn refuse(
    context: &Context,
    state: &DesiredState,
    (old, generation): (&DesiredStateStatus, Option<i64>),
    refusal: &status::Refusal,
) -> Result<(), Error> {
    let status = status::invalid(old, generation, refusal, Timestamp::now());
    write_status(context, state, old, &status).await?;
    announce_refusal(context, state, old, refusal).await;
    warn!(desired_state = %state.name_any(), namespace = ?state.namespace(), reason = refusal.reason, "sources refused; nothing will be changed");
    Ok(())
}

/// An Event and a count when sources begin to be refused (or are refused
/// for a new reason); nothing while the same refusal lasts.
pub(super) async fn announce_refusal(
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
    context.metrics.source_refusals.get_or_create(&crate::metrics::RefusalLabels { reason: refusal.reason }).inc();
    publish(context, state, EventType::Warning, refusal.reason, refusal.message.clone()).await;
}

pub(super) async fn write_status(
    context: &Context,
    state: &DesiredState,
    old: &DesiredStateStatus,
    new: &DesiredStateStatus,
) -> Result<(), Error> {
    let namespace = state.namespace().unwrap_or_default();
    if old != new {
        crate::operator::apply_status(&context.client, state, new).await.map_err(|source| Error::WriteStatus {
            desired_state: format!("{namespace}/{}", state.name_any()),
            source,
        })?;
    }
    context.settings.notices.drift_status(&namespace, &state.name_any(), Some(new));
    Ok(())
}

/// Pending requests in this namespace show the drift they would approve into.
pub(super) async fn show_pending_drift(context: &Context, state: &DesiredState, fresh: &DesiredStateStatus) {
    let namespace = state.namespace().unwrap_or_default();
    let pending = context.gate.pending(&namespace);
    if pending.is_empty() {
        return;
    }
    let me = state.name_any();
    let states = context.desired_states.state();
    let statuses = states
        .iter()
        .filter(|ds| ds.namespace().as_deref() == Some(namespace.as_str()) && ds.name_any() != me)
        .filter_map(|ds| ds.status.as_ref())
        .chain(std::iter::once(fresh));
    let drift = notify::pending_drift(statuses);
    for request in pending {
        if let Err(error) = gate::show_pending_drift(&context.client, &request, &drift).await {
            warn!(%error, access_request = %request.name_any(), "showing drift on a pending request failed");
        }
    }
}

/// Per DesiredState: drift counts by class, when its oldest unauthorized
/// drift began, and how many of its objects are contested.
pub(super) type DriftTally =
    std::collections::HashMap<ObjectRef<DesiredState>, (DriftCounts, Option<Timestamp>, usize)>;

/// Sets the cluster-wide gauges: drifted objects by class, the oldest
/// unauthorized drift (its age is computed when metrics are scraped) and
/// contested objects.
pub(super) fn record_drifted(
    context: &Context,
    me: &ObjectRef<DesiredState>,
    status: &DesiredStateStatus,
    contested: usize,
) {
    let oldest = status.drifted_objects.iter().filter(|d| d.class == DriftClass::Unauthorized).map(|d| d.since.0).min();
    let mut all = context.drifted.lock().unwrap_or_else(|p| p.into_inner());
    all.insert(me.clone(), (status.drift_counts.clone().unwrap_or_default(), oldest, contested));
    publish_drift_gauges(&context.metrics, &all);
}

pub(super) fn publish_drift_gauges(metrics: &Metrics, all: &DriftTally) {
    use crate::metrics::{Class, ClassLabels};
    let sum = |f: fn(&DriftCounts) -> i64| all.values().map(|(c, _, _)| f(c)).sum::<i64>();
    for (class, total) in [
        (Class::Unauthorized, sum(|c| c.unauthorized)),
        (Class::Authorized, sum(|c| c.authorized)),
        (Class::AuthorizedByScope, sum(|c| c.authorized_by_scope)),
        (Class::WindowEnded, sum(|c| c.window_ended)),
        (Class::Undeclared, sum(|c| c.undeclared)),
    ] {
        metrics.drifted_objects.get_or_create(&ClassLabels { class }).set(total);
    }
    metrics.contested_objects.set(all.values().map(|(_, _, contested)| *contested as i64).sum());
    metrics.set_oldest_unauthorized_drift(all.values().filter_map(|(_, oldest, _)| *oldest).min());
}

/// An Event on an AccessRequest (the requester and approvers watch it).
async fn publish_on_request(context: &Context, namespace: &str, request: &str, reason: &str, note: String) {
    let Some(request) = context.gate.requests.get(&ObjectRef::new(request).within(namespace)) else { return };
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(crate::operator::event_note(note)),
        action: "Codify".into(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &request.object_ref(&())).await {
        warn!(%error, reason, "publishing an event failed");
    }
}

pub(super) async fn publish(context: &Context, state: &DesiredState, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(crate::operator::event_note(note)),
        action: "Diff".into(),
        secondary: None,
    };
    if let Err(error) = context.recorder.publish(&event, &state.object_ref(&())).await {
        warn!(%error, reason, "publishing an event failed");
    }
}
