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
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::crds::FIELD_MANAGER;
use super::metrics::{Metrics, Phase, PhaseLabels, ReviewLabels, ReviewOutcome};
use super::ready::Ready;
use crate::access::{self, Binding, Decision, policy};
use crate::api::{
    AccessPhase, AccessPolicy, AccessRequest, AccessRequestStatus, AccessReview, Approval, IgnoredReview, RoleKind,
};
use crate::notify;

const CONTROLLER: &str = "access";
/// Label on every RoleBinding the operator creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "driftwarden");
/// Label with the owning request's uid (names can be too long for a label).
pub const REQUEST_UID_LABEL: &str = "driftwarden.io/access-request-uid";
const REQUEST_ANNOTATION: &str = "driftwarden.io/access-request";
/// A binding younger than this is never swept: the caches may not have
/// caught up with the request that made it.
const SWEEP_GRACE: Duration = Duration::from_secs(30);
/// How long a reconcile waits for the caches it decides from.
const CACHE_WAIT: Duration = Duration::from_secs(10);

/// Ready once the caches a decision reads have all listed.
fn decidable(policies: &Store<AccessPolicy>, namespaces: &Store<Namespace>, reviews: &Store<AccessReview>) -> Ready {
    Ready::all_of(vec![Ready::of(policies), Ready::of(namespaces), Ready::of(reviews)])
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

/// Runs the controller and the sweep until `shutdown` is cancelled.
pub async fn run(client: Client, metrics: Arc<Metrics>, settings: Settings, shutdown: CancellationToken) {
    let config = watcher::Config::default();
    let managed = watcher::Config::default().labels(&format!("{}={}", MANAGED_BY.0, MANAGED_BY.1));

    let (reviews, review_writer) = reflector::store();
    let review_events = watcher(Api::<AccessReview>::all(client.clone()), config.clone())
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(review_writer)
        .touched_objects()
        .inspect_err(|error| warn!(%error, "AccessReview watch failed; retrying"));
    let (policies, policy_writer) = reflector::store();
    let policy_events = watcher(Api::<AccessPolicy>::all(client.clone()), config.clone())
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(policy_writer)
        .touched_objects()
        .inspect_err(|error| warn!(%error, "AccessPolicy watch failed; retrying"));
    let (namespaces, namespace_writer) = reflector::store();
    let namespace_events = watcher(Api::<Namespace>::all(client.clone()), config.clone())
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(namespace_writer)
        .touched_objects()
        .inspect_err(|error| warn!(%error, "Namespace watch failed; retrying"));
    let (bindings, binding_writer) = reflector::store();
    let binding_events = watcher(Api::<RoleBinding>::all(client.clone()), managed)
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(binding_writer)
        .touched_objects()
        .inspect_err(|error| warn!(%error, "RoleBinding watch failed; retrying"));

    // The requests' cache is ours, not the Controller's, so that the sweep
    // learns it has listed from the watch itself: waiting on the store
    // would take the one wakeup kube gives from the controller's runner.
    let (requests, request_writer) = reflector::store();
    let (requests_listed, listed_requests) = tokio::sync::watch::channel(false);
    let request_events = watcher(Api::<AccessRequest>::all(client.clone()), config)
        .backoff(crate::operator::backoff::WatchBackoff::default())
        .reflect(request_writer)
        // After the reflector has applied it: the store holds the whole list.
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                requests_listed.send_replace(true);
            }
        })
        .applied_objects();
    let controller = Controller::for_stream(request_events, requests.clone());
    let reporter = Reporter { controller: "driftwarden".into(), instance: settings.instance.clone() };
    let context = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), reporter),
        requests: requests.clone(),
        reviews: reviews.clone(),
        policies: policies.clone(),
        namespaces: namespaces.clone(),
        bindings: bindings.clone(),
        decidable: decidable(&policies, &namespaces, &reviews),
        bindings_listed: Ready::of(&bindings),
        requests_listed: Ready::from(listed_requests),
        metrics: metrics.clone(),
        notices: settings.notices.clone(),
    });

    // Namespaces only feed the cache; their changes matter at the next reconcile.
    let namespace_cache = tokio::spawn(namespace_events.for_each(|_| async {}));
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
    for task in [namespace_cache, sweeper, gauges] {
        task.abort();
    }
}

