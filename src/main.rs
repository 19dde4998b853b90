//! The `matchd` binary: load config, set up logging, run until SIGINT/SIGTERM, drain. `matchd audit
//! ...` checks (and repairs) the state stored in Redis instead (see `matchd::audit::cli`).

use std::process::ExitCode;

/// A server allocates and frees many small buffers per action across threads; mimalloc does that
/// with less contention and fragmentation than the system allocator (BENCHMARKS.md, section 9b).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE` from sysexits: the configuration was wrong.
const EXIT_BAD_CONFIG: u8 = 64;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "audit") {
        return matchd::audit::cli::main(std::iter::once("matchd audit".into()).chain(std::env::args_os().skip(2)));
    }
    let config = match matchd::Config::load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("matchd: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    matchd::telemetry::init(config.log_format);
    let system = actix_rt::System::new();
    let result = system.block_on(async move {
        let running = matchd::start(config).await?;
        matchd::shutdown::signal().await;
        tracing::info!("shutdown requested; draining");
        running.shutdown().await;
        Ok::<(), std::io::Error>(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("matchd: {e}");
            ExitCode::FAILURE
        }
    }
}
