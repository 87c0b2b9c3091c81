//! A flow's lifecycle in the inspector, as one state enum: inspecting (with
//! the session being watched, itself in a [`Phase`]), bypassed, blocked, or
//! intercepted by a slow-path lcore. Every change of a flow's state goes
//! through [`FlowState::settle`] and [`FlowState::intercept`]; a session's
//! phase changes only in the inspector's `evaluate` step.

use std::sync::Arc;

use tlsgate_config::facts::SessionFacts;
use tlsgate_config::policy::{Action, Decision, FinalAction, Policy};

use crate::escalate::TcpSideSeen;
use crate::outcome::{Cause, FlowEnd, HandshakeFailure, NotTakenOver, ServerIdentitySource};
use crate::tls::HandshakeObserver;

/// What the inspector keeps per flow, in the flow table's slot. A decided
/// flow keeps only this (16 bytes); the session exists only while inspecting.
pub(super) enum FlowState {
    /// Undecided: the session is being watched.
    Inspecting(Box<Session>),
    /// Forwarded untouched (do-not-decrypt, or the action of an exclusion).
    Bypass {
        /// FIN seen from lo (bit 0) and hi (bit 1).
        fins: u8,
    },
    /// First seen without its SYN and forwarded uninspected (`flows.midstream
    /// = "bypass"`), or dropped (`"block"`): remembered so that its later
    /// packets cost a lookup, and the first to be forgotten when the table is
    /// full (forgetting it costs nothing but that lookup's miss on its next
    /// packet, which is then judged the same way again).
    Midstream {
        /// FIN seen from lo (bit 0) and hi (bit 1).
        fins: u8,
        /// Dropped (`"block"`), else forwarded.
        blocked: bool,
    },
    /// Forwarded untouched, like `Bypass`, while the handshake bytes judged
    /// may still be sent again: a copy with other bytes is dropped, until
    /// the receiver acknowledges past them (it has them then, and discards
    /// any later copy itself). Then `Bypass`.
    Guarded(Box<Guard>),
    /// Every packet dropped (block, block-with-reset, or a session the slow path ended).
    Blocked {
        /// FIN seen from lo (bit 0) and hi (bit 1).
        fins: u8,
    },
    /// Being decrypted on this slow-path lcore; it owns the connection,
    /// FIN and RST included.
    Intercepted(u8),
    /// Forwarded untouched, like `Bypass`, and read by this slow-path lcore
    /// (a passive known-key rule): every packet is copied to it.
    Passive {
        /// The lcore reading it.
        lcore: u8,
        /// FIN seen from lo (bit 0) and hi (bit 1).
        fins: u8,
    },
}

impl FlowState {
    /// The flow is decided with `action`: its session (if it was inspecting) comes out.
    pub(super) fn settle(&mut self, action: FinalAction) -> Option<Box<Session>> {
        let fins = self.fins();
        let to = match action {
            FinalAction::DoNotDecrypt => FlowState::Bypass { fins },
            FinalAction::Block | FinalAction::BlockWithReset => FlowState::Blocked { fins },
        };
        match std::mem::replace(self, to) {
            FlowState::Inspecting(s) => Some(s),
            _ => None,
        }
    }

    /// The flow is read passively by slow-path lcore `lcore`: its session comes out.
    pub(super) fn read_passively(&mut self, lcore: u8) -> Option<Box<Session>> {
        let fins = self.fins();
        match std::mem::replace(self, FlowState::Passive { lcore, fins }) {
            FlowState::Inspecting(s) => Some(s),
            _ => None,
        }
    }

    /// The flow is handed to slow-path lcore `lcore`: its session comes out.
    pub(super) fn intercept(&mut self, lcore: u8) -> Option<Box<Session>> {
        match std::mem::replace(self, FlowState::Intercepted(lcore)) {
            FlowState::Inspecting(s) => Some(s),
            _ => None,
        }
    }

    /// Decided and forwarded, read on for its event only.
    pub(super) fn is_observing(&self) -> bool {
        matches!(self, FlowState::Inspecting(s) if matches!(s.phase, Phase::Observing { .. }))
    }

    /// FIN seen from lo (bit 0) and hi (bit 1).
    pub(super) fn fins(&self) -> u8 {
        match self {
            FlowState::Inspecting(s) => s.fins,
            FlowState::Bypass { fins }
            | FlowState::Midstream { fins, .. }
            | FlowState::Blocked { fins }
            | FlowState::Passive { fins, .. } => *fins,
            FlowState::Guarded(g) => g.fins,
            FlowState::Intercepted(_) => 0,
        }
    }

