//! Flow control end to end, over real sockets with `rumqttc` clients (3.1.1 and 5) as users run
//! them: a subscriber that stops reading slows its publishers down instead of losing their
//! messages, retained messages at SUBSCRIBE arrive whole however many there are, and an offline
//! session's overflow is counted.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mqtt_broker::hooks::{DropReason, HookEvents};
use mqtt_broker::{ClientInfo, DropOrder, Hook, Options, Server};
use mqtt_packets::{Packet as Packet5, Publish as RawPublish};
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
use support::Raw;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a whole transfer may take (debug build, loaded 2-core machine).
const TRANSFER: Duration = Duration::from_secs(300);

fn client_options(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_inflight(100);
    options
}

/// Options whose slow-subscriber timeout cannot cut a subscriber these tests pause on purpose.
fn patient() -> Options {
    let mut options = Options::default();
    options.slow_subscriber_timeout = Duration::from_secs(3600);
    options
}

/// Polls until the SUBACK.
async fn subscribed(eventloop: &mut EventLoop) {
    support::within(async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
                return;
            }
        }
    })
    .await;
}

/// A subscriber's event loop on a task of its own, not polled (so its socket is not read)
/// while `paused` holds true. It records, per publisher, the sequence numbers received, until
/// it has `expected` messages or nothing arrives for a long while.
fn receive(
    mut eventloop: EventLoop,
    publishers: usize,
    expected: usize,
    mut paused: watch::Receiver<bool>,
) -> JoinHandle<Vec<Vec<u32>>> {
    tokio::spawn(async move {
        let mut received = vec![Vec::new(); publishers];
        let mut count = 0;
        while count < expected {
            while *paused.borrow() {
                paused.changed().await.unwrap();
            }
            let event = tokio::time::timeout(Duration::from_secs(60), eventloop.poll()).await;
            let Ok(event) = event else {
                break;
            };
            if let Event::Incoming(Packet::Publish(publish)) = event.expect("subscriber failed") {
                let publisher = usize::from(publish.payload[0]);
                let seq = u32::from_be_bytes(publish.payload[1..5].try_into().unwrap());
                received[publisher].push(seq);
                count += 1;
            }
        }
        received
    })
}

