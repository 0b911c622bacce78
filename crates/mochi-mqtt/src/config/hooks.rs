//! The `[hooks]` section: storage (`[hooks.storage]`), authentication (`[hooks.auth]`) and
//! the debug log (`[hooks.debug]`).

use std::path::PathBuf;
use std::time::Duration;

use mqtt_hook_auth::Ledger;
use mqtt_hook_debug::{DebugOptions, PayloadFormat};
use serde::{Deserialize, Serialize};

use super::Config;

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

impl Config {
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
}
