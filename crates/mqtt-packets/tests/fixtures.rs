//! Drives the raw packet fixture catalogue of `support/mod.rs` through the codec: every fixture
//! decodes whole and a byte at a time to its expected packet or exact error, and every packet
//! encodes back to its bytes. Failures name the fixture and the spec statement it checks.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::BytesMut;
use mqtt_packets::{
    DecodeContext, DecodeError, Malformed, Packet, PacketType, Protocol, ProtocolViolation, decode,
};
use support::{Expect, Fixture, catalogue};

const LEVELS: [Protocol; 3] = [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5];

fn context(fixture: &Fixture) -> DecodeContext {
    DecodeContext::new(fixture.protocol).with_maximum_packet_size(fixture.maximum_packet_size)
}

fn label(fixture: &Fixture) -> String {
    format!(
        "{} [{}] ({:?}, {:02X?})",
        fixture.name, fixture.spec, fixture.protocol, fixture.bytes
    )
}

/// Fails the test with every collected problem, one per line.
fn report(what: &str, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} {what}:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}

/// The packet a `Packet` or `DecodesTo` fixture must decode to and the bytes it must encode to.
fn expected_packet(fixture: &Fixture) -> Option<(&Packet, &[u8])> {
    match &fixture.expect {
        Expect::Packet(packet) => Some((packet, &fixture.bytes)),
        Expect::DecodesTo { packet, canonical } => Some((packet, canonical)),
        Expect::Error(_) => None,
    }
}

fn encode(packet: &Packet, protocol: Protocol) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::new();
    packet
        .encode(protocol, &mut out)
        .map_err(|error| format!("encode failed: {error}"))?;
    let len = packet.encoded_len(protocol);
    if len != out.len() {
        return Err(format!(
            "encoded_len {len} but encode wrote {} bytes",
            out.len()
        ));
    }
    Ok(out.to_vec())
}

fn check_packet(fixture: &Fixture, packet: &Packet, canonical: &[u8]) -> Result<(), String> {
    // Decode the bytes followed by a PINGREQ: exactly the fixture's bytes must be consumed.
    let mut buf = BytesMut::from(&fixture.bytes[..]);
    buf.extend_from_slice(&[0xC0, 0x00]);
    match decode(&mut buf, &context(fixture)) {
        Ok(Some(decoded)) if decoded == *packet => {}
        other => return Err(format!("decode gave {other:?}, expected {packet:?}")),
    }
    if buf[..] != [0xC0, 0x00] {
        return Err(format!(
            "decode left {:02X?} instead of the next packet",
            &buf[..]
        ));
    }
    let encoded = encode(packet, fixture.protocol)?;
    if encoded != canonical {
        return Err(format!(
            "encoded to {encoded:02X?}, expected {canonical:02X?}"
        ));
    }
    // The canonical form decodes to the same packet.
    let mut buf = BytesMut::from(canonical);
    match decode(&mut buf, &context(fixture)) {
        Ok(Some(decoded)) if decoded == *packet && buf.is_empty() => Ok(()),
        other => Err(format!(
            "canonical bytes decode to {other:?} leaving {} bytes",
            buf.len()
        )),
    }
}

/// (1) Every `Packet` and `DecodesTo` fixture decodes to its packet, consumes exactly its bytes,
/// and encodes back to its bytes (or its canonical form) with a matching `encoded_len`.
#[test]
fn packets_decode_and_encode_back() {
    let mut failures = Vec::new();
    let mut count = 0;
    for fixture in catalogue() {
        if let Some((packet, canonical)) = expected_packet(&fixture) {
            count += 1;
            if let Err(problem) = check_packet(&fixture, packet, canonical) {
                failures.push(format!("{}: {problem}", label(&fixture)));
            }
        }
    }
    assert!(count > 0);
    report("packet fixtures failed", &failures);
}

/// The reason code each group of errors maps to (§0.3 of the checklist, [MQTT-3.3.2-8],
/// [MQTT-3.2.2-15], [MQTT-3.1.2-2]).
fn implied_reason_code(error: &DecodeError) -> Option<u8> {
    Some(match error {
        DecodeError::Malformed(_) => 0x81,
        DecodeError::Protocol(ProtocolViolation::TopicAliasZero) => 0x94,
        DecodeError::Protocol(_) => 0x82,
        DecodeError::PacketTooLarge { .. } => 0x95,
        DecodeError::UnsupportedProtocol { .. } => 0x84,
        _ => return None,
    })
}

