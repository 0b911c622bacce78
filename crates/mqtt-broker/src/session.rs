//! Session state: what the server keeps for a client id across connections (§4.1).

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use mqtt_packets::{
    AckProperties, EncodeError, MqttString, Packet, PacketId, Protocol, PubAck, PubComp, PubRec,
    PubRel, ReasonCode, SubscriptionOptions, Will,
};
use mqtt_topics::{ClientId, SubscriptionInfo};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};

use crate::ClientInfo;
use crate::flow::Flow;
use crate::inline::InlineDelivery;
use crate::outbound::{Outbound, Outgoing};

/// A subscription as the session and the trie hold it.
#[derive(Debug, Clone)]
pub(crate) struct SubscriptionEntry {
    pub(crate) options: SubscriptionOptions,
    pub(crate) identifier: Option<NonZeroU32>,
    /// The subscriber, so that fan-out reaches its queue without a registry lookup.
    pub(crate) session: Arc<Session>,
}

impl SubscriptionInfo for SubscriptionEntry {
    fn qos(&self) -> mqtt_packets::QoS {
        self.options.maximum_qos
    }

    fn identifier(&self) -> Option<NonZeroU32> {
        self.identifier
    }
}

/// The live connection of a session: how to wake its writer and ask it to close.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionHandle {
    /// Increases with every connection of the server; tells a stale connection from the current.
    pub(crate) generation: u64,
    /// What the connection's tasks and the rest of the server share (one allocation).
    shared: Arc<HandleShared>,
}

/// The shared part of a [`ConnectionHandle`].
#[derive(Debug, Default)]
pub(crate) struct HandleShared {
    /// Wakes the writer: new packets to send, or the connection is closing.
    pub(crate) wakeup: Notify,
    /// Set when a wakeup is pending, so that a burst of messages costs one notification.
    pub(crate) wake_pending: AtomicBool,
    /// Stops the reader (takeover, server close, administrative disconnect).
    pub(crate) kill: Notify,
    /// Wakes the reader while it waits for room in a subscriber's queue (flow control).
    pub(crate) room: Notify,
    /// Set while the reader waits for room in a subscriber's queue: it reads nothing meanwhile,
    /// not even its client's acknowledgements, so nobody waits for this connection's own queue
    /// (see `flow.rs`).
    pub(crate) waiting: AtomicBool,
    /// Set while the reader waits for the writer to take its unsent answers (acks, PINGRESP).
    pub(crate) answers_waiting: AtomicBool,
    /// How the connection is to be closed, once it is.
    pub(crate) close: Mutex<Option<Close>>,
    /// Acks queued but not yet written when the connection left its session: the writer
    /// still sends them before the DISCONNECT (a PUBREC for a message already accepted).
    pub(crate) unsent: Mutex<Vec<Control>>,
}

impl std::ops::Deref for ConnectionHandle {
    type Target = HandleShared;

    fn deref(&self) -> &HandleShared {
        &self.shared
    }
}

/// How the server ends a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Close {
    /// Close the socket without a DISCONNECT (3.x clients, or the client ended it).
    Silent,
    /// Send DISCONNECT with this code first (v5 only; 3.x clients get a plain close).
    Disconnect(ReasonCode),
    /// Send DISCONNECT 0x9C / 0x9D with this Server Reference (v5 only).
    Redirect(ReasonCode, MqttString),
}

impl ConnectionHandle {
    pub(crate) fn new(generation: u64) -> Self {
        Self {
            generation,
            shared: Arc::default(),
        }
    }

    /// The shared part, for a task that waits on it without borrowing the handle.
    pub(crate) fn shared(&self) -> Arc<HandleShared> {
        self.shared.clone()
    }

    /// Whether this is the connection whose shared part is `shared`.
    pub(crate) fn is(&self, shared: &Arc<HandleShared>) -> bool {
        Arc::ptr_eq(&self.shared, shared)
    }

    /// Whether this connection's reader waits for room in a subscriber's queue.
    pub(crate) fn reader_waits(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Asks the connection to end; the first reason given wins.
    pub(crate) fn close(&self, how: Close) {
        {
            let mut close = self.close.lock();
            if close.is_none() {
                *close = Some(how);
            }
        }
        self.wakeup.notify_one();
        self.kill.notify_one();
    }

    /// Wakes the writer unless a wakeup is already pending.
    pub(crate) fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::AcqRel) {
            self.wakeup.notify_one();
        }
    }
}

/// A packet for the writer that is not a new delivery.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// PUBACK, PUBREC, PUBREL or PUBCOMP without properties: most of the control traffic, a
    /// few bytes in the queues rather than a whole [`Packet`].
    Ack(Ack),
    /// Any other control packet (CONNACK, SUBACK, PINGRESP, ...), written as is.
    Packet(Box<Packet>),
    /// A resend of an inflight message after reconnect, or a PUBREL.
    Outgoing(Outgoing),
}

