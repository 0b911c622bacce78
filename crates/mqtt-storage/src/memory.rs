//! An in-memory backend: for tests and for brokers that want the storage hook's bookkeeping
//! without a disk. Nothing survives the process.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::backend::{Backend, BackendError, Batch, BoxFuture, KeyValues, Op};

/// A [`Backend`] in a `BTreeMap`. Clones share the same map, so a test can "restart" a broker
/// on the same data by giving a clone to a new storage hook.
#[derive(Debug, Clone, Default)]
pub struct MemoryBackend {
    map: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of keys held.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.map.lock().is_empty()
    }
}

impl Backend for MemoryBackend {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
        let mut map = self.map.lock();
        for op in batch.ops {
            match op {
                Op::Put { key, value } => {
                    map.insert(key, value);
                }
                Op::Delete { key } => {
                    map.remove(&key);
                }
                Op::DeletePrefix { prefix } => {
                    map.retain(|key, _| !key.starts_with(&prefix));
                }
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }

    fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
        let value = self.map.lock().get(key).cloned();
        Box::pin(std::future::ready(Ok(value)))
    }

    fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
        let found = self
            .map
            .lock()
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}
