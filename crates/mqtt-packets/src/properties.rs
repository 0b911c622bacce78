//! MQTT 5 properties (§2.2.2): identifiers, value types, and one typed set per packet.
//!
//! Each set accepts only the properties the spec allows in its packet; any other id is
//! [`Malformed::PropertyNotAllowed`]. A property that may appear once and appears twice is
//! [`ProtocolViolation::DuplicateProperty`]. User Properties (and Subscription Identifiers on
//! PUBLISH) may repeat and keep their order.

use std::fmt;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};

use crate::data::{self, Reader};
use crate::varint::{
    VARIABLE_BYTE_INTEGER_MAX, put_variable_byte_integer, variable_byte_integer_len,
};
use crate::{
    DecodeError, EncodeError, Malformed, MqttString, ProtocolViolation, QoS, UserProperties,
};

macro_rules! property_ids {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $text:literal; )*) => {
        /// A property identifier (spec table 2-4).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum PropertyId {
            $( $(#[$doc])* $name = $value, )*
        }

        impl PropertyId {
            /// The property for an identifier, if it exists.
            pub const fn from_u32(id: u32) -> Option<Self> {
                match id {
                    $( $value => Some(Self::$name), )*
                    _ => None,
                }
            }

            /// The spec's name of the property.
            pub const fn name(self) -> &'static str {
                match self {
                    $( Self::$name => $text, )*
                }
            }
        }
    };
}

property_ids! {
    /// 0x01, Byte.
    PayloadFormatIndicator = 0x01, "Payload Format Indicator";
    /// 0x02, Four Byte Integer.
    MessageExpiryInterval = 0x02, "Message Expiry Interval";
    /// 0x03, UTF-8 String.
    ContentType = 0x03, "Content Type";
    /// 0x08, UTF-8 String.
    ResponseTopic = 0x08, "Response Topic";
    /// 0x09, Binary Data.
    CorrelationData = 0x09, "Correlation Data";
    /// 0x0B, Variable Byte Integer.
    SubscriptionIdentifier = 0x0B, "Subscription Identifier";
    /// 0x11, Four Byte Integer.
    SessionExpiryInterval = 0x11, "Session Expiry Interval";
    /// 0x12, UTF-8 String.
    AssignedClientIdentifier = 0x12, "Assigned Client Identifier";
    /// 0x13, Two Byte Integer.
    ServerKeepAlive = 0x13, "Server Keep Alive";
    /// 0x15, UTF-8 String.
    AuthenticationMethod = 0x15, "Authentication Method";
    /// 0x16, Binary Data.
    AuthenticationData = 0x16, "Authentication Data";
    /// 0x17, Byte.
    RequestProblemInformation = 0x17, "Request Problem Information";
    /// 0x18, Four Byte Integer.
    WillDelayInterval = 0x18, "Will Delay Interval";
    /// 0x19, Byte.
    RequestResponseInformation = 0x19, "Request Response Information";
    /// 0x1A, UTF-8 String.
    ResponseInformation = 0x1A, "Response Information";
    /// 0x1C, UTF-8 String.
    ServerReference = 0x1C, "Server Reference";
    /// 0x1F, UTF-8 String.
    ReasonString = 0x1F, "Reason String";
    /// 0x21, Two Byte Integer.
    ReceiveMaximum = 0x21, "Receive Maximum";
    /// 0x22, Two Byte Integer.
    TopicAliasMaximum = 0x22, "Topic Alias Maximum";
    /// 0x23, Two Byte Integer.
    TopicAlias = 0x23, "Topic Alias";
    /// 0x24, Byte.
    MaximumQoS = 0x24, "Maximum QoS";
    /// 0x25, Byte.
    RetainAvailable = 0x25, "Retain Available";
    /// 0x26, UTF-8 String Pair.
    UserProperty = 0x26, "User Property";
    /// 0x27, Four Byte Integer.
    MaximumPacketSize = 0x27, "Maximum Packet Size";
    /// 0x28, Byte.
    WildcardSubscriptionAvailable = 0x28, "Wildcard Subscription Available";
    /// 0x29, Byte.
    SubscriptionIdentifiersAvailable = 0x29, "Subscription Identifier Available";
    /// 0x2A, Byte.
    SharedSubscriptionAvailable = 0x2A, "Shared Subscription Available";
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:#04x})", self.name(), *self as u8)
    }
}

/// The Payload Format Indicator (0x01) of a PUBLISH or a Will.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PayloadFormatIndicator {
    /// 0: unspecified bytes (the same as absent).
    #[default]
    Unspecified = 0,
    /// 1: the payload is UTF-8 text.
    Utf8 = 1,
}

