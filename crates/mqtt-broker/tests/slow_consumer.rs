//! A subscriber that stops reading must not block the publisher or other subscribers: its
//! messages are dropped (and counted) once its queue is full.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use bytes::BytesMut;
use mqtt_packets::{Packet, Protocol, QoS};
use support::{Raw, connect, publish};
use tokio::io::AsyncWriteExt;

const BATCHES: u32 = 40;
const BATCH: u32 = 500;
const PAYLOAD: usize = 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_does_not_block_the_publisher() {
    let test = async {
        let (server, addr) = support::start().await;

        // The slow subscriber: a small receive buffer, and it never reads after its SUBACK.
        let mut slow = Raw::connect_with_receive_buffer(addr, Protocol::V5, 4096).await;
        slow.send(connect(Protocol::V5, "slow").into()).await;
        support::connack(slow.recv().await.unwrap());
        slow.subscribe("flood/t", QoS::AtMostOnce).await;

        let mut fast = Raw::v5(addr, "fast").await;
        fast.subscribe("flood/t", QoS::AtMostOnce).await;
        let mut publisher = Raw::v5(addr, "pub").await;

        let mut next = 0u32;
        for _ in 0..BATCHES {
            // One write of BATCH messages; it must never wait on the slow subscriber.
            let mut out = BytesMut::new();
            for i in next..next + BATCH {
                let mut payload = vec![0u8; PAYLOAD];
                payload[..4].copy_from_slice(&i.to_be_bytes());
                Packet::from(publish("flood/t", &payload, QoS::AtMostOnce, false, 0))
                    .encode(Protocol::V5, &mut out)
                    .unwrap();
            }
            support::within(publisher.stream.write_all(&out))
                .await
                .unwrap();
            // The reading subscriber gets every message, in order.
            for i in next..next + BATCH {
                let received = fast.expect_publish().await;
                assert_eq!(received.payload.len(), PAYLOAD);
                assert_eq!(&received.payload[..4], &i.to_be_bytes());
            }
            next += BATCH;
        }
        // The publisher's connection is still served promptly.
        publisher.ping().await;
        let snapshot = server.info().snapshot();
        assert!(
            snapshot.messages_dropped > 0,
            "the slow subscriber's messages were dropped: {snapshot:?}"
        );
        assert!(snapshot.messages_dropped < u64::from(BATCHES * BATCH));
        assert!(server.connected_clients().contains(&"slow".to_string()));
        drop(slow);
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("the flood took too long");
}

/// Large payloads go out from the shared message beside their packet heads (a vectored write).
/// A subscriber that reads late makes those writes partial; every message must still arrive
/// whole and in order, small ones between large ones included, at both levels.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_arrive_whole_when_written_in_parts() {
    const COUNT: u16 = 120;
    // Around the size from which payloads are written apart, and well past a socket buffer.
    const SIZES: [usize; 6] = [10, 1023, 1024, 1500, 4096, 70_000];
    let payload_of = |i: u16| -> Vec<u8> {
        let size = SIZES[usize::from(i) % SIZES.len()];
        let mut payload: Vec<u8> = (0..size).map(|b| (b as u8).wrapping_add(i as u8)).collect();
        if size >= 2 {
            payload[..2].copy_from_slice(&i.to_be_bytes());
        }
        payload
    };
    let test = async {
        let (_server, addr) = support::start().await;
        for protocol in [Protocol::V5, Protocol::V3_1_1] {
            let topic = format!("large/{protocol}");
            let mut subscriber = Raw::connect_with_receive_buffer(addr, protocol, 4096).await;
            subscriber
                .send(connect(protocol, &format!("late-{protocol}")).into())
                .await;
            support::connack(subscriber.recv().await.unwrap());
            subscriber.subscribe(&topic, QoS::AtLeastOnce).await;

            // Everything is published (and acknowledged to the publisher) before the
            // subscriber reads a byte, so the broker's writes fill its socket and stop part way.
            let mut publisher = Raw::connect(addr, protocol).await;
            publisher
                .send(connect(protocol, &format!("pub-{protocol}")).into())
                .await;
            support::connack(publisher.recv().await.unwrap());
            let mut out = BytesMut::new();
            for i in 1..=COUNT {
                let qos = if i % 3 == 0 {
                    QoS::AtMostOnce
                } else {
                    QoS::AtLeastOnce
                };
                Packet::from(publish(&topic, &payload_of(i), qos, false, i))
                    .encode(protocol, &mut out)
                    .unwrap();
            }
            support::within(publisher.stream.write_all(&out))
                .await
                .unwrap();
            for _ in (1..=COUNT).filter(|i| i % 3 != 0) {
                publisher.expect_puback().await;
            }

            for i in 1..=COUNT {
                let received = subscriber.expect_publish().await;
                assert_eq!(
                    received.payload.len(),
                    payload_of(i).len(),
                    "{protocol}: #{i}"
                );
                assert!(
                    received.payload[..] == payload_of(i)[..],
                    "{protocol}: #{i} arrived changed"
                );
                if let Some(id) = received.packet_id {
                    subscriber.send(mqtt_packets::PubAck::new(id).into()).await;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("the exchange took too long");
}
