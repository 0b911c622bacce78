//! The outbound encoding policy of one connection: how each packet the writer takes is put on
//! the wire. Packets that no hook sees take a direct path (acknowledgements from their few
//! bytes, messages straight from the shared [`Message`](crate::message::Message)); the others
//! become a [`Packet`] that `on_packet_encode` hooks may rewrite. Then: problem information is
//! stripped when the client asked for none [MQTT-3.1.2-29] or to fit [MQTT-3.4.2-2]; an outbound
//! topic alias is planned and kept only if the packet is sent [MQTT-3.3.2-7]; and nothing
//! larger than the client's Maximum Packet Size goes out [MQTT-3.1.2-24] [MQTT-3.1.2-25].

use bytes::BytesMut;
use mqtt_packets::{EncodeError, Packet, PacketId, Protocol, PubRel, Publish, QoS};
use tokio::time::Instant;

use crate::ClientInfo;
use crate::alias::OutboundAliases;
use crate::hooks::{HookEvents, Hooks};
use crate::message::Delivery;
use crate::outbound::Outgoing;
use crate::session::{Control, PeerLimits};

/// Payloads from this size up are written from the shared message by a vectored write; smaller
/// ones cost less to copy than to describe.
pub(crate) const VECTORED_PAYLOAD: usize = 1024;

/// Which hooks watch the writer, read once per round: a hook may be added while the
/// connection lasts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Observers {
    /// `on_packet_encode`.
    pub(crate) encode: bool,
    /// `on_packet_sent`.
    pub(crate) sent: bool,
    /// `on_qos_publish`.
    pub(crate) qos_publish: bool,
}

impl Observers {
    /// The observers registered now.
    pub(crate) fn of(hooks: &Hooks) -> Self {
        Self {
            encode: hooks.provides(HookEvents::ON_PACKET_ENCODE),
            sent: hooks.provides(HookEvents::ON_PACKET_SENT),
            qos_publish: hooks.provides(HookEvents::ON_QOS_PUBLISH),
        }
    }
}

/// What became of one packet.
#[derive(Debug)]
pub(crate) enum Encoded {
    /// Appended to the buffer.
    Written {
        /// The QoS of a PUBLISH; `None` for other packets.
        qos: Option<QoS>,
        /// A message whose payload is written from where it lies, right after the buffer's
        /// bytes so far (see [`VECTORED_PAYLOAD`]).
        apart: Option<Delivery>,
        /// The packet, for `on_packet_sent` hooks (boxed: only with such hooks).
        sent: Option<Box<Packet>>,
    },
    /// A PUBLISH larger than the client accepts, or than the protocol can express
    /// (subscription identifiers added to a message at the limit, audit L8): dropped as if
    /// delivered. `packet_id` is its in-flight id, to forget.
    TooLarge {
        /// The message, with its full topic.
        publish: Box<Publish>,
        /// Its packet identifier (QoS 1 and 2).
        packet_id: Option<PacketId>,
    },
    /// Another packet still larger than the client accepts once stripped of problem
    /// information: not sent.
    Unsendable(mqtt_packets::PacketType),
    /// The codec refused it (nothing was appended).
    Failed(EncodeError),
}

/// The encoding state of one connection: its protocol, whether its transport takes vectored
/// writes, and its outbound topic aliases.
#[derive(Debug)]
pub(crate) struct Encoder {
    protocol: Protocol,
    vectored: bool,
    /// Outbound topic aliases belong to this connection only [MQTT-3.3.2-7]; allocated when the
    /// client allows aliases and a message goes out.
    aliases: Option<Box<OutboundAliases>>,
}

impl Encoder {
    /// An encoder for a connection speaking `protocol`; `vectored` when its transport writes
    /// vectors efficiently.
    pub(crate) fn new(protocol: Protocol, vectored: bool) -> Self {
        Self {
            protocol,
            vectored,
            aliases: None,
        }
    }

