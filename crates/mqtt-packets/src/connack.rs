//! CONNACK (§3.2): the server's answer to CONNECT.

use bytes::{BufMut, BytesMut};

use crate::data::Reader;
use crate::packet::Body;
use crate::{
    ConnAckProperties, DecodeError, EncodeError, Malformed, PacketType, Protocol,
    ProtocolViolation, ReasonCode,
};

/// A CONNACK packet.
///
/// The reason code is always an MQTT 5 code. For 3.x connections it is mapped to and from the
/// six CONNACK return codes ([`ReasonCode::to_v3_connect_return_code`]); a code with no 3.x
/// equivalent cannot be encoded, because the spec then wants the connection closed without a
/// CONNACK.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnAck {
    /// Session Present (always written as 0 for MQTT 3.1, which has no such flag).
    pub session_present: bool,
    /// The Connect Reason Code.
    pub reason_code: ReasonCode,
    /// CONNACK properties (MQTT 5 only).
    pub properties: ConnAckProperties,
}

impl ConnAck {
    /// A CONNACK with this reason code, no session and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            session_present: false,
            reason_code,
            properties: ConnAckProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        let flags = reader.u8("connect acknowledge flags")?;
        // MQTT 3.1 reserves the whole byte; later levels use bit 0 for Session Present.
        let reserved = if protocol == Protocol::V3_1 {
            0xFF
        } else {
            0xFE
        };
        if flags & reserved != 0 {
            return Err(Malformed::ConnAckReservedFlags.into());
        }
        let code = reader.u8("reason code")?;
        let invalid = || ProtocolViolation::InvalidReasonCode {
            packet: PacketType::ConnAck,
            code,
        };
        let (reason_code, properties) = if protocol.is_v5() {
            let reason_code = ReasonCode(code);
            if !reason_code.is_allowed_in(PacketType::ConnAck) {
                return Err(invalid().into());
            }
            (reason_code, ConnAckProperties::decode(&mut reader)?)
        } else {
            let reason_code = ReasonCode::from_v3_connect_return_code(code).ok_or_else(invalid)?;
            (reason_code, ConnAckProperties::default())
        };
        reader.finish()?;
        Ok(Self {
            session_present: flags & 0x01 != 0,
            reason_code,
            properties,
        })
    }
}

impl Body for ConnAck {
    fn packet_type(&self) -> PacketType {
        PacketType::ConnAck
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        2 + if protocol.is_v5() {
            self.properties.block_len()
        } else {
            0
        }
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        let session_present = self.session_present && protocol != Protocol::V3_1;
        let code = if protocol.is_v5() {
            self.reason_code.value()
        } else {
            self.reason_code
                .to_v3_connect_return_code()
                .ok_or(EncodeError::NotInProtocol {
                    packet: PacketType::ConnAck,
                    protocol,
                    why: "the reason code has no 3.x return code",
                })?
        };
        out.put_u8(u8::from(session_present));
        out.put_u8(code);
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
