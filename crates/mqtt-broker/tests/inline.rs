//! The embedding API: `Server::publish`, the inline client's subscriptions, and
//! `Server::inject_packet`, together with TCP clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::BrokerError;
use mqtt_packets::{Packet, PubAck, QoS, ReasonCode, Subscribe, Subscription, SubscriptionOptions};
use support::{Raw, pid, publish, s, within};

const ABSENCE: Duration = Duration::from_millis(300);

/// `Server::publish` reaches v5 and 3.1.1 TCP subscribers, at the lower of the two QoS, and
/// returns how many subscriptions it reached.
#[tokio::test]
async fn server_publish_reaches_tcp_subscribers() {
    let (server, addr) = support::start().await;
    let mut v5 = Raw::v5(addr, "v5").await;
    v5.subscribe("host/#", QoS::AtLeastOnce).await;
    let mut v311 = Raw::v311(addr, "v311").await;
    v311.subscribe("host/+", QoS::ExactlyOnce).await;
    assert_eq!(
        server
            .publish("host/news", "hello", false, QoS::AtLeastOnce)
            .unwrap(),
        2
    );
    let a = v5.expect_publish().await;
    assert_eq!(
        (a.topic.as_str(), &a.payload[..]),
        ("host/news", &b"hello"[..])
    );
    assert_eq!(a.qos, QoS::AtLeastOnce);
    v5.send(PubAck::new(a.packet_id.unwrap()).into()).await;
    let b = v311.expect_publish().await;
    assert_eq!(&b.payload[..], b"hello");
    assert_eq!(b.qos, QoS::AtLeastOnce);
    assert_eq!(
        server
            .publish("nobody/listens", "x", false, QoS::AtMostOnce)
            .unwrap(),
        0
    );
}

/// A retained message published by the host is sent to later subscribers.
#[tokio::test]
async fn server_publish_can_retain() {
    let (server, addr) = support::start().await;
    server
        .publish("host/config", "v1", true, QoS::AtMostOnce)
        .unwrap();
    let mut raw = Raw::v5(addr, "late").await;
    raw.subscribe("host/config", QoS::AtMostOnce).await;
    let retained = raw.expect_publish().await;
    assert_eq!((&retained.payload[..], retained.retain), (&b"v1"[..], true));
}

/// An inline subscription receives TCP clients' messages (retained ones first); dropping it
/// unsubscribes.
#[tokio::test]
async fn inline_subscription_receives_tcp_messages() {
    let (server, addr) = support::start().await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher
        .publish_qos1("dev/1/state", b"retained", true)
        .await;

    let mut subscription = server
        .inline_client()
        .subscribe("dev/+/state", QoS::AtLeastOnce)
        .unwrap();
    assert_eq!(subscription.filter(), "dev/+/state");
    let first = within(subscription.recv()).await.unwrap();
    assert_eq!((&first.payload[..], first.retain), (&b"retained"[..], true));

    assert_eq!(
        publisher.publish_qos1("dev/2/state", b"live", false).await,
        ReasonCode::SUCCESS
    );
    let live = within(subscription.recv()).await.unwrap();
    assert_eq!(live.topic.as_str(), "dev/2/state");
    assert_eq!(&live.payload[..], b"live");
    assert_eq!(live.qos, QoS::AtLeastOnce);
    assert!(!live.retain);

    drop(subscription);
    assert_eq!(
        publisher.publish_qos1("dev/3/state", b"gone", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
}

/// `subscribe_with` runs a callback for every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_subscribe_with_callback() {
    let (server, addr) = support::start().await;
    let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let task = server
        .inline_client()
        .subscribe_with("cb/#", QoS::AtMostOnce, move |publish| {
            sender.send(publish.payload.to_vec()).ok();
        })
        .unwrap();
    let mut publisher = Raw::v311(addr, "pub").await;
    publisher.publish_qos0("cb/a", b"1", false).await;
    publisher.publish_qos0("cb/b", b"2", false).await;
    assert_eq!(within(receiver.recv()).await.unwrap(), b"1");
    assert_eq!(within(receiver.recv()).await.unwrap(), b"2");
    drop(task);
}

/// Inline shared subscriptions take part in the group's round robin.
#[tokio::test]
async fn inline_shared_subscription() {
    let (server, addr) = support::start().await;
    let mut inline = server
        .inline_client()
        .subscribe("$share/workers/jobs", QoS::AtMostOnce)
        .unwrap();
    let mut tcp = Raw::v5(addr, "worker").await;
    tcp.subscribe("$share/workers/jobs", QoS::AtMostOnce).await;
    for i in 0..4u8 {
        server
            .publish("jobs", vec![i], false, QoS::AtMostOnce)
            .unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(within(inline.recv()).await.unwrap().payload[0]);
        got.push(tcp.expect_publish().await.payload[0]);
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3]);
    assert_eq!(tcp.try_recv(ABSENCE).await, None);
    assert!(inline.try_recv().is_none());
}

