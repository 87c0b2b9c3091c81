//! Re-signed certificates for "Decrypt - Resign": a copy of the server's leaf
//! (subject, SAN, validity) with a fresh key, signed by the configured CA, or
//! by an untrusted CA when the server's own chain is not trusted; and the
//! bounded cache of what was forged, keyed by the original's fingerprint.
//!
//! The forged certificate's TBSCertificate is written here with yasna's DER
//! writer rather than through rcgen's `CertificateParams`: rcgen keeps one
//! value per attribute type (a subject with two OUs would lose one) and
//! re-encodes names, while the subject must be copied exactly and the issuer
//! must be the signing CA's subject byte for byte (clients chain by exact
//! name match), so both go in as the raw DER they were read as. rcgen only
//! generates keys and the untrusted CA; rustls's signing key signs.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use crate::keys::{Accepts, KeyKind, LeafKey, LeafKeys};
use ahash::RandomState;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, SerialNumber};
use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::crypto::SecureRandom;
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::SignatureScheme;
use rustls_pki_types::{alg_id, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::{Digest, Sha256};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;
use yasna::models::{GeneralizedTime, ObjectIdentifier, UTCTime};
use yasna::{DERWriter, Tag};

/// Why a certificate could not be forged, or the forger not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForgeError {
    /// The server's certificate cannot be parsed or copied.
    #[error("the server's certificate cannot be re-signed: {0}")]
    Original(String),
    /// The resigning CA's certificate cannot be used.
    #[error("the resigning CA certificate cannot be used: {0}")]
    CaCertificate(String),
    /// The resigning CA's private key cannot be used.
    #[error("the resigning CA's private key cannot be used: {0}")]
    CaKey(String),
    /// Generating a key (for a forged leaf or the untrusted CA) failed.
    #[error("generating a {kind} key failed: {reason}")]
    KeyGeneration {
        /// The key type.
        kind: &'static str,
        /// What the crypto library said.
        reason: String,
    },
    /// Signing failed.
    #[error("signing a certificate failed: {0}")]
    Signing(String),
}

/// Counters of a [`Forger`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ForgeStats {
    /// Certificates forged (cache misses that succeeded).
    pub forged: u64,
    /// Requests answered from the cache.
    pub hits: u64,
    /// Requests that failed (bad original, signing error).
    pub failures: u64,
    /// Entries in the cache now.
    pub cached: u64,
    /// Entries evicted to make room.
    pub evicted: u64,
    /// Total time spent forging, ns (key generation and signing; failed attempts included).
    pub forge_ns: u64,
}

/// Forges re-signed copies of server certificates and caches them.
pub struct Forger {
    trusted: SigningCa,
    untrusted: SigningCa,
    cache: HashMap<([u8; 32], bool), Arc<CertifiedKey>, RandomState>,
    /// Cache keys in insertion order: the front is evicted first (entries are
    /// only ever removed by eviction, so there are no stale slots).
    order: VecDeque<([u8; 32], bool)>,
    capacity: usize,
    random: &'static dyn SecureRandom,
    stats: ForgeStats,
}

/// Subject CN of the CA generated at start for certificates the server's own chain does not make trusted.
pub const UNTRUSTED_CA_NAME: &str = "tlsgate untrusted CA";

impl Forger {
    /// `ca_cert_der`/`ca_key`: the policy's resigning CA
    /// (`tlsgate_config::policy::CaObject` gives both). An untrusted CA
    /// ("tlsgate untrusted CA", same key type and validity as the configured
    /// one, generated here, kept only in memory) signs copies of certificates
    /// the server's own chain does not make trusted, so the client sees the
    /// warning it would have seen (Firepower's "Replace Key Only").
    /// `capacity`: forged certificates kept (at least 1).
    pub fn new(ca_cert_der: &[u8], ca_key: PrivateKeyDer<'static>, capacity: usize) -> Result<Forger, ForgeError> {
        let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let trusted = SigningCa::new(ca_cert_der.to_vec(), &ca_key)?;
        let untrusted = generate_untrusted_ca(&trusted, random)?;
        let capacity = capacity.max(1);
        Ok(Forger {
            trusted,
            untrusted,
            cache: HashMap::with_capacity_and_hasher(capacity.min(1 << 16), RandomState::new()),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
            random,
            stats: ForgeStats::default(),
        })
    }

