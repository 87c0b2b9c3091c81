//! A slow-path lcore's work, sans-IO: it takes the flows workers escalate,
//! decrypts them with an [`Interception`] each, runs server identity probes,
//! and hands what they produce to a [`Link`]: frames for its tx queues,
//! updates to the workers (a session ended; what it learned about a server;
//! servers not to decrypt), and events, key log lines and decrypted frames
//! for the control thread. The data plane's slow-path lcore drives it with
//! packets from the rings and a clock; tests drive it with frames.
//!
//! Nothing here is shared with another lcore: forgers, known keys and trust
//! stores are this lcore's own, built on first use.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use ahash::RandomState;
use rustls::pki_types::CertificateDer;
use rustls::sign::CertifiedKey;
use rustls::RootCertStore;
use sha2::{Digest, Sha256};
use tlsgate_config::facts::{ServerHelloFacts, TlsVersion};
use tlsgate_config::policy::{Action, FinalAction, Policy, Undecryptable};
use tlsgate_config::{FlowSettings, PinnedAction, SlowPathSettings};
use tlsgate_core::escalate::{Escalation, ProbeRequest, SlowRecord, SlowUpdate, ToSlowPath};
use tlsgate_core::event::{DecryptFacts, SessionEvent, TcpFacts};
use tlsgate_core::flow::FlowKey;
use tlsgate_core::identity::{ExclusionKey, ExclusionReason, ServerIdentity, ServerKey};
use tlsgate_core::outcome::{
    Cause, DecryptEnd, Ending, FailReason, Outcome, ServerIdentitySource, ShownCertificate, SlowPathFull,
    TakeoverFailure,
};
use tlsgate_core::packet::{flow_hash, worker_for, TcpFrame};
use tlsgate_core::tls::{certificate_facts, CertVerifier};

use crate::export::{DecryptedStream, Frames};
use crate::forge::Forger;
use crate::intercept::{Finished, Interception, Output};
use crate::keys::{Accepts, KeyMaker, LeafKeyStats, LeafKeys};
use crate::passive::live::LiveReader;
use crate::probe::{Probe, ProbeResult};
use crate::relay::{ClientFacing, Relay, RelayConfig};
use crate::tcp::Segment;
use crate::verify::ServerTrust;
use crate::wire::{header_into, segment_of, FlowTemplate};

/// The slow path's configuration, shared by every slow-path lcore.
#[derive(Clone)]
pub struct Interceptor {
    settings: SlowPathSettings,
    /// Makes RSA leaf keys for every lcore's pool, off the lcores.
    keys: Option<Arc<KeyMaker>>,
    idle_ns: u64,
    handshake_ns: u64,
    keylog: bool,
    decrypted: bool,
    /// `[mirror]`: decrypted streams also go out of the mirror port.
    mirror: bool,
}

impl Interceptor {
    /// From the settings' `[slowpath]` and `[flows]` (a decrypted session
    /// idle for `decided_timeout` is reset; its handshakes get
    /// `inspecting_timeout`); `keylog`/`decrypted`: whether the control
    /// thread writes a key log and a decrypted-traffic pcap. Starts the
    /// thread that makes RSA leaf keys (on the caller's CPUs: call it
    /// before the lcores start, from the control thread).
    pub fn new(settings: &SlowPathSettings, flows: &FlowSettings, keylog: bool, decrypted: bool) -> Interceptor {
        Interceptor {
            settings: settings.clone(),
            keys: KeyMaker::start(),
            idle_ns: u64::from(flows.decided_timeout) * NS,
            handshake_ns: u64::from(flows.inspecting_timeout) * NS,
            keylog,
            decrypted,
            mirror: false,
        }
    }

    /// Sends each decrypted session's synthetic stream to [`Link::mirror_frame`] as well.
    pub fn with_mirror(mut self, mirror: bool) -> Interceptor {
        self.mirror = mirror;
        self
    }

