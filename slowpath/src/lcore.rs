//! A slow-path lcore: takes the flows workers escalate, decrypts them with an
//! [`Interception`] each, and sends what they produce: frames on its own tx
//! queues, updates to the workers (a session ended; what it learned about a
//! server; servers not to decrypt), and events, key log lines and decrypted
//! frames to the control thread. Packets the driver spreads to this lcore's
//! rx queues are handed to the workers that own their flows.
//!
//! Nothing here is shared with another lcore: forgers, known keys and trust
//! stores are this lcore's own, built on first use.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use tlsgate_config::facts::{ServerHelloFacts, TlsVersion};
use tlsgate_config::policy::{Action, FinalAction, Policy, Undecryptable};
use tlsgate_config::{FlowSettings, PinnedAction, SlowPathSettings};
use tlsgate_dataplane::dpdk::{pause, tsc, Burst, Clock, Mbuf};
use tlsgate_dataplane::escalate::{Escalation, ProbeRequest, SlowRecord, SlowUpdate, ToSlowPath};
use tlsgate_dataplane::event::{DecryptFacts, SessionEvent};
use tlsgate_dataplane::flow::FlowKey;
use tlsgate_dataplane::identity::{ExclusionKey, ExclusionReason, ServerIdentity, ServerKey};
use tlsgate_dataplane::packet::{flow_hash, worker_for, TcpFrame};
use tlsgate_dataplane::runtime::{SlowPath, SlowPathIo};
use tlsgate_dataplane::stats::SlowPathCounters;
use tlsgate_dataplane::tls::{certificate_facts, CertVerifier};

use crate::export::{DecryptedStream, Frames};
use crate::forge::Forger;
use crate::intercept::{Finished, Interception, Output};
use crate::probe::{Probe, ProbeResult};
use crate::relay::{ClientFacing, FailReason, Relay, RelayConfig};
use crate::wire::{segment_of, FlowTemplate};

/// The slow path's code, as the data plane runs it on each slow-path lcore.
pub struct Interceptor {
    settings: SlowPathSettings,
    idle_ns: u64,
    handshake_ns: u64,
    keylog: bool,
    decrypted: bool,
}

impl Interceptor {
    /// From the settings' `[slowpath]` and `[flows]` (a decrypted session
    /// idle for `decided_timeout` is reset; its handshakes get
    /// `inspecting_timeout`); `keylog`/`decrypted`: whether the control
    /// thread writes a key log and a decrypted-traffic pcap.
    pub fn new(settings: &SlowPathSettings, flows: &FlowSettings, keylog: bool, decrypted: bool) -> Interceptor {
        Interceptor {
            settings: settings.clone(),
            idle_ns: u64::from(flows.decided_timeout) * NS,
            handshake_ns: u64::from(flows.inspecting_timeout) * NS,
            keylog,
            decrypted,
        }
    }
}

impl SlowPath for Interceptor {
    fn run(&self, io: SlowPathIo) -> i32 {
        SlowLcore::new(self, io).run()
    }
}

/// Checks, before anything starts, that every CA and known key of `policy`
/// can be used: each CA's key is the key of its certificate, which is a CA
/// certificate; each known key is the key of its certificate. The message
/// names the object.
pub fn check_policy_objects(policy: &Policy) -> Result<(), String> {
    for ca in policy.cas() {
        let (_, cert) = x509_parser::parse_x509_certificate(&ca.cert_der)
            .map_err(|e| format!("ca {:?}: the certificate cannot be parsed: {e}", ca.name))?;
        if !cert.is_ca() {
            return Err(format!(
                "ca {:?}: the certificate is not a CA certificate (basicConstraints CA:TRUE), so clients would refuse what it signs",
                ca.name
            ));
        }
        Forger::new(&ca.cert_der, ca.private_key(), 1).map_err(|e| format!("ca {:?}: {e}", ca.name))?;
        let k = certified_key(&ca.cert_der, ca.private_key()).map_err(|e| format!("ca {:?}: {e}", ca.name))?;
        if k.keys_match().is_err() {
            return Err(format!("ca {:?}: the key file holds another key than the certificate's", ca.name));
        }
    }
    for kk in policy.known_keys() {
        let k = certified_key(&kk.cert_der, kk.private_key()).map_err(|e| format!("known_key {:?}: {e}", kk.name))?;
        if k.keys_match().is_err() {
            return Err(format!("known_key {:?}: the key file holds another key than the certificate's", kk.name));
        }
    }
    Ok(())
}

fn certified_key(cert_der: &[u8], key: rustls::pki_types::PrivateKeyDer<'static>) -> Result<Arc<CertifiedKey>, String> {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider.key_provider.load_private_key(key).map_err(|e| format!("the key cannot be used: {e}"))?;
    Ok(Arc::new(CertifiedKey::new(vec![CertificateDer::from(cert_der.to_vec())], key)))
}

