#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
//! End-to-end tests with an independent MQTT 5 client, `rumqttc::v5` (plain TCP).
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
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::mqttbytes::v5::{
    ConnAck, ConnectProperties, ConnectReturnCode, DisconnectReasonCode, Filter, LastWill, Packet,
    Publish, RetainForwardRule, SubscribeProperties, SubscribeReasonCode,
};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, StateError};
use support::TIMEOUT;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// A connected rumqttc v5 client whose event loop runs in a task.
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
                    Some(Err(error)) => panic!("connection ended waiting for {what}: {error:?}"),
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

    /// Waits for the SUBACK of a SUBACK already requested; its reason codes.
    async fn suback(&mut self) -> Vec<SubscribeReasonCode> {
        match self
            .wait_for("SUBACK", |p| matches!(p, Packet::SubAck(_)))
            .await
        {
            Packet::SubAck(suback) => suback.return_codes,
            _ => unreachable!(),
        }
    }

    /// Subscribes to one filter and checks that `qos` was granted.
    async fn subscribed(&mut self, filter: &str, qos: QoS) {
        self.client.subscribe(filter, qos).await.unwrap();
        assert_eq!(
            self.suback().await,
            [SubscribeReasonCode::Success(qos)],
            "subscription to {filter}"
        );
    }

    /// Subscribes with a Subscription Identifier and checks that `qos` was granted.
    async fn subscribed_with_id(&mut self, filter: &str, qos: QoS, id: usize) {
        let properties = SubscribeProperties {
            id: Some(id),
            user_properties: Vec::new(),
        };
        self.client
            .subscribe_with_properties(filter, qos, properties)
            .await
            .unwrap();
        assert_eq!(
            self.suback().await,
            [SubscribeReasonCode::Success(qos)],
            "subscription to {filter}"
        );
    }

    /// Subscribes with these subscription options and checks the QoS was granted.
    async fn subscribed_with(&mut self, filter: Filter) {
        let qos = filter.qos;
        self.client.subscribe_many([filter]).await.unwrap();
        assert_eq!(self.suback().await, [SubscribeReasonCode::Success(qos)]);
    }

    /// Publishes and, for QoS 1 and 2, waits until the flow is complete (PUBACK / PUBCOMP).
    async fn publish(&mut self, topic: &str, qos: QoS, retain: bool, payload: impl Into<Vec<u8>>) {
        self.client
            .publish(topic, qos, retain, payload.into())
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

/// Options for a persistent session: Clean Start 0, Session Expiry Interval 300 s.
fn persistent(id: &str, addr: SocketAddr) -> MqttOptions {
    let mut options = opts(id, addr);
    options.set_clean_start(false);
    options.set_connect_properties(ConnectProperties {
        session_expiry_interval: Some(300),
        ..ConnectProperties::new()
    });
    options
}

fn topic(publish: &Publish) -> &str {
    std::str::from_utf8(&publish.topic).expect("UTF-8 topic")
}

/// The Subscription Identifiers of a PUBLISH, sorted.
fn identifiers(publish: &Publish) -> Vec<usize> {
    let mut ids = publish
        .properties
        .as_ref()
        .map(|p| p.subscription_identifiers.clone())
        .unwrap_or_default();
    ids.sort_unstable();
    ids
}

fn lower(a: QoS, b: QoS) -> QoS {
    if a < b { a } else { b }
}

/// A payload that uses every byte value, different for each `seed`.
fn payload(seed: usize) -> Vec<u8> {
    (0..=255u8).cycle().skip(seed).take(700 + seed).collect()
}

const QOS: [QoS; 3] = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce];

