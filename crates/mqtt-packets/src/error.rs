//! Decode and encode errors, grouped by who is at fault, each mapping to a reason code.

use crate::{PacketType, PropertyId, ReasonCode};

/// Why a packet could not be decoded.
///
/// The variants say who is at fault: the peer sent bytes that do not parse
/// ([`DecodeError::Malformed`], reason code 0x81), bytes that parse but break a rule of the
/// protocol ([`DecodeError::Protocol`], 0x82 or a more specific code), a packet above our limit
/// ([`DecodeError::PacketTooLarge`], 0x95), a packet within that size that carries more than a
/// [`crate::DecodeLimits`] allows ([`DecodeError::LimitExceeded`], 0x97), or a CONNECT for a protocol we do not speak
/// ([`DecodeError::UnsupportedProtocol`], 0x84). [`DecodeError::reason_code`] gives the code to send
/// in a v5 CONNACK or DISCONNECT; a 3.x peer is simply disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes do not form a valid packet (0x81).
    #[error("malformed packet: {0}")]
    Malformed(#[from] Malformed),
    /// The packet parses but breaks a protocol rule (0x82, or a more specific code).
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolViolation),
    /// The fixed header announces a packet larger than the maximum packet size (0x95).
    ///
    /// Detected from the fixed header alone, before the body is buffered
    /// ([MQTT-3.2.2-15]; the size includes the fixed header, §2.1.4).
    #[error(
        "packet of {size} bytes exceeds the maximum packet size of {maximum} bytes [MQTT-3.2.2-15]"
    )]
    PacketTooLarge {
        /// Size of the whole packet, fixed header included.
        size: usize,
        /// The limit in force.
        maximum: u32,
    },
    /// The packet carries more User Properties, or more topic filters, than the receiver's
    /// [`crate::DecodeLimits`] allow (0x97 Quota exceeded). Detected while decoding, before the
    /// list is built: a packet full of tiny entries cannot make the receiver allocate many times
    /// its size.
    #[error("{packet} carries more {limit} than the limit of {maximum}")]
    LimitExceeded {
        /// The packet type.
        packet: PacketType,
        /// Which limit.
        limit: Limit,
        /// The limit in force.
        maximum: u32,
    },
    /// CONNECT names a protocol or level this crate does not speak (0x84;
    /// CONNACK return code 1 for 3.x clients) [MQTT-3.1.2-1] [MQTT-3.1.2-2].
    #[error("unsupported protocol name {name:?} at level {level} [MQTT-3.1.2-2]")]
    UnsupportedProtocol {
        /// The protocol name as sent, lossily decoded.
        name: String,
        /// The protocol level byte.
        level: u8,
    },
}

impl DecodeError {
    /// The MQTT 5 reason code for a CONNACK or DISCONNECT that reports this error.
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::Malformed(_) => ReasonCode::MALFORMED_PACKET,
            Self::Protocol(violation) => violation.reason_code(),
            Self::PacketTooLarge { .. } => ReasonCode::PACKET_TOO_LARGE,
            Self::LimitExceeded { .. } => ReasonCode::QUOTA_EXCEEDED,
            Self::UnsupportedProtocol { .. } => ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
        }
    }

    /// The spec statement this error enforces, where one applies (e.g. `"MQTT-3.3.1-4"`).
    pub fn spec_statement(&self) -> Option<&'static str> {
        match self {
            Self::Malformed(malformed) => malformed.spec_statement(),
            Self::Protocol(violation) => violation.spec_statement(),
            Self::PacketTooLarge { .. } => Some("MQTT-3.2.2-15"),
            Self::LimitExceeded { .. } => None,
            Self::UnsupportedProtocol { .. } => Some("MQTT-3.1.2-2"),
        }
    }
}

/// A limit of [`crate::DecodeLimits`] that a packet went beyond.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// The number of User Properties.
    UserProperties,
    /// The encoded bytes of User Properties.
    UserPropertyBytes,
    /// The number of topic filters in a SUBSCRIBE or UNSUBSCRIBE.
    Filters,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::UserProperties => "user properties",
            Self::UserPropertyBytes => "bytes of user properties",
            Self::Filters => "topic filters",
        })
    }
}

