//! The access controller: AccessRequest + AccessReviews + AccessPolicy ->
//! the state machine in `access` -> the RoleBinding and the status.
//!
//! One reconcile is: fetch (from watch caches) -> decide (pure) -> apply
//! (binding, status) -> publish (events, metrics) -> requeue at the next
//! instant the decision depends on, so expiry runs on a timer, not a resync.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::crds::FIELD_MANAGER;
use super::ready::Ready;
use super::watch::{self, Change, Reflected};
use crate::access::grant::{
    MANAGED_BY, REQUEST_ANNOTATION, binding_name, desired_binding, machine_request, machine_reviews, next_status,
    orphaned, same_binding,
};
use crate::access::{self, Binding, Decision, policy};
use crate::api::{AccessPhase, AccessPolicy, AccessRequest, AccessRequestStatus, AccessReview};
use crate::metrics::{Metrics, Phase, PhaseLabels, ReviewLabels, ReviewOutcome};
use crate::notify;

const CONTROLLER: &str = "access";
/// How long a reconcile waits for the caches it decides from.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// Ready once the caches a decision reads have all listed.
fn decidable(policies: &Store<AccessPolicy>, namespaces: Ready, reviews: &Store<AccessReview>) -> Ready {
    Ready::all_of(vec![Ready::of(policies), namespaces, Ready::of(reviews)])
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("AccessRequest {0} has no namespace")]
    NoNamespace(String),
    #[error("applying RoleBinding {namespace}/{name}: {source}")]
    ApplyBinding { namespace: String, name: String, source: kube::Error },
    #[error("deleting RoleBinding {namespace}/{name}: {source}")]
    DeleteBinding { namespace: String, name: String, source: kube::Error },
    #[error("writing the status of AccessRequest {namespace}/{name}: {source}")]
    WriteStatus { namespace: String, name: String, source: kube::Error },
}

impl Error {
    /// Bounded label for metrics and Event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::NoNamespace(_) => "invalid",
            Error::ApplyBinding { .. } => "apply_binding",
            Error::DeleteBinding { .. } => "delete_binding",
            Error::WriteStatus { .. } => "write_status",
        }
    }
}

struct Context {
    client: Client,
    recorder: Recorder,
    requests: Store<AccessRequest>,
    reviews: Store<AccessReview>,
    policies: Store<AccessPolicy>,
    namespaces: Store<Namespace>,
    bindings: Store<RoleBinding>,
    /// Whether the policies, namespaces and reviews have listed (one waiter
    /// for every reconcile: see `operator::ready`).
    decidable: Ready,
    bindings_listed: Ready,
    requests_listed: Ready,
    metrics: Arc<Metrics>,
    notices: crate::operator::notify::Outbox,
}

/// Settings of the access controller.
#[derive(Clone)]
pub struct Settings {
    /// How often orphaned RoleBindings are looked for.
    pub sweep_interval: Duration,
    /// Identifies this replica in Events.
    pub instance: Option<String>,
    /// Where the request's notifications go.
    pub notices: crate::operator::notify::Outbox,
}

/// The reviews, policies and namespaces requests are decided from: one
/// watch of reviews and policies per leadership term (the namespaces are
/// the process's cache), read by this controller and by the drift gate
/// (`gate::Approvals::of`), so that both decide from the same state. The
/// watches run while [`run`] polls them.
pub struct DecisionCaches {
    pub reviews: Store<AccessReview>,
    pub policies: Store<AccessPolicy>,
    pub namespaces: Store<Namespace>,
    /// All three have listed. One waiter per store, shared by every reader:
    /// kube wakes only one of several waiters on a store (see `operator::ready`).
    pub listed: Ready,
    streams: (Reflected<AccessReview>, Reflected<AccessPolicy>),
}

