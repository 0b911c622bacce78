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
use mqtt_broker::{AllowAllHook, ConnectionInfo, Options, Server};
use mqtt_packets::{Connect, DecodeContext, MqttString, Packet, Protocol, decode};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
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

// ----- Helpers added for the integration suite -----------------------------------------------

use std::future::Future;

use mqtt_broker::hooks::HookEvents;
use mqtt_broker::{ClientInfo, Hook};
use mqtt_packets::{
    ConnAck, ConnectProperties, Disconnect, PacketId, PubAck, PubComp, PubRec, PubRel, Publish,
    QoS, ReasonCode, SubAck, Subscribe, SubscribeProperties, Subscription, SubscriptionOptions,
    UnsubAck, Unsubscribe, Will,
};
use tokio::sync::mpsc;

/// A packet identifier from a non-zero number.
pub fn pid(n: u16) -> PacketId {
    PacketId::new(n).expect("non-zero packet id")
}

/// A CONNECT for a persistent v5 session: clean start as given, Session Expiry Interval 300.
pub fn persistent_v5(client_id: &str, clean_start: bool) -> Connect {
    let mut connect = connect(Protocol::V5, client_id);
    connect.clean_start = clean_start;
    connect.properties = ConnectProperties {
        session_expiry_interval: Some(300),
        ..ConnectProperties::default()
    };
    connect
}

/// A Will on `topic` with this payload at QoS 0, not retained.
pub fn will(topic: &str, payload: &'static [u8]) -> Will {
    Will {
        topic: s(topic),
        payload: bytes::Bytes::from_static(payload),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
    }
}

/// A PUBLISH on `topic`; `id` is used for QoS 1 and 2.
pub fn publish(topic: &str, payload: &[u8], qos: QoS, retain: bool, id: u16) -> Publish {
    let mut publish = Publish::new(s(topic), bytes::Bytes::copy_from_slice(payload));
    publish.qos = qos;
    publish.retain = retain;
    if qos != QoS::AtMostOnce {
        publish.packet_id = Some(pid(id));
    }
    publish
}

/// Subscription options at this QoS, everything else default.
pub fn options(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        maximum_qos: qos,
        ..SubscriptionOptions::default()
    }
}

