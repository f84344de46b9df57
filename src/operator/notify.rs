//! Delivers notices to the Notifiers in the operator's namespace. The
//! controllers hand notices (and every DesiredState status they write) to an
//! [`Outbox`] without waiting; one task routes them, sends each with retries
//! and backoff, keeps Alertmanager's standing-drift alerts fresh, and writes
//! each Notifier's status. Only the leader runs it, so a notice goes out once.
//!
//! Delivery is at least once: a receiver may see a notice twice (a retry
//! after a lost answer, a new leader announcing standing drift again); the
//! webhook's `X-Driftwarden-Delivery` header names each delivery, the same
//! on every retry of it.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::Value;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::{
    DesiredState, DesiredStateStatus, DriftedObject, NoticeKind, Notifier, NotifierStatus, NotifierType, SecretKeyRef,
};
use crate::metrics::{Delivery, Metrics, NotificationLabels, Sink};
use crate::notify::render::{self, ALERT_RESEND};
use crate::notify::standing::{self, StandingDrift, StateKey};
use crate::notify::{Notice, routes};

/// Notices waiting to be routed; more are dropped (and counted) rather
/// than slowing a controller down.
const QUEUE: usize = 4096;
/// Deliveries in flight at once, over every Notifier.
const IN_FLIGHT: usize = 8;
/// Attempts per message: the first and four retries, 1, 2, 4 and 8 s apart.
const ATTEMPTS: u32 = 5;
const TIMEOUT: Duration = Duration::from_secs(10);
const STATUS_EVERY: Duration = Duration::from_secs(5);

enum Message {
    Notice(Notice),
    /// A DesiredState's standing drift, from the status just written
    /// (none: it was deleted).
    Status(StateKey, Vec<DriftedObject>),
    /// A window ends soon: sent once per request and expiry.
    Expiring(String, Notice),
}

/// Where the controllers put notices. Cheap to clone; never blocks.
#[derive(Clone)]
pub struct Outbox {
    queue: mpsc::Sender<Message>,
    metrics: Arc<Metrics>,
}

impl Outbox {
    pub fn notice(&self, notice: Notice) {
        self.put(Message::Notice(notice));
    }

    /// Every status written (and the last one, again, by a new leader), so
    /// that standing drift is announced and resolved.
    pub fn drift_status(&self, namespace: &str, name: &str, status: Option<&DesiredStateStatus>) {
        let standing =
            status.into_iter().flat_map(|s| &s.drifted_objects).filter(|d| standing::stands(d)).cloned().collect();
        self.put(Message::Status((namespace.to_owned(), name.to_owned()), standing));
    }

    /// `key` names the window (request and expiry): one warning per window.
    pub fn expiring(&self, key: String, notice: Notice) {
        self.put(Message::Expiring(key, notice));
    }

    fn put(&self, message: Message) {
        match self.queue.try_send(message) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.metrics.notifications_dropped.inc();
            }
        }
    }
}

/// The outbox and the receiving end that [`run`] drains.
pub fn outbox(metrics: Arc<Metrics>) -> (Outbox, Inbox) {
    let (queue, receiver) = mpsc::channel(QUEUE);
    (Outbox { queue, metrics }, Inbox(receiver))
}

pub struct Inbox(mpsc::Receiver<Message>);

/// What one Notifier's deliveries came to, for its status.
#[derive(Default, Clone, PartialEq)]
struct Tally {
    delivered: i64,
    dead_lettered: i64,
    last_error: Option<String>,
    /// Why it cannot be used, if it cannot (a missing Secret, say).
    unusable: Option<(String, String)>,
    /// The last delivery failed for good.
    failing: bool,
}

struct Shared {
    client: Client,
    namespace: String,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    tallies: Mutex<BTreeMap<String, Tally>>,
    in_flight: Semaphore,
}

/// Routes and delivers until `stop`.
pub async fn run(client: Client, metrics: Arc<Metrics>, namespace: String, inbox: Inbox, stop: CancellationToken) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(http) => http,
        Err(error) => {
            warn!(error = %error.without_url(), "cannot build the notifications' HTTP client; none are sent");
            return;
        }
    };
    let (notifiers, events) = crate::operator::watch::reflect(
        Api::<Notifier>::namespaced(client.clone(), &namespace),
        watcher::Config::default(),
    );
    let watch = crate::operator::watch::drive(events);
    let shared = Arc::new(Shared {
        client,
        namespace,
        http,
        metrics,
        tallies: Mutex::default(),
        in_flight: Semaphore::new(IN_FLIGHT),
    });
    let statuses = write_statuses(shared.clone(), notifiers.clone());
    let routing = route(shared, notifiers, inbox);
    tokio::select! {
        () = stop.cancelled() => {}
        () = watch => {}
        () = statuses => {}
        () = routing => {}
    }
}

