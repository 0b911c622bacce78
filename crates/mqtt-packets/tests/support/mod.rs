//! The raw packet fixture catalogue: wire bytes for every packet type at every protocol level,
//! each with the packet it decodes to or the exact error it must produce.
//!
//! The bytes are written by hand from the specification (MQTT 5.0, MQTT 3.1.1, MQTT 3.1) and
//! the conformance checklist in `shared/spec/mqtt5-server-checklist.md`, never produced by the
//! codec under test. Property ids are spelled out here rather than taken from the crate, so that a
//! wrong id in the codec shows up as a failing fixture.
//!
//! Where the properties of a packet are listed in a `Packet` fixture, they follow the order in
//! which the codec writes them (the order of the fields in its property sets, User Properties
//! last), so that the fixture also checks the exact encoding. Fixtures named `..._order_free`
//! send the same properties in another order, which must decode to the same value.

use std::num::NonZeroU32;

use bytes::Bytes;
use mqtt_packets::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DecodeError, Disconnect, DisconnectProperties, Malformed, MqttString,
    PROTOCOL_MAXIMUM_PACKET_SIZE, Packet, PacketId, PacketType, PayloadFormatIndicator, PropertyId,
    Protocol, ProtocolViolation, PubAck, PubComp, PubRec, PubRel, Publish, PublishProperties, QoS,
    ReasonCode, RetainHandling, SubAck, Subscribe, SubscribeProperties, Subscription,
    SubscriptionOptions, UnsubAck, Unsubscribe, UnsubscribeProperties, UserProperty, Will,
    WillProperties,
};

/// One raw packet and what decoding it must give.
#[derive(Debug)]
pub(crate) struct Fixture {
    /// Unique, descriptive name (printed on failure).
    pub(crate) name: &'static str,
    /// The protocol level of the connection the bytes arrive on.
    pub(crate) protocol: Protocol,
    /// The complete wire bytes, fixed header included.
    pub(crate) bytes: Vec<u8>,
    /// What decoding (and re-encoding) must give.
    pub(crate) expect: Expect,
    /// The spec statement the fixture checks, e.g. `"MQTT-3.3.1-4"` or `"§3.4.2"`.
    pub(crate) spec: &'static str,
    /// The `DecodeContext::maximum_packet_size` to decode with; the protocol limit unless the
    /// fixture is about the limit.
    pub(crate) maximum_packet_size: u32,
}

/// The expected outcome of a fixture.
#[derive(Debug)]
pub(crate) enum Expect {
    /// Decodes to this packet and encodes back to exactly the fixture's bytes.
    Packet(Packet),
    /// Decodes to this packet, which encodes to `canonical` (a non-minimal length, a short form
    /// written in full, properties in another order, a tolerated flag).
    DecodesTo {
        /// The decoded packet.
        packet: Packet,
        /// What the packet encodes to.
        canonical: Vec<u8>,
    },
    /// Decoding fails with exactly this error.
    Error(DecodeError),
}

// ---------------------------------------------------------------------------------------------
// Byte builders.
// ---------------------------------------------------------------------------------------------

/// Concatenates byte-like parts (`Vec<u8>`, arrays, byte strings).
macro_rules! cat {
    ($($part:expr),* $(,)?) => {{
        let mut out: Vec<u8> = Vec::new();
        $( out.extend_from_slice(AsRef::<[u8]>::as_ref(&$part)); )*
        out
    }};
}

/// A Variable Byte Integer in the fewest bytes (§1.5.5).
fn vbi(mut value: u32) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let mut byte = (value % 128) as u8;
        value /= 128;
        if value > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if value == 0 {
            return out;
        }
    }
}

/// A whole packet: first byte, minimal Remaining Length, body.
fn frame(first: u8, body: impl AsRef<[u8]>) -> Vec<u8> {
    let body = body.as_ref();
    cat!([first], vbi(body.len() as u32), body)
}

/// A UTF-8 Encoded String field (§1.5.4).
fn s(text: &str) -> Vec<u8> {
    raw(text.as_bytes())
}

/// A length-prefixed field with arbitrary bytes: Binary Data (§1.5.6), or a string field holding
/// bytes that are not valid UTF-8.
fn raw(bytes: &[u8]) -> Vec<u8> {
    cat!((bytes.len() as u16).to_be_bytes(), bytes)
}

/// A property block: Property Length and the properties.
fn props(list: &[Vec<u8>]) -> Vec<u8> {
    let body = list.concat();
    cat!(vbi(body.len() as u32), body)
}

/// An empty property block.
const NO_PROPS: [u8; 1] = [0x00];

// Property identifiers, from MQTT 5.0 table 2-4.
const PAYLOAD_FORMAT_INDICATOR: u8 = 0x01;
const MESSAGE_EXPIRY_INTERVAL: u8 = 0x02;
const CONTENT_TYPE: u8 = 0x03;
const RESPONSE_TOPIC: u8 = 0x08;
const CORRELATION_DATA: u8 = 0x09;
const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
const SESSION_EXPIRY_INTERVAL: u8 = 0x11;
const ASSIGNED_CLIENT_IDENTIFIER: u8 = 0x12;
const SERVER_KEEP_ALIVE: u8 = 0x13;
const AUTHENTICATION_METHOD: u8 = 0x15;
const AUTHENTICATION_DATA: u8 = 0x16;
const REQUEST_PROBLEM_INFORMATION: u8 = 0x17;
const WILL_DELAY_INTERVAL: u8 = 0x18;
const REQUEST_RESPONSE_INFORMATION: u8 = 0x19;
const RESPONSE_INFORMATION: u8 = 0x1A;
const SERVER_REFERENCE: u8 = 0x1C;
const REASON_STRING: u8 = 0x1F;
const RECEIVE_MAXIMUM: u8 = 0x21;
const TOPIC_ALIAS_MAXIMUM: u8 = 0x22;
const TOPIC_ALIAS: u8 = 0x23;
const MAXIMUM_QOS: u8 = 0x24;
const RETAIN_AVAILABLE: u8 = 0x25;
const USER_PROPERTY: u8 = 0x26;
const MAXIMUM_PACKET_SIZE: u8 = 0x27;
const WILDCARD_SUBSCRIPTION_AVAILABLE: u8 = 0x28;
const SUBSCRIPTION_IDENTIFIERS_AVAILABLE: u8 = 0x29;
const SHARED_SUBSCRIPTION_AVAILABLE: u8 = 0x2A;

/// A Byte property.
fn p_byte(id: u8, value: u8) -> Vec<u8> {
    vec![id, value]
}

/// A Two Byte Integer property.
fn p_u16(id: u8, value: u16) -> Vec<u8> {
    cat!([id], value.to_be_bytes())
}

/// A Four Byte Integer property.
fn p_u32(id: u8, value: u32) -> Vec<u8> {
    cat!([id], value.to_be_bytes())
}

/// A Variable Byte Integer property.
fn p_vbi(id: u8, value: u32) -> Vec<u8> {
    cat!([id], vbi(value))
}

/// A UTF-8 String property.
fn p_str(id: u8, text: &str) -> Vec<u8> {
    cat!([id], s(text))
}

/// A Binary Data property (or a string property with raw bytes).
fn p_bin(id: u8, bytes: &[u8]) -> Vec<u8> {
    cat!([id], raw(bytes))
}

/// A User Property.
fn p_user(name: &str, value: &str) -> Vec<u8> {
    cat!([USER_PROPERTY], s(name), s(value))
}

// CONNECT flags (§3.1.2.3).
const CLEAN: u8 = 0x02;
const WILL: u8 = 0x04;
const WILL_QOS_1: u8 = 0x08;
const WILL_QOS_2: u8 = 0x10;
const WILL_RETAIN: u8 = 0x20;
const PASSWORD: u8 = 0x40;
const USER_NAME: u8 = 0x80;

/// The CONNECT variable header up to the properties: protocol name, level, flags, keep alive.
fn connect_head(name: &str, level: u8, flags: u8, keep_alive: u16) -> Vec<u8> {
    cat!(s(name), [level, flags], keep_alive.to_be_bytes())
}

/// The CONNECT variable header of a supported protocol level.
fn head(protocol: Protocol, flags: u8, keep_alive: u16) -> Vec<u8> {
    connect_head(protocol.name(), protocol.level(), flags, keep_alive)
}

// ---------------------------------------------------------------------------------------------
// Value builders.
// ---------------------------------------------------------------------------------------------

const V3: Protocol = Protocol::V3_1;
const V4: Protocol = Protocol::V3_1_1;
const V5: Protocol = Protocol::V5;

fn st(text: &'static str) -> MqttString {
    MqttString::from_static(text)
}

fn id(value: u16) -> PacketId {
    let Some(id) = PacketId::new(value) else {
        panic!("a fixture uses packet identifier 0")
    };
    id
}

fn sub_id(value: u32) -> NonZeroU32 {
    let Some(id) = NonZeroU32::new(value) else {
        panic!("a fixture uses subscription identifier 0")
    };
    id
}

fn user(name: &'static str, value: &'static str) -> UserProperty {
    UserProperty::new(st(name), st(value))
}

fn ack_props(
    reason: Option<&'static str>,
    users: &[(&'static str, &'static str)],
) -> AckProperties {
    AckProperties {
        reason_string: reason.map(st),
        user_properties: users.iter().map(|&(n, v)| user(n, v)).collect(),
    }
}

