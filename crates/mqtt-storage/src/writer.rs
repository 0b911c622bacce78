//! The writer task: group commit of the records the storage hook queues.
//!
//! The hook only appends to [`Pending`] (under a short lock) on the packet path; the writer
//! takes everything pending at once and applies it as one backend [`Batch`]. Changes to one key
//! within a batch collapse into the last one, and a record created and deleted within the same
//! batch (a message queued and acknowledged within a flush interval) never reaches the backend.

use std::collections::{HashMap, VecDeque};
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
    ///
    /// A change refused because too much was pending (see `StorageOptions::max_pending` and
    /// `StorageOptions::max_pending_bytes`) fails the acknowledgements that depend on it (the
    /// connection is closed without them, so the client sends again), and only those: see
    /// `StorageHook`'s `durable` for the exact rule.
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
    /// Estimated bytes of the changes waiting for the writer now (what
    /// `StorageOptions::max_pending_bytes` bounds).
    pub pending_bytes: AtomicU64,
    /// Whether the last backend write failed.
    pub failing: AtomicBool,
    /// Whether a change was dropped that no commit has passed yet. Set when a change is
    /// dropped, cleared once the writer commits everything queued up to the last dropped change
    /// (the backend works again). The dropped changes themselves are not written later: the
    /// store lacks them until the broker writes those records again.
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

    /// The heap bytes the value holds (about what its record will take), for the
    /// `max_pending_bytes` bound. The value's inline size is counted with its entry.
    fn heap_bytes(&self) -> usize {
        match self {
            Self::Ready(bytes) => bytes.len(),
            Self::Message(message) => message_bytes(message),
            Self::Flow(_) => 0,
        }
    }
}

/// The heap bytes of a stored message: its client id, topic, payload, Subscription
/// Identifiers and properties (User Properties included, each with its own overhead).
fn message_bytes(message: &mqtt_broker::storage::StoredMessage) -> usize {
    let properties = &message.properties;
    let strings = [
        properties.response_topic.as_ref().map_or(0, |s| s.len()),
        properties.content_type.as_ref().map_or(0, |s| s.len()),
        properties.correlation_data.as_ref().map_or(0, |b| b.len()),
    ];
    let user_properties: usize = properties
        .user_properties
        .iter()
        .map(|p| std::mem::size_of_val(p) + p.name.len() + p.value.len())
        .sum();
    message.client_id.as_ref().map_or(0, String::len)
        + message.topic.len()
        + message.payload.len()
        + std::mem::size_of_val(message.subscription_identifiers.as_slice())
        + std::mem::size_of_val(properties.subscription_identifiers.as_slice())
        + strings.iter().sum::<usize>()
        + user_properties
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
    /// The estimated memory the entry holds while pending (see [`entry_bytes`]).
    bytes: usize,
}

/// The estimated memory of a pending change: its slot, its two index slots, its key and what
/// its value holds. About the size of the record the writer will encode, plus the overhead.
fn entry_bytes(key: &[u8], change: &Change) -> usize {
    const OVERHEAD: usize = std::mem::size_of::<Option<Entry>>() + 4 * std::mem::size_of::<u64>();
    let value = match change {
        Change::Put(value) => value.heap_bytes(),
        Change::Delete | Change::DeletePrefix => 0,
    };
    OVERHEAD + key.len() + value
}

/// The session prefix of a key: the key up to and including its second NUL byte
/// (`<kind>␀<client id>␀`, see the `keys` module), which is what the hook removes with
/// [`Shared::delete_prefix`] when a session ends. `None` for keys that are not under one
/// session (retained messages, sessions' own records, `$SYS`).
fn session_prefix(key: &[u8]) -> Option<&[u8]> {
    let first = key.iter().position(|&b| b == 0)?;
    let rest = key.get(first + 1..)?;
    let second = first + 1 + rest.iter().position(|&b| b == 0)?;
    key.get(..=second)
}

/// Most tasks whose dropped changes wait to be reported to their next `durable` call (see
/// [`Pending::dropped_by_task`]).
const MAX_TASKS_WITH_DROPS: usize = 65_536;

