//! The objects a policy names, loaded from PEM files: the trust store and CRLs
//! used for certificate status, the CAs that re-sign server certificates, the
//! imported server certificates and keys, and certificate fingerprints.
//!
//! Private key bytes never appear in an error message or in `Debug` output.

use std::fmt;
use std::path::Path;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Trust anchors and CRLs for computing a server certificate's status.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Trust {
    /// DER certificates of the trusted CAs, in file order.
    pub anchors: Vec<Vec<u8>>,
    /// DER certificate revocation lists, in file order.
    pub crls: Vec<Vec<u8>>,
}

impl fmt::Debug for Trust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Trust").field("anchors", &self.anchors.len()).field("crls", &self.crls.len()).finish()
    }
}

/// How a private key's DER bytes are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyFormat {
    /// PKCS#1 RSA key (`BEGIN RSA PRIVATE KEY`).
    Pkcs1,
    /// SEC1 EC key (`BEGIN EC PRIVATE KEY`).
    Sec1,
    /// PKCS#8 key of any type (`BEGIN PRIVATE KEY`).
    Pkcs8,
}

/// A CA that signs forged copies of server certificates (`[[ca]]`, for `decrypt-resign`).
#[derive(Clone, PartialEq, Eq)]
pub struct CaObject {
    /// The name rules use.
    pub name: String,
    /// The CA certificate, DER (the first certificate of the file).
    pub cert_der: Vec<u8>,
    /// The CA's private key, DER, framed as `key_format` says.
    pub key_der: Vec<u8>,
    /// The framing of `key_der`.
    pub key_format: KeyFormat,
}

impl CaObject {
    /// The private key in the form rustls takes.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        private_key(&self.key_der, self.key_format)
    }
}

impl fmt::Debug for CaObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaObject")
            .field("name", &self.name)
            .field("cert_der", &format_args!("<{} bytes>", self.cert_der.len()))
            .field("key_der", &format_args!("<redacted>"))
            .field("key_format", &self.key_format)
            .finish()
    }
}

/// An imported server certificate and its key (`[[known_key]]`, for `decrypt-known-key`).
#[derive(Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// The name rules use.
    pub name: String,
    /// The server certificate, DER (the first certificate of the file).
    pub cert_der: Vec<u8>,
    /// The server's private key, DER, framed as `key_format` says.
    pub key_der: Vec<u8>,
    /// The framing of `key_der`.
    pub key_format: KeyFormat,
    /// SHA-256 of `cert_der`: the key applies only while the server presents this certificate.
    pub cert_sha256: [u8; 32],
}

impl KnownKey {
    /// The private key in the form rustls takes.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        private_key(&self.key_der, self.key_format)
    }

    /// Whether the key is an RSA key (PKCS#1, or PKCS#8 with the rsaEncryption algorithm).
    pub fn is_rsa(&self) -> bool {
        const RSA_ENCRYPTION: [u8; 11] = [0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
        match self.key_format {
            KeyFormat::Pkcs1 => true,
            KeyFormat::Sec1 => false,
            // PrivateKeyInfo: SEQUENCE { version, AlgorithmIdentifier { OID, ... }, ... }: the OID comes early.
            KeyFormat::Pkcs8 => {
                self.key_der.get(..32).unwrap_or(&self.key_der).windows(11).any(|w| w == RSA_ENCRYPTION)
            }
        }
    }
}

impl fmt::Debug for KnownKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KnownKey")
            .field("name", &self.name)
            .field("cert_der", &format_args!("<{} bytes>", self.cert_der.len()))
            .field("key_der", &format_args!("<redacted>"))
            .field("key_format", &self.key_format)
            .field("cert_sha256", &crate::hex::colon_hex(&self.cert_sha256))
            .finish()
    }
}

/// A certificate named by rules' `certificate` condition (`[[certificate]]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CertificateObject {
    /// The name rules use.
    pub name: String,
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
}

fn private_key(der: &[u8], format: KeyFormat) -> PrivateKeyDer<'static> {
    let der = der.to_vec();
    match format {
        KeyFormat::Pkcs1 => PrivateKeyDer::Pkcs1(der.into()),
        KeyFormat::Sec1 => PrivateKeyDer::Sec1(der.into()),
        KeyFormat::Pkcs8 => PrivateKeyDer::Pkcs8(der.into()),
    }
}

