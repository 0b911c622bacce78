//! PUBLISH (§3.3): an application message, in either direction.

use bytes::{BufMut, Bytes, BytesMut};

use crate::data::{self, Reader, put_variable_byte_integer_checked};
use crate::packet::Body;
use crate::varint::variable_byte_integer_len;
use crate::{
    DecodeError, EncodeError, Malformed, MqttString, PacketId, PacketType, Protocol,
    ProtocolViolation, PublishProperties, QoS,
};

/// A PUBLISH packet.
///
/// The topic and the payload are slices of the decoded buffer: forwarding a message to many
/// subscribers clones reference counts, not bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Publish {
    /// DUP: this is a resend [MQTT-3.3.1-1]. Always false at QoS 0.
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// The Topic Name. Empty only when a Topic Alias stands for it (MQTT 5).
    pub topic: MqttString,
    /// The Packet Identifier: present exactly when `qos` is 1 or 2 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// The payload; may be empty.
    pub payload: Bytes,
    /// PUBLISH properties (MQTT 5 only).
    pub properties: PublishProperties,
}

impl Publish {
    /// A QoS 0 PUBLISH without properties.
    pub fn new(topic: MqttString, payload: impl Into<Bytes>) -> Self {
        Self {
            topic,
            payload: payload.into(),
            ..Self::default()
        }
    }

    pub(crate) fn decode(
        mut reader: Reader,
        flags: u8,
        protocol: Protocol,
    ) -> Result<Self, DecodeError> {
        let dup = flags & 0x08 != 0;
        let qos = QoS::from_u8((flags >> 1) & 0x03).ok_or(Malformed::InvalidQoS {
            field: "PUBLISH QoS",
        })?;
        let retain = flags & 0x01 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(ProtocolViolation::DupOnQoS0.into());
        }
        let topic = reader.string("topic name")?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(reader.packet_id()?)
        };
        let properties = if protocol.is_v5() {
            PublishProperties::decode(&mut reader)?
        } else {
            PublishProperties::default()
        };
        // Checked on the bytes: `&str` access would validate the UTF-8 again.
        if has_wildcard(topic.as_bytes()) {
            return Err(ProtocolViolation::WildcardInTopicName {
                topic: topic.to_string(),
            }
            .into());
        }
        if topic.as_bytes().is_empty() && properties.topic_alias.is_none() {
            return Err(ProtocolViolation::EmptyTopicName.into());
        }
        reject_wildcard_response_topic(properties.response_topic.as_ref())?;
        let payload = reader.rest();
        Ok(Self {
            dup,
            qos,
            retain,
            topic,
            packet_id,
            payload,
            properties,
        })
    }
}

fn has_wildcard(topic: &[u8]) -> bool {
    topic.iter().any(|&byte| byte == b'+' || byte == b'#')
}

/// A Topic Name as the codec can judge it alone: non-empty and without wildcards. Further rules
/// (length and level limits, `$` topics) belong to the topics crate.
pub(crate) fn is_valid_topic_name(topic: &str) -> bool {
    !topic.is_empty() && !has_wildcard(topic.as_bytes())
}

/// The Response Topic is a Topic Name: not empty [MQTT-4.7.3-1] and without wildcards
/// [MQTT-3.3.2-14].
pub(crate) fn reject_wildcard_response_topic(
    response_topic: Option<&MqttString>,
) -> Result<(), DecodeError> {
    match response_topic {
        Some(topic) if topic.as_bytes().is_empty() => {
            Err(ProtocolViolation::EmptyResponseTopic.into())
        }
        Some(topic) if has_wildcard(topic.as_bytes()) => {
            Err(ProtocolViolation::WildcardInResponseTopic {
                topic: topic.to_string(),
            }
            .into())
        }
        _ => Ok(()),
    }
}

impl Body for Publish {
    fn packet_type(&self) -> PacketType {
        PacketType::Publish
    }

    fn flags(&self) -> u8 {
        self.as_ref().flags()
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        self.as_ref().body_len(protocol)
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.as_ref().encode_body(protocol, out)
    }
}