fn publish(qos: QoS, packet_id: Option<u16>, topic: MqttString, payload: &'static [u8]) -> Publish {
    Publish {
        qos,
        packet_id: packet_id.map(id),
        topic,
        payload: Bytes::from_static(payload),
        ..Publish::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Fixture constructors.
// ---------------------------------------------------------------------------------------------

fn fixture(
    name: &'static str,
    protocol: Protocol,
    spec: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
) -> Fixture {
    Fixture {
        name,
        protocol,
        bytes,
        expect,
        spec,
        maximum_packet_size: PROTOCOL_MAXIMUM_PACKET_SIZE,
    }
}

/// Decodes to `packet` and encodes back to the same bytes.
fn ok(
    name: &'static str,
    protocol: Protocol,
    spec: &'static str,
    bytes: Vec<u8>,
    packet: impl Into<Packet>,
) -> Fixture {
    fixture(name, protocol, spec, bytes, Expect::Packet(packet.into()))
}

/// Decodes to `packet`, which encodes to `canonical`.
fn canon(
    name: &'static str,
    protocol: Protocol,
    spec: &'static str,
    bytes: Vec<u8>,
    packet: impl Into<Packet>,
    canonical: Vec<u8>,
) -> Fixture {
    fixture(
        name,
        protocol,
        spec,
        bytes,
        Expect::DecodesTo {
            packet: packet.into(),
            canonical,
        },
    )
}

/// Fails with exactly `error`.
fn err(
    name: &'static str,
    protocol: Protocol,
    spec: &'static str,
    bytes: Vec<u8>,
    error: impl Into<DecodeError>,
) -> Fixture {
    fixture(name, protocol, spec, bytes, Expect::Error(error.into()))
}

fn end(packet: PacketType, field: &'static str) -> Malformed {
    Malformed::UnexpectedEnd { packet, field }
}

fn trailing(packet: PacketType, count: usize) -> Malformed {
    Malformed::TrailingBytes { packet, count }
}

fn flags(packet: PacketType, flags: u8) -> Malformed {
    Malformed::InvalidFixedHeaderFlags { packet, flags }
}

fn not_allowed(id: u8, context: &'static str) -> Malformed {
    Malformed::PropertyNotAllowed {
        id: id.into(),
        context,
    }
}

fn duplicate(property: PropertyId, context: &'static str) -> ProtocolViolation {
    ProtocolViolation::DuplicateProperty { property, context }
}

fn bad_value(property: PropertyId, value: u32) -> ProtocolViolation {
    ProtocolViolation::InvalidPropertyValue { property, value }
}

fn bad_code(packet: PacketType, code: u8) -> ProtocolViolation {
    ProtocolViolation::InvalidReasonCode { packet, code }
}

fn unsupported(name: &str, level: u8) -> DecodeError {
    DecodeError::UnsupportedProtocol {
        name: name.to_owned(),
        level,
    }
}

/// The whole catalogue.
pub(crate) fn catalogue() -> Vec<Fixture> {
    [
        fixed_header(),
        connect(),
        connect_errors(),
        connack(),
        publish_fixtures(),
        publish_errors(),
        acknowledgements(),
        subscribe(),
        suback(),
        unsubscribe(),
        unsuback(),
        ping(),
        disconnect(),
        auth(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

// ---------------------------------------------------------------------------------------------
// §2.1: the fixed header, whatever the packet.
// ---------------------------------------------------------------------------------------------

fn fixed_header() -> Vec<Fixture> {
    let publish_17 = frame(0x30, cat!(s("a/b"), NO_PROPS, b"012345678"));
    let mut too_large = err(
        "packet_too_large_v5",
        V5,
        "MQTT-3.2.2-15",
        publish_17.clone(),
        DecodeError::PacketTooLarge {
            size: 17,
            maximum: 16,
        },
    );
    too_large.maximum_packet_size = 16;
    let mut at_limit = ok(
        "packet_at_maximum_packet_size_v5",
        V5,
        "§2.1.4",
        publish_17,
        publish(QoS::AtMostOnce, None, st("a/b"), b"012345678"),
    );
    at_limit.maximum_packet_size = 17;
    // 130 bytes of body: a two-byte Remaining Length, which counts in the packet size.
    let mut too_large_header = err(
        "packet_too_large_counts_fixed_header_v4",
        V4,
        "§2.1.4",
        frame(0x30, cat!(s("t"), [0x55; 127])),
        DecodeError::PacketTooLarge {
            size: 133,
            maximum: 132,
        },
    );
    too_large_header.maximum_packet_size = 132;
    let mut connect_too_large = err(
        "connect_too_large_v3",
        V3,
        "MQTT-3.2.2-15",
        frame(0x10, cat!(head(V3, CLEAN, 60), s("client"))),
        DecodeError::PacketTooLarge {
            size: 22,
            maximum: 10,
        },
    );
    connect_too_large.maximum_packet_size = 10;

    vec![
        err(
            "packet_type_0_v5",
            V5,
            "§2.1.2",
            vec![0x00, 0x00],
            Malformed::ReservedPacketType,
        ),
        err(
            "packet_type_0_flags_v3",
            V3,
            "§2.1.2",
            vec![0x0F, 0x00],
            Malformed::ReservedPacketType,
        ),
        err(
            "remaining_length_5_bytes_v4",
            V4,
            "MQTT-1.5.5-1",
            vec![0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F],
            Malformed::VariableByteIntegerTooLong,
        ),
        err(
            "remaining_length_5_bytes_zero_v5",
            V5,
            "MQTT-1.5.5-1",
            vec![0xC0, 0x80, 0x80, 0x80, 0x80, 0x00],
            Malformed::VariableByteIntegerTooLong,
        ),
        canon(
            "remaining_length_non_minimal_publish_v4",
            V4,
            "§1.5.5",
            cat!([0x30, 0x86, 0x00], s("a"), b"xyz"),
            publish(QoS::AtMostOnce, None, st("a"), b"xyz"),
            frame(0x30, cat!(s("a"), b"xyz")),
        ),
        canon(
            "remaining_length_non_minimal_4_bytes_pingreq_v5",
            V5,
            "§1.5.5",
            vec![0xC0, 0x80, 0x80, 0x80, 0x00],
            Packet::PingReq,
            vec![0xC0, 0x00],
        ),
        ok(
            "remaining_length_two_bytes_v5",
            V5,
            "§1.5.5",
            frame(0x30, cat!(s("big"), NO_PROPS, [0xAB; 200])),
            Publish::new(st("big"), vec![0xAB; 200]),
        ),
        too_large,
        too_large_header,
        connect_too_large,
        at_limit,
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.1 CONNECT.
// ---------------------------------------------------------------------------------------------

fn connect() -> Vec<Fixture> {
    let full_v4 = Connect {
        protocol: V4,
        clean_start: false,
        keep_alive: 0,
        client_id: st("client-1"),
        will: Some(Will {
            topic: st("last/will"),
            payload: Bytes::from_static(b"bye"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        }),
        username: Some(st("user")),
        password: Some(Bytes::from_static(b"pw\x00\xFF")),
        properties: ConnectProperties::default(),
    };
    let full_v3 = Connect {
        protocol: V3,
        clean_start: true,
        keep_alive: 30,
        client_id: st("old-device"),
        will: Some(Will {
            topic: st("status/old-device"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::ExactlyOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        username: Some(st("u")),
        password: Some(Bytes::from_static(b"p")),
        properties: ConnectProperties::default(),
    };
    let all_properties = ConnectProperties {
        session_expiry_interval: Some(3600),
        receive_maximum: std::num::NonZeroU16::new(20),
        maximum_packet_size: NonZeroU32::new(65_536),
        topic_alias_maximum: Some(10),
        request_response_information: Some(true),
        request_problem_information: Some(false),
        authentication_method: Some(st("SCRAM-SHA-1")),
        authentication_data: Some(Bytes::from_static(b"client-first")),
        user_properties: vec![user("a", "1"), user("a", "2")].into(),
    };
    let all_properties_v5 = Connect {
        keep_alive: 120,
        properties: all_properties,
        ..Connect::new(V5, st("c1"))
    };
    let canonical_all = frame(
        0x10,
        cat!(
            head(V5, CLEAN, 120),
            props(&[
                p_u32(SESSION_EXPIRY_INTERVAL, 3600),
                p_u16(RECEIVE_MAXIMUM, 20),
                p_u32(MAXIMUM_PACKET_SIZE, 65_536),
                p_u16(TOPIC_ALIAS_MAXIMUM, 10),
                p_byte(REQUEST_RESPONSE_INFORMATION, 1),
                p_byte(REQUEST_PROBLEM_INFORMATION, 0),
                p_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1"),
                p_bin(AUTHENTICATION_DATA, b"client-first"),
                p_user("a", "1"),
                p_user("a", "2"),
            ]),
            s("c1"),
        ),
    );
    let will_v5 = Connect {
        will: Some(Will {
            topic: st("status/c1"),
            payload: Bytes::from_static(b"offline"),
            qos: QoS::ExactlyOnce,
            retain: true,
            properties: WillProperties {
                will_delay_interval: Some(30),
                payload_format_indicator: Some(PayloadFormatIndicator::Utf8),
                message_expiry_interval: Some(120),
                content_type: Some(st("text/plain")),
                response_topic: Some(st("replies/c1")),
                correlation_data: Some(Bytes::from_static(b"\x01\x02")),
                user_properties: vec![user("k", "v")].into(),
            },
        }),
        ..Connect::new(V5, st("c1"))
    };
    let password_only_v5 = Connect {
        password: Some(Bytes::from_static(b"secret")),
        ..Connect::new(V5, st("c1"))
    };
    let will_empty_payload_v5 = Connect {
        will: Some(Will {
            topic: st("w"),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        }),
        ..Connect::new(V5, st(""))
    };

    vec![
        ok(
            "connect_v3_minimal",
            V3,
            "§3.1 (3.1)",
            frame(0x10, cat!(head(V3, CLEAN, 60), s("c1"))),
            Connect::new(V3, st("c1")),
        ),
        ok(
            "connect_v3_will_user_name_password",
            V3,
            "§3.1 (3.1)",
            frame(
                0x10,
                cat!(
                    head(V3, CLEAN | WILL | WILL_QOS_2 | USER_NAME | PASSWORD, 30),
                    s("old-device"),
                    s("status/old-device"),
                    raw(b"gone"),
                    s("u"),
                    raw(b"p"),
                ),
            ),
            full_v3,
        ),
        ok(
            "connect_v4_minimal",
            V4,
            "§3.1 (3.1.1)",
            frame(0x10, cat!(head(V4, CLEAN, 60), s("c1"))),
            Connect::new(V4, st("c1")),
        ),
        ok(
            "connect_v4_will_user_name_password",
            V4,
            "MQTT-3.1.3-1",
            frame(
                0x10,
                cat!(
                    head(
                        V4,
                        USER_NAME | PASSWORD | WILL_RETAIN | WILL_QOS_1 | WILL,
                        0
                    ),
                    s("client-1"),
                    s("last/will"),
                    raw(b"bye"),
                    s("user"),
                    raw(b"pw\x00\xFF"),
                ),
            ),
            full_v4,
        ),
        ok(
            "connect_v4_empty_client_id",
            V4,
            "MQTT-3.1.3-6",
            frame(0x10, cat!(head(V4, CLEAN, 60), s(""))),
            Connect::new(V4, st("")),
        ),
        ok(
            "connect_v5_minimal",
            V5,
            "MQTT-2.2.2-1",
            frame(0x10, cat!(head(V5, CLEAN, 60), NO_PROPS, s("c1"))),
            Connect::new(V5, st("c1")),
        ),
        ok(
            "connect_v5_all_properties",
            V5,
            "§3.1.2.11",
            canonical_all.clone(),
            all_properties_v5.clone(),
        ),
        canon(
            "connect_v5_properties_order_free",
            V5,
            "§2.2.2.2",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN, 120),
                    props(&[
                        p_user("a", "1"),
                        p_bin(AUTHENTICATION_DATA, b"client-first"),
                        p_byte(REQUEST_PROBLEM_INFORMATION, 0),
                        p_u16(TOPIC_ALIAS_MAXIMUM, 10),
                        p_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1"),
                        p_u32(MAXIMUM_PACKET_SIZE, 65_536),
                        p_user("a", "2"),
                        p_byte(REQUEST_RESPONSE_INFORMATION, 1),
                        p_u16(RECEIVE_MAXIMUM, 20),
                        p_u32(SESSION_EXPIRY_INTERVAL, 3600),
                    ]),
                    s("c1"),
                ),
            ),
            all_properties_v5,
            canonical_all,
        ),
        ok(
            "connect_v5_will_all_properties",
            V5,
            "§3.1.3.2",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | WILL | WILL_QOS_2 | WILL_RETAIN, 60),
                    NO_PROPS,
                    s("c1"),
                    props(&[
                        p_u32(WILL_DELAY_INTERVAL, 30),
                        p_byte(PAYLOAD_FORMAT_INDICATOR, 1),
                        p_u32(MESSAGE_EXPIRY_INTERVAL, 120),
                        p_str(CONTENT_TYPE, "text/plain"),
                        p_str(RESPONSE_TOPIC, "replies/c1"),
                        p_bin(CORRELATION_DATA, b"\x01\x02"),
                        p_user("k", "v"),
                    ]),
                    s("status/c1"),
                    raw(b"offline"),
                ),
            ),
            will_v5,
        ),
        ok(
            "connect_v5_password_without_user_name",
            V5,
            "MQTT-3.1.2-19",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | PASSWORD, 60),
                    NO_PROPS,
                    s("c1"),
                    raw(b"secret")
                ),
            ),
            password_only_v5,
        ),
        ok(
            "connect_v5_empty_client_id_will_empty_payload",
            V5,
            "MQTT-3.1.3-6",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | WILL, 60),
                    NO_PROPS,
                    s(""),
                    NO_PROPS,
                    s("w"),
                    raw(b"")
                ),
            ),
            will_empty_payload_v5,
        ),
    ]
}

