//! Inbound topic aliases (MQTT 5, §3.3.2.3.4).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::num::NonZeroU16;

use mqtt_broker::Options;
use mqtt_packets::{Publish, QoS, ReasonCode};
use support::{Raw, s};

fn aliased(topic: &str, alias: u16, payload: &'static [u8]) -> Publish {
    let mut publish = Publish::new(s(topic), payload);
    publish.properties.topic_alias = NonZeroU16::new(alias);
    publish
}

/// An alias is set by a PUBLISH with a topic and used by one with an empty topic; subscribers
/// get the full topic and no Topic Alias.
#[tokio::test]
async fn alias_is_set_then_used() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("alias/#", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher
        .send(aliased("alias/long/topic", 3, b"1").into())
        .await;
    publisher.send(aliased("", 3, b"2").into()).await;
    // Re-pointing an alias to another topic.
    publisher.send(aliased("alias/other", 3, b"3").into()).await;
    publisher.send(aliased("", 3, b"4").into()).await;
    for (topic, payload) in [
        ("alias/long/topic", b"1"),
        ("alias/long/topic", b"2"),
        ("alias/other", b"3"),
        ("alias/other", b"4"),
    ] {
        let received = subscriber.expect_publish().await;
        assert_eq!(received.topic.as_str(), topic);
        assert_eq!(&received.payload[..], payload);
        assert_eq!(received.properties.topic_alias, None);
    }
}

/// An alias above the server's Topic Alias Maximum: DISCONNECT 0x94 [MQTT-3.3.2-9]
/// [MQTT-3.2.2-17].
#[tokio::test]
async fn alias_above_the_maximum_is_refused() {
    let mut options = Options::default();
    options.capabilities.topic_alias_maximum = 5;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "big").await;
    raw.send(aliased("a/b", 5, b"ok").into()).await;
    raw.ping().await;
    raw.send(aliased("a/b", 6, b"too big").into()).await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// With Topic Alias Maximum 0, any alias is refused with 0x94 [MQTT-3.2.2-18].
#[tokio::test]
async fn any_alias_is_refused_when_the_maximum_is_zero() {
    let mut options = Options::default();
    options.capabilities.topic_alias_maximum = 0;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "none").await;
    raw.send(aliased("a/b", 1, b"x").into()).await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// An empty topic with an alias that was never set: DISCONNECT 0x82 (§3.3.4).
#[tokio::test]
async fn unknown_alias_is_a_protocol_error() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "unknown").await;
    raw.send(aliased("", 9, b"x").into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// Topic Alias 0: DISCONNECT 0x94 [MQTT-3.3.2-8] (reported by the codec).
#[tokio::test]
async fn alias_zero_is_refused() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "zero").await;
    // PUBLISH QoS 0, topic "a", properties [0x23 0x0000], payload "x".
    raw.send_bytes(&[0x30, 0x08, 0x00, 0x01, b'a', 0x03, 0x23, 0x00, 0x00, b'x'])
        .await;
    raw.expect_disconnect(ReasonCode::TOPIC_ALIAS_INVALID).await;
}

/// Aliases belong to one network connection: a new connection starts with none, even when the
/// session is resumed [MQTT-3.3.2-7].
#[tokio::test]
async fn aliases_do_not_survive_the_connection() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut raw, _) = Raw::accepted(addr, support::persistent_v5("forgetful", true)).await;
    raw.send(aliased("a/b", 1, b"x").into()).await;
    raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
    raw.expect_closed().await;
    disconnects.wait_for("forgetful").await;
    let (mut raw, connack) = Raw::accepted(addr, support::persistent_v5("forgetful", false)).await;
    assert!(connack.session_present);
    raw.send(aliased("", 1, b"y").into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}
