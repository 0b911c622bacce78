//! Outbound QoS state of one session: the ordered queue of messages not yet sent, the inflight
//! window of QoS 1/2 messages awaiting acknowledgement, and packet identifier allocation.
//!
//! Plain data with methods that take `now`, so the logic is tested without sockets or sleeps.
//! Inbound QoS 2 state (client packet ids awaiting PUBREL) lives elsewhere: the two id spaces
//! never touch (§2.2.1).

use std::collections::VecDeque;

use mqtt_packets::{PacketId, QoS, ReasonCode};
use tokio::time::Instant;

use crate::hooks::DropReason;
use crate::inflight::{Inflight, InflightState, InflightTable};
use crate::message::Delivery;

/// A packet the writer must send for the outbound flow.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A PUBLISH: new, or a resend (`dup`).
    Publish {
        packet_id: Option<PacketId>,
        delivery: Delivery,
        dup: bool,
    },
    /// A PUBREL (resend after reconnect, or the answer to PUBREC).
    PubRel {
        packet_id: PacketId,
        reason_code: ReasonCode,
    },
}

/// What a PUBREC did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PubRecOutcome {
    /// Send PUBREL 0x00 and wait for PUBCOMP.
    Release,
    /// The PUBREC carried an error code: the flow ends here [MQTT-4.3.3-4].
    Dropped,
    /// Unknown identifier: answer PUBREL 0x92 [MQTT-3.6.2-1].
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct Outbound {
    inflight: InflightTable,
    /// The last packet identifier handed out.
    last_id: u16,
    next_seq: u64,
    /// The sequence number of the next queued message ([`Delivery::seq`]).
    next_message_seq: u64,
    pending: VecDeque<Delivery>,
    pending_bytes: usize,
    /// Inflight messages to resend after a reconnect once the client's window has room, in
    /// order; they keep their packet ids.
    deferred: VecDeque<u16>,
}

impl Outbound {
    /// Whether a message of `size` bytes fits in the queue under these limits: a queue holding
    /// fewer than `messages` whose bytes stay within `bytes` (an empty queue takes any message,
    /// so that one larger than the byte limit cannot wait for room forever).
    pub(crate) fn fits(&self, size: usize, messages: usize, bytes: usize) -> bool {
        self.pending.is_empty()
            || (self.pending.len() < messages && self.pending_bytes + size <= bytes)
    }

    /// Whether the queue holds no more than half these limits: room enough to take publishers'
    /// messages again after it was full.
    pub(crate) fn is_half_empty(&self, messages: usize, bytes: usize) -> bool {
        self.pending.len() <= messages / 2 && self.pending_bytes <= bytes / 2
    }

    /// Queues a delivery (the caller checked the limits, see [`Outbound::fits`]) and returns
    /// its sequence number.
    pub(crate) fn push(&mut self, delivery: Delivery) -> u64 {
        self.pending_bytes += delivery.message.size();
        let mut delivery = delivery;
        let seq = self.next_message_seq;
        delivery.seq = seq;
        self.next_message_seq += 1;
        self.pending.push_back(delivery);
        seq
    }

    /// Drops the oldest queued messages until one of `size` bytes fits (see
    /// [`Outbound::fits`]); they go to `evicted`, oldest first.
    pub(crate) fn evict_oldest(
        &mut self,
        size: usize,
        messages: usize,
        bytes: usize,
        evicted: &mut Vec<Delivery>,
    ) {
        while !self.fits(size, messages, bytes) {
            let Some(oldest) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes = self.pending_bytes.saturating_sub(oldest.message.size());
            evicted.push(oldest);
        }
    }

