//! The inspector: per worker, it turns each TCP segment into a verdict
//! (forward, drop, or hand to the slow path), watching TLS handshakes on
//! flows it has not decided yet, evaluating the policy phase by phase, and
//! producing session events and the TCP resets of block-with-reset.
//! Sans-IO: bytes and a time in, a verdict, events and frames out; the
//! worker moves the mbufs.
//!
//! A packet of a flow being inspected goes through four steps, each a
//! method below: [`feed`](Inspector::feed) the observer, read what it saw and
//! [`evaluate`](Judge::evaluate) the policy, decide what this packet
//! [`becomes`](Judge::next_step) (held, forwarded, the flow handed over or
//! decided), and [`carry it out`](Inspector::carry_out). The flow's
//! lifecycle is [`session::FlowState`]; outcomes are [`Cause`]s.

mod dns;
mod normalize;
mod quic;
mod session;

pub use normalize::{Anomaly, Evasions};

use std::sync::Arc;

use tlsgate_config::facts::{cipher_suite_name, FlowFacts, SessionFacts, TlsVersion};
use tlsgate_config::policy::{Action, Decision, Evaluation, FinalAction, Policy, Undecryptable};
use tlsgate_config::{
    Checksums, Conflicts, DnsSettings, FlowSettings, FragmentsWhenFull, HandshakeEvents, Midstream, PinnedAction,
    SlowPathSettings, SlowWhenFull, Unjudged, WhenFull,
};

use crate::escalate::{Escalation, PassiveWatch, ProbeRequest, SlowUpdate, TcpSeen, TcpSideSeen};
use crate::event::SessionEvent;
use crate::flow::{FlowId, FlowKey, FlowTable};
use crate::fragment::{Defrag, Defragmenter, FragmentLimits, Refusal};
use crate::identity::{ExclusionCache, ExclusionReason, ServerIdentity, ServerIdentityCache, ServerKey};
use crate::outcome::{
    Cause, FlowEnd, HandshakeFailure, NotTakenOver, NotTls, Outcome, ServerIdentitySource, Side, SlowPathFull,
};
use crate::packet::{
    build_reset, classify, flow_hash, tcp_flags, to_ip, worker_for, Addr, IpFragment, Layer, TcpFrame,
};
use crate::tls::certificate::certificate_facts;
use crate::tls::status::CertVerifier;
use crate::tls::{Direction, HandshakeObserver, LargeMessages, ObserverEvent, ObserverLimits, PreludeLimits};
use session::{FlowState, Phase, Resolution, Seen, Session};

/// What happens to the packet just inspected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send it on.
    Forward,
    /// Drop it, for this reason.
    Drop(DropReason),
    /// Hand it to slow-path lcore n: the flow is being decrypted there.
    Escalate(u8),
    /// Not sent: the frame in [`Output::released`] takes its place (a DNS
    /// answer rewritten). Not a drop.
    Replaced,
}

crate::labels! {
    /// Why a packet was dropped (by the inspector or the worker).
    pub enum DropReason {
    /// The egress tx queue had no room, and the staging burst was full.
    TxFull => tx_full,
    /// The ring to the worker that owns the flow was full.
    DispatchFull => dispatch_full,
    /// Still unsent when the appliance stopped.
    Shutdown => shutdown,
    /// The flow is blocked by the decryption policy.
    Policy => policy,
    /// A new flow found the flow table full (`flows.when_full = "drop"`).
    FlowTableFull => flow_table_full,
    /// A flow seen mid-stream (`flows.midstream = "block"`).
    Midstream => midstream,
    /// The ring to the slow-path lcore decrypting the flow was full.
    SlowPathFull => slowpath_full,
    /// A segment of an incomplete ClientHello held back (a copy goes on to
    /// the server unless the slow path takes the flow).
    Held => held,
    /// A segment of a flow being inspected that its receiver would drop
    /// (`flows.normalize.unjudged = "drop"`).
    Unjudged => unjudged,
    /// A segment resending judged bytes with other bytes (`flows.normalize.conflicts`).
    Conflict => conflict,
    /// An IP fragment held until its datagram is complete (a copy goes on
    /// once the datagram is judged, unless it is blocked).
    FragmentHeld => fragment_held,
    /// A QUIC client datagram held until its flow's ClientHello is whole and
    /// judged (a copy goes on if the flow is forwarded).
    QuicHeld => quic_held,
    /// An IP fragment refused: overlapping, a duplicate, malformed, or its
    /// datagram cannot be held (`flows.fragments.when_full = "drop"`).
    Fragment => fragment,
    /// A datagram's fragments handed to the worker that owns its flow.
    Redirected => redirected,
    }
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
    /// Held-back frames to send on toward their receiver, in order (a
    /// ClientHello that turned out not to need answering by the slow path,
    /// the fragments of a datagram judged whole).
    pub released: Vec<Vec<u8>>,
    /// Whole segments (reassembled from IP fragments) for a slow-path lcore.
    pub to_slow_path: Vec<(u8, Vec<u8>)>,
    /// Copies of forwarded packets for the slow-path lcore that reads (or
    /// may read) their flow passively.
    pub copies: Vec<(u8, Vec<u8>)>,
    /// Flows a passive rule decided to read, for their slow-path lcore.
    pub passive: Vec<(u8, Box<PassiveWatch>)>,
    /// Fragments of a datagram whose flow another worker owns (by index), to
    /// hand to it; they arrived on this packet's port.
    pub redirected: Vec<(usize, Vec<u8>)>,
}

crate::counters! {
    /// The inspector's counters (plain; the worker publishes them).
    pub struct InspectCounters {
        /// Frames that are not TCP over IP (forwarded untouched).
        not_tcp,
        /// Flows tracked from their SYN.
        flows,
        /// TCP flows in the table now (a gauge).
        flows_now,
        /// QUIC flows in their table now (a gauge).
        quic_flows_now,
        /// Servers and SNIs in the exclusion cache now (a gauge).
        exclusions_now,
        /// Servers in the server identity cache now (a gauge).
        server_identities_now,
        /// New flows that found the table full, with nothing in it to forget
        /// (`flows.when_full` applied).
        table_full,
        /// Flows forgotten to make room for a new one: embryonic (no payload
        /// yet, as a SYN flood's) or closed, oldest first.
        evicted,
        /// Flows first seen mid-stream.
        midstream,
        /// Sessions decided (one event each).
        sessions,
        /// Flows whose first bytes were not TLS.
        not_tls,
        /// Handshakes that could not be parsed.
        malformed,
        /// Handshakes larger than the buffer.
        overflow,
        /// Server handshake messages larger than `flows.handshake_buffer` read whole (within `flows.server_message_limit`).
        large_messages,
        /// Server handshake messages within `flows.server_message_limit` left unread: the worker's `flows.large_message_budget` was in use (also counted as `overflow`).
        large_messages_refused,
        /// Packets dropped by block verdicts.
        blocked_packets,
        /// Resets made.
        resets,
        /// Flows expired idle.
        expired,
        /// Sessions whose verdict was do-not-decrypt.
        verdict_do_not_decrypt,
        /// Sessions whose verdict was block.
        verdict_block,
        /// Sessions whose verdict was block-with-reset.
        verdict_block_with_reset,
        /// Sessions the policy asked to decrypt.
        decrypt_asked,
        /// Sessions handed to the slow path to decrypt.
        escalated,
        /// Decrypt decisions the slow path could not take (its ring full), carried out as `slowpath.when_full` says.
        escalation_refused,
        /// Sessions handled at the ClientHello by the exclusion cache.
        excluded,
        /// TLS sessions that followed a cleartext prelude (STARTTLS, HTTP CONNECT).
        preludes,
        /// Cleartext preludes that did not lead to TLS (refused, abandoned, past the limits).
        prelude_without_tls,
        /// Segments of flows being inspected with a bad IPv4 or TCP checksum (not judged).
        unjudged_bad_checksum,
        /// Segments carrying data without the ACK flag (not judged).
        unjudged_no_ack,
        /// Segments acknowledging data never sent (not judged).
        unjudged_ack_of_unsent,
        /// Segments starting past the receive window (not judged).
        unjudged_out_of_window,
        /// Segments with a PAWS-old timestamp (not judged).
        unjudged_paws_old,
        /// Segments with an unexpected (or missing) TCP-MD5 option (not judged).
        unjudged_tcp_md5,
        /// RSTs not exactly at the next sequence number (ignored).
        rst_ignored,
        /// Segments resending judged bytes with other bytes.
        conflicting_retransmissions,
        /// IP fragments of datagrams that may carry TCP.
        fragments,
        /// Datagrams reassembled from fragments and judged whole.
        fragments_reassembled,
        /// Datagrams discarded for overlapping fragments (RFC 5722).
        fragment_overlaps,
        /// Fragments dropped as exact duplicates.
        fragment_duplicates,
        /// Fragments of malformed datagrams, or of datagrams with too many fragments.
        fragments_malformed,
        /// Incomplete datagrams timed out.
        fragments_timed_out,
        /// Incomplete datagrams forgotten to make room for new ones (oldest first).
        fragments_evicted,
        /// Fragments that could not be held (`flows.fragments.when_full` applied).
        fragments_full,
        /// Reassembled datagrams handed to the worker that owns their flow.
        fragments_redirected,
        /// QUIC flows tracked from their first Initial.
        quic_flows,
        /// QUIC client datagrams forwarded before their flow's decision because
        /// the worker's budget for holding them was spent.
        quic_hold_full,
        /// New QUIC connections on the 5-tuple of a forwarded one (judged anew).
        quic_reconnects,
        /// QUIC flows judged without a readable ClientHello (`quic_undecodable`).
        quic_undecodable,
        /// UDP datagrams that are not QUIC (forwarded untouched).
        udp_not_quic,
        /// DNS answers read (`[dns] strip_ech`).
        dns_answers,
        /// DNS answers rewritten without their ECH configurations.
        dns_ech_stripped,
        /// `ech` parameters removed from HTTPS and SVCB records.
        dns_ech_removed,
        /// DNS answers forwarded untouched: truncated (TC), the client asks again over TCP.
        dns_untouched_truncated,
        /// DNS answers forwarded untouched: not readable to their end, or a bad UDP checksum.
        dns_untouched_malformed,
        /// DNS answers with ECH forwarded untouched: they came in IP fragments.
        dns_untouched_fragmented,
        /// Copies for passive reading the slow path's ring had no room for (the session's reading fails).
        passive_copies_lost,
    }
}

