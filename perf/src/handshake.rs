//! Real TLS sessions as packet captures, for tests and benchmarks.
//!
//! [`tls_session`] runs a rustls client against a rustls server in memory,
//! records the bytes each side sent, and lays them out as the frames of a TCP
//! connection ([`crate::pcap_out`]). [`Pki`] issues the certificates (and
//! CRLs) the server presents; the client accepts any certificate, so expired,
//! self-signed and mismatched ones make complete sessions too.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName, DnType, IsCa, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection, SupportedProtocolVersion};
use time::OffsetDateTime;

use crate::pcap_out::{conversation_frames, TcpShape};
pub use crate::pcap_out::{tcp_conversation, write_pcap, Flight, Frame};

/// 2026-01-01T00:00:00Z, the default start of a session, in Unix seconds.
pub const DEFAULT_START_UNIX_S: u64 = 1_767_225_600;

/// What [`SessionSpec`] asks for: a full TLS session and how it looks on the wire.
#[derive(Clone, Debug)]
pub struct SessionSpec {
    /// Client address and port.
    pub client: (IpAddr, u16),
    /// Server address and port.
    pub server: (IpAddr, u16),
    /// 802.1Q VLAN id (0..=4095) tagged on every frame, if any.
    pub vlan: Option<u16>,
    /// The server name the client sends; `None` connects by IP and sends no SNI.
    pub sni: Option<String>,
    /// ALPN protocols, offered by the client and accepted by the server in this order.
    pub alpn: Vec<String>,
    /// The one protocol version both sides enable.
    pub version: TlsVersionChoice,
    /// Cipher suites both sides enable; `None` keeps the provider's defaults.
    pub cipher_suites: Option<Vec<rustls::SupportedCipherSuite>>,
    /// The server's certificate chain, DER, leaf first.
    pub chain: Vec<Vec<u8>>,
    /// The server's private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The server sends a CertificateRequest; the client answers without a
    /// certificate and the server accepts that.
    pub request_client_cert: bool,
    /// Application bytes sent client->server, then server->client, after the handshake.
    pub app_data: (usize, usize),
    /// Largest TCP payload per segment (small values split records across segments).
    pub mss: usize,
    /// Swap each pair of data segments within a flight.
    pub reorder: bool,
    /// Send every third data segment twice (an exact duplicate, later in its flight).
    pub retransmit: bool,
    /// Time of the SYN in nanoseconds since the Unix epoch; later frames are 50 µs apart.
    pub start_unix_ns: u64,
    /// A ServerHello field rewritten in the recorded bytes (the handshake itself ran unchanged).
    pub patch: Option<Patch>,
}

impl SessionSpec {
    /// A TLS 1.3 session with defaults: ALPN `h2`, `http/1.1`; 200 bytes up and
    /// 2000 down; MSS 1460; no VLAN, reordering, retransmission, client-cert
    /// request or patch; SYN at 2026-01-01T00:00:00Z.
    pub fn new(
        client: (IpAddr, u16),
        server: (IpAddr, u16),
        sni: Option<&str>,
        chain: Vec<Vec<u8>>,
        key_der: Vec<u8>,
    ) -> SessionSpec {
        SessionSpec {
            client,
            server,
            vlan: None,
            sni: sni.map(str::to_owned),
            alpn: vec!["h2".to_owned(), "http/1.1".to_owned()],
            version: TlsVersionChoice::Tls13,
            cipher_suites: None,
            chain,
            key_der,
            request_client_cert: false,
            app_data: (200, 2000),
            mss: 1460,
            reorder: false,
            retransmit: false,
            start_unix_ns: DEFAULT_START_UNIX_S * 1_000_000_000,
            patch: None,
        }
    }

    /// How the session's TCP connection is laid out.
    fn tcp_shape(&self) -> Result<TcpShape, String> {
        let vlan = match self.vlan {
            Some(id) => Some(etherparse::VlanId::try_new(id).map_err(|e| format!("vlan {id}: {e}"))?),
            None => None,
        };
        Ok(TcpShape {
            client: self.client,
            server: self.server,
            vlan,
            mss: self.mss,
            reorder: self.reorder,
            retransmit: self.retransmit,
            start_unix_ns: self.start_unix_ns,
        })
    }
}

/// A ServerHello field to rewrite in the recorded bytes, to make sessions a
/// passive observer cannot decrypt or cannot parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patch {
    /// Set `compression_method` to this value.
    ServerCompression(u8),
    /// Set `cipher_suite` to this code point.
    ServerCipher(u16),
}