/// (2) Every `Error` fixture fails with exactly its error, which maps to the reason code of its
/// group.
#[test]
fn errors_are_exact_and_map_to_their_reason_code() {
    let mut failures = Vec::new();
    let mut count = 0;
    for fixture in catalogue() {
        let Expect::Error(expected) = &fixture.expect else {
            continue;
        };
        count += 1;
        let mut buf = BytesMut::from(&fixture.bytes[..]);
        match decode(&mut buf, &context(&fixture)) {
            Err(error) if error == *expected => {
                let code = error.reason_code().value();
                if implied_reason_code(&error) != Some(code) {
                    failures.push(format!(
                        "{}: reason code {code:#04x}, expected {:?}",
                        label(&fixture),
                        implied_reason_code(&error)
                    ));
                }
            }
            other => failures.push(format!(
                "{}: decode gave {other:?}, expected Err({expected:?})",
                label(&fixture)
            )),
        }
    }
    assert!(count > 0);
    report("error fixtures failed", &failures);
}

/// How many bytes the decoder needs before it can give its result: the whole packet, except
/// for errors decided from the fixed header (the first byte, or the Remaining Length).
fn bytes_needed(fixture: &Fixture) -> usize {
    let Expect::Error(error) = &fixture.expect else {
        return fixture.bytes.len();
    };
    let length_bytes = fixture
        .bytes
        .iter()
        .skip(1)
        .take(4)
        .position(|byte| byte & 0x80 == 0);
    match (error, length_bytes) {
        (
            DecodeError::Malformed(
                Malformed::ReservedPacketType | Malformed::InvalidFixedHeaderFlags { .. },
            ),
            _,
        ) => 1,
        (DecodeError::PacketTooLarge { .. }, Some(index)) => index + 2,
        (DecodeError::Malformed(Malformed::VariableByteIntegerTooLong), None) => 5,
        _ => fixture.bytes.len(),
    }
}

/// (3) Fed one byte at a time, every fixture gives `Ok(None)` until the last byte it needs (the
/// last byte of the packet, or of the fixed header for errors found there), then the same result
/// as when decoded whole.
#[test]
fn byte_at_a_time_matches_whole() {
    let mut failures = Vec::new();
    for fixture in catalogue() {
        let context = context(&fixture);
        let whole = decode(&mut BytesMut::from(&fixture.bytes[..]), &context);
        let needed = bytes_needed(&fixture);
        let mut buf = BytesMut::new();
        for (index, &byte) in fixture.bytes.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            let result = decode(&mut buf, &context);
            let fed = index + 1;
            if fed < needed {
                if !matches!(result, Ok(None)) {
                    failures.push(format!(
                        "{}: after {fed} of {needed} bytes gave {result:?}",
                        label(&fixture)
                    ));
                    break;
                }
            } else {
                if result != whole {
                    failures.push(format!(
                        "{}: after {fed} bytes gave {result:?}, whole gave {whole:?}",
                        label(&fixture)
                    ));
                } else if matches!(result, Ok(Some(_))) && !buf.is_empty() {
                    failures.push(format!(
                        "{}: {} bytes left over",
                        label(&fixture),
                        buf.len()
                    ));
                }
                break;
            }
        }
    }
    report("fixtures differ when fed a byte at a time", &failures);
}

/// (4) The catalogue is large enough to mean something.
#[test]
fn catalogue_has_at_least_150_fixtures() {
    let count = catalogue().len();
    assert!(count >= 150, "only {count} fixtures");
}

/// (5) Fixture names are unique, so a failure points at one fixture.
#[test]
fn fixture_names_are_unique() {
    let mut seen = BTreeSet::new();
    let duplicates: Vec<String> = catalogue()
        .iter()
        .filter(|fixture| !seen.insert(fixture.name))
        .map(|fixture| fixture.name.to_owned())
        .collect();
    report("duplicated fixture names", &duplicates);
}

