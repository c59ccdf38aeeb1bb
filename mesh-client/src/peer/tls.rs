//! The TLS layer of a peer connection: encryption, and the exporter secret the handshake
//! signs. Nobody checks the TLS certificates: a listener makes a self-signed one when it
//! starts, and authentication happens in the handshake above, bound to the connection by the
//! exporter (RFC 5705/8446 §7.5). TLS 1.3 only (TLS 1.2's exporter is not bound to the
//! handshake without extended master secret).

use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::crypto::{self, CryptoProvider, WebPkiSupportedAlgorithms};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use tokio_rustls::rustls::{self, ClientConfig, DigitallySignedStruct, ServerConfig};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use crate::peer::PeerError;

/// The exporter label of the peer handshake.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-mesh-peer-v1";

/// The exporter secret's length.
pub(crate) const EXPORTER_LEN: usize = 32;

/// The server name a connecting peer sends (no certificate is checked against it).
const SERVER_NAME: &str = "mesh-peer";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

fn tls_error(e: impl std::fmt::Display) -> PeerError {
    PeerError::Tls(e.to_string())
}

/// A listener's TLS configuration, with a fresh self-signed certificate.
pub(crate) fn acceptor() -> Result<TlsAcceptor, PeerError> {
    let made =
        rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_string()]).map_err(tls_error)?;
    let cert = CertificateDer::from(made.cert.der().to_vec());
    let key = PrivatePkcs8KeyDer::from(made.signing_key.serialize_der());
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_no_client_auth()
        .with_single_cert(vec![cert], key.into())
        .map_err(tls_error)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A connecting peer's TLS configuration: any certificate is accepted (the handshake above
/// authenticates), but the server must still prove it holds that certificate's key.
pub(crate) fn connector() -> Result<TlsConnector, PeerError> {
    let provider = provider();
    let verifier = AnyCertificate(provider.signature_verification_algorithms);
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens TLS on `tcp` as the connecting side; the stream and its exporter secret.
pub(crate) async fn connect(
    connector: &TlsConnector,
    tcp: TcpStream,
) -> Result<(client::TlsStream<TcpStream>, [u8; EXPORTER_LEN]), PeerError> {
    let name = ServerName::try_from(SERVER_NAME).map_err(tls_error)?;
    let stream = connector.connect(name, tcp).await.map_err(tls_error)?;
    let secret = stream
        .get_ref()
        .1
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(tls_error)?;
    Ok((stream, secret))
}

/// Opens TLS on `tcp` as the listening side; the stream and its exporter secret.
pub(crate) async fn accept(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
) -> Result<(server::TlsStream<TcpStream>, [u8; EXPORTER_LEN]), PeerError> {
    let stream = acceptor.accept(tcp).await.map_err(tls_error)?;
    let secret = stream
        .get_ref()
        .1
        .export_keying_material([0u8; EXPORTER_LEN], EXPORTER_LABEL, None)
        .map_err(tls_error)?;
    Ok((stream, secret))
}

/// Accepts any server certificate and checks the handshake signatures made with its key.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
