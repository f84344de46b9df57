//! The message each kind of receiver gets for a notice: the generic
//! webhook's signed JSON, Slack's readable text, Alertmanager's alerts.

use hmac::{Hmac, KeyInit, Mac};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use sha2::Sha256;

use super::standing::Standing;
use super::{Notice, describe};
use crate::api::NoticeKind;

/// The header with the body's signature: `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Driftwarden-Signature";
/// The header with the Unix time the signature covers.
pub const TIMESTAMP_HEADER: &str = "X-Driftwarden-Timestamp";
/// The header naming the notice's kind.
pub const EVENT_HEADER: &str = "X-Driftwarden-Event";

/// The webhook's body: the notice as JSON.
pub fn webhook_body(notice: &Notice) -> Vec<u8> {
    serde_json::to_vec(notice).expect("a notice serializes")
}

/// HMAC-SHA256 over `<timestamp>.<body>`, as `sha256=<hex>`: a receiver
/// recomputes it with the shared key and rejects old timestamps (replays).
pub fn signature(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

fn headline(notice: &Notice) -> &'static str {
    let resolved = notice.drift.as_ref().is_some_and(|d| d.action == "Resolved");
    match notice.kind {
        NoticeKind::RequestCreated => ":key: *Access requested*",
        NoticeKind::RequestApproved => ":white_check_mark: *Access approved*",
        NoticeKind::RequestDenied => ":no_entry: *Access denied*",
        NoticeKind::RequestExpiring => ":hourglass: *Access ends soon*",
        NoticeKind::RequestEnded => ":lock: *Access ended*",
        NoticeKind::SessionCodified => ":memo: *A session's change to commit*",
        NoticeKind::DriftReverted => ":leftwards_arrow_with_hook: *Drift reverted*",
        NoticeKind::DriftReported if resolved => ":large_green_circle: *Drift resolved*",
        NoticeKind::DriftReported => ":rotating_light: *Drift reported*",
        NoticeKind::WindowEndReverted => ":leftwards_arrow_with_hook: *Window ended: change reverted*",
        NoticeKind::SessionCommand => ":computer: *Command in a Pod*",
    }
}

/// Slack's control characters in text (`&`, `<`, `>`).
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The text a Slack incoming webhook posts: a headline, the summary, and
/// what a reader can do next.
pub fn slack_text(notice: &Notice) -> String {
    let mut lines = vec![format!("{} in `{}`", headline(notice), escape(&notice.namespace)), escape(&notice.summary)];
    if let Some(request) = &notice.request {
        match notice.kind {
            NoticeKind::RequestCreated => {
                if let Some(pending) = request.pending_drift.as_ref().filter(|p| p.drifted > 0) {
                    lines.push(format!(
                        "Pending drift an approval would let stand: {} object(s): {}",
                        pending.drifted,
                        escape(&pending.objects.join(", "))
                    ));
                }
                lines.push(format!(
                    "Review: `driftwarden approve {} --namespace {} --reason '...'` (or `deny`)",
                    escape(&request.name),
                    escape(&notice.namespace)
                ));
            }
            NoticeKind::RequestEnded if !request.activity.is_empty() => {
                lines.push("Activity (newest first):".into());
                lines.extend(request.activity.iter().map(|a| format!("• {}", escape(a))));
            }
            NoticeKind::SessionCodified => {
                if let Some(patch) = &request.patch {
                    lines.push(format!("```{}```", escape(patch)));
                }
            }
            _ => {}
        }
    }
    if let Some(fix) = &notice.fix {
        lines.push(format!("To fix it: `{}`", escape(fix)));
    }
    lines.join("\n")
}

/// Slack's body.
pub fn slack_body(notice: &Notice) -> Vec<u8> {
    serde_json::to_vec(&json!({"text": slack_text(notice)})).expect("a message serializes")
}

/// How long a firing alert lasts unless it is sent again: the operator
/// sends standing drift every [`ALERT_RESEND`], so an alert outlives a
/// missed send or two and resolves on its own if the operator is gone.
pub const ALERT_LIFETIME: SignedDuration = SignedDuration::from_mins(5);
/// How often standing drift is sent to Alertmanager again.
pub const ALERT_RESEND: SignedDuration = SignedDuration::from_mins(1);

/// The alert for a standing drift: firing, or resolved (`endsAt` now).
pub fn alert(standing: &Standing, resolved: bool, now: Timestamp) -> Value {
    let (namespace, name) = &standing.desired_state;
    let object = &standing.drift.object;
    let notice = standing.notice(false, now);
    let ends = if resolved { now } else { now + ALERT_LIFETIME };
    json!({
        "labels": {
            "alertname": "DriftwardenDriftStands",
            "severity": "warning",
            "namespace": namespace,
            "desiredstate": name,
            "kind": object.kind,
            "object": describe(object),
            "class": format!("{:?}", standing.drift.class),
        },
        "annotations": {
            "summary": notice.summary,
            "fields": standing.drift.fields.join(", "),
            "fix": notice.fix.unwrap_or_default(),
        },
        "startsAt": standing.drift.since.0.to_string(),
        "endsAt": ends.to_string(),
    })
}

/// Alertmanager's body (`POST /api/v2/alerts`).
pub fn alertmanager_body(alerts: &[Value]) -> Vec<u8> {
    serde_json::to_vec(alerts).expect("alerts serialize")
}
