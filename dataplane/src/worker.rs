//! The run-to-completion worker loop: rx burst on each port, route each
//! packet (to the other port of its pair, or to the worker that owns its flow),
//! tx burst, and back off when idle. One per worker lcore; it shares nothing
//! mutable with other workers, so nothing on the packet path is locked.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::dpdk::{pause, Burst, Mbuf, RingConsumer, RingProducer, RxQueue, TxQueue};
use crate::packet::{flow_hash, worker_for};
use crate::stats::{DropReason, SharedCounters, WorkerCounters};

/// One port as a worker sees it: its own rx and tx queue, the index of the
/// port it bridges to, and the packets waiting to go out on this port.
pub struct WorkerPort {
    /// This worker's rx queue on the port.
    pub rx: RxQueue,
    /// This worker's tx queue on the port.
    pub tx: TxQueue,
    /// Index (in the worker's port list) of the other side of the wire.
    pub peer: usize,
    pending: Burst,
}

impl WorkerPort {
    /// A port with its queues and the index of its peer.
    pub fn new(rx: RxQueue, tx: TxQueue, peer: usize) -> WorkerPort {
        WorkerPort { rx, tx, peer, pending: Burst::new() }
    }
}

/// Software dispatch: rings to and from every other worker, used when the
/// ports cannot spread flows symmetrically by RSS.
pub struct Dispatch {
    /// `to[w]`: ring to worker w and its staging burst (None for self).
    pub to: Vec<Option<(RingProducer<Mbuf>, Burst)>>,
    /// Rings from the other workers.
    pub from: Vec<RingConsumer<Mbuf>>,
}

/// A worker: everything one packet lcore owns.
pub struct Worker {
    index: usize,
    workers: usize,
    ports: Vec<WorkerPort>,
    dispatch: Option<Dispatch>,
    counters: WorkerCounters,
    shared: Arc<SharedCounters>,
    running: Arc<AtomicBool>,
}

/// How long the final drain at shutdown keeps retrying unsent packets.
const DRAIN_POLLS: u32 = 10_000;

impl Worker {
    /// Builds worker `index` of `workers`.
    pub fn new(
        index: usize,
        workers: usize,
        ports: Vec<WorkerPort>,
        dispatch: Option<Dispatch>,
        shared: Arc<SharedCounters>,
        running: Arc<AtomicBool>,
    ) -> Worker {
        let counters = WorkerCounters::new(ports.len());
        Worker { index, workers, ports, dispatch, counters, shared, running }
    }

    /// Runs until `running` turns false, then drains and publishes final counters.
    pub fn run(mut self) -> i32 {
        let mut rx = Burst::new();
        let mut idle = Backoff::default();
        while self.running.load(Ordering::Relaxed) {
            let work = self.poll_once(&mut rx);
            if work > 0 {
                self.counters.busy_polls += 1;
                self.shared.publish(&self.counters);
                idle.reset();
            } else {
                self.counters.idle_polls += 1;
                if idle.wait() {
                    self.shared.publish(&self.counters);
                }
            }
        }
        self.drain();
        self.shared.publish(&self.counters);
        0
    }

    /// One pass over every rx queue and dispatch ring; returns packets handled.
    #[inline]
    pub fn poll_once(&mut self, rx: &mut Burst) -> usize {
        let mut work = 0;
        for p in 0..self.ports.len() {
            let n = self.ports[p].rx.recv(rx);
            if n == 0 {
                continue;
            }
            work += n;
            let c = &mut self.counters.ports[p];
            c.rx_packets += n as u64;
            for m in rx.as_slice() {
                c.rx_bytes += m.pkt_len() as u64;
            }
            for m in rx.drain() {
                self.route(p, m);
            }
        }
        if self.dispatch.is_some() {
            work += self.receive_dispatched(rx);
        }
        self.flush();
        work
    }

    /// Sends `m`, received on port index `p`, towards its owner and its egress.
    #[inline]
    fn route(&mut self, p: usize, mut m: Mbuf) {
        if let Some(d) = &mut self.dispatch {
            if let Some(h) = flow_hash(m.data()) {
                let owner = worker_for(h, self.workers);
                if owner != self.index {
                    if let Some((ring, staged)) = &mut d.to[owner] {
                        m.set_port(p as u16);
                        if let Err(m) = staged.push(m) {
                            ring.send_burst(staged);
                            if let Err(m) = staged.push(m) {
                                drop(m);
                                self.counters.ports[p].dropped[drop_index(DropReason::DispatchFull)] += 1;
                                return;
                            }
                        }
                        self.counters.dispatched_out += 1;
                        return;
                    }
                }
            }
        }
        self.forward(p, m);
    }

