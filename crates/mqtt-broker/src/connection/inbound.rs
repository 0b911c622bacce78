//! Packets from the client: dispatch, the inbound PUBLISH rules, and the QoS acknowledgement
//! flows of both directions.

use mqtt_packets::{Disconnect, Packet, PacketId, Publish, QoS, ReasonCode, SubAck, UnsubAck};
use tracing::{debug, warn};

use super::Connection;
use super::End;
use crate::close::{ConnectionError, Violation};
use crate::hooks::HookEvents;
use crate::outbound::PubRecOutcome;
use crate::protocol::{self, publish::Qos2};
use crate::server::PublishOutcome;
use crate::session::Ack;
use crate::storage::{StorageEvent, StoredFlow};

impl Connection {
    /// Runs the `on_packet_read` hooks, which may change the packet or refuse it.
    pub(super) fn read_hooks(&self, packet: Packet) -> Result<Packet, ConnectionError> {
        let hooks = &self.server.inner.hooks;
        if !hooks.provides(HookEvents::ON_PACKET_READ) {
            return Ok(packet);
        }
        let mut packet = packet;
        for hook in hooks.with(HookEvents::ON_PACKET_READ) {
            let packet_type = packet.packet_type();
            packet = hook.on_packet_read(&self.client, packet).map_err(|code| {
                ConnectionError::RefusedByHook {
                    hook: hook.id().to_owned(),
                    packet: packet_type,
                    code,
                }
            })?;
        }
        Ok(packet)
    }

    /// PUBACK: ends a QoS 1 flow of ours.
    pub(super) fn on_puback(&mut self, packet_id: PacketId) {
        let (delivery, persist) = {
            let mut state = self.session.state.lock();
            (state.outbound.puback(packet_id), state.persist)
        };
        if persist && let Some(delivery) = &delivery {
            self.message_removed(delivery.seq, delivery.qos);
        }
        self.completed(packet_id, delivery.is_some());
    }

    /// PUBREC: the first answer to a QoS 2 message of ours; answered with PUBREL.
    pub(super) fn on_pubrec(&mut self, packet_id: PacketId, reason_code: ReasonCode) {
        let outcome = {
            let mut state = self.session.state.lock();
            let (outcome, seq) = state.outbound.pubrec(packet_id, reason_code);
            // Under the session lock, so that it cannot land after a takeover ended it.
            if state.persist
                && let Some(seq) = seq
            {
                if outcome == PubRecOutcome::Dropped {
                    self.message_removed(seq, QoS::ExactlyOnce);
                } else {
                    self.server.inner.hooks.storage(&StorageEvent::MessageFlow {
                        client_id: &self.client.client_id,
                        seq,
                        flow: StoredFlow::Released(packet_id.get()),
                    });
                }
            }
            outcome
        };
        match outcome {
            // Queued with the read's acknowledgements, in the order of the PUBRECs
            // [MQTT-4.6.0-4] [MQTT-4.6.0-5].
            PubRecOutcome::Release => {
                self.send_ack(Ack::pubrel(packet_id, ReasonCode::SUCCESS));
            }
            PubRecOutcome::Dropped => {
                for hook in self.server.inner.hooks.with(HookEvents::ON_QOS_DROPPED) {
                    hook.on_qos_dropped(&self.client, packet_id.get());
                }
                self.session.state.lock().wake_writer();
            }
            PubRecOutcome::Unknown => self.send_ack(Ack::pubrel(
                packet_id,
                ReasonCode::PACKET_IDENTIFIER_NOT_FOUND,
            )),
        }
    }

    /// PUBCOMP: ends a QoS 2 flow of ours.
    pub(super) fn on_pubcomp(&mut self, packet_id: PacketId) {
        let (seq, persist) = {
            let mut state = self.session.state.lock();
            (state.outbound.pubcomp(packet_id), state.persist)
        };
        if persist && let Some(seq) = seq {
            self.message_removed(seq, QoS::ExactlyOnce);
        }
        self.completed(packet_id, seq.is_some());
    }

