//! A real browser against the broker: MQTT.js in headless Chromium over WebSocket, and the
//! HTTP dashboard rendered by Chromium and checked against `/api/sysinfo`.
//!
//! Needs Debian's `chromium` and `npm` (for the `mqtt` package). When either is missing the tests
//! print a loud message and pass, unless `CI` is set: then a missing tool is a failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use mqtt_listeners::{HttpStats, HttpStatsConfig, Listener, Tcp, TcpConfig};
use mqtt_listeners::{WebSocket, WebSocketConfig};
use mqtt_packets::Packet;
use support::{TIMEOUT, connect_bytes, publish_bytes, read_packet, server, spawn, subscribe_bytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// The longest one Chromium run may take before it is killed.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a browser run is tried before the test fails (a loaded machine can make the
/// first run come back empty).
const ATTEMPTS: usize = 3;
/// No new browser attempt starts after this (so a test ends within about 90 s even when every
/// run times out).
const TEST_BUDGET: Duration = Duration::from_secs(60);
/// The longest `npm install mqtt` may take.
const NPM_TIMEOUT: Duration = Duration::from_secs(90);

// ----- tools ---------------------------------------------------------------------------------

/// `name` on the `PATH`, if it is there.
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|directory| directory.join(name))
        .find(|candidate| candidate.is_file())
}

/// The tool, or `None` after a loud message when it is missing outside CI. In CI (`CI` set) a
/// missing tool fails the test.
fn require(name: &str, why: &str) -> Option<PathBuf> {
    if let Some(path) = which(name) {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "`{name}` is not installed and CI is set: {why} (.ci/run installs it)"
    );
    eprintln!(
        "\n\
         ************************************************************************\n\
         * SKIPPED: `{name}` is not on the PATH; {why}.\n\
         * Install it (as .ci/run does) to run this browser test.\n\
         ************************************************************************\n"
    );
    None
}

/// A directory under the cargo target dir for this test's files.
fn work_dir(name: &str) -> PathBuf {
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("browser")
        .join(name);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

/// Runs `command` with stdout and stderr in files, killing its whole process group after
/// `timeout`. Returns (finished in time and succeeded, stdout, stderr). Blocking: called only
/// through `spawn_blocking`.
#[allow(clippy::disallowed_methods)]
fn run_bounded(mut command: Command, timeout: Duration, logs: &Path) -> (bool, String, String) {
    use std::os::unix::process::CommandExt;

    let stdout_path = logs.with_extension("stdout");
    let stderr_path = logs.with_extension("stderr");
    command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0);
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    let deadline = Instant::now() + timeout;
    let success = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status.success();
        }
        if Instant::now() >= deadline {
            eprintln!("{command:?} took longer than {timeout:?}; killing it");
            // The whole group: Chromium's helper processes too. The group id is the child's id.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let stdout = std::fs::read_to_string(&stdout_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    (success, stdout, stderr)
}

/// `node_modules/mqtt/dist/mqtt.min.js`, installed with npm into the target dir on first use
/// and reused afterwards. `None` (skip) when npm is missing outside CI. Blocking: called only
/// through `spawn_blocking`.
#[allow(clippy::disallowed_methods)]
fn mqtt_js() -> Option<PathBuf> {
    let directory = work_dir("npm");
    let bundle = directory.join("node_modules/mqtt/dist/mqtt.min.js");
    if bundle.is_file() {
        return Some(bundle);
    }
    let npm = require(
        "npm",
        "it installs MQTT.js (the `mqtt` package) for the browser test",
    )?;
    std::fs::write(
        directory.join("package.json"),
        "{\"name\":\"mochi-browser-test\",\"private\":true}\n",
    )
    .unwrap();
    let mut command = Command::new(npm);
    command
        .current_dir(&directory)
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .arg("mqtt@5");
    let (success, stdout, stderr) = run_bounded(command, NPM_TIMEOUT, &directory.join("npm"));
    assert!(
        success && bundle.is_file(),
        "npm install mqtt@5 failed:\n{stdout}\n{stderr}"
    );
    Some(bundle)
}

/// Headless Chromium with the flags this machine needs (no network beyond loopback, no
/// sandbox as root) and a fresh profile.
struct Chromium {
    binary: PathBuf,
}

impl Chromium {
    fn find() -> Option<Self> {
        let binary = std::env::var_os("CHROMIUM")
            .map(PathBuf::from)
            .or_else(|| require("chromium", "the browser tests need headless Chromium"))?;
        Some(Self { binary })
    }

