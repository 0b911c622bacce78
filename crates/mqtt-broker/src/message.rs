//! An application message inside the broker, shared by every delivery of it.

use std::num::NonZeroU32;
use std::sync::Arc;

use bytes::Bytes;
use mqtt_packets::{MqttString, PacketId, Publish, PublishProperties, PublishRef, QoS};
use mqtt_topics::ClientId;
use tokio::time::Instant;

/// A message as published, shared (behind an `Arc`) by its retained copy and every subscriber's
/// queue: fan-out clones a pointer, never the payload.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    pub(crate) topic: MqttString,
    pub(crate) payload: Bytes,
    /// The QoS it was published with.
    pub(crate) qos: QoS,
    /// The publisher's RETAIN flag.
    pub(crate) retain: bool,
    /// Properties to forward: no Topic Alias, no Subscription Identifiers.
    pub(crate) properties: PublishProperties,
    /// The publishing client, for No Local; `None` for the host program.
    pub(crate) publisher: Option<ClientId>,
    /// When the message stops being deliverable [MQTT-3.3.2-5].
    pub(crate) expires_at: Option<Instant>,
    /// [`properties_size`] of `properties`, computed once: [`Message::size`] runs several times
    /// per delivery, and reading the properties each time costs fan-out measurably.
    pub(crate) properties_size: usize,
}

impl Message {
    /// Whether the message has expired at `now`.
    pub(crate) fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|deadline| now >= deadline)
    }

    /// The Message Expiry Interval to forward at `now`: the received value minus the time spent
    /// in the server [MQTT-3.3.2-6], at least 1 while the message is alive.
    pub(crate) fn remaining_expiry(&self, now: Instant) -> Option<u32> {
        let deadline = self.expires_at?;
        let remaining = deadline.saturating_duration_since(now);
        let seconds = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
        Some(u32::try_from(seconds.max(1)).unwrap_or(u32::MAX))
    }

    /// A copy that owns its topic, payload and properties. A message kept for long (retained,
    /// queued for an offline session, a Will) must not keep alive the whole read buffer its
    /// slices point into.
    pub(crate) fn compact(&self) -> Self {
        let properties = &self.properties;
        Self {
            topic: owned_string(&self.topic),
            payload: Bytes::copy_from_slice(&self.payload),
            properties: PublishProperties {
                response_topic: properties.response_topic.as_ref().map(owned_string),
                correlation_data: properties
                    .correlation_data
                    .as_ref()
                    .map(|data| Bytes::copy_from_slice(data)),
                content_type: properties.content_type.as_ref().map(owned_string),
                user_properties: properties.user_properties.compact(),
                ..properties.clone()
            },
            ..self.clone()
        }
    }

    /// The bytes counted against queue, in-flight and retained limits: topic, payload and
    /// properties, all that a compact copy keeps alive beyond its fixed-size parts.
    pub(crate) fn size(&self) -> usize {
        self.payload.len() + self.topic.len() + self.properties_size
    }
}

/// A string that owns its bytes.
pub(crate) fn owned_string(text: &MqttString) -> MqttString {
    MqttString::new(text.as_str()).unwrap_or_else(|_| text.clone())
}

/// The bytes a message's properties keep alive beyond the message itself.
pub(crate) fn properties_size(properties: &PublishProperties) -> usize {
    if properties.response_topic.is_none()
        && properties.correlation_data.is_none()
        && properties.content_type.is_none()
        && properties.user_properties.is_empty()
    {
        return 0;
    }
    properties.response_topic.as_ref().map_or(0, |t| t.len())
        + properties.correlation_data.as_ref().map_or(0, |d| d.len())
        + properties.content_type.as_ref().map_or(0, |t| t.len())
        + properties.user_properties.heap_size()
}

