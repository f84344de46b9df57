//! Side by side, same objects: what a user runs by hand (`kubectl diff -f`,
//! a server-side dry run of every manifest) against `driftwarden diff`
//! (one read of each object and the operator's diff).

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use driftwarden_dev::controlplane::User;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::{Scale, Target, managed};

/// `edits` objects are changed by hand first, so that both have something
/// to find; each tool runs `runs` times and the median is reported.
pub async fn run(scale: Scale, edits: usize, runs: usize) -> anyhow::Result<()> {
    let namespace = "bench-diff";
    let objects = scale.objects;
    let report = json!({"unauthorized": "Report"});
    let mut bench = managed(scale, report, namespace).await?;
    bench.single()?;
    for Target { api, name, .. } in bench.targets(edits) {
        let patch = json!({"data": {"value": "edited by hand"}});
        api.patch(&name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    }
    while bench.statuses.recv().await.context("status watch ended")?.1 < edits as i64 {}
    let env = &bench.env;
    eprintln!("the operator reports {edits} drifted; diffing by hand...");

    let dir = tempfile::tempdir()?;
    for file in crate::declarations(objects) {
        std::fs::write(dir.path().join(&file.path), &file.content)?;
    }
    let admin = env.cp.kubeconfig(User::Admin);
    let mut kubectl = env.cp.kubectl(User::Admin);
    kubectl.args(["diff", "--namespace", namespace, "-f"]).arg(dir.path());
    let mut ours = Command::new(crate::operator_binary()?);
    ours.arg("diff").arg(dir.path()).args(["--namespace", namespace, "--kubeconfig"]).arg(&admin);

    // kubectl runs `diff -u -N` over two directories: one header per object.
    let kubectl_found = |out: &str| out.lines().filter(|l| l.starts_with("diff -u -N")).count();
    // "N of M objects differ from the live cluster"
    let ours_found =
        |out: &str| out.lines().rev().find_map(|l| l.split_once(" of ")?.0.parse::<usize>().ok()).unwrap_or(usize::MAX);
    let mut kubectl_times = Vec::new();
    let mut ours_times = Vec::new();
    for run in 1..=runs {
        eprintln!("run {run} of {runs}: kubectl diff...");
        kubectl_times.push(timed(&mut kubectl, edits, kubectl_found)?);
        eprintln!("run {run} of {runs}: driftwarden diff...");
        ours_times.push(timed(&mut ours, edits, ours_found)?);
    }
    let (kubectl, ours) = (median(kubectl_times), median(ours_times));
    println!("| objects | drifted | kubectl diff -f (CPU) | driftwarden diff (CPU) | kubectl / driftwarden |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {objects} | {edits} | {:.2} s ({:.1} s) | {:.2} s ({:.1} s) | {:.1}x |",
        kubectl.0.as_secs_f64(),
        kubectl.1,
        ours.0.as_secs_f64(),
        ours.1,
        kubectl.0.as_secs_f64() / ours.0.as_secs_f64()
    );
    println!("(median of {runs} runs each)");
    Ok(())
}

/// Runs `command` to the end; checks it found `expected` differences.
/// Returns its wall time and the CPU time it (and its children) used.
fn timed(command: &mut Command, expected: usize, found: impl Fn(&str) -> usize) -> anyhow::Result<(Duration, f64)> {
    let cpu = crate::process::children_cpu_seconds();
    let started = Instant::now();
    let output = command.output().with_context(|| format!("running {command:?}"))?;
    let took = (started.elapsed(), crate::process::children_cpu_seconds() - cpu);
    let stdout = String::from_utf8_lossy(&output.stdout);
    // Both exit 1 when something differs.
    anyhow::ensure!(
        output.status.code() == Some(1) && found(&stdout) == expected,
        "{command:?} exited with {} and found {} differences, not {expected}:\n{}",
        output.status,
        found(&stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(took)
}

fn median(mut times: Vec<(Duration, f64)>) -> (Duration, f64) {
    times.sort_unstable_by_key(|(wall, _)| *wall);
    times[times.len() / 2]
}
