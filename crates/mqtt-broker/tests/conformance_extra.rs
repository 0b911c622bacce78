//! Statements of the conformance table that no other file checks directly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::num::NonZeroU32;
use std::time::Duration;

use bytes::Bytes;
use mqtt_broker::hooks::HookEvents;
use mqtt_broker::{AllowAllHook, ClientInfo, Hook, Options, Server};
use mqtt_packets::{
    AckProperties, MqttString, Packet, Protocol, PubAck, PubComp, PubRec, QoS, ReasonCode,
    UserProperty,
};
use support::{Raw, connect, options, pid, publish, s};

/// A hook that makes every acknowledgement verbose: a long Reason String and a User Property.
struct Verbose;

impl Hook for Verbose {
    fn id(&self) -> &str {
        "verbose"
    }
    fn provides(&self) -> HookEvents {
        HookEvents::ON_PACKET_ENCODE
    }
    fn on_packet_encode(&self, _: &ClientInfo, packet: Packet) -> Packet {
        let mut packet = packet;
        let properties: Option<&mut AckProperties> = match &mut packet {
            Packet::PubAck(ack) => Some(&mut ack.properties),
            Packet::PubRec(ack) => Some(&mut ack.properties),
            Packet::PubRel(ack) => Some(&mut ack.properties),
            Packet::PubComp(ack) => Some(&mut ack.properties),
            Packet::SubAck(ack) => Some(&mut ack.properties),
            Packet::UnsubAck(ack) => Some(&mut ack.properties),
            _ => None,
        };
        if let Some(properties) = properties {
            properties.reason_string = Some(MqttString::new("x".repeat(2000)).unwrap());
            properties
                .user_properties
                .push(UserProperty::new(s("k"), s("v")));
        }
        packet
    }
}

async fn verbose_server() -> std::net::SocketAddr {
    let server = Server::new(Options::default());
    server.add_hook(Verbose).unwrap();
    server.add_hook(AllowAllHook).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_tcp("tcp", listener).await });
    addr
}

fn has_problem_information(packet: &Packet) -> bool {
    let properties = match packet {
        Packet::PubAck(ack) => &ack.properties,
        Packet::PubRec(ack) => &ack.properties,
        Packet::PubRel(ack) => &ack.properties,
        Packet::PubComp(ack) => &ack.properties,
        Packet::SubAck(ack) => &ack.properties,
        Packet::UnsubAck(ack) => &ack.properties,
        other => panic!("not an acknowledgement: {other:?}"),
    };
    properties.reason_string.is_some() || !properties.user_properties.is_empty()
}

