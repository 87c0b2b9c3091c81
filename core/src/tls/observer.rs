//! The handshake observer: a passive, sans-IO reader of one TCP connection's
//! TLS handshake. It takes each direction's segments (in any order), puts the
//! byte streams back together, reads records and handshake messages across
//! segment and record boundaries, and reports what it learns as events, until
//! each side turns encrypted. No I/O, no clock, no panics on wire data, and
//! bounded memory: at most `max_buffer` reassembly bytes plus one handshake
//! message of at most `max_buffer` bytes per direction; a server message up
//! to [`LargeMessages`]' limit while the budget it shares with other
//! observers has room for it (a certificate chain of a few hundred kilobytes).
//!
//! Record and handshake framing is done here; tls-parser reads the message
//! bodies (ClientHello, ServerHello, Certificate). SSLv2-format hellos are
//! read here (tls-parser has no SSLv2 support).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use tls_parser::{
    parse_tls_handshake_msg_certificate, parse_tls_handshake_server_hello, parse_tls_server_hello_extension,
    TlsExtension, TlsMessageHandshake,
};
use tlsgate_config::facts::{ClientHelloFacts, ServerHelloFacts, TlsVersion};

use tlsgate_config::PreludeProtocol;

use super::client_hello::{ext, parse_client_hello, parse_sslv2_client_hello, split_extensions};
use super::prelude::{Found, NoTls, Prelude, PreludeLimits};
use super::reassembly::{StreamReassembler, DEFAULT_REASSEMBLY_CAP};

/// Which way bytes travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the SYN's sender) to the server.
    ToServer,
    /// From the server to the client.
    ToClient,
}

/// Memory limits of one observer, and the prelude it expects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ObserverLimits {
    /// Bytes buffered per direction for reassembly, and the largest handshake
    /// message accepted (default 64 KiB).
    pub max_buffer: usize,
    /// Leave JA3/JA4 empty and keep the ClientHello's bytes in
    /// `ClientHelloFacts::raw` instead (see [`fill_fingerprints`](super::client_hello::fill_fingerprints)).
    pub defer_fingerprints: bool,
    /// The cleartext prelude the connection begins with (by its server port).
    pub prelude: Option<PreludeProtocol>,
    /// Recognise an HTTP CONNECT tunnel by the client's first bytes.
    pub connect: bool,
    /// Bounds of a prelude.
    pub prelude_limits: PreludeLimits,
}

impl Default for ObserverLimits {
    fn default() -> Self {
        ObserverLimits {
            max_buffer: DEFAULT_REASSEMBLY_CAP,
            defer_fingerprints: false,
            prelude: None,
            connect: false,
            prelude_limits: PreludeLimits::default(),
        }
    }
}

/// Room for server handshake messages larger than
/// [`ObserverLimits::max_buffer`], shared by the observers of one worker: a
/// message up to `limit` bytes is read whole while `budget` bytes, all such
/// messages being read at once together, suffice; past that, or past `limit`,
/// the observer overflows as for any other message. Clones share the budget.
#[derive(Clone, Debug)]
pub struct LargeMessages {
    limit: usize,
    shared: Arc<Budget>,
}

/// The budget and its counts, one allocation for all the worker's observers.
#[derive(Debug)]
struct Budget {
    room: AtomicUsize,
    granted: AtomicU64,
    refused: AtomicU64,
}

impl LargeMessages {
    /// Messages up to `limit` bytes, `budget` bytes of them at once.
    pub fn new(limit: usize, budget: usize) -> Self {
        let shared = Budget { room: AtomicUsize::new(budget), granted: AtomicU64::new(0), refused: AtomicU64::new(0) };
        LargeMessages { limit, shared: Arc::new(shared) }
    }

    /// No message larger than `max_buffer`.
    pub fn none() -> Self {
        LargeMessages::new(0, 0)
    }

    /// Bytes of the budget not in use now.
    pub fn room(&self) -> usize {
        self.shared.room.load(Ordering::Relaxed)
    }

    /// Messages read beyond `max_buffer` so far.
    pub fn granted(&self) -> u64 {
        self.shared.granted.load(Ordering::Relaxed)
    }

    /// Messages within `limit` that found the budget spent.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }

    fn take(&self, bytes: usize) -> Option<Grant> {
        if bytes > self.limit {
            return None;
        }
        let b = &self.shared;
        if b.room.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |room| room.checked_sub(bytes)).is_err() {
            b.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        b.granted.fetch_add(1, Ordering::Relaxed);
        Some(Grant { bytes, budget: self.shared.clone() })
    }
}

impl Default for LargeMessages {
    fn default() -> Self {
        LargeMessages::none()
    }
}

/// Budget held by one side for the large message it is reading; given back
/// when dropped.
#[derive(Debug)]
struct Grant {
    bytes: usize,
    budget: Arc<Budget>,
}

impl Drop for Grant {
    fn drop(&mut self) {
        self.budget.room.fetch_add(self.bytes, Ordering::Relaxed);
    }
}

