//! The slow-path lcore's loop: moves packets between the rings, its own
//! queues and the sans-IO [`SlowLcore`] of `tlsgate-slowpath`, keeps its
//! clock, and publishes its counters. Packets the driver spreads to this
//! lcore's rx queues are handed to the workers that own their flows.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tlsgate_core::escalate::{SlowRecord, SlowUpdate, ToSlowPath};
use tlsgate_core::flow::FlowKey;
use tlsgate_core::packet::{flow_hash, worker_for};
use tlsgate_slowpath::lcore::{FrameOf, Interceptor, Link, SlowLcore, SlowPathCounters};

use crate::dpdk::{tsc, Burst, Clock, Mbuf, Mempool, RingConsumer, RingProducer, RxQueue, TxQueue};
use crate::metrics::{Latencies, LATENCY_PUBLISH_NS};
use crate::runtime::{SlowPath, SlowPathIo};
use crate::stats::SharedSlowPathCounters;
use crate::worker::Backoff;

/// How long the lcore keeps sending FINs and retransmissions at shutdown.
const SHUTDOWN: Duration = Duration::from_millis(200);

impl SlowPath for Interceptor {
    fn run(&self, io: SlowPathIo) -> i32 {
        SlowLoop::new(self, io).run()
    }
}

/// A slow-path lcore: its work, and its I/O.
struct SlowLoop {
    lcore: SlowLcore,
    io: Io,
    /// Flows escalated by each worker.
    flows: Vec<RingConsumer<Box<ToSlowPath>>>,
    /// Their packets, from each worker.
    packets: Vec<RingConsumer<Mbuf>>,
    /// Packets for each worker (received on this lcore's rx queues), and
    /// what is staged for each.
    handed: Vec<(RingProducer<Mbuf>, Burst)>,
    clock: Clock,
    published: Arc<SharedSlowPathCounters>,
    /// When (clock ns) the latencies were last published.
    latencies_published: u64,
    running: Arc<AtomicBool>,
    idle: tlsgate_config::IdleMode,
    shares_cpu: bool,
    /// The flows a poll's frames touched, driven once each after the burst.
    touched: Vec<FlowKey>,
}

/// What the sans-IO lcore sends through: tx queues, update rings, the record ring.
struct Io {
    ports: Vec<TxQueue>,
    /// The rx queues this lcore polls itself, with their ports' indices.
    rx: Vec<(usize, RxQueue)>,
    tx: Vec<Burst>,
    updates: Vec<RingProducer<Box<SlowUpdate>>>,
    records: RingProducer<Box<SlowRecord>>,
    pool: Mempool,
    /// What the I/O counts (packets out, tx drops, lost records, handed packets).
    counters: SlowPathCounters,
    /// The latencies of the sessions logged since the last publication.
    latencies: Latencies,
    /// The mirror port's queue pair, what is staged for it, and the destination MAC.
    mirror: Option<Mirror>,
}

struct Mirror {
    rx: RxQueue,
    tx: TxQueue,
    staged: Burst,
    mac: Option<[u8; 6]>,
}

impl Link for Io {
    fn send_frame(&mut self, port: usize, frame: &[u8]) {
        self.send_frame_parts(port, &[frame]);
    }

    fn send_frame_parts(&mut self, port: usize, parts: &[&[u8]]) {
        let Some(m) = Mbuf::from_parts(&self.pool, parts) else {
            self.counters.tx_dropped += 1;
            return;
        };
        if port >= self.tx.len() {
            self.counters.tx_dropped += 1;
            return;
        }
        if self.tx[port].is_full() {
            self.send_port(port);
        }
        if let Err(m) = self.tx[port].push(m) {
            drop(m);
            self.counters.tx_dropped += 1;
        }
    }

    fn update(&mut self, worker: usize, update: SlowUpdate) {
        if let Some(ring) = self.updates.get_mut(worker) {
            // A full update ring loses a lesson, not a packet; the flow expires in the worker.
            let _ = ring.push(Box::new(update));
        }
    }

