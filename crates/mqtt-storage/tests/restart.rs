//! The storage hook over real sockets: a broker stops (cleanly or not), a new one starts on the
//! same store, and sessions, subscriptions, queued and inflight messages, inbound QoS 2 state and
//! retained messages are back. Uses the in-memory backend; the backend crates run the same kind
//! of test against their stores and a killed broker process.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

#[path = "../../mqtt-broker/tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqtt_broker::hooks::{Access, Decision, HookEvents};
use mqtt_broker::{AllowAllHook, ClientInfo, Hook, Options, Server};
use mqtt_packets::{Packet, Protocol, PubRel, QoS, ReasonCode};
use mqtt_storage::{
    Backend, BackendError, Batch, BoxFuture, Durability, KeyValues, MemoryBackend, StorageHook,
    StorageOptions,
};
use support::{Raw, connack, persistent_v5, pid, publish, within};
use tokio::net::TcpListener;

struct Broker {
    server: Server,
    addr: SocketAddr,
    storage: Arc<StorageHook>,
}

impl Broker {
    async fn start<B: Backend + Clone>(backend: &B, durability: Durability) -> Self {
        Self::start_with(backend, durability, None).await
    }

    async fn start_with<B: Backend + Clone>(
        backend: &B,
        durability: Durability,
        acl: Option<Arc<dyn Hook>>,
    ) -> Self {
        let options = StorageOptions {
            durability,
            ..StorageOptions::default()
        };
        let storage = Arc::new(StorageHook::open(backend.clone(), options).await.unwrap());
        let server = Server::new(Options::default());
        if let Some(acl) = acl {
            server.add_hook_arc(acl).unwrap();
        }
        server.add_hook(AllowAllHook).unwrap();
        server.add_hook_arc(storage.clone()).unwrap();
        // Restores the stored state now (serving would do it too, on its own task).
        server.start();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = server.clone();
        tokio::spawn(async move { serving.serve_tcp("tcp", listener).await });
        Self {
            server,
            addr,
            storage,
        }
    }

    /// A clean stop: clients get DISCONNECT, storage is flushed.
    async fn stop(self) {
        self.server.close().await;
        assert!(self.storage.close(Duration::from_secs(10)).await);
    }

    /// A crash: the server is dropped without closing, the writer stops where it is. What was
    /// committed is all the next broker gets.
    async fn crash(self) {
        self.storage.close(Duration::ZERO).await;
        drop(self.server);
    }
}

fn persistent_v311(client_id: &str) -> mqtt_packets::Connect {
    let mut connect = support::connect(Protocol::V3_1_1, client_id);
    connect.clean_start = false;
    connect
}

