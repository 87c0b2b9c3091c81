//! The run-to-completion worker loop: rx burst on each port, route each
//! packet (to the worker that owns its flow), inspect it (the decryption
//! policy's verdict), send it to the other port of its pair, tx burst, and
//! back off when idle. One per worker lcore; it shares nothing mutable with
//! other workers, so nothing on the packet path is locked.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::dpdk::{
    pause, precise_sleeps, tsc, tsc_hz, Burst, Clock, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue,
};
use crate::metrics::{Latencies, LATENCY_PUBLISH_NS};
use crate::stats::{DropReason, PortCounters, SharedCounters, WorkerCounters};
use tlsgate_config::IdleMode;
use tlsgate_core::escalate::{SlowUpdate, ToSlowPath};
use tlsgate_core::event::SessionEvent;
use tlsgate_core::inspect::{Inspector, Output, Reset, Verdict};
use tlsgate_core::outcome::FlowEnd;
use tlsgate_core::packet::{flow_hash, worker_for};

/// One port as a worker sees it: its own rx and tx queue, the index of the
/// port it bridges to, and the packets waiting to go out on this port.
/// Cache-line aligned so that no two workers' staging bursts share a line.
#[repr(align(64))]
pub struct WorkerPort {
    /// This worker's rx queue on the port.
    pub rx: RxQueue,
    /// Slow-path lcores' rx queues on the port that this worker polls too
    /// (see [`crate::runtime::SlowPathIo::rx`]).
    pub also_rx: Vec<RxQueue>,
    /// This worker's tx queue on the port.
    pub tx: TxQueue,
    /// Index (in the worker's port list) of the other side of the wire.
    pub peer: usize,
    pending: Burst,
    pending_bytes: u64,
}

impl WorkerPort {
    /// A port with its queues and the index of its peer.
    pub fn new(rx: RxQueue, tx: TxQueue, peer: usize) -> WorkerPort {
        WorkerPort { rx, also_rx: Vec::new(), tx, peer, pending: Burst::new(), pending_bytes: 0 }
    }

    /// The same, polling `queues` (other lcores' rx queues on the port) too.
    pub fn also_polling(mut self, queues: Vec<RxQueue>) -> WorkerPort {
        self.also_rx = queues;
        self
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

/// The rings between a worker and the slow-path lcores, one set per lcore.
/// Flows and their packets go out on separate rings; the slow path reads a
/// flow's context before its packets (it looks at the flow ring again when a
/// packet names a flow it does not know yet, and the context was pushed first).
#[derive(Default)]
pub struct SlowLinks {
    /// Flows handed over, per slow-path lcore.
    pub flows: Vec<RingProducer<Box<ToSlowPath>>>,
    /// Packets of those flows, per slow-path lcore, with a staging burst.
    pub packets: Vec<(RingProducer<Mbuf>, Burst)>,
    /// Updates from each slow-path lcore.
    pub updates: Vec<RingConsumer<Box<SlowUpdate>>>,
    /// Packets each slow-path lcore's rx queues received, for this worker.
    pub handed: Vec<RingConsumer<Mbuf>>,
}

/// The decryption-policy stage of a worker.
pub struct Inspection {
    /// Flow table, handshake observers, policy.
    pub inspector: Inspector,
    /// Session events to the control thread.
    pub events: RingProducer<Box<SessionEvent>>,
    /// Pool for the frames the worker makes (TCP resets).
    pub pool: Mempool,
    /// In a replay, the capture's timestamps (ns), in the order the packets
    /// arrive on port 0: the capture's own time is the clock, so a replay
    /// decides as a live run would have (certificate validity, timeouts).
    /// net_pcap in DPDK 22.11 offers no rx timestamp offload, and a replay runs
    /// one worker on one rx queue, so the n-th packet received is the n-th
    /// packet of the file.
    pub replay_times: Option<Arc<[u64]>>,
    /// Packets of the capture received so far.
    pub replay_seq: usize,
    /// Where the control thread publishes a reloaded policy.
    pub policy_updates: Arc<PolicyUpdates>,
    /// The generation of the policy this worker has in force.
    pub policy_generation: u64,
}

/// A reloaded policy, published by the control thread. Workers look at the
/// generation (one relaxed load) off the per-packet path and take the lock
/// only when it changed.
#[derive(Default)]
pub struct PolicyUpdates {
    generation: std::sync::atomic::AtomicU64,
    policy: std::sync::Mutex<Option<Arc<tlsgate_config::policy::Policy>>>,
}

impl PolicyUpdates {
    /// Publishes `policy` to every worker.
    pub fn publish(&self, policy: Arc<tlsgate_config::policy::Policy>) {
        let mut slot = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(policy);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn newer_than(&self, seen: u64) -> Option<(u64, Arc<tlsgate_config::policy::Policy>)> {
        let g = self.generation.load(Ordering::Acquire);
        if g == seen {
            return None;
        }
        let slot = self.policy.lock().unwrap_or_else(|e| e.into_inner());
        slot.clone().map(|p| (g, p))
    }
}

/// A worker: everything one packet lcore owns (cache-line aligned, like
/// DPDK l3fwd's per-lcore struct: nothing in it is shared).
#[repr(align(64))]
pub struct Worker {
    index: usize,
    workers: usize,
    ports: Vec<WorkerPort>,
    dispatch: Option<Dispatch>,
    inspection: Option<Inspection>,
    slow: SlowLinks,
    out: Output,
    clock: Clock,
    /// Time of the last packet seen (packet time in replay), ns.
    last_ns: u64,
    counters: WorkerCounters,
    shared: Arc<SharedCounters>,
    /// The latencies of the sessions logged since the last publication.
    latencies: Latencies,
    /// When (clock ns) they were last published.
    latencies_published: u64,
    running: Arc<AtomicBool>,
    idle: IdleMode,
    shares_cpu: bool,
}

/// What `keep` decided for a packet that `take` then receives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    /// Freed: a frame the inspector made goes in its place.
    Replaced,
    Dispatch(usize),
    Drop(DropReason),
    /// To this slow-path lcore.
    Escalate(u8),
}

/// Busy polls between two looks at the clock for housekeeping (idle workers
/// do it whenever they sleep, so a quiet data plane always shows exact totals).
const HOUSEKEEPING_CHECK_EVERY: u64 = 16;

/// Housekeeping while busy (events handed over, counters published, flows
/// expired) at most this often: a publication writes every counter (a few
/// hundred stores), which every 16 bursts cost more than forwarding a packet
/// on a pointer-only PMD.
const HOUSEKEEPING_NS: u64 = 100_000;

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
        Worker {
            index,
            workers,
            ports,
            dispatch,
            inspection: None,
            slow: SlowLinks::default(),
            out: Output::default(),
            clock: Clock::new(),
            last_ns: 0,
            counters,
            shared,
            latencies: Latencies::default(),
            latencies_published: 0,
            running,
            idle: IdleMode::default(),
            shares_cpu: false,
        }
    }