/// [MQTT-3.8.4-8]: delivery at the lower of the published and the granted QoS; payloads arrive
/// byte for byte; [MQTT-3.3.1-12]: RETAIN 0 on normal forwarding without Retain As Published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_qos_is_delivered_intact_at_the_granted_qos() {
    let (_server, addr) = support::start().await;
    let mut subscribers = Vec::new();
    for granted in QOS {
        let (mut subscriber, connack) =
            Conn::connect(opts(&format!("v5-qos-sub-{}", granted as u8), addr)).await;
        // [MQTT-3.2.2-2]: Clean Start 1 → Session Present 0.
        assert!(!connack.session_present);
        subscriber.subscribed("v5/qos/+", granted).await;
        subscribers.push((granted, subscriber));
    }

    let (mut publisher, _) = Conn::connect(opts("v5-qos-pub", addr)).await;
    for qos in QOS {
        publisher
            .publish(
                &format!("v5/qos/{}", qos as u8),
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
            assert_eq!(topic(publish), format!("v5/qos/{}", qos as u8));
            assert_eq!(publish.qos, lower(qos, *granted), "granted {granted:?}");
            assert_eq!(&publish.payload[..], &payload(qos as usize)[..]);
            assert!(!publish.retain);
            assert!(!publish.dup);
        }
    }
}

/// [MQTT-3.3.1-5]: a retained message is stored; [§3.3.1.3]: it reaches a new subscriber with
/// RETAIN 1; [MQTT-3.3.1-6]: an empty retained payload is forwarded normally and clears the topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_messages_are_set_delivered_and_cleared() {
    let (_server, addr) = support::start().await;
    let (mut publisher, _) = Conn::connect(opts("v5-retain-pub", addr)).await;
    publisher
        .publish("v5/retained/t", QoS::AtLeastOnce, true, "kept")
        .await;

    let (mut early, _) = Conn::connect(opts("v5-retain-early", addr)).await;
    early.subscribed("v5/retained/#", QoS::AtLeastOnce).await;
    let retained = early.next_publish().await;
    assert_eq!(topic(&retained), "v5/retained/t");
    assert_eq!(&retained.payload[..], b"kept");
    assert!(retained.retain, "sent because of a new subscription");
    assert_eq!(retained.qos, QoS::AtLeastOnce);

    publisher
        .publish("v5/retained/t", QoS::AtLeastOnce, true, Vec::new())
        .await;
    let cleared = early.next_publish().await;
    assert_eq!(topic(&cleared), "v5/retained/t");
    assert!(cleared.payload.is_empty());
    assert!(!cleared.retain, "normal forwarding has RETAIN 0");

    // A later subscriber gets nothing retained: the first message it sees is a marker
    // published after its SUBACK.
    let (mut late, _) = Conn::connect(opts("v5-retain-late", addr)).await;
    late.subscribed("v5/retained/#", QoS::AtLeastOnce).await;
    publisher
        .publish("v5/retained/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    let first = late.next_publish().await;
    assert_eq!(topic(&first), "v5/retained/marker", "got {first:?}");
}

/// Subscription options through rumqttc's `Filter`: [MQTT-3.3.1-11] Retain Handling 2 sends no
/// retained messages; [MQTT-3.3.1-13] Retain As Published keeps RETAIN 1 on forwarding;
/// [MQTT-3.8.3-3] No Local keeps a client's own messages from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_options_are_honoured() {
    let (_server, addr) = support::start().await;
    let (mut publisher, _) = Conn::connect(opts("v5-options-pub", addr)).await;
    publisher
        .publish("v5/options/t", QoS::AtLeastOnce, true, "old")
        .await;

    let (mut conn, _) = Conn::connect(opts("v5-options", addr)).await;
    conn.subscribed_with(Filter {
        path: "v5/options/t".into(),
        qos: QoS::AtLeastOnce,
        nolocal: true,
        preserve_retain: true,
        retain_forward_rule: RetainForwardRule::Never,
    })
    .await;
    // Its own message is not sent back (No Local); the next publisher's message arrives with
    // RETAIN 1 (Retain As Published), and the old retained message never came (Retain Handling 2).
    conn.publish("v5/options/t", QoS::AtLeastOnce, false, "own")
        .await;
    publisher
        .publish("v5/options/t", QoS::AtLeastOnce, true, "new")
        .await;
    let first = conn.next_publish().await;
    assert_eq!(&first.payload[..], b"new", "got {first:?}");
    assert!(first.retain, "Retain As Published");
}

