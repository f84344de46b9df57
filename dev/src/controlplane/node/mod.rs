//! A real node for the local control plane, when asked for: Debian's
//! containerd and runc, the CNI bridge plugin, and a kubelet, kube-scheduler
//! and kube-proxy built from the same pinned Kubernetes modules as the API
//! server. Pods get addresses on a bridge the host (and so the API server,
//! for webhooks) reaches; Pods reach the API server through the `kubernetes`
//! Service (kube-proxy, nftables mode).
//!
//! One node per machine at a time (kube-proxy's rules and the kubelet's
//! cgroups are host-wide): a lock that the teardown holds until it is done.
//! The teardown runs in a watchdog process of its own session, so it also
//! runs when the test binary is killed, and it removes every process,
//! mount, network device, rule, cgroup and file the node made.

mod config;

pub use config::{NODE_NAME, POD_SUBNET};

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Client;
use kube::api::Api;

use super::{Error, READY_TIMEOUT, Supervisor, User, io};
use config::{Paths, Ports};

/// How long a node waits for another one's teardown on the same machine.
const LOCK_TIMEOUT: Duration = Duration::from_secs(180);
const LOCK_FILE: &str = "/run/lock/driftwarden-node.lock";
const TEMP_PREFIX: &str = "driftwarden-node-";

/// The Debian packages the node runs, by a file each installs.
const PACKAGES: &[(&str, &str)] = &[
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
    ("nftables", "/usr/sbin/nft"),
    ("buildah", "/usr/bin/buildah"),
];

/// Installs what [`PACKAGES`] lists and is missing (root and apt only;
/// otherwise says what to install).
pub fn ensure_packages() -> Result<(), Error> {
    let missing: Vec<&str> =
        PACKAGES.iter().filter(|(_, file)| !Path::new(file).exists()).map(|(package, _)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    // SAFETY: a plain syscall without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !Path::new("/usr/bin/apt-get").exists() {
        return Err(Error::Build(format!(
            "the node needs Debian's {} (apt-get install {}), and root",
            missing.join(", "),
            missing.join(" ")
        )));
    }
    // Two node tests may start at once: the second waits for apt's lock.
    eprintln!("installing {} from Debian for the node", missing.join(", "));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "apt-get -o DPkg::Lock::Timeout=300 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq {} >&2",
            missing.join(" ")
        ))
        .stdin(Stdio::null())
        .status()
        .map_err(io("running apt-get"))?;
    if !status.success() {
        return Err(Error::Build(format!("apt-get install {} exited with {status}", missing.join(" "))));
    }
    Ok(())
}

/// The host's own address on its default route: Pods cannot reach loopback.
pub fn host_address() -> Result<Ipv4Addr, Error> {
    // Connecting a UDP socket sends nothing; it only picks the source
    // address the kernel would route from.
    let socket = UdpSocket::bind("0.0.0.0:0").map_err(io("finding the host's address"))?;
    socket.connect("192.0.2.1:9").map_err(io("finding the host's address (no default route?)"))?;
    match socket.local_addr().map_err(io("finding the host's address"))?.ip() {
        std::net::IpAddr::V4(ip) if !ip.is_loopback() && !ip.is_unspecified() => Ok(ip),
        other => Err(Error::Build(format!("the host has no usable IPv4 address for Pods to reach ({other})"))),
    }
}

/// A running node. Dropping it stops its processes and tears it down.
pub struct Node {
    paths: Paths,
    supervisor: Option<Supervisor>,
    /// The watchdog's stdin: closing it starts the teardown.
    watchdog_stdin: Option<ChildStdin>,
    watchdog: Option<Child>,
}

/// What the node needs from its control plane.
pub(super) struct ControlPlaneSide<'a> {
    pub node_bin_dir: &'a Path,
    pub cp_dir: &'a Path,
    pub address: Ipv4Addr,
    pub admin: Client,
}

