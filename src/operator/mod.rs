//! The operator process: connects to the API server and runs, side by side,
//! the probe and metrics server, the admission webhook server and the
//! controllers. Any of them failing stops the others.

pub mod access;
mod backoff;
pub mod crds;
pub mod drift;
pub mod gate;
mod health;
mod journal;
pub mod leader;

#[cfg(test)]
mod mock_api;
pub mod notify;
pub mod ready;
mod records;
mod sessions;
pub mod watch;
pub mod writelog;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{AccessRequest, GROUP, VERSION};
use crate::cli::OperatorArgs;
use crate::metrics::Metrics;
use crate::webhook::{self, Endpoint};
use health::Health;

/// How often readiness re-checks the API server.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Webhook(#[from] webhook::Error),
    #[error("leader election on Lease {lease}: {source}")]
    Lease { lease: String, source: kube_lease_manager::LeaseManagerError },
}

/// Runs until `shutdown` resolves or a part fails.
pub async fn run(
    client: Client,
    args: OperatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let version = client.apiserver_version().await.map_err(Error::Connect)?;
    info!(server = %version.git_version, namespace = %args.namespace, "connected to the API server");

    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            shutdown.await;
            stop.cancel();
        }
    });

    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::default());
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|source| Error::Listen { addr: args.http_addr, source })?;
    info!(addr = %args.http_addr, "serving /healthz, /readyz and /metrics");
    let http = axum::serve(listener, health::router(health.clone(), metrics.clone()))
        .with_graceful_shutdown(stop.clone().cancelled_owned());

    let endpoint = match &args.webhook_url {
        Some(url) => Endpoint::Url(url.clone()),
        None => Endpoint::Service {
            namespace: args.namespace.clone(),
            name: args.webhook_service.clone(),
            port: args.webhook_service_port,
        },
    };
    let writes_endpoint = match (&args.writes_url, &endpoint) {
        (Some(url), _) => Endpoint::Url(url.clone()),
        (None, Endpoint::Url(url)) => Endpoint::Url(url.clone()),
        (None, Endpoint::Service { namespace, name, port }) => {
            Endpoint::Service { namespace: namespace.clone(), name: format!("{name}-leader"), port: *port }
        }
    };
    let webhook_config = webhook::Config {
        addr: args.webhook_addr,
        endpoint,
        writes_endpoint,
        secret_namespace: args.namespace.clone(),
        secret_name: args.webhook_secret.clone(),
        cert_dir: args.webhook_cert_dir.clone(),
        break_glass: webhook::admission::BreakGlass {
            users: args.break_glass_users.iter().filter(|u| !u.is_empty()).cloned().collect(),
            groups: args.break_glass_groups.iter().filter(|g| !g.is_empty()).cloned().collect(),
        },
    };
    // Every replica receives audit events (the API server reaches any of
    // them through the Service) and logs them on AccessRequests.
    // The process's one cache of requests and of namespaces, also read by
    // the leader's controllers.
    let requests = watch::Shared::<AccessRequest>::start(kube::Api::all(client.clone()));
    let namespaces = watch::Shared::<k8s_openapi::api::core::v1::Namespace>::start(kube::Api::all(client.clone()));
    let operator_user = match records::own_username(&client).await {
        Ok(user) => user,
        Err(error) => {
            warn!(%error, "could not learn the operator's own user name; its writes may be logged as activity");
            String::new()
        }
    };
    let sessions = sessions::Sessions::start(client.clone(), requests.store.clone());
    let identity = args.pod_name.clone().unwrap_or_else(host_name);
    let journal_place =
        journal::Place { client: client.clone(), namespace: args.namespace.clone(), series: args.lease_name.clone() };
    // The journal outlives the controllers by a last write.
    let journal_stop = CancellationToken::new();
    let (journal, journal_writer) = journal::start(journal_place.clone(), &identity, journal_stop.clone());
    let (queue, batches) = records::queue();
    let write_log = writelog::SharedLog::new(queue.clone(), operator_user.clone(), metrics.clone(), Some(journal));
    records::start_log(client.clone(), requests.store.clone(), operator_user, batches);
    let intake = Arc::new(records::Intake { write_log: write_log.clone(), sessions: sessions.clone(), queue });
    let audit = webhook::AuditReceiver::new(
        client.clone(),
        (args.namespace.clone(), args.audit_token_secret.clone()),
        metrics.clone(),
        intake.clone(),
    );
    let writes_hook = Arc::new(webhook::configuration::WritesHook::new(
        webhook_config.writes_endpoint.clone(),
        args.namespace.clone(),
        args.write_log,
    ));
    let webhooks = webhook::serve(
        client.clone(),
        webhook_config,
        metrics.clone(),
        audit,
        intake,
        writes_hook.clone(),
        stop.clone().cancelled_owned(),
    );

    // A restarted replica may still carry the label from when it led.
    label_leader(&client, &args, false).await;
    let leadership = if args.leader_election {
        leader::Leadership::elect(client.clone(), &args.namespace, &args.lease_name, &identity)
            .await
            .map_err(|source| Error::Lease { lease: args.lease_name.clone(), source })?
    } else {
        leader::Leadership::alone()
    };
    let controllers = lead(
        client.clone(),
        metrics.clone(),
        &args,
        (write_log, writes_hook, sessions, journal_place),
        (requests, namespaces),
        leadership.is_leader.clone(),
        stop.clone(),
    );
    let probe = probe_api(client, health);

    // Whichever part ends first (a failure, or shutdown) ends them all.
    let result = tokio::select! {
        served = http => served.map_err(|source| Error::Listen { addr: args.http_addr, source }),
        served = webhooks => served.map_err(Error::from),
        () = controllers => Ok(()),
        () = probe => Ok(()),
    };
    stop.cancel();
    journal_stop.cancel();
    if tokio::time::timeout(std::time::Duration::from_secs(2), journal_writer).await.is_err() {
        warn!("the write journal's last write did not finish");
    }
    leadership.resign().await;
    if let Err(error) = &result {
        warn!(%error, "stopping");
    }
    info!("stopped");
    result
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "driftwarden".into())
}