    /// A copy of `original_leaf_der` for presenting to the client: subject DN
    /// copied exactly, SAN copied (DNS and IP entries), validity the
    /// original's clipped to the signing CA's, a key of the original's type
    /// and size from `keys` (see [`crate::keys`]), a fresh random serial,
    /// CA:false, key usage digitalSignature (+keyEncipherment for RSA), EKU
    /// serverAuth, AKI of the signing CA; signed by the configured CA when
    /// `trusted`, else by the untrusted CA. Returns the chain (forged leaf,
    /// then the signing CA) and its key, ready for a rustls server. Cached by
    /// the SHA-256 of the original plus `trusted` (bounded; the oldest is
    /// evicted), unless the pool had no key of the original's type yet and a
    /// key of another type the client `accepts` stood in.
    pub fn forge(
        &mut self,
        keys: &mut LeafKeys,
        original_leaf_der: &[u8],
        trusted: bool,
        accepts: Accepts,
    ) -> Result<Arc<CertifiedKey>, ForgeError> {
        let cache_key: ([u8; 32], bool) = (Sha256::digest(original_leaf_der).into(), trusted);
        if let Some(hit) = self.cache.get(&cache_key) {
            self.stats.hits += 1;
            return Ok(Arc::clone(hit));
        }
        let started = Instant::now();
        let ca = if trusted { &self.trusted } else { &self.untrusted };
        let result = LeafSpec::copy_of(original_leaf_der, ca).and_then(|spec| {
            let taken = keys.take(spec.kind, accepts)?;
            Ok((spec.build(ca, &taken.key, self.random)?, taken.exact))
        });
        self.stats.forge_ns += u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (forged, exact) = match result {
            Ok((forged, exact)) => (Arc::new(forged), exact),
            Err(e) => {
                self.stats.failures += 1;
                return Err(e);
            }
        };
        self.stats.forged += 1;
        if !exact {
            return Ok(forged);
        }
        if self.cache.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.cache.remove(&oldest);
                self.stats.evicted += 1;
            }
        }
        self.order.push_back(cache_key);
        self.cache.insert(cache_key, Arc::clone(&forged));
        Ok(forged)
    }

    /// The counters so far.
    pub fn stats(&self) -> ForgeStats {
        ForgeStats { cached: self.cache.len() as u64, ..self.stats }
    }

    /// The DER of the untrusted CA (tests and the e2e use it).
    pub fn untrusted_ca_der(&self) -> &[u8] {
        &self.untrusted.cert_der
    }

    /// The DER of the configured resigning CA.
    pub fn ca_der(&self) -> &[u8] {
        &self.trusted.cert_der
    }
}

/// A CA that signs forged leaves, with what signing needs from its certificate.
struct SigningCa {
    cert_der: Vec<u8>,
    /// The subject Name, DER as in the certificate: the forged leaves' issuer.
    subject: Vec<u8>,
    not_before: i64,
    not_after: i64,
    /// For the leaves' authority key identifier.
    key_id: Vec<u8>,
    key: Arc<dyn SigningKey>,
    scheme: SignatureScheme,
    kind: KeyKind,
    /// The AlgorithmIdentifier of its signatures, DER (with the SEQUENCE).
    signature_algorithm: Vec<u8>,
}

impl SigningCa {
    fn new(cert_der: Vec<u8>, key_der: &PrivateKeyDer<'_>) -> Result<SigningCa, ForgeError> {
        let cert_error = ForgeError::CaCertificate;
        let (rest, cert) = X509Certificate::from_der(&cert_der)
            .map_err(|e| cert_error(format!("not a DER X.509 certificate ({e})")))?;
        if !rest.is_empty() {
            return Err(cert_error(format!("{} bytes follow the certificate", rest.len())));
        }
        match cert.basic_constraints() {
            Ok(Some(bc)) if bc.value.ca => {}
            Ok(_) => return Err(cert_error("it is not a CA certificate (basicConstraints cA is not set)".into())),
            Err(e) => return Err(cert_error(format!("its basicConstraints extension is malformed ({e})"))),
        }
        match cert.key_usage() {
            Ok(Some(ku)) if !ku.value.key_cert_sign() => {
                return Err(cert_error("its keyUsage does not allow keyCertSign".into()))
            }
            Ok(_) => {}
            Err(e) => return Err(cert_error(format!("its keyUsage extension is malformed ({e})"))),
        }
        let subject = checked_name(cert.subject().as_raw()).map_err(cert_error)?;
        let key_id = cert
            .iter_extensions()
            .find_map(|ext| match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(id) => Some(id.0.to_vec()),
                _ => None,
            })
            .unwrap_or_else(|| key_identifier(cert.public_key()));
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();

        // rustls's errors name the problem, never the key bytes.
        let key = any_supported_type(key_der).map_err(|e| ForgeError::CaKey(e.to_string()))?;
        let (scheme, kind, alg) = [
            (SignatureScheme::ECDSA_NISTP256_SHA256, KeyKind::EcdsaP256, alg_id::ECDSA_SHA256),
            (SignatureScheme::ECDSA_NISTP384_SHA384, KeyKind::EcdsaP384, alg_id::ECDSA_SHA384),
            (SignatureScheme::ECDSA_NISTP521_SHA512, KeyKind::EcdsaP521, alg_id::ECDSA_SHA512),
            (SignatureScheme::ED25519, KeyKind::Ed25519, alg_id::ED25519),
            (SignatureScheme::RSA_PKCS1_SHA256, KeyKind::Rsa2048, alg_id::RSA_PKCS1_SHA256),
        ]
        .into_iter()
        .find(|(scheme, _, _)| key.choose_scheme(&[*scheme]).is_some())
        .ok_or_else(|| {
            ForgeError::CaKey("its type cannot sign certificates here (use ECDSA, Ed25519 or RSA)".into())
        })?;
        if let Some(spki) = key.public_key() {
            let matches = SubjectPublicKeyInfo::from_der(spki.as_ref())
                .is_ok_and(|(_, k)| k.subject_public_key.data == cert.public_key().subject_public_key.data);
            if !matches {
                return Err(ForgeError::CaKey("it does not belong to the CA certificate (public keys differ)".into()));
            }
        }
        Ok(SigningCa {
            cert_der: cert_der.clone(),
            subject,
            not_before,
            not_after,
            key_id,
            key,
            scheme,
            kind,
            signature_algorithm: yasna::construct_der(|w| w.write_sequence(|w| w.next().write_der(alg.as_ref()))),
        })
    }

    /// Signs `tbs` (a TBSCertificate) and returns the Certificate DER.
    fn sign_certificate(&self, tbs: Vec<u8>) -> Result<Vec<u8>, ForgeError> {
        let signer = self
            .key
            .choose_scheme(&[self.scheme])
            .ok_or_else(|| ForgeError::Signing(format!("the CA key no longer offers {:?}", self.scheme)))?;
        let signature = signer.sign(&tbs).map_err(|e| ForgeError::Signing(e.to_string()))?;
        Ok(yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_der(&tbs);
                w.next().write_der(&self.signature_algorithm);
                w.next().write_bitvec_bytes(&signature, signature.len() * 8);
            })
        }))
    }
}

