//! The write log from admission: on a cluster whose API server sends no
//! audit events (a managed one), the operator's always-allowing `/writes`
//! webhook says who wrote what, and the gate holds only what a grantee
//! wrote; with the audit webhook too, each write is counted once.

use std::time::{Duration, Instant};

use driftwarden::api::DriftClass;
use driftwarden_dev::controlplane::User;
use k8s_openapi::api::core::v1::{ConfigMap, ResourceQuota};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::common::{AccessTest, drift_setup, drift_setup_without_audit};
use crate::gate::{
    alice_window, drifted, held_for, managed_shop, mode, replicas, request_status, scale, set_mode, standing_edit,
    until,
};
use crate::support::eventually;

/// bob, with standing rights and no window, changes what alice's window
/// covers: reverted at once; alice's own change is held as hers.
async fn third_party_reverted_grantee_held(t: &AccessTest) {
    standing_edit(t, "bob").await;
    managed_shop(t, json!({})).await;
    alice_window(t, "alice-fix", "1m").await;

    let changed = Instant::now();
    set_mode(t, User::Bob, "bob-was-here").await;
    until(Duration::from_secs(10), "bob's change reverted", || async { mode(t).await == "safe" }).await;
    let took = changed.elapsed();
    assert!(took < Duration::from_secs(1), "bob's change was reverted after {took:?}");
    let status = t.wait_for_status("shop", Duration::from_secs(5), |s| s.last_revert.is_some()).await;
    assert_eq!(status.last_revert.unwrap().class, DriftClass::Unauthorized);
    eprintln!("write log: a third party's change reverted {took:?} after it was made");

    scale(t, User::Alice, 5).await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "web", "alice-fix")).await;
    assert_eq!(replicas(t).await, 5);
    // The request's activity summary is written after the record is
    // confirmed, by its own worker: wait for it.
    let logged = |status: &driftwarden::api::AccessRequestStatus| {
        status.activity.iter().any(|e| e.resource == "deployments.apps/scale" && e.name.as_deref() == Some("web"))
    };
    let _ =
        eventually(Duration::from_secs(10), || async { logged(&request_status(t, "alice-fix").await).then_some(()) })
            .await;
    let status = request_status(t, "alice-fix").await;
    assert!(status.activity.iter().all(|e| e.user == "alice"), "{:#?}", status.activity);
    assert!(logged(&status), "{:#?}", status.activity);
}

#[tokio::test]
async fn without_audit_a_third_partys_change_is_reverted_and_the_grantees_is_held_as_hers() {
    let t = drift_setup_without_audit("wlog-no-audit").await;
    third_party_reverted_grantee_held(&t).await;
    let status = request_status(&t, "alice-fix").await;
    assert!(status.scope_writes.iter().any(|e| e.user == "bob" && e.name.as_deref() == Some("settings")));

    // A write the API server refused after admission (the quota is checked
    // last) and a dry run are in no log.
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": {"name": "no-more-configmaps"}, "spec": {"hard": {"configmaps": "0"}},
    }))
    .unwrap();
    let quotas = t.env.api::<ResourceQuota>(User::Admin).await;
    quotas.create(&PostParams::default(), &quota).await.unwrap();
    // The quota is enforced once the controller has counted what is used.
    eventually(Duration::from_secs(20), || async {
        quotas.get("no-more-configmaps").await.ok()?.status?.used.filter(|u| u.contains_key("configmaps"))
    })
    .await
    .expect("the quota was counted");
    let config_maps: Api<ConfigMap> = t.env.api(User::Alice).await;
    let refused = eventually(Duration::from_secs(10), || async {
        let cm = serde_json::from_value(json!({"metadata": {"name": "refused-cm"}})).unwrap();
        match config_maps.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(status)) if status.message.contains("quota") => Some(()),
            Err(_) => None,
            Ok(_) => panic!("the quota let refused-cm in"),
        }
    })
    .await;
    assert!(refused.is_some(), "the quota never refused the create");
    let dry = PostParams { dry_run: true, ..Default::default() };
    let admin_config_maps: Api<ConfigMap> = t.env.api(User::Admin).await;
    t.env.api::<ResourceQuota>(User::Admin).await.delete("no-more-configmaps", &Default::default()).await.unwrap();
    let cm = serde_json::from_value(json!({"metadata": {"name": "dry-cm"}})).unwrap();
    eventually(Duration::from_secs(10), || async { config_maps.create(&dry, &cm).await.ok() }).await.unwrap();
    let patch = Patch::Merge(json!({"data": {"mode": "dry"}}));
    admin_config_maps.patch("settings", &PatchParams { dry_run: true, ..Default::default() }, &patch).await.unwrap();

    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = request_status(&t, "alice-fix").await;
    let named: Vec<Option<&str>> =
        status.activity.iter().chain(&status.scope_writes).map(|e| e.name.as_deref()).collect();
    assert!(!named.contains(&Some("refused-cm")) && !named.contains(&Some("dry-cm")), "{named:?}");
    let settings_writes = status.scope_writes.iter().filter(|e| e.name.as_deref() == Some("settings")).count();
    assert_eq!(settings_writes, 1, "bob's write, once (the operator's revert is nobody's): {:#?}", status.scope_writes);
}

