//! MQTT over TLS: round trips, client certificates and their details for hooks, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use mqtt_broker::{ClientInfo, ConnectRefusal, ConnectionInfo, Hook, hooks::HookEvents};
use mqtt_listeners::{Listener, Tcp, TcpConfig, TlsConfig};
use mqtt_packets::Connect;
use support::{Pki, TIMEOUT, round_trip, server, spawn, tls_connect};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// Passes every CONNECT's connection metadata to the test.
#[derive(Debug)]
struct Capture(mpsc::UnboundedSender<ConnectionInfo>);

impl Hook for Capture {
    fn id(&self) -> &str {
        "capture"
    }

    fn provides(&self) -> HookEvents {
        HookEvents::ON_CONNECT
    }

    fn on_connect(&self, client: &ClientInfo, _: &Connect) -> Result<(), ConnectRefusal> {
        self.0.send(client.connection.clone()).ok();
        Ok(())
    }
}

async fn tls_listener(tls: TlsConfig) -> (mqtt_broker::Server, Arc<Tcp>) {
    let server = server();
    let tcp = Arc::new(
        Tcp::bind("tls1", "127.0.0.1:0", TcpConfig::default().with_tls(tls))
            .await
            .unwrap(),
    );
    assert_eq!(tcp.protocol(), "tls");
    spawn(tcp.clone(), &server);
    (server, tcp)
}

#[tokio::test]
async fn round_trip_over_tls() {
    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(false)).await;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    server.add_hook(Capture(sender)).unwrap();

    let mut stream = tls_connect(&pki.connector(false), tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut stream, "tls-client", "tls/t").await;

    let info = receiver.recv().await.unwrap();
    assert_eq!(&*info.listener, "tls1");
    let tls = info.tls.expect("TLS details");
    assert_eq!(tls.protocol_version.as_deref(), Some("TLSv1.3"));
    assert!(tls.peer_certificates.is_empty());
    server.close().await;
}

#[tokio::test]
async fn tls_1_2_is_accepted() {
    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(false)).await;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    server.add_hook(Capture(sender)).unwrap();

    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS12])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let mut stream = tls_connect(&connector, tcp.local_addr()).await.unwrap();
    round_trip(&mut stream, "tls12", "tls12/t").await;
    let tls = receiver.recv().await.unwrap().tls.unwrap();
    assert_eq!(tls.protocol_version.as_deref(), Some("TLSv1.2"));
    server.close().await;
}

#[tokio::test]
async fn client_certificate_subject_and_sans_reach_hooks() {
    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(true)).await;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    server.add_hook(Capture(sender)).unwrap();

    let mut stream = tls_connect(&pki.connector(true), tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut stream, "device-1", "devices/1").await;

    let tls = receiver.recv().await.unwrap().tls.unwrap();
    assert_eq!(tls.peer_certificates.len(), 1);
    assert_eq!(&tls.peer_certificates[0][..], pki.client_cert_der.as_ref());
    let subject = tls.peer_subject.unwrap();
    assert!(subject.contains("CN=device-1"), "{subject}");
    assert!(subject.contains("O=Acme"), "{subject}");
    assert_eq!(
        tls.peer_subject_alt_names,
        vec![
            "DNS:device-1.example.com".to_owned(),
            "IP:10.0.0.7".to_owned()
        ]
    );
    server.close().await;
}

/// The server refuses the handshake; with TLS 1.3 the client may only learn it on its first
/// read, so a refusal is an error at connect, or an error or end of stream after.
async fn assert_refused(
    connected: std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
) {
    let Ok(mut stream) = connected else { return };
    stream
        .write_all(&support::connect_bytes("refused"))
        .await
        .ok();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(TIMEOUT, stream.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "refused: {read:?}");
}

#[tokio::test]
async fn client_without_certificate_is_refused_when_required() {
    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(true)).await;
    assert_refused(tls_connect(&pki.connector(false), tcp.local_addr()).await).await;
    support::eventually(|| tcp.stats().handshake_failures == 1).await;
    server.close().await;
}

#[tokio::test]
async fn client_certificate_from_another_ca_is_refused() {
    let pki = Pki::with_client_ca("Other CA");
    let (server, tcp) = tls_listener(pki.server_tls(true)).await;
    assert_refused(tls_connect(&pki.connector(true), tcp.local_addr()).await).await;
    support::eventually(|| tcp.stats().handshake_failures == 1).await;
    server.close().await;
}

