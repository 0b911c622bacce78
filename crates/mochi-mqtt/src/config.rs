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

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use mqtt_broker::{
    Capabilities, Compatibilities, DropOrder, Options, OverloadPolicy, SlowSubscriberPolicy,
};
use mqtt_hook_auth::Ledger;
use mqtt_hook_debug::{DebugOptions, PayloadFormat};
use mqtt_packets::QoS;
use mqtt_topics::ShareStrategy;
use serde::{Deserialize, Serialize};
use toml::Value;

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

/// The listener array, with the original broker's three as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Listeners(pub(crate) Vec<ListenerConfig>);

impl Default for Listeners {
    fn default() -> Self {
        let listener = |kind, id: &str, address: &str| ListenerConfig {
            kind,
            id: id.to_owned(),
            address: address.to_owned(),
            ..ListenerConfig::default()
        };
        Self(vec![
            listener(ListenerKind::Tcp, "t1", "0.0.0.0:1883"),
            listener(ListenerKind::Ws, "ws1", "0.0.0.0:1882"),
            listener(ListenerKind::Http, "stats", "0.0.0.0:8080"),
        ])
    }
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ListenerKind {
    #[default]
    Tcp,
    Tls,
    Ws,
    Wss,
    Unix,
    Http,
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Tls => "tls",
            Self::Ws => "ws",
            Self::Wss => "wss",
            Self::Unix => "unix",
            Self::Http => "http",
        })
    }
}

/// One listener.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListenerConfig {
    /// `tcp`, `tls`, `ws`, `wss`, `unix` or `http`.
    #[serde(rename = "type")]
    pub(crate) kind: ListenerKind,
    /// A unique name, shown in logs and statistics.
    pub(crate) id: String,
    /// `host:port` (port 0 picks a free port), or the socket path for `unix`.
    pub(crate) address: String,
    /// PEM certificate chain, for `tls` and `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key, for `tls` and `wss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to (`tls`, `wss`); clients
    /// without a certificate are refused unless `tls_client_certificate_required = false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_client_ca: Option<PathBuf>,
    /// Whether clients must present a certificate (needs `tls_client_ca`). Absent: required
    /// when `tls_client_ca` is set; `false` accepts clients without one (a certificate they do
    /// present must still chain to the CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) tls_client_certificate_required: Option<bool>,
    /// The HTTP path of a `ws` or `wss` listener (any path when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) path: Option<String>,
    /// The browser origins a `ws` or `wss` listener admits (`"*"`: any). Absent or empty: a
    /// handshake carrying an `Origin` header (a web page) is refused; clients that send none
    /// are served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) allowed_origins: Vec<String>,
    /// The largest WebSocket message a `ws` or `wss` listener accepts, in bytes (the library
    /// default, 1 MiB, when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_message_size: Option<usize>,
    /// Connections open at once; more are closed at once. Absent: `capabilities.maximum_clients`
    /// for MQTT listeners, [`DEFAULT_HTTP_MAXIMUM_CONNECTIONS`] for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_connections: Option<usize>,
    /// HTTP basic authentication for an `http` listener (every path but `/healthz`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) basic_auth: Option<BasicAuthConfig>,
}

/// The connections an `http` listener keeps open at once when `maximum_connections` is absent:
/// enough for a few dashboards and scrapers.
pub(crate) const DEFAULT_HTTP_MAXIMUM_CONNECTIONS: usize = 64;

impl ListenerConfig {
    /// Whether the listener speaks MQTT (every type but `http`).
    pub(crate) fn serves_mqtt(&self) -> bool {
        self.kind != ListenerKind::Http
    }

    /// Whether clients must present a certificate: as configured, else when a CA is given.
    pub(crate) fn client_certificate_required(&self) -> bool {
        self.tls_client_certificate_required
            .unwrap_or(self.tls_client_ca.is_some())
    }

    /// The connection limit: as configured, else the default of its type.
    pub(crate) fn effective_maximum_connections(&self, capabilities: &CapabilitiesConfig) -> usize {
        self.maximum_connections.unwrap_or(if self.serves_mqtt() {
            capabilities.maximum_clients
        } else {
            DEFAULT_HTTP_MAXIMUM_CONNECTIONS
        })
    }
}

/// Credentials an `http` listener asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BasicAuthConfig {
    /// The user name (no `:`).
    pub(crate) username: String,
    /// The password (shown by `--print-config`: keep the file private).
    pub(crate) password: String,
}

