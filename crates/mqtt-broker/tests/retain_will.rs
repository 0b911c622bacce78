//! Retained messages (set, replace, clear, Retain Handling, Retain As Published, shared
//! subscriptions) and Will messages (abnormal close, keep alive, DISCONNECT codes, Will Retain,
//! Will Delay Interval).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_packets::{Protocol, QoS, ReasonCode, RetainHandling, SubscriptionOptions};
use support::{Raw, connect, options, persistent_v5, will};
use tokio::time::Instant;

const ABSENCE: Duration = Duration::from_millis(300);

fn retain_handling(qos: QoS, handling: RetainHandling) -> SubscriptionOptions {
    SubscriptionOptions {
        retain_handling: handling,
        ..options(qos)
    }
}

// ----- retained messages ---------------------------------------------------------------------

/// A RETAIN 1 PUBLISH replaces the topic's retained message [MQTT-3.3.1-5]; a new subscriber
/// receives it with RETAIN 1 (§3.8.3.1).
#[tokio::test]
async fn retained_message_is_set_replaced_and_sent_on_subscribe() {
    let (server, addr) = support::start().await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher.publish_qos1("ret/a", b"one", true).await;
    publisher.publish_qos1("ret/a", b"two", true).await;
    publisher.publish_qos1("ret/b", b"other", true).await;
    assert_eq!(server.info().snapshot().retained, 2);

    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("ret/a", QoS::AtLeastOnce).await;
    let received = subscriber.expect_publish().await;
    assert_eq!(&received.payload[..], b"two");
    assert!(received.retain);
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert_eq!(subscriber.try_recv(ABSENCE).await, None, "only the latest");

    // A 3.1.1 subscriber gets it too, with RETAIN 1.
    let mut v311 = Raw::v311(addr, "sub311").await;
    v311.subscribe("ret/+", QoS::AtMostOnce).await;
    let mut got = Vec::new();
    for _ in 0..2 {
        let received = v311.expect_publish().await;
        assert!(received.retain);
        got.push(received.payload.to_vec());
    }
    got.sort();
    assert_eq!(got, [b"other".to_vec(), b"two".to_vec()]);
}

/// A RETAIN 1 PUBLISH with an empty payload is delivered to current subscribers and clears the
/// retained message, which is never stored [MQTT-3.3.1-6] [MQTT-3.3.1-7].
#[tokio::test]
async fn empty_retained_payload_clears_the_retained_message() {
    let (server, addr) = support::start().await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher.publish_qos1("clear/t", b"kept", true).await;
    let mut current = Raw::v5(addr, "current").await;
    current.subscribe("clear/t", QoS::AtMostOnce).await;
    assert_eq!(&current.expect_publish().await.payload[..], b"kept");

    assert_eq!(
        publisher.publish_qos1("clear/t", b"", true).await,
        ReasonCode::SUCCESS
    );
    let cleared = current.expect_publish().await;
    assert!(cleared.payload.is_empty());
    assert_eq!(server.info().snapshot().retained, 0);

    let mut late = Raw::v5(addr, "late").await;
    late.subscribe("clear/#", QoS::AtMostOnce).await;
    assert_eq!(late.try_recv(ABSENCE).await, None);
}

/// A RETAIN 0 PUBLISH leaves the retained message alone [MQTT-3.3.1-8].
#[tokio::test]
async fn non_retained_publish_leaves_the_retained_message() {
    let (_server, addr) = support::start().await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher.publish_qos1("keep/t", b"retained", true).await;
    publisher.publish_qos1("keep/t", b"live", false).await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("keep/t", QoS::AtMostOnce).await;
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"retained");
}

/// Retain Handling 0 sends retained messages on every SUBSCRIBE, repeated ones included
/// [MQTT-3.3.1-9].
#[tokio::test]
async fn retain_handling_0_sends_on_every_subscribe() {
    let (server, addr) = support::start().await;
    server.publish("rh/t", "r", true, QoS::AtMostOnce).unwrap();
    let mut raw = Raw::v5(addr, "rh0").await;
    let options = retain_handling(QoS::AtMostOnce, RetainHandling::SendAtSubscribe);
    raw.subscribe_opts("rh/+", options, None).await;
    assert!(raw.expect_publish().await.retain);
    raw.subscribe_opts("rh/+", options, None).await;
    assert!(raw.expect_publish().await.retain);
}