    /// Whether sessions' plaintext becomes synthetic frames (a pcap or a mirror takes them).
    fn streams(&self) -> bool {
        self.decrypted || self.mirror
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
/// How long a finished session is kept to answer a retransmitted FIN. It keeps
/// its TCP state only (its TLS connections and buffers are let go), does not
/// count against `slowpath.sessions`, and at most as many linger (the oldest
/// goes first).
const LINGER_NS: u64 = 2 * NS;
/// How often sessions' timers are looked at.
const SWEEP_NS: u64 = NS / 1000;
/// Flows a slow-path lcore reads passively at once (undecided ones included),
/// and how far each direction may be reordered: at most 2 GiB held out of order.
const PASSIVE_FLOWS: usize = 8_192;
const PASSIVE_WINDOW: usize = 128 << 10;
/// Servers whose last certificate this lcore remembers.
const LEARNED_CAPACITY: usize = 16_384;

tlsgate_core::counters! {
    /// Counters of one slow-path lcore.
    pub struct SlowPathCounters {
        /// Flows taken over from the workers.
        flows_taken_over,
        /// Flows refused at the session limit (`slowpath.when_full` applied).
        flows_refused,
        /// Sessions decrypted.
        sessions_decrypted,
        /// Sessions taken over that could not be decrypted.
        sessions_undecryptable,
        /// Sessions open now (a gauge; finished ones lingering 2 s to answer a retransmitted FIN not counted).
        sessions_now,
        /// Re-signed certificates in the forged caches now (a gauge).
        forged_cached_now,
        /// Packets of escalated flows received from the workers.
        packets_in,
        /// Frames sent on this lcore's tx queues.
        packets_out,
        /// Packets its rx queues got (under symmetric RSS), handed to their flows' workers.
        packets_handed_to_workers,
        /// Frames dropped for want of an mbuf or tx room.
        tx_dropped,
        /// Packets of flows this lcore does not hold.
        unknown_flow_packets,
        /// Plaintext bytes relayed client to server.
        plaintext_to_server,
        /// Plaintext bytes relayed server to client.
        plaintext_to_client,
        /// Certificates forged (forged-certificate cache misses).
        certificates_forged,
        /// Forges that used another key type than the original's, its pool not yet filled (not cached).
        leaf_key_fallbacks,
        /// RSA leaf keys made on the lcore, for a client that accepts no key type the pool held.
        leaf_keys_made_on_path,
        /// Records for the control thread lost to a full ring.
        records_lost,
        /// Copies of forwarded packets received, of flows a passive rule reads or may read.
        passive_copies,
        /// Sessions read passively to their end (no record failed).
        sessions_read_passively,
        /// Decrypted frames sent to the mirror port.
        mirrored,
        /// Decrypted frames the mirror port had no room for (or no mbuf), dropped.
        mirror_dropped,
        /// Server identity probes started.
        probes,
        /// Probes that learned the server's certificate.
        probes_learned,
    }
}

/// Where a slow-path lcore's output goes.
pub trait Link {
    /// Sends one frame out of port index `port`.
    fn send_frame(&mut self, port: usize, frame: &[u8]);
    /// Sends one frame made of `parts` (headers, then payload read in place)
    /// out of port index `port`: a link that builds frames in its own
    /// buffers copies each part once, straight in.
    fn send_frame_parts(&mut self, port: usize, parts: &[&[u8]]) {
        self.send_frame(port, &parts.concat());
    }
    /// Tells worker `worker` something.
    fn update(&mut self, worker: usize, update: SlowUpdate);
    /// Hands the control thread a record.
    fn record(&mut self, record: SlowRecord);
    /// Sends a decrypted stream's frame out of the mirror port (never waits:
    /// a frame without room is dropped and counted). Without a mirror, nothing.
    fn mirror_frame(&mut self, _frame: &[u8]) {}
}

/// What a frame from a worker belonged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOf {
    /// A session's flow: drive it (once per burst).
    Flow(FlowKey),
    /// A probe's (already driven).
    Probe,
    /// Nothing this lcore holds (counted), or not TCP.
    Unknown,
}

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
    shown: Option<ShownCertificate>,
    /// The forger of its CA (decrypt-resign), found once, not at every drive.
    forger: Option<[u8; 32]>,
    /// The deadline its entry in the timer heap is for (earlier entries of
    /// the flow are stale), or None when it has none there.
    armed: Option<u64>,
}

/// A flow's next timer in [`SlowLcore`]'s heap, the earliest on top.
struct Due {
    at: u64,
    key: FlowKey,
}

impl PartialEq for Due {
    fn eq(&self, other: &Due) -> bool {
        self.at == other.at
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Due) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    /// Reversed: `BinaryHeap` keeps the greatest on top.
    fn cmp(&self, other: &Due) -> std::cmp::Ordering {
        other.at.cmp(&self.at)
    }
}

/// What a policy needs on this lcore: its trust store for the upstream
/// handshakes and for certificate status.
struct PolicyMaterials {
    _policy: Arc<Policy>,
    /// The upstream handshakes' verifier and its verdicts, shared by the sessions.
    trust: Arc<ServerTrust>,
    verifier: CertVerifier,
}

