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
use tlsgate_core::escalate::{TcpSeen, TcpSideSeen};
use tlsgate_core::outcome::{TcpEnd, TlsClose};

use crate::keys::Accepts;
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
    /// The failure was the client's doing (the server is not to blame).
    pub failed_by_client: bool,
    /// How the TLS session ended, if it did.
    pub closed: Option<TlsClose>,
    /// Plaintext relayed client to server.
    pub bytes_to_server: u64,
    /// Plaintext relayed server to client.
    pub bytes_to_client: u64,
    /// Protected records received from the client, and from the server.
    pub records: (u64, u64),
    /// How long its steps took.
    pub timings: Timings,
}

/// How long a taken-over session's steps took, from the takeover (ns).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Until the server's certificate arrived (the handshake toward the server).
    pub server_certificate_ns: Option<u64>,
    /// Until both handshakes completed.
    pub established_ns: Option<u64>,
    /// Until the first plaintext byte was relayed, either way.
    pub first_plaintext_ns: Option<u64>,
}

/// Answers a Resign relay's request for the certificate to show the client:
/// given the server's chain, whether it is trusted and the key types the
/// client accepts, the certified key (or `None`: the session fails).
pub type CertificateFor<'a> = dyn FnMut(&[Vec<u8>], bool, Accepts) -> Option<Arc<CertifiedKey>> + 'a;

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
    keep_plaintext: bool,
    /// What happened.
    pub outcome: Outcome,
    fin_to_server: bool,
    fin_to_client: bool,
    last_activity_ns: u64,
    /// Both handshakes must be done by then, or both ends are reset: a peer
    /// that stalls or trickles a handshake holds a session for this long at most.
    handshake_deadline_ns: u64,
    /// When the takeover began.
    started_ns: u64,
    /// After a failure, the peers get this long to close before they are reset.
    failed_deadline_ns: Option<u64>,
}

/// How long peers get to close after a session failed.
const CLOSE_AFTER_FAILURE_NS: u64 = 5 * 1_000_000_000;

/// Default time both handshakes get.
pub const HANDSHAKE_TIMEOUT_NS: u64 = 30 * 1_000_000_000;

/// Why a session is over, when it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    /// Both connections closed (FIN both ways, or a reset carried across).
    Closed,
    /// Nothing happened for longer than the idle limit; both ends were reset.
    Idle,
    /// The handshakes did not complete in time; both ends were reset.
    HandshakeTimeout,
}

impl Interception {
    /// Both endpoints' counters: toward the client, toward the server.
    pub fn tcp_stats(&self) -> (crate::tcp::TcpStats, crate::tcp::TcpStats) {
        (self.client.stats(), self.server.stats())
    }

    /// Takes over a flow from what the wire showed (`seen`), with `relay`
    /// between the two TLS sessions, at `now_ns`. The client's segment that completed its
    /// ClientHello is then given to [`Interception::on_client_segment`].
    pub fn new(seen: &TcpSeen, relay: Relay, keep_plaintext: bool, now_ns: u64) -> Interception {
        let (client_facing, server_facing) = takeovers(seen);
        let limits = Limits::default();
        Interception {
            client: TcpEndpoint::takeover(client_facing, limits.clone(), now_ns),
            server: TcpEndpoint::takeover(server_facing, limits, now_ns),
            relay: relay.with_plaintext_copies(keep_plaintext),
            keep_plaintext,
            outcome: Outcome::default(),
            fin_to_server: false,
            fin_to_client: false,
            last_activity_ns: now_ns,
            handshake_deadline_ns: now_ns.saturating_add(HANDSHAKE_TIMEOUT_NS),
            started_ns: now_ns,
            failed_deadline_ns: None,
        }
    }

    /// Gives both handshakes `ns` from the takeover (default [`HANDSHAKE_TIMEOUT_NS`]).
    pub fn with_handshake_timeout(mut self, started_ns: u64, ns: u64) -> Interception {
        self.handshake_deadline_ns = started_ns.saturating_add(ns);
        self
    }

    /// A segment the client sent.
    pub fn on_client_segment(&mut self, seg: &Segment, now_ns: u64) {
        self.on_segment_with(true, seg, &seg.payload, now_ns);
    }