/// [MQTT-3.1.2-5], [MQTT-3.1.2-23]: with Clean Start 0 and a Session Expiry Interval the session
/// outlives the connection; [MQTT-3.2.2-3]: Session Present 1 on return; [MQTT-4.5.0-1]: QoS 1
/// messages are queued meanwhile; [MQTT-4.6.0-5]: they arrive in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_session_queues_messages_while_away() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);

    let (mut subscriber, connack) = Conn::connect(persistent("v5-persistent", addr)).await;
    assert!(!connack.session_present, "no session existed");
    subscriber
        .subscribed("v5/persist/t", QoS::AtLeastOnce)
        .await;
    subscriber.client.disconnect().await.unwrap();
    subscriber.ended().await;
    drop(subscriber);
    disconnects.wait_for("v5-persistent").await;

    let (mut publisher, _) = Conn::connect(opts("v5-persist-pub", addr)).await;
    for i in 0..5u8 {
        publisher
            .publish("v5/persist/t", QoS::AtLeastOnce, false, vec![i; 3])
            .await;
    }

    let (mut subscriber, connack) = Conn::connect(persistent("v5-persistent", addr)).await;
    assert!(connack.session_present, "the session was kept");
    for i in 0..5u8 {
        let publish = subscriber.next_publish().await;
        assert_eq!(topic(&publish), "v5/persist/t");
        assert_eq!(&publish.payload[..], &[i; 3], "message {i} in order");
        assert_eq!(publish.qos, QoS::AtLeastOnce);
    }
}

/// [MQTT-3.1.2-8]: a connection closed without DISCONNECT publishes the Will (no Will Delay);
/// [MQTT-3.1.2-14]: Will Retain 0 → not retained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_published_when_the_connection_drops() {
    let (_server, addr) = support::start().await;
    let (mut subscriber, _) = Conn::connect(opts("v5-will-sub", addr)).await;
    subscriber.subscribed("v5/will/+", QoS::AtLeastOnce).await;

    let mut options = opts("v5-will-dropped", addr);
    options.set_last_will(LastWill::new(
        "v5/will/dropped",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (will_client, _) = Conn::connect(options).await;
    // Aborting the task drops the event loop and its socket: no DISCONNECT is sent.
    drop(will_client);

    let will = subscriber.next_publish().await;
    assert_eq!(topic(&will), "v5/will/dropped");
    assert_eq!(&will.payload[..], b"gone");
    assert_eq!(will.qos, QoS::AtLeastOnce);
    assert!(!will.retain);
}

/// [MQTT-3.14.4-3], [MQTT-3.1.2-10]: a DISCONNECT 0x00 discards the Will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn will_is_not_published_after_a_normal_disconnect() {
    let (server, addr) = support::start().await;
    let mut disconnects = support::watch_disconnects(&server);
    let (mut subscriber, _) = Conn::connect(opts("v5-nowill-sub", addr)).await;
    subscriber.subscribed("v5/nowill/+", QoS::AtLeastOnce).await;

    let mut options = opts("v5-will-clean", addr);
    options.set_last_will(LastWill::new(
        "v5/nowill/clean",
        "gone",
        QoS::AtLeastOnce,
        false,
        None,
    ));
    let (mut will_client, _) = Conn::connect(options).await;
    will_client.client.disconnect().await.unwrap();
    will_client.ended().await;
    disconnects.wait_for("v5-will-clean").await;

    // The server is done with the connection; a marker published now is the first message.
    let (mut publisher, _) = Conn::connect(opts("v5-nowill-pub", addr)).await;
    publisher
        .publish("v5/nowill/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    let first = subscriber.next_publish().await;
    assert_eq!(topic(&first), "v5/nowill/marker", "got {first:?}");
}

/// [MQTT-3.1.4-3]: a second connection with the same ClientID takes over; the old one is sent
/// DISCONNECT 0x8E Session taken over and closed.
///
/// rumqttc 0.24 cannot surface the 0x8E: the broker sends the short form `e0 01 8e` (reason code,
/// no Property Length, allowed by §3.14.2.2.1 "if the Remaining Length is less than 2, a value of
/// 0 is used", and what mosquitto sends too). rumqttc's `DisconnectProperties::extract` then
/// asks for one more byte after it has already consumed the frame, so the event loop only sees
/// the close ("connection closed by peer"). Both outcomes are accepted; a
/// `ServerDisconnect` must carry 0x8E.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_connection_with_the_same_id_takes_over() {
    let (server, addr) = support::start().await;
    let (mut first, _) = Conn::connect(opts("v5-dup", addr)).await;
    let (mut second, connack) = Conn::connect(opts("v5-dup", addr)).await;
    assert!(!connack.session_present, "Clean Start 1");

    match first.ended().await {
        ConnectionError::MqttState(StateError::ServerDisconnect { reason_code, .. }) => {
            assert_eq!(reason_code, DisconnectReasonCode::SessionTakenOver);
        }
        ConnectionError::Io(_) | ConnectionError::MqttState(StateError::Io(_)) => {}
        other => panic!("expected DISCONNECT 0x8E or a close, got {other:?}"),
    }

    second.subscribed("v5/takeover/t", QoS::AtLeastOnce).await;
    second
        .publish("v5/takeover/t", QoS::AtLeastOnce, false, "mine")
        .await;
    assert_eq!(&second.next_publish().await.payload[..], b"mine");
    let connected = server.connected_clients();
    assert_eq!(
        connected.iter().filter(|id| *id == "v5-dup").count(),
        1,
        "{connected:?}"
    );
}

