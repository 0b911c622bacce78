//! What the server tells a storage hook ([`StorageEvent`], through
//! [`Hook::on_storage_event`](crate::Hook::on_storage_event)), and the records a storage hook
//! hands back at start (`Hook::stored_*`), from which the server restores sessions,
//! subscriptions, queued and inflight messages and retained messages.
//!
//! Only sessions that outlive their connection (a Session Expiry Interval above 0, or a 3.x
//! client with Clean Session 0) produce session, subscription and message events: a session
//! that ends with its connection has nothing to restore. Messages are identified within their
//! session by a sequence number that increases in queue order, so a store that keys them by it
//! returns them in order.

use bytes::Bytes;
use mqtt_packets::{MqttString, Protocol, PublishProperties, QoS, SubscriptionOptions, Will};
use tokio::time::Instant;

use crate::message::{Delivery, Message};
use crate::session::SessionState;

/// A session to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredClient {
    /// The client identifier.
    pub client_id: String,
    /// The protocol level of its last connection.
    pub protocol: Protocol,
    /// The Session Expiry Interval in force, in seconds.
    pub session_expiry_interval: u32,
    /// The User Name of its last connection.
    pub username: Option<String>,
    /// Seconds since the Unix epoch at which the session expires, when its client is
    /// disconnected; `None` while connected (the expiry clock starts at disconnection, or at a
    /// restart) or when it never expires.
    pub expires_at_unix: Option<u64>,
    /// The Will of the connection, while one is pending (the client is connected, or its Will
    /// Delay has not passed). A restored pending Will is published after its delay, as if the
    /// connection had closed at the restart.
    pub will: Option<Will>,
    /// Client packet ids of QoS 2 messages acknowledged with PUBREC and awaiting PUBREL.
    pub inbound_qos2: Vec<u16>,
}

impl StoredClient {
    /// A stored session.
    pub fn new(
        client_id: impl Into<String>,
        protocol: Protocol,
        session_expiry_interval: u32,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            protocol,
            session_expiry_interval,
            username: None,
            expires_at_unix: None,
            will: None,
            inbound_qos2: Vec::new(),
        }
    }
}

/// A subscription to restore.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSubscription {
    /// The subscriber.
    pub client_id: String,
    /// The filter as subscribed (shared filters with their `$share/` prefix).
    pub filter: String,
    /// The granted options.
    pub options: SubscriptionOptions,
    /// The Subscription Identifier.
    pub identifier: Option<u32>,
}

impl StoredSubscription {
    /// A stored subscription.
    pub fn new(
        client_id: impl Into<String>,
        filter: impl Into<String>,
        options: SubscriptionOptions,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            filter: filter.into(),
            options,
            identifier: None,
        }
    }
}

/// Where a message queued for a session stands in its QoS flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StoredFlow {
    /// Queued, not sent yet (or a retained message).
    #[default]
    Queued,
    /// PUBLISH sent with this packet id; waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    Published(u16),
    /// PUBREL sent with this packet id; waiting for PUBCOMP.
    Released(u16),
}

/// A message to restore: retained (no `client_id`), or queued for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// The session it is queued for; `None` for a retained message.
    pub client_id: Option<String>,
    /// Its place in the session's queue (increasing in queue order); 0 for retained messages.
    pub seq: u64,
    /// Where its QoS flow stands.
    pub flow: StoredFlow,
    /// The Subscription Identifiers to send with it.
    pub subscription_identifiers: Vec<u32>,
    /// The topic.
    pub topic: MqttString,
    /// The payload.
    pub payload: Bytes,
    /// The QoS.
    pub qos: QoS,
    /// The RETAIN flag.
    pub retain: bool,
    /// The properties to forward.
    pub properties: PublishProperties,
    /// Seconds since the Unix epoch at which it expires, if it does.
    pub expires_at_unix: Option<u64>,
}

impl StoredMessage {
    /// A stored retained message.
    pub fn retained(topic: MqttString, payload: Bytes, qos: QoS) -> Self {
        Self {
            client_id: None,
            seq: 0,
            flow: StoredFlow::Queued,
            subscription_identifiers: Vec::new(),
            topic,
            payload,
            qos,
            retain: true,
            properties: PublishProperties::default(),
            expires_at_unix: None,
        }
    }
}

/// `$SYS` counters to restore.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredSysInfo {
    /// Messages received since the first start.
    pub messages_received: u64,
    /// Messages sent since the first start.
    pub messages_sent: u64,
    /// Bytes received since the first start.
    pub bytes_received: u64,
    /// Bytes sent since the first start.
    pub bytes_sent: u64,
}