    /// A segment the server sent.
    pub fn on_server_segment(&mut self, seg: &Segment, now_ns: u64) {
        self.on_segment_with(false, seg, &seg.payload, now_ns);
    }

    /// A segment from the client (else the server) whose payload is read in
    /// place, out of its frame (see [`TcpEndpoint::on_segment_with`]).
    pub fn on_segment_with(&mut self, from_client: bool, seg: &Segment, payload: &[u8], now_ns: u64) {
        self.last_activity_ns = now_ns;
        let side = if from_client { &mut self.client } else { &mut self.server };
        side.on_segment_with(seg, payload, now_ns);
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
            moved += self.relay_events(now_ns, forge, out);
            moved += self.relay_to_tcp();
            if moved == 0 {
                break;
            }
        }
        self.outcome.records = self.relay.protected_records();
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

    /// The next segment's header into `seg` and its payload read in place
    /// (see [`TcpEndpoint::poll_transmit_ref`]): (toward the client?, payload).
    pub fn poll_transmit_ref(&mut self, now_ns: u64, seg: &mut Segment) -> Option<(bool, [&[u8]; 2])> {
        if let Some(payload) = self.client.poll_transmit_ref(now_ns, seg) {
            return Some((true, payload));
        }
        self.server.poll_transmit_ref(now_ns, seg).map(|payload| (false, payload))
    }

