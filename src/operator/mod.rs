//! The operator process: connects to the API server, checks that the API it
//! serves is installed, and serves its probes. Controllers hang off `run`.

pub mod crds;
mod health;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kube::Client;
use tracing::{info, warn};

use crate::api::{GROUP, VERSION};
use crate::cli::OperatorArgs;
use health::Health;

/// How often readiness re-checks the API server.
const PROBE_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the API server: {0}")]
    Connect(#[source] kube::Error),
    #[error("cannot serve HTTP on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// Runs until `shutdown` resolves.
pub async fn run(
    client: Client,
    args: OperatorArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let version = client.apiserver_version().await.map_err(Error::Connect)?;
    info!(server = %version.git_version, namespace = %args.namespace, "connected to the API server");

    let health = Arc::new(Health::default());
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .map_err(|source| Error::Listen { addr: args.http_addr, source })?;
    info!(addr = %args.http_addr, "serving /healthz and /readyz");

    let probe = tokio::spawn(probe_api(client, health.clone()));
    let served = axum::serve(listener, health::router(health)).with_graceful_shutdown(shutdown).await;
    probe.abort();
    info!("stopped");
    served.map_err(|source| Error::Listen { addr: args.http_addr, source })
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
