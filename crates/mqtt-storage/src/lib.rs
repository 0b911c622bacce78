//! The shared storage model of the Mochi MQTT broker.
//!
//! A broker restart, or a crash, must not lose sessions, subscriptions, retained messages or
//! acknowledged QoS 1/2 messages. This crate holds everything the storage backends share:
//!
//! - [`Backend`]: a small key-value trait (put, delete, get, scan by prefix, atomic batch) that
//!   each backend crate implements (`mqtt-hook-sled`, `mqtt-hook-rocksdb`, `mqtt-hook-redis`);
//!   [`MemoryBackend`] is the in-memory one used in tests.
//! - `conformance` (feature `conformance`): the generic test suite every backend passes.

mod backend;
#[cfg(feature = "conformance")]
pub mod conformance;
mod memory;

pub use backend::{Backend, BackendError, Batch, BoxFuture, Op};
pub use memory::MemoryBackend;