    /// The earliest time either endpoint wants [`Interception::on_timeout`].
    pub fn poll_timeout(&self) -> Option<u64> {
        match (self.client.poll_timeout(), self.server.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest time [`Interception::finished`] (with `idle_ns`) or an
    /// endpoint's timer may have something to do: TCP timers, the idle
    /// deadline, the handshake deadline while the handshakes are not done,
    /// the close deadline after a failure.
    pub fn next_deadline(&self, idle_ns: u64) -> Option<u64> {
        let idle = self.last_activity_ns.saturating_add(idle_ns).saturating_add(1);
        let handshake = (self.outcome.established.is_none() && self.outcome.failed.is_none())
            .then(|| self.handshake_deadline_ns.saturating_add(1));
        let failed = self.failed_deadline_ns.map(|d| d.saturating_add(1));
        [self.poll_timeout(), Some(idle), handshake, failed].into_iter().flatten().min()
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
        if self.outcome.failed.is_some() {
            let deadline = *self.failed_deadline_ns.get_or_insert(now_ns.saturating_add(CLOSE_AFTER_FAILURE_NS));
            if now_ns > deadline {
                self.reset_both();
                return Some(Finished::Closed);
            }
        }
        if now_ns.saturating_sub(self.last_activity_ns) > idle_ns {
            self.reset_both();
            return Some(Finished::Idle);
        }
        if self.outcome.established.is_none() && self.outcome.failed.is_none() && now_ns > self.handshake_deadline_ns {
            self.reset_both();
            self.outcome.failed =
                Some((FailReason::HandshakeFailure, "the handshakes did not complete in time".into()));
            return Some(Finished::HandshakeTimeout);
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

    /// The last TCP state of the connections toward the client and the server.
    pub fn tcp_ends(&self) -> (TcpEnd, TcpEnd) {
        let end = |s: TcpState| match s {
            TcpState::Established => TcpEnd::Open,
            TcpState::FinWait | TcpState::CloseWait | TcpState::Closing => TcpEnd::Closing,
            TcpState::Closed => TcpEnd::Closed,
            TcpState::Reset => TcpEnd::Reset,
            TcpState::TimedOut => TcpEnd::TimedOut,
        };
        (end(self.client.state()), end(self.server.state()))
    }

    /// Bytes this session holds now: plaintext backlog, and what each TCP
    /// endpoint buffers (unacknowledged, unread). TLS bytes waiting for room
    /// in a send buffer stay in their connection, within its buffer limit.
    pub fn buffered(&self) -> usize {
        let (a, b) = self.relay.backlog();
        a + b + self.client.unacked() + self.server.unacked() + self.client.readable() + self.server.readable()
    }

    /// Lets go of what a finished session no longer needs (see
    /// [`Relay::release`], [`TcpEndpoint::shrink`]): it lingers only so that
    /// a retransmitted FIN is still answered.
    pub fn release(&mut self) {
        self.relay.release();
        self.client.shrink();
        self.server.shrink();
    }

    /// Bytes of buffer room held (both TCP endpoints and the relay's queues),
    /// and whether a TLS connection is still held.
    pub fn held(&self) -> (usize, bool) {
        let (room, tls) = self.relay.held();
        (room + self.client.capacity() + self.server.capacity(), tls)
    }

    /// Whether either peer reset its connection.
    pub fn reset_by_a_peer(&self) -> bool {
        self.client.state() == TcpState::Reset || self.server.state() == TcpState::Reset
    }

    fn client_to_relay(&mut self) -> usize {
        if self.relay.backlog().0 >= BACKLOG_LIMIT || self.client.readable() == 0 {
            return 0;
        }
        let relay = &mut self.relay;
        // An error is also reported as a relay event (failure or close), handled there.
        self.client.recv_with(|bytes| {
            let _ = relay.from_client(bytes);
        })
    }

    fn server_to_relay(&mut self) -> usize {
        if self.relay.backlog().1 >= BACKLOG_LIMIT || self.server.readable() == 0 {
            return 0;
        }
        let relay = &mut self.relay;
        self.server.recv_with(|bytes| {
            let _ = relay.from_server(bytes);
        })
    }

    fn relay_events(&mut self, now_ns: u64, forge: &mut CertificateFor<'_>, out: &mut Output) -> usize {
        let mut n = 0;
        let since = now_ns.saturating_sub(self.started_ns);
        while let Some(ev) = self.relay.poll_event() {
            n += 1;
            match ev {
                RelayEvent::ClientHello { .. } => {}
                RelayEvent::UpstreamCertificate { chain, trusted } => {
                    self.outcome.timings.server_certificate_ns.get_or_insert(since);
                    self.outcome.chain = chain.clone();
                    self.outcome.trusted = Some(trusted);
                    out.upstream_certificate = Some((chain, trusted));
                }
                RelayEvent::NeedCertificate { chain, trusted, accepts } => match forge(&chain, trusted, accepts) {
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
                    self.outcome.timings.established_ns.get_or_insert(since);
                    self.outcome.established = Some((upstream_version, upstream_cipher, client_version, alpn));
                }
                RelayEvent::Plaintext { from_client, len, data } => {
                    self.outcome.timings.first_plaintext_ns.get_or_insert(since);
                    if from_client {
                        self.outcome.bytes_to_server += len as u64;
                    } else {
                        self.outcome.bytes_to_client += len as u64;
                    }
                    if self.keep_plaintext {
                        out.plaintext.push((from_client, data));
                    }
                }
                RelayEvent::KeyLog(line) => out.keylog.push(line),
                RelayEvent::Closed { how } => {
                    self.outcome.closed.get_or_insert(how);
                }
                RelayEvent::Failed { reason, detail } => {
                    self.outcome.failed.get_or_insert((reason, detail));
                    self.outcome.failed_by_client = self.relay.failed_by_client();
                }
            }
        }
        n
    }

    /// The relay's TLS output into the endpoints' send buffers, as far as they take it.
    fn relay_to_tcp(&mut self) -> usize {
        // Written straight into each endpoint's send buffer, as far as it has room.
        self.relay.to_server(&mut self.server) + self.relay.to_client(&mut self.client)
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
        let (tls_to_client, tls_to_server) = self.relay.tls_waiting();
        if !self.fin_to_server
            && !tls_to_server
            && self.relay.backlog().0 == 0
            && (relay_ended || self.client.peer_closed())
        {
            self.fin_to_server = true;
            self.server.close();
        }
        if !self.fin_to_client
            && !tls_to_client
            && self.relay.backlog().1 == 0
            && (relay_ended || self.server.peer_closed())
        {
            self.fin_to_client = true;
            self.client.close();
        }
    }

    /// Each side's window: what the other side has not taken yet holds it
    /// shut. (TLS records a full send buffer left in their connection are
    /// not counted; rustls holds at most its buffer limit, 64 KiB, of them.)
    fn tie_windows(&mut self) {
        let (to_server_plain, to_client_plain) = self.relay.backlog();
        let toward_server = to_server_plain + self.server.unacked();
        let toward_client = to_client_plain + self.client.unacked();
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

#[cfg(test)]
mod tests {
    //! The interception between a real rustls client and server, each on a
    //! TCP endpoint of its own (the tcp module's, standing in for the hosts'
    //! stacks), over scripted links with loss, on a virtual clock.
    use super::*;
    use crate::forge::Forger;
    use crate::keys::LeafKeys;
    use crate::relay::ClientFacing;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection};
    use std::io::{Read, Write};
    use tlsgate_core::packet::TcpOptions;
    use tlsgate_perf::handshake::{Leaf, Pki};

    const MS: u64 = 1_000_000;
    const C_ISN: u32 = 0x1111_0000;
    // The server's sequence numbers wrap around during the test.
    const S_ISN: u32 = 0xffff_f000;

    fn seen() -> TcpSeen {
        let opts = |ts| TcpOptions {
            mss: Some(1460),
            wscale: Some(7),
            sack_permitted: true,
            timestamps: Some((ts, 0)),
            md5: false,
        };
        TcpSeen {
            client: TcpSideSeen { syn: Some(opts(100)), window: 502, window_on_syn: false, tsval: Some((110, 0)) },
            server: TcpSideSeen { syn: Some(opts(9000)), window: 509, window_on_syn: false, tsval: Some((9010, 0)) },
            client_seq: C_ISN.wrapping_add(1),
            server_seq: S_ISN.wrapping_add(1),
        }
    }

    /// The hosts' own ends, as the wire left them at the takeover.
    fn host_takeovers(s: &TcpSeen) -> (Takeover, Takeover) {
        let ts = |ours: u32, peer: u32| {
            Some(TimestampState { our_last_tsval: ours, our_last_tsval_at_ns: 0, ts_hz: 1000, ts_recent: peer })
        };
        let client = Takeover {
            snd_nxt: s.client_seq,
            snd_una: s.client_seq,
            rcv_nxt: s.server_seq,
            peer_window: 509 << 7,
            peer_mss: 1460,
            our_wscale: 7,
            peer_wscale: 7,
            sack_permitted: true,
            timestamps: ts(110, 9010),
        };
        let server = Takeover {
            snd_nxt: s.server_seq,
            snd_una: s.server_seq,
            rcv_nxt: s.client_seq,
            peer_window: 502 << 7,
            timestamps: ts(9010, 110),
            ..client.clone()
        };
        (client, server)
    }

    /// A host: rustls on a TCP endpoint, sending `send` once connected and
    /// keeping what it reads.
    struct Host {
        tcp: TcpEndpoint,
        tls: Connection,
        send: Vec<u8>,
        sent: usize,
        got: Vec<u8>,
        tls_out: Vec<u8>,
        read_paused: bool,
        closed: bool,
        error: Option<String>,
        /// Sizes of the records it received (their headers read off the TCP stream).
        records: Vec<usize>,
        record_headers: crate::relay::RecordHeaders,
    }

    impl Host {
        fn new(t: Takeover, tls: Connection, send: Vec<u8>) -> Host {
            Host {
                tcp: TcpEndpoint::takeover(t, Limits::default(), 0),
                tls,
                send,
                sent: 0,
                got: Vec::new(),
                tls_out: Vec::new(),
                read_paused: false,
                closed: false,
                error: None,
                records: Vec::new(),
                record_headers: Default::default(),
            }
        }

        /// Notes the record headers crossing in `bytes` (received in order).
        fn note_records(&mut self, bytes: &[u8]) {
            let records = &mut self.records;
            self.record_headers.feed(bytes, |_, len| records.push(len));
        }

        fn pump(&mut self) {
            if !self.read_paused && self.error.is_none() {
                let mut buf = Vec::new();
                self.tcp.recv(&mut buf);
                self.note_records(&buf);
                let mut slice = &buf[..];
                // rustls takes a bounded amount at a time: feed, process, drain, again.
                for _ in 0..10_000 {
                    let _ = self.tls.read_tls(&mut slice);
                    if let Err(e) = self.tls.process_new_packets() {
                        self.error = Some(e.to_string());
                        break;
                    }
                    let mut chunk = [0u8; 16384];
                    loop {
                        match self.tls.reader().read(&mut chunk) {
                            Ok(0) => {
                                self.closed = true;
                                break;
                            }
                            Ok(n) => self.got.extend_from_slice(&chunk[..n]),
                            Err(_) => break,
                        }
                    }
                    if slice.is_empty() {
                        break;
                    }
                }
            }
            // Like an application on a blocking socket: write more only once the last write left.
            if !self.tls.is_handshaking() && self.sent < self.send.len() && self.tls_out.is_empty() {
                let end = (self.sent + 64 * 1024).min(self.send.len());
                let n = self.tls.writer().write(&self.send[self.sent..end]).unwrap_or(0);
                self.sent += n;
            }
            while self.tls.wants_write() {
                if self.tls.write_tls(&mut self.tls_out).is_err() {
                    break;
                }
            }
            if !self.tls_out.is_empty() {
                let n = self.tcp.send(&self.tls_out);
                self.tls_out.drain(..n);
            }
            // A host closes its side once the peer closed and it has nothing left to say.
            if self.tcp.peer_closed() && self.tls_out.is_empty() {
                self.tcp.close();
            }
        }

        /// The application closes: close_notify, then FIN.
        fn close(&mut self) {
            self.tls.send_close_notify();
            self.pump();
            self.tcp.close();
        }
    }

    /// A link that loses every `n`-th segment (0: none).
    struct Loss {
        every: u64,
        count: u64,
    }

    impl Loss {
        fn keep(&mut self) -> bool {
            self.count += 1;
            self.every == 0 || !self.count.is_multiple_of(self.every)
        }
    }

    struct World {
        now: u64,
        client: Host,
        server: Host,
        icpt: Interception,
        forger: Option<Forger>,
        keys: LeafKeys,
        loss: Loss,
        peak_buffered: usize,
    }

    impl World {
        /// One millisecond of the world.
        fn step(&mut self) {
            self.now += MS;
            let now = self.now;
            for h in [&mut self.client, &mut self.server] {
                if h.tcp.poll_timeout().is_some_and(|t| t <= now) {
                    h.tcp.on_timeout(now);
                }
                h.pump();
            }
            while let Some(seg) = self.client.tcp.poll_transmit(now) {
                if self.loss.keep() {
                    self.icpt.on_client_segment(&seg, now);
                }
            }
            while let Some(seg) = self.server.tcp.poll_transmit(now) {
                if self.loss.keep() {
                    self.icpt.on_server_segment(&seg, now);
                }
            }
            let forger = &mut self.forger;
            let keys = &mut self.keys;
            let mut forge = |chain: &[Vec<u8>], trusted: bool, accepts: Accepts| {
                forger.as_mut()?.forge(keys, chain.first()?, trusted, accepts).ok()
            };
            self.icpt.drive(now, &mut forge, &mut Output::default());
            while let Some((to_client, seg)) = self.icpt.poll_transmit(now) {
                if !self.loss.keep() {
                    continue;
                }
                if to_client {
                    self.client.tcp.on_segment(&seg, now);
                } else {
                    self.server.tcp.on_segment(&seg, now);
                }
            }
            self.peak_buffered = self.peak_buffered.max(self.icpt.buffered());
        }

        fn run_until(&mut self, max_ms: u64, mut done: impl FnMut(&mut World) -> bool) {
            for _ in 0..max_ms {
                if done(self) {
                    return;
                }
                self.step();
            }
            panic!(
                "not done after {max_ms} ms of virtual time: {:?} {:?} client {:?} server {:?} got {} {}",
                self.icpt.relay,
                self.icpt.outcome,
                self.client.error,
                self.server.error,
                self.client.got.len(),
                self.server.got.len()
            );
        }
    }

    fn data(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::aws_lc_rs::default_provider())
    }

    fn roots(der: &[u8]) -> RootCertStore {
        let mut r = RootCertStore::empty();
        r.add(CertificateDer::from(der.to_vec())).unwrap();
        r
    }

    fn server_tls(leaf: &Leaf, chain_ca: &[u8], tls12: bool) -> Connection {
        let versions: &[&rustls::SupportedProtocolVersion] =
            if tls12 { &[&rustls::version::TLS12] } else { &[&rustls::version::TLS13] };
        let cfg = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.cert_der.clone()), CertificateDer::from(chain_ca.to_vec())],
                PrivateKeyDer::Pkcs8(leaf.key_der.clone().into()),
            )
            .unwrap();
        Connection::Server(ServerConnection::new(Arc::new(cfg)).unwrap())
    }

    fn client_tls(trust: &[u8], name: &str) -> Connection {
        let cfg = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots(trust))
            .with_no_client_auth();
        Connection::Client(
            ClientConnection::new(Arc::new(cfg), ServerName::try_from(name.to_owned()).unwrap()).unwrap(),
        )
    }

