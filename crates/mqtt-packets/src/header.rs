//! The fixed header (§2.1): packet type, flags and Remaining Length.

use std::fmt;

use crate::varint::read_variable_byte_integer;
use crate::{DecodeError, Malformed, Protocol};

/// The fifteen MQTT control packet types (§2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PacketType {
    /// 1: client to server, connection request.
    Connect = 1,
    /// 2: connection acknowledgement.
    ConnAck = 2,
    /// 3: publish message.
    Publish = 3,
    /// 4: QoS 1 acknowledgement.
    PubAck = 4,
    /// 5: QoS 2 delivery, part 1.
    PubRec = 5,
    /// 6: QoS 2 delivery, part 2.
    PubRel = 6,
    /// 7: QoS 2 delivery, part 3.
    PubComp = 7,
    /// 8: subscribe request.
    Subscribe = 8,
    /// 9: subscribe acknowledgement.
    SubAck = 9,
    /// 10: unsubscribe request.
    Unsubscribe = 10,
    /// 11: unsubscribe acknowledgement.
    UnsubAck = 11,
    /// 12: ping request.
    PingReq = 12,
    /// 13: ping response.
    PingResp = 13,
    /// 14: disconnect notification.
    Disconnect = 14,
    /// 15: authentication exchange (MQTT 5 only).
    Auth = 15,
}

impl PacketType {
    /// The packet type of the high nibble of a first byte; `None` for the reserved type 0.
    pub const fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => Self::Connect,
            2 => Self::ConnAck,
            3 => Self::Publish,
            4 => Self::PubAck,
            5 => Self::PubRec,
            6 => Self::PubRel,
            7 => Self::PubComp,
            8 => Self::Subscribe,
            9 => Self::SubAck,
            10 => Self::Unsubscribe,
            11 => Self::UnsubAck,
            12 => Self::PingReq,
            13 => Self::PingResp,
            14 => Self::Disconnect,
            15 => Self::Auth,
            _ => return None,
        })
    }

    /// The packet's name in the spec, e.g. `"PUBACK"`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Connect => "CONNECT",
            Self::ConnAck => "CONNACK",
            Self::Publish => "PUBLISH",
            Self::PubAck => "PUBACK",
            Self::PubRec => "PUBREC",
            Self::PubRel => "PUBREL",
            Self::PubComp => "PUBCOMP",
            Self::Subscribe => "SUBSCRIBE",
            Self::SubAck => "SUBACK",
            Self::Unsubscribe => "UNSUBSCRIBE",
            Self::UnsubAck => "UNSUBACK",
            Self::PingReq => "PINGREQ",
            Self::PingResp => "PINGRESP",
            Self::Disconnect => "DISCONNECT",
            Self::Auth => "AUTH",
        }
    }

    /// The flags every packet of this type carries, except PUBLISH whose flags vary (table 2-2).
    pub(crate) const fn fixed_flags(self) -> u8 {
        match self {
            Self::PubRel | Self::Subscribe | Self::Unsubscribe => 0b0010,
            _ => 0,
        }
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A parsed fixed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FixedHeader {
    /// The packet type.
    pub packet_type: PacketType,
    /// The low nibble of the first byte (checked against table 2-2).
    pub flags: u8,
    /// The Remaining Length: the size of the variable header and payload.
    pub remaining_length: u32,
    /// The size of the fixed header itself, 2 to 5 bytes.
    pub header_length: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the start of `bytes`.
    ///
    /// Returns `Ok(None)` if `bytes` ends inside the header. Checks the reserved packet type and
    /// the flag bits of table 2-2 [MQTT-2.1.3-1]. At level 3, SUBSCRIBE, UNSUBSCRIBE and PUBREL
    /// may also carry the DUP bit (flags `1010`), which MQTT 3.1 clients set on retries.
    pub fn parse(bytes: &[u8], protocol: Protocol) -> Result<Option<Self>, DecodeError> {
        let Some(&first) = bytes.first() else {
            return Ok(None);
        };
        let packet_type = PacketType::from_u8(first >> 4).ok_or(Malformed::ReservedPacketType)?;
        let flags = first & 0x0F;
        if packet_type != PacketType::Publish && flags != packet_type.fixed_flags() {
            let v3_retry = protocol == Protocol::V3_1 && flags == 0b1010;
            if !(v3_retry && packet_type.fixed_flags() == 0b0010) {
                return Err(Malformed::InvalidFixedHeaderFlags {
                    packet: packet_type,
                    flags,
                }
                .into());
            }
        }
        let Some((remaining_length, len)) =
            read_variable_byte_integer(bytes.get(1..).unwrap_or_default())?
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            packet_type,
            flags,
            remaining_length,
            header_length: 1 + len,
        }))
    }

    /// The size of the whole packet: fixed header plus Remaining Length (§2.1.4).
    pub fn packet_size(&self) -> usize {
        self.header_length + self.remaining_length as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pubrel_needs_flags_0010_mqtt_3_6_1_1() {
        assert!(
            FixedHeader::parse(&[0x62, 0x02], Protocol::V5)
                .unwrap()
                .is_some()
        );
        let error = FixedHeader::parse(&[0x60, 0x02], Protocol::V5).unwrap_err();
        assert_eq!(
            error,
            Malformed::InvalidFixedHeaderFlags {
                packet: PacketType::PubRel,
                flags: 0
            }
            .into()
        );
    }

    #[test]
    fn v3_1_retry_dup_flag_is_tolerated() {
        assert!(
            FixedHeader::parse(&[0x8A, 0x00], Protocol::V3_1)
                .unwrap()
                .is_some()
        );
        assert!(FixedHeader::parse(&[0x8A, 0x00], Protocol::V3_1_1).is_err());
    }

    #[test]
    fn type_zero_is_reserved() {
        assert_eq!(
            FixedHeader::parse(&[0x00, 0x00], Protocol::V5),
            Err(Malformed::ReservedPacketType.into())
        );
    }

    #[test]
    fn header_size_counts_in_packet_size() {
        let header = FixedHeader::parse(&[0x30, 0x80, 0x01], Protocol::V5)
            .unwrap()
            .unwrap();
        assert_eq!(header.remaining_length, 128);
        assert_eq!(header.packet_size(), 131);
    }
}