/// The inline client may publish to `$SYS` topics; TCP clients subscribed explicitly receive
/// them.
#[tokio::test]
async fn inline_client_may_publish_to_sys() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "monitor").await;
    raw.subscribe("$SYS/app/#", QoS::AtMostOnce).await;
    server
        .inline_client()
        .publish("$SYS/app/uptime", "42", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&raw.expect_publish().await.payload[..], b"42");
}

/// `inject_packet` publishes as the named client: subscribers get the message, the client
/// gets no acknowledgement, and its own No Local subscription is honoured.
#[tokio::test]
async fn inject_packet_publishes_as_the_client() {
    let (server, addr) = support::start().await;
    let mut puppet = Raw::v5(addr, "puppet").await;
    puppet
        .subscribe_opts(
            "inj/t",
            SubscriptionOptions {
                no_local: true,
                ..support::options(QoS::AtLeastOnce)
            },
            None,
        )
        .await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("inj/t", QoS::AtLeastOnce).await;

    server
        .inject_packet(
            "puppet",
            Packet::Publish(publish("inj/t", b"injected", QoS::AtLeastOnce, false, 11)),
        )
        .unwrap();
    let received = subscriber.expect_publish().await;
    assert_eq!(&received.payload[..], b"injected");
    assert_eq!(received.qos, QoS::AtLeastOnce);
    // No PUBACK for the injected packet and no copy back to the puppet (No Local).
    assert_eq!(puppet.try_recv(ABSENCE).await, None);
    assert!(server.info().snapshot().messages_received >= 1);
}

/// `inject_packet` can subscribe a client; the usual `$` rules apply to injected PUBLISH; an
/// unknown client is an error.
#[tokio::test]
async fn inject_packet_subscribe_and_errors() {
    let (server, addr) = support::start().await;
    let mut puppet = Raw::v5(addr, "puppet").await;
    server
        .inject_packet(
            "puppet",
            Packet::Subscribe(Subscribe::new(
                pid(1),
                vec![Subscription::new(s("injected/sub"), QoS::AtMostOnce)],
            )),
        )
        .unwrap();
    server
        .publish("injected/sub", "to the puppet", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&puppet.expect_publish().await.payload[..], b"to the puppet");

    let refused = server.inject_packet(
        "puppet",
        Packet::Publish(publish("$SYS/x", b"no", QoS::AtMostOnce, false, 0)),
    );
    assert!(
        matches!(
            refused,
            Err(BrokerError::Refused(ReasonCode::NOT_AUTHORIZED))
        ),
        "{refused:?}"
    );
    let unknown = server.inject_packet(
        "nobody",
        Packet::Publish(publish("a", b"x", QoS::AtMostOnce, false, 0)),
    );
    assert!(
        matches!(unknown, Err(BrokerError::UnknownClient(_))),
        "{unknown:?}"
    );
    assert!(
        server.inject_packet("puppet", Packet::PingReq).is_err(),
        "only PUBLISH, SUBSCRIBE and UNSUBSCRIBE"
    );
}
