//! CONNECT handling over loopback TCP: authentication defaults, client identifiers, protocol
//! levels, the connect timeout, CONNACK properties, Session Present, takeover, keep alive and
//! graceful shutdown.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::Options;
use mqtt_packets::{Packet, Protocol, QoS, ReasonCode};
use support::{Raw, connack, connect, persistent_v5, s};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

// ----- authentication ------------------------------------------------------------------------

/// Without an authentication hook every client is refused: v5 0x87 Not authorized, or 0x86 Bad
/// User Name or Password when credentials were given; the connection is then closed
/// [MQTT-3.2.2-7].
#[tokio::test]
async fn default_deny_all_v5() {
    let (_server, addr) = support::start_with(Options::default(), false).await;

    let (mut raw, packet) = Raw::handshake(addr, connect(Protocol::V5, "anon")).await;
    let refused = connack(packet);
    assert_eq!(refused.reason_code, ReasonCode::NOT_AUTHORIZED);
    assert!(!refused.session_present);
    raw.expect_closed().await;

    let mut with_user = connect(Protocol::V5, "user");
    with_user.username = Some(s("alice"));
    with_user.password = Some(bytes::Bytes::from_static(b"secret"));
    let (mut raw, packet) = Raw::handshake(addr, with_user).await;
    assert_eq!(
        connack(packet).reason_code,
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    raw.expect_closed().await;
}

/// The same for 3.1.1: return code 5 (not authorized) or 4 (bad user name or password).
#[tokio::test]
async fn default_deny_all_v311() {
    let (_server, addr) = support::start_with(Options::default(), false).await;

    let mut raw = Raw::connect(addr, Protocol::V3_1_1).await;
    raw.send(connect(Protocol::V3_1_1, "anon").into()).await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x05]);

    let mut with_user = connect(Protocol::V3_1_1, "user");
    with_user.username = Some(s("alice"));
    let mut raw = Raw::connect(addr, Protocol::V3_1_1).await;
    raw.send(with_user.into()).await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x04]);
}

// ----- client identifiers --------------------------------------------------------------------

/// An empty v5 client id gets a unique Assigned Client Identifier, with Clean Start 1 or 0
/// [MQTT-3.1.3-6] [MQTT-3.1.3-7] [MQTT-3.2.2-16].
#[tokio::test]
async fn empty_client_id_v5_is_assigned_one() {
    let (server, addr) = support::start().await;
    let (_a, first) = Raw::accepted(addr, connect(Protocol::V5, "")).await;
    let mut persistent = persistent_v5("", false);
    persistent.properties.session_expiry_interval = Some(60);
    let (_b, second) = Raw::accepted(addr, persistent).await;
    let first_id = first
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    let second_id = second
        .properties
        .assigned_client_identifier
        .expect("assigned id");
    assert!(!first_id.is_empty());
    assert_ne!(first_id, second_id);
    assert!(!second.session_present);
    let mut connected = server.connected_clients();
    connected.sort();
    let mut expected = vec![first_id.to_string(), second_id.to_string()];
    expected.sort();
    assert_eq!(connected, expected);
}

/// A client that sent its own id is not given one.
#[tokio::test]
async fn named_client_gets_no_assigned_identifier() {
    let (_server, addr) = support::start().await;
    let (_raw, connack) = Raw::accepted(addr, connect(Protocol::V5, "named")).await;
    assert_eq!(connack.properties.assigned_client_identifier, None);
}

/// 3.1.1: an empty client id is accepted with Clean Session 1 and refused with return code 2
/// with Clean Session 0 ([MQTT-3.1.3-7] and [MQTT-3.1.3-8] of 3.1.1).
#[tokio::test]
async fn empty_client_id_v311() {
    let (_server, addr) = support::start().await;
    let (mut raw, _) = Raw::accepted(addr, connect(Protocol::V3_1_1, "")).await;
    raw.ping().await;

    let mut persistent = connect(Protocol::V3_1_1, "");
    persistent.clean_start = false;
    let mut raw = Raw::connect(addr, Protocol::V3_1_1).await;
    raw.send(persistent.into()).await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x02]);
}

/// MQTT 3.1: client ids of 1 to 23 characters are accepted, longer ones refused with return
/// code 2 (identifier rejected).
#[tokio::test]
async fn v31_client_id_longer_than_23_is_refused() {
    let (_server, addr) = support::start().await;
    let (mut raw, _) = Raw::accepted(addr, connect(Protocol::V3_1, &"a".repeat(23))).await;
    raw.ping().await;

    let mut raw = Raw::connect(addr, Protocol::V3_1).await;
    raw.send(connect(Protocol::V3_1, &"b".repeat(24)).into())
        .await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x02]);
}