/// A Subscription Identifier: 1 to 268,435,455 (§3.8.2.1.2). Zero is not representable.
pub type SubscriptionIdentifier = NonZeroU32;

/// How a property value is read, sized and written. Range rules that make a value a Protocol Error
/// (e.g. Receive Maximum 0) live in `decode`.
pub(crate) trait PropertyValue: Sized {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError>;
    fn encoded_len(&self, id: PropertyId) -> usize;
    fn encode(&self, out: &mut BytesMut, id: PropertyId) -> Result<(), EncodeError>;
}

fn invalid(property: PropertyId, value: u32) -> DecodeError {
    ProtocolViolation::InvalidPropertyValue { property, value }.into()
}

/// A Byte property whose only values are 0 and 1.
impl PropertyValue for bool {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        match reader.u8(id.name())? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(id, other.into())),
        }
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        1
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u8(u8::from(*self));
        Ok(())
    }
}

impl PropertyValue for PayloadFormatIndicator {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        match reader.u8(id.name())? {
            0 => Ok(Self::Unspecified),
            1 => Ok(Self::Utf8),
            other => Err(invalid(id, other.into())),
        }
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        1
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u8(*self as u8);
        Ok(())
    }
}

/// Maximum QoS (0x24): only 0 or 1 may be sent; 2 is expressed by leaving it out (§3.2.2.3.4).
impl PropertyValue for QoS {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        match reader.u8(id.name())? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            other => Err(invalid(id, other.into())),
        }
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        1
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u8(self.as_u8());
        Ok(())
    }
}

impl PropertyValue for u16 {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        reader.u16(id.name())
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        2
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u16(*self);
        Ok(())
    }
}

/// Receive Maximum and Topic Alias: 0 is an error (0x82, or 0x94 for Topic Alias
/// [MQTT-3.3.2-8]).
impl PropertyValue for NonZeroU16 {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        let value = reader.u16(id.name())?;
        NonZeroU16::new(value).ok_or_else(|| {
            if id == PropertyId::TopicAlias {
                ProtocolViolation::TopicAliasZero.into()
            } else {
                invalid(id, 0)
            }
        })
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        2
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u16(self.get());
        Ok(())
    }
}

impl PropertyValue for u32 {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        reader.u32(id.name())
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        4
    }
    fn encode(&self, out: &mut BytesMut, _: PropertyId) -> Result<(), EncodeError> {
        out.put_u32(*self);
        Ok(())
    }
}

/// Maximum Packet Size (Four Byte Integer, 0 is an error) and Subscription Identifier (Variable
/// Byte Integer, 0 is an error).
impl PropertyValue for NonZeroU32 {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        let value = if id == PropertyId::SubscriptionIdentifier {
            reader.variable_byte_integer(id.name())?
        } else {
            reader.u32(id.name())?
        };
        NonZeroU32::new(value).ok_or_else(|| invalid(id, 0))
    }
    fn encoded_len(&self, id: PropertyId) -> usize {
        if id == PropertyId::SubscriptionIdentifier {
            subscription_identifier_len(*self)
        } else {
            4
        }
    }
    fn encode(&self, out: &mut BytesMut, id: PropertyId) -> Result<(), EncodeError> {
        if id == PropertyId::SubscriptionIdentifier {
            put_subscription_identifier(out, *self)
        } else {
            out.put_u32(self.get());
            Ok(())
        }
    }
}

pub(crate) fn subscription_identifier_len(value: NonZeroU32) -> usize {
    variable_byte_integer_len(value.get() as usize)
}

pub(crate) fn put_subscription_identifier(
    out: &mut BytesMut,
    value: NonZeroU32,
) -> Result<(), EncodeError> {
    if value.get() > VARIABLE_BYTE_INTEGER_MAX {
        return Err(EncodeError::SubscriptionIdentifierTooLarge(value.get()));
    }
    put_variable_byte_integer(out, value.get() as usize);
    Ok(())
}

impl PropertyValue for MqttString {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        reader.string(id.name())
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        data::string_len(self)
    }
    fn encode(&self, out: &mut BytesMut, id: PropertyId) -> Result<(), EncodeError> {
        data::put_string(out, self, id.name())
    }
}

