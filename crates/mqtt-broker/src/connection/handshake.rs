//! The CONNECT handshake: the first packet, its validation, authentication, and the CONNACK.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_packets::{ConnAck, Connect, DecodeError, MqttString, Packet, Protocol, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Connection;
use super::Counters;
use super::LINGER;
use super::acks::AckQueue;
use super::auth::EnhancedAuth;
use super::auth::enhanced_auth_exchange;
use super::drain;
use super::read::ReadError;
use super::read::read_packet;
use crate::flow::Parked;
use crate::hooks::HookEvents;
use crate::protocol::connect;
use crate::session::{Close, ConnectionHandle, Control, Session};
use crate::staged::Staged;
use crate::sys;
use crate::{ClientInfo, ConnectionInfo, Server};

/// What the handshake hands to the packet loop: the connection and the stream's halves, with
/// whatever the client sent after CONNECT already in the buffer.
pub(super) type Handshaken<S> = (Connection, ReadHalf<S>, WriteHalf<S>, BytesMut);

/// Reads the CONNECT and accepts or refuses it; `None` when the connection ends here.
pub(super) async fn handshake<S>(
    server: Server,
    stream: S,
    connection: ConnectionInfo,
) -> Option<Handshaken<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(stream);
    let options = &server.inner.options;
    let mut buf = BytesMut::with_capacity(options.read_buffer_size);
    let context = server.decode_context(Protocol::V5);
    // The whole handshake (CONNECT, authentication) has the connect timeout.
    let deadline = Instant::now() + options.connect_timeout;

    // The first packet must be CONNECT, within the connect timeout [MQTT-3.1.0-1].
    let first = tokio::select! {
        first = tokio::time::timeout_at(
            deadline,
            read_packet(&mut reader, &mut buf, &context, &server),
        ) => first,
        () = server.shutdown_signal() => {
            refuse(&server, writer).await;
            return None;
        }
    };
    let connect = match first {
        Ok(Ok(Some(Packet::Connect(connect)))) => *connect,
        Ok(Err(ReadError::Decode(DecodeError::UnsupportedProtocol { name, level }))) => {
            // 3.x layout (return code 1), which any client can parse [MQTT-3.1.2-2].
            debug!(remote = ?connection.remote, %name, level, "unsupported protocol");
            let refusal = ConnAck::new(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION);
            send_connack(&mut writer, Protocol::V3_1_1, refusal).await;
            refuse(&server, writer).await;
            linger(&server, &mut reader).await;
            return None;
        }
        Ok(Err(ReadError::Decode(error))) if v5_connect_refusal(&error, &buf).is_some() => {
            let code = v5_connect_refusal(&error, &buf).unwrap_or(ReasonCode::MALFORMED_PACKET);
            info!(remote = ?connection.remote, %error, "CONNECT refused");
            if let DecodeError::LimitExceeded { .. } = error {
                sys::add(&server.inner.info.limits_exceeded, 1);
            }
            send_connack(&mut writer, Protocol::V5, ConnAck::new(code)).await;
            refuse(&server, writer).await;
            linger(&server, &mut reader).await;
            return None;
        }
        Ok(Ok(Some(other))) => {
            debug!(remote = ?connection.remote, packet = %other.packet_type(), "first packet is not CONNECT");
            refuse(&server, writer).await;
            return None;
        }
        Ok(Ok(None)) => {
            refuse(&server, writer).await;
            return None;
        }
        Ok(Err(error)) => {
            debug!(remote = ?connection.remote, %error, "bad CONNECT");
            if let ReadError::Decode(_) = error {
                sys::add(&server.inner.info.protocol_errors, 1);
            }
            refuse(&server, writer).await;
            return None;
        }
        Err(_) => {
            debug!(remote = ?connection.remote, "no CONNECT before the connect timeout");
            refuse(&server, writer).await;
            return None;
        }
    };
    let io = (&mut reader, &mut buf, &mut writer);
    let Some(connection) = Connection::accept(&server, connect, connection, io, deadline).await
    else {
        // A refused CONNECT was answered with a CONNACK: linger so that it is read.
        refuse(&server, writer).await;
        linger(&server, &mut reader).await;
        return None;
    };
    Some((connection, reader, writer, buf))
}

