//! A local control plane with the operator running against it the way a
//! cluster runs it: as the Helm chart's ServiceAccount, with exactly the RBAC
//! the chart renders (least privilege, not system:masters), and its admission
//! webhooks and the API server's audit webhook wired to it. The operator
//! tests and the benchmarks use it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use serde::Deserialize as _;
use serde_json::Value;

use super::audit::AuditWiring;
use super::{ControlPlane, Options, Supervisor, User};
use driftwarden::api::AccessRequest;

/// The operator's namespace in this environment.
pub const OPERATOR_NAMESPACE: &str = "driftwarden-system";
/// The Helm release the chart is rendered as (its objects are named after it).
pub const RELEASE: &str = "driftwarden";
/// The values the chart is rendered with, in [`fixtures_dir`]: the kinds the
/// tests' DesiredStates manage and observe, and the roles policies grant.
pub const CHART_VALUES: &str = "chart-values-operator-tests.yaml";
/// What the harness (and the quickstart) take from the rendered chart: the
/// operator's identity, its RBAC, the admission policy that lets only that
/// identity write status, and the webhook configurations the operator may
/// only patch. (The Deployment needs a kubelet; the operator runs as a
/// process, which the API server calls at `webhook.url`.)
const RBAC_KINDS: &[&str] = &[
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];
/// The identity of the first replica in the leader Lease.
const PRIMARY: &str = "driftwarden-0";
/// The PublisherKey the environment trusts in every namespace.
pub const PUBLISHER_KEY: &str = "tests";

/// The CI job of this environment: it holds the one signing key the
/// operator trusts, and signs source ConfigMaps as `driftwarden publish` does.
pub struct Publisher {
    key: ed25519_dalek::SigningKey,
    sequence: std::sync::atomic::AtomicU64,
}

impl Publisher {
    fn new() -> anyhow::Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let start = u64::try_from(k8s_openapi::jiff::Timestamp::now().as_millisecond()).unwrap_or(1);
        Ok(Self { key: ed25519_dalek::SigningKey::from_bytes(&seed), sequence: start.into() })
    }

    pub fn key(&self) -> &ed25519_dalek::SigningKey {
        &self.key
    }

    /// A sequence higher than every one handed out before.
    pub fn next_sequence(&self) -> u64 {
        self.sequence.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }

    /// Signs one source set for `namespace`.
    pub fn sign(&self, namespace: &str, config_maps: &mut [k8s_openapi::api::core::v1::ConfigMap]) {
        driftwarden::drift::pack::sign(config_maps, &self.key, namespace, self.next_sequence());
    }

    /// The PublisherKey (trusted everywhere) as the platform team would apply it.
    pub fn publisher_key(&self, name: &str) -> Value {
        use ed25519_dalek::pkcs8::EncodePublicKey as _;
        let public = self.key.verifying_key().to_public_key_pem(Default::default()).unwrap_or_default();
        serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "PublisherKey", "metadata": {"name": name},
            "spec": {"namespaceSelector": {}, "publicKey": public},
        })
    }
}

/// The control plane and the operator process that runs against it.
pub struct OperatorEnv {
    pub cp: ControlPlane,
    /// Port of the operator's /healthz, /readyz and /metrics.
    pub http_port: u16,
    pub webhook_port: u16,
    /// The chart's ServiceAccount the operator authenticates as.
    pub service_account: String,
    /// Signs sources with the key PublisherKey [`PUBLISHER_KEY`] trusts.
    pub publisher: Publisher,
    binary: PathBuf,
    kubeconfig: PathBuf,
    supervisor: Supervisor,
    /// Holds the CA file the API server's audit webhook trusts.
    _files: tempfile::TempDir,
}

/// A second operator process (a standby replica, for leader election).
pub struct Replica {
    pub name: String,
    pub http_port: u16,
    pub log: PathBuf,
}

/// The repository's test fixtures (chart values, RBAC for users).
pub fn fixtures_dir() -> PathBuf {
    crate::repo_root().join("tests/data")
}

/// The Helm chart.
pub fn chart_dir() -> PathBuf {
    crate::repo_root().join("charts/driftwarden")
}

/// `helm template` of the chart as [`RELEASE`] in [`OPERATOR_NAMESPACE`]
/// with [`CHART_VALUES`], keeping only the ServiceAccount, roles and
/// bindings, with the namespace in front. `home` keeps helm's cache and
/// configuration out of $HOME.
pub fn chart_rbac(home: &Path) -> anyhow::Result<Vec<Value>> {
    chart_identity(home, OPERATOR_NAMESPACE, &fixtures_dir().join(CHART_VALUES), None)
}

