//! The writer task: group commit of the records the storage hook queues.
//!
//! The hook only appends to [`Pending`] (under a short lock) on the packet path; the writer
//! takes everything pending at once and applies it as one backend [`Batch`]. Changes to one key
//! within a batch collapse into the last one, and a record created and deleted within the same
//! batch (a message queued and acknowledged within a flush interval) never reaches the backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{Notify, watch};
use tracing::{debug, error, warn};

use crate::backend::{Backend, Batch, Op};

/// When records become durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Records are written every `flush_interval`, in one batch. Acknowledgements do not wait:
    /// a crash loses what was acknowledged within the last interval (plus the time of one
    /// write).
    Batched {
        /// How often pending records are written.
        flush_interval: Duration,
    },
    /// The broker sends PUBACK/PUBREC/PUBCOMP, and CONNACK to a persistent session, only after
    /// the records they depend on are committed. The writer commits as soon as records are
    /// pending; records queued during a write go together in the next one (group commit). A
    /// crash loses nothing that was acknowledged.
    Sync,
}

impl Default for Durability {
    fn default() -> Self {
        Self::Batched {
            flush_interval: Duration::from_millis(5),
        }
    }
}

/// Counters of the storage hook, for metrics and health checks.
#[derive(Debug, Default)]
pub struct StorageStats {
    /// Batches committed.
    pub batches: AtomicU64,
    /// Changes written to the backend (after collapsing).
    pub writes: AtomicU64,
    /// Changes that cancelled out before reaching the backend.
    pub collapsed: AtomicU64,
    /// Failed backend writes (each retried).
    pub errors: AtomicU64,
    /// Records that could not be read back at start (skipped).
    pub unreadable: AtomicU64,
    /// Changes refused because too much was pending (the backend was down too long).
    pub dropped: AtomicU64,
    /// Changes waiting for the writer now.
    pub pending: AtomicU64,
    /// Whether the last backend write failed.
    pub failing: AtomicBool,
    /// Whether a change was ever dropped (sticky until restart: the store is incomplete).
    pub lost: AtomicBool,
}

/// A value to put: encoded now, or encoded by the writer only if it is still needed then (most
/// message records are deleted before the next write, and are never encoded).
#[allow(clippy::large_enum_variant)] // Inline: boxing would allocate once more per message.
pub(crate) enum Value {
    /// Encoded bytes.
    Ready(Vec<u8>),
    /// A queued message, encoded when the batch is written.
    Message(mqtt_broker::storage::StoredMessage),
    /// A QoS 2 flow record, encoded when the batch is written.
    Flow(crate::records::FlowRecord),
}

impl Value {
    fn encode(self) -> Vec<u8> {
        match self {
            Self::Ready(bytes) => bytes,
            Self::Message(message) => {
                crate::records::encode(&crate::records::MessageRecord::from_stored(&message))
            }
            Self::Flow(flow) => crate::records::encode(&flow),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ready(bytes) => write!(f, "Ready({} bytes)", bytes.len()),
            Self::Message(message) => write!(f, "Message({})", message.seq),
            Self::Flow(flow) => write!(f, "{flow:?}"),
        }
    }
}

#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Inline: boxing would allocate once more per message.
enum Change {
    Put(Value),
    Delete,
    DeletePrefix,
}

#[derive(Debug)]
struct Entry {
    /// The key, or the prefix of a `DeletePrefix`.
    key: Vec<u8>,
    change: Change,
    /// A put of a key the backend does not hold: a later delete of it cancels both.
    fresh: bool,
}

/// Changes queued for the next batch.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    entries: Vec<Option<Entry>>,
    /// Hash of a key → index in `entries` of its latest put or delete (the key is compared on
    /// a hit; a collision only costs a missed collapse).
    index: HashMap<u64, usize>,
    /// The ticket of the latest change (increases with every change).
    pub(crate) ticket: u64,
    live: usize,
}

fn hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x006d_6f63_6869).hash_one(key)
}

impl Pending {
    /// Takes everything pending (a swap: the lock is held for no longer than that).
    fn take(&mut self) -> (Vec<Option<Entry>>, u64) {
        self.index.clear();
        self.live = 0;
        let entries = std::mem::replace(&mut self.entries, Vec::with_capacity(1024));
        (entries, self.ticket)
    }
}

/// The batch for taken entries, encoding what is still needed (outside the lock).
fn batch(entries: Vec<Option<Entry>>) -> Batch {
    let ops = entries
        .into_iter()
        .flatten()
        .map(|entry| match entry.change {
            Change::Put(value) => Op::Put {
                key: entry.key,
                value: value.encode(),
            },
            Change::Delete => Op::Delete { key: entry.key },
            Change::DeletePrefix => Op::DeletePrefix { prefix: entry.key },
        })
        .collect();
    Batch { ops }
}

