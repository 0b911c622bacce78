//! Shared helpers for the broker's integration tests: a server on an ephemeral loopback port,
//! and a raw MQTT client that speaks bytes through our codec.

#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::{Connect, DecodeContext, MqttString, Packet, Protocol, decode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long any single expected event may take before a test fails.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A running server with the allow-all hook.
pub async fn start() -> (Server, SocketAddr) {
    start_with(Options::default(), true).await
}

/// A running server with these options, with or without the allow-all hook.
pub async fn start_with(options: Options, allow_all: bool) -> (Server, SocketAddr) {
    let server = Server::new(options);
    if allow_all {
        server.add_hook(AllowAllHook).unwrap();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("tcp", listener).await });
    (server, addr)
}

/// A raw client: writes packets (or bytes) and reads packets, with timeouts.
pub struct Raw {
    pub stream: TcpStream,
    pub protocol: Protocol,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(addr: SocketAddr, protocol: Protocol) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            protocol,
            buf: BytesMut::new(),
        }
    }

    /// Connects and sends CONNECT, returning the CONNACK.
    pub async fn handshake(addr: SocketAddr, connect: Connect) -> (Self, Packet) {
        let mut raw = Self::connect(addr, connect.protocol).await;
        raw.send(connect.into()).await;
        let connack = raw.recv().await.expect("CONNACK");
        (raw, connack)
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next packet; `None` when the server closed the connection. Panics after `TIMEOUT`.
    pub async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(TIMEOUT, self.recv_inner())
            .await
            .expect("timed out waiting for a packet")
    }

    /// The next packet within `wait`, if any.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Packet> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .ok()
            .flatten()
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        let context = DecodeContext::new(self.protocol);
        loop {
            if let Some(packet) = decode(&mut self.buf, &context).expect("server sent a bad packet")
            {
                return Some(packet);
            }
            let read = self.stream.read_buf(&mut self.buf).await.ok()?;
            if read == 0 {
                return None;
            }
        }
    }

    /// Waits for the server to close the connection, returning the packets sent before.
    pub async fn closed(&mut self) -> Vec<Packet> {
        let mut packets = Vec::new();
        while let Some(packet) = self.recv().await {
            packets.push(packet);
        }
        packets
    }
}

/// A CONNECT with clean start and keep alive 60.
pub fn connect(protocol: Protocol, client_id: &str) -> Connect {
    Connect::new(protocol, MqttString::new(client_id).unwrap())
}

pub fn s(text: &str) -> MqttString {
    MqttString::new(text).unwrap()
}
