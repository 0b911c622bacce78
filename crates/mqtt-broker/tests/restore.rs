//! Restoring state from a storage hook at start: sessions come back (Session Present 1), their
//! subscriptions are re-checked against the ACL, queued messages are delivered in order after the
//! restart, and retained messages are served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use bytes::Bytes;
use mqtt_broker::hooks::{Access, Decision, HookError, HookEvents};
use mqtt_broker::storage::{StoredClient, StoredMessage, StoredSubscription};
use mqtt_broker::{AllowAllHook, ClientInfo, Hook, Options, Server};
use mqtt_packets::{Protocol, QoS};
use support::{Raw, options, persistent_v5};

/// A storage hook that hands back fixed records, and an ACL that forbids `secret/#`.
struct Stored;

impl Hook for Stored {
    fn id(&self) -> &str {
        "stored"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::STORED_CLIENTS
            | HookEvents::STORED_SUBSCRIPTIONS
            | HookEvents::STORED_INFLIGHT_MESSAGES
            | HookEvents::STORED_RETAINED_MESSAGES
            | HookEvents::ON_ACL_CHECK
    }

    fn on_acl_check(&self, _: &ClientInfo, topic: &str, _: Access) -> Decision {
        if topic.starts_with("secret") {
            Decision::Deny
        } else {
            Decision::Defer
        }
    }

    fn stored_clients(&self) -> Result<Vec<StoredClient>, HookError> {
        Ok(vec![StoredClient::new("sensor-9", Protocol::V5, 300)])
    }

    fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, HookError> {
        Ok(vec![
            StoredSubscription::new("sensor-9", "cmd/#", options(QoS::AtLeastOnce)),
            StoredSubscription::new("sensor-9", "secret/#", options(QoS::AtLeastOnce)),
        ])
    }

    fn stored_inflight_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok((1..=3)
            .map(|i| {
                let mut message = StoredMessage::retained(
                    mqtt_packets::MqttString::new(format!("cmd/{i}")).unwrap(),
                    Bytes::from(vec![i]),
                    QoS::AtLeastOnce,
                );
                message.client_id = Some("sensor-9".to_string());
                message.retain = false;
                message
            })
            .collect())
    }

    fn stored_retained_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok(vec![StoredMessage::retained(
            mqtt_packets::MqttString::from_static("status/plant"),
            Bytes::from_static(b"up"),
            QoS::AtMostOnce,
        )])
    }
}

#[tokio::test]
async fn sessions_queues_and_retained_messages_come_back() {
    let server = Server::new(Options::default());
    server.add_hook(Stored).unwrap();
    server.add_hook(AllowAllHook).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("tcp", listener).await });

    let (mut client, connack) = Raw::accepted(addr, persistent_v5("sensor-9", false)).await;
    assert!(
        connack.session_present,
        "the restored session [MQTT-3.2.2-3]"
    );
    // Queued messages, in order.
    for i in 1..=3u8 {
        let message = client.expect_publish().await;
        assert_eq!(message.topic, format!("cmd/{i}").as_str());
        assert_eq!(&message.payload[..], &[i]);
        client
            .send(mqtt_packets::PubAck::new(message.packet_id.unwrap()).into())
            .await;
    }
    // The restored subscription works; the one the ACL now refuses was not restored.
    server
        .publish("cmd/new", "x", false, QoS::AtLeastOnce)
        .unwrap();
    assert_eq!(client.expect_publish().await.topic, "cmd/new");
    assert_eq!(
        server
            .publish("secret/a", "x", false, QoS::AtLeastOnce)
            .unwrap(),
        0
    );
    // Retained messages are served.
    let mut other = Raw::v5(addr, "reader").await;
    other.subscribe("status/#", QoS::AtMostOnce).await;
    let retained = other.expect_publish().await;
    assert_eq!(
        (retained.topic.as_str(), retained.retain),
        ("status/plant", true)
    );
}
