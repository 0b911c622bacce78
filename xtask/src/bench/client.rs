//! A minimal MQTT 3.1.1 load-generator client on the workspace's codec: connect, subscribe,
//! publish with a window of unacknowledged QoS 1/2 messages, count what arrives. Every wait is
//! bounded.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::BytesMut;
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

/// A packet of the broker's stream, read only as far as the load generator needs: the hot
/// loops count messages and answer acknowledgements without building a [`Packet`] for each, so
/// that decoding does not take CPU from the broker under test (the full decoder is used for
/// CONNACK and SUBACK).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Frame {
    /// PUBLISH: its QoS, packet identifier (QoS 1/2) and where its payload lies in the buffer.
    Publish {
        qos: u8,
        packet_id: Option<PacketId>,
        payload: std::ops::Range<usize>,
    },
    PubAck,
    PubRec(PacketId),
    PubRel(PacketId),
    PubComp,
    /// Any other packet.
    Other,
}

/// The first packet in `buf` (an MQTT 3.1.1 stream) and its length, or `None` when it is not
/// all there yet.
pub(crate) fn frame(buf: &[u8]) -> Result<Option<(Frame, usize)>> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    // The Remaining Length: up to four bytes of seven bits each.
    let mut length = 0usize;
    let mut header = 1;
    loop {
        let Some(&byte) = buf.get(header) else {
            return Ok(None);
        };
        length |= usize::from(byte & 0x7F) << (7 * (header - 1));
        header += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if header > 4 {
            bail!("malformed remaining length from the broker");
        }
    }
    let total = header + length;
    let Some(body) = buf.get(header..total) else {
        return Ok(None);
    };
    let id = |at: usize| -> Result<PacketId> {
        let bytes: [u8; 2] = body
            .get(at..at + 2)
            .and_then(|bytes| bytes.try_into().ok())
            .context("truncated packet from the broker")?;
        PacketId::new(u16::from_be_bytes(bytes)).context("packet identifier 0 from the broker")
    };
    // What the codec would refuse, so that a broker sending it fails the run.
    let malformed = match first >> 4 {
        3 => (first >> 1) & 0x03 == 3,
        4..=7 => length < 2 || first & 0x0F != if first >> 4 == 6 { 0x02 } else { 0 },
        _ => false,
    };
    if malformed {
        bail!("malformed packet from the broker (first byte {first:#04x}, length {length})");
    }
    let frame = match first >> 4 {
        3 => {
            let qos = (first >> 1) & 0x03;
            let topic = usize::from(u16::from_be_bytes([
                *body.first().context("truncated PUBLISH")?,
                *body.get(1).context("truncated PUBLISH")?,
            ]));
            let (packet_id, start) = if qos == 0 {
                (None, 2 + topic)
            } else {
                (Some(id(2 + topic)?), 4 + topic)
            };
            if start > length {
                bail!("truncated PUBLISH from the broker");
            }
            Frame::Publish {
                qos,
                packet_id,
                payload: header + start..total,
            }
        }
        4 => Frame::PubAck,
        5 => Frame::PubRec(id(0)?),
        6 => Frame::PubRel(id(0)?),
        7 => Frame::PubComp,
        _ => Frame::Other,
    };
    Ok(Some((frame, total)))
}

