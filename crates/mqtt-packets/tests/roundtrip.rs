//! Property tests of the codec: every valid packet survives `decode(encode(p))` unchanged at each
//! protocol level, whole or split at any byte; arbitrary and mutated input never panics and never
//! makes the decoder reserve more than the maximum packet size; packets concatenated in one buffer
//! come out one after another.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::fmt::Debug;
use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use mqtt_packets::{
    AckProperties, Auth, AuthProperties, ConnAck, ConnAckProperties, Connect, ConnectProperties,
    DecodeContext, DecodeError, Disconnect, DisconnectProperties, FixedHeader, MqttString, Packet,
    PacketId, PacketType, PayloadFormatIndicator, Protocol, PubAck, PubComp, PubRec, PubRel,
    Publish, PublishProperties, QoS, ReasonCode, RetainHandling, SubAck, Subscribe,
    SubscribeProperties, Subscription, SubscriptionOptions, UnsubAck, Unsubscribe,
    UnsubscribeProperties, UserProperty, VARIABLE_BYTE_INTEGER_MAX, Will, WillProperties, decode,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::{Index, select};

const LEVELS: [Protocol; 3] = [Protocol::V3_1, Protocol::V3_1_1, Protocol::V5];

/// 256 cases per test, and no regression files written next to the sources.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// The input-robustness tests are cheap: 1024 cases each.
fn fuzz_config() -> ProptestConfig {
    ProptestConfig {
        cases: 1024,
        ..config()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies for the field types.
// ---------------------------------------------------------------------------------------------

/// Text without U+0000: mostly ASCII, some any-plane characters (incl. controls and non-ASCII).
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9/ _$-]{0,12}",
        2 => "\\PC{0,8}",
        1 => "[\\x{1}-\\x{10FFFF}]{0,6}",
    ]
}

fn mqtt_string() -> impl Strategy<Value = MqttString> {
    text().prop_map(|text| MqttString::new(text).unwrap())
}

/// A Topic Name: non-empty, no wildcards.
fn topic_name() -> impl Strategy<Value = MqttString> {
    text().prop_map(|text| {
        let mut topic: String = text.chars().filter(|c| *c != '+' && *c != '#').collect();
        if topic.is_empty() {
            topic.push('t');
        }
        MqttString::new(topic).unwrap()
    })
}

/// A Response Topic: a Topic Name, so non-empty and without wildcards [MQTT-4.7.3-1].
fn response_topic() -> impl Strategy<Value = MqttString> {
    topic_name()
}

fn binary(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..=max).prop_map(Bytes::from)
}

fn packet_id() -> impl Strategy<Value = PacketId> {
    (1..=u16::MAX).prop_map(|id| NonZeroU16::new(id).unwrap())
}

fn non_zero_u16() -> impl Strategy<Value = NonZeroU16> {
    (1..=u16::MAX).prop_map(|value| NonZeroU16::new(value).unwrap())
}

fn non_zero_u32() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![1..=u32::MAX, Just(1u32), Just(u32::MAX)].prop_map(|v| NonZeroU32::new(v).unwrap())
}

/// A Subscription Identifier, 1 to 268,435,455, with the Variable Byte Integer size boundaries.
fn subscription_identifier() -> impl Strategy<Value = NonZeroU32> {
    prop_oneof![
        1..=VARIABLE_BYTE_INTEGER_MAX,
        select(vec![
            1u32,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            VARIABLE_BYTE_INTEGER_MAX
        ]),
    ]
    .prop_map(|v| NonZeroU32::new(v).unwrap())
}