impl DecisionCaches {
    pub fn watch(client: &Client, namespaces: &watch::Shared<Namespace>) -> Self {
        let (reviews, review_events) = watch::reflect(Api::all(client.clone()), watcher::Config::default());
        let (policies, policy_events) = watch::reflect(Api::all(client.clone()), watcher::Config::default());
        let listed = decidable(&policies, namespaces.listed.clone(), &reviews);
        let namespaces = namespaces.store.clone();
        Self { reviews, policies, namespaces, listed, streams: (review_events, policy_events) }
    }
}

/// Runs the controller and the sweep until `shutdown` is cancelled.
pub async fn run(
    client: Client,
    metrics: Arc<Metrics>,
    settings: Settings,
    (requests, caches): (watch::Shared<AccessRequest>, DecisionCaches),
    shutdown: CancellationToken,
) {
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));

    let DecisionCaches { reviews, policies, namespaces, listed: decidable, streams } = caches;
    let (review_events, policy_events) = streams;
    let review_events =
        review_events.touched_objects().inspect_err(|error| warn!(%error, "AccessReview watch failed; retrying"));
    let policy_events =
        policy_events.touched_objects().inspect_err(|error| warn!(%error, "AccessPolicy watch failed; retrying"));
    let (bindings, binding_events) = watch::reflect(Api::<RoleBinding>::all(client.clone()), managed);
    let binding_events =
        binding_events.touched_objects().inspect_err(|error| warn!(%error, "RoleBinding watch failed; retrying"));

    // The process's one cache of requests; the sweep learns it has listed
    // from the watch itself, as waiting on the store would take the one
    // wakeup kube gives from the controller's runner.
    let request_events = requests.changes().filter_map(|change| {
        futures::future::ready(match change {
            Change::Applied(request) => Some(request),
            Change::Deleted(_) => None,
        })
    });
    let watch::Shared { store: requests, listed: requests_listed, .. } = requests;
    let controller = Controller::for_shared_stream(request_events, requests.clone());
    let reporter = Reporter { controller: "driftwarden".into(), instance: settings.instance.clone() };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        requests: requests.clone(),
        reviews: reviews.clone(),
        policies: policies.clone(),
        namespaces: namespaces.clone(),
        bindings: bindings.clone(),
        decidable,
        bindings_listed: Ready::of(&bindings),
        requests_listed,
        metrics: metrics.clone(),
        notices: settings.notices.clone(),
    });

    let controller = controller
        .owns_stream(binding_events)
        .watches_stream(review_events, |review: AccessReview| {
            let namespace = review.namespace()?;
            Some(ObjectRef::<AccessRequest>::new(&review.spec.access_request).within(&namespace))
        })
        .reconcile_all_on(policy_events.map(|_| ()))
        .graceful_shutdown_on(shutdown.clone().cancelled_owned())
        .run(reconcile, error_policy, context.clone())
        .for_each(|_| async {});

    let sweeper = tokio::spawn(sweep_forever(context.clone(), settings.sweep_interval, shutdown.clone()));
    let gauges = tokio::spawn(count_forever(requests, metrics, shutdown.clone()));
    tokio::select! {
        () = controller => {},
        () = shutdown.cancelled() => {},
    }
    for task in [sweeper, gauges] {
        task.abort();
    }
}

fn error_policy(request: Arc<AccessRequest>, error: &Error, context: Arc<Context>) -> Action {
    warn!(request = %request.name_any(), namespace = ?request.namespace(), %error, "reconcile failed");
    let labels = crate::metrics::ErrorLabels { controller: CONTROLLER, category: error.category() };
    context.metrics.reconcile_errors.get_or_create(&labels).inc();
    match error {
        Error::NoNamespace(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(2)),
    }
}

