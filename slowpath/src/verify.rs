//! The upstream connections' certificate verifier, once: what the relay and
//! the probe do with the server's chain differs (a [`ChainJudge`]), while the
//! handshake signatures are always verified the same way, so that a server
//! must hold the key of the certificate it shows.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ahash::RandomState;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

/// Verdicts a [`ServerTrust`] remembers at most (then it starts over).
const VERDICTS: usize = 4096;

/// What the relays of one trust store share on a slow-path lcore: the crypto
/// provider, the verifier of servers' chains, and its verdicts.
///
/// A server shows the same chain session after session, and verifying it
/// (path building and a signature check per link) is a good part of a
/// decrypted session's handshake. A verdict depends on the chain, the name
/// and the trust store (fixed here) and, through validity, on the time: one
/// is reused only while every certificate of the chain is within its
/// validity, as it was when the verdict was reached, so a reused verdict is
/// the one verifying again would give. Chains with a certificate that does
/// not parse or is outside its validity are verified every time.
#[derive(Debug)]
pub struct ServerTrust {
    provider: Arc<CryptoProvider>,
    webpki: Option<Arc<WebPkiServerVerifier>>,
    /// By the SHA-256 of the name and the chain.
    verdicts: Mutex<HashMap<[u8; 32], Verdict, RandomState>>,
    reused: AtomicU64,
    verified: AtomicU64,
}

#[derive(Debug, Clone, Copy)]
struct Verdict {
    trusted: bool,
    /// The span every certificate of the chain is valid in (Unix seconds, inclusive).
    from: u64,
    until: u64,
}

