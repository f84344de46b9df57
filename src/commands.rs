//! What each subcommand does: turn parsed arguments into calls on the
//! library. Nothing here decides anything; it wires config to code.

use std::path::Path;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::{ClusterArgs, Command, CrdsArgs, PublishArgs, RunArgs};

/// Runs a subcommand; the exit code is what it reports (`diff`: 1 on drift).
pub async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let done = std::process::ExitCode::SUCCESS;
    match command {
        Command::Run(args) => run(args).await.map(|()| done),
        Command::Crds(args) => crds(args).map(|()| done),
        Command::Publish(args) => publish(args).await.map(|()| done),
        Command::Diff(args) => crate::local_diff::run(args).await,
        Command::Quickstart(args) => crate::quickstart::run(args).await.map(|()| done),
    }
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    use crate::publish::{SOURCE_LABEL, pack, read_manifest_dir, unchanged};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

    let files = read_manifest_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    if let Err(errors) = crate::publish::check(&args.dir.display().to_string(), &files) {
        for error in &errors.0 {
            eprintln!("error: {error}");
        }
        anyhow::bail!("{} problem(s) in {}; nothing was published", errors.0.len(), args.dir.display());
    }
    let revision = match args.revision {
        Some(revision) => Some(revision),
        None => git_revision(&args.dir),
    };
    if let Some(revision) = &revision {
        crate::drift::source::validate_revision(revision).map_err(|e| anyhow::anyhow!("revision {revision:?}: {e}"))?;
    }
    let client = client(&args.cluster).await?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let desired = pack(&files, &args.configmap, &namespace, revision.as_deref())?;
    let api: Api<ConfigMap> = Api::namespaced(client, &namespace);
    let params = PatchParams::apply("driftwarden-publish").force();
    let (mut applied, mut kept) = (0, 0);
    for config_map in &desired {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        match api.get_opt(&name).await? {
            Some(live) if unchanged(&live, config_map) => kept += 1,
            _ => {
                let mut body = serde_json::to_value(config_map)?;
                body["apiVersion"] = "v1".into();
                body["kind"] = "ConfigMap".into();
                api.patch(&name, &params, &Patch::Apply(body))
                    .await
                    .with_context(|| format!("applying ConfigMap {name}"))?;
                applied += 1;
            }
        }
    }
    // Chunks a smaller state no longer needs.
    let mut removed = 0;
    let selector = format!("{SOURCE_LABEL}={}", args.configmap);
    for stale in api.list(&ListParams::default().labels(&selector)).await?.items {
        let name = stale.metadata.name.unwrap_or_default();
        if !desired.iter().any(|d| d.metadata.name.as_deref() == Some(&name)) {
            api.delete(&name, &DeleteParams::default()).await?;
            removed += 1;
        }
    }
    println!(
        "published {} files from {} into {} ConfigMap(s) in {namespace} at revision {}: {applied} written, {kept} unchanged, {removed} removed",
        files.len(),
        args.dir.display(),
        desired.len(),
        revision.as_deref().unwrap_or("<none>")
    );
    Ok(())
}

/// The commit checked out in `dir`, if it is in a Git repository.
fn git_revision(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().ok()?;
    if !out.status.success() {
        tracing::warn!(dir = %dir.display(), "not a Git checkout; publishing without a revision");
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
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
