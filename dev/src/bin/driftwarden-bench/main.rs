//! End-to-end benchmarks against a real local control plane, with the
//! operator running as it does in a cluster. Not tests: they print figures.
//!
//!   cargo run --release --bin driftwarden-bench -- expiry --grants 1000
//!   cargo run --release --bin driftwarden-bench -- detection --objects 10000
//!   cargo run --release --bin driftwarden-bench -- revert --objects 10000
//!   cargo run --release --bin driftwarden-bench -- window-end --objects 10000
//!   cargo run --release --bin driftwarden-bench -- steady --objects 10000
//!   cargo run --release --bin driftwarden-bench -- scale --objects 100000 --states 10
//!   cargo run --release --bin driftwarden-bench -- kubectl-diff --objects 10000
//!   cargo run --release --bin driftwarden-bench -- fixtures --out benches/data
//!   cargo run --release --bin driftwarden-bench -- write-log --objects 100 --writes 1000

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftwarden::api::{AccessPolicy, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use driftwarden_dev::controlplane::operator::OperatorEnv;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;

mod audit_log;
mod cache;
mod fixtures;
mod footprint;
mod kubectl_diff;
mod mix;
mod process;
mod scale;
mod steady;
mod write_log;

#[global_allocator]
static ALLOCATOR: footprint::Counting = footprint::Counting;

#[derive(Parser)]
#[command(name = "driftwarden-bench", about = "End-to-end benchmarks against a local control plane")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Grant expiry lag: how long after expiresAt each RoleBinding is gone.
    Expiry {
        /// How many grants.
        #[arg(long, default_value_t = 1000)]
        grants: usize,
        /// The shortest grant, in seconds (it must outlast creating them all).
        #[arg(long, default_value_t = 120)]
        min_seconds: u64,
        /// Expiries are spread over this many seconds after the shortest.
        #[arg(long, default_value_t = 120)]
        spread_seconds: u64,
        /// How many requests are created at once.
        #[arg(long, default_value_t = 16)]
        parallel: usize,
    },
    /// Unauthorized drift: an edit's write response until the object is
    /// back to what Git declares (the DesiredState reverts).
    Revert {
        #[command(flatten)]
        managed: Scale,
        /// How many edits, one at a time, each to another random object.
        #[arg(long, default_value_t = 200)]
        edits: usize,
    },
    /// Session drift: edits made inside an access window are held, then all
    /// reverted when it ends; the time from expiresAt until each is back.
    WindowEnd {
        #[command(flatten)]
        managed: Scale,
        /// How many objects the grantee edits during the window.
        #[arg(long, default_value_t = 100)]
        edits: usize,
    },
    /// Drift detection latency: an edit's write response until the
    /// DesiredState's status counts the object as drifted.
    Detection {
        #[command(flatten)]
        managed: Scale,
        /// How many edits, one at a time, each to another random object.
        #[arg(long, default_value_t = 200)]
        edits: usize,
    },
    /// Undeclared objects: a ConfigMap no source declares, created with no
    /// access window behind it, from the create's response until the
    /// operator has deleted it.
    Undeclared {
        #[command(flatten)]
        managed: Scale,
        /// How many objects are created, one at a time.
        #[arg(long, default_value_t = 50)]
        creates: usize,
    },
    /// The write-log webhook's cost per write: latency with and without it,
    /// the API server's time calling it, and the operator's CPU per write.
    WriteLog {
        #[command(flatten)]
        managed: Scale,
        /// How many writes of each kind, one at a time.
        #[arg(long, default_value_t = 1000)]
        writes: usize,
    },
    /// At rest, all in sync: the operator's memory, CPU and API requests
    /// (from an audit log of every request), and its peak memory when the
    /// API server restarts and when it restarts itself (a full list).
    Steady {
        #[command(flatten)]
        managed: Scale,
        /// Length of the steady-state window, in seconds.
        #[arg(long, default_value_t = 60)]
        window_seconds: u64,
        /// Quiet time after each restart before measuring, in seconds (the
        /// watches' backoff after an API server restart reaches 30 s).
        #[arg(long, default_value_t = 90)]
        settle_seconds: u64,
    },
    /// One creation of the objects, then in turn: the first sync, memory
    /// and CPU at rest, detection latency, unauthorized-revert latency and
    /// the operator's restart (its first full drift pass and peak memory).
    Scale {
        #[command(flatten)]
        managed: Scale,
        /// How many edits for detection, and again for revert, one at a time.
        #[arg(long, default_value_t = 200)]
        edits: usize,
        /// Length of the window at rest, in seconds.
        #[arg(long, default_value_t = 60)]
        window_seconds: u64,
        /// Quiet time after the first sync and after the operator's restart
        /// before measuring, in seconds.
        #[arg(long, default_value_t = 60)]
        settle_seconds: u64,
    },
    /// `kubectl diff -f` against `driftwarden diff` over the same manifests
    /// and objects: wall time of each.
    KubectlDiff {
        #[command(flatten)]
        managed: Scale,
        /// Objects edited by hand first (both must find exactly these).
        #[arg(long, default_value_t = 10)]
        edits: usize,
        /// Runs of each tool (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Captures the live objects the criterion benchmarks diff, from a real
    /// API server, next to their declared manifests.
    Fixtures {
        #[arg(long, default_value = "benches/data")]
        out: PathBuf,
    },
}

/// The managed objects: a mix of kinds (see `mix.rs`) that one DesiredState declares.
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct Scale {
    /// How many managed objects the DesiredState declares.
    #[arg(long, default_value_t = 1000)]
    objects: usize,
    /// How many objects are created at once.
    #[arg(long, default_value_t = 32)]
    parallel: usize,
    /// How many DesiredStates share the objects, each in its own namespace
    /// (`objects / states` each; edits go to all of them in turn).
    #[arg(long, default_value_t = 1)]
    states: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Expiry { grants, min_seconds, spread_seconds, parallel } => {
            expiry(grants, min_seconds, spread_seconds, parallel).await
        }
        Bench::Detection { managed, edits } => detection(managed, edits).await,
        Bench::Revert { managed, edits } => revert(managed, edits).await,
        Bench::WindowEnd { managed, edits } => window_end(managed, edits).await,
        Bench::Undeclared { managed, creates } => undeclared(managed, creates).await,
        Bench::Steady { managed, window_seconds, settle_seconds } => {
            let window = Duration::from_secs(window_seconds);
            let settle = Duration::from_secs(settle_seconds);
            steady::run(managed, window, settle).await
        }
        Bench::Scale { managed, edits, window_seconds, settle_seconds } => {
            let window = Duration::from_secs(window_seconds);
            let settle = Duration::from_secs(settle_seconds);
            scale::run(managed, edits, window, settle).await
        }
        Bench::KubectlDiff { managed, edits, runs } => kubectl_diff::run(managed, edits, runs).await,
        Bench::Fixtures { out } => fixtures::run(&out).await,
        Bench::WriteLog { managed, writes } => write_log::run(managed, writes).await,
    }
}

