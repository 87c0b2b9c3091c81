//! The status of a server's certificate chain (valid, expired, self-signed,
//! untrusted issuer, bad signature, revoked, name mismatch ...), judged with
//! rustls-webpki (RFC 5280 path building: basic constraints, path length,
//! name constraints, the serverAuth EKU) against the configured trust
//! anchors and CRLs.
//!
//! The whole path is judged at the packet's time: an intermediate or a root
//! past its validity makes the chain `invalid-issuer`, a CRL past its
//! nextUpdate makes it `invalid-crl`. The leaf's own dates give `expired` and
//! `not-yet-valid`; so that a leaf out of its dates still has the rest of its
//! chain judged, the chain is judged at the packet's time brought into the
//! leaf's validity.
//!
//! Verification is the costly part, so [`CertVerifier`] caches each chain's
//! verdict by the chain's fingerprints, with the span of time over which it
//! holds: between the nearest of the dates that can change it (any
//! certificate's notBefore and notAfter, a trust anchor's, a CRL's
//! nextUpdate) before and after the time judged. A packet outside that span
//! has the chain judged again.

use std::collections::HashMap;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use tlsgate_config::facts::{CertStatus, CertStatusSet};
use webpki::{
    CertRevocationList, EndEntityCert, Error as WebpkiError, ExpirationPolicy, KeyUsage, OwnedCertRevocationList,
    RevocationCheckDepth, RevocationOptionsBuilder, UnknownStatusPolicy, VerifiedPath,
};

use super::certificate::names_and_validity;

/// Chains whose verdict is kept (with the chain: a few KiB each); when full,
/// the cache is emptied.
const CACHE_ENTRIES: usize = 2048;

/// Judges certificate chains against trust anchors and CRLs.
pub struct CertVerifier {
    anchors: Vec<TrustAnchor<'static>>,
    /// Each anchor's validity (notBefore, notAfter), by index.
    anchor_dates: Vec<(i64, i64)>,
    crls: Vec<CertRevocationList<'static>>,
    /// Dates at which a CRL's verdicts change (thisUpdate, nextUpdate).
    crl_dates: Vec<i64>,
    /// Verdicts by a keyed hash of the chain; each entry holds its chain, so
    /// a colliding chain never inherits another's verdict.
    cache: HashMap<u64, Cached, ahash::RandomState>,
}

/// A cached verdict, with the chain it is for and the last name matched.
#[derive(Debug)]
struct Cached {
    /// The chain's certificates, each behind its 4-byte length.
    chain: Vec<u8>,
    verdict: ChainVerdict,
    /// The last SNI checked against the leaf, and whether it matched
    /// (sessions to a server ask for the same name).
    last_name: Option<(String, bool)>,
}

/// What verification said of a chain, and over which span of time it holds.
#[derive(Debug, Clone, Copy)]
struct ChainVerdict {
    /// Statuses from verification (empty: the chain verified).
    statuses: CertStatusSet,
    /// webpki could read the leaf, so its names can be matched to an SNI.
    names_readable: bool,
    /// The leaf's dates.
    not_before: i64,
    not_after: i64,
    /// The span (from, until: exclusive) over which `statuses` hold.
    from: i64,
    until: i64,
}

