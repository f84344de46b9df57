use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::render::{alert, signature, slack_text, webhook_body};
use super::standing::StandingDrift;
use super::*;
use crate::api::{DesiredStateStatus, DriftAction, DriftedObject, NotifierType};

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn request(phase: Option<&str>, activity: serde_json::Value) -> AccessRequest {
    serde_json::from_value(json!({
        "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
        "metadata": {"name": "alice-fix", "namespace": "shop"},
        "spec": {"requester": "alice", "role": {"kind": "ClusterRole", "name": "edit"},
                 "duration": "30m", "reason": "INC-42: checkout is down"},
        "status": {"phase": phase, "activity": activity, "activityCount": 3,
                   "approvals": [{"reviewer": "carol", "review": "r1", "at": "2026-12-02T10:00:00Z"}]},
    }))
    .unwrap()
}

fn spec(namespaces: &[&str], events: &[NoticeKind]) -> NotifierSpec {
    NotifierSpec {
        type_: NotifierType::Webhook,
        url: Some("http://receiver".into()),
        url_secret_ref: None,
        hmac_secret_ref: None,
        namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
        events: events.to_vec(),
    }
}

fn drifted(name: &str, since: &str, action: DriftAction) -> DriftedObject {
    DriftedObject {
        object: ObjectRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: name.into(),
        },
        since: Time(at(since)),
        class: DriftClass::Unauthorized,
        fields: vec!["/spec/replicas".into()],
        access_request: None,
        attribution: None,
        action: Some(action),
        revert_at: None,
        in_sync_at: None,
        undeclared: false,
    }
}

fn status(objects: Vec<DriftedObject>) -> DesiredStateStatus {
    DesiredStateStatus { drifted: Some(objects.len() as i64), drifted_objects: objects, ..Default::default() }
}

#[test]
fn a_notifier_takes_its_namespaces_and_kinds_only() {
    let notice = reverted_notice(
        "shop",
        &drifted("web", "2026-12-02T10:00:00Z", DriftAction::Revert).object,
        DriftClass::Unauthorized,
        false,
        None,
        at("2026-12-02T10:00:00Z"),
    );
    for (namespaces, events, taken) in [
        (&[][..], &[][..], true),
        (&["shop"][..], &[][..], true),
        (&["bank"][..], &[][..], false),
        (&[][..], &[NoticeKind::DriftReverted][..], true),
        (&["shop"][..], &[NoticeKind::RequestCreated][..], false),
    ] {
        assert_eq!(routes(&spec(namespaces, events), &notice), taken, "{namespaces:?} {events:?}");
    }
}

#[test]
fn each_phase_change_is_one_notice_of_its_kind() {
    let now = at("2026-12-02T10:00:00Z");
    let cases = [
        (None, AccessPhase::Pending, Some(NoticeKind::RequestCreated)),
        (Some("Pending"), AccessPhase::Approved, Some(NoticeKind::RequestApproved)),
        (Some("Pending"), AccessPhase::Active, Some(NoticeKind::RequestApproved)),
        // A later window was announced when it was approved.
        (Some("Approved"), AccessPhase::Active, None),
        (Some("Pending"), AccessPhase::Denied, Some(NoticeKind::RequestDenied)),
        (Some("Active"), AccessPhase::Expired, Some(NoticeKind::RequestEnded)),
        (Some("Active"), AccessPhase::Revoked, Some(NoticeKind::RequestEnded)),
    ];
    for (before, after, kind) in cases {
        let request = request(before, json!([]));
        let facts = RequestFacts { phase: Some(after), ..request_facts(&request) };
        let notice = request_notice(&request, facts, now);
        assert_eq!(notice.as_ref().map(|n| n.kind), kind, "{before:?} -> {after:?}");
    }
}