    /// Runs Chromium on `url` with `extra` flags; returns its stdout (`--dump-dom` output) if it
    /// finished in time. Blocking.
    fn run(&self, url: &str, extra: &[String]) -> Option<String> {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let run = RUN.fetch_add(1, Ordering::Relaxed);
        let directory = work_dir("chromium");
        let profile = directory.join(format!("profile-{}-{run}", std::process::id()));
        let _ = std::fs::remove_dir_all(&profile);
        let mut command = Command::new(&self.binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(url);
        let logs = directory.join(format!("run-{}-{run}", std::process::id()));
        let (success, stdout, stderr) = run_bounded(command, CHROMIUM_TIMEOUT, &logs);
        let _ = std::fs::remove_dir_all(&profile);
        let _ = std::fs::remove_file(logs.with_extension("stdout"));
        let _ = std::fs::remove_file(logs.with_extension("stderr"));
        if success {
            Some(stdout)
        } else {
            eprintln!("chromium on {url} failed; its stderr:\n{stderr}");
            None
        }
    }

    /// [`Chromium::run`] off the async runtime.
    async fn run_async(self: &Arc<Self>, url: String, extra: Vec<String>) -> Option<String> {
        let chromium = self.clone();
        tokio::task::spawn_blocking(move || chromium.run(&url, &extra))
            .await
            .unwrap()
    }
}

// ----- a tiny HTTP responder for the test page -----------------------------------------------

/// What the test page's server knows: the page, the MQTT.js bundle, and the result the page
/// reports back.
struct PageState {
    page: parking_lot::Mutex<String>,
    bundle: Vec<u8>,
    result: watch::Sender<Option<String>>,
}

/// Serves, on 127.0.0.1:0:
/// - `GET /`: the current test page;
/// - `GET /mqtt.min.js`: MQTT.js;
/// - `POST /result`: the page reports what it received (stored, releases `/hold`);
/// - `GET /hold`: answered only once a result is in (or after a bound): the page loads it as
///   an image, so the page's load event, after which `--dump-dom` dumps the DOM, waits for the
///   round trip to finish.
async fn serve_pages(state: Arc<PageState>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = state.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(TIMEOUT * 4, respond(stream, &state)).await;
            });
        }
    });
    address
}

async fn respond(mut stream: TcpStream, state: &PageState) -> std::io::Result<()> {
    let mut request = Vec::new();
    let head_end = loop {
        if let Some(end) = request.windows(4).position(|window| window == b"\r\n\r\n") {
            break end + 4;
        }
        if request.len() > 64 * 1024 || stream.read_buf(&mut request).await? == 0 {
            return Ok(());
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).into_owned();
    let mut words = head.split_whitespace();
    let method = words.next().unwrap_or_default().to_owned();
    let path = words.next().unwrap_or_default().to_owned();
    let (status, content_type, body): (&str, &str, Vec<u8>) = match (method.as_str(), path.as_str())
    {
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            state.page.lock().clone().into_bytes(),
        ),
        ("GET", "/mqtt.min.js") => (
            "200 OK",
            "text/javascript; charset=utf-8",
            state.bundle.clone(),
        ),
        ("POST", "/result") => {
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().ok())?
                })
                .unwrap_or(0)
                .min(64 * 1024);
            while request.len() < head_end + length {
                if stream.read_buf(&mut request).await? == 0 {
                    break;
                }
            }
            let end = request.len().min(head_end + length);
            let result = String::from_utf8_lossy(&request[head_end..end]).into_owned();
            state.result.send_replace(Some(result));
            ("204 No Content", "text/plain", Vec::new())
        }
        ("GET", "/hold") => {
            let mut result = state.result.subscribe();
            let _ = tokio::time::timeout(TIMEOUT * 2, result.wait_for(Option::is_some)).await;
            ("204 No Content", "text/plain", Vec::new())
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(&body).await?;
    stream.shutdown().await
}

/// The MQTT.js test page: connect over WebSocket, subscribe, publish, show what came back, and
/// report it to `/result`.
fn test_page(ws_url: &str, client_id: &str, topic: &str, payload: &str) -> String {
    format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>MQTT.js round trip</title></head>
<body>
<p>status: <span id="status">loading</span></p>
<pre id="received"></pre>
<img id="hold" src="/hold" alt="">
<script src="/mqtt.min.js"></script>
<script>
"use strict";
const status = document.getElementById("status");
const received = document.getElementById("received");
let reported = false;
function report(text) {{
  if (reported) return;
  reported = true;
  fetch("/result", {{ method: "POST", body: text }});
}}
function fail(text) {{
  status.textContent = text;
  report(text);
}}
try {{
  const client = mqtt.connect({ws_url:?}, {{
    clientId: {client_id:?},
    protocolVersion: 4,
    reconnectPeriod: 0,
    connectTimeout: 15000,
  }});
  client.on("connect", () => {{
    status.textContent = "connected";
    client.subscribe({topic:?}, {{ qos: 1 }}, (error, granted) => {{
      if (error) return fail("subscribe error: " + error.message);
      status.textContent = "subscribed qos " + granted[0].qos;
      client.publish({topic:?}, {payload:?}, {{ qos: 1 }}, (error) => {{
        if (error) fail("publish error: " + error.message);
      }});
    }});
  }});
  client.on("message", (topic, message) => {{
    received.textContent += topic + " " + message.toString() + "\n";
    status.textContent = "received";
    report(received.textContent);
    client.end();
  }});
  client.on("error", (error) => fail("error: " + error.message));
  client.on("close", () => {{ if (!reported) fail("closed before a message: " + status.textContent); }});
}} catch (error) {{
  fail("exception: " + error);
}}
</script>
</body>
</html>
"#
    )
}