/// Runs the controllers that write while this replica leads; stops them
/// (and so every write) the moment the lease is lost, and waits to lead again.
async fn lead(
    client: Client,
    metrics: Arc<Metrics>,
    args: &OperatorArgs,
    (write_log, writes_hook, sessions, journal_place): (
        Arc<writelog::SharedLog>,
        Arc<webhook::configuration::WritesHook>,
        Arc<sessions::Sessions>,
        journal::Place,
    ),
    (requests, namespaces): (watch::Shared<AccessRequest>, watch::Shared<k8s_openapi::api::core::v1::Namespace>),
    mut is_leader: tokio::sync::watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            led = is_leader.wait_for(|leads| *leads) => if led.is_err() { return },
        }
        metrics.leader.set(1);
        info!(lease = %args.lease_name, "leading: running the controllers");
        label_leader(&client, args, true).await;
        // What earlier leaders (and this replica before) confirmed, before
        // anything is judged. Unreadable: drift is judged from the requests'
        // summaries and what is confirmed from now on (fails closed).
        match journal::load(&journal_place).await {
            Ok((entries, incomplete_until)) => write_log.restore(entries, incomplete_until),
            Err(error) => {
                warn!(%error, "reading the write journal failed: earlier writes are known from the requests' summaries only")
            }
        }
        let term = stop.child_token();
        let (notices, inbox) = notify::outbox(metrics.clone());
        sessions.notify_to(Some(notices.clone()));
        let notifications = notify::run(client.clone(), metrics.clone(), args.namespace.clone(), inbox, term.clone());
        let settings = access::Settings {
            sweep_interval: args.sweep_interval.into(),
            instance: args.pod_name.clone(),
            notices: notices.clone(),
        };
        let caches = access::DecisionCaches::watch(&client, &namespaces);
        let approvals = gate::Approvals::of(&caches);
        let access = access::run(client.clone(), metrics.clone(), settings, (requests.clone(), caches), term.clone());
        let drift_settings = drift::Settings {
            operator_namespace: args.namespace.clone(),
            ignore_pointers: args.ignore_pointers.clone(),
            instance: args.pod_name.clone(),
            revert_rate: args.revert_rate,
            revert_burst: args.revert_burst,
            verify_sources: !args.insecure_skip_source_verification,
            write_log: Some(write_log.clone()),
            writes_hook: Some(writes_hook.clone()),
            notices,
            approvals,
            requests: requests.clone(),
            namespaces: namespaces.clone(),
        };
        let drift = drift::run(client.clone(), metrics.clone(), drift_settings, term.clone());
        let running = futures::future::join3(access, drift, notifications);
        tokio::pin!(running);
        tokio::select! {
            _ = &mut running => {}
            _ = is_leader.wait_for(|leads| !*leads) => {
                warn!(lease = %args.lease_name, "lost the lease: stopping all writes");
                term.cancel();
                running.await;
            }
        }
        sessions.notify_to(None);
        metrics.leader.set(0);
        label_leader(&client, args, false).await;
        if stop.is_cancelled() {
            return;
        }
    }
}

