//! The inspector: per worker, it turns each TCP segment into a verdict
//! (forward or drop), watching TLS handshakes on flows it has not decided yet,
//! evaluating the policy phase by phase, and producing session events and the
//! TCP resets of block-with-reset. Sans-IO: bytes and a time in, a verdict,
//! events and frames out; the worker moves the mbufs.

use std::sync::Arc;

use tlsgate_config::facts::{cipher_suite_name, FlowFacts, SessionFacts, TlsVersion};
use tlsgate_config::policy::{Action, Decision, Evaluation, FinalAction, Policy, Undecryptable};
use tlsgate_config::{FlowSettings, Midstream, SlowPathSettings, SlowWhenFull, WhenFull};

use crate::escalate::{Escalation, ProbeRequest, SlowUpdate, TcpSeen, TcpSideSeen};
use crate::event::SessionEvent;
use crate::flow::{FlowId, FlowKey, FlowTable};
use crate::identity::{ExclusionCache, ExclusionReason, ServerIdentity, ServerIdentityCache, ServerKey};
use crate::packet::{tcp_flags, to_ip, TcpFrame, TcpOptions};
use crate::tls::certificate::certificate_facts;
use crate::tls::status::CertVerifier;
use crate::tls::{Direction, HandshakeObserver, ObserverEvent, ObserverLimits};

/// What happens to the packet just inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on.
    Forward,
    /// Drop it, for this reason.
    Drop(DropCause),
    /// Hand it to slow-path lcore n: the flow is being decrypted there.
    Escalate(u8),
}

/// Why the inspector dropped a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropCause {
    /// The flow is blocked by policy.
    Blocked,
    /// Held back while the ClientHello is incomplete: the slow path may have
    /// to answer it; the worker sends a copy on if it does not.
    Held,
    /// A new flow found the table full and `flows.when_full = "drop"`.
    TableFull,
    /// A mid-stream flow and `flows.midstream = "block"`.
    Midstream,
}

/// A TCP reset to send, made by block-with-reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reset {
    /// True: toward the sender of the packet that triggered it (out of the
    /// port it came in by); false: toward its receiver (out of the other port).
    pub toward_sender: bool,
    /// The whole Ethernet frame.
    pub frame: Vec<u8>,
}

/// What one packet produced besides its verdict.
#[derive(Debug, Default)]
pub struct Output {
    /// Session events, in order.
    pub events: Vec<SessionEvent>,
    /// Resets to send.
    pub resets: Vec<Reset>,
    /// Flows to hand to the slow path (lcore index, context), before the
    /// packet whose verdict is [`Verdict::Escalate`].
    pub escalations: Vec<(u8, Box<Escalation>)>,
    /// Servers the slow path should probe for their certificate.
    pub probes: Vec<ProbeRequest>,
    /// Held-back client frames to send on toward the server, in order (the
    /// ClientHello turned out not to need answering by the slow path).
    pub released: Vec<Vec<u8>>,
}

/// The inspector's counters (plain; the worker publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InspectCounters {
    /// Frames that are not TCP over IP (forwarded untouched).
    pub not_tcp: u64,
    /// Flows tracked from their SYN.
    pub flows: u64,
    /// New flows that found the table full.
    pub table_full: u64,
    /// Flows first seen mid-stream.
    pub midstream: u64,
    /// Sessions decided (one event each).
    pub sessions: u64,
    /// Flows whose first bytes were not TLS.
    pub not_tls: u64,
    /// Handshakes that could not be parsed.
    pub malformed: u64,
    /// Handshakes larger than the buffer.
    pub overflow: u64,
    /// Packets dropped by block verdicts.
    pub blocked_packets: u64,
    /// Resets made.
    pub resets: u64,
    /// Flows expired idle.
    pub expired: u64,
    /// Sessions whose verdict was do-not-decrypt.
    pub verdict_do_not_decrypt: u64,
    /// Sessions whose verdict was block.
    pub verdict_block: u64,
    /// Sessions whose verdict was block-with-reset.
    pub verdict_block_with_reset: u64,
    /// Sessions the policy asked to decrypt.
    pub decrypt_asked: u64,
    /// Sessions handed to the slow path to decrypt.
    pub escalated: u64,
    /// Decrypt decisions the slow path could not take (its ring full):
    /// carried out as `slowpath.when_full` says.
    pub escalation_refused: u64,
    /// Sessions handled at the ClientHello by the exclusion cache.
    pub excluded: u64,
}

impl InspectCounters {
    /// Number of counters.
    pub const FIELDS: usize = 18;
    /// Their names, in `to_array` order.
    pub const NAMES: [&'static str; Self::FIELDS] = [
        "not_tcp",
        "flows",
        "table_full",
        "midstream",
        "sessions",
        "not_tls",
        "malformed",
        "overflow",
        "blocked_packets",
        "resets",
        "expired",
        "verdict_do_not_decrypt",
        "verdict_block",
        "verdict_block_with_reset",
        "decrypt_asked",
        "escalated",
        "escalation_refused",
        "excluded",
    ];

    /// As an array, in `NAMES` order.
    pub fn to_array(&self) -> [u64; Self::FIELDS] {
        [
            self.not_tcp,
            self.flows,
            self.table_full,
            self.midstream,
            self.sessions,
            self.not_tls,
            self.malformed,
            self.overflow,
            self.blocked_packets,
            self.resets,
            self.expired,
            self.verdict_do_not_decrypt,
            self.verdict_block,
            self.verdict_block_with_reset,
            self.decrypt_asked,
            self.escalated,
            self.escalation_refused,
            self.excluded,
        ]
    }

