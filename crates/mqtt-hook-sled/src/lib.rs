//! The [sled] storage backend of the Mochi MQTT broker.
//!
//! [`SledBackend`] implements the [`Backend`] key-value contract of `mqtt-storage` over an
//! embedded sled database in a directory: no server to run, one process at a time per directory.
//!
//! - A [`Batch`] is applied with one `sled::Tree::apply_batch`, which sled makes atomic, then
//!   flushed with an fsync: when [`Backend::write`] returns `Ok` the batch survives a crash.
//!   A `DeletePrefix` is resolved into the keys it covers while the batch is built, under a lock
//!   that serialises this backend's writes, so the whole batch is still one atomic unit.
//! - sled's calls block, so every one runs on `tokio::task::spawn_blocking`: call the backend
//!   from within a Tokio runtime.
//! - Errors come back as [`BackendError::Failed`]; nothing panics.
//!
//! # Example
//!
//! ```no_run
//! use mqtt_hook_sled::{SledBackend, SledOptions};
//! use mqtt_storage::{Backend, BackendError, Batch};
//!
//! # async fn example() -> Result<(), BackendError> {
//! let backend = SledBackend::open(SledOptions {
//!     path: "data/mochi.sled".into(),
//!     ..SledOptions::default()
//! })
//! .await?;
//!
//! let mut batch = Batch::new();
//! batch.put(b"greeting".as_slice(), b"hello".as_slice());
//! backend.write(batch).await?;
//! assert_eq!(backend.get(b"greeting").await?.as_deref(), Some(b"hello".as_slice()));
//! # Ok(())
//! # }
//! ```
//!
//! # Cancel safety
//!
//! The futures of [`SledBackend::open`] and of the [`Backend`] methods may be dropped at any
//! time, but the blocking work they started goes on: a dropped `write` may still be applied
//! (whole, never in part).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqtt_storage::{Backend, BackendError, Batch, BoxFuture, KeyValues, Op};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// The backend's name, in logs and errors.
const NAME: &str = "sled";

/// How long [`SledBackend::open`] waits for a database lock another handle still holds.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// How to open a sled store. Every field has a default, so a configuration file names only the
/// ones it changes; an unknown field is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SledOptions {
    /// The directory of the database (created if absent). Default: `mochi-data/sled`.
    pub path: PathBuf,
    /// The size of sled's page cache, in bytes. Default: 64 MiB.
    pub cache_capacity_bytes: u64,
    /// sled's background flush period in milliseconds, or `None` for no background flush.
    /// Each write is flushed before it returns anyway, so this only matters to data written to
    /// the database by other means. Default: `None`.
    pub flush_every_ms: Option<u64>,
}

impl Default for SledOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("mochi-data/sled"),
            cache_capacity_bytes: 64 * 1024 * 1024,
            flush_every_ms: None,
        }
    }
}

/// A [`Backend`] over a sled database. Clones share the database.
#[derive(Clone)]
pub struct SledBackend {
    db: sled::Db,
    path: Arc<PathBuf>,
    /// Held while a batch is resolved and applied, so that the keys a `DeletePrefix` covers
    /// cannot change between the scan and the apply.
    write_lock: Arc<Mutex<()>>,
}

