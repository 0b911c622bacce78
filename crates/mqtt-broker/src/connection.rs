//! One client connection: the CONNECT handshake, the reader (this task) and the writer (its own
//! task, the only one that touches the socket's write half).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_packets::{
    ConnAck, ConnAckProperties, Connect, DecodeContext, DecodeError, Disconnect, MqttString,
    Packet, PacketId, PayloadFormatIndicator, Protocol, PubRel, Publish, QoS, ReasonCode, SubAck,
    UnsubAck, decode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::alias::{InboundAliases, OutboundAliases};
use crate::flow::Parked;
use crate::hooks::{AuthOutcome, DropReason, HookEvents};
use crate::message::Delivery;
use crate::outbound::{Outgoing, PubRecOutcome};
use crate::server::PublishOutcome;
use crate::session::{Ack, Close, ConnectionHandle, Control, PeerLimits, Session};
use crate::staged::Staged;
use crate::storage::{StorageEvent, StoredFlow};
use crate::sys;
use crate::{ClientInfo, ConnectionInfo, Server};

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
    /// The connection failed or the server ended it; the Will is published.
    Abnormal(String),
    /// Taken over by a newer connection, or closed by the server: the taker cleans up.
    Killed,
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

/// What the handshake hands to the packet loop: the connection and the stream's halves, with
/// whatever the client sent after CONNECT already in the buffer.
type Handshaken<S> = (Connection, ReadHalf<S>, WriteHalf<S>, BytesMut);