#[cfg(test)]
impl Message {
    /// A QoS 0 message on `t`, empty, from the host program: a fixture for tests.
    pub(crate) fn for_test() -> Self {
        Self {
            topic: MqttString::from_static("t"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: PublishProperties::default(),
            publisher: None,
            expires_at: None,
            properties_size: 0,
        }
    }
}

/// Compact copies of messages, by the address of the original: one copy per message however
/// many deliveries of it are compacted together.
pub(crate) type Compacted = std::collections::HashMap<usize, Arc<Message>>;

/// One subscriber's copy of a message: the shared message plus what differs per subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) message: Arc<Message>,
    /// min(published QoS, granted QoS, server maximum) [MQTT-3.8.4-8].
    pub(crate) qos: QoS,
    /// The RETAIN flag to send.
    pub(crate) retain: bool,
    /// Identifiers of the matching subscriptions [MQTT-3.3.4-4].
    pub(crate) subscription_identifiers: Vec<NonZeroU32>,
    /// The shared subscription this delivery was chosen for, if any: when the member's session
    /// ends before a QoS 0/1 message is acknowledged, it goes to another member.
    pub(crate) shared: Option<Arc<mqtt_topics::SharedGroupId>>,
    /// Its place in the session's queue, set when queued: how a storage hook names it.
    pub(crate) seq: u64,
}

#[cfg(test)]
impl Delivery {
    /// A QoS 0 delivery of [`Message::for_test`] with this sequence number: a fixture for tests.
    pub(crate) fn for_test(seq: u64) -> Self {
        Self {
            message: Arc::new(Message::for_test()),
            qos: QoS::AtMostOnce,
            retain: false,
            subscription_identifiers: Vec::new(),
            shared: None,
            seq,
        }
    }
}

impl Delivery {
    /// Makes this delivery's message a copy that owns its bytes (see [`Message::compact`]),
    /// sharing one copy per message through `copies`.
    pub(crate) fn compact_with(&mut self, copies: &mut crate::message::Compacted) {
        let message = &self.message;
        self.message = copies
            .entry(Arc::as_ptr(message) as usize)
            .or_insert_with(|| Arc::new(message.compact()))
            .clone();
    }

    /// The PUBLISH packet for this delivery at `now`.
    pub(crate) fn to_publish(
        &self,
        packet_id: Option<PacketId>,
        dup: bool,
        now: Instant,
    ) -> Publish {
        let message = &self.message;
        let mut properties = message.properties.clone();
        properties.message_expiry_interval = message.remaining_expiry(now);
        properties
            .subscription_identifiers
            .clone_from(&self.subscription_identifiers);
        Publish {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: message.topic.clone(),
            packet_id,
            payload: message.payload.clone(),
            properties,
        }
    }