/// Counts PUBLISH packets on `client` until `expected` arrived (acknowledging QoS 1/2), or the
/// wait runs out; calls `each` with every payload, which says whether it counts (false: a
/// duplicate).
pub(crate) async fn receive(
    mut client: Client,
    expected: usize,
    mut each: impl FnMut(&[u8]) -> bool + Send,
) -> Result<Received> {
    use bytes::Buf as _;
    let mut received = 0;
    let mut duplicates = 0;
    let mut last = None;
    let mut acks = BytesMut::new();
    while received < expected {
        let before = received;
        while let Some((frame, len)) = frame(&client.buf)? {
            match frame {
                Frame::Publish {
                    qos,
                    packet_id,
                    payload,
                } => {
                    if each(client.buf.get(payload).unwrap_or_default()) {
                        received += 1;
                    } else {
                        duplicates += 1;
                    }
                    match (qos, packet_id) {
                        (1, Some(id)) => {
                            PubAck::new(id).encode(PROTOCOL, &mut acks)?;
                        }
                        (2, Some(id)) => {
                            PubRec::new(id).encode(PROTOCOL, &mut acks)?;
                        }
                        _ => {}
                    }
                }
                Frame::PubRel(id) => {
                    PubComp::new(id).encode(PROTOCOL, &mut acks)?;
                }
                _ => {}
            }
            client.buf.advance(len);
        }
        if received > before {
            last = Some(std::time::Instant::now());
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
    Ok(Received {
        counted: received,
        duplicates,
        last,
    })
}

/// What [`receive`] counted.
#[derive(Debug)]
pub(crate) struct Received {
    /// Messages that counted.
    pub(crate) counted: usize,
    /// Messages that did not count (duplicates).
    pub(crate) duplicates: usize,
    /// When the read that brought the last counted message was done: without the quiet wait
    /// that ends a count short of `expected`.
    pub(crate) last: Option<std::time::Instant>,
}

/// What [`publish`] writes in the first 8 payload bytes of each message.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mark {
    /// Nothing (the payload is filler).
    None,
    /// This publisher's index and the message's sequence number (see [`super::tally`]).
    Sequence(usize),
}

/// Publishes `count` messages of `payload` bytes to `topic` at `qos`, keeping at most `window`
/// unacknowledged (QoS 1/2); the first 8 payload bytes carry the `mark`. Returns once every
/// message is acknowledged (QoS 1/2; PUBREL sent for QoS 2) or written.
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
    mark: Mark,
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
            use bytes::Buf as _;
            let mut acked = 0usize;
            let mut rels = BytesMut::new();
            while acked < count && qos != QoS::AtMostOnce {
                while let Some((frame, len)) = frame(&buf)? {
                    match frame {
                        Frame::PubAck | Frame::PubComp => acked += 1,
                        Frame::PubRec(id) => PubRel::new(id).encode(PROTOCOL, &mut rels)?,
                        _ => {}
                    }
                    buf.advance(len);
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
    // One write per message: mqtt-stresser's mode.
    let write_each = window == 1;
    let template = Template::new(topic, qos, payload)?;
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
        let id = (qos != QoS::AtMostOnce)
            .then(|| PacketId::new(u16::try_from(i % 65_535 + 1).unwrap_or(1)))
            .flatten();
        let head = match mark {
            Mark::None => None,
            Mark::Sequence(publisher) => Some(u64::from_be_bytes(super::tally::tag(publisher, i))),
        };
        template.append(&mut out, id, head);
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

/// A PUBLISH encoded once with the codec; each copy gets its packet identifier and mark
/// patched in, so that encoding takes as little CPU as possible from the broker under test.
struct Template {
    encoded: BytesMut,
    /// Where the payload starts; the packet identifier (QoS 1/2) is the two bytes before it.
    payload_at: usize,
}

impl Template {
    fn new(topic: MqttString, qos: QoS, payload: usize) -> Result<Self> {
        let mut message = Publish::new(topic, vec![0x5A_u8; payload.max(8)]);
        message.qos = qos;
        if qos != QoS::AtMostOnce {
            message.packet_id = Some(PacketId::MIN);
        }
        let mut encoded = BytesMut::new();
        message.encode(PROTOCOL, &mut encoded)?;
        let payload_at = encoded.len() - message.payload.len();
        Ok(Self {
            encoded,
            payload_at,
        })
    }

    /// Appends a copy with this packet identifier (QoS 1/2) and, if given, `head` in the first
    /// 8 payload bytes (big-endian).
    fn append(&self, out: &mut BytesMut, id: Option<PacketId>, head: Option<u64>) {
        let start = out.len();
        out.extend_from_slice(&self.encoded);
        let at = start + self.payload_at;
        if let Some(id) = id
            && let Some(field) = out.get_mut(at - 2..at)
        {
            field.copy_from_slice(&id.get().to_be_bytes());
        }
        if let Some(head) = head
            && let Some(field) = out.get_mut(at..at + 8)
        {
            field.copy_from_slice(&head.to_be_bytes());
        }
    }
}

/// The nanoseconds stamped in the first 8 bytes of a latency row's payload.
pub(crate) fn stamp_of(payload: &[u8]) -> Option<u64> {
    let head: [u8; 8] = payload.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(packet: impl Into<Packet>) -> BytesMut {
        let mut out = BytesMut::new();
        packet.into().encode(PROTOCOL, &mut out).unwrap();
        out
    }

    #[test]
    fn frames_read_what_the_codec_wrote() {
        let id = PacketId::new(300).unwrap();
        let mut publish = Publish::new(MqttString::new("a/b").unwrap(), vec![7u8; 200]);
        publish.qos = QoS::AtLeastOnce;
        publish.packet_id = Some(id);
        let mut stream = encoded(publish);
        stream.extend_from_slice(&encoded(PubRel::new(id)));
        stream.extend_from_slice(&encoded(PubAck::new(id)));
        let (first, len) = frame(&stream).unwrap().unwrap();
        let Frame::Publish {
            qos: 1,
            packet_id: Some(got),
            payload,
        } = first
        else {
            panic!("{first:?}");
        };
        assert_eq!(got, id);
        assert_eq!(&stream[payload], &[7u8; 200][..]);
        let rest = &stream[len..];
        let (second, len2) = frame(rest).unwrap().unwrap();
        assert_eq!(second, Frame::PubRel(id));
        assert_eq!(frame(&rest[len2..]).unwrap().unwrap().0, Frame::PubAck);
        // Not all there yet.
        assert_eq!(frame(&stream[..len - 1]).unwrap(), None);
        assert_eq!(frame(&stream[..1]).unwrap(), None);
        // What the codec refuses: QoS 3, PUBREL without its flags, a short PUBACK.
        assert!(frame(&[0x36, 5, 0, 1, b'a', 0, 1]).is_err());
        assert!(frame(&[0x60, 2, 0, 1]).is_err());
        assert!(frame(&[0x40, 1, 0]).is_err());
    }

    #[test]
    fn template_copies_decode_with_their_id_and_stamp() {
        let topic = MqttString::new("bench/t").unwrap();
        let template = Template::new(topic.clone(), QoS::ExactlyOnce, 64).unwrap();
        let mut out = BytesMut::new();
        template.append(&mut out, PacketId::new(513), Some(42));
        template.append(&mut out, PacketId::new(7), None);
        let context = DecodeContext::new(PROTOCOL);
        for (id, stamp) in [(513, Some(42)), (7, None)] {
            let Some(Packet::Publish(publish)) = decode(&mut out, &context).unwrap() else {
                panic!("not a PUBLISH");
            };
            assert_eq!(publish.topic, topic);
            assert_eq!(publish.qos, QoS::ExactlyOnce);
            assert_eq!(publish.packet_id, PacketId::new(id));
            assert_eq!(publish.payload.len(), 64);
            if let Some(stamp) = stamp {
                assert_eq!(stamp_of(&publish.payload), Some(stamp));
            }
        }
        assert!(out.is_empty());
    }
}
