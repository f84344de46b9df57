//! The operator's HTTPS server for admission webhooks: it stamps and checks
//! identity on AccessRequests and AccessReviews and enforces AccessPolicy at
//! `kubectl apply` time; it receives the write log (`/writes`), the
//! commands run in Pods (`/sessions`) and the API server's audit events.

pub mod admission;
pub mod audit;
pub mod configuration;
pub mod tls;
pub mod writes;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use axum_server::tls_rustls::RustlsConfig;
use k8s_openapi::api::core::v1::{Namespace, ObjectReference};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{info, warn};

use crate::api::{AccessPolicy, AccessRequest};
use crate::metrics::{Metrics, WebhookLabels, WebhookNameLabels};
use admission::{Facts, Kind};
pub use audit::AuditReceiver;
pub use configuration::Endpoint;

/// What the endpoints report to the operator. They only parse and
/// authenticate; keeping, confirming and logging is the operator's
/// (`operator::records`).
pub trait Records: Send + Sync {
    /// A write the `/writes` webhook admitted, provisional until a watch
    /// delivers it. Kept before the API server is answered, so that the
    /// watch never sees a write before its record.
    fn write(&self, record: crate::gate::writes::Record, expect: crate::gate::writes::Expect);
    /// The writes of an authenticated audit batch; false when the operator
    /// is behind (the caller is told to retry).
    fn audited(&self, writes: Vec<crate::gate::audit::AuditWrite>) -> bool;
    /// A command in a Pod (`/sessions`, or an audit event).
    fn command(&self, command: crate::gate::commands::Command);
}

/// Path of the audit webhook (the API server's audit backend posts here).
pub const AUDIT_PATH: &str = "/audit";

#[derive(Clone)]
struct AppState {
    client: Client,
    metrics: Arc<Metrics>,
    audit: Arc<AuditReceiver>,
    records: Arc<dyn Records>,
    break_glass: admission::BreakGlass,
    recorder: Recorder,
}

/// The largest AdmissionReview read: an object may be 1.5 MiB and a review
/// carries it twice (object and oldObject); driftwarden's own objects are a
/// few KiB.
pub const MAX_ADMISSION_BODY_BYTES: usize = 4 << 20;
/// Admission calls read and handled at once (the rest wait for a permit).
const ADMISSION_CONCURRENCY: usize = 16;
/// Authenticated audit batches read at once (each up to 32 MiB).
const AUDIT_CONCURRENCY: usize = 2;
/// At most this much of an unauthenticated audit body is read (and dropped).
const UNAUTHENTICATED_DRAIN_BYTES: usize = 64 << 10;
/// How long a call waits for a permit before it is told to retry.
const PERMIT_WAIT: Duration = Duration::from_secs(5);
/// Write-log calls handled at once: apart from the access webhooks', so a
/// flood of one never starves the other (the access webhooks fail closed).
const WRITES_CONCURRENCY: usize = 16;

/// How often the certificate's expiry is checked.
const RENEWAL_CHECK: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub addr: SocketAddr,
    /// How the API server reaches us.
    pub endpoint: Endpoint,
    /// How it reaches the leader's write-log webhook (the certificate names it too).
    pub writes_endpoint: Endpoint,
    /// Namespace and name of the Secret that holds the self-managed certificate.
    pub secret_namespace: String,
    pub secret_name: String,
    /// A directory with `tls.crt`, `tls.key` and `ca.crt` (e.g. from
    /// cert-manager) to serve instead of a self-managed certificate.
    pub cert_dir: Option<PathBuf>,
    /// Who may revoke any request in an incident.
    pub break_glass: admission::BreakGlass,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Tls(#[from] tls::Error),
    #[error("reading the webhook certificate from {dir}: {source}")]
    CertDir { dir: String, source: std::io::Error },
    #[error(
        "updating the webhook configurations (MutatingWebhookConfiguration and ValidatingWebhookConfiguration driftwarden): {0}; the chart creates them and the operator may only patch them: install or upgrade the chart"
    )]
    Configure(#[source] kube::Error),
    #[error("serving webhooks on {addr}: {source}")]
    Serve { addr: SocketAddr, source: std::io::Error },
}

