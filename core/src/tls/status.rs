//! The status of a server's certificate chain (valid, expired, self-signed,
//! untrusted issuer, bad signature, revoked, name mismatch ...), judged with
//! rustls-webpki against the configured trust anchors and CRLs.
//!
//! Chain verification is the costly part, and its verdict does not depend on
//! the time a session is seen: [`CertVerifier`] judges each chain once, at a
//! fixed time inside the leaf's validity window (notBefore + 1 s), and caches
//! that verdict by the chain's fingerprints. The leaf's own dates are compared
//! with `now` on every call, and the name with the SNI. A consequence, chosen
//! on purpose: an intermediate's expiry is judged at the leaf's time, not at
//! `now` (an intermediate already expired when the leaf was issued makes the
//! chain `invalid-issuer`; one that expired later goes unnoticed until the
//! leaf expires too, which for public CAs cannot happen before).

use std::collections::HashMap;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use sha2::{Digest as _, Sha256};
use tlsgate_config::facts::{CertStatus, CertStatusSet};
use webpki::{
    CertRevocationList, EndEntityCert, Error as WebpkiError, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy,
};

use super::certificate::names_and_validity;

/// Chains whose verdict is kept; when full, the cache is emptied.
const CACHE_ENTRIES: usize = 4096;

/// Judges certificate chains against trust anchors and CRLs.
pub struct CertVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    crls: Vec<CertRevocationList<'static>>,
    cache: HashMap<ChainKey, ChainVerdict>,
}

/// SHA-256 of the leaf, and of the rest of the chain.
type ChainKey = ([u8; 32], [u8; 32]);

/// What does not depend on `now` or the SNI.
#[derive(Debug, Clone, Copy)]
struct ChainVerdict {
    /// Statuses from verification (empty: the chain verified).
    statuses: CertStatusSet,
    not_before: i64,
    not_after: i64,
}