/// The CONNACK in a packet, or a panic naming what came instead.
pub fn connack(packet: Packet) -> ConnAck {
    match packet {
        Packet::ConnAck(connack) => connack,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

impl Raw {
    /// Connects with a small receive buffer (for clients that stop reading).
    pub async fn connect_with_receive_buffer(
        addr: SocketAddr,
        protocol: Protocol,
        size: u32,
    ) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(size).unwrap();
        let stream = socket.connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        Self {
            stream,
            protocol,
            buf: BytesMut::new(),
        }
    }

    /// Handshake that must succeed; returns the client and its CONNACK.
    pub async fn accepted(addr: SocketAddr, connect: Connect) -> (Self, ConnAck) {
        let (raw, packet) = Self::handshake(addr, connect).await;
        let connack = connack(packet);
        assert_eq!(connack.reason_code, ReasonCode::SUCCESS, "{connack:?}");
        (raw, connack)
    }

    /// A connected v5 client with clean start.
    pub async fn v5(addr: SocketAddr, client_id: &str) -> Self {
        Self::accepted(addr, connect(Protocol::V5, client_id))
            .await
            .0
    }

    /// A connected 3.1.1 client with clean session.
    pub async fn v311(addr: SocketAddr, client_id: &str) -> Self {
        Self::accepted(addr, connect(Protocol::V3_1_1, client_id))
            .await
            .0
    }

    /// The next packet, which must arrive (a close fails the test).
    pub async fn next(&mut self) -> Packet {
        self.recv().await.expect("connection closed")
    }

    /// The next packet, which must be a PUBLISH.
    pub async fn expect_publish(&mut self) -> Publish {
        match self.next().await {
            Packet::Publish(publish) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBACK.
    pub async fn expect_puback(&mut self) -> PubAck {
        match self.next().await {
            Packet::PubAck(ack) => ack,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBREC.
    pub async fn expect_pubrec(&mut self) -> PubRec {
        match self.next().await {
            Packet::PubRec(ack) => ack,
            other => panic!("expected PUBREC, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBREL.
    pub async fn expect_pubrel(&mut self) -> PubRel {
        match self.next().await {
            Packet::PubRel(ack) => ack,
            other => panic!("expected PUBREL, got {other:?}"),
        }
    }

    /// The next packet, which must be a PUBCOMP.
    pub async fn expect_pubcomp(&mut self) -> PubComp {
        match self.next().await {
            Packet::PubComp(ack) => ack,
            other => panic!("expected PUBCOMP, got {other:?}"),
        }
    }

    /// Sends SUBSCRIBE and returns the SUBACK.
    pub async fn subscribe_packet(&mut self, subscribe: Subscribe) -> SubAck {
        let id = subscribe.packet_id;
        self.send(subscribe.into()).await;
        match self.next().await {
            Packet::SubAck(suback) => {
                assert_eq!(suback.packet_id, id);
                suback
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    /// Subscribes to one filter at this QoS and checks it was granted.
    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        self.subscribe_opts(filter, options(qos), None).await;
    }

    /// Subscribes to one filter with these options (and identifier); checks it was granted.
    pub async fn subscribe_opts(
        &mut self,
        filter: &str,
        options: SubscriptionOptions,
        identifier: Option<u32>,
    ) {
        let mut subscribe = Subscribe::new(
            pid(0xFF00),
            vec![Subscription {
                filter: s(filter),
                options,
            }],
        );
        subscribe.properties = SubscribeProperties {
            subscription_identifier: identifier.map(|i| std::num::NonZeroU32::new(i).unwrap()),
            ..SubscribeProperties::default()
        };
        let suback = self.subscribe_packet(subscribe).await;
        assert_eq!(
            suback.reason_codes,
            [ReasonCode::granted(options.maximum_qos)],
            "subscription to {filter}"
        );
    }

    /// Sends UNSUBSCRIBE and returns the UNSUBACK.
    pub async fn unsubscribe(&mut self, id: u16, filters: &[&str]) -> UnsubAck {
        let unsubscribe = Unsubscribe::new(pid(id), filters.iter().map(|f| s(f)).collect());
        self.send(unsubscribe.into()).await;
        match self.next().await {
            Packet::UnsubAck(unsuback) => {
                assert_eq!(unsuback.packet_id, pid(id));
                unsuback
            }
            other => panic!("expected UNSUBACK, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and returns the PUBACK's reason code.
    pub async fn publish_qos1(&mut self, topic: &str, payload: &[u8], retain: bool) -> ReasonCode {
        self.send(publish(topic, payload, QoS::AtLeastOnce, retain, 0xFE00).into())
            .await;
        let ack = self.expect_puback().await;
        assert_eq!(ack.packet_id, pid(0xFE00));
        ack.reason_code
    }

    /// Publishes at QoS 0 (no acknowledgement).
    pub async fn publish_qos0(&mut self, topic: &str, payload: &[u8], retain: bool) {
        self.send(publish(topic, payload, QoS::AtMostOnce, retain, 0).into())
            .await;
    }

    /// Waits for a PINGRESP: everything sent before it was processed by the server.
    pub async fn ping(&mut self) {
        self.send(Packet::PingReq).await;
        match self.next().await {
            Packet::PingResp => {}
            other => panic!("expected PINGRESP, got {other:?}"),
        }
    }

    /// Expects a DISCONNECT with this reason code, then the close.
    pub async fn expect_disconnect(&mut self, code: ReasonCode) {
        match self.recv().await {
            Some(Packet::Disconnect(Disconnect { reason_code, .. })) => {
                assert_eq!(reason_code, code, "DISCONNECT reason code")
            }
            other => panic!("expected DISCONNECT {code}, got {other:?}"),
        }
        self.expect_closed().await;
    }

    /// Expects the server to close the connection without sending anything more.
    pub async fn expect_closed(&mut self) {
        let rest = self.closed().await;
        assert!(rest.is_empty(), "packets before the close: {rest:?}");
    }

    /// Reads raw bytes until the server closes the connection.
    pub async fn raw_until_closed(&mut self) -> Vec<u8> {
        let mut bytes = self.buf.split().to_vec();
        tokio::time::timeout(TIMEOUT, async {
            let mut chunk = [0u8; 1024];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
        .expect("timed out waiting for the close");
        bytes
    }

    /// Sends DISCONNECT with this reason code.
    pub async fn disconnect(&mut self, code: ReasonCode) {
        self.send(Disconnect::new(code).into()).await;
    }
}

/// Polls `condition` until it holds (every 10 ms, up to `TIMEOUT`).
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(what, TIMEOUT, condition).await;
}

/// Polls `condition` until it holds (every 10 ms, up to `limit`).
pub async fn wait_until_within(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Awaits `future` with `limit`.
pub async fn within_limit<T>(limit: Duration, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future)
        .await
        .expect("timed out")
}

/// Awaits `future` with `TIMEOUT`.
pub async fn within<T>(future: impl Future<Output = T>) -> T {
    tokio::time::timeout(TIMEOUT, future)
        .await
        .expect("timed out")
}

/// A hook that reports the client id of every ended connection, after the server handled its
/// end (Will, session expiry): `on_disconnect` runs last.
struct DisconnectWatch(mpsc::UnboundedSender<String>);

impl Hook for DisconnectWatch {
    fn id(&self) -> &str {
        "disconnect-watch"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_DISCONNECT
    }

    fn on_disconnect(
        &self,
        client: &ClientInfo,
        _error: Option<&mqtt_broker::ConnectionError>,
        _expire: bool,
    ) {
        self.0.send(client.client_id.to_string()).ok();
    }
}

/// The ids of connections the server has finished with, in order.
pub struct Disconnects(mpsc::UnboundedReceiver<String>);

impl Disconnects {
    /// Waits until the server has finished with a connection of `client_id`.
    pub async fn wait_for(&mut self, client_id: &str) {
        within(async {
            loop {
                let id = self.0.recv().await.expect("hook dropped");
                if id == client_id {
                    return;
                }
            }
        })
        .await;
    }
}

/// Adds a hook that reports ended connections.
pub fn watch_disconnects(server: &Server) -> Disconnects {
    let (sender, receiver) = mpsc::unbounded_channel();
    server.add_hook(DisconnectWatch(sender)).unwrap();
    Disconnects(receiver)
}

/// A client over an in-memory stream served by `Server::serve_connection` (deterministic
/// under the paused clock), speaking the protocol of its CONNECT.
pub struct Duplex {
    pub stream: DuplexStream,
    buf: BytesMut,
    protocol: Protocol,
}

impl Duplex {
    /// Connects as a v5 client with a stream buffer of `buffer` bytes each way.
    pub async fn connect(server: &Server, id: &str, buffer: usize, receive_maximum: u16) -> Self {
        let mut packet = connect(Protocol::V5, id);
        packet.properties.receive_maximum = std::num::NonZeroU16::new(receive_maximum);
        let (client, answer) = Self::open(server, buffer, packet).await;
        connack(answer);
        client
    }

    /// Sends this CONNECT over a new stream; returns the client and its answer.
    pub async fn open(server: &Server, buffer: usize, connect: Connect) -> (Self, Packet) {
        let (client, served) = tokio::io::duplex(buffer);
        let server = server.clone();
        tokio::spawn(async move {
            server
                .serve_connection(served, ConnectionInfo::new("test", None))
                .await
        });
        let mut client = Self {
            stream: client,
            buf: BytesMut::new(),
            protocol: connect.protocol,
        };
        client.send(Packet::from(connect)).await;
        let answer = client.recv().await.expect("CONNACK");
        (client, answer)
    }

    pub async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` once the server closed the stream.
    pub async fn recv(&mut self) -> Option<Packet> {
        let context = DecodeContext::new(self.protocol);
        loop {
            if let Some(packet) = decode(&mut self.buf, &context).unwrap() {
                return Some(packet);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

    pub async fn subscribe(&mut self, filter: &str, qos: QoS) {
        let subscribe = Subscribe::new(
            PacketId::new(1).unwrap(),
            vec![Subscription {
                filter: MqttString::new(filter).unwrap(),
                options: options(qos),
            }],
        );
        self.send(subscribe.into()).await;
        match self.recv().await {
            Some(Packet::SubAck(_)) => {}
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }
}