    /// PUBREL: ends an inbound QoS 2 flow; an unknown id is answered 0x92 [MQTT-3.7.2-1].
    pub(super) fn on_pubrel(&mut self, packet_id: PacketId) {
        let (known, persist) = {
            let mut state = self.session.state.lock();
            (state.inbound_qos2.remove(&packet_id.get()), state.persist)
        };
        if known && persist {
            self.server
                .inner
                .hooks
                .storage(&StorageEvent::InboundQos2Released {
                    client_id: &self.client.client_id,
                    packet_id: packet_id.get(),
                });
        }
        let code = if known {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.send_ack(Ack::pubcomp(packet_id, code));
    }

    /// Handles one packet; `Some` ends the connection.
    pub(super) fn handle_packet(&mut self, packet: Packet) -> Option<End> {
        // No clone of the server here: its reference count is shared by every connection, and
        // bumping it per packet makes the cores fight over one cache line.
        self.counters.packets += 1;
        let hooks = &self.server.inner.hooks;
        if !hooks.provides(HookEvents::ON_PACKET_READ)
            && !hooks.provides(HookEvents::ON_PACKET_PROCESSED)
        {
            // The acknowledgements of the QoS flows, most of what a busy connection reads, are
            // handled in place: a `Packet` is large, and the general path below moves it.
            match &packet {
                Packet::PubAck(ack) => {
                    self.on_puback(ack.packet_id);
                    return None;
                }
                Packet::PubRec(rec) => {
                    self.on_pubrec(rec.packet_id, rec.reason_code);
                    return None;
                }
                Packet::PubComp(comp) => {
                    self.on_pubcomp(comp.packet_id);
                    return None;
                }
                Packet::PubRel(rel) => {
                    self.on_pubrel(rel.packet_id);
                    return None;
                }
                _ => {}
            }
        }
        let packet = match self.read_hooks(packet) {
            Ok(packet) => packet,
            Err(error) => return Some(self.fail(error)),
        };
        let processed = self
            .server
            .inner
            .hooks
            .provides(HookEvents::ON_PACKET_PROCESSED)
            .then(|| packet.clone());
        let end = match packet {
            Packet::Publish(publish) => self.handle_publish(publish),
            Packet::PubAck(ack) => {
                self.on_puback(ack.packet_id);
                None
            }
            Packet::PubRec(rec) => {
                self.on_pubrec(rec.packet_id, rec.reason_code);
                None
            }
            Packet::PubComp(comp) => {
                self.on_pubcomp(comp.packet_id);
                None
            }
            Packet::PubRel(rel) => {
                self.on_pubrel(rel.packet_id);
                None
            }
            Packet::Subscribe(subscribe) => {
                let packet_id = subscribe.packet_id;
                let this = &*self;
                let acknowledge = |codes: &[ReasonCode]| {
                    // Queued before the retained messages it triggers are (and to this
                    // connection only, see `Connection::send`).
                    this.send(SubAck::new(packet_id, codes.to_vec()).into());
                };
                match crate::subscribe::subscribe(
                    &self.server,
                    &self.session,
                    &self.client,
                    subscribe,
                    acknowledge,
                ) {
                    Ok(_) => None,
                    Err(violation) => Some(self.fail(violation)),
                }
            }
            Packet::Unsubscribe(unsubscribe) => {
                let packet_id = unsubscribe.packet_id;
                let codes = crate::subscribe::unsubscribe(
                    &self.server,
                    &self.session,
                    &self.client,
                    unsubscribe,
                );
                self.send(UnsubAck::new(packet_id, codes).into());
                None
            }
            Packet::PingReq => {
                self.send(Packet::PingResp);
                None
            }
            Packet::Disconnect(disconnect) => Some(self.handle_disconnect(&disconnect)),
            Packet::Connect(_) => {
                // A second CONNECT [MQTT-3.1.0-2].
                Some(self.fail(Violation::SecondConnect))
            }
            Packet::Auth(auth) if self.auth.is_some() => {
                // Re-authentication: handled on the reader's task (see `read_loop`).
                self.pending_auth = Some(Box::new(auth));
                None
            }
            Packet::Auth(_) => {
                // No enhanced authentication was negotiated (§3.15).
                Some(self.fail(Violation::AuthWithoutMethod))
            }
            packet @ (Packet::ConnAck(_)
            | Packet::SubAck(_)
            | Packet::UnsubAck(_)
            | Packet::PingResp) => {
                // Packets only a server sends (§2.1.2).
                Some(self.fail(Violation::ServerPacket(packet.packet_type())))
            }
        };
        if let Some(packet) = processed {
            let error = match &end {
                Some(End::Error(error)) => Some(error),
                _ => None,
            };
            for hook in self
                .server
                .inner
                .hooks
                .with(HookEvents::ON_PACKET_PROCESSED)
            {
                hook.on_packet_processed(&self.client, &packet, error);
            }
        }
        end
    }

    /// A queued message of this (persistent) session left it.
    pub(super) fn message_removed(&self, seq: u64, qos: QoS) {
        self.server
            .inner
            .hooks
            .storage(&StorageEvent::MessageRemoved {
                client_id: &self.client.client_id,
                seq,
                qos,
            });
    }

    pub(super) fn completed(&mut self, packet_id: PacketId, known: bool) {
        if known {
            // The window has room again: the writer is woken once, after the whole read, if
            // messages wait for it.
            self.counters.wake_writer = true;
            for hook in self.server.inner.hooks.with(HookEvents::ON_QOS_COMPLETE) {
                hook.on_qos_complete(&self.client, packet_id.get());
            }
        }
    }

    /// A PUBLISH from the client: the rules of [`protocol::publish`], then routing, then its
    /// acknowledgement (held until the read is handled, see `acks.rs`).
    pub(super) fn handle_publish(&mut self, publish: Publish) -> Option<End> {
        let caps = &self.server.inner.options.capabilities;
        if let Some(count) = self
            .counters
            .messages
            .get_mut(usize::from(publish.qos.as_u8()))
        {
            *count += 1;
        }
        let mut publish = publish;
        let admission =
            match protocol::publish::admit(&mut publish, self.protocol, caps, &mut self.aliases) {
                Ok(admission) => admission,
                Err(error) => {
                    if error.is_limit() {
                        warn!(client_id = %self.client.client_id, %error, "closing");
                    }
                    return Some(self.fail(error));
                }
            };
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        if let protocol::publish::Admission::Refuse(code) = admission {
            // [MQTT-3.3.2-4]: refused in the acknowledgement, in order with the others
            // [MQTT-4.6.0-2]; QoS 0 is dropped.
            debug!(client_id = %self.client.client_id, "payload is not the UTF-8 it claims to be");
            if let Some(id) = packet_id {
                self.send_ack(protocol::publish::ack(qos, id, code));
            }
            return None;
        }
        if qos == QoS::ExactlyOnce
            && let Some(id) = packet_id
        {
            let received = {
                let state = self.session.state.lock();
                protocol::publish::qos2(&state.inbound_qos2, id, caps.receive_maximum)
            };
            match received {
                Qos2::New => {}
                // Acknowledged again, delivered once; held like the first PUBREC until what it
                // acknowledges is durable.
                Qos2::Duplicate => {
                    self.send_ack(Ack::pubrec(id, ReasonCode::SUCCESS));
                    return None;
                }
                Qos2::OverReceiveMaximum => {
                    return Some(self.fail(Violation::ReceiveMaximumExceeded));
                }
            }
        }
        let outcome = self
            .server
            .publish_staged(&self.client, publish, &mut self.staged);
        if let PublishOutcome::Refused(code) = outcome {
            debug!(client_id = %self.client.client_id, %code, "publish refused");
        }
        let code = protocol::publish::ack_code(outcome, self.protocol);
        let id = packet_id?;
        if qos == QoS::ExactlyOnce && !code.is_error() {
            let mut state = self.session.state.lock();
            state.inbound_qos2.insert(id.get());
            // Under the session lock, so that it cannot land after a takeover ended it.
            if state.persist {
                self.server.inner.hooks.storage(&StorageEvent::InboundQos2 {
                    client_id: &self.client.client_id,
                    packet_id: id.get(),
                });
            }
        }
        self.send_ack(protocol::publish::ack(qos, id, code));
        None
    }

    pub(super) fn handle_disconnect(&mut self, disconnect: &Disconnect) -> End {
        let caps = &self.server.inner.options.capabilities;
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry_zero && expiry != 0 {
                // §3.14.2.2.2: a protocol error, and not a clean disconnect.
                return self.fail(Violation::SessionExpiryAfterZero);
            }
            self.session.state.lock().expiry_interval =
                expiry.min(caps.maximum_session_expiry_interval);
        }
        let keep_will = disconnect.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE
            || disconnect.reason_code.is_error();
        if !keep_will {
            // Discarded now [MQTT-3.1.2-10], not when the connection is torn down.
            self.session.state.lock().will = None;
        }
        debug!(client_id = %self.client.client_id, reason = %disconnect.reason_code, "client disconnected");
        End::ClientDisconnect { will: keep_will }
    }
}
