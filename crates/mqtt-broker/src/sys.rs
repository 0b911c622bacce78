//! Server counters: what `$SYS` topics and metrics report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Live counters of the server. All fields are atomics updated on the packet path with relaxed
/// ordering; read them with [`SysInfo::snapshot`].
#[derive(Debug, Default)]
pub struct SysInfo {
    /// Connections accepted (including those refused later).
    pub connections_total: AtomicU64,
    /// Clients connected now.
    pub clients_connected: AtomicU64,
    /// Sessions known (connected or not).
    pub sessions: AtomicU64,
    /// Connections closed before or at CONNECT (timeout, garbage, refused).
    pub connections_refused: AtomicU64,
    /// PUBLISH packets received.
    pub messages_received: AtomicU64,
    /// PUBLISH packets sent.
    pub messages_sent: AtomicU64,
    /// Messages dropped (queue full, expired, too large, offline QoS 0).
    pub messages_dropped: AtomicU64,
    /// Bytes read from clients.
    pub bytes_received: AtomicU64,
    /// Bytes written to clients.
    pub bytes_sent: AtomicU64,
    /// Packets read.
    pub packets_received: AtomicU64,
    /// Packets written.
    pub packets_sent: AtomicU64,
    /// Retained messages held.
    pub retained: AtomicU64,
    /// Subscriptions held.
    pub subscriptions: AtomicU64,
    /// Connections ended for a malformed packet or protocol error.
    pub protocol_errors: AtomicU64,
    /// Seconds since the Unix epoch when the server started.
    pub started: AtomicU64,
    /// The most clients connected at once.
    pub clients_maximum: AtomicU64,
    /// QoS 1/2 messages in flight to clients (refreshed every `$SYS` interval).
    pub inflight: AtomicU64,
    /// Resident memory of the process in bytes, where the platform tells (refreshed every `$SYS`
    /// interval).
    pub memory: AtomicU64,
    /// Tasks alive in the runtime (refreshed every `$SYS` interval).
    pub tasks: AtomicU64,
    /// PUBLISH packets received, by QoS (0, 1, 2).
    pub messages_received_by_qos: [AtomicU64; 3],
    /// PUBLISH packets sent, by QoS (0, 1, 2).
    pub messages_sent_by_qos: [AtomicU64; 3],
    /// Messages dropped, by reason, in the order of [`DROP_REASONS`].
    pub messages_dropped_by_reason: [AtomicU64; 6],
    /// Connections not being read now because a subscriber they publish to has a full queue
    /// (flow control).
    pub publishers_waiting: AtomicU64,
    /// Times a connection stopped being read because a subscriber's queue was full.
    pub publisher_waits: AtomicU64,
    /// Subscribers declared stuck: a full queue and no progress for the slow-subscriber timeout.
    pub slow_subscribers: AtomicU64,
    /// Packets, subscriptions, sessions and retained messages refused because they went beyond a
    /// configured limit (user properties, topic filters, subscriptions per client, alias bytes,
    /// sessions, retained count or bytes).
    pub limits_exceeded: AtomicU64,
    /// Connections closed because acknowledgements held for storage were not committed within
    /// `Options::durable_ack_timeout`.
    pub durable_ack_timeouts: AtomicU64,
    /// Messages waiting in session queues (refreshed every `$SYS` interval).
    pub queued: AtomicU64,
    /// Errors reported by hooks (a refused `init`, a failed restore).
    pub hook_errors: AtomicU64,
    /// Errors reported by storage hooks through [`SysInfo::record_storage_error`].
    pub storage_errors: AtomicU64,
}

/// The names of the drop reasons, as counted in [`SysInfo::messages_dropped_by_reason`].
pub const DROP_REASONS: [&str; 6] = [
    "queue_full",
    "expired",
    "too_large",
    "packet_ids_exhausted",
    "offline_qos0",
    "subscriber_stuck",
];

/// The `$SYS` topic of each drop reason's counter, in the order of [`DROP_REASONS`].
const DROP_REASON_TOPICS: [&str; 6] = [
    "$SYS/broker/messages/dropped/queue_full",
    "$SYS/broker/messages/dropped/expired",
    "$SYS/broker/messages/dropped/too_large",
    "$SYS/broker/messages/dropped/packet_ids_exhausted",
    "$SYS/broker/messages/dropped/offline_qos0",
    "$SYS/broker/messages/dropped/subscriber_stuck",
];

