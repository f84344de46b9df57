//! What the access controller says about a decision, pure: the Events on
//! the request (in people's words), the review counts for metrics, and the
//! notice for the Notifiers. Nothing on a no-op.

use k8s_openapi::jiff::Timestamp;

use super::machine::Decision;
use super::policy;
use crate::api::{AccessPhase, AccessRequest, AccessRequestStatus};
use crate::notify::{self, Notice};

/// One Event on the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub warning: bool,
    pub reason: &'static str,
    pub note: String,
    /// The AccessReview it is about: as the Event's related object, it keeps
    /// one Event per review instead of a series that shows only the first.
    pub review: Option<String>,
}

/// Everything said about one decision.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Announcements {
    pub events: Vec<Announcement>,
    /// Reviews that newly counted, were newly ignored, and whether a
    /// reviewer (not the policy) just denied it: the review metrics.
    pub approved: u64,
    pub ignored: u64,
    pub denied_by_reviewer: bool,
    /// The phase changed: the notice for Notifiers.
    pub notice: Option<Notice>,
}

/// What changed since `old`: new approvals, newly ignored reviews, and a
/// phase transition.
pub fn announce(
    request: &AccessRequest,
    old: &AccessRequestStatus,
    decision: &Decision,
    now: Timestamp,
) -> Announcements {
    let requester = request.spec.requester.clone().unwrap_or_else(|| "<unknown>".into());
    let role = format!("{:?} {}", request.spec.role.kind, request.spec.role.name);
    let approvers: Vec<&str> = decision.approvals.iter().map(|a| a.reviewer.as_str()).collect();
    let mut said = Announcements {
        approved: decision.approvals.iter().filter(|a| !old.approvals.iter().any(|o| o.review == a.review)).count()
            as u64,
        ..Announcements::default()
    };
    for ignored in decision.ignored.iter().filter(|i| !old.ignored_reviews.iter().any(|o| o.review == i.review)) {
        said.ignored += 1;
        let reviewer = ignored.reviewer.as_deref().unwrap_or("<unknown>");
        said.events.push(Announcement {
            warning: true,
            reason: "ReviewIgnored",
            note: format!("review {} by {reviewer} ignored: {}", ignored.review, ignored.reason),
            review: Some(ignored.review.clone()),
        });
    }
    if old.phase == Some(decision.phase) {
        return said;
    }

    let expires = decision.window.map(|w| w.expires_at.to_string()).unwrap_or_default();
    let (warning, reason, note) = match decision.phase {
        AccessPhase::Pending => (
            false,
            "Requested",
            format!(
                "{requester} requested {role} for {}: {}",
                policy::format_duration(request.spec.duration.into()),
                request.spec.reason
            ),
        ),
        AccessPhase::Approved => (
            false,
            "Approved",
            format!(
                "{role} for {requester} approved by {}; access starts at {}",
                approvers.join(", "),
                decision.window.map(|w| w.starts_at.to_string()).unwrap_or_default()
            ),
        ),
        AccessPhase::Active => (
            false,
            "Granted",
            format!("{role} granted to {requester} until {expires}, approved by {}", approvers.join(", ")),
        ),
        AccessPhase::Denied => (true, "Denied", format!("{role} for {requester} denied: {}", decision.message)),
        AccessPhase::Expired => {
            (false, "Expired", format!("{role} of {requester} expired at {expires}; RoleBinding removed"))
        }
        AccessPhase::Revoked => (false, "Revoked", format!("{role} of {requester} revoked: {}", decision.message)),
    };
    said.denied_by_reviewer = decision.phase == AccessPhase::Denied && decision.message.starts_with("denied by ");
    said.events.push(Announcement { warning, reason, note, review: None });
    let facts = notify::RequestFacts {
        phase: Some(decision.phase),
        approvers: approvers.iter().map(|a| a.to_string()).collect(),
        starts_at: decision.window.map(|w| w.starts_at),
        expires_at: decision.window.map(|w| w.expires_at),
        message: Some(decision.message.clone()).filter(|m| !m.is_empty()),
        ..notify::request_facts(request)
    };
    said.notice = notify::request_notice(request, facts, now);
    said
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::access::Binding;
    use crate::access::machine::{Counted, Ignored, Window};
    use crate::api::{Approval, IgnoredReview, NoticeKind};

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn request() -> AccessRequest {
        serde_json::from_value(json!({
            "apiVersion": "driftwarden.io/v1alpha1", "kind": "AccessRequest",
            "metadata": {"name": "fix", "namespace": "shop", "uid": "u1"},
            "spec": {"requester": "alice", "role": {"kind": "ClusterRole", "name": "edit"},
                     "duration": "30m", "reason": "INC-42: checkout is down"},
        }))
        .unwrap()
    }

    fn decision(phase: AccessPhase, message: &str, approvals: &[&str], ignored: &[&str]) -> Decision {
        let window = Window { starts_at: at("2026-12-02T10:00:00Z"), expires_at: at("2026-12-02T10:30:00Z") };
        Decision {
            phase,
            message: message.into(),
            policy: Some("shop".into()),
            approvals: approvals
                .iter()
                .map(|r| Counted {
                    review: format!("{r}-ok"),
                    reviewer: (*r).into(),
                    reason: "ok".into(),
                    at: window.starts_at,
                })
                .collect(),
            ignored: ignored
                .iter()
                .map(|r| Ignored {
                    review: format!("{r}-ok"),
                    reviewer: Some((*r).into()),
                    reason: "self-approval".into(),
                })
                .collect(),
            window: matches!(phase, AccessPhase::Active | AccessPhase::Expired).then_some(window),
            binding: Binding::Absent,
            wake_at: None,
        }
    }

    fn status(phase: Option<AccessPhase>, approvals: &[&str], ignored: &[&str]) -> AccessRequestStatus {
        AccessRequestStatus {
            phase,
            approvals: approvals
                .iter()
                .map(|r| Approval {
                    reviewer: (*r).into(),
                    review: format!("{r}-ok"),
                    reason: "ok".into(),
                    at: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at("2026-12-02T10:00:00Z")),
                })
                .collect(),
            ignored_reviews: ignored
                .iter()
                .map(|r| IgnoredReview { review: format!("{r}-ok"), reviewer: Some((*r).into()), reason: "x".into() })
                .collect(),
            ..AccessRequestStatus::default()
        }
    }

    #[test]
    fn each_change_is_said_once_in_its_words() {
        let now = at("2026-12-02T10:00:00Z");
        let request = request();
        // (status before, decision, Events as (reason, warning), review counts, notice)
        type Case = (AccessRequestStatus, Decision, Vec<(&'static str, bool)>, (u64, u64, bool), Option<NoticeKind>);
        let cases: Vec<Case> = vec![
            (
                status(None, &[], &[]),
                decision(AccessPhase::Pending, "waiting", &[], &[]),
                vec![("Requested", false)],
                (0, 0, false),
                Some(NoticeKind::RequestCreated),
            ),
            // Nothing changed: nothing said.
            (
                status(Some(AccessPhase::Pending), &[], &[]),
                decision(AccessPhase::Pending, "waiting", &[], &[]),
                vec![],
                (0, 0, false),
                None,
            ),
            // Her own approval is ignored, once.
            (
                status(Some(AccessPhase::Pending), &[], &[]),
                decision(AccessPhase::Pending, "waiting", &[], &["alice"]),
                vec![("ReviewIgnored", true)],
                (0, 1, false),
                None,
            ),
            (
                status(Some(AccessPhase::Pending), &[], &["alice"]),
                decision(AccessPhase::Active, "granted", &["carol"], &["alice"]),
                vec![("Granted", false)],
                (1, 0, false),
                Some(NoticeKind::RequestApproved),
            ),
            (
                status(Some(AccessPhase::Pending), &[], &[]),
                decision(AccessPhase::Denied, "denied by carol: not now", &[], &[]),
                vec![("Denied", true)],
                (0, 0, true),
                Some(NoticeKind::RequestDenied),
            ),
            (
                status(Some(AccessPhase::Pending), &[], &[]),
                decision(AccessPhase::Denied, "no AccessPolicy allows ClusterRole edit here", &[], &[]),
                vec![("Denied", true)],
                (0, 0, false),
                Some(NoticeKind::RequestDenied),
            ),
            (
                status(Some(AccessPhase::Active), &["carol"], &[]),
                decision(AccessPhase::Expired, "expired", &["carol"], &[]),
                vec![("Expired", false)],
                (0, 0, false),
                Some(NoticeKind::RequestEnded),
            ),
        ];
        for (old, decision, events, counts, notice) in cases {
            let said = announce(&request, &old, &decision, now);
            let got: Vec<(&str, bool)> = said.events.iter().map(|e| (e.reason, e.warning)).collect();
            assert_eq!(got, events, "{:?} -> {:?}", old.phase, decision.phase);
            assert_eq!((said.approved, said.ignored, said.denied_by_reviewer), counts, "{:?}", decision.phase);
            assert_eq!(said.notice.map(|n| n.kind), notice, "{:?}", decision.phase);
        }
    }

    #[test]
    fn the_notes_say_who_what_and_until_when() {
        let request = request();
        let now = at("2026-12-02T10:00:00Z");
        let granted = announce(
            &request,
            &status(Some(AccessPhase::Pending), &[], &[]),
            &decision(AccessPhase::Active, "granted", &["carol"], &[]),
            now,
        );
        assert_eq!(
            granted.events[0].note,
            "ClusterRole edit granted to alice until 2026-12-02T10:30:00Z, approved by carol"
        );
        let ignored = announce(
            &request,
            &status(Some(AccessPhase::Pending), &[], &[]),
            &decision(AccessPhase::Pending, "waiting", &[], &["alice"]),
            now,
        );
        assert_eq!(ignored.events[0].note, "review alice-ok by alice ignored: self-approval");
        assert_eq!(ignored.events[0].review.as_deref(), Some("alice-ok"));
    }
}