#[tokio::test]
async fn sessions_subscriptions_queued_and_retained_messages_survive_a_restart() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    // A v5 and a 3.1.1 persistent session, subscribed, then offline.
    let (mut v5, ack) = Raw::accepted(broker.addr, persistent_v5("sub5", true)).await;
    assert!(!ack.session_present);
    v5.subscribe("t/5", QoS::ExactlyOnce).await;
    v5.disconnect(ReasonCode::SUCCESS).await;
    let (mut v3, _) = Raw::accepted(broker.addr, persistent_v311("sub3")).await;
    v3.subscribe("t/3", QoS::AtLeastOnce).await;
    drop(v3);
    support::wait_until("both offline", || {
        broker.server.connected_clients().is_empty()
    })
    .await;
    // Messages for them, and retained messages.
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    for i in 0..5u8 {
        let qos = if i % 2 == 0 {
            QoS::AtLeastOnce
        } else {
            QoS::ExactlyOnce
        };
        publisher
            .send(publish("t/5", &[i], qos, false, u16::from(i) + 1).into())
            .await;
        if qos == QoS::AtLeastOnce {
            publisher.expect_puback().await;
        } else {
            publisher.expect_pubrec().await;
            publisher
                .send(PubRel::new(pid(u16::from(i) + 1)).into())
                .await;
            publisher.expect_pubcomp().await;
        }
        assert_eq!(
            publisher.publish_qos1("t/3", &[i], false).await,
            ReasonCode::SUCCESS
        );
    }
    publisher.publish_qos1("r/1", b"kept", true).await;
    publisher.publish_qos1("r/2", b"cleared", true).await;
    publisher.publish_qos1("r/2", b"", true).await;
    drop(publisher);
    broker.crash().await;

    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut v5, ack) = Raw::accepted(broker.addr, persistent_v5("sub5", false)).await;
    assert!(ack.session_present, "the v5 session is back [MQTT-3.2.2-2]");
    // Acknowledge as packets come: the broker sends the next PUBLISH without waiting for the
    // QoS 2 flow of the previous one to end.
    let mut received = 0u8;
    let mut completed = 0u8;
    while completed < 5 {
        match v5.next().await {
            Packet::Publish(message) => {
                assert_eq!(message.topic.as_str(), "t/5");
                assert_eq!(&message.payload[..], &[received], "in order [MQTT-4.6.0-1]");
                let qos = if received % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                };
                assert_eq!(message.qos, qos);
                received += 1;
                let id = message.packet_id.unwrap();
                if qos == QoS::AtLeastOnce {
                    v5.send(mqtt_packets::PubAck::new(id).into()).await;
                    completed += 1;
                } else {
                    v5.send(mqtt_packets::PubRec::new(id).into()).await;
                }
            }
            Packet::PubRel(rel) => {
                v5.send(mqtt_packets::PubComp::new(rel.packet_id).into())
                    .await;
                completed += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let (mut v3, packet) = Raw::handshake(broker.addr, persistent_v311("sub3")).await;
    assert!(connack(packet).session_present, "the 3.1.1 session is back");
    for i in 0..5u8 {
        let message = v3.expect_publish().await;
        assert_eq!(
            (message.topic.as_str(), &message.payload[..]),
            ("t/3", &[i][..])
        );
        v3.send(mqtt_packets::PubAck::new(message.packet_id.unwrap()).into())
            .await;
    }
    // The subscriptions are back too: a new message reaches them.
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    publisher.publish_qos1("t/3", b"after", false).await;
    assert_eq!(&v3.expect_publish().await.payload[..], b"after");
    // Retained: r/1 kept, r/2 cleared.
    let mut reader = Raw::v5(broker.addr, "reader").await;
    reader.subscribe("r/#", QoS::AtMostOnce).await;
    let retained = reader.expect_publish().await;
    assert_eq!(
        (retained.topic.as_str(), &retained.payload[..]),
        ("r/1", &b"kept"[..])
    );
    assert!(retained.retain);
    assert!(
        reader.try_recv(Duration::from_millis(300)).await.is_none(),
        "r/2 was cleared"
    );
    broker.stop().await;

    // Acknowledged messages are gone from the store: a third start delivers nothing.
    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut v5, ack) = Raw::accepted(broker.addr, persistent_v5("sub5", false)).await;
    assert!(ack.session_present);
    assert!(
        v5.try_recv(Duration::from_millis(300)).await.is_none(),
        "nothing redelivered"
    );
    broker.stop().await;
}

#[tokio::test]
async fn inflight_messages_are_resent_after_a_crash_qos2_with_its_packet_id() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut sub, _) = Raw::accepted(broker.addr, persistent_v5("sub", true)).await;
    sub.subscribe("t", QoS::ExactlyOnce).await;
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    publisher
        .send(publish("t", b"one", QoS::ExactlyOnce, false, 1).into())
        .await;
    publisher.expect_pubrec().await;
    publisher.send(PubRel::new(pid(1)).into()).await;
    publisher.expect_pubcomp().await;
    publisher.publish_qos1("t", b"two", false).await;
    // Both are received, neither acknowledged.
    let one = sub.expect_publish().await;
    let two = sub.expect_publish().await;
    assert_eq!((one.qos, two.qos), (QoS::ExactlyOnce, QoS::AtLeastOnce));
    // The QoS 2 flow record is queued when the PUBLISH goes out; let the writer commit it.
    broker.storage.flush().await;
    drop(sub);
    broker.crash().await;

    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut sub, ack) = Raw::accepted(broker.addr, persistent_v5("sub", false)).await;
    assert!(ack.session_present);
    let resent = sub.expect_publish().await;
    assert_eq!(resent.payload, one.payload);
    assert_eq!(
        resent.packet_id, one.packet_id,
        "same packet id [MQTT-4.4.0-1]"
    );
    assert!(resent.dup, "DUP on a resend [MQTT-3.3.1-1]");
    // QoS 1 keeps no flow record: it comes again as a new message (at least once).
    let again = sub.expect_publish().await;
    assert_eq!(again.payload, two.payload);
    assert_eq!(again.qos, QoS::AtLeastOnce);
    sub.send(mqtt_packets::PubRec::new(resent.packet_id.unwrap()).into())
        .await;
    sub.send(mqtt_packets::PubAck::new(again.packet_id.unwrap()).into())
        .await;
    assert_eq!(sub.expect_pubrel().await.packet_id, one.packet_id.unwrap());
    broker.stop().await;
}

