//! The rule ledger: who may connect, and what they may publish and subscribe.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqtt_broker::hooks::{Access, BoxFuture, Decision, HookError, HookEvents};
use mqtt_broker::{ClientInfo, Hook};
use mqtt_packets::Connect;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::rules::{
    PasswordKind, covers, covers_for_deny, glob, password_kind, remote_matches, substitute,
    verify_password,
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
    /// The user's filters; empty means the ACL rules apply.
    #[serde(default)]
    pub acl: BTreeMap<String, FilterAccess>,
    /// Refuses the user even with the right password.
    #[serde(default)]
    pub disallow: bool,
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
    /// [`LedgerHook::from_file`]).
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
            // `%c` and `%u` stand for a whole level: check the filter with placeholders.
            let probe = filter.replace("%c", "c").replace("%u", "u");
            mqtt_topics::parse_filter(&probe, &mqtt_topics::TopicRules::default())
                .map_err(|error| invalid(format!("filter {filter:?}: {error}")))?;
        }
        Ok(())
    }

    /// Logs a warning for every plain-text password: fine for development only.
    fn warn_plain_passwords(&self) {
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
    /// nothing matches.
    pub fn authenticate(&self, client: &ClientInfo, connect: &Connect) -> bool {
        let username = connect.username.as_deref().unwrap_or_default();
        let password = connect.password.as_deref().unwrap_or_default();
        if let Some(user) = self
            .users
            .get(username)
            .filter(|_| connect.username.is_some())
        {
            return !user.disallow && verify_password(&user.password, password);
        }
        for rule in &self.auth {
            let matches = glob(&rule.client, &client.client_id)
                && glob(&rule.username, username)
                && remote_matches(&rule.remote, client.connection.remote)
                && rule
                    .password
                    .as_deref()
                    .is_none_or(|stored| verify_password(stored, password));
            if matches {
                return rule.allow;
            }
        }
        false
    }

    /// The ACL decision for `topic` (a name, or a filter when subscribing).
    pub fn check(&self, client: &ClientInfo, topic: &str, access: Access) -> bool {
        let username = client.username.as_deref();
        // A shared subscription is checked on its filter: `$share/{group}/` is not a topic level.
        let topic = mqtt_topics::parse_filter(topic, &mqtt_topics::TopicRules::default())
            .map_or(topic, |parsed| parsed.filter);
        let decide = |filters: &BTreeMap<String, FilterAccess>| -> Option<bool> {
            // Among the filters that cover the topic: a Deny filter wins; else one that grants
            // the access allows; else (only filters for the other direction) deny. The order of
            // filters does not matter. A subscription wider than a Deny filter is allowed, and
            // the denied messages are then filtered out on delivery.
            let mut granted = false;
            let mut matched = false;
            for (filter, filter_access) in filters {
                let Some(filter) = substitute(filter, &client.client_id, username) else {
                    continue;
                };
                if *filter_access == FilterAccess::Deny {
                    // A Deny `#` also denies `$SYS/#`.
                    if covers_for_deny(&filter, topic) {
                        return Some(false);
                    }
                } else if covers(&filter, topic) {
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
        !self.deny_by_default
    }
}

/// The ledger as a hook. The ledger is replaced atomically by [`LedgerHook::update`] or
/// [`LedgerHook::reload`]; checks in progress finish with the ledger they started with.
#[derive(Debug)]
pub struct LedgerHook {
    ledger: RwLock<Arc<Ledger>>,
    path: Option<PathBuf>,
    /// Password checks running at once: Argon2 and bcrypt are costly on purpose, so a flood of
    /// CONNECTs queues here rather than filling the blocking pool.
    verifications: Arc<tokio::sync::Semaphore>,
}

fn verification_permits() -> Arc<tokio::sync::Semaphore> {
    let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    Arc::new(tokio::sync::Semaphore::new(cores))
}

impl LedgerHook {
    /// A hook with this ledger.
    pub fn new(ledger: Ledger) -> Self {
        ledger.warn_plain_passwords();
        Self {
            ledger: RwLock::new(Arc::new(ledger)),
            path: None,
            verifications: verification_permits(),
        }
    }

    /// A hook with the ledger of a file, which [`LedgerHook::reload`] reads again.
    pub async fn from_file(path: impl Into<PathBuf>) -> Result<Self, LedgerError> {
        let path = path.into();
        let ledger = read_file(&path).await?;
        ledger.warn_plain_passwords();
        Ok(Self {
            ledger: RwLock::new(Arc::new(ledger)),
            path: Some(path),
            verifications: verification_permits(),
        })
    }

    /// Replaces the ledger.
    pub fn update(&self, ledger: Ledger) {
        ledger.warn_plain_passwords();
        *self.ledger.write() = Arc::new(ledger);
    }

    /// Reads the file again and replaces the ledger; a bad file keeps the old ledger (the error
    /// says why, and is logged).
    pub async fn reload(&self) -> Result<(), LedgerError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match read_file(path).await {
            Ok(ledger) => {
                self.update(ledger);
                info!(path = %path.display(), "ledger reloaded");
                Ok(())
            }
            Err(error) => {
                warn!(path = %path.display(), %error, "ledger not reloaded; the previous one stays");
                Err(error)
            }
        }
    }

    /// The ledger in force.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.read().clone()
    }
}

async fn read_file(path: &Path) -> Result<Ledger, LedgerError> {
    let bytes = tokio_read(path).await.map_err(|source| LedgerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ledger::parse(path, &bytes)
}

async fn tokio_read(path: &Path) -> std::io::Result<Vec<u8>> {
    let path = path.to_path_buf();
    #[allow(clippy::disallowed_methods)] // Runs on the blocking pool.
    let read = tokio::task::spawn_blocking(move || std::fs::read(path)).await;
    read.map_err(std::io::Error::other)?
}

impl Hook for LedgerHook {
    fn id(&self) -> &str {
        "ledger"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT_AUTHENTICATE | HookEvents::ON_ACL_CHECK
    }

    fn init(&self, _: &mqtt_broker::Options) -> Result<(), HookError> {
        Ok(())
    }

    /// Password hashes are checked on the blocking pool: Argon2 and bcrypt take milliseconds
    /// of CPU on purpose.
    fn on_connect_authenticate<'a>(
        &'a self,
        client: &'a ClientInfo,
        connect: &'a Connect,
    ) -> BoxFuture<'a, Decision> {
        let ledger = self.ledger();
        let client = client.clone();
        let connect = connect.clone();
        let verifications = self.verifications.clone();
        Box::pin(async move {
            let Ok(_permit) = verifications.acquire_owned().await else {
                return Decision::Deny;
            };
            let allowed =
                tokio::task::spawn_blocking(move || ledger.authenticate(&client, &connect))
                    .await
                    .unwrap_or(false);
            if allowed {
                Decision::Allow
            } else {
                Decision::Deny
            }
        })
    }

    fn on_acl_check(&self, client: &ClientInfo, topic: &str, access: Access) -> Decision {
        if self.ledger.read().check(client, topic, access) {
            Decision::Allow
        } else {
            Decision::Deny
        }
    }
}
