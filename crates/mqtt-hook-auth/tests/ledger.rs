//! The rule ledger: table tests of every rule form, the same ledger from JSON, YAML and TOML,
//! reloading, and denied connect / publish / subscribe / read over TCP for 3.1.1 and 5.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::hooks::Access;
use mqtt_broker::{ClientInfo, ConnectionInfo, Options, Server};
use mqtt_hook_auth::{Ledger, LedgerHook};
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, Publish, QoS, ReasonCode,
    Subscribe, Subscription, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const YAML: &str = r##"
users:
  alice:
    password: wonderland
    acl: {"alice/#": readwrite, "news/#": 1}
auth:
  - {username: peach, password: password1, allow: true}
  - {client: "banned-*", allow: false}
  - {username: "dev*ice", allow: true}
  - {remote: "10.0.0.0/8", allow: true}
  - {remote: "127.0.0.1:*", username: local, allow: true}
acl:
  - username: peach
    filters: {"peach/#": 3, "updates/#": 2, "allowed": 3}
  - client: "sensor-*"
    filters: {"devices/%c/#": 3, "config/%c": 1}
  - filters: {"#": 1, "updates/#": 0, "private/#": 0}
"##;

const JSON: &str = r##"{
  "users": {"alice": {"password": "wonderland", "acl": {"alice/#": 3, "news/#": 1}}},
  "auth": [
    {"username": "peach", "password": "password1", "allow": true},
    {"client": "banned-*", "allow": false},
    {"username": "dev*ice", "allow": true},
    {"remote": "10.0.0.0/8", "allow": true},
    {"remote": "127.0.0.1:*", "username": "local", "allow": true}
  ],
  "acl": [
    {"username": "peach", "filters": {"peach/#": 3, "updates/#": 2, "allowed": 3}},
    {"client": "sensor-*", "filters": {"devices/%c/#": 3, "config/%c": 1}},
    {"filters": {"#": 1, "updates/#": 0, "private/#": 0}}
  ]
}"##;

const TOML: &str = r##"
[users.alice]
password = "wonderland"
acl = { "alice/#" = 3, "news/#" = 1 }

[[auth]]
username = "peach"
password = "password1"
allow = true

[[auth]]
client = "banned-*"
allow = false

[[auth]]
username = "dev*ice"
allow = true

[[auth]]
remote = "10.0.0.0/8"
allow = true

[[auth]]
remote = "127.0.0.1:*"
username = "local"
allow = true

[[acl]]
username = "peach"
filters = { "peach/#" = 3, "updates/#" = 2, "allowed" = 3 }

[[acl]]
client = "sensor-*"
filters = { "devices/%c/#" = 3, "config/%c" = 1 }

[[acl]]
filters = { "#" = 1, "updates/#" = 0, "private/#" = 0 }
"##;

fn client(id: &str, username: Option<&str>, remote: &str) -> ClientInfo {
    ClientInfo::new(
        id,
        username.map(|name| MqttString::new(name).unwrap()),
        Protocol::V5,
        ConnectionInfo::new("test", Some(remote.parse().unwrap())),
    )
}

fn connect(id: &str, username: Option<&str>, password: Option<&str>) -> Connect {
    let mut connect = Connect::new(Protocol::V5, MqttString::new(id).unwrap());
    connect.username = username.map(|name| MqttString::new(name).unwrap());
    connect.password = password.map(|p| bytes::Bytes::copy_from_slice(p.as_bytes()));
    connect
}

fn auth_table(ledger: &Ledger) -> Vec<bool> {
    let cases = [
        ("c1", Some("peach"), Some("password1"), "1.2.3.4:5"),
        ("c1", Some("peach"), Some("wrong"), "1.2.3.4:5"),
        ("c1", Some("alice"), Some("wonderland"), "1.2.3.4:5"),
        ("c1", Some("alice"), Some("nope"), "1.2.3.4:5"),
        ("banned-7", Some("device"), None, "1.2.3.4:5"),
        ("c1", Some("dev-x-ice"), None, "1.2.3.4:5"),
        ("c1", None, None, "10.20.30.40:5"),
        ("c1", None, None, "11.0.0.1:5"),
        ("c1", Some("local"), None, "127.0.0.1:6000"),
        ("c1", Some("local"), None, "127.0.0.2:6000"),
    ];
    cases
        .iter()
        .map(|(id, user, password, remote)| {
            ledger.authenticate(&client(id, *user, remote), &connect(id, *user, *password))
        })
        .collect()
}

