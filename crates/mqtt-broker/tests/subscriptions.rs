//! Subscription features: No Local, overlapping subscriptions and identifiers, shared
//! subscriptions, UNSUBSCRIBE, `$` topics, and features the server has switched off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::Options;
use mqtt_packets::{
    Packet, PubAck, QoS, ReasonCode, Subscribe, SubscribeProperties, Subscription,
    SubscriptionOptions,
};
use support::{Raw, options, pid, s};

const ABSENCE: Duration = Duration::from_millis(300);

fn no_local(qos: QoS) -> SubscriptionOptions {
    SubscriptionOptions {
        no_local: true,
        ..options(qos)
    }
}

/// No Local 1: the client's own messages are not sent back to it; other clients get them
/// [MQTT-3.8.3-3].
#[tokio::test]
async fn no_local_suppresses_own_messages() {
    let (_server, addr) = support::start().await;
    let mut me = Raw::v5(addr, "me").await;
    me.subscribe_opts("nl/t", no_local(QoS::AtLeastOnce), None)
        .await;
    let mut other = Raw::v5(addr, "other").await;
    other.subscribe("nl/t", QoS::AtLeastOnce).await;

    me.publish_qos1("nl/t", b"mine", false).await;
    // `other` (without No Local) gets it.
    assert_eq!(&other.expect_publish().await.payload[..], b"mine");
    other
        .send(support::publish("nl/t", b"theirs", QoS::AtLeastOnce, false, 8).into())
        .await;
    // `other` gets its own message back (no No Local) and its PUBACK, in either order.
    let mut kinds = Vec::new();
    for _ in 0..2 {
        match other.next().await {
            Packet::PubAck(ack) => kinds.push(format!("ack {}", ack.packet_id)),
            Packet::Publish(publish) => kinds.push(format!(
                "publish {}",
                String::from_utf8_lossy(&publish.payload)
            )),
            packet => panic!("unexpected {packet:?}"),
        }
    }
    kinds.sort();
    assert_eq!(kinds, ["ack 8", "publish theirs"]);
    // `me` gets only the other client's message, which was published after its own.
    let first = me.expect_publish().await;
    assert_eq!(&first.payload[..], b"theirs");
}

/// Overlapping subscriptions of one client: one copy, at the highest granted QoS, with the
/// identifiers of every matching subscription [MQTT-3.3.4-2] [MQTT-3.3.4-4].
#[tokio::test]
async fn overlapping_subscriptions_deliver_once_with_all_identifiers() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "overlap").await;
    raw.subscribe_opts("ov/+", options(QoS::AtMostOnce), Some(1))
        .await;
    raw.subscribe_opts("ov/#", options(QoS::ExactlyOnce), Some(2))
        .await;
    raw.subscribe_opts("ov/t", options(QoS::AtLeastOnce), None)
        .await;
    server
        .publish("ov/t", "once", false, QoS::ExactlyOnce)
        .unwrap();
    let received = raw.expect_publish().await;
    assert_eq!(&received.payload[..], b"once");
    assert_eq!(received.qos, QoS::ExactlyOnce);
    let mut identifiers: Vec<u32> = received
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    identifiers.sort_unstable();
    assert_eq!(identifiers, [1, 2]);
    server
        .publish("ov/t", "sentinel", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(
        &raw.expect_publish().await.payload[..],
        b"sentinel",
        "a single copy"
    );
}

