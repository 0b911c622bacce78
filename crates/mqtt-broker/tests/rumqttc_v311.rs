#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! End-to-end tests with an independent MQTT 3.1.1 client, `rumqttc` (plain TCP).
//!
//! Each client's event loop runs in its own task, which forwards incoming packets (and the error
//! that ends the connection) through a channel; it stops at the first error, so rumqttc never
//! reconnects behind a test's back. Dropping a [`Conn`] aborts that task, which drops the socket
//! without a DISCONNECT, as a network failure would.

mod support;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use mqtt_broker::Options;
use rumqttc::{
    AsyncClient, ConnAck, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill,
    MqttOptions, Packet, Publish, QoS, SubscribeReasonCode,
};
use support::TIMEOUT;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A connected rumqttc client whose event loop runs in a task.
struct Conn {
    client: AsyncClient,
    events: mpsc::UnboundedReceiver<Result<Packet, ConnectionError>>,
    /// Packets read while waiting for another one, in arrival order.
    pending: VecDeque<Packet>,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// Connects; the CONNACK, or the error that ended the attempt.
    async fn try_connect(options: MqttOptions) -> Result<(Self, ConnAck), ConnectionError> {
        let (client, mut eventloop) = AsyncClient::new(options, 100);
        let connack = match timeout(TIMEOUT, eventloop.poll())
            .await
            .expect("timed out waiting for CONNACK")?
        {
            Event::Incoming(Packet::ConnAck(connack)) => connack,
            other => panic!("expected CONNACK, got {other:?}"),
        };
        let (sender, events) = mpsc::unbounded_channel();
        let task = tokio::spawn(drive(eventloop, sender));
        let conn = Self {
            client,
            events,
            pending: VecDeque::new(),
            task,
        };
        Ok((conn, connack))
    }

    /// Connects, which must succeed.
    async fn connect(options: MqttOptions) -> (Self, ConnAck) {
        let (conn, connack) = Self::try_connect(options)
            .await
            .expect("connection refused");
        assert_eq!(connack.code, ConnectReturnCode::Success);
        (conn, connack)
    }

    /// The next incoming packet that satisfies `want`; others are kept for later.
    async fn wait_for(&mut self, what: &str, want: impl Fn(&Packet) -> bool) -> Packet {
        if let Some(index) = self.pending.iter().position(&want) {
            return self.pending.remove(index).unwrap();
        }
        timeout(TIMEOUT, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(packet)) if want(&packet) => return packet,
                    Some(Ok(packet)) => self.pending.push_back(packet),
                    Some(Err(error)) => panic!("connection ended waiting for {what}: {error}"),
                    None => panic!("event loop gone waiting for {what}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    /// The next incoming PUBLISH.
    async fn next_publish(&mut self) -> Publish {
        match self
            .wait_for("PUBLISH", |p| matches!(p, Packet::Publish(_)))
            .await
        {
            Packet::Publish(publish) => publish,
            _ => unreachable!(),
        }
    }

    /// Subscribes to one filter and returns the SUBACK's return code.
    async fn subscribe(&mut self, filter: &str, qos: QoS) -> SubscribeReasonCode {
        self.client.subscribe(filter, qos).await.unwrap();
        match self
            .wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(suback) => {
                assert_eq!(suback.return_codes.len(), 1);
                suback.return_codes[0]
            }
            _ => unreachable!(),
        }
    }

    /// Subscribes and checks that `qos` was granted.
    async fn subscribed(&mut self, filter: &str, qos: QoS) {
        assert_eq!(
            self.subscribe(filter, qos).await,
            SubscribeReasonCode::Success(qos),
            "subscription to {filter}"
        );
    }

    /// Publishes and, for QoS 1 and 2, waits until the flow is complete (PUBACK / PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, retain, payload)
            .await
            .unwrap();
        match qos {
            QoS::AtMostOnce => {}
            QoS::AtLeastOnce => {
                self.wait_for("PUBACK", |p| matches!(p, Packet::PubAck(_)))
                    .await;
            }
            QoS::ExactlyOnce => {
                self.wait_for("PUBCOMP", |p| matches!(p, Packet::PubComp(_)))
                    .await;
            }
        }
    }

    /// Waits for the connection to end and returns the error that ended it.
    async fn ended(&mut self) -> ConnectionError {
        timeout(TIMEOUT, async {
            loop {
                match self.events.recv().await {
                    Some(Ok(packet)) => self.pending.push_back(packet),
                    Some(Err(error)) => return error,
                    None => panic!("event loop gone without an error"),
                }
            }
        })
        .await
        .expect("timed out waiting for the connection to end")
    }
}

