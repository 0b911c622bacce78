//! Validation of Topic Names and Topic Filters (§4.7, §4.8.2).

use crate::{TopicError, TopicKind};

/// The prefix of a shared subscription filter.
pub const SHARED_PREFIX: &str = "$share/";

/// What the broker accepts in topics. The defaults follow the spec, with a level limit so that a
/// hostile filter cannot make the trie arbitrarily deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicRules {
    /// The longest name or filter, in bytes (the spec allows 65,535, [MQTT-4.7.3-3]).
    pub max_length: usize,
    /// The most levels a name or filter may have (the spec sets no limit; 0 means none).
    pub max_levels: usize,
    /// Whether `$share/` filters are shared subscriptions (else refused with 0x9E).
    pub shared_subscriptions: bool,
    /// Whether filters may contain wildcards (else refused with 0xA2).
    pub wildcard_subscriptions: bool,
}

impl Default for TopicRules {
    fn default() -> Self {
        Self {
            max_length: 65_535,
            max_levels: 128,
            shared_subscriptions: true,
            wildcard_subscriptions: true,
        }
    }
}

/// A checked Topic Filter, split into its ShareName (for `$share/` filters) and the filter used
/// for matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TopicFilter<'a> {
    /// The ShareName of a shared subscription.
    pub share_name: Option<&'a str>,
    /// The filter that is matched against topic names (without `$share/{ShareName}/`).
    pub filter: &'a str,
    /// Whether the filter contains `+` or `#`.
    pub has_wildcards: bool,
}

impl TopicFilter<'_> {
    /// Whether this is a shared subscription.
    pub fn is_shared(&self) -> bool {
        self.share_name.is_some()
    }
}

fn check_common(text: &str, kind: TopicKind, rules: &TopicRules) -> Result<(), TopicError> {
    if text.is_empty() {
        return Err(TopicError::Empty(kind));
    }
    if text.len() > rules.max_length {
        return Err(TopicError::TooLong {
            kind,
            len: text.len(),
            max: rules.max_length,
        });
    }
    if text.as_bytes().contains(&0) {
        return Err(TopicError::NullCharacter(kind));
    }
    if rules.max_levels > 0 && text.bytes().filter(|&b| b == b'/').count() >= rules.max_levels {
        return Err(TopicError::TooManyLevels {
            kind,
            max: rules.max_levels,
        });
    }
    Ok(())
}

/// Checks a Topic Name: not empty, no wildcards [MQTT-4.7.0-1], no U+0000, within the limits.
/// Names starting with `$` are valid; whether a client may publish to them is the broker's
/// policy.
pub fn validate_topic_name(topic: &str, rules: &TopicRules) -> Result<(), TopicError> {
    check_common(topic, TopicKind::Name, rules)?;
    if topic.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(TopicError::WildcardInName);
    }
    Ok(())
}