/// Serves until `shutdown` resolves. The webhook configurations are applied
/// once the server has its certificate, and again whenever the CA changes.
pub async fn serve(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    audit: Arc<AuditReceiver>,
    records: Arc<dyn Records>,
    writes_hook: Arc<configuration::WritesHook>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    // The one TLS provider this binary is built with (kube's client uses it too).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut names = config.endpoint.tls_names();
    for name in config.writes_endpoint.tls_names() {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let serving = current_tls(&client, &config, &names).await?;
    let rustls = RustlsConfig::from_pem(serving.cert_pem.clone().into_bytes(), serving.key_pem.clone().into_bytes())
        .await
        .map_err(|source| Error::Serve { addr: config.addr, source })?;
    configuration::apply(&client, &config.endpoint, &serving.ca_pem).await.map_err(Error::Configure)?;
    writes_hook.set_ca(&serving.ca_pem);

    let handle = axum_server::Handle::new();
    tokio::spawn({
        let handle = handle.clone();
        async move {
            shutdown.await;
            handle.graceful_shutdown(Some(Duration::from_secs(5)));
        }
    });
    let renewal =
        tokio::spawn(keep_renewed(client.clone(), config.clone(), names, serving, rustls.clone(), writes_hook));

    // Every call holds a permit while its body is read and handled, so a
    // flood of large bodies costs at most permits x body limit of memory.
    let admission_permits = Bounds::new(ADMISSION_CONCURRENCY, MAX_ADMISSION_BODY_BYTES);
    let audit_permits = Bounds::new(AUDIT_CONCURRENCY, crate::gate::audit::MAX_BODY_BYTES);
    let admission = Router::new()
        .route(configuration::MUTATE_PATH, post(mutate))
        .route(configuration::VALIDATE_PATH, post(validate))
        .layer(DefaultBodyLimit::max(MAX_ADMISSION_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(admission_permits, bounded));
    // `/audit` reads its body itself, after the caller's token is checked.
    let audit_route = Router::new()
        .route(AUDIT_PATH, post(receive_audit))
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(audit_permits, bounded));
    let writes_permits = Bounds::new(WRITES_CONCURRENCY, MAX_ADMISSION_BODY_BYTES);
    let writes_route = Router::new()
        .route(writes::WRITES_PATH, post(note_write))
        .route(writes::SESSIONS_PATH, post(note_command))
        .layer(DefaultBodyLimit::max(MAX_ADMISSION_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(writes_permits, bounded));
    let router = admission.merge(audit_route).merge(writes_route).with_state(AppState {
        recorder: Recorder::new(client.clone(), Reporter { controller: "driftwarden".into(), instance: None }),
        client,
        metrics,
        audit,
        records,
        break_glass: config.break_glass.clone(),
    });
    info!(addr = %config.addr, endpoint = ?config.endpoint, "serving admission webhooks");
    let served = axum_server::bind_rustls(config.addr, rustls).handle(handle).serve(router.into_make_service()).await;
    renewal.abort();
    served.map_err(|source| Error::Serve { addr: config.addr, source })
}

async fn current_tls(client: &Client, config: &Config, names: &[String]) -> Result<tls::ServingTls, Error> {
    match &config.cert_dir {
        Some(dir) => {
            let read = |file: &str| {
                std::fs::read_to_string(dir.join(file))
                    .map_err(|source| Error::CertDir { dir: dir.display().to_string(), source })
            };
            Ok(tls::ServingTls {
                ca_pem: read("ca.crt")?,
                cert_pem: read("tls.crt")?,
                key_pem: read("tls.key")?,
                not_after: Timestamp::MAX,
            })
        }
        None => {
            Ok(tls::load_or_issue(client, &config.secret_namespace, &config.secret_name, names, Timestamp::now())
                .await?)
        }
    }
}

/// Swaps in a renewed certificate without dropping connections, and updates
/// the caBundle when the CA itself changed.
async fn keep_renewed(
    client: Client,
    config: Config,
    names: Vec<String>,
    mut serving: tls::ServingTls,
    rustls: RustlsConfig,
    writes_hook: Arc<configuration::WritesHook>,
) {
    loop {
        tokio::time::sleep(RENEWAL_CHECK).await;
        let fresh = match current_tls(&client, &config, &names).await {
            Ok(fresh) if fresh != serving => fresh,
            Ok(_) => continue,
            Err(error) => {
                warn!(%error, "checking the webhook certificate failed; will retry");
                continue;
            }
        };
        if let Err(error) =
            rustls.reload_from_pem(fresh.cert_pem.clone().into_bytes(), fresh.key_pem.clone().into_bytes()).await
        {
            warn!(%error, "loading the renewed webhook certificate failed; still serving the old one");
            continue;
        }
        if fresh.ca_pem != serving.ca_pem
            && let Err(error) = configuration::apply(&client, &config.endpoint, &fresh.ca_pem).await
        {
            warn!(%error, "updating the webhook caBundle failed; will retry");
            continue;
        }
        writes_hook.set_ca(&fresh.ca_pem);
        info!(not_after = %fresh.not_after, "webhook certificate renewed");
        serving = fresh;
    }
}

fn into_request(
    review: AdmissionReview<DynamicObject>,
) -> Result<AdmissionRequest<DynamicObject>, Box<AdmissionResponse>> {
    review.try_into().map_err(|err: kube::core::admission::ConvertAdmissionReviewError| {
        Box::new(AdmissionResponse::invalid(err.to_string()))
    })
}

/// Counts a webhook call and its duration.
fn observe(metrics: &Metrics, webhook: &'static str, outcome: &'static str, started: std::time::Instant) {
    metrics.webhook_requests.get_or_create(&WebhookLabels { webhook, outcome }).inc();
    metrics.webhook_duration.get_or_create(&WebhookNameLabels { webhook }).observe(started.elapsed().as_secs_f64());
}

/// What one group of endpoints may take at once.
#[derive(Clone)]
struct Bounds {
    permits: Arc<tokio::sync::Semaphore>,
    max_body: usize,
}

impl Bounds {
    fn new(concurrency: usize, max_body: usize) -> Self {
        Self { permits: Arc::new(tokio::sync::Semaphore::new(concurrency)), max_body }
    }
}

/// Refuses a body that says it is too large before reading any of it, then
/// waits (briefly) for one of the endpoints' permits and handles the call.
async fn bounded(
    State(bounds): State<Bounds>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let declared = request.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok());
    if declared.and_then(|v| v.parse::<usize>().ok()).is_some_and(|length| length > bounds.max_body) {
        return (StatusCode::PAYLOAD_TOO_LARGE, "the body is larger than the operator accepts").into_response();
    }
    match tokio::time::timeout(PERMIT_WAIT, bounds.permits.acquire_owned()).await {
        Ok(Ok(_permit)) => next.run(request).await,
        _ => (StatusCode::SERVICE_UNAVAILABLE, "busy; retry").into_response(),
    }
}

async fn receive_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, &'static str) {
    let started = std::time::Instant::now();
    if let Err(refused) = state.audit.admit(&headers).await {
        // Read (and drop) a small body before answering: a socket closed with
        // unread data is reset, and the caller may lose the answer with it.
        let _ = axum::body::to_bytes(body, UNAUTHENTICATED_DRAIN_BYTES).await;
        observe(&state.metrics, "audit", "refused", started);
        return refused;
    }
    let Ok(body) = axum::body::to_bytes(body, crate::gate::audit::MAX_BODY_BYTES).await else {
        state.audit.too_large();
        observe(&state.metrics, "audit", "refused", started);
        return (StatusCode::PAYLOAD_TOO_LARGE, "the batch is larger than the operator accepts");
    };
    let answer = state.audit.receive(&body).await;
    observe(&state.metrics, "audit", if answer.0.is_success() { "accepted" } else { "refused" }, started);
    answer
}