/// Retain Handling 1 sends them only for a new subscription [MQTT-3.3.1-10].
#[tokio::test]
async fn retain_handling_1_sends_only_for_a_new_subscription() {
    let (server, addr) = support::start().await;
    server.publish("rh/t", "r", true, QoS::AtMostOnce).unwrap();
    let mut raw = Raw::v5(addr, "rh1").await;
    let options = retain_handling(QoS::AtMostOnce, RetainHandling::SendIfNewSubscription);
    raw.subscribe_opts("rh/+", options, None).await;
    assert!(raw.expect_publish().await.retain);
    raw.subscribe_opts("rh/+", options, None).await;
    assert_eq!(raw.try_recv(ABSENCE).await, None);
}

/// Retain Handling 2 never sends them [MQTT-3.3.1-11].
#[tokio::test]
async fn retain_handling_2_never_sends() {
    let (server, addr) = support::start().await;
    server.publish("rh/t", "r", true, QoS::AtMostOnce).unwrap();
    let mut raw = Raw::v5(addr, "rh2").await;
    let options = retain_handling(QoS::AtMostOnce, RetainHandling::DoNotSend);
    raw.subscribe_opts("rh/+", options, None).await;
    raw.subscribe_opts("rh/+", options, None).await;
    assert_eq!(raw.try_recv(ABSENCE).await, None);
    // The subscription itself works.
    server
        .publish("rh/t", "live", false, QoS::AtMostOnce)
        .unwrap();
    let live = raw.expect_publish().await;
    assert_eq!((&live.payload[..], live.retain), (&b"live"[..], false));
}

/// Retain As Published 0 forwards with RETAIN 0 [MQTT-3.3.1-12]; 1 keeps the publisher's flag
/// [MQTT-3.3.1-13]; a 3.1.1 subscriber gets RETAIN 0 on normal forwarding.
#[tokio::test]
async fn retain_as_published() {
    let (_server, addr) = support::start().await;
    let mut cleared = Raw::v5(addr, "rap0").await;
    cleared
        .subscribe_opts("rap/t", options(QoS::AtMostOnce), None)
        .await;
    let mut kept = Raw::v5(addr, "rap1").await;
    let rap = SubscriptionOptions {
        retain_as_published: true,
        ..options(QoS::AtMostOnce)
    };
    kept.subscribe_opts("rap/t", rap, None).await;
    let mut v311 = Raw::v311(addr, "rap311").await;
    v311.subscribe("rap/t", QoS::AtMostOnce).await;

    let mut publisher = Raw::v5(addr, "pub").await;
    publisher.publish_qos1("rap/t", b"flagged", true).await;
    publisher.publish_qos1("rap/t", b"plain", false).await;

    let a = cleared.expect_publish().await;
    assert_eq!((&a.payload[..], a.retain), (&b"flagged"[..], false));
    let b = kept.expect_publish().await;
    assert_eq!((&b.payload[..], b.retain), (&b"flagged"[..], true));
    let c = v311.expect_publish().await;
    assert_eq!((&c.payload[..], c.retain), (&b"flagged"[..], false));
    assert!(!cleared.expect_publish().await.retain);
    assert!(!kept.expect_publish().await.retain);
    assert!(!v311.expect_publish().await.retain);
}

/// Retained messages are not sent for a shared subscription (§4.8.2).
#[tokio::test]
async fn no_retained_messages_for_shared_subscriptions() {
    let (server, addr) = support::start().await;
    server
        .publish("shared/t", "r", true, QoS::AtMostOnce)
        .unwrap();
    let mut raw = Raw::v5(addr, "member").await;
    raw.subscribe("$share/g/shared/t", QoS::AtMostOnce).await;
    assert_eq!(raw.try_recv(ABSENCE).await, None);
    server
        .publish("shared/t", "live", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&raw.expect_publish().await.payload[..], b"live");
}