fn error_policy(request: Arc<AccessRequest>, error: &Error, context: Arc<Context>) -> Action {
    warn!(request = %request.name_any(), namespace = ?request.namespace(), %error, "reconcile failed");
    let labels = super::metrics::ErrorLabels { controller: CONTROLLER, category: error.category() };
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
    status.conditions = vec![super::conditions::condition(
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
        .get_or_create(&super::metrics::ErrorLabels { controller: CONTROLLER, category: "bind_forbidden" })
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

fn to_timestamp(time: &Time) -> Timestamp {
    time.0
}

/// What the machine reads of a request: its spec and what the API server
/// recorded. Never its status, which is output only.
pub(crate) fn machine_request(request: &AccessRequest) -> access::Request<'_> {
    access::Request {
        uid: request.metadata.uid.as_deref(),
        requester: request.spec.requester.as_deref(),
        duration: request.spec.duration.into(),
        reason: &request.spec.reason,
        start_at: request.spec.start_at.as_ref().map(to_timestamp),
        revoked: request.spec.revoked,
        deleting: request.metadata.deletion_timestamp.is_some(),
        created_at: request.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or_else(Timestamp::now),
    }
}

pub(crate) fn machine_reviews(reviews: &[Arc<AccessReview>]) -> Vec<access::Review<'_>> {
    reviews
        .iter()
        .map(|review| access::Review {
            name: review.metadata.name.as_deref().unwrap_or_default(),
            reviewer: review.spec.reviewer.as_deref(),
            groups: &review.spec.reviewer_groups,
            decision: review.spec.decision,
            reason: &review.spec.reason,
            created_at: review.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or(Timestamp::MAX),
            request_uid: review.spec.access_request_uid.as_deref(),
        })
        .collect()
}

/// `driftwarden-<request>`, shortened with a hash when the request's name
/// is so long that the result would not be a valid name.
pub fn binding_name(request: &str) -> String {
    const PREFIX: &str = "driftwarden-";
    if PREFIX.len() + request.len() <= 253 {
        return format!("{PREFIX}{request}");
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = request.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100000001b3));
    format!("{PREFIX}{}-{hash:016x}", &request[..253 - PREFIX.len() - 17])
}

fn next_status(
    old: &AccessRequestStatus,
    decision: &Decision,
    binding_name: &str,
    now: Timestamp,
) -> AccessRequestStatus {
    let condition = super::conditions::condition(
        &old.conditions,
        "Granted",
        decision.phase == AccessPhase::Active,
        &format!("{:?}", decision.phase),
        decision.message.clone(),
        None,
        now,
    );
    AccessRequestStatus {
        phase: Some(decision.phase),
        message: Some(decision.message.clone()),
        policy: decision.policy.clone(),
        approvals: decision
            .approvals
            .iter()
            .map(|a| Approval {
                reviewer: a.reviewer.clone(),
                review: a.review.clone(),
                reason: a.reason.clone(),
                at: Time(a.at),
            })
            .collect(),
        ignored_reviews: decision
            .ignored
            .iter()
            .map(|i| IgnoredReview { review: i.review.clone(), reviewer: i.reviewer.clone(), reason: i.reason.clone() })
            .collect(),
        granted_at: decision.window.map(|w| Time(w.starts_at)),
        expires_at: decision.window.map(|w| Time(w.expires_at)),
        role_binding: matches!(decision.phase, AccessPhase::Active | AccessPhase::Approved)
            .then(|| binding_name.to_owned()),
        conditions: vec![condition],
        // The activity log and the gate's fields are written by others,
        // under their own field manager.
        ..AccessRequestStatus::default()
    }
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

fn desired_binding(request: &AccessRequest, binding_name: &str) -> RoleBinding {
    let requester = request.spec.requester.clone().unwrap_or_default();
    let subject = match requester.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')) {
        Some((namespace, name)) => serde_json::json!({"kind": "ServiceAccount", "name": name, "namespace": namespace}),
        None => serde_json::json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": requester}),
    };
    let kind = match request.spec.role.kind {
        RoleKind::Role => "Role",
        RoleKind::ClusterRole => "ClusterRole",
    };
    let owner = OwnerReference {
        api_version: AccessRequest::api_version(&()).into_owned(),
        kind: AccessRequest::kind(&()).into_owned(),
        name: request.name_any(),
        uid: request.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: None,
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": binding_name,
            "namespace": request.namespace(),
            "labels": {MANAGED_BY.0: MANAGED_BY.1, REQUEST_UID_LABEL: request.uid()},
            "annotations": {REQUEST_ANNOTATION: request.name_any()},
            "ownerReferences": [owner],
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": request.spec.role.name},
        "subjects": [subject],
    }))
    .expect("a well-formed RoleBinding")
}

