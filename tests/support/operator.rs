//! The shared operator environment of a test binary: a second control plane
//! with the operator running as a least-privileged ServiceAccount (see
//! `driftwarden_dev::controlplane::operator`).

use std::sync::OnceLock;

pub use driftwarden_dev::controlplane::operator::OperatorEnv;

static ENV: OnceLock<Result<OperatorEnv, String>> = OnceLock::new();

/// Tests that need the operator up hold this for reading; a test that stops
/// it holds it for writing, so it never pulls the operator from under others.
pub static OPERATOR: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// The shared operator environment, started on first use.
pub fn operator_env() -> &'static OperatorEnv {
    let started = ENV.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let binary = env!("CARGO_BIN_EXE_driftwarden").into();
            let env = runtime.block_on(OperatorEnv::start(binary)).map_err(|e| format!("{e:#}"))?;
            eprintln!("operator serving at 127.0.0.1:{} (logs: {})", env.http_port, env.log().display());
            Ok(env)
        })
        .join()
        .unwrap_or_else(|_| Err("starting the operator environment panicked".into()))
    });
    match started {
        Ok(env) => env,
        Err(err) => panic!("the operator environment did not start: {err}"),
    }
}

static ENV_WITHOUT_AUDIT: OnceLock<Result<OperatorEnv, String>> = OnceLock::new();

/// [`OPERATOR`], for [`operator_env_without_audit`].
pub static OPERATOR_WITHOUT_AUDIT: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

/// Another operator environment, whose API server has no audit webhook (a
/// managed cluster): started on first use, stopped only by a test that holds
/// [`OPERATOR_WITHOUT_AUDIT`] for writing.
pub fn operator_env_without_audit() -> &'static OperatorEnv {
    let started = ENV_WITHOUT_AUDIT.get_or_init(|| {
        std::thread::spawn(|| {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
            let binary = env!("CARGO_BIN_EXE_driftwarden").into();
            let env = runtime.block_on(OperatorEnv::start_with(binary, false)).map_err(|e| format!("{e:#}"))?;
            eprintln!("operator (no audit webhook) at 127.0.0.1:{} (logs: {})", env.http_port, env.log().display());
            Ok(env)
        })
        .join()
        .unwrap_or_else(|_| Err("starting the operator environment panicked".into()))
    });
    match started {
        Ok(env) => env,
        Err(err) => panic!("the operator environment without audit did not start: {err}"),
    }
}
