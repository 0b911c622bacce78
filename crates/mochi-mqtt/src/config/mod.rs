//! The `mochi` configuration: TOML, every key optional, overridable by environment variables.
//!
//! Environment overrides: a variable `MOCHI_<SECTION>__<KEY>` (with `__` between each level of
//! the path, and a number for an element of the `listeners` array) sets that key; the value is
//! read as a TOML value (`true`, `10`, `"text"`, `[1, 2]`), and as a plain string when it is not
//! one. Names are lower-cased: `MOCHI_LOGGING__LEVEL=debug` sets `logging.level`,
//! `MOCHI_LISTENERS__0__ADDRESS=0.0.0.0:1884` the first listener's address,
//! `MOCHI_HOOKS__AUTH__LEDGER_FILE=/config/ledger.yaml` the ledger file. An index one past the
//! end of `listeners` adds a listener. Variables starting with `MOCHI_` without `__` (such as
//! `MOCHI_CONFIG`) are not overrides.

mod broker;
mod hooks;
mod listeners;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mqtt_hook_auth::Ledger;
use serde::{Deserialize, Serialize};
use toml::Value;

pub(crate) use broker::{CapabilitiesConfig, CompatibilitiesConfig, OptionsConfig};
pub(crate) use hooks::{DurabilityConfig, HooksConfig, StorageBackend};
pub(crate) use listeners::{ListenerConfig, ListenerKind, Listeners, check_origin};

/// The prefix of environment overrides.
pub(crate) const ENV_PREFIX: &str = "MOCHI_";

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Config {
    /// The listeners; when the key is absent, TCP :1883, WebSocket :1882 and HTTP stats :8080.
    pub(crate) listeners: Listeners,
    pub(crate) options: OptionsConfig,
    pub(crate) capabilities: CapabilitiesConfig,
    pub(crate) compatibilities: CompatibilitiesConfig,
    pub(crate) hooks: HooksConfig,
    pub(crate) logging: LoggingConfig,
}

/// Log output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct LoggingConfig {
    /// A `tracing` filter: a level (`info`) or directives (`info,mqtt_broker=debug`).
    /// `RUST_LOG`, when set, wins.
    pub(crate) level: String,
    /// `pretty` (human-readable) or `json` (one object a line).
    pub(crate) format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: "info".to_owned(),
            format: LogFormat::Pretty,
        }
    }
}

/// The log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Pretty,
    Json,
}

/// Sets the key that `name` (`MOCHI_A__B__0__C`) stands for.
fn apply_override(root: &mut Value, name: &str, text: &str) -> anyhow::Result<()> {
    let path: Vec<String> = name
        .get(ENV_PREFIX.len()..)
        .unwrap_or_default()
        .split("__")
        .map(str::to_ascii_lowercase)
        .collect();
    if path.iter().any(String::is_empty) {
        bail!("{name}: an empty key in the path");
    }
    let new_value = parse_value(text);
    let mut current = root;
    for (depth, segment) in path.iter().enumerate() {
        let last = depth + 1 == path.len();
        current = match current {
            Value::Table(table) => {
                if last {
                    table.insert(segment.clone(), new_value);
                    return Ok(());
                }
                table
                    .entry(segment.clone())
                    .or_insert_with(|| Value::Table(toml::Table::new()))
            }
            Value::Array(array) => {
                let index: usize = segment.parse().map_err(|_| {
                    anyhow::anyhow!("{name}: {segment:?} should be an index into an array")
                })?;
                let len = array.len();
                if index == len {
                    array.push(Value::Table(toml::Table::new()));
                }
                let Some(element) = array.get_mut(index) else {
                    bail!("{name}: index {index} is past the end of the array ({len} elements)");
                };
                if last {
                    *element = new_value;
                    return Ok(());
                }
                element
            }
            _ => bail!(
                "{name}: {} is not a table",
                path.get(..depth).unwrap_or_default().join(".")
            ),
        };
    }
    Ok(())
}