#[tokio::test]
async fn inbound_qos2_state_survives_so_a_resent_publish_is_not_delivered_twice() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let mut reader = Raw::v5(broker.addr, "reader").await;
    reader.subscribe("q2", QoS::AtMostOnce).await;
    let (mut publisher, _) = Raw::accepted(broker.addr, persistent_v5("pub", true)).await;
    publisher
        .send(publish("q2", b"once", QoS::ExactlyOnce, false, 9).into())
        .await;
    publisher.expect_pubrec().await;
    assert_eq!(&reader.expect_publish().await.payload[..], b"once");
    drop(publisher);
    drop(reader);
    broker.crash().await;

    let broker = Broker::start(&backend, Durability::Sync).await;
    let mut reader = Raw::v5(broker.addr, "reader").await;
    reader.subscribe("q2", QoS::AtMostOnce).await;
    let (mut publisher, ack) = Raw::accepted(broker.addr, persistent_v5("pub", false)).await;
    assert!(ack.session_present);
    // The client did not see PUBCOMP: it resends the PUBLISH with DUP [MQTT-4.3.3-9].
    let mut again = publish("q2", b"once", QoS::ExactlyOnce, false, 9);
    again.dup = true;
    publisher.send(again.into()).await;
    assert_eq!(publisher.expect_pubrec().await.packet_id, pid(9));
    publisher.send(PubRel::new(pid(9)).into()).await;
    assert_eq!(
        publisher.expect_pubcomp().await.reason_code,
        ReasonCode::SUCCESS,
        "the id was known after the restart"
    );
    assert!(
        reader.try_recv(Duration::from_millis(300)).await.is_none(),
        "delivered once only [MQTT-4.3.3-10]"
    );
    broker.stop().await;
}

#[tokio::test]
async fn clean_start_and_unsubscribe_remove_what_was_stored() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut a, _) = Raw::accepted(broker.addr, persistent_v5("a", true)).await;
    a.subscribe("x/1", QoS::AtLeastOnce).await;
    a.subscribe("x/2", QoS::AtLeastOnce).await;
    a.unsubscribe(1, &["x/1"]).await;
    a.disconnect(ReasonCode::SUCCESS).await;
    let (mut b, _) = Raw::accepted(broker.addr, persistent_v5("b", true)).await;
    b.subscribe("x/1", QoS::AtLeastOnce).await;
    b.disconnect(ReasonCode::SUCCESS).await;
    // "b" comes back with Clean Start: its stored session goes.
    let (mut b, _) = Raw::accepted(broker.addr, {
        let mut c = persistent_v5("b", true);
        c.properties.session_expiry_interval = None;
        c
    })
    .await;
    b.disconnect(ReasonCode::SUCCESS).await;
    support::wait_until("all offline", || {
        broker.server.connected_clients().is_empty()
    })
    .await;
    broker.stop().await;
    let stored: Vec<String> = backend
        .scan_prefix(b"")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(&key).replace('\0', "/"))
        .collect();
    assert!(stored.contains(&"c/a".to_string()), "{stored:?}");
    assert!(stored.contains(&"s/a/x/2".to_string()), "{stored:?}");
    assert!(
        !stored
            .iter()
            .any(|key| key.ends_with("/b") || key.contains("/b/") || key == "s/a/x/1"),
        "{stored:?}"
    );

    let broker = Broker::start(&backend, Durability::Sync).await;
    assert_eq!(
        broker.server.session_count(),
        1,
        "only a's session is stored"
    );
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    publisher.publish_qos1("x/1", b"1", false).await;
    publisher.publish_qos1("x/2", b"2", false).await;
    let (mut a, ack) = Raw::accepted(broker.addr, persistent_v5("a", false)).await;
    assert!(ack.session_present);
    assert_eq!(
        &a.expect_publish().await.payload[..],
        b"2",
        "x/1 was unsubscribed"
    );
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
    broker.stop().await;
}