fn qos() -> impl Strategy<Value = QoS> {
    select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn payload_format_indicator() -> impl Strategy<Value = PayloadFormatIndicator> {
    select(vec![
        PayloadFormatIndicator::Unspecified,
        PayloadFormatIndicator::Utf8,
    ])
}

fn user_properties() -> impl Strategy<Value = Vec<UserProperty>> {
    prop_oneof![
        2 => Just(Vec::new()),
        1 => vec((mqtt_string(), mqtt_string()).prop_map(|(n, v)| UserProperty::new(n, v)), 1..4),
    ]
}

/// Every code an MQTT 5 packet of this type may carry.
fn reason_code_in(packet: PacketType) -> impl Strategy<Value = ReasonCode> {
    let allowed: Vec<ReasonCode> = (0..=u8::MAX)
        .map(ReasonCode)
        .filter(|code| code.is_allowed_in(packet))
        .collect();
    select(allowed)
}

/// The properties strategy at MQTT 5, nothing below.
fn at_level<T: Default + Clone + Debug + 'static>(
    protocol: Protocol,
    strategy: impl Strategy<Value = T> + 'static,
) -> BoxedStrategy<T> {
    if protocol.is_v5() {
        strategy.boxed()
    } else {
        Just(T::default()).boxed()
    }
}

// ---------------------------------------------------------------------------------------------
// Property sets (MQTT 5).
// ---------------------------------------------------------------------------------------------

fn connect_properties() -> impl Strategy<Value = ConnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        option::of(non_zero_u32()),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(mqtt_string()),
        option::of(binary(8)),
        user_properties(),
    )
        .prop_map(
            |(session, receive, size, alias, response, problem, method, data, user)| {
                // Authentication Data only with an Authentication Method (§3.1.2.11.10): the
                // decoder refuses data without a method as a protocol error.
                let authentication_data = if method.is_some() { data } else { None };
                ConnectProperties {
                    session_expiry_interval: session,
                    receive_maximum: receive,
                    maximum_packet_size: size,
                    topic_alias_maximum: alias,
                    request_response_information: response,
                    request_problem_information: problem,
                    authentication_method: method,
                    authentication_data,
                    user_properties: user.into(),
                }
            },
        )
}

fn will_properties() -> impl Strategy<Value = WillProperties> {
    (
        option::of(any::<u32>()),
        option::of(payload_format_indicator()),
        option::of(any::<u32>()),
        option::of(mqtt_string()),
        option::of(response_topic()),
        option::of(binary(8)),
        user_properties(),
    )
        .prop_map(
            |(delay, format, expiry, content_type, response_topic, correlation, user)| {
                WillProperties {
                    will_delay_interval: delay,
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    content_type,
                    response_topic,
                    correlation_data: correlation,
                    user_properties: user.into(),
                }
            },
        )
}

fn connack_properties() -> impl Strategy<Value = ConnAckProperties> {
    let numbers = (
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        // Maximum QoS is 0 or 1 on the wire; 2 is said by leaving it out.
        option::of(select(vec![QoS::AtMostOnce, QoS::AtLeastOnce])),
        option::of(any::<bool>()),
        option::of(non_zero_u32()),
        option::of(any::<u16>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<u16>()),
    );
    let texts = (
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        option::of(binary(8)),
        user_properties(),
    );
    (numbers, texts).prop_map(
        |(
            (session, receive, max_qos, retain, size, alias, wildcard, ids, shared, keep_alive),
            (assigned, reason, response, reference, method, data, user),
        )| ConnAckProperties {
            session_expiry_interval: session,
            receive_maximum: receive,
            maximum_qos: max_qos,
            retain_available: retain,
            maximum_packet_size: size,
            assigned_client_identifier: assigned,
            topic_alias_maximum: alias,
            reason_string: reason,
            wildcard_subscription_available: wildcard,
            subscription_identifiers_available: ids,
            shared_subscription_available: shared,
            server_keep_alive: keep_alive,
            response_information: response,
            server_reference: reference,
            authentication_method: method,
            authentication_data: data,
            user_properties: user.into(),
        },
    )
}