/// The protocol version of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TlsVersionChoice {
    /// TLS 1.2 only.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

/// Runs the session `spec` describes and returns the frames of its whole TCP
/// connection: SYN, SYN-ACK, ACK, the TLS bytes in segments of at most
/// `spec.mss` bytes with the peer's ACKs, then the FIN exchange.
///
/// Errors name what failed: configuration (bad key, no cipher suite for the
/// version, bad SNI), or the handshake itself.
pub fn tls_session(spec: &SessionSpec) -> Result<Vec<Frame>, String> {
    let shape = spec.tcp_shape()?;
    let flights = record_session(spec)?;
    Ok(conversation_frames(&shape, &flights))
}

/// The TLS bytes of the session `spec` describes, flight by flight, with
/// `spec.patch` applied. [`tls_session`] is this plus TCP framing; keep the
/// flights to lay one session out again on other addresses or times with
/// [`session_frames`].
pub fn record_session(spec: &SessionSpec) -> Result<Vec<Flight>, String> {
    let mut flights = run_rustls(spec)?;
    if let Some(patch) = spec.patch {
        patch_server_hello(&mut flights, patch)?;
    }
    Ok(flights)
}

/// The frames of a TCP connection laid out as `spec` says (addresses, VLAN,
/// MSS, reordering, retransmission, start time) carrying recorded `flights`.
pub fn session_frames(spec: &SessionSpec, flights: &[Flight]) -> Result<Vec<Frame>, String> {
    Ok(conversation_frames(&spec.tcp_shape()?, flights))
}

/// A certificate authority: a self-signed ECDSA P-256 CA that issues leaf
/// certificates and CRLs.
pub struct Pki {
    ca: rcgen::Certificate,
    ca_key: KeyPair,
    next_serial: AtomicU64,
}

/// A certificate with its key, as [`Pki::issue`] or [`Leaf::self_signed`] makes them.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The private key, PKCS#8 DER.
    pub key_der: Vec<u8>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The private key, PKCS#8 PEM.
    pub key_pem: String,
    /// The serial number as encoded in the certificate (big-endian, no sign byte needed).
    pub serial: Vec<u8>,
}

/// Validity of the CA itself: 2020-01-01 to 2050-01-01.
const CA_NOT_BEFORE: i64 = 1_577_836_800;
const CA_NOT_AFTER: i64 = 2_524_608_000;

impl Pki {
    /// A new CA with subject CN `ca_common_name` and a fresh P-256 key.
    ///
    /// # Panics
    /// If the system random generator fails (key generation cannot otherwise fail).
    pub fn new(ca_common_name: &str) -> Pki {
        let ca_key = KeyPair::generate().expect("generating a P-256 key only fails without randomness");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, ca_common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = datetime(CA_NOT_BEFORE);
        params.not_after = datetime(CA_NOT_AFTER);
        params.serial_number = Some(serial_number(1, &ca_key));
        params.key_identifier_method = KeyIdMethod::Sha256;
        // Cannot fail: the parameters are fixed and valid, and the key is P-256.
        let ca = params.self_signed(&ca_key).expect("self-signing a CA with fixed parameters");
        Pki { ca, ca_key, next_serial: AtomicU64::new(2) }
    }

    /// The CA certificate, PEM.
    pub fn ca_cert_pem(&self) -> String {
        self.ca.pem()
    }

    /// The CA certificate, DER.
    pub fn ca_cert_der(&self) -> Vec<u8> {
        self.ca.der().to_vec()
    }

    /// The CA's private key, PKCS#8 PEM.
    pub fn ca_key_pem(&self) -> String {
        self.ca_key.serialize_pem()
    }

    /// A leaf for `dns_names` (in the SAN; names that parse as IP addresses go
    /// in as IP SANs), with subject CN = the first name and O = `org`, valid
    /// from `not_before` to `not_after` (Unix seconds), signed by this CA.
    ///
    /// # Panics
    /// If a name is not ASCII, or a time is outside years 1..=9999 (caller errors in test code).
    pub fn issue(&self, dns_names: &[&str], org: &str, not_before: i64, not_after: i64) -> Leaf {
        let key = KeyPair::generate().expect("generating a P-256 key only fails without randomness");
        self.issue_with_key(dns_names, org, not_before, not_after, &key)
    }