async fn route(shared: Arc<Shared>, notifiers: Store<Notifier>, Inbox(mut inbox): Inbox) {
    // Route nothing before the Notifiers are known (the queue holds it).
    let _ = notifiers.wait_until_ready().await;
    let mut standing = StandingDrift::default();
    let mut warned: HashSet<String> = HashSet::new();
    let mut resend = tokio::time::interval(ALERT_RESEND.unsigned_abs());
    loop {
        let message = tokio::select! {
            message = inbox.recv() => match message { Some(m) => m, None => return },
            _ = resend.tick() => {
                let now = Timestamp::now();
                for notifier in alertmanagers(&notifiers) {
                    let alerts: Vec<Value> = standing
                        .all()
                        .filter(|s| routes(&notifier.spec, &s.notice(false, now)))
                        .map(|s| render::alert(s, false, now))
                        .collect();
                    if !alerts.is_empty() {
                        send(&shared, notifier, Payload::Alerts(alerts));
                    }
                }
                continue;
            }
        };
        match message {
            Message::Notice(mut notice) => {
                if notice.kind == NoticeKind::RequestCreated {
                    with_pending_drift(&shared.client, &mut notice).await;
                }
                fan_out(&shared, &notifiers, &notice);
            }
            Message::Expiring(key, notice) => {
                if warned.insert(key) {
                    fan_out(&shared, &notifiers, &notice);
                }
            }
            Message::Status(state, status) => {
                let changes = standing.update(state, &status);
                let now = Timestamp::now();
                for (standing, resolved) in
                    changes.appeared.iter().map(|s| (s, false)).chain(changes.resolved.iter().map(|s| (s, true)))
                {
                    let notice = standing.notice(resolved, now);
                    fan_out(&shared, &notifiers, &notice);
                    for notifier in alertmanagers(&notifiers).filter(|n| routes(&n.spec, &notice)) {
                        send(&shared, notifier, Payload::Alerts(vec![render::alert(standing, resolved, now)]));
                    }
                }
            }
        }
    }
}

fn alertmanagers(notifiers: &Store<Notifier>) -> impl Iterator<Item = Arc<Notifier>> {
    notifiers.state().into_iter().filter(|n| n.spec.type_ == NotifierType::Alertmanager)
}

/// Every Webhook and Slack Notifier that takes the notice (Alertmanager
/// gets alerts for standing drift only).
fn fan_out(shared: &Arc<Shared>, notifiers: &Store<Notifier>, notice: &Notice) {
    for notifier in notifiers.state() {
        if notifier.spec.type_ != NotifierType::Alertmanager && routes(&notifier.spec, notice) {
            send(shared, notifier, Payload::Notice(Box::new(notice.clone())));
        }
    }
}

/// A new request's notice lists the drift pending in its namespace.
async fn with_pending_drift(client: &Client, notice: &mut Notice) {
    let api: Api<DesiredState> = Api::namespaced(client.clone(), &notice.namespace);
    match api.list(&Default::default()).await {
        Ok(states) => {
            let drift = crate::notify::pending_drift(states.items.iter().filter_map(|s| s.status.as_ref()));
            if let Some(request) = notice.request.as_mut() {
                request.pending_drift = Some(drift);
            }
        }
        Err(error) => {
            warn!(%error, namespace = %notice.namespace, "listing DesiredStates for a request's notice failed")
        }
    }
}

enum Payload {
    Notice(Box<Notice>),
    Alerts(Vec<Value>),
}

fn sink(type_: NotifierType) -> Sink {
    match type_ {
        NotifierType::Webhook => Sink::webhook,
        NotifierType::Slack => Sink::slack,
        NotifierType::Alertmanager => Sink::alertmanager,
    }
}

fn send(shared: &Arc<Shared>, notifier: Arc<Notifier>, payload: Payload) {
    let shared = shared.clone();
    tokio::spawn(async move {
        let Ok(_permit) = shared.in_flight.acquire().await else { return };
        deliver(&shared, &notifier, payload).await;
    });
}

