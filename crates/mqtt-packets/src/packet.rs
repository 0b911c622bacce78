//! The `Packet` enum, incremental decoding from a buffer, and encoding into one.

use bytes::{Buf, BufMut, BytesMut};

use crate::data::{Reader, put_variable_byte_integer_checked};
use crate::varint::{VARIABLE_BYTE_INTEGER_MAX, variable_byte_integer_len};
use crate::{
    Auth, ConnAck, Connect, DecodeError, Disconnect, EncodeError, FixedHeader, Malformed, PacketId,
    PacketType, Protocol, PubAck, PubComp, PubRec, PubRel, Publish, SubAck, Subscribe, UnsubAck,
    Unsubscribe,
};

/// The largest packet the protocol can express: a 5-byte fixed header and a Remaining Length of
/// 268,435,455 bytes. The default [`DecodeContext::maximum_packet_size`].
pub const PROTOCOL_MAXIMUM_PACKET_SIZE: u32 = VARIABLE_BYTE_INTEGER_MAX + 5;

/// A control packet of any type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// CONNECT.
    Connect(Box<Connect>),
    /// CONNACK.
    ConnAck(ConnAck),
    /// PUBLISH.
    Publish(Publish),
    /// PUBACK.
    PubAck(PubAck),
    /// PUBREC.
    PubRec(PubRec),
    /// PUBREL.
    PubRel(PubRel),
    /// PUBCOMP.
    PubComp(PubComp),
    /// SUBSCRIBE.
    Subscribe(Subscribe),
    /// SUBACK.
    SubAck(SubAck),
    /// UNSUBSCRIBE.
    Unsubscribe(Unsubscribe),
    /// UNSUBACK.
    UnsubAck(UnsubAck),
    /// PINGREQ.
    PingReq,
    /// PINGRESP.
    PingResp,
    /// DISCONNECT.
    Disconnect(Disconnect),
    /// AUTH (MQTT 5 only).
    Auth(Auth),
}

/// Limits on what one packet may make the decoder build, beyond its size: the lists whose
/// entries take little room on the wire but more in memory. A packet beyond one is refused with
/// [`DecodeError::LimitExceeded`] (0x97 Quota exceeded) as soon as the entry that crosses it is
/// read, so the list is never built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// User Properties in one packet, all its property lists together (a CONNECT has two: its
    /// own and the Will's). Default 64.
    pub user_properties: u32,
    /// Encoded bytes of those User Properties (identifier, name and value). Default 64 KiB.
    pub user_property_bytes: u32,
    /// Topic filters in one SUBSCRIBE or UNSUBSCRIBE. Default 256.
    pub filters: u32,
}

impl DecodeLimits {
    /// The defaults: 64 User Properties of at most 64 KiB in all, 256 topic filters.
    pub const DEFAULT: Self = Self {
        user_properties: 64,
        user_property_bytes: 64 * 1024,
        filters: 256,
    };

    /// No limit beyond the packet's size.
    pub const UNLIMITED: Self = Self {
        user_properties: u32::MAX,
        user_property_bytes: u32::MAX,
        filters: u32::MAX,
    };
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the decoder needs to know about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// The protocol level of the connection (CONNECT itself is decoded whatever this says).
    pub protocol: Protocol,
    /// The largest packet accepted, fixed header included (§2.1.4). Larger packets are refused
    /// from their fixed header, before their body is buffered.
    pub maximum_packet_size: u32,
    /// Limits on the lists one packet may carry.
    pub limits: DecodeLimits,
}

impl DecodeContext {
    /// A context for this protocol level with the protocol's own size limit and the default
    /// [`DecodeLimits`].
    pub const fn new(protocol: Protocol) -> Self {
        Self {
            protocol,
            maximum_packet_size: PROTOCOL_MAXIMUM_PACKET_SIZE,
            limits: DecodeLimits::DEFAULT,
        }
    }

