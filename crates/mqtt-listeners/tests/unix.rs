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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_with_permissions_never_appears_with_others() {
    let server = server();
    let path = socket_path("window").await;
    tokio::fs::remove_file(&path).await.ok();
    // Another thread looks at the path as fast as it can while the socket is bound again and
    // again: it must only ever see the configured mode (binding, then setting the mode, shows the
    // umask's mode for a moment).
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = std::thread::spawn({
        let (path, stop) = (path.clone(), stop.clone());
        move || {
            let mut modes = std::collections::BTreeSet::new();
            let mut looks = 0_u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(metadata) = std::fs::symlink_metadata(&path) {
                    modes.insert(metadata.permissions().mode() & 0o777);
                }
                looks += 1;
            }
            (modes, looks)
        }
    });
    for _ in 0..100 {
        let unix = UnixSocket::bind(
            "window",
            &path,
            UnixConfig::default().with_permissions(0o600),
        )
        .await
        .unwrap();
        // It serves at its path.
        tokio::net::UnixStream::connect(&path).await.unwrap();
        unix.close();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (modes, looks) = watcher.join().unwrap();
    assert!(looks > 0);
    assert!(
        modes.iter().all(|mode| *mode == 0o600),
        "modes seen: {:?}",
        modes
            .iter()
            .map(|mode| format!("{mode:o}"))
            .collect::<Vec<_>>()
    );

    // Served at its path; nothing but the socket is left in the directory.
    let unix = Arc::new(
        UnixSocket::bind(
            "window",
            &path,
            UnixConfig::default().with_permissions(0o660),
        )
        .await
        .unwrap(),
    );
    let _serving = spawn(unix.clone(), &server);
    let mut stream = tokio::net::UnixStream::connect(&path).await.unwrap();
    round_trip(&mut stream, "unix-mode", "unix/mode").await;
    let mut entries = tokio::fs::read_dir(path.parent().unwrap()).await.unwrap();
    let mut names = Vec::new();
    while let Some(entry) = entries.next_entry().await.unwrap() {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    assert_eq!(names, ["mqtt.sock"]);
    server.close().await;
    unix.close();
}