    /// As [`Pki::issue`], for the given key (of any type rcgen signs with),
    /// so that many certificates can share a few keys.
    ///
    /// # Panics
    /// As [`Pki::issue`].
    pub fn issue_with_key(
        &self,
        dns_names: &[&str],
        org: &str,
        not_before: i64,
        not_after: i64,
        key: &KeyPair,
    ) -> Leaf {
        let serial = serial_number(self.next_serial.fetch_add(1, Ordering::Relaxed), key);
        let mut params = leaf_params(dns_names, not_before, not_after, serial.clone());
        params.distinguished_name.push(DnType::OrganizationName, org);
        let cert = params.signed_by(key, &self.ca, &self.ca_key).expect("signing a leaf with the CA key");
        Leaf::from_parts(&cert, key, &serial)
    }

    /// A CRL signed by this CA revoking the serials of `revoked`, issued
    /// 2026-01-01 and valid for a year.
    pub fn crl_pem(&self, revoked: &[&Leaf]) -> String {
        let this_update = datetime(DEFAULT_START_UNIX_S as i64);
        let params = CertificateRevocationListParams {
            this_update,
            next_update: datetime(DEFAULT_START_UNIX_S as i64 + 365 * 86_400),
            crl_number: SerialNumber::from(self.next_serial.fetch_add(1, Ordering::Relaxed)),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|leaf| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&leaf.serial),
                    revocation_time: this_update,
                    reason_code: Some(rcgen::RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        // Cannot fail: next_update > this_update and the CA may sign CRLs.
        let crl = params.signed_by(&self.ca, &self.ca_key).expect("signing a CRL with the CA key");
        crl.pem().expect("PEM-encoding a CRL")
    }
}

impl Leaf {
    /// A self-signed leaf for `dns_names` (CN = the first name), valid from
    /// `not_before` to `not_after` (Unix seconds).
    ///
    /// # Panics
    /// As [`Pki::issue`].
    pub fn self_signed(dns_names: &[&str], not_before: i64, not_after: i64) -> Leaf {
        let key = KeyPair::generate().expect("generating a P-256 key only fails without randomness");
        let serial = serial_number(1, &key);
        let params = leaf_params(dns_names, not_before, not_after, serial.clone());
        let cert = params.self_signed(&key).expect("self-signing a leaf");
        Leaf::from_parts(&cert, &key, &serial)
    }

    fn from_parts(cert: &rcgen::Certificate, key: &KeyPair, serial: &SerialNumber) -> Leaf {
        Leaf {
            cert_der: cert.der().to_vec(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            serial: serial.to_bytes(),
        }
    }
}

fn leaf_params(dns_names: &[&str], not_before: i64, not_after: i64, serial: SerialNumber) -> CertificateParams {
    let names: Vec<String> = dns_names.iter().map(|s| (*s).to_owned()).collect();
    let mut params = CertificateParams::new(names).expect("subject alternative names must be ASCII");
    params.distinguished_name = DistinguishedName::new();
    if let Some(first) = dns_names.first() {
        params.distinguished_name.push(DnType::CommonName, *first);
    }
    params.not_before = datetime(not_before);
    params.not_after = datetime(not_after);
    params.serial_number = Some(serial);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params
}

/// A 16-byte positive serial: a marker byte below 0x80 (so DER needs no sign
/// byte and the bytes are the encoded value), 7 bytes from the key (unique
/// per key), and a counter.
fn serial_number(counter: u64, key: &KeyPair) -> SerialNumber {
    let spki = key.public_key_der();
    let mut bytes = vec![0x4c];
    bytes.extend_from_slice(&spki[spki.len().saturating_sub(7)..]);
    bytes.extend_from_slice(&counter.to_be_bytes());
    SerialNumber::from(bytes)
}

fn datetime(unix_s: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(unix_s).expect("certificate time within years 1..=9999")
}

/// Runs both ends and returns what each sent, merged into flights.
fn run_rustls(spec: &SessionSpec) -> Result<Vec<Flight>, String> {
    let provider = Arc::new(match &spec.cipher_suites {
        Some(suites) => {
            CryptoProvider { cipher_suites: suites.clone(), ..rustls::crypto::aws_lc_rs::default_provider() }
        }
        None => rustls::crypto::aws_lc_rs::default_provider(),
    });
    let versions: &[&'static SupportedProtocolVersion] = match spec.version {
        TlsVersionChoice::Tls12 => &[&rustls::version::TLS12],
        TlsVersionChoice::Tls13 => &[&rustls::version::TLS13],
    };
    let alpn: Vec<Vec<u8>> = spec.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let accept_all =
        Arc::new(AcceptAnyCertificate { schemes: provider.signature_verification_algorithms.supported_schemes() });

    let chain: Vec<CertificateDer<'static>> = spec.chain.iter().map(|c| CertificateDer::from(c.clone())).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(spec.key_der.clone()));
    let server_builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| format!("server config: {e}"))?;
    let server_builder = if spec.request_client_cert {
        server_builder.with_client_cert_verifier(accept_all.clone())
    } else {
        server_builder.with_no_client_auth()
    };
    let mut server_config =
        server_builder.with_single_cert(chain, key).map_err(|e| format!("server certificate: {e}"))?;
    server_config.alpn_protocols = alpn.clone();

