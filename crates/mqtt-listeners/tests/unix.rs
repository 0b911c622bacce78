//! MQTT over a Unix domain socket.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;

use mqtt_listeners::{Listener, UnixConfig, UnixSocket};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};
use support::{TIMEOUT, round_trip, server, spawn};

/// A fresh directory for this test's socket.
async fn socket_path(name: &str) -> PathBuf {
    let directory =
        std::env::temp_dir().join(format!("mqtt-listeners-{}-{name}", std::process::id()));
    tokio::fs::create_dir_all(&directory).await.unwrap();
    directory.join("mqtt.sock")
}

#[tokio::test]
async fn rumqttc_round_trip_over_a_unix_socket() {
    let server = server();
    let path = socket_path("rumqttc").await;
    let unix = Arc::new(
        UnixSocket::bind(
            "unix1",
            &path,
            UnixConfig::default().with_permissions(0o600),
        )
        .await
        .unwrap(),
    );
    assert_eq!(unix.protocol(), "unix");
    assert_eq!(unix.address(), path.display().to_string());
    let mode = tokio::fs::metadata(&path)
        .await
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let serving = spawn(unix.clone(), &server);

    let mut options = MqttOptions::new("rumqttc-unix", path.display().to_string(), 0);
    options.set_transport(Transport::Unix);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("unix/t", QoS::AtMostOnce).await.unwrap();
    client
        .publish("unix/t", QoS::AtMostOnce, false, "over unix")
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
    assert_eq!(&received.payload[..], b"over unix");

    unix.close();
    tokio::time::timeout(TIMEOUT, serving)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(!path.exists(), "the socket file is removed on close");
    server.close().await;
}

#[tokio::test]
async fn a_stale_socket_file_is_replaced_and_a_live_one_is_not() {
    let server = server();
    let path = socket_path("stale").await;
    // A socket file nobody listens on: bind, then drop the listener (the file stays).
    drop(tokio::net::UnixListener::bind(&path).unwrap());
    assert!(path.exists());
    let unix = Arc::new(
        UnixSocket::bind("unix1", &path, UnixConfig::default())
            .await
            .unwrap(),
    );
    let _serving = spawn(unix.clone(), &server);
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    round_trip(&mut stream, "unix-raw", "unix/raw").await;

    // The live socket is not taken over.
    assert!(
        UnixSocket::bind("unix2", &path, UnixConfig::default())
            .await
            .is_err()
    );
    server.close().await;
    unix.close();
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_left_alone() {
    let path = socket_path("regular").await;
    tokio::fs::write(&path, b"precious").await.unwrap();
    assert!(
        UnixSocket::bind("unix1", &path, UnixConfig::default())
            .await
            .is_err()
    );
    assert_eq!(tokio::fs::read(&path).await.unwrap(), b"precious");
}

#[tokio::test]
async fn an_existing_unix_listener_is_served() {
    let server = server();
    let path = socket_path("existing").await;
    tokio::fs::remove_file(&path).await.ok();
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let unix = Arc::new(UnixSocket::from_listener(
        "existing",
        listener,
        UnixConfig::default(),
    ));
    let _serving = spawn(unix.clone(), &server);
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    round_trip(&mut stream, "existing-unix", "existing/unix").await;
    unix.close();
    assert!(path.exists(), "a socket the host bound is left alone");
    server.close().await;
}