/// The write-log webhook: always allows, and notes the write (provisional
/// until the watch delivers it).
async fn note_write(
    State(state): State<AppState>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = std::time::Instant::now();
    let request = match into_request(review) {
        Ok(request) => request,
        Err(invalid) => return Json(invalid.into_review()),
    };
    let now = Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap_or_else(|_| Timestamp::now());
    let noted = match writes::record_of(&request, now) {
        Some((record, expect)) => {
            state.records.write(record, expect);
            "noted"
        }
        None => "skipped",
    };
    observe(&state.metrics, "writes", noted, started);
    Json(AdmissionResponse::from(&request).into_review())
}

/// The session-command webhook: always allows, and records the command
/// (the webhook's word: no watch can confirm a CONNECT).
async fn note_command(
    State(state): State<AppState>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = std::time::Instant::now();
    let request = match into_request(review) {
        Ok(request) => request,
        Err(invalid) => return Json(invalid.into_review()),
    };
    let noted = match writes::command_of(&request, Timestamp::now()) {
        Some(command) => {
            state.records.command(command);
            "noted"
        }
        None => "skipped",
    };
    observe(&state.metrics, "sessions", noted, started);
    Json(AdmissionResponse::from(&request).into_review())
}

async fn mutate(
    State(state): State<AppState>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = std::time::Instant::now();
    let response = match into_request(review) {
        Ok(request) => match reviewed_request(&state.client, &request).await {
            Ok(reviewed) => admission::mutate(&request, reviewed.as_ref().and_then(|r| r.metadata.uid.as_deref())),
            // Fail closed: a review whose request cannot be looked up is not admitted.
            Err(error) => {
                AdmissionResponse::from(&request).deny(format!("driftwarden could not check this request: {error}"))
            }
        },
        Err(invalid) => *invalid,
    };
    observe(&state.metrics, "mutate", if response.allowed { "allowed" } else { "denied" }, started);
    Json(response.into_review())
}

