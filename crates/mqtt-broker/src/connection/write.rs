//! The writer: the only task that writes to the socket. It empties the control queue first
//! (CONNACK, acks, resends), then moves queued messages into flight within the client's window,
//! encoding many packets into one buffer per system call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use mqtt_packets::{Disconnect, Packet, Protocol, PubRel, QoS};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::warn;

use crate::alias::OutboundAliases;
use crate::hooks::{DropReason, HookEvents};
use crate::message::Delivery;
use crate::outbound::Outgoing;
use crate::session::{Close, ConnectionHandle, Control, Session};
use crate::storage::{StorageEvent, StoredFlow};
use crate::sys;
use crate::{ClientInfo, Server};

/// With Request Problem Information 0, Reason Strings and User Properties may go only on
/// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
pub(super) fn strip_problem_information(packet: &mut Packet) {
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

/// Tells storage hooks which queued messages the writer just put in flight (with their packet
/// ids) or dropped.
pub(super) fn persist_flow(
    server: &Server,
    client_id: &str,
    outgoing: &[Outgoing],
    dropped: &[(crate::message::Delivery, DropReason)],
) {
    let hooks = &server.inner.hooks;
    for item in outgoing {
        if let Outgoing::Publish {
            packet_id: Some(packet_id),
            delivery,
            dup: false,
        } = item
            && delivery.qos == QoS::ExactlyOnce
        {
            hooks.storage(&StorageEvent::MessageFlow {
                client_id,
                seq: delivery.seq,
                flow: StoredFlow::Published(packet_id.get()),
            });
        }
    }
    for (delivery, _) in dropped {
        if delivery.qos > QoS::AtMostOnce {
            hooks.storage(&StorageEvent::MessageRemoved {
                client_id,
                seq: delivery.seq,
                qos: delivery.qos,
            });
        }
    }
}

#[allow(clippy::manual_async_fn)] // An `async fn` would hold its arguments twice.
pub(super) fn write_loop<W: AsyncWrite + Unpin>(
    server: Server,
    session: Arc<Session>,
    client: Arc<ClientInfo>,
    handle: ConnectionHandle,
    mut writer: W,
) -> impl Future<Output = ()> {
    // An `async` block rather than an `async fn`, whose arguments would stay in the future
    // beside the locals they are moved into, for as long as the connection lasts.
    async move {
        const BATCH: usize = 256;
        let inner = &server.inner;
        let buffer_size = inner.options.write_buffer_size.max(1024);
        let limits = &inner.flow_limits;
        // Allocated when there is something to send, and given back before going idle.
        let mut buf = BytesMut::new();
        let mut control = Vec::new();
        let mut outgoing = Vec::new();
        let mut dropped = Vec::new();
        // Messages whose payload goes out from where it lies, after `buf`'s bytes up to the
        // offset given.
        let mut payloads: Vec<(usize, Delivery)> = Vec::new();
        let vectored = writer.is_write_vectored();
        let protocol = client.protocol;
        // Outbound topic aliases belong to this connection only [MQTT-3.3.2-7].
        let mut aliases: Option<Box<OutboundAliases>> = None;
        loop {
            // Read each round: a hook may be added while the connection lasts.
            let encode_hooks = inner.hooks.provides(HookEvents::ON_PACKET_ENCODE);
            let sent_hooks = inner.hooks.provides(HookEvents::ON_PACKET_SENT);
            let qos_publish_hooks = inner.hooks.provides(HookEvents::ON_QOS_PUBLISH);
            // Clear before draining: a message queued after this point wakes us again.
            handle.wake_pending.store(false, Ordering::Release);
            let now = Instant::now();
            // Once the connection is closing, only control packets already queued still go out,
            // then the DISCONNECT: a busy queue must not keep a closing connection open.
            let closing = handle.close.lock().is_some();
            let mut room_made = Vec::new();
            let mut stream_retained = false;
            let (peer, current) = {
                let mut guard = session.state.lock();
                let state = &mut *guard;
                let current =
                    state.last_generation == handle.generation && state.connection.is_some();
                if current {
                    // Taken rather than drained, so that the session does not keep the queue's
                    // capacity (a kilobyte for the CONNACK alone) while the connection idles.
                    control.extend(std::mem::take(&mut state.control));
                    if !control.is_empty() && handle.answers_waiting.load(Ordering::Relaxed) {
                        // The reader waits for its answers to be taken (see
                        // `Connection::wait_for_answers`).
                        handle.room.notify_one();
                    }
                    if !closing {
                        let window = state.peer.window;
                        state.outbound.next_batch(
                            now,
                            window,
                            limits.inflight_bytes,
                            BATCH,
                            &mut outgoing,
                            &mut dropped,
                        );
                        // Publishers waiting for room go on once the queue is half empty.
                        room_made = state.flow.room_made(&state.outbound, limits);
                        // Retained messages of a new subscription follow as the queue drains.
                        stream_retained = state.flow.has_retained()
                            && state
                                .outbound
                                .is_half_empty(limits.online_messages, limits.bytes);
                        if state.persist {
                            persist_flow(&server, &client.client_id, &outgoing, &dropped);
                        }
                        if outgoing.is_empty() {
                            state.outbound.release_idle_memory();
                        }
                    }
                }
                (state.peer, current)
            };
            crate::flow::wake(room_made);
            let streamed =
                stream_retained && crate::subscribe::send_retained(&server, &session, &client, now);
            if !current {
                // Left the session while closing: what was queued before still goes out.
                control.extend(handle.unsent.lock().drain(..));
            }
            // Whether this round took anything: if so, more may be waiting (a full batch, or window
            // slots freed by dropped messages), so go round again before sleeping.
            let progressed =
                !control.is_empty() || !outgoing.is_empty() || !dropped.is_empty() || streamed;
            let mut packets = 0u64;
            let mut messages = 0u64;
            let mut sent_by_qos = [0u64; 3];
            let mut sent = Vec::new();
            if progressed && buf.capacity() == 0 {
                buf.reserve(buffer_size);
            }
            // Packets that no hook sees are encoded without building a `Packet`: acks from
            // their few bytes, and messages (when no alias replaces their topic) straight from
            // the shared message. The session lock is not held meanwhile: publishers queueing
            // to this session would wait for it.
            let direct_acks = !encode_hooks && !sent_hooks;
            let sendable = (peer.maximum_packet_size as usize)
                .min(mqtt_packets::PROTOCOL_MAXIMUM_PACKET_SIZE as usize);
            let direct = direct_acks
                && !qos_publish_hooks
                && !(protocol.is_v5() && peer.topic_alias_maximum > 0);
            let items = control
                .drain(..)
                .chain(outgoing.drain(..).map(Control::Outgoing));
            for item in items {
                if direct
                    && let Control::Outgoing(Outgoing::Publish {
                        packet_id,
                        delivery,
                        dup,
                    }) = &item
                    && let Some(publish) =
                        delivery.as_publish_ref(*packet_id, *dup, protocol.is_v5())
                    && publish.encoded_len(protocol) <= sendable
                {
                    // A large payload is written from the shared message (a vectored write)
                    // rather than copied into the buffer.
                    let apart = vectored && publish.payload.len() >= VECTORED_PAYLOAD;
                    let encoded = if apart {
                        publish.encode_head(protocol, &mut buf)
                    } else {
                        publish.encode(protocol, &mut buf)
                    };
                    if let Err(error) = encoded {
                        warn!(client_id = %client.client_id, %error, "cannot encode packet");
                        continue;
                    }
                    packets += 1;
                    messages += 1;
                    if let Some(count) = sent_by_qos.get_mut(usize::from(delivery.qos.as_u8())) {
                        *count += 1;
                    }
                    if apart && let Control::Outgoing(Outgoing::Publish { delivery, .. }) = item {
                        payloads.push((buf.len(), delivery));
                    }
                    continue;
                }
                if direct_acks
                    && let Control::Ack(ack) = &item
                    && ack.encoded_len(protocol) <= peer.maximum_packet_size as usize
                {
                    if let Err(error) = ack.encode(protocol, &mut buf) {
                        warn!(client_id = %client.client_id, %error, "cannot encode packet");
                        continue;
                    }
                    packets += 1;
                    continue;
                }
                let (packet, publish_id) = match item {
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
                    }) => {
                        let publish = delivery.to_publish(packet_id, dup, now);
                        (Packet::Publish(publish), packet_id)
                    }
                };
                let mut packet = packet;
                if encode_hooks {
                    for hook in inner.hooks.with(HookEvents::ON_PACKET_ENCODE) {
                        packet = hook.on_packet_encode(&client, packet);
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
                    let aliases = aliases.get_or_insert_with(|| {
                        Box::new(OutboundAliases::new(peer.topic_alias_maximum))
                    });
                    let plan = aliases.plan(&publish.topic);
                    let topic = publish.topic.clone();
                    OutboundAliases::apply(plan, publish);
                    alias_plan = Some((plan, topic));
                }
                // Never send a packet larger than the client's Maximum Packet Size: drop it as if
                // delivered [MQTT-3.1.2-24] [MQTT-3.1.2-25]. Nor one the protocol cannot express
                // (subscription identifiers added to a message at the limit): it would fail to
                // encode and leave its in-flight entry unsent forever (audit L8).
                if packet.encoded_len(protocol) > sendable {
                    if let (Packet::Publish(publish), Some((_, topic))) = (&mut packet, &alias_plan)
                    {
                        publish.topic = topic.clone();
                        publish.properties.topic_alias = None;
                    }
                    if let Packet::Publish(publish) = &packet {
                        if let Some(id) = publish_id {
                            let (seq, persist) = {
                                let mut state = session.state.lock();
                                (state.outbound.forget(id), state.persist)
                            };
                            if persist && let Some(seq) = seq {
                                inner.hooks.storage(&StorageEvent::MessageRemoved {
                                    client_id: &client.client_id,
                                    seq,
                                    qos: publish.qos,
                                });
                            }
                        }
                        server.dropped(&client.client_id, publish, DropReason::TooLargeForClient);
                    }
                    continue;
                }
                if let Err(error) = packet.encode(protocol, &mut buf) {
                    warn!(client_id = %client.client_id, %error, "cannot encode packet");
                    continue;
                }
                if let Some((plan, topic)) = alias_plan
                    && let Some(aliases) = aliases.as_mut()
                {
                    aliases.commit(plan, &topic);
                    // Hooks see the full topic.
                    if let Packet::Publish(publish) = &mut packet {
                        publish.topic = topic;
                    }
                }
                packets += 1;
                if let Packet::Publish(publish) = &packet {
                    messages += 1;
                    if let Some(count) = sent_by_qos.get_mut(usize::from(publish.qos.as_u8())) {
                        *count += 1;
                    }
                    if publish.qos > QoS::AtMostOnce
                        && inner.hooks.provides(HookEvents::ON_QOS_PUBLISH)
                    {
                        for hook in inner.hooks.with(HookEvents::ON_QOS_PUBLISH) {
                            hook.on_qos_publish(&client.client_id, publish, u32::from(publish.dup));
                        }
                    }
                }
                if sent_hooks {
                    sent.push(packet);
                }
            }
            for (delivery, reason) in dropped.drain(..) {
                let publish = delivery.to_publish(None, false, now);
                if reason == DropReason::PacketIdsExhausted {
                    for hook in inner.hooks.with(HookEvents::ON_PACKET_ID_EXHAUSTED) {
                        hook.on_packet_id_exhausted(&client.client_id, &publish);
                    }
                }
                server.dropped(&client.client_id, &publish, reason);
            }
            if !buf.is_empty() {
                let len = buf.len()
                    + payloads
                        .iter()
                        .map(|(_, delivery)| delivery.message.payload.len())
                        .sum::<usize>();
                let written = if payloads.is_empty() {
                    writer.write_all(&buf).await
                } else {
                    write_with_payloads(&mut writer, &buf, &payloads).await
                };
                if written.is_err() || writer.flush().await.is_err() {
                    handle.close(Close::Silent);
                    break;
                }
                buf.clear();
                payloads.clear();
                sys::add(&inner.info.bytes_sent, len as u64);
                sys::add(&inner.info.packets_sent, packets);
                sys::add(&inner.info.messages_sent, messages);
                for (counter, count) in inner.info.messages_sent_by_qos.iter().zip(sent_by_qos) {
                    if count > 0 {
                        sys::add(counter, count);
                    }
                }
                for packet in &sent {
                    for hook in inner.hooks.with(HookEvents::ON_PACKET_SENT) {
                        hook.on_packet_sent(&client, packet, len);
                    }
                }
            }
            if streamed && packets == 0 {
                // Pages of retained messages that were all expired, refused or sparse: let the
                // other tasks of this thread run before the next page.
                tokio::task::yield_now().await;
            }
            if progressed && current && !closing {
                continue;
            }
            let close = handle.close.lock().clone();
            if let Some(close) = close {
                boxed_close_writer(inner, &mut writer, protocol, close).await;
                break;
            }
            // Going idle: give back the buffers a burst grew, so an idle connection holds none.
            if buf.capacity() > 0 {
                buf = BytesMut::new();
            }
            if control.capacity() > 0 {
                control = Vec::new();
            }
            if outgoing.capacity() > 0 {
                outgoing = Vec::new();
            }
            if dropped.capacity() > 0 {
                dropped = Vec::new();
            }
            if payloads.capacity() > 0 {
                payloads = Vec::new();
            }
            handle.wakeup.notified().await;
        }
    }
}

