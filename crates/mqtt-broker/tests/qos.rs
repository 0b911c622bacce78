//! QoS 1 and QoS 2 flows in both directions, delivered QoS, packet identifiers and the client's
//! Receive Maximum, over loopback TCP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::HashSet;
use std::num::NonZeroU16;
use std::time::Duration;

use mqtt_packets::{Packet, Protocol, PubAck, PubComp, PubRec, PubRel, QoS, ReasonCode};
use support::{Raw, connect, pid, publish};

const ABSENCE: Duration = Duration::from_millis(300);

/// QoS 1: PUBACK with the same packet identifier and 0x00 when a subscriber matched
/// [MQTT-4.3.2-4].
#[tokio::test]
async fn qos1_publish_is_acknowledged() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("q1/t", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher
        .send(publish("q1/t", b"one", QoS::AtLeastOnce, false, 42).into())
        .await;
    let ack = publisher.expect_puback().await;
    assert_eq!(ack.packet_id, pid(42));
    assert_eq!(ack.reason_code, ReasonCode::SUCCESS);
    let received = subscriber.expect_publish().await;
    assert_eq!(received.qos, QoS::AtLeastOnce);
    assert!(!received.dup, "first delivery has DUP 0 [MQTT-4.3.2-2]");
    assert_eq!(&received.payload[..], b"one");
}

/// v5 PUBACK 0x10 No matching subscribers when nobody is subscribed [MQTT-3.4.2-1]; 3.1.1 gets
/// a plain PUBACK.
#[tokio::test]
async fn puback_reports_no_matching_subscribers() {
    let (_server, addr) = support::start().await;
    let mut v5 = Raw::v5(addr, "lonely5").await;
    assert_eq!(
        v5.publish_qos1("nobody/here", b"x", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    let mut v311 = Raw::v311(addr, "lonely3").await;
    assert_eq!(
        v311.publish_qos1("nobody/here", b"x", false).await,
        ReasonCode::SUCCESS
    );
    // QoS 2: PUBREC carries 0x10 too.
    v5.send(publish("nobody/here", b"x", QoS::ExactlyOnce, false, 9).into())
        .await;
    let rec = v5.expect_pubrec().await;
    assert_eq!(rec.packet_id, pid(9));
    assert_eq!(rec.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
}

/// QoS 2 inbound: PUBREC, then PUBREL is answered with PUBCOMP [MQTT-4.3.3-8] [MQTT-4.3.3-11].
#[tokio::test]
async fn qos2_inbound_flow() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("q2/t", QoS::ExactlyOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    publisher
        .send(publish("q2/t", b"two", QoS::ExactlyOnce, false, 7).into())
        .await;
    let rec = publisher.expect_pubrec().await;
    assert_eq!(rec.packet_id, pid(7));
    assert_eq!(rec.reason_code, ReasonCode::SUCCESS);
    publisher.send(PubRel::new(pid(7)).into()).await;
    let comp = publisher.expect_pubcomp().await;
    assert_eq!(comp.packet_id, pid(7));
    assert_eq!(comp.reason_code, ReasonCode::SUCCESS);

    // Outbound QoS 2 to the subscriber: PUBLISH, PUBREC -> PUBREL, PUBCOMP.
    let received = subscriber.expect_publish().await;
    assert_eq!(received.qos, QoS::ExactlyOnce);
    assert_eq!(&received.payload[..], b"two");
    let id = received.packet_id.unwrap();
    subscriber.send(PubRec::new(id).into()).await;
    let rel = subscriber.expect_pubrel().await;
    assert_eq!(rel.packet_id, id);
    assert_eq!(rel.reason_code, ReasonCode::SUCCESS);
    subscriber.send(PubComp::new(id).into()).await;
    subscriber.ping().await;
}

/// A QoS 2 PUBLISH repeated before PUBREL is answered with PUBREC again and delivered only once
/// [MQTT-4.3.3-10]; after PUBCOMP the same identifier starts a new message [MQTT-4.3.3-12].
#[tokio::test]
async fn qos2_repeat_before_pubrel_is_delivered_once() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "sub").await;
    subscriber.subscribe("q2/dup", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    let first = publish("q2/dup", b"once", QoS::ExactlyOnce, false, 5);
    publisher.send(first.clone().into()).await;
    assert_eq!(publisher.expect_pubrec().await.packet_id, pid(5));
    let mut again = first.clone();
    again.dup = true;
    publisher.send(again.into()).await;
    let rec = publisher.expect_pubrec().await;
    assert_eq!(rec.packet_id, pid(5));
    assert!(!rec.reason_code.is_error());
    publisher.send(PubRel::new(pid(5)).into()).await;
    assert_eq!(publisher.expect_pubcomp().await.packet_id, pid(5));

    // The same id after PUBCOMP is a new message.
    let mut second = publish("q2/dup", b"twice", QoS::ExactlyOnce, false, 5);
    second.dup = false;
    publisher.send(second.into()).await;
    assert_eq!(publisher.expect_pubrec().await.packet_id, pid(5));
    publisher.send(PubRel::new(pid(5)).into()).await;
    assert_eq!(publisher.expect_pubcomp().await.packet_id, pid(5));

    assert_eq!(&subscriber.expect_publish().await.payload[..], b"once");
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"twice");
    assert_eq!(subscriber.try_recv(ABSENCE).await, None);
}

/// A PUBREL for an unknown identifier is answered with PUBCOMP 0x92 [MQTT-4.3.3-11]
/// [MQTT-3.7.2-1]; 3.1.1 gets a plain PUBCOMP.
#[tokio::test]
async fn pubrel_for_unknown_id_gets_pubcomp_0x92() {
    let (_server, addr) = support::start().await;
    let mut v5 = Raw::v5(addr, "rel5").await;
    v5.send(PubRel::new(pid(99)).into()).await;
    let comp = v5.expect_pubcomp().await;
    assert_eq!(comp.packet_id, pid(99));
    assert_eq!(comp.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);

    let mut v311 = Raw::v311(addr, "rel3").await;
    v311.send(PubRel::new(pid(99)).into()).await;
    assert_eq!(v311.expect_pubcomp().await.packet_id, pid(99));
}

/// A PUBREC for an identifier not in flight is answered with PUBREL 0x92 [MQTT-3.6.2-1].
#[tokio::test]
async fn pubrec_for_unknown_id_gets_pubrel_0x92() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "rec5").await;
    raw.send(PubRec::new(pid(77)).into()).await;
    let rel = raw.expect_pubrel().await;
    assert_eq!(rel.packet_id, pid(77));
    assert_eq!(rel.reason_code, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND);
}