    fn now_s() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    #[allow(clippy::too_many_arguments)]
    fn world(
        facing: ClientFacing,
        client: Connection,
        server: Connection,
        loss_every: u64,
        forger: Option<Forger>,
        web: &Pki,
        up: Vec<u8>,
        down: Vec<u8>,
    ) -> World {
        let s = seen();
        let (ct, st) = host_takeovers(&s);
        let relay = Relay::new(RelayConfig {
            trust: crate::ServerTrust::new(roots(&web.ca_cert_der())),
            client_facing: facing,
            keylog: false,
        });
        World {
            now: 0,
            client: Host::new(ct, client, up),
            server: Host::new(st, server, down),
            icpt: Interception::new(&s, relay, false, 0),
            forger,
            keys: LeafKeys::new(None, 3600),
            loss: Loss { every: loss_every, count: 0 },
            peak_buffered: 0,
        }
    }

    fn forger() -> (Pki, Forger) {
        let ca = Pki::new("Inspection CA");
        let key = rustls::pki_types::pem::PemObject::from_pem_slice(ca.ca_key_pem().as_bytes()).unwrap();
        let f = Forger::new(&ca.ca_cert_der(), key, 16).unwrap();
        (ca, f)
    }

    use crate::relay::RelayConfig;

    /// Resign between a TLS 1.3 server for shop.test and a client trusting the
    /// inspection CA (returned), links losing every `loss_every`-th segment.
    fn resign_world(loss_every: u64, up: Vec<u8>, down: Vec<u8>) -> (World, Pki) {
        let web = Pki::new("Web Root");
        let leaf = web.issue(&["shop.test"], "Shop", now_s() - 86_400, now_s() + 86_400);
        let (ca, forger) = forger();
        let w = world(
            ClientFacing::Resign,
            client_tls(&ca.ca_cert_der(), "shop.test"),
            server_tls(&leaf, &web.ca_cert_der(), false),
            loss_every,
            Some(forger),
            &web,
            up,
            down,
        );
        (w, ca)
    }