impl PropertyValue for Bytes {
    fn decode(id: PropertyId, reader: &mut Reader) -> Result<Self, DecodeError> {
        reader.binary(id.name())
    }
    fn encoded_len(&self, _: PropertyId) -> usize {
        data::binary_len(self)
    }
    fn encode(&self, out: &mut BytesMut, id: PropertyId) -> Result<(), EncodeError> {
        data::put_binary(out, self, id.name())
    }
}

fn set_once<T: PropertyValue>(
    slot: &mut Option<T>,
    id: PropertyId,
    context: &'static str,
    reader: &mut Reader,
) -> Result<(), DecodeError> {
    if slot.is_some() {
        return Err(ProtocolViolation::DuplicateProperty {
            property: id,
            context,
        }
        .into());
    }
    *slot = Some(T::decode(id, reader)?);
    Ok(())
}

/// Reads the Property Length and returns a reader over exactly the properties.
pub(crate) fn property_block(reader: &mut Reader) -> Result<Reader, DecodeError> {
    let len = reader.variable_byte_integer("property length")? as usize;
    reader.take(len, "properties")
}

fn read_id(reader: &mut Reader, context: &'static str) -> Result<PropertyId, DecodeError> {
    // Property ids are Variable Byte Integers (§2.2.2.2), though all fit in one byte.
    let raw = reader.variable_byte_integer("property identifier")?;
    PropertyId::from_u32(raw)
        .ok_or_else(|| Malformed::PropertyNotAllowed { id: raw, context }.into())
}