/// [§3.2.2.3.14]: a configured Server Keep Alive is sent in CONNACK and replaces the client's
/// ([MQTT-3.1.2-21], which rumqttc follows); [MQTT-3.12.4-1]: PINGREQs are answered and keep a
/// 2 s connection up over several periods ([MQTT-3.1.2-22]).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_keep_alive_is_advertised_and_pings_keep_the_connection_up() {
    let mut options = Options::default();
    options.capabilities.server_keep_alive = Some(2);
    let (server, addr) = support::start_with(options, true).await;

    // The client asks for 30 s; the server answers 2 s and rumqttc then pings every 2 s.
    let (mut conn, connack) = Conn::connect(opts("v5-keepalive", addr)).await;
    let properties = connack.properties.expect("CONNACK properties");
    assert_eq!(properties.server_keep_alive, Some(2));
    for _ in 0..3 {
        conn.wait_for("PINGRESP", |p| matches!(p, Packet::PingResp(_)))
            .await;
    }
    assert!(
        server
            .connected_clients()
            .iter()
            .any(|id| id == "v5-keepalive")
    );
    conn.subscribed("v5/keepalive/t", QoS::AtLeastOnce).await;
    conn.publish("v5/keepalive/t", QoS::AtLeastOnce, false, "alive")
        .await;
    assert_eq!(&conn.next_publish().await.payload[..], b"alive");
}

/// [MQTT-3.3.4-3], [MQTT-3.3.4-4]: overlapping subscriptions give one copy carrying the
/// identifiers of every matching subscription.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subscriptions_deliver_once_with_both_identifiers() {
    let (_server, addr) = support::start().await;
    let (mut conn, _) = Conn::connect(opts("v5-overlap", addr)).await;
    conn.subscribed_with_id("v5/overlap/+", QoS::AtLeastOnce, 1)
        .await;
    conn.subscribed_with_id("v5/overlap/#", QoS::AtMostOnce, 2)
        .await;

    let (mut publisher, _) = Conn::connect(opts("v5-overlap-pub", addr)).await;
    publisher
        .publish("v5/overlap/x", QoS::AtLeastOnce, false, "once")
        .await;
    let publish = conn.next_publish().await;
    assert_eq!(&publish.payload[..], b"once");
    assert_eq!(identifiers(&publish), [1, 2]);
    // The greatest granted QoS applies to the single copy.
    assert_eq!(publish.qos, QoS::AtLeastOnce);

    // No second copy: the next message is the marker published afterwards.
    publisher
        .publish("v5/overlap/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    let next = conn.next_publish().await;
    assert_eq!(&next.payload[..], b"marker", "got {next:?}");
    assert_eq!(identifiers(&next), [1, 2]);
}

