//! Reading TLS sessions without taking them over: from the two in-order
//! byte streams of a TCP connection to its plaintext, with the secrets a
//! passive reader can have (an imported RSA server key, a key log, or master
//! secrets learned from earlier sessions). Sans-IO: bytes in, plaintext and
//! counts out; the caller reassembles TCP ([`capture`] does it for frames).

pub mod capture;
pub mod kdf;
pub mod keylog;
pub mod live;
pub mod record;
pub use tlsgate_core::tls::suites as suite;

use std::collections::{HashMap, VecDeque};

use sha2::{Digest, Sha256};

use kdf::Version;
use keylog::KeyLog;
use record::{Opened, RecordError, RecordOpener};
use suite::{KeyExchange, Suite};

/// How a session was opened (`decrypt.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// With the server's imported RSA key, the flow left untouched.
    Passive,
    /// With secrets from a key log.
    Keylog,
}

impl Mode {
    /// The event log's name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Passive => "passive",
            Mode::Keylog => "keylog",
        }
    }
}

/// Why a session could not be read passively (`decrypt.unreadable`), under
/// the policy's `not_passively_decryptable` reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// (EC)DHE key exchange, and no key log line for it.
    EphemeralKeyExchange,
    /// TLS 1.3, and no key log lines for it.
    Tls13,
    /// RSA key exchange, but the server showed another certificate than the imported one.
    OtherCertificate,
    /// RSA key exchange with no key for it (no imported key, no key log line).
    NoKey,
    /// A resumed session whose master secret was not seen.
    ResumedUnseen,
    /// A cipher suite this reader does not know.
    UnknownSuite,
    /// The handshake's start was not seen (a capture that begins mid-session), or is not TLS.
    HandshakeNotSeen,
    /// The handshake messages exceed what is kept to derive the keys.
    HandshakeTooLarge,
}

impl Unreadable {
    /// Stable code.
    pub fn code(self) -> &'static str {
        match self {
            Unreadable::EphemeralKeyExchange => "ephemeral_key_exchange",
            Unreadable::Tls13 => "tls13",
            Unreadable::OtherCertificate => "other_certificate",
            Unreadable::NoKey => "no_key",
            Unreadable::ResumedUnseen => "resumed_session_not_seen",
            Unreadable::UnknownSuite => "unknown_cipher_suite",
            Unreadable::HandshakeNotSeen => "handshake_not_seen",
            Unreadable::HandshakeTooLarge => "handshake_too_large",
        }
    }
}

/// What one session's reading came to, for its event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// How it was read, if it was.
    pub mode: Option<Mode>,
    /// The negotiated version (`TLS 1.2`).
    pub version: Option<&'static str>,
    /// The negotiated cipher suite's code.
    pub cipher_suite: Option<u16>,
    /// Why not, when the session could not be read.
    pub unreadable: Option<Unreadable>,
    /// Records opened, client to server (encrypted handshake records, data, alerts).
    pub records_to_server: u64,
    /// Records opened, server to client.
    pub records_to_client: u64,
    /// Application plaintext bytes, each way.
    pub bytes_to_server: u64,
    /// Application plaintext bytes, server to client.
    pub bytes_to_client: u64,
    /// Records whose MAC or tag failed (`decryption_error`); the direction is not read further.
    pub mac_failures: u64,
    /// Protected records not opened (no keys, or after a failure).
    pub records_not_decrypted: u64,
    /// The session resumed one whose master secret was learned earlier
    /// (TLS 1.3: the server took a pre-shared key).
    pub resumed: bool,
    /// The master secret was derived with the extended master secret (RFC 7627).
    pub extended_master_secret: bool,
    /// A record cut short by the end of the stream.
    pub truncated: bool,
    /// TLS 1.3 0-RTT data the client sent, and what became of it.
    pub early_data: Option<EarlyData>,
    /// Bytes of 0-RTT data the server refused (not in the plaintext: the server never read them).
    pub early_data_refused_bytes: u64,
    /// Bytes of 0-RTT data opened past the 256 KiB held until the server's
    /// answer shows whether it took them: in neither the plaintext nor the
    /// refused bytes. Their records count as opened.
    pub early_data_not_held_bytes: u64,
}

impl Report {
    /// `decrypt.reason_code`: `decryption_error` when a record failed, else
    /// why the session was not read (`None` when it was).
    pub fn reason_code(&self) -> Option<&'static str> {
        if self.mac_failures > 0 {
            Some("decryption_error")
        } else if self.mode.is_none() {
            Some(self.unreadable.unwrap_or(Unreadable::HandshakeNotSeen).code())
        } else {
            None
        }
    }
}

