//! The `mochi` binary run as a user would: config files, environment overrides, listeners,
//! signals. Every wait is bounded and the child is always killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, Publish, QoS, ReasonCode,
    Subscribe, Subscription, decode,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const MOCHI: &str = env!("CARGO_BIN_EXE_mochi");

/// A fresh directory for one test's files.
fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mochi-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_file(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A running `mochi`, its standard output line by line, and the addresses it printed.
struct Broker {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
    addresses: HashMap<String, String>,
}

impl Broker {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(MOCHI);
        command
            .args(args)
            .env_remove("RUST_LOG")
            .env("MOCHI_LOGGING__LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let mut broker = Self {
            child,
            lines,
            seen: Vec::new(),
            addresses: HashMap::new(),
        };
        broker.wait_for_line(|line| line == "ready");
        for line in &broker.seen {
            // "listening: tcp   t1         127.0.0.1:40000"
            if let Some(rest) = line.strip_prefix("listening:") {
                let fields: Vec<&str> = rest.split_whitespace().collect();
                broker
                    .addresses
                    .insert(fields[1].to_owned(), fields[2].to_owned());
            }
        }
        broker
    }

    fn address(&self, id: &str) -> &str {
        self.addresses
            .get(id)
            .unwrap_or_else(|| panic!("no listener {id}: {:?}", self.seen))
    }

    fn wait_for_line(&mut self, predicate: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if predicate(&line) {
                        return line;
                    }
                }
                Err(error) => panic!("no such line ({error:?}); output so far: {:?}", self.seen),
            }
        }
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end (its standard output closes), bounded.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("mochi did not stop: {:?}", self.seen),
            }
        }
        self.child.wait().unwrap()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking MQTT client over any stream, with the codec.
struct Client<S> {
    stream: S,
    protocol: Protocol,
    buffer: BytesMut,
}

impl<S: Read + Write> Client<S> {
    fn send(&mut self, packet: Packet) {
        let mut wire = BytesMut::new();
        packet.encode(self.protocol, &mut wire).unwrap();
        self.stream.write_all(&wire).unwrap();
    }