/// A publisher sending `count` messages of 64 bytes on `topic` at `qos`, then waiting for their
/// acknowledgements. Returns once all are sent (and, at QoS 1 and 2, acknowledged).
fn publish_all(
    addr: SocketAddr,
    index: u8,
    topic: &'static str,
    qos: QoS,
    count: u32,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let (client, mut eventloop) =
            AsyncClient::new(client_options(&format!("pub-{index}"), addr), 100);
        let sending = tokio::spawn(async move {
            for seq in 0..count {
                let mut payload = vec![index; 64];
                payload[1..5].copy_from_slice(&seq.to_be_bytes());
                client.publish(topic, qos, false, payload).await.unwrap();
            }
            client
        });
        let mut done = 0;
        while done < count {
            match eventloop.poll().await.expect("publisher failed") {
                Event::Incoming(Packet::PubAck(_)) if qos == QoS::AtLeastOnce => done += 1,
                Event::Incoming(Packet::PubComp(_)) if qos == QoS::ExactlyOnce => done += 1,
                Event::Outgoing(Outgoing::Publish(_)) if qos == QoS::AtMostOnce => done += 1,
                _ => {}
            }
        }
        let client = sending.await.unwrap();
        // The DISCONNECT goes after every message.
        client.disconnect().await.unwrap();
        while !matches!(
            eventloop.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
}

/// Fan-in from `publishers` fast publishers to one rumqttc subscriber that stops reading until
/// the broker holds the publishers back, then reads again. Every message arrives once, in order
/// per publisher, and nothing is dropped.
async fn slow_subscriber_loses_nothing(qos: QoS, publishers: u8, per_publisher: u32) {
    let (server, addr) = support::start_with(patient(), true).await;
    let (subscriber, mut sub_loop) = AsyncClient::new(client_options("slow", addr), 100);
    subscriber.subscribe("flow/t", qos).await.unwrap();
    subscribed(&mut sub_loop).await;
    let (pause, paused) = watch::channel(true);
    let expected = usize::from(publishers) * per_publisher as usize;
    let receiving = receive(sub_loop, usize::from(publishers), expected, paused);
    let sending: Vec<_> = (0..publishers)
        .map(|index| publish_all(addr, index, "flow/t", qos, per_publisher))
        .collect();
    // The subscriber does not read: its queue fills, and the publishers are held back.
    support::wait_until_within("a publisher waits for the subscriber", TRANSFER, || {
        server.info().snapshot().publishers_waiting > 0
    })
    .await;
    assert_eq!(server.info().snapshot().messages_dropped, 0);
    pause.send(false).unwrap();
    let received = tokio::time::timeout(TRANSFER, receiving)
        .await
        .expect("the transfer took too long")
        .unwrap();
    for (publisher, seqs) in received.iter().enumerate() {
        let expected: Vec<u32> = (0..per_publisher).collect();
        assert!(
            *seqs == expected,
            "publisher {publisher}: {} of {per_publisher} received, first gap at {:?}",
            seqs.len(),
            seqs.iter()
                .zip(0..)
                .find(|(seq, i)| **seq != *i)
                .map(|(_, i)| i)
        );
    }
    // The publishers finish once the subscriber caught up.
    for publisher in sending {
        tokio::time::timeout(TRANSFER, publisher)
            .await
            .expect("a publisher did not finish")
            .unwrap();
    }
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.messages_dropped, 0, "{snapshot:?}");
    assert!(snapshot.publisher_waits > 0);
    assert_eq!(snapshot.publishers_waiting, 0);
    assert_eq!(snapshot.slow_subscribers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_loses_nothing_at_qos1() {
    slow_subscriber_loses_nothing(QoS::AtLeastOnce, 4, 25_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_loses_nothing_at_qos2() {
    slow_subscriber_loses_nothing(QoS::ExactlyOnce, 4, 25_000).await;
}

/// QoS 0 too, by default ([`mqtt_broker::OverloadPolicy::Backpressure`]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_subscriber_loses_nothing_at_qos0_by_default() {
    slow_subscriber_loses_nothing(QoS::AtMostOnce, 4, 25_000).await;
}

/// Sets `count` retained messages on `r/<i>` at QoS 1 from the host program.
fn retain_many(server: &Server, count: u32) {
    for i in 0..count {
        server
            .publish(
                &format!("r/{i}"),
                i.to_be_bytes().to_vec(),
                true,
                mqtt_packets::QoS::AtLeastOnce,
            )
            .unwrap();
    }
}

/// Subscribes with a 3.1.1 rumqttc client and counts the retained messages until `count`
/// distinct topics arrived [MQTT-3.3.1-9].
async fn all_retained_arrive(count: u32) {
    let (server, addr) = support::start().await;
    retain_many(&server, count);
    let (subscriber, mut eventloop) = AsyncClient::new(client_options("retained", addr), 100);
    subscriber.subscribe("r/#", QoS::AtLeastOnce).await.unwrap();
    let mut topics = BTreeSet::new();
    tokio::time::timeout(TRANSFER, async {
        while topics.len() < count as usize {
            if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.unwrap() {
                assert!(publish.retain, "sent because of the subscription");
                assert_eq!(publish.qos, QoS::AtLeastOnce);
                let i: u32 = publish.topic[2..].parse().unwrap();
                assert_eq!(&publish.payload[..], &i.to_be_bytes());
                assert!(topics.insert(i), "{} twice", publish.topic);
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {count} retained messages arrived", topics.len()));
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.messages_dropped, 0, "{snapshot:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_retained_messages_arrive_in_one_subscription_mqtt_3_3_1_9() {
    all_retained_arrive(5_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_retained_messages_arrive_in_one_subscription_mqtt_3_3_1_9() {
    all_retained_arrive(50_000).await;
}

/// A v5 client with a Receive Maximum of 10 that acknowledges one message at a time gets every
/// retained message, never more than 10 unacknowledged at once [MQTT-3.3.4-9].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_paced_by_receive_maximum_mqtt_3_3_4_9() {
    const COUNT: u32 = 3_000;
    let (server, addr) = support::start().await;
    retain_many(&server, COUNT);
    let mut connect = support::connect(mqtt_packets::Protocol::V5, "paced");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(10);
    let (mut client, _) = Raw::accepted(addr, connect).await;
    client
        .subscribe("r/#", mqtt_packets::QoS::AtLeastOnce)
        .await;
    let mut unacknowledged = std::collections::VecDeque::new();
    let mut topics = BTreeSet::new();
    let mut most = 0;
    let mut rounds = 0;
    while topics.len() < COUNT as usize {
        // Fill the window, check now and then that nothing more comes, then acknowledge the
        // five oldest.
        while unacknowledged.len() < 10 && topics.len() < COUNT as usize {
            let publish = client.expect_publish().await;
            assert!(publish.retain);
            topics.insert(publish.topic.to_string());
            unacknowledged.push_back(publish.packet_id.unwrap());
            most = most.max(unacknowledged.len());
        }
        if rounds % 100 == 0 && unacknowledged.len() == 10 {
            let extra = client.try_recv(Duration::from_millis(50)).await;
            assert!(
                extra.is_none(),
                "more than the Receive Maximum in flight: {extra:?}"
            );
        }
        rounds += 1;
        for _ in 0..5 {
            if let Some(id) = unacknowledged.pop_front() {
                client.send(mqtt_packets::PubAck::new(id).into()).await;
            }
        }
    }
    assert_eq!(most, 10, "the window was used");
    assert_eq!(server.info().snapshot().messages_dropped, 0);
}

/// UNSUBSCRIBE while a subscription's retained messages are still being sent stops them: what
/// was queued may still arrive, nothing more is added [MQTT-3.10.4-2].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_stops_the_retained_messages_still_to_come_mqtt_3_10_4_2() {
    const COUNT: u32 = 20_000;
    let (server, addr) = support::start().await;
    retain_many(&server, COUNT);
    let mut connect = support::connect(mqtt_packets::Protocol::V5, "quitter");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(10);
    let (mut client, _) = Raw::accepted(addr, connect).await;
    client
        .subscribe("r/#", mqtt_packets::QoS::AtLeastOnce)
        .await;
    let mut received = 0;
    let mut ids = Vec::new();
    while ids.len() < 10 {
        let publish = client.expect_publish().await;
        ids.push(publish.packet_id.unwrap());
        received += 1;
    }
    let unsuback = client.unsubscribe(2, &["r/#"]).await;
    assert_eq!(unsuback.reason_codes, [mqtt_packets::ReasonCode::SUCCESS]);
    // Acknowledge everything from now on: what was already queued drains, then nothing.
    for id in ids {
        client.send(mqtt_packets::PubAck::new(id).into()).await;
    }
    while let Some(packet) = client.try_recv(Duration::from_millis(500)).await {
        let Packet5::Publish(publish) = packet else {
            panic!("unexpected {packet:?}");
        };
        received += 1;
        client
            .send(mqtt_packets::PubAck::new(publish.packet_id.unwrap()).into())
            .await;
    }
    assert!(
        received < 2 * 1024,
        "{received} of {COUNT} arrived: the cursor went on after UNSUBSCRIBE"
    );
}

/// Retained messages larger than the queue's byte limit allows at once are sent a few at a
/// time, not cut: 100 of 200 KiB with a 2 MiB queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_retained_messages_arrive_whole_within_the_byte_limit() {
    const COUNT: u32 = 100;
    let mut options = Options::default();
    options.capabilities.maximum_queued_bytes = 2 << 20;
    let (server, addr) = support::start_with(options, true).await;
    for i in 0..COUNT {
        let mut payload = vec![0u8; 200 * 1024];
        payload[..4].copy_from_slice(&i.to_be_bytes());
        server
            .publish(
                &format!("big/{i}"),
                payload,
                true,
                mqtt_packets::QoS::AtLeastOnce,
            )
            .unwrap();
    }
    let mut client_options = client_options("big", addr);
    client_options.set_max_packet_size(1 << 20, 1 << 20);
    let (subscriber, mut eventloop) = AsyncClient::new(client_options, 100);
    subscriber
        .subscribe("big/+", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut topics = BTreeSet::new();
    tokio::time::timeout(TRANSFER, async {
        while topics.len() < COUNT as usize {
            if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.unwrap() {
                assert_eq!(publish.payload.len(), 200 * 1024);
                topics.insert(publish.topic.clone());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {COUNT} arrived", topics.len()));
    assert_eq!(server.info().snapshot().messages_dropped, 0);
}

/// A client subscribed to what it publishes, with a small Receive Maximum, publishing far more
/// than its queue holds while it acknowledges nothing it receives: it never waits for its own
/// queue (it could not read the acknowledgements that make room), so it is neither stuck nor cut
/// off, and gets everything once it acknowledges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_subscribed_to_its_own_messages_is_never_held_back_by_itself() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const COUNT: u16 = 2_000;
    let (server, addr) = support::start().await;
    let mut connect = support::connect(mqtt_packets::Protocol::V5, "echo");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(20);
    let (mut client, _) = Raw::accepted(addr, connect).await;
    client
        .subscribe("echo/#", mqtt_packets::QoS::AtLeastOnce)
        .await;
    let (mut reader, mut writer) = client.stream.into_split();
    let encode = |packet: mqtt_packets::Packet| {
        let mut out = bytes::BytesMut::new();
        packet.encode(mqtt_packets::Protocol::V5, &mut out).unwrap();
        out
    };
    let mut burst = bytes::BytesMut::new();
    for i in 0..COUNT {
        burst.extend_from_slice(&encode(
            support::publish(
                "echo/x",
                &i.to_be_bytes(),
                mqtt_packets::QoS::AtLeastOnce,
                false,
                i + 1,
            )
            .into(),
        ));
    }
    let (acks_to_send, mut to_send) = tokio::sync::mpsc::unbounded_channel::<u16>();
    let writing = tokio::spawn(async move {
        writer.write_all(&burst).await.unwrap();
        // Then acknowledge what the reader asks for.
        while let Some(id) = to_send.recv().await {
            let ack = mqtt_packets::PubAck::new(mqtt_packets::PacketId::new(id).unwrap());
            writer.write_all(&encode(ack.into())).await.unwrap();
        }
    });
    let context = mqtt_packets::DecodeContext::new(mqtt_packets::Protocol::V5);
    let mut buf = bytes::BytesMut::new();
    let (mut acks, mut messages) = (0u16, 0u16);
    let mut held = Vec::new();
    support::within_limit(TRANSFER, async {
        while acks < COUNT || messages < COUNT {
            let packet = loop {
                if let Some(packet) = mqtt_packets::decode(&mut buf, &context).unwrap() {
                    break packet;
                }
                assert!(reader.read_buf(&mut buf).await.unwrap() > 0, "closed");
            };
            match packet {
                Packet5::PubAck(_) => acks += 1,
                Packet5::Publish(publish) => {
                    assert_eq!(&publish.payload[..], &messages.to_be_bytes(), "in order");
                    messages += 1;
                    held.push(publish.packet_id.unwrap().get());
                }
                other => panic!("unexpected {other:?}"),
            }
            // Acknowledge nothing until every PUBACK of ours arrived: meanwhile the window (20)
            // stays full and the session's queue fills with the client's own messages.
            if acks == COUNT {
                for id in held.drain(..) {
                    acks_to_send.send(id).unwrap();
                }
            }
        }
    })
    .await;
    assert_eq!(messages, COUNT);
    drop(acks_to_send);
    writing.await.unwrap();
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.messages_dropped, 0, "{snapshot:?}");
    assert_eq!(snapshot.slow_subscribers, 0);
}

/// A burst that ends with DISCONNECT, to a subscriber whose window (Receive Maximum 10) is full
/// and whose queue fills: what the publisher sent before its DISCONNECT is placed as any read's,
/// waiting for room, not dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_ending_with_disconnect_is_not_dropped_for_a_slow_subscriber() {
    const COUNT: u16 = 3_000;
    let (server, addr) = support::start_with(patient(), true).await;
    let mut connect = support::connect(mqtt_packets::Protocol::V5, "slow");
    connect.properties.receive_maximum = std::num::NonZeroU16::new(10);
    let (mut subscriber, _) = Raw::accepted(addr, connect).await;
    subscriber
        .subscribe("burst/t", mqtt_packets::QoS::AtLeastOnce)
        .await;
    let mut publisher = Raw::v5(addr, "burst").await;
    let mut out = bytes::BytesMut::new();
    for i in 0..COUNT {
        mqtt_packets::Packet::from(support::publish(
            "burst/t",
            &i.to_be_bytes(),
            mqtt_packets::QoS::AtLeastOnce,
            false,
            i + 1,
        ))
        .encode(mqtt_packets::Protocol::V5, &mut out)
        .unwrap();
    }
    mqtt_packets::Packet::from(mqtt_packets::Disconnect::default())
        .encode(mqtt_packets::Protocol::V5, &mut out)
        .unwrap();
    let writing = tokio::spawn(async move {
        publisher.send_bytes(&out).await;
        publisher
    });
    support::wait_until_within("the publisher waits", TRANSFER, || {
        server.info().snapshot().publishers_waiting > 0
    })
    .await;
    for i in 0..COUNT {
        let publish = subscriber.expect_publish().await;
        assert_eq!(
            &publish.payload[..],
            &i.to_be_bytes(),
            "in order, none lost"
        );
        subscriber
            .send(mqtt_packets::PubAck::new(publish.packet_id.unwrap()).into())
            .await;
    }
    drop(writing.await.unwrap());
    assert_eq!(server.info().snapshot().messages_dropped, 0);
}

/// Counts `on_publish_dropped` calls by reason, and the clients they were for.
#[derive(Default)]
struct Drops {
    queue_full: AtomicUsize,
    offline_qos0: AtomicUsize,
    clients: parking_lot::Mutex<std::collections::BTreeSet<String>>,
}

struct DropCounter(Arc<Drops>);

impl Hook for DropCounter {
    fn id(&self) -> &str {
        "drops"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_PUBLISH_DROPPED
    }

    fn on_publish_dropped(&self, client: &ClientInfo, _publish: &RawPublish, reason: DropReason) {
        self.0.clients.lock().insert(client.client_id.to_string());
        match reason {
            DropReason::QueueFull => self.0.queue_full.fetch_add(1, Ordering::Relaxed),
            DropReason::ClientOffline => self.0.offline_qos0.fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
    }
}

/// An offline session keeps a bounded queue; what does not fit is dropped, counted by reason
/// (`$SYS`, metrics' source) and reported to `on_publish_dropped`. With drop-oldest, the session
/// gets the newest messages when it returns.
async fn offline_overflow(order: DropOrder) -> Vec<u32> {
    let mut options = Options::default();
    options.capabilities.maximum_queued_messages = 100;
    options.queue_drop_order = order;
    let (server, addr) = support::start_with(options, true).await;
    let drops = Arc::new(Drops::default());
    server.add_hook(DropCounter(drops.clone())).unwrap();

    let mut options = client_options("offline", addr);
    options.set_clean_session(false);
    let (subscriber, mut eventloop) = AsyncClient::new(options.clone(), 100);
    subscriber.subscribe("q/+", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut eventloop).await;
    subscriber.disconnect().await.unwrap();
    while !matches!(
        eventloop.poll().await,
        Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
    ) {}
    drop(eventloop);
    support::wait_until("the subscriber is offline", || {
        server.connected_clients().is_empty()
    })
    .await;

    for i in 0..150u32 {
        server
            .publish(
                "q/1",
                i.to_be_bytes().to_vec(),
                false,
                mqtt_packets::QoS::AtLeastOnce,
            )
            .unwrap();
    }
    for _ in 0..7 {
        server
            .publish("q/0", b"x".to_vec(), false, mqtt_packets::QoS::AtMostOnce)
            .unwrap();
    }
    let snapshot = server.info().snapshot();
    assert_eq!(snapshot.messages_dropped, 57, "{snapshot:?}");
    // In the order of `mqtt_broker::sys::DROP_REASONS`.
    assert_eq!(mqtt_broker::sys::DROP_REASONS[0], "queue_full");
    assert_eq!(snapshot.messages_dropped_by_reason[0], 50);
    assert_eq!(mqtt_broker::sys::DROP_REASONS[4], "offline_qos0");
    assert_eq!(snapshot.messages_dropped_by_reason[4], 7);
    assert_eq!(drops.queue_full.load(Ordering::Relaxed), 50);
    assert_eq!(drops.offline_qos0.load(Ordering::Relaxed), 7);
    // The hook sees the client the messages were for, as of its last connection.
    assert_eq!(drops.clients.lock().iter().collect::<Vec<_>>(), ["offline"]);

    // Back online: the 100 kept arrive.
    let (_subscriber, mut eventloop) = AsyncClient::new(options, 100);
    let mut received = Vec::new();
    support::within(async {
        while received.len() < 100 {
            if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.unwrap() {
                received.push(u32::from_be_bytes(publish.payload[..4].try_into().unwrap()));
            }
        }
    })
    .await;
    received
}

#[tokio::test]
async fn offline_overflow_drops_the_newest_by_default_and_counts_it() {
    let received = offline_overflow(DropOrder::Newest).await;
    assert_eq!(received, (0..100).collect::<Vec<u32>>());
}

#[tokio::test]
async fn offline_overflow_can_drop_the_oldest() {
    let received = offline_overflow(DropOrder::Oldest).await;
    assert_eq!(received, (50..150).collect::<Vec<u32>>());
}