    let mut client_config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| format!("client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(accept_all)
        .with_no_client_auth();
    client_config.alpn_protocols = alpn;

    let server_name = match &spec.sni {
        Some(name) => ServerName::try_from(name.clone()).map_err(|e| format!("SNI {name:?}: {e}"))?,
        None => ServerName::from(spec.server.0),
    };
    let mut client = Connection::from(
        ClientConnection::new(Arc::new(client_config), server_name).map_err(|e| format!("client: {e}"))?,
    );
    let mut server =
        Connection::from(ServerConnection::new(Arc::new(server_config)).map_err(|e| format!("server: {e}"))?);

    let mut rec = Recorder::default();
    // Handshake: alternate until neither side has anything to send.
    loop {
        let c = rec.transfer(&mut client, &mut server, true)?;
        let s = rec.transfer(&mut server, &mut client, false)?;
        if c == 0 && s == 0 {
            break;
        }
    }
    if client.is_handshaking() || server.is_handshaking() {
        return Err("handshake stalled before completing".to_owned());
    }
    rec.send_app_data(&mut client, &mut server, true, spec.app_data.0)?;
    rec.send_app_data(&mut server, &mut client, false, spec.app_data.1)?;
    client.send_close_notify();
    rec.transfer(&mut client, &mut server, true)?;
    server.send_close_notify();
    rec.transfer(&mut server, &mut client, false)?;
    Ok(rec.flights)
}

/// Moves bytes between the two ends, keeping a copy of everything sent.
#[derive(Default)]
struct Recorder {
    flights: Vec<Flight>,
}

impl Recorder {
    /// Sends everything `from` has pending to `to` and lets `to` process it;
    /// returns how many bytes moved.
    fn transfer(&mut self, from: &mut Connection, to: &mut Connection, from_client: bool) -> Result<usize, String> {
        let mut bytes = Vec::new();
        while from.wants_write() {
            from.write_tls(&mut bytes).map_err(|e| format!("write_tls: {e}"))?;
        }
        if bytes.is_empty() {
            return Ok(0);
        }
        let mut rest = &bytes[..];
        let who = if from_client { "server" } else { "client" };
        while !rest.is_empty() {
            to.read_tls(&mut rest).map_err(|e| format!("{who} read_tls: {e}"))?;
            to.process_new_packets().map_err(|e| format!("{who}: {e}"))?;
            drain_plaintext(to)?;
        }
        let n = bytes.len();
        match self.flights.last_mut() {
            Some(last) if last.from_client == from_client => last.bytes.extend_from_slice(&bytes),
            _ => self.flights.push(Flight { from_client, bytes }),
        }
        Ok(n)
    }

    /// Sends `len` application bytes from `from` to `to`, in pieces rustls accepts.
    fn send_app_data(
        &mut self,
        from: &mut Connection,
        to: &mut Connection,
        from_client: bool,
        len: usize,
    ) -> Result<(), String> {
        let chunk = [b'a'; 16 * 1024];
        let mut left = len;
        while left > 0 {
            let n = from.writer().write(&chunk[..left.min(chunk.len())]).map_err(|e| format!("writer: {e}"))?;
            let moved = self.transfer(from, to, from_client)?;
            if n == 0 && moved == 0 {
                return Err("application data stalled".to_owned());
            }
            left -= n;
        }
        Ok(())
    }
}

/// Reads (and drops) all plaintext `conn` has received.
fn drain_plaintext(conn: &mut Connection) -> Result<(), String> {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(format!("reading plaintext: {e}")),
        }
    }
}