fn publish_properties() -> impl Strategy<Value = PublishProperties> {
    (
        option::of(payload_format_indicator()),
        option::of(any::<u32>()),
        option::of(non_zero_u16()),
        option::of(response_topic()),
        option::of(binary(8)),
        option::of(mqtt_string()),
        prop_oneof![2 => Just(Vec::new()), 1 => vec(subscription_identifier(), 1..4)],
        user_properties(),
    )
        .prop_map(
            |(format, expiry, alias, response_topic, correlation, content_type, ids, user)| {
                PublishProperties {
                    payload_format_indicator: format,
                    message_expiry_interval: expiry,
                    topic_alias: alias,
                    response_topic,
                    correlation_data: correlation,
                    content_type,
                    subscription_identifiers: ids,
                    user_properties: user.into(),
                }
            },
        )
}

fn ack_properties() -> impl Strategy<Value = AckProperties> {
    (option::of(mqtt_string()), user_properties()).prop_map(|(reason_string, user_properties)| {
        AckProperties {
            reason_string,
            user_properties: user_properties.into(),
        }
    })
}

fn subscribe_properties() -> impl Strategy<Value = SubscribeProperties> {
    (option::of(subscription_identifier()), user_properties()).prop_map(
        |(subscription_identifier, user_properties)| SubscribeProperties {
            subscription_identifier,
            user_properties: user_properties.into(),
        },
    )
}

fn unsubscribe_properties() -> impl Strategy<Value = UnsubscribeProperties> {
    user_properties().prop_map(|user_properties| UnsubscribeProperties {
        user_properties: user_properties.into(),
    })
}

fn disconnect_properties() -> impl Strategy<Value = DisconnectProperties> {
    (
        option::of(any::<u32>()),
        option::of(mqtt_string()),
        option::of(mqtt_string()),
        user_properties(),
    )
        .prop_map(|(session, reason, reference, user)| DisconnectProperties {
            session_expiry_interval: session,
            reason_string: reason,
            server_reference: reference,
            user_properties: user.into(),
        })
}

// ---------------------------------------------------------------------------------------------
// Packets.
// ---------------------------------------------------------------------------------------------

fn will(protocol: Protocol) -> impl Strategy<Value = Will> {
    (
        topic_name(),
        binary(16),
        qos(),
        any::<bool>(),
        at_level(protocol, will_properties()),
    )
        .prop_map(|(topic, payload, qos, retain, properties)| Will {
            topic,
            payload,
            qos,
            retain,
            properties,
        })
}

fn connect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        any::<bool>(),
        any::<u16>(),
        mqtt_string(),
        option::of(will(protocol)),
        option::of(mqtt_string()),
        option::of(binary(12)),
        at_level(protocol, connect_properties()),
    )
        .prop_map(
            move |(clean_start, keep_alive, client_id, will, username, password, properties)| {
                // Below MQTT 5 a password needs a user name [MQTT-3.1.2-22 of 3.1.1].
                let password = if protocol.is_v5() || username.is_some() {
                    password
                } else {
                    None
                };
                Packet::from(Connect {
                    protocol,
                    clean_start,
                    keep_alive,
                    client_id,
                    will,
                    username,
                    password,
                    properties,
                })
            },
        )
}

fn connack(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let code = if protocol.is_v5() {
        reason_code_in(PacketType::ConnAck).boxed()
    } else {
        // The codes with a 3.x return code (0 to 5), as the decoder maps them back.
        select(vec![0x00, 0x84, 0x85, 0x88, 0x86, 0x87])
            .prop_map(ReasonCode)
            .boxed()
    };
    (
        any::<bool>(),
        code,
        at_level(protocol, connack_properties()),
    )
        .prop_map(move |(session_present, reason_code, properties)| {
            // MQTT 3.1 has no Session Present flag.
            let session_present = session_present && protocol != Protocol::V3_1;
            Packet::ConnAck(ConnAck {
                session_present,
                reason_code,
                properties,
            })
        })
}