/// What the observer learned.
#[derive(Debug, Clone, PartialEq)]
pub enum ObserverEvent {
    /// A ClientHello (there are two when a HelloRetryRequest comes between).
    ClientHello(Box<ClientHelloFacts>),
    /// The server asked the client to try again (TLS 1.3).
    HelloRetryRequest,
    /// The ServerHello (`hello_retry` set if a HelloRetryRequest came before).
    ServerHello(ServerHelloFacts),
    /// The server's certificate chain, DER, leaf first (TLS <= 1.2 only: in
    /// TLS 1.3 it is encrypted).
    Certificate {
        /// The certificates as sent.
        chain: Vec<Vec<u8>>,
    },
    /// The server asked for a client certificate (visible in TLS <= 1.2).
    CertificateRequest,
    /// The server stapled an OCSP response (CertificateStatus, TLS <= 1.2).
    CertificateStatus,
    /// The server's first flight is complete (ServerHelloDone, TLS <= 1.2).
    ServerHelloDone,
    /// The server resumed a session without saying so in its ServerHello (a
    /// TLS <= 1.2 session ticket accepted: its ChangeCipherSpec follows the
    /// ServerHello with no Certificate between).
    Resumed,
    /// A plaintext alert.
    Alert {
        /// Who sent it.
        from: Direction,
        /// 1 = warning, 2 = fatal.
        level: u8,
        /// The alert description code.
        description: u8,
    },
    /// That side is encrypted from here on (ChangeCipherSpec, application
    /// data, or a TLS 1.3 ServerHello); the observer wants no more of its bytes.
    HandshakeDone(Direction),
    /// The first bytes of that side are neither a TLS record nor an SSLv2 hello.
    NotTls(Direction),
    /// That side broke the protocol; the observer stopped reading it.
    Malformed {
        /// Who sent it.
        from: Direction,
        /// What was wrong.
        reason: &'static str,
    },
    /// That side needed more buffer than the limit allows.
    Overflow(Direction),
    /// A cleartext prelude ended, and TLS follows on both sides.
    Prelude {
        /// Its protocol.
        protocol: PreludeProtocol,
        /// An HTTP CONNECT's target (`host:port`).
        target: Option<String>,
    },
    /// A cleartext prelude ended without TLS; the observer stopped.
    PreludeEnded {
        /// Its protocol.
        protocol: PreludeProtocol,
        /// Why no TLS follows.
        why: NoTls,
    },
}

/// Observes one connection's TLS handshake.
#[derive(Debug)]
pub struct HandshakeObserver {
    limits: ObserverLimits,
    large: LargeMessages,
    to_server: Side,
    to_client: Side,
    events: VecDeque<ObserverEvent>,
    session: Session,
    /// The cleartext prelude, while it lasts.
    prelude: Option<Prelude>,
    /// A prelude consumed bytes or ended: the other side may be able to go on.
    prelude_moved: bool,
}

/// What one side's handshake told about the session so far.
#[derive(Debug, Default)]
struct Session {
    client_hellos: u8,
    client_session_id: Vec<u8>,
    client_offered_tls13: bool,
    early_data_offered: bool,
    hello_retry: bool,
    server_hello: bool,
    server_version: Option<TlsVersion>,
    certificate_seen: bool,
    certificate_request_seen: bool,
    certificate_status_seen: bool,
    server_hello_done: bool,
    server_resumed: bool,
}

/// One direction's reading state.
#[derive(Debug)]
struct Side {
    reassembly: StreamReassembler,
    /// Bytes of handshake messages not yet complete.
    handshake: Vec<u8>,
    /// Budget held while a message larger than `max_buffer` is read.
    grant: Option<Grant>,
    phase: Phase,
    alerts: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// In a cleartext prelude (STARTTLS, HTTP CONNECT).
    Prelude,
    /// Nothing read yet: is it TLS, SSLv2, or something else?
    First,
    /// After an SSLv2 ClientHello: the client goes on in SSLv2 or TLS format.
    AfterSslv2,
    /// Reading TLS records.
    Records,
    /// Encrypted from here on.
    Done,
    /// Stopped on an error.
    Failed,
}

/// TLS record header length.
const RECORD_HEADER: usize = 5;
/// Largest record payload (2^14 + 2048, the ciphertext limit of RFC 5246).
const MAX_RECORD: usize = 16384 + 2048;
/// Plaintext alerts reported per direction (a peer cannot flood the queue).
const MAX_ALERTS: u8 = 8;

/// The ServerHello random of a HelloRetryRequest (RFC 8446 4.1.3).
const HELLO_RETRY_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91, 0xc2, 0xa2, 0x11,
    0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

mod content {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
    pub const HEARTBEAT: u8 = 24;
}

mod handshake {
    pub const CLIENT_HELLO: u8 = 1;
    pub const SERVER_HELLO: u8 = 2;
    pub const HELLO_RETRY_REQUEST_DRAFT: u8 = 6;
    pub const CERTIFICATE: u8 = 11;
    pub const CERTIFICATE_REQUEST: u8 = 13;
    pub const SERVER_HELLO_DONE: u8 = 14;
    pub const CERTIFICATE_STATUS: u8 = 22;
}

impl HandshakeObserver {
    /// An observer with the given limits.
    pub fn new(limits: ObserverLimits) -> Self {
        let mut o = HandshakeObserver {
            limits,
            large: LargeMessages::none(),
            to_server: Side::new(limits.max_buffer),
            to_client: Side::new(limits.max_buffer),
            events: VecDeque::new(),
            session: Session::default(),
            prelude: None,
            prelude_moved: false,
        };
        if let Some(protocol) = limits.prelude {
            o.start_prelude(protocol);
        }
        o
    }

    /// Reads server handshake messages larger than `max_buffer` within `large`.
    pub fn with_large_messages(mut self, large: LargeMessages) -> Self {
        self.large = large;
        self
    }

    /// Whether a cleartext prelude is being read.
    pub fn in_prelude(&self) -> bool {
        self.prelude.is_some()
    }

    fn start_prelude(&mut self, protocol: PreludeProtocol) {
        self.prelude = Some(Prelude::new(protocol, self.limits.prelude_limits));
        self.to_server.phase = Phase::Prelude;
        self.to_client.phase = Phase::Prelude;
    }

    /// The first sequence number of `dir`'s data (ISN + 1 from the SYN or
    /// SYN-ACK). Without it the first segment seen starts the stream.
    pub fn set_initial_seq(&mut self, dir: Direction, next_seq: u32) {
        self.side_mut(dir).reassembly.set_next_seq(next_seq);
    }

    /// The sequence number of `dir`'s first data byte, once known.
    pub fn stream_start(&self, dir: Direction) -> Option<u32> {
        match dir {
            Direction::ToServer => self.to_server.reassembly.stream_start(),
            Direction::ToClient => self.to_client.reassembly.stream_start(),
        }
    }

    /// Feeds one TCP segment's payload; events become available from poll_event.
    pub fn on_segment(&mut self, dir: Direction, seq: u32, payload: &[u8]) {
        if payload.is_empty() || !self.wants(dir) {
            return;
        }
        if self.side_mut(dir).reassembly.push(seq, payload).is_err() {
            self.fail(dir, ObserverEvent::Overflow(dir));
            return;
        }
        self.read(dir);
        // A prelude's progress on one side can let the other go on (the
        // client's pipelined ClientHello once the server said yes).
        let other = match dir {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        };
        let mut turn = other;
        while std::mem::take(&mut self.prelude_moved) {
            self.read(turn);
            turn = if turn == dir { other } else { dir };
        }
    }

