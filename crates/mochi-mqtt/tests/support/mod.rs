//! What the binary tests share: running `mochi` as a child process and a blocking MQTT client.
#![allow(dead_code, unreachable_pub)]
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

pub const TIMEOUT: Duration = Duration::from_secs(20);
pub const MOCHI: &str = env!("CARGO_BIN_EXE_mochi");

/// A fresh directory for one test's files.
pub fn temp_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "mochi-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn write_file(path: &Path, text: &str) {
    let mut file = std::fs::File::create(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
}

/// A running `mochi`, its standard output line by line, and the addresses it printed.
pub struct Broker {
    pub child: Child,
    pub lines: Receiver<String>,
    pub seen: Vec<String>,
    pub addresses: HashMap<String, String>,
}

impl Broker {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
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

    pub fn address(&self, id: &str) -> &str {
        self.addresses
            .get(id)
            .unwrap_or_else(|| panic!("no listener {id}: {:?}", self.seen))
    }

    pub fn wait_for_line(&mut self, predicate: impl Fn(&str) -> bool) -> String {
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

    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([format!("-{name}"), self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the process to end (its standard output closes), bounded.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
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
pub struct Client<S> {
    pub stream: S,
    pub protocol: Protocol,
    pub buffer: BytesMut,
}

impl<S: Read + Write> Client<S> {
    pub fn send(&mut self, packet: Packet) {
        let mut wire = BytesMut::new();
        packet.encode(self.protocol, &mut wire).unwrap();
        self.stream.write_all(&wire).unwrap();
    }

    /// The next packet; `None` when the server closed the connection.
    pub fn receive(&mut self) -> Option<Packet> {
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

    /// Sends this CONNECT and returns the CONNACK.
    pub fn connect_packet(stream: S, connect: Connect) -> (Self, mqtt_packets::ConnAck) {
        let mut client = Self {
            stream,
            protocol: connect.protocol,
            buffer: BytesMut::new(),
        };
        client.send(Packet::Connect(Box::new(connect)));
        match client.receive() {
            Some(Packet::ConnAck(connack)) => (client, connack),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// Sends CONNECT and returns the CONNACK's reason code.
    pub fn connect(
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
    pub fn round_trip(&mut self, topic: &str, payload: &[u8]) {
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

/// A plain HTTP GET (one request on a fresh connection); the whole response.
pub fn http_get(address: &str, path: &str) -> String {
    let mut http = tcp(address);
    http.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut response = String::new();
    http.read_to_string(&mut response).unwrap();
    response
}

pub fn tcp(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
}

pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(MOCHI);
    command.args(args).env_remove("RUST_LOG");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdin(Stdio::null()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