const NS: u64 = 1_000_000_000;
/// How long a finished session is kept to answer a retransmitted FIN.
const LINGER_NS: u64 = 2 * NS;
/// How often sessions' timers are looked at.
const SWEEP_NS: u64 = NS / 1000;
/// How often every session is looked at (idle, handshake deadline).
const FULL_SWEEP_NS: u64 = NS / 10;
/// Servers whose last certificate this lcore remembers.
const LEARNED_CAPACITY: usize = 16_384;
/// How long the lcore keeps sending FINs and retransmissions at shutdown.
const SHUTDOWN_NS: u64 = NS / 5;

// Counter indices (see SlowPathCounters::NAMES).
const TAKEN_OVER: usize = 0;
const REFUSED: usize = 1;
const DECRYPTED: usize = 2;
const UNDECRYPTABLE: usize = 3;
const SESSIONS_NOW: usize = 4;
const PACKETS_IN: usize = 5;
const PACKETS_OUT: usize = 6;
const HANDED: usize = 7;
const TX_DROPPED: usize = 8;
const UNKNOWN_FLOW: usize = 9;
const PLAIN_TO_SERVER: usize = 10;
const PLAIN_TO_CLIENT: usize = 11;
const FORGED: usize = 12;
const RECORDS_LOST: usize = 13;
const PROBES: usize = 14;
const PROBES_LEARNED: usize = 15;

/// One flow on this lcore.
struct Flow {
    esc: Box<Escalation>,
    icpt: Interception,
    template: Option<FlowTemplate>,
    /// The client's endpoint (address, port), to tell directions apart.
    client: ([u8; 16], u16),
    stream: Option<DecryptedStream>,
    /// What the upstream handshake showed: facts and status, for the event.
    upstream: Option<ServerIdentity>,
    /// When it finished (then it lingers), and how.
    finished: Option<(u64, Option<Finished>)>,
    /// The failure was acted on (exclusion sent, action chosen).
    failure_action: Option<FinalAction>,
    /// The client rejected a certificate signed by the untrusted CA: what it
    /// would have done with the server's own, so no failure of ours.
    rejected_as_expected: bool,
    shown: Option<&'static str>,
}

/// What a policy needs on this lcore: its trust store for the upstream
/// handshakes and for certificate status.
struct PolicyMaterials {
    _policy: Arc<Policy>,
    roots: RootCertStore,
    verifier: CertVerifier,
}

struct SlowLcore<'a> {
    cfg: &'a Interceptor,
    io: SlowPathIo,
    flows: HashMap<FlowKey, Flow, RandomState>,
    forgers: HashMap<[u8; 32], Forger, RandomState>,
    known: HashMap<[u8; 32], Arc<CertifiedKey>, RandomState>,
    /// By the policy's address (the Arc kept inside keeps it valid).
    policies: HashMap<usize, PolicyMaterials, RandomState>,
    tx: Vec<Burst>,
    handed: Vec<Burst>,
    counters: [u64; SlowPathCounters::FIELDS],
    clock: Clock,
    last_sweep: u64,
    last_full_sweep: u64,
    /// What each server was last seen presenting (leaf SHA-256) and its facts:
    /// servers present the same certificate session after session, so the
    /// workers are told only of changes and the leaf is parsed once.
    learned: HashMap<ServerKey, ([u8; 32], ServerIdentity), RandomState>,
    /// Probes running, by their flow.
    probes: HashMap<FlowKey, RunningProbe, RandomState>,
    /// For probes' ports and sequence numbers.
    rng: u64,
}

/// A probe and what it needs to send and to report.
struct RunningProbe {
    probe: Probe,
    template: FlowTemplate,
    server_port_index: usize,
    server: ServerKey,
    /// The worker that owns its flow.
    worker: usize,
    /// When it ended (it lingers to send its reset), or None.
    ended_at: Option<u64>,
}

/// Probes running at once per slow-path lcore, at most.
const PROBES_MAX: usize = 256;