/// [§4.8.2]: each message on a shared subscription goes to exactly one member of the group.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_messages_between_members() {
    const N: u8 = 20;
    let (_server, addr) = support::start().await;
    let (mut a, _) = Conn::connect(opts("v5-share-a", addr)).await;
    let (mut b, _) = Conn::connect(opts("v5-share-b", addr)).await;
    a.subscribed("$share/g/v5/shared/t", QoS::AtLeastOnce).await;
    b.subscribed("$share/g/v5/shared/t", QoS::AtLeastOnce).await;

    let (mut publisher, _) = Conn::connect(opts("v5-share-pub", addr)).await;
    for i in 0..N {
        publisher
            .publish("v5/shared/t", QoS::AtLeastOnce, false, vec![i])
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
    a.subscribed("v5/shared/marker", QoS::AtLeastOnce).await;
    b.subscribed("v5/shared/marker", QoS::AtLeastOnce).await;
    publisher
        .publish("v5/shared/marker", QoS::AtLeastOnce, false, "marker")
        .await;
    assert_eq!(topic(&a.next_publish().await), "v5/shared/marker");
    assert_eq!(topic(&b.next_publish().await), "v5/shared/marker");
}

/// [MQTT-3.1.4-2], [MQTT-3.2.2-7]: without an authentication hook every client is refused with
/// CONNACK 0x87 Not authorized, or 0x86 Bad User Name or Password when it sent credentials.
#[tokio::test]
async fn connections_are_refused_without_an_auth_hook() {
    let (server, addr) = support::start_with(Options::default(), false).await;
    match Conn::try_connect(opts("v5-refused", addr)).await {
        Err(ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)) => {}
        Err(other) => panic!("expected not authorized, got {other:?}"),
        Ok((_, connack)) => panic!("expected a refusal, got {connack:?}"),
    }

    let mut options = opts("v5-refused-login", addr);
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
        let (mut conn, _) = Conn::connect(opts(&format!("v5-many-{i}"), addr)).await;
        conn.subscribed(&format!("v5/many/{i}"), QoS::AtLeastOnce)
            .await;
        clients.push(conn);
    }

    let (mut publisher, _) = Conn::connect(opts("v5-many-pub", addr)).await;
    for i in 0..CLIENTS {
        publisher
            .publish(
                &format!("v5/many/{i}"),
                QoS::AtLeastOnce,
                false,
                format!("for {i}"),
            )
            .await;
    }
    for (i, conn) in clients.iter_mut().enumerate() {
        let publish = conn.next_publish().await;
        assert_eq!(topic(&publish), format!("v5/many/{i}"));
        assert_eq!(&publish.payload[..], format!("for {i}").as_bytes());
    }
    // Nothing else was delivered to anyone: a broadcast marker is each client's next message.
    for (i, conn) in clients.iter_mut().enumerate() {
        conn.subscribed("v5/many/all", QoS::AtLeastOnce).await;
        assert!(
            conn.pending
                .iter()
                .all(|p| !matches!(p, Packet::Publish(_))),
            "client {i} got a stray message"
        );
    }
    publisher
        .publish("v5/many/all", QoS::AtLeastOnce, false, "all")
        .await;
    for conn in &mut clients {
        assert_eq!(topic(&conn.next_publish().await), "v5/many/all");
    }
}