async fn reconcile(request: Arc<AccessRequest>, context: Arc<Context>) -> Result<Action, Error> {
    let _timer = context.metrics.reconcile_timer(CONTROLLER);
    let namespace = request.namespace().ok_or_else(|| Error::NoNamespace(request.name_any()))?;
    let name = request.name_any();
    let now = Timestamp::now();

    // Fetch, from the watch caches. Deciding before the policies, namespaces
    // and reviews have listed would act on a partial world (no reviews: a
    // grant looks unapproved), so wait for them, but not forever. The
    // bindings cache only saves writes; until it has listed, the API server
    // is asked directly.
    if tokio::time::timeout(CACHE_WAIT, context.decidable.wait()).await.is_err() {
        warn!(request = %request.name_any(), "caches have not listed yet; deciding later");
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    let Some(namespace_object) = context.namespaces.get(&ObjectRef::new(&namespace)) else {
        // The namespace cache lags its creation; decide once it has caught up.
        return Ok(Action::requeue(Duration::from_millis(500)));
    };
    let labels = namespace_object.metadata.labels.clone().unwrap_or_default();
    let policies: Vec<AccessPolicy> = context.policies.state().iter().map(|p| (**p).clone()).collect();
    let reviews: Vec<Arc<AccessReview>> = context
        .reviews
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(&namespace) && r.spec.access_request == name)
        .collect();

    // Decide.
    let judge = policy::select(&namespace, &labels, &request.spec.role, &policies);
    let decision = access::evaluate(&machine_request(&request), &machine_reviews(&reviews), judge.as_ref(), now);

    // Apply: the binding first, then the status, so that a request that
    // says Active really grants access, and one that says Expired no longer
    // does. (The sweep leaves young bindings alone, so a binding whose
    // status is a moment behind is not taken for an orphan.)
    let binding_name = binding_name(&name);
    let old_status = request.status.clone().unwrap_or_default();
    let status = next_status(&old_status, &decision, &binding_name, now);
    match decision.binding {
        Binding::Present => match ensure_binding(&context, &request, &binding_name).await {
            Err(Error::ApplyBinding { source: kube::Error::Api(refusal), .. }) if refusal.code == 403 => {
                return refused_grant(&context, &request, &old_status, status, &refusal.message, now).await;
            }
            result => result?,
        },
        Binding::Absent => remove_binding(&context, &namespace, &binding_name, &decision, now).await?,
    }
    write_status(&context, &request, &old_status, &status).await?;

    publish(&context, &request, &old_status, &decision).await;
    let warn_at = warn_of_expiry(&context, &request, &status, &decision, now);
    let wake_at = [decision.wake_at, warn_at].into_iter().flatten().min();
    Ok(match wake_at {
        Some(at) => Action::requeue(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)),
        None => Action::await_change(),
    })
}

/// An active window that ends soon is announced once; one that ends later
/// returns when to look again.
fn warn_of_expiry(
    context: &Context,
    request: &AccessRequest,
    status: &AccessRequestStatus,
    decision: &Decision,
    now: Timestamp,
) -> Option<Timestamp> {
    let (AccessPhase::Active, Some(window)) = (decision.phase, decision.window) else { return None };
    let warn_at = window.expires_at - notify::expiry_warning(window.expires_at.duration_since(window.starts_at));
    if now < warn_at {
        return Some(warn_at);
    }
    let current = AccessRequest { status: Some(status.clone()), ..request.clone() };
    if let Some(notice) = notify::expiring_notice(&current, now) {
        let key = format!("{}/{}@{}", request.namespace().unwrap_or_default(), request.name_any(), window.expires_at);
        context.notices.expiring(key, notice);
    }
    None
}

/// How long before a grant the API server refused is tried again (its RBAC
/// may have been widened meanwhile).
const REFUSED_RETRY: Duration = Duration::from_secs(60);

