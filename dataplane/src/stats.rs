//! Per-lcore counters. Each worker is the only writer of its own cache-aligned
//! block (plain relaxed stores, no read-modify-write); the control thread reads
//! them to print rates and totals.

use std::sync::atomic::{AtomicU64, Ordering};

pub use crate::inspect::InspectCounters;

/// Why a packet was dropped by a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The egress tx queue had no room, and the staging burst was full.
    TxFull,
    /// The ring to the worker that owns the flow was full.
    DispatchFull,
    /// Still unsent when the appliance stopped.
    Shutdown,
    /// The flow is blocked by the decryption policy.
    Policy,
    /// A new flow found the flow table full (`flows.when_full = "drop"`).
    FlowTableFull,
    /// A flow seen mid-stream (`flows.midstream = "block"`).
    Midstream,
    /// The ring to the slow-path lcore decrypting the flow was full.
    SlowPathFull,
    /// A segment of an incomplete ClientHello held back (a copy goes on to
    /// the server unless the slow path takes the flow).
    Held,
}

/// Number of drop reasons.
pub const DROP_REASONS: usize = 8;

impl DropReason {
    /// Every reason, in report order.
    pub const ALL: [DropReason; DROP_REASONS] = [
        DropReason::TxFull,
        DropReason::DispatchFull,
        DropReason::Shutdown,
        DropReason::Policy,
        DropReason::FlowTableFull,
        DropReason::Midstream,
        DropReason::SlowPathFull,
        DropReason::Held,
    ];

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            DropReason::TxFull => "tx_full",
            DropReason::DispatchFull => "dispatch_full",
            DropReason::Shutdown => "shutdown",
            DropReason::Policy => "policy",
            DropReason::FlowTableFull => "flow_table_full",
            DropReason::Midstream => "midstream",
            DropReason::SlowPathFull => "slowpath_full",
            DropReason::Held => "held",
        }
    }
}

/// Plain counters for one port as seen by one worker. Cache-line aligned:
/// two workers' counters must never share a line (false sharing costs more
/// than the forwarding itself).
#[repr(align(64))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets received on this port.
    pub rx_packets: u64,
    /// Bytes received on this port.
    pub rx_bytes: u64,
    /// Packets sent on this port.
    pub tx_packets: u64,
    /// Bytes sent on this port.
    pub tx_bytes: u64,
    /// Packets received here that were dropped, by [`DropReason`] (index = position in `ALL`).
    pub dropped: [u64; DROP_REASONS],
}

impl PortCounters {
    /// All drops.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().sum()
    }

    /// Adds `o` into self.
    pub fn add(&mut self, o: &PortCounters) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        for (a, b) in self.dropped.iter_mut().zip(o.dropped) {
            *a += b;
        }
    }
}

/// Plain counters for one worker (cache-line aligned, as [`PortCounters`]).
#[repr(align(64))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Per port, in the order of the appliance's port list.
    pub ports: Vec<PortCounters>,
    /// Packets handed to another worker (software dispatch).
    pub dispatched_out: u64,
    /// Packets received from another worker.
    pub dispatched_in: u64,
    /// Packets of decrypted flows handed to the slow path.
    pub escalated_out: u64,
    /// Packets the slow path's rx queues received and handed to this worker.
    pub escalated_in: u64,
    /// Polls that found packets.
    pub busy_polls: u64,
    /// Polls that found nothing.
    pub idle_polls: u64,
    /// The inspector's counters.
    pub inspect: InspectCounters,
    /// Session events lost because the ring to the control thread was full.
    pub events_lost: u64,
}

impl WorkerCounters {
    /// Zeroed counters for `ports` ports.
    pub fn new(ports: usize) -> WorkerCounters {
        WorkerCounters { ports: vec![PortCounters::default(); ports], ..Default::default() }
    }

    /// Sum over ports.
    pub fn total(&self) -> PortCounters {
        let mut t = PortCounters::default();
        for p in &self.ports {
            t.add(p);
        }
        t
    }
}

#[repr(align(64))]
#[derive(Default)]
struct SharedPort {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    dropped: [AtomicU64; DROP_REASONS],
}