/// Generates the untrusted CA: same key type and validity as `like`.
fn generate_untrusted_ca(like: &SigningCa, random: &dyn SecureRandom) -> Result<SigningCa, ForgeError> {
    let key = like.kind.generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, UNTRUSTED_CA_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let time = |t: i64| {
        time::OffsetDateTime::from_unix_timestamp(t)
            .map_err(|e| ForgeError::CaCertificate(format!("its validity is out of range ({e})")))
    };
    params.not_before = time(like.not_before)?;
    params.not_after = time(like.not_after)?;
    params.serial_number = Some(SerialNumber::from_slice(&random_serial(random)?));
    let cert = params.self_signed(&key).map_err(|e| ForgeError::Signing(format!("the untrusted CA: {e}")))?;
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    SigningCa::new(cert.der().to_vec(), &key_der)
}

/// What a forged leaf is made of.
struct LeafSpec {
    /// Subject Name, DER.
    subject: Vec<u8>,
    /// GeneralName entries (dNSName and iPAddress), DER, concatenated.
    sans: Vec<u8>,
    not_before: i64,
    not_after: i64,
    kind: KeyKind,
}

impl LeafSpec {
    /// The parts of `original` a forged copy keeps, validity clipped to `ca`'s.
    fn copy_of(original: &[u8], ca: &SigningCa) -> Result<LeafSpec, ForgeError> {
        let bad = ForgeError::Original;
        let (rest, cert) =
            X509Certificate::from_der(original).map_err(|e| bad(format!("not a DER X.509 certificate ({e})")))?;
        if !rest.is_empty() {
            return Err(bad(format!("{} bytes follow the certificate", rest.len())));
        }
        let subject = checked_name(cert.subject().as_raw()).map_err(bad)?;
        let mut sans = Vec::new();
        match cert.subject_alternative_name() {
            Ok(Some(san)) => {
                for name in &san.value.general_names {
                    match name {
                        GeneralName::DNSName(dns) => sans.extend(general_name(SAN_DNS, dns.as_bytes())),
                        GeneralName::IPAddress(ip) if ip.len() == 4 || ip.len() == 16 => {
                            sans.extend(general_name(SAN_IP, ip))
                        }
                        _ => {}
                    }
                }
            }
            Ok(None) => {}
            Err(e) => return Err(bad(format!("its subjectAltName extension is malformed or repeated ({e})"))),
        }
        let (not_before, not_after) =
            clip_validity(cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp(), ca);
        Ok(LeafSpec { subject, sans, not_before, not_after, kind: KeyKind::for_original(cert.public_key()) })
    }

    /// Signs the leaf, with `key`'s public key, with `ca`.
    fn build(&self, ca: &SigningCa, key: &LeafKey, random: &dyn SecureRandom) -> Result<CertifiedKey, ForgeError> {
        let spki = &key.spki;
        let serial = random_serial(random)?;

        let validity = [time_of(self.not_before)?, time_of(self.not_after)?];
        let rsa = key.kind.is_rsa();
        let leaf_key_id = key_identifier_of_spki(spki);
        let tbs = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                w.next().write_tagged(Tag::context(0), |w| w.write_u8(2)); // version v3
                w.next().write_bigint_bytes(&serial, true);
                w.next().write_der(&ca.signature_algorithm);
                w.next().write_der(&ca.subject);
                w.next().write_sequence(|w| {
                    for t in &validity {
                        t.write(w.next());
                    }
                });
                w.next().write_der(&self.subject);
                w.next().write_der(spki);
                w.next().write_tagged(Tag::context(3), |w| {
                    w.write_sequence(|w| {
                        // basicConstraints: cA FALSE (the default, so an empty SEQUENCE).
                        extension(w.next(), OID_BASIC_CONSTRAINTS, true, |w| w.write_sequence(|_| {}));
                        // keyUsage: digitalSignature (bit 0), + keyEncipherment (bit 2) for RSA.
                        extension(w.next(), OID_KEY_USAGE, true, |w| {
                            if rsa {
                                w.write_bitvec_bytes(&[0xa0], 3)
                            } else {
                                w.write_bitvec_bytes(&[0x80], 1)
                            }
                        });
                        extension(w.next(), OID_EXT_KEY_USAGE, false, |w| {
                            w.write_sequence(|w| w.next().write_oid(&ObjectIdentifier::from_slice(OID_SERVER_AUTH)))
                        });
                        if !self.sans.is_empty() {
                            // Critical when the subject is empty (RFC 5280 4.2.1.6).
                            let empty_subject = self.subject.len() == 2;
                            extension(w.next(), OID_SUBJECT_ALT_NAME, empty_subject, |w| {
                                w.write_sequence(|w| w.next().write_der(&self.sans))
                            });
                        }
                        extension(w.next(), OID_AUTHORITY_KEY_ID, false, |w| {
                            w.write_sequence(|w| {
                                w.next().write_tagged_implicit(Tag::context(0), |w| w.write_bytes(&ca.key_id))
                            })
                        });
                        extension(w.next(), OID_SUBJECT_KEY_ID, false, |w| w.write_bytes(&leaf_key_id));
                    })
                });
            })
        });

        let leaf_der = ca.sign_certificate(tbs)?;
        let chain = vec![CertificateDer::from(leaf_der), CertificateDer::from(ca.cert_der.clone())];
        Ok(CertifiedKey::new(chain, key.signing.clone()))
    }
}

