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

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, PubAck, Publish, QoS,
    Subscribe, Subscription, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

const PROTOCOL: Protocol = Protocol::V3_1_1;

async fn connect(addr: SocketAddr, id: &str) -> (OwnedReadHalf, OwnedWriteHalf) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    let mut connect = Connect::new(PROTOCOL, MqttString::new(id).unwrap());
    connect.keep_alive = 0;
    Packet::from(connect).encode(PROTOCOL, &mut out).unwrap();
    write.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    next_packet(&mut read, &mut buf).await;
    (read, write)
}

async fn next_packet(read: &mut OwnedReadHalf, buf: &mut BytesMut) -> Packet {
    let context = DecodeContext::new(PROTOCOL);
    loop {
        if let Some(packet) = decode(buf, &context).unwrap() {
            return packet;
        }
        assert!(read.read_buf(buf).await.unwrap() > 0, "connection closed");
    }
}

/// Subscribes and returns a task that counts `expected` PUBLISH packets (acking QoS 1).
async fn subscriber(
    addr: SocketAddr,
    id: String,
    filter: &str,
    qos: QoS,
    expected: usize,
) -> tokio::task::JoinHandle<()> {
    let (mut read, mut write) = connect(addr, &id).await;
    let mut out = BytesMut::new();
    let subscribe = Subscribe::new(
        PacketId::MIN,
        vec![Subscription::new(MqttString::new(filter).unwrap(), qos)],
    );
    Packet::from(subscribe).encode(PROTOCOL, &mut out).unwrap();
    write.write_all(&out).await.unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    assert!(matches!(
        next_packet(&mut read, &mut buf).await,
        Packet::SubAck(_)
    ));
    tokio::spawn(async move {
        let context = DecodeContext::new(PROTOCOL);
        let mut received = 0;
        let mut acks = BytesMut::new();
        while received < expected {
            while let Some(packet) = decode(&mut buf, &context).unwrap() {
                if let Packet::Publish(publish) = packet {
                    received += 1;
                    if let Some(id) = publish.packet_id {
                        Packet::from(PubAck::new(id))
                            .encode(PROTOCOL, &mut acks)
                            .unwrap();
                    }
                }
            }
            if !acks.is_empty() {
                write.write_all(&acks).await.unwrap();
                acks.clear();
            }
            if received >= expected {
                break;
            }
            if buf.capacity() - buf.len() < 16 * 1024 {
                buf.reserve(64 * 1024);
            }
            assert!(
                read.read_buf(&mut buf).await.unwrap() > 0,
                "subscriber closed"
            );
        }
    })
}

/// Publishes `count` messages to `topic`, pipelined; for QoS 1 a reader task drains PUBACKs.
async fn publisher(
    addr: SocketAddr,
    id: String,
    topic: &str,
    qos: QoS,
    count: usize,
) -> tokio::task::JoinHandle<()> {
    let (mut read, mut write) = connect(addr, &id).await;
    let topic = MqttString::new(topic).unwrap();
    tokio::spawn(async move {
        let acks = tokio::spawn(async move {
            if qos == QoS::AtMostOnce {
                return;
            }
            let mut buf = BytesMut::with_capacity(64 * 1024);
            let context = DecodeContext::new(PROTOCOL);
            let mut acked = 0;
            while acked < count {
                while let Some(packet) = decode(&mut buf, &context).unwrap() {
                    if matches!(packet, Packet::PubAck(_)) {
                        acked += 1;
                    }
                }
                if acked >= count || read.read_buf(&mut buf).await.unwrap() == 0 {
                    break;
                }
            }
        });
        let payload = Bytes::from(vec![0x5A; 64]);
        let mut out = BytesMut::with_capacity(128 * 1024);
        for i in 0..count {
            let mut publish = Publish::new(topic.clone(), payload.clone());
            publish.qos = qos;
            if qos != QoS::AtMostOnce {
                publish.packet_id = PacketId::new((i % 65_535 + 1) as u16);
            }
            publish.encode(PROTOCOL, &mut out).unwrap();
            if out.len() >= 64 * 1024 {
                write.write_all(&out).await.unwrap();
                out.clear();
            }
        }
        write.write_all(&out).await.unwrap();
        acks.await.unwrap();
        // Keep the connection open until the subscriber has everything.
        std::future::pending::<()>().await;
    })
}

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
        receivers.push(subscriber(addr, format!("sub-{s}"), "bench/+/data", qos, expected).await);
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
