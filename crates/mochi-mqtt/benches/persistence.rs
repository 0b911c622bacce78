//! QoS 1 throughput to persistent sessions with each storage backend and durability mode, in
//! process over loopback TCP: 4 publishers → 1 persistent 3.1.1 subscriber (Clean Session 0)
//! that is online and acknowledges as it reads, 64-byte payloads, each publisher keeping up to
//! 100 messages unacknowledged. Each row starts from an empty store.
//! Compared with the same run without storage.
//!
//! `cargo bench -p mochi-mqtt --features rocksdb,redis --bench persistence` (the Redis rows need
//! `redis-server` on the PATH; the bench starts its own on a free loopback port). A filter
//! argument runs only the matching rows: `-- sled`.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::QoS;
use mqtt_storage::{Backend, Durability, MemoryBackend, StorageHook, StorageOptions};

#[path = "../../mqtt-broker/benches/support/clients.rs"]
#[allow(dead_code)]
mod clients;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const PUBLISHERS: usize = 4;
/// QoS 1 messages each publisher keeps unacknowledged at most.
const WINDOW: usize = 100;

/// Receives storage events and drops them: the broker's own share of the cost.
struct NullStorage;

impl mqtt_broker::Hook for NullStorage {
    fn id(&self) -> &str {
        "null-storage"
    }
    fn provides(&self) -> mqtt_broker::hooks::HookEvents {
        mqtt_broker::hooks::HookEvents::ON_STORAGE_EVENT
    }
}

async fn run(name: &str, storage: Option<Arc<StorageHook>>, per_publisher: usize) -> f64 {
    let mut options = Options::default();
    let mut capabilities = options.capabilities.clone();
    capabilities.maximum_client_writes_pending = 1 << 20;
    capabilities.maximum_queued_messages = 1 << 20;
    capabilities.maximum_queued_bytes = 1 << 30;
    capabilities.receive_maximum = u16::MAX;
    options.capabilities = capabilities;
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    if let Some(storage) = &storage {
        server.add_hook_arc(storage.clone()).unwrap();
    } else if name.starts_with("events only") {
        server.add_hook(NullStorage).unwrap();
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("bench", listener).await });

    let expected = PUBLISHERS * per_publisher;
    let receiver = clients::subscriber(
        addr,
        "persistent-sub".into(),
        "bench/+/data",
        QoS::AtLeastOnce,
        expected,
        false,
    )
    .await;
    let start = Instant::now();
    let mut senders = Vec::new();
    for p in 0..PUBLISHERS {
        senders.push(
            clients::publisher(
                addr,
                format!("pub-{p}"),
                &format!("bench/{p}/data"),
                QoS::AtLeastOnce,
                per_publisher,
                Some(WINDOW),
            )
            .await,
        );
    }
    tokio::time::timeout(Duration::from_secs(300), receiver)
        .await
        .expect("bench timed out")
        .unwrap();
    let elapsed = start.elapsed();
    for sender in senders {
        sender.abort();
    }
    let rate = expected as f64 / elapsed.as_secs_f64();
    server.close().await;
    let writes = match &storage {
        Some(storage) => {
            storage.close(Duration::from_secs(30)).await;
            let stats = storage.stats();
            format!(
                "{} batches, {} writes, {} collapsed",
                stats.batches.load(std::sync::atomic::Ordering::Relaxed),
                stats.writes.load(std::sync::atomic::Ordering::Relaxed),
                stats.collapsed.load(std::sync::atomic::Ordering::Relaxed)
            )
        }
        None => String::new(),
    };
    println!(
        "  {name:<32} {expected:>8} messages in {:>7.3} s: {rate:>10.0} msg/s  {writes}",
        elapsed.as_secs_f64()
    );
    rate
}

/// Passes per row; the median is reported.
const PASSES: usize = 3;

/// The median of the passes' rates.
fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates.get(rates.len() / 2).copied().unwrap_or_default()
}

fn report(name: &str, rate: f64, baseline: Option<f64>) {
    match baseline {
        Some(baseline) => println!(
            "{name:<34} median {rate:>10.0} msg/s  ({:+.1} % of the no-storage throughput)",
            (rate / baseline - 1.0) * 100.0
        ),
        None => println!("{name:<34} median {rate:>10.0} msg/s"),
    }
}

