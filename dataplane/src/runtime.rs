//! Wiring: from validated settings to running workers. Finds and configures
//! the ports (symmetric RSS where every port has it, else software dispatch
//! rings between workers), builds one [`Worker`] per worker lcore, launches
//! them, and gives the control thread counters and a clean stop.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tlsgate_config::policy::Policy;
use tlsgate_config::Settings;

use crate::worker::{Inspection, PolicyUpdates, SlowLinks};
use tlsgate_core::escalate::{SlowRecord, SlowUpdate, ToSlowPath};
use tlsgate_core::event::SessionEvent;
use tlsgate_core::inspect::Inspector;

use crate::dpdk::{
    ring_pair, Burst, Eal, LaunchError, LcoreHandle, Mbuf, Mempool, MempoolError, Port, PortError, PortSetup,
    PortStats, RingConsumer, RingError, RingProducer, RxQueue, TxQueue,
};
use crate::metrics::Latencies;
use crate::stats::{SharedCounters, SharedSlowPathCounters, SlowPathCounters, WorkerCounters};
use crate::worker::{Dispatch, Worker, WorkerPort};

/// How flows reach the worker that owns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowSteering {
    /// One worker: nothing to steer.
    SingleWorker,
    /// Every port spreads flows by symmetric RSS (key 0x6d5a...).
    SymmetricRss,
    /// The receiving worker hashes each packet and hands it to its owner.
    SoftwareDispatch,
}

impl FlowSteering {
    /// How it is named in reports.
    pub fn name(self) -> &'static str {
        match self {
            FlowSteering::SingleWorker => "single worker",
            FlowSteering::SymmetricRss => "symmetric RSS",
            FlowSteering::SoftwareDispatch => "software dispatch",
        }
    }
}