/// A TOML value, or the text as a string.
fn parse_value(text: &str) -> Value {
    toml::from_str::<toml::Table>(&format!("value = {text}"))
        .ok()
        .and_then(|mut table| table.remove("value"))
        .unwrap_or_else(|| Value::String(text.to_owned()))
}

impl Config {
    /// Reads and checks a file, then applies the environment overrides.
    pub(crate) fn load(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let config = match path {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        let config = config.with_env(env)?;
        config.validate()?;
        if let Some(path) = &config.hooks.auth.ledger_file {
            // Read once more at start-up by the hook; checked here so that a bad ledger is a bad
            // configuration (and `--check-config` catches it).
            Ledger::load(path)
                .map_err(|error| anyhow::anyhow!("hooks.auth.ledger_file: {error}"))?;
        }
        Ok(config)
    }

    /// Parses a file; the error names the file, the line and the key.
    pub(crate) fn from_file(path: &Path) -> anyhow::Result<Self> {
        // The configuration is read once, before the runtime starts.
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Self::parse(&text).map_err(|error| anyhow::anyhow!("{}: {error}", path.display()))
    }

    /// Parses TOML text.
    pub(crate) fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Applies `MOCHI_...__...` overrides.
    pub(crate) fn with_env(
        self,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Self> {
        let mut overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(name, _)| name.starts_with(ENV_PREFIX) && name.contains("__"))
            .collect();
        if overrides.is_empty() {
            return Ok(self);
        }
        overrides.sort();
        let mut value = Value::try_from(&self).context("cannot represent the configuration")?;
        for (name, text) in &overrides {
            apply_override(&mut value, name, text)?;
        }
        let names: Vec<&str> = overrides.iter().map(|(name, _)| name.as_str()).collect();
        value.try_into::<Self>().map_err(|error| {
            anyhow::anyhow!(
                "invalid configuration after the environment overrides ({}): {error}",
                names.join(", ")
            )
        })
    }

    /// Checks what the types alone cannot.
    pub(crate) fn validate(&self) -> anyhow::Result<()> {
        if self.hooks.auth.verification_wait_timeout_ms == 0 {
            bail!("hooks.auth.verification_wait_timeout_ms: must be at least 1");
        }
        let mut ids = BTreeSet::new();
        for (index, listener) in self.listeners.0.iter().enumerate() {
            let key = format!("listeners[{index}]");
            if listener.id.is_empty() {
                bail!("{key}.id: a listener needs an id");
            }
            if !ids.insert(listener.id.as_str()) {
                bail!("{key}.id: listener id {:?} is used twice", listener.id);
            }
            if listener.address.is_empty() {
                bail!("{key}.address: a listener needs an address");
            }
            let secure = matches!(listener.kind, ListenerKind::Tls | ListenerKind::Wss);
            if secure && (listener.tls_cert.is_none() || listener.tls_key.is_none()) {
                bail!(
                    "{key}.tls_cert, {key}.tls_key: a {} listener needs both",
                    listener.kind
                );
            }
            if !secure
                && (listener.tls_cert.is_some()
                    || listener.tls_key.is_some()
                    || listener.tls_client_ca.is_some())
            {
                bail!(
                    "{key}.tls_cert: TLS files are for tls and wss listeners, not {}",
                    listener.kind
                );
            }
            if listener.tls_client_certificate_required.is_some()
                && listener.tls_client_ca.is_none()
            {
                bail!("{key}.tls_client_certificate_required: needs tls_client_ca");
            }
            let websocket = matches!(listener.kind, ListenerKind::Ws | ListenerKind::Wss);
            if !websocket
                && (!listener.allowed_origins.is_empty() || listener.maximum_message_size.is_some())
            {
                bail!(
                    "{key}.allowed_origins, {key}.maximum_message_size: for ws and wss listeners, \
                     not {}",
                    listener.kind
                );
            }
            for origin in &listener.allowed_origins {
                check_origin(origin)
                    .map_err(|error| anyhow::anyhow!("{key}.allowed_origins: {error}"))?;
            }
            if listener.maximum_message_size == Some(0) {
                bail!("{key}.maximum_message_size: must be at least 1");
            }
            if listener.maximum_connections == Some(0) {
                bail!("{key}.maximum_connections: must be at least 1 (0 would refuse everyone)");
            }
            if let Some(auth) = &listener.basic_auth {
                if listener.kind != ListenerKind::Http {
                    bail!(
                        "{key}.basic_auth: for http listeners, not {}",
                        listener.kind
                    );
                }
                if auth.username.is_empty() || auth.username.contains(':') {
                    bail!("{key}.basic_auth.username: must be non-empty, without ':'");
                }
                if auth.password.is_empty() {
                    bail!("{key}.basic_auth.password: must be non-empty");
                }
            }
            if listener.path.is_some()
                && !matches!(listener.kind, ListenerKind::Ws | ListenerKind::Wss)
            {
                bail!(
                    "{key}.path: a path is for ws and wss listeners, not {}",
                    listener.kind
                );
            }
            if listener.kind == ListenerKind::Unix && cfg!(not(unix)) {
                bail!("{key}.type: unix sockets need a Unix system");
            }
            if listener.kind != ListenerKind::Unix
                && listener.address.parse::<std::net::SocketAddr>().is_err()
                && !listener.address.contains(':')
            {
                bail!("{key}.address: {:?} is not host:port", listener.address);
            }
        }
        if self.options.slow_subscriber_timeout_secs == 0 {
            bail!(
                "options.slow_subscriber_timeout_secs: must be at least 1 (a subscriber is given \
                 that long to take a message from its full queue)"
            );
        }
        if self.options.durable_ack_timeout_secs == 0 {
            bail!(
                "options.durable_ack_timeout_secs: must be at least 1 (held acknowledgements wait \
                 that long for the storage commit)"
            );
        }
        if self.options.connect_timeout_secs == 0 {
            bail!("options.connect_timeout_secs: must be at least 1");
        }
        self.validate_limits()?;
        if self.capabilities.maximum_qos > 2 {
            bail!("capabilities.maximum_qos: must be 0, 1 or 2");
        }
        if !(3..=5).contains(&self.capabilities.minimum_protocol_version) {
            bail!("capabilities.minimum_protocol_version: must be 3, 4 or 5");
        }
        let auth = &self.hooks.auth;
        if auth.ledger.is_some() && auth.ledger_file.is_some() {
            bail!("hooks.auth.ledger, hooks.auth.ledger_file: give one, not both");
        }
        if auth.allow_all && (auth.ledger.is_some() || auth.ledger_file.is_some()) {
            bail!("hooks.auth.allow_all: must be false when a ledger is given");
        }
        let storage = &self.hooks.storage;
        let built = match storage.backend {
            StorageBackend::None => true,
            StorageBackend::Sled => cfg!(feature = "sled"),
            StorageBackend::Rocksdb => cfg!(feature = "rocksdb"),
            StorageBackend::Redis => cfg!(feature = "redis"),
        };
        if !built {
            bail!(
                "hooks.storage.backend: this mochi was built without the {:?} feature",
                storage.backend
            );
        }
        if storage.flush_interval_ms == 0 || storage.flush_interval_ms > 60_000 {
            bail!("hooks.storage.flush_interval_ms: must be 1 to 60000");
        }
        if storage.max_pending == 0 {
            bail!("hooks.storage.max_pending: must be above 0");
        }
        if storage.max_pending_bytes == 0 {
            bail!("hooks.storage.max_pending_bytes: must be above 0");
        }
        tracing_subscriber::EnvFilter::try_new(&self.logging.level)
            .map_err(|error| anyhow::anyhow!("logging.level: {error}"))?;
        Ok(())
    }

    /// How long a graceful shutdown waits for clients.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.options.shutdown_timeout_secs)
    }

