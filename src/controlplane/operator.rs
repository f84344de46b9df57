//! A local control plane with the operator running against it the way a
//! cluster runs it: as the ServiceAccount of `tests/data/operator-rbac.yaml`
//! (least privilege, not system:masters), with its admission webhooks wired
//! into the API server. The access tests and the benchmarks use it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;

use super::{ControlPlane, Options, Supervisor, User};
use crate::api::AccessRequest;

/// The operator's namespace in this environment.
pub const OPERATOR_NAMESPACE: &str = "driftwarden-system";
const SERVICE_ACCOUNT: &str = "driftwarden";

/// The control plane and the operator process that runs against it.
pub struct OperatorEnv {
    pub cp: ControlPlane,
    /// Port of the operator's /healthz, /readyz and /metrics.
    pub http_port: u16,
    pub webhook_port: u16,
    binary: PathBuf,
    kubeconfig: PathBuf,
    supervisor: Supervisor,
}

/// The repository's test fixtures (RBAC for the operator and for users).
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl OperatorEnv {
    /// Starts a control plane, installs the CRDs and the RBAC fixtures, and
    /// runs `binary` (the `driftwarden` executable) as the operator.
    pub async fn start(binary: PathBuf) -> anyhow::Result<Self> {
        let options = Options { controller_manager: true, ..Default::default() };
        let cp = ControlPlane::start(options).await?;
        let admin = cp.client(User::Admin).await?;
        crate::operator::crds::install(&admin, Duration::from_secs(60)).await?;
        for fixture in ["operator-rbac.yaml", "user-roles.yaml"] {
            crate::quickstart::apply_manifests(&admin, &fixtures_dir().join(fixture)).await?;
        }
        let token = service_account_token(&admin).await?;
        let kubeconfig = cp.write_kubeconfig("operator", &token)?;
        let env = Self {
            cp,
            http_port: free_port()?,
            webhook_port: free_port()?,
            binary,
            kubeconfig,
            supervisor: Supervisor::new()?,
        };
        env.start_operator()?;
        env.wait_until_serving().await?;
        Ok(env)
    }

    /// The operator's log file.
    pub fn log(&self) -> PathBuf {
        self.cp.dir().join("operator.log")
    }

    /// Starts the operator process (again).
    pub fn start_operator(&self) -> std::io::Result<()> {
        let mut command = Command::new(&self.binary);
        let webhook = format!("127.0.0.1:{}", self.webhook_port);
        command
            .args(["run", "--log-format", "json", "--namespace", OPERATOR_NAMESPACE, "--sweep-interval", "5s"])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--webhook-addr", &webhook, "--webhook-url", &format!("https://{webhook}")])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", std::env::var("DRIFTWARDEN_OPERATOR_LOG").unwrap_or_else(|_| "info".into()));
        self.supervisor.spawn("driftwarden", command, self.log()).map(drop)
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

async fn service_account_token(admin: &kube::Client) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 86400}}))?;
    let issued = accounts
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .context("issuing a token for the operator's ServiceAccount")?;
    issued.status.map(|s| s.token).context("the TokenRequest returned no token")
}
