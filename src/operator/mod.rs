//! The operator process: connects to the API server and runs, side by side,
//! the probe and metrics server, the admission webhook server and the
//! controllers. Any of them failing stops the others.

pub mod access;
mod conditions;
pub mod crds;
pub mod drift;
mod health;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::{GROUP, VERSION};
use crate::cli::OperatorArgs;
use crate::webhook::{self, Endpoint};
use health::Health;
use metrics::Metrics;

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
    let webhook_config = webhook::Config {
        addr: args.webhook_addr,
        endpoint,
        secret_namespace: args.namespace.clone(),
        secret_name: args.webhook_secret.clone(),
        cert_dir: args.webhook_cert_dir.clone(),
    };
    let webhooks = webhook::serve(client.clone(), webhook_config, stop.clone().cancelled_owned());

    let settings = access::Settings { sweep_interval: args.sweep_interval.into(), instance: args.pod_name.clone() };
    let access = access::run(client.clone(), metrics.clone(), settings, stop.clone());
    let drift_settings = drift::Settings {
        operator_namespace: args.namespace.clone(),
        iac_field_managers: args.iac_field_managers.clone(),
        instance: args.pod_name.clone(),
    };
    let drift = drift::run(client.clone(), metrics.clone(), drift_settings, stop.clone());
    let probe = probe_api(client, health);

    // Whichever part ends first (a failure, or shutdown) ends them all.
    let result = tokio::select! {
        served = http => served.map_err(|source| Error::Listen { addr: args.http_addr, source }),
        served = webhooks => served.map_err(Error::from),
        () = access => Ok(()),
        () = drift => Ok(()),
        () = probe => Ok(()),
    };
    stop.cancel();
    if let Err(error) = &result {
        warn!(%error, "stopping");
    }
    info!("stopped");
    result
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