/// Runs every acknowledgement the server sends (SUBACK, PUBACK, PUBREC, PUBCOMP, PUBREL,
/// UNSUBACK) for one client and returns whether each carried problem information.
async fn acknowledgements(addr: std::net::SocketAddr, client: mqtt_packets::Connect) -> Vec<bool> {
    let id = client.client_id.to_string();
    let (mut raw, _) = Raw::accepted(addr, client).await;
    let mut seen = Vec::new();
    // SUBACK
    let subscribe = mqtt_packets::Subscribe::new(
        pid(1),
        vec![mqtt_packets::Subscription::new(
            s(&format!("{id}/#")),
            QoS::ExactlyOnce,
        )],
    );
    raw.send(subscribe.into()).await;
    seen.push(has_problem_information(&raw.next().await));
    // PUBACK
    raw.send(publish("elsewhere", b"1", QoS::AtLeastOnce, false, 2).into())
        .await;
    seen.push(has_problem_information(&raw.next().await));
    // PUBREC and PUBCOMP
    raw.send(publish("elsewhere", b"2", QoS::ExactlyOnce, false, 3).into())
        .await;
    seen.push(has_problem_information(&raw.next().await));
    raw.send(mqtt_packets::PubRel::new(pid(3)).into()).await;
    seen.push(has_problem_information(&raw.next().await));
    // PUBREL, as the sender of a QoS 2 message to this client.
    raw.send(publish(&format!("{id}/self"), b"3", QoS::ExactlyOnce, false, 4).into())
        .await;
    let mut delivered = None;
    for _ in 0..2 {
        match raw.next().await {
            Packet::Publish(publish) => delivered = publish.packet_id,
            Packet::PubRec(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    raw.send(PubRec::new(delivered.unwrap()).into()).await;
    let pubrel = raw.next().await;
    assert!(matches!(pubrel, Packet::PubRel(_)), "{pubrel:?}");
    seen.push(has_problem_information(&pubrel));
    raw.send(PubComp::new(delivered.unwrap()).into()).await;
    // UNSUBACK
    raw.send(mqtt_packets::Unsubscribe::new(pid(5), vec![s(&format!("{id}/#"))]).into())
        .await;
    let unsuback = loop {
        match raw.next().await {
            packet @ Packet::UnsubAck(_) => break packet,
            Packet::PubRel(_) => {} // the PUBREL of our own QoS 2 publish
            other => panic!("unexpected {other:?}"),
        }
    };
    seen.push(has_problem_information(&unsuback));
    seen
}

/// Reason Strings and User Properties on acknowledgements: sent when they fit and the client
/// allows them; left out when they would exceed the client's Maximum Packet Size
/// [MQTT-3.4.2-2] [MQTT-3.4.2-3] [MQTT-3.5.2-2] [MQTT-3.5.2-3] [MQTT-3.6.2-2] [MQTT-3.6.2-3]
/// [MQTT-3.7.2-2] [MQTT-3.7.2-3] [MQTT-3.9.2-1] [MQTT-3.9.2-2] [MQTT-3.11.2-1] [MQTT-3.11.2-2],
/// or when the client set Request Problem Information 0 [MQTT-3.1.2-29].
#[tokio::test]
async fn problem_information_on_acknowledgements() {
    let addr = verbose_server().await;
    let plain = connect(Protocol::V5, "plain");
    assert_eq!(
        acknowledgements(addr, plain).await,
        [true; 6],
        "the hook's properties fit"
    );

    let mut small = connect(Protocol::V5, "small");
    small.properties.maximum_packet_size = NonZeroU32::new(512);
    assert_eq!(
        acknowledgements(addr, small).await,
        [false; 6],
        "shed to fit 512 bytes"
    );

    let mut quiet = connect(Protocol::V5, "quiet");
    quiet.properties.request_problem_information = Some(false);
    assert_eq!(
        acknowledgements(addr, quiet).await,
        [false; 6],
        "not asked for"
    );
}

/// The DUP flag of a forwarded copy says whether that copy is a retransmission, never what the
/// publisher set [MQTT-3.3.1-3].
#[tokio::test]
async fn outbound_dup_is_not_the_publishers() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "dup-sub").await;
    subscriber.subscribe("dup/t", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(addr, "dup-pub").await;
    let mut resend = publish("dup/t", b"again", QoS::AtLeastOnce, false, 7);
    resend.dup = true;
    publisher.send(resend.into()).await;
    publisher.expect_puback().await;
    assert!(!subscriber.expect_publish().await.dup);
}

/// Response Topic, Correlation Data and User Properties reach the subscriber unchanged and in
/// order [MQTT-3.3.2-15] [MQTT-3.3.2-16] [MQTT-3.3.2-17] [MQTT-3.3.2-18] (§4.10).
#[tokio::test]
async fn request_response_properties_are_forwarded_untouched() {
    let (_server, addr) = support::start().await;
    let mut responder = Raw::v5(addr, "responder").await;
    responder
        .subscribe("service/request", QoS::AtLeastOnce)
        .await;
    let mut requester = Raw::v5(addr, "requester").await;
    let mut request = publish("service/request", b"ping", QoS::AtLeastOnce, false, 1);
    request.properties.response_topic = Some(s("service/reply/requester"));
    request.properties.correlation_data = Some(Bytes::from_static(b"\x00\x01corr"));
    request.properties.user_properties = vec![
        UserProperty::new(s("b"), s("2")),
        UserProperty::new(s("a"), s("1")),
        UserProperty::new(s("b"), s("3")),
    ]
    .into();
    requester.send(request.clone().into()).await;
    requester.expect_puback().await;
    let received = responder.expect_publish().await;
    assert_eq!(
        received.properties.response_topic,
        request.properties.response_topic
    );
    assert_eq!(
        received.properties.correlation_data,
        request.properties.correlation_data
    );
    assert_eq!(
        received.properties.user_properties,
        request.properties.user_properties
    );
}

/// A Will keeps its User Properties in their original order [MQTT-3.1.3-10].
#[tokio::test]
async fn will_user_properties_keep_their_order() {
    let (_server, addr) = support::start().await;
    let mut watcher = Raw::v5(addr, "will-watcher").await;
    watcher.subscribe("wills/#", QoS::AtMostOnce).await;
    let mut with_will = connect(Protocol::V5, "will-order");
    let mut will = support::will("wills/order", b"gone");
    will.properties.user_properties = vec![
        UserProperty::new(s("z"), s("1")),
        UserProperty::new(s("a"), s("2")),
    ]
    .into();
    with_will.will = Some(will);
    let (client, _) = Raw::accepted(addr, with_will).await;
    drop(client);
    let delivered = watcher.expect_publish().await;
    let names: Vec<&str> = delivered
        .properties
        .user_properties
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["z", "a"]);
}

/// A DISCONNECT from the server never carries a Session Expiry Interval [MQTT-3.14.2-2], and a
/// client that did not ask for enhanced authentication never sees AUTH data [MQTT-4.12.0-6].
#[tokio::test]
async fn server_disconnect_and_connack_properties() {
    let (_server, addr) = support::start().await;
    let (mut raw, connack) = Raw::accepted(addr, support::persistent_v5("props", true)).await;
    assert_eq!(connack.properties.authentication_method, None);
    assert_eq!(connack.properties.authentication_data, None);
    raw.send(connect(Protocol::V5, "props").into()).await;
    match raw.next().await {
        Packet::Disconnect(disconnect) => {
            assert_eq!(disconnect.reason_code, ReasonCode::PROTOCOL_ERROR);
            assert_eq!(disconnect.properties.session_expiry_interval, None);
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
}

/// Once a QoS 1 flow is acknowledged, the same packet id starts a new message [MQTT-4.3.2-5].
#[tokio::test]
async fn a_packet_id_is_reusable_after_puback() {
    let (_server, addr) = support::start().await;
    let mut subscriber = Raw::v5(addr, "reuse-sub").await;
    subscriber.subscribe("reuse/t", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "reuse-pub").await;
    for payload in [b"first", b"other"] {
        publisher
            .send(publish("reuse/t", payload, QoS::AtLeastOnce, false, 9).into())
            .await;
        assert_eq!(publisher.expect_puback().await.packet_id, pid(9));
        assert_eq!(&subscriber.expect_publish().await.payload[..], payload);
    }
}

/// With its send quota used up (Receive Maximum 1, nothing acknowledged), a client still gets
/// answers to everything that is not a PUBLISH [MQTT-3.3.4-10] [MQTT-4.9.0-3].
#[tokio::test]
async fn a_used_up_quota_holds_back_only_publish() {
    let (_server, addr) = support::start().await;
    let mut slow = connect(Protocol::V5, "quota");
    slow.properties.receive_maximum = std::num::NonZeroU16::new(1);
    let (mut subscriber, _) = Raw::accepted(addr, slow).await;
    subscriber.subscribe("quota/#", QoS::AtLeastOnce).await;
    let mut publisher = Raw::v5(addr, "quota-pub").await;
    for i in 0..3u16 {
        publisher
            .send(publish("quota/t", b"m", QoS::AtLeastOnce, false, i + 1).into())
            .await;
        publisher.expect_puback().await;
    }
    let first = subscriber.expect_publish().await;
    // The quota is now 0: no further PUBLISH, but PINGRESP and SUBACK come.
    subscriber.ping().await;
    subscriber
        .subscribe_opts("other/#", options(QoS::AtMostOnce), None)
        .await;
    assert!(
        subscriber
            .try_recv(Duration::from_millis(300))
            .await
            .is_none(),
        "no PUBLISH yet"
    );
    subscriber
        .send(PubAck::new(first.packet_id.unwrap()).into())
        .await;
    assert!(subscriber.expect_publish().await.packet_id.is_some());
}

/// A shared member receives at most its own granted QoS [MQTT-4.8.2-3].
#[tokio::test]
async fn shared_members_get_their_own_granted_qos() {
    let (_server, addr) = support::start().await;
    let mut member = Raw::v5(addr, "qos0-member").await;
    member
        .subscribe_opts("$share/g/q", options(QoS::AtMostOnce), None)
        .await;
    let mut publisher = Raw::v5(addr, "qos-pub").await;
    publisher.publish_qos1("q", b"x", false).await;
    let delivered = member.expect_publish().await;
    assert_eq!(delivered.qos, QoS::AtMostOnce);
    assert_eq!(delivered.packet_id, None);
}