/// What the hook and the writer share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pending: Mutex<Pending>,
    wake: Notify,
    /// The ticket of the last committed change.
    pub(crate) committed: watch::Sender<u64>,
    pub(crate) stats: Arc<StorageStats>,
    pub(crate) durability: Durability,
    /// Changes kept pending at most, before new ones are refused.
    max_pending: usize,
    closed: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(durability: Durability, max_pending: usize) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            committed: watch::channel(0).0,
            stats: Arc::new(StorageStats::default()),
            durability,
            max_pending: max_pending.max(1),
            closed: AtomicBool::new(false),
            last_error: Mutex::new(None),
        })
    }

    /// Queues a put; `fresh` when the key cannot exist in the backend yet.
    pub(crate) fn put(&self, key: Vec<u8>, value: Value, fresh: bool) {
        self.push(key, Change::Put(value), fresh);
    }

    /// Queues a delete.
    pub(crate) fn delete(&self, key: Vec<u8>) {
        self.push(key, Change::Delete, false);
    }

    /// Queues the removal of every key under `prefix`.
    pub(crate) fn delete_prefix(&self, prefix: Vec<u8>) {
        {
            let mut pending = self.pending.lock();
            let pending = &mut *pending;
            // Pending changes under the prefix are void: the prefix goes.
            let mut removed = 0;
            for slot in &mut pending.entries {
                if slot.as_ref().is_some_and(|entry| {
                    !matches!(entry.change, Change::DeletePrefix) && entry.key.starts_with(&prefix)
                }) && let Some(entry) = slot.take()
                {
                    let at = hash(&entry.key);
                    pending.index.remove(&at);
                    removed += 1;
                }
            }
            pending.live -= removed;
            self.stats
                .collapsed
                .fetch_add(removed as u64, Ordering::Relaxed);
            pending.entries.push(Some(Entry {
                key: prefix,
                change: Change::DeletePrefix,
                fresh: false,
            }));
            pending.live += 1;
            pending.ticket += 1;
            self.stats
                .pending
                .store(pending.live as u64, Ordering::Relaxed);
        }
        self.wake();
    }

    fn push(&self, key: Vec<u8>, change: Change, fresh: bool) {
        let hashed = hash(&key);
        {
            let mut pending = self.pending.lock();
            let pending = &mut *pending;
            let mut fresh = fresh;
            let earlier = pending.index.get(&hashed).copied().and_then(|at| {
                let slot = pending.entries.get_mut(at)?;
                if slot.as_ref().is_some_and(|entry| entry.key == key) {
                    slot.take()
                } else {
                    None
                }
            });
            if let Some(earlier) = earlier {
                pending.live -= 1;
                self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                // The key's state in the backend is what it was before the earlier change.
                fresh = earlier.fresh;
                if fresh && matches!(change, Change::Delete) {
                    // Created and deleted within the batch: nothing to write.
                    pending.index.remove(&hashed);
                    self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                    pending.ticket += 1;
                    return;
                }
            }
            if pending.live >= self.max_pending {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                self.stats.lost.store(true, Ordering::Relaxed);
                pending.index.remove(&hashed);
                return;
            }
            pending.index.insert(hashed, pending.entries.len());
            pending.entries.push(Some(Entry { key, change, fresh }));
            pending.live += 1;
            pending.ticket += 1;
            self.stats
                .pending
                .store(pending.live as u64, Ordering::Relaxed);
        }
        self.wake();
    }

    fn wake(&self) {
        if self.durability == Durability::Sync {
            self.wake.notify_one();
        }
    }

    /// Asks the writer to write what is pending now and stop.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// Writes what is pending now, whatever the mode.
    pub(crate) fn flush_now(&self) {
        self.wake.notify_one();
    }

    /// The ticket of the latest change.
    pub(crate) fn ticket(&self) -> u64 {
        self.pending.lock().ticket
    }

    /// The last backend error, while the backend is failing.
    pub(crate) fn last_error(&self) -> Option<String> {
        self.last_error.lock().clone()
    }
}

/// Runs the writer until the hook is closed and everything pending is written (or the backend
/// keeps failing past the close deadline).
pub(crate) async fn run<B: Backend>(backend: B, shared: Arc<Shared>) {
    const BACKOFF_MIN: Duration = Duration::from_millis(50);
    const BACKOFF_MAX: Duration = Duration::from_secs(5);
    loop {
        let closing = shared.closed.load(Ordering::SeqCst);
        if !closing {
            match shared.durability {
                Durability::Sync => shared.wake.notified().await,
                Durability::Batched { flush_interval } => {
                    tokio::select! {
                        () = tokio::time::sleep(flush_interval) => {}
                        () = shared.wake.notified() => {}
                    }
                }
            }
        }
        let (entries, ticket) = shared.pending.lock().take();
        shared.stats.pending.store(0, Ordering::Relaxed);
        let batch = batch(entries);
        if !batch.is_empty() {
            let len = batch.len() as u64;
            let mut backoff = BACKOFF_MIN;
            loop {
                match backend.write(batch.clone()).await {
                    Ok(()) => {
                        shared.stats.batches.fetch_add(1, Ordering::Relaxed);
                        shared.stats.writes.fetch_add(len, Ordering::Relaxed);
                        if shared.stats.failing.swap(false, Ordering::Relaxed) {
                            warn!(backend = backend.name(), "storage writes succeed again");
                        }
                        *shared.last_error.lock() = None;
                        break;
                    }
                    Err(err) => {
                        shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                        shared.stats.failing.store(true, Ordering::Relaxed);
                        error!(backend = backend.name(), error = %err, retry_in = ?backoff, "storage write failed");
                        *shared.last_error.lock() = Some(err.to_string());
                        if shared.closed.load(Ordering::SeqCst) && backoff >= BACKOFF_MAX {
                            error!(
                                backend = backend.name(),
                                changes = len,
                                "giving up on storage writes at close"
                            );
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
            debug!(
                backend = backend.name(),
                changes = len,
                "storage batch committed"
            );
        }
        shared.committed.send_replace(ticket);
        if closing && shared.pending.lock().live == 0 {
            return;
        }
    }
}