    /// From an array in `NAMES` order.
    pub fn from_array(a: [u64; Self::FIELDS]) -> Self {
        InspectCounters {
            not_tcp: a[0],
            flows: a[1],
            table_full: a[2],
            midstream: a[3],
            sessions: a[4],
            not_tls: a[5],
            malformed: a[6],
            overflow: a[7],
            blocked_packets: a[8],
            resets: a[9],
            expired: a[10],
            verdict_do_not_decrypt: a[11],
            verdict_block: a[12],
            verdict_block_with_reset: a[13],
            decrypt_asked: a[14],
            escalated: a[15],
            escalation_refused: a[16],
            excluded: a[17],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FlowState {
    Inspecting,
    Bypass,
    Blocked,
    /// Being decrypted on slow-path lcore n.
    Intercepted(u8),
}

/// A tracked flow. Decided flows keep only this (no session): 16 bytes here,
/// plus the key and timers in the table's slot (72 bytes in all) and the
/// index entry.
struct FlowEntry {
    state: FlowState,
    client_is_lo: bool,
    /// FIN seen from lo (bit 0) and hi (bit 1).
    fins: u8,
    session: Option<Box<Session>>,
}

/// A handshake being watched.
struct Session {
    flow_id: u64,
    /// The policy in force when the session began: a reload applies to
    /// sessions that begin after it, and rule numbers stay meaningful.
    policy: Arc<Policy>,
    observer: HandshakeObserver,
    facts: SessionFacts,
    alerts: Vec<(&'static str, u8, u8)>,
    /// A decrypt decision waiting for the server's facts (undecryptable checks).
    decrypt: Option<Decision>,
    monitors: Vec<usize>,
    tls_seen: bool,
    bytes_seen: bool,
    /// Where the server facts the decision used came from.
    server_identity: ServerIdentitySource,
    /// A decrypt decision came only after the ClientHello.
    decided_late: bool,
    /// What the wire showed of each side's TCP (client, server), kept while
    /// a slow path could take the flow over.
    tcp: [TcpSideSeen; 2],
    /// Why a decrypt decision was not handed to the slow path.
    not_taken_over: Option<String>,
    /// The client's link-layer header and the port its packets enter by,
    /// kept while a slow path could probe the server.
    client_l2: Option<(Vec<u8>, usize)>,
    /// A decrypt decision came too late for want of the server's certificate,
    /// which no handshake showed: the slow path should probe the server.
    probe_wanted: bool,
    /// Client frames held back while the ClientHello is incomplete (a
    /// ClientHello with post-quantum key shares spans two segments), so that
    /// a decrypting slow path can still answer it; bytes held.
    held: Vec<Vec<u8>>,
    held_bytes: usize,
}

impl Session {
    /// A session that has seen nothing yet.
    fn new(flow_id: u64, policy: Arc<Policy>, observer: HandshakeObserver, facts: SessionFacts) -> Session {
        Session {
            flow_id,
            policy,
            observer,
            facts,
            alerts: Vec::new(),
            decrypt: None,
            monitors: Vec::new(),
            tls_seen: false,
            bytes_seen: false,
            server_identity: ServerIdentitySource::Unknown,
            decided_late: false,
            tcp: Default::default(),
            not_taken_over: None,
            client_l2: None,
            probe_wanted: false,
            held: Vec::new(),
            held_bytes: 0,
        }
    }
}

/// Where a session's server facts came from, for the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerIdentitySource {
    /// Not known when the session was decided.
    Unknown,
    /// From the server identity cache, at the ClientHello.
    Cache,
    /// From this session's own handshake.
    Handshake,
}

impl ServerIdentitySource {
    /// The name in events.
    pub fn name(self) -> &'static str {
        match self {
            ServerIdentitySource::Unknown => "unknown",
            ServerIdentitySource::Cache => "cache",
            ServerIdentitySource::Handshake => "handshake",
        }
    }
}

/// The resolution of a session: what to do with the flow, and the event.
struct Resolution {
    action: FinalAction,
    expected: &'static str,
    rule: Option<usize>,
    reason: String,
    monitors: Vec<usize>,
    missing: Vec<&'static str>,
    event_type: &'static str,
}

/// Per-worker inspection state.
pub struct Inspector {
    table: FlowTable<FlowEntry>,
    certificates: CertificateCache,
    /// What servers' certificates were, learned from earlier handshakes
    /// (TLS <= 1.2 shows the certificate), so that a session's server facts
    /// are known at its ClientHello. Per worker, like everything here: a
    /// server seen by another worker is learned again.
    identities: Option<ServerIdentityCache>,
    policy: Arc<Policy>,
    verifier: CertVerifier,
    settings: FlowSettings,
    port_names: Arc<[String]>,
    worker: u64,
    next_flow: u64,
    slow: Option<SlowPlan>,
    /// Counters.
    pub counters: InspectCounters,
}

const NS: u64 = 1_000_000_000;

/// Cipher suites the decrypting path can terminate (those of rustls with
/// aws-lc-rs: AEAD suites, TLS 1.2 with ECDHE, and TLS 1.3); a session that
/// negotiates another is `unsupported_cipher`.
const DECRYPTABLE_SUITES: [u16; 9] = [0x1301, 0x1302, 0x1303, 0xc02b, 0xc02c, 0xc02f, 0xc030, 0xcca8, 0xcca9];
/// The slow path as a worker sees it.
struct SlowPlan {
    lcores: usize,
    when_full: SlowWhenFull,
    /// Servers and SNIs recently found not decryptable.
    exclusions: ExclusionCache,
    /// Servers probed recently (when), so that one is probed once per TTL.
    probed: std::collections::HashMap<ServerKey, u64, ahash::RandomState>,
}

/// Servers a worker remembers having asked the slow path to probe.
const PROBED_CAPACITY: usize = 4096;
/// How long before the same server is probed again.
const PROBE_AGAIN_NS: u64 = 60 * NS;

/// Slots the expiry hand looks at per call of [`Inspector::expire`].
const EXPIRE_BUDGET: usize = 64;

impl Inspector {
    /// An inspector for worker `worker`.
    pub fn new(
        worker: usize,
        policy: Arc<Policy>,
        settings: &FlowSettings,
        port_names: Arc<[String]>,
    ) -> Result<Inspector, String> {
        let verifier = CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)?;
        Ok(Inspector {
            table: FlowTable::new(settings.capacity as usize),
            certificates: CertificateCache::default(),
            identities: (settings.server_cache > 0).then(|| {
                ServerIdentityCache::new(settings.server_cache as usize, settings.server_cache_ttl as u64 * NS)
            }),
            policy,
            verifier,
            settings: settings.clone(),
            port_names,
            worker: worker as u64,
            next_flow: 0,
            slow: None,
            counters: InspectCounters::default(),
        })
    }

    /// Decrypt decisions are handed to `lcores` slow-path lcores (none: they
    /// are carried out as do-not-decrypt, and the events say so).
    pub fn with_slow_path(mut self, lcores: usize, settings: &SlowPathSettings) -> Inspector {
        self.slow = (lcores > 0).then(|| SlowPlan {
            lcores,
            when_full: settings.when_full,
            exclusions: ExclusionCache::new(settings.exclusion_cache as usize, settings.exclusion_ttl as u64 * NS),
            probed: Default::default(),
        });
        self
    }

    /// Applies what the slow path says: a session it ended (later packets of
    /// the flow are dropped until it expires), what it learned of a server.
    pub fn on_slow_update(&mut self, update: SlowUpdate, now_ns: u64) {
        match update {
            SlowUpdate::Ended { key } => {
                if let Some(id) = self.table.find(&key) {
                    if let Some(e) = self.table.get_mut(id) {
                        e.state = FlowState::Blocked;
                    }
                    self.table.touch(id, now_ns, self.settings.closed_timeout as u64 * NS);
                }
            }
            SlowUpdate::Refused { key, action } => {
                if let Some(id) = self.table.find(&key) {
                    if let Some(e) = self.table.get_mut(id) {
                        e.state =
                            if action == FinalAction::DoNotDecrypt { FlowState::Bypass } else { FlowState::Blocked };
                    }
                }
            }
            SlowUpdate::Probe { key, lcore } => {
                // The probe's packets go to its lcore; the table's timeouts end it.
                let entry =
                    FlowEntry { state: FlowState::Intercepted(lcore), client_is_lo: true, fins: 0, session: None };
                let _ = self.table.insert(key, entry, now_ns, self.settings.inspecting_timeout as u64 * NS);
            }
            SlowUpdate::Learned { key, identity } => {
                if let Some(cache) = &mut self.identities {
                    cache.learn(key, identity);
                }
            }
            SlowUpdate::Excluded { key, action, reason } => {
                if let Some(slow) = &mut self.slow {
                    slow.exclusions.exclude(key, action, reason, now_ns);
                }
            }
        }
    }

    /// The worker could not hand `esc` to the slow path (its ring was full):
    /// the flow gets `slowpath.when_full`, the session its event. Returns the
    /// verdict for the packet that escalated it.
    pub fn escalation_refused(&mut self, esc: Box<Escalation>, now_ns: u64, out: &mut Output) -> Verdict {
        self.counters.escalation_refused += 1;
        let action = match self.slow.as_ref().map_or(SlowWhenFull::DoNotDecrypt, |s| s.when_full) {
            SlowWhenFull::DoNotDecrypt => FinalAction::DoNotDecrypt,
            SlowWhenFull::Block => FinalAction::Block,
        };
        let Escalation { key, flow_id, facts, policy, decision, server_identity, held, .. } = *esc;
        let rule_name = decision.rule.map(|i| policy.rules()[i].name.clone()).unwrap_or_default();
        let expected = decision.action.name();
        let reason = format!(
            "rule {rule_name:?} asks for {expected}, but the slow path's ring is full (slowpath.when_full = {})",
            action.name()
        );
        if let Some(id) = self.table.find(&key) {
            if let Some(e) = self.table.get_mut(id) {
                e.state = if action == FinalAction::Block { FlowState::Blocked } else { FlowState::Bypass };
            }
        }
        let r = Resolution {
            action,
            expected,
            rule: decision.rule,
            reason,
            monitors: decision.monitor_rules,
            missing: decision.missing_facts,
            event_type: "tls",
        };
        let mut s = Session::new(flow_id, policy, HandshakeObserver::new(ObserverLimits::default()), facts);
        (s.tls_seen, s.bytes_seen) = (true, true);
        if server_identity == "cache" {
            s.server_identity = ServerIdentitySource::Cache;
        }
        // The ClientHello reaches the server after all (out of order behind the
        // segment that completed it, which TCP puts right).
        out.released.extend(held);
        self.emit(Box::new(s), r, now_ns, out);
        match action {
            FinalAction::Block => {
                self.counters.blocked_packets += 1;
                Verdict::Drop(DropCause::Blocked)
            }
            _ => Verdict::Forward,
        }
    }

    /// Puts a new policy in force for sessions that begin from now on; flows
    /// keep the verdicts they have, and sessions being inspected finish under
    /// the policy they began with. The trust store is rebuilt.
    pub fn set_policy(&mut self, policy: Arc<Policy>) -> Result<(), String> {
        self.verifier = CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)?;
        self.policy = policy;
        Ok(())
    }

