//! Logging: text for people, JSON for log pipelines; the level comes from
//! `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::cli::LogFormat;

pub fn init(format: LogFormat) {
    let directives = directives(std::env::var("RUST_LOG").ok().as_deref());
    let filter = EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(directives_default()));
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to stderr so that commands that print data (crds) keep a clean stdout.
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_writer(std::io::stderr)).init(),
        LogFormat::Json => registry.with(fmt::layer().json().flatten_event(true).with_writer(std::io::stderr)).init(),
    }
}

/// kube-runtime's watcher warns on every retry of a forbidden watch (every
/// 5 s, for ever, per namespace where RBAC forbids a kind); the operator
/// says it once itself, with the kind and namespace. Quiet unless the user
/// asks for kube-runtime's own logs.
const QUIET_WATCHER: &str = "kube_runtime::watcher=error";

fn directives_default() -> String {
    format!("info,{QUIET_WATCHER}")
}

/// The filter: `RUST_LOG` (default `info`), with [`QUIET_WATCHER`] unless it
/// names kube_runtime itself.
fn directives(rust_log: Option<&str>) -> String {
    match rust_log.map(str::trim).filter(|s| !s.is_empty()) {
        None => directives_default(),
        Some(given) if given.contains("kube_runtime") => given.to_owned(),
        Some(given) => format!("{given},{QUIET_WATCHER}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchers_retry_warnings_are_quiet_unless_asked_for() {
        assert_eq!(directives(None), "info,kube_runtime::watcher=error");
        assert_eq!(directives(Some("  ")), "info,kube_runtime::watcher=error");
        assert_eq!(directives(Some("debug")), "debug,kube_runtime::watcher=error");
        assert_eq!(directives(Some("info,kube_runtime=debug")), "info,kube_runtime=debug");
        EnvFilter::try_new(directives(Some("warn,driftwarden=debug"))).unwrap();
    }
}