impl ServerTrust {
    /// Chains judged against `roots` (with none, no chain is trusted).
    pub fn new(roots: RootCertStore) -> Arc<ServerTrust> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let webpki = if roots.is_empty() {
            None
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone()).build().ok()
        };
        Arc::new(ServerTrust {
            provider,
            webpki,
            verdicts: Mutex::new(HashMap::default()),
            reused: AtomicU64::new(0),
            verified: AtomicU64::new(0),
        })
    }

    /// The provider every relay of this trust store uses, both ways.
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// Whether the chain verifies for `name` at `now`.
    pub fn trusted(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> bool {
        let Some(webpki) = &self.webpki else { return false };
        let mut h = Sha256::new();
        let name_text = name.to_str();
        let parts =
            [name_text.as_bytes(), end_entity.as_ref()].into_iter().chain(intermediates.iter().map(|c| c.as_ref()));
        for part in parts {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        let key: [u8; 32] = h.finalize().into();
        let t = now.as_secs();
        let lock = || self.verdicts.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(v) = lock().get(&key).filter(|v| v.from <= t && t <= v.until) {
            self.reused.fetch_add(1, Ordering::Relaxed);
            return v.trusted;
        }
        self.verified.fetch_add(1, Ordering::Relaxed);
        let trusted = webpki.verify_server_cert(end_entity, intermediates, name, ocsp_response, now).is_ok();
        if let Some((from, until)) = validity(std::iter::once(end_entity).chain(intermediates)) {
            if from <= t && t <= until {
                let mut verdicts = lock();
                if verdicts.len() >= VERDICTS {
                    verdicts.clear();
                }
                verdicts.insert(key, Verdict { trusted, from, until });
            }
        }
        trusted
    }

    /// Verdicts reused, and chains verified.
    pub fn stats(&self) -> (u64, u64) {
        (self.reused.load(Ordering::Relaxed), self.verified.load(Ordering::Relaxed))
    }
}

/// The span (Unix seconds, inclusive) in which every certificate is within
/// its validity; None when one does not parse or the span is empty.
fn validity<'a, 'b: 'a>(certs: impl Iterator<Item = &'a CertificateDer<'b>>) -> Option<(u64, u64)> {
    let (mut from, mut until) = (0u64, u64::MAX);
    for c in certs {
        let (_, cert) = x509_parser::parse_x509_certificate(c.as_ref()).ok()?;
        let v = &cert.tbs_certificate.validity;
        from = from.max(u64::try_from(v.not_before.timestamp()).unwrap_or(0));
        until = until.min(u64::try_from(v.not_after.timestamp()).ok()?);
    }
    (from <= until).then_some((from, until))
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use std::time::Duration;

    const DAY: i64 = 86_400;
    /// 2027-01-15.
    const T: i64 = 1_800_000_000;

    fn params(cn: &str, names: &[&str], ca: bool, from: i64, until: i64) -> CertificateParams {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        if ca {
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        }
        p.not_before = time::OffsetDateTime::from_unix_timestamp(from).unwrap();
        p.not_after = time::OffsetDateTime::from_unix_timestamp(until).unwrap();
        p
    }

    /// A root, an intermediate valid from T-10d to T+20d, and a leaf for
    /// shop.test valid from T-30d to T+10d: the chain is valid T-10d..T+10d.
    fn chain() -> (RootCertStore, CertificateDer<'static>, CertificateDer<'static>) {
        let (root_key, int_key, leaf_key) =
            (KeyPair::generate().unwrap(), KeyPair::generate().unwrap(), KeyPair::generate().unwrap());
        let root = params("Root", &[], true, T - 1000 * DAY, T + 1000 * DAY).self_signed(&root_key).unwrap();
        let int = params("Intermediate", &[], true, T - 10 * DAY, T + 20 * DAY)
            .signed_by(&int_key, &root, &root_key)
            .unwrap();
        let leaf = params("shop.test", &["shop.test"], false, T - 30 * DAY, T + 10 * DAY)
            .signed_by(&leaf_key, &int, &int_key)
            .unwrap();
        let mut roots = RootCertStore::empty();
        roots.add(root.der().clone()).unwrap();
        (roots, leaf.der().clone(), int.der().clone())
    }

    fn at(t: i64) -> UnixTime {
        UnixTime::since_unix_epoch(Duration::from_secs(t as u64))
    }

    #[test]
    fn a_verdict_is_reused_only_for_the_same_chain_and_name_while_every_certificate_is_valid() {
        let (roots, leaf, int) = chain();
        let trust = ServerTrust::new(roots);
        let shop = ServerName::try_from("shop.test").unwrap();
        let other = ServerName::try_from("other.test").unwrap();
        let ints = [int];
        assert!(trust.trusted(&leaf, &ints, &shop, &[], at(T)));
        assert_eq!(trust.stats(), (0, 1));
        assert!(trust.trusted(&leaf, &ints, &shop, &[], at(T + 9 * DAY)));
        assert_eq!(trust.stats(), (1, 1), "the same chain and name within the chain's validity");
        // Another name, or the chain without its intermediate: verdicts of their own.
        assert!(!trust.trusted(&leaf, &ints, &other, &[], at(T)));
        assert!(!trust.trusted(&leaf, &[], &shop, &[], at(T)));
        assert_eq!(trust.stats(), (1, 3));
        assert!(!trust.trusted(&leaf, &ints, &other, &[], at(T)));
        assert!(!trust.trusted(&leaf, &[], &shop, &[], at(T)));
        assert_eq!(trust.stats(), (3, 3), "untrusted verdicts are reused too");
        // Past the leaf's end, before the intermediate's start: verified again.
        assert!(!trust.trusted(&leaf, &ints, &shop, &[], at(T + 10 * DAY + 1)));
        assert!(!trust.trusted(&leaf, &ints, &shop, &[], at(T - 10 * DAY - 1)));
        assert_eq!(trust.stats(), (3, 5));
    }

    /// Whatever is remembered, each answer is the one a fresh verifier gives,
    /// at and around every validity boundary of the chain.
    #[test]
    fn every_answer_is_what_verifying_afresh_gives() {
        let (roots, leaf, int) = chain();
        let fresh = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots.clone()),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .unwrap();
        let trust = ServerTrust::new(roots);
        let ints = [int];
        let names = [ServerName::try_from("shop.test").unwrap(), ServerName::try_from("other.test").unwrap()];
        let mut times = vec![T];
        for edge in [T - 30 * DAY, T - 10 * DAY, T + 10 * DAY, T + 20 * DAY] {
            times.extend([edge - 1, edge, edge + 1]);
        }
        // Each time twice over, in an order that goes back and forth.
        let order: Vec<i64> = times.iter().chain(times.iter().rev()).copied().collect();
        for &t in &order {
            for name in &names {
                for chain in [&ints[..], &[]] {
                    let want = fresh.verify_server_cert(&leaf, chain, name, &[], at(t)).is_ok();
                    assert_eq!(trust.trusted(&leaf, chain, name, &[], at(t)), want, "{name:?} at T{:+}", t - T);
                }
            }
        }
        let (reused, verified) = trust.stats();
        assert!(reused > 0 && verified > 0, "{reused} reused, {verified} verified");
    }

    #[test]
    fn without_a_trust_store_nothing_is_trusted_or_verified() {
        let (_, leaf, int) = chain();
        let trust = ServerTrust::new(RootCertStore::empty());
        assert!(!trust.trusted(&leaf, &[int], &ServerName::try_from("shop.test").unwrap(), &[], at(T)));
        assert_eq!(trust.stats(), (0, 0));
    }
}
