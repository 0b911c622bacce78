//! MQTT over TCP, plain or with TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::Either;
use mqtt_broker::{ConnectionInfo, Server};
use tokio::net::ToSocketAddrs;
use tracing::warn;

use crate::accept::{Closer, Limits, ListenerStats, accept_loop};
use crate::{Listener, ListenerError, ListenerStatsSnapshot, ServeFuture, TlsConfig};

/// Settings of a [`Tcp`] listener.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct TcpConfig {
    /// Serve TLS (`"tls"` protocol) instead of plain TCP.
    pub tls: Option<TlsConfig>,
    /// Connections open at once on this listener; more are closed at once and counted in
    /// [`ListenerStats::refused`]. `None` (the default): unlimited.
    pub maximum_connections: Option<usize>,
}

impl TcpConfig {
    /// The same settings with TLS.
    pub fn with_tls(self, tls: TlsConfig) -> Self {
        Self {
            tls: Some(tls),
            ..self
        }
    }

    /// The same settings with a connection limit.
    pub fn with_maximum_connections(self, maximum: usize) -> Self {
        Self {
            maximum_connections: Some(maximum),
            ..self
        }
    }
}

/// A TCP listener, with optional TLS (the original broker's `NewTCP`; with an existing
/// socket, `NewNet`).
#[derive(Debug)]
pub struct Tcp {
    id: Arc<str>,
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    config: TcpConfig,
    closer: Closer,
    stats: Arc<ListenerStats>,
}

impl Tcp {
    /// Binds `address` (port 0 picks a free port; see [`Tcp::local_addr`]).
    pub async fn bind(
        id: &str,
        address: impl ToSocketAddrs,
        config: TcpConfig,
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
        config: TcpConfig,
    ) -> Result<Self, ListenerError> {
        let address = listener
            .local_addr()
            .map_err(|error| ListenerError::io(id, error))?;
        Ok(Self {
            id: Arc::from(id),
            listener,
            address,
            config,
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

impl Listener for Tcp {
    fn id(&self) -> &str {
        &self.id
    }

    fn protocol(&self) -> &'static str {
        if self.config.tls.is_some() {
            "tls"
        } else {
            "tcp"
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
            let closed = crate::accept::until_closed(self.closer.closed(), server.clone());
            accept_loop(
                &self.id,
                &self.listener,
                closed,
                &limits,
                &self.stats,
                |stream, remote| {
                    // The future is chosen here rather than in an `async` block, which would
                    // keep its captures for as long as the connection lasts.
                    let connection = ConnectionInfo::new(self.id.clone(), remote);
                    match self.config.tls.clone() {
                        None => Either::Left(server.serve_connection(stream, connection)),
                        Some(tls) => Either::Right(serve_tls(
                            tls,
                            server.clone(),
                            stream,
                            connection,
                            self.stats.clone(),
                            remote,
                        )),
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

/// The TLS handshake, then the connection, in a box built here: a plain TCP connection's task
/// then does not carry the size of the TLS states (a future built inside an `async` block takes
/// room in its state even when it is moved at once into a box).
fn serve_tls(
    tls: TlsConfig,
    server: Server,
    stream: tokio::net::TcpStream,
    connection: ConnectionInfo,
    stats: Arc<ListenerStats>,
    remote: Option<SocketAddr>,
) -> std::pin::Pin<Box<impl Future<Output = ()> + Send>> {
    Box::pin(async move {
        match tls.accept(stream).await {
            Ok((stream, info)) => {
                let connection = connection.with_tls(info);
                server.serve_connection(stream, connection).await;
            }
            Err(reason) => {
                ListenerStats::add(&stats.handshake_failures);
                warn!(listener = %connection.listener, remote = ?remote, %reason, "connection closed");
            }
        }
    })
}