    /// Queues `m` (received on port index `p`) for the other side of the wire.
    #[inline]
    fn forward(&mut self, p: usize, m: Mbuf) {
        let out = self.ports[p].peer;
        let port = &mut self.ports[out];
        if let Err(m) = port.pending.push(m) {
            send_counted(port, &mut self.counters.ports[out]);
            if let Err(m) = port.pending.push(m) {
                drop(m);
                self.counters.ports[p].dropped[drop_index(DropReason::TxFull)] += 1;
            }
        }
    }

    fn receive_dispatched(&mut self, rx: &mut Burst) -> usize {
        let mut work = 0;
        let rings = self.dispatch.as_ref().map_or(0, |d| d.from.len());
        for i in 0..rings {
            let n = match &mut self.dispatch {
                Some(d) => d.from[i].recv_burst(rx),
                None => 0,
            };
            if n == 0 {
                continue;
            }
            work += n;
            self.counters.dispatched_in += n as u64;
            for m in rx.drain() {
                let p = (m.port() as usize).min(self.ports.len() - 1);
                self.forward(p, m);
            }
        }
        work
    }

    /// Pushes out everything staged: dispatch bursts, then tx bursts. What a
    /// full tx queue refuses stays staged for the next pass (back-pressure).
    #[inline]
    fn flush(&mut self) {
        if let Some(d) = &mut self.dispatch {
            for (ring, staged) in d.to.iter_mut().flatten() {
                if !staged.is_empty() {
                    ring.send_burst(staged);
                    // Whatever the ring refused is dropped now: holding it would
                    // reorder it behind later packets of the same flow.
                    for m in staged.as_slice() {
                        let p = (m.port() as usize).min(self.counters.ports.len() - 1);
                        self.counters.ports[p].dropped[drop_index(DropReason::DispatchFull)] += 1;
                        self.counters.dispatched_out -= 1;
                    }
                    staged.clear();
                }
            }
        }
        for (port, c) in self.ports.iter_mut().zip(self.counters.ports.iter_mut()) {
            if !port.pending.is_empty() {
                send_counted(port, c);
            }
        }
    }

    /// At shutdown: keep flushing for a bounded number of polls, then count
    /// what is left as dropped.
    fn drain(&mut self) {
        let mut rx = Burst::new();
        if self.dispatch.is_some() {
            self.receive_dispatched(&mut rx);
        }
        for _ in 0..DRAIN_POLLS {
            self.flush();
            if self.ports.iter().all(|p| p.pending.is_empty()) {
                return;
            }
            pause();
        }
        for (p, port) in self.ports.iter_mut().enumerate() {
            let left = port.pending.len() as u64;
            port.pending.clear();
            // Charged to the egress port's counters.
            self.counters.ports[p].dropped[drop_index(DropReason::Shutdown)] += left;
        }
    }
}

/// Sends a port's pending burst and counts what left.
#[inline]
fn send_counted(port: &mut WorkerPort, c: &mut crate::stats::PortCounters) -> usize {
    let before: u64 = port.pending.as_slice().iter().map(|m| m.pkt_len() as u64).sum();
    let n = port.tx.send(&mut port.pending);
    let after: u64 = port.pending.as_slice().iter().map(|m| m.pkt_len() as u64).sum();
    c.tx_packets += n as u64;
    c.tx_bytes += before - after;
    n
}

#[inline]
fn drop_index(r: DropReason) -> usize {
    r as usize
}

/// Idle back-off: spin briefly, then sleep with growing intervals, so that a
/// machine with more lcores than CPUs is not spun to death by idle workers.
#[derive(Default)]
pub struct Backoff {
    empty: u32,
}

impl Backoff {
    const SPINS: u32 = 256;
    const MAX_SLEEP_US: u64 = 500;

    /// Traffic arrived: back to spinning.
    #[inline]
    pub fn reset(&mut self) {
        self.empty = 0;
    }

    /// Waits after an empty poll. Returns true when it slept.
    #[inline]
    pub fn wait(&mut self) -> bool {
        self.empty = self.empty.saturating_add(1);
        if self.empty < Self::SPINS {
            pause();
            return false;
        }
        let step = ((self.empty - Self::SPINS) / 8).min(10);
        let us = (4u64 << step).min(Self::MAX_SLEEP_US);
        std::thread::sleep(Duration::from_micros(us));
        true
    }
}