/// With Retain Available 0, a Will with Will Retain 1 is refused with CONNACK 0x9A
/// [MQTT-3.2.2-13].
#[tokio::test]
async fn will_retain_refused_when_retain_is_unavailable() {
    let mut options = mqtt_broker::Options::default();
    options.capabilities.retain_available = false;
    let (_server, addr) = support::start_with(options, true).await;
    let mut request = connect(Protocol::V5, "wr");
    let mut w = will("w/t", b"bye");
    w.retain = true;
    request.will = Some(w);
    let (mut raw, packet) = Raw::handshake(addr, request).await;
    assert_eq!(
        support::connack(packet).reason_code,
        ReasonCode::RETAIN_NOT_SUPPORTED
    );
    raw.expect_closed().await;
}

// ----- wills ---------------------------------------------------------------------------------

async fn watcher(addr: std::net::SocketAddr, filter: &str) -> Raw {
    let mut raw = Raw::v5(addr, &format!("watcher-{filter}")).await;
    raw.subscribe(filter, QoS::AtLeastOnce).await;
    raw
}

/// The Will is published when the network connection is lost [MQTT-3.1.2-8].
#[tokio::test]
async fn will_published_on_abnormal_close() {
    let (_server, addr) = support::start().await;
    for protocol in [Protocol::V5, Protocol::V3_1_1] {
        let mut watch = watcher(addr, &format!("will/{}", protocol.level())).await;
        let mut request = connect(protocol, &format!("dying{}", protocol.level()));
        let mut w = will(&format!("will/{}", protocol.level()), b"gone");
        w.qos = QoS::AtLeastOnce;
        request.will = Some(w);
        let (raw, _) = Raw::accepted(addr, request).await;
        drop(raw);
        let published = watch.expect_publish().await;
        assert_eq!(&published.payload[..], b"gone");
        assert_eq!(published.qos, QoS::AtLeastOnce);
        assert!(!published.retain);
    }
}

/// DISCONNECT 0x00 discards the Will [MQTT-3.14.4-3] [MQTT-3.1.2-10], for v5 and 3.1.1.
#[tokio::test]
async fn will_not_published_after_normal_disconnect() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut watch = watcher(addr, "will/normal").await;
    for protocol in [Protocol::V5, Protocol::V3_1_1] {
        let mut request = connect(protocol, "polite");
        request.will = Some(will("will/normal", b"should not appear"));
        let (mut raw, _) = Raw::accepted(addr, request).await;
        raw.disconnect(ReasonCode::NORMAL_DISCONNECTION).await;
        raw.expect_closed().await;
        disconnects.wait_for("polite").await;
    }
    // The server has finished with both connections: a Will would already be queued ahead of
    // this message.
    server
        .publish("will/normal", "sentinel", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&watch.expect_publish().await.payload[..], b"sentinel");
}

/// DISCONNECT 0x04 (Disconnect with Will Message) publishes the Will [MQTT-3.14.4-3].
#[tokio::test]
async fn will_published_after_disconnect_with_will_message() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/04").await;
    let mut request = connect(Protocol::V5, "leaving");
    request.will = Some(will("will/04", b"as asked"));
    let (mut raw, _) = Raw::accepted(addr, request).await;
    raw.disconnect(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE)
        .await;
    raw.expect_closed().await;
    assert_eq!(&watch.expect_publish().await.payload[..], b"as asked");
}

/// A Will with Will Retain 1 becomes the topic's retained message.
#[tokio::test]
async fn will_retain_sets_the_retained_message() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/retained").await;
    let mut request = connect(Protocol::V5, "retainer");
    let mut w = will("will/retained", b"last words");
    w.retain = true;
    request.will = Some(w);
    let (raw, _) = Raw::accepted(addr, request).await;
    drop(raw);
    assert_eq!(&watch.expect_publish().await.payload[..], b"last words");
    let mut late = Raw::v5(addr, "late").await;
    late.subscribe("will/retained", QoS::AtMostOnce).await;
    let retained = late.expect_publish().await;
    assert_eq!(&retained.payload[..], b"last words");
    assert!(retained.retain);
}

