//! The reader: reads, decodes and handles packets, waits for room in full subscriber queues,
//! and keeps the keep-alive deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use mqtt_packets::{DecodeContext, DecodeError, Packet, decode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Connection;
use super::End;
use crate::Server;
use crate::close::{ConnectionError, LimitExceeded};
use crate::protocol::keep_alive;
use crate::sys;

#[derive(Debug)]
pub(super) enum ReadError {
    Io(std::io::Error),
    Decode(DecodeError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(error) => write!(f, "I/O error: {error}"),
            Self::Decode(error) => write!(f, "{error}"),
        }
    }
}

/// Whether the buffered input starts with a PUBLISH (packet type 3, §2.1.2).
fn starts_with_publish(buf: &[u8]) -> bool {
    buf.first().is_some_and(|&byte| byte >> 4 == 3)
}

/// Lets the connections whose input is ready go first, once: wakes this task and returns
/// `Pending`, which puts it at the back of the worker's run queue (a task that wakes itself while
/// it runs is rescheduled as a yield). `tokio::task::yield_now` would not do: its wake-up goes to
/// the worker's LIFO slot, ahead of the others.
///
/// Why: when several sockets become readable together, Tokio runs the last task woken first.
/// Without this, a PUBLISH could be routed before a SUBSCRIBE or UNSUBSCRIBE that reached the
/// server earlier on another connection, in the same batch; a client that publishes right after
/// another's SUBSCRIBE (without waiting for its SUBACK) would see it take effect after its
/// message. Reads of other packets (subscriptions, acknowledgements) are handled at once.
async fn behind_ready_connections() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return std::task::Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await;
}

/// Reads until one packet is decoded; `Ok(None)` at end of stream.
pub(super) async fn read_packet<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    context: &DecodeContext,
    server: &Server,
) -> Result<Option<Packet>, ReadError> {
    loop {
        if let Some(packet) = decode(buf, context).map_err(ReadError::Decode)? {
            return Ok(Some(packet));
        }
        if buf.capacity() == buf.len() {
            buf.reserve(server.inner.options.read_buffer_size.max(1));
        }
        let read = reader.read_buf(buf).await.map_err(ReadError::Io)?;
        if read == 0 {
            return Ok(None);
        }
        sys::add(&server.inner.info.bytes_received, read as u64);
    }
}

/// Reads more input into `buf`, growing it by `size` when it is full. While the connection is
/// idle (nothing buffered, nothing to read yet) the buffer's memory is given back and taken again
/// when input arrives, so an idle connection holds no read buffer. Returns the bytes read, the
/// room that was offered for them, and whether the read had to wait for input (the task was
/// then woken by the socket's readiness).
///
/// Cancel safety: as [`AsyncReadExt::read_buf`]; nothing read is lost if the future is dropped.
pub(super) async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    size: usize,
) -> std::io::Result<(usize, usize, bool)> {
    let mut waited = false;
    std::future::poll_fn(|cx| {
        if buf.capacity() == buf.len() {
            buf.reserve(size);
        }
        let offered = buf.capacity() - buf.len();
        let polled = {
            let read = std::pin::pin!(reader.read_buf(&mut *buf));
            read.poll(cx)
        };
        if polled.is_pending() {
            waited = true;
            if buf.is_empty() {
                *buf = BytesMut::new();
            }
        }
        polled.map_ok(|read| (read, offered, waited))
    })
    .await
}

/// How much room a connection offers its socket per read: the configured read buffer size
/// while the client sends little, doubled (up to [`ReadSize::MAX`]) each time a read fills all
/// the room offered, since more was then waiting: a busy publisher is read in a few large reads
/// rather than many small ones. Halved back when reads come in small. An idle connection holds
/// no buffer whatever this says (see [`read_more`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadSize {
    base: usize,
    current: usize,
}

impl ReadSize {
    /// The most room offered per read.
    pub(super) const MAX: usize = 64 * 1024;

