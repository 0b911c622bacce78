//! Enhanced authentication (§4.12): the AUTH exchange before CONNACK, and re-authentication.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::BytesMut;
use mqtt_packets::{Connect, MqttString, Packet, Protocol, ReasonCode};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Connection;
use super::End;
use super::read::read_packet;
use crate::close::{ConnectionError, Violation};
use crate::hooks::AuthOutcome;
use crate::{ClientInfo, Server};

/// The enhanced authentication of one connection.
#[derive(Default)]
pub(super) struct EnhancedAuth {
    /// The Authentication Method of CONNECT.
    pub(super) method: Option<MqttString>,
    /// The hook that handles the method.
    pub(super) hook: Option<Arc<dyn crate::Hook>>,
    /// The hook's state for the exchange in progress.
    pub(super) state: crate::hooks::AuthState,
    /// Whether a re-authentication is in progress.
    pub(super) reauthenticating: bool,
    /// Authentication Data for CONNACK.
    pub(super) connack_data: Option<bytes::Bytes>,
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
pub(super) async fn enhanced_auth_exchange<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
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
                let answer = match answer {
                    Ok(Ok(Some(Packet::Auth(answer)))) => {
                        match inner.hooks.auth_packet(client, answer) {
                            Ok(answer) => Ok(Ok(Some(Packet::Auth(answer)))),
                            Err((code, hook)) => {
                                tracing::info!(client_id = %client.client_id, %code, "AUTH refused by hook {}", hook.id());
                                return Err(Some(code));
                            }
                        }
                    }
                    other => other,
                };
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
    /// A step of re-authentication (§4.12.1): AUTH 0x19 starts one, AUTH 0x18 continues it; the
    /// method must be the one of CONNECT. Success is AUTH 0x00, failure DISCONNECT.
    pub(super) async fn reauthenticate(&mut self, packet: mqtt_packets::Auth) -> Option<End> {
        let server = self.server.clone();
        let method = self.auth.as_ref()?.method.clone()?;
        let packet = match server.inner.hooks.auth_packet(&self.client, packet) {
            Ok(packet) => packet,
            Err((code, hook)) => {
                return Some(self.fail(ConnectionError::RefusedByHook {
                    hook: hook.id().to_owned(),
                    packet: mqtt_packets::PacketType::Auth,
                    code,
                }));
            }
        };
        if packet.properties.authentication_method.as_ref() != Some(&method) {
            // A different method is a protocol error (§3.15).
            return Some(self.fail(Violation::AuthMethodChanged));
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
                return Some(self.fail(Violation::UnexpectedAuth));
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
                Some(self.fail(ConnectionError::IdentityChanged))
            }
            AuthOutcome::Success { data, .. } => {
                if let Some(auth) = self.auth.as_deref_mut() {
                    auth.reauthenticating = false;
                    auth.state = None;
                }
                self.send(reply(ReasonCode::SUCCESS, data));
                None
            }
            AuthOutcome::Fail(code) => Some(self.fail(ConnectionError::Reauthentication(code))),
            AuthOutcome::Unsupported => Some(self.fail(ConnectionError::Reauthentication(
                ReasonCode::BAD_AUTHENTICATION_METHOD,
            ))),
        }
    }

    /// [`Connection::reauthenticate`] in a box (see [`serve`]): it is rare.
    pub(super) fn boxed_reauthenticate(
        &mut self,
        packet: mqtt_packets::Auth,
    ) -> Pin<Box<impl Future<Output = Option<End>> + Send>> {
        Box::pin(self.reauthenticate(packet))
    }
}