/// Per-worker inspection state: the flow table, and everything that judges
/// a session (kept apart so that a session can be judged in place, in its
/// table slot).
pub struct Inspector {
    table: FlowTable<FlowState>,
    /// QUIC flows (UDP; a TCP flow may share their 5-tuple).
    quic: FlowTable<quic::QuicState>,
    /// Bytes of QUIC client datagrams held before their flows' decisions.
    quic_held_bytes: usize,
    fragments: Defragmenter,
    /// With software dispatch, how many workers share the flows (a
    /// datagram's fragments hash by address only, its flow by ports too).
    dispatch: Option<usize>,
    judge: Judge,
}

/// Everything but the flow table: caches, policy, settings, counters.
struct Judge {
    certificates: CertificateCache,
    /// What servers' certificates were, learned from earlier handshakes
    /// (TLS <= 1.2 shows the certificate) and from the slow path, so that a
    /// session's server facts are known at its ClientHello. Per worker.
    identities: Option<ServerIdentityCache>,
    policy: Arc<Policy>,
    verifier: CertVerifier,
    settings: FlowSettings,
    /// Sessions decided before the server's first flight are read on to it
    /// (`[events] handshake = "full"`).
    full_handshake: bool,
    /// A replay: a session blocked at its ClientHello is read on through the
    /// server's answer the capture holds, for its event (inline the server
    /// never gets the ClientHello, so there is nothing to read).
    reads_past_blocks: bool,
    port_names: Arc<[String]>,
    /// `[dns]`.
    dns: DnsSettings,
    worker: u64,
    next_flow: u64,
    slow: Option<SlowPlan>,
    /// When the table last forgot a flow to make room: while it does, a flow
    /// first seen mid-stream may be one it forgot, and is inspected.
    last_eviction_ns: Option<u64>,
    /// Room for servers' large handshake messages, shared by this worker's observers.
    large_messages: LargeMessages,
    counters: InspectCounters,
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

/// One segment as the steps see it.
struct Segment<'a> {
    t: &'a TcpFrame<'a>,
    /// The IP fragments it came in (else it came as itself).
    wire: Option<&'a [Vec<u8>]>,
    from_client: bool,
    /// The port the client's packets enter by.
    client_port: usize,
    /// RST, or FIN from both sides.
    closed: bool,
}

impl Segment<'_> {
    /// Copies of the frames the segment came in.
    fn wire_frames(&self) -> Vec<Vec<u8>> {
        match self.wire {
            Some(w) => w.to_vec(),
            None => vec![self.t.frame().to_vec()],
        }
    }
}

/// What a packet of a flow being inspected becomes.
enum Step {
    /// The flow stays undecided; this packet's verdict.
    Undecided(Verdict),
    /// The session is decided; `sent_after_held`: this packet went out
    /// behind the frames that were held (so it is not forwarded again).
    Decided(Resolution, bool),
    /// The flow goes to this slow-path lcore.
    TakenOver(u8),
}

/// Whether the slow path takes a decrypt decision over.
enum TakeOver {
    /// To this slow-path lcore.
    Escalate(u8),
    /// Not: the session is resolved by the exclusion cache.
    Excluded(Resolution),
    /// Not: why (the decision is carried out as do-not-decrypt).
    Refused(NotTakenOver),
}

