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

/// H3: a user may be bound to client ids (one pattern or a list; `%u` is the user name), so that
/// one user cannot present another's client id. Absent: any client id, as before.
#[test]
fn users_may_be_bound_to_client_ids() {
    let yaml = br##"
users:
  sensor: {password: pw, client: "sensor-%u-*"}
  ops: {password: pw, client: ["ops-1", "ops-2*"]}
  free: {password: pw}
"##;
    let toml = r##"
[users.sensor]
password = "pw"
client = "sensor-%u-*"
[users.ops]
password = "pw"
client = ["ops-1", "ops-2*"]
[users.free]
password = "pw"
"##;
    let json = br##"{"users": {
  "sensor": {"password": "pw", "client": "sensor-%u-*"},
  "ops": {"password": "pw", "client": ["ops-1", "ops-2*"]},
  "free": {"password": "pw"}}}"##;
    let ledger = Ledger::from_yaml(yaml).unwrap();
    assert_eq!(ledger, Ledger::from_toml(toml).unwrap());
    assert_eq!(ledger, Ledger::from_json(json).unwrap());
    let allowed = |id: &str, user: &str, password: &str| {
        ledger.authenticate(
            &client(id, Some(user), "1.2.3.4:5"),
            &connect(id, Some(user), Some(password)),
        )
    };
    assert!(allowed("sensor-sensor-17", "sensor", "pw"));
    assert!(!allowed("sensor-other-17", "sensor", "pw"));
    assert!(!allowed("victim", "sensor", "pw"));
    assert!(!allowed("sensor-sensor-17", "sensor", "wrong"));
    assert!(allowed("ops-1", "ops", "pw"));
    assert!(allowed("ops-2b", "ops", "pw"));
    assert!(!allowed("ops-3", "ops", "pw"));
    assert!(allowed("victim", "free", "pw"), "no pattern: any client id");
    // A serialised ledger reads back the same.
    let text = serde_json::to_vec(&ledger).unwrap();
    assert_eq!(Ledger::from_json(&text).unwrap(), ledger);
}

/// M7: a Deny filter whose `%c` or `%u` cannot be substituted denies (everything under the
/// levels before the placeholder) instead of being skipped.
#[test]
fn deny_filters_fail_closed_when_placeholders_cannot_be_substituted() {
    let ledger = Ledger::from_yaml(
        br##"
acl:
  - filters: {"x/%c/#": deny, "private/%u/#": deny, "#": readwrite}
"##,
    )
    .unwrap();
    let plain = client("ok", Some("ann"), "1.2.3.4:5");
    assert!(!ledger.check(&plain, "x/ok/t", Access::Write));
    assert!(ledger.check(&plain, "x/other/t", Access::Write));
    assert!(!ledger.check(&plain, "private/ann/t", Access::Read));
    assert!(ledger.check(&plain, "private/bob/t", Access::Read));
    // A client id with `/`: `x/a/b/#` is what the filter meant; it is denied.
    let slashed = client("a/b", Some("ann"), "1.2.3.4:5");
    assert!(!ledger.check(&slashed, "x/a/b/t", Access::Write));
    assert!(!ledger.check(&slashed, "x/anything", Access::Write));
    assert!(ledger.check(&slashed, "y/t", Access::Write));
    // No user name: `private/%u/#` cannot be substituted; all of `private/` is denied.
    let anonymous = client("ok", None, "1.2.3.4:5");
    assert!(!ledger.check(&anonymous, "private/bob/t", Access::Read));
    assert!(ledger.check(&anonymous, "public/t", Access::Read));
    // A wildcard client id does not widen a Deny filter into nothing either.
    let wild = client("#", Some("ann"), "1.2.3.4:5");
    assert!(!ledger.check(&wild, "x/y", Access::Write));
    // Allow filters that cannot be substituted are still skipped (they never widen).
    let allow =
        Ledger::from_yaml(b"acl: [{filters: {\"x/%c/#\": readwrite}}]\ndeny_by_default: true")
            .unwrap();
    assert!(!allow.check(&slashed, "x/a/b/t", Access::Write));
}

/// M7: `only_allows` tells an application that the ACL does not confine anyone, and an explicit
/// rule closes `$` topics.
#[test]
fn only_allows_and_explicit_dollar_rules() {
    let open =
        Ledger::from_yaml(b"acl: [{client: \"worker-*\", filters: {\"jobs/#\": read}}]").unwrap();
    assert!(open.only_allows());
    let worker = client("worker-1", None, "1.2.3.4:5");
    assert!(
        open.check(&worker, "other/x", Access::Read),
        "falls through"
    );
    assert!(open.check(&worker, "$SYS/broker/uptime", Access::Read));
    let mut strict = open.clone();
    strict.deny_by_default = true;
    assert!(!strict.only_allows());
    assert!(!strict.check(&worker, "$SYS/broker/uptime", Access::Read));
    let closed =
        Ledger::from_yaml(b"acl: [{filters: {\"#\": readwrite, \"$SYS/#\": deny}}]").unwrap();
    assert!(!closed.only_allows());
    assert!(!closed.check(&worker, "$SYS/broker/uptime", Access::Read));
    assert!(closed.check(&worker, "other/x", Access::Read));
    let catch_all = Ledger::from_yaml(
        b"acl: [{client: \"worker-*\", filters: {\"jobs/#\": read}}, {filters: {\"#\": deny}}]",
    )
    .unwrap();
    assert!(!catch_all.only_allows());
    assert!(!catch_all.check(&client("x", None, "1.2.3.4:5"), "$SYS/x", Access::Read));
    assert!(
        !Ledger::default().only_allows(),
        "no ACL at all: nothing to warn about"
    );
    let users_only = Ledger::from_yaml(b"users: {u: {password: p, acl: {\"u/#\": 3}}}").unwrap();
    assert!(users_only.only_allows());
}

