//! Persistent sessions: messages queued while offline, inflight resends with DUP after
//! reconnect, Clean Start and session expiry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_packets::{Packet, Protocol, PubAck, PubComp, PubRec, QoS, ReasonCode};
use support::{Raw, connect, persistent_v5};

const ABSENCE: Duration = Duration::from_millis(300);

/// A v5 subscriber with Session Expiry 300 subscribes at QoS 1 and disconnects; messages
/// published meanwhile are delivered in order on reconnect, with Session Present 1
/// [MQTT-3.1.2-5] [MQTT-3.2.2-3]; its subscription still works.
#[tokio::test]
async fn v5_session_keeps_messages_while_offline() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Raw::accepted(addr, persistent_v5("keeper", true)).await;
    subscriber.subscribe("offline/#", QoS::AtLeastOnce).await;
    subscriber
        .disconnect(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    subscriber.expect_closed().await;
    disconnects.wait_for("keeper").await;

    let mut publisher = Raw::v5(addr, "pub").await;
    for i in 0..5u8 {
        assert_eq!(
            publisher
                .publish_qos1(&format!("offline/{i}"), &[i], false)
                .await,
            ReasonCode::SUCCESS,
            "an offline session is a matching subscriber"
        );
    }
    // QoS 0 is not queued for an offline session by default.
    publisher.publish_qos0("offline/zero", b"0", false).await;
    publisher.ping().await;

    let (mut subscriber, connack) = Raw::accepted(addr, persistent_v5("keeper", false)).await;
    assert!(connack.session_present);
    for i in 0..5u8 {
        let received = subscriber.expect_publish().await;
        assert_eq!(received.topic.as_str(), format!("offline/{i}"));
        assert_eq!(&received.payload[..], &[i]);
        assert_eq!(received.qos, QoS::AtLeastOnce);
        assert!(!received.dup, "never sent before");
        subscriber
            .send(PubAck::new(received.packet_id.unwrap()).into())
            .await;
    }
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
    // The subscription survived: no new SUBSCRIBE needed.
    assert_eq!(
        publisher.publish_qos1("offline/again", b"x", false).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(
        subscriber.expect_publish().await.topic.as_str(),
        "offline/again"
    );
}

/// The same with a 3.1.1 client and Clean Session 0.
#[tokio::test]
async fn v311_persistent_session_keeps_messages_while_offline() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut persistent = connect(Protocol::V3_1_1, "keeper311");
    persistent.clean_start = false;
    let (mut subscriber, connack) = Raw::accepted(addr, persistent.clone()).await;
    assert!(!connack.session_present);
    subscriber.subscribe("offline311/t", QoS::AtLeastOnce).await;
    subscriber
        .disconnect(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    subscriber.expect_closed().await;
    disconnects.wait_for("keeper311").await;

    let mut publisher = Raw::v311(addr, "pub311").await;
    for i in 0..3u8 {
        publisher.publish_qos1("offline311/t", &[i], false).await;
    }
    let (mut subscriber, connack) = Raw::accepted(addr, persistent).await;
    assert!(connack.session_present);
    for i in 0..3u8 {
        let received = subscriber.expect_publish().await;
        assert_eq!(&received.payload[..], &[i]);
        subscriber
            .send(PubAck::new(received.packet_id.unwrap()).into())
            .await;
    }
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
}

/// Unacknowledged messages are resent on reconnect, with DUP 1 and the same packet identifiers,
/// in their original order; a message that reached PUBREC gets its PUBREL resent instead
/// [MQTT-4.4.0-1] [MQTT-4.3.3-6].
#[tokio::test]
async fn inflight_messages_are_resent_with_dup_in_order() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Raw::accepted(addr, persistent_v5("resend", true)).await;
    subscriber.subscribe("inflight/t", QoS::ExactlyOnce).await;
    server
        .publish("inflight/t", "1", false, QoS::AtLeastOnce)
        .unwrap();
    server
        .publish("inflight/t", "2", false, QoS::ExactlyOnce)
        .unwrap();
    server
        .publish("inflight/t", "3", false, QoS::AtLeastOnce)
        .unwrap();
    server
        .publish("inflight/t", "4", false, QoS::ExactlyOnce)
        .unwrap();
    let mut first = Vec::new();
    for expected in ["1", "2", "3", "4"] {
        let received = subscriber.expect_publish().await;
        assert_eq!(&received.payload[..], expected.as_bytes());
        assert!(!received.dup);
        first.push(received);
    }
    // Message 2 reaches PUBREL; the others stay unacknowledged.
    let id2 = first[1].packet_id.unwrap();
    subscriber.send(PubRec::new(id2).into()).await;
    assert_eq!(subscriber.expect_pubrel().await.packet_id, id2);
    // The network fails.
    drop(subscriber);
    disconnects.wait_for("resend").await;

    let (mut subscriber, connack) = Raw::accepted(addr, persistent_v5("resend", false)).await;
    assert!(connack.session_present);
    let mut resent = Vec::new();
    for _ in 0..4 {
        resent.push(subscriber.next().await);
    }
    match &resent[..] {
        [
            Packet::Publish(one),
            Packet::PubRel(two),
            Packet::Publish(three),
            Packet::Publish(four),
        ] => {
            for (again, original) in [(one, &first[0]), (three, &first[2]), (four, &first[3])] {
                assert!(again.dup, "a resend carries DUP 1");
                assert_eq!(again.packet_id, original.packet_id);
                assert_eq!(again.payload, original.payload);
                assert_eq!(again.qos, original.qos);
            }
            assert_eq!(two.packet_id, id2);
        }
        other => panic!("unexpected resends: {other:?}"),
    }
    // Completing them ends the flows: nothing more is resent.
    subscriber
        .send(PubAck::new(first[0].packet_id.unwrap()).into())
        .await;
    subscriber.send(PubComp::new(id2).into()).await;
    subscriber
        .send(PubAck::new(first[2].packet_id.unwrap()).into())
        .await;
    let id4 = first[3].packet_id.unwrap();
    subscriber.send(PubRec::new(id4).into()).await;
    assert_eq!(subscriber.expect_pubrel().await.packet_id, id4);
    subscriber.send(PubComp::new(id4).into()).await;
    subscriber.ping().await;
    subscriber
        .disconnect(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    subscriber.expect_closed().await;
    disconnects.wait_for("resend").await;
    let (mut subscriber, connack) = Raw::accepted(addr, persistent_v5("resend", false)).await;
    assert!(connack.session_present);
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
}

/// Inflight messages beyond those resent keep their place: queued messages follow the resends
/// in order.
#[tokio::test]
async fn queued_messages_follow_the_resends() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Raw::accepted(addr, persistent_v5("order", true)).await;
    subscriber.subscribe("order/t", QoS::AtLeastOnce).await;
    server
        .publish("order/t", "a", false, QoS::AtLeastOnce)
        .unwrap();
    let a = subscriber.expect_publish().await;
    drop(subscriber);
    disconnects.wait_for("order").await;
    server
        .publish("order/t", "b", false, QoS::AtLeastOnce)
        .unwrap();
    let (mut subscriber, connack) = Raw::accepted(addr, persistent_v5("order", false)).await;
    assert!(connack.session_present);
    let again = subscriber.expect_publish().await;
    assert_eq!((&again.payload[..], again.dup), (&b"a"[..], true));
    assert_eq!(again.packet_id, a.packet_id);
    let b = subscriber.expect_publish().await;
    assert_eq!((&b.payload[..], b.dup), (&b"b"[..], false));
    assert_ne!(b.packet_id, a.packet_id, "a is still in flight");
}

