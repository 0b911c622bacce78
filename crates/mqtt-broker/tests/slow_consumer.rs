//! Subscribers that stop reading. A subscriber whose queue is full holds its publishers back
//! (flow control) but only for so long: one that takes nothing from its full queue for the
//! slow-subscriber timeout is declared stuck and, by policy, disconnected (v5: DISCONNECT 0x97)
//! or skipped, so that a silent client never freezes the broker, and a healthy subscriber to the
//! same topic keeps receiving everything. The stuck cases run over in-memory streams under
//! Tokio's paused clock: no test waits 30 real seconds.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::{AllowAllHook, Options, Server, SlowSubscriberPolicy};
use mqtt_packets::{Disconnect, Packet, PacketId, Protocol, QoS, ReasonCode};
use support::{Duplex as Client, Raw, connect, publish};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

const FLOOD: u32 = 4_000;

/// A publisher writing `FLOOD` QoS 0 messages of 1 KiB, numbered; it waits whenever the broker
/// stops reading it.
fn flood(mut publisher: Client) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for i in 0..FLOOD {
            let mut payload = vec![0u8; 1024];
            payload[..4].copy_from_slice(&i.to_be_bytes());
            publisher
                .send(publish("flood/t", &payload, QoS::AtMostOnce, false, 0).into())
                .await;
        }
        publisher
    })
}

/// Reads `FLOOD` messages in order (the healthy subscriber).
fn read_all(mut subscriber: Client) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for i in 0..FLOOD {
            match subscriber.recv().await {
                Some(Packet::Publish(publish)) => {
                    assert_eq!(
                        &publish.payload[..4],
                        &i.to_be_bytes(),
                        "in order, none lost"
                    );
                }
                other => panic!("expected message {i}, got {other:?}"),
            }
        }
        subscriber
    })
}

fn server(policy: SlowSubscriberPolicy) -> Server {
    let mut options = Options::default();
    options.slow_subscriber_policy = policy;
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    server
}

/// A subscriber that never reads is cut after `slow_subscriber_timeout` (30 s by default); until
/// then the publisher is held back, and the healthy subscriber gets every message.
#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_reads_is_disconnected_after_the_timeout() {
    let server = server(SlowSubscriberPolicy::Disconnect);
    let mut slow = Client::connect(&server, "slow", 8 * 1024, 100).await;
    slow.subscribe("flood/t", QoS::AtMostOnce).await;
    let mut fast = Client::connect(&server, "fast", 64 * 1024, 100).await;
    fast.subscribe("flood/t", QoS::AtMostOnce).await;
    let publisher = Client::connect(&server, "pub", 64 * 1024, 100).await;
    let start = Instant::now();
    let reading = read_all(fast);
    let publishing = flood(publisher);
    let fast = reading.await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30),
        "the publisher waited for the slow subscriber first: {elapsed:?}"
    );
    let mut publisher = publishing.await.unwrap();
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.slow_subscribers, 1, "{snapshot:?}");
    assert!(!server.connected_clients().contains(&"slow".to_string()));
    // The slow client finds its connection closed once it reads.
    while slow.recv().await.is_some() {}
    // The publisher's connection is served promptly again.
    publisher.send(Packet::PingReq).await;
    assert_eq!(publisher.recv().await, Some(Packet::PingResp));
    drop(fast);
}

