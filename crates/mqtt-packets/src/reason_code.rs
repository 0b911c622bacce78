//! MQTT 5 reason codes (spec table 2-6) and which packets may carry each one.

use std::fmt;

use crate::PacketType;

/// A reason code: one byte, below 0x80 for success and 0x80 or above for failure (§2.4).
///
/// The same value means different things in different packets (0x00 is "Success" in PUBACK,
/// "Normal disconnection" in DISCONNECT and "Granted QoS 0" in SUBACK), so this is a number with
/// named constants rather than an enum. [`ReasonCode::is_allowed_in`] says whether a packet type
/// may carry it; the decoder rejects any other value.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ReasonCode(pub u8);

macro_rules! reason_codes {
    ($( $(#[$doc:meta])* $name:ident = $value:literal, $text:literal; )*) => {
        impl ReasonCode {
            $( $(#[$doc])* pub const $name: Self = Self($value); )*
        }

        /// The spec's name for a value, in its most common meaning.
        fn name_of(value: u8) -> Option<&'static str> {
            // 0x00 has several names; the first match below wins ("Success").
            $( if value == $value { return Some($text); } )*
            None
        }
    };
}

reason_codes! {
    /// 0x00 Success (CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK, AUTH).
    SUCCESS = 0x00, "Success";
    /// 0x00 Normal disconnection (DISCONNECT).
    NORMAL_DISCONNECTION = 0x00, "Normal disconnection";
    /// 0x00 Granted QoS 0 (SUBACK).
    GRANTED_QOS_0 = 0x00, "Granted QoS 0";
    /// 0x01 Granted QoS 1 (SUBACK).
    GRANTED_QOS_1 = 0x01, "Granted QoS 1";
    /// 0x02 Granted QoS 2 (SUBACK).
    GRANTED_QOS_2 = 0x02, "Granted QoS 2";
    /// 0x04 Disconnect with Will Message (DISCONNECT, client only).
    DISCONNECT_WITH_WILL_MESSAGE = 0x04, "Disconnect with Will Message";
    /// 0x10 No matching subscribers (PUBACK, PUBREC).
    NO_MATCHING_SUBSCRIBERS = 0x10, "No matching subscribers";
    /// 0x11 No subscription existed (UNSUBACK).
    NO_SUBSCRIPTION_EXISTED = 0x11, "No subscription existed";
    /// 0x18 Continue authentication (AUTH).
    CONTINUE_AUTHENTICATION = 0x18, "Continue authentication";
    /// 0x19 Re-authenticate (AUTH, client only).
    RE_AUTHENTICATE = 0x19, "Re-authenticate";
    /// 0x80 Unspecified error.
    UNSPECIFIED_ERROR = 0x80, "Unspecified error";
    /// 0x81 Malformed Packet.
    MALFORMED_PACKET = 0x81, "Malformed Packet";
    /// 0x82 Protocol Error.
    PROTOCOL_ERROR = 0x82, "Protocol Error";
    /// 0x83 Implementation specific error.
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83, "Implementation specific error";
    /// 0x84 Unsupported Protocol Version (CONNACK).
    UNSUPPORTED_PROTOCOL_VERSION = 0x84, "Unsupported Protocol Version";
    /// 0x85 Client Identifier not valid (CONNACK).
    CLIENT_IDENTIFIER_NOT_VALID = 0x85, "Client Identifier not valid";
    /// 0x86 Bad User Name or Password (CONNACK).
    BAD_USER_NAME_OR_PASSWORD = 0x86, "Bad User Name or Password";
    /// 0x87 Not authorized.
    NOT_AUTHORIZED = 0x87, "Not authorized";
    /// 0x88 Server unavailable (CONNACK).
    SERVER_UNAVAILABLE = 0x88, "Server unavailable";
    /// 0x89 Server busy.
    SERVER_BUSY = 0x89, "Server busy";
    /// 0x8A Banned (CONNACK).
    BANNED = 0x8A, "Banned";
    /// 0x8B Server shutting down (DISCONNECT, server only).
    SERVER_SHUTTING_DOWN = 0x8B, "Server shutting down";
    /// 0x8C Bad authentication method.
    BAD_AUTHENTICATION_METHOD = 0x8C, "Bad authentication method";
    /// 0x8D Keep Alive timeout (DISCONNECT, server only).
    KEEP_ALIVE_TIMEOUT = 0x8D, "Keep Alive timeout";
    /// 0x8E Session taken over (DISCONNECT, server only).
    SESSION_TAKEN_OVER = 0x8E, "Session taken over";
    /// 0x8F Topic Filter invalid.
    TOPIC_FILTER_INVALID = 0x8F, "Topic Filter invalid";
    /// 0x90 Topic Name invalid.
    TOPIC_NAME_INVALID = 0x90, "Topic Name invalid";
    /// 0x91 Packet Identifier in use.
    PACKET_IDENTIFIER_IN_USE = 0x91, "Packet Identifier in use";
    /// 0x92 Packet Identifier not found.
    PACKET_IDENTIFIER_NOT_FOUND = 0x92, "Packet Identifier not found";
    /// 0x93 Receive Maximum exceeded (DISCONNECT).
    RECEIVE_MAXIMUM_EXCEEDED = 0x93, "Receive Maximum exceeded";
    /// 0x94 Topic Alias invalid (DISCONNECT).
    TOPIC_ALIAS_INVALID = 0x94, "Topic Alias invalid";
    /// 0x95 Packet too large.
    PACKET_TOO_LARGE = 0x95, "Packet too large";
    /// 0x96 Message rate too high (DISCONNECT).
    MESSAGE_RATE_TOO_HIGH = 0x96, "Message rate too high";
    /// 0x97 Quota exceeded.
    QUOTA_EXCEEDED = 0x97, "Quota exceeded";
    /// 0x98 Administrative action (DISCONNECT).
    ADMINISTRATIVE_ACTION = 0x98, "Administrative action";
    /// 0x99 Payload format invalid.
    PAYLOAD_FORMAT_INVALID = 0x99, "Payload format invalid";
    /// 0x9A Retain not supported.
    RETAIN_NOT_SUPPORTED = 0x9A, "Retain not supported";
    /// 0x9B QoS not supported.
    QOS_NOT_SUPPORTED = 0x9B, "QoS not supported";
    /// 0x9C Use another server.
    USE_ANOTHER_SERVER = 0x9C, "Use another server";
    /// 0x9D Server moved.
    SERVER_MOVED = 0x9D, "Server moved";
    /// 0x9E Shared Subscriptions not supported.
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E, "Shared Subscriptions not supported";
    /// 0x9F Connection rate exceeded.
    CONNECTION_RATE_EXCEEDED = 0x9F, "Connection rate exceeded";
    /// 0xA0 Maximum connect time (DISCONNECT, server only).
    MAXIMUM_CONNECT_TIME = 0xA0, "Maximum connect time";
    /// 0xA1 Subscription Identifiers not supported.
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1, "Subscription Identifiers not supported";
    /// 0xA2 Wildcard Subscriptions not supported.
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2, "Wildcard Subscriptions not supported";
}

/// CONNACK reason codes (spec table in §3.2.2.2).
const CONNACK: &[u8] = &[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
];
/// PUBACK and PUBREC reason codes (§3.4.2.1, §3.5.2.1).
const PUBACK: &[u8] = &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99];
/// PUBREL and PUBCOMP reason codes (§3.6.2.1, §3.7.2.1).
const PUBREL: &[u8] = &[0x00, 0x92];
/// SUBACK reason codes (§3.9.3).
const SUBACK: &[u8] = &[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
];
/// UNSUBACK reason codes (§3.11.3).
const UNSUBACK: &[u8] = &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
/// DISCONNECT reason codes, from either side (§3.14.2.1).
const DISCONNECT: &[u8] = &[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94,
    0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
];
/// AUTH reason codes (§3.15.2.1).
const AUTH: &[u8] = &[0x00, 0x18, 0x19];

impl ReasonCode {
    /// The numeric value.
    pub const fn value(self) -> u8 {
        self.0
    }

    /// Whether this code reports a failure (0x80 or above, §2.4).
    pub const fn is_error(self) -> bool {
        self.0 >= 0x80
    }

    /// Whether this code reports a malformed packet or a protocol error: the codes a receiver
    /// closes a connection with when the other side breaks the protocol (§4.13.1), rather than
    /// for a limit, an authorization or a server condition.
    pub const fn is_protocol_error(self) -> bool {
        matches!(
            self,
            Self::MALFORMED_PACKET
                | Self::PROTOCOL_ERROR
                | Self::RECEIVE_MAXIMUM_EXCEEDED
                | Self::TOPIC_ALIAS_INVALID
                | Self::PACKET_TOO_LARGE
                | Self::RETAIN_NOT_SUPPORTED
                | Self::QOS_NOT_SUPPORTED
                | Self::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
                | Self::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
                | Self::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        )
    }

    /// Whether an MQTT 5 packet of this type may carry this code.
    ///
    /// Packets without a reason code (CONNECT, PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PINGREQ,
    /// PINGRESP) accept none.
    pub fn is_allowed_in(self, packet: PacketType) -> bool {
        let allowed: &[u8] = match packet {
            PacketType::ConnAck => CONNACK,
            PacketType::PubAck | PacketType::PubRec => PUBACK,
            PacketType::PubRel | PacketType::PubComp => PUBREL,
            PacketType::SubAck => SUBACK,
            PacketType::UnsubAck => UNSUBACK,
            PacketType::Disconnect => DISCONNECT,
            PacketType::Auth => AUTH,
            PacketType::Connect
            | PacketType::Publish
            | PacketType::Subscribe
            | PacketType::Unsubscribe
            | PacketType::PingReq
            | PacketType::PingResp => &[],
        };
        allowed.contains(&self.0)
    }

    /// The SUBACK code that grants `qos`.
    pub const fn granted(qos: crate::QoS) -> Self {
        Self(qos.as_u8())
    }

    /// The MQTT 3.1.1 / 3.1 CONNACK return code for this MQTT 5 code, if one fits.
    ///
    /// 0x84→1, 0x85→2, 0x88/0x89/0x9F→3, 0x86→4, 0x87/0x8A/0x8C→5, per the 3.x
    /// differences in the conformance checklist. Anything else has no 3.x form: the server then
    /// closes without a CONNACK ([MQTT-3.2.2-6] of 3.1.1).
    pub const fn to_v3_connect_return_code(self) -> Option<u8> {
        match self.0 {
            0x00 => Some(0),
            0x84 => Some(1),
            0x85 => Some(2),
            0x88 | 0x89 | 0x9F => Some(3),
            0x86 => Some(4),
            0x87 | 0x8A | 0x8C => Some(5),
            _ => None,
        }
    }

    /// The MQTT 5 code for a 3.x CONNACK return code (0 to 5).
    pub const fn from_v3_connect_return_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::SUCCESS),
            1 => Some(Self::UNSUPPORTED_PROTOCOL_VERSION),
            2 => Some(Self::CLIENT_IDENTIFIER_NOT_VALID),
            3 => Some(Self::SERVER_UNAVAILABLE),
            4 => Some(Self::BAD_USER_NAME_OR_PASSWORD),
            5 => Some(Self::NOT_AUTHORIZED),
            _ => None,
        }
    }

    /// The spec's name for this value (for 0x00, "Success").
    pub fn name(self) -> &'static str {
        name_of(self.0).unwrap_or("Unknown reason code")
    }
}

