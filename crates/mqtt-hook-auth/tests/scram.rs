//! SCRAM-SHA-256 end to end over TCP: a test client performs the exchange of RFC 7677 in MQTT 5
//! AUTH packets against the broker (§4.12).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use mqtt_broker::hooks::{Access, AuthOutcome, AuthState, AuthStep, Decision, HookEvents};
use mqtt_broker::{ClientInfo, ConnectionInfo, Hook, Options, Server};
use mqtt_hook_auth::{Ledger, LedgerHook, SCRAM_SHA_256, ScramSha256Hook, hmac, salted_password};
use mqtt_packets::{
    Auth, AuthProperties, Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, Publish,
    QoS, ReasonCode, Subscribe, Subscription, decode,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Allows every publish and subscribe, decides no connection.
struct AclAllow;

impl Hook for AclAllow {
    fn id(&self) -> &str {
        "acl-allow"
    }
    fn provides(&self) -> HookEvents {
        HookEvents::ON_ACL_CHECK
    }
    fn on_acl_check(&self, _: &ClientInfo, _: &str, _: Access) -> Decision {
        Decision::Allow
    }
}

async fn start() -> SocketAddr {
    start_with(AclAllow).await
}

/// A server with the SCRAM users `device-1` and `guest`, and this ACL hook.
async fn start_with(acl: impl Hook) -> SocketAddr {
    let scram = ScramSha256Hook::new();
    scram.add_user("device-1", "s3cret pencil");
    scram.add_user("guest", "guest pencil");
    let server = Server::new(Options::default());
    server.add_hook(scram).unwrap();
    server.add_hook(acl).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_tcp("tcp", listener).await });
    addr
}

