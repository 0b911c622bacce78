//! The versioned record model: what is stored under each key, and its conversion to and from
//! the broker's `Stored*` types.
//!
//! Every value starts with one version byte, followed by the record in `postcard` (a compact
//! serde format). A format change adds a version: old values stay readable through the old
//! structs, and a value of an unknown (newer) version is refused, not misread.

use bytes::Bytes;
use mqtt_broker::storage::{
    StoredClient, StoredFlow, StoredMessage, StoredSubscription, StoredSysInfo,
};
use mqtt_packets::{
    MqttString, PayloadFormatIndicator, Protocol, PublishProperties, QoS, RetainHandling,
    SubscriptionOptions, UserProperty, Will, WillProperties,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// The version byte of the records this crate writes.
pub const RECORD_VERSION: u8 = 1;

/// Why a stored value could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The value is empty.
    #[error("empty value")]
    Empty,
    /// The value was written by a newer version of the broker.
    #[error("record version {0} is not supported (this broker reads version {RECORD_VERSION})")]
    UnsupportedVersion(u8),
    /// The value does not decode.
    #[error("malformed record: {0}")]
    Malformed(String),
}

/// Encodes a record with its version byte.
pub(crate) fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![RECORD_VERSION];
    // Serializing plain structs into a Vec cannot fail; an error would leave only the version
    // byte, which decodes as malformed (and is then skipped) rather than misread.
    if let Ok(body) = postcard::to_stdvec(record) {
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes a record written by [`encode`].
pub(crate) fn decode<T: DeserializeOwned>(value: &[u8]) -> Result<T, RecordError> {
    let (&version, body) = value.split_first().ok_or(RecordError::Empty)?;
    if version != RECORD_VERSION {
        return Err(RecordError::UnsupportedVersion(version));
    }
    postcard::from_bytes(body).map_err(|error| RecordError::Malformed(error.to_string()))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserPropertyRecord {
    name: String,
    value: String,
}

fn user_properties(list: &[UserProperty]) -> Vec<UserPropertyRecord> {
    list.iter()
        .map(|p| UserPropertyRecord {
            name: p.name.as_str().to_string(),
            value: p.value.as_str().to_string(),
        })
        .collect()
}

fn user_properties_back(list: Vec<UserPropertyRecord>) -> Vec<UserProperty> {
    list.into_iter()
        .filter_map(|p| {
            Some(UserProperty::new(
                MqttString::new(p.name).ok()?,
                MqttString::new(p.value).ok()?,
            ))
        })
        .collect()
}

fn string(text: Option<&MqttString>) -> Option<String> {
    text.map(|t| t.as_str().to_string())
}

fn string_back(text: Option<String>) -> Option<MqttString> {
    text.and_then(|t| MqttString::new(t).ok())
}

fn qos_back(qos: u8) -> QoS {
    QoS::from_u8(qos).unwrap_or(QoS::AtLeastOnce)
}

fn utf8_back(utf8: Option<bool>) -> Option<PayloadFormatIndicator> {
    utf8.map(|utf8| {
        if utf8 {
            PayloadFormatIndicator::Utf8
        } else {
            PayloadFormatIndicator::Unspecified
        }
    })
}

/// The properties of an application message that are kept (the expiry is kept as a deadline,
/// Topic Alias and Subscription Identifiers are per delivery).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessagePropertiesRecord {
    utf8: Option<bool>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<Vec<u8>>,
    user_properties: Vec<UserPropertyRecord>,
}

impl MessagePropertiesRecord {
    fn from_publish(p: &PublishProperties) -> Self {
        Self {
            utf8: p
                .payload_format_indicator
                .map(|f| f == PayloadFormatIndicator::Utf8),
            content_type: string(p.content_type.as_ref()),
            response_topic: string(p.response_topic.as_ref()),
            correlation_data: p.correlation_data.as_ref().map(|d| d.to_vec()),
            user_properties: user_properties(&p.user_properties),
        }
    }

    fn to_publish(&self) -> PublishProperties {
        PublishProperties {
            payload_format_indicator: utf8_back(self.utf8),
            content_type: string_back(self.content_type.clone()),
            response_topic: string_back(self.response_topic.clone()),
            correlation_data: self.correlation_data.clone().map(Bytes::from),
            user_properties: user_properties_back(self.user_properties.clone()).into(),
            ..PublishProperties::default()
        }
    }
}

/// A Will.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WillRecord {
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    delay: Option<u32>,
    expiry: Option<u32>,
    properties: MessagePropertiesRecord,
}

