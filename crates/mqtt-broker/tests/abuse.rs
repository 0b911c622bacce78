//! Tests written as an attacker would: each finding of the security audit
//! (`shared/reviews/security-audit.md`) over a real socket, or over an in-memory stream under the
//! paused clock where time is the attack. After each, the broker still serves a well-behaved
//! client. Memory is measured in `abuse_memory.rs`, which needs a counting allocator of its own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mqtt_broker::hooks::{
    Access, AuthOutcome, AuthState, AuthStep, BoxFuture, Decision, HookError, HookEvents,
};
use mqtt_broker::{AllowAllHook, ClientInfo, Hook, Options};
use mqtt_packets::{
    Connect, MqttString, Packet, Protocol, QoS, ReasonCode, Subscribe, Subscription, UserProperty,
};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

fn options_with(change: impl FnOnce(&mut Options)) -> Options {
    let mut options = Options::default();
    change(&mut options);
    options
}

/// After an attack: a new client still connects, subscribes and gets its own message.
async fn still_serves(addr: std::net::SocketAddr) {
    let mut client = Raw::v5(addr, "well-behaved").await;
    client.subscribe("ok/t", QoS::AtLeastOnce).await;
    assert_eq!(
        client.publish_qos1("ok/t", b"fine", false).await,
        ReasonCode::SUCCESS
    );
    assert_eq!(client.expect_publish().await.payload.as_ref(), b"fine");
}

fn empty_user_properties(count: usize) -> mqtt_packets::UserProperties {
    (0..count)
        .map(|_| UserProperty::new(MqttString::default(), MqttString::default()))
        .collect()
}

// C1: user properties beyond the limit end the connection with 0x97 before they cost memory.
#[tokio::test]
async fn a_connect_full_of_user_properties_gets_connack_quota_exceeded() {
    let (_server, addr) = start().await;
    let mut connect = connect(Protocol::V5, "flood");
    connect.properties.user_properties = empty_user_properties(65);
    let (mut raw, answer) = Raw::handshake(addr, connect).await;
    assert_eq!(connack(answer).reason_code, ReasonCode::QUOTA_EXCEEDED);
    raw.closed().await;
    still_serves(addr).await;
}