    /// Whether a segment of `dir` carries other bytes than those already
    /// received at its place (and still kept: while that side is read).
    pub fn conflicts(&self, dir: Direction, seq: u32, payload: &[u8]) -> bool {
        self.wants(dir) && self.side(dir).reassembly.conflicts(seq, payload)
    }

    /// The bytes of `dir` read so far and still kept (while that side is
    /// read), from the sequence number of the first.
    pub fn judged(&self, dir: Direction) -> Option<(u32, &[u8])> {
        if !self.wants(dir) {
            return None;
        }
        self.side(dir).reassembly.kept().filter(|(_, b)| !b.is_empty())
    }

    /// Takes out the bytes of `dir` read so far and still kept (the observer
    /// reads that side no further): for a flow that keeps what it was judged on.
    pub fn take_judged(&mut self, dir: Direction) -> Option<(u32, Vec<u8>)> {
        if !self.wants(dir) {
            return None;
        }
        let side = self.side_mut(dir);
        let taken = side.reassembly.take_kept().filter(|(_, b)| !b.is_empty());
        side.stop(Phase::Done);
        taken
    }

    /// The next event, oldest first.
    pub fn poll_event(&mut self) -> Option<ObserverEvent> {
        self.events.pop_front()
    }

    /// Whether the observer still wants bytes in that direction (false once that side is encrypted or failed).
    pub fn wants(&self, dir: Direction) -> bool {
        matches!(self.side(dir).phase, Phase::Prelude | Phase::First | Phase::AfterSslv2 | Phase::Records)
    }

    /// Bytes currently buffered (both directions), for accounting.
    pub fn buffered(&self) -> usize {
        self.to_server.buffered() + self.to_client.buffered()
    }

    /// The limits given at construction.
    pub fn limits(&self) -> ObserverLimits {
        self.limits
    }

    fn side(&self, dir: Direction) -> &Side {
        match dir {
            Direction::ToServer => &self.to_server,
            Direction::ToClient => &self.to_client,
        }
    }

    fn side_mut(&mut self, dir: Direction) -> &mut Side {
        match dir {
            Direction::ToServer => &mut self.to_server,
            Direction::ToClient => &mut self.to_client,
        }
    }

    /// Reads whatever complete units `dir`'s contiguous bytes hold.
    fn read(&mut self, dir: Direction) {
        loop {
            let step = match self.side(dir).phase {
                Phase::Prelude => self.read_prelude(dir),
                Phase::First => self.read_first(dir),
                Phase::AfterSslv2 => self.read_after_sslv2(dir),
                Phase::Records => self.read_record(dir),
                Phase::Done | Phase::Failed => Step::Wait,
            };
            if step == Step::Wait {
                break;
            }
        }
    }

    /// Reads a prelude's bytes from `dir`: TLS follows, or not, or more is needed.
    fn read_prelude(&mut self, dir: Direction) -> Step {
        let HandshakeObserver { prelude, to_server, to_client, .. } = self;
        let Some(p) = prelude else { return Step::Wait };
        let side = if dir == Direction::ToServer { to_server } else { to_client };
        let (n, found) = p.read(dir, side.reassembly.contiguous());
        side.reassembly.consume(n);
        self.prelude_moved |= n > 0;
        match found {
            Found::Wait => Step::Wait,
            Found::Tls | Found::Direct => {
                let Some(p) = self.prelude.take() else { return Step::Wait };
                if found == Found::Tls {
                    self.push(ObserverEvent::Prelude { protocol: p.protocol(), target: p.target().map(str::to_owned) });
                }
                for d in [Direction::ToServer, Direction::ToClient] {
                    if self.side(d).phase == Phase::Prelude {
                        self.side_mut(d).phase = Phase::First;
                    }
                }
                self.prelude_moved = true;
                Step::Continue
            }
            Found::NoTls(why) => {
                let Some(p) = self.prelude.take() else { return Step::Wait };
                self.push(ObserverEvent::PreludeEnded { protocol: p.protocol(), why });
                self.to_server.stop(Phase::Failed);
                self.to_client.stop(Phase::Failed);
                Step::Wait
            }
        }
    }

    /// The prelude ran out of time (the observer has no clock: the caller says so).
    pub fn prelude_timed_out(&mut self) {
        if let Some(p) = self.prelude.take() {
            self.push(ObserverEvent::PreludeEnded { protocol: p.protocol(), why: NoTls::TimedOut });
            self.to_server.stop(Phase::Failed);
            self.to_client.stop(Phase::Failed);
        }
    }

    /// Decides from the first bytes what the stream is.
    fn read_first(&mut self, dir: Direction) -> Step {
        let data = self.side(dir).reassembly.contiguous();
        // An HTTP CONNECT tunnel: TLS follows the proxy's yes.
        const CONNECT: &[u8] = b"CONNECT ";
        let connect = dir == Direction::ToServer && self.limits.connect && self.session.client_hellos == 0;
        if connect && data.len() < CONNECT.len() && !data.is_empty() && CONNECT.starts_with(data) {
            return Step::Wait;
        }
        if connect && data.starts_with(CONNECT) && self.side(Direction::ToClient).phase == Phase::First {
            self.start_prelude(PreludeProtocol::HttpConnect);
            return Step::Continue;
        }
        let Some(&[b0, b1, b2]) = data.get(..3) else { return Step::Wait };
        if looks_like_record_start(b0, b1) && b2 <= 4 {
            self.side_mut(dir).phase = Phase::Records;
            return Step::Continue;
        }
        let sslv2_type = match dir {
            Direction::ToServer => 1, // CLIENT-HELLO
            Direction::ToClient => 4, // SERVER-HELLO
        };
        if looks_like_sslv2_start(b0) && b2 == sslv2_type {
            return self.read_sslv2(dir);
        }
        self.fail(dir, ObserverEvent::NotTls(dir));
        Step::Wait
    }

