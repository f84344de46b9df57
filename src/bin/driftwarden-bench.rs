//! End-to-end benchmarks against a real local control plane, with the
//! operator running as it does in a cluster. Not tests: they print figures.
//!
//!   cargo run --release --bin driftwarden-bench -- expiry --grants 1000

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use driftwarden::api::{AccessPolicy, AccessRequest, AccessReview};
use driftwarden::controlplane::User;
use driftwarden::controlplane::operator::OperatorEnv;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::ApiResource;
use kube::runtime::watcher;
use serde_json::json;

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
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Expiry { grants, min_seconds, spread_seconds, parallel } => {
            expiry(grants, min_seconds, spread_seconds, parallel).await
        }
    }
}

/// The `driftwarden` binary next to this one (same profile).
fn operator_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let sibling = me.with_file_name("driftwarden");
    anyhow::ensure!(sibling.exists(), "{} not found: build it first (cargo build --release)", sibling.display());
    Ok(sibling)
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
                let name = driftwarden::operator::access::binding_name(r.metadata.name.as_deref()?);
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

/// The operator's expiry-lag histogram summary, from its /metrics.
async fn driftwarden_metrics(port: u16) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body
        .lines()
        .filter(|l| {
            l.starts_with("driftwarden_grant_expiry_lag_seconds_sum")
                || l.starts_with("driftwarden_grant_expiry_lag_seconds_count")
        })
        .collect::<Vec<_>>()
        .join(", "))
}