/// Clean Start 1 discards the stored session: Session Present 0, no queued messages, no
/// subscriptions [MQTT-3.1.2-4].
#[tokio::test]
async fn clean_start_discards_the_session() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Raw::accepted(addr, persistent_v5("cleaned", true)).await;
    subscriber.subscribe("clean/t", QoS::AtLeastOnce).await;
    subscriber
        .disconnect(ReasonCode::NORMAL_DISCONNECTION)
        .await;
    subscriber.expect_closed().await;
    disconnects.wait_for("cleaned").await;

    let mut publisher = Raw::v5(addr, "pub").await;
    assert_eq!(
        publisher.publish_qos1("clean/t", b"queued", false).await,
        ReasonCode::SUCCESS
    );
    let (mut subscriber, connack) = Raw::accepted(addr, persistent_v5("cleaned", true)).await;
    assert!(!connack.session_present);
    // The subscription is gone: nobody matches.
    assert_eq!(
        publisher.publish_qos1("clean/t", b"after", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
}

/// A session is discarded once its expiry interval has passed after the disconnect
/// [MQTT-4.1.0-2].
#[tokio::test]
async fn session_expires_after_its_interval() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut request = persistent_v5("short", true);
    request.properties.session_expiry_interval = Some(1);
    let (mut subscriber, _) = Raw::accepted(addr, request.clone()).await;
    subscriber.subscribe("short/t", QoS::AtLeastOnce).await;
    drop(subscriber);
    disconnects.wait_for("short").await;
    support::wait_until("the session expired", || server.session_count() == 0).await;
    request.clean_start = false;
    let (_subscriber, connack) = Raw::accepted(addr, request).await;
    assert!(!connack.session_present);
}

