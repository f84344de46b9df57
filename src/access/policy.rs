//! Which AccessPolicy judges a request, and what that policy allows.
//! Pure: the caller supplies the policies and the namespace's labels.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use crate::api::{AccessPolicy, AccessPolicySpec, RoleRef};

/// The policy a request is judged by.
#[derive(Clone, Debug, PartialEq)]
pub struct Judge<'a> {
    pub name: String,
    pub spec: &'a AccessPolicySpec,
}

/// Why no policy can judge a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoPolicy {
    #[error("no AccessPolicy covers namespace {namespace}")]
    NoneForNamespace { namespace: String },
    #[error("{kind} {role} is not in the allow-list of the AccessPolicies for namespace {namespace} ({policies})")]
    RoleNotAllowed { namespace: String, kind: String, role: String, policies: String },
}

/// Picks the policy for a request for `role` in a namespace with `labels`.
///
/// A policy applies when its namespace selector matches and its allow-list
/// names the role exactly. When several apply, the strictest wins: the
/// shortest maximum duration, then the most required approvals, then the
/// shortest pending timeout, then the name (so the choice never flaps).
/// A policy whose selector cannot be parsed matches nothing (fail closed).
pub fn select<'a>(
    namespace: &str,
    labels: &BTreeMap<String, String>,
    role: &RoleRef,
    policies: &'a [AccessPolicy],
) -> Result<Judge<'a>, NoPolicy> {
    let covering: Vec<&AccessPolicy> = policies.iter().filter(|p| selects(&p.spec, labels)).collect();
    if covering.is_empty() {
        return Err(NoPolicy::NoneForNamespace { namespace: namespace.to_owned() });
    }
    let strictest = covering
        .iter()
        .filter(|p| p.spec.roles.iter().any(|allowed| allowed == role))
        .min_by_key(|p| strictness(p))
        .map(|p| Judge { name: p.name_any(), spec: &p.spec });
    strictest.ok_or_else(|| {
        let mut names: Vec<String> = covering.iter().map(|p| p.name_any()).collect();
        names.sort();
        NoPolicy::RoleNotAllowed {
            namespace: namespace.to_owned(),
            kind: format!("{:?}", role.kind),
            role: role.name.clone(),
            policies: names.join(", "),
        }
    })
}

fn selects(policy: &AccessPolicySpec, labels: &BTreeMap<String, String>) -> bool {
    Selector::try_from(policy.namespace_selector.clone()).is_ok_and(|selector| selector.matches(labels))
}

fn strictness(policy: &AccessPolicy) -> (Duration, std::cmp::Reverse<i32>, Duration, String) {
    (
        policy.spec.max_duration.into(),
        std::cmp::Reverse(policy.spec.required_approvals),
        policy.spec.pending_timeout.into(),
        policy.name_any(),
    )
}

/// A rule a request breaks, with the message users see.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("duration {asked} exceeds the maximum of {max} that AccessPolicy {policy} allows")]
    DurationOverMaximum { asked: String, max: String, policy: String },
    #[error("duration must be longer than zero")]
    DurationNotPositive,
    #[error("reason is too short or trivial: say what you need the access for (an incident, a ticket)")]
    TrivialReason,
}

/// How far kube's reading of a duration may exceed Go's.
const PARSE_SLACK: Duration = Duration::from_micros(1);

/// Checks a request's duration and reason against its policy.
pub fn check_request(duration: Duration, reason: &str, judge: &Judge<'_>) -> Result<(), Violation> {
    let max: Duration = judge.spec.max_duration.into();
    if duration.is_zero() {
        return Err(Violation::DurationNotPositive);
    }
    // kube's duration parser sums floats where Go truncates each part, so
    // it may read up to a microsecond more than the API server's Go does
    // ("0.5ns24h" is 24h to Go, 24h and 1ns here): not a longer window.
    if duration > max + PARSE_SLACK {
        return Err(Violation::DurationOverMaximum {
            asked: format_duration(duration),
            max: format_duration(max),
            policy: judge.name.clone(),
        });
    }
    if is_trivial(reason) {
        return Err(Violation::TrivialReason);
    }
    Ok(())
}