fn same_binding(live: &RoleBinding, desired: &RoleBinding) -> bool {
    live.role_ref == desired.role_ref
        && live.subjects == desired.subjects
        && live.metadata.owner_references == desired.metadata.owner_references
        && desired.labels().iter().all(|(k, v)| live.labels().get(k) == Some(v))
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
    let requester = request.spec.requester.clone().unwrap_or_else(|| "<unknown>".into());
    let role = format!("{:?} {}", request.spec.role.kind, request.spec.role.name);
    let approvers: Vec<&str> = decision.approvals.iter().map(|a| a.reviewer.as_str()).collect();
    let reference = request.object_ref(&());
    let mut events = Vec::new();

    let new_approvals =
        decision.approvals.iter().filter(|a| !old.approvals.iter().any(|o| o.review == a.review)).count();
    context
        .metrics
        .access_reviews
        .get_or_create(&ReviewLabels { outcome: ReviewOutcome::Approved })
        .inc_by(new_approvals as u64);
    for ignored in decision.ignored.iter().filter(|i| !old.ignored_reviews.iter().any(|o| o.review == i.review)) {
        context.metrics.access_reviews.get_or_create(&ReviewLabels { outcome: ReviewOutcome::Ignored }).inc();
        let reviewer = ignored.reviewer.as_deref().unwrap_or("<unknown>");
        let note = format!("review {} by {reviewer} ignored: {}", ignored.review, ignored.reason);
        // The review as related object keeps one Event per review instead
        // of folding them into a series that shows only the first note.
        let review = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(AccessReview::api_version(&()).into_owned()),
            kind: Some(AccessReview::kind(&()).into_owned()),
            name: Some(ignored.review.clone()),
            namespace: request.namespace(),
            ..Default::default()
        };
        events.push((EventType::Warning, "ReviewIgnored", note, Some(review)));
    }

    if old.phase != Some(decision.phase) {
        let expires = decision.window.map(|w| w.expires_at.to_string()).unwrap_or_default();
        let (kind, reason, note) = match decision.phase {
            AccessPhase::Pending => (
                EventType::Normal,
                "Requested",
                format!(
                    "{requester} requested {role} for {}: {}",
                    policy::format_duration(request.spec.duration.into()),
                    request.spec.reason
                ),
            ),
            AccessPhase::Approved => (
                EventType::Normal,
                "Approved",
                format!(
                    "{role} for {requester} approved by {}; access starts at {}",
                    approvers.join(", "),
                    decision.window.map(|w| w.starts_at.to_string()).unwrap_or_default()
                ),
            ),
            AccessPhase::Active => (
                EventType::Normal,
                "Granted",
                format!("{role} granted to {requester} until {expires}, approved by {}", approvers.join(", ")),
            ),
            AccessPhase::Denied => {
                (EventType::Warning, "Denied", format!("{role} for {requester} denied: {}", decision.message))
            }
            AccessPhase::Expired => (
                EventType::Normal,
                "Expired",
                format!("{role} of {requester} expired at {expires}; RoleBinding removed"),
            ),
            AccessPhase::Revoked => {
                (EventType::Normal, "Revoked", format!("{role} of {requester} revoked: {}", decision.message))
            }
        };
        if decision.phase == AccessPhase::Denied && decision.message.starts_with("denied by ") {
            context.metrics.access_reviews.get_or_create(&ReviewLabels { outcome: ReviewOutcome::Denied }).inc();
        }
        info!(request = %request.name_any(), namespace = ?request.namespace(), %requester, approvers = ?approvers, %role,
              expires_at = %expires, phase = ?decision.phase, message = %decision.message, "access request {}", reason.to_lowercase());
        events.push((kind, reason, note, None));
    }
    if old.phase != Some(decision.phase) {
        let facts = notify::RequestFacts {
            phase: Some(decision.phase),
            approvers: approvers.iter().map(|a| a.to_string()).collect(),
            starts_at: decision.window.map(|w| w.starts_at),
            expires_at: decision.window.map(|w| w.expires_at),
            message: Some(decision.message.clone()).filter(|m| !m.is_empty()),
            ..notify::request_facts(request)
        };
        if let Some(notice) = notify::request_notice(request, facts, Timestamp::now()) {
            context.notices.notice(notice);
        }
    }
    for (type_, reason, note, secondary) in events {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(super::event_note(note)),
            action: "Reconcile".into(),
            secondary,
        };
        if let Err(error) = context.recorder.publish(&event, &reference).await {
            warn!(%error, reason, "publishing an event failed");
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

/// Whether the sweep removes `binding`, given the request its annotation
/// names (if the cache has it), at `now`, by a sweeper started at `started`.
///
/// A grant whose window has ended is the controller's to remove: it does so
/// on a timer, and on its first reconcile after a restart. The sweep leaves
/// it alone until [`SWEEP_GRACE`] after the later of the window's end and
/// its own start, so the two never race to delete the same binding (the
/// loser used to report a normal expiry as an orphan, and the expiry went
/// unmeasured). Young bindings are spared for the same reason.
fn orphaned(binding: &RoleBinding, request: Option<&AccessRequest>, now: Timestamp, started: Timestamp) -> bool {
    let grace = k8s_openapi::jiff::SignedDuration::try_from(SWEEP_GRACE).unwrap_or_default();
    let created = binding.metadata.creation_timestamp.as_ref().map(to_timestamp).unwrap_or(now);
    if now.duration_since(created) < grace {
        return false;
    }
    let Some(request) =
        request.filter(|r| r.uid().as_deref() == binding.labels().get(REQUEST_UID_LABEL).map(String::as_str))
    else {
        return true;
    };
    let status = request.status.as_ref();
    if status.and_then(|s| s.phase) != Some(AccessPhase::Active) {
        return true;
    }
    match status.and_then(|s| s.expires_at.as_ref()).map(to_timestamp) {
        Some(expires) if expires > now => false,
        Some(expires) => now.duration_since(expires.max(started)) >= grace,
        None => true,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binding_names_are_valid_and_stable() {
        assert_eq!(binding_name("alice-hotfix"), "driftwarden-alice-hotfix");
        let long = "a".repeat(253);
        let name = binding_name(&long);
        assert_eq!(name.len(), 253);
        assert_eq!(name, binding_name(&long));
        assert_ne!(name, binding_name(&"b".repeat(253)));
    }

    #[test]
    fn service_account_requesters_are_bound_as_service_accounts() {
        let mut request: AccessRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "r", "namespace": "shop", "uid": "u1"},
            "spec": {"requester": "system:serviceaccount:ci:deployer", "role": {"kind": "Role", "name": "deployer"},
                     "duration": "10m", "reason": "pipeline run 42 needs to fix the config"}
        }))
        .unwrap();
        let binding = desired_binding(&request, "driftwarden-r");
        let subject = &binding.subjects.as_ref().unwrap()[0];
        assert_eq!(
            (subject.kind.as_str(), subject.name.as_str(), subject.namespace.as_deref()),
            ("ServiceAccount", "deployer", Some("ci"))
        );
        assert_eq!(binding.role_ref.kind, "Role");
        request.spec.requester = Some("alice".into());
        let binding = desired_binding(&request, "driftwarden-r");
        assert_eq!(binding.subjects.as_ref().unwrap()[0].kind, "User");
        assert_eq!(binding.labels().get(REQUEST_UID_LABEL).map(String::as_str), Some("u1"));
        assert!(same_binding(&binding, &desired_binding(&request, "driftwarden-r")));
    }

    #[test]
    fn the_sweep_leaves_ended_grants_to_the_controller_for_a_while() {
        let at = |s: &str| s.parse::<Timestamp>().unwrap();
        let binding: RoleBinding = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "driftwarden-r", "namespace": "shop", "creationTimestamp": "2026-01-01T10:00:00Z",
                         "labels": {REQUEST_UID_LABEL: "u1"}},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        }))
        .unwrap();
        let request = |uid: &str, phase: AccessPhase, expires: &str| -> AccessRequest {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
                "metadata": {"name": "r", "namespace": "shop", "uid": uid},
                "spec": {"requester": "alice", "role": {"kind": "ClusterRole", "name": "edit"},
                         "duration": "10m", "reason": "INC-1: roll back the frontend"},
                "status": {"phase": phase, "expiresAt": expires},
            }))
            .unwrap()
        };
        let active = request("u1", AccessPhase::Active, "2026-01-01T10:10:00Z");
        let long_running = at("2026-01-01T09:00:00Z");
        // (case, request, now, sweeper started, swept)
        let cases = [
            ("young binding, no request", None, "2026-01-01T10:00:20Z", long_running, false),
            ("no request", None, "2026-01-01T10:05:00Z", long_running, true),
            (
                "another request's uid",
                Some(request("u2", AccessPhase::Active, "2026-01-01T10:10:00Z")),
                "2026-01-01T10:05:00Z",
                long_running,
                true,
            ),
            (
                "request finished",
                Some(request("u1", AccessPhase::Expired, "2026-01-01T10:10:00Z")),
                "2026-01-01T10:05:00Z",
                long_running,
                true,
            ),
            ("inside the window", Some(active.clone()), "2026-01-01T10:05:00Z", long_running, false),
            ("just ended: the controller's", Some(active.clone()), "2026-01-01T10:10:05Z", long_running, false),
            (
                "ended long ago: the controller is stuck",
                Some(active.clone()),
                "2026-01-01T10:11:00Z",
                long_running,
                true,
            ),
            (
                "ended during an outage, sweeper just started",
                Some(active.clone()),
                "2026-01-01T12:00:05Z",
                at("2026-01-01T12:00:00Z"),
                false,
            ),
            (
                "ended during an outage, sweeper started long ago",
                Some(active),
                "2026-01-01T12:01:00Z",
                at("2026-01-01T12:00:00Z"),
                true,
            ),
        ];
        for (case, request, now, started, swept) in cases {
            assert_eq!(orphaned(&binding, request.as_ref(), at(now), started), swept, "{case}");
        }
    }

    #[test]
    fn an_unchanged_decision_gives_an_identical_status() {
        let decision = Decision {
            phase: AccessPhase::Pending,
            message: "waiting".into(),
            policy: Some("p".into()),
            approvals: vec![],
            ignored: vec![],
            window: None,
            binding: Binding::Absent,
            wake_at: None,
        };
        let first = next_status(&AccessRequestStatus::default(), &decision, "b", Timestamp::from_second(1000).unwrap());
        let second = next_status(&first, &decision, "b", Timestamp::from_second(2000).unwrap());
        assert_eq!(first, second, "a second reconcile of an unchanged world must not write");
    }
}
