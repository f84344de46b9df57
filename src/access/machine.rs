//! The access state machine: `(request, reviews, policy, now) -> decision`.
//!
//! Pure and deterministic: every instant it uses comes from the inputs, and
//! those are what the API server recorded (the request's and the reviews'
//! creation times, the request's UID) or what the requester asked for and
//! cannot change afterwards (`spec.duration`, `spec.startAt`, `spec.revoked`
//! once set). The request's status is output only: its phase, window and
//! activity are never read back, so whoever can write status cannot extend,
//! end or reopen a grant. Evaluating the same world twice gives the same
//! answer, and a restarted operator reaches the same conclusions.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use super::policy::{self, Judge, NoPolicy};
use crate::api::{AccessPhase, ReviewDecision, WindowStart};

/// What the machine needs to know about an AccessRequest.
#[derive(Clone, Debug)]
pub struct Request<'a> {
    /// The UID the API server gave this request; reviews count only for it.
    pub uid: Option<&'a str>,
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
    /// The UID of the request the review was made for, stamped by admission.
    pub request_uid: Option<&'a str>,
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
    decision
}

/// Whether the request is ended by its requester or an admin (revoked or
/// deleted), and how to say so.
fn ended(request: &Request<'_>) -> Option<&'static str> {
    if request.deleting {
        Some("the request was deleted")
    } else if request.revoked {
        Some("revoked")
    } else {
        None
    }
}

fn decide(
    request: &Request<'_>,
    reviews: &[Review<'_>],
    judge: Result<&Judge<'_>, &NoPolicy>,
    now: Timestamp,
) -> Decision {
    let Some(requester) = request.requester else {
        return Decision::new(
            AccessPhase::Denied,
            "the request has no requester: it was not admitted through driftwarden's webhook",
            Binding::Absent,
        );
    };
    // A request without a policy that allows it is denied. Status is not
    // read, so a grant that loses its policy is denied too: its binding
    // goes either way.
    let refuse = |message: String| Decision::new(AccessPhase::Denied, message, Binding::Absent);
    let judge = match judge {
        Ok(judge) => judge,
        Err(no_policy) => return refuse(no_policy.to_string()),
    };
    if let Err(violation) = policy::check_request(request.duration, request.reason, judge) {
        return refuse(violation.to_string());
    }

    let timeout: Duration = judge.spec.pending_timeout.into();
    let deadline = request.created_at.checked_add(timeout).unwrap_or(Timestamp::MAX);
    let tally = tally(requester, request, reviews, judge, deadline);
    // A revoked or deleted request is Revoked, whatever else happened:
    // `spec.revoked` cannot be unset, so this never changes again (when it
    // was revoked is not an input, so no earlier end can be told apart).
    let mut decision = match (tally.outcome, ended(request)) {
        (Outcome::Approved { at }, Some(message)) => {
            // A revoked grant keeps the window it had: the gate needs to know
            // which changes were made inside it.
            let mut revoked = Decision::new(AccessPhase::Revoked, message, Binding::Absent);
            revoked.window = Some(window(request, judge, at));
            revoked
        }
        (_, Some(message)) => Decision::new(AccessPhase::Revoked, message, Binding::Absent),
        (Outcome::Denied { reviewer, reason }, None) => {
            Decision::new(AccessPhase::Denied, format!("denied by {reviewer}: {reason}"), Binding::Absent)
        }
        (Outcome::Approved { at }, None) => grant(window(request, judge, at), now),
        (Outcome::Undecided, None) => pending(judge, tally.approvals.len(), deadline, now),
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

/// Why a review does not count, before its reviewer is judged: it belongs
/// to another request, or came too early or too late.
fn out_of_place(request: &Request<'_>, review: &Review<'_>, deadline: Timestamp) -> Option<String> {
    match review.request_uid {
        None => {
            return Some(
                "the review names no request UID: it was not admitted through driftwarden's webhook".to_owned(),
            );
        }
        Some(uid) if Some(uid) != request.uid => {
            return Some(format!(
                "the review was made for an earlier request of the same name (UID {uid}); approvals never carry \
                 over to a new request"
            ));
        }
        Some(_) => {}
    }
    if review.created_at < request.created_at {
        return Some("the review was made before the request was created".to_owned());
    }
    if review.created_at >= deadline {
        return Some(format!("the review came after the request timed out at {deadline}"));
    }
    None
}

/// Goes through the reviews in the order the API server created them until
/// the request is decided; every review is either counted or reported.
fn tally(
    requester: &str,
    request: &Request<'_>,
    reviews: &[Review<'_>],
    judge: &Judge<'_>,
    deadline: Timestamp,
) -> Tally {
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
            _ if out_of_place(request, review, deadline).is_some() => out_of_place(request, review, deadline),
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

/// The window: from the approval that completed the request (or the
/// requested start, where the policy allows it), for `spec.duration`.
fn window(request: &Request<'_>, judge: &Judge<'_>, approved_at: Timestamp) -> Window {
    let starts_at = match (judge.spec.window_start, request.start_at) {
        (WindowStart::RequestedStart, Some(start)) => start.max(approved_at),
        _ => approved_at,
    };
    Window { starts_at, expires_at: starts_at.checked_add(request.duration).unwrap_or(Timestamp::MAX) }
}

fn grant(window: Window, now: Timestamp) -> Decision {
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

fn pending(judge: &Judge<'_>, approvals: usize, deadline: Timestamp, now: Timestamp) -> Decision {
    let timeout: Duration = judge.spec.pending_timeout.into();
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

    const UID: &str = "uid-1";

    fn request() -> Request<'static> {
        Request {
            uid: Some(UID),
            requester: Some("alice"),
            duration: Duration::from_secs(30 * 60),
            reason: "INC-1234: roll back the frontend",
            start_at: None,
            revoked: false,
            deleting: false,
            created_at: at(0),
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
            request_uid: Some(UID),
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
        let revoked_req = Request { revoked: true, ..request() };
        let deleting_req = Request { deleting: true, ..request() };
        let unstamped = Request { requester: None, ..request() };
        let too_long = Request { duration: Duration::from_secs(5 * 3600), ..request() };
        let trivial = Request { reason: "fix", ..request() };
        // The same name, deleted and created again 20 minutes later: a new UID.
        let recreated = Request { uid: Some("uid-2"), created_at: at(20 * MIN), ..request() };
        let stale = |review: Review<'static>| Review { request_uid: Some("uid-0"), ..review };

        let cases: Vec<Case<'_>> = vec![
            ("no reviews yet", request(), vec![], 1, MIN, Pending, Binding::Absent, Some(60 * MIN)),
            ("pending times out", request(), vec![], 1, 60 * MIN, Denied, Binding::Absent, None),
            (
                "approved by an sre",
                request(),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                6 * MIN,
                Active,
                Binding::Present,
                Some(35 * MIN),
            ),
            (
                "approved by a named user",
                request(),
                vec![approve("r1", "erin", 5 * MIN)],
                1,
                6 * MIN,
                Active,
                Binding::Present,
                Some(35 * MIN),
            ),
            (
                "window over",
                request(),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                35 * MIN,
                Expired,
                Binding::Absent,
                None,
            ),
            (
                "operator was down past expiry",
                request(),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                10 * 60 * MIN,
                Expired,
                Binding::Absent,
                None,
            ),
            (
                "self approval ignored",
                request(),
                vec![approve("r1", "alice", MIN)],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "non-approver ignored",
                request(),
                vec![approve("r1", "mallory", MIN)],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "one of two approvals",
                request(),
                vec![approve("r1", "carol", MIN)],
                2,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "same approver twice",
                request(),
                vec![approve("r1", "carol", MIN), approve("r2", "carol", 2 * MIN)],
                2,
                3 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "two distinct approvers",
                request(),
                vec![approve("r1", "carol", MIN), approve("r2", "dave", 2 * MIN)],
                2,
                3 * MIN,
                Active,
                Binding::Present,
                Some(32 * MIN),
            ),
            (
                "a deny denies",
                request(),
                vec![approve("r1", "carol", MIN), review("r2", "dave", ReviewDecision::Deny, 2 * MIN)],
                2,
                3 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            (
                "deny by non-approver ignored",
                request(),
                vec![review("r1", "mallory", ReviewDecision::Deny, MIN), approve("r2", "carol", 2 * MIN)],
                1,
                3 * MIN,
                Active,
                Binding::Present,
                Some(32 * MIN),
            ),
            (
                "deny after approval ignored",
                request(),
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
                // Admission refuses such a request: it got here because the
                // policy was tightened after an approver approved it.
                "over the policy maximum",
                too_long.clone(),
                vec![approve("r1", "carol", MIN)],
                1,
                2 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            ("over the policy maximum, never approved", too_long, vec![], 1, 2 * MIN, Denied, Binding::Absent, None),
            ("trivial reason", trivial, vec![], 1, MIN, Denied, Binding::Absent, None),
            // Status is not read: with its approval gone, a grant is just a
            // request waiting for approval again.
            ("approval withdrawn", request(), vec![], 1, 6 * MIN, Pending, Binding::Absent, Some(60 * MIN)),
            (
                "re-created request: the old approval does not carry over",
                recreated.clone(),
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                21 * MIN,
                Pending,
                Binding::Absent,
                Some(80 * MIN),
            ),
            (
                "re-created request: a review for the new UID counts",
                recreated,
                vec![
                    approve("r1", "carol", 5 * MIN),
                    Review { request_uid: Some("uid-2"), ..approve("r2", "dave", 22 * MIN) },
                ],
                1,
                23 * MIN,
                Active,
                Binding::Present,
                Some(52 * MIN),
            ),
            (
                "review stamped with another UID",
                request(),
                vec![stale(approve("r1", "carol", MIN))],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "review without a UID fails closed",
                request(),
                vec![Review { request_uid: None, ..approve("r1", "carol", MIN) }],
                1,
                2 * MIN,
                Pending,
                Binding::Absent,
                Some(60 * MIN),
            ),
            (
                "review older than the request",
                Request { created_at: at(10 * MIN), ..request() },
                vec![approve("r1", "carol", 5 * MIN)],
                1,
                11 * MIN,
                Pending,
                Binding::Absent,
                Some(70 * MIN),
            ),
            (
                "approval after the pending timeout does not reopen",
                request(),
                vec![approve("late", "carol", 61 * MIN)],
                1,
                62 * MIN,
                Denied,
                Binding::Absent,
                None,
            ),
            (
                "a deny of an earlier request does not deny this one",
                request(),
                vec![stale(review("r0", "dave", ReviewDecision::Deny, MIN)), approve("r1", "carol", 2 * MIN)],
                1,
                3 * MIN,
                Active,
                Binding::Present,
                Some(32 * MIN),
            ),
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
    fn final_phases_stick_without_reading_status() {
        // Expired: a later approval by another approver does not reopen it.
        let reviews = [approve("r1", "carol", MIN), approve("r2", "dave", 40 * MIN)];
        let expired = run(&request(), &reviews, 1, 41 * MIN);
        assert_eq!((expired.phase, expired.binding), (Expired, Binding::Absent));
        // Denied by a review: a later approval does not count.
        let reviews = [review("r1", "dave", ReviewDecision::Deny, MIN), approve("r2", "carol", 2 * MIN)];
        assert_eq!(run(&request(), &reviews, 1, 3 * MIN).phase, Denied);
        // Timed out: an approval that comes later is ignored.
        let late = run(&request(), &[approve("r1", "carol", 90 * MIN)], 1, 91 * MIN);
        assert_eq!(late.phase, Denied);
        assert!(late.ignored[0].reason.contains("after the request timed out"), "{:?}", late.ignored);
        // Revoked: spec.revoked cannot be unset (CEL), and it wins over approvals.
        let revoked = Request { revoked: true, ..request() };
        let decision = run(&revoked, &[approve("r1", "carol", MIN)], 1, 2 * MIN);
        assert_eq!((decision.phase, decision.binding, decision.wake_at), (Revoked, Binding::Absent, None));
        assert_eq!(decision.window, Some(window(MIN, 30)), "a revoked grant keeps its window for the gate");
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
        let decision = run(&request(), &reviews, 2, 6 * MIN);
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
    fn the_window_follows_from_the_approval_and_the_duration_only() {
        // A later approval cannot shift the window: the first one opened it.
        let decision =
            run(&request(), &[approve("first", "carol", 5 * MIN), approve("late", "dave", 20 * MIN)], 1, 21 * MIN);
        assert_eq!(decision.window, Some(window(5 * MIN, 30)));
        assert_eq!(decision.wake_at, Some(at(35 * MIN)));
        assert_eq!(decision.ignored[0].reason, "the request was already approved");
    }

    #[test]
    fn requested_start_time_is_honoured_when_the_policy_allows_it() {
        let spec = spec(1, WindowStart::RequestedStart);
        let judge = Judge { name: "oncall".into(), spec: &spec };
        let req = Request { start_at: Some(at(30 * MIN)), ..request() };
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
    fn losing_the_policy_ends_a_grant() {
        let no_policy = NoPolicy::NoneForNamespace { namespace: "shop".into() };
        let fresh = evaluate(&request(), &[], Err(&no_policy), at(MIN));
        assert_eq!((fresh.phase, fresh.message.as_str()), (Denied, "no AccessPolicy covers namespace shop"));
        let granted = evaluate(&request(), &[approve("r1", "carol", 0)], Err(&no_policy), at(MIN));
        assert_eq!((granted.phase, granted.binding), (Denied, Binding::Absent));
        let revoked = Request { revoked: true, ..request() };
        assert_eq!(evaluate(&revoked, &[], Err(&no_policy), at(MIN)).binding, Binding::Absent);
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
                        let d = run(&request(), &reviews, required, now);
                        let inside = d.window.is_some_and(|w| at(now) >= w.starts_at && at(now) < w.expires_at);
                        assert_eq!(d.binding == Binding::Present, d.phase == Active);
                        assert_eq!(d.phase == Active, inside, "{first}/{second}/{required}@{now}");
                    }
                }
            }
        }
    }
}