fn connect_errors() -> Vec<Fixture> {
    use PacketType::Connect as C;
    let will_props_v5 = |will_props: Vec<u8>, topic: &str| {
        frame(
            0x10,
            cat!(
                head(V5, CLEAN | WILL, 60),
                NO_PROPS,
                s("c1"),
                will_props,
                s(topic),
                raw(b"x")
            ),
        )
    };
    let props_v5 = |list: &[Vec<u8>]| frame(0x10, cat!(head(V5, CLEAN, 60), props(list), s("c1")));

    vec![
        err(
            "connect_fixed_header_flags_v4",
            V4,
            "MQTT-2.1.3-1",
            frame(0x12, cat!(head(V4, CLEAN, 60), s("c1"))),
            flags(C, 0b0010),
        ),
        err(
            "connect_reserved_flag_v4",
            V4,
            "MQTT-3.1.2-3",
            frame(0x10, cat!(head(V4, CLEAN | 0x01, 60), s("c1"))),
            Malformed::ConnectReservedFlag,
        ),
        err(
            "connect_reserved_flag_v5",
            V5,
            "MQTT-3.1.2-3",
            frame(0x10, cat!(head(V5, 0x01, 60), NO_PROPS, s("c1"))),
            Malformed::ConnectReservedFlag,
        ),
        err(
            "connect_will_qos_without_will_v4",
            V4,
            "MQTT-3.1.2-11",
            frame(0x10, cat!(head(V4, CLEAN | WILL_QOS_1, 60), s("c1"))),
            Malformed::WillFlagsWithoutWill,
        ),
        err(
            "connect_will_retain_without_will_v5",
            V5,
            "MQTT-3.1.2-13",
            frame(
                0x10,
                cat!(head(V5, CLEAN | WILL_RETAIN, 60), NO_PROPS, s("c1")),
            ),
            Malformed::WillFlagsWithoutWill,
        ),
        err(
            "connect_will_qos_3_v5",
            V5,
            "MQTT-3.1.2-12",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | WILL | WILL_QOS_1 | WILL_QOS_2, 60),
                    NO_PROPS,
                    s("c1"),
                    NO_PROPS,
                    s("w"),
                    raw(b"x"),
                ),
            ),
            Malformed::InvalidQoS { field: "Will QoS" },
        ),
        err(
            "connect_will_qos_3_v3",
            V3,
            "MQTT-3.1.2-12",
            frame(
                0x10,
                cat!(
                    head(V3, CLEAN | WILL | WILL_QOS_1 | WILL_QOS_2, 60),
                    s("c1"),
                    s("w"),
                    raw(b"x")
                ),
            ),
            Malformed::InvalidQoS { field: "Will QoS" },
        ),
        err(
            "connect_password_without_user_name_v4",
            V4,
            "MQTT-3.1.2-22 (3.1.1)",
            frame(
                0x10,
                cat!(head(V4, CLEAN | PASSWORD, 60), s("c1"), raw(b"pw")),
            ),
            Malformed::PasswordWithoutUserName,
        ),
        err(
            "connect_password_without_user_name_v3",
            V3,
            "MQTT-3.1.2-22 (3.1.1)",
            frame(
                0x10,
                cat!(head(V3, CLEAN | PASSWORD, 60), s("c1"), raw(b"pw")),
            ),
            Malformed::PasswordWithoutUserName,
        ),
        err(
            "connect_unsupported_mqtt_level_3",
            V4,
            "MQTT-3.1.2-1",
            frame(0x10, cat!(connect_head("MQTT", 3, CLEAN, 60), s("c1"))),
            unsupported("MQTT", 3),
        ),
        err(
            "connect_unsupported_mqisdp_level_4",
            V3,
            "MQTT-3.1.2-1",
            frame(0x10, cat!(connect_head("MQIsdp", 4, CLEAN, 60), s("c1"))),
            unsupported("MQIsdp", 4),
        ),
        err(
            "connect_unsupported_level_6",
            V5,
            "MQTT-3.1.2-2",
            frame(
                0x10,
                cat!(connect_head("MQTT", 6, CLEAN, 60), NO_PROPS, s("c1")),
            ),
            unsupported("MQTT", 6),
        ),
        err(
            "connect_unsupported_name_lower_case",
            V4,
            "MQTT-3.1.2-1",
            frame(0x10, cat!(connect_head("mqtt", 4, CLEAN, 60), s("c1"))),
            unsupported("mqtt", 4),
        ),
        err(
            "connect_truncated_protocol_name_v4",
            V4,
            "MQTT-3.1.4-1",
            frame(0x10, [0x00, 0x04, b'M', b'Q']),
            end(C, "protocol name"),
        ),
        err(
            "connect_truncated_keep_alive_v4",
            V4,
            "MQTT-3.1.4-1",
            frame(0x10, cat!(s("MQTT"), [4, CLEAN, 0x00])),
            end(C, "keep alive"),
        ),
        err(
            "connect_missing_client_id_v4",
            V4,
            "MQTT-3.1.3-3",
            frame(0x10, head(V4, CLEAN, 60)),
            end(C, "client identifier"),
        ),
        err(
            "connect_missing_property_length_v5",
            V5,
            "MQTT-2.2.2-1",
            frame(0x10, head(V5, CLEAN, 60)),
            end(C, "property length"),
        ),
        err(
            "connect_property_length_beyond_packet_v5",
            V5,
            "MQTT-3.1.4-1",
            frame(
                0x10,
                cat!(head(V5, CLEAN, 60), [0x0A], p_u16(RECEIVE_MAXIMUM, 1)),
            ),
            end(C, "properties"),
        ),
        err(
            "connect_property_value_cut_short_v5",
            V5,
            "§2.2.2.2",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN, 60),
                    [0x03, SESSION_EXPIRY_INTERVAL, 0x00, 0x00],
                    s("c1")
                ),
            ),
            end(C, "Session Expiry Interval"),
        ),
        err(
            "connect_trailing_byte_v4",
            V4,
            "MQTT-3.1.3-1",
            frame(0x10, cat!(head(V4, CLEAN, 60), s("c1"), [0x00])),
            trailing(C, 1),
        ),
        err(
            "connect_user_name_without_flag_v4",
            V4,
            "MQTT-3.1.2-16",
            frame(0x10, cat!(head(V4, CLEAN, 60), s("c1"), s("u"))),
            trailing(C, 3),
        ),
        err(
            "connect_user_name_flag_without_field_v4",
            V4,
            "MQTT-3.1.2-17",
            frame(0x10, cat!(head(V4, CLEAN | USER_NAME, 60), s("c1"))),
            end(C, "user name"),
        ),
        err(
            "connect_password_flag_without_field_v5",
            V5,
            "MQTT-3.1.2-19",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | USER_NAME | PASSWORD, 60),
                    NO_PROPS,
                    s("c1"),
                    s("u")
                ),
            ),
            end(C, "password"),
        ),
        err(
            "connect_will_flag_without_will_payload_v4",
            V4,
            "MQTT-3.1.2-9",
            frame(0x10, cat!(head(V4, CLEAN | WILL, 60), s("c1"), s("w"))),
            end(C, "will payload"),
        ),
        err(
            "connect_client_id_invalid_utf8_v4",
            V4,
            "MQTT-3.1.3-4",
            frame(0x10, cat!(head(V4, CLEAN, 60), raw(b"\xC3\x28"))),
            Malformed::InvalidUtf8 {
                field: "client identifier",
            },
        ),
        err(
            "connect_client_id_surrogate_v5",
            V5,
            "MQTT-1.5.4-1",
            frame(
                0x10,
                cat!(head(V5, CLEAN, 60), NO_PROPS, raw(b"c\xED\xA0\x80")),
            ),
            Malformed::InvalidUtf8 {
                field: "client identifier",
            },
        ),
        err(
            "connect_client_id_null_character_v3",
            V3,
            "MQTT-1.5.4-2",
            frame(0x10, cat!(head(V3, CLEAN, 60), raw(b"a\x00b"))),
            Malformed::NullCharacter {
                field: "client identifier",
            },
        ),
        err(
            "connect_user_name_invalid_utf8_v5",
            V5,
            "MQTT-3.1.3-12",
            frame(
                0x10,
                cat!(
                    head(V5, CLEAN | USER_NAME, 60),
                    NO_PROPS,
                    s("c1"),
                    raw(b"\xFF")
                ),
            ),
            Malformed::InvalidUtf8 { field: "user name" },
        ),
        err(
            "connect_will_topic_invalid_utf8_v4",
            V4,
            "MQTT-3.1.3-11",
            frame(
                0x10,
                cat!(
                    head(V4, CLEAN | WILL, 60),
                    s("c1"),
                    raw(b"\xC0\xAF"),
                    raw(b"x")
                ),
            ),
            Malformed::InvalidUtf8 {
                field: "will topic",
            },
        ),
        err(
            "connect_will_topic_empty_v4",
            V4,
            "MQTT-3.1.3-11",
            frame(
                0x10,
                cat!(head(V4, CLEAN | WILL, 60), s("c1"), s(""), raw(b"x")),
            ),
            ProtocolViolation::InvalidWillTopic {
                topic: String::new(),
            },
        ),
        err(
            "connect_will_topic_wildcard_v5",
            V5,
            "MQTT-3.1.3-11",
            will_props_v5(NO_PROPS.to_vec(), "a/#"),
            ProtocolViolation::InvalidWillTopic {
                topic: "a/#".to_owned(),
            },
        ),
        err(
            "connect_will_response_topic_wildcard_v5",
            V5,
            "MQTT-3.3.2-14",
            will_props_v5(props(&[p_str(RESPONSE_TOPIC, "reply/+")]), "w"),
            ProtocolViolation::WildcardInResponseTopic {
                topic: "reply/+".to_owned(),
            },
        ),
        err(
            "connect_will_session_expiry_not_allowed_v5",
            V5,
            "§2.2.2.2",
            will_props_v5(props(&[p_u32(SESSION_EXPIRY_INTERVAL, 1)]), "w"),
            not_allowed(SESSION_EXPIRY_INTERVAL, "Will properties"),
        ),
        err(
            "connect_will_duplicate_content_type_v5",
            V5,
            "§3.1.3.2",
            will_props_v5(
                props(&[p_str(CONTENT_TYPE, "a"), p_str(CONTENT_TYPE, "b")]),
                "w",
            ),
            duplicate(PropertyId::ContentType, "Will properties"),
        ),
        err(
            "connect_will_payload_format_indicator_2_v5",
            V5,
            "§3.1.3.2.3",
            will_props_v5(props(&[p_byte(PAYLOAD_FORMAT_INDICATOR, 2)]), "w"),
            bad_value(PropertyId::PayloadFormatIndicator, 2),
        ),
        err(
            "connect_authentication_data_without_method_v5",
            V5,
            "§3.1.2.11.10",
            props_v5(&[p_bin(AUTHENTICATION_DATA, b"data")]),
            ProtocolViolation::AuthenticationDataWithoutMethod,
        ),
        err(
            "connect_receive_maximum_0_v5",
            V5,
            "§3.1.2.11.3",
            props_v5(&[p_u16(RECEIVE_MAXIMUM, 0)]),
            bad_value(PropertyId::ReceiveMaximum, 0),
        ),
        err(
            "connect_maximum_packet_size_0_v5",
            V5,
            "§3.1.2.11.4",
            props_v5(&[p_u32(MAXIMUM_PACKET_SIZE, 0)]),
            bad_value(PropertyId::MaximumPacketSize, 0),
        ),
        err(
            "connect_request_problem_information_2_v5",
            V5,
            "§3.1.2.11.7",
            props_v5(&[p_byte(REQUEST_PROBLEM_INFORMATION, 2)]),
            bad_value(PropertyId::RequestProblemInformation, 2),
        ),
        err(
            "connect_request_response_information_2_v5",
            V5,
            "§3.1.2.11.6",
            props_v5(&[p_byte(REQUEST_RESPONSE_INFORMATION, 2)]),
            bad_value(PropertyId::RequestResponseInformation, 2),
        ),
        err(
            "connect_duplicate_session_expiry_interval_v5",
            V5,
            "§3.1.2.11.2",
            props_v5(&[
                p_u32(SESSION_EXPIRY_INTERVAL, 1),
                p_u32(SESSION_EXPIRY_INTERVAL, 1),
            ]),
            duplicate(PropertyId::SessionExpiryInterval, "CONNECT"),
        ),
        err(
            "connect_duplicate_authentication_method_v5",
            V5,
            "§3.1.2.11.9",
            props_v5(&[
                p_str(AUTHENTICATION_METHOD, "a"),
                p_str(AUTHENTICATION_METHOD, "b"),
            ]),
            duplicate(PropertyId::AuthenticationMethod, "CONNECT"),
        ),
        err(
            "connect_duplicate_receive_maximum_v5",
            V5,
            "§3.1.2.11.3",
            props_v5(&[p_u16(RECEIVE_MAXIMUM, 5), p_u16(RECEIVE_MAXIMUM, 6)]),
            duplicate(PropertyId::ReceiveMaximum, "CONNECT"),
        ),
        err(
            "connect_topic_alias_not_allowed_v5",
            V5,
            "§2.2.2.2",
            props_v5(&[p_u16(TOPIC_ALIAS, 1)]),
            not_allowed(TOPIC_ALIAS, "CONNECT"),
        ),
        err(
            "connect_will_delay_not_allowed_in_connect_properties_v5",
            V5,
            "§2.2.2.2",
            props_v5(&[p_u32(WILL_DELAY_INTERVAL, 1)]),
            not_allowed(WILL_DELAY_INTERVAL, "CONNECT"),
        ),
        err(
            "connect_unknown_property_id_v5",
            V5,
            "§2.2.2.2",
            props_v5(&[p_byte(0x05, 0)]),
            not_allowed(0x05, "CONNECT"),
        ),
        err(
            "connect_user_property_name_invalid_utf8_v5",
            V5,
            "MQTT-1.5.7-1",
            props_v5(&[cat!([USER_PROPERTY], raw(b"\xE2\x82"), s("v"))]),
            Malformed::InvalidUtf8 {
                field: "user property name",
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.2 CONNACK.
// ---------------------------------------------------------------------------------------------

fn connack() -> Vec<Fixture> {
    use PacketType::ConnAck as C;
    let all = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SUCCESS,
        properties: ConnAckProperties {
            session_expiry_interval: Some(600),
            receive_maximum: std::num::NonZeroU16::new(100),
            maximum_qos: Some(QoS::AtLeastOnce),
            retain_available: Some(false),
            maximum_packet_size: NonZeroU32::new(1_048_576),
            assigned_client_identifier: Some(st("auto-7f3a")),
            topic_alias_maximum: Some(16),
            reason_string: Some(st("welcome")),
            wildcard_subscription_available: Some(true),
            subscription_identifiers_available: Some(false),
            shared_subscription_available: Some(true),
            server_keep_alive: Some(30),
            response_information: Some(st("responses/")),
            server_reference: Some(st("other:1883")),
            authentication_method: Some(st("SCRAM-SHA-1")),
            authentication_data: Some(Bytes::from_static(b"server-final")),
            user_properties: vec![user("region", "eu")].into(),
        },
    };
    let moved = ConnAck {
        session_present: false,
        reason_code: ReasonCode::SERVER_MOVED,
        properties: ConnAckProperties {
            reason_string: Some(st("moved")),
            server_reference: Some(st("b.example:1883")),
            ..ConnAckProperties::default()
        },
    };
    let v5 = |list: &[Vec<u8>]| frame(0x20, cat!([0x00, 0x00], props(list)));

    vec![
        ok(
            "connack_v3_accepted",
            V3,
            "§3.2 (3.1)",
            vec![0x20, 0x02, 0x00, 0x00],
            ConnAck::new(ReasonCode::SUCCESS),
        ),
        ok(
            "connack_v3_code_2_identifier_rejected",
            V3,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x02],
            ConnAck::new(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        ),
        ok(
            "connack_v4_accepted_session_present",
            V4,
            "MQTT-3.2.2-3 (3.1.1)",
            vec![0x20, 0x02, 0x01, 0x00],
            ConnAck {
                session_present: true,
                ..ConnAck::new(ReasonCode::SUCCESS)
            },
        ),
        ok(
            "connack_v4_code_1_is_0x84",
            V4,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x01],
            ConnAck::new(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
        ),
        ok(
            "connack_v4_code_2_is_0x85",
            V4,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x02],
            ConnAck::new(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
        ),
        ok(
            "connack_v4_code_3_is_0x88",
            V4,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x03],
            ConnAck::new(ReasonCode::SERVER_UNAVAILABLE),
        ),
        ok(
            "connack_v4_code_4_is_0x86",
            V4,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x04],
            ConnAck::new(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        ),
        ok(
            "connack_v4_code_5_is_0x87",
            V4,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x05],
            ConnAck::new(ReasonCode::NOT_AUTHORIZED),
        ),
        ok(
            "connack_v3_code_4_is_0x86",
            V3,
            "Differences: CONNACK return codes",
            vec![0x20, 0x02, 0x00, 0x04],
            ConnAck::new(ReasonCode::BAD_USER_NAME_OR_PASSWORD),
        ),
        ok(
            "connack_v5_minimal",
            V5,
            "MQTT-2.2.2-1",
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            ConnAck::new(ReasonCode::SUCCESS),
        ),
        ok(
            "connack_v5_session_present",
            V5,
            "MQTT-3.2.2-3",
            vec![0x20, 0x03, 0x01, 0x00, 0x00],
            ConnAck {
                session_present: true,
                ..ConnAck::new(ReasonCode::SUCCESS)
            },
        ),
        ok(
            "connack_v5_all_properties",
            V5,
            "§3.2.2.3",
            v5(&[
                p_u32(SESSION_EXPIRY_INTERVAL, 600),
                p_u16(RECEIVE_MAXIMUM, 100),
                p_byte(MAXIMUM_QOS, 1),
                p_byte(RETAIN_AVAILABLE, 0),
                p_u32(MAXIMUM_PACKET_SIZE, 1_048_576),
                p_str(ASSIGNED_CLIENT_IDENTIFIER, "auto-7f3a"),
                p_u16(TOPIC_ALIAS_MAXIMUM, 16),
                p_str(REASON_STRING, "welcome"),
                p_byte(WILDCARD_SUBSCRIPTION_AVAILABLE, 1),
                p_byte(SUBSCRIPTION_IDENTIFIERS_AVAILABLE, 0),
                p_byte(SHARED_SUBSCRIPTION_AVAILABLE, 1),
                p_u16(SERVER_KEEP_ALIVE, 30),
                p_str(RESPONSE_INFORMATION, "responses/"),
                p_str(SERVER_REFERENCE, "other:1883"),
                p_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1"),
                p_bin(AUTHENTICATION_DATA, b"server-final"),
                p_user("region", "eu"),
            ]),
            all,
        ),
        ok(
            "connack_v5_server_moved",
            V5,
            "MQTT-3.2.2-8",
            frame(
                0x20,
                cat!(
                    [0x00, 0x9D],
                    props(&[
                        p_str(REASON_STRING, "moved"),
                        p_str(SERVER_REFERENCE, "b.example:1883")
                    ]),
                ),
            ),
            moved,
        ),
        err(
            "connack_fixed_header_flags_v5",
            V5,
            "MQTT-2.1.3-1",
            vec![0x21, 0x03, 0x00, 0x00, 0x00],
            flags(C, 1),
        ),
        err(
            "connack_v4_return_code_6",
            V4,
            "MQTT-3.2.2-8",
            vec![0x20, 0x02, 0x00, 0x06],
            bad_code(C, 6),
        ),
        err(
            "connack_v4_v5_code_0x84",
            V4,
            "MQTT-3.2.2-8",
            vec![0x20, 0x02, 0x00, 0x84],
            bad_code(C, 0x84),
        ),
        err(
            "connack_v5_code_0x04",
            V5,
            "MQTT-3.2.2-8",
            vec![0x20, 0x03, 0x00, 0x04, 0x00],
            bad_code(C, 0x04),
        ),
        err(
            "connack_v5_code_0x8b",
            V5,
            "MQTT-3.2.2-8",
            vec![0x20, 0x03, 0x00, 0x8B, 0x00],
            bad_code(C, 0x8B),
        ),
        err(
            "connack_v4_reserved_flags",
            V4,
            "MQTT-3.2.2-1",
            vec![0x20, 0x02, 0x02, 0x00],
            Malformed::ConnAckReservedFlags,
        ),
        err(
            "connack_v3_session_present_bit_reserved",
            V3,
            "Differences: CONNACK flags (3.1)",
            vec![0x20, 0x02, 0x01, 0x00],
            Malformed::ConnAckReservedFlags,
        ),
        err(
            "connack_v5_reserved_flags",
            V5,
            "MQTT-3.2.2-1",
            vec![0x20, 0x03, 0x80, 0x00, 0x00],
            Malformed::ConnAckReservedFlags,
        ),
        err(
            "connack_v4_trailing_byte",
            V4,
            "§3.2 (3.1.1)",
            vec![0x20, 0x03, 0x00, 0x00, 0x00],
            trailing(C, 1),
        ),
        err(
            "connack_v4_truncated",
            V4,
            "§3.2 (3.1.1)",
            vec![0x20, 0x01, 0x00],
            end(C, "reason code"),
        ),
        err(
            "connack_v5_missing_property_length",
            V5,
            "MQTT-2.2.2-1",
            vec![0x20, 0x02, 0x00, 0x00],
            end(C, "property length"),
        ),
        err(
            "connack_v5_maximum_qos_2",
            V5,
            "§3.2.2.3.4",
            v5(&[p_byte(MAXIMUM_QOS, 2)]),
            bad_value(PropertyId::MaximumQoS, 2),
        ),
        err(
            "connack_v5_retain_available_2",
            V5,
            "§3.2.2.3.5",
            v5(&[p_byte(RETAIN_AVAILABLE, 2)]),
            bad_value(PropertyId::RetainAvailable, 2),
        ),
        err(
            "connack_v5_wildcard_subscription_available_2",
            V5,
            "§3.2.2.3.11",
            v5(&[p_byte(WILDCARD_SUBSCRIPTION_AVAILABLE, 2)]),
            bad_value(PropertyId::WildcardSubscriptionAvailable, 2),
        ),
        err(
            "connack_v5_receive_maximum_0",
            V5,
            "§3.2.2.3.3",
            v5(&[p_u16(RECEIVE_MAXIMUM, 0)]),
            bad_value(PropertyId::ReceiveMaximum, 0),
        ),
        err(
            "connack_v5_maximum_packet_size_0",
            V5,
            "§3.2.2.3.6",
            v5(&[p_u32(MAXIMUM_PACKET_SIZE, 0)]),
            bad_value(PropertyId::MaximumPacketSize, 0),
        ),
        err(
            "connack_v5_duplicate_reason_string",
            V5,
            "§3.2.2.3.9",
            v5(&[p_str(REASON_STRING, "a"), p_str(REASON_STRING, "b")]),
            duplicate(PropertyId::ReasonString, "CONNACK"),
        ),
        err(
            "connack_v5_duplicate_assigned_client_identifier",
            V5,
            "§3.2.2.3.7",
            v5(&[
                p_str(ASSIGNED_CLIENT_IDENTIFIER, "a"),
                p_str(ASSIGNED_CLIENT_IDENTIFIER, "a"),
            ]),
            duplicate(PropertyId::AssignedClientIdentifier, "CONNACK"),
        ),
        err(
            "connack_v5_topic_alias_not_allowed",
            V5,
            "§2.2.2.2",
            v5(&[p_u16(TOPIC_ALIAS, 1)]),
            not_allowed(TOPIC_ALIAS, "CONNACK"),
        ),
        err(
            "connack_v5_request_problem_information_not_allowed",
            V5,
            "§2.2.2.2",
            v5(&[p_byte(REQUEST_PROBLEM_INFORMATION, 1)]),
            not_allowed(REQUEST_PROBLEM_INFORMATION, "CONNACK"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.3 PUBLISH.
// ---------------------------------------------------------------------------------------------

fn publish_fixtures() -> Vec<Fixture> {
    let all = Publish {
        qos: QoS::AtLeastOnce,
        packet_id: Some(id(1)),
        topic: st("a/b"),
        payload: Bytes::from_static(b"{}"),
        properties: PublishProperties {
            payload_format_indicator: Some(PayloadFormatIndicator::Utf8),
            message_expiry_interval: Some(60),
            topic_alias: std::num::NonZeroU16::new(5),
            response_topic: Some(st("r/1")),
            correlation_data: Some(Bytes::from_static(b"id")),
            content_type: Some(st("application/json")),
            subscription_identifiers: vec![sub_id(1), sub_id(16_384)],
            user_properties: vec![user("b", "1"), user("a", "2"), user("b", "3")].into(),
        },
        ..Publish::default()
    };
    let all_bytes = frame(
        0x32,
        cat!(
            s("a/b"),
            [0x00, 0x01],
            props(&[
                p_byte(PAYLOAD_FORMAT_INDICATOR, 1),
                p_u32(MESSAGE_EXPIRY_INTERVAL, 60),
                p_u16(TOPIC_ALIAS, 5),
                p_str(RESPONSE_TOPIC, "r/1"),
                p_bin(CORRELATION_DATA, b"id"),
                p_str(CONTENT_TYPE, "application/json"),
                p_vbi(SUBSCRIPTION_IDENTIFIER, 1),
                p_vbi(SUBSCRIPTION_IDENTIFIER, 16_384),
                p_user("b", "1"),
                p_user("a", "2"),
                p_user("b", "3"),
            ]),
            b"{}",
        ),
    );
    let aliased = Publish {
        topic: st(""),
        payload: Bytes::from_static(b"x"),
        properties: PublishProperties {
            topic_alias: std::num::NonZeroU16::new(1),
            ..PublishProperties::default()
        },
        ..Publish::default()
    };
    let with_properties = |properties: PublishProperties| Publish {
        topic: st("t"),
        properties,
        ..Publish::default()
    };

    vec![
        ok(
            "publish_v3_qos0",
            V3,
            "§3.3 (3.1)",
            frame(0x30, cat!(s("a/b"), b"hello")),
            Publish::new(st("a/b"), &b"hello"[..]),
        ),
        ok(
            "publish_v3_qos1",
            V3,
            "MQTT-2.2.1-2",
            frame(0x32, cat!(s("a/b"), [0x12, 0x34], b"hello")),
            publish(QoS::AtLeastOnce, Some(0x1234), st("a/b"), b"hello"),
        ),
        ok(
            "publish_v4_qos1_retain",
            V4,
            "MQTT-3.3.1-5",
            frame(0x33, cat!(s("a/b"), [0x00, 0x0A], b"x")),
            Publish {
                retain: true,
                ..publish(QoS::AtLeastOnce, Some(10), st("a/b"), b"x")
            },
        ),
        ok(
            "publish_v4_qos2_dup",
            V4,
            "MQTT-3.3.1-1",
            frame(0x3C, cat!(s("a/b"), [0xFF, 0xFF], b"x")),
            Publish {
                dup: true,
                ..publish(QoS::ExactlyOnce, Some(0xFFFF), st("a/b"), b"x")
            },
        ),
        ok(
            "publish_v4_empty_payload_retain",
            V4,
            "MQTT-3.3.1-6",
            frame(0x31, s("a/b")),
            Publish {
                retain: true,
                ..Publish::new(st("a/b"), Bytes::new())
            },
        ),
        ok(
            "publish_v4_payload_is_not_properties",
            V4,
            "Differences: no properties",
            frame(0x30, cat!(s("a"), [0x00, 0x01, 0x01])),
            Publish::new(st("a"), &[0x00, 0x01, 0x01][..]),
        ),
        ok(
            "publish_v4_multibyte_topic",
            V4,
            "MQTT-3.3.2-1",
            frame(0x30, cat!(s("caf\u{e9}/\u{1F600}"), b"1")),
            Publish::new(st("caf\u{e9}/\u{1F600}"), &b"1"[..]),
        ),
        ok(
            "publish_v5_qos0",
            V5,
            "MQTT-2.2.2-1",
            frame(0x30, cat!(s("a/b"), NO_PROPS, b"hi")),
            Publish::new(st("a/b"), &b"hi"[..]),
        ),
        ok(
            "publish_v5_qos2_empty_payload",
            V5,
            "§3.3.3",
            frame(0x34, cat!(s("a/b"), [0x00, 0x02], NO_PROPS)),
            publish(QoS::ExactlyOnce, Some(2), st("a/b"), b""),
        ),
        ok(
            "publish_v5_qos1_all_properties",
            V5,
            "§3.3.2.3",
            all_bytes,
            all,
        ),
        canon(
            "publish_v5_properties_order_free",
            V5,
            "§2.2.2.2",
            frame(
                0x30,
                cat!(
                    s("t"),
                    props(&[
                        p_user("z", "1"),
                        p_str(CONTENT_TYPE, "c"),
                        p_vbi(SUBSCRIPTION_IDENTIFIER, 9),
                        p_u32(MESSAGE_EXPIRY_INTERVAL, 7),
                    ]),
                ),
            ),
            with_properties(PublishProperties {
                message_expiry_interval: Some(7),
                content_type: Some(st("c")),
                subscription_identifiers: vec![sub_id(9)],
                user_properties: vec![user("z", "1")].into(),
                ..PublishProperties::default()
            }),
            frame(
                0x30,
                cat!(
                    s("t"),
                    props(&[
                        p_u32(MESSAGE_EXPIRY_INTERVAL, 7),
                        p_str(CONTENT_TYPE, "c"),
                        p_vbi(SUBSCRIPTION_IDENTIFIER, 9),
                        p_user("z", "1"),
                    ]),
                ),
            ),
        ),
        ok(
            "publish_v5_topic_alias_with_empty_topic",
            V5,
            "§3.3.4",
            frame(0x30, cat!(s(""), props(&[p_u16(TOPIC_ALIAS, 1)]), b"x")),
            aliased,
        ),
        ok(
            "publish_v5_payload_format_indicator_0",
            V5,
            "§3.3.2.3.2",
            frame(
                0x30,
                cat!(s("t"), props(&[p_byte(PAYLOAD_FORMAT_INDICATOR, 0)])),
            ),
            with_properties(PublishProperties {
                payload_format_indicator: Some(PayloadFormatIndicator::Unspecified),
                ..PublishProperties::default()
            }),
        ),
        ok(
            "publish_v5_subscription_identifier_maximum",
            V5,
            "§3.3.2.3.8",
            frame(
                0x30,
                cat!(
                    s("t"),
                    props(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 268_435_455)])
                ),
            ),
            with_properties(PublishProperties {
                subscription_identifiers: vec![sub_id(268_435_455)],
                ..PublishProperties::default()
            }),
        ),
        ok(
            "publish_v5_byte_order_mark_kept",
            V5,
            "MQTT-1.5.4-3",
            frame(0x30, cat!(raw(b"\xEF\xBB\xBFa"), NO_PROPS)),
            Publish::new(st("\u{FEFF}a"), Bytes::new()),
        ),
        canon(
            "publish_v5_non_minimal_property_length",
            V5,
            "§1.5.5",
            frame(0x30, cat!(s("a"), [0x80, 0x00], b"p")),
            Publish::new(st("a"), &b"p"[..]),
            frame(0x30, cat!(s("a"), NO_PROPS, b"p")),
        ),
    ]
}

fn publish_errors() -> Vec<Fixture> {
    use PacketType::Publish as P;
    let v5 = |list: &[Vec<u8>]| frame(0x30, cat!(s("t"), props(list), b"x"));

    vec![
        err(
            "publish_qos_3_v3",
            V3,
            "MQTT-3.3.1-4",
            frame(0x36, cat!(s("a"), [0x00, 0x01])),
            Malformed::InvalidQoS {
                field: "PUBLISH QoS",
            },
        ),
        err(
            "publish_qos_3_v4",
            V4,
            "MQTT-3.3.1-4",
            frame(0x36, cat!(s("a"), [0x00, 0x01])),
            Malformed::InvalidQoS {
                field: "PUBLISH QoS",
            },
        ),
        err(
            "publish_qos_3_v5",
            V5,
            "MQTT-3.3.1-4",
            frame(0x37, cat!(s("a"), [0x00, 0x01], NO_PROPS)),
            Malformed::InvalidQoS {
                field: "PUBLISH QoS",
            },
        ),
        err(
            "publish_dup_on_qos0_v4",
            V4,
            "MQTT-3.3.1-2",
            frame(0x38, cat!(s("a"), b"x")),
            ProtocolViolation::DupOnQoS0,
        ),
        err(
            "publish_dup_on_qos0_v5",
            V5,
            "MQTT-3.3.1-2",
            frame(0x38, cat!(s("a"), NO_PROPS)),
            ProtocolViolation::DupOnQoS0,
        ),
        err(
            "publish_packet_id_0_v4",
            V4,
            "MQTT-2.2.1-3",
            frame(0x32, cat!(s("a"), [0x00, 0x00], b"x")),
            Malformed::PacketIdentifierZero { packet: P },
        ),
        err(
            "publish_packet_id_0_v5",
            V5,
            "MQTT-2.2.1-3",
            frame(0x34, cat!(s("a"), [0x00, 0x00], NO_PROPS)),
            Malformed::PacketIdentifierZero { packet: P },
        ),
        err(
            "publish_topic_invalid_utf8_v4",
            V4,
            "MQTT-1.5.4-1",
            frame(0x30, cat!(raw(b"a/\xFE"), b"x")),
            Malformed::InvalidUtf8 {
                field: "topic name",
            },
        ),
        err(
            "publish_topic_surrogate_v5",
            V5,
            "MQTT-1.5.4-1",
            frame(0x30, cat!(raw(b"\xED\xBF\xBF"), NO_PROPS)),
            Malformed::InvalidUtf8 {
                field: "topic name",
            },
        ),
        err(
            "publish_topic_overlong_null_v5",
            V5,
            "MQTT-1.5.4-1",
            frame(0x30, cat!(raw(b"a\xC0\x80"), NO_PROPS)),
            Malformed::InvalidUtf8 {
                field: "topic name",
            },
        ),
        err(
            "publish_topic_null_character_v3",
            V3,
            "MQTT-1.5.4-2",
            frame(0x30, cat!(raw(b"a\x00"), b"x")),
            Malformed::NullCharacter {
                field: "topic name",
            },
        ),
        err(
            "publish_topic_null_character_v5",
            V5,
            "MQTT-1.5.4-2",
            frame(0x30, cat!(raw(b"\x00"), NO_PROPS)),
            Malformed::NullCharacter {
                field: "topic name",
            },
        ),
        err(
            "publish_topic_plus_wildcard_v5",
            V5,
            "MQTT-3.3.2-2",
            frame(0x30, cat!(s("a/+"), NO_PROPS)),
            ProtocolViolation::WildcardInTopicName {
                topic: "a/+".to_owned(),
            },
        ),
        err(
            "publish_topic_hash_wildcard_v4",
            V4,
            "MQTT-3.3.2-2",
            frame(0x30, cat!(s("#"), b"x")),
            ProtocolViolation::WildcardInTopicName {
                topic: "#".to_owned(),
            },
        ),
        err(
            "publish_empty_topic_v4",
            V4,
            "MQTT-4.7.3-1",
            frame(0x30, cat!(s(""), b"x")),
            ProtocolViolation::EmptyTopicName,
        ),
        err(
            "publish_empty_topic_without_alias_v5",
            V5,
            "§3.3.2.1",
            frame(0x30, cat!(s(""), NO_PROPS, b"x")),
            ProtocolViolation::EmptyTopicName,
        ),
        err(
            "publish_truncated_topic_v4",
            V4,
            "MQTT-3.3.2-1",
            frame(0x30, [0x00, 0x05, b'a']),
            end(P, "topic name"),
        ),
        err(
            "publish_missing_packet_id_v4",
            V4,
            "MQTT-2.2.1-2",
            frame(0x32, cat!(s("a"), [0x01])),
            end(P, "packet identifier"),
        ),
        err(
            "publish_missing_property_length_v5",
            V5,
            "MQTT-2.2.2-1",
            frame(0x30, s("a")),
            end(P, "property length"),
        ),
        err(
            "publish_property_length_beyond_packet_v5",
            V5,
            "§2.2.2.1",
            frame(0x30, cat!(s("t"), [0x09], p_u16(TOPIC_ALIAS, 1))),
            end(P, "properties"),
        ),
        err(
            "publish_property_value_cut_short_v5",
            V5,
            "§2.2.2.2",
            frame(
                0x30,
                cat!(s("t"), [0x03, MESSAGE_EXPIRY_INTERVAL, 0x00, 0x00], b"x"),
            ),
            end(P, "Message Expiry Interval"),
        ),
        err(
            "publish_topic_alias_0_v5",
            V5,
            "MQTT-3.3.2-8",
            v5(&[p_u16(TOPIC_ALIAS, 0)]),
            ProtocolViolation::TopicAliasZero,
        ),
        err(
            "publish_response_topic_wildcard_v5",
            V5,
            "MQTT-3.3.2-14",
            v5(&[p_str(RESPONSE_TOPIC, "replies/#")]),
            ProtocolViolation::WildcardInResponseTopic {
                topic: "replies/#".to_owned(),
            },
        ),
        err(
            "publish_response_topic_empty_v5",
            V5,
            "MQTT-4.7.3-1",
            v5(&[p_str(RESPONSE_TOPIC, "")]),
            ProtocolViolation::EmptyResponseTopic,
        ),
        err(
            "publish_response_topic_invalid_utf8_v5",
            V5,
            "MQTT-3.3.2-13",
            v5(&[p_bin(RESPONSE_TOPIC, b"\x80")]),
            Malformed::InvalidUtf8 {
                field: "Response Topic",
            },
        ),
        err(
            "publish_content_type_null_character_v5",
            V5,
            "MQTT-3.3.2-19",
            v5(&[p_bin(CONTENT_TYPE, b"text\x00")]),
            Malformed::NullCharacter {
                field: "Content Type",
            },
        ),
        err(
            "publish_user_property_value_null_character_v5",
            V5,
            "MQTT-1.5.7-1",
            v5(&[cat!([USER_PROPERTY], s("k"), raw(b"\x00"))]),
            Malformed::NullCharacter {
                field: "user property value",
            },
        ),
        err(
            "publish_subscription_identifier_0_v5",
            V5,
            "§3.3.2.3.8",
            v5(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 0)]),
            bad_value(PropertyId::SubscriptionIdentifier, 0),
        ),
        err(
            "publish_subscription_identifier_5_bytes_v5",
            V5,
            "MQTT-1.5.5-1",
            v5(&[vec![SUBSCRIPTION_IDENTIFIER, 0x80, 0x80, 0x80, 0x80, 0x01]]),
            Malformed::VariableByteIntegerTooLong,
        ),
        err(
            "publish_payload_format_indicator_2_v5",
            V5,
            "§3.3.2.3.2",
            v5(&[p_byte(PAYLOAD_FORMAT_INDICATOR, 2)]),
            bad_value(PropertyId::PayloadFormatIndicator, 2),
        ),
        err(
            "publish_duplicate_topic_alias_v5",
            V5,
            "§3.3.2.3.4",
            v5(&[p_u16(TOPIC_ALIAS, 1), p_u16(TOPIC_ALIAS, 2)]),
            duplicate(PropertyId::TopicAlias, "PUBLISH"),
        ),
        err(
            "publish_duplicate_payload_format_indicator_v5",
            V5,
            "§3.3.2.3.2",
            v5(&[
                p_byte(PAYLOAD_FORMAT_INDICATOR, 1),
                p_byte(PAYLOAD_FORMAT_INDICATOR, 1),
            ]),
            duplicate(PropertyId::PayloadFormatIndicator, "PUBLISH"),
        ),
        err(
            "publish_duplicate_message_expiry_interval_v5",
            V5,
            "§3.3.2.3.3",
            v5(&[
                p_u32(MESSAGE_EXPIRY_INTERVAL, 1),
                p_u32(MESSAGE_EXPIRY_INTERVAL, 2),
            ]),
            duplicate(PropertyId::MessageExpiryInterval, "PUBLISH"),
        ),
        err(
            "publish_duplicate_response_topic_v5",
            V5,
            "MQTT-3.3.2-14",
            v5(&[p_str(RESPONSE_TOPIC, "a"), p_str(RESPONSE_TOPIC, "b")]),
            duplicate(PropertyId::ResponseTopic, "PUBLISH"),
        ),
        err(
            "publish_duplicate_correlation_data_v5",
            V5,
            "§3.3.2.3.6",
            v5(&[p_bin(CORRELATION_DATA, b"a"), p_bin(CORRELATION_DATA, b"a")]),
            duplicate(PropertyId::CorrelationData, "PUBLISH"),
        ),
        err(
            "publish_duplicate_content_type_v5",
            V5,
            "MQTT-3.3.2-19",
            v5(&[p_str(CONTENT_TYPE, "a"), p_str(CONTENT_TYPE, "b")]),
            duplicate(PropertyId::ContentType, "PUBLISH"),
        ),
        err(
            "publish_session_expiry_not_allowed_v5",
            V5,
            "§2.2.2.2",
            v5(&[p_u32(SESSION_EXPIRY_INTERVAL, 1)]),
            not_allowed(SESSION_EXPIRY_INTERVAL, "PUBLISH"),
        ),
        err(
            "publish_reason_string_not_allowed_v5",
            V5,
            "§2.2.2.2",
            v5(&[p_str(REASON_STRING, "no")]),
            not_allowed(REASON_STRING, "PUBLISH"),
        ),
        err(
            "publish_two_byte_unknown_property_id_v5",
            V5,
            "§2.2.2.2",
            v5(&[vec![0x80, 0x01, 0x00]]),
            Malformed::PropertyNotAllowed {
                id: 128,
                context: "PUBLISH",
            },
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.4-3.7 PUBACK, PUBREC, PUBREL, PUBCOMP.
// ---------------------------------------------------------------------------------------------

/// The fixtures shared by the four acknowledgements of the QoS flows. `$good` is a non-zero
/// reason code the packet may carry, `$bad` one it may not; `$bad_first` is a first byte with
/// wrong flags.
macro_rules! publish_ack_fixtures {
    (
        $out:ident, $ty:ident, $name:literal, first = $first:literal, bad_first = $bad_first:literal,
        good = $good:literal, bad = $bad:literal, codes = $codes:literal, flags_spec = $flags_spec:literal
    ) => {{
        let pt = PacketType::$ty;
        let code = ReasonCode($good);
        $out.extend([
            ok(
                concat!($name, "_v3"),
                V3,
                concat!("§", $codes),
                frame($first, [0x00, 0x01]),
                $ty::new(id(1)),
            ),
            ok(
                concat!($name, "_v4"),
                V4,
                "Differences: Remaining Length 2",
                frame($first, [0x12, 0x34]),
                $ty::new(id(0x1234)),
            ),
            ok(
                concat!($name, "_v5_short_form"),
                V5,
                "§3.4.2",
                frame($first, [0x12, 0x34]),
                $ty::new(id(0x1234)),
            ),
            ok(
                concat!($name, "_v5_reason_code_only"),
                V5,
                "§3.4.2",
                frame($first, [0x00, 0x07, $good]),
                $ty::with_reason(id(7), code),
            ),
            canon(
                concat!($name, "_v5_success_code_written_out"),
                V5,
                "§3.4.2",
                frame($first, [0x00, 0x07, 0x00]),
                $ty::new(id(7)),
                frame($first, [0x00, 0x07]),
            ),
            canon(
                concat!($name, "_v5_empty_properties_written_out"),
                V5,
                "§3.4.2",
                frame($first, [0x00, 0x07, $good, 0x00]),
                $ty::with_reason(id(7), code),
                frame($first, [0x00, 0x07, $good]),
            ),
            ok(
                concat!($name, "_v5_with_properties"),
                V5,
                concat!("MQTT-", $codes, "-2"),
                frame(
                    $first,
                    cat!(
                        [0x00, 0x07, $good],
                        props(&[p_str(REASON_STRING, "why"), p_user("a", "b")])
                    ),
                ),
                $ty {
                    packet_id: id(7),
                    reason_code: code,
                    properties: ack_props(Some("why"), &[("a", "b")]),
                },
            ),
            ok(
                concat!($name, "_v5_success_with_user_properties"),
                V5,
                concat!("MQTT-", $codes, "-3"),
                frame(
                    $first,
                    cat!(
                        [0x00, 0x07, 0x00],
                        props(&[p_user("a", "1"), p_user("a", "1")])
                    ),
                ),
                $ty {
                    packet_id: id(7),
                    reason_code: ReasonCode::SUCCESS,
                    properties: ack_props(None, &[("a", "1"), ("a", "1")]),
                },
            ),
            err(
                concat!($name, "_fixed_header_flags_v5"),
                V5,
                $flags_spec,
                frame($bad_first, [0x00, 0x01]),
                flags(pt, $bad_first & 0x0F),
            ),
            err(
                concat!($name, "_packet_id_0_v4"),
                V4,
                "MQTT-2.2.1-3",
                frame($first, [0x00, 0x00]),
                Malformed::PacketIdentifierZero { packet: pt },
            ),
            err(
                concat!($name, "_packet_id_0_v5"),
                V5,
                "MQTT-2.2.1-3",
                frame($first, [0x00, 0x00, $good]),
                Malformed::PacketIdentifierZero { packet: pt },
            ),
            err(
                concat!($name, "_invalid_reason_code_v5"),
                V5,
                concat!("MQTT-", $codes, "-1"),
                frame($first, [0x00, 0x01, $bad]),
                bad_code(pt, $bad),
            ),
            err(
                concat!($name, "_v4_remaining_length_3"),
                V4,
                "Differences: Remaining Length 2",
                frame($first, [0x00, 0x01, 0x00]),
                trailing(pt, 1),
            ),
            err(
                concat!($name, "_truncated_v5"),
                V5,
                "§3.4.2",
                frame($first, [0x00]),
                end(pt, "packet identifier"),
            ),
            err(
                concat!($name, "_property_not_allowed_v5"),
                V5,
                "§2.2.2.2",
                frame(
                    $first,
                    cat!(
                        [0x00, 0x01, 0x00],
                        props(&[p_byte(PAYLOAD_FORMAT_INDICATOR, 1)])
                    ),
                ),
                not_allowed(PAYLOAD_FORMAT_INDICATOR, pt.name()),
            ),
            err(
                concat!($name, "_duplicate_reason_string_v5"),
                V5,
                concat!("MQTT-", $codes, "-2"),
                frame(
                    $first,
                    cat!(
                        [0x00, 0x01, $good],
                        props(&[p_str(REASON_STRING, "a"), p_str(REASON_STRING, "b")])
                    ),
                ),
                duplicate(PropertyId::ReasonString, pt.name()),
            ),
            err(
                concat!($name, "_trailing_after_properties_v5"),
                V5,
                "§2.2.2.1",
                frame($first, [0x00, 0x01, 0x00, 0x00, 0xFF]),
                trailing(pt, 1),
            ),
        ]);
    }};
}

fn acknowledgements() -> Vec<Fixture> {
    let mut out = Vec::new();
    publish_ack_fixtures!(
        out,
        PubAck,
        "puback",
        first = 0x40,
        bad_first = 0x48,
        good = 0x10,
        bad = 0x92,
        codes = "3.4.2",
        flags_spec = "MQTT-2.1.3-1"
    );
    publish_ack_fixtures!(
        out,
        PubRec,
        "pubrec",
        first = 0x50,
        bad_first = 0x52,
        good = 0x80,
        bad = 0x11,
        codes = "3.5.2",
        flags_spec = "MQTT-2.1.3-1"
    );
    publish_ack_fixtures!(
        out,
        PubRel,
        "pubrel",
        first = 0x62,
        bad_first = 0x60,
        good = 0x92,
        bad = 0x10,
        codes = "3.6.2",
        flags_spec = "MQTT-3.6.1-1"
    );
    publish_ack_fixtures!(
        out,
        PubComp,
        "pubcomp",
        first = 0x70,
        bad_first = 0x71,
        good = 0x92,
        bad = 0x80,
        codes = "3.7.2",
        flags_spec = "MQTT-2.1.3-1"
    );
    out.extend([
        canon(
            "pubrel_v3_dup_retry_flags_tolerated",
            V3,
            "Differences: 3.1 DUP on PUBREL",
            vec![0x6A, 0x02, 0x00, 0x05],
            PubRel::new(id(5)),
            vec![0x62, 0x02, 0x00, 0x05],
        ),
        err(
            "pubrel_v4_dup_flags",
            V4,
            "MQTT-3.6.1-1",
            vec![0x6A, 0x02, 0x00, 0x05],
            flags(PacketType::PubRel, 0b1010),
        ),
        err(
            "pubrel_v3_flags_0000",
            V3,
            "MQTT-3.6.1-1",
            vec![0x60, 0x02, 0x00, 0x05],
            flags(PacketType::PubRel, 0),
        ),
        err(
            "puback_v3_dup_flags_not_tolerated",
            V3,
            "MQTT-2.1.3-1",
            vec![0x4A, 0x02, 0x00, 0x05],
            flags(PacketType::PubAck, 0b1010),
        ),
        ok(
            "pubcomp_v5_packet_id_not_found",
            V5,
            "MQTT-3.7.2-1",
            vec![0x70, 0x03, 0xAB, 0xCD, 0x92],
            PubComp::with_reason(id(0xABCD), ReasonCode::PACKET_IDENTIFIER_NOT_FOUND),
        ),
    ]);
    out
}

// ---------------------------------------------------------------------------------------------
// §3.8 SUBSCRIBE and §3.9 SUBACK.
// ---------------------------------------------------------------------------------------------

fn subscribe() -> Vec<Fixture> {
    use PacketType::Subscribe as S;
    let v3 = Subscribe::new(id(1), vec![Subscription::new(st("a/+"), QoS::AtLeastOnce)]);
    let v5_options = Subscribe {
        packet_id: id(3),
        subscriptions: vec![
            Subscription {
                filter: st("a/b"),
                options: SubscriptionOptions {
                    maximum_qos: QoS::ExactlyOnce,
                    no_local: true,
                    retain_as_published: true,
                    retain_handling: RetainHandling::DoNotSend,
                },
            },
            Subscription {
                filter: st("$share/g/c"),
                options: SubscriptionOptions {
                    maximum_qos: QoS::AtLeastOnce,
                    no_local: false,
                    retain_as_published: false,
                    retain_handling: RetainHandling::SendIfNewSubscription,
                },
            },
        ],
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(7),
            user_properties: vec![user("k", "v")].into(),
        },
    };
    let v5_plain = Subscribe::new(id(4), vec![Subscription::new(st("#"), QoS::AtMostOnce)]);
    let v5_max_id = Subscribe {
        properties: SubscribeProperties {
            subscription_identifier: NonZeroU32::new(268_435_455),
            ..SubscribeProperties::default()
        },
        ..v5_plain.clone()
    };
    let v5 = |list: &[Vec<u8>]| frame(0x82, cat!([0x00, 0x01], props(list), s("a"), [0x00]));
    let option_v5 = |options: u8| frame(0x82, cat!([0x00, 0x01], NO_PROPS, s("a"), [options]));
    let option_v4 = |options: u8| frame(0x82, cat!([0x00, 0x01], s("a"), [options]));

    vec![
        ok(
            "subscribe_v3",
            V3,
            "§3.8 (3.1)",
            frame(0x82, cat!([0x00, 0x01], s("a/+"), [0x01])),
            v3.clone(),
        ),
        canon(
            "subscribe_v3_dup_retry_flags_tolerated",
            V3,
            "Differences: 3.1 DUP on SUBSCRIBE",
            frame(0x8A, cat!([0x00, 0x01], s("a/+"), [0x01])),
            v3,
            frame(0x82, cat!([0x00, 0x01], s("a/+"), [0x01])),
        ),
        ok(
            "subscribe_v4_two_filters",
            V4,
            "MQTT-3.8.4-5",
            frame(0x82, cat!([0x00, 0x02], s("a/#"), [0x00], s("b"), [0x02])),
            Subscribe::new(
                id(2),
                vec![
                    Subscription::new(st("a/#"), QoS::AtMostOnce),
                    Subscription::new(st("b"), QoS::ExactlyOnce),
                ],
            ),
        ),
        ok(
            "subscribe_v5_options_and_properties",
            V5,
            "§3.8.3.1",
            frame(
                0x82,
                cat!(
                    [0x00, 0x03],
                    props(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 7), p_user("k", "v")]),
                    s("a/b"),
                    [0x2E],
                    s("$share/g/c"),
                    [0x11],
                ),
            ),
            v5_options,
        ),
        ok(
            "subscribe_v5_no_properties",
            V5,
            "MQTT-2.2.2-1",
            frame(0x82, cat!([0x00, 0x04], NO_PROPS, s("#"), [0x00])),
            v5_plain,
        ),
        ok(
            "subscribe_v5_subscription_identifier_maximum",
            V5,
            "§3.8.2.1.2",
            frame(
                0x82,
                cat!(
                    [0x00, 0x04],
                    props(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 268_435_455)]),
                    s("#"),
                    [0x00]
                ),
            ),
            v5_max_id,
        ),
        err(
            "subscribe_flags_0000_v4",
            V4,
            "MQTT-3.8.1-1",
            frame(0x80, cat!([0x00, 0x01], s("a"), [0x00])),
            flags(S, 0),
        ),
        err(
            "subscribe_flags_1010_v4",
            V4,
            "MQTT-3.8.1-1",
            frame(0x8A, cat!([0x00, 0x01], s("a"), [0x00])),
            flags(S, 0b1010),
        ),
        err(
            "subscribe_flags_1010_v5",
            V5,
            "MQTT-3.8.1-1",
            frame(0x8A, cat!([0x00, 0x01], NO_PROPS, s("a"), [0x00])),
            flags(S, 0b1010),
        ),
        err(
            "subscribe_flags_0000_v3",
            V3,
            "MQTT-3.8.1-1",
            frame(0x80, cat!([0x00, 0x01], s("a"), [0x00])),
            flags(S, 0),
        ),
        err(
            "subscribe_empty_v4",
            V4,
            "MQTT-3.8.3-2",
            frame(0x82, [0x00, 0x01]),
            ProtocolViolation::EmptySubscribe,
        ),
        err(
            "subscribe_empty_v5",
            V5,
            "MQTT-3.8.3-2",
            frame(0x82, cat!([0x00, 0x01], props(&[p_user("k", "v")]))),
            ProtocolViolation::EmptySubscribe,
        ),
        err(
            "subscribe_packet_id_0_v4",
            V4,
            "MQTT-2.2.1-3",
            frame(0x82, cat!([0x00, 0x00], s("a"), [0x00])),
            Malformed::PacketIdentifierZero { packet: S },
        ),
        err(
            "subscribe_packet_id_0_v5",
            V5,
            "MQTT-2.2.1-3",
            frame(0x82, cat!([0x00, 0x00], NO_PROPS, s("a"), [0x00])),
            Malformed::PacketIdentifierZero { packet: S },
        ),
        err(
            "subscribe_options_bit_6_v5",
            V5,
            "MQTT-3.8.3-5",
            option_v5(0x40),
            Malformed::SubscriptionOptionsReserved { options: 0x40 },
        ),
        err(
            "subscribe_options_bit_7_v5",
            V5,
            "MQTT-3.8.3-5",
            option_v5(0x81),
            Malformed::SubscriptionOptionsReserved { options: 0x81 },
        ),
        err(
            "subscribe_options_no_local_bit_v4",
            V4,
            "MQTT-3-8.3-4 (3.1.1)",
            option_v4(0x04),
            Malformed::SubscriptionOptionsReserved { options: 0x04 },
        ),
        err(
            "subscribe_options_bit_7_v3",
            V3,
            "MQTT-3-8.3-4 (3.1.1)",
            option_v4(0x80),
            Malformed::SubscriptionOptionsReserved { options: 0x80 },
        ),
        err(
            "subscribe_qos_3_v5",
            V5,
            "§3.8.3.1",
            option_v5(0x03),
            ProtocolViolation::SubscriptionQoS3,
        ),
        err(
            "subscribe_qos_3_v4",
            V4,
            "MQTT-3-8.3-4 (3.1.1)",
            option_v4(0x03),
            Malformed::InvalidQoS {
                field: "requested QoS",
            },
        ),
        err(
            "subscribe_retain_handling_3_v5",
            V5,
            "§3.8.3.1",
            option_v5(0x30),
            ProtocolViolation::RetainHandling3,
        ),
        err(
            "subscribe_subscription_identifier_0_v5",
            V5,
            "§3.8.2.1.2",
            v5(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 0)]),
            bad_value(PropertyId::SubscriptionIdentifier, 0),
        ),
        err(
            "subscribe_duplicate_subscription_identifier_v5",
            V5,
            "§3.8.2.1.2",
            v5(&[
                p_vbi(SUBSCRIPTION_IDENTIFIER, 1),
                p_vbi(SUBSCRIPTION_IDENTIFIER, 2),
            ]),
            duplicate(PropertyId::SubscriptionIdentifier, "SUBSCRIBE"),
        ),
        err(
            "subscribe_topic_alias_not_allowed_v5",
            V5,
            "§2.2.2.2",
            v5(&[p_u16(TOPIC_ALIAS, 1)]),
            not_allowed(TOPIC_ALIAS, "SUBSCRIBE"),
        ),
        err(
            "subscribe_filter_invalid_utf8_v4",
            V4,
            "MQTT-3.8.3-1",
            frame(
                0x82,
                cat!([0x00, 0x01], raw(b"\xF8\x88\x80\x80\x80"), [0x00]),
            ),
            Malformed::InvalidUtf8 {
                field: "topic filter",
            },
        ),
        err(
            "subscribe_filter_null_character_v5",
            V5,
            "MQTT-1.5.4-2",
            frame(0x82, cat!([0x00, 0x01], NO_PROPS, raw(b"a/\x00"), [0x00])),
            Malformed::NullCharacter {
                field: "topic filter",
            },
        ),
        err(
            "subscribe_missing_options_byte_v4",
            V4,
            "MQTT-3.8.3-1",
            frame(0x82, cat!([0x00, 0x01], s("a"))),
            end(S, "subscription options"),
        ),
        err(
            "subscribe_truncated_filter_v5",
            V5,
            "MQTT-3.8.3-1",
            frame(0x82, cat!([0x00, 0x01], NO_PROPS, [0x00, 0x04, b'a'])),
            end(S, "topic filter"),
        ),
    ]
}