/// The Session Expiry Interval in DISCONNECT replaces the CONNECT one (§3.14.2.2.2): 0 ends the
/// session now.
#[tokio::test]
async fn disconnect_can_end_the_session() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut raw, _) = Raw::accepted(addr, persistent_v5("ending", true)).await;
    let mut disconnect = mqtt_packets::Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(0);
    raw.send(disconnect.into()).await;
    raw.expect_closed().await;
    disconnects.wait_for("ending").await;
    assert_eq!(server.session_count(), 0);
    let (_raw, connack) = Raw::accepted(addr, persistent_v5("ending", false)).await;
    assert!(!connack.session_present);
}

/// A DISCONNECT with a non-zero Session Expiry Interval after CONNECT had 0 is a Protocol Error
/// (§3.14.2.2.2): DISCONNECT 0x82, and the session still ends.
#[tokio::test]
async fn disconnect_cannot_raise_a_zero_expiry() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut raw = Raw::v5(addr, "raiser").await;
    let mut disconnect = mqtt_packets::Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(300);
    raw.send(disconnect.into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    disconnects.wait_for("raiser").await;
    assert_eq!(server.session_count(), 0);
}

/// Holds the first Will published until released, so that a test can act while a connection's
/// end is being handled.
struct HoldWill {
    entered: tokio::sync::mpsc::UnboundedSender<()>,
    release: parking_lot::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl mqtt_broker::Hook for HoldWill {
    fn id(&self) -> &str {
        "hold-will"
    }

    fn provides(&self) -> mqtt_broker::hooks::HookEvents {
        mqtt_broker::hooks::HookEvents::ON_WILL
    }

    fn on_will(
        &self,
        _client: &mqtt_broker::ClientInfo,
        will: mqtt_packets::Will,
    ) -> Option<mqtt_packets::Will> {
        self.entered.send(()).ok();
        // Another worker keeps serving connections meanwhile.
        tokio::task::block_in_place(|| {
            self.release.lock().recv_timeout(support::TIMEOUT).ok();
        });
        Some(will)
    }
}

/// A client that reconnects while the server is still ending its previous connection (here:
/// while the old Will is being published) must keep its new session: still registered, its
/// new subscription intact [MQTT-4.1.0-1] [MQTT-3.1.4-3].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn reconnect_while_the_previous_connection_ends() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (entered, mut entered_rx) = tokio::sync::mpsc::unbounded_channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    server
        .add_hook(HoldWill {
            entered,
            release: parking_lot::Mutex::new(release_rx),
        })
        .unwrap();
    let mut request = connect(Protocol::V5, "racer");
    request.will = Some(support::will("race/will", b"w"));
    let (raw, _) = Raw::accepted(addr, request).await;
    drop(raw);
    // The old connection ended abnormally and its Will is being published; its session
    // (expiry 0) is about to end.
    support::within(entered_rx.recv()).await.unwrap();
    let (mut back, _) = Raw::accepted(addr, connect(Protocol::V5, "racer")).await;
    back.subscribe("race/t", QoS::AtMostOnce).await;
    release.send(()).unwrap();
    disconnects.wait_for("racer").await;

    back.ping().await;
    assert_eq!(server.connected_clients(), ["racer"]);
    assert_eq!(
        server
            .publish("race/t", "still subscribed", false, QoS::AtMostOnce)
            .unwrap(),
        1
    );
    assert_eq!(
        &back.expect_publish().await.payload[..],
        b"still subscribed"
    );
}