/// The original's validity clipped to the CA's. When they do not overlap,
/// the original's is kept: the chain then fails a time check at every
/// instant, as a client should see for a certificate the CA cannot cover.
fn clip_validity(not_before: i64, not_after: i64, ca: &SigningCa) -> (i64, i64) {
    let clipped = (not_before.max(ca.not_before), not_after.min(ca.not_after));
    if clipped.0 <= clipped.1 {
        clipped
    } else {
        (not_before, not_after)
    }
}

/// A fresh 16-byte positive serial (RFC 5280: at most 20 octets, positive).
fn random_serial(random: &dyn SecureRandom) -> Result<[u8; 16], ForgeError> {
    let mut serial = [0u8; 16];
    random.fill(&mut serial).map_err(|_| ForgeError::Signing("the system random generator failed".into()))?;
    // Top bit clear (positive), second bit set (no leading zero octet to strip).
    serial[0] = (serial[0] & 0x3f) | 0x40;
    Ok(serial)
}

/// `name` if it is exactly one DER SEQUENCE (a Name as x509-parser keeps it).
fn checked_name(name: &[u8]) -> Result<Vec<u8>, String> {
    match der_element_len(name) {
        Some(len) if name.first() == Some(&TAG_SEQUENCE) && len == name.len() => Ok(name.to_vec()),
        _ => Err("its subject is not a well-formed DER Name".into()),
    }
}

/// Total length (header + content) of the DER element at the start of `bytes`.
fn der_element_len(bytes: &[u8]) -> Option<usize> {
    let first = *bytes.get(1)?;
    let (header, len) = if first < 0x80 {
        (2, usize::from(first))
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes.get(2..2 + n)?.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        (2 + n, len)
    };
    header.checked_add(len)
}

/// A key identifier for a CA without a subjectKeyIdentifier: SHA-256 of its
/// public key bits, truncated to 160 bits (RFC 7093 method 1).
fn key_identifier(spki: &SubjectPublicKeyInfo<'_>) -> Vec<u8> {
    Sha256::digest(&spki.subject_public_key.data)[..20].to_vec()
}

/// As [`key_identifier`], from SPKI DER (falls back to hashing all of it).
fn key_identifier_of_spki(spki_der: &[u8]) -> Vec<u8> {
    match SubjectPublicKeyInfo::from_der(spki_der) {
        Ok((_, spki)) => key_identifier(&spki),
        Err(_) => Sha256::digest(spki_der)[..20].to_vec(),
    }
}

const TAG_SEQUENCE: u8 = 0x30;

/// Extension OIDs (arcs).
const OID_SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const OID_KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const OID_SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const OID_BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const OID_AUTHORITY_KEY_ID: &[u64] = &[2, 5, 29, 35];
const OID_EXT_KEY_USAGE: &[u64] = &[2, 5, 29, 37];
/// id-kp-serverAuth.
const OID_SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];

/// GeneralName choices kept in a forged subjectAltName: dNSName [2], iPAddress [7].
const SAN_DNS: u64 = 2;
const SAN_IP: u64 = 7;

/// One GeneralName, DER: the bytes as read, under their implicit tag.
fn general_name(choice: u64, bytes: &[u8]) -> Vec<u8> {
    yasna::construct_der(|w| w.write_tagged_implicit(Tag::context(choice), |w| w.write_bytes(bytes)))
}

/// Writes an Extension: SEQUENCE { extnID, critical (only when true), extnValue }.
fn extension(w: DERWriter<'_>, oid: &[u64], critical: bool, value: impl FnOnce(DERWriter<'_>)) {
    w.write_sequence(|w| {
        w.next().write_oid(&ObjectIdentifier::from_slice(oid));
        if critical {
            w.next().write_bool(true);
        }
        w.next().write_bytes(&yasna::construct_der(value));
    })
}

/// A certificate Time (RFC 5280 4.1.2.5): UTCTime for years 1950 to 2049,
/// else GeneralizedTime; checked before anything is written.
enum CertTime {
    Utc(UTCTime),
    Generalized(GeneralizedTime),
}

impl CertTime {
    fn write(&self, w: DERWriter<'_>) {
        match self {
            CertTime::Utc(t) => w.write_utctime(t),
            CertTime::Generalized(t) => w.write_generalized_time(t),
        }
    }
}

