//! The CONNECT handshake: the first packet, its validation, authentication, and the CONNACK.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_packets::{
    ConnAck, ConnAckProperties, Connect, DecodeError, MqttString, Packet, PayloadFormatIndicator,
    Protocol, QoS, ReasonCode,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::Connection;
use super::Counters;
use super::LINGER;
use super::auth::EnhancedAuth;
use super::auth::enhanced_auth_exchange;
use super::drain;
use super::read::ReadError;
use super::read::read_packet;
use crate::flow::Parked;
use crate::hooks::HookEvents;
use crate::session::{Close, ConnectionHandle, Control, PeerLimits};
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

impl Connection {
    /// Validates and authenticates the CONNECT, creates or resumes the session, and queues the
    /// CONNACK. Returns `None` (after any refusing CONNACK) when the connection is refused.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn accept<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
            match server.attach(&client, &connect, expiry, handle.clone(), peer) {
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
}