    /// This delivery as a borrowed PUBLISH, when nothing in it is made for this subscriber: at
    /// MQTT 3.x always (no properties go out), at MQTT 5 when it carries no Message Expiry
    /// Interval to count down and no Subscription Identifiers. Encoding it then touches no
    /// reference count of the shared message. `None`: build it with [`Delivery::to_publish`].
    pub(crate) fn as_publish_ref(
        &self,
        packet_id: Option<PacketId>,
        dup: bool,
        v5: bool,
    ) -> Option<PublishRef<'_>> {
        let message = &self.message;
        let per_subscriber = message.expires_at.is_some()
            || message.properties.message_expiry_interval.is_some()
            || !message.properties.subscription_identifiers.is_empty()
            || !self.subscription_identifiers.is_empty();
        if v5 && per_subscriber {
            return None;
        }
        Some(PublishRef {
            dup,
            qos: self.qos,
            retain: self.retain,
            topic: &message.topic,
            packet_id,
            payload: &message.payload,
            properties: &message.properties,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn delivery(message: Message, subscription_identifiers: Vec<NonZeroU32>) -> Delivery {
        Delivery {
            message: Arc::new(message),
            qos: QoS::AtLeastOnce,
            retain: true,
            subscription_identifiers,
            shared: None,
            seq: 0,
        }
    }

    #[test]
    fn a_compact_copy_owns_its_bytes() {
        use mqtt_packets::{DecodeContext, Packet, Protocol};
        // Topic and payload as the decoder gives them: slices of the read buffer.
        let mut read = bytes::BytesMut::with_capacity(64 * 1024);
        Publish::new(MqttString::new("a/b").unwrap(), vec![7u8; 64])
            .encode(Protocol::V5, &mut read)
            .unwrap();
        let Ok(Some(Packet::Publish(publish))) =
            mqtt_packets::decode(&mut read, &DecodeContext::new(Protocol::V5))
        else {
            panic!("a PUBLISH was encoded");
        };
        let message = Message {
            topic: publish.topic,
            payload: publish.payload,
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: PublishProperties::default(),
            publisher: Some("p".into()),
            expires_at: None,
            properties_size: 0,
        };
        let compact = message.compact();
        assert_eq!(compact.topic, message.topic);
        assert_eq!(compact.payload, message.payload);
        assert_eq!((compact.qos, compact.retain), (message.qos, message.retain));
        assert_eq!(compact.publisher, message.publisher);
        assert_ne!(compact.payload.as_ptr(), message.payload.as_ptr());
        assert_ne!(
            compact.topic.as_bytes().as_ptr(),
            message.topic.as_bytes().as_ptr()
        );
    }

    fn encoded(publish: &Publish, protocol: mqtt_packets::Protocol) -> bytes::BytesMut {
        let mut out = bytes::BytesMut::new();
        publish.encode(protocol, &mut out).unwrap();
        out
    }

    #[test]
    fn borrowed_publish_encodes_as_the_owned_one() {
        use mqtt_packets::Protocol;
        let now = Instant::now();
        let properties = PublishProperties {
            content_type: Some(MqttString::from_static("text/plain")),
            ..PublishProperties::default()
        };
        let message = Message {
            topic: MqttString::from_static("a/b"),
            payload: Bytes::from_static(b"hello"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties,
            publisher: None,
            expires_at: None,
            properties_size: 0,
        };
        let plain = delivery(message.clone(), Vec::new());
        let id = PacketId::new(7);
        for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
            let borrowed = plain.as_publish_ref(id, true, protocol.is_v5()).unwrap();
            let mut out = bytes::BytesMut::new();
            borrowed.encode(protocol, &mut out).unwrap();
            assert_eq!(out, encoded(&plain.to_publish(id, true, now), protocol));
            assert_eq!(borrowed.encoded_len(protocol), out.len());
        }
        // Made for each subscriber at MQTT 5: the identifiers of its subscriptions
        // [MQTT-3.3.4-4], the expiry counted down [MQTT-3.3.2-6]. At 3.x neither goes out.
        let identified = delivery(message.clone(), vec![NonZeroU32::MIN]);
        assert!(identified.as_publish_ref(id, false, true).is_none());
        let mut expiring = message;
        expiring.expires_at = Some(now + Duration::from_secs(5));
        expiring.properties.message_expiry_interval = Some(5);
        let expiring = delivery(expiring, Vec::new());
        assert!(expiring.as_publish_ref(id, false, true).is_none());
        let borrowed = expiring.as_publish_ref(id, false, false).unwrap();
        let mut out = bytes::BytesMut::new();
        borrowed.encode(Protocol::V3_1_1, &mut out).unwrap();
        assert_eq!(
            out,
            encoded(&expiring.to_publish(id, false, now), Protocol::V3_1_1)
        );
    }

    #[test]
    fn expiry_counts_down_mqtt_3_3_2_6() {
        let now = Instant::now();
        let message = Message {
            expires_at: Some(now + Duration::from_secs(10)),
            ..Message::for_test()
        };
        assert_eq!(message.remaining_expiry(now), Some(10));
        assert_eq!(
            message.remaining_expiry(now + Duration::from_millis(3500)),
            Some(7)
        );
        assert_eq!(
            message.remaining_expiry(now + Duration::from_millis(9999)),
            Some(1)
        );
        assert!(!message.is_expired(now + Duration::from_millis(9999)));
        assert!(message.is_expired(now + Duration::from_secs(10)));
    }
}
