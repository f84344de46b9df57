//! The README's walkthrough, run as written against `cargo quickstart`:
//! its commands are read from README.md (the shell blocks of "The two
//! commands", after the quickstart itself), run in order by the users they
//! name, and their results checked against what the README says. When the
//! README and the product disagree, this fails.
//!
//! The quickstart runs the operator as the chart's ServiceAccount, under the
//! chart's RBAC, as a cluster does: so the admin's `kubectl scale` while
//! Alice's window is open is the admin's, not the operator's own or Alice's
//! session's, and is reverted at once.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::eventually;

const README: &str = include_str!("../../README.md");

/// The shell commands of the walkthrough, in order, with each line's
/// trailing comment (what the README says it shows).
fn walkthrough() -> Vec<(String, Option<String>)> {
    let section = README.split("## The two commands").nth(1).expect("README has \"The two commands\"");
    let section = section.split("\n## ").next().unwrap_or_default();
    let mut commands = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && !text.is_empty() && !text.starts_with('#') => {
                let (command, comment) = match text.split_once(" # ") {
                    Some((command, comment)) => (command.trim(), Some(comment.trim().to_owned())),
                    None => (text, None),
                };
                commands.push((command.to_owned(), comment));
            }
            _ => {}
        }
    }
    commands
}

/// Runs one README line with bash in `dir` (where `.driftwarden/quickstart`
/// and `examples/` are), `kubectl` of the server's release first on PATH.
fn run(dir: &Path, prelude: &str, line: &str, bin: &Path) -> (bool, String) {
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new("bash")
        .args(["-c", &format!("{prelude}\n{line}")])
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs");
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), text)
}

/// What a README line must show, from the README's own words: the output it
/// promises (waited for: the operator acts on its own time), or just success.
type Check = Box<dyn Fn(&str) -> bool>;

fn expectation(line: &str, comment: Option<&str>) -> Option<Check> {
    let comment = comment.unwrap_or_default();
    if line.contains("get accessrequests") {
        return Some(Box::new(|out: &str| out.contains("Active")));
    }
    if line.contains("auth can-i create deployments") {
        return Some(Box::new(|out: &str| out.trim() == "yes"));
    }
    if comment.starts_with("back to 2") {
        // No kubelet: no pod is ever ready, the count is what matters.
        return Some(Box::new(|out: &str| out.lines().any(|l| l.starts_with("frontend") && l.contains("/2 "))));
    }
    if comment.starts_with("lastRevert") {
        return Some(Box::new(|out: &str| out.contains("lastRevert:") && out.contains("reverts:")));
    }
    if comment.starts_with("Authorized, held") {
        return Some(Box::new(|out: &str| out.contains("\"class\":\"Authorized\"")));
    }
    if line.contains("{.status.activity}") {
        return Some(Box::new(|out: &str| out.contains("\"user\":\"alice\"") && out.contains("deployments")));
    }
    if line.contains("{.status.sessionChanges[0].patch}") {
        return Some(Box::new(|out: &str| out.contains("replicas")));
    }
    None
}

#[tokio::test]
async fn the_readme_walkthrough_runs_as_written() {
    let commands = walkthrough();
    let quickstart = commands.iter().position(|(c, _)| c == "cargo quickstart").expect("the quickstart command");
    let steps: Vec<_> = commands[quickstart + 1..].iter().filter(|(c, _)| !c.starts_with("cargo ")).cloned().collect();
    assert!(steps.len() >= 10, "the walkthrough has too few commands: {steps:?}");

    // A working directory like a checkout: examples/ and a fresh .driftwarden/.
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    std::os::unix::fs::symlink(repo.join("examples"), dir.join("examples")).unwrap();
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (http, webhook) = (port(0), port(1));
    let log = std::fs::File::create(dir.join("quickstart.log")).unwrap();
    // The README's command, in the checkout (where its cargo alias is), with
    // its files in `dir`. Built first, so that its readiness is not timed
    // against a build.
    let cargo = || {
        let mut command = Command::new(env!("CARGO"));
        command.current_dir(&repo).env_remove("KUBECONFIG");
        command
    };
    let built = cargo().args(["build", "--package", "driftwarden-dev", "--bin", "quickstart"]).status().unwrap();
    assert!(built.success(), "building the quickstart failed");
    let mut child = cargo()
        .args(["quickstart", "--http-addr", &format!("127.0.0.1:{http}"), "--webhook-addr"])
        .arg(format!("127.0.0.1:{webhook}"))
        .arg("--dir")
        .arg(dir.join(".driftwarden/quickstart"))
        .env_remove("KUBECONFIG")
        .env("RUST_LOG", "info")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let guard = KillOnDrop(&mut child, dir.join("quickstart.log"));
    let bin = driftwarden_dev::controlplane::binary_dir().expect("the control plane binaries");

    // The quickstart is ready when the shop DesiredState is in sync.
    let admin = ".driftwarden/quickstart/admin.kubeconfig";
    let ready = eventually(Duration::from_secs(180), || async {
        let check = format!("kubectl --kubeconfig {admin} -n shop get desiredstate shop -o jsonpath='{{.status.managed}}/{{.status.drifted}}'");
        let (ok, out) = run(dir, "", &check, &bin);
        (ok && out.trim() == "2/0").then_some(())
    })
    .await;
    assert!(ready.is_some(), "the quickstart did not come up in sync; log: {}", guard.log());

    let mut prelude = String::new();
    for (line, comment) in steps {
        if line.starts_with("K=") {
            prelude.push_str(&line);
            prelude.push('\n');
            continue;
        }
        match expectation(&line, comment.as_deref()) {
            Some(check) => {
                let shown = eventually(Duration::from_secs(60), || async {
                    let (ok, out) = run(dir, &prelude, &line, &bin);
                    (ok && check(&out)).then_some(out)
                })
                .await;
                let (_, last) = run(dir, &prelude, &line, &bin);
                assert!(shown.is_some(), "README: `{line}` (# {comment:?}) showed:\n{last}\nlog: {}", guard.log());
            }
            None => {
                let (ok, out) = run(dir, &prelude, &line, &bin);
                assert!(ok, "README: `{line}` failed:\n{out}\nlog: {}", guard.log());
                if line.contains("access-review.yaml") {
                    // The README's next line expects the grant: give the operator its moment.
                    let active = eventually(Duration::from_secs(30), || async {
                        let get = format!("kubectl --kubeconfig {admin} -n shop get accessrequest alice-frontend-hotfix -o jsonpath='{{.status.phase}}'");
                        let (ok, out) = run(dir, "", &get, &bin);
                        (ok && out.trim() == "Active").then_some(())
                    })
                    .await;
                    assert!(active.is_some(), "alice's request did not become Active; log: {}", guard.log());
                }
            }
        }
    }
    drop(guard);
}

/// Stops the quickstart (SIGTERM, as Ctrl-C would) when the test ends.
struct KillOnDrop<'a>(&'a mut std::process::Child, PathBuf);

impl KillOnDrop<'_> {
    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.1).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        for _ in 0..50 {
            if self.0.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
