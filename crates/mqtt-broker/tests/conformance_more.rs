//! More statements of the conformance table: QoS 2 edge cases, shared-subscription delivery
//! rules, and v5 limits applied to 3.1.1 clients.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::time::Duration;

use mqtt_broker::hooks::{Access, Decision, HookEvents};
use mqtt_broker::{ClientInfo, Hook, Options, Server};
use mqtt_packets::{Packet, Protocol, PubRec, QoS, ReasonCode};
use support::{Raw, connect, options, publish};

/// Allows everything except writing to `denied/#`.
struct DenyTopic;

impl Hook for DenyTopic {
    fn id(&self) -> &str {
        "deny-topic"
    }
    fn provides(&self) -> HookEvents {
        HookEvents::ON_ACL_CHECK
    }
    fn on_acl_check(&self, _: &ClientInfo, topic: &str, access: Access) -> Decision {
        if access == Access::Write && topic.starts_with("denied/") {
            Decision::Deny
        } else {
            Decision::Defer
        }
    }
}

/// After a PUBREC with a code ≥0x80, the same packet id starts a new message [MQTT-4.3.3-9].
#[tokio::test]
async fn a_refused_qos2_id_is_free_again() {
    let server = Server::new(Options::default());
    server.add_hook(DenyTopic).unwrap();
    server.add_hook(mqtt_broker::AllowAllHook).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_tcp("tcp", listener).await });

    let mut subscriber = Raw::v5(addr, "qos2-sub").await;
    subscriber.subscribe("open/#", QoS::AtMostOnce).await;
    let mut publisher = Raw::v5(addr, "qos2-pub").await;
    publisher
        .send(publish("denied/x", b"no", QoS::ExactlyOnce, false, 5).into())
        .await;
    assert_eq!(
        publisher.expect_pubrec().await.reason_code,
        ReasonCode::NOT_AUTHORIZED
    );
    publisher
        .send(publish("open/x", b"yes", QoS::ExactlyOnce, false, 5).into())
        .await;
    assert_eq!(
        publisher.expect_pubrec().await.reason_code,
        ReasonCode::SUCCESS
    );
    assert_eq!(&subscriber.expect_publish().await.payload[..], b"yes");
}

/// A shared member that refuses a message (PUBREC ≥0x80) drops it: it is not offered to another
/// member [MQTT-4.8.2-6].
#[tokio::test]
async fn a_refusing_member_drops_the_message() {
    let (_server, addr) = support::start().await;
    let mut first = Raw::v5(addr, "refuser").await;
    first
        .subscribe_opts("$share/g/jobs", options(QoS::ExactlyOnce), None)
        .await;
    let mut second = Raw::v5(addr, "other-member").await;
    second
        .subscribe_opts("$share/g/jobs", options(QoS::ExactlyOnce), None)
        .await;
    let mut publisher = Raw::v5(addr, "jobs-pub").await;
    publisher
        .send(publish("jobs", b"job", QoS::ExactlyOnce, false, 1).into())
        .await;
    publisher.expect_pubrec().await;
    let job = first.expect_publish().await;
    first
        .send(PubRec::with_reason(job.packet_id.unwrap(), ReasonCode::UNSPECIFIED_ERROR).into())
        .await;
    assert!(second.try_recv(Duration::from_millis(500)).await.is_none());
    drop(first);
    assert!(
        second.try_recv(Duration::from_millis(500)).await.is_none(),
        "not even after it leaves"
    );
}

/// A shared member receives only its own Subscription Identifier (§3.3.4).
#[tokio::test]
async fn shared_members_see_only_their_own_identifier() {
    let (_server, addr) = support::start().await;
    let mut member = Raw::v5(addr, "id-member").await;
    member
        .subscribe_opts("$share/g/ids", options(QoS::AtMostOnce), Some(7))
        .await;
    let mut other = Raw::v5(addr, "id-other").await;
    other
        .subscribe_opts("ids", options(QoS::AtMostOnce), Some(99))
        .await;
    let mut publisher = Raw::v5(addr, "id-pub").await;
    publisher.publish_qos0("ids", b"x", false).await;
    let delivered = member.expect_publish().await;
    let ids: Vec<u32> = delivered
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    assert_eq!(ids, [7]);
    let ids: Vec<u32> = other
        .expect_publish()
        .await
        .properties
        .subscription_identifiers
        .iter()
        .map(|id| id.get())
        .collect();
    assert_eq!(ids, [99]);
}

/// A QoS 2 delivery to a shared member cut off by a lost connection is finished with that same
/// member when it reconnects [MQTT-4.8.2-4].
#[tokio::test]
async fn an_interrupted_shared_qos2_delivery_finishes_with_the_same_member() {
    let (_server, addr) = support::start().await;
    let (mut member, _) = Raw::accepted(addr, support::persistent_v5("shared-q2", true)).await;
    member
        .subscribe_opts("$share/g/q2", options(QoS::ExactlyOnce), None)
        .await;
    let mut other = Raw::v5(addr, "shared-q2-other").await;
    other
        .subscribe_opts("$share/g/q2", options(QoS::ExactlyOnce), None)
        .await;
    let mut publisher = Raw::v5(addr, "q2-pub").await;
    publisher
        .send(publish("q2", b"once", QoS::ExactlyOnce, false, 1).into())
        .await;
    publisher.expect_pubrec().await;
    let first = member.expect_publish().await;
    drop(member);
    let (mut member, connack) =
        Raw::accepted(addr, support::persistent_v5("shared-q2", false)).await;
    assert!(connack.session_present);
    let again = member.expect_publish().await;
    assert!(again.dup);
    assert_eq!(
        (again.packet_id, again.payload.clone()),
        (first.packet_id, first.payload.clone())
    );
    assert!(other.try_recv(Duration::from_millis(300)).await.is_none());
}

/// v5 limits apply to 3.1.1 clients too: a QoS above the server maximum closes the connection,
/// as does RETAIN when retain is unavailable (3.x differences: no DISCONNECT, just a close).
#[tokio::test]
async fn v5_limits_close_311_clients() {
    let mut options = Options::default();
    options.capabilities.maximum_qos = QoS::AtLeastOnce;
    options.capabilities.retain_available = false;
    let (_server, addr) = support::start_with(options, true).await;
    let mut too_high = Raw::v311(addr, "v3-qos2").await;
    too_high
        .send(publish("t", b"x", QoS::ExactlyOnce, false, 1).into())
        .await;
    too_high.expect_closed().await;
    let mut retained = Raw::v311(addr, "v3-retain").await;
    retained
        .send(publish("t", b"x", QoS::AtMostOnce, true, 0).into())
        .await;
    retained.expect_closed().await;
}

/// 3.1.1 clients never receive DISCONNECT: a protocol error closes the connection silently.
#[tokio::test]
async fn v311_protocol_errors_close_without_disconnect() {
    let (_server, addr) = support::start().await;
    let mut raw = Raw::v311(addr, "v3-silent").await;
    raw.send(connect(Protocol::V3_1_1, "v3-silent").into())
        .await;
    let packets = raw.closed().await;
    assert!(
        packets
            .iter()
            .all(|packet| !matches!(packet, Packet::Disconnect(_))),
        "{packets:?}"
    );
}