impl CertVerifier {
    /// A verifier trusting the DER certificates `anchors` and checking
    /// revocation with the DER CRLs `crls`.
    pub fn new(anchors: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<CertVerifier, String> {
        let anchors = anchors
            .iter()
            .enumerate()
            .map(|(i, der)| {
                let der = CertificateDer::from(der.as_slice());
                webpki::anchor_from_trusted_cert(&der)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("trust anchor #{} cannot be used: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let crls = crls
            .iter()
            .enumerate()
            .map(|(i, der)| {
                OwnedCertRevocationList::from_der(der)
                    .map(CertRevocationList::from)
                    .map_err(|e| format!("CRL #{} cannot be used: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertVerifier { anchors, crls, cache: HashMap::new() })
    }

    /// Statuses of `chain` (DER, leaf first) for a session to `sni` at
    /// `now_unix` (seconds since the Unix epoch).
    pub fn status(&mut self, chain: &[Vec<u8>], sni: Option<&str>, now_unix: i64) -> CertStatusSet {
        let mut set = CertStatusSet::default();
        let Some(leaf) = chain.first() else {
            set.insert(CertStatus::InvalidCertificate);
            return set;
        };
        let key = chain_key(chain);
        let verdict = match self.cache.get(&key) {
            Some(v) => *v,
            None => {
                let v = self.verify(chain);
                if self.cache.len() >= CACHE_ENTRIES {
                    self.cache.clear();
                }
                self.cache.insert(key, v);
                v
            }
        };
        set.0 |= verdict.statuses.0;
        if now_unix > verdict.not_after {
            set.insert(CertStatus::Expired);
        } else if now_unix < verdict.not_before {
            set.insert(CertStatus::NotYetValid);
        }
        if !verdict.statuses.contains(CertStatus::InvalidCertificate) {
            if let Some(name) = sni {
                if !matches_name(leaf, name) {
                    set.insert(CertStatus::ServerMismatch);
                }
            }
        }
        // Valid: none of the other statuses, name mismatch aside (it depends
        // on the SNI asked for, not on the certificate).
        let trouble = CertStatus::ALL.iter().filter(|s| !matches!(s, CertStatus::Valid | CertStatus::ServerMismatch));
        if !trouble.into_iter().any(|s| set.contains(*s)) {
            set.insert(CertStatus::Valid);
        }
        set
    }

    /// Number of chains whose verdict is cached.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The time-independent verdict for a chain.
    fn verify(&self, chain: &[Vec<u8>]) -> ChainVerdict {
        let mut statuses = CertStatusSet::default();
        statuses.insert(CertStatus::InvalidCertificate);
        // Unknown dates never make a certificate expired or not yet valid.
        let unreadable = ChainVerdict { statuses, not_before: i64::MIN, not_after: i64::MAX };
        let Some(leaf_der) = chain.first() else { return unreadable };
        let Some((subject, issuer, not_before, not_after)) = names_and_validity(leaf_der) else { return unreadable };
        let leaf = CertificateDer::from(leaf_der.as_slice());
        // webpki refuses some certificates x509-parser reads (DER lengths
        // over 64 KiB, for one): invalid, but their dates still count.
        let Ok(end_entity) = EndEntityCert::try_from(&leaf) else {
            return ChainVerdict { statuses, not_before, not_after };
        };
        let mut statuses = CertStatusSet::default();
        let intermediates: Vec<CertificateDer<'_>> =
            chain.iter().skip(1).map(|c| CertificateDer::from(c.as_slice())).collect();
        let at = judging_time(not_before, not_after);
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Ignore)
                .build()
        });
        let self_issued = subject == issuer;
        let result = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            at,
            KeyUsage::server_auth(),
            revocation,
            None,
        );
        match result {
            Ok(_) => {
                if self_issued && self_signature_verifies(&end_entity, &leaf, at) {
                    statuses.insert(CertStatus::SelfSigned);
                }
            }
            // No trusted issuer for a leaf that names itself as its issuer:
            // self-signed (not also invalid-issuer).
            Err(WebpkiError::UnknownIssuer) if self_issued => statuses.insert(CertStatus::SelfSigned),
            Err(e) => {
                statuses.insert(status_of(&e));
                if self_issued && self_signature_verifies(&end_entity, &leaf, at) {
                    statuses.insert(CertStatus::SelfSigned);
                }
            }
        }
        ChainVerdict { statuses, not_before, not_after }
    }
}

/// The moment at which the chain is judged: one second into the leaf's
/// validity (clamped into the window, and to the epoch).
fn judging_time(not_before: i64, not_after: i64) -> UnixTime {
    let t = not_before.saturating_add(1).min(not_after).max(not_before).max(0);
    UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(t).unwrap_or(0)))
}

/// Whether the leaf verifies with its own key (taken as its own anchor).
fn self_signature_verifies(end_entity: &EndEntityCert<'_>, leaf: &CertificateDer<'_>, at: UnixTime) -> bool {
    let Ok(anchor) = webpki::anchor_from_trusted_cert(leaf) else { return false };
    let anchors = [anchor];
    match end_entity.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &[],
        at,
        KeyUsage::server_auth(),
        None,
        None,
    ) {
        Ok(_) => true,
        // The signature checked out; the certificate's profile (a CA
        // certificate used as a server's, a missing EKU) is another matter.
        Err(e) => !matches!(status_of(&e), CertStatus::InvalidSignature | CertStatus::InvalidIssuer),
    }
}

fn matches_name(leaf_der: &[u8], name: &str) -> bool {
    let leaf = CertificateDer::from(leaf_der);
    let Ok(end_entity) = EndEntityCert::try_from(&leaf) else { return false };
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    end_entity.verify_is_valid_for_subject_name(&server_name).is_ok()
}

fn chain_key(chain: &[Vec<u8>]) -> ChainKey {
    let leaf: [u8; 32] = Sha256::digest(chain.first().map(Vec::as_slice).unwrap_or_default()).into();
    let mut rest = Sha256::new();
    for cert in chain.iter().skip(1) {
        rest.update((cert.len() as u64).to_be_bytes());
        rest.update(cert);
    }
    (leaf, rest.finalize().into())
}

/// The status a webpki error stands for.
fn status_of(e: &WebpkiError) -> CertStatus {
    use WebpkiError as E;
    match e {
        E::UnknownIssuer
        | E::CertDistrusted
        // An intermediate outside its validity at the leaf's time.
        | E::CertExpired { .. }
        | E::CertNotValidYet { .. }
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumPathDepthExceeded
        | E::MaximumSignatureChecksExceeded
        | E::MaximumNameConstraintComparisonsExceeded => CertStatus::InvalidIssuer,
        // Signatures webpki cannot check (SHA-1, MD5, odd key sizes) do not verify either.
        E::InvalidSignatureForPublicKey
        | E::SignatureAlgorithmMismatch
        | E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_) => CertStatus::InvalidSignature,
        E::CertRevoked => CertStatus::Revoked,
        E::CrlExpired { .. }
        | E::InvalidCrlNumber
        | E::InvalidCrlSignatureForPublicKey
        | E::IssuerNotCrlSigner
        | E::UnknownRevocationStatus
        | E::UnsupportedCrlIssuingDistributionPoint
        | E::UnsupportedCrlVersion
        | E::UnsupportedDeltaCrl
        | E::UnsupportedIndirectCrl
        | E::UnsupportedRevocationReason
        | E::UnsupportedRevocationReasonsPartitioning
        | E::UnsupportedCrlSignatureAlgorithmContext(_)
        | E::UnsupportedCrlSignatureAlgorithmForPublicKeyContext(_) => CertStatus::InvalidCrl,
        // Encoding and profile faults (bad DER, CA used as end entity, wrong
        // EKU, name constraints, unsupported critical extension ...).
        _ => CertStatus::InvalidCertificate,
    }
}