impl CertVerifier {
    /// A verifier trusting the DER certificates `anchors` and checking
    /// revocation with the DER CRLs `crls`.
    pub fn new(anchors: &[Vec<u8>], crls: &[Vec<u8>]) -> Result<CertVerifier, String> {
        let mut anchor_dates = Vec::new();
        let anchors = anchors
            .iter()
            .enumerate()
            .map(|(i, der)| {
                // A root without readable dates is taken as always valid.
                anchor_dates.push(names_and_validity(der).map_or((i64::MIN, i64::MAX), |(_, _, nb, na)| (nb, na)));
                let der = CertificateDer::from(der.as_slice());
                webpki::anchor_from_trusted_cert(&der)
                    .map(|a| a.to_owned())
                    .map_err(|e| format!("trust anchor #{} cannot be used: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut crl_dates = Vec::new();
        let crls = crls
            .iter()
            .enumerate()
            .map(|(i, der)| {
                use x509_parser::prelude::FromDer as _;
                if let Ok((_, crl)) = x509_parser::revocation_list::CertificateRevocationList::from_der(der) {
                    crl_dates.push(crl.last_update().timestamp());
                    crl_dates.extend(crl.next_update().map(|t| t.timestamp()));
                }
                OwnedCertRevocationList::from_der(der).map(CertRevocationList::from).map_err(|e| {
                    let why = tlsgate_config::check_crl(der).err().unwrap_or_else(|| e.to_string());
                    format!("CRL #{} cannot be used: {why}", i + 1)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CertVerifier { anchors, anchor_dates, crls, crl_dates, cache: HashMap::default() })
    }

    /// Statuses of `chain` (DER, leaf first) for a session to `sni` at
    /// `now_unix` (seconds since the Unix epoch).
    pub fn status(&mut self, chain: &[Vec<u8>], sni: Option<&str>, now_unix: i64) -> CertStatusSet {
        let mut set = CertStatusSet::default();
        let Some(leaf) = chain.first() else {
            set.insert(CertStatus::InvalidCertificate);
            return set;
        };
        let key = {
            use std::hash::{BuildHasher as _, Hasher as _};
            let mut h = self.cache.hasher().build_hasher();
            for cert in chain {
                h.write_u32(cert.len() as u32);
                h.write(cert);
            }
            h.finish()
        };
        let fresh = match self.cache.get(&key) {
            Some(c) => !is_flat(&c.chain, chain) || now_unix < c.verdict.from || now_unix >= c.verdict.until,
            None => true,
        };
        if fresh {
            let verdict = self.verify(chain, now_unix);
            if self.cache.len() >= CACHE_ENTRIES {
                self.cache.clear();
            }
            self.cache.insert(key, Cached { chain: flatten(chain), verdict, last_name: None });
        }
        let Some(cached) = self.cache.get_mut(&key) else { return set };
        let verdict = cached.verdict;
        set.0 |= verdict.statuses.0;
        if now_unix > verdict.not_after {
            set.insert(CertStatus::Expired);
        } else if now_unix < verdict.not_before {
            set.insert(CertStatus::NotYetValid);
        }
        // A leaf webpki cannot read cannot be matched to a name either.
        if verdict.names_readable {
            if let Some(name) = sni {
                let matched = match &cached.last_name {
                    Some((last, matched)) if last == name => *matched,
                    _ => {
                        let matched = matches_name(leaf, name);
                        cached.last_name = Some((name.to_string(), matched));
                        matched
                    }
                };
                if !matched {
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

    /// The verdict for a chain at `now`, and the span over which it holds.
    fn verify(&self, chain: &[Vec<u8>], now: i64) -> ChainVerdict {
        let mut statuses = CertStatusSet::default();
        statuses.insert(CertStatus::InvalidCertificate);
        // Unknown dates never make a certificate expired or not yet valid.
        let always = |statuses| ChainVerdict {
            statuses,
            names_readable: false,
            not_before: i64::MIN,
            not_after: i64::MAX,
            from: i64::MIN,
            until: i64::MAX,
        };
        let Some(leaf_der) = chain.first() else { return always(statuses) };
        let Some((subject, issuer, not_before, not_after)) = names_and_validity(leaf_der) else {
            return always(statuses);
        };
        let (from, until) = self.span(chain, now);
        let leaf = CertificateDer::from(leaf_der.as_slice());
        // webpki refuses some certificates x509-parser reads (DER lengths
        // over 64 KiB, an unknown critical extension, a negative serial):
        // they cannot be judged, but their dates still count.
        let Ok(end_entity) = EndEntityCert::try_from(&leaf) else {
            let mut statuses = CertStatusSet::default();
            statuses.insert(CertStatus::Unverified);
            return ChainVerdict { statuses, names_readable: false, not_before, not_after, from, until };
        };
        let mut statuses = CertStatusSet::default();
        let intermediates: Vec<CertificateDer<'_>> =
            chain.iter().skip(1).map(|c| CertificateDer::from(c.as_slice())).collect();
        let at = judging_time(now, not_before, not_after);
        let at_secs = at.as_secs() as i64;
        let crl_refs: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = RevocationOptionsBuilder::new(&crl_refs).ok().map(|b| {
            b.with_depth(RevocationCheckDepth::Chain)
                .with_status_policy(UnknownStatusPolicy::Allow)
                .with_expiration_policy(ExpirationPolicy::Enforce)
                .build()
        });
        // A path through a root past its dates is no path: webpki tries another.
        let root_in_date = |path: &VerifiedPath<'_>| -> Result<(), WebpkiError> {
            let anchor = path.anchor();
            let i = self.anchors.iter().position(|a| {
                a.subject.as_ref() == anchor.subject.as_ref()
                    && a.subject_public_key_info.as_ref() == anchor.subject_public_key_info.as_ref()
            });
            match i.map(|i| self.anchor_dates[i]) {
                Some((nb, na)) if at_secs < nb || at_secs > na => Err(WebpkiError::UnknownIssuer),
                _ => Ok(()),
            }
        };
        let self_issued = subject == issuer;
        let result = end_entity.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &intermediates,
            at,
            KeyUsage::server_auth(),
            revocation,
            Some(&root_in_date),
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
        ChainVerdict { statuses, names_readable: true, not_before, not_after, from, until }
    }

    /// The span around `now` over which no date that can change a chain's
    /// verdict falls: its certificates', the roots', the CRLs'.
    fn span(&self, chain: &[Vec<u8>], now: i64) -> (i64, i64) {
        let mut from = i64::MIN;
        let mut until = i64::MAX;
        let mut note = |t: i64| {
            if t <= now {
                from = from.max(t);
            } else {
                until = until.min(t);
            }
        };
        for der in chain {
            if let Some((_, _, nb, na)) = names_and_validity(der) {
                note(nb);
                note(na.saturating_add(1));
            }
        }
        for &(nb, na) in &self.anchor_dates {
            note(nb);
            note(na.saturating_add(1));
        }
        for &t in &self.crl_dates {
            note(t);
        }
        (from, until)
    }
}

/// The moment at which the chain is judged: the packet's time, brought into
/// the leaf's validity (whose own dates are judged apart), and not before
/// the epoch.
fn judging_time(now: i64, not_before: i64, not_after: i64) -> UnixTime {
    let t = now.min(not_after).max(not_before).max(0);
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
        Err(e) => !matches!(
            e,
            WebpkiError::InvalidSignatureForPublicKey
                | WebpkiError::SignatureAlgorithmMismatch
                | WebpkiError::UnknownIssuer
                | WebpkiError::UnsupportedSignatureAlgorithmContext(_)
                | WebpkiError::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        ),
    }
}

fn matches_name(leaf_der: &[u8], name: &str) -> bool {
    let leaf = CertificateDer::from(leaf_der);
    let Ok(end_entity) = EndEntityCert::try_from(&leaf) else { return false };
    let Ok(server_name) = ServerName::try_from(name) else { return false };
    end_entity.verify_is_valid_for_subject_name(&server_name).is_ok()
}

/// Whether `flat` is [`flatten`]`(chain)` (compared without making it).
fn is_flat(flat: &[u8], chain: &[Vec<u8>]) -> bool {
    let mut rest = flat;
    for cert in chain {
        let Some((len, tail)) = rest.split_first_chunk::<4>() else { return false };
        if u32::from_be_bytes(*len) as usize != cert.len() || !tail.starts_with(cert) {
            return false;
        }
        rest = &tail[cert.len()..];
    }
    rest.is_empty()
}

/// The chain as one byte string: each certificate behind its 4-byte length.
fn flatten(chain: &[Vec<u8>]) -> Vec<u8> {
    let mut flat = Vec::with_capacity(chain.iter().map(|c| c.len() + 4).sum());
    for cert in chain {
        flat.extend_from_slice(&(cert.len() as u32).to_be_bytes());
        flat.extend_from_slice(cert);
    }
    flat
}

/// The status a webpki error stands for (the leaf's DER parsed: x509-parser read it).
fn status_of(e: &WebpkiError) -> CertStatus {
    use WebpkiError as E;
    match e {
        // Signatures made with algorithms known to be broken (MD5, SHA-1) do
        // not verify; others webpki does not support cannot be judged.
        E::UnsupportedSignatureAlgorithmContext(c) if broken_signature(&c.signature_algorithm_id) => {
            CertStatus::InvalidSignature
        }
        E::UnsupportedSignatureAlgorithmForPublicKeyContext(c) if broken_signature(&c.signature_algorithm_id) => {
            CertStatus::InvalidSignature
        }
        E::InvalidSignatureForPublicKey | E::SignatureAlgorithmMismatch => CertStatus::InvalidSignature,
        E::UnsupportedSignatureAlgorithmContext(_)
        | E::UnsupportedSignatureAlgorithmForPublicKeyContext(_)
        | E::UnsupportedCriticalExtension
        | E::InvalidSerialNumber
        // A time webpki cannot represent (before 1970).
        | E::BadDerTime
        | E::UnsupportedNameType => CertStatus::Unverified,
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
        // No valid path to a trusted issuer for a TLS server: none at all, an
        // issuer or root out of its dates (the leaf's own are judged apart),
        // an intermediate that does not parse, a constraint the path breaks
        // (basic constraints, path length, name constraints, serverAuth EKU).
        _ => CertStatus::InvalidIssuer,
    }
}

/// Whether a signature AlgorithmIdentifier (its DER content) names MD2, MD5
/// or SHA-1 with RSA, or SHA-1 with ECDSA.
fn broken_signature(id: &[u8]) -> bool {
    const RSA_PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA_SHA1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x01];
    let oid = match id {
        [0x06, len, rest @ ..] => rest.get(..usize::from(*len)).unwrap_or_default(),
        _ => return false,
    };
    matches!(oid.strip_prefix(RSA_PKCS1), Some([2] | [4] | [5])) || oid == ECDSA_SHA1
}
