//! Command-line interface. Every flag has an environment fallback so the
//! same binary is configured by flags on a laptop and by env in a Pod.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// driftwarden keeps a cluster on its Git state and hands out temporary,
/// approved access; changes made with that access are held until the window
/// ends, changes made without it are reverted at once.
#[derive(Debug, Parser)]
#[command(name = "driftwarden", version, propagate_version = true)]
pub struct Cli {
    /// Log line format.
    #[arg(long, global = true, env = "DRIFTWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the operator against the cluster of the current kubeconfig (or
    /// the in-cluster service account).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML, or write one file per
    /// CRD into a directory.
    Crds(CrdsArgs),
    /// Pack a directory of manifests (a Git checkout) into source ConfigMaps,
    /// stamped with the current commit. Safe to re-run: writes only what
    /// changed.
    Publish(PublishArgs),
    /// Make an Ed25519 key pair for signing sources: the private key for
    /// CI (`publish --signing-key`), the public key for the cluster (a
    /// PublisherKey, printed as YAML to apply).
    Keygen(KeygenArgs),
    /// Show how the live cluster differs from a directory of manifests,
    /// changing nothing. Exit code 0: no drift, 1: drift, 2: error.
    Diff(DiffArgs),
    /// Ask for temporary access to a role in a namespace; waits for the
    /// decision and prints the grant (exit 1 if it is denied).
    Request(RequestArgs),
    /// Approve someone's AccessRequest.
    Approve(ReviewArgs),
    /// Deny someone's AccessRequest.
    Deny(ReviewArgs),
    /// End an AccessRequest's window now (its requester, an approver, or break-glass).
    Revoke(NamedRequestArgs),
    /// List AccessRequests.
    Ls(ListArgs),
    /// Everything about one AccessRequest: phase, window, approvals,
    /// activity, the drift in its namespace.
    Status(NamedRequestArgs),
    /// Print a shell completion script (`source <(driftwarden completion bash)`).
    Completion(CompletionArgs),
}

#[derive(Debug, Args)]
pub struct CompletionArgs {
    pub shell: clap_complete::Shell,
}

/// Where the request commands work: kubectl's flags.
#[derive(Debug, Clone, Args)]
pub struct RequestTarget {
    /// Namespace; defaults to the kubeconfig's.
    #[arg(long, short)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleKindArg {
    #[value(name = "ClusterRole")]
    ClusterRole,
    #[value(name = "Role")]
    Role,
}

#[derive(Debug, Args)]
pub struct RequestArgs {
    /// The role to be bound (a ClusterRole unless --kind Role).
    pub role: String,
    #[arg(long, value_enum, default_value_t = RoleKindArg::ClusterRole)]
    pub kind: RoleKindArg,
    /// How long, as a Go duration (at most what the AccessPolicy allows).
    #[arg(long = "for", default_value = "30m", value_parser = positive_duration)]
    pub duration: kube::core::Duration,
    /// Why (an incident, a ticket): shown to approvers, kept for the audit.
    #[arg(long)]
    pub reason: String,
    /// Name of the AccessRequest; generated when unset.
    #[arg(long)]
    pub name: Option<String>,
    /// Return once the request is made, without waiting for the decision.
    #[arg(long)]
    pub nowait: bool,
    /// How long to wait for the decision.
    #[arg(long, default_value = "15m", value_parser = positive_duration)]
    pub timeout: kube::core::Duration,
    #[command(flatten)]
    pub target: RequestTarget,
}

#[derive(Debug, Args)]
pub struct ReviewArgs {
    /// The AccessRequest.
    pub name: String,
    /// Why: kept with the review.
    #[arg(long)]
    pub reason: String,
    #[command(flatten)]
    pub target: RequestTarget,
}