/// The text of the element that starts with `start_tag` in a dumped DOM (up to the next tag).
fn element_text<'a>(dom: &'a str, start_tag: &str) -> Option<&'a str> {
    let start = dom.find(start_tag)? + start_tag.len();
    Some(&dom[start..start + dom[start..].find('<')?])
}

/// Something unique for this run.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_js_in_chromium_round_trips_over_websocket() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let chromium = Arc::new(chromium);
    let Some(bundle) = tokio::task::spawn_blocking(mqtt_js).await.unwrap() else {
        return;
    };

    let (result, _) = watch::channel(None);
    let state = Arc::new(PageState {
        page: parking_lot::Mutex::new(String::new()),
        bundle: tokio::fs::read(&bundle).await.unwrap(),
        result,
    });
    let pages = serve_pages(state.clone()).await;

    let server = server();
    // The page comes from another origin than the listener, so it must be allowed: browsers
    // from unlisted origins are refused by default.
    let ws = Arc::new(
        WebSocket::bind(
            "ws1",
            "127.0.0.1:0",
            WebSocketConfig::default()
                .with_path("/mqtt")
                .with_allowed_origins(vec![format!("http://{pages}")]),
        )
        .await
        .unwrap(),
    );
    spawn(ws.clone(), &server);
    let ws_url = format!("ws://{}/mqtt", ws.local_addr());

    let started = Instant::now();
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let id = unique();
        let topic = format!("browser/{id}");
        let payload = format!("hello from chromium {id}");
        *state.page.lock() = test_page(&ws_url, &format!("chromium-{id}"), &topic, &payload);
        state.result.send_replace(None);

        let dom = chromium
            .run_async(format!("http://{pages}/"), vec!["--dump-dom".to_owned()])
            .await
            .unwrap_or_default();
        let reported = state.result.borrow().clone().unwrap_or_default();
        let expected = format!("{topic} {payload}\n");
        if element_text(&dom, "<pre id=\"received\">") == Some(expected.as_str())
            && reported == expected
        {
            assert_eq!(
                element_text(&dom, "<span id=\"status\">"),
                Some("received"),
                "{dom}"
            );
            // The broker saw the browser as a WebSocket client, which has gone again.
            let stats = ws.stats();
            assert!(stats.accepted >= 1, "{stats:?}");
            eprintln!(
                "MQTT.js round trip in Chromium: attempt {attempt}, {:?}",
                started.elapsed()
            );
            server.close().await;
            return;
        }
        last = format!("attempt {attempt}: reported {reported:?}; DOM:\n{dom}");
        eprintln!("{last}");
        if started.elapsed() > TEST_BUDGET {
            break;
        }
    }
    panic!("no MQTT.js round trip in Chromium after {ATTEMPTS} attempts; {last}");
}

// ----- the dashboard ---------------------------------------------------------------------------

/// The value of `"name":<number>` in a flat JSON text.
fn json_number(json: &str, name: &str) -> u64 {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("{name} in {json}"))
        + key.len();
    json[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number in {json}"))
}

/// The number the dashboard shows for `field` (its `data-field` element), if it shows one.
fn dashboard_number(dom: &str, field: &str) -> Option<u64> {
    let text = element_text(dom, &format!("data-field=\"{field}\">"))?;
    // The dashboard groups thousands with spaces.
    let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    digits.parse().ok()
}

/// One request with `Connection: close`; the body of a 200 reply.
async fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

/// Figures that do not move while nothing happens (uptime, time and memory do).
const STABLE_FIELDS: [&str; 12] = [
    "clients_connected",
    "clients_total",
    "messages_received",
    "messages_sent",
    "retained",
    "subscriptions",
    "packets_received",
    "packets_sent",
    "connections_total",
    "bytes_received",
    "bytes_sent",
    "messages_dropped",
];

