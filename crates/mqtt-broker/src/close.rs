//! Why a connection ends, as a type: [`ConnectionError`], grouped by who is at fault (the
//! client's bytes, the client's protocol use, the client's pace, authentication, a hook,
//! storage, the server, the transport), each with the one reason code the client is told.
//! Hooks see it in [`crate::Hook::on_disconnect`] and [`crate::Hook::on_packet_processed`].

use std::sync::Arc;

use mqtt_packets::{DecodeError, PacketType, ReasonCode};

/// Why the server ended a connection other than by the client's DISCONNECT.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The client sent bytes that do not decode to a valid packet, a packet above the maximum
    /// packet size, or one beyond the decode limits (the codec's own classification).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The client broke a protocol rule that the broker checks.
    #[error("protocol violation: {0}")]
    Protocol(#[from] Violation),
    /// The client went beyond a limit that the server sets.
    #[error("limit exceeded: {0}")]
    Limit(#[from] LimitExceeded),
    /// Re-authentication (§4.12.1) failed, with the code sent to the client.
    #[error("re-authentication failed: {0}")]
    Reauthentication(ReasonCode),
    /// Re-authentication proved another identity than the connection's (0x87).
    #[error("re-authentication proved another identity")]
    IdentityChanged,
    /// An `on_packet_read` hook refused a packet with this code.
    #[error("{packet} refused by hook {hook}: {code}")]
    RefusedByHook {
        /// The refusing hook's id.
        hook: String,
        /// The refused packet's type.
        packet: PacketType,
        /// The code the hook chose.
        code: ReasonCode,
    },
    /// Storage hooks could not make what the connection's acknowledgements acknowledge durable.
    #[error("storage failed: {0}")]
    Storage(StorageFailure),
    /// No complete packet within one and a half times the Keep Alive [MQTT-3.1.2-22].
    #[error("keep alive timeout")]
    KeepAliveTimeout,
    /// The client closed the connection without a DISCONNECT.
    #[error("connection closed by the client")]
    ClosedByClient,
    /// Reading from the connection failed.
    #[error("read error: {0}")]
    Io(Arc<std::io::Error>),
    /// Another part of the server ended the connection (a takeover of its session, a stuck
    /// subscriber, an administrative disconnect, shutdown); that part chose the reason code.
    #[error("closed by the server")]
    ClosedByServer,
}

impl ConnectionError {
    /// The reason code of the server's DISCONNECT (MQTT 5 clients; 3.x connections are just
    /// closed). `None` when this side of the connection sends none: the client or the transport
    /// ended it, or the part of the server that closed it chose the code.
    pub fn reason_code(&self) -> Option<ReasonCode> {
        match self {
            Self::Decode(error) => Some(error.reason_code()),
            Self::Protocol(violation) => Some(violation.reason_code()),
            Self::Limit(_) => Some(ReasonCode::QUOTA_EXCEEDED),
            Self::Reauthentication(code) | Self::RefusedByHook { code, .. } => Some(*code),
            Self::IdentityChanged => Some(ReasonCode::NOT_AUTHORIZED),
            Self::Storage(_) => Some(ReasonCode::UNSPECIFIED_ERROR),
            Self::KeepAliveTimeout => Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
            Self::ClosedByClient | Self::Io(_) | Self::ClosedByServer => None,
        }
    }

    /// Whether the connection ended on a malformed packet or a protocol error (§4.13.1): these
    /// are counted in `$SYS/broker/packets/protocol_errors`.
    pub fn is_protocol_error(&self) -> bool {
        self.reason_code()
            .is_some_and(|code| code.is_protocol_error())
    }

    /// Whether the client went beyond a memory limit (counted in
    /// `$SYS/broker/limits/exceeded`).
    pub fn is_limit(&self) -> bool {
        matches!(
            self,
            Self::Decode(DecodeError::LimitExceeded { .. })
                | Self::Limit(LimitExceeded::TopicAliasBytes)
        )
    }
}

impl From<std::io::Error> for ConnectionError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(Arc::new(error))
    }
}

/// A protocol rule the client broke, found by the broker rather than the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A second CONNECT [MQTT-3.1.0-2].
    #[error("second CONNECT [MQTT-3.1.0-2]")]
    SecondConnect,
    /// A packet only a server sends: CONNACK, SUBACK, UNSUBACK, PINGRESP (§2.1.2).
    #[error("client sent {0}, a server packet")]
    ServerPacket(PacketType),
    /// AUTH on a connection without enhanced authentication (§3.15).
    #[error("AUTH without an authentication method")]
    AuthWithoutMethod,
    /// AUTH with another method than CONNECT's (§3.15.2.2.2).
    #[error("AUTH with another authentication method")]
    AuthMethodChanged,
    /// AUTH with a reason code that does not fit the exchange in progress (§4.12.1).
    #[error("unexpected AUTH")]
    UnexpectedAuth,
    /// PUBLISH above the server's Maximum QoS [MQTT-3.2.2-11].
    #[error("PUBLISH with a QoS above the server maximum [MQTT-3.2.2-11]")]
    QosNotSupported,
    /// PUBLISH with RETAIN while retained messages are not available [MQTT-3.2.2-14].
    #[error("RETAIN while retain is not available [MQTT-3.2.2-14]")]
    RetainNotSupported,
    /// PUBLISH with a Subscription Identifier [MQTT-3.3.4-6].
    #[error("PUBLISH with a subscription identifier [MQTT-3.3.4-6]")]
    SubscriptionIdentifierInPublish,
    /// A Topic Alias above the server's Topic Alias Maximum [MQTT-3.3.2-9].
    #[error("topic alias above the maximum [MQTT-3.3.2-9]")]
    TopicAliasAboveMaximum,
    /// An empty topic with a Topic Alias the connection never set (§3.3.4).
    #[error("unknown topic alias")]
    UnknownTopicAlias,
    /// More QoS 2 PUBLISH packets unacknowledged than the server's Receive Maximum
    /// [MQTT-3.3.4-7].
    #[error("receive maximum exceeded [MQTT-3.3.4-7]")]
    ReceiveMaximumExceeded,
    /// SUBSCRIBE with a Subscription Identifier while they are not available (§3.2.2.3.12).
    #[error("subscription identifiers are not available")]
    SubscriptionIdentifiersNotSupported,
    /// SUBSCRIBE to a shared subscription while they are not available (§3.2.2.3.13).
    #[error("shared subscriptions are not available")]
    SharedSubscriptionsNotSupported,
    /// SUBSCRIBE with a wildcard while wildcards are not available (§3.2.2.3.11).
    #[error("wildcard subscriptions are not available")]
    WildcardSubscriptionsNotSupported,
    /// No Local on a shared subscription [MQTT-3.8.3-4].
    #[error("No Local on a shared subscription [MQTT-3.8.3-4]")]
    NoLocalOnSharedSubscription,
    /// DISCONNECT with a Session Expiry Interval after CONNECT with 0 (§3.14.2.2.2).
    #[error("DISCONNECT sets a session expiry after CONNECT set none")]
    SessionExpiryAfterZero,
}