/// The delivered QoS is the lower of the published QoS and the granted QoS [MQTT-3.8.4-8].
#[tokio::test]
async fn delivered_qos_is_the_minimum_of_published_and_granted() {
    let (_server, addr) = support::start().await;
    let mut subscribers = Vec::new();
    for (i, granted) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let mut raw = Raw::v5(addr, &format!("sub{i}")).await;
        raw.subscribe("min/t", granted).await;
        subscribers.push((raw, granted));
    }
    let mut publisher = Raw::v5(addr, "pub").await;
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let id = i as u16 + 1;
        publisher
            .send(publish("min/t", &[i as u8], qos, false, id).into())
            .await;
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => assert_eq!(publisher.expect_puback().await.packet_id, pid(id)),
            QoS::ExactlyOnce => {
                assert_eq!(publisher.expect_pubrec().await.packet_id, pid(id));
                publisher.send(PubRel::new(pid(id)).into()).await;
                assert_eq!(publisher.expect_pubcomp().await.packet_id, pid(id));
            }
        }
    }
    for (raw, granted) in &mut subscribers {
        for (i, published) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            let received = raw.expect_publish().await;
            assert_eq!(&received.payload[..], &[i as u8]);
            assert_eq!(received.qos, published.min(*granted), "granted {granted}");
            assert_eq!(
                received.packet_id.is_some(),
                received.qos != QoS::AtMostOnce
            );
        }
    }
}

