//! The TLS relay of a decrypted session: rustls facing the client (as the server, with a forged or the
//! imported certificate) and rustls facing the server (as the client), with the plaintext moved between
//! them. Sans-IO: the caller moves the TLS bytes of both connections in and out; nothing here touches
//! a socket or a clock.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use tlsgate_config::hex::hex;

use crate::keys::Accepts;
use crate::verify::{ChainJudge, ServerTrust, UpstreamVerifier};
use tlsgate_core::outcome::{Side as Peer, TlsClose};

use rustls::client::danger::ServerCertVerified;
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::{Accepted, Acceptor, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, ClientConnection, KeyLog, ServerConfig, ServerConnection,
    SignatureScheme,
};

/// Plaintext buffered per direction before the relay stops reading from the sending side.
pub const BACKLOG_LIMIT: usize = 256 * 1024;

/// TLS bytes a side may have queued unprocessed (while its backlog is full) before
/// [`Relay::from_client`] / [`Relay::from_server`] refuse more: the caller ignored [`Relay::backlog`].
pub const PENDING_TLS_LIMIT: usize = 1024 * 1024;

/// TLS 1.3 and 1.2, rustls's order of preference.
static BOTH_VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Name verified against (and not sent as SNI) when the client sent no SNI.
const NO_SNI_PLACEHOLDER: &str = "no-sni.invalid";

/// What the client is shown.
#[derive(Debug, Clone)]
pub enum ClientFacing {
    /// Decrypt - Resign: present a forged copy of the server's certificate. The relay asks for it once
    /// the upstream handshake has shown the server's chain (see [`RelayEvent::NeedCertificate`] and
    /// [`Relay::provide_certificate`]).
    Resign,
    /// Decrypt - Known Key: present the imported certificate and key; applies only while the server
    /// presents exactly that certificate (leaf DER equal), else the session fails with
    /// [`FailReason::CertificateChanged`].
    KnownKey(Arc<CertifiedKey>),
}

/// How one relayed session is set up.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Trust for the server's chain (shared by the relays of one trust store). Its result is
    /// reported, not enforced: the relay completes the upstream handshake with an untrusted chain too
    /// and reports `trusted: false`, so that Resign can sign with the untrusted CA.
    pub trust: Arc<ServerTrust>,
    /// What the client is shown.
    pub client_facing: ClientFacing,
    /// Collect NSS key log lines for both sessions (as [`RelayEvent::KeyLog`]).
    pub keylog: bool,
}

/// Something the caller learns from the relay, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// The client's ClientHello was read: SNI and ALPN offered (the upstream handshake starts with the
    /// same SNI and ALPN list).
    ClientHello {
        /// The SNI, if the client sent one.
        sni: Option<String>,
        /// The ALPN protocols offered, in the client's order.
        alpn: Vec<Vec<u8>>,
    },
    /// The upstream handshake reached the server's certificate (for TLS 1.3 too: seen by the relay's
    /// own client).
    UpstreamCertificate {
        /// The server's chain, leaf first, DER.
        chain: Vec<Vec<u8>>,
        /// The chain verified against the relay's trust store for the SNI.
        trusted: bool,
    },
    /// Resign only: the certificate to show the client is wanted; answer with
    /// [`Relay::provide_certificate`].
    NeedCertificate {
        /// The server's chain, leaf first, DER.
        chain: Vec<Vec<u8>>,
        /// The chain verified against the relay's trust store for the SNI.
        trusted: bool,
        /// The key types the client accepts.
        accepts: Accepts,
    },
    /// Both handshakes are done.
    Established {
        /// The TLS version with the server.
        upstream_version: rustls::ProtocolVersion,
        /// The cipher suite with the server.
        upstream_cipher: rustls::CipherSuite,
        /// The TLS version with the client.
        client_version: rustls::ProtocolVersion,
        /// The ALPN protocol both sides use.
        alpn: Option<Vec<u8>>,
    },
    /// Plaintext that crossed the relay (for export as a decrypted stream).
    Plaintext {
        /// Sent by the client (else by the server).
        from_client: bool,
        /// How many bytes.
        len: usize,
        /// The bytes; empty when the relay was told not to copy them
        /// ([`Relay::with_plaintext_copies`]).
        data: Vec<u8>,
    },
    /// One NSS key log line (`CLIENT_RANDOM ...`, `CLIENT_HANDSHAKE_TRAFFIC_SECRET ...`, ...) of either
    /// session, without the newline.
    KeyLog(String),
    /// The session ended.
    Closed {
        /// How: both closed cleanly, closed by the relay, an alert.
        how: TlsClose,
    },
    /// The session cannot be decrypted; the caller applies the policy's undecryptable action.
    Failed {
        /// Which undecryptable case.
        reason: FailReason,
        /// What happened, for the log.
        detail: String,
    },
}

pub use tlsgate_core::outcome::FailReason;

/// Errors returned by [`Relay::from_client`] and [`Relay::from_server`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    /// These bytes made the session fail (also reported as [`RelayEvent::Failed`]).
    #[error("the session cannot be decrypted ({reason:?}): {detail}")]
    Failed {
        /// Which undecryptable case.
        reason: FailReason,
        /// What happened.
        detail: String,
    },
    /// These bytes ended the established session with a fatal alert (also reported as
    /// [`RelayEvent::Closed`]).
    #[error("the session ended: {reason}")]
    PeerAlert {
        /// Which peer sent which alert.
        reason: String,
    },
    /// The session has already failed or closed; the bytes were discarded.
    #[error("the session has already ended; bytes discarded")]
    Ended,
    /// The caller kept feeding a side whose plaintext backlog is full; the bytes were refused.
    #[error("the {side} sent more than {limit} bytes while its backlog was full; stop reading from it")]
    PendingOverflow {
        /// "client" or "server".
        side: &'static str,
        /// [`PENDING_TLS_LIMIT`].
        limit: usize,
    },
}

/// One decrypted session: the client's TLS connection and the server's, and the plaintext between.
pub struct Relay {
    provider: Arc<CryptoProvider>,
    /// Versions offered to the server.
    upstream_versions: &'static [&'static rustls::SupportedProtocolVersion],
    trust: Arc<ServerTrust>,
    client_facing: ClientFacing,
    keylog: Option<Arc<NssKeyLog>>,
    client: ClientSide,
    upstream: Option<ClientConnection>,
    upstream_seen: Arc<Mutex<UpstreamSeen>>,
    /// The certificate to show the client, once known.
    shown: Option<Arc<CertifiedKey>>,
    /// The key types the client's ClientHello lets a server present.
    client_accepts: Accepts,
    /// TLS bytes received and not yet processed, per side (a ring: rustls
    /// takes them from the front a record or so at a time, nothing shifts).
    client_tls: VecDeque<u8>,
    server_tls: VecDeque<u8>,
    /// TLS bytes for the client written outside a connection (an alert from the Acceptor).
    client_out: Vec<u8>,
    /// Plaintext read from one side and not yet accepted by the other.
    to_server_plain: VecDeque<u8>,
    to_client_plain: VecDeque<u8>,
    events: VecDeque<RelayEvent>,
    certificate_reported: bool,
    established_reported: bool,
    client_sent_close: bool,
    server_sent_close: bool,
    close_forwarded_to_server: bool,
    close_forwarded_to_client: bool,
    ended: bool,
    failed_by_client: bool,
    /// Copy the plaintext into the events (only for export).
    plaintext_copies: bool,
    /// Protected records received from the client, and from the server.
    records: (ProtectedRecords, ProtectedRecords),
}

/// Walks the record headers of a TLS byte stream fed in pieces cut anywhere.
#[derive(Debug, Clone, Default)]
pub(crate) struct RecordHeaders {
    /// Header bytes of the record being crossed, and how much of its body is left.
    header: Vec<u8>,
    body_left: usize,
}

impl RecordHeaders {
    /// Calls `on_header` with (content type, body length) for each record
    /// header completed in `bytes`.
    pub(crate) fn feed(&mut self, mut bytes: &[u8], mut on_header: impl FnMut(u8, usize)) {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < 5 {
                return;
            }
            self.body_left = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
            on_header(self.header[0], self.body_left);
            self.header.clear();
        }
    }
}