    /// The configuration as TOML.
    pub(crate) fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("cannot print the configuration")
    }
}

#[cfg(test)]
mod tests {
    use mqtt_broker::{DropOrder, Options, OverloadPolicy, SlowSubscriberPolicy};

    use super::listeners::DEFAULT_HTTP_MAXIMUM_CONNECTIONS;
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn default_is_the_original_brokers_three_listeners_with_allow_all() {
        let config = Config::default();
        assert_eq!(config.listeners.0.len(), 3);
        assert!(config.hooks.auth.allow_all);
        config.validate().unwrap();
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = Config::default().to_toml().unwrap();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_names_the_key_and_line() {
        let error = Config::parse("[options]\nconnect_timeout_secs = 3\nbogus_key = 1\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("bogus_key"), "{error}");
        assert!(error.contains("line 3"), "{error}");
    }

    #[test]
    fn env_overrides_set_nested_keys_and_array_elements() {
        let config = Config::default()
            .with_env(env(&[
                ("MOCHI_LOGGING__LEVEL", "debug"),
                ("MOCHI_LISTENERS__0__ADDRESS", "127.0.0.1:0"),
                ("MOCHI_CAPABILITIES__MAXIMUM_QOS", "1"),
                ("MOCHI_HOOKS__DEBUG__ENABLED", "true"),
                ("MOCHI_CONFIG", "ignored.toml"),
                ("PATH", "/bin"),
            ]))
            .unwrap();
        assert_eq!(config.logging.level, "debug");
        assert_eq!(config.listeners.0[0].address, "127.0.0.1:0");
        assert_eq!(config.capabilities.maximum_qos, 1);
        assert!(config.hooks.debug.enabled);
    }

    #[test]
    fn env_override_can_add_a_listener() {
        let config = Config::default()
            .with_env(env(&[
                ("MOCHI_LISTENERS__3__TYPE", "unix"),
                ("MOCHI_LISTENERS__3__ID", "local"),
                ("MOCHI_LISTENERS__3__ADDRESS", "/tmp/mochi.sock"),
            ]))
            .unwrap();
        assert_eq!(config.listeners.0[3].kind, ListenerKind::Unix);
    }

    #[test]
    fn unknown_env_key_is_an_error_naming_it() {
        let error = Config::default()
            .with_env(env(&[("MOCHI_OPTIONS__NO_SUCH_THING", "1")]))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no_such_thing"), "{error}");
        assert!(error.contains("MOCHI_OPTIONS__NO_SUCH_THING"), "{error}");
    }

    #[test]
    fn validation_catches_inconsistent_listeners_and_auth() {
        let tls_without_files =
            "[[listeners]]\ntype = \"tls\"\nid = \"s\"\naddress = \"0.0.0.0:8883\"\n";
        let error = Config::parse(tls_without_files)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("listeners[0].tls_cert"), "{error}");

        let both = "[hooks.auth]\nallow_all = true\nledger_file = \"l.yaml\"\n";
        let error = Config::parse(both)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("hooks.auth.allow_all"), "{error}");
    }

