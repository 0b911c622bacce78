//! Hooks see what their documentation says, over real sockets: the typed reason a connection
//! ended with, `on_unsubscribed` when a session ends, and `on_auth_packet` for AUTH packets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_broker::hooks::{AuthOutcome, AuthState, AuthStep, BoxFuture, HookEvents};
use mqtt_broker::{ClientInfo, ConnectionError, Hook, Options, Violation};
use mqtt_packets::{Auth, MqttString, Packet, Protocol, QoS, ReasonCode, Unsubscribe};
use parking_lot::Mutex;
use support::{Raw, connect, start_with, wait_until, watch_disconnects};

/// Records what the hooks under test saw.
#[derive(Default)]
struct Seen {
    disconnects: Vec<(String, Option<ConnectionError>)>,
    unsubscribed: Vec<(String, Vec<String>)>,
    auth_packets: Vec<ReasonCode>,
}

struct Recorder(Arc<Mutex<Seen>>);

impl Hook for Recorder {
    fn id(&self) -> &str {
        "recorder"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_DISCONNECT | HookEvents::ON_UNSUBSCRIBED
    }

    fn on_disconnect(&self, client: &ClientInfo, error: Option<&ConnectionError>, _: bool) {
        self.0
            .lock()
            .disconnects
            .push((client.client_id.to_string(), error.cloned()));
    }

    fn on_unsubscribed(&self, client: &ClientInfo, unsubscribe: &Unsubscribe) {
        let mut filters: Vec<String> = unsubscribe
            .filters
            .iter()
            .map(|filter| filter.to_string())
            .collect();
        filters.sort();
        self.0
            .lock()
            .unsubscribed
            .push((client.client_id.to_string(), filters));
    }
}

async fn server_with_recorder() -> (mqtt_broker::Server, std::net::SocketAddr, Arc<Mutex<Seen>>) {
    let (server, addr) = start_with(Options::default(), true).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    server.add_hook(Recorder(seen.clone())).unwrap();
    (server, addr, seen)
}

#[tokio::test]
async fn on_disconnect_gets_the_typed_reason_a_second_connect_mqtt_3_1_0_2() {
    let (server, addr, seen) = server_with_recorder().await;
    let mut ended = watch_disconnects(&server);
    let (mut client, _) = Raw::accepted(addr, connect(Protocol::V5, "twice")).await;
    client.send(connect(Protocol::V5, "twice").into()).await;
    client.expect_disconnect(ReasonCode::PROTOCOL_ERROR).await;
    ended.wait_for("twice").await;
    let seen = seen.lock();
    let (id, error) = &seen.disconnects[0];
    assert_eq!(id, "twice");
    let error = error.as_ref().expect("an error");
    assert!(
        matches!(error, ConnectionError::Protocol(Violation::SecondConnect)),
        "{error:?}"
    );
    assert_eq!(error.reason_code(), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(error.is_protocol_error());
}

#[tokio::test]
async fn on_disconnect_gets_no_error_for_a_normal_disconnect() {
    let (server, addr, seen) = server_with_recorder().await;
    let mut ended = watch_disconnects(&server);
    let (mut client, _) = Raw::accepted(addr, connect(Protocol::V5, "polite")).await;
    client
        .send(Packet::Disconnect(mqtt_packets::Disconnect::new(
            ReasonCode::SUCCESS,
        )))
        .await;
    ended.wait_for("polite").await;
    assert!(seen.lock().disconnects[0].1.is_none());
}

#[tokio::test]
async fn on_unsubscribed_sees_every_filter_when_a_session_ends() {
    let (server, addr, seen) = server_with_recorder().await;
    let mut ended = watch_disconnects(&server);
    // Session Expiry 0: the session ends with the connection.
    let (mut client, _) = Raw::accepted(addr, connect(Protocol::V5, "leaving")).await;
    client.subscribe("a/+", QoS::AtLeastOnce).await;
    client.subscribe("b/#", QoS::AtMostOnce).await;
    client
        .send(Packet::Disconnect(mqtt_packets::Disconnect::new(
            ReasonCode::SUCCESS,
        )))
        .await;
    ended.wait_for("leaving").await;
    let seen = seen.lock();
    assert_eq!(
        seen.unsubscribed,
        [(
            "leaving".to_owned(),
            vec!["a/+".to_owned(), "b/#".to_owned()]
        )]
    );
}

#[tokio::test]
async fn on_unsubscribed_sees_the_filters_a_clean_start_discards_mqtt_3_1_2_4() {
    let (_server, addr, seen) = server_with_recorder().await;
    let (mut client, _) = Raw::accepted(addr, support::persistent_v5("again", true)).await;
    client.subscribe("kept/+", QoS::AtLeastOnce).await;
    drop(client);
    // Reconnect with Clean Start: the old session's subscriptions end.
    let (_client, _) = Raw::accepted(addr, support::persistent_v5("again", true)).await;
    wait_until("on_unsubscribed", || !seen.lock().unsubscribed.is_empty()).await;
    assert_eq!(
        seen.lock().unsubscribed,
        [("again".to_owned(), vec!["kept/+".to_owned()])]
    );
}

/// Enhanced authentication in two steps (challenge, answer), whose `on_auth_packet` refuses
/// answers that carry the data "bad".
struct Challenge(Arc<Mutex<Seen>>);

impl Hook for Challenge {
    fn id(&self) -> &str {
        "challenge"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_ENHANCED_AUTH | HookEvents::ON_AUTH_PACKET
    }

    fn on_enhanced_auth<'a>(
        &'a self,
        _: &'a ClientInfo,
        _: &'a str,
        _: Option<&'a bytes::Bytes>,
        step: AuthStep,
        _: &'a mut AuthState,
    ) -> BoxFuture<'a, AuthOutcome> {
        let outcome = match step {
            AuthStep::Connect => AuthOutcome::Continue(bytes::Bytes::from_static(b"prove it")),
            _ => AuthOutcome::Success {
                data: None,
                principal: None,
            },
        };
        Box::pin(std::future::ready(outcome))
    }

    fn on_auth_packet(&self, _: &ClientInfo, auth: Auth) -> Result<Auth, ReasonCode> {
        self.0.lock().auth_packets.push(auth.reason_code);
        if auth.properties.authentication_data.as_deref() == Some(b"bad".as_slice()) {
            Err(ReasonCode::BANNED)
        } else {
            Ok(auth)
        }
    }
}

