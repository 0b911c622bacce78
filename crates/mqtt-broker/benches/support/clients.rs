//! Minimal raw-socket MQTT 3.1.1 clients for the throughput benchmarks (this crate's and the
//! persistence benchmark of `mochi-mqtt`), on the crate's codec, so the broker is what is
//! measured.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, PubAck, Publish, QoS,
    Subscribe, Subscription, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// The protocol level of the benchmark clients.
pub(crate) const PROTOCOL: Protocol = Protocol::V3_1_1;

/// Connects a 3.1.1 client; `clean` is its Clean Session flag. Returns the read buffer too: it
/// may already hold packets that came right after CONNACK (a resumed session's messages).
pub(crate) async fn connect(
    addr: SocketAddr,
    id: &str,
    clean: bool,
) -> (OwnedReadHalf, OwnedWriteHalf, BytesMut) {
    let stream = TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut read, mut write) = stream.into_split();
    let mut out = BytesMut::new();
    let mut connect = Connect::new(PROTOCOL, MqttString::new(id).unwrap());
    connect.keep_alive = 0;
    connect.clean_start = clean;
    Packet::from(connect).encode(PROTOCOL, &mut out).unwrap();
    write.write_all(&out).await.unwrap();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    next_packet(&mut read, &mut buf).await;
    (read, write, buf)
}

/// The next packet from `read` (buffered in `buf`).
pub(crate) async fn next_packet(read: &mut OwnedReadHalf, buf: &mut BytesMut) -> Packet {
    let context = DecodeContext::new(PROTOCOL);
    loop {
        if let Some(packet) = decode(buf, &context).unwrap() {
            return packet;
        }
        assert!(read.read_buf(buf).await.unwrap() > 0, "connection closed");
    }
}

/// Subscribes and returns a task that counts `expected` PUBLISH packets (acking QoS 1).
pub(crate) async fn subscriber(
    addr: SocketAddr,
    id: String,
    filter: &str,
    qos: QoS,
    expected: usize,
    clean: bool,
) -> tokio::task::JoinHandle<()> {
    let (mut read, mut write, mut buf) = connect(addr, &id, clean).await;
    let mut out = BytesMut::new();
    let subscribe = Subscribe::new(
        PacketId::MIN,
        vec![Subscription::new(MqttString::new(filter).unwrap(), qos)],
    );
    Packet::from(subscribe).encode(PROTOCOL, &mut out).unwrap();
    write.write_all(&out).await.unwrap();
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
/// With a `window`, at most that many QoS 1 messages are unacknowledged at a time (a client's
/// usual flow control); without one, everything is sent at once.
pub(crate) async fn publisher(
    addr: SocketAddr,
    id: String,
    topic: &str,
    qos: QoS,
    count: usize,
    window: Option<usize>,
) -> tokio::task::JoinHandle<()> {
    let (mut read, mut write, mut buf) = connect(addr, &id, true).await;
    let topic = MqttString::new(topic).unwrap();
    // Acknowledged so far, for the window.
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0usize);
    tokio::spawn(async move {
        let acks = tokio::spawn(async move {
            if qos == QoS::AtMostOnce {
                return;
            }
            let context = DecodeContext::new(PROTOCOL);
            let mut acked = 0;
            while acked < count {
                while let Some(packet) = decode(&mut buf, &context).unwrap() {
                    if matches!(packet, Packet::PubAck(_)) {
                        acked += 1;
                    }
                }
                acked_tx.send_replace(acked);
                if acked >= count || read.read_buf(&mut buf).await.unwrap() == 0 {
                    break;
                }
            }
        });
        let payload = Bytes::from(vec![0x5A; 64]);
        let mut out = BytesMut::with_capacity(128 * 1024);
        let window = window.filter(|_| qos != QoS::AtMostOnce);
        for i in 0..count {
            if let Some(window) = window
                && i >= *acked_rx.borrow() + window
            {
                write.write_all(&out).await.unwrap();
                out.clear();
                let _ = acked_rx.wait_for(|&acked| i < acked + window).await;
            }
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