/// SHA-256 of DER bytes.
pub(super) fn sha256(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

/// Every certificate of a PEM file (at least one).
pub(super) fn load_certificates(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let iter = CertificateDer::pem_file_iter(path).map_err(|e| pem_error(path, &e))?;
    let mut out = Vec::new();
    for cert in iter {
        out.push(cert.map_err(|e| pem_error(path, &e))?.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{} holds no certificate (a PEM `BEGIN CERTIFICATE` section)", path.display()));
    }
    Ok(out)
}

/// Every CRL of a PEM file (at least one).
pub(super) fn load_crls(path: &Path) -> Result<Vec<Vec<u8>>, String> {
    let iter = CertificateRevocationListDer::pem_file_iter(path).map_err(|e| pem_error(path, &e))?;
    let mut out = Vec::new();
    for crl in iter {
        out.push(crl.map_err(|e| pem_error(path, &e))?.as_ref().to_vec());
    }
    if out.is_empty() {
        return Err(format!("{} holds no CRL (a PEM `BEGIN X509 CRL` section)", path.display()));
    }
    for (i, der) in out.iter().enumerate() {
        check_crl(der).map_err(|why| format!("{}: CRL #{} cannot be used: {why}", path.display(), i + 1))?;
    }
    Ok(out)
}

/// Whether the certificate verifier can use a DER CRL; if not, why, in words.
pub fn check_crl(der: &[u8]) -> Result<(), String> {
    use webpki::Error as E;
    let Err(e) = webpki::OwnedCertRevocationList::from_der(der) else { return Ok(()) };
    // CertificateList ::= SEQUENCE { tbsCertList SEQUENCE { version INTEGER OPTIONAL, ... } ... }:
    // without the version, a version 1 CRL (which carries no extensions).
    let inner = |d: &[u8]| -> Option<usize> {
        let len = *d.get(1)?;
        Some(if len & 0x80 == 0 { 2 } else { 2 + usize::from(len & 0x7f) })
    };
    let tbs_first = inner(der).and_then(|h| der.get(h..)).and_then(|tbs| tbs.get(inner(tbs)?).copied());
    if tbs_first == Some(0x30) {
        return Err("it is a version 1 CRL: only version 2 CRLs, with their CRL number and authority key \
                    identifier extensions (RFC 5280, 5.2), can be used"
            .into());
    }
    Err(match e {
        E::UnsupportedCrlVersion => "it is a version 1 CRL; only version 2 CRLs (with extensions) can be used".into(),
        E::MalformedExtensions => "it has no extensions, or unreadable ones: a CRL must carry its CRL number \
                                   and authority key identifier (RFC 5280, 5.2)"
            .into(),
        E::InvalidCrlNumber => "its CRL number is not a non-negative integer of at most 20 bytes".into(),
        E::UnsupportedDeltaCrl => "it is a delta CRL, which cannot be used".into(),
        E::UnsupportedIndirectCrl => "it is an indirect CRL, which cannot be used".into(),
        E::UnsupportedCriticalExtension => "it has a critical extension the verifier does not know".into(),
        E::UnsupportedRevocationReason => "an entry gives a revocation reason the verifier does not know".into(),
        E::UnsupportedCrlIssuingDistributionPoint => {
            "its issuing distribution point is of a kind the verifier does not support".into()
        }
        E::BadDer | E::BadDerTime | E::TrailingData(_) => {
            "its DER does not parse (a CRL also needs a nextUpdate time, RFC 5280, 5.1.2.5)".into()
        }
        other => format!("{other:?}"),
    })
}

/// The first private key of a PEM file, refused if others than the owner may read the file.
pub(super) fn load_private_key(path: &Path) -> Result<(Vec<u8>, KeyFormat), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    check_private_mode(path, &meta)?;
    let key = PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no private key (a PEM `BEGIN PRIVATE KEY`, `BEGIN RSA PRIVATE KEY` or `BEGIN EC PRIVATE KEY` \
             section; encrypted keys are not supported)",
            path.display()
        ),
        // Only the kind of problem: the detail of a decoding error could quote key material.
        e => pem_error_kind(path, &e),
    })?;
    Ok(match key {
        PrivateKeyDer::Pkcs1(k) => (k.secret_pkcs1_der().to_vec(), KeyFormat::Pkcs1),
        PrivateKeyDer::Sec1(k) => (k.secret_sec1_der().to_vec(), KeyFormat::Sec1),
        PrivateKeyDer::Pkcs8(k) => (k.secret_pkcs8_der().to_vec(), KeyFormat::Pkcs8),
        _ => return Err(format!("{} holds a private key of a kind tlsgate does not know", path.display())),
    })
}