/// Payloads from this size up are written from the shared message by a vectored write; smaller
/// ones cost less to copy than to describe.
pub(super) const VECTORED_PAYLOAD: usize = 1024;

/// Writes `head` with each message's payload inserted at its offset: `payloads` holds, in
/// order, the offset in `head` where the payload belongs (right after its packet's head).
///
/// Cancel safety: none; the writer drops the connection when this fails.
pub(super) async fn write_with_payloads<W: AsyncWrite + Unpin>(
    writer: &mut W,
    head: &[u8],
    payloads: &[(usize, Delivery)],
) -> std::io::Result<()> {
    use std::io::IoSlice;
    let mut slices = Vec::with_capacity(payloads.len() * 2 + 1);
    let mut at = 0;
    for (end, delivery) in payloads {
        if let Some(part) = head.get(at..*end)
            && !part.is_empty()
        {
            slices.push(IoSlice::new(part));
        }
        slices.push(IoSlice::new(&delivery.message.payload));
        at = *end;
    }
    if let Some(part) = head.get(at..)
        && !part.is_empty()
    {
        slices.push(IoSlice::new(part));
    }
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        let written = writer.write_vectored(rest).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut rest, written);
    }
    Ok(())
}

/// [`close_writer`] in a box built here, outside the writer's future (see [`serve`]):
/// it runs once, and the writer's future lasts as long as the connection.
pub(super) fn boxed_close_writer<'a, W: AsyncWrite + Unpin>(
    inner: &'a crate::server::Inner,
    writer: &'a mut W,
    protocol: Protocol,
    close: Close,
) -> Pin<Box<impl Future<Output = ()> + 'a>> {
    Box::pin(close_writer(inner, writer, protocol, close))
}

/// Ends the write half: the DISCONNECT the close asks for (v5 only), then the shutdown (unless
/// the client is left to close first).
pub(super) async fn close_writer<W: AsyncWrite + Unpin>(
    inner: &crate::server::Inner,
    writer: &mut W,
    protocol: Protocol,
    close: Close,
) {
    let disconnect = match &close {
        Close::Silent => None,
        Close::Disconnect(code) => Some(Disconnect::new(*code)),
        Close::Redirect(code, reference) => {
            let mut disconnect = Disconnect::new(*code);
            disconnect.properties.server_reference = Some(reference.clone());
            Some(disconnect)
        }
    };
    if let Some(disconnect) = disconnect
        && protocol.is_v5()
    {
        let mut out = BytesMut::new();
        if disconnect.encode(protocol, &mut out).is_ok() {
            writer.write_all(&out).await.ok();
            writer.flush().await.ok();
            sys::add(&inner.info.bytes_sent, out.len() as u64);
        }
    }
    if !inner
        .options
        .capabilities
        .compatibilities
        .passive_client_disconnect
        || matches!(close, Close::Silent)
    {
        writer.shutdown().await.ok();
    }
}