    /// Flows tracked now.
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    /// Inspects one frame that arrived on port index `ingress` at `now_ns`.
    pub fn on_packet(&mut self, frame: &[u8], ingress: usize, now_ns: u64, out: &mut Output) -> Verdict {
        let Some(t) = TcpFrame::parse(frame) else {
            self.counters.not_tcp += 1;
            return Verdict::Forward;
        };
        let (key, from_lo) = FlowKey::of(&t);
        let mut found = self.table.find(&key);
        if let Some(id) = found {
            if t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK) && self.is_over(id) {
                // A new connection on the same 5-tuple (port reuse): a new session.
                if let Some((k, e)) = self.table.remove(id) {
                    self.end_session(k, e, now_ns, "a new connection reused the flow's addresses and ports", out);
                }
                found = None;
            }
        }
        let id = match found {
            Some(id) => id,
            None => match self.new_flow(&t, key, from_lo, ingress, now_ns) {
                Ok(id) => id,
                Err(v) => return v,
            },
        };
        self.on_flow_packet(id, key, frame, &t, from_lo, ingress, now_ns, out)
    }

    /// Expires idle flows (a bounded number of slots per call); sessions cut
    /// short still get their event.
    pub fn expire(&mut self, now_ns: u64, out: &mut Output) {
        let mut ended = Vec::new();
        self.table.expire(now_ns, EXPIRE_BUDGET, |k, e| ended.push((k, e)));
        for (k, e) in ended {
            self.counters.expired += 1;
            self.end_session(k, e, now_ns, "the flow went idle before the handshake completed", out);
        }
    }

    /// At shutdown (or the end of a replayed capture, `why` says which):
    /// every undecided session gets its event.
    pub fn finish(&mut self, now_ns: u64, why: &str, out: &mut Output) {
        let mut all = Vec::new();
        self.table.drain(|k, e| all.push((k, e)));
        for (k, e) in all {
            self.end_session(k, e, now_ns, why, out);
        }
    }

    /// Whether a flow's connection is over as far as a new SYN is concerned:
    /// decided (a SYN cannot belong to a connection that got as far as a
    /// ClientHello) or closed by FIN from both sides.
    fn is_over(&mut self, id: FlowId) -> bool {
        self.table.get_mut(id).is_some_and(|e| e.state != FlowState::Inspecting || e.fins == 3)
    }

    fn new_flow(
        &mut self,
        t: &TcpFrame,
        key: FlowKey,
        from_lo: bool,
        ingress: usize,
        now: u64,
    ) -> Result<FlowId, Verdict> {
        let syn = t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK);
        if !syn {
            self.counters.midstream += 1;
            match self.settings.midstream {
                Midstream::Bypass => return Err(Verdict::Forward),
                Midstream::Block => return Err(Verdict::Drop(DropCause::Midstream)),
                Midstream::Inspect => {}
            }
        }
        // The client sent the SYN; mid-stream, guess the side with the higher port.
        let client_is_lo = if syn { from_lo } else { key.lo_port > key.hi_port };
        let session = self.new_session(t, key, client_is_lo, ingress);
        let entry = FlowEntry { state: FlowState::Inspecting, client_is_lo, fins: 0, session: Some(Box::new(session)) };
        match self.table.insert(key, entry, now, self.settings.inspecting_timeout as u64 * NS) {
            Ok(id) => {
                self.counters.flows += 1;
                Ok(id)
            }
            Err(_) => {
                self.counters.table_full += 1;
                match self.settings.when_full {
                    WhenFull::Bypass => Err(Verdict::Forward),
                    WhenFull::Drop => Err(Verdict::Drop(DropCause::TableFull)),
                }
            }
        }
    }

    fn new_session(&mut self, t: &TcpFrame, key: FlowKey, client_is_lo: bool, ingress: usize) -> Session {
        let (c_addr, c_port, s_addr, s_port) = if client_is_lo {
            (key.lo_addr, key.lo_port, key.hi_addr, key.hi_port)
        } else {
            (key.hi_addr, key.hi_port, key.lo_addr, key.lo_port)
        };
        // The client's packets enter by `ingress` if this one is the client's.
        let from_client = (t.src == c_addr && t.src_port == c_port) as usize;
        let client_port = if from_client == 1 { ingress } else { ingress ^ 1 };
        let flow = FlowFacts {
            src_ip: to_ip(&c_addr, t.ipv6),
            src_port: c_port,
            dest_ip: to_ip(&s_addr, t.ipv6),
            dest_port: s_port,
            vlan: t.vlan,
            ingress: self.port_names.get(client_port).cloned().unwrap_or_default(),
        };
        self.next_flow += 1;
        let mut observer = HandshakeObserver::new(ObserverLimits {
            max_buffer: self.settings.handshake_buffer as usize,
            defer_fingerprints: true,
        });
        if t.has(tcp_flags::SYN) {
            observer.set_initial_seq(Direction::ToServer, t.seq.wrapping_add(1));
        }
        Session::new((self.worker << 56) | self.next_flow, self.policy.clone(), observer, SessionFacts::new(flow))
    }

    #[allow(clippy::too_many_arguments)]
    fn on_flow_packet(
        &mut self,
        id: FlowId,
        key: FlowKey,
        frame: &[u8],
        t: &TcpFrame,
        from_lo: bool,
        ingress: usize,
        now: u64,
        out: &mut Output,
    ) -> Verdict {
        let Some(entry) = self.table.get_mut(id) else { return Verdict::Forward };
        if t.has(tcp_flags::FIN) {
            entry.fins |= if from_lo { 1 } else { 2 };
        }
        let closed = t.has(tcp_flags::RST) || entry.fins == 3;
        let state = entry.state;
        let timeout = |s: &FlowSettings, st: FlowState| {
            if closed {
                s.closed_timeout
            } else if st == FlowState::Inspecting {
                s.inspecting_timeout
            } else {
                s.decided_timeout
            }
        };
        match state {
            FlowState::Bypass => {
                let to = timeout(&self.settings, state);
                self.table.touch(id, now, to as u64 * NS);
                Verdict::Forward
            }
            FlowState::Blocked => {
                let to = timeout(&self.settings, state);
                self.table.touch(id, now, to as u64 * NS);
                self.counters.blocked_packets += 1;
                Verdict::Drop(DropCause::Blocked)
            }
            FlowState::Intercepted(lcore) => {
                // The slow path owns the connection now, FIN and RST included:
                // it says when the session is over.
                self.table.touch(id, now, self.settings.decided_timeout as u64 * NS);
                Verdict::Escalate(lcore)
            }
            FlowState::Inspecting => {
                let resolution = {
                    let Some(entry) = self.table.get_mut(id) else { return Verdict::Forward };
                    let entry_client_is_lo = entry.client_is_lo;
                    let from_client = from_lo == entry_client_is_lo;
                    let Some(mut s) = entry.session.take() else { return Verdict::Forward };
                    let dir = if from_client { Direction::ToServer } else { Direction::ToClient };
                    if !from_client && t.has(tcp_flags::SYN) {
                        s.observer.set_initial_seq(Direction::ToClient, t.seq.wrapping_add(1));
                    }
                    if self.slow.is_some() {
                        s.tcp[usize::from(!from_client)].saw(frame, t, now);
                        if from_client && s.client_l2.is_none() {
                            s.client_l2 = Some((frame[..t.l3].to_vec(), ingress));
                        }
                    }
                    if t.payload_len() > 0 {
                        s.bytes_seen = true;
                        s.observer.on_segment(dir, t.seq, &frame[t.payload..t.end]);
                    }
                    let r = self.step(&mut s, now);
                    // A client segment of a ClientHello not yet complete, where a
                    // decryption could follow: held back, so that the slow path can
                    // still answer the whole ClientHello itself.
                    let len = t.end - t.l3;
                    if r.is_none()
                        && !closed
                        && from_client
                        && t.payload_len() > 0
                        && s.facts.client_hello.is_none()
                        && self.slow.is_some()
                        && s.policy.may_decrypt()
                        && s.held_bytes + len <= self.settings.handshake_buffer as usize
                    {
                        s.held.push(frame.to_vec());
                        s.held_bytes += len;
                        if let Some(entry) = self.table.get_mut(id) {
                            entry.session = Some(s);
                        }
                        let to = timeout(&self.settings, FlowState::Inspecting);
                        self.table.touch(id, now, to as u64 * NS);
                        return Verdict::Drop(DropCause::Held);
                    }
                    let r = match r {
                        None if s.decrypt.is_some() && s.not_taken_over.is_none() && !closed => {
                            match self.take_over(&mut s, from_client, t, now) {
                                TakeOver::Refused(why) => {
                                    s.not_taken_over = Some(why);
                                    None
                                }
                                TakeOver::Excluded(r) => Some(r),
                                TakeOver::Escalate(lcore) => {
                                    let client_port = if from_client { ingress } else { ingress ^ 1 };
                                    let esc = self.escalation(key, entry_client_is_lo, client_port, s, t, now);
                                    self.counters.sessions += 1;
                                    self.counters.decrypt_asked += 1;
                                    self.counters.escalated += 1;
                                    out.escalations.push((lcore, esc));
                                    if let Some(entry) = self.table.get_mut(id) {
                                        entry.state = FlowState::Intercepted(lcore);
                                    }
                                    self.table.touch(id, now, self.settings.decided_timeout as u64 * NS);
                                    return Verdict::Escalate(lcore);
                                }
                            }
                        }
                        r => r,
                    };
                    let r = match r {
                        Some(r) => Some(r),
                        None if closed => {
                            Some(self.final_resolution(&mut s, "the flow closed before the handshake completed"))
                        }
                        None => None,
                    };
                    // Not taken over: what was held goes on to the server, this
                    // segment after it, unless the flow is blocked.
                    let mut sent_after_held = false;
                    let settled = r.is_some() || s.facts.client_hello.is_some() || closed;
                    if !s.held.is_empty() && settled {
                        let blocked = r.as_ref().is_some_and(|r| r.action != FinalAction::DoNotDecrypt);
                        if !blocked {
                            out.released.append(&mut s.held);
                            if from_client {
                                out.released.push(frame.to_vec());
                                sent_after_held = true;
                            }
                        }
                        s.held.clear();
                        s.held_bytes = 0;
                    }
                    (r, s, sent_after_held)
                };
                let (resolution, s, sent_after_held) = resolution;
                let forward = if sent_after_held { Verdict::Drop(DropCause::Held) } else { Verdict::Forward };
                match resolution {
                    None => {
                        if let Some(entry) = self.table.get_mut(id) {
                            entry.session = Some(s);
                        }
                        let to = timeout(&self.settings, FlowState::Inspecting);
                        self.table.touch(id, now, to as u64 * NS);
                        forward
                    }
                    Some(r) => {
                        let action = r.action;
                        self.emit(s, r, now, out);
                        let new_state = match action {
                            FinalAction::DoNotDecrypt => FlowState::Bypass,
                            FinalAction::Block | FinalAction::BlockWithReset => FlowState::Blocked,
                        };
                        if let Some(entry) = self.table.get_mut(id) {
                            entry.state = new_state;
                        }
                        let to = timeout(&self.settings, new_state);
                        self.table.touch(id, now, to as u64 * NS);
                        match action {
                            FinalAction::DoNotDecrypt => forward,
                            FinalAction::Block => {
                                self.counters.blocked_packets += 1;
                                Verdict::Drop(DropCause::Blocked)
                            }
                            FinalAction::BlockWithReset => {
                                self.counters.blocked_packets += 1;
                                self.counters.resets += 2;
                                out.resets.push(Reset { toward_sender: false, frame: build_reset(frame, t, false) });
                                out.resets.push(Reset { toward_sender: true, frame: build_reset(frame, t, true) });
                                Verdict::Drop(DropCause::Blocked)
                            }
                        }
                    }
                }
            }
        }
    }

    /// Drains the observer's events into facts; returns a resolution when the
    /// session is decided.
    fn step(&mut self, s: &mut Session, now: u64) -> Option<Resolution> {
        // The server's flight is judged once all of it that this segment
        // carried is read: a CertificateRequest follows the Certificate.
        let mut server_ready = false;
        while let Some(ev) = s.observer.poll_event() {
            match ev {
                ObserverEvent::ClientHello(ch) => {
                    s.tls_seen = true;
                    let first = s.facts.client_hello.is_none();
                    let sslv2 = ch.sslv2;
                    s.facts.client_hello = Some(ch);
                    if sslv2 {
                        return Some(self.undecryptable(
                            s,
                            Undecryptable::Sslv2,
                            "n/a",
                            None,
                            "SSLv2 ClientHello: the session cannot be evaluated".into(),
                        ));
                    }
                    if first {
                        self.recall_server(s, now);
                        if let Some(r) = self.evaluate(s, false) {
                            return Some(r);
                        }
                    }
                }
                ObserverEvent::HelloRetryRequest => {}
                ObserverEvent::ServerHello(sh) => {
                    s.tls_seen = true;
                    let no_certificate_in_clear = sh.version == Some(TlsVersion::Tls13) || sh.resumed;
                    s.facts.server_hello = Some(sh);
                    if no_certificate_in_clear {
                        return Some(self.server_phase_done(s));
                    }
                }
                ObserverEvent::Certificate { chain } => {
                    if let Some(leaf) = chain.first() {
                        s.facts.certificate = self.certificates.facts(leaf);
                        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
                        s.facts.cert_status = Some(self.verifier.status(&chain, sni.as_deref(), (now / NS) as i64));
                        // A decision already taken on cached facts keeps saying so.
                        if s.server_identity == ServerIdentitySource::Unknown {
                            s.server_identity = ServerIdentitySource::Handshake;
                        }
                        self.learn_server(s, chain, now);
                    }
                    server_ready |= s.facts.server_hello.is_some();
                }
                ObserverEvent::CertificateRequest => s.facts.client_cert_requested = true,
                ObserverEvent::Alert { from, level, description } => {
                    s.alerts.push((side_name(from), level, description));
                }
                ObserverEvent::HandshakeDone(Direction::ToClient) => {
                    if s.facts.client_hello.is_some() {
                        return Some(self.server_phase_done(s));
                    }
                }
                ObserverEvent::HandshakeDone(Direction::ToServer) => {}
                ObserverEvent::NotTls(from) => {
                    if !s.tls_seen {
                        self.counters.not_tls += 1;
                        return Some(
                            self.not_tls(
                                s,
                                format!("not TLS: the {} spoke first in another protocol", side_name(from)),
                            ),
                        );
                    }
                }
                ObserverEvent::Malformed { from, reason } => {
                    self.counters.malformed += 1;
                    let why = format!("malformed TLS from the {}: {reason}", side_name(from));
                    return Some(if s.tls_seen { self.handshake_failed(s, why) } else { self.not_tls(s, why) });
                }
                ObserverEvent::Overflow(from) => {
                    self.counters.overflow += 1;
                    let why = format!(
                        "the {}'s handshake exceeds the {}-byte buffer (flows.handshake_buffer)",
                        side_name(from),
                        self.settings.handshake_buffer
                    );
                    return Some(self.handshake_failed(s, why));
                }
            }
        }
        server_ready.then(|| self.server_phase_done(s))
    }

    /// At the ClientHello: the server's certificate facts from the server
    /// identity cache, if an earlier handshake showed them. The status is
    /// judged again at this packet's time.
    fn recall_server(&mut self, s: &mut Session, now: u64) {
        let Some(cache) = &mut self.identities else { return };
        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
        let key = ServerKey::new(s.facts.flow.dest_ip, s.facts.flow.dest_port, sni.as_deref());
        let Some(known) = cache.get(&key, now) else { return };
        if known.certificate.is_none() {
            return;
        }
        let (certificate, chain) = (known.certificate.clone(), known.chain.clone());
        s.facts.certificate = certificate;
        s.facts.cert_status = Some(self.verifier.status(&chain, sni.as_deref(), (now / NS) as i64));
        s.server_identity = ServerIdentitySource::Cache;
    }

    /// After a certificate was seen: what the cache remembers of this server.
    fn learn_server(&mut self, s: &Session, chain: Vec<Vec<u8>>, now: u64) {
        let Some(cache) = &mut self.identities else { return };
        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.as_deref());
        let key = ServerKey::new(s.facts.flow.dest_ip, s.facts.flow.dest_port, sni);
        // Servers show the same certificate session after session: nothing to learn.
        if cache.get(&key, now).is_some_and(|known| known.chain.first() == chain.first()) {
            return;
        }
        cache.learn(
            key,
            ServerIdentity {
                certificate: s.facts.certificate.clone(),
                chain,
                cert_status: s.facts.cert_status,
                version: s.facts.server_hello.as_ref().and_then(|h| h.version),
                cipher_suite: s.facts.server_hello.as_ref().map(|h| h.cipher_suite),
                client_cert_requested: s.facts.client_cert_requested,
                learned_at_ns: now,
            },
        );
    }

    /// Evaluates the policy; `None` while it waits for a later phase.
    fn evaluate(&mut self, s: &mut Session, last: bool) -> Option<Resolution> {
        match s.policy.evaluate(&s.facts, last) {
            Evaluation::Pending { monitor_rules, .. } => {
                s.monitors = monitor_rules;
                None
            }
            Evaluation::Decided(d) => match d.action {
                Action::DecryptKnownKey { .. } | Action::DecryptResign { .. } => {
                    if last {
                        s.decided_late = true;
                        Some(self.carry_out_decrypt(s, d))
                    } else {
                        s.decrypt = Some(d);
                        None
                    }
                }
                _ => Some(Self::decided(&s.policy, d, String::new())),
            },
        }
    }

    /// The server's side of the handshake is as visible as it will be.
    fn server_phase_done(&mut self, s: &mut Session) -> Resolution {
        if let Some(d) = s.decrypt.take() {
            return self.carry_out_decrypt(s, d);
        }
        match self.evaluate(s, true) {
            Some(r) => r,
            None => self.default_resolution(s, "no rule matched: default action".into()),
        }
    }

    /// A decrypt decision, carried out as well as this build can.
    fn carry_out_decrypt(&mut self, s: &mut Session, d: Decision) -> Resolution {
        let expected = d.action.name();
        let rule_name = d.rule.map(|i| s.policy.rules()[i].name.clone()).unwrap_or_default();
        let sh = s.facts.server_hello.as_ref();
        let reason = if s.facts.client_cert_requested {
            Some(Undecryptable::ClientAuth)
        } else if sh.is_some_and(|h| h.compression != 0) {
            Some(Undecryptable::Compressed)
        } else if sh.is_some_and(|h| cipher_suite_name(h.cipher_suite).is_none()) {
            Some(Undecryptable::UnknownCipher)
        } else if sh.is_some_and(|h| !DECRYPTABLE_SUITES.contains(&h.cipher_suite)) {
            Some(Undecryptable::UnsupportedCipher)
        } else if sh.is_some_and(|h| h.resumed) {
            // Resumed with keys from a session tlsgate did not terminate.
            Some(Undecryptable::SessionNotCached)
        } else {
            None
        };
        match reason {
            Some(u) => {
                let why = format!(
                    "rule {rule_name:?} asks for {expected}, but the session cannot be decrypted: {}",
                    u.name()
                );
                let mut r = self.undecryptable(s, u, expected, d.rule, why);
                r.monitors = d.monitor_rules;
                r
            }
            None => Resolution {
                action: FinalAction::DoNotDecrypt,
                expected,
                rule: d.rule,
                reason: if s.decided_late {
                    s.probe_wanted = s.facts.certificate.is_none();
                    format!(
                        "rule {rule_name:?} asks for {expected}, but it needs server facts: server identity unknown \
                         at the ClientHello, where a decryption has to begin (the server identity cache has learned \
                         it for later sessions where the certificate was visible)"
                    )
                } else if let Some(why) = &s.not_taken_over {
                    format!("rule {rule_name:?} asks for {expected}; carried out as do-not-decrypt: {why}")
                } else {
                    format!(
                        "rule {rule_name:?} asks for {expected}; carried out as do-not-decrypt: no decrypting slow path \
                         runs here ([slowpath] lcores is empty, or this is a replay)"
                    )
                },
                monitors: d.monitor_rules,
                missing: d.missing_facts,
                event_type: "tls",
            },
        }
    }

    /// A decrypt decision at the ClientHello: whether the slow path can take
    /// the flow over from this segment, or the exclusion cache says no.
    fn take_over(&mut self, s: &mut Session, from_client: bool, t: &TcpFrame, now: u64) -> TakeOver {
        let Some(slow) = &mut self.slow else {
            return TakeOver::Refused(
                "no decrypting slow path runs here ([slowpath] lcores is empty, or this is a replay)".into(),
            );
        };
        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.as_deref());
        let flow = &s.facts.flow;
        if let Some(ex) = slow.exclusions.lookup(flow.dest_ip, flow.dest_port, sni, now) {
            let (action, reason) = (ex.action, ex.reason);
            self.counters.excluded += 1;
            let Some(d) = s.decrypt.take() else { return TakeOver::Refused("no decision".into()) };
            let rule_name = d.rule.map(|i| s.policy.rules()[i].name.clone()).unwrap_or_default();
            let why = match reason {
                ExclusionReason::Undecryptable(u) => {
                    format!("an earlier session to it was undecryptable: {}", u.name())
                }
                ExclusionReason::ClientRejectedCertificate => {
                    "a client rejected the re-signed certificate (certificate pinning)".into()
                }
                ExclusionReason::CertificateChanged => {
                    "the server no longer presents its known key's certificate".into()
                }
            };
            return TakeOver::Excluded(Resolution {
                action,
                expected: d.action.name(),
                rule: d.rule,
                reason: format!(
                    "rule {rule_name:?} asks for {}, but the server is in the exclusion cache ({why}): {}",
                    d.action.name(),
                    action.name()
                ),
                monitors: d.monitor_rules,
                missing: d.missing_facts,
                event_type: "tls",
            });
        }
        if !from_client {
            return TakeOver::Refused("the decision came on a packet from the server".into());
        }
        if s.tcp[0].syn.is_none() || s.tcp[1].syn.is_none() {
            return TakeOver::Refused("the TCP handshake was not seen (a flow picked up mid-stream)".into());
        }
        let first_seq = s.held.first().and_then(|f| TcpFrame::parse(f)).map_or(t.seq, |h| h.seq);
        if s.observer.stream_start(Direction::ToServer) != Some(first_seq) {
            return TakeOver::Refused(
                "the ClientHello's first segment reached the server before tlsgate saw it (out of order)".into(),
            );
        }
        TakeOver::Escalate((s.flow_id % slow.lcores as u64) as u8)
    }

    /// The context the slow path takes the flow over with; the session moves into it.
    fn escalation(
        &mut self,
        key: FlowKey,
        client_is_lo: bool,
        client_port: usize,
        s: Box<Session>,
        t: &TcpFrame,
        now: u64,
    ) -> Box<Escalation> {
        let stream_start = s.observer.stream_start(Direction::ToServer).unwrap_or(t.seq);
        let Session { flow_id, policy, facts, decrypt, server_identity, tcp, held, .. } = *s;
        // `take_over` is only asked while a decision is pending.
        let decision = decrypt.unwrap_or_else(|| tlsgate_config::policy::Decision {
            rule: None,
            action: Action::DoNotDecrypt,
            monitor_rules: Vec::new(),
            missing_facts: Vec::new(),
        });
        Box::new(Escalation {
            key,
            worker: self.worker as usize,
            flow_id,
            client_is_lo,
            client_port,
            facts,
            policy,
            decision,
            server_identity: server_identity.name(),
            tcp: TcpSeen { client: tcp[0], server: tcp[1], client_seq: stream_start, server_seq: t.ack },
            held,
            at_ns: now,
        })
    }

    fn undecryptable(
        &self,
        s: &Session,
        u: Undecryptable,
        expected: &'static str,
        rule: Option<usize>,
        reason: String,
    ) -> Resolution {
        let action = s.policy.undecryptable(u);
        Resolution {
            action,
            expected: if expected == "n/a" { action.name() } else { expected },
            rule,
            reason: format!("{reason} (undecryptable.{} = {})", u.name(), action.name()),
            monitors: s.monitors.clone(),
            missing: Vec::new(),
            event_type: "tls",
        }
    }

    fn decided(policy: &Policy, d: Decision, extra: String) -> Resolution {
        let action = match d.action {
            Action::Block => FinalAction::Block,
            Action::BlockWithReset => FinalAction::BlockWithReset,
            _ => FinalAction::DoNotDecrypt,
        };
        let mut reason = match d.rule {
            Some(i) => format!("rule {:?} matched", policy.rules()[i].name),
            None => "no rule matched: default action".to_string(),
        };
        if !d.missing_facts.is_empty() {
            reason.push_str(&format!("; never seen, so not matched: {}", d.missing_facts.join(", ")));
        }
        if !extra.is_empty() {
            reason = format!("{extra}; {reason}");
        }
        Resolution {
            action,
            expected: d.action.name(),
            rule: d.rule,
            reason,
            monitors: d.monitor_rules,
            missing: d.missing_facts,
            event_type: "tls",
        }
    }

    fn default_resolution(&self, s: &Session, reason: String) -> Resolution {
        let action = s.policy.default_action();
        Resolution {
            action,
            expected: action.name(),
            rule: None,
            reason,
            monitors: s.monitors.clone(),
            missing: Vec::new(),
            event_type: "tls",
        }
    }

    /// A flow that is not TLS: the policy judges it on what is known (its
    /// flow conditions); a decrypt action cannot apply.
    fn not_tls(&mut self, s: &mut Session, why: String) -> Resolution {
        let mut r = self.handshake_failed(s, why);
        r.event_type = "flow";
        r
    }

    /// The handshake could not be followed to its end: the policy judges the
    /// session on what is known; a decrypt decision cannot be carried out.
    fn handshake_failed(&mut self, s: &mut Session, why: String) -> Resolution {
        let decision = match s.decrypt.take() {
            Some(d) => d,
            None => match s.policy.evaluate(&s.facts, true) {
                Evaluation::Decided(d) => d,
                Evaluation::Pending { .. } => return self.default_resolution(s, why),
            },
        };
        match decision.action {
            Action::DecryptKnownKey { .. } | Action::DecryptResign { .. } => {
                let e = decision.action.name();
                self.undecryptable(s, Undecryptable::HandshakeError, e, decision.rule, why)
            }
            _ => Self::decided(&s.policy, decision, why),
        }
    }

    /// The final word on a session whose flow ends (or stops being watched).
    fn final_resolution(&mut self, s: &mut Session, why: &str) -> Resolution {
        if !s.tls_seen && s.facts.client_hello.is_none() {
            let mut r = self.not_tls(s, why.to_string());
            r.reason = why.to_string();
            return r;
        }
        if let Some(d) = s.decrypt.take() {
            let mut r = self.carry_out_decrypt(s, d);
            r.reason = format!("{why}; {}", r.reason);
            return r;
        }
        match self.evaluate(s, true) {
            Some(mut r) => {
                r.reason = format!("{why}; {}", r.reason);
                r
            }
            None => self.default_resolution(s, why.to_string()),
        }
    }

    fn end_session(&mut self, _key: FlowKey, e: FlowEntry, now: u64, why: &str, out: &mut Output) {
        if e.state != FlowState::Inspecting {
            return;
        }
        if let Some(mut s) = e.session {
            if s.bytes_seen {
                let r = self.final_resolution(&mut s, why);
                self.emit(s, r, now, out);
            }
        }
    }

    /// Ends a session with its event; its facts move into the event.
    fn emit(&mut self, s: Box<Session>, r: Resolution, now: u64, out: &mut Output) {
        self.counters.sessions += 1;
        match r.action {
            FinalAction::DoNotDecrypt => self.counters.verdict_do_not_decrypt += 1,
            FinalAction::Block => self.counters.verdict_block += 1,
            FinalAction::BlockWithReset => self.counters.verdict_block_with_reset += 1,
        }
        if r.expected.starts_with("decrypt") {
            self.counters.decrypt_asked += 1;
        }
        if s.probe_wanted {
            self.want_probe(&s, now, out);
        }
        let Session { flow_id, facts, alerts, policy, server_identity, .. } = *s;
        let names = |v: &[usize]| v.iter().map(|&i| policy.rules()[i].name.clone()).collect::<Vec<_>>();
        out.events.push(SessionEvent {
            timestamp_ns: now,
            flow_id,
            event_type: r.event_type,
            flow: facts.flow,
            client_hello: facts.client_hello,
            server_hello: facts.server_hello,
            certificate: facts.certificate,
            cert_status: facts.cert_status,
            client_cert_requested: facts.client_cert_requested,
            alerts,
            rule: r.rule.map(|i| policy.rules()[i].name.clone()),
            expected_action: r.expected,
            actual_action: r.action.name(),
            reason: r.reason,
            monitor_rules: names(&r.monitors),
            missing_facts: r.missing,
            server_identity: server_identity.name(),
            decrypt: None,
        });
    }
}