/// The `driftwarden` binary next to this one (same profile), or the one
/// `DRIFTWARDEN_BENCH_OPERATOR` names (to compare two builds).
pub(crate) fn operator_binary() -> anyhow::Result<PathBuf> {
    let binary = match std::env::var_os("DRIFTWARDEN_BENCH_OPERATOR") {
        Some(path) => PathBuf::from(path),
        None => std::env::current_exe()?.with_file_name("driftwarden"),
    };
    anyhow::ensure!(binary.exists(), "{} not found: build it first (cargo build --release)", binary.display());
    Ok(binary)
}

async fn expiry(grants: usize, min_seconds: u64, spread_seconds: u64, parallel: usize) -> anyhow::Result<()> {
    eprintln!("starting a control plane and the operator...");
    let env = OperatorEnv::start(operator_binary()?).await?;
    let admin = env.cp.client(User::Admin).await?;
    let namespace = "bench-expiry";
    setup_namespace(&admin, namespace).await?;

    // Watch our RoleBindings: a deletion's arrival time is when it was gone.
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), namespace);
    let (deleted_tx, mut deleted_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Timestamp)>();
    let watch = watcher(bindings, watcher::Config::default().labels("app.kubernetes.io/managed-by=driftwarden"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watch);
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Delete(binding) = event {
                let _ = deleted_tx.send((binding.metadata.name.unwrap_or_default(), Timestamp::now()));
            }
        }
    });

    eprintln!("creating and approving {grants} requests...");
    let started = Instant::now();
    let alice = env.cp.client(User::Alice).await?;
    let carol = env.cp.client(User::Carol).await?;
    let requests: Api<DynamicObject> =
        Api::namespaced_with(alice, namespace, &ApiResource::erase::<AccessRequest>(&()));
    let reviews: Api<DynamicObject> = Api::namespaced_with(carol, namespace, &ApiResource::erase::<AccessReview>(&()));
    stream::iter(0..grants)
        .map(|i| {
            let (requests, reviews) = (requests.clone(), reviews.clone());
            // Staggered durations, whole seconds, so expiries spread evenly.
            let seconds = min_seconds + (i as u64 * spread_seconds) / grants.max(1) as u64;
            async move {
                let name = format!("grant-{i:05}");
                let request = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
                    "metadata": {"name": name},
                    "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": format!("{seconds}s"),
                             "reason": "benchmark: staggered expiry of many grants"}});
                requests.create(&PostParams::default(), &serde_json::from_value(request)?).await?;
                let review = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview",
                    "metadata": {"name": format!("{name}-ok")},
                    "spec": {"accessRequest": name, "decision": "Approve", "reason": "benchmark approval"}});
                reviews.create(&PostParams::default(), &serde_json::from_value(review)?).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;
    let created_in = started.elapsed();
    eprintln!(
        "created in {:.1}s; waiting for every grant to become Active and then expire...",
        created_in.as_secs_f64()
    );

    // expiresAt of each grant, from status, once all are Active.
    let typed: Api<AccessRequest> = Api::namespaced(admin.clone(), namespace);
    let expires: HashMap<String, Timestamp> = loop {
        let list = typed.list(&Default::default()).await?;
        let map: HashMap<String, Timestamp> = list
            .items
            .iter()
            .filter_map(|r| {
                let status = r.status.as_ref()?;
                let name = driftwarden::access::grant::binding_name(r.metadata.name.as_deref()?);
                Some((name, status.expires_at.as_ref()?.0))
            })
            .collect();
        if map.len() == grants {
            break map;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let last = expires.values().max().copied().context("no grants")?;
    let mut lags = Vec::with_capacity(grants);
    let deadline = last.checked_add(Duration::from_secs(60))?;
    while lags.len() < grants && Timestamp::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(5), deleted_rx.recv()).await {
            Ok(Some((binding, at))) => {
                if let Some(expiry) = expires.get(&binding) {
                    lags.push(at.duration_since(*expiry).as_secs_f64());
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
    }
    anyhow::ensure!(lags.len() == grants, "only {} of {grants} RoleBindings were removed in time", lags.len());
    lags.sort_by(f64::total_cmp);
    let pick = |q: f64| lags[((lags.len() as f64 - 1.0) * q).round() as usize];
    let metrics = driftwarden_metrics(env.http_port).await.unwrap_or_default();
    println!("| grants | p50 | p99 | max | min |");
    println!("|---:|---:|---:|---:|---:|");
    println!("| {grants} | {:.3} s | {:.3} s | {:.3} s | {:.3} s |", pick(0.5), pick(0.99), pick(1.0), pick(0.0));
    println!();
    println!("requests created and approved in {:.1} s ({} at a time)", created_in.as_secs_f64(), parallel);
    println!("operator's own histogram: {}", metrics.trim());
    Ok(())
}

async fn setup_namespace(admin: &kube::Client, namespace: &str) -> anyhow::Result<()> {
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace, "labels": {"bench": namespace}}}))?;
    Api::<Namespace>::all(admin.clone()).create(&PostParams::default(), &ns).await?;
    for (role, group) in [("driftwarden-requester", "dev"), ("driftwarden-approver", "sre")] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": format!("{group}-{role}")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}],
        }))?;
        Api::<RoleBinding>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &binding).await?;
    }
    let policy: AccessPolicy = serde_json::from_value(json!({
        "metadata": {"name": namespace},
        "spec": {"namespaceSelector": {"matchLabels": {"bench": namespace}},
                 "roles": [{"kind": "ClusterRole", "name": "edit"}], "maxDuration": "1h",
                 "approvers": {"users": ["carol"]}},
    }))?;
    Api::<AccessPolicy>::all(admin.clone()).create(&PostParams::default(), &policy).await?;
    Ok(())
}