    #[test]
    fn resign_relays_both_ways_intact_over_lossy_links_then_closes() {
        let web = Pki::new("Web Root");
        let leaf = web.issue(&["shop.test"], "Shop", now_s() - 86_400, now_s() + 86_400);
        let (ca, forger) = forger();
        let up = data(300 * 1024, 1);
        let down = data(1 << 20, 2);
        let mut w = world(
            ClientFacing::Resign,
            client_tls(&ca.ca_cert_der(), "shop.test"),
            server_tls(&leaf, &web.ca_cert_der(), false),
            37,
            Some(forger),
            &web,
            up.clone(),
            down.clone(),
        );
        w.run_until(120_000, |w| w.client.got.len() >= down.len() && w.server.got.len() >= up.len());
        assert!(w.client.error.is_none() && w.server.error.is_none(), "{:?} {:?}", w.client.error, w.server.error);
        assert!(w.client.got == down && w.server.got == up, "both directions intact");
        let (v, _, cv, _) = w.icpt.outcome.established.clone().expect("both handshakes done");
        assert_eq!((v, cv), (rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_3));
        assert_eq!(w.icpt.outcome.trusted, Some(true));
        assert!(w.peak_buffered < 2 << 20, "a session's memory stays bounded: {}", w.peak_buffered);
        // The client closes; the close crosses to the server, the server closes, both connections end.
        w.client.close();
        w.run_until(60_000, |w| w.server.closed);
        w.server.close();
        let mut done = None;
        w.run_until(60_000, |w| {
            done = w.icpt.finished(w.now, u64::MAX);
            done.is_some()
        });
        assert_eq!(done, Some(Finished::Closed));
        assert_eq!(w.icpt.outcome.bytes_to_server, up.len() as u64);
        assert_eq!(w.icpt.outcome.bytes_to_client, down.len() as u64);
        // Finished, it lingers with nothing but its TCP state: no TLS
        // connection, no buffer room; and driven on, it stays finished.
        let (room, tls) = w.icpt.held();
        assert!(room >= 64 << 10 && tls, "before: {room} bytes of room, TLS held: {tls}");
        w.icpt.release();
        assert_eq!(w.icpt.held(), (0, false));
        let released_at = w.now;
        w.run_until(3_100, |w| w.now >= released_at + 3_000 * MS);
        assert_eq!(w.icpt.finished(w.now, u64::MAX), Some(Finished::Closed));
        assert_eq!(w.icpt.held(), (0, false));
    }

