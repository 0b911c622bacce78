//! Matching the parts of a rule: wildcard patterns, remote addresses, passwords and topic
//! filters.

use std::net::IpAddr;

use mqtt_topics::SHARED_PREFIX;

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use sha2::{Digest, Sha256};

/// Whether `value` matches `pattern`, where `*` stands for any run of characters (anywhere in
/// the pattern, any number of times). An empty pattern or `*` matches everything.
pub(crate) fn glob(pattern: &str, value: &str) -> bool {
    if pattern.is_empty() || pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
        return false;
    };
    if parts.len() == 1 {
        return pattern == value;
    }
    if !value.starts_with(first) || value.len() < first.len() + last.len() || !value.ends_with(last)
    {
        return false;
    }
    let mut rest = value
        .get(first.len()..value.len() - last.len())
        .unwrap_or_default();
    for middle in parts.iter().skip(1).take(parts.len().saturating_sub(2)) {
        match rest.find(middle) {
            Some(at) => rest = rest.get(at + middle.len()..).unwrap_or_default(),
            None => return false,
        }
    }
    true
}

/// Whether a remote address (`ip:port`, or `[v6]:port`) matches a rule: a CIDR block
/// (`10.0.0.0/8`, `::1/128`), an address without port, or a `*` pattern on `ip:port`
/// (`127.0.0.1:*`).
pub(crate) fn remote_matches(rule: &str, remote: Option<std::net::SocketAddr>) -> bool {
    if rule.is_empty() || rule == "*" {
        return true;
    }
    let Some(remote) = remote else { return false };
    let ip = normalise(remote.ip());
    if let Some((network, prefix)) = rule.split_once('/') {
        let (Ok(network), Ok(prefix)) = (network.parse::<IpAddr>(), prefix.parse::<u8>()) else {
            return false;
        };
        return in_block(ip, normalise(network), prefix);
    }
    if let Ok(address) = rule.parse::<IpAddr>() {
        return normalise(address) == ip;
    }
    glob(rule, &remote.to_string()) || glob(rule, &format!("{ip}:{}", remote.port()))
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn normalise(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn in_block(ip: IpAddr, network: IpAddr, prefix: u8) -> bool {
    match (ip, network) {
        (IpAddr::V4(ip), IpAddr::V4(network)) if prefix <= 32 => {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            u32::from(ip) & mask == u32::from(network) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(network)) if prefix <= 128 => {
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            u128::from(ip) & mask == u128::from(network) & mask
        }
        _ => false,
    }
}

/// How a stored password is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PasswordKind {
    Argon2,
    Bcrypt,
    Plain,
}

pub(crate) fn password_kind(stored: &str) -> PasswordKind {
    if stored.starts_with("$argon2") {
        PasswordKind::Argon2
    } else if stored.starts_with("$2a$") || stored.starts_with("$2b$") || stored.starts_with("$2y$")
    {
        PasswordKind::Bcrypt
    } else {
        PasswordKind::Plain
    }
}

/// Checks a password against a stored Argon2 or bcrypt hash, or a plain-text password, in
/// constant time for the plain case (the hash libraries compare in constant time). CPU-heavy for
/// hashes: call it off the async runtime.
pub(crate) fn verify_password(stored: &str, given: &[u8]) -> bool {
    // An empty stored password never matches: it would let anyone in without one.
    if stored.is_empty() {
        return false;
    }
    #[cfg(test)]
    if password_kind(stored) != PasswordKind::Plain {
        tests::HASH_CHECKS.with(|count| count.set(count.get() + 1));
    }
    match password_kind(stored) {
        PasswordKind::Argon2 => PasswordHash::new(stored)
            .is_ok_and(|hash| Argon2::default().verify_password(given, &hash).is_ok()),
        PasswordKind::Bcrypt => bcrypt::verify(given, stored).unwrap_or(false),
        PasswordKind::Plain => {
            // Compare fixed-size digests, so that the time does not depend on the lengths nor
            // on where the first difference is.
            let stored: [u8; 32] = Sha256::digest(stored.as_bytes()).into();
            let given: [u8; 32] = Sha256::digest(given).into();
            constant_time_eq(&stored, &given)
        }
    }
}

/// Whether two digests are equal, in a time that does not depend on their contents.
pub(crate) fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The first stored hash (Argon2 or bcrypt) among `stored`: checking a password against it costs
/// what checking a real user's password costs. Used for unknown user names, so that the time of
/// a refusal does not tell whether the user exists.
pub(crate) fn first_hash<'a>(stored: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    stored
        .into_iter()
        .find(|stored| password_kind(stored) != PasswordKind::Plain)
}

