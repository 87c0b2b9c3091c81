//! QUIC flows in the inspector: UDP to or from port 443 whose first client
//! datagram is a QUIC Initial is a session like a TLS one. Its ClientHello
//! (read from the Initials by [`QuicObserver`]) is judged by the same policy,
//! at once (nothing later is in clear): do-not-decrypt forwards the flow,
//! block drops every packet of it, block-with-reset also answers the client
//! with an ICMP port unreachable so that it falls back to TCP at once; a
//! decrypt action cannot be carried out on QUIC and takes the undecryptable
//! action `quic` (default block: the client falls back to TCP, where the
//! same rule decrypts it). Flows live in a table of their own (a UDP and a
//! TCP flow may share a 5-tuple).

use tlsgate_config::facts::{FlowFacts, SessionFacts};
use tlsgate_config::policy::{Evaluation, FinalAction, Undecryptable};

use super::session::Session;
use super::{decided, DropReason, Inspector, Output, Reset, Resolution, Verdict, NS};
use crate::flow::FlowKey;
use crate::outcome::{Cause, FlowEnd};
use crate::packet::{build_port_unreachable, to_ip, UdpFrame};
use crate::quic::{parse_long_header, PacketKind, QuicLimits, QuicObserver};
use crate::tls::{HandshakeObserver, ObserverEvent, ObserverLimits};

/// The port QUIC is looked for on.
const QUIC_PORT: u16 = 443;

/// A QUIC flow's state in its table.
pub(super) enum QuicState {
    /// Its Initials are being read.
    Inspecting(Box<QuicSession>),
    /// Decided do-not-decrypt and forwarded, read on to the server's Initial
    /// (its ServerHello) for the event, which goes out then.
    Observing(Box<QuicSession>, Box<Resolution>, u64),
    /// Forwarded untouched; the connection IDs its long headers go to (a
    /// client Initial to another starts a new connection).
    Bypass(Vec<Box<[u8]>>),
    /// Every packet dropped.
    Blocked,
}

/// One QUIC session being read.
pub(super) struct QuicSession {
    observer: QuicObserver,
    session: Box<Session>,
    /// Datagrams that held nothing readable.
    undecodable: u32,
    /// The client's datagrams before the decision, held (a ClientHello over
    /// several Initials must not reach the server in part if it is blocked).
    held: Vec<Vec<u8>>,
}

/// Client datagrams held per flow at most (the observer reads no more Initials).
const MAX_HELD: usize = 16;

/// Bytes of client datagrams a worker holds at most, all flows together;
/// past it a datagram goes on before its flow's decision (`quic_hold_full`).
const HELD_BYTES: usize = 4 << 20;

/// What a session holds.
fn held_bytes(state: &QuicState) -> usize {
    match state {
        QuicState::Inspecting(q) => q.held.iter().map(Vec::len).sum(),
        _ => 0,
    }
}

/// Whether the client's `payload` starts a new connection on a flow in
/// `state` (forwarded): an Initial to a connection ID the flow's connection
/// never used, which opens with keys of its own and carries the start of a
/// ClientHello. (The known IDs spare the key derivation for the connection's
/// own later Initials.)
fn new_connection(state: &QuicState, payload: &[u8]) -> bool {
    let known = match state {
        QuicState::Bypass(cids) => &cids[..],
        QuicState::Observing(q, ..) => q.observer.connection_ids(),
        _ => return false,
    };
    match parse_long_header(payload) {
        Ok(h) if h.kind == PacketKind::Initial => {
            !known.iter().any(|c| &c[..] == h.dcid) && crate::quic::starts_connection(payload)
        }
        _ => false,
    }
}

/// Datagrams with nothing readable before the flow is judged as it is.
const MAX_UNDECODABLE: u32 = 8;