fn acl_table(ledger: &Ledger) -> Vec<bool> {
    let peach = client("p", Some("peach"), "1.2.3.4:5");
    let sensor = client("sensor-9", None, "1.2.3.4:5");
    let other = client("x", None, "1.2.3.4:5");
    let alice = client("a", Some("alice"), "1.2.3.4:5");
    vec![
        ledger.check(&peach, "peach/a/b", Access::Write),
        ledger.check(&peach, "updates/x", Access::Write),
        ledger.check(&peach, "updates/x", Access::Read),
        ledger.check(&peach, "allowed", Access::Write),
        // The original's prefix bypass: a rule for `allowed` must not cover `allowed/secret`.
        ledger.check(&peach, "allowed/secret", Access::Write),
        ledger.check(&sensor, "devices/sensor-9/temp", Access::Write),
        ledger.check(&sensor, "devices/sensor-9", Access::Write), // `a/#` covers `a`
        ledger.check(&sensor, "devices/sensor-8/temp", Access::Write),
        ledger.check(&sensor, "config/sensor-9", Access::Read),
        ledger.check(&sensor, "config/sensor-9", Access::Write),
        ledger.check(&other, "anything/here", Access::Read),
        ledger.check(&other, "anything/here", Access::Write),
        ledger.check(&other, "updates/x", Access::Read),
        ledger.check(&other, "private/x", Access::Read),
        // A subscription wider than a Deny filter is allowed; denied messages are filtered out
        // on delivery.
        ledger.check(&other, "#", Access::Read),
        ledger.check(&sensor, "devices/+/temp", Access::Write),
        ledger.check(&alice, "alice/x", Access::Write),
        ledger.check(&alice, "news/today", Access::Write),
        ledger.check(&alice, "news/today", Access::Read),
    ]
}

#[test]
fn rules_decide_as_documented() {
    let ledger = Ledger::from_yaml(YAML.as_bytes()).unwrap();
    assert_eq!(
        auth_table(&ledger),
        [
            true, false, true, false, false, true, true, false, true, false
        ]
    );
    assert_eq!(
        acl_table(&ledger),
        [
            true, true, false, true, false, true, true, false, true, false, true, false, false,
            false, true, false, true, false, true
        ]
    );
}

#[test]
fn json_yaml_and_toml_give_the_same_decisions() {
    let yaml = Ledger::from_yaml(YAML.as_bytes()).unwrap();
    let json = Ledger::from_json(JSON.as_bytes()).unwrap();
    let toml = Ledger::from_toml(TOML).unwrap();
    assert_eq!(yaml, json);
    assert_eq!(yaml, toml);
    assert_eq!(auth_table(&json), auth_table(&yaml));
    assert_eq!(acl_table(&toml), acl_table(&yaml));
}

#[test]
fn dollar_topics_shared_filters_and_bad_rules() {
    let ledger = Ledger::from_yaml(
        br##"
acl:
  - client: "guest-*"
    filters: {"#": deny}
  - client: "worker-*"
    filters: {"jobs/#": read}
"##,
    )
    .unwrap();
    let guest = client("guest-1", None, "1.2.3.4:5");
    // A Deny `#` also denies `$SYS`.
    assert!(!ledger.check(&guest, "$SYS/#", Access::Read));
    assert!(!ledger.check(&guest, "$SYS/broker/uptime", Access::Read));
    // Shared subscriptions are checked on their filter.
    let worker = client("worker-1", None, "1.2.3.4:5");
    assert!(ledger.check(&worker, "$share/pool/jobs/#", Access::Read));
    assert!(ledger.check(&worker, "$share/pool/jobs/a", Access::Read));
    let mut strict = ledger.clone();
    strict.deny_by_default = true;
    assert!(strict.check(&worker, "$share/pool/jobs/+", Access::Read));
    assert!(!strict.check(&worker, "$share/pool/other/#", Access::Read));
    // Mistyped rules are refused at load time instead of failing open.
    for bad in [
        "auth: [{remote: \"10.0.0/8\", allow: false}]",
        "auth: [{remote: \"10.0.0.0/33\", allow: false}]",
        "auth: [{remote: \" 10.0.0.0/8\", allow: false}]",
        "acl: [{filters: {\"a/#/b\": 3}}]",
    ] {
        assert!(Ledger::from_yaml(bad.as_bytes()).is_err(), "{bad}");
    }
    // An empty stored password never matches.
    let ledger = Ledger::from_yaml(b"users: {x: {password: \"\"}}").unwrap();
    assert!(!ledger.authenticate(
        &client("c", Some("x"), "1.2.3.4:5"),
        &connect("c", Some("x"), None)
    ));
}

