//! The Mochi MQTT broker core: connections, sessions, QoS 0/1/2 flows, retained messages, wills,
//! shared subscriptions, hooks and the embedding API. Serves MQTT 5.0, 3.1.1 and 3.1 clients
//! over any byte stream.
//!
//! # Example
//!
//! ```no_run
//! use mqtt_broker::{AllowAllHook, Options, Server};
//! use mqtt_packets::QoS;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Options::default());
//! server.add_hook(AllowAllHook)?; // development only: everyone may connect
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:1883").await?;
//! let serving = tokio::spawn({
//!     let server = server.clone();
//!     async move { server.serve_tcp("tcp", listener).await }
//! });
//! server.publish("hello/world", "from the host", true, QoS::AtMostOnce)?;
//! # server.close().await;
//! # serving.await??;
//! # Ok(())
//! # }
//! ```
//!
//! # Design
//!
//! * **Transport-agnostic**: [`Server::serve_connection`] takes any `AsyncRead + AsyncWrite`
//!   stream with its [`ConnectionInfo`]; listeners live in another crate.
//! * **One writer per socket**: each connection has a reader (its own task) and a writer task
//!   that alone writes to the socket. Acks and control packets reach it through the session's
//!   control queue, messages through the session's bounded queue; it encodes many packets per
//!   system call.
//! * **Non-blocking fan-out**: a PUBLISH is matched once against the subscription trie and its
//!   payload shared (`Bytes`) by every delivery. A full queue never blocks the publisher: the
//!   message is dropped for that subscriber, counted, and reported to
//!   [`Hook::on_publish_dropped`].
//! * **Separate inbound and outbound QoS state**, packet ids never reused while in flight, the
//!   client's Receive Maximum respected, and resends in the original order on reconnect.
//! * **Timers without scans**: session expiry and will delay deadlines sit in a heap served by
//!   one task; keep-alive is a read timeout on each connection.
//! * **Capabilities are one source of truth**: every limit in [`Capabilities`] is advertised in
//!   CONNACK and enforced.
//!
//! # Cancel safety
//!
//! [`Server::serve_connection`] and [`Server::serve_tcp`] may be dropped: the connection (or
//! the accept loop) ends as if the network had failed. [`Server::close`] is the graceful way.

mod alias;
mod client;
mod close;
mod connection;
mod error;
mod flow;
pub mod hooks;
mod inflight;
mod inline;
mod message;
mod options;
mod outbound;
mod protocol;
mod registry;
mod server;
mod session;
mod staged;
pub mod storage;
mod subscribe;
pub mod sys;
mod timers;

pub use client::{ClientInfo, ConnectionInfo, TlsInfo};
pub use close::{ConnectionError, LimitExceeded, StorageFailure, Violation};
pub use error::BrokerError;
pub use hooks::{AllowAllHook, ConnectRefusal, Hook};
pub use inline::{InlineCallback, InlineClient, InlineDelivery, InlineSubscription};
pub use options::{
    Capabilities, Compatibilities, DropOrder, Options, OverloadPolicy, SlowSubscriberPolicy,
};
pub use server::Server;
