//! The key layout. Parts are separated by a NUL byte, which MQTT strings cannot contain
//! [MQTT-1.5.4-2], so a client id or topic never runs into the next part, and a client's prefix
//! never matches another client's keys.
//!
//! | key | value |
//! |---|---|
//! | `c␀<client id>` | the session ([`ClientRecord`](crate::records)) |
//! | `s␀<client id>␀<filter>` | a subscription |
//! | `m␀<client id>␀<seq: u64 BE>` | a queued QoS 1/2 message |
//! | `f␀<client id>␀<seq: u64 BE>` | its QoS flow, once sent (packet id, PUBLISH or PUBREL) |
//! | `i␀<client id>␀<packet id: u16 BE>` | an inbound QoS 2 id awaiting PUBREL (empty value) |
//! | `r␀<topic>` | a retained message |
//! | `y` | the `$SYS` counters |

pub(crate) const CLIENT: u8 = b'c';
pub(crate) const SUBSCRIPTION: u8 = b's';
pub(crate) const MESSAGE: u8 = b'm';
pub(crate) const FLOW: u8 = b'f';
pub(crate) const INBOUND: u8 = b'i';
pub(crate) const RETAINED: u8 = b'r';
pub(crate) const SYS: &[u8] = b"y";

/// `<kind>␀`: the prefix of every key of one kind.
pub(crate) fn kind(kind: u8) -> Vec<u8> {
    vec![kind, 0]
}

/// `<kind>␀<name>`.
pub(crate) fn named(kind: u8, name: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(name.len() + 2);
    key.push(kind);
    key.push(0);
    key.extend_from_slice(name.as_bytes());
    key
}

/// `<kind>␀<client id>␀`: the prefix of one session's keys of one kind.
pub(crate) fn client_prefix(kind: u8, client_id: &str) -> Vec<u8> {
    let mut key = named(kind, client_id);
    key.push(0);
    key
}

/// `<kind>␀<client id>␀<part>`.
pub(crate) fn client_key(kind: u8, client_id: &str, part: &[u8]) -> Vec<u8> {
    let mut key = client_prefix(kind, client_id);
    key.extend_from_slice(part);
    key
}

/// Splits `<kind>␀<name>` or `<kind>␀<client id>␀<part>` into the client id (or name) and the
/// part after it.
pub(crate) fn split(key: &[u8]) -> Option<(&str, &[u8])> {
    let rest = key.get(2..)?;
    let (name, part) = match rest.iter().position(|&b| b == 0) {
        Some(at) => (rest.get(..at)?, rest.get(at + 1..)?),
        None => (rest, &[][..]),
    };
    Some((std::str::from_utf8(name).ok()?, part))
}

/// The big-endian sequence number at the end of a message or flow key.
pub(crate) fn seq_of(part: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(part.try_into().ok()?))
}

/// The big-endian packet id at the end of an inbound key.
pub(crate) fn packet_id_of(part: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(part.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_back_and_prefixes_do_not_overlap() {
        let key = client_key(MESSAGE, "a/b", &7u64.to_be_bytes());
        let (client, part) = split(&key).unwrap();
        assert_eq!(client, "a/b");
        assert_eq!(seq_of(part), Some(7));
        // Client "a" does not own client "ab"'s keys.
        assert!(!client_key(MESSAGE, "ab", &[1]).starts_with(&client_prefix(MESSAGE, "a")));
        // Sequence numbers sort in queue order.
        assert!(
            client_key(MESSAGE, "a", &255u64.to_be_bytes())
                < client_key(MESSAGE, "a", &256u64.to_be_bytes())
        );
        let key = named(RETAINED, "t/x");
        let (topic, rest) = split(&key).unwrap();
        assert_eq!((topic, rest), ("t/x", &[][..]));
    }
}