/// The granted QoS is capped by the server's Maximum QoS [MQTT-3.2.2-10].
#[tokio::test]
async fn granted_qos_is_capped_by_the_server_maximum() {
    let mut options = mqtt_broker::Options::default();
    options.capabilities.maximum_qos = QoS::AtLeastOnce;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "capped").await;
    let suback = raw
        .subscribe_packet(mqtt_packets::Subscribe::new(
            pid(1),
            vec![mqtt_packets::Subscription::new(
                support::s("cap/t"),
                QoS::ExactlyOnce,
            )],
        ))
        .await;
    assert_eq!(suback.reason_codes, [ReasonCode::GRANTED_QOS_1]);
}

/// Outbound packet identifiers are non-zero and never reused while in flight [MQTT-2.2.1-4].
#[tokio::test]
async fn outbound_packet_ids_are_unique_while_in_flight() {
    let (server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "ids").await;
    subscriber.subscribe("ids/t", QoS::ExactlyOnce).await;
    for i in 0..40u8 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        server.publish("ids/t", vec![i], false, qos).unwrap();
    }
    let mut in_flight: HashSet<u16> = HashSet::new();
    let mut first_round = Vec::new();
    for i in 0..40u8 {
        let received = subscriber.expect_publish().await;
        assert_eq!(&received.payload[..], &[i]);
        let id = received.packet_id.expect("QoS > 0 has an id").get();
        assert_ne!(id, 0);
        assert!(in_flight.insert(id), "id {id} reused while in flight");
        first_round.push((id, received.qos));
    }
    // Complete half of them; new messages must not take any id still in flight.
    for &(id, qos) in first_round.iter().take(20) {
        let id = NonZeroU16::new(id).unwrap();
        if qos == QoS::AtLeastOnce {
            subscriber.send(PubAck::new(id).into()).await;
        } else {
            subscriber.send(PubRec::new(id).into()).await;
            assert_eq!(subscriber.expect_pubrel().await.packet_id, id);
            subscriber.send(PubComp::new(id).into()).await;
        }
        in_flight.remove(&id.get());
    }
    for i in 0..20u8 {
        server
            .publish("ids/t", vec![100 + i], false, QoS::AtLeastOnce)
            .unwrap();
    }
    for i in 0..20u8 {
        let received = subscriber.expect_publish().await;
        assert_eq!(&received.payload[..], &[100 + i]);
        let id = received.packet_id.unwrap().get();
        assert!(in_flight.insert(id), "id {id} reused while in flight");
    }
}

/// The client's Receive Maximum bounds the QoS 1 and 2 messages in flight to it
/// [MQTT-3.3.4-9]: a PUBACK (or PUBCOMP) opens the window again.
#[tokio::test]
async fn client_receive_maximum_is_respected() {
    let (server, addr) = support::start().await;
    let mut request = connect(Protocol::V5, "narrow");
    request.properties.receive_maximum = NonZeroU16::new(2);
    let (mut subscriber, _) = Raw::accepted(addr, request).await;
    subscriber.subscribe("rm/t", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(addr, "pub").await;
    for i in 0..5u8 {
        assert_eq!(
            publisher.publish_qos1("rm/t", &[i], false).await,
            ReasonCode::SUCCESS
        );
    }
    let first = subscriber.expect_publish().await;
    let second = subscriber.expect_publish().await;
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&[0][..], &[1][..])
    );
    assert_eq!(subscriber.try_recv(ABSENCE).await, None, "window of 2");

    subscriber
        .send(PubAck::new(first.packet_id.unwrap()).into())
        .await;
    let third = subscriber.expect_publish().await;
    assert_eq!(&third.payload[..], &[2]);
    assert_eq!(subscriber.try_recv(ABSENCE).await, None, "window of 2");

    for publish in [second, third] {
        subscriber
            .send(PubAck::new(publish.packet_id.unwrap()).into())
            .await;
    }
    let fourth = subscriber.expect_publish().await;
    let fifth = subscriber.expect_publish().await;
    assert_eq!(
        (&fourth.payload[..], &fifth.payload[..]),
        (&[3][..], &[4][..])
    );
    // QoS 0 messages are not limited by the window.
    server
        .publish("rm/t", "zero", false, QoS::AtMostOnce)
        .unwrap();
    let zero = subscriber.expect_publish().await;
    assert_eq!(zero.qos, QoS::AtMostOnce);
}

