//! Phase-1 facts from a ClientHello: SNI, ALPN, offered versions, suites,
//! compression, ECH, resumption, and the JA3 and JA4 fingerprints.
//!
//! tls-parser parses the ClientHello body and each extension's content; the
//! extension block is split here (tls-parser's list parser drops the raw
//! order of unknown types we need for JA3/JA4, and stops silently at the
//! first bad extension). SSLv2-format ClientHellos are parsed here too:
//! tls-parser has no SSLv2 support.

use md5::{Digest as _, Md5};
use sha2::Sha256;
use tls_parser::{parse_tls_client_hello_extension, parse_tls_handshake_client_hello, TlsExtension};
use tlsgate_config::facts::{ClientHelloFacts, TlsVersion};
use tlsgate_config::hex::hex;

/// Extension types the facts look at.
pub(crate) mod ext {
    pub const SERVER_NAME: u16 = 0x0000;
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    pub const ALPN: u16 = 0x0010;
    pub const SESSION_TICKET: u16 = 0x0023;
    pub const PRE_SHARED_KEY: u16 = 0x0029;
    pub const EARLY_DATA: u16 = 0x002a;
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
    pub const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
}

/// Why a ClientHello could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientHelloError {
    /// The body does not parse as a ClientHello.
    #[error("malformed ClientHello")]
    Malformed,
    /// The extension block is cut short or its lengths do not add up.
    #[error("malformed ClientHello extensions")]
    BadExtensions,
    /// The SSLv2 ClientHello's lengths do not add up.
    #[error("malformed SSLv2 ClientHello")]
    BadSslv2,
}

impl ClientHelloError {
    /// A fixed text for events.
    pub fn reason(self) -> &'static str {
        match self {
            ClientHelloError::Malformed => "malformed ClientHello",
            ClientHelloError::BadExtensions => "malformed ClientHello extensions",
            ClientHelloError::BadSslv2 => "malformed SSLv2 ClientHello",
        }
    }
}

/// What the observer keeps from a ClientHello beyond its facts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHelloDetails {
    /// The facts.
    pub facts: ClientHelloFacts,
    /// The legacy session id (to recognize a TLS <= 1.2 resumption echo).
    pub session_id: Vec<u8>,
    /// The client offered 0-RTT early data.
    pub early_data: bool,
}

/// Facts from a ClientHello handshake message body (after the 4-byte
/// handshake header).
pub fn client_hello_facts(body: &[u8]) -> Result<ClientHelloFacts, ClientHelloError> {
    parse_client_hello(body, true).map(|d| d.facts)
}

/// Computes JA3 and JA4 for facts whose ClientHello was parsed with the
/// fingerprints deferred (they carry the body in `raw`); a no-op otherwise.
pub fn fill_fingerprints(facts: &mut ClientHelloFacts) {
    if facts.raw.is_empty() || !facts.ja4.is_empty() {
        return;
    }
    let parsed =
        if facts.sslv2 { parse_sslv2_client_hello(&facts.raw, true) } else { parse_client_hello(&facts.raw, true) };
    if let Ok(d) = parsed {
        facts.ja3 = d.facts.ja3;
        facts.ja3_string = d.facts.ja3_string;
        facts.ja4 = d.facts.ja4;
        if facts.quic {
            // JA4's first character names the transport: `q` for QUIC.
            facts.ja4.replace_range(..1, "q");
        }
    }
}

/// Facts from an SSLv2-format ClientHello record body (after the 2-byte
/// record header: msg type 1, version, lengths, cipher specs, ...).
pub fn sslv2_client_hello_facts(body: &[u8]) -> Result<ClientHelloFacts, ClientHelloError> {
    parse_sslv2_client_hello(body, true).map(|d| d.facts)
}

/// An SNI as rules match it and events show it: lower case, without one
/// trailing dot (`Example.COM.` is `example.com`, as the server takes it).
pub fn normalised_sni(name: &[u8]) -> String {
    let mut s = String::from_utf8_lossy(name).to_ascii_lowercase();
    if s.ends_with('.') {
        s.pop();
    }
    s
}