    /// Encodes `item` into `buf` under the client's limits.
    #[allow(clippy::too_many_arguments)] // The round's context, passed rather than stored.
    pub(crate) fn encode(
        &mut self,
        item: Control,
        peer: &PeerLimits,
        observers: Observers,
        hooks: &Hooks,
        client: &ClientInfo,
        now: Instant,
        buf: &mut BytesMut,
    ) -> Encoded {
        let protocol = self.protocol;
        let sendable = sendable(peer);
        let direct_acks = !observers.encode && !observers.sent;
        let direct = direct_acks
            && !observers.qos_publish
            && !(protocol.is_v5() && peer.topic_alias_maximum > 0);
        if direct
            && let Control::Outgoing(Outgoing::Publish {
                packet_id,
                delivery,
                dup,
            }) = &item
            && let Some(publish) = delivery.as_publish_ref(*packet_id, *dup, protocol.is_v5())
            && publish.encoded_len(protocol) <= sendable
        {
            // A large payload is written from the shared message (a vectored write) rather
            // than copied into the buffer.
            let apart = self.vectored && publish.payload.len() >= VECTORED_PAYLOAD;
            let encoded = if apart {
                publish.encode_head(protocol, buf)
            } else {
                publish.encode(protocol, buf)
            };
            if let Err(error) = encoded {
                return Encoded::Failed(error);
            }
            let qos = Some(delivery.qos);
            let apart = match item {
                Control::Outgoing(Outgoing::Publish { delivery, .. }) if apart => Some(delivery),
                _ => None,
            };
            return Encoded::Written {
                qos,
                apart,
                sent: None,
            };
        }
        if direct_acks
            && let Control::Ack(ack) = &item
            && ack.encoded_len(protocol) <= peer.maximum_packet_size as usize
        {
            return match ack.encode(protocol, buf) {
                Ok(()) => Encoded::Written {
                    qos: None,
                    apart: None,
                    sent: None,
                },
                Err(error) => Encoded::Failed(error),
            };
        }
        self.encode_packet(item, peer, observers, hooks, client, now, buf)
    }

    /// The general path: a [`Packet`] that hooks see.
    #[allow(clippy::too_many_arguments)] // As `encode`.
    fn encode_packet(
        &mut self,
        item: Control,
        peer: &PeerLimits,
        observers: Observers,
        hooks: &Hooks,
        client: &ClientInfo,
        now: Instant,
        buf: &mut BytesMut,
    ) -> Encoded {
        let protocol = self.protocol;
        let sendable = sendable(peer);
        let (mut packet, packet_id) = match item {
            Control::Ack(ack) => (ack.into_packet(), None),
            Control::Packet(packet) => (*packet, None),
            Control::Outgoing(Outgoing::PubRel {
                packet_id,
                reason_code,
            }) => (PubRel::with_reason(packet_id, reason_code).into(), None),
            Control::Outgoing(Outgoing::Publish {
                packet_id,
                delivery,
                dup,
            }) => (
                Packet::Publish(delivery.to_publish(packet_id, dup, now)),
                packet_id,
            ),
        };
        if observers.encode {
            for hook in hooks.with(HookEvents::ON_PACKET_ENCODE) {
                packet = hook.on_packet_encode(client, packet);
            }
        }
        if !peer.request_problem_information {
            strip_problem_information(&mut packet);
        }
        // Reason strings and user properties go first when a packet is too large
        // [MQTT-3.4.2-2] [MQTT-3.4.2-3] (and the same rule for every ack).
        if packet.encoded_len(protocol) > peer.maximum_packet_size as usize {
            strip_problem_information(&mut packet);
        }
        // An outbound topic alias, planned now and recorded only if the packet is sent.
        let mut alias_plan = None;
        if let Packet::Publish(publish) = &mut packet
            && protocol.is_v5()
            && peer.topic_alias_maximum > 0
        {
            let aliases = self
                .aliases
                .get_or_insert_with(|| Box::new(OutboundAliases::new(peer.topic_alias_maximum)));
            let plan = aliases.plan(&publish.topic);
            let topic = publish.topic.clone();
            OutboundAliases::apply(plan, publish);
            alias_plan = Some((plan, topic));
        }
        if packet.encoded_len(protocol) > sendable {
            if let Packet::Publish(mut publish) = packet {
                if let Some((_, topic)) = alias_plan {
                    publish.topic = topic;
                    publish.properties.topic_alias = None;
                }
                return Encoded::TooLarge {
                    publish: Box::new(publish),
                    packet_id,
                };
            }
            return Encoded::Unsendable(packet.packet_type());
        }
        if let Err(error) = packet.encode(protocol, buf) {
            return Encoded::Failed(error);
        }
        if let Some((plan, topic)) = alias_plan
            && let Some(aliases) = self.aliases.as_mut()
        {
            aliases.commit(plan, &topic);
            // Hooks see the full topic.
            if let Packet::Publish(publish) = &mut packet {
                publish.topic = topic;
            }
        }
        let qos = match &packet {
            Packet::Publish(publish) => {
                if publish.qos > QoS::AtMostOnce && observers.qos_publish {
                    for hook in hooks.with(HookEvents::ON_QOS_PUBLISH) {
                        hook.on_qos_publish(client, publish, u32::from(publish.dup));
                    }
                }
                Some(publish.qos)
            }
            _ => None,
        };
        Encoded::Written {
            qos,
            apart: None,
            sent: observers.sent.then(|| Box::new(packet)),
        }
    }
}

