//! CONNECT and CONNACK (§3.1, §3.2): which CONNECT is refused before anyone is asked about it,
//! what the client asked for and gets (Session Expiry, Keep Alive, its limits), and the
//! CONNACK that advertises the server's capabilities as they are enforced [MQTT-3.2.0-1].

use std::num::{NonZeroU16, NonZeroU32};

use bytes::Bytes;
use mqtt_packets::{
    ConnAck, ConnAckProperties, Connect, MqttString, PayloadFormatIndicator, Protocol, QoS,
    ReasonCode,
};

use crate::Capabilities;
use crate::session::PeerLimits;

/// Checks a CONNECT against the server's capabilities: protocol level, client identifier and
/// Will. `Err` is the code of the refusing CONNACK.
pub(crate) fn validate(connect: &Connect, caps: &Capabilities) -> Result<(), ReasonCode> {
    if !caps.accepts(connect.protocol) {
        return Err(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
    }
    if !client_id_valid(connect) {
        return Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID);
    }
    let Some(will) = &connect.will else {
        return Ok(());
    };
    if will.qos > caps.maximum_qos {
        return Err(ReasonCode::QOS_NOT_SUPPORTED);
    }
    if will.retain && !caps.retain_available {
        return Err(ReasonCode::RETAIN_NOT_SUPPORTED);
    }
    if mqtt_topics::validate_topic_name(&will.topic, &caps.topic_rules).is_err() {
        return Err(ReasonCode::TOPIC_NAME_INVALID);
    }
    if caps.validate_utf8_payload
        && will.properties.payload_format_indicator == Some(PayloadFormatIndicator::Utf8)
        && std::str::from_utf8(&will.payload).is_err()
    {
        // §3.1.3.2.3
        return Err(ReasonCode::PAYLOAD_FORMAT_INVALID);
    }
    Ok(())
}

/// Client identifier rules: 3.1 wants 1 to 23 characters, 3.1.1 an identifier unless the
/// session is clean, v5 lets the server assign one [MQTT-3.1.3-6]. Ids of the inline client's
/// own subscriptions (`$inline…`) are reserved, and control characters (a newline, an escape
/// sequence) would let a client id forge or garble log lines (audit L8); the spec lets a server
/// refuse any id beyond `[0-9a-zA-Z]` [MQTT-3.1.3-5].
fn client_id_valid(connect: &Connect) -> bool {
    let id = connect.client_id.as_str();
    let empty = id.is_empty();
    let allowed = match connect.protocol {
        Protocol::V3_1 => !empty && id.chars().count() <= 23,
        Protocol::V3_1_1 => !empty || connect.clean_start,
        Protocol::V5 => true,
    };
    allowed && !id.starts_with("$inline") && !id.chars().any(char::is_control)
}

/// The Session Expiry Interval a client asked for, and the one it gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SessionExpiry {
    /// 3.x: 0 for a clean session, "never" (`u32::MAX`) for a persistent one; v5: as sent.
    pub(crate) requested: u32,
    /// Capped by `Capabilities::maximum_session_expiry_interval`.
    pub(crate) granted: u32,
}

/// The Session Expiry of a CONNECT.
pub(crate) fn session_expiry(connect: &Connect, caps: &Capabilities) -> SessionExpiry {
    let requested = if connect.protocol.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    };
    SessionExpiry {
        requested,
        granted: requested.min(caps.maximum_session_expiry_interval),
    }
}

/// The limits the client set for what the server sends it.
pub(crate) fn peer_limits(connect: &Connect, caps: &Capabilities) -> PeerLimits {
    let properties = &connect.properties;
    PeerLimits {
        window: usize::from(
            properties
                .receive_maximum
                .map_or(u16::MAX, NonZeroU16::get)
                .min(caps.maximum_inflight.max(1)),
        ),
        maximum_packet_size: properties
            .maximum_packet_size
            .map_or(u32::MAX, NonZeroU32::get),
        request_problem_information: properties.request_problem_information.unwrap_or(true),
        topic_alias_maximum: if connect.protocol.is_v5() {
            properties.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
    }
}

/// Server Keep Alive, which replaces the client's [MQTT-3.2.2-21]: the configured value, or the
/// maximum when the client asked for more (or for none). v5 only: 3.x clients cannot be told.
pub(crate) fn server_keep_alive(connect: &Connect, caps: &Capabilities) -> Option<u16> {
    if !connect.protocol.is_v5() {
        return None;
    }
    caps.server_keep_alive.or_else(|| {
        caps.maximum_keep_alive
            .filter(|&maximum| connect.keep_alive == 0 || connect.keep_alive > maximum)
    })
}

/// The Keep Alive in force: the server's when it sets one, else the client's.
pub(crate) fn keep_alive(connect: &Connect, caps: &Capabilities) -> u16 {
    server_keep_alive(connect, caps).unwrap_or(connect.keep_alive)
}

/// What the server decided about an accepted connection, for its CONNACK.
#[derive(Debug, Clone)]
pub(crate) struct Accepted<'a> {
    /// The client identifier in force.
    pub(crate) client_id: &'a str,
    /// Whether the server assigned `client_id` (the CONNECT had none).
    pub(crate) assigned: bool,
    /// Whether a session was resumed.
    pub(crate) session_present: bool,
    /// The Authentication Method and the last Authentication Data of enhanced authentication.
    pub(crate) authentication: Option<(MqttString, Option<Bytes>)>,
}