/// Counts the protected records of one direction's TLS byte stream as it
/// arrives (before rustls opens them): every record after the side's
/// ChangeCipherSpec, and every application_data record (TLS 1.3 sends all its
/// protected records as such), handshake and alerts included.
#[derive(Debug, Clone, Default)]
struct ProtectedRecords {
    headers: RecordHeaders,
    after_ccs: bool,
    count: u64,
}

impl ProtectedRecords {
    fn feed(&mut self, bytes: &[u8]) {
        let (after_ccs, count) = (&mut self.after_ccs, &mut self.count);
        self.headers.feed(bytes, |kind, _| match kind {
            20 => *after_ccs = true,
            23 => *count += 1,
            21 | 22 if *after_ccs => *count += 1,
            _ => {}
        });
    }
}

impl Relay {
    /// A relay waiting for the client's ClientHello.
    pub fn new(cfg: RelayConfig) -> Relay {
        Relay {
            provider: cfg.trust.provider().clone(),
            upstream_versions: BOTH_VERSIONS,
            trust: cfg.trust,
            client_facing: cfg.client_facing,
            keylog: cfg.keylog.then(|| Arc::new(NssKeyLog::default())),
            client: ClientSide::Hello(Box::default()),
            upstream: None,
            upstream_seen: Arc::new(Mutex::new(UpstreamSeen::default())),
            shown: None,
            client_accepts: Accepts::ANY,
            client_tls: VecDeque::new(),
            server_tls: VecDeque::new(),
            client_out: Vec::new(),
            to_server_plain: VecDeque::new(),
            to_client_plain: VecDeque::new(),
            events: VecDeque::new(),
            certificate_reported: false,
            established_reported: false,
            client_sent_close: false,
            server_sent_close: false,
            close_forwarded_to_server: false,
            close_forwarded_to_client: false,
            ended: false,
            failed_by_client: false,
            plaintext_copies: true,
            records: Default::default(),
        }
    }

    /// Whether [`RelayEvent::Plaintext`] carries a copy of the bytes (the
    /// default) or only their count: a relay whose plaintext nobody exports
    /// copies nothing more than moving it from one side to the other takes.
    pub fn with_plaintext_copies(mut self, copies: bool) -> Relay {
        self.plaintext_copies = copies;
        self
    }

    /// Offers the server only the versions the client offered (of TLS 1.2
    /// and 1.3; neither: both), so that the server sees the client's own limits.
    pub fn with_client_versions(mut self, tls12: bool, tls13: bool) -> Relay {
        static TLS12: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];
        self.upstream_versions = match (tls12, tls13) {
            (true, false) => TLS12,
            (false, true) => TLS13,
            _ => BOTH_VERSIONS,
        };
        self
    }

    /// TLS bytes from the client, starting with its ClientHello, which the relay holds until the
    /// upstream handshake has shown the server's certificate. The bytes are processed while the
    /// client-to-server backlog is under [`BACKLOG_LIMIT`], else queued (see [`Relay::backlog`]).
    pub fn from_client(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        self.take_input(true, bytes)?;
        self.pump()
    }

    /// TLS bytes from the server. Processed while the server-to-client backlog is under
    /// [`BACKLOG_LIMIT`], else queued (see [`Relay::backlog`]).
    pub fn from_server(&mut self, bytes: &[u8]) -> Result<(), RelayError> {
        self.take_input(false, bytes)?;
        self.pump()
    }

    /// Protected records received (client to server, server to client): the
    /// encrypted handshake records, data, alerts and post-handshake messages.
    pub fn protected_records(&self) -> (u64, u64) {
        (self.records.0.count, self.records.1.count)
    }

    /// TLS bytes to send to the client, written to `out` as far as it takes
    /// them (a TCP endpoint's send buffer: no copy in between); what it does
    /// not take waits in the connection (see [`Relay::tls_waiting`]). Returns
    /// how many were written.
    pub fn to_client(&mut self, out: &mut impl Write) -> usize {
        let mut total = 0;
        if !self.client_out.is_empty() {
            let n = out.write(&self.client_out).unwrap_or(0);
            self.client_out.drain(..n);
            total += n;
            if !self.client_out.is_empty() {
                return total;
            }
        }
        loop {
            // Each flush frees room in the connection's buffers, which more backlog may take.
            let _ = self.pump();
            let wrote = match &mut self.client {
                ClientSide::Tls(conn) => flush_tls(conn, out),
                _ => 0,
            };
            if wrote == 0 {
                break;
            }
            total += wrote;
        }
        total
    }

    /// TLS bytes to send to the server, written to `out` as far as it takes
    /// them; returns how many.
    pub fn to_server(&mut self, out: &mut impl Write) -> usize {
        let mut total = 0;
        loop {
            let _ = self.pump();
            let wrote = self.upstream.as_mut().map_or(0, |conn| flush_tls(conn, out));
            if wrote == 0 {
                break;
            }
            total += wrote;
        }
        total
    }

    /// Whether TLS bytes wait to be sent (to the client, to the server): made
    /// and not yet taken by [`Relay::to_client`] / [`Relay::to_server`]'s writer.
    pub fn tls_waiting(&self) -> (bool, bool) {
        let client = !self.client_out.is_empty() || matches!(&self.client, ClientSide::Tls(c) if c.wants_write());
        let server = self.upstream.as_ref().is_some_and(|c| c.wants_write());
        (client, server)
    }

    /// For Resign: the certificate to show the client (the Forger makes it), after
    /// [`RelayEvent::NeedCertificate`]. Ignored otherwise.
    pub fn provide_certificate(&mut self, key: Arc<CertifiedKey>) {
        if matches!(self.client_facing, ClientFacing::Resign) && self.certificate_reported && self.shown.is_none() {
            self.shown = Some(key);
            let _ = self.pump();
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.drain_keylog();
        self.events.pop_front()
    }

    /// Plaintext buffered in each direction and not yet accepted by the other side:
    /// (client to server, server to client). At [`BACKLOG_LIMIT`] the relay stops processing that
    /// side's TLS bytes; the caller should then stop reading from it (its TCP window does the rest).
    pub fn backlog(&self) -> (usize, usize) {
        (self.to_server_plain.len(), self.to_client_plain.len())
    }

    /// Lets go of what a finished session no longer needs: both TLS
    /// connections and every buffer. It stays ended: what comes after is
    /// not read.
    pub fn release(&mut self) {
        self.client = ClientSide::Gone;
        self.upstream = None;
        self.ended = true;
        self.client_tls = VecDeque::new();
        self.server_tls = VecDeque::new();
        self.client_out = Vec::new();
        self.to_server_plain = VecDeque::new();
        self.to_client_plain = VecDeque::new();
        self.events = VecDeque::new();
    }

    /// Bytes of buffer room the relay's own queues hold (not the TLS
    /// connections' own), and whether it still holds a TLS connection.
    pub fn held(&self) -> (usize, bool) {
        let room = self.client_tls.capacity()
            + self.server_tls.capacity()
            + self.client_out.capacity()
            + self.to_server_plain.capacity()
            + self.to_client_plain.capacity();
        (room, self.upstream.is_some() || !matches!(self.client, ClientSide::Gone))
    }

    /// Close both sides cleanly (close_notify), as far as they are connected. Plaintext still in the
    /// backlog (see [`Relay::backlog`]) is dropped; TLS already queued is still sent by
    /// [`Relay::to_client`] and [`Relay::to_server`].
    pub fn close(&mut self) {
        let _ = self.pump();
        self.close_both();
        if !self.ended {
            self.ended = true;
            self.events.push_back(RelayEvent::Closed { how: TlsClose::ByRelay });
        }
    }
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let client = match &self.client {
            ClientSide::Hello(_) => "reading the ClientHello",
            ClientSide::Held(_) => "ClientHello held",
            ClientSide::Tls(conn) if conn.is_handshaking() => "handshaking",
            ClientSide::Tls(_) => "connected",
            ClientSide::Gone => "gone",
        };
        f.debug_struct("Relay")
            .field("client", &client)
            .field("upstream_handshaking", &self.upstream.as_ref().map(|c| c.is_handshaking()))
            .field("backlog", &self.backlog())
            .field("pending_tls", &(self.client_tls.len(), self.server_tls.len()))
            .field("events", &self.events.len())
            .field("ended", &self.ended)
            .finish()
    }
}

