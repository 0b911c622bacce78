//! Messages between clients of different protocol levels: properties are dropped for 3.x
//! subscribers, and 3.x messages reach v5 subscribers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use mqtt_packets::{PayloadFormatIndicator, Protocol, QoS, UserProperty};
use support::{Raw, connect, publish, s};

/// A v5 PUBLISH with properties reaches a 3.1.1 subscriber as a plain PUBLISH: the property
/// bytes are not written (the 3.1.1 decoder would otherwise read them as payload).
#[tokio::test]
async fn v5_to_v311_drops_properties() {
    let (_server, addr) = support::start().await;
    let mut old = Raw::v311(addr, "old").await;
    old.subscribe("mixed/t", QoS::AtLeastOnce).await;
    let mut new = Raw::v5(addr, "new").await;
    let mut message = publish("mixed/t", b"payload", QoS::AtLeastOnce, false, 1);
    message.properties.user_properties = vec![UserProperty::new(s("k"), s("v"))].into();
    message.properties.content_type = Some(s("text/plain"));
    message.properties.payload_format_indicator = Some(PayloadFormatIndicator::Utf8);
    message.properties.message_expiry_interval = Some(300);
    message.properties.response_topic = Some(s("mixed/reply"));
    new.send(message.into()).await;
    new.expect_puback().await;
    let received = old.expect_publish().await;
    assert_eq!(received.topic.as_str(), "mixed/t");
    assert_eq!(&received.payload[..], b"payload");
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert!(received.properties.is_empty());
}

/// A v5 subscriber gets the properties of a v5 publisher (User Properties in order, expiry
/// counted down) [MQTT-3.3.2-17] [MQTT-3.3.2-18].
#[tokio::test]
async fn v5_to_v5_forwards_properties() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("props/t", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    let mut message = publish("props/t", b"p", QoS::AtMostOnce, false, 0);
    message.properties.user_properties = vec![
        UserProperty::new(s("b"), s("1")),
        UserProperty::new(s("a"), s("2")),
    ]
    .into();
    message.properties.content_type = Some(s("text/plain"));
    message.properties.correlation_data = Some(bytes::Bytes::from_static(b"corr"));
    message.properties.message_expiry_interval = Some(300);
    publisher.send(message.clone().into()).await;
    let received = subscriber.expect_publish().await;
    assert_eq!(
        received.properties.user_properties,
        message.properties.user_properties
    );
    assert_eq!(
        received.properties.content_type,
        message.properties.content_type
    );
    assert_eq!(
        received.properties.correlation_data,
        message.properties.correlation_data
    );
    let expiry = received.properties.message_expiry_interval.unwrap();
    assert!((1..=300).contains(&expiry));
}

/// A 3.1.1 PUBLISH reaches a v5 subscriber.
#[tokio::test]
async fn v311_to_v5() {
    let (_server, addr) = support::start().await;
    let mut new = Raw::v5(addr, "new").await;
    new.subscribe("mixed/#", QoS::ExactlyOnce).await;
    let mut old = Raw::v311(addr, "old").await;
    old.publish_qos1("mixed/from/old", b"hello v5", false).await;
    let received = new.expect_publish().await;
    assert_eq!(received.topic.as_str(), "mixed/from/old");
    assert_eq!(&received.payload[..], b"hello v5");
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert!(received.properties.user_properties.is_empty());
}

/// MQTT 3.1 clients publish and subscribe too.
#[tokio::test]
async fn v31_clients_interoperate() {
    let (_server, addr) = support::start().await;
    let (mut legacy, connack) = Raw::accepted(addr, connect(Protocol::V3_1, "legacy")).await;
    assert!(!connack.session_present);
    legacy.subscribe("legacy/t", QoS::AtLeastOnce).await;
    let mut new = Raw::v5(addr, "new").await;
    new.subscribe("legacy/t", QoS::AtMostOnce).await;
    new.publish_qos1("legacy/t", b"to 3.1", false).await;
    let received = legacy.expect_publish().await;
    assert_eq!(&received.payload[..], b"to 3.1");
    assert_eq!(&new.expect_publish().await.payload[..], b"to 3.1");
    legacy.publish_qos1("legacy/t", b"from 3.1", false).await;
    assert_eq!(&new.expect_publish().await.payload[..], b"from 3.1");
}