/// With QoS 2, a message stays in the Receive Maximum window until PUBCOMP [MQTT-3.3.4-9].
#[tokio::test]
async fn receive_maximum_counts_qos2_until_pubcomp() {
    let (server, addr) = support::start().await;
    let mut request = connect(Protocol::V5, "narrow2");
    request.properties.receive_maximum = NonZeroU16::new(1);
    let (mut subscriber, _) = Raw::accepted(addr, request).await;
    subscriber.subscribe("rm2/t", QoS::ExactlyOnce).await;
    server
        .publish("rm2/t", "a", false, QoS::ExactlyOnce)
        .unwrap();
    server
        .publish("rm2/t", "b", false, QoS::ExactlyOnce)
        .unwrap();
    let first = subscriber.expect_publish().await;
    assert_eq!(&first.payload[..], b"a");
    let id = first.packet_id.unwrap();
    subscriber.send(PubRec::new(id).into()).await;
    assert_eq!(subscriber.expect_pubrel().await.packet_id, id);
    assert_eq!(subscriber.try_recv(ABSENCE).await, None, "window of 1");
    subscriber.send(PubComp::new(id).into()).await;
    let second = subscriber.expect_publish().await;
    assert_eq!(&second.payload[..], b"b");
}

/// A PUBREC with an error code ends the outbound QoS 2 flow: no PUBREL, and the window slot is
/// freed [MQTT-4.3.3-4].
#[tokio::test]
async fn pubrec_error_ends_the_flow() {
    let (server, addr) = support::start().await;
    let mut request = connect(Protocol::V5, "refuser");
    request.properties.receive_maximum = NonZeroU16::new(1);
    let (mut subscriber, _) = Raw::accepted(addr, request).await;
    subscriber.subscribe("rec/t", QoS::ExactlyOnce).await;
    server
        .publish("rec/t", "a", false, QoS::ExactlyOnce)
        .unwrap();
    server
        .publish("rec/t", "b", false, QoS::ExactlyOnce)
        .unwrap();
    let first = subscriber.expect_publish().await;
    subscriber
        .send(PubRec::with_reason(first.packet_id.unwrap(), ReasonCode::UNSPECIFIED_ERROR).into())
        .await;
    // No PUBREL; the next message takes the freed slot.
    match subscriber.next().await {
        Packet::Publish(second) => assert_eq!(&second.payload[..], b"b"),
        other => panic!("expected the next PUBLISH, got {other:?}"),
    }
}

/// A message larger than the client's Maximum Packet Size is not sent to it (dropped as if
/// delivered); smaller ones are [MQTT-3.1.2-24] [MQTT-3.1.2-25].
#[tokio::test]
async fn messages_above_the_client_maximum_packet_size_are_dropped() {
    let (server, addr) = support::start().await;
    let mut request = connect(Protocol::V5, "small");
    request.properties.maximum_packet_size = std::num::NonZeroU32::new(64);
    let (mut subscriber, _) = Raw::accepted(addr, request).await;
    subscriber.subscribe("size/t", QoS::AtLeastOnce).await;
    server
        .publish("size/t", vec![b'x'; 200], false, QoS::AtLeastOnce)
        .unwrap();
    server
        .publish("size/t", "fits", false, QoS::AtLeastOnce)
        .unwrap();
    let received = subscriber.expect_publish().await;
    assert_eq!(&received.payload[..], b"fits");
    assert!(Packet::Publish(received).encoded_len(Protocol::V5) <= 64);
    support::wait_until("the drop is counted", || {
        server.info().snapshot().messages_dropped >= 1
    })
    .await;
}