impl Control {
    /// A packet for the writer's queue: acknowledgements without properties as [`Control::Ack`],
    /// anything else boxed.
    pub(crate) fn packet(packet: Packet) -> Self {
        let ack = |kind, packet_id, reason_code, properties: &AckProperties| {
            properties.is_empty().then_some(Ack {
                kind,
                packet_id,
                reason_code,
            })
        };
        let small = match &packet {
            Packet::PubAck(p) => ack(AckKind::PubAck, p.packet_id, p.reason_code, &p.properties),
            Packet::PubRec(p) => ack(AckKind::PubRec, p.packet_id, p.reason_code, &p.properties),
            Packet::PubRel(p) => ack(AckKind::PubRel, p.packet_id, p.reason_code, &p.properties),
            Packet::PubComp(p) => ack(AckKind::PubComp, p.packet_id, p.reason_code, &p.properties),
            _ => None,
        };
        match small {
            Some(ack) => Self::Ack(ack),
            None => Self::Packet(Box::new(packet)),
        }
    }
}

/// Which acknowledgement an [`Ack`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::enum_variant_names)] // The packets' names.
pub(crate) enum AckKind {
    PubAck,
    PubRec,
    PubRel,
    PubComp,
}

/// An acknowledgement of the QoS 1 and 2 flows without properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    pub(crate) kind: AckKind,
    pub(crate) packet_id: PacketId,
    pub(crate) reason_code: ReasonCode,
}

impl Ack {
    /// PUBACK with this reason code.
    pub(crate) fn puback(packet_id: PacketId, reason_code: ReasonCode) -> Self {
        Self {
            kind: AckKind::PubAck,
            packet_id,
            reason_code,
        }
    }

    /// PUBREC with this reason code.
    pub(crate) fn pubrec(packet_id: PacketId, reason_code: ReasonCode) -> Self {
        Self {
            kind: AckKind::PubRec,
            packet_id,
            reason_code,
        }
    }

    /// PUBREL with this reason code.
    pub(crate) fn pubrel(packet_id: PacketId, reason_code: ReasonCode) -> Self {
        Self {
            kind: AckKind::PubRel,
            packet_id,
            reason_code,
        }
    }

    /// PUBCOMP with this reason code.
    pub(crate) fn pubcomp(packet_id: PacketId, reason_code: ReasonCode) -> Self {
        Self {
            kind: AckKind::PubComp,
            packet_id,
            reason_code,
        }
    }

    /// The packet, for hooks and the general encoding path.
    pub(crate) fn into_packet(self) -> Packet {
        let Self {
            kind,
            packet_id,
            reason_code,
        } = self;
        match kind {
            AckKind::PubAck => PubAck::with_reason(packet_id, reason_code).into(),
            AckKind::PubRec => PubRec::with_reason(packet_id, reason_code).into(),
            AckKind::PubRel => PubRel::with_reason(packet_id, reason_code).into(),
            AckKind::PubComp => PubComp::with_reason(packet_id, reason_code).into(),
        }
    }

    /// The number of bytes [`Ack::encode`] writes.
    pub(crate) fn encoded_len(self, protocol: Protocol) -> usize {
        self.into_packet().encoded_len(protocol)
    }

    /// Appends the packet as spoken at `protocol`.
    pub(crate) fn encode(self, protocol: Protocol, out: &mut BytesMut) -> Result<(), EncodeError> {
        self.into_packet().encode(protocol, out)
    }
}

/// Per-connection limits the client set in CONNECT.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerLimits {
    /// The send window: min(client Receive Maximum, server maximum inflight).
    pub(crate) window: usize,
    /// The client's Maximum Packet Size.
    pub(crate) maximum_packet_size: u32,
    /// Whether reason strings and user properties may be sent on acks [MQTT-3.1.2-29].
    pub(crate) request_problem_information: bool,
    /// The client's Topic Alias Maximum (0: send no aliases).
    pub(crate) topic_alias_maximum: u16,
}

#[derive(Debug)]
pub(crate) struct SessionState {
    pub(crate) protocol: Protocol,
    /// The Session Expiry Interval in force, in seconds.
    pub(crate) expiry_interval: u32,
    /// The client as of its last connection.
    pub(crate) client: Option<Arc<ClientInfo>>,
    pub(crate) connection: Option<ConnectionHandle>,
    pub(crate) peer: PeerLimits,
    /// Filter (as subscribed, `$share/` included) → options and identifier.
    pub(crate) subscriptions: HashMap<String, (SubscriptionOptions, Option<NonZeroU32>)>,
    pub(crate) outbound: Outbound,
    /// Client packet ids of QoS 2 messages acknowledged with PUBREC, awaiting PUBREL.
    pub(crate) inbound_qos2: foldhash::HashSet<u16>,
    /// Acks and control packets for the writer, in order.
    pub(crate) control: VecDeque<Control>,
    /// The Will of the current connection.
    pub(crate) will: Option<Box<Will>>,
    /// The generation of the last connection that took this session.
    pub(crate) last_generation: u64,
    /// Whether storage hooks mirror this session (it outlives its connection and a hook
    /// provides `ON_STORAGE_EVENT`).
    pub(crate) persist: bool,
    /// Flow control: who waits for room in the queue, retained messages to stream.
    pub(crate) flow: Flow,
    /// Increases each time the session starts clean or ends: deliveries parked for an earlier
    /// epoch were for subscriptions it no longer has.
    pub(crate) epoch: u64,
}