fn publish(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        qos(),
        any::<bool>(),
        any::<bool>(),
        topic_name(),
        any::<bool>(),
        packet_id(),
        binary(24),
        at_level(protocol, publish_properties()),
    )
        .prop_map(
            move |(qos, dup, retain, topic, empty_topic, id, payload, mut properties)| {
                let at_most_once = qos == QoS::AtMostOnce;
                // At MQTT 5 an empty Topic Name stands for a Topic Alias.
                let topic = if protocol.is_v5() && empty_topic {
                    properties.topic_alias.get_or_insert(NonZeroU16::MIN);
                    MqttString::default()
                } else {
                    topic
                };
                Packet::Publish(Publish {
                    // DUP is 0 at QoS 0 [MQTT-3.3.1-2].
                    dup: dup && !at_most_once,
                    qos,
                    retain,
                    topic,
                    packet_id: if at_most_once { None } else { Some(id) },
                    payload,
                    properties,
                })
            },
        )
}

/// PUBACK, PUBREC, PUBREL or PUBCOMP: (packet id, code, properties).
fn ack_parts(
    protocol: Protocol,
    packet: PacketType,
) -> impl Strategy<Value = (PacketId, ReasonCode, AckProperties)> {
    let code = if protocol.is_v5() {
        reason_code_in(packet).boxed()
    } else {
        Just(ReasonCode::SUCCESS).boxed()
    };
    (packet_id(), code, at_level(protocol, ack_properties()))
}

fn subscription_options(protocol: Protocol) -> impl Strategy<Value = SubscriptionOptions> {
    let handling = select(vec![
        RetainHandling::SendAtSubscribe,
        RetainHandling::SendIfNewSubscription,
        RetainHandling::DoNotSend,
    ]);
    (qos(), any::<bool>(), any::<bool>(), handling).prop_map(
        move |(maximum_qos, no_local, retain_as_published, retain_handling)| {
            if protocol.is_v5() {
                SubscriptionOptions {
                    maximum_qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions {
                    maximum_qos,
                    ..SubscriptionOptions::default()
                }
            }
        },
    )
}

fn subscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let subscription = (mqtt_string(), subscription_options(protocol))
        .prop_map(|(filter, options)| Subscription { filter, options });
    (
        packet_id(),
        vec(subscription, 1..5),
        at_level(protocol, subscribe_properties()),
    )
        .prop_map(|(packet_id, subscriptions, properties)| {
            Packet::Subscribe(Subscribe {
                packet_id,
                subscriptions,
                properties,
            })
        })
}

fn suback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let code = if protocol.is_v5() {
        reason_code_in(PacketType::SubAck).boxed()
    } else {
        select(vec![0x00, 0x01, 0x02, 0x80])
            .prop_map(ReasonCode)
            .boxed()
    };
    (
        packet_id(),
        vec(code, 1..6),
        at_level(protocol, ack_properties()),
    )
        .prop_map(|(packet_id, reason_codes, properties)| {
            Packet::SubAck(SubAck {
                packet_id,
                reason_codes,
                properties,
            })
        })
}

fn unsubscribe(protocol: Protocol) -> impl Strategy<Value = Packet> {
    (
        packet_id(),
        vec(mqtt_string(), 1..5),
        at_level(protocol, unsubscribe_properties()),
    )
        .prop_map(|(packet_id, filters, properties)| {
            Packet::Unsubscribe(Unsubscribe {
                packet_id,
                filters,
                properties,
            })
        })
}

fn unsuback(protocol: Protocol) -> impl Strategy<Value = Packet> {
    // MQTT 3.x UNSUBACK has no reason codes; MQTT 5 has one per filter, at least one.
    let codes = if protocol.is_v5() {
        vec(reason_code_in(PacketType::UnsubAck), 1..6).boxed()
    } else {
        Just(Vec::new()).boxed()
    };
    (packet_id(), codes, at_level(protocol, ack_properties())).prop_map(
        |(packet_id, reason_codes, properties)| {
            Packet::UnsubAck(UnsubAck {
                packet_id,
                reason_codes,
                properties,
            })
        },
    )
}

fn disconnect(protocol: Protocol) -> impl Strategy<Value = Packet> {
    let code = if protocol.is_v5() {
        reason_code_in(PacketType::Disconnect).boxed()
    } else {
        Just(ReasonCode::NORMAL_DISCONNECTION).boxed()
    };
    (code, at_level(protocol, disconnect_properties())).prop_map(|(reason_code, properties)| {
        Packet::Disconnect(Disconnect {
            reason_code,
            properties,
        })
    })
}