    /// How it waits when idle (`[workers] idle`), and whether another lcore
    /// may run on its CPU (then it yields instead of spinning).
    pub fn with_idle(mut self, idle: IdleMode, shares_cpu: bool) -> Worker {
        self.idle = idle;
        self.shares_cpu = shares_cpu;
        self
    }

    /// Adds the decryption-policy stage.
    pub fn with_inspection(mut self, inspection: Inspection) -> Worker {
        self.inspection = Some(inspection);
        self
    }

    /// Connects the worker to the slow-path lcores.
    pub fn with_slow_path(mut self, links: SlowLinks) -> Worker {
        self.slow = links;
        self
    }

    /// Sends `pkts` on this worker's tx queue of port index `port` (used before
    /// launch to seed loopback ports). Returns how many the queue took.
    pub fn inject(&mut self, port: usize, pkts: &mut Burst) -> usize {
        self.ports.get_mut(port).map_or(0, |p| p.tx.send(pkts))
    }

    /// The worker's ports (queues), giving up the worker.
    pub fn into_ports(self) -> Vec<WorkerPort> {
        self.ports
    }

    /// Runs until `running` turns false, then drains and publishes final counters.
    pub fn run(mut self) -> i32 {
        let mut rx = Burst::new();
        let mut idle = Backoff::new(self.idle, self.shares_cpu);
        self.clock = Clock::new();
        let housekeeping_ticks = (tsc_hz() / (1_000_000_000 / HOUSEKEEPING_NS)).max(1);
        let mut next_housekeeping = tsc();
        let plain = self.is_plain();
        while self.running.load(Ordering::Relaxed) {
            let work = if plain { self.bridge_once() } else { self.poll_once(&mut rx) };
            if work > 0 {
                self.counters.lcore.busy_polls += 1;
                if self.counters.lcore.busy_polls.is_multiple_of(HOUSEKEEPING_CHECK_EVERY) {
                    let now = tsc();
                    if now >= next_housekeeping {
                        self.housekeeping(false);
                        next_housekeeping = now + housekeeping_ticks;
                    }
                }
                idle.reset();
            } else {
                self.counters.lcore.idle_polls += 1;
                if idle.wait() {
                    self.housekeeping(false);
                }
            }
        }
        self.drain();
        self.housekeeping(true);
        0
    }