    /// The next packet; `None` when the server closed the connection.
    fn receive(&mut self) -> Option<Packet> {
        let context = DecodeContext::new(self.protocol).with_maximum_packet_size(1 << 20);
        loop {
            if let Some(packet) = decode(&mut self.buffer, &context).unwrap() {
                return Some(packet);
            }
            let mut chunk = [0_u8; 4096];
            let read = self.stream.read(&mut chunk).unwrap();
            if read == 0 {
                return None;
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }

    /// Sends CONNECT and returns the CONNACK's reason code.
    fn connect(
        stream: S,
        protocol: Protocol,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> (Self, ReasonCode) {
        let mut client = Self {
            stream,
            protocol,
            buffer: BytesMut::new(),
        };
        let mut connect = Connect::new(protocol, MqttString::new(client_id).unwrap());
        if let Some((username, password)) = login {
            connect.username = Some(MqttString::new(username).unwrap());
            connect.password = Some(password.as_bytes().to_vec().into());
        }
        client.send(Packet::Connect(Box::new(connect)));
        match client.receive() {
            Some(Packet::ConnAck(connack)) => (client, connack.reason_code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Subscribes, publishes to the same topic and expects the message back.
    fn round_trip(&mut self, topic: &str, payload: &[u8]) {
        let id = PacketId::new(1).unwrap();
        let subscription = Subscription::new(MqttString::new(topic).unwrap(), QoS::AtMostOnce);
        self.send(Packet::Subscribe(Subscribe::new(id, vec![subscription])));
        match self.receive() {
            Some(Packet::SubAck(suback)) => {
                assert_eq!(suback.reason_codes, vec![ReasonCode::SUCCESS]);
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
        let publish = Publish::new(MqttString::new(topic).unwrap(), payload.to_vec());
        self.send(Packet::Publish(publish));
        match self.receive() {
            Some(Packet::Publish(received)) => {
                assert_eq!(received.topic.as_str(), topic);
                assert_eq!(&received.payload[..], payload);
            }
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

fn tcp(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(MOCHI);
    command.args(args).env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdin(Stdio::null()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn config_file_serves_tcp_unix_and_http_listeners() {
    let dir = temp_dir("listeners");
    let socket = dir.join("mochi.sock");
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        &format!(
            r#"
[[listeners]]
type = "tcp"
id = "t1"
address = "127.0.0.1:0"

[[listeners]]
type = "unix"
id = "local"
address = "{}"

[[listeners]]
type = "http"
id = "stats"
address = "127.0.0.1:0"

[hooks.auth]
allow_all = true
"#,
            socket.display()
        ),
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);

    let (mut client, code) = Client::connect(tcp(broker.address("t1")), Protocol::V5, "c1", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("over/tcp", b"hello");

    #[cfg(unix)]
    {
        let stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let (mut client, code) = Client::connect(stream, Protocol::V3_1_1, "c2", None);
        assert_eq!(code, ReasonCode::SUCCESS);
        client.round_trip("over/unix", b"hello");
    }

    let mut http = tcp(broker.address("stats"));
    http.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
}

#[test]
fn no_arguments_serves_the_defaults_with_addresses_from_the_environment() {
    let broker = Broker::start(
        &[],
        &[
            ("MOCHI_LISTENERS__0__ADDRESS", "127.0.0.1:0"),
            ("MOCHI_LISTENERS__1__ADDRESS", "127.0.0.1:0"),
            ("MOCHI_LISTENERS__2__ADDRESS", "127.0.0.1:0"),
        ],
    );
    assert!(
        broker.seen.iter().any(|line| line.contains("allow-all")),
        "{:?}",
        broker.seen
    );
    assert!(
        broker
            .seen
            .iter()
            .any(|line| line.starts_with("Mochi MQTT "))
    );
    for id in ["t1", "ws1", "stats"] {
        assert!(broker.address(id).starts_with("127.0.0.1:"));
    }
    let (mut client, code) = Client::connect(tcp(broker.address("t1")), Protocol::V5, "c", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("defaults", b"x");
}

#[test]
fn bad_config_exits_2_naming_the_key_and_line() {
    let dir = temp_dir("bad");
    let config = dir.join("bad.toml");
    write_file(
        &config,
        "[options]\nconnect_timeout_secs = 5\nconect_timeout = 1\n",
    );
    let output = run_to_end(&["--config", config.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(stderr.contains("conect_timeout"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");

    // A wrong type, and a bad environment override, are refused the same way.
    write_file(&config, "[capabilities]\nmaximum_qos = \"two\"\n");
    let output = run_to_end(&["--config", config.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("maximum_qos"));

    let output = run_to_end(&["--print-config"], &[("MOCHI_OPTIONS__NOPE", "1")]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("MOCHI_OPTIONS__NOPE"));
}

#[test]
fn check_config_validates_a_file() {
    let dir = temp_dir("check");
    let good = dir.join("good.toml");
    write_file(
        &good,
        "[logging]\nlevel = \"debug\"\nformat = \"json\"\n[hooks.debug]\nenabled = true\npayload = \"text\"\n",
    );
    let output = run_to_end(&["--check-config", good.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(text(&output.stdout).contains("valid"));
    // `MOCHI_CONFIG` (as set in the Docker image) does not get in the way.
    let output = run_to_end(
        &["--check-config", good.to_str().unwrap()],
        &[("MOCHI_CONFIG", "/nonexistent/mochi.toml")],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));

    // A ledger file that does not parse makes the configuration invalid.
    let ledger = dir.join("ledger.yaml");
    write_file(&ledger, "auth: [{nobody: here}]\n");
    let with_ledger = dir.join("with-ledger.toml");
    write_file(
        &with_ledger,
        &format!(
            "[hooks.auth]\nallow_all = false\nledger_file = \"{}\"\n",
            ledger.display()
        ),
    );
    let output = run_to_end(&["--check-config", with_ledger.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("hooks.auth.ledger_file"));

    let bad = dir.join("bad.toml");
    write_file(
        &bad,
        "[[listeners]]\ntype = \"wss\"\nid = \"w\"\naddress = \"0.0.0.0:8884\"\n",
    );
    let output = run_to_end(&["--check-config", bad.to_str().unwrap()], &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("listeners[0].tls_cert"));
}

#[test]
fn print_config_shows_the_effective_configuration() {
    let dir = temp_dir("print");
    let config = dir.join("mochi.toml");
    write_file(&config, "[options]\nshutdown_timeout_secs = 2\n");
    let output = run_to_end(
        &["--config", config.to_str().unwrap(), "--print-config"],
        &[("MOCHI_LOGGING__LEVEL", "debug")],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let printed: toml::Table = toml::from_str(&text(&output.stdout)).unwrap();
    assert_eq!(
        printed["options"]["shutdown_timeout_secs"].as_integer(),
        Some(2)
    );
    assert_eq!(printed["logging"]["level"].as_str(), Some("debug"));
    assert_eq!(printed["listeners"].as_array().unwrap().len(), 3);

    // What it prints is a valid configuration file.
    let printed_file = dir.join("printed.toml");
    write_file(&printed_file, &text(&output.stdout));
    let output = run_to_end(&["--check-config", printed_file.to_str().unwrap()], &[]);
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[cfg(unix)]
#[test]
fn sigterm_sends_v5_clients_disconnect_server_shutting_down() {
    let dir = temp_dir("sigterm");
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        "[options]\nshutdown_timeout_secs = 3\n[[listeners]]\ntype = \"tcp\"\nid = \"t1\"\naddress = \"127.0.0.1:0\"\n",
    );
    let mut broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let (mut client, code) = Client::connect(tcp(broker.address("t1")), Protocol::V5, "v5", None);
    assert_eq!(code, ReasonCode::SUCCESS);

    broker.signal("TERM");
    match client.receive() {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::SERVER_SHUTTING_DOWN);
        }
        other => panic!("expected DISCONNECT 0x8B, got {other:?}"),
    }
    assert_eq!(client.receive(), None, "the server closes the connection");
    let status = broker.wait_exit();
    assert!(status.success(), "{status:?}");
    assert!(
        broker
            .seen
            .iter()
            .any(|line| line == "shutting down (SIGTERM)")
    );
}

#[cfg(unix)]
#[test]
fn sighup_reloads_the_ledger_file() {
    let dir = temp_dir("sighup");
    let ledger = dir.join("ledger.toml");
    let config = dir.join("mochi.toml");
    write_file(
        &ledger,
        "[[auth]]\nusername = \"alice\"\npassword = \"one\"\nallow = true\n",
    );
    write_file(
        &config,
        &format!(
            "[[listeners]]\ntype = \"tcp\"\nid = \"t1\"\naddress = \"127.0.0.1:0\"\n\n[hooks.auth]\nallow_all = false\nledger_file = \"{}\"\n",
            ledger.display()
        ),
    );
    let mut broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let address = broker.address("t1").to_owned();

    let (_alice, code) = Client::connect(tcp(&address), Protocol::V5, "a", Some(("alice", "one")));
    assert_eq!(code, ReasonCode::SUCCESS);
    let (_bob, code) = Client::connect(tcp(&address), Protocol::V5, "b", Some(("bob", "two")));
    assert_eq!(code, ReasonCode::BAD_USER_NAME_OR_PASSWORD);

    write_file(
        &ledger,
        "[[auth]]\nusername = \"alice\"\npassword = \"one\"\nallow = true\n\n[[auth]]\nusername = \"bob\"\npassword = \"two\"\nallow = true\n",
    );
    broker.signal("HUP");
    broker.wait_for_line(|line| line == "auth: ledger reloaded");

    let (mut bob, code) = Client::connect(tcp(&address), Protocol::V5, "b", Some(("bob", "two")));
    assert_eq!(code, ReasonCode::SUCCESS);
    bob.round_trip("after/reload", b"welcome");
}

/// A WebSocket client in a few lines: the upgrade, then MQTT in binary frames (masked with a
/// zero key, as a client must mask).
struct WsStream {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl WsStream {
    fn connect(address: &str, path: &str) -> Self {
        let mut stream = tcp(address);
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0_u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).unwrap();
            head.push(byte[0]);
        }
        let head = text(&head);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self {
            stream,
            pending: Vec::new(),
        }
    }
}

impl Read for WsStream {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            let mut header = [0_u8; 2];
            self.stream.read_exact(&mut header)?;
            let length = match header[1] & 0x7f {
                126 => {
                    let mut extended = [0_u8; 2];
                    self.stream.read_exact(&mut extended)?;
                    usize::from(u16::from_be_bytes(extended))
                }
                127 => panic!("unexpectedly large frame"),
                short => usize::from(short),
            };
            let mut payload = vec![0_u8; length];
            self.stream.read_exact(&mut payload)?;
            match header[0] & 0x0f {
                0x2 | 0x0 => self.pending = payload,
                0x8 => return Ok(0), // close
                _ => {}              // ping, pong, text: ignored
            }
        }
        let count = out.len().min(self.pending.len());
        out[..count].copy_from_slice(&self.pending[..count]);
        self.pending.drain(..count);
        Ok(count)
    }
}

impl Write for WsStream {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        assert!(data.len() < 126, "the test sends small packets only");
        let mut frame = vec![0x82, 0x80 | data.len() as u8, 0, 0, 0, 0];
        frame.extend_from_slice(data);
        self.stream.write_all(&frame)?;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.stream.flush()
    }
}

#[test]
fn websocket_listener_serves_mqtt() {
    let dir = temp_dir("ws");
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        "[[listeners]]\ntype = \"ws\"\nid = \"ws1\"\naddress = \"127.0.0.1:0\"\npath = \"/mqtt\"\n",
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let stream = WsStream::connect(broker.address("ws1"), "/mqtt");
    let (mut client, code) = Client::connect(stream, Protocol::V5, "ws", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("over/websocket", b"hello");
}