// ----- protocol level, first packet, timeout ------------------------------------------------

/// An unsupported protocol level is answered `20 02 00 01` (the 3.x layout any client parses),
/// then the connection is closed [MQTT-3.1.2-2].
#[tokio::test]
async fn unsupported_protocol_level_gets_return_code_1() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::connect(addr, Protocol::V5).await;
    // CONNECT, protocol "MQTT" level 6, clean start, keep alive 60, client id "a".
    raw.send_bytes(&[
        0x10, 0x0D, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x06, 0x02, 0x00, 0x3C, 0x00, 0x01, b'a',
    ])
    .await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x01]);
    assert!(server.connected_clients().is_empty());
}

/// A level below `minimum_protocol_version` is refused: 3.1.1 gets return code 1
/// [MQTT-3.1.2-2].
#[tokio::test]
async fn protocol_below_the_minimum_is_refused() {
    let mut options = Options::default();
    options.capabilities.minimum_protocol_version = 5;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::connect(addr, Protocol::V3_1_1).await;
    raw.send(connect(Protocol::V3_1_1, "old").into()).await;
    assert_eq!(raw.raw_until_closed().await, [0x20, 0x02, 0x00, 0x01]);
    let (mut raw, _) = Raw::accepted(addr, connect(Protocol::V5, "new")).await;
    raw.ping().await;
}

/// A first packet other than CONNECT closes the connection without a CONNACK [MQTT-3.1.0-1].
#[tokio::test]
async fn first_packet_not_connect_is_closed_without_connack() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::connect(addr, Protocol::V5).await;
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.raw_until_closed().await, Vec::<u8>::new());

    let mut raw = Raw::connect(addr, Protocol::V5).await;
    raw.send(support::publish("t", b"x", QoS::AtMostOnce, false, 0).into())
        .await;
    assert_eq!(raw.raw_until_closed().await, Vec::<u8>::new());
    assert!(server.info().snapshot().connections_refused >= 2);
}

/// A connection that sends nothing is closed after the connect timeout.
#[tokio::test]
async fn connect_timeout_closes_a_silent_connection() {
    let mut options = Options::default();
    options.connect_timeout = Duration::from_millis(200);
    let (_server, addr) = support::start_with(options, true).await;
    let started = Instant::now();
    let mut raw = Raw::connect(addr, Protocol::V5).await;
    assert_eq!(raw.raw_until_closed().await, Vec::<u8>::new());
    assert!(started.elapsed() >= Duration::from_millis(150));
}

/// A second CONNECT is a Protocol Error: v5 DISCONNECT 0x82 then close [MQTT-3.1.0-2].
#[tokio::test]
async fn second_connect_is_a_protocol_error_v5() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "twice").await;
    raw.send(connect(Protocol::V5, "twice").into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// A second CONNECT from a 3.1.1 client: the connection is closed, no packet sent
/// ([MQTT-3.1.0-2] of 3.1.1).
#[tokio::test]
async fn second_connect_closes_v311() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v311(addr, "twice").await;
    raw.send(connect(Protocol::V3_1_1, "twice").into()).await;
    raw.expect_closed().await;
}

// ----- CONNACK properties --------------------------------------------------------------------

/// The default CONNACK advertises Receive Maximum and Topic Alias Maximum, and leaves out what
/// is at its default (Maximum QoS 2, Retain Available, ...) [MQTT-3.2.2-9].
#[tokio::test]
async fn connack_advertises_default_capabilities() {
    let (_server, addr) = support::start().await;
    let (_raw, connack) = Raw::accepted(addr, connect(Protocol::V5, "caps")).await;
    let p = &connack.properties;
    assert_eq!(p.receive_maximum.map(|m| m.get()), Some(1024));
    assert_eq!(p.topic_alias_maximum, Some(64));
    assert_eq!(p.maximum_qos, None);
    assert_eq!(p.retain_available, None);
    assert_eq!(
        p.maximum_packet_size.map(|m| m.get()),
        Some(16 * 1024 * 1024)
    );
    assert_eq!(p.wildcard_subscription_available, None);
    assert_eq!(p.subscription_identifiers_available, None);
    assert_eq!(p.shared_subscription_available, None);
    assert_eq!(p.server_keep_alive, None);
    assert_eq!(p.session_expiry_interval, None);
}

