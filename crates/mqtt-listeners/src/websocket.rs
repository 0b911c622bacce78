//! MQTT over WebSocket and secure WebSocket: subprotocol `mqtt` [MQTT-6.0.0-3], binary
//! messages only [MQTT-6.0.0-1], a configurable path, a maximum message size, an Origin
//! allow-list (browsers from other origins are refused by default) and a handshake timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mqtt_broker::{ConnectionInfo, Server};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::ToSocketAddrs;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tracing::{debug, warn};

use crate::accept::{Closer, Limits, ListenerStats, accept_loop};
use crate::{Listener, ListenerError, ListenerStatsSnapshot, ServeFuture, TlsConfig, WsByteStream};

/// The WebSocket subprotocols accepted, in order of preference: `mqtt` (MQTT 3.1.1 and 5.0)
/// and `mqttv3.1` (MQTT 3.1 clients).
pub const SUBPROTOCOLS: [&str; 2] = ["mqtt", "mqttv3.1"];

/// The entry of [`WebSocketConfig::allowed_origins`] that admits every browser origin.
pub const ANY_ORIGIN: &str = "*";

/// Settings of a [`WebSocket`] listener.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct WebSocketConfig {
    /// Serve secure WebSocket (`"wss"`) with these TLS settings.
    pub tls: Option<TlsConfig>,
    /// Connections open at once; more are closed at once. `None` (the default): unlimited.
    pub maximum_connections: Option<usize>,
    /// The only request path accepted (e.g. `"/mqtt"`); others get 404. `None` (the default)
    /// accepts any path.
    pub path: Option<String>,
    /// The largest WebSocket message accepted, in bytes (default 1 MiB). MQTT packets may span
    /// several messages, so this does not limit the packet size.
    pub maximum_message_size: usize,
    /// The browser origins that may connect, e.g. `"https://app.example.com"` (compared
    /// case-insensitively, a trailing `/` ignored); [`ANY_ORIGIN`] (`"*"`) admits every origin.
    ///
    /// A request that carries an `Origin` header not in this list gets 403. Browsers always send
    /// `Origin` on a WebSocket handshake, and a web page cannot leave it out or forge it, so the
    /// default (an empty list) refuses every web page: without it, any page a user inside the
    /// network opens could connect through their browser with the user's network position
    /// (cross-site WebSocket hijacking, which defeats address-based rules). Requests without an
    /// `Origin` (non-browser clients: devices, libraries, command-line tools) are always
    /// accepted. A page served from the same host is not trusted either (a DNS-rebinding page
    /// would look the same): list its origin.
    pub allowed_origins: Vec<String>,
    /// The time a client has to finish the WebSocket handshake (default 10 s); the TLS
    /// handshake has its own timeout.
    pub handshake_timeout: Duration,
}