/// Polls the event loop, forwarding incoming packets, until the first error.
async fn drive(
    mut eventloop: EventLoop,
    sender: mpsc::UnboundedSender<Result<Packet, ConnectionError>>,
) {
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(packet)) => {
                if sender.send(Ok(packet)).is_err() {
                    return;
                }
            }
            Ok(Event::Outgoing(_)) => {}
            Err(error) => {
                sender.send(Err(error)).ok();
                return;
            }
        }
    }
}

fn opts(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options
}

fn lower(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

/// A payload that uses every byte value, different for each `seed`.
fn payload(seed: usize) -> Vec<u8> {
    (0..=255u8).cycle().skip(seed).take(700 + seed).collect()
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// [MQTT-3.8.4-8] (3.1.1: [MQTT-3.8.4-6]): delivery at the lower of the published and the granted
/// QoS; payloads arrive byte for byte; [MQTT-3.3.1-9] of 3.1.1: RETAIN 0 on normal forwarding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qos_is_delivered_intact_at_the_granted_qos() {
    let (_server, addr) = support::start().await;
    let mut subscribers = Vec::new();
    for granted in QOS {
        let (mut subscriber, connack) =
            Conn::connect(opts(&format!("v311-qos-sub-{}", granted as u8), addr)).await;
        // [MQTT-3.2.2-1] of 3.1.1: clean session 1 → Session Present 0.
        assert!(!connack.session_present);
        subscriber.subscribed("v311/qos/+", granted).await;
        subscribers.push((granted, subscriber));
    }

    let (mut publisher, _) = Conn::connect(opts("v311-qos-pub", addr)).await;
    for qos in QOS {
        publisher
            .publish(
                &format!("v311/qos/{}", qos as u8),
                qos,
                false,
                payload(qos as usize),
            )
            .await;
    }

    for (granted, subscriber) in &mut subscribers {
        let mut received = Vec::new();
        for _ in 0..3 {
            received.push(subscriber.next_publish().await);
        }
        // Different QoS flows give no ordering promise between them.
        received.sort_by(|a, b| a.topic.cmp(&b.topic));
        for (publish, qos) in received.iter().zip(QOS) {
            assert_eq!(publish.topic, format!("v311/qos/{}", qos as u8));
            assert_eq!(publish.qos, lower(qos, *granted), "granted {granted:?}");
            assert_eq!(&publish.payload[..], &payload(qos as usize)[..]);
            assert!(!publish.retain);
            assert!(!publish.dup);
        }
    }
}

/// [MQTT-3.3.1-5] of 3.1.1: a retained message is stored and sent to later subscribers with
/// RETAIN 1 ([MQTT-3.3.1-8] of 3.1.1); [MQTT-3.3.1-10], [MQTT-3.3.1-11] of 3.1.1: an empty retained
/// payload is forwarded normally and clears the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_set_delivered_and_cleared() {
    let (_server, addr) = support::start().await;
    let (mut publisher, _) = Conn::connect(opts("v311-retain-pub", addr)).await;
    publisher
        .publish("v311/retained/t", QoS::AtLeastOnce, true, "kept")
        .await;

    let (mut early, _) = Conn::connect(opts("v311-retain-early", addr)).await;
    early.subscribed("v311/retained/#", QoS::AtLeastOnce).await;
    let retained = early.next_publish().await;
    assert_eq!(retained.topic, "v311/retained/t");
    assert_eq!(&retained.payload[..], b"kept");
    assert!(retained.retain, "sent because of a new subscription");
    assert_eq!(retained.qos, QoS::AtLeastOnce);

    // Clear it: current subscribers still get the empty message, as a normal forward.
    publisher
        .publish("v311/retained/t", QoS::AtLeastOnce, true, Vec::new())
        .await;
    let cleared = early.next_publish().await;
    assert_eq!(cleared.topic, "v311/retained/t");
    assert!(cleared.payload.is_empty());
    assert!(!cleared.retain, "normal forwarding has RETAIN 0");

    // A later subscriber gets nothing retained: the first message it sees is a marker
    // published after its SUBACK.
    let (mut late, _) = Conn::connect(opts("v311-retain-late", addr)).await;
    late.subscribed("v311/retained/#", QoS::AtLeastOnce).await;
    publisher
        .publish("v311/retained/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    let first = late.next_publish().await;
    assert_eq!(first.topic, "v311/retained/marker", "got {first:?}");
    assert!(!first.retain);
}

/// [MQTT-3.1.2-4], [MQTT-3.1.2-5] of 3.1.1: a clean session 0 client's subscriptions and QoS 1
/// messages survive its absence; [MQTT-3.2.2-2] of 3.1.1: Session Present 1 on return;
/// [MQTT-4.6.0-5]: queued messages arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_messages_while_away() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let mut options = opts("v311-persistent", addr);
    options.set_clean_session(false);

    let (mut subscriber, connack) = Conn::connect(options.clone()).await;
    assert!(!connack.session_present, "no session existed");
    subscriber
        .subscribed("v311/persist/t", QoS::AtLeastOnce)
        .await;
    subscriber.client.disconnect().await.unwrap();
    subscriber.ended().await;
    drop(subscriber);
    disconnects.wait_for("v311-persistent").await;

    let (mut publisher, _) = Conn::connect(opts("v311-persist-pub", addr)).await;
    for i in 0..5u8 {
        publisher
            .publish("v311/persist/t", QoS::AtLeastOnce, false, vec![i; 3])
            .await;
    }

    let (mut subscriber, connack) = Conn::connect(options).await;
    assert!(connack.session_present, "the session was kept");
    for i in 0..5u8 {
        let publish = subscriber.next_publish().await;
        assert_eq!(publish.topic, "v311/persist/t");
        assert_eq!(&publish.payload[..], &[i; 3], "message {i} in order");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }
}

