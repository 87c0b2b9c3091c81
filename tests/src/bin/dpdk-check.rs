//! A test program that exercises the DPDK layer in its own process (one EAL
//! per process). Each subcommand runs a set of checks and exits non-zero with
//! a message on the first that fails; the integration tests run it as a child.
//!
//! - `wrappers`: EAL, mempool, mbuf, burst, ring, lcore launch, port lookup.
//! - `ring-bridge --workers N`: the real worker loop over two net_ring
//!   loopback ports, seeded with TCP frames of many flows; checks that no
//!   packet is lost, that traffic keeps circulating, and that each packet is
//!   handed to another worker at most once (flows stay where they belong).

use std::process::ExitCode;
use std::time::Duration;

use tlsgate_config::Settings;
use tlsgate_dataplane::dpdk::{
    ring_pair, Burst, Eal, EalError, LcoreHandle, Mbuf, Mempool, Port, PortError, PortSetup,
};
use tlsgate_dataplane::runtime::{Dataplane, FlowSteering, StartOptions};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("wrappers") => wrappers(),
        Some("ring-bridge") => {
            let workers = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2);
            ring_bridge(workers)
        }
        _ => Err("usage: dpdk-check wrappers | ring-bridge --workers N".into()),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("dpdk-check: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

fn eal_args(extra: &[&str], lcores: &str) -> Vec<String> {
    let mut v: Vec<String> =
        ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "--log-level=warning", "-m", "256"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.push(format!("--lcores={lcores}"));
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

fn wrappers() -> Result<String, String> {
    let eal = Eal::init(&eal_args(&["--vdev=net_null0"], "(0-2)@(0-1)")).map_err(|e| e.to_string())?;
    check!(matches!(Eal::init(&["x"]), Err(EalError::AlreadyStarted)), "a second EAL init must be refused");
    check!(eal.main_lcore() == 0, "main lcore is {}", eal.main_lcore());
    check!(eal.lcore_enabled(1) && eal.lcore_enabled(2) && !eal.lcore_enabled(3), "lcores 1-2 enabled, 3 not");
    check!(eal.port_count() == 1, "one vdev port, found {}", eal.port_count());

    // Mempool and mbufs: every mbuf comes back to the pool.
    let pool = Mempool::new("check_pool", 2047, 0, 2176).map_err(|e| e.to_string())?;
    let full = pool.available();
    check!(full == 2047, "fresh pool has 2047 mbufs, not {full}");
    let frame: Vec<u8> = (0..200u8).collect();
    let m = Mbuf::from_bytes(&pool, &frame).ok_or("alloc from a fresh pool")?;
    check!(m.data() == &frame[..], "mbuf holds the bytes written");
    check!(m.pkt_len() == 200 && m.is_contiguous(), "length and segments");
    check!(m.to_vec() == frame, "to_vec copies the packet");
    check!(pool.available() == full - 1, "one mbuf in use");
    drop(m);
    check!(pool.available() == full, "dropping an mbuf returns it");
    check!(Mbuf::from_bytes(&pool, &vec![0u8; 4000]).is_none(), "a frame larger than a segment is refused");
    check!(pool.available() == full, "a refused frame does not leak its mbuf");
    let m = Mbuf::from_parts(&pool, &[&frame[..54], &[], &frame[54..155], &frame[155..]]).ok_or("alloc")?;
    check!(m.data() == &frame[..] && m.is_contiguous(), "a frame from parts holds them in order, in one segment");
    drop(m);
    check!(Mbuf::from_parts(&pool, &[&frame, &vec![0u8; 2000]]).is_none(), "parts larger than a segment are refused");
    check!(pool.available() == full, "parts refused do not leak their mbuf");

    // Handlers: the lock-free stack (the runtime's default) hands back the
    // mbuf freed last, still in cache; the ring the one it has held longest.
    // No per-lcore cache here, so each free and alloc reaches the handler.
    for (handler, lifo) in [("lf_stack", true), ("ring_mp_mc", false)] {
        let p =
            Mempool::with_handler(&format!("check_{handler}"), 1023, 0, 2176, handler).map_err(|e| e.to_string())?;
        let a = Mbuf::alloc(&p).ok_or("alloc")?;
        let b = Mbuf::alloc(&p).ok_or("alloc")?;
        let (pa, pb) = (a.data().as_ptr(), b.data().as_ptr());
        drop(a);
        drop(b);
        let again = Mbuf::alloc(&p).ok_or("alloc")?;
        let got = again.data().as_ptr();
        let ok = if lifo { got == pb } else { got != pa && got != pb };
        check!(ok, "{handler}: the mbuf handed back after two frees");
        drop(again);
        check!(p.available() == 1023, "{handler}: every mbuf back");
    }
    let e = Mempool::with_handler("check_bad", 1023, 0, 2176, "no_such_handler").err().ok_or("an unknown handler")?;
    check!(e.to_string().contains("no_such_handler"), "the error names the handler: {e}");

    // Bursts: push until full, give back the extra, free on drop.
    let mut b = Burst::new();
    for i in 0..32u8 {
        check!(b.push(Mbuf::from_bytes(&pool, &[i; 60]).ok_or("alloc")?).is_ok(), "push {i}");
    }
    check!(b.is_full(), "32 mbufs fill a burst");
    check!(b.bytes_from(0) == 32 * 60, "a full burst's bytes: {}", b.bytes_from(0));
    let extra = Mbuf::alloc(&pool).ok_or("alloc")?;
    check!(b.push(extra).is_err(), "a full burst refuses a 33rd mbuf");
    b.retain_from(0, |m| m.data()[0] % 2 == 0, drop);
    check!(b.len() == 16, "retain_from kept the even ones, left {}", b.len());
    check!(b.as_slice().iter().enumerate().all(|(i, m)| m.data()[0] as usize == i * 2), "retain_from keeps order");
    let drained: Vec<Mbuf> = b.drain().collect();
    check!(drained.len() == 16 && b.is_empty(), "drain takes everything");
    drop(drained);
    for _ in 0..10 {
        let _ = b.push(Mbuf::alloc(&pool).ok_or("alloc")?);
    }
    drop(b);
    check!(pool.available() == full, "bursts free what they hold ({} of {full} back)", pool.available());

    // Byte sums (four at a step, the rest one by one) of every fill and every
    // starting index, over lengths that all differ.
    let mut b = Burst::new();
    let mut lens = Vec::new();
    for n in 0..=32usize {
        for from in 0..=n + 1 {
            let want: u64 = lens.iter().skip(from).sum();
            check!(b.bytes_from(from) == want, "bytes of {n} mbufs from {from}: {} for {want}", b.bytes_from(from));
        }
        let len = 60 + 37 * n;
        let _ = b.push(Mbuf::from_bytes(&pool, &vec![0u8; len]).ok_or("alloc")?);
        lens.push(len as u64);
    }
    drop(b);

    // Rings: SPSC order, full rings refuse, dropped rings free their items.
    let (mut tx, mut rx) = ring_pair::<Box<u64>>("check_ring", 8).map_err(|e| e.to_string())?;
    for i in 0..8u64 {
        check!(tx.push(Box::new(i)).is_ok(), "ring push {i}");
    }
    check!(tx.push(Box::new(99)).is_err(), "a full ring refuses");
    check!(tx.full_count() == 1, "refusals are counted");
    check!(rx.len() == 8, "ring holds 8");
    for i in 0..8u64 {
        check!(rx.pop().as_deref() == Some(&i), "ring pops in order");
    }
    check!(rx.pop().is_none(), "empty ring pops nothing");
    let (mut mtx, mrx) = ring_pair::<Mbuf>("check_mbuf_ring", 64).map_err(|e| e.to_string())?;
    let mut b = Burst::new();
    for _ in 0..20 {
        let _ = b.push(Mbuf::alloc(&pool).ok_or("alloc")?);
    }
    check!(mtx.send_burst(&mut b) == 20 && b.is_empty(), "burst enqueue");
    drop(mtx);
    drop(mrx);
    check!(pool.available() == full, "a dropped ring frees the mbufs it held");

    // Lcore launch: return values come back; a panic is caught at the boundary.
    let h = LcoreHandle::launch(1, || 7).map_err(|e| e.to_string())?;
    check!(h.wait() == 7, "lcore return value");
    let h = LcoreHandle::launch(2, || panic!("deliberate")).map_err(|e| e.to_string())?;
    check!(h.wait() == -1, "a panicking lcore reports -1");
    check!(LcoreHandle::launch(0, || 0).is_err(), "launching on the main lcore is refused");

    // Ports: lookup by name; unknown names list what exists.
    let p = Port::by_name("net_null0").map_err(|e| e.to_string())?;
    check!(p.info().driver == "net_null", "driver name {}", p.info().driver);
    match Port::by_name("net_nothing9") {
        Err(PortError::NotFound { known, .. }) => check!(known.contains("net_null0"), "known ports listed: {known}"),
        _ => return Err("an unknown port must be NotFound".into()),
    }

    // RSS with a slow path: net_null has a redirection table the driver lets
    // us write, so the path that keeps RSS off the slow lcores' queues runs
    // against a driver here. Workers' queues come first; every entry read back
    // names one of them, and each of them gets its share (the driver's own
    // table, before, sends every flow to queue 0).
    let mut p = p;
    check!(p.offers_rss_with_reta(), "net_null offers RSS with a table: {:?}", p.info());
    for (queues, workers) in [(3u16, 2u16), (4, 3), (2, 1)] {
        let setup = PortSetup { queues, rx_descriptors: 256, tx_descriptors: 256, rss: true, rss_queues: workers };
        p.configure(setup, &pool).map_err(|e| e.to_string())?;
        check!(p.rss_active(), "RSS kept with {workers} worker queues of {queues}");
        let table = p.rss_table().map_err(|e| e.to_string())?;
        check!(table.len() == p.info().reta_size as usize, "the whole table read back ({} entries)", table.len());
        for w in 0..queues {
            let share = table.iter().filter(|&&q| q == w).count();
            if w < workers {
                let even = table.len() / workers as usize;
                check!(share == even || share == even + 1, "worker queue {w} has {share} of {} entries", table.len());
            } else {
                check!(share == 0, "slow-path queue {w} is named by {share} entries: {table:?}");
            }
        }
    }
    Ok("wrappers: all checks passed".into())
}

fn ring_bridge(workers: usize) -> Result<String, String> {
    let lcores: Vec<u32> = (1..=workers as u32).collect();
    let settings = Settings::from_parts(
        eal_args(&["--vdev=net_ring0", "--vdev=net_ring1"], &format!("(0-{workers})@(0-1)")),
        vec![("net_ring0".into(), "net_ring1".into())],
        lcores,
    )
    .map_err(|e| e.to_string())?;
    let eal = Eal::init(&settings.eal_args()).map_err(|e| e.to_string())?;
    let mut prep = Dataplane::prepare(&eal, &settings, StartOptions::default()).map_err(|e| e.to_string())?;
    let expected = if workers > 1 { FlowSteering::SoftwareDispatch } else { FlowSteering::SingleWorker };
    check!(prep.steering() == expected, "net_ring has no RSS: steering {:?}", prep.steering());
    let pool = prep.pool();
    let frames = tlsgate_perf_frames(64 * 2 * workers);
    let seeded = frames.len() as u64;
    for (i, chunk) in frames.chunks(32).enumerate() {
        let mut b = Burst::new();
        for f in chunk {
            let _ = b.push(Mbuf::from_bytes(&pool, f).ok_or("seed alloc")?);
        }
        let (port, worker) = (i % 2, (i / 2) % workers);
        check!(prep.inject(port, worker, &mut b) == chunk.len(), "seeding took every frame");
    }
    let dp = prep.launch().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_millis(600));
    let mid: u64 = dp.counters().iter().map(|w| w.total().rx_packets).sum();
    std::thread::sleep(Duration::from_millis(300));
    let report = dp.stop();
    let rx: u64 = report.workers.iter().map(|w| w.total().rx_packets).sum();
    let tx: u64 = report.workers.iter().map(|w| w.total().tx_packets).sum();
    let rx_bytes: u64 = report.workers.iter().map(|w| w.total().rx_bytes).sum();
    let tx_bytes: u64 = report.workers.iter().map(|w| w.total().tx_bytes).sum();
    let dropped: u64 = report.workers.iter().map(|w| w.total().dropped_total()).sum();
    let dispatched: u64 = report.workers.iter().map(|w| w.lcore.dispatched_out).sum();
    check!(report.exit_codes.iter().all(|&c| c == 0), "workers exit cleanly: {:?}", report.exit_codes);
    check!(dropped == 0, "no drops in a closed loop, got {dropped}");
    check!(rx > mid && mid > seeded * 10, "traffic keeps circulating (rx {mid} then {rx})");
    check!(rx.abs_diff(tx) <= seeded, "rx {rx} and tx {tx} differ by at most what is in flight");
    // Every frame is FRAME bytes long: the byte counters follow the packets.
    check!(rx_bytes == rx * FRAME && tx_bytes == tx * FRAME, "bytes: rx {rx_bytes} for {rx}, tx {tx_bytes} for {tx}");
    if workers > 1 {
        check!(dispatched > 0, "frames seeded on the wrong worker are handed over");
    }
    check!(
        dispatched <= seeded,
        "each frame handed to its owner at most once: {dispatched} hand-overs for {seeded} frames"
    );
    Ok(format!(
        "ring-bridge: {workers} workers, {seeded} frames seeded, {rx} received, {tx} sent, {dispatched} handed over, 0 dropped"
    ))
}

/// The length of each of [`tlsgate_perf_frames`]' frames: Ethernet, IPv4
/// and TCP headers and 100 bytes.
const FRAME: u64 = 14 + 20 + 20 + 100;

/// TCP frames of many flows, like the perf harness's load.
fn tlsgate_perf_frames(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let f = (i % 97) as u16;
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 1, 0, (f % 200) as u8], [10, 2, 0, 1], 64)
                .tcp(20000 + f, 443, i as u32, 1000);
            let mut v = Vec::new();
            b.write(&mut v, &[0u8; 100]).expect("Vec write");
            v
        })
        .collect()
}
