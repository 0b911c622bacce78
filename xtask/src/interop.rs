//! `cargo xtask interop`: the Eclipse Paho interoperability suite against `mochi`.
//!
//! The suite (`interoperability/client_test5.py` for MQTT 5, `client_test.py` for 3.1.1) comes
//! from `--suite PATH`, the `PAHO_TESTING_DIR` environment variable, or a clone into
//! `target/paho.mqtt.testing` (made with git when missing and the network allows). It needs
//! only Python 3's standard library. For each suite a release `mochi` is started with
//! `interop/paho.toml` on a free loopback port; the suite runs through a small driver
//! (`target/interop/driver.py`) that records each test's outcome.

// xtask is a plain synchronous program: there is no async runtime to block.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The upstream repository, cloned when no suite is given.
const REPOSITORY: &str = "https://github.com/eclipse/paho.mqtt.testing";
/// How long one suite may run.
const SUITE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// Runs unittest with our argv (the suite's own `-p` handling confuses unittest in
/// `client_test.py`) and writes one line per test: status, id, the last line of the reason. The
/// suites connect to `localhost`.
const DRIVER: &str = r#"import os, runpy, sys, types, unittest
script, port, out = sys.argv[1:4]
os.chdir(os.path.dirname(os.path.abspath(script)))
sys.path.insert(0, os.getcwd())
results = []
def last_line(text):
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
class Result(unittest.TextTestResult):
    def addSuccess(self, test):
        super().addSuccess(test); results.append(("ok", test.id(), ""))
    def addFailure(self, test, err):
        super().addFailure(test, err); results.append(("FAIL", test.id(), last_line(self._exc_info_to_string(err, test))))
    def addError(self, test, err):
        super().addError(test, err); results.append(("ERROR", test.id(), last_line(self._exc_info_to_string(err, test))))
    def addSkip(self, test, reason):
        super().addSkip(test, reason); results.append(("skipped", test.id(), reason))
original = unittest.main
def main(*args, **kwargs):
    # The tests are defined in the calling script's namespace, not in this driver's __main__.
    module = types.ModuleType("paho_suite")
    module.__dict__.update(sys._getframe(1).f_globals)
    kwargs["module"] = module
    kwargs["argv"] = [script]
    kwargs["exit"] = False
    kwargs["testRunner"] = unittest.TextTestRunner(resultclass=Result, verbosity=2)
    return original(*args, **kwargs)
unittest.main = main
# Not `-h`: the suites test options with `o in ("--help")`, a substring test that `-h` matches.
sys.argv = [script, "-p", port]
try:
    runpy.run_path(script, run_name="__main__")
finally:
    with open(out, "w") as f:
        for status, name, reason in results:
            f.write("%s\t%s\t%s\n" % (status, name, reason.replace("\t", " ")))
"#;

/// One test's outcome.
struct Outcome {
    status: String,
    name: String,
    reason: String,
}

pub(crate) fn interop(root: &Path, args: &[String]) -> Result<()> {
    let suite = find_suite(root, args)?;
    let python = which_python()?;
    eprintln!("xtask: suite {}", suite.display());
    super::cargo(&["build", "--release", "-p", "mochi-mqtt", "--bin", "mochi"])?;
    let work = root.join("target").join("interop");
    std::fs::create_dir_all(&work)?;
    let driver = work.join("driver.py");
    std::fs::write(&driver, DRIVER)?;

    let mut failed_any = false;
    let mut summaries = Vec::new();
    let mut failures = Vec::new();
    for (label, script) in [("v5", "client_test5.py"), ("v3", "client_test.py")] {
        let outcomes = run_suite(root, &python, &driver, &suite.join(script), &work, label)?;
        let passed = outcomes.iter().filter(|o| o.status == "ok").count();
        let failed = outcomes
            .iter()
            .filter(|o| o.status == "FAIL" || o.status == "ERROR")
            .count();
        if outcomes.is_empty() {
            failures.push(format!("{label}: no test ran (see the output above)"));
            failed_any = true;
        }
        failed_any |= failed > 0;
        summaries.push(format!("{label}: {passed} passed, {failed} failed"));
        for outcome in outcomes
            .iter()
            .filter(|o| o.status == "FAIL" || o.status == "ERROR")
        {
            failures.push(format!(
                "{label} {} {}: {}",
                outcome.status, outcome.name, outcome.reason
            ));
        }
    }
    println!();
    for summary in &summaries {
        println!("{summary}");
    }
    for failure in &failures {
        println!("  {failure}");
    }
    if failed_any {
        bail!("the interoperability suite failed");
    }
    Ok(())
}

