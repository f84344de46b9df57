//! Property-based fuzzing of the pure cores that read untrusted input: the
//! source parser, the normalizer and diff, duration and policy checks, the
//! access state machine and the audit EventList parser. No cluster; runs on
//! stable Rust with proptest.
//!
//! Each target is one `#[test]`. How long it runs:
//! - `DRIFTWARDEN_FUZZ_CASES=N`: N generated cases per target (default:
//!   each target's own small count, about 60 s for the whole file in CI);
//! - `DRIFTWARDEN_FUZZ_SECONDS=S`: keep generating fresh batches for S
//!   seconds per target (the long run: `S=600`, see docs/RELIABILITY.md).
//!
//! A failing case is shrunk, printed and its seed saved in
//! `tests/fuzz/regressions/<target>.txt`; saved seeds run first on every
//! run. `tests/fuzz/corpus/` holds a few hand-made nasty inputs that run on
//! every run too.

mod audit;
mod diff;
mod durations;
mod kubectl;
mod machine;
mod signatures;
mod sources;
mod values;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};

/// Where the hand-made inputs live.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/corpus")
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|_| panic!("{name} must be a whole number, not {text:?}")))
}

/// Runs `test` on values of `strategy` for the configured budget; panics
/// with the shrunk failing input on the first failure.
pub fn fuzz<S>(target: &str, default_cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: proptest::strategy::Strategy,
    S::Value: std::fmt::Debug,
{
    let seconds = env_number("DRIFTWARDEN_FUZZ_SECONDS");
    let cases = env_number("DRIFTWARDEN_FUZZ_CASES").map_or(default_cases, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let regressions = format!("{}/tests/fuzz/regressions/{target}.txt", env!("CARGO_MANIFEST_DIR"));
    let regressions: &'static str = Box::leak(regressions.into_boxed_str());
    let config = Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    };
    let started = Instant::now();
    let budget = seconds.map(Duration::from_secs);
    let mut total = 0u64;
    loop {
        // A fresh runner is a fresh random seed (PROPTEST_RNG_SEED pins it).
        let mut runner = TestRunner::new(config.clone());
        match runner.run(&strategy, &test) {
            Ok(()) => {}
            Err(TestError::Fail(reason, value)) => {
                panic!("fuzz target {target}: {reason}\nminimal failing input: {value:#?}")
            }
            Err(TestError::Abort(reason)) => panic!("fuzz target {target} aborted: {reason}"),
        }
        total += u64::from(cases);
        if budget.is_none_or(|budget| started.elapsed() >= budget) {
            break;
        }
    }
    eprintln!("fuzz target {target}: {total} cases in {:.1} s, no failure", started.elapsed().as_secs_f64());
}