/// Whether a 16-bit value is a GREASE value (RFC 8701: 0x0a0a, 0x1a1a, ...).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// Parses a ClientHello body into its details.
pub(crate) fn parse_client_hello(body: &[u8], fingerprints: bool) -> Result<ClientHelloDetails, ClientHelloError> {
    let (hello, extras) = read_hello(body, fingerprints)?;
    let facts = ClientHelloFacts {
        sni: hello.sni.clone(),
        alpn: hello.alpn.iter().map(|p| String::from_utf8_lossy(p).into_owned()).collect(),
        versions: hello.offered_versions(),
        wire_versions: hello.wire_versions(),
        cipher_suites: hello.ciphers.clone(),
        compression: extras.compression,
        ech: extras.ech,
        sslv2: false,
        quic: false,
        resumption_offered: !extras.session_id.is_empty() || extras.ticket || extras.psk,
        ja3_string: if fingerprints { hello.ja3_string() } else { String::new() },
        ja3: String::new(),
        ja4: if fingerprints { hello.ja4().0 } else { String::new() },
        raw: if fingerprints { Vec::new() } else { body.to_vec() },
    };
    let facts = if fingerprints { with_ja3_hash(facts) } else { facts };
    Ok(ClientHelloDetails { facts, session_id: extras.session_id, early_data: extras.early_data })
}

/// JA4 and its raw, unhashed form (`ja4_r`) for a ClientHello body.
pub fn ja4_with_raw(body: &[u8]) -> Result<(String, String), ClientHelloError> {
    read_hello(body, true).map(|(hello, _)| hello.ja4())
}

/// What a ClientHello says beyond the fingerprint inputs.
struct Extras {
    session_id: Vec<u8>,
    compression: Vec<u8>,
    ech: bool,
    ticket: bool,
    psk: bool,
    early_data: bool,
}

/// Reads a ClientHello body; `fingerprints`: also the extensions only JA3
/// and JA4 need (groups, point formats, signature algorithms), which the
/// packet path leaves to the event writer.
fn read_hello(body: &[u8], fingerprints: bool) -> Result<(Hello, Extras), ClientHelloError> {
    let (_, ch) = parse_tls_handshake_client_hello(body).map_err(|_| ClientHelloError::Malformed)?;
    let raw_extensions = split_extensions(ch.ext.unwrap_or_default())?;
    let mut hello = Hello::new(ch.version.0, ch.ciphers.iter().map(|c| c.0).collect());
    let mut extras = Extras {
        session_id: ch.session_id.unwrap_or_default().to_vec(),
        compression: ch.comp.iter().map(|c| c.0).collect(),
        ech: false,
        ticket: false,
        psk: false,
        early_data: false,
    };
    for raw in &raw_extensions {
        hello.extensions.push(raw.kind);
        match raw.kind {
            ext::SERVER_NAME => hello.sni_present = true,
            ext::ENCRYPTED_CLIENT_HELLO => extras.ech = true,
            ext::PRE_SHARED_KEY => extras.psk = true,
            ext::SESSION_TICKET => extras.ticket = !raw.data.is_empty(),
            ext::EARLY_DATA => extras.early_data = true,
            _ => {}
        }
        let needed = match raw.kind {
            ext::SERVER_NAME | ext::ALPN | ext::SUPPORTED_VERSIONS => true,
            ext::SUPPORTED_GROUPS | ext::EC_POINT_FORMATS | ext::SIGNATURE_ALGORITHMS => fingerprints,
            _ => false,
        };
        if !needed {
            continue;
        }
        // A content that tls-parser refuses is left out of the facts; the
        // type still counts for the fingerprints.
        let Ok((_, parsed)) = parse_tls_client_hello_extension(raw.whole) else { continue };
        match parsed {
            TlsExtension::SNI(names) if hello.sni.is_none() => {
                hello.sni = names.iter().find(|(kind, _)| kind.0 == 0).map(|(_, name)| normalised_sni(name));
            }
            TlsExtension::ALPN(protocols) => hello.alpn = protocols.iter().map(|p| p.to_vec()).collect(),
            TlsExtension::SupportedVersions(versions) => {
                hello.supported_versions = Some(versions.iter().map(|v| v.0).collect())
            }
            TlsExtension::EllipticCurves(groups) => hello.groups = groups.iter().map(|g| g.0).collect(),
            TlsExtension::EcPointFormats(formats) => hello.point_formats = formats.to_vec(),
            TlsExtension::SignatureAlgorithms(algs) => hello.signature_algorithms = algs,
            _ => {}
        }
    }
    Ok((hello, extras))
}