/// The operator's /metrics page.
pub(crate) async fn scrape_metrics(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

/// The operator's expiry-lag histogram summary, from its /metrics.
async fn driftwarden_metrics(port: u16) -> anyhow::Result<String> {
    Ok(scrape_metrics(port)
        .await?
        .lines()
        .filter(|l| {
            l.starts_with("driftwarden_grant_expiry_lag_seconds_sum")
                || l.starts_with("driftwarden_grant_expiry_lag_seconds_count")
        })
        .collect::<Vec<_>>()
        .join(", "))
}

fn percentiles(mut samples: Vec<f64>) -> (f64, f64, f64) {
    samples.sort_by(f64::total_cmp);
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    (pick(0.5), pick(0.99), pick(1.0))
}

/// Namespaces with managed objects and a DesiredState declaring them with
/// `remediation`, in sync; and the DesiredStates' status changes as they
/// arrive (managed and drifted summed over all of them, when).
pub(crate) struct Managed {
    env: OperatorEnv,
    /// The bench ConfigMaps' API of each DesiredState's namespace.
    config_maps: Vec<Api<k8s_openapi::api::core::v1::ConfigMap>>,
    /// How many objects each DesiredState declares.
    per_state: usize,
    statuses: tokio::sync::mpsc::UnboundedReceiver<(i64, i64, Instant)>,
    /// How long creating the objects took.
    created_in: Duration,
    /// How long the controller manager's ReplicaSets and Pods trailed the
    /// creation (none: not all there within the time allowed).
    controller_manager: Option<Duration>,
    /// From the DesiredStates' creation until all were in sync.
    first_sync: Duration,
}

/// A managed ConfigMap to edit: where it is and what it is called.
pub(crate) struct Target {
    api: Api<k8s_openapi::api::core::v1::ConfigMap>,
    name: String,
    /// `namespace/name`, as [`restorations`] reports it.
    key: String,
    /// Which object of the mix it is.
    index: usize,
}

impl Managed {
    /// `edits` distinct ConfigMaps to edit, the same every run, taken from
    /// the DesiredStates in turn.
    pub(crate) fn targets(&self, edits: usize) -> Vec<Target> {
        let states = self.config_maps.len();
        mix::edit_targets(edits.div_ceil(states), self.per_state)
            .into_iter()
            .flat_map(|i| (0..states).map(move |s| (s, i)))
            .take(edits)
            .map(|(s, i)| {
                let api = self.config_maps[s].clone();
                let name = mix::object_name(i);
                let key = format!("{}/{name}", api.namespace().unwrap_or_default());
                Target { api, name, key, index: i }
            })
            .collect()
    }

    /// The only namespace, for the benchmarks that take one DesiredState.
    pub(crate) fn single(&self) -> anyhow::Result<&Api<k8s_openapi::api::core::v1::ConfigMap>> {
        anyhow::ensure!(self.config_maps.len() == 1, "this benchmark takes one DesiredState (--states 1)");
        Ok(&self.config_maps[0])
    }
}

/// The declarations of `objects` managed objects, 500 to a file.
pub(crate) fn declarations(objects: usize) -> Vec<driftwarden::drift::pack::ManifestFile> {
    (0..objects.div_ceil(500))
        .map(|f| driftwarden::drift::pack::ManifestFile {
            path: format!("part{f:03}.yaml"),
            content: (f * 500..((f + 1) * 500).min(objects))
                .map(|i| serde_yaml_ng::to_string(&mix::manifest(i)).expect("a manifest is YAML"))
                .collect::<Vec<_>>()
                .join("---\n")
                .into_bytes(),
        })
        .collect()
}

pub(crate) async fn managed(scale: Scale, remediation: serde_json::Value, namespace: &str) -> anyhow::Result<Managed> {
    let env = start_env().await?;
    manage(env, scale, remediation, namespace).await
}

pub(crate) async fn start_env() -> anyhow::Result<OperatorEnv> {
    eprintln!("starting a control plane and the operator...");
    OperatorEnv::start(operator_binary()?).await
}

/// [`managed`] in a running environment.
pub(crate) async fn manage(
    env: OperatorEnv,
    scale: Scale,
    remediation: serde_json::Value,
    namespace: &str,
) -> anyhow::Result<Managed> {
    // DRIFTWARDEN_BENCH_UNDECLARED=off: without the undeclared-object
    // watches, to measure what they cost.
    let undeclared = std::env::var("DRIFTWARDEN_BENCH_UNDECLARED").map_or(true, |v| v != "off");
    manage_with(env, scale, remediation, namespace, json!({"enabled": undeclared})).await
}

/// [`manage`], with the DesiredStates' `spec.undeclared` given. With one
/// DesiredState its namespace is `namespace`; with more, `namespace-N`.
pub(crate) async fn manage_with(
    env: OperatorEnv,
    Scale { objects, parallel, states }: Scale,
    remediation: serde_json::Value,
    namespace: &str,
    undeclared: serde_json::Value,
) -> anyhow::Result<Managed> {
    use driftwarden::api::DesiredState;
    use k8s_openapi::api::core::v1::ConfigMap;

    anyhow::ensure!(states >= 1 && objects % states == 0, "--objects must be a multiple of --states");
    let per_state = objects / states;
    let namespaces: Vec<String> = match states {
        1 => vec![namespace.to_owned()],
        _ => (0..states).map(|s| format!("{namespace}-{s}")).collect(),
    };
    let admin = env.cp.client(User::Admin).await?;
    for namespace in &namespaces {
        setup_namespace(&admin, namespace).await?;
    }

    eprintln!(
        "creating {objects} objects (ConfigMaps, Services, Deployments, ServiceAccounts, Roles) in {states} namespaces..."
    );
    let started = Instant::now();
    let every = namespaces.iter().flat_map(|namespace| (0..per_state).map(move |i| (namespace, i)));
    stream::iter(every)
        .map(|(namespace, i)| mix::create_applied(&admin, namespace, i))
        .buffer_unordered(parallel)
        .try_collect::<Vec<()>>()
        .await?;
    let created_in = started.elapsed();
    eprintln!("created in {:.1}s", created_in.as_secs_f64());
    // Before the DesiredStates: their first sync, and everything after it,
    // is then measured at rest.
    let deployments = mix::count(mix::Kind::Deployment, per_state) * states;
    let controller_manager = match wait_for_controller_manager(&admin, &namespaces, deployments).await {
        Ok(waited) => Some(waited),
        Err(error) => {
            eprintln!("warning: {error:#}; measuring anyway, with the controller manager still at work");
            None
        }
    };
    eprintln!("publishing the declarations...");

    // The declarations, packed and signed the way `driftwarden publish` does.
    let files = declarations(per_state);
    let mut config_maps = Vec::with_capacity(states);
    for namespace in &namespaces {
        let api: Api<ConfigMap> = Api::namespaced(admin.clone(), namespace);
        let mut sources = driftwarden::drift::pack::pack(&files, "state", namespace, Some("bench0001"))?;
        env.publisher.sign(namespace, &mut sources);
        for source in sources {
            api.create(&PostParams::default(), &source).await?;
        }
        config_maps.push(api);
    }

    // Sums over the DesiredStates of the bench's namespaces, sent on each change.
    let (seen_tx, mut statuses) = tokio::sync::mpsc::unbounded_channel::<(i64, i64, Instant)>();
    let watch = watcher(Api::<DesiredState>::all(admin.clone()), watcher::Config::default());
    let ours: std::collections::BTreeSet<String> = namespaces.iter().cloned().collect();
    tokio::spawn(async move {
        let mut each: HashMap<String, (i64, i64)> = HashMap::new();
        let mut events = std::pin::pin!(watch);
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Apply(state) | watcher::Event::InitApply(state) = event
                && let Some(namespace) = state.metadata.namespace.clone().filter(|n| ours.contains(n))
                && let Some(status) = state.status
            {
                each.insert(namespace, (status.managed.unwrap_or(0), status.drifted.unwrap_or(0)));
                let (managed, drifted) = each.values().fold((0, 0), |(m, d), (a, b)| (m + a, d + b));
                let _ = seen_tx.send((managed, drifted, Instant::now()));
            }
        }
    });
    let synced = Instant::now();
    for namespace in &namespaces {
        let state: DesiredState = serde_json::from_value(json!({
            "metadata": {"name": "bench"},
            "spec": {"sources": [{"selector": {"matchLabels": {driftwarden::drift::pack::SOURCE_LABEL: "state"}}}],
                     "remediation": remediation, "undeclared": undeclared},
        }))?;
        Api::<DesiredState>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &state).await?;
    }
    // Ten minutes, and more past 60,000 objects.
    let patience = Duration::from_secs(600).max(Duration::from_millis(10 * objects as u64));
    loop {
        let (managed, drifted, _) = tokio::time::timeout(patience.saturating_sub(synced.elapsed()), statuses.recv())
            .await
            .with_context(|| format!("not in sync after {} s", patience.as_secs()))?
            .context("status watch ended")?;
        if managed == objects as i64 && drifted == 0 {
            break;
        }
    }
    let first_sync = synced.elapsed();
    eprintln!("in sync after {:.1}s", first_sync.as_secs_f64());
    Ok(Managed { env, config_maps, per_state, statuses, created_in, controller_manager, first_sync })
}

