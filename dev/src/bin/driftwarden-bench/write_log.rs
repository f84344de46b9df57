//! What the write-log webhook costs a write, measured with the release
//! operator (the tests run a debug build): the same merge patch, one at a
//! time, to a ConfigMap in a managed namespace (of a kind the DesiredState
//! declares, so the webhook covers it) and to one in a namespace no
//! DesiredState manages (the webhook is not called there), interleaved in
//! rounds so both see the same load. The managed namespace's ConfigMap is
//! one Git does not declare, with undeclared objects not judged: no drift,
//! nothing reverted, but each write is admitted through the webhook,
//! confirmed by the watch and wakes the DesiredState's pass, as any write
//! in a managed namespace does.

use std::time::Instant;

use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{Scale, manage_with, percentiles, scrape_metrics, setup_namespace, start_env};

const WEBHOOK: &str = "name=\"writes.driftwarden.io\"";

/// One value of a metric line that starts with `metric` (and holds `filter`), summed.
fn total(text: &str, metric: &str, filter: &str) -> f64 {
    (text.lines())
        .filter(|l| l.starts_with(metric) && l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The API server's calls to the webhook: total seconds, count, and how many took under 5 ms.
async fn calls(admin: &kube::Client) -> anyhow::Result<(f64, f64, f64)> {
    let text = admin.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let histogram = "apiserver_admission_webhook_admission_duration_seconds";
    let under_5ms = (text.lines())
        .filter(|l| l.starts_with(&format!("{histogram}_bucket")) && l.contains(WEBHOOK) && l.contains("le=\"0.005\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    Ok((
        total(&text, &format!("{histogram}_sum"), WEBHOOK),
        total(&text, &format!("{histogram}_count"), WEBHOOK),
        under_5ms,
    ))
}

async fn cpu_seconds(port: u16) -> anyhow::Result<f64> {
    Ok(total(&scrape_metrics(port).await?, "process_cpu_seconds_total ", ""))
}

async fn timed(api: &Api<ConfigMap>, name: &str, count: usize, round: usize) -> anyhow::Result<Vec<f64>> {
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let patch =
            Patch::Merge(json!({"metadata": {"annotations": {"bench.driftwarden.io/n": format!("{round}-{n}")}}}));
        let started = Instant::now();
        api.patch(name, &PatchParams::default(), &patch).await?;
        latencies.push(started.elapsed().as_secs_f64());
    }
    Ok(latencies)
}

pub async fn run(scale: Scale, writes: usize) -> anyhow::Result<()> {
    let namespace = "bench-write-log";
    let objects = scale.objects;
    let env = start_env().await?;
    let bench =
        manage_with(env, scale, json!({"unauthorized": "Revert"}), namespace, json!({"enabled": false})).await?;
    let env = &bench.env;
    let admin = env.cp.client(User::Admin).await?;
    let unmanaged = "bench-write-log-off";
    setup_namespace(&admin, unmanaged).await?;
    let off: Api<ConfigMap> = Api::namespaced(admin.clone(), unmanaged);
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bench"}, "data": {"n": "0"}}))?;
    off.create(&PostParams::default(), &cm).await?;
    let on = bench.single()?;
    on.create(&PostParams::default(), &cm).await?;
    let target = "bench";

    timed(on, target, 20, 0).await?;
    timed(&off, "bench", 20, 0).await?;
    let rounds = 10;
    let per_round = writes.div_ceil(rounds);
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut cpu_with, mut cpu_without) = (0.0, 0.0);
    let passes = || async {
        let text = scrape_metrics(env.http_port).await?;
        let drift = "controller=\"drift\"";
        let sum = total(&text, "driftwarden_reconcile_duration_seconds_sum", drift);
        anyhow::Ok((sum, total(&text, "driftwarden_reconcile_duration_seconds_count", drift)))
    };
    let passes_before = passes().await?;
    let before = calls(&admin).await?;
    for round in 1..=rounds {
        let start = cpu_seconds(env.http_port).await?;
        with.extend(timed(on, target, per_round, round).await?);
        let between = cpu_seconds(env.http_port).await?;
        without.extend(timed(&off, "bench", per_round, round).await?);
        cpu_with += between - start;
        cpu_without += cpu_seconds(env.http_port).await? - between;
    }
    let after = calls(&admin).await?;
    let passes_after = passes().await?;
    let state = kube::Api::<driftwarden::api::DesiredState>::namespaced(admin.clone(), namespace).get("bench").await?;
    let drifted = state.status.and_then(|s| s.drifted).unwrap_or(0);

    let n = with.len();
    let (with_p50, with_p99, _) = percentiles(with);
    let (without_p50, without_p99, _) = percentiles(without);
    let count = (after.1 - before.1).max(1.0);
    let ms = |s: f64| s * 1e3;
    println!("| {n} writes, {objects} managed objects | p50 | p99 |");
    println!("|---|---:|---:|");
    println!("| to a managed object (webhook called) | {:.1} ms | {:.1} ms |", ms(with_p50), ms(with_p99));
    println!("| to an unmanaged namespace (no webhook) | {:.1} ms | {:.1} ms |", ms(without_p50), ms(without_p99));
    println!("| added | {:.1} ms | {:.1} ms |", ms(with_p50 - without_p50), ms(with_p99 - without_p99));
    println!();
    println!(
        "the API server's calls to the webhook: {count} in {:.2} ms on average, {:.1}% under 5 ms",
        ms((after.0 - before.0) / count),
        (after.2 - before.2) / count * 100.0
    );
    let per_thousand = |cpu: f64| cpu / n as f64 * 1000.0 * 1e3;
    println!(
        "operator CPU per 1,000 writes: {:.0} ms to the managed object (admission, confirmation, the pass it wakes), {:.0} ms to the unmanaged namespace",
        per_thousand(cpu_with),
        per_thousand(cpu_without)
    );
    let pass_count = passes_after.1 - passes_before.1;
    println!(
        "drift passes meanwhile: {pass_count} ({:.2} ms each on average, wall time)",
        ms((passes_after.0 - passes_before.0) / pass_count.max(1.0))
    );
    println!("drifted objects after the writes: {drifted} (undeclared objects are not judged here: no drift)");
    restart_from_the_journal(env).await
}