/// Every fixture cites a spec statement.
#[test]
fn every_fixture_cites_the_spec() {
    let missing: Vec<String> = catalogue()
        .iter()
        .filter(|fixture| fixture.spec.trim().is_empty())
        .map(label)
        .collect();
    report("fixtures without a spec reference", &missing);
}

/// Each of the 15 packet types decodes at every level where it exists, and AUTH is refused at 3
/// and 4.
#[test]
fn every_packet_type_at_every_level() {
    let catalogue = catalogue();
    let mut decoded = BTreeSet::new();
    let mut refused_auth = BTreeSet::new();
    for fixture in &catalogue {
        if let Some((packet, _)) = expected_packet(fixture) {
            decoded.insert((packet.packet_type() as u8, fixture.protocol));
        }
        if let Expect::Error(DecodeError::Malformed(Malformed::PacketTypeNotInProtocol {
            packet: PacketType::Auth,
        })) = &fixture.expect
        {
            refused_auth.insert(fixture.protocol);
        }
    }
    let mut missing = Vec::new();
    for packet_type in 1..=15u8 {
        for protocol in LEVELS {
            let exists = packet_type != PacketType::Auth as u8 || protocol.is_v5();
            if exists && !decoded.contains(&(packet_type, protocol)) {
                missing.push(format!(
                    "no valid packet of type {packet_type} at {protocol}"
                ));
            }
            if !exists && !refused_auth.contains(&protocol) {
                missing.push(format!("no fixture refusing AUTH at {protocol}"));
            }
        }
    }
    report("coverage gaps", &missing);
}