/// The client-facing side, as far as it got.
enum ClientSide {
    /// Reading the ClientHello.
    Hello(Box<Acceptor>),
    /// ClientHello read, held until the certificate to show is known.
    Held(Box<Accepted>),
    /// Connected.
    Tls(Box<ServerConnection>),
    /// Failed before connecting.
    Gone,
}

/// What the relay's own client saw of the server, written by the verifier and the client-certificate
/// resolver (called from inside rustls).
#[derive(Debug, Default)]
struct UpstreamSeen {
    chain: Option<Vec<Vec<u8>>>,
    trusted: bool,
    certificate_changed: bool,
    client_auth_requested: bool,
}

fn lock(seen: &Mutex<UpstreamSeen>) -> MutexGuard<'_, UpstreamSeen> {
    // A poisoned lock only means a panic elsewhere while holding it; the data is plain flags.
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Relay {
    /// A side's TLS bytes: with none pending before them, straight into its
    /// connection (no copy through the pending ring); what it does not take
    /// yet is queued.
    fn take_input(&mut self, from_client: bool, bytes: &[u8]) -> Result<(), RelayError> {
        if self.ended {
            return Err(RelayError::Ended);
        }
        if from_client {
            self.records.0.feed(bytes);
        } else {
            self.records.1.feed(bytes);
        }
        let mut rest = bytes;
        let none_pending = if from_client { self.client_tls.is_empty() } else { self.server_tls.is_empty() };
        if none_pending {
            self.feed_tls(from_client, Some(&mut rest))?;
        }
        let (pending, side) =
            if from_client { (&mut self.client_tls, "client") } else { (&mut self.server_tls, "server") };
        if pending.len() + rest.len() > PENDING_TLS_LIMIT {
            return Err(RelayError::PendingOverflow { side, limit: PENDING_TLS_LIMIT });
        }
        pending.extend(rest);
        Ok(())
    }

    /// Moves everything that can move: TLS bytes into the connections, plaintext across, handshake
    /// steps, closes. Stops at the first failure (already reported as an event).
    fn pump(&mut self) -> Result<(), RelayError> {
        loop {
            if self.ended {
                return Ok(());
            }
            let mut progress = self.feed_client()?;
            progress |= self.feed_server()?;
            progress |= self.advance_handshake()?;
            progress |= self.move_plaintext();
            self.check_established();
            self.forward_closes();
            if !progress {
                return Ok(());
            }
        }
    }

    /// Processes the client's queued TLS bytes. Returns whether anything moved.
    fn feed_client(&mut self) -> Result<bool, RelayError> {
        match &mut self.client {
            ClientSide::Hello(acceptor) => {
                let mut progress = false;
                while !self.client_tls.is_empty() {
                    // Reading from the ring takes the bytes out of it.
                    let n = match acceptor.read_tls(&mut self.client_tls) {
                        Ok(n) => n,
                        Err(e) => {
                            return Err(self.fail_by_client(FailReason::ProtocolError, format!("client hello: {e}")))
                        }
                    };
                    if n == 0 {
                        break;
                    }
                    progress = true;
                    match acceptor.accept() {
                        Ok(None) => {}
                        Ok(Some(accepted)) => {
                            self.on_client_hello(accepted)?;
                            return Ok(true);
                        }
                        Err((e, mut alert)) => {
                            let _ = alert.write_all(&mut self.client_out);
                            self.client = ClientSide::Gone;
                            return Err(self.fail_by_client(FailReason::ProtocolError, format!("client hello: {e}")));
                        }
                    }
                }
                Ok(progress)
            }
            ClientSide::Tls(_) => self.feed_tls(true, None),
            ClientSide::Held(_) | ClientSide::Gone => Ok(false),
        }
    }

    /// Processes the server's queued TLS bytes. Returns whether anything moved.
    fn feed_server(&mut self) -> Result<bool, RelayError> {
        self.feed_tls(false, None)
    }

    /// Feeds a side's TLS bytes into its connection once it has one (the
    /// client's: after its ClientHello was answered): `direct` bytes as far
    /// as it takes them, else the pending ones. Returns whether anything moved.
    fn feed_tls(&mut self, from_client: bool, direct: Option<&mut &[u8]>) -> Result<bool, RelayError> {
        let copies = self.plaintext_copies;
        let result = if from_client {
            let ClientSide::Tls(conn) = &mut self.client else { return Ok(false) };
            let side = Side {
                tls: match direct {
                    Some(d) => d,
                    None => &mut self.client_tls,
                },
                plain: &mut self.to_server_plain,
                from_client: true,
                closed: &mut self.client_sent_close,
                copies,
            };
            pump(conn, side, &mut self.events, || false)
        } else {
            let Some(conn) = &mut self.upstream else { return Ok(false) };
            // Borrowed, not cloned: this runs for every read from the server.
            let seen = &self.upstream_seen;
            let side = Side {
                tls: match direct {
                    Some(d) => d,
                    None => &mut self.server_tls,
                },
                plain: &mut self.to_client_plain,
                from_client: false,
                closed: &mut self.server_sent_close,
                copies,
            };
            // A CertificateRequest stops the feeding: it is reported before the
            // client side goes any further.
            pump(conn, side, &mut self.events, || lock(seen).client_auth_requested)
        };
        match (result, from_client) {
            (Ok(progress), _) => Ok(progress),
            (Err(PumpError::Read(e)), true) => {
                Err(self.fail_by_client(FailReason::ProtocolError, format!("from the client: {e}")))
            }
            (Err(PumpError::Read(e)), false) => {
                Err(self.fail(FailReason::ProtocolError, format!("from the server: {e}")))
            }
            (Err(PumpError::Tls(e)), true) => Err(self.fail_client_tls(e)),
            (Err(PumpError::Tls(e)), false) => Err(self.fail_upstream_tls(e)),
        }
    }

    /// The ClientHello is in: report it and start the upstream handshake with its SNI and ALPN.
    fn on_client_hello(&mut self, accepted: Accepted) -> Result<(), RelayError> {
        let hello = accepted.client_hello();
        let sni = hello.server_name().map(str::to_owned);
        let alpn: Vec<Vec<u8>> = hello.alpn().map(|list| list.map(<[u8]>::to_vec).collect()).unwrap_or_default();
        self.client_accepts = Accepts::of_client_hello(hello.signature_schemes(), hello.cipher_suites());
        self.client = ClientSide::Held(Box::new(accepted));
        self.events.push_back(RelayEvent::ClientHello { sni: sni.clone(), alpn: alpn.clone() });

        let expected_leaf = match &self.client_facing {
            ClientFacing::KnownKey(key) => Some(key.cert.first().map(|c| c.to_vec()).unwrap_or_default()),
            ClientFacing::Resign => None,
        };
        let judge = RecordingVerifier { trust: self.trust.clone(), expected_leaf, seen: self.upstream_seen.clone() };
        let verifier = UpstreamVerifier::new(judge, self.provider.clone());
        let builder = match ClientConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(self.upstream_versions)
        {
            Ok(b) => b,
            Err(e) => return Err(self.fail(FailReason::HandshakeFailure, format!("upstream config: {e}"))),
        };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(ClientAuthProbe { seen: self.upstream_seen.clone() }));
        config.alpn_protocols = alpn;
        config.resumption = Resumption::disabled();
        if let Some(keylog) = &self.keylog {
            config.key_log = keylog.clone();
        }
        let name = match sni.as_deref().map(|s| ServerName::try_from(s.to_owned())) {
            Some(Ok(name)) => name,
            _ => {
                config.enable_sni = false;
                ServerName::try_from(NO_SNI_PLACEHOLDER).unwrap_or(ServerName::IpAddress(
                    rustls::pki_types::IpAddr::V4(rustls::pki_types::Ipv4Addr::from([0, 0, 0, 0])),
                ))
            }
        };
        match ClientConnection::new(Arc::new(config), name) {
            Ok(conn) => {
                self.upstream = Some(conn);
                Ok(())
            }
            Err(e) => Err(self.fail(FailReason::HandshakeFailure, format!("upstream connection: {e}"))),
        }
    }

    /// Reports the server's certificate once the verifier has seen it, asks for or picks the
    /// certificate to show, and connects the client side when it is known. Returns whether anything
    /// moved.
    fn advance_handshake(&mut self) -> Result<bool, RelayError> {
        // Runs at every turn of the pump: the chain is copied out only until it is reported.
        let (chain, trusted, client_auth) = {
            let seen = lock(&self.upstream_seen);
            let chain = if self.certificate_reported { None } else { seen.chain.clone() };
            (chain, seen.trusted, seen.client_auth_requested)
        };
        if client_auth {
            return Err(self.fail(FailReason::ClientAuth, "the server asked for a client certificate".into()));
        }
        let mut progress = false;
        if !self.certificate_reported {
            let Some(chain) = chain else {
                return Ok(false);
            };
            self.certificate_reported = true;
            progress = true;
            self.events.push_back(RelayEvent::UpstreamCertificate { chain: chain.clone(), trusted });
            match &self.client_facing {
                ClientFacing::Resign => {
                    self.events.push_back(RelayEvent::NeedCertificate { chain, trusted, accepts: self.client_accepts })
                }
                ClientFacing::KnownKey(key) => self.shown = Some(key.clone()),
            }
        }
        let Some(shown) = self.shown.clone() else {
            return Ok(progress);
        };
        if !matches!(self.client, ClientSide::Held(_)) {
            return Ok(progress);
        }
        let ClientSide::Held(accepted) = std::mem::replace(&mut self.client, ClientSide::Gone) else {
            return Ok(progress);
        };
        let alpn = self.upstream.as_ref().and_then(|c| c.alpn_protocol()).map(<[u8]>::to_vec);
        let builder = match ServerConfig::builder_with_provider(self.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        {
            Ok(b) => b,
            Err(e) => return Err(self.fail(FailReason::HandshakeFailure, format!("client-facing config: {e}"))),
        };
        let mut config = builder.with_no_client_auth().with_cert_resolver(Arc::new(ShownCertificate(shown)));
        config.alpn_protocols = alpn.into_iter().collect();
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        if let Some(keylog) = &self.keylog {
            config.key_log = keylog.clone();
        }
        match accepted.into_connection(Arc::new(config)) {
            Ok(conn) => {
                self.client = ClientSide::Tls(Box::new(conn));
                Ok(true)
            }
            Err((e, mut alert)) => {
                let _ = alert.write_all(&mut self.client_out);
                let reason = match e {
                    rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => {
                        FailReason::HandshakeFailure
                    }
                    _ => FailReason::ProtocolError,
                };
                Err(self.fail_by_client(reason, format!("client handshake: {e}")))
            }
        }
    }

    /// Moves backlog plaintext into the connection that sends it on. Returns whether anything moved.
    fn move_plaintext(&mut self) -> bool {
        let mut progress = false;
        if let Some(conn) = &mut self.upstream {
            progress |= write_plaintext(conn.writer(), &mut self.to_server_plain);
            // Room in the backlog: read what the connection already decrypted.
            let eof = read_plaintext(
                conn.reader(),
                &mut self.to_client_plain,
                false,
                self.plaintext_copies,
                &mut self.events,
            );
            self.server_sent_close |= eof;
        }
        if let ClientSide::Tls(conn) = &mut self.client {
            progress |= write_plaintext(conn.writer(), &mut self.to_client_plain);
            let eof =
                read_plaintext(conn.reader(), &mut self.to_server_plain, true, self.plaintext_copies, &mut self.events);
            self.client_sent_close |= eof;
        }
        progress
    }

    fn check_established(&mut self) {
        if self.established_reported {
            return;
        }
        let (Some(up), ClientSide::Tls(down)) = (&self.upstream, &self.client) else {
            return;
        };
        if up.is_handshaking() || down.is_handshaking() {
            return;
        }
        let (Some(upstream_version), Some(suite), Some(client_version)) =
            (up.protocol_version(), up.negotiated_cipher_suite(), down.protocol_version())
        else {
            return;
        };
        self.established_reported = true;
        self.events.push_back(RelayEvent::Established {
            upstream_version,
            upstream_cipher: suite.suite(),
            client_version,
            alpn: down.alpn_protocol().map(<[u8]>::to_vec),
        });
    }

    /// Passes a close_notify on once the backlog behind it has been handed over; reports the end when
    /// both peers have closed.
    fn forward_closes(&mut self) {
        if self.client_sent_close && !self.close_forwarded_to_server && self.to_server_plain.is_empty() {
            if let Some(up) = &mut self.upstream {
                if !up.is_handshaking() {
                    up.send_close_notify();
                    self.close_forwarded_to_server = true;
                }
            }
        }
        if self.server_sent_close && !self.close_forwarded_to_client && self.to_client_plain.is_empty() {
            if let ClientSide::Tls(down) = &mut self.client {
                if !down.is_handshaking() {
                    down.send_close_notify();
                    self.close_forwarded_to_client = true;
                }
            }
        }
        if self.close_forwarded_to_server && self.close_forwarded_to_client && !self.ended {
            self.ended = true;
            self.events.push_back(RelayEvent::Closed { how: TlsClose::Clean });
        }
    }

    fn close_both(&mut self) {
        if let Some(up) = &mut self.upstream {
            if !self.close_forwarded_to_server {
                up.send_close_notify();
                self.close_forwarded_to_server = true;
            }
        }
        if let ClientSide::Tls(down) = &mut self.client {
            if !self.close_forwarded_to_client {
                down.send_close_notify();
                self.close_forwarded_to_client = true;
            }
        }
    }

    /// An error processing the client's bytes.
    fn fail_client_tls(&mut self, e: rustls::Error) -> RelayError {
        let reason = match &e {
            rustls::Error::AlertReceived(
                AlertDescription::BadCertificate | AlertDescription::UnknownCA | AlertDescription::CertificateUnknown,
            ) => FailReason::ClientRejectedCertificate,
            rustls::Error::AlertReceived(AlertDescription::EncryptedClientHelloRequired) => FailReason::EchRejected,
            _ => classify(&e),
        };
        if self.established_reported {
            if let rustls::Error::AlertReceived(alert) = &e {
                return self.end_by_alert(Peer::Client, format!("{alert:?}"));
            }
        }
        self.fail_by_client(reason, format!("client side: {e}"))
    }

    /// A failure the client caused (its bytes, its handshake): the server is not to blame.
    fn fail_by_client(&mut self, reason: FailReason, detail: String) -> RelayError {
        if !self.ended {
            self.failed_by_client = true;
        }
        self.fail(reason, detail)
    }

    /// Whether the session failed because of what the client did (garbage,
    /// an incompatible or rejected handshake), not the server.
    pub fn failed_by_client(&self) -> bool {
        self.failed_by_client
    }

    /// An error processing the server's bytes.
    fn fail_upstream_tls(&mut self, e: rustls::Error) -> RelayError {
        let seen = lock(&self.upstream_seen);
        let (changed, client_auth) = (seen.certificate_changed, seen.client_auth_requested);
        let shown = (seen.chain.clone(), seen.trusted);
        drop(seen);
        if changed {
            // What the server presents now is worth knowing: the server identity cache learns it.
            if let (Some(chain), false) = (shown.0, self.certificate_reported) {
                self.certificate_reported = true;
                self.events.push_back(RelayEvent::UpstreamCertificate { chain, trusted: shown.1 });
            }
            return self.fail(
                FailReason::CertificateChanged,
                "the server presented another certificate than the imported one".into(),
            );
        }
        if client_auth {
            return self.fail(FailReason::ClientAuth, format!("the server asked for a client certificate ({e})"));
        }
        if self.established_reported {
            if let rustls::Error::AlertReceived(alert) = &e {
                return self.end_by_alert(Peer::Server, format!("{alert:?}"));
            }
        }
        self.fail(classify(&e), format!("server side: {e}"))
    }

    /// An established session ended by a peer's alert: closed, not failed.
    fn end_by_alert(&mut self, from: Peer, alert: String) -> RelayError {
        let reason = format!("the {} sent alert {alert}", from.name());
        if !self.ended {
            self.ended = true;
            self.close_both();
            self.events.push_back(RelayEvent::Closed { how: TlsClose::Alert(from, alert) });
        }
        self.client_tls.clear();
        self.server_tls.clear();
        RelayError::PeerAlert { reason }
    }

    /// Reports the failure, closes the other side cleanly, and stops processing input.
    fn fail(&mut self, reason: FailReason, detail: String) -> RelayError {
        if !self.ended {
            self.ended = true;
            self.close_both();
            self.events.push_back(RelayEvent::Failed { reason, detail: detail.clone() });
        }
        self.client_tls.clear();
        self.server_tls.clear();
        RelayError::Failed { reason, detail }
    }

    fn drain_keylog(&mut self) {
        if let Some(keylog) = &self.keylog {
            let mut lines = keylog.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.events.extend(lines.drain(..).map(RelayEvent::KeyLog));
        }
    }
}

