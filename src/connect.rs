//! The cluster a command talks to: one place for every subcommand (and the
//! quickstart) to turn `--kubeconfig`/`--context` into a client.

use std::path::Path;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::ClusterArgs;

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

/// A kubeconfig file, with its context chosen by `options`.
pub async fn kubeconfig_file(path: &Path, options: &KubeConfigOptions) -> anyhow::Result<kube::Config> {
    let kubeconfig = Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, options)
        .await
        .with_context(|| format!("loading kubeconfig {}", path.display()))
}