fn time_of(unix_s: i64) -> Result<CertTime, ForgeError> {
    let bad = || ForgeError::Original(format!("its validity ({unix_s} s since 1970) cannot be encoded"));
    let t = time::OffsetDateTime::from_unix_timestamp(unix_s).map_err(|_| bad())?;
    // The checked constructors: a year either form cannot hold is an error, never a panic.
    if (1950..2050).contains(&t.year()) {
        UTCTime::from_datetime_opt(t).map(CertTime::Utc).ok_or_else(bad)
    } else {
        GeneralizedTime::from_datetime_opt(t).map(CertTime::Generalized).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::KeyPair;

    fn keys() -> LeafKeys {
        LeafKeys::new(None, 3600)
    }
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{ServerName, UnixTime};
    use std::time::Duration;
    use tlsgate_perf::handshake::Pki;
    use x509_parser::prelude::X509Certificate;

    const Y2024: i64 = 1_704_067_200;
    const Y2026: i64 = 1_767_225_600;
    const Y2027: i64 = 1_798_761_600;
    const Y2060: i64 = 2_840_140_800;

    fn forger(pki: &Pki, capacity: usize) -> Forger {
        let key = PrivateKeyDer::from_pem_slice(pki.ca_key_pem().as_bytes()).expect("CA key PEM");
        Forger::new(&pki.ca_cert_der(), key, capacity).expect("forger")
    }

    /// Verifies `leaf` for `name` at 2026-06-01 against `anchor` (a CA's DER).
    fn verify(leaf: &[u8], anchor: &[u8], name: &str) -> Result<(), webpki::Error> {
        let anchor_der = CertificateDer::from(anchor.to_vec());
        let anchors = [webpki::anchor_from_trusted_cert(&anchor_der)?.to_owned()];
        let leaf_der = CertificateDer::from(leaf.to_vec());
        let ee = webpki::EndEntityCert::try_from(&leaf_der)?;
        let now = UnixTime::since_unix_epoch(Duration::from_secs(Y2026 as u64 + 150 * 86_400));
        ee.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &anchors,
            &[],
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )?;
        let server_name = ServerName::try_from(name.to_owned()).expect("name");
        ee.verify_is_valid_for_subject_name(&server_name)
    }

    fn parsed(der: &[u8]) -> X509Certificate<'_> {
        X509Certificate::from_der(der).expect("parses").1
    }

    fn leaf_of(forged: &CertifiedKey) -> &[u8] {
        forged.cert[0].as_ref()
    }

    #[test]
    fn forged_leaf_verifies_against_the_resigning_ca_only() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let names = ["www.example.com", "example.com", "192.0.2.7"];
        let original = server_pki.issue(&names, "Example Org", Y2024, Y2027);
        let mut forger = forger(&resign_pki, 16);
        let forged = forger.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).expect("forged");
        assert_eq!(forged.cert.len(), 2);
        assert_eq!(forged.cert[1].as_ref(), resign_pki.ca_cert_der().as_slice());
        assert!(forged.keys_match().is_ok(), "the key is the leaf's");
        for name in names {
            verify(leaf_of(&forged), &resign_pki.ca_cert_der(), name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            assert!(verify(leaf_of(&forged), &server_pki.ca_cert_der(), name).is_err());
        }
        assert!(verify(leaf_of(&forged), &resign_pki.ca_cert_der(), "other.example.com").is_err());
        // The original still verifies against its own CA (the test harness is sound).
        verify(&original.cert_der, &server_pki.ca_cert_der(), "www.example.com").expect("original verifies");
    }

    #[test]
    fn subject_san_and_validity_are_copied() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let original = server_pki.issue(&["a.example", "b.example", "2001:db8::1"], "Org, Inc.", Y2024, Y2027);
        let forged = forger(&resign_pki, 4).forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        let (o, f) = (parsed(&original.cert_der), parsed(leaf_of(&forged)));
        assert_eq!(f.subject().as_raw(), o.subject().as_raw(), "subject copied byte for byte");
        assert_eq!(f.subject().to_string(), o.subject().to_string());
        let resign_ca_der = resign_pki.ca_cert_der();
        assert_eq!(f.issuer().as_raw(), parsed(&resign_ca_der).subject().as_raw());
        let san = |c: &X509Certificate<'_>| {
            format!("{:?}", c.subject_alternative_name().unwrap().unwrap().value.general_names)
        };
        assert_eq!(san(&f), san(&o));
        assert_eq!(f.validity().not_before.timestamp(), Y2024);
        assert_eq!(f.validity().not_after.timestamp(), Y2027);
        assert_ne!(f.serial, o.serial, "fresh serial");
        assert_ne!(f.public_key().raw, o.public_key().raw, "fresh key");
        assert!(!f.basic_constraints().unwrap().unwrap().value.ca);
        let ku = f.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_encipherment() && !ku.key_cert_sign());
        assert!(f.extended_key_usage().unwrap().unwrap().value.server_auth);
        let aki = f
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::AuthorityKeyIdentifier(aki) => aki.key_identifier.as_ref().map(|k| k.0.to_vec()),
                _ => None,
            })
            .expect("AKI");
        let ca_ski = parsed(&resign_ca_der)
            .iter_extensions()
            .find_map(|e| match e.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
                _ => None,
            })
            .expect("CA SKI");
        assert_eq!(aki, ca_ski);
    }

    #[test]
    fn a_subject_with_repeated_attributes_is_copied_whole() {
        // rcgen keeps one value per attribute type, so the original is built
        // here: CN, two OUs (PrintableString, then UTF8String), O; issued by
        // the server's CA through this module's own leaf builder.
        let server_pki = Pki::new("Real Server CA");
        let server_key = PrivateKeyDer::from_pem_slice(server_pki.ca_key_pem().as_bytes()).unwrap();
        let server_ca = SigningCa::new(server_pki.ca_cert_der(), &server_key).unwrap();
        let subject = yasna::construct_der(|w| {
            w.write_sequence(|w| {
                for (oid, printable, value) in [
                    (&[2, 5, 4, 3][..], false, "multi.example"),
                    (&[2, 5, 4, 11][..], true, "Unit One"),
                    (&[2, 5, 4, 11][..], false, "Unit Two"),
                    (&[2, 5, 4, 10][..], false, "Org"),
                ] {
                    w.next().write_set(|w| {
                        w.next().write_sequence(|w| {
                            w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                            if printable {
                                w.next().write_printable_string(value);
                            } else {
                                w.next().write_utf8_string(value);
                            }
                        })
                    })
                }
            })
        });
        let spec = LeafSpec {
            subject: subject.clone(),
            sans: general_name(SAN_DNS, b"multi.example"),
            not_before: Y2024,
            not_after: Y2027,
            kind: KeyKind::EcdsaP384,
        };
        let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let key = keys().take(spec.kind, Accepts::ANY).unwrap().key;
        let original = spec.build(&server_ca, &key, random).unwrap().cert[0].as_ref().to_vec();
        verify(&original, &server_pki.ca_cert_der(), "multi.example").expect("hand-built original verifies");

        let resign_pki = Pki::new("Inspection CA");
        let forged = forger(&resign_pki, 4).forge(&mut keys(), &original, true, Accepts::ANY).unwrap();
        let f = parsed(leaf_of(&forged));
        assert_eq!(f.subject().as_raw(), subject.as_slice());
        assert_eq!(f.subject().iter_organizational_unit().count(), 2);
        assert_eq!(KeyKind::for_original(f.public_key()), KeyKind::EcdsaP384);
        verify(leaf_of(&forged), &resign_pki.ca_cert_der(), "multi.example").unwrap();
    }

    #[test]
    fn a_multi_valued_rdn_is_copied_as_it_came() {
        // One RDN holding CN and OU together, in the order DER's SET OF
        // sorting would swap, then O: re-encoding the Name would reorder the
        // pair or split it into two RDNs.
        let server_pki = Pki::new("Real Server CA");
        let server_key = PrivateKeyDer::from_pem_slice(server_pki.ca_key_pem().as_bytes()).unwrap();
        let server_ca = SigningCa::new(server_pki.ca_cert_der(), &server_key).unwrap();
        let attribute = |oid: &[u64], value: &str| {
            yasna::construct_der(|w| {
                w.write_sequence(|w| {
                    w.next().write_oid(&ObjectIdentifier::from_slice(oid));
                    w.next().write_utf8_string(value);
                })
            })
        };
        let (cn, ou, o) = (
            attribute(&[2, 5, 4, 3], "mv.example"),
            attribute(&[2, 5, 4, 11], "Unit"),
            attribute(&[2, 5, 4, 10], "Org"),
        );
        assert!(cn > ou, "CN first is not DER order");
        // Written by hand: yasna's SET writer would sort the pair.
        let set = |parts: &[&[u8]]| {
            let body = parts.concat();
            [&[0x31, body.len() as u8][..], &body].concat()
        };
        let rdns = [set(&[&cn, &ou]), set(&[&o])].concat();
        let subject = [&[TAG_SEQUENCE, rdns.len() as u8][..], &rdns].concat();
        let spec = LeafSpec {
            subject: subject.clone(),
            sans: general_name(SAN_DNS, b"mv.example"),
            not_before: Y2024,
            not_after: Y2027,
            kind: KeyKind::EcdsaP256,
        };
        let random = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let key = keys().take(spec.kind, Accepts::ANY).unwrap().key;
        let original = spec.build(&server_ca, &key, random).unwrap().cert[0].as_ref().to_vec();
        verify(&original, &server_pki.ca_cert_der(), "mv.example").expect("hand-built original verifies");

        let forged = forger(&Pki::new("Inspection CA"), 4).forge(&mut keys(), &original, true, Accepts::ANY).unwrap();
        let f = parsed(leaf_of(&forged));
        assert_eq!(f.subject().as_raw(), subject.as_slice(), "subject copied byte for byte");
        let rdn_sizes: Vec<usize> = f.subject().iter().map(|rdn| rdn.iter().count()).collect();
        assert_eq!(rdn_sizes, [2, 1]);
    }

    #[test]
    fn validity_is_clipped_to_the_ca() {
        let server_pki = Pki::new("Real Server CA");
        // Pki's CA runs 2020..2050; the original runs to 2060.
        let original = server_pki.issue(&["long.example"], "Org", Y2024, Y2060);
        let resign_pki = Pki::new("Inspection CA");
        let forged = forger(&resign_pki, 4).forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        let f = parsed(leaf_of(&forged));
        assert_eq!(f.validity().not_before.timestamp(), Y2024);
        assert_eq!(f.validity().not_after.timestamp(), 2_524_608_000, "clipped to the CA's notAfter (2050)");

        // A CA valid 2025..2027 (made with rcgen directly) clips both ends.
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "Short CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = time::OffsetDateTime::from_unix_timestamp(1_735_689_600).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(Y2027).unwrap();
        let ca = params.self_signed(&key).unwrap();
        let ca_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut short = Forger::new(ca.der(), ca_key, 4).unwrap();
        let forged = short.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        let f = parsed(leaf_of(&forged));
        assert_eq!(f.validity().not_before.timestamp(), 1_735_689_600);
        assert_eq!(f.validity().not_after.timestamp(), Y2027);
        verify(leaf_of(&forged), ca.der(), "long.example").unwrap();
        // The untrusted CA has the configured CA's validity.
        let u = parsed(short.untrusted_ca_der());
        assert_eq!(u.validity().not_after.timestamp(), Y2027);
    }

    #[test]
    fn an_rsa_original_forged_before_the_pool_has_rsa_keys_gets_a_p256_copy_that_is_not_cached() {
        let mut forger = forger(&Pki::new("Inspection CA"), 8);
        let (maker, _orders) = crate::keys::KeyMaker::stalled();
        let mut keys = LeafKeys::new(Some(&maker), 3600);
        let key = KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048).unwrap();
        let mut params = CertificateParams::new(vec!["rsa.example".to_owned()]).unwrap();
        params.not_before = time::OffsetDateTime::from_unix_timestamp(Y2024).unwrap();
        params.not_after = time::OffsetDateTime::from_unix_timestamp(Y2027).unwrap();
        let original = params.self_signed(&key).unwrap();
        let first = forger.forge(&mut keys, original.der(), true, Accepts::ANY).unwrap();
        assert_eq!(KeyKind::for_original(parsed(leaf_of(&first)).public_key()), KeyKind::EcdsaP256);
        let second = forger.forge(&mut keys, original.der(), true, Accepts::ANY).unwrap();
        assert!(!Arc::ptr_eq(&first, &second), "a stand-in is not cached");
        assert_eq!(forger.stats().hits, 0);
        assert_eq!(keys.stats().fallbacks, 2);
        // A client that accepts only RSA gets an RSA key made on the spot (the pool's own never came).
        let rsa_only =
            Accepts { ecdsa_p256: false, ecdsa_p384: false, ecdsa_p521: false, ed25519: false, ..Accepts::ANY };
        let third = forger.forge(&mut keys, original.der(), true, rsa_only).unwrap();
        assert_eq!(KeyKind::for_original(parsed(leaf_of(&third)).public_key()), KeyKind::Rsa2048);
        assert_eq!(keys.stats().made_on_path, 1);
        // Exact now: cached.
        let fourth = forger.forge(&mut keys, original.der(), true, Accepts::ANY).unwrap();
        assert!(Arc::ptr_eq(&third, &fourth));
        assert!(third.keys_match().is_ok());
    }

    #[test]
    fn key_type_follows_the_original() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let mut forger = forger(&resign_pki, 8);
        let ec = server_pki.issue(&["ec.example"], "Org", Y2024, Y2027);
        let forged = forger.forge(&mut keys(), &ec.cert_der, true, Accepts::ANY).unwrap();
        assert_eq!(KeyKind::for_original(parsed(leaf_of(&forged)).public_key()), KeyKind::EcdsaP256);
        assert_eq!(forged.key.algorithm(), rustls::SignatureAlgorithm::ECDSA);

        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
            (&rcgen::PKCS_RSA_SHA256, KeyKind::Rsa3072),
        ] {
            let key = if kind == KeyKind::Rsa3072 {
                KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_3072).unwrap()
            } else {
                KeyPair::generate_for(alg).unwrap()
            };
            let mut params = CertificateParams::new(vec!["typed.example".to_owned()]).unwrap();
            params.not_before = time::OffsetDateTime::from_unix_timestamp(Y2024).unwrap();
            params.not_after = time::OffsetDateTime::from_unix_timestamp(Y2027).unwrap();
            let original = params.self_signed(&key).unwrap();
            let spent_before = forger.stats().forge_ns;
            let forged = forger.forge(&mut keys(), original.der(), false, Accepts::ANY).unwrap();
            eprintln!("forge cost, {} original: {} us", kind.name(), (forger.stats().forge_ns - spent_before) / 1000);
            let f = parsed(leaf_of(&forged));
            assert_eq!(KeyKind::for_original(f.public_key()), kind);
            if kind == KeyKind::Rsa3072 {
                assert_eq!(f.public_key().parsed().unwrap().key_size(), 3072, "the original's RSA size");
                assert!(f.key_usage().unwrap().unwrap().value.key_encipherment());
            }
            assert!(forged.keys_match().is_ok());
            verify(leaf_of(&forged), forger.untrusted_ca_der(), "typed.example").unwrap();
        }
    }

    #[test]
    fn other_ca_key_types_sign_and_the_untrusted_ca_follows_them() {
        let original = Pki::new("Real Server CA").issue(&["kinds.example"], "Org", Y2024, Y2027);
        for (alg, kind) in [
            (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
            (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
            (&rcgen::PKCS_RSA_SHA256, KeyKind::Rsa2048),
        ] {
            let key = if kind == KeyKind::Rsa2048 {
                KeyPair::generate_rsa_for(alg, rcgen::RsaKeySize::_2048).unwrap()
            } else {
                KeyPair::generate_for(alg).unwrap()
            };
            let mut params = CertificateParams::default();
            params.distinguished_name = rcgen::DistinguishedName::new();
            params.distinguished_name.push(DnType::CommonName, format!("{} CA", kind.name()));
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
            let ca = params.self_signed(&key).unwrap();
            let ca_key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
            let mut forger = Forger::new(ca.der(), ca_key, 4).unwrap_or_else(|e| panic!("{}: {e}", kind.name()));
            assert_eq!(KeyKind::for_original(parsed(forger.untrusted_ca_der()).public_key()), kind);
            let trusted = forger.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
            verify(leaf_of(&trusted), ca.der(), "kinds.example").unwrap_or_else(|e| panic!("{}: {e:?}", kind.name()));
            assert!(verify(leaf_of(&trusted), forger.untrusted_ca_der(), "kinds.example").is_err());
            let untrusted = forger.forge(&mut keys(), &original.cert_der, false, Accepts::ANY).unwrap();
            verify(leaf_of(&untrusted), forger.untrusted_ca_der(), "kinds.example").unwrap();
            assert!(verify(leaf_of(&untrusted), ca.der(), "kinds.example").is_err());
            assert_eq!(KeyKind::for_original(parsed(leaf_of(&trusted)).public_key()), KeyKind::EcdsaP256);
        }
    }

    #[test]
    fn untrusted_copies_verify_only_against_the_untrusted_ca() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let original = server_pki.issue(&["selfish.example"], "Org", Y2024, Y2027);
        let mut forger = forger(&resign_pki, 8);
        let forged = forger.forge(&mut keys(), &original.cert_der, false, Accepts::ANY).unwrap();
        assert!(verify(leaf_of(&forged), &resign_pki.ca_cert_der(), "selfish.example").is_err());
        verify(leaf_of(&forged), forger.untrusted_ca_der(), "selfish.example").unwrap();
        assert_eq!(forged.cert[1].as_ref(), forger.untrusted_ca_der());
        let u = parsed(forger.untrusted_ca_der());
        assert_eq!(u.subject().iter_common_name().next().unwrap().as_str().unwrap(), UNTRUSTED_CA_NAME);
        assert_eq!(
            KeyKind::for_original(u.public_key()),
            KeyKind::for_original(parsed(&resign_pki.ca_cert_der()).public_key())
        );
        // Trusted and untrusted copies of one original are cached apart.
        let trusted = forger.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        assert!(!Arc::ptr_eq(&trusted, &forged));
        assert_eq!(forger.stats().cached, 2);
    }

    #[test]
    fn second_forge_is_a_cache_hit_and_capacity_holds() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let mut forger = forger(&resign_pki, 3);
        let originals: Vec<_> =
            (0..5).map(|i| server_pki.issue(&[&format!("h{i}.example")], "Org", Y2024, Y2027)).collect();
        let first = forger.forge(&mut keys(), &originals[0].cert_der, true, Accepts::ANY).unwrap();
        let again = forger.forge(&mut keys(), &originals[0].cert_der, true, Accepts::ANY).unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        let stats = forger.stats();
        assert_eq!((stats.forged, stats.hits, stats.cached), (1, 1, 1));
        for original in &originals[1..] {
            forger.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        }
        let stats = forger.stats();
        assert_eq!((stats.forged, stats.cached, stats.evicted), (5, 3, 2));
        // The oldest (0 and 1) went; 4 is still cached.
        let latest = forger.forge(&mut keys(), &originals[4].cert_der, true, Accepts::ANY).unwrap();
        assert_eq!(forger.stats().hits, 2);
        let refreshed = forger.forge(&mut keys(), &originals[0].cert_der, true, Accepts::ANY).unwrap();
        assert!(!Arc::ptr_eq(&refreshed, &first), "evicted, so forged anew");
        assert!(!Arc::ptr_eq(&refreshed, &latest));
        assert_eq!(forger.stats().cached, 3);
        assert!(forger.stats().forge_ns > 0);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let resign_pki = Pki::new("Inspection CA");
        let mut forger = forger(&resign_pki, 4);
        let original = Pki::new("Server CA").issue(&["g.example"], "Org", Y2024, Y2027).cert_der;
        let mut inputs: Vec<Vec<u8>> = vec![
            vec![],
            vec![0x30],
            vec![0x30, 0x84, 0xff, 0xff, 0xff, 0xff],
            vec![0x30, 0x00],
            b"not a certificate".to_vec(),
            original[..original.len() / 2].to_vec(),
            [original.as_slice(), &[0u8]].concat(),
        ];
        // Every single-byte corruption of a real certificate.
        for i in 0..original.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = original.clone();
                bad[i] ^= flip;
                inputs.push(bad);
            }
        }
        let mut errors = 0;
        for input in &inputs {
            if let Err(e) = forger.forge(&mut keys(), input, true, Accepts::ANY) {
                assert!(!e.to_string().is_empty());
                errors += 1;
            }
        }
        assert!(errors >= 7, "at least the hand-made garbage fails");
        let e = forger.forge(&mut keys(), b"junk", true, Accepts::ANY).unwrap_err();
        assert!(e.to_string().starts_with("the server's certificate cannot be re-signed"), "{e}");
    }

    #[test]
    fn a_bad_ca_is_refused_with_a_reason() {
        let pki = Pki::new("Inspection CA");
        let other = Pki::new("Other CA");
        let key = |p: &Pki| PrivateKeyDer::from_pem_slice(p.ca_key_pem().as_bytes()).unwrap();
        let mismatch = Forger::new(&pki.ca_cert_der(), key(&other), 4).err().expect("mismatch refused");
        assert!(mismatch.to_string().contains("does not belong"), "{mismatch}");
        let leaf = pki.issue(&["leaf.example"], "Org", Y2024, Y2027);
        let leaf_key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let not_ca = Forger::new(&leaf.cert_der, leaf_key, 4).err().expect("leaf refused");
        assert!(not_ca.to_string().contains("not a CA"), "{not_ca}");
        let garbage = Forger::new(b"nope", key(&pki), 4).err().expect("garbage refused");
        assert!(matches!(garbage, ForgeError::CaCertificate(_)));
    }

    #[test]
    fn mean_forge_cost() {
        let server_pki = Pki::new("Real Server CA");
        let resign_pki = Pki::new("Inspection CA");
        let mut forger = forger(&resign_pki, 64);
        let originals: Vec<_> =
            (0..50).map(|i| server_pki.issue(&[&format!("cost{i}.example")], "Org", Y2024, Y2027)).collect();
        for original in &originals {
            forger.forge(&mut keys(), &original.cert_der, true, Accepts::ANY).unwrap();
        }
        let stats = forger.stats();
        assert_eq!(stats.forged, 50);
        eprintln!(
            "forge cost: {:.1} us mean over 50 forges (ECDSA P-256 leaf, P-256 CA)",
            stats.forge_ns as f64 / 50.0 / 1000.0
        );
    }
}