/// Changes queued for the next batch.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    entries: Vec<Option<Entry>>,
    /// Hash of a key → index in `entries` of its latest put or delete (the key is compared on
    /// a hit; a collision only costs a missed collapse).
    index: HashMap<u64, usize>,
    /// Hash of a session prefix ([`session_prefix`]) → indices in `entries` of the changes
    /// under it, so that removing a session's keys visits only that session's changes (the
    /// key is checked on a hit; a slot emptied since is skipped).
    sessions: HashMap<u64, Vec<usize>>,
    /// The ticket of the latest change (increases with every change, dropped ones included).
    pub(crate) ticket: u64,
    live: usize,
    /// Estimated bytes of the live entries.
    bytes: usize,
    /// Tickets of dropped changes that no commit has passed yet, as ascending, disjoint,
    /// inclusive ranges.
    drops: VecDeque<(u64, u64)>,
    /// Per Tokio task (`None` outside one), the ticket of the last change it pushed that was
    /// dropped and that no `durable` call of that task has reported yet. The broker pushes the
    /// changes an acknowledgement depends on from the task that then waits for `durable`, so
    /// this catches a drop that a commit passed before that task asked (which the window
    /// rule cannot see). Kept for at most [`MAX_TASKS_WITH_DROPS`] tasks.
    dropped_by_task: HashMap<Option<tokio::task::Id>, u64>,
    /// Slots `delete_prefix` looked at (for tests of its cost).
    #[cfg(test)]
    visited: usize,
}

fn hash(key: &[u8]) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::fast::FixedState::with_seed(0x006d_6f63_6869).hash_one(key)
}

impl Pending {
    /// Takes everything pending (a swap: the lock is held for no longer than that).
    fn take(&mut self) -> (Vec<Option<Entry>>, u64) {
        self.index.clear();
        self.sessions.clear();
        self.live = 0;
        self.bytes = 0;
        let entries = std::mem::replace(&mut self.entries, Vec::with_capacity(1024));
        (entries, self.ticket)
    }

    /// Records that the change with `ticket` was dropped, and for `durable` calls, that `task`
    /// pushed it.
    fn record_drop(&mut self, ticket: u64, task: Option<Option<tokio::task::Id>>, committed: u64) {
        match self.drops.back_mut() {
            Some((_, last)) if *last + 1 == ticket => *last = ticket,
            _ => self.drops.push_back((ticket, ticket)),
        }
        let Some(task) = task else {
            return;
        };
        if self.dropped_by_task.len() >= MAX_TASKS_WITH_DROPS
            && !self.dropped_by_task.contains_key(&task)
        {
            // Forget the drops that commits passed long ago; if every entry is recent, the
            // window rule still covers this one until a commit passes it.
            self.dropped_by_task
                .retain(|_, dropped| *dropped > committed);
            if self.dropped_by_task.len() >= MAX_TASKS_WITH_DROPS {
                return;
            }
        }
        self.dropped_by_task.insert(task, ticket);
    }

    /// Forgets the dropped tickets a commit up to `committed` passed; whether any is left.
    fn passed(&mut self, committed: u64) -> bool {
        while let Some(&(first, last)) = self.drops.front() {
            if last <= committed {
                self.drops.pop_front();
            } else {
                if first <= committed {
                    if let Some(front) = self.drops.front_mut() {
                        front.0 = committed + 1;
                    }
                }
                break;
            }
        }
        !self.drops.is_empty()
    }

