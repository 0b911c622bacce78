//! Mochi MQTT for Rust: an embeddable, fully compliant MQTT 5 broker that also serves MQTT 3.1.1
//! and 3.1 clients. This crate is the one to depend on: it re-exports the codec, the topic
//! structures, the broker core, the listeners and the hooks, each behind a Cargo feature, and it
//! holds the `mochi` binary.
//!
//! # Example
//!
//! A broker on TCP that allows everyone, a message published from the host program, then a
//! graceful shutdown:
//!
//! ```
//! use std::sync::Arc;
//!
//! use mochi_mqtt::listeners::{Listener, Tcp, TcpConfig};
//! use mochi_mqtt::{AllowAllHook, Options, QoS, Server};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Server::new(Options::default());
//! server.add_hook(AllowAllHook)?; // development only: everyone may connect
//! let tcp = Arc::new(Tcp::bind("tcp", "127.0.0.1:0", TcpConfig::default()).await?);
//! let serving = tokio::spawn({
//!     let (tcp, server) = (tcp.clone(), server.clone());
//!     async move { tcp.serve(server).await }
//! });
//! server.publish("hello/world", "from the host program", true, QoS::AtMostOnce)?;
//! println!("MQTT on {}", tcp.address());
//! tcp.close(); // stop accepting...
//! serving.await??;
//! server.close().await; // ...then disconnect the clients (v5 clients get 0x8B)
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! | --- | --- | --- |
//! | `listeners` | yes | [`listeners`]: TCP, TLS, WebSocket, secure WebSocket, Unix socket, HTTP stats |
//! | `auth` | yes | [`auth`]: allow-all, the rule ledger (with reload), SCRAM-SHA-256 |
//! | `debug` | yes | [`debug`]: a hook logging every packet with `tracing` |
//! | `storage` | with a backend | [`storage`]: the storage hook (sessions, subscriptions, queued messages and retained messages survive restarts), its record model and the backend trait |
//! | `sled` | yes | [`sled`]: the embedded sled backend |
//! | `rocksdb` | no | [`rocksdb`]: the embedded RocksDB backend (C++; longer to build) |
//! | `redis` | no | [`redis`]: the Redis backend |
//! | `cli` | yes | the `mochi` binary (clap, TOML configuration, `tracing-subscriber`); turns on `listeners`, `auth`, `debug` and `storage` |
//!
//! A library user who needs only some of them writes
//! `mochi-mqtt = { version = "0.1", default-features = false, features = ["listeners", "auth"] }`.
//!
//! The codec ([`packets`]), the topic structures ([`topics`]) and the broker ([`broker`]) are
//! always there; the broker's main types are also at the crate root.
//!
//! # Cancel safety
//!
//! The re-exported async functions keep the contracts of their crates: [`Server::serve_connection`]
//! and a listener's `serve` may be dropped (the connection or the accept loop ends as if the
//! network had failed); [`Server::close`] is the graceful way to stop.

/// The MQTT wire codec (the `mqtt-packets` crate).
pub use mqtt_packets as packets;

/// Topic validation, matching, the subscription trie and retained messages (the `mqtt-topics`
/// crate).
pub use mqtt_topics as topics;

/// The broker core (the `mqtt-broker` crate); its main types are also at the crate root.
pub use mqtt_broker as broker;

/// Listeners: TCP, TLS, WebSocket, Unix socket and HTTP stats (the `mqtt-listeners` crate).
#[cfg(feature = "listeners")]
pub use mqtt_listeners as listeners;

/// Authentication and ACL hooks (the `mqtt-hook-auth` crate).
#[cfg(feature = "auth")]
pub use mqtt_hook_auth as auth;

/// The packet-logging debug hook (the `mqtt-hook-debug` crate).
#[cfg(feature = "debug")]
pub use mqtt_hook_debug as debug;

/// Persistence: the storage hook, its record model and the backend trait (the `mqtt-storage`
/// crate).
#[cfg(feature = "storage")]
pub use mqtt_storage as storage;

/// The sled storage backend (the `mqtt-hook-sled` crate).
#[cfg(feature = "sled")]
pub use mqtt_hook_sled as sled;

/// The RocksDB storage backend (the `mqtt-hook-rocksdb` crate).
#[cfg(feature = "rocksdb")]
pub use mqtt_hook_rocksdb as rocksdb;

/// The Redis storage backend (the `mqtt-hook-redis` crate).
#[cfg(feature = "redis")]
pub use mqtt_hook_redis as redis;

pub use mqtt_broker::{
    AllowAllHook, BrokerError, Capabilities, ClientInfo, Compatibilities, ConnectRefusal,
    ConnectionError, ConnectionInfo, Hook, InlineClient, Options, Server, TlsInfo,
};
pub use mqtt_packets::{Packet, Protocol, QoS, ReasonCode};
