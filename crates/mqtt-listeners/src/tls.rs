//! TLS over any byte stream with rustls (ring provider): certificates and keys from PEM,
//! optional client-certificate verification, TLS 1.2 and 1.3, and a handshake timeout.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mqtt_broker::TlsInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use x509_parser::extensions::GeneralName;

use crate::ListenerError;

/// The default time a client has to finish the TLS handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS server configuration for the TCP and WebSocket listeners. Cheap to clone.
///
/// Build one with [`TlsConfig::builder_from_pem`] (or the file and DER variants), or wrap a
/// complete [`rustls::ServerConfig`] with [`TlsConfig::from_server_config`].
#[derive(Clone)]
pub struct TlsConfig {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// Builds a [`TlsConfig`]: the server's certificate chain and key, an optional CA for client
/// certificates, and the handshake timeout.
pub struct TlsConfigBuilder {
    certificate_chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
    client_ca: Option<RootCertStore>,
    client_certificate_required: bool,
    handshake_timeout: Duration,
    alpn_protocols: Vec<Vec<u8>>,
}

impl fmt::Debug for TlsConfigBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfigBuilder")
            .field("certificates", &self.certificate_chain.len())
            .field(
                "client_ca",
                &self.client_ca.as_ref().map(RootCertStore::len),
            )
            .field(
                "client_certificate_required",
                &self.client_certificate_required,
            )
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

fn tls_error(what: &str, error: impl fmt::Display) -> ListenerError {
    ListenerError::Tls(format!("{what}: {error}"))
}

fn certificates_from_pem(
    pem: &[u8],
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, ListenerError> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| tls_error(what, error))?;
    if certificates.is_empty() {
        return Err(ListenerError::Tls(format!("{what}: no certificate in PEM")));
    }
    Ok(certificates)
}

async fn read_file(path: &Path) -> Result<Vec<u8>, ListenerError> {
    tokio::fs::read(path)
        .await
        .map_err(|error| tls_error(&path.display().to_string(), error))
}

impl TlsConfig {
    /// A builder from a PEM certificate chain (leaf first) and a PEM private key (PKCS#8,
    /// PKCS#1 or SEC1).
    pub fn builder_from_pem(
        certificate_chain_pem: &[u8],
        private_key_pem: &[u8],
    ) -> Result<TlsConfigBuilder, ListenerError> {
        let certificate_chain = certificates_from_pem(certificate_chain_pem, "certificate")?;
        let private_key = PrivateKeyDer::from_pem_slice(private_key_pem)
            .map_err(|error| tls_error("private key", error))?;
        Ok(TlsConfigBuilder::new(certificate_chain, private_key))
    }

    /// [`TlsConfig::builder_from_pem`] with the PEM read from two files.
    pub async fn builder_from_pem_files(
        certificate_chain: impl AsRef<Path>,
        private_key: impl AsRef<Path>,
    ) -> Result<TlsConfigBuilder, ListenerError> {
        let certificate_chain = read_file(certificate_chain.as_ref()).await?;
        let private_key = read_file(private_key.as_ref()).await?;
        Self::builder_from_pem(&certificate_chain, &private_key)
    }

    /// A builder from a DER certificate chain (leaf first) and a DER private key.
    pub fn builder_from_der(
        certificate_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKeyDer<'static>,
    ) -> TlsConfigBuilder {
        TlsConfigBuilder::new(certificate_chain, private_key)
    }

    /// Wraps a complete rustls configuration, for settings the builder does not offer.
    pub fn from_server_config(config: Arc<ServerConfig>, handshake_timeout: Duration) -> Self {
        Self {
            acceptor: TlsAcceptor::from(config),
            handshake_timeout,
        }
    }

    /// The time a client has to finish the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the server side of the handshake on `stream`, within the handshake timeout.
    pub(crate) async fn accept<S>(&self, stream: S) -> Result<(TlsStream<S>, TlsInfo), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let handshake = self.acceptor.accept(stream);
        let stream = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Err(_) => return Err("TLS handshake timed out".to_owned()),
            Ok(Err(error)) => return Err(format!("TLS handshake failed: {error}")),
            Ok(Ok(stream)) => stream,
        };
        let info = tls_info(stream.get_ref().1);
        Ok((stream, info))
    }
}

impl TlsConfigBuilder {
    fn new(
        certificate_chain: Vec<CertificateDer<'static>>,
        private_key: PrivateKeyDer<'static>,
    ) -> Self {
        Self {
            certificate_chain,
            private_key,
            client_ca: None,
            client_certificate_required: true,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            alpn_protocols: Vec::new(),
        }
    }