/// The label by which the Service `<webhook service>-leader` selects the
/// leader's Pod: the write-log webhook must reach the replica whose watches
/// confirm its records.
pub const LEADER_LABEL: &str = "driftwarden.io/leader";

/// Sets (or removes) [`LEADER_LABEL`] on this replica's own Pod, in a
/// cluster (`--pod-name`, and no --webhook-url / --writes-url).
async fn label_leader(client: &Client, args: &OperatorArgs, leads: bool) {
    let Some(pod) = args.pod_name.as_deref() else { return };
    if args.webhook_url.is_some() || args.writes_url.is_some() {
        return;
    }
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> = kube::Api::namespaced(client.clone(), &args.namespace);
    let value = if leads { serde_json::Value::from("true") } else { serde_json::Value::Null };
    let patch = serde_json::json!({"metadata": {"labels": {LEADER_LABEL: value}}});
    if let Err(error) = pods.patch(pod, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch)).await {
        warn!(%error, %pod, leads, "labelling the operator's Pod for the write-log webhook failed");
    }
}

/// Ready means: the API server answers and serves driftwarden's API group.
/// Discovery needs no RBAC beyond being authenticated.
async fn probe_api(client: Client, health: Arc<Health>) {
    let group_version = format!("{GROUP}/{VERSION}");
    let mut warned = false;
    loop {
        let installed = match client.list_api_group_resources(&group_version).await {
            Ok(list) => crds::KINDS.iter().all(|kind| list.resources.iter().any(|r| r.kind == *kind)),
            Err(_) => false,
        };
        if !installed && !warned {
            warn!(%group_version, "driftwarden's CRDs are not installed (or the API server is unreachable); install them with `driftwarden crds | kubectl apply -f -`");
        }
        warned = !installed;
        health.set_ready(installed);
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

/// Writes `status` of a namespaced custom resource by server-side apply,
/// under driftwarden's field manager (callers skip it when nothing changed).
pub async fn apply_status<K>(client: &Client, object: &K, status: &impl serde::Serialize) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + serde::de::DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    use kube::ResourceExt as _;
    let api: kube::Api<K> = kube::Api::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let params = kube::api::PatchParams::apply(crds::FIELD_MANAGER).force();
    api.patch_status(&object.name_any(), &params, &kube::api::Patch::Apply(patch)).await.map(drop)
}

/// An Event's note, cut to the 1 kB the Events API accepts (on a character
/// boundary, so a long object name never makes the Event invalid).
pub fn event_note(mut text: String) -> String {
    const MAX: usize = 1000;
    if text.len() > MAX {
        let mut cut = MAX;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn event_notes_are_cut_on_a_character_boundary() {
        assert_eq!(super::event_note("short".into()), "short");
        let long = "é".repeat(600); // 1200 bytes
        let cut = super::event_note(long);
        assert!(cut.len() <= 1000 && cut.chars().all(|c| c == 'é'));
    }
}
