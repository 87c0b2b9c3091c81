//! Test ground for loading policies: the spec's example policy file and every
//! object file it names (CA, keys, certificates, CRL), freshly made in a
//! temporary folder. Shared by the tests of `file.rs` and `mod.rs`.

use std::path::{Path, PathBuf};

use super::objects;

/// A folder with the spec's example policy and every file it names.
pub(super) struct Fixture {
    /// The folder; removed when the fixture is dropped.
    pub dir: tempfile::TempDir,
    /// SHA-256 of `ca.pem`.
    pub ca_sha256: [u8; 32],
    /// SHA-256 of `intranet.pem`.
    pub intranet_sha256: [u8; 32],
}

impl Fixture {
    /// The policy file, `policy.toml` in the folder.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("policy.toml")
    }
}

/// Writes [`GOOD`] as `policy.toml`, with the CA, key, certificate and CRL files it names.
pub(super) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut params = rcgen::CertificateParams::new(vec![]).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(rcgen::DnType::CommonName, "Corp Resign CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let intranet =
        rcgen::CertificateParams::new(vec!["intranet.example".into()]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2024, 1, 1),
        next_update: rcgen::date_time_ymd(2034, 1, 1),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&ca, &ca_key)
    .unwrap();
    write(d, "roots.pem", &format!("{}{}", ca.pem(), intranet.pem()), 0o644);
    write(d, "revoked.crl.pem", &crl.pem().unwrap(), 0o644);
    write(d, "ca.pem", &ca.pem(), 0o644);
    write(d, "ca.key", &ca_key.serialize_pem(), 0o600);
    write(d, "intranet.pem", &intranet.pem(), 0o644);
    std::fs::create_dir(d.join("keys")).unwrap();
    write(d, "keys/intranet.key", &key.serialize_pem(), 0o600);
    write(d, "policy.toml", GOOD, 0o644);
    Fixture { ca_sha256: objects::sha256(ca.der()), intranet_sha256: objects::sha256(intranet.der()), dir }
}

/// The spec's example policy: every section, every condition, every action.
pub(super) const GOOD: &str = r#"[policy]
default_action = "do-not-decrypt"

[policy.undecryptable]
sslv2 = "block"
compressed = "inherit"
client_auth = "block-with-reset"

[trust]
ca_files = ["roots.pem"]
crl_files = ["revoked.crl.pem"]

[[ca]]
name = "corp-resign"
cert = "ca.pem"
key = "ca.key"

[[known_key]]
name = "intranet"
cert = "intranet.pem"
key = "keys/intranet.key"

[[certificate]]
name = "bad-cert"
sha256 = "ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd:ab:cd"

[[certificate]]
name = "intranet-cert"
file = "intranet.pem"

[[rule]]
name = "block-bad-hosts"
enabled = true
action = "block"
source_networks = ["10.0.0.0/8", "2001:db8::/32"]
dest_networks = ["192.0.2.0/24"]
source_ports = ["1024-65535"]
dest_ports = ["443", "8000-8080"]
vlan = [10, 20]
ingress = ["net_af_packet0"]
sni = ["example.com", "*.example.org"]
subject = ["CN=*.example.com", "O=Example Inc"]
issuer = ["CN=Evil CA"]
certificate = ["bad-cert"]
cert_status = { expired = true, self-signed = true, valid = false }
cipher_suites = ["TLS_RSA_WITH_RC4_128_MD5"]
versions = ["ssl3.0", "tls1.0"]

[[rule]]
name = "intranet"
action = "decrypt-known-key"
known_key = "intranet"
certificate = ["intranet-cert"]

[[rule]]
name = "resign"
action = "decrypt-resign"
ca = "corp-resign"
sni = ["*.example.net"]

[[rule]]
name = "watch"
action = "monitor"
enabled = false
"#;

/// Writes `text` to `dir/name` with permission bits `mode` (on Unix).
pub(super) fn write(dir: &Path, name: &str, text: &str, mode: u32) {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}
