//! `cargo quickstart`: everything a newcomer needs to see the operator work,
//! with one command and no cluster of their own. The operator runs in this
//! process, as `driftwarden run` would, as the chart's ServiceAccount.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{Discovery, Scope};
use kube::{Client, ResourceExt};
use serde::Deserialize;
use tracing::info;

use crate::controlplane::audit::AuditWiring;
use crate::controlplane::{self, ControlPlane, User};
use clap::Args;
use driftwarden::cli::OperatorArgs;

/// What the quickstart runs: where its examples and files are, and the
/// operator's own flags.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Manifests to apply once the CRDs are installed (a file or a
    /// directory of .yaml files).
    #[arg(long, default_value = "examples/platform")]
    pub examples: PathBuf,

    /// A directory of manifests, as in Git, that the quickstart signs and
    /// publishes as CI would: into ConfigMap `<dir name>-desired-state` in
    /// the namespace named like the directory.
    #[arg(long, default_value = "examples/git/shop")]
    pub source: PathBuf,

    /// Where the local control plane keeps its certificates, kubeconfigs
    /// and logs.
    #[arg(long, default_value = ".driftwarden/quickstart")]
    pub dir: PathBuf,

    /// Use the cluster of this kubeconfig instead of a local control plane.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Run the operator as the chart's Deployment on a real local node
    /// (containerd, kubelet; root only) instead of in this process: builds
    /// the image without Docker, imports it and `helm install`s the chart
    /// with its defaults. Off by default: the first image build takes about
    /// ten minutes and the node needs root.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub node: bool,

    #[command(flatten)]
    pub operator: OperatorArgs,
}
const FIELD_MANAGER: &str = "driftwarden-quickstart";

pub async fn run(args: QuickstartArgs) -> anyhow::Result<()> {
    if args.node {
        return run_on_a_node(args).await;
    }
    // An explicitly named cluster is used as is; otherwise a throwaway local
    // one, never whatever ~/.kube/config happens to point at.
    let mut operator = args.operator;
    let (client, control_plane, wiring) = match &args.kubeconfig {
        Some(path) => {
            let config = driftwarden::connect::kubeconfig_file(path, &Default::default()).await?;
            (Client::try_from(config)?, None, None)
        }
        None => {
            let dir = std::path::absolute(&args.dir)?;
            info!(dir = %dir.display(), "no cluster configured: starting a local control plane");
            let _ = std::fs::remove_dir_all(dir.join("etcd-data"));
            // The local API server reaches the webhooks on loopback, and sends
            // its audit events there too (so drift is attributed exactly).
            let url = operator
                .webhook_url
                .get_or_insert_with(|| format!("https://127.0.0.1:{}", operator.webhook_addr.port()))
                .clone();
            let wiring = AuditWiring::prepare(&url, &operator.namespace, &dir)?;
            let options = controlplane::Options {
                controller_manager: true,
                dir: Some(dir),
                audit_webhook: Some(wiring.webhook.clone()),
                node: false,
            };
            let control_plane = ControlPlane::start(options).await.context("starting the local control plane")?;
            (control_plane.client(User::Admin).await?, Some(control_plane), Some(wiring))
        }
    };
    if let Some(cp) = &control_plane {
        info!(server = %cp.server_url(), "local control plane is ready");
        for user in [User::Admin, User::Alice, User::Carol, User::Mallory] {
            info!("  as {:<8} kubectl --kubeconfig {}", user.name(), cp.kubeconfig(user).display());
        }
    }

    driftwarden::operator::crds::install(&client, Duration::from_secs(60)).await?;
    info!("CRDs installed");
    let applied = apply_manifests(&client, &args.examples).await?;
    info!(objects = applied, from = %args.examples.display(), "examples applied");
    let published = publish_source(&client, &args.dir, &args.source).await?;
    info!(%published, from = %args.source.display(), "source signed and published, as CI would");

    if let Some(wiring) = &wiring {
        wiring.install(&client, &operator.namespace).await.context("storing the audit webhook's token")?;
    }
    let admin_kubeconfig = match (&args.kubeconfig, &control_plane) {
        (Some(path), _) => path.clone(),
        (None, Some(cp)) => cp.kubeconfig(User::Admin),
        (None, None) => bail!("no cluster to run against"),
    };
    let client =
        operator_client(&client, &admin_kubeconfig, (&operator.namespace, operator.webhook_url.as_deref()), &args.dir)
            .await?;
    let result = driftwarden::operator::run(client, operator, driftwarden::commands::shutdown_signal()).await;
    drop(control_plane);
    Ok(result?)
}