/// One slow-path lcore's sessions, probes and caches.
pub struct SlowLcore {
    cfg: Interceptor,
    /// Which slow-path lcore this is.
    index: usize,
    /// How many workers there are.
    workers: usize,
    /// Boxed: [`SlowLcore::drive`] takes a flow out and puts it back on every
    /// burst, and a flow (two TLS connections, two TCP endpoints) is kilobytes.
    flows: HashMap<FlowKey, Box<Flow>, RandomState>,
    /// The flows' next timers (TCP retransmission, delayed ACK, deadlines):
    /// a tick looks at what is due, not at every flow.
    timers: BinaryHeap<Due>,
    /// Finished flows in the order they finished (when, which): they linger
    /// for [`LINGER_NS`], then go.
    lingering: VecDeque<(u64, FlowKey)>,
    /// Flows due at this tick (kept: one buffer for every tick).
    due: Vec<FlowKey>,
    forgers: HashMap<[u8; 32], Forger, RandomState>,
    /// The forged certificates' keys, shared by its forgers.
    keys: LeafKeys,
    known: HashMap<[u8; 32], Arc<CertifiedKey>, RandomState>,
    /// By the policy's address (the Arc kept inside keeps it valid).
    policies: HashMap<usize, PolicyMaterials, RandomState>,
    /// Its counters (the data plane adds what its I/O counts).
    pub counters: SlowPathCounters,
    last_sweep: u64,
    /// What each server was last seen presenting (leaf SHA-256) and its facts:
    /// servers present the same certificate session after session, so the
    /// workers are told only of changes and the leaf is parsed once.
    learned: HashMap<ServerKey, ([u8; 32], ServerIdentity), RandomState>,
    /// Probes running, by their flow.
    probes: HashMap<FlowKey, RunningProbe, RandomState>,
    /// For probes' ports and sequence numbers.
    rng: u64,
    /// Flows read passively (copies of their packets from the workers).
    passive: LiveReader,
    /// The headers of the frame being made (kept: one buffer for every segment sent).
    headers: Vec<u8>,
    /// The segment being read or sent (kept: one payload buffer for all).
    segment: Segment,
}