/// The CONNACK a v5 client gets for a CONNECT the decoder refused, when one is due: 0x95 for a
/// CONNECT above the maximum packet size [MQTT-3.2.2-15] (other levels are just closed), 0x97
/// for one beyond the decode limits (only a v5 CONNECT has lists to limit).
pub(super) fn v5_connect_refusal(error: &DecodeError, buf: &[u8]) -> Option<ReasonCode> {
    match error {
        DecodeError::PacketTooLarge { .. } if connect_level(buf) == Some(5) => {
            Some(ReasonCode::PACKET_TOO_LARGE)
        }
        DecodeError::LimitExceeded { .. } => Some(ReasonCode::QUOTA_EXCEEDED),
        _ => None,
    }
}

/// The protocol level of a CONNECT whose body is (partly) in `buf`, read without decoding it.
pub(super) fn connect_level(buf: &[u8]) -> Option<u8> {
    let header = mqtt_packets::FixedHeader::parse(buf, Protocol::V5)
        .ok()
        .flatten()?;
    let body = buf.get(header.header_length..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Counts a connection between the `maximum_clients` check and the end of its handshake.
pub(super) struct Admitting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Admitting<'a> {
    pub(super) fn new(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// After a refusing CONNACK: [`drain`] for [`LINGER`], unless the server is closing.
pub(super) async fn linger<R: AsyncRead + Unpin>(server: &Server, reader: &mut R) {
    if !server.is_closing() {
        drain(reader, LINGER).await;
    }
}

pub(super) async fn refuse<W: AsyncWrite + Unpin>(server: &Server, mut writer: W) {
    sys::add(&server.inner.info.connections_refused, 1);
    writer.shutdown().await.ok();
}

/// How long a CONNACK for a persistent session waits for its record to become durable.
pub(super) const DURABLE_CONNACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A CONNACK for a refused connection, in the client's dialect; `None` when the code has no 3.x
/// form (the connection is then closed without one).
pub(super) async fn send_connack<W: AsyncWrite + Unpin>(
    writer: &mut W,
    protocol: Protocol,
    connack: ConnAck,
) {
    let mut out = BytesMut::new();
    if connack.encode(protocol, &mut out).is_ok() {
        writer.write_all(&out).await.ok();
        writer.flush().await.ok();
    }
}

/// The client as its CONNECT describes it, with an assigned id when it sent none.
fn client_info(server: &Server, connect: &Connect, connection: ConnectionInfo) -> ClientInfo {
    let client_id = if connect.client_id.is_empty() {
        server.assign_client_id()
    } else {
        mqtt_topics::ClientId::from(connect.client_id.as_str())
    };
    ClientInfo {
        client_id,
        // A copy: the client's information lasts as long as its session.
        username: connect.username.as_ref().map(crate::message::owned_string),
        protocol: connect.protocol,
        clean_start: connect.clean_start,
        connection,
        inline: false,
    }
}

/// Whether a persistent session's record became durable before its CONNACK.
enum Durability {
    /// Durable, or nothing to wait for.
    Durable,
    /// Storage failed or did not commit in time: the client gets CONNACK 0x80.
    Failed,
    /// Another connection took the session over while this one waited.
    TakenOver,
}

impl Connection {
    /// Validates and authenticates the CONNECT, creates or resumes the session, and queues the
    /// CONNACK. Returns `None` (after any refusing CONNACK) when the connection is refused.
    ///
    /// The decisions are the pure functions of [`crate::protocol::connect`]; this is their
    /// driver: hooks, the registry, storage and the socket.
    pub(super) async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        server: &Server,
        connect: Connect,
        connection: ConnectionInfo,
        io: (&mut R, &mut BytesMut, &mut W),
        deadline: Instant,
    ) -> Option<Self> {
        let (reader, buf, writer) = io;
        let inner = &server.inner;
        let caps = &inner.options.capabilities;
        let protocol = connect.protocol;
        if let Err(code) = connect::validate(&connect, caps) {
            send_connack(writer, protocol, ConnAck::new(code)).await;
            return None;
        }
        // Connections between this check and their attachment count too, so that concurrent
        // CONNECTs cannot together go beyond the limit (audit L1): a connection is counted twice
        // for a moment, which errs on the side of the limit.
        let _admitting = Admitting::new(&inner.admitting);
        let admitting = inner.admitting.load(Ordering::SeqCst);
        let connected = inner.info.clients_connected.load(Ordering::SeqCst) as usize;
        if connected.saturating_add(admitting) > caps.maximum_clients {
            info!(remote = ?connection.remote, connected, "maximum_clients reached; connection refused");
            send_connack(writer, protocol, ConnAck::new(ReasonCode::SERVER_BUSY)).await;
            return None;
        }
        let assigned = connect.client_id.is_empty();
        let mut client = Arc::new(client_info(server, &connect, connection));
        let client_id = client.client_id.clone();
        let mut auth = match Self::authenticate(
            server,
            &mut client,
            &connect,
            (reader, buf, &mut *writer),
            deadline,
        )
        .await
        {
            Ok(auth) => auth,
            Err(refusal) => {
                if let Some(connack) = refusal {
                    send_connack(writer, protocol, connack).await;
                }
                return None;
            }
        };
        for hook in inner.hooks.with(HookEvents::ON_SESSION_ESTABLISH) {
            hook.on_session_establish(&client, &connect);
        }

        let expiry = connect::session_expiry(&connect, caps);
        let handle = ConnectionHandle::new(inner.next_generation());
        let peer = connect::peer_limits(&connect, caps);
        let attached = server.attach(&client, &connect, expiry.granted, handle.clone(), peer);
        let (session, session_present, old_will) = match attached {
            Ok(attached) => attached,
            Err(code) => {
                // The server is closing, the session is another user's, or no more sessions
                // are allowed.
                send_connack(writer, protocol, ConnAck::new(code)).await;
                return None;
            }
        };
        if let Some((old_client, will)) = old_will {
            server.publish_will(&old_client, will);
        }
        let mut accepted = Self {
            server: server.clone(),
            session,
            client,
            connect: None,
            handle,
            protocol,
            keep_alive: connect::keep_alive(&connect, caps),
            aliases: None,
            connect_expiry_zero: expiry.requested == 0,
            staged: Staged::default(),
            parked: Parked::default(),
            auth: None,
            pending_auth: None,
            acks: AckQueue::new(inner.hooks.provides(HookEvents::DURABLE)),
            counters: Counters::default(),
        };
        let durability = Self::durability(
            server,
            &accepted.session,
            &accepted.client,
            accepted.handle.generation,
            expiry.granted,
        );
        let connack = match durability.await {
            Durability::TakenOver => return None,
            Durability::Failed => {
                // Refused: no Will, nothing resent; the writer sends CONNACK 0x80 and closes.
                accepted.session.state.lock().will = None;
                accepted.keep_alive = 0;
                accepted.acks = AckQueue::new(false);
                ConnAck::new(ReasonCode::UNSPECIFIED_ERROR)
            }
            Durability::Durable => {
                let authentication = auth
                    .method
                    .clone()
                    .map(|method| (method, auth.connack_data.take()));
                let connack = connect::connack(
                    &connect,
                    caps,
                    connect::Accepted {
                        client_id: &client_id,
                        assigned,
                        session_present,
                        authentication,
                    },
                );
                info!(client_id = %client_id, remote = ?accepted.client.connection.remote,
                      listener = %accepted.client.connection.listener, protocol = %protocol,
                      session_present, "client connected");
                connack
            }
        };
        let refused = connack.reason_code != ReasonCode::SUCCESS;
        accepted.queue_connack(connack, session_present);
        if refused {
            // After the CONNACK is queued: a closing writer sends only what is queued.
            accepted.handle.close(Close::Silent);
        }
        accepted.auth = auth.method.is_some().then(|| Box::new(auth));
        accepted.connect = Some(Box::new(connect));
        Some(accepted)
    }

    /// Runs the `on_connect` hooks and authenticates the client: enhanced authentication when
    /// the CONNECT names a method, else the authentication hooks, within the handshake's
    /// deadline. `Err` holds the refusing CONNACK (`None`: close without one).
    async fn authenticate<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        server: &Server,
        client: &mut Arc<ClientInfo>,
        connect: &Connect,
        io: (&mut R, &mut BytesMut, &mut W),
        deadline: Instant,
    ) -> Result<EnhancedAuth, Option<ConnAck>> {
        let (reader, buf, writer) = io;
        let inner = &server.inner;
        let protocol = connect.protocol;
        let client_id = client.client_id.clone();
        for hook in inner.hooks.with(HookEvents::ON_CONNECT) {
            if let Err(refusal) = hook.on_connect(client, connect) {
                let mut connack = ConnAck::new(refusal.reason_code);
                if protocol.is_v5() {
                    connack.properties.server_reference = refusal
                        .server_reference
                        .and_then(|reference| MqttString::new(reference).ok());
                }
                info!(client_id = %client_id, code = %refusal.reason_code, "connection refused by hook {}", hook.id());
                return Err(Some(connack));
            }
        }
        let mut auth = EnhancedAuth::default();
        if let Some(method) = connect.properties.authentication_method.clone() {
            // Enhanced authentication (§4.12): challenge and response before CONNACK.
            let exchange = tokio::time::timeout_at(
                deadline,
                enhanced_auth_exchange(
                    server, client, connect, method, &mut auth, reader, buf, writer,
                ),
            )
            .await;
            let Ok(exchange) = exchange else {
                info!(client_id = %client_id, remote = ?client.connection.remote, "authentication not finished within the connect timeout");
                return Err(Some(ConnAck::new(ReasonCode::NOT_AUTHORIZED)));
            };
            match exchange {
                Ok((data, principal)) => {
                    auth.connack_data = data;
                    if let Some(principal) = principal {
                        // The proved identity is the client's from now on: the ACL checks it
                        // and the session belongs to it.
                        Arc::make_mut(client).username = Some(principal);
                    }
                }
                Err(code) => {
                    info!(client_id = %client_id, remote = ?client.connection.remote, ?code, "enhanced authentication refused");
                    return Err(code.map(ConnAck::new));
                }
            }
        } else if !tokio::time::timeout_at(deadline, inner.hooks.authenticate(client, connect))
            .await
            .unwrap_or_else(|_| {
                info!(client_id = %client_id, remote = ?client.connection.remote, "authentication not decided within the connect timeout");
                false
            })
        {
            let code = if connect.username.is_some() || connect.password.is_some() {
                ReasonCode::BAD_USER_NAME_OR_PASSWORD
            } else {
                ReasonCode::NOT_AUTHORIZED
            };
            info!(client_id = %client_id, remote = ?client.connection.remote, "authentication refused");
            return Err(Some(ConnAck::new(code)));
        }
        Ok(auth)
    }

    /// A session that outlives the connection is acknowledged (CONNACK) only once its record
    /// is durable, when a storage hook asks for that. If it cannot be, the client gets CONNACK
    /// 0x80 and the connection ends through the normal path (the session stays, offline).
    ///
    /// A plain function of the parts it needs: a `&Connection` held across the await would ask
    /// the connection to be `Sync`.
    async fn durability(
        server: &Server,
        session: &Session,
        client: &ClientInfo,
        generation: u64,
        expiry: u32,
    ) -> Durability {
        let inner = &server.inner;
        if expiry == 0
            || !inner.hooks.provides(HookEvents::DURABLE)
            || !session.state.lock().persist
        {
            return Durability::Durable;
        }
        let durable = tokio::time::timeout(DURABLE_CONNACK_TIMEOUT, inner.hooks.durable()).await;
        let failure = match durable {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("storage did not commit in time".to_string()),
        };
        // Another connection may have taken the session over while this one waited.
        let current = session
            .state
            .lock()
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == generation);
        if !current {
            return Durability::TakenOver;
        }
        match failure {
            None => Durability::Durable,
            Some(failure) => {
                warn!(client_id = %client.client_id, error = %failure, "session not durable; connection refused");
                sys::add(&inner.info.hook_errors, 1);
                Durability::Failed
            }
        }
    }

    /// Queues the CONNACK first for the writer, then (when the session was resumed and the
    /// connection accepted) what was in flight, in order [MQTT-4.4.0-1].
    fn queue_connack(&self, connack: ConnAck, session_present: bool) {
        let accepted = connack.reason_code == ReasonCode::SUCCESS;
        let mut state = self.session.state.lock();
        let current = state
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == self.handle.generation);
        if !current {
            // Taken over since it attached: the CONNACK is this closing connection's, not the
            // new one's (and nothing of the session is resent here).
            drop(state);
            self.handle
                .unsent
                .lock()
                .push(Control::packet(Packet::ConnAck(connack)));
            return;
        }
        state
            .control
            .push_front(Control::packet(Packet::ConnAck(connack)));
        if accepted && session_present {
            let window = state.peer.window;
            for outgoing in state.outbound.resend_all(window) {
                state.control.push_back(Control::Outgoing(outgoing));
            }
        }
        state.wake_writer();
    }
}