/// AUTH: the empty Success form, or a code with an Authentication Method.
fn auth() -> impl Strategy<Value = Packet> {
    let full = (
        reason_code_in(PacketType::Auth),
        mqtt_string(),
        option::of(binary(12)),
        option::of(mqtt_string()),
        user_properties(),
    )
        .prop_map(|(reason_code, method, data, reason, user)| {
            Packet::Auth(Auth {
                reason_code,
                properties: AuthProperties {
                    authentication_method: Some(method),
                    authentication_data: data,
                    reason_string: reason,
                    user_properties: user.into(),
                },
            })
        });
    prop_oneof![1 => Just(Packet::Auth(Auth::default())), 4 => full]
}

/// Any valid packet this protocol level can express.
fn packet(protocol: Protocol) -> BoxedStrategy<Packet> {
    let acks = prop_oneof![
        ack_parts(protocol, PacketType::PubAck).prop_map(|(packet_id, reason_code, properties)| {
            Packet::PubAck(PubAck {
                packet_id,
                reason_code,
                properties,
            })
        }),
        ack_parts(protocol, PacketType::PubRec).prop_map(|(packet_id, reason_code, properties)| {
            Packet::PubRec(PubRec {
                packet_id,
                reason_code,
                properties,
            })
        }),
        ack_parts(protocol, PacketType::PubRel).prop_map(|(packet_id, reason_code, properties)| {
            Packet::PubRel(PubRel {
                packet_id,
                reason_code,
                properties,
            })
        }),
        ack_parts(protocol, PacketType::PubComp).prop_map(
            |(packet_id, reason_code, properties)| {
                Packet::PubComp(PubComp {
                    packet_id,
                    reason_code,
                    properties,
                })
            }
        ),
    ];
    let others = prop_oneof![
        connect(protocol),
        connack(protocol),
        publish(protocol),
        publish(protocol),
        acks.clone(),
        acks,
        subscribe(protocol),
        suback(protocol),
        unsubscribe(protocol),
        unsuback(protocol),
        Just(Packet::PingReq),
        Just(Packet::PingResp),
        disconnect(protocol),
    ];
    if protocol.is_v5() {
        prop_oneof![12 => others, 1 => auth()].boxed()
    } else {
        others.boxed()
    }
}

fn level() -> impl Strategy<Value = Protocol> {
    select(LEVELS.to_vec())
}

// ---------------------------------------------------------------------------------------------
// Checks.
// ---------------------------------------------------------------------------------------------

fn encode(packet: &Packet, protocol: Protocol) -> BytesMut {
    let mut wire = BytesMut::new();
    packet
        .encode(protocol, &mut wire)
        .unwrap_or_else(|e| panic!("encode {packet:?}: {e}"));
    assert_eq!(
        wire.len(),
        packet.encoded_len(protocol),
        "encoded_len of {packet:?}"
    );
    wire
}

/// `splits` picks, from the encoded length, the points at which to split the bytes.
fn check_roundtrip(protocol: Protocol, packet: &Packet, splits: impl Fn(usize) -> Vec<usize>) {
    let wire = encode(packet, protocol);
    let context = DecodeContext::new(protocol);

    // Whole.
    let mut input = wire.clone();
    let decoded = decode(&mut input, &context).unwrap();
    assert_eq!(
        decoded.as_ref(),
        Some(packet),
        "{protocol}: {:02X?}",
        &wire[..]
    );
    assert!(
        input.is_empty(),
        "{protocol}: {} bytes left over",
        input.len()
    );

    // Split: the first part is not a packet yet, and stays in the buffer.
    for at in splits(wire.len()) {
        let mut input = BytesMut::from(&wire[..at]);
        assert_eq!(
            decode(&mut input, &context).unwrap(),
            None,
            "{protocol}: first {at} bytes"
        );
        assert_eq!(
            input.len(),
            at,
            "an incomplete packet is left in the buffer"
        );
        input.extend_from_slice(&wire[at..]);
        assert_eq!(
            decode(&mut input, &context).unwrap().as_ref(),
            Some(packet),
            "split at {at}"
        );
        assert!(input.is_empty());
    }

    // The size limit counts the fixed header: exactly the packet size passes, one byte less not.
    let size = u32::try_from(wire.len()).unwrap();
    let exact = context.with_maximum_packet_size(size);
    assert_eq!(
        decode(&mut wire.clone(), &exact).unwrap().as_ref(),
        Some(packet)
    );
    let below = context.with_maximum_packet_size(size - 1);
    assert!(
        matches!(
            decode(&mut wire.clone(), &below),
            Err(DecodeError::PacketTooLarge { .. })
        ),
        "{protocol}: limit {} accepted a {size}-byte packet",
        size - 1
    );
}