    #[test]
    fn flow_control_keys_parse_into_the_options() {
        let text = "[options]\noverload_policy = \"drop\"\nslow_subscriber_timeout_secs = 5\n\
                    slow_subscriber_policy = \"skip\"\nqueue_drop_order = \"oldest\"\n";
        let config = Config::parse(text).unwrap();
        config.validate().unwrap();
        let options = config.broker_options();
        assert_eq!(options.overload_policy, OverloadPolicy::Drop);
        assert_eq!(options.slow_subscriber_timeout, Duration::from_secs(5));
        assert_eq!(options.slow_subscriber_policy, SlowSubscriberPolicy::Skip);
        assert_eq!(options.queue_drop_order, DropOrder::Oldest);

        let defaults = Config::parse("").unwrap().broker_options();
        assert_eq!(defaults.overload_policy, OverloadPolicy::Backpressure);
        assert_eq!(defaults.slow_subscriber_timeout, Duration::from_secs(30));
        assert_eq!(
            defaults.slow_subscriber_policy,
            SlowSubscriberPolicy::Disconnect
        );
        assert_eq!(defaults.queue_drop_order, DropOrder::Newest);

        let error = Config::parse("[options]\noverload_policy = \"block\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("backpressure"), "{error}");
        let error = Config::parse("[options]\nslow_subscriber_timeout_secs = 0\n")
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string();
        assert!(error.contains("slow_subscriber_timeout_secs"), "{error}");
    }

    /// The validation error of `text`.
    fn invalid(text: &str) -> String {
        Config::parse(text)
            .unwrap()
            .validate()
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn password_check_limits_reach_the_ledger_hook() {
        let defaults = Config::parse("").unwrap().hooks.auth.verification_limits();
        let library = mqtt_hook_auth::VerificationLimits::default();
        assert_eq!(defaults.concurrent, library.concurrent);
        assert_eq!(defaults.max_waiting, library.max_waiting);
        assert_eq!(defaults.wait_timeout, library.wait_timeout);
        let config = Config::parse(
            "[hooks.auth]\nverification_concurrent = 2\nverification_max_waiting = 3\n\
             verification_wait_timeout_ms = 250\n",
        )
        .unwrap();
        config.validate().unwrap();
        let limits = config.hooks.auth.verification_limits();
        assert_eq!(limits.concurrent, 2);
        assert_eq!(limits.max_waiting, Some(3));
        assert_eq!(limits.wait_timeout, Duration::from_millis(250));
        let zero = Config::parse("[hooks.auth]\nverification_wait_timeout_ms = 0\n").unwrap();
        let error = zero.validate().unwrap_err().to_string();
        assert!(error.contains("verification_wait_timeout_ms"), "{error}");
    }

    #[test]
    fn hardening_keys_default_to_the_brokers_defaults_and_reach_the_options() {
        let defaults = Config::parse("").unwrap();
        defaults.validate().unwrap();
        let broker = Options::default();
        let options = defaults.broker_options();
        let (c, d) = (&options.capabilities, &broker.capabilities);
        assert_eq!(c.maximum_clients, d.maximum_clients);
        assert_eq!(c.maximum_clients, 100_000);
        assert_eq!(c.maximum_sessions, d.maximum_sessions);
        assert_eq!(c.maximum_inflight_bytes, d.maximum_inflight_bytes);
        assert_eq!(c.maximum_topic_alias_bytes, d.maximum_topic_alias_bytes);
        assert_eq!(c.maximum_user_properties, d.maximum_user_properties);
        assert_eq!(c.maximum_user_property_bytes, d.maximum_user_property_bytes);
        assert_eq!(c.maximum_filters_per_packet, d.maximum_filters_per_packet);
        assert_eq!(
            c.maximum_subscriptions_per_client,
            d.maximum_subscriptions_per_client
        );
        assert_eq!(c.maximum_retained_messages, d.maximum_retained_messages);
        assert_eq!(c.maximum_retained_bytes, d.maximum_retained_bytes);
        assert_eq!(
            options.bind_sessions_to_identity,
            broker.bind_sessions_to_identity
        );
        assert_eq!(options.durable_ack_timeout, broker.durable_ack_timeout);

        let text = "[options]\nbind_sessions_to_identity = false\ndurable_ack_timeout_secs = 7\n\
                    [capabilities]\nmaximum_clients = 11\nmaximum_sessions = 12\n\
                    maximum_inflight_bytes = 13\nmaximum_topic_alias_bytes = 14\n\
                    maximum_user_properties = 15\nmaximum_user_property_bytes = 16\n\
                    maximum_filters_per_packet = 17\nmaximum_subscriptions_per_client = 18\n\
                    maximum_retained_messages = 19\nmaximum_retained_bytes = 20\n";
        let config = Config::parse(text).unwrap();
        config.validate().unwrap();
        let options = config.broker_options();
        let c = &options.capabilities;
        assert!(!options.bind_sessions_to_identity);
        assert_eq!(options.durable_ack_timeout, Duration::from_secs(7));
        assert_eq!(
            [
                c.maximum_clients,
                c.maximum_sessions,
                c.maximum_inflight_bytes,
                c.maximum_topic_alias_bytes,
                c.maximum_user_properties,
                c.maximum_user_property_bytes,
                c.maximum_filters_per_packet,
                c.maximum_subscriptions_per_client,
                c.maximum_retained_messages,
                c.maximum_retained_bytes,
            ],
            [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]
        );
    }

    #[test]
    fn validation_refuses_zero_limits_that_would_refuse_everything() {
        for key in [
            "maximum_clients",
            "maximum_sessions",
            "receive_maximum",
            "maximum_inflight",
            "maximum_inflight_bytes",
            "maximum_queued_bytes",
            "maximum_client_writes_pending",
            "maximum_filters_per_packet",
            "maximum_subscriptions_per_client",
            "maximum_topic_length",
            "maximum_topic_levels",
            "maximum_packet_size",
            "maximum_topic_alias_bytes",
            "maximum_user_property_bytes",
            "maximum_retained_messages",
            "maximum_retained_bytes",
        ] {
            let error = invalid(&format!("[capabilities]\n{key} = 0\n"));
            assert!(error.contains(&format!("capabilities.{key}")), "{error}");
        }
        let error = invalid("[options]\ndurable_ack_timeout_secs = 0\n");
        assert!(
            error.contains("options.durable_ack_timeout_secs"),
            "{error}"
        );
        let error = invalid("[options]\nconnect_timeout_secs = 0\n");
        assert!(error.contains("options.connect_timeout_secs"), "{error}");

        // A zero that is a policy, stated with the switch that goes with it, is fine.
        for text in [
            "[capabilities]\ntopic_alias_maximum = 0\nmaximum_topic_alias_bytes = 0\n",
            "[capabilities]\nmaximum_user_properties = 0\nmaximum_user_property_bytes = 0\n",
            "[capabilities]\nretain_available = false\nmaximum_retained_messages = 0\n\
             maximum_retained_bytes = 0\n",
            "[capabilities]\nmaximum_queued_messages = 0\n",
        ] {
            Config::parse(text).unwrap().validate().unwrap();
        }
    }

    #[test]
    fn websocket_origins_and_message_size_are_checked_and_reach_the_listener() {
        let ws = |extra: &str| {
            format!("[[listeners]]\ntype = \"ws\"\nid = \"w\"\naddress = \"0.0.0.0:1882\"\n{extra}")
        };
        let config = Config::parse(&ws(
            "allowed_origins = [\"https://app.example\", \"http://localhost:8080/\", \"*\", \"null\"]\n\
             maximum_message_size = 4096\n",
        ))
        .unwrap();
        config.validate().unwrap();
        let listener = &config.listeners.0[0];
        assert_eq!(listener.allowed_origins.len(), 4);
        assert_eq!(listener.maximum_message_size, Some(4096));
        // Absent: no browser origin is listed.
        let config = Config::parse(&ws("")).unwrap();
        assert!(config.listeners.0[0].allowed_origins.is_empty());

        for (extra, key) in [
            ("allowed_origins = [\"app.example\"]\n", "allowed_origins"),
            (
                "allowed_origins = [\"https://app.example/mqtt\"]\n",
                "allowed_origins",
            ),
            ("allowed_origins = [\"https://\"]\n", "allowed_origins"),
            ("maximum_message_size = 0\n", "maximum_message_size"),
            ("maximum_connections = 0\n", "maximum_connections"),
        ] {
            let error = invalid(&ws(extra));
            assert!(
                error.contains(&format!("listeners[0].{key}")),
                "{extra}: {error}"
            );
        }
        let tcp = "[[listeners]]\ntype = \"tcp\"\nid = \"t\"\naddress = \"0.0.0.0:1883\"\n\
                   allowed_origins = [\"*\"]\n";
        assert!(invalid(tcp).contains("listeners[0].allowed_origins"));
    }

    #[test]
    fn http_basic_auth_is_checked() {
        let http = |extra: &str| {
            format!(
                "[[listeners]]\ntype = \"http\"\nid = \"s\"\naddress = \"0.0.0.0:8080\"\n{extra}"
            )
        };
        let config = Config::parse(&http(
            "basic_auth = { username = \"admin\", password = \"pw\" }\n",
        ))
        .unwrap();
        config.validate().unwrap();
        assert_eq!(
            config.listeners.0[0].basic_auth.as_ref().unwrap().username,
            "admin"
        );
        for (auth, key) in [
            (
                "{ username = \"\", password = \"pw\" }",
                "basic_auth.username",
            ),
            (
                "{ username = \"a:b\", password = \"pw\" }",
                "basic_auth.username",
            ),
            (
                "{ username = \"admin\", password = \"\" }",
                "basic_auth.password",
            ),
        ] {
            let error = invalid(&http(&format!("basic_auth = {auth}\n")));
            assert!(error.contains(&format!("listeners[0].{key}")), "{error}");
        }
        let error = Config::parse(&http("basic_auth = { username = \"a\" }\n"))
            .unwrap_err()
            .to_string();
        assert!(error.contains("password"), "{error}");
        let tcp = "[[listeners]]\ntype = \"tcp\"\nid = \"t\"\naddress = \"0.0.0.0:1883\"\n\
                   basic_auth = { username = \"a\", password = \"b\" }\n";
        assert!(invalid(tcp).contains("listeners[0].basic_auth"));
    }

    #[test]
    fn listeners_have_a_connection_limit_by_default() {
        let config = Config::default();
        let caps = &config.capabilities;
        for listener in &config.listeners.0 {
            let expected = match listener.kind {
                ListenerKind::Http => DEFAULT_HTTP_MAXIMUM_CONNECTIONS,
                _ => caps.maximum_clients,
            };
            assert_eq!(listener.effective_maximum_connections(caps), expected);
        }
        let text = "[capabilities]\nmaximum_clients = 500\n[[listeners]]\ntype = \"tcp\"\nid = \"t\"\n\
                    address = \"0.0.0.0:1883\"\n[[listeners]]\ntype = \"tcp\"\nid = \"u\"\n\
                    address = \"0.0.0.0:1884\"\nmaximum_connections = 20\n";
        let config = Config::parse(text).unwrap();
        let caps = &config.capabilities;
        assert_eq!(
            config.listeners.0[0].effective_maximum_connections(caps),
            500
        );
        assert_eq!(
            config.listeners.0[1].effective_maximum_connections(caps),
            20
        );
    }

    #[test]
    fn a_client_ca_requires_a_client_certificate_unless_made_optional() {
        let tls = |extra: &str| {
            format!(
                "[[listeners]]\ntype = \"tls\"\nid = \"s\"\naddress = \"0.0.0.0:8883\"\n\
                 tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n{extra}"
            )
        };
        let required = |text: &str| {
            let config = Config::parse(text).unwrap();
            config.validate().unwrap();
            config.listeners.0[0].client_certificate_required()
        };
        assert!(!required(&tls("")));
        assert!(required(&tls("tls_client_ca = \"ca.pem\"\n")));
        assert!(required(&tls(
            "tls_client_ca = \"ca.pem\"\ntls_client_certificate_required = true\n"
        )));
        assert!(!required(&tls(
            "tls_client_ca = \"ca.pem\"\ntls_client_certificate_required = false\n"
        )));
        let error = invalid(&tls("tls_client_certificate_required = false\n"));
        assert!(
            error.contains("listeners[0].tls_client_certificate_required"),
            "{error}"
        );
    }

    #[test]
    fn inline_ledger_parses() {
        let text = r##"
[hooks.auth]
allow_all = false
[hooks.auth.ledger]
auth = [{ username = "alice", password = "secret", allow = true }]
acl = [{ filters = { "#" = "readwrite" } }]
"##;
        let config = Config::parse(text).unwrap();
        config.validate().unwrap();
        let ledger = config.hooks.auth.ledger.as_ref().unwrap();
        assert_eq!(ledger.auth.len(), 1);
    }
}