    fn mirror_frame(&mut self, frame: &[u8]) {
        let Some(m) = &mut self.mirror else { return };
        let Some(mut mbuf) = Mbuf::from_bytes(&self.pool, frame) else {
            self.counters.mirror_dropped += 1;
            return;
        };
        if let Some(mac) = m.mac {
            if let Some(dst) = mbuf.data_mut().get_mut(..6) {
                dst.copy_from_slice(&mac);
            }
        }
        if m.staged.is_full() {
            self.send_mirror();
        }
        let Some(m) = &mut self.mirror else { return };
        if m.staged.push(mbuf).is_err() {
            self.counters.mirror_dropped += 1;
        }
    }

    fn record(&mut self, record: SlowRecord) {
        if let SlowRecord::Event(ev) = &record {
            self.latencies.record(ev);
        }
        if self.records.push(Box::new(record)).is_err() {
            self.counters.records_lost += 1;
        }
    }
}

impl Io {
    /// Sends what is staged for the mirror; what its queue has no room for is
    /// dropped (a decrypted session never waits for the mirror). Frames
    /// arriving on the mirror port are dropped.
    fn send_mirror(&mut self) {
        let Some(m) = &mut self.mirror else { return };
        if !m.staged.is_empty() {
            let staged = m.staged.len() as u64;
            let n = m.tx.send(&mut m.staged) as u64;
            self.counters.mirrored += n;
            self.counters.mirror_dropped += staged - n;
            m.staged.clear();
        }
        let mut rx = Burst::new();
        m.rx.recv(&mut rx);
        rx.clear();
    }

    fn send_port(&mut self, p: usize) {
        if self.tx[p].is_empty() {
            return;
        }
        let n = self.ports[p].send(&mut self.tx[p]);
        self.counters.packets_out += n as u64;
        if self.tx[p].is_full() {
            // The queue is full; dropping is what a wire does, and TCP retransmits.
            self.counters.tx_dropped += self.tx[p].len() as u64;
            self.tx[p].clear();
        }
    }
}

impl SlowLoop {
    fn new(cfg: &Interceptor, io: SlowPathIo) -> SlowLoop {
        let workers = io.handed.len();
        let lcore = SlowLcore::new(cfg.clone(), io.index, workers, tsc());
        let SlowPathIo {
            ports,
            rx,
            flows,
            packets,
            updates,
            handed,
            records,
            pool,
            counters,
            running,
            idle,
            shares_cpu,
            mirror,
            ..
        } = io;
        let mirror = mirror.map(|(rx, tx, mac)| Mirror { rx, tx, staged: Burst::new(), mac });
        let tx = (0..ports.len()).map(|_| Burst::new()).collect();
        let handed = handed.into_iter().map(|r| (r, Burst::new())).collect();
        let io = Io {
            ports,
            rx,
            tx,
            updates,
            records,
            pool,
            counters: SlowPathCounters::default(),
            latencies: Latencies::default(),
            mirror,
        };
        let (published, running) = (counters, running);
        SlowLoop {
            lcore,
            io,
            flows,
            packets,
            handed,
            clock: Clock::new(),
            published,
            latencies_published: 0,
            running,
            idle,
            shares_cpu,
            touched: Vec::new(),
        }
    }
}

impl SlowLoop {
    fn run(mut self) -> i32 {
        let mut rx = Burst::new();
        let mut idle = Backoff::new(self.idle, self.shares_cpu);
        while self.running.load(Ordering::Relaxed) {
            let work = self.poll_once(&mut rx);
            if work > 0 {
                idle.reset();
            } else {
                idle.wait();
            }
        }
        self.shutdown(&mut rx);
        0
    }