impl<'a> SlowLcore<'a> {
    fn new(cfg: &'a Interceptor, io: SlowPathIo) -> SlowLcore<'a> {
        let ports = io.ports.len();
        let workers = io.handed.len();
        SlowLcore {
            cfg,
            io,
            flows: HashMap::default(),
            forgers: HashMap::default(),
            known: HashMap::default(),
            policies: HashMap::default(),
            tx: (0..ports).map(|_| Burst::new()).collect(),
            handed: (0..workers).map(|_| Burst::new()).collect(),
            counters: [0; SlowPathCounters::FIELDS],
            clock: Clock::new(),
            last_sweep: 0,
            last_full_sweep: 0,
            learned: HashMap::default(),
            probes: HashMap::default(),
            rng: tsc() | 1,
        }
    }

    fn run(mut self) -> i32 {
        let mut rx = Burst::new();
        let mut idle = 0u32;
        while self.io.running.load(Ordering::Relaxed) {
            let work = self.poll_once(&mut rx);
            if work > 0 {
                idle = 0;
            } else {
                idle = idle.saturating_add(1);
                if idle < 256 {
                    pause();
                } else {
                    // Short sleeps: a decrypting lcore has timers to keep.
                    std::thread::sleep(Duration::from_micros(if idle < 1024 { 20 } else { 200 }));
                }
            }
        }
        self.shutdown(&mut rx);
        0
    }

    fn poll_once(&mut self, rx: &mut Burst) -> usize {
        let now = self.clock.now_ns();
        let mut work = 0;
        for w in 0..self.io.flows.len() {
            work += self.adopt_from(w, now);
        }
        let mut touched: Vec<FlowKey> = Vec::new();
        for w in 0..self.io.packets.len() {
            let n = self.io.packets[w].recv_burst(rx);
            work += n;
            for m in rx.drain() {
                if let Some(k) = self.on_packet(w, &m, now) {
                    if !touched.contains(&k) {
                        touched.push(k);
                    }
                }
            }
        }
        work += self.hand_rx_to_workers(rx);
        for k in touched {
            self.drive(&k, now);
        }
        if now.saturating_sub(self.last_sweep) >= SWEEP_NS {
            self.last_sweep = now;
            self.sweep(now);
        }
        self.flush();
        work
    }

    /// Takes the flows worker `w` escalated.
    fn adopt_from(&mut self, w: usize, now: u64) -> usize {
        let mut n = 0;
        while let Some(msg) = self.io.flows[w].pop() {
            n += 1;
            match *msg {
                ToSlowPath::Flow(esc) => self.adopt(esc, now),
                ToSlowPath::Probe(req) => self.start_probe(req, now),
            }
        }
        n
    }

    fn adopt(&mut self, mut esc: Box<Escalation>, now: u64) {
        if self.flows.len() >= self.cfg.settings.sessions as usize {
            self.refuse(esc, now);
            return;
        }
        let Some(facing) = self.client_facing(&esc) else {
            // The policy's objects were checked at start; a reload is checked the same way.
            self.refuse(esc, now);
            return;
        };
        let roots = self.materials(&esc.policy).roots.clone();
        let relay = RelayConfig { upstream_roots: roots, client_facing: facing, keylog: self.cfg.keylog };
        let client =
            if esc.client_is_lo { (esc.key.lo_addr, esc.key.lo_port) } else { (esc.key.hi_addr, esc.key.hi_port) };
        let offered = esc.facts.client_hello.as_ref().map(|c| c.versions.clone()).unwrap_or_default();
        let relay = Relay::new(relay)
            .with_client_versions(offered.contains(&TlsVersion::Tls12), offered.contains(&TlsVersion::Tls13));
        let icpt = Interception::new(&esc.tcp, relay, self.cfg.decrypted, now)
            .with_handshake_timeout(now, self.cfg.handshake_ns);
        let shown = match esc.decision.action {
            Action::DecryptKnownKey { .. } => Some("known-key"),
            _ => None,
        };
        self.counters[TAKEN_OVER] += 1;
        let held = std::mem::take(&mut esc.held);
        let (key, worker) = (esc.key, esc.worker);
        self.flows.insert(
            esc.key,
            Flow {
                esc,
                icpt,
                template: None,
                client,
                stream: None,
                upstream: None,
                finished: None,
                failure_action: None,
                rejected_as_expected: false,
                shown,
            },
        );
        // The ClientHello's first segments, held back by the worker, come first.
        for frame in &held {
            self.on_frame(worker, frame, now);
        }
        if !held.is_empty() {
            self.drive(&key, now);
        }
        self.counters[SESSIONS_NOW] = self.flows.len() as u64;
    }

    /// At the session limit: the worker carries the decision out as
    /// `slowpath.when_full` says; the escalating packet is lost (the client
    /// retransmits it, and the worker then forwards or drops it).
    fn refuse(&mut self, esc: Box<Escalation>, now: u64) {
        self.counters[REFUSED] += 1;
        let action = match self.cfg.settings.when_full {
            tlsgate_config::SlowWhenFull::DoNotDecrypt => FinalAction::DoNotDecrypt,
            tlsgate_config::SlowWhenFull::Block => FinalAction::Block,
        };
        let update = SlowUpdate::Refused { key: esc.key, action };
        self.update(esc.worker, update);
        let rule = rule_name(&esc);
        let mut ev = base_event(&esc, now);
        ev.actual_action = action.name();
        ev.reason = format!(
            "rule {rule:?} asks for {}, but the slow path is at its limit of {} sessions (slowpath.when_full = {})",
            esc.decision.action.name(),
            self.cfg.settings.sessions,
            action.name()
        );
        self.record(SlowRecord::Event(Box::new(ev)));
    }

    fn client_facing(&mut self, esc: &Escalation) -> Option<ClientFacing> {
        match esc.decision.action {
            Action::DecryptResign { ca } => {
                let ca = esc.policy.cas().get(ca)?;
                let id: [u8; 32] = Sha256::digest(&ca.cert_der).into();
                if !self.forgers.contains_key(&id) {
                    let f =
                        Forger::new(&ca.cert_der, ca.private_key(), self.cfg.settings.forged_cache as usize).ok()?;
                    self.forgers.insert(id, f);
                }
                Some(ClientFacing::Resign)
            }
            Action::DecryptKnownKey { known_key } => {
                let kk = esc.policy.known_keys().get(known_key)?;
                if let Some(k) = self.known.get(&kk.cert_sha256) {
                    return Some(ClientFacing::KnownKey(k.clone()));
                }
                let k = certified_key(&kk.cert_der, kk.private_key()).ok()?;
                self.known.insert(kk.cert_sha256, k.clone());
                Some(ClientFacing::KnownKey(k))
            }
            _ => None,
        }
    }

    fn materials(&mut self, policy: &Arc<Policy>) -> &mut PolicyMaterials {
        let id = Arc::as_ptr(policy) as usize;
        self.policies.entry(id).or_insert_with(|| {
            let mut roots = RootCertStore::empty();
            for a in &policy.trust().anchors {
                let _ = roots.add(CertificateDer::from(a.clone()));
            }
            // Checked when the policy was loaded (the workers built the same store).
            let verifier = CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)
                .unwrap_or_else(|_| CertVerifier::new(&[], &[]).expect("an empty trust store always builds"));
            PolicyMaterials { _policy: policy.clone(), roots, verifier }
        })
    }

