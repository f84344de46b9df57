//! The operator at rest over N managed objects: its memory, CPU and API
//! requests once everything is in sync, and its memory when it must list
//! everything again (the API server restarts; the operator restarts).

use std::time::{Duration, Instant};

use driftwarden_dev::controlplane::operator::{OPERATOR_NAMESPACE, OperatorEnv};
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::audit_log::{self, AuditLog, Counts};
use crate::process::{self, mib};
use crate::{Managed, Scale, manage};

/// `window`: the steady-state window; `settle`: quiet time after a
/// disturbance before measuring.
pub async fn run(scale: Scale, window: Duration, settle: Duration) -> anyhow::Result<()> {
    let objects = scale.objects;
    let namespace = "bench-steady";
    let env = crate::start_env().await?;
    // Logging every request from the start: the steady window then has
    // memory, CPU and requests at once.
    eprintln!("restarting the API server with an audit log of every request...");
    let audit = AuditLog::restart_apiserver(&env).await?;
    let Managed { env, config_maps, per_state, .. } = manage(env, scale, json!({}), namespace).await?;
    let admin = env.cp.client(driftwarden_dev::controlplane::User::Admin).await?;
    // Per object: the first DesiredState's objects stand for all of them.
    let first = config_maps[0].namespace().unwrap_or_default().to_owned();
    let footprint = crate::cache::footprint(admin, &first, per_state).await?;
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{}", env.service_account);
    let pid = operator_pid(&env).await?;
    tokio::time::sleep(settle).await;

    eprintln!("steady state for {} s...", window.as_secs());
    let cpu_before = process::cpu_seconds(pid).unwrap_or(0.0);
    let from = Timestamp::now();
    let (_, steady) = process::sample_rss_while(pid, tokio::time::sleep(window)).await;
    let to = Timestamp::now();
    let cpu = process::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let in_window = audit.requests(&user, from, to)?;
    let requests = audit_log::count(&in_window);

    eprintln!("restarting the API server (every watch breaks)...");
    let _ = process::reset_peak(pid);
    let restart_at = Timestamp::now();
    audit.restart().await?;
    let (_, after_apiserver) = process::sample_rss_while(pid, tokio::time::sleep(settle)).await;
    let apiserver_peak = process::memory(pid).unwrap_or_default().peak.max(after_apiserver.max());
    let resumed = audit_log::count(&audit.requests(&user, restart_at, Timestamp::now())?);

    eprintln!("restarting the operator (a full list and diff of everything)...");
    env.kill_operator();
    let started = Instant::now();
    env.start_operator()?;
    let pid = operator_pid(&env).await?;
    let (full_pass, cold) = process::sample_rss_while(pid, first_drift_pass(&env, scale.states)).await;
    let full_pass = full_pass.map(|_| started.elapsed());
    // VmHWM keeps the peak of the rest of the start-up.
    tokio::time::sleep(settle).await;
    let cold_peak = process::memory(pid).unwrap_or_default().peak.max(cold.max());
    let (_, rested) = process::sample_rss_while(pid, tokio::time::sleep(Duration::from_secs(10))).await;

    let seconds = window.as_secs_f64();
    println!(
        "| objects | RSS steady (median) | peak on API server restart | peak on operator restart (full list) | RSS after restart | CPU over {seconds:.0} s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {objects} | {} | {} ({:.2}x) | {} ({:.2}x) | {} | {cpu:.2} s ({:.2}% of a core) |",
        mib(steady.median()),
        mib(apiserver_peak),
        apiserver_peak as f64 / steady.median().max(1) as f64,
        mib(cold_peak),
        cold_peak as f64 / steady.median().max(1) as f64,
        mib(rested.median()),
        100.0 * cpu / seconds,
    );
    println!();
    let by_verb = |verb: &str| -> usize { requests.iter().filter(|((v, _), _)| v == verb).map(|(_, n)| n).sum() };
    let (writes, lease_writes) = writes(&requests);
    println!("| objects | window | get | list | watch | writes | of which the leader Lease |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {objects} | {seconds:.0} s | {} | {} | {} | {writes} | {lease_writes} |",
        by_verb("get"),
        by_verb("list"),
        by_verb("watch")
    );
    println!();
    println!("operator requests in the window: {}", audit_log::describe(&requests));
    // Lists and writes other than lease renewals should not happen at rest: show them.
    for request in
        in_window.iter().filter(|r| r.verb == "list" || audit_log::is_write(&r.verb) && r.resource != "leases")
    {
        let after = request.at.duration_since(from).as_secs_f64();
        println!("- {after:.1} s into the window: {} {}", request.verb, request.uri);
    }
    println!("after the API server restart (next {} s): {}", settle.as_secs(), audit_log::describe(&resumed));
    match full_pass {
        Some(took) => println!("operator restart to its first full drift pass: {:.2} s", took.as_secs_f64()),
        None => println!("operator restart: no drift pass within the time allowed"),
    }
    println!();
    footprint.print();
    Ok(())
}

/// Writes, and those of them to the leader election Lease (renewals).
fn writes(counts: &Counts) -> (usize, usize) {
    let count = |lease_only: bool| -> usize {
        counts
            .iter()
            .filter(|((verb, resource), _)| audit_log::is_write(verb) && (!lease_only || resource == "leases"))
            .map(|(_, n)| n)
            .sum()
    };
    (count(false), count(true))
}

/// The operator's pid once its process is up.
pub(crate) async fn operator_pid(env: &OperatorEnv) -> anyhow::Result<u32> {
    for _ in 0..200 {
        if let Some(pid) = process::operator_pid(env.http_port) {
            return Ok(pid);
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    anyhow::bail!("the operator process did not start")
}

/// Waits (at most 10 minutes) until the drift controller has finished
/// `states` reconciles: the first pass of every DesiredState, which lists
/// and diffs every object (at rest nothing else wakes one).
pub(crate) async fn first_drift_pass(env: &OperatorEnv, states: usize) -> Option<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while Instant::now() < deadline {
        let metrics = crate::scrape_metrics(env.http_port).await.unwrap_or_default();
        let done = metrics
            .lines()
            .find(|l| l.starts_with("driftwarden_reconcile_duration_seconds_count{controller=\"drift\"}"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .is_some_and(|count| count >= states as f64);
        if done {
            return Some(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}