/// Checks a Topic Filter and splits off a `$share/{ShareName}/` prefix.
///
/// `#` must be a whole last level [MQTT-4.7.1-1] and `+` a whole level [MQTT-4.7.1-2]. A shared
/// filter needs a ShareName of at least one character without `/`, `+` or `#`, then `/` and a
/// valid filter [MQTT-4.8.2-1] [MQTT-4.8.2-2].
pub fn parse_filter<'a>(
    filter: &'a str,
    rules: &TopicRules,
) -> Result<TopicFilter<'a>, TopicError> {
    check_common(filter, TopicKind::Filter, rules)?;
    let (share_name, rest) = match filter.strip_prefix(SHARED_PREFIX) {
        Some(shared) => {
            if !rules.shared_subscriptions {
                return Err(TopicError::SharedSubscriptionsNotSupported);
            }
            let Some((name, rest)) = shared.split_once('/') else {
                return Err(TopicError::InvalidSharedFilter(
                    "no filter after the share name",
                ));
            };
            if name.is_empty() {
                return Err(TopicError::InvalidSharedFilter("empty share name"));
            }
            if name.contains(['+', '#']) {
                return Err(TopicError::InvalidSharedFilter(
                    "wildcard in the share name",
                ));
            }
            if rest.is_empty() {
                return Err(TopicError::InvalidSharedFilter(
                    "empty filter after the share name",
                ));
            }
            (Some(name), rest)
        }
        None if filter == "$share" => {
            return Err(TopicError::InvalidSharedFilter("no share name"));
        }
        None => (None, filter),
    };
    let mut has_wildcards = false;
    let mut levels = rest.split('/').peekable();
    while let Some(level) = levels.next() {
        match level {
            "#" if levels.peek().is_none() => has_wildcards = true,
            "+" => has_wildcards = true,
            _ if level.contains('#') => return Err(TopicError::MisplacedMultiLevelWildcard),
            _ if level.contains('+') => return Err(TopicError::MisplacedSingleLevelWildcard),
            _ => {}
        }
    }
    if has_wildcards && !rules.wildcard_subscriptions {
        return Err(TopicError::WildcardSubscriptionsNotSupported);
    }
    Ok(TopicFilter {
        share_name,
        filter: rest,
        has_wildcards,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(text: &str) -> Result<TopicFilter<'_>, TopicError> {
        parse_filter(text, &TopicRules::default())
    }

    #[test]
    fn valid_filters_from_the_spec() {
        for text in [
            "sport/tennis/player1/#",
            "sport/#",
            "#",
            "+",
            "+/tennis/#",
            "sport/+/player1",
            "/+",
            "+/+",
            "a//b",
            "/",
            "$SYS/#",
            "sport/tennis/+",
        ] {
            assert!(filter(text).is_ok(), "{text}");
        }
    }

    #[test]
    fn misplaced_hash_is_invalid_mqtt_4_7_1_1() {
        for text in ["sport/tennis#", "sport/tennis/#/ranking", "#/", "a/#b"] {
            assert_eq!(
                filter(text),
                Err(TopicError::MisplacedMultiLevelWildcard),
                "{text}"
            );
        }
    }

    #[test]
    fn misplaced_plus_is_invalid_mqtt_4_7_1_2() {
        for text in ["sport+", "a/b+/c", "++"] {
            assert_eq!(
                filter(text),
                Err(TopicError::MisplacedSingleLevelWildcard),
                "{text}"
            );
        }
    }

    #[test]
    fn shared_filters_mqtt_4_8_2_1() {
        let shared = filter("$share/g//finance").unwrap();
        assert_eq!(shared.share_name, Some("g"));
        assert_eq!(shared.filter, "/finance");
        assert!(filter("$share/g/#").unwrap().has_wildcards);
        for text in [
            "$share//a",
            "$share/g",
            "$share/g/",
            "$share/a+/x",
            "$share/#/x",
            "$share",
        ] {
            let error = filter(text).unwrap_err();
            assert!(
                matches!(error, TopicError::InvalidSharedFilter(_)),
                "{text}: {error:?}"
            );
            assert_eq!(
                error.reason_code(),
                mqtt_packets::ReasonCode::TOPIC_FILTER_INVALID
            );
        }
    }

    #[test]
    fn disabled_features_give_their_codes() {
        let rules = TopicRules {
            shared_subscriptions: false,
            wildcard_subscriptions: false,
            ..TopicRules::default()
        };
        let error = parse_filter("$share/g/a", &rules).unwrap_err();
        assert_eq!(
            error.reason_code(),
            mqtt_packets::ReasonCode::SHARED_SUBSCRIPTIONS_NOT_SUPPORTED
        );
        let error = parse_filter("a/+", &rules).unwrap_err();
        assert_eq!(
            error.reason_code(),
            mqtt_packets::ReasonCode::WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED
        );
        assert!(parse_filter("a/b", &rules).is_ok());
    }

    #[test]
    fn names() {
        let rules = TopicRules::default();
        assert!(validate_topic_name("/", &rules).is_ok());
        assert!(validate_topic_name("$SYS/broker", &rules).is_ok());
        assert_eq!(
            validate_topic_name("a/+", &rules),
            Err(TopicError::WildcardInName)
        );
        assert_eq!(
            validate_topic_name("", &rules),
            Err(TopicError::Empty(TopicKind::Name))
        );
        assert_eq!(
            validate_topic_name("a\0b", &rules)
                .unwrap_err()
                .reason_code(),
            mqtt_packets::ReasonCode::TOPIC_NAME_INVALID
        );
    }

    #[test]
    fn limits_bound_length_and_depth() {
        let rules = TopicRules {
            max_length: 10,
            max_levels: 3,
            ..TopicRules::default()
        };
        assert!(matches!(
            validate_topic_name("aaaaaaaaaaa", &rules),
            Err(TopicError::TooLong {
                len: 11,
                max: 10,
                ..
            })
        ));
        assert!(validate_topic_name("a/b/c", &rules).is_ok());
        assert!(matches!(
            parse_filter("a/b/c/d", &rules),
            Err(TopicError::TooManyLevels { max: 3, .. })
        ));
    }
}
