//! The brokers under test: ours (release `mochi`), and Mosquitto and rumqttd when installed,
//! each on a free loopback port with a stated configuration.

// xtask is a plain synchronous program (the load generator has its own runtime, and these
// calls run outside it): blocking file access and sleeps are fine here.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// A broker to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Mochi,
    /// Another build of ours (the binary named by `MOCHI_BENCH_BASELINE`, e.g. a copy taken
    /// before a change), with the same configuration: to compare two builds in one run, their
    /// passes alternating. Only run when asked for (`--brokers mochi,baseline`).
    Baseline,
    Mosquitto,
    Rumqttd,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Mochi => "mochi",
            Self::Baseline => "baseline",
            Self::Mosquitto => "mosquitto",
            Self::Rumqttd => "rumqttd",
        }
    }

    /// What was changed from the broker's defaults, and why (printed with the results).
    pub(crate) fn configuration(self) -> &'static str {
        match self {
            Self::Mochi | Self::Baseline => {
                "defaults (queue limits too: a subscriber falling behind slows the publishers \
                 instead), allow-all auth, listener 127.0.0.1, log level warn"
            }
            Self::Mosquitto => {
                "allow_anonymous, listener 127.0.0.1, max_queued_messages 1000000, \
                 max_queued_bytes 0 (no limit), max_inflight_messages 100, persistence off"
            }
            Self::Rumqttd => "the crate's sample limits with max_inflight_count 100",
        }
    }

    /// Whether the broker can run here.
    pub(crate) fn available(self, root: &Path) -> bool {
        match self {
            Self::Mochi => root.join("target/release/mochi").is_file(),
            Self::Baseline => baseline_binary().is_some_and(|path| path.is_file()),
            Self::Mosquitto => which("mosquitto"),
            Self::Rumqttd => which("rumqttd"),
        }
    }
}

/// The binary of [`Kind::Baseline`], from `MOCHI_BENCH_BASELINE`.
fn baseline_binary() -> Option<std::path::PathBuf> {
    std::env::var_os("MOCHI_BENCH_BASELINE").map(std::path::PathBuf::from)
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A running broker; killed on drop.
pub(crate) struct Broker {
    pub(crate) kind: Kind,
    pub(crate) port: u16,
    child: Child,
}

impl Broker {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn start(kind: Kind, root: &Path) -> Result<Self> {
        let dir = root.join("target/bench");
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut command = match kind {
            Kind::Mochi | Kind::Baseline => {
                let config = dir.join("mochi.toml");
                write(
                    &config,
                    &format!(
                        "[[listeners]]\ntype = \"tcp\"\nid = \"bench\"\naddress = \
                         \"127.0.0.1:{port}\"\n\n[logging]\nlevel = \"warn\"\n"
                    ),
                )?;
                let binary = match kind {
                    Kind::Baseline => {
                        baseline_binary().context("MOCHI_BENCH_BASELINE is not set")?
                    }
                    _ => root.join("target/release/mochi"),
                };
                let mut command = Command::new(binary);
                command.arg("--config").arg(&config).env_remove("RUST_LOG");
                command
            }
            Kind::Mosquitto => {
                let config = dir.join("mosquitto.conf");
                write(
                    &config,
                    &format!(
                        "listener {port} 127.0.0.1\nallow_anonymous true\n\
                         max_queued_messages 1000000\nmax_queued_bytes 0\n\
                         max_inflight_messages 100\npersistence false\nlog_type error\n"
                    ),
                )?;
                let mut command = Command::new("mosquitto");
                command.arg("-c").arg(&config);
                command
            }
            Kind::Rumqttd => {
                let config = dir.join("rumqttd.toml");
                write(&config, &rumqttd_config(port))?;
                let mut command = Command::new("rumqttd");
                command.arg("--config").arg(&config);
                command
            }
        };
        // `MOCHI_BENCH_BROKER_LOG=path`: the brokers' output goes there (appended), e.g. to see
        // why a broker closed a connection; otherwise it is drained and dropped.
        let log = match std::env::var_os("MOCHI_BENCH_BROKER_LOG").map(std::path::PathBuf::from) {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .with_context(|| format!("could not open {}", path.display()))?,
            ),
            None => None,
        };
        let (stdout, stderr) = match log {
            Some(file) => (Stdio::from(file.try_clone()?), Stdio::from(file)),
            None => (Stdio::piped(), Stdio::null()),
        };
        let child = command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("could not start {}", kind.name()))?;
        let mut broker = Self { kind, port, child };
        // Drain its output so it never blocks on a full pipe.
        if let Some(stdout) = broker.child.stdout.take() {
            std::thread::spawn(move || for _ in BufReader::new(stdout).lines() {});
        }
        broker.wait_until_listening()?;
        Ok(broker)
    }

    fn wait_until_listening(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited at start ({status})", self.kind.name());
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(());
            }
            pause(Duration::from_millis(50));
        }
        bail!("{} did not listen on {}", self.kind.name(), self.port)
    }

    /// The broker's resident memory, in KiB (from /proc).
    pub(crate) fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sleeps the calling (non-async) thread.
pub(crate) fn pause(duration: Duration) {
    std::thread::sleep(duration);
}

fn write(path: &Path, text: &str) -> Result<()> {
    let mut file = std::fs::File::create(path)?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

/// A port that was free a moment ago.
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn rumqttd_config(port: u16) -> String {
    format!(
        r#"id = 0

[router]
id = 0
max_connections = 20010
max_outgoing_packet_count = 200
max_segment_size = 104857600
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 0
    [v4.1.connections]
    connection_timeout_ms = 60000
    max_payload_size = 20480
    max_inflight_count = 100
    dynamic_filters = true
"#
    )
}
