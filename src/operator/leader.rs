//! Leader election on a `coordination.k8s.io` Lease (kube-lease-manager):
//! of several replicas exactly one runs the controllers that write; the
//! others serve webhooks and metrics and take over when the lease lapses.

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tokio::sync::watch;

/// The lease lapses this long after its holder's last renewal: a standby
/// takes over within about this long of the leader's death.
const LEASE_SECONDS: u64 = 15;
/// The holder renews this long before the lease would lapse.
const GRACE_SECONDS: u64 = 5;

/// Whether this replica leads, as it changes.
pub struct Leadership {
    pub is_leader: watch::Receiver<bool>,
    task: Option<tokio::task::JoinHandle<Result<kube_lease_manager::LeaseManager, LeaseManagerError>>>,
}

impl Leadership {
    /// Always the leader (leader election off: a single replica).
    pub fn alone() -> Self {
        let (sender, is_leader) = watch::channel(true);
        // The receiver must never see the channel close.
        std::mem::forget(sender);
        Self { is_leader, task: None }
    }

    /// Competes for `lease` in `namespace` as `identity`. A replica that
    /// restarts under the same identity holds the lease again at once.
    pub async fn elect(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Self, LeaseManagerError> {
        let manager = LeaseManagerBuilder::new(client, lease)
            .with_namespace(namespace)
            .with_identity(identity)
            .with_duration(LEASE_SECONDS)
            .with_grace(GRACE_SECONDS)
            .with_field_manager(format!("driftwarden-leader-{identity}"))
            .build()
            .await?;
        let (is_leader, task) = manager.watch().await;
        Ok(Self { is_leader, task: Some(task) })
    }

    /// Gives the lease up (on shutdown), so a standby need not wait for it to lapse.
    pub async fn resign(self) {
        let Self { is_leader, task } = self;
        drop(is_leader);
        if let Some(task) = task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(3), task).await;
        }
    }
}
