//! The debug hook's output over TCP, captured by a small `tracing` subscriber: one full QoS 2
//! exchange from a raw v5 publisher to a raw v5 subscriber.

#![allow(
    missing_docs,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_hook_debug::{DebugHook, DebugOptions, PayloadFormat};
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, PubComp, PubRec, PubRel,
    Publish, QoS, ReasonCode, Subscribe, Subscription, decode,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

const TIMEOUT: Duration = Duration::from_secs(10);

// ----- A subscriber that keeps the hook's events with their fields ------------------------------

/// One captured event: its level and its fields, each rendered as a string.
#[derive(Debug, Clone)]
struct Captured {
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

impl Captured {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

#[derive(Default)]
struct Capture {
    events: Mutex<Vec<Captured>>,
    next_span: AtomicU64,
}

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_string(), value.to_string());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_string(), format!("{value:?}"));
    }
}

/// Forwards to the shared capture, so one `&'static` capture serves the global dispatcher.
struct Forward(&'static Capture);

impl Subscriber for Forward {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.target().starts_with("mqtt_hook_debug")
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::TRACE)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.0.next_span.fetch_add(1, Ordering::Relaxed) + 1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.events.lock().push(Captured {
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// The process-wide capture, installed once as the global default subscriber.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture: &'static Capture = Box::leak(Box::default());
        tracing::subscriber::set_global_default(Forward(capture))
            .expect("no other global subscriber");
        capture
    })
}

/// The captured events of one client, in order.
fn events_of(client_id: &str) -> Vec<Captured> {
    capture()
        .events
        .lock()
        .iter()
        .filter(|event| event.get("client_id") == Some(client_id))
        .cloned()
        .collect()
}

/// Waits until `client_id` has an event with this direction and packet type; returns it.
async fn logged(client_id: &str, direction: &str, packet_type: &str) -> Captured {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let found = events_of(client_id).into_iter().find(|event| {
            event.get("direction") == Some(direction)
                && event.get("packet_type") == Some(packet_type)
        });
        if let Some(event) = found {
            return event;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {direction} {packet_type} logged for {client_id}: {:#?}",
            events_of(client_id)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ----- A raw client over our codec --------------------------------------------------------------

struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, client_id: &str) -> Self {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Self {
            stream,
            buf: BytesMut::new(),
        };
        let connect = Connect::new(Protocol::V5, s(client_id));
        raw.send(Packet::Connect(Box::new(connect))).await;
        match raw.next().await {
            Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::SUCCESS),
            other => panic!("expected CONNACK, got {other:?}"),
        }
        raw
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(Protocol::V5, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn next(&mut self) -> Packet {
        let context = DecodeContext::new(Protocol::V5);
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(packet) = decode(&mut self.buf, &context).unwrap() {
                    return packet;
                }
                let read = self.stream.read_buf(&mut self.buf).await.unwrap();
                assert!(read > 0, "server closed the connection");
            }
        })
        .await
        .expect("timed out waiting for a packet")
    }
}

fn s(text: &str) -> MqttString {
    MqttString::new(text).unwrap()
}

fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

/// Checks the fields of one event: each `(name, Some(value))` must be there with that value,
/// each `(name, None)` must be absent.
#[track_caller]
fn check(event: &Captured, expected: &[(&str, Option<&str>)]) {
    assert_eq!(event.level, tracing::Level::DEBUG, "{event:#?}");
    for (name, value) in expected {
        assert_eq!(event.get(name), *value, "field {name} of {event:#?}");
    }
}

/// A server on an ephemeral loopback port with the allow-all hook and a debug hook.
async fn start(options: DebugOptions) -> (Server, SocketAddr) {
    capture();
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook).unwrap();
    server.add_hook(DebugHook::new(options)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("tcp", listener).await });
    (server, addr)
}

