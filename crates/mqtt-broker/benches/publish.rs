//! End-to-end throughput of the publish path over loopback TCP, in process: fan-in (several
//! publishers to one subscriber) and fan-out (one publisher to 100 subscribers), QoS 0 and 1,
//! 64-byte payloads. Clients are minimal raw-socket clients on this crate's codec, so the broker
//! is what is measured.
//!
//! `cargo bench -p mqtt-broker --bench publish` prints messages delivered per second.

#![allow(
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing
)]

use std::time::{Duration, Instant};

use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::QoS;

#[path = "support/clients.rs"]
#[allow(dead_code)]
mod clients;

use clients::{publisher, subscriber};

async fn scenario(
    name: &str,
    publishers: usize,
    subscribers: usize,
    qos: QoS,
    per_publisher: usize,
) {
    // `cargo bench -p mqtt-broker --bench publish -- fan-in` runs only the matching scenarios.
    if let Some(filter) = std::env::args().skip(1).find(|arg| !arg.starts_with("--"))
        && !name.contains(&filter)
    {
        return;
    }
    let mut options = Options::default();
    let mut capabilities = options.capabilities.clone();
    capabilities.maximum_client_writes_pending = 1 << 20;
    capabilities.maximum_queued_messages = 1 << 20;
    capabilities.maximum_queued_bytes = 1 << 30;
    capabilities.receive_maximum = u16::MAX;
    options.capabilities = capabilities;
    let server = Server::new(options);
    server.add_hook(AllowAllHook).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = server.clone();
    tokio::spawn(async move { serving.serve_tcp("bench", listener).await });

    let expected = publishers * per_publisher;
    let mut receivers = Vec::new();
    for s in 0..subscribers {
        receivers.push(
            subscriber(
                addr,
                format!("sub-{s}"),
                "bench/+/data",
                qos,
                expected,
                true,
            )
            .await,
        );
    }
    let start = Instant::now();
    let mut senders = Vec::new();
    for p in 0..publishers {
        senders.push(
            publisher(
                addr,
                format!("pub-{p}"),
                &format!("bench/{p}/data"),
                qos,
                per_publisher,
                None,
            )
            .await,
        );
    }
    for receiver in receivers {
        tokio::time::timeout(Duration::from_secs(120), receiver)
            .await
            .expect("bench timed out")
            .unwrap();
    }
    let elapsed = start.elapsed();
    for sender in senders {
        sender.abort();
    }
    let delivered = expected * subscribers;
    println!(
        "{name:<40} {delivered:>9} messages delivered in {:>7.3} s: {:>10.0} msg/s",
        elapsed.as_secs_f64(),
        delivered as f64 / elapsed.as_secs_f64()
    );
    server.close().await;
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs it as a quick smoke test.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let scale = if quick { 100 } else { 1 };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        scenario(
            "fan-in 4 -> 1, QoS 0, 64 B",
            4,
            1,
            QoS::AtMostOnce,
            500_000 / scale,
        )
        .await;
        scenario(
            "fan-in 4 -> 1, QoS 1, 64 B",
            4,
            1,
            QoS::AtLeastOnce,
            100_000 / scale,
        )
        .await;
        scenario(
            "fan-out 1 -> 100, QoS 0, 64 B",
            1,
            100,
            QoS::AtMostOnce,
            20_000 / scale,
        )
        .await;
        scenario(
            "fan-out 1 -> 100, QoS 1, 64 B",
            1,
            100,
            QoS::AtLeastOnce,
            5_000 / scale,
        )
        .await;
    });
}