/// The CONNACK of an accepted connection.
pub(crate) fn connack(connect: &Connect, caps: &Capabilities, accepted: Accepted<'_>) -> ConnAck {
    let protocol = connect.protocol;
    let mut properties = ConnAckProperties::default();
    if protocol.is_v5() {
        let expiry = session_expiry(connect, caps);
        if expiry.granted != expiry.requested {
            properties.session_expiry_interval = Some(expiry.granted);
        }
        properties.receive_maximum = NonZeroU16::new(caps.receive_maximum);
        if caps.maximum_qos < QoS::ExactlyOnce {
            properties.maximum_qos = Some(caps.maximum_qos);
        }
        if !caps.retain_available {
            properties.retain_available = Some(false);
        }
        if caps.maximum_packet_size < mqtt_packets::PROTOCOL_MAXIMUM_PACKET_SIZE {
            properties.maximum_packet_size = NonZeroU32::new(caps.maximum_packet_size);
        }
        if accepted.assigned {
            properties.assigned_client_identifier =
                MqttString::new(accepted.client_id.to_owned()).ok();
        }
        if caps.topic_alias_maximum > 0 {
            properties.topic_alias_maximum = Some(caps.topic_alias_maximum);
        }
        if !caps.wildcard_subscription_available {
            properties.wildcard_subscription_available = Some(false);
        }
        if !caps.subscription_identifiers_available {
            properties.subscription_identifiers_available = Some(false);
        }
        if !caps.shared_subscription_available {
            properties.shared_subscription_available = Some(false);
        }
        properties.server_keep_alive = server_keep_alive(connect, caps);
        if let Some((method, data)) = accepted.authentication {
            properties.authentication_method = Some(method);
            properties.authentication_data = data;
        }
        // Response Information only when asked for [MQTT-3.1.2-28] (or forced by the
        // compatibility switch).
        let asked = connect.properties.request_response_information == Some(true)
            || caps.compatibilities.always_return_response_info;
        if asked && let Some(template) = &caps.response_information {
            properties.response_information =
                MqttString::new(template.replace("{client_id}", accepted.client_id)).ok();
        }
    }
    ConnAck {
        // 3.1 has no Session Present flag.
        session_present: accepted.session_present && protocol != Protocol::V3_1,
        reason_code: ReasonCode::SUCCESS,
        properties,
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default)] // Each test lists its changes to the defaults.
mod tests {
    use mqtt_packets::{Will, WillProperties};

    use super::*;

    fn connect(protocol: Protocol, client_id: &str) -> Connect {
        let mut connect = Connect::new(protocol, MqttString::new(client_id.to_owned()).unwrap());
        connect.clean_start = true;
        connect
    }

    fn will(topic: &str) -> Will {
        Will {
            topic: MqttString::new(topic.to_owned()).unwrap(),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: WillProperties::default(),
        }
    }

