//! Notifications: what the operator tells the tools people watch. Pure:
//! what a notice says ([`Notice`]), which Notifiers take it ([`routes`]),
//! how each receiver's message looks ([`render`]) and which drift stands
//! ([`standing`]). The operator's `notify` module delivers them.
//!
//! A notice carries names, field paths, phases and the patches the codify
//! step already redacts; never an object's values, so no Secret value can
//! reach a receiver.

pub mod render;
pub mod standing;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::api::{
    AccessPhase, AccessRequest, ActivityEntry, DesiredStateStatus, DriftClass, NoticeKind, NotifierSpec, ObjectRef,
    PendingDrift,
};

/// At most this many activity entries and pending objects in one notice.
pub const LISTED: usize = 10;

/// One notification, as every receiver gets it (the webhook's JSON body).
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub kind: NoticeKind,
    /// The namespace it is about (its Notifiers' `namespaces` select on it).
    pub namespace: String,
    pub time: Timestamp,
    /// One readable line.
    pub summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drift: Option<DriftFacts>,
    /// Drift that stands: the command that asks for access to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandFacts>,
}

/// A command run in a Pod, as the request's activity lists it.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CommandFacts {
    #[serde(flatten)]
    pub entry: ActivityEntry,
    /// The AccessRequests whose open window it ran in (none: no window).
    pub access_requests: Vec<String>,
}

/// A command run in a Pod: `entry` is its bounded activity entry.
pub fn command_notice(entry: &ActivityEntry, access_requests: &[&str], now: Timestamp) -> Notice {
    let line = shell_line(&entry.command);
    let container = entry.container.as_deref().map(|c| format!(" (container {c})")).unwrap_or_default();
    let within = match access_requests {
        [] => " with no access window open".to_owned(),
        requests => format!(" in the window of AccessRequest {}", requests.join(", ")),
    };
    let cut = if entry.command_truncated { " (cut)" } else { "" };
    let namespace = entry.namespace.clone().unwrap_or_default();
    let pod = entry.name.as_deref().unwrap_or_default();
    Notice {
        kind: NoticeKind::SessionCommand,
        namespace: namespace.clone(),
        time: now,
        summary: format!(
            "{} ran {} in Pod {namespace}/{pod}{container}{within}: {line}{cut}",
            entry.user, entry.resource
        ),
        request: None,
        drift: None,
        fix: None,
        command: Some(CommandFacts {
            entry: entry.clone(),
            access_requests: access_requests.iter().map(|r| r.to_string()).collect(),
        }),
    }
}

/// A command line as a shell would take it.
fn shell_line(argv: &[String]) -> String {
    let word = |arg: &String| {
        if !arg.is_empty() && arg.chars().all(|c| c.is_ascii_alphanumeric() || "-_./=:,@%+".contains(c)) {
            arg.clone()
        } else {
            shell_quote(arg)
        }
    };
    argv.iter().map(word).collect::<Vec<_>>().join(" ")
}

/// What a notice says about an AccessRequest.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestFacts {
    pub name: String,
    pub requester: String,
    /// `ClusterRole/edit`.
    pub role: String,
    pub duration: String,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<AccessPhase>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    /// Why it was denied or revoked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// A new request: the drift in its namespace that an approval would let
    /// stand (its blast radius).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_drift: Option<PendingDrift>,
    /// An ended window: what the session wrote (the newest, as
    /// `verb resource namespace/name by user`) and how many writes in all.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub activity: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_count: Option<i64>,
    /// A codified session change: the object and the patch to commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changed_object: Option<ObjectRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
}

/// What a notice says about drift.
#[derive(Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DriftFacts {
    pub desired_state: String,
    pub object: ObjectRef,
    pub class: DriftClass,
    /// `Reverted`, `Deleted`, `Reported` or `Resolved`.
    pub action: &'static str,
    /// JSON pointers of the fields that differ (values never).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// The AccessRequest the change belonged to (a window-end revert).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_request: Option<String>,
}

