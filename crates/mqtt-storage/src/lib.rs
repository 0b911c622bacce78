//! The shared storage model of the Mochi MQTT broker.
//!
//! A broker restart, or a crash, must not lose sessions, subscriptions, retained messages or
//! acknowledged QoS 1/2 messages. This crate holds everything the storage backends share:
//!
//! - [`Backend`]: a small key-value trait (put, delete, get, scan by prefix, atomic batch) that
//!   each backend crate implements (`mqtt-hook-sled`, `mqtt-hook-rocksdb`, `mqtt-hook-redis`);
//!   [`MemoryBackend`] keeps everything in memory, for tests.
//! - [`StorageHook`] (feature `hook`, on by default): the one storage hook. It turns the
//!   broker's [`StorageEvent`](mqtt_broker::storage::StorageEvent)s into versioned records
//!   (see the key layout in the `keys` module docs and [`RECORD_VERSION`]), hands them to a writer
//!   task that commits them in batches (group commit), and gives the stored state back to the
//!   server at start through the `stored_*` hook methods.
//! - `conformance` (feature `conformance`): the generic test suite every backend passes.
//!
//! # Durability
//!
//! [`Durability::Batched`] (the default, every 5 ms): acknowledgements do not wait for storage;
//! a crash loses the changes of the last flush interval plus one write (messages acknowledged
//! in that window, subscriptions made in it). [`Durability::Sync`]: the broker sends PUBACK,
//! PUBREC and PUBCOMP, and CONNACK to a client whose session outlives its connection, only after
//! the records they depend on are committed; a crash loses nothing that was acknowledged.
//! In both modes the writer batches everything pending into one backend transaction, and a
//! message queued and acknowledged within one batch never reaches the backend.
//!
//! While the backend is slow or down, what is pending is bounded by
//! [`StorageOptions::max_pending`] (changes) and [`StorageOptions::max_pending_bytes`]
//! (estimated bytes); past either, new changes are dropped and counted in
//! [`StorageStats::dropped`]. In `sync` mode a drop fails only the acknowledgements that may
//! depend on it (their connections are closed without them, so the clients send again); once
//! the backend commits again, acknowledgements and [`StorageHook::health`] recover by
//! themselves. The exact rule is on [`StorageHook`].
//!
//! QoS 0 messages queued for offline sessions are not stored (at most once allows their loss).
//! QoS 1 messages keep no flow record: after a crash, one that was sent but not acknowledged is
//! sent again as a new message (at least once allows the duplicate).
//!
//! # Known limits
//!
//! - In `batched` mode a crash can also lose the release of an inbound QoS 2 packet id (PUBREL
//!   handled, PUBCOMP sent, the delete not yet written): after the restart the id is still
//!   taken, and a new QoS 2 message from that client with the same id is taken for a resend and
//!   not delivered. `sync` mode holds PUBCOMP until the release is committed.
//! - The flow record of an outgoing QoS 2 message (PUBLISH or PUBREL sent) is written like any
//!   other change, not before the packet goes out: a crash in between makes the message go again
//!   after the restart as if it had not been sent.
//! - A session's pending Will after a restart counts its delay from the restart.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use mqtt_broker::{AllowAllHook, Options, Server};
//! use mqtt_storage::{Durability, MemoryBackend, StorageHook, StorageOptions};
//!
//! let backend = MemoryBackend::new();
//! let options = StorageOptions { durability: Durability::Sync, ..StorageOptions::default() };
//! let storage = std::sync::Arc::new(StorageHook::open(backend, options).await?);
//! let server = Server::new(Options::default());
//! server.add_hook(AllowAllHook)?;
//! server.add_hook_arc(storage.clone())?;
//! // ... serve; at shutdown:
//! server.close().await;
//! storage.close(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "hook")]
mod hook;
#[cfg(feature = "hook")]
mod keys;
mod memory;
#[cfg(feature = "hook")]
mod records;
#[cfg(feature = "hook")]
mod writer;

pub use backend::{Backend, BackendError, Batch, BoxFuture, KeyValues, Op};
#[cfg(feature = "hook")]
pub use hook::{StorageError, StorageHealth, StorageHook, StorageOptions};
pub use memory::MemoryBackend;
#[cfg(feature = "hook")]
pub use records::{RECORD_VERSION, RecordError};
#[cfg(feature = "hook")]
pub use writer::{Durability, StorageStats};
