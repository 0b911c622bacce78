//! The [RocksDB] storage backend of the Mochi MQTT broker.
//!
//! [`RocksDbBackend`] implements the [`Backend`] key-value contract of `mqtt-storage` over an
//! embedded RocksDB database in a directory: no server to run, one process at a time per
//! directory.
//!
//! - A [`Batch`] becomes one RocksDB `WriteBatch`, written with `sync = true`: atomic, applied
//!   in order, and in the fsynced write-ahead log when [`Backend::write`] returns `Ok`.
//! - A `DeletePrefix` is a range deletion from the prefix to the next prefix (the smallest key
//!   above every key that starts with it). A prefix with no such bound (empty, or made of `0xff`
//!   bytes only) is expanded into the keys it covers, under a lock that serialises this
//!   backend's writes, so the batch stays one atomic unit.
//! - RocksDB's calls block, so every one runs on `tokio::task::spawn_blocking`: call the
//!   backend from within a Tokio runtime.
//! - Errors come back as [`BackendError::Failed`]; nothing panics.
//!
//! # Building
//!
//! The `rocksdb` crate is used without its default features (no compression libraries of its
//! own). Its `librocksdb-sys` either compiles RocksDB from source (several minutes of C++) or,
//! when the environment variable `ROCKSDB_LIB_DIR` names a directory with a `librocksdb`,
//! links that library: on Debian 12, `apt-get install librocksdb-dev libclang-dev` and
//! `ROCKSDB_LIB_DIR=/usr/lib/x86_64-linux-gnu`. Either way `bindgen` needs libclang.
//!
//! # Example
//!
//! ```no_run
//! use mqtt_hook_rocksdb::{RocksDbBackend, RocksDbOptions};
//! use mqtt_storage::{Backend, BackendError, Batch};
//!
//! # async fn example() -> Result<(), BackendError> {
//! let backend = RocksDbBackend::open(RocksDbOptions {
//!     path: "data/mochi.rocksdb".into(),
//!     ..RocksDbOptions::default()
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
//! The futures of [`RocksDbBackend::open`] and of the [`Backend`] methods may be dropped at any
//! time, but the blocking work they started goes on: a dropped `write` may still be applied
//! (whole, never in part).
//!
//! [RocksDB]: https://rocksdb.org

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mqtt_storage::{Backend, BackendError, Batch, BoxFuture, KeyValues, Op};
use parking_lot::Mutex;
use rocksdb::{DB, Direction, IteratorMode, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

/// The backend's name, in logs and errors.
const NAME: &str = "rocksdb";

/// How to open a RocksDB store. Every field has a default, so a configuration file names only
/// the ones it changes; an unknown field is an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RocksDbOptions {
    /// The directory of the database (created if absent). Default: `mochi-data/rocksdb`.
    pub path: PathBuf,
    /// The size of one memtable, in bytes, before it is flushed to a table file.
    /// Default: 16 MiB.
    pub write_buffer_size_bytes: usize,
    /// The number of background flush and compaction threads. Default: 2.
    pub max_background_jobs: i32,
    /// The most table files kept open, or `-1` for no limit. Default: 256.
    pub max_open_files: i32,
    /// The number of RocksDB info log files (`LOG.old.*`) kept. Default: 4.
    pub keep_log_file_num: usize,
}

impl Default for RocksDbOptions {
    fn default() -> Self {
        Self {
            path: PathBuf::from("mochi-data/rocksdb"),
            write_buffer_size_bytes: 16 * 1024 * 1024,
            max_background_jobs: 2,
            max_open_files: 256,
            keep_log_file_num: 4,
        }
    }
}

/// A [`Backend`] over a RocksDB database. Clones share the database.
#[derive(Clone)]
pub struct RocksDbBackend {
    db: Arc<DB>,
    path: Arc<PathBuf>,
    /// Held while a batch is built and written, so that the keys an unbounded `DeletePrefix`
    /// expands into cannot change between the scan and the write.
    write_lock: Arc<Mutex<()>>,
}