/// Whether the slow path takes a decrypt decision over.
enum TakeOver {
    /// To this slow-path lcore.
    Escalate(u8),
    /// Not: the session is resolved by the exclusion cache.
    Excluded(Resolution),
    /// Not: why (the decision is carried out as do-not-decrypt).
    Refused(String),
}

impl TcpSideSeen {
    /// Notes what a segment from this side shows.
    fn saw(&mut self, frame: &[u8], t: &TcpFrame, now: u64) {
        let o = TcpOptions::of(frame, t);
        let syn = t.has(tcp_flags::SYN);
        if syn {
            self.syn = Some(o);
        }
        self.window = t.window;
        self.window_on_syn = syn;
        if let Some((tsval, _)) = o.timestamps {
            self.tsval = Some((tsval, now));
        }
    }
}

impl Inspector {
    /// Asks the slow path to learn the server's certificate with a handshake
    /// of its own (once per server per [`PROBE_AGAIN_NS`]).
    fn want_probe(&mut self, s: &Session, now: u64, out: &mut Output) {
        let (Some(slow), Some((l2, client_port))) = (&mut self.slow, &s.client_l2) else { return };
        let f = &s.facts.flow;
        let ch = s.facts.client_hello.as_ref();
        let server = ServerKey::new(f.dest_ip, f.dest_port, ch.and_then(|c| c.sni.as_deref()));
        if slow.probed.get(&server).is_some_and(|&at| now.saturating_sub(at) < PROBE_AGAIN_NS) {
            return;
        }
        if slow.probed.len() >= PROBED_CAPACITY {
            slow.probed.clear();
        }
        slow.probed.insert(server.clone(), now);
        out.probes.push(ProbeRequest {
            server,
            client_ip: addr_of(f.src_ip),
            server_ip: addr_of(f.dest_ip),
            ipv6: f.dest_ip.is_ipv6(),
            l2_to_server: l2.clone(),
            server_port_index: client_port ^ 1,
            alpn: ch.map(|c| c.alpn.clone()).unwrap_or_default(),
        });
    }
}