/// The peer sent bytes that are not a valid packet: reason code 0x81 (Malformed Packet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Malformed {
    /// Packet type 0 is reserved (§2.1.2).
    #[error("packet type 0 is reserved")]
    ReservedPacketType,
    /// AUTH (type 15) does not exist before MQTT 5.
    #[error("packet type {packet} does not exist at this protocol level")]
    PacketTypeNotInProtocol {
        /// The packet type.
        packet: PacketType,
    },
    /// The reserved flag bits of the fixed header have the wrong value [MQTT-2.1.3-1].
    #[error("{packet} with fixed-header flags {flags:#06b} [MQTT-2.1.3-1]")]
    InvalidFixedHeaderFlags {
        /// The packet type.
        packet: PacketType,
        /// The low nibble of the first byte.
        flags: u8,
    },
    /// A Variable Byte Integer continues past its fourth byte [MQTT-1.5.5-1].
    #[error("variable byte integer longer than 4 bytes [MQTT-1.5.5-1]")]
    VariableByteIntegerTooLong,
    /// The packet ends before a field that must be there.
    #[error("{packet} ends before its {field}")]
    UnexpectedEnd {
        /// The packet type.
        packet: PacketType,
        /// The field that is missing or cut short.
        field: &'static str,
    },
    /// Bytes are left over after the last field the packet can hold [MQTT-3.1.3-1].
    #[error("{packet} has {count} bytes after its last field")]
    TrailingBytes {
        /// The packet type.
        packet: PacketType,
        /// How many bytes are left over.
        count: usize,
    },
    /// A UTF-8 string field is not well-formed UTF-8 [MQTT-1.5.4-1].
    #[error("{field} is not valid UTF-8 [MQTT-1.5.4-1]")]
    InvalidUtf8 {
        /// The field.
        field: &'static str,
    },
    /// A UTF-8 string field contains U+0000 [MQTT-1.5.4-2].
    #[error("{field} contains U+0000 [MQTT-1.5.4-2]")]
    NullCharacter {
        /// The field.
        field: &'static str,
    },
    /// A property id that does not exist, or is not allowed in this packet (§2.2.2.2).
    #[error("property id {id:#04x} is not allowed in {context}")]
    PropertyNotAllowed {
        /// The property id as sent.
        id: u32,
        /// The packet (or "Will properties").
        context: &'static str,
    },
    /// QoS 3 in a PUBLISH, a Will or (for 3.x) a subscription [MQTT-3.3.1-4] [MQTT-3.1.2-12].
    #[error("QoS 3 in {field} [MQTT-3.3.1-4]")]
    InvalidQoS {
        /// Where the QoS was found.
        field: &'static str,
    },
    /// The reserved bit 0 of the CONNECT flags is set [MQTT-3.1.2-3].
    #[error("CONNECT reserved flag is set [MQTT-3.1.2-3]")]
    ConnectReservedFlag,
    /// Will QoS or Will Retain is set while the Will Flag is 0 [MQTT-3.1.2-11] [MQTT-3.1.2-13].
    #[error("Will QoS or Will Retain set without the Will Flag [MQTT-3.1.2-11]")]
    WillFlagsWithoutWill,
    /// Password Flag 1 with User Name Flag 0, illegal before MQTT 5 ([MQTT-3.1.2-22] of 3.1.1).
    #[error("password without a user name, not allowed before MQTT 5 ([MQTT-3.1.2-22] of 3.1.1)")]
    PasswordWithoutUserName,
    /// Reserved bits of the Connect Acknowledge Flags are set [MQTT-3.2.2-1].
    #[error("CONNACK reserved flags are set [MQTT-3.2.2-1]")]
    ConnAckReservedFlags,
    /// Reserved bits of the subscription options are set [MQTT-3.8.3-5] (3.1.1:
    /// [MQTT-3-8.3-4]).
    #[error("reserved bits set in subscription options {options:#010b} [MQTT-3.8.3-5]")]
    SubscriptionOptionsReserved {
        /// The options byte.
        options: u8,
    },
    /// A Packet Identifier of 0 where a non-zero one is required [MQTT-2.2.1-3].
    #[error("{packet} with packet identifier 0 [MQTT-2.2.1-3]")]
    PacketIdentifierZero {
        /// The packet type.
        packet: PacketType,
    },
}

