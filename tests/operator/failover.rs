//! Several replicas and restarts: exactly one replica writes, a standby takes
//! over when the leader dies, and a window that ended while the operator was
//! down is acted on as soon as it is back.

use std::time::{Duration, Instant};

use driftwarden_dev::controlplane::User;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::common::drift_setup;
use crate::gate::{alice_window, held_for, managed_shop, mode, set_mode, until};
use crate::restart::Outage;
use crate::support::http_get;
use crate::support::operator::OPERATOR;

/// Lines of `log` that record a revert in `namespace`.
fn reverts_in(log: &std::path::Path, namespace: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains("drift reverted to Git") && l.contains(namespace)).count()
}

/// Whether the replica serving metrics on `port` holds the lease.
fn leads(port: u16) -> bool {
    http_get(port, "/metrics").is_some_and(|(_, body)| body.lines().any(|l| l == "driftwarden_leader 1"))
}

async fn wait_until_leading(port: u16, timeout: Duration) -> Duration {
    let started = Instant::now();
    while !leads(port) {
        assert!(started.elapsed() < timeout, "no takeover within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    started.elapsed()
}

/// Stops the second replica however the test ends, so that the tests after
/// it find the first replica leading.
struct Standby {
    operator: &'static driftwarden_dev::controlplane::operator::OperatorEnv,
    replica: driftwarden_dev::controlplane::operator::Replica,
}

impl Drop for Standby {
    fn drop(&mut self) {
        self.operator.stop_replica(&self.replica);
    }
}

#[tokio::test]
async fn of_two_replicas_one_reverts_each_drift_once_and_the_standby_takes_over_when_it_dies() {
    let mut t = drift_setup("gate-failover").await;
    t.running.take();
    let exclusive = OPERATOR.write().await;
    let operator = t.operator;
    operator.wait_until_serving().await.unwrap();
    managed_shop(&t, json!({})).await;

    let standby = Standby { operator, replica: operator.start_replica("driftwarden-1").unwrap() };
    let standby = &standby.replica;
    let started = Instant::now();
    while http_get(standby.http_port, "/readyz").is_none_or(|(code, _)| code != 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "the standby did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(leads(operator.http_port) && !leads(standby.http_port), "the first replica leads, the second stands by");

    // Three unauthorized changes: each reverted once, by the leader alone.
    let deployments: Api<Deployment> = t.env.api(User::Admin).await;
    for replicas in [4, 6, 8] {
        deployments
            .patch_scale("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": replicas}})))
            .await
            .unwrap();
        until(Duration::from_secs(10), "the revert", || async { crate::gate::replicas(&t).await == 2 }).await;
    }
    let namespace = t.env.namespace.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        (reverts_in(&operator.log(), &namespace), reverts_in(&standby.log, &namespace)),
        (3, 0),
        "exactly one revert per drift, all by the leader"
    );

    // The leader dies: the standby takes the lease within 15 s and reverts.
    let outage = Outage::begin(operator);
    let takeover = wait_until_leading(standby.http_port, Duration::from_secs(20)).await;
    assert!(takeover <= Duration::from_secs(16), "takeover took {takeover:?}");
    set_mode(&t, User::Admin, "while-failing-over").await;
    // The new leader lists and reconciles everything first: on a loaded
    // 2-core machine that can take a while; it must come.
    let revert = until(Duration::from_secs(90), "the standby's revert", || async { mode(&t).await == "safe" }).await;
    eprintln!("the standby reverted {revert:?} after the change");
    // Its log line follows the write by a moment.
    until(Duration::from_secs(5), "the standby's revert log line", || async {
        reverts_in(&standby.log, &namespace) == 1
    })
    .await;
    eprintln!("takeover after the leader's death: {takeover:?}");

    // Back to one replica: the first comes back as standby, the second
    // hands the lease over as it stops.
    outage.end();
    operator.stop_replica(standby);
    wait_until_leading(operator.http_port, Duration::from_secs(20)).await;
    operator.wait_until_serving().await.unwrap();
    drop(exclusive);
}

#[tokio::test]
async fn session_drift_whose_window_ended_while_the_operator_was_down_is_reverted_on_restart() {
    let mut t = drift_setup("gate-restart").await;
    t.running.take();
    let exclusive = OPERATOR.write().await;
    t.operator.wait_until_serving().await.unwrap();
    managed_shop(&t, json!({})).await;
    let expires_at = alice_window(&t, "alice-outage", "8s").await;
    set_mode(&t, User::Alice, "mid-incident").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "settings", "alice-outage")).await;

    let outage = Outage::begin(t.operator);
    let wait = expires_at.duration_since(Timestamp::now()) + k8s_openapi::jiff::SignedDuration::from_secs(1);
    tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    assert_eq!(mode(&t).await, "mid-incident", "nothing reverts while the operator is down");

    outage.end();
    // From the moment the restarted process answers (it is back).
    let restarted = std::time::Instant::now();
    until(Duration::from_secs(30), "the restarted operator's /healthz", || async {
        http_get(t.operator.http_port, "/healthz").is_some_and(|(code, _)| code == 200)
    })
    .await;
    let took =
        until(Duration::from_secs(30), "the revert after the restart", || async { mode(&t).await == "safe" }).await;
    eprintln!("reverted {took:?} after the restarted operator answered, {:?} after the restart", restarted.elapsed());
    // 0.4 s alone; in the full suite the restarted operator lists the owned
    // kinds of every test namespace (undeclared objects) before its first
    // pass, and on the 2-core machine that took up to 2.1 s: the figure is
    // printed, the bound only catches a revert that waits for a resync.
    assert!(took < Duration::from_secs(5), "reverted {took:?} after the restarted operator answered");
    t.operator.wait_until_serving().await.unwrap();
    drop(exclusive);
}