impl Default for WebSocketConfig {
    fn default() -> Self {
        Self {
            tls: None,
            maximum_connections: None,
            path: None,
            maximum_message_size: 1 << 20,
            allowed_origins: Vec::new(),
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl WebSocketConfig {
    /// The same settings with TLS (secure WebSocket).
    pub fn with_tls(self, tls: TlsConfig) -> Self {
        Self {
            tls: Some(tls),
            ..self
        }
    }

    /// The same settings accepting only `path`.
    pub fn with_path(self, path: impl Into<String>) -> Self {
        Self {
            path: Some(path.into()),
            ..self
        }
    }

    /// The same settings with this Origin allow-list (see
    /// [`WebSocketConfig::allowed_origins`]; `vec!["*".into()]` admits every origin).
    pub fn with_allowed_origins(self, origins: Vec<String>) -> Self {
        Self {
            allowed_origins: origins,
            ..self
        }
    }

    /// Whether a handshake with this `Origin` header (`None`: no header) may proceed.
    pub fn admits_origin(&self, origin: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let origin = origin.trim().trim_end_matches('/');
        self.allowed_origins.iter().any(|allowed| {
            allowed == ANY_ORIGIN || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        })
    }

    /// The same settings with a connection limit.
    pub fn with_maximum_connections(self, maximum: usize) -> Self {
        Self {
            maximum_connections: Some(maximum),
            ..self
        }
    }

    /// The same settings with this maximum message size.
    pub fn with_maximum_message_size(self, bytes: usize) -> Self {
        Self {
            maximum_message_size: bytes,
            ..self
        }
    }

    /// The same settings with this WebSocket handshake timeout.
    pub fn with_handshake_timeout(self, timeout: Duration) -> Self {
        Self {
            handshake_timeout: timeout,
            ..self
        }
    }
}

/// A WebSocket listener, with optional TLS (the original broker's `NewWebsocket`).
#[derive(Debug)]
pub struct WebSocket {
    id: Arc<str>,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    config: Arc<WebSocketConfig>,
    closer: Closer,
    stats: Arc<ListenerStats>,
}

impl WebSocket {
    /// Binds `address` (port 0 picks a free port; see [`WebSocket::local_addr`]).
    pub async fn bind(
        id: &str,
        address: impl ToSocketAddrs,
        config: WebSocketConfig,
    ) -> Result<Self, ListenerError> {
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|error| ListenerError::io(id, error))?;
        Self::from_listener(id, listener, config)
    }

    /// Wraps a socket the host program already bound.
    pub fn from_listener(
        id: &str,
        listener: tokio::net::TcpListener,
        config: WebSocketConfig,
    ) -> Result<Self, ListenerError> {
        if config.maximum_message_size == 0 {
            return Err(ListenerError::Config(
                "maximum_message_size must be positive".to_owned(),
            ));
        }
        let address = listener
            .local_addr()
            .map_err(|error| ListenerError::io(id, error))?;
        Ok(Self {
            id: Arc::from(id),
            listener,
            address,
            config: Arc::new(config),
            closer: Closer::default(),
            stats: Arc::default(),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// The live counters.
    pub fn live_stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }
}

impl Listener for WebSocket {
    fn id(&self) -> &str {
        &self.id
    }

    fn protocol(&self) -> &'static str {
        if self.config.tls.is_some() {
            "wss"
        } else {
            "ws"
        }
    }

    fn address(&self) -> String {
        self.address.to_string()
    }

    fn stats(&self) -> ListenerStatsSnapshot {
        self.stats.snapshot()
    }

    fn serve(&self, server: Server) -> ServeFuture<'_> {
        Box::pin(async move {
            let limits = Limits {
                maximum_connections: self.config.maximum_connections,
            };
            accept_loop(
                &self.id,
                &self.listener,
                crate::accept::until_closed(self.closer.closed(), server.clone()),
                &limits,
                &self.stats,
                |stream, remote| {
                    let server = server.clone();
                    let id = self.id.clone();
                    let config = self.config.clone();
                    let stats = self.stats.clone();
                    async move {
                        let connection = ConnectionInfo::new(id.clone(), remote);
                        // The handshakes are boxed: a connection's task keeps only the
                        // size of the stream it serves, not of the upgrade or TLS states.
                        let result = match &config.tls {
                            None => match Box::pin(upgrade(stream, &config)).await {
                                Ok(stream) => {
                                    let stream = stream.with_stats(stats.clone(), id.clone());
                                    server.serve_connection(stream, connection).await;
                                    Ok(())
                                }
                                Err(reason) => Err(reason),
                            },
                            Some(tls) => match Box::pin(tls.accept(stream)).await {
                                Ok((stream, info)) => {
                                    match Box::pin(upgrade(stream, &config)).await {
                                        Ok(stream) => {
                                            let stream =
                                                stream.with_stats(stats.clone(), id.clone());
                                            let connection = connection.with_tls(info);
                                            server.serve_connection(stream, connection).await;
                                            Ok(())
                                        }
                                        Err(reason) => Err(reason),
                                    }
                                }
                                Err(reason) => Err(reason),
                            },
                        };
                        if let Err(reason) = result {
                            ListenerStats::add(&stats.handshake_failures);
                            warn!(listener = %id, remote = ?remote, %reason, "connection closed");
                        }
                    }
                },
            )
            .await;
            Ok(())
        })
    }

    fn close(&self) {
        self.closer.close();
    }
}

/// Runs the WebSocket handshake on `stream` within the handshake timeout, checking the path,
/// the Origin and the subprotocol.
// tungstenite's handshake callback returns its (large) error response type.
#[allow(clippy::result_large_err)]
pub(crate) async fn upgrade<S>(
    stream: S,
    config: &WebSocketConfig,
) -> Result<WsByteStream<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ws_config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .max_message_size(Some(config.maximum_message_size))
        .max_frame_size(Some(config.maximum_message_size));
    let callback = |request: &Request, response: Response| check_request(request, response, config);
    let handshake =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config));
    match tokio::time::timeout(config.handshake_timeout, handshake).await {
        Err(_) => Err("WebSocket handshake timed out".to_owned()),
        Ok(Err(error)) => Err(format!("WebSocket handshake failed: {error}")),
        Ok(Ok(websocket)) => Ok(WsByteStream::new(websocket)),
    }
}

fn refuse(status: StatusCode, reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = status;
    response
}

/// The handshake callback: path, Origin and subprotocol checks; echoes the chosen subprotocol.
// The error type is tungstenite's, and large; it is returned once per refused handshake.
#[allow(clippy::result_large_err)]
fn check_request(
    request: &Request,
    mut response: Response,
    config: &WebSocketConfig,
) -> Result<Response, ErrorResponse> {
    if let Some(path) = &config.path {
        if request.uri().path() != path {
            return Err(refuse(StatusCode::NOT_FOUND, "unknown path"));
        }
    }
    if let Some(origin) = request.headers().get(header::ORIGIN) {
        // A header that is not visible ASCII matches no listed origin (but still `*`).
        let origin = origin.to_str().unwrap_or("\u{0}");
        if !config.admits_origin(Some(origin)) {
            debug!(
                ?origin,
                "WebSocket handshake refused: Origin not in allowed_origins"
            );
            return Err(refuse(StatusCode::FORBIDDEN, "origin not allowed"));
        }
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .collect();
    let Some(chosen) = SUBPROTOCOLS.iter().find(|protocol| {
        offered
            .iter()
            .any(|offer| offer.eq_ignore_ascii_case(protocol))
    }) else {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "the WebSocket subprotocol must be mqtt [MQTT-6.0.0-3]",
        ));
    };
    response.headers_mut().insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(chosen),
    );
    Ok(response)
}