impl SessionState {
    /// The identity the session belongs to: the user name of the client that last connected
    /// with it (`""` for none), once a client has.
    pub(crate) fn owner(&self) -> Option<&str> {
        self.client
            .as_ref()
            .map(|client| client.username.as_deref().unwrap_or(""))
    }

    /// Queues a control packet and wakes the writer.
    pub(crate) fn send(&mut self, packet: Packet) {
        self.control.push_back(Control::packet(packet));
        self.wake_writer();
    }

    pub(crate) fn wake_writer(&self) {
        if let Some(connection) = &self.connection {
            connection.wake();
        }
    }
}

/// A session: the state kept for one client id, shared by its connection tasks, the publishers
/// that fan out to it, and the timers that expire it.
#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) client_id: ClientId,
    pub(crate) state: Mutex<SessionState>,
    /// Mirrors `state.connection.is_some()`, readable without the lock (shared-group
    /// eligibility).
    pub(crate) connected: AtomicBool,
    /// For the inline client's subscriptions: deliveries go to this channel instead of a socket.
    pub(crate) inline_sink: Option<mpsc::Sender<InlineDelivery>>,
}

impl Session {
    pub(crate) fn new(client_id: ClientId, protocol: Protocol) -> Self {
        Self {
            client_id,
            state: Mutex::new(SessionState {
                protocol,
                expiry_interval: 0,
                client: None,
                connection: None,
                peer: PeerLimits {
                    window: usize::from(u16::MAX),
                    maximum_packet_size: u32::MAX,
                    request_problem_information: true,
                    topic_alias_maximum: 0,
                },
                subscriptions: HashMap::new(),
                outbound: Outbound::default(),
                inbound_qos2: foldhash::HashSet::default(),
                control: VecDeque::new(),
                will: None,
                last_generation: 0,
                persist: false,
                flow: Flow::default(),
                epoch: 0,
            }),
            connected: AtomicBool::new(false),
            inline_sink: None,
        }
    }

    pub(crate) fn new_inline(client_id: ClientId, sink: mpsc::Sender<InlineDelivery>) -> Self {
        Self {
            inline_sink: Some(sink),
            ..Self::new(client_id, Protocol::V5)
        }
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use mqtt_packets::{MqttString, SubAck};

    use super::*;

    fn encoded(packet: &Packet, protocol: Protocol) -> BytesMut {
        let mut out = BytesMut::new();
        packet.encode(protocol, &mut out).unwrap();
        out
    }

    #[test]
    fn acks_without_properties_are_queued_small_and_encode_the_same() {
        let id = PacketId::new(9).unwrap();
        let packets: [Packet; 4] = [
            PubAck::with_reason(id, ReasonCode::NO_MATCHING_SUBSCRIBERS).into(),
            PubRec::new(id).into(),
            PubRel::with_reason(id, ReasonCode::PACKET_IDENTIFIER_NOT_FOUND).into(),
            PubComp::new(id).into(),
        ];
        for packet in packets {
            let Control::Ack(ack) = Control::packet(packet.clone()) else {
                panic!("{packet:?} is not queued as an Ack");
            };
            assert_eq!(ack.into_packet(), packet);
            for protocol in [Protocol::V3_1_1, Protocol::V5] {
                let mut out = BytesMut::new();
                ack.encode(protocol, &mut out).unwrap();
                assert_eq!(out, encoded(&packet, protocol));
                assert_eq!(ack.encoded_len(protocol), out.len());
            }
        }
    }

    #[test]
    fn acks_with_properties_and_other_packets_are_queued_whole() {
        let id = PacketId::new(9).unwrap();
        let mut ack = PubAck::with_reason(id, ReasonCode::NOT_AUTHORIZED);
        ack.properties.reason_string = Some(MqttString::from_static("no"));
        let with_properties = Packet::from(ack);
        let suback = Packet::from(SubAck::new(id, vec![ReasonCode::GRANTED_QOS_1]));
        for packet in [with_properties, suback] {
            match Control::packet(packet.clone()) {
                Control::Packet(queued) => assert_eq!(*queued, packet),
                other => panic!("{packet:?} queued as {other:?}"),
            }
        }
    }
}