/// Parses an SSLv2 ClientHello (RFC 6101 appendix E.2 / draft-hickman):
/// msg_type(1) = 1, version(2), cipher_spec_length(2), session_id_length(2),
/// challenge_length(2), cipher_specs (3 bytes each), session_id, challenge.
pub(crate) fn parse_sslv2_client_hello(
    body: &[u8],
    fingerprints: bool,
) -> Result<ClientHelloDetails, ClientHelloError> {
    let field = |at: usize| -> Result<u16, ClientHelloError> {
        match body.get(at..at + 2) {
            Some(&[a, b]) => Ok(u16::from_be_bytes([a, b])),
            _ => Err(ClientHelloError::BadSslv2),
        }
    };
    if body.first() != Some(&1) {
        return Err(ClientHelloError::BadSslv2);
    }
    let version = field(1)?;
    let specs_len = usize::from(field(3)?);
    let sid_len = usize::from(field(5)?);
    let challenge_len = usize::from(field(7)?);
    if specs_len % 3 != 0 || 9 + specs_len + sid_len + challenge_len > body.len() {
        return Err(ClientHelloError::BadSslv2);
    }
    let specs = body.get(9..9 + specs_len).ok_or(ClientHelloError::BadSslv2)?;
    let session_id = body.get(9 + specs_len..9 + specs_len + sid_len).ok_or(ClientHelloError::BadSslv2)?;
    // A 3-byte spec below 0x010000 is a TLS suite in SSLv2 clothing.
    let ciphers: Vec<u16> =
        specs.chunks_exact(3).filter(|s| s[0] == 0).map(|s| u16::from_be_bytes([s[1], s[2]])).collect();
    let mut versions = vec![TlsVersion::Ssl2];
    if version >= 0x0300 {
        versions.extend(legacy_range(version));
    }
    let mut hello = Hello::new(version, ciphers.clone());
    hello.sslv2 = true;
    let facts = ClientHelloFacts {
        sni: None,
        alpn: Vec::new(),
        wire_versions: versions.iter().map(|v| v.wire()).collect(),
        versions,
        cipher_suites: ciphers,
        compression: Vec::new(),
        ech: false,
        sslv2: true,
        quic: false,
        resumption_offered: !session_id.is_empty(),
        ja3_string: if fingerprints { hello.ja3_string() } else { String::new() },
        ja3: String::new(),
        ja4: if fingerprints { hello.ja4().0 } else { String::new() },
        raw: if fingerprints { Vec::new() } else { body.to_vec() },
    };
    let facts = if fingerprints { with_ja3_hash(facts) } else { facts };
    Ok(ClientHelloDetails { facts, session_id: session_id.to_vec(), early_data: false })
}

fn with_ja3_hash(mut facts: ClientHelloFacts) -> ClientHelloFacts {
    facts.ja3 = hex(&Md5::digest(facts.ja3_string.as_bytes()));
    facts
}

/// One extension as it appears on the wire.
pub(crate) struct RawExtension<'a> {
    pub(crate) kind: u16,
    pub(crate) data: &'a [u8],
    /// Type, length and data (what tls-parser's extension parser takes).
    pub(crate) whole: &'a [u8],
}

/// Splits an extension block into its extensions, in order.
pub(crate) fn split_extensions(mut block: &[u8]) -> Result<Vec<RawExtension<'_>>, ClientHelloError> {
    let mut out = Vec::new();
    while !block.is_empty() {
        let (kind, len) = match block.get(..4) {
            Some(&[a, b, c, d]) => (u16::from_be_bytes([a, b]), usize::from(u16::from_be_bytes([c, d]))),
            _ => return Err(ClientHelloError::BadExtensions),
        };
        let whole = block.get(..4 + len).ok_or(ClientHelloError::BadExtensions)?;
        let data = whole.get(4..).unwrap_or_default();
        out.push(RawExtension { kind, data, whole });
        block = block.get(4 + len..).unwrap_or_default();
    }
    Ok(out)
}

