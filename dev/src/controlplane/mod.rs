//! A real, local Kubernetes control plane: etcd, kube-apiserver and
//! (optionally) kube-controller-manager, started on 127.0.0.1 from binaries
//! built from the official Go modules. Integration tests and the quickstart
//! run against it; it is not part of the operator itself.

pub mod audit;
mod binaries;
mod flags;
pub mod node;
pub mod operator;
pub mod supervisor;
mod users;

pub use binaries::{
    ALERTMANAGER_ENV, BIN_DIR_ENV, HELM_ENV, KUBERNETES_VERSION, PROMETHEUS_ENV, alertmanager as alertmanager_binary,
    ensure as binary_dir, helm as helm_binary, prometheus as prometheus_binary,
};
pub use flags::AuditWebhook;
pub use supervisor::Supervisor;
pub use users::User;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tracing::instrument::WithSubscriber as _;

use driftwarden::pki::CertificateAuthority;
use flags::Layout;

/// How long each component gets to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("building the control plane binaries or helm failed: {0}")]
    Build(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("generating certificates: {0}")]
    Pki(#[from] rcgen::Error),
    #[error("{component} exited with {status} before it was ready; last lines of {log}:\n{tail}")]
    Exited { component: &'static str, status: std::process::ExitStatus, log: String, tail: String },
    #[error("{component} was not ready after {timeout:?}; last lines of {log}:\n{tail}")]
    NotReady { component: &'static str, timeout: Duration, log: String, tail: String },
    #[error("building a client for {user}: {source}")]
    Client { user: &'static str, source: Box<dyn std::error::Error + Send + Sync> },
}

impl Error {
    /// A component that exited before it was ready, with its log's tail.
    fn exited(component: &'static str, status: std::process::ExitStatus, log: &Path) -> Self {
        Error::Exited { component, status, log: log.display().to_string(), tail: supervisor::tail(log, 30) }
    }

    /// A component not ready after [`READY_TIMEOUT`], with its log's tail.
    fn not_ready(component: &'static str, log: &Path) -> Self {
        Error::NotReady {
            component,
            timeout: READY_TIMEOUT,
            log: log.display().to_string(),
            tail: supervisor::tail(log, 30),
        }
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// What to start.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Also run kube-controller-manager (garbage collection, namespace
    /// deletion, service accounts).
    pub controller_manager: bool,
    /// Send audit events to this receiver.
    pub audit_webhook: Option<AuditWebhook>,
    /// Keep certificates, kubeconfigs and logs here instead of in a fresh
    /// temporary directory that is removed when the control plane stops.
    pub dir: Option<PathBuf>,
    /// Also run a real node (containerd, kubelet, kube-scheduler,
    /// kube-proxy), so Deployments run as Pods; implies the controller
    /// manager. Needs root (see [`node`]).
    pub node: bool,
}

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    layout: Layout,
    audit: Option<AuditWebhook>,
    bin_dir: PathBuf,
    tokens: BTreeMap<User, String>,
    ca: CertificateAuthority,
    // Declared first: the node stops before the API server it reports to.
    node: Option<node::Node>,
    // Declared before `temp_dir`: processes stop before their files go.
    supervisor: Supervisor,
    _temp_dir: Option<tempfile::TempDir>,
}

impl ControlPlane {
    /// Builds the binaries if needed, writes certificates and credentials,
    /// starts the components and waits until the API server is ready.
    pub async fn start(options: Options) -> Result<Self, Error> {
        let bin_dir =
            tokio::task::spawn_blocking(binaries::ensure).await.map_err(|e| Error::Build(e.to_string()))??;
        let node_side = match options.node {
            true => {
                let node_bin_dir = tokio::task::spawn_blocking(|| {
                    node::ensure_packages()?;
                    binaries::node()
                })
                .await
                .map_err(|e| Error::Build(e.to_string()))??;
                Some((node_bin_dir, node::host_address()?))
            }
            false => None,
        };
        let (dir, temp_dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
                (dir.clone(), None)
            }
            None => {
                remove_stale_temp_dirs();
                let temp = tempfile::Builder::new()
                    .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
                    .tempdir()
                    .map_err(io("creating a temporary directory"))?;
                (temp.path().to_owned(), Some(temp))
            }
        };
        let [etcd_client_port, etcd_peer_port, apiserver_port] = free_ports()?;
        let node_address = node_side.as_ref().map(|(_, address)| *address);
        let layout = Layout { dir, etcd_client_port, etcd_peer_port, apiserver_port, node_address };

        let ca = CertificateAuthority::generate("driftwarden-local-ca")?;
        let tokens: BTreeMap<User, String> =
            User::ALL.iter().map(|u| Ok((*u, random_token()?))).collect::<Result<_, Error>>()?;
        write_files(&layout, &ca, &tokens, options.audit_webhook.as_ref())?;

        let mut control_plane = Self {
            layout,
            audit: options.audit_webhook.clone(),
            bin_dir,
            tokens,
            ca,
            node: None,
            supervisor: Supervisor::new().map_err(io("starting the supervisor"))?,
            _temp_dir: temp_dir,
        };
        control_plane.start_etcd().await?;
        control_plane.start_apiserver(options.audit_webhook.as_ref()).await?;
        if options.controller_manager || options.node {
            control_plane.spawn("kube-controller-manager", flags::controller_manager(&control_plane.layout))?;
        }
        if let Some((node_bin_dir, address)) = node_side {
            let side = node::ControlPlaneSide {
                node_bin_dir: &node_bin_dir,
                cp_dir: &control_plane.layout.dir,
                address,
                admin: control_plane.client(User::Admin).await?,
            };
            control_plane.node = Some(node::Node::start(side).await?);
        }
        Ok(control_plane)
    }

    async fn start_etcd(&self) -> Result<(), Error> {
        self.spawn("etcd", flags::etcd(&self.layout))?;
        let port = self.layout.etcd_client_port;
        self.wait_until("etcd", || async move { TcpStream::connect(("127.0.0.1", port)).is_ok() }).await
    }

    async fn start_apiserver(&self, audit: Option<&AuditWebhook>) -> Result<(), Error> {
        self.spawn("kube-apiserver", flags::apiserver(&self.layout, audit))?;
        let admin = self.client(User::Admin).await?;
        self.wait_until("kube-apiserver", || {
            let admin = admin.clone();
            async move {
                let request = http::Request::get("/readyz").body(Vec::new()).expect("static request");
                // Failures are expected until it is up; kube-client would log each one as an error.
                let quiet = tracing::subscriber::NoSubscriber::default();
                matches!(admin.request_text(request).with_subscriber(quiet).await, Ok(body) if body.trim() == "ok")
            }
        })
        .await
    }

    fn spawn(&self, component: &'static str, args: Vec<String>) -> Result<(), Error> {
        let mut command = Command::new(self.bin_dir.join(component));
        command.args(args);
        self.supervisor
            .spawn(component, command, self.log_file(component))
            .map_err(io(format!("starting {component}")))?;
        Ok(())
    }

    async fn wait_until<F, Fut>(&self, component: &'static str, mut ready: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let start = Instant::now();
        let log = self.log_file(component);
        loop {
            if ready().await {
                return Ok(());
            }
            if let Some(status) = self.supervisor.exited(component) {
                return Err(Error::exited(component, status, &log));
            }
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::not_ready(component, &log));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Stops kube-apiserver and starts it again (same ports, same data), as
    /// an upgrade or a crash of the API server would; returns once it is ready.
    pub async fn restart_apiserver(&self, down_for: Duration) -> Result<(), Error> {
        self.stop_component("kube-apiserver");
        tokio::time::sleep(down_for).await;
        self.start_apiserver(self.audit.as_ref()).await
    }

    /// Stops etcd and starts it again on the same data; returns once it
    /// accepts connections (the API server reconnects by itself).
    pub async fn restart_etcd(&self, down_for: Duration) -> Result<(), Error> {
        self.stop_component("etcd");
        tokio::time::sleep(down_for).await;
        self.start_etcd().await
    }

    /// Stops one component (SIGTERM, then SIGKILL), e.g. to test recovery.
    pub fn stop_component(&self, component: &str) {
        self.supervisor.stop(component);
    }

    /// The node, if [`Options::node`] asked for one.
    pub fn node(&self) -> Option<&node::Node> {
        self.node.as_ref()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        self.layout.server_url()
    }

    /// The directory with certificates, kubeconfigs and component logs.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The log file of a component (`etcd`, `kube-apiserver`, `kube-controller-manager`).
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.layout.path(&format!("{component}.log"))
    }

    /// A kubeconfig file that authenticates as `user`.
    pub fn kubeconfig(&self, user: User) -> PathBuf {
        self.layout.path(&format!("{}.kubeconfig", user.file_stem()))
    }

    /// Writes a kubeconfig that authenticates with `token` (e.g. a
    /// ServiceAccount's) and returns its path.
    pub fn write_kubeconfig(&self, name: &str, token: &str) -> Result<PathBuf, Error> {
        let path = self.layout.path(&format!("{name}.kubeconfig"));
        let ca_file = self.layout.path("ca.crt").display().to_string();
        let content = users::kubeconfig_for(&self.server_url(), &ca_file, name, token);
        write_private(&path, &content).map_err(io(format!("writing {}", path.display())))?;
        Ok(path)
    }

    /// The bearer token of `user`.
    pub fn token(&self, user: User) -> &str {
        &self.tokens[&user]
    }

    /// The CA the API server's certificate chains to; it can also issue
    /// certificates for webhook servers the API server should trust.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The directory with the control plane binaries (and a matching kubectl).
    pub fn bin_dir(&self) -> &Path {
        &self.bin_dir
    }

    /// `kubectl`, of the same release as the server, acting as `user`.
    pub fn kubectl(&self, user: User) -> Command {
        let mut command = Command::new(self.bin_dir.join("kubectl"));
        command.arg(format!("--kubeconfig={}", self.kubeconfig(user).display()));
        command
    }

    /// A client that authenticates as `user`. Build one per tokio runtime:
    /// a client's connections belong to the runtime that made them.
    pub async fn client(&self, user: User) -> Result<Client, Error> {
        let fail = |source: Box<dyn std::error::Error + Send + Sync>| Error::Client { user: user.name(), source };
        let kubeconfig = Kubeconfig::read_from(self.kubeconfig(user)).map_err(|e| fail(e.into()))?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| fail(e.into()))?;
        Client::try_from(config).map_err(|e| fail(e.into()))
    }
}

const TEMP_PREFIX: &str = "driftwarden-cp-";

/// The `kubernetes` Service's address (the first of `--service-cluster-ip-range`).
const KUBERNETES_SERVICE_IP: &str = "10.96.0.1";

fn write_files(
    layout: &Layout,
    ca: &CertificateAuthority,
    tokens: &BTreeMap<User, String>,
    audit: Option<&AuditWebhook>,
) -> Result<(), Error> {
    let mut names = vec![
        "127.0.0.1".to_owned(),
        "localhost".to_owned(),
        "kubernetes".to_owned(),
        "kubernetes.default".to_owned(),
        "kubernetes.default.svc".to_owned(),
        "kubernetes.default.svc.cluster.local".to_owned(),
    ];
    if let Some(address) = layout.node_address {
        // Pods dial the Service's address, kube-proxy sends them on to this.
        names.extend([KUBERNETES_SERVICE_IP.to_owned(), address.to_string()]);
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let serving = ca.issue_server("kube-apiserver", &names)?;
    let ca_file = layout.path("ca.crt");
    let (sa_private, sa_public) = driftwarden::pki::generate_key_pair_pem()?;
    let mut files = vec![
        ("ca.crt".to_owned(), ca.cert_pem().to_owned()),
        ("apiserver.crt".to_owned(), serving.cert_pem),
        ("apiserver.key".to_owned(), serving.key_pem),
        ("sa.key".to_owned(), sa_private),
        ("sa.pub".to_owned(), sa_public),
        ("tokens.csv".to_owned(), users::token_file(&tokens.iter().map(|(u, t)| (*u, t.clone())).collect::<Vec<_>>())),
    ];
    for (user, token) in tokens {
        let kubeconfig = users::kubeconfig(&layout.server_url(), &ca_file.display().to_string(), *user, token);
        files.push((format!("{}.kubeconfig", user.file_stem()), kubeconfig));
    }
    if layout.node_address.is_some() {
        // The API server's credentials at the kubelet (logs, exec).
        let client = ca.issue_client("kube-apiserver-kubelet-client", &["system:masters"])?;
        files.push(("apiserver-kubelet-client.crt".to_owned(), client.cert_pem));
        files.push(("apiserver-kubelet-client.key".to_owned(), client.key_pem));
    }
    if let Some(audit) = audit {
        files.push(("audit-policy.yaml".to_owned(), flags::AUDIT_POLICY.to_owned()));
        files.push(("audit-webhook.kubeconfig".to_owned(), flags::audit_webhook_kubeconfig(audit)));
    }
    for (name, content) in files {
        let path = layout.path(&name);
        write_private(&path, &content).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

// Keys and tokens: readable by us only.
pub(crate) fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(content.as_bytes())
}

pub(crate) fn random_token() -> Result<String, Error> {
    let mut bytes = [0u8; 24];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("reading /dev/urandom"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Ports the kernel considers free right now. All are held at once so the
/// same port is not handed out twice.
pub(crate) fn free_ports<const N: usize>() -> Result<[u16; N], Error> {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0")).collect::<Result<_, _>>().map_err(io("finding free ports"))?;
    let ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<_, _>>()
        .map_err(io("finding free ports"))?;
    Ok(ports.try_into().expect("one port per listener"))
}

/// A test binary that was killed leaves its temporary directory behind
/// (the processes die with it, the files do not). Remove those of dead pids.
fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(TEMP_PREFIX)) else { continue };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else { continue };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct() {
        let [a, b, c] = free_ports().unwrap();
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn tokens_are_random_and_long() {
        let (a, b) = (random_token().unwrap(), random_token().unwrap());
        assert_eq!(a.len(), 48);
        assert_ne!(a, b);
    }
}
