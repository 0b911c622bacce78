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
        }
    }
}

pub(crate) fn add(counter: &AtomicU64, value: u64) {
    counter.fetch_add(value, Ordering::Relaxed);
}

pub(crate) fn sub(counter: &AtomicU64, value: u64) {
    counter.fetch_sub(value, Ordering::Relaxed);
}