    #[test]
    fn known_key_over_tls12_shows_the_servers_own_certificate() {
        let web = Pki::new("Web Root");
        let leaf = web.issue(&["intranet.test"], "Corp", now_s() - 86_400, now_s() + 86_400);
        let key = Arc::new(rustls::sign::CertifiedKey::new(
            vec![CertificateDer::from(leaf.cert_der.clone())],
            provider().key_provider.load_private_key(PrivateKeyDer::Pkcs8(leaf.key_der.clone().into())).unwrap(),
        ));
        let mut w = world(
            ClientFacing::KnownKey(key),
            client_tls(&web.ca_cert_der(), "intranet.test"),
            server_tls(&leaf, &web.ca_cert_der(), true),
            0,
            None,
            &web,
            b"GET / HTTP/1.1\r\n\r\n".to_vec(),
            data(200_000, 3),
        );
        w.run_until(60_000, |w| w.client.got.len() >= 200_000 && w.server.got.len() >= 18);
        assert_eq!(w.client.got, data(200_000, 3));
        // Each side negotiates its own version: the server speaks only TLS 1.2, the client offered 1.3 too.
        let (v, _, cv, _) = w.icpt.outcome.established.clone().unwrap();
        assert_eq!((v, cv), (rustls::ProtocolVersion::TLSv1_2, rustls::ProtocolVersion::TLSv1_3));
        let shown = match &w.client.tls {
            Connection::Client(c) => c.peer_certificates().unwrap()[0].to_vec(),
            Connection::Server(_) => unreachable!(),
        };
        assert_eq!(shown, leaf.cert_der, "the imported certificate, byte for byte");
    }