/// The MQTT 5 properties a decoded packet carries, as (where, property id) pairs.
fn properties_of(packet: &Packet) -> Vec<(&'static str, u8)> {
    let mut out = Vec::new();
    let mut add = |context: &'static str, id: u8, present: bool| {
        if present {
            out.push((context, id));
        }
    };
    match packet {
        Packet::Connect(connect) => {
            let p = &connect.properties;
            add("CONNECT", 0x11, p.session_expiry_interval.is_some());
            add("CONNECT", 0x21, p.receive_maximum.is_some());
            add("CONNECT", 0x27, p.maximum_packet_size.is_some());
            add("CONNECT", 0x22, p.topic_alias_maximum.is_some());
            add("CONNECT", 0x19, p.request_response_information.is_some());
            add("CONNECT", 0x17, p.request_problem_information.is_some());
            add("CONNECT", 0x15, p.authentication_method.is_some());
            add("CONNECT", 0x16, p.authentication_data.is_some());
            add("CONNECT", 0x26, !p.user_properties.is_empty());
            if let Some(will) = &connect.will {
                let p = &will.properties;
                add("Will", 0x18, p.will_delay_interval.is_some());
                add("Will", 0x01, p.payload_format_indicator.is_some());
                add("Will", 0x02, p.message_expiry_interval.is_some());
                add("Will", 0x03, p.content_type.is_some());
                add("Will", 0x08, p.response_topic.is_some());
                add("Will", 0x09, p.correlation_data.is_some());
                add("Will", 0x26, !p.user_properties.is_empty());
            }
        }
        Packet::ConnAck(connack) => {
            let p = &connack.properties;
            add("CONNACK", 0x11, p.session_expiry_interval.is_some());
            add("CONNACK", 0x21, p.receive_maximum.is_some());
            add("CONNACK", 0x24, p.maximum_qos.is_some());
            add("CONNACK", 0x25, p.retain_available.is_some());
            add("CONNACK", 0x27, p.maximum_packet_size.is_some());
            add("CONNACK", 0x12, p.assigned_client_identifier.is_some());
            add("CONNACK", 0x22, p.topic_alias_maximum.is_some());
            add("CONNACK", 0x1F, p.reason_string.is_some());
            add("CONNACK", 0x28, p.wildcard_subscription_available.is_some());
            add(
                "CONNACK",
                0x29,
                p.subscription_identifiers_available.is_some(),
            );
            add("CONNACK", 0x2A, p.shared_subscription_available.is_some());
            add("CONNACK", 0x13, p.server_keep_alive.is_some());
            add("CONNACK", 0x1A, p.response_information.is_some());
            add("CONNACK", 0x1C, p.server_reference.is_some());
            add("CONNACK", 0x15, p.authentication_method.is_some());
            add("CONNACK", 0x16, p.authentication_data.is_some());
            add("CONNACK", 0x26, !p.user_properties.is_empty());
        }
        Packet::Publish(publish) => {
            let p = &publish.properties;
            add("PUBLISH", 0x01, p.payload_format_indicator.is_some());
            add("PUBLISH", 0x02, p.message_expiry_interval.is_some());
            add("PUBLISH", 0x23, p.topic_alias.is_some());
            add("PUBLISH", 0x08, p.response_topic.is_some());
            add("PUBLISH", 0x09, p.correlation_data.is_some());
            add("PUBLISH", 0x03, p.content_type.is_some());
            add("PUBLISH", 0x0B, !p.subscription_identifiers.is_empty());
            add("PUBLISH", 0x26, !p.user_properties.is_empty());
        }
        Packet::PubAck(ack) => {
            add("PUBACK", 0x1F, ack.properties.reason_string.is_some());
            add("PUBACK", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::PubRec(ack) => {
            add("PUBREC", 0x1F, ack.properties.reason_string.is_some());
            add("PUBREC", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::PubRel(ack) => {
            add("PUBREL", 0x1F, ack.properties.reason_string.is_some());
            add("PUBREL", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::PubComp(ack) => {
            add("PUBCOMP", 0x1F, ack.properties.reason_string.is_some());
            add("PUBCOMP", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::Subscribe(subscribe) => {
            let p = &subscribe.properties;
            add("SUBSCRIBE", 0x0B, p.subscription_identifier.is_some());
            add("SUBSCRIBE", 0x26, !p.user_properties.is_empty());
        }
        Packet::SubAck(ack) => {
            add("SUBACK", 0x1F, ack.properties.reason_string.is_some());
            add("SUBACK", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::Unsubscribe(unsubscribe) => {
            add(
                "UNSUBSCRIBE",
                0x26,
                !unsubscribe.properties.user_properties.is_empty(),
            );
        }
        Packet::UnsubAck(ack) => {
            add("UNSUBACK", 0x1F, ack.properties.reason_string.is_some());
            add("UNSUBACK", 0x26, !ack.properties.user_properties.is_empty());
        }
        Packet::Disconnect(disconnect) => {
            let p = &disconnect.properties;
            add("DISCONNECT", 0x11, p.session_expiry_interval.is_some());
            add("DISCONNECT", 0x1F, p.reason_string.is_some());
            add("DISCONNECT", 0x1C, p.server_reference.is_some());
            add("DISCONNECT", 0x26, !p.user_properties.is_empty());
        }
        Packet::Auth(auth) => {
            let p = &auth.properties;
            add("AUTH", 0x15, p.authentication_method.is_some());
            add("AUTH", 0x16, p.authentication_data.is_some());
            add("AUTH", 0x1F, p.reason_string.is_some());
            add("AUTH", 0x26, !p.user_properties.is_empty());
        }
        Packet::PingReq | Packet::PingResp => {}
    }
    out
}

/// Where each property may appear (MQTT 5.0 table 2-4).
const ALLOWED: &[(u8, &[&str])] = &[
    (0x01, &["PUBLISH", "Will"]),
    (0x02, &["PUBLISH", "Will"]),
    (0x03, &["PUBLISH", "Will"]),
    (0x08, &["PUBLISH", "Will"]),
    (0x09, &["PUBLISH", "Will"]),
    (0x0B, &["PUBLISH", "SUBSCRIBE"]),
    (0x11, &["CONNECT", "CONNACK", "DISCONNECT"]),
    (0x12, &["CONNACK"]),
    (0x13, &["CONNACK"]),
    (0x15, &["CONNECT", "CONNACK", "AUTH"]),
    (0x16, &["CONNECT", "CONNACK", "AUTH"]),
    (0x17, &["CONNECT"]),
    (0x18, &["Will"]),
    (0x19, &["CONNECT"]),
    (0x1A, &["CONNACK"]),
    (0x1C, &["CONNACK", "DISCONNECT"]),
    (
        0x1F,
        &[
            "CONNACK",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBACK",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    (0x21, &["CONNECT", "CONNACK"]),
    (0x22, &["CONNECT", "CONNACK"]),
    (0x23, &["PUBLISH"]),
    (0x24, &["CONNACK"]),
    (0x25, &["CONNACK"]),
    (
        0x26,
        &[
            "CONNECT",
            "CONNACK",
            "PUBLISH",
            "Will",
            "PUBACK",
            "PUBREC",
            "PUBREL",
            "PUBCOMP",
            "SUBSCRIBE",
            "SUBACK",
            "UNSUBSCRIBE",
            "UNSUBACK",
            "DISCONNECT",
            "AUTH",
        ],
    ),
    (0x27, &["CONNECT", "CONNACK"]),
    (0x28, &["CONNACK"]),
    (0x29, &["CONNACK"]),
    (0x2A, &["CONNACK"]),
];

/// Every MQTT 5 property decodes (and round-trips) in every packet that allows it, and the
/// catalogue refuses properties where they are not allowed and when they are repeated.
#[test]
fn every_property_in_every_packet_that_allows_it() {
    let catalogue = catalogue();
    let mut seen = BTreeSet::new();
    let mut not_allowed = BTreeMap::<u32, usize>::new();
    let mut duplicated = 0;
    for fixture in &catalogue {
        if let Some((packet, _)) = expected_packet(fixture) {
            seen.extend(properties_of(packet));
        }
        match &fixture.expect {
            Expect::Error(DecodeError::Malformed(Malformed::PropertyNotAllowed { id, .. })) => {
                *not_allowed.entry(*id).or_default() += 1;
            }
            Expect::Error(DecodeError::Protocol(ProtocolViolation::DuplicateProperty {
                ..
            })) => duplicated += 1,
            _ => {}
        }
    }
    let mut missing = Vec::new();
    for &(id, contexts) in ALLOWED {
        for &context in contexts {
            if !seen.contains(&(context, id)) {
                missing.push(format!("property {id:#04x} never decoded in {context}"));
            }
        }
    }
    let allowed_somewhere: BTreeSet<(&str, u8)> = ALLOWED
        .iter()
        .flat_map(|&(id, contexts)| contexts.iter().map(move |&context| (context, id)))
        .collect();
    for pair in &seen {
        if !allowed_somewhere.contains(pair) {
            missing.push(format!(
                "property {:#04x} decoded in {}, where it is not allowed",
                pair.1, pair.0
            ));
        }
    }
    if not_allowed.values().sum::<usize>() < 10 {
        missing.push(format!(
            "only {not_allowed:?} property-not-allowed fixtures"
        ));
    }
    if duplicated < 10 {
        missing.push(format!("only {duplicated} duplicate-property fixtures"));
    }
    report("property coverage gaps", &missing);
}

/// A fixed header announcing 200 MiB is refused against a 1 MiB limit as soon as its five bytes
/// are in, before any of the body is buffered [MQTT-3.2.2-15].
#[test]
fn oversized_packet_is_refused_from_its_fixed_header() {
    const ANNOUNCED: usize = 200 * 1024 * 1024;
    const MAXIMUM: u32 = 1024 * 1024;
    let mut header = vec![0x30];
    let mut value = ANNOUNCED;
    loop {
        let byte = (value % 128) as u8;
        value /= 128;
        header.push(if value > 0 { byte | 0x80 } else { byte });
        if value == 0 {
            break;
        }
    }
    assert_eq!(
        header.len(),
        5,
        "200 MiB takes a four-byte Remaining Length"
    );
    for protocol in LEVELS {
        let context = DecodeContext::new(protocol).with_maximum_packet_size(MAXIMUM);
        let mut buf = BytesMut::new();
        for &byte in &header[..4] {
            buf.extend_from_slice(&[byte]);
            assert_eq!(
                decode(&mut buf, &context),
                Ok(None),
                "{protocol}: header not complete yet"
            );
        }
        buf.extend_from_slice(&header[4..]);
        assert_eq!(
            decode(&mut buf, &context),
            Err(DecodeError::PacketTooLarge {
                size: ANNOUNCED + 5,
                maximum: MAXIMUM
            }),
            "{protocol}"
        );
        assert!(
            buf.capacity() < MAXIMUM as usize,
            "{protocol}: reserved {} bytes",
            buf.capacity()
        );
        assert_eq!(
            decode(&mut buf, &context)
                .unwrap_err()
                .reason_code()
                .value(),
            0x95,
            "{protocol}: Packet too large"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Exhaustive sweeps over one-byte fields, against tables copied from the spec (not the crate).
// ---------------------------------------------------------------------------------------------

fn decode_bytes(bytes: &[u8], protocol: Protocol) -> Result<Option<Packet>, DecodeError> {
    decode(&mut BytesMut::from(bytes), &DecodeContext::new(protocol))
}

fn is_header_error(result: &Result<Option<Packet>, DecodeError>) -> bool {
    matches!(
        result,
        Err(DecodeError::Malformed(
            Malformed::ReservedPacketType | Malformed::InvalidFixedHeaderFlags { .. }
        ))
    )
}

/// Every first byte at every level: type 0 is reserved (§2.1.2); the flags must be those of
/// table 2-2 [MQTT-2.1.3-1]: 0010 for PUBREL, SUBSCRIBE and UNSUBSCRIBE (also 1010 at level 3),
/// anything for PUBLISH, 0000 otherwise.
#[test]
fn fixed_header_flags_of_every_first_byte() {
    let mut failures = Vec::new();
    for protocol in LEVELS {
        for first in 0..=255u8 {
            let (kind, flags) = (first >> 4, first & 0x0F);
            let result = decode_bytes(&[first, 0x00], protocol);
            let expected = match kind {
                0 => Some(DecodeError::Malformed(Malformed::ReservedPacketType)),
                3 => None,
                6 | 8 | 10 if flags == 0b0010 => None,
                6 | 8 | 10 if flags == 0b1010 && protocol == Protocol::V3_1 => None,
                1..=15 if flags == 0 && !matches!(kind, 6 | 8 | 10) => None,
                _ => PacketType::from_u8(kind).map(|packet| {
                    DecodeError::Malformed(Malformed::InvalidFixedHeaderFlags { packet, flags })
                }),
            };
            match expected {
                Some(error) if result != Err(error.clone()) => {
                    failures.push(format!(
                        "{protocol} {first:#04x}: {result:?}, expected {error:?}"
                    ));
                }
                None if is_header_error(&result) => {
                    failures.push(format!(
                        "{protocol} {first:#04x}: {result:?}, expected no header error"
                    ));
                }
                _ => {}
            }
        }
    }
    report("first bytes misjudged", &failures);
}

/// The MQTT 5 reason codes each packet may carry (checklist §0.1, MQTT 5.0 table 2-6 and
/// §3.2.2.2, §3.4.2.1, §3.5.2.1, §3.6.2.1, §3.7.2.1, §3.9.3, §3.11.3, §3.14.2.1, §3.15.2.1).
const REASON_CODES: &[(PacketType, &[u8])] = &[
    (
        PacketType::ConnAck,
        &[
            0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90,
            0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
        ],
    ),
    (
        PacketType::PubAck,
        &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
    ),
    (
        PacketType::PubRec,
        &[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99],
    ),
    (PacketType::PubRel, &[0x00, 0x92]),
    (PacketType::PubComp, &[0x00, 0x92]),
    (
        PacketType::SubAck,
        &[
            0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
        ],
    ),
    (
        PacketType::UnsubAck,
        &[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91],
    ),
    (
        PacketType::Disconnect,
        &[
            0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8C, 0x8D, 0x8E, 0x8F, 0x90,
            0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0,
            0xA1, 0xA2,
        ],
    ),
    (PacketType::Auth, &[0x00, 0x18, 0x19]),
];

/// A minimal MQTT 5 packet of this type carrying `code`.
fn with_reason_code(packet: PacketType, code: u8) -> Vec<u8> {
    match packet {
        PacketType::ConnAck => vec![0x20, 0x03, 0x00, code, 0x00],
        PacketType::PubAck => vec![0x40, 0x03, 0x00, 0x01, code],
        PacketType::PubRec => vec![0x50, 0x03, 0x00, 0x01, code],
        PacketType::PubRel => vec![0x62, 0x03, 0x00, 0x01, code],
        PacketType::PubComp => vec![0x70, 0x03, 0x00, 0x01, code],
        PacketType::SubAck => vec![0x90, 0x04, 0x00, 0x01, 0x00, code],
        PacketType::UnsubAck => vec![0xB0, 0x04, 0x00, 0x01, 0x00, code],
        PacketType::Disconnect => vec![0xE0, 0x01, code],
        // With an (empty) Authentication Method, which AUTH requires.
        _ => vec![0xF0, 0x05, code, 0x03, 0x15, 0x00, 0x00],
    }
}

/// Every reason code value in every MQTT 5 packet that has one: accepted exactly when the spec
/// lists it for that packet [MQTT-3.2.2-8] [MQTT-3.4.2-1] [MQTT-3.9.3-2] [MQTT-3.11.3-2]
/// [MQTT-3.14.2-1] [MQTT-3.15.2-1]; otherwise a Protocol Error.
#[test]
fn reason_codes_of_every_packet_match_the_spec_tables() {
    let mut failures = Vec::new();
    for &(packet, allowed) in REASON_CODES {
        for code in 0..=255u8 {
            let result = decode_bytes(&with_reason_code(packet, code), Protocol::V5);
            let ok = matches!(&result, Ok(Some(decoded)) if decoded.packet_type() == packet);
            if allowed.contains(&code) {
                if !ok {
                    failures.push(format!(
                        "{packet} {code:#04x}: {result:?}, expected a packet"
                    ));
                }
            } else if result
                != Err(DecodeError::Protocol(
                    ProtocolViolation::InvalidReasonCode { packet, code },
                ))
            {
                failures.push(format!(
                    "{packet} {code:#04x}: {result:?}, expected InvalidReasonCode"
                ));
            }
        }
    }
    // MQTT 3.1.1 and 3.1: CONNACK return codes 0-5, SUBACK 0x00-0x02 and 0x80.
    for protocol in [Protocol::V3_1, Protocol::V3_1_1] {
        for code in 0..=255u8 {
            let connack = decode_bytes(&[0x20, 0x02, 0x00, code], protocol);
            if (code <= 5) != matches!(connack, Ok(Some(Packet::ConnAck(_)))) {
                failures.push(format!(
                    "{protocol} CONNACK return code {code:#04x}: {connack:?}"
                ));
            }
            let suback = decode_bytes(&[0x90, 0x03, 0x00, 0x01, code], protocol);
            let allowed = matches!(code, 0x00 | 0x01 | 0x02 | 0x80);
            if allowed != matches!(suback, Ok(Some(Packet::SubAck(_)))) {
                failures.push(format!(
                    "{protocol} SUBACK return code {code:#04x}: {suback:?}"
                ));
            }
        }
    }
    report("reason codes misjudged", &failures);
}

/// Every Subscription Options byte: MQTT 5 bits 6-7 reserved (Malformed [MQTT-3.8.3-5]), QoS 3
/// and Retain Handling 3 Protocol Errors (§3.8.3.1); MQTT 3.x bits 2-7 reserved and QoS 3
/// Malformed ([MQTT-3-8.3-4] of 3.1.1).
#[test]
fn subscription_options_of_every_value() {
    let mut failures = Vec::new();
    for protocol in LEVELS {
        for options in 0..=255u8 {
            let mut bytes = vec![0x82, 0x00, 0x00, 0x01];
            if protocol.is_v5() {
                bytes.push(0x00);
            }
            bytes.extend_from_slice(&[0x00, 0x01, b'a', options]);
            bytes[1] = (bytes.len() - 2) as u8;
            let result = decode_bytes(&bytes, protocol);
            let qos = options & 0x03;
            let retain_handling = (options >> 4) & 0x03;
            let reserved = options & if protocol.is_v5() { 0xC0 } else { 0xFC } != 0;
            let mut acceptable = Vec::new();
            if reserved {
                acceptable.push(DecodeError::from(Malformed::SubscriptionOptionsReserved {
                    options,
                }));
            } else if protocol.is_v5() {
                if qos == 3 {
                    acceptable.push(ProtocolViolation::SubscriptionQoS3.into());
                }
                if retain_handling == 3 {
                    acceptable.push(ProtocolViolation::RetainHandling3.into());
                }
            } else if qos == 3 {
                acceptable.push(
                    Malformed::InvalidQoS {
                        field: "requested QoS",
                    }
                    .into(),
                );
            }
            match &result {
                Ok(Some(Packet::Subscribe(subscribe))) if acceptable.is_empty() => {
                    let got = subscribe
                        .subscriptions
                        .first()
                        .map(|s| s.options.to_byte(protocol));
                    if got != Some(options) {
                        failures.push(format!("{protocol} {options:#04x}: decoded as {got:?}"));
                    }
                }
                Err(error) if acceptable.contains(error) => {}
                _ => failures.push(format!(
                    "{protocol} {options:#04x}: {result:?}, expected one of {acceptable:?}"
                )),
            }
        }
    }
    report("subscription options misjudged", &failures);
}

/// Every Connect Flags byte at every level, with the fields its flags call for:
/// reserved bit [MQTT-3.1.2-3], Will QoS/Retain without Will [MQTT-3.1.2-11] [MQTT-3.1.2-13],
/// Will QoS 3 [MQTT-3.1.2-12], Password without User Name before MQTT 5 ([MQTT-3.1.2-22] of
/// 3.1.1).
#[test]
fn connect_flags_of_every_value() {
    let mut failures = Vec::new();
    for protocol in LEVELS {
        for flags in 0..=255u8 {
            let will = flags & 0x04 != 0;
            let will_qos = (flags >> 3) & 0x03;
            let will_retain = flags & 0x20 != 0;
            let password = flags & 0x40 != 0;
            let user_name = flags & 0x80 != 0;
            let name = protocol.name().as_bytes();
            let mut body = vec![0x00, name.len() as u8];
            body.extend_from_slice(name);
            body.extend_from_slice(&[protocol.level(), flags, 0x00, 0x3C]);
            if protocol.is_v5() {
                body.push(0x00);
            }
            body.extend_from_slice(&[0x00, 0x01, b'c']);
            if will {
                if protocol.is_v5() {
                    body.push(0x00);
                }
                body.extend_from_slice(&[0x00, 0x01, b'w', 0x00, 0x01, b'x']);
            }
            if user_name {
                body.extend_from_slice(&[0x00, 0x01, b'u']);
            }
            if password {
                body.extend_from_slice(&[0x00, 0x01, b'p']);
            }
            let mut bytes = vec![0x10, body.len() as u8];
            bytes.extend_from_slice(&body);

            let mut acceptable: Vec<DecodeError> = Vec::new();
            if flags & 0x01 != 0 {
                acceptable.push(Malformed::ConnectReservedFlag.into());
            }
            if !will && (will_qos != 0 || will_retain) {
                acceptable.push(Malformed::WillFlagsWithoutWill.into());
            }
            if will && will_qos == 3 {
                acceptable.push(Malformed::InvalidQoS { field: "Will QoS" }.into());
            }
            if password && !user_name && !protocol.is_v5() {
                acceptable.push(Malformed::PasswordWithoutUserName.into());
            }
            let result = decode_bytes(&bytes, protocol);
            match &result {
                Ok(Some(Packet::Connect(connect))) if acceptable.is_empty() => {
                    let fields_match = connect.protocol == protocol
                        && connect.clean_start == (flags & 0x02 != 0)
                        && connect.will.as_ref().map(|w| (w.qos.as_u8(), w.retain))
                            == will.then_some((will_qos, will_retain))
                        && connect.username.is_some() == user_name
                        && connect.password.is_some() == password;
                    if !fields_match {
                        failures.push(format!("{protocol} {flags:#010b}: decoded as {connect:?}"));
                    }
                }
                Err(error) if acceptable.contains(error) => {}
                _ => failures.push(format!(
                    "{protocol} {flags:#010b}: {result:?}, expected one of {acceptable:?}"
                )),
            }
        }
    }
    report("connect flags misjudged", &failures);
}