impl Malformed {
    /// The spec statement, where one applies.
    pub fn spec_statement(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidFixedHeaderFlags { .. } => "MQTT-2.1.3-1",
            Self::VariableByteIntegerTooLong => "MQTT-1.5.5-1",
            Self::TrailingBytes {
                packet: PacketType::Connect,
                ..
            } => "MQTT-3.1.3-1",
            Self::InvalidUtf8 { .. } => "MQTT-1.5.4-1",
            Self::NullCharacter { .. } => "MQTT-1.5.4-2",
            Self::InvalidQoS { field: "Will QoS" } => "MQTT-3.1.2-12",
            Self::InvalidQoS {
                field: "requested QoS",
            } => "MQTT-3-8.3-4 of 3.1.1",
            Self::InvalidQoS { .. } => "MQTT-3.3.1-4",
            Self::ConnectReservedFlag => "MQTT-3.1.2-3",
            Self::WillFlagsWithoutWill => "MQTT-3.1.2-11",
            Self::PasswordWithoutUserName => "MQTT-3.1.2-22 of 3.1.1",
            Self::ConnAckReservedFlags => "MQTT-3.2.2-1",
            // The v5 statement; at 3.1.1 the same rule is [MQTT-3-8.3-4].
            Self::SubscriptionOptionsReserved { .. } => "MQTT-3.8.3-5",
            Self::PacketIdentifierZero { .. } => "MQTT-2.2.1-3",
            Self::ReservedPacketType
            | Self::PacketTypeNotInProtocol { .. }
            | Self::TrailingBytes { .. }
            | Self::UnexpectedEnd { .. }
            | Self::PropertyNotAllowed { .. } => return None,
        })
    }
}

/// The packet parses but breaks a rule of the protocol: reason code 0x82 (Protocol Error) unless a
/// more specific code applies (see [`ProtocolViolation::reason_code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolViolation {
    /// A property that may appear once appears twice (§2.2.2.2).
    #[error("{property} appears more than once in {context}")]
    DuplicateProperty {
        /// The property.
        property: PropertyId,
        /// The packet (or "Will properties").
        context: &'static str,
    },
    /// A property has a value the spec forbids (e.g. Receive Maximum 0, Maximum QoS 2).
    #[error("{property} has the invalid value {value}")]
    InvalidPropertyValue {
        /// The property.
        property: PropertyId,
        /// The value as sent.
        value: u32,
    },
    /// Topic Alias 0 [MQTT-3.3.2-8]; reason code 0x94.
    #[error("topic alias 0 [MQTT-3.3.2-8]")]
    TopicAliasZero,
    /// Authentication Data without an Authentication Method (§3.1.2.11.10).
    #[error("authentication data without an authentication method")]
    AuthenticationDataWithoutMethod,
    /// AUTH without an Authentication Method (§3.15.2.2.2).
    #[error("AUTH without an authentication method")]
    AuthWithoutMethod,
    /// A reason code the packet type may not carry [MQTT-3.2.2-8] [MQTT-3.15.2-1].
    #[error("{packet} with reason code {code:#04x}, not one the packet may carry")]
    InvalidReasonCode {
        /// The packet type.
        packet: PacketType,
        /// The code as sent.
        code: u8,
    },
    /// SUBSCRIBE with no topic filter [MQTT-3.8.3-2].
    #[error("SUBSCRIBE without any topic filter [MQTT-3.8.3-2]")]
    EmptySubscribe,
    /// UNSUBSCRIBE with no topic filter [MQTT-3.10.3-2].
    #[error("UNSUBSCRIBE without any topic filter [MQTT-3.10.3-2]")]
    EmptyUnsubscribe,
    /// SUBACK or UNSUBACK (v5) without any reason code [MQTT-3.9.3-1].
    #[error("{packet} without any reason code")]
    EmptyAcknowledgement {
        /// The packet type.
        packet: PacketType,
    },
    /// Maximum QoS 3 in MQTT 5 subscription options (§3.8.3.1).
    #[error("subscription options request QoS 3")]
    SubscriptionQoS3,
    /// Retain Handling 3 in subscription options (§3.8.3.1).
    #[error("subscription options with retain handling 3")]
    RetainHandling3,
    /// A Topic Name with `+` or `#` [MQTT-3.3.2-2].
    #[error("topic name {topic:?} contains a wildcard [MQTT-3.3.2-2]")]
    WildcardInTopicName {
        /// The topic as sent.
        topic: String,
    },
    /// An empty Topic Name without a Topic Alias (§3.3.2.1; 3.x [MQTT-4.7.3-1]).
    #[error("empty topic name without a topic alias")]
    EmptyTopicName,
    /// A Will Topic that is empty or has wildcards [MQTT-3.1.3-11].
    #[error("will topic {topic:?} is not a valid topic name [MQTT-3.1.3-11]")]
    InvalidWillTopic {
        /// The topic as sent.
        topic: String,
    },
    /// A Response Topic with wildcards [MQTT-3.3.2-14].
    #[error("response topic {topic:?} contains a wildcard [MQTT-3.3.2-14]")]
    WildcardInResponseTopic {
        /// The topic as sent.
        topic: String,
    },
    /// An empty Response Topic: it is used as a Topic Name, which has at least one character
    /// [MQTT-4.7.3-1].
    #[error("empty response topic [MQTT-4.7.3-1]")]
    EmptyResponseTopic,
    /// DUP set on a QoS 0 PUBLISH [MQTT-3.3.1-2].
    #[error("DUP flag on a QoS 0 PUBLISH [MQTT-3.3.1-2]")]
    DupOnQoS0,
}

