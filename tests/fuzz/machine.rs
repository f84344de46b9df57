//! Targets `machine_step` and `machine_life`: `access::machine::evaluate` on
//! arbitrary requests (two UIDs under one name: deleted and re-created),
//! reviews, policies and instants, and over whole lives (time moving
//! forward, reviews appearing). Status is never an input.
//!
//! Properties: no panic, even at the ends of time; final phases hold no
//! binding; the binding exists exactly while Active and inside the window;
//! approvals come from distinct approvers other than the requester, made
//! for this request's UID after it was created; review order does not
//! matter; a life only moves along the documented transitions and a granted
//! window never moves.

use std::time::Duration;

use driftwarden::access::machine::{Binding, Decision, Request, Review, Window, evaluate, is_final};
use driftwarden::access::policy::{Judge, NoPolicy};
use driftwarden::api::{AccessPhase, AccessPolicySpec, Approvers, ReviewDecision, RoleKind, RoleRef, WindowStart};
use k8s_openapi::jiff::Timestamp;
use proptest::prelude::*;

use crate::fuzz;

const T0: i64 = 1_800_000_000;
const USERS: &[&str] = &["alice", "carol", "dave", "erin", "mallory"];
const GROUPS: &[&[&str]] = &[&[], &["sre"], &["dev", "sre"], &["dev"]];

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(T0 + offset).expect("in range")
}

fn instant() -> impl Strategy<Value = Timestamp> {
    prop_oneof![
        8 => (-3600i64..50 * 3600).prop_map(at),
        1 => Just(Timestamp::MAX),
        1 => Just(Timestamp::MIN),
    ]
}

fn jiff_seconds(seconds: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(seconds)
}

/// An owned request; [`OwnedRequest::view`] lends it to the machine.
#[derive(Debug, Clone)]
struct OwnedRequest {
    uid: &'static str,
    requester: Option<&'static str>,
    duration: Duration,
    reason: &'static str,
    start_at: Option<Timestamp>,
    revoked: bool,
    deleting: bool,
}

impl OwnedRequest {
    fn view(&self) -> Request<'_> {
        Request {
            uid: Some(self.uid),
            requester: self.requester,
            duration: self.duration,
            reason: self.reason,
            start_at: self.start_at,
            revoked: self.revoked,
            deleting: self.deleting,
            created_at: at(0),
        }
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        8 => (0u64..48 * 3600).prop_map(Duration::from_secs),
        1 => Just(Duration::ZERO),
        1 => Just(Duration::MAX),
    ]
}

/// The UIDs of two requests of the same name: the one the machine judges,
/// and an earlier one, deleted, whose reviews are still around.
const UIDS: &[&str] = &["uid-now", "uid-earlier"];

fn request() -> impl Strategy<Value = OwnedRequest> {
    (
        proptest::option::weighted(0.9, proptest::sample::select(&USERS[..3])),
        duration(),
        proptest::sample::select(&["INC-1234: roll back the frontend", "fix", ""][..]),
        proptest::option::of(instant()),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.1),
    )
        .prop_map(|(requester, duration, reason, start_at, revoked, deleting)| OwnedRequest {
            uid: UIDS[0],
            requester,
            duration,
            reason,
            start_at,
            revoked,
            deleting,
        })
}

#[derive(Debug, Clone)]
struct OwnedReview {
    name: String,
    reviewer: Option<&'static str>,
    groups: Vec<String>,
    decision: ReviewDecision,
    created_at: Timestamp,
    request_uid: Option<&'static str>,
}

fn reviews() -> impl Strategy<Value = Vec<OwnedReview>> {
    let review = (
        proptest::option::weighted(0.95, proptest::sample::select(USERS)),
        proptest::sample::select(GROUPS),
        proptest::bool::weighted(0.8),
        prop_oneof![9 => (0i64..3 * 3600).prop_map(at), 1 => instant()],
        prop_oneof![6 => Just(Some(UIDS[0])), 3 => Just(Some(UIDS[1])), 1 => Just(None)],
    );
    proptest::collection::vec(review, 0..6).prop_map(|reviews| {
        reviews
            .into_iter()
            .enumerate()
            .map(|(i, (reviewer, groups, approve, created_at, request_uid))| OwnedReview {
                name: format!("r{i}"),
                reviewer,
                groups: groups.iter().map(|g| (*g).to_owned()).collect(),
                decision: if approve { ReviewDecision::Approve } else { ReviewDecision::Deny },
                created_at,
                request_uid,
            })
            .collect()
    })
}