/// What became of a client's TLS 1.3 0-RTT data (`decrypt.early_data`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyData {
    /// The server took it (the client's EndOfEarlyData came): it is in the plaintext, first.
    Accepted,
    /// The server refused it (the client went on under its handshake keys without EndOfEarlyData).
    Refused,
    /// Sent, but the key log has no `CLIENT_EARLY_TRAFFIC_SECRET` for it.
    NotDecrypted,
}

impl EarlyData {
    /// The event log's name.
    pub fn name(self) -> &'static str {
        match self {
            EarlyData::Accepted => "accepted",
            EarlyData::Refused => "refused",
            EarlyData::NotDecrypted => "not_decrypted",
        }
    }
}

/// An imported server certificate and its RSA key.
pub struct ServerKey {
    /// SHA-256 of the certificate: the key opens sessions where the server shows exactly it.
    pub cert_sha256: [u8; 32],
    key: aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey,
}

/// Why a key cannot serve passive decryption.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("passive decryption needs an RSA key: RSA key exchange encrypts the premaster secret to it")]
    /// The key is not an RSA key (or not a key).
    NotRsa,
}

impl ServerKey {
    /// From a certificate and its key (PKCS#1 `RSA PRIVATE KEY` or PKCS#8 DER).
    pub fn new(cert_der: &[u8], key_der: &[u8], pkcs1: bool) -> Result<ServerKey, KeyError> {
        let pkcs8 = if pkcs1 { pkcs1_to_pkcs8(key_der) } else { key_der.to_vec() };
        let key = aws_lc_rs::rsa::PrivateDecryptingKey::from_pkcs8(&pkcs8).map_err(|_| KeyError::NotRsa)?;
        let key = aws_lc_rs::rsa::Pkcs1PrivateDecryptingKey::new(key).map_err(|_| KeyError::NotRsa)?;
        Ok(ServerKey { cert_sha256: Sha256::digest(cert_der).into(), key })
    }

    /// The premaster secret in `encrypted`, or, when it does not decrypt to 48
    /// bytes starting with `client_version`, 48 random bytes (RFC 5246
    /// §7.4.7.1): one path whatever the ciphertext, so that a forged one (a
    /// Bleichenbacher probe) only shows as a Finished that fails its MAC.
    fn premaster(&self, encrypted: &[u8], client_version: u16) -> [u8; 48] {
        let mut random = [0u8; 48];
        // With no randomness the fallback is zeros: still not the real secret.
        let _ = aws_lc_rs::rand::fill(&mut random);
        let mut buf = vec![0u8; self.key.min_output_size().max(48)];
        let (ok, got) = match self.key.decrypt(encrypted, &mut buf) {
            Ok(p) => (p.len() == 48, p.len().min(48)),
            Err(_) => (false, 0),
        };
        let version = client_version.to_be_bytes();
        let good = ok & (buf[0] == version[0]) & (buf[1] == version[1]);
        let mask = u8::from(good).wrapping_neg();
        let mut out = [0u8; 48];
        for i in 0..48 {
            let real = if i < got { buf[i] } else { 0 };
            out[i] = (real & mask) | (random[i] & !mask);
        }
        out
    }
}

/// What can open sessions: a key log, imported server keys, and the master
/// secrets of sessions read so far (for resumption; bounded).
#[derive(Default)]
pub struct Keys {
    /// The key log, if one was given.
    pub keylog: Option<KeyLog>,
    /// Imported RSA server keys (passive known-key rules).
    pub server_keys: Vec<ServerKey>,
    cache: SessionCache,
}

impl Keys {
    /// With a key log and imported server keys.
    pub fn new(keylog: Option<KeyLog>, server_keys: Vec<ServerKey>) -> Keys {
        Keys { keylog, server_keys, cache: SessionCache::default() }
    }
}

/// Master secrets by session ID and by (the SHA-256 of a) session ticket, oldest dropped first.
#[derive(Default)]
struct SessionCache {
    entries: HashMap<[u8; 32], ([u8; 48], Mode)>,
    order: VecDeque<[u8; 32]>,
}

/// Sessions a [`SessionCache`] remembers.
const SESSION_CACHE_ENTRIES: usize = 10_000;

impl SessionCache {
    fn key(kind: u8, id: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update([kind]);
        h.update(id);
        h.finalize().into()
    }

