//! An inbound PUBLISH (§3.3): the rules checked before it is routed (Maximum QoS, Retain
//! Available, Subscription Identifiers, Topic Aliases, the UTF-8 payload promise), the QoS 2
//! duplicate and Receive Maximum rules, and the code its acknowledgement carries.

use mqtt_packets::{PacketId, PayloadFormatIndicator, Protocol, Publish, QoS, ReasonCode};

use crate::Capabilities;
use crate::alias::InboundAliases;
use crate::close::{ConnectionError, LimitExceeded, Violation};
use crate::server::PublishOutcome;
use crate::session::Ack;

/// What to do with a PUBLISH that broke no rule ending the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Route it.
    Route,
    /// Do not route it: its payload is not the UTF-8 it claims to be [MQTT-3.3.2-4]. A QoS 1
    /// or 2 PUBLISH is refused in its acknowledgement with this code; QoS 0 is dropped.
    Refuse(ReasonCode),
}

/// Checks `publish` against the server's capabilities, in the spec's order, and resolves its
/// Topic Alias against the connection's `aliases` (recording a new one). `Err` ends the
/// connection.
pub(crate) fn admit(
    publish: &mut Publish,
    protocol: Protocol,
    caps: &Capabilities,
    aliases: &mut Option<Box<InboundAliases>>,
) -> Result<Admission, ConnectionError> {
    if publish.qos > caps.maximum_qos {
        // [MQTT-3.2.2-11]
        return Err(Violation::QosNotSupported.into());
    }
    if publish.retain && !caps.retain_available {
        // [MQTT-3.2.2-14]
        return Err(Violation::RetainNotSupported.into());
    }
    if !publish.properties.subscription_identifiers.is_empty() {
        // [MQTT-3.3.4-6]
        return Err(Violation::SubscriptionIdentifierInPublish.into());
    }
    if let Some(alias) = publish.properties.topic_alias {
        // Topic aliases [MQTT-3.3.2-9] [MQTT-3.3.2-12] (§3.3.4).
        if alias.get() > caps.topic_alias_maximum {
            return Err(Violation::TopicAliasAboveMaximum.into());
        }
        if publish.topic.is_empty() {
            match aliases
                .as_ref()
                .and_then(|aliases| aliases.get(alias.get()))
            {
                Some(topic) => publish.topic = topic.clone(),
                None => return Err(Violation::UnknownTopicAlias.into()),
            }
        } else if mqtt_topics::validate_topic_name(publish.topic.as_str(), &caps.topic_rules)
            .is_ok()
        {
            // Only a valid topic is kept for the connection: an invalid one is refused by the
            // router like any PUBLISH to it, and sets no alias.
            let kept = aliases.get_or_insert_with(Box::default).set(
                alias.get(),
                &publish.topic,
                caps.maximum_topic_alias_bytes,
            );
            if !kept {
                return Err(LimitExceeded::TopicAliasBytes.into());
            }
        }
    }
    if caps.validate_utf8_payload
        && publish.properties.payload_format_indicator == Some(PayloadFormatIndicator::Utf8)
        && std::str::from_utf8(&publish.payload).is_err()
    {
        let code = if protocol.is_v5() {
            ReasonCode::PAYLOAD_FORMAT_INVALID
        } else {
            ReasonCode::SUCCESS
        };
        return Ok(Admission::Refuse(code));
    }
    Ok(Admission::Route)
}

/// A QoS 2 PUBLISH against the ids the session has received and not yet released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Qos2 {
    /// A new message: route it.
    New,
    /// A resend before PUBREL: acknowledge again, deliver once [MQTT-4.3.3-9].
    Duplicate,
    /// One more than the server's Receive Maximum [MQTT-3.3.4-7].
    OverReceiveMaximum,
}

/// Classifies a QoS 2 PUBLISH with packet identifier `id`.
pub(crate) fn qos2(received: &foldhash::HashSet<u16>, id: PacketId, receive_maximum: u16) -> Qos2 {
    if received.contains(&id.get()) {
        Qos2::Duplicate
    } else if received.len() >= usize::from(receive_maximum) {
        Qos2::OverReceiveMaximum
    } else {
        Qos2::New
    }
}

