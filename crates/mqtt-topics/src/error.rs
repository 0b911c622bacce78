//! Why a topic name or filter is refused, and the reason code that says so.

use mqtt_packets::ReasonCode;

/// Whether a string was checked as a Topic Name (PUBLISH, Will) or a Topic Filter (SUBSCRIBE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// A Topic Name: refused with 0x90.
    Name,
    /// A Topic Filter: refused with 0x8F.
    Filter,
}

impl std::fmt::Display for TopicKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Name => "topic name",
            Self::Filter => "topic filter",
        })
    }
}

/// A topic name or filter that breaks a rule of §4.7-4.8 or a configured limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// Empty [MQTT-4.7.3-1].
    #[error("empty {0} [MQTT-4.7.3-1]")]
    Empty(TopicKind),
    /// Longer than the configured maximum (at most 65,535 bytes, [MQTT-4.7.3-3]).
    #[error("{kind} of {len} bytes is longer than the limit of {max}")]
    TooLong {
        /// Name or filter.
        kind: TopicKind,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// More levels than the configured maximum.
    #[error("{kind} has more than {max} levels")]
    TooManyLevels {
        /// Name or filter.
        kind: TopicKind,
        /// The limit.
        max: usize,
    },
    /// Contains U+0000 [MQTT-4.7.3-2].
    #[error("{0} contains U+0000 [MQTT-4.7.3-2]")]
    NullCharacter(TopicKind),
    /// A Topic Name with `+` or `#` [MQTT-4.7.0-1].
    #[error("topic name contains a wildcard [MQTT-4.7.0-1]")]
    WildcardInName,
    /// `#` that is not a whole last level [MQTT-4.7.1-1].
    #[error("'#' must be the whole last level of a filter [MQTT-4.7.1-1]")]
    MisplacedMultiLevelWildcard,
    /// `+` that is not a whole level [MQTT-4.7.1-2].
    #[error("'+' must be a whole level of a filter [MQTT-4.7.1-2]")]
    MisplacedSingleLevelWildcard,
    /// A `$share/` filter whose ShareName is empty or has `+`, `#`, or which has no filter after
    /// the ShareName [MQTT-4.8.2-1] [MQTT-4.8.2-2].
    #[error("invalid shared subscription filter: {0} [MQTT-4.8.2-2]")]
    InvalidSharedFilter(&'static str),
    /// A `$share/` filter while shared subscriptions are disabled (0x9E).
    #[error("shared subscriptions are not supported")]
    SharedSubscriptionsNotSupported,
    /// A filter with wildcards while wildcard subscriptions are disabled (0xA2).
    #[error("wildcard subscriptions are not supported")]
    WildcardSubscriptionsNotSupported,
}

impl TopicError {
    /// The reason code for a SUBACK, UNSUBACK, PUBACK / PUBREC or DISCONNECT that refuses it:
    /// 0x90 for names, 0x8F for filters, 0x9E and 0xA2 for disabled features.
    pub fn reason_code(&self) -> ReasonCode {
        let kind = match self {
            Self::SharedSubscriptionsNotSupported => {
                return ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED;
            }
            Self::WildcardSubscriptionsNotSupported => {
                return ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED;
            }
            Self::WildcardInName => TopicKind::Name,
            Self::MisplacedMultiLevelWildcard
            | Self::MisplacedSingleLevelWildcard
            | Self::InvalidSharedFilter(_) => TopicKind::Filter,
            Self::Empty(kind) | Self::NullCharacter(kind) => *kind,
            Self::TooLong { kind, .. } | Self::TooManyLevels { kind, .. } => *kind,
        };
        match kind {
            TopicKind::Name => ReasonCode::TOPIC_NAME_INVALID,
            TopicKind::Filter => ReasonCode::TOPIC_FILTER_INVALID,
        }
    }
}