#[test]
fn deny_by_default_and_unknown_keys() {
    let mut ledger = Ledger::from_yaml(b"acl: [{username: u, filters: {\"u/#\": 3}}]").unwrap();
    let stranger = client("s", None, "1.2.3.4:5");
    assert!(
        ledger.check(&stranger, "x", Access::Write),
        "no rule matches: allowed, as the original"
    );
    ledger.deny_by_default = true;
    assert!(!ledger.check(&stranger, "x", Access::Write));
    let error = Ledger::from_yaml(b"auth: [{usernme: typo, allow: true}]").unwrap_err();
    assert!(error.to_string().contains("usernme"), "{error}");
    assert!(Ledger::from_yaml(b"acl: [{filters: {\"a\": 7}}]").is_err());
}

#[tokio::test]
async fn reload_replaces_the_ledger_and_a_bad_file_keeps_it() {
    let dir = std::env::temp_dir().join(format!("mochi-ledger-{}", std::process::id()));
    tokio::fs::create_dir_all(&dir).await.unwrap();
    let path = dir.join("ledger.yaml");
    tokio::fs::write(&path, "auth: [{username: a, allow: true}]")
        .await
        .unwrap();
    let hook = LedgerHook::from_file(&path).await.unwrap();
    let check = |hook: &LedgerHook, user: &str| {
        hook.ledger().authenticate(
            &client("c", Some(user), "1.2.3.4:5"),
            &connect("c", Some(user), None),
        )
    };
    assert!(check(&hook, "a"));
    assert!(!check(&hook, "b"));
    tokio::fs::write(&path, "auth: [{username: b, allow: true}]")
        .await
        .unwrap();
    hook.reload().await.unwrap();
    assert!(!check(&hook, "a"));
    assert!(check(&hook, "b"));
    tokio::fs::write(&path, "auth: [{username: [broken")
        .await
        .unwrap();
    assert!(hook.reload().await.is_err());
    assert!(check(&hook, "b"), "the previous ledger stays");
    tokio::fs::remove_dir_all(&dir).await.ok();
}

// ----- over TCP ----------------------------------------------------------------------------

const TIMEOUT: Duration = Duration::from_secs(10);

async fn start() -> SocketAddr {
    let server = Server::new(Options::default());
    server
        .add_hook(LedgerHook::new(Ledger::from_yaml(YAML.as_bytes()).unwrap()))
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { server.serve_tcp("tcp", listener).await });
    addr
}

struct Raw {
    stream: TcpStream,
    protocol: Protocol,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr, connect: Connect) -> (Self, Packet) {
        let protocol = connect.protocol;
        let mut raw = Self {
            stream: TcpStream::connect(addr).await.unwrap(),
            protocol,
            buf: BytesMut::new(),
        };
        raw.send(connect.into()).await;
        let connack = raw.recv().await.expect("CONNACK");
        (raw, connack)
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.protocol, &mut out).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(TIMEOUT, self.recv_inner())
            .await
            .expect("timed out")
    }

    async fn recv_inner(&mut self) -> Option<Packet> {
        loop {
            if let Some(packet) = decode(&mut self.buf, &DecodeContext::new(self.protocol)).unwrap()
            {
                return Some(packet);
            }
            if self.stream.read_buf(&mut self.buf).await.ok()? == 0 {
                return None;
            }
        }
    }

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
}