/// The code of the acknowledgement of a routed PUBLISH. 3.x has no way to refuse one: it is
/// acknowledged and dropped ([MQTT-3.3.5-2] of 3.1.1).
pub(crate) fn ack_code(outcome: PublishOutcome, protocol: Protocol) -> ReasonCode {
    let v5 = protocol.is_v5();
    match outcome {
        PublishOutcome::Delivered(0) if v5 => ReasonCode::NO_MATCHING_SUBSCRIBERS,
        PublishOutcome::NotRetained if v5 => ReasonCode::QUOTA_EXCEEDED,
        PublishOutcome::Refused(code) if v5 => code,
        PublishOutcome::Delivered(_)
        | PublishOutcome::Ignored
        | PublishOutcome::NotRetained
        | PublishOutcome::Refused(_) => ReasonCode::SUCCESS,
    }
}

/// The acknowledgement of a QoS 1 (PUBACK) or QoS 2 (PUBREC) PUBLISH.
pub(crate) fn ack(qos: QoS, id: PacketId, code: ReasonCode) -> Ack {
    if qos == QoS::AtLeastOnce {
        Ack::puback(id, code)
    } else {
        Ack::pubrec(id, code)
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // Each test lists its changes to the defaults.
mod tests {
    use std::num::{NonZeroU16, NonZeroU32};

    use bytes::Bytes;
    use mqtt_packets::MqttString;

    use super::*;

    fn publish(topic: &'static str, qos: QoS) -> Publish {
        let mut publish = Publish::new(MqttString::from_static(topic), Bytes::from_static(b"x"));
        publish.qos = qos;
        publish.packet_id = (qos > QoS::AtMostOnce).then(|| PacketId::new(1)).flatten();
        publish
    }

    fn check(publish: &mut Publish, caps: &Capabilities) -> Result<Admission, ConnectionError> {
        admit(publish, Protocol::V5, caps, &mut None)
    }

    fn violation(result: Result<Admission, ConnectionError>) -> Option<Violation> {
        match result {
            Err(ConnectionError::Protocol(violation)) => Some(violation),
            _ => None,
        }
    }

    #[test]
    fn capabilities_the_server_does_not_offer_end_the_connection() {
        let mut caps = Capabilities::default();
        caps.maximum_qos = QoS::AtLeastOnce;
        caps.retain_available = false;
        assert_eq!(
            violation(check(&mut publish("t", QoS::ExactlyOnce), &caps)),
            Some(Violation::QosNotSupported),
            "[MQTT-3.2.2-11]"
        );
        let mut retained = publish("t", QoS::AtMostOnce);
        retained.retain = true;
        assert_eq!(
            violation(check(&mut retained, &caps)),
            Some(Violation::RetainNotSupported),
            "[MQTT-3.2.2-14]"
        );
        let mut identified = publish("t", QoS::AtMostOnce);
        identified.properties.subscription_identifiers = vec![NonZeroU32::new(1).unwrap()];
        assert_eq!(
            violation(check(&mut identified, &caps)),
            Some(Violation::SubscriptionIdentifierInPublish),
            "[MQTT-3.3.4-6]"
        );
        assert_eq!(
            check(&mut publish("t", QoS::AtLeastOnce), &caps).ok(),
            Some(Admission::Route)
        );
    }

    #[test]
    fn topic_aliases_are_set_resolved_and_bounded() {
        let mut caps = Capabilities::default();
        caps.topic_alias_maximum = 2;
        caps.maximum_topic_alias_bytes = 8;
        let mut aliases = None;
        let alias = |n: u16| NonZeroU16::new(n);

        let mut set = publish("a/b", QoS::AtMostOnce);
        set.properties.topic_alias = alias(1);
        assert!(admit(&mut set, Protocol::V5, &caps, &mut aliases).is_ok());
        let mut used = publish("", QoS::AtMostOnce);
        used.properties.topic_alias = alias(1);
        assert!(admit(&mut used, Protocol::V5, &caps, &mut aliases).is_ok());
        assert_eq!(used.topic.as_str(), "a/b");

        let mut unknown = publish("", QoS::AtMostOnce);
        unknown.properties.topic_alias = alias(2);
        assert_eq!(
            violation(admit(&mut unknown, Protocol::V5, &caps, &mut aliases)),
            Some(Violation::UnknownTopicAlias)
        );
        let mut above = publish("a/b", QoS::AtMostOnce);
        above.properties.topic_alias = alias(3);
        assert_eq!(
            violation(admit(&mut above, Protocol::V5, &caps, &mut aliases)),
            Some(Violation::TopicAliasAboveMaximum),
            "[MQTT-3.3.2-9]"
        );
        // An invalid topic sets no alias (the router refuses the PUBLISH).
        let mut invalid = publish("a/+", QoS::AtMostOnce);
        invalid.properties.topic_alias = alias(2);
        assert!(admit(&mut invalid, Protocol::V5, &caps, &mut aliases).is_ok());
        assert!(aliases.as_ref().unwrap().get(2).is_none());
        // Beyond the byte limit (audit H1).
        let mut long = publish("a/very/long/topic", QoS::AtMostOnce);
        long.properties.topic_alias = alias(2);
        assert!(matches!(
            admit(&mut long, Protocol::V5, &caps, &mut aliases),
            Err(ConnectionError::Limit(LimitExceeded::TopicAliasBytes))
        ));
    }

    #[test]
    fn a_payload_that_is_not_the_utf8_it_claims_is_refused_in_the_ack_mqtt_3_3_2_4() {
        let mut caps = Capabilities::default();
        caps.validate_utf8_payload = true;
        let mut bad = publish("t", QoS::AtLeastOnce);
        bad.payload = Bytes::from_static(&[0xFF]);
        bad.properties.payload_format_indicator = Some(PayloadFormatIndicator::Utf8);
        assert_eq!(
            admit(&mut bad.clone(), Protocol::V5, &caps, &mut None).ok(),
            Some(Admission::Refuse(ReasonCode::PAYLOAD_FORMAT_INVALID))
        );
        assert_eq!(
            admit(&mut bad.clone(), Protocol::V3_1_1, &caps, &mut None).ok(),
            Some(Admission::Refuse(ReasonCode::SUCCESS))
        );
        caps.validate_utf8_payload = false;
        assert_eq!(
            admit(&mut bad, Protocol::V5, &caps, &mut None).ok(),
            Some(Admission::Route)
        );
    }

    #[test]
    fn qos2_duplicates_and_receive_maximum() {
        let mut received = foldhash::HashSet::default();
        let id = |n: u16| PacketId::new(n).unwrap();
        assert_eq!(qos2(&received, id(1), 2), Qos2::New);
        received.insert(1);
        assert_eq!(qos2(&received, id(1), 2), Qos2::Duplicate, "[MQTT-4.3.3-9]");
        received.insert(2);
        assert_eq!(
            qos2(&received, id(3), 2),
            Qos2::OverReceiveMaximum,
            "[MQTT-3.3.4-7]"
        );
    }

    #[test]
    fn ack_codes_per_protocol() {
        let v5 = Protocol::V5;
        let v3 = Protocol::V3_1_1;
        assert_eq!(
            ack_code(PublishOutcome::Delivered(0), v5),
            ReasonCode::NO_MATCHING_SUBSCRIBERS
        );
        assert_eq!(
            ack_code(PublishOutcome::Delivered(0), v3),
            ReasonCode::SUCCESS
        );
        assert_eq!(
            ack_code(PublishOutcome::Delivered(3), v5),
            ReasonCode::SUCCESS
        );
        assert_eq!(ack_code(PublishOutcome::Ignored, v5), ReasonCode::SUCCESS);
        assert_eq!(
            ack_code(PublishOutcome::NotRetained, v5),
            ReasonCode::QUOTA_EXCEEDED
        );
        assert_eq!(
            ack_code(PublishOutcome::NotRetained, v3),
            ReasonCode::SUCCESS
        );
        let refused = PublishOutcome::Refused(ReasonCode::NOT_AUTHORIZED);
        assert_eq!(ack_code(refused, v5), ReasonCode::NOT_AUTHORIZED);
        assert_eq!(ack_code(refused, v3), ReasonCode::SUCCESS, "[MQTT-3.3.5-2]");
    }
}
