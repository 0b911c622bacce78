//! `mochi`: the Mochi MQTT broker as a program. See `mochi --help`.

mod cli;
mod config;
mod run;
mod storage;

use std::process::ExitCode;

use clap::Parser as _;

use crate::cli::Cli;
use crate::config::{Config, LogFormat};

// mimalloc: the storage writer frees, on its own thread, what the packet path allocated, and
// glibc's malloc arenas contend there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The exit status for an invalid configuration.
const EXIT_BAD_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.check_config {
        return match Config::load(Some(path), std::env::vars()) {
            Ok(_) => {
                println!("{}: the configuration is valid", path.display());
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mochi: invalid configuration: {error:#}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        };
    }
    let config = match Config::load(cli.config.as_deref(), std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("mochi: invalid configuration: {error:#}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    if cli.print_config {
        return match config.to_toml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("mochi: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Named, so that the broker's threads stand out in `top -H`, `perf` and the like.
        .thread_name("mochi-worker")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("mochi: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "mochi stopped");
            eprintln!("mochi: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to standard error: `RUST_LOG` when set, else the configured level (plus the debug
/// hook's target when it is on).
fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;

    let mut directives = config.logging.level.clone();
    if config.hooks.debug.enabled {
        directives.push_str(",mqtt_hook_debug=debug");
    }
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty());
    let filter = match from_env.as_deref().map(EnvFilter::try_new) {
        Some(Ok(filter)) => filter,
        Some(Err(error)) => {
            eprintln!("mochi: RUST_LOG is not a valid filter ({error}); using {directives:?}");
            EnvFilter::new(&directives)
        }
        None => EnvFilter::new(&directives),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match config.logging.format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