    fn poll_once(&mut self, rx: &mut Burst) -> usize {
        let now = self.clock.now_ns();
        let mut work = 0;
        for ring in &mut self.flows {
            while let Some(msg) = ring.pop() {
                work += 1;
                self.lcore.take(*msg, now, &mut self.io);
            }
        }
        // The flows this poll's frames touched (a kept buffer: no allocation per poll).
        let mut touched = std::mem::take(&mut self.touched);
        let mut more = false;
        for w in 0..self.packets.len() {
            work += self.packets[w].recv_burst(rx);
            // A full burst: the ring may hold more.
            more |= rx.is_full();
            // The mbufs come from a worker's core: start every header's and
            // packet's load before the first is needed.
            for m in rx.as_slice() {
                m.prefetch();
            }
            for m in rx.drain() {
                self.io.counters.packets_in += 1;
                let data = if m.is_contiguous() { std::borrow::Cow::Borrowed(m.data()) } else { m.to_vec().into() };
                let flows = &mut self.flows[w];
                let mut pending = || flows.pop().map(|b| *b);
                if let FrameOf::Flow(k) = self.lcore.on_frame(&data, now, &mut self.io, &mut pending) {
                    if !touched.contains(&k) {
                        touched.push(k);
                    }
                }
            }
        }
        work += self.hand_rx_to_workers(rx);
        for k in touched.drain(..) {
            self.lcore.drive(&k, now, &mut self.io);
        }
        self.touched = touched;
        if self.lcore.tick(now, &mut self.io) {
            self.publish();
        }
        // While a worker's ring still holds packets, what this poll made
        // waits for the next (a port's burst goes out by itself when full):
        // fewer, fuller sends, and the receiving host woken once per burst
        // rather than once per handful of frames. Idle, all goes out now.
        if more {
            self.flush_others();
        } else {
            self.flush();
        }
        work
    }

    /// Packets this lcore's rx queues got: to the workers that own their flows.
    fn hand_rx_to_workers(&mut self, rx: &mut Burst) -> usize {
        let workers = self.handed.len();
        if workers == 0 {
            return 0;
        }
        let mut n = 0;
        for (p, q) in &mut self.io.rx {
            let p = *p;
            n += q.recv(rx);
            for mut m in rx.drain() {
                let owner = flow_hash(m.data()).map_or(0, |h| worker_for(h, workers));
                m.set_port(p as u16);
                let (ring, staged) = &mut self.handed[owner];
                if let Err(m) = staged.push(m) {
                    ring.send_burst(staged);
                    if let Err(m) = staged.push(m) {
                        drop(m);
                        self.io.counters.tx_dropped += 1;
                        continue;
                    }
                }
                self.io.counters.packets_handed_to_workers += 1;
            }
        }
        n
    }

    fn flush(&mut self) {
        for p in 0..self.io.tx.len() {
            self.io.send_port(p);
        }
        self.flush_others();
    }

    /// Everything but the ports' bursts: the mirror's and the workers' rings.
    fn flush_others(&mut self) {
        self.io.send_mirror();
        for (ring, staged) in &mut self.handed {
            if !staged.is_empty() {
                ring.send_burst(staged);
                self.io.counters.tx_dropped += staged.len() as u64;
                staged.clear();
            }
        }
    }

    fn publish(&mut self) {
        let mut c = self.lcore.counters;
        c.add(&self.io.counters);
        self.published.publish(&c);
        let now = self.clock.now_ns();
        if !self.running.load(Ordering::Relaxed) || now.saturating_sub(self.latencies_published) >= LATENCY_PUBLISH_NS {
            self.published.latencies.publish(&mut self.io.latencies);
            self.latencies_published = now;
        }
    }

    /// Ends every session (close_notify and FIN both ways), keeps sending for
    /// a moment so that they go out, and gives each its event.
    fn shutdown(&mut self, rx: &mut Burst) {
        let start = std::time::Instant::now();
        self.lcore.close_all();
        loop {
            let now = self.clock.now_ns();
            self.lcore.drive_all(now, &mut self.io);
            self.hand_rx_to_workers(rx);
            self.flush();
            if start.elapsed() > SHUTDOWN {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let now = self.clock.now_ns();
        self.lcore.finish_all(now, &mut self.io);
        self.flush();
        self.publish();
    }
}