fn connack_code(packet: &Packet) -> ReasonCode {
    match packet {
        Packet::ConnAck(connack) => connack.reason_code,
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

/// Denied connect, publish, subscribe and read, for MQTT 5 and 3.1.1 clients.
#[tokio::test]
async fn denials_over_tcp() {
    let addr = start().await;
    for protocol in [Protocol::V5, Protocol::V3_1_1] {
        let mut refused = connect("c1", Some("peach"), Some("wrong"));
        refused.protocol = protocol;
        let (_raw, connack) = Raw::connect(addr, refused).await;
        // 0x86 Bad User Name or Password (3.1.1: return code 4, read back as 0x86).
        assert_eq!(
            connack_code(&connack),
            ReasonCode::BAD_USER_NAME_OR_PASSWORD,
            "{protocol}"
        );

        let mut peach = connect(
            &format!("peach-{}", protocol.level()),
            Some("peach"),
            Some("password1"),
        );
        peach.protocol = protocol;
        let (mut peach, connack) = Raw::connect(addr, peach).await;
        assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
        let mut reader = connect(&format!("reader-{}", protocol.level()), Some("local"), None);
        reader.protocol = protocol;
        let (mut reader, connack) = Raw::connect(addr, reader).await;
        assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);

        // Subscribe: `#` is wider than the reader's `#` ReadOnly minus denials? It is allowed
        // (the rule grants `#` read); `private/#` is denied.
        let denied_suback = if protocol.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode(0x80)
        };
        assert_eq!(reader.subscribe("private/#").await, denied_suback);
        assert_eq!(reader.subscribe("peach/#").await, ReasonCode::GRANTED_QOS_1);

        // Publish: peach may write `peach/#`, not `allowed/secret`.
        let denied_puback = if protocol.is_v5() {
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        assert_eq!(peach.publish("allowed/secret", 1).await, denied_puback);
        assert_eq!(peach.publish("peach/news", 2).await, ReasonCode::SUCCESS);
        match reader.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(publish.topic, "peach/news"),
            other => panic!("expected the allowed message, got {other:?}"),
        }
        // Subscribing to `updates/#` is refused outright.
        assert_eq!(reader.subscribe("updates/#").await, denied_suback);
        // Read denied on delivery: `#` may be subscribed (it is wider than the Deny filter),
        // but a message on `updates/...` is filtered out for this reader, while the next
        // (allowed) message arrives first.
        assert_eq!(reader.subscribe("#").await, ReasonCode::GRANTED_QOS_1);
        peach.publish("updates/firmware", 3).await;
        peach.publish("peach/sentinel", 4).await;
        match reader.recv().await {
            Some(Packet::Publish(publish)) => assert_eq!(publish.topic, "peach/sentinel"),
            other => panic!("expected the sentinel, got {other:?}"),
        }
    }
}

/// The same rules seen from an independent client (rumqttc, MQTT 3.1.1): a wrong password is
/// refused with return code 4; peach's allowed message arrives at a permitted subscriber.
#[tokio::test]
async fn rumqttc_client_sees_the_rules() {
    use rumqttc::{AsyncClient, ConnectReturnCode, Event, MqttOptions, Packet as P, QoS as Q};

    let addr = start().await;
    let options = |id: &str, user: &str, password: &str| {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_credentials(user, password);
        options.set_keep_alive(Duration::from_secs(30));
        options
    };
    let (_client, mut eventloop) = AsyncClient::new(options("r-bad", "peach", "nope"), 10);
    let refused = tokio::time::timeout(TIMEOUT, eventloop.poll())
        .await
        .unwrap();
    match refused {
        Err(rumqttc::ConnectionError::ConnectionRefused(code)) => {
            assert_eq!(code, ConnectReturnCode::BadUserNamePassword)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    let (subscriber, mut sub_loop) = AsyncClient::new(options("r-sub", "local", ""), 10);
    subscriber
        .subscribe("peach/#", Q::AtLeastOnce)
        .await
        .unwrap();
    let (publisher, mut pub_loop) = AsyncClient::new(options("r-pub", "peach", "password1"), 10);
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Incoming(P::SubAck(_)) = sub_loop.poll().await.unwrap() {
                break;
            }
        }
    })
    .await
    .unwrap();
    publisher
        .publish("peach/hello", Q::AtLeastOnce, false, "hi")
        .await
        .unwrap();
    tokio::spawn(async move { while pub_loop.poll().await.is_ok() {} });
    let received = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Incoming(P::Publish(publish)) = sub_loop.poll().await.unwrap() {
                return publish;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(received.topic, "peach/hello");
}
