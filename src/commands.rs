//! What each subcommand does: turn parsed arguments into calls on the
//! library. Nothing here decides anything; it wires config to code.

use std::path::Path;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::{ClusterArgs, Command, CrdsArgs, RunArgs};

pub async fn dispatch(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Run(args) => run(args).await,
        Command::Crds(args) => crds(args),
        Command::Quickstart(args) => crate::quickstart::run(args).await,
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = client(&args.cluster).await?;
    crate::operator::run(client, args.operator, shutdown_signal()).await?;
    Ok(())
}

fn crds(args: CrdsArgs) -> anyhow::Result<()> {
    match args.dir {
        None => print!("{}", crate::api::crds_yaml()),
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (file, yaml) in crate::api::crd_documents() {
                let path = dir.join(file);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// A client for the cluster the user chose: an explicit kubeconfig (and
/// context), else what kube infers (KUBECONFIG, ~/.kube/config, in-cluster).
pub async fn client(args: &ClusterArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    let config = match &args.kubeconfig {
        Some(path) => kubeconfig_file(path, &options).await?,
        None if args.context.is_some() => kube::Config::from_kubeconfig(&options).await?,
        None => kube::Config::infer().await.context("no cluster configured (no kubeconfig and not in a cluster)")?,
    };
    Ok(Client::try_from(config)?)
}

pub async fn kubeconfig_file(path: &Path, options: &KubeConfigOptions) -> anyhow::Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, options)
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))
}

/// Resolves on SIGINT or SIGTERM (what Kubernetes sends a Pod to stop).
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler only fails outside a tokio runtime");
    tokio::select! {
        _ = interrupt => {},
        _ = terminate.recv() => {},
    }
    tracing::info!("shutting down");
}