    /// After an SSLv2 ClientHello the client answers the server in the format
    /// the server chose: TLS records (read on), or SSLv2 (encrypted soon: done).
    fn read_after_sslv2(&mut self, dir: Direction) -> Step {
        let Some(&b0) = self.side(dir).reassembly.contiguous().first() else { return Step::Wait };
        if looks_like_sslv2_start(b0) {
            self.finish(dir);
            return Step::Wait;
        }
        self.side_mut(dir).phase = Phase::Records;
        Step::Continue
    }

    /// One SSLv2 record holding a CLIENT-HELLO or SERVER-HELLO.
    fn read_sslv2(&mut self, dir: Direction) -> Step {
        let data = self.side(dir).reassembly.contiguous();
        let (len, body) = match data {
            [b0, b1, rest @ ..] => {
                let len = usize::from(u16::from_be_bytes([b0 & 0x7f, *b1]));
                match rest.get(..len) {
                    Some(body) => (len, body),
                    None => return Step::Wait,
                }
            }
            _ => return Step::Wait,
        };
        match dir {
            Direction::ToServer => match parse_sslv2_client_hello(body, !self.limits.defer_fingerprints) {
                Ok(details) => {
                    self.session.client_hellos = 1;
                    self.session.client_session_id = details.session_id;
                    self.side_mut(dir).reassembly.consume(2 + len);
                    self.side_mut(dir).phase = Phase::AfterSslv2;
                    self.push(ObserverEvent::ClientHello(Box::new(details.facts)));
                    Step::Continue
                }
                Err(e) => {
                    self.fail(dir, ObserverEvent::Malformed { from: dir, reason: e.reason() });
                    Step::Wait
                }
            },
            Direction::ToClient => {
                // The server speaks SSLv2. Its SERVER-HELLO carries its
                // certificate (msg type, session-id hit, certificate type,
                // version, certificate length, cipher specs length,
                // connection id length, then the certificate); its key
                // exchange follows in SSLv2, nothing more to learn.
                let certificate = match body {
                    [4, _, 1, _, _, c0, c1, _, _, _, _, rest @ ..] => {
                        rest.get(..usize::from(u16::from_be_bytes([*c0, *c1]))).filter(|c| !c.is_empty())
                    }
                    _ => None,
                }
                .map(<[u8]>::to_vec);
                if let Some(cert) = certificate {
                    self.session.certificate_seen = true;
                    self.push(ObserverEvent::Certificate { chain: vec![cert] });
                }
                self.session.server_hello = true;
                self.session.server_version = Some(TlsVersion::Ssl2);
                let facts = ServerHelloFacts {
                    version: Some(TlsVersion::Ssl2),
                    wire_version: 0x0002,
                    hello_retry: self.session.hello_retry,
                    ..ServerHelloFacts::default()
                };
                self.push(ObserverEvent::ServerHello(facts));
                self.finish(dir);
                Step::Wait
            }
        }
    }

    /// One TLS record, if complete.
    fn read_record(&mut self, dir: Direction) -> Step {
        let data = self.side(dir).reassembly.contiguous();
        let Some(&[kind, major, minor, l0, l1]) = data.get(..RECORD_HEADER) else { return Step::Wait };
        let len = usize::from(u16::from_be_bytes([l0, l1]));
        if major != 3 || minor > 4 {
            return self.malformed(dir, "bad record version");
        }
        if len > MAX_RECORD {
            return self.malformed(dir, "record longer than 2^14 + 2048");
        }
        let Some(fragment) = data.get(RECORD_HEADER..RECORD_HEADER + len) else { return Step::Wait };
        match kind {
            content::HANDSHAKE => {
                let side = self.side_mut(dir);
                let Side { reassembly, handshake, .. } = side;
                if let Some(fragment) = reassembly.contiguous().get(RECORD_HEADER..RECORD_HEADER + len) {
                    handshake.extend_from_slice(fragment);
                }
                reassembly.consume(RECORD_HEADER + len);
                self.read_handshake_messages(dir)
            }
            content::ALERT => {
                let alerts: Vec<(u8, u8)> = fragment.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                let odd = len % 2 != 0 || len == 0;
                self.side_mut(dir).reassembly.consume(RECORD_HEADER + len);
                if odd {
                    return self.malformed(dir, "alert record of odd length");
                }
                for (level, description) in alerts {
                    let side = self.side_mut(dir);
                    if side.alerts < MAX_ALERTS {
                        side.alerts += 1;
                        self.push(ObserverEvent::Alert { from: dir, level, description });
                    }
                }
                Step::Continue
            }
            content::CHANGE_CIPHER_SPEC => {
                self.side_mut(dir).reassembly.consume(RECORD_HEADER + len);
                if self.change_cipher_spec_is_real(dir) {
                    let s = &self.session;
                    let abbreviated = dir == Direction::ToClient
                        && s.server_hello
                        && !s.server_resumed
                        && !s.certificate_seen
                        && !s.server_hello_done
                        && s.server_version.is_some_and(|v| v < TlsVersion::Tls13);
                    if abbreviated {
                        self.session.server_resumed = true;
                        self.push(ObserverEvent::Resumed);
                    }
                    self.finish(dir);
                    return Step::Wait;
                }
                Step::Continue
            }
            content::APPLICATION_DATA => {
                // 0-RTT data before the ServerHello: a second ClientHello may still come.
                let early = dir == Direction::ToServer && self.session.early_data_offered && !self.session.server_hello;
                if early {
                    self.side_mut(dir).reassembly.consume(RECORD_HEADER + len);
                    return Step::Continue;
                }
                self.finish(dir);
                Step::Wait
            }
            content::HEARTBEAT => {
                self.side_mut(dir).reassembly.consume(RECORD_HEADER + len);
                Step::Continue
            }
            _ => self.malformed(dir, "unknown record content type"),
        }
    }