fn view(reviews: &[OwnedReview]) -> Vec<Review<'_>> {
    reviews
        .iter()
        .map(|r| Review {
            name: &r.name,
            reviewer: r.reviewer,
            groups: &r.groups,
            decision: r.decision,
            reason: "looked at the incident",
            created_at: r.created_at,
            request_uid: r.request_uid,
        })
        .collect()
}

fn spec() -> impl Strategy<Value = AccessPolicySpec> {
    (
        -1i32..4,
        prop_oneof![Just(WindowStart::Approval), Just(WindowStart::RequestedStart)],
        (1u64..2 * 3600).prop_map(Duration::from_secs),
        (1u64..24 * 3600).prop_map(Duration::from_secs),
    )
        .prop_map(|(required_approvals, window_start, pending, max)| AccessPolicySpec {
            namespace_selector: Default::default(),
            roles: vec![RoleRef { kind: RoleKind::ClusterRole, name: "edit".into() }],
            max_duration: max.into(),
            approvers: Approvers { users: vec!["erin".into()], groups: vec!["sre".into()] },
            required_approvals,
            window_start,
            pending_timeout: pending.into(),
            window_end: Default::default(),
        })
}

/// The policy, or none (`None`).
fn policy() -> impl Strategy<Value = Option<AccessPolicySpec>> {
    proptest::option::weighted(0.9, spec())
}

fn decide(
    request: &OwnedRequest,
    reviews: &[OwnedReview],
    spec: Option<&AccessPolicySpec>,
    now: Timestamp,
) -> Decision {
    let no_policy = NoPolicy::NoneForNamespace { namespace: "shop".into() };
    let judge = spec.map(|spec| Judge { name: "oncall".into(), spec });
    evaluate(&request.view(), &view(reviews), judge.as_ref().ok_or(&no_policy), now)
}

fn is_approver(review: &OwnedReview) -> bool {
    review.reviewer == Some("erin") || review.groups.iter().any(|g| g == "sre")
}

/// What holds of any one decision.
fn check_decision(
    request: &OwnedRequest,
    reviews: &[OwnedReview],
    spec: Option<&AccessPolicySpec>,
    now: Timestamp,
    decision: &Decision,
) -> Result<(), TestCaseError> {
    if is_final(decision.phase) {
        prop_assert_eq!(decision.binding, Binding::Absent, "a final phase holds a binding");
        prop_assert_eq!(decision.wake_at, None);
    }
    prop_assert_eq!(decision.binding == Binding::Present, decision.phase == AccessPhase::Active);
    if decision.phase == AccessPhase::Active {
        let window = decision.window.expect("Active has a window");
        prop_assert!(window.starts_at <= now && now < window.expires_at, "Active outside {window:?} at {now}");
        prop_assert!(spec.is_some() && request.requester.is_some() && !request.revoked && !request.deleting);
    }
    if let Some(wake_at) = decision.wake_at {
        prop_assert!(wake_at > now, "wakes at {wake_at}, not after {now}");
    }
    let mut approvers: Vec<&str> = decision.approvals.iter().map(|a| a.reviewer.as_str()).collect();
    prop_assert!(approvers.iter().all(|a| Some(*a) != request.requester), "the requester approved herself");
    approvers.sort_unstable();
    let count = approvers.len();
    approvers.dedup();
    prop_assert_eq!(approvers.len(), count, "one approver counted twice");
    for approval in &decision.approvals {
        let review = reviews.iter().find(|r| r.name == approval.review).expect("an approval names a review");
        prop_assert!(is_approver(review), "{} is no approver", approval.reviewer);
        prop_assert_eq!(review.request_uid, Some(request.uid), "an approval of another request counted");
        prop_assert!(review.created_at >= at(0), "an approval older than the request counted");
    }
    // Every review counted, or was ignored with a reason, or is the one deny
    // that decided; unless the request was refused before any review counted.
    let accounted = |review: &&OwnedReview| {
        decision.approvals.iter().any(|a| a.review == review.name)
            || decision.ignored.iter().any(|i| i.review == review.name)
    };
    let unaccounted: Vec<&OwnedReview> = reviews.iter().filter(|r| !accounted(r)).collect();
    if unaccounted.len() < reviews.len() {
        prop_assert!(unaccounted.len() <= 1, "reviews neither counted nor ignored: {unaccounted:?}");
        for review in unaccounted {
            prop_assert!(review.decision == ReviewDecision::Deny && is_approver(review), "{review:?} vanished");
            prop_assert_eq!(review.request_uid, Some(request.uid), "a deny of another request decided");
            prop_assert!(review.reviewer != request.requester, "the requester denied her own request");
        }
    }
    Ok(())
}