impl Node {
    pub(super) async fn start(cp: ControlPlaneSide<'_>) -> Result<Self, Error> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{TEMP_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(io("creating the node's directory"))?
            .keep();
        let paths = Paths { dir };
        let [kubelet, kubelet_healthz, proxy_healthz, proxy_metrics] = super::free_ports()?;
        let ports = Ports { kubelet, kubelet_healthz, proxy_healthz, proxy_metrics };
        write_files(&paths, &cp, ports)?;

        let (watchdog, watchdog_stdin) = tokio::task::spawn_blocking({
            let paths = paths.clone();
            move || start_watchdog(&paths)
        })
        .await
        .map_err(|e| Error::Build(e.to_string()))??;
        let mut node = Self {
            paths,
            supervisor: Some(Supervisor::new().map_err(io("starting the node's supervisor"))?),
            watchdog_stdin: Some(watchdog_stdin),
            watchdog: Some(watchdog),
        };

        let started = Instant::now();
        node.spawn(
            "containerd",
            Path::new("/usr/bin/containerd"),
            vec![format!("--config={}", node.paths.path("containerd.toml").display())],
        )?;
        node.wait_until("containerd", || node.ctr(&["version"]).is_ok()).await?;
        node.import_image(&cp.node_bin_dir.join("pause.oci.tar"))?;
        node.spawn("kube-scheduler", &cp.node_bin_dir.join("kube-scheduler"), config::scheduler_args(&node.paths))?;
        node.spawn("kubelet", &cp.node_bin_dir.join("kubelet"), config::kubelet_args(&node.paths, cp.address))?;
        node.spawn("kube-proxy", &cp.node_bin_dir.join("kube-proxy"), config::proxy_args(&node.paths))?;
        let nodes: Api<NodeObject> = Api::all(cp.admin.clone());
        let ready = wait_ready(&nodes, &node).await;
        if let Err(err) = ready {
            node.teardown();
            return Err(err);
        }
        eprintln!("node {NODE_NAME} Ready {:.1}s after containerd started", started.elapsed().as_secs_f64());
        Ok(node)
    }

    fn spawn(&self, component: &'static str, binary: &Path, args: Vec<String>) -> Result<(), Error> {
        let mut command = Command::new(binary);
        command.args(args);
        let supervisor = self.supervisor.as_ref().expect("running");
        supervisor.spawn(component, command, self.log_file(component)).map_err(io(format!("starting {component}")))?;
        Ok(())
    }