impl Inspector {
    /// An inspector for worker `worker`.
    pub fn new(
        worker: usize,
        policy: Arc<Policy>,
        settings: &FlowSettings,
        port_names: Arc<[String]>,
    ) -> Result<Inspector, String> {
        let verifier = CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)?;
        let f = &settings.fragments;
        let limits = FragmentLimits {
            capacity: f.capacity as usize,
            max_bytes: f.max_bytes as usize,
            max_fragments: f.max_fragments as usize,
            timeout_ns: f.timeout as u64 * NS,
        };
        Ok(Inspector {
            table: FlowTable::new(settings.capacity as usize),
            quic: FlowTable::new((settings.capacity as usize / 4).max(16)),
            quic_held_bytes: 0,
            fragments: Defragmenter::new(limits),
            dispatch: None,
            judge: Judge {
                certificates: CertificateCache::default(),
                identities: (settings.server_cache > 0).then(|| {
                    ServerIdentityCache::new(settings.server_cache as usize, settings.server_cache_ttl as u64 * NS)
                }),
                policy,
                verifier,
                settings: settings.clone(),
                full_handshake: true,
                reads_past_blocks: false,
                port_names,
                dns: DnsSettings::default(),
                worker: worker as u64,
                next_flow: 0,
                slow: None,
                last_eviction_ns: None,
                large_messages: LargeMessages::new(
                    settings.server_message_limit as usize,
                    settings.large_message_budget as usize,
                ),
                counters: InspectCounters::default(),
            },
        })
    }

    /// Decrypt decisions are handed to `lcores` slow-path lcores (none: they
    /// are carried out as do-not-decrypt, and the events say so).
    pub fn with_slow_path(mut self, lcores: usize, settings: &SlowPathSettings) -> Inspector {
        self.judge.slow = (lcores > 0).then(|| SlowPlan {
            lcores,
            when_full: settings.when_full,
            exclusions: ExclusionCache::new(settings.exclusion_cache as usize, settings.exclusion_ttl as u64 * NS),
            probed: Default::default(),
        });
        self
    }

    /// Flows are spread over `workers` workers by software dispatch
    /// ([`flow_hash`]): a datagram reassembled here whose flow another worker
    /// owns goes there as its fragments ([`Output::redirected`]).
    pub fn with_dispatch(mut self, workers: usize) -> Inspector {
        self.dispatch = (workers > 1).then_some(workers);
        self
    }

    /// Plain DNS answers crossing the wire: with `strip_ech`, their ECH
    /// configurations are removed.
    pub fn with_dns(mut self, dns: DnsSettings) -> Inspector {
        self.judge.dns = dns;
        self
    }

    /// How much of each handshake the events carry (default: full).
    pub fn with_handshake_events(mut self, mode: HandshakeEvents) -> Inspector {
        self.judge.full_handshake = mode == HandshakeEvents::Full;
        self
    }

    /// Whether blocked sessions are read on to the server's answer for their
    /// events (a replay, where the capture holds that answer; the packets
    /// are dropped all the same).
    pub fn with_reading_past_blocks(mut self, on: bool) -> Inspector {
        self.judge.reads_past_blocks = on;
        self
    }

    /// The counters so far.
    pub fn counters(&self) -> &InspectCounters {
        &self.judge.counters
    }

    /// Flows tracked now.
    pub fn flows(&self) -> usize {
        self.table.len()
    }

    /// The counters, with the tables' sizes now in their gauges.
    pub fn counters_now(&self) -> InspectCounters {
        let mut c = self.judge.counters;
        c.flows_now = self.table.len() as u64;
        c.quic_flows_now = self.quic.len() as u64;
        c.exclusions_now = self.judge.slow.as_ref().map_or(0, |s| s.exclusions.len() as u64);
        c.server_identities_now = self.judge.identities.as_ref().map_or(0, |i| i.len() as u64);
        c.large_messages = self.judge.large_messages.granted();
        c.large_messages_refused = self.judge.large_messages.refused();
        c
    }

    /// Puts a new policy in force for sessions that begin from now on; flows
    /// keep the verdicts they have, and sessions being inspected finish under
    /// the policy they began with. The trust store is rebuilt.
    pub fn set_policy(&mut self, policy: Arc<Policy>) -> Result<(), String> {
        self.judge.verifier = CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)?;
        self.judge.policy = policy;
        Ok(())
    }

    /// A copy for passive reading (in [`Output::copies`]) could not be handed over.
    pub fn passive_copy_lost(&mut self) {
        self.judge.counters.passive_copies_lost += 1;
    }

    /// Inspects one frame that arrived on port index `ingress` at `now_ns`.
    pub fn on_packet(&mut self, frame: &[u8], ingress: usize, now_ns: u64, out: &mut Output) -> Verdict {
        match &classify(frame) {
            Layer::Tcp(t) => self.on_segment(t, None, ingress, now_ns, out),
            Layer::Fragment(f) => self.on_fragment(f, ingress, now_ns, out),
            Layer::Udp(u) => self.on_udp(u, false, ingress, now_ns, out),
            Layer::Other => {
                self.judge.counters.not_tcp += 1;
                Verdict::Forward
            }
        }
    }

    /// An IP fragment: held until its datagram is whole, which is then
    /// judged as any segment; its fragments go on as they came, or not.
    fn on_fragment(&mut self, f: &IpFragment, ingress: usize, now: u64, out: &mut Output) -> Verdict {
        let c = &mut self.judge.counters;
        c.fragments += 1;
        if self.judge.settings.normalize.checksums == Checksums::Verify && !f.header_checksum_ok() {
            c.unjudged_bad_checksum += 1;
            return Verdict::Drop(DropReason::Fragment);
        }
        let done = self.fragments.push(f, now);
        self.sync_fragment_counters();
        let whole = match done {
            Defrag::Held => return Verdict::Drop(DropReason::FragmentHeld),
            Defrag::Refused(Refusal::Full) => {
                return match self.judge.settings.fragments.when_full {
                    FragmentsWhenFull::Forward => Verdict::Forward,
                    FragmentsWhenFull::Drop => Verdict::Drop(DropReason::Fragment),
                };
            }
            Defrag::Refused(_) => return Verdict::Drop(DropReason::Fragment),
            Defrag::Complete(whole) => whole,
        };
        let mut wire = whole.earlier;
        wire.push(f.frame().to_vec());
        let layer = classify(&whole.frame);
        if let Layer::Udp(u) = &layer {
            return match self.on_udp(u, true, ingress, now, out) {
                Verdict::Forward => {
                    out.released.extend(wire.drain(..wire.len() - 1));
                    Verdict::Forward
                }
                other => other,
            };
        }
        let Layer::Tcp(t) = layer else {
            // Whole, it is not TCP after all (extension headers led elsewhere): as it came.
            out.released.extend(wire.drain(..wire.len() - 1));
            return Verdict::Forward;
        };
        if let Some(workers) = self.dispatch {
            let owner = flow_hash(&whole.frame).map_or(self.judge.worker as usize, |h| worker_for(h, workers));
            if owner != self.judge.worker as usize {
                self.judge.counters.fragments_redirected += 1;
                out.redirected.extend(wire.into_iter().map(|w| (owner, w)));
                return Verdict::Drop(DropReason::Redirected);
            }
        }
        match self.on_segment(&t, Some(&wire), ingress, now, out) {
            Verdict::Forward => {
                out.released.extend(wire.drain(..wire.len() - 1));
                Verdict::Forward
            }
            Verdict::Escalate(lcore) => {
                out.to_slow_path.push((lcore, whole.frame.clone()));
                Verdict::Drop(DropReason::FragmentHeld)
            }
            other @ (Verdict::Drop(_) | Verdict::Replaced) => other,
        }
    }

    fn sync_fragment_counters(&mut self) {
        let f = self.fragments.counters();
        let c = &mut self.judge.counters;
        c.fragments_reassembled = f.reassembled;
        c.fragment_overlaps = f.overlaps;
        c.fragment_duplicates = f.duplicates;
        c.fragments_malformed = f.malformed + f.too_many_fragments;
        c.fragments_timed_out = f.timed_out;
        c.fragments_evicted = f.evicted;
        c.fragments_full = f.full;
    }

    /// A whole TCP segment (`wire`: the fragments it came in, if it did).
    #[inline]
    fn on_segment(
        &mut self,
        t: &TcpFrame,
        wire: Option<&[Vec<u8>]>,
        ingress: usize,
        now_ns: u64,
        out: &mut Output,
    ) -> Verdict {
        let (key, from_lo) = FlowKey::of(t);
        let mut found = self.table.find(&key);
        if let Some(id) = found {
            if t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK) && self.is_over(id) {
                // A new connection on the same 5-tuple (port reuse): a new session.
                if let Some((_, state)) = self.table.remove(id) {
                    self.judge.end_session(state, now_ns, FlowEnd::PortReused, out);
                }
                found = None;
            }
        }
        let id = match found {
            Some(id) => id,
            None => {
                // A segment its receiver drops makes no flow (a decoy SYN
                // would set the sequence numbers the real one is read by).
                if self.judge.settings.normalize.checksums == Checksums::Verify && !t.checksums_ok() {
                    return self.judge.unjudged(None, Anomaly::BadChecksum);
                }
                match self.new_flow(t, key, from_lo, now_ns) {
                    Ok(id) => id,
                    Err(v) => return v,
                }
            }
        };
        self.on_flow_packet(id, key, t, wire, from_lo, ingress, now_ns, out)
    }

    /// Applies what the slow path says: a session it ended (later packets of
    /// the flow are dropped until it expires), what it learned of a server.
    pub fn on_slow_update(&mut self, update: SlowUpdate, now_ns: u64) {
        let closed_ns = self.judge.settings.closed_timeout as u64 * NS;
        match update {
            SlowUpdate::Ended { key } => {
                if let Some(id) = self.table.find(&key) {
                    if let Some(state) = self.table.get_mut(id) {
                        state.settle(FinalAction::Block);
                    }
                    self.table.touch(id, now_ns, closed_ns);
                }
            }
            SlowUpdate::Refused { key, action } => {
                if let Some(state) = self.table.find(&key).and_then(|id| self.table.get_mut(id)) {
                    state.settle(action);
                }
            }
            SlowUpdate::Probe { key, lcore } => {
                // The probe's packets go to its lcore; the table's timeouts end it.
                let timeout = self.judge.settings.inspecting_timeout as u64 * NS;
                let _ = self.table.insert(key, FlowState::Intercepted(lcore), now_ns, timeout);
            }
            SlowUpdate::Learned { key, identity } => {
                if let Some(cache) = &mut self.judge.identities {
                    cache.learn(key, identity);
                }
            }
            SlowUpdate::Excluded { key, action, reason } => {
                if let Some(slow) = &mut self.judge.slow {
                    slow.exclusions.exclude(key, action, reason, now_ns);
                }
            }
        }
    }

    /// The worker could not hand `esc` to the slow path (its ring was full):
    /// the flow gets `slowpath.when_full`, the session its event. Returns the
    /// verdict for the packet that escalated it.
    pub fn escalation_refused(&mut self, esc: Box<Escalation>, now_ns: u64, out: &mut Output) -> Verdict {
        let judge = &mut self.judge;
        judge.counters.escalation_refused += 1;
        let action = judge.slow.as_ref().map_or(FinalAction::DoNotDecrypt, |s| when_full_action(s.when_full));
        let Escalation { key, flow_id, facts, policy, decision, server_identity, held_wire, client_is_lo, .. } = *esc;
        if let Some(state) = self.table.find(&key).and_then(|id| self.table.get_mut(id)) {
            state.settle(action);
        }
        let r = Resolution {
            action,
            asked: decision.action,
            rule: decision.rule,
            cause: Cause::SlowPathFull(SlowPathFull::RingFull),
            cut_short: None,
            monitors: decision.monitor_rules,
            missing: decision.missing_facts,
            tls: true,
        };
        let mut s =
            Session::new(flow_id, policy, HandshakeObserver::new(ObserverLimits::default()), facts, client_is_lo);
        s.saw_tls();
        s.server_identity = server_identity;
        // The ClientHello reaches the server after all (out of order behind the
        // segment that completed it, which TCP puts right).
        out.released.extend(held_wire);
        judge.emit(Box::new(s), r, now_ns, now_ns, out);
        match action {
            FinalAction::DoNotDecrypt => Verdict::Forward,
            _ => {
                judge.counters.blocked_packets += 1;
                Verdict::Drop(DropReason::Policy)
            }
        }
    }

    /// Expires idle flows (a bounded number of slots per call), and
    /// datagrams whose fragments did not all come; sessions cut short still
    /// get their event.
    pub fn expire(&mut self, now_ns: u64, out: &mut Output) {
        if self.fragments.held().0 > 0 {
            self.fragments.expire(now_ns);
            self.sync_fragment_counters();
        }
        self.expire_quic(now_ns, EXPIRE_BUDGET, out);
        let mut ended = Vec::new();
        self.table.expire(now_ns, EXPIRE_BUDGET, |key, state| ended.push((key, state)));
        for (key, state) in ended {
            if state.is_observing() {
                // Decided and forwarded, but the server went quiet before its
                // first flight: the event goes out, the flow stays bypassed.
                self.judge.end_session(state, now_ns, FlowEnd::Idle, out);
                let decided_ns = self.judge.settings.decided_timeout as u64 * NS;
                let _ = self.table.insert(key, FlowState::Bypass { fins: 0 }, now_ns, decided_ns);
                continue;
            }
            self.judge.counters.expired += 1;
            self.judge.end_session(state, now_ns, FlowEnd::Idle, out);
        }
    }

    /// At shutdown or at the end of a replayed capture (`why`): every
    /// undecided session gets its event.
    pub fn finish(&mut self, now_ns: u64, why: FlowEnd, out: &mut Output) {
        let mut all = Vec::new();
        self.table.drain(|_, state| all.push(state));
        for state in all {
            self.judge.end_session(state, now_ns, why, out);
        }
        self.finish_quic(now_ns, why, out);
    }

    /// Whether a flow's connection is over as far as a new SYN is concerned:
    /// decided (a SYN cannot belong to a connection that got as far as a
    /// ClientHello) or closed by FIN from both sides.
    fn is_over(&mut self, id: FlowId) -> bool {
        self.table.get_mut(id).is_some_and(|state| match state {
            FlowState::Inspecting(s) => s.fins == 3,
            _ => true,
        })
    }

    fn new_flow(&mut self, t: &TcpFrame, key: FlowKey, from_lo: bool, now: u64) -> Result<FlowId, Verdict> {
        let judge = &mut self.judge;
        let syn = t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK);
        // While the table forgets flows to make room, a flow without its SYN
        // may be one it forgot: it is inspected as if new, never bypassed
        // (or blocked) for having been forgotten.
        let pressed = judge
            .last_eviction_ns
            .is_some_and(|at| now.saturating_sub(at) <= judge.settings.inspecting_timeout as u64 * NS);
        if !syn && !pressed {
            judge.counters.midstream += 1;
            let blocked = match judge.settings.midstream {
                Midstream::Bypass => false,
                Midstream::Block => true,
                Midstream::Inspect => return self.new_session(t, key, from_lo, false, now),
            };
            // Remembered while there is room (after a restart every long-lived
            // connection comes this way, packet after packet).
            let timeout = judge.settings.decided_timeout as u64 * NS;
            let _ = self.table.insert(key, FlowState::Midstream { fins: 0, blocked }, now, timeout);
            return Err(if blocked { Verdict::Drop(DropReason::Midstream) } else { Verdict::Forward });
        }
        self.new_session(t, key, from_lo, syn, now)
    }

    /// A flow whose packets are inspected from now on.
    fn new_session(
        &mut self,
        t: &TcpFrame,
        key: FlowKey,
        from_lo: bool,
        syn: bool,
        now: u64,
    ) -> Result<FlowId, Verdict> {
        let judge = &mut self.judge;
        // The client sent the SYN; mid-stream, guess the side with the higher port.
        let client_is_lo = if syn { from_lo } else { key.lo_port > key.hi_port };
        let mut session = judge.new_session(t, key, client_is_lo);
        session.started_ns = now;
        let state = FlowState::Inspecting(Box::new(session));
        // A full table first forgets what costs nothing to forget: a flow that
        // sent no payload yet (a SYN flood's), or one closed and decided.
        let evictable = |state: &FlowState| match state {
            FlowState::Inspecting(s) => s.seen == Seen::Nothing,
            FlowState::Bypass { fins } | FlowState::Blocked { fins } | FlowState::Passive { fins, .. } => *fins == 3,
            FlowState::Midstream { .. } => true,
            FlowState::Guarded(g) => g.fins == 3,
            FlowState::Intercepted(_) => false,
        };
        match self.table.insert_evicting(key, state, now, judge.settings.inspecting_timeout as u64 * NS, evictable) {
            Ok((id, evicted)) => {
                judge.counters.flows += 1;
                if let Some((_, state)) = evicted {
                    judge.counters.evicted += 1;
                    // A forgotten mid-stream flow comes back as one: others
                    // need not be inspected for it.
                    if !matches!(state, FlowState::Midstream { .. }) {
                        judge.last_eviction_ns = Some(now);
                    }
                }
                Ok(id)
            }
            Err(_) => {
                judge.counters.table_full += 1;
                match judge.settings.when_full {
                    WhenFull::Bypass => Err(Verdict::Forward),
                    WhenFull::Drop => Err(Verdict::Drop(DropReason::FlowTableFull)),
                }
            }
        }
    }

    /// A packet of a known flow, by the flow's state.
    #[allow(clippy::too_many_arguments)]
    fn on_flow_packet(
        &mut self,
        id: FlowId,
        key: FlowKey,
        t: &TcpFrame,
        wire: Option<&[Vec<u8>]>,
        from_lo: bool,
        ingress: usize,
        now: u64,
        out: &mut Output,
    ) -> Verdict {
        let Some(state) = self.table.get_mut(id) else { return Verdict::Forward };
        // A flow a passive rule reads, or may still read: its slow-path lcore gets a copy of every packet.
        let copy_to = match state {
            FlowState::Passive { lcore, .. } => Some(*lcore),
            FlowState::Inspecting(s) => self.judge.passive_lcore(s),
            _ => None,
        };
        if let Some(lcore) = copy_to {
            out.copies.push((lcore, t.frame().to_vec()));
        }
        if let FlowState::Inspecting(s) = state {
            let side = usize::from(from_lo != s.client_is_lo);
            if s.entered_by[side].is_none() {
                s.entered_by[side] = u8::try_from(ingress).ok();
            }
            if let Some(v) = self.judge.normalize(s, t, from_lo) {
                return match v {
                    Normalized::Verdict(v) => v,
                    Normalized::Blocked(r, seg_from_client) => {
                        let client_port = if seg_from_client { ingress } else { ingress ^ 1 };
                        let seg = Segment { t, wire, from_client: seg_from_client, client_port, closed: false };
                        self.carry_out(id, key, Step::Decided(*r, false), &seg, now, out)
                    }
                };
            }
        }
        let Some(state) = self.table.get_mut(id) else { return Verdict::Forward };
        let fins = if t.has(tcp_flags::FIN) { state.saw_fin(from_lo) } else { state.fins() };
        let closed = t.has(tcp_flags::RST) || fins == 3;
        let settings = &self.judge.settings;
        let decided_ns = if closed { settings.closed_timeout } else { settings.decided_timeout } as u64 * NS;
        match state {
            FlowState::Bypass { .. } | FlowState::Midstream { blocked: false, .. } | FlowState::Passive { .. } => {
                self.table.touch(id, now, decided_ns);
                Verdict::Forward
            }
            FlowState::Midstream { blocked: true, .. } => {
                self.table.touch(id, now, decided_ns);
                Verdict::Drop(DropReason::Midstream)
            }
            FlowState::Guarded(g) => {
                let from_client = from_lo == g.client_is_lo;
                let (mine, theirs) = if from_client { (0, 1) } else { (1, 0) };
                let verdict = match &g.sides[mine] {
                    Some(j) if t.payload_len() > 0 && j.conflicts(t.data_seq(), t.payload()) => {
                        self.judge.counters.conflicting_retransmissions += 1;
                        Verdict::Drop(DropReason::Conflict)
                    }
                    _ => Verdict::Forward,
                };
                // The receiver acknowledging past the other side's judged bytes
                // has them (its ACKs come in by its own port).
                let by_its_port = g.entered_by[mine].is_none_or(|p| usize::from(p) == ingress);
                if t.has(tcp_flags::ACK)
                    && by_its_port
                    && g.sides[theirs].as_ref().is_some_and(|j| j.acknowledged_by(t.ack))
                {
                    g.sides[theirs] = None;
                }
                if g.sides.iter().all(Option::is_none) {
                    *state = FlowState::Bypass { fins };
                }
                self.table.touch(id, now, decided_ns);
                verdict
            }
            FlowState::Blocked { .. } => {
                self.table.touch(id, now, decided_ns);
                self.judge.counters.blocked_packets += 1;
                Verdict::Drop(DropReason::Policy)
            }
            FlowState::Intercepted(lcore) => {
                // The slow path owns the connection now, FIN and RST included:
                // it says when the session is over.
                let lcore = *lcore;
                self.table.touch(id, now, settings.decided_timeout as u64 * NS);
                Verdict::Escalate(lcore)
            }
            FlowState::Inspecting(s) => {
                let from_client = from_lo == s.client_is_lo;
                let client_port = if from_client { ingress } else { ingress ^ 1 };
                let seg = Segment { t, wire, from_client, client_port, closed };
                self.judge.feed(s, &seg, now);
                let step = if let Phase::Observing { .. } = s.phase {
                    self.judge.observe(s, &seg, now)
                } else {
                    let resolution = self.judge.read_handshake(s, now);
                    self.judge.next_step(s, resolution, &seg, now, out)
                };
                self.carry_out(id, key, step, &seg, now, out)
            }
        }
    }

    /// Carries out what the packet became: the flow's state changes here.
    fn carry_out(
        &mut self,
        id: FlowId,
        key: FlowKey,
        step: Step,
        seg: &Segment,
        now: u64,
        out: &mut Output,
    ) -> Verdict {
        let settings = &self.judge.settings;
        let timeout = |s: u32| if seg.closed { settings.closed_timeout } else { s } as u64 * NS;
        let (inspecting_ns, decided_ns) = (timeout(settings.inspecting_timeout), timeout(settings.decided_timeout));
        let Some(state) = self.table.get_mut(id) else { return Verdict::Forward };
        match step {
            Step::Undecided(v) => {
                self.table.touch(id, now, inspecting_ns);
                v
            }
            Step::TakenOver(lcore) => {
                if let Some(s) = state.intercept(lcore) {
                    let esc = self.judge.escalation(key, seg, s, now);
                    out.escalations.push((lcore, esc));
                }
                self.table.touch(id, now, self.judge.settings.decided_timeout as u64 * NS);
                Verdict::Escalate(lcore)
            }
            Step::Decided(r, sent_after_held) => {
                let action = r.action;
                if let FlowState::Inspecting(s) = state {
                    if self.judge.reads_on(s, &r, seg, now) {
                        s.phase = Phase::Observing { resolution: Box::new(r), decided_ns: now };
                        self.table.touch(id, now, inspecting_ns);
                        return match action {
                            FinalAction::DoNotDecrypt if sent_after_held => Verdict::Drop(DropReason::Held),
                            FinalAction::DoNotDecrypt => Verdict::Forward,
                            // Carried out now; the event waits for the server's answer.
                            FinalAction::Block | FinalAction::BlockWithReset => self.block(action, seg, out),
                        };
                    }
                }
                let read_on = matches!(state, FlowState::Inspecting(s) if matches!(s.phase, Phase::Observing { .. }));
                // Read passively on the appliance: the slow-path lcore that got the flow's copies
                // writes the event when the flow ends, with what it read.
                let reader = match state {
                    FlowState::Inspecting(s) if r.cause == Cause::ReadPassively => self.judge.passive_lcore(s),
                    _ => None,
                };
                if let Some(lcore) = reader {
                    if let Some(s) = state.read_passively(lcore) {
                        let (policy, asked) = (s.policy.clone(), r.asked);
                        self.judge.emit(s, r, now, now, out);
                        // The event waits for the reading (only a known-key rule reads passively).
                        if let Action::DecryptKnownKey { known_key, .. } = asked {
                            if let Some(event) = out.events.pop() {
                                out.passive.push((lcore, Box::new(PassiveWatch { event, policy, known_key })));
                            }
                        }
                    }
                    self.table.touch(id, now, decided_ns);
                    return if sent_after_held { Verdict::Drop(DropReason::Held) } else { Verdict::Forward };
                }
                if let Some(mut s) = state.settle(action) {
                    let decided_at = match &s.phase {
                        Phase::Observing { decided_ns, .. } => *decided_ns,
                        _ => now,
                    };
                    let guard = (action == FinalAction::DoNotDecrypt).then(|| guard_of(&mut s)).flatten();
                    self.judge.emit(s, r, decided_at, now, out);
                    if let (Some(g), Some(state)) = (guard, self.table.get_mut(id)) {
                        *state = FlowState::Guarded(g);
                    }
                }
                self.table.touch(id, now, decided_ns);
                match action {
                    FinalAction::DoNotDecrypt if sent_after_held => Verdict::Drop(DropReason::Held),
                    FinalAction::DoNotDecrypt => Verdict::Forward,
                    // A block read on was carried out (resets and all) at its decision.
                    FinalAction::Block | FinalAction::BlockWithReset if read_on => {
                        self.judge.counters.blocked_packets += 1;
                        Verdict::Drop(DropReason::Policy)
                    }
                    FinalAction::Block | FinalAction::BlockWithReset => self.block(action, seg, out),
                }
            }
        }
    }

    /// Carries out a block on the packet that decided it (with-reset: a
    /// reset each way).
    fn block(&mut self, action: FinalAction, seg: &Segment, out: &mut Output) -> Verdict {
        let c = &mut self.judge.counters;
        c.blocked_packets += 1;
        if action == FinalAction::BlockWithReset {
            c.resets += 2;
            out.resets.push(Reset { toward_sender: false, frame: build_reset(seg.t, false) });
            out.resets.push(Reset { toward_sender: true, frame: build_reset(seg.t, true) });
        }
        Verdict::Drop(DropReason::Policy)
    }
}