#[tokio::test]
async fn a_session_that_expired_while_the_server_was_down_is_not_restored() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let mut connect = persistent_v5("short", true);
    connect.properties.session_expiry_interval = Some(1);
    let (mut short, _) = Raw::accepted(broker.addr, connect).await;
    short.subscribe("e", QoS::AtLeastOnce).await;
    short.disconnect(ReasonCode::SUCCESS).await;
    support::wait_until("offline", || broker.server.connected_clients().is_empty()).await;
    broker.crash().await;
    // The stored deadline is in wall-clock seconds.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let broker = Broker::start(&backend, Durability::Sync).await;
    assert_eq!(broker.server.session_count(), 0);
    broker.stop().await;
    let left: Vec<String> = backend
        .scan_prefix(b"")
        .await
        .unwrap()
        .into_iter()
        .map(|(key, _)| String::from_utf8_lossy(&key).replace('\0', "/"))
        .filter(|key| key != "y")
        .collect();
    assert!(left.is_empty(), "its records were removed: {left:?} left");
}

/// Denies reading `secret/#` to everyone.
struct NoSecrets;

impl Hook for NoSecrets {
    fn id(&self) -> &str {
        "no-secrets"
    }
    fn provides(&self) -> HookEvents {
        HookEvents::ON_ACL_CHECK
    }
    fn on_acl_check(&self, _: &ClientInfo, topic: &str, access: Access) -> Decision {
        if access == Access::Read && topic.starts_with("secret") {
            Decision::Deny
        } else {
            Decision::Defer
        }
    }
}

#[tokio::test]
async fn restored_subscriptions_are_checked_against_the_acl_again() {
    let backend = MemoryBackend::new();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut a, _) = Raw::accepted(broker.addr, persistent_v5("a", true)).await;
    a.subscribe("secret/x", QoS::AtLeastOnce).await;
    a.subscribe("open/x", QoS::AtLeastOnce).await;
    a.disconnect(ReasonCode::SUCCESS).await;
    support::wait_until("offline", || broker.server.connected_clients().is_empty()).await;
    broker.stop().await;
    // The rules changed: secret/# may no longer be read.
    let broker = Broker::start_with(&backend, Durability::Sync, Some(Arc::new(NoSecrets))).await;
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    publisher.publish_qos1("secret/x", b"s", false).await;
    publisher.publish_qos1("open/x", b"o", false).await;
    let (mut a, _) = Raw::accepted(broker.addr, persistent_v5("a", false)).await;
    assert_eq!(&a.expect_publish().await.payload[..], b"o");
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
    broker.stop().await;
}

/// A backend that fails while `down` is set.
#[derive(Clone, Default)]
struct Flaky {
    inner: MemoryBackend,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Backend for Flaky {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            return Box::pin(std::future::ready(Err(BackendError::unavailable(
                "flaky", "down",
            ))));
        }
        self.inner.write(batch)
    }
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        self.inner.get(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        self.inner.scan_prefix(prefix)
    }
}