/// The API server refused to bind the role (the operator does not hold
/// `bind` on it, or lacks its permissions): say so on the request, in a
/// Warning Event and a short log line, and try again later, not in a loop.
async fn refused_grant(
    context: &Context,
    request: &AccessRequest,
    old: &AccessRequestStatus,
    mut status: AccessRequestStatus,
    refusal: &str,
    now: Timestamp,
) -> Result<Action, Error> {
    let role = format!("{:?} {}", request.spec.role.kind, request.spec.role.name);
    // The API server lists every permission it would not grant: keep the gist.
    let gist: String = refusal.chars().take(400).collect();
    let message = format!(
        "approved, but the API server refused to bind {role} (forbidden): the operator may only grant roles it \
         holds `bind` on (the chart's access.grantableRoles); retrying every {}s. {gist}",
        REFUSED_RETRY.as_secs()
    );
    // Nothing was granted: no binding, no window yet (it is computed again
    // from the approval when the bind succeeds).
    status.phase = Some(AccessPhase::Approved);
    status.role_binding = None;
    status.granted_at = None;
    status.expires_at = None;
    status.message = Some(message.clone());
    status.conditions = vec![crate::conditions::condition(
        &old.conditions,
        "Granted",
        false,
        "BindForbidden",
        message.clone(),
        None,
        now,
    )];
    write_status(context, request, old, &status).await?;
    context
        .metrics
        .reconcile_errors
        .get_or_create(&crate::metrics::ErrorLabels { controller: CONTROLLER, category: "bind_forbidden" })
        .inc();
    warn!(request = %request.name_any(), namespace = ?request.namespace(), requester = ?request.spec.requester,
          %role, refusal = %gist, "the API server refused to bind the role; the grant waits");
    if old.message.as_deref() != Some(message.as_str()) {
        let event = Event {
            type_: EventType::Warning,
            reason: "GrantRefused".into(),
            note: Some(super::event_note(message)),
            action: "Grant".into(),
            secondary: None,
        };
        if let Err(error) = context.recorder.publish(&event, &request.object_ref(&())).await {
            warn!(%error, "publishing an event failed");
        }
    }
    Ok(Action::requeue(REFUSED_RETRY))
}

async fn write_status(
    context: &Context,
    request: &AccessRequest,
    old: &AccessRequestStatus,
    new: &AccessRequestStatus,
) -> Result<(), Error> {
    if old.access_fields() == *new {
        return Ok(());
    }
    super::apply_status(&context.client, request, new).await.map_err(|source| Error::WriteStatus {
        namespace: request.namespace().unwrap_or_default(),
        name: request.name_any(),
        source,
    })
}

async fn ensure_binding(context: &Context, request: &AccessRequest, binding_name: &str) -> Result<(), Error> {
    let namespace = request.namespace().unwrap_or_default();
    let desired = desired_binding(request, binding_name);
    let cached = context.bindings.get(&ObjectRef::new(binding_name).within(&namespace));
    if context.bindings_listed.is_ready() && cached.is_some_and(|live| same_binding(&live, &desired)) {
        return Ok(());
    }
    let api: Api<RoleBinding> = Api::namespaced(context.client.clone(), &namespace);
    api.patch(binding_name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&desired)).await.map_err(
        |source| Error::ApplyBinding { namespace: namespace.clone(), name: binding_name.to_owned(), source },
    )?;
    info!(request = %request.name_any(), %namespace, requester = ?request.spec.requester, role = %request.spec.role.name,
          binding = binding_name, "access granted");
    Ok(())
}

async fn remove_binding(
    context: &Context,
    namespace: &str,
    binding_name: &str,
    decision: &Decision,
    now: Timestamp,
) -> Result<(), Error> {
    // Until the cache has listed, ask the API server instead of trusting it.
    if context.bindings_listed.is_ready()
        && context.bindings.get(&ObjectRef::new(binding_name).within(namespace)).is_none()
    {
        return Ok(());
    }
    let api: Api<RoleBinding> = Api::namespaced(context.client.clone(), namespace);
    match api.delete(binding_name, &DeleteParams::default()).await {
        Ok(_) => {}
        // Already gone: nothing was removed now.
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(source) => {
            return Err(Error::DeleteBinding { namespace: namespace.into(), name: binding_name.into(), source });
        }
    }
    if let (AccessPhase::Expired, Some(window)) = (decision.phase, decision.window) {
        let lag = now.duration_since(window.expires_at).as_secs_f64().max(0.0);
        context.metrics.grant_expiry_lag.observe(lag);
        info!(%namespace, binding = binding_name, lag_seconds = lag, "access expired; RoleBinding removed");
    } else {
        info!(%namespace, binding = binding_name, phase = ?decision.phase, "RoleBinding removed");
    }
    Ok(())
}

