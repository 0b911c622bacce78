//! CONNECT (§3.1): the first packet of every connection, and the Will it may carry.

use bytes::{BufMut, Bytes, BytesMut};

use crate::data::{self, Reader};
use crate::packet::Body;
use crate::{
    ConnectProperties, DecodeError, EncodeError, Malformed, MqttString, PacketType, Protocol,
    ProtocolViolation, QoS, WillProperties, is_valid_topic_name, reject_wildcard_response_topic,
};

/// A CONNECT packet.
///
/// Unlike every other packet, CONNECT says its own protocol level: it is decoded whatever the
/// decode context says, and encoded at [`Connect::protocol`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol name and level the client speaks.
    pub protocol: Protocol,
    /// Clean Start (v5) or Clean Session (3.x).
    pub clean_start: bool,
    /// Keep Alive in seconds; 0 turns the keep-alive check off.
    pub keep_alive: u16,
    /// The Client Identifier; may be empty.
    pub client_id: MqttString,
    /// The Will Message, if the Will Flag is set.
    pub will: Option<Will>,
    /// The User Name, if the User Name Flag is set.
    pub username: Option<MqttString>,
    /// The Password, if the Password Flag is set.
    pub password: Option<Bytes>,
    /// CONNECT properties (MQTT 5 only; left out at lower levels).
    pub properties: ConnectProperties,
}

/// The Will Message of a CONNECT (§3.1.2.5, §3.1.3.2-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// The Will Topic: a topic name, non-empty and without wildcards [MQTT-3.1.3-11].
    pub topic: MqttString,
    /// The Will Payload.
    pub payload: Bytes,
    /// The Will QoS.
    pub qos: QoS,
    /// The Will Retain flag.
    pub retain: bool,
    /// Will properties (MQTT 5 only).
    pub properties: WillProperties,
}

impl Connect {
    /// A CONNECT with the given protocol and client identifier, clean start, keep alive 60 s,
    /// and nothing else.
    pub fn new(protocol: Protocol, client_id: MqttString) -> Self {
        Self {
            protocol,
            clean_start: true,
            keep_alive: 60,
            client_id,
            will: None,
            username: None,
            password: None,
            properties: ConnectProperties::default(),
        }
    }

    pub(crate) fn decode(mut reader: Reader) -> Result<Self, DecodeError> {
        let name = reader.binary("protocol name")?;
        let level = reader.u8("protocol level")?;
        let protocol = Protocol::from_name_and_level(&name, level).ok_or_else(|| {
            DecodeError::UnsupportedProtocol {
                name: String::from_utf8_lossy(&name).into_owned(),
                level,
            }
        })?;
        let flags = reader.u8("connect flags")?;
        if flags & 0x01 != 0 {
            return Err(Malformed::ConnectReservedFlag.into());
        }
        let clean_start = flags & 0x02 != 0;
        let will_flag = flags & 0x04 != 0;
        let will_qos_bits = (flags >> 3) & 0x03;
        let will_retain = flags & 0x20 != 0;
        let password_flag = flags & 0x40 != 0;
        let username_flag = flags & 0x80 != 0;
        if !will_flag && (will_qos_bits != 0 || will_retain) {
            return Err(Malformed::WillFlagsWithoutWill.into());
        }
        let will_qos =
            QoS::from_u8(will_qos_bits).ok_or(Malformed::InvalidQoS { field: "Will QoS" })?;
        if password_flag && !username_flag && !protocol.is_v5() {
            return Err(Malformed::PasswordWithoutUserName.into());
        }
        let keep_alive = reader.u16("keep alive")?;
        let properties = if protocol.is_v5() {
            ConnectProperties::decode(&mut reader)?
        } else {
            ConnectProperties::default()
        };
        if properties.authentication_data.is_some() && properties.authentication_method.is_none() {
            return Err(ProtocolViolation::AuthenticationDataWithoutMethod.into());
        }
        let client_id = reader.string("client identifier")?;
        let will = if will_flag {
            let properties = if protocol.is_v5() {
                WillProperties::decode(&mut reader)?
            } else {
                WillProperties::default()
            };
            let topic = reader.string("will topic")?;
            if !is_valid_topic_name(&topic) {
                return Err(ProtocolViolation::InvalidWillTopic {
                    topic: topic.to_string(),
                }
                .into());
            }
            reject_wildcard_response_topic(properties.response_topic.as_ref())?;
            let payload = reader.binary("will payload")?;
            Some(Will {
                topic,
                payload,
                qos: will_qos,
                retain: will_retain,
                properties,
            })
        } else {
            None
        };
        let username = if username_flag {
            Some(reader.string("user name")?)
        } else {
            None
        };
        let password = if password_flag {
            Some(reader.binary("password")?)
        } else {
            None
        };
        reader.finish()?;
        Ok(Self {
            protocol,
            clean_start,
            keep_alive,
            client_id,
            will,
            username,
            password,
            properties,
        })
    }
}

impl Body for Connect {
    fn packet_type(&self) -> PacketType {
        PacketType::Connect
    }

    fn body_len(&self, _: Protocol) -> usize {
        let v5 = self.protocol.is_v5();
        let mut len = 2 + self.protocol.name().len() + 1 + 1 + 2;
        if v5 {
            len += self.properties.block_len();
        }
        len += data::string_len(&self.client_id);
        if let Some(will) = &self.will {
            if v5 {
                len += will.properties.block_len();
            }
            len += data::string_len(&will.topic) + data::binary_len(&will.payload);
        }
        len += self.username.as_ref().map_or(0, data::string_len);
        len += self
            .password
            .as_ref()
            .map_or(0, |password| data::binary_len(password));
        len
    }

    fn encode_body(&self, _: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        let protocol = self.protocol;
        if self.password.is_some() && self.username.is_none() && !protocol.is_v5() {
            return Err(EncodeError::NotInProtocol {
                packet: PacketType::Connect,
                protocol,
                why: "a password without a user name",
            });
        }
        data::put_binary(out, protocol.name().as_bytes(), "protocol name")?;
        out.put_u8(protocol.level());
        let mut flags = 0u8;
        if self.clean_start {
            flags |= 0x02;
        }
        if let Some(will) = &self.will {
            flags |= 0x04 | (will.qos.as_u8() << 3);
            if will.retain {
                flags |= 0x20;
            }
        }
        if self.password.is_some() {
            flags |= 0x40;
        }
        if self.username.is_some() {
            flags |= 0x80;
        }
        out.put_u8(flags);
        out.put_u16(self.keep_alive);
        if protocol.is_v5() {
            self.properties.encode(out)?;
        }
        data::put_string(out, &self.client_id, "client identifier")?;
        if let Some(will) = &self.will {
            if protocol.is_v5() {
                will.properties.encode(out)?;
            }
            data::put_string(out, &will.topic, "will topic")?;
            data::put_binary(out, &will.payload, "will payload")?;
        }
        if let Some(username) = &self.username {
            data::put_string(out, username, "user name")?;
        }
        if let Some(password) = &self.password {
            data::put_binary(out, password, "password")?;
        }
        Ok(())
    }
}