#[tokio::test]
async fn with_audit_too_each_write_is_counted_once() {
    let t = drift_setup("wlog-with-audit").await;
    third_party_reverted_grantee_held(&t).await;
    // Both sources have reported by now (audit batches wait at most 1 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = request_status(&t, "alice-fix").await;
    let scales = status.activity.iter().filter(|e| e.resource == "deployments.apps/scale").count();
    assert_eq!(scales, 1, "{:#?}", status.activity);
    let bobs = status.scope_writes.iter().filter(|e| e.user == "bob").count();
    assert_eq!(bobs, 1, "{:#?}", status.scope_writes);
}

#[tokio::test]
async fn a_third_partys_write_survives_a_burst_of_a_thousand_other_writes() {
    let t = drift_setup_without_audit("wlog-burst").await;
    standing_edit(&t, "bob").await;
    // The burst's object exists before the DesiredState (so it is not an
    // undeclared object created now).
    let noise: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "noise"}, "data": {"n": "0"}})).unwrap();
    t.env.api::<ConfigMap>(User::Admin).await.create(&PostParams::default(), &noise).await.unwrap();
    crate::common::next_second().await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report"}})).await;
    alice_window(&t, "alice-burst", "5m").await;

    set_mode(&t, User::Alice, "alice").await;
    set_mode(&t, User::Bob, "bob").await;
    let api: Api<ConfigMap> = t.env.api(User::Alice).await;
    let started = Instant::now();
    for n in 1..=1000 {
        let patch = Patch::Merge(json!({"data": {"n": n.to_string()}}));
        api.patch("noise", &PatchParams::default(), &patch).await.unwrap();
    }
    eprintln!("write log: 1,000 writes took {:?}", started.elapsed());
    // A pass after the burst still sees bob's write: the drift is his too.
    set_mode(&t, User::Alice, "alice-again").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = t
        .wait_for_status("shop", Duration::from_secs(10), |s| {
            drifted(s, "settings").is_some_and(|d| d.class == DriftClass::Unauthorized)
        })
        .await;
    assert!(drifted(&status, "settings").unwrap().access_request.is_none());
}

/// Writes `count` merge patches to the ConfigMap `noise` as `user`.
async fn noise(t: &AccessTest, user: User, count: usize) {
    let api: Api<ConfigMap> = t.env.api(user).await;
    for n in 1..=count {
        let patch = Patch::Merge(json!({"data": {"n": format!("{user:?}-{n}")}}));
        api.patch("noise", &PatchParams::default(), &patch).await.unwrap();
    }
}