#[tokio::test]
async fn a_publish_full_of_user_properties_is_disconnected_with_quota_exceeded() {
    let (server, addr) = start().await;
    let mut client = Raw::v5(addr, "flood").await;
    let mut message = publish("a/b", b"x", QoS::AtLeastOnce, false, 1);
    message.properties.user_properties = empty_user_properties(10_000);
    client.send(message.into()).await;
    client.expect_disconnect(ReasonCode::QUOTA_EXCEEDED).await;
    assert!(
        server.info().snapshot().protocol_errors + server.info().snapshot().limits_exceeded > 0
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn a_subscribe_with_too_many_filters_is_disconnected_and_subscriptions_are_capped() {
    let limited = options_with(|options| {
        options.capabilities.maximum_subscriptions_per_client = 3;
    });
    let (server, addr) = start_with(limited, true).await;
    // More filters in one SUBSCRIBE than the default 256: 0x97 (audit M5).
    let mut client = Raw::v5(addr, "filters").await;
    let filters = (0..257)
        .map(|n| Subscription {
            filter: MqttString::new(format!("f/{n}")).unwrap(),
            options: options(QoS::AtMostOnce),
        })
        .collect();
    client.send(Subscribe::new(pid(1), filters).into()).await;
    client.expect_disconnect(ReasonCode::QUOTA_EXCEEDED).await;

    // Subscriptions per client: the fourth distinct filter is refused, a repeat is not.
    let mut client = Raw::v5(addr, "subscriptions").await;
    let filters = ["a", "b", "c", "d", "a"]
        .map(|filter| Subscription {
            filter: MqttString::new(filter).unwrap(),
            options: options(QoS::AtMostOnce),
        })
        .to_vec();
    let suback = client
        .subscribe_packet(Subscribe::new(pid(2), filters))
        .await;
    assert_eq!(
        suback.reason_codes,
        [
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::GRANTED_QOS_0,
            ReasonCode::QUOTA_EXCEEDED,
            ReasonCode::GRANTED_QOS_0,
        ]
    );
    assert!(server.info().snapshot().limits_exceeded >= 1);
    still_serves(addr).await;
}

// M4: aliases beyond their byte limit end the connection; the default Topic Alias Maximum is
// lower.
#[tokio::test]
async fn topic_aliases_beyond_their_bytes_are_disconnected() {
    let (_server, addr) = start().await;
    let mut client = Raw::connect(addr, Protocol::V5).await;
    client.send(connect(Protocol::V5, "aliases").into()).await;
    let answer = connack(client.recv().await.unwrap());
    assert_eq!(answer.properties.topic_alias_maximum, Some(64));
    // 64 KiB of alias topics at most: the 33rd topic of 2 KiB goes beyond.
    for alias in 1..=33u16 {
        let topic = format!("{alias:04}/{}", "x".repeat(2043));
        let mut message = publish(&topic, b"", QoS::AtMostOnce, false, 0);
        message.properties.topic_alias = std::num::NonZeroU16::new(alias);
        client.send(message.into()).await;
    }
    let packets = client.closed().await;
    assert!(
        matches!(packets.last(), Some(Packet::Disconnect(d)) if d.reason_code == ReasonCode::QUOTA_EXCEEDED),
        "{packets:?}"
    );
    still_serves(addr).await;
}

#[tokio::test]
async fn an_invalid_topic_sets_no_alias() {
    let (_server, addr) = start().await;
    let mut client = Raw::v5(addr, "bad-alias").await;
    // More levels than the topic rules allow (128): refused, and alias 1 stays unset.
    let deep = vec!["a"; 200].join("/");
    let mut message = publish(&deep, b"", QoS::AtLeastOnce, false, 1);
    message.properties.topic_alias = std::num::NonZeroU16::new(1);
    client.send(message.into()).await;
    assert_eq!(
        client.expect_puback().await.reason_code,
        ReasonCode::TOPIC_NAME_INVALID
    );
    let mut message = publish("", b"", QoS::AtLeastOnce, false, 2);
    message.properties.topic_alias = std::num::NonZeroU16::new(1);
    client.send(message.into()).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
}

// M6: retained messages beyond the limit are delivered but not retained.
#[tokio::test]
async fn retained_messages_beyond_the_limit_are_not_kept() {
    let options = options_with(|options| {
        options.capabilities.maximum_retained_messages = 3;
        options.capabilities.maximum_retained_bytes = 1024;
    });
    let (server, addr) = start_with(options, true).await;
    let mut publisher = Raw::v5(addr, "retainer").await;
    for n in 0..3 {
        let code = publisher
            .publish_qos1(&format!("r/{n}"), b"kept", true)
            .await;
        assert_eq!(code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
    }
    let code = publisher.publish_qos1("r/3", b"not kept", true).await;
    assert_eq!(code, ReasonCode::QUOTA_EXCEEDED);
    // A replacement of a kept topic still fits; a large one does not.
    assert_eq!(
        publisher.publish_qos1("r/0", b"again", true).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    assert_eq!(
        publisher.publish_qos1("r/1", &[7u8; 2048], true).await,
        ReasonCode::QUOTA_EXCEEDED
    );
    assert_eq!(server.info().snapshot().retained, 3);
    let mut subscriber = Raw::v5(addr, "reader").await;
    subscriber.subscribe("r/#", QoS::AtMostOnce).await;
    let mut payloads = Vec::new();
    for _ in 0..3 {
        payloads.push(subscriber.expect_publish().await.payload);
    }
    payloads.sort();
    assert_eq!(payloads, [&b"again"[..], b"kept", b"kept"]);
    // A 3.x publisher cannot be told: acknowledged, not retained.
    let mut old = Raw::v311(addr, "old").await;
    old.publish_qos1("r/4", b"x", true).await;
    assert_eq!(server.info().snapshot().retained, 3);
}

// H2: no more sessions than the limit.
#[tokio::test]
async fn sessions_beyond_the_limit_are_refused() {
    let options = options_with(|options| options.capabilities.maximum_sessions = 2);
    let (_server, addr) = start_with(options, true).await;
    let _one = Raw::v5(addr, "one").await;
    let (_two, _) = Raw::accepted(addr, persistent_v5("two", true)).await;
    let (mut three, answer) = Raw::handshake(addr, persistent_v5("three", true)).await;
    assert_eq!(connack(answer).reason_code, ReasonCode::QUOTA_EXCEEDED);
    three.closed().await;
    let (mut old, answer) = Raw::handshake(addr, connect(Protocol::V3_1_1, "four")).await;
    assert_eq!(connack(answer).reason_code, ReasonCode::SERVER_UNAVAILABLE);
    old.closed().await;
    // An existing session resumes.
    let (_again, answer) = Raw::accepted(addr, persistent_v5("two", false)).await;
    assert!(answer.session_present);
}

#[tokio::test]
async fn the_default_session_expiry_is_finite() {
    let (_server, addr) = start().await;
    let mut connect = persistent_v5("forever", true);
    connect.properties.session_expiry_interval = Some(u32::MAX);
    let (_client, answer) = Raw::accepted(addr, connect).await;
    assert_eq!(answer.properties.session_expiry_interval, Some(86_400));
}

/// Authenticates every client, keeping its user name (as a password check would).
struct AnyUser;

impl Hook for AnyUser {
    fn id(&self) -> &str {
        "any-user"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT_AUTHENTICATE | HookEvents::ON_ACL_CHECK
    }

    fn on_connect_authenticate<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(std::future::ready(Decision::Allow))
    }

    fn on_acl_check(&self, client: &ClientInfo, topic: &str, _: Access) -> Decision {
        // Each user may read only its own topics.
        let user = client.username.as_deref().unwrap_or("");
        if topic.starts_with(&format!("{user}/")) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}

fn as_user(connect: Connect, user: &str) -> Connect {
    let mut connect = connect;
    connect.username = Some(MqttString::new(user).unwrap());
    connect
}

// H3: another user can neither take over nor resume a session.
#[tokio::test]
async fn another_user_can_neither_take_over_nor_resume_a_session() {
    let (server, addr) = start_with(Options::default(), false).await;
    server.add_hook(AnyUser).unwrap();
    let (mut alice, _) = Raw::accepted(addr, as_user(persistent_v5("device", true), "alice")).await;
    alice.subscribe("alice/#", QoS::AtLeastOnce).await;
    // Takeover by bob while alice is connected: refused, alice stays.
    let (mut bob, answer) =
        Raw::handshake(addr, as_user(persistent_v5("device", false), "bob")).await;
    assert_eq!(connack(answer).reason_code, ReasonCode::NOT_AUTHORIZED);
    bob.closed().await;
    alice.ping().await;
    alice.disconnect(ReasonCode::SUCCESS).await;
    // Messages queued for alice's offline session.
    let mut publisher = Raw::accepted(addr, as_user(connect(Protocol::V5, "p"), "alice"))
        .await
        .0;
    publisher
        .publish_qos1("alice/secret", b"for alice", false)
        .await;
    // Resume by bob, 3.x and v5: refused.
    let (mut bob, answer) = Raw::handshake(
        addr,
        as_user(
            {
                let mut c = connect(Protocol::V3_1_1, "device");
                c.clean_start = false;
                c
            },
            "bob",
        ),
    )
    .await;
    assert_eq!(connack(answer).reason_code, ReasonCode::NOT_AUTHORIZED);
    bob.closed().await;
    // Alice resumes and gets her message.
    let (mut alice, answer) =
        Raw::accepted(addr, as_user(persistent_v5("device", false), "alice")).await;
    assert!(answer.session_present);
    assert_eq!(alice.expect_publish().await.payload.as_ref(), b"for alice");
}

#[tokio::test]
async fn with_the_switch_off_a_new_user_gets_only_what_its_acl_allows() {
    let options = options_with(|options| options.bind_sessions_to_identity = false);
    let (server, addr) = start_with(options, false).await;
    server.add_hook(AnyUser).unwrap();
    let (mut alice, _) = Raw::accepted(addr, as_user(persistent_v5("shared", true), "alice")).await;
    alice.subscribe("alice/#", QoS::AtLeastOnce).await;
    alice.disconnect(ReasonCode::SUCCESS).await;
    let mut publisher = Raw::accepted(addr, as_user(connect(Protocol::V5, "p"), "alice"))
        .await
        .0;
    publisher
        .publish_qos1("alice/secret", b"for alice", false)
        .await;
    // Bob resumes alice's session: allowed by the switch, but alice's queued message is not
    // his to read.
    let (mut bob, answer) =
        Raw::accepted(addr, as_user(persistent_v5("shared", false), "bob")).await;
    assert!(answer.session_present);
    bob.ping().await;
    assert!(bob.try_recv(Duration::from_millis(300)).await.is_none());
}

#[tokio::test]
async fn assigned_client_ids_are_random() {
    let (_server, addr) = start().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let (_client, answer) = Raw::accepted(addr, connect(Protocol::V5, "")).await;
        let id = answer
            .properties
            .assigned_client_identifier
            .expect("an assigned id")
            .to_string();
        assert_eq!(id.len(), "mochi-".len() + 32, "{id}");
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

// M2: a client that trickles a packet byte by byte is closed 1.5 times its Keep Alive after its
// last complete packet.
#[tokio::test(start_paused = true)]
async fn a_trickled_packet_does_not_keep_the_connection_alive() {
    let server = mqtt_broker::Server::new(Options::default());
    server.add_hook(AllowAllHook).unwrap();
    let mut connect = connect(Protocol::V5, "trickle");
    connect.keep_alive = 2;
    let (mut client, answer) = Duplex::open(&server, 1 << 16, connect).await;
    connack(answer);
    let start = Instant::now();
    // A PUBLISH announcing 2 MiB, then one byte a second.
    client
        .stream
        .write_all(&[0x30, 0xFF, 0xFF, 0x7F])
        .await
        .unwrap();
    let mut ended = None;
    for _ in 0..30 {
        match tokio::time::timeout(Duration::from_secs(1), client.recv()).await {
            Ok(packet) => {
                ended = Some((packet, start.elapsed()));
                break;
            }
            Err(_) => {
                client.stream.write_all(&[0]).await.ok();
            }
        }
    }
    let (packet, elapsed) = ended.expect("the trickling client was never closed");
    assert!(
        matches!(packet, Some(Packet::Disconnect(ref d)) if d.reason_code == ReasonCode::KEEP_ALIVE_TIMEOUT),
        "{packet:?}"
    );
    assert!(
        elapsed <= Duration::from_secs(4),
        "closed after {elapsed:?}"
    );
}

/// An authentication hook that takes an hour.
struct SlowAuth;

impl Hook for SlowAuth {
    fn id(&self) -> &str {
        "slow-auth"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT_AUTHENTICATE
    }

    fn on_connect_authenticate<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Decision::Allow
        })
    }
}

// M3: the connect timeout covers authentication.
#[tokio::test(start_paused = true)]
async fn authentication_that_does_not_finish_is_refused_at_the_connect_timeout() {
    let options = options_with(|options| options.connect_timeout = Duration::from_secs(2));
    let server = mqtt_broker::Server::new(options);
    server.add_hook(SlowAuth).unwrap();
    let start = Instant::now();
    let (mut client, answer) = Duplex::open(&server, 1 << 16, connect(Protocol::V5, "slow")).await;
    assert_eq!(connack(answer).reason_code, ReasonCode::NOT_AUTHORIZED);
    assert!(
        start.elapsed() <= Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    assert!(client.recv().await.is_none());
}

/// Enhanced authentication that proves the identity "guest", whatever the CONNECT says.
struct ProvesGuest;

impl Hook for ProvesGuest {
    fn id(&self) -> &str {
        "proves-guest"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_ENHANCED_AUTH | HookEvents::ON_ACL_CHECK
    }

    fn on_enhanced_auth<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a str,
        _: Option<&'a bytes::Bytes>,
        _: AuthStep,
        _: &'a mut AuthState,
    ) -> BoxFuture<'a, AuthOutcome> {
        Box::pin(std::future::ready(AuthOutcome::Success {
            data: None,
            principal: Some(MqttString::from_static("guest")),
        }))
    }

    fn on_acl_check(&self, client: &ClientInfo, _: &str, _: Access) -> Decision {
        // guest may do nothing; anyone else anything.
        if client.username.as_deref() == Some("guest") {
            Decision::Deny
        } else {
            Decision::Allow
        }
    }
}

// H4: the identity enhanced authentication proves is the one the ACL sees.
#[tokio::test]
async fn the_acl_sees_the_principal_of_enhanced_authentication() {
    let (server, addr) = start_with(Options::default(), false).await;
    server.add_hook(ProvesGuest).unwrap();
    let mut connect = connect(Protocol::V5, "no-user-name");
    connect.properties.authentication_method = Some(MqttString::from_static("TEST"));
    let (mut client, _) = Raw::accepted(addr, connect).await;
    assert_eq!(
        client.publish_qos1("anything", b"x", false).await,
        ReasonCode::NOT_AUTHORIZED
    );
}

/// A storage hook with synchronous durability whose backend is down until told otherwise.
struct Backend(Arc<AtomicBool>);

impl Hook for Backend {
    fn id(&self) -> &str {
        "backend"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::DURABLE
    }

    fn durable(&self) -> Option<BoxFuture<'static, Result<(), HookError>>> {
        if self.0.load(Ordering::SeqCst) {
            Some(Box::pin(std::future::ready(Ok(()))))
        } else {
            Some(Box::pin(std::future::pending()))
        }
    }
}