/// `--node`: the control plane with a node, the chart installed from the
/// image built here, the examples applied; runs until Ctrl-C.
async fn run_on_a_node(args: QuickstartArgs) -> anyhow::Result<()> {
    let dir = std::path::absolute(&args.dir)?;
    let _ = std::fs::remove_dir_all(dir.join("etcd-data"));
    info!("building the operator image (dev/image/build.sh; the first build takes about ten minutes)");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build.sh");
    let built = std::process::Command::new("bash").arg(&script).stderr(std::process::Stdio::inherit()).output()?;
    if !built.status.success() {
        bail!("{} exited with {}", script.display(), built.status);
    }
    let archive = PathBuf::from(String::from_utf8_lossy(&built.stdout).lines().last().unwrap_or_default().trim());
    info!(dir = %dir.display(), "starting a local control plane with a node");
    let options =
        controlplane::Options { controller_manager: true, node: true, dir: Some(dir.clone()), ..Default::default() };
    let cp = ControlPlane::start(options).await.context("starting the local control plane with a node")?;
    let node = cp.node().context("the control plane started no node")?;
    node.import_image(&archive)?;
    let client = cp.client(User::Admin).await?;

    let helm = controlplane::helm_binary()?;
    let chart = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/driftwarden");
    let namespace = &args.operator.namespace;
    info!(%namespace, "helm install driftwarden (the chart's defaults)");
    let installed = std::process::Command::new(&helm)
        .args(["install", "driftwarden"])
        .arg(&chart)
        .args(["--namespace", namespace, "--create-namespace", "--wait", "--timeout=5m", "--kubeconfig"])
        .arg(cp.kubeconfig(User::Admin))
        .env("HELM_CACHE_HOME", dir.join("helm/cache"))
        .env("HELM_CONFIG_HOME", dir.join("helm/config"))
        .env("HELM_DATA_HOME", dir.join("helm/data"))
        .status()?;
    if !installed.success() {
        bail!("helm install exited with {installed}");
    }
    info!("both replicas are Ready");
    let applied = apply_manifests(&client, &args.examples).await?;
    info!(objects = applied, from = %args.examples.display(), "examples applied");
    let published = publish_source(&client, &args.dir, &args.source).await?;
    info!(%published, from = %args.source.display(), "source signed and published, as CI would");
    info!(server = %cp.server_url(), "the operator runs as Pods: kubectl -n {namespace} get pods,lease");
    for user in [User::Admin, User::Alice, User::Carol, User::Mallory] {
        info!("  as {:<8} kubectl --kubeconfig {}", user.name(), cp.kubeconfig(user).display());
    }
    driftwarden::commands::shutdown_signal().await;
    info!("stopping: the node is torn down");
    drop(cp);
    Ok(())
}