#[tokio::test]
async fn optional_client_certificate_accepts_clients_without_one() {
    let pki = Pki::new();
    let tls = TlsConfig::builder_from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap()
    .client_ca_pem(pki.ca_pem.as_bytes())
    .unwrap()
    .client_certificate_required(false)
    .build()
    .unwrap();
    let (server, tcp) = tls_listener(tls).await;
    let mut stream = tls_connect(&pki.connector(false), tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut stream, "anonymous", "optional/t").await;
    server.close().await;
}

#[tokio::test]
async fn plain_mqtt_on_the_tls_port_is_closed() {
    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(false)).await;
    let mut stream = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    stream
        .write_all(&support::connect_bytes("plain"))
        .await
        .unwrap();
    let mut buffer = Vec::new();
    // The server may answer with a TLS alert; what matters is that it closes.
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buffer))
        .await
        .unwrap()
        .ok();
    assert!(!buffer.starts_with(&[0x20]), "no CONNACK over plain TCP");
    support::eventually(|| tcp.stats().handshake_failures == 1).await;
    assert_eq!(tcp.stats().active, 0);
    server.close().await;
}

#[tokio::test]
async fn a_handshake_that_never_finishes_is_closed_after_the_timeout() {
    let pki = Pki::new();
    let (server, tcp) =
        tls_listener(pki.server_tls_with_timeout(false, Duration::from_millis(500))).await;
    let mut stream = tokio::net::TcpStream::connect(tcp.local_addr())
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut buffer = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buffer))
        .await
        .unwrap()
        .ok();
    assert!(started.elapsed() >= Duration::from_millis(400));
    support::eventually(|| tcp.stats().handshake_failures == 1).await;
    assert_eq!(tcp.stats().active, 0);
    server.close().await;
}

#[tokio::test]
async fn pem_files_and_bad_pem() {
    let pki = Pki::new();
    let directory = std::env::temp_dir().join(format!("mqtt-listeners-tls-{}", std::process::id()));
    tokio::fs::create_dir_all(&directory).await.unwrap();
    let certificate = directory.join("server.pem");
    let key = directory.join("server.key");
    tokio::fs::write(&certificate, &pki.server_cert_pem)
        .await
        .unwrap();
    tokio::fs::write(&key, &pki.server_key_pem).await.unwrap();
    let tls = TlsConfig::builder_from_pem_files(&certificate, &key)
        .await
        .unwrap()
        .build()
        .unwrap();
    let (server, tcp) = tls_listener(tls).await;
    let mut stream = tls_connect(&pki.connector(false), tcp.local_addr())
        .await
        .unwrap();
    round_trip(&mut stream, "files", "files/t").await;
    server.close().await;
    tokio::fs::remove_dir_all(&directory).await.ok();

    assert!(
        TlsConfig::builder_from_pem(b"not a certificate", pki.server_key_pem.as_bytes()).is_err()
    );
    assert!(TlsConfig::builder_from_pem(pki.server_cert_pem.as_bytes(), b"no key").is_err());
}

#[tokio::test]
async fn rumqttc_round_trip_over_tls_with_a_client_certificate() {
    use rumqttc::{AsyncClient, Event, MqttOptions, QoS, TlsConfiguration, Transport};

    let pki = Pki::new();
    let (server, tcp) = tls_listener(pki.server_tls(true)).await;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    server.add_hook(Capture(sender)).unwrap();

    let mut options = MqttOptions::new("rumqttc-tls", "127.0.0.1", tcp.local_addr().port());
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: pki.ca_pem.clone().into_bytes(),
        alpn: None,
        client_auth: Some((
            pki.client_cert_pem.clone().into_bytes(),
            pki.client_key_pem.clone().into_bytes(),
        )),
    }));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client
        .subscribe("tls/rumqttc", QoS::AtLeastOnce)
        .await
        .unwrap();
    client
        .publish("tls/rumqttc", QoS::AtLeastOnce, false, "over tls")
        .await
        .unwrap();
    let received = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Event::Incoming(rumqttc::Packet::Publish(publish)) =
                eventloop.poll().await.unwrap()
            {
                return publish;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(&received.payload[..], b"over tls");
    let tls = receiver.recv().await.unwrap().tls.unwrap();
    assert!(tls.peer_subject.unwrap().contains("CN=device-1"));
    server.close().await;
}
