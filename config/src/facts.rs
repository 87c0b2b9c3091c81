//! Facts about one TLS session, as the observer learns them phase by phase
//! and as the policy evaluates them. Plain data: no packets, no I/O.
//!
//! A fact that is `None` has not been seen (yet). Phase 1 is the ClientHello,
//! phase 2 the ServerHello with (TLS <= 1.2) the Certificate, phase 3 the slow
//! path's own upstream handshake.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// Lives in [`crate::hex`](mod@crate::hex); kept at this path for the callers that print facts.
pub use crate::hex::colon_hex;

/// A protocol version, as negotiated or offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TlsVersion {
    /// SSL 2.0 (only ever seen as a ClientHello format).
    Ssl2,
    /// SSL 3.0.
    Ssl3,
    /// TLS 1.0.
    Tls10,
    /// TLS 1.1.
    Tls11,
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl TlsVersion {
    /// Every version, oldest first.
    pub const ALL: [TlsVersion; 6] = [
        TlsVersion::Ssl2,
        TlsVersion::Ssl3,
        TlsVersion::Tls10,
        TlsVersion::Tls11,
        TlsVersion::Tls12,
        TlsVersion::Tls13,
    ];

    /// From the wire value (0x0301 = TLS 1.0 ...); `None` for GREASE and unknown values.
    pub fn from_wire(v: u16) -> Option<TlsVersion> {
        Some(match v {
            0x0002 => TlsVersion::Ssl2,
            0x0300 => TlsVersion::Ssl3,
            0x0301 => TlsVersion::Tls10,
            0x0302 => TlsVersion::Tls11,
            0x0303 => TlsVersion::Tls12,
            0x0304 => TlsVersion::Tls13,
            _ => return None,
        })
    }

    /// The wire value (0x0303 for TLS 1.2).
    pub fn wire(self) -> u16 {
        match self {
            TlsVersion::Ssl2 => 0x0002,
            TlsVersion::Ssl3 => 0x0300,
            TlsVersion::Tls10 => 0x0301,
            TlsVersion::Tls11 => 0x0302,
            TlsVersion::Tls12 => 0x0303,
            TlsVersion::Tls13 => 0x0304,
        }
    }

    /// The version a wire value belongs to: as [`from_wire`](Self::from_wire),
    /// and the TLS 1.3 drafts (0x7fNN, Facebook's 0xfbNN) count as TLS 1.3,
    /// which they are in every way the policy and the observer care about.
    pub fn family(v: u16) -> Option<TlsVersion> {
        match v >> 8 {
            0x7f | 0xfb if v & 0xff != 0 => Some(TlsVersion::Tls13),
            _ => TlsVersion::from_wire(v),
        }
    }

    /// The name in events (Suricata EVE's `tls.version`): `TLS 1.2`, `SSLv3`.
    pub fn event_name(self) -> &'static str {
        match self {
            TlsVersion::Ssl2 => "SSLv2",
            TlsVersion::Ssl3 => "SSLv3",
            TlsVersion::Tls10 => "TLS 1.0",
            TlsVersion::Tls11 => "TLS 1.1",
            TlsVersion::Tls12 => "TLS 1.2",
            TlsVersion::Tls13 => "TLS 1.3",
        }
    }

    /// The name in the policy file: `tls1.2`, `ssl3.0`.
    pub fn config_name(self) -> &'static str {
        match self {
            TlsVersion::Ssl2 => "ssl2.0",
            TlsVersion::Ssl3 => "ssl3.0",
            TlsVersion::Tls10 => "tls1.0",
            TlsVersion::Tls11 => "tls1.1",
            TlsVersion::Tls12 => "tls1.2",
            TlsVersion::Tls13 => "tls1.3",
        }
    }

    /// From the policy file's name.
    pub fn from_config_name(s: &str) -> Option<TlsVersion> {
        TlsVersion::ALL.into_iter().find(|v| v.config_name() == s)
    }

    /// Bit index (for version bitsets).
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.event_name())
    }
}

/// The name of a wire version in events: `TLS 1.2`, `SSLv3`; the TLS 1.3
/// drafts as Suricata names them (`TLS 1.3 draft-23`, `TLS 1.3 draft-<16`,
/// `TLS 1.3 draft-26-fb`); anything else in hex (`0x0a0a`), never dropped.
pub fn version_name(v: u16) -> std::borrow::Cow<'static, str> {
    use std::borrow::Cow;
    let minor = v & 0xff;
    match (v >> 8, TlsVersion::from_wire(v)) {
        (_, Some(known)) => Cow::Borrowed(known.event_name()),
        (0x7f, _) if (1..16).contains(&minor) => Cow::Borrowed("TLS 1.3 draft-<16"),
        (0x7f, _) if minor >= 16 => Cow::Owned(format!("TLS 1.3 draft-{minor}")),
        (0xfb, _) if minor != 0 => Cow::Owned(format!("TLS 1.3 draft-{minor}-fb")),
        _ => Cow::Owned(format!("0x{v:04x}")),
    }
}

