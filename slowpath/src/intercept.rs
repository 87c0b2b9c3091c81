//! One decrypted flow: the two TCP endpoints that took the connection over
//! (one facing the client as the server, one facing the server as the
//! client) and the TLS [`Relay`] between them. Sans-IO: the caller passes in
//! the segments each side sent and the time, and pulls out the segments to
//! send each way; what the relay learns (the server's certificate, the
//! versions, the end) is kept for the session's event.
//!
//! Back-pressure runs end to end: the window we advertise to one side is what
//! the other side has not yet taken (plaintext backlog, TLS bytes queued, TCP
//! bytes unacknowledged), so a slow client throttles the server and the other
//! way round, and a session's memory stays bounded.

use std::sync::Arc;

use rustls::sign::CertifiedKey;
use tlsgate_dataplane::escalate::{TcpSeen, TcpSideSeen};

use crate::relay::{FailReason, Relay, RelayEvent, BACKLOG_LIMIT};
use crate::tcp::{Limits, Segment, Takeover, TcpEndpoint, TcpState, TimestampState};

/// Bytes in flight per direction between the two endpoints (TLS queued to
/// send plus TCP unacknowledged) beyond which we stop opening the other
/// side's window.
const IN_FLIGHT_LIMIT: usize = 256 * 1024;
/// Linux's TSval clock: milliseconds.
const TS_HZ: u32 = 1000;

/// What the upstream handshake and the relay showed, for the event.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The server's chain (leaf first), once the upstream handshake reached it.
    pub chain: Vec<Vec<u8>>,
    /// It verified against the trust store.
    pub trusted: Option<bool>,
    /// Both handshakes completed: (version with the server, cipher with the
    /// server, version with the client, ALPN).
    pub established: Option<(rustls::ProtocolVersion, rustls::CipherSuite, rustls::ProtocolVersion, Option<Vec<u8>>)>,
    /// The session could not be decrypted: why, in the relay's terms and in words.
    pub failed: Option<(FailReason, String)>,
    /// How the TLS session ended, if it did.
    pub closed: Option<String>,
    /// Plaintext relayed client to server.
    pub bytes_to_server: u64,
    /// Plaintext relayed server to client.
    pub bytes_to_client: u64,
}

/// Answers a Resign relay's request for the certificate to show the client:
/// given the server's chain and whether it is trusted, the certified key (or
/// `None`: the session fails).
pub type CertificateFor<'a> = dyn FnMut(&[Vec<u8>], bool) -> Option<Arc<CertifiedKey>> + 'a;

/// What [`Interception::drive`] hands the caller besides segments.
#[derive(Debug, Default)]
pub struct Output {
    /// NSS key log lines.
    pub keylog: Vec<String>,
    /// Plaintext (from the client?, bytes), when asked for.
    pub plaintext: Vec<(bool, Vec<u8>)>,
    /// The server's chain and whether it is trusted, the first time it is seen.
    pub upstream_certificate: Option<(Vec<Vec<u8>>, bool)>,
}

/// One flow taken over.
pub struct Interception {
    /// Faces the client (we are the server).
    client: TcpEndpoint,
    /// Faces the server (we are the client).
    server: TcpEndpoint,
    relay: Relay,
    /// TLS bytes from the relay not yet taken by an endpoint's send buffer.
    to_client: Vec<u8>,
    to_server: Vec<u8>,
    scratch: Vec<u8>,
    keep_plaintext: bool,
    /// What happened.
    pub outcome: Outcome,
    fin_to_server: bool,
    fin_to_client: bool,
    last_activity_ns: u64,
}

/// Why a session is over, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Both connections closed (FIN both ways, or a reset carried across).
    Closed,
    /// Nothing happened for longer than the idle limit; both ends were reset.
    Idle,
}

impl Interception {
    /// Takes over a flow from what the wire showed (`seen`), with `relay`
    /// between the two TLS sessions, at `now_ns`. The client's segment that completed its
    /// ClientHello is then given to [`Interception::on_client_segment`].
    pub fn new(seen: &TcpSeen, relay: Relay, keep_plaintext: bool, now_ns: u64) -> Interception {
        let (client_facing, server_facing) = takeovers(seen);
        let limits = Limits::default();
        Interception {
            client: TcpEndpoint::takeover(client_facing, limits.clone(), now_ns),
            server: TcpEndpoint::takeover(server_facing, limits, now_ns),
            relay,
            to_client: Vec::new(),
            to_server: Vec::new(),
            scratch: Vec::new(),
            keep_plaintext,
            outcome: Outcome::default(),
            fin_to_server: false,
            fin_to_client: false,
            last_activity_ns: now_ns,
        }
    }

    /// A segment the client sent.
    pub fn on_client_segment(&mut self, seg: &Segment, now_ns: u64) {
        self.last_activity_ns = now_ns;
        self.client.on_segment(seg, now_ns);
    }