/// One SUBSCRIBE's identifier applies to all its filters, and a delivery carries it once per
/// matching subscription [MQTT-3.3.4-4]; a subscription without one adds none.
#[tokio::test]
async fn subscription_identifier_is_sent_with_matching_messages() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "ids").await;
    let mut subscribe = Subscribe::new(
        pid(3),
        vec![
            Subscription::new(s("sid/a"), QoS::AtMostOnce),
            Subscription::new(s("sid/+"), QoS::AtMostOnce),
        ],
    );
    subscribe.properties = SubscribeProperties {
        subscription_identifier: std::num::NonZeroU32::new(268_435_455),
        ..SubscribeProperties::default()
    };
    let suback = raw.subscribe_packet(subscribe).await;
    assert_eq!(suback.reason_codes, [ReasonCode::GRANTED_QOS_0; 2]);
    raw.subscribe("plain/t", QoS::AtMostOnce).await;
    server
        .publish("sid/a", "a", false, QoS::AtMostOnce)
        .unwrap();
    let a = raw.expect_publish().await;
    let ids: Vec<u32> = a
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    assert_eq!(ids, [268_435_455, 268_435_455]);
    server
        .publish("sid/b", "b", false, QoS::AtMostOnce)
        .unwrap();
    let b = raw.expect_publish().await;
    assert_eq!(b.properties.subscription_identifiers.len(), 1);
    server
        .publish("plain/t", "p", false, QoS::AtMostOnce)
        .unwrap();
    let p = raw.expect_publish().await;
    assert!(p.properties.subscription_identifiers.is_empty());
}

/// A Subscription Identifier of 0 is a Protocol Error (§3.8.2.1.2): DISCONNECT 0x82.
#[tokio::test]
async fn subscription_identifier_zero_is_a_protocol_error() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "zero-id").await;
    // SUBSCRIBE id 1, properties [0x0B 0x00], filter "a", options 0.
    raw.send_bytes(&[
        0x82, 0x09, 0x00, 0x01, 0x02, 0x0B, 0x00, 0x00, 0x01, b'a', 0x00,
    ])
    .await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// Shared subscriptions: each message goes to exactly one member of the group, round robin
/// (§4.8.2); a non-shared subscriber still gets every message.
#[tokio::test]
async fn shared_subscription_round_robin() {
    let (_server, addr) = support::start().await;
    let mut m1 = Raw::v5(addr, "m1").await;
    m1.subscribe("$share/g/sh/t", QoS::AtLeastOnce).await;
    let mut m2 = Raw::v5(addr, "m2").await;
    m2.subscribe("$share/g/sh/t", QoS::AtLeastOnce).await;
    let mut everyone = Raw::v5(addr, "all").await;
    everyone.subscribe("sh/t", QoS::AtMostOnce).await;

    let mut publisher = Raw::v5(addr, "pub").await;
    for i in 0..10u8 {
        assert_eq!(
            publisher.publish_qos1("sh/t", &[i], false).await,
            ReasonCode::SUCCESS
        );
    }
    let mut seen = Vec::new();
    for member in [&mut m1, &mut m2] {
        let mut got = Vec::new();
        for _ in 0..5 {
            let publish = member.expect_publish().await;
            member
                .send(PubAck::new(publish.packet_id.unwrap()).into())
                .await;
            got.push(publish.payload[0]);
        }
        assert_eq!(member.try_recv(ABSENCE).await, None);
        // Round robin: every other message.
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 2),
            "not round robin: {got:?}"
        );
        seen.extend(got);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<u8>>());
    for i in 0..10u8 {
        assert_eq!(everyone.expect_publish().await.payload[0], i);
    }
}

/// Messages decoded from one read still go round robin among a group's members: the member is
/// chosen for each message, not once for the read (§4.8.2).
#[tokio::test]
async fn shared_subscription_round_robin_within_one_read() {
    use bytes::BytesMut;
    use mqtt_packets::Protocol;
    use tokio::io::AsyncWriteExt;

    let (_server, addr) = support::start().await;
    let mut m1 = Raw::v5(addr, "m1").await;
    m1.subscribe("$share/g/burst/t", QoS::AtMostOnce).await;
    let mut m2 = Raw::v5(addr, "m2").await;
    m2.subscribe("$share/g/burst/t", QoS::AtMostOnce).await;
    let mut everyone = Raw::v5(addr, "all").await;
    everyone.subscribe("burst/t", QoS::AtMostOnce).await;

    let mut out = BytesMut::new();
    for i in 0..10u8 {
        Packet::from(support::publish("burst/t", &[i], QoS::AtMostOnce, false, 0))
            .encode(Protocol::V5, &mut out)
            .unwrap();
    }
    let mut publisher = Raw::v5(addr, "pub").await;
    support::within(publisher.stream.write_all(&out))
        .await
        .unwrap();
    for member in [&mut m1, &mut m2] {
        let mut got = Vec::new();
        for _ in 0..5 {
            got.push(member.expect_publish().await.payload[0]);
        }
        assert_eq!(member.try_recv(ABSENCE).await, None);
        assert!(
            got.windows(2).all(|w| w[1] == w[0] + 2),
            "not round robin: {got:?}"
        );
    }
    for i in 0..10u8 {
        assert_eq!(everyone.expect_publish().await.payload[0], i);
    }
}

