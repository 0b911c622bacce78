//! PUBACK, PUBREC, PUBREL and PUBCOMP (§3.4-3.7): the acknowledgements of the QoS 1 and QoS 2
//! flows. All four have the same layout: a packet identifier, then (MQTT 5) an optional reason
//! code and optional properties.

use bytes::{BufMut, BytesMut};

use crate::data::Reader;
use crate::packet::Body;
use crate::{
    AckProperties, DecodeError, EncodeError, PacketId, PacketType, Protocol, ProtocolViolation,
    ReasonCode,
};

macro_rules! publish_ack {
    ($(#[$doc:meta])* $name:ident, $packet_type:ident) => {
        $(#[$doc])*
        ///
        /// At MQTT 3.x only the packet identifier is on the wire: the reason code and properties
        /// are left out when encoding, and decoding gives [`ReasonCode::SUCCESS`].
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            /// The Packet Identifier of the PUBLISH this acknowledges [MQTT-2.2.1-5].
            pub packet_id: PacketId,
            /// The reason code; 0x00 by default.
            pub reason_code: ReasonCode,
            /// Reason String and User Properties (MQTT 5 only).
            pub properties: AckProperties,
        }

        impl $name {
            /// A successful acknowledgement without properties.
            pub fn new(packet_id: PacketId) -> Self {
                Self::with_reason(packet_id, ReasonCode::SUCCESS)
            }

            /// An acknowledgement with this reason code and no properties.
            pub fn with_reason(packet_id: PacketId, reason_code: ReasonCode) -> Self {
                Self { packet_id, reason_code, properties: AckProperties::default() }
            }

            pub(crate) fn decode(reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
                let (packet_id, reason_code, properties) = decode_ack(reader, protocol)?;
                Ok(Self { packet_id, reason_code, properties })
            }
        }

        impl Body for $name {
            fn packet_type(&self) -> PacketType {
                PacketType::$packet_type
            }

            fn body_len(&self, protocol: Protocol) -> usize {
                ack_body_len(protocol, self.reason_code, &self.properties)
            }

            fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
                encode_ack(out, protocol, self.packet_id, self.reason_code, &self.properties)
            }
        }
    };
}

publish_ack!(
    /// PUBACK: the answer to a QoS 1 PUBLISH.
    PubAck,
    PubAck
);
publish_ack!(
    /// PUBREC: the first answer to a QoS 2 PUBLISH.
    PubRec,
    PubRec
);
publish_ack!(
    /// PUBREL: the answer to PUBREC (fixed-header flags `0010`, [MQTT-3.6.1-1]).
    PubRel,
    PubRel
);
publish_ack!(
    /// PUBCOMP: the answer to PUBREL, ending a QoS 2 flow.
    PubComp,
    PubComp
);

/// Reads the three forms of §3.4.2: identifier only (code 0x00), identifier and code, or
/// identifier, code and properties.
fn decode_ack(
    mut reader: Reader,
    protocol: Protocol,
) -> Result<(PacketId, ReasonCode, AckProperties), DecodeError> {
    let packet_id = reader.packet_id()?;
    if !protocol.is_v5() || reader.is_empty() {
        reader.finish()?;
        return Ok((packet_id, ReasonCode::SUCCESS, AckProperties::default()));
    }
    let code = reader.u8("reason code")?;
    let reason_code = ReasonCode(code);
    if !reason_code.is_allowed_in(reader.packet()) {
        return Err(ProtocolViolation::InvalidReasonCode {
            packet: reader.packet(),
            code,
        }
        .into());
    }
    let properties = if reader.is_empty() {
        AckProperties::default()
    } else {
        AckProperties::decode(&mut reader)?
    };
    reader.finish()?;
    Ok((packet_id, reason_code, properties))
}

fn ack_body_len(protocol: Protocol, reason_code: ReasonCode, properties: &AckProperties) -> usize {
    if !protocol.is_v5() || (reason_code == ReasonCode::SUCCESS && properties.is_empty()) {
        2
    } else if properties.is_empty() {
        3
    } else {
        3 + properties.block_len()
    }
}

/// Writes the shortest form that carries everything [MQTT-2.2.2-1].
fn encode_ack(
    out: &mut BytesMut,
    protocol: Protocol,
    packet_id: PacketId,
    reason_code: ReasonCode,
    properties: &AckProperties,
) -> Result<(), EncodeError> {
    out.put_u16(packet_id.get());
    match ack_body_len(protocol, reason_code, properties) {
        2 => {}
        3 => out.put_u8(reason_code.value()),
        _ => {
            out.put_u8(reason_code.value());
            properties.encode(out)?;
        }
    }
    Ok(())
}
