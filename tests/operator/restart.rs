use std::time::{Duration, Instant};

use driftwarden::api::AccessPhase;
use driftwarden::controlplane::User;
use serde_json::json;

use crate::common::setup;
use crate::support::operator::{OPERATOR, OperatorEnv};

/// Brings the operator back if the test fails while it is down, so the
/// tests after this one still have it.
pub struct Outage(&'static OperatorEnv);

impl Outage {
    pub fn begin(operator: &'static OperatorEnv) -> Self {
        operator.kill_operator();
        Self(operator)
    }

    pub fn end(self) {
        self.0.start_operator().expect("restarting the operator");
        std::mem::forget(self);
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.0.start_operator().expect("restarting the operator");
    }
}

/// Expiry must hold across restarts: an operator that was down when a grant
/// expired removes it as soon as it is back.
#[tokio::test]
async fn a_grant_that_expired_while_the_operator_was_down_is_removed_on_restart() {
    let mut t = setup("restart", json!({})).await;
    // Take the operator away from every other test, before the grant starts
    // its clock: the lock may take a while to get.
    t.running.take();
    let exclusive = OPERATOR.write().await;
    t.operator.wait_until_serving().await.unwrap();

    t.request(User::Alice, "during-outage", "edit", "4s").await.unwrap();
    t.review(User::Carol, "carol-ok", "during-outage", "Approve").await.unwrap();
    let active = t.wait_for_phase("during-outage", AccessPhase::Active, Duration::from_secs(3)).await;
    let expires_at = active.status.unwrap().expires_at.unwrap().0;

    let outage = Outage::begin(t.operator);
    let wait = expires_at.duration_since(k8s_openapi::jiff::Timestamp::now()).as_secs_f64() + 1.0;
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    assert!(t.binding("during-outage").await.is_some(), "with the operator down nothing removes the binding");

    let restarted = Instant::now();
    outage.end();
    let deadline = restarted + Duration::from_secs(30);
    while t.binding("during-outage").await.is_some() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            panic!("the expired grant survived the restart; operator log (newest first):\n{}", tail.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = restarted.elapsed();
    // It must be the restarted operator's expiry handling that removed it,
    // acting on its initial list, not the periodic orphan sweep.
    let log = std::fs::read_to_string(t.operator.log()).unwrap_or_default();
    let expired_by_reconcile = log
        .lines()
        .any(|l| l.contains("access expired; RoleBinding removed") && l.contains("driftwarden-during-outage"));
    assert!(expired_by_reconcile, "the binding was not removed as an expired grant");
    assert!(
        !log.lines().any(|l| l.contains("swept") && l.contains("driftwarden-during-outage")),
        "only the sweep caught it"
    );
    // Usually milliseconds; right after a restart amid many other watches,
    // API calls have been seen to stall for ~10 s (an open bug, see the
    // access notes), so the bound here stays below the sweep's reach (the
    // binding is ~5 s old at restart and the sweep spares bindings < 30 s).
    assert!(after < Duration::from_secs(25), "binding removed {after:?} after the restart");
    t.wait_for_phase("during-outage", AccessPhase::Expired, Duration::from_secs(10)).await;
    t.operator.wait_until_serving().await.unwrap();
    drop(exclusive);
}