/// The chart rendered by helm (release [`RELEASE`] in `namespace`, with
/// `values`, the webhooks at `webhook_url` when the operator runs outside
/// the cluster), reduced to what gives the operator its identity: the
/// namespace, ServiceAccount, RBAC, status admission policy and webhook
/// configurations.
pub fn chart_identity(
    home: &Path,
    namespace: &str,
    values: &Path,
    webhook_url: Option<&str>,
) -> anyhow::Result<Vec<Value>> {
    let helm = super::helm_binary()?;
    let mut command = Command::new(&helm);
    command.args(["template", RELEASE]).arg(chart_dir()).args(["--namespace", namespace, "--values"]).arg(values);
    if let Some(url) = webhook_url {
        command.args(["--set", &format!("webhook.url={url}")]);
    }
    for (var, dir) in [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")] {
        command.env(var, home.join(dir));
    }
    let output = command.output().with_context(|| format!("running {}", helm.display()))?;
    if !output.status.success() {
        bail!("helm template of the chart failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let rendered = String::from_utf8(output.stdout).context("helm template printed non-UTF-8")?;
    let mut objects = vec![serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace},
    })];
    for document in serde_yaml_ng::Deserializer::from_str(&rendered) {
        let object = Value::deserialize(document).context("helm template printed invalid YAML")?;
        if object["kind"].as_str().is_some_and(|kind| RBAC_KINDS.contains(&kind)) {
            objects.push(object);
        }
    }
    for kind in RBAC_KINDS {
        if !objects.iter().any(|o| o["kind"] == *kind) {
            bail!("the chart rendered no {kind}");
        }
    }
    Ok(objects)
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl OperatorEnv {
    /// Starts a control plane, installs the CRDs and the RBAC fixtures, and
    /// runs `binary` (the `driftwarden` executable) as the operator.
    pub async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        Self::start_with(binary, true).await
    }

    /// [`Self::start`], with or without the API server's audit webhook:
    /// without it the cluster is like a managed one (EKS, GKE, AKS), where
    /// the API server's flags cannot be set, and only the operator's
    /// admission write log says who wrote what.
    pub async fn start_with(binary: PathBuf, audit: bool) -> anyhow::Result<Self> {
        // The API server's audit webhook is configured before it starts, so
        // the webhook certificate (and the CA it trusts) and the audit token
        // are made first and handed to the operator through its Secrets.
        let webhook_port = free_port()?;
        let files = tempfile::tempdir()?;
        let wiring =
            AuditWiring::prepare(&format!("https://127.0.0.1:{webhook_port}"), OPERATOR_NAMESPACE, files.path())?;
        let options = Options {
            controller_manager: true,
            audit_webhook: audit.then(|| wiring.webhook.clone()),
            ..Default::default()
        };
        let cp = ControlPlane::start(options).await?;
        let admin = cp.client(User::Admin).await?;
        driftwarden::operator::crds::install(&admin, Duration::from_secs(60)).await?;
        // The operator's identity and RBAC are the chart's, rendered by helm.
        let values = fixtures_dir().join(CHART_VALUES);
        let url = format!("https://127.0.0.1:{webhook_port}");
        let (service_account, token) =
            install_chart_identity(&admin, OPERATOR_NAMESPACE, (&values, Some(&url)), files.path()).await?;
        crate::quickstart::apply_manifests(&admin, &fixtures_dir().join("user-roles.yaml")).await?;
        wiring.install(&admin, OPERATOR_NAMESPACE).await.context("storing the webhook certificate and audit token")?;
        let publisher = Publisher::new()?;
        let key: DynamicObject = serde_json::from_value(publisher.publisher_key(PUBLISHER_KEY))?;
        Api::<DynamicObject>::all_with(admin.clone(), &ApiResource::erase::<driftwarden::api::PublisherKey>(&()))
            .create(&PostParams::default(), &key)
            .await
            .context("trusting the publisher's key")?;
        let kubeconfig = cp.write_kubeconfig("operator", &token)?;
        let env = Self {
            cp,
            http_port: free_port()?,
            webhook_port,
            service_account,
            publisher,
            binary,
            kubeconfig,
            supervisor: Supervisor::new()?,
            _files: files,
        };
        env.start_operator()?;
        env.wait_until_serving().await?;
        Ok(env)
    }

    /// The kubeconfig the operator runs with (the chart ServiceAccount's token).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The operator's log file.
    pub fn log(&self) -> PathBuf {
        self.cp.dir().join("operator.log")
    }

    /// Starts the operator process (again), as the first replica.
    pub fn start_operator(&self) -> std::io::Result<()> {
        self.spawn(PRIMARY, self.http_port, self.webhook_port, self.log())
    }

    /// Starts another replica: its own ports and identity, the same
    /// credentials; it configures the first replica's webhook URL (a Service
    /// in a cluster), so the two never fight over the configurations.
    pub fn start_replica(&self, name: &str) -> std::io::Result<Replica> {
        let replica =
            Replica { name: name.into(), http_port: free_port()?, log: self.cp.dir().join(format!("{name}.log")) };
        self.spawn(name, replica.http_port, free_port()?, replica.log.clone())?;
        Ok(replica)
    }

    fn spawn(&self, identity: &str, http_port: u16, webhook_port: u16, log: PathBuf) -> std::io::Result<()> {
        let mut command = Command::new(&self.binary);
        let url = format!("https://127.0.0.1:{}", self.webhook_port);
        command
            .args(["run", "--log-format", "json", "--namespace", OPERATOR_NAMESPACE, "--sweep-interval", "5s"])
            .args(["--http-addr", &format!("127.0.0.1:{http_port}")])
            .args(["--webhook-addr", &format!("127.0.0.1:{webhook_port}"), "--webhook-url", &url])
            // The write-log webhook reaches the leader itself (in a cluster,
            // the Service that selects the leader's Pod).
            .args(["--writes-url", &format!("https://127.0.0.1:{webhook_port}")])
            .args(["--pod-name", identity])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", std::env::var("DRIFTWARDEN_OPERATOR_LOG").unwrap_or_else(|_| "info".into()));
        let process = if identity == PRIMARY { "driftwarden".to_owned() } else { format!("driftwarden-{identity}") };
        self.supervisor.spawn(&process, command, log).map(drop)
    }

    /// Stops a replica the way Kubernetes stops a Pod (SIGTERM): it hands
    /// its lease over.
    pub fn stop_replica(&self, replica: &Replica) {
        self.supervisor.stop(&format!("driftwarden-{}", replica.name));
    }

    /// SIGKILLs a replica started with [`Self::start_replica`].
    pub fn kill_replica(&self, replica: &Replica) {
        self.supervisor.kill(&format!("driftwarden-{}", replica.name));
    }

    /// SIGKILL, as a crash or an evicted Pod would end it.
    pub fn kill_operator(&self) {
        self.supervisor.kill("driftwarden");
    }

    /// Whether the operator process has exited.
    pub fn operator_exited(&self) -> bool {
        self.supervisor.exited("driftwarden").is_some()
    }

    /// Waits until the operator answers admission: a server-side dry run in
    /// its own namespace, which no policy covers, is refused by its
    /// validating webhook after its mutating webhook stamped the requester.
    pub async fn wait_until_serving(&self) -> anyhow::Result<()> {
        let admin = self.cp.client(User::Admin).await?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(admin, OPERATOR_NAMESPACE, &ApiResource::erase::<AccessRequest>(&()));
        let probe: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest", "metadata": {"name": "readiness-probe"},
            "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "1m", "reason": "probing the admission webhooks"},
        }))?;
        let params = PostParams { dry_run: true, ..Default::default() };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match api.create(&params, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains("no AccessPolicy covers namespace") => {
                    return Ok(());
                }
                _ if tokio::time::Instant::now() > deadline => {
                    bail!("the operator's webhooks did not answer within 60s; see {}", self.log().display())
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// A token of `name` in the operator's namespace, by TokenRequest, as the
/// kubelet would mount it into the operator's Pod.
/// Installs the operator's identity as the chart renders it with `values`
/// (see [`chart_identity`]) in `namespace`, and issues a token (valid 24 h)
/// for its ServiceAccount. Returns the ServiceAccount's name and the token.
/// `work` is a scratch directory (helm's home, the rendered objects).
pub async fn install_chart_identity(
    admin: &kube::Client,
    namespace: &str,
    (values, webhook_url): (&Path, Option<&str>),
    work: &Path,
) -> anyhow::Result<(String, String)> {
    let (home, ns, values_file) = (work.join("helm"), namespace.to_owned(), values.to_owned());
    let url = webhook_url.map(str::to_owned);
    let identity =
        tokio::task::spawn_blocking(move || chart_identity(&home, &ns, &values_file, url.as_deref())).await??;
    let service_account = identity
        .iter()
        .find(|o| o["kind"] == "ServiceAccount")
        .and_then(|o| o["metadata"]["name"].as_str())
        .context("the chart's ServiceAccount has no name")?
        .to_owned();
    let rendered = work.join("chart-identity.yaml");
    let yaml = identity.iter().map(serde_yaml_ng::to_string).collect::<Result<Vec<_>, _>>()?.join("---\n");
    std::fs::write(&rendered, yaml)?;
    crate::quickstart::apply_manifests(admin, &rendered).await?;
    let token = service_account_token(admin, namespace, &service_account).await?;
    Ok((service_account, token))
}

/// A client for the same cluster as `admin`, authenticated by `token`.
pub fn client_with_token(mut admin: kube::Config, token: String) -> anyhow::Result<kube::Client> {
    admin.auth_info = kube::config::AuthInfo { token: Some(token.into()), ..Default::default() };
    Ok(kube::Client::try_from(admin)?)
}

async fn service_account_token(admin: &kube::Client, namespace: &str, name: &str) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 86400}}))?;
    let issued = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("issuing a token for the chart's ServiceAccount {name}"))?;
    issued.status.map(|s| s.token).context("the TokenRequest returned no token")
}