/// Decodes `data` at `protocol` with limit `maximum` until it needs more bytes or fails; never
/// panics. Each call gets a fresh buffer of capacity `max(maximum, remaining input)`: a decoder
/// that reserved more than the maximum packet size would grow it. (A buffer with less room may
/// legitimately grow past `max(initial capacity, maximum)`, because `BytesMut::reserve` doubles
/// the allocation; that case gets the looser bound below.) Every decoded packet must re-encode,
/// to the same packet.
fn check_arbitrary(protocol: Protocol, data: &[u8], maximum: u32) {
    let context = DecodeContext::new(protocol).with_maximum_packet_size(maximum);
    let mut rest = data.to_vec();
    loop {
        // A tight buffer (capacity = input length) may grow, but only towards the packet size,
        // which is at most `maximum`: `Vec`'s amortized growth gives max(2 * capacity, needed, 8).
        let mut tight = BytesMut::from(&rest[..]);
        let initial = tight.capacity();
        let _ = decode(&mut tight, &context);
        let bound = (2 * initial).max(maximum as usize).max(8);
        assert!(
            tight.capacity() <= bound,
            "{protocol}: capacity grew from {initial} to {} (limit {maximum}) on {rest:02X?}",
            tight.capacity()
        );

        // A roomy buffer (capacity >= maximum) must not grow at all.
        let mut buf = BytesMut::with_capacity(rest.len().max(maximum as usize));
        buf.extend_from_slice(&rest);
        let capacity = buf.capacity();
        let result = decode(&mut buf, &context);
        assert!(
            buf.capacity() <= capacity,
            "{protocol}: capacity grew from {capacity} to {} (limit {maximum}) on {rest:02X?}",
            buf.capacity()
        );
        match result {
            Ok(Some(packet)) => {
                let consumed = rest.len() - buf.len();
                assert!(
                    consumed <= maximum as usize,
                    "a {consumed}-byte packet above {maximum}"
                );
                let mut wire = BytesMut::new();
                packet.encode(protocol, &mut wire).unwrap_or_else(|e| {
                    panic!("{protocol}: decoded {packet:?} from {rest:02X?} does not encode: {e}")
                });
                assert_eq!(wire.len(), packet.encoded_len(protocol));
                let again = decode(&mut wire, &DecodeContext::new(protocol)).unwrap_or_else(|e| {
                    panic!("{protocol}: re-encoded {packet:?} does not decode: {e}")
                });
                assert_eq!(
                    again.as_ref(),
                    Some(&packet),
                    "{protocol}: from {rest:02X?}"
                );
                assert!(wire.is_empty());
                rest = buf.to_vec();
            }
            Ok(None) => {
                assert_eq!(&buf[..], &rest[..], "Ok(None) must not consume input");
                // Once the fixed header is in, room for the whole packet is reserved.
                if let Ok(Some(header)) = FixedHeader::parse(&rest, protocol) {
                    assert!(header.packet_size() <= maximum as usize);
                    assert!(buf.capacity() >= header.packet_size());
                }
                break;
            }
            Err(_) => break,
        }
    }
}