    /// A segment the server sent.
    pub fn on_server_segment(&mut self, seg: &Segment, now_ns: u64) {
        self.last_activity_ns = now_ns;
        self.server.on_segment(seg, now_ns);
    }

    /// Moves bytes: TCP to the relay, the relay's output to TCP, closes and
    /// resets across. `forge` answers a Resign relay's request for the
    /// certificate to show (the server's chain, trusted?); `None` fails the
    /// session.
    pub fn drive(&mut self, now_ns: u64, forge: &mut CertificateFor<'_>, out: &mut Output) {
        for _ in 0..8 {
            let mut moved = 0;
            moved += self.client_to_relay();
            moved += self.server_to_relay();
            moved += self.relay_events(forge, out);
            moved += self.relay_to_tcp();
            if moved == 0 {
                break;
            }
        }
        self.carry_closes();
        self.tie_windows();
        self.check_timeouts(now_ns);
    }

    /// The next segment to send: (toward the client?, segment).
    pub fn poll_transmit(&mut self, now_ns: u64) -> Option<(bool, Segment)> {
        if let Some(s) = self.client.poll_transmit(now_ns) {
            return Some((true, s));
        }
        self.server.poll_transmit(now_ns).map(|s| (false, s))
    }

    /// The earliest time either endpoint wants [`Interception::on_timeout`].
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the endpoints' timers.
    pub fn on_timeout(&mut self, now_ns: u64) {
        self.client.on_timeout(now_ns);
        self.server.on_timeout(now_ns);
    }

    /// Whether the session is over (both connections closed or reset), or
    /// idle past `idle_ns` (then both ends are reset first).
    pub fn finished(&mut self, now_ns: u64, idle_ns: u64) -> Option<Finished> {
        let done = |s: TcpState| matches!(s, TcpState::Closed | TcpState::Reset | TcpState::TimedOut);
        if done(self.client.state()) && done(self.server.state()) {
            return Some(Finished::Closed);
        }
        if now_ns.saturating_sub(self.last_activity_ns) > idle_ns {
            self.client.abort();
            self.server.abort();
            return Some(Finished::Idle);
        }
        None
    }

    /// Ends the session now (shutdown): close_notify and FIN to both ends.
    pub fn close(&mut self) {
        self.relay.close();
        let _ = self.relay_to_tcp();
        self.client.close();
        self.server.close();
    }

    /// Resets both connections (an undecryptable session whose action resets).
    pub fn reset_both(&mut self) {
        self.client.abort();
        self.server.abort();
    }

    /// How the TCP side ended, in words (for the event).
    pub fn tcp_end(&self) -> String {
        let name = |s: TcpState| match s {
            TcpState::Established => "open",
            TcpState::FinWait | TcpState::CloseWait | TcpState::Closing => "closing",
            TcpState::Closed => "closed",
            TcpState::Reset => "reset",
            TcpState::TimedOut => "timed out",
        };
        format!("client connection {}, server connection {}", name(self.client.state()), name(self.server.state()))
    }

    /// Whether the client reset its connection.
    pub fn reset_by_a_peer(&self) -> bool {
        self.client.state() == TcpState::Reset || self.server.state() == TcpState::Reset
    }

    fn client_to_relay(&mut self) -> usize {
        if self.relay.backlog().0 >= BACKLOG_LIMIT || self.client.readable() == 0 {
            return 0;
        }
        self.scratch.clear();
        let n = self.client.recv(&mut self.scratch);
        // An error is also reported as a relay event (failure or close), handled there.
        let _ = self.relay.from_client(&self.scratch);
        n
    }

    fn server_to_relay(&mut self) -> usize {
        if self.relay.backlog().1 >= BACKLOG_LIMIT || self.server.readable() == 0 {
            return 0;
        }
        self.scratch.clear();
        let n = self.server.recv(&mut self.scratch);
        let _ = self.relay.from_server(&self.scratch);
        n
    }

    fn relay_events(&mut self, forge: &mut CertificateFor<'_>, out: &mut Output) -> usize {
        let mut n = 0;
        while let Some(ev) = self.relay.poll_event() {
            n += 1;
            match ev {
                RelayEvent::ClientHello { .. } => {}
                RelayEvent::UpstreamCertificate { chain, trusted } => {
                    self.outcome.chain = chain.clone();
                    self.outcome.trusted = Some(trusted);
                    out.upstream_certificate = Some((chain, trusted));
                }
                RelayEvent::NeedCertificate { chain, trusted } => match forge(&chain, trusted) {
                    Some(key) => self.relay.provide_certificate(key),
                    None => {
                        self.outcome.failed = Some((
                            FailReason::HandshakeFailure,
                            "the server's certificate could not be re-signed".into(),
                        ));
                        self.relay.close();
                    }
                },
                RelayEvent::Established { upstream_version, upstream_cipher, client_version, alpn } => {
                    self.outcome.established = Some((upstream_version, upstream_cipher, client_version, alpn));
                }
                RelayEvent::Plaintext { from_client, data } => {
                    if from_client {
                        self.outcome.bytes_to_server += data.len() as u64;
                    } else {
                        self.outcome.bytes_to_client += data.len() as u64;
                    }
                    if self.keep_plaintext {
                        out.plaintext.push((from_client, data));
                    }
                }
                RelayEvent::KeyLog(line) => out.keylog.push(line),
                RelayEvent::Closed { reason } => {
                    self.outcome.closed.get_or_insert(reason);
                }
                RelayEvent::Failed { reason, detail } => {
                    self.outcome.failed.get_or_insert((reason, detail));
                }
            }
        }
        n
    }

