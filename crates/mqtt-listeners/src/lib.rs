//! Listeners for the Mochi MQTT broker: every way a client reaches the broker, and the HTTP
//! listener operators look at.
//!
//! The broker core ([`mqtt_broker`]) serves any byte stream through
//! [`Server::serve_connection`](mqtt_broker::Server::serve_connection); this crate accepts
//! connections, runs the TLS and WebSocket handshakes, and hands the streams over with their
//! [`ConnectionInfo`](mqtt_broker::ConnectionInfo) (listener id, peer address, and for TLS the
//! client certificate's subject and SANs in [`TlsInfo`](mqtt_broker::TlsInfo)).
//!
//! | listener | protocol | the original broker's |
//! | --- | --- | --- |
//! | [`Tcp`] | `tcp`, or `tls` with [`TcpConfig::tls`] | `NewTCP`, `NewNet` ([`Tcp::from_listener`]) |
//! | [`WebSocket`] | `ws`, or `wss` with [`WebSocketConfig::tls`] | `NewWebsocket` |
//! | [`UnixSocket`] | `unix` | `NewUnixSock` |
//! | [`HttpStats`] | `http`: `/api/sysinfo`, `/metrics`, `/healthz`, `/` | `NewHTTPStats` |
//!
//! TLS uses rustls with the `ring` provider, TLS 1.2 and 1.3 ([`TlsConfig`]). [`Listeners`]
//! serves a set of listeners together and closes them all (the original broker's
//! `listeners.Listeners`).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//!
//! use mqtt_broker::{AllowAllHook, Options, Server};
//! use mqtt_listeners::{HttpStats, HttpStatsConfig, Listener, Tcp, TcpConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Options::default());
//! server.add_hook(AllowAllHook)?; // development only: everyone may connect
//!
//! let tcp: Arc<dyn Listener> =
//!     Arc::new(Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default()).await?);
//! let stats = Arc::new(HttpStats::bind("stats", "127.0.0.1:0", HttpStatsConfig::default()).await?);
//! stats.track(tcp.clone()); // per-listener figures in /metrics and /api/sysinfo
//!
//! let mut serving = Vec::new();
//! for listener in [tcp.clone(), stats.clone() as Arc<dyn Listener>] {
//!     let server = server.clone();
//!     serving.push(tokio::spawn(async move { listener.serve(server).await }));
//! }
//! println!("MQTT on {}, dashboard on http://{}/", tcp.address(), stats.address());
//!
//! // Shutting down: stop accepting, then close the server (it disconnects the clients).
//! tcp.close();
//! stats.close();
//! for task in serving {
//!     task.await??;
//! }
//! server.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Limits and failures
//!
//! Each listener may cap its open connections (`maximum_connections`: more are closed at once
//! and counted), backs off when `accept` fails (e.g. too many open files) instead of spinning,
//! and gives every handshake a timeout. Failed handshakes are logged with `tracing` and counted
//! in [`ListenerStats`].
//!
//! A [`WebSocket`] listener refuses (403) every handshake from a web page whose `Origin` is not
//! in [`WebSocketConfig::allowed_origins`], which is empty by default: a hostile page opened
//! inside the network cannot reach the broker through the visitor's browser. Clients that send
//! no `Origin` (anything but a browser) are served.
//!
//! # Cancel safety
//!
//! [`Listener::serve`] may be dropped: accepting stops as with [`Listener::close`];
//! connections already handed to the server go on until the server closes them.

mod accept;
mod error;
mod http;
mod listener;
mod metrics;
mod set;
mod tcp;
mod tls;
#[cfg(unix)]
mod unix;
mod websocket;
mod ws_stream;

pub use accept::{ListenerStats, ListenerStatsSnapshot};
pub use error::ListenerError;
pub use http::{BasicAuth, ExtraMetrics, HealthCheck, HttpStats, HttpStatsConfig};
pub use listener::{Listener, ServeFuture};
pub use set::Listeners;
pub use tcp::{Tcp, TcpConfig};
pub use tls::{DEFAULT_HANDSHAKE_TIMEOUT, TlsConfig, TlsConfigBuilder};
#[cfg(unix)]
pub use unix::{UnixConfig, UnixSocket};
pub use websocket::{ANY_ORIGIN, SUBPROTOCOLS, WebSocket, WebSocketConfig};
pub use ws_stream::WsByteStream;
