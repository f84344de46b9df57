//! `cargo quickstart`: a local control plane, the examples and the operator
//! until Ctrl-C (see `driftwarden_dev::quickstart`).

use std::process::ExitCode;

use clap::Parser;
use driftwarden::cli::LogFormat;
use driftwarden_dev::quickstart::QuickstartArgs;

/// Try driftwarden locally: start a local control plane (unless --kubeconfig
/// or KUBECONFIG names a cluster), install the CRDs, apply the examples and
/// run the operator until Ctrl-C.
#[derive(Debug, Parser)]
#[command(name = "quickstart", version)]
struct Cli {
    /// Log line format.
    #[arg(long, env = "DRIFTWARDEN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    #[command(flatten)]
    args: QuickstartArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    driftwarden::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(driftwarden_dev::quickstart::run(cli.args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