    /// Puts back a message restored from storage, as it stood: queued, or in flight with its
    /// packet id (sent at least once, so a resend carries DUP). Queue limits do not apply: it
    /// was accepted before the restart.
    pub(crate) fn restore(&mut self, delivery: Delivery, packet_id: Option<u16>, released: bool) {
        self.next_message_seq = self.next_message_seq.max(delivery.seq + 1);
        match packet_id {
            Some(id) if id != 0 && !self.inflight.contains(id) => {
                let state = if released {
                    InflightState::AwaitingPubComp
                } else if delivery.qos == QoS::AtLeastOnce {
                    InflightState::AwaitingPubAck
                } else {
                    InflightState::AwaitingPubRec
                };
                let seq = self.next_seq;
                self.next_seq += 1;
                self.last_id = id;
                self.inflight.insert(
                    id,
                    Inflight {
                        seq,
                        delivery,
                        state,
                        sent: true,
                    },
                );
            }
            _ => {
                self.pending_bytes += delivery.message.size();
                self.pending.push_back(delivery);
            }
        }
    }

    /// Moves queued messages into flight, in order, while the window (the client's Receive
    /// Maximum, capped by the server's maximum inflight) has room [MQTT-3.3.4-9] and the
    /// messages in flight hold fewer than `window_bytes` (one message always fits an empty
    /// window). QoS 0 messages are not counted against the window but keep their place in the
    /// order. Expired messages are dropped [MQTT-3.3.2-5]. At most `limit` packets are returned.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn next_batch(
        &mut self,
        now: Instant,
        window: usize,
        window_bytes: usize,
        limit: usize,
        out: &mut Vec<Outgoing>,
        dropped: &mut Vec<(Delivery, DropReason)>,
    ) {
        let mut taken = 0;
        // Resends deferred at reconnect go first, as the window opens.
        while taken < limit
            && !self.deferred.is_empty()
            && self.inflight.len() - self.deferred.len() < window
        {
            let Some(id) = self.deferred.pop_front() else {
                break;
            };
            let (Some(packet_id), Some(entry)) = (PacketId::new(id), self.inflight.get(id)) else {
                continue;
            };
            out.push(Outgoing::Publish {
                packet_id: Some(packet_id),
                delivery: entry.delivery.clone(),
                dup: entry.sent,
            });
            taken += 1;
        }
        // New messages never overtake deferred resends [MQTT-4.6.0-1].
        while taken < limit && self.deferred.is_empty() {
            let Some(front) = self.pending.front() else {
                break;
            };
            if front.qos != QoS::AtMostOnce
                && (self.inflight.len() >= window
                    || (self.inflight.len() > 0
                        && self.inflight.bytes() + front.message.size() > window_bytes))
            {
                break;
            }
            let Some(delivery) = self.pending.pop_front() else {
                break;
            };
            self.pending_bytes = self.pending_bytes.saturating_sub(delivery.message.size());
            if delivery.message.is_expired(now) {
                dropped.push((delivery, DropReason::Expired));
                continue;
            }
            if delivery.qos == QoS::AtMostOnce {
                out.push(Outgoing::Publish {
                    packet_id: None,
                    delivery,
                    dup: false,
                });
                taken += 1;
                continue;
            }
            let Some(packet_id) = self.allocate_id() else {
                dropped.push((delivery, DropReason::PacketIdsExhausted));
                continue;
            };
            let state = if delivery.qos == QoS::AtLeastOnce {
                InflightState::AwaitingPubAck
            } else {
                InflightState::AwaitingPubRec
            };
            let seq = self.next_seq;
            self.next_seq += 1;
            self.inflight.insert(
                packet_id.get(),
                Inflight {
                    seq,
                    delivery: delivery.clone(),
                    state,
                    sent: true,
                },
            );
            out.push(Outgoing::Publish {
                packet_id: Some(packet_id),
                delivery,
                dup: false,
            });
            taken += 1;
        }
    }

    /// A free identifier: never one in flight [MQTT-2.2.1-4].
    fn allocate_id(&mut self) -> Option<PacketId> {
        let id = self.inflight.free_after(self.last_id)?;
        self.last_id = id.get();
        Some(id)
    }

    /// PUBACK: ends a QoS 1 flow. Returns the delivery if the id was awaiting one.
    pub(crate) fn puback(&mut self, packet_id: PacketId) -> Option<Delivery> {
        match self.inflight.get(packet_id.get()) {
            Some(entry) if entry.state == InflightState::AwaitingPubAck => self
                .inflight
                .remove(packet_id.get())
                .map(|entry| entry.delivery),
            _ => None,
        }
    }

    /// PUBREC: moves a QoS 2 flow on, or ends it on an error code. Also returns the message's
    /// sequence number when the flow changed.
    pub(crate) fn pubrec(
        &mut self,
        packet_id: PacketId,
        reason_code: ReasonCode,
    ) -> (PubRecOutcome, Option<u64>) {
        match self.inflight.get_mut(packet_id.get()) {
            Some(entry) if entry.state == InflightState::AwaitingPubRec => {
                let seq = entry.delivery.seq;
                if reason_code.is_error() {
                    self.inflight.remove(packet_id.get());
                    (PubRecOutcome::Dropped, Some(seq))
                } else {
                    entry.state = InflightState::AwaitingPubComp;
                    (PubRecOutcome::Release, Some(seq))
                }
            }
            // A repeated PUBREC after our PUBREL: send PUBREL again.
            Some(entry) if entry.state == InflightState::AwaitingPubComp => {
                (PubRecOutcome::Release, None)
            }
            _ => (PubRecOutcome::Unknown, None),
        }
    }

    /// PUBCOMP: ends a QoS 2 flow. Returns the message's sequence number if the id was awaiting
    /// one.
    pub(crate) fn pubcomp(&mut self, packet_id: PacketId) -> Option<u64> {
        match self.inflight.get(packet_id.get()) {
            Some(entry) if entry.state == InflightState::AwaitingPubComp => self
                .inflight
                .remove(packet_id.get())
                .map(|entry| entry.delivery.seq),
            _ => None,
        }
    }

    /// Forgets an inflight message that could not be sent (e.g. too large for the client,
    /// [MQTT-3.1.2-25]). Returns its sequence number.
    pub(crate) fn forget(&mut self, packet_id: PacketId) -> Option<u64> {
        self.deferred.retain(|&id| id != packet_id.get());
        self.inflight
            .remove(packet_id.get())
            .map(|entry| entry.delivery.seq)
    }

    /// Everything in flight, in the order it was first sent: PUBLISH with DUP for messages not
    /// yet acknowledged, PUBREL for those awaiting PUBCOMP, with their original packet ids
    /// [MQTT-4.4.0-1]. Sent on reconnect. If the client now allows fewer messages in flight
    /// (a lower Receive Maximum), only `window` PUBLISH packets go now; the others keep their ids
    /// and follow, in order, as acknowledgements free the window [MQTT-3.3.4-9].
    pub(crate) fn resend_all(&mut self, window: usize) -> Vec<Outgoing> {
        let mut entries: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .map(|(id, entry)| (entry.seq, id))
            .collect();
        entries.sort_unstable();
        self.deferred.clear();
        let mut out = Vec::new();
        let mut publishes = 0;
        for (_, id) in entries {
            let Some(packet_id) = PacketId::new(id) else {
                continue;
            };
            let Some(entry) = self.inflight.get(id) else {
                continue;
            };
            if entry.state == InflightState::AwaitingPubComp {
                // PUBREL does not count against the window.
                out.push(Outgoing::PubRel {
                    packet_id,
                    reason_code: ReasonCode::SUCCESS,
                });
            } else if publishes < window && self.deferred.is_empty() {
                publishes += 1;
                out.push(Outgoing::Publish {
                    packet_id: Some(packet_id),
                    delivery: entry.delivery.clone(),
                    dup: entry.sent,
                });
            } else {
                self.deferred.push_back(id);
            }
        }
        out
    }

    /// Takes out the messages of shared subscriptions that another member may still receive:
    /// everything queued, and QoS 1 messages in flight. QoS 2 messages in flight stay: they must
    /// not go to another member [MQTT-4.8.2-5]. In the order they were queued or sent.
    pub(crate) fn take_shared(&mut self) -> Vec<Delivery> {
        let mut inflight: Vec<(u64, u16)> = self
            .inflight
            .iter()
            .filter(|(_, entry)| {
                entry.state == InflightState::AwaitingPubAck && entry.delivery.shared.is_some()
            })
            .map(|(id, entry)| (entry.seq, id))
            .collect();
        inflight.sort_unstable();
        let mut taken: Vec<Delivery> = inflight
            .into_iter()
            .filter_map(|(_, id)| self.inflight.remove(id).map(|entry| entry.delivery))
            .collect();
        let (shared, kept): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|delivery| delivery.shared.is_some());
        self.pending = kept;
        self.pending_bytes = self
            .pending
            .iter()
            .map(|delivery| delivery.message.size())
            .sum();
        taken.extend(shared);
        taken
    }

    /// Gives back the memory a burst left in queues that are now empty, so that a connection
    /// that goes quiet holds none of it.
    pub(crate) fn release_idle_memory(&mut self) {
        if self.pending.is_empty() && self.pending.capacity() > 0 {
            self.pending = VecDeque::new();
        }
        if self.deferred.is_empty() && self.deferred.capacity() > 0 {
            self.deferred = VecDeque::new();
        }
        self.inflight.release_idle_memory();
    }

    /// Drops everything; returns the identifiers that were in flight.
    pub(crate) fn clear(&mut self) -> Vec<u16> {
        self.pending.clear();
        self.pending_bytes = 0;
        self.deferred.clear();
        self.inflight.clear()
    }

    /// Makes every queued and in-flight message a copy that owns its bytes (one copy per
    /// message), for a session that goes offline: what waits for the client's return must not
    /// keep alive the read buffers of the publishers it came from.
    pub(crate) fn compact(&mut self) {
        let mut copies = crate::message::Compacted::new();
        for delivery in &mut self.pending {
            delivery.compact_with(&mut copies);
        }
        self.inflight.compact(&mut copies);
    }

    /// Takes out the queued and in-flight messages `keep` refuses (their topics not readable
    /// by a new owner of the session), in order.
    pub(crate) fn take_unless(&mut self, mut keep: impl FnMut(&Delivery) -> bool) -> Vec<Delivery> {
        let mut taken = Vec::new();
        let ids: Vec<u16> = self
            .inflight
            .iter()
            .filter(|(_, entry)| !keep(&entry.delivery))
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            self.deferred.retain(|&deferred| deferred != id);
            if let Some(entry) = self.inflight.remove(id) {
                taken.push(entry.delivery);
            }
        }
        let (kept, refused): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|delivery| keep(delivery));
        self.pending = kept;
        self.pending_bytes = self
            .pending
            .iter()
            .map(|delivery| delivery.message.size())
            .sum();
        taken.extend(refused);
        taken
    }

    /// Bytes of the messages in flight.
    #[cfg(test)]
    pub(crate) fn inflight_bytes(&self) -> usize {
        self.inflight.bytes()
    }

    /// Takes out the queued QoS 0 messages (when a client goes offline and QoS 0 is not kept,
    /// or a stuck subscriber is skipped), in order.
    pub(crate) fn drop_qos0(&mut self) -> Vec<Delivery> {
        if self
            .pending
            .iter()
            .all(|delivery| delivery.qos != QoS::AtMostOnce)
        {
            return Vec::new();
        }
        let (dropped, kept): (VecDeque<Delivery>, VecDeque<Delivery>) =
            std::mem::take(&mut self.pending)
                .into_iter()
                .partition(|delivery| delivery.qos == QoS::AtMostOnce);
        self.pending = kept;
        self.pending_bytes = self
            .pending
            .iter()
            .map(|delivery| delivery.message.size())
            .sum();
        dropped.into()
    }

    /// The messages queued and not yet in flight, in order.
    pub(crate) fn queued(&self) -> impl Iterator<Item = &Delivery> {
        self.pending.iter()
    }

    pub(crate) fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Whether messages wait to go into flight (queued, or resends deferred at reconnect): only
    /// then does an acknowledgement that frees the window give the writer something to do.
    pub(crate) fn has_queued(&self) -> bool {
        !self.pending.is_empty() || !self.deferred.is_empty()
    }

    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The payload and topic bytes of the messages queued and not yet in flight.
    pub(crate) fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use mqtt_packets::{MqttString, PublishProperties};

    use super::*;
    use crate::message::Message;

    fn delivery(qos: QoS, payload: &'static str, expires_at: Option<Instant>) -> Delivery {
        Delivery {
            message: Arc::new(Message {
                topic: MqttString::from_static("t"),
                payload: Bytes::from_static(payload.as_bytes()),
                qos,
                retain: false,
                properties: PublishProperties::default(),
                publisher: None,
                expires_at,
                properties_size: 0,
            }),
            qos,
            retain: false,
            subscription_identifiers: Vec::new(),
            shared: None,
            seq: 0,
        }
    }

    fn payloads(out: &[Outgoing]) -> Vec<String> {
        out.iter()
            .map(|o| match o {
                Outgoing::Publish { delivery, .. } => {
                    String::from_utf8_lossy(&delivery.message.payload).into_owned()
                }
                Outgoing::PubRel { packet_id, .. } => format!("rel{}", packet_id.get()),
            })
            .collect()
    }

    fn batch(outbound: &mut Outbound, now: Instant, window: usize) -> Vec<Outgoing> {
        let mut out = Vec::new();
        let mut dropped = Vec::new();
        outbound.next_batch(now, window, usize::MAX, 100, &mut out, &mut dropped);
        out
    }

    #[test]
    fn the_window_closes_at_its_byte_limit_too() {
        // Audit H1.2: a client that reads but never acknowledges held up to the whole window of
        // messages, whatever their size.
        let now = Instant::now();
        let mut outbound = Outbound::default();
        for payload in ["aaaa", "bbbb", "cccc"] {
            outbound.push(delivery(QoS::AtLeastOnce, payload, None));
        }
        let per_message = outbound.queued().next().unwrap().message.size();
        let mut out = Vec::new();
        let mut dropped = Vec::new();
        // Room for two messages' bytes, though the window would take ten.
        outbound.next_batch(now, 10, 2 * per_message, 100, &mut out, &mut dropped);
        assert_eq!(payloads(&out), ["aaaa", "bbbb"]);
        assert_eq!(outbound.inflight_bytes(), 2 * per_message);
        // An acknowledgement frees its bytes.
        let Outgoing::Publish {
            packet_id: Some(first),
            ..
        } = &out[0]
        else {
            panic!("a QoS 1 publish has an id")
        };
        assert!(outbound.puback(*first).is_some());
        assert_eq!(outbound.inflight_bytes(), per_message);
        out.clear();
        outbound.next_batch(now, 10, 2 * per_message, 100, &mut out, &mut dropped);
        assert_eq!(payloads(&out), ["cccc"]);
        // One message larger than the limit still goes when nothing is in flight.
        let mut single = Outbound::default();
        single.push(delivery(
            QoS::AtLeastOnce,
            "a message larger than the limit",
            None,
        ));
        out.clear();
        single.next_batch(now, 10, 1, 100, &mut out, &mut dropped);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn window_limits_qos1_and_acks_open_it_mqtt_3_3_4_9() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        for payload in ["a", "b", "c"] {
            outbound.push(delivery(QoS::AtLeastOnce, payload, None));
        }
        let first = batch(&mut outbound, now, 2);
        assert_eq!(payloads(&first), ["a", "b"]);
        assert!(batch(&mut outbound, now, 2).is_empty());
        let Outgoing::Publish {
            packet_id: Some(id),
            ..
        } = &first[0]
        else {
            panic!()
        };
        assert!(outbound.puback(*id).is_some());
        assert!(outbound.puback(*id).is_none(), "a second PUBACK is ignored");
        assert_eq!(payloads(&batch(&mut outbound, now, 2)), ["c"]);
    }

    #[test]
    fn ids_are_never_reused_while_in_flight_mqtt_2_2_1_4() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        let mut ids = std::collections::HashSet::new();
        for _ in 0..3 {
            for _ in 0..8 {
                outbound.push(delivery(QoS::AtLeastOnce, "x", None));
            }
            for out in batch(&mut outbound, now, 1000) {
                let Outgoing::Publish {
                    packet_id: Some(id),
                    ..
                } = out
                else {
                    panic!()
                };
                assert!(ids.insert(id.get()), "id {id} reused");
            }
        }
        assert_eq!(outbound.inflight_len(), 24);
    }

    #[test]
    fn ids_wrap_and_skip_those_in_flight() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        outbound.push(delivery(QoS::AtLeastOnce, "held", None));
        let held = batch(&mut outbound, now, 10);
        let Outgoing::Publish {
            packet_id: Some(held_id),
            ..
        } = held[0]
        else {
            panic!()
        };
        assert_eq!(held_id.get(), 1);
        outbound.last_id = u16::MAX - 1;
        for _ in 0..3 {
            outbound.push(delivery(QoS::AtLeastOnce, "x", None));
        }
        let ids: Vec<u16> = batch(&mut outbound, now, 10)
            .into_iter()
            .map(|o| match o {
                Outgoing::Publish {
                    packet_id: Some(id),
                    ..
                } => id.get(),
                _ => panic!(),
            })
            .collect();
        assert_eq!(ids, [u16::MAX, 2, 3]);
    }

    #[test]
    fn qos2_flow_and_error_pubrec() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        outbound.push(delivery(QoS::ExactlyOnce, "a", None));
        outbound.push(delivery(QoS::ExactlyOnce, "b", None));
        let out = batch(&mut outbound, now, 10);
        let ids: Vec<PacketId> = out
            .iter()
            .map(|o| match o {
                Outgoing::Publish {
                    packet_id: Some(id),
                    ..
                } => *id,
                _ => panic!(),
            })
            .collect();
        assert!(
            outbound.pubcomp(ids[0]).is_none(),
            "PUBCOMP before PUBREC is ignored"
        );
        assert_eq!(
            outbound.pubrec(ids[0], ReasonCode::SUCCESS).0,
            PubRecOutcome::Release
        );
        assert_eq!(
            outbound.pubrec(ids[0], ReasonCode::SUCCESS).0,
            PubRecOutcome::Release
        );
        assert!(outbound.pubcomp(ids[0]).is_some());
        assert_eq!(
            outbound.pubrec(ids[1], ReasonCode::UNSPECIFIED_ERROR).0,
            PubRecOutcome::Dropped
        );
        assert_eq!(
            outbound.pubrec(ids[1], ReasonCode::SUCCESS).0,
            PubRecOutcome::Unknown
        );
        assert_eq!(outbound.inflight_len(), 0);
    }

    #[test]
    fn resend_keeps_the_original_order_mqtt_4_6_0_1() {
        let now = Instant::now();
        let mut outbound = Outbound {
            last_id: u16::MAX - 2,
            ..Outbound::default()
        };
        for (qos, payload) in [
            (QoS::AtLeastOnce, "1"),
            (QoS::ExactlyOnce, "2"),
            (QoS::AtLeastOnce, "3"),
            (QoS::ExactlyOnce, "4"),
        ] {
            outbound.push(delivery(qos, payload, None));
        }
        let out = batch(&mut outbound, now, 10);
        let id_of = |i: usize| match &out[i] {
            Outgoing::Publish {
                packet_id: Some(id),
                ..
            } => *id,
            _ => panic!(),
        };
        // Message 2 reached PUBREL; ids wrapped (65534, 65535, 1, 2) but order is by sending.
        assert_eq!(
            outbound.pubrec(id_of(1), ReasonCode::SUCCESS).0,
            PubRecOutcome::Release
        );
        let resent = outbound.resend_all(10);
        assert_eq!(
            payloads(&resent),
            ["1", &format!("rel{}", id_of(1).get()), "3", "4"]
        );
        assert!(resent.iter().all(|o| match o {
            Outgoing::Publish { dup, .. } => *dup,
            Outgoing::PubRel { .. } => true,
        }));
    }

    #[test]
    fn resends_respect_a_lower_receive_maximum_after_reconnect_mqtt_3_3_4_9() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        for payload in ["1", "2", "3", "4"] {
            outbound.push(delivery(QoS::AtLeastOnce, payload, None));
        }
        outbound.push(delivery(QoS::AtLeastOnce, "new", None));
        let first = batch(&mut outbound, now, 4);
        assert_eq!(payloads(&first), ["1", "2", "3", "4"]);
        // Reconnect with Receive Maximum 2.
        let resent = outbound.resend_all(2);
        assert_eq!(payloads(&resent), ["1", "2"]);
        assert!(batch(&mut outbound, now, 2).is_empty(), "window full");
        let Outgoing::Publish {
            packet_id: Some(id),
            ..
        } = &resent[0]
        else {
            panic!()
        };
        assert!(outbound.puback(*id).is_some());
        let next = batch(&mut outbound, now, 2);
        assert_eq!(
            payloads(&next),
            ["3"],
            "deferred resends go first, one per free slot"
        );
        let Outgoing::Publish { dup, packet_id, .. } = &next[0] else {
            panic!()
        };
        assert!(*dup);
        let Outgoing::Publish {
            packet_id: Some(first_id_of_3),
            ..
        } = &first[2]
        else {
            panic!()
        };
        assert_eq!(
            packet_id.as_ref(),
            Some(first_id_of_3),
            "same packet id [MQTT-4.4.0-1]"
        );
    }

    #[test]
    fn expired_messages_are_not_sent_mqtt_3_3_2_5() {
        let now = Instant::now();
        let mut outbound = Outbound::default();
        outbound.push(delivery(
            QoS::AtLeastOnce,
            "old",
            Some(now + Duration::from_secs(5)),
        ));
        outbound.push(delivery(QoS::AtLeastOnce, "new", None));
        let mut out = Vec::new();
        let mut dropped = Vec::new();
        outbound.next_batch(
            now + Duration::from_secs(5),
            10,
            usize::MAX,
            100,
            &mut out,
            &mut dropped,
        );
        assert_eq!(payloads(&out), ["new"]);
        assert_eq!(dropped.len(), 1);
        assert_eq!(dropped[0].1, DropReason::Expired);
    }

    #[test]
    fn fits_counts_messages_and_bytes_and_an_empty_queue_takes_anything() {
        let mut outbound = Outbound::default();
        assert!(
            outbound.fits(1 << 30, 1, 10),
            "an empty queue takes any message"
        );
        outbound.push(delivery(QoS::AtLeastOnce, "xxxx", None));
        // "t" + "xxxx": 5 bytes queued.
        assert_eq!(outbound.pending_bytes(), 5);
        assert!(outbound.fits(5, 2, 10));
        assert!(!outbound.fits(6, 2, 10), "bytes");
        assert!(!outbound.fits(1, 1, 10), "messages");
        assert!(outbound.is_half_empty(2, 10));
        assert!(!outbound.is_half_empty(1, 10));
    }

    #[test]
    fn evict_oldest_makes_room_in_order() {
        let mut outbound = Outbound::default();
        for payload in ["1", "2", "3", "4"] {
            outbound.push(delivery(QoS::AtLeastOnce, payload, None));
        }
        let mut evicted = Vec::new();
        outbound.evict_oldest(2, 3, 1 << 20, &mut evicted);
        let gone: Vec<&[u8]> = evicted.iter().map(|d| &d.message.payload[..]).collect();
        assert_eq!(gone, [b"1", b"2"]);
        assert_eq!(outbound.pending_len(), 2);
        assert_eq!(outbound.pending_bytes(), 4);
    }

    #[test]
    fn drop_qos0_takes_only_qos0_in_order() {
        let mut outbound = Outbound::default();
        for (qos, payload) in [
            (QoS::AtMostOnce, "a"),
            (QoS::AtLeastOnce, "b"),
            (QoS::AtMostOnce, "c"),
        ] {
            outbound.push(delivery(qos, payload, None));
        }
        let dropped = outbound.drop_qos0();
        let gone: Vec<&[u8]> = dropped.iter().map(|d| &d.message.payload[..]).collect();
        assert_eq!(gone, [b"a", b"c"]);
        assert_eq!(outbound.pending_len(), 1);
        assert_eq!(outbound.pending_bytes(), 2);
        assert!(outbound.drop_qos0().is_empty());
    }
}