/// A restarted operator starts from the journal of the write log, not from
/// the requests' summaries (the newest 100 writes each): alice's held change
/// stays hers, and bob's change to what alice changed after him stays his,
/// though both records were pushed out of the summaries before the restart.
#[tokio::test]
async fn a_restarted_operator_judges_from_the_whole_record_not_the_summaries() {
    let mut t = drift_setup_without_audit("wlog-restart").await;
    t.running.take();
    let exclusive = crate::support::operator::OPERATOR_WITHOUT_AUDIT.write().await;
    t.operator.wait_until_serving().await.unwrap();
    standing_edit(&t, "bob").await;
    let noisy: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "noise"}, "data": {"n": "0"}})).unwrap();
    t.env.api::<ConfigMap>(User::Admin).await.create(&PostParams::default(), &noisy).await.unwrap();
    crate::common::next_second().await;
    managed_shop(&t, json!({"remediation": {"unauthorized": "Report"}})).await;
    alice_window(&t, "alice-long", "10m").await;

    // bob's change is reported (not reverted), then pushed out of the
    // request's scopeWrites by his own writes.
    set_mode(&t, User::Bob, "bob").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| {
        drifted(s, "settings").is_some_and(|d| d.class == DriftClass::Unauthorized)
    })
    .await;
    noise(&t, User::Bob, 110).await;
    // alice's scale is held as hers, then pushed out of her activity.
    scale(&t, User::Alice, 5).await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "web", "alice-long")).await;
    noise(&t, User::Alice, 110).await;
    // alice changes what bob changed: still his drift (his write explains nothing).
    set_mode(&t, User::Alice, "alice").await;
    let pushed_out = |status: &driftwarden::api::AccessRequestStatus| {
        let scaled = status.activity.iter().any(|e| e.name.as_deref() == Some("web"));
        let bobs = status.scope_writes.iter().any(|e| e.name.as_deref() == Some("settings"));
        let alices = status.activity.iter().any(|e| e.name.as_deref() == Some("settings"));
        !scaled && !bobs && alices
    };
    let summarized = eventually(Duration::from_secs(10), || async {
        pushed_out(&request_status(&t, "alice-long").await).then_some(())
    })
    .await;
    let status = request_status(&t, "alice-long").await;
    assert!(summarized.is_some(), "the summaries still hold the early writes: {:#?}", status);
    let status = t.wait_for_status("shop", Duration::from_secs(5), |s| held_for(s, "web", "alice-long")).await;
    assert_eq!(drifted(&status, "settings").map(|d| d.class), Some(DriftClass::Unauthorized));
    // The journal is written once a second; then the operator crashes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outage = crate::restart::Outage::begin(t.operator);
    outage.end();
    t.operator.wait_until_serving().await.unwrap();
    t.wait_for_write_log().await;

    // A new change of alice's: once the restarted operator holds it, it has
    // judged the namespace again.
    let created: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "after-restart"}})).unwrap();
    t.env.api::<ConfigMap>(User::Alice).await.create(&PostParams::default(), &created).await.unwrap();
    let status = t
        .wait_for_status("shop", Duration::from_secs(30), |s| {
            drifted(s, "after-restart").is_some_and(|d| d.access_request.as_deref() == Some("alice-long"))
        })
        .await;
    assert!(held_for(&status, "web", "alice-long"), "alice's scale after the restart: {:#?}", drifted(&status, "web"));
    assert_eq!(replicas(&t).await, 5);
    let settings = drifted(&status, "settings").expect("settings still drifted");
    assert_eq!(settings.class, DriftClass::Unauthorized, "bob's change after the restart: {settings:#?}");
    assert!(settings.access_request.is_none(), "{settings:#?}");
    drop(exclusive);
}

/// p50 and p99 of `latencies`.
fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    (at(0.50), at(0.99))
}

async fn timed_writes(api: &Api<ConfigMap>, name: &str, count: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(count);
    for n in 0..count {
        let patch = Patch::Merge(json!({"data": {"n": n.to_string()}}));
        let started = Instant::now();
        api.patch(name, &PatchParams::default(), &patch).await.unwrap();
        latencies.push(started.elapsed());
    }
    latencies
}

