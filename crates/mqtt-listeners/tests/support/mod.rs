//! Shared helpers for the listener tests: a broker, a test PKI, raw MQTT over any stream.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use mqtt_broker::{AllowAllHook, Options, Server};
use mqtt_listeners::{Listener, ListenerError, TlsConfig};
use mqtt_packets::{DecodeContext, Packet, Protocol, decode};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

/// Every wait in the tests is bounded by this.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A server that lets everyone in.
pub fn server() -> Server {
    let server = Server::new(Options::default());
    server.add_hook(AllowAllHook).unwrap();
    server
}

/// Serves `listener` on its own task.
pub fn spawn(
    listener: Arc<dyn Listener>,
    server: &Server,
) -> JoinHandle<Result<(), ListenerError>> {
    let server = server.clone();
    tokio::spawn(async move { listener.serve(server).await })
}

/// A test PKI: a CA, a server certificate for 127.0.0.1 and localhost, and a client certificate.
pub struct Pki {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub client_cert_der: CertificateDer<'static>,
    pub client_key_der: Vec<u8>,
    pub client_cert_pem: String,
    pub client_key_pem: String,
}

fn ca(name: &str) -> (CertificateParams, KeyPair, rcgen::Certificate) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let certificate = params.self_signed(&key).unwrap();
    (params, key, certificate)
}

impl Pki {
    pub fn new() -> Self {
        Self::with_client_ca("Test CA")
    }

    /// A PKI whose client certificate is issued by a CA of its own (for "wrong CA" tests)
    /// when `client_ca` differs from the server's CA name.
    pub fn with_client_ca(client_ca: &str) -> Self {
        let (ca_params, ca_key, ca_cert) = ca("Test CA");
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "broker");
        server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(vec![
            "device-1.example.com".to_owned(),
            "10.0.0.7".to_owned(),
        ])
        .unwrap();
        client_params
            .distinguished_name
            .push(DnType::CommonName, "device-1");
        client_params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = if client_ca == "Test CA" {
            client_params.signed_by(&client_key, &issuer).unwrap()
        } else {
            let (other_params, other_key, _) = ca(client_ca);
            let other = Issuer::new(other_params, other_key);
            client_params.signed_by(&client_key, &other).unwrap()
        };
        Self {
            ca_pem: ca_cert.pem(),
            ca_der: ca_cert.der().clone(),
            server_cert_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
            client_cert_der: client_cert.der().clone(),
            client_key_der: client_key.serialize_der(),
            client_cert_pem: client_cert.pem(),
            client_key_pem: client_key.serialize_pem(),
        }
    }

    /// The server side, with a generous handshake timeout (a loaded machine must not fail a
    /// real handshake).
    pub fn server_tls(&self, client_ca: bool) -> TlsConfig {
        self.server_tls_with_timeout(client_ca, TIMEOUT)
    }

    /// The server side with this handshake timeout.
    pub fn server_tls_with_timeout(&self, client_ca: bool, timeout: Duration) -> TlsConfig {
        let builder = TlsConfig::builder_from_pem(
            self.server_cert_pem.as_bytes(),
            self.server_key_pem.as_bytes(),
        )
        .unwrap()
        .handshake_timeout(timeout);
        let builder = if client_ca {
            builder.client_ca_pem(self.ca_pem.as_bytes()).unwrap()
        } else {
            builder
        };
        builder.build().unwrap()
    }

    /// A client that trusts the test CA, optionally presenting the client certificate.
    pub fn connector(&self, with_client_certificate: bool) -> TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_client_certificate {
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(self.client_key_der.clone().into());
            builder
                .with_client_auth_cert(vec![self.client_cert_der.clone()], key)
                .unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// Connects with TLS to `address`, checking the server's certificate for 127.0.0.1.
pub async fn tls_connect(
    connector: &TlsConnector,
    address: std::net::SocketAddr,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))?
}

/// A v3.1.1 CONNECT with a clean session and this client id.
pub fn connect_bytes(client_id: &str) -> Vec<u8> {
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    frame(0x10, &body)
}

/// A v3.1.1 SUBSCRIBE at QoS 0 with packet id 1.
pub fn subscribe_bytes(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&u16::try_from(filter.len()).unwrap().to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    frame(0x82, &body)
}

/// A QoS 0 PUBLISH.
pub fn publish_bytes(topic: &str, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&u16::try_from(topic.len()).unwrap().to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    frame(0x30, &body)
}

fn frame(first: u8, body: &[u8]) -> Vec<u8> {
    assert!(body.len() < 128, "test packets are small");
    let mut packet = vec![first, u8::try_from(body.len()).unwrap()];
    packet.extend_from_slice(body);
    packet
}

/// Reads one packet (v3.1.1) from `stream`, keeping leftover bytes in `buffer`. `None` at the
/// end of the stream.
pub async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> Option<Packet> {
    let context = DecodeContext::new(Protocol::V3_1_1);
    tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(packet) = decode(buffer, &context).unwrap() {
                return Some(packet);
            }
            if stream.read_buf(buffer).await.ok()? == 0 {
                return None;
            }
        }
    })
    .await
    .expect("no packet within the timeout")
}

/// CONNECT, SUBSCRIBE to `topic`, PUBLISH to it, and expect the message back: a full round
/// trip over any byte stream.
pub async fn round_trip<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    client_id: &str,
    topic: &str,
) {
    let mut buffer = BytesMut::new();
    stream.write_all(&connect_bytes(client_id)).await.unwrap();
    stream.flush().await.unwrap();
    match read_packet(stream, &mut buffer).await {
        Some(Packet::ConnAck(_)) => {}
        other => panic!("expected CONNACK, got {other:?}"),
    }
    stream.write_all(&subscribe_bytes(topic)).await.unwrap();
    stream.flush().await.unwrap();
    match read_packet(stream, &mut buffer).await {
        Some(Packet::SubAck(_)) => {}
        other => panic!("expected SUBACK, got {other:?}"),
    }
    stream
        .write_all(&publish_bytes(topic, b"hello"))
        .await
        .unwrap();
    stream.flush().await.unwrap();
    match read_packet(stream, &mut buffer).await {
        Some(Packet::Publish(publish)) => assert_eq!(&publish.payload[..], b"hello"),
        other => panic!("expected PUBLISH, got {other:?}"),
    }
}

/// Waits until `condition` holds, polling; panics after [`TIMEOUT`].
pub async fn eventually(mut condition: impl FnMut() -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("condition not met within the timeout");
}