/// Restarts the operator (SIGKILL, as a crash) and reports how long its
/// first lead took to read the write journal back, and how big it is.
async fn restart_from_the_journal(env: &driftwarden_dev::controlplane::operator::OperatorEnv) -> anyhow::Result<()> {
    use driftwarden_dev::controlplane::operator::OPERATOR_NAMESPACE;
    // The journal is written once a second.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let admin = env.cp.client(User::Admin).await?;
    let chunks = Api::<ConfigMap>::namespaced(admin, OPERATOR_NAMESPACE)
        .list(&kube::api::ListParams::default().labels("driftwarden.io/write-journal"))
        .await?
        .items;
    let texts: Vec<&String> = chunks.iter().filter_map(|c| c.data.as_ref()?.get("records")).collect();
    let bytes: usize = texts.iter().map(|t| t.len()).sum();
    // Each write once: the same write from admission and the audit webhook is one line.
    let (mut lines, mut from_audit) = (0, 0);
    let mut writes = std::collections::BTreeSet::new();
    for text in &texts {
        for entry in driftwarden::gate::journal::decode(text).0 {
            lines += 1;
            from_audit += usize::from(entry.source == driftwarden::gate::writes::Source::Audit);
            writes.insert((entry.record.namespace, entry.record.name, entry.record.user, entry.record.at));
        }
    }
    println!(
        "journal lines: {lines} ({from_audit} first reported by the audit webhook, in any namespace), distinct writes: {}",
        writes.len()
    );
    let log = env.log();
    let before = std::fs::read_to_string(&log).unwrap_or_default().len();
    env.kill_operator();
    env.start_operator()?;
    env.wait_until_serving().await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let line = text.get(before..).unwrap_or_default().lines().find(|l| l.contains("write journal read"));
        if let Some(line) = line {
            let read: serde_json::Value = serde_json::from_str(line)?;
            println!(
                "journal: {} chunks, {:.1} MiB; read back after a restart: {} records in {} ms",
                chunks.len(),
                bytes as f64 / f64::from(1 << 20),
                read["records"],
                read["took_ms"]
            );
            return Ok(());
        }
        anyhow::ensure!(std::time::Instant::now() < deadline, "the restarted operator did not read its journal");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
