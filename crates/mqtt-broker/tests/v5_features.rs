//! MQTT 5 features beyond the core: outbound topic aliases, payload format validation,
//! Response Information, and the `$SYS` topics.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::Options;
use mqtt_packets::{PayloadFormatIndicator, Protocol, QoS, ReasonCode};
use support::{Raw, connect, publish};

/// The server assigns aliases up to the client's Topic Alias Maximum, sends the topic once with
/// its alias, then only the alias; the least recently used alias is replaced
/// [MQTT-3.3.2-11] [MQTT-3.1.2-26].
#[tokio::test]
async fn outbound_topic_aliases_within_the_client_maximum() {
    let (_server, addr) = support::start().await;
    let mut subscribe = connect(Protocol::V5, "alias-sub");
    subscribe.properties.topic_alias_maximum = Some(2);
    let (mut subscriber, _) = Raw::accepted(addr, subscribe).await;
    subscriber.subscribe("t/#", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "alias-pub").await;
    for topic in ["t/a", "t/b", "t/a", "t/c", "t/b"] {
        publisher.publish_qos0(topic, topic.as_bytes(), false).await;
    }
    let mut seen = Vec::new();
    for _ in 0..5 {
        let message = subscriber.expect_publish().await;
        let alias = message.properties.topic_alias.map(|alias| alias.get());
        assert!(
            alias.is_some_and(|alias| (1..=2).contains(&alias)),
            "{message:?}"
        );
        seen.push((
            message.topic.to_string(),
            alias.unwrap(),
            message.payload.clone(),
        ));
    }
    // t/a and t/b are introduced with their topic; t/a is then sent by alias alone; t/c replaces
    // the least recently used (t/b), so t/b needs its topic again.
    assert_eq!(seen[0].0, "t/a");
    assert_eq!(seen[1].0, "t/b");
    assert_eq!((seen[2].0.as_str(), seen[2].1), ("", seen[0].1));
    assert_eq!(&seen[2].2[..], b"t/a");
    assert_eq!((seen[3].0.as_str(), seen[3].1), ("t/c", seen[1].1));
    assert_eq!(seen[4].0, "t/b");
}

/// A client that allows no aliases never gets one [MQTT-3.1.2-27].
#[tokio::test]
async fn no_outbound_aliases_without_a_client_maximum() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "no-alias-sub").await;
    subscriber.subscribe("t/#", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "no-alias-pub").await;
    for _ in 0..3 {
        publisher.publish_qos0("t/x", b"x", false).await;
    }
    for _ in 0..3 {
        let message = subscriber.expect_publish().await;
        assert_eq!(message.topic, "t/x");
        assert_eq!(message.properties.topic_alias, None);
    }
}

