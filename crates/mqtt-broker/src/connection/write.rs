//! The writer: the only task that writes to the socket. It empties the control queue first
//! (CONNACK, acks, resends), then moves queued messages into flight within the client's window,
//! encoding many packets into one buffer per system call.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use mqtt_packets::{Disconnect, Packet, Protocol, QoS};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::hooks::{DropReason, HookEvents};
use crate::message::Delivery;
use crate::outbound::Outgoing;
use crate::protocol::encode::{Encoded, Encoder, Observers};
use crate::session::PeerLimits;
use crate::session::{Close, ConnectionHandle, Control, Session};
use crate::storage::{StorageEvent, StoredFlow};
use crate::sys;
use crate::{ClientInfo, Server};

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

/// The writer's buffers: allocated when there is something to send, and given back before the
/// writer goes idle, so an idle connection holds none.
#[derive(Default)]
struct Buffers {
    /// The encoded packets of one round.
    buf: BytesMut,
    control: Vec<Control>,
    outgoing: Vec<Outgoing>,
    dropped: Vec<(Delivery, DropReason)>,
    /// Messages whose payload goes out from where it lies, after `buf`'s bytes up to the
    /// offset given.
    payloads: Vec<(usize, Delivery)>,
}

impl Buffers {
    /// Gives back the memory a burst grew.
    fn release(&mut self) {
        if self.buf.capacity() > 0 {
            self.buf = BytesMut::new();
        }
        if self.control.capacity() > 0 {
            self.control = Vec::new();
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
        }
        if self.dropped.capacity() > 0 {
            self.dropped = Vec::new();
        }
        if self.payloads.capacity() > 0 {
            self.payloads = Vec::new();
        }
    }
}

/// What a round took from the session, besides the packets in [`Buffers`].
struct Taken {
    /// The client's limits.
    peer: PeerLimits,
    /// Whether this connection still holds the session.
    current: bool,
    /// Whether retained messages of a new subscription may follow now.
    stream_retained: bool,
}

/// What a round wrote, for the counters and `on_packet_sent` hooks.
#[derive(Default)]
struct Written {
    packets: u64,
    messages: u64,
    by_qos: [u64; 3],
    sent: Vec<Packet>,
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
        let inner = &server.inner;
        let buffer_size = inner.options.write_buffer_size.max(1024);
        let mut buffers = Buffers::default();
        let mut encoder = Encoder::new(client.protocol, writer.is_write_vectored());
        loop {
            let observers = Observers::of(&inner.hooks);
            // Clear before draining: a message queued after this point wakes us again.
            handle.wake_pending.store(false, Ordering::Release);
            let now = Instant::now();
            // Once the connection is closing, only control packets already queued still go out,
            // then the DISCONNECT: a busy queue must not keep a closing connection open.
            let closing = handle.close.lock().is_some();
            let taken = take(
                &server,
                &session,
                &client,
                &handle,
                closing,
                now,
                &mut buffers,
            );
            let streamed = taken.stream_retained
                && crate::subscribe::send_retained(&server, &session, &client, now);
            if !taken.current {
                // Left the session while closing: what was queued before still goes out.
                buffers.control.extend(handle.unsent.lock().drain(..));
            }
            // Whether this round took anything: if so, more may be waiting (a full batch, or
            // window slots freed by dropped messages), so go round again before sleeping.
            let progressed = !buffers.control.is_empty()
                || !buffers.outgoing.is_empty()
                || !buffers.dropped.is_empty()
                || streamed;
            if progressed && buffers.buf.capacity() == 0 {
                buffers.buf.reserve(buffer_size);
            }
            let written = encode_round(
                &server,
                &session,
                &client,
                &mut encoder,
                (&taken.peer, observers, now),
                &mut buffers,
            );
            report_dropped(&server, &client, &mut buffers.dropped, now);
            let packets = written.packets;
            if !buffers.buf.is_empty()
                && flush(inner, &mut writer, &mut buffers, &client, written)
                    .await
                    .is_err()
            {
                handle.close(Close::Silent);
                break;
            }
            if streamed && packets == 0 {
                // Pages of retained messages that were all expired, refused or sparse: let the
                // other tasks of this thread run before the next page.
                tokio::task::yield_now().await;
            }
            if progressed && taken.current && !closing {
                continue;
            }
            let close = handle.close.lock().clone();
            if let Some(close) = close {
                boxed_close_writer(inner, &mut writer, client.protocol, close).await;
                break;
            }
            // Going idle: give back the buffers a burst grew.
            buffers.release();
            handle.wakeup.notified().await;
        }
    }
}

