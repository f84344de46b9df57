//! What each subcommand does: turn parsed arguments into calls on the
//! library. Nothing here decides anything; it wires config to code.

use std::path::Path;

use anyhow::Context as _;
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::cli::{ClusterArgs, Command, CrdsArgs, KeygenArgs, PublishArgs, RunArgs};

/// Runs a subcommand; the exit code is what it reports (`diff`: 1 on drift).
pub async fn dispatch(command: Command) -> anyhow::Result<std::process::ExitCode> {
    let done = std::process::ExitCode::SUCCESS;
    match command {
        Command::Run(args) => run(*args).await.map(|()| done),
        Command::Crds(args) => crds(args).map(|()| done),
        Command::Publish(args) => publish(args).await.map(|()| done),
        Command::Keygen(args) => keygen(args).map(|()| done),
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

/// The environment variable that holds the signing key itself (a CI secret).
pub const SIGNING_KEY_ENV: &str = "DRIFTWARDEN_SIGNING_KEY";

/// The key to sign with: `--signing-key FILE`, else DRIFTWARDEN_SIGNING_KEY,
/// else none (an error unless `--unsigned`).
fn signing_key(args: &PublishArgs) -> anyhow::Result<Option<ed25519_dalek::SigningKey>> {
    use crate::drift::signature::signing_key_from_pem;
    let pem = match (&args.signing_key, std::env::var(SIGNING_KEY_ENV)) {
        (Some(path), _) => std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        (None, Ok(pem)) if !pem.trim().is_empty() => pem,
        _ if args.unsigned => return Ok(None),
        _ => anyhow::bail!(
            "no signing key: pass --signing-key FILE or set {SIGNING_KEY_ENV} (make a key pair with `driftwarden keygen`); \
             --unsigned publishes without one, for an operator that does not verify"
        ),
    };
    Ok(Some(signing_key_from_pem(&pem).context("reading the signing key")?))
}

async fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let key = signing_key(&args)?;
    let files = crate::publish::read_manifests(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?;
    if let Err(errors) = crate::publish::check(&args.dir.display().to_string(), &files) {
        for error in &errors.0 {
            eprintln!("error: {error}");
        }
        anyhow::bail!("{} problem(s) in {}; nothing was published", errors.0.len(), args.dir.display());
    }
    let revision = match args.revision {
        Some(revision) => Some(revision),
        // A stream on standard input comes from the checkout we run in.
        None if args.dir == Path::new("-") => git_revision(Path::new(".")),
        None => git_revision(&args.dir),
    };
    let client = client(&args.cluster).await?;
    let namespace = args.namespace.unwrap_or_else(|| client.default_namespace().to_owned());
    let summary =
        publish_files(&client, &files, &args.configmap, &namespace, revision.as_deref(), key.as_ref()).await?;
    println!("published {} files from {}: {summary}", files.len(), args.dir.display());
    Ok(())
}

/// Packs `files` into the source ConfigMaps `name`, `name-1`, ... in
/// `namespace`, signs them with `key` (unless None), and applies what
/// changed. Returns a one-line summary.
pub async fn publish_files(
    client: &Client,
    files: &[crate::publish::ManifestFile],
    name: &str,
    namespace: &str,
    revision: Option<&str>,
    key: Option<&ed25519_dalek::SigningKey>,
) -> anyhow::Result<String> {
    use crate::publish::{SOURCE_LABEL, live_sequence, pack, sign, signed_unchanged, unchanged};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

    if let Some(revision) = revision {
        crate::drift::source::validate_revision(revision).map_err(|e| anyhow::anyhow!("revision {revision:?}: {e}"))?;
    }
    let mut desired = pack(files, name, namespace, revision)?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let selector = format!("{SOURCE_LABEL}={name}");
    let live = api.list(&ListParams::default().labels(&selector)).await?.items;
    // A signed set is one unit: unchanged as a whole, or re-signed with a
    // higher sequence and every ConfigMap written.
    let rewrite_all = match key {
        Some(key) if signed_unchanged(&live, &desired, &key.verifying_key(), namespace) => false,
        Some(key) => {
            let now = u64::try_from(k8s_openapi::jiff::Timestamp::now().as_millisecond()).unwrap_or(0);
            let sequence = now.max(live_sequence(&live) + 1);
            sign(&mut desired, key, namespace, sequence);
            true
        }
        None => false,
    };
    let params = PatchParams::apply("driftwarden-publish").force();
    let (mut applied, mut kept) = (0, 0);
    for config_map in &desired {
        let name = config_map.metadata.name.clone().unwrap_or_default();
        let current = live.iter().find(|l| l.metadata.name.as_deref() == Some(name.as_str()));
        let keep = match key {
            Some(_) => !rewrite_all,
            None => current.is_some_and(|live| unchanged(live, config_map)),
        };
        if keep {
            kept += 1;
            continue;
        }
        let mut body = serde_json::to_value(config_map)?;
        body["apiVersion"] = "v1".into();
        body["kind"] = "ConfigMap".into();
        api.patch(&name, &params, &Patch::Apply(body)).await.with_context(|| format!("applying ConfigMap {name}"))?;
        applied += 1;
    }
    // Chunks a smaller state no longer needs.
    let mut removed = 0;
    for stale in live {
        let name = stale.metadata.name.unwrap_or_default();
        if !desired.iter().any(|d| d.metadata.name.as_deref() == Some(&name)) {
            api.delete(&name, &DeleteParams::default()).await?;
            removed += 1;
        }
    }
    let signed = match key {
        Some(key) => format!("signed by key {}", crate::drift::signature::key_id(&key.verifying_key())),
        None => "UNSIGNED".to_owned(),
    };
    Ok(format!(
        "{} ConfigMap(s) in {namespace} at revision {}, {signed}: {applied} written, {kept} unchanged, {removed} removed",
        desired.len(),
        revision.unwrap_or("<none>")
    ))
}

fn keygen(args: KeygenArgs) -> anyhow::Result<()> {
    let public = write_key_pair(&args.out)?;
    print!("{}", publisher_key_yaml(&args.name, &public));
    Ok(())
}

/// A fresh key pair in `out`.key (0600) and `out`.pub; returns the public PEM.
pub fn write_key_pair(out: &Path) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    let (private, public) = crate::drift::signature::key_pair_pem(&seed);
    let private_path = out.with_extension("key");
    let public_path = out.with_extension("pub");
    let create = |path: &Path, mode: u32| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .with_context(|| format!("creating {} (it must not exist yet)", path.display()))
    };
    create(&private_path, 0o600)?.write_all(private.as_bytes())?;
    create(&public_path, 0o644)?.write_all(public.as_bytes())?;
    let key = crate::drift::signature::verifying_key_from_pem(&public)?;
    eprintln!(
        "wrote {} (keep it secret: a CI secret for `driftwarden publish`) and {}; key id {}",
        private_path.display(),
        public_path.display(),
        crate::drift::signature::key_id(&key)
    );
    Ok(public)
}

/// A PublisherKey trusting `public` in every namespace, as YAML to apply.
pub fn publisher_key_yaml(name: &str, public: &str) -> String {
    let indented: String = public.lines().map(|line| format!("    {line}\n")).collect();
    format!(
        "apiVersion: driftwarden.io/v1alpha1\nkind: PublisherKey\nmetadata:\n  name: {name}\nspec:\n  # Narrow this to the namespaces the key may sign for.\n  namespaceSelector: {{}}\n  publicKey: |\n{indented}"
    )
}

/// The commit checked out in `dir`, if it is in a Git repository.
pub fn git_revision(dir: &Path) -> Option<String> {
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