    #[test]
    fn refusals_have_the_codes_of_the_spec() {
        let caps = Capabilities::default();
        let mut strict = Capabilities::default();
        strict.minimum_protocol_version = 5;
        strict.maximum_qos = QoS::AtLeastOnce;
        strict.retain_available = false;
        let strict_v5 = strict_v5(&strict);
        let mut utf8 = Capabilities::default();
        utf8.validate_utf8_payload = true;

        let mut persistent_311_without_id = connect(Protocol::V3_1_1, "");
        persistent_311_without_id.clean_start = false;
        let mut qos2_will = connect(Protocol::V5, "c");
        qos2_will.will = Some(Will {
            qos: QoS::ExactlyOnce,
            ..will("w")
        });
        let mut retained_will = connect(Protocol::V5, "c");
        retained_will.will = Some(Will {
            retain: true,
            ..will("w")
        });
        let mut wildcard_will = connect(Protocol::V5, "c");
        wildcard_will.will = Some(will("w/#"));
        let mut bad_utf8_will = connect(Protocol::V5, "c");
        let mut invalid = will("w");
        invalid.payload = Bytes::from_static(&[0xC3, 0x28]);
        invalid.properties.payload_format_indicator = Some(PayloadFormatIndicator::Utf8);
        bad_utf8_will.will = Some(invalid);

        let cases: Vec<(&str, Connect, &Capabilities, Result<(), ReasonCode>)> = vec![
            ("v5 default", connect(Protocol::V5, "c"), &caps, Ok(())),
            (
                "v5 assigned id [MQTT-3.1.3-6]",
                connect(Protocol::V5, ""),
                &caps,
                Ok(()),
            ),
            (
                "below the minimum level",
                connect(Protocol::V3_1_1, "c"),
                &strict,
                Err(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            ),
            (
                "3.1 without id",
                connect(Protocol::V3_1, ""),
                &caps,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ),
            (
                "3.1 id of 24 characters",
                connect(Protocol::V3_1, &"x".repeat(24)),
                &caps,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ),
            (
                "3.1 id of 23",
                connect(Protocol::V3_1, &"x".repeat(23)),
                &caps,
                Ok(()),
            ),
            (
                "3.1.1 clean without id",
                connect(Protocol::V3_1_1, ""),
                &caps,
                Ok(()),
            ),
            (
                "3.1.1 persistent without id [MQTT-3.1.3-8]",
                persistent_311_without_id,
                &caps,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ),
            (
                "reserved $inline id",
                connect(Protocol::V5, "$inline-1"),
                &caps,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ),
            (
                "control character in id (audit L8)",
                connect(Protocol::V5, "a\nb"),
                &caps,
                Err(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            ),
            (
                "Will QoS above the maximum [MQTT-3.2.2-12]",
                qos2_will,
                &strict_v5,
                Err(ReasonCode::QOS_NOT_SUPPORTED),
            ),
            (
                "retained Will without retain [MQTT-3.2.2-13]",
                retained_will,
                &strict_v5,
                Err(ReasonCode::RETAIN_NOT_SUPPORTED),
            ),
            (
                "Will topic with a wildcard",
                wildcard_will,
                &caps,
                Err(ReasonCode::TOPIC_NAME_INVALID),
            ),
            (
                "Will payload not the UTF-8 it claims",
                bad_utf8_will.clone(),
                &utf8,
                Err(ReasonCode::PAYLOAD_FORMAT_INVALID),
            ),
            (
                "payloads unchecked unless asked",
                bad_utf8_will,
                &caps,
                Ok(()),
            ),
        ];
        for (name, connect, caps, expected) in cases {
            assert_eq!(validate(&connect, caps), expected, "{name}");
        }
    }

    /// `strict` without its protocol floor, to test the Will rules alone.
    fn strict_v5(strict: &Capabilities) -> Capabilities {
        let mut caps = strict.clone();
        caps.minimum_protocol_version = 3;
        caps
    }

    #[test]
    fn session_expiry_is_capped_and_3x_maps_clean_session() {
        let mut caps = Capabilities::default();
        caps.maximum_session_expiry_interval = 3600;
        let clean = connect(Protocol::V3_1_1, "c");
        assert_eq!(
            session_expiry(&clean, &caps),
            SessionExpiry {
                requested: 0,
                granted: 0
            }
        );
        let mut persistent = connect(Protocol::V3_1_1, "c");
        persistent.clean_start = false;
        assert_eq!(
            session_expiry(&persistent, &caps),
            SessionExpiry {
                requested: u32::MAX,
                granted: 3600
            }
        );
        let mut v5 = connect(Protocol::V5, "c");
        v5.properties.session_expiry_interval = Some(60);
        assert_eq!(session_expiry(&v5, &caps).granted, 60);
        v5.properties.session_expiry_interval = Some(7200);
        assert_eq!(session_expiry(&v5, &caps).granted, 3600);
        // The CONNACK says so when the server grants less (§3.2.2.3.2).
        let connack = connack(&v5, &caps, accepted("c"));
        assert_eq!(connack.properties.session_expiry_interval, Some(3600));
    }

    fn accepted(client_id: &str) -> Accepted<'_> {
        Accepted {
            client_id,
            assigned: false,
            session_present: false,
            authentication: None,
        }
    }

    #[test]
    fn peer_limits_come_from_the_connect_within_the_server_window() {
        let mut caps = Capabilities::default();
        caps.maximum_inflight = 100;
        let mut v5 = connect(Protocol::V5, "c");
        v5.properties.receive_maximum = NonZeroU16::new(10);
        v5.properties.maximum_packet_size = NonZeroU32::new(2048);
        v5.properties.request_problem_information = Some(false);
        v5.properties.topic_alias_maximum = Some(5);
        let limits = peer_limits(&v5, &caps);
        assert_eq!(limits.window, 10);
        assert_eq!(limits.maximum_packet_size, 2048);
        assert!(!limits.request_problem_information);
        assert_eq!(limits.topic_alias_maximum, 5);

        let v3 = connect(Protocol::V3_1_1, "c");
        let limits = peer_limits(&v3, &caps);
        assert_eq!(limits.window, 100);
        assert_eq!(limits.maximum_packet_size, u32::MAX);
        assert!(limits.request_problem_information);
        assert_eq!(limits.topic_alias_maximum, 0);
    }

    #[test]
    fn server_keep_alive_replaces_the_clients_mqtt_3_2_2_21() {
        let mut caps = Capabilities::default();
        caps.maximum_keep_alive = Some(60);
        let mut v5 = connect(Protocol::V5, "c");
        v5.keep_alive = 30;
        assert_eq!(server_keep_alive(&v5, &caps), None);
        assert_eq!(keep_alive(&v5, &caps), 30);
        v5.keep_alive = 0;
        assert_eq!(server_keep_alive(&v5, &caps), Some(60));
        v5.keep_alive = 600;
        assert_eq!(keep_alive(&v5, &caps), 60);
        // 3.x clients cannot be told: their own Keep Alive stays.
        let mut v3 = connect(Protocol::V3_1_1, "c");
        v3.keep_alive = 600;
        assert_eq!(keep_alive(&v3, &caps), 600);
        caps.server_keep_alive = Some(20);
        v5.keep_alive = 10;
        assert_eq!(keep_alive(&v5, &caps), 20);
    }

    #[test]
    fn connack_advertises_capabilities_as_enforced_mqtt_3_2_0_1() {
        let mut caps = Capabilities::default();
        caps.maximum_qos = QoS::AtLeastOnce;
        caps.retain_available = false;
        caps.wildcard_subscription_available = false;
        caps.response_information = Some("reply/{client_id}".into());
        let mut v5 = connect(Protocol::V5, "");
        v5.properties.request_response_information = Some(true);
        let mut accepted = accepted("gen-1");
        accepted.assigned = true;
        accepted.session_present = true;
        let connack = connack(&v5, &caps, accepted);
        let properties = &connack.properties;
        assert!(connack.session_present);
        assert_eq!(properties.maximum_qos, Some(QoS::AtLeastOnce));
        assert_eq!(properties.retain_available, Some(false));
        assert_eq!(properties.wildcard_subscription_available, Some(false));
        assert_eq!(properties.subscription_identifiers_available, None);
        assert_eq!(
            properties
                .assigned_client_identifier
                .as_ref()
                .map(MqttString::as_str),
            Some("gen-1")
        );
        assert_eq!(
            properties
                .response_information
                .as_ref()
                .map(MqttString::as_str),
            Some("reply/gen-1")
        );
        // Response Information only when asked for [MQTT-3.1.2-28].
        v5.properties.request_response_information = None;
        assert_eq!(
            super::connack(&v5, &caps, super::tests::accepted("gen-1"))
                .properties
                .response_information,
            None
        );
    }

    #[test]
    fn connack_of_3x_has_no_properties_and_3_1_no_session_present() {
        let caps = Capabilities::default();
        let mut accepted_present = accepted("c");
        accepted_present.session_present = true;
        let v311 = connack(
            &connect(Protocol::V3_1_1, "c"),
            &caps,
            accepted_present.clone(),
        );
        assert!(v311.session_present);
        assert_eq!(v311.properties, ConnAckProperties::default());
        let v31 = connack(&connect(Protocol::V3_1, "c"), &caps, accepted_present);
        assert!(!v31.session_present);
    }
}