    /// A packet of an escalated flow, from worker `w`. Returns its flow.
    fn on_packet(&mut self, w: usize, m: &Mbuf, now: u64) -> Option<FlowKey> {
        self.counters[PACKETS_IN] += 1;
        let data = if m.is_contiguous() { std::borrow::Cow::Borrowed(m.data()) } else { m.to_vec().into() };
        self.on_frame(w, &data, now)
    }

    /// A frame of an escalated flow (or of a probe).
    fn on_frame(&mut self, w: usize, data: &[u8], now: u64) -> Option<FlowKey> {
        let t = TcpFrame::parse(data)?;
        let (key, _) = FlowKey::of(&t);
        if !self.flows.contains_key(&key) {
            // The worker pushed the flow before its first packet: look again.
            self.adopt_from(w, now);
        }
        if let Some(p) = self.probes.get_mut(&key) {
            p.probe.on_segment(&segment_of(data, &t), now);
            self.drive_probe(&key, now);
            return None;
        }
        let Some(flow) = self.flows.get_mut(&key) else {
            self.counters[UNKNOWN_FLOW] += 1;
            return None;
        };
        let from_client = (t.src, t.src_port) == flow.client;
        if from_client && flow.template.is_none() {
            flow.template = Some(FlowTemplate::from_client_frame(data, &t));
        }
        // Nothing can be sent before the client's first frame shows the link layer.
        flow.template.as_ref()?;
        let seg = segment_of(data, &t);
        if from_client {
            flow.icpt.on_client_segment(&seg, now);
        } else {
            flow.icpt.on_server_segment(&seg, now);
        }
        Some(key)
    }

    /// Runs one flow: the relay, what it learned, what it sends.
    fn drive(&mut self, key: &FlowKey, now: u64) {
        let Some(mut flow) = self.flows.remove(key) else { return };
        let mut out = Output::default();
        {
            let mut forger = match flow.esc.decision.action {
                Action::DecryptResign { ca } => flow
                    .esc
                    .policy
                    .cas()
                    .get(ca)
                    .and_then(|ca| self.forgers.get_mut(&<[u8; 32]>::from(Sha256::digest(&ca.cert_der)))),
                _ => None,
            };
            let mut forged = 0u64;
            let mut shown = None;
            let mut forge = |chain: &[Vec<u8>], trusted: bool| -> Option<Arc<CertifiedKey>> {
                let f = forger.as_deref_mut()?;
                let before = f.stats().forged;
                let k = f.forge(chain.first()?, trusted).ok()?;
                forged += f.stats().forged - before;
                shown = Some(if trusted { "forged" } else { "forged-untrusted" });
                Some(k)
            };
            flow.icpt.drive(now, &mut forge, &mut out);
            self.counters[FORGED] += forged;
            if shown.is_some() {
                flow.shown = shown;
            }
        }
        if let Some((chain, _trusted)) = out.upstream_certificate.take() {
            self.learn(&mut flow, chain, now);
        }
        if !out.keylog.is_empty() && self.cfg.keylog {
            self.record(SlowRecord::KeyLog(std::mem::take(&mut out.keylog)));
        }
        if self.cfg.decrypted && !out.plaintext.is_empty() {
            let mut frames = Frames::new();
            if flow.stream.is_none() {
                if let Some(t) = &flow.template {
                    flow.stream = Some(DecryptedStream::new(t.clone(), now, &mut frames));
                }
            }
            if let Some(st) = &mut flow.stream {
                for (from_client, data) in &out.plaintext {
                    st.data(*from_client, data, now, &mut frames);
                }
            }
            self.record(SlowRecord::Decrypted(frames));
        }
        if flow.icpt.outcome.failed.is_some() && flow.failure_action.is_none() && !flow.rejected_as_expected {
            self.on_failure(&mut flow, now);
        }
        self.transmit(&mut flow, now);
        if flow.finished.is_none() {
            if let Some(how) = flow.icpt.finished(now, self.cfg.idle_ns) {
                self.transmit(&mut flow, now);
                self.finish(&mut flow, Some(how), now);
            }
        }
        self.flows.insert(*key, flow);
    }