/// Lowered capabilities are advertised as they are enforced [MQTT-3.2.2-9] (Maximum QoS),
/// Retain Available 0, Maximum Packet Size, the feature flags, Server Keep Alive and a capped
/// Session Expiry Interval.
#[tokio::test]
async fn connack_advertises_lowered_capabilities() {
    let mut options = Options::default();
    let caps = &mut options.capabilities;
    caps.maximum_qos = QoS::AtLeastOnce;
    caps.retain_available = false;
    caps.receive_maximum = 10;
    caps.topic_alias_maximum = 5;
    caps.maximum_packet_size = 4096;
    caps.wildcard_subscription_available = false;
    caps.subscription_identifiers_available = false;
    caps.shared_subscription_available = false;
    caps.server_keep_alive = Some(30);
    caps.maximum_session_expiry_interval = 60;
    let (_server, addr) = support::start_with(options, true).await;
    let mut request = connect(Protocol::V5, "low");
    request.properties.session_expiry_interval = Some(300);
    let (_raw, connack) = Raw::accepted(addr, request).await;
    let p = &connack.properties;
    assert_eq!(p.maximum_qos, Some(QoS::AtLeastOnce));
    assert_eq!(p.retain_available, Some(false));
    assert_eq!(p.receive_maximum.map(|m| m.get()), Some(10));
    assert_eq!(p.topic_alias_maximum, Some(5));
    assert_eq!(p.maximum_packet_size.map(|m| m.get()), Some(4096));
    assert_eq!(p.wildcard_subscription_available, Some(false));
    assert_eq!(p.subscription_identifiers_available, Some(false));
    assert_eq!(p.shared_subscription_available, Some(false));
    assert_eq!(p.server_keep_alive, Some(30));
    assert_eq!(p.session_expiry_interval, Some(60));
}

/// Topic Alias Maximum 0 is expressed by leaving the property out.
#[tokio::test]
async fn connack_without_topic_aliases() {
    let mut options = Options::default();
    options.capabilities.topic_alias_maximum = 0;
    let (_server, addr) = support::start_with(options, true).await;
    let (_raw, connack) = Raw::accepted(addr, connect(Protocol::V5, "noalias")).await;
    assert_eq!(connack.properties.topic_alias_maximum, None);
}

/// A connection beyond `maximum_clients` is refused with 0x89 Server busy.
#[tokio::test]
async fn maximum_clients_refuses_with_server_busy() {
    let mut options = Options::default();
    options.capabilities.maximum_clients = 1;
    let (_server, addr) = support::start_with(options, true).await;
    let (mut first, _) = Raw::accepted(addr, connect(Protocol::V5, "one")).await;
    let (mut raw, packet) = Raw::handshake(addr, connect(Protocol::V5, "two")).await;
    assert_eq!(connack(packet).reason_code, ReasonCode::SERVER_BUSY);
    raw.expect_closed().await;
    first.ping().await;
}

// ----- Session Present -----------------------------------------------------------------------

/// Clean Start 1 gives Session Present 0 [MQTT-3.2.2-2]; Clean Start 0 gives 1 exactly when a
/// session existed [MQTT-3.2.2-3].
#[tokio::test]
async fn session_present_flag_v5() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);

    // Clean Start 0 without a stored session: 0 [MQTT-3.1.2-6].
    let (mut raw, first) = Raw::accepted(addr, persistent_v5("sp", false)).await;
    assert!(!first.session_present);
    raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
    raw.expect_closed().await;
    disconnects.wait_for("sp").await;

    // The session (expiry 300) exists: 1.
    let (mut raw, second) = Raw::accepted(addr, persistent_v5("sp", false)).await;
    assert!(second.session_present);
    raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
    raw.expect_closed().await;
    disconnects.wait_for("sp").await;

    // Clean Start 1 discards it: 0 [MQTT-3.1.2-4].
    let (_raw, third) = Raw::accepted(addr, persistent_v5("sp", true)).await;
    assert!(!third.session_present);
}

/// A v5 session with Session Expiry 0 ends with the connection: no session to resume.
#[tokio::test]
async fn session_expiry_zero_leaves_no_session() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut raw = Raw::v5(addr, "brief").await;
    raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
    raw.expect_closed().await;
    disconnects.wait_for("brief").await;
    let mut again = connect(Protocol::V5, "brief");
    again.clean_start = false;
    let (_raw, connack) = Raw::accepted(addr, again).await;
    assert!(!connack.session_present);
}