/// Waits (at most 30 minutes) until the controller manager has made what
/// the `deployments` Deployments in `namespaces` ask for: a ReplicaSet each
/// and [`mix::REPLICAS`] Pods each (Pending for good: there is no kubelet,
/// so none is ever replaced). Until then the API server and the operator's
/// watches are busy with them, and nothing is at rest.
pub(crate) async fn wait_for_controller_manager(
    admin: &kube::Client,
    namespaces: &[String],
    deployments: usize,
) -> anyhow::Result<Duration> {
    use k8s_openapi::api::apps::v1::ReplicaSet;
    use k8s_openapi::api::core::v1::Pod;
    let pods_expected = deployments * mix::REPLICAS;
    let started = Instant::now();
    let mut said = started;
    loop {
        let (mut sets, mut pods) = (0, 0);
        for namespace in namespaces {
            sets += count(&Api::<ReplicaSet>::namespaced(admin.clone(), namespace)).await?;
            pods += count(&Api::<Pod>::namespaced(admin.clone(), namespace)).await?;
        }
        if sets == deployments && pods == pods_expected {
            let waited = started.elapsed();
            eprintln!(
                "the controller manager's {sets} ReplicaSets and {pods} Pods were all there after {:.1}s more",
                waited.as_secs_f64()
            );
            return Ok(waited);
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30 * 60),
            "after 30 minutes, {sets} of {deployments} ReplicaSets and {pods} of {pods_expected} Pods"
        );
        if said.elapsed() >= Duration::from_secs(30) {
            eprintln!(
                "waiting for the controller manager: {sets} of {deployments} ReplicaSets, {pods} of {pods_expected} Pods after {:.0}s",
                started.elapsed().as_secs_f64()
            );
            said = Instant::now();
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// How many objects `api` lists: metadata only, 500 a page; the API server
/// says how many the other pages hold when it can (no selector), so usually
/// one page is read.
async fn count<K>(api: &Api<K>) -> anyhow::Result<usize>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut params = kube::api::ListParams::default().limit(500);
    let mut counted = 0;
    loop {
        let page = api.list_metadata(&params).await?;
        counted += page.items.len();
        if let Some(rest) = page.metadata.remaining_item_count {
            return Ok(counted + usize::try_from(rest).unwrap_or(0));
        }
        match page.metadata.continue_.filter(|token| !token.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(counted),
        }
    }
}

/// `count` distinct pseudo-random indices below `below` (the same every run).
pub(crate) fn random_targets(count: usize, below: usize) -> Vec<usize> {
    let mut random = 0x9e37_79b9_7f4a_7c15u64;
    let mut picked = std::collections::BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < count.min(below) {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        let target = (random % below as u64) as usize;
        if picked.insert(target) {
            order.push(target);
        }
    }
    order
}

/// When each bench ConfigMap is seen holding its declared value again, by
/// `namespace/name`.
fn restorations(
    config_maps: &[Api<k8s_openapi::api::core::v1::ConfigMap>],
) -> tokio::sync::mpsc::UnboundedReceiver<(String, Instant)> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    for api in config_maps {
        let tx = tx.clone();
        let watch = watcher(api.clone(), watcher::Config::default().labels("app=bench"));
        tokio::spawn(async move {
            let mut events = std::pin::pin!(watch);
            while let Some(Ok(event)) = events.next().await {
                if let watcher::Event::Apply(object) = event {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    let namespace = object.metadata.namespace.clone().unwrap_or_default();
                    let index: usize = name.trim_start_matches("obj-").parse().unwrap_or(usize::MAX);
                    let value = object.data.and_then(|d| d.get("value").cloned()).unwrap_or_default();
                    if value == index.to_string() {
                        let _ = tx.send((format!("{namespace}/{name}"), Instant::now()));
                    }
                }
            }
        });
    }
    rx
}

