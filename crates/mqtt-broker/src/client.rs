//! What the server and hooks know about a connection and its client.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use mqtt_packets::{MqttString, Protocol};
use mqtt_topics::ClientId;

/// What a listener knows about a connection before any MQTT byte is read.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The id of the listener that accepted the connection (e.g. `"tcp1"`).
    pub listener: Arc<str>,
    /// The peer's address, when the transport has one.
    pub remote: Option<SocketAddr>,
    /// TLS details, when the connection is encrypted (boxed: most connections have none, and
    /// this struct is kept for every connection).
    pub tls: Option<Box<TlsInfo>>,
}

impl ConnectionInfo {
    /// Metadata for a connection accepted by `listener` from `remote`.
    pub fn new(listener: impl Into<Arc<str>>, remote: Option<SocketAddr>) -> Self {
        Self {
            listener: listener.into(),
            remote,
            tls: None,
        }
    }

    /// The same metadata with TLS details.
    pub fn with_tls(self, tls: TlsInfo) -> Self {
        Self {
            tls: Some(Box::new(tls)),
            ..self
        }
    }
}

/// TLS details of a connection, for authentication hooks.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TlsInfo {
    /// The negotiated protocol version, e.g. `"TLSv1.3"`.
    pub protocol_version: Option<String>,
    /// The client certificate chain (DER), leaf first, when the client presented one.
    pub peer_certificates: Vec<Bytes>,
    /// The subject of the client certificate, when known.
    pub peer_subject: Option<String>,
    /// The subject alternative names of the client certificate.
    pub peer_subject_alt_names: Vec<String>,
}

impl TlsInfo {
    /// TLS details with these fields.
    pub fn new(
        protocol_version: Option<String>,
        peer_certificates: Vec<Bytes>,
        peer_subject: Option<String>,
        peer_subject_alt_names: Vec<String>,
    ) -> Self {
        Self {
            protocol_version,
            peer_certificates,
            peer_subject,
            peer_subject_alt_names,
        }
    }
}

/// A connected (or connecting) client as hooks see it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client identifier (assigned by the server if the client sent an empty one).
    pub client_id: ClientId,
    /// The User Name from CONNECT.
    pub username: Option<MqttString>,
    /// The protocol level.
    pub protocol: Protocol,
    /// Clean Start / Clean Session from CONNECT.
    pub clean_start: bool,
    /// The transport metadata.
    pub connection: ConnectionInfo,
    /// True for the server's inline client, which bypasses ACL checks.
    pub inline: bool,
}

impl ClientInfo {
    /// A client as hooks see it (for hook authors' tests and custom listeners).
    pub fn new(
        client_id: impl Into<ClientId>,
        username: Option<MqttString>,
        protocol: Protocol,
        connection: ConnectionInfo,
    ) -> Self {
        Self {
            client_id: client_id.into(),
            username,
            protocol,
            clean_start: true,
            connection,
            inline: false,
        }
    }

    /// A session's client when none is recorded (a session that never had a connection): the
    /// id alone, not trusted as the inline client.
    pub(crate) fn unknown(client_id: ClientId) -> Self {
        Self::new(
            client_id,
            None,
            Protocol::V5,
            ConnectionInfo::new("none", None),
        )
    }

    pub(crate) fn inline(client_id: ClientId) -> Self {
        Self {
            client_id,
            username: None,
            protocol: Protocol::V5,
            clean_start: true,
            connection: ConnectionInfo::new("inline", None),
            inline: true,
        }
    }
}
