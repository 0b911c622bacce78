//! DISCONNECT (§3.14) and AUTH (§3.15).

use bytes::{BufMut, BytesMut};

use crate::data::Reader;
use crate::packet::Body;
use crate::{
    AuthProperties, DecodeError, DisconnectProperties, EncodeError, PacketType, Protocol,
    ProtocolViolation, ReasonCode,
};

/// A DISCONNECT packet. At MQTT 3.x it has no body: the reason code and properties are left out
/// when encoding, and decoding gives Normal disconnection.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Disconnect {
    /// The Disconnect Reason Code.
    pub reason_code: ReasonCode,
    /// DISCONNECT properties (MQTT 5 only).
    pub properties: DisconnectProperties,
}

impl Disconnect {
    /// A DISCONNECT with this reason code and no properties.
    pub fn new(reason_code: ReasonCode) -> Self {
        Self {
            reason_code,
            properties: DisconnectProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader, protocol: Protocol) -> Result<Self, DecodeError> {
        if !protocol.is_v5() || reader.is_empty() {
            reader.finish()?;
            return Ok(Self::default());
        }
        let code = reader.u8("reason code")?;
        let reason_code = ReasonCode(code);
        if !reason_code.is_allowed_in(PacketType::Disconnect) {
            return Err(ProtocolViolation::InvalidReasonCode {
                packet: PacketType::Disconnect,
                code,
            }
            .into());
        }
        // A Remaining Length below 2 means there is no Property Length [MQTT-3.14.2-1].
        let properties = if reader.is_empty() {
            DisconnectProperties::default()
        } else {
            DisconnectProperties::decode(&mut reader)?
        };
        reader.finish()?;
        Ok(Self {
            reason_code,
            properties,
        })
    }
}

impl Body for Disconnect {
    fn packet_type(&self) -> PacketType {
        PacketType::Disconnect
    }

    fn body_len(&self, protocol: Protocol) -> usize {
        if !protocol.is_v5() {
            0
        } else if self.properties.is_empty() {
            usize::from(self.reason_code != ReasonCode::NORMAL_DISCONNECTION)
        } else {
            1 + self.properties.block_len()
        }
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self.body_len(protocol) {
            0 => {}
            1 => out.put_u8(self.reason_code.value()),
            _ => {
                out.put_u8(self.reason_code.value());
                self.properties.encode(out)?;
            }
        }
        Ok(())
    }
}

/// An AUTH packet (MQTT 5 only): a step of enhanced authentication (§4.12).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Auth {
    /// The Authenticate Reason Code: 0x00, 0x18 or 0x19.
    pub reason_code: ReasonCode,
    /// AUTH properties; the Authentication Method is required unless the packet is the empty
    /// short form of Success.
    pub properties: AuthProperties,
}

impl Auth {
    pub(crate) fn decode(mut reader: Reader) -> Result<Self, DecodeError> {
        // Remaining Length 0 means Success with no properties [MQTT-3.15.2-1].
        if reader.is_empty() {
            return Ok(Self::default());
        }
        let code = reader.u8("reason code")?;
        let reason_code = ReasonCode(code);
        if !reason_code.is_allowed_in(PacketType::Auth) {
            return Err(ProtocolViolation::InvalidReasonCode {
                packet: PacketType::Auth,
                code,
            }
            .into());
        }
        let properties = if reader.is_empty() {
            AuthProperties::default()
        } else {
            AuthProperties::decode(&mut reader)?
        };
        reader.finish()?;
        if properties.authentication_method.is_none() {
            return Err(ProtocolViolation::AuthWithoutMethod.into());
        }
        Ok(Self {
            reason_code,
            properties,
        })
    }
}

impl Body for Auth {
    fn packet_type(&self) -> PacketType {
        PacketType::Auth
    }

    fn body_len(&self, _: Protocol) -> usize {
        if self.reason_code == ReasonCode::SUCCESS && self.properties.is_empty() {
            0
        } else {
            1 + self.properties.block_len()
        }
    }

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        if !protocol.is_v5() {
            return Err(EncodeError::NotInProtocol {
                packet: PacketType::Auth,
                protocol,
                why: "AUTH exists only in MQTT 5",
            });
        }
        if self.body_len(protocol) > 0 {
            out.put_u8(self.reason_code.value());
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