// H5: acknowledgements held for a storage that does not answer time out (0x80, no PUBACK), and
// the broker acknowledges again once the storage is back.
#[tokio::test(start_paused = true)]
async fn held_acks_time_out_and_acks_resume_when_storage_is_back() {
    let options = options_with(|options| options.durable_ack_timeout = Duration::from_secs(5));
    let server = mqtt_broker::Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    let healthy = Arc::new(AtomicBool::new(false));
    server.add_hook(Backend(healthy.clone())).unwrap();
    let mut client = Duplex::connect(&server, "publisher", 1 << 16, 10).await;
    let start = Instant::now();
    client
        .send(publish("t", b"x", QoS::AtLeastOnce, false, 1).into())
        .await;
    let packet = client.recv().await;
    assert!(
        matches!(packet, Some(Packet::Disconnect(ref d)) if d.reason_code == ReasonCode::UNSPECIFIED_ERROR),
        "{packet:?}"
    );
    assert!(start.elapsed() >= Duration::from_secs(5));
    assert!(
        client.recv().await.is_none(),
        "no PUBACK after the DISCONNECT"
    );
    assert_eq!(server.info().snapshot().durable_ack_timeouts, 1);
    healthy.store(true, Ordering::SeqCst);
    let mut client = Duplex::connect(&server, "publisher", 1 << 16, 10).await;
    client
        .send(publish("t", b"x", QoS::AtLeastOnce, false, 1).into())
        .await;
    assert!(matches!(client.recv().await, Some(Packet::PubAck(_))));
}