/// Writes the TLS bytes a connection has queued into `out`, as far as it
/// takes them. Returns how many.
fn flush_tls<D>(conn: &mut rustls::ConnectionCommon<D>, out: &mut impl Write) -> usize {
    let mut total = 0;
    while conn.wants_write() {
        match conn.write_tls(out) {
            Ok(n) if n > 0 => total += n,
            _ => break,
        }
    }
    total
}

/// Which undecryptable case a rustls error is.
fn classify(e: &rustls::Error) -> FailReason {
    match e {
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => FailReason::HandshakeFailure,
        rustls::Error::AlertReceived(
            AlertDescription::HandshakeFailure
            | AlertDescription::ProtocolVersion
            | AlertDescription::InsufficientSecurity
            | AlertDescription::NoApplicationProtocol,
        ) => FailReason::HandshakeFailure,
        rustls::Error::DecryptError
        | rustls::Error::AlertReceived(AlertDescription::DecryptError | AlertDescription::BadRecordMac) => {
            FailReason::DecryptionError
        }
        _ => FailReason::ProtocolError,
    }
}

/// Reads decrypted plaintext into `backlog` while it is under the limit, reporting it. Returns whether
/// the peer has sent close_notify.
/// One direction's buffers, as [`pump`] feeds them.
struct Side<'a> {
    /// TLS bytes received from the peer, not yet given to rustls.
    tls: &'a mut dyn TlsInput,
    /// Plaintext decrypted and not yet passed on.
    plain: &'a mut VecDeque<u8>,
    from_client: bool,
    /// Set when the peer closed (close_notify read).
    closed: &'a mut bool,
    /// Copy the plaintext into the events.
    copies: bool,
}