impl fmt::Debug for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ReasonCode(0x{:02X} {})", self.0, self.name())
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:02X} ({})", self.0, self.name())
    }
}

impl From<ReasonCode> for u8 {
    fn from(code: ReasonCode) -> u8 {
        code.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_is_not_an_error_and_0x80_is() {
        assert!(!ReasonCode::SUCCESS.is_error());
        assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_error());
        assert!(ReasonCode::UNSPECIFIED_ERROR.is_error());
    }

    #[test]
    fn a_server_never_gets_0x04_in_connack() {
        assert!(!ReasonCode::DISCONNECT_WITH_WILL_MESSAGE.is_allowed_in(PacketType::ConnAck));
        assert!(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE.is_allowed_in(PacketType::Disconnect));
        assert!(ReasonCode::PACKET_IDENTIFIER_NOT_FOUND.is_allowed_in(PacketType::PubComp));
        assert!(!ReasonCode::NO_MATCHING_SUBSCRIBERS.is_allowed_in(PacketType::PubRel));
    }

    #[test]
    fn protocol_errors_are_the_codes_of_section_4_13_1() {
        for code in [0x81, 0x82, 0x93, 0x94, 0x95, 0x9A, 0x9B, 0x9E, 0xA1, 0xA2] {
            assert!(ReasonCode(code).is_protocol_error(), "{code:#04x}");
        }
        for code in [0x00, 0x04, 0x80, 0x87, 0x89, 0x8D, 0x8E, 0x97, 0x99] {
            assert!(!ReasonCode(code).is_protocol_error(), "{code:#04x}");
        }
    }

    #[test]
    fn v3_return_codes_map_both_ways() {
        for code in 0..=5u8 {
            let v5 = ReasonCode::from_v3_connect_return_code(code).unwrap();
            assert_eq!(v5.to_v3_connect_return_code(), Some(code));
        }
        assert_eq!(ReasonCode::from_v3_connect_return_code(6), None);
        assert_eq!(
            ReasonCode::MALFORMED_PACKET.to_v3_connect_return_code(),
            None
        );
        assert_eq!(ReasonCode::BANNED.to_v3_connect_return_code(), Some(5));
    }

    #[test]
    fn names_come_from_the_spec_table() {
        assert_eq!(
            ReasonCode::TOPIC_ALIAS_INVALID.name(),
            "Topic Alias invalid"
        );
        assert_eq!(ReasonCode(0x00).name(), "Success");
        assert_eq!(ReasonCode(0x7F).name(), "Unknown reason code");
    }
}