    /// Off the per-packet path: expire idle flows, hand events to the control
    /// thread, publish counters. At shutdown every undecided session is ended.
    fn housekeeping(&mut self, shutdown: bool) {
        if let Some(ins) = &mut self.inspection {
            if let Some((generation, policy)) = ins.policy_updates.newer_than(ins.policy_generation) {
                // The control thread built the same trust store before publishing,
                // so this cannot fail; if it did, the old policy stays in force.
                if ins.inspector.set_policy(policy).is_ok() {
                    ins.policy_generation = generation;
                }
            }
            // Idle flows expire on packet time; with no packets (live), on the clock.
            let now = if ins.replay_times.is_some() { self.last_ns } else { self.clock.now_ns() };
            if shutdown {
                let why = if ins.replay_times.is_some() { FlowEnd::EndOfCapture } else { FlowEnd::Shutdown };
                ins.inspector.finish(now, why, &mut self.out);
            } else {
                ins.inspector.expire(now, &mut self.out);
            }
            self.counters.inspect = ins.inspector.counters_now();
            for ev in self.out.events.drain(..) {
                self.latencies.record(&ev);
                if ins.events.push(Box::new(ev)).is_err() {
                    self.counters.lcore.events_lost += 1;
                }
            }
            // Resets are only made on the packet path and sent there.
            self.out.resets.clear();
        }
        self.shared.publish(&self.counters);
        let now = self.clock.now_ns();
        if shutdown || now.saturating_sub(self.latencies_published) >= LATENCY_PUBLISH_NS {
            self.shared.latencies.publish(&mut self.latencies);
            self.latencies_published = now;
        }
    }

    /// One pass over every rx queue and dispatch ring; returns packets handled.
    ///
    /// Packets are received straight into the egress port's staging burst, so
    /// a packet that only crosses the wire is never copied or moved: the
    /// per-packet work is reading its length (and, under software dispatch,
    /// its flow hash). Packets owned by another worker are taken out of the
    /// burst in place and staged for that worker's ring.
    #[inline]
    pub fn poll_once(&mut self, rx: &mut Burst) -> usize {
        let mut work = 0;
        // Updates before packets: a probe's flow is announced before its SYN
        // leaves, so it is known here before its SYN-ACK arrives.
        if !self.slow.updates.is_empty() {
            work += self.receive_updates();
        }
        let looks = self.dispatch.is_some() || self.inspection.is_some();
        for p in 0..self.ports.len() {
            work += if looks { self.receive::<true>(p, None) } else { self.receive::<false>(p, None) };
            // Any slow-path lcore's queues this worker polls too.
            for q in 0..self.ports[p].also_rx.len() {
                work += self.receive::<true>(p, Some(q));
            }
        }
        if self.dispatch.is_some() {
            work += self.receive_dispatched(rx);
        }
        if !self.slow.handed.is_empty() {
            work += self.receive_from_slow_path(rx);
        }
        self.flush();
        work
    }

    /// Whether this worker has nothing to look into and no one to hand
    /// packets to or take them from: no policy, no software dispatch, no
    /// slow path. It then only bridges its port pairs (see
    /// [`Worker::bridge_once`]).
    fn is_plain(&self) -> bool {
        let SlowLinks { flows, packets, updates, handed } = &self.slow;
        self.dispatch.is_none()
            && self.inspection.is_none()
            && flows.is_empty()
            && packets.is_empty()
            && updates.is_empty()
            && handed.is_empty()
            && self.ports.len() == self.counters.ports.len()
            && self.ports.iter().enumerate().all(|(i, p)| p.peer == i ^ 1 && p.also_rx.is_empty())
    }

    /// [`Worker::poll_once`] for a plain worker: each port's burst is
    /// counted and sent out of its peer, nothing else. The per-packet work is
    /// the reading of each packet's length; per burst it is the bare loop's
    /// and four counters. What a full tx queue refused is sent again with the
    /// next burst, or on its own when none comes.
    #[inline]
    pub fn bridge_once(&mut self) -> usize {
        let mut work = 0;
        let pairs = self.ports.as_chunks_mut::<2>().0.iter_mut().zip(self.counters.ports.as_chunks_mut::<2>().0);
        for ([a, b], [ca, cb]) in pairs {
            work += bridge(a, b, ca, cb) + bridge(b, a, cb, ca);
        }
        work
    }