/// A reason is trivial when it has fewer than 10 visible characters or
/// fewer than 4 distinct ones ("aaaaaaaaaa", "..........").
pub fn is_trivial(reason: &str) -> bool {
    let visible: Vec<char> = reason.chars().filter(|c| !c.is_whitespace() && !is_invisible(*c)).collect();
    let mut distinct = visible.clone();
    distinct.sort_unstable();
    distinct.dedup();
    visible.len() < 10 || distinct.len() < 4
}

/// Characters that print nothing: controls, and Unicode's default-ignorable
/// ones (zero-width spaces and joiners, bidi marks, the BOM, soft hyphens,
/// variation selectors, tags). A reason made of them says nothing.
fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{034f}' | '\u{061c}' | '\u{115f}' | '\u{1160}' | '\u{17b4}' | '\u{17b5}'
            | '\u{180b}'..='\u{180f}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{206f}' | '\u{3164}' | '\u{fe00}'..='\u{fe0f}' | '\u{feff}' | '\u{ffa0}'
            | '\u{fff0}'..='\u{fff8}' | '\u{1bca0}'..='\u{1bca3}' | '\u{1d173}'..='\u{1d17a}'
            | '\u{e0000}'..='\u{e0fff}')
}

/// Whether `user` (with `groups`) may review under this policy. Never the
/// requester, whatever groups either is in.
pub fn is_approver(spec: &AccessPolicySpec, user: &str, groups: &[String]) -> bool {
    spec.approvers.users.iter().any(|u| u == user) || spec.approvers.groups.iter().any(|g| groups.contains(g))
}

