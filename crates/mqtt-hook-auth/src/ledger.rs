//! The rule ledger: who may connect, and what they may publish and subscribe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mqtt_broker::ClientInfo;
use mqtt_broker::hooks::Access;
use mqtt_packets::Connect;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::rules::{
    PasswordKind, covers, covers_for_deny, deny_fallback, first_hash, glob, password_kind,
    remote_matches, share_name_matches, split_share, substitute, verify_password,
};

/// What an ACL filter allows (the original broker's values 0 to 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AccessValue", into = "u8")]
pub enum FilterAccess {
    /// 0: nothing.
    Deny,
    /// 1: subscribe and receive.
    ReadOnly,
    /// 2: publish.
    WriteOnly,
    /// 3: both.
    ReadWrite,
}

/// How an access level may be written: a number 0-3, or a name.
#[derive(Deserialize)]
#[serde(untagged)]
enum AccessValue {
    Number(u8),
    Name(String),
}

impl TryFrom<AccessValue> for FilterAccess {
    type Error = String;

    fn try_from(value: AccessValue) -> Result<Self, String> {
        match value {
            AccessValue::Number(0) => Ok(Self::Deny),
            AccessValue::Number(1) => Ok(Self::ReadOnly),
            AccessValue::Number(2) => Ok(Self::WriteOnly),
            AccessValue::Number(3) => Ok(Self::ReadWrite),
            AccessValue::Name(name) => match name.to_ascii_lowercase().as_str() {
                "deny" => Ok(Self::Deny),
                "read" | "readonly" | "read_only" => Ok(Self::ReadOnly),
                "write" | "writeonly" | "write_only" => Ok(Self::WriteOnly),
                "readwrite" | "read_write" => Ok(Self::ReadWrite),
                other => Err(format!(
                    "unknown access {other:?} (deny, read, write, readwrite or 0-3)"
                )),
            },
            AccessValue::Number(other) => Err(format!("unknown access {other} (0-3)")),
        }
    }
}

impl From<FilterAccess> for u8 {
    fn from(access: FilterAccess) -> u8 {
        access as u8
    }
}

impl FilterAccess {
    fn grants(self, access: Access) -> bool {
        matches!(
            (self, access),
            (Self::ReadWrite, _)
                | (Self::ReadOnly, Access::Read)
                | (Self::WriteOnly, Access::Write)
        )
    }
}

/// A connection rule: the first rule whose patterns all match decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthRule {
    /// Client identifier pattern (`*` anywhere); empty or absent matches any.
    #[serde(default)]
    pub client: String,
    /// User name pattern (`*` anywhere); empty or absent matches any.
    #[serde(default)]
    pub username: String,
    /// Password: plain text (development only), or an Argon2id (`$argon2id$...`) or bcrypt
    /// (`$2b$...`) hash. Absent matches any password.
    #[serde(default)]
    pub password: Option<String>,
    /// Remote address: CIDR (`10.0.0.0/8`), an address, or an `ip:port` pattern (`127.0.0.1:*`).
    #[serde(default)]
    pub remote: String,
    /// Whether a matching connection is allowed.
    #[serde(default)]
    pub allow: bool,
}

/// An ACL rule: applies to clients whose patterns match; its filters decide.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Client identifier pattern.
    #[serde(default)]
    pub client: String,
    /// User name pattern.
    #[serde(default)]
    pub username: String,
    /// Remote address rule.
    #[serde(default)]
    pub remote: String,
    /// Topic filters and what they allow; `%c` and `%u` stand for the client id and user name.
    /// A rule without filters allows everything.
    #[serde(default)]
    pub filters: BTreeMap<String, FilterAccess>,
}

/// A user with a password and their own ACL, checked before the rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserRule {
    /// Password (plain, Argon2id or bcrypt, as in [`AuthRule::password`]).
    pub password: String,
    /// The client identifiers this user may connect with: one pattern or a list of patterns
    /// (`*` anywhere, `%u` for the user name, e.g. `"sensor-%u-*"`); the client id must match
    /// one of them. Empty or absent: any client id. Binding client ids to users keeps one
    /// user from taking over another's session by presenting its client id.
    #[serde(
        default,
        deserialize_with = "one_or_many",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub client: Vec<String>,
    /// The user's filters; empty means the ACL rules apply.
    #[serde(default)]
    pub acl: BTreeMap<String, FilterAccess>,
    /// Refuses the user even with the right password.
    #[serde(default)]
    pub disallow: bool,
}