    /// Whether a dropped ticket lies in `(after, upto]`.
    fn dropped_within(&self, after: u64, upto: u64) -> bool {
        // The first range that ends after `after` (ranges are ascending and disjoint).
        let at = self.drops.partition_point(|&(_, last)| last <= after);
        self.drops.get(at).is_some_and(|&(first, _)| first <= upto)
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

/// Why a `durable` wait fails at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// A change this task pushed was dropped since its last `durable` call.
    ByThisTask,
    /// A change pushed after the last commit and before the call was dropped.
    InWindow,
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
    /// Estimated bytes kept pending at most, before new changes are refused.
    max_pending_bytes: usize,
    closed: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn new(
        durability: Durability,
        max_pending: usize,
        max_pending_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Self {
            pending: Mutex::new(Pending::default()),
            wake: Notify::new(),
            committed: watch::channel(0).0,
            stats: Arc::new(StorageStats::default()),
            durability,
            max_pending: max_pending.max(1),
            max_pending_bytes: max_pending_bytes.max(1),
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

    /// Queues the removal of every key under `prefix`. Never refused: it voids the pending
    /// changes under the prefix, which frees more than it takes.
    pub(crate) fn delete_prefix(&self, prefix: Vec<u8>) {
        {
            let mut pending = self.pending.lock();
            let pending = &mut *pending;
            // Pending changes under the prefix are void: the prefix goes. (Only an
            // optimisation: the backend applies the batch in order, so a change left in place
            // is removed by the `DeletePrefix` anyway.)
            let under = |entry: &Entry| {
                !matches!(entry.change, Change::DeletePrefix) && entry.key.starts_with(&prefix)
            };
            let mut removed = 0;
            let mut freed = 0;
            let mut void = |slot: &mut Option<Entry>, index: &mut HashMap<u64, usize>| {
                if slot.as_ref().is_some_and(under)
                    && let Some(entry) = slot.take()
                {
                    index.remove(&hash(&entry.key));
                    removed += 1;
                    freed += entry.bytes;
                }
            };
            if session_prefix(&prefix) == Some(prefix.as_slice()) {
                // A session's prefix: visit only that session's changes.
                for at in pending.sessions.remove(&hash(&prefix)).unwrap_or_default() {
                    #[cfg(test)]
                    {
                        pending.visited += 1;
                    }
                    if let Some(slot) = pending.entries.get_mut(at) {
                        void(slot, &mut pending.index);
                    }
                }
            } else {
                for slot in &mut pending.entries {
                    #[cfg(test)]
                    {
                        pending.visited += 1;
                    }
                    void(slot, &mut pending.index);
                }
            }
            pending.live -= removed;
            pending.bytes -= freed;
            self.stats
                .collapsed
                .fetch_add(removed as u64, Ordering::Relaxed);
            let bytes = entry_bytes(&prefix, &Change::DeletePrefix);
            pending.entries.push(Some(Entry {
                key: prefix,
                change: Change::DeletePrefix,
                fresh: false,
                bytes,
            }));
            pending.live += 1;
            pending.bytes += bytes;
            pending.ticket += 1;
            self.gauges(pending);
        }
        self.wake();
    }

    fn push(&self, key: Vec<u8>, change: Change, fresh: bool) {
        let hashed = hash(&key);
        let bytes = entry_bytes(&key, &change);
        {
            let mut pending = self.pending.lock();
            let pending = &mut *pending;
            let earlier_at = pending.index.get(&hashed).copied().filter(|&at| {
                pending
                    .entries
                    .get(at)
                    .and_then(Option::as_ref)
                    .is_some_and(|entry| entry.key == key)
            });
            let earlier = earlier_at.and_then(|at| pending.entries.get(at)?.as_ref());
            let earlier_bytes = earlier.map_or(0, |entry| entry.bytes);
            // Created and deleted within the batch: nothing to write, nothing to refuse.
            let cancels =
                earlier.is_some_and(|entry| entry.fresh) && matches!(change, Change::Delete);
            if !cancels {
                let live = pending.live + usize::from(earlier.is_none());
                let total = pending.bytes - earlier_bytes + bytes;
                // One change alone is never refused for its size (the broker bounds a
                // message's size), or a large message could never be stored.
                if live > self.max_pending || (total > self.max_pending_bytes && live > 1) {
                    // The earlier change of the key (if any) stays pending.
                    pending.ticket += 1;
                    let committed = *self.committed.borrow();
                    // Only `sync` mode has `durable` calls to report the drop to.
                    let task = (self.durability == Durability::Sync).then(tokio::task::try_id);
                    pending.record_drop(pending.ticket, task, committed);
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    self.stats.lost.store(true, Ordering::Relaxed);
                    // Let the writer commit past the drop once the backend works.
                    self.wake();
                    return;
                }
            }
            let mut fresh = fresh;
            if let Some(earlier) = earlier_at.and_then(|at| pending.entries.get_mut(at)?.take()) {
                pending.live -= 1;
                pending.bytes -= earlier.bytes;
                self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                // The key's state in the backend is what it was before the earlier change.
                fresh = earlier.fresh;
                if cancels {
                    pending.index.remove(&hashed);
                    self.stats.collapsed.fetch_add(1, Ordering::Relaxed);
                    pending.ticket += 1;
                    self.gauges(pending);
                    return;
                }
            }
            let at = pending.entries.len();
            pending.index.insert(hashed, at);
            if let Some(session) = session_prefix(&key) {
                pending.sessions.entry(hash(session)).or_default().push(at);
            }
            pending.entries.push(Some(Entry {
                key,
                change,
                fresh,
                bytes,
            }));
            pending.live += 1;
            pending.bytes += bytes;
            pending.ticket += 1;
            self.gauges(pending);
        }
        self.wake();
    }

    /// Publishes the pending gauges.
    fn gauges(&self, pending: &Pending) {
        self.stats
            .pending
            .store(pending.live as u64, Ordering::Relaxed);
        self.stats
            .pending_bytes
            .store(pending.bytes as u64, Ordering::Relaxed);
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

    /// For a `durable` call now: the ticket to wait for (every change queued so far), and the
    /// ticket committed now; or why the call fails at once. It fails when the calling task
    /// pushed a change that was dropped since its last call, or when a change was dropped
    /// between the last commit and now (the window `(committed, target]`). A failure of the
    /// first kind is reported once.
    pub(crate) fn durable_target(&self) -> Result<(u64, u64), Dropped> {
        let mut pending = self.pending.lock();
        let committed = *self.committed.borrow();
        let target = pending.ticket;
        let by_task = pending
            .dropped_by_task
            .remove(&tokio::task::try_id())
            .is_some();
        if by_task {
            return Err(Dropped::ByThisTask);
        }
        if pending.dropped_within(committed, target) {
            return Err(Dropped::InWindow);
        }
        Ok((target, committed))
    }

    /// Whether a dropped change waits for a commit to pass it.
    pub(crate) fn drop_pending(&self) -> bool {
        !self.pending.lock().drops.is_empty()
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
        shared.stats.pending_bytes.store(0, Ordering::Relaxed);
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
        {
            // Under the lock, so that a drop recorded meanwhile is not cleared by mistake.
            let mut pending = shared.pending.lock();
            let left = pending.passed(ticket);
            shared.stats.lost.store(left, Ordering::Relaxed);
        }
        if closing && shared.pending.lock().live == 0 {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(max_pending: usize, max_pending_bytes: usize) -> Arc<Shared> {
        Shared::new(Durability::Sync, max_pending, max_pending_bytes)
    }

    fn key(kind: u8, client_id: &str, n: u64) -> Vec<u8> {
        crate::keys::client_key(kind, client_id, &n.to_be_bytes())
    }

    #[test]
    fn changes_past_max_pending_bytes_are_dropped() {
        let per = entry_bytes(
            &key(b'm', "a", 0),
            &Change::Put(Value::Ready(vec![7; 1_000])),
        );
        assert!(per > 1_000, "{per}");
        // Room for ten such changes, whatever their count.
        let shared = sync(1_000_000, per * 10 + per / 2);
        for n in 0..20 {
            shared.put(key(b'm', "a", n), Value::Ready(vec![7; 1_000]), true);
        }
        let stats = &shared.stats;
        let dropped = stats.dropped.load(Ordering::Relaxed);
        assert_eq!(dropped, 10);
        assert_eq!(stats.pending.load(Ordering::Relaxed), 10);
        let bytes = stats.pending_bytes.load(Ordering::Relaxed);
        assert_eq!(bytes, per as u64 * 10);
        assert!(stats.lost.load(Ordering::Relaxed));
        // Dropped changes take tickets too, so that `durable` can tell them apart.
        assert_eq!(shared.ticket(), 20);
        assert_eq!(shared.pending.lock().drops, [(11, 20)]);

        // Replacing a pending value by a smaller one frees room; a delete of a fresh key
        // cancels both, whatever the limit.
        shared.put(key(b'm', "a", 0), Value::Ready(vec![7; 10]), true);
        shared.delete(key(b'm', "a", 1));
        assert_eq!(stats.dropped.load(Ordering::Relaxed), dropped);
        assert!(stats.pending_bytes.load(Ordering::Relaxed) < bytes);
    }

    #[test]
    fn one_change_alone_is_never_too_large() {
        let shared = sync(1_000_000, 100);
        shared.put(b"r\0big".to_vec(), Value::Ready(vec![0; 10_000]), false);
        assert_eq!(shared.stats.dropped.load(Ordering::Relaxed), 0);
        assert_eq!(shared.stats.pending.load(Ordering::Relaxed), 1);
        shared.put(b"r\0next".to_vec(), Value::Ready(vec![0; 10]), false);
        assert_eq!(shared.stats.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_message_counts_its_topic_payload_and_properties() {
        use mqtt_broker::storage::StoredMessage;
        use mqtt_packets::{MqttString, QoS, UserProperty};
        let mut message = StoredMessage::retained(
            MqttString::new("t/x").unwrap(),
            bytes::Bytes::from(vec![0; 5_000]),
            QoS::AtLeastOnce,
        );
        let small = entry_bytes(b"k", &Change::Put(Value::Message(message.clone())));
        assert!(small >= 5_003, "{small}");
        message.properties.user_properties = (0..100)
            .map(|_| UserProperty {
                name: MqttString::new("n".repeat(100)).unwrap(),
                value: MqttString::new("v".repeat(100)).unwrap(),
            })
            .collect();
        let large = entry_bytes(b"k", &Change::Put(Value::Message(message)));
        assert!(large >= small + 20_000, "{large}");
    }

    #[test]
    fn removing_a_session_visits_only_its_pending_changes() {
        let shared = sync(1_000_000, usize::MAX);
        for n in 0..10_000 {
            shared.put(
                key(b'm', &format!("other-{}", n % 100), n),
                Value::Ready(vec![1]),
                true,
            );
        }
        for n in 0..5 {
            shared.put(key(b'm', "gone", n), Value::Ready(vec![1]), true);
            shared.put(key(b's', "gone", n), Value::Ready(vec![1]), false);
        }
        // A collapsed change leaves a stale index behind: it must not be removed twice.
        shared.put(key(b'm', "gone", 0), Value::Ready(vec![2]), true);
        // Retained messages are not under the session.
        shared.put(b"r\0gone\0x".to_vec(), Value::Ready(vec![1]), false);
        let collapsed = shared.stats.collapsed.load(Ordering::Relaxed);
        shared.pending.lock().visited = 0;

        shared.delete_prefix(crate::keys::client_prefix(b'm', "gone"));
        shared.delete_prefix(crate::keys::client_prefix(b's', "gone"));

        let pending = shared.pending.lock();
        assert!(pending.visited <= 12, "visited {} slots", pending.visited);
        // 10,000 others + the retained message + two prefix deletions.
        assert_eq!(pending.live, 10_003);
        assert_eq!(
            shared.stats.collapsed.load(Ordering::Relaxed) - collapsed,
            10
        );
        let left: Vec<&[u8]> = pending
            .entries
            .iter()
            .flatten()
            .map(|entry| entry.key.as_slice())
            .filter(|key| key.windows(4).any(|w| w == b"gone"))
            .collect();
        assert_eq!(
            left,
            [
                b"r\0gone\0x".as_slice(),
                b"m\0gone\0".as_slice(),
                b"s\0gone\0".as_slice()
            ]
        );
        // The index follows: a later change of a removed key is a new entry.
        drop(pending);
        shared.delete(key(b'm', "gone", 3));
        assert_eq!(shared.pending.lock().live, 10_004);
    }

    #[test]
    fn any_other_prefix_is_removed_by_a_scan() {
        let shared = sync(1_000_000, usize::MAX);
        shared.put(b"r\0a/1".to_vec(), Value::Ready(vec![1]), false);
        shared.put(b"r\0a/2".to_vec(), Value::Ready(vec![1]), false);
        shared.put(b"r\0b".to_vec(), Value::Ready(vec![1]), false);
        shared.delete_prefix(b"r\0a/".to_vec());
        assert_eq!(shared.pending.lock().live, 2);
    }

    #[test]
    fn session_prefixes() {
        assert_eq!(session_prefix(b"m\0a\0\0\0"), Some(b"m\0a\0".as_slice()));
        assert_eq!(session_prefix(b"s\0a\0"), Some(b"s\0a\0".as_slice()));
        assert_eq!(session_prefix(b"c\0a"), None);
        assert_eq!(session_prefix(b"y"), None);
    }

    #[test]
    fn dropped_tickets_are_ranges_that_commits_pass() {
        let mut pending = Pending::default();
        for ticket in [3, 4, 5, 9] {
            pending.record_drop(ticket, None, 0);
        }
        assert_eq!(pending.drops, [(3, 5), (9, 9)]);
        assert!(pending.dropped_within(0, 3));
        assert!(!pending.dropped_within(0, 2));
        assert!(pending.dropped_within(4, 6));
        assert!(!pending.dropped_within(5, 8));
        assert!(pending.dropped_within(5, 9));
        assert!(pending.passed(4));
        assert_eq!(pending.drops, [(5, 5), (9, 9)]);
        assert!(!pending.dropped_within(4, 4));
        assert!(!pending.passed(9));
        assert!(pending.drops.is_empty());
    }
}
