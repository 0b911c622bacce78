//! Malformed packets and protocol errors after CONNACK: v5 clients get DISCONNECT with the
//! reason code, then a close; 3.x clients are just closed [MQTT-4.13.1-1].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use mqtt_broker::Options;
use mqtt_packets::{Packet, Protocol, QoS, ReasonCode};
use support::{Raw, publish};

const ABSENCE: Duration = Duration::from_millis(300);

/// Sends `bytes` from a v5 and from a 3.1.1 client: v5 gets DISCONNECT `code` then a close, 3.1.1
/// a close. Another client is not affected [MQTT-4.13.1-1].
async fn refused(bytes_v5: &[u8], bytes_v311: &[u8], code: ReasonCode) -> mqtt_broker::Server {
    let (server, addr) = support::start().await;
    let mut bystander = Raw::v5(addr, "bystander").await;
    let mut v5 = Raw::v5(addr, "bad5").await;
    v5.send_bytes(bytes_v5).await;
    v5.expect_disconnect(code).await;
    let mut v311 = Raw::v311(addr, "bad3").await;
    v311.send_bytes(bytes_v311).await;
    v311.expect_closed().await;
    bystander.ping().await;
    server
}

/// PUBREL with fixed-header flags 0000 instead of 0010 is malformed [MQTT-2.1.3-1]
/// [MQTT-3.6.1-1].
#[tokio::test]
async fn pubrel_with_wrong_flags_is_malformed() {
    let bytes = [0x60, 0x02, 0x00, 0x01];
    let server = refused(&bytes, &bytes, ReasonCode::MALFORMED_PACKET).await;
    assert_eq!(server.info().snapshot().protocol_errors, 2);
}

/// A topic that is not valid UTF-8 is malformed [MQTT-1.5.4-1] [MQTT-3.3.2-1].
#[tokio::test]
async fn bad_utf8_in_a_topic_is_malformed() {
    // PUBLISH QoS 0, topic C3 28 (invalid UTF-8), (v5: empty properties), payload "x".
    let v5 = [0x30, 0x06, 0x00, 0x02, 0xC3, 0x28, 0x00, b'x'];
    let v311 = [0x30, 0x05, 0x00, 0x02, 0xC3, 0x28, b'x'];
    refused(&v5, &v311, ReasonCode::MALFORMED_PACKET).await;
}

/// QoS 3 in a PUBLISH is malformed [MQTT-3.3.1-4].
#[tokio::test]
async fn qos_3_is_malformed() {
    // PUBLISH with QoS bits 11, topic "a", packet id 1, (v5: empty properties), payload "x".
    let v5 = [0x36, 0x07, 0x00, 0x01, b'a', 0x00, 0x01, 0x00, b'x'];
    let v311 = [0x36, 0x06, 0x00, 0x01, b'a', 0x00, 0x01, b'x'];
    refused(&v5, &v311, ReasonCode::MALFORMED_PACKET).await;
}

/// DUP 1 on a QoS 0 PUBLISH is a Protocol Error [MQTT-3.3.1-2].
#[tokio::test]
async fn dup_on_qos_0_is_a_protocol_error() {
    let v5 = [0x38, 0x05, 0x00, 0x01, b'a', 0x00, b'x'];
    let v311 = [0x38, 0x04, 0x00, 0x01, b'a', b'x'];
    refused(&v5, &v311, ReasonCode::PROTOCOL_ERROR).await;
}

/// A wildcard in a Topic Name is a Protocol Error [MQTT-3.3.2-2].
#[tokio::test]
async fn wildcard_in_a_topic_name_is_a_protocol_error() {
    let v5 = [0x30, 0x05, 0x00, 0x01, b'#', 0x00, b'x'];
    let v311 = [0x30, 0x04, 0x00, 0x01, b'#', b'x'];
    refused(&v5, &v311, ReasonCode::PROTOCOL_ERROR).await;
}

/// Packets only a server sends (here PINGRESP) are a Protocol Error.
#[tokio::test]
async fn server_packets_from_a_client_are_a_protocol_error() {
    let bytes = [0xD0, 0x00];
    refused(&bytes, &bytes, ReasonCode::PROTOCOL_ERROR).await;
}

/// A packet above the server's Maximum Packet Size is refused with DISCONNECT 0x95, decided from
/// the fixed header alone: the body is never sent [MQTT-3.2.2-15].
#[tokio::test]
async fn packet_too_large_is_refused_from_its_header() {
    let mut options = Options::default();
    options.capabilities.maximum_packet_size = 128;
    let (_server, addr) = support::start_with(options, true).await;
    let (mut raw, connack) = Raw::accepted(addr, support::connect(Protocol::V5, "big")).await;
    assert_eq!(
        connack.properties.maximum_packet_size.map(|m| m.get()),
        Some(128)
    );
    // A packet of exactly 128 bytes is fine: 2-byte header + 126 bytes body.
    let mut body = vec![0x00, 0x01, b'a', 0x00];
    body.resize(126, b'p');
    let mut exact = vec![0x30, 126];
    exact.extend_from_slice(&body);
    raw.send_bytes(&exact).await;
    raw.ping().await;
    // A PUBLISH announcing 1,000 bytes; only its fixed header is sent.
    raw.send_bytes(&[0x30, 0xE8, 0x07]).await;
    raw.expect_disconnect(ReasonCode::PACKET_TOO_LARGE).await;

    // 3.1.1: just closed.
    let mut v311 = Raw::v311(addr, "big311").await;
    v311.send_bytes(&[0x30, 0xE8, 0x07]).await;
    v311.expect_closed().await;
}