/// With payload validation on, a payload that claims UTF-8 but is not is refused with 0x99
/// [MQTT-3.3.2-4]; valid ones pass.
#[tokio::test]
async fn invalid_utf8_payload_is_refused_when_validation_is_on() {
    let mut options = Options::default();
    options.capabilities.validate_utf8_payload = true;
    let (_server, addr) = support::start_with(options, true).await;
    let mut subscriber = Raw::v5(addr, "pfi-sub").await;
    subscriber.subscribe("p/#", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(addr, "pfi-pub").await;

    let mut bad = publish("p/bad", b"\xFF\xFE", QoS::AtLeastOnce, false, 1);
    bad.properties.payload_format_indicator = Some(PayloadFormatIndicator::Utf8);
    publisher.send(bad.into()).await;
    assert_eq!(
        publisher.expect_puback().await.reason_code,
        ReasonCode::PAYLOAD_FORMAT_INVALID
    );

    let mut good = publish("p/good", "héllo".as_bytes(), QoS::AtLeastOnce, false, 2);
    good.properties.payload_format_indicator = Some(PayloadFormatIndicator::Utf8);
    publisher.send(good.into()).await;
    assert_eq!(
        publisher.expect_puback().await.reason_code,
        ReasonCode::SUCCESS
    );
    let received = subscriber.expect_publish().await;
    assert_eq!(received.topic, "p/good");
    // Forwarded unchanged [MQTT-3.3.2-4].
    assert_eq!(
        received.properties.payload_format_indicator,
        Some(PayloadFormatIndicator::Utf8)
    );
}

/// Response Information is sent only to a client that asks for it [MQTT-3.1.2-28].
#[tokio::test]
async fn response_information_only_when_requested() {
    let mut options = Options::default();
    options.capabilities.response_information = Some("responses/{client_id}".to_string());
    let (_server, addr) = support::start_with(options, true).await;
    let mut asking = connect(Protocol::V5, "asker");
    asking.properties.request_response_information = Some(true);
    let (_raw, connack) = Raw::accepted(addr, asking).await;
    assert_eq!(
        connack.properties.response_information.as_deref(),
        Some("responses/asker")
    );
    let (_raw, connack) = Raw::accepted(addr, connect(Protocol::V5, "quiet")).await;
    assert_eq!(connack.properties.response_information, None);
}

/// `$SYS` topics are retained and reach a subscriber of `$SYS/#` at once; `#` does not see them
/// [MQTT-4.7.2-1].
#[tokio::test]
async fn sys_topics_are_published_and_retained() {
    let (_server, addr) = support::start().await;
    let mut sys = Raw::v5(addr, "sys-watcher").await;
    let mut everything = Raw::v5(addr, "hash-watcher").await;
    everything.subscribe("#", QoS::AtMostOnce).await;
    // The first $SYS round is published when the server starts serving.
    sys.subscribe("$SYS/broker/+", QoS::AtMostOnce).await;
    let mut topics = std::collections::BTreeSet::new();
    while topics.len() < 5 {
        let message = sys.expect_publish().await;
        assert!(message.topic.starts_with("$SYS/broker/"));
        topics.insert(message.topic.to_string());
    }
    assert!(topics.contains("$SYS/broker/version") || topics.len() >= 5);
    assert!(
        everything
            .try_recv(Duration::from_millis(1500))
            .await
            .is_none(),
        "a root wildcard never receives $SYS"
    );
}

/// A CONNECT above the server's Maximum Packet Size gets CONNACK 0x95 (v5), decided from its
/// first bytes [MQTT-3.2.2-15].
#[tokio::test]
async fn oversized_connect_gets_connack_0x95() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::connect(addr, Protocol::V5).await;
    // Remaining Length 20 MiB (above the 16 MiB default), then the start of a v5 CONNECT.
    let mut bytes = vec![0x10];
    let mut length = 20u32 * 1024 * 1024;
    loop {
        let mut byte = (length & 0x7F) as u8;
        length >>= 7;
        if length > 0 {
            byte |= 0x80;
        }
        bytes.push(byte);
        if length == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&[0x00, 0x04, b'M', b'Q', b'T', b'T', 0x05]);
    raw.send_bytes(&bytes).await;
    let connack = support::connack(raw.recv().await.expect("CONNACK"));
    assert_eq!(connack.reason_code, ReasonCode::PACKET_TOO_LARGE);
    raw.expect_closed().await;
}