impl Violation {
    /// The code sent in the server's DISCONNECT.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            Self::QosNotSupported => ReasonCode::QOS_NOT_SUPPORTED,
            Self::RetainNotSupported => ReasonCode::RETAIN_NOT_SUPPORTED,
            Self::TopicAliasAboveMaximum => ReasonCode::TOPIC_ALIAS_INVALID,
            Self::ReceiveMaximumExceeded => ReasonCode::RECEIVE_MAXIMUM_EXCEEDED,
            Self::SubscriptionIdentifiersNotSupported => {
                ReasonCode::SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED
            }
            Self::SharedSubscriptionsNotSupported => ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
            Self::WildcardSubscriptionsNotSupported => {
                ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
            }
            Self::SecondConnect
            | Self::ServerPacket(_)
            | Self::AuthWithoutMethod
            | Self::AuthMethodChanged
            | Self::UnexpectedAuth
            | Self::SubscriptionIdentifierInPublish
            | Self::UnknownTopicAlias
            | Self::NoLocalOnSharedSubscription
            | Self::SessionExpiryAfterZero => ReasonCode::PROTOCOL_ERROR,
        }
    }
}

/// A limit of the server that the client went beyond (DISCONNECT 0x97 Quota exceeded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitExceeded {
    /// The topics of the connection's inbound aliases are beyond
    /// `Capabilities::maximum_topic_alias_bytes`.
    #[error("topic aliases beyond their byte limit")]
    TopicAliasBytes,
    /// The client does not read the server's answers (PINGRESP, acknowledgements): they piled
    /// up unsent beyond the limit for the slow-subscriber timeout.
    #[error("too many unsent acknowledgements")]
    UnsentAnswers,
}

/// How storage failed a connection's acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StorageFailure {
    /// Storage did not commit within `Options::durable_ack_timeout`.
    #[error("storage did not commit in time")]
    Timeout,
    /// A storage hook reported an error.
    #[error("{0}")]
    Failed(String),
}

#[cfg(test)]
mod tests {
    use mqtt_packets::Malformed;

    use super::*;

    #[test]
    fn each_error_has_one_code_and_protocol_errors_are_those_of_section_4_13_1() {
        let cases: Vec<(ConnectionError, Option<ReasonCode>, bool)> = vec![
            (
                DecodeError::Malformed(Malformed::InvalidUtf8 { field: "topic" }).into(),
                Some(ReasonCode::MALFORMED_PACKET),
                true,
            ),
            (
                Violation::SecondConnect.into(),
                Some(ReasonCode::PROTOCOL_ERROR),
                true,
            ),
            (
                Violation::TopicAliasAboveMaximum.into(),
                Some(ReasonCode::TOPIC_ALIAS_INVALID),
                true,
            ),
            (
                Violation::ReceiveMaximumExceeded.into(),
                Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
                true,
            ),
            (
                Violation::WildcardSubscriptionsNotSupported.into(),
                Some(ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED),
                true,
            ),
            (
                LimitExceeded::TopicAliasBytes.into(),
                Some(ReasonCode::QUOTA_EXCEEDED),
                false,
            ),
            (
                ConnectionError::Reauthentication(ReasonCode::NOT_AUTHORIZED),
                Some(ReasonCode::NOT_AUTHORIZED),
                false,
            ),
            (
                ConnectionError::Storage(StorageFailure::Timeout),
                Some(ReasonCode::UNSPECIFIED_ERROR),
                false,
            ),
            (
                ConnectionError::KeepAliveTimeout,
                Some(ReasonCode::KEEP_ALIVE_TIMEOUT),
                false,
            ),
            (ConnectionError::ClosedByClient, None, false),
            (ConnectionError::ClosedByServer, None, false),
        ];
        for (error, code, protocol) in cases {
            assert_eq!(error.reason_code(), code, "{error}");
            assert_eq!(error.is_protocol_error(), protocol, "{error}");
        }
    }

    #[test]
    fn only_memory_limits_count_as_limits() {
        assert!(ConnectionError::from(LimitExceeded::TopicAliasBytes).is_limit());
        assert!(!ConnectionError::from(LimitExceeded::UnsentAnswers).is_limit());
        assert!(!ConnectionError::KeepAliveTimeout.is_limit());
    }
}