/// TLS bytes for a connection: a side's pending ring, or bytes read in place.
trait TlsInput: std::io::Read {
    fn is_empty(&self) -> bool;
}

impl TlsInput for VecDeque<u8> {
    fn is_empty(&self) -> bool {
        VecDeque::is_empty(self)
    }
}

impl TlsInput for &[u8] {
    fn is_empty(&self) -> bool {
        <[u8]>::is_empty(self)
    }
}

enum PumpError {
    Read(std::io::Error),
    Tls(rustls::Error),
}

/// Feeds a side's queued TLS bytes into its rustls connection, draining the
/// plaintext first each time (rustls refuses TLS bytes while it holds a
/// record's worth of plaintext), until the bytes are used up, the plaintext
/// backlog is full, or `stop` says so after a record. Returns whether any
/// bytes were taken.
fn pump<D>(
    conn: &mut rustls::ConnectionCommon<D>,
    side: Side<'_>,
    events: &mut VecDeque<RelayEvent>,
    mut stop: impl FnMut() -> bool,
) -> Result<bool, PumpError> {
    let mut progress = false;
    loop {
        *side.closed |= read_plaintext(conn.reader(), side.plain, side.from_client, side.copies, events);
        if side.tls.is_empty() || side.plain.len() >= BACKLOG_LIMIT {
            return Ok(progress);
        }
        // Reading from the ring takes the bytes out of it.
        let n = conn.read_tls(side.tls).map_err(PumpError::Read)?;
        if n == 0 {
            return Ok(progress);
        }
        progress = true;
        conn.process_new_packets().map_err(PumpError::Tls)?;
        if stop() {
            return Ok(true);
        }
    }
}

fn read_plaintext(
    mut reader: rustls::Reader<'_>,
    backlog: &mut VecDeque<u8>,
    from_client: bool,
    copies: bool,
    events: &mut VecDeque<RelayEvent>,
) -> bool {
    // Straight from the connection's buffer (no scratch buffer to zero and copy through).
    while backlog.len() < BACKLOG_LIMIT {
        let room = BACKLOG_LIMIT - backlog.len();
        let n = match reader.fill_buf() {
            Ok([]) => return true,
            Ok(chunk) => {
                let chunk = &chunk[..chunk.len().min(room)];
                backlog.extend(chunk);
                let data = if copies { chunk.to_vec() } else { Vec::new() };
                events.push_back(RelayEvent::Plaintext { from_client, len: chunk.len(), data });
                chunk.len()
            }
            // WouldBlock: nothing more decrypted yet; UnexpectedEof cannot happen as the relay
            // never signals EOF to rustls.
            Err(_) => return false,
        };
        reader.consume(n);
    }
    false
}

/// Hands backlog plaintext to a connection as far as its buffers take it. Returns whether any went.
fn write_plaintext(mut writer: rustls::Writer<'_>, backlog: &mut VecDeque<u8>) -> bool {
    let mut progress = false;
    while !backlog.is_empty() {
        let (head, _) = backlog.as_slices();
        match writer.write(head) {
            Ok(n) if n > 0 => {
                backlog.drain(..n);
                progress = true;
            }
            _ => break,
        }
    }
    progress
}

/// Shows the client the chosen certificate, whatever its ClientHello asked for.
#[derive(Debug)]
struct ShownCertificate(Arc<CertifiedKey>);

impl ResolvesServerCert for ShownCertificate {
    fn resolve(&self, _client_hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Records that the server asked for a client certificate, and offers none.
#[derive(Debug)]
struct ClientAuthProbe {
    seen: Arc<Mutex<UpstreamSeen>>,
}

impl ResolvesClientCert for ClientAuthProbe {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        lock(&self.seen).client_auth_requested = true;
        None
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Records the server's chain and whether it is trusted, and accepts it (the relay reports trust
/// rather than enforcing it), except, for Known Key, a leaf other than the imported one. Handshake
/// signatures are still verified: the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct RecordingVerifier {
    trust: Arc<ServerTrust>,
    expected_leaf: Option<Vec<u8>>,
    seen: Arc<Mutex<UpstreamSeen>>,
}

impl ChainJudge for RecordingVerifier {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let trusted = self.trust.trusted(end_entity, intermediates, server_name, ocsp_response, now);
        let changed = self.expected_leaf.as_ref().is_some_and(|leaf| leaf.as_slice() != end_entity.as_ref());
        let mut seen = lock(&self.seen);
        let chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.to_vec()).collect();
        seen.chain = Some(chain);
        seen.trusted = trusted;
        seen.certificate_changed = changed;
        if changed {
            return Err(rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure));
        }
        Ok(ServerCertVerified::assertion())
    }
}

/// NSS key log lines of both sessions, drained into [`RelayEvent::KeyLog`].
#[derive(Debug, Default)]
struct NssKeyLog {
    lines: Mutex<Vec<String>>,
}

impl KeyLog for NssKeyLog {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        let line = format!("{label} {} {}", hex(client_random), hex(secret));
        self.lines.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::RootCertStore;
    use std::io::Read;