/// The `interoperability` folder of the suite.
fn find_suite(root: &Path, args: &[String]) -> Result<PathBuf> {
    let given = match args {
        [flag, path, ..] if flag == "--suite" => Some(PathBuf::from(path)),
        [flag] if flag == "--suite" => bail!("--suite needs a path"),
        [] => std::env::var_os("PAHO_TESTING_DIR").map(PathBuf::from),
        other => bail!("interop: unexpected arguments {other:?} (use --suite PATH)"),
    };
    let checkout = match given {
        Some(path) => path,
        None => {
            let clone = root.join("target").join("paho.mqtt.testing");
            if !clone.exists() {
                eprintln!("xtask: cloning {REPOSITORY} into {}", clone.display());
                let status = Command::new("git")
                    .args(["clone", "--depth", "1", REPOSITORY])
                    .arg(&clone)
                    .status()
                    .context("could not run git")?;
                if !status.success() {
                    bail!(
                        "could not clone {REPOSITORY}; give a checkout with --suite PATH or \
                         PAHO_TESTING_DIR"
                    );
                }
            }
            clone
        }
    };
    for candidate in [checkout.join("interoperability"), checkout.clone()] {
        if candidate.join("client_test5.py").is_file() && candidate.join("client_test.py").is_file()
        {
            return Ok(candidate);
        }
    }
    bail!(
        "{} holds no interoperability/client_test5.py and client_test.py",
        checkout.display()
    )
}

/// A Python 3 interpreter; the suite needs nothing beyond the standard library.
fn which_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        let version = Command::new(candidate).arg("--version").output();
        if let Ok(output) = version
            && output.status.success()
            && String::from_utf8_lossy(&output.stdout)
                .trim()
                .starts_with("Python 3")
        {
            return Ok(candidate.to_owned());
        }
    }
    bail!("the suite needs Python 3 (apt-get install python3)")
}

/// A running `mochi` with the interop configuration; killed on drop.
struct Broker {
    child: Child,
    port: u16,
}

impl Broker {
    fn start(root: &Path) -> Result<Self> {
        let mut child = Command::new(root.join("target/release/mochi"))
            .arg("--config")
            .arg(root.join("interop/paho.toml"))
            .env("MOCHI_LISTENERS__0__ADDRESS", "127.0.0.1:0")
            .env("MOCHI_LOGGING__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("could not start target/release/mochi")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (lines, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut port = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match receiver.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    bail!("mochi did not report ready");
                }
            };
            // "listening: tcp   paho       127.0.0.1:40000"
            if let Some(rest) = line.strip_prefix("listening:") {
                port = rest
                    .split_whitespace()
                    .nth(2)
                    .and_then(|address| address.rsplit(':').next())
                    .and_then(|port| port.parse().ok());
            }
            if line == "ready" {
                break;
            }
        }
        match port {
            Some(port) => Ok(Self { child, port }),
            None => {
                let _ = child.kill();
                bail!("mochi did not print its listener's address")
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run_suite(
    root: &Path,
    python: &str,
    driver: &Path,
    script: &Path,
    work: &Path,
    label: &str,
) -> Result<Vec<Outcome>> {
    let broker = Broker::start(root)?;
    let results = work.join(format!("{label}.tsv"));
    let _ = std::fs::remove_file(&results);
    eprintln!(
        "xtask: {label}: {} against mochi on 127.0.0.1:{}",
        script.display(),
        broker.port
    );
    let mut child = Command::new(python)
        .arg(driver)
        .arg(script)
        .arg(broker.port.to_string())
        .arg(&results)
        .stdin(Stdio::null())
        .spawn()
        .context("could not start the suite")?;
    let deadline = Instant::now() + SUITE_TIMEOUT;
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{label}: the suite did not finish within {SUITE_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(broker);
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, '\t');
            Some(Outcome {
                status: fields.next()?.to_owned(),
                name: fields.next()?.to_owned(),
                reason: fields.next().unwrap_or_default().to_owned(),
            })
        })
        .collect())
}