/// Two groups on the same filter each get every message once.
#[tokio::test]
async fn each_share_group_gets_each_message() {
    let (server, addr) = support::start().await;
    let mut a = Raw::v5(addr, "a").await;
    a.subscribe("$share/one/grp/t", QoS::AtMostOnce).await;
    let mut b = Raw::v5(addr, "b").await;
    b.subscribe("$share/two/grp/t", QoS::AtMostOnce).await;
    server
        .publish("grp/t", "x", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&a.expect_publish().await.payload[..], b"x");
    assert_eq!(&b.expect_publish().await.payload[..], b"x");
}

/// No Local on a shared subscription is a Protocol Error: DISCONNECT 0x82 [MQTT-3.8.3-4].
#[tokio::test]
async fn no_local_on_a_shared_subscription_is_a_protocol_error() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "sharer").await;
    raw.send(
        Subscribe::new(
            pid(1),
            vec![Subscription {
                filter: s("$share/g/nl/t"),
                options: no_local(QoS::AtMostOnce),
            }],
        )
        .into(),
    )
    .await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

/// UNSUBSCRIBE answers 0x00 or 0x11 per filter, in order [MQTT-3.11.3-1] [MQTT-3.10.4-5], and
/// stops delivery.
#[tokio::test]
async fn unsubscribe_reports_per_filter_and_stops_delivery() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "unsub").await;
    raw.subscribe("u/a", QoS::AtLeastOnce).await;
    raw.subscribe("$share/g/u/s", QoS::AtLeastOnce).await;
    let unsuback = raw.unsubscribe(4, &["u/a", "u/b", "$share/g/u/s"]).await;
    assert_eq!(
        unsuback.reason_codes,
        [
            ReasonCode::SUCCESS,
            ReasonCode::NO_SUBSCRIPTION_EXISTED,
            ReasonCode::SUCCESS
        ]
    );
    let mut publisher = Raw::v5(addr, "pub").await;
    assert_eq!(
        publisher.publish_qos1("u/a", b"x", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    assert_eq!(
        publisher.publish_qos1("u/s", b"x", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    assert_eq!(raw.try_recv(ABSENCE).await, None);
    // 3.1.1 UNSUBACK has no codes but is sent even when nothing was removed.
    let mut v311 = Raw::v311(addr, "unsub311").await;
    v311.unsubscribe(5, &["never/subscribed"]).await;
}

/// A repeated SUBSCRIBE to the same filter replaces the subscription's options
/// [MQTT-3.8.4-3]: one copy at the new QoS.
#[tokio::test]
async fn resubscribe_replaces_the_subscription() {
    let (server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "again").await;
    raw.subscribe("re/t", QoS::ExactlyOnce).await;
    raw.subscribe("re/t", QoS::AtMostOnce).await;
    server
        .publish("re/t", "x", false, QoS::ExactlyOnce)
        .unwrap();
    let received = raw.expect_publish().await;
    assert_eq!(received.qos, QoS::AtMostOnce);
    assert_eq!(raw.try_recv(ABSENCE).await, None);
}

/// Invalid topic filters are refused per filter in SUBACK (0x8F), the others granted
/// [MQTT-3.8.4-6] [MQTT-3.9.3-1].
#[tokio::test]
async fn invalid_filters_are_refused_in_suback() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "filters").await;
    let suback = raw
        .subscribe_packet(Subscribe::new(
            pid(2),
            vec![
                Subscription::new(s("ok/+"), QoS::AtLeastOnce),
                Subscription::new(s("bad/#/x"), QoS::AtLeastOnce),
                Subscription::new(s("bad+"), QoS::AtLeastOnce),
                Subscription::new(s("$share/g"), QoS::AtLeastOnce),
            ],
        ))
        .await;
    assert_eq!(suback.reason_codes[0], ReasonCode::GRANTED_QOS_1);
    for code in &suback.reason_codes[1..] {
        assert!(code.is_error(), "{suback:?}");
    }
    raw.ping().await;
    // 3.1.1: failures are 0x80.
    let mut v311 = Raw::v311(addr, "filters311").await;
    let suback = v311
        .subscribe_packet(Subscribe::new(
            pid(2),
            vec![
                Subscription::new(s("bad/#/x"), QoS::AtLeastOnce),
                Subscription::new(s("ok/#"), QoS::AtLeastOnce),
            ],
        ))
        .await;
    assert_eq!(
        suback.reason_codes,
        [ReasonCode::UNSPECIFIED_ERROR, ReasonCode::GRANTED_QOS_1]
    );
}

/// Wildcard filters do not match `$` topics [MQTT-4.7.2-1]; an explicit `$SYS/...` filter does.
#[tokio::test]
async fn wildcards_do_not_match_dollar_topics() {
    let (server, addr) = support::start().await;
    let mut wild = Raw::v5(addr, "wild").await;
    wild.subscribe("#", QoS::AtMostOnce).await;
    wild.subscribe("+/info", QoS::AtMostOnce).await;
    let mut sys = Raw::v5(addr, "sys").await;
    sys.subscribe("$SYS/test/#", QoS::AtMostOnce).await;
    server
        .publish("$SYS/test/info", "sys", false, QoS::AtMostOnce)
        .unwrap();
    server
        .publish("plain/info", "plain", false, QoS::AtMostOnce)
        .unwrap();
    assert_eq!(&sys.expect_publish().await.payload[..], b"sys");
    // The first message `wild` sees is the ordinary one, once.
    let first = wild.expect_publish().await;
    assert_eq!(first.topic.as_str(), "plain/info");
    assert_eq!(wild.try_recv(ABSENCE).await, None);
}

/// Features the server switched off are refused for v5 clients with DISCONNECT: shared 0x9E,
/// wildcards 0xA2, subscription identifiers 0xA1 (§3.2.2.3.11-13).
#[tokio::test]
async fn disabled_features_are_refused() {
    let mut options = Options::default();
    options.capabilities.shared_subscription_available = false;
    options.capabilities.wildcard_subscription_available = false;
    options.capabilities.subscription_identifiers_available = false;
    let (_server, addr) = support::start_with(options, true).await;

    let mut raw = Raw::v5(addr, "shared").await;
    raw.send(
        Subscribe::new(
            pid(1),
            vec![Subscription::new(s("$share/g/t"), QoS::AtMostOnce)],
        )
        .into(),
    )
    .await;
    raw.expect_disconnect(ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED)
        .await;

    let mut raw = Raw::v5(addr, "wild").await;
    raw.send(Subscribe::new(pid(1), vec![Subscription::new(s("a/+"), QoS::AtMostOnce)]).into())
        .await;
    raw.expect_disconnect(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED)
        .await;

    let mut raw = Raw::v5(addr, "ids").await;
    let mut subscribe = Subscribe::new(pid(1), vec![Subscription::new(s("a/b"), QoS::AtMostOnce)]);
    subscribe.properties.subscription_identifier = std::num::NonZeroU32::new(5);
    raw.send(subscribe.into()).await;
    raw.expect_disconnect(ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED)
        .await;

    // 3.1.1: a wildcard filter is refused in SUBACK with 0x80.
    let mut v311 = Raw::v311(addr, "wild311").await;
    let suback = v311
        .subscribe_packet(Subscribe::new(
            pid(1),
            vec![Subscription::new(s("a/#"), QoS::AtMostOnce)],
        ))
        .await;
    assert_eq!(suback.reason_codes, [ReasonCode::UNSPECIFIED_ERROR]);
}

/// Messages of one read on one topic share a trie lookup; a SUBSCRIBE, a change of its options
/// or an UNSUBSCRIBE between them in the same read still applies to the messages after it
/// [MQTT-3.8.4-3] [MQTT-3.3.4-4] [MQTT-3.10.4-2].
#[tokio::test]
async fn subscription_changes_within_one_read_apply_to_the_next_message() {
    use bytes::BytesMut;
    use mqtt_packets::{Protocol, Unsubscribe};
    use tokio::io::AsyncWriteExt;

    let (_server, addr) = support::start().await;
    let mut watcher = Raw::v5(addr, "watcher").await;
    watcher.subscribe("burst/t", QoS::AtMostOnce).await;
    let mut me = Raw::v5(addr, "me").await;

    let subscribe = |id: u16, identifier: u32| {
        let mut subscribe = Subscribe::new(
            pid(id),
            vec![Subscription {
                filter: s("burst/+"),
                options: options(QoS::AtMostOnce),
            }],
        );
        subscribe.properties.subscription_identifier = std::num::NonZeroU32::new(identifier);
        Packet::from(subscribe)
    };
    let message = |payload: &[u8]| {
        Packet::from(support::publish(
            "burst/t",
            payload,
            QoS::AtMostOnce,
            false,
            0,
        ))
    };
    let packets = [
        message(b"1"),
        subscribe(1, 5),
        message(b"2"),
        subscribe(2, 7),
        message(b"3"),
        Packet::from(Unsubscribe::new(pid(3), vec![s("burst/+")])),
        message(b"4"),
    ];
    let mut out = BytesMut::new();
    for packet in &packets {
        packet.encode(Protocol::V5, &mut out).unwrap();
    }
    // One write: the broker decodes all seven packets from one read.
    support::within(me.stream.write_all(&out)).await.unwrap();

    let mut mine = Vec::new();
    let mut acks = 0;
    while acks < 3 {
        match me.next().await {
            Packet::SubAck(_) | Packet::UnsubAck(_) => acks += 1,
            Packet::Publish(publish) => mine.push((
                publish.payload.to_vec(),
                publish.properties.subscription_identifiers.clone(),
            )),
            other => panic!("unexpected {other:?}"),
        }
    }
    while let Some(packet) = me.try_recv(ABSENCE).await {
        match packet {
            Packet::Publish(publish) => mine.push((
                publish.payload.to_vec(),
                publish.properties.subscription_identifiers.clone(),
            )),
            other => panic!("unexpected {other:?}"),
        }
    }
    let five = std::num::NonZeroU32::new(5).unwrap();
    let seven = std::num::NonZeroU32::new(7).unwrap();
    assert_eq!(
        mine,
        [(b"2".to_vec(), vec![five]), (b"3".to_vec(), vec![seven])],
        "only the messages after the SUBSCRIBE and before the UNSUBSCRIBE, with the identifier \
         in force"
    );
    for expected in [b"1", b"2", b"3", b"4"] {
        assert_eq!(&watcher.expect_publish().await.payload[..], expected);
    }
}

/// A read whose messages fan out to more deliveries than the broker stages at once is handed
/// over in parts; every subscriber still gets every message once, in order [MQTT-4.6.0-6].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_fan_out_from_one_read_arrives_whole_and_in_order() {
    use bytes::BytesMut;
    use mqtt_packets::Protocol;
    use tokio::io::AsyncWriteExt;

    // 90 x 100 = 9,000 deliveries from one read: more than one staging's worth (8,192).
    const SUBSCRIBERS: usize = 90;
    const MESSAGES: u8 = 100;
    let (_server, addr) = support::start().await;
    let mut subscribers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut subscriber = Raw::v311(addr, &format!("s{i}")).await;
        subscriber.subscribe("wide/t", QoS::AtMostOnce).await;
        subscribers.push(subscriber);
    }
    let mut out = BytesMut::new();
    for i in 0..MESSAGES {
        Packet::from(support::publish("wide/t", &[i], QoS::AtMostOnce, false, 0))
            .encode(Protocol::V3_1_1, &mut out)
            .unwrap();
    }
    let mut publisher = Raw::v311(addr, "wide-pub").await;
    support::within(publisher.stream.write_all(&out))
        .await
        .unwrap();
    for subscriber in &mut subscribers {
        for i in 0..MESSAGES {
            assert_eq!(subscriber.expect_publish().await.payload[..], [i]);
        }
    }
    for subscriber in &mut subscribers {
        assert_eq!(subscriber.try_recv(Duration::from_millis(50)).await, None);
    }
}