/// A first byte that passes the fixed-header checks at some level, so the body gets parsed.
fn valid_first_byte() -> impl Strategy<Value = u8> {
    let mut bytes = vec![
        0x10, 0x20, 0x40, 0x50, 0x62, 0x70, 0x82, 0x90, 0xA2, 0xB0, 0xC0, 0xD0,
    ];
    bytes.extend([0xE0, 0xF0, 0x6A, 0x8A, 0xAA]);
    bytes.extend(0x30..=0x3F);
    select(bytes)
}

/// Input that looks like a packet: a plausible first byte, a correct Remaining Length or a random
/// one, and a random body.
fn framed_garbage() -> impl Strategy<Value = Vec<u8>> {
    (
        valid_first_byte(),
        vec(any::<u8>(), 0..256),
        any::<bool>(),
        vec(any::<u8>(), 0..4),
    )
        .prop_map(|(first, body, exact_length, random_length)| {
            let mut data = vec![first];
            if exact_length {
                let mut len = body.len();
                loop {
                    let byte = (len & 0x7F) as u8;
                    len >>= 7;
                    data.push(if len > 0 { byte | 0x80 } else { byte });
                    if len == 0 {
                        break;
                    }
                }
            } else {
                data.extend(random_length);
            }
            data.extend(body);
            data
        })
}

/// A valid packet's bytes with a few bytes overwritten and possibly cut short.
fn mutated_packet() -> impl Strategy<Value = (Protocol, Vec<u8>)> {
    level()
        .prop_flat_map(|protocol| {
            (
                Just(protocol),
                packet(protocol),
                vec((any::<Index>(), any::<u8>()), 1..3),
                prop_oneof![3 => Just(0usize), 1 => 1..4usize],
            )
        })
        .prop_map(|(protocol, packet, mutations, cut)| {
            let mut data = encode(&packet, protocol).to_vec();
            for (index, byte) in mutations {
                // Mostly the body: a changed first byte is refused at once.
                let at = index.index(data.len());
                data[at] = if at == 0 && byte % 4 != 0 {
                    data[0]
                } else {
                    byte
                };
            }
            data.truncate(data.len().saturating_sub(cut));
            (protocol, data)
        })
}

fn maximum_packet_size() -> impl Strategy<Value = u32> {
    // Up to 1 MiB: the roomy buffers of `check_arbitrary` are allocated at this size.
    prop_oneof![
        0..600u32,
        select(vec![2u32, 5, 127, 128, 129, 16_384]),
        600..=1u32 << 20
    ]
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(config())]

    #[test]
    fn roundtrip_v3_1(packet in packet(Protocol::V3_1), split in any::<Index>()) {
        check_roundtrip(Protocol::V3_1, &packet, |len| vec![split.index(len)]);
    }

    #[test]
    fn roundtrip_v3_1_1(packet in packet(Protocol::V3_1_1), split in any::<Index>()) {
        check_roundtrip(Protocol::V3_1_1, &packet, |len| vec![split.index(len)]);
    }

    #[test]
    fn roundtrip_v5(packet in packet(Protocol::V5), split in any::<Index>()) {
        check_roundtrip(Protocol::V5, &packet, |len| vec![split.index(len)]);
    }

    /// A PUBLISH written as its head then its payload (a vectored write) is the same bytes as
    /// the packet encoded whole.
    #[test]
    fn publish_head_then_payload_is_the_whole_packet(
        (protocol, packet) in level().prop_flat_map(|p| (Just(p), publish(p))),
    ) {
        let Packet::Publish(publish) = &packet else {
            unreachable!("the strategy makes PUBLISH packets");
        };
        let mut head = BytesMut::from(&b"before"[..]);
        publish.as_ref().encode_head(protocol, &mut head).unwrap();
        head.extend_from_slice(&publish.payload);
        let mut whole = BytesMut::from(&b"before"[..]);
        publish.encode(protocol, &mut whole).unwrap();
        prop_assert_eq!(head, whole);
    }

}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn arbitrary_bytes_never_panic(data in vec(any::<u8>(), 0..512), maximum in maximum_packet_size()) {
        for protocol in LEVELS {
            check_arbitrary(protocol, &data, maximum);
        }
    }

    #[test]
    fn framed_garbage_never_panics(data in framed_garbage(), maximum in maximum_packet_size()) {
        for protocol in LEVELS {
            check_arbitrary(protocol, &data, maximum);
        }
    }

    #[test]
    fn mutated_packets_never_panic(
        (protocol, data) in mutated_packet(),
        // Mostly a limit the packet fits in, so that the body gets parsed.
        maximum in prop_oneof![3 => Just(65_536u32), 1 => maximum_packet_size()],
    ) {
        check_arbitrary(protocol, &data, maximum);
    }

}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn concatenated_packets_decode_in_order(
        (protocol, packets) in level().prop_flat_map(|p| (Just(p), vec(packet(p), 1..6))),
        chunk in 1..16usize,
    ) {
        let mut wire = BytesMut::new();
        for packet in &packets {
            wire.extend_from_slice(&encode(packet, protocol));
        }
        let context = DecodeContext::new(protocol);

        // All at once.
        let mut input = wire.clone();
        for packet in &packets {
            let decoded = decode(&mut input, &context).unwrap();
            prop_assert_eq!(decoded.as_ref(), Some(packet));
        }
        prop_assert_eq!(decode(&mut input, &context).unwrap(), None);
        prop_assert!(input.is_empty());

        // In chunks of `chunk` bytes, decoding whatever is complete after each.
        let mut input = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(chunk) {
            input.extend_from_slice(piece);
            while let Some(packet) = decode(&mut input, &context).unwrap() {
                decoded.push(packet);
            }
        }
        prop_assert_eq!(&decoded, &packets);
        prop_assert!(input.is_empty());
    }
}