/// A hook redirects a client at CONNECT: CONNACK 0x9C with a Server Reference (§4.11).
#[tokio::test]
async fn a_hook_redirects_at_connect() {
    use mqtt_broker::{ClientInfo, ConnectRefusal, Hook};

    struct Redirect;
    impl Hook for Redirect {
        fn id(&self) -> &str {
            "redirect"
        }
        fn provides(&self) -> mqtt_broker::hooks::HookEvents {
            mqtt_broker::hooks::HookEvents::ON_CONNECT
        }
        fn on_connect(
            &self,
            client: &ClientInfo,
            _: &mqtt_packets::Connect,
        ) -> Result<(), ConnectRefusal> {
            if client.client_id.starts_with("eu-") {
                Err(ConnectRefusal::redirect("eu.example.net:1883", false))
            } else {
                Ok(())
            }
        }
    }

    let server = mqtt_broker::Server::new(Options::default());
    server.add_hook(Redirect).unwrap();
    server.add_hook(mqtt_broker::AllowAllHook).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("tcp", listener).await });

    let (mut raw, packet) = Raw::handshake(addr, connect(Protocol::V5, "eu-7")).await;
    let connack = support::connack(packet);
    assert_eq!(connack.reason_code, ReasonCode::USE_ANOTHER_SERVER);
    assert_eq!(
        connack.properties.server_reference.as_deref(),
        Some("eu.example.net:1883")
    );
    raw.expect_closed().await;

    // The host program moves a connected client: DISCONNECT 0x9D with the reference.
    let mut moved = Raw::v5(addr, "us-1").await;
    assert!(
        server
            .redirect_client("us-1", "us2.example.net", true)
            .unwrap()
    );
    match moved.recv().await.expect("DISCONNECT") {
        mqtt_packets::Packet::Disconnect(disconnect) => {
            assert_eq!(disconnect.reason_code, ReasonCode::SERVER_MOVED);
            assert_eq!(
                disconnect.properties.server_reference.as_deref(),
                Some("us2.example.net")
            );
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    moved.expect_closed().await;
}

/// When a shared-subscription member's session ends with a QoS 1 message unacknowledged, the
/// message goes to another member; a QoS 2 message in flight does not [MQTT-4.8.2-5] (§4.8.2).
#[tokio::test]
async fn shared_messages_of_an_ended_member_go_to_another() {
    let (_server, addr) = support::start().await;
    let mut first = Raw::v5(addr, "member-a").await;
    let filter = "$share/workers/jobs";
    first
        .subscribe_opts(filter, support::options(QoS::ExactlyOnce), None)
        .await;
    let mut second = Raw::v5(addr, "member-b").await;
    second
        .subscribe_opts(filter, support::options(QoS::ExactlyOnce), None)
        .await;
    let mut publisher = Raw::v5(addr, "producer").await;

    // Round robin: the first message goes to the first member, the second to the second.
    publisher
        .send(publish("jobs", b"job-1", QoS::AtLeastOnce, false, 1).into())
        .await;
    publisher.expect_puback().await;
    let job = first.expect_publish().await;
    assert_eq!(&job.payload[..], b"job-1");
    publisher
        .send(publish("jobs", b"job-2", QoS::AtLeastOnce, false, 2).into())
        .await;
    publisher.expect_puback().await;
    assert_eq!(&second.expect_publish().await.payload[..], b"job-2");
    second
        .send(mqtt_packets::PubAck::new(support::pid(1)).into())
        .await;
    // A QoS 2 job to the first member, left unfinished too.
    publisher
        .send(publish("jobs", b"job-3", QoS::ExactlyOnce, false, 3).into())
        .await;
    publisher.expect_pubrec().await;
    assert_eq!(&first.expect_publish().await.payload[..], b"job-3");

    // The first member vanishes (Session Expiry 0: its session ends with the connection).
    drop(first);
    let rerouted = second.expect_publish().await;
    assert_eq!(
        &rerouted.payload[..],
        b"job-1",
        "the unacknowledged QoS 1 job"
    );
    assert!(
        second.try_recv(Duration::from_millis(500)).await.is_none(),
        "the QoS 2 job is not offered again"
    );
}

/// With the `passive_client_disconnect` compatibility switch, the server sends its DISCONNECT and
/// leaves closing the connection to the client (some test suites need it); by default it closes.
#[tokio::test]
async fn passive_client_disconnect_leaves_the_close_to_the_client() {
    use tokio::io::AsyncReadExt;

    let mut options = Options::default();
    options
        .capabilities
        .compatibilities
        .passive_client_disconnect = true;
    let (_server, addr) = support::start_with(options, true).await;
    let mut raw = Raw::v5(addr, "passive").await;
    raw.send(connect(Protocol::V5, "passive").into()).await;
    match raw.recv().await {
        Some(mqtt_packets::Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::PROTOCOL_ERROR)
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_millis(500), raw.stream.read(&mut byte)).await;
    assert!(read.is_err(), "still open after the DISCONNECT: {read:?}");

    let (_server, addr) = support::start().await;
    let mut raw = Raw::v5(addr, "active").await;
    raw.send(connect(Protocol::V5, "active").into()).await;
    raw.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    raw.expect_closed().await;
}
