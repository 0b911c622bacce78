//! Time-dependent behaviour under Tokio's paused clock: keep alive, pings, Server Keep Alive,
//! session expiry, will delay, message expiry, over in-memory duplex streams. No test sleeps in
//! real time; deadlines are asserted to the millisecond.

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

// ----- Ported from the real-time suites (connect.rs, retain_will.rs, sessions.rs,
// conformance_more.rs): the same assertions, on the paused clock, with exact times. -----

fn client_connect(protocol: Protocol, id: &str, keep_alive: u16) -> Connect {
    let mut connect = Connect::new(protocol, MqttString::new(id).unwrap());
    connect.keep_alive = keep_alive;
    connect.clean_start = true;
    connect
}

/// Asserts a CONNACK 0x00.
fn accepted(answer: &Packet) {
    assert!(
        matches!(answer, Packet::ConnAck(connack) if connack.reason_code == ReasonCode::SUCCESS),
        "{answer:?}"
    );
}

/// A silent v5 client with Keep Alive 1 gets DISCONNECT 0x8D after exactly 1.5 s
/// [MQTT-3.1.2-22].
#[tokio::test(start_paused = true)]
async fn keep_alive_timeout_v5() {
    let server = server();
    let (mut client, answer) =
        Client::open(&server, 64 * 1024, client_connect(Protocol::V5, "idle", 1)).await;
    accepted(&answer);
    expect_keep_alive_timeout(&mut client, Duration::from_millis(1500)).await;
    assert_eq!(client.recv().await, None);
}

/// A silent 3.1.1 client with Keep Alive 1 is closed without a packet after 1.5 s.
#[tokio::test(start_paused = true)]
async fn keep_alive_timeout_v311() {
    let server = server();
    let (mut client, answer) = Client::open(
        &server,
        64 * 1024,
        client_connect(Protocol::V3_1_1, "idle311", 1),
    )
    .await;
    accepted(&answer);
    let start = Instant::now();
    assert_eq!(client.recv().await, None, "closed without DISCONNECT");
    assert_eq!(start.elapsed(), Duration::from_millis(1500));
}

/// PINGREQ is answered with PINGRESP and keeps the connection alive past 1.5 times the Keep
/// Alive [MQTT-3.12.4-1]: pings every 300 ms for 3.6 s with Keep Alive 2.
#[tokio::test(start_paused = true)]
async fn pingreq_gets_pingresp_and_keeps_the_connection_alive() {
    let server = server();
    let (mut client, _) = Client::open(
        &server,
        64 * 1024,
        client_connect(Protocol::V5, "pinger", 2),
    )
    .await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3600) {
        client.send(Packet::PingReq).await;
        assert_eq!(client.recv().await, Some(Packet::PingResp));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
}

/// Server Keep Alive replaces the client's Keep Alive [MQTT-3.2.2-22]: the client asked for 0
/// (no timeout) but the server enforces 1 s.
#[tokio::test(start_paused = true)]
async fn server_keep_alive_is_enforced() {
    let mut options = Options::default();
    options.capabilities.server_keep_alive = Some(1);
    held_to_one_second(options, "overridden").await;
}