/// The latency row (p50, p99, max) of `edits` among `objects`, and the
/// operator's memory at the end.
fn report_latencies(edits_are: &str, objects: usize, edits: usize, latencies: Vec<f64>, env: &OperatorEnv) {
    let (p50, p99, max) = percentiles(latencies);
    println!("| objects | {edits_are} | p50 | p99 | max |");
    println!("|---:|---:|---:|---:|---:|");
    println!("| {objects} | {edits} | {p50:.3} s | {p99:.3} s | {max:.3} s |");
    // Keep the operator's log when asked (the control plane's directory goes with it).
    if let Some(keep) = std::env::var_os("DRIFTWARDEN_BENCH_LOG") {
        let _ = std::fs::copy(env.log(), keep);
    }
    if let Some(memory) = process::operator_pid(env.http_port).and_then(process::memory) {
        println!("operator RSS {} (peak {})", process::mib(memory.rss), process::mib(memory.peak));
    }
}

async fn revert(scale: Scale, edits: usize) -> anyhow::Result<()> {
    let namespace = "bench-revert";
    let bench = manage_with(start_env().await?, scale, json!({}), namespace, standing_is_kept()).await?;
    let env = &bench.env;
    grant_standing_edit(&env.cp.client(User::Admin).await?, &bench.config_maps).await?;
    let latencies = unauthorized_edits(&bench, &env.cp.client(User::Bob).await?, edits).await?;
    report_latencies("edits", scale.objects, edits, latencies, env);
    Ok(())
}