/// A PUBLISH packet borrowed from its parts, to encode without building an owned [`Publish`]:
/// how a server writes one shared message to many subscribers without touching the reference
/// counts of its topic and payload for each of them.
///
/// It encodes exactly as the [`Publish`] with the same fields does.
///
/// ```
/// use bytes::BytesMut;
/// use mqtt_packets::{MqttString, Protocol, Publish, PublishProperties, PublishRef, QoS};
///
/// let topic = MqttString::new("sensors/1")?;
/// let properties = PublishProperties::default();
/// let borrowed = PublishRef {
///     dup: false,
///     qos: QoS::AtMostOnce,
///     retain: false,
///     topic: &topic,
///     packet_id: None,
///     payload: b"21.5",
///     properties: &properties,
/// };
/// let mut out = BytesMut::new();
/// borrowed.encode(Protocol::V5, &mut out)?;
/// let mut owned = BytesMut::new();
/// Publish::new(topic.clone(), &b"21.5"[..]).encode(Protocol::V5, &mut owned)?;
/// assert_eq!(out, owned);
/// assert_eq!(borrowed.encoded_len(Protocol::V5), out.len());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PublishRef<'a> {
    /// DUP: this is a resend [MQTT-3.3.1-1]. Always false at QoS 0.
    pub dup: bool,
    /// The QoS of this delivery.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// The Topic Name. Empty only when a Topic Alias stands for it (MQTT 5).
    pub topic: &'a MqttString,
    /// The Packet Identifier: present exactly when `qos` is 1 or 2 [MQTT-2.2.1-2].
    pub packet_id: Option<PacketId>,
    /// The payload; may be empty.
    pub payload: &'a [u8],
    /// PUBLISH properties (MQTT 5 only).
    pub properties: &'a PublishProperties,
}

impl Publish {
    /// This packet, borrowed.
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            payload: &self.payload,
            properties: &self.properties,
        }
    }
}

impl PublishRef<'_> {
    /// Appends this packet, fixed header included, as spoken at `protocol` (properties only at
    /// MQTT 5). On error `out` is left as it was.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        crate::packet::encode_packet(self, protocol, out)
    }

    /// The number of bytes [`Self::encode`] writes, computed without encoding: the size to
    /// compare with the peer's Maximum Packet Size [MQTT-3.1.2-24].
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        crate::packet::packet_len(self, protocol)
    }

    /// Appends this packet up to its payload: the fixed header (whose Remaining Length counts
    /// the payload), the topic, the packet identifier and the properties. The payload's bytes
    /// must follow at once on the wire; a writer can send them from where they lie (a vectored
    /// write) instead of copying a large payload into its buffer. On error `out` is left as it
    /// was.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use mqtt_packets::{MqttString, Protocol, Publish};
    ///
    /// let publish = Publish::new(MqttString::new("a/b").unwrap(), vec![7u8; 4096]);
    /// let mut whole = BytesMut::new();
    /// publish.encode(Protocol::V5, &mut whole).unwrap();
    /// let mut head = BytesMut::new();
    /// publish.as_ref().encode_head(Protocol::V5, &mut head).unwrap();
    /// head.extend_from_slice(&publish.payload);
    /// assert_eq!(head, whole);
    /// ```
    pub fn encode_head(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let len = self.body_len(protocol);
        out.reserve(1 + variable_byte_integer_len(len) + len - self.payload.len());
        out.put_u8(((PacketType::Publish as u8) << 4) | self.flags());
        let result = put_variable_byte_integer_checked(out, len)
            .and_then(|()| self.encode_fields(protocol, out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    /// The variable header: topic, packet identifier and (MQTT 5) properties.
    fn encode_fields(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        data::put_string(out, self.topic, "topic name")?;
        match (self.qos, self.packet_id) {
            (QoS::AtMostOnce, None) => {}
            (QoS::AtLeastOnce | QoS::ExactlyOnce, Some(id)) => out.put_u16(id.get()),
            (qos, packet_id) => {
                return Err(EncodeError::PacketIdentifierMismatch { qos, packet_id });
            }
        }
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        Ok(())
    }
}

impl Body for PublishRef<'_> {
    fn packet_type(&self) -> PacketType {
        PacketType::Publish
    }

    fn flags(&self) -> u8 {
        (u8::from(self.dup) << 3) | (self.qos.as_u8() << 1) | u8::from(self.retain)
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        data::string_len(self.topic)
            + if self.packet_id.is_some() { 2 } else { 0 }
            + if protocol.is_v5() {
                self.properties.block_len()
            } else {
                0
            }
            + self.payload.len()
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.encode_fields(protocol, out)?;
        out.put_slice(self.payload);
        Ok(())
    }
}