impl Inspector {
    /// A whole UDP datagram (`fragmented`: reassembled from IP fragments).
    pub(super) fn on_udp(
        &mut self,
        u: &UdpFrame,
        fragmented: bool,
        ingress: usize,
        now: u64,
        out: &mut Output,
    ) -> Verdict {
        if self.judge.dns.strip_ech && u.src_port == super::dns::DNS_PORT {
            return self.on_dns_answer(u, fragmented, ingress, now, out);
        }
        let quic_port = u.dst_port == QUIC_PORT || u.src_port == QUIC_PORT;
        if !quic_port {
            self.judge.counters.udp_not_quic += 1;
            return Verdict::Forward;
        }
        let (key, from_lo) = FlowKey::of_ports(u.src, u.dst, u.src_port, u.dst_port, u.vlan);
        let id = match self.quic.find(&key) {
            Some(id) => id,
            None => {
                // A flow begins with a client's long-header packet to 443.
                let first = u.payload().first().copied().unwrap_or(0);
                if u.dst_port != QUIC_PORT || first & 0xc0 != 0xc0 {
                    self.judge.counters.udp_not_quic += 1;
                    return Verdict::Forward;
                }
                let mut session = self.judge.quic_session(u, from_lo, key);
                session.session.started_ns = now;
                let timeout = self.judge.settings.inspecting_timeout as u64 * NS;
                // A full table first forgets the oldest flow that showed no
                // ClientHello yet (a flood of Initials costs nothing to forget).
                let embryonic =
                    |s: &QuicState| matches!(s, QuicState::Inspecting(q) if q.session.facts.client_hello.is_none());
                match self.quic.insert_evicting(key, QuicState::Inspecting(Box::new(session)), now, timeout, embryonic)
                {
                    Ok((id, evicted)) => {
                        self.judge.counters.quic_flows += 1;
                        if let Some((_, state)) = evicted {
                            self.judge.counters.evicted += 1;
                            self.quic_held_bytes -= held_bytes(&state);
                        }
                        id
                    }
                    Err(_) => {
                        self.judge.counters.table_full += 1;
                        return match self.judge.settings.when_full {
                            tlsgate_config::WhenFull::Bypass => Verdict::Forward,
                            tlsgate_config::WhenFull::Drop => Verdict::Drop(DropReason::FlowTableFull),
                        };
                    }
                }
            }
        };
        let decided_ns = self.judge.settings.decided_timeout as u64 * NS;
        // A forwarded flow whose client starts a new connection on the same
        // 5-tuple (a fresh Initial with a new ClientHello) is a new session:
        // judged like the first, or a benign connection would open the way
        // for any later one.
        let restart = u.dst_port == QUIC_PORT && self.quic.get_mut(id).is_some_and(|s| new_connection(s, u.payload()));
        if restart {
            let mut session = self.judge.quic_session(u, from_lo, key);
            session.session.started_ns = now;
            if let Some(state) = self.quic.get_mut(id) {
                let old = std::mem::replace(state, QuicState::Inspecting(Box::new(session)));
                if let QuicState::Observing(q, r, at) = old {
                    self.judge.emit(q.session, *r, at, now, out);
                }
            }
            self.judge.counters.quic_flows += 1;
            self.judge.counters.quic_reconnects += 1;
        }
        let Some(state) = self.quic.get_mut(id) else { return Verdict::Forward };
        match state {
            QuicState::Bypass(cids) => {
                // The server's connection IDs (its Initial's, a Retry's): the
                // client's Initials to them are the same connection.
                if u.src_port == QUIC_PORT && u.payload().first().is_some_and(|b| b & 0x80 != 0) {
                    if let Ok(h) = parse_long_header(u.payload()) {
                        if matches!(h.kind, PacketKind::Retry | PacketKind::Initial) {
                            crate::quic::note_cid(cids, h.scid);
                        }
                    }
                }
                self.quic.touch(id, now, decided_ns);
                Verdict::Forward
            }
            QuicState::Observing(q, _, _) => {
                let from_client = from_lo == q.session.client_is_lo;
                q.observer.on_datagram(from_client, u.payload());
                let mut done = q.observer.exhausted();
                while let Some(ev) = q.observer.poll_event() {
                    if let ObserverEvent::ServerHello(sh) = ev {
                        q.session.facts.server_hello = Some(sh);
                        done = true;
                    }
                }
                let timeout = if done {
                    if let QuicState::Observing(q, r, at) = std::mem::replace(state, QuicState::Bypass(Vec::new())) {
                        let cids = q.observer.connection_ids().to_vec();
                        self.judge.emit(q.session, *r, at, now, out);
                        *state = QuicState::Bypass(cids);
                    }
                    decided_ns
                } else {
                    self.judge.settings.inspecting_timeout as u64 * NS
                };
                self.quic.touch(id, now, timeout);
                Verdict::Forward
            }
            QuicState::Blocked => {
                self.quic.touch(id, now, decided_ns);
                self.judge.counters.blocked_packets += 1;
                Verdict::Drop(DropReason::Policy)
            }
            QuicState::Inspecting(q) => {
                let from_client = from_lo == q.session.client_is_lo;
                if q.session.facts.flow.ingress.is_empty() {
                    let port = if from_client { ingress } else { ingress ^ 1 };
                    q.session.facts.flow.ingress = self.judge.port_names.get(port).cloned().unwrap_or_default();
                }
                let seen = q.observer.on_datagram(from_client, u.payload());
                if seen.initials == 0 {
                    q.undecodable += 1;
                }
                let mut resolution = None;
                while let Some(ev) = q.observer.poll_event() {
                    if let ObserverEvent::ClientHello(ch) = ev {
                        if q.session.facts.client_hello.is_none() {
                            q.session.facts.client_hello = Some(*ch);
                            resolution = Some(self.judge.judge_quic(&mut q.session));
                        }
                    }
                }
                if resolution.is_none() && (q.undecodable >= MAX_UNDECODABLE || q.observer.exhausted()) {
                    // Nothing readable came: judged on what is known.
                    self.judge.counters.quic_undecodable += 1;
                    resolution = Some(self.judge.judge_quic_unread(&mut q.session, Cause::QuicUndecodable));
                }
                let Some(r) = resolution else {
                    let timeout = self.judge.settings.inspecting_timeout as u64 * NS;
                    // Initials that carried something are held; garbage is not.
                    let len = u.frame().len();
                    let mut hold = from_client && seen.initials > 0 && q.held.len() < MAX_HELD;
                    if hold && self.quic_held_bytes + len > HELD_BYTES {
                        self.judge.counters.quic_hold_full += 1;
                        hold = false;
                    }
                    if hold {
                        q.held.push(u.frame().to_vec());
                        self.quic_held_bytes += len;
                    }
                    self.quic.touch(id, now, timeout);
                    return if hold { Verdict::Drop(DropReason::QuicHeld) } else { Verdict::Forward };
                };
                let action = r.action;
                // What was held goes on ahead of this datagram if the flow passes
                // (toward the server: a decision comes on a client datagram).
                let held = std::mem::take(&mut q.held);
                self.quic_held_bytes -= held.iter().map(Vec::len).sum::<usize>();
                if action == FinalAction::DoNotDecrypt && from_client {
                    out.released.extend(held);
                } else {
                    self.judge.counters.blocked_packets += held.len() as u64;
                }
                if action == FinalAction::DoNotDecrypt
                    && self.judge.full_handshake
                    && q.session.facts.server_hello.is_none()
                {
                    // Forwarded; the event waits for the server's Initial.
                    if let QuicState::Inspecting(q) = std::mem::replace(state, QuicState::Bypass(Vec::new())) {
                        *state = QuicState::Observing(q, Box::new(r), now);
                    }
                    self.quic.touch(id, now, self.judge.settings.inspecting_timeout as u64 * NS);
                    return Verdict::Forward;
                }
                let next = match action {
                    // Decided at once (events at the decision): the IDs so far.
                    FinalAction::DoNotDecrypt => QuicState::Bypass(q.observer.connection_ids().to_vec()),
                    _ => QuicState::Blocked,
                };
                if let QuicState::Inspecting(q) = std::mem::replace(state, next) {
                    self.judge.emit(q.session, r, now, now, out);
                }
                self.quic.touch(id, now, decided_ns);
                match action {
                    FinalAction::DoNotDecrypt => Verdict::Forward,
                    FinalAction::Block => {
                        self.judge.counters.blocked_packets += 1;
                        Verdict::Drop(DropReason::Policy)
                    }
                    FinalAction::BlockWithReset => {
                        self.judge.counters.blocked_packets += 1;
                        if from_client {
                            self.judge.counters.resets += 1;
                            out.resets.push(Reset { toward_sender: true, frame: build_port_unreachable(u) });
                        }
                        Verdict::Drop(DropReason::Policy)
                    }
                }
            }
        }
    }