impl ProtocolViolation {
    /// The reason code: 0x82 except for Topic Alias 0 (0x94).
    pub fn reason_code(&self) -> ReasonCode {
        match self {
            Self::TopicAliasZero => ReasonCode::TOPIC_ALIAS_INVALID,
            _ => ReasonCode::PROTOCOL_ERROR,
        }
    }

    /// The spec statement, where one applies.
    pub fn spec_statement(&self) -> Option<&'static str> {
        Some(match self {
            Self::TopicAliasZero => "MQTT-3.3.2-8",
            Self::InvalidReasonCode { packet, .. } => match packet {
                PacketType::ConnAck => "MQTT-3.2.2-8",
                PacketType::PubAck => "MQTT-3.4.2-1",
                PacketType::PubRec => "MQTT-3.5.2-1",
                PacketType::PubRel => "MQTT-3.6.2-1",
                PacketType::PubComp => "MQTT-3.7.2-1",
                PacketType::SubAck => "MQTT-3.9.3-2",
                PacketType::UnsubAck => "MQTT-3.11.3-2",
                PacketType::Disconnect => "MQTT-3.14.2-1",
                PacketType::Auth => "MQTT-3.15.2-1",
                _ => return None,
            },
            Self::EmptySubscribe => "MQTT-3.8.3-2",
            Self::EmptyUnsubscribe => "MQTT-3.10.3-2",
            Self::EmptyAcknowledgement {
                packet: PacketType::UnsubAck,
            } => "MQTT-3.11.3-1",
            Self::EmptyAcknowledgement { .. } => "MQTT-3.9.3-1",
            Self::WildcardInTopicName { .. } => "MQTT-3.3.2-2",
            Self::InvalidWillTopic { .. } => "MQTT-3.1.3-11",
            Self::WildcardInResponseTopic { .. } => "MQTT-3.3.2-14",
            Self::EmptyResponseTopic => "MQTT-4.7.3-1",
            Self::DupOnQoS0 => "MQTT-3.3.1-2",
            Self::DuplicateProperty { .. }
            | Self::InvalidPropertyValue { .. }
            | Self::AuthenticationDataWithoutMethod
            | Self::AuthWithoutMethod
            | Self::SubscriptionQoS3
            | Self::RetainHandling3
            | Self::EmptyTopicName => return None,
        })
    }
}

/// Why a packet value could not be encoded. Nothing is left in the output buffer on error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A UTF-8 string or binary field is longer than 65,535 bytes (§1.5.4, §1.5.6).
    #[error("{field} is {len} bytes long; the limit is 65535")]
    FieldTooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
    },
    /// The packet would need a Remaining Length above 268,435,455 [MQTT-1.5.5-1].
    #[error("remaining length {len} exceeds 268435455")]
    PacketTooLarge {
        /// The remaining length the packet would need.
        len: usize,
    },
    /// A QoS 1 or 2 PUBLISH without a packet identifier, or a QoS 0 one with one
    /// [MQTT-2.2.1-2].
    #[error("PUBLISH at {qos} with packet identifier {packet_id:?} [MQTT-2.2.1-2]")]
    PacketIdentifierMismatch {
        /// The QoS of the PUBLISH.
        qos: crate::QoS,
        /// The identifier it carries.
        packet_id: Option<crate::PacketId>,
    },
    /// SUBSCRIBE or UNSUBSCRIBE with no topic filter [MQTT-3.8.3-2] [MQTT-3.10.3-2].
    #[error("{packet} without any topic filter")]
    NoTopicFilters {
        /// The packet type.
        packet: PacketType,
    },
    /// A Subscription Identifier above 268,435,455.
    #[error("subscription identifier {0} exceeds 268435455")]
    SubscriptionIdentifierTooLarge(u32),
    /// The packet cannot be expressed at this protocol level (AUTH before MQTT 5, or a CONNACK
    /// reason code with no 3.x return code).
    #[error("{packet} cannot be encoded for {protocol}: {why}")]
    NotInProtocol {
        /// The packet type.
        packet: PacketType,
        /// The protocol level asked for.
        protocol: crate::Protocol,
        /// What has no equivalent.
        why: &'static str,
    },
}
