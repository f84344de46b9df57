//! Finds the control plane binaries and helm, building them on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use super::Error;

/// The Kubernetes release the control plane runs (and the tests expect).
pub const KUBERNETES_VERSION: &str = "v1.35.4";

/// Set to a directory holding `etcd`, `kube-apiserver`,
/// `kube-controller-manager` and `kubectl` to skip the build.
pub const BIN_DIR_ENV: &str = "DRIFTWARDEN_CONTROLPLANE_BIN";

/// Set to a `helm` executable to skip building it.
pub const HELM_ENV: &str = "DRIFTWARDEN_HELM";

/// Set to a `prometheus` executable to skip building it.
pub const PROMETHEUS_ENV: &str = "DRIFTWARDEN_PROMETHEUS";

/// Set to an `alertmanager` executable to skip building it.
pub const ALERTMANAGER_ENV: &str = "DRIFTWARDEN_ALERTMANAGER";

/// The build script that lives with the pinned Go modules.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("controlplane/build.sh")
}

/// The directory with the binaries: from [`BIN_DIR_ENV`], or built (and
/// cached) by the build script, whose progress goes to our stderr.
pub fn ensure() -> Result<PathBuf, Error> {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(dir) => Ok(PathBuf::from(dir)),
        None => build("controlplane"),
    }
}

/// The node's binaries (kubelet, kube-scheduler, kube-proxy, the sandbox
/// program and its image), built and cached by `build.sh node`; looked up
/// once per process.
pub fn node() -> Result<PathBuf, Error> {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(|| build("node").map_err(|e| e.to_string())).clone().map_err(Error::Build)
}

/// `helm`, from [`HELM_ENV`] or built from the pinned Go module in
/// `dev/controlplane/helm` and cached like the control plane binaries
/// (`build.sh helm`). Looked up once per process: the build script is slow
/// to even say that its cache is warm when many tests ask at once.
pub fn helm() -> Result<PathBuf, Error> {
    static HELM: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = HELM.get_or_init(|| match std::env::var_os(HELM_ENV) {
        Some(path) => Ok(PathBuf::from(path)),
        None => build("helm").map(|dir| dir.join("helm")).map_err(|e| e.to_string()),
    });
    found.clone().map_err(Error::Build)
}

/// `prometheus`, from [`PROMETHEUS_ENV`] or built from the pinned Go module
/// in `dev/controlplane/prometheus` and cached like helm (`build.sh
/// prometheus`); looked up once per process.
pub fn prometheus() -> Result<PathBuf, Error> {
    static PROMETHEUS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = PROMETHEUS.get_or_init(|| match std::env::var_os(PROMETHEUS_ENV) {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!("{PROMETHEUS_ENV}={} is not a file", Path::new(&path).display())),
        None => build("prometheus").map(|dir| dir.join("prometheus")).map_err(|e| e.to_string()),
    });
    found.clone().map_err(Error::Build)
}

/// `alertmanager`, from [`ALERTMANAGER_ENV`] or built from the pinned Go
/// module in `dev/controlplane/alertmanager` (`build.sh alertmanager`).
pub fn alertmanager() -> Result<PathBuf, Error> {
    static ALERTMANAGER: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let found = ALERTMANAGER.get_or_init(|| match std::env::var_os(ALERTMANAGER_ENV) {
        Some(path) if Path::new(&path).is_file() => Ok(PathBuf::from(path)),
        Some(path) => Err(format!("{ALERTMANAGER_ENV}={} is not a file", Path::new(&path).display())),
        None => build("alertmanager").map(|dir| dir.join("alertmanager")).map_err(|e| e.to_string()),
    });
    found.clone().map_err(Error::Build)
}

/// Runs the build script for `target`; it prints the binary directory last.
fn build(target: &str) -> Result<PathBuf, Error> {
    let script = build_script();
    let output = Command::new("bash")
        .arg(&script)
        .arg(target)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Io { context: format!("running {}", script.display()), source })?;
    if !output.status.success() {
        return Err(Error::Build(format!("{} {target} exited with {}", script.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() {
        return Err(Error::Build(format!("{} {target} printed no binary directory", script.display())));
    }
    Ok(PathBuf::from(dir))
}