/// An on-call engineer (bob) with standing edit rights: no AccessRequest
/// behind them. The platform team's binding is not in Git, so the
/// DesiredStates are told to leave it alone (it would otherwise be deleted
/// as undeclared): their `spec.undeclared`, set at creation.
pub(crate) fn standing_is_kept() -> serde_json::Value {
    json!({"ignore": [{"kind": "RoleBinding", "name": "standing-edit"}]})
}

/// bob's standing RoleBinding (see [`standing_is_kept`]) in every
/// DesiredState's namespace.
pub(crate) async fn grant_standing_edit(
    admin: &kube::Client,
    config_maps: &[Api<k8s_openapi::api::core::v1::ConfigMap>],
) -> anyhow::Result<()> {
    for api in config_maps {
        let standing: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "standing-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}],
        }))?;
        let namespace = api.namespace().unwrap_or_default();
        Api::<RoleBinding>::namespaced(admin.clone(), namespace).create(&PostParams::default(), &standing).await?;
    }
    Ok(())
}

/// bob edits `edits` managed objects one at a time, with no access window
/// (the DesiredStates revert): from each write's response until the object
/// is seen holding its declared value again, in seconds.
pub(crate) async fn unauthorized_edits(bench: &Managed, bob: &kube::Client, edits: usize) -> anyhow::Result<Vec<f64>> {
    use kube::api::{Patch, PatchParams};
    let env = &bench.env;
    let mut restored = restorations(&bench.config_maps);
    eprintln!("bob edits {edits} objects one at a time...");
    let mut latencies = Vec::with_capacity(edits);
    for Target { api, name, key, .. } in bench.targets(edits) {
        let as_bob: Api<k8s_openapi::api::core::v1::ConfigMap> =
            Api::namespaced(bob.clone(), api.namespace().unwrap_or_default());
        let patch = json!({"data": {"value": "edited by hand"}});
        // Under load the revert can be seen before the write's response is.
        let sent = Instant::now();
        as_bob.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        let written = Instant::now();
        loop {
            let (seen, at) = tokio::time::timeout(Duration::from_secs(30), restored.recv())
                .await
                .with_context(|| {
                    let log = driftwarden_dev::controlplane::supervisor::tail(&env.log(), 40);
                    format!("{key} was not reverted within 30 s; the operator's log ends:\n{log}")
                })?
                .context("watch ended")?;
            if seen == key && at > sent {
                latencies.push(at.saturating_duration_since(written).as_secs_f64());
                break;
            }
        }
    }
    Ok(latencies)
}