    #[test]
    fn protected_records_are_counted_across_any_cut() {
        let rec = |kind: u8, len: usize| {
            let mut r = vec![kind, 3, 3, (len >> 8) as u8, len as u8];
            r.extend(std::iter::repeat_n(0xab, len));
            r
        };
        // TLS 1.2: hello in clear, CCS, Finished, two data records, an alert.
        let tls12: Vec<u8> = [rec(22, 300), rec(20, 1), rec(22, 40), rec(23, 1000), rec(23, 5), rec(21, 26)].concat();
        // TLS 1.3: ServerHello in clear, compatibility CCS, then everything as application_data.
        let tls13: Vec<u8> = [rec(22, 90), rec(20, 1), rec(23, 2000), rec(23, 53), rec(23, 300)].concat();
        for (bytes, want) in [(tls12, 4), (tls13, 3)] {
            for cut in [1, 3, 5, 7, 64, 4096] {
                let mut c = ProtectedRecords::default();
                for piece in bytes.chunks(cut) {
                    c.feed(piece);
                }
                assert_eq!(c.count, want, "cut {cut}");
            }
        }
    }
    use rustls::pki_types::PrivateKeyDer;
    use rustls::server::WebPkiClientVerifier;
    use rustls::{Connection, ProtocolVersion, SupportedProtocolVersion};
    use tlsgate_perf::handshake::{Leaf, Pki};

    const DAY: i64 = 86_400;

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn now() -> i64 {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970");
        since.as_secs() as i64
    }

    fn leaf(pki: &Pki) -> Leaf {
        pki.issue(&["a.test"], "Org", now() - DAY, now() + 365 * DAY)
    }