/// Reads the CONNECT and accepts or refuses it; `None` when the connection ends here.
async fn handshake<S>(
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
            // 3.x layout, which any client can parse [MQTT-3.1.2-2].
            debug!(remote = ?connection.remote, %name, level, "unsupported protocol");
            writer.write_all(&[0x20, 0x02, 0x00, 0x01]).await.ok();
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
    let Some(connection) = Connection::accept(
        &server,
        connect,
        connection,
        &mut reader,
        &mut buf,
        &mut writer,
        deadline,
    )
    .await
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
fn v5_connect_refusal(error: &DecodeError, buf: &[u8]) -> Option<ReasonCode> {
    match error {
        DecodeError::PacketTooLarge { .. } if connect_level(buf) == Some(5) => {
            Some(ReasonCode::PACKET_TOO_LARGE)
        }
        DecodeError::LimitExceeded { .. } => Some(ReasonCode::QUOTA_EXCEEDED),
        _ => None,
    }
}

/// The protocol level of a CONNECT whose body is (partly) in `buf`, read without decoding it.
fn connect_level(buf: &[u8]) -> Option<u8> {
    let header = mqtt_packets::FixedHeader::parse(buf, Protocol::V5)
        .ok()
        .flatten()?;
    let body = buf.get(header.header_length..)?;
    let name_len = usize::from(u16::from_be_bytes([*body.first()?, *body.get(1)?]));
    body.get(2 + name_len).copied()
}

/// Counts a connection between the `maximum_clients` check and the end of its handshake.
struct Admitting<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> Admitting<'a> {
    fn new(counter: &'a std::sync::atomic::AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for Admitting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A copy of a Will that owns its bytes: a Will is kept for the session's life, and its slices
/// would keep the whole CONNECT frame alive.
fn owned_will(will: &mqtt_packets::Will) -> mqtt_packets::Will {
    use crate::message::owned_string;
    let properties = &will.properties;
    mqtt_packets::Will {
        topic: owned_string(&will.topic),
        payload: bytes::Bytes::copy_from_slice(&will.payload),
        qos: will.qos,
        retain: will.retain,
        properties: mqtt_packets::WillProperties {
            content_type: properties.content_type.as_ref().map(owned_string),
            response_topic: properties.response_topic.as_ref().map(owned_string),
            correlation_data: properties
                .correlation_data
                .as_ref()
                .map(|data| bytes::Bytes::copy_from_slice(data)),
            user_properties: properties.user_properties.compact(),
            ..properties.clone()
        },
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

/// After a refusing CONNACK: [`drain`] for [`LINGER`], unless the server is closing.
async fn linger<R: AsyncRead + Unpin>(server: &Server, reader: &mut R) {
    if !server.is_closing() {
        drain(reader, LINGER).await;
    }
}

async fn refuse<W: AsyncWrite + Unpin>(server: &Server, mut writer: W) {
    sys::add(&server.inner.info.connections_refused, 1);
    writer.shutdown().await.ok();
}

#[derive(Debug)]
enum ReadError {
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

/// Reads until one packet is decoded; `Ok(None)` at end of stream.
/// How long a CONNACK for a persistent session waits for its record to become durable.
const DURABLE_CONNACK_TIMEOUT: Duration = Duration::from_secs(5);

async fn read_packet<R: AsyncRead + Unpin>(
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
/// when input arrives, so an idle connection holds no read buffer. Returns the bytes read and
/// the room that was offered for them.
///
/// Cancel safety: as [`AsyncReadExt::read_buf`]; nothing read is lost if the future is dropped.
async fn read_more<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    size: usize,
) -> std::io::Result<(usize, usize)> {
    std::future::poll_fn(|cx| {
        if buf.capacity() == buf.len() {
            buf.reserve(size);
        }
        let offered = buf.capacity() - buf.len();
        let polled = {
            let read = std::pin::pin!(reader.read_buf(&mut *buf));
            read.poll(cx)
        };
        if polled.is_pending() && buf.is_empty() {
            *buf = BytesMut::new();
        }
        polled.map_ok(|read| (read, offered))
    })
    .await
}

/// How much room a connection offers its socket per read: the configured read buffer size
/// while the client sends little, doubled (up to [`ReadSize::MAX`]) each time a read fills all
/// the room offered, since more was then waiting: a busy publisher is read in a few large reads
/// rather than many small ones. Halved back when reads come in small. An idle connection holds
/// no buffer whatever this says (see [`read_more`]).
#[derive(Debug, Clone, Copy)]
struct ReadSize {
    base: usize,
    current: usize,
}

impl ReadSize {
    /// The most room offered per read.
    const MAX: usize = 64 * 1024;

    fn new(base: usize) -> Self {
        let base = base.max(1);
        Self {
            base,
            current: base,
        }
    }

    /// Adapts to a read of `read` bytes into `offered` bytes of room. A read into the rest of a
    /// buffer (less room than the current size) tells nothing about the client.
    fn record(&mut self, read: usize, offered: usize) {
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

/// A CONNACK for a refused connection, in the client's dialect; `None` when the code has no 3.x
/// form (the connection is then closed without one).
async fn send_connack<W: AsyncWrite + Unpin>(writer: &mut W, protocol: Protocol, connack: ConnAck) {
    let mut out = BytesMut::new();
    if connack.encode(protocol, &mut out).is_ok() {
        writer.write_all(&out).await.ok();
        writer.flush().await.ok();
    }
}

/// The session, Session Present, and the previous connection's Will to publish now.
type Established = (
    Arc<Session>,
    bool,
    Option<(Arc<ClientInfo>, Box<mqtt_packets::Will>)>,
);

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
    /// Whether acknowledgements wait for storage hooks' durability ([`HookEvents::DURABLE`]).
    hold_acks: bool,
    /// PUBACK, PUBREC and PUBCOMP of the current read, released once what they acknowledge is
    /// durable.
    held: Vec<Ack>,
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

/// The enhanced authentication of one connection.
#[derive(Default)]
struct EnhancedAuth {
    /// The Authentication Method of CONNECT.
    method: Option<MqttString>,
    /// The hook that handles the method.
    hook: Option<Arc<dyn crate::Hook>>,
    /// The hook's state for the exchange in progress.
    state: crate::hooks::AuthState,
    /// Whether a re-authentication is in progress.
    reauthenticating: bool,
    /// Authentication Data for CONNACK.
    connack_data: Option<bytes::Bytes>,
}

impl std::fmt::Debug for EnhancedAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnhancedAuth")
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

/// Runs the AUTH exchange of a CONNECT with an Authentication Method. Returns the data for the
/// CONNACK and the identity the exchange proved, or the code to refuse with (`None`: close
/// without CONNACK).
#[allow(clippy::too_many_arguments)]
async fn enhanced_auth_exchange<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    server: &Server,
    client: &ClientInfo,
    connect: &Connect,
    method: MqttString,
    auth: &mut EnhancedAuth,
    reader: &mut R,
    buf: &mut BytesMut,
    writer: &mut W,
) -> Result<(Option<bytes::Bytes>, Option<MqttString>), Option<ReasonCode>> {
    let inner = &server.inner;
    let context = server.decode_context(Protocol::V5);
    let mut data = connect.properties.authentication_data.clone();
    let mut step = crate::hooks::AuthStep::Connect;
    auth.method = Some(method.clone());
    loop {
        let outcome = inner
            .hooks
            .enhanced_auth(
                client,
                &method,
                data.as_ref(),
                step,
                &mut auth.state,
                &mut auth.hook,
            )
            .await;
        match outcome {
            // No hook knows the method [MQTT-4.12.0-1].
            AuthOutcome::Unsupported => return Err(Some(ReasonCode::BAD_AUTHENTICATION_METHOD)),
            AuthOutcome::Fail(code) => return Err(Some(code)),
            AuthOutcome::Success { data, principal } => {
                auth.state = None;
                return Ok((data, principal));
            }
            AuthOutcome::Continue(challenge) => {
                let mut packet = mqtt_packets::Auth {
                    reason_code: ReasonCode::CONTINUE_AUTHENTICATION,
                    properties: mqtt_packets::AuthProperties::default(),
                };
                packet.properties.authentication_method = Some(method.clone());
                packet.properties.authentication_data = Some(challenge);
                let mut out = BytesMut::new();
                if packet.encode(Protocol::V5, &mut out).is_err()
                    || writer.write_all(&out).await.is_err()
                {
                    return Err(None);
                }
                writer.flush().await.ok();
                let answer = tokio::time::timeout(
                    inner.options.connect_timeout,
                    read_packet(reader, buf, &context, server),
                )
                .await;
                match answer {
                    Ok(Ok(Some(Packet::Auth(answer))))
                        if answer.reason_code == ReasonCode::CONTINUE_AUTHENTICATION
                            && answer.properties.authentication_method.as_ref()
                                == Some(&method) =>
                    {
                        data = answer.properties.authentication_data;
                        step = crate::hooks::AuthStep::Continue;
                    }
                    // Only AUTH (or DISCONNECT) may come before CONNACK [MQTT-3.1.2-30].
                    Ok(Ok(Some(Packet::Disconnect(_)))) | Ok(Ok(None)) | Err(_) => {
                        return Err(None);
                    }
                    _ => return Err(Some(ReasonCode::PROTOCOL_ERROR)),
                }
            }
        }
    }
}

impl Connection {
    /// Validates and authenticates the CONNECT, creates or resumes the session, and queues the
    /// CONNACK. Returns `None` (after any refusing CONNACK) when the connection is refused.
    #[allow(clippy::too_many_arguments)]
    async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        server: &Server,
        connect: Connect,
        connection: ConnectionInfo,
        reader: &mut R,
        buf: &mut BytesMut,
        writer: &mut W,
        deadline: Instant,
    ) -> Option<Self> {
        let inner = &server.inner;
        let caps = &inner.options.capabilities;
        let protocol = connect.protocol;
        let refuse_with = |code: ReasonCode| ConnAck::new(code);
        if !caps.accepts(protocol) {
            send_connack(
                writer,
                protocol,
                refuse_with(ReasonCode::UNSUPPORTED_PROTOCOL_VERSION),
            )
            .await;
            return None;
        }
        // Client identifier rules (3.1: 1-23 characters; 3.1.1: empty only with clean session).
        let assigned = connect.client_id.is_empty();
        // Ids of the inline client's own subscriptions are reserved.
        let reserved = connect.client_id.starts_with("$inline");
        // Control characters (a newline, an escape sequence) would let a client id forge or
        // garble log lines (audit L8); the spec lets a server refuse any id beyond
        // [0-9a-zA-Z] [MQTT-3.1.3-5].
        let printable = !connect.client_id.chars().any(char::is_control);
        let id_valid = !reserved
            && printable
            && match protocol {
                Protocol::V3_1 => !assigned && connect.client_id.chars().count() <= 23,
                Protocol::V3_1_1 => !assigned || connect.clean_start,
                Protocol::V5 => true,
            };
        if !id_valid {
            send_connack(
                writer,
                protocol,
                refuse_with(ReasonCode::CLIENT_IDENTIFIER_NOT_VALID),
            )
            .await;
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
            send_connack(writer, protocol, refuse_with(ReasonCode::SERVER_BUSY)).await;
            return None;
        }
        if let Some(will) = &connect.will {
            if will.qos > caps.maximum_qos {
                send_connack(writer, protocol, refuse_with(ReasonCode::QOS_NOT_SUPPORTED)).await;
                return None;
            }
            if will.retain && !caps.retain_available {
                send_connack(
                    writer,
                    protocol,
                    refuse_with(ReasonCode::RETAIN_NOT_SUPPORTED),
                )
                .await;
                return None;
            }
            if mqtt_topics::validate_topic_name(&will.topic, &caps.topic_rules).is_err() {
                send_connack(
                    writer,
                    protocol,
                    refuse_with(ReasonCode::TOPIC_NAME_INVALID),
                )
                .await;
                return None;
            }
            if caps.validate_utf8_payload
                && will.properties.payload_format_indicator == Some(PayloadFormatIndicator::Utf8)
                && std::str::from_utf8(&will.payload).is_err()
            {
                // §3.1.3.2.3
                send_connack(
                    writer,
                    protocol,
                    refuse_with(ReasonCode::PAYLOAD_FORMAT_INVALID),
                )
                .await;
                return None;
            }
        }

        let client_id = if assigned {
            server.assign_client_id()
        } else {
            mqtt_topics::ClientId::from(connect.client_id.as_str())
        };
        let mut client = Arc::new(ClientInfo {
            client_id: client_id.clone(),
            // A copy: the client's information lasts as long as its session.
            username: connect.username.as_ref().map(crate::message::owned_string),
            protocol,
            clean_start: connect.clean_start,
            connection,
            inline: false,
        });
        for hook in inner.hooks.with(HookEvents::ON_CONNECT) {
            if let Err(refusal) = hook.on_connect(&client, &connect) {
                let mut connack = refuse_with(refusal.reason_code);
                if protocol.is_v5() {
                    connack.properties.server_reference = refusal
                        .server_reference
                        .and_then(|reference| MqttString::new(reference).ok());
                }
                info!(client_id = %client_id, code = %refusal.reason_code, "connection refused by hook {}", hook.id());
                send_connack(writer, protocol, connack).await;
                return None;
            }
        }
        let mut auth = EnhancedAuth::default();
        if let Some(method) = connect.properties.authentication_method.clone() {
            // Enhanced authentication (§4.12): challenge and response before CONNACK.
            let exchange = tokio::time::timeout_at(
                deadline,
                enhanced_auth_exchange(
                    server, &client, &connect, method, &mut auth, reader, buf, writer,
                ),
            )
            .await;
            let Ok(exchange) = exchange else {
                info!(client_id = %client_id, remote = ?client.connection.remote, "authentication not finished within the connect timeout");
                send_connack(writer, protocol, refuse_with(ReasonCode::NOT_AUTHORIZED)).await;
                return None;
            };
            match exchange {
                Ok((data, principal)) => {
                    auth.connack_data = data;
                    if let Some(principal) = principal {
                        // The proved identity is the client's from now on: the ACL checks it
                        // and the session belongs to it.
                        Arc::make_mut(&mut client).username = Some(principal);
                    }
                }
                Err(code) => {
                    info!(client_id = %client_id, remote = ?client.connection.remote, ?code, "enhanced authentication refused");
                    if let Some(code) = code {
                        send_connack(writer, protocol, refuse_with(code)).await;
                    }
                    return None;
                }
            }
        } else if !tokio::time::timeout_at(deadline, inner.hooks.authenticate(&client, &connect))
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
            send_connack(writer, protocol, refuse_with(code)).await;
            return None;
        }
        for hook in inner.hooks.with(HookEvents::ON_SESSION_ESTABLISH) {
            hook.on_session_establish(&client, &connect);
        }

        // Session Expiry: 3.x clean session = 0, persistent = the server maximum; v5 as asked,
        // capped by the server.
        let requested_expiry = if protocol.is_v5() {
            connect.properties.session_expiry_interval.unwrap_or(0)
        } else if connect.clean_start {
            0
        } else {
            u32::MAX
        };
        let expiry = requested_expiry.min(caps.maximum_session_expiry_interval);
        let generation = inner.next_generation();
        let handle = ConnectionHandle::new(generation);
        let peer = PeerLimits {
            window: usize::from(
                connect
                    .properties
                    .receive_maximum
                    .map_or(u16::MAX, |maximum| maximum.get())
                    .min(caps.maximum_inflight.max(1)),
            ),
            maximum_packet_size: connect
                .properties
                .maximum_packet_size
                .map_or(u32::MAX, |m| m.get()),
            request_problem_information: connect
                .properties
                .request_problem_information
                .unwrap_or(true),
            topic_alias_maximum: if protocol.is_v5() {
                connect.properties.topic_alias_maximum.unwrap_or(0)
            } else {
                0
            },
        };
        let (session, session_present, old_will) =
            match Self::establish(server, &client, &connect, expiry, handle.clone(), peer) {
                Ok(established) => established,
                Err(code) => {
                    // The server is closing, the session is another user's, or no more sessions
                    // are allowed.
                    send_connack(writer, protocol, refuse_with(code)).await;
                    return None;
                }
            };

        if let Some((old_client, will)) = old_will {
            server.publish_will(&old_client, will);
        }
        // Counted from the moment the session is attached: a takeover (even during the wait
        // below) and the detach at the end subtract it.
        let connected = inner.info.clients_connected.fetch_add(1, Ordering::Relaxed) + 1;
        inner
            .info
            .clients_maximum
            .fetch_max(connected, Ordering::Relaxed);
        // A session that outlives the connection is acknowledged (CONNACK) only once its record
        // is durable, when a storage hook asks for that. If it cannot be, the client gets CONNACK
        // 0x80 and the connection ends through the normal path (the session stays, offline).
        let mut not_durable = false;
        if expiry > 0 && inner.hooks.provides(HookEvents::DURABLE) && session.state.lock().persist {
            let durable =
                tokio::time::timeout(DURABLE_CONNACK_TIMEOUT, inner.hooks.durable()).await;
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
                return None;
            }
            if let Some(failure) = failure {
                warn!(client_id = %client_id, error = %failure, "session not durable; connection refused");
                sys::add(&inner.info.hook_errors, 1);
                not_durable = true;
            }
        }
        if not_durable {
            // Refused: no Will, nothing resent; the writer sends CONNACK 0x80 and closes.
            session.state.lock().will = None;
            let refusal = refuse_with(ReasonCode::UNSPECIFIED_ERROR);
            {
                let mut state = session.state.lock();
                state
                    .control
                    .push_front(Control::packet(Packet::ConnAck(refusal)));
                state.wake_writer();
            }
            handle.close(Close::Silent);
            return Some(Self {
                server: server.clone(),
                session,
                client,
                connect: Some(Box::new(connect)),
                handle,
                protocol,
                keep_alive: 0,
                aliases: None,
                connect_expiry_zero: requested_expiry == 0,
                staged: Staged::default(),
                parked: Parked::default(),
                auth: auth.method.is_some().then(|| Box::new(auth)),
                pending_auth: None,
                hold_acks: false,
                held: Vec::new(),
                counters: Counters::default(),
            });
        }

        // Server Keep Alive replaces the client's [MQTT-3.2.2-21]: the configured value, or the
        // maximum when the client asked for more (or for none). v5 only: 3.x cannot be told.
        let server_keep_alive = if protocol.is_v5() {
            caps.server_keep_alive.or_else(|| {
                caps.maximum_keep_alive
                    .filter(|&maximum| connect.keep_alive == 0 || connect.keep_alive > maximum)
            })
        } else {
            None
        };
        // CONNACK [MQTT-3.2.0-1]: capabilities are advertised as they are enforced.
        let mut properties = ConnAckProperties::default();
        if protocol.is_v5() {
            if expiry != requested_expiry {
                properties.session_expiry_interval = Some(expiry);
            }
            properties.receive_maximum = std::num::NonZeroU16::new(caps.receive_maximum);
            if caps.maximum_qos < QoS::ExactlyOnce {
                properties.maximum_qos = Some(caps.maximum_qos);
            }
            if !caps.retain_available {
                properties.retain_available = Some(false);
            }
            if caps.maximum_packet_size < mqtt_packets::PROTOCOL_MAXIMUM_PACKET_SIZE {
                properties.maximum_packet_size =
                    std::num::NonZeroU32::new(caps.maximum_packet_size);
            }
            if assigned {
                properties.assigned_client_identifier = MqttString::new(client_id.to_string()).ok();
            }
            if caps.topic_alias_maximum > 0 {
                properties.topic_alias_maximum = Some(caps.topic_alias_maximum);
            }
            if !caps.wildcard_subscription_available {
                properties.wildcard_subscription_available = Some(false);
            }
            if !caps.subscription_identifiers_available {
                properties.subscription_identifiers_available = Some(false);
            }
            if !caps.shared_subscription_available {
                properties.shared_subscription_available = Some(false);
            }
            properties.server_keep_alive = server_keep_alive;
            if auth.method.is_some() {
                properties.authentication_method = auth.method.clone();
                properties.authentication_data = auth.connack_data.take();
            }
            // Response Information only when asked for [MQTT-3.1.2-28] (or forced by the
            // compatibility switch).
            let asked = connect.properties.request_response_information == Some(true)
                || caps.compatibilities.always_return_response_info;
            if asked && let Some(template) = &caps.response_information {
                properties.response_information =
                    MqttString::new(template.replace("{client_id}", &client_id)).ok();
            }
        }
        let keep_alive = match server_keep_alive {
            Some(server_keep_alive) => server_keep_alive,
            None => connect.keep_alive,
        };
        let connack = ConnAck {
            session_present: session_present && protocol != Protocol::V3_1,
            reason_code: ReasonCode::SUCCESS,
            properties,
        };
        {
            let mut state = session.state.lock();
            state
                .control
                .push_front(Control::packet(Packet::ConnAck(connack)));
            // Resend what was in flight, in order [MQTT-4.4.0-1].
            if session_present {
                let window = state.peer.window;
                for outgoing in state.outbound.resend_all(window) {
                    state.control.push_back(Control::Outgoing(outgoing));
                }
            }
            state.wake_writer();
        }
        info!(client_id = %client_id, remote = ?client.connection.remote, listener = %client.connection.listener,
              protocol = %protocol, session_present, "client connected");
        let connect_expiry_zero = requested_expiry == 0;
        Some(Self {
            server: server.clone(),
            session,
            client,
            connect: Some(Box::new(connect)),
            handle,
            protocol,
            keep_alive,
            aliases: None,
            connect_expiry_zero,
            staged: Staged::default(),
            parked: Parked::default(),
            auth: auth.method.is_some().then(|| Box::new(auth)),
            pending_auth: None,
            hold_acks: inner.hooks.provides(HookEvents::DURABLE),
            held: Vec::new(),
            counters: Counters::default(),
        })
    }

    /// Creates or resumes the session under the registry lock, taking it over from an older
    /// connection if there is one [MQTT-3.1.4-3]. Returns the session, Session Present, and the
    /// old connection's Will when it must be published now.
    fn establish(
        server: &Server,
        client: &Arc<ClientInfo>,
        connect: &Connect,
        expiry: u32,
        handle: ConnectionHandle,
        peer: PeerLimits,
    ) -> Result<Established, ReasonCode> {
        let inner = &server.inner;
        let options = &inner.options;
        // The registry lock is held until the session is attached, so that ending a session
        // (which takes the same lock first) and resuming it cannot interleave.
        let mut sessions = inner.sessions.lock();
        if inner.closing.load(Ordering::SeqCst) {
            return Err(ReasonCode::SERVER_UNAVAILABLE);
        }
        let existing = sessions.get(&client.client_id).cloned();
        let user = client.username.as_deref().unwrap_or("");
        let foreign = existing.as_ref().is_some_and(|session| {
            let state = session.state.lock();
            state.owner().is_some_and(|owner| owner != user)
        });
        if options.bind_sessions_to_identity && foreign {
            // Another identity's session: neither taken over nor resumed (audit H3).
            warn!(client_id = %client.client_id, "session belongs to another user; connection refused");
            return Err(ReasonCode::NOT_AUTHORIZED);
        }
        let (session, mut present) = match existing {
            Some(session) => (session, true),
            None if sessions.len() >= options.capabilities.maximum_sessions => {
                warn!(client_id = %client.client_id, sessions = sessions.len(), "maximum_sessions reached; connection refused");
                sys::add(&inner.info.limits_exceeded, 1);
                return Err(if client.protocol.is_v5() {
                    ReasonCode::QUOTA_EXCEEDED
                } else {
                    ReasonCode::SERVER_UNAVAILABLE
                });
            }
            None => {
                let session = Arc::new(Session::new(client.client_id.clone(), client.protocol));
                sessions.insert(client.client_id.clone(), session.clone());
                sys::add(&inner.info.sessions, 1);
                (session, false)
            }
        };
        let mut old_will = None;
        let mut clear = connect.clean_start;
        let mut state = session.state.lock();
        if let Some(old) = state.connection.take() {
            // Takeover: the old connection gets DISCONNECT 0x8E (v5) and is closed.
            old.close(Close::Disconnect(ReasonCode::SESSION_TAKEN_OVER));
            session.connected.store(false, Ordering::SeqCst);
            sys::sub(&inner.info.clients_connected, 1);
            // The old session ends if its expiry was 0 or the new one starts clean.
            let old_session_ends = state.expiry_interval == 0 || connect.clean_start;
            clear |= old_session_ends;
            let will = state.will.take();
            if let (Some(will), Some(old_client)) = (will, state.client.clone()) {
                let delay = will.properties.will_delay_interval.unwrap_or(0);
                if delay == 0 || old_session_ends || !old_client.protocol.is_v5() {
                    old_will = Some((old_client, will));
                }
            }
            info!(client_id = %client.client_id, "session taken over");
        } else if state.will.is_some() {
            // A delayed Will of the previous connection: resumed in time, so it is not sent
            // [MQTT-3.1.3-9]; if the session starts clean, the old session ended now.
            let will = state.will.take();
            if connect.clean_start
                && let (Some(will), Some(old_client)) = (will, state.client.clone())
            {
                old_will = Some((old_client, will));
            }
        }
        let mirrored = inner.hooks.provides(HookEvents::ON_STORAGE_EVENT);
        let persist = mirrored && expiry > 0;
        if state.persist && (clear || !persist) {
            // The stored session ends: it starts clean, or it now ends with its connection.
            state.persist = false;
            inner
                .hooks
                .storage(&crate::storage::StorageEvent::SessionEnded {
                    client_id: &client.client_id,
                });
        }
        if clear {
            // Clean Start: discard the old session state [MQTT-3.1.2-4].
            present = false;
            let removed = inner.trie.remove_client(&session.client_id);
            sys::sub(&inner.info.subscriptions, removed as u64);
            state.subscriptions.clear();
            state.inbound_qos2.clear();
            state.outbound.clear();
            state.flow.stop_retained(None);
            // Deliveries parked for the old session's subscriptions are dropped by their
            // connections, which are woken to find out.
            state.epoch += 1;
            crate::flow::wake(state.flow.release_all());
        }
        if !clear
            && state
                .owner()
                .is_some_and(|owner| owner != client.username.as_deref().unwrap_or(""))
        {
            // Resumed by another identity (allowed by `bind_sessions_to_identity = false`):
            // what was queued for the old one is checked against the new one's ACL (audit H3).
            let refused = state.outbound.take_unless(|delivery| {
                inner.hooks.acl(
                    client,
                    delivery.message.topic.as_str(),
                    crate::hooks::Access::Read,
                )
            });
            if !refused.is_empty() {
                info!(client_id = %client.client_id, refused = refused.len(), "queued messages the new user may not read dropped");
            }
        }
        state.flow.attached(Instant::now());
        state.protocol = client.protocol;
        state.expiry_interval = expiry;
        state.client = Some(client.clone());
        state.connection = Some(handle.clone());
        state.last_generation = handle.generation;
        state.peer = peer;
        // Kept for as long as the session: a copy that owns its bytes, not slices of the
        // CONNECT's frame.
        state.will = connect.will.as_ref().map(|will| Box::new(owned_will(will)));
        state.control.clear();
        if persist {
            if !state.persist {
                // Newly mirrored: what the session already holds goes to storage too.
                state.persist = true;
                mirror_session(inner, &client.client_id, &state);
            }
            let stored = crate::storage::stored_client(&client.client_id, &state, false);
            inner.hooks.storage(&StorageEvent::Session(&stored));
        }
        session.connected.store(true, Ordering::SeqCst);
        drop(state);
        drop(sessions);
        Ok((session, present, old_will))
    }

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

    #[allow(clippy::manual_async_fn)] // An `async fn` would hold its arguments twice.
    fn read_loop<R: AsyncRead + Unpin>(
        &mut self,
        reader: &mut R,
        mut buf: BytesMut,
    ) -> impl Future<Output = End> {
        // An `async` block rather than an `async fn` (see `write_loop`).
        async move {
            let server = self.server.clone();
            let options = &server.inner.options;
            let context = server.decode_context(self.protocol);
            // 1.5 times the Keep Alive without a complete packet closes the connection
            // [MQTT-3.1.2-22]: measured from the last packet, not the last byte, so a client
            // that trickles a packet byte by byte cannot keep a connection (and the buffer of
            // its partial packet) forever.
            let idle = |keep_alive: u16| {
                (keep_alive > 0)
                    .then(|| Instant::now() + Duration::from_millis(u64::from(keep_alive) * 1500))
            };
            let mut deadline = idle(self.keep_alive);
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
                            if !self.hold_acks {
                                self.push_held();
                            }
                            self.flush_counters();
                            if self.hold_acks && !self.held.is_empty() {
                                // Waiting for storage is a path of its own, boxed: it keeps the
                                // storage timer out of every connection's state.
                                if let Some(end) = self.boxed_release_acks().await {
                                    return end;
                                }
                            } else {
                                self.push_held();
                            }
                            if decoded {
                                // After any wait for room or storage: the client is not idle
                                // while the server holds its reads back.
                                deadline = idle(self.keep_alive);
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
                        Ok(Some(Some(end))) => {
                            // What the read accepted before the end is placed as any read's,
                            // waiting for room (a kill, or the close this end may have asked
                            // for, places the rest at once); the end stays the reason.
                            self.hand_over().await;
                            self.flush_counters();
                            self.boxed_release_acks_on_exit().await;
                            return end;
                        }
                        Err(error) => {
                            self.hand_over().await;
                            self.flush_counters();
                            self.boxed_release_acks_on_exit().await;
                            if let DecodeError::LimitExceeded { .. } = error {
                                sys::add(&self.server.inner.info.limits_exceeded, 1);
                            }
                            warn!(client_id = %self.client.client_id, %error, "closing on a bad packet");
                            self.close(error.reason_code());
                            return End::Abnormal(error.to_string());
                        }
                    }
                    if self.pending_auth.is_some() && !self.hold_acks {
                        // The acknowledgements so far do not wait for the hook's answer, once
                        // what they acknowledge is queued.
                        if let Some(end) = self.hand_over().await {
                            return end;
                        }
                        self.push_held();
                    }
                    if let Some(auth) = self.pending_auth.take()
                        && let Some(end) = self.boxed_reauthenticate(*auth).await
                    {
                        self.hand_over().await;
                        self.flush_counters();
                        self.boxed_release_acks_on_exit().await;
                        return end;
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
                    () = shared.kill.notified() => return End::Killed,
                };
                match result {
                    None => {
                        info!(client_id = %self.client.client_id, "keep alive timeout");
                        self.close(ReasonCode::KEEP_ALIVE_TIMEOUT);
                        return End::Abnormal("keep alive timeout".into());
                    }
                    Some(Ok((0, _))) => {
                        return End::Abnormal("connection closed by the client".into());
                    }
                    Some(Ok((read, offered))) => {
                        read_size.record(read, offered);
                        sys::add(&self.server.inner.info.bytes_received, read as u64);
                    }
                    Some(Err(error)) => return End::Abnormal(format!("read error: {error}")),
                }
            }
        }
    }

    /// A step of re-authentication (§4.12.1): AUTH 0x19 starts one, AUTH 0x18 continues it; the
    /// method must be the one of CONNECT. Success is AUTH 0x00, failure DISCONNECT.
    async fn reauthenticate(&mut self, packet: mqtt_packets::Auth) -> Option<End> {
        let server = self.server.clone();
        let method = self.auth.as_ref()?.method.clone()?;
        if packet.properties.authentication_method.as_ref() != Some(&method) {
            // A different method is a protocol error (§3.15).
            self.close(ReasonCode::PROTOCOL_ERROR);
            return Some(End::Abnormal(
                "AUTH with another authentication method".into(),
            ));
        }
        let step = match packet.reason_code {
            ReasonCode::RE_AUTHENTICATE => {
                if let Some(auth) = self.auth.as_deref_mut() {
                    auth.state = None;
                    auth.reauthenticating = true;
                }
                crate::hooks::AuthStep::Reauthenticate
            }
            ReasonCode::CONTINUE_AUTHENTICATION
                if self.auth.as_ref().is_some_and(|auth| auth.reauthenticating) =>
            {
                crate::hooks::AuthStep::Continue
            }
            _ => {
                self.close(ReasonCode::PROTOCOL_ERROR);
                return Some(End::Abnormal("unexpected AUTH".into()));
            }
        };
        let data = packet.properties.authentication_data.clone();
        let auth = self.auth.as_deref_mut()?;
        let outcome = server
            .inner
            .hooks
            .enhanced_auth(
                &self.client,
                &method,
                data.as_ref(),
                step,
                &mut auth.state,
                &mut auth.hook,
            )
            .await;
        let reply = |reason_code: ReasonCode, data: Option<bytes::Bytes>| {
            let mut auth = mqtt_packets::Auth {
                reason_code,
                properties: mqtt_packets::AuthProperties::default(),
            };
            auth.properties.authentication_method = Some(method.clone());
            auth.properties.authentication_data = data;
            Packet::Auth(auth)
        };
        match outcome {
            AuthOutcome::Continue(challenge) => {
                self.send(reply(ReasonCode::CONTINUE_AUTHENTICATION, Some(challenge)));
                None
            }
            AuthOutcome::Success { principal, .. }
                if principal.is_some() && principal != self.client.username =>
            {
                // A re-authentication keeps the identity of the connection.
                self.close(ReasonCode::NOT_AUTHORIZED);
                Some(End::Abnormal(
                    "re-authentication proved another identity".into(),
                ))
            }
            AuthOutcome::Success { data, .. } => {
                if let Some(auth) = self.auth.as_deref_mut() {
                    auth.reauthenticating = false;
                    auth.state = None;
                }
                self.send(reply(ReasonCode::SUCCESS, data));
                None
            }
            AuthOutcome::Fail(code) => {
                self.close(code);
                Some(End::Abnormal(format!("re-authentication failed: {code}")))
            }
            AuthOutcome::Unsupported => {
                self.close(ReasonCode::BAD_AUTHENTICATION_METHOD);
                Some(End::Abnormal("re-authentication method unsupported".into()))
            }
        }
    }

    /// Ends the connection with this code: DISCONNECT for v5, a plain close for 3.x. Malformed
    /// packets and protocol errors (the codes of §4.13.1) are counted.
    fn close(&mut self, code: ReasonCode) {
        if !self.hold_acks {
            // Acknowledgements of packets already accepted in this read go before the
            // DISCONNECT: the writer stops taking control packets once the connection closes.
            self.push_held();
        }
        if matches!(
            code.value(),
            0x81 | 0x82 | 0x93 | 0x94 | 0x95 | 0x9A | 0x9B | 0x9E | 0xA1 | 0xA2
        ) {
            sys::add(&self.server.inner.info.protocol_errors, 1);
        }
        let how = if self.protocol.is_v5() {
            Close::Disconnect(code)
        } else {
            Close::Silent
        };
        self.handle.close(how);
    }

    /// Hands the deliveries staged so far to their subscribers' queues. If a connected
    /// subscriber's queue is full, waits (without reading) until every delivery is placed.
    /// `Some` ends the connection (it was killed meanwhile): what it accepted is then placed
    /// without waiting, and the held acknowledgements go out if storage allows.
    ///
    /// Cancel safety: not cancel safe; the reader awaits it to completion.
    async fn hand_over(&mut self) -> Option<End> {
        let shared = self.handle.shared();
        self.server
            .deliver_from_read(&mut self.staged, &shared, &mut self.parked);
        if self.parked.is_empty() {
            return None;
        }
        self.boxed_wait_for_room(shared).await
    }

    /// [`Connection::wait_for_answers`] in a box (see [`serve`]): waiting is the rare path.
    fn boxed_wait_for_answers(
        &mut self,
        limit: usize,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.wait_for_answers(limit))
    }

    /// Waits, without reading, until the writer has taken this connection's unsent answers down
    /// to half of `limit`. `Some` ends the connection: killed, or its answers were not written
    /// within the slow-subscriber timeout (DISCONNECT 0x97).
    async fn wait_for_answers(&mut self, limit: usize) -> Option<End> {
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
                () = shared.kill.notified() => break Some(End::Killed),
                () = tokio::time::sleep_until(deadline) => {
                    warn!(client_id = %self.client.client_id, unsent, "client does not read its acknowledgements");
                    self.close(ReasonCode::QUOTA_EXCEEDED);
                    break Some(End::Abnormal("too many unsent acknowledgements".into()));
                }
            }
        };
        shared.answers_waiting.store(false, Ordering::Relaxed);
        end
    }

    /// [`Connection::wait_for_room`] in a box (see [`serve`]): waiting is the rare path.
    fn boxed_wait_for_room(
        &mut self,
        shared: Arc<crate::session::HandleShared>,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.wait_for_room(shared))
    }

    /// Waits until the parked deliveries are placed: woken when a subscriber's queue has room,
    /// and at the time a subscriber still full would count as stuck.
    async fn wait_for_room(&mut self, shared: Arc<crate::session::HandleShared>) -> Option<End> {
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
                () = shared.kill.notified() => break Some(End::Killed),
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

    /// Queues PUBACK, PUBREC or PUBCOMP: held until the read is handled, then queued together
    /// (one session lock and one writer wake per read, in the order of the packets they answer),
    /// after storage hooks made what they acknowledge durable when acknowledgements wait for
    /// them.
    fn send_ack(&mut self, ack: Ack) {
        self.held.push(ack);
    }

    /// Waits until storage hooks committed what the held acknowledgements acknowledge, then
    /// queues them, in order. `Some` ends the connection: the server is taking it down, or
    /// storage failed (the acknowledgements are not sent, so the client sends again).
    async fn release_acks(&mut self) -> Option<End> {
        if self.held.is_empty() {
            return None;
        }
        if !self.hold_acks {
            self.push_held();
            return None;
        }
        let shared = self.handle.shared();
        let timeout = self.server.inner.options.durable_ack_timeout;
        let durable = tokio::select! {
            result = tokio::time::timeout(timeout, self.server.inner.hooks.durable()) => result,
            () = shared.kill.notified() => {
                self.held.clear();
                return Some(End::Killed);
            }
        };
        let Ok(durable) = durable else {
            // The storage does not answer: the client is closed without its acknowledgements
            // and sends again once it reconnects (audit H5), instead of waiting unread forever.
            self.held.clear();
            warn!(client_id = %self.client.client_id, ?timeout, "storage did not commit in time; closing without acknowledging");
            sys::add(&self.server.inner.info.durable_ack_timeouts, 1);
            self.close(ReasonCode::UNSPECIFIED_ERROR);
            return Some(End::Abnormal("storage did not commit in time".into()));
        };
        if let Err(error) = durable {
            self.held.clear();
            warn!(client_id = %self.client.client_id, %error, "storage failed; closing without acknowledging");
            sys::add(&self.server.inner.info.hook_errors, 1);
            self.close(ReasonCode::UNSPECIFIED_ERROR);
            return Some(End::Abnormal(format!("storage failed: {error}")));
        }
        self.push_held();
        None
    }

    /// Queues the held acknowledgements for this connection's writer (also when it is closing).
    fn push_held(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let mut state = self.session.state.lock();
        let current = state
            .connection
            .as_ref()
            .is_some_and(|connection| connection.generation == self.handle.generation);
        if current {
            state.control.extend(self.held.drain(..).map(Control::Ack));
            state.wake_writer();
        } else {
            self.handle
                .unsent
                .lock()
                .extend(self.held.drain(..).map(Control::Ack));
        }
    }

    /// [`Connection::release_acks`] in a box (see [`serve`]): only with a storage hook that
    /// holds acknowledgements.
    fn boxed_release_acks(&mut self) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.release_acks())
    }

    /// [`Connection::release_acks_on_exit`] in a box (see [`serve`]): it runs once.
    fn boxed_release_acks_on_exit(&mut self) -> Pin<Box<impl Future<Output = ()> + Send>> {
        Box::pin(self.release_acks_on_exit())
    }

    /// [`Connection::reauthenticate`] in a box (see [`serve`]): it is rare.
    fn boxed_reauthenticate(
        &mut self,
        packet: mqtt_packets::Auth,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.reauthenticate(packet))
    }

    /// On the way out: the held acknowledgements still go if storage commits in time.
    async fn release_acks_on_exit(&mut self) {
        if self.held.is_empty() {
            return;
        }
        if !self.hold_acks {
            self.push_held();
            return;
        }
        match tokio::time::timeout(LINGER, self.server.inner.hooks.durable()).await {
            Ok(Ok(())) => self.push_held(),
            _ => self.held.clear(),
        }
    }

    /// After a read is handled: adds what it received to the server's counters, and wakes the
    /// writer if acknowledgements opened the send window.
    fn flush_counters(&mut self) {
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

    /// Runs the `on_packet_read` hooks, which may change the packet or refuse it (with the
    /// reason code and the refusing hook's id).
    fn read_hooks(&self, packet: Packet) -> Result<Packet, (ReasonCode, String)> {
        let hooks = &self.server.inner.hooks;
        if !hooks.provides(HookEvents::ON_PACKET_READ) {
            return Ok(packet);
        }
        let mut packet = packet;
        for hook in hooks.with(HookEvents::ON_PACKET_READ) {
            packet = hook
                .on_packet_read(&self.client, packet)
                .map_err(|code| (code, hook.id().to_owned()))?;
        }
        Ok(packet)
    }

    /// PUBACK: ends a QoS 1 flow of ours.
    fn on_puback(&mut self, packet_id: PacketId) {
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
    fn on_pubrec(&mut self, packet_id: PacketId, reason_code: ReasonCode) {
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
                    hook.on_qos_dropped(&self.client.client_id, packet_id.get());
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
    fn on_pubcomp(&mut self, packet_id: PacketId) {
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
    fn on_pubrel(&mut self, packet_id: PacketId) {
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
    fn handle_packet(&mut self, packet: Packet) -> Option<End> {
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
            Err((code, hook)) => {
                self.close(code);
                return Some(End::Abnormal(format!("packet refused by hook {hook}")));
            }
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
                    Err(code) => {
                        self.close(code);
                        Some(End::Abnormal(format!("SUBSCRIBE refused: {code}")))
                    }
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
                self.close(ReasonCode::PROTOCOL_ERROR);
                Some(End::Abnormal("second CONNECT".into()))
            }
            Packet::Auth(auth) if self.auth.is_some() => {
                // Re-authentication: handled on the reader's task (see `read_loop`).
                self.pending_auth = Some(Box::new(auth));
                None
            }
            Packet::Auth(_) => {
                // No enhanced authentication was negotiated (§3.15).
                self.close(ReasonCode::PROTOCOL_ERROR);
                Some(End::Abnormal(
                    "AUTH without an authentication method".into(),
                ))
            }
            Packet::ConnAck(_) | Packet::SubAck(_) | Packet::UnsubAck(_) | Packet::PingResp => {
                // Packets only a server sends (§2.1.2).
                self.close(ReasonCode::PROTOCOL_ERROR);
                Some(End::Abnormal("client sent a server packet".into()))
            }
        };
        if let Some(packet) = processed {
            let error = match &end {
                Some(End::Abnormal(why)) => Some(why.as_str()),
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
    fn message_removed(&self, seq: u64, qos: QoS) {
        self.server
            .inner
            .hooks
            .storage(&StorageEvent::MessageRemoved {
                client_id: &self.client.client_id,
                seq,
                qos,
            });
    }

    fn completed(&mut self, packet_id: PacketId, known: bool) {
        if known {
            // The window has room again: the writer is woken once, after the whole read, if
            // messages wait for it.
            self.counters.wake_writer = true;
            for hook in self.server.inner.hooks.with(HookEvents::ON_QOS_COMPLETE) {
                hook.on_qos_complete(&self.client.client_id, packet_id.get());
            }
        }
    }

    fn handle_publish(&mut self, publish: Publish) -> Option<End> {
        let inner = &self.server.inner;
        let caps = &inner.options.capabilities;
        if let Some(count) = self
            .counters
            .messages
            .get_mut(usize::from(publish.qos.as_u8()))
        {
            *count += 1;
        }
        let mut publish = publish;
        if publish.qos > caps.maximum_qos {
            // [MQTT-3.2.2-11]
            self.close(ReasonCode::QOS_NOT_SUPPORTED);
            return Some(End::Abnormal("QoS above the server maximum".into()));
        }
        if publish.retain && !caps.retain_available {
            // [MQTT-3.2.2-14]
            self.close(ReasonCode::RETAIN_NOT_SUPPORTED);
            return Some(End::Abnormal("RETAIN while retain is not available".into()));
        }
        if !publish.properties.subscription_identifiers.is_empty() {
            // [MQTT-3.3.4-6]
            self.close(ReasonCode::PROTOCOL_ERROR);
            return Some(End::Abnormal(
                "PUBLISH with a subscription identifier".into(),
            ));
        }
        if let Some(alias) = publish.properties.topic_alias {
            // Topic aliases [MQTT-3.3.2-9] [MQTT-3.3.2-12] (§3.3.4).
            if alias.get() > caps.topic_alias_maximum {
                self.close(ReasonCode::TOPIC_ALIAS_INVALID);
                return Some(End::Abnormal("topic alias above the maximum".into()));
            }
            if publish.topic.is_empty() {
                match self
                    .aliases
                    .as_ref()
                    .and_then(|aliases| aliases.get(alias.get()))
                {
                    Some(topic) => publish.topic = topic.clone(),
                    None => {
                        self.close(ReasonCode::PROTOCOL_ERROR);
                        return Some(End::Abnormal("unknown topic alias".into()));
                    }
                }
            } else if mqtt_topics::validate_topic_name(publish.topic.as_str(), &caps.topic_rules)
                .is_ok()
            {
                // Only a valid topic is kept for the connection: an invalid one is refused below
                // like any PUBLISH to it, and sets no alias.
                let kept = self.aliases.get_or_insert_with(Box::default).set(
                    alias.get(),
                    &publish.topic,
                    caps.maximum_topic_alias_bytes,
                );
                if !kept {
                    warn!(client_id = %self.client.client_id, "topic aliases beyond their byte limit");
                    sys::add(&self.server.inner.info.limits_exceeded, 1);
                    self.close(ReasonCode::QUOTA_EXCEEDED);
                    return Some(End::Abnormal(
                        "topic aliases beyond their byte limit".into(),
                    ));
                }
            }
        }
        let qos = publish.qos;
        let packet_id = publish.packet_id;
        if caps.validate_utf8_payload
            && publish.properties.payload_format_indicator == Some(PayloadFormatIndicator::Utf8)
            && std::str::from_utf8(&publish.payload).is_err()
        {
            // [MQTT-3.3.2-4]: refused in the acknowledgement; QoS 0 is dropped.
            debug!(client_id = %self.client.client_id, "payload is not the UTF-8 it claims to be");
            if let Some(id) = packet_id {
                let code = if self.protocol.is_v5() {
                    ReasonCode::PAYLOAD_FORMAT_INVALID
                } else {
                    ReasonCode::SUCCESS
                };
                let ack = if qos == QoS::AtLeastOnce {
                    Ack::puback(id, code)
                } else {
                    Ack::pubrec(id, code)
                };
                // In order with the other acknowledgements [MQTT-4.6.0-2].
                self.send_ack(ack);
            }
            return None;
        }
        if qos == QoS::ExactlyOnce
            && let Some(id) = packet_id
        {
            let state = self.session.state.lock();
            if state.inbound_qos2.contains(&id.get()) {
                drop(state);
                // A resend before PUBREL: acknowledge again, deliver once [MQTT-4.3.3-9]; held
                // like the first PUBREC until what it acknowledges is durable.
                self.send_ack(Ack::pubrec(id, ReasonCode::SUCCESS));
                return None;
            }
            if state.inbound_qos2.len() >= usize::from(caps.receive_maximum) {
                drop(state);
                // [MQTT-3.3.4-7]
                self.close(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
                return Some(End::Abnormal("receive maximum exceeded".into()));
            }
        }
        let outcome = self
            .server
            .publish_staged(&self.client, publish, &mut self.staged);
        let code = match outcome {
            PublishOutcome::Delivered(0) if self.protocol.is_v5() => {
                ReasonCode::NO_MATCHING_SUBSCRIBERS
            }
            PublishOutcome::Delivered(_) | PublishOutcome::Ignored => ReasonCode::SUCCESS,
            PublishOutcome::NotRetained if self.protocol.is_v5() => ReasonCode::QUOTA_EXCEEDED,
            PublishOutcome::NotRetained => ReasonCode::SUCCESS,
            PublishOutcome::Refused(code) => {
                debug!(client_id = %self.client.client_id, %code, "publish refused");
                // 3.x has no way to refuse a PUBLISH: acknowledge it and drop it
                // ([MQTT-3.3.5-2] of 3.1.1).
                if self.protocol.is_v5() {
                    code
                } else {
                    ReasonCode::SUCCESS
                }
            }
        };
        let id = packet_id?;
        if qos == QoS::AtLeastOnce {
            self.send_ack(Ack::puback(id, code));
        } else {
            if !code.is_error() {
                let mut state = self.session.state.lock();
                state.inbound_qos2.insert(id.get());
                // Under the session lock, so that it cannot land after a takeover ended it.
                if state.persist {
                    inner.hooks.storage(&StorageEvent::InboundQos2 {
                        client_id: &self.client.client_id,
                        packet_id: id.get(),
                    });
                }
            }
            self.send_ack(Ack::pubrec(id, code));
        }
        None
    }

    fn handle_disconnect(&mut self, disconnect: &Disconnect) -> End {
        let caps = &self.server.inner.options.capabilities;
        if let Some(expiry) = disconnect.properties.session_expiry_interval {
            if self.connect_expiry_zero && expiry != 0 {
                // §3.14.2.2.2: a protocol error, and not a clean disconnect.
                self.close(ReasonCode::PROTOCOL_ERROR);
                return End::ClientDisconnect { will: true };
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

    /// After the connection ended and was detached: the Will, timers, log and hooks.
    fn finish(&mut self, end: End, detached: Option<crate::server::Detached>) {
        let server = &self.server;
        let inner = &server.inner;
        let error = match &end {
            End::ClientDisconnect { .. } => None,
            End::Abnormal(why) => Some(why.clone()),
            End::Killed => Some("closed by the server".to_string()),
        };
        let Some(detached) = detached else {
            // Taken over: the new connection handled the session and the old Will.
            self.disconnected_hooks(error.as_deref(), false);
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
        info!(client_id = %self.client.client_id, reason = error.as_deref().unwrap_or("DISCONNECT"),
              expire = detached.ended, "client disconnected");
        self.disconnected_hooks(error.as_deref(), detached.ended);
    }

    fn disconnected_hooks(&self, error: Option<&str>, expire: bool) {
        for hook in self.server.inner.hooks.with(HookEvents::ON_DISCONNECT) {
            hook.on_disconnect(&self.client, error, expire);
        }
    }
}

/// With Request Problem Information 0, Reason Strings and User Properties may go only on
/// PUBLISH, CONNACK and DISCONNECT [MQTT-3.1.2-29].
fn strip_problem_information(packet: &mut Packet) {
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

/// The writer: the only task that writes to the socket. It empties the control queue first
/// (CONNACK, acks, resends), then moves queued messages into flight within the client's window,
/// encoding many packets into one buffer per system call.
/// Hands a session's subscriptions and queued messages to storage hooks, when the session
/// starts being mirrored while it already holds some (it was resumed by a connection with a
/// Session Expiry Interval after one without).
fn mirror_session(
    inner: &crate::server::Inner,
    client_id: &str,
    state: &crate::session::SessionState,
) {
    for (filter, (options, identifier)) in &state.subscriptions {
        let mut stored =
            crate::storage::StoredSubscription::new(client_id, filter.as_str(), *options);
        stored.identifier = identifier.map(std::num::NonZeroU32::get);
        inner.hooks.storage(&StorageEvent::Subscribed(&stored));
    }
    for delivery in state.outbound.queued() {
        if delivery.qos > QoS::AtMostOnce {
            let stored = crate::storage::stored_delivery(client_id, delivery);
            inner.hooks.storage(&StorageEvent::MessageQueued(&stored));
        }
    }
}

/// Tells storage hooks which queued messages the writer just put in flight (with their packet
/// ids) or dropped.
fn persist_flow(
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
fn write_loop<W: AsyncWrite + Unpin>(
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
const VECTORED_PAYLOAD: usize = 1024;

/// Writes `head` with each message's payload inserted at its offset: `payloads` holds, in
/// order, the offset in `head` where the payload belongs (right after its packet's head).
///
/// Cancel safety: none; the writer drops the connection when this fails.
async fn write_with_payloads<W: AsyncWrite + Unpin>(
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
fn boxed_close_writer<'a, W: AsyncWrite + Unpin>(
    inner: &'a crate::server::Inner,
    writer: &'a mut W,
    protocol: Protocol,
    close: Close,
) -> Pin<Box<impl Future<Output = ()> + 'a>> {
    Box::pin(close_writer(inner, writer, protocol, close))
}

/// Ends the write half: the DISCONNECT the close asks for (v5 only), then the shutdown (unless
/// the client is left to close first).
async fn close_writer<W: AsyncWrite + Unpin>(
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