#[tokio::test]
async fn concurrent_connects_do_not_exceed_maximum_clients() {
    let options = options_with(|options| options.capabilities.maximum_clients = 5);
    let (server, addr) = start_with(options, true).await;
    let attempts = (0..20).map(|n| {
        tokio::spawn(async move {
            let (raw, answer) = Raw::handshake(addr, connect(Protocol::V5, &format!("c{n}"))).await;
            (raw, connack(answer).reason_code)
        })
    });
    let mut kept = Vec::new();
    for attempt in attempts {
        kept.push(attempt.await.unwrap());
    }
    let accepted = kept
        .iter()
        .filter(|(_, code)| *code == ReasonCode::SUCCESS)
        .count();
    assert!(accepted <= 5, "{accepted} accepted");
    assert!(accepted >= 1);
    assert!(server.info().snapshot().clients_connected <= 5);
    for (code, expected) in kept
        .iter()
        .map(|(_, code)| (*code, ReasonCode::SERVER_BUSY))
    {
        assert!(code == ReasonCode::SUCCESS || code == expected, "{code:?}");
    }
}

// H1: properties count against the queue's byte limit (they were not counted at all).
#[tokio::test]
async fn properties_count_against_the_queued_bytes_of_an_offline_session() {
    let options = options_with(|options| {
        options.capabilities.maximum_queued_bytes = 8 * 1024;
    });
    let (server, addr) = start_with(options, true).await;
    let (mut subscriber, _) = Raw::accepted(addr, persistent_v5("offline", true)).await;
    subscriber.subscribe("p/#", QoS::AtLeastOnce).await;
    subscriber.disconnect(ReasonCode::SUCCESS).await;
    let mut publisher = Raw::v5(addr, "publisher").await;
    // Twenty messages with an empty payload and 1 KiB of properties each: 20 KiB of properties
    // against an 8 KiB queue.
    for n in 0..20u16 {
        let mut message = publish("p/t", b"", QoS::AtLeastOnce, false, n + 1);
        message.properties.user_properties = vec![UserProperty::new(
            MqttString::from_static("k"),
            MqttString::new("v".repeat(1024)).unwrap(),
        )]
        .into();
        publisher.send(message.into()).await;
        publisher.expect_puback().await;
    }
    let (mut subscriber, answer) = Raw::accepted(addr, persistent_v5("offline", false)).await;
    assert!(answer.session_present);
    let mut received = 0;
    while let Some(packet) = subscriber.try_recv(Duration::from_millis(500)).await {
        if matches!(packet, Packet::Publish(_)) {
            received += 1;
        }
    }
    assert!((1..=8).contains(&received), "{received} queued");
    assert!(server.info().snapshot().messages_dropped >= 12);
}

