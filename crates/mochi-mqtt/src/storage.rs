//! Opening the configured storage backend and its hook.

use std::sync::Arc;

use anyhow::Context as _;
use mqtt_storage::StorageHook;

use crate::config::{Config, DurabilityConfig, StorageBackend};

/// Opens the configured backend and reads the stored state; `None` when storage is off.
pub(crate) async fn open(config: &Config) -> anyhow::Result<Option<Arc<StorageHook>>> {
    let storage = &config.hooks.storage;
    let options = config.storage_options();
    let durability = match storage.durability {
        DurabilityConfig::Batched => format!("batched every {} ms", storage.flush_interval_ms),
        DurabilityConfig::Sync => "sync (acknowledgements wait for the commit)".to_owned(),
    };
    let hook = match storage.backend {
        StorageBackend::None => {
            println!("storage: in memory (sessions and retained messages are lost on restart)");
            return Ok(None);
        }
        #[cfg(feature = "sled")]
        StorageBackend::Sled => {
            let backend = mqtt_hook_sled::SledBackend::open(storage.sled.clone())
                .await
                .with_context(|| {
                    format!("hooks.storage.sled.path {}", storage.sled.path.display())
                })?;
            println!(
                "storage: sled at {}, {durability}",
                storage.sled.path.display()
            );
            StorageHook::open(backend, options).await?
        }
        #[cfg(feature = "rocksdb")]
        StorageBackend::Rocksdb => {
            let backend = mqtt_hook_rocksdb::RocksDbBackend::open(storage.rocksdb.clone())
                .await
                .with_context(|| {
                    format!(
                        "hooks.storage.rocksdb.path {}",
                        storage.rocksdb.path.display()
                    )
                })?;
            println!(
                "storage: rocksdb at {}, {durability}",
                storage.rocksdb.path.display()
            );
            StorageHook::open(backend, options).await?
        }
        #[cfg(feature = "redis")]
        StorageBackend::Redis => {
            let backend = mqtt_hook_redis::RedisBackend::connect(storage.redis.clone())
                .await
                .with_context(|| {
                    format!("hooks.storage.redis.url {}", redact(&storage.redis.url))
                })?;
            println!(
                "storage: redis at {} (key prefix {:?}), {durability}",
                redact(&storage.redis.url),
                storage.redis.key_prefix
            );
            if options.durability == mqtt_storage::Durability::Sync {
                // Acknowledgements wait for Redis: warn (or, with `require_fsync`, refuse)
                // when Redis itself may lose what it acknowledged (audit M1).
                backend.check_sync_durability().await.with_context(|| {
                    format!(
                        "hooks.storage.redis: checking persistence of {}",
                        redact(&storage.redis.url)
                    )
                })?;
            }
            StorageHook::open(backend, options).await?
        }
        #[allow(unreachable_patterns)] // Every backend compiled in has its arm above.
        other => anyhow::bail!("hooks.storage.backend: {other:?} is not built into this mochi"),
    };
    Ok(Some(Arc::new(hook)))
}

/// A URL without its password, for output.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!(
                "{}://***@{}",
                url.get(..scheme).unwrap_or(""),
                url.get(at + 1..).unwrap_or("")
            )
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            super::redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379/"),
            "redis://127.0.0.1:6379/"
        );
    }
}