    #[test]
    fn a_slow_client_throttles_the_server_and_memory_stays_bounded() {
        let web = Pki::new("Web Root");
        let leaf = web.issue(&["shop.test"], "Shop", now_s() - 86_400, now_s() + 86_400);
        let (ca, forger) = forger();
        let down = data(8 << 20, 4);
        let mut w = world(
            ClientFacing::Resign,
            client_tls(&ca.ca_cert_der(), "shop.test"),
            server_tls(&leaf, &web.ca_cert_der(), false),
            0,
            Some(forger),
            &web,
            Vec::new(),
            down.clone(),
        );
        w.run_until(10_000, |w| w.icpt.outcome.established.is_some());
        // The client stops reading: its window closes, then ours toward the server.
        w.client.read_paused = true;
        for _ in 0..5_000 {
            w.step();
        }
        let held = w.icpt.buffered();
        assert!(w.server.sent < down.len(), "the server is held back");
        assert!(held <= 2 << 20, "the slow path holds {held} bytes for a stalled client");
        w.client.read_paused = false;
        w.run_until(120_000, |w| w.client.got.len() >= down.len());
        assert_eq!(w.client.got, down, "everything arrives once the client reads again");
    }

    #[test]
    fn records_toward_a_client_whose_reads_stall_are_as_full_as_the_servers() {
        // The server writes 64 KiB at a time (full 16 KiB records); the client
        // reads slowly now and then, so the send buffer toward it fills.
        let down = data(4 << 20, 5);
        let (mut w, _) = resign_world(0, Vec::new(), down.clone());
        w.run_until(10_000, |w| w.icpt.outcome.established.is_some());
        let handshake_records = w.client.records.len();
        let mut step = 0u64;
        w.run_until(200_000, |w| {
            step += 1;
            w.client.read_paused = step % 50 < 25;
            w.client.got.len() >= down.len()
        });
        assert_eq!(w.client.got, down);
        // TLS 1.3 with AES-GCM: 16 KiB of data, its content type and a 16-byte tag.
        let data_records = &w.client.records[handshake_records..];
        let full = data_records.iter().filter(|&&n| n == 16384 + 17).count();
        // The server's own stack cuts a record short now and then; those pass as they came.
        let least = down.len() / 16384;
        assert!(
            full >= least * 95 / 100 && data_records.len() <= least + 8,
            "{} records for {} KiB, {full} of them full: {:?}",
            data_records.len(),
            down.len() >> 10,
            &data_records[..data_records.len().min(40)]
        );
    }

