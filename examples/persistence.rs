//! A broker whose sessions, subscriptions, queued messages and retained messages survive a
//! restart (or a crash): the storage hook over sled, RocksDB or Redis.
//!
//! ```text
//! cargo run -p mochi-examples --example persistence -- sled ./mochi-data/sled
//! cargo run -p mochi-examples --features rocksdb --example persistence -- rocksdb ./mochi-data/rocksdb
//! cargo run -p mochi-examples --features redis --example persistence -- redis redis://127.0.0.1:6379/
//! ```
//!
//! Try it: `mosquitto_sub -c -i keeper -q 1 -t 'kept/#'` (a persistent session), stop it,
//! `mosquitto_pub -q 1 -t kept/1 -m hello`, restart this broker, start the same `mosquitto_sub`:
//! the message arrives. Acknowledgements wait for the commit (`Durability::Sync`), so a crash
//! loses nothing that a client saw acknowledged.

use std::sync::Arc;
use std::time::Duration;

use mochi_mqtt::storage::{Durability, StorageHook, StorageOptions};
use mochi_mqtt::{AllowAllHook, Options, Server};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let backend = args.next().unwrap_or_else(|| "sled".to_owned());
    let location = args.next();
    let options = StorageOptions {
        durability: Durability::Sync,
        ..StorageOptions::default()
    };
    // Reads what was stored, then writes through a group-commit writer task.
    let storage = Arc::new(match backend.as_str() {
        "sled" => {
            let mut sled = mochi_mqtt::sled::SledOptions::default();
            if let Some(path) = location {
                sled.path = path.into();
            }
            StorageHook::open(mochi_mqtt::sled::SledBackend::open(sled).await?, options).await?
        }
        #[cfg(feature = "rocksdb")]
        "rocksdb" => {
            let mut rocksdb = mochi_mqtt::rocksdb::RocksDbOptions::default();
            if let Some(path) = location {
                rocksdb.path = path.into();
            }
            let backend = mochi_mqtt::rocksdb::RocksDbBackend::open(rocksdb).await?;
            StorageHook::open(backend, options).await?
        }
        #[cfg(feature = "redis")]
        "redis" => {
            let mut redis = mochi_mqtt::redis::RedisOptions::default();
            if let Some(url) = location {
                redis.url = url;
            }
            let backend = mochi_mqtt::redis::RedisBackend::connect(redis).await?;
            StorageHook::open(backend, options).await?
        }
        other => return Err(format!("unknown or not built backend {other:?}").into()),
    });

    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook)?; // development only
    server.add_hook_arc(storage.clone())?; // restores the stored state when serving starts
    let listener = tokio::net::TcpListener::bind("0.0.0.0:1883").await?;
    println!("{backend}: listening on {}", listener.local_addr()?);
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_tcp("tcp", listener).await }
    });

    tokio::signal::ctrl_c().await?;
    server.close().await; // sessions are handed to storage...
    storage.close(Duration::from_secs(5)).await; // ...and written before the process ends
    serving.await??;
    Ok(())
}