/// What an endpoint counted, as the event gives it.
fn tcp_facts(s: crate::tcp::TcpStats) -> TcpFacts {
    TcpFacts {
        segments_sent: s.segments_sent,
        segments_received: s.segments_received,
        retransmissions: s.retransmissions,
        timeouts: s.rto_expirations,
        out_of_order: s.ooo_buffered + s.ooo_dropped,
        out_of_order_dropped: s.ooo_dropped,
        zero_window_probes: s.zero_window_probes,
    }
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

impl SlowLcore {
    /// Slow-path lcore `index` of the data plane, serving `workers` workers;
    /// `seed` seeds the probes' ports and sequence numbers.
    pub fn new(cfg: Interceptor, index: usize, workers: usize, seed: u64) -> SlowLcore {
        let keys = LeafKeys::new(cfg.keys.as_deref(), cfg.settings.leaf_key_lifetime);
        SlowLcore {
            headers: Vec::new(),
            segment: Segment::default(),
            keys,
            cfg,
            index,
            workers,
            flows: HashMap::default(),
            timers: BinaryHeap::new(),
            lingering: VecDeque::new(),
            due: Vec::new(),
            forgers: HashMap::default(),
            known: HashMap::default(),
            policies: HashMap::default(),
            counters: SlowPathCounters::default(),
            last_sweep: 0,
            learned: HashMap::default(),
            probes: HashMap::default(),
            rng: seed | 1,
            passive: LiveReader::new(PASSIVE_FLOWS, PASSIVE_WINDOW),
        }
    }

    /// Takes what a worker handed over: a flow to decrypt, or a server to probe.
    pub fn take(&mut self, msg: ToSlowPath, now: u64, link: &mut dyn Link) {
        match msg {
            ToSlowPath::Flow(esc) => self.adopt(esc, now, link),
            ToSlowPath::Probe(req) => self.start_probe(req, now, link),
            ToSlowPath::Frame(frame) => {
                if let FrameOf::Flow(key) = self.on_frame(&frame, now, link, &mut || None) {
                    self.drive(&key, now, link);
                }
            }
            ToSlowPath::Copy(frame) => {
                self.counters.passive_copies += 1;
                let (mut frames, mut events) = (Frames::new(), Vec::new());
                self.passive.copy(now, &frame, &mut frames, &mut events);
                self.passive_out(frames, events, link);
            }
            ToSlowPath::Passive(watch) => self.passive.watch(*watch, now),
        }
    }

    /// What passive reading made: decrypted frames (pcap, mirror) and the events of sessions that ended.
    fn passive_out(&mut self, frames: Frames, events: Vec<SessionEvent>, link: &mut dyn Link) {
        if !frames.is_empty() {
            self.export(frames, link);
        }
        for ev in events {
            if let Some(d) = &ev.decrypt {
                self.counters.sessions_read_passively += u64::from(d.reason_code.is_none());
                self.counters.plaintext_to_server += d.bytes_to_server;
                self.counters.plaintext_to_client += d.bytes_to_client;
            }
            link.record(SlowRecord::Event(Box::new(ev)));
        }
    }

    /// Timers, at most every millisecond; true when they ran (the caller
    /// publishes the counters then).
    pub fn tick(&mut self, now: u64, link: &mut dyn Link) -> bool {
        if now.saturating_sub(self.last_sweep) < SWEEP_NS {
            return false;
        }
        self.last_sweep = now;
        self.sweep(now, link);
        let (mut frames, mut events) = (Frames::new(), Vec::new());
        self.passive.expire(now, self.cfg.handshake_ns, self.cfg.idle_ns, &mut frames, &mut events);
        self.passive_out(frames, events, link);
        true
    }

    fn adopt(&mut self, mut esc: Box<Escalation>, now: u64, link: &mut dyn Link) {
        if self.live_sessions() >= self.cfg.settings.sessions as usize {
            self.refuse(esc, now, link);
            return;
        }
        let Some((facing, forger)) = self.client_facing(&esc) else {
            // The policy's objects were checked at start; a reload is checked the same way.
            self.refuse(esc, now, link);
            return;
        };
        let trust = self.materials(&esc.policy).trust.clone();
        let relay = RelayConfig { trust, client_facing: facing, keylog: self.cfg.keylog };
        let client =
            if esc.client_is_lo { (esc.key.lo_addr, esc.key.lo_port) } else { (esc.key.hi_addr, esc.key.hi_port) };
        let offered = esc.facts.client_hello.as_ref().map(|c| c.versions.clone()).unwrap_or_default();
        let relay = Relay::new(relay)
            .with_client_versions(offered.contains(&TlsVersion::Tls12), offered.contains(&TlsVersion::Tls13));
        let icpt = Interception::new(&esc.tcp, relay, self.cfg.streams(), now)
            .with_handshake_timeout(now, self.cfg.handshake_ns);
        let shown = match esc.decision.action {
            Action::DecryptKnownKey { .. } => Some(ShownCertificate::KnownKey),
            _ => None,
        };
        self.counters.flows_taken_over += 1;
        let held = std::mem::take(&mut esc.held);
        let key = esc.key;
        let replaced = self.flows.insert(
            esc.key,
            Box::new(Flow {
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
                forger,
                armed: None,
            }),
        );
        if replaced.is_some_and(|f| f.finished.is_some()) {
            // A new connection on a lingering one's addresses and ports.
            self.lingering.retain(|(_, k)| *k != key);
        }
        // The ClientHello's first segments, held back by the worker, come first.
        for frame in &held {
            self.on_frame(frame, now, link, &mut || None);
        }
        if !held.is_empty() {
            self.drive(&key, now, link);
        }
        if let Some(f) = self.flows.get_mut(&key) {
            arm(&mut self.timers, key, f, self.cfg.idle_ns);
        }
        self.update_gauges();
    }

    /// Sessions open (finished ones lingering not counted). While a flow is
    /// driven it is out of the map, so a lingering one may be counted in
    /// `lingering` only.
    fn live_sessions(&self) -> usize {
        self.flows.len().saturating_sub(self.lingering.len())
    }

    /// At the session limit: the worker carries the decision out as
    /// `slowpath.when_full` says; the escalating packet is lost (the client
    /// retransmits it, and the worker then forwards or drops it).
    fn refuse(&mut self, esc: Box<Escalation>, now: u64, link: &mut dyn Link) {
        self.counters.flows_refused += 1;
        let action = match self.cfg.settings.when_full {
            tlsgate_config::SlowWhenFull::DoNotDecrypt => FinalAction::DoNotDecrypt,
            tlsgate_config::SlowWhenFull::Block => FinalAction::Block,
        };
        link.update(esc.worker, SlowUpdate::Refused { key: esc.key, action });
        let cause = Cause::SlowPathFull(SlowPathFull::SessionLimit(self.cfg.settings.sessions));
        let ev = base_event(&esc, now, action.into(), cause);
        link.record(SlowRecord::Event(Box::new(ev)));
    }

    /// How the session shows itself to the client, and the forger it uses (by its CA's SHA-256).
    fn client_facing(&mut self, esc: &Escalation) -> Option<(ClientFacing, Option<[u8; 32]>)> {
        match esc.decision.action {
            Action::DecryptResign { ca } => {
                let ca = esc.policy.cas().get(ca)?;
                let id: [u8; 32] = Sha256::digest(&ca.cert_der).into();
                if !self.forgers.contains_key(&id) {
                    let f =
                        Forger::new(&ca.cert_der, ca.private_key(), self.cfg.settings.forged_cache as usize).ok()?;
                    self.forgers.insert(id, f);
                }
                Some((ClientFacing::Resign, Some(id)))
            }
            Action::DecryptKnownKey { known_key, .. } => {
                let kk = esc.policy.known_keys().get(known_key)?;
                if let Some(k) = self.known.get(&kk.cert_sha256) {
                    return Some((ClientFacing::KnownKey(k.clone()), None));
                }
                let k = certified_key(&kk.cert_der, kk.private_key()).ok()?;
                self.known.insert(kk.cert_sha256, k.clone());
                Some((ClientFacing::KnownKey(k), None))
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
            PolicyMaterials { _policy: policy.clone(), trust: ServerTrust::new(roots), verifier }
        })
    }

    /// A frame of an escalated flow (or of a probe). `pending` gives what
    /// the frame's worker has handed over since the last look (it pushes a
    /// flow before the flow's first packet), taken when the frame's flow is
    /// not yet known.
    pub fn on_frame(
        &mut self,
        data: &[u8],
        now: u64,
        link: &mut dyn Link,
        pending: &mut dyn FnMut() -> Option<ToSlowPath>,
    ) -> FrameOf {
        let Some(t) = TcpFrame::parse(data) else { return FrameOf::Unknown };
        let (key, _) = FlowKey::of(&t);
        // A session's frame (nearly all of them) costs one lookup.
        if let Some(flow) = self.flows.get_mut(&key) {
            return Self::session_frame(flow, &t, key, &mut self.segment, now);
        }
        while let Some(msg) = pending() {
            self.take(msg, now, link);
        }
        if let Some(p) = self.probes.get_mut(&key) {
            p.probe.on_segment(&segment_of(&t), now);
            self.drive_probe(&key, now, link);
            return FrameOf::Probe;
        }
        match self.flows.get_mut(&key) {
            Some(flow) => Self::session_frame(flow, &t, key, &mut self.segment, now),
            None => {
                self.counters.unknown_flow_packets += 1;
                FrameOf::Unknown
            }
        }
    }

    /// A frame of a session taken over: into its endpoints, the payload read in place.
    fn session_frame(flow: &mut Flow, t: &TcpFrame<'_>, key: FlowKey, seg: &mut Segment, now: u64) -> FrameOf {
        let from_client = (t.src, t.src_port) == flow.client;
        if from_client && flow.template.is_none() {
            flow.template = Some(FlowTemplate::from_client_frame(t));
        }
        // Nothing can be sent before the client's first frame shows the link layer.
        if flow.template.is_none() {
            return FrameOf::Unknown;
        }
        header_into(t, seg);
        flow.icpt.on_segment_with(from_client, seg, t.payload(), now);
        FrameOf::Flow(key)
    }

    /// Runs one flow: the relay, what it learned, what it sends.
    pub fn drive(&mut self, key: &FlowKey, now: u64, link: &mut dyn Link) {
        let Some(mut flow) = self.flows.remove(key) else { return };
        let mut out = Output::default();
        {
            let mut forger = flow.forger.as_ref().and_then(|id| self.forgers.get_mut(id));
            let mut forged = 0u64;
            let mut shown = None;
            let keys = &mut self.keys;
            let mut forge = |chain: &[Vec<u8>], trusted: bool, accepts: Accepts| -> Option<Arc<CertifiedKey>> {
                let f = forger.as_deref_mut()?;
                let before = f.stats().forged;
                let k = f.forge(keys, chain.first()?, trusted, accepts).ok()?;
                forged += f.stats().forged - before;
                shown = Some(if trusted { ShownCertificate::Forged } else { ShownCertificate::ForgedUntrusted });
                Some(k)
            };
            flow.icpt.drive(now, &mut forge, &mut out);
            self.counters.certificates_forged += forged;
            if shown.is_some() {
                flow.shown = shown;
            }
        }
        if let Some((chain, _trusted)) = out.upstream_certificate.take() {
            self.learn(&mut flow, chain, now, link);
        }
        if !out.keylog.is_empty() && self.cfg.keylog {
            link.record(SlowRecord::KeyLog(std::mem::take(&mut out.keylog)));
        }
        if self.cfg.streams() && !out.plaintext.is_empty() {
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
            self.export(frames, link);
        }
        if flow.icpt.outcome.failed.is_some() && flow.failure_action.is_none() && !flow.rejected_as_expected {
            self.on_failure(&mut flow, link);
        }
        self.transmit(&mut flow, now, link);
        if flow.finished.is_none() {
            if let Some(how) = flow.icpt.finished(now, self.cfg.idle_ns) {
                self.transmit(&mut flow, now, link);
                self.finish(&mut flow, Some(how), now, link);
                // It lingers with its TCP state only.
                flow.icpt.release();
                self.lingering.push_back((now, *key));
            }
        }
        arm(&mut self.timers, *key, &mut flow, self.cfg.idle_ns);
        self.flows.insert(*key, flow);
    }

    /// What the upstream handshake showed: the server identity cache of every
    /// worker learns it (for TLS 1.3 too: the slow path sees the certificate).
    fn learn(&mut self, flow: &mut Flow, chain: Vec<Vec<u8>>, now: u64, link: &mut dyn Link) {
        let sni = flow.esc.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
        let f = &flow.esc.facts.flow;
        let key = ServerKey::new(f.dest_ip, f.dest_port, sni.as_deref());
        let policy = flow.esc.policy.clone();
        flow.upstream = self.learn_server(&key, chain, Some(&policy), now, link);
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
        link: &mut dyn Link,
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
            chain: chain.into(),
            cert_status: status,
            version: None,
            cipher_suite: None,
            client_cert_requested: false,
            learned_at_ns: now,
        };
        for w in 0..self.workers {
            link.update(w, SlowUpdate::Learned { key: key.clone(), identity: identity.clone() });
        }
        self.learned.insert(key.clone(), (leaf_id, identity.clone()));
        Some(identity)
    }

    /// The session cannot be decrypted: later sessions to the server (or,
    /// for a client that rejected the re-signed certificate, to the SNI) are
    /// handled at their ClientHello; this one ends, by reset if its action
    /// resets.
    fn on_failure(&mut self, flow: &mut Flow, link: &mut dyn Link) {
        let Some((reason, _)) = flow.icpt.outcome.failed.clone() else { return };
        if reason == FailReason::ClientRejectedCertificate && flow.shown == Some(ShownCertificate::ForgedUntrusted) {
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
            // The server has an ECH key the client sealed its real ClientHello
            // to: the client's next ECH sessions to it cannot be decrypted.
            FailReason::EchRejected => {
                let u = Undecryptable::Ech;
                (Some(server), policy.undecryptable(u), ExclusionReason::Undecryptable(u))
            }
            // The client's garbage or its own incompatibility says nothing about the server.
            other if flow.icpt.outcome.failed_by_client => {
                let u = other.undecryptable();
                (None, policy.undecryptable(u), ExclusionReason::Undecryptable(u))
            }
            other => {
                let u = other.undecryptable();
                (Some(server), policy.undecryptable(u), ExclusionReason::Undecryptable(u))
            }
        };
        if let Some(key) = key {
            for w in 0..self.workers {
                link.update(w, SlowUpdate::Excluded { key: key.clone(), action, reason: why });
            }
        }
        if action == FinalAction::BlockWithReset {
            flow.icpt.reset_both();
        }
        flow.failure_action = Some(action);
    }

    /// The gauges: sessions now, and what the forged caches hold.
    fn update_gauges(&mut self) {
        self.counters.sessions_now = self.live_sessions() as u64;
        self.counters.forged_cached_now = self.forgers.values().map(|f| f.stats().cached).sum();
        self.keys.receive();
        let LeafKeyStats { fallbacks, made_on_path, .. } = self.keys.stats();
        self.counters.leaf_key_fallbacks = fallbacks;
        self.counters.leaf_keys_made_on_path = made_on_path;
    }

    /// Starts a probe: its flow is announced to the worker that will see its
    /// packets, then its SYN leaves toward the server.
    fn start_probe(&mut self, req: ProbeRequest, now: u64, link: &mut dyn Link) {
        if self.probes.len() >= PROBES_MAX || self.workers == 0 {
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
            &Segment {
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
        let template = FlowTemplate::from_client_frame(&t);
        l2.clear();
        let worker = flow_hash(&probe_frame).map_or(0, |h| worker_for(h, self.workers));
        link.update(worker, SlowUpdate::Probe { key, lcore: self.index as u8 });
        let probe = Probe::new(isn, req.server.sni.as_deref(), req.server.ip, &req.alpn, now);
        self.counters.probes += 1;
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
        self.drive_probe(&key, now, link);
    }

    fn drive_probe(&mut self, key: &FlowKey, now: u64, link: &mut dyn Link) {
        let Some(mut p) = self.probes.remove(key) else { return };
        if p.ended_at.is_none() {
            match p.probe.drive(now) {
                Some(ProbeResult::Chain(chain)) => {
                    self.counters.probes_learned += 1;
                    self.learn_server(&p.server, chain, None, now, link);
                    p.ended_at = Some(now);
                }
                Some(ProbeResult::Failed(_)) => p.ended_at = Some(now),
                None => {}
            }
        }
        while let Some(seg) = p.probe.poll_transmit(now) {
            let frame = p.template.frame(false, &seg);
            link.send_frame(p.server_port_index, &frame);
        }
        if p.ended_at.is_some_and(|at| now.saturating_sub(at) > LINGER_NS) {
            link.update(p.worker, SlowUpdate::Ended { key: *key });
            return;
        }
        self.probes.insert(*key, p);
    }

    /// Sends what the flow's endpoints have to send.
    fn transmit(&mut self, flow: &mut Flow, now: u64, link: &mut dyn Link) {
        let Some(template) = &flow.template else { return };
        let client_port = flow.esc.client_port;
        let server_port = client_port ^ 1;
        let (headers, seg) = (&mut self.headers, &mut self.segment);
        // The payload goes from the TCP endpoint's send buffer straight into the frame.
        while let Some((to_client, [a, b])) = flow.icpt.poll_transmit_ref(now, seg) {
            let port = if to_client { client_port } else { server_port };
            template.headers_into(to_client, seg, [a, b], headers);
            link.send_frame_parts(port, &[headers, a, b]);
        }
    }

    /// A decrypted stream's frames: to the mirror port, and to the control thread for the pcap.
    fn export(&self, frames: Frames, link: &mut dyn Link) {
        if self.cfg.mirror {
            for (_, f) in &frames {
                link.mirror_frame(f);
            }
        }
        if self.cfg.decrypted {
            link.record(SlowRecord::Decrypted(frames));
        }
    }

    /// A session is over: its event, and the worker forgets the flow.
    fn finish(&mut self, flow: &mut Flow, how: Option<Finished>, now: u64, link: &mut dyn Link) {
        flow.finished = Some((now, how));
        self.update_gauges();
        let o = &flow.icpt.outcome;
        self.counters.plaintext_to_server += o.bytes_to_server;
        self.counters.plaintext_to_client += o.bytes_to_client;
        if let Some(st) = &mut flow.stream {
            let mut frames = Frames::new();
            st.finish(now, &mut frames);
            self.export(frames, link);
        }
        let ev = self.session_event(flow, how, now);
        if matches!(ev.outcome.cause, Cause::Decrypted { .. }) {
            self.counters.sessions_decrypted += 1;
        } else {
            self.counters.sessions_undecryptable += 1;
        }
        link.record(SlowRecord::Event(Box::new(ev)));
        link.update(flow.esc.worker, SlowUpdate::Ended { key: flow.esc.key });
    }

    fn session_event(&mut self, flow: &Flow, how: Option<Finished>, now: u64) -> SessionEvent {
        let esc = &flow.esc;
        let o = &flow.icpt.outcome;
        let asked = esc.decision.action;
        let (client_tcp, server_tcp) = flow.icpt.tcp_ends();
        let how = match (how, &o.closed) {
            (Some(Finished::Idle), _) => Ending::Idle,
            (Some(Finished::HandshakeTimeout), _) => Ending::HandshakeTimeout,
            (_, Some(close)) => Ending::Tls(close.clone()),
            (_, None) => Ending::Tcp,
        };
        let end = DecryptEnd { how, client_tcp, server_tcp };
        let (carried_out, cause) = match (&o.failed, flow.failure_action) {
            (Some(_), None) if flow.rejected_as_expected => (asked, Cause::UntrustedRejected { end }),
            (Some((reason, detail)), Some(action)) => {
                let failure =
                    TakeoverFailure { reason: *reason, detail: detail.clone(), by_client: o.failed_by_client, end };
                (action.into(), Cause::TakeoverFailed(Box::new(failure)))
            }
            _ if o.established.is_some() => {
                let shown = flow.shown.unwrap_or(ShownCertificate::KnownKey);
                (asked, Cause::Decrypted { shown, end })
            }
            _ => (asked, Cause::HandshakesIncomplete { end }),
        };
        let mut ev = base_event(esc, now, carried_out, cause);
        if o.failed.as_ref().is_some_and(|(r, _)| *r == FailReason::ClientAuth) {
            ev.client_cert_requested = true;
        }
        if let Some(up) = &flow.upstream {
            ev.certificate = up.certificate.clone();
            ev.cert_status = up.cert_status;
            ev.certificate_source = ServerIdentitySource::Handshake;
            ev.outcome.server_identity = ServerIdentitySource::Handshake;
        }
        let mut decrypt = DecryptFacts {
            server_trusted: o.trusted,
            shown_certificate: flow.shown,
            bytes_to_server: o.bytes_to_server,
            bytes_to_client: o.bytes_to_client,
            records_to_server: o.records.0,
            records_to_client: o.records.1,
            server_handshake_ns: o.timings.server_certificate_ns,
            client_handshake_ns: o
                .timings
                .established_ns
                .map(|e| e.saturating_sub(o.timings.server_certificate_ns.unwrap_or(0))),
            first_plaintext_ns: o.timings.first_plaintext_ns,
            tcp_client: Some(tcp_facts(flow.icpt.tcp_stats().0)),
            tcp_server: Some(tcp_facts(flow.icpt.tcp_stats().1)),
            ..Default::default()
        };
        if let Some((up_version, cipher, client_version, alpn)) = &o.established {
            let version = TlsVersion::from_wire(u16::from(*up_version));
            ev.server_hello = Some(ServerHelloFacts {
                version,
                wire_version: u16::from(*up_version),
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
        ev.decrypt = Some(Box::new(decrypt));
        ev
    }

    /// Timers: the flows whose deadline has come (TCP timers, idleness,
    /// handshake and close deadlines: see [`arm`]), and finished flows past
    /// their linger. What it does grows with what is due, not with the flows.
    fn sweep(&mut self, now: u64, link: &mut dyn Link) {
        let most = self.cfg.settings.sessions as usize;
        let mut removed = false;
        while let Some(&(at, key)) = self.lingering.front() {
            if now.saturating_sub(at) <= LINGER_NS && self.lingering.len() <= most {
                break;
            }
            self.lingering.pop_front();
            if self.flows.get(&key).is_some_and(|f| f.finished.is_some_and(|(t, _)| t == at)) {
                self.flows.remove(&key);
                removed = true;
            }
        }
        if removed {
            self.update_gauges();
        }
        let idle_ns = self.cfg.idle_ns;
        let mut due = std::mem::take(&mut self.due);
        while self.timers.peek().is_some_and(|d| d.at <= now) {
            let Due { at, key } = self.timers.pop().expect("peeked");
            // Gone, or armed again since for an earlier deadline: stale.
            let Some(f) = self.flows.get_mut(&key) else { continue };
            if f.armed == Some(at) {
                f.armed = None;
                due.push(key);
            }
        }
        for k in due.drain(..) {
            let Some(f) = self.flows.get_mut(&k) else { continue };
            let next = if f.finished.is_none() { f.icpt.next_deadline(idle_ns) } else { f.icpt.poll_timeout() };
            if next.is_some_and(|t| t <= now) {
                self.drive(&k, now, link);
            } else {
                // Its deadline moved later since it was armed.
                arm(&mut self.timers, k, f, idle_ns);
            }
        }
        self.due = due;
        // Entries go stale when a deadline moves earlier; they leave as they
        // come due, but a heap far larger than the flows is rebuilt.
        if self.timers.len() > 4 * self.flows.len() + 4096 {
            self.timers.clear();
            for (k, f) in &mut self.flows {
                f.armed = None;
                arm(&mut self.timers, *k, f, idle_ns);
            }
        }
        let probes: Vec<FlowKey> = self.probes.keys().copied().collect();
        for k in probes {
            self.drive_probe(&k, now, link);
        }
    }

    /// Starts closing every session (close_notify and FIN both ways); the
    /// caller keeps driving them for a moment so that it all goes out, then
    /// calls [`SlowLcore::finish_all`].
    pub fn close_all(&mut self) {
        for f in self.flows.values_mut() {
            if f.finished.is_none() {
                f.icpt.close();
            }
        }
    }

    /// Drives every session once.
    pub fn drive_all(&mut self, now: u64, link: &mut dyn Link) {
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for k in &keys {
            self.drive(k, now, link);
        }
    }

    /// At shutdown, after [`SlowLcore::close_all`]: every session still open gets its event.
    pub fn finish_all(&mut self, now: u64, link: &mut dyn Link) {
        let (mut frames, mut events) = (Frames::new(), Vec::new());
        self.passive.finish(now, &mut frames, &mut events);
        self.passive_out(frames, events, link);
        let keys: Vec<FlowKey> = self.flows.keys().copied().collect();
        for k in keys {
            if let Some(mut f) = self.flows.remove(&k) {
                if f.finished.is_none() {
                    self.finish(&mut f, None, now, link);
                }
            }
        }
        self.timers.clear();
        self.lingering.clear();
        self.counters.sessions_now = 0;
    }
}

/// Puts `flow`'s next deadline in the timer heap, unless an entry for it or
/// for an earlier one is there (that one, when it comes, re-arms): TCP
/// timers, and while the session is open its idle, handshake and close
/// deadlines (`idle_ns` of silence ends it).
fn arm(timers: &mut BinaryHeap<Due>, key: FlowKey, flow: &mut Flow, idle_ns: u64) {
    let next = if flow.finished.is_none() { flow.icpt.next_deadline(idle_ns) } else { flow.icpt.poll_timeout() };
    if let Some(at) = next {
        if flow.armed.is_none_or(|a| at < a) {
            timers.push(Due { at, key });
            flow.armed = Some(at);
        }
    }
}

/// The event of an escalated session with the fast path's facts.
fn base_event(esc: &Escalation, now: u64, carried_out: Action, cause: Cause) -> SessionEvent {
    let name = |i: &usize| esc.policy.rules()[*i].name.clone();
    SessionEvent {
        timestamp_ns: now,
        started_ns: 0,
        flow_id: esc.flow_id,
        tls: true,
        flow: esc.facts.flow.clone(),
        client_hello: esc.facts.client_hello.clone(),
        server_hello: esc.facts.server_hello.clone(),
        certificate: esc.facts.certificate.clone(),
        certificate_source: if esc.facts.certificate.is_some() {
            esc.server_identity
        } else {
            ServerIdentitySource::Unknown
        },
        cert_status: esc.facts.cert_status,
        ocsp_stapled: esc.facts.ocsp_stapled,
        client_cert_requested: false,
        unread: None,
        evasions: esc.evasions,
        starttls: esc.facts.starttls,
        quic_version: None,
        connect_target: esc.facts.connect_target.clone(),
        alerts: Vec::new(),
        outcome: Outcome {
            carried_out,
            asked: esc.decision.action,
            rule: esc.decision.rule.as_ref().map(name),
            cause,
            cut_short: None,
            monitor_rules: esc.decision.monitor_rules.iter().map(name).collect(),
            missing_facts: esc.decision.missing_facts.clone(),
            server_identity: esc.server_identity,
        },
        decrypt: None,
        dns: None,
    }
}

fn unix_secs(ns: u64) -> i64 {
    (ns / NS) as i64
}