/// The fingerprint inputs of one ClientHello (GREASE still included).
struct Hello {
    /// SSLv2 format (JA4 says `s2` whatever the version field says).
    sslv2: bool,
    sni_present: bool,
    legacy_version: u16,
    ciphers: Vec<u16>,
    extensions: Vec<u16>,
    sni: Option<String>,
    alpn: Vec<Vec<u8>>,
    supported_versions: Option<Vec<u16>>,
    groups: Vec<u16>,
    point_formats: Vec<u8>,
    signature_algorithms: Vec<u16>,
}

impl Hello {
    fn new(legacy_version: u16, ciphers: Vec<u16>) -> Hello {
        Hello {
            sslv2: false,
            sni_present: false,
            legacy_version,
            ciphers,
            extensions: Vec::new(),
            sni: None,
            alpn: Vec::new(),
            supported_versions: None,
            groups: Vec::new(),
            point_formats: Vec::new(),
            signature_algorithms: Vec::new(),
        }
    }

    /// The versions offered as sent, GREASE left out.
    fn wire_versions(&self) -> Vec<u16> {
        match &self.supported_versions {
            Some(list) => list.iter().copied().filter(|v| !is_grease(*v)).collect(),
            None => self.offered_versions().into_iter().map(TlsVersion::wire).collect(),
        }
    }

    fn offered_versions(&self) -> Vec<TlsVersion> {
        match &self.supported_versions {
            Some(list) => {
                let mut versions: Vec<TlsVersion> = list.iter().filter_map(|v| TlsVersion::family(*v)).collect();
                versions.sort();
                versions.dedup();
                versions
            }
            None => legacy_range(self.legacy_version),
        }
    }

    /// `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`,
    /// decimal, dash-separated, GREASE removed (Salesforce's JA3).
    fn ja3_string(&self) -> String {
        // Built in one buffer: this runs for every ClientHello on a packet core.
        let mut out = String::with_capacity(16 + 6 * (self.ciphers.len() + self.extensions.len() + self.groups.len()));
        push_decimal(&mut out, self.legacy_version);
        let field = |out: &mut String, values: &mut dyn Iterator<Item = u16>| {
            out.push(',');
            let mut first = true;
            for v in values.filter(|v| !is_grease(*v)) {
                if !first {
                    out.push('-');
                }
                first = false;
                push_decimal(out, v);
            }
        };
        field(&mut out, &mut self.ciphers.iter().copied());
        field(&mut out, &mut self.extensions.iter().copied());
        field(&mut out, &mut self.groups.iter().copied());
        field(&mut out, &mut self.point_formats.iter().map(|p| u16::from(*p)));
        out
    }

    /// JA4 (FoxIO, TCP) and its raw, unhashed form `ja4_r`. The third part
    /// hashes the sorted extensions and, after `_`, the signature algorithms
    /// (FoxIO's spec; without signature algorithms there is no `_`).
    fn ja4(&self) -> (String, String) {
        let version = match &self.supported_versions {
            Some(list) => list.iter().copied().filter(|v| !is_grease(*v)).max().unwrap_or(self.legacy_version),
            None => self.legacy_version,
        };
        let version = if self.sslv2 { "s2" } else { version_code(version) };
        let mut ciphers: Vec<u16> = self.ciphers.iter().copied().filter(|c| !is_grease(*c)).collect();
        let extensions: Vec<u16> = self.extensions.iter().copied().filter(|e| !is_grease(*e)).collect();
        let alpn = match self.alpn.first() {
            Some(first) => alpn_code(first),
            None => "00".to_string(),
        };
        let a = format!(
            "t{version}{}{:02}{:02}{alpn}",
            if self.sni_present { 'd' } else { 'i' },
            ciphers.len().min(99),
            extensions.len().min(99),
        );
        ciphers.sort_unstable();
        let mut hashed_extensions: Vec<u16> =
            extensions.iter().copied().filter(|e| *e != ext::SERVER_NAME && *e != ext::ALPN).collect();
        hashed_extensions.sort_unstable();
        let b_raw = hex_list(&ciphers);
        let mut c_raw = hex_list(&hashed_extensions);
        let sigs: Vec<u16> = self.signature_algorithms.iter().copied().filter(|s| !is_grease(*s)).collect();
        if !sigs.is_empty() {
            c_raw.push('_');
            c_raw.push_str(&hex_list(&sigs));
        }
        let b = if ciphers.is_empty() { "000000000000".to_string() } else { sha256_12(&b_raw) };
        let c = if c_raw.is_empty() { "000000000000".to_string() } else { sha256_12(&c_raw) };
        (format!("{a}_{b}_{c}"), format!("{a}_{b_raw}_{c_raw}"))
    }
}

