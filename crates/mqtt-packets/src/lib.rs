//! The MQTT wire codec of Mochi MQTT: every control packet of MQTT 3.1, 3.1.1 and 5.0, in both
//! directions, for brokers and clients alike.
//!
//! * **Incremental and bounded.** [`decode`] takes bytes as they arrive and returns `Ok(None)`
//!   until a whole packet is in. A packet larger than the maximum packet size is refused from its
//!   fixed header (five bytes at most), before its body is buffered.
//! * **Zero-copy.** Topics, strings, binary properties and payloads are [`bytes::Bytes`] slices
//!   of the read buffer. UTF-8 strings are validated as they are decoded ([MQTT-1.5.4-1],
//!   [MQTT-1.5.4-2]).
//! * **One value, three dialects.** The protocol level is part of the decode and encode context.
//!   The same [`Publish`] encodes as a 3.1.1 or a 5.0 packet; properties and reason codes are left
//!   out below 5. [`Packet::encoded_len`] gives the size without encoding, to honour a peer's
//!   Maximum Packet Size.
//! * **Strict, with errors that say who is at fault.** Reserved flags, QoS 3, bad UTF-8, a
//!   property not allowed in its packet, a repeated property, a zero packet identifier, an empty
//!   SUBSCRIBE: each is a [`DecodeError`] naming the spec statement and mapping to the reason code
//!   to send ([`DecodeError::reason_code`]). No input makes this crate panic.
//!
//! # Example
//!
//! ```
//! use bytes::BytesMut;
//! use mqtt_packets::{
//!     DecodeContext, MqttString, Packet, PacketId, Protocol, Publish, QoS, ReasonCode, decode,
//! };
//!
//! // A client publishes at QoS 1 over MQTT 5...
//! let mut publish = Publish::new(MqttString::from_static("sensors/1/temp"), &b"21.5"[..]);
//! publish.qos = QoS::AtLeastOnce;
//! publish.packet_id = PacketId::new(1);
//! publish.properties.message_expiry_interval = Some(60);
//!
//! let mut wire = BytesMut::new();
//! publish.encode(Protocol::V5, &mut wire)?;
//! assert_eq!(wire.len(), publish.encoded_len(Protocol::V5));
//!
//! // ...and the broker decodes it, a few bytes at a time.
//! let context = DecodeContext::new(Protocol::V5).with_maximum_packet_size(1024);
//! let mut input = BytesMut::new();
//! let mut decoded = None;
//! for chunk in wire.chunks(3) {
//!     input.extend_from_slice(chunk);
//!     if let Some(packet) = decode(&mut input, &context)? {
//!         decoded = Some(packet);
//!     }
//! }
//! assert_eq!(decoded, Some(Packet::Publish(publish)));
//!
//! // Bad input is an error with the reason code to answer with: here QoS 3.
//! let mut bad = BytesMut::from(&[0x36, 0x05, 0x00, 0x01, b'a', 0x00, 0x01][..]);
//! let error = decode(&mut bad, &context).unwrap_err();
//! assert_eq!(error.reason_code(), ReasonCode::MALFORMED_PACKET);
//! assert_eq!(error.spec_statement(), Some("MQTT-3.3.1-4"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! * `codec` (off by default): [`MqttCodec`], a `tokio_util::codec` decoder and encoder. Without
//!   it the crate depends only on `bytes` and `thiserror`.
//!
//! # What the codec leaves to its user
//!
//! Rules that need connection or session state are the broker's (or client's): topic alias
//! tables, Receive Maximum, the Maximum QoS and Retain Available it advertised, whether a client
//! may send a Subscription Identifier, topic-filter syntax (refused per filter in SUBACK), and
//! `$share/` rules. Which packets a server may receive from a client (e.g. CONNACK) is also left to
//! the caller, so that clients can use the same decoder.

mod ack;
#[cfg(feature = "codec")]
mod codec;
mod connack;
mod connect;
mod data;
mod disconnect;
mod error;
mod header;
mod packet;
mod properties;
mod protocol;
mod publish;
mod qos;
mod reason_code;
mod string;
mod subscribe;
mod unsubscribe;
mod user_properties;
mod varint;

use std::num::NonZeroU16;

pub use ack::{PubAck, PubComp, PubRec, PubRel};
#[cfg(feature = "codec")]
pub use codec::{CodecError, MqttCodec};
pub use connack::ConnAck;
pub use connect::{Connect, Will};
pub use disconnect::{Auth, Disconnect};
pub use error::{DecodeError, EncodeError, Limit, Malformed, ProtocolViolation};
pub use header::{FixedHeader, PacketType};
pub use packet::{DecodeContext, DecodeLimits, PROTOCOL_MAXIMUM_PACKET_SIZE, Packet, decode};
pub use properties::{
    AckProperties, AuthProperties, ConnAckProperties, ConnectProperties, DisconnectProperties,
    PayloadFormatIndicator, PropertyId, PublishProperties, SubscribeProperties,
    SubscriptionIdentifier, UnsubscribeProperties, WillProperties,
};
pub use protocol::Protocol;
pub use publish::{Publish, PublishRef};
pub use qos::QoS;
pub use reason_code::ReasonCode;
pub use string::{InvalidString, MAX_STRING_LEN, MqttString, UserProperty};
pub use subscribe::{RetainHandling, SubAck, Subscribe, Subscription, SubscriptionOptions};
pub use unsubscribe::{UnsubAck, Unsubscribe};
pub use user_properties::UserProperties;
pub use varint::{
    VARIABLE_BYTE_INTEGER_MAX, read_variable_byte_integer, variable_byte_integer_len,
};

pub(crate) use publish::{is_valid_topic_name, reject_wildcard_response_topic};

/// A Packet Identifier: never 0 where the protocol requires one [MQTT-2.2.1-3].
pub type PacketId = NonZeroU16;