async fn validate(
    State(state): State<AppState>,
    Json(review): Json<AdmissionReview<DynamicObject>>,
) -> Json<AdmissionReview<DynamicObject>> {
    let started = std::time::Instant::now();
    let request = match into_request(review) {
        Ok(request) => request,
        Err(invalid) => return Json(invalid.into_review()),
    };
    let client = &state.client;
    let response = match facts(client, &request, &state.break_glass).await {
        Ok(facts) => {
            let response = admission::validate(&request, &facts);
            if response.allowed
                && let Some(revoker) = admission::revocation(&request, &facts)
            {
                record_revocation(&state.recorder, &request, &revoker).await;
            }
            response
        }
        // Fail closed: what cannot be checked is not admitted.
        Err(error) => {
            AdmissionResponse::from(&request).deny(format!("driftwarden could not check this request: {error}"))
        }
    };
    if !response.allowed {
        info!(user = ?request.user_info.username, kind = %request.kind.kind, name = %request.name,
              reason = %response.result.message, "admission denied");
    }
    observe(&state.metrics, "validate", if response.allowed { "allowed" } else { "denied" }, started);
    Json(response.into_review())
}

/// Logs a revocation with who made it and on what authority, and says so in
/// an Event on the request: a break-glass revocation is an incident action
/// the platform team must be able to find afterwards.
async fn record_revocation(
    recorder: &Recorder,
    request: &AdmissionRequest<DynamicObject>,
    revoker: &admission::Revoker,
) {
    let user = request.user_info.username.clone().unwrap_or_default();
    let groups = request.user_info.groups.clone().unwrap_or_default();
    let authority = match revoker {
        admission::Revoker::Requester => "the requester".to_owned(),
        admission::Revoker::Approver => "an approver".to_owned(),
        admission::Revoker::BreakGlass(by) => format!("break-glass ({by})"),
    };
    let break_glass = matches!(revoker, admission::Revoker::BreakGlass(_));
    if break_glass {
        warn!(%user, ?groups, namespace = ?request.namespace, request = %request.name, %authority,
              "break-glass revocation of an AccessRequest");
    } else {
        info!(%user, namespace = ?request.namespace, request = %request.name, %authority, "AccessRequest revoked");
    }
    let reference = ObjectReference {
        api_version: Some(format!("{}/{}", crate::api::GROUP, crate::api::VERSION)),
        kind: Some("AccessRequest".into()),
        name: Some(request.name.clone()),
        namespace: request.namespace.clone(),
        uid: request.old_object.as_ref().and_then(|o| o.metadata.uid.clone()),
        ..ObjectReference::default()
    };
    let event = Event {
        type_: if break_glass { EventType::Warning } else { EventType::Normal },
        reason: if break_glass { "BreakGlassRevocation".into() } else { "RevocationRequested".into() },
        note: Some(format!("revoked by {user} as {authority}")),
        action: "Revoke".into(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &reference).await {
        warn!(%error, "publishing the revocation event failed");
    }
}

/// For a review: the request it names, fresh from the API server.
async fn reviewed_request(
    client: &Client,
    request: &AdmissionRequest<DynamicObject>,
) -> Result<Option<AccessRequest>, kube::Error> {
    if Kind::of(request) != Some(Kind::AccessReview) {
        return Ok(None);
    }
    let namespace = request.namespace.clone().unwrap_or_default();
    let target = request.object.as_ref().and_then(|o| o.data["spec"]["accessRequest"].as_str()).unwrap_or_default();
    // Mutation runs before the schema: a name that is no object name
    // (`../other-namespace/...`) is left for the schema to refuse, never
    // looked up.
    if !is_object_name(target) {
        return Ok(None);
    }
    Api::<AccessRequest>::namespaced(client.clone(), &namespace).get_opt(target).await
}

/// A DNS subdomain, as every object name is.
fn is_object_name(name: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (1..=253).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && edge_ok(name.chars().next())
        && edge_ok(name.chars().last())
}

/// Looks up, fresh from the API server, what [`admission::validate`] needs.
/// Admission is rare and must not act on a stale cache.
async fn facts(
    client: &Client,
    request: &AdmissionRequest<DynamicObject>,
    break_glass: &admission::BreakGlass,
) -> Result<Facts, kube::Error> {
    let Some(kind) = Kind::of(request) else { return Ok(Facts::default()) };
    let namespace = request.namespace.clone().unwrap_or_default();
    let policies = Api::<AccessPolicy>::all(client.clone()).list(&Default::default()).await?.items;
    let namespace_labels = Api::<Namespace>::all(client.clone())
        .get_opt(&namespace)
        .await?
        .map(|ns| ns.metadata.labels.unwrap_or_default());
    let reviewed_request = match kind {
        Kind::AccessReview => reviewed_request(client, request).await?,
        Kind::AccessRequest => None,
    };
    Ok(Facts { policies, namespace_labels, reviewed_request, break_glass: break_glass.clone() })
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_object_names_are_looked_up() {
        for (name, ok) in [
            ("open", true),
            ("alice-frontend-hotfix", true),
            ("a.b-c", true),
            ("", false),
            ("../../other/accessrequests/x", false),
            ("open?watch=true", false),
            ("Open", false),
            ("-a", false),
            ("a-", false),
        ] {
            assert_eq!(super::is_object_name(name), ok, "{name}");
        }
    }
}