/// 3.1.1: Clean Session 0 gives Session Present 1 when the session was stored
/// ([MQTT-3.2.2-2] and [MQTT-3.2.2-3] of 3.1.1).
#[tokio::test]
async fn session_present_flag_v311() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut persistent = connect(Protocol::V3_1_1, "sp311");
    persistent.clean_start = false;
    let (mut raw, first) = Raw::accepted(addr, persistent.clone()).await;
    assert!(!first.session_present);
    raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
    raw.expect_closed().await;
    disconnects.wait_for("sp311").await;
    let (_raw, second) = Raw::accepted(addr, persistent).await;
    assert!(second.session_present);
}

// ----- takeover ------------------------------------------------------------------------------

/// A second connection with the same client id takes over: the v5 one gets DISCONNECT 0x8E and
/// is closed, the new one works [MQTT-3.1.4-3].
#[tokio::test]
async fn takeover_v5_sends_session_taken_over() {
    let (server, addr) = support::start().await;
    let mut first = Raw::v5(addr, "dup").await;
    let mut second = Raw::v5(addr, "dup").await;
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
        .await;
    second.ping().await;
    second.subscribe("takeover/t", QoS::AtLeastOnce).await;
    assert_eq!(
        second.publish_qos1("takeover/t", b"hi", false).await,
        ReasonCode::SUCCESS
    );
    let publish = second.expect_publish().await;
    assert_eq!(&publish.payload[..], b"hi");
    assert_eq!(server.connected_clients(), ["dup"]);
}

/// A 3.1.1 connection that is taken over is just closed ([MQTT-3.1.4-2] of 3.1.1).
#[tokio::test]
async fn takeover_v311_closes_the_old_connection() {
    let (_server, addr) = support::start().await;
    let mut first = Raw::v311(addr, "dup311").await;
    let mut second = Raw::v311(addr, "dup311").await;
    first.expect_closed().await;
    second.ping().await;
}

// ----- keep alive ----------------------------------------------------------------------------

/// A maximum Keep Alive lowers a longer (or absent) client Keep Alive through Server Keep Alive
/// [MQTT-3.2.2-21], and leaves a shorter one alone (no Server Keep Alive in CONNACK).
#[tokio::test]
async fn maximum_keep_alive_caps_longer_keep_alives() {
    let mut options = Options::default();
    options.capabilities.maximum_keep_alive = Some(60);
    let (_server, addr) = support::start_with(options, true).await;
    for (asked, expected) in [(120, Some(60)), (0, Some(60)), (30, None), (60, None)] {
        let mut request = connect(Protocol::V5, "capped");
        request.keep_alive = asked;
        let (mut raw, connack) = Raw::accepted(addr, request).await;
        assert_eq!(
            connack.properties.server_keep_alive, expected,
            "client Keep Alive {asked}"
        );
        raw.disconnect(ReasonCode::SUCCESS).await;
        raw.expect_closed().await;
    }
    // A 3.1.1 client cannot be told, and keeps its own Keep Alive.
    let mut request = connect(Protocol::V3_1_1, "capped3");
    request.keep_alive = 120;
    let (_raw, connack) = Raw::accepted(addr, request).await;
    assert_eq!(connack.properties.server_keep_alive, None);
}

// ----- graceful close ------------------------------------------------------------------------

/// `Server::close` sends v5 clients DISCONNECT 0x8B, closes 3.1.1 clients, and returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_close_sends_server_shutting_down() {
    let (server, addr) = support::start().await;
    let mut v5 = Raw::v5(addr, "five").await;
    let mut v311 = Raw::v311(addr, "three").await;
    let closing = tokio::spawn({
        let server = server.clone();
        async move { server.close().await }
    });
    v5.expect_disconnect(ReasonCode::SERVER_SHUTTING_DOWN).await;
    v311.expect_closed().await;
    support::within(closing).await.unwrap();
    // No new connection is served: refused, or closed without a CONNACK.
    if let Ok(mut stream) = tokio::net::TcpStream::connect(addr).await {
        let mut out = bytes::BytesMut::new();
        Packet::from(connect(Protocol::V5, "late"))
            .encode(Protocol::V5, &mut out)
            .unwrap();
        stream.write_all(&out).await.ok();
        let mut answer = Vec::new();
        support::within(stream.read_to_end(&mut answer)).await.ok();
        assert!(answer.is_empty(), "answered after close: {answer:?}");
    }
}
