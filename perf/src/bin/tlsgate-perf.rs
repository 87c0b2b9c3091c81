//! The perf harness. `tlsgate-perf forward` measures forwarding through the
//! tlsgate worker loop beside a bare rx-burst/tx-burst loop: same PMD
//! (net_ring loopback ports, so the load is a closed loop of real TCP frames
//! and the PMD costs almost nothing), same traffic, same invocation; each
//! measurement runs in a child process (one EAL per process), rounds alternate
//! bare and tlsgate so that machine noise hits both alike.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};
use tlsgate_config::Settings;
use tlsgate_dataplane::dpdk::{tsc, tsc_hz, Burst, Eal, LcoreHandle, Mbuf};
use tlsgate_dataplane::runtime::{Dataplane, StartOptions};
use tlsgate_dataplane::worker::{Backoff, WorkerPort};
use tlsgate_perf::traffic::{tcp_frames, IMIX};

#[derive(Parser)]
#[command(name = "tlsgate-perf", about = "tlsgate perf harness")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Forwarding rate: tlsgate worker loop vs bare loop, for each worker count.
    Forward {
        /// Worker counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        workers: Vec<usize>,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
        /// Alternating rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// PMDs to measure on (`ring`: loopback rings carrying real TCP
        /// frames; `null`: net_null, which allocates, fills and frees an mbuf
        /// per packet, as a NIC driver does).
        #[arg(long, value_delimiter = ',', default_value = "null,ring")]
        pmd: Vec<Pmd>,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Also count, under `valgrind --tool=callgrind`, the instructions
        /// the forwarding threads spend per packet, bare loop and tlsgate (no
        /// policy): one run of each, repeatable where the rates are not.
        #[arg(long)]
        instructions: bool,
    },
    /// Handshake inspection: sessions decided and packets per second on one
    /// worker with a 1,000-rule policy, beside the bare loop, on a capture
    /// replayed from memory (net_pcap infinite_rx into net_null); and
    /// ndpiReader on the same capture.
    Handshakes {
        /// The capture (make one with `tlsgate-gen handshakes`).
        #[arg(long)]
        pcap: std::path::PathBuf,
        /// Rules in the generated policy.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Alternating rounds (the median is reported).
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Also write the results as JSON here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// QUIC classification: the first pass of a capture of QUIC sessions
    /// (`tlsgate-gen quic`), replayed from memory into net_null, through one
    /// worker with a 1,000-rule policy (every session read from its Initials,
    /// decrypted, judged, its event made), beside the bare loop on the same
    /// capture, and ndpiReader. A QUIC flow is not closed on the wire, so a
    /// second pass would be the same connections again: only the first counts.
    Quic {
        /// The capture (make one with `tlsgate-gen quic`).
        #[arg(long)]
        pcap: std::path::PathBuf,
        /// Rules in the generated policy.
        #[arg(long, default_value_t = 1000)]
        rules: usize,
        /// Alternating rounds (the median is reported).
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
    /// Re-signing: the cost of forging one certificate (a cache miss) and of
    /// a cache hit, over servers that repeat as real traffic's do.
    Forge {
        /// Distinct server certificates.
        #[arg(long, default_value_t = 200)]
        servers: usize,
        /// Sessions, spread over the servers (Zipf-like: a few are most of them).
        #[arg(long, default_value_t = 20000)]
        sessions: usize,
        /// Forged certificates the cache keeps.
        #[arg(long, default_value_t = 1024)]
        cache: usize,
        /// Then forge this many distinct RSA-2048 originals (with pooled keys) and report their mean cost.
        #[arg(long, default_value_t = 50)]
        rsa: usize,
    },
    /// Passive reading (a key log opens a TLS 1.2 session) in MB/s on one core,
    /// beside a takeover's record work on as many bytes (open, seal again).
    Passive {
        /// MiB the session moves from the server.
        #[arg(long, default_value_t = 256)]
        mib: usize,
        /// Rounds; the best of each is reported.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
    },
    /// One handshake measurement in this process (used by `handshakes`).
    HandshakesChild {
        #[arg(long)]
        mode: Mode,
        #[arg(long)]
        pcap: std::path::PathBuf,
        #[arg(long)]
        policy: Option<std::path::PathBuf>,
        #[arg(long)]
        seconds: f64,
        /// `[events] handshake`: full or decision.
        #[arg(long, default_value = "full")]
        handshake: String,
        /// Measure the first pass of the capture only: the time until this
        /// many packets (the capture's) were received.
        #[arg(long)]
        first_pass: Option<u64>,
        /// With metrics on, as `tlsgate run` serves them: events tallied, a
        /// snapshot made four times a second, and a scraper reading
        /// `/metrics` ten times a second.
        #[arg(long)]
        metrics: bool,
    },
    /// One measurement in this process (used by `forward`).
    ForwardChild {
        /// With metrics on (as `handshakes-child --metrics`) under a scrape
        /// flood: 200 other connections held open, half idle, half never
        /// reading their answer, and scrapes back to back, all on the
        /// metrics thread's CPU.
        #[arg(long)]
        metrics: bool,
        /// The control, with metrics off: a thread on that same CPU that
        /// only spins (what any load of that CPU costs a worker on this machine).
        #[arg(long)]
        spin: bool,
        /// With a do-not-decrypt policy: every packet through the inspector.
        #[arg(long)]
        policy: bool,
        /// Plain memory even when hugepages are reserved (valgrind cannot
        /// map hugepages).
        #[arg(long)]
        no_huge: bool,
        #[arg(long)]
        mode: Mode,
        #[arg(long)]
        workers: usize,
        #[arg(long)]
        seconds: f64,
        #[arg(long)]
        pmd: Pmd,
    },
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Pmd {
    Null,
    Ring,
}

impl Pmd {
    fn name(self) -> &'static str {
        match self {
            Pmd::Null => "null",
            Pmd::Ring => "ring",
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Mode {
    Bare,
    Tlsgate,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct Sample {
    packets: u64,
    seconds: f64,
    mpps: f64,
    cycles_per_packet: f64,
    /// Packets the forwarding threads received in their whole run, warm-up
    /// and stop included (what an instruction count over the run divides by).
    total_packets: u64,
}

/// Frames in flight per port per worker: well under the ring PMD's 1024 slots.
const IN_FLIGHT: usize = 128;
/// Distinct TCP flows in the load.
const FLOWS: usize = 1024;

/// mimalloc: packet cores allocate per session (facts, events) and the
/// control thread frees what they send it; glibc's malloc serialises such
/// cross-thread frees on an arena lock, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Forward { workers, seconds, rounds, pmd, json, instructions: counted } => {
            forward(&pmd, &workers, seconds, rounds.max(1), json);
            if counted {
                instructions(&pmd, &workers);
            }
        }
        Cmd::Forge { servers, sessions, cache, rsa } => forge(servers, sessions, cache, rsa),
        Cmd::Passive { mib, rounds } => passive(mib, rounds),
        Cmd::Handshakes { pcap, rules, seconds, rounds, json } => {
            handshakes(&pcap, rules, seconds, rounds.max(1), json)
        }
        Cmd::Quic { pcap, rules, rounds } => quic(&pcap, rules, rounds.max(1)),
        Cmd::HandshakesChild { mode, pcap, policy, seconds, handshake, first_pass, metrics } => {
            match handshakes_child(mode, &pcap, policy, seconds, &handshake, first_pass, metrics) {
                Ok(s) => println!("{}", serde_json::to_string(&s).expect("plain struct serialises")),
                Err(e) => {
                    eprintln!("tlsgate-perf: {e}");
                    std::process::exit(1);
                }
            }
        }
        Cmd::ForwardChild { mode, workers, seconds, pmd, metrics, spin, policy, no_huge } => {
            match child(pmd, mode, workers, seconds, ChildOptions { metrics, spin, with_policy: policy, no_huge }) {
                Ok(s) => println!("{}", serde_json::to_string(&s).expect("plain struct serialises")),
                Err(e) => {
                    eprintln!("tlsgate-perf: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

fn forward(pmds: &[Pmd], workers: &[usize], seconds: f64, rounds: usize, json: Option<std::path::PathBuf>) {
    let exe = std::env::current_exe().expect("own path");
    let mut rows = Vec::new();
    println!("forwarding through one port pair, {seconds} s x {rounds} alternating rounds (median)");
    println!("  null: net_null, 64-byte frames made and freed by the PMD");
    println!("  ring: net_ring loopback pair, {FLOWS} TCP flows, IMIX sizes, closed loop");
    println!("  flooded/off: metrics on under a scrape flood (200 connections held, scrapes back to back) / off");
    println!("  spin/off: metrics off, a thread spinning on the metrics CPU (CPU 0) / off");
    println!("  policy: a do-not-decrypt policy, every packet through the inspector (each flow decided once)");
    println!(
        "{:>4} {:>7} {:>10} {:>9} {:>12} {:>11} {:>7} {:>12} {:>9} {:>11} {:>10}",
        "pmd",
        "workers",
        "bare Mpps",
        "bare c/p",
        "tlsgate Mpps",
        "tlsgate c/p",
        "ratio",
        "flooded/off",
        "spin/off",
        "policy Mpps",
        "policy c/p"
    );
    for (&pmd, &w) in pmds.iter().flat_map(|p| workers.iter().map(move |w| (p, w))) {
        let mut bare = Vec::new();
        let mut tg = Vec::new();
        let mut tm = Vec::new();
        let mut ts = Vec::new();
        let mut tp = Vec::new();
        for _ in 0..rounds {
            for (mode, metrics, spin, policy, out) in [
                (Mode::Bare, false, false, false, &mut bare),
                (Mode::Tlsgate, false, false, false, &mut tg),
                (Mode::Tlsgate, true, false, false, &mut tm),
                (Mode::Tlsgate, false, true, false, &mut ts),
                (Mode::Tlsgate, false, false, true, &mut tp),
            ] {
                let mut c = Command::new(&exe);
                c.args(["forward-child", "--mode", if mode == Mode::Bare { "bare" } else { "tlsgate" }]).args([
                    "--workers",
                    &w.to_string(),
                    "--seconds",
                    &seconds.to_string(),
                    "--pmd",
                    pmd.name(),
                ]);
                if metrics {
                    c.arg("--metrics");
                }
                if spin {
                    c.arg("--spin");
                }
                if policy {
                    c.arg("--policy");
                }
                let o = c.output().expect("spawn own binary");
                if !o.status.success() {
                    eprintln!("{}", String::from_utf8_lossy(&o.stderr));
                    std::process::exit(1);
                }
                let line = String::from_utf8_lossy(&o.stdout);
                let s: Sample = serde_json::from_str(line.trim()).expect("child prints one JSON sample");
                out.push(s);
            }
        }
        let b = median(&bare);
        let t = median(&tg);
        let m = median(&tm);
        let sp = median(&ts);
        let p = median(&tp);
        let ratio = t.mpps / b.mpps;
        println!(
            "{:>4} {:>7} {:>10.2} {:>9.1} {:>12.2} {:>11.1} {:>6.1}% {:>11.1}% {:>8.1}% {:>11.2} {:>10.1}",
            pmd.name(),
            w,
            b.mpps,
            b.cycles_per_packet,
            t.mpps,
            t.cycles_per_packet,
            ratio * 100.0,
            m.mpps / t.mpps * 100.0,
            sp.mpps / t.mpps * 100.0,
            p.mpps,
            p.cycles_per_packet
        );
        rows.push(serde_json::json!({
            "pmd": pmd.name(), "workers": w, "bare": b, "tlsgate": t, "metrics_flooded": m, "cpu0_spinning": sp,
            "with_policy": p, "ratio": ratio
        }));
    }
    if let Some(p) = json {
        std::fs::write(&p, serde_json::to_string_pretty(&rows).expect("json")).expect("write --json file");
    }
}

/// Instructions per packet of the forwarding threads, bare loop against
/// tlsgate without a policy, each counted over one run of `forward-child`
/// under callgrind (one file per thread; the forwarding threads are the
/// busiest). A count, unlike a rate, is the same from run to run on a shared
/// machine.
fn instructions(pmds: &[Pmd], workers: &[usize]) {
    let exe = std::env::current_exe().expect("own path");
    println!("instructions per packet, forwarding threads (valgrind --tool=callgrind, one run each, no policy)");
    println!("{:>4} {:>7} {:>12} {:>15} {:>7}", "pmd", "workers", "bare Ir/pkt", "tlsgate Ir/pkt", "ratio");
    for (&pmd, &w) in pmds.iter().flat_map(|p| workers.iter().map(move |w| (p, w))) {
        let per_packet = |mode: Mode| -> Result<f64, String> {
            let dir = tempdir().map_err(|e| e.to_string())?;
            let out = dir.join("cg.out");
            let o = Command::new("valgrind")
                .args(["--tool=callgrind", "--separate-threads=yes"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&exe)
                .args(["forward-child", "--no-huge", "--mode", if mode == Mode::Bare { "bare" } else { "tlsgate" }])
                .args(["--workers", &w.to_string(), "--seconds", "2", "--pmd", pmd.name()])
                .output()
                .map_err(|e| format!("valgrind (scripts/setup installs it): {e}"))?;
            if !o.status.success() {
                return Err(String::from_utf8_lossy(&o.stderr).into_owned());
            }
            let s: Sample =
                serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).map_err(|e| e.to_string())?;
            let mut threads: Vec<u64> = std::fs::read_dir(&dir)
                .map_err(|e| e.to_string())?
                .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
                .filter_map(|text| {
                    text.lines()
                        .find_map(|l| l.strip_prefix("summary:").or(l.strip_prefix("totals:"))?.trim().parse().ok())
                })
                .collect();
            threads.sort_unstable_by(|a, b| b.cmp(a));
            let _ = std::fs::remove_dir_all(&dir);
            Ok(threads.iter().take(w).sum::<u64>() as f64 / s.total_packets.max(1) as f64)
        };
        match (per_packet(Mode::Bare), per_packet(Mode::Tlsgate)) {
            (Ok(b), Ok(t)) => println!("{:>4} {:>7} {:>12.1} {:>15.1} {:>6.1}%", pmd.name(), w, b, t, b / t * 100.0),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("tlsgate-perf: instruction count on {}: {e}", pmd.name());
                std::process::exit(1);
            }
        }
    }
}

/// A fresh directory under the system's temporary one.
fn tempdir() -> std::io::Result<std::path::PathBuf> {
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let d = std::env::temp_dir().join(format!("tlsgate-perf-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

fn median(v: &[Sample]) -> Sample {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.mpps.total_cmp(&b.mpps));
    v[v.len() / 2]
}

/// What a `forward-child` runs beside (or instead of) plain forwarding.
struct ChildOptions {
    metrics: bool,
    spin: bool,
    with_policy: bool,
    no_huge: bool,
}

fn child(
    pmd: Pmd,
    mode: Mode,
    workers: usize,
    seconds: f64,
    ChildOptions { metrics, spin, with_policy, no_huge }: ChildOptions,
) -> Result<Sample, String> {
    let lcores: Vec<u32> = (1..=workers as u32).collect();
    // Hugepages when the machine has them reserved (TLB misses on 4 KiB pages
    // would otherwise dominate what is measured), else plain memory.
    let mem: &[&str] = if hugepages_reserved() && !no_huge { &["--in-memory"] } else { &["--no-huge", "--no-shconf"] };
    let settings = Settings::from_parts(
        mem.iter()
            .chain(&["--no-pci", "--no-telemetry", "--log-level=warning", "-m", "512"])
            .map(|s| s.to_string())
            .chain([format!("--vdev=net_{}0", pmd.name()), format!("--vdev=net_{}1", pmd.name())])
            .collect(),
        vec![(format!("net_{}0", pmd.name()), format!("net_{}1", pmd.name()))],
        lcores.clone(),
    )
    .map_err(|e| e.to_string())?;
    let eal = Eal::init(&settings.eal_args()).map_err(|e| e.to_string())?;
    // With a policy every packet goes through the inspector: on this load
    // (no SYNs) each flow is taken for mid-stream once, then decided.
    let policy = if with_policy {
        let text = "[policy]\ndefault_action = \"do-not-decrypt\"\n";
        Some(Arc::new(tlsgate_config::policy::Policy::parse(text, None).map_err(|e| e.to_string())?))
    } else {
        None
    };
    let mut prep = Dataplane::prepare(&eal, &settings, StartOptions { policy, ..StartOptions::default() })
        .map_err(|e| e.to_string())?;
    let pool = prep.pool();
    // net_ring ports are loopbacks: seed them once and the frames circulate.
    let seeded = if pmd == Pmd::Ring { IN_FLIGHT * 2 * workers } else { 0 };
    let frames = tcp_frames(seeded, FLOWS, &IMIX);
    let mut chunks = frames.chunks(IN_FLIGHT);
    for w in 0..workers.min(seeded) {
        for port in 0..2 {
            let chunk = chunks.next().expect("frames sized for every port and worker");
            for part in chunk.chunks(32) {
                let mut b = Burst::new();
                for f in part {
                    let m = Mbuf::from_bytes(&pool, f).ok_or("mbuf pool exhausted while seeding")?;
                    let _ = b.push(m);
                }
                prep.inject(port, w, &mut b);
            }
        }
    }
    let hz = tsc_hz() as f64;
    let warmup = Duration::from_millis(300);
    let run = Duration::from_secs_f64(seconds);
    let (packets, cycles, total_packets) = match mode {
        Mode::Tlsgate => {
            let mut dp = prep.launch().map_err(|e| e.to_string())?;
            let rx = |dp: &Dataplane| dp.counters().iter().map(|w| w.total().rx_packets).sum::<u64>();
            let mut load = if metrics { Some(MetricsLoad::start(&dp, true)?) } else { None };
            let spinning = Arc::new(AtomicBool::new(spin));
            let spinner = spin.then(|| {
                let on = spinning.clone();
                std::thread::spawn(move || {
                    core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
                    while on.load(Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            });
            let mut wait = |dp: &mut Dataplane, d: Duration| match &mut load {
                Some(l) => {
                    let end = std::time::Instant::now() + d;
                    while std::time::Instant::now() < end {
                        l.tick(dp);
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                None => std::thread::sleep(d),
            };
            wait(&mut dp, warmup);
            let (p0, t0) = (rx(&dp), tsc());
            wait(&mut dp, run);
            let (p1, t1) = (rx(&dp), tsc());
            spinning.store(false, Ordering::Relaxed);
            if let Some(s) = spinner {
                let _ = s.join();
            }
            let report = dp.stop();
            if let Some(l) = load {
                l.finish()?;
            }
            (p1 - p0, t1 - t0, report.workers.iter().map(|w| w.total().rx_packets).sum())
        }
        Mode::Bare => {
            let (queues, _ports) = prep.into_queues();
            let running = Arc::new(AtomicBool::new(true));
            let counts: Vec<Arc<AtomicU64>> = queues.iter().map(|_| Arc::new(AtomicU64::new(0))).collect();
            let mut handles = Vec::new();
            for ((lcore, ports), count) in queues.into_iter().zip(&counts) {
                let (running, count) = (running.clone(), count.clone());
                handles.push(
                    LcoreHandle::launch(lcore, move || bare_loop(ports, &running, &count))
                        .map_err(|e| e.to_string())?,
                );
            }
            let rx = || counts.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
            std::thread::sleep(warmup);
            let (p0, t0) = (rx(), tsc());
            std::thread::sleep(run);
            let (p1, t1) = (rx(), tsc());
            running.store(false, Ordering::SeqCst);
            for h in handles {
                h.wait();
            }
            (p1 - p0, t1 - t0, rx())
        }
    };
    drop(eal);
    let secs = cycles as f64 / hz;
    Ok(Sample {
        packets,
        seconds: secs,
        mpps: packets as f64 / secs / 1e6,
        cycles_per_packet: cycles as f64 * workers as f64 / packets.max(1) as f64,
        total_packets,
    })
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy)]
struct HsSample {
    packets: u64,
    sessions: u64,
    seconds: f64,
    mpps: f64,
    sessions_per_second: f64,
    cycles_per_packet: f64,
}

fn handshakes(pcap: &std::path::Path, rules: usize, seconds: f64, rounds: usize, json: Option<std::path::PathBuf>) {
    let exe = std::env::current_exe().expect("own path");
    let dir = std::env::temp_dir().join(format!("tlsgate-perf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, big_policy(rules)).expect("write the policy");
    let early = dir.join("early.toml");
    std::fs::write(&early, early_policy(rules)).expect("write the policy");
    let run = |mode: &str, policy: Option<&std::path::Path>, handshake: &str| -> HsSample {
        let seconds = seconds.to_string();
        hs_child(&exe, mode, pcap, policy, &["--seconds", &seconds, "--handshake", handshake])
    };
    let (mut bare, mut tg, mut ndpi) = (Vec::new(), Vec::new(), Vec::new());
    let (mut early_full, mut early_decision) = (Vec::new(), Vec::new());
    let mut with_metrics = Vec::new();
    for _ in 0..rounds {
        bare.push(run("bare", None, "full"));
        tg.push(run("tlsgate", Some(&policy), "full"));
        let seconds_s = seconds.to_string();
        let extra = ["--seconds", seconds_s.as_str(), "--handshake", "full", "--metrics"];
        with_metrics.push(hs_child(&exe, "tlsgate", pcap, Some(&policy), &extra));
        early_full.push(run("tlsgate", Some(&early), "full"));
        early_decision.push(run("tlsgate", Some(&early), "decision"));
        if let Some(pps) = ndpi_reader_pps(pcap) {
            ndpi.push(pps);
        }
    }
    let by_mpps = |v: &mut Vec<HsSample>| {
        v.sort_by(|a, b| a.mpps.total_cmp(&b.mpps));
        v[v.len() / 2]
    };
    let (b, t) = (by_mpps(&mut bare), by_mpps(&mut tg));
    let m = by_mpps(&mut with_metrics);
    let (ef, ed) = (by_mpps(&mut early_full), by_mpps(&mut early_decision));
    ndpi.sort_by(f64::total_cmp);
    let n = ndpi.get(ndpi.len() / 2).copied();
    println!(
        "handshake inspection, one worker, {} ({rules}-rule policy), {seconds} s x {rounds} rounds (median)",
        pcap.display()
    );
    println!("  bare loop (net_pcap from memory -> net_null): {:.3} Mpps, {:.0} c/p", b.mpps, b.cycles_per_packet);
    println!(
        "  tlsgate with the policy:                     {:.3} Mpps, {:.0} c/p, {:.0} handshakes decided/s ({:.1}% of bare)",
        t.mpps,
        t.cycles_per_packet,
        t.sessions_per_second,
        t.mpps / b.mpps * 100.0
    );
    println!(
        "  the same with metrics on (tallied, snapshots 4/s, scraped 10/s): {:.3} Mpps, {:.0} handshakes/s ({:.1}% of metrics off)",
        m.mpps,
        m.sessions_per_second,
        m.mpps / t.mpps * 100.0
    );
    println!(
        "  decided at the ClientHello ({rules} rules on SNI and networks), events with the session's own handshake:"
    );
    println!(
        "    [events] handshake = \"full\":              {:.3} Mpps, {:.0} c/p, {:.0} handshakes/s ({:.1}% of decision)",
        ef.mpps,
        ef.cycles_per_packet,
        ef.sessions_per_second,
        ef.mpps / ed.mpps * 100.0
    );
    println!(
        "    [events] handshake = \"decision\":          {:.3} Mpps, {:.0} c/p, {:.0} handshakes/s",
        ed.mpps, ed.cycles_per_packet, ed.sessions_per_second
    );
    match n {
        Some(n) => println!(
            "  ndpiReader (nDPI throughput, same capture):  {:.3} Mpps -> tlsgate / ndpiReader = {:.1}x",
            n / 1e6,
            t.mpps * 1e6 / n
        ),
        None => println!("  ndpiReader: not installed (apt-get install libndpi-bin)"),
    }
    if let Some(p) = json {
        let v = serde_json::json!({
            "bare": b, "tlsgate": t, "with_metrics": m, "ndpi_pps": n, "rules": rules,
            "early_full": ef, "early_decision": ed,
        });
        std::fs::write(&p, serde_json::to_string_pretty(&v).expect("json")).expect("write --json file");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// One `handshakes-child` measurement in a child process (one EAL each).
fn hs_child(
    exe: &std::path::Path,
    mode: &str,
    pcap: &std::path::Path,
    policy: Option<&std::path::Path>,
    extra: &[&str],
) -> HsSample {
    let mut c = Command::new(exe);
    c.args(["handshakes-child", "--mode", mode, "--pcap"]).arg(pcap).args(extra);
    if let Some(policy) = policy {
        c.arg("--policy").arg(policy);
    }
    let o = c.output().expect("spawn own binary");
    if !o.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
        std::process::exit(1);
    }
    serde_json::from_str(String::from_utf8_lossy(&o.stdout).trim()).expect("child prints one JSON sample")
}

/// Metrics as `tlsgate run` serves them, beside a measured run: the events
/// tallied, a snapshot four times a second, and a scraper reading `/metrics`
/// ten times a second from a thread of its own; or, flooding, a client on
/// the metrics CPU that keeps 200 other connections open (half of them idle,
/// half with a request they never read the answer to, 50 replaced each
/// round) and scrapes back to back.
struct MetricsLoad {
    server: tlsgate_dataplane::metrics::MetricsServer,
    tally: tlsgate_dataplane::metrics::Tally,
    names: Vec<String>,
    started: std::time::Instant,
    last: std::time::Instant,
    on: Arc<AtomicBool>,
    scraper: std::thread::JoinHandle<u64>,
}

impl MetricsLoad {
    fn start(dp: &Dataplane, flood: bool) -> Result<MetricsLoad, String> {
        let addr = "127.0.0.1:0".parse().map_err(|_| "an address")?;
        let server = tlsgate_dataplane::metrics::MetricsServer::start(addr, Some(0))?;
        let on = Arc::new(AtomicBool::new(true));
        let (to, running) = (server.addr, on.clone());
        let scraper = std::thread::spawn(move || {
            use std::io::{Read, Write};
            if flood {
                core_affinity::set_for_current(core_affinity::CoreId { id: 0 });
            }
            let mut others: std::collections::VecDeque<std::net::TcpStream> = Default::default();
            let mut scrapes = 0u64;
            while running.load(Ordering::Relaxed) {
                if flood {
                    while others.len() > 150 {
                        others.pop_front();
                    }
                    while others.len() < 200 {
                        let Ok(mut c) = std::net::TcpStream::connect(to) else { break };
                        if others.len().is_multiple_of(2) {
                            let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                        }
                        others.push_back(c);
                    }
                }
                if let Ok(mut c) = std::net::TcpStream::connect(to) {
                    let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
                    let _ = c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
                    let mut body = Vec::new();
                    let _ = c.read_to_end(&mut body);
                    scrapes += u64::from(body.starts_with(b"HTTP/1.1 200 OK"));
                }
                if !flood {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
            scrapes
        });
        let now = std::time::Instant::now();
        let names = dp.ports().iter().map(|p| p.name().to_owned()).collect();
        Ok(MetricsLoad { server, tally: Default::default(), names, started: now, last: now, on, scraper })
    }

    /// Takes the events, and makes a snapshot when one is due.
    fn tick(&mut self, dp: &mut Dataplane) {
        dp.drain_events(|ev| self.tally.record(&ev));
        if self.last.elapsed() >= Duration::from_millis(250) {
            let (w, s) = (dp.counters(), dp.slow_counters());
            let lcores: Vec<u32> = (1..=w.len() as u32).collect();
            let snap = tlsgate_dataplane::metrics::snapshot(
                &self.names,
                &w,
                &lcores,
                &s,
                &[],
                (&self.tally, &dp.latencies()),
                self.started.elapsed(),
            );
            self.server.publish(snap);
            self.last = std::time::Instant::now();
        }
    }

    /// Stops the scraper; an error if it could not scrape.
    fn finish(self) -> Result<(), String> {
        self.on.store(false, Ordering::Relaxed);
        let scrapes = self.scraper.join().unwrap_or(0);
        if scrapes < 5 {
            return Err(format!("the scraper read /metrics only {scrapes} times"));
        }
        Ok(())
    }
}

/// `tlsgate-perf quic`: see [`Cmd::Quic`].
fn quic(pcap: &std::path::Path, rules: usize, rounds: usize) {
    let exe = std::env::current_exe().expect("own path");
    let frames = {
        let f = std::fs::File::open(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
        let mut r = pcap_file::pcap::PcapReader::new(f).expect("a pcap");
        let mut n = 0u64;
        while let Some(p) = r.next_packet() {
            p.expect("a packet");
            n += 1;
        }
        n
    };
    let dir = std::env::temp_dir().join(format!("tlsgate-perf-quic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, early_policy(rules)).expect("write the policy");
    let first_pass = frames.to_string();
    let run = |mode: &str, policy: Option<&std::path::Path>| -> HsSample {
        hs_child(&exe, mode, pcap, policy, &["--seconds", "1", "--first-pass", &first_pass])
    };
    let (mut bare, mut tg, mut ndpi) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        bare.push(run("bare", None));
        tg.push(run("tlsgate", Some(&policy)));
        if let Some(pps) = ndpi_reader_pps(pcap) {
            ndpi.push(pps);
        }
    }
    let median = |v: &mut Vec<HsSample>| {
        v.sort_by(|a, b| a.mpps.total_cmp(&b.mpps));
        v[v.len() / 2]
    };
    let (b, t) = (median(&mut bare), median(&mut tg));
    ndpi.sort_by(f64::total_cmp);
    println!(
        "QUIC classification, one worker, first pass of {} ({frames} packets, {rules}-rule policy), {rounds} rounds (median)",
        pcap.display()
    );
    println!("  bare loop (net_pcap from memory -> net_null): {:.3} Mpps, {:.0} c/p", b.mpps, b.cycles_per_packet);
    println!(
        "  tlsgate with the policy:                     {:.3} Mpps, {:.0} c/p, {} sessions, {:.0} QUIC sessions classified/s ({:.1}% of bare)",
        t.mpps,
        t.cycles_per_packet,
        t.sessions,
        t.sessions_per_second,
        t.mpps / b.mpps * 100.0
    );
    match ndpi.get(ndpi.len() / 2) {
        Some(n) => println!(
            "  ndpiReader (nDPI throughput, same capture):  {:.3} Mpps -> tlsgate / ndpiReader = {:.1}x",
            n / 1e6,
            t.mpps * 1e6 / n
        ),
        None => println!("  ndpiReader: not installed (apt-get install libndpi-bin)"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// ndpiReader's own "nDPI throughput" on the capture, packets per second (the best of 3 loops).
fn ndpi_reader_pps(pcap: &std::path::Path) -> Option<f64> {
    let o = Command::new("ndpiReader").arg("-i").arg(pcap).args(["-l", "3"]).output().ok()?;
    let text = String::from_utf8_lossy(&o.stdout);
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nDPI throughput:"))
        .filter_map(|rest| {
            let mut it = rest.split_whitespace();
            let v: f64 = it.next()?.parse().ok()?;
            let unit = it.next()?;
            Some(match unit {
                "M" => v * 1e6,
                "K" => v * 1e3,
                _ => v,
            })
        })
        .max_by(f64::total_cmp)
}

/// A policy of `n` rules, none of which matches the generator's sessions but
/// many of which need server facts, so every session is judged at both phases
/// against all of them: SNI names and wildcards, networks, subjects, issuers,
/// certificate statuses.
fn big_policy(n: usize) -> String {
    let mut p = String::from(
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"log-all\"\naction = \"monitor\"\n",
    );
    for i in 0..n.saturating_sub(1) {
        let cond = match i % 5 {
            0 => format!("sni = [\"blocked-{i}.example\"]"),
            1 => format!("sni = [\"*.zone{i}.example\"]"),
            2 => format!("dest_networks = [\"198.18.{}.{}/32\"]", (i / 256) % 256, i % 256),
            3 => format!("subject = [\"CN=host-{i}.example\"]"),
            _ => format!("issuer = [\"O=Untrusted {i}\"]\ncert_status = {{ revoked = true }}"),
        };
        let action = if i % 2 == 0 { "block" } else { "block-with-reset" };
        p.push_str(&format!("\n[[rule]]\nname = \"r{i}\"\naction = \"{action}\"\n{cond}\n"));
    }
    p
}

/// A policy of `n` rules on SNI names, wildcards and networks only: it never
/// needs server facts, so every session is decided at its ClientHello (none
/// matches: the default action, do-not-decrypt).
fn early_policy(n: usize) -> String {
    let mut p = String::from(
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"log-all\"\naction = \"monitor\"\n",
    );
    for i in 0..n.saturating_sub(1) {
        let cond = match i % 3 {
            0 => format!("sni = [\"blocked-{i}.example\"]"),
            1 => format!("sni = [\"*.zone{i}.example\"]"),
            _ => format!("dest_networks = [\"198.18.{}.{}/32\"]", (i / 256) % 256, i % 256),
        };
        p.push_str(&format!("\n[[rule]]\nname = \"r{i}\"\naction = \"block\"\n{cond}\n"));
    }
    p
}

fn handshakes_child(
    mode: Mode,
    pcap: &std::path::Path,
    policy: Option<std::path::PathBuf>,
    seconds: f64,
    handshake: &str,
    first_pass: Option<u64>,
    metrics: bool,
) -> Result<HsSample, String> {
    let policy = match policy {
        Some(p) => Some(Arc::new(tlsgate_config::policy::Policy::load(&p).map_err(|e| e.to_string())?)),
        None => None,
    };
    let mem: &[&str] = if hugepages_reserved() { &["--in-memory"] } else { &["--no-huge", "--no-shconf"] };
    let mut settings = Settings::from_parts(
        mem.iter()
            .chain(&["--no-pci", "--no-telemetry", "--log-level=warning", "-m", "1024", "--vdev=net_null0,no-rx=1"])
            .map(|s| s.to_string())
            .chain([format!("--vdev=net_pcap0,rx_pcap={},infinite_rx=1", pcap.display())])
            .collect(),
        vec![("net_pcap0".into(), "net_null0".into())],
        vec![1],
    )
    .map_err(|e| e.to_string())?;
    // net_pcap's infinite_rx keeps the whole capture in mbufs.
    settings.mempool.mbufs = 262_143;
    settings.events.handshake = match handshake {
        "decision" => tlsgate_config::HandshakeEvents::Decision,
        _ => tlsgate_config::HandshakeEvents::Full,
    };
    let eal = Eal::init(&settings.eal_args()).map_err(|e| e.to_string())?;
    let opts = StartOptions { policy, replay_times: None, slow_path: None };
    let prep = Dataplane::prepare(&eal, &settings, opts).map_err(|e| e.to_string())?;
    let hz = tsc_hz() as f64;
    let warmup = Duration::from_millis(500);
    let run = Duration::from_secs_f64(seconds);
    let (packets, sessions, cycles) = match mode {
        Mode::Tlsgate => {
            let mut dp = prep.launch().map_err(|e| e.to_string())?;
            let read = |dp: &Dataplane| {
                let c = dp.counters();
                (c.iter().map(|w| w.total().rx_packets).sum::<u64>(), c.iter().map(|w| w.inspect.sessions).sum::<u64>())
            };
            // The events are drained as the control thread would take them:
            // dropped, or (with metrics on) tallied, with snapshots for a scraper.
            let mut load = if metrics { Some(MetricsLoad::start(&dp, false)?) } else { None };
            let mut wait = |dp: &mut Dataplane, d: Duration| {
                let end = std::time::Instant::now() + d;
                while std::time::Instant::now() < end {
                    match &mut load {
                        Some(l) => l.tick(dp),
                        None => dp.drain_events(drop),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            };
            if let Some(n) = first_pass {
                // From the launch to the last packet of the capture.
                let t0 = tsc();
                let end = std::time::Instant::now() + Duration::from_secs(60);
                let (mut p, mut s) = read(&dp);
                while p < n && std::time::Instant::now() < end {
                    dp.drain_events(drop);
                    std::thread::sleep(Duration::from_micros(200));
                    (p, s) = read(&dp);
                }
                let t1 = tsc();
                dp.stop();
                (p, s, t1 - t0)
            } else {
                wait(&mut dp, warmup);
                let ((p0, s0), t0) = (read(&dp), tsc());
                wait(&mut dp, run);
                let ((p1, s1), t1) = (read(&dp), tsc());
                dp.stop();
                if let Some(l) = load {
                    l.finish()?;
                }
                (p1 - p0, s1 - s0, t1 - t0)
            }
        }
        Mode::Bare => {
            let (queues, _ports) = prep.into_queues();
            let running = Arc::new(AtomicBool::new(true));
            let count = Arc::new(AtomicU64::new(0));
            let mut handles = Vec::new();
            for (lcore, ports) in queues {
                let (running, count) = (running.clone(), count.clone());
                handles.push(
                    LcoreHandle::launch(lcore, move || bare_loop(ports, &running, &count))
                        .map_err(|e| e.to_string())?,
                );
            }
            let (p0, t0, p1, t1) = if let Some(n) = first_pass {
                let t0 = tsc();
                let end = std::time::Instant::now() + Duration::from_secs(60);
                while count.load(Ordering::Relaxed) < n && std::time::Instant::now() < end {
                    std::thread::sleep(Duration::from_micros(200));
                }
                (0, t0, count.load(Ordering::Relaxed), tsc())
            } else {
                std::thread::sleep(warmup);
                let (p0, t0) = (count.load(Ordering::Relaxed), tsc());
                std::thread::sleep(run);
                (p0, t0, count.load(Ordering::Relaxed), tsc())
            };
            running.store(false, Ordering::SeqCst);
            for h in handles {
                h.wait();
            }
            (p1 - p0, 0, t1 - t0)
        }
    };
    drop(eal);
    let secs = cycles as f64 / hz;
    Ok(HsSample {
        packets,
        sessions,
        seconds: secs,
        mpps: packets as f64 / secs / 1e6,
        sessions_per_second: sessions as f64 / secs,
        cycles_per_packet: cycles as f64 / packets.max(1) as f64,
    })
}

fn forge(servers: usize, sessions: usize, cache: usize, rsa: usize) {
    use rustls_pki_types::pem::PemObject;
    use tlsgate_perf::handshake::Pki;
    use tlsgate_slowpath::forge::Forger;
    use tlsgate_slowpath::keys::KeyMaker;
    use tlsgate_slowpath::keys::{Accepts, KeyKind, LeafKeys, KEYS_PER_KIND};
    let servers = servers.max(1);
    let origin = Pki::new("Origin CA");
    let resign = Pki::new("Inspection CA");
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(resign.ca_key_pem().as_bytes()).expect("rcgen PEM");
    let mut forger = Forger::new(&resign.ca_cert_der(), key, cache).expect("a forger for a fresh CA");
    // As a slow-path lcore has them: P-256 keys made at once, RSA ones by the key maker's thread.
    let maker = KeyMaker::start();
    let mut keys = LeafKeys::new(maker.as_deref(), 3600);
    let now = tlsgate_perf::handshake::DEFAULT_START_UNIX_S as i64;
    let leaves: Vec<_> = (0..servers)
        .map(|i| origin.issue(&[&format!("server{i}.example")], "Org", now - 86_400, now + 365 * 86_400))
        .collect();
    // Server popularity ~ 1/rank, as in real traffic.
    let weights: Vec<f64> = (1..=servers).map(|r| 1.0 / r as f64).collect();
    let total: f64 = weights.iter().sum();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let started = std::time::Instant::now();
    let mut hit_ns = 0u128;
    let mut hits = 0u64;
    let mut picks = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut pick = (x >> 11) as f64 / (1u64 << 53) as f64 * total;
        let mut i = 0;
        while i + 1 < servers && pick >= weights[i] {
            pick -= weights[i];
            i += 1;
        }
        picks.push(i);
        let before = forger.stats().hits;
        let t = std::time::Instant::now();
        forger.forge(&mut keys, &leaves[i].cert_der, true, Accepts::ANY).expect("forging a well-formed leaf");
        if forger.stats().hits > before {
            hit_ns += t.elapsed().as_nanos();
            hits += 1;
        }
    }
    let st = forger.stats();
    println!("re-signing, {sessions} sessions over {servers} servers (popularity ~ 1/rank), cache of {cache}");
    println!(
        "  forged (misses): {}, cache hits: {} ({:.1}%)",
        st.forged,
        st.hits,
        st.hits as f64 / sessions as f64 * 100.0
    );
    println!("  one forge (ECDSA P-256 leaf, P-256 CA): {:.1} us", st.forge_ns as f64 / st.forged.max(1) as f64 / 1e3);
    println!("  one cache hit: {:.2} us", hit_ns as f64 / hits.max(1) as f64 / 1e3);
    println!("  total: {:.1} ms", started.elapsed().as_secs_f64() * 1e3);
    // The same sessions' upstream chains (each leaf signed by the origin CA),
    // verified afresh every time as each session once did, and by a slow
    // lcore's ServerTrust, which reuses a verdict while the chain is valid.
    {
        use rustls::client::danger::ServerCertVerifier;
        use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(origin.ca_cert_der())).expect("the origin CA is a certificate");
        let trust = tlsgate_slowpath::ServerTrust::new(roots.clone());
        let fresh = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
        )
        .build()
        .expect("a verifier over one root");
        let at = UnixTime::since_unix_epoch(Duration::from_secs(now as u64));
        let chains: Vec<(CertificateDer<'static>, ServerName<'static>)> = (0..servers)
            .map(|i| {
                let name = ServerName::try_from(format!("server{i}.example")).expect("a DNS name");
                (CertificateDer::from(leaves[i].cert_der.clone()), name)
            })
            .collect();
        let t = std::time::Instant::now();
        for &i in &picks {
            let (leaf, name) = &chains[i];
            assert!(fresh.verify_server_cert(leaf, &[], name, &[], at).is_ok());
        }
        let fresh_ns = t.elapsed().as_nanos() as f64 / picks.len().max(1) as f64;
        let t = std::time::Instant::now();
        for &i in &picks {
            let (leaf, name) = &chains[i];
            assert!(trust.trusted(leaf, &[], name, &[], at));
        }
        let kept_ns = t.elapsed().as_nanos() as f64 / picks.len().max(1) as f64;
        let (reused, verified) = trust.stats();
        println!(
            "  the server's chain, per session: verified afresh {:.1} us, with verdicts reused {:.1} us ({reused} reused, {verified} verified)",
            fresh_ns / 1e3,
            kept_ns / 1e3
        );
    }
    if rsa > 0 {
        let originals: Vec<_> = (0..rsa)
            .map(|i| {
                let key = rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
                    .expect("an RSA key");
                let params = rcgen::CertificateParams::new(vec![format!("rsa{i}.example")]).expect("a DNS name");
                params.self_signed(&key).expect("a self-signed RSA original")
            })
            .collect();
        let filling = std::time::Instant::now();
        while keys.held(KeyKind::Rsa2048) < KEYS_PER_KIND {
            assert!(filling.elapsed().as_secs() < 120, "the key maker made no RSA keys in 2 minutes");
            std::thread::sleep(std::time::Duration::from_millis(1));
            keys.receive();
        }
        let filled_ms = filling.elapsed().as_secs_f64() * 1e3;
        let p256 = st.forge_ns as f64 / st.forged.max(1) as f64;
        let before = forger.stats();
        for cert in &originals {
            forger.forge(&mut keys, cert.der(), true, Accepts::ANY).expect("forging an RSA original");
        }
        let after = forger.stats();
        let one = (after.forge_ns - before.forge_ns) as f64 / rsa as f64;
        println!(
            "  one forge of an RSA-2048 original (a pooled RSA-2048 key): {:.1} us over {rsa}, {:.2}x a P-256 forge",
            one / 1e3,
            one / p256
        );
        println!("  (waited {filled_ms:.0} ms more for the key maker to fill the RSA-2048 pool)");
        assert_eq!(keys.stats().made_on_path, 0);
    }
}

fn passive(mib: usize, rounds: usize) {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    println!("passive reading vs a takeover's record work, one TLS 1.2 session of {mib} MiB from the server, one core, best of {rounds}");
    println!("  {:<48} {:>14} {:>16} {:>7}", "suite", "passive MB/s", "takeover MB/s", "ratio");
    for suite in [
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ] {
        match tlsgate_perf::passive::measure(suite, mib, rounds) {
            Ok(r) => println!(
                "  {:<48} {:>14.0} {:>16.0} {:>6.2}x",
                r.suite,
                r.passive_mb_s,
                r.takeover_mb_s,
                r.passive_mb_s / r.takeover_mb_s
            ),
            Err(e) => {
                eprintln!("tlsgate-perf passive: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Whether free 2 MiB hugepages are reserved.
fn hugepages_reserved() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .is_some_and(|n| n >= 300)
}

/// The baseline: rx burst from each port, tx burst to its peer, free what the
/// tx queue refused. Nothing else.
fn bare_loop(mut ports: Vec<WorkerPort>, running: &AtomicBool, count: &AtomicU64) -> i32 {
    let mut b = Burst::new();
    let mut n_total = 0u64;
    let mut idle = Backoff::default();
    while running.load(Ordering::Relaxed) {
        let mut work = 0;
        for p in 0..ports.len() {
            let n = ports[p].rx.recv(&mut b);
            if n == 0 {
                continue;
            }
            work += n;
            let peer = ports[p].peer;
            ports[peer].tx.send(&mut b);
            b.clear();
        }
        n_total += work as u64;
        count.store(n_total, Ordering::Relaxed);
        if work == 0 {
            idle.wait();
        } else {
            idle.reset();
        }
    }
    0
}