    async fn wait_until(&self, component: &'static str, mut ready: impl FnMut() -> bool) -> Result<(), Error> {
        let start = Instant::now();
        loop {
            if ready() {
                return Ok(());
            }
            self.check_running(component)?;
            if start.elapsed() > READY_TIMEOUT {
                return Err(Error::not_ready(component, &self.log_file(component)));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn check_running(&self, component: &'static str) -> Result<(), Error> {
        if let Some(status) = self.supervisor.as_ref().and_then(|s| s.exited(component)) {
            return Err(Error::exited(component, status, &self.log_file(component)));
        }
        Ok(())
    }

    /// `ctr` against this node's containerd, in the namespace the kubelet uses.
    fn ctr(&self, args: &[&str]) -> Result<String, Error> {
        let output = Command::new("ctr")
            .arg(format!("--address={}", self.paths.containerd_socket().display()))
            .args(["--namespace", "k8s.io"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(io("running ctr"))?;
        if !output.status.success() {
            return Err(Error::Build(format!(
                "ctr {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Imports an image archive (OCI or Docker format) into the node, under
    /// the names it carries, as `kind load` would: Pods then run it without
    /// a registry (with `imagePullPolicy: IfNotPresent` or `Never`).
    pub fn import_image(&self, archive: &Path) -> Result<(), Error> {
        self.ctr(&["images", "import", "--no-unpack=false", &archive.display().to_string()]).map(|_| ())
    }

    /// Tags an image already on the node with another name (an "upgrade"
    /// to a new tag of the same build).
    pub fn tag_image(&self, source: &str, target: &str) -> Result<(), Error> {
        self.ctr(&["images", "tag", "--force", source, target]).map(|_| ())
    }

    /// Kills a container's process with SIGKILL, as an OOM kill or a crash
    /// would (the kubelet then restarts it). `container_id` as a Pod's
    /// status gives it (`containerd://<id>` or the bare id).
    pub fn kill_container(&self, container_id: &str) -> Result<(), Error> {
        let id = container_id.strip_prefix("containerd://").unwrap_or(container_id);
        self.ctr(&["tasks", "kill", "--signal", "SIGKILL", id]).map(|_| ())
    }

    /// The directory with the node's configuration, state and logs.
    pub fn dir(&self) -> &Path {
        &self.paths.dir
    }

    /// The log of `containerd`, `kubelet`, `kube-scheduler` or `kube-proxy`.
    pub fn log_file(&self, component: &str) -> PathBuf {
        self.paths.path(&format!("{component}.log"))
    }

    /// Stops the components and runs the teardown to its end.
    fn teardown(&mut self) {
        drop(self.supervisor.take());
        drop(self.watchdog_stdin.take());
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.teardown();
    }
}

async fn wait_ready(nodes: &Api<NodeObject>, node: &Node) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let ready = nodes.get_opt(NODE_NAME).await.ok().flatten().is_some_and(|n| {
            n.status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        });
        if ready {
            return Ok(());
        }
        for component in ["containerd", "kubelet", "kube-scheduler", "kube-proxy"] {
            node.check_running(component)?;
        }
        if start.elapsed() > READY_TIMEOUT {
            return Err(Error::not_ready("kubelet", &node.log_file("kubelet")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn write_files(paths: &Paths, cp: &ControlPlaneSide<'_>, ports: Ports) -> Result<(), Error> {
    let ca_file = cp.cp_dir.join("ca.crt");
    for sub in ["containerd", "cni/net.d", "kubelet", "pod-logs"] {
        let dir = paths.path(sub);
        std::fs::create_dir_all(&dir).map_err(io(format!("creating {}", dir.display())))?;
    }
    let mut files = vec![
        ("containerd.toml".to_owned(), config::containerd(paths)),
        ("cni/net.d/10-driftwarden-node.conflist".to_owned(), config::cni_network(paths)),
        ("kubelet.yaml".to_owned(), config::kubelet(paths, cp.address, ports, &ca_file)),
        ("kube-scheduler.yaml".to_owned(), config::scheduler(paths)),
        ("kube-proxy.yaml".to_owned(), config::proxy(paths, ports)),
        ("teardown.sh".to_owned(), config::teardown_script(paths, &cp.node_bin_dir.join("kube-proxy"))),
    ];
    // The credentials the control plane made for the node's components.
    for user in [User::Kubelet, User::Scheduler, User::Proxy] {
        let name = format!("{}.kubeconfig", user.file_stem());
        let from = cp.cp_dir.join(&name);
        let text = std::fs::read_to_string(&from).map_err(io(format!("reading {}", from.display())))?;
        files.push((name, text));
    }
    // What the teardown puts back and removes.
    files.push(("sysctl-before.conf".to_owned(), sysctl_snapshot()));
    let created: Vec<&str> = config::HOST_PATHS.iter().copied().filter(|p| !Path::new(p).exists()).collect();
    files.push(("host-paths-created".to_owned(), created.iter().map(|p| format!("{p}\n")).collect()));
    for (name, content) in files {
        let path = paths.path(&name);
        super::write_private(&path, &content).map_err(io(format!("writing {}", path.display())))?;
    }
    Ok(())
}

/// `name = value` lines of the [`config::SYSCTLS`] this host has.
fn sysctl_snapshot() -> String {
    let mut out = String::new();
    for name in config::SYSCTLS {
        let file = Path::new("/proc/sys").join(name.replace('.', "/"));
        if let Ok(value) = std::fs::read_to_string(file) {
            out.push_str(&format!("{name} = {}\n", value.trim()));
        }
    }
    out
}

/// The watchdog: takes the machine's node lock (waiting for another node's
/// teardown), says so, then waits for its stdin to close and runs the
/// teardown, still holding the lock. It runs in a session of its own and
/// without a parent-death signal, so it outlives whatever kills us.
fn start_watchdog(paths: &Paths) -> Result<(Child, ChildStdin), Error> {
    let script = format!(
        "exec 9>>{LOCK_FILE} && flock -w {} 9 || exit 75; echo locked; exec >&2; read -r _; exec bash \"$0\"",
        LOCK_TIMEOUT.as_secs()
    );
    let log = std::fs::File::create(paths.path("teardown.log")).map_err(io("creating the teardown log"))?;
    let mut command = Command::new("bash");
    command
        .args(["-c", &script, &paths.path("teardown.sh").display().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().map_err(io("starting the node's watchdog"))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    BufReader::new(stdout).read_line(&mut line).map_err(io("waiting for the node lock"))?;
    if line.trim() != "locked" {
        let status = child.wait().map_err(io("waiting for the node's watchdog"))?;
        let _ = std::fs::remove_dir_all(&paths.dir);
        return Err(Error::Build(format!(
            "another node runs on this machine (its lock {LOCK_FILE} was held for {LOCK_TIMEOUT:?}; watchdog: {status})"
        )));
    }
    let mut stdin = child.stdin.take().expect("piped");
    // Nothing to say: the pipe's closing is the message.
    let _ = stdin.flush();
    Ok((child, stdin))
}