/// The Will is published after a keep alive timeout [MQTT-3.1.2-22].
#[tokio::test(start_paused = true)]
async fn will_published_after_keep_alive_timeout() {
    let server = server();
    let mut watcher = Client::connect(&server, "watcher", 64 * 1024, 10).await;
    watcher.subscribe("will/ka", QoS::AtLeastOnce).await;
    let mut sleepy = client_connect(Protocol::V5, "sleepy", 1);
    sleepy.will = Some(Will {
        topic: MqttString::from_static("will/ka"),
        payload: bytes::Bytes::from_static(b"timed out"),
        qos: QoS::AtMostOnce,
        retain: false,
        properties: WillProperties::default(),
    });
    let (mut client, _) = Client::open(&server, 64 * 1024, sleepy).await;
    assert_eq!(
        client.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    let Some(Packet::Publish(will)) = watcher.recv().await else {
        panic!("no Will");
    };
    assert_eq!(&will.payload[..], b"timed out");
}

/// A message whose Message Expiry Interval passes while it is queued for an offline session is
/// not delivered [MQTT-3.3.2-5]; one without expiry is, with its remaining lifetime
/// [MQTT-3.3.2-6].
#[tokio::test(start_paused = true)]
async fn expired_messages_are_not_delivered_after_reconnect() {
    let server = server();
    let (mut subscriber, _) =
        Client::open(&server, 64 * 1024, connect("expiring", 0, Some(300))).await;
    subscriber.subscribe("exp/t", QoS::AtLeastOnce).await;
    subscriber
        .send(Packet::Disconnect(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await;
    assert_eq!(subscriber.recv().await, None);
    wait_until_offline(&server, "expiring").await;

    let mut publisher = Client::connect(&server, "pub", 64 * 1024, 10).await;
    for (id, payload, expiry) in [(1, "short", 1), (2, "long", 600)] {
        let mut message = mqtt_packets::Publish::new(
            MqttString::from_static("exp/t"),
            bytes::Bytes::from_static(payload.as_bytes()),
        );
        message.qos = QoS::AtLeastOnce;
        message.packet_id = mqtt_packets::PacketId::new(id);
        message.properties.message_expiry_interval = Some(expiry);
        publisher.send(message.into()).await;
        assert!(matches!(publisher.recv().await, Some(Packet::PubAck(_))));
    }
    // The first one's lifetime passes.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (mut subscriber, connack) =
        Client::open(&server, 64 * 1024, connect("expiring", 0, Some(300))).await;
    assert!(session_present(&connack));
    let Some(Packet::Publish(received)) = subscriber.recv().await else {
        panic!("nothing delivered");
    };
    assert_eq!(&received.payload[..], b"long");
    assert_eq!(received.properties.message_expiry_interval, Some(599));
    // Nothing else: a PINGREQ's answer comes next.
    subscriber.send(Packet::PingReq).await;
    assert_eq!(subscriber.recv().await, Some(Packet::PingResp));
}

/// An unfinished inbound QoS 2 handshake is completed even if the message has expired
/// meanwhile [MQTT-4.3.3-13].
#[tokio::test(start_paused = true)]
async fn an_expired_inbound_qos2_still_completes() {
    let server = server();
    let mut publisher = Client::connect(&server, "exp-pub", 64 * 1024, 10).await;
    let mut message = mqtt_packets::Publish::new(
        MqttString::from_static("exp/t"),
        bytes::Bytes::from_static(b"x"),
    );
    message.qos = QoS::ExactlyOnce;
    message.packet_id = mqtt_packets::PacketId::new(3);
    message.properties.message_expiry_interval = Some(1);
    publisher.send(message.into()).await;
    assert!(matches!(publisher.recv().await, Some(Packet::PubRec(_))));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    publisher
        .send(mqtt_packets::PubRel::new(mqtt_packets::PacketId::new(3).unwrap()).into())
        .await;
    let Some(Packet::PubComp(complete)) = publisher.recv().await else {
        panic!("no PUBCOMP");
    };
    assert_eq!(complete.reason_code, ReasonCode::SUCCESS);
}

/// Waits (on the paused clock, yielding) until the server has detached `client_id`.
async fn wait_until_offline(server: &Server, client_id: &str) {
    for _ in 0..1000 {
        if !server.connected_clients().iter().any(|id| id == client_id) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{client_id} still connected");
}

/// With a maximum Keep Alive of 1 s, a client that asked for none is held to 1 s
/// [MQTT-3.1.2-22]: Server Keep Alive 1, and DISCONNECT 0x8D after 1.5 s.
#[tokio::test(start_paused = true)]
async fn maximum_keep_alive_is_enforced() {
    let mut options = Options::default();
    options.capabilities.maximum_keep_alive = Some(1);
    held_to_one_second(options, "capped-none").await;
}

/// A v5 client asking for no Keep Alive on a server with these options: CONNACK says Server Keep
/// Alive 1, and a silent client is closed after 1.5 s.
async fn held_to_one_second(options: Options, id: &str) {
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    let (mut client, answer) =
        Client::open(&server, 64 * 1024, client_connect(Protocol::V5, id, 0)).await;
    let Packet::ConnAck(connack) = answer else {
        panic!("expected CONNACK, got {answer:?}");
    };
    assert_eq!(connack.properties.server_keep_alive, Some(1));
    expect_keep_alive_timeout(&mut client, Duration::from_millis(1500)).await;
}

/// Expects DISCONNECT 0x8D exactly `after` from now [MQTT-3.1.2-22].
async fn expect_keep_alive_timeout(client: &mut Client, after: Duration) {
    let start = Instant::now();
    assert_eq!(
        client.recv().await,
        Some(Packet::Disconnect(Disconnect::new(
            ReasonCode::KEEP_ALIVE_TIMEOUT
        )))
    );
    assert_eq!(start.elapsed(), after);
}