/// Side by side, in one run: writes to an object the write-log webhook
/// covers, and to one in a namespace no DesiredState manages (the webhook
/// is not called there). Prints the figures; the bound only catches a
/// webhook that slows every write down by far more than its goal.
#[tokio::test]
async fn write_latency_with_and_without_the_write_log_webhook() {
    let t = drift_setup_without_audit("wlog-latency").await;
    let other = crate::common::another_drift("wlog-latency-off").await;
    for env in [&t.env, &other.env] {
        let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "bench"}, "data": {"n": "0"}})).unwrap();
        env.api::<ConfigMap>(User::Admin).await.create(&PostParams::default(), &cm).await.unwrap();
    }
    crate::common::next_second().await;
    managed_shop(&t, json!({})).await;
    let on: Api<ConfigMap> = t.env.api(User::Admin).await;
    let off: Api<ConfigMap> = other.env.api(User::Admin).await;
    // Warm up both paths, then interleave rounds so both see the same load.
    timed_writes(&on, "bench", 20).await;
    timed_writes(&off, "bench", 20).await;
    // The operator's CPU time (process_cpu_seconds_total) over each kind of round.
    let cpu = || {
        let metrics = crate::support::http_get(t.operator.http_port, "/metrics").map(|(_, body)| body);
        let line =
            metrics.and_then(|m| m.lines().find(|l| l.starts_with("process_cpu_seconds_total ")).map(str::to_owned));
        line.and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).expect("process_cpu_seconds_total on /metrics")
    };
    // The API server's own measure of its calls to the write-log webhook:
    // the latency the webhook adds to a write, without the rest of the load.
    let calls = || async {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = t.env.admin.request_text(request).await.expect("the API server's /metrics");
        let total = |metric: &str| -> f64 {
            (text.lines())
                .filter(|l| l.starts_with(metric) && l.contains("name=\"writes.driftwarden.io\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum()
        };
        let histogram = "apiserver_admission_webhook_admission_duration_seconds";
        let under_5ms = (text.lines())
            .filter(|l| l.starts_with(&format!("{histogram}_bucket")) && l.contains("name=\"writes.driftwarden.io\""))
            .filter(|l| l.contains("le=\"0.005\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        (total(&format!("{histogram}_sum")), total(&format!("{histogram}_count")), under_5ms)
    };
    let (sum_before, count_before, fast_before) = calls().await;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    let (mut cpu_with, mut cpu_without) = (0.0, 0.0);
    for _ in 0..10 {
        let before = cpu();
        with.extend(timed_writes(&on, "bench", 100).await);
        let between = cpu();
        without.extend(timed_writes(&off, "bench", 100).await);
        cpu_with += between - before;
        cpu_without += cpu() - between;
    }
    let (sum_after, count_after, fast_after) = calls().await;
    let count = (count_after - count_before).max(1.0);
    eprintln!(
        "write log: the API server's calls to the webhook: {count} in {:.2} ms on average, {:.1}% under 5 ms",
        (sum_after - sum_before) / count * 1e3,
        (fast_after - fast_before) / count * 100.0
    );
    eprintln!(
        "write log: operator CPU per 1,000 writes: {:.0} ms with the webhook (each also wakes the DesiredState), {:.0} ms to the namespace it does not watch",
        cpu_with * 1e3,
        cpu_without * 1e3
    );
    let (with_p50, with_p99) = percentiles(with);
    let (without_p50, without_p99) = percentiles(without);
    eprintln!(
        "write log: 1,000 writes each, p50/p99 with the webhook {with_p50:?}/{with_p99:?}, without {without_p50:?}/{without_p99:?}"
    );
    // The handler's own time, from its histogram.
    let metrics = crate::support::http_get(t.operator.http_port, "/metrics").map(|(_, body)| body).unwrap_or_default();
    let value = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name) && l.contains("webhook=\"writes\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or_default()
    };
    let sum = value("driftwarden_webhook_duration_seconds_sum");
    let count = value("driftwarden_webhook_duration_seconds_count");
    eprintln!("write log: /writes answered {count} calls in {:.1} us on average", sum / count.max(1.0) * 1e6);
    assert!(
        with_p50 < without_p50 + Duration::from_millis(20),
        "the webhook added {:?} at p50",
        with_p50 - without_p50
    );
}