/// A pattern or a list of patterns.
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) if one.is_empty() => Vec::new(),
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
    })
}

impl UserRule {
    /// Whether `client_id` is one this user (named `username`) may connect with.
    pub fn allows_client(&self, username: &str, client_id: &str) -> bool {
        self.client.is_empty()
            || self
                .client
                .iter()
                .any(|pattern| glob(&pattern.replace("%u", username), client_id))
    }
}

/// The whole ledger, as written in JSON, YAML or TOML (same keys as the original broker).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ledger {
    /// Users by name, checked first.
    #[serde(default)]
    pub users: BTreeMap<String, UserRule>,
    /// Connection rules, in order.
    #[serde(default)]
    pub auth: Vec<AuthRule>,
    /// ACL rules, in order.
    #[serde(default)]
    pub acl: Vec<AclRule>,
    /// Refuse publish and subscribe when no ACL rule matches (the original allows them).
    #[serde(default)]
    pub deny_by_default: bool,
}

/// Why a ledger could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The document does not describe a ledger.
    #[error("invalid ledger ({format}): {message}")]
    Invalid {
        /// JSON, YAML or TOML.
        format: &'static str,
        /// The parser's message, with the position.
        message: String,
    },
}

impl Ledger {
    /// Parses JSON.
    pub fn from_json(bytes: &[u8]) -> Result<Self, LedgerError> {
        let ledger: Self = serde_json::from_slice(bytes).map_err(|error| LedgerError::Invalid {
            format: "JSON",
            message: error.to_string(),
        })?;
        ledger.validate()?;
        Ok(ledger)
    }

    /// Parses YAML.
    pub fn from_yaml(bytes: &[u8]) -> Result<Self, LedgerError> {
        let ledger: Self =
            serde_yaml_ng::from_slice(bytes).map_err(|error| LedgerError::Invalid {
                format: "YAML",
                message: error.to_string(),
            })?;
        ledger.validate()?;
        Ok(ledger)
    }

    /// Parses TOML.
    pub fn from_toml(text: &str) -> Result<Self, LedgerError> {
        let ledger: Self = toml::from_str(text).map_err(|error| LedgerError::Invalid {
            format: "TOML",
            message: error.to_string(),
        })?;
        ledger.validate()?;
        Ok(ledger)
    }

    /// Parses bytes in the format the file name says (`.json`, `.yaml`/`.yml`, `.toml`); other
    /// names: JSON if the text starts with `{`, else YAML (as the original broker).
    pub fn parse(name: &Path, bytes: &[u8]) -> Result<Self, LedgerError> {
        match name.extension().and_then(|extension| extension.to_str()) {
            Some("json") => Self::from_json(bytes),
            Some("yaml" | "yml") => Self::from_yaml(bytes),
            Some("toml") => Self::from_toml(&String::from_utf8_lossy(bytes)),
            _ if bytes.trim_ascii_start().starts_with(b"{") => Self::from_json(bytes),
            _ => Self::from_yaml(bytes),
        }
    }