/// `Deployment shop/web`.
pub fn describe(object: &ObjectRef) -> String {
    match &object.namespace {
        Some(namespace) => format!("{} {namespace}/{}", object.kind, object.name),
        None => format!("{} {}", object.kind, object.name),
    }
}

/// Whether a Notifier takes a notice.
pub fn routes(spec: &NotifierSpec, notice: &Notice) -> bool {
    (spec.namespaces.is_empty() || spec.namespaces.contains(&notice.namespace))
        && (spec.events.is_empty() || spec.events.contains(&notice.kind))
}

/// The facts of a request as it stands (its spec, and its status as given).
pub fn request_facts(request: &AccessRequest) -> RequestFacts {
    let status = request.status.clone().unwrap_or_default();
    RequestFacts {
        name: request.metadata.name.clone().unwrap_or_default(),
        requester: request.spec.requester.clone().unwrap_or_else(|| "<unknown>".into()),
        role: format!("{:?}/{}", request.spec.role.kind, request.spec.role.name),
        duration: request.spec.duration.to_string(),
        reason: request.spec.reason.clone(),
        phase: status.phase,
        approvers: status.approvals.iter().map(|a| a.reviewer.clone()).collect(),
        starts_at: status.granted_at.map(|t| t.0),
        expires_at: status.expires_at.map(|t| t.0),
        ..RequestFacts::default()
    }
}

/// A notice about a request whose phase just became `phase`. `facts` hold
/// the new status's window, approvers and message; `request` the status
/// before (its activity, for an ended window).
pub fn request_notice(request: &AccessRequest, facts: RequestFacts, now: Timestamp) -> Option<Notice> {
    let phase = facts.phase?;
    let before = request.status.as_ref().and_then(|s| s.phase);
    if phase == AccessPhase::Active && before == Some(AccessPhase::Approved) {
        // A window that starts later was announced when it was approved.
        return None;
    }
    let who =
        format!("{} for {} in {}", facts.role, facts.requester, request.metadata.namespace.as_deref().unwrap_or(""));
    let (kind, summary, mut facts) = match phase {
        AccessPhase::Pending => {
            let summary =
                format!("{} requested {} for {}: {}", facts.requester, facts.role, facts.duration, facts.reason);
            (NoticeKind::RequestCreated, summary, facts)
        }
        AccessPhase::Approved | AccessPhase::Active => {
            let until = facts.expires_at.map(|t| format!(" until {t}")).unwrap_or_default();
            let starts = facts.starts_at.map(|t| format!(" from {t}")).unwrap_or_default();
            let summary = format!("{who} approved by {}{starts}{until}", facts.approvers.join(", "));
            (NoticeKind::RequestApproved, summary, facts)
        }
        AccessPhase::Denied => {
            let summary = format!("{who} denied: {}", facts.message.as_deref().unwrap_or(""));
            (NoticeKind::RequestDenied, summary, facts)
        }
        AccessPhase::Expired | AccessPhase::Revoked => {
            let status = request.status.clone().unwrap_or_default();
            let count = status.activity_count.unwrap_or(status.activity.len() as i64);
            let ended = if phase == AccessPhase::Expired { "expired" } else { "revoked" };
            let summary = format!("{who} {ended}; the session made {count} write(s)");
            let activity = status
                .activity
                .iter()
                .rev()
                .take(LISTED)
                .map(|entry| {
                    let object = match (&entry.namespace, &entry.name) {
                        (Some(namespace), Some(name)) => format!(" {namespace}/{name}"),
                        (None, Some(name)) => format!(" {name}"),
                        _ => String::new(),
                    };
                    format!("{} {}{object} by {}", entry.verb, entry.resource, entry.user)
                })
                .collect();
            (NoticeKind::RequestEnded, summary, RequestFacts { activity, activity_count: Some(count), ..facts })
        }
    };
    // Only a denial or a revocation says why.
    if kind != NoticeKind::RequestDenied && phase != AccessPhase::Revoked {
        facts.message = None;
    }
    Some(Notice {
        kind,
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        time: now,
        summary,
        request: Some(facts),
        drift: None,
        fix: None,
        command: None,
    })
}