async fn answer_challenge(addr: std::net::SocketAddr, data: &'static [u8]) -> Packet {
    let mut connect = connect(Protocol::V5, "prover");
    connect.properties.authentication_method = Some(MqttString::from_static("CHALLENGE"));
    let (mut client, first) = Raw::handshake(addr, connect).await;
    assert!(matches!(first, Packet::Auth(_)), "{first:?}");
    let mut answer = Auth {
        reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
        properties: mqtt_packets::AuthProperties::default(),
    };
    answer.properties.authentication_method = Some(MqttString::from_static("CHALLENGE"));
    answer.properties.authentication_data = Some(bytes::Bytes::from_static(data));
    client.send(Packet::Auth(answer)).await;
    client.recv().await.expect("CONNACK")
}

#[tokio::test]
async fn on_auth_packet_sees_the_answers_of_enhanced_authentication_and_may_refuse_them() {
    let (server, addr) = start_with(Options::default(), false).await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    server.add_hook(Challenge(seen.clone())).unwrap();

    let Packet::ConnAck(accepted) = answer_challenge(addr, b"good").await else {
        panic!("no CONNACK");
    };
    assert_eq!(accepted.reason_code, ReasonCode::SUCCESS);
    let Packet::ConnAck(refused) = answer_challenge(addr, b"bad").await else {
        panic!("no CONNACK");
    };
    assert_eq!(refused.reason_code, ReasonCode::BANNED);
    assert_eq!(
        seen.lock().auth_packets,
        [
            ReasonCode::CONTINUE_AUTHENTICATION,
            ReasonCode::CONTINUE_AUTHENTICATION
        ]
    );
}

/// A drop as the hook saw it: client id, user name, reason.
type SeenDrop = (String, Option<String>, mqtt_broker::hooks::DropReason);

/// Records the clients `on_publish_dropped` sees.
struct DropWatch(Arc<Mutex<Vec<SeenDrop>>>);

impl Hook for DropWatch {
    fn id(&self) -> &str {
        "drop-watch"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_PUBLISH_DROPPED
    }

    fn on_publish_dropped(
        &self,
        client: &ClientInfo,
        _: &mqtt_packets::Publish,
        reason: mqtt_broker::hooks::DropReason,
    ) {
        self.0.lock().push((
            client.client_id.to_string(),
            client.username.as_ref().map(|name| name.to_string()),
            reason,
        ));
    }
}

/// A session that ends with its connection drops the QoS 0 messages still queued for it; the
/// hook sees the client they were for (its user name too), although the session is gone by the
/// time the drop is reported.
#[tokio::test(start_paused = true)]
async fn on_publish_dropped_sees_the_client_of_a_session_that_ended() {
    let server = mqtt_broker::Server::new(Options::default());
    server.add_hook(mqtt_broker::AllowAllHook).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    server.add_hook(DropWatch(seen.clone())).unwrap();
    let mut request = connect(Protocol::V5, "reader");
    request.username = Some(MqttString::from_static("alice"));
    // A stream buffer of 256 bytes: the writer blocks once the client stops reading.
    let (mut client, answer) = support::Duplex::open(&server, 256, request).await;
    assert!(matches!(answer, Packet::ConnAck(_)));
    client.subscribe("q", QoS::AtMostOnce).await;
    // More than the writer takes in one round (256): the rest stays queued.
    for _ in 0..600 {
        server
            .publish("q", vec![0u8; 100], false, QoS::AtMostOnce)
            .unwrap();
    }
    // Let the writer fill the stream and block.
    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    drop(client);
    let offline = |seen: &[SeenDrop]| {
        seen.iter()
            .any(|(_, _, reason)| *reason == mqtt_broker::hooks::DropReason::ClientOffline)
    };
    wait_until("drops reported", || offline(&seen.lock())).await;
    let seen = seen.lock();
    assert!(
        seen.iter()
            .all(|(id, user, _)| id == "reader" && user.as_deref() == Some("alice")),
        "{seen:?}"
    );
}