/// Plays the CI job: a signing key (made once, kept in `dir`) that a
/// PublisherKey trusts signs and publishes the manifests in `source`.
async fn publish_source(client: &Client, dir: &Path, source: &Path) -> anyhow::Result<String> {
    use driftwarden::drift::signature::signing_key_from_pem;
    std::fs::create_dir_all(dir)?;
    let base = dir.join("publisher");
    if !base.with_extension("key").exists() {
        driftwarden::publish::write_key_pair(&base)?;
    }
    let private = std::fs::read_to_string(base.with_extension("key"))?;
    let public = std::fs::read_to_string(base.with_extension("pub"))?;
    let key = signing_key_from_pem(&private).context("reading the quickstart's signing key")?;
    let trusted: DynamicObject =
        serde_yaml_ng::from_str(&driftwarden::publish::publisher_key_yaml("quickstart", &public))?;
    let keys: Api<DynamicObject> =
        Api::all_with(client.clone(), &kube::core::ApiResource::erase::<driftwarden::api::PublisherKey>(&()));
    keys.patch("quickstart", &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&trusted))
        .await
        .context("trusting the quickstart's signing key")?;
    let files =
        driftwarden::publish::read_manifest_dir(source).with_context(|| format!("reading {}", source.display()))?;
    let namespace = source.file_name().and_then(|n| n.to_str()).context("the source directory has no name")?;
    let revision = driftwarden::publish::git_revision(source);
    let name = format!("{namespace}-desired-state");
    driftwarden::publish::publish_files(client, &files, &name, namespace, revision.as_deref(), Some(&key)).await
}

/// The operator's client: its own ServiceAccount under the RBAC and status
/// admission policy the chart renders with its default values, as in a
/// cluster; never the admin who set the quickstart up (the admin's writes
/// would be taken for the operator's own).
async fn operator_client(
    admin: &Client,
    admin_kubeconfig: &Path,
    (namespace, webhook_url): (&str, Option<&str>),
    work: &Path,
) -> anyhow::Result<Client> {
    use crate::controlplane::operator::{chart_dir, client_with_token, install_chart_identity};
    let values = chart_dir().join("values.yaml");
    std::fs::create_dir_all(work)?;
    let (account, token) =
        install_chart_identity(admin, namespace, (&values, webhook_url), &std::path::absolute(work)?)
            .await
            .context("installing the chart's ServiceAccount, RBAC and status policy for the operator")?;
    info!(%account, %namespace, "the operator runs as the chart's ServiceAccount, under the chart's RBAC");
    let config = driftwarden::connect::kubeconfig_file(admin_kubeconfig, &Default::default()).await?;
    client_with_token(config, token)
}

/// Server-side applies every object in a YAML file or a directory of them;
/// Namespaces go first so that the objects in them can follow.
pub async fn apply_manifests(client: &Client, path: &Path) -> anyhow::Result<usize> {
    let mut objects = Vec::new();
    for file in yaml_files(path)? {
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        for (index, document) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let value = serde_json::Value::deserialize(document)
                .with_context(|| format!("{}: document {index} is not valid YAML", file.display()))?;
            if value.is_null() {
                continue;
            }
            let object: DynamicObject = serde_json::from_value(value)
                .with_context(|| format!("{}: document {index} is not a Kubernetes object", file.display()))?;
            objects.push((file.clone(), object));
        }
    }
    objects.sort_by_key(|(_, object)| object.types.as_ref().is_none_or(|t| t.kind != "Namespace"));

    let discovery = Discovery::new(client.clone()).run().await.context("discovering the API server's resources")?;
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for (file, object) in &objects {
        let Some(types) = &object.types else { bail!("{}: an object has no apiVersion/kind", file.display()) };
        let gvk = kube::api::GroupVersionKind::try_from(types)
            .with_context(|| format!("{}: bad apiVersion", file.display()))?;
        let Some((resource, capabilities)) = discovery.resolve_gvk(&gvk) else {
            bail!("{}: the cluster does not serve {}/{}", file.display(), types.api_version, types.kind)
        };
        let api: Api<DynamicObject> = match capabilities.scope {
            Scope::Namespaced => {
                Api::namespaced_with(client.clone(), &object.namespace().unwrap_or_else(|| "default".into()), &resource)
            }
            Scope::Cluster => Api::all_with(client.clone(), &resource),
        };
        api.patch(&object.name_any(), &params, &Patch::Apply(object))
            .await
            .with_context(|| format!("{}: applying {} {}", file.display(), types.kind, object.name_any()))?;
    }
    Ok(objects.len())
}

fn yaml_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("reading {}", path.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
        .collect();
    files.sort();
    Ok(files)
}