/// [MQTT-3.1.2-8] of 3.1.1: a connection closed without DISCONNECT publishes the Will, with the
/// QoS and retain flag the client set ([MQTT-3.1.2-16], [MQTT-3.1.2-17] of 3.1.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_connection_drops() {
    let (_server, addr) = support::start().await;
    let (mut subscriber, _) = Conn::connect(opts("v311-will-sub", addr)).await;
    subscriber.subscribed("v311/will/+", QoS::AtLeastOnce).await;

    let mut options = opts("v311-will-dropped", addr);
    options.set_last_will(LastWill::new(
        "v311/will/dropped",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (will_client, _) = Conn::connect(options).await;
    // Aborting the task drops the event loop and its socket: no DISCONNECT is sent.
    drop(will_client);

    let will = subscriber.next_publish().await;
    assert_eq!(will.topic, "v311/will/dropped");
    assert_eq!(&will.payload[..], b"gone");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
}

/// [MQTT-3.14.4-3] of 3.1.1 / [MQTT-3.1.2-10]: after a DISCONNECT the Will is discarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_not_published_after_a_normal_disconnect() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Conn::connect(opts("v311-nowill-sub", addr)).await;
    subscriber
        .subscribed("v311/nowill/+", QoS::AtLeastOnce)
        .await;

    let mut options = opts("v311-will-clean", addr);
    options.set_last_will(LastWill::new(
        "v311/nowill/clean",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let (mut will_client, _) = Conn::connect(options).await;
    will_client.client.disconnect().await.unwrap();
    will_client.ended().await;
    disconnects.wait_for("v311-will-clean").await;

    // The server is done with the connection; a marker published now is the first message.
    let (mut publisher, _) = Conn::connect(opts("v311-nowill-pub", addr)).await;
    publisher
        .publish("v311/nowill/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    let first = subscriber.next_publish().await;
    assert_eq!(first.topic, "v311/nowill/marker", "got {first:?}");
}

/// [MQTT-3.1.4-3]: a second connection with the same ClientID takes over; a 3.1.1 connection is
/// simply closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_the_same_id_takes_over() {
    let (server, addr) = support::start().await;
    let (mut first, _) = Conn::connect(opts("v311-dup", addr)).await;
    let (mut second, connack) = Conn::connect(opts("v311-dup", addr)).await;
    assert!(!connack.session_present);

    let error = first.ended().await;
    assert!(
        matches!(
            error,
            ConnectionError::Io(_) | ConnectionError::MqttState(rumqttc::StateError::Io(_))
        ),
        "the old connection is closed: {error:?}"
    );

    // The new connection works.
    second.subscribed("v311/takeover/t", QoS::AtLeastOnce).await;
    second
        .publish("v311/takeover/t", QoS::AtLeastOnce, false, "mine")
        .await;
    let publish = second.next_publish().await;
    assert_eq!(&publish.payload[..], b"mine");
    let connected = server.connected_clients();
    assert_eq!(
        connected.iter().filter(|id| *id == "v311-dup").count(),
        1,
        "{connected:?}"
    );
}

/// [MQTT-3.12.4-1]: every PINGREQ is answered; with a 2 s Keep Alive the connection outlives
/// several periods ([MQTT-3.1.2-24] of 3.1.1: the server only closes after 1.5 periods of silence).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_keeps_a_short_keep_alive_connection_up() {
    let (server, addr) = support::start().await;
    let mut options = opts("v311-keepalive", addr);
    options.set_keep_alive(Duration::from_secs(2));
    let (mut conn, _) = Conn::connect(options).await;
    for _ in 0..3 {
        conn.wait_for("PINGRESP", |p| matches!(p, Packet::PingResp))
            .await;
    }
    assert!(
        server
            .connected_clients()
            .iter()
            .any(|id| id == "v311-keepalive")
    );
    conn.subscribed("v311/keepalive/t", QoS::AtLeastOnce).await;
    conn.publish("v311/keepalive/t", QoS::AtLeastOnce, false, "alive")
        .await;
    assert_eq!(&conn.next_publish().await.payload[..], b"alive");
}

/// [§4.8.2]: each message on a shared subscription goes to exactly one member of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages_between_members() {
    const N: u8 = 20;
    let (_server, addr) = support::start().await;
    let (mut a, _) = Conn::connect(opts("v311-share-a", addr)).await;
    let (mut b, _) = Conn::connect(opts("v311-share-b", addr)).await;
    a.subscribed("$share/g/v311/shared/t", QoS::AtLeastOnce)
        .await;
    b.subscribed("$share/g/v311/shared/t", QoS::AtLeastOnce)
        .await;

    let (mut publisher, _) = Conn::connect(opts("v311-share-pub", addr)).await;
    for i in 0..N {
        publisher
            .publish("v311/shared/t", QoS::AtLeastOnce, false, vec![i])
            .await;
    }

    let (mut got_a, mut got_b) = (Vec::new(), Vec::new());
    while got_a.len() + got_b.len() < usize::from(N) {
        tokio::select! {
            publish = a.next_publish() => got_a.push(publish.payload[0]),
            publish = b.next_publish() => got_b.push(publish.payload[0]),
        }
    }
    assert!(!got_a.is_empty(), "member a got none: b got {got_b:?}");
    assert!(!got_b.is_empty(), "member b got none: a got {got_a:?}");
    let mut all: Vec<u8> = got_a.iter().chain(&got_b).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..N).collect::<Vec<_>>(), "each message exactly once");

    // Nothing more: a marker on another topic is the next message either member sees.
    a.subscribed("v311/shared/marker", QoS::AtLeastOnce).await;
    b.subscribed("v311/shared/marker", QoS::AtLeastOnce).await;
    publisher
        .publish("v311/shared/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    assert_eq!(a.next_publish().await.topic, "v311/shared/marker");
    assert_eq!(b.next_publish().await.topic, "v311/shared/marker");
}