/// Whether every topic that `filter` (a topic filter, or a topic name) can match is matched by
/// the rule filter `rule`: the spec-correct test for both PUBLISH (a name) and SUBSCRIBE (a
/// filter). `a` is covered by `a/#`, `allowed/secret` is not covered by `allowed`, and a rule
/// starting with a wildcard never covers `$` topics [MQTT-4.7.2-1].
pub(crate) fn covers(rule: &str, filter: &str) -> bool {
    if filter.starts_with('$') && (rule.starts_with('+') || rule.starts_with('#')) {
        return false;
    }
    covers_any(rule, filter)
}

/// [`covers`] without the `$` exception: for Deny filters, where `#` must also deny `$SYS/#`.
pub(crate) fn covers_for_deny(rule: &str, filter: &str) -> bool {
    covers_any(rule, filter)
}

fn covers_any(rule: &str, filter: &str) -> bool {
    let mut rule_levels = rule.split('/');
    let mut filter_levels = filter.split('/');
    loop {
        match (rule_levels.next(), filter_levels.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(r), Some(f)) if r == f && r != "+" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The ShareName pattern and the filter of a rule filter that starts with `$share/`: such a
/// rule filter applies to shared subscriptions only. The ShareName `+` stands for any group.
pub(crate) fn split_share(filter: &str) -> Option<(&str, &str)> {
    filter.strip_prefix(SHARED_PREFIX)?.split_once('/')
}

/// Whether a subscription's ShareName matches a rule's ShareName pattern (`+`: any).
pub(crate) fn share_name_matches(pattern: &str, share_name: &str) -> bool {
    pattern == "+" || pattern == share_name
}

/// What a Deny filter denies when `%c` or `%u` cannot be substituted (an empty value, or one
/// with `/`, `+` or `#`): everything under the levels before the first placeholder, which
/// includes whatever the filter would have denied with any value. Deny rules fail closed.
pub(crate) fn deny_fallback(filter: &str) -> String {
    let mut out = String::new();
    for level in filter.split('/') {
        if level.contains("%c") || level.contains("%u") {
            break;
        }
        out.push_str(level);
        out.push('/');
    }
    out.push('#');
    out
}

/// A rule filter with `%c` and `%u` replaced; `None` when a value would add wildcards or levels
/// (a client id of `#` must not widen a rule).
pub(crate) fn substitute(filter: &str, client_id: &str, username: Option<&str>) -> Option<String> {
    if !filter.contains('%') {
        return Some(filter.to_string());
    }
    let unsafe_value = |value: &str| value.is_empty() || value.contains(['+', '#', '/']);
    let mut out = filter.to_string();
    if out.contains("%c") {
        if unsafe_value(client_id) {
            return None;
        }
        out = out.replace("%c", client_id);
    }
    if out.contains("%u") {
        let username = username.filter(|username| !unsafe_value(username))?;
        out = out.replace("%u", username);
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    thread_local! {
        /// Argon2 and bcrypt checks run on this thread.
        pub(crate) static HASH_CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    #[test]
    fn plain_passwords_compare_digests() {
        assert!(verify_password("pw", b"pw"));
        assert!(!verify_password("pw", b"pw "));
        assert!(!verify_password("pw", b""));
        assert!(!verify_password("pw", b"p"));
        assert!(!verify_password(
            "a-much-longer-password",
            b"a-much-longer-passwore"
        ));
    }

    #[test]
    fn deny_fallback_covers_every_substitution() {
        assert_eq!(deny_fallback("x/%c/#"), "x/#");
        assert_eq!(deny_fallback("x/dev-%u/y"), "x/#");
        assert_eq!(deny_fallback("%c"), "#");
        assert_eq!(deny_fallback("a/b/%u/%c"), "a/b/#");
        for id in ["a/b", "+", "#", ""] {
            let intended = "x/%c/y".replace("%c", id);
            if !intended.contains(['+', '#']) {
                assert!(covers_for_deny(&deny_fallback("x/%c/y"), &intended));
            }
        }
    }

    #[test]
    fn share_rule_filters() {
        assert_eq!(split_share("$share/pool/jobs/#"), Some(("pool", "jobs/#")));
        assert_eq!(split_share("$share/pool"), None);
        assert_eq!(split_share("jobs/#"), None);
        assert!(share_name_matches("+", "pool"));
        assert!(share_name_matches("pool", "pool"));
        assert!(!share_name_matches("pool", "payments"));
    }

    #[test]
    fn glob_anywhere() {
        for (pattern, value, expected) in [
            ("", "anything", true),
            ("*", "anything", true),
            ("sensor-*", "sensor-17", true),
            ("*-17", "sensor-17", true),
            ("s*r-*7", "sensor-17", true),
            ("s*r-*8", "sensor-17", false),
            ("sensor-1", "sensor-17", false),
            ("sensor-17", "sensor-17", true),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob(pattern, value), expected, "{pattern} vs {value}");
        }
    }

    #[test]
    fn remotes_by_cidr_address_and_pattern() {
        let addr = |s: &str| Some(s.parse::<std::net::SocketAddr>().unwrap());
        assert!(remote_matches("10.0.0.0/8", addr("10.200.3.4:5000")));
        assert!(!remote_matches("10.0.0.0/8", addr("11.0.0.1:5000")));
        assert!(remote_matches("192.168.1.128/25", addr("192.168.1.200:1")));
        assert!(!remote_matches("192.168.1.128/25", addr("192.168.1.127:1")));
        assert!(remote_matches("0.0.0.0/0", addr("8.8.8.8:53")));
        assert!(remote_matches("::1/128", addr("[::1]:1883")));
        assert!(!remote_matches("::1/128", addr("[::2]:1883")));
        assert!(remote_matches("127.0.0.1:*", addr("127.0.0.1:40000")));
        assert!(!remote_matches("127.0.0.1:*", addr("127.0.0.10:40000")));
        assert!(remote_matches("127.0.0.1", addr("127.0.0.1:40000")));
        assert!(
            remote_matches("127.0.0.0/8", addr("[::ffff:127.0.0.5]:1")),
            "v4-mapped v6"
        );
        assert!(!remote_matches("10.0.0.0/8", None));
        assert!(!remote_matches("10.0.0.0/33", addr("10.0.0.1:1")));
    }

    #[test]
    fn filters_cover_spec_correctly() {
        for (rule, filter, expected) in [
            ("allowed", "allowed", true),
            ("allowed", "allowed/secret", false), // the original's prefix bypass
            ("a/#", "a", true),
            ("a/#", "a/b/c", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/+", "a/+", true),
            ("a/+", "a/#", false),
            ("a/b", "a/+", false),
            ("#", "a/b", true),
            ("#", "$SYS/x", false),
            ("+/x", "$y/x", false),
            ("$SYS/#", "$SYS/broker/uptime", true),
        ] {
            assert_eq!(covers(rule, filter), expected, "{rule} covers {filter}");
        }
    }

    #[test]
    fn deny_filters_reach_dollar_topics() {
        assert!(!covers("#", "$SYS/broker/uptime"));
        assert!(covers_for_deny("#", "$SYS/broker/uptime"));
        assert!(covers_for_deny("+/broker/#", "$SYS/broker/uptime"));
    }

    #[test]
    fn empty_stored_password_never_matches() {
        assert!(!verify_password("", b""));
    }

    #[test]
    fn substitution_never_widens() {
        assert_eq!(
            substitute("devices/%c/#", "d17", None).as_deref(),
            Some("devices/d17/#")
        );
        assert_eq!(
            substitute("u/%u/%c", "c", Some("ann")).as_deref(),
            Some("u/ann/c")
        );
        assert_eq!(substitute("devices/%c/#", "#", None), None);
        assert_eq!(substitute("devices/%c/#", "a/b", None), None);
        assert_eq!(substitute("u/%u", "c", None), None);
    }

    #[test]
    fn passwords_plain_argon2_bcrypt() {
        assert!(verify_password("pw", b"pw"));
        assert!(!verify_password("pw", b"pW"));
        let bcrypt_hash = bcrypt::hash("s3cret", 4).unwrap();
        assert!(verify_password(&bcrypt_hash, b"s3cret"));
        assert!(!verify_password(&bcrypt_hash, b"wrong"));
        use argon2::password_hash::{PasswordHasher, SaltString};
        let salt = SaltString::encode_b64(b"0123456789abcdef").unwrap();
        let argon_hash = Argon2::default()
            .hash_password(b"s3cret", &salt)
            .unwrap()
            .to_string();
        assert_eq!(password_kind(&argon_hash), PasswordKind::Argon2);
        assert!(verify_password(&argon_hash, b"s3cret"));
        assert!(!verify_password(&argon_hash, b"wrong"));
    }
}
