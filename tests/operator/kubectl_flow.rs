//! The kubectl flow of docs/ACCESS.md ("With kubectl"), command for command,
//! with the YAML in examples/: the platform's policy and RBAC, then request,
//! approve, deny, status, revoke, each as the user who would type it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use driftwarden_dev::controlplane::User;

use crate::support::eventually;
use crate::support::operator::{OPERATOR, operator_env};

/// `kubectl <args>` as `user`, from the repository root like the docs;
/// `(succeeded, stdout + stderr)`.
fn kubectl(user: User, args: &str) -> (bool, String) {
    let mut command: Command = operator_env().cp.kubectl(user);
    command.current_dir(Path::new(env!("CARGO_MANIFEST_DIR"))).args(args.split_whitespace());
    let out = command.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("$ kubectl {args}  # as {}\n{text}", user.name());
    (out.status.success(), text)
}

/// Like [`kubectl`], failing the test unless it succeeds.
fn ok(user: User, args: &str) -> String {
    let (success, text) = kubectl(user, args);
    assert!(success, "kubectl {args} as {} failed: {text}", user.name());
    text
}

/// `kubectl auth can-i <what> -n shop` as `user` (it exits 1 for "no").
fn can_i(user: User, what: &str) -> String {
    kubectl(user, &format!("auth can-i {what} -n shop")).1.trim().to_owned()
}

/// Waits (with `kubectl wait`, as the docs do) for `request` to reach `phase`.
fn wait_for(user: User, request: &str, phase: &str) {
    ok(user, &format!("-n shop wait --for=jsonpath={{.status.phase}}={phase} accessrequest/{request} --timeout=30s"));
}

#[tokio::test]
async fn the_documented_kubectl_flow_requests_approves_denies_and_revokes() {
    let _running = OPERATOR.read().await;
    operator_env();
    // The platform team's part (what `cargo quickstart` applies).
    for file in ["00-namespaces.yaml", "access-policy.yaml", "rbac.yaml"] {
        ok(User::Admin, &format!("apply -f examples/platform/{file}"));
    }

    // Request: alice asks; the API server stamps her as the requester.
    let created = ok(User::Alice, "apply -f examples/requests/access-request.yaml");
    assert!(created.contains("accessrequest.driftwarden.io/alice-frontend-hotfix created"), "{created}");
    wait_for(User::Alice, "alice-frontend-hotfix", "Pending");
    assert_eq!(can_i(User::Alice, "create deployments"), "no");

    // Approve: carol, an SRE.
    ok(User::Carol, "apply -f examples/requests/access-review.yaml");
    wait_for(User::Alice, "alice-frontend-hotfix", "Active");
    let listed = ok(User::Alice, "get areq -n shop");
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "REQUESTER", "ROLE", "PHASE", "EXPIRES", "AGE"], "{listed}");
    let row: Vec<&str> = listed.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["alice-frontend-hotfix", "alice", "edit", "Active"], "{listed}");
    let granted = eventually(Duration::from_secs(5), || async {
        (can_i(User::Alice, "create deployments") == "yes").then_some(())
    })
    .await;
    assert!(granted.is_some(), "Active, but alice cannot create deployments in shop");

    // Deny: bob asks, dave says no.
    ok(User::Bob, "apply -f examples/requests/access-request-bob.yaml");
    ok(User::Dave, "apply -f examples/requests/access-review-deny.yaml");
    wait_for(User::Bob, "bob-catalog-restart", "Denied");
    let reviews = ok(User::Bob, "get arev -n shop");
    assert!(reviews.lines().any(|l| l.contains("dave-denies-bob-catalog-restart") && l.contains("Deny")), "{reviews}");
    let message = ok(User::Bob, "get areq bob-catalog-restart -n shop -o jsonpath={.status.message}");
    assert!(message.contains("dave"), "{message}");
    let described = ok(User::Bob, "describe areq bob-catalog-restart -n shop");
    assert!(described.contains("Denied") && described.contains("dave"), "{described}");

    // Status of everything in the namespace.
    let all = ok(User::Carol, "get areq,arev -n shop");
    assert!(all.contains("bob-catalog-restart") && all.contains("carol-approves-alice-frontend-hotfix"), "{all}");

    // Revoke: alice is done early.
    ok(
        User::Alice,
        "-n shop patch accessrequest alice-frontend-hotfix --type merge --patch-file examples/requests/revoke.yaml",
    );
    wait_for(User::Alice, "alice-frontend-hotfix", "Revoked");
    let revoked = eventually(Duration::from_secs(5), || async {
        (can_i(User::Alice, "create deployments") == "no").then_some(())
    })
    .await;
    assert!(revoked.is_some(), "Revoked, but alice can still create deployments in shop");
    // describe shows the whole story in its Events (published just after
    // each status write).
    let story = eventually(Duration::from_secs(10), || async {
        let described = ok(User::Alice, "describe areq alice-frontend-hotfix -n shop");
        ["Requested", "Granted", "Revoked"].iter().all(|r| described.contains(r)).then_some(described)
    })
    .await;
    assert!(story.is_some(), "describe does not show Requested, Granted and Revoked");
    // A revoked request stays revoked.
    let (reinstated, refusal) = kubectl(
        User::Alice,
        r#"-n shop patch accessrequest alice-frontend-hotfix --type merge -p {"spec":{"revoked":false}}"#,
    );
    assert!(!reinstated && refusal.contains("a revoked request cannot be reinstated"), "{refusal}");
}