    #[test]
    fn garbage_instead_of_a_client_hello_ends_the_session_for_both_sides() {
        let (mut w, _) = resign_world(0, Vec::new(), Vec::new());
        // The client's stack sends bytes that are not TLS.
        w.client.tcp.send(&data(5000, 9));
        w.client.tls_out.clear();
        let mut done = None;
        w.run_until(120_000, |w| {
            done = w.icpt.finished(w.now, u64::MAX);
            done.is_some()
        });
        assert!(w.icpt.outcome.failed.is_some(), "{:?}", w.icpt.outcome);
        assert!(w.server.got.is_empty());
    }

    /// An interception of the usual TCP handshake, resigning, trusting nothing.
    fn bare_interception() -> Interception {
        let relay = Relay::new(RelayConfig {
            trust: crate::ServerTrust::new(RootCertStore::empty()),
            client_facing: ClientFacing::Resign,
            keylog: false,
        });
        Interception::new(&seen(), relay, false, 0)
    }

    #[test]
    fn a_stalled_handshake_is_reset_at_its_deadline() {
        let (mut w, ca) = resign_world(0, Vec::new(), Vec::new());
        w.icpt = std::mem::replace(&mut w.icpt, bare_interception()).with_handshake_timeout(0, 2_000 * MS);
        // Half a ClientHello, then nothing.
        let mut hello = Vec::new();
        w.client.tls.write_tls(&mut hello).unwrap();
        w.client.tcp.send(&hello[..hello.len() / 2]);
        w.client.tls = client_tls(&ca.ca_cert_der(), "shop.test");
        let _ = w.client.tls.write_tls(&mut Vec::new());
        let mut done = None;
        w.run_until(10_000, |w| {
            done = w.icpt.finished(w.now, u64::MAX);
            done.is_some()
        });
        assert_eq!(done, Some(Finished::HandshakeTimeout));
        assert!(w.now <= 3_000 * MS, "reset at the deadline, not later: {} ms", w.now / MS);
    }

    /// What a slow-path lcore's timer heap is told: the earliest of the TCP
    /// timers and the session's own deadlines, each the first moment
    /// `finished` acts on it.
    #[test]
    fn the_next_deadline_is_the_first_moment_finished_acts() {
        let fresh = || bare_interception().with_handshake_timeout(0, 2_000 * MS);
        // Nothing sent: no TCP timer; the handshake deadline comes before a long idle one.
        let mut icpt = fresh();
        assert_eq!(icpt.poll_timeout(), None);
        let at = icpt.next_deadline(60_000 * MS).expect("a deadline");
        assert_eq!(at, 2_000 * MS + 1);
        assert_eq!(icpt.finished(at - 1, 60_000 * MS), None);
        assert_eq!(icpt.finished(at, 60_000 * MS), Some(Finished::HandshakeTimeout));
        // A short idle timeout comes first.
        let mut icpt = fresh();
        let at = icpt.next_deadline(500 * MS).expect("a deadline");
        assert_eq!(at, 500 * MS + 1);
        assert_eq!(icpt.finished(at - 1, 500 * MS), None);
        assert_eq!(icpt.finished(at, 500 * MS), Some(Finished::Idle));
    }
}