fn suback() -> Vec<Fixture> {
    use PacketType::SubAck as S;
    let codes = |values: &[u8]| values.iter().copied().map(ReasonCode).collect::<Vec<_>>();
    let every_v5 = [
        0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
    ];

    vec![
        ok(
            "suback_v3",
            V3,
            "§3.9 (3.1)",
            frame(0x90, [0x00, 0x01, 0x00, 0x01, 0x02]),
            SubAck::new(id(1), codes(&[0, 1, 2])),
        ),
        ok(
            "suback_v3_failure_0x80",
            V3,
            "Differences: SUBACK 0x80 for 3.1",
            frame(0x90, [0x00, 0x01, 0x80]),
            SubAck::new(id(1), codes(&[0x80])),
        ),
        ok(
            "suback_v4_granted_and_failure",
            V4,
            "MQTT-3.9.3-2 (3.1.1)",
            frame(0x90, [0x00, 0x02, 0x80, 0x01]),
            SubAck::new(id(2), codes(&[0x80, 0x01])),
        ),
        ok(
            "suback_v5_every_reason_code",
            V5,
            "MQTT-3.9.3-2",
            frame(
                0x90,
                cat!(
                    [0x00, 0x09],
                    props(&[p_str(REASON_STRING, "partial")]),
                    every_v5
                ),
            ),
            SubAck {
                properties: ack_props(Some("partial"), &[]),
                ..SubAck::new(id(9), codes(&every_v5))
            },
        ),
        ok(
            "suback_v5_user_property",
            V5,
            "MQTT-3.9.2-2",
            frame(0x90, cat!([0x00, 0x09], props(&[p_user("x", "y")]), [0x01])),
            SubAck {
                properties: ack_props(None, &[("x", "y")]),
                ..SubAck::new(id(9), codes(&[1]))
            },
        ),
        err(
            "suback_fixed_header_flags_v4",
            V4,
            "MQTT-2.1.3-1",
            frame(0x92, [0x00, 0x01, 0x00]),
            flags(S, 0b0010),
        ),
        err(
            "suback_v5_code_0x03",
            V5,
            "MQTT-3.9.3-2",
            frame(0x90, [0x00, 0x01, 0x00, 0x03]),
            bad_code(S, 0x03),
        ),
        err(
            "suback_v5_code_0x11",
            V5,
            "MQTT-3.9.3-2",
            frame(0x90, [0x00, 0x01, 0x00, 0x00, 0x11]),
            bad_code(S, 0x11),
        ),
        err(
            "suback_v4_code_0x87",
            V4,
            "MQTT-3.9.3-2 (3.1.1)",
            frame(0x90, [0x00, 0x01, 0x87]),
            bad_code(S, 0x87),
        ),
        err(
            "suback_v3_code_0x87",
            V3,
            "MQTT-3.9.3-2 (3.1.1)",
            frame(0x90, [0x00, 0x01, 0x87]),
            bad_code(S, 0x87),
        ),
        err(
            "suback_v4_empty",
            V4,
            "MQTT-3.9.3-1",
            frame(0x90, [0x00, 0x01]),
            ProtocolViolation::EmptyAcknowledgement { packet: S },
        ),
        err(
            "suback_v5_empty",
            V5,
            "MQTT-3.9.3-1",
            frame(0x90, [0x00, 0x01, 0x00]),
            ProtocolViolation::EmptyAcknowledgement { packet: S },
        ),
        err(
            "suback_packet_id_0_v5",
            V5,
            "MQTT-2.2.1-3",
            frame(0x90, [0x00, 0x00, 0x00, 0x00]),
            Malformed::PacketIdentifierZero { packet: S },
        ),
        err(
            "suback_packet_id_0_v3",
            V3,
            "MQTT-2.2.1-3",
            frame(0x90, [0x00, 0x00, 0x00]),
            Malformed::PacketIdentifierZero { packet: S },
        ),
        err(
            "suback_v5_subscription_identifier_not_allowed",
            V5,
            "§2.2.2.2",
            frame(
                0x90,
                cat!(
                    [0x00, 0x01],
                    props(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 1)]),
                    [0x00]
                ),
            ),
            not_allowed(SUBSCRIPTION_IDENTIFIER, "SUBACK"),
        ),
        err(
            "suback_v5_missing_property_length",
            V5,
            "MQTT-2.2.2-1",
            frame(0x90, [0x00, 0x01]),
            end(S, "property length"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.10 UNSUBSCRIBE and §3.11 UNSUBACK.
// ---------------------------------------------------------------------------------------------

fn unsubscribe() -> Vec<Fixture> {
    use PacketType::Unsubscribe as U;
    let v3 = Unsubscribe::new(id(1), vec![st("a/b")]);
    vec![
        ok(
            "unsubscribe_v3",
            V3,
            "§3.10 (3.1)",
            frame(0xA2, cat!([0x00, 0x01], s("a/b"))),
            v3.clone(),
        ),
        canon(
            "unsubscribe_v3_dup_retry_flags_tolerated",
            V3,
            "Differences: 3.1 DUP on UNSUBSCRIBE",
            frame(0xAA, cat!([0x00, 0x01], s("a/b"))),
            v3,
            frame(0xA2, cat!([0x00, 0x01], s("a/b"))),
        ),
        ok(
            "unsubscribe_v4_two_filters",
            V4,
            "MQTT-3.10.4-6",
            frame(0xA2, cat!([0x00, 0x02], s("a/#"), s("$share/g/b"))),
            Unsubscribe::new(id(2), vec![st("a/#"), st("$share/g/b")]),
        ),
        ok(
            "unsubscribe_v5_user_property",
            V5,
            "§3.10.2.1.2",
            frame(0xA2, cat!([0x00, 0x03], props(&[p_user("k", "v")]), s("x"))),
            Unsubscribe {
                properties: UnsubscribeProperties {
                    user_properties: vec![user("k", "v")].into(),
                },
                ..Unsubscribe::new(id(3), vec![st("x")])
            },
        ),
        ok(
            "unsubscribe_v5_no_properties",
            V5,
            "MQTT-2.2.2-1",
            frame(0xA2, cat!([0x00, 0x03], NO_PROPS, s("x"))),
            Unsubscribe::new(id(3), vec![st("x")]),
        ),
        err(
            "unsubscribe_flags_0000_v4",
            V4,
            "MQTT-3.10.1-1",
            frame(0xA0, cat!([0x00, 0x01], s("a"))),
            flags(U, 0),
        ),
        err(
            "unsubscribe_flags_1010_v5",
            V5,
            "MQTT-3.10.1-1",
            frame(0xAA, cat!([0x00, 0x01], NO_PROPS, s("a"))),
            flags(U, 0b1010),
        ),
        err(
            "unsubscribe_empty_v4",
            V4,
            "MQTT-3.10.3-2",
            frame(0xA2, [0x00, 0x01]),
            ProtocolViolation::EmptyUnsubscribe,
        ),
        err(
            "unsubscribe_empty_v5",
            V5,
            "MQTT-3.10.3-2",
            frame(0xA2, [0x00, 0x01, 0x00]),
            ProtocolViolation::EmptyUnsubscribe,
        ),
        err(
            "unsubscribe_packet_id_0_v5",
            V5,
            "MQTT-2.2.1-3",
            frame(0xA2, cat!([0x00, 0x00], NO_PROPS, s("a"))),
            Malformed::PacketIdentifierZero { packet: U },
        ),
        err(
            "unsubscribe_packet_id_0_v3",
            V3,
            "MQTT-2.2.1-3",
            frame(0xA2, cat!([0x00, 0x00], s("a"))),
            Malformed::PacketIdentifierZero { packet: U },
        ),
        err(
            "unsubscribe_filter_invalid_utf8_v4",
            V4,
            "MQTT-3.10.3-1",
            frame(0xA2, cat!([0x00, 0x01], s("ok"), raw(b"\xC1\xBF"))),
            Malformed::InvalidUtf8 {
                field: "topic filter",
            },
        ),
        err(
            "unsubscribe_subscription_identifier_not_allowed_v5",
            V5,
            "§3.10.2.1.2",
            frame(
                0xA2,
                cat!(
                    [0x00, 0x01],
                    props(&[p_vbi(SUBSCRIPTION_IDENTIFIER, 1)]),
                    s("a")
                ),
            ),
            not_allowed(SUBSCRIPTION_IDENTIFIER, "UNSUBSCRIBE"),
        ),
        err(
            "unsubscribe_truncated_filter_v4",
            V4,
            "MQTT-3.10.3-1",
            frame(0xA2, [0x00, 0x01, 0x00, 0x05, b'a']),
            end(U, "topic filter"),
        ),
    ]
}

fn unsuback() -> Vec<Fixture> {
    use PacketType::UnsubAck as U;
    let every_v5 = [0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91];
    vec![
        ok(
            "unsuback_v3",
            V3,
            "§3.11 (3.1)",
            frame(0xB0, [0x00, 0x01]),
            UnsubAck::new(id(1), Vec::new()),
        ),
        ok(
            "unsuback_v4",
            V4,
            "Differences: Remaining Length 2",
            frame(0xB0, [0xBE, 0xEF]),
            UnsubAck::new(id(0xBEEF), Vec::new()),
        ),
        ok(
            "unsuback_v5_every_reason_code",
            V5,
            "MQTT-3.11.3-2",
            frame(
                0xB0,
                cat!(
                    [0x00, 0x02],
                    props(&[p_str(REASON_STRING, "mixed"), p_user("u", "1")]),
                    every_v5
                ),
            ),
            UnsubAck {
                properties: ack_props(Some("mixed"), &[("u", "1")]),
                ..UnsubAck::new(id(2), every_v5.iter().copied().map(ReasonCode).collect())
            },
        ),
        ok(
            "unsuback_v5_success",
            V5,
            "MQTT-3.11.3-1",
            frame(0xB0, [0x00, 0x02, 0x00, 0x00]),
            UnsubAck::new(id(2), vec![ReasonCode::SUCCESS]),
        ),
        err(
            "unsuback_fixed_header_flags_v5",
            V5,
            "MQTT-2.1.3-1",
            frame(0xB2, [0x00, 0x01, 0x00, 0x00]),
            flags(U, 0b0010),
        ),
        err(
            "unsuback_v4_with_v5_body",
            V4,
            "Differences: Remaining Length 2",
            frame(0xB0, [0x00, 0x01, 0x00, 0x00]),
            trailing(U, 2),
        ),
        err(
            "unsuback_v5_empty",
            V5,
            "MQTT-3.11.3-1",
            frame(0xB0, [0x00, 0x01, 0x00]),
            ProtocolViolation::EmptyAcknowledgement { packet: U },
        ),
        err(
            "unsuback_v5_code_0x10",
            V5,
            "MQTT-3.11.3-2",
            frame(0xB0, [0x00, 0x01, 0x00, 0x00, 0x10]),
            bad_code(U, 0x10),
        ),
        err(
            "unsuback_packet_id_0_v4",
            V4,
            "MQTT-2.2.1-3",
            frame(0xB0, [0x00, 0x00]),
            Malformed::PacketIdentifierZero { packet: U },
        ),
        err(
            "unsuback_v5_missing_property_length",
            V5,
            "MQTT-2.2.2-1",
            frame(0xB0, [0x00, 0x01]),
            end(U, "property length"),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.12 PINGREQ and §3.13 PINGRESP.
// ---------------------------------------------------------------------------------------------

fn ping() -> Vec<Fixture> {
    vec![
        ok("pingreq_v3", V3, "§3.12", vec![0xC0, 0x00], Packet::PingReq),
        ok("pingreq_v4", V4, "§3.12", vec![0xC0, 0x00], Packet::PingReq),
        ok(
            "pingreq_v5",
            V5,
            "MQTT-3.12.4-1",
            vec![0xC0, 0x00],
            Packet::PingReq,
        ),
        ok(
            "pingresp_v3",
            V3,
            "§3.13",
            vec![0xD0, 0x00],
            Packet::PingResp,
        ),
        ok(
            "pingresp_v4",
            V4,
            "§3.13",
            vec![0xD0, 0x00],
            Packet::PingResp,
        ),
        ok(
            "pingresp_v5",
            V5,
            "§3.13",
            vec![0xD0, 0x00],
            Packet::PingResp,
        ),
        err(
            "pingreq_with_body_v4",
            V4,
            "§3.12",
            vec![0xC0, 0x01, 0x00],
            trailing(PacketType::PingReq, 1),
        ),
        err(
            "pingreq_with_body_v5",
            V5,
            "§3.12",
            vec![0xC0, 0x02, 0x00, 0x00],
            trailing(PacketType::PingReq, 2),
        ),
        err(
            "pingresp_with_body_v3",
            V3,
            "§3.13",
            vec![0xD0, 0x01, 0x00],
            trailing(PacketType::PingResp, 1),
        ),
        err(
            "pingreq_fixed_header_flags_v5",
            V5,
            "MQTT-2.1.3-1",
            vec![0xC1, 0x00],
            flags(PacketType::PingReq, 1),
        ),
        err(
            "pingresp_fixed_header_flags_v4",
            V4,
            "MQTT-2.1.3-1",
            vec![0xD8, 0x00],
            flags(PacketType::PingResp, 0b1000),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.14 DISCONNECT.
// ---------------------------------------------------------------------------------------------

fn disconnect() -> Vec<Fixture> {
    use PacketType::Disconnect as D;
    let full = Disconnect {
        reason_code: ReasonCode::USE_ANOTHER_SERVER,
        properties: DisconnectProperties {
            session_expiry_interval: Some(0),
            reason_string: Some(st("maintenance")),
            server_reference: Some(st("b.example")),
            user_properties: vec![user("k", "v")].into(),
        },
    };
    vec![
        ok(
            "disconnect_v3",
            V3,
            "§3.14 (3.1)",
            vec![0xE0, 0x00],
            Disconnect::default(),
        ),
        ok(
            "disconnect_v4",
            V4,
            "§3.14 (3.1.1)",
            vec![0xE0, 0x00],
            Disconnect::default(),
        ),
        ok(
            "disconnect_v5_short_form",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x00],
            Disconnect::default(),
        ),
        ok(
            "disconnect_v5_with_will_message",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x01, 0x04],
            Disconnect::new(ReasonCode::DISCONNECT_WITH_WILL_MESSAGE),
        ),
        canon(
            "disconnect_v5_normal_code_written_out",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x01, 0x00],
            Disconnect::default(),
            vec![0xE0, 0x00],
        ),
        canon(
            "disconnect_v5_empty_properties_written_out",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x02, 0x8E, 0x00],
            Disconnect::new(ReasonCode::SESSION_TAKEN_OVER),
            vec![0xE0, 0x01, 0x8E],
        ),
        ok(
            "disconnect_v5_all_properties",
            V5,
            "§3.14.2.2",
            frame(
                0xE0,
                cat!(
                    [0x9C],
                    props(&[
                        p_u32(SESSION_EXPIRY_INTERVAL, 0),
                        p_str(REASON_STRING, "maintenance"),
                        p_str(SERVER_REFERENCE, "b.example"),
                        p_user("k", "v"),
                    ]),
                ),
            ),
            full,
        ),
        err(
            "disconnect_fixed_header_flags_v5",
            V5,
            "MQTT-3.14.1-1",
            vec![0xE1, 0x00],
            flags(D, 1),
        ),
        err(
            "disconnect_fixed_header_flags_v3",
            V3,
            "MQTT-3.14.1-1",
            vec![0xE2, 0x00],
            flags(D, 0b0010),
        ),
        err(
            "disconnect_v4_with_body",
            V4,
            "Differences: DISCONNECT",
            vec![0xE0, 0x01, 0x00],
            trailing(D, 1),
        ),
        err(
            "disconnect_v5_code_0x05",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x01, 0x05],
            bad_code(D, 0x05),
        ),
        err(
            "disconnect_v5_code_0x84",
            V5,
            "MQTT-3.14.2-1",
            vec![0xE0, 0x01, 0x84],
            bad_code(D, 0x84),
        ),
        err(
            "disconnect_v5_receive_maximum_not_allowed",
            V5,
            "§2.2.2.2",
            frame(0xE0, cat!([0x00], props(&[p_u16(RECEIVE_MAXIMUM, 1)]))),
            not_allowed(RECEIVE_MAXIMUM, "DISCONNECT"),
        ),
        err(
            "disconnect_v5_duplicate_session_expiry_interval",
            V5,
            "§3.14.2.2.2",
            frame(
                0xE0,
                cat!(
                    [0x00],
                    props(&[
                        p_u32(SESSION_EXPIRY_INTERVAL, 1),
                        p_u32(SESSION_EXPIRY_INTERVAL, 1)
                    ])
                ),
            ),
            duplicate(PropertyId::SessionExpiryInterval, "DISCONNECT"),
        ),
        err(
            "disconnect_v5_duplicate_server_reference",
            V5,
            "§3.14.2.2.5",
            frame(
                0xE0,
                cat!(
                    [0x9D],
                    props(&[p_str(SERVER_REFERENCE, "a"), p_str(SERVER_REFERENCE, "b")])
                ),
            ),
            duplicate(PropertyId::ServerReference, "DISCONNECT"),
        ),
        err(
            "disconnect_v5_trailing_after_properties",
            V5,
            "§3.14.2",
            vec![0xE0, 0x03, 0x00, 0x00, 0x00],
            trailing(D, 1),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// §3.15 AUTH.
// ---------------------------------------------------------------------------------------------

fn auth() -> Vec<Fixture> {
    use PacketType::Auth as A;
    let auth = |reason_code: u8, properties: AuthProperties| Auth {
        reason_code: ReasonCode(reason_code),
        properties,
    };
    vec![
        ok(
            "auth_v5_short_form",
            V5,
            "MQTT-3.15.2-1",
            vec![0xF0, 0x00],
            Auth::default(),
        ),
        ok(
            "auth_v5_continue",
            V5,
            "§3.15.2.2",
            frame(
                0xF0,
                cat!(
                    [0x18],
                    props(&[
                        p_str(AUTHENTICATION_METHOD, "SCRAM-SHA-1"),
                        p_bin(AUTHENTICATION_DATA, b"\x00\x01")
                    ])
                ),
            ),
            auth(
                0x18,
                AuthProperties {
                    authentication_method: Some(st("SCRAM-SHA-1")),
                    authentication_data: Some(Bytes::from_static(b"\x00\x01")),
                    ..AuthProperties::default()
                },
            ),
        ),
        ok(
            "auth_v5_re_authenticate_with_reason_string",
            V5,
            "MQTT-3.15.2-2",
            frame(
                0xF0,
                cat!(
                    [0x19],
                    props(&[
                        p_str(AUTHENTICATION_METHOD, "K"),
                        p_str(REASON_STRING, "again"),
                        p_user("a", "b")
                    ]),
                ),
            ),
            auth(
                0x19,
                AuthProperties {
                    authentication_method: Some(st("K")),
                    reason_string: Some(st("again")),
                    user_properties: vec![user("a", "b")].into(),
                    ..AuthProperties::default()
                },
            ),
        ),
        ok(
            "auth_v5_success_with_method",
            V5,
            "§3.15.2.1",
            frame(
                0xF0,
                cat!([0x00], props(&[p_str(AUTHENTICATION_METHOD, "K")])),
            ),
            auth(
                0x00,
                AuthProperties {
                    authentication_method: Some(st("K")),
                    ..AuthProperties::default()
                },
            ),
        ),
        err(
            "auth_v3",
            V3,
            "Differences: no AUTH",
            vec![0xF0, 0x00],
            Malformed::PacketTypeNotInProtocol { packet: A },
        ),
        err(
            "auth_v4",
            V4,
            "Differences: no AUTH",
            frame(
                0xF0,
                cat!([0x18], props(&[p_str(AUTHENTICATION_METHOD, "K")])),
            ),
            Malformed::PacketTypeNotInProtocol { packet: A },
        ),
        err(
            "auth_fixed_header_flags_v5",
            V5,
            "MQTT-3.15.1-1",
            vec![0xF1, 0x00],
            flags(A, 1),
        ),
        err(
            "auth_v5_code_0x01",
            V5,
            "MQTT-3.15.2-1",
            frame(
                0xF0,
                cat!([0x01], props(&[p_str(AUTHENTICATION_METHOD, "K")])),
            ),
            bad_code(A, 0x01),
        ),
        err(
            "auth_v5_code_only_without_method",
            V5,
            "§3.15.2.2.2",
            vec![0xF0, 0x01, 0x18],
            ProtocolViolation::AuthWithoutMethod,
        ),
        err(
            "auth_v5_data_without_method",
            V5,
            "§3.15.2.2.2",
            frame(
                0xF0,
                cat!([0x18], props(&[p_bin(AUTHENTICATION_DATA, b"d")])),
            ),
            ProtocolViolation::AuthWithoutMethod,
        ),
        err(
            "auth_v5_duplicate_method",
            V5,
            "§3.15.2.2.2",
            frame(
                0xF0,
                cat!(
                    [0x18],
                    props(&[
                        p_str(AUTHENTICATION_METHOD, "K"),
                        p_str(AUTHENTICATION_METHOD, "K")
                    ])
                ),
            ),
            duplicate(PropertyId::AuthenticationMethod, "AUTH"),
        ),
        err(
            "auth_v5_duplicate_data",
            V5,
            "§3.15.2.2.3",
            frame(
                0xF0,
                cat!(
                    [0x18],
                    props(&[
                        p_str(AUTHENTICATION_METHOD, "K"),
                        p_bin(AUTHENTICATION_DATA, b"1"),
                        p_bin(AUTHENTICATION_DATA, b"2"),
                    ]),
                ),
            ),
            duplicate(PropertyId::AuthenticationData, "AUTH"),
        ),
        err(
            "auth_v5_session_expiry_not_allowed",
            V5,
            "§2.2.2.2",
            frame(
                0xF0,
                cat!(
                    [0x18],
                    props(&[
                        p_str(AUTHENTICATION_METHOD, "K"),
                        p_u32(SESSION_EXPIRY_INTERVAL, 1)
                    ])
                ),
            ),
            not_allowed(SESSION_EXPIRY_INTERVAL, "AUTH"),
        ),
        err(
            "auth_v5_trailing_after_properties",
            V5,
            "§3.15.2",
            frame(
                0xF0,
                cat!([0x18], props(&[p_str(AUTHENTICATION_METHOD, "K")]), [0x00]),
            ),
            trailing(A, 1),
        ),
    ]
}