    fn insert(&mut self, k: [u8; 32], master: [u8; 48], mode: Mode) {
        if self.entries.insert(k, (master, mode)).is_none() {
            self.order.push_back(k);
            while self.order.len() > SESSION_CACHE_ENTRIES {
                if let Some(old) = self.order.pop_front() {
                    self.entries.remove(&old);
                }
            }
        }
    }

    fn get(&self, k: &[u8; 32]) -> Option<([u8; 48], Mode)> {
        self.entries.get(k).copied()
    }
}

/// Largest record (a TLSCiphertext: 2^14 + 2048 bytes of fragment).
const MAX_RECORD: usize = 5 + (1 << 14) + 2048;
/// Largest handshake message kept (a certificate chain).
const MAX_HANDSHAKE_MESSAGE: usize = 128 * 1024;
/// Most handshake bytes kept for the extended master secret's session hash.
const MAX_TRANSCRIPT: usize = 192 * 1024;

/// Application plaintext, in the order read: (sent by the client, bytes).
pub type Plaintext = Vec<(bool, Vec<u8>)>;

/// One TLS session read passively.
pub struct PassiveSession {
    dirs: [Direction; 2],
    hello: Hello,
    transcript: Vec<u8>,
    transcript_overflow: bool,
    master: Option<[u8; 48]>,
    tls13: Option<Tls13>,
    /// The client's 0-RTT phase, while it lasts.
    early: Option<Early>,
    report: Report,
    /// The keys were looked for (at the first ChangeCipherSpec, or TLS 1.3's ServerHello).
    keyed: bool,
    /// Whether imported server keys may read this session (else only a key log).
    pub use_server_keys: bool,
}

/// One direction: 0 is the client's, 1 the server's.
#[derive(Default)]
struct Direction {
    /// Bytes of a record not complete yet.
    partial: Vec<u8>,
    /// Bytes of a handshake message not complete yet.
    handshake: Vec<u8>,
    /// The opener in use once this side sent its ChangeCipherSpec (TLS 1.3: from the ServerHello).
    opener: Option<RecordOpener>,
    /// The opener waiting for this side's ChangeCipherSpec.
    pending: Option<RecordOpener>,
    /// Protected records flow (after ChangeCipherSpec, or TLS 1.3's ServerHello).
    protected: bool,
    /// Not a TLS stream any more (a record header that cannot be), or a failure: read no further.
    stopped: bool,
    /// TLS 1.3: the traffic secret in use (for KeyUpdate).
    secret: Option<Vec<u8>>,
}

#[derive(Default)]
struct Hello {
    client_random: Option<[u8; 32]>,
    client_version: u16,
    client_session_id: Vec<u8>,
    client_ticket: Option<Vec<u8>>,
    client_ems: bool,
    client_etm: bool,
    server_random: Option<[u8; 32]>,
    version: Option<Version>,
    suite: Option<Suite>,
    suite_id: Option<u16>,
    server_session_id: Vec<u8>,
    server_ems: bool,
    server_etm: bool,
    cert_sha256: Option<[u8; 32]>,
    encrypted_premaster: Option<Vec<u8>>,
    session_hash: Option<Vec<u8>>,
    new_ticket: Option<Vec<u8>>,
}

struct Tls13 {
    client_traffic: Option<Vec<u8>>,
    server_traffic: Option<Vec<u8>>,
}

/// The client's records after a ClientHello that offers 0-RTT data: under
/// its early traffic secret until its EndOfEarlyData (the server took the
/// data), or until a record opens under its handshake secret instead (the
/// server refused it, and skipped those records).
struct Early {
    /// Openers for each suite the early secret may be for (its length tells
    /// the hash; the ServerHello may come later in the capture than the data).
    openers: Vec<RecordOpener>,
    /// The client's handshake opener, once the ServerHello gave it.
    next: Option<RecordOpener>,
    /// Early plaintext, held until the server's answer is known.
    held: Vec<u8>,
    /// Early records opened, and not opened (no secret for them).
    opened: u64,
    unopened: u64,
}

/// Early plaintext held at most (past it, records are counted as not decrypted).
const MAX_EARLY_HELD: usize = 256 * 1024;

/// The ServerHello random of a TLS 1.3 HelloRetryRequest (RFC 8446 §4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

impl Default for PassiveSession {
    fn default() -> Self {
        Self::new()
    }
}

impl PassiveSession {
    /// A session whose streams start at their first byte.
    pub fn new() -> PassiveSession {
        PassiveSession {
            dirs: [Direction::default(), Direction::default()],
            hello: Hello::default(),
            transcript: Vec::new(),
            transcript_overflow: false,
            master: None,
            tls13: None,
            early: None,
            report: Report::default(),
            keyed: false,
            use_server_keys: true,
        }
    }

