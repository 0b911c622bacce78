//! The key-value contract every storage backend implements.
//!
//! Keys and values are bytes. Keys sort bytewise, and a backend must return a prefix scan in
//! that order (the record model relies on it: queued messages are keyed by a big-endian
//! sequence number, so a scan returns them in the order they were queued).

use std::fmt;
use std::future::Future;
use std::pin::Pin;

/// A boxed future, for the asynchronous backend methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Keys with their values, in key order: what a prefix scan returns.
pub type KeyValues = Vec<(Vec<u8>, Vec<u8>)>;

/// One change in a [`Batch`].
#[derive(Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets `key` to `value`, replacing what was there.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Removes `key` (nothing happens if it is absent).
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Removes every key that starts with `prefix`.
    DeletePrefix {
        /// The prefix.
        prefix: Vec<u8>,
    },
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = |k: &[u8]| String::from_utf8_lossy(k).replace('\0', "\\0");
        match self {
            Self::Put { key: k, value } => {
                write!(f, "Put({:?}, {} bytes)", key(k), value.len())
            }
            Self::Delete { key: k } => write!(f, "Delete({:?})", key(k)),
            Self::DeletePrefix { prefix } => write!(f, "DeletePrefix({:?})", key(prefix)),
        }
    }
}

/// Changes applied together: all of them or none, in order (a `DeletePrefix` followed by a
/// `Put` under that prefix leaves the new key in place).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// The changes, in order.
    pub ops: Vec<Op>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a put.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value: value.into(),
        });
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Adds a delete of every key under `prefix`.
    pub fn delete_prefix(&mut self, prefix: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(Op::DeletePrefix {
            prefix: prefix.into(),
        });
        self
    }

    /// Whether the batch has no change.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of changes.
    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The backend could not be reached (a Redis server down, a closed connection). The writer
    /// retries with back-off.
    #[error("{backend} unavailable: {message}")]
    Unavailable {
        /// The backend's name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
    /// The backend answered with an error (I/O error, corruption, a refused command).
    #[error("{backend} failed: {message}")]
    Failed {
        /// The backend's name.
        backend: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl BackendError {
    /// An unavailable backend.
    pub fn unavailable(backend: &'static str, message: impl fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            message: message.to_string(),
        }
    }

    /// A failed operation.
    pub fn failed(backend: &'static str, message: impl fmt::Display) -> Self {
        Self::Failed {
            backend,
            message: message.to_string(),
        }
    }
}

/// A key-value store the storage hook writes through.
///
/// Methods are asynchronous so that network backends (Redis) fit; embedded backends (sled,
/// RocksDB) run their blocking calls on `tokio::task::spawn_blocking`, never on the caller's
/// task. Every method must be safe to call again after an error (the writer retries a failed
/// batch as a whole).
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and metrics (`"sled"`, `"rocksdb"`, `"redis"`, `"memory"`).
    fn name(&self) -> &'static str;

    /// Applies `batch` atomically (all or nothing) and durably: when the future completes with
    /// `Ok`, the changes survive a crash of this process (for embedded backends, after an
    /// fsync; for Redis, once the server confirmed the transaction).
    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>>;

    /// The value of `key`.
    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>>;

    /// Every key starting with `prefix` with its value, in bytewise key order.
    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>>;

    /// Sets one key (a batch of one).
    fn put(&self, key: &[u8], value: &[u8]) -> BoxFuture<'_, Result<(), BackendError>> {
        let mut batch = Batch::new();
        batch.put(key, value);
        self.write(batch)
    }

    /// Removes one key (a batch of one).
    fn delete(&self, key: &[u8]) -> BoxFuture<'_, Result<(), BackendError>> {
        let mut batch = Batch::new();
        batch.delete(key);
        self.write(batch)
    }
}

impl<B: Backend + ?Sized> Backend for std::sync::Arc<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        (**self).write(batch)
    }

    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        (**self).get(key)
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        (**self).scan_prefix(prefix)
    }
}
