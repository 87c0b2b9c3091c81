//! The upstream connections' certificate verifier, once: what the relay and
//! the probe do with the server's chain differs (a [`ChainJudge`]), while the
//! handshake signatures are always verified the same way, so that a server
//! must hold the key of the certificate it shows.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// What a verifier does with the chain the server presents.
pub(crate) trait ChainJudge: std::fmt::Debug + Send + Sync {
    /// Judges the chain; an error ends the handshake.
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error>;
}

/// A rustls verifier: the chain goes to `J`, signatures to the provider.
#[derive(Debug)]
pub(crate) struct UpstreamVerifier<J> {
    judge: J,
    provider: Arc<CryptoProvider>,
}

impl<J: ChainJudge> UpstreamVerifier<J> {
    /// With `judge`, verifying signatures with `provider`'s algorithms.
    pub(crate) fn new(judge: J, provider: Arc<CryptoProvider>) -> Self {
        UpstreamVerifier { judge, provider }
    }
}

impl<J: ChainJudge> ServerCertVerifier for UpstreamVerifier<J> {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.judge.judge(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