    /// The same context with other limits on the lists of a packet.
    pub const fn with_limits(self, limits: DecodeLimits) -> Self {
        Self { limits, ..self }
    }

    /// The same context with another maximum packet size.
    pub const fn with_maximum_packet_size(self, maximum_packet_size: u32) -> Self {
        Self {
            maximum_packet_size,
            ..self
        }
    }
}

/// Decodes one packet from the front of `buf`.
///
/// * `Ok(Some(packet))`: the packet's bytes are removed from `buf`; strings, binary data and the
///   payload are slices of them, not copies.
/// * `Ok(None)`: `buf` holds only part of a packet; read more and call again. Once the fixed
///   header is complete, `buf` has room for the rest of the packet: if it had less, it is
///   replaced by a buffer of exactly the packet's size holding the bytes received so far.
/// * `Err(_)`: the connection must end (with the reason code the error maps to, for MQTT 5). A
///   packet above [`DecodeContext::maximum_packet_size`] is refused as soon as its fixed header
///   (at most 5 bytes) is in, so nothing larger than the limit is ever buffered.
pub fn decode(buf: &mut BytesMut, context: &DecodeContext) -> Result<Option<Packet>, DecodeError> {
    let Some(header) = FixedHeader::parse(buf, context.protocol)? else {
        return Ok(None);
    };
    let size = header.packet_size();
    if size > context.maximum_packet_size as usize {
        return Err(DecodeError::PacketTooLarge {
            size,
            maximum: context.maximum_packet_size,
        });
    }
    if buf.len() < size {
        if buf.capacity() < size {
            // Room for exactly this packet (at most the maximum packet size): `reserve` would
            // round up to twice the current capacity.
            let mut exact = BytesMut::with_capacity(size);
            exact.extend_from_slice(buf);
            *buf = exact;
        }
        return Ok(None);
    }
    if let Some(packet) = decode_bare(buf, &header) {
        buf.advance(size);
        return Ok(Some(packet));
    }
    let mut frame = buf.split_to(size).freeze();
    frame.advance(header.header_length);
    let reader = Reader::new(frame, header.packet_type).with_limits(context.limits);
    let protocol = context.protocol;
    let packet = match header.packet_type {
        PacketType::Connect => Packet::Connect(Box::new(Connect::decode(reader)?)),
        PacketType::ConnAck => Packet::ConnAck(ConnAck::decode(reader, protocol)?),
        PacketType::Publish => Packet::Publish(Publish::decode(reader, header.flags, protocol)?),
        PacketType::PubAck => Packet::PubAck(PubAck::decode(reader, protocol)?),
        PacketType::PubRec => Packet::PubRec(PubRec::decode(reader, protocol)?),
        PacketType::PubRel => Packet::PubRel(PubRel::decode(reader, protocol)?),
        PacketType::PubComp => Packet::PubComp(PubComp::decode(reader, protocol)?),
        PacketType::Subscribe => Packet::Subscribe(Subscribe::decode(reader, protocol)?),
        PacketType::SubAck => Packet::SubAck(SubAck::decode(reader, protocol)?),
        PacketType::Unsubscribe => Packet::Unsubscribe(Unsubscribe::decode(reader, protocol)?),
        PacketType::UnsubAck => Packet::UnsubAck(UnsubAck::decode(reader, protocol)?),
        PacketType::PingReq => {
            reader.finish()?;
            Packet::PingReq
        }
        PacketType::PingResp => {
            reader.finish()?;
            Packet::PingResp
        }
        PacketType::Disconnect => Packet::Disconnect(Disconnect::decode(reader, protocol)?),
        PacketType::Auth if protocol.is_v5() => Packet::Auth(Auth::decode(reader)?),
        PacketType::Auth => {
            return Err(Malformed::PacketTypeNotInProtocol {
                packet: PacketType::Auth,
            }
            .into());
        }
    };
    Ok(Some(packet))
}

