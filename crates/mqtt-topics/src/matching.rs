//! The reference matcher. Every structure of this crate agrees with [`matches`]; a property test
//! checks it.

use crate::validate::SHARED_PREFIX;

/// Whether the Topic Filter `filter` matches the Topic Name `topic` (§4.7).
///
/// * `#` matches any number of levels, including none: `a/#` matches `a` [MQTT-4.7.1-1];
/// * `+` matches exactly one level, which may be empty: `+/+` matches `/finance`, `sport/+`
///   does not match `sport` [MQTT-4.7.1-2];
/// * a filter starting with `#` or `+` never matches a topic starting with `$`
///   [MQTT-4.7.2-1];
/// * levels compare byte for byte, without any normalization [MQTT-4.7.3-4];
/// * a `$share/{ShareName}/` prefix is ignored (§4.8.2).
///
/// Both arguments are assumed valid; see [`crate::parse_filter`] and
/// [`crate::validate_topic_name`].
pub fn matches(filter: &str, topic: &str) -> bool {
    let filter = strip_share(filter);
    if topic.starts_with('$') && (filter.starts_with('#') || filter.starts_with('+')) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The filter without its `$share/{ShareName}/` prefix, if it has one.
pub(crate) fn strip_share(filter: &str) -> &str {
    filter
        .strip_prefix(SHARED_PREFIX)
        .and_then(|shared| shared.split_once('/'))
        .map_or(filter, |(_, rest)| rest)
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn spec_examples_4_7_1() {
        let yes = [
            ("sport/tennis/player1/#", "sport/tennis/player1"),
            ("sport/tennis/player1/#", "sport/tennis/player1/ranking"),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
            ),
            ("sport/#", "sport"),
            ("sport/tennis/+", "sport/tennis/player1"),
            ("sport/tennis/+", "sport/tennis/player2"),
            ("sport/+", "sport/"),
            ("+/+", "/finance"),
            ("/+", "/finance"),
            ("+", "sport"),
            ("#", "sport/tennis"),
            ("#", "/"),
            ("a/#", "a"),
            ("a/+/c", "a//c"),
            ("$SYS/#", "$SYS/broker/uptime"),
            ("$SYS/+", "$SYS/x"),
            ("$share/g//finance", "/finance"),
            ("$share/g/#", "a/b"),
            ("a/b", "a/b"),
            ("/", "/"),
        ];
        for (filter, topic) in yes {
            assert!(matches(filter, topic), "{filter} should match {topic}");
        }
        let no = [
            ("sport/tennis/+", "sport/tennis/player1/ranking"),
            ("sport/+", "sport"),
            ("+", "/finance"),
            ("+", "sport/tennis"),
            ("#", "$SYS/broker"),
            ("+/monitor/Clients", "$SYS/monitor/Clients"),
            ("+", "$SYS"),
            ("$share/g/#", "$SYS/x"),
            ("a/b", "a/b/"),
            ("a/b", "A/b"),
            ("a/b", "/a/b"),
            ("a/b/c", "a/b"),
        ];
        for (filter, topic) in no {
            assert!(!matches(filter, topic), "{filter} should not match {topic}");
        }
    }
}