/// How many messages the test client publishes (all retained, on distinct topics, all
/// delivered back to it).
const PUBLISHED: u64 = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shows_sysinfo() {
    let Some(chromium) = Chromium::find() else {
        return;
    };
    let chromium = Arc::new(chromium);

    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    let http = Arc::new(
        HttpStats::bind("stats", "127.0.0.1:0", HttpStatsConfig::default())
            .await
            .unwrap(),
    );
    http.track(tcp.clone());
    spawn(tcp.clone(), &server);
    spawn(http.clone(), &server);

    // A client that subscribes twice and publishes a known number of retained messages, all
    // delivered back to it; it stays connected while the dashboard is looked at.
    let mut client = TcpStream::connect(tcp.local_addr()).await.unwrap();
    let mut buffer = BytesMut::new();
    client
        .write_all(&connect_bytes("dashboard-client"))
        .await
        .unwrap();
    assert!(matches!(
        read_packet(&mut client, &mut buffer).await,
        Some(Packet::ConnAck(_))
    ));
    for filter in ["dash/#", "other/+"] {
        client.write_all(&subscribe_bytes(filter)).await.unwrap();
        assert!(matches!(
            read_packet(&mut client, &mut buffer).await,
            Some(Packet::SubAck(_))
        ));
    }
    for index in 0..PUBLISHED {
        let mut publish = publish_bytes(&format!("dash/{index}"), b"figure");
        publish[0] |= 0x01; // retain
        client.write_all(&publish).await.unwrap();
        match read_packet(&mut client, &mut buffer).await {
            Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"figure"),
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    // The broker counts a sent message just after writing it, so the figures settle a moment
    // after the client has read the last one.
    let expected = [
        ("messages_received", PUBLISHED),
        ("messages_sent", PUBLISHED),
        ("retained", PUBLISHED),
        ("subscriptions", 2),
        ("clients_connected", 1),
    ];
    let settle = Instant::now();
    loop {
        let json = http_get(http.local_addr(), "/api/sysinfo").await;
        let figures = expected.map(|(name, _)| (name, json_number(&json, name)));
        if figures == expected {
            break;
        }
        assert!(
            settle.elapsed() < TIMEOUT,
            "/api/sysinfo never showed {expected:?}: {json}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let url = format!("http://{}/", http.local_addr());
    // Virtual time lets the dashboard's first fetches of /api/sysinfo finish before the dump.
    let budget = "--virtual-time-budget=3000".to_owned();
    let started = Instant::now();
    let mut checked = false;
    let mut last = String::new();
    for attempt in 1..=ATTEMPTS {
        let dom = chromium
            .run_async(url.clone(), vec![budget.clone(), "--dump-dom".to_owned()])
            .await
            .unwrap_or_default();
        let json = http_get(http.local_addr(), "/api/sysinfo").await;
        let shown: Vec<(&str, Option<u64>, u64)> = STABLE_FIELDS
            .iter()
            .map(|field| {
                (
                    *field,
                    dashboard_number(&dom, field),
                    json_number(&json, field),
                )
            })
            .collect();
        if shown.iter().all(|(_, dom, json)| *dom == Some(*json)) {
            assert!(dom.contains("<td>tcp1</td><td>tcp</td>"), "{dom}");
            let status = element_text(&dom, "<span id=\"status\">").unwrap_or_default();
            assert!(status.starts_with("updated"), "{status}");
            eprintln!(
                "dashboard matches /api/sysinfo: attempt {attempt}, {:?}: {shown:?}",
                started.elapsed()
            );
            checked = true;
            break;
        }
        last = format!("attempt {attempt}: (field, shown, sysinfo) {shown:?}; DOM:\n{dom}");
        eprintln!("{last}");
        if started.elapsed() > TEST_BUDGET {
            break;
        }
    }
    assert!(
        checked,
        "the dashboard never showed /api/sysinfo's figures; {last}"
    );

    // A screenshot of the rendered dashboard.
    let screenshot = work_dir("screenshots").join("dashboard.png");
    let _ = tokio::fs::remove_file(&screenshot).await;
    let mut size = 0;
    for _ in 1..=ATTEMPTS {
        chromium
            .run_async(
                url.clone(),
                vec![
                    budget.clone(),
                    format!("--screenshot={}", screenshot.display()),
                    "--window-size=1200,900".to_owned(),
                ],
            )
            .await;
        size = tokio::fs::metadata(&screenshot)
            .await
            .map_or(0, |metadata| metadata.len());
        if size > 8 * 1024 || started.elapsed() > TEST_BUDGET {
            break;
        }
    }
    assert!(
        size > 8 * 1024,
        "screenshot {} is {size} bytes",
        screenshot.display()
    );
    let png = tokio::fs::read(&screenshot).await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    eprintln!(
        "dashboard screenshot: {} ({size} bytes)",
        screenshot.display()
    );

    drop(client);
    server.close().await;
}