    /// Notes a FIN from lo (`from_lo`) or hi; returns the FINs seen.
    pub(super) fn saw_fin(&mut self, from_lo: bool) -> u8 {
        let bit = if from_lo { 1 } else { 2 };
        match self {
            FlowState::Inspecting(s) => {
                s.fins |= bit;
                s.fins
            }
            FlowState::Bypass { fins }
            | FlowState::Midstream { fins, .. }
            | FlowState::Blocked { fins }
            | FlowState::Passive { fins, .. } => {
                *fins |= bit;
                *fins
            }
            FlowState::Guarded(g) => {
                g.fins |= bit;
                g.fins
            }
            FlowState::Intercepted(_) => 0,
        }
    }
}

/// What a decided, forwarded flow keeps of the bytes it was judged on.
pub(super) struct Guard {
    /// FIN seen from lo (bit 0) and hi (bit 1).
    pub fins: u8,
    /// Whether the client is the flow key's `lo` endpoint.
    pub client_is_lo: bool,
    /// The port each side's packets entered by (client, server), as the
    /// flow's first packets showed: an ACK that clears a side comes by its
    /// sender's port (one spoofed from the other side of the wire does not).
    pub entered_by: [Option<u8>; 2],
    /// The client's judged bytes, then the server's; `None` once acknowledged.
    pub sides: [Option<Judged>; 2],
}

/// Bytes judged in one direction, from sequence number `start`.
pub(super) struct Judged {
    pub start: u32,
    pub bytes: Vec<u8>,
}

impl Judged {
    /// One past the last judged byte.
    pub fn end(&self) -> u32 {
        self.start.wrapping_add(self.bytes.len() as u32)
    }

    /// Whether `(seq, payload)` differs from the judged bytes where they overlap.
    pub fn conflicts(&self, seq: u32, payload: &[u8]) -> bool {
        let from = i64::from(seq.wrapping_sub(self.start) as i32);
        let (a, b) = (from.max(0), (from + payload.len() as i64).min(self.bytes.len() as i64));
        a < b && payload.get((a - from) as usize..(b - from) as usize) != self.bytes.get(a as usize..b as usize)
    }

    /// Whether an acknowledgement number covers every judged byte.
    pub fn acknowledged_by(&self, ack: u32) -> bool {
        (ack.wrapping_sub(self.end()) as i32) >= 0
    }
}

/// A handshake being watched.
pub(super) struct Session {
    pub flow_id: u64,
    /// The policy in force when the session began: a reload applies to
    /// sessions that begin after it, and rule numbers stay meaningful.
    pub policy: Arc<Policy>,
    pub observer: HandshakeObserver,
    pub facts: SessionFacts,
    pub alerts: Vec<(&'static str, u8, u8)>,
    /// Whether the client is the flow key's `lo` endpoint.
    pub client_is_lo: bool,
    /// FIN seen from lo (bit 0) and hi (bit 1).
    pub fins: u8,
    /// How much of the flow has been seen.
    pub seen: Seen,
    /// Where the server facts of the decision came from.
    pub server_identity: ServerIdentitySource,
    /// Where the certificate facts the event carries came from.
    pub certificate_from: ServerIdentitySource,
    /// The chain the server identity cache recalled at the ClientHello.
    pub recalled_chain: Option<Arc<[Vec<u8>]>>,
    /// The server's first flight has been read (ServerHelloDone, its
    /// ChangeCipherSpec, or a TLS 1.3 ServerHello).
    pub flight_read: bool,
    /// Reading on after the decision stopped early: why (the facts that
    /// would have followed are missing).
    pub unread: Option<HandshakeFailure>,
    /// When the flow's first payload came (a prelude's time runs from it).
    pub first_payload_ns: Option<u64>,
    /// When the flow's first packet came (0: not known).
    pub started_ns: u64,
    /// What each side's receiver accepts (the normaliser's model).
    pub track: super::normalize::TcpTrack,
    /// What the normaliser met on this flow (for the event).
    pub evasions: super::normalize::Evasions,
    /// The port each side's packets enter by (client, server), from the first seen.
    pub entered_by: [Option<u8>; 2],
    /// Monitor rules that held so far.
    pub monitors: Vec<usize>,
    /// Where the decision stands.
    pub phase: Phase,
    /// What a slow path needs to take the flow over or probe its server
    /// (filled only when a slow path runs).
    pub takeover: TakeoverContext,
}

/// How much of a flow has been seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Seen {
    /// No payload yet (SYNs, ACKs): a flow that ends now gets no event.
    Nothing,
    /// Payload, but no TLS message yet.
    Bytes,
    /// A ClientHello or ServerHello.
    Tls,
}

