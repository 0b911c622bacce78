//! One client connection: the CONNECT handshake, the reader (this task) and the writer (its own
//! task, the only one that touches the socket's write half).

mod acks;
mod auth;
mod handshake;
mod inbound;
mod read;
mod write;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_packets::{Connect, Packet, Protocol, ReasonCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::info;

use crate::alias::InboundAliases;
use crate::flow::Parked;
use crate::hooks::HookEvents;
use crate::session::{Close, ConnectionHandle, Control, Session};
use crate::staged::Staged;
use crate::sys;
use crate::{ClientInfo, ConnectionError, ConnectionInfo, Server};
use acks::AckQueue;
use auth::EnhancedAuth;
use handshake::handshake;
use write::write_loop;

/// Counts live connections; the last one out wakes `Server::close`.
struct LiveGuard(Server);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        if self.0.inner.live_connections.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.inner.all_closed.notify_waiters();
        }
    }
}

/// Why the reader stopped.
#[derive(Debug)]
enum End {
    /// DISCONNECT from the client; `will` says whether the Will is still published (0x04, or a
    /// protocol error in the DISCONNECT itself).
    ClientDisconnect { will: bool },
    /// The connection failed or the server ended it; the Will is published. Taken over by a
    /// newer connection, or closed by another part of the server
    /// ([`ConnectionError::ClosedByServer`]): the part that closed it cleans up.
    Error(ConnectionError),
}

impl End {
    /// The server closed the connection from elsewhere (takeover, shutdown, stuck subscriber).
    const KILLED: Self = Self::Error(ConnectionError::ClosedByServer);
}

/// Serves one connection: the handshake, then the packet loop and the writer.
///
/// Memory: an idle connection's future is kept small. The handshake (CONNECT, authentication,
/// refusals) runs in a box of its own, freed when it ends; rare paths (teardown, re-authentication,
/// the writer's close) are boxed by plain functions, because a future built inside an `async fn`
/// takes room in its state even when it is moved at once into a box; and nothing large is held
/// across an await of the packet loop.
pub(crate) fn serve<S>(
    server: Server,
    stream: S,
    connection: ConnectionInfo,
) -> impl Future<Output = ()> + Send + use<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    // Built here rather than inside the `async` block, which would otherwise keep the
    // arguments for as long as the connection lasts.
    let handshake = Box::pin(handshake(server.clone(), stream, connection));
    async move {
        server.start();
        server.inner.live_connections.fetch_add(1, Ordering::SeqCst);
        let _guard = LiveGuard(server.clone());
        sys::add(&server.inner.info.connections_total, 1);
        if server.inner.closing.load(Ordering::SeqCst) {
            return;
        }
        let Some((mut connection, reader, writer, buf)) = handshake.await else {
            return;
        };
        connection.run(reader, writer, buf).await;
    }
}

/// How long a connection keeps reading (and discarding) after the server sent a DISCONNECT.
const LINGER: Duration = Duration::from_secs(2);

/// Reads and discards input until end of stream, an error, or `limit` elapses.
async fn drain<R: AsyncRead + Unpin>(reader: &mut R, limit: Duration) {
    let mut sink = [0u8; 1024];
    let drain = async { while matches!(reader.read(&mut sink).await, Ok(read) if read > 0) {} };
    tokio::time::timeout(limit, drain).await.ok();
}

