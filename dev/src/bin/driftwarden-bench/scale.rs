//! Many objects, created once: at 100,000 creating them takes longer than
//! any one measurement, so this measures in turn over the same objects the
//! first sync, memory and CPU at rest, drift detection, unauthorized
//! reverts and the operator's restart. A phase that fails is reported and
//! the next one runs where it can.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use driftwarden::api::DesiredState;
use driftwarden_dev::controlplane::User;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::process::{self, mib};
use crate::steady::{first_drift_pass, operator_pid};
use crate::{Managed, Scale};

/// `window`: the window at rest; `settle`: quiet time after the first sync
/// and after the operator's restart before measuring.
pub async fn run(scale: Scale, edits: usize, window: Duration, settle: Duration) -> anyhow::Result<()> {
    let objects = scale.objects;
    // Report first (detection), Revert later; bob's standing binding, made
    // for the revert phase, must be ignored from the DesiredStates' creation.
    let report = json!({"unauthorized": "Report"});
    let env = crate::start_env().await?;
    let mut bench = crate::manage_with(env, scale, report, "bench-scale", crate::standing_is_kept()).await?;
    let admin = bench.env.cp.client(User::Admin).await?;

    println!("| objects | states | created in | ReplicaSets and Pods after | first sync |");
    println!("|---:|---:|---:|---:|---:|");
    let trailed = bench.controller_manager.map_or("not all there".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
    println!(
        "| {objects} | {} | {:.1} s | {trailed} | {:.1} s |",
        scale.states,
        bench.created_in.as_secs_f64(),
        bench.first_sync.as_secs_f64()
    );
    println!();

    eprintln!("settling for {} s...", settle.as_secs());
    tokio::time::sleep(settle).await;
    let rest = match at_rest(&bench, window).await {
        Ok((rss, cpu)) => {
            let seconds = window.as_secs_f64();
            println!("| objects | RSS at rest (median) | CPU over {seconds:.0} s |");
            println!("|---:|---:|---:|");
            println!("| {objects} | {} | {cpu:.2} s ({:.2}% of a core) |", mib(rss), 100.0 * cpu / seconds);
            println!();
            Some(rss)
        }
        Err(error) => {
            println!("at rest: failed: {error:#}");
            println!();
            None
        }
    };

    println!("drift detection (remediation Report):");
    println!();
    match crate::detect_edits(&mut bench, edits).await {
        Ok(latencies) => crate::report_latencies("edits", objects, edits, latencies, &bench.env),
        Err(error) => println!("detection: failed: {error:#}"),
    }
    println!();

    println!("unauthorized revert (remediation Revert):");
    println!();
    if let Err(error) = restore(&mut bench, edits).await {
        println!("putting the detection's edits back: failed: {error:#}; going on");
    }
    let reverts = async {
        remediate(&admin, &bench, json!({"unauthorized": "Revert"})).await?;
        crate::grant_standing_edit(&admin, &bench.config_maps).await?;
        crate::unauthorized_edits(&bench, &bench.env.cp.client(User::Bob).await?, edits).await
    };
    match reverts.await {
        Ok(latencies) => crate::report_latencies("edits", objects, edits, latencies, &bench.env),
        Err(error) => println!("revert: failed: {error:#}"),
    }
    println!();

    eprintln!("restarting the operator (SIGKILL; a full list and diff of everything)...");
    let env = &bench.env;
    env.kill_operator();
    let started = Instant::now();
    let restart = async {
        env.start_operator()?;
        let pid = operator_pid(env).await?;
        let (pass, samples) = process::sample_rss_while(pid, first_drift_pass(env, scale.states)).await;
        let took = pass.map(|_| started.elapsed()).context("no full drift pass within 10 minutes")?;
        // VmHWM keeps the peak of the rest of the start-up.
        tokio::time::sleep(settle).await;
        let peak = process::memory(pid).unwrap_or_default().peak.max(samples.max());
        anyhow::Ok((took, peak))
    };
    match restart.await {
        Ok((took, peak)) => {
            println!("| objects | restart to first full drift pass | peak RSS | peak / RSS at rest |");
            println!("|---:|---:|---:|---:|");
            let ratio = rest.map_or("-".to_owned(), |rss| format!("{:.2}x", peak as f64 / rss.max(1) as f64));
            println!("| {objects} | {:.2} s | {} | {ratio} |", took.as_secs_f64(), mib(peak));
        }
        Err(error) => println!("operator restart: failed: {error:#}"),
    }
    Ok(())
}

/// The operator's median RSS over `window`, and the CPU seconds it used in it.
async fn at_rest(bench: &Managed, window: Duration) -> anyhow::Result<(u64, f64)> {
    let pid = operator_pid(&bench.env).await?;
    eprintln!("at rest for {} s...", window.as_secs());
    let cpu_before = process::cpu_seconds(pid).context("no CPU time in /proc")?;
    let (_, samples) = process::sample_rss_while(pid, tokio::time::sleep(window)).await;
    let cpu = process::cpu_seconds(pid).context("the operator exited during the window")? - cpu_before;
    Ok((samples.median(), cpu))
}

/// Puts the objects the detection edited back to their declared value and
/// waits until no DesiredState counts any drifted.
async fn restore(bench: &mut Managed, edits: usize) -> anyhow::Result<()> {
    eprintln!("putting {edits} objects back...");
    for target in bench.targets(edits) {
        let patch = json!({"data": {"value": crate::mix::manifest(target.index)["data"]["value"]}});
        target.api.patch(&target.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    loop {
        let (_, drifted, _) = tokio::time::timeout(Duration::from_secs(60), bench.statuses.recv())
            .await
            .context("still drifted 60 s after the last status change")?
            .context("status watch ended")?;
        if drifted == 0 {
            return Ok(());
        }
    }
}

/// Sets every DesiredState's `spec.remediation` and waits (a minute at
/// most) until the operator has observed it.
async fn remediate(admin: &kube::Client, bench: &Managed, remediation: serde_json::Value) -> anyhow::Result<()> {
    let patch = json!({"spec": {"remediation": remediation}});
    let states: Vec<Api<DesiredState>> = bench
        .config_maps
        .iter()
        .map(|api| Api::namespaced(admin.clone(), api.namespace().unwrap_or_default()))
        .collect();
    for api in &states {
        api.patch("bench", &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for api in &states {
        loop {
            let state = api.get("bench").await?;
            let observed = state.status.and_then(|s| s.observed_generation);
            if observed.is_some() && observed >= state.metadata.generation {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the operator did not observe remediation {remediation}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(())
}