/// The packets that are only a packet identifier (an acknowledgement in its short form, with
/// reason code 0x00 [MQTT-3.4.2-1]) or nothing at all (PINGREQ, PINGRESP), read straight from
/// `buf` without splitting it: most of the packets a busy connection receives. `None` for every
/// other packet, and for a zero identifier (left to the full decoder, which reports it).
fn decode_bare(buf: &[u8], header: &FixedHeader) -> Option<Packet> {
    let body = buf.get(header.header_length..header.packet_size())?;
    match (header.packet_type, body) {
        (PacketType::PingReq, []) => Some(Packet::PingReq),
        (PacketType::PingResp, []) => Some(Packet::PingResp),
        (packet_type, &[high, low]) => {
            let packet_id = PacketId::new(u16::from_be_bytes([high, low]))?;
            match packet_type {
                PacketType::PubAck => Some(Packet::PubAck(PubAck::new(packet_id))),
                PacketType::PubRec => Some(Packet::PubRec(PubRec::new(packet_id))),
                PacketType::PubRel => Some(Packet::PubRel(PubRel::new(packet_id))),
                PacketType::PubComp => Some(Packet::PubComp(PubComp::new(packet_id))),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The variable header and payload of one packet type.
pub(crate) trait Body {
    fn packet_type(&self) -> PacketType;

    /// The low nibble of the first byte; only PUBLISH varies it.
    fn flags(&self) -> u8 {
        self.packet_type().fixed_flags()
    }

    /// The Remaining Length at this protocol level.
    fn body_len(&self, protocol: Protocol) -> usize;

    fn encode_body(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError>;
}

pub(crate) fn packet_len(body: &dyn Body, protocol: Protocol) -> usize {
    let len = body.body_len(protocol);
    1 + variable_byte_integer_len(len) + len
}

pub(crate) fn encode_packet(
    body: &dyn Body,
    protocol: Protocol,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let start = out.len();
    let len = body.body_len(protocol);
    out.reserve(1 + variable_byte_integer_len(len) + len);
    out.put_u8(((body.packet_type() as u8) << 4) | body.flags());
    let result =
        put_variable_byte_integer_checked(out, len).and_then(|()| body.encode_body(protocol, out));
    if result.is_err() {
        // Leave nothing half-written behind.
        out.truncate(start);
    }
    debug_assert!(result.is_err() || out.len() - start == packet_len(body, protocol));
    result
}

macro_rules! encodable {
    ($($name:ident),*) => {$(
        impl $name {
            /// Appends this packet, fixed header included, as spoken at `protocol`.
            ///
            /// Fields the level cannot carry (properties and reason codes below MQTT 5) are left
            /// out. On error `out` is left as it was.
            pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
                encode_packet(self, protocol, out)
            }

            /// The number of bytes [`Self::encode`] writes, computed without encoding: the size
            /// to compare with the peer's Maximum Packet Size [MQTT-3.1.2-24].
            pub fn encoded_len(&self, protocol: Protocol) -> usize {
                packet_len(self, protocol)
            }
        }
    )*};
}

encodable!(
    Connect,
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);

/// PINGREQ and PINGRESP have no body.
#[derive(Debug)]
struct Empty(PacketType);

impl Body for Empty {
    fn packet_type(&self) -> PacketType {
        self.0
    }
    fn body_len(&self, _: Protocol) -> usize {
        0
    }
    fn encode_body(&self, _: Protocol, _: &mut BytesMut) -> Result<(), EncodeError> {
        Ok(())
    }
}

impl Packet {
    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.body().packet_type()
    }

    fn body(&self) -> &dyn Body {
        match self {
            Packet::Connect(p) => p.as_ref(),
            Packet::ConnAck(p) => p,
            Packet::Publish(p) => p,
            Packet::PubAck(p) => p,
            Packet::PubRec(p) => p,
            Packet::PubRel(p) => p,
            Packet::PubComp(p) => p,
            Packet::Subscribe(p) => p,
            Packet::SubAck(p) => p,
            Packet::Unsubscribe(p) => p,
            Packet::UnsubAck(p) => p,
            Packet::PingReq => &Empty(PacketType::PingReq),
            Packet::PingResp => &Empty(PacketType::PingResp),
            Packet::Disconnect(p) => p,
            Packet::Auth(p) => p,
        }
    }

    /// Appends this packet, fixed header included, as spoken at `protocol` (CONNECT is always
    /// written at its own level). On error `out` is left as it was.
    pub fn encode(&self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        encode_packet(self.body(), protocol, out)
    }

    /// The number of bytes [`Packet::encode`] writes, computed without encoding.
    pub fn encoded_len(&self, protocol: Protocol) -> usize {
        packet_len(self.body(), protocol)
    }
}

macro_rules! from_packet {
    ($($name:ident),*) => {$(
        impl From<$name> for Packet {
            fn from(packet: $name) -> Self {
                Packet::$name(packet)
            }
        }
    )*};
}

from_packet!(
    ConnAck,
    Publish,
    PubAck,
    PubRec,
    PubRel,
    PubComp,
    Subscribe,
    SubAck,
    Unsubscribe,
    UnsubAck,
    Disconnect,
    Auth
);

impl From<Connect> for Packet {
    fn from(packet: Connect) -> Self {
        Packet::Connect(Box::new(packet))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReasonCode;

    fn decode_all(bytes: &[u8], protocol: Protocol) -> Vec<Result<Packet, DecodeError>> {
        let mut buf = BytesMut::from(bytes);
        let context = DecodeContext::new(protocol);
        let mut out = Vec::new();
        loop {
            match decode(&mut buf, &context) {
                Ok(Some(packet)) => out.push(Ok(packet)),
                Ok(None) => return out,
                Err(error) => {
                    out.push(Err(error));
                    return out;
                }
            }
        }
    }

    #[test]
    fn bare_acknowledgements_decode_in_place_and_leave_the_rest() {
        for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
            // PUBACK 7, PUBREC 8, PUBREL 9, PUBCOMP 10, PINGREQ, then a PUBLISH.
            let mut bytes = vec![
                0x40, 2, 0, 7, 0x50, 2, 0, 8, 0x62, 2, 0, 9, 0x70, 2, 0, 10, 0xC0, 0,
            ];
            if protocol.is_v5() {
                bytes.extend([0x30, 4, 0, 1, b'a', 0]);
            } else {
                bytes.extend([0x30, 3, 0, 1, b'a']);
            }
            let id = |n| PacketId::new(n).unwrap();
            let packets: Vec<Packet> = decode_all(&bytes, protocol)
                .into_iter()
                .map(Result::unwrap)
                .collect();
            assert_eq!(packets.len(), 6, "{protocol:?}");
            assert_eq!(packets[0], Packet::PubAck(PubAck::new(id(7))));
            assert_eq!(packets[1], Packet::PubRec(PubRec::new(id(8))));
            assert_eq!(packets[2], Packet::PubRel(PubRel::new(id(9))));
            assert_eq!(packets[3], Packet::PubComp(PubComp::new(id(10))));
            assert_eq!(packets[4], Packet::PingReq);
            assert!(matches!(&packets[5], Packet::Publish(p) if p.topic.as_str() == "a"));
        }
    }

    #[test]
    fn bare_acknowledgement_with_identifier_zero_is_malformed_mqtt_2_2_1_3() {
        let types = [
            (0x40, PacketType::PubAck),
            (0x50, PacketType::PubRec),
            (0x62, PacketType::PubRel),
            (0x70, PacketType::PubComp),
        ];
        for protocol in [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5] {
            for (first, packet_type) in types {
                let result = decode_all(&[first, 2, 0, 0], protocol).pop().unwrap();
                assert!(
                    matches!(
                        result,
                        Err(DecodeError::Malformed(Malformed::PacketIdentifierZero { packet }))
                            if packet == packet_type
                    ),
                    "{protocol:?} {packet_type:?}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn acknowledgements_of_other_lengths_take_the_full_decoder() {
        // MQTT 5: identifier and reason code 0x10 (No matching subscribers).
        let packets = decode_all(&[0x40, 3, 0, 5, 0x10], Protocol::V5);
        let Some(Ok(Packet::PubAck(ack))) = packets.first() else {
            panic!("{packets:?}");
        };
        assert_eq!(ack.reason_code, ReasonCode::NO_MATCHING_SUBSCRIBERS);
        // MQTT 3.1.1 has no reason code: a third byte is malformed.
        assert!(decode_all(&[0x40, 3, 0, 5, 0x10], Protocol::V3_1_1)[0].is_err());
        // PINGREQ with a body is malformed.
        assert!(decode_all(&[0xC0, 1, 0], Protocol::V3_1_1)[0].is_err());
    }

    fn encoded(packet: impl Into<Packet>, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        packet.into().encode(protocol, &mut out).unwrap();
        out
    }

    fn limited(bytes: &mut BytesMut, limits: DecodeLimits) -> Result<Option<Packet>, DecodeError> {
        decode(bytes, &DecodeContext::new(Protocol::V5).with_limits(limits))
    }

    #[test]
    fn filters_beyond_the_limit_are_refused_with_quota_exceeded() {
        use crate::{Subscription, SubscriptionOptions, Unsubscribe};
        let id = PacketId::new(1).unwrap();
        let limits = DecodeLimits {
            filters: 2,
            ..DecodeLimits::DEFAULT
        };
        let filter = |name: &'static str| Subscription {
            filter: crate::MqttString::from_static(name),
            options: SubscriptionOptions::default(),
        };
        let two = Subscribe::new(id, vec![filter("a"), filter("b")]);
        assert!(limited(&mut encoded(two, Protocol::V5), limits).is_ok());
        let three = Subscribe::new(id, vec![filter("a"), filter("b"), filter("c")]);
        let error = limited(&mut encoded(three, Protocol::V5), limits).unwrap_err();
        assert_eq!(
            error,
            DecodeError::LimitExceeded {
                packet: PacketType::Subscribe,
                limit: crate::Limit::Filters,
                maximum: 2,
            }
        );
        assert_eq!(error.reason_code(), ReasonCode::QUOTA_EXCEEDED);
        let names = ["a", "b", "c"].map(crate::MqttString::from_static).to_vec();
        let unsubscribe = Unsubscribe::new(id, names);
        assert!(matches!(
            limited(&mut encoded(unsubscribe, Protocol::V5), limits),
            Err(DecodeError::LimitExceeded {
                packet: PacketType::Unsubscribe,
                ..
            })
        ));
    }

    #[test]
    fn a_connect_and_its_will_share_one_user_property_limit() {
        use crate::{Connect, UserProperty, Will};
        let property = || {
            UserProperty::new(
                crate::MqttString::from_static("k"),
                crate::MqttString::from_static("v"),
            )
        };
        let mut connect = Connect::new(Protocol::V5, crate::MqttString::from_static("c"));
        connect.properties.user_properties = vec![property(), property()].into();
        connect.will = Some(Will {
            topic: crate::MqttString::from_static("w"),
            payload: bytes::Bytes::new(),
            qos: crate::QoS::AtMostOnce,
            retain: false,
            properties: crate::WillProperties {
                user_properties: vec![property(), property()].into(),
                ..crate::WillProperties::default()
            },
        });
        let limits = |user_properties| DecodeLimits {
            user_properties,
            ..DecodeLimits::DEFAULT
        };
        assert!(limited(&mut encoded(connect.clone(), Protocol::V5), limits(4)).is_ok());
        let error = limited(&mut encoded(connect, Protocol::V5), limits(3)).unwrap_err();
        assert!(
            matches!(
                error,
                DecodeError::LimitExceeded {
                    packet: PacketType::Connect,
                    limit: crate::Limit::UserProperties,
                    maximum: 3
                }
            ),
            "{error:?}"
        );
    }
}