impl fmt::Debug for SledBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SledBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SledBackend {
    /// Opens (or creates) the database at `options.path`.
    ///
    /// # Errors
    ///
    /// [`BackendError::Failed`] when sled cannot open the directory: it is not writable, it is
    /// not a sled database, or another process has it open.
    pub async fn open(options: SledOptions) -> Result<Self, BackendError> {
        let path = options.path.clone();
        // The database's file lock may still be held for a moment by the previous handle's
        // background flusher (a restart in the same process) or a process that is exiting:
        // retry a lock refusal for a short while.
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let mut delay = std::time::Duration::from_millis(10);
        let db = loop {
            let options = options.clone();
            let opened = blocking(move || {
                sled::Config::new()
                    .path(&options.path)
                    .cache_capacity(options.cache_capacity_bytes)
                    .flush_every_ms(options.flush_every_ms)
                    .open()
            })
            .await;
            match opened {
                Err(error)
                    if error.to_string().contains("could not acquire lock")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(std::time::Duration::from_millis(200));
                }
                other => {
                    break other.inspect_err(|error| {
                        tracing::warn!(path = %path.display(), %error, "cannot open the sled store");
                    })?;
                }
            }
        };
        tracing::info!(
            path = %path.display(),
            keys = db.len(),
            recovered = db.was_recovered(),
            "sled store opened"
        );
        Ok(Self {
            db,
            path: Arc::new(path),
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backend for SledBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        let db = self.db.clone();
        let write_lock = Arc::clone(&self.write_lock);
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            blocking(move || {
                {
                    let _serialised = write_lock.lock();
                    let resolved = resolve(&db, batch.ops)?;
                    db.apply_batch(resolved)?;
                }
                // Outside the lock: one fsync covers every batch applied before it.
                db.flush().map(drop)
            })
            .await
        })
    }

    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        let db = self.db.clone();
        let key = key.to_vec();
        Box::pin(blocking(move || {
            db.get(key).map(|value| value.map(|v| v.to_vec()))
        }))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        let db = self.db.clone();
        let prefix = prefix.to_vec();
        Box::pin(blocking(move || {
            db.scan_prefix(prefix)
                .map(|entry| entry.map(|(key, value)| (key.to_vec(), value.to_vec())))
                .collect()
        }))
    }
}

/// Turns the ops of a batch, in order, into one sled batch with the same outcome: the final
/// state of every key the ops touch, a `DeletePrefix` standing for a removal of every key under
/// the prefix at this point (those in the database and those put earlier in the batch).
fn resolve(db: &sled::Db, ops: Vec<Op>) -> sled::Result<sled::Batch> {
    let mut outcome: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                outcome.insert(key, Some(value));
            }
            Op::Delete { key } => {
                outcome.insert(key, None);
            }
            Op::DeletePrefix { prefix } => {
                for (_, value) in outcome
                    .range_mut::<[u8], _>((Bound::Included(prefix.as_slice()), Bound::Unbounded))
                    .take_while(|(key, _)| key.starts_with(&prefix))
                {
                    *value = None;
                }
                for key in db.scan_prefix(&prefix).keys() {
                    outcome.insert(key?.to_vec(), None);
                }
            }
        }
    }
    let mut batch = sled::Batch::default();
    for (key, value) in outcome {
        match value {
            Some(value) => batch.insert(key, value),
            None => batch.remove(key),
        }
    }
    Ok(batch)
}

/// Runs a blocking sled call on Tokio's blocking pool.
async fn blocking<T, F>(call: F) -> Result<T, BackendError>
where
    F: FnOnce() -> sled::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(BackendError::failed(NAME, error)),
        Err(error) => Err(BackendError::failed(
            NAME,
            format!("the blocking task failed: {error}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_applies_ops_in_order() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.insert(b"p\0old", b"x".as_slice()).unwrap();
        db.insert(b"q", b"x".as_slice()).unwrap();
        let mut batch = Batch::new();
        batch
            .put(b"p\0a".as_slice(), b"1".as_slice())
            .delete_prefix(b"p\0".as_slice())
            .put(b"p\0new".as_slice(), b"2".as_slice())
            .put(b"r".as_slice(), b"3".as_slice())
            .delete(b"r".as_slice());
        db.apply_batch(resolve(&db, batch.ops).unwrap()).unwrap();
        let all: Vec<(Vec<u8>, Vec<u8>)> = db
            .iter()
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect();
        assert_eq!(
            all,
            vec![
                (b"p\0new".to_vec(), b"2".to_vec()),
                (b"q".to_vec(), b"x".to_vec()),
            ]
        );
    }

    #[test]
    fn options_default() {
        let options = SledOptions::default();
        assert_eq!(options.cache_capacity_bytes, 64 * 1024 * 1024);
        assert_eq!(options.flush_every_ms, None);
    }
}
