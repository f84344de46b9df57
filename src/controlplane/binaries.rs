//! Finds the control plane binaries, building them on first use.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Error;

/// The Kubernetes release the control plane runs (and the tests expect).
pub const KUBERNETES_VERSION: &str = "v1.35.4";

/// Set to a directory holding `etcd`, `kube-apiserver`,
/// `kube-controller-manager` and `kubectl` to skip the build.
pub const BIN_DIR_ENV: &str = "DRIFTWARDEN_CONTROLPLANE_BIN";

/// The build script that lives with the pinned Go modules.
pub fn build_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/controlplane/build.sh")
}

/// The directory with the binaries: from [`BIN_DIR_ENV`], or built (and
/// cached) by the build script, whose progress goes to our stderr.
pub fn ensure() -> Result<PathBuf, Error> {
    if let Some(dir) = std::env::var_os(BIN_DIR_ENV) {
        return Ok(PathBuf::from(dir));
    }
    let script = build_script();
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| Error::Io { context: format!("running {}", script.display()), source })?;
    if !output.status.success() {
        return Err(Error::Build(format!("{} exited with {}", script.display(), output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let dir = stdout.lines().last().map(str::trim).unwrap_or_default();
    if dir.is_empty() {
        return Err(Error::Build(format!("{} printed no binary directory", script.display())));
    }
    Ok(PathBuf::from(dir))
}
