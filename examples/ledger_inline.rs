//! An auth ledger built in the program: once as Rust values (`Ledger`, `AuthRule`, `AclRule`,
//! `UserRule`) and once as YAML text. Both give the same ledger; the example asks it a few
//! questions, then installs it on a broker as a hook.
//!
//! Auth rules decide who may connect (users first, then the first matching rule; nobody when no
//! rule matches). ACL rules decide what a client may publish and subscribe (the first rule that
//! applies and has a filter covering the topic; a Deny filter wins within a rule; allowed when no
//! rule decides, unless `deny_by_default`). For `mochi`, the same keys go in a ledger file
//! (`hooks.auth.ledger_file`) or inline under `[hooks.auth.ledger]`; see `docs/CONFIG.md`.
//!
//! Run with `cargo run -p mochi-examples --example ledger_inline`.

use std::collections::BTreeMap;

use bytes::Bytes;
use mochi_mqtt::auth::{AclRule, AuthRule, FilterAccess, Ledger, LedgerHook, UserRule};
use mochi_mqtt::broker::hooks::Access;
use mochi_mqtt::packets::{Connect, MqttString};
use mochi_mqtt::{ClientInfo, ConnectionInfo, Options, Protocol, Server};

/// The ledger as YAML, as it would be in a ledger file (JSON and TOML take the same keys).
/// Plain-text passwords are for trying things out: store Argon2id or bcrypt hashes in production.
const LEDGER_YAML: &str = r##"
users:
  admin: {password: "change-me", acl: {"#": readwrite}}
auth:
  - {username: "sensor-*", password: "sensor-secret", allow: true}
  - {remote: "127.0.0.1", allow: true}
acl:
  - {username: "sensor-*", filters: {"sensors/%u/#": readwrite, "config/#": read}}
  - {filters: {"#": read, "private/#": deny}}
"##;

/// Topic filters and what they allow, for an ACL rule or a user.
fn filters(pairs: &[(&str, FilterAccess)]) -> BTreeMap<String, FilterAccess> {
    pairs
        .iter()
        .map(|(filter, access)| ((*filter).to_owned(), *access))
        .collect()
}

/// The same ledger as Rust values.
fn ledger_in_rust() -> Ledger {
    use FilterAccess::{Deny, ReadOnly, ReadWrite};

    let admin = UserRule {
        password: "change-me".to_owned(),
        acl: filters(&[("#", ReadWrite)]), // the user's own ACL, checked before the rules
        disallow: false,
        client: Vec::new(), // any client id
    };
    Ledger {
        users: BTreeMap::from([("admin".to_owned(), admin)]),
        auth: vec![
            // User names `sensor-...` with this password may connect, from anywhere.
            AuthRule {
                username: "sensor-*".to_owned(),
                password: Some("sensor-secret".to_owned()),
                allow: true,
                ..AuthRule::default()
            },
            // Anyone on this machine may connect (a CIDR block such as `10.0.0.0/8` works too).
            AuthRule {
                remote: "127.0.0.1".to_owned(),
                allow: true,
                ..AuthRule::default()
            },
        ],
        acl: vec![
            // Sensors write under their own name (`%u`: the user name) and read the config.
            AclRule {
                username: "sensor-*".to_owned(),
                filters: filters(&[("sensors/%u/#", ReadWrite), ("config/#", ReadOnly)]),
                ..AclRule::default()
            },
            // Everyone else reads everything but `private/`.
            AclRule {
                filters: filters(&[("#", ReadOnly), ("private/#", Deny)]),
                ..AclRule::default()
            },
        ],
        deny_by_default: false,
    }
}

/// A client as the hook sees it, and its CONNECT.
fn client(
    username: Option<&str>,
    password: &'static str,
    remote: &str,
) -> Result<(ClientInfo, Connect), Box<dyn std::error::Error>> {
    let client_id = username.unwrap_or("anonymous");
    let username = username.map(MqttString::new).transpose()?;
    let mut connect = Connect::new(Protocol::V5, MqttString::new(client_id)?);
    connect.username = username.clone();
    connect.password = (!password.is_empty()).then(|| Bytes::from_static(password.as_bytes()));
    let connection = ConnectionInfo::new("tcp", Some(remote.parse()?));
    let info = ClientInfo::new(client_id, username, Protocol::V5, connection);
    Ok((info, connect))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let in_rust = ledger_in_rust();
    // The `from_*` parsers validate; a ledger built in code is validated by hand (a mistyped
    // CIDR block or filter is an error rather than a rule that never matches).
    in_rust.validate()?;
    let from_yaml = Ledger::from_yaml(LEDGER_YAML.as_bytes())?;
    assert_eq!(in_rust, from_yaml, "the Rust and YAML ledgers differ");
    println!("the Rust and YAML ledgers are the same");

    // Who may connect.
    let (sensor, connect) = client(Some("sensor-7"), "sensor-secret", "10.0.0.5:50000")?;
    println!(
        "sensor-7, right password:   {}",
        in_rust.authenticate(&sensor, &connect)
    );
    let (_, wrong) = client(Some("sensor-7"), "guess", "10.0.0.5:50000")?;
    println!(
        "sensor-7, wrong password:   {}",
        in_rust.authenticate(&sensor, &wrong)
    );
    let (local, connect) = client(None, "", "127.0.0.1:50001")?;
    println!(
        "anonymous from 127.0.0.1:   {}",
        in_rust.authenticate(&local, &connect)
    );

    // What they may do.
    let checks = [
        (&sensor, "sensors/sensor-7/temp", Access::Write),
        (&sensor, "sensors/sensor-8/temp", Access::Write),
        (&sensor, "config/interval", Access::Read),
        (&local, "news/today", Access::Read),
        (&local, "private/diary", Access::Read),
    ];
    for (who, topic, access) in checks {
        let allowed = in_rust.check(who, topic, access);
        let access = format!("{access:?}");
        println!("{:<10} {access:<5} {topic:<22} {allowed}", who.client_id);
    }
    assert!(in_rust.check(&sensor, "sensors/sensor-7/temp", Access::Write));
    assert!(!in_rust.check(&local, "private/diary", Access::Read));

    // On a broker: the hook decides every CONNECT, PUBLISH and SUBSCRIBE. Keep an `Arc` of it
    // (`add_hook_arc`) to replace the ledger later with `LedgerHook::update`.
    let server = Server::new(Options::default());
    server.add_hook(LedgerHook::new(in_rust))?;
    println!("ledger hook installed; serve the broker as in the `minimal` example");
    server.close().await;
    Ok(())
}
