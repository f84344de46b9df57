//! A second control plane with the operator running against it, as the
//! ServiceAccount of `tests/data/operator-rbac.yaml` (not system:masters),
//! with its admission webhooks wired into the API server.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use driftwarden::api::AccessRequest;
use driftwarden::controlplane::{self, ControlPlane, Supervisor, User};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;

use super::{access_request, eventually};

pub const OPERATOR_NAMESPACE: &str = "driftwarden-system";

/// The control plane and the operator process that runs against it.
pub struct OperatorEnv {
    pub cp: ControlPlane,
    pub http_port: u16,
    pub webhook_port: u16,
    kubeconfig: PathBuf,
    supervisor: Supervisor,
}

static ENV: OnceLock<Result<OperatorEnv, String>> = OnceLock::new();

/// Tests that need the operator up hold this for reading; a test that stops
/// it holds it for writing, so it never pulls the operator from under others.
pub static OPERATOR: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The shared operator environment, started on first use.
pub fn operator_env() -> &'static OperatorEnv {
    let started = ENV.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            runtime.block_on(OperatorEnv::start())
        })
        .join()
        .unwrap_or_else(|_| Err("starting the operator environment panicked".into()))
    });
    match started {
        Ok(env) => env,
        Err(err) => panic!("the operator environment did not start: {err}"),
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl OperatorEnv {
    async fn start() -> Result<Self, String> {
        let options = controlplane::Options { controller_manager: true, ..Default::default() };
        let cp = ControlPlane::start(options).await.map_err(|e| e.to_string())?;
        let admin = cp.client(User::Admin).await.map_err(|e| e.to_string())?;
        driftwarden::operator::crds::install(&admin, Duration::from_secs(60)).await.map_err(|e| e.to_string())?;
        let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
        for fixture in ["operator-rbac.yaml", "user-roles.yaml"] {
            driftwarden::quickstart::apply_manifests(&admin, &data.join(fixture))
                .await
                .map_err(|e| format!("{e:#}"))?;
        }
        let token = service_account_token(&admin).await?;
        let kubeconfig = cp.write_kubeconfig("operator", &token).map_err(|e| e.to_string())?;
        let env = Self {
            cp,
            http_port: free_port(),
            webhook_port: free_port(),
            kubeconfig,
            supervisor: Supervisor::new().map_err(|e| e.to_string())?,
        };
        env.start_operator();
        env.wait_until_serving().await?;
        eprintln!("operator serving at 127.0.0.1:{} (logs: {})", env.http_port, env.log().display());
        Ok(env)
    }

    pub fn log(&self) -> PathBuf {
        self.cp.dir().join("operator.log")
    }

    /// Starts the operator process (again).
    pub fn start_operator(&self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
        let webhook = format!("127.0.0.1:{}", self.webhook_port);
        command
            .args(["run", "--log-format", "json", "--namespace", OPERATOR_NAMESPACE, "--sweep-interval", "5s"])
            .args(["--http-addr", &format!("127.0.0.1:{}", self.http_port)])
            .args(["--webhook-addr", &webhook, "--webhook-url", &format!("https://{webhook}")])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,driftwarden=debug");
        self.supervisor.spawn("driftwarden", command, self.log()).expect("starting the operator");
    }

    /// SIGKILL, as a crash or an evicted Pod would end it.
    pub fn kill_operator(&self) {
        self.supervisor.kill("driftwarden");
    }

    /// Waits until the operator answers admission: a server-side dry run in
    /// its own namespace, which no policy covers, is refused by its
    /// validating webhook after its mutating webhook stamped the requester.
    pub async fn wait_until_serving(&self) -> Result<(), String> {
        let admin = self.cp.client(User::Admin).await.map_err(|e| e.to_string())?;
        let api: Api<DynamicObject> =
            Api::namespaced_with(admin, OPERATOR_NAMESPACE, &ApiResource::erase::<AccessRequest>(&()));
        let probe = access_request("readiness-probe", None, "edit", "1m", "probing the admission webhooks");
        let params = PostParams { dry_run: true, ..Default::default() };
        let serving = eventually(Duration::from_secs(60), || async {
            match api.create(&params, &probe).await {
                Err(kube::Error::Api(status)) if status.message.contains("no AccessPolicy covers namespace") => {
                    Some(())
                }
                _ => None,
            }
        })
        .await;
        serving
            .ok_or_else(|| format!("the operator's webhooks did not answer within 60s; see {}", self.log().display()))
    }
}

async fn service_account_token(admin: &kube::Client) -> Result<String, String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), OPERATOR_NAMESPACE);
    let request: TokenRequest =
        serde_json::from_value(serde_json::json!({"spec": {"audiences": [], "expirationSeconds": 86400}}))
            .map_err(|e| e.to_string())?;
    let issued = accounts
        .create_token_request("driftwarden", &PostParams::default(), &request)
        .await
        .map_err(|e| e.to_string())?;
    issued.status.map(|s| s.token).ok_or_else(|| "the TokenRequest returned no token".into())
}