/// How shared subscription groups pick a member.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ShareStrategyConfig {
    #[default]
    RoundRobin,
    Random,
    PublisherHash,
    Sticky,
}

/// [`OverloadPolicy`]: what a connected subscriber's full queue does to its publishers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum OverloadPolicyConfig {
    #[default]
    Backpressure,
    Drop,
}

/// [`SlowSubscriberPolicy`]: what happens to a subscriber declared stuck.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SlowSubscriberPolicyConfig {
    #[default]
    Disconnect,
    Skip,
}

/// [`DropOrder`]: which message a full queue nobody waits for drops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DropOrderConfig {
    #[default]
    Newest,
    Oldest,
}

/// [`Options`] (durations in seconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct OptionsConfig {
    pub(crate) connect_timeout_secs: u64,
    pub(crate) read_buffer_size: usize,
    pub(crate) write_buffer_size: usize,
    pub(crate) sys_topic_resend_interval_secs: u64,
    pub(crate) share_strategy: ShareStrategyConfig,
    /// How long a graceful shutdown (SIGINT, SIGTERM) waits for clients to go.
    pub(crate) shutdown_timeout_secs: u64,
    /// Flow control: `backpressure` (publishers wait for a full subscriber) or `drop` (QoS 0
    /// to it is dropped).
    pub(crate) overload_policy: OverloadPolicyConfig,
    /// How long a subscriber may take nothing from its full queue before it is stuck.
    pub(crate) slow_subscriber_timeout_secs: u64,
    /// `disconnect` or `skip` a stuck subscriber.
    pub(crate) slow_subscriber_policy: SlowSubscriberPolicyConfig,
    /// `newest` or `oldest`: which message a full offline queue drops.
    pub(crate) queue_drop_order: DropOrderConfig,
    /// Whether a session belongs to the identity (user name or proved principal) that created
    /// it.
    pub(crate) bind_sessions_to_identity: bool,
    /// How long acknowledgements held for synchronous durability wait for the commit.
    pub(crate) durable_ack_timeout_secs: u64,
}

impl Default for OptionsConfig {
    fn default() -> Self {
        let options = Options::default();
        Self {
            connect_timeout_secs: options.connect_timeout.as_secs(),
            read_buffer_size: options.read_buffer_size,
            write_buffer_size: options.write_buffer_size,
            sys_topic_resend_interval_secs: options.sys_topic_resend_interval.as_secs(),
            share_strategy: ShareStrategyConfig::RoundRobin,
            shutdown_timeout_secs: options.shutdown_timeout.as_secs(),
            overload_policy: OverloadPolicyConfig::default(),
            slow_subscriber_timeout_secs: options.slow_subscriber_timeout.as_secs(),
            slow_subscriber_policy: SlowSubscriberPolicyConfig::default(),
            queue_drop_order: DropOrderConfig::default(),
            bind_sessions_to_identity: options.bind_sessions_to_identity,
            durable_ack_timeout_secs: options.durable_ack_timeout.as_secs(),
        }
    }
}

/// [`Capabilities`]; the optional limits are unlimited when absent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CapabilitiesConfig {
    pub(crate) maximum_clients: usize,
    pub(crate) maximum_sessions: usize,
    pub(crate) maximum_session_expiry_interval: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_message_expiry_interval: Option<u32>,
    pub(crate) receive_maximum: u16,
    pub(crate) maximum_inflight: u16,
    pub(crate) maximum_queued_messages: usize,
    pub(crate) maximum_queued_bytes: usize,
    pub(crate) maximum_inflight_bytes: usize,
    pub(crate) maximum_client_writes_pending: usize,
    pub(crate) queue_qos0_offline: bool,
    pub(crate) maximum_qos: u8,
    pub(crate) retain_available: bool,
    pub(crate) wildcard_subscription_available: bool,
    pub(crate) shared_subscription_available: bool,
    pub(crate) subscription_identifiers_available: bool,
    pub(crate) topic_alias_maximum: u16,
    pub(crate) maximum_topic_alias_bytes: usize,
    pub(crate) maximum_user_properties: usize,
    pub(crate) maximum_user_property_bytes: usize,
    pub(crate) maximum_filters_per_packet: usize,
    pub(crate) maximum_subscriptions_per_client: usize,
    pub(crate) maximum_retained_messages: usize,
    pub(crate) maximum_retained_bytes: usize,
    pub(crate) maximum_packet_size: u32,
    pub(crate) minimum_protocol_version: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) server_keep_alive: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) maximum_keep_alive: Option<u16>,
    pub(crate) validate_utf8_payload: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) response_information: Option<String>,
    pub(crate) maximum_topic_length: usize,
    pub(crate) maximum_topic_levels: usize,
}