/// An address as flow keys store it (IPv4 in the low four bytes).
fn addr_of(ip: std::net::IpAddr) -> crate::packet::Addr {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let mut a = [0u8; 16];
            a[12..].copy_from_slice(&v4.octets());
            a
        }
        std::net::IpAddr::V6(v6) => v6.octets(),
    }
}

/// Certificate facts by certificate: servers present the same certificate
/// to every client, and parsing it (with the fingerprints and names the
/// facts hold) costs more than all the packets of a handshake. Bounded; when
/// full it starts over.
#[derive(Default)]
struct CertificateCache {
    by_hash:
        std::collections::HashMap<u64, (Vec<u8>, Arc<tlsgate_config::facts::CertificateFacts>), ahash::RandomState>,
}

impl CertificateCache {
    const CAPACITY: usize = 4096;

    fn facts(&mut self, der: &[u8]) -> Option<Arc<tlsgate_config::facts::CertificateFacts>> {
        let h = self.by_hash.hasher().hash_one(der);
        if let Some((d, f)) = self.by_hash.get(&h) {
            if d == der {
                return Some(f.clone());
            }
        }
        let f = Arc::new(certificate_facts(der).ok()?);
        if self.by_hash.len() >= Self::CAPACITY {
            self.by_hash.clear();
        }
        self.by_hash.insert(h, (der.to_vec(), f.clone()));
        Some(f)
    }
}