/// Rewrites `patch`'s field of the first ServerHello the server sent.
fn patch_server_hello(flights: &mut [Flight], patch: Patch) -> Result<(), String> {
    let flight = flights.iter_mut().find(|f| !f.from_client).ok_or("no server flight to patch")?;
    let b = &mut flight.bytes;
    // Record header (type 22 = handshake), then handshake header (type 2 = ServerHello).
    if b.len() < 9 || b[0] != 22 || b[5] != 2 {
        return Err("server's first record is not a ServerHello".to_owned());
    }
    // legacy_version(2) + random(32), then the session id with its length byte.
    let sid_len_at = 9 + 2 + 32;
    let cipher_at = sid_len_at + 1 + usize::from(*b.get(sid_len_at).ok_or("ServerHello too short")?);
    if b.len() < cipher_at + 3 {
        return Err("ServerHello too short".to_owned());
    }
    match patch {
        Patch::ServerCipher(code) => b[cipher_at..cipher_at + 2].copy_from_slice(&code.to_be_bytes()),
        Patch::ServerCompression(method) => b[cipher_at + 2] = method,
    }
    Ok(())
}

/// Accepts every certificate and signature: the generator makes sessions with
/// expired, self-signed and mismatched certificates on purpose.
#[derive(Debug)]
struct AcceptAnyCertificate {
    schemes: Vec<rustls::SignatureScheme>,
}

impl ServerCertVerifier for AcceptAnyCertificate {
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
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

impl ClientCertVerifier for AcceptAnyCertificate {
    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.schemes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pcap_out::tests::reassemble;

    const NOW: i64 = DEFAULT_START_UNIX_S as i64;
    const YEAR: i64 = 365 * 86_400;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn spec_for(leaf: &Leaf, extra_chain: &[Vec<u8>], sni: Option<&str>, version: TlsVersionChoice) -> SessionSpec {
        let mut chain = vec![leaf.cert_der.clone()];
        chain.extend_from_slice(extra_chain);
        let mut spec =
            SessionSpec::new((ip("10.1.0.1"), 40001), (ip("10.2.0.1"), 443), sni, chain, leaf.key_der.clone());
        spec.version = version;
        spec
    }

    fn issued(pki: &Pki) -> Leaf {
        pki.issue(&["www.example.com", "example.com"], "Example Org", NOW - YEAR, NOW + YEAR)
    }

    /// The TLS records (content type, body) in a byte stream.
    fn records(mut b: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while b.len() >= 5 {
            let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
            out.push((b[0], b[5..5 + len].to_vec()));
            b = &b[5 + len..];
        }
        assert!(b.is_empty(), "stream ends on a record boundary");
        out
    }

    /// Handshake message types in the cleartext handshake records of a stream
    /// (stops at the first ChangeCipherSpec, after which TLS 1.2 encrypts).
    fn cleartext_handshake_types(stream: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        for (ty, rec) in records(stream) {
            match ty {
                22 => body.extend_from_slice(&rec),
                20 => break,
                _ => {}
            }
        }
        let mut types = Vec::new();
        let mut b = &body[..];
        while b.len() >= 4 {
            let len = u32::from_be_bytes([0, b[1], b[2], b[3]]) as usize;
            types.push(b[0]);
            if b.len() < 4 + len {
                break; // encrypted tail (TLS 1.3 after ServerHello)
            }
            b = &b[4 + len..];
        }
        types
    }

    fn check_session(spec: &SessionSpec) -> (Vec<Frame>, Vec<u8>, Vec<u8>) {
        let frames = tls_session(spec).unwrap();
        let (c, s) = reassemble(&frames, spec.client.1);
        assert_eq!(&c[..2], &[0x16, 0x03], "client stream starts with a handshake record");
        assert_eq!(&s[..2], &[0x16, 0x03], "server stream starts with a handshake record");
        // Both streams are whole records (nothing cut or doubled).
        records(&c);
        records(&s);
        // The app data went across encrypted: more than the plaintext each way.
        assert!(c.len() > spec.app_data.0 && s.len() > spec.app_data.1);
        (frames, c, s)
    }