/// What the normaliser made of a segment of a flow being inspected.
enum Normalized {
    /// Not judged (or a conflicting copy dropped): this verdict.
    Verdict(Verdict),
    /// A conflicting copy blocks the flow (`conflicts = "block"`); whether it came from the client.
    Blocked(Box<Resolution>, bool),
}

impl Judge {
    /// The normaliser on a segment of a flow being inspected: `None` if the
    /// receiver takes it (it is learned from, and judged next).
    #[inline]
    fn normalize(&mut self, s: &mut Session, t: &TcpFrame, from_lo: bool) -> Option<Normalized> {
        let from_client = from_lo == s.client_is_lo;
        let checksums = self.settings.normalize.checksums == Checksums::Verify;
        if let Err(anomaly) = s.track.check(t, from_client, checksums) {
            return Some(Normalized::Verdict(self.unjudged(Some(s), anomaly)));
        }
        let dir = if from_client { Direction::ToServer } else { Direction::ToClient };
        if t.payload_len() > 0 && s.observer.conflicts(dir, t.data_seq(), t.payload()) {
            s.evasions.note(Anomaly::ConflictingRetransmission);
            self.counters.conflicting_retransmissions += 1;
            if self.settings.normalize.conflicts == Conflicts::Drop {
                return Some(Normalized::Verdict(Verdict::Drop(DropReason::Conflict)));
            }
            let r = Resolution {
                action: FinalAction::Block,
                asked: Action::Block,
                rule: None,
                cause: Cause::ConflictingRetransmission,
                cut_short: None,
                monitors: std::mem::take(&mut s.monitors),
                missing: Vec::new(),
                tls: s.seen != Seen::Nothing,
            };
            return Some(Normalized::Blocked(Box::new(r), from_client));
        }
        s.track.learn(t, from_client);
        None
    }