    /// What the reading came to so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Reads more of one direction's stream (`from_client`: the client's),
    /// appending application plaintext to `out`.
    pub fn feed(&mut self, keys: &mut Keys, from_client: bool, mut data: &[u8], out: &mut Plaintext) {
        let d = usize::from(!from_client);
        while !data.is_empty() && !self.dirs[d].stopped {
            // Complete the record being gathered, or take whole records straight from `data`.
            let partial = &mut self.dirs[d].partial;
            if partial.len() < 5 {
                let n = (5 - partial.len()).min(data.len());
                partial.extend_from_slice(&data[..n]);
                data = &data[n..];
                if partial.len() < 5 {
                    return;
                }
            }
            let header: [u8; 5] = [partial[0], partial[1], partial[2], partial[3], partial[4]];
            let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
            if !(20..=24).contains(&header[0]) || header[1] != 3 || 5 + len > MAX_RECORD {
                self.not_tls(d);
                return;
            }
            let need = 5 + len - partial.len();
            let n = need.min(data.len());
            partial.extend_from_slice(&data[..n]);
            data = &data[n..];
            if partial.len() < 5 + len {
                return;
            }
            let record = std::mem::take(partial);
            self.record(keys, d, &header, &record[5..], out);
        }
    }

    /// The streams ended: a record cut short is noted.
    pub fn finish(&mut self) {
        if self.dirs.iter().any(|d| !d.partial.is_empty() && !d.stopped) {
            self.report.truncated = true;
        }
    }

    fn not_tls(&mut self, d: usize) {
        self.dirs[d].stopped = true;
        if self.hello.client_random.is_none() {
            self.report.unreadable.get_or_insert(Unreadable::HandshakeNotSeen);
        }
    }

    fn record(&mut self, keys: &mut Keys, d: usize, header: &[u8; 5], fragment: &[u8], out: &mut Plaintext) {
        let content_type = header[0];
        if d == 0 && self.early.is_some() && content_type != 23 {
            // Beside 0-RTT records: a compatibility ChangeCipherSpec, or a
            // second ClientHello after a HelloRetryRequest.
            if content_type == 22 {
                self.handshake_bytes(keys, d, fragment);
            }
            return;
        }
        if self.dirs[d].protected && !(content_type == 20 && self.is_tls13()) {
            self.protected_record(d, header, fragment, out);
            return;
        }
        match content_type {
            // ChangeCipherSpec: this side's records are protected from here (TLS 1.3: compatibility only).
            20 if !self.is_tls13() => {
                if !self.keyed {
                    self.find_keys(keys, d);
                }
                let dir = &mut self.dirs[d];
                dir.protected = true;
                dir.opener = dir.pending.take();
            }
            22 => self.handshake_bytes(keys, d, fragment),
            // Data or alerts in clear before any keys: counted as not read when they are data.
            23 => self.report.records_not_decrypted += 1,
            _ => {}
        }
    }

    fn protected_record(&mut self, d: usize, header: &[u8; 5], fragment: &[u8], out: &mut Plaintext) {
        if d == 0 && self.early.is_some() {
            self.early_record(header, fragment, out);
            return;
        }
        let Some(opener) = self.dirs[d].opener.as_mut() else {
            self.report.records_not_decrypted += 1;
            return;
        };
        match opener.open(header, fragment) {
            Ok(Opened { content_type, plaintext }) => {
                if d == 0 {
                    self.report.records_to_server += 1;
                } else {
                    self.report.records_to_client += 1;
                }
                match content_type {
                    23 if !plaintext.is_empty() => {
                        if d == 0 {
                            self.report.bytes_to_server += plaintext.len() as u64;
                        } else {
                            self.report.bytes_to_client += plaintext.len() as u64;
                        }
                        out.push((d == 0, plaintext));
                    }
                    22 if self.is_tls13() => self.tls13_handshake(d, &plaintext),
                    _ => {}
                }
            }
            Err(RecordError::BadMac | RecordError::Truncated) => {
                self.report.mac_failures += 1;
                let dir = &mut self.dirs[d];
                dir.opener = None;
                dir.stopped = true;
            }
        }
    }