/// The largest packet that may go to this client: its Maximum Packet Size, within what the
/// protocol can express.
fn sendable(peer: &PeerLimits) -> usize {
    (peer.maximum_packet_size as usize).min(mqtt_packets::PROTOCOL_MAXIMUM_PACKET_SIZE as usize)
}

/// With Request Problem Information 0, Reason Strings and User Properties may go only on
/// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
pub(crate) fn strip_problem_information(packet: &mut Packet) {
    let properties = match packet {
        Packet::PubAck(ack) => &mut ack.properties,
        Packet::PubRec(ack) => &mut ack.properties,
        Packet::PubRel(ack) => &mut ack.properties,
        Packet::PubComp(ack) => &mut ack.properties,
        Packet::SubAck(ack) => &mut ack.properties,
        Packet::UnsubAck(ack) => &mut ack.properties,
        _ => return,
    };
    properties.reason_string = None;
    properties.user_properties = mqtt_packets::UserProperties::new();
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use mqtt_packets::{
        AckProperties, DecodeContext, MqttString, PubAck, PublishProperties, ReasonCode, SubAck,
        decode,
    };

    use super::*;
    use crate::message::Message;

    fn delivery(topic: &'static str, payload: Bytes, qos: QoS) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: MqttString::from_static(topic),
                payload,
                qos,
                retain: false,
                properties: PublishProperties::default(),
                publisher: None,
                expires_at: None,
                properties_size: 0,
            }),
            qos,
            retain: false,
            subscription_identifiers: Vec::new(),
            shared: None,
            seq: 0,
        }
    }

    fn message(topic: &'static str, payload: &'static [u8], id: u16) -> Control {
        Control::Outgoing(Outgoing::Publish {
            packet_id: PacketId::new(id),
            delivery: delivery(topic, Bytes::from_static(payload), QoS::AtLeastOnce),
            dup: false,
        })
    }

    fn peer() -> PeerLimits {
        PeerLimits {
            window: 10,
            maximum_packet_size: u32::MAX,
            request_problem_information: true,
            topic_alias_maximum: 0,
        }
    }

    struct Fixture {
        encoder: Encoder,
        hooks: Hooks,
        client: ClientInfo,
        now: Instant,
        buf: BytesMut,
    }

    impl Fixture {
        fn new(protocol: Protocol, vectored: bool) -> Self {
            Self {
                encoder: Encoder::new(protocol, vectored),
                hooks: Hooks::default(),
                client: ClientInfo::inline("c".into()),
                now: Instant::now(),
                buf: BytesMut::new(),
            }
        }

        fn encode(&mut self, item: Control, peer: &PeerLimits) -> Encoded {
            self.encoder.encode(
                item,
                peer,
                Observers::default(),
                &self.hooks,
                &self.client,
                self.now,
                &mut self.buf,
            )
        }

        /// Decodes everything written so far.
        fn packets(&mut self) -> Vec<Packet> {
            let context = DecodeContext::new(self.encoder.protocol);
            let mut packets = Vec::new();
            while let Some(packet) = decode(&mut self.buf, &context).unwrap() {
                packets.push(packet);
            }
            packets
        }
    }

    #[test]
    fn the_direct_path_writes_what_the_general_path_would() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        assert!(matches!(
            fixture.encode(message("a/b", b"hello", 1), &peer()),
            Encoded::Written {
                qos: Some(QoS::AtLeastOnce),
                apart: None,
                sent: None
            }
        ));
        let direct = fixture.packets();
        // With an encode hook the general path runs: the same bytes on the wire.
        let mut general = Fixture::new(Protocol::V5, false);
        let observers = Observers {
            encode: true,
            ..Observers::default()
        };
        let encoded = general.encoder.encode(
            message("a/b", b"hello", 1),
            &peer(),
            observers,
            &general.hooks,
            &general.client,
            general.now,
            &mut general.buf,
        );
        assert!(matches!(encoded, Encoded::Written { .. }));
        assert_eq!(direct, general.packets());
    }

    #[test]
    fn a_large_payload_is_written_apart_on_a_vectored_transport() {
        let payload = Bytes::from(vec![7u8; VECTORED_PAYLOAD]);
        let mut fixture = Fixture::new(Protocol::V3_1_1, true);
        let item = Control::Outgoing(Outgoing::Publish {
            packet_id: PacketId::new(3),
            delivery: delivery("t", payload.clone(), QoS::AtLeastOnce),
            dup: false,
        });
        let Encoded::Written {
            apart: Some(delivery),
            ..
        } = fixture.encode(item, &peer())
        else {
            panic!("payload not apart");
        };
        // The buffer holds the head only; the payload follows it on the wire.
        assert_eq!(delivery.message.payload, payload);
        assert!(fixture.buf.len() < 16);
    }

    #[test]
    fn nothing_above_the_clients_maximum_packet_size_goes_out_mqtt_3_1_2_24() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        let small = PeerLimits {
            maximum_packet_size: 32,
            ..peer()
        };
        let Encoded::TooLarge { publish, packet_id } =
            fixture.encode(message("a/b", &[0u8; 64], 5), &small)
        else {
            panic!("sent a packet above the maximum");
        };
        assert_eq!(publish.topic.as_str(), "a/b");
        assert_eq!(packet_id, PacketId::new(5));
        assert!(fixture.buf.is_empty());
        // A small one still goes.
        assert!(matches!(
            fixture.encode(message("a/b", b"x", 6), &small),
            Encoded::Written { .. }
        ));
    }

    #[test]
    fn problem_information_is_stripped_when_not_requested_mqtt_3_1_2_29() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        let mut ack = PubAck::new(PacketId::new(1).unwrap());
        ack.reason_code = ReasonCode::NOT_AUTHORIZED;
        ack.properties = AckProperties {
            reason_string: Some(MqttString::from_static("no")),
            ..AckProperties::default()
        };
        let quiet = PeerLimits {
            request_problem_information: false,
            ..peer()
        };
        fixture.encode(Control::packet(ack.clone().into()), &quiet);
        fixture.encode(Control::packet(ack.into()), &peer());
        let packets = fixture.packets();
        let reasons: Vec<_> = packets
            .iter()
            .map(|packet| match packet {
                Packet::PubAck(ack) => ack.properties.reason_string.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reasons, [None, Some(MqttString::from_static("no"))]);
    }

    #[test]
    fn a_suback_too_large_even_stripped_is_not_sent() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        let tiny = PeerLimits {
            maximum_packet_size: 8,
            ..peer()
        };
        let suback = SubAck::new(PacketId::new(1).unwrap(), vec![ReasonCode::SUCCESS; 16]);
        assert!(matches!(
            fixture.encode(Control::packet(suback.into()), &tiny),
            Encoded::Unsendable(mqtt_packets::PacketType::SubAck)
        ));
        assert!(fixture.buf.is_empty());
    }

    #[test]
    fn a_topic_alias_replaces_the_topic_after_its_first_use_mqtt_3_3_2_7() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        let aliased = PeerLimits {
            topic_alias_maximum: 4,
            ..peer()
        };
        fixture.encode(message("long/topic/name", b"1", 1), &aliased);
        fixture.encode(message("long/topic/name", b"2", 2), &aliased);
        let packets = fixture.packets();
        let (Packet::Publish(first), Packet::Publish(second)) = (&packets[0], &packets[1]) else {
            panic!("{packets:?}");
        };
        assert_eq!(first.topic.as_str(), "long/topic/name");
        assert_eq!(first.properties.topic_alias, second.properties.topic_alias);
        assert!(first.properties.topic_alias.is_some());
        assert_eq!(second.topic.as_str(), "");
    }

    #[test]
    fn a_message_dropped_as_too_large_sets_no_alias() {
        let mut fixture = Fixture::new(Protocol::V5, false);
        let aliased = PeerLimits {
            topic_alias_maximum: 4,
            maximum_packet_size: 40,
            ..peer()
        };
        assert!(matches!(
            fixture.encode(message("long/topic/name", &[0u8; 64], 1), &aliased),
            Encoded::TooLarge { .. }
        ));
        fixture.encode(message("long/topic/name", b"2", 2), &aliased);
        let packets = fixture.packets();
        let Packet::Publish(sent) = &packets[0] else {
            panic!("{packets:?}");
        };
        // The alias was not recorded for the dropped message: the topic goes in full.
        assert_eq!(sent.topic.as_str(), "long/topic/name");
    }
}