    pub(super) fn new(base: usize) -> Self {
        let base = base.max(1);
        Self {
            base,
            current: base,
        }
    }

    /// Adapts to a read of `read` bytes into `offered` bytes of room. A read into the rest of a
    /// buffer (less room than the current size) tells nothing about the client.
    pub(super) fn record(&mut self, read: usize, offered: usize) {
        if offered < self.current {
            return;
        }
        if read >= offered {
            self.current = self.current.saturating_mul(2).min(Self::MAX.max(self.base));
        } else if read < self.current / 4 {
            self.current = (self.current / 2).max(self.base);
        }
    }
}

impl Connection {
    #[allow(clippy::manual_async_fn)] // An `async fn` would hold its arguments twice.
    pub(super) fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        mut buf: BytesMut,
    ) -> impl Future<Output = End> {
        // An `async` block rather than an `async fn` (see `write_loop`).
        async move {
            let server = self.server.clone();
            let options = &server.inner.options;
            let context = server.decode_context(self.protocol);
            // Keep alive runs from the last complete packet.
            let mut deadline = keep_alive::deadline(Instant::now(), self.keep_alive);
            let mut decoded = false;
            let shared = self.handle.shared();
            let control_limit = options.capabilities.maximum_client_writes_pending.max(1024);
            let mut read_size = ReadSize::new(options.read_buffer_size);
            loop {
                loop {
                    // The decoded packet is handled before any await, so that it takes no room in
                    // this future's state (which lasts as long as the connection).
                    let step = match decode(&mut buf, &context) {
                        Ok(Some(packet)) => {
                            decoded = true;
                            Ok(Some(self.handle_packet(packet)))
                        }
                        Ok(None) => Ok(None),
                        Err(error) => Err(error),
                    };
                    match step {
                        Ok(None) => {
                            // The read's messages go to their subscribers' queues first, waiting
                            // for room in full ones; only then are they acknowledged, so that a
                            // publisher outrunning a subscriber is slowed down, not dropped.
                            if let Some(end) = self.hand_over().await {
                                return end;
                            }
                            self.release_ready_acks();
                            self.flush_counters();
                            // Waiting for storage is a path of its own, boxed: it keeps the
                            // storage timer out of every connection's state.
                            if self.acks.waits_for_storage()
                                && let Some(end) = self.boxed_release_acks().await
                            {
                                return end;
                            }
                            if decoded {
                                // After any wait for room or storage: the client is not idle
                                // while the server holds its reads back.
                                deadline = keep_alive::deadline(Instant::now(), self.keep_alive);
                                decoded = false;
                            }
                            break;
                        }
                        Ok(Some(None)) => {
                            if self.staged.is_full()
                                && let Some(end) = self.hand_over().await
                            {
                                return end;
                            }
                        }
                        Ok(Some(Some(end))) => return self.boxed_exit(Ok(end)).await,
                        Err(error) => {
                            warn!(client_id = %self.client.client_id, %error, "closing on a bad packet");
                            return self.boxed_exit(Err(error.into())).await;
                        }
                    }
                    if self.pending_auth.is_some() && !self.acks.durable() {
                        // The acknowledgements so far do not wait for the hook's answer, once
                        // what they acknowledge is queued.
                        if let Some(end) = self.hand_over().await {
                            return end;
                        }
                        self.release_ready_acks();
                    }
                    if let Some(auth) = self.pending_auth.take()
                        && let Some(end) = self.boxed_reauthenticate(*auth).await
                    {
                        return self.boxed_exit(Ok(end)).await;
                    }
                }
                // A client whose answers (PINGRESP, acks) pile up unsent is not read until they
                // are written, and is closed if they are not within the slow-subscriber timeout:
                // its unsent answers never grow without bound. PUBRELs answer the client's PUBRECs
                // to our QoS 2 messages: one per message in flight, so the send window is allowed
                // on top.
                let (unsent, window) = {
                    let state = self.session.state.lock();
                    (state.control.len(), state.peer.window)
                };
                let limit = control_limit.saturating_add(window);
                if unsent > limit
                    && let Some(end) = self.boxed_wait_for_answers(limit).await
                {
                    return end;
                }
                let size = read_size.current;
                let read = async {
                    match deadline {
                        Some(deadline) => {
                            tokio::time::timeout_at(deadline, read_more(reader, &mut buf, size))
                                .await
                                .ok()
                        }
                        None => Some(read_more(reader, &mut buf, size).await),
                    }
                };
                let result = tokio::select! {
                    result = read => result,
                    () = shared.kill.notified() => return End::KILLED,
                };
                match result {
                    None => {
                        info!(client_id = %self.client.client_id, "keep alive timeout");
                        return self.fail(ConnectionError::KeepAliveTimeout);
                    }
                    Some(Ok((0, _, _))) => {
                        return End::Error(ConnectionError::ClosedByClient);
                    }
                    Some(Ok((read, offered, waited))) => {
                        read_size.record(read, offered);
                        sys::add(&self.server.inner.info.bytes_received, read as u64);
                        // Only a read that waited for its socket can be part of a batch of
                        // sockets that became ready together; a busy publisher whose input is
                        // always there does not pay for it.
                        if waited && starts_with_publish(&buf) {
                            behind_ready_connections().await;
                        }
                    }
                    Some(Err(error)) => return End::Error(error.into()),
                }
            }
        }
    }

    /// [`Connection::exit`] in a box (see [`super::serve`]): it runs once.
    fn boxed_exit(
        &mut self,
        end: Result<End, ConnectionError>,
    ) -> Pin<Box<impl Future<Output = End> + Send>> {
        Box::pin(self.exit(end))
    }

    /// Leaves the packet loop: what the read accepted before the end is placed as any read's,
    /// waiting for room (a kill, or the close the end may have asked for, places the rest at
    /// once), counted, and acknowledged if storage allows; then an error closes the connection.
    /// The end stays the reason.
    async fn exit(&mut self, end: Result<End, ConnectionError>) -> End {
        self.hand_over().await;
        self.flush_counters();
        self.release_acks_on_exit().await;
        end.unwrap_or_else(|error| self.fail(error))
    }

    /// Hands the deliveries staged so far to their subscribers' queues. If a connected
    /// subscriber's queue is full, waits (without reading) until every delivery is placed.
    /// `Some` ends the connection (it was killed meanwhile): what it accepted is then placed
    /// without waiting, and the held acknowledgements go out if storage allows.
    ///
    /// Cancel safety: not cancel safe; the reader awaits it to completion.
    pub(super) async fn hand_over(&mut self) -> Option<End> {
        let shared = self.handle.shared();
        self.server
            .deliver_from_read(&mut self.staged, &shared, &mut self.parked);
        if self.parked.is_empty() {
            return None;
        }
        self.boxed_wait_for_room(shared).await
    }

    /// [`Connection::wait_for_answers`] in a box (see [`serve`]): waiting is the rare path.
    pub(super) fn boxed_wait_for_answers(
        &mut self,
        limit: usize,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.wait_for_answers(limit))
    }

    /// Waits, without reading, until the writer has taken this connection's unsent answers down
    /// to half of `limit`. `Some` ends the connection: killed, or its answers were not written
    /// within the slow-subscriber timeout (DISCONNECT 0x97).
    pub(super) async fn wait_for_answers(&mut self, limit: usize) -> Option<End> {
        let shared = self.handle.shared();
        let deadline = Instant::now() + self.server.inner.flow_limits.slow_timeout;
        shared.answers_waiting.store(true, Ordering::Relaxed);
        let end = loop {
            let unsent = self.session.state.lock().control.len();
            if unsent <= limit / 2 {
                break None;
            }
            tokio::select! {
                () = shared.room.notified() => {}
                () = shared.kill.notified() => break Some(End::KILLED),
                () = tokio::time::sleep_until(deadline) => {
                    warn!(client_id = %self.client.client_id, unsent, "client does not read its acknowledgements");
                    break Some(self.fail(LimitExceeded::UnsentAnswers));
                }
            }
        };
        shared.answers_waiting.store(false, Ordering::Relaxed);
        end
    }

    /// [`Connection::wait_for_room`] in a box (see [`serve`]): waiting is the rare path.
    pub(super) fn boxed_wait_for_room(
        &mut self,
        shared: Arc<crate::session::HandleShared>,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.wait_for_room(shared))
    }

    /// Waits until the parked deliveries are placed: woken when a subscriber's queue has room,
    /// and at the time a subscriber still full would count as stuck.
    pub(super) async fn wait_for_room(
        &mut self,
        shared: Arc<crate::session::HandleShared>,
    ) -> Option<End> {
        let info = &self.server.inner.info;
        sys::add(&info.publisher_waits, 1);
        sys::add(&info.publishers_waiting, 1);
        shared.waiting.store(true, Ordering::Relaxed);
        debug!(client_id = %self.client.client_id, "not reading: a subscriber's queue is full");
        let end = loop {
            let Some(deadline) =
                self.server
                    .retry_parked(&mut self.parked, &shared, Instant::now())
            else {
                break None;
            };
            tokio::select! {
                () = shared.room.notified() => {}
                () = tokio::time::sleep_until(deadline) => {}
                () = shared.kill.notified() => break Some(End::KILLED),
            }
        };
        shared.waiting.store(false, Ordering::Relaxed);
        sys::sub(&info.publishers_waiting, 1);
        if end.is_some() {
            // The connection is taken over or the server closes: nobody waits any more. What
            // was accepted is placed whatever the queue limits (it is one read at most; a QoS 2
            // message already in the session's inbound state must not be lost), and
            // acknowledged if the closing writer still can.
            self.server.place_parked(&mut self.parked, &shared);
            self.boxed_release_acks_on_exit().await;
        }
        end
    }

    /// After a read is handled: adds what it received to the server's counters, and wakes the
    /// writer if acknowledgements opened the send window.
    pub(super) fn flush_counters(&mut self) {
        let counters = std::mem::take(&mut self.counters);
        if counters.wake_writer {
            let state = self.session.state.lock();
            if state.outbound.has_queued() {
                state.wake_writer();
            }
        }
        let info = &self.server.inner.info;
        if counters.packets > 0 {
            sys::add(&info.packets_received, counters.packets);
        }
        let messages: u64 = counters.messages.iter().sum();
        if messages > 0 {
            sys::add(&info.messages_received, messages);
            for (counter, count) in info.messages_received_by_qos.iter().zip(counters.messages) {
                if count > 0 {
                    sys::add(counter, count);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ReadSize;

    #[test]
    fn read_size_grows_while_reads_fill_the_room_and_shrinks_when_they_do_not() {
        let mut size = ReadSize::new(2048);
        // Full reads: doubled each time, up to the maximum.
        for expected in [4096, 8192, 16_384, 32_768, 65_536, 65_536] {
            size.record(size.current, size.current);
            assert_eq!(size.current, expected);
        }
        // A read into the tail of a buffer (less room than the current size) that fills it
        // says nothing about the client: no change.
        size.record(1000, 1000);
        assert_eq!(size.current, 65_536);
        // Small reads: halved each time, down to the configured size.
        for expected in [32_768, 16_384, 8192, 4096, 2048, 2048] {
            size.record(100, size.current);
            assert_eq!(size.current, expected);
        }
        // A read of a quarter or more keeps the size.
        let mut size = ReadSize::new(2048);
        size.record(4096, 4096);
        size.record(1024, 4096);
        assert_eq!(size.current, 4096);
    }

    #[test]
    fn read_size_above_the_maximum_stays_as_configured() {
        let mut size = ReadSize::new(1 << 20);
        size.record(1 << 20, 1 << 20);
        assert_eq!(size.current, 1 << 20);
        size.record(10, 1 << 20);
        assert_eq!(size.current, 1 << 20);
    }
}