    /// A client record while 0-RTT data may still come: early data, the
    /// EndOfEarlyData that ends it, or the first record under the handshake
    /// secret (the server refused the data).
    fn early_record(&mut self, header: &[u8; 5], fragment: &[u8], out: &mut Plaintext) {
        let Some(early) = self.early.as_mut() else { return };
        let opened =
            early.openers.iter_mut().enumerate().find_map(|(i, o)| Some((i, o.try_open(header, fragment).ok()?)));
        if let Some((i, Opened { content_type, plaintext })) = opened {
            // That suite's opener alone from now on.
            let o = early.openers.swap_remove(i);
            early.openers = vec![o];
            early.opened += 1;
            self.report.records_to_server += 1;
            match content_type {
                23 if early.held.len() + plaintext.len() <= MAX_EARLY_HELD => early.held.extend_from_slice(&plaintext),
                // Opened (counted above), not kept: its bytes say so.
                23 => self.report.early_data_not_held_bytes += plaintext.len() as u64,
                // EndOfEarlyData: the server took the data; the handshake secret follows.
                22 if plaintext.first() == Some(&5) => {
                    let Some(early) = self.early.take() else { return };
                    self.report.early_data = Some(EarlyData::Accepted);
                    if !early.held.is_empty() {
                        self.report.bytes_to_server += early.held.len() as u64;
                        out.push((true, early.held));
                    }
                    self.dirs[0].opener = early.next;
                }
                _ => {}
            }
            return;
        }
        let handshake = early.next.as_mut().and_then(|o| o.try_open(header, fragment).ok());
        let Some(Opened { content_type, plaintext }) = handshake else {
            // 0-RTT data without its secret (or a record that is no record of this session's).
            early.unopened += 1;
            self.report.records_not_decrypted += 1;
            return;
        };
        // The client went on without EndOfEarlyData: the server refused the early data.
        let Some(early) = self.early.take() else { return };
        self.end_early_refused(&early);
        self.dirs[0].opener = early.next;
        self.report.records_to_server += 1;
        if content_type == 22 {
            self.tls13_handshake(0, &plaintext);
        }
    }

    /// The 0-RTT phase ended without the server taking the data.
    fn end_early_refused(&mut self, early: &Early) {
        if early.opened > 0 {
            self.report.early_data = Some(EarlyData::Refused);
            self.report.early_data_refused_bytes += early.held.len() as u64;
        } else if early.unopened > 0 {
            self.report.early_data = Some(EarlyData::NotDecrypted);
        }
    }

    fn is_tls13(&self) -> bool {
        self.hello.version == Some(Version::Tls13)
    }

    /// Plaintext handshake records: whole messages are read as they complete.
    fn handshake_bytes(&mut self, keys: &mut Keys, d: usize, fragment: &[u8]) {
        self.dirs[d].handshake.extend_from_slice(fragment);
        loop {
            match next_message(&mut self.dirs[d].handshake) {
                Ok(Some(msg)) => self.handshake_message(keys, d, &msg),
                Ok(None) => return,
                Err(TooLarge) => {
                    self.report.unreadable.get_or_insert(Unreadable::HandshakeTooLarge);
                    self.dirs[d].stopped = true;
                    return;
                }
            }
        }
    }

    fn handshake_message(&mut self, keys: &mut Keys, d: usize, msg: &[u8]) {
        let body = &msg[4..];
        match (d, msg[0]) {
            (0, 1) => {
                // A second ClientHello (after a HelloRetryRequest): any 0-RTT data was refused.
                if let Some(early) = self.early.take() {
                    self.end_early_refused(&early);
                    self.dirs[0].protected = false;
                }
                if let Some(h) = parse_client_hello(body) {
                    self.hello.client_random = Some(h.random);
                    self.hello.client_version = h.version;
                    self.hello.client_session_id = h.session_id;
                    self.hello.client_ticket = h.ticket;
                    self.hello.client_ems = h.ems;
                    self.hello.client_etm = h.etm;
                    if h.early_data {
                        self.start_early(keys, &h.random);
                    }
                }
                // A second ClientHello (after a HelloRetryRequest) starts the transcript anew.
                self.transcript.clear();
            }
            (1, 2) => {
                let Some(h) = parse_server_hello(body) else { return };
                if h.random == HELLO_RETRY_RANDOM {
                    // TLS 1.3 already: the compatibility ChangeCipherSpecs
                    // around it protect nothing.
                    self.hello.version = Version::from_wire(h.version);
                    return;
                }
                self.hello.server_random = Some(h.random);
                self.hello.version = Version::from_wire(h.version);
                self.hello.suite_id = Some(h.suite);
                self.hello.suite = suite::by_id(h.suite);
                self.hello.server_session_id = h.session_id;
                self.hello.server_ems = h.ems;
                self.hello.server_etm = h.etm;
                self.report.version = self.hello.version.map(Version::name);
                self.report.cipher_suite = Some(h.suite);
                if self.is_tls13() {
                    self.report.resumed = h.psk;
                    self.tls13_keys(keys);
                }
            }
            (1, 11) => {
                if let Some(leaf) = first_certificate(body) {
                    self.hello.cert_sha256 = Some(Sha256::digest(leaf).into());
                }
            }
            (1, 4) => {
                // NewSessionTicket (TLS 1.2: lifetime, then the ticket).
                if let Some(t) = body.get(4..).and_then(|b| vector16(b)) {
                    self.hello.new_ticket = Some(t.to_vec());
                    self.remember_ticket(keys);
                }
            }
            (0, 16) => {
                // ClientKeyExchange: with RSA, the encrypted premaster (SSLv3 without a length prefix).
                let enc = if self.hello.version == Some(Version::Ssl3) { Some(body) } else { vector16(body) };
                self.hello.encrypted_premaster = enc.map(<[u8]>::to_vec);
                self.append_transcript(msg);
                if let (Some(v), Some(s)) = (self.hello.version, self.hello.suite) {
                    if self.hello.client_ems && self.hello.server_ems && !self.transcript_overflow {
                        self.hello.session_hash = Some(kdf::session_hash(v, s.prf, &self.transcript));
                    }
                }
                return;
            }
            _ => {}
        }
        self.append_transcript(msg);
    }