    /// Whether a ChangeCipherSpec from `dir` means encrypted records follow,
    /// or is TLS 1.3's middlebox-compatibility dummy sent around a
    /// HelloRetryRequest (RFC 8446 D.4), after which plaintext hellos follow.
    fn change_cipher_spec_is_real(&self, dir: Direction) -> bool {
        let s = &self.session;
        match dir {
            Direction::ToClient => !s.hello_retry || s.server_hello,
            // After a HelloRetryRequest the client's dummy CCS may precede
            // its second ClientHello.
            Direction::ToServer if s.hello_retry && s.client_hellos < 2 => false,
            Direction::ToServer => s.server_hello || !s.client_offered_tls13,
        }
    }

    /// Reads every complete handshake message buffered for `dir`.
    fn read_handshake_messages(&mut self, dir: Direction) -> Step {
        let buffer = std::mem::take(&mut self.side_mut(dir).handshake);
        let mut at = 0;
        let mut step = Step::Continue;
        while let Some(&[kind, a, b, c]) = buffer.get(at..at + 4) {
            let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
            if len > self.limits.max_buffer && !self.room_for(dir, len) {
                self.fail(dir, ObserverEvent::Overflow(dir));
                return Step::Wait;
            }
            let Some(body) = buffer.get(at + 4..at + 4 + len) else { break };
            at += 4 + len;
            self.read_handshake_message(dir, kind, body);
            if !self.wants(dir) {
                step = Step::Wait;
                break;
            }
        }
        if self.wants(dir) {
            let mut buffer = buffer;
            buffer.drain(..at.min(buffer.len()));
            let max = self.limits.max_buffer;
            let side = self.side_mut(dir);
            // A large message read: its budget goes back, and its memory.
            let large_pending =
                matches!(buffer.get(..4), Some(&[_, a, b, c]) if u32::from_be_bytes([0, a, b, c]) as usize > max);
            if side.grant.is_some() && !large_pending {
                side.grant = None;
                buffer.shrink_to(max);
            }
            side.handshake = buffer;
        }
        step
    }

    /// Whether `dir` may read a handshake message of `len` bytes, larger
    /// than `max_buffer`: a server's, within the large-message limit, with
    /// the budget this side holds or can take.
    fn room_for(&mut self, dir: Direction, len: usize) -> bool {
        if dir != Direction::ToClient {
            return false;
        }
        let HandshakeObserver { large, to_client: side, .. } = self;
        if side.grant.as_ref().is_some_and(|g| g.bytes >= len) {
            return true;
        }
        // What it held for a smaller message goes back before it asks again.
        side.grant = None;
        side.grant = large.take(len);
        side.grant.is_some()
    }

    fn read_handshake_message(&mut self, dir: Direction, kind: u8, body: &[u8]) {
        match (dir, kind) {
            (Direction::ToServer, handshake::CLIENT_HELLO) => self.read_client_hello(body),
            (Direction::ToClient, handshake::SERVER_HELLO) => self.read_server_hello(body),
            (Direction::ToClient, handshake::HELLO_RETRY_REQUEST_DRAFT) => self.read_hello_retry(),
            (Direction::ToClient, handshake::CERTIFICATE) => self.read_certificate(body),
            (Direction::ToClient, handshake::CERTIFICATE_REQUEST) if !self.session.certificate_request_seen => {
                self.session.certificate_request_seen = true;
                self.push(ObserverEvent::CertificateRequest);
            }
            (Direction::ToClient, handshake::CERTIFICATE_STATUS) if !self.session.certificate_status_seen => {
                self.session.certificate_status_seen = true;
                self.push(ObserverEvent::CertificateStatus);
            }
            (Direction::ToClient, handshake::SERVER_HELLO_DONE) if !self.session.server_hello_done => {
                self.session.server_hello_done = true;
                self.push(ObserverEvent::ServerHelloDone);
            }
            // ServerKeyExchange, ServerHelloDone, NewSessionTicket, client
            // Certificate, ClientKeyExchange, ...: nothing the policy needs.
            _ => {}
        }
    }

    fn read_client_hello(&mut self, body: &[u8]) {
        let dir = Direction::ToServer;
        if self.session.client_hellos >= 2 {
            self.malformed(dir, "more than two ClientHellos");
            return;
        }
        match parse_client_hello(body, !self.limits.defer_fingerprints) {
            Ok(details) => {
                self.session.client_hellos += 1;
                self.session.client_session_id = details.session_id;
                self.session.early_data_offered = details.early_data;
                self.session.client_offered_tls13 = details.facts.versions.contains(&TlsVersion::Tls13);
                self.push(ObserverEvent::ClientHello(Box::new(details.facts)));
            }
            Err(e) => {
                self.malformed(dir, e.reason());
            }
        }
    }

    fn read_server_hello(&mut self, body: &[u8]) {
        let dir = Direction::ToClient;
        if self.session.server_hello {
            self.malformed(dir, "second ServerHello");
            return;
        }
        if body.get(2..34) == Some(&HELLO_RETRY_RANDOM[..]) {
            self.read_hello_retry();
            return;
        }
        let Ok((_, sh)) = parse_tls_handshake_server_hello(body) else {
            self.malformed(dir, "malformed ServerHello");
            return;
        };
        let Ok(extensions) = split_extensions(sh.ext.unwrap_or_default()) else {
            self.malformed(dir, "malformed ServerHello extensions");
            return;
        };
        let mut selected_version = None;
        let mut alpn = None;
        let mut psk = false;
        for raw in &extensions {
            match raw.kind {
                ext::SUPPORTED_VERSIONS => {
                    if let &[a, b] = raw.data {
                        selected_version = Some(u16::from_be_bytes([a, b]));
                    }
                }
                ext::PRE_SHARED_KEY => psk = true,
                ext::ALPN => {
                    if let Ok((_, TlsExtension::ALPN(protocols))) = parse_tls_server_hello_extension(raw.whole) {
                        alpn = protocols.first().map(|p| String::from_utf8_lossy(p).into_owned());
                    }
                }
                _ => {}
            }
        }
        let wire_version = selected_version.unwrap_or(sh.version.0);
        let version = TlsVersion::family(wire_version);
        let session_id = sh.session_id.unwrap_or_default();
        let resumed = if version == Some(TlsVersion::Tls13) {
            psk
        } else {
            !session_id.is_empty() && session_id == self.session.client_session_id.as_slice()
        };
        self.session.server_hello = true;
        self.session.server_version = version;
        self.session.server_resumed = resumed;
        self.push(ObserverEvent::ServerHello(ServerHelloFacts {
            version,
            wire_version,
            cipher_suite: sh.cipher.0,
            compression: sh.compression.0,
            alpn,
            resumed,
            hello_retry: self.session.hello_retry,
        }));
        if version == Some(TlsVersion::Tls13) {
            // Everything after the TLS 1.3 ServerHello is encrypted.
            self.finish(dir);
        }
    }