    /// The relay's TLS output into the endpoints' send buffers, as far as they take it.
    fn relay_to_tcp(&mut self) -> usize {
        let mut moved = 0;
        if self.to_server.is_empty() {
            self.relay.to_server(&mut self.to_server);
        }
        if !self.to_server.is_empty() {
            let n = self.server.send(&self.to_server);
            self.to_server.drain(..n);
            moved += n;
        }
        if self.to_client.is_empty() {
            self.relay.to_client(&mut self.to_client);
        }
        if !self.to_client.is_empty() {
            let n = self.client.send(&self.to_client);
            self.to_client.drain(..n);
            moved += n;
        }
        moved
    }

    /// A FIN from one side is passed on once what came before it has been
    /// sent on; a reset is carried across at once; a relay that ended closes both.
    fn carry_closes(&mut self) {
        let (c, s) = (self.client.state(), self.server.state());
        if matches!(c, TcpState::Reset | TcpState::TimedOut) {
            self.server.abort();
            return;
        }
        if matches!(s, TcpState::Reset | TcpState::TimedOut) {
            self.client.abort();
            return;
        }
        let relay_ended = self.outcome.closed.is_some() || self.outcome.failed.is_some();
        if !self.fin_to_server
            && self.to_server.is_empty()
            && self.relay.backlog().0 == 0
            && (relay_ended || self.client.peer_closed())
        {
            self.fin_to_server = true;
            self.server.close();
        }
        if !self.fin_to_client
            && self.to_client.is_empty()
            && self.relay.backlog().1 == 0
            && (relay_ended || self.server.peer_closed())
        {
            self.fin_to_client = true;
            self.client.close();
        }
    }

    /// Each side's window: what the other side has not taken yet holds it shut.
    fn tie_windows(&mut self) {
        let (to_server_plain, to_client_plain) = self.relay.backlog();
        let toward_server = to_server_plain + self.to_server.len() + self.server.unacked();
        let toward_client = to_client_plain + self.to_client.len() + self.client.unacked();
        self.client.set_window_limit(IN_FLIGHT_LIMIT.saturating_sub(toward_server));
        self.server.set_window_limit(IN_FLIGHT_LIMIT.saturating_sub(toward_client));
    }

    fn check_timeouts(&mut self, now_ns: u64) {
        if self.poll_timeout().is_some_and(|t| t <= now_ns) {
            self.on_timeout(now_ns);
        }
    }
}

/// The two endpoints' starting state: facing the client we continue the
/// server's side (its sequence numbers, window scale, TSval clock); facing
/// the server, the client's, from the first byte of the ClientHello on (the
/// server never saw the client's own ClientHello: it gets ours).
fn takeovers(seen: &TcpSeen) -> (Takeover, Takeover) {
    let (cws, sws) = seen.wscale();
    let sack = seen.client.syn.is_some_and(|o| o.sack_permitted) && seen.server.syn.is_some_and(|o| o.sack_permitted);
    let window = |side: &TcpSideSeen, shift: u8| {
        if side.window_on_syn {
            u32::from(side.window)
        } else {
            u32::from(side.window) << shift
        }
    };
    let mss = |side: &TcpSideSeen| side.syn.and_then(|o| o.mss).unwrap_or(536);
    let ts = |ours: &TcpSideSeen, peer: &TcpSideSeen| {
        if !seen.timestamps() {
            return None;
        }
        let (our_last, at) = ours.tsval?;
        let (recent, _) = peer.tsval?;
        Some(TimestampState { our_last_tsval: our_last, our_last_tsval_at_ns: at, ts_hz: TS_HZ, ts_recent: recent })
    };
    let client_facing = Takeover {
        snd_nxt: seen.server_seq,
        snd_una: seen.server_seq,
        rcv_nxt: seen.client_seq,
        peer_window: window(&seen.client, cws),
        peer_mss: mss(&seen.client),
        our_wscale: sws,
        peer_wscale: cws,
        sack_permitted: sack,
        timestamps: ts(&seen.server, &seen.client),
    };
    let server_facing = Takeover {
        snd_nxt: seen.client_seq,
        snd_una: seen.client_seq,
        rcv_nxt: seen.server_seq,
        peer_window: window(&seen.server, sws),
        peer_mss: mss(&seen.server),
        our_wscale: cws,
        peer_wscale: sws,
        sack_permitted: sack,
        timestamps: ts(&seen.client, &seen.server),
    };
    (client_facing, server_facing)
}