    fn append_transcript(&mut self, msg: &[u8]) {
        if self.transcript.len() + msg.len() > MAX_TRANSCRIPT {
            self.transcript_overflow = true;
            return;
        }
        self.transcript.extend_from_slice(msg);
    }

    /// At the first ChangeCipherSpec of TLS 1.0-1.2: the master secret and both directions' openers.
    fn find_keys(&mut self, keys: &mut Keys, _d: usize) {
        self.keyed = true;
        let h = &self.hello;
        let (Some(cr), Some(sr), Some(version)) = (h.client_random, h.server_random, h.version) else {
            self.report.unreadable.get_or_insert(Unreadable::HandshakeNotSeen);
            return;
        };
        let Some(suite) = h.suite else {
            self.report.unreadable = Some(Unreadable::UnknownSuite);
            return;
        };
        // An abbreviated handshake: the server's ChangeCipherSpec before any key exchange.
        let resumed = h.encrypted_premaster.is_none() && h.cert_sha256.is_none();
        let mut found: Option<([u8; 48], Mode)> = None;
        if let Some(m) = keys.keylog.as_ref().and_then(|l| l.secrets(&cr)).and_then(|s| s.master) {
            found = Some((m, Mode::Keylog));
        }
        if found.is_none() && resumed {
            let by_id = (!h.server_session_id.is_empty() && h.server_session_id == h.client_session_id)
                .then(|| keys.cache.get(&SessionCache::key(0, &h.server_session_id)))
                .flatten();
            let by_ticket = h.client_ticket.as_ref().and_then(|t| keys.cache.get(&SessionCache::key(1, t)));
            found = by_id.or(by_ticket);
            if found.is_some() {
                self.report.resumed = true;
            }
        }
        if found.is_none() && !resumed {
            self.report.extended_master_secret = h.client_ems && h.server_ems;
            let session_hash = if h.client_ems && h.server_ems {
                match &h.session_hash {
                    Some(s) => Some(s.as_slice()),
                    None => {
                        self.report.unreadable = Some(Unreadable::HandshakeTooLarge);
                        return;
                    }
                }
            } else {
                None
            };
            let premaster = match (&h.encrypted_premaster, suite.kx) {
                (Some(enc), KeyExchange::Rsa) => {
                    let known = keys
                        .server_keys
                        .iter()
                        .filter(|_| self.use_server_keys)
                        .find(|k| Some(k.cert_sha256) == h.cert_sha256);
                    match known {
                        Some(k) => Some((k.premaster(enc, h.client_version), Mode::Passive)),
                        None => keys
                            .keylog
                            .as_ref()
                            .and_then(|l| l.rsa_premaster(enc))
                            .and_then(|p| <[u8; 48]>::try_from(p).ok())
                            .map(|p| (p, Mode::Keylog)),
                    }
                }
                _ => None,
            };
            if let Some((pm, mode)) = premaster {
                found = Some((kdf::master_secret(version, suite.prf, &pm, &cr, &sr, session_hash), mode));
            }
        }
        let Some((master, mode)) = found else {
            self.report.unreadable = Some(if resumed {
                Unreadable::ResumedUnseen
            } else if suite.kx != KeyExchange::Rsa {
                Unreadable::EphemeralKeyExchange
            } else if self.use_server_keys && !keys.server_keys.is_empty() && h.cert_sha256.is_some() {
                Unreadable::OtherCertificate
            } else {
                Unreadable::NoKey
            });
            return;
        };
        self.master = Some(master);
        self.report.mode = Some(mode);
        // Remember it for sessions that resume this one.
        if !h.server_session_id.is_empty() {
            keys.cache.insert(SessionCache::key(0, &h.server_session_id), master, mode);
        }
        let (ck, sk) = kdf::key_block(version, &suite, &master, &cr, &sr);
        let etm = h.client_etm && h.server_etm && suite.bulk.block_len().is_some();
        self.dirs[0].pending = RecordOpener::tls12(version, &suite, &ck, etm);
        self.dirs[1].pending = RecordOpener::tls12(version, &suite, &sk, etm);
    }