impl fmt::Debug for RocksDbBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RocksDbBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl RocksDbBackend {
    /// Opens (or creates) the database at `options.path`.
    ///
    /// # Errors
    ///
    /// [`BackendError::Failed`] when RocksDB cannot open the directory: it is not writable, it
    /// is not a RocksDB database, or another process has it open.
    pub async fn open(options: RocksDbOptions) -> Result<Self, BackendError> {
        let path = options.path.clone();
        let db = blocking(move || {
            let mut db_options = rocksdb::Options::default();
            db_options.create_if_missing(true);
            db_options.set_write_buffer_size(options.write_buffer_size_bytes);
            db_options.set_max_background_jobs(options.max_background_jobs);
            db_options.set_max_open_files(options.max_open_files);
            db_options.set_keep_log_file_num(options.keep_log_file_num);
            DB::open(&db_options, &options.path)
        })
        .await
        .inspect_err(|error| {
            tracing::warn!(path = %path.display(), %error, "cannot open the RocksDB store");
        })?;
        tracing::info!(path = %path.display(), "RocksDB store opened");
        Ok(Self {
            db: Arc::new(db),
            path: Arc::new(path),
            write_lock: Arc::new(Mutex::new(())),
        })
    }

    /// The directory of the database.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Backend for RocksDbBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        let db = Arc::clone(&self.db);
        let write_lock = Arc::clone(&self.write_lock);
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(());
            }
            blocking(move || {
                let mut sync = WriteOptions::default();
                sync.set_sync(true);
                let _serialised = write_lock.lock();
                let write_batch = build(&db, batch.ops)?;
                db.write_opt(write_batch, &sync)
            })
            .await
        })
    }

    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        let db = Arc::clone(&self.db);
        let key = key.to_vec();
        Box::pin(blocking(move || db.get(key)))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        let db = Arc::clone(&self.db);
        let prefix = prefix.to_vec();
        Box::pin(blocking(move || scan(&db, &prefix)))
    }
}

/// Every key under `prefix` with its value, in key order.
fn scan(db: &DB, prefix: &[u8]) -> Result<KeyValues, rocksdb::Error> {
    let mut found = Vec::new();
    for entry in db.iterator(IteratorMode::From(prefix, Direction::Forward)) {
        let (key, value) = entry?;
        if !key.starts_with(prefix) {
            break;
        }
        found.push((key.into_vec(), value.into_vec()));
    }
    Ok(found)
}

/// The `WriteBatch` of a batch's ops, in order (RocksDB applies a `WriteBatch` in order, so a
/// put after a range deletion survives it and a put before it does not).
fn build(db: &DB, ops: Vec<Op>) -> Result<WriteBatch, rocksdb::Error> {
    let mut batch = WriteBatch::default();
    // The keys put so far, for a DeletePrefix expanded into single deletes.
    let mut put = BTreeSet::new();
    for op in ops {
        match op {
            Op::Put { key, value } => {
                batch.put(&key, value);
                put.insert(key);
            }
            Op::Delete { key } => batch.delete(key),
            Op::DeletePrefix { prefix } => match next_prefix(&prefix) {
                Some(end) => batch.delete_range(prefix, end),
                None => {
                    for (key, _) in scan(db, &prefix)? {
                        batch.delete(key);
                    }
                    for key in put.iter().filter(|key| key.starts_with(&prefix)) {
                        batch.delete(key);
                    }
                }
            },
        }
    }
    Ok(batch)
}

/// The smallest key greater than every key that starts with `prefix`, or `None` when there is
/// none (the prefix is empty or all `0xff`).
fn next_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

/// Runs a blocking RocksDB call on Tokio's blocking pool.
async fn blocking<T, F>(call: F) -> Result<T, BackendError>
where
    F: FnOnce() -> Result<T, rocksdb::Error> + Send + 'static,
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
    fn next_prefix_is_the_exclusive_upper_bound() {
        assert_eq!(next_prefix(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(next_prefix(b"a\0"), Some(b"a\x01".to_vec()));
        assert_eq!(next_prefix(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(next_prefix(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(next_prefix(b"\xfe\xff"), Some(b"\xff".to_vec()));
        assert_eq!(next_prefix(b"\xff\xff"), None);
        assert_eq!(next_prefix(b""), None);
    }
}
