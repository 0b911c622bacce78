//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Mochi MQTT: an MQTT 5, 3.1.1 and 3.1 broker.
///
/// With no arguments it serves MQTT over TCP on :1883, MQTT over WebSocket on :1882 and HTTP
/// statistics on :8080, allowing every client (development only). Every configuration key can
/// be overridden by an environment variable MOCHI_<SECTION>__<KEY>, e.g.
/// MOCHI_LOGGING__LEVEL=debug or MOCHI_LISTENERS__0__ADDRESS=0.0.0.0:1884.
#[derive(Debug, Parser)]
#[command(name = "mochi", version, about, long_about)]
pub(crate) struct Cli {
    /// The TOML configuration file.
    #[arg(short, long, value_name = "FILE", env = "MOCHI_CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// Print the effective configuration (defaults, then the file, then the environment) as
    /// TOML, and exit.
    #[arg(long)]
    pub(crate) print_config: bool,

    /// Check a configuration file (with the environment overrides) and exit: status 0 when it
    /// is valid, 2 when it is not. It takes the place of `--config` (and of `MOCHI_CONFIG`).
    #[arg(long, value_name = "FILE", conflicts_with = "print_config")]
    pub(crate) check_config: Option<PathBuf>,
}
