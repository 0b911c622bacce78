//! Developer tasks for the workspace, run as `cargo xtask <task>`.
//!
//! * `cargo xtask ci`: what CI checks, in the same order: formatting, clippy with
//!   `-D warnings`, then the README's test command.
//! * `cargo xtask fuzz [SECONDS]`: runs the codec's libFuzzer target (needs `cargo-fuzz`; uses the
//!   nightly toolchain when one is installed).
//! * `cargo xtask bench [--quick]`: load scenarios against `mochi`, Mosquitto and rumqttd.
//! * `cargo xtask interop [--suite PATH]`: the Eclipse Paho interoperability suite against a
//!   release `mochi` (see `interop/README.md`).

mod bench;
mod interop;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let mut args = std::env::args().skip(1);
    match args.next().as_deref() {
        Some("ci") => ci(),
        Some("fuzz") => {
            let seconds: u64 = match args.next() {
                Some(value) => value
                    .parse()
                    .with_context(|| format!("fuzz: {value:?} is not a number of seconds"))?,
                None => 60,
            };
            fuzz(seconds)
        }
        Some("bench") => {
            let rest: Vec<String> = args.collect();
            bench::bench(&workspace_root(), &rest)
        }
        Some("interop") => {
            let rest: Vec<String> = args.collect();
            interop::interop(&workspace_root(), &rest)
        }
        Some("-h" | "--help") | None => {
            println!("{}", HELP);
            Ok(())
        }
        Some(other) => bail!("unknown task {other:?}\n\n{HELP}"),
    }
}

const HELP: &str = "usage: cargo xtask <task>

tasks:
  ci              cargo fmt --check, cargo clippy -D warnings, then the test suite
  fuzz [SECONDS]  run the mqtt-packets decoder fuzz target (default 60 s)
  interop [--suite PATH]
                  the Eclipse Paho interoperability suite (v5 and 3.1.1) against mochi;
                  the suite comes from PATH, PAHO_TESTING_DIR or a git clone in target/
  bench [--quick] [--passes N] [--brokers mochi,mosquitto,rumqttd] [--only TEXT]
                  load scenarios against mochi and the peers installed here; table,
                  target/bench/results.csv and results.svg; `--brokers mochi,baseline`
                  compares with the build at MOCHI_BENCH_BASELINE (passes alternate);
                  `--only rumqttc` runs the fan rows with rumqttc clients; mochi is built
                  only when --brokers names it";

/// The README's test command; `.ci/run` runs the same line.
const TEST_COMMAND: &[&str] = &["test", "--workspace", "--all-features"];

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(TEST_COMMAND)
}

fn fuzz(seconds: u64) -> Result<()> {
    let max_time = format!("-max_total_time={seconds}");
    let status = Command::new("cargo")
        .args(["fuzz", "run", "decode", "--", &max_time])
        .current_dir("fuzz")
        .env("RUSTC_BOOTSTRAP", "1")
        .status()
        .context("could not start `cargo fuzz` (install it with `cargo install cargo-fuzz`)")?;
    if !status.success() {
        bail!("the fuzzer stopped with {status}");
    }
    Ok(())
}

/// The workspace root (the xtask crate's parent).
fn workspace_root() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Into::into).unwrap_or(manifest)
}

fn cargo(args: &[&str]) -> Result<()> {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .status()
        .with_context(|| format!("could not run cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed with {status}", args.join(" "));
    }
    Ok(())
}