/// A client PUBLISH carrying a Subscription Identifier is a Protocol Error: DISCONNECT 0x82, and
/// it is not forwarded [MQTT-3.3.4-6].
#[tokio::test]
async fn publish_with_a_subscription_identifier_is_a_protocol_error() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("sid/t", QoS::AtMostOnce).await;
    let mut raw = Raw::v5(addr, "pub").await;
    let mut bad = publish("sid/t", b"x", QoS::AtMostOnce, false, 0);
    bad.properties
        .subscription_identifiers
        .push(NonZeroU32::new(1).unwrap());
    raw.send(bad.into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
}

/// A PUBLISH above the server's Maximum QoS: DISCONNECT 0x9B [MQTT-3.2.2-11].
#[tokio::test]
async fn publish_above_the_maximum_qos_is_refused() {
    let mut options = Options::default();
    options.capabilities.maximum_qos = QoS::AtLeastOnce;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "eager").await;
    assert_eq!(
        raw.publish_qos1("q/t", b"fine", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    raw.send(publish("q/t", b"too much", QoS::ExactlyOnce, false, 2).into())
        .await;
    raw.expect_disconnect(ReasonCode::QOS_NOT_SUPPORTED).await;
}

/// A Will QoS above the server's Maximum QoS: CONNACK 0x9B [MQTT-3.2.2-12].
#[tokio::test]
async fn will_qos_above_the_maximum_is_refused() {
    let mut options = Options::default();
    options.capabilities.maximum_qos = QoS::AtMostOnce;
    let (_server, addr) = support::start_with(options, true).await;
    let mut request = support::connect(Protocol::V5, "will-qos");
    let mut will = support::will("w/t", b"x");
    will.qos = QoS::AtLeastOnce;
    request.will = Some(will);
    let (mut raw, packet) = Raw::handshake(addr, request).await;
    assert_eq!(
        support::connack(packet).reason_code,
        ReasonCode::QOS_NOT_SUPPORTED
    );
    raw.expect_closed().await;
}

/// RETAIN 1 while Retain Available is 0: DISCONNECT 0x9A [MQTT-3.2.2-14].
#[tokio::test]
async fn retain_when_unavailable_is_refused() {
    let mut options = Options::default();
    options.capabilities.retain_available = false;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "retainer").await;
    raw.publish_qos0("r/t", b"x", true).await;
    raw.expect_disconnect(ReasonCode::RETAIN_NOT_SUPPORTED)
        .await;
}

/// More QoS 2 messages awaiting PUBREL than the server's Receive Maximum: DISCONNECT 0x93
/// [MQTT-3.3.4-7].
#[tokio::test]
async fn receive_maximum_exceeded() {
    let mut options = Options::default();
    options.capabilities.receive_maximum = 2;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "flood").await;
    for id in 1..=2 {
        raw.send(publish("rm/t", b"x", QoS::ExactlyOnce, false, id).into())
            .await;
        assert_eq!(raw.expect_pubrec().await.packet_id, support::pid(id));
    }
    raw.send(publish("rm/t", b"x", QoS::ExactlyOnce, false, 3).into())
        .await;
    raw.expect_disconnect(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        .await;
}

/// A client that pipelines far more QoS 2 messages than the Receive Maximum still reads the
/// DISCONNECT 0x93 [MQTT-3.3.4-7], and may go on writing (PUBREL for what it read) without a
/// reset: the server lingers, discarding input, until the client closes (Paho interoperability
/// `test_flow_control2`).
#[tokio::test]
async fn receive_maximum_exceeded_by_a_pipelining_client_is_reported() {
    let mut options = Options::default();
    options.capabilities.receive_maximum = 2;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "pipeline").await;
    let mut bytes = bytes::BytesMut::new();
    for id in 1..=200 {
        mqtt_packets::Packet::from(publish("rm/p", b"x", QoS::ExactlyOnce, false, id))
            .encode(Protocol::V5, &mut bytes)
            .unwrap();
    }
    raw.send_bytes(&bytes).await;
    for id in 1..=2 {
        assert_eq!(raw.expect_pubrec().await.packet_id, support::pid(id));
    }
    match raw.recv().await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::RECEIVE_MAXIMUM_EXCEEDED)
        }
        other => panic!("expected DISCONNECT 0x93, got {other:?}"),
    }
    for id in 1..=2 {
        raw.send(mqtt_packets::PubRel::new(support::pid(id)).into())
            .await;
    }
    raw.expect_closed().await;
}