#[test]
fn machine_step() {
    let case = (request(), reviews(), policy(), instant());
    fuzz("machine_step", 10000, case, |(request, reviews, spec, now)| {
        let decision = decide(&request, &reviews, spec.as_ref(), now);
        check_decision(&request, &reviews, spec.as_ref(), now, &decision)?;
        let mut reversed = reviews.clone();
        reversed.reverse();
        prop_assert_eq!(&decide(&request, &reversed, spec.as_ref(), now), &decision, "review order mattered");
        Ok(())
    });
}

/// The transitions a life may take (docs/ACCESS.md). `ended`: the request
/// is revoked or being deleted, which makes it Revoked from any phase (when
/// it was revoked is not an input) and for good.
fn allowed(from: Option<AccessPhase>, to: AccessPhase, ended: bool) -> bool {
    use AccessPhase::*;
    match from {
        _ if ended && to == Revoked => true,
        None | Some(Pending) => true,
        Some(Approved) => matches!(to, Approved | Active | Expired | Revoked),
        Some(Active) => matches!(to, Active | Expired | Revoked),
        Some(last) => to == last,
    }
}

#[test]
fn machine_life() {
    // Steps: (seconds forward, revoke now, delete now).
    let steps = proptest::collection::vec(
        (0i64..4 * 3600, proptest::bool::weighted(0.05), proptest::bool::weighted(0.03)),
        1..12,
    );
    let case = (request(), reviews(), policy(), steps);
    fuzz("machine_life", 10000, case, |(mut request, reviews, spec, steps)| {
        let mut now = at(-60);
        // What the last evaluation said: the test's memory, not the machine's input.
        let mut last: Option<(AccessPhase, Option<Window>)> = None;
        for (forward, revoke, delete) in steps {
            now = now.checked_add(jiff_seconds(forward)).unwrap_or(Timestamp::MAX);
            request.revoked |= revoke;
            request.deleting |= delete;
            // The operator sees only reviews that exist by now.
            let visible: Vec<OwnedReview> = reviews.iter().filter(|r| r.created_at <= now).cloned().collect();
            let decision = decide(&request, &visible, spec.as_ref(), now);
            check_decision(&request, &visible, spec.as_ref(), now, &decision)?;
            let from = last.map(|(phase, _)| phase);
            let ended = request.revoked || request.deleting;
            prop_assert!(allowed(from, decision.phase, ended), "{from:?} -> {:?} at {now}", decision.phase);
            let before = last.and_then(|(_, window)| window);
            if let (Some(before), AccessPhase::Approved | AccessPhase::Active | AccessPhase::Expired) =
                (before, decision.phase)
            {
                prop_assert_eq!(decision.window, Some(before), "a granted window moved");
            }
            if let (None, Some(window)) = (before, decision.window) {
                let length =
                    Duration::try_from(window.expires_at.duration_since(window.starts_at)).unwrap_or(Duration::MAX);
                prop_assert!(
                    length <= request.duration,
                    "a window of {length:?} for a request of {:?}",
                    request.duration
                );
            }
            last = Some((decision.phase, decision.window));
        }
        Ok(())
    });
}