fn selected(name: &str) -> bool {
    std::env::args()
        .skip(1)
        .find(|arg| !arg.starts_with("--"))
        .is_none_or(|filter| name.contains(&filter))
}

async fn with_backend<B, F, Fut>(label: &str, open: F, per_publisher: usize, baseline: Option<f64>)
where
    B: Backend,
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = B>,
{
    for (mode, durability) in [
        (
            "batched",
            Durability::Batched {
                flush_interval: Duration::from_millis(5),
            },
        ),
        ("sync", Durability::Sync),
    ] {
        let name = format!("{label}, {mode}");
        if !selected(&name) {
            continue;
        }
        let mut rates = Vec::new();
        for pass in 0..PASSES {
            let options = StorageOptions {
                durability,
                ..StorageOptions::default()
            };
            // A fresh, empty store for every pass.
            let backend = open(format!("{mode}-{pass}")).await;
            let storage = Arc::new(StorageHook::open(backend, options).await.unwrap());
            rates.push(run(&name, Some(storage), per_publisher).await);
        }
        report(&name, median(rates), baseline);
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a quick smoke test.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let per_publisher = if quick { 500 } else { 50_000 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        // Warm-up (memory pages, connections), not reported.
        run("warm-up", None, per_publisher).await;
        let baseline = if selected("no storage") {
            let mut rates = Vec::new();
            for _ in 0..PASSES {
                rates.push(run("no storage", None, per_publisher).await);
            }
            let rate = median(rates);
            report("no storage", rate, None);
            Some(rate)
        } else {
            None
        };
        if selected("events only") {
            let mut rates = Vec::new();
            for _ in 0..PASSES {
                rates.push(run("events only (no hook work)", None, per_publisher).await);
            }
            report("events only (no hook work)", median(rates), baseline);
        }
        with_backend(
            "memory",
            |_| async { MemoryBackend::new() },
            per_publisher,
            baseline,
        )
        .await;
        let dir = std::env::temp_dir().join(format!("mochi-bench-{}", std::process::id()));
        #[cfg(feature = "sled")]
        {
            let open = |mode: String| {
                let options = mqtt_hook_sled::SledOptions {
                    path: dir.join(format!("sled-{mode}")),
                    ..Default::default()
                };
                async move { mqtt_hook_sled::SledBackend::open(options).await.unwrap() }
            };
            with_backend("sled", open, per_publisher, baseline).await;
        }
        #[cfg(feature = "rocksdb")]
        {
            let open = |mode: String| {
                let options = mqtt_hook_rocksdb::RocksDbOptions {
                    path: dir.join(format!("rocksdb-{mode}")),
                    ..Default::default()
                };
                async move {
                    mqtt_hook_rocksdb::RocksDbBackend::open(options)
                        .await
                        .unwrap()
                }
            };
            with_backend("rocksdb", open, per_publisher, baseline).await;
        }
        #[cfg(feature = "redis")]
        redis_rows(per_publisher, baseline).await;
        let _ = std::fs::remove_dir_all(&dir);
    });
}

/// The Redis rows, against a `redis-server` started here (skipped if it is not installed).
#[cfg(feature = "redis")]
async fn redis_rows(per_publisher: usize, baseline: Option<f64>) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("redis: skipped (redis-server is not installed)");
        return;
    };
    let options = mqtt_hook_redis::RedisOptions {
        url: format!("redis://127.0.0.1:{port}/"),
        ..Default::default()
    };
    let mut up = false;
    for _ in 0..100 {
        if mqtt_hook_redis::RedisBackend::connect(options.clone())
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if up {
        // One key prefix per row: each starts from an empty store.
        let open = |mode: String| {
            let mut options = options.clone();
            options.key_prefix = format!("bench-{mode}:");
            async move {
                mqtt_hook_redis::RedisBackend::connect(options)
                    .await
                    .unwrap()
            }
        };
        with_backend("redis", open, per_publisher, baseline).await;
    } else {
        println!("redis: skipped (redis-server did not answer)");
    }
    let _ = child.kill();
    let _ = child.wait();
}
