//! Bad AccessRequests and AccessReviews, sent by the people who would send
//! them, through the whole admission chain (the operator's webhooks, the
//! CRD's schema and CEL rules): each is refused with a message naming the
//! problem, or, where the input is legal, admitted and read by the operator.
//!
//! Already covered elsewhere, not repeated here: malformed, negative, zero,
//! 25h and 8760h durations, `*` and `admin-*` roles, empty and trivial
//! reasons, a missing role, immutability (`tests/integration/crd_validation.rs`);
//! roles outside the allow-list, over the policy's maximum, a review of an
//! unknown request (`admission_rules.rs`); a review of a denied request
//! (`grant_lifecycle.rs`); forged identities (`identity.rs`).

use std::time::Duration;

use driftwarden::api::{AccessPhase, AccessRequest, AccessReview};
use driftwarden_dev::controlplane::User;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::common::{AccessTest, REASON, raw_requests, setup};
use crate::support::api_error;

const CEL_OVERFLOW: &str =
    "spec.duration: Invalid value: \"string\": type conversion error from 'string' to 'google.protobuf.Duration'";

/// What must become of an object.
enum Expect {
    /// Refused, with this in the message.
    Refused(&'static str),
    /// Admitted; a request then reaches Pending (the operator read it).
    Admitted,
}
use Expect::{Admitted, Refused};

/// `base` with `changes` merged in (a null removes a field).
fn merged(base: &Value, changes: &Value) -> Value {
    let mut out = base.clone();
    json_patch::merge(&mut out, changes);
    out
}

fn object(kind: &str, name: &str, spec: Option<Value>) -> DynamicObject {
    let mut object = json!({"apiVersion": "driftwarden.io/v1alpha1", "kind": kind, "metadata": {"name": name}});
    if let Some(spec) = spec {
        object["spec"] = spec;
    }
    serde_json::from_value(object).unwrap()
}

/// Sends each case as `user`; checks the answer.
async fn check_table(t: &AccessTest, kind: &str, user: User, base: Value, cases: Vec<(&str, Option<Value>, Expect)>) {
    let api = match kind {
        "AccessRequest" => t.env.raw_api::<AccessRequest>(user).await,
        _ => t.env.raw_api::<AccessReview>(user).await,
    };
    let mut admitted = Vec::new();
    for (name, changes, expect) in cases {
        // None: no spec at all.
        let spec = changes.map(|changes| merged(&base, &changes));
        let result = api.create(&PostParams::default(), &object(kind, name, spec)).await;
        match expect {
            Refused(expected) => {
                let (code, message) = api_error(result);
                assert!((400..500).contains(&code), "{name}: {code} {message}");
                assert!(message.contains(expected), "{name}: expected {expected:?} in {message:?}");
            }
            Admitted => {
                result.unwrap_or_else(|e| panic!("{name} was refused: {e}"));
                admitted.push(name);
            }
        }
    }
    if kind == "AccessRequest" {
        for name in admitted {
            t.wait_for_phase(name, AccessPhase::Pending, Duration::from_secs(10)).await;
        }
    }
}

#[tokio::test]
async fn bad_access_requests_are_refused_with_a_reason() {
    let t = setup("bad-requests", json!({})).await;
    let base = json!({"role": {"kind": "ClusterRole", "name": "edit"}, "duration": "30m", "reason": REASON});
    let duration = |d: Value| Some(json!({ "duration": d }));
    let role = |kind: &str, name: &str| Some(json!({"role": {"kind": kind, "name": name}}));
    let reason = |r: String| Some(json!({ "reason": r }));
    let cases = vec![
        // Durations: zero in disguise, over the ceiling by a hair, beyond
        // what Go can hold, not text, empty, look-alike digits, signs.
        ("zero-in-parts", duration(json!("0h0m0s")), Refused("must be longer than zero")),
        ("rounds-to-zero", duration(json!("0.1ns")), Refused("must be longer than zero")),
        ("a-hair-over-a-day", duration(json!("24h0m0.001s")), Refused("must be at most 24h")),
        // CEL's duration() cannot hold them; the API server says so.
        ("beyond-int64", duration(json!("2562048h")), Refused(CEL_OVERFLOW)),
        ("thirty-digits", duration(json!("99999999999999999999999999999h")), Refused(CEL_OVERFLOW)),
        ("too-long-to-read", duration(json!("1h1m1s1ms1us1ns1h1m1s1ms1us1ns1h1m")), Refused("Too long")),
        ("a-number", duration(json!(30)), Refused("must be of type string")),
        ("empty-duration", duration(json!("")), Refused("at least 2 chars long")),
        ("fullwidth-digits", duration(json!("３０m")), Refused("must be a Go duration with a unit")),
        ("trailing-command", duration(json!("30m;rm")), Refused("must be a Go duration with a unit")),
        ("negative-part", duration(json!("1h-5m")), Refused("must be a Go duration with a unit")),
        ("plus-sign", duration(json!("+30m")), Refused("must be a Go duration with a unit")),
        // Found by the fuzz target: this read "1h exceeds the maximum of 1h".
        ("half-a-second-over", duration(json!("1h0.5s")), Refused("duration 1h0.500s exceeds the maximum of 1h")),
        ("micro-sign", duration(json!("1800000000\u{b5}s")), Admitted),
        ("greek-mu", duration(json!("1800000000\u{3bc}s")), Admitted),
        // Roles nobody allowed, or that cannot exist.
        (
            "no-such-role",
            role("ClusterRole", "no-such-role"),
            Refused("ClusterRole no-such-role is not in the allow-list"),
        ),
        ("role-not-clusterrole", role("Role", "edit"), Refused("Role edit is not in the allow-list")),
        ("not-a-role-kind", role("Group", "edit"), Refused("Unsupported value: \"Group\"")),
        ("empty-role-name", role("ClusterRole", ""), Refused("at least 1 chars long")),
        (
            "look-alike-role",
            role("ClusterRole", "\u{e9}dit"),
            Refused("ClusterRole \u{e9}dit is not in the allow-list"),
        ),
        // Reasons: the longest allowed, one more, a megabyte; scripts,
        // emoji, and characters that print nothing.
        ("reason-1024", reason(format!("INC-1: {}", "checkout ".repeat(113))), Admitted),
        ("reason-1025", reason(format!("INC-1: {}", "x".repeat(1018))), Refused("Too long")),
        ("reason-1mib", reason(format!("INC-1: {}", "y".repeat(1 << 20))), Refused("Too long")),
        ("reason-in-chinese", reason("紧急：结账服务崩溃，需要回滚到上一个版本".into()), Admitted),
        ("reason-only-emoji", reason("🔥".repeat(12)), Refused("reason is too short or trivial")),
        // Found by the fuzz target: admitted before (the CRD's rule counts them).
        (
            "reason-invisible",
            reason("\u{200b}\u{200c}\u{200d}\u{2060}".repeat(3)),
            Refused("reason is too short or trivial"),
        ),
        // Missing fields.
        ("no-spec", None, Refused("spec: Required value")),
        ("no-duration", Some(json!({"duration": null})), Refused("spec.duration: Required value")),
        ("no-reason", Some(json!({"reason": null})), Refused("spec.reason: Required value")),
        ("no-role-name", Some(json!({"role": {"name": null}})), Refused("spec.role.name: Required value")),
        ("no-role-kind", Some(json!({"role": {"kind": null}})), Refused("spec.role.kind: Required value")),
    ];
    check_table(&t, "AccessRequest", User::Alice, base, cases).await;
}

#[tokio::test]
async fn bad_access_reviews_are_refused_with_a_reason() {
    // A request in another namespace, which a review here must not reach.
    // Set up first: a test holds the operator lock only once at a time.
    let mut other = setup("bad-reviews-other", json!({})).await;
    other.request(User::Alice, "elsewhere", "edit", "30m").await.unwrap();
    other.running.take();
    let traversal = format!("../../{}/accessrequests/elsewhere", other.env.namespace);

    let t = setup("bad-reviews", json!({})).await;
    // A request that is still open, one that expired, one that was revoked.
    t.request(User::Alice, "open", "edit", "30m").await.unwrap();
    t.request(User::Alice, "short", "view", "2s").await.unwrap();
    t.review(User::Dave, "dave-ok", "short", "Approve").await.unwrap();
    t.request(User::Alice, "dropped", "edit", "30m").await.unwrap();
    let revoke = Patch::Merge(json!({"spec": {"revoked": true}}));
    raw_requests(&t, User::Alice).await.patch("dropped", &PatchParams::default(), &revoke).await.unwrap();
    t.wait_for_phase("short", AccessPhase::Expired, Duration::from_secs(15)).await;
    t.wait_for_phase("dropped", AccessPhase::Revoked, Duration::from_secs(10)).await;

    let base = json!({"accessRequest": "open", "decision": "Approve", "reason": "checked the incident ticket"});
    let target = |name: &str| Some(json!({ "accessRequest": name }));
    let cases = vec![
        ("for-expired", target("short"), Refused("AccessRequest short is already Expired")),
        ("for-revoked", target("dropped"), Refused("AccessRequest dropped is already Revoked")),
        ("for-another-namespace", target(&traversal), Refused("should match")),
        ("empty-target", target(""), Refused("at least 1 chars long")),
        ("no-target", Some(json!({"accessRequest": null})), Refused("spec.accessRequest: Required value")),
        ("no-decision", Some(json!({"decision": null})), Refused("spec.decision: Required value")),
        ("lowercase-decision", Some(json!({"decision": "approve"})), Refused("Unsupported value: \"approve\"")),
        ("no-reason", Some(json!({"reason": null})), Refused("spec.reason: Required value")),
        ("trivial-reason", Some(json!({"reason": "ok"})), Refused("must explain why")),
        ("reason-1025", Some(json!({"reason": "z".repeat(1025)})), Refused("Too long")),
        ("no-spec", None, Refused("spec: Required value")),
        ("fine", Some(json!({})), Admitted),
    ];
    check_table(&t, "AccessReview", User::Carol, base, cases).await;
    // The one admitted review counts: the open request is granted.
    t.wait_for_phase("open", AccessPhase::Active, Duration::from_secs(10)).await;
    other.wait_for_phase("elsewhere", AccessPhase::Pending, Duration::from_secs(1)).await;
}

/// The validating webhook looks the reviewed request up by name: a name
/// that is not a DNS subdomain (`open?watch=true` would find `open`) is
/// refused by the API server's schema before it gets there.
#[tokio::test]
async fn a_review_of_a_name_with_a_query_string_is_refused() {
    let t = setup("review-query", json!({})).await;
    t.request(User::Alice, "open", "edit", "30m").await.unwrap();
    let base = json!({"accessRequest": "open", "decision": "Approve", "reason": "checked the incident ticket"});
    let cases = vec![
        ("with-a-query", Some(json!({"accessRequest": "open?watch=true"})), Refused("should match")),
        ("with-a-fragment", Some(json!({"accessRequest": "open#x"})), Refused("should match")),
    ];
    check_table(&t, "AccessReview", User::Carol, base, cases).await;
}