/// A client may not publish to `$SYS/...`: v5 PUBACK 0x87, 3.1.1 a plain PUBACK, and nothing
/// is delivered [MQTT-4.7.2-1].
#[tokio::test]
async fn clients_cannot_publish_to_sys_topics() {
    let (server, addr) = support::start().await;
    let mut watcher = Raw::v5(addr, "watcher").await;
    watcher.subscribe("$SYS/test/#", QoS::AtMostOnce).await;
    let mut v5 = Raw::v5(addr, "faker5").await;
    assert_eq!(
        v5.publish_qos1("$SYS/test/x", b"fake", false).await,
        ReasonCode::NOT_AUTHORIZED
    );
    let mut v311 = Raw::v311(addr, "faker3").await;
    assert_eq!(
        v311.publish_qos1("$SYS/test/x", b"fake", false).await,
        ReasonCode::SUCCESS
    );
    // Nothing came through: the server's own message is the first one.
    server
        .publish("$SYS/test/x", "real", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&watcher.expect_publish().await.payload[..], b"real");
}

/// Clients cannot use `$` topics to talk to each other: subscribing is allowed, but another
/// client's PUBLISH to the topic is refused and never delivered [MQTT-4.7.2-1].
#[tokio::test]
async fn clients_cannot_talk_over_dollar_topics() {
    let (server, addr) = support::start().await;
    let mut listener = Raw::v5(addr, "listener").await;
    listener.subscribe("$app/chat", QoS::AtLeastOnce).await;
    let mut talker = Raw::v5(addr, "talker").await;
    assert_eq!(
        talker.publish_qos1("$app/chat", b"psst", false).await,
        ReasonCode::NOT_AUTHORIZED
    );
    talker.publish_qos0("$app/chat", b"psst0", false).await;
    talker.ping().await;
    server
        .publish("$app/chat", "from the server", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(
        &listener.expect_publish().await.payload[..],
        b"from the server"
    );
    assert_eq!(listener.try_recv(ABSENCE).await, None);
}

/// An AUTH packet without enhanced authentication is a Protocol Error (§4.12).
#[tokio::test]
async fn unexpected_auth_is_a_protocol_error() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "auth").await;
    raw.send_bytes(&[0xF0, 0x00]).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// A CONNECT with an Authentication Method is refused with 0x8C when enhanced authentication is
/// not offered [MQTT-4.12.0-1].
#[tokio::test]
async fn authentication_method_is_refused() {
    let (_server, addr) = support::start().await;
    let mut request = support::connect(Protocol::V5, "enhanced");
    request.properties.authentication_method = Some(support::s("SCRAM-SHA-1"));
    let (mut raw, packet) = Raw::handshake(addr, request).await;
    assert_eq!(
        support::connack(packet).reason_code,
        ReasonCode::BAD_AUTHENTICATION_METHOD
    );
    raw.expect_closed().await;
}

/// A malformed CONNECT (reserved flag set) is closed; a v5 server may send CONNACK 0x81 first
/// but never a success [MQTT-3.1.2-3] [MQTT-3.1.4-1].
#[tokio::test]
async fn malformed_connect_is_closed() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::connect(addr, Protocol::V5).await;
    // CONNECT "MQTT" 5, flags 0x03 (reserved bit set), keep alive 60, no properties, id "a".
    raw.send_bytes(&[
        0x10, 0x0E, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05, 0x03, 0x00, 0x3C, 0x00, 0x00, 0x01,
        b'a',
    ])
    .await;
    let packets = raw.closed().await;
    match &packets[..] {
        [] => {}
        [Packet::ConnAck(connack)] => assert!(connack.reason_code.is_error()),
        other => panic!("unexpected answer {other:?}"),
    }
}

/// Packets accepted before a protocol error in the same read are still acknowledged, before the
/// DISCONNECT: a QoS 1 and a QoS 2 PUBLISH, then a PUBLISH with a subscription identifier, all
/// in one write. The client must learn that the first two were taken [MQTT-4.3.2-4]
/// [MQTT-4.3.3-8] (and the subscriber gets them).
#[tokio::test]
async fn acks_of_a_read_go_out_before_a_protocol_error_in_it() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "acks-sub").await;
    subscriber.subscribe("acks/t", QoS::AtLeastOnce).await;
    let mut raw = Raw::v5(addr, "acks-pub").await;
    let mut bytes = bytes::BytesMut::new();
    let first = publish("acks/t", b"one", QoS::AtLeastOnce, false, 1);
    let second = publish("acks/t", b"two", QoS::ExactlyOnce, false, 2);
    let mut bad = publish("acks/t", b"x", QoS::AtMostOnce, false, 0);
    bad.properties
        .subscription_identifiers
        .push(NonZeroU32::new(1).unwrap());
    for packet in [Packet::from(first), second.into(), bad.into()] {
        packet.encode(Protocol::V5, &mut bytes).unwrap();
    }
    raw.send_bytes(&bytes).await;
    let puback = raw.expect_puback().await;
    assert_eq!(puback.packet_id.get(), 1);
    let pubrec = raw.expect_pubrec().await;
    assert_eq!(pubrec.packet_id.get(), 2);
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    assert_eq!(subscriber.expect_publish().await.payload.as_ref(), b"one");
    assert_eq!(subscriber.expect_publish().await.payload.as_ref(), b"two");
}