/// Events and counters for what changed since the last status: a phase
/// transition, new approvals, newly ignored reviews. Nothing on a no-op.
async fn publish(context: &Context, request: &AccessRequest, old: &AccessRequestStatus, decision: &Decision) {
    let said = access::announce::announce(request, old, decision, Timestamp::now());
    let reviews = |outcome| context.metrics.access_reviews.get_or_create(&ReviewLabels { outcome });
    reviews(ReviewOutcome::Approved).inc_by(said.approved);
    reviews(ReviewOutcome::Ignored).inc_by(said.ignored);
    if said.denied_by_reviewer {
        reviews(ReviewOutcome::Denied).inc();
    }
    if old.phase != Some(decision.phase) {
        let approvers: Vec<&str> = decision.approvals.iter().map(|a| a.reviewer.as_str()).collect();
        info!(request = %request.name_any(), namespace = ?request.namespace(), requester = ?request.spec.requester,
              approvers = ?approvers, role = %format!("{:?} {}", request.spec.role.kind, request.spec.role.name),
              expires_at = ?decision.window.map(|w| w.expires_at), phase = ?decision.phase, message = %decision.message,
              "access request {:?}", decision.phase);
    }
    if let Some(notice) = said.notice {
        context.notices.notice(notice);
    }
    let reference = request.object_ref(&());
    for announcement in said.events {
        let secondary = announcement.review.map(|name| k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(AccessReview::api_version(&()).into_owned()),
            kind: Some(AccessReview::kind(&()).into_owned()),
            name: Some(name),
            namespace: request.namespace(),
            ..Default::default()
        });
        let event = Event {
            type_: if announcement.warning { EventType::Warning } else { EventType::Normal },
            reason: announcement.reason.into(),
            note: Some(super::event_note(announcement.note)),
            action: "Reconcile".into(),
            secondary,
        };
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(%error, reason = announcement.reason, "publishing an event failed");
        }
    }
}

/// Defense in depth: delete every RoleBinding labelled as ours that no
/// Active request in the cache accounts for (its request was deleted while
/// the operator was down, its status was edited, a bug).
async fn sweep_forever(context: Arc<Context>, interval: Duration, shutdown: CancellationToken) {
    context.bindings_listed.wait().await;
    context.requests_listed.wait().await;
    let started = Timestamp::now();
    loop {
        sweep(&context, Timestamp::now(), started).await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            () = shutdown.cancelled() => return,
        }
    }
}

async fn sweep(context: &Context, now: Timestamp, started: Timestamp) {
    for binding in context.bindings.state() {
        let (Some(namespace), Some(name)) = (binding.namespace(), binding.metadata.name.clone()) else { continue };
        let request_name = binding.annotations().get(REQUEST_ANNOTATION).cloned().unwrap_or_default();
        let request = context.requests.get(&ObjectRef::new(&request_name).within(&namespace));
        if !orphaned(&binding, request.as_deref(), now, started) {
            continue;
        }
        let api: Api<RoleBinding> = Api::namespaced(context.client.clone(), &namespace);
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            // Already gone (the controller removed it): nothing was swept.
            Err(kube::Error::Api(status)) if status.code == 404 => continue,
            Err(error) => {
                warn!(%namespace, binding = %name, %error, "sweeping an orphaned RoleBinding failed");
                continue;
            }
        }
        warn!(%namespace, binding = %name, request = %request_name, "swept a RoleBinding that no active AccessRequest accounts for");
        let event = Event {
            type_: EventType::Warning,
            reason: "OrphanedGrantRemoved".into(),
            note: Some(format!("RoleBinding {name} had no active AccessRequest behind it and was deleted")),
            action: "Sweep".into(),
            secondary: None,
        };
        let _ = context.recorder.publish(&event, &binding.object_ref(&())).await;
    }
}