    /// What the upstream handshake showed: the server identity cache of every
    /// worker learns it (for TLS 1.3 too: the slow path sees the certificate).
    fn learn(&mut self, flow: &mut Flow, chain: Vec<Vec<u8>>, now: u64) {
        let sni = flow.esc.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
        let f = &flow.esc.facts.flow;
        let key = ServerKey::new(f.dest_ip, f.dest_port, sni.as_deref());
        let policy = flow.esc.policy.clone();
        flow.upstream = self.learn_server(&key, chain, Some(&policy), now);
    }

    /// Tells every worker what `server` presents, unless it is what this lcore
    /// last told them; returns the identity with its status judged now
    /// (against `policy`'s trust store; without one the workers judge it).
    fn learn_server(
        &mut self,
        key: &ServerKey,
        chain: Vec<Vec<u8>>,
        policy: Option<&Arc<Policy>>,
        now: u64,
    ) -> Option<ServerIdentity> {
        let leaf = chain.first()?;
        let leaf_id: [u8; 32] = Sha256::digest(leaf).into();
        let status = policy.map(|p| self.materials(p).verifier.status(&chain, key.sni.as_deref(), unix_secs(now)));
        if let Some((id, known)) = self.learned.get(key) {
            if *id == leaf_id {
                return Some(ServerIdentity { cert_status: status, ..known.clone() });
            }
        }
        if self.learned.len() >= LEARNED_CAPACITY {
            self.learned.clear();
        }
        let certificate = certificate_facts(leaf).ok().map(Arc::new);
        let identity = ServerIdentity {
            certificate,
            chain,
            cert_status: status,
            version: None,
            cipher_suite: None,
            client_cert_requested: false,
            learned_at_ns: now,
        };
        for w in 0..self.io.updates.len() {
            self.update(w, SlowUpdate::Learned { key: key.clone(), identity: identity.clone() });
        }
        self.learned.insert(key.clone(), (leaf_id, identity.clone()));
        Some(identity)
    }

    /// The session cannot be decrypted: later sessions to the server (or,
    /// for a client that rejected the re-signed certificate, to the SNI) are
    /// handled at their ClientHello; this one ends, by reset if its action
    /// resets.
    fn on_failure(&mut self, flow: &mut Flow, now: u64) {
        let Some((reason, _)) = flow.icpt.outcome.failed.clone() else { return };
        if reason == FailReason::ClientRejectedCertificate && flow.shown == Some("forged-untrusted") {
            flow.rejected_as_expected = true;
            return;
        }
        let policy = flow.esc.policy.clone();
        let f = &flow.esc.facts.flow;
        let sni = flow.esc.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
        let server = ExclusionKey::Server { ip: f.dest_ip, port: f.dest_port };
        let (key, action, why) = match reason {
            FailReason::ClientRejectedCertificate => {
                let action = match self.cfg.settings.pinned_action {
                    PinnedAction::DoNotDecrypt => FinalAction::DoNotDecrypt,
                    PinnedAction::Block => FinalAction::Block,
                    PinnedAction::BlockWithReset => FinalAction::BlockWithReset,
                };
                let key = sni.map(ExclusionKey::Sni).unwrap_or(server);
                (Some(key), action, ExclusionReason::ClientRejectedCertificate)
            }
            FailReason::CertificateChanged => {
                // The server identity cache has learned the new certificate: the
                // known-key rule no longer matches the server's next sessions.
                let action = policy.undecryptable(Undecryptable::HandshakeError);
                (None, action, ExclusionReason::CertificateChanged)
            }
            // The client's garbage or its own incompatibility says nothing about the server.
            other if flow.icpt.outcome.failed_by_client => {
                let u = undecryptable_of(other);
                (None, policy.undecryptable(u), ExclusionReason::Undecryptable(u))
            }
            other => {
                let u = undecryptable_of(other);
                (Some(server), policy.undecryptable(u), ExclusionReason::Undecryptable(u))
            }
        };
        if let Some(key) = key {
            for w in 0..self.io.updates.len() {
                self.update(w, SlowUpdate::Excluded { key: key.clone(), action, reason: why });
            }
        }
        if action == FinalAction::BlockWithReset {
            flow.icpt.reset_both();
        }
        flow.failure_action = Some(action);
        let _ = now;
    }

