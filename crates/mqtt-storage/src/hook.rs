//! The storage hook: turns broker events into records for the writer, and hands the stored state
//! back at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use mqtt_broker::hooks::{BoxFuture, HookError, HookEvents};
use mqtt_broker::storage::{
    StorageEvent, StoredClient, StoredFlow, StoredMessage, StoredSubscription, StoredSysInfo,
};
use mqtt_broker::sys::SysInfo;
use mqtt_broker::{Hook, Options};
use mqtt_packets::QoS;
use parking_lot::Mutex;
use tracing::{info, warn};

use crate::backend::{Backend, BackendError};
use crate::keys;
use crate::records::{
    self, ClientRecord, FlowRecord, MessageRecord, SubscriptionRecord, SysRecord,
};
use crate::writer::{self, Dropped, Durability, Shared, StorageStats, Value};

/// Settings of a [`StorageHook`].
#[derive(Debug, Clone)]
pub struct StorageOptions {
    /// When records become durable (default: batched every 5 ms).
    pub durability: Durability,
    /// Changes kept pending at most while the backend is slow or down; past it, new changes are
    /// dropped (counted in [`StorageStats::dropped`]) so the broker's memory stays bounded.
    /// What a drop means for acknowledgements in `sync` mode: see [`StorageHook`]'s
    /// `durable`. Default: 1,000,000.
    pub max_pending: usize,
    /// Estimated bytes kept pending at most, as `max_pending` but counted in bytes: each change
    /// counts its key, the size of the record it will write (topic, payload, properties of a
    /// message) and a fixed overhead of a few hundred bytes (the slot of a pending change and its
    /// index entries). A change that would go past it is dropped, unless nothing else is
    /// pending (a single change is never refused for its size). The batch being written is not
    /// counted, so the storage holds up to about twice this while the backend is slow.
    /// Default: 256 MiB ([`StorageOptions::DEFAULT_MAX_PENDING_BYTES`]).
    pub max_pending_bytes: usize,
}

impl StorageOptions {
    /// The default of [`StorageOptions::max_pending_bytes`]: 256 MiB.
    pub const DEFAULT_MAX_PENDING_BYTES: usize = 256 * 1024 * 1024;
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            durability: Durability::default(),
            max_pending: 1_000_000,
            max_pending_bytes: Self::DEFAULT_MAX_PENDING_BYTES,
        }
    }
}

/// Why the storage could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// The backend failed while the stored state was read.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// How the storage is doing, for `/healthz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StorageHealth {
    /// The backend's name.
    pub backend: &'static str,
    /// Whether the last write succeeded and no dropped change waits for a commit to pass it
    /// (see [`StorageStats::lost`]). After an outage that dropped changes it turns true again by
    /// itself once the backend commits again.
    pub healthy: bool,
    /// The last write error, while failing.
    pub last_error: Option<String>,
    /// Changes waiting for the writer.
    pub pending: u64,
    /// Failed writes since start.
    pub errors: u64,
    /// Changes dropped because too much was pending.
    pub dropped: u64,
}

/// What was read at start, handed to the server once through the `stored_*` methods.
#[derive(Debug, Default)]
struct Snapshot {
    clients: Vec<StoredClient>,
    subscriptions: Vec<StoredSubscription>,
    messages: Vec<StoredMessage>,
    retained: Vec<StoredMessage>,
    sys: Option<StoredSysInfo>,
}