/// A Will Delay Interval delays the Will [MQTT-3.1.2-8].
#[tokio::test]
async fn will_delay_interval_delays_the_will() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/delayed").await;
    let mut request = persistent_v5("delayed", true);
    let mut w = will("will/delayed", b"later");
    w.properties.will_delay_interval = Some(1);
    request.will = Some(w);
    let (raw, _) = Raw::accepted(addr, request).await;
    let dropped_at = Instant::now();
    drop(raw);
    assert_eq!(&watch.expect_publish().await.payload[..], b"later");
    assert!(
        dropped_at.elapsed() >= Duration::from_millis(990),
        "published after {:?}",
        dropped_at.elapsed()
    );
}

/// Reconnecting within the Will Delay Interval cancels the Will [MQTT-3.1.3-9].
#[tokio::test]
async fn reconnect_within_the_will_delay_cancels_the_will() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut watch = watcher(addr, "will/cancelled").await;
    let mut request = persistent_v5("returning", true);
    let mut w = will("will/cancelled", b"never");
    w.properties.will_delay_interval = Some(2);
    request.will = Some(w);
    let (raw, _) = Raw::accepted(addr, request).await;
    drop(raw);
    disconnects.wait_for("returning").await;
    let (mut back, connack) = Raw::accepted(addr, persistent_v5("returning", false)).await;
    assert!(connack.session_present);
    // Past the delay: nothing was published.
    assert_eq!(watch.try_recv(Duration::from_millis(3500)).await, None);
    back.ping().await;
}

/// Reconnecting with Clean Start 1 during the delay ends the old session, so its Will is
/// published at once [MQTT-3.1.2-8].
#[tokio::test]
async fn clean_start_during_the_will_delay_publishes_the_will() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut watch = watcher(addr, "will/ended").await;
    let mut request = persistent_v5("restarting", true);
    let mut w = will("will/ended", b"session over");
    w.properties.will_delay_interval = Some(3600);
    request.will = Some(w);
    let (raw, _) = Raw::accepted(addr, request).await;
    drop(raw);
    disconnects.wait_for("restarting").await;
    let (_back, connack) = Raw::accepted(addr, persistent_v5("restarting", true)).await;
    assert!(!connack.session_present);
    assert_eq!(&watch.expect_publish().await.payload[..], b"session over");
}

/// A Will Delay longer than the Session Expiry: the Will goes when the session ends
/// [MQTT-3.1.2-8].
#[tokio::test]
async fn will_published_when_the_session_ends_before_the_delay() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/expiry").await;
    let mut request = persistent_v5("expiring", true);
    request.properties.session_expiry_interval = Some(1);
    let mut w = will("will/expiry", b"expired");
    w.properties.will_delay_interval = Some(3600);
    request.will = Some(w);
    let (raw, _) = Raw::accepted(addr, request).await;
    drop(raw);
    assert_eq!(&watch.expect_publish().await.payload[..], b"expired");
}

/// On takeover the old connection's Will (no delay) is published [MQTT-3.1.4-3].
#[tokio::test]
async fn takeover_publishes_the_old_will() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/takeover").await;
    let mut request = connect(Protocol::V5, "twin");
    request.will = Some(will("will/takeover", b"replaced"));
    let (mut first, _) = Raw::accepted(addr, request).await;
    let (mut second, _) = Raw::accepted(addr, connect(Protocol::V5, "twin")).await;
    first
        .expect_disconnect(ReasonCode::SESSION_TAKEN_OVER)
        .await;
    assert_eq!(&watch.expect_publish().await.payload[..], b"replaced");
    second.ping().await;
}

/// A protocol error in the client's DISCONNECT is not a clean disconnect: the Will is published
/// (§3.14.2.2.2).
#[tokio::test]
async fn will_published_after_a_bad_disconnect() {
    let (_server, addr) = support::start().await;
    let mut watch = watcher(addr, "will/bad").await;
    let mut request = connect(Protocol::V5, "sloppy");
    request.will = Some(will("will/bad", b"still sent"));
    let (mut raw, _) = Raw::accepted(addr, request).await;
    let mut disconnect = mqtt_packets::Disconnect::new(ReasonCode::NORMAL_DISCONNECTION);
    disconnect.properties.session_expiry_interval = Some(60);
    raw.send(disconnect.into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    assert_eq!(&watch.expect_publish().await.payload[..], b"still sent");
}