/// `4h`, `30m`, `1h30m`, `45s`: how people write durations.
pub fn format_duration(duration: Duration) -> String {
    let total = duration.as_secs();
    let (h, m, s) = (total / 3600, total / 60 % 60, total % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    // Every part shows, down to the nanosecond: a message must never read
    // "4h exceeds the maximum of 4h" for 4h0.5s.
    let nanos = duration.subsec_nanos();
    if s > 0 || nanos > 0 || out.is_empty() {
        if nanos == 0 {
            out.push_str(&format!("{s}s"));
        } else if nanos.is_multiple_of(1_000_000) {
            out.push_str(&format!("{s}.{:03}s", nanos / 1_000_000));
        } else {
            out.push_str(&format!("{s}.{nanos:09}s"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Approvers, RoleKind, WindowStart};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

    fn role(name: &str) -> RoleRef {
        RoleRef { kind: RoleKind::ClusterRole, name: name.into() }
    }

    fn policy(name: &str, team: Option<&str>, roles: &[&str], max: &str, approvals: i32) -> AccessPolicy {
        let selector = LabelSelector {
            match_labels: team.map(|t| [("team".to_string(), t.to_string())].into()),
            ..Default::default()
        };
        AccessPolicy::new(
            name,
            AccessPolicySpec {
                namespace_selector: selector,
                roles: roles.iter().map(|r| role(r)).collect(),
                max_duration: max.parse().unwrap(),
                approvers: Approvers { users: vec![], groups: vec!["sre".into()] },
                required_approvals: approvals,
                window_start: WindowStart::Approval,
                pending_timeout: "1h".parse().unwrap(),
                window_end: Default::default(),
            },
        )
    }

    fn labels(team: &str) -> BTreeMap<String, String> {
        [("team".to_string(), team.to_string())].into()
    }

    #[test]
    fn selection_table() {
        let policies = vec![
            policy("checkout-long", Some("checkout"), &["edit", "view"], "8h", 1),
            policy("checkout-strict", Some("checkout"), &["edit"], "2h", 2),
            policy("everyone-view", None, &["view"], "1h", 1),
            policy("broken", Some("checkout"), &["admin"], "1h", 1),
        ];
        // (namespace team, role, expected policy or error prefix)
        let cases = [
            ("checkout", "edit", Ok("checkout-strict")),
            ("checkout", "view", Ok("everyone-view")),
            ("payments", "view", Ok("everyone-view")),
            ("payments", "edit", Err("ClusterRole edit is not in the allow-list")),
            ("checkout", "cluster-admin", Err("ClusterRole cluster-admin is not in the allow-list")),
        ];
        for (team, wanted_role, expected) in cases {
            let got = select("ns", &labels(team), &role(wanted_role), &policies).map(|j| j.name);
            match expected {
                Ok(name) => assert_eq!(got.as_deref(), Ok(name), "{team}/{wanted_role}"),
                Err(prefix) => {
                    let err = got.unwrap_err().to_string();
                    assert!(err.starts_with(prefix), "{team}/{wanted_role}: {err}");
                }
            }
        }
        let only_scoped = vec![policy("checkout-long", Some("checkout"), &["edit"], "8h", 1)];
        assert_eq!(
            select("other", &labels("payments"), &role("edit"), &only_scoped).unwrap_err().to_string(),
            "no AccessPolicy covers namespace other"
        );
    }

    #[test]
    fn role_kind_must_match_too() {
        let policies = vec![policy("p", None, &["edit"], "1h", 1)];
        let namespaced = RoleRef { kind: RoleKind::Role, name: "edit".into() };
        assert!(select("ns", &labels("x"), &namespaced, &policies).is_err());
    }

    #[test]
    fn request_checks_table() {
        let policies = vec![policy("p", None, &["edit"], "4h", 1)];
        let judge = select("ns", &labels("x"), &role("edit"), &policies).unwrap();
        let good = "INC-1234: roll back the frontend";
        let cases: [(Duration, &str, Result<(), &str>); 8] = [
            (Duration::from_secs(4 * 3600), good, Ok(())),
            // "0.5ns4h": Go reads 4h, kube 4h and 1ns.
            (Duration::from_secs(4 * 3600) + Duration::from_nanos(1), good, Ok(())),
            (
                Duration::from_secs(4 * 3600) + Duration::from_nanos(1001),
                good,
                Err("duration 4h0.000001001s exceeds the maximum of 4h that AccessPolicy p allows"),
            ),
            (Duration::from_secs(30 * 60), good, Ok(())),
            (
                Duration::from_secs(4 * 3600 + 1),
                good,
                Err("duration 4h1s exceeds the maximum of 4h that AccessPolicy p allows"),
            ),
            (Duration::ZERO, good, Err("duration must be longer than zero")),
            (Duration::from_secs(60), "fix", Err("reason is too short or trivial")),
            (Duration::from_secs(60), "aaaaaaaaaaaaaaaa", Err("reason is too short or trivial")),
        ];
        for (duration, reason, expected) in cases {
            let got = check_request(duration, reason, &judge).map_err(|v| v.to_string());
            match expected {
                Ok(()) => assert!(got.is_ok(), "{duration:?} {reason}: {got:?}"),
                Err(prefix) => assert!(got.as_ref().unwrap_err().starts_with(prefix), "{duration:?} {reason}: {got:?}"),
            }
        }
    }

    #[test]
    fn approvers_by_user_or_group() {
        let mut spec = policy("p", None, &["edit"], "1h", 1).spec;
        spec.approvers.users = vec!["erin".into()];
        assert!(is_approver(&spec, "erin", &[]));
        assert!(is_approver(&spec, "carol", &["sre".into()]));
        assert!(!is_approver(&spec, "mallory", &["dev".into()]));
    }

    #[test]
    fn durations_read_like_go() {
        let cases = [(3600, "1h"), (5400, "1h30m"), (45, "45s"), (0, "0s"), (14401, "4h1s")];
        for (secs, text) in cases {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.500s");
    }
}