#[tokio::test]
async fn in_sync_mode_nothing_is_acknowledged_until_the_backend_commits() {
    let backend = Flaky::default();
    let broker = Broker::start(&backend, Durability::Sync).await;
    let (mut sub, _) = Raw::accepted(broker.addr, persistent_v5("sub", true)).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    sub.disconnect(ReasonCode::SUCCESS).await;
    support::wait_until("offline", || broker.server.connected_clients().is_empty()).await;
    backend
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    publisher
        .send(publish("t", b"held", QoS::AtLeastOnce, false, 1).into())
        .await;
    assert!(
        publisher
            .try_recv(Duration::from_millis(500))
            .await
            .is_none(),
        "no PUBACK while the store is down"
    );
    let health = broker.storage.health();
    assert!(!health.healthy && health.errors > 0, "{health:?}");
    // The broker still serves: a PING is answered.
    publisher.send(Packet::PingReq).await;
    backend
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    // Once the backend is back (the writer retries with back-off), the PUBACK goes.
    let mut got_ack = false;
    for _ in 0..2 {
        match within(publisher.recv()).await {
            Some(Packet::PubAck(ack)) => {
                assert_eq!(ack.packet_id, pid(1));
                got_ack = true;
            }
            Some(Packet::PingResp) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_ack);
    assert!(broker.storage.health().healthy);
    broker.stop().await;
}

#[tokio::test]
async fn batched_mode_stores_without_holding_acknowledgements() {
    let backend = MemoryBackend::new();
    let durability = Durability::Batched {
        flush_interval: Duration::from_millis(5),
    };
    let broker = Broker::start(&backend, durability).await;
    let (mut sub, _) = Raw::accepted(broker.addr, persistent_v5("sub", true)).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    sub.disconnect(ReasonCode::SUCCESS).await;
    support::wait_until("offline", || broker.server.connected_clients().is_empty()).await;
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    for i in 0..20u8 {
        publisher.publish_qos1("t", &[i], false).await;
    }
    broker.stop().await;
    let broker = Broker::start(&backend, durability).await;
    let (mut sub, ack) = Raw::accepted(broker.addr, persistent_v5("sub", false)).await;
    assert!(ack.session_present);
    for i in 0..20u8 {
        let message = sub.expect_publish().await;
        assert_eq!(&message.payload[..], &[i]);
        sub.send(mqtt_packets::PubAck::new(message.packet_id.unwrap()).into())
            .await;
    }
    broker.stop().await;
}

#[tokio::test]
async fn messages_acknowledged_within_one_batch_never_reach_the_backend() {
    let backend = MemoryBackend::new();
    let durability = Durability::Batched {
        flush_interval: Duration::from_millis(200),
    };
    let broker = Broker::start(&backend, durability).await;
    let (mut sub, _) = Raw::accepted(broker.addr, persistent_v5("sub", true)).await;
    sub.subscribe("t", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(broker.addr, "pub").await;
    for i in 0..50u8 {
        publisher
            .send(publish("t", &[i], QoS::AtLeastOnce, false, u16::from(i) + 1).into())
            .await;
    }
    for _ in 0..50 {
        publisher.expect_puback().await;
        let message = sub.expect_publish().await;
        sub.send(mqtt_packets::PubAck::new(message.packet_id.unwrap()).into())
            .await;
    }
    // The PINGRESP comes after the broker handled every PUBACK sent before it.
    sub.ping().await;
    broker.storage.flush().await;
    let stats = broker.storage.stats();
    let collapsed = stats.collapsed.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        collapsed >= 50,
        "queued+acked messages collapsed: {collapsed}"
    );
    let mut keys = backend.scan_prefix(b"m\0").await.unwrap();
    keys.extend(backend.scan_prefix(b"f\0").await.unwrap());
    assert!(keys.is_empty(), "no message record left: {}", keys.len());
    broker.stop().await;
}

#[tokio::test]
async fn a_persistent_session_that_cannot_be_made_durable_is_refused_with_connack_0x80() {
    let backend = Flaky::default();
    let broker = Broker::start(&backend, Durability::Sync).await;
    backend
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // The record cannot be committed: after the bounded wait, CONNACK 0x80 and a close.
    let (mut refused, packet) = Raw::handshake(broker.addr, persistent_v5("s", true)).await;
    assert_eq!(connack(packet).reason_code, ReasonCode::UNSPECIFIED_ERROR);
    refused.expect_closed().await;
    support::wait_until("the refused connection is gone", || {
        broker.server.connected_clients().is_empty()
    })
    .await;
    assert_eq!(
        broker
            .server
            .info()
            .clients_connected
            .load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the connected-clients count is balanced"
    );
    // Once the backend is back, the same client connects, and its session was kept.
    backend
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let (_client, ack) = Raw::accepted(broker.addr, persistent_v5("s", false)).await;
    assert!(ack.session_present);
    broker.stop().await;
}
