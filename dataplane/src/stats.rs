//! Per-lcore counters. Each worker is the only writer of its own cache-aligned
//! block (plain relaxed stores, no read-modify-write); the control thread reads
//! them to print rates and totals. Every set is declared once (see
//! [`tlsgate_core::counters`]); the report, the JSON counters and metric
//! names come from those declarations.

use crate::metrics::SharedLatencies;
use tlsgate_core::counters::Published;
pub use tlsgate_core::inspect::{DropReason, InspectCounters};
pub use tlsgate_slowpath::lcore::SlowPathCounters;

/// Number of drop reasons.
pub const DROP_REASONS: usize = DropReason::COUNT;

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
    /// Packets received here that were dropped, by [`DropReason`] (index = `reason as usize`).
    pub dropped: [u64; DROP_REASONS],
}

impl PortCounters {
    /// The traffic counters' names, in [`PortCounters::traffic`] order.
    pub const TRAFFIC: [&'static str; 4] = ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"];

    /// The traffic counters, in [`PortCounters::TRAFFIC`] order.
    pub fn traffic(&self) -> [u64; 4] {
        [self.rx_packets, self.rx_bytes, self.tx_packets, self.tx_bytes]
    }

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

    fn to_array(self) -> [u64; PORT_FIELDS] {
        let mut a = [0; PORT_FIELDS];
        a[..4].copy_from_slice(&self.traffic());
        a[4..].copy_from_slice(&self.dropped);
        a
    }

    fn from_array(a: [u64; PORT_FIELDS]) -> PortCounters {
        PortCounters {
            rx_packets: a[0],
            rx_bytes: a[1],
            tx_packets: a[2],
            tx_bytes: a[3],
            dropped: std::array::from_fn(|i| a[4 + i]),
        }
    }
}

const PORT_FIELDS: usize = 4 + DROP_REASONS;

tlsgate_core::counters! {
    /// What a worker's loop counts besides ports and inspection.
    pub struct LcoreCounters {
        /// Packets handed to another worker (software dispatch).
        dispatched_out,
        /// Packets received from another worker.
        dispatched_in,
        /// Packets of decrypted flows handed to the slow path.
        escalated_out,
        /// Packets the slow path's rx queues received and handed to this worker.
        escalated_in,
        /// Polls that found packets.
        busy_polls,
        /// Polls that found nothing.
        idle_polls,
        /// Session events lost because the ring to the control thread was full.
        events_lost,
    }
}

/// Plain counters for one worker (cache-line aligned, as [`PortCounters`]).
#[repr(align(64))]
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkerCounters {
    /// Per port, in the order of the appliance's port list.
    pub ports: Vec<PortCounters>,
    /// The loop's own.
    pub lcore: LcoreCounters,
    /// The inspector's counters.
    pub inspect: InspectCounters,
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

/// A worker's counters as published for the control thread.
pub struct SharedCounters {
    ports: Vec<Published<PORT_FIELDS>>,
    lcore: Published<{ LcoreCounters::FIELDS }>,
    inspect: Published<{ InspectCounters::FIELDS }>,
    /// The decision latencies of the sessions it logged.
    pub latencies: SharedLatencies,
}

impl SharedCounters {
    /// Zeroed, for `ports` ports.
    pub fn new(ports: usize) -> SharedCounters {
        SharedCounters {
            ports: (0..ports).map(|_| Published::default()).collect(),
            lcore: Published::default(),
            inspect: Published::default(),
            latencies: SharedLatencies::default(),
        }
    }

    /// Publishes `c` (called by the owning worker only).
    pub fn publish(&self, c: &WorkerCounters) {
        for (s, p) in self.ports.iter().zip(&c.ports) {
            s.publish(&p.to_array());
        }
        self.lcore.publish(&c.lcore.to_array());
        self.inspect.publish(&c.inspect.to_array());
    }

    /// A snapshot (any thread).
    pub fn snapshot(&self) -> WorkerCounters {
        WorkerCounters {
            ports: self.ports.iter().map(|s| PortCounters::from_array(s.snapshot())).collect(),
            lcore: LcoreCounters::from_array(self.lcore.snapshot()),
            inspect: InspectCounters::from_array(self.inspect.snapshot()),
        }
    }
}

/// A slow-path lcore's counters as published for the control thread.
#[derive(Default)]
pub struct SharedSlowPathCounters {
    counters: Published<{ SlowPathCounters::FIELDS }>,
    /// The handshake and first-plaintext latencies of the sessions it decrypted.
    pub latencies: SharedLatencies,
}

impl SharedSlowPathCounters {
    /// Publishes `c` (called by the owning lcore only).
    pub fn publish(&self, c: &SlowPathCounters) {
        self.counters.publish(&c.to_array());
    }

    /// A snapshot (any thread).
    pub fn snapshot(&self) -> SlowPathCounters {
        SlowPathCounters::from_array(self.counters.snapshot())
    }
}