/// A restart must not mistake a session's held change for unauthorized
/// drift: the restarted operator judges only once it has listed the
/// AccessRequests and roles, so the open window is seen.
#[tokio::test]
async fn a_held_session_change_stays_held_across_a_restart() {
    let mut t = drift_setup("gate-held-restart").await;
    t.running.take();
    let exclusive = OPERATOR.write().await;
    t.operator.wait_until_serving().await.unwrap();
    managed_shop(&t, json!({})).await;
    alice_window(&t, "alice-held", "5m").await;
    set_mode(&t, User::Alice, "mid-incident").await;
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "settings", "alice-held")).await;

    Outage::begin(t.operator).end();
    t.operator.wait_until_serving().await.unwrap();
    // An unauthorized change after the restart is reverted: by then the
    // restarted operator has judged this DesiredState at least once.
    crate::gate::scale(&t, User::Admin, 7).await;
    until(Duration::from_secs(20), "the revert of the admin's change", || async {
        crate::gate::replicas(&t).await == 2
    })
    .await;
    assert_eq!(mode(&t).await, "mid-incident", "alice's held change was reverted by the restarted operator");
    t.wait_for_status("shop", Duration::from_secs(10), |s| held_for(s, "settings", "alice-held")).await;
    drop(exclusive);
}

/// Without the audit webhook only the write log says who wrote what, and
/// only the leader's watches confirm its records: the write-log webhook
/// follows the lease. A write admitted while no leader is reachable has no
/// record and is reverted (fails safe); once the standby leads, a grantee's
/// change is held as hers again.
#[tokio::test]
async fn the_write_log_follows_the_leader_and_a_write_with_no_leader_is_reverted() {
    use driftwarden::webhook::configuration::WRITES_NAME;
    use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
    let mut t = crate::common::drift_setup_without_audit("wlog-failover").await;
    t.running.take();
    let exclusive = crate::support::operator::OPERATOR_WITHOUT_AUDIT.write().await;
    let operator = t.operator;
    operator.wait_until_serving().await.unwrap();
    managed_shop(&t, json!({})).await;
    alice_window(&t, "alice-failover", "5m").await;
    let standby = Standby { operator, replica: operator.start_replica("driftwarden-1").unwrap() };
    let standby = &standby.replica;
    let started = Instant::now();
    while http_get(standby.http_port, "/readyz").is_none_or(|(code, _)| code != 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "the standby did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let configurations: Api<ValidatingWebhookConfiguration> = Api::all(t.env.admin.clone());
    let writes_url = || async {
        let config = configurations.get(WRITES_NAME).await.ok()?;
        config.webhooks?.first()?.client_config.url.clone()
    };
    let primary_url = writes_url().await.expect("the leader keeps driftwarden-writes");

    // The leader dies. alice's change while nobody leads has no record.
    let outage = crate::restart::Outage::begin(operator);
    let died = Instant::now();
    set_mode(&t, User::Alice, "while-nobody-leads").await;
    let takeover = wait_until_leading(standby.http_port, Duration::from_secs(20)).await;
    until(Duration::from_secs(20), "driftwarden-writes pointing at the new leader", || async {
        writes_url().await.is_some_and(|url| url != primary_url)
    })
    .await;
    let repointed = died.elapsed();
    eprintln!(
        "write log: takeover {takeover:?} after the leader died; driftwarden-writes at the new leader {repointed:?} after"
    );
    assert!(repointed < takeover + Duration::from_secs(3), "re-pointed {repointed:?} after the death");
    until(Duration::from_secs(60), "the change made with no leader reverted", || async { mode(&t).await == "safe" })
        .await;
    // The API server loads a changed webhook configuration a moment after
    // it is written: until then a write reaches no one and has no record
    // (docs/GATE.md). A dry-run write (never logged) shows when the new
    // leader's `/writes` is called.
    let called = until(Duration::from_secs(10), "the API server calling the new leader's /writes", || async {
        let settings: Api<k8s_openapi::api::core::v1::ConfigMap> = t.env.api(User::Admin).await;
        let probe = json!({"data": {"mode": "probe"}});
        let dry_run = kube::api::PatchParams { dry_run: true, ..Default::default() };
        let _ = settings.patch("settings", &dry_run, &kube::api::Patch::Merge(probe)).await;
        http_get(standby.http_port, "/metrics").is_some_and(|(_, text)| {
            text.lines()
                .any(|l| l.starts_with("driftwarden_webhook_requests_total{webhook=\"writes\",outcome=\"skipped\"}"))
        })
    })
    .await;
    eprintln!("write log: the API server calls the new leader {:?} after the death", repointed + called);

    // The new leader records and confirms: alice's next change is hers.
    set_mode(&t, User::Alice, "after-takeover").await;
    t.wait_for_status("shop", Duration::from_secs(20), |s| held_for(s, "settings", "alice-failover")).await;
    assert_eq!(mode(&t).await, "after-takeover");

    outage.end();
    operator.stop_replica(standby);
    wait_until_leading(operator.http_port, Duration::from_secs(20)).await;
    operator.wait_until_serving().await.unwrap();
    drop(exclusive);
}
