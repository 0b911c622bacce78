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
use mqtt_broker::{DropOrder, Hook, Options, Server};
use mqtt_packets::Publish as RawPublish;
use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Outgoing, Packet, QoS};
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
        // QoS 0: make sure the last messages left the client (PINGRESP comes after them).
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

/// A v5 client with a Receive Maximum of 10 gets every retained message, never more than 10
/// unacknowledged at once [MQTT-3.3.4-9].
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_paced_by_receive_maximum_mqtt_3_3_4_9() {
    use rumqttc::v5::mqttbytes::QoS as QoS5;
    use rumqttc::v5::mqttbytes::v5::Packet as Packet5;
    use rumqttc::v5::{AsyncClient as Client5, Event as Event5, MqttOptions as Options5};

    const COUNT: u32 = 3_000;
    let (server, addr) = support::start().await;
    retain_many(&server, COUNT);
    let mut options = Options5::new("paced", addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(60));
    options.set_receive_maximum(Some(10));
    let (client, mut eventloop) = Client5::new(options, 100);
    client.subscribe("r/#", QoS5::AtLeastOnce).await.unwrap();
    let mut topics = BTreeSet::new();
    tokio::time::timeout(TRANSFER, async {
        while topics.len() < COUNT as usize {
            if let Event5::Incoming(Packet5::Publish(publish)) = eventloop.poll().await.unwrap() {
                assert!(publish.retain);
                topics.insert(publish.topic.clone());
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {COUNT} retained messages arrived", topics.len()));
    // The client would have failed the connection had the broker exceeded its Receive Maximum
    // (rumqttc checks it); the broker never had more than 10 in flight.
    assert_eq!(server.info().snapshot().messages_dropped, 0);
}

/// Counts `on_publish_dropped` calls by reason.
#[derive(Default)]
struct Drops {
    queue_full: AtomicUsize,
    offline_qos0: AtomicUsize,
}

struct DropCounter(Arc<Drops>);

impl Hook for DropCounter {
    fn id(&self) -> &str {
        "drops"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_PUBLISH_DROPPED
    }

    fn on_publish_dropped(&self, _client_id: &str, _publish: &RawPublish, reason: DropReason) {
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