/// How long before its end a window is announced as expiring: five
/// minutes, or a fifth of the window when that is shorter.
pub fn expiry_warning(window: SignedDuration) -> SignedDuration {
    (window / 5).min(SignedDuration::from_mins(5))
}

/// The notice that a window ends soon.
pub fn expiring_notice(request: &AccessRequest, now: Timestamp) -> Option<Notice> {
    let facts = request_facts(request);
    let expires = facts.expires_at?;
    let summary = format!(
        "{} for {} in {} ends at {expires}; changes still in place are then reverted to Git",
        facts.role,
        facts.requester,
        request.metadata.namespace.as_deref().unwrap_or("")
    );
    Some(Notice {
        kind: NoticeKind::RequestExpiring,
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        time: now,
        summary,
        request: Some(facts),
        drift: None,
        fix: None,
        command: None,
    })
}

/// A window ended with a change still in place: the patch that keeps it.
pub fn codified_notice(
    request: &AccessRequest,
    object: &ObjectRef,
    source: &str,
    patch: &str,
    now: Timestamp,
) -> Notice {
    let facts = request_facts(request);
    let summary = format!(
        "the window of {} ({}) ended with {} changed; to keep the change, commit the patch to {source}",
        facts.name,
        facts.requester,
        describe(object)
    );
    Notice {
        kind: NoticeKind::SessionCodified,
        namespace: request.metadata.namespace.clone().unwrap_or_default(),
        time: now,
        summary,
        request: Some(RequestFacts { changed_object: Some(object.clone()), patch: Some(patch.to_owned()), ..facts }),
        drift: None,
        fix: None,
        command: None,
    }
}

/// A revert or deletion the operator made.
pub fn reverted_notice(
    desired_state: &str,
    object: &ObjectRef,
    class: DriftClass,
    deleted: bool,
    access_request: Option<&str>,
    now: Timestamp,
) -> Notice {
    let (kind, why) = match (class, access_request) {
        (DriftClass::WindowEnded, Some(request)) => {
            (NoticeKind::WindowEndReverted, format!("the window of AccessRequest {request} ended"))
        }
        _ => (NoticeKind::DriftReverted, "no approved access window covers the change".to_owned()),
    };
    let done = if deleted { "deleted (not declared in Git)" } else { "reverted to Git" };
    Notice {
        kind,
        namespace: object.namespace.clone().unwrap_or_default(),
        time: now,
        summary: format!("{} {done} by DesiredState {desired_state}: {why}", describe(object)),
        request: None,
        drift: Some(DriftFacts {
            desired_state: desired_state.to_owned(),
            object: object.clone(),
            class,
            action: if deleted { "Deleted" } else { "Reverted" },
            fields: Vec::new(),
            since: None,
            access_request: access_request.map(str::to_owned),
        }),
        fix: None,
        command: None,
    }
}

/// The command that asks for access to fix standing drift.
pub fn fix_command(namespace: &str, desired_state: &str, object: &ObjectRef) -> String {
    let reason = format!("fix drift in {} reported by DesiredState {desired_state}", describe(object));
    format!("driftwarden request edit --namespace {namespace} --for 30m --reason {}", shell_quote(&reason))
}

fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// The drift a pending request would approve into: every DesiredState's
/// count in its namespace, and the first objects.
pub fn pending_drift<'a>(statuses: impl IntoIterator<Item = &'a DesiredStateStatus>) -> PendingDrift {
    let mut drift = PendingDrift::default();
    for status in statuses {
        drift.drifted += status.drifted.unwrap_or(0);
        for object in &status.drifted_objects {
            if drift.objects.len() < LISTED {
                drift.objects.push(describe(&object.object));
            }
        }
    }
    drift
}

#[cfg(test)]
mod tests;
