//! The gate, the pure part: per drifted object, decide whether the change is
//! covered by an approved access session (hold it, and say whose), or not
//! (revert it, or report it, as the DesiredState says).
//!
//! `decide` knows nothing of Kubernetes clients: the caller hands it the
//! drift, the grants and what the audit log says about who wrote the object.
//! The shell that reverts, and the audit receiver, build on it.

pub mod audit;
pub mod codify;
pub mod commands;
pub mod journal;
pub mod revert;
pub mod writes;

use k8s_openapi::jiff::Timestamp;

use crate::api::{AccessPhase, DriftClass, RemediationAction};

/// A drifted object: where it is and what kind of resource it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drifted<'a> {
    pub namespace: Option<&'a str>,
    /// API group ("" for core) and plural resource, as RBAC rules name them.
    pub group: &'a str,
    pub resource: &'a str,
    /// When the drift was first seen, if known.
    pub since: Option<Timestamp>,
}

/// One write to the object, from the API server's audit log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write<'a> {
    pub user: &'a str,
    /// create, update, patch or delete.
    pub verb: &'a str,
    /// The plural resource written, with its subresource as RBAC names it
    /// (`deployments`, or `deployments/scale` for `kubectl scale`).
    pub resource: &'a str,
    pub at: Timestamp,
}

/// An RBAC rule of a granted role (only what the gate needs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub verbs: Vec<String>,
}

impl Rule {
    fn allows(&self, verb: &str, group: &str, resource: &str) -> bool {
        let any = |list: &[String], wanted: &str| list.iter().any(|item| item == "*" || item == wanted);
        any(&self.verbs, verb) && any(&self.api_groups, group) && any(&self.resources, resource)
    }
}

/// An access grant (an AccessRequest that was approved).
#[derive(Clone, Debug, PartialEq)]
pub struct Grant<'a> {
    /// The AccessRequest.
    pub request: &'a str,
    pub namespace: &'a str,
    pub requester: &'a str,
    pub phase: AccessPhase,
    pub starts_at: Timestamp,
    pub expires_at: Timestamp,
    /// When a revoked grant ended (before `expires_at`).
    pub ended_at: Option<Timestamp>,
    /// The rules of the role it binds.
    pub rules: &'a [Rule],
}

impl Grant<'_> {
    /// When the window really closed (or will close).
    fn end(&self) -> Timestamp {
        self.ended_at.map_or(self.expires_at, |ended| ended.min(self.expires_at))
    }

    fn open_at(&self, at: Timestamp) -> bool {
        at >= self.starts_at && at < self.end()
    }

    fn covers(&self, drifted: &Drifted<'_>) -> bool {
        drifted.namespace == Some(self.namespace)
    }

    fn permits(&self, write: &Write<'_>, drifted: &Drifted<'_>) -> bool {
        // Admission sees a patch as an UPDATE (the write log records both as
        // `update`): either verb of the role explains one.
        let verbs: &[&str] = if write.verb == "update" { &["update", "patch"] } else { &[write.verb] };
        write.user == self.requester
            && verbs.iter().any(|verb| self.rules.iter().any(|r| r.allows(verb, drifted.group, write.resource)))
    }

    /// Whether the role allows some write to the drifted resource.
    fn may_write(&self, drifted: &Drifted<'_>) -> bool {
        ["create", "update", "patch", "delete"]
            .iter()
            .any(|verb| self.rules.iter().any(|r| r.allows(verb, drifted.group, drifted.resource)))
    }

    fn was_granted(&self) -> bool {
        matches!(self.phase, AccessPhase::Active | AccessPhase::Expired | AccessPhase::Revoked)
    }
}

/// What to do with unauthorized drift, and with session drift once its window ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Remediation {
    pub unauthorized: RemediationAction,
    pub window_end: RemediationAction,
    /// Drift no record explains is held when an open window's role could
    /// have written it (the DesiredState's explicit `attribution: Scope`).
    /// Off (the default): no record, no hold.
    pub hold_by_scope: bool,
}

/// The gate's verdict for one drifted object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The sources are invalid: touch nothing.
    Nothing,
    /// Made inside an open window: leave it until `until`, attributed to `request`.
    Hold { request: String, class: DriftClass, until: Timestamp },
    /// Put it back to Git now.
    Revert { class: DriftClass, request: Option<String> },
    /// Leave it, and keep reporting it.
    Report { class: DriftClass, request: Option<String> },
}