/// A v5 subscriber that reads but never acknowledges: its window (Receive Maximum 5) stays
/// full, its queue fills, and after the timeout it gets DISCONNECT 0x97 Quota exceeded.
#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_acknowledges_gets_disconnect_0x97() {
    let server = server(SlowSubscriberPolicy::Disconnect);
    let mut silent = Client::connect(&server, "silent", 1 << 20, 5).await;
    silent.subscribe("flood/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&server, "pub", 1 << 20, 100).await;
    let start = Instant::now();
    let publishing = tokio::spawn(async move {
        for i in 0..2_000u16 {
            let id = i % 1000 + 1;
            publisher
                .send(publish("flood/t", b"x", QoS::AtLeastOnce, false, id).into())
                .await;
        }
        publisher
    });
    let mut publishes = 0;
    let disconnect = loop {
        match silent.recv().await {
            Some(Packet::Publish(_)) => publishes += 1,
            Some(Packet::Disconnect(disconnect)) => break disconnect,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(disconnect, Disconnect::new(ReasonCode::QUOTA_EXCEEDED));
    assert_eq!(
        publishes, 5,
        "never more than its Receive Maximum [MQTT-3.3.4-9]"
    );
    assert!(start.elapsed() >= Duration::from_secs(30));
    assert_eq!(silent.recv().await, None);
    let mut publisher = publishing.await.unwrap();
    // Every message was acknowledged to the publisher once it could go on.
    let mut acks = 0;
    while acks < 2_000 {
        match publisher.recv().await {
            Some(Packet::PubAck(_)) => acks += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(server.info().snapshot().slow_subscribers, 1);
}

/// With the skip policy a stuck subscriber stays connected: its QoS 0 messages are dropped
/// (counted as `subscriber_stuck`) and nobody waits for it. When it reads again it gets what
/// stayed queued, in order.
#[tokio::test(start_paused = true)]
async fn the_skip_policy_keeps_a_stuck_subscriber_and_drops_its_qos0() {
    let server = server(SlowSubscriberPolicy::Skip);
    let mut slow = Client::connect(&server, "slow", 8 * 1024, 100).await;
    slow.subscribe("flood/t", QoS::AtMostOnce).await;
    let mut fast = Client::connect(&server, "fast", 64 * 1024, 100).await;
    fast.subscribe("flood/t", QoS::AtMostOnce).await;
    let publisher = Client::connect(&server, "pub", 64 * 1024, 100).await;
    let reading = read_all(fast);
    let publishing = flood(publisher);
    let _fast = reading.await.unwrap();
    let _publisher = publishing.await.unwrap();
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.slow_subscribers, 1);
    assert!(
        snapshot.messages_dropped_by_reason[5] > 0,
        "subscriber_stuck: {snapshot:?}"
    );
    assert!(server.connected_clients().contains(&"slow".to_string()));
    // It reads again: what stayed queued, in order.
    let mut last = None;
    while let Ok(Some(packet)) = tokio::time::timeout(Duration::from_secs(1), slow.recv()).await {
        let Packet::Publish(publish) = packet else {
            panic!("unexpected {packet:?}")
        };
        let i = u32::from_be_bytes(publish.payload[..4].try_into().unwrap());
        assert!(last.is_none_or(|last| i > last), "in order");
        last = Some(i);
    }
    assert!(last.is_some());
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

/// A publisher taken over while it waits for a full subscriber: the message it was waiting to
/// place is not lost. It is a QoS 2 message whose id is already in the session's inbound state,
/// so the new connection's resend is answered PUBREC without a second delivery [MQTT-4.3.3-9];
/// the subscriber gets it exactly once.
#[tokio::test(start_paused = true)]
async fn a_publisher_taken_over_while_it_waits_loses_nothing() {
    let mut options = Options::default();
    options.slow_subscriber_timeout = Duration::from_secs(3600);
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    let mut subscriber = Client::connect(&server, "sub", 1 << 20, 5).await;
    subscriber.subscribe("t", QoS::ExactlyOnce).await;
    fill(&server).await;
    let (mut first, connack) =
        Client::open(&server, 1 << 20, support::persistent_v5("pub", true)).await;
    support::connack(connack);
    first
        .send(publish("t", b"precious", QoS::ExactlyOnce, false, 7).into())
        .await;
    // Busy-wait (the paused clock does not move while this task runs) until it waits.
    while server.info().snapshot().publishers_waiting == 0 {
        tokio::task::yield_now().await;
    }
    let (mut second, connack) =
        Client::open(&server, 1 << 20, support::persistent_v5("pub", false)).await;
    assert!(support::connack(connack).session_present);
    let mut resend = publish("t", b"precious", QoS::ExactlyOnce, false, 7);
    resend.dup = true;
    second.send(resend.into()).await;
    match second.recv().await {
        Some(Packet::PubRec(pubrec)) => assert_eq!(pubrec.packet_id.get(), 7),
        other => panic!("expected PUBREC, got {other:?}"),
    }
    second
        .send(mqtt_packets::PubRel::new(PacketId::new(7).unwrap()).into())
        .await;
    assert!(matches!(second.recv().await, Some(Packet::PubComp(_))));
    drop(first);
    // The subscriber reads now, acknowledging everything: "precious" arrives once.
    let mut publishes = 0;
    let mut precious = 0;
    while let Ok(Some(packet)) =
        tokio::time::timeout(Duration::from_secs(1), subscriber.recv()).await
    {
        match packet {
            Packet::Publish(publish) => {
                publishes += 1;
                if &publish.payload[..] == b"precious" {
                    precious += 1;
                }
                let id = publish.packet_id.unwrap();
                if publish.qos == QoS::AtLeastOnce {
                    subscriber.send(mqtt_packets::PubAck::new(id).into()).await;
                } else {
                    subscriber.send(mqtt_packets::PubRec::new(id).into()).await;
                }
            }
            Packet::PubRel(pubrel) => {
                subscriber
                    .send(mqtt_packets::PubComp::new(pubrel.packet_id).into())
                    .await;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(publishes, 1_030);
    assert_eq!(precious, 1);
    assert_eq!(server.info().snapshot().messages_dropped, 0);
}

/// A subscriber that starts a clean session while a publisher waits for room in its old one:
/// the waiting deliveries were for the old session's subscriptions and are not delivered to the
/// new one; the publisher goes on at once.
#[tokio::test(start_paused = true)]
async fn deliveries_waiting_for_a_session_that_starts_clean_are_not_delivered_to_it() {
    let mut options = Options::default();
    options.slow_subscriber_timeout = Duration::from_secs(3600);
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    let mut connect = support::persistent_v5("sub", true);
    connect.properties.receive_maximum = std::num::NonZeroU16::new(5);
    let (mut old, connack) = Client::open(&server, 1 << 20, connect).await;
    support::connack(connack);
    old.subscribe("t", QoS::AtLeastOnce).await;
    fill(&server).await;
    let mut publisher = Client::connect(&server, "pub", 1 << 20, 100).await;
    publisher
        .send(publish("t", b"old session's", QoS::AtLeastOnce, false, 9).into())
        .await;
    while server.info().snapshot().publishers_waiting == 0 {
        tokio::task::yield_now().await;
    }
    let (mut new, connack) =
        Client::open(&server, 1 << 20, support::persistent_v5("sub", true)).await;
    assert!(!support::connack(connack).session_present);
    match publisher.recv().await {
        Some(Packet::PubAck(ack)) => assert_eq!(ack.packet_id.get(), 9),
        other => panic!("expected PUBACK, got {other:?}"),
    }
    let arrived = tokio::time::timeout(Duration::from_secs(5), new.recv()).await;
    assert!(arrived.is_err(), "the new session got {arrived:?}");
    drop(old);
}

/// A subscriber that drains, but only a message now and then (one every 25 s, with a Receive
/// Maximum of 1), never makes room for its publishers: it is stuck 30 s after they started
/// waiting, however often it takes one.
#[tokio::test(start_paused = true)]
async fn a_trickling_subscriber_is_stuck_after_the_timeout() {
    let server = server(SlowSubscriberPolicy::Disconnect);
    let mut trickle = Client::connect(&server, "trickle", 1 << 20, 1).await;
    trickle.subscribe("flood/t", QoS::AtLeastOnce).await;
    let mut publisher = Client::connect(&server, "pub", 1 << 20, 100).await;
    let publishing = tokio::spawn(async move {
        for i in 0..1_100u16 {
            publisher
                .send(publish("flood/t", b"x", QoS::AtLeastOnce, false, i % 1000 + 1).into())
                .await;
        }
        publisher
    });
    while server.info().snapshot().publishers_waiting == 0 {
        tokio::task::yield_now().await;
    }
    let waiting_from = Instant::now();
    let disconnect = loop {
        match trickle.recv().await {
            Some(Packet::Publish(publish)) => {
                tokio::time::sleep(Duration::from_secs(25)).await;
                // The server may have closed the connection meanwhile: its DISCONNECT is read
                // next.
                let mut out = BytesMut::new();
                Packet::from(mqtt_packets::PubAck::new(publish.packet_id.unwrap()))
                    .encode(Protocol::V5, &mut out)
                    .unwrap();
                trickle.stream.write_all(&out).await.ok();
            }
            Some(Packet::Disconnect(disconnect)) => break disconnect,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(disconnect, Disconnect::new(ReasonCode::QUOTA_EXCEEDED));
    let elapsed = waiting_from.elapsed();
    assert!(
        elapsed >= Duration::from_secs(30) && elapsed < Duration::from_secs(60),
        "{elapsed:?}"
    );
    drop(publishing.await.unwrap());
    assert_eq!(server.info().snapshot().slow_subscribers, 1);
}

/// A client that publishes at QoS 1 and never reads its PUBACKs: once its unsent answers pile up
/// it is no longer read (TCP holds it back), and it is closed when they were not written within
/// the slow-subscriber timeout (30 s), not at once.
#[tokio::test(start_paused = true)]
async fn a_client_that_never_reads_its_acknowledgements_is_held_back_then_closed() {
    let server = server(SlowSubscriberPolicy::Disconnect);
    let publisher = Client::connect(&server, "deaf", 8 * 1024, 100).await;
    let (mut reader, mut writer) = tokio::io::split(publisher.stream);
    let start = Instant::now();
    let writing = tokio::spawn(async move {
        for i in 0..5_000u16 {
            let mut out = BytesMut::new();
            Packet::from(publish("deaf/t", b"x", QoS::AtLeastOnce, false, i + 1))
                .encode(Protocol::V5, &mut out)
                .unwrap();
            if writer.write_all(&out).await.is_err() {
                break;
            }
        }
        writer
    });
    // The client reads nothing until its writes went through: they are held back until the
    // server gives up on it.
    let _writer = writing.await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(30),
        "{:?}",
        start.elapsed()
    );
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).await.ok();
    assert!(!server.connected_clients().contains(&"deaf".to_string()));
}

/// Another publisher fills the queue of a subscriber to `t` with a Receive Maximum of 5 that
/// does not acknowledge: 5 messages in flight, 1,024 queued; each is acknowledged to it.
async fn fill(server: &Server) {
    let mut filler = Client::connect(server, "filler", 1 << 20, 100).await;
    for i in 0..1_029u16 {
        filler
            .send(publish("t", b"fill", QoS::AtLeastOnce, false, i % 1000 + 1).into())
            .await;
    }
    for _ in 0..1_029 {
        assert!(matches!(filler.recv().await, Some(Packet::PubAck(_))));
    }
}
