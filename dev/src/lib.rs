//! driftwarden's development harness, kept out of the product crate: a real
//! local control plane (etcd, kube-apiserver, kube-controller-manager built
//! from pinned Go modules) for the cluster tests, the benchmarks and the
//! quickstart.
//!
//! - [`controlplane`]: start, stop and fault the local control plane; run
//!   the operator beside it as the chart's ServiceAccount.
//! - [`quickstart`]: the README's first command (`cargo quickstart`).

use std::path::{Path, PathBuf};

pub mod controlplane;
pub mod quickstart;

/// The repository's root: the chart, the CRDs, the examples and the test
/// fixtures live there, next to this crate.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("dev/ is inside the repository").to_owned()
}
