//! UNSUBSCRIBE (§3.10) and UNSUBACK (§3.11).

use bytes::{BufMut, BytesMut};

use crate::data::{self, Reader};
use crate::packet::Body;
use crate::{
    AckProperties, DecodeError, EncodeError, MqttString, PacketId, PacketType, Protocol,
    ProtocolViolation, ReasonCode, UnsubscribeProperties,
};

/// An UNSUBSCRIBE packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    /// The Packet Identifier, echoed in the UNSUBACK [MQTT-3.10.4-5].
    pub packet_id: PacketId,
    /// The topic filters, compared character by character with the session's
    /// [MQTT-3.10.4-1]; at least one [MQTT-3.10.3-2].
    pub filters: Vec<MqttString>,
    /// UNSUBSCRIBE properties (MQTT 5 only).
    pub properties: UnsubscribeProperties,
}

impl Unsubscribe {
    /// An UNSUBSCRIBE for these filters, without properties.
    pub fn new(packet_id: PacketId, filters: Vec<MqttString>) -> Self {
        Self {
            packet_id,
            filters,
            properties: UnsubscribeProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        let packet_id = reader.packet_id()?;
        let properties = if protocol.is_v5() {
            UnsubscribeProperties::decode(&mut reader)?
        } else {
            UnsubscribeProperties::default()
        };
        let mut filters = Vec::new();
        while !reader.is_empty() {
            reader.count_filter(filters.len() + 1)?;
            filters.push(reader.string("topic filter")?);
        }
        if filters.is_empty() {
            return Err(ProtocolViolation::EmptyUnsubscribe.into());
        }
        Ok(Self {
            packet_id,
            filters,
            properties,
        })
    }
}

impl Body for Unsubscribe {
    fn packet_type(&self) -> PacketType {
        PacketType::Unsubscribe
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        2 + if protocol.is_v5() {
            self.properties.block_len()
        } else {
            0
        } + self.filters.iter().map(data::string_len).sum::<usize>()
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if self.filters.is_empty() {
            return Err(EncodeError::NoTopicFilters {
                packet: PacketType::Unsubscribe,
            });
        }
        out.put_u16(self.packet_id.get());
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        for filter in &self.filters {
            data::put_string(out, filter, "topic filter")?;
        }
        Ok(())
    }
}

/// An UNSUBACK packet.
///
/// MQTT 3.x UNSUBACK carries only the packet identifier: `reason_codes` is empty when decoded at
/// those levels and ignored when encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsubAck {
    /// The Packet Identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// One code per filter, in order [MQTT-3.11.3-1] (MQTT 5 only).
    pub reason_codes: Vec<ReasonCode>,
    /// Reason String and User Properties (MQTT 5 only).
    pub properties: AckProperties,
}

impl UnsubAck {
    /// An UNSUBACK with these codes and no properties.
    pub fn new(packet_id: PacketId, reason_codes: Vec<ReasonCode>) -> Self {
        Self {
            packet_id,
            reason_codes,
            properties: AckProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        let packet_id = reader.packet_id()?;
        if !protocol.is_v5() {
            reader.finish()?;
            return Ok(Self::new(packet_id, Vec::new()));
        }
        let properties = AckProperties::decode(&mut reader)?;
        let bytes = reader.rest();
        if bytes.is_empty() {
            return Err(ProtocolViolation::EmptyAcknowledgement {
                packet: PacketType::UnsubAck,
            }
            .into());
        }
        let mut reason_codes = Vec::with_capacity(bytes.len());
        for &code in bytes.iter() {
            if !ReasonCode(code).is_allowed_in(PacketType::UnsubAck) {
                return Err(ProtocolViolation::InvalidReasonCode {
                    packet: PacketType::UnsubAck,
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

impl Body for UnsubAck {
    fn packet_type(&self) -> PacketType {
        PacketType::UnsubAck
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        if protocol.is_v5() {
            2 + self.properties.block_len() + self.reason_codes.len()
        } else {
            2
        }
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if protocol.is_v5() {
            self.properties.encode(out)?;
            for code in &self.reason_codes {
                out.put_u8(code.value());
            }
        }
        Ok(())
    }
}
