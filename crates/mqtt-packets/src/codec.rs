//! `tokio_util::codec` support (feature `codec`).

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use crate::{DecodeContext, DecodeError, EncodeError, Packet, Protocol, decode};

/// A [`Decoder`] and [`Encoder`] of MQTT packets for `tokio_util::codec::Framed`.
///
/// It follows the protocol level of the connection: decoding or encoding a CONNECT switches it to
/// the CONNECT's level, so one codec serves a client (which encodes CONNECT) and a server (which
/// decodes it) without further setup.
#[derive(Debug, Clone, Copy)]
pub struct MqttCodec {
    context: DecodeContext,
}

/// An error of [`MqttCodec`]: I/O, or a packet that cannot be decoded or encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The underlying transport failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// A packet could not be decoded.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A packet could not be encoded.
    #[error(transparent)]
    Encode(#[from] EncodeError),
}

impl MqttCodec {
    /// A codec for this protocol level, accepting packets up to the protocol's limit.
    pub fn new(protocol: Protocol) -> Self {
        Self {
            context: DecodeContext::new(protocol),
        }
    }

    /// The same codec refusing inbound packets above `maximum_packet_size` bytes.
    pub fn with_maximum_packet_size(self, maximum_packet_size: u32) -> Self {
        Self {
            context: self.context.with_maximum_packet_size(maximum_packet_size),
        }
    }

    /// The protocol level currently in use.
    pub fn protocol(&self) -> Protocol {
        self.context.protocol
    }

    /// Changes the protocol level.
    pub fn set_protocol(&mut self, protocol: Protocol) {
        self.context.protocol = protocol;
    }
}

impl Decoder for MqttCodec {
    type Item = Packet;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Packet>, CodecError> {
        let packet = decode(src, &self.context)?;
        if let Some(Packet::Connect(connect)) = &packet {
            self.context.protocol = connect.protocol;
        }
        Ok(packet)
    }
}

impl Encoder<Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Packet::Connect(connect) = &packet {
            self.context.protocol = connect.protocol;
        }
        packet.encode(self.context.protocol, dst)?;
        Ok(())
    }
}

impl Encoder<&Packet> for MqttCodec {
    type Error = CodecError;

    fn encode(&mut self, packet: &Packet, dst: &mut BytesMut) -> Result<(), CodecError> {
        if let Packet::Connect(connect) = packet {
            self.context.protocol = connect.protocol;
        }
        packet.encode(self.context.protocol, dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Connect, MqttString, PacketId, PubAck, ReasonCode};

    #[test]
    fn follows_the_level_of_connect() {
        let mut client = MqttCodec::new(Protocol::V5);
        let mut server = MqttCodec::new(Protocol::V5);
        let mut wire = BytesMut::new();
        let connect = Connect::new(Protocol::V3_1_1, MqttString::from_static("c1"));
        client
            .encode(Packet::from(connect.clone()), &mut wire)
            .unwrap();
        assert_eq!(client.protocol(), Protocol::V3_1_1);
        assert_eq!(
            server.decode(&mut wire).unwrap(),
            Some(Packet::from(connect))
        );
        assert_eq!(server.protocol(), Protocol::V3_1_1);

        // 3.1.1 PUBACK: the reason code is not on the wire.
        let id = PacketId::new(7).unwrap();
        let ack = PubAck::with_reason(id, ReasonCode::NOT_AUTHORIZED);
        server.encode(Packet::from(ack), &mut wire).unwrap();
        assert_eq!(&wire[..], &[0x40, 0x02, 0x00, 0x07]);
    }

    #[test]
    fn oversize_packet_is_refused_from_its_header() {
        let mut codec = MqttCodec::new(Protocol::V5).with_maximum_packet_size(1024);
        let mut wire = BytesMut::from(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F][..]);
        match codec.decode(&mut wire) {
            Err(CodecError::Decode(DecodeError::PacketTooLarge { size, maximum })) => {
                assert_eq!((size, maximum), (268_435_460, 1024));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
