//! A minimal MQTT 3.1.1 load-generator client on the workspace's codec: connect, subscribe,
//! publish with a window of unacknowledged QoS 1/2 messages, count what arrives. Every wait is
//! bounded.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::{Bytes, BytesMut};
use mqtt_packets::{
    Connect, DecodeContext, MqttString, Packet, PacketId, Protocol, PubAck, PubComp, PubRec,
    PubRel, Publish, QoS, Subscribe, Subscription, decode,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub(crate) const PROTOCOL: Protocol = Protocol::V3_1_1;
/// The longest any single wait of the load generator may take.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// A connected client, split in halves.
pub(crate) struct Client {
    pub(crate) read: OwnedReadHalf,
    pub(crate) write: OwnedWriteHalf,
    pub(crate) buf: BytesMut,
}

impl Client {
    /// Connects (TCP_NODELAY on) and waits for CONNACK.
    pub(crate) async fn connect(port: u16, id: &str) -> Result<Self> {
        Self::connect_from(None, port, id).await
    }

    /// Connects from a given local address (to spread many connections over 127.x sources).
    pub(crate) async fn connect_from(
        source: Option<std::net::IpAddr>,
        port: u16,
        id: &str,
    ) -> Result<Self> {
        let stream = match source {
            None => TcpStream::connect(("127.0.0.1", port)).await?,
            Some(ip) => {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(std::net::SocketAddr::new(ip, 0))?;
                socket
                    .connect(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
                    .await?
            }
        };
        stream.set_nodelay(true)?;
        let (read, mut write) = stream.into_split();
        let mut connect = Connect::new(PROTOCOL, MqttString::new(id)?);
        // Not 0: rumqttd refuses a zero Keep Alive. Runs are far shorter than 1.5 x 300 s.
        connect.keep_alive = 300;
        let mut out = BytesMut::new();
        Packet::from(connect).encode(PROTOCOL, &mut out)?;
        write.write_all(&out).await?;
        let mut client = Self {
            read,
            write,
            buf: BytesMut::with_capacity(64 * 1024),
        };
        match client.next().await? {
            Packet::ConnAck(ack) if !ack.reason_code.is_error() => Ok(client),
            other => bail!("{id}: expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet (bounded wait).
    pub(crate) async fn next(&mut self) -> Result<Packet> {
        let context = DecodeContext::new(PROTOCOL);
        loop {
            if let Some(packet) = decode(&mut self.buf, &context)? {
                return Ok(packet);
            }
            if self.buf.capacity() - self.buf.len() < 16 * 1024 {
                self.buf.reserve(64 * 1024);
            }
            let read = tokio::time::timeout(WAIT, self.read.read_buf(&mut self.buf))
                .await
                .context("no packet within the wait")??;
            if read == 0 {
                bail!("the broker closed the connection");
            }
        }
    }

    /// Subscribes to one filter and waits for SUBACK.
    pub(crate) async fn subscribe(&mut self, filter: &str, qos: QoS) -> Result<()> {
        let subscribe = Subscribe::new(
            PacketId::MIN,
            vec![Subscription::new(MqttString::new(filter)?, qos)],
        );
        let mut out = BytesMut::new();
        Packet::from(subscribe).encode(PROTOCOL, &mut out)?;
        self.write.write_all(&out).await?;
        loop {
            match self.next().await? {
                Packet::SubAck(_) => return Ok(()),
                Packet::Publish(_) => {}
                other => bail!("expected SUBACK, got {other:?}"),
            }
        }
    }
}

/// Counts PUBLISH packets on `client` until `expected` arrived (acknowledging QoS 1/2), or the
/// wait runs out; calls `each` with every payload. Returns the count.
pub(crate) async fn receive(
    mut client: Client,
    expected: usize,
    mut each: impl FnMut(&Bytes) + Send,
) -> Result<usize> {
    let context = DecodeContext::new(PROTOCOL);
    let mut received = 0;
    let mut acks = BytesMut::new();
    while received < expected {
        while let Some(packet) = decode(&mut client.buf, &context)? {
            match packet {
                Packet::Publish(publish) => {
                    received += 1;
                    each(&publish.payload);
                    match (publish.qos, publish.packet_id) {
                        (QoS::AtLeastOnce, Some(id)) => {
                            Packet::from(PubAck::new(id)).encode(PROTOCOL, &mut acks)?;
                        }
                        (QoS::ExactlyOnce, Some(id)) => {
                            Packet::from(PubRec::new(id)).encode(PROTOCOL, &mut acks)?;
                        }
                        _ => {}
                    }
                }
                Packet::PubRel(rel) => {
                    Packet::from(PubComp::new(rel.packet_id)).encode(PROTOCOL, &mut acks)?;
                }
                _ => {}
            }
        }
        if !acks.is_empty() {
            client.write.write_all(&acks).await?;
            acks.clear();
        }
        if received >= expected {
            break;
        }
        if client.buf.capacity() - client.buf.len() < 16 * 1024 {
            client.buf.reserve(64 * 1024);
        }
        // A quiet period of the whole wait ends the count: what did not come is lost.
        match tokio::time::timeout(WAIT / 6, client.read.read_buf(&mut client.buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(_)) => {}
            Ok(Err(error)) => return Err(error.into()),
        }
    }
    Ok(received)
}

/// Publishes `count` messages of `payload` bytes to `topic` at `qos`, keeping at most `window`
/// unacknowledged (QoS 1/2); with `stamp`, the first 8 payload bytes carry the nanoseconds since
/// it. Returns once every message is acknowledged (QoS 1/2; PUBREL sent for QoS 2) or written.
///
/// With a window above 1, messages are coalesced into writes of up to 64 KiB (pipelined). With
/// a window of 1 (mqtt-stresser's mode: publish, then wait for the token), each message is one
/// write of its own, finished before the next is encoded; at QoS 1/2 the next message also waits
/// for the previous one's PUBACK / PUBCOMP.
pub(crate) async fn publish(
    client: Client,
    topic: &str,
    qos: QoS,
    count: usize,
    window: usize,
    payload: usize,
    stamp: Option<std::time::Instant>,
) -> Result<()> {
    let Client {
        mut read,
        write,
        mut buf,
    } = client;
    let write = std::sync::Arc::new(tokio::sync::Mutex::new(write));
    let topic = MqttString::new(topic)?;
    let (acked_tx, mut acked_rx) = tokio::sync::watch::channel(0usize);
    let acks = tokio::spawn({
        let write = write.clone();
        async move {
            let context = DecodeContext::new(PROTOCOL);
            let mut acked = 0usize;
            let mut rels = BytesMut::new();
            while acked < count && qos != QoS::AtMostOnce {
                while let Some(packet) = decode(&mut buf, &context)? {
                    match packet {
                        Packet::PubAck(_) | Packet::PubComp(_) => acked += 1,
                        Packet::PubRec(rec) => {
                            Packet::from(PubRel::new(rec.packet_id)).encode(PROTOCOL, &mut rels)?;
                        }
                        _ => {}
                    }
                }
                acked_tx.send_replace(acked);
                if !rels.is_empty() {
                    write.lock().await.write_all(&rels).await?;
                    rels.clear();
                }
                if acked >= count {
                    break;
                }
                if buf.capacity() - buf.len() < 16 * 1024 {
                    buf.reserve(64 * 1024);
                }
                let read = tokio::time::timeout(WAIT, read.read_buf(&mut buf))
                    .await
                    .context("no acknowledgement within the wait")??;
                if read == 0 {
                    bail!("the broker closed the publisher's connection");
                }
            }
            anyhow::Ok(())
        }
    });
    let window = window.max(1);
    // One write per message: mqtt-stresser's mode, and stamped messages (stamped at the write).
    let write_each = window == 1 || stamp.is_some();
    let body = vec![0x5A_u8; payload.max(8)];
    let mut out = BytesMut::with_capacity(128 * 1024);
    for i in 0..count {
        if qos != QoS::AtMostOnce && i >= *acked_rx.borrow() + window {
            if !out.is_empty() {
                write.lock().await.write_all(&out).await?;
                out.clear();
            }
            tokio::time::timeout(WAIT, acked_rx.wait_for(|&acked| i < acked + window))
                .await
                .context("the window did not open within the wait")??;
        }
        let mut bytes = body.clone();
        if let Some(start) = stamp {
            let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
            if let Some(head) = bytes.get_mut(..8) {
                head.copy_from_slice(&nanos.to_be_bytes());
            }
        }
        let mut message = Publish::new(topic.clone(), bytes);
        message.qos = qos;
        if qos != QoS::AtMostOnce {
            message.packet_id = PacketId::new(u16::try_from(i % 65_535 + 1).unwrap_or(1));
        }
        message.encode(PROTOCOL, &mut out)?;
        if write_each || out.len() >= 64 * 1024 {
            write.lock().await.write_all(&out).await?;
            out.clear();
        }
    }
    if !out.is_empty() {
        write.lock().await.write_all(&out).await?;
    }
    // Bounded: the acknowledgement task gives up after a quiet wait of its own.
    acks.await??;
    Ok(())
}

/// The nanoseconds stamped in a payload by [`publish`].
pub(crate) fn stamp_of(payload: &Bytes) -> Option<u64> {
    let head: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}
