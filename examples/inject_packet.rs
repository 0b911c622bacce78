//! Packet injection: the host program makes a connected client publish or subscribe, as if the
//! client had sent the packet itself (`Server::inject_packet`). The client's session must exist,
//! the client's ACL applies, and the client gets no acknowledgement.
//!
//! To have a session, a tiny client connects over an in-memory pipe (`tokio::io::duplex`,
//! served by `Server::serve_connection`) and speaks MQTT 5 with the `mqtt_packets` codec. A real
//! client connecting over TCP would do just as well.
//!
//! Run with `cargo run -p mochi-examples --example inject_packet`.

use std::time::Duration;

use bytes::BytesMut;
use mochi_mqtt::packets::{
    Connect, DecodeContext, Disconnect, MqttString, PacketId, Publish, Subscribe, Subscription,
    decode,
};
use mochi_mqtt::{
    AllowAllHook, BrokerError, ConnectionInfo, Options, Packet, Protocol, QoS, ReasonCode, Server,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream};
use tokio::time::timeout;

type Error = Box<dyn std::error::Error>;

/// An MQTT 5 client over an in-memory pipe: just enough to connect and read what it is sent.
struct TinyClient {
    stream: DuplexStream,
    buf: BytesMut,
}

impl TinyClient {
    /// Connects to `server` as `client_id` and waits for a successful CONNACK.
    async fn connect(server: &Server, client_id: &'static str) -> Result<Self, Error> {
        let (stream, served) = tokio::io::duplex(64 * 1024);
        // The broker end: served like any network connection, on a task of its own.
        let server = server.clone();
        tokio::spawn(async move {
            let connection = ConnectionInfo::new("in-memory", None);
            server.serve_connection(served, connection).await;
        });
        let mut client = Self {
            stream,
            buf: BytesMut::new(),
        };
        let connect = Connect::new(Protocol::V5, MqttString::from_static(client_id));
        client.send(Packet::from(connect)).await?;
        match client.recv().await? {
            Packet::ConnAck(connack) if !connack.reason_code.is_error() => Ok(client),
            other => Err(format!("expected a successful CONNACK, got {other:?}").into()),
        }
    }

    async fn send(&mut self, packet: Packet) -> Result<(), Error> {
        let mut out = BytesMut::new();
        packet.encode(Protocol::V5, &mut out)?;
        self.stream.write_all(&out).await?;
        Ok(())
    }

    /// The next packet from the broker (waiting five seconds at most).
    async fn recv(&mut self) -> Result<Packet, Error> {
        let context = DecodeContext::new(Protocol::V5);
        timeout(Duration::from_secs(5), async {
            loop {
                if let Some(packet) = decode(&mut self.buf, &context)? {
                    return Ok(packet);
                }
                if self.stream.read_buf(&mut self.buf).await? == 0 {
                    return Err("the broker closed the connection".into());
                }
            }
        })
        .await?
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook)?; // development only: every client may connect
    let mut device = TinyClient::connect(&server, "device-1").await?;
    println!(
        "device-1 connected; clients: {:?}",
        server.connected_clients()
    );

    // The host program watches what devices publish.
    let mut watched = server
        .inline_client()
        .subscribe("devices/#", QoS::AtMostOnce)?;

    // 1. A PUBLISH as device-1: subscribers receive it as if device-1 had sent it.
    let status = Publish::new(MqttString::from_static("devices/device-1/status"), "online");
    server.inject_packet("device-1", Packet::from(status))?;
    let message = timeout(Duration::from_secs(5), watched.recv())
        .await?
        .ok_or("the subscription ended")?;
    println!(
        "injected PUBLISH delivered: {} = {}",
        message.topic.as_str(),
        String::from_utf8_lossy(&message.payload)
    );

    // 2. A SUBSCRIBE for device-1 (no SUBACK goes to the device): from now on, messages to its
    //    command topic reach it over its connection.
    let commands = Subscription::new(
        MqttString::from_static("commands/device-1"),
        QoS::AtMostOnce,
    );
    let subscribe = Subscribe::new(PacketId::MIN, vec![commands]);
    server.inject_packet("device-1", Packet::from(subscribe))?;
    server.publish("commands/device-1", "reboot", false, QoS::AtMostOnce)?;
    match device.recv().await? {
        Packet::Publish(publish) => println!(
            "device-1 received: {} = {}",
            publish.topic.as_str(),
            String::from_utf8_lossy(&publish.payload)
        ),
        other => return Err(format!("expected a PUBLISH, got {other:?}").into()),
    }

    // 3. An injected packet has the client's rights, not the inline client's: a network client
    //    may not publish to `$SYS` topics.
    let forged = Publish::new(MqttString::from_static("$SYS/broker/uptime"), "0");
    match server.inject_packet("device-1", Packet::from(forged)) {
        Err(BrokerError::Refused(code)) if code == ReasonCode::NOT_AUTHORIZED => {
            println!("PUBLISH to $SYS as device-1 refused: {code}");
        }
        other => return Err(format!("expected Not authorized, got {other:?}").into()),
    }

    // 4. Without a session there is no one to act for.
    let nobody = Publish::new(MqttString::from_static("devices/ghost/status"), "online");
    match server.inject_packet("ghost", Packet::from(nobody)) {
        Err(error @ BrokerError::UnknownClient(_)) => println!("as ghost: {error}"),
        other => return Err(format!("expected an unknown client, got {other:?}").into()),
    }

    // The device leaves, then the broker stops.
    device
        .send(Packet::from(Disconnect::new(
            ReasonCode::NORMAL_DISCONNECTION,
        )))
        .await?;
    drop(device);
    server.close().await;
    Ok(())
}
