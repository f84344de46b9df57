//! How the request CLI shows requests: table rows, a request's full story,
//! and which requests a user may review. Pure: AccessRequests in, text out.

use k8s_openapi::jiff::Timestamp;

use crate::api::{AccessPhase, AccessRequest};

/// At most this many activity entries in `status`.
const SHOWN_ACTIVITY: usize = 10;

fn phase(request: &AccessRequest) -> Option<AccessPhase> {
    request.status.as_ref().and_then(|s| s.phase)
}

fn phase_word(request: &AccessRequest) -> String {
    phase(request).map_or_else(|| "New".to_owned(), |p| format!("{p:?}"))
}

/// How long until `at`, or how long ago, in whole units: `in 29m`, `3h ago`.
pub fn relative(at: Timestamp, now: Timestamp) -> String {
    let seconds = at.duration_since(now).as_secs();
    let (amount, suffix) = if seconds >= 0 { (seconds, "in ") } else { (-seconds, "") };
    let span = match amount {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    };
    if seconds >= 0 { format!("{suffix}{span}") } else { format!("{span} ago") }
}

/// Whether `user` may usefully review `request`: it is pending and not hers
/// (a self-approval is ignored), and she has not reviewed it yet.
pub fn reviewable_by(request: &AccessRequest, user: &str) -> bool {
    let status = request.status.as_ref();
    phase(request) == Some(AccessPhase::Pending)
        && request.spec.requester.as_deref() != Some(user)
        && !status.is_some_and(|s| s.approvals.iter().any(|a| a.reviewer == user))
}

/// The table `driftwarden ls` prints.
pub fn table(requests: &[&AccessRequest], now: Timestamp) -> String {
    let mut rows = vec![["NAMESPACE", "NAME", "REQUESTER", "ROLE", "FOR", "PHASE", "ENDS"].map(str::to_owned).to_vec()];
    for request in requests {
        let status = request.status.as_ref();
        let ends = status.and_then(|s| s.expires_at.as_ref()).map_or_else(|| "-".to_owned(), |t| relative(t.0, now));
        rows.push(vec![
            request.metadata.namespace.clone().unwrap_or_default(),
            request.metadata.name.clone().unwrap_or_default(),
            request.spec.requester.clone().unwrap_or_else(|| "-".to_owned()),
            format!("{:?}/{}", request.spec.role.kind, request.spec.role.name),
            request.spec.duration.to_string(),
            phase_word(request),
            ends,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len()).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    rows.iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
            cells.join("  ").trim_end().to_owned() + "\n"
        })
        .collect()
}

/// Everything `driftwarden status NAME` says about one request.
pub fn story(request: &AccessRequest, now: Timestamp) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    let name = request.metadata.name.clone().unwrap_or_default();
    let namespace = request.metadata.namespace.clone().unwrap_or_default();
    line(format!("AccessRequest {namespace}/{name}: {}", phase_word(request)));
    line(format!("  requester: {}", request.spec.requester.as_deref().unwrap_or("-")));
    line(format!("  role:      {:?}/{} for {}", request.spec.role.kind, request.spec.role.name, request.spec.duration));
    line(format!("  reason:    {}", request.spec.reason));
    let Some(status) = &request.status else { return out };
    if let Some(message) = &status.message {
        line(format!("  message:   {message}"));
    }
    if let (Some(from), Some(until)) = (&status.granted_at, &status.expires_at) {
        line(format!("  window:    {} to {} (ends {})", from.0, until.0, relative(until.0, now)));
    } else if let Some(until) = &status.expires_at {
        line(format!("  window:    until {} ({})", until.0, relative(until.0, now)));
    }
    if let Some(binding) = &status.role_binding {
        line(format!("  binding:   RoleBinding {binding}"));
    }
    for approval in &status.approvals {
        line(format!("  approved:  by {} at {} ({})", approval.reviewer, approval.at.0, approval.reason));
    }
    for ignored in &status.ignored_reviews {
        let by = ignored.reviewer.as_deref().unwrap_or("?");
        line(format!("  ignored:   review {} by {by}: {}", ignored.review, ignored.reason));
    }
    if let Some(pending) = &status.pending_drift {
        line(format!("  drift in the namespace now: {} object(s) differ from Git", pending.drifted));
        for object in &pending.objects {
            line(format!("    {object}"));
        }
    }
    let total = status.activity_count.unwrap_or(status.activity.len() as i64);
    if total > 0 {
        line(format!(
            "  activity ({total} write(s) and command(s), newest {} shown):",
            status.activity.len().min(SHOWN_ACTIVITY)
        ));
        let newest = status.activity.iter().rev().take(SHOWN_ACTIVITY).collect::<Vec<_>>();
        for entry in newest.into_iter().rev() {
            let object = entry.name.as_deref().unwrap_or("");
            if entry.is_command() {
                let container = entry.container.as_deref().map(|c| format!(" -c {c}")).unwrap_or_default();
                let cut = if entry.command_truncated { " (cut)" } else { "" };
                line(format!(
                    "    {} {} {} {object}{container} -- {}{cut} [{}]",
                    entry.time.0,
                    entry.user,
                    entry.resource,
                    crate::gate::commands::shell_line(&entry.command),
                    entry.sources.join("+")
                ));
                continue;
            }
            line(format!("    {} {} {} {}/{object}", entry.time.0, entry.user, entry.verb, entry.resource));
        }
    }
    for change in &status.session_changes {
        line(format!(
            "  left changed at the window's end: {} (commit to {} to keep it)",
            describe(&change.object),
            change.source
        ));
    }
    out
}