#[derive(Debug, Args)]
pub struct NamedRequestArgs {
    /// The AccessRequest.
    pub name: String,
    #[command(flatten)]
    pub target: RequestTarget,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only mine.
    #[arg(long, conflicts_with = "reviewable")]
    pub mine: bool,
    /// Only pending requests of others that I have not reviewed.
    #[arg(long)]
    pub reviewable: bool,
    /// In every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub target: RequestTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Kubeconfig file; defaults to KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// Kubeconfig context to use instead of the current one.
    #[arg(long, env = "DRIFTWARDEN_CONTEXT")]
    pub context: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct OperatorArgs {
    /// Address of the HTTP server for /healthz and /readyz.
    #[arg(long, env = "DRIFTWARDEN_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// The operator's own namespace. DesiredStates here may manage other
    /// namespaces and cluster-scoped objects; all others only their own.
    #[arg(long, env = "DRIFTWARDEN_NAMESPACE", default_value = "driftwarden-system")]
    pub namespace: String,

    /// Address of the HTTPS server for admission webhooks.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_ADDR", default_value = "0.0.0.0:9443")]
    pub webhook_addr: SocketAddr,

    /// How the API server reaches the webhooks from outside the cluster,
    /// e.g. https://127.0.0.1:9443. Unset: through --webhook-service.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The Service (in --namespace) in front of the webhook server.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_SERVICE", default_value = "driftwarden-webhook")]
    pub webhook_service: String,

    /// How the API server reaches this replica's write-log webhook from
    /// outside the cluster (the leader points `driftwarden-writes` here).
    /// Unset: --webhook-url, or else the Service `<--webhook-service>-leader`,
    /// which selects the Pod labelled `driftwarden.io/leader: "true"` (the
    /// leader labels its own Pod).
    #[arg(long, env = "DRIFTWARDEN_WRITES_URL")]
    pub writes_url: Option<String>,

    /// The port of --webhook-service.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_SERVICE_PORT", default_value_t = 443)]
    pub webhook_service_port: u16,

    /// The Secret (in --namespace) that holds the self-managed webhook certificate.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_SECRET", default_value = "driftwarden-webhook-tls")]
    pub webhook_secret: String,

    /// Serve tls.crt/tls.key from this directory (e.g. from cert-manager),
    /// with ca.crt as the caBundle, instead of a self-managed certificate.
    #[arg(long, env = "DRIFTWARDEN_WEBHOOK_CERT_DIR")]
    pub webhook_cert_dir: Option<PathBuf>,

    /// How often RoleBindings that no active AccessRequest accounts for are
    /// looked for and removed, as a Go duration.
    #[arg(long, env = "DRIFTWARDEN_SWEEP_INTERVAL", default_value = "60s", value_parser = positive_duration)]
    pub sweep_interval: kube::core::Duration,

    /// JSON pointers left out of every DesiredState's comparison, in
    /// addition to its own `spec.ignore` (e.g. the labels and annotations
    /// Helm adds); comma-separated. Who wrote a field never matters: a field
    /// Git does not declare is drift unless a rule like this names it.
    #[arg(long, env = "DRIFTWARDEN_IGNORE_POINTERS", value_delimiter = ',')]
    pub ignore_pointers: Vec<String>,

    /// Groups whose members may revoke any AccessRequest (break-glass),
    /// besides its requester and approvers; comma-separated.
    #[arg(long, env = "DRIFTWARDEN_BREAK_GLASS_GROUPS", value_delimiter = ',', default_value = "system:masters")]
    pub break_glass_groups: Vec<String>,

    /// Users who may revoke any AccessRequest (break-glass); comma-separated.
    #[arg(long, env = "DRIFTWARDEN_BREAK_GLASS_USERS", value_delimiter = ',')]
    pub break_glass_users: Vec<String>,

    /// This replica's name in Events and in the leader Lease (the Pod name;
    /// the host name when unset).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,

    /// Elect a leader on a Lease so that, of several replicas, exactly one
    /// writes (the others serve webhooks and metrics, ready to take over).
    #[arg(long, env = "DRIFTWARDEN_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the Lease, in --namespace.
    #[arg(long, env = "DRIFTWARDEN_LEASE_NAME", default_value = "driftwarden")]
    pub lease_name: String,

    /// Secret in --namespace whose `token` key the API server's audit
    /// webhook must present as a bearer token; without it, audit events are
    /// refused and drift is attributed by scope only.
    #[arg(long, env = "DRIFTWARDEN_AUDIT_TOKEN_SECRET", default_value = "driftwarden-audit")]
    pub audit_token_secret: String,

    /// Register the write-log admission webhook (ValidatingWebhookConfiguration
    /// `driftwarden-writes`, kept by the leader for the kinds and namespaces
    /// DesiredStates manage): who wrote what is then known on every cluster.
    /// Off: only the audit webhook attributes writes.
    #[arg(long, env = "DRIFTWARDEN_WRITE_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub write_log: bool,

    /// Reverts per second per DesiredState, once a burst is spent.
    #[arg(long, env = "DRIFTWARDEN_REVERT_RATE", default_value_t = 20.0)]
    pub revert_rate: f64,

    /// Reverts one DesiredState may make at once before the rate applies.
    #[arg(long, env = "DRIFTWARDEN_REVERT_BURST", default_value_t = 200)]
    pub revert_burst: u32,

    /// Accept source ConfigMaps without checking their signatures. For
    /// experiments only: anyone who can write a source ConfigMap then
    /// decides what is enforced. Every DesiredState's status says so.
    #[arg(long, env = "DRIFTWARDEN_INSECURE_SKIP_SOURCE_VERIFICATION", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_skip_source_verification: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub cluster: ClusterArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
}

#[derive(Debug, Args)]
pub struct CrdsArgs {
    /// Write `<plural>.<group>.yaml` files into this directory instead of
    /// printing them.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The directory of manifests (.yaml, .yml, .json; hidden entries
    /// skipped), or `-` for a manifest stream on standard input
    /// (`kustomize build overlays/prod | driftwarden publish - ...`); the
    /// revision is then the current directory's Git HEAD.
    pub dir: PathBuf,
    /// Name of the ConfigMap (a large state continues in NAME-1, NAME-2, ...;
    /// all carry the label driftwarden.io/source=NAME).
    #[arg(long)]
    pub configmap: String,
    /// Namespace of the ConfigMaps; defaults to the kubeconfig's namespace.
    #[arg(long, short)]
    pub namespace: Option<String>,
    /// The revision to stamp instead of the directory's Git HEAD.
    #[arg(long)]
    pub revision: Option<String>,
    /// The Ed25519 private key (PKCS#8 PEM) to sign with. In CI, pass the
    /// key itself in DRIFTWARDEN_SIGNING_KEY instead.
    #[arg(long, env = "DRIFTWARDEN_SIGNING_KEY_FILE", conflicts_with = "unsigned")]
    pub signing_key: Option<PathBuf>,
    /// Publish without a signature (only an operator running with
    /// --insecure-skip-source-verification accepts it).
    #[arg(long)]
    pub unsigned: bool,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Writes the private key to PATH.key (mode 0600) and the public key to
    /// PATH.pub; refuses to overwrite either.
    #[arg(long)]
    pub out: PathBuf,
    /// Name of the PublisherKey printed for the cluster.
    #[arg(long, default_value = "publisher")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The directory of manifests to compare with the live cluster, or `-`
    /// for a manifest stream on standard input (`helm template ... |
    /// driftwarden diff -`).
    pub dir: PathBuf,
    /// Namespace for objects that name none; defaults to the kubeconfig's.
    #[arg(long, short)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn a_bad_flag_is_an_error_not_a_panic() {
        let err = Cli::try_parse_from(["driftwarden", "run", "--http-addr", "not-an-address"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        let err = Cli::try_parse_from(["driftwarden", "frobnicate"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn log_format_is_global() {
        let cli = Cli::try_parse_from(["driftwarden", "crds", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, LogFormat::Json);
    }
}

/// A positive Go duration of at most a day. kube's parser panics on some
/// malformed input (`1h-5m`) and drops a leading sign (`-5m`): those are
/// refused here, with a message, before it sees them.
fn positive_duration(text: &str) -> Result<kube::core::Duration, String> {
    // Runs of at most 9 digits cannot overflow (999999999h is far below the limit).
    let short_numbers = text.split(|c: char| !c.is_ascii_digit()).all(|digits| digits.len() <= 9);
    let shape = text.len() <= 32
        && !text.is_empty()
        && short_numbers
        && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '.');
    if !shape {
        return Err(format!("{text:?} is not a positive Go duration such as 30s, 5m or 1h30m"));
    }
    let parsed = std::panic::catch_unwind(|| text.parse::<kube::core::Duration>())
        .map_err(|_| format!("{text:?} is not a valid duration"))?
        .map_err(|error| format!("{text:?}: {error}"))?;
    let std: std::time::Duration = parsed.into();
    if std.is_zero() || std > std::time::Duration::from_secs(24 * 3600) {
        return Err(format!("{text:?} must be more than 0 and at most 24h"));
    }
    Ok(parsed)
}

#[cfg(test)]
mod duration_tests {
    #[test]
    fn malformed_or_signed_durations_are_refused_not_panicked_on() {
        for bad in ["1h-5m", "-5m", "", "0s", "99999999999999999999999999999h", "48h", "5 m"] {
            assert!(super::positive_duration(bad).is_err(), "{bad}");
        }
        for good in ["5s", "1m30s", "24h", "250ms"] {
            assert!(super::positive_duration(good).is_ok(), "{good}");
        }
    }
}