pub(crate) fn drop_index(reason: crate::hooks::DropReason) -> usize {
    use crate::hooks::DropReason;
    match reason {
        DropReason::QueueFull => 0,
        DropReason::Expired => 1,
        DropReason::TooLargeForClient => 2,
        DropReason::PacketIdsExhausted => 3,
        DropReason::ClientOffline => 4,
        DropReason::SubscriberStuck => 5,
    }
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SysSnapshot {
    /// See [`SysInfo::connections_total`].
    pub connections_total: u64,
    /// See [`SysInfo::clients_connected`].
    pub clients_connected: u64,
    /// See [`SysInfo::sessions`].
    pub sessions: u64,
    /// See [`SysInfo::connections_refused`].
    pub connections_refused: u64,
    /// See [`SysInfo::messages_received`].
    pub messages_received: u64,
    /// See [`SysInfo::messages_sent`].
    pub messages_sent: u64,
    /// See [`SysInfo::messages_dropped`].
    pub messages_dropped: u64,
    /// See [`SysInfo::bytes_received`].
    pub bytes_received: u64,
    /// See [`SysInfo::bytes_sent`].
    pub bytes_sent: u64,
    /// See [`SysInfo::packets_received`].
    pub packets_received: u64,
    /// See [`SysInfo::packets_sent`].
    pub packets_sent: u64,
    /// See [`SysInfo::retained`].
    pub retained: u64,
    /// See [`SysInfo::subscriptions`].
    pub subscriptions: u64,
    /// See [`SysInfo::protocol_errors`].
    pub protocol_errors: u64,
    /// See [`SysInfo::started`].
    pub started: u64,
    /// See [`SysInfo::clients_maximum`].
    pub clients_maximum: u64,
    /// See [`SysInfo::inflight`].
    pub inflight: u64,
    /// See [`SysInfo::memory`].
    pub memory: u64,
    /// See [`SysInfo::tasks`].
    pub tasks: u64,
    /// See [`SysInfo::messages_received_by_qos`].
    pub messages_received_by_qos: [u64; 3],
    /// See [`SysInfo::messages_sent_by_qos`].
    pub messages_sent_by_qos: [u64; 3],
    /// See [`SysInfo::messages_dropped_by_reason`] (names in [`DROP_REASONS`]).
    pub messages_dropped_by_reason: [u64; 6],
    /// See [`SysInfo::publishers_waiting`].
    pub publishers_waiting: u64,
    /// See [`SysInfo::publisher_waits`].
    pub publisher_waits: u64,
    /// See [`SysInfo::slow_subscribers`].
    pub slow_subscribers: u64,
    /// See [`SysInfo::limits_exceeded`].
    pub limits_exceeded: u64,
    /// See [`SysInfo::durable_ack_timeouts`].
    pub durable_ack_timeouts: u64,
    /// See [`SysInfo::queued`].
    pub queued: u64,
    /// See [`SysInfo::hook_errors`].
    pub hook_errors: u64,
    /// See [`SysInfo::storage_errors`].
    pub storage_errors: u64,
}

impl SysInfo {
    pub(crate) fn new() -> Self {
        let info = Self::default();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        info.started.store(now, Ordering::Relaxed);
        info
    }

    /// Counts a storage error (for storage hooks: a failed write or read is logged by the hook and
    /// counted here, so that metrics and health checks see it).
    pub fn record_storage_error(&self) {
        self.storage_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> SysSnapshot {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SysSnapshot {
            connections_total: get(&self.connections_total),
            clients_connected: get(&self.clients_connected),
            sessions: get(&self.sessions),
            connections_refused: get(&self.connections_refused),
            messages_received: get(&self.messages_received),
            messages_sent: get(&self.messages_sent),
            messages_dropped: get(&self.messages_dropped),
            bytes_received: get(&self.bytes_received),
            bytes_sent: get(&self.bytes_sent),
            packets_received: get(&self.packets_received),
            packets_sent: get(&self.packets_sent),
            retained: get(&self.retained),
            subscriptions: get(&self.subscriptions),
            protocol_errors: get(&self.protocol_errors),
            started: get(&self.started),
            clients_maximum: get(&self.clients_maximum),
            inflight: get(&self.inflight),
            memory: get(&self.memory),
            tasks: get(&self.tasks),
            messages_received_by_qos: self.messages_received_by_qos.each_ref().map(get),
            messages_sent_by_qos: self.messages_sent_by_qos.each_ref().map(get),
            messages_dropped_by_reason: self.messages_dropped_by_reason.each_ref().map(get),
            publishers_waiting: get(&self.publishers_waiting),
            publisher_waits: get(&self.publisher_waits),
            slow_subscribers: get(&self.slow_subscribers),
            limits_exceeded: get(&self.limits_exceeded),
            durable_ack_timeouts: get(&self.durable_ack_timeouts),
            queued: get(&self.queued),
            hook_errors: get(&self.hook_errors),
            storage_errors: get(&self.storage_errors),
        }
    }
}

/// The `$SYS` topics and their values, as the original broker publishes them (retained, decimal
/// strings).
pub(crate) fn topics(snapshot: &SysSnapshot, now_unix: u64) -> Vec<(&'static str, String)> {
    let uptime = now_unix.saturating_sub(snapshot.started);
    let mut topics = vec![
        ("$SYS/broker/version", env!("CARGO_PKG_VERSION").to_string()),
        ("$SYS/broker/time", now_unix.to_string()),
        ("$SYS/broker/uptime", uptime.to_string()),
        ("$SYS/broker/started", snapshot.started.to_string()),
        (
            "$SYS/broker/load/bytes/received",
            snapshot.bytes_received.to_string(),
        ),
        (
            "$SYS/broker/load/bytes/sent",
            snapshot.bytes_sent.to_string(),
        ),
        (
            "$SYS/broker/clients/connected",
            snapshot.clients_connected.to_string(),
        ),
        (
            "$SYS/broker/clients/disconnected",
            snapshot
                .sessions
                .saturating_sub(snapshot.clients_connected)
                .to_string(),
        ),
        (
            "$SYS/broker/clients/maximum",
            snapshot.clients_maximum.to_string(),
        ),
        ("$SYS/broker/clients/total", snapshot.sessions.to_string()),
        (
            "$SYS/broker/packets/received",
            snapshot.packets_received.to_string(),
        ),
        (
            "$SYS/broker/packets/sent",
            snapshot.packets_sent.to_string(),
        ),
        (
            "$SYS/broker/messages/received",
            snapshot.messages_received.to_string(),
        ),
        (
            "$SYS/broker/messages/sent",
            snapshot.messages_sent.to_string(),
        ),
        (
            "$SYS/broker/messages/dropped",
            snapshot.messages_dropped.to_string(),
        ),
        (
            "$SYS/broker/clients/publishers_waiting",
            snapshot.publishers_waiting.to_string(),
        ),
        (
            "$SYS/broker/clients/publisher_waits",
            snapshot.publisher_waits.to_string(),
        ),
        (
            "$SYS/broker/clients/slow_subscribers",
            snapshot.slow_subscribers.to_string(),
        ),
        (
            "$SYS/broker/limits_exceeded",
            snapshot.limits_exceeded.to_string(),
        ),
        (
            "$SYS/broker/storage/ack_timeouts",
            snapshot.durable_ack_timeouts.to_string(),
        ),
        (
            "$SYS/broker/messages/inflight",
            snapshot.inflight.to_string(),
        ),
        ("$SYS/broker/retained", snapshot.retained.to_string()),
        (
            "$SYS/broker/subscriptions",
            snapshot.subscriptions.to_string(),
        ),
        ("$SYS/broker/system/memory", snapshot.memory.to_string()),
        ("$SYS/broker/system/threads", snapshot.tasks.to_string()),
    ];
    topics.extend(
        DROP_REASON_TOPICS.iter().copied().zip(
            snapshot
                .messages_dropped_by_reason
                .map(|count| count.to_string()),
        ),
    );
    topics
}

/// Resident memory in bytes from `/proc/self/statm` (Linux); 0 elsewhere.
pub(crate) async fn resident_memory() -> u64 {
    let Ok(statm) = tokio::fs::read_to_string("/proc/self/statm").await else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|rss| rss.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

pub(crate) fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

pub(crate) fn sub(counter: &AtomicU64, value: u64) {
    counter.fetch_sub(value, Ordering::Relaxed);
}