    /// A segment its receiver would drop: counted, noted on the session,
    /// never judged; forwarded or dropped as `flows.normalize.unjudged` says.
    fn unjudged(&mut self, s: Option<&mut Session>, anomaly: Anomaly) -> Verdict {
        let c = &mut self.counters;
        match anomaly {
            Anomaly::BadChecksum => c.unjudged_bad_checksum += 1,
            Anomaly::NoAck => c.unjudged_no_ack += 1,
            Anomaly::AckOfUnsent => c.unjudged_ack_of_unsent += 1,
            Anomaly::OutOfWindow => c.unjudged_out_of_window += 1,
            Anomaly::PawsOld => c.unjudged_paws_old += 1,
            Anomaly::TcpMd5 => c.unjudged_tcp_md5 += 1,
            Anomaly::RstNotInWindow => c.rst_ignored += 1,
            Anomaly::ConflictingRetransmission | Anomaly::FragmentOverlap => {}
        }
        if let Some(s) = s {
            s.evasions.note(anomaly);
        }
        match self.settings.normalize.unjudged {
            Unjudged::Drop => Verdict::Drop(DropReason::Unjudged),
            Unjudged::Forward => Verdict::Forward,
        }
    }

    fn new_session(&mut self, t: &TcpFrame, key: FlowKey, client_is_lo: bool) -> Session {
        let (c_addr, c_port, s_addr, s_port) = if client_is_lo {
            (key.lo_addr, key.lo_port, key.hi_addr, key.hi_port)
        } else {
            (key.hi_addr, key.hi_port, key.lo_addr, key.lo_port)
        };
        let flow = FlowFacts {
            src_ip: to_ip(&c_addr, t.ipv6),
            src_port: c_port,
            dest_ip: to_ip(&s_addr, t.ipv6),
            dest_port: s_port,
            vlan: t.vlan,
            ingress: String::new(),
        };
        self.next_flow += 1;
        let prelude = &self.settings.prelude;
        let observer = HandshakeObserver::new(ObserverLimits {
            max_buffer: self.settings.handshake_buffer as usize,
            defer_fingerprints: true,
            prelude: prelude.for_port(s_port),
            connect: prelude.connect,
            prelude_limits: PreludeLimits {
                max_bytes: prelude.max_bytes as usize,
                max_exchanges: prelude.max_exchanges,
            },
        })
        .with_large_messages(self.large_messages.clone());
        let id = (self.worker << 56) | self.next_flow;
        Session::new(id, self.policy.clone(), observer, SessionFacts::new(flow), client_is_lo)
    }

    /// Step 1: what the segment shows goes to the observer (and, where a
    /// slow path could take the flow over, to what it needs).
    fn feed(&mut self, s: &mut Session, seg: &Segment, now: u64) {
        let t = seg.t;
        // The port the client's packets enter by, named at the flow's first packet.
        if s.facts.flow.ingress.is_empty() {
            s.facts.flow.ingress = self.port_names.get(seg.client_port).cloned().unwrap_or_default();
        }
        // Each side's SYN (the client's without ACK, the server's with it)
        // gives where its stream starts; only SYNs the receiver takes get here.
        if t.has(tcp_flags::SYN) && seg.from_client != t.has(tcp_flags::ACK) {
            let dir = if seg.from_client { Direction::ToServer } else { Direction::ToClient };
            s.observer.set_initial_seq(dir, t.seq.wrapping_add(1));
        }
        if self.slow.is_some() {
            s.takeover.tcp[usize::from(!seg.from_client)].saw(t, now);
            if seg.from_client && s.takeover.client_l2.is_none() {
                s.takeover.client_l2 = Some((t.link_header().to_vec(), seg.client_port));
            }
        }
        if t.payload_len() > 0 {
            s.saw_bytes();
            let since = *s.first_payload_ns.get_or_insert(now);
            if s.observer.in_prelude() && now.saturating_sub(since) > self.settings.prelude.timeout as u64 * NS {
                s.observer.prelude_timed_out();
            }
            let dir = if seg.from_client { Direction::ToServer } else { Direction::ToClient };
            // Data in a SYN (TCP Fast Open) starts after the SYN's own number.
            s.observer.on_segment(dir, t.data_seq(), t.payload());
        }
    }