    fn certified(cert_der: Vec<u8>, pkcs8: Vec<u8>) -> Arc<CertifiedKey> {
        let key = provider().key_provider.load_private_key(PrivateKeyDer::Pkcs8(pkcs8.into())).expect("key loads");
        Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert_der)], key))
    }

    /// The inspection CA that signs forged certificates.
    struct InspectionCa {
        cert: rcgen::Certificate,
        key: rcgen::KeyPair,
    }

    impl InspectionCa {
        fn new() -> InspectionCa {
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            params.distinguished_name.push(rcgen::DnType::CommonName, "Inspection CA");
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            params.key_usages = vec![
                rcgen::KeyUsagePurpose::KeyCertSign,
                rcgen::KeyUsagePurpose::CrlSign,
                rcgen::KeyUsagePurpose::DigitalSignature,
            ];
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.self_signed(&key).expect("self-signed CA");
            InspectionCa { cert, key }
        }

        fn der(&self) -> Vec<u8> {
            self.cert.der().to_vec()
        }

        /// A copy of `original`'s SAN on a fresh key, signed by this CA.
        fn forge(&self, original: &[u8]) -> Arc<CertifiedKey> {
            let (_, parsed) = x509_parser::parse_x509_certificate(original).expect("server leaf parses");
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            if let Ok(Some(san)) = parsed.subject_alternative_name() {
                for name in &san.value.general_names {
                    match name {
                        x509_parser::extensions::GeneralName::DNSName(d) => {
                            params.subject_alt_names.push(rcgen::SanType::DnsName((*d).try_into().expect("ASCII name")))
                        }
                        x509_parser::extensions::GeneralName::IPAddress(&[a, b, c, d]) => params
                            .subject_alt_names
                            .push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::new(a, b, c, d).into())),
                        _ => {}
                    }
                }
            }
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = params.signed_by(&key, &self.cert, &self.key).expect("forged");
            certified(cert.der().to_vec(), key.serialize_der())
        }
    }

    fn roots(ders: &[Vec<u8>]) -> RootCertStore {
        let mut store = RootCertStore::empty();
        for der in ders {
            store.add(CertificateDer::from(der.clone())).expect("root added");
        }
        store
    }

    fn versions(v: ProtocolVersion) -> &'static [&'static SupportedProtocolVersion] {
        static TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
        static TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
        match v {
            ProtocolVersion::TLSv1_2 => TLS12,
            _ => TLS13,
        }
    }

    fn test_client(v: ProtocolVersion, trust: &[Vec<u8>], alpn: &[&[u8]], sni: &str) -> Connection {
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(v))
            .expect("versions")
            .with_root_certificates(roots(trust))
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let name = ServerName::try_from(sni.to_owned()).expect("name");
        Connection::Client(ClientConnection::new(Arc::new(config), name).expect("client"))
    }

    fn test_server(v: ProtocolVersion, leaf: &Leaf, alpn: &[&[u8]], client_auth_ca: Option<Vec<u8>>) -> Connection {
        let builder = ServerConfig::builder_with_provider(provider()).with_protocol_versions(versions(v)).expect("v");
        let builder = match client_auth_ca {
            Some(ca) => builder.with_client_cert_verifier(
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(&[ca])), provider())
                    .build()
                    .expect("client verifier"),
            ),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                vec![CertificateDer::from(leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(leaf.key_der.clone().into()),
            )
            .expect("server cert");
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Connection::Server(ServerConnection::new(Arc::new(config)).expect("server"))
    }

    /// A real rustls peer in memory: plaintext to send, plaintext received, its first error.
    struct Peer {
        conn: Connection,
        to_send: Vec<u8>,
        received: Vec<u8>,
        error: Option<rustls::Error>,
    }

    impl Peer {
        fn new(conn: Connection) -> Peer {
            Peer { conn, to_send: Vec::new(), received: Vec::new(), error: None }
        }

        fn send_tls(&mut self, out: &mut Vec<u8>) {
            if self.error.is_none() && !self.to_send.is_empty() {
                let n = self.conn.writer().write(&self.to_send).unwrap_or(0);
                self.to_send.drain(..n);
            }
            while self.conn.wants_write() {
                match self.conn.write_tls(out) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }

        fn recv_tls(&mut self, mut bytes: &[u8]) {
            while !bytes.is_empty() && self.error.is_none() {
                match self.conn.read_tls(&mut bytes) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                if let Err(e) = self.conn.process_new_packets() {
                    self.error = Some(e);
                }
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = self.conn.reader().read(&mut buf) {
                    self.received.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    /// Client, relay and server, with the loop that moves bytes until all is quiet.
    struct Session {
        client: Peer,
        server: Peer,
        relay: Relay,
        ca: InspectionCa,
        events: Vec<RelayEvent>,
        relay_errors: Vec<RelayError>,
    }

    impl Session {
        fn new(client: Connection, server: Connection, cfg: RelayConfig, ca: InspectionCa) -> Session {
            Session {
                client: Peer::new(client),
                server: Peer::new(server),
                relay: Relay::new(cfg),
                ca,
                events: Vec::new(),
                relay_errors: Vec::new(),
            }
        }

        fn run(&mut self) {
            let mut quiet_rounds = 0;
            for _ in 0..100_000 {
                let mut moved = 0;
                let mut buf = Vec::new();
                self.client.send_tls(&mut buf);
                moved += buf.len();
                if !buf.is_empty() {
                    if let Err(e) = self.relay.from_client(&buf) {
                        self.relay_errors.push(e);
                    }
                }
                buf.clear();
                self.server.send_tls(&mut buf);
                moved += buf.len();
                if !buf.is_empty() {
                    if let Err(e) = self.relay.from_server(&buf) {
                        self.relay_errors.push(e);
                    }
                }
                buf.clear();
                moved += self.relay.to_client(&mut buf);
                self.client.recv_tls(&buf);
                buf.clear();
                moved += self.relay.to_server(&mut buf);
                self.server.recv_tls(&buf);
                while let Some(event) = self.relay.poll_event() {
                    moved += 1;
                    if let RelayEvent::NeedCertificate { chain, .. } = &event {
                        let forged = self.ca.forge(&chain[0]);
                        self.relay.provide_certificate(forged);
                    }
                    self.events.push(event);
                }
                let (a, b) = self.relay.backlog();
                assert!(a <= BACKLOG_LIMIT && b <= BACKLOG_LIMIT, "backlog over the limit: {a} {b}");
                if moved == 0 {
                    quiet_rounds += 1;
                    if quiet_rounds > 2 {
                        return;
                    }
                } else {
                    quiet_rounds = 0;
                }
            }
            panic!("the session never went quiet");
        }

        fn failed(&self) -> Option<FailReason> {
            self.events.iter().find_map(|e| match e {
                RelayEvent::Failed { reason, .. } => Some(*reason),
                _ => None,
            })
        }

        fn established(&self) -> Option<(ProtocolVersion, rustls::CipherSuite, ProtocolVersion, Option<Vec<u8>>)> {
            self.events.iter().find_map(|e| match e {
                RelayEvent::Established { upstream_version, upstream_cipher, client_version, alpn } => {
                    Some((*upstream_version, *upstream_cipher, *client_version, alpn.clone()))
                }
                _ => None,
            })
        }

        fn upstream_trusted(&self) -> Option<bool> {
            self.events.iter().find_map(|e| match e {
                RelayEvent::UpstreamCertificate { trusted, .. } => Some(*trusted),
                _ => None,
            })
        }

        fn keylog(&self) -> Vec<String> {
            self.events
                .iter()
                .filter_map(|e| match e {
                    RelayEvent::KeyLog(line) => Some(line.clone()),
                    _ => None,
                })
                .collect()
        }
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn issuer_cn(der: &[u8]) -> String {
        let (_, cert) = x509_parser::parse_x509_certificate(der).expect("parses");
        let cn = cert.issuer().iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or_default().to_owned();
        cn
    }

    /// A Resign session between a client trusting only the inspection CA and a server with a leaf of
    /// `pki`, the relay trusting `pki`.
    fn resign_session(v: ProtocolVersion, keylog: bool) -> Session {
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let client = test_client(v, &[ca.der()], &[], "a.test");
        let server = test_server(v, &leaf(&pki), &[], None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::Resign,
            keylog,
        };
        Session::new(client, server, cfg, ca)
    }

    fn check_resign_carries_data(v: ProtocolVersion) {
        let mut s = resign_session(v, false);
        let up = pattern(100_000, 1);
        let down = pattern(100_000, 7);
        s.client.to_send = up.clone();
        s.server.to_send = down.clone();
        s.run();
        assert_eq!(
            s.failed(),
            None,
            "events: {:?}",
            s.events.iter().filter(|e| !matches!(e, RelayEvent::Plaintext { .. })).collect::<Vec<_>>()
        );
        assert!(s.client.error.is_none() && s.server.error.is_none());
        assert!(s.server.received == up, "client to server: {} of {} bytes", s.server.received.len(), up.len());
        assert!(s.client.received == down, "server to client: {} of {} bytes", s.client.received.len(), down.len());
        let shown = s.client.conn.peer_certificates().expect("client saw a certificate");
        assert_eq!(issuer_cn(&shown[0]), "Inspection CA");
        let (up_v, cipher, client_v, alpn) = s.established().expect("Established");
        assert_eq!((up_v, client_v, alpn), (v, v, None));
        let server_suite = s.server.conn.negotiated_cipher_suite().expect("suite").suite();
        assert_eq!(cipher, server_suite);
        assert_eq!(s.upstream_trusted(), Some(true));
        assert!(matches!(&s.events[0], RelayEvent::ClientHello { sni: Some(n), .. } if n == "a.test"));
        let plain_up: usize = s
            .events
            .iter()
            .filter_map(|e| match e {
                RelayEvent::Plaintext { from_client: true, data, .. } => Some(data.len()),
                _ => None,
            })
            .sum();
        assert_eq!(plain_up, up.len());
    }

    #[test]
    fn resign_tls13_carries_data_both_ways() {
        check_resign_carries_data(ProtocolVersion::TLSv1_3);
    }

    #[test]
    fn resign_tls12_carries_data_both_ways() {
        check_resign_carries_data(ProtocolVersion::TLSv1_2);
    }

    fn alpn_session(server_alpn: &[&[u8]]) -> Session {
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let v = ProtocolVersion::TLSv1_3;
        let client = test_client(v, &[ca.der()], &[b"h2", b"http/1.1"], "a.test");
        let server = test_server(v, &leaf(&pki), server_alpn, None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::Resign,
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, ca);
        s.run();
        s
    }

    #[test]
    fn alpn_follows_the_server_choice() {
        let s = alpn_session(&[b"http/1.1"]);
        assert_eq!(s.client.conn.alpn_protocol(), Some(&b"http/1.1"[..]));
        assert_eq!(s.established().and_then(|e| e.3), Some(b"http/1.1".to_vec()));
        assert!(
            matches!(&s.events[0], RelayEvent::ClientHello { alpn, .. } if alpn == &[b"h2".to_vec(), b"http/1.1".to_vec()])
        );

        let s = alpn_session(&[b"h2", b"http/1.1"]);
        assert_eq!(s.client.conn.alpn_protocol(), Some(&b"h2"[..]));
        assert_eq!(s.server.conn.alpn_protocol(), Some(&b"h2"[..]));
    }

    #[test]
    fn known_key_shows_the_servers_own_certificate() {
        let pki = Pki::new("Server CA");
        let server_leaf = leaf(&pki);
        let v = ProtocolVersion::TLSv1_3;
        let client = test_client(v, &[pki.ca_cert_der()], &[], "a.test");
        let server = test_server(v, &server_leaf, &[], None);
        let key = certified(server_leaf.cert_der.clone(), server_leaf.key_der.clone());
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::KnownKey(key),
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, InspectionCa::new());
        s.client.to_send = b"GET / HTTP/1.1\r\n\r\n".to_vec();
        s.server.to_send = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        s.run();
        assert_eq!(s.failed(), None);
        assert!(!s.events.iter().any(|e| matches!(e, RelayEvent::NeedCertificate { .. })));
        let shown = s.client.conn.peer_certificates().expect("certificate");
        assert_eq!(shown[0].as_ref(), server_leaf.cert_der.as_slice());
        assert_eq!(s.server.received, b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(s.client.received, b"HTTP/1.1 200 OK\r\n\r\n");
    }

    #[test]
    fn known_key_fails_when_the_server_certificate_changed() {
        let pki = Pki::new("Server CA");
        let imported = leaf(&pki);
        let v = ProtocolVersion::TLSv1_3;
        let client = test_client(v, &[pki.ca_cert_der()], &[], "a.test");
        let server = test_server(v, &leaf(&pki), &[], None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::KnownKey(certified(imported.cert_der, imported.key_der)),
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, InspectionCa::new());
        s.run();
        assert_eq!(s.failed(), Some(FailReason::CertificateChanged));
        assert!(s.client.conn.peer_certificates().is_none(), "the client must not be answered");
    }

    #[test]
    fn untrusted_server_chain_is_reported_not_enforced() {
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let v = ProtocolVersion::TLSv1_3;
        let client = test_client(v, &[ca.der()], &[], "a.test");
        let server = test_server(v, &leaf(&pki), &[], None);
        let other = Pki::new("Some other CA");
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[other.ca_cert_der()])),
            client_facing: ClientFacing::Resign,
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, ca);
        s.client.to_send = b"ping".to_vec();
        s.run();
        assert_eq!(s.upstream_trusted(), Some(false));
        assert!(s.events.iter().any(|e| matches!(e, RelayEvent::NeedCertificate { trusted: false, .. })));
        assert_eq!(s.server.received, b"ping");

        // No roots at all: untrusted too, no error.
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let client = test_client(v, &[ca.der()], &[], "a.test");
        let server = test_server(v, &leaf(&pki), &[], None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(RootCertStore::empty()),
            client_facing: ClientFacing::Resign,
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, ca);
        s.run();
        assert_eq!(s.upstream_trusted(), Some(false));
        assert!(s.established().is_some());
    }

    #[test]
    fn server_asking_for_a_client_certificate_fails_with_client_auth() {
        for v in [ProtocolVersion::TLSv1_3, ProtocolVersion::TLSv1_2] {
            let pki = Pki::new("Server CA");
            let ca = InspectionCa::new();
            let client = test_client(v, &[ca.der()], &[], "a.test");
            let server = test_server(v, &leaf(&pki), &[], Some(pki.ca_cert_der()));
            let cfg = RelayConfig {
                trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
                client_facing: ClientFacing::Resign,
                keylog: false,
            };
            let mut s = Session::new(client, server, cfg, ca);
            s.run();
            assert_eq!(s.failed(), Some(FailReason::ClientAuth), "{v:?}");
            assert!(!s.events.iter().any(|e| matches!(e, RelayEvent::NeedCertificate { .. })), "{v:?}");
        }
    }

    #[test]
    fn client_rejecting_the_forged_certificate_is_reported() {
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let v = ProtocolVersion::TLSv1_3;
        // The client trusts the real CA only (pinning-like): the forged certificate is unknown to it.
        let client = test_client(v, &[pki.ca_cert_der()], &[], "a.test");
        let server = test_server(v, &leaf(&pki), &[], None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::Resign,
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, ca);
        s.run();
        assert!(s.client.error.is_some());
        assert_eq!(s.failed(), Some(FailReason::ClientRejectedCertificate));
    }

    #[test]
    fn keylog_covers_both_sessions() {
        let mut s = resign_session(ProtocolVersion::TLSv1_2, true);
        s.run();
        let lines = s.keylog();
        let randoms: Vec<&str> =
            lines.iter().filter(|l| l.starts_with("CLIENT_RANDOM ")).filter_map(|l| l.split(' ').nth(1)).collect();
        assert_eq!(randoms.len(), 2, "{lines:?}");
        assert_ne!(randoms[0], randoms[1]);
        assert!(lines.iter().all(|l| l.split(' ').count() == 3));

        let mut s = resign_session(ProtocolVersion::TLSv1_3, true);
        s.run();
        let lines = s.keylog();
        for label in [
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
            "SERVER_HANDSHAKE_TRAFFIC_SECRET",
            "CLIENT_TRAFFIC_SECRET_0",
            "SERVER_TRAFFIC_SECRET_0",
        ] {
            assert_eq!(lines.iter().filter(|l| l.starts_with(&format!("{label} "))).count(), 2, "{label}: {lines:?}");
        }
    }

    #[test]
    fn clean_close_from_both_peers_is_reported() {
        let mut s = resign_session(ProtocolVersion::TLSv1_3, false);
        s.client.to_send = b"bye".to_vec();
        s.run();
        s.client.conn.send_close_notify();
        s.run();
        s.server.conn.send_close_notify();
        s.run();
        assert_eq!(s.server.received, b"bye");
        assert!(s.events.iter().any(|e| matches!(e, RelayEvent::Closed { how: TlsClose::Clean })), "{:?}", s.events);
    }

    #[test]
    fn relay_close_sends_close_notify_both_ways() {
        let mut s = resign_session(ProtocolVersion::TLSv1_2, false);
        s.run();
        s.relay.close();
        s.run();
        let mut buf = [0u8; 8];
        assert!(matches!(s.client.conn.reader().read(&mut buf), Ok(0)));
        assert!(matches!(s.server.conn.reader().read(&mut buf), Ok(0)));
    }

    #[test]
    fn backlog_stays_bounded_when_the_client_does_not_read_and_resumes() {
        let mut s = resign_session(ProtocolVersion::TLSv1_3, false);
        s.run();
        // The server pushes 2 MB; at first nobody delivers the relay's output to the client.
        let data = pattern(2 * 1024 * 1024, 3);
        let mut offset = 0;
        let mut unsent_tls = Vec::new();
        let mut refused = false;
        for round in 0..10_000 {
            let client_reads = refused;
            if unsent_tls.is_empty() && offset < data.len() {
                offset += s.server.conn.writer().write(&data[offset..]).unwrap_or(0);
                while s.server.conn.wants_write() && s.server.conn.write_tls(&mut unsent_tls).unwrap_or(0) > 0 {}
            }
            match s.relay.from_server(&unsent_tls) {
                Ok(()) => unsent_tls.clear(),
                Err(RelayError::PendingOverflow { .. }) => {
                    // Refused, not consumed: offer the same bytes again later.
                    assert_eq!(s.relay.backlog().1, BACKLOG_LIMIT);
                    refused = true;
                }
                Err(e) => panic!("{e}"),
            }
            let mut out = Vec::new();
            s.relay.to_server(&mut out);
            s.server.recv_tls(&out);
            if client_reads {
                out.clear();
                s.relay.to_client(&mut out);
                s.client.recv_tls(&out);
            }
            assert!(s.relay.backlog().1 <= BACKLOG_LIMIT);
            if s.client.received.len() == data.len() {
                break;
            }
            assert!(round < 9_999, "stalled at {} of {} bytes", s.client.received.len(), data.len());
        }
        assert!(refused, "the relay kept taking bytes");
        assert!(s.client.received == data, "the stream arrived altered");
    }

    #[test]
    fn client_without_sni_is_relayed_and_the_chain_reported_untrusted() {
        let pki = Pki::new("Server CA");
        let ca = InspectionCa::new();
        let v = ProtocolVersion::TLSv1_3;
        // rustls sends no SNI for an IP address.
        let client = test_client(v, &[ca.der()], &[], "192.0.2.7");
        let server_leaf = pki.issue(&["a.test", "192.0.2.7"], "Org", now() - DAY, now() + 365 * DAY);
        let server = test_server(v, &server_leaf, &[], None);
        let cfg = RelayConfig {
            trust: ServerTrust::new(roots(&[pki.ca_cert_der()])),
            client_facing: ClientFacing::Resign,
            keylog: false,
        };
        let mut s = Session::new(client, server, cfg, ca);
        s.client.to_send = b"hello".to_vec();
        s.run();
        assert!(matches!(&s.events[0], RelayEvent::ClientHello { sni: None, .. }), "{:?}", s.events[0]);
        assert_eq!(s.upstream_trusted(), Some(false));
        assert!(s.established().is_some());
        assert_eq!(s.server.received, b"hello");
        let Connection::Server(server) = &s.server.conn else { unreachable!() };
        assert_eq!(server.server_name(), None, "the relay must not invent an SNI");
    }

    #[test]
    fn relay_is_send() {
        fn is_send<T: Send>() {}
        is_send::<Relay>();
    }

    #[test]
    fn garbage_from_the_client_fails_without_panic() {
        let mut relay = Relay::new(RelayConfig {
            trust: ServerTrust::new(RootCertStore::empty()),
            client_facing: ClientFacing::Resign,
            keylog: false,
        });
        let err = relay.from_client(&[0x16, 0x03, 0x01, 0x00, 0x05, 1, 0, 0, 1, 0xff]).expect_err("garbage");
        assert!(matches!(err, RelayError::Failed { reason: FailReason::ProtocolError, .. }));
        let events: Vec<_> = std::iter::from_fn(|| relay.poll_event()).collect();
        assert!(events.iter().any(|e| matches!(e, RelayEvent::Failed { .. })));
        assert_eq!(relay.from_client(b"more"), Err(RelayError::Ended));
        let mut out = Vec::new();
        relay.to_client(&mut out);
        relay.to_server(&mut out);

        // Not TLS at all.
        let mut relay = Relay::new(RelayConfig {
            trust: ServerTrust::new(RootCertStore::empty()),
            client_facing: ClientFacing::Resign,
            keylog: false,
        });
        assert!(relay.from_client(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n").is_err());
    }

    #[test]
    fn garbage_from_the_server_fails_without_panic() {
        for established in [false, true] {
            let mut s = resign_session(ProtocolVersion::TLSv1_3, false);
            if established {
                s.run();
            } else {
                let mut hello = Vec::new();
                s.client.send_tls(&mut hello);
                s.relay.from_client(&hello).expect("client hello");
            }
            let garbage: Vec<u8> = [0x17, 0x03, 0x03, 0x00, 0x20].into_iter().chain(pattern(32, 9)).collect();
            let err = s.relay.from_server(&garbage).expect_err("garbage");
            assert!(matches!(err, RelayError::Failed { .. }), "{err:?}");
            s.run();
            assert!(s.failed().is_some(), "established: {established}");
        }

        // Random bytes at every point of a handshake, from either side, never panic.
        for cut in [1usize, 5, 40, 200] {
            let mut s = resign_session(ProtocolVersion::TLSv1_2, false);
            let mut hello = Vec::new();
            s.client.send_tls(&mut hello);
            let mut junk = hello.clone();
            if let Some(b) = junk.get_mut(cut) {
                *b ^= 0x5a;
            }
            let _ = s.relay.from_client(&junk);
            let _ = s.relay.from_server(&pattern(300, cut as u8));
            s.run();
        }
    }
}
