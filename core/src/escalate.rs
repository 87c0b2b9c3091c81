//! The hand-over between workers and the slow path. A worker whose decision
//! at the ClientHello is a decrypt action escalates the flow: it sends an
//! [`Escalation`] (the flow's context: addresses, facts, decision, and the TCP
//! state the wire showed) and then every packet of the flow to one slow-path
//! lcore. The slow path answers with [`SlowUpdate`]s (a session ended; what it
//! learned about a server) and sends the control thread [`SlowRecord`]s
//! (events, key log lines, decrypted frames). All of it crosses SPSC rings.

use std::sync::Arc;

use tlsgate_config::facts::SessionFacts;
use tlsgate_config::policy::{Decision, FinalAction, Policy};

use crate::event::SessionEvent;
use crate::flow::FlowKey;
use crate::identity::{ExclusionKey, ExclusionReason, ServerIdentity, ServerKey};
use crate::outcome::ServerIdentitySource;
use crate::packet::TcpOptions;

/// What the wire showed of one side of a TCP connection before takeover.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSideSeen {
    /// The options of its SYN (or SYN-ACK); `None` if it was not seen.
    pub syn: Option<TcpOptions>,
    /// Its last window field, as sent (unscaled).
    pub window: u16,
    /// That window was on a SYN (never scaled).
    pub window_on_syn: bool,
    /// The last TSval it sent, and when (ns).
    pub tsval: Option<(u32, u64)>,
}

/// The TCP state of a flow at the segment that escalated it (the client's
/// segment that completed its ClientHello).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpSeen {
    /// The client side.
    pub client: TcpSideSeen,
    /// The server side.
    pub server: TcpSideSeen,
    /// Sequence number of that segment: the first byte of the ClientHello.
    pub client_seq: u32,
    /// Its acknowledgement number: the next byte the server sends.
    pub server_seq: u32,
}

impl TcpSeen {
    /// The window scales (client, server): both SYNs announced one, else neither side uses it.
    pub fn wscale(&self) -> (u8, u8) {
        match (self.client.syn.and_then(|o| o.wscale), self.server.syn.and_then(|o| o.wscale)) {
            (Some(c), Some(s)) => (c, s),
            _ => (0, 0),
        }
    }

    /// Whether both SYNs carried timestamps.
    pub fn timestamps(&self) -> bool {
        let has = |s: &TcpSideSeen| s.syn.is_some_and(|o| o.timestamps.is_some());
        has(&self.client) && has(&self.server)
    }
}

/// A flow handed to the slow path.
#[derive(Debug)]
pub struct Escalation {
    /// The flow.
    pub key: FlowKey,
    /// The worker that owns it (updates go back there).
    pub worker: usize,
    /// The session's flow id (for its event).
    pub flow_id: u64,
    /// Whether the client is the flow key's `lo` endpoint.
    pub client_is_lo: bool,
    /// Index (in the appliance's port list) of the port the client's packets
    /// enter by; the server's enter by its pair peer (`client_port ^ 1`).
    pub client_port: usize,
    /// What the fast path saw of the session (its ClientHello, and server
    /// facts from the server identity cache).
    pub facts: SessionFacts,
    /// The policy the session began with.
    pub policy: Arc<Policy>,
    /// The decrypt decision.
    pub decision: Decision,
    /// Where the server facts of the decision came from.
    pub server_identity: ServerIdentitySource,
    /// The TCP state to take over from.
    pub tcp: TcpSeen,
    /// The client's frames that the worker held back while its ClientHello
    /// was incomplete (the segment that completed it follows on the packet
    /// ring), whole (reassembled if it came in IP fragments).
    pub held: Vec<Vec<u8>>,
    /// The frames the wire carried them in: what goes on toward the server
    /// if the slow path cannot take the flow.
    pub held_wire: Vec<Vec<u8>>,
    /// What the inline normaliser met on the flow before it was handed over.
    pub evasions: crate::inspect::Evasions,
    /// When it was escalated (ns).
    pub at_ns: u64,
}

/// What a worker hands a slow-path lcore on its flow ring.
#[derive(Debug)]
pub enum ToSlowPath {
    /// Take this flow over (its packets follow on the packet ring).
    Flow(Box<Escalation>),
    /// Learn what this server presents, with a handshake of the slow path's own.
    Probe(ProbeRequest),
    /// A segment of a flow it decrypts that came in IP fragments, reassembled
    /// by the worker (too large for an mbuf of the packet ring).
    Frame(Vec<u8>),
    /// A copy of a packet the worker forwarded, of a flow a passive rule may
    /// read (undecided yet) or reads.
    Copy(Vec<u8>),
    /// A flow a passive known-key rule reads: its event, completed with what
    /// was read when the flow ends, and the key to read it with.
    Passive(Box<PassiveWatch>),
}

/// What a slow-path lcore needs to read a flow passively.
#[derive(Debug)]
pub struct PassiveWatch {
    /// The session's event, as the worker decided it (`read_passively`).
    pub event: SessionEvent,
    /// The policy the decision was taken by, and its known key's index.
    pub policy: Arc<Policy>,
    /// Index into the policy's known keys.
    pub known_key: usize,
}

/// A server whose certificate a decrypt decision needed at the ClientHello
/// and that no handshake has shown (TLS 1.3 hides it): the slow path opens a
/// connection of its own to it (from the client's address, on a port of its
/// choosing), reads the certificate, resets the connection, and every
/// worker's server identity cache learns it, so that the next session to the
/// server is decided in full at its ClientHello.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// The server, as sessions reach it.
    pub server: ServerKey,
    /// The client's address (the probe's source).
    pub client_ip: crate::packet::Addr,
    /// The server's address, as flow keys store it.
    pub server_ip: crate::packet::Addr,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// The link-layer header of the client's frames toward the server.
    pub l2_to_server: Vec<u8>,
    /// Index of the port toward the server.
    pub server_port_index: usize,
    /// The ALPN protocols the client offered.
    pub alpn: Vec<String>,
}

/// What the slow path tells a worker.
#[derive(Debug)]
pub enum SlowUpdate {
    /// The session of this flow is over: later packets of it are dropped
    /// until the flow expires.
    Ended {
        /// The flow.
        key: FlowKey,
    },
    /// The slow path could not take the flow (at its session limit): it is
    /// carried out as `action` (`slowpath.when_full`).
    Refused {
        /// The flow.
        key: FlowKey,
        /// do-not-decrypt (fail open) or block (fail closed).
        action: FinalAction,
    },
    /// What an upstream handshake showed about a server (every worker learns it).
    Learned {
        /// The server.
        key: ServerKey,
        /// What it presented.
        identity: ServerIdentity,
    },
    /// A probe's connection: its packets go to this slow-path lcore (sent
    /// before the probe's SYN leaves).
    Probe {
        /// The probe's flow.
        key: FlowKey,
        /// The slow-path lcore running it.
        lcore: u8,
    },
    /// Later sessions matching `key` are not to be decrypted (every worker learns it).
    Excluded {
        /// The server or SNI.
        key: ExclusionKey,
        /// What those sessions get at their ClientHello.
        action: FinalAction,
        /// Why.
        reason: ExclusionReason,
    },
}

/// What the slow path sends the control thread, which writes the files.
#[derive(Debug, Clone)]
pub enum SlowRecord {
    /// A session's event.
    Event(Box<SessionEvent>),
    /// NSS key log lines (without newlines).
    KeyLog(Vec<String>),
    /// Decrypted traffic as synthetic Ethernet frames, with their times (ns).
    Decrypted(Vec<(u64, Vec<u8>)>),
}