/// Why a message was not delivered.
enum Failure {
    /// Retrying will not help (a 4xx, a missing Secret).
    Permanent(String),
    Transient(String),
}

async fn deliver(shared: &Shared, notifier: &Notifier, payload: Payload) {
    let name = notifier.name_any();
    let labels = |outcome| NotificationLabels { sink: sink(notifier.spec.type_), outcome };
    let request = match prepare(shared, notifier, &payload).await {
        Ok(request) => request,
        Err(why) => {
            shared.metrics.notifications.get_or_create(&labels(Delivery::dead_lettered)).inc();
            warn!(notifier = %name, reason = %why.1, "notifier cannot be used; message dropped");
            tally(shared, &name, |t| {
                t.dead_lettered += 1;
                t.unusable = Some(why.clone());
            });
            return;
        }
    };
    let delivery = delivery_id();
    let mut backoff = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let result = attempt_once(shared, &request, &delivery).await;
        match result {
            Ok(()) => {
                shared.metrics.notifications.get_or_create(&labels(Delivery::delivered)).inc();
                debug!(notifier = %name, attempt, "notification delivered");
                tally(shared, &name, |t| {
                    t.delivered += 1;
                    t.unusable = None;
                    t.failing = false;
                });
                return;
            }
            Err(Failure::Transient(error)) if attempt < ATTEMPTS => {
                shared.metrics.notifications.get_or_create(&labels(Delivery::retried)).inc();
                debug!(notifier = %name, attempt, %error, "notification failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            Err(Failure::Transient(error) | Failure::Permanent(error)) => {
                shared.metrics.notifications.get_or_create(&labels(Delivery::dead_lettered)).inc();
                warn!(notifier = %name, attempt, %error, "notification given up on");
                tally(shared, &name, |t| {
                    t.dead_lettered += 1;
                    t.last_error = Some(error.clone());
                    t.unusable = None;
                    t.failing = true;
                });
                return;
            }
        }
    }
}

/// A message ready to send: where, what and how it is signed.
struct Prepared {
    url: String,
    body: Vec<u8>,
    kind: Option<NoticeKind>,
    hmac_key: Option<Vec<u8>>,
}

/// Reads the Notifier's Secrets and renders the body. The error is a
/// condition reason and message.
async fn prepare(shared: &Shared, notifier: &Notifier, payload: &Payload) -> Result<Prepared, (String, String)> {
    let spec = &notifier.spec;
    let url = match (&spec.url, &spec.url_secret_ref) {
        (_, Some(reference)) => String::from_utf8(secret_value(shared, reference).await?)
            .map(|url| url.trim().to_owned())
            .map_err(|_| ("SecretInvalid".to_owned(), format!("the URL in Secret {} is not UTF-8", reference.name)))?,
        (Some(url), None) => url.clone(),
        (None, None) => return Err(("InvalidSpec".into(), "neither url nor urlSecretRef is set".into())),
    };
    let hmac_key = match &spec.hmac_secret_ref {
        Some(reference) => Some(secret_value(shared, reference).await?),
        None if spec.type_ == NotifierType::Webhook => {
            return Err(("InvalidSpec".into(), "a Webhook Notifier needs hmacSecretRef".into()));
        }
        None => None,
    };
    let (url, body, kind) = match (spec.type_, payload) {
        (NotifierType::Webhook, Payload::Notice(notice)) => (url, render::webhook_body(notice), Some(notice.kind)),
        (NotifierType::Slack, Payload::Notice(notice)) => (url, render::slack_body(notice), Some(notice.kind)),
        (NotifierType::Alertmanager, Payload::Alerts(alerts)) => {
            (format!("{}/api/v2/alerts", url.trim_end_matches('/')), render::alertmanager_body(alerts), None)
        }
        _ => return Err(("InvalidSpec".into(), "this Notifier's type does not take this message".into())),
    };
    Ok(Prepared { url, body, kind, hmac_key })
}