async fn undeclared(scale: Scale, creates: usize) -> anyhow::Result<()> {
    let namespace = "bench-undeclared";
    let bench = managed(scale, json!({}), namespace).await?;
    let (env, config_maps) = (&bench.env, bench.single()?);
    let (gone_tx, mut gone) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = watcher(config_maps.clone(), watcher::Config::default().labels("bench-extra=yes"));
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watch);
        while let Some(Ok(event)) = events.next().await {
            if let watcher::Event::Delete(object) = event {
                let _ = gone_tx.send((object.metadata.name.unwrap_or_default(), Instant::now()));
            }
        }
    });
    // The admin, with no access window: every creation is unauthorized.
    // (What is created in the DesiredState's first second counts as older
    // than it: wait that out.)
    tokio::time::sleep(Duration::from_secs(2)).await;
    eprintln!("creating {creates} undeclared ConfigMaps one at a time...");
    let mut latencies = Vec::with_capacity(creates);
    for i in 0..creates {
        let name = format!("extra-{i}");
        let extra: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"bench-extra": "yes"}},
            "data": {"left": "behind"},
        }))?;
        config_maps.create(&PostParams::default(), &extra).await?;
        let created = Instant::now();
        loop {
            let (seen, at) = tokio::time::timeout(Duration::from_secs(30), gone.recv())
                .await
                .with_context(|| {
                    let log = driftwarden_dev::controlplane::supervisor::tail(&env.log(), 40);
                    format!("{name} was not deleted within 30 s; the operator's log ends:\n{log}")
                })?
                .context("watch ended")?;
            if seen == name {
                latencies.push(at.saturating_duration_since(created).as_secs_f64());
                break;
            }
        }
    }
    report_latencies("undeclared creates", scale.objects, creates, latencies, env);
    Ok(())
}