    /// Starts a probe: its flow is announced to the worker that will see its
    /// packets, then its SYN leaves toward the server.
    fn start_probe(&mut self, req: ProbeRequest, now: u64) {
        if self.probes.len() >= PROBES_MAX || self.handed.is_empty() {
            return;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let port = 40_000 + (self.rng % 20_000) as u16;
        let isn = (self.rng >> 20) as u32;
        let mut l2 = req.l2_to_server.clone();
        let probe_frame = crate::wire::build_frame(
            &l2,
            req.ipv6,
            (req.client_ip, port),
            (req.server_ip, req.server.port),
            &crate::tcp::Segment {
                seq: isn,
                ack: 0,
                flags: crate::tcp::flags::SYN,
                window: 65535,
                timestamps: None,
                sack: Vec::new(),
                payload: Vec::new(),
            },
        );
        let Some(t) = TcpFrame::parse(&probe_frame) else { return };
        let (key, _) = FlowKey::of(&t);
        if self.flows.contains_key(&key) || self.probes.contains_key(&key) {
            return;
        }
        let template = FlowTemplate::from_client_frame(&probe_frame, &t);
        l2.clear();
        let worker = flow_hash(&probe_frame).map_or(0, |h| worker_for(h, self.handed.len()));
        self.update(worker, SlowUpdate::Probe { key, lcore: self.io.index as u8 });
        let probe = Probe::new(isn, req.server.sni.as_deref(), req.server.ip, &req.alpn, now);
        self.counters[PROBES] += 1;
        self.probes.insert(
            key,
            RunningProbe {
                probe,
                template,
                server_port_index: req.server_port_index,
                server: req.server,
                worker,
                ended_at: None,
            },
        );
        self.drive_probe(&key, now);
    }

    fn drive_probe(&mut self, key: &FlowKey, now: u64) {
        let Some(mut p) = self.probes.remove(key) else { return };
        if p.ended_at.is_none() {
            match p.probe.drive(now) {
                Some(ProbeResult::Chain(chain)) => {
                    self.counters[PROBES_LEARNED] += 1;
                    self.learn_server(&p.server, chain, None, now);
                    p.ended_at = Some(now);
                }
                Some(ProbeResult::Failed(_)) => p.ended_at = Some(now),
                None => {}
            }
        }
        while let Some(seg) = p.probe.poll_transmit(now) {
            let frame = p.template.frame(false, &seg);
            self.send_frame(p.server_port_index, &frame);
        }
        if p.ended_at.is_some_and(|at| now.saturating_sub(at) > LINGER_NS) {
            self.update(p.worker, SlowUpdate::Ended { key: *key });
            return;
        }
        self.probes.insert(*key, p);
    }

    /// Sends what the flow's endpoints have to send.
    fn transmit(&mut self, flow: &mut Flow, now: u64) {
        let Some(template) = &flow.template else { return };
        let client_port = flow.esc.client_port;
        let server_port = client_port ^ 1;
        while let Some((to_client, seg)) = flow.icpt.poll_transmit(now) {
            let port = if to_client { client_port } else { server_port };
            self.send_frame(port, &template.frame(to_client, &seg));
        }
    }

    /// Stages one frame for port `port`.
    fn send_frame(&mut self, port: usize, frame: &[u8]) {
        let Some(m) = Mbuf::from_bytes(&self.io.pool, frame) else {
            self.counters[TX_DROPPED] += 1;
            return;
        };
        if port >= self.tx.len() {
            self.counters[TX_DROPPED] += 1;
            return;
        }
        if self.tx[port].is_full() {
            self.send_port(port);
        }
        if let Err(m) = self.tx[port].push(m) {
            drop(m);
            self.counters[TX_DROPPED] += 1;
        }
    }

    /// A session is over: its event, and the worker forgets the flow.
    fn finish(&mut self, flow: &mut Flow, how: Option<Finished>, now: u64) {
        flow.finished = Some((now, how));
        self.counters[SESSIONS_NOW] = self.flows.len() as u64;
        let o = &flow.icpt.outcome;
        self.counters[PLAIN_TO_SERVER] += o.bytes_to_server;
        self.counters[PLAIN_TO_CLIENT] += o.bytes_to_client;
        if let Some(st) = &mut flow.stream {
            let mut frames = Frames::new();
            st.finish(now, &mut frames);
            self.record(SlowRecord::Decrypted(frames));
        }
        let ev = self.session_event(flow, how, now);
        if ev.actual_action.starts_with("decrypt") {
            self.counters[DECRYPTED] += 1;
        } else {
            self.counters[UNDECRYPTABLE] += 1;
        }
        self.record(SlowRecord::Event(Box::new(ev)));
        self.update(flow.esc.worker, SlowUpdate::Ended { key: flow.esc.key });
    }

    fn session_event(&mut self, flow: &Flow, how: Option<Finished>, now: u64) -> SessionEvent {
        let esc = &flow.esc;
        let o = &flow.icpt.outcome;
        let mut ev = base_event(esc, now);
        let rule = rule_name(esc);
        let expected = esc.decision.action.name();
        if let Some(up) = &flow.upstream {
            ev.certificate = up.certificate.clone();
            ev.cert_status = up.cert_status;
            ev.server_identity = "handshake";
        }
        let mut decrypt = DecryptFacts {
            server_trusted: o.trusted,
            shown_certificate: flow.shown,
            bytes_to_server: o.bytes_to_server,
            bytes_to_client: o.bytes_to_client,
            ..Default::default()
        };
        if let Some((up_version, cipher, client_version, alpn)) = &o.established {
            let version = TlsVersion::from_wire(u16::from(*up_version));
            ev.server_hello = Some(ServerHelloFacts {
                version,
                cipher_suite: u16::from(*cipher),
                compression: 0,
                alpn: alpn.as_ref().map(|a| String::from_utf8_lossy(a).into_owned()),
                resumed: false,
                hello_retry: false,
            });
            decrypt.server_version = version.map(TlsVersion::event_name);
            decrypt.client_version = TlsVersion::from_wire(u16::from(*client_version)).map(TlsVersion::event_name);
            decrypt.alpn = alpn.as_ref().map(|a| String::from_utf8_lossy(a).into_owned());
        }
        let ended = match (&o.closed, how) {
            (_, Some(Finished::Idle)) => "idle too long: both connections reset".to_string(),
            (_, Some(Finished::HandshakeTimeout)) => {
                "the handshakes did not complete in time: both connections reset".to_string()
            }
            (Some(c), _) => format!("{c}; {}", flow.icpt.tcp_end()),
            (None, _) => flow.icpt.tcp_end(),
        };
        decrypt.ended = ended.clone();
        match (&o.failed, flow.failure_action) {
            (Some(_), None) if flow.rejected_as_expected => {
                ev.actual_action = expected;
                ev.reason = format!(
                    "rule {rule:?} matched; the server's certificate is not trusted, so the client was shown a copy \
                     signed by the untrusted CA, and rejected it as it would have rejected the original; {ended}"
                );
            }
            (Some((reason, detail)), Some(action)) => {
                ev.actual_action = action.name();
                let later = match reason {
                    FailReason::CertificateChanged => format!(
                        "the known key no longer applies: the server identity cache has the new certificate, so \
                         rule {rule:?} no longer matches the server's next sessions"
                    ),
                    FailReason::ClientRejectedCertificate => format!(
                        "the client rejected the re-signed certificate (certificate pinning): later sessions to it get \
                         {} at their ClientHello (slowpath.pinned_action)",
                        action.name()
                    ),
                    other if o.failed_by_client => format!(
                        "the client's doing (undecryptable.{} = {}), so the server stays decryptable",
                        undecryptable_of(*other).name(),
                        action.name()
                    ),
                    other => format!(
                        "later sessions to the server get {} at their ClientHello (undecryptable.{}; exclusion cache)",
                        action.name(),
                        undecryptable_of(*other).name()
                    ),
                };
                ev.reason = format!(
                    "rule {rule:?} asks for {expected}; the session was taken over but cannot be decrypted: {detail}; \
                     it was ended for both sides; {later}"
                );
                if *reason == FailReason::ClientAuth {
                    ev.client_cert_requested = true;
                }
            }
            _ if o.established.is_some() => {
                ev.actual_action = expected;
                let how = match flow.shown {
                    Some("forged") => "the server's certificate re-signed by the rule's CA".to_string(),
                    Some("forged-untrusted") => {
                        "the server's certificate is not trusted: re-signed by the untrusted CA, as the client would \
                         have seen it"
                            .to_string()
                    }
                    _ => "the imported certificate and key".to_string(),
                };
                ev.reason = format!("rule {rule:?} matched; decrypted, the client shown {how}; {ended}");
            }
            _ => {
                ev.actual_action = expected;
                ev.reason = format!(
                    "rule {rule:?} matched; taken over for decryption, but the handshakes did not complete: {ended}"
                );
            }
        }
        ev.decrypt = Some(Box::new(decrypt));
        ev
    }

    /// Timers; every [`FULL_SWEEP_NS`] idleness, deadlines and lingering sessions.
    fn sweep(&mut self, now: u64) {
        let full = now.saturating_sub(self.last_full_sweep) >= FULL_SWEEP_NS;
        if full {
            self.last_full_sweep = now;
        }
        let keys: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| full || f.icpt.poll_timeout().is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            let (expired, due) = match self.flows.get(&k) {
                Some(f) => (
                    f.finished.is_some_and(|(at, _)| now.saturating_sub(at) > LINGER_NS),
                    f.icpt.poll_timeout().is_some_and(|t| t <= now) || (full && f.finished.is_none()),
                ),
                None => continue,
            };
            if expired {
                self.flows.remove(&k);
                self.counters[SESSIONS_NOW] = self.flows.len() as u64;
                continue;
            }
            if due {
                self.drive(&k, now);
            }
        }
        let probes: Vec<FlowKey> = self.probes.keys().copied().collect();
        for k in probes {
            self.drive_probe(&k, now);
        }
        self.io.counters.publish(&self.counters);
    }