// L8: a client id with control characters could forge log lines: refused with 0x85.
#[tokio::test]
async fn client_ids_with_control_characters_are_refused() {
    let (_server, addr) = start().await;
    for id in ["a\nINFO forged line", "esc\u{1b}[31m"] {
        let (mut raw, answer) = Raw::handshake(addr, connect(Protocol::V5, id)).await;
        assert_eq!(
            connack(answer).reason_code,
            ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        );
        raw.closed().await;
    }
    still_serves(addr).await;
}

/// Holds the first ACL check of `race/#` until the test lets it go, so that a clean takeover
/// can run in the middle of a SUBSCRIBE.
struct HoldSubscribe {
    reached: parking_lot::Mutex<Option<std::sync::mpsc::Sender<()>>>,
    release: parking_lot::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
}

impl Hook for HoldSubscribe {
    fn id(&self) -> &str {
        "hold-subscribe"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT_AUTHENTICATE | HookEvents::ON_ACL_CHECK
    }

    fn on_connect_authenticate<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        Box::pin(std::future::ready(Decision::Allow))
    }

    fn on_acl_check(&self, _: &ClientInfo, topic: &str, _: Access) -> Decision {
        if topic == "race/#" {
            let reached = self.reached.lock().take();
            let release = self.release.lock().take();
            if let (Some(reached), Some(release)) = (reached, release) {
                reached.send(()).unwrap();
                // Blocks until released; `block_in_place` hands this worker's queued tasks to
                // another thread meanwhile (the test runs on several), so the takeover runs.
                tokio::task::block_in_place(|| release.recv_timeout(TIMEOUT).unwrap());
            }
        }
        Decision::Allow
    }
}