    /// One rx burst from port index `p` (its own queue, or the `also` one it
    /// polls), counted, looked into when `LOOKS`, and sent out of its peer.
    /// What looking into packets takes is out of line, so that the
    /// forwarding path stays short.
    #[inline(always)]
    fn receive<const LOOKS: bool>(&mut self, p: usize, also: Option<usize>) -> usize {
        let out = self.ports[p].peer;
        let (ingress, egress) = two_mut(&mut self.ports, p, out);
        let (c, c_out) = two_mut(&mut self.counters.ports, p, out);
        let rx = match also {
            None => &mut ingress.rx,
            Some(q) => &mut ingress.also_rx[q],
        };
        let Some((start, n, mut bytes)) = take_burst(rx, egress, c, c_out) else { return 0 };
        if LOOKS {
            bytes -= self.look_into(p, out, start);
        }
        send_on(&mut self.ports[out], &mut self.counters.ports[out], n, bytes)
    }

    /// Runs the dispatch hash and the inspector over the packets just
    /// received from port index `p` into its peer's staging burst (from
    /// index `start` on): what stays goes out of the peer; the rest is
    /// dropped, replaced, or staged for another worker or a slow-path lcore.
    /// Returns the bytes taken out of the burst.
    #[inline(never)]
    fn look_into(&mut self, p: usize, peer: usize, start: usize) -> u64 {
        let egress = &mut self.ports[peer];
        // The hash and the inspector read each packet's headers: start
        // those loads for the whole burst before the first one is needed.
        for m in egress.pending.tail(start) {
            m.prefetch();
        }
        let (me, nworkers) = (self.index, self.workers);
        let mut removed_bytes = 0u64;
        let fate = Cell::new(Fate::Keep);
        let dispatch = &mut self.dispatch;
        let inspection = &mut self.inspection;
        let SlowLinks { flows: slow_flows, packets: slow_packets, .. } = &mut self.slow;
        let out = &mut self.out;
        let clock = &self.clock;
        let last_ns = &mut self.last_ns;
        let counters = &mut self.counters;
        let c_dispatched = Cell::new(0u64);
        let dispatching = dispatch.is_some();
        // One clock read per burst: the packets of a burst arrived together.
        let burst_now = clock.now_ns();
        egress.pending.retain_from(
            start,
            |m| {
                if dispatching {
                    let owner = flow_hash(m.data()).map_or(me, |h| worker_for(h, nworkers));
                    if owner != me {
                        fate.set(Fate::Dispatch(owner));
                        return false;
                    }
                }
                if let Some(ins) = inspection.as_mut() {
                    let f = inspect(ins, slow_flows, burst_now, last_ns, m, p, out);
                    fate.set(f);
                    return f == Fate::Keep;
                }
                fate.set(Fate::Keep);
                true
            },
            |mut m| {
                removed_bytes += m.pkt_len() as u64;
                match fate.get() {
                    Fate::Drop(r) => {
                        counters.ports[p].dropped[r as usize] += 1;
                        drop(m);
                    }
                    Fate::Replaced => drop(m),
                    Fate::Dispatch(owner) => {
                        m.set_port(p as u16);
                        if let Some((ring, staged)) = dispatch.as_mut().and_then(|d| d.to[owner].as_mut()) {
                            c_dispatched.set(c_dispatched.get() + 1);
                            if let Err(m) = staged.push(m) {
                                ring.send_burst(staged);
                                if let Err(m) = staged.push(m) {
                                    drop(m);
                                    c_dispatched.set(c_dispatched.get() - 1);
                                    counters.ports[p].dropped[DropReason::DispatchFull as usize] += 1;
                                }
                            }
                        }
                    }
                    Fate::Escalate(lcore) => {
                        m.set_port(p as u16);
                        if let Err(r) = stage_for_slow_path(slow_packets, lcore, m) {
                            counters.ports[p].dropped[r as usize] += 1;
                        } else {
                            counters.lcore.escalated_out += 1;
                        }
                    }
                    Fate::Keep => {}
                }
            },
        );
        self.counters.lcore.dispatched_out += c_dispatched.get();
        if !self.out.resets.is_empty() || !self.out.released.is_empty() {
            self.send_resets(p);
        }
        if !self.out.redirected.is_empty() {
            self.redirect(p);
        }
        removed_bytes
    }