    /// A ClientHello that offers 0-RTT data: the client's next records may
    /// be under its early traffic secret (from the key log, for each TLS 1.3
    /// suite of the secret's hash length).
    fn start_early(&mut self, keys: &Keys, random: &[u8; 32]) {
        let secret = keys.keylog.as_ref().and_then(|l| l.secrets(random)).and_then(|s| s.client_early.clone());
        let openers = secret.map_or_else(Vec::new, |secret| {
            [0x1301u16, 0x1302, 0x1303, 0x1304, 0x1305]
                .into_iter()
                .filter_map(suite::by_id)
                .filter(|s| s.prf.output_len() == secret.len())
                .filter_map(|s| RecordOpener::tls13(&s, &secret))
                .collect()
        });
        self.early = Some(Early { openers, next: None, held: Vec::new(), opened: 0, unopened: 0 });
        self.dirs[0].protected = true;
    }

    /// TLS 1.3's ServerHello: both directions protected from here, with the key log's handshake secrets.
    fn tls13_keys(&mut self, keys: &mut Keys) {
        self.keyed = true;
        for d in &mut self.dirs {
            d.protected = true;
        }
        let Some(suite) = self.hello.suite else {
            self.report.unreadable = Some(Unreadable::UnknownSuite);
            return;
        };
        let secrets = self.hello.client_random.and_then(|cr| keys.keylog.as_ref()?.secrets(&cr).cloned());
        let Some(s) = secrets.filter(|s| s.client_handshake.is_some() && s.server_handshake.is_some()) else {
            self.report.unreadable = Some(Unreadable::Tls13);
            return;
        };
        self.report.mode = Some(Mode::Keylog);
        for (d, secret) in [(0, &s.client_handshake), (1, &s.server_handshake)] {
            if let Some(secret) = secret {
                let opener = RecordOpener::tls13(&suite, secret);
                match &mut self.early {
                    // The client's handshake records come after its 0-RTT data.
                    Some(early) if d == 0 => early.next = opener,
                    _ => self.dirs[d].opener = opener,
                }
            }
        }
        self.tls13 =
            Some(Tls13 { client_traffic: s.client_traffic_0.clone(), server_traffic: s.server_traffic_0.clone() });
    }

    /// Handshake messages inside TLS 1.3's protected records: Finished moves a
    /// direction to its application secret, KeyUpdate to the next one.
    fn tls13_handshake(&mut self, d: usize, plaintext: &[u8]) {
        self.dirs[d].handshake.extend_from_slice(plaintext);
        loop {
            let kind = match next_message(&mut self.dirs[d].handshake) {
                Ok(Some(msg)) => msg[0],
                Ok(None) => return,
                Err(TooLarge) => {
                    self.dirs[d].stopped = true;
                    return;
                }
            };
            let Some(suite) = self.hello.suite else { return };
            let next = match kind {
                // Finished: the application traffic secret from the key log.
                20 => {
                    self.tls13
                        .as_mut()
                        .and_then(|t| if d == 0 { t.client_traffic.take() } else { t.server_traffic.take() })
                }
                // KeyUpdate: the next secret from the current one.
                24 => self.dirs[d].secret.as_ref().map(|s| record::tls13_next_secret(suite.prf, s)),
                _ => continue,
            };
            let dir = &mut self.dirs[d];
            match next {
                Some(secret) => {
                    dir.opener = RecordOpener::tls13(&suite, &secret);
                    dir.secret = Some(secret);
                }
                // No secret for what follows: the rest of this direction is counted, not read.
                None => dir.opener = None,
            }
        }
    }

