//! Records a storage hook hands back at start (`Hook::stored_*`), from which the server restores
//! sessions, subscriptions, queued messages and retained messages.

use bytes::Bytes;
use mqtt_packets::{Protocol, PublishProperties, QoS, SubscriptionOptions};

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

/// A message to restore: retained (no `client_id`), or queued for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// The session it is queued for; `None` for a retained message.
    pub client_id: Option<String>,
    /// The topic.
    pub topic: String,
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
    pub fn retained(topic: impl Into<String>, payload: Bytes, qos: QoS) -> Self {
        Self {
            client_id: None,
            topic: topic.into(),
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