struct Connection {
    server: Server,
    session: Arc<Session>,
    client: Arc<ClientInfo>,
    /// The CONNECT, until the session-established hooks have seen it.
    connect: Option<Box<Connect>>,
    handle: ConnectionHandle,
    protocol: Protocol,
    keep_alive: u16,
    /// Inbound topic aliases, for this connection only [MQTT-3.3.2-7].
    /// 8 bytes per connection until a client uses an alias.
    aliases: Option<Box<InboundAliases>>,
    /// Whether the CONNECT had Session Expiry 0, for the DISCONNECT rule (§3.14.2.2.2).
    connect_expiry_zero: bool,
    /// Deliveries of the PUBLISH packets decoded from the current read, handed to the
    /// subscribers' queues together before the next read (or every few thousand in a large read).
    staged: Staged,
    /// Deliveries waiting for room in a full subscriber's queue: while any wait, this
    /// connection is not read (flow control, see `flow.rs`).
    parked: Parked,
    /// Enhanced authentication of this connection, for re-authentication.
    auth: Option<Box<EnhancedAuth>>,
    /// An AUTH packet to handle on the reader's task (its hook is asynchronous).
    pending_auth: Option<Box<mqtt_packets::Auth>>,
    /// PUBACK, PUBREC, PUBREL and PUBCOMP of the current read (see `acks.rs`).
    acks: AckQueue,
    /// Packets and messages received in the current read (see [`Counters`]).
    counters: Counters,
}

/// What a connection received during one read, added to the server's counters when the read
/// has been handled: the shared counters, written per packet from every core, would bounce
/// between the cores' caches. Also whether the read's acknowledgements call for the writer.
#[derive(Debug, Default)]
struct Counters {
    packets: u64,
    /// PUBLISH packets by QoS.
    messages: [u64; 3],
    /// Whether acknowledgements freed room in the send window (the writer is woken once).
    wake_writer: bool,
}