#[test]
fn an_ended_window_carries_its_activity_newest_first() {
    let activity = json!([
        {"time": "2026-12-02T10:01:00.000000Z", "user": "alice", "verb": "patch", "resource": "deployments.apps/scale",
         "namespace": "shop", "name": "web"},
        {"time": "2026-12-02T10:02:00.000000Z", "user": "alice", "verb": "create", "resource": "deployments.apps",
         "namespace": "shop", "name": "miner"},
    ]);
    let request = request(Some("Active"), activity);
    let facts = RequestFacts { phase: Some(AccessPhase::Expired), ..request_facts(&request) };
    let notice = request_notice(&request, facts, at("2026-12-02T10:30:00Z")).unwrap();
    let facts = notice.request.unwrap();
    assert_eq!(
        facts.activity,
        ["create deployments.apps shop/miner by alice", "patch deployments.apps/scale shop/web by alice"]
    );
    assert_eq!(facts.activity_count, Some(3));
    assert_eq!(notice.summary, "ClusterRole/edit for alice in shop expired; the session made 3 write(s)");
}

#[test]
fn the_expiry_warning_is_five_minutes_or_a_fifth_of_a_short_window() {
    assert_eq!(expiry_warning(SignedDuration::from_hours(1)), SignedDuration::from_mins(5));
    assert_eq!(expiry_warning(SignedDuration::from_secs(20)), SignedDuration::from_secs(4));
}