struct Client {
    stream: TcpStream,
    buf: BytesMut,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(Protocol::V5, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(TIMEOUT, async {
            loop {
                if let Some(packet) =
                    decode(&mut self.buf, &DecodeContext::new(Protocol::V5)).unwrap()
                {
                    return Some(packet);
                }
                if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("timed out")
    }
}

/// The client side of SCRAM-SHA-256.
struct ScramClient {
    password: String,
    client_first_bare: String,
    nonce: String,
}

impl ScramClient {
    fn new(user: &str, password: &str, nonce: &str) -> Self {
        Self {
            password: password.to_string(),
            client_first_bare: format!("n={user},r={nonce}"),
            nonce: nonce.to_string(),
        }
    }

    fn client_first(&self) -> Bytes {
        Bytes::from(format!("n,,{}", self.client_first_bare))
    }

    /// The client-final message for a server-first message, and the expected server signature.
    fn client_final(&self, server_first: &[u8]) -> (Bytes, String) {
        let server_first = std::str::from_utf8(server_first).unwrap();
        let mut nonce = "";
        let mut salt = Vec::new();
        let mut iterations = 0;
        for attribute in server_first.split(',') {
            if let Some(value) = attribute.strip_prefix("r=") {
                nonce = value;
            } else if let Some(value) = attribute.strip_prefix("s=") {
                salt = BASE64.decode(value).unwrap();
            } else if let Some(value) = attribute.strip_prefix("i=") {
                iterations = value.parse().unwrap();
            }
        }
        assert!(
            nonce.starts_with(&self.nonce),
            "the server nonce extends ours"
        );
        let salted = salted_password(self.password.as_bytes(), &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; 32] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof: Vec<u8> = client_key
            .iter()
            .zip(signature.iter())
            .map(|(a, b)| a ^ b)
            .collect();
        let server_key = hmac(&salted, b"Server Key");
        let server_signature = BASE64.encode(hmac(&server_key, auth_message.as_bytes()));
        (
            Bytes::from(format!("{without_proof},p={}", BASE64.encode(proof))),
            format!("v={server_signature}"),
        )
    }
}

fn auth(reason_code: ReasonCode, data: Bytes) -> Packet {
    Packet::Auth(Auth {
        reason_code,
        properties: AuthProperties {
            authentication_method: Some(MqttString::from_static(SCRAM_SHA_256)),
            authentication_data: Some(data),
            ..AuthProperties::default()
        },
    })
}

fn scram_connect(id: &str, client_first: Bytes) -> Packet {
    let mut connect = Connect::new(Protocol::V5, MqttString::new(id).unwrap());
    connect.properties.authentication_method = Some(MqttString::from_static(SCRAM_SHA_256));
    connect.properties.authentication_data = Some(client_first);
    connect.into()
}

/// Runs the CONNECT exchange; returns the client and the final packet (CONNACK).
async fn exchange(addr: SocketAddr, user: &str, password: &str) -> (Client, Packet, String) {
    exchange_as(addr, "scram-client", user, password).await
}

/// [`exchange`] with this client id.
async fn exchange_as(
    addr: SocketAddr,
    client_id: &str,
    user: &str,
    password: &str,
) -> (Client, Packet, String) {
    let scram = ScramClient::new(user, password, "fyko+d2lbbFgONRv9qkxdawL");
    let mut client = Client::connect(addr).await;
    client
        .send(scram_connect(client_id, scram.client_first()))
        .await;
    let challenge = match client.recv().await.expect("AUTH") {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::CONTINUE_AUTHENTICATION);
            assert_eq!(
                auth.properties.authentication_method.as_deref(),
                Some(SCRAM_SHA_256)
            );
            auth.properties.authentication_data.unwrap()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let (client_final, server_signature) = scram.client_final(&challenge);
    client
        .send(auth(ReasonCode::CONTINUE_AUTHENTICATION, client_final))
        .await;
    let last = client.recv().await.expect("CONNACK");
    (client, last, server_signature)
}

/// A correct password: CONNACK 0x00 with the server's signature, which the client verifies.
#[tokio::test]
async fn scram_exchange_succeeds_and_proves_the_server() {
    let addr = start().await;
    let (mut client, connack, server_signature) = exchange(addr, "device-1", "s3cret pencil").await;
    let Packet::ConnAck(connack) = connack else {
        panic!("expected CONNACK, got {connack:?}")
    };
    assert_eq!(connack.reason_code, ReasonCode::SUCCESS);
    assert_eq!(
        connack.properties.authentication_method.as_deref(),
        Some(SCRAM_SHA_256)
    );
    assert_eq!(
        connack.properties.authentication_data.as_deref(),
        Some(server_signature.as_bytes()),
        "the server proved it knows the password"
    );

    // Re-authentication on the live connection: AUTH 0x19 ... AUTH 0x00 (§4.12.1).
    let scram = ScramClient::new("device-1", "s3cret pencil", "another-nonce-123");
    client
        .send(auth(ReasonCode::RE_AUTHENTICATE, scram.client_first()))
        .await;
    let challenge = match client.recv().await.expect("AUTH") {
        Packet::Auth(auth) if auth.reason_code == ReasonCode::CONTINUE_AUTHENTICATION => {
            auth.properties.authentication_data.unwrap()
        }
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let (client_final, server_signature) = scram.client_final(&challenge);
    client
        .send(auth(ReasonCode::CONTINUE_AUTHENTICATION, client_final))
        .await;
    match client.recv().await.expect("AUTH 0x00") {
        Packet::Auth(auth) => {
            assert_eq!(auth.reason_code, ReasonCode::SUCCESS);
            assert_eq!(
                auth.properties.authentication_data.as_deref(),
                Some(server_signature.as_bytes())
            );
        }
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
    client.send(Packet::PingReq).await;
    assert_eq!(client.recv().await, Some(Packet::PingResp));
}

/// A wrong password, or an unknown user: CONNACK 0x87 and close.
#[tokio::test]
async fn wrong_password_or_unknown_user_is_refused() {
    let addr = start().await;
    for (user, password) in [("device-1", "wrong"), ("nobody", "s3cret pencil")] {
        let (mut client, connack, _) = exchange(addr, user, password).await;
        let Packet::ConnAck(connack) = connack else {
            panic!("expected CONNACK, got {connack:?}")
        };
        assert_eq!(connack.reason_code, ReasonCode::NOT_AUTHORIZED, "{user}");
        assert_eq!(client.recv().await, None, "closed after the refusal");
    }
}

/// An Authentication Method no hook implements: CONNACK 0x8C [MQTT-4.12.0-1].
#[tokio::test]
async fn unknown_method_is_bad_authentication_method() {
    let addr = start().await;
    let mut client = Client::connect(addr).await;
    let mut connect = Connect::new(Protocol::V5, MqttString::from_static("kerberos-client"));
    connect.properties.authentication_method = Some(MqttString::from_static("GS2-KRB5"));
    client.send(connect.into()).await;
    match client.recv().await.expect("CONNACK") {
        Packet::ConnAck(connack) => {
            assert_eq!(connack.reason_code, ReasonCode::BAD_AUTHENTICATION_METHOD)
        }
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// During the exchange only AUTH may come: anything else is a protocol error
/// [MQTT-3.1.2-30].
#[tokio::test]
async fn other_packets_during_the_exchange_are_a_protocol_error() {
    let addr = start().await;
    let scram = ScramClient::new("device-1", "s3cret pencil", "nonce-xyz");
    let mut client = Client::connect(addr).await;
    client
        .send(scram_connect("early-bird", scram.client_first()))
        .await;
    assert!(matches!(client.recv().await, Some(Packet::Auth(_))));
    client.send(Packet::PingReq).await;
    match client.recv().await.expect("CONNACK") {
        Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::PROTOCOL_ERROR),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// The CONNECT's User Name must be the SCRAM user: proving one identity does not let a client
/// act as another in the ACL.
#[tokio::test]
async fn scram_user_must_match_the_user_name() {
    let addr = start().await;
    let scram = ScramClient::new("device-1", "s3cret pencil", "nonce-impostor");
    let mut client = Client::connect(addr).await;
    let mut connect = Connect::new(Protocol::V5, MqttString::from_static("impostor"));
    connect.username = Some(MqttString::from_static("admin"));
    connect.properties.authentication_method = Some(MqttString::from_static(SCRAM_SHA_256));
    connect.properties.authentication_data = Some(scram.client_first());
    client.send(connect.into()).await;
    match client.recv().await.expect("CONNACK") {
        Packet::ConnAck(connack) => assert_eq!(connack.reason_code, ReasonCode::NOT_AUTHORIZED),
        other => panic!("expected CONNACK 0x87, got {other:?}"),
    }
}

/// A failed re-authentication ends the connection with DISCONNECT and the failure code
/// [MQTT-4.12.1-2].
#[tokio::test]
async fn failed_reauthentication_disconnects() {
    let addr = start().await;
    let (mut client, connack, _) = exchange(addr, "device-1", "s3cret pencil").await;
    assert!(matches!(connack, Packet::ConnAck(ref c) if c.reason_code == ReasonCode::SUCCESS));
    let scram = ScramClient::new("device-1", "wrong password", "reauth-nonce");
    client
        .send(auth(ReasonCode::RE_AUTHENTICATE, scram.client_first()))
        .await;
    let challenge = match client.recv().await.expect("AUTH") {
        Packet::Auth(auth) => auth.properties.authentication_data.unwrap(),
        other => panic!("expected AUTH 0x18, got {other:?}"),
    };
    let (client_final, _) = scram.client_final(&challenge);
    client
        .send(auth(ReasonCode::CONTINUE_AUTHENTICATION, client_final))
        .await;
    match client.recv().await.expect("DISCONNECT") {
        Packet::Disconnect(disconnect) => {
            assert_eq!(disconnect.reason_code, ReasonCode::NOT_AUTHORIZED)
        }
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(client.recv().await, None);
}

impl Client {
    async fn subscribe(&mut self, filter: &str) -> ReasonCode {
        let subscribe = Subscribe::new(
            PacketId::MIN,
            vec![Subscription::new(
                MqttString::new(filter).unwrap(),
                QoS::AtLeastOnce,
            )],
        );
        self.send(subscribe.into()).await;
        match self.recv().await {
            Some(Packet::SubAck(suback)) => suback.reason_codes[0],
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn publish(&mut self, topic: &str, id: u16) -> ReasonCode {
        let mut publish = Publish::new(MqttString::new(topic).unwrap(), "x");
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = PacketId::new(id);
        self.send(publish.into()).await;
        match self.recv().await {
            Some(Packet::PubAck(ack)) => ack.reason_code,
            other => panic!("expected PUBACK, got {other:?}"),
        }
    }

    /// Re-authenticates as `user`; returns the broker's last answer.
    async fn reauthenticate(&mut self, user: &str, password: &str) -> Option<Packet> {
        let scram = ScramClient::new(user, password, "reauth-nonce-42");
        self.send(auth(ReasonCode::RE_AUTHENTICATE, scram.client_first()))
            .await;
        match self.recv().await? {
            Packet::Auth(auth) if auth.reason_code == ReasonCode::CONTINUE_AUTHENTICATION => {
                let (client_final, _) =
                    scram.client_final(&auth.properties.authentication_data.unwrap());
                self.send(self::auth(
                    ReasonCode::CONTINUE_AUTHENTICATION,
                    client_final,
                ))
                .await;
                self.recv().await
            }
            other => Some(other),
        }
    }
}

const GUEST_ACL: &str = r##"
acl:
  - {username: guest, filters: {"#": deny}}
  - {filters: {"#": readwrite}}
"##;

/// H4: the SCRAM user is the client's user name for the ACL, also when the CONNECT has no User
/// Name: `guest` may neither subscribe nor publish, `device-1` may.
#[tokio::test]
async fn the_scram_user_is_checked_by_the_ledger_acl() {
    let ledger = LedgerHook::new(Ledger::from_yaml(GUEST_ACL.as_bytes()).unwrap());
    let addr = start_with(ledger).await;
    let (mut guest, connack, _) = exchange_as(addr, "guest-client", "guest", "guest pencil").await;
    assert!(matches!(connack, Packet::ConnAck(ref c) if c.reason_code == ReasonCode::SUCCESS));
    assert_eq!(guest.subscribe("a/b").await, ReasonCode::NOT_AUTHORIZED);
    assert_eq!(guest.publish("a/b", 1).await, ReasonCode::NOT_AUTHORIZED);
    let (mut device, connack, _) =
        exchange_as(addr, "device-client", "device-1", "s3cret pencil").await;
    assert!(matches!(connack, Packet::ConnAck(ref c) if c.reason_code == ReasonCode::SUCCESS));
    assert_eq!(device.subscribe("a/b").await, ReasonCode::GRANTED_QOS_1);
    assert_eq!(device.publish("a/b", 1).await, ReasonCode::SUCCESS);
}

/// H4: a re-authentication must prove the user of the connection; proving another (with its
/// right password) ends the connection with 0x87.
#[tokio::test]
async fn reauthentication_as_another_user_disconnects() {
    let addr = start().await;
    let (mut client, connack, _) = exchange(addr, "guest", "guest pencil").await;
    assert!(matches!(connack, Packet::ConnAck(ref c) if c.reason_code == ReasonCode::SUCCESS));
    match client.reauthenticate("device-1", "s3cret pencil").await {
        Some(Packet::Disconnect(disconnect)) => {
            assert_eq!(disconnect.reason_code, ReasonCode::NOT_AUTHORIZED)
        }
        other => panic!("expected DISCONNECT 0x87, got {other:?}"),
    }
    assert_eq!(client.recv().await, None);
    // The same user again is fine.
    let (mut client, _, _) = exchange(addr, "guest", "guest pencil").await;
    match client.reauthenticate("guest", "guest pencil").await {
        Some(Packet::Auth(auth)) => assert_eq!(auth.reason_code, ReasonCode::SUCCESS),
        other => panic!("expected AUTH 0x00, got {other:?}"),
    }
}

fn info(username: Option<&str>) -> ClientInfo {
    ClientInfo::new(
        "c",
        username.map(|name| MqttString::new(name).unwrap()),
        Protocol::V5,
        ConnectionInfo::new("test", Some("127.0.0.1:1".parse().unwrap())),
    )
}

async fn step(
    hook: &ScramSha256Hook,
    client: &ClientInfo,
    data: Bytes,
    step: AuthStep,
    state: &mut AuthState,
) -> AuthOutcome {
    hook.on_enhanced_auth(client, SCRAM_SHA_256, Some(&data), step, state)
        .await
}

/// H4 over the hook API: success names the SCRAM user as the principal; a re-authentication
/// for another user than the connection's, or on a connection without a user name, is refused
/// at its first step.
#[tokio::test]
async fn the_hook_returns_the_principal_and_refuses_another_user_on_reauthentication() {
    let hook = ScramSha256Hook::new();
    hook.add_user("device-1", "s3cret pencil");
    hook.add_user("guest", "guest pencil");
    let scram = ScramClient::new("device-1", "s3cret pencil", "nonce-1");
    let mut state = None;
    let anonymous = info(None);
    let AuthOutcome::Continue(challenge) = step(
        &hook,
        &anonymous,
        scram.client_first(),
        AuthStep::Connect,
        &mut state,
    )
    .await
    else {
        panic!("expected a challenge")
    };
    let (client_final, _) = scram.client_final(&challenge);
    match step(
        &hook,
        &anonymous,
        client_final,
        AuthStep::Continue,
        &mut state,
    )
    .await
    {
        AuthOutcome::Success { principal, .. } => {
            assert_eq!(principal.as_deref(), Some("device-1"))
        }
        other => panic!("expected success, got {other:?}"),
    }
    let guest = ScramClient::new("guest", "guest pencil", "nonce-2");
    for connection_user in [Some("device-1"), None] {
        let mut state = None;
        let outcome = step(
            &hook,
            &info(connection_user),
            guest.client_first(),
            AuthStep::Reauthenticate,
            &mut state,
        )
        .await;
        assert_eq!(
            outcome,
            AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED),
            "{connection_user:?}"
        );
    }
    let mut state = None;
    let outcome = step(
        &hook,
        &info(Some("guest")),
        guest.client_first(),
        AuthStep::Reauthenticate,
        &mut state,
    )
    .await;
    assert!(matches!(outcome, AuthOutcome::Continue(_)), "{outcome:?}");
}

/// L5: an unknown user gets a salt that stays the same for the name and that a client cannot
/// compute (it is not a plain hash of the name), then fails at the proof.
#[tokio::test]
async fn unknown_users_get_a_stable_salt_that_does_not_give_them_away() {
    let hook = ScramSha256Hook::new();
    hook.add_user("device-1", "s3cret pencil");
    let salt_of = |challenge: &[u8]| {
        let text = std::str::from_utf8(challenge).unwrap().to_string();
        text.split(',')
            .find_map(|attribute| attribute.strip_prefix("s=").map(str::to_string))
            .unwrap()
    };
    let mut salts = Vec::new();
    for nonce in ["n-1", "n-2"] {
        let scram = ScramClient::new("nobody", "guess", nonce);
        let mut state = None;
        let AuthOutcome::Continue(challenge) = step(
            &hook,
            &info(None),
            scram.client_first(),
            AuthStep::Connect,
            &mut state,
        )
        .await
        else {
            panic!("expected a challenge")
        };
        salts.push(salt_of(&challenge));
        let (client_final, _) = scram.client_final(&challenge);
        assert_eq!(
            step(
                &hook,
                &info(None),
                client_final,
                AuthStep::Continue,
                &mut state
            )
            .await,
            AuthOutcome::Fail(ReasonCode::NOT_AUTHORIZED)
        );
    }
    assert_eq!(salts[0], salts[1], "the same name gets the same salt");
    let guessable = BASE64.encode(&Sha256::digest(b"nobody")[..16]);
    assert_ne!(salts[0], guessable);
}