    /// Queues `m` (received on port index `p`, handed over by another worker)
    /// for the other side of the wire.
    #[inline]
    fn forward(&mut self, p: usize, m: Mbuf, len: u32) {
        let out = self.ports[p].peer;
        let port = &mut self.ports[out];
        let m = match port.pending.push(m) {
            Ok(()) => {
                port.pending_bytes += len as u64;
                return;
            }
            Err(m) => m,
        };
        send_counted(port, &mut self.counters.ports[out]);
        match port.pending.push(m) {
            Ok(()) => port.pending_bytes += len as u64,
            Err(m) => {
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
            self.counters.lcore.dispatched_in += n as u64;
            self.handle_handed(rx);
        }
        work
    }

    /// Updates from the slow path.
    fn receive_updates(&mut self) -> usize {
        let mut work = 0;
        for i in 0..self.slow.updates.len() {
            while let Some(u) = self.slow.updates[i].pop() {
                work += 1;
                if let Some(ins) = self.inspection.as_mut() {
                    let now = self.clock.now_ns();
                    ins.inspector.on_slow_update(*u, now);
                }
            }
        }
        work
    }

    /// Packets the slow path's rx queues received for this worker.
    fn receive_from_slow_path(&mut self, rx: &mut Burst) -> usize {
        let mut work = 0;
        for i in 0..self.slow.handed.len() {
            let n = self.slow.handed[i].recv_burst(rx);
            if n == 0 {
                continue;
            }
            work += n;
            self.counters.lcore.escalated_in += n as u64;
            self.handle_handed(rx);
        }
        work
    }

    /// Inspects and sends on packets handed over by another lcore (their port
    /// index is in the mbuf).
    fn handle_handed(&mut self, rx: &mut Burst) {
        for m in rx.drain() {
            let p = (m.port() as usize).min(self.ports.len() - 1);
            if let Some(ins) = self.inspection.as_mut() {
                let now = self.clock.now_ns();
                let fate = inspect(ins, &mut self.slow.flows, now, &mut self.last_ns, &m, p, &mut self.out);
                if !self.out.resets.is_empty() || !self.out.released.is_empty() {
                    self.send_resets(p);
                }
                if !self.out.redirected.is_empty() {
                    self.redirect(p);
                }
                match fate {
                    Fate::Drop(r) => {
                        self.counters.ports[p].dropped[r as usize] += 1;
                        drop(m);
                        continue;
                    }
                    Fate::Replaced => continue,
                    Fate::Escalate(lcore) => {
                        match stage_for_slow_path(&mut self.slow.packets, lcore, m) {
                            Ok(()) => self.counters.lcore.escalated_out += 1,
                            Err(r) => self.counters.ports[p].dropped[r as usize] += 1,
                        }
                        continue;
                    }
                    Fate::Keep | Fate::Dispatch(_) => {}
                }
            }
            let len = m.pkt_len();
            self.forward(p, m, len);
        }
    }

    /// Hands the fragments of a datagram whose flow another worker owns to
    /// that worker (they came in by port index `p`): it reassembles and
    /// judges them itself. Counted as dispatched.
    #[cold]
    fn redirect(&mut self, p: usize) {
        let frames = std::mem::take(&mut self.out.redirected);
        let (Some(ins), Some(d)) = (&self.inspection, &mut self.dispatch) else { return };
        for (owner, frame) in frames {
            let Some(mut m) = Mbuf::from_bytes(&ins.pool, &frame) else { continue };
            m.set_port(p as u16);
            let Some((ring, staged)) = d.to.get_mut(owner).and_then(Option::as_mut) else { continue };
            if let Err(m) = staged.push(m) {
                ring.send_burst(staged);
                if staged.push(m).is_err() {
                    self.counters.ports[p].dropped[drop_index(DropReason::DispatchFull)] += 1;
                    continue;
                }
            }
            self.counters.lcore.dispatched_out += 1;
        }
    }

    /// Sends the resets the inspector made for a packet that came in by port
    /// index `p`: toward its sender out of `p`, toward its receiver out of the peer.
    fn send_resets(&mut self, p: usize) {
        let Some(ins) = &self.inspection else { return };
        let pool = ins.pool;
        let mut resets = std::mem::take(&mut self.out.resets);
        // Held-back frames go on toward their receiver, like a reset toward it.
        resets.extend(self.out.released.drain(..).map(|frame| Reset { toward_sender: false, frame }));
        for r in resets {
            let port = if r.toward_sender { p } else { self.ports[p].peer };
            let Some(m) = Mbuf::from_bytes(&pool, &r.frame) else { continue };
            let egress = &mut self.ports[port];
            if egress.pending.is_full() {
                send_counted(egress, &mut self.counters.ports[port]);
            }
            let len = m.pkt_len() as u64;
            if egress.pending.push(m).is_ok() {
                egress.pending_bytes += len;
            }
        }
    }

    /// Pushes out everything staged: dispatch bursts, then tx bursts. What a
    /// full tx queue refuses stays staged for the next pass (back-pressure).
    #[inline(always)]
    fn flush(&mut self) {
        if !self.slow.packets.is_empty() || self.dispatch.is_some() {
            self.flush_rings();
        }
        self.flush_ports();
    }

    /// What a full tx queue refused earlier, sent again.
    #[inline(always)]
    fn flush_ports(&mut self) {
        for (port, c) in self.ports.iter_mut().zip(self.counters.ports.iter_mut()) {
            if !port.pending.is_empty() {
                send_counted(port, c);
            }
        }
    }

    /// The staged bursts for slow-path lcores and other workers, onto their rings.
    #[inline(never)]
    fn flush_rings(&mut self) {
        let c = &mut self.counters;
        for (ring, staged) in &mut self.slow.packets {
            let refused = send_staged(ring, staged, &mut c.ports, DropReason::SlowPathFull);
            c.lcore.escalated_out -= refused;
        }
        if let Some(d) = &mut self.dispatch {
            for (ring, staged) in d.to.iter_mut().flatten() {
                let refused = send_staged(ring, staged, &mut c.ports, DropReason::DispatchFull);
                c.lcore.dispatched_out -= refused;
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
        if !self.slow.updates.is_empty() {
            self.receive_updates();
            self.receive_from_slow_path(&mut rx);
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
            port.pending_bytes = 0;
            // Charged to the egress port's counters.
            self.counters.ports[p].dropped[drop_index(DropReason::Shutdown)] += left;
        }
    }
}

/// Runs the inspector on one packet at its time (the capture's in a replay,
/// else the TSC clock) and says where the packet goes. A flow escalated by
/// this packet is handed to its slow-path lcore here, before the packet; if
/// that ring is full, `slowpath.when_full` decides.
#[inline]
fn inspect(
    ins: &mut Inspection,
    slow_flows: &mut [RingProducer<Box<ToSlowPath>>],
    clock_now: u64,
    last_ns: &mut u64,
    m: &Mbuf,
    p: usize,
    out: &mut Output,
) -> Fate {
    let now = match &ins.replay_times {
        Some(times) if p == 0 => {
            let t = times.get(ins.replay_seq).copied().unwrap_or(*last_ns);
            ins.replay_seq += 1;
            t
        }
        Some(_) => *last_ns,
        None => clock_now,
    };
    *last_ns = now;
    let verdict = if m.is_contiguous() {
        ins.inspector.on_packet(m.data(), p, now, out)
    } else {
        ins.inspector.on_packet(&m.to_vec(), p, now, out)
    };
    let verdict = if out.escalations.is_empty()
        && out.probes.is_empty()
        && out.to_slow_path.is_empty()
        && out.copies.is_empty()
        && out.passive.is_empty()
    {
        verdict
    } else {
        hand_over(ins, slow_flows, now, out, verdict)
    };
    match verdict {
        Verdict::Forward => Fate::Keep,
        Verdict::Drop(reason) => Fate::Drop(reason),
        Verdict::Replaced => Fate::Replaced,
        Verdict::Escalate(lcore) if (lcore as usize) < slow_flows.len() => Fate::Escalate(lcore),
        // The inspector escalates only to lcores it was told of.
        Verdict::Escalate(_) => Fate::Drop(DropReason::SlowPathFull),
    }
}

/// Pushes the flows this packet escalated to their slow-path lcores. Cold:
/// once per decrypted session.
#[cold]
fn hand_over(
    ins: &mut Inspection,
    slow_flows: &mut [RingProducer<Box<ToSlowPath>>],
    now: u64,
    out: &mut Output,
    mut verdict: Verdict,
) -> Verdict {
    for (lcore, esc) in std::mem::take(&mut out.escalations) {
        let refused = match slow_flows.get_mut(lcore as usize) {
            Some(ring) => ring.push(Box::new(ToSlowPath::Flow(esc))).err(),
            None => Some(Box::new(ToSlowPath::Flow(esc))),
        };
        if let Some(ToSlowPath::Flow(esc)) = refused.map(|b| *b) {
            verdict = ins.inspector.escalation_refused(esc, now, out);
        }
    }
    // Segments reassembled from fragments, behind their flow's hand-over.
    for (lcore, frame) in std::mem::take(&mut out.to_slow_path) {
        if let Some(ring) = slow_flows.get_mut(lcore as usize) {
            let _ = ring.push(Box::new(ToSlowPath::Frame(frame)));
        }
    }
    // Passive reading: copies of forwarded packets, then the flows a rule chose to read.
    for (lcore, frame) in out.copies.drain(..) {
        let sent =
            slow_flows.get_mut(lcore as usize).is_some_and(|r| r.push(Box::new(ToSlowPath::Copy(frame))).is_ok());
        if !sent {
            ins.inspector.passive_copy_lost();
        }
    }
    for (lcore, watch) in out.passive.drain(..) {
        let refused = match slow_flows.get_mut(lcore as usize) {
            Some(ring) => ring.push(Box::new(ToSlowPath::Passive(watch))).err(),
            None => Some(Box::new(ToSlowPath::Passive(watch))),
        };
        // Not handed over: the event is written now, without what reading would have said.
        if let Some(ToSlowPath::Passive(w)) = refused.map(|b| *b) {
            out.events.push(w.event);
        }
    }
    for probe in std::mem::take(&mut out.probes) {
        // Any lcore will do; a full ring only loses a lesson.
        let n = slow_flows.len().max(1);
        let lcore = (ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(&probe.server) as usize) % n;
        if let Some(ring) = slow_flows.get_mut(lcore) {
            let _ = ring.push(Box::new(ToSlowPath::Probe(probe)));
        }
    }
    verdict
}

/// Stages `m` for slow-path lcore `lcore`, sending the staged burst first if full.
#[inline]
fn stage_for_slow_path(links: &mut [(RingProducer<Mbuf>, Burst)], lcore: u8, m: Mbuf) -> Result<(), DropReason> {
    let Some((ring, staged)) = links.get_mut(lcore as usize) else { return Err(DropReason::SlowPathFull) };
    let m = match staged.push(m) {
        Ok(()) => return Ok(()),
        Err(m) => m,
    };
    ring.send_burst(staged);
    staged.push(m).map_err(|_| DropReason::SlowPathFull)
}

/// Sends a staged burst to another lcore's ring. Whatever the ring refuses is
/// dropped now, counted against the port it came in by: holding it would
/// reorder it behind later packets of the same flow. Returns how many.
#[inline]
fn send_staged(
    ring: &mut RingProducer<Mbuf>,
    staged: &mut Burst,
    ports: &mut [PortCounters],
    reason: DropReason,
) -> u64 {
    if staged.is_empty() {
        return 0;
    }
    ring.send_burst(staged);
    let refused = staged.len() as u64;
    for m in staged.as_slice() {
        let p = (m.port() as usize).min(ports.len() - 1);
        ports[p].dropped[drop_index(reason)] += 1;
    }
    staged.clear();
    refused
}

/// Two distinct elements of a slice, both mutable.
#[inline]
fn two_mut<T>(v: &mut [T], a: usize, b: usize) -> (&mut T, &mut T) {
    assert!(a != b, "a port is never its own peer");
    if a < b {
        let (l, r) = v.split_at_mut(b);
        (&mut l[a], &mut r[0])
    } else {
        let (l, r) = v.split_at_mut(a);
        (&mut r[0], &mut l[b])
    }
}

/// Receives a burst from `rx` into `egress`'s staging burst (first sending
/// what is staged there if it is full, counted on `out`) and counts it on the
/// ingress port's counters `c`. Returns where the new packets start in the
/// staging burst, how many came and their bytes; None if none came.
#[inline(always)]
fn take_burst(
    rx: &mut RxQueue,
    egress: &mut WorkerPort,
    c: &mut PortCounters,
    out: &mut PortCounters,
) -> Option<(usize, usize, u64)> {
    if egress.pending.is_full() {
        send_counted(egress, out);
    }
    let start = egress.pending.len();
    let n = rx.recv(&mut egress.pending);
    if n == 0 {
        return None;
    }
    let bytes = egress.pending.bytes_from(start);
    c.rx_packets += n as u64;
    c.rx_bytes += bytes;
    Some((start, n, bytes))
}

/// A plain worker's step: a burst from `from`'s rx queue out of `to`,
/// counted on `c_from` and `c_to`; returns the packets received.
#[inline(always)]
fn bridge(from: &mut WorkerPort, to: &mut WorkerPort, c_from: &mut PortCounters, c_to: &mut PortCounters) -> usize {
    match take_burst(&mut from.rx, to, c_from, c_to) {
        Some((_, n, bytes)) => send_on(to, c_to, n, bytes),
        None => {
            if !to.pending.is_empty() {
                send_counted(to, c_to);
            }
            0
        }
    }
}

/// Sends what `egress` has staged, `bytes` of it just added, at once, while
/// the mbufs are hot in this core's cache; returns `n` (the packets received).
#[inline(always)]
fn send_on(egress: &mut WorkerPort, c: &mut PortCounters, n: usize, bytes: u64) -> usize {
    egress.pending_bytes += bytes;
    send_counted(egress, c);
    n
}

/// Sends a port's pending burst and counts what left. Bytes staged are kept
/// as a running sum, so the common case (all sent) reads no mbuf again.
#[inline(always)]
fn send_counted(port: &mut WorkerPort, c: &mut PortCounters) -> usize {
    let n = port.tx.send(&mut port.pending);
    c.tx_packets += n as u64;
    let unsent = if port.pending.is_empty() { 0 } else { port.pending.bytes_from(0) };
    c.tx_bytes += port.pending_bytes - unsent;
    port.pending_bytes = unsent;
    n
}

#[inline]
fn drop_index(r: DropReason) -> usize {
    r as usize
}

/// What an lcore does after a poll that found nothing (`[workers] idle`).
/// Back-off: spin for 50 us of silence (a flow's next packet usually comes
/// sooner), then, up to 100 ms of silence, poll again after yielding the CPU
/// (another thread that wants it gets it, and the lcore is back within
/// microseconds when none does), then sleep 100 us at a time (with the
/// thread's timer slack at 1 us, so a sleep is about what it asks for, not
/// the default 50 us more), after a second of silence 500 us. The first busy
/// poll starts over. A sleeping lcore's first packet pays its wake-up, and on
/// a virtual machine whose CPU halted meanwhile far more than the timer's
/// 100 us (a host's scheduling): yielding up to 2 ms, then sleeping, cost a
/// client whose sessions came 10 ms apart 0.2 ms at p50 and 4 ms at p99 of a
/// decrypted session's first byte; a trickle of traffic keeps the lcore's
/// CPU busy instead, and a silent one lets it sleep. Poll: never sleep.
/// An lcore that shares its CPU with another lcore yields right after its
/// first 64 empty polls (a few microseconds), polling mode too: while it
/// spun, the other, perhaps with a packet to pass on to it, could not run. Either way the caller is told every so often
/// that it may do its housekeeping.
pub struct Backoff {
    mode: IdleMode,
    shares_cpu: bool,
    empty: u32,
    idle_since: u64,
    ticks_per_us: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(IdleMode::Backoff, false)
    }
}

impl Backoff {
    /// Empty polls before the clock is read (a burst's gaps are shorter).
    const FIRST_SPINS: u32 = 64;
    const SPIN_US: u64 = 50;
    /// Silence after which yielding turns into sleeping.
    const YIELD_US: u64 = 100_000;
    /// Yields between two housekeeping calls.
    const YIELD_HOUSEKEEPING: u32 = 64;
    /// Empty polls between two housekeeping calls in poll mode.
    const POLL_HOUSEKEEPING: u32 = 1024;

    /// A back-off of this mode, for the calling lcore (sets its timer slack).
    pub fn new(mode: IdleMode, shares_cpu: bool) -> Backoff {
        precise_sleeps();
        Backoff { mode, shares_cpu, empty: 0, idle_since: 0, ticks_per_us: (tsc_hz() / 1_000_000).max(1) }
    }

    /// Traffic arrived: back to spinning.
    #[inline]
    pub fn reset(&mut self) {
        self.empty = 0;
    }

    /// Waits after an empty poll. Returns true when it slept (or, polling,
    /// every 1024 empty polls): time for housekeeping.
    #[inline]
    pub fn wait(&mut self) -> bool {
        self.empty = self.empty.saturating_add(1);
        if self.mode == IdleMode::Poll {
            if self.shares_cpu {
                std::thread::yield_now();
                return self.empty.is_multiple_of(Self::YIELD_HOUSEKEEPING);
            }
            pause();
            return self.empty.is_multiple_of(Self::POLL_HOUSEKEEPING);
        }
        if self.empty < Self::FIRST_SPINS {
            pause();
            return false;
        }
        let now = tsc();
        if self.empty == Self::FIRST_SPINS {
            self.idle_since = now;
        }
        let idle_us = now.wrapping_sub(self.idle_since) / self.ticks_per_us;
        if idle_us < Self::SPIN_US && !self.shares_cpu {
            pause();
            return false;
        }
        if idle_us < Self::YIELD_US {
            std::thread::yield_now();
            return self.empty.is_multiple_of(Self::YIELD_HOUSEKEEPING);
        }
        let us = if idle_us < 1_000_000 { 100 } else { 500 };
        std::thread::sleep(Duration::from_micros(us));
        true
    }
}