    #[test]
    fn tls13_and_tls12_sessions_reassemble() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        for version in [TlsVersionChoice::Tls13, TlsVersionChoice::Tls12] {
            let spec = spec_for(&leaf, &[pki.ca_cert_der()], Some("www.example.com"), version);
            let (frames, c, s) = check_session(&spec);
            assert_eq!(cleartext_handshake_types(&c)[0], 1, "ClientHello first");
            assert_eq!(cleartext_handshake_types(&s)[0], 2, "ServerHello first");
            let version_bytes = [s[9], s[10]];
            assert_eq!(version_bytes, [3, 3], "ServerHello legacy_version");
            // The leaf certificate crosses in the clear only in TLS 1.2.
            let shows_cert = s.windows(leaf.cert_der.len()).any(|w| w == leaf.cert_der);
            assert_eq!(shows_cert, version == TlsVersionChoice::Tls12);
            let first = etherparse::SlicedPacket::from_ethernet(&frames[0].data).unwrap();
            let Some(etherparse::TransportSlice::Tcp(syn)) = first.transport else { panic!() };
            assert!(syn.syn() && !syn.ack());
            assert!(syn
                .options_iterator()
                .any(|o| matches!(o, Ok(etherparse::TcpOptionElement::MaximumSegmentSize(1460)))));
        }
    }