/// A change of the state a storage hook mirrors, from
/// [`Hook::on_storage_event`](crate::Hook::on_storage_event). Events of one session arrive in
/// the order they happened; a hook that applies them in that order mirrors the session exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StorageEvent<'a> {
    /// A session that outlives its connection was created, resumed or changed (connection,
    /// disconnection, Will sent): store or replace its record.
    Session(&'a StoredClient),
    /// The session ended (expired, started clean, or ended with its connection): forget it and
    /// everything stored under it (subscriptions, messages, inbound QoS 2 ids).
    SessionEnded {
        /// The client identifier.
        client_id: &'a str,
    },
    /// A subscription was added or replaced (granted ones only).
    Subscribed(&'a StoredSubscription),
    /// A subscription was removed.
    Unsubscribed {
        /// The subscriber.
        client_id: &'a str,
        /// The filter as subscribed.
        filter: &'a str,
    },
    /// A QoS 1/2 message was queued for a session (`flow` is [`StoredFlow::Queued`]).
    MessageQueued(&'a StoredMessage),
    /// A queued QoS 2 message moved on in its flow (sent with a packet id, or PUBREL sent), so
    /// that after a restart it is resent with the same packet id and delivered exactly once.
    /// (A QoS 1 message has no flow event: after a restart it is sent again as a new message,
    /// which at least once allows.)
    MessageFlow {
        /// The session.
        client_id: &'a str,
        /// The message's sequence number.
        seq: u64,
        /// Where it stands now.
        flow: StoredFlow,
    },
    /// A queued message left the session: acknowledged, expired, dropped or given to another
    /// member of a shared subscription.
    MessageRemoved {
        /// The session.
        client_id: &'a str,
        /// The message's sequence number.
        seq: u64,
        /// Its QoS (only QoS 2 messages have flow records).
        qos: QoS,
    },
    /// A QoS 2 message from the client was acknowledged with PUBREC: its packet id awaits
    /// PUBREL, and a resent PUBLISH with it must not be delivered again [MQTT-4.3.3-10].
    InboundQos2 {
        /// The client.
        client_id: &'a str,
        /// The client's packet id.
        packet_id: u16,
    },
    /// PUBREL arrived for an inbound QoS 2 packet id: the id is free again.
    InboundQos2Released {
        /// The client.
        client_id: &'a str,
        /// The client's packet id.
        packet_id: u16,
    },
    /// A retained message was set or replaced (never for `$` topics).
    RetainedSet(&'a StoredMessage),
    /// The retained message of a topic was cleared or expired.
    RetainedCleared {
        /// The topic.
        topic: &'a str,
    },
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// The wall-clock expiry of a message that expires at `at` on the runtime's clock.
fn expiry_unix(at: Option<Instant>) -> Option<u64> {
    at.map(|at| {
        let left = at.saturating_duration_since(Instant::now());
        unix_now() + left.as_secs() + u64::from(left.subsec_nanos() > 0)
    })
}

/// The record of a session, as it stands; `disconnected` when its client just left (the expiry
/// clock starts).
pub(crate) fn stored_client(
    client_id: &str,
    state: &SessionState,
    disconnected: bool,
) -> StoredClient {
    let mut stored = StoredClient::new(client_id, state.protocol, state.expiry_interval);
    stored.username = state
        .client
        .as_ref()
        .and_then(|client| client.username.as_ref().map(|u| u.as_str().to_string()));
    if disconnected && state.expiry_interval != u32::MAX {
        stored.expires_at_unix = Some(unix_now() + u64::from(state.expiry_interval));
    }
    stored.will = state.will.as_deref().cloned();
    stored.inbound_qos2 = state.inbound_qos2.iter().copied().collect();
    stored.inbound_qos2.sort_unstable();
    stored
}

/// The record of a message queued for a session.
pub(crate) fn stored_delivery(client_id: &str, delivery: &Delivery) -> StoredMessage {
    let message = &delivery.message;
    StoredMessage {
        client_id: Some(client_id.to_string()),
        seq: delivery.seq,
        flow: StoredFlow::Queued,
        subscription_identifiers: delivery
            .subscription_identifiers
            .iter()
            .map(|id| id.get())
            .collect(),
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: delivery.qos,
        retain: delivery.retain,
        properties: message.properties.clone(),
        expires_at_unix: expiry_unix(message.expires_at),
    }
}

/// The record of a retained message.
pub(crate) fn stored_retained(message: &Message) -> StoredMessage {
    StoredMessage {
        client_id: None,
        seq: 0,
        flow: StoredFlow::Queued,
        subscription_identifiers: Vec::new(),
        topic: message.topic.clone(),
        payload: message.payload.clone(),
        qos: message.qos,
        retain: true,
        properties: message.properties.clone(),
        expires_at_unix: expiry_unix(message.expires_at),
    }
}
