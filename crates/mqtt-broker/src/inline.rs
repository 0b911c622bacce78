//! The inline client: publish and subscribe from the host program, without a network connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use mqtt_packets::{MqttString, Publish, QoS, Subscribe, Subscription, SubscriptionOptions};
use mqtt_topics::ClientId;
use tokio::sync::mpsc;

use crate::server::PublishOutcome;
use crate::session::Session;
use crate::{BrokerError, ClientInfo, Server};

/// What an inline subscription receives: the PUBLISH as a subscriber would.
pub type InlineDelivery = Publish;

/// How many messages an inline subscription buffers before new ones are dropped (and counted).
const INLINE_QUEUE: usize = 1024;

/// Publishes and subscribes from the host program. It bypasses ACL checks and may publish to
/// `$SYS` topics; network clients can do neither.
#[derive(Debug, Clone)]
pub struct InlineClient {
    server: Server,
    info: Arc<ClientInfo>,
}

impl InlineClient {
    pub(crate) fn new(server: Server) -> Self {
        let info = Arc::new(ClientInfo::inline(ClientId::from("$inline")));
        Self { server, info }
    }

    /// Publishes a message; returns how many subscriptions it reached.
    pub fn publish(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        retain: bool,
        qos: QoS,
    ) -> Result<usize, BrokerError> {
        let topic =
            MqttString::new(topic).map_err(|_| BrokerError::InvalidTopic(topic.to_string()))?;
        let mut publish = Publish::new(topic, payload);
        publish.qos = qos;
        publish.retain = retain;
        self.publish_packet(publish)
    }

    /// Publishes a PUBLISH packet as it is (properties included; the packet identifier is
    /// ignored).
    pub fn publish_packet(&self, publish: Publish) -> Result<usize, BrokerError> {
        self.server.start_if_in_runtime();
        match self.server.publish_from(&self.info, publish) {
            PublishOutcome::Delivered(count) => Ok(count),
            PublishOutcome::Ignored => Ok(0),
            // Delivered, but beyond the retained limits: not kept.
            PublishOutcome::NotRetained => Err(BrokerError::Refused(
                mqtt_packets::ReasonCode::QUOTA_EXCEEDED,
            )),
            PublishOutcome::Refused(code) => Err(BrokerError::Refused(code)),
        }
    }

    /// Subscribes to `filter` (shared filters allowed) and returns a stream of the messages.
    /// Retained messages matching the filter are delivered first. Dropping the subscription
    /// unsubscribes.
    pub fn subscribe(&self, filter: &str, qos: QoS) -> Result<InlineSubscription, BrokerError> {
        let inner = &self.server.inner;
        let n = inner.next_inline.fetch_add(1, Ordering::Relaxed);
        let client_id = ClientId::from(format!("$inline-{n}"));
        let (sender, receiver) = mpsc::channel(INLINE_QUEUE);
        let session = Arc::new(Session::new_inline(client_id.clone(), sender));
        let filter_string =
            MqttString::new(filter).map_err(|_| BrokerError::InvalidTopic(filter.to_string()))?;
        let packet_id = mqtt_packets::PacketId::MIN;
        let subscribe = Subscribe::new(
            packet_id,
            vec![Subscription {
                filter: filter_string,
                options: SubscriptionOptions {
                    maximum_qos: qos,
                    ..SubscriptionOptions::default()
                },
            }],
        );
        let info = ClientInfo::inline(client_id.clone());
        let codes = crate::subscribe::subscribe(&self.server, &session, &info, subscribe, |_| {})
            .map_err(|violation| BrokerError::Refused(violation.reason_code()))?;
        if let Some(code) = codes.first().copied().filter(|code| code.is_error()) {
            return Err(BrokerError::Refused(code));
        }
        Ok(InlineSubscription {
            server: self.server.clone(),
            client_id,
            filter: filter.to_string(),
            receiver,
        })
    }

    /// Subscribes and calls `callback` with each message, on a task of its own, until the
    /// returned handle is dropped.
    pub fn subscribe_with(
        &self,
        filter: &str,
        qos: QoS,
        callback: impl Fn(InlineDelivery) + Send + Sync + 'static,
    ) -> Result<InlineCallback, BrokerError> {
        let mut subscription = self.subscribe(filter, qos)?;
        let task = tokio::spawn(async move {
            while let Some(message) = subscription.recv().await {
                callback(message);
            }
        });
        Ok(InlineCallback { task })
    }
}

/// A callback subscription of the inline client ([`InlineClient::subscribe_with`]). Dropping it
/// stops the callback and unsubscribes.
#[derive(Debug)]
pub struct InlineCallback {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for InlineCallback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A subscription of the inline client: a stream of messages. Dropping it unsubscribes.
#[derive(Debug)]
pub struct InlineSubscription {
    server: Server,
    client_id: ClientId,
    filter: String,
    receiver: mpsc::Receiver<InlineDelivery>,
}

impl InlineSubscription {
    /// The next message. Cancel safe.
    pub async fn recv(&mut self) -> Option<InlineDelivery> {
        self.receiver.recv().await
    }

    /// The next message if one is waiting.
    pub fn try_recv(&mut self) -> Option<InlineDelivery> {
        self.receiver.try_recv().ok()
    }

    /// The subscribed filter.
    pub fn filter(&self) -> &str {
        &self.filter
    }
}

impl Drop for InlineSubscription {
    fn drop(&mut self) {
        let inner = &self.server.inner;
        if inner.trie.remove(&self.client_id, &self.filter).is_some() {
            crate::sys::sub(&inner.info.subscriptions, 1);
        }
    }
}
