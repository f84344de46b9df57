//! The access state machine: `(request, reviews, policy, now) -> decision`.
//!
//! Pure and deterministic: every instant it uses comes from the inputs
//! (review creation times are set by the API server), so evaluating the same
//! world twice gives the same answer and a restarted operator reaches the
//! same conclusions as the one that stopped.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::policy::{self, Judge, NoPolicy};
use crate::api::{AccessPhase, ReviewDecision, WindowStart};

/// What the machine needs to know about an AccessRequest.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// Stamped by admission from the authenticated user; `None` means the
    /// request bypassed admission, which fails closed.
    pub requester: Option<&'a str>,
    pub duration: Duration,
    pub reason: &'a str,
    pub start_at: Option<Timestamp>,
    pub revoked: bool,
    /// The request is being deleted.
    pub deleting: bool,
    pub created_at: Timestamp,
    /// What status already says; final phases and granted windows stick.
    pub previous: Previous,
}

/// The parts of the current status that the machine must not contradict.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Previous {
    pub phase: Option<AccessPhase>,
    pub message: Option<String>,
    pub window: Option<Window>,
}

/// One AccessReview of the request.
#[derive(Clone, Debug)]
pub struct Review<'a> {
    pub name: &'a str,
    pub reviewer: Option<&'a str>,
    pub groups: &'a [String],
    pub decision: ReviewDecision,
    pub reason: &'a str,
    pub created_at: Timestamp,
}

/// When access starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub starts_at: Timestamp,
    pub expires_at: Timestamp,
}

/// A review that counted toward approval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counted {
    pub review: String,
    pub reviewer: String,
    pub reason: String,
    pub at: Timestamp,
}

/// A review that did not count, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ignored {
    pub review: String,
    pub reviewer: Option<String>,
    pub reason: String,
}

/// Whether the grant's RoleBinding must exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    Present,
    Absent,
}

/// The outcome of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: AccessPhase,
    pub message: String,
    pub policy: Option<String>,
    pub approvals: Vec<Counted>,
    pub ignored: Vec<Ignored>,
    pub window: Option<Window>,
    pub binding: Binding,
    /// When to evaluate again even if nothing changes: the window opens or
    /// ends, or a pending request times out.
    pub wake_at: Option<Timestamp>,
}

impl Decision {
    fn new(phase: AccessPhase, message: impl Into<String>, binding: Binding) -> Self {
        Self {
            phase,
            message: message.into(),
            policy: None,
            approvals: Vec::new(),
            ignored: Vec::new(),
            window: None,
            binding,
            wake_at: None,
        }
    }
}

pub fn is_final(phase: AccessPhase) -> bool {
    matches!(phase, AccessPhase::Denied | AccessPhase::Expired | AccessPhase::Revoked)
}