/// SSL 3.0 up to `legacy` (what a client without supported_versions offers).
fn legacy_range(legacy: u16) -> Vec<TlsVersion> {
    let top = TlsVersion::from_wire(legacy.min(0x0303)).unwrap_or(TlsVersion::Ssl3);
    TlsVersion::ALL.into_iter().filter(|v| *v >= TlsVersion::Ssl3 && *v <= top).collect()
}

fn version_code(v: u16) -> &'static str {
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// First and last character of the first ALPN value, as FoxIO's reference
/// implementation computes them (and its captures' expected values hold):
/// the value read as UTF-8 (invalid bytes each one replacement character),
/// a character outside ASCII written `9`, a missing one `0` (a one-character
/// value has no last character).
fn alpn_code(value: &[u8]) -> String {
    let text = String::from_utf8_lossy(value);
    let shown = |c: char| if c.is_ascii() { c } else { '9' };
    let mut chars = text.chars();
    let first = chars.next().map_or('0', shown);
    let last = chars.next_back().map_or('0', shown);
    format!("{first}{last}")
}

fn hex_list(values: &[u16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(values.len() * 5);
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for shift in [12, 8, 4, 0] {
            out.push(char::from(HEX[((v >> shift) & 0xf) as usize]));
        }
    }
    out
}

/// Appends `v` in decimal without going through the formatting machinery.
fn push_decimal(out: &mut String, v: u16) {
    let mut buf = [0u8; 5];
    let mut i = buf.len();
    let mut n = v;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &b in &buf[i..] {
        out.push(char::from(b));
    }
}