    /// Step 2: drains the observer's events into facts, evaluating the
    /// policy as phases complete; a resolution when the session is decided.
    fn read_handshake(&mut self, s: &mut Session, now: u64) -> Option<Resolution> {
        // The server's flight is judged once all of it that this segment
        // carried is read: a CertificateRequest follows the Certificate.
        let mut server_ready = false;
        while let Some(ev) = s.observer.poll_event() {
            match ev {
                ObserverEvent::ClientHello(ch) => {
                    s.saw_tls();
                    // The first ClientHello is the one decided on; a second
                    // (after a HelloRetryRequest) repeats it with new key shares.
                    if s.facts.client_hello.is_none() {
                        s.facts.client_hello = Some(*ch);
                        self.recall_server(s, now);
                        if let Some(r) = self.evaluate(s, false) {
                            return Some(r);
                        }
                    }
                }
                ObserverEvent::HelloRetryRequest => {}
                ObserverEvent::ServerHello(sh) => {
                    s.saw_tls();
                    let version = sh.version;
                    let no_certificate_in_clear = version == Some(TlsVersion::Tls13) || sh.resumed;
                    s.facts.server_hello = Some(sh);
                    s.flight_read |= no_certificate_in_clear;
                    if version == Some(TlsVersion::Ssl2) {
                        // Only the server's answer makes a session SSL 2.0.
                        let asked = match &s.phase {
                            Phase::DecryptPending { decision, .. } => Some((decision.action, decision.rule)),
                            _ => None,
                        };
                        s.phase = Phase::Undecided;
                        let (asked, rule) = asked.map_or((None, None), |(a, r)| (Some(a), r));
                        return Some(self.undecryptable(s, Undecryptable::Sslv2, asked, rule));
                    }
                    if no_certificate_in_clear {
                        return Some(self.server_phase_done(s));
                    }
                }
                ObserverEvent::Certificate { chain } => {
                    if !chain.is_empty() {
                        // A decision already taken on cached facts keeps saying so.
                        if s.server_identity == ServerIdentitySource::Unknown {
                            s.server_identity = ServerIdentitySource::Handshake;
                        }
                        self.saw_certificate(s, chain, now);
                    }
                    server_ready |= s.facts.server_hello.is_some();
                }
                ObserverEvent::CertificateRequest => s.facts.client_cert_requested = true,
                ObserverEvent::CertificateStatus => s.facts.ocsp_stapled = true,
                ObserverEvent::ServerHelloDone => {
                    s.flight_read = true;
                    server_ready |= s.facts.server_hello.is_some();
                }
                ObserverEvent::Resumed => {
                    if let Some(sh) = &mut s.facts.server_hello {
                        sh.resumed = true;
                    }
                }
                ObserverEvent::Alert { from, level, description } => {
                    s.alerts.push((side_of(from).name(), level, description));
                }
                ObserverEvent::HandshakeDone(Direction::ToClient) => {
                    s.flight_read = true;
                    if s.facts.client_hello.is_some() {
                        return Some(self.server_phase_done(s));
                    }
                }
                ObserverEvent::HandshakeDone(Direction::ToServer) => {}
                ObserverEvent::Prelude { protocol, target } => {
                    self.counters.preludes += 1;
                    s.facts.starttls = Some(protocol.name());
                    s.facts.connect_target = target;
                }
                ObserverEvent::PreludeEnded { protocol, why } => {
                    self.counters.prelude_without_tls += 1;
                    s.facts.starttls = Some(protocol.name());
                    return Some(self.judged_on_known(s, Cause::NotTls(NotTls::Prelude(protocol, why))));
                }
                ObserverEvent::NotTls(from) => {
                    if s.seen != Seen::Tls {
                        self.counters.not_tls += 1;
                        return Some(self.judged_on_known(s, Cause::NotTls(NotTls::OtherProtocol(side_of(from)))));
                    }
                }
                ObserverEvent::Malformed { from, reason } => {
                    self.counters.malformed += 1;
                    let cause = if s.seen == Seen::Tls {
                        Cause::HandshakeFailed(HandshakeFailure::Malformed(side_of(from), reason.to_string()))
                    } else {
                        Cause::NotTls(NotTls::Malformed(side_of(from), reason.to_string()))
                    };
                    return Some(self.judged_on_known(s, cause));
                }
                ObserverEvent::Overflow(from) => {
                    self.counters.overflow += 1;
                    let limit = self.settings.handshake_buffer;
                    let cause = Cause::HandshakeFailed(HandshakeFailure::TooLarge(side_of(from), limit));
                    if from == Direction::ToServer && s.facts.client_hello.is_none() {
                        // No rule could read it: the setting says, not the default action.
                        let action = match self.settings.oversized_client_hello {
                            PinnedAction::DoNotDecrypt => FinalAction::DoNotDecrypt,
                            PinnedAction::Block => FinalAction::Block,
                            PinnedAction::BlockWithReset => FinalAction::BlockWithReset,
                        };
                        s.phase = Phase::Undecided;
                        return Some(Resolution {
                            action,
                            asked: action.into(),
                            rule: None,
                            ..self.default_resolution(s, cause)
                        });
                    }
                    return Some(
                        self.judged_on_known(
                            s,
                            Cause::HandshakeFailed(HandshakeFailure::TooLarge(side_of(from), limit)),
                        ),
                    );
                }
            }
        }
        server_ready.then(|| self.server_phase_done(s))
    }

    /// Step 3: what this packet becomes, given the resolution (if any) the
    /// handshake gave: held back, forwarded, the flow handed to the slow
    /// path, or the session decided.
    fn next_step(
        &mut self,
        s: &mut Session,
        resolution: Option<Resolution>,
        seg: &Segment,
        now: u64,
        out: &mut Output,
    ) -> Step {
        let t = seg.t;
        let undecided = resolution.is_none() && !seg.closed;
        // A client segment of a ClientHello not yet complete, where a
        // decryption could follow: held back, so that the slow path can
        // still answer the whole ClientHello itself.
        let len = t.ip_len();
        if undecided
            && seg.from_client
            && t.payload_len() > 0
            && s.facts.client_hello.is_none()
            && self.slow.is_some()
            && s.policy.may_decrypt()
            && s.takeover.held_bytes + len <= self.settings.handshake_buffer as usize
        {
            s.takeover.hold(t.frame(), len, seg.wire_frames());
            return Step::Undecided(Verdict::Drop(DropReason::Held));
        }
        let mut resolution = resolution;
        // A passive rule never takes the flow over: it is carried out once the server's side is seen.
        let passive = matches!(&s.phase, Phase::DecryptPending { decision, .. } if decision.action.is_passive());
        if undecided && !passive {
            if let Phase::DecryptPending { refused: None, .. } = s.phase {
                match self.take_over(s, seg, now) {
                    TakeOver::Escalate(lcore) => return Step::TakenOver(lcore),
                    TakeOver::Excluded(r) => resolution = Some(r),
                    TakeOver::Refused(why) => {
                        if let Phase::DecryptPending { refused, .. } = &mut s.phase {
                            *refused = Some(why);
                        }
                    }
                }
            }
        }
        if resolution.is_none() && seg.closed {
            resolution = Some(self.final_resolution(s, FlowEnd::Closed));
        }
        // Not taken over: what was held goes on to the server, this segment
        // after it, unless the flow is blocked.
        let mut sent_after_held = false;
        let settled = resolution.is_some() || s.facts.client_hello.is_some();
        if !s.takeover.held.is_empty() && settled {
            let held = s.takeover.release();
            if !resolution.as_ref().is_some_and(|r| r.action != FinalAction::DoNotDecrypt) {
                out.released.extend(held);
                if seg.from_client {
                    out.released.extend(seg.wire_frames());
                    sent_after_held = true;
                }
            }
        }
        match resolution {
            Some(r) => Step::Decided(r, sent_after_held),
            None if sent_after_held => Step::Undecided(Verdict::Drop(DropReason::Held)),
            None => Step::Undecided(Verdict::Forward),
        }
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
        s.certificate_from = ServerIdentitySource::Cache;
        s.recalled_chain = Some(chain);
    }