/// Keeps the by-phase gauges current from the controller's cache.
async fn count_forever(requests: Store<AccessRequest>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    loop {
        let mut counts: HashMap<AccessPhase, i64> = HashMap::new();
        for request in requests.state() {
            if let Some(phase) = request.status.as_ref().and_then(|s| s.phase) {
                *counts.entry(phase).or_default() += 1;
            }
        }
        for phase in [
            AccessPhase::Pending,
            AccessPhase::Approved,
            AccessPhase::Denied,
            AccessPhase::Active,
            AccessPhase::Expired,
            AccessPhase::Revoked,
        ] {
            let count = counts.get(&phase).copied().unwrap_or(0);
            metrics.access_requests.get_or_create(&PhaseLabels { phase: Phase::from(phase) }).set(count);
        }
        metrics.active_grants.set(counts.get(&AccessPhase::Active).copied().unwrap_or(0));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {},
            () = shutdown.cancelled() => return,
        }
    }
}

/// The controller's I/O order against a mocked API server (`mock_api`):
/// paths a control plane reaches only with a misconfigured RBAC, or whose
/// order a cluster test cannot see.
#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::SignedDuration;
    use kube::runtime::reflector::store::Writer;
    use serde_json::{Value, json};

    use super::*;
    use crate::operator::mock_api;

    /// A store that has listed `objects`.
    fn listed<K>(objects: Vec<Value>) -> Store<K>
    where
        K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + 'static,
    {
        let mut writer = Writer::<K>::default();
        writer.apply_watcher_event(&watcher::Event::Init);
        for object in objects {
            writer.apply_watcher_event(&watcher::Event::InitApply(serde_json::from_value(object).unwrap()));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        // The reader outlives the writer's end of the test: leak the writer.
        let reader = writer.as_reader();
        std::mem::forget(writer);
        reader
    }

    /// Alice's request for `edit` in `shop`, approved by Carol of `sre`.
    fn approved_request() -> (Arc<AccessRequest>, Arc<Context>, mock_api::MockApi) {
        let created = (Timestamp::now() - SignedDuration::from_secs(60)).to_string();
        let request: AccessRequest = serde_json::from_value(json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "alice-fix", "namespace": "shop", "uid": "req-1", "creationTimestamp": created},
            "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "30m",
                     "reason": "INC-1234: the frontend returns 502s, roll back the image", "requester": "alice"},
        }))
        .unwrap();
        let (client, api) = mock_api::client();
        let reviews = listed::<AccessReview>(vec![json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview",
            "metadata": {"name": "carol-ok", "namespace": "shop", "creationTimestamp": created},
            "spec": {"accessRequest": "alice-fix", "accessRequestUID": "req-1", "decision": "Approve",
                     "reason": "checked INC-1234, the rollback is the fix", "reviewer": "carol", "reviewerGroups": ["sre"]},
        })]);
        let policies = listed::<AccessPolicy>(vec![json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessPolicy", "metadata": {"name": "oncall"},
            "spec": {"namespaceSelector": {"matchLabels": {"team": "checkout"}},
                     "roles": [{"kind": "ClusterRole", "name": "edit"}], "maxDuration": "4h",
                     "approvers": {"groups": ["sre"]}, "requiredApprovals": 1},
        })]);
        let namespaces = listed::<Namespace>(vec![json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop", "labels": {"team": "checkout"}},
        })]);
        let bindings = listed::<RoleBinding>(Vec::new());
        let requests = listed::<AccessRequest>(vec![serde_json::to_value(&request).unwrap()]);
        let metrics = Arc::new(Metrics::default());
        let context = Arc::new(Context {
            recorder: Recorder::new(client.clone(), Reporter { controller: "driftwarden".into(), instance: None }),
            client,
            decidable: decidable(&policies, Ready::of(&namespaces), &reviews),
            bindings_listed: Ready::of(&bindings),
            requests_listed: Ready::of(&requests),
            requests,
            reviews,
            policies,
            namespaces,
            bindings,
            notices: crate::operator::notify::outbox(metrics.clone()).0,
            metrics,
        });
        (Arc::new(request), context, api)
    }

    /// The API server's answer to a status apply: the request, with it.
    fn with_status(request: &AccessRequest) -> impl FnOnce(&mock_api::Seen) -> Value {
        let mut object = serde_json::to_value(request).unwrap();
        move |seen| {
            object["status"] = seen.body["status"].clone();
            object
        }
    }

    #[tokio::test]
    async fn an_approved_grant_binds_the_role_before_its_status_says_active() {
        let (request, context, mut api) = approved_request();
        let reconciled = tokio::spawn(reconcile(request.clone(), context));

        let bind = api.answer_with(200, |seen| seen.body.clone()).await;
        assert_eq!(
            (bind.method.as_str(), bind.path.as_str()),
            ("PATCH", "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/driftwarden-alice-fix")
        );
        assert_eq!(bind.body["subjects"][0]["name"], "alice");
        assert_eq!(bind.body["roleRef"]["name"], "edit");

        // Only once the binding exists does the request say it is granted.
        let status = api.answer_with(200, with_status(&request)).await;
        assert_eq!(status.path, "/apis/driftwarden.io/v1alpha1/namespaces/shop/accessrequests/alice-fix/status");
        assert_eq!(status.body["status"]["phase"], "Active");
        assert_eq!(status.body["status"]["roleBinding"], "driftwarden-alice-fix");
        assert!(status.body["status"]["expiresAt"].is_string());

        // Then the Event that tells Alice.
        let event = api.answer_with(201, |seen| seen.body.clone()).await;
        assert!(event.path.ends_with("/namespaces/shop/events"), "{}", event.path);
        let action = reconciled.await.unwrap().unwrap();
        assert!(action != Action::await_change(), "an active window is woken for its end");
    }

    #[tokio::test]
    async fn a_grant_the_api_server_forbids_binds_nothing_says_why_and_retries_later() {
        let (request, context, mut api) = approved_request();
        let reconciled = tokio::spawn(reconcile(request.clone(), context.clone()));

        let bind = api
            .answer(
                403,
                mock_api::status(
                    403,
                    "Forbidden",
                    "user \"system:serviceaccount:driftwarden-system:driftwarden\" cannot bind clusterrole edit",
                ),
            )
            .await;
        assert_eq!(bind.method.as_str(), "PATCH");

        // The request stays Approved, grants nothing, and says why.
        let status = api.answer_with(200, with_status(&request)).await;
        assert!(status.path.ends_with("/accessrequests/alice-fix/status"), "{}", status.path);
        let written = &status.body["status"];
        assert_eq!(written["phase"], "Approved");
        assert!(written.get("roleBinding").is_none_or(Value::is_null), "{written}");
        assert!(written.get("expiresAt").is_none_or(Value::is_null), "{written}");
        assert!(written["message"].as_str().unwrap().contains("refused to bind ClusterRole edit"), "{written}");
        assert_eq!(written["conditions"][0]["reason"], "BindForbidden");

        let event = api.answer_with(201, |seen| seen.body.clone()).await;
        assert_eq!(event.body["reason"], "GrantRefused");
        assert_eq!(event.body["type"], "Warning");
        // Not in a loop: once a minute.
        assert_eq!(reconciled.await.unwrap().unwrap(), Action::requeue(REFUSED_RETRY));
        assert!(api.is_quiet().await);
        let refused = context
            .metrics
            .reconcile_errors
            .get_or_create(&crate::metrics::ErrorLabels { controller: CONTROLLER, category: "bind_forbidden" })
            .get();
        assert_eq!(refused, 1);
    }
}