fn side_name(d: Direction) -> &'static str {
    match d {
        Direction::ToServer => "client",
        Direction::ToClient => "server",
    }
}

/// A RST for the packet `t` (which is being dropped): toward its receiver
/// (same addresses, seq = its seq, which the receiver expects next since the
/// packet never arrives) or toward its sender (addresses swapped, seq = its
/// ack, the next byte the sender expects). Both are exactly in window, so
/// stacks that follow RFC 5961 accept them. VLAN tags are kept.
pub fn build_reset(frame: &[u8], t: &TcpFrame, toward_sender: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(t.l3 + 60);
    let (dst_mac, src_mac) = (&frame[0..6], &frame[6..12]);
    if toward_sender {
        out.extend_from_slice(src_mac);
        out.extend_from_slice(dst_mac);
    } else {
        out.extend_from_slice(dst_mac);
        out.extend_from_slice(src_mac);
    }
    out.extend_from_slice(&frame[12..t.l3]);
    let mut seg_len = t.payload_len() as u32;
    if t.has(tcp_flags::SYN) {
        seg_len += 1;
    }
    if t.has(tcp_flags::FIN) {
        seg_len += 1;
    }
    let (src, dst, sp, dp, seq, ack) = if toward_sender {
        (t.dst, t.src, t.dst_port, t.src_port, t.ack, t.seq.wrapping_add(seg_len))
    } else {
        (t.src, t.dst, t.src_port, t.dst_port, t.seq, t.ack)
    };
    let builder = if t.ipv6 {
        etherparse::PacketBuilder::ipv6(src, dst, 64)
    } else {
        let s4 = [src[12], src[13], src[14], src[15]];
        let d4 = [dst[12], dst[13], dst[14], dst[15]];
        etherparse::PacketBuilder::ipv4(s4, d4, 64)
    };
    // Writing into a Vec cannot fail, and a 20-byte header is always in range.
    let _ = builder.tcp(sp, dp, seq, 0).rst().ack(ack).write(&mut out, &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-flow cost the README states: a decided flow keeps only its
    /// entry (in the table's slot, with key and timers) and its index entry.
    #[test]
    fn decided_flow_state_stays_small() {
        assert_eq!(std::mem::size_of::<FlowEntry>(), 16);
        assert_eq!(crate::flow::slot_size::<FlowEntry>(), 72);
        assert_eq!(std::mem::size_of::<(FlowKey, FlowId)>(), 44);
    }
}