    /// The session's own certificate chain: its facts (this session's, no
    /// longer the cache's), its status at this packet's time, and what the
    /// cache learns from it.
    fn saw_certificate(&mut self, s: &mut Session, chain: Vec<Vec<u8>>, now: u64) {
        let Some(leaf) = chain.first() else { return };
        // The chain the cache recalled for this session, judged at this
        // session's ClientHello: its facts and status stand, now as this
        // session's own (servers show the same chain session after session).
        if s.recalled_chain.as_deref().is_some_and(|recalled| *recalled == chain[..]) {
            s.certificate_from = ServerIdentitySource::Handshake;
            return;
        }
        s.facts.certificate = self.certificates.facts(leaf);
        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.clone());
        s.facts.cert_status = Some(self.verifier.status(&chain, sni.as_deref(), (now / NS) as i64));
        s.certificate_from = ServerIdentitySource::Handshake;
        self.learn_server(s, chain, now);
    }

    /// Whether a session just decided is read on to the server's first
    /// flight for its event: forwarded (do-not-decrypt; or blocked, in a
    /// replay), TLS, still open, and the flight not read yet.
    fn reads_on(&mut self, s: &mut Session, r: &Resolution, seg: &Segment, now: u64) -> bool {
        let reads_past = match r.action {
            FinalAction::DoNotDecrypt => true,
            FinalAction::Block | FinalAction::BlockWithReset => self.reads_past_blocks,
        };
        if !self.full_handshake
            || !reads_past
            || !r.tls
            || r.cut_short.is_some()
            || seg.closed
            || matches!(s.phase, Phase::Observing { .. })
        {
            return false;
        }
        // What this segment carried beyond the deciding message.
        self.read_facts(s, now);
        !s.flight_read && s.observer.wants(Direction::ToClient)
    }

    /// A decided session read on (the decision stands): the facts the
    /// server's first flight shows; the flow is settled once it is read, or
    /// the flow ends.
    fn observe(&mut self, s: &mut Session, seg: &Segment, now: u64) -> Step {
        self.read_facts(s, now);
        let done = s.flight_read || !s.observer.wants(Direction::ToClient);
        let Phase::Observing { resolution, .. } = &mut s.phase else { return Step::Undecided(Verdict::Forward) };
        if !done && !seg.closed {
            if resolution.action == FinalAction::DoNotDecrypt {
                return Step::Undecided(Verdict::Forward);
            }
            self.counters.blocked_packets += 1;
            return Step::Undecided(Verdict::Drop(DropReason::Policy));
        }
        let mut r = (**resolution).clone();
        if !done {
            r.cut_short = Some(FlowEnd::Closed);
        }
        Step::Decided(r, false)
    }

    /// Drains the observer's events into facts only (the decision is taken).
    fn read_facts(&mut self, s: &mut Session, now: u64) {
        while let Some(ev) = s.observer.poll_event() {
            match ev {
                ObserverEvent::ClientHello(_) | ObserverEvent::HelloRetryRequest => {}
                ObserverEvent::ServerHello(sh) => {
                    s.flight_read |= sh.version == Some(TlsVersion::Tls13) || sh.resumed;
                    s.facts.server_hello = Some(sh);
                }
                ObserverEvent::Certificate { chain } => self.saw_certificate(s, chain, now),
                ObserverEvent::CertificateRequest => s.facts.client_cert_requested = true,
                ObserverEvent::CertificateStatus => s.facts.ocsp_stapled = true,
                ObserverEvent::Resumed => {
                    if let Some(sh) = &mut s.facts.server_hello {
                        sh.resumed = true;
                    }
                }
                ObserverEvent::Alert { from, level, description } => {
                    s.alerts.push((side_of(from).name(), level, description));
                }
                ObserverEvent::ServerHelloDone | ObserverEvent::HandshakeDone(Direction::ToClient) => {
                    s.flight_read = true;
                }
                ObserverEvent::HandshakeDone(Direction::ToServer)
                | ObserverEvent::NotTls(_)
                | ObserverEvent::Prelude { .. }
                | ObserverEvent::PreludeEnded { .. } => {}
                ObserverEvent::Malformed { from, reason } => {
                    self.counters.malformed += 1;
                    s.unread = Some(HandshakeFailure::Malformed(side_of(from), reason.to_string()));
                }
                ObserverEvent::Overflow(from) => {
                    self.counters.overflow += 1;
                    s.unread = Some(HandshakeFailure::TooLarge(side_of(from), self.settings.handshake_buffer));
                }
            }
        }
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
        // A chain read past `handshake_buffer` (see `LargeMessages`) is not
        // remembered: each entry of the cache stays within that bound.
        if chain.iter().map(Vec::len).sum::<usize>() > self.settings.handshake_buffer as usize {
            return;
        }
        cache.learn(
            key,
            ServerIdentity {
                certificate: s.facts.certificate.clone(),
                chain: chain.into(),
                cert_status: s.facts.cert_status,
                version: s.facts.server_hello.as_ref().and_then(|h| h.version),
                cipher_suite: s.facts.server_hello.as_ref().map(|h| h.cipher_suite),
                client_cert_requested: s.facts.client_cert_requested,
                learned_at_ns: now,
            },
        );
    }

    /// Evaluates the policy; `None` while it waits for a later phase. The
    /// session's phase changes here only.
    fn evaluate(&mut self, s: &mut Session, last: bool) -> Option<Resolution> {
        match s.policy.evaluate(&s.facts, last) {
            Evaluation::Pending { monitor_rules, .. } => {
                s.monitors = monitor_rules;
                None
            }
            Evaluation::Decided(d) if d.action.is_decrypt() => {
                if last {
                    // Too late to take the flow over: the server is known only now.
                    Some(self.carry_out_decrypt(s, d, Some(Cause::ServerIdentityUnknown)))
                } else {
                    s.phase = Phase::DecryptPending { decision: d, refused: None };
                    None
                }
            }
            Evaluation::Decided(d) => Some(decided(d, None)),
        }
    }

    /// The server's side of the handshake is as visible as it will be.
    fn server_phase_done(&mut self, s: &mut Session) -> Resolution {
        if let Phase::DecryptPending { decision, refused } = std::mem::replace(&mut s.phase, Phase::Undecided) {
            let why = refused.unwrap_or(NotTakenOver::NoSlowPath);
            return self.carry_out_decrypt(s, decision, Some(Cause::NotTakenOver(why)));
        }
        match self.evaluate(s, true) {
            Some(r) => r,
            None => self.default_resolution(s, Cause::DefaultAction),
        }
    }

    /// A decrypt decision that was not taken over, carried out as well as
    /// the worker can: an undecryptable case the handshake shows, else
    /// do-not-decrypt for `otherwise`.
    fn carry_out_decrypt(&mut self, s: &mut Session, d: Decision, otherwise: Option<Cause>) -> Resolution {
        if d.action.is_passive() {
            return self.carry_out_passive(s, d);
        }
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
                let mut r = self.undecryptable(s, u, Some(d.action), d.rule);
                r.monitors = d.monitor_rules;
                r
            }
            None => Resolution {
                action: FinalAction::DoNotDecrypt,
                asked: d.action,
                rule: d.rule,
                cause: otherwise.unwrap_or(Cause::NotTakenOver(NotTakenOver::NoSlowPath)),
                cut_short: None,
                monitors: d.monitor_rules,
                missing: d.missing_facts,
                tls: true,
            },
        }
    }

    /// A passive known-key decision, with the server's side seen: forwarded
    /// untouched when the session can be read with the key (RSA key exchange,
    /// TLS 1.2 or older, no compression, the server showing exactly the key's
    /// certificate), else `undecryptable.not_passively_decryptable`.
    fn carry_out_passive(&mut self, s: &mut Session, d: Decision) -> Resolution {
        use crate::tls::suites::{self, KeyExchange};
        let key_cert = match d.action {
            Action::DecryptKnownKey { known_key, .. } => s.policy.known_keys().get(known_key).map(|k| k.cert_sha256),
            _ => None,
        };
        let readable = s.facts.server_hello.as_ref().is_some_and(|h| {
            h.compression == 0
                && h.version != Some(TlsVersion::Tls13)
                && suites::by_id(h.cipher_suite).is_some_and(|c| c.kx == KeyExchange::Rsa)
        }) && (s.facts.certificate.as_ref().is_some_and(|c| Some(c.sha256) == key_cert)
            // A resumed session shows no certificate: the reader opens it if it saw the session it resumes.
            || s.facts.server_hello.as_ref().is_some_and(|h| h.resumed));
        if !readable {
            let mut r = self.undecryptable(s, Undecryptable::NotPassivelyDecryptable, Some(d.action), d.rule);
            r.monitors = d.monitor_rules;
            return r;
        }
        Resolution {
            action: FinalAction::DoNotDecrypt,
            asked: d.action,
            rule: d.rule,
            cause: Cause::ReadPassively,
            cut_short: None,
            monitors: d.monitor_rules,
            missing: d.missing_facts,
            tls: true,
        }
    }

    /// A decrypt decision at the ClientHello: whether the slow path can take
    /// the flow over from this segment, or the exclusion cache says no.
    fn take_over(&mut self, s: &mut Session, seg: &Segment, now: u64) -> TakeOver {
        let Some(slow) = &mut self.slow else { return TakeOver::Refused(NotTakenOver::NoSlowPath) };
        let sni = s.facts.client_hello.as_ref().and_then(|c| c.sni.as_deref());
        let ech = s.facts.client_hello.as_ref().is_some_and(|c| c.ech);
        let flow = &s.facts.flow;
        let excluded = slow.exclusions.lookup(flow.dest_ip, flow.dest_port, sni, now).filter(|ex| {
            // A server's ECH exclusion is for clients that offer ECH to it:
            // one that retries without ECH shows its real name and is decrypted.
            ech || ex.reason != ExclusionReason::Undecryptable(Undecryptable::Ech)
        });
        if let Some(ex) = excluded {
            let (action, reason) = (ex.action, ex.reason);
            self.counters.excluded += 1;
            let Phase::DecryptPending { decision: d, .. } = std::mem::replace(&mut s.phase, Phase::Undecided) else {
                return TakeOver::Refused(NotTakenOver::NoSlowPath);
            };
            return TakeOver::Excluded(Resolution {
                action,
                asked: d.action,
                rule: d.rule,
                cause: Cause::Excluded(reason),
                cut_short: None,
                monitors: d.monitor_rules,
                missing: d.missing_facts,
                tls: true,
            });
        }
        if s.facts.client_hello.as_ref().is_some_and(|c| c.sslv2) {
            return TakeOver::Refused(NotTakenOver::Sslv2Hello);
        }
        if s.facts.starttls.is_some() {
            return TakeOver::Refused(NotTakenOver::Prelude);
        }
        if !seg.from_client {
            return TakeOver::Refused(NotTakenOver::ServerPacket);
        }
        if s.takeover.tcp[0].syn.is_none() || s.takeover.tcp[1].syn.is_none() {
            return TakeOver::Refused(NotTakenOver::Midstream);
        }
        let first_seq = s.takeover.held.first().and_then(|f| TcpFrame::parse(f)).map_or(seg.t.seq, |h| h.seq);
        if s.observer.stream_start(Direction::ToServer) != Some(first_seq) {
            return TakeOver::Refused(NotTakenOver::OutOfOrder);
        }
        TakeOver::Escalate((s.flow_id % slow.lcores as u64) as u8)
    }

    /// The context the slow path takes the flow over with; the session moves into it.
    fn escalation(&mut self, key: FlowKey, seg: &Segment, s: Box<Session>, now: u64) -> Box<Escalation> {
        self.counters.sessions += 1;
        self.counters.decrypt_asked += 1;
        self.counters.escalated += 1;
        let stream_start = s.observer.stream_start(Direction::ToServer).unwrap_or(seg.t.seq);
        let Session { flow_id, policy, facts, phase, server_identity, mut takeover, client_is_lo, evasions, .. } = *s;
        // Only a pending decrypt decision is taken over.
        let decision = match phase {
            Phase::DecryptPending { decision, .. } => decision,
            Phase::Undecided | Phase::Observing { .. } => Decision {
                rule: None,
                action: Action::DoNotDecrypt,
                monitor_rules: Vec::new(),
                missing_facts: Vec::new(),
            },
        };
        let [client, server] = takeover.tcp;
        let (held, held_wire) = takeover.take();
        Box::new(Escalation {
            key,
            worker: self.worker as usize,
            flow_id,
            client_is_lo,
            client_port: seg.client_port,
            facts,
            policy,
            decision,
            server_identity,
            tcp: TcpSeen { client, server, client_seq: stream_start, server_seq: seg.t.ack },
            held,
            held_wire,
            evasions,
            at_ns: now,
        })
    }

    /// The undecryptable action for `u`; `asked`: the decrypt action the
    /// policy asked for (none: the session was judged undecryptable first).
    fn undecryptable(&self, s: &Session, u: Undecryptable, asked: Option<Action>, rule: Option<usize>) -> Resolution {
        let action = s.policy.undecryptable(u);
        Resolution {
            action,
            asked: asked.unwrap_or(action.into()),
            rule,
            cause: Cause::Undecryptable(u),
            cut_short: None,
            monitors: s.monitors.clone(),
            missing: Vec::new(),
            tls: true,
        }
    }

    fn default_resolution(&self, s: &Session, cause: Cause) -> Resolution {
        let action = s.policy.default_action();
        Resolution {
            action,
            asked: action.into(),
            rule: None,
            cause,
            cut_short: None,
            monitors: s.monitors.clone(),
            missing: Vec::new(),
            tls: true,
        }
    }

    /// The handshake cannot be followed (or the flow is not TLS): the policy
    /// judges the session on what is known, a decrypt decision takes
    /// `undecryptable.handshake_error`; `cause` says why.
    fn judged_on_known(&mut self, s: &mut Session, cause: Cause) -> Resolution {
        let tls = !matches!(cause, Cause::NotTls(_));
        let decision = match std::mem::replace(&mut s.phase, Phase::Undecided) {
            Phase::DecryptPending { decision, .. } => decision,
            Phase::Undecided | Phase::Observing { .. } => match s.policy.evaluate(&s.facts, true) {
                Evaluation::Decided(d) => d,
                Evaluation::Pending { .. } => return Resolution { tls, ..self.default_resolution(s, cause) },
            },
        };
        let mut r = if decision.action.is_decrypt() {
            let action = s.policy.undecryptable(Undecryptable::HandshakeError);
            Resolution {
                action,
                asked: decision.action,
                rule: decision.rule,
                cause,
                cut_short: None,
                monitors: s.monitors.clone(),
                missing: Vec::new(),
                tls,
            }
        } else {
            decided(decision, Some(cause))
        };
        r.tls = tls;
        r
    }

    /// The final word on a session whose flow ends (or stops being watched).
    fn final_resolution(&mut self, s: &mut Session, end: FlowEnd) -> Resolution {
        if s.seen != Seen::Tls && s.facts.client_hello.is_none() {
            let r = self.judged_on_known(s, Cause::FlowEnded(end));
            return Resolution { tls: false, ..r };
        }
        let r = match std::mem::replace(&mut s.phase, Phase::Undecided) {
            Phase::DecryptPending { decision, refused } => {
                let why = refused.unwrap_or(NotTakenOver::NoSlowPath);
                self.carry_out_decrypt(s, decision, Some(Cause::NotTakenOver(why)))
            }
            Phase::Undecided => match self.evaluate(s, true) {
                Some(r) => r,
                None => self.default_resolution(s, Cause::FlowEnded(end)),
            },
            // Decided already: the decision stands.
            Phase::Observing { resolution, .. } => return Resolution { cut_short: Some(end), ..*resolution },
        };
        let cause = match r.cause {
            Cause::RuleMatched | Cause::DefaultAction => Cause::FlowEnded(end),
            other => other,
        };
        Resolution { cause, cut_short: Some(end), ..r }
    }

    /// A flow leaves the table: an undecided session that saw payload gets its event.
    fn end_session(&mut self, state: FlowState, now: u64, end: FlowEnd, out: &mut Output) {
        if let FlowState::Inspecting(mut s) = state {
            if let Phase::Observing { resolution, decided_ns } = &s.phase {
                let (mut r, at) = ((**resolution).clone(), *decided_ns);
                self.read_facts(&mut s, now);
                if !s.flight_read {
                    r.cut_short = Some(end);
                }
                self.emit(s, r, at, now, out);
            } else if s.seen != Seen::Nothing {
                let r = self.final_resolution(&mut s, end);
                self.emit(s, r, now, now, out);
            }
        }
    }

    /// The slow-path lcore that gets copies of an undecided flow's packets:
    /// one runs, and a passive rule may read the session.
    fn passive_lcore(&self, s: &Session) -> Option<u8> {
        let slow = self.slow.as_ref().filter(|p| p.lcores > 0)?;
        s.policy.has_passive_rules().then(|| (s.flow_id % slow.lcores as u64) as u8)
    }

    /// Ends a session with its event (dated `decided_at`); its facts move into the event.
    fn emit(&mut self, s: Box<Session>, r: Resolution, decided_at: u64, now: u64, out: &mut Output) {
        self.counters.sessions += 1;
        match r.action {
            FinalAction::DoNotDecrypt => self.counters.verdict_do_not_decrypt += 1,
            FinalAction::Block => self.counters.verdict_block += 1,
            FinalAction::BlockWithReset => self.counters.verdict_block_with_reset += 1,
        }
        if r.asked.is_decrypt() {
            self.counters.decrypt_asked += 1;
        }
        if r.cause == Cause::ServerIdentityUnknown && s.facts.certificate.is_none() {
            // No handshake shows this server's certificate (TLS 1.3 hides it).
            self.want_probe(&s, now, out);
        }
        let Session {
            flow_id,
            facts,
            alerts,
            policy,
            server_identity,
            certificate_from,
            unread,
            evasions,
            started_ns,
            ..
        } = *s;
        let name = |i: usize| policy.rules()[i].name.clone();
        out.events.push(SessionEvent {
            timestamp_ns: decided_at,
            started_ns,
            flow_id,
            tls: r.tls,
            flow: facts.flow,
            client_hello: facts.client_hello,
            server_hello: facts.server_hello,
            certificate: facts.certificate,
            certificate_source: certificate_from,
            cert_status: facts.cert_status,
            ocsp_stapled: facts.ocsp_stapled,
            client_cert_requested: facts.client_cert_requested,
            unread,
            starttls: facts.starttls,
            connect_target: facts.connect_target,
            quic_version: facts.quic_version,
            alerts,
            evasions,
            outcome: Outcome {
                carried_out: r.action.into(),
                asked: r.asked,
                rule: r.rule.map(name),
                cause: r.cause,
                cut_short: r.cut_short,
                monitor_rules: r.monitors.into_iter().map(name).collect(),
                missing_facts: r.missing,
                server_identity,
            },
            decrypt: None,
            dns: None,
        });
    }

    /// Asks the slow path to learn the server's certificate with a handshake
    /// of its own (once per server per [`PROBE_AGAIN_NS`]).
    fn want_probe(&mut self, s: &Session, now: u64, out: &mut Output) {
        let (Some(slow), Some((l2, client_port))) = (&mut self.slow, &s.takeover.client_l2) else { return };
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

/// A decision other than decrypt: the rule's action (or the default), for
/// `cause` (none: the rule matched, or the default action).
/// What a flow decided do-not-decrypt keeps of the bytes it was judged on
/// (none kept: nothing to guard).
fn guard_of(s: &mut Session) -> Option<Box<session::Guard>> {
    let mut judged = |dir| s.observer.take_judged(dir).map(|(start, bytes)| session::Judged { start, bytes });
    let sides = [judged(Direction::ToServer), judged(Direction::ToClient)];
    if sides.iter().all(Option::is_none) {
        return None;
    }
    Some(Box::new(session::Guard { fins: s.fins, client_is_lo: s.client_is_lo, entered_by: s.entered_by, sides }))
}

fn decided(d: Decision, cause: Option<Cause>) -> Resolution {
    let action = match d.action {
        Action::Block => FinalAction::Block,
        Action::BlockWithReset => FinalAction::BlockWithReset,
        _ => FinalAction::DoNotDecrypt,
    };
    let cause = cause.unwrap_or(if d.rule.is_some() { Cause::RuleMatched } else { Cause::DefaultAction });
    Resolution {
        action,
        asked: d.action,
        rule: d.rule,
        cause,
        cut_short: None,
        monitors: d.monitor_rules,
        missing: d.missing_facts,
        tls: true,
    }
}

fn when_full_action(w: SlowWhenFull) -> FinalAction {
    match w {
        SlowWhenFull::DoNotDecrypt => FinalAction::DoNotDecrypt,
        SlowWhenFull::Block => FinalAction::Block,
    }
}

fn side_of(d: Direction) -> Side {
    match d {
        Direction::ToServer => Side::Client,
        Direction::ToClient => Side::Server,
    }
}

impl TcpSideSeen {
    /// Notes what a segment from this side shows.
    fn saw(&mut self, t: &TcpFrame, now: u64) {
        let o = t.options();
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

/// An address as flow keys store it (IPv4 in the low four bytes).
fn addr_of(ip: std::net::IpAddr) -> Addr {
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
    const LARGEST_KEPT: usize = crate::tls::DEFAULT_REASSEMBLY_CAP;

    fn facts(&mut self, der: &[u8]) -> Option<Arc<tlsgate_config::facts::CertificateFacts>> {
        let h = self.by_hash.hasher().hash_one(der);
        if let Some((d, f)) = self.by_hash.get(&h) {
            if d == der {
                return Some(f.clone());
            }
        }
        let f = Arc::new(certificate_facts(der).ok()?);
        // A certificate larger than any handshake message of the default
        // buffer is read each time it comes, not kept (the cache's memory stays
        // within CAPACITY such certificates).
        if der.len() > Self::LARGEST_KEPT {
            return Some(f);
        }
        if self.by_hash.len() >= Self::CAPACITY {
            self.by_hash.clear();
        }
        self.by_hash.insert(h, (der.to_vec(), f.clone()));
        Some(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The per-flow cost the README states: a decided flow keeps only its
    /// state (in the table's slot, with key and timers) and its index entry.
    #[test]
    fn decided_flow_state_stays_small() {
        assert_eq!(std::mem::size_of::<FlowState>(), 16);
        assert_eq!(crate::flow::slot_size::<FlowState>(), 72);
        assert_eq!(std::mem::size_of::<(FlowKey, FlowId)>(), 44);
    }
}
