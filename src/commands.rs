//! What each subcommand does: turn parsed arguments into calls on the
//! library. Nothing here decides anything; it wires config to code.

use anyhow::Context as _;

use crate::cli::{Command, CrdsArgs, RunArgs};

/// Runs a subcommand; the exit code is what it reports (`diff`: 1 on drift).
pub async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let done = std::process::ExitCode::SUCCESS;
    match command {
        Command::Run(args) => run(*args).await.map(|()| done),
        Command::Crds(args) => crds(args).map(|()| done),
        Command::Publish(args) => crate::publish::run(args).await.map(|()| done),
        Command::Keygen(args) => crate::publish::keygen(args).map(|()| done),
        Command::Diff(args) => crate::local_diff::run(args).await,
        Command::Request(args) => crate::requests::request(args).await,
        Command::Approve(args) => crate::requests::review(args, "Approve").await.map(|()| done),
        Command::Deny(args) => crate::requests::review(args, "Deny").await.map(|()| done),
        Command::Revoke(args) => crate::requests::revoke(args).await.map(|()| done),
        Command::Ls(args) => crate::requests::list(args).await.map(|()| done),
        Command::Status(args) => crate::requests::status(args).await.map(|()| done),
        Command::Completion(args) => {
            use clap::CommandFactory as _;
            let mut cli = crate::cli::Cli::command();
            clap_complete::generate(args.shell, &mut cli, "driftwarden", &mut std::io::stdout());
            Ok(done)
        }
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = crate::connect::client(&args.cluster).await?;
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