impl Connection {
    #[allow(clippy::manual_async_fn)] // An `async fn` would hold its arguments twice.
    fn run<R, W>(
        &mut self,
        reader: ReadHalf<R>,
        writer: WriteHalf<W>,
        buf: BytesMut,
    ) -> impl Future<Output = ()> + Send
    where
        R: AsyncRead + AsyncWrite + Send + Unpin + 'static,
        W: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // An `async` block rather than an `async fn` (see `write_loop`).
        async move {
            let writer_task = tokio::spawn(write_loop(
                self.server.clone(),
                self.session.clone(),
                self.client.clone(),
                self.handle.clone(),
                writer,
            ));
            if let Some(connect) = self.connect.take() {
                for hook in self
                    .server
                    .inner
                    .hooks
                    .with(HookEvents::ON_SESSION_ESTABLISHED)
                {
                    hook.on_session_established(&self.client, &connect);
                }
            }
            let mut reader = reader;
            let end = self.read_loop(&mut reader, buf).await;
            self.boxed_teardown(end, reader, writer_task).await;
        }
    }

    /// [`Connection::teardown`] in a box built outside `run`'s state (see [`serve`]).
    fn boxed_teardown<R>(
        &mut self,
        end: End,
        reader: ReadHalf<R>,
        writer_task: tokio::task::JoinHandle<()>,
    ) -> Pin<Box<impl Future<Output = ()> + Send>>
    where
        R: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Box::pin(self.teardown(end, reader, writer_task))
    }

    /// After the packet loop: stops the writer, detaches from the session and runs the
    /// disconnect logic.
    async fn teardown<R>(
        &mut self,
        end: End,
        mut reader: ReadHalf<R>,
        writer_task: tokio::task::JoinHandle<()>,
    ) where
        R: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        // Make sure the writer ends: a close reason may already be set (protocol error,
        // takeover); otherwise the client went away and we close silently.
        self.handle.close(Close::Silent);
        // Detach from the session at once, before waiting for the writer, so that a quick
        // reconnect finds it in its final state (Will discarded or kept, session ended or not).
        let keep_will = !matches!(end, End::ClientDisconnect { will: false });
        let detached = self
            .server
            .detach(&self.session, self.handle.generation, keep_will);
        let abort = writer_task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), writer_task)
            .await
            .is_err()
        {
            abort.abort();
        }
        // Compatibility: after a server DISCONNECT, leave the close to the client (bounded).
        let passive = self
            .server
            .inner
            .options
            .capabilities
            .compatibilities
            .passive_client_disconnect;
        let sent_disconnect = matches!(
            *self.handle.close.lock(),
            Some(Close::Disconnect(_) | Close::Redirect(..))
        );
        let linger = sent_disconnect && self.protocol.is_v5();
        if passive && linger {
            drain(&mut reader, Duration::from_secs(5)).await;
        }
        self.finish(end, detached);
        if !passive && linger && !self.server.is_closing() {
            // Lingering close: the write half is already shut down (FIN sent after the
            // DISCONNECT); closing the socket now with unread input would reset the
            // connection, and a reset can discard the DISCONNECT (and its reason code)
            // before the client reads it. Discard the client's input until it closes,
            // for a short bounded time; the session is already finished. Not while the
            // server closes, which waits for every connection.
            drain(&mut reader, LINGER).await;
        }
    }

    /// Ends the connection for this error: [`Connection::close`] with its reason code, if this
    /// side sends one, after counting it (protocol errors, limits).
    fn fail(&mut self, error: impl Into<ConnectionError>) -> End {
        let error = error.into();
        let info = &self.server.inner.info;
        if error.is_protocol_error() {
            sys::add(&info.protocol_errors, 1);
        }
        if error.is_limit() {
            sys::add(&info.limits_exceeded, 1);
        }
        if let Some(code) = error.reason_code() {
            self.close(code);
        }
        End::Error(error)
    }

    /// Ends the connection with this code: DISCONNECT for v5, a plain close for 3.x.
    fn close(&mut self, code: ReasonCode) {
        // Acknowledgements of packets already accepted in this read go before the DISCONNECT.
        self.release_ready_acks();
        let how = if self.protocol.is_v5() {
            Close::Disconnect(code)
        } else {
            Close::Silent
        };
        self.handle.close(how);
    }

    fn send(&self, packet: Packet) {
        let mut state = self.session.state.lock();
        let current = state
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == self.handle.generation);
        if current {
            state.send(packet);
        } else {
            // Taken over meanwhile: the answer belongs to this closing connection, not to the
            // client that now has the session.
            drop(state);
            self.handle.unsent.lock().push(Control::packet(packet));
        }
    }

    /// After the connection ended and was detached: the Will, timers, log and hooks.
    fn finish(&mut self, end: End, detached: Option<crate::registry::Detached>) {
        let server = &self.server;
        let inner = &server.inner;
        let error = match &end {
            End::ClientDisconnect { .. } => None,
            End::Error(error) => Some(error),
        };
        let Some(detached) = detached else {
            // Taken over: the new connection handled the session and the old Will.
            self.disconnected_hooks(error, false);
            return;
        };
        if let Some((will, client)) = detached.will_now {
            server.publish_will(&client, will);
        }
        if !detached.ended {
            let now = Instant::now();
            if let Some(delay) = detached.delayed_will {
                inner.timers.schedule(
                    now + Duration::from_secs(u64::from(delay)),
                    crate::timers::TimerEvent::WillDelay {
                        client_id: self.client.client_id.clone(),
                        generation: self.handle.generation,
                    },
                );
            }
            if detached.expiry != u32::MAX {
                inner.timers.schedule(
                    now + Duration::from_secs(u64::from(detached.expiry)),
                    crate::timers::TimerEvent::SessionExpiry {
                        client_id: self.client.client_id.clone(),
                        generation: self.handle.generation,
                    },
                );
            }
        }
        match error {
            Some(error) => info!(client_id = %self.client.client_id, reason = %error,
                                 expire = detached.ended, "client disconnected"),
            None => info!(client_id = %self.client.client_id, reason = "DISCONNECT",
                          expire = detached.ended, "client disconnected"),
        }
        self.disconnected_hooks(error, detached.ended);
    }

    fn disconnected_hooks(&self, error: Option<&ConnectionError>, expire: bool) {
        for hook in self.server.inner.hooks.with(HookEvents::ON_DISCONNECT) {
            hook.on_disconnect(&self.client, error, expire);
        }
    }
}