    /// Reads and parses a file (blocking; call it off the async runtime, or use
    /// [`LedgerHook::from_file`](crate::LedgerHook::from_file)).
    pub fn load(path: &Path) -> Result<Self, LedgerError> {
        #[allow(clippy::disallowed_methods)] // Documented as blocking; startup and reload only.
        let bytes = std::fs::read(path).map_err(|source| LedgerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(path, &bytes)
    }

    /// Checks what the matchers would otherwise silently ignore: remote rules (CIDR blocks and
    /// addresses) and topic filters, so that a mistyped deny rule cannot fail open. The
    /// `from_*` parsers call it; call it yourself for a ledger built in code.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let invalid = |message: String| LedgerError::Invalid {
            format: "ledger",
            message,
        };
        let remotes = self
            .auth
            .iter()
            .map(|rule| &rule.remote)
            .chain(self.acl.iter().map(|rule| &rule.remote));
        for remote in remotes {
            if remote.trim() != remote {
                return Err(invalid(format!("remote {remote:?}: surrounding spaces")));
            }
            if let Some((network, prefix)) = remote.split_once('/') {
                let network: std::net::IpAddr = network
                    .parse()
                    .map_err(|_| invalid(format!("remote {remote:?}: not an address")))?;
                let limit = if network.is_ipv4() { 32 } else { 128 };
                if !prefix.parse::<u8>().is_ok_and(|prefix| prefix <= limit) {
                    return Err(invalid(format!("remote {remote:?}: bad prefix length")));
                }
            }
        }
        let filters = self
            .acl
            .iter()
            .flat_map(|rule| rule.filters.keys())
            .chain(self.users.values().flat_map(|user| user.acl.keys()));
        for filter in filters {
            // `$share/{group}/{filter}`: the group may be `+` (any group).
            let filter = match split_share(filter) {
                Some((group, rest)) => {
                    let valid = group == "+" || !group.contains(['+', '#']);
                    if group.is_empty() || !valid {
                        return Err(invalid(format!(
                            "filter {filter:?}: the share group must be a name or `+`"
                        )));
                    }
                    rest
                }
                None => filter.as_str(),
            };
            // `%c` and `%u` stand for a whole level: check the filter with placeholders.
            let probe = filter.replace("%c", "c").replace("%u", "u");
            mqtt_topics::parse_filter(&probe, &mqtt_topics::TopicRules::default())
                .map_err(|error| invalid(format!("filter {filter:?}: {error}")))?;
        }
        Ok(())
    }

    /// Logs a warning for every plain-text password: fine for development only.
    pub(crate) fn warn_plain_passwords(&self) {
        let plain_users = self
            .users
            .values()
            .filter(|user| password_kind(&user.password) == PasswordKind::Plain);
        let plain_rules = self.auth.iter().filter(|rule| {
            rule.password
                .as_deref()
                .is_some_and(|p| password_kind(p) == PasswordKind::Plain)
        });
        let count = plain_users.count() + plain_rules.count();
        if count > 0 {
            warn!(
                count,
                "ledger has plain-text passwords: store Argon2id or bcrypt hashes in production"
            );
        }
    }

    /// The connection decision: users first, then the first matching auth rule; deny when
    /// nothing matches. A user with [`UserRule::client`] patterns is refused with any other
    /// client id.
    ///
    /// The time taken does not tell whether a user name exists: for a user name that is not in
    /// `users`, when no auth rule checked a hashed password, the password is checked against one
    /// of the users' hashes (the answer is ignored), and a user is checked in full even when
    /// disallowed or with the wrong client id. Plain-text passwords are compared as SHA-256
    /// digests in constant time.
    pub fn authenticate(&self, client: &ClientInfo, connect: &Connect) -> bool {
        let username = connect.username.as_deref().unwrap_or_default();
        let password = connect.password.as_deref().unwrap_or_default();
        if let Some(user) = self
            .users
            .get(username)
            .filter(|_| connect.username.is_some())
        {
            let verified = verify_password(&user.password, password);
            return verified && !user.disallow && user.allows_client(username, &client.client_id);
        }
        let mut hashed = false;
        let mut decision = false;
        for rule in &self.auth {
            let patterns = glob(&rule.client, &client.client_id)
                && glob(&rule.username, username)
                && remote_matches(&rule.remote, client.connection.remote);
            if !patterns {
                continue;
            }
            let matches = match rule.password.as_deref() {
                None => true,
                Some(stored) => {
                    hashed |= password_kind(stored) != PasswordKind::Plain;
                    verify_password(stored, password)
                }
            };
            if matches {
                decision = rule.allow;
                break;
            }
        }
        if connect.username.is_some()
            && !hashed
            && let Some(hash) = first_hash(self.users.values().map(|user| user.password.as_str()))
        {
            // An unknown user name costs what a known one costs.
            let _ = verify_password(hash, password);
        }
        decision
    }

    /// Whether this ledger has any Argon2 or bcrypt hash: then authentication is CPU-heavy and
    /// runs on the blocking pool, a few at a time.
    pub(crate) fn has_hashes(&self) -> bool {
        let users = self.users.values().map(|user| user.password.as_str());
        let rules = self.auth.iter().filter_map(|rule| rule.password.as_deref());
        first_hash(users.chain(rules)).is_some()
    }

    /// Whether the ACL only ever allows: `deny_by_default` is off, there is at least one ACL
    /// filter (in `acl` or in a user's `acl`), and no filter is a Deny. Such a ledger does not
    /// keep a client inside the filters it was given: a topic that no rule covers (including
    /// every `$` topic, such as `$SYS/#`, which `#` and `+` filters do not cover) is allowed.
    /// An application may warn when this is true; the fix is `deny_by_default = true`, or a last
    /// rule `{filters: {"#": deny}}` (a Deny `#` also covers `$` topics).
    pub fn only_allows(&self) -> bool {
        let mut filters = self
            .acl
            .iter()
            .flat_map(|rule| rule.filters.values())
            .chain(self.users.values().flat_map(|user| user.acl.values()))
            .peekable();
        !self.deny_by_default
            && filters.peek().is_some()
            && filters.all(|access| *access != FilterAccess::Deny)
    }

    /// Whether a rule filter (in `acl` or a user's `acl`) starts with `$share/`: then shared
    /// subscriptions must be allowed by such a filter.
    fn restricts_share_groups(&self) -> bool {
        self.acl
            .iter()
            .flat_map(|rule| rule.filters.keys())
            .chain(self.users.values().flat_map(|user| user.acl.keys()))
            .any(|filter| split_share(filter).is_some())
    }

    /// The ACL decision for `topic` (a name, or a filter when subscribing).
    ///
    /// Shared subscriptions (`$share/{group}/{filter}`, read access) are checked on their
    /// filter. Rule filters that start with `$share/{group}/` (`{group}` may be `+` for any
    /// group, or use `%c` / `%u`) apply to shared subscriptions in that group only. When the
    /// ledger has no such filter, a shared subscription is checked like its filter alone (as the
    /// original broker). When it has one, a shared subscription must be allowed by a `$share/`
    /// filter that covers it (or by a rule without filters): other allowing filters do not
    /// count, Deny filters still do, and when nothing decides it is refused whatever
    /// `deny_by_default` says.
    pub fn check(&self, client: &ClientInfo, topic: &str, access: Access) -> bool {
        let username = client.username.as_deref();
        // A shared subscription is checked on its filter: `$share/{group}/` is not a topic level.
        // A name that starts with `$share/` (a publish) is an ordinary `$` topic.
        let shared = match access {
            Access::Read => mqtt_topics::parse_filter(topic, &mqtt_topics::TopicRules::default())
                .ok()
                .and_then(|parsed| Some((parsed.share_name?, parsed.filter))),
            Access::Write => None,
        };
        let (share_name, topic) = match shared {
            Some((share_name, filter)) => (Some(share_name), filter),
            None => (None, topic),
        };
        let strict_shares = share_name.is_some() && self.restricts_share_groups();
        let decide = |filters: &BTreeMap<String, FilterAccess>| -> Option<bool> {
            // Among the filters that cover the topic: a Deny filter wins; else one that grants
            // the access allows; else (only filters for the other direction) deny. The order of
            // filters does not matter. A subscription wider than a Deny filter is allowed, and
            // the denied messages are then filtered out on delivery.
            let mut granted = false;
            let mut matched = false;
            for (filter, filter_access) in filters {
                let deny = *filter_access == FilterAccess::Deny;
                // `$share/{group}/` filters apply to shared subscriptions in that group only.
                let (filter, share_filter) = match split_share(filter) {
                    None => (filter.as_str(), false),
                    Some((group, rest)) => {
                        let Some(name) = share_name else { continue };
                        let in_group = match substitute(group, &client.client_id, username) {
                            Some(group) => share_name_matches(&group, name),
                            // A Deny filter fails closed: any group.
                            None => deny,
                        };
                        if !in_group {
                            continue;
                        }
                        (rest, true)
                    }
                };
                let filter = match substitute(filter, &client.client_id, username) {
                    Some(filter) => filter,
                    // A Deny filter fails closed: it denies whatever it could have denied.
                    None if deny => deny_fallback(filter),
                    None => continue,
                };
                let filter = filter.as_str();
                if deny {
                    // A Deny `#` also denies `$SYS/#`.
                    if covers_for_deny(filter, topic) {
                        return Some(false);
                    }
                } else if (!strict_shares || share_filter) && covers(filter, topic) {
                    matched = true;
                    granted |= filter_access.grants(access);
                }
            }
            matched.then_some(granted)
        };
        if let Some(user) = username.and_then(|name| self.users.get(name))
            && !user.acl.is_empty()
            && let Some(decision) = decide(&user.acl)
        {
            return decision;
        }
        for rule in &self.acl {
            let applies = glob(&rule.client, &client.client_id)
                && glob(&rule.username, username.unwrap_or_default())
                && remote_matches(&rule.remote, client.connection.remote);
            if !applies {
                continue;
            }
            if rule.filters.is_empty() {
                return true;
            }
            if let Some(decision) = decide(&rule.filters) {
                return decision;
            }
        }
        !self.deny_by_default && !strict_shares
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use mqtt_broker::ConnectionInfo;
    use mqtt_packets::{MqttString, Protocol};

    use super::*;
    use crate::rules::tests::HASH_CHECKS;

    /// A v5 client from 1.2.3.4, for tests of this crate.
    pub(crate) fn client(id: &str, username: Option<&str>) -> ClientInfo {
        ClientInfo::new(
            id,
            username.map(|name| MqttString::new(name).unwrap()),
            Protocol::V5,
            ConnectionInfo::new("test", Some("1.2.3.4:5".parse().unwrap())),
        )
    }

    /// A v5 CONNECT with this user name and password, for tests of this crate.
    pub(crate) fn connect(id: &str, username: Option<&str>, password: &str) -> Connect {
        let mut connect = Connect::new(Protocol::V5, MqttString::new(id).unwrap());
        connect.username = username.map(|name| MqttString::new(name).unwrap());
        connect.password = Some(bytes::Bytes::copy_from_slice(password.as_bytes()));
        connect
    }

    /// Runs `authenticate` and counts the Argon2 or bcrypt checks it made.
    fn hash_checks(ledger: &Ledger, id: &str, username: Option<&str>, password: &str) -> usize {
        let before = HASH_CHECKS.with(std::cell::Cell::get);
        ledger.authenticate(&client(id, username), &connect(id, username, password));
        HASH_CHECKS.with(std::cell::Cell::get) - before
    }

    /// L5: an unknown user name costs one hash check, like a known one, so that the time does
    /// not tell which names exist.
    #[test]
    fn unknown_user_names_cost_a_hash_check() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let mut ledger = Ledger::default();
        ledger.users.insert(
            "known".into(),
            UserRule {
                password: hash.clone(),
                client: vec!["only-this".into()],
                ..UserRule::default()
            },
        );
        ledger.users.insert(
            "off".into(),
            UserRule {
                password: hash.clone(),
                disallow: true,
                ..UserRule::default()
            },
        );
        ledger.auth.push(AuthRule {
            username: "rule-*".into(),
            password: Some(hash),
            allow: true,
            ..AuthRule::default()
        });
        assert_eq!(hash_checks(&ledger, "only-this", Some("known"), "pw"), 1);
        assert_eq!(hash_checks(&ledger, "only-this", Some("known"), "no"), 1);
        assert_eq!(hash_checks(&ledger, "other", Some("known"), "pw"), 1);
        assert_eq!(hash_checks(&ledger, "c", Some("off"), "pw"), 1);
        assert_eq!(hash_checks(&ledger, "c", Some("unknown"), "pw"), 1);
        assert_eq!(
            hash_checks(&ledger, "c", Some("rule-1"), "pw"),
            1,
            "no extra"
        );
        assert_eq!(hash_checks(&ledger, "c", None, "pw"), 0, "no name to hide");
        let plain = Ledger::from_yaml(b"users: {a: {password: pw}}").unwrap();
        assert_eq!(hash_checks(&plain, "c", Some("unknown"), "pw"), 0);
    }
}