#[test]
fn the_signature_is_hmac_sha256_over_timestamp_and_body() {
    // python3 -c "import hmac,hashlib;print(hmac.new(b'key',b'1700000000.{\"a\":1}',hashlib.sha256).hexdigest())"
    assert_eq!(
        signature(b"key", 1_700_000_000, br#"{"a":1}"#),
        "sha256=a438e398bfafc57e4396bb7fc2304422f0f768e965d073ca313cb52e22e6ad03"
    );
}

#[test]
fn standing_drift_appears_once_resolves_once_and_a_new_drift_is_new() {
    let mut standing = StandingDrift::default();
    let key = ("shop".to_owned(), "shop".to_owned());
    let web = drifted("web", "2026-12-02T10:00:00Z", DriftAction::Report);
    let reverted = drifted("api", "2026-12-02T10:00:00Z", DriftAction::Revert);

    let changes = standing.update(key.clone(), &status(vec![web.clone(), reverted]).drifted_objects);
    assert_eq!(changes.appeared.iter().map(|s| s.drift.object.name.as_str()).collect::<Vec<_>>(), ["web"]);
    assert!(standing.update(key.clone(), &status(vec![web.clone()]).drifted_objects).appeared.is_empty());
    // The status read back keeps seconds only: still the same drift.
    let read_back = drifted("web", "2026-12-02T10:00:00.000Z", DriftAction::Report);
    let fresh = DriftedObject { since: Time(at("2026-12-02T10:00:00.123456Z")), ..read_back.clone() };
    assert!(standing.update(key.clone(), &status(vec![fresh]).drifted_objects).appeared.is_empty());
    assert!(standing.update(key.clone(), &status(vec![read_back]).drifted_objects).appeared.is_empty());
    assert_eq!(standing.all().count(), 1);

    // Fixed and drifted again between two statuses: a new drift.
    let again = drifted("web", "2026-12-02T10:05:00Z", DriftAction::Report);
    let changes = standing.update(key.clone(), &status(vec![again]).drifted_objects);
    assert_eq!((changes.appeared.len(), changes.resolved.len()), (1, 0));

    let changes = standing.update(key.clone(), &status(vec![]).drifted_objects);
    assert_eq!((changes.appeared.len(), changes.resolved.len()), (0, 1));
    assert_eq!(standing.all().count(), 0);
    // A deleted DesiredState resolves what it reported.
    standing.update(key.clone(), &status(vec![web]).drifted_objects);
    assert_eq!(standing.update(key, &[]).resolved.len(), 1);
}

#[test]
fn reported_drift_carries_the_command_that_asks_to_fix_it() {
    let mut standing = StandingDrift::default();
    let web = drifted("web", "2026-12-02T10:00:00Z", DriftAction::Report);
    let changes = standing.update(("shop".into(), "it's-mine".into()), &status(vec![web]).drifted_objects);
    let notice = changes.appeared[0].notice(false, at("2026-12-02T10:00:01Z"));
    assert_eq!(
        notice.fix.as_deref(),
        Some(
            "driftwarden request edit --namespace shop --for 30m --reason 'fix drift in Deployment shop/web reported by DesiredState it'\\''s-mine'"
        )
    );
    let text = slack_text(&notice);
    assert!(text.starts_with(":rotating_light: *Drift reported* in `shop`\n"), "{text}");
    assert!(text.contains("differs from Git at /spec/replicas"), "{text}");
    assert!(text.ends_with("reported by DesiredState it'\\''s-mine'`"), "{text}");
    let resolved = changes.appeared[0].notice(true, at("2026-12-02T10:01:00Z"));
    assert_eq!(resolved.fix, None);
    assert!(slack_text(&resolved).starts_with(":large_green_circle: *Drift resolved*"));
}

#[test]
fn slack_text_escapes_its_control_characters() {
    let request = request(None, json!([]));
    let mut facts = RequestFacts { phase: Some(AccessPhase::Pending), ..request_facts(&request) };
    facts.reason = "<!channel> & friends".into();
    facts.pending_drift = Some(PendingDrift { drifted: 2, objects: vec!["Deployment shop/web".into()] });
    let notice = request_notice(&request, facts, at("2026-12-02T10:00:00Z")).unwrap();
    let text = slack_text(&notice);
    assert!(text.contains("&lt;!channel&gt; &amp; friends"), "{text}");
    assert!(!text.contains("<!channel>"), "{text}");
    assert!(text.contains("Pending drift an approval would let stand: 2 object(s): Deployment shop/web"), "{text}");
    assert!(text.contains("`driftwarden approve alice-fix --namespace shop --reason '...'`"), "{text}");
}

#[test]
fn an_alert_fires_for_a_while_and_resolves_now() {
    let mut standing = StandingDrift::default();
    let web = drifted("web", "2026-12-02T10:00:00Z", DriftAction::Report);
    let changes = standing.update(("shop".into(), "shop".into()), &status(vec![web]).drifted_objects);
    let now = at("2026-12-02T10:01:00Z");
    let firing = alert(&changes.appeared[0], false, now);
    assert_eq!(firing["labels"]["alertname"], "DriftwardenDriftStands");
    assert_eq!(firing["labels"]["object"], "Deployment shop/web");
    assert_eq!(firing["startsAt"], "2026-12-02T10:00:00Z");
    assert_eq!(firing["endsAt"], "2026-12-02T10:06:00Z");
    assert_eq!(alert(&changes.appeared[0], true, now)["endsAt"], "2026-12-02T10:01:00Z");
}

#[test]
fn the_webhook_body_is_the_notice() {
    let object = drifted("web", "2026-12-02T10:00:00Z", DriftAction::Revert).object;
    let now = at("2026-12-02T10:00:00Z");
    let notice = reverted_notice("shop", &object, DriftClass::WindowEnded, false, Some("alice-fix"), now);
    let body: serde_json::Value = serde_json::from_slice(&webhook_body(&notice)).unwrap();
    assert_eq!(body["kind"], "WindowEndReverted");
    assert_eq!(body["drift"]["accessRequest"], "alice-fix");
    assert_eq!(body["drift"]["action"], "Reverted");
    assert_eq!(body["time"], "2026-12-02T10:00:00Z");
}

#[test]
fn pending_drift_sums_every_state_and_lists_the_first_objects() {
    let many: Vec<_> = (0..12).map(|i| drifted(&format!("w{i}"), "2026-12-02T10:00:00Z", DriftAction::Hold)).collect();
    let drift = pending_drift([&status(many), &status(vec![])]);
    assert_eq!((drift.drifted, drift.objects.len()), (12, LISTED));
}