impl Default for CapabilitiesConfig {
    fn default() -> Self {
        let c = Capabilities::default();
        Self {
            maximum_clients: c.maximum_clients,
            maximum_sessions: c.maximum_sessions,
            maximum_session_expiry_interval: c.maximum_session_expiry_interval,
            maximum_message_expiry_interval: c.maximum_message_expiry_interval,
            receive_maximum: c.receive_maximum,
            maximum_inflight: c.maximum_inflight,
            maximum_queued_messages: c.maximum_queued_messages,
            maximum_queued_bytes: c.maximum_queued_bytes,
            maximum_inflight_bytes: c.maximum_inflight_bytes,
            maximum_client_writes_pending: c.maximum_client_writes_pending,
            queue_qos0_offline: c.queue_qos0_offline,
            maximum_qos: c.maximum_qos as u8,
            retain_available: c.retain_available,
            wildcard_subscription_available: c.wildcard_subscription_available,
            shared_subscription_available: c.shared_subscription_available,
            subscription_identifiers_available: c.subscription_identifiers_available,
            topic_alias_maximum: c.topic_alias_maximum,
            maximum_topic_alias_bytes: c.maximum_topic_alias_bytes,
            maximum_user_properties: c.maximum_user_properties,
            maximum_user_property_bytes: c.maximum_user_property_bytes,
            maximum_filters_per_packet: c.maximum_filters_per_packet,
            maximum_subscriptions_per_client: c.maximum_subscriptions_per_client,
            maximum_retained_messages: c.maximum_retained_messages,
            maximum_retained_bytes: c.maximum_retained_bytes,
            maximum_packet_size: c.maximum_packet_size,
            minimum_protocol_version: c.minimum_protocol_version,
            server_keep_alive: c.server_keep_alive,
            maximum_keep_alive: c.maximum_keep_alive,
            validate_utf8_payload: c.validate_utf8_payload,
            response_information: c.response_information,
            maximum_topic_length: c.topic_rules.max_length,
            maximum_topic_levels: c.topic_rules.max_levels,
        }
    }
}

/// [`Compatibilities`]: all off by default (the spec's behaviour).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct CompatibilitiesConfig {
    pub(crate) obscure_not_authorized: bool,
    pub(crate) passive_client_disconnect: bool,
    pub(crate) always_return_response_info: bool,
    pub(crate) restore_sys_info_on_restart: bool,
    pub(crate) no_inherited_properties_on_ack: bool,
}

/// The hooks.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct HooksConfig {
    pub(crate) auth: AuthConfig,
    pub(crate) debug: DebugConfig,
    pub(crate) storage: StorageConfig,
}

/// Persistence: which backend, and when records become durable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StorageConfig {
    /// `none` (in memory, lost on restart), `sled`, `rocksdb` or `redis` (each needs its Cargo
    /// feature; `sled` is in the default set).
    pub(crate) backend: StorageBackend,
    /// `batched` (written every `flush_interval_ms`; a crash loses that window) or `sync`
    /// (acknowledgements wait for the commit; a crash loses nothing acknowledged).
    pub(crate) durability: DurabilityConfig,
    /// How often `batched` writes, in milliseconds.
    pub(crate) flush_interval_ms: u64,
    /// Changes kept pending at most while the backend is down, before new ones are dropped.
    pub(crate) max_pending: usize,
    /// Estimated bytes of changes kept pending at most, as `max_pending` in bytes.
    pub(crate) max_pending_bytes: usize,
    /// The sled database.
    #[cfg(feature = "sled")]
    pub(crate) sled: mqtt_hook_sled::SledOptions,
    /// The RocksDB database.
    #[cfg(feature = "rocksdb")]
    pub(crate) rocksdb: mqtt_hook_rocksdb::RocksDbOptions,
    /// The Redis server.
    #[cfg(feature = "redis")]
    pub(crate) redis: mqtt_hook_redis::RedisOptions,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: StorageBackend::None,
            durability: DurabilityConfig::Batched,
            flush_interval_ms: 5,
            max_pending: mqtt_storage::StorageOptions::default().max_pending,
            max_pending_bytes: mqtt_storage::StorageOptions::default().max_pending_bytes,
            #[cfg(feature = "sled")]
            sled: mqtt_hook_sled::SledOptions::default(),
            #[cfg(feature = "rocksdb")]
            rocksdb: mqtt_hook_rocksdb::RocksDbOptions::default(),
            #[cfg(feature = "redis")]
            redis: mqtt_hook_redis::RedisOptions::default(),
        }
    }
}