/// Evaluates a request. `judge` is the policy [`policy::select`] chose, or
/// why none applies.
pub fn evaluate(
    request: &Request<'_>,
    reviews: &[Review<'_>],
    judge: Result<&Judge<'_>, &NoPolicy>,
    now: Timestamp,
) -> Decision {
    let mut decision = decide(request, reviews, judge, now);
    decision.policy = judge.ok().map(|j| j.name.clone());
    // A revoked grant keeps the window it had: the gate needs to know which
    // changes were made inside it.
    if decision.phase == AccessPhase::Revoked && decision.window.is_none() {
        decision.window = request.previous.window;
    }
    // Final phases are final: a denied request is never approved later, an
    // expired one never reactivated. Only the binding's absence is re-asserted.
    if let Some(previous) = request.previous.phase.filter(|p| is_final(*p)) {
        decision.phase = previous;
        decision.binding = Binding::Absent;
        decision.wake_at = None;
        decision.window = request.previous.window;
        if let Some(message) = &request.previous.message {
            decision.message = message.clone();
        }
    }
    decision
}

fn decide(
    request: &Request<'_>,
    reviews: &[Review<'_>],
    judge: Result<&Judge<'_>, &NoPolicy>,
    now: Timestamp,
) -> Decision {
    let was_granted = matches!(request.previous.phase, Some(AccessPhase::Active | AccessPhase::Approved));
    // A grant that loses its footing is revoked; a request that never had one is denied.
    let refuse = |message: String| {
        let phase = if was_granted { AccessPhase::Revoked } else { AccessPhase::Denied };
        Decision::new(phase, message, Binding::Absent)
    };

    let Some(requester) = request.requester else {
        return refuse("the request has no requester: it was not admitted through driftwarden's webhook".into());
    };
    if request.deleting {
        return Decision::new(AccessPhase::Revoked, "the request was deleted", Binding::Absent);
    }
    if request.revoked {
        return Decision::new(AccessPhase::Revoked, "revoked", Binding::Absent);
    }
    let judge = match judge {
        Ok(judge) => judge,
        Err(no_policy) => return refuse(no_policy.to_string()),
    };
    if let Err(violation) = policy::check_request(request.duration, request.reason, judge) {
        return refuse(violation.to_string());
    }

    let tally = tally(requester, reviews, judge);
    let mut decision = match tally.outcome {
        Outcome::Denied { reviewer, reason } => refuse(format!("denied by {reviewer}: {reason}")),
        Outcome::Approved { at } => grant(request, judge, at, now),
        // The approvals behind a grant are gone (an approver deleted a
        // review): the grant loses its footing.
        Outcome::Undecided if was_granted => refuse("the approvals behind this grant were withdrawn".into()),
        Outcome::Undecided => pending(request, judge, tally.approvals.len(), now),
    };
    decision.approvals = tally.approvals;
    decision.ignored = tally.ignored;
    decision
}

enum Outcome {
    Undecided,
    Approved { at: Timestamp },
    Denied { reviewer: String, reason: String },
}

struct Tally {
    outcome: Outcome,
    approvals: Vec<Counted>,
    ignored: Vec<Ignored>,
}

/// Goes through the reviews in the order the API server created them until
/// the request is decided; every review is either counted or reported.
fn tally(requester: &str, reviews: &[Review<'_>], judge: &Judge<'_>) -> Tally {
    let mut ordered: Vec<&Review<'_>> = reviews.iter().collect();
    ordered.sort_by(|a, b| (a.created_at, a.name).cmp(&(b.created_at, b.name)));
    let required = usize::try_from(judge.spec.required_approvals.max(1)).unwrap_or(1);

    let mut tally = Tally { outcome: Outcome::Undecided, approvals: Vec::new(), ignored: Vec::new() };
    for review in ordered {
        let ignore = |reason: String| Ignored {
            review: review.name.to_owned(),
            reviewer: review.reviewer.map(str::to_owned),
            reason,
        };
        let reason = match (&tally.outcome, review.reviewer) {
            (Outcome::Approved { .. }, _) => Some("the request was already approved".to_owned()),
            (Outcome::Denied { .. }, _) => Some("the request was already denied".to_owned()),
            (_, None) => {
                Some("the review has no reviewer: it was not admitted through driftwarden's webhook".to_owned())
            }
            (_, Some(reviewer)) if reviewer == requester => {
                Some("requesters cannot review their own request".to_owned())
            }
            (_, Some(reviewer)) if !policy::is_approver(judge.spec, reviewer, review.groups) => {
                Some(format!("{reviewer} is not an approver under AccessPolicy {}", judge.name))
            }
            (_, Some(reviewer)) if tally.approvals.iter().any(|a| a.reviewer == reviewer) => {
                Some(format!("{reviewer} already approved; approvals must come from distinct approvers"))
            }
            _ => None,
        };
        if let Some(reason) = reason {
            tally.ignored.push(ignore(reason));
            continue;
        }
        let reviewer = review.reviewer.unwrap_or_default().to_owned();
        match review.decision {
            ReviewDecision::Deny => {
                tally.outcome = Outcome::Denied { reviewer, reason: review.reason.to_owned() };
            }
            ReviewDecision::Approve => {
                tally.approvals.push(Counted {
                    review: review.name.to_owned(),
                    reviewer,
                    reason: review.reason.to_owned(),
                    at: review.created_at,
                });
                if tally.approvals.len() >= required {
                    tally.outcome = Outcome::Approved { at: review.created_at };
                }
            }
        }
    }
    tally
}

fn grant(request: &Request<'_>, judge: &Judge<'_>, approved_at: Timestamp, now: Timestamp) -> Decision {
    // Once a window is in status it never moves: a request cannot be extended.
    let window = request.previous.window.unwrap_or_else(|| {
        let starts_at = match (judge.spec.window_start, request.start_at) {
            (WindowStart::RequestedStart, Some(start)) => start.max(approved_at),
            _ => approved_at,
        };
        Window { starts_at, expires_at: starts_at.checked_add(request.duration).unwrap_or(Timestamp::MAX) }
    });
    let mut decision = if now >= window.expires_at {
        Decision::new(AccessPhase::Expired, format!("expired at {}", window.expires_at), Binding::Absent)
    } else if now >= window.starts_at {
        let mut active =
            Decision::new(AccessPhase::Active, format!("active until {}", window.expires_at), Binding::Present);
        active.wake_at = Some(window.expires_at);
        active
    } else {
        let mut approved = Decision::new(
            AccessPhase::Approved,
            format!("approved; access starts at {}", window.starts_at),
            Binding::Absent,
        );
        approved.wake_at = Some(window.starts_at);
        approved
    };
    decision.window = Some(window);
    decision
}

fn pending(request: &Request<'_>, judge: &Judge<'_>, approvals: usize, now: Timestamp) -> Decision {
    let timeout: Duration = judge.spec.pending_timeout.into();
    let deadline = request.created_at.checked_add(timeout).unwrap_or(Timestamp::MAX);
    if now >= deadline {
        let message = format!("no decision within {}", policy::format_duration(timeout));
        return Decision::new(AccessPhase::Denied, message, Binding::Absent);
    }
    let required = usize::try_from(judge.spec.required_approvals.max(1)).unwrap_or(1);
    let mut who: Vec<String> = judge.spec.approvers.users.clone();
    who.extend(judge.spec.approvers.groups.iter().map(|g| format!("group {g}")));
    let message = format!(
        "waiting for {} more approval(s) from {} (until {deadline})",
        required.saturating_sub(approvals),
        who.join(", ")
    );
    let mut decision = Decision::new(AccessPhase::Pending, message, Binding::Absent);
    decision.wake_at = Some(deadline);
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{AccessPolicySpec, Approvers, RoleKind, RoleRef};
    use AccessPhase::*;

    const T0: i64 = 1_800_000_000; // request created
    const MIN: i64 = 60;

    fn at(offset_secs: i64) -> Timestamp {
        Timestamp::from_second(T0 + offset_secs).unwrap()
    }

    fn spec(required: i32, window_start: WindowStart) -> AccessPolicySpec {
        AccessPolicySpec {
            namespace_selector: Default::default(),
            roles: vec![RoleRef { kind: RoleKind::ClusterRole, name: "edit".into() }],
            max_duration: "4h".parse().unwrap(),
            approvers: Approvers { users: vec!["erin".into()], groups: vec!["sre".into()] },
            required_approvals: required,
            window_start,
            pending_timeout: "1h".parse().unwrap(),
            window_end: Default::default(),
        }
    }

    fn request(previous: Previous) -> Request<'static> {
        Request {
            requester: Some("alice"),
            duration: Duration::from_secs(30 * 60),
            reason: "INC-1234: roll back the frontend",
            start_at: None,
            revoked: false,
            deleting: false,
            created_at: at(0),
            previous,
        }
    }

    static SRE: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| vec!["sre".to_string()]);
    static DEV: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["dev".to_string(), "sre".to_string()]);

    fn review(name: &'static str, reviewer: &'static str, decision: ReviewDecision, offset: i64) -> Review<'static> {
        // alice is a developer who is also in sre: her own approval must still not count.
        let groups: &'static [String] = if reviewer == "alice" {
            &DEV
        } else if reviewer == "mallory" {
            &[]
        } else {
            &SRE
        };
        Review {
            name,
            reviewer: Some(reviewer),
            groups,
            decision,
            reason: "looked at the incident",
            created_at: at(offset),
        }
    }

    fn approve(name: &'static str, reviewer: &'static str, offset: i64) -> Review<'static> {
        review(name, reviewer, ReviewDecision::Approve, offset)
    }

    fn run(req: &Request<'_>, reviews: &[Review<'_>], required: i32, now: i64) -> Decision {
        let spec = spec(required, WindowStart::Approval);
        let judge = Judge { name: "oncall".into(), spec: &spec };
        evaluate(req, reviews, Ok(&judge), at(now))
    }

    fn window(start: i64, minutes: i64) -> Window {
        Window { starts_at: at(start), expires_at: at(start + minutes * MIN) }
    }

    /// (case, request, reviews, required approvals, now, phase, binding, wake_at)
    type Case<'a> = (&'a str, Request<'a>, Vec<Review<'a>>, i32, i64, AccessPhase, Binding, Option<i64>);

    #[test]
    fn phase_table() {
        let none = Previous::default();
        let active = Previous { phase: Some(Active), message: None, window: Some(window(5 * MIN, 30)) };
        let revoked_req = Request { revoked: true, ..request(active.clone()) };
        let deleting_req = Request { deleting: true, ..request(active.clone()) };
        let unstamped = Request { requester: None, ..request(none.clone()) };
        let too_long = Request { duration: Duration::from_secs(5 * 3600), ..request(none.clone()) };
        let trivial = Request { reason: "fix", ..request(none.clone()) };

        let cases: Vec<Case<'_>> = vec![
            ("no reviews yet", request(none.clone()), vec![], 1, MIN, Pending, Binding::Absent, Some(60 * MIN)),
            ("pending times out", request(none.clone()), vec![], 1, 60 * MIN, Denied, Binding::Absent, None),
            (
                "approved by an sre",
                request(none.clone()),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                6 * MIN,
                Active,
                Binding::Present,
                Some(35 * MIN),
            ),
            (
                "approved by a named user",
                request(none.clone()),
                vec![approve("r1", "erin", 5 * MIN)],
                1,
                6 * MIN,
                Active,
                Binding::Present,
                Some(35 * MIN),
            ),
            (
                "window over",
                request(none.clone()),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                35 * MIN,
                Expired,
                Binding::Absent,
                None,
            ),
            (
                "operator was down past expiry",
                request(active.clone()),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                10 * 60 * MIN,
                Expired,
                Binding::Absent,
                None,
            ),
            (
                "self approval ignored",
                request(none.clone()),
                vec![approve("r1", "alice", MIN)],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "non-approver ignored",
                request(none.clone()),
                vec![approve("r1", "mallory", MIN)],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "one of two approvals",
                request(none.clone()),
                vec![approve("r1", "carol", MIN)],
                2,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "same approver twice",
                request(none.clone()),
                vec![approve("r1", "carol", MIN), approve("r2", "carol", 2 * MIN)],
                2,
                3 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "two distinct approvers",
                request(none.clone()),
                vec![approve("r1", "carol", MIN), approve("r2", "dave", 2 * MIN)],
                2,
                3 * MIN,
                Active,
                Binding::Present,
                Some(32 * MIN),
            ),
            (
                "a deny denies",
                request(none.clone()),
                vec![approve("r1", "carol", MIN), review("r2", "dave", ReviewDecision::Deny, 2 * MIN)],
                2,
                3 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            (
                "deny by non-approver ignored",
                request(none.clone()),
                vec![review("r1", "mallory", ReviewDecision::Deny, MIN), approve("r2", "carol", 2 * MIN)],
                1,
                3 * MIN,
                Active,
                Binding::Present,
                Some(32 * MIN),
            ),
            (
                "deny after approval ignored",
                request(none.clone()),
                vec![approve("r1", "carol", MIN), review("r2", "dave", ReviewDecision::Deny, 2 * MIN)],
                1,
                3 * MIN,
                Active,
                Binding::Present,
                Some(31 * MIN),
            ),
            (
                "revoked while active",
                revoked_req,
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                6 * MIN,
                Revoked,
                Binding::Absent,
                None,
            ),
            (
                "deleted while active",
                deleting_req,
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                6 * MIN,
                Revoked,
                Binding::Absent,
                None,
            ),
            (
                "no requester fails closed",
                unstamped,
                vec![approve("r1", "carol", MIN)],
                1,
                2 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            (
                "over the policy maximum",
                too_long,
                vec![approve("r1", "carol", MIN)],
                1,
                2 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            ("trivial reason", trivial, vec![], 1, MIN, Denied, Binding::Absent, None),
            ("approval withdrawn", request(active.clone()), vec![], 1, 6 * MIN, Revoked, Binding::Absent, None),
        ];
        for (case, req, reviews, required, now, phase, binding, wake) in cases {
            let decision = run(&req, &reviews, required, now);
            assert_eq!(decision.phase, phase, "{case}: {}", decision.message);
            assert_eq!(decision.binding, binding, "{case}");
            assert_eq!(decision.wake_at, wake.map(at), "{case}");
            assert_eq!(decision.policy.as_deref(), Some("oncall"), "{case}");
        }
    }

    #[test]
    fn final_phases_stick() {
        for final_phase in [Denied, Expired, Revoked] {
            let previous = Previous { phase: Some(final_phase), message: Some("was final".into()), window: None };
            // Even a fresh, valid approval cannot bring it back.
            let decision = run(&request(previous), &[approve("r1", "carol", MIN)], 1, 2 * MIN);
            assert_eq!(decision.phase, final_phase);
            assert_eq!(decision.binding, Binding::Absent);
            assert_eq!(decision.message, "was final");
            assert_eq!(decision.wake_at, None);
        }
    }

    #[test]
    fn ignored_reviews_are_reported_with_reasons() {
        let reviews = [
            approve("self", "alice", MIN),
            approve("outsider", "mallory", 2 * MIN),
            Review { reviewer: None, ..approve("unstamped", "carol", 3 * MIN) },
            approve("first", "carol", 4 * MIN),
            approve("again", "carol", 5 * MIN),
        ];
        let decision = run(&request(Previous::default()), &reviews, 2, 6 * MIN);
        assert_eq!(decision.phase, Pending);
        assert_eq!(decision.approvals.len(), 1);
        let reasons: Vec<(&str, &str)> =
            decision.ignored.iter().map(|i| (i.review.as_str(), i.reason.as_str())).collect();
        assert_eq!(
            reasons,
            [
                ("self", "requesters cannot review their own request"),
                ("outsider", "mallory is not an approver under AccessPolicy oncall"),
                ("unstamped", "the review has no reviewer: it was not admitted through driftwarden's webhook"),
                ("again", "carol already approved; approvals must come from distinct approvers"),
            ]
        );
        assert!(
            decision.message.starts_with("waiting for 1 more approval(s) from erin, group sre"),
            "{}",
            decision.message
        );
    }

    #[test]
    fn a_granted_window_never_moves_or_grows() {
        let granted = window(5 * MIN, 30);
        let previous = Previous { phase: Some(Active), message: None, window: Some(granted) };
        // A later approval cannot shift the window: the first one opened it.
        let decision = run(&request(previous), &[approve("late", "carol", 20 * MIN)], 1, 21 * MIN);
        assert_eq!(decision.window, Some(granted));
        assert_eq!(decision.wake_at, Some(granted.expires_at));
    }

    #[test]
    fn requested_start_time_is_honoured_when_the_policy_allows_it() {
        let spec = spec(1, WindowStart::RequestedStart);
        let judge = Judge { name: "oncall".into(), spec: &spec };
        let req = Request { start_at: Some(at(30 * MIN)), ..request(Previous::default()) };
        let reviews = [approve("r1", "carol", 5 * MIN)];
        let before = evaluate(&req, &reviews, Ok(&judge), at(10 * MIN));
        assert_eq!((before.phase, before.binding, before.wake_at), (Approved, Binding::Absent, Some(at(30 * MIN))));
        let during = evaluate(&req, &reviews, Ok(&judge), at(30 * MIN));
        assert_eq!((during.phase, during.wake_at), (Active, Some(at(60 * MIN))));

        // Under an approval-start policy the requested start is ignored.
        let decision = run(&req, &reviews, 1, 10 * MIN);
        assert_eq!(decision.phase, Active);
    }

    #[test]
    fn losing_the_policy_revokes_a_grant_and_denies_a_request() {
        let no_policy = NoPolicy::NoneForNamespace { namespace: "shop".into() };
        let fresh = evaluate(&request(Previous::default()), &[], Err(&no_policy), at(MIN));
        assert_eq!((fresh.phase, fresh.message.as_str()), (Denied, "no AccessPolicy covers namespace shop"));
        let active = Previous { phase: Some(Active), message: None, window: Some(window(0, 30)) };
        let granted = evaluate(&request(active), &[], Err(&no_policy), at(MIN));
        assert_eq!((granted.phase, granted.binding), (Revoked, Binding::Absent));
    }

    /// Invariant over many inputs: the binding exists only while Active, and
    /// only inside the window.
    #[test]
    fn binding_exists_only_inside_an_active_window() {
        let reviewers = ["alice", "carol", "dave", "mallory", "erin"];
        for now in (0..90).map(|m| m * MIN) {
            for (i, first) in reviewers.iter().enumerate() {
                for second in &reviewers[i..] {
                    for required in 1..=2 {
                        let reviews = [approve("a", first, MIN), approve("b", second, 3 * MIN)];
                        let d = run(&request(Previous::default()), &reviews, required, now);
                        let inside = d.window.is_some_and(|w| at(now) >= w.starts_at && at(now) < w.expires_at);
                        assert_eq!(d.binding == Binding::Present, d.phase == Active);
                        assert_eq!(d.phase == Active, inside, "{first}/{second}/{required}@{now}");
                    }
                }
            }
        }
    }
}