impl WillRecord {
    fn from_will(will: &Will) -> Self {
        let p = &will.properties;
        Self {
            topic: will.topic.as_str().to_string(),
            payload: will.payload.to_vec(),
            qos: will.qos.as_u8(),
            retain: will.retain,
            delay: p.will_delay_interval,
            expiry: p.message_expiry_interval,
            properties: MessagePropertiesRecord {
                utf8: p
                    .payload_format_indicator
                    .map(|f| f == PayloadFormatIndicator::Utf8),
                content_type: string(p.content_type.as_ref()),
                response_topic: string(p.response_topic.as_ref()),
                correlation_data: p.correlation_data.as_ref().map(|d| d.to_vec()),
                user_properties: user_properties(&p.user_properties),
            },
        }
    }

    fn to_will(&self) -> Option<Will> {
        let properties = WillProperties {
            will_delay_interval: self.delay,
            message_expiry_interval: self.expiry,
            payload_format_indicator: utf8_back(self.properties.utf8),
            content_type: string_back(self.properties.content_type.clone()),
            response_topic: string_back(self.properties.response_topic.clone()),
            correlation_data: self.properties.correlation_data.clone().map(Bytes::from),
            user_properties: user_properties_back(self.properties.user_properties.clone()).into(),
        };
        Some(Will {
            topic: MqttString::new(self.topic.clone()).ok()?,
            payload: Bytes::from(self.payload.clone()),
            qos: qos_back(self.qos),
            retain: self.retain,
            properties,
        })
    }
}

/// A session (key `c`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    pub(crate) client_id: String,
    protocol_level: u8,
    session_expiry_interval: u32,
    username: Option<String>,
    expires_at_unix: Option<u64>,
    will: Option<WillRecord>,
}

impl ClientRecord {
    pub(crate) fn from_stored(c: &StoredClient) -> Self {
        Self {
            client_id: c.client_id.clone(),
            protocol_level: c.protocol.level(),
            session_expiry_interval: c.session_expiry_interval,
            username: c.username.clone(),
            expires_at_unix: c.expires_at_unix,
            will: c.will.as_ref().map(WillRecord::from_will),
        }
    }

    pub(crate) fn to_stored(&self) -> StoredClient {
        let protocol = match self.protocol_level {
            3 => Protocol::V3_1,
            4 => Protocol::V3_1_1,
            _ => Protocol::V5,
        };
        let mut c = StoredClient::new(
            self.client_id.clone(),
            protocol,
            self.session_expiry_interval,
        );
        c.username.clone_from(&self.username);
        c.expires_at_unix = self.expires_at_unix;
        c.will = self.will.as_ref().and_then(WillRecord::to_will);
        c
    }
}

/// A subscription (key `s`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SubscriptionRecord {
    client_id: String,
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    identifier: Option<u32>,
}

impl SubscriptionRecord {
    pub(crate) fn from_stored(s: &StoredSubscription) -> Self {
        Self {
            client_id: s.client_id.clone(),
            filter: s.filter.clone(),
            qos: s.options.maximum_qos.as_u8(),
            no_local: s.options.no_local,
            retain_as_published: s.options.retain_as_published,
            retain_handling: s.options.retain_handling as u8,
            identifier: s.identifier,
        }
    }

    pub(crate) fn to_stored(&self) -> StoredSubscription {
        let options = SubscriptionOptions {
            maximum_qos: QoS::from_u8(self.qos).unwrap_or(QoS::AtMostOnce),
            no_local: self.no_local,
            retain_as_published: self.retain_as_published,
            retain_handling: match self.retain_handling {
                1 => RetainHandling::SendIfNewSubscription,
                2 => RetainHandling::DoNotSend,
                _ => RetainHandling::SendAtSubscribe,
            },
        };
        let mut s = StoredSubscription::new(self.client_id.clone(), self.filter.clone(), options);
        s.identifier = self.identifier;
        s
    }
}

/// A message queued for a session (key `m`) or a retained message (key `r`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MessageRecord {
    client_id: Option<String>,
    seq: u64,
    topic: String,
    payload: Vec<u8>,
    qos: u8,
    retain: bool,
    expires_at_unix: Option<u64>,
    subscription_identifiers: Vec<u32>,
    properties: MessagePropertiesRecord,
}