/// The storage backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum StorageBackend {
    #[default]
    None,
    Sled,
    Rocksdb,
    Redis,
}

/// When records become durable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum DurabilityConfig {
    #[default]
    Batched,
    Sync,
}

/// Authentication: a ledger from a file (reloaded on SIGHUP), an inline ledger, or allow-all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct AuthConfig {
    /// Everyone may connect, publish and subscribe (development only). The default when no
    /// ledger is given; it must be false when one is.
    pub(crate) allow_all: bool,
    /// A ledger file (JSON, YAML or TOML by its extension), read again on SIGHUP.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ledger_file: Option<PathBuf>,
    /// An inline ledger, with the same keys as a ledger file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ledger: Option<Ledger>,
    /// Password hash checks of the ledger running at once; 0: one per CPU core.
    pub(crate) verification_concurrent: usize,
    /// Connections that may wait for a hash check; more get CONNACK 0x89 Server busy at once.
    /// Absent: 8 times the checks running at once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) verification_max_waiting: Option<usize>,
    /// The longest a connection waits for its hash check to start, in milliseconds.
    pub(crate) verification_wait_timeout_ms: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        let limits = mqtt_hook_auth::VerificationLimits::default();
        Self {
            allow_all: true,
            ledger_file: None,
            ledger: None,
            verification_concurrent: limits.concurrent,
            verification_max_waiting: limits.max_waiting,
            verification_wait_timeout_ms: u64::try_from(limits.wait_timeout.as_millis())
                .unwrap_or(u64::MAX),
        }
    }
}

impl AuthConfig {
    /// The ledger's limits on password hash checks.
    pub(crate) fn verification_limits(&self) -> mqtt_hook_auth::VerificationLimits {
        mqtt_hook_auth::VerificationLimits {
            concurrent: self.verification_concurrent,
            max_waiting: self.verification_max_waiting,
            wait_timeout: Duration::from_millis(self.verification_wait_timeout_ms),
        }
    }
}

/// The debug hook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DebugConfig {
    /// Logs every packet at debug level (target `mqtt_hook_debug`, turned on in the log filter).
    pub(crate) enabled: bool,
    /// `off`, `text` or `hex`.
    pub(crate) payload: PayloadConfig,
    pub(crate) max_payload_bytes: usize,
    pub(crate) hide_pings: bool,
}

impl Default for DebugConfig {
    fn default() -> Self {
        let options = DebugOptions::default();
        Self {
            enabled: false,
            payload: PayloadConfig::Off,
            max_payload_bytes: options.max_payload_bytes,
            hide_pings: options.hide_pings,
        }
    }
}

