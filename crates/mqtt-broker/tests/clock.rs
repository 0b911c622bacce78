//! Time-dependent behaviour under Tokio's paused clock: keep alive, session expiry and will
//! delay, over in-memory duplex streams. No test sleeps in real time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::{
    Connect, Disconnect, MqttString, Packet, Protocol, QoS, ReasonCode, Will, WillProperties,
};
use support::Duplex as Client;
use tokio::time::Instant;

fn server() -> Server {
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook).unwrap();
    server
}

fn connect(id: &str, keep_alive: u16, session_expiry: Option<u32>) -> Connect {
    let mut connect = Connect::new(Protocol::V5, MqttString::new(id).unwrap());
    connect.keep_alive = keep_alive;
    connect.clean_start = false;
    connect.properties.session_expiry_interval = session_expiry;
    connect
}

fn session_present(connack: &Packet) -> bool {
    match connack {
        Packet::ConnAck(connack) => {
            assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
            connack.session_present
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// A silent client is closed after 1.5 times its keep alive, with DISCONNECT 0x8D
/// [MQTT-3.1.2-22].
#[tokio::test(start_paused = true)]
async fn keep_alive_closes_after_one_and_a_half_times() {
    let server = server();
    let (mut client, _) = Client::open(&server, 64 * 1024, connect("ka", 10, None)).await;
    let start = Instant::now();
    let packet = client.recv().await;
    let elapsed = start.elapsed();
    assert_eq!(
        packet,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    assert!(
        elapsed >= Duration::from_secs(15) && elapsed < Duration::from_secs(16),
        "{elapsed:?}"
    );
    assert_eq!(client.recv().await, None, "closed after the DISCONNECT");
}

/// PINGREQ keeps a connection alive past its keep alive [MQTT-3.12.4-1].
#[tokio::test(start_paused = true)]
async fn pings_keep_the_connection_alive() {
    let server = server();
    let (mut client, _) = Client::open(&server, 64 * 1024, connect("pinger", 10, None)).await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
    }
}

/// A session is kept for its Session Expiry Interval and removed after it [MQTT-4.1.0-2].
#[tokio::test(start_paused = true)]
async fn session_expires_after_its_interval() {
    let server = server();
    let (mut client, connack) =
        Client::open(&server, 64 * 1024, connect("persistent", 0, Some(30))).await;
    assert!(!session_present(&connack));
    client.send(Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(client.recv().await, None);

    tokio::time::sleep(Duration::from_secs(29)).await;
    let (mut client, connack) =
        Client::open(&server, 64 * 1024, connect("persistent", 0, Some(30))).await;
    assert!(
        session_present(&connack),
        "resumed within the interval [MQTT-3.2.2-3]"
    );
    client.send(Packet::Disconnect(Disconnect::default())).await;
    assert_eq!(client.recv().await, None);

    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(server.session_count(), 0, "expired and removed");
    let (_client, connack) =
        Client::open(&server, 64 * 1024, connect("persistent", 0, Some(30))).await;
    assert!(!session_present(&connack));
}

/// A delayed Will is published after its delay, and not at all if the client comes back first
/// [MQTT-3.1.2-8] [MQTT-3.1.3-9].
#[tokio::test(start_paused = true)]
async fn will_delay_and_cancellation() {
    let server = server();
    let mut wills = server
        .inline_client()
        .subscribe("wills/#", QoS::AtMostOnce)
        .unwrap();
    let with_will = |id: &str| {
        let mut connect = connect(id, 0, Some(120));
        connect.will = Some(Will {
            topic: MqttString::new(format!("wills/{id}")).unwrap(),
            payload: "gone".into(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties {
                will_delay_interval: Some(10),
                ..WillProperties::default()
            },
        });
        connect
    };

    // Dropped without DISCONNECT: the Will waits 10 s.
    let (client, _) = Client::open(&server, 64 * 1024, with_will("a")).await;
    drop(client);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert!(wills.try_recv().is_none(), "not before the delay");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let will = wills.recv().await.unwrap();
    assert_eq!(will.topic, "wills/a");

    // Back within the delay: no Will.
    let (client, _) = Client::open(&server, 64 * 1024, with_will("b")).await;
    drop(client);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (_client, connack) = Client::open(&server, 64 * 1024, with_will("b")).await;
    assert!(session_present(&connack));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(
        wills.try_recv().is_none(),
        "the resumed session cancelled the Will"
    );
}

/// A retained message is removed when its Message Expiry Interval runs out, whether or not a
/// subscriber asks for it [MQTT-3.3.2-5] (§3.3.1.3).
#[tokio::test(start_paused = true)]
async fn retained_message_expires_on_its_own() {
    let server = server();
    server.start();
    let mut publish = mqtt_packets::Publish::new(MqttString::from_static("status/door"), "open");
    publish.retain = true;
    publish.properties.message_expiry_interval = Some(10);
    server.inline_client().publish_packet(publish).unwrap();
    assert_eq!(server.info().snapshot().retained, 1);
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(
        server.info().snapshot().retained,
        1,
        "not before its expiry"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        server.info().snapshot().retained,
        0,
        "removed at its expiry"
    );
    let mut subscription = server
        .inline_client()
        .subscribe("status/#", QoS::AtMostOnce)
        .unwrap();
    assert!(subscription.try_recv().is_none());
}