fn describe(object: &crate::api::ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// The message of a refusal by the API server or an admission webhook,
/// without the framing around it.
pub fn refusal(message: &str) -> &str {
    message.rsplit_once("denied the request: ").map_or(message, |(_, why)| why)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(name: &str, requester: &str, phase: &str, approvals: serde_json::Value) -> AccessRequest {
        serde_json::from_value(json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"requester": requester, "role": {"kind": "ClusterRole", "name": "edit"}, "duration": "30m", "reason": "INC-42: the checkout is down"},
            "status": {"phase": phase, "approvals": approvals, "expiresAt": "2026-12-02T10:30:00Z", "grantedAt": "2026-12-02T10:00:00Z",
                       "roleBinding": "driftwarden-fix", "activityCount": 1,
                       "activity": [{"time": "2026-12-02T10:05:00.000000Z", "user": requester, "verb": "patch", "resource": "deployments.apps", "namespace": "shop", "name": "web"}]},
        }))
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn times_read_as_people_say_them() {
        let now = at("2026-12-02T10:00:00Z");
        assert_eq!(relative(at("2026-12-02T10:29:59Z"), now), "in 29m");
        assert_eq!(relative(at("2026-12-02T10:00:30Z"), now), "in 30s");
        assert_eq!(relative(at("2026-12-02T07:00:00Z"), now), "3h ago");
        assert_eq!(relative(at("2026-11-29T10:00:00Z"), now), "3d ago");
    }

    #[test]
    fn only_others_pending_requests_are_reviewable() {
        let pending = request("a", "alice", "Pending", json!([]));
        assert!(reviewable_by(&pending, "carol"));
        assert!(!reviewable_by(&pending, "alice"), "her own");
        let reviewed = request(
            "b",
            "alice",
            "Pending",
            json!([{"reviewer": "carol", "review": "r", "at": "2026-12-02T10:00:00Z"}]),
        );
        assert!(!reviewable_by(&reviewed, "carol"), "already reviewed by her");
        assert!(!reviewable_by(&request("c", "alice", "Active", json!([])), "carol"));
    }

    #[test]
    fn the_table_and_the_story_say_what_an_approver_needs() {
        let now = at("2026-12-02T10:10:00Z");
        let active = request(
            "fix",
            "alice",
            "Active",
            json!([{"reviewer": "carol", "review": "ok", "reason": "seen the ticket", "at": "2026-12-02T10:00:00Z"}]),
        );
        let table = table(&[&active], now);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE  NAME  REQUESTER  ROLE"), "{table}");
        assert!(
            lines[1].contains("alice")
                && lines[1].contains("ClusterRole/edit")
                && lines[1].contains("Active")
                && lines[1].ends_with("in 20m"),
            "{table}"
        );
        let story = story(&active, now);
        for expected in [
            "AccessRequest shop/fix: Active",
            "approved:  by carol",
            "binding:   RoleBinding driftwarden-fix",
            "ends in 20m",
            "alice patch deployments.apps/web",
        ] {
            assert!(story.contains(expected), "{expected:?} missing from:\n{story}");
        }
    }

    #[test]
    fn the_story_shows_a_sessions_commands_as_typed_with_their_sources() {
        let mut active = request("fix", "alice", "Active", json!([]));
        let status = active.status.as_mut().unwrap();
        status.activity.push(
            serde_json::from_value(json!({"time": "2026-12-02T10:06:00.000000Z", "user": "alice", "verb": "connect",
                "resource": "pods/exec", "namespace": "shop", "name": "web-0", "container": "app",
                "command": ["sh", "-c", "cat /tmp/x | wc -l"], "commandTruncated": true, "sources": ["admission", "audit"]}))
            .unwrap(),
        );
        status.activity_count = Some(2);
        let story = story(&active, at("2026-12-02T10:10:00Z"));
        for expected in [
            "activity (2 write(s) and command(s), newest 2 shown)",
            "alice patch deployments.apps/web",
            "alice pods/exec web-0 -c app -- sh -c 'cat /tmp/x | wc -l' (cut) [admission+audit]",
        ] {
            assert!(story.contains(expected), "{expected:?} missing from:\n{story}");
        }
    }

    #[test]
    fn a_webhook_refusal_reads_as_its_reason() {
        let message =
            "admission webhook \"requests.driftwarden.io\" denied the request: no AccessPolicy covers namespace shop";
        assert_eq!(refusal(message), "no AccessPolicy covers namespace shop");
        assert_eq!(refusal("forbidden"), "forbidden");
    }
}