#[cfg(unix)]
fn check_private_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "private key file {0} is open to group or others (mode {mode:04o}): run `chmod 600 {0}`",
            path.display()
        ));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private_mode(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

/// A PEM problem of a certificate or CRL file.
fn pem_error(path: &Path, e: &pem::Error) -> String {
    match e {
        pem::Error::Io(io) => format!("cannot read {}: {io}", path.display()),
        e => format!("{} is not valid PEM: {e}", path.display()),
    }
}

/// A PEM problem of a key file, without details that could quote its content.
fn pem_error_kind(path: &Path, e: &pem::Error) -> String {
    let what = match e {
        pem::Error::Io(io) => return format!("cannot read {}: {io}", path.display()),
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section is not valid base64",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it cannot be decoded",
    };
    format!("{} is not valid PEM: {what}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(dir: &Path, name: &str, text: &str, mode: u32) -> std::path::PathBuf {
        let p = dir.join(name);
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        p
    }

    #[test]
    fn certificates_keys_and_their_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap().self_signed(&key).unwrap();
        let key2 = rcgen::KeyPair::generate().unwrap();
        let cert2 = rcgen::CertificateParams::new(vec!["b.example".into()]).unwrap().self_signed(&key2).unwrap();

        let both = write(dir.path(), "both.pem", &format!("{}{}", cert.pem(), cert2.pem()), 0o644);
        let certs = load_certificates(&both).unwrap();
        assert_eq!(certs, vec![cert.der().to_vec(), cert2.der().to_vec()]);
        assert_eq!(sha256(&certs[0]), <[u8; 32]>::from(Sha256::digest(cert.der())));

        let k = write(dir.path(), "k.key", &key.serialize_pem(), 0o600);
        let (der, format) = load_private_key(&k).unwrap();
        assert_eq!(format, KeyFormat::Pkcs8);
        assert_eq!(der, key.serialize_der());

        let open = write(dir.path(), "open.key", &key.serialize_pem(), 0o644);
        let e = load_private_key(&open).unwrap_err();
        assert!(e.contains(&format!("chmod 600 {}", open.display())), "{e}");
        assert!(e.contains("0644"), "{e}");

        // A certificate where a key is expected, and the other way round.
        let wrong = write(dir.path(), "wrong.key", &cert.pem(), 0o600);
        assert!(load_private_key(&wrong).unwrap_err().contains("holds no private key"));
        let wrong = write(dir.path(), "wrong.pem", &key.serialize_pem(), 0o600);
        assert!(load_certificates(&wrong).unwrap_err().contains("holds no certificate"));
        assert!(load_crls(&wrong).unwrap_err().contains("holds no CRL"));
        assert!(load_certificates(&dir.path().join("absent.pem")).unwrap_err().contains("cannot read"));

        // A broken key file: the message must not quote what is in it.
        let pem = key.serialize_pem();
        let broken = pem.replace("-----END PRIVATE KEY-----", "");
        let b = write(dir.path(), "broken.key", &broken, 0o600);
        let e = load_private_key(&b).unwrap_err();
        assert!(e.contains("not valid PEM"), "{e}");
        let body: String = pem.lines().nth(1).unwrap().chars().take(16).collect();
        assert!(!e.contains(&body), "{e}");
    }

    #[test]
    fn debug_output_hides_keys() {
        let ca =
            CaObject { name: "c".into(), cert_der: vec![1, 2], key_der: vec![0xAB; 4], key_format: KeyFormat::Pkcs8 };
        let kk = KnownKey {
            name: "k".into(),
            cert_der: vec![1],
            key_der: vec![0xAB; 4],
            key_format: KeyFormat::Sec1,
            cert_sha256: [0; 32],
        };
        for s in [format!("{ca:?}"), format!("{kk:?}")] {
            assert!(s.contains("<redacted>"), "{s}");
            assert!(!s.contains("171") && !s.contains("AB") && !s.contains("ab,"), "{s}");
        }
        assert!(matches!(ca.private_key(), PrivateKeyDer::Pkcs8(_)));
        assert!(matches!(kk.private_key(), PrivateKeyDer::Sec1(_)));
    }

    /// A CRL the verifier cannot use is refused at load, in words, naming its
    /// file: here a version 1 CRL (no extensions, so no CRL number), as
    /// `openssl ca -gencrl` makes without `crlnumber`.
    #[test]
    fn an_unusable_crl_is_refused_naming_the_file_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, "CRL Test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        write(d, "ca.pem", &ca.pem(), 0o644);
        write(d, "ca.key", &key.serialize_pem(), 0o600);
        write(d, "index.txt", "", 0o644);
        let conf = format!(
            "[ca]\ndefault_ca = own\n[own]\ndatabase = {}\ndefault_md = sha256\ndefault_crl_days = 30\n",
            d.join("index.txt").display()
        );
        write(d, "ca.cnf", &conf, 0o644);
        let out = d.join("v1.crl.pem");
        let ok = std::process::Command::new("openssl")
            .args(["ca", "-gencrl", "-batch", "-config"])
            .arg(d.join("ca.cnf"))
            .arg("-keyfile")
            .arg(d.join("ca.key"))
            .arg("-cert")
            .arg(d.join("ca.pem"))
            .arg("-out")
            .arg(&out)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl")
            .success();
        assert!(ok, "openssl ca -gencrl");
        let e = load_crls(&out).unwrap_err();
        assert!(e.starts_with(&format!("{}: CRL #1 cannot be used: it is a version 1 CRL", out.display())), "{e}");
    }
}
