//! The request commands as people use them: alice asks with `driftwarden
//! request` and waits, carol finds it with `ls --reviewable` and approves,
//! alice reads `status` and revokes; refusals read as their reasons.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use driftwarden::api::AccessPhase;
use driftwarden_dev::controlplane::User;
use serde_json::json;

use crate::common::{AccessTest, setup};

/// `driftwarden ARGS` (the subcommand first) as `user`, in the test's namespace.
fn command(t: &AccessTest, user: User, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_driftwarden"));
    command.args(args).arg("--kubeconfig").arg(t.env.cp.kubeconfig(user)).args(["-n", &t.env.namespace]);
    command
}

/// Runs `args` as `user`.
fn run(t: &AccessTest, user: User, args: &[&str]) -> Output {
    command(t, user, args).output().unwrap()
}

/// Starts `args` as `user` in the background (a `request` that waits).
fn spawn(t: &AccessTest, user: User, args: &[&str]) -> std::process::Child {
    command(t, user, args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

#[tokio::test]
async fn a_request_is_made_found_approved_shown_and_revoked_from_the_command_line() {
    let t = setup("request-cli", json!({})).await;

    // alice asks and waits for the decision.
    let request = ["request", "edit", "--for", "10m", "--reason", "INC-7: the checkout is down", "--name", "fix"];
    let waiting = spawn(&t, User::Alice, &request);
    t.wait_for_phase("fix", AccessPhase::Pending, Duration::from_secs(10)).await;

    // carol sees it among what she may review; alice does not see her own there.
    let reviewable = run(&t, User::Carol, &["ls", "--reviewable"]);
    assert!(reviewable.status.success(), "{}", text(&reviewable));
    assert!(text(&reviewable).contains("fix") && text(&reviewable).contains("alice"), "{}", text(&reviewable));
    let own = run(&t, User::Alice, &["ls", "--reviewable"]);
    assert!(text(&own).contains("no access requests"), "{}", text(&own));
    let mine = run(&t, User::Alice, &["ls", "--mine"]);
    assert!(text(&mine).contains("ClusterRole/edit") && text(&mine).contains("Pending"), "{}", text(&mine));

    let approved = run(&t, User::Carol, &["approve", "fix", "--reason", "seen the incident"]);
    assert!(approved.status.success(), "{}", text(&approved));
    assert!(text(&approved).contains("approved"), "{}", text(&approved));

    // alice's command returns with the grant.
    let granted = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap()).await.unwrap();
    assert!(granted.status.success(), "{}", text(&granted));
    assert!(text(&granted).contains("granted: ClusterRole/edit"), "{}", text(&granted));
    assert!(t.can_create_configmaps(User::Alice).await);

    let status = run(&t, User::Alice, &["status", "fix"]);
    let story = text(&status);
    for expected in ["Active", "approved:  by carol", "RoleBinding driftwarden-fix", "INC-7"] {
        assert!(story.contains(expected), "{expected:?} missing:\n{story}");
    }

    let revoked = run(&t, User::Alice, &["revoke", "fix"]);
    assert!(revoked.status.success(), "{}", text(&revoked));
    t.wait_for_phase("fix", AccessPhase::Revoked, Duration::from_secs(10)).await;
}

#[tokio::test]
async fn refusals_read_as_their_reasons() {
    let t = setup("request-cli-refused", json!({})).await;
    // A role the policy does not offer: the webhook's reason, exit 2.
    let refused = run(&t, User::Alice, &["request", "admin", "--reason", "INC-8: need everything", "--nowait"]);
    assert_eq!(refused.status.code(), Some(2), "{}", text(&refused));
    let message = text(&refused);
    assert!(message.contains("request refused:") && !message.contains("denied the request"), "{message}");
    // Longer than a day: refused before anything is sent.
    let long = run(&t, User::Alice, &["request", "edit", "--for", "48h", "--reason", "INC-9: a long one"]);
    assert_eq!(long.status.code(), Some(2), "{}", text(&long));
    // A request that does not exist.
    let missing = run(&t, User::Carol, &["approve", "nope", "--reason", "looks fine"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing).contains("accessrequest nope"), "{}", text(&missing));
    // Denied while alice waits: exit 1, with the reason.
    let waiting = spawn(&t, User::Alice, &["request", "view", "--reason", "INC-10: read the logs", "--name", "peek"]);
    t.wait_for_phase("peek", AccessPhase::Pending, Duration::from_secs(10)).await;
    let denied = run(&t, User::Carol, &["deny", "peek", "--reason", "use the dashboards"]);
    assert!(denied.status.success(), "{}", text(&denied));
    let answer = tokio::task::spawn_blocking(move || waiting.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(answer.status.code(), Some(1), "{}", text(&answer));
    assert!(text(&answer).contains("Denied"), "{}", text(&answer));
}