/// The storage hook: persists sessions, subscriptions, queued and inflight messages, inbound QoS
/// 2 state, retained messages and `$SYS` counters through any [`Backend`], and restores them
/// at start.
///
/// Events only queue records (a short lock, no I/O); a writer task commits them in batches
/// (see [`Durability`]). Backend errors are logged, counted in [`StorageStats`] and shown by
/// [`StorageHook::health`]; the writer retries with back-off, and the broker keeps serving.
///
/// # Dropped changes and `durable`
///
/// While the backend is slow or down, changes pile up; past
/// [`StorageOptions::max_pending`] changes or [`StorageOptions::max_pending_bytes`] bytes, new
/// changes are dropped (never written later). Every change, dropped or not, takes the next
/// *ticket*; the writer's *committed* ticket is the last one it has written (or passed, for a
/// dropped one). In [`Durability::Sync`] mode, the future `durable()` returns (the broker waits
/// for it before PUBACK, PUBREC, PUBCOMP and a persistent CONNACK) covers every change queued
/// before the call: its *target* is the ticket at the call. It fails with an error at once:
///
/// - if a change with a ticket in `(committed at the call, target]` was dropped: something
///   the caller may depend on is missing (this may also fail a caller whose own changes were
///   all kept, which only costs it a resend);
/// - or if the calling Tokio task pushed a change that was dropped since that task's last
///   `durable()` call, even if commits have passed it since (reported once per drop, to that
///   task only: the broker pushes the changes an acknowledgement depends on from the
///   connection task that then waits; at most 65,536 tasks are remembered, past that only the
///   first rule applies);
///
/// and otherwise completes with `Ok` once the committed ticket reaches the target (with an
/// error only if the writer stopped). So a drop fails the acknowledgements that depend on it,
/// and no later ones: once the backend commits again, acknowledgements flow again by
/// themselves, and [`StorageHook::health`] is healthy again once a write succeeded and the
/// committed ticket passed every dropped one. The dropped records stay missing from the store
/// until the broker writes them again (a session's record, for example, at its next
/// connection).
///
/// Cancel safety: [`StorageHook::open`] may be dropped before it completes (nothing is started
/// until it has read the stored state); [`StorageHook::flush`] may be dropped at any time.
#[derive(Debug)]
pub struct StorageHook {
    backend: &'static str,
    shared: Arc<Shared>,
    snapshot: Mutex<Snapshot>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl StorageHook {
    /// Reads the stored state from `backend` and starts the writer task (on the current Tokio
    /// runtime). Unreadable records are skipped and counted; records of sessions that no longer
    /// exist are removed.
    pub async fn open<B: Backend>(
        backend: B,
        options: StorageOptions,
    ) -> Result<Self, StorageError> {
        let shared = Shared::new(
            options.durability,
            options.max_pending,
            options.max_pending_bytes,
        );
        let snapshot = load(&backend, &shared).await?;
        info!(
            backend = backend.name(),
            sessions = snapshot.clients.len(),
            subscriptions = snapshot.subscriptions.len(),
            messages = snapshot.messages.len(),
            retained = snapshot.retained.len(),
            "storage opened"
        );
        let name = backend.name();
        let writer = tokio::spawn(writer::run(backend, shared.clone()));
        Ok(Self {
            backend: name,
            shared,
            snapshot: Mutex::new(snapshot),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// The hook's counters.
    pub fn stats(&self) -> Arc<StorageStats> {
        self.shared.stats.clone()
    }

    /// How the storage is doing.
    pub fn health(&self) -> StorageHealth {
        let stats = &self.shared.stats;
        let dropped = stats.dropped.load(Ordering::Relaxed);
        let failing = stats.failing.load(Ordering::Relaxed) || self.shared.drop_pending();
        StorageHealth {
            backend: self.backend,
            healthy: !failing,
            last_error: self.shared.last_error(),
            pending: stats.pending.load(Ordering::Relaxed),
            errors: stats.errors.load(Ordering::Relaxed),
            dropped,
        }
    }

    /// The hook's counters in the Prometheus text format (`mochi_storage_*`, labelled with the
    /// backend), for a metrics endpoint.
    pub fn prometheus_text(&self) -> String {
        use std::fmt::Write as _;
        let stats = &self.shared.stats;
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let healthy =
            u64::from(!stats.failing.load(Ordering::Relaxed) && !self.shared.drop_pending());
        let rows: [(&str, &str, &str, u64); 8] = [
            (
                "mochi_storage_batches_total",
                "counter",
                "Batches committed to the storage backend.",
                load(&stats.batches),
            ),
            (
                "mochi_storage_writes_total",
                "counter",
                "Changes written to the storage backend.",
                load(&stats.writes),
            ),
            (
                "mochi_storage_collapsed_total",
                "counter",
                "Changes that cancelled out before reaching the backend.",
                load(&stats.collapsed),
            ),
            (
                "mochi_storage_errors_total",
                "counter",
                "Failed storage writes (each retried).",
                load(&stats.errors),
            ),
            (
                "mochi_storage_dropped_total",
                "counter",
                "Changes dropped because too much was pending.",
                load(&stats.dropped),
            ),
            (
                "mochi_storage_pending",
                "gauge",
                "Changes waiting for the storage writer.",
                load(&stats.pending),
            ),
            (
                "mochi_storage_pending_bytes",
                "gauge",
                "Estimated bytes of the changes waiting for the storage writer.",
                load(&stats.pending_bytes),
            ),
            (
                "mochi_storage_healthy",
                "gauge",
                "1 while storage writes succeed and no dropped change waits for a commit, else 0.",
                healthy,
            ),
        ];
        let mut out = String::with_capacity(1024);
        for (name, kind, help, value) in rows {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name}{{backend=\"{}\"}} {value}", self.backend);
        }
        out
    }

    /// Waits until every change queued so far is committed (in any durability mode).
    pub async fn flush(&self) {
        let target = self.shared.ticket();
        let mut committed = self.shared.committed.subscribe();
        if *committed.borrow() >= target {
            return;
        }
        self.shared.flush_now();
        let _ = committed.wait_for(|&done| done >= target).await;
    }

    /// Writes what is pending and stops the writer. Waits at most `deadline` (the backend may
    /// be down), then stops the writer where it is: what was not written by then is lost.
    /// Returns whether everything was written. Events after the close are not stored.
    pub async fn close(&self, deadline: std::time::Duration) -> bool {
        let target = self.shared.ticket();
        self.shared.close();
        let writer = self.writer.lock().take();
        let Some(mut writer) = writer else {
            return *self.shared.committed.borrow() >= target;
        };
        match tokio::time::timeout(deadline, &mut writer).await {
            Ok(_) => *self.shared.committed.borrow() >= target,
            Err(_) => {
                writer.abort();
                let _ = writer.await;
                false
            }
        }
    }
}

/// Reads every record and assembles the snapshot; queues the removal of orphans.
async fn load<B: Backend>(backend: &B, shared: &Shared) -> Result<Snapshot, StorageError> {
    let mut snapshot = Snapshot::default();
    let unreadable = |key: &[u8], error: &dyn std::fmt::Display| {
        shared.stats.unreadable.fetch_add(1, Ordering::Relaxed);
        warn!(key = %String::from_utf8_lossy(key).replace('\0', "/"), %error, "unreadable stored record skipped");
    };
    let mut clients: BTreeMap<String, StoredClient> = BTreeMap::new();
    // Sessions whose record cannot be read (e.g. written by a newer version): their other
    // records are left alone, not taken for orphans.
    let mut unreadable_clients: HashSet<String> = HashSet::new();
    for (key, value) in backend.scan_prefix(&keys::kind(keys::CLIENT)).await? {
        match records::decode::<ClientRecord>(&value) {
            Ok(record) => {
                clients.insert(record.client_id.clone(), record.to_stored());
            }
            Err(error) => {
                if let Some((client_id, _)) = keys::split(&key) {
                    unreadable_clients.insert(client_id.to_owned());
                }
                unreadable(&key, &error);
            }
        }
    }
    let orphan = |client_id: &str| !unreadable_clients.contains(client_id);
    for (key, _) in backend.scan_prefix(&keys::kind(keys::INBOUND)).await? {
        let parsed = keys::split(&key).and_then(|(c, part)| Some((c, keys::packet_id_of(part)?)));
        match parsed {
            Some((client_id, id)) => match clients.get_mut(client_id) {
                Some(client) => client.inbound_qos2.push(id),
                None if orphan(client_id) => shared.delete(key.clone()),
                None => {}
            },
            None => unreadable(&key, &"bad key"),
        }
    }
    for (key, value) in backend.scan_prefix(&keys::kind(keys::SUBSCRIPTION)).await? {
        let Some((client_id, _)) = keys::split(&key) else {
            unreadable(&key, &"bad key");
            continue;
        };
        if !clients.contains_key(client_id) {
            if orphan(client_id) {
                shared.delete(key.clone());
            }
            continue;
        }
        match records::decode::<SubscriptionRecord>(&value) {
            Ok(record) => snapshot.subscriptions.push(record.to_stored()),
            Err(error) => unreadable(&key, &error),
        }
    }
    let mut flows: HashMap<(String, u64), StoredFlow> = HashMap::new();
    for (key, value) in backend.scan_prefix(&keys::kind(keys::FLOW)).await? {
        let parsed = keys::split(&key).and_then(|(c, part)| Some((c, keys::seq_of(part)?)));
        match (parsed, records::decode::<FlowRecord>(&value)) {
            (Some((client_id, seq)), Ok(flow)) => {
                flows.insert((client_id.to_string(), seq), flow.to_stored());
            }
            (_, Err(error)) => unreadable(&key, &error),
            (None, _) => unreadable(&key, &"bad key"),
        }
    }
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    for (key, value) in backend.scan_prefix(&keys::kind(keys::MESSAGE)).await? {
        let parsed = keys::split(&key).and_then(|(c, part)| Some((c, keys::seq_of(part)?)));
        let Some((client_id, seq)) = parsed else {
            unreadable(&key, &"bad key");
            continue;
        };
        if !clients.contains_key(client_id) {
            if orphan(client_id) {
                shared.delete(key.clone());
                shared.delete(keys::client_key(keys::FLOW, client_id, &seq.to_be_bytes()));
            }
            continue;
        }
        let id = (client_id.to_string(), seq);
        let flow = flows.get(&id).copied().unwrap_or_default();
        // Present (readable or not): its flow record is not a leftover.
        seen.insert(id);
        match records::decode::<MessageRecord>(&value) {
            Ok(record) => match record.to_stored(flow) {
                Some(message) => snapshot.messages.push(message),
                None => unreadable(&key, &"invalid topic"),
            },
            Err(error) => unreadable(&key, &error),
        }
    }
    // Flow records without their message are leftovers.
    for (client_id, seq) in flows.keys() {
        if !seen.contains(&(client_id.clone(), *seq)) && orphan(client_id) {
            shared.delete(keys::client_key(keys::FLOW, client_id, &seq.to_be_bytes()));
        }
    }
    for (key, value) in backend.scan_prefix(&keys::kind(keys::RETAINED)).await? {
        match records::decode::<MessageRecord>(&value).map(|r| r.to_stored(StoredFlow::Queued)) {
            Ok(Some(message)) => snapshot.retained.push(message),
            Ok(None) => unreadable(&key, &"invalid topic"),
            Err(error) => unreadable(&key, &error),
        }
    }
    if let Some(value) = backend.get(keys::SYS).await? {
        match records::decode::<SysRecord>(&value) {
            Ok(record) => snapshot.sys = Some(record.to_stored()),
            Err(error) => unreadable(keys::SYS, &error),
        }
    }
    snapshot.clients = clients.into_values().collect();
    Ok(snapshot)
}

impl Hook for StorageHook {
    fn id(&self) -> &str {
        "storage"
    }

    fn provides(&self) -> HookEvents {
        let events = HookEvents::ON_STORAGE_EVENT
            | HookEvents::ON_SYS_INFO_TICK
            | HookEvents::STORED_CLIENTS
            | HookEvents::STORED_SUBSCRIPTIONS
            | HookEvents::STORED_INFLIGHT_MESSAGES
            | HookEvents::STORED_RETAINED_MESSAGES
            | HookEvents::STORED_SYS_INFO;
        if self.shared.durability == Durability::Sync {
            events | HookEvents::DURABLE
        } else {
            events
        }
    }

    fn init(&self, _: &Options) -> Result<(), HookError> {
        Ok(())
    }

    fn stop(&self) {
        self.shared.flush_now();
    }

    fn on_storage_event(&self, event: &StorageEvent<'_>) {
        let shared = &self.shared;
        match event {
            StorageEvent::Session(client) => shared.put(
                keys::named(keys::CLIENT, &client.client_id),
                Value::Ready(records::encode(&ClientRecord::from_stored(client))),
                false,
            ),
            StorageEvent::SessionEnded { client_id } => {
                shared.delete(keys::named(keys::CLIENT, client_id));
                for kind in [keys::SUBSCRIPTION, keys::MESSAGE, keys::FLOW, keys::INBOUND] {
                    shared.delete_prefix(keys::client_prefix(kind, client_id));
                }
            }
            StorageEvent::Subscribed(subscription) => shared.put(
                keys::client_key(
                    keys::SUBSCRIPTION,
                    &subscription.client_id,
                    subscription.filter.as_bytes(),
                ),
                Value::Ready(records::encode(&SubscriptionRecord::from_stored(
                    subscription,
                ))),
                false,
            ),
            StorageEvent::Unsubscribed { client_id, filter } => shared.delete(keys::client_key(
                keys::SUBSCRIPTION,
                client_id,
                filter.as_bytes(),
            )),
            StorageEvent::MessageQueued(message) => {
                let Some(client_id) = message.client_id.as_deref() else {
                    return;
                };
                // Encoded by the writer, if the message is still queued then.
                let message = (*message).clone();
                shared.put(
                    keys::client_key(keys::MESSAGE, client_id, &message.seq.to_be_bytes()),
                    Value::Message(message),
                    true,
                );
            }
            StorageEvent::MessageFlow {
                client_id,
                seq,
                flow,
            } => {
                let key = keys::client_key(keys::FLOW, client_id, &seq.to_be_bytes());
                match FlowRecord::from_stored(*flow) {
                    Some(record) => shared.put(
                        key,
                        Value::Flow(record),
                        matches!(flow, StoredFlow::Published(_)),
                    ),
                    None => shared.delete(key),
                }
            }
            StorageEvent::MessageRemoved {
                client_id,
                seq,
                qos,
            } => {
                shared.delete(keys::client_key(
                    keys::MESSAGE,
                    client_id,
                    &seq.to_be_bytes(),
                ));
                if *qos == QoS::ExactlyOnce {
                    shared.delete(keys::client_key(keys::FLOW, client_id, &seq.to_be_bytes()));
                }
            }
            StorageEvent::InboundQos2 {
                client_id,
                packet_id,
            } => shared.put(
                keys::client_key(keys::INBOUND, client_id, &packet_id.to_be_bytes()),
                Value::Ready(Vec::new()),
                true,
            ),
            StorageEvent::InboundQos2Released {
                client_id,
                packet_id,
            } => shared.delete(keys::client_key(
                keys::INBOUND,
                client_id,
                &packet_id.to_be_bytes(),
            )),
            StorageEvent::RetainedSet(message) => shared.put(
                keys::named(keys::RETAINED, message.topic.as_str()),
                Value::Ready(records::encode(&MessageRecord::from_stored(message))),
                false,
            ),
            StorageEvent::RetainedCleared { topic } => {
                shared.delete(keys::named(keys::RETAINED, topic));
            }
            _ => {}
        }
    }

    fn on_sys_info_tick(&self, info: &SysInfo) {
        let load = |counter: &std::sync::atomic::AtomicU64| counter.load(Ordering::Relaxed);
        let record = SysRecord::new(
            load(&info.messages_received),
            load(&info.messages_sent),
            load(&info.bytes_received),
            load(&info.bytes_sent),
        );
        self.shared.put(
            keys::SYS.to_vec(),
            Value::Ready(records::encode(&record)),
            false,
        );
    }

    fn durable(&self) -> Option<BoxFuture<'static, Result<(), HookError>>> {
        if self.shared.durability != Durability::Sync {
            return None;
        }
        // The rule is documented on `StorageHook` ("Dropped changes and `durable`").
        let target = match self.shared.durable_target() {
            Ok((target, committed)) if committed >= target => return None,
            Ok((target, _)) => target,
            Err(dropped) => {
                let message = match dropped {
                    Dropped::ByThisTask => {
                        "a change this acknowledgement depends on was dropped \
                         (max_pending or max_pending_bytes reached)"
                    }
                    Dropped::InWindow => {
                        "a change queued since the last commit was dropped \
                         (max_pending or max_pending_bytes reached)"
                    }
                };
                return Some(Box::pin(std::future::ready(Err(HookError::new(
                    "storage", message,
                )))));
            }
        };
        let mut committed = self.shared.committed.subscribe();
        Some(Box::pin(async move {
            committed
                .wait_for(|&done| done >= target)
                .await
                .map(|_| ())
                .map_err(|_| HookError::new("storage", "the storage writer stopped"))
        }))
    }

    fn stored_clients(&self) -> Result<Vec<StoredClient>, HookError> {
        Ok(std::mem::take(&mut self.snapshot.lock().clients))
    }

    fn stored_subscriptions(&self) -> Result<Vec<StoredSubscription>, HookError> {
        Ok(std::mem::take(&mut self.snapshot.lock().subscriptions))
    }

    fn stored_inflight_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok(std::mem::take(&mut self.snapshot.lock().messages))
    }

    fn stored_retained_messages(&self) -> Result<Vec<StoredMessage>, HookError> {
        Ok(std::mem::take(&mut self.snapshot.lock().retained))
    }

    fn stored_sys_info(&self) -> Result<Option<StoredSysInfo>, HookError> {
        Ok(self.snapshot.lock().sys.take())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::backend::{Batch, BoxFuture, KeyValues};
    use crate::memory::MemoryBackend;

    const TIMEOUT: Duration = Duration::from_secs(30);

    /// A memory backend whose writes wait until the gate is open; counts the writes started.
    #[derive(Clone)]
    struct Gated {
        inner: MemoryBackend,
        open: watch::Sender<bool>,
        started: watch::Sender<u64>,
    }

    impl Gated {
        fn new() -> Self {
            Self {
                inner: MemoryBackend::new(),
                open: watch::channel(false).0,
                started: watch::channel(0).0,
            }
        }

        async fn started(&self, writes: u64) {
            let mut started = self.started.subscribe();
            tokio::time::timeout(TIMEOUT, started.wait_for(|&n| n >= writes))
                .await
                .expect("the writer started writing")
                .unwrap();
        }
    }

    impl Backend for Gated {
        fn name(&self) -> &'static str {
            "gated"
        }

        fn write(&self, batch: Batch) -> BoxFuture<'_, Result<(), BackendError>> {
            Box::pin(async move {
                self.started.send_modify(|n| *n += 1);
                let mut open = self.open.subscribe();
                let _ = open.wait_for(|&open| open).await;
                self.inner.write(batch).await
            })
        }

        fn get(&self, key: &[u8]) -> BoxFuture<'_, Result<Option<Vec<u8>>, BackendError>> {
            self.inner.get(key)
        }

        fn scan_prefix(&self, prefix: &[u8]) -> BoxFuture<'_, Result<KeyValues, BackendError>> {
            self.inner.scan_prefix(prefix)
        }
    }

    fn inbound(hook: &StorageHook, client_id: &str, packet_id: u16) {
        hook.on_storage_event(&StorageEvent::InboundQos2 {
            client_id,
            packet_id,
        });
    }

    /// Waits (letting the other tasks run) until `done`.
    async fn until(done: impl Fn() -> bool) {
        tokio::time::timeout(TIMEOUT, async {
            while !done() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the condition came true");
    }

    /// What `durable()` gives, awaited.
    async fn durable(hook: &StorageHook) -> Result<(), HookError> {
        match hook.durable() {
            None => Ok(()),
            Some(wait) => tokio::time::timeout(TIMEOUT, wait)
                .await
                .expect("durable completes"),
        }
    }

    /// In its own task: pushes `count` changes, then on each signal reports what `durable()`
    /// gives in this task.
    fn client(
        hook: Arc<StorageHook>,
        name: &'static str,
        count: u16,
    ) -> (
        tokio::sync::mpsc::Sender<()>,
        tokio::sync::mpsc::Receiver<Result<(), HookError>>,
    ) {
        let (ask, mut asked) = tokio::sync::mpsc::channel::<()>(1);
        let (answer, answers) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            for packet_id in 1..=count {
                inbound(&hook, name, packet_id);
            }
            while asked.recv().await.is_some() {
                if answer.send(durable(&hook).await).await.is_err() {
                    break;
                }
            }
        });
        (ask, answers)
    }

    async fn ask(
        client: &mut (
            tokio::sync::mpsc::Sender<()>,
            tokio::sync::mpsc::Receiver<Result<(), HookError>>,
        ),
    ) -> Result<(), HookError> {
        client.0.send(()).await.unwrap();
        tokio::time::timeout(TIMEOUT, client.1.recv())
            .await
            .expect("the client answers")
            .unwrap()
    }

    #[tokio::test]
    async fn a_drop_fails_only_what_depends_on_it_and_storage_heals() {
        let backend = Gated::new();
        let options = StorageOptions {
            durability: Durability::Sync,
            max_pending: 4,
            ..StorageOptions::default()
        };
        let hook = Arc::new(StorageHook::open(backend.clone(), options).await.unwrap());
        // The writer takes a first change and hangs in the backend (as during an outage).
        inbound(&hook, "first", 1);
        backend.started(1).await;
        // "a" fills what may be pending; "b"'s change is dropped.
        let mut a = client(hook.clone(), "a", 4);
        until(|| hook.stats().pending.load(Ordering::Relaxed) == 4).await;
        let mut b = client(hook.clone(), "b", 1);
        until(|| hook.stats().dropped.load(Ordering::Relaxed) == 1).await;
        let mut c = client(hook.clone(), "c", 0);
        assert!(ask(&mut a).await.is_err(), "a drop since the last commit");
        assert!(ask(&mut c).await.is_err(), "a drop since the last commit");
        assert_eq!(hook.stats().dropped.load(Ordering::Relaxed), 1);
        assert!(!hook.health().healthy);

        // The backend is back: everything pending is committed, past the drop.
        backend.open.send_replace(true);
        tokio::time::timeout(TIMEOUT, hook.flush()).await.unwrap();
        // Only the task whose change was dropped is refused, once.
        assert!(ask(&mut b).await.is_err(), "b's own change was dropped");
        assert!(ask(&mut b).await.is_ok(), "reported once");
        assert!(ask(&mut a).await.is_ok(), "nothing of a was dropped");
        assert!(ask(&mut c).await.is_ok());
        let health = hook.health();
        assert!(health.healthy, "{health:?}");
        assert!(
            hook.prometheus_text()
                .contains("mochi_storage_healthy{backend=\"gated\"} 1")
        );
        // New changes are acknowledged again.
        inbound(&hook, "later", 1);
        assert!(durable(&hook).await.is_ok());
        let stored = backend.inner.scan_prefix(b"i\0").await.unwrap();
        assert_eq!(stored.len(), 1 + 4 + 1, "b's change is missing: {stored:?}");
        hook.close(TIMEOUT).await;
    }

    #[tokio::test]
    async fn a_drop_that_a_commit_passed_still_fails_its_own_task() {
        let backend = Gated::new();
        let options = StorageOptions {
            durability: Durability::Sync,
            max_pending: 1,
            ..StorageOptions::default()
        };
        let hook = Arc::new(StorageHook::open(backend.clone(), options).await.unwrap());
        inbound(&hook, "first", 1);
        backend.started(1).await;
        // "a" pushes two changes: the second is dropped.
        let mut a = client(hook.clone(), "a", 2);
        let mut c = client(hook.clone(), "c", 0);
        // "a" pushed before the backend comes back.
        until(|| hook.stats().dropped.load(Ordering::Relaxed) == 1).await;
        backend.open.send_replace(true);
        tokio::time::timeout(TIMEOUT, hook.flush()).await.unwrap();
        // The commit passed the drop before "a" asked: the window is empty, yet "a" is told.
        assert!(ask(&mut c).await.is_ok());
        assert!(ask(&mut a).await.is_err());
        assert!(ask(&mut a).await.is_ok());
        hook.close(TIMEOUT).await;
    }

    #[tokio::test]
    async fn batched_mode_has_nothing_to_wait_for() {
        let hook = StorageHook::open(MemoryBackend::new(), StorageOptions::default())
            .await
            .unwrap();
        inbound(&hook, "a", 1);
        assert!(hook.durable().is_none());
        assert_eq!(
            StorageOptions::default().max_pending_bytes,
            256 * 1024 * 1024
        );
        hook.close(TIMEOUT).await;
    }
}