/// [MQTT-3.1.4-2]: without an authentication hook every client is refused; 3.1.1 return codes
/// 0x05 not authorized (no credentials) and 0x04 bad user name or password.
#[tokio::test]
async fn connections_are_refused_without_an_auth_hook() {
    let (server, addr) = support::start_with(Options::default(), false).await;
    let refused = Conn::try_connect(opts("v311-refused", addr)).await;
    match refused {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        Err(other) => panic!("expected not authorized, got {other:?}"),
        Ok((_, connack)) => panic!("expected a refusal, got {connack:?}"),
    }

    let mut options = opts("v311-refused-login", addr);
    options.set_credentials("user", "password");
    match Conn::try_connect(options).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)) => {}
        Err(other) => panic!("expected bad user name or password, got {other:?}"),
        Ok((_, connack)) => panic!("expected a refusal, got {connack:?}"),
    }
    assert!(server.connected_clients().is_empty());
}

/// Fifty clients, each on its own topic, each get exactly their own message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_each_receive_their_own_messages() {
    const CLIENTS: usize = 50;
    let (_server, addr) = support::start().await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        let (mut conn, _) = Conn::connect(opts(&format!("v311-many-{i}"), addr)).await;
        conn.subscribed(&format!("v311/many/{i}"), QoS::AtLeastOnce)
            .await;
        clients.push(conn);
    }

    let (mut publisher, _) = Conn::connect(opts("v311-many-pub", addr)).await;
    for i in 0..CLIENTS {
        publisher
            .publish(
                &format!("v311/many/{i}"),
                QoS::AtLeastOnce,
                false,
                format!("for {i}"),
            )
            .await;
    }
    for (i, conn) in clients.iter_mut().enumerate() {
        let publish = conn.next_publish().await;
        assert_eq!(publish.topic, format!("v311/many/{i}"));
        assert_eq!(&publish.payload[..], format!("for {i}").as_bytes());
    }
    // Nothing else was delivered to anyone: a broadcast marker is each client's next message.
    for (i, conn) in clients.iter_mut().enumerate() {
        conn.subscribed("v311/many/all", QoS::AtLeastOnce).await;
        assert!(
            conn.pending
                .iter()
                .all(|p| !matches!(p, Packet::Publish(_))),
            "client {i} got a stray message"
        );
    }
    publisher
        .publish("v311/many/all", QoS::AtLeastOnce, false, "all")
        .await;
    for conn in &mut clients {
        assert_eq!(conn.next_publish().await.topic, "v311/many/all");
    }
}