impl MessageRecord {
    pub(crate) fn from_stored(m: &StoredMessage) -> Self {
        Self {
            client_id: m.client_id.clone(),
            seq: m.seq,
            topic: m.topic.as_str().to_string(),
            payload: m.payload.to_vec(),
            qos: m.qos.as_u8(),
            retain: m.retain,
            expires_at_unix: m.expires_at_unix,
            subscription_identifiers: m.subscription_identifiers.clone(),
            properties: MessagePropertiesRecord::from_publish(&m.properties),
        }
    }

    /// The stored message; `None` if its topic is not a valid MQTT string.
    pub(crate) fn to_stored(&self, flow: StoredFlow) -> Option<StoredMessage> {
        let mut m = StoredMessage::retained(
            MqttString::new(self.topic.clone()).ok()?,
            Bytes::from(self.payload.clone()),
            qos_back(self.qos),
        );
        m.client_id.clone_from(&self.client_id);
        m.seq = self.seq;
        m.flow = flow;
        m.retain = self.retain;
        m.expires_at_unix = self.expires_at_unix;
        m.subscription_identifiers
            .clone_from(&self.subscription_identifiers);
        m.properties = self.properties.to_publish();
        Some(m)
    }
}

/// Where a queued message stands in its QoS flow (key `f`; absent: queued).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum FlowRecord {
    Published(u16),
    Released(u16),
}

impl FlowRecord {
    pub(crate) fn from_stored(flow: StoredFlow) -> Option<Self> {
        match flow {
            StoredFlow::Queued => None,
            StoredFlow::Published(id) => Some(Self::Published(id)),
            StoredFlow::Released(id) => Some(Self::Released(id)),
        }
    }

    pub(crate) fn to_stored(self) -> StoredFlow {
        match self {
            Self::Published(id) => StoredFlow::Published(id),
            Self::Released(id) => StoredFlow::Released(id),
        }
    }
}

/// The `$SYS` counters (key `y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub(crate) struct SysRecord {
    messages_received: u64,
    messages_sent: u64,
    bytes_received: u64,
    bytes_sent: u64,
}

impl SysRecord {
    pub(crate) fn new(
        messages_received: u64,
        messages_sent: u64,
        bytes_received: u64,
        bytes_sent: u64,
    ) -> Self {
        Self {
            messages_received,
            messages_sent,
            bytes_received,
            bytes_sent,
        }
    }

    pub(crate) fn to_stored(self) -> StoredSysInfo {
        let mut s = StoredSysInfo::default();
        s.messages_received = self.messages_received;
        s.messages_sent = self.messages_sent;
        s.bytes_received = self.bytes_received;
        s.bytes_sent = self.bytes_sent;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_with_their_version() {
        let mut will = Will {
            topic: MqttString::from_static("w/t"),
            payload: Bytes::from_static(b"gone"),
            qos: QoS::AtLeastOnce,
            retain: true,
            properties: WillProperties::default(),
        };
        will.properties.will_delay_interval = Some(30);
        will.properties.user_properties = vec![UserProperty::new(
            MqttString::from_static("k"),
            MqttString::from_static("v"),
        )]
        .into();
        let mut client = StoredClient::new("c1", Protocol::V5, 3600);
        client.username = Some("alice".into());
        client.will = Some(will);
        client.expires_at_unix = Some(1_900_000_000);
        let record = ClientRecord::from_stored(&client);
        let bytes = encode(&record);
        assert_eq!(bytes.first(), Some(&RECORD_VERSION));
        let back: ClientRecord = decode(&bytes).unwrap();
        assert_eq!(back.to_stored(), client);

        let mut message = StoredMessage::retained(
            MqttString::from_static("a/b"),
            Bytes::from_static(b"x"),
            QoS::ExactlyOnce,
        );
        message.client_id = Some("c1".into());
        message.seq = 42;
        message.retain = false;
        message.subscription_identifiers = vec![7];
        message.properties.content_type = Some(MqttString::from_static("text/plain"));
        message.properties.correlation_data = Some(Bytes::from_static(b"corr"));
        let back: MessageRecord = decode(&encode(&MessageRecord::from_stored(&message))).unwrap();
        assert_eq!(back.to_stored(StoredFlow::Queued), Some(message));
    }

    #[test]
    fn unknown_versions_and_garbage_are_refused() {
        assert!(matches!(decode::<SysRecord>(&[]), Err(RecordError::Empty)));
        assert!(matches!(
            decode::<SysRecord>(&[9, 0]),
            Err(RecordError::UnsupportedVersion(9))
        ));
        assert!(matches!(
            decode::<ClientRecord>(&[RECORD_VERSION, 0xFF]),
            Err(RecordError::Malformed(_))
        ));
    }
}