/// Why the data plane did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A port problem.
    #[error(transparent)]
    Port(#[from] PortError),
    /// Pool creation failed.
    #[error(transparent)]
    Mempool(#[from] MempoolError),
    /// Ring creation failed.
    #[error(transparent)]
    Ring(#[from] RingError),
    /// Launch failed.
    #[error(transparent)]
    Launch(#[from] LaunchError),
    /// The policy could not be put to work (trust store, say).
    #[error("policy: {0}")]
    Policy(String),
    /// A worker lcore that the EAL did not enable, or the main lcore.
    #[error("workers.lcores: lcore {lcore} {why}")]
    Lcore {
        /// The lcore.
        lcore: u32,
        /// What is wrong with it.
        why: String,
    },
}

/// Options that are not in the settings file.
#[derive(Clone, Default)]
pub struct StartOptions {
    /// A replay's packet times, in file order (see [`Inspection::replay_times`]).
    pub replay_times: Option<Arc<[u64]>>,
    /// The decryption policy; without one, the workers only bridge.
    pub policy: Option<Arc<Policy>>,
    /// What the slow-path lcores run (`[slowpath] lcores`); without it, or
    /// without a policy, no slow path starts and decrypt decisions are carried
    /// out as do-not-decrypt.
    pub slow_path: Option<Arc<dyn SlowPath>>,
}

/// What a slow-path lcore is given: its own queues on every port, the rings
/// to and from every worker, a ring to the control thread.
pub struct SlowPathIo {
    /// Which slow-path lcore this is (0..).
    pub index: usize,
    /// Its tx queue on every port, in the appliance's port list.
    pub ports: Vec<TxQueue>,
    /// Its rx queues that it polls itself, with their ports' indices: under
    /// symmetric RSS only (the redirection table gives them nothing; what a
    /// driver puts there anyway it hands to the flows' workers). Otherwise a
    /// worker polls them: a driver without a table (af_packet fans flows out
    /// over every queue) puts workers' flows there, and taking them straight
    /// saves each packet a hop through this lcore.
    pub rx: Vec<(usize, RxQueue)>,
    /// The ports' names, in the same order.
    pub port_names: Arc<[String]>,
    /// Flows escalated by each worker.
    pub flows: Vec<RingConsumer<Box<ToSlowPath>>>,
    /// Their packets, from each worker.
    pub packets: Vec<RingConsumer<Mbuf>>,
    /// Updates to each worker.
    pub updates: Vec<RingProducer<Box<SlowUpdate>>>,
    /// Packets for each worker (received on this lcore's rx queues).
    pub handed: Vec<RingProducer<Mbuf>>,
    /// Events, key log lines and decrypted frames for the control thread.
    pub records: RingProducer<Box<SlowRecord>>,
    /// For the frames it makes.
    pub pool: Mempool,
    /// Where it publishes its counters.
    pub counters: Arc<SharedSlowPathCounters>,
    /// Turns false at shutdown.
    pub running: Arc<AtomicBool>,
    /// How it waits when idle (`[workers] idle`).
    pub idle: tlsgate_config::IdleMode,
    /// Whether another lcore may run on its CPU (then it yields, never spins).
    pub shares_cpu: bool,
    /// Its queue pair on the mirror port (`[mirror]`), and the destination MAC.
    pub mirror: Option<(RxQueue, TxQueue, Option<[u8; 6]>)>,
}

/// The code a slow-path lcore runs ([`crate::slow_lcore`] runs the
/// `tlsgate-slowpath` interceptor; tests may run another). Returns the
/// lcore's exit code.
pub trait SlowPath: Send + Sync {
    /// Runs one slow-path lcore until `io.running` turns false.
    fn run(&self, io: SlowPathIo) -> i32;
}

/// Slots in each worker's event ring to the control thread.
const EVENT_RING: u32 = 8192;

/// The mbuf pool's handler when the settings name none, and the one taken
/// where this DPDK lacks it (the lock-free stack needs a 128-bit CAS).
const DEFAULT_POOL_HANDLER: &str = "lf_stack";
const FALLBACK_POOL_HANDLER: &str = "ring_mp_mc";

/// The running data plane.
pub struct Dataplane {
    ports: Vec<Port>,
    shared: Vec<Arc<SharedCounters>>,
    running: Arc<AtomicBool>,
    handles: Vec<LcoreHandle>,
    steering: FlowSteering,
    sharing: Vec<u32>,
    pool: Mempool,
    pool_handler: String,
    events: Vec<RingConsumer<Box<SessionEvent>>>,
    policy_updates: Arc<PolicyUpdates>,
    slow: SlowRuntime,
}

/// The slow-path lcores of a data plane, before and after launch.
#[derive(Default)]
struct SlowRuntime {
    lcores: Vec<u32>,
    /// The mirror port (`[mirror]`), kept open while the lcores send on it.
    mirror: Option<Port>,
    io: Vec<SlowPathIo>,
    code: Option<Arc<dyn SlowPath>>,
    handles: Vec<LcoreHandle>,
    counters: Vec<Arc<SharedSlowPathCounters>>,
    records: Vec<RingConsumer<Box<SlowRecord>>>,
}

impl Dataplane {
    /// Sets up ports and workers from `settings` and launches the workers.
    pub fn start(eal: &Eal, settings: &Settings, opts: StartOptions) -> Result<Dataplane, StartError> {
        Dataplane::prepare(eal, settings, opts)?.launch()
    }

    /// Sets up and starts the ports and builds the workers, without launching
    /// them: the perf harness and tests inject packets or run another loop on
    /// the same queues before anything polls.
    pub fn prepare(eal: &Eal, settings: &Settings, opts: StartOptions) -> Result<Prepared, StartError> {
        let lcores = settings.workers.lcores.get_ref().clone();
        for &l in &lcores {
            if l == eal.main_lcore() {
                return Err(StartError::Lcore { lcore: l, why: "is the main (control) lcore; pick another".into() });
            }
            if !eal.lcore_enabled(l) {
                return Err(StartError::Lcore {
                    lcore: l,
                    why: "is not enabled by the EAL arguments (-l / --lcores); add it there or drop your -l and let tlsgate make one".into(),
                });
            }
        }
        let nworkers = lcores.len();
        let slow_lcores: Vec<u32> = match (&opts.slow_path, &opts.policy) {
            (Some(_), Some(_)) => settings.slowpath.lcores.get_ref().clone(),
            _ => Vec::new(),
        };
        for &l in &slow_lcores {
            if l == eal.main_lcore() {
                return Err(StartError::Lcore {
                    lcore: l,
                    why: "(slowpath.lcores) is the main (control) lcore".into(),
                });
            }
            if !eal.lcore_enabled(l) {
                return Err(StartError::Lcore {
                    lcore: l,
                    why: "(slowpath.lcores) is not enabled by the EAL arguments (-l / --lcores)".into(),
                });
            }
        }
        let nslow = slow_lcores.len();
        let sharing = shared_cpus(eal, &lcores, &slow_lcores);
        let mut ports = Vec::new();
        for name in settings.port_names() {
            ports.push(Port::by_name(&name)?);
        }
        let m = &settings.mempool;
        let pool_on = |handler: &str| Mempool::with_handler("tlsgate_pkts", m.mbufs, m.cache, m.data_room, handler);
        let (pool, pool_handler) = match &m.handler {
            Some(h) => (pool_on(h)?, h.clone()),
            // Unset: a lock-free stack, so that mbufs an lcore frees and
            // another takes (a worker's, freed by the slow path) come back
            // while still in cache; a ring hands out the one freed longest ago.
            None => match pool_on(DEFAULT_POOL_HANDLER) {
                Ok(p) => (p, DEFAULT_POOL_HANDLER.to_owned()),
                Err(_) => (pool_on(FALLBACK_POOL_HANDLER)?, FALLBACK_POOL_HANDLER.to_owned()),
            },
        };
        // With a slow path, RSS must leave the slow lcores' queues out (their
        // flows come through the rings): only a device whose redirection table
        // can be programmed will do; others are steered in software.
        let rss = nworkers > 1
            && if nslow == 0 {
                ports.iter().all(Port::offers_rss)
            } else {
                ports.iter().all(Port::offers_rss_with_reta)
            };
        let mut setup = PortSetup {
            queues: (nworkers + nslow) as u16,
            rx_descriptors: settings.queues.rx_descriptors,
            tx_descriptors: settings.queues.tx_descriptors,
            rss,
            rss_queues: nworkers as u16,
        };
        for p in &mut ports {
            p.configure(setup, &pool)?;
        }
        // A port whose driver refused the table fell back to no RSS: then all do.
        if rss && !ports.iter().all(Port::rss_active) {
            setup.rss = false;
            for p in &mut ports {
                p.configure(setup, &pool)?;
            }
        }
        // The mirror: a queue pair per slow-path lcore, no RSS (nothing is received there).
        let mut mirror = match (&settings.mirror.port, nslow) {
            (Some(name), 1..) => {
                let mut m = Port::by_name(name.get_ref())?;
                m.configure(PortSetup { queues: nslow as u16, rss: false, rss_queues: 1, ..setup }, &pool)?;
                Some(m)
            }
            _ => None,
        };
        let steering = match (nworkers, setup.rss) {
            (1, _) => FlowSteering::SingleWorker,
            (_, true) => FlowSteering::SymmetricRss,
            (_, false) => FlowSteering::SoftwareDispatch,
        };

        // Software dispatch: rings[from][to], one SPSC ring per ordered pair.
        let mut producers: Vec<Vec<Option<_>>> = (0..nworkers).map(|_| (0..nworkers).map(|_| None).collect()).collect();
        let mut consumers: Vec<Vec<RingConsumer<Mbuf>>> = (0..nworkers).map(|_| Vec::new()).collect();
        if steering == FlowSteering::SoftwareDispatch {
            for (from, row) in producers.iter_mut().enumerate() {
                for (to, slot) in row.iter_mut().enumerate() {
                    if from != to {
                        let (p, c) =
                            ring_pair::<Mbuf>(&format!("tg_disp_{from}_{to}"), settings.workers.dispatch_ring)?;
                        *slot = Some((p, Burst::new()));
                        consumers[to].push(c);
                    }
                }
            }
        }

        let running = Arc::new(AtomicBool::new(true));
        let mut workers = Vec::new();
        let mut shared = Vec::new();
        let mut events = Vec::new();
        let port_names: Arc<[String]> = ports.iter().map(|p| p.name().to_owned()).collect();
        let policy_updates = Arc::new(PolicyUpdates::default());

        // Slow path: per (worker, slow lcore) four SPSC rings.
        let mut slow = SlowRuntime { lcores: slow_lcores, code: opts.slow_path.clone(), ..Default::default() };
        let mut links: Vec<SlowLinks> = (0..nworkers).map(|_| SlowLinks::default()).collect();
        // The slow lcores' rx queues a worker polls, per worker and port.
        let mut slow_rx: Vec<Vec<Vec<RxQueue>>> =
            (0..nworkers).map(|_| ports.iter().map(|_| Vec::new()).collect()).collect();
        for k in 0..nslow {
            let ring = settings.slowpath.ring;
            let mut io_flows = Vec::new();
            let mut io_packets = Vec::new();
            let mut io_updates = Vec::new();
            let mut io_handed = Vec::new();
            for (w, l) in links.iter_mut().enumerate() {
                let (p, c) = ring_pair::<Box<ToSlowPath>>(&format!("tg_esc_{w}_{k}"), ring.min(1024))?;
                l.flows.push(p);
                io_flows.push(c);
                let (p, c) = ring_pair::<Mbuf>(&format!("tg_slin_{w}_{k}"), ring)?;
                l.packets.push((p, Burst::new()));
                io_packets.push(c);
                let (p, c) = ring_pair::<Box<SlowUpdate>>(&format!("tg_upd_{k}_{w}"), ring.min(1024))?;
                io_updates.push(p);
                l.updates.push(c);
                let (p, c) = ring_pair::<Mbuf>(&format!("tg_slout_{k}_{w}"), ring)?;
                io_handed.push(p);
                l.handed.push(c);
            }
            let (records, rx) = ring_pair::<Box<SlowRecord>>(&format!("tg_rec_{k}"), EVENT_RING)?;
            slow.records.push(rx);
            let counters = Arc::new(SharedSlowPathCounters::default());
            slow.counters.push(counters.clone());
            let (mut tx, mut rx) = (Vec::new(), Vec::new());
            for (pi, port) in ports.iter_mut().enumerate() {
                let (r, t) = port.queue_pair((nworkers + k) as u16).expect("queue < queues, configured above");
                tx.push(t);
                if steering == FlowSteering::SymmetricRss {
                    rx.push((pi, r));
                } else {
                    slow_rx[k % nworkers][pi].push(r);
                }
            }
            let mirror_q = mirror.as_mut().map(|m| {
                let (rx, tx) = m.queue_pair(k as u16).expect("queue < queues, configured above");
                (rx, tx, settings.mirror.mac())
            });
            slow.io.push(SlowPathIo {
                index: k,
                ports: tx,
                rx,
                port_names: port_names.clone(),
                flows: io_flows,
                packets: io_packets,
                updates: io_updates,
                handed: io_handed,
                records,
                pool,
                counters,
                running: running.clone(),
                idle: settings.workers.idle,
                shares_cpu: sharing[nworkers + k],
                mirror: mirror_q,
            });
        }
        let mut links = links.into_iter();

        for (i, ((to, from), slow_rx)) in producers.into_iter().zip(consumers).zip(slow_rx).enumerate() {
            let mut wports = Vec::new();
            for ((pi, port), also) in ports.iter_mut().enumerate().zip(slow_rx) {
                let (rx, tx) = port.queue_pair(i as u16).expect("queue i < queues, configured above");
                wports.push(WorkerPort::new(rx, tx, pi ^ 1).also_polling(also));
            }
            let dispatch = (steering == FlowSteering::SoftwareDispatch).then_some(Dispatch { to, from });
            let counters = Arc::new(SharedCounters::new(ports.len()));
            shared.push(counters.clone());
            let mut worker = Worker::new(i, nworkers, wports, dispatch, counters, running.clone())
                .with_idle(settings.workers.idle, sharing[i]);
            if let Some(policy) = &opts.policy {
                let inspector = Inspector::new(i, policy.clone(), &settings.flows, port_names.clone())
                    .map_err(StartError::Policy)?
                    .with_slow_path(nslow, &settings.slowpath)
                    .with_handshake_events(settings.events.handshake)
                    .with_reading_past_blocks(opts.replay_times.is_some())
                    .with_dns(settings.dns)
                    .with_dispatch(if steering == FlowSteering::SoftwareDispatch { nworkers } else { 1 });
                let (tx, rx) = ring_pair::<Box<SessionEvent>>(&format!("tg_events_{i}"), EVENT_RING)?;
                events.push(rx);
                worker = worker.with_inspection(Inspection {
                    inspector,
                    events: tx,
                    pool,
                    replay_times: opts.replay_times.clone(),
                    replay_seq: 0,
                    policy_updates: policy_updates.clone(),
                    policy_generation: 0,
                });
            }
            if nslow > 0 {
                worker = worker.with_slow_path(links.next().unwrap_or_default());
            }
            workers.push(worker);
        }

        for p in &ports {
            p.start()?;
            p.set_promiscuous();
        }
        if let Some(m) = &mirror {
            m.start()?;
        }
        slow.mirror = mirror;
        let sharing = lcores.iter().chain(&slow.lcores).zip(&sharing).filter(|(_, &s)| s).map(|(&l, _)| l).collect();
        Ok(Prepared {
            ports,
            shared,
            running,
            workers,
            lcores,
            steering,
            sharing,
            pool,
            pool_handler,
            events,
            policy_updates,
            slow,
        })
    }

    /// The slow-path lcores in use.
    pub fn slow_lcores(&self) -> &[u32] {
        &self.slow.lcores
    }

    /// Each slow-path lcore's counters, now.
    pub fn slow_counters(&self) -> Vec<SlowPathCounters> {
        self.slow.counters.iter().map(|c| c.snapshot()).collect()
    }

    /// Takes what the slow-path lcores have sent so far (events, key log
    /// lines, decrypted frames).
    pub fn drain_slow_records(&mut self, mut f: impl FnMut(Box<SlowRecord>)) {
        for ring in &mut self.slow.records {
            while let Some(r) = ring.pop() {
                f(r);
            }
        }
    }

    /// How flows are steered to workers.
    pub fn steering(&self) -> FlowSteering {
        self.steering
    }

    /// The lcores (workers and slow path) that share a CPU with another: they
    /// yield when idle instead of spinning.
    pub fn lcores_sharing_cpus(&self) -> &[u32] {
        &self.sharing
    }

    /// The DPDK mempool handler the mbuf pool runs on.
    pub fn pool_handler(&self) -> &str {
        &self.pool_handler
    }

    /// Puts a reloaded policy in force: sessions that begin after the workers
    /// next look (within a few milliseconds) are judged by it; flows keep the
    /// verdicts they have. Its trust store is built here first, so a policy
    /// the workers could not use is refused before any worker sees it.
    pub fn reload_policy(&self, policy: Arc<Policy>) -> Result<(), String> {
        tlsgate_core::tls::CertVerifier::new(&policy.trust().anchors, &policy.trust().crls)?;
        self.policy_updates.publish(policy);
        Ok(())
    }

    /// Takes the session events the workers have sent so far.
    pub fn drain_events(&mut self, mut f: impl FnMut(Box<SessionEvent>)) {
        for ring in &mut self.events {
            while let Some(ev) = ring.pop() {
                f(ev);
            }
        }
    }

    /// The ports, in settings order (pair 0 a, pair 0 b, pair 1 a, ...).
    pub fn ports(&self) -> &[Port] {
        &self.ports
    }

    /// Each worker's counters, now.
    pub fn counters(&self) -> Vec<WorkerCounters> {
        self.shared.iter().map(|s| s.snapshot()).collect()
    }

    /// Every lcore's latencies as last published, merged.
    pub fn latencies(&self) -> Latencies {
        let mut total = Latencies::default();
        for s in &self.shared {
            s.latencies.add_to(&mut total);
        }
        for s in &self.slow.counters {
            s.latencies.add_to(&mut total);
        }
        total
    }

    /// Each port's driver counters, now.
    pub fn port_stats(&self) -> Vec<PortStats> {
        self.ports.iter().map(Port::stats).collect()
    }

    /// Mbufs free in the pool.
    pub fn free_mbufs(&self) -> u32 {
        self.pool.available()
    }

    /// Whether any worker has returned (a panic, caught at the lcore boundary).
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Stops the workers (they drain what they hold), then the ports. Returns
    /// the workers' exit codes and final counters, and the ports' counters.
    pub fn stop(mut self) -> StopReport {
        self.running.store(false, Ordering::SeqCst);
        let mut exit_codes: Vec<i32> = std::mem::take(&mut self.handles).into_iter().map(LcoreHandle::wait).collect();
        exit_codes.extend(std::mem::take(&mut self.slow.handles).into_iter().map(LcoreHandle::wait));
        let mut events = Vec::new();
        self.drain_events(|e| events.push(e));
        let mut slow_records = Vec::new();
        self.drain_slow_records(|r| slow_records.push(r));
        let slow = self.slow_counters();
        let workers = self.shared.iter().map(|s| s.snapshot()).collect();
        let ports = self.ports.iter().map(Port::stats).collect();
        for p in self.ports.iter().chain(&self.slow.mirror) {
            p.stop();
            p.close();
        }
        StopReport { exit_codes, workers, ports, events, slow, slow_records }
    }
}

/// Ports started and workers built, not yet launched.
pub struct Prepared {
    ports: Vec<Port>,
    shared: Vec<Arc<SharedCounters>>,
    running: Arc<AtomicBool>,
    workers: Vec<Worker>,
    lcores: Vec<u32>,
    steering: FlowSteering,
    sharing: Vec<u32>,
    pool: Mempool,
    pool_handler: String,
    events: Vec<RingConsumer<Box<SessionEvent>>>,
    policy_updates: Arc<PolicyUpdates>,
    slow: SlowRuntime,
}

impl Prepared {
    /// Launches each worker on its lcore.
    pub fn launch(self) -> Result<Dataplane, StartError> {
        let Prepared {
            ports,
            shared,
            running,
            workers,
            lcores,
            steering,
            sharing,
            pool,
            pool_handler,
            events,
            policy_updates,
            mut slow,
        } = self;
        let mut handles = Vec::new();
        if let Some(code) = slow.code.clone() {
            for (io, &l) in std::mem::take(&mut slow.io).into_iter().zip(&slow.lcores) {
                let code = code.clone();
                match LcoreHandle::launch(l, move || code.run(io)) {
                    Ok(h) => slow.handles.push(h),
                    Err(e) => {
                        running.store(false, Ordering::SeqCst);
                        return Err(e.into());
                    }
                }
            }
        }
        for (w, &l) in workers.into_iter().zip(&lcores) {
            match LcoreHandle::launch(l, move || w.run()) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    running.store(false, Ordering::SeqCst);
                    return Err(e.into());
                }
            }
        }
        Ok(Dataplane {
            ports,
            shared,
            running,
            handles,
            steering,
            sharing,
            pool,
            pool_handler,
            events,
            policy_updates,
            slow,
        })
    }

    /// Sends `pkts` out of port `port` on worker `worker`'s tx queue (before
    /// launch, from the main lcore). Returns how many were taken.
    pub fn inject(&mut self, port: usize, worker: usize, pkts: &mut Burst) -> usize {
        self.workers.get_mut(worker).map_or(0, |w| w.inject(port, pkts))
    }

    /// The packet pool.
    pub fn pool(&self) -> Mempool {
        self.pool
    }

    /// How flows are steered to workers.
    pub fn steering(&self) -> FlowSteering {
        self.steering
    }

    /// Gives up the workers' queues instead of launching the workers: for a
    /// loop other than tlsgate's on the same ports (the perf baseline).
    /// Returns, per worker, its lcore and its ports, and the ports themselves.
    pub fn into_queues(self) -> (Vec<(u32, Vec<WorkerPort>)>, Vec<Port>) {
        let per_worker = self.lcores.iter().copied().zip(self.workers.into_iter().map(Worker::into_ports)).collect();
        (per_worker, self.ports)
    }
}

/// The final account of a run.
#[derive(Debug, Clone)]
pub struct StopReport {
    /// Each worker's return value (0 = clean; -1 = panicked).
    pub exit_codes: Vec<i32>,
    /// Each worker's final counters.
    pub workers: Vec<WorkerCounters>,
    /// Each port's driver counters.
    pub ports: Vec<PortStats>,
    /// Session events not yet taken when the workers stopped.
    pub events: Vec<Box<SessionEvent>>,
    /// Each slow-path lcore's final counters.
    pub slow: Vec<SlowPathCounters>,
    /// Slow-path records not yet taken when the lcores stopped.
    pub slow_records: Vec<Box<SlowRecord>>,
}

/// For each lcore (workers, then slow-path lcores): whether another of them
/// may run on one of its CPUs. Such lcores take turns on a CPU: one that spins
/// while idle holds off the one that has a packet to pass on, so they yield
/// instead (a test or a small box; production gives each lcore a core).
fn shared_cpus(eal: &Eal, workers: &[u32], slow: &[u32]) -> Vec<bool> {
    let cpus: Vec<Vec<usize>> = workers.iter().chain(slow).map(|&l| eal.lcore_cpus(l)).collect();
    (0..cpus.len()).map(|i| (0..cpus.len()).any(|j| j != i && cpus[j].iter().any(|c| cpus[i].contains(c)))).collect()
}