    /// Packets this lcore's rx queues got: to the workers that own their flows.
    fn hand_rx_to_workers(&mut self, rx: &mut Burst) -> usize {
        let workers = self.handed.len();
        if workers == 0 {
            return 0;
        }
        let mut n = 0;
        for p in 0..self.io.ports.len() {
            let got = self.io.ports[p].0.recv(rx);
            n += got;
            for mut m in rx.drain() {
                let owner = flow_hash(m.data()).map_or(0, |h| worker_for(h, workers));
                m.set_port(p as u16);
                let staged = &mut self.handed[owner];
                if let Err(m) = staged.push(m) {
                    self.io.handed[owner].send_burst(staged);
                    if let Err(m) = staged.push(m) {
                        drop(m);
                        self.counters[TX_DROPPED] += 1;
                        continue;
                    }
                }
                self.counters[HANDED] += 1;
            }
        }
        n
    }

    fn flush(&mut self) {
        for p in 0..self.tx.len() {
            self.send_port(p);
        }
        for (w, staged) in self.handed.iter_mut().enumerate() {
            if !staged.is_empty() {
                self.io.handed[w].send_burst(staged);
                self.counters[TX_DROPPED] += staged.len() as u64;
                staged.clear();
            }
        }
    }

    fn send_port(&mut self, p: usize) {
        if self.tx[p].is_empty() {
            return;
        }
        let n = self.io.ports[p].1.send(&mut self.tx[p]);
        self.counters[PACKETS_OUT] += n as u64;
        if self.tx[p].is_full() {
            // The queue is full; dropping is what a wire does, and TCP retransmits.
            self.counters[TX_DROPPED] += self.tx[p].len() as u64;
            self.tx[p].clear();
        }
    }