/// How the debug hook shows payloads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum PayloadConfig {
    #[default]
    Off,
    Text,
    Hex,
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

    /// Checks the `[capabilities]` limits: a zero that would refuse every client, message or
    /// subscription is a mistake, not a policy.
    fn validate_limits(&self) -> anyhow::Result<()> {
        let c = &self.capabilities;
        let at_least_one: [(&str, usize, &str); 11] = [
            (
                "maximum_clients",
                c.maximum_clients,
                "no client could connect",
            ),
            (
                "maximum_sessions",
                c.maximum_sessions,
                "no client could connect",
            ),
            (
                "receive_maximum",
                usize::from(c.receive_maximum),
                "a Receive Maximum of 0 is a protocol error",
            ),
            (
                "maximum_inflight",
                usize::from(c.maximum_inflight),
                "no QoS 1 or 2 message could be sent",
            ),
            (
                "maximum_inflight_bytes",
                c.maximum_inflight_bytes,
                "no QoS 1 or 2 message could be sent",
            ),
            (
                "maximum_queued_bytes",
                c.maximum_queued_bytes,
                "no message could be queued for a subscriber",
            ),
            (
                "maximum_client_writes_pending",
                c.maximum_client_writes_pending,
                "no message could wait for a subscriber's writer",
            ),
            (
                "maximum_filters_per_packet",
                c.maximum_filters_per_packet,
                "every SUBSCRIBE would end its connection",
            ),
            (
                "maximum_subscriptions_per_client",
                c.maximum_subscriptions_per_client,
                "no client could subscribe",
            ),
            (
                "maximum_topic_length",
                c.maximum_topic_length,
                "no topic would be valid",
            ),
            (
                "maximum_topic_levels",
                c.maximum_topic_levels,
                "no topic would be valid",
            ),
        ];
        for (key, value, why) in at_least_one {
            if value == 0 {
                bail!("capabilities.{key}: must be at least 1 ({why})");
            }
        }
        if c.maximum_packet_size == 0 {
            bail!("capabilities.maximum_packet_size: must be at least 1");
        }
        if c.topic_alias_maximum > 0 && c.maximum_topic_alias_bytes == 0 {
            bail!(
                "capabilities.maximum_topic_alias_bytes: must be at least 1 while \
                 topic_alias_maximum is above 0 (set topic_alias_maximum = 0 to turn aliases off)"
            );
        }
        if c.maximum_user_properties > 0 && c.maximum_user_property_bytes == 0 {
            bail!(
                "capabilities.maximum_user_property_bytes: must be at least 1 while \
                 maximum_user_properties is above 0 (set maximum_user_properties = 0 to refuse \
                 every User Property)"
            );
        }
        if c.retain_available {
            for (key, value) in [
                ("maximum_retained_messages", c.maximum_retained_messages),
                ("maximum_retained_bytes", c.maximum_retained_bytes),
            ] {
                if value == 0 {
                    bail!(
                        "capabilities.{key}: must be at least 1 while retain_available is true \
                         (set retain_available = false to turn retained messages off)"
                    );
                }
            }
        }
        Ok(())
    }

    /// The storage hook's settings.
    pub(crate) fn storage_options(&self) -> mqtt_storage::StorageOptions {
        let storage = &self.hooks.storage;
        mqtt_storage::StorageOptions {
            durability: match storage.durability {
                DurabilityConfig::Batched => mqtt_storage::Durability::Batched {
                    flush_interval: Duration::from_millis(storage.flush_interval_ms),
                },
                DurabilityConfig::Sync => mqtt_storage::Durability::Sync,
            },
            max_pending: storage.max_pending,
            max_pending_bytes: storage.max_pending_bytes,
        }
    }

    /// The broker options.
    pub(crate) fn broker_options(&self) -> Options {
        let o = &self.options;
        let c = &self.capabilities;
        let mut options = Options::default();
        options.connect_timeout = Duration::from_secs(o.connect_timeout_secs);
        options.read_buffer_size = o.read_buffer_size;
        options.write_buffer_size = o.write_buffer_size;
        options.sys_topic_resend_interval = Duration::from_secs(o.sys_topic_resend_interval_secs);
        options.share_strategy = match o.share_strategy {
            ShareStrategyConfig::RoundRobin => ShareStrategy::RoundRobin,
            ShareStrategyConfig::Random => ShareStrategy::Random,
            ShareStrategyConfig::PublisherHash => ShareStrategy::PublisherHash,
            ShareStrategyConfig::Sticky => ShareStrategy::Sticky,
        };
        options.shutdown_timeout = self.shutdown_timeout();
        options.overload_policy = match o.overload_policy {
            OverloadPolicyConfig::Backpressure => OverloadPolicy::Backpressure,
            OverloadPolicyConfig::Drop => OverloadPolicy::Drop,
        };
        options.slow_subscriber_timeout = Duration::from_secs(o.slow_subscriber_timeout_secs);
        options.slow_subscriber_policy = match o.slow_subscriber_policy {
            SlowSubscriberPolicyConfig::Disconnect => SlowSubscriberPolicy::Disconnect,
            SlowSubscriberPolicyConfig::Skip => SlowSubscriberPolicy::Skip,
        };
        options.queue_drop_order = match o.queue_drop_order {
            DropOrderConfig::Newest => DropOrder::Newest,
            DropOrderConfig::Oldest => DropOrder::Oldest,
        };
        options.bind_sessions_to_identity = o.bind_sessions_to_identity;
        options.durable_ack_timeout = Duration::from_secs(o.durable_ack_timeout_secs);

        let caps = &mut options.capabilities;
        caps.maximum_clients = c.maximum_clients;
        caps.maximum_sessions = c.maximum_sessions;
        caps.maximum_session_expiry_interval = c.maximum_session_expiry_interval;
        caps.maximum_message_expiry_interval = c.maximum_message_expiry_interval;
        caps.receive_maximum = c.receive_maximum;
        caps.maximum_inflight = c.maximum_inflight;
        caps.maximum_queued_messages = c.maximum_queued_messages;
        caps.maximum_queued_bytes = c.maximum_queued_bytes;
        caps.maximum_inflight_bytes = c.maximum_inflight_bytes;
        caps.maximum_client_writes_pending = c.maximum_client_writes_pending;
        caps.queue_qos0_offline = c.queue_qos0_offline;
        caps.maximum_qos = match c.maximum_qos {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            _ => QoS::ExactlyOnce,
        };
        caps.retain_available = c.retain_available;
        caps.wildcard_subscription_available = c.wildcard_subscription_available;
        caps.shared_subscription_available = c.shared_subscription_available;
        caps.subscription_identifiers_available = c.subscription_identifiers_available;
        caps.topic_alias_maximum = c.topic_alias_maximum;
        caps.maximum_topic_alias_bytes = c.maximum_topic_alias_bytes;
        caps.maximum_user_properties = c.maximum_user_properties;
        caps.maximum_user_property_bytes = c.maximum_user_property_bytes;
        caps.maximum_filters_per_packet = c.maximum_filters_per_packet;
        caps.maximum_subscriptions_per_client = c.maximum_subscriptions_per_client;
        caps.maximum_retained_messages = c.maximum_retained_messages;
        caps.maximum_retained_bytes = c.maximum_retained_bytes;
        caps.maximum_packet_size = c.maximum_packet_size;
        caps.minimum_protocol_version = c.minimum_protocol_version;
        caps.server_keep_alive = c.server_keep_alive;
        caps.maximum_keep_alive = c.maximum_keep_alive;
        caps.validate_utf8_payload = c.validate_utf8_payload;
        caps.response_information = c.response_information.clone();
        caps.topic_rules.max_length = c.maximum_topic_length;
        caps.topic_rules.max_levels = c.maximum_topic_levels;

        let k = &self.compatibilities;
        let compat: &mut Compatibilities = &mut caps.compatibilities;
        compat.obscure_not_authorized = k.obscure_not_authorized;
        compat.passive_client_disconnect = k.passive_client_disconnect;
        compat.always_return_response_info = k.always_return_response_info;
        compat.restore_sys_info_on_restart = k.restore_sys_info_on_restart;
        compat.no_inherited_properties_on_ack = k.no_inherited_properties_on_ack;
        options
    }

    /// How long a graceful shutdown waits for clients.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_secs(self.options.shutdown_timeout_secs)
    }

    /// The debug hook's options.
    pub(crate) fn debug_options(&self) -> DebugOptions {
        let d = &self.hooks.debug;
        let mut options = DebugOptions::default()
            .payload(match d.payload {
                PayloadConfig::Off => PayloadFormat::Off,
                PayloadConfig::Text => PayloadFormat::Text,
                PayloadConfig::Hex => PayloadFormat::Hex,
            })
            .max_payload_bytes(d.max_payload_bytes);
        options.hide_pings = d.hide_pings;
        options
    }

    /// The configuration as TOML.
    pub(crate) fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string_pretty(self).context("cannot print the configuration")
    }
}

/// Checks one entry of `allowed_origins`: `*`, `null`, or `scheme://host[:port]` as browsers
/// send it in `Origin` (a trailing `/` is tolerated; a path is not, since it could never match).
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == mqtt_listeners::ANY_ORIGIN || origin == "null" {
        return Ok(());
    }
    let valid = origin.split_once("://").is_some_and(|(scheme, rest)| {
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        scheme
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
            && !rest.is_empty()
            && rest.chars().all(|c| c.is_ascii_graphic() && c != '/')
    });
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{origin:?} is not an origin: give \"*\", \"null\" or scheme://host[:port], \
             e.g. \"https://app.example.com\""
        ))
    }
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

#[cfg(test)]
mod tests {
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
