//! SUBSCRIBE (§3.8) and SUBACK (§3.9).

use bytes::{BufMut, BytesMut};

use crate::data::{self, Reader};
use crate::packet::Body;
use crate::{
    AckProperties, DecodeError, EncodeError, Malformed, MqttString, PacketId, PacketType, Protocol,
    ProtocolViolation, QoS, ReasonCode, SubscribeProperties,
};

/// A SUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// The Packet Identifier, echoed in the SUBACK [MQTT-3.8.4-2].
    pub packet_id: PacketId,
    /// The topic filters and their options, in packet order; at least one [MQTT-3.8.3-2].
    pub subscriptions: Vec<Subscription>,
    /// SUBSCRIBE properties (MQTT 5 only).
    pub properties: SubscribeProperties,
}

/// One topic filter of a SUBSCRIBE with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// The Topic Filter. Its syntax (wildcard placement, `$share/`) is checked by the topics
    /// crate, because a bad filter is refused in the SUBACK, not by closing the connection.
    pub filter: MqttString,
    /// The Subscription Options.
    pub options: SubscriptionOptions,
}

impl Subscription {
    /// A subscription with default options at this maximum QoS.
    pub fn new(filter: MqttString, maximum_qos: QoS) -> Self {
        Self {
            filter,
            options: SubscriptionOptions {
                maximum_qos,
                ..SubscriptionOptions::default()
            },
        }
    }
}

/// Subscription Options (§3.8.3.1). At MQTT 3.x only `maximum_qos` exists on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SubscriptionOptions {
    /// Maximum QoS (bits 0-1).
    pub maximum_qos: QoS,
    /// No Local (bit 2).
    pub no_local: bool,
    /// Retain As Published (bit 3).
    pub retain_as_published: bool,
    /// Retain Handling (bits 4-5).
    pub retain_handling: RetainHandling,
}

/// Retain Handling: whether retained messages are sent when the subscription is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    SendAtSubscribe = 0,
    /// 1: send them only if the subscription does not already exist.
    SendIfNewSubscription = 1,
    /// 2: do not send them.
    DoNotSend = 2,
}

impl SubscriptionOptions {
    /// The options byte at this protocol level.
    pub fn to_byte(self, protocol: Protocol) -> u8 {
        let mut byte = self.maximum_qos.as_u8();
        if protocol.is_v5() {
            byte |= u8::from(self.no_local) << 2;
            byte |= u8::from(self.retain_as_published) << 3;
            byte |= (self.retain_handling as u8) << 4;
        }
        byte
    }

    /// Parses an options byte at this protocol level.
    pub fn from_byte(byte: u8, protocol: Protocol) -> Result<Self, DecodeError> {
        let reserved = if protocol.is_v5() { 0xC0 } else { 0xFC };
        if byte & reserved != 0 {
            return Err(Malformed::SubscriptionOptionsReserved { options: byte }.into());
        }
        let Some(maximum_qos) = QoS::from_u8(byte & 0x03) else {
            return Err(if protocol.is_v5() {
                ProtocolViolation::SubscriptionQoS3.into()
            } else {
                Malformed::InvalidQoS {
                    field: "requested QoS",
                }
                .into()
            });
        };
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::SendAtSubscribe,
            1 => RetainHandling::SendIfNewSubscription,
            2 => RetainHandling::DoNotSend,
            _ => return Err(ProtocolViolation::RetainHandling3.into()),
        };
        Ok(Self {
            maximum_qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }
}

impl Subscribe {
    /// A SUBSCRIBE for these subscriptions, without properties.
    pub fn new(packet_id: PacketId, subscriptions: Vec<Subscription>) -> Self {
        Self {
            packet_id,
            subscriptions,
            properties: SubscribeProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        let packet_id = reader.packet_id()?;
        let properties = if protocol.is_v5() {
            SubscribeProperties::decode(&mut reader)?
        } else {
            SubscribeProperties::default()
        };
        let mut subscriptions = Vec::new();
        while !reader.is_empty() {
            reader.count_filter(subscriptions.len() + 1)?;
            let filter = reader.string("topic filter")?;
            let options =
                SubscriptionOptions::from_byte(reader.u8("subscription options")?, protocol)?;
            subscriptions.push(Subscription { filter, options });
        }
        if subscriptions.is_empty() {
            return Err(ProtocolViolation::EmptySubscribe.into());
        }
        Ok(Self {
            packet_id,
            subscriptions,
            properties,
        })
    }
}

impl Body for Subscribe {
    fn packet_type(&self) -> PacketType {
        PacketType::Subscribe
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        2 + if protocol.is_v5() {
            self.properties.block_len()
        } else {
            0
        } + self
            .subscriptions
            .iter()
            .map(|s| data::string_len(&s.filter) + 1)
            .sum::<usize>()
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.subscriptions.is_empty() {
            return Err(EncodeError::NoTopicFilters {
                packet: PacketType::Subscribe,
            });
        }
        out.put_u16(self.packet_id.get());
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        for subscription in &self.subscriptions {
            data::put_string(out, &subscription.filter, "topic filter")?;
            out.put_u8(subscription.options.to_byte(protocol));
        }
        Ok(())
    }
}

/// A SUBACK packet: one reason code per topic filter, in order [MQTT-3.9.3-1].
///
/// At MQTT 3.x the codes are 0x00-0x02 and 0x80: every MQTT 5 failure code is written as 0x80.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    /// The Packet Identifier of the SUBSCRIBE [MQTT-3.8.4-2].
    pub packet_id: PacketId,
    /// One code per filter: the granted QoS or a failure.
    pub reason_codes: Vec<ReasonCode>,
    /// Reason String and User Properties (MQTT 5 only).
    pub properties: AckProperties,
}

impl SubAck {
    /// A SUBACK with these codes and no properties.
    pub fn new(packet_id: PacketId, reason_codes: Vec<ReasonCode>) -> Self {
        Self {
            packet_id,
            reason_codes,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        let packet_id = reader.packet_id()?;
        let properties = if protocol.is_v5() {
            AckProperties::decode(&mut reader)?
        } else {
            AckProperties::default()
        };
        let bytes = reader.rest();
        if bytes.is_empty() {
            return Err(ProtocolViolation::EmptyAcknowledgement {
                packet: PacketType::SubAck,
            }
            .into());
        }
        let mut reason_codes = Vec::with_capacity(bytes.len());
        for &code in bytes.iter() {
            let allowed = if protocol.is_v5() {
                ReasonCode(code).is_allowed_in(PacketType::SubAck)
            } else {
                matches!(code, 0x00 | 0x01 | 0x02 | 0x80)
            };
            if !allowed {
                return Err(ProtocolViolation::InvalidReasonCode {
                    packet: PacketType::SubAck,
                    code,
                }
                .into());
            }
            reason_codes.push(ReasonCode(code));
        }
        Ok(Self {
            packet_id,
            reason_codes,
            properties,
        })
    }
}

impl Body for SubAck {
    fn packet_type(&self) -> PacketType {
        PacketType::SubAck
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        2 + if protocol.is_v5() {
            self.properties.block_len()
        } else {
            0
        } + self.reason_codes.len()
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        for code in &self.reason_codes {
            let value = if protocol.is_v5() || !code.is_error() {
                code.value()
            } else {
                0x80
            };
            out.put_u8(value);
        }
        Ok(())
    }
}