const SHARES: &str = r##"
acl:
  - client: "worker-*"
    filters: {"jobs/#": read, "$share/pool/jobs/#": read}
  - client: "pay-*"
    filters: {"#": read, "$share/payments/#": read, "$share/+/audit/#": read}
  - client: "team-*"
    filters: {"$share/%c/#": read, "#": read}
  - client: "nobody-*"
    filters: {"$share/+/#": deny, "#": read}
"##;

/// L6: rule filters that start with `$share/{group}/` restrict share groups. Once a ledger has
/// one, a shared subscription must be allowed by one.
#[test]
fn share_group_rules() {
    let ledger = Ledger::from_yaml(SHARES.as_bytes()).unwrap();
    let worker = client("worker-1", None, "1.2.3.4:5");
    assert!(ledger.check(&worker, "$share/pool/jobs/#", Access::Read));
    assert!(ledger.check(&worker, "$share/pool/jobs/a", Access::Read));
    assert!(!ledger.check(&worker, "$share/payments/jobs/#", Access::Read));
    assert!(!ledger.check(&worker, "$share/pool/other/#", Access::Read));
    assert!(
        ledger.check(&worker, "jobs/#", Access::Read),
        "plain: as before"
    );
    let pay = client("pay-1", None, "1.2.3.4:5");
    assert!(ledger.check(&pay, "$share/payments/jobs/#", Access::Read));
    assert!(
        ledger.check(&pay, "$share/anyone/audit/x", Access::Read),
        "`+`: any group"
    );
    assert!(!ledger.check(&pay, "$share/pool/jobs/#", Access::Read));
    let team = client("team-a", None, "1.2.3.4:5");
    assert!(
        ledger.check(&team, "$share/team-a/x", Access::Read),
        "%c in the group"
    );
    assert!(!ledger.check(&team, "$share/team-b/x", Access::Read));
    let nobody = client("nobody-1", None, "1.2.3.4:5");
    assert!(!ledger.check(&nobody, "$share/g/x", Access::Read));
    assert!(ledger.check(&nobody, "x", Access::Read));
    // No rule applies: refused for shared subscriptions whatever deny_by_default says.
    let stranger = client("stranger", None, "1.2.3.4:5");
    assert!(!ledger.check(&stranger, "$share/pool/jobs/#", Access::Read));
    assert!(ledger.check(&stranger, "jobs/#", Access::Read));
    // A name starting with `$share/` (a publish) is a `$` topic, not a shared subscription.
    let writer =
        Ledger::from_yaml(b"acl: [{filters: {\"jobs/#\": write}}]\ndeny_by_default: true").unwrap();
    assert!(writer.check(&worker, "jobs/a", Access::Write));
    assert!(!writer.check(&worker, "$share/pool/jobs/a", Access::Write));
    // Share rules are validated: a group is a name or `+`.
    for bad in [
        "acl: [{filters: {\"$share//x\": 1}}]",
        "acl: [{filters: {\"$share/a+/x\": 1}}]",
        "acl: [{filters: {\"$share/#/x\": 1}}]",
        "acl: [{filters: {\"$share/g\": 1}}]",
        "acl: [{filters: {\"$share/g/a/#/b\": 1}}]",
    ] {
        assert!(Ledger::from_yaml(bad.as_bytes()).is_err(), "{bad}");
    }
}

// ----- over TCP ----------------------------------------------------------------------------

const TIMEOUT: Duration = Duration::from_secs(10);

async fn start() -> SocketAddr {
    start_with(Ledger::from_yaml(YAML.as_bytes()).unwrap()).await
}

async fn start_with(ledger: Ledger) -> SocketAddr {
    let server = Server::new(Options::default());
    server.add_hook(LedgerHook::new(ledger)).unwrap();
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

/// H3 over TCP: a user bound to client ids cannot connect with another's client id.
#[tokio::test]
async fn a_user_bound_to_client_ids_is_refused_with_another_id() {
    let ledger = Ledger::from_yaml(
        b"users: {sensor: {password: pw, client: \"sensor-%u-*\"}}\nacl: [{filters: {\"#\": 3}}]",
    )
    .unwrap();
    let addr = start_with(ledger).await;
    let (_raw, connack) = Raw::connect(addr, connect("victim", Some("sensor"), Some("pw"))).await;
    assert_eq!(
        connack_code(&connack),
        ReasonCode::BAD_USER_NAME_OR_PASSWORD
    );
    let (mut raw, connack) =
        Raw::connect(addr, connect("sensor-sensor-1", Some("sensor"), Some("pw"))).await;
    assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
    raw.send(Packet::PingReq).await;
    assert_eq!(raw.recv().await, Some(Packet::PingResp));
}

/// L6 over TCP: the broker passes the whole `$share/` filter to the ACL, and a group that no
/// share rule allows is refused.
#[tokio::test]
async fn share_groups_over_tcp() {
    let ledger = Ledger::from_yaml(
        br##"
auth: [{allow: true}]
acl: [{client: "worker-*", filters: {"jobs/#": read, "$share/pool/jobs/#": read}}]
"##,
    )
    .unwrap();
    let addr = start_with(ledger).await;
    let (mut worker, connack) = Raw::connect(addr, connect("worker-1", None, None)).await;
    assert_eq!(connack_code(&connack), ReasonCode::SUCCESS);
    assert_eq!(
        worker.subscribe("$share/payments/jobs/#").await,
        ReasonCode::NOT_AUTHORIZED
    );
    assert_eq!(
        worker.subscribe("$share/pool/jobs/#").await,
        ReasonCode::GRANTED_QOS_1
    );
}