/// The IANA name of a cipher suite (`TLS_AES_128_GCM_SHA256`), if known.
pub fn cipher_suite_name(id: u16) -> Option<&'static str> {
    tls_parser::TlsCipherSuite::from_id(id).map(|c| c.name)
}

/// The id of a cipher suite from its IANA name.
pub fn cipher_suite_id(name: &str) -> Option<u16> {
    tls_parser::TlsCipherSuite::from_name(name).map(|c| c.id.0)
}

/// What the ClientHello offered (phase 1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloFacts {
    /// Server Name Indication, lower-cased (`None`: no SNI extension).
    pub sni: Option<String>,
    /// ALPN protocols offered, in order.
    pub alpn: Vec<String>,
    /// Versions offered: supported_versions when present, else every version
    /// from SSL 3.0 up to the legacy version field.
    pub versions: Vec<TlsVersion>,
    /// Versions offered as on the wire: supported_versions in the client's
    /// order without GREASE (the event names them all, drafts and unknown
    /// values included), else `versions`' values.
    pub wire_versions: Vec<u16>,
    /// Cipher suites offered, in order (GREASE values included as sent).
    pub cipher_suites: Vec<u16>,
    /// Compression methods offered.
    pub compression: Vec<u8>,
    /// An Encrypted ClientHello extension is present (the SNI is the outer one).
    pub ech: bool,
    /// The ClientHello came in SSLv2 format.
    pub sslv2: bool,
    /// The ClientHello came in QUIC CRYPTO frames (JA4's protocol is `q`).
    pub quic: bool,
    /// A session id, session ticket or PSK was offered (resumption possible).
    pub resumption_offered: bool,
    /// JA3 hash (MD5 hex of the JA3 string).
    pub ja3: String,
    /// JA3 string.
    pub ja3_string: String,
    /// JA4 fingerprint.
    pub ja4: String,
    /// The ClientHello body as sent, when the fingerprints above are left
    /// for the event writer to compute (empty otherwise): they decide nothing,
    /// and hashing and formatting them costs more than the packets of a
    /// handshake on a packet core.
    pub raw: Vec<u8>,
}

/// What the ServerHello chose (phase 2).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHelloFacts {
    /// Negotiated version (supported_versions when present; a TLS 1.3 draft is TLS 1.3).
    pub version: Option<TlsVersion>,
    /// The negotiated version as on the wire (the event names drafts and
    /// unknown values by it).
    pub wire_version: u16,
    /// Negotiated cipher suite.
    pub cipher_suite: u16,
    /// Negotiated compression method (0 = none).
    pub compression: u8,
    /// ALPN protocol chosen.
    pub alpn: Option<String>,
    /// The session was resumed (abbreviated handshake, or a TLS 1.3 PSK accepted).
    pub resumed: bool,
    /// A HelloRetryRequest was seen before the real ServerHello.
    pub hello_retry: bool,
}

/// A distinguished name: its attributes in order, and the text form events show.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DistinguishedName {
    /// (short attribute name: CN, O, OU, C, L, ST, ..., value), in certificate order.
    pub attributes: Vec<(String, String)>,
}

impl DistinguishedName {
    /// Values of attribute `attr` (e.g. "CN").
    pub fn values<'a>(&'a self, attr: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.attributes.iter().filter(move |(a, _)| a.eq_ignore_ascii_case(attr)).map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for DistinguishedName {
    /// `CN=www.example.com, O=Example, C=US` (Suricata EVE's form).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, v)) in self.attributes.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}={v}")?;
        }
        Ok(())
    }
}

/// Facts about one certificate (the server's leaf unless said otherwise).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertificateFacts {
    /// Subject.
    pub subject: DistinguishedName,
    /// Issuer.
    pub issuer: DistinguishedName,
    /// SAN dNSName entries, lower-cased.
    pub san_dns: Vec<String>,
    /// SAN iPAddress entries.
    pub san_ip: Vec<IpAddr>,
    /// Serial number, colon-separated upper-case hex (`1E:58:FD:C1`).
    pub serial: String,
    /// notBefore, seconds since the Unix epoch.
    pub not_before: i64,
    /// notAfter, seconds since the Unix epoch.
    pub not_after: i64,
    /// SHA-1 of the DER certificate.
    pub sha1: [u8; 20],
    /// SHA-256 of the DER certificate.
    pub sha256: [u8; 32],
    /// Public key type: `rsa`, `ecdsa`, `ed25519`, `ed448`, `dsa` or `unknown`.
    pub key_type: String,
    /// Public key size in bits (RSA modulus, EC curve size).
    pub key_bits: u32,
    /// Signature algorithm name (`sha256WithRSAEncryption`, `ecdsa-with-SHA384`).
    pub signature_algorithm: String,
}