#[tokio::test(flavor = "current_thread")]
async fn logs_a_full_qos2_exchange_in_order() {
    let options = DebugOptions::default()
        .payload(PayloadFormat::Text)
        .max_payload_bytes(8);
    let (server, addr) = start(options).await;

    // The subscriber, at QoS 2.
    let mut subscriber = Raw::connect(addr, "dbg-sub").await;
    subscriber
        .send(
            Subscribe::new(
                pid(1),
                vec![Subscription::new(s("debug/#"), QoS::ExactlyOnce)],
            )
            .into(),
        )
        .await;
    match subscriber.next().await {
        Packet::SubAck(suback) => assert_eq!(suback.reason_codes, [ReasonCode::GRANTED_QOS_2]),
        other => panic!("expected SUBACK, got {other:?}"),
    }
    logged("dbg-sub", "out", "SUBACK").await;

    // The publisher: PUBLISH, PUBREC, PUBREL, PUBCOMP. Each step waits for the previous one to
    // be logged, so the order of the log is the order of the exchange.
    let mut publisher = Raw::connect(addr, "dbg-pub").await;
    // A PINGREQ / PINGRESP that the default options hide.
    publisher.send(Packet::PingReq).await;
    assert_eq!(publisher.next().await, Packet::PingResp);
    let mut publish = Publish::new(s("debug/qos2"), Bytes::from_static(b"hello, debug hook"));
    publish.qos = QoS::ExactlyOnce;
    publish.packet_id = Some(pid(42));
    publish.properties.message_expiry_interval = Some(120);
    publisher.send(publish.into()).await;
    match publisher.next().await {
        Packet::PubRec(rec) => assert_eq!(rec.packet_id, pid(42)),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    logged("dbg-pub", "out", "PUBREC").await;
    publisher.send(PubRel::new(pid(42)).into()).await;
    match publisher.next().await {
        Packet::PubComp(comp) => assert_eq!(comp.packet_id, pid(42)),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    logged("dbg-pub", "out", "PUBCOMP").await;

    // The delivery to the subscriber, and its own QoS 2 flow.
    let delivered = match subscriber.next().await {
        Packet::Publish(publish) => publish,
        other => panic!("expected PUBLISH, got {other:?}"),
    };
    assert_eq!(delivered.qos, QoS::ExactlyOnce);
    let id = delivered
        .packet_id
        .expect("a QoS 2 delivery has a packet id");
    logged("dbg-sub", "out", "PUBLISH").await;
    subscriber.send(PubRec::new(id).into()).await;
    match subscriber.next().await {
        Packet::PubRel(rel) => assert_eq!(rel.packet_id, id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    logged("dbg-sub", "out", "PUBREL").await;
    subscriber.send(PubComp::new(id).into()).await;
    logged("dbg-sub", "in", "PUBCOMP").await;

    // The publisher's log, in order, with the ping hidden.
    let publisher_log = events_of("dbg-pub");
    let sequence: Vec<(&str, &str)> = publisher_log
        .iter()
        .map(|e| (e.get("direction").unwrap(), e.get("packet_type").unwrap()))
        .collect();
    assert_eq!(
        sequence,
        [
            ("in", "CONNECT"),
            ("out", "CONNACK"),
            ("in", "PUBLISH"),
            ("out", "PUBREC"),
            ("in", "PUBREL"),
            ("out", "PUBCOMP"),
        ],
        "{publisher_log:#?}"
    );
    check(
        &publisher_log[0],
        &[
            ("client_id", Some("dbg-pub")),
            ("protocol_level", Some("5")),
            ("clean_start", Some("true")),
            ("password", None),
        ],
    );
    check(
        &publisher_log[1],
        &[
            ("reason_code", Some("0x00 (Success)")),
            ("session_present", Some("false")),
        ],
    );
    check(
        &publisher_log[2],
        &[
            ("client_id", Some("dbg-pub")),
            ("direction", Some("in")),
            ("packet_type", Some("PUBLISH")),
            ("packet_id", Some("42")),
            ("topic", Some("debug/qos2")),
            ("qos", Some("2")),
            ("retain", Some("false")),
            ("dup", Some("false")),
            ("properties", Some("message_expiry_interval=120")),
            ("payload_len", Some("17")),
            ("payload", Some("hello, d... [9 more bytes]")),
            ("reason_code", None),
            ("message", Some("in PUBLISH")),
        ],
    );
    for (event, direction, packet_type) in [
        (&publisher_log[3], "out", "PUBREC"),
        (&publisher_log[4], "in", "PUBREL"),
        (&publisher_log[5], "out", "PUBCOMP"),
    ] {
        check(
            event,
            &[
                ("client_id", Some("dbg-pub")),
                ("direction", Some(direction)),
                ("packet_type", Some(packet_type)),
                ("packet_id", Some("42")),
                ("reason_code", Some("0x00 (Success)")),
                ("topic", None),
                ("qos", None),
                ("payload", None),
            ],
        );
    }

    // The subscriber's log, in order.
    let subscriber_log = events_of("dbg-sub");
    let sequence: Vec<(&str, &str)> = subscriber_log
        .iter()
        .map(|e| (e.get("direction").unwrap(), e.get("packet_type").unwrap()))
        .collect();
    assert_eq!(
        sequence,
        [
            ("in", "CONNECT"),
            ("out", "CONNACK"),
            ("in", "SUBSCRIBE"),
            ("out", "SUBACK"),
            ("out", "PUBLISH"),
            ("in", "PUBREC"),
            ("out", "PUBREL"),
            ("in", "PUBCOMP"),
        ],
        "{subscriber_log:#?}"
    );
    check(
        &subscriber_log[2],
        &[
            ("packet_id", Some("1")),
            ("filters", Some("debug/# (QoS 2)")),
        ],
    );
    check(
        &subscriber_log[3],
        &[
            ("packet_id", Some("1")),
            ("reason_codes", Some("0x02 (Granted QoS 2)")),
        ],
    );
    let id = id.get().to_string();
    check(
        &subscriber_log[4],
        &[
            ("client_id", Some("dbg-sub")),
            ("direction", Some("out")),
            ("packet_id", Some(id.as_str())),
            ("topic", Some("debug/qos2")),
            ("qos", Some("2")),
            ("retain", Some("false")),
            ("dup", Some("false")),
            ("payload_len", Some("17")),
            ("payload", Some("hello, d... [9 more bytes]")),
        ],
    );
    for (event, direction, packet_type) in [
        (&subscriber_log[5], "in", "PUBREC"),
        (&subscriber_log[6], "out", "PUBREL"),
        (&subscriber_log[7], "in", "PUBCOMP"),
    ] {
        check(
            event,
            &[
                ("direction", Some(direction)),
                ("packet_type", Some(packet_type)),
                ("packet_id", Some(id.as_str())),
                ("reason_code", Some("0x00 (Success)")),
            ],
        );
    }

    // The delivered message is the one published: the hook changed nothing.
    assert_eq!(delivered.topic, "debug/qos2");
    assert_eq!(delivered.payload, Bytes::from_static(b"hello, debug hook"));
    assert!(!delivered.dup && !delivered.retain);

    server.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn pings_and_hex_payloads_when_asked() {
    let options = DebugOptions::default()
        .payload(PayloadFormat::Hex)
        .hide_pings(false);
    let (server, addr) = start(options).await;
    let mut client = Raw::connect(addr, "dbg-ping").await;
    client.send(Packet::PingReq).await;
    assert_eq!(client.next().await, Packet::PingResp);
    logged("dbg-ping", "out", "PINGRESP").await;
    let publish = Publish::new(s("debug/hex"), Bytes::from_static(b"\x00\xffA"));
    client.send(publish.into()).await;
    let event = logged("dbg-ping", "in", "PUBLISH").await;
    check(
        &event,
        &[
            ("topic", Some("debug/hex")),
            ("qos", Some("0")),
            ("packet_id", None),
            ("payload_len", Some("3")),
            ("payload", Some("00ff41")),
        ],
    );
    let sequence: Vec<String> = events_of("dbg-ping")
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e.get("direction").unwrap(),
                e.get("packet_type").unwrap()
            )
        })
        .collect();
    assert_eq!(
        sequence,
        [
            "in CONNECT",
            "out CONNACK",
            "in PINGREQ",
            "out PINGRESP",
            "in PUBLISH"
        ]
    );
    server.close().await;
}