    fn read_hello_retry(&mut self) {
        if self.session.hello_retry {
            self.malformed(Direction::ToClient, "second HelloRetryRequest");
            return;
        }
        self.session.hello_retry = true;
        self.push(ObserverEvent::HelloRetryRequest);
    }

    fn read_certificate(&mut self, body: &[u8]) {
        if self.session.certificate_seen || self.session.server_version == Some(TlsVersion::Tls13) {
            return;
        }
        match parse_tls_handshake_msg_certificate(body) {
            Ok((_, TlsMessageHandshake::Certificate(contents))) => {
                self.session.certificate_seen = true;
                let chain = contents.cert_chain.iter().map(|c| c.data.to_vec()).collect();
                self.push(ObserverEvent::Certificate { chain });
            }
            _ => {
                self.malformed(Direction::ToClient, "malformed Certificate");
            }
        }
    }

    fn push(&mut self, event: ObserverEvent) {
        self.events.push_back(event);
    }

    /// That side is encrypted from here on.
    fn finish(&mut self, dir: Direction) {
        self.side_mut(dir).stop(Phase::Done);
        self.push(ObserverEvent::HandshakeDone(dir));
    }

    fn fail(&mut self, dir: Direction, event: ObserverEvent) {
        self.side_mut(dir).stop(Phase::Failed);
        self.push(event);
    }

    fn malformed(&mut self, dir: Direction, reason: &'static str) -> Step {
        self.fail(dir, ObserverEvent::Malformed { from: dir, reason });
        Step::Wait
    }
}

impl Side {
    fn new(cap: usize) -> Side {
        Side {
            reassembly: StreamReassembler::new(cap),
            handshake: Vec::new(),
            grant: None,
            phase: Phase::First,
            alerts: 0,
        }
    }

    fn buffered(&self) -> usize {
        self.reassembly.buffered() + self.handshake.len()
    }

    /// Stops reading and frees the buffers.
    fn stop(&mut self, phase: Phase) {
        self.phase = phase;
        self.reassembly.release();
        self.handshake = Vec::new();
        self.grant = None;
    }
}

/// Whether the loop over a side's bytes goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Continue,
    Wait,
}

fn looks_like_record_start(b0: u8, b1: u8) -> bool {
    (content::CHANGE_CIPHER_SPEC..=content::HEARTBEAT).contains(&b0) && b1 == 3
}