/// Under the session lock: takes the control queue and the next batch of messages within the
/// client's window, and notes what the round frees (room for waiting publishers, retained
/// messages to stream).
fn take(
    server: &Server,
    session: &Session,
    client: &ClientInfo,
    handle: &ConnectionHandle,
    closing: bool,
    now: Instant,
    buffers: &mut Buffers,
) -> Taken {
    const BATCH: usize = 256;
    let limits = &server.inner.flow_limits;
    let mut room_made = Vec::new();
    let mut stream_retained = false;
    let (peer, current) = {
        let mut guard = session.state.lock();
        let state = &mut *guard;
        let current = state.last_generation == handle.generation && state.connection.is_some();
        if current {
            // Taken rather than drained, so that the session does not keep the queue's
            // capacity (a kilobyte for the CONNACK alone) while the connection idles.
            buffers.control.extend(std::mem::take(&mut state.control));
            if !buffers.control.is_empty() && handle.answers_waiting.load(Ordering::Relaxed) {
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
                    &mut buffers.outgoing,
                    &mut buffers.dropped,
                );
                // Publishers waiting for room go on once the queue is half empty.
                room_made = state.flow.room_made(&state.outbound, limits);
                // Retained messages of a new subscription follow as the queue drains.
                stream_retained = state.flow.has_retained()
                    && state
                        .outbound
                        .is_half_empty(limits.online_messages, limits.bytes);
                if state.persist {
                    persist_flow(
                        server,
                        &client.client_id,
                        &buffers.outgoing,
                        &buffers.dropped,
                    );
                }
                if buffers.outgoing.is_empty() {
                    state.outbound.release_idle_memory();
                }
            }
        }
        (state.peer, current)
    };
    crate::flow::wake(room_made);
    Taken {
        peer,
        current,
        stream_retained,
    }
}

/// Encodes the round's control packets, then its messages, into the buffer. The session lock
/// is not held meanwhile: publishers queueing to this session would wait for it.
fn encode_round(
    server: &Server,
    session: &Session,
    client: &ClientInfo,
    encoder: &mut Encoder,
    round: (&PeerLimits, Observers, Instant),
    buffers: &mut Buffers,
) -> Written {
    let (peer, observers, now) = round;
    let hooks = &server.inner.hooks;
    let mut written = Written::default();
    let items = buffers
        .control
        .drain(..)
        .chain(buffers.outgoing.drain(..).map(Control::Outgoing));
    for item in items {
        match encoder.encode(item, peer, observers, hooks, client, now, &mut buffers.buf) {
            Encoded::Written { qos, apart, sent } => {
                written.packets += 1;
                if let Some(qos) = qos {
                    written.messages += 1;
                    if let Some(count) = written.by_qos.get_mut(usize::from(qos.as_u8())) {
                        *count += 1;
                    }
                }
                if let Some(delivery) = apart {
                    buffers.payloads.push((buffers.buf.len(), delivery));
                }
                if let Some(packet) = sent {
                    written.sent.push(*packet);
                }
            }
            Encoded::TooLarge { publish, packet_id } => {
                // Dropped as if delivered [MQTT-3.1.2-24] [MQTT-3.1.2-25].
                if let Some(id) = packet_id {
                    let (seq, persist) = {
                        let mut state = session.state.lock();
                        (state.outbound.forget(id), state.persist)
                    };
                    if persist && let Some(seq) = seq {
                        hooks.storage(&StorageEvent::MessageRemoved {
                            client_id: &client.client_id,
                            seq,
                            qos: publish.qos,
                        });
                    }
                }
                server.dropped(client, &publish, DropReason::TooLargeForClient);
            }
            Encoded::Unsendable(packet) => {
                debug!(client_id = %client.client_id, %packet, "packet too large for the client; not sent");
            }
            Encoded::Failed(error) => {
                warn!(client_id = %client.client_id, %error, "cannot encode packet");
            }
        }
    }
    written
}

/// Reports the messages the round dropped (expired, or without a packet identifier).
fn report_dropped(
    server: &Server,
    client: &ClientInfo,
    dropped: &mut Vec<(Delivery, DropReason)>,
    now: Instant,
) {
    let hooks = &server.inner.hooks;
    for (delivery, reason) in dropped.drain(..) {
        let publish = delivery.to_publish(None, false, now);
        if reason == DropReason::PacketIdsExhausted {
            for hook in hooks.with(HookEvents::ON_PACKET_ID_EXHAUSTED) {
                hook.on_packet_id_exhausted(client, &publish);
            }
        }
        server.dropped(client, &publish, reason);
    }
}

/// Writes the round's buffer (and the payloads written apart), then counts it and runs the
/// `on_packet_sent` hooks.
///
/// Cancel safety: none; the writer drops the connection when this fails.
async fn flush<W: AsyncWrite + Unpin>(
    inner: &crate::server::Inner,
    writer: &mut W,
    buffers: &mut Buffers,
    client: &ClientInfo,
    written: Written,
) -> std::io::Result<()> {
    let len = buffers.buf.len()
        + buffers
            .payloads
            .iter()
            .map(|(_, delivery)| delivery.message.payload.len())
            .sum::<usize>();
    if buffers.payloads.is_empty() {
        writer.write_all(&buffers.buf).await?;
    } else {
        write_with_payloads(writer, &buffers.buf, &buffers.payloads).await?;
    }
    writer.flush().await?;
    buffers.buf.clear();
    buffers.payloads.clear();
    let info = &inner.info;
    sys::add(&info.bytes_sent, len as u64);
    sys::add(&info.packets_sent, written.packets);
    sys::add(&info.messages_sent, written.messages);
    for (counter, count) in info.messages_sent_by_qos.iter().zip(written.by_qos) {
        if count > 0 {
            sys::add(counter, count);
        }
    }
    for packet in &written.sent {
        for hook in inner.hooks.with(HookEvents::ON_PACKET_SENT) {
            hook.on_packet_sent(client, packet, len);
        }
    }
    Ok(())
}

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
