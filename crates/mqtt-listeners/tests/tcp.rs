//! MQTT over plain TCP: a real client, limits, closing, and wrapping an existing socket.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;

use mqtt_listeners::{Listener, Tcp, TcpConfig};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use support::{TIMEOUT, eventually, read_packet, round_trip, server, spawn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn rumqttc_round_trip_over_tcp() {
    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    assert_eq!(tcp.protocol(), "tcp");
    let serving = spawn(tcp.clone(), &server);

    let address = tcp.local_addr();
    let options = MqttOptions::new("rumqttc-tcp", address.ip().to_string(), address.port());
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("tcp/test", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("tcp/test", QoS::AtLeastOnce, false, "over tcp")
        .await
        .unwrap();
    let received = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = eventloop.poll().await.unwrap() {
                return publish;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&received.payload[..], b"over tcp");
    assert_eq!(tcp.stats().accepted, 1);
    assert_eq!(tcp.stats().active, 1);

    tcp.close();
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    server.close().await;
}

#[tokio::test]
async fn maximum_connections_closes_the_extra_connection() {
    let server = server();
    let config = TcpConfig::default().with_maximum_connections(1);
    let tcp = Arc::new(Tcp::bind("tcp1", "127.0.0.1:0", config).await.unwrap());
    let _serving = spawn(tcp.clone(), &server);

    let mut first = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut first, "first", "limit/a").await;

    let mut second = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TIMEOUT, second.read(&mut byte))
        .await
        .unwrap();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the extra connection is closed"
    );
    assert_eq!(tcp.stats().refused, 1);

    // When the first ends, a new one is served again.
    drop(first);
    eventually(|| tcp.stats().active == 0).await;
    let mut third = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut third, "third", "limit/b").await;
    server.close().await;
}

#[tokio::test]
async fn close_before_serve_returns_at_once() {
    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    tcp.close();
    tokio::time::timeout(TIMEOUT, tcp.serve(server.clone()))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn closed_listener_keeps_existing_connections() {
    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tcp1", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    let serving = spawn(tcp.clone(), &server);
    let mut client = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    let mut buffer = bytes::BytesMut::new();
    client
        .write_all(&support::connect_bytes("stays"))
        .await
        .unwrap();
    assert!(matches!(
        read_packet(&mut client, &mut buffer).await,
        Some(mqtt_packets::Packet::ConnAck(_))
    ));

    tcp.close();
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // The accepted client still works after the listener closed.
    client
        .write_all(&support::subscribe_bytes("still/here"))
        .await
        .unwrap();
    assert!(matches!(
        read_packet(&mut client, &mut buffer).await,
        Some(mqtt_packets::Packet::SubAck(_))
    ));
    server.close().await;
}

#[tokio::test]
async fn existing_tokio_listener_is_served() {
    let server = server();
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = socket.local_addr().unwrap();
    let tcp = Arc::new(Tcp::from_listener("existing", socket, TcpConfig::default()).unwrap());
    assert_eq!(tcp.address(), address.to_string());
    let _serving = spawn(tcp.clone(), &server);
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    round_trip(&mut client, "existing", "existing/t").await;
    server.close().await;
}

#[tokio::test]
async fn a_listener_set_serves_and_closes_all() {
    let server = server();
    let listeners = mqtt_listeners::Listeners::new();
    let first = Arc::new(
        Tcp::bind("a", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    let second = Arc::new(
        Tcp::bind("b", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    listeners.add(first.clone()).unwrap();
    listeners.add(second.clone()).unwrap();
    let duplicate = Arc::new(
        Tcp::bind("a", "127.0.0.1:0", TcpConfig::default())
            .await
            .unwrap(),
    );
    assert!(listeners.add(duplicate).is_err());
    assert_eq!(listeners.len(), 2);
    assert_eq!(listeners.get("b").unwrap().address(), second.address());

    listeners.serve_all(&server);
    listeners.serve_all(&server); // idempotent
    let mut client = tokio::net::TcpStream::connect(second.local_addr())
        .await
        .unwrap();
    round_trip(&mut client, "set", "set/t").await;

    tokio::time::timeout(TIMEOUT, listeners.close_all())
        .await
        .unwrap();
    server.close().await;
}