/// A certificate status; a certificate can have several.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CertStatus {
    /// Trusted issuer, good signature, not revoked, within validity.
    Valid,
    /// Past notAfter.
    Expired,
    /// Before notBefore.
    NotYetValid,
    /// Issued by itself.
    SelfSigned,
    /// The chain does not validly lead to a trusted issuer for a TLS server:
    /// no path, an issuer or root out of its dates, a constraint the path
    /// breaks (basic constraints, path length, name constraints, the
    /// serverAuth EKU).
    InvalidIssuer,
    /// A signature in the chain does not verify.
    InvalidSignature,
    /// Revoked by a configured CRL.
    Revoked,
    /// The certificate's DER does not parse.
    InvalidCertificate,
    /// A CRL that applies cannot be used (bad signature, expired).
    InvalidCrl,
    /// SNI present and not matched by the certificate.
    ServerMismatch,
    /// The chain parses, but tlsgate's verifier cannot judge it: a key or
    /// signature algorithm it does not support (ML-DSA, Ed448, DSA), a
    /// critical extension it does not know, an encoding it refuses (a
    /// negative serial number). Never `valid`; not `invalid-signature` either.
    Unverified,
}

impl CertStatus {
    /// Every status.
    pub const ALL: [CertStatus; 11] = [
        CertStatus::Valid,
        CertStatus::Expired,
        CertStatus::NotYetValid,
        CertStatus::SelfSigned,
        CertStatus::InvalidIssuer,
        CertStatus::InvalidSignature,
        CertStatus::Revoked,
        CertStatus::InvalidCertificate,
        CertStatus::InvalidCrl,
        CertStatus::ServerMismatch,
        CertStatus::Unverified,
    ];

    /// The name in the policy file and in events.
    pub fn name(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Expired => "expired",
            CertStatus::NotYetValid => "not-yet-valid",
            CertStatus::SelfSigned => "self-signed",
            CertStatus::InvalidIssuer => "invalid-issuer",
            CertStatus::InvalidSignature => "invalid-signature",
            CertStatus::Revoked => "revoked",
            CertStatus::InvalidCertificate => "invalid-certificate",
            CertStatus::InvalidCrl => "invalid-crl",
            CertStatus::ServerMismatch => "server-mismatch",
            CertStatus::Unverified => "unverified",
        }
    }

    /// From the name.
    pub fn from_name(s: &str) -> Option<CertStatus> {
        CertStatus::ALL.into_iter().find(|c| c.name() == s)
    }

    /// Bit of this status in a [`CertStatusSet`].
    pub fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of statuses (bit i = `CertStatus::ALL[i]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct CertStatusSet(pub u16);

impl CertStatusSet {
    /// Adds a status.
    pub fn insert(&mut self, s: CertStatus) {
        self.0 |= s.bit();
    }

    /// Whether it holds `s`.
    pub fn contains(self, s: CertStatus) -> bool {
        self.0 & s.bit() != 0
    }

    /// The statuses held, in `ALL` order.
    pub fn iter(self) -> impl Iterator<Item = CertStatus> {
        CertStatus::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// Names, for events.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(CertStatus::name).collect()
    }
}

/// Where the session is on the wire (always known).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowFacts {
    /// Client address.
    pub src_ip: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server address.
    pub dest_ip: IpAddr,
    /// Server port.
    pub dest_port: u16,
    /// Outer VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// Name of the port the client's packets enter by.
    pub ingress: String,
}

/// Everything known about a session at one point in time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionFacts {
    /// The flow.
    pub flow: FlowFacts,
    /// Phase 1.
    pub client_hello: Option<ClientHelloFacts>,
    /// Phase 2.
    pub server_hello: Option<ServerHelloFacts>,
    /// The server's leaf certificate (TLS <= 1.2 on the wire, or from the
    /// server identity cache or the slow path's own handshake). Shared:
    /// servers reuse certificates, and their facts are parsed once.
    pub certificate: Option<Arc<CertificateFacts>>,
    /// The leaf's status (computed with the chain, at the packet's time).
    pub cert_status: Option<CertStatusSet>,
    /// The server asked for a client certificate.
    pub client_cert_requested: bool,
    /// The server stapled an OCSP response to its certificate.
    pub ocsp_stapled: bool,
    /// The cleartext prelude the TLS session followed: `smtp`, `http-connect` ...
    pub starttls: Option<&'static str>,
    /// An HTTP CONNECT's target (`host:port`).
    pub connect_target: Option<String>,
    /// The session runs over QUIC, this version (its handshake came in Initial packets).
    pub quic_version: Option<u32>,
}

impl SessionFacts {
    /// A session about which only the flow is known.
    pub fn new(flow: FlowFacts) -> SessionFacts {
        SessionFacts {
            flow,
            client_hello: None,
            server_hello: None,
            certificate: None,
            cert_status: None,
            client_cert_requested: false,
            ocsp_stapled: false,
            starttls: None,
            connect_target: None,
            quic_version: None,
        }
    }
}