async fn window_end(scale: Scale, edits: usize) -> anyhow::Result<()> {
    use kube::api::{Patch, PatchParams};
    let namespace = "bench-window";
    let mut bench = managed(scale, json!({}), namespace).await?;
    bench.single()?;
    let (env, config_maps) = (&bench.env, &bench.config_maps);
    let alice = env.cp.client(User::Alice).await?;
    let requests: Api<DynamicObject> =
        Api::namespaced_with(alice.clone(), namespace, &ApiResource::erase::<AccessRequest>(&()));
    let reviews: Api<DynamicObject> =
        Api::namespaced_with(env.cp.client(User::Carol).await?, namespace, &ApiResource::erase::<AccessReview>(&()));
    let window_seconds = 30 + edits as u64 / 5;
    let request = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "incident"},
        "spec": {"role": {"kind": "ClusterRole", "name": "edit"}, "duration": format!("{window_seconds}s"),
                 "reason": "benchmark: many changes in one window"}});
    requests.create(&PostParams::default(), &serde_json::from_value(request)?).await?;
    let review = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessReview",
        "metadata": {"name": "incident-ok"},
        "spec": {"accessRequest": "incident", "decision": "Approve", "reason": "benchmark approval"}});
    reviews.create(&PostParams::default(), &serde_json::from_value(review)?).await?;
    let typed: Api<AccessRequest> = Api::namespaced(env.cp.client(User::Admin).await?, namespace);
    let expires_at = loop {
        let request = typed.get("incident").await?;
        if let Some(expires) = request.status.and_then(|s| s.expires_at) {
            break expires.0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    eprintln!("alice edits {edits} objects inside her {window_seconds}s window...");
    let as_alice: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(alice, namespace);
    let targets = bench.targets(edits);
    stream::iter(targets.iter())
        .map(|target| {
            let api = as_alice.clone();
            async move {
                let patch = json!({"data": {"value": "changed during the incident"}});
                api.patch(&target.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(scale.parallel)
        .try_collect::<Vec<()>>()
        .await?;
    loop {
        let (_, drifted, _) = bench.statuses.recv().await.context("status watch ended")?;
        if drifted == edits as i64 {
            break;
        }
    }
    anyhow::ensure!(Timestamp::now() < expires_at, "the window ended before all edits were held: lengthen it");
    eprintln!("all {edits} held; waiting for the window to end at {expires_at}...");
    let mut restored = restorations(config_maps);
    let mut pending: std::collections::BTreeSet<String> = targets.iter().map(|t| t.key.clone()).collect();
    let mut lags = Vec::with_capacity(edits);
    let deadline = Instant::now() + Duration::from_secs(window_seconds + 60);
    while !pending.is_empty() && Instant::now() < deadline {
        let Ok(Some((name, _))) = tokio::time::timeout(Duration::from_secs(5), restored.recv()).await else {
            continue;
        };
        if pending.remove(&name) {
            lags.push(Timestamp::now().duration_since(expires_at).as_secs_f64());
        }
    }
    anyhow::ensure!(pending.is_empty(), "{} objects were not reverted", pending.len());
    report_latencies("session edits", scale.objects, edits, lags, env);
    Ok(())
}

async fn detection(scale: Scale, edits: usize) -> anyhow::Result<()> {
    // Report only: the drift stays, so each edit adds one to the count.
    let report = json!({"unauthorized": "Report"});
    let mut bench = managed(scale, report, "bench-drift").await?;
    let latencies = detect_edits(&mut bench, edits).await?;
    report_latencies("edits", scale.objects, edits, latencies, &bench.env);
    Ok(())
}

/// Edits `edits` managed objects one at a time, none drifted before and
/// the DesiredStates only reporting: from each write's response until the
/// status counts one more drifted, in seconds.
pub(crate) async fn detect_edits(bench: &mut Managed, edits: usize) -> anyhow::Result<Vec<f64>> {
    use kube::api::{Patch, PatchParams};
    eprintln!("editing {edits} objects one at a time...");
    let mut latencies = Vec::with_capacity(edits);
    for (done, Target { api, name, .. }) in bench.targets(edits).into_iter().enumerate() {
        let patch = json!({"data": {"value": "edited by hand"}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        let written = Instant::now();
        loop {
            let (_, drifted, at) = tokio::time::timeout(Duration::from_secs(30), bench.statuses.recv())
                .await?
                .context("status watch ended")?;
            if drifted > done as i64 {
                latencies.push(at.duration_since(written).as_secs_f64());
                break;
            }
        }
    }
    Ok(latencies)
}