/// A worker's counters as published for the control thread.
#[repr(align(64))]
pub struct SharedCounters {
    ports: Vec<SharedPort>,
    dispatched_out: AtomicU64,
    dispatched_in: AtomicU64,
    escalated_out: AtomicU64,
    escalated_in: AtomicU64,
    busy_polls: AtomicU64,
    idle_polls: AtomicU64,
    inspect: [AtomicU64; InspectCounters::FIELDS],
    events_lost: AtomicU64,
}

impl SharedCounters {
    /// Zeroed, for `ports` ports.
    pub fn new(ports: usize) -> SharedCounters {
        SharedCounters {
            ports: (0..ports).map(|_| SharedPort::default()).collect(),
            dispatched_out: AtomicU64::new(0),
            dispatched_in: AtomicU64::new(0),
            escalated_out: AtomicU64::new(0),
            escalated_in: AtomicU64::new(0),
            busy_polls: AtomicU64::new(0),
            idle_polls: AtomicU64::new(0),
            inspect: std::array::from_fn(|_| AtomicU64::new(0)),
            events_lost: AtomicU64::new(0),
        }
    }

    /// Publishes `c` (called by the owning worker only).
    pub fn publish(&self, c: &WorkerCounters) {
        let st = |a: &AtomicU64, v: u64| a.store(v, Ordering::Relaxed);
        for (s, p) in self.ports.iter().zip(&c.ports) {
            st(&s.rx_packets, p.rx_packets);
            st(&s.rx_bytes, p.rx_bytes);
            st(&s.tx_packets, p.tx_packets);
            st(&s.tx_bytes, p.tx_bytes);
            for (a, v) in s.dropped.iter().zip(p.dropped) {
                st(a, v);
            }
        }
        st(&self.dispatched_out, c.dispatched_out);
        st(&self.dispatched_in, c.dispatched_in);
        st(&self.escalated_out, c.escalated_out);
        st(&self.escalated_in, c.escalated_in);
        st(&self.busy_polls, c.busy_polls);
        st(&self.idle_polls, c.idle_polls);
        for (a, v) in self.inspect.iter().zip(c.inspect.to_array()) {
            st(a, v);
        }
        st(&self.events_lost, c.events_lost);
    }

    /// A snapshot (any thread).
    pub fn snapshot(&self) -> WorkerCounters {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        WorkerCounters {
            ports: self
                .ports
                .iter()
                .map(|s| PortCounters {
                    rx_packets: ld(&s.rx_packets),
                    rx_bytes: ld(&s.rx_bytes),
                    tx_packets: ld(&s.tx_packets),
                    tx_bytes: ld(&s.tx_bytes),
                    dropped: std::array::from_fn(|i| ld(&s.dropped[i])),
                })
                .collect(),
            dispatched_out: ld(&self.dispatched_out),
            dispatched_in: ld(&self.dispatched_in),
            escalated_out: ld(&self.escalated_out),
            escalated_in: ld(&self.escalated_in),
            busy_polls: ld(&self.busy_polls),
            idle_polls: ld(&self.idle_polls),
            inspect: InspectCounters::from_array(std::array::from_fn(|i| ld(&self.inspect[i]))),
            events_lost: ld(&self.events_lost),
        }
    }
}

/// Counters of one slow-path lcore, published for the control thread.
#[repr(align(64))]
#[derive(Default)]
pub struct SlowPathCounters {
    values: [AtomicU64; SlowPathCounters::FIELDS],
}

impl SlowPathCounters {
    /// Number of counters.
    pub const FIELDS: usize = 16;
    /// Their names, in index order.
    pub const NAMES: [&'static str; Self::FIELDS] = [
        "flows_taken_over",
        "flows_refused",
        "sessions_decrypted",
        "sessions_undecryptable",
        "sessions_now",
        "packets_in",
        "packets_out",
        "packets_handed_to_workers",
        "tx_dropped",
        "unknown_flow_packets",
        "plaintext_to_server",
        "plaintext_to_client",
        "certificates_forged",
        "records_lost",
        "probes",
        "probes_learned",
    ];

    /// Publishes `values` (called by the owning lcore only).
    pub fn publish(&self, values: &[u64; Self::FIELDS]) {
        for (a, v) in self.values.iter().zip(values) {
            a.store(*v, Ordering::Relaxed);
        }
    }

    /// A snapshot (any thread), in `NAMES` order.
    pub fn snapshot(&self) -> [u64; Self::FIELDS] {
        std::array::from_fn(|i| self.values[i].load(Ordering::Relaxed))
    }
}
