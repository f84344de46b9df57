use std::process::ExitCode;

use clap::Parser;
use driftwarden::cli::Cli;

// mimalloc instead of glibc's malloc: it returns freed memory to the system
// and fragments less, which kept the operator's resident size at rest
// smaller with 10,000 cached objects (docs/BENCHMARKS.md).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    driftwarden::process::no_transparent_huge_pages();
    driftwarden::process::purge_freed_memory_at_once();
    // clap prints a clear message and exits with status 2 on bad arguments.
    let cli = Cli::parse();
    driftwarden::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(driftwarden::commands::dispatch(cli.command)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            // 2, like clap's usage errors: `diff` reserves 1 for "drift found".
            ExitCode::from(2)
        }
    }
}