/// An SSLv2 record with a 2-byte header has the high bit set.
fn looks_like_sslv2_start(b0: u8) -> bool {
    b0 & 0x80 != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_support::*;

    const SERVER_RANDOM: [u8; 32] = [0x22; 32];

    fn events(o: &mut HandshakeObserver) -> Vec<ObserverEvent> {
        std::iter::from_fn(|| o.poll_event()).collect()
    }

    /// Feeds `bytes` as one direction's stream in segments of `size`.
    fn feed(o: &mut HandshakeObserver, dir: Direction, start: u32, bytes: &[u8], size: usize) -> u32 {
        let mut seq = start;
        for chunk in bytes.chunks(size) {
            o.on_segment(dir, seq, chunk);
            seq = seq.wrapping_add(chunk.len() as u32);
        }
        seq
    }

    fn observer() -> HandshakeObserver {
        HandshakeObserver::new(ObserverLimits::default())
    }

    fn client_hello_record(sni_name: &str) -> Vec<u8> {
        let body = client_hello(0x0303, &[], &[0xc02f, 0x002f], &[extension(0, &sni(sni_name))]);
        record(22, &handshake(1, &body))
    }

    fn tls12_server_flight(cert: &[u8]) -> Vec<u8> {
        let mut msgs = handshake(2, &server_hello(SERVER_RANDOM, &[], 0xc02f, &[]));
        msgs.extend(handshake(11, &certificate(&[cert, b"second"])));
        msgs.extend(handshake(14, &[]));
        record(22, &msgs)
    }

    #[test]
    fn records_split_byte_by_byte() {
        let mut o = observer();
        o.set_initial_seq(Direction::ToServer, 1000);
        feed(&mut o, Direction::ToServer, 1000, &client_hello_record("Example.COM"), 1);
        let ev = events(&mut o);
        assert_eq!(ev.len(), 1);
        let ObserverEvent::ClientHello(ch) = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(ch.sni.as_deref(), Some("example.com"));
        assert_eq!(ch.cipher_suites, vec![0xc02f, 0x002f]);
        assert!(o.wants(Direction::ToServer));
        assert_eq!(o.buffered(), 0);
    }

    #[test]
    fn message_spanning_three_records_and_record_with_many_messages() {
        let mut o = observer();
        let body = chrome_client_hello();
        let msg = handshake(1, &body);
        let third = msg.len() / 3;
        let mut stream = record(22, &msg[..third]);
        stream.extend(record(22, &msg[third..2 * third]));
        stream.extend(record(22, &msg[2 * third..]));
        feed(&mut o, Direction::ToServer, 5, &stream, 100);
        let ev = events(&mut o);
        assert!(matches!(&ev[..], [ObserverEvent::ClientHello(ch)] if ch.ja4.starts_with("t13d1516h2")), "{ev:?}");

        // ServerHello, Certificate and ServerHelloDone in one record, in segments out of order.
        let flight = tls12_server_flight(b"leaf-der");
        o.set_initial_seq(Direction::ToClient, 9000);
        let segments: Vec<(usize, &[u8])> = flight.chunks(7).enumerate().collect();
        for (i, chunk) in segments.iter().rev() {
            o.on_segment(Direction::ToClient, 9000 + (*i as u32) * 7, chunk);
        }
        let ev = events(&mut o);
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert_eq!(ev[2], ObserverEvent::ServerHelloDone);
        let ObserverEvent::ServerHello(sh) = &ev[0] else { panic!("{ev:?}") };
        assert_eq!(sh.version, Some(TlsVersion::Tls12));
        assert_eq!(sh.cipher_suite, 0xc02f);
        assert!(!sh.resumed && !sh.hello_retry);
        assert_eq!(ev[1], ObserverEvent::Certificate { chain: vec![b"leaf-der".to_vec(), b"second".to_vec()] });
        // Then each side's ChangeCipherSpec ends it.
        o.on_segment(Direction::ToClient, 9000 + flight.len() as u32, &record(20, &[1]));
        o.on_segment(Direction::ToServer, 5 + stream.len() as u32, &record(20, &[1]));
        assert_eq!(
            events(&mut o),
            vec![ObserverEvent::HandshakeDone(Direction::ToClient), ObserverEvent::HandshakeDone(Direction::ToServer)]
        );
        assert!(!o.wants(Direction::ToClient) && !o.wants(Direction::ToServer));
        assert_eq!(o.buffered(), 0);
    }

    #[test]
    fn tls13_server_hello_ends_the_server_side() {
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &record(22, &handshake(1, &chrome_client_hello())));
        let sh =
            server_hello(SERVER_RANDOM, &[0x26; 32], 0x1301, &[extension(0x002b, &[3, 4]), extension(0x0033, &[0; 8])]);
        let mut flight = record(22, &handshake(2, &sh));
        flight.extend(record(20, &[1]));
        flight.extend(record(23, &[0xee; 40]));
        o.on_segment(Direction::ToClient, 1, &flight);
        let ev = events(&mut o);
        assert_eq!(ev.len(), 3, "{ev:?}");
        let ObserverEvent::ServerHello(facts) = &ev[1] else { panic!("{ev:?}") };
        assert_eq!(facts.version, Some(TlsVersion::Tls13));
        assert!(!facts.resumed, "an echoed legacy session id is no TLS 1.3 resumption");
        assert_eq!(ev[2], ObserverEvent::HandshakeDone(Direction::ToClient));
        // The client's compatibility CCS: its encrypted flight follows.
        let ch_len = record(22, &handshake(1, &chrome_client_hello())).len() as u32;
        o.on_segment(Direction::ToServer, 1 + ch_len, &record(20, &[1]));
        assert_eq!(events(&mut o), vec![ObserverEvent::HandshakeDone(Direction::ToServer)]);
    }

    #[test]
    fn tls13_psk_resumption() {
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &record(22, &handshake(1, &chrome_client_hello())));
        let sh = server_hello(SERVER_RANDOM, &[], 0x1301, &[extension(0x002b, &[3, 4]), extension(0x0029, &[0, 0])]);
        o.on_segment(Direction::ToClient, 1, &record(22, &handshake(2, &sh)));
        let ev = events(&mut o);
        assert!(matches!(&ev[1], ObserverEvent::ServerHello(f) if f.resumed), "{ev:?}");
    }

    #[test]
    fn tls12_resumption_by_session_id_echo() {
        let mut o = observer();
        let sid = [7u8; 32];
        let ch = client_hello(0x0303, &sid, &[0x002f], &[]);
        o.on_segment(Direction::ToServer, 1, &record(22, &handshake(1, &ch)));
        let mut flight = record(22, &handshake(2, &server_hello(SERVER_RANDOM, &sid, 0x002f, &[])));
        flight.extend(record(20, &[1]));
        o.on_segment(Direction::ToClient, 1, &flight);
        let ev = events(&mut o);
        assert!(matches!(&ev[1], ObserverEvent::ServerHello(f) if f.resumed), "{ev:?}");
        assert_eq!(ev[2], ObserverEvent::HandshakeDone(Direction::ToClient));

        // A fresh session id from the server is a full handshake.
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &record(22, &handshake(1, &ch)));
        o.on_segment(
            Direction::ToClient,
            1,
            &record(22, &handshake(2, &server_hello(SERVER_RANDOM, &[9; 32], 0x2f, &[]))),
        );
        assert!(events(&mut o).iter().any(|e| matches!(e, ObserverEvent::ServerHello(f) if !f.resumed)));
    }

    #[test]
    fn hello_retry_with_compatibility_ccs() {
        let hrr_random: [u8; 32] = HELLO_RETRY_RANDOM;
        let mut o = observer();
        let ch = chrome_client_hello();
        let mut seq_c = feed(&mut o, Direction::ToServer, 0, &record(22, &handshake(1, &ch)), 1460);
        let hrr = server_hello(hrr_random, &[0x26; 32], 0x1301, &[extension(0x002b, &[3, 4])]);
        let mut flight = record(22, &handshake(2, &hrr));
        flight.extend(record(20, &[1])); // dummy CCS after the HRR
        let seq_s = feed(&mut o, Direction::ToClient, 0, &flight, 1460);
        // The client's dummy CCS, then its second ClientHello.
        seq_c = feed(&mut o, Direction::ToServer, seq_c, &record(20, &[1]), 1460);
        feed(&mut o, Direction::ToServer, seq_c, &record(22, &handshake(1, &ch)), 1460);
        let sh = server_hello(SERVER_RANDOM, &[0x26; 32], 0x1301, &[extension(0x002b, &[3, 4])]);
        feed(&mut o, Direction::ToClient, seq_s, &record(22, &handshake(2, &sh)), 1460);
        let ev = events(&mut o);
        assert!(matches!(&ev[0], ObserverEvent::ClientHello(_)), "{ev:?}");
        assert_eq!(ev[1], ObserverEvent::HelloRetryRequest);
        assert!(matches!(&ev[2], ObserverEvent::ClientHello(_)), "{ev:?}");
        assert!(matches!(&ev[3], ObserverEvent::ServerHello(f) if f.hello_retry), "{ev:?}");
        assert_eq!(ev[4], ObserverEvent::HandshakeDone(Direction::ToClient));
        assert_eq!(ev.len(), 5);
    }

    #[test]
    fn certificate_request_and_alerts() {
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &client_hello_record("a.example"));
        let mut msgs = handshake(2, &server_hello(SERVER_RANDOM, &[], 0x2f, &[]));
        msgs.extend(handshake(13, &[1, 1, 0, 0, 0, 0]));
        let mut flight = record(22, &msgs);
        flight.extend(record(21, &[2, 40]));
        o.on_segment(Direction::ToClient, 1, &flight);
        let ev = events(&mut o);
        assert_eq!(ev[2], ObserverEvent::CertificateRequest);
        assert_eq!(ev[3], ObserverEvent::Alert { from: Direction::ToClient, level: 2, description: 40 });
    }

    #[test]
    fn garbage_is_not_tls() {
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(events(&mut o), vec![ObserverEvent::NotTls(Direction::ToServer)]);
        assert!(!o.wants(Direction::ToServer));
        assert!(o.wants(Direction::ToClient));
        assert_eq!(o.buffered(), 0);
        o.on_segment(Direction::ToServer, 30, b"more");
        assert_eq!(events(&mut o), vec![]);
    }

    #[test]
    fn truncated_input_waits() {
        let mut o = observer();
        let rec = client_hello_record("example.com");
        o.on_segment(Direction::ToServer, 1, &rec[..rec.len() - 1]);
        assert_eq!(events(&mut o), vec![]);
        assert!(o.wants(Direction::ToServer));
        assert_eq!(o.buffered(), rec.len() - 1);
        o.on_segment(Direction::ToServer, 1 + rec.len() as u32 - 1, &rec[rec.len() - 1..]);
        assert!(matches!(&events(&mut o)[..], [ObserverEvent::ClientHello(_)]));
    }

    #[test]
    fn absurd_lengths() {
        // Record length beyond 2^14 + 2048.
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &[22, 3, 1, 0xff, 0xff, 1, 2, 3]);
        assert_eq!(
            events(&mut o),
            vec![ObserverEvent::Malformed { from: Direction::ToServer, reason: "record longer than 2^14 + 2048" }]
        );
        // A Certificate message claiming 1 MB: refused at its header, nothing allocated for it.
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &client_hello_record("a"));
        let mut msgs = handshake(2, &server_hello(SERVER_RANDOM, &[], 0x2f, &[]));
        msgs.extend_from_slice(&[11, 0x10, 0x00, 0x00, 0x0f, 0xff, 0xfc]);
        o.on_segment(Direction::ToClient, 1, &record(22, &msgs));
        let ev = events(&mut o);
        assert_eq!(ev.last(), Some(&ObserverEvent::Overflow(Direction::ToClient)), "{ev:?}");
        assert_eq!(o.buffered(), 0);
        // A bad record version.
        let mut o = observer();
        o.on_segment(Direction::ToServer, 1, &client_hello_record("a"));
        o.on_segment(Direction::ToServer, 1 + client_hello_record("a").len() as u32, &[22, 9, 9, 0, 1, 0]);
        assert!(events(&mut o)
            .contains(&ObserverEvent::Malformed { from: Direction::ToServer, reason: "bad record version" }));
    }

    #[test]
    fn reassembly_overflow_is_reported() {
        let mut o = HandshakeObserver::new(ObserverLimits { max_buffer: 1024, ..ObserverLimits::default() });
        // A record header announcing 2000 bytes that never complete within 1 KiB.
        let mut data = vec![22, 3, 3, 0x07, 0xd0];
        data.extend(vec![0u8; 1100]);
        o.on_segment(Direction::ToServer, 1, &data);
        assert_eq!(events(&mut o), vec![ObserverEvent::Overflow(Direction::ToServer)]);
        assert!(!o.wants(Direction::ToServer));
    }

    #[test]
    fn sslv2_client_hello() {
        let mut body = vec![1, 0x03, 0x01, 0, 6, 0, 0, 0, 16];
        body.extend_from_slice(&[0x01, 0x00, 0x80, 0x00, 0x00, 0x2f]);
        body.extend_from_slice(&[0x55; 16]);
        let mut rec = vec![0x80 | (body.len() >> 8) as u8, body.len() as u8];
        rec.extend_from_slice(&body);
        let mut o = observer();
        feed(&mut o, Direction::ToServer, 77, &rec, 3);
        let ev = events(&mut o);
        assert!(matches!(&ev[..], [ObserverEvent::ClientHello(ch)] if ch.sslv2 && ch.cipher_suites == vec![0x2f]));
        // The server answers in TLS: the client goes on in TLS records.
        o.on_segment(Direction::ToClient, 1, &record(22, &handshake(2, &server_hello(SERVER_RANDOM, &[], 0x2f, &[]))));
        o.on_segment(Direction::ToServer, 77 + rec.len() as u32, &record(22, &handshake(16, &[0; 10])));
        o.on_segment(Direction::ToServer, 77 + rec.len() as u32 + 19, &record(20, &[1]));
        let ev = events(&mut o);
        assert!(matches!(&ev[0], ObserverEvent::ServerHello(_)), "{ev:?}");
        assert_eq!(ev[1], ObserverEvent::HandshakeDone(Direction::ToServer));
    }

    #[test]
    fn random_input_never_panics_and_stays_bounded() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let templates = [client_hello_record("x.example"), tls12_server_flight(b"cert"), chrome_client_hello()];
        for round in 0..3000 {
            let mut o = HandshakeObserver::new(ObserverLimits { max_buffer: 4096, ..ObserverLimits::default() });
            let mut data = templates[round % templates.len()].clone();
            if round % templates.len() == 2 {
                data = record(22, &handshake(1, &data));
            }
            for _ in 0..(next() % 8) {
                let i = (next() as usize) % data.len();
                data[i] = next() as u8;
            }
            if next() % 4 == 0 {
                let cut = (next() as usize) % data.len();
                data.truncate(cut);
            }
            let dir = if next() % 2 == 0 { Direction::ToServer } else { Direction::ToClient };
            let size = 1 + (next() as usize) % 64;
            feed(&mut o, dir, next() as u32, &data, size);
            assert!(o.buffered() <= 2 * 4096 + MAX_RECORD);
            let _ = events(&mut o);
        }
    }
}