/// Boundary values the strategies reach only by luck: every Variable Byte Integer size of the
/// Subscription Identifier, a 2-byte Remaining Length, long strings, the largest packet id.
#[test]
fn boundary_examples_roundtrip() {
    let long = MqttString::new("\u{e9}".repeat(20_000)).unwrap();
    for protocol in LEVELS {
        let mut publish = Publish::new(MqttString::from_static("a/b"), vec![0u8; 300]);
        publish.qos = QoS::ExactlyOnce;
        publish.packet_id = PacketId::new(u16::MAX);
        let mut subscribe = Subscribe::new(
            PacketId::MIN,
            vec![Subscription::new(long.clone(), QoS::ExactlyOnce)],
        );
        if protocol.is_v5() {
            publish.properties.subscription_identifiers = [
                1,
                127,
                128,
                16_383,
                16_384,
                2_097_151,
                2_097_152,
                VARIABLE_BYTE_INTEGER_MAX,
            ]
            .into_iter()
            .map(|id| NonZeroU32::new(id).unwrap())
            .collect();
            subscribe.properties.subscription_identifier =
                NonZeroU32::new(VARIABLE_BYTE_INTEGER_MAX);
        }
        let packets = [
            Packet::Publish(publish),
            Packet::Subscribe(subscribe),
            Packet::Unsubscribe(Unsubscribe::new(
                PacketId::MIN,
                vec![long.clone(), long.clone()],
            )),
            Packet::PingReq,
        ];
        for packet in &packets {
            check_roundtrip(protocol, packet, |len| {
                let mut splits = vec![0, 1, 2, 3, 4, 5, len / 2, len - 1];
                splits.retain(|&at| at < len);
                splits
            });
        }
    }
}

/// A PUBLISH head that cannot be encoded (QoS 1 without a packet identifier) leaves the buffer
/// as it was.
#[test]
fn publish_head_error_leaves_the_buffer_unchanged() {
    let mut publish = Publish::new(MqttString::new("a/b").unwrap(), vec![1u8; 2048]);
    publish.qos = QoS::AtLeastOnce;
    let mut out = BytesMut::from(&b"kept"[..]);
    assert!(
        publish
            .as_ref()
            .encode_head(Protocol::V5, &mut out)
            .is_err()
    );
    assert_eq!(&out[..], b"kept");
}