/// Where a session's decision stands.
#[derive(Debug)]
pub(super) enum Phase {
    /// Before the ClientHello, or while the policy waits for the server's facts.
    Undecided,
    /// A decrypt decision at the ClientHello: the flow is handed to the slow
    /// path on the segment that completed it; if it cannot be, why not, and
    /// the session is read on to its server facts so that the undecryptable
    /// cases are still told apart.
    DecryptPending {
        /// The decision.
        decision: Decision,
        /// Why it could not be handed over, once tried.
        refused: Option<NotTakenOver>,
    },
    /// Decided and forwarded before the server's first flight was read
    /// (`[events] handshake = "full"`): the handshake is read on, for the
    /// event only, until that flight is; then the flow is bypassed and the
    /// event goes out.
    Observing {
        /// The decision, carried out already.
        resolution: Box<Resolution>,
        /// When it was taken (the event's time).
        decided_ns: u64,
    },
}

/// What the wire showed that a slow path needs: both sides' TCP, the
/// client's link-layer header, and the client frames held back while the
/// ClientHello is incomplete (a ClientHello with post-quantum key shares
/// spans two segments), so that a decrypting slow path can still answer it.
#[derive(Default)]
pub(super) struct TakeoverContext {
    /// Client, server.
    pub tcp: [TcpSideSeen; 2],
    /// The client's link-layer header and the port its packets enter by.
    pub client_l2: Option<(Vec<u8>, usize)>,
    /// Held client segments, in order (whole: a segment that came in IP
    /// fragments is here reassembled, as the slow path reads it).
    pub held: Vec<Vec<u8>>,
    /// The frames the wire carried them in, as they came (the segments
    /// themselves, or their fragments): what goes on if they are released.
    pub held_wire: Vec<Vec<u8>>,
    /// Their bytes (from the IP header on).
    pub held_bytes: usize,
}

impl TakeoverContext {
    /// Holds a segment back (`wire`: the frames it came in).
    pub fn hold(&mut self, segment: &[u8], ip_len: usize, wire: Vec<Vec<u8>>) {
        self.held.push(segment.to_vec());
        self.held_wire.extend(wire);
        self.held_bytes += ip_len;
    }

    /// Takes the held segments out, whole, and the frames they came in.
    pub fn take(&mut self) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        self.held_bytes = 0;
        (std::mem::take(&mut self.held), std::mem::take(&mut self.held_wire))
    }

    /// Takes out the frames to send on in place of the held segments.
    pub fn release(&mut self) -> Vec<Vec<u8>> {
        self.take().1
    }
}

impl Session {
    /// A session that has seen nothing yet.
    pub fn new(
        flow_id: u64,
        policy: Arc<Policy>,
        observer: HandshakeObserver,
        facts: SessionFacts,
        client_is_lo: bool,
    ) -> Session {
        Session {
            flow_id,
            policy,
            observer,
            facts,
            alerts: Vec::new(),
            client_is_lo,
            fins: 0,
            seen: Seen::Nothing,
            server_identity: ServerIdentitySource::Unknown,
            certificate_from: ServerIdentitySource::Unknown,
            recalled_chain: None,
            flight_read: false,
            unread: None,
            first_payload_ns: None,
            started_ns: 0,
            track: Default::default(),
            evasions: Default::default(),
            entered_by: [None; 2],
            monitors: Vec::new(),
            phase: Phase::Undecided,
            takeover: TakeoverContext::default(),
        }
    }

    /// Notes that TLS was seen.
    pub fn saw_tls(&mut self) {
        self.seen = Seen::Tls;
    }

    /// Notes that payload was seen.
    pub fn saw_bytes(&mut self) {
        self.seen = self.seen.max(Seen::Bytes);
    }
}

/// The resolution of a session: what is done with the flow and why, with
/// rules as indices into the session's policy (the event names them).
#[derive(Debug, Clone)]
pub(super) struct Resolution {
    /// What is carried out.
    pub action: FinalAction,
    /// What the policy asked for.
    pub asked: Action,
    /// The deciding rule.
    pub rule: Option<usize>,
    /// Why.
    pub cause: Cause,
    /// The flow ended before the handshake completed.
    pub cut_short: Option<FlowEnd>,
    /// Monitor rules that held.
    pub monitors: Vec<usize>,
    /// Facts never seen, so conditions on them did not match.
    pub missing: Vec<&'static str>,
    /// False: the flow is not TLS (a `flow` event).
    pub tls: bool,
}