/// Generates a property set: `for ""` names errors after the packet being decoded, any other
/// literal (Will properties) names them with that literal.
macro_rules! property_set {
    (
        $(#[$meta:meta])*
        $name:ident for $context:literal {
            $( $(#[$fmeta:meta])* $field:ident : $ty:ty = $id:ident, )*
        }
        $( repeated $(#[$rmeta:meta])* $rfield:ident : $rty:ty = $rid:ident; )?
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: Option<$ty>, )*
            $( $(#[$rmeta])* pub $rfield: Vec<$rty>, )?
            /// User Properties (0x26), in packet order.
            pub user_properties: UserProperties,
        }

        impl $name {
            /// Whether no property is set.
            pub fn is_empty(&self) -> bool {
                true $( && self.$field.is_none() )* $( && self.$rfield.is_empty() )?
                    && self.user_properties.is_empty()
            }

            /// Reads a Property Length and the properties it covers.
            pub(crate) fn decode(reader: &mut Reader) -> Result<Self, DecodeError> {
                // The error context: the packet's name, or the literal for Will properties.
                let context: &'static str =
                    if $context.is_empty() { reader.packet().name() } else { $context };
                let mut block = property_block(reader)?;
                let mut properties = Self::default();
                let mut user_properties = Vec::new();
                while !block.is_empty() {
                    let id = read_id(&mut block, context)?;
                    match id {
                        $( PropertyId::$id => {
                            set_once(&mut properties.$field, id, context, &mut block)?
                        } )*
                        $( PropertyId::$rid => {
                            properties.$rfield.push(<$rty>::decode(id, &mut block)?)
                        } )?
                        PropertyId::UserProperty => user_properties.push(block.user_property()?),
                        #[allow(unreachable_patterns)]
                        other => {
                            return Err(Malformed::PropertyNotAllowed {
                                id: other as u32,
                                context,
                            }
                            .into())
                        }
                    }
                }
                properties.user_properties = user_properties.into();
                reader.spent_by(&block);
                Ok(properties)
            }

            /// The size of the properties, without the Property Length.
            pub(crate) fn len(&self) -> usize {
                let mut len = 0;
                $( if let Some(value) = &self.$field {
                    len += 1 + value.encoded_len(PropertyId::$id);
                } )*
                $( for value in &self.$rfield {
                    len += 1 + value.encoded_len(PropertyId::$rid);
                } )?
                for property in &self.user_properties {
                    len += 1 + data::user_property_len(property);
                }
                len
            }

            /// The size of the Property Length and the properties.
            pub(crate) fn block_len(&self) -> usize {
                let len = self.len();
                variable_byte_integer_len(len) + len
            }

            /// Writes the Property Length and the properties.
            pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
                data::put_variable_byte_integer_checked(out, self.len())?;
                $( if let Some(value) = &self.$field {
                    out.put_u8(PropertyId::$id as u8);
                    value.encode(out, PropertyId::$id)?;
                } )*
                $( for value in &self.$rfield {
                    out.put_u8(PropertyId::$rid as u8);
                    value.encode(out, PropertyId::$rid)?;
                } )?
                for property in &self.user_properties {
                    out.put_u8(PropertyId::UserProperty as u8);
                    data::put_user_property(out, property)?;
                }
                Ok(())
            }
        }
    };
}

property_set! {
    /// CONNECT properties (§3.1.2.11).
    ConnectProperties for "" {
        /// Session Expiry Interval (0x11), seconds; absent means 0, `u32::MAX` never expires.
        session_expiry_interval: u32 = SessionExpiryInterval,
        /// Receive Maximum (0x21); absent means 65,535.
        receive_maximum: NonZeroU16 = ReceiveMaximum,
        /// Maximum Packet Size (0x27) the client accepts.
        maximum_packet_size: NonZeroU32 = MaximumPacketSize,
        /// Topic Alias Maximum (0x22) the client accepts; absent means 0.
        topic_alias_maximum: u16 = TopicAliasMaximum,
        /// Request Response Information (0x19); absent means false.
        request_response_information: bool = RequestResponseInformation,
        /// Request Problem Information (0x17); absent means true.
        request_problem_information: bool = RequestProblemInformation,
        /// Authentication Method (0x15), for enhanced authentication.
        authentication_method: MqttString = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes = AuthenticationData,
    }
}

property_set! {
    /// Will properties, in the CONNECT payload (§3.1.3.2).
    WillProperties for "Will properties" {
        /// Will Delay Interval (0x18), seconds.
        will_delay_interval: u32 = WillDelayInterval,
        /// Payload Format Indicator (0x01).
        payload_format_indicator: PayloadFormatIndicator = PayloadFormatIndicator,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: u32 = MessageExpiryInterval,
        /// Content Type (0x03).
        content_type: MqttString = ContentType,
        /// Response Topic (0x08); no wildcards [MQTT-3.3.2-14].
        response_topic: MqttString = ResponseTopic,
        /// Correlation Data (0x09).
        correlation_data: Bytes = CorrelationData,
    }
}

property_set! {
    /// CONNACK properties (§3.2.2.3).
    ConnAckProperties for "" {
        /// Session Expiry Interval (0x11) the server uses, when it differs from the client's.
        session_expiry_interval: u32 = SessionExpiryInterval,
        /// Receive Maximum (0x21) of the server; absent means 65,535.
        receive_maximum: NonZeroU16 = ReceiveMaximum,
        /// Maximum QoS (0x24): 0 or 1; absent means 2.
        maximum_qos: QoS = MaximumQoS,
        /// Retain Available (0x25); absent means true.
        retain_available: bool = RetainAvailable,
        /// Maximum Packet Size (0x27) the server accepts.
        maximum_packet_size: NonZeroU32 = MaximumPacketSize,
        /// Assigned Client Identifier (0x12), when the client sent an empty one.
        assigned_client_identifier: MqttString = AssignedClientIdentifier,
        /// Topic Alias Maximum (0x22) the server accepts; absent means 0.
        topic_alias_maximum: u16 = TopicAliasMaximum,
        /// Reason String (0x1F).
        reason_string: MqttString = ReasonString,
        /// Wildcard Subscription Available (0x28); absent means true.
        wildcard_subscription_available: bool = WildcardSubscriptionAvailable,
        /// Subscription Identifiers Available (0x29); absent means true.
        subscription_identifiers_available: bool = SubscriptionIdentifiersAvailable,
        /// Shared Subscription Available (0x2A); absent means true.
        shared_subscription_available: bool = SharedSubscriptionAvailable,
        /// Server Keep Alive (0x13), replacing the client's Keep Alive.
        server_keep_alive: u16 = ServerKeepAlive,
        /// Response Information (0x1A).
        response_information: MqttString = ResponseInformation,
        /// Server Reference (0x1C).
        server_reference: MqttString = ServerReference,
        /// Authentication Method (0x15).
        authentication_method: MqttString = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes = AuthenticationData,
    }
}

property_set! {
    /// PUBLISH properties (§3.3.2.3).
    PublishProperties for "" {
        /// Payload Format Indicator (0x01).
        payload_format_indicator: PayloadFormatIndicator = PayloadFormatIndicator,
        /// Message Expiry Interval (0x02), seconds.
        message_expiry_interval: u32 = MessageExpiryInterval,
        /// Topic Alias (0x23); 0 is refused with 0x94 [MQTT-3.3.2-8].
        topic_alias: NonZeroU16 = TopicAlias,
        /// Response Topic (0x08); no wildcards [MQTT-3.3.2-14].
        response_topic: MqttString = ResponseTopic,
        /// Correlation Data (0x09).
        correlation_data: Bytes = CorrelationData,
        /// Content Type (0x03).
        content_type: MqttString = ContentType,
    }
    repeated
    /// Subscription Identifiers (0x0B) of the subscriptions that caused this delivery
    /// (server to client only; a client PUBLISH with one is a protocol error the broker checks,
    /// [MQTT-3.3.4-6]).
    subscription_identifiers: NonZeroU32 = SubscriptionIdentifier;
}

property_set! {
    /// Properties of PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK and UNSUBACK.
    AckProperties for "" {
        /// Reason String (0x1F).
        reason_string: MqttString = ReasonString,
    }
}

property_set! {
    /// SUBSCRIBE properties (§3.8.2.1).
    SubscribeProperties for "" {
        /// Subscription Identifier (0x0B): 1 to 268,435,455.
        subscription_identifier: NonZeroU32 = SubscriptionIdentifier,
    }
}

property_set! {
    /// UNSUBSCRIBE properties (§3.10.2.1): only User Properties.
    UnsubscribeProperties for "" {}
}

property_set! {
    /// DISCONNECT properties (§3.14.2.2).
    DisconnectProperties for "" {
        /// Session Expiry Interval (0x11); client to server only [MQTT-3.14.2-2].
        session_expiry_interval: u32 = SessionExpiryInterval,
        /// Reason String (0x1F).
        reason_string: MqttString = ReasonString,
        /// Server Reference (0x1C).
        server_reference: MqttString = ServerReference,
    }
}

property_set! {
    /// AUTH properties (§3.15.2.2).
    AuthProperties for "" {
        /// Authentication Method (0x15); required.
        authentication_method: MqttString = AuthenticationMethod,
        /// Authentication Data (0x16).
        authentication_data: Bytes = AuthenticationData,
        /// Reason String (0x1F).
        reason_string: MqttString = ReasonString,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PacketType;

    fn decode<T>(
        bytes: &'static [u8],
        f: fn(&mut Reader) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        let mut reader = Reader::new(Bytes::from_static(bytes), PacketType::Publish);
        f(&mut reader)
    }

    #[test]
    fn user_properties_repeat_and_keep_order_mqtt_3_3_2_18() {
        let props = decode(
            b"\x0E\x26\x00\x01b\x00\x011\x26\x00\x01a\x00\x012",
            PublishProperties::decode,
        )
        .unwrap();
        let names: Vec<&str> = props
            .user_properties
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn duplicate_is_a_protocol_error() {
        let error = decode(b"\x04\x01\x01\x01\x00", PublishProperties::decode).unwrap_err();
        assert_eq!(
            error,
            ProtocolViolation::DuplicateProperty {
                property: PropertyId::PayloadFormatIndicator,
                context: "PUBLISH"
            }
            .into()
        );
        assert_eq!(error.reason_code(), crate::ReasonCode::PROTOCOL_ERROR);
    }

    #[test]
    fn subscription_identifier_may_repeat_in_publish() {
        let props = decode(b"\x05\x0B\x01\x0B\x80\x01", PublishProperties::decode).unwrap();
        let ids: Vec<u32> = props
            .subscription_identifiers
            .iter()
            .map(|id| id.get())
            .collect();
        assert_eq!(ids, [1, 128]);
        assert_eq!(props.len(), 5);
    }

    #[test]
    fn property_not_allowed_is_malformed() {
        // Session Expiry Interval in PUBLISH.
        let error = decode(b"\x05\x11\x00\x00\x00\x01", PublishProperties::decode).unwrap_err();
        assert_eq!(error.reason_code(), crate::ReasonCode::MALFORMED_PACKET);
        // An id that does not exist.
        let error = decode(b"\x01\x7F", PublishProperties::decode).unwrap_err();
        assert_eq!(
            error,
            Malformed::PropertyNotAllowed {
                id: 0x7F,
                context: "PUBLISH"
            }
            .into()
        );
    }

    #[test]
    fn topic_alias_zero_is_0x94_mqtt_3_3_2_8() {
        let error = decode(b"\x03\x23\x00\x00", PublishProperties::decode).unwrap_err();
        assert_eq!(error.reason_code(), crate::ReasonCode::TOPIC_ALIAS_INVALID);
    }

    #[test]
    fn property_length_beyond_the_packet_is_malformed() {
        let error = decode(b"\x05\x01\x01", PublishProperties::decode).unwrap_err();
        assert!(matches!(
            error,
            DecodeError::Malformed(Malformed::UnexpectedEnd { .. })
        ));
    }
}