    #[test]
    fn small_mss_splits_and_reorder_retransmit_keep_the_bytes() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let mut spec = spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls12);
        spec.mss = 7;
        let flights = record_session(&spec).unwrap();
        let plain = session_frames(&spec, &flights).unwrap();
        let (c0, s0) = reassemble(&plain, spec.client.1);
        let client_hello_len = 5 + usize::from(u16::from_be_bytes([c0[3], c0[4]]));
        let client_segs: Vec<_> = plain
            .iter()
            .map(|f| crate::pcap_out::tests::parse(&f.data))
            .filter(|s| s.src_port == spec.client.1)
            .collect();
        let isn = client_segs[0].seq;
        let hello_segs: Vec<_> = client_segs
            .iter()
            .filter(|s| !s.payload.is_empty() && (s.seq.wrapping_sub(isn) as usize) <= client_hello_len)
            .collect();
        assert!(client_hello_len > 150);
        assert_eq!(hello_segs.len(), client_hello_len.div_ceil(7));
        assert!(hello_segs.iter().all(|s| s.payload.len() <= 7));

        let mut shuffled = spec.clone();
        shuffled.reorder = true;
        shuffled.retransmit = true;
        let noisy = session_frames(&shuffled, &flights).unwrap();
        assert!(noisy.len() > plain.len());
        let (c1, s1) = reassemble(&noisy, spec.client.1);
        assert_eq!((c0, s0), (c1, s1));
        // The first two data segments really were swapped.
        let data_seqs: Vec<u32> = noisy
            .iter()
            .map(|f| crate::pcap_out::tests::parse(&f.data))
            .filter(|s| !s.payload.is_empty())
            .map(|s| s.seq)
            .take(2)
            .collect();
        assert_eq!(data_seqs[0], data_seqs[1].wrapping_add(7));
    }

    #[test]
    fn tls12_client_cert_request_is_sent_and_the_handshake_completes() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let mut spec = spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls12);
        spec.request_client_cert = true;
        let (_, c, s) = check_session(&spec);
        assert!(cleartext_handshake_types(&s).contains(&13), "CertificateRequest");
        // The client answers with an empty Certificate message (type 11, zero-length list).
        let client_types = cleartext_handshake_types(&c);
        assert_eq!(client_types[..2], [1, 11]);
        spec.request_client_cert = false;
        let (_, _, s) = check_session(&spec);
        assert!(!cleartext_handshake_types(&s).contains(&13));
    }

    #[test]
    fn patch_changes_exactly_one_server_hello_byte() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let spec = spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls12);
        let clean = record_session(&spec).unwrap();
        let mut patched = clean.clone();
        patch_server_hello(&mut patched, Patch::ServerCompression(1)).unwrap();
        let before = &clean[1].bytes;
        let after = &patched[1].bytes;
        let diffs: Vec<usize> = (0..before.len()).filter(|&i| before[i] != after[i]).collect();
        assert_eq!(diffs.len(), 1);
        let sid_len = usize::from(before[43]);
        assert_eq!(diffs[0], 44 + sid_len + 2);
        assert_eq!((before[diffs[0]], after[diffs[0]]), (0, 1));

        let mut cipher = clean.clone();
        patch_server_hello(&mut cipher, Patch::ServerCipher(0x0005)).unwrap();
        assert_eq!(&cipher[1].bytes[44 + sid_len..44 + sid_len + 2], &[0x00, 0x05]);

        // Through the public entry: the ServerHello on the wire carries the patched byte.
        let mut spec = spec;
        spec.patch = Some(Patch::ServerCompression(1));
        let frames = tls_session(&spec).unwrap();
        let (_, s) = reassemble(&frames, spec.client.1);
        assert_eq!(s[44 + usize::from(s[43]) + 2], 1);
    }

    #[test]
    fn expired_self_signed_and_mismatched_certificates_still_complete() {
        let pki = Pki::new("Test CA");
        let expired = pki.issue(&["old.example.com"], "Old", NOW - 3 * YEAR, NOW - 2 * YEAR);
        let self_signed = Leaf::self_signed(&["self.example.com"], NOW - YEAR, NOW + YEAR);
        let mismatched = issued(&pki);
        let cases = [
            (&expired, Some("old.example.com")),
            (&self_signed, Some("self.example.com")),
            (&mismatched, Some("not-in-san.example.org")),
            (&mismatched, None),
        ];
        for version in [TlsVersionChoice::Tls13, TlsVersionChoice::Tls12] {
            for (leaf, sni) in cases {
                check_session(&spec_for(leaf, &[], sni, version));
            }
        }
    }

    #[test]
    fn no_sni_means_no_server_name_extension() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let with = record_session(&spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls13)).unwrap();
        let without = record_session(&spec_for(&leaf, &[], None, TlsVersionChoice::Tls13)).unwrap();
        let has_name = |b: &[u8]| b.windows(15).any(|w| w == b"www.example.com");
        assert!(has_name(&with[0].bytes));
        assert!(!has_name(&without[0].bytes));
    }

    #[test]
    fn ipv6_vlan_session_and_bad_vlan() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let mut spec = spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls13);
        spec.client = (ip("2001:db8::10"), 50000);
        spec.server = (ip("2001:db8::20"), 443);
        spec.vlan = Some(100);
        let (frames, _, _) = check_session(&spec);
        let p = etherparse::SlicedPacket::from_ethernet(&frames[0].data).unwrap();
        assert!(matches!(p.net, Some(etherparse::NetSlice::Ipv6(_))));
        assert!(p.vlan.is_some());
        spec.vlan = Some(5000);
        assert!(tls_session(&spec).unwrap_err().contains("vlan"));
    }

    #[test]
    fn chosen_cipher_suite_is_used() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let mut spec = spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls12);
        let suite = rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
        spec.cipher_suites = Some(vec![suite]);
        let flights = record_session(&spec).unwrap();
        let s = &flights[1].bytes;
        let at = 44 + usize::from(s[43]);
        assert_eq!(u16::from_be_bytes([s[at], s[at + 1]]), 0xcca9);
        // An RSA-only suite list cannot serve an ECDSA key.
        spec.cipher_suites = Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256]);
        assert!(tls_session(&spec).is_err());
    }

    #[test]
    fn pki_pem_crl_and_serials() {
        let pki = Pki::new("Test CA");
        let a = issued(&pki);
        let b = issued(&pki);
        assert_ne!(a.serial, b.serial);
        assert!(a.serial[0] < 0x80);
        assert!(a.cert_der.windows(a.serial.len()).any(|w| w == a.serial), "serial encoded as given");
        assert!(pki.ca_cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(pki.ca_key_pem().starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(a.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(a.cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let crl = pki.crl_pem(&[&a]);
        assert!(crl.starts_with("-----BEGIN X509 CRL-----"));
        assert!(!pki.ca_cert_der().is_empty());
    }

    #[test]
    fn write_pcap_round_trips_a_tls_session() {
        let pki = Pki::new("Test CA");
        let leaf = issued(&pki);
        let frames = tls_session(&spec_for(&leaf, &[], Some("www.example.com"), TlsVersionChoice::Tls13)).unwrap();
        let dir = std::env::temp_dir().join(format!("tlsgate-hs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tls.pcap");
        write_pcap(&path, &frames).unwrap();
        let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut n = 0;
        while let Some(p) = reader.next_packet() {
            let p = p.unwrap();
            assert_eq!(p.data, frames[n].data);
            assert_eq!(p.timestamp.as_nanos() as u64, frames[n].unix_ns);
            n += 1;
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(n, frames.len());
    }
}