// L3: a SUBSCRIBE of the old connection that races a clean-start takeover must not leave its
// filter in the new, clean session [MQTT-3.1.2-4].
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_subscribe_racing_a_clean_takeover_leaves_nothing_in_the_new_session() {
    let (reached_tx, reached_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    let hook = HoldSubscribe {
        reached: parking_lot::Mutex::new(Some(reached_tx)),
        release: parking_lot::Mutex::new(Some(release_rx)),
    };
    let (server, addr) = start_with(Options::default(), false).await;
    server.add_hook(hook).unwrap();
    let (mut old, _) = Raw::accepted(addr, persistent_v5("racer", true)).await;
    old.send(
        Subscribe::new(
            pid(1),
            vec![Subscription {
                filter: MqttString::from_static("race/#"),
                options: options(QoS::AtMostOnce),
            }],
        )
        .into(),
    )
    .await;
    // The SUBSCRIBE is between its ACL check and its insertion.
    tokio::task::spawn_blocking(move || reached_rx.recv_timeout(TIMEOUT).unwrap())
        .await
        .unwrap();
    let (mut new, answer) = Raw::accepted(addr, persistent_v5("racer", true)).await;
    assert!(!answer.session_present);
    release_tx.send(()).unwrap();
    // The old connection was taken over; whatever it got, its filter is not in the new session.
    old.closed().await;
    let mut publisher = Raw::v5(addr, "publisher").await;
    assert_eq!(
        publisher.publish_qos1("race/x", b"x", false).await,
        ReasonCode::NO_MATCHING_SUBSCRIBERS
    );
    new.ping().await;
    assert_eq!(server.info().snapshot().subscriptions, 0);
}