    fn update(&mut self, w: usize, u: SlowUpdate) {
        if let Some(ring) = self.io.updates.get_mut(w) {
            // A full update ring loses a lesson, not a packet; the flow expires in the worker.
            let _ = ring.push(Box::new(u));
        }
    }

    fn record(&mut self, r: SlowRecord) {
        if self.io.records.push(Box::new(r)).is_err() {
            self.counters[RECORDS_LOST] += 1;
        }
    }

    /// Ends every session (close_notify and FIN both ways), keeps sending for
    /// a moment so that they go out, and gives each its event.
    fn shutdown(&mut self, rx: &mut Burst) {
        let start = self.clock.now_ns();
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for k in &keys {
            if let Some(f) = self.flows.get_mut(k) {
                if f.finished.is_none() {
                    f.icpt.close();
                }
            }
        }
        loop {
            let now = self.clock.now_ns();
            for k in &keys {
                self.drive(k, now);
            }
            self.hand_rx_to_workers(rx);
            self.flush();
            if now.saturating_sub(start) > SHUTDOWN_NS {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = self.clock.now_ns();
        for k in keys {
            if let Some(mut f) = self.flows.remove(&k) {
                if f.finished.is_none() {
                    self.finish(&mut f, None, now);
                }
            }
        }
        self.counters[SESSIONS_NOW] = 0;
        self.io.counters.publish(&self.counters);
    }
}

fn undecryptable_of(r: FailReason) -> Undecryptable {
    match r {
        FailReason::ClientAuth => Undecryptable::ClientAuth,
        FailReason::DecryptionError => Undecryptable::DecryptionError,
        _ => Undecryptable::HandshakeError,
    }
}

fn rule_name(esc: &Escalation) -> String {
    esc.decision.rule.map(|i| esc.policy.rules()[i].name.clone()).unwrap_or_default()
}

/// The event of an escalated session with the fast path's facts.
fn base_event(esc: &Escalation, now: u64) -> SessionEvent {
    let names = |v: &[usize]| v.iter().map(|&i| esc.policy.rules()[i].name.clone()).collect::<Vec<_>>();
    SessionEvent {
        timestamp_ns: now,
        flow_id: esc.flow_id,
        event_type: "tls",
        flow: esc.facts.flow.clone(),
        client_hello: esc.facts.client_hello.clone(),
        server_hello: esc.facts.server_hello.clone(),
        certificate: esc.facts.certificate.clone(),
        cert_status: esc.facts.cert_status,
        client_cert_requested: false,
        alerts: Vec::new(),
        rule: esc.decision.rule.map(|i| esc.policy.rules()[i].name.clone()),
        expected_action: esc.decision.action.name(),
        actual_action: esc.decision.action.name(),
        reason: String::new(),
        monitor_rules: names(&esc.decision.monitor_rules),
        missing_facts: esc.decision.missing_facts.clone(),
        server_identity: esc.server_identity,
        decrypt: None,
    }
}

fn unix_secs(ns: u64) -> i64 {
    (ns / NS) as i64
}