async fn secret_value(shared: &Shared, reference: &SecretKeyRef) -> Result<Vec<u8>, (String, String)> {
    let api: Api<Secret> = Api::namespaced(shared.client.clone(), &shared.namespace);
    let missing = |what: String| ("SecretMissing".to_owned(), what);
    let secret = match api.get_opt(&reference.name).await {
        Ok(Some(secret)) => secret,
        Ok(None) => return Err(missing(format!("Secret {}/{} does not exist", shared.namespace, reference.name))),
        Err(error) => return Err(missing(format!("reading Secret {}/{}: {error}", shared.namespace, reference.name))),
    };
    secret
        .data
        .and_then(|mut data| data.remove(&reference.key))
        .map(|value| value.0)
        .filter(|value| !value.is_empty())
        .ok_or_else(|| missing(format!("Secret {}/{} has no key {}", shared.namespace, reference.name, reference.key)))
}

async fn attempt_once(shared: &Shared, request: &Prepared, delivery: &str) -> Result<(), Failure> {
    let mut builder = shared
        .http
        .post(&request.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("X-Driftwarden-Delivery", delivery);
    if let Some(kind) = request.kind {
        builder = builder.header(render::EVENT_HEADER, format!("{kind:?}"));
    }
    if let Some(key) = &request.hmac_key {
        let timestamp = Timestamp::now().as_second();
        builder = builder
            .header(render::TIMESTAMP_HEADER, timestamp.to_string())
            .header(render::SIGNATURE_HEADER, render::signature(key, timestamp, &request.body));
    }
    // Errors without the URL: a Slack URL is a credential.
    let response =
        builder.body(request.body.clone()).send().await.map_err(|e| Failure::Transient(e.without_url().to_string()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let why = format!("the receiver answered {status}");
    if status.is_client_error()
        && status != http::StatusCode::TOO_MANY_REQUESTS
        && status != http::StatusCode::REQUEST_TIMEOUT
    {
        Err(Failure::Permanent(why))
    } else {
        Err(Failure::Transient(why))
    }
}

fn delivery_id() -> String {
    let mut bytes = [0u8; 12];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tally(shared: &Shared, name: &str, change: impl FnOnce(&mut Tally)) {
    let mut tallies = shared.tallies.lock().unwrap_or_else(|p| p.into_inner());
    change(tallies.entry(name.to_owned()).or_default());
}

/// Writes each Notifier's status when its tally changed.
async fn write_statuses(shared: Arc<Shared>, notifiers: Store<Notifier>) {
    let mut written: BTreeMap<String, Tally> = BTreeMap::new();
    let mut bases: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    loop {
        tokio::time::sleep(STATUS_EVERY).await;
        let tallies = shared.tallies.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for notifier in notifiers.state() {
            let name = notifier.name_any();
            let base = *bases.entry(name.clone()).or_insert_with(|| {
                let status = notifier.status.clone().unwrap_or_default();
                (status.delivered.unwrap_or(0), status.dead_lettered.unwrap_or(0))
            });
            let Some(tally) = tallies.get(&name) else { continue };
            if written.get(&name) == Some(tally) {
                continue;
            }
            let status = notifier_status(&notifier, tally, base, Timestamp::now());
            match crate::operator::apply_status(&shared.client, notifier.as_ref(), &status).await {
                Ok(()) => {
                    written.insert(name, tally.clone());
                }
                Err(error) => warn!(notifier = %name, %error, "writing a Notifier's status failed"),
            }
        }
    }
}

/// `base`: the counts in status when this replica began to lead (its
/// tallies count from there).
fn notifier_status(notifier: &Notifier, tally: &Tally, base: (i64, i64), now: Timestamp) -> NotifierStatus {
    let (ready, reason, message) = match (&tally.unusable, tally.failing) {
        (Some((reason, message)), _) => ("False", reason.clone(), message.clone()),
        (None, true) => ("False", "DeliveryFailing".to_owned(), tally.last_error.clone().unwrap_or_default()),
        (None, false) => ("True", "Delivering".to_owned(), "the last message was delivered".to_owned()),
    };
    let old = notifier.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"));
    let since = match old {
        Some(old) if old.status == ready && old.reason == reason => old.last_transition_time.clone(),
        _ => Time(now),
    };
    NotifierStatus {
        delivered: Some(base.0 + tally.delivered),
        dead_lettered: Some(base.1 + tally.dead_lettered),
        last_error: tally.last_error.clone(),
        conditions: vec![Condition {
            type_: "Ready".into(),
            status: ready.into(),
            reason,
            message,
            last_transition_time: since,
            observed_generation: notifier.metadata.generation,
        }],
    }
}