fn act(action: RemediationAction, class: DriftClass, request: Option<String>) -> Decision {
    match action {
        RemediationAction::Revert => Decision::Revert { class, request },
        RemediationAction::Report => Decision::Report { class, request },
    }
}

/// Decides for one drifted object.
///
/// - With audit data: a write by a grantee, inside a window of a grant that
///   covers the namespace and whose role permits that verb on that resource,
///   is authorized; it is held while any such window is open, until the last
///   one closes, then remediated as `window_end` says.
/// - Without a record of the write: unauthorized, unless the DesiredState
///   opted in to holding by scope (`remediation.hold_by_scope`); then an
///   open window on the namespace whose role may write that resource holds
///   it, marked as authorized by scope only.
/// - Anything else is unauthorized and remediated as `unauthorized` says.
pub fn decide(
    drifted: &Drifted<'_>,
    writes: &[Write<'_>],
    grants: &[Grant<'_>],
    remediation: Remediation,
    sources_valid: bool,
    now: Timestamp,
) -> Decision {
    if !sources_valid {
        return Decision::Nothing;
    }
    let covering: Vec<&Grant<'_>> = grants.iter().filter(|g| g.was_granted() && g.covers(drifted)).collect();

    if writes.is_empty() && !remediation.hold_by_scope {
        // No record of who changed it: nobody's session.
        return act(remediation.unauthorized, DriftClass::Unauthorized, None);
    }
    if writes.is_empty() {
        // Opted in: no record of who changed it, so fall back to the scope,
        // i.e. an open window whose role could have written this resource.
        let open = covering
            .iter()
            .filter(|g| g.phase == AccessPhase::Active && g.open_at(now) && g.may_write(drifted))
            .max_by_key(|g| g.end());
        if let Some(grant) = open {
            return Decision::Hold {
                request: grant.request.to_owned(),
                class: DriftClass::AuthorizedByScope,
                until: grant.end(),
            };
        }
        // Held by scope until its window ended (the audit record may still
        // be on its way): the session's drift, whose window has ended.
        let ended = drifted.since.and_then(|since| {
            covering
                .iter()
                .filter(|g| {
                    g.may_write(drifted) && g.open_at(since) && !(g.phase == AccessPhase::Active && now < g.end())
                })
                .max_by_key(|g| g.end())
        });
        return match ended {
            Some(grant) => act(remediation.window_end, DriftClass::WindowEnded, Some(grant.request.to_owned())),
            None => act(remediation.unauthorized, DriftClass::Unauthorized, None),
        };
    }

    // Every write must be explained by a session; one unexplained write
    // makes the drift unauthorized, whatever sessions also touched it.
    let mut sessions: Vec<&Grant<'_>> = Vec::new();
    for write in writes {
        let explaining: Vec<&&Grant<'_>> =
            covering.iter().filter(|g| g.open_at(write.at) && g.permits(write, drifted)).collect();
        if explaining.is_empty() {
            return act(remediation.unauthorized, DriftClass::Unauthorized, None);
        }
        sessions.extend(explaining.into_iter().copied());
    }
    // Overlapping windows: held until the last one that explains a write closes.
    let last = sessions.iter().max_by_key(|g| g.end()).expect("at least one write, each explained");
    let request = Some(last.request.to_owned());
    if last.phase == AccessPhase::Active && now < last.end() {
        Decision::Hold { request: last.request.to_owned(), class: DriftClass::Authorized, until: last.end() }
    } else {
        act(remediation.window_end, DriftClass::WindowEnded, request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AccessPhase::*;
    use RemediationAction::{Report, Revert};

    const T0: i64 = 1_800_000_000;

    fn at(offset: i64) -> Timestamp {
        Timestamp::from_second(T0 + offset).unwrap()
    }

    fn edit_rules() -> Vec<Rule> {
        vec![Rule {
            api_groups: vec!["apps".into()],
            resources: vec!["deployments".into()],
            verbs: vec!["update".into(), "patch".into()],
        }]
    }

    fn grant<'a>(
        request: &'a str,
        requester: &'a str,
        phase: AccessPhase,
        window: (i64, i64),
        rules: &'a [Rule],
    ) -> Grant<'a> {
        Grant {
            request,
            namespace: "shop",
            requester,
            phase,
            starts_at: at(window.0),
            expires_at: at(window.1),
            ended_at: None,
            rules,
        }
    }

    fn write<'a>(user: &'a str, verb: &'a str, offset: i64) -> Write<'a> {
        Write { user, verb, resource: "deployments", at: at(offset) }
    }

    const DEPLOYMENT: Drifted<'static> =
        Drifted { namespace: Some("shop"), group: "apps", resource: "deployments", since: None };
    const DRIFT_SEEN_AT_100: Drifted<'static> = Drifted { since: Some(Timestamp::constant(T0 + 100, 0)), ..DEPLOYMENT };
    const REVERT_BOTH: Remediation = Remediation { unauthorized: Revert, window_end: Revert, hold_by_scope: false };
    const BY_SCOPE: Remediation = Remediation { hold_by_scope: true, ..REVERT_BOTH };

    /// (case, writes, grants, remediation, sources valid, now, expected)
    type Case<'a> = (&'a str, Vec<Write<'a>>, Vec<Grant<'a>>, Remediation, bool, i64, Decision);

    #[test]
    fn decision_table() {
        let rules = edit_rules();
        let read_only = vec![Rule {
            api_groups: vec!["apps".into()],
            resources: vec!["deployments".into()],
            verbs: vec!["get".into()],
        }];
        let alice_active = grant("alice-fix", "alice", Active, (0, 600), &rules);
        let scale_rules = vec![Rule { resources: vec!["deployments/scale".into()], ..rules[0].clone() }];
        let alice_scaler = grant("alice-scale", "alice", Active, (0, 600), &scale_rules);
        let alice_expired = grant("alice-fix", "alice", Expired, (0, 600), &rules);
        let alice_revoked = Grant { ended_at: Some(at(300)), ..grant("alice-fix", "alice", Revoked, (0, 600), &rules) };
        let alice_view = grant("alice-view", "alice", Active, (0, 600), &read_only);
        let patch_only = vec![Rule { verbs: vec!["patch".into()], ..rules[0].clone() }];
        let alice_patcher = grant("alice-patch", "alice", Active, (0, 600), &patch_only);
        let bob_active = grant("bob-fix", "bob", Active, (0, 900), &rules);
        let elsewhere = Grant { namespace: "payments", ..alice_active.clone() };
        let pending = grant("alice-wait", "alice", Pending, (0, 600), &rules);

        let alice_revoked_for_scope = alice_revoked.clone();
        let mut cases: Vec<Case<'_>> = vec![
            (
                "no session at all",
                vec![write("mallory", "patch", 10)],
                vec![],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "unauthorized, report only",
                vec![write("mallory", "patch", 10)],
                vec![],
                Remediation { unauthorized: Report, window_end: Revert, hold_by_scope: false },
                true,
                20,
                Decision::Report { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "grantee inside the window",
                vec![write("alice", "patch", 10)],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                20,
                Decision::Hold { request: "alice-fix".into(), class: DriftClass::Authorized, until: at(600) },
            ),
            (
                "someone else during alice's window",
                vec![write("mallory", "patch", 10)],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                // Admission sees a patch as an UPDATE: a patch-only role explains it.
                "an admitted update under a role that may only patch",
                vec![write("alice", "update", 10)],
                vec![alice_patcher],
                REVERT_BOTH,
                true,
                20,
                Decision::Hold { request: "alice-patch".into(), class: DriftClass::Authorized, until: at(600) },
            ),
            (
                "role does not permit the verb",
                vec![write("alice", "patch", 10)],
                vec![alice_view],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "window on another namespace",
                vec![write("alice", "patch", 10)],
                vec![elsewhere],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "a request never granted",
                vec![write("alice", "patch", 10)],
                vec![pending],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "write before the window opened",
                vec![write("alice", "patch", -5)],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "window ended: revert",
                vec![write("alice", "patch", 10)],
                vec![alice_expired.clone()],
                REVERT_BOTH,
                true,
                700,
                Decision::Revert { class: DriftClass::WindowEnded, request: Some("alice-fix".into()) },
            ),
            (
                "window ended: keep reporting",
                vec![write("alice", "patch", 10)],
                vec![alice_expired],
                Remediation { unauthorized: Revert, window_end: Report, hold_by_scope: false },
                true,
                700,
                Decision::Report { class: DriftClass::WindowEnded, request: Some("alice-fix".into()) },
            ),
            (
                "revoked early: ends at revocation",
                vec![write("alice", "patch", 10)],
                vec![alice_revoked.clone()],
                REVERT_BOTH,
                true,
                400,
                Decision::Revert { class: DriftClass::WindowEnded, request: Some("alice-fix".into()) },
            ),
            (
                "write after revocation",
                vec![write("alice", "patch", 350)],
                vec![alice_revoked],
                REVERT_BOTH,
                true,
                400,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "overlapping windows hold until the last",
                vec![write("alice", "patch", 10), write("bob", "update", 20)],
                vec![alice_active.clone(), bob_active.clone()],
                REVERT_BOTH,
                true,
                30,
                Decision::Hold { request: "bob-fix".into(), class: DriftClass::Authorized, until: at(900) },
            ),
            (
                "one unexplained write spoils it",
                vec![write("alice", "patch", 10), write("mallory", "patch", 20)],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                30,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "scaled through a subresource the role names",
                vec![Write { resource: "deployments/scale", ..write("alice", "patch", 10) }],
                vec![alice_scaler],
                REVERT_BOTH,
                true,
                20,
                Decision::Hold { request: "alice-scale".into(), class: DriftClass::Authorized, until: at(600) },
            ),
            (
                "scaled through a subresource the role does not name",
                vec![Write { resource: "deployments/scale", ..write("alice", "patch", 10) }],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "no record, a window covers the scope: no record, no hold",
                vec![],
                vec![alice_active.clone()],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "no record, a window covers the scope, holding by scope opted in",
                vec![],
                vec![alice_active.clone()],
                BY_SCOPE,
                true,
                20,
                Decision::Hold { request: "alice-fix".into(), class: DriftClass::AuthorizedByScope, until: at(600) },
            ),
            (
                "no record, only a read-only window covers the scope, by scope",
                vec![],
                vec![grant("alice-view", "alice", Active, (0, 600), &read_only)],
                BY_SCOPE,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "no audit data, no window",
                vec![],
                vec![],
                REVERT_BOTH,
                true,
                20,
                Decision::Revert { class: DriftClass::Unauthorized, request: None },
            ),
            (
                "invalid sources: touch nothing",
                vec![write("mallory", "patch", 10)],
                vec![],
                REVERT_BOTH,
                false,
                20,
                Decision::Nothing,
            ),
        ];
        cases.push((
            "no audit data, seen during a window that has since ended",
            vec![],
            vec![alice_revoked_for_scope.clone()],
            BY_SCOPE,
            true,
            400,
            Decision::Revert { class: DriftClass::WindowEnded, request: Some("alice-fix".into()) },
        ));
        for (case, writes, grants, remediation, valid, now, expected) in cases {
            let drifted = if case.contains("since ended") { DRIFT_SEEN_AT_100 } else { DEPLOYMENT };
            assert_eq!(decide(&drifted, &writes, &grants, remediation, valid, at(now)), expected, "{case}");
        }
    }

    #[test]
    fn wildcard_rules_match_and_cluster_scoped_objects_are_never_covered() {
        let everything =
            vec![Rule { api_groups: vec!["*".into()], resources: vec!["*".into()], verbs: vec!["*".into()] }];
        let grants = [grant("alice-admin", "alice", Active, (0, 600), &everything)];
        let writes = [write("alice", "delete", 10)];
        let held = decide(&DEPLOYMENT, &writes, &grants, REVERT_BOTH, true, at(20));
        assert!(matches!(held, Decision::Hold { .. }), "{held:?}");
        let cluster_scoped =
            Drifted { namespace: None, group: "rbac.authorization.k8s.io", resource: "clusterroles", since: None };
        let reverted = decide(&cluster_scoped, &writes, &grants, REVERT_BOTH, true, at(20));
        assert_eq!(reverted, Decision::Revert { class: DriftClass::Unauthorized, request: None });
    }
}
