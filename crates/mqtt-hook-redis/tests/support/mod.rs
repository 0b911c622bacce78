//! A `redis-server` child process for tests (this crate's, and the `mochi` crash tests, which
//! include this file by path).

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

/// How long a server has to answer PING after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` process on 127.0.0.1, with no persistence unless asked for, killed on
/// drop.
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    /// Arguments after the defaults (which they override).
    args: Vec<String>,
    child: Option<Child>,
}

/// The arguments of a server that fsyncs every write before it replies.
pub const FSYNC_ALWAYS: &[&str] = &["--appendonly", "yes", "--appendfsync", "always"];

impl RedisServer {
    /// Starts a server on a free port, or returns `None` (after a warning) when `redis-server`
    /// is not installed and this is not CI.
    pub async fn start() -> Option<Self> {
        Self::start_with(&[]).await
    }

    /// As [`RedisServer::start`], with `args` after the default arguments (for example
    /// [`FSYNC_ALWAYS`], or `--replicaof`).
    pub async fn start_with(args: &[&str]) -> Option<Self> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            let ci = std::env::var("CI").is_ok_and(|ci| ci == "true" || ci == "1");
            assert!(
                !ci,
                "redis-server is not installed: the Redis backend tests need it \
                 (apt-get install redis-server)"
            );
            // Straight to the process' stderr: libtest captures `eprintln!` of passing tests.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** WARNING: redis-server is not installed; the Redis backend test is \
                 SKIPPED. Install it (apt-get install redis-server) to run it. ***\n"
            );
            return None;
        }
        // A port that was free a moment ago may be taken by then: try a few.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let mut server = Self {
                port,
                dir: tempfile::tempdir().unwrap(),
                args: args.iter().map(|arg| (*arg).to_owned()).collect(),
                child: None,
            };
            if server.run().await {
                return Some(server);
            }
        }
        panic!("could not start redis-server on a free port");
    }

    /// Starts `redis-server` on this server's port (on the same data directory, with the same
    /// arguments, as before) and waits until it answers PING; false if it exited (the port was
    /// taken).
    pub async fn run(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!(
                    "redis-server on port {} exited ({status}):\n{}",
                    self.port,
                    log(self.dir.path()).await
                );
                self.child = None;
                return false;
            }
            if ping(self.port).await {
                return true;
            }
            sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "redis-server on port {} did not answer PING within {START_TIMEOUT:?}:\n{}",
            self.port,
            log(self.dir.path()).await
        );
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server with SIGKILL (as a crash would: no shutdown, no flush) and waits for
    /// it to be gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn log(dir: &Path) -> String {
    tokio::fs::read_to_string(dir.join("redis.log"))
        .await
        .unwrap_or_default()
}

/// Whether a server on `port` answers PING.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut reply = [0; 7];
        stream.read_exact(&mut reply).await.ok()?;
        Some(&reply == b"+PONG\r\n")
    };
    timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Backend options for `server` under `key_prefix`, with short timeouts for tests.
pub fn options(server: &RedisServer, key_prefix: &str) -> mqtt_hook_redis::RedisOptions {
    mqtt_hook_redis::RedisOptions {
        url: server.url(),
        key_prefix: key_prefix.to_owned(),
        connect_timeout_ms: 2_000,
        response_timeout_ms: 5_000,
        reconnect_min_delay_ms: 50,
        reconnect_max_delay_ms: 500,
        ..mqtt_hook_redis::RedisOptions::default()
    }
}