    /// A session that resumed by ticket: remembers the ticket the server issued
    /// (call once the session ends or its keys are known).
    pub fn remember_ticket(&self, keys: &mut Keys) {
        if let (Some(t), Some(m), Some(mode)) = (&self.hello.new_ticket, self.master, self.report.mode) {
            keys.cache.insert(SessionCache::key(1, t), m, mode);
        }
    }
}

/// A handshake message longer than [`MAX_HANDSHAKE_MESSAGE`].
struct TooLarge;

/// The next whole handshake message (type, length, body) taken from `buf`, if it holds one.
fn next_message(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, TooLarge> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = (usize::from(buf[1]) << 16) | (usize::from(buf[2]) << 8) | usize::from(buf[3]);
    if len > MAX_HANDSHAKE_MESSAGE {
        return Err(TooLarge);
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    Ok(Some(buf.drain(..4 + len).collect()))
}

struct ClientHelloFacts {
    version: u16,
    random: [u8; 32],
    session_id: Vec<u8>,
    ticket: Option<Vec<u8>>,
    ems: bool,
    etm: bool,
    early_data: bool,
}

struct ServerHelloFacts {
    version: u16,
    random: [u8; 32],
    session_id: Vec<u8>,
    suite: u16,
    ems: bool,
    etm: bool,
    /// TLS 1.3: the server took a pre-shared key (a resumption).
    psk: bool,
}

/// A byte reader that never panics: every read past the end is `None`.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

fn vector16(b: &[u8]) -> Option<&[u8]> {
    Reader(b).vec16()
}

/// Extensions as (type, body); an absent block is none.
fn extensions(r: &mut Reader) -> Vec<(u16, Vec<u8>)> {
    let mut out = Vec::new();
    let Some(block) = r.vec16() else { return out };
    let mut r = Reader(block);
    while let (Some(t), Some(body)) = (r.u16(), r.vec16()) {
        out.push((t, body.to_vec()));
    }
    out
}

fn parse_client_hello(body: &[u8]) -> Option<ClientHelloFacts> {
    let mut r = Reader(body);
    let version = r.u16()?;
    let random: [u8; 32] = r.take(32)?.try_into().ok()?;
    let session_id = r.vec8()?.to_vec();
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let ext = extensions(&mut r);
    let has = |t: u16| ext.iter().any(|e| e.0 == t);
    let ticket = ext.iter().find(|e| e.0 == 35 && !e.1.is_empty()).map(|e| e.1.clone());
    Some(ClientHelloFacts { version, random, session_id, ticket, ems: has(23), etm: has(22), early_data: has(42) })
}

fn parse_server_hello(body: &[u8]) -> Option<ServerHelloFacts> {
    let mut r = Reader(body);
    let mut version = r.u16()?;
    let random: [u8; 32] = r.take(32)?.try_into().ok()?;
    let session_id = r.vec8()?.to_vec();
    let suite = r.u16()?;
    r.u8()?; // compression method
    let ext = extensions(&mut r);
    if let Some(v) = ext.iter().find(|e| e.0 == 43).and_then(|e| Reader(&e.1).u16()) {
        version = v;
    }
    let has = |t: u16| ext.iter().any(|e| e.0 == t);
    Some(ServerHelloFacts { version, random, session_id, suite, ems: has(23), etm: has(22), psk: has(41) })
}

/// The first certificate of a TLS 1.0-1.2 Certificate message.
fn first_certificate(body: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(body);
    let n = r.take(3)?;
    let list = r.take((usize::from(n[0]) << 16) | (usize::from(n[1]) << 8) | usize::from(n[2]))?;
    let mut r = Reader(list);
    let n = r.take(3)?;
    r.take((usize::from(n[0]) << 16) | (usize::from(n[1]) << 8) | usize::from(n[2]))
}

/// A PKCS#1 RSAPrivateKey wrapped as a PKCS#8 PrivateKeyInfo.
fn pkcs1_to_pkcs8(pkcs1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        let n = body.len();
        if n < 0x80 {
            v.push(n as u8);
        } else {
            let bytes: Vec<u8> = n.to_be_bytes().iter().copied().skip_while(|&b| b == 0).collect();
            v.push(0x80 | bytes.len() as u8);
            v.extend_from_slice(&bytes);
        }
        v.extend_from_slice(body);
        v
    }
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let alg = der(0x30, &[0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00]);
    let mut body = vec![0x02, 0x01, 0x00];
    body.extend_from_slice(&alg);
    body.extend_from_slice(&der(0x04, pkcs1));
    der(0x30, &body)
}
