//! The `mochi` binary run as a user would: config files, environment overrides, listeners,
//! signals. Every wait is bounded and the child is always killed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;

use mqtt_packets::{Packet, Protocol, ReasonCode};
use support::*;

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

    let response = http_get(broker.address("stats"), "/healthz");
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
/// zero key, as a client must mask), over TCP or TLS.
struct WsStream<S> {
    stream: S,
    pending: Vec<u8>,
}

impl WsStream<TcpStream> {
    fn connect(address: &str, path: &str) -> Self {
        Self::over(tcp(address), address, path)
    }
}

/// Sends a WebSocket upgrade request (with this `Origin` header, as a browser would, when
/// given); returns the response head.
fn ws_upgrade<S: Read + Write>(
    stream: &mut S,
    address: &str,
    path: &str,
    origin: Option<&str>,
) -> String {
    let origin = origin
        .map(|origin| format!("Origin: {origin}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: mqtt\r\n{origin}\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0_u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    text(&head)
}

impl<S: Read + Write> WsStream<S> {
    fn over(stream: S, address: &str, path: &str) -> Self {
        Self::with_origin(stream, address, path, None)
    }

    fn with_origin(mut stream: S, address: &str, path: &str, origin: Option<&str>) -> Self {
        let head = ws_upgrade(&mut stream, address, path, origin);
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        Self {
            stream,
            pending: Vec::new(),
        }
    }
}

impl<S: Read + Write> Read for WsStream<S> {
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

impl<S: Read + Write> Write for WsStream<S> {
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

#[test]
fn websocket_listeners_refuse_browser_origins_they_do_not_list() {
    let dir = temp_dir("origins");
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        "[[listeners]]\ntype = \"ws\"\nid = \"ws1\"\naddress = \"127.0.0.1:0\"\n\n\
         [[listeners]]\ntype = \"ws\"\nid = \"ws2\"\naddress = \"127.0.0.1:0\"\n\
         allowed_origins = [\"https://app.example\"]\nmaximum_message_size = 65536\n",
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let status = |id: &str, origin: Option<&str>| {
        let address = broker.address(id);
        let head = ws_upgrade(&mut tcp(address), address, "/", origin);
        head.lines().next().unwrap_or_default().to_owned()
    };
    // By default: a web page from anywhere is refused (cross-site WebSocket hijacking)...
    assert!(status("ws1", Some("https://evil.example")).starts_with("HTTP/1.1 403"));
    assert!(status("ws1", Some("https://app.example")).starts_with("HTTP/1.1 403"));
    // ...and a client that sends no Origin (not a browser) is served.
    let stream = WsStream::connect(broker.address("ws1"), "/");
    let (mut client, code) = Client::connect(stream, Protocol::V5, "device", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("no/origin", b"hello");

    // A listed origin is served; others are not.
    assert!(status("ws2", Some("https://evil.example")).starts_with("HTTP/1.1 403"));
    let address = broker.address("ws2");
    let stream = WsStream::with_origin(tcp(address), address, "/", Some("https://app.example"));
    let (mut client, code) = Client::connect(stream, Protocol::V5, "page", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("listed/origin", b"hello");
}

/// A CA, a server certificate for `localhost` and a client certificate, both issued by it.
struct Pki {
    ca: rcgen::Certificate,
    server: rcgen::Certificate,
    server_key: rcgen::KeyPair,
    client: rcgen::Certificate,
    client_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair,
        };
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "mochi test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().unwrap();
        let mut server_params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server_params.signed_by(&server_key, &issuer).unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec!["device-1".to_owned()]).unwrap();
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client_params.signed_by(&client_key, &issuer).unwrap();
        Self {
            ca,
            server,
            server_key,
            client,
            client_key,
        }
    }

    /// A TLS client to `address` trusting the CA, with the client certificate or without.
    fn connect(
        &self,
        address: &str,
        with_certificate: bool,
    ) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = if with_certificate {
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.client_key.serialize_der().into());
            builder
                .with_client_auth_cert(vec![self.client.der().clone()], key)
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        rustls::StreamOwned::new(connection, tcp(address))
    }
}

#[test]
fn a_tls_client_ca_requires_a_client_certificate_unless_made_optional() {
    let dir = temp_dir("mtls");
    let pki = Pki::new();
    let (cert, key, ca) = (
        dir.join("cert.pem"),
        dir.join("key.pem"),
        dir.join("ca.pem"),
    );
    write_file(&cert, &pki.server.pem());
    write_file(&key, &pki.server_key.serialize_pem());
    write_file(&ca, &pki.ca.pem());
    let config = dir.join("mochi.toml");
    let listener = |id: &str, extra: &str| {
        format!(
            "[[listeners]]\ntype = \"tls\"\nid = \"{id}\"\naddress = \"127.0.0.1:0\"\n\
             tls_cert = \"{}\"\ntls_key = \"{}\"\ntls_client_ca = \"{}\"\n{extra}\n",
            cert.display(),
            key.display(),
            ca.display()
        )
    };
    write_file(
        &config,
        &format!(
            "{}{}",
            listener("required", ""),
            listener("optional", "tls_client_certificate_required = false")
        ),
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);

    // With a CA and nothing else said, a client without a certificate gets no CONNACK.
    let mut stream = pki.connect(broker.address("required"), false);
    let connect = [
        0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 1, b'x',
    ];
    let refused = stream
        .write_all(&connect)
        .and_then(|()| stream.flush())
        .and_then(|()| {
            let mut byte = [0_u8; 1];
            stream.read(&mut byte)
        });
    assert!(
        matches!(refused, Err(_) | Ok(0)),
        "a client without a certificate was served: {refused:?}"
    );
    let stream = pki.connect(broker.address("required"), true);
    let (mut client, code) = Client::connect(stream, Protocol::V5, "with-cert", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("mtls/required", b"hello");

    // `tls_client_certificate_required = false` makes it optional.
    let stream = pki.connect(broker.address("optional"), false);
    let (mut client, code) = Client::connect(stream, Protocol::V5, "no-cert", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("mtls/optional", b"hello");
}

/// One GET on a fresh connection, with basic credentials when given; the whole response (empty
/// when the server closes at once).
fn http_get_as(address: &str, path: &str, credentials: Option<&str>) -> String {
    let mut http = tcp(address);
    let authorization = credentials
        .map(|encoded| format!("Authorization: Basic {encoded}\r\n"))
        .unwrap_or_default();
    let _ = http.write_all(
        format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\n{authorization}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    let mut response = Vec::new();
    let _ = http.read_to_end(&mut response);
    text(&response)
}

#[test]
fn http_listener_basic_auth_and_connection_limit() {
    let dir = temp_dir("http-auth");
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        "[[listeners]]\ntype = \"http\"\nid = \"stats\"\naddress = \"127.0.0.1:0\"\n\
         basic_auth = { username = \"admin\", password = \"s3cret\" }\n\n\
         [[listeners]]\ntype = \"http\"\nid = \"capped\"\naddress = \"127.0.0.1:0\"\n\
         maximum_connections = 1\n",
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let address = broker.address("stats");
    // "admin:s3cret" and "admin:wrong" in base64.
    let (good, bad) = ("YWRtaW46czNjcmV0", "YWRtaW46d3Jvbmc=");
    assert!(http_get_as(address, "/api/sysinfo", None).starts_with("HTTP/1.1 401"));
    assert!(http_get_as(address, "/metrics", Some(bad)).starts_with("HTTP/1.1 401"));
    let response = http_get_as(address, "/api/sysinfo", Some(good));
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The health check stays open to probes.
    assert!(http_get_as(address, "/healthz", None).starts_with("HTTP/1.1 200"));

    let address = broker.address("capped");
    // One connection open at once: while one is held (served, kept alive), the next is closed
    // unanswered. The held one is tried again while an earlier connection's place is still
    // being given back.
    let deadline = std::time::Instant::now() + TIMEOUT;
    let held = loop {
        let mut held = tcp(address);
        held.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let mut response = Vec::new();
        let mut byte = [0_u8; 1];
        while !response.ends_with(b"\r\n\r\nok\n") {
            match held.read(&mut byte) {
                Ok(1) => response.push(byte[0]),
                _ => break,
            }
        }
        if response.ends_with(b"\r\n\r\nok\n") {
            break held;
        }
        assert!(std::time::Instant::now() < deadline, "never served");
    };
    assert_eq!(http_get_as(address, "/healthz", None), "");
    drop(held);
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let response = http_get_as(address, "/healthz", None);
        if response.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the held connection's place was never freed"
        );
    }
}

#[test]
fn a_ledger_that_only_allows_is_warned_about() {
    let dir = temp_dir("fails-open");
    let config = dir.join("mochi.toml");
    let ledger = |extra: &str| {
        format!(
            "[[listeners]]\ntype = \"tcp\"\nid = \"t1\"\naddress = \"127.0.0.1:0\"\n\
             [hooks.auth]\nallow_all = false\n[hooks.auth.ledger]\n{extra}\
             auth = [{{ remote = \"127.0.0.1\", allow = true }}]\n\
             acl = [{{ client = \"worker-*\", filters = {{ \"jobs/#\" = \"read\" }} }}]\n"
        )
    };
    let warned = |broker: &Broker| {
        broker
            .seen
            .iter()
            .any(|line| line.starts_with("WARNING: auth: the ledger's ACL only allows"))
    };
    write_file(&config, &ledger(""));
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    assert!(warned(&broker), "{:?}", broker.seen);
    drop(broker);

    write_file(&config, &ledger("deny_by_default = true\n"));
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    assert!(!warned(&broker), "{:?}", broker.seen);
}

/// A client TLS stream to `address` that trusts only `cert` (for the name `localhost`).
fn tls(
    address: &str,
    cert: &rcgen::Certificate,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let connection = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    rustls::StreamOwned::new(connection, tcp(address))
}

#[test]
fn tls_and_secure_websocket_listeners_serve_mqtt() {
    let dir = temp_dir("tls");
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    write_file(&cert, &certified.cert.pem());
    write_file(&key, &certified.signing_key.serialize_pem());
    let config = dir.join("mochi.toml");
    write_file(
        &config,
        &format!(
            "[[listeners]]\ntype = \"tls\"\nid = \"tls1\"\naddress = \"127.0.0.1:0\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n\n\
             [[listeners]]\ntype = \"wss\"\nid = \"wss1\"\naddress = \"127.0.0.1:0\"\n\
             tls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
            cert = cert.to_str().unwrap(),
            key = key.to_str().unwrap(),
        ),
    );
    let broker = Broker::start(&["--config", config.to_str().unwrap()], &[]);
    let stream = tls(broker.address("tls1"), &certified.cert);
    let (mut client, code) = Client::connect(stream, Protocol::V5, "over-tls", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("over/tls", b"hello");

    let address = broker.address("wss1");
    let stream = WsStream::over(tls(address, &certified.cert), address, "/");
    let (mut client, code) = Client::connect(stream, Protocol::V3_1_1, "over-wss", None);
    assert_eq!(code, ReasonCode::SUCCESS);
    client.round_trip("over/wss", b"hello");
}

/// `docs/CONFIG.md` shows the output of `mochi --print-config` of a default build; it must stay
/// true to the code. (A build with the `rocksdb` or `redis` feature prints their sections too;
/// they are left out of the comparison.)
#[test]
fn config_reference_shows_the_effective_default_configuration() {
    let output = run_to_end(&["--print-config"], &[]);
    assert!(output.status.success());
    let mut printed: toml::Table = toml::from_str(&text(&output.stdout)).unwrap();
    if let Some(storage) = printed
        .get_mut("hooks")
        .and_then(|hooks| hooks.get_mut("storage"))
        .and_then(toml::Value::as_table_mut)
    {
        storage.remove("rocksdb");
        storage.remove("redis");
    }
    let mut reference = String::new();
    std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/CONFIG.md"))
        .unwrap()
        .read_to_string(&mut reference)
        .unwrap();
    let section = reference
        .split("## The effective default configuration")
        .nth(1)
        .expect("the section exists");
    let block = section
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a toml block");
    let documented: toml::Table = toml::from_str(block).unwrap();
    assert_eq!(
        documented, printed,
        "docs/CONFIG.md is out of date: update its default configuration from \
         `cargo run -q -p mochi-mqtt -- --print-config`"
    );
}