    /// Expires idle QUIC flows; sessions still being read get their event.
    pub(super) fn expire_quic(&mut self, now: u64, budget: usize, out: &mut Output) {
        let mut ended = Vec::new();
        self.quic.expire(now, budget, |_, state| ended.push(state));
        for state in ended {
            self.quic_held_bytes -= held_bytes(&state);
            match state {
                QuicState::Inspecting(mut q) => {
                    let r = self.judge.judge_quic_unread(&mut q.session, Cause::FlowEnded(FlowEnd::Idle));
                    self.judge.emit(q.session, r, now, now, out);
                }
                QuicState::Observing(q, r, at) => self.judge.emit(q.session, *r, at, now, out),
                _ => {}
            }
        }
    }

    /// At the end: every QUIC session still being read gets its event.
    pub(super) fn finish_quic(&mut self, now: u64, why: FlowEnd, out: &mut Output) {
        let mut all = Vec::new();
        self.quic.drain(|_, state| all.push(state));
        for state in all {
            self.quic_held_bytes -= held_bytes(&state);
            match state {
                QuicState::Inspecting(mut q) => {
                    let r = self.judge.judge_quic_unread(&mut q.session, Cause::FlowEnded(why));
                    self.judge.emit(q.session, r, now, now, out);
                }
                QuicState::Observing(q, r, at) => self.judge.emit(q.session, *r, at, now, out),
                _ => {}
            }
        }
    }
}