fn sha256_12(s: &str) -> String {
    let mut h = hex(&Sha256::digest(s.as_bytes()));
    h.truncate(12);
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::*;

    #[test]
    fn chrome_hello_matches_published_ja3_and_ja4() {
        let body = chrome_client_hello();
        let facts = client_hello_facts(&body).unwrap();
        assert_eq!(
            facts.ja3_string,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0"
        );
        assert_eq!(facts.ja3, "98487aa16281980e7d1120d399efb6a4");
        assert_eq!(facts.ja4, "t13d1516h2_8daaf6152771_d8a2da3f94cd");
        let (_, raw) = ja4_with_raw(&body).unwrap();
        assert_eq!(
            raw,
            "t13d1516h2_002f,0035,009c,009d,1301,1302,1303,c013,c014,c02b,c02c,c02f,c030,cca8,cca9_\
             0005,000a,000b,000d,0012,0017,001b,0023,002b,002d,0033,44cd,fe0d,ff01_\
             0403,0804,0401,0503,0805,0501,0806,0601"
        );
        assert_eq!(facts.sni.as_deref(), Some("tls-outer.browserleaks.com"));
        assert_eq!(facts.alpn, vec!["h2", "http/1.1"]);
        assert_eq!(facts.versions, vec![TlsVersion::Tls12, TlsVersion::Tls13]);
        assert_eq!(facts.cipher_suites.len(), 16); // GREASE kept as sent
        assert_eq!(facts.compression, vec![0]);
        assert!(facts.ech);
        assert!(!facts.sslv2);
        assert!(facts.resumption_offered); // 32-byte legacy session id
    }

    #[test]
    fn without_supported_versions_offers_ssl3_to_legacy() {
        let body = client_hello(0x0302, &[], &[0x002f, 0x0035], &[]);
        let facts = client_hello_facts(&body).unwrap();
        assert_eq!(facts.versions, vec![TlsVersion::Ssl3, TlsVersion::Tls10, TlsVersion::Tls11]);
        assert_eq!(facts.ja3_string, "770,47-53,,,");
        assert!(!facts.resumption_offered);
        assert_eq!(facts.sni, None);
        // No extensions, no signature algorithms: the third part hashes nothing.
        assert_eq!(facts.ja4, format!("t11i020000_{}_000000000000", sha256_12("002f,0035")));
    }

    #[test]
    fn resumption_offers() {
        let ticket = client_hello(0x0303, &[], &[0x002f], &[extension(0x0023, &[1, 2, 3])]);
        assert!(client_hello_facts(&ticket).unwrap().resumption_offered);
        let empty_ticket = client_hello(0x0303, &[], &[0x002f], &[extension(0x0023, &[])]);
        assert!(!client_hello_facts(&empty_ticket).unwrap().resumption_offered);
        let psk = client_hello(0x0303, &[], &[0x1301], &[extension(0x0029, &[0, 0])]);
        assert!(client_hello_facts(&psk).unwrap().resumption_offered);
    }

    #[test]
    fn sni_is_normalised_before_matching() {
        assert_eq!(normalised_sni(b"Example.COM."), "example.com");
        assert_eq!(normalised_sni(b"example.com"), "example.com");
        // One trailing dot only: two are not a name the server resolves the same way.
        assert_eq!(normalised_sni(b"a.test.."), "a.test.");
    }

    #[test]
    fn alpn_code_of_odd_values() {
        assert_eq!(alpn_code(b"h2"), "h2");
        assert_eq!(alpn_code(b"http/1.1"), "h1");
        // As FoxIO's reference implementation has them.
        assert_eq!(alpn_code(b"h"), "h0");
        assert_eq!(alpn_code(&[0xab, 0xcd]), "99");
        assert_eq!(alpn_code(&[b'x', 0xff]), "x9");
        assert_eq!(alpn_code("é-x".as_bytes()), "9x");
        assert_eq!(alpn_code(b"-h2-"), "--");
        assert_eq!(alpn_code(b""), "00");
    }

    #[test]
    fn grease_values() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x0a1a) && !is_grease(0x1301) && !is_grease(0x000a));
    }

    #[test]
    fn sslv2_hello() {
        // CLIENT-HELLO, version 0x0301, 3 specs (one SSLv2-only), no session id, 16-byte challenge.
        let mut body = vec![1, 0x03, 0x01, 0, 9, 0, 0, 0, 16];
        body.extend_from_slice(&[0x07, 0x00, 0xc0, 0x00, 0x00, 0x35, 0x00, 0x00, 0x0a]);
        body.extend_from_slice(&[0x55; 16]);
        let facts = sslv2_client_hello_facts(&body).unwrap();
        assert!(facts.sslv2);
        assert_eq!(facts.cipher_suites, vec![0x0035, 0x000a]);
        assert_eq!(facts.versions, vec![TlsVersion::Ssl2, TlsVersion::Ssl3, TlsVersion::Tls10]);
        assert_eq!(facts.ja3_string, "769,53-10,,,");
        assert!(facts.ja4.starts_with("ts2i020000_"));
        assert_eq!(sslv2_client_hello_facts(&body[..20]), Err(ClientHelloError::BadSslv2));
    }

    #[test]
    fn broken_hellos_are_errors() {
        let good = chrome_client_hello();
        for cut in 0..good.len() {
            // Every truncation is an error or a smaller hello, never a panic.
            let _ = client_hello_facts(&good[..cut]);
        }
        assert_eq!(client_hello_facts(&[3, 3, 0]), Err(ClientHelloError::Malformed));
        let mut bad_ext = client_hello(0x0303, &[], &[0x002f], &[extension(0x0000, &sni("a"))]);
        bad_ext.push(0x01); // one byte of a next extension header, inside the block
        let n = bad_ext.len();
        let block_len_at = 2 + 32 + 1 + 4 + 2;
        let block_len = (n - block_len_at - 2) as u16;
        bad_ext[block_len_at..block_len_at + 2].copy_from_slice(&block_len.to_be_bytes());
        assert_eq!(client_hello_facts(&bad_ext), Err(ClientHelloError::BadExtensions));
    }
}