    /// Verifies client certificates against these PEM CA certificates. By default a client
    /// without a certificate is then refused; see
    /// [`TlsConfigBuilder::client_certificate_required`].
    pub fn client_ca_pem(mut self, ca_pem: &[u8]) -> Result<Self, ListenerError> {
        let mut roots = self.client_ca.take().unwrap_or_else(RootCertStore::empty);
        for certificate in certificates_from_pem(ca_pem, "client CA")? {
            roots
                .add(certificate)
                .map_err(|error| tls_error("client CA", error))?;
        }
        self.client_ca = Some(roots);
        Ok(self)
    }

    /// [`TlsConfigBuilder::client_ca_pem`] with the PEM read from a file.
    pub async fn client_ca_pem_file(self, path: impl AsRef<Path>) -> Result<Self, ListenerError> {
        let pem = read_file(path.as_ref()).await?;
        self.client_ca_pem(&pem)
    }

    /// With a client CA: whether a client must present a certificate (default `true`). When
    /// `false`, a client without one is accepted, and one with a certificate is still verified.
    pub fn client_certificate_required(mut self, required: bool) -> Self {
        self.client_certificate_required = required;
        self
    }

    /// The time a client has to finish the handshake (default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`]).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// ALPN protocols to offer, in order of preference (default none).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn_protocols = protocols;
        self
    }

    /// Checks the certificate and key and builds the configuration (TLS 1.2 and 1.3, ring).
    pub fn build(self) -> Result<TlsConfig, ListenerError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|error| tls_error("protocol versions", error))?;
        let builder = match self.client_ca {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                let verifier = if self.client_certificate_required {
                    verifier
                } else {
                    verifier.allow_unauthenticated()
                };
                let verifier = verifier
                    .build()
                    .map_err(|error| tls_error("client CA", error))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(self.certificate_chain, self.private_key)
            .map_err(|error| tls_error("certificate and key", error))?;
        config.alpn_protocols = self.alpn_protocols;
        Ok(TlsConfig::from_server_config(
            Arc::new(config),
            self.handshake_timeout,
        ))
    }
}

/// What auth hooks may know about the TLS session: version, the client's certificates, and the
/// subject and subject alternative names of its leaf certificate.
fn tls_info(connection: &rustls::ServerConnection) -> TlsInfo {
    let protocol_version = connection.protocol_version().map(|version| match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_owned(),
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_owned(),
        other => format!("{other:?}"),
    });
    let certificates = connection.peer_certificates().unwrap_or_default();
    let (subject, alt_names) = certificates
        .first()
        .map(|leaf| describe_certificate(leaf))
        .unwrap_or_default();
    TlsInfo::new(
        protocol_version,
        certificates
            .iter()
            .map(|certificate| Bytes::copy_from_slice(certificate))
            .collect(),
        subject,
        alt_names,
    )
}

/// The subject (RFC 4514 style, e.g. `CN=device-1, O=Acme`) and subject alternative names of
/// a DER certificate, each SAN prefixed by its kind as OpenSSL prints them (`DNS:`, `IP:`,
/// `email:`, `URI:`).
pub(crate) fn describe_certificate(der: &[u8]) -> (Option<String>, Vec<String>) {
    let Ok((_, certificate)) = x509_parser::parse_x509_certificate(der) else {
        return (None, Vec::new());
    };
    let subject = Some(certificate.subject().to_string());
    let mut alt_names = Vec::new();
    if let Ok(Some(extension)) = certificate.subject_alternative_name() {
        for name in &extension.value.general_names {
            match name {
                GeneralName::DNSName(dns) => alt_names.push(format!("DNS:{dns}")),
                GeneralName::RFC822Name(email) => alt_names.push(format!("email:{email}")),
                GeneralName::URI(uri) => alt_names.push(format!("URI:{uri}")),
                GeneralName::IPAddress(bytes) => {
                    let address = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(address) = address {
                        alt_names.push(format!("IP:{address}"));
                    }
                }
                _ => {}
            }
        }
    }
    (subject, alt_names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_certificates_have_no_subject() {
        assert_eq!(describe_certificate(b""), (None, Vec::new()));
        assert_eq!(
            describe_certificate(&[0x30, 0x82, 0xff]),
            (None, Vec::new())
        );
    }
}