impl super::Judge {
    fn quic_session(&mut self, u: &UdpFrame, from_lo: bool, _key: FlowKey) -> QuicSession {
        let flow = FlowFacts {
            src_ip: to_ip(&u.src, u.ipv6),
            src_port: u.src_port,
            dest_ip: to_ip(&u.dst, u.ipv6),
            dest_port: u.dst_port,
            vlan: u.vlan,
            ingress: String::new(),
        };
        self.next_flow += 1;
        let id = (self.worker << 56) | self.next_flow;
        let limits = QuicLimits { max_crypto: self.settings.handshake_buffer as usize, ..QuicLimits::default() };
        // The session's own TLS observer is the QUIC observer's; this one only carries the event.
        let carrier = HandshakeObserver::new(ObserverLimits::default());
        let mut facts = SessionFacts::new(flow);
        // The version the client's first long header names (the event is a quic one whatever follows).
        facts.quic_version = u.payload().get(1..5).map(|v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
        let mut session = Session::new(id, self.policy.clone(), carrier, facts, from_lo);
        session.saw_tls();
        QuicSession {
            observer: QuicObserver::new(limits),
            session: Box::new(session),
            undecodable: 0,
            held: Vec::new(),
        }
    }

    /// The decision at a QUIC ClientHello: nothing later is in clear, so
    /// this is the last phase.
    fn judge_quic(&mut self, s: &mut Session) -> Resolution {
        let d = match s.policy.evaluate(&s.facts, true) {
            Evaluation::Decided(d) => d,
            Evaluation::Pending { .. } => return self.default_resolution(s, Cause::DefaultAction),
        };
        if d.action.is_decrypt() {
            let rule = d.rule;
            let mut r = self.undecryptable(s, Undecryptable::Quic, Some(d.action), rule);
            r.monitors = d.monitor_rules;
            return r;
        }
        decided(d, None)
    }

    /// No ClientHello could be read: the flow conditions judge it.
    fn judge_quic_unread(&mut self, s: &mut Session, cause: Cause) -> Resolution {
        let mut r = self.judged_on_known(s, cause);
        if r.asked.is_decrypt() {
            r.action = s.policy.undecryptable(Undecryptable::Quic);
        }
        r.tls = true;
        r
    }
}
