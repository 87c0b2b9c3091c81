//! What the operator reads: a line of rates while running, and the final
//! per-port and per-worker counters (rx, tx, dropped and why).

use std::time::{Duration, Instant};

use tlsgate_dataplane::runtime::StopReport;
use tlsgate_dataplane::stats::{DropReason, InspectCounters, PortCounters, WorkerCounters};

/// Prints a line of rates every interval.
pub struct RateLine {
    every: Duration,
    start: Instant,
    last_at: Instant,
    last: PortCounters,
}

impl RateLine {
    /// Rates every `every`.
    pub fn new(every: Duration) -> RateLine {
        let now = Instant::now();
        RateLine { every, start: now, last_at: now, last: PortCounters::default() }
    }

    /// Prints a line if the interval has passed.
    pub fn tick(&mut self, workers: &[WorkerCounters]) {
        let now = Instant::now();
        let dt = now - self.last_at;
        if dt < self.every {
            return;
        }
        let mut total = PortCounters::default();
        for w in workers {
            total.add(&w.total());
        }
        let s = dt.as_secs_f64();
        let d = |a: u64, b: u64| a.saturating_sub(b) as f64 / s;
        println!(
            "[{:8.1}s] rx {:.3} Mpps {:.3} Gbit/s | tx {:.3} Mpps {:.3} Gbit/s | dropped {:.0} pps (total {})",
            (now - self.start).as_secs_f64(),
            d(total.rx_packets, self.last.rx_packets) / 1e6,
            d(total.rx_bytes, self.last.rx_bytes) * 8.0 / 1e9,
            d(total.tx_packets, self.last.tx_packets) / 1e6,
            d(total.tx_bytes, self.last.tx_bytes) * 8.0 / 1e9,
            d(total.dropped_total(), self.last.dropped_total()),
            total.dropped_total(),
        );
        self.last = total;
        self.last_at = now;
    }
}

/// Prints the final counters.
pub fn print_final(ports: &[String], lcores: &[u32], r: &StopReport, elapsed: Duration) {
    println!("tlsgate stopped after {:.2} s", elapsed.as_secs_f64());
    let mut inspect = InspectCounters::default();
    let mut events_lost = 0;
    for w in &r.workers {
        inspect.add(&w.inspect);
        events_lost += w.lcore.events_lost;
    }
    if inspect != InspectCounters::default() || events_lost > 0 {
        let parts: Vec<String> = inspect.named().map(|(name, n)| format!("{name} {n}")).collect();
        println!("inspection: {}, events_lost {events_lost}", parts.join(", "));
    }
    let reasons: Vec<&str> = DropReason::ALL.iter().map(|r| r.name()).collect();
    println!(
        "{:<16} {:>12} {:>14} {:>12} {:>14} {:>9}  dropped by reason ({}) | driver: imissed ierrors oerrors rx_nombuf",
        "port",
        "rx_packets",
        "rx_bytes",
        "tx_packets",
        "tx_bytes",
        "dropped",
        reasons.join(" ")
    );
    for (i, name) in ports.iter().enumerate() {
        let mut c = PortCounters::default();
        for w in &r.workers {
            if let Some(p) = w.ports.get(i) {
                c.add(p);
            }
        }
        let d = r.ports.get(i).copied().unwrap_or_default();
        println!(
            "{:<16} {:>12} {:>14} {:>12} {:>14} {:>9}  {} | driver: {} {} {} {}",
            name,
            c.rx_packets,
            c.rx_bytes,
            c.tx_packets,
            c.tx_bytes,
            c.dropped_total(),
            join(&c.dropped),
            d.imissed,
            d.ierrors,
            d.oerrors,
            d.rx_nombuf
        );
    }
    println!(
        "{:<16} {:>12} {:>14} {:>12} {:>14} {:>9}  dispatched out/in   polls busy/idle",
        "worker", "rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "dropped"
    );
    for (w, lcore) in r.workers.iter().zip(lcores) {
        let t = w.total();
        println!(
            "{:<16} {:>12} {:>14} {:>12} {:>14} {:>9}  {}/{}   {}/{}",
            format!("lcore {lcore}"),
            t.rx_packets,
            t.rx_bytes,
            t.tx_packets,
            t.tx_bytes,
            t.dropped_total(),
            w.lcore.dispatched_out,
            w.lcore.dispatched_in,
            w.lcore.busy_polls,
            w.lcore.idle_polls
        );
    }
    for (i, c) in r.slow.iter().enumerate() {
        let parts: Vec<String> = c.named().map(|(name, n)| format!("{name} {n}")).collect();
        println!("slow path {i}: {}", parts.join(", "));
    }
}

fn join(v: &[u64]) -> String {
    v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
}

/// The final counters as JSON: per port (ours and the driver's) and per
/// worker, with how flows were steered and which lcores shared a CPU.
pub fn counters_json(
    ports: &[String],
    lcores: &[u32],
    r: &StopReport,
    elapsed: Duration,
    (steering, sharing): (&str, &[u32]),
) -> String {
    let drops = |c: &PortCounters| {
        let mut m = serde_json::Map::new();
        for (reason, n) in DropReason::ALL.iter().zip(c.dropped) {
            m.insert(reason.name().into(), n.into());
        }
        serde_json::Value::Object(m)
    };
    let counters = |c: &PortCounters| {
        let mut v = serde_json::json!({ "dropped": c.dropped_total(), "dropped_by_reason": drops(c) });
        for (name, n) in PortCounters::TRAFFIC.into_iter().zip(c.traffic()) {
            v[name] = n.into();
        }
        v
    };
    let port_rows: Vec<_> = ports
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut c = PortCounters::default();
            for w in &r.workers {
                if let Some(p) = w.ports.get(i) {
                    c.add(p);
                }
            }
            let d = r.ports.get(i).copied().unwrap_or_default();
            let mut v = counters(&c);
            v["name"] = name.as_str().into();
            v["driver"] = serde_json::json!({
                "ipackets": d.ipackets, "opackets": d.opackets, "imissed": d.imissed,
                "ierrors": d.ierrors, "oerrors": d.oerrors, "rx_nombuf": d.rx_nombuf,
            });
            v
        })
        .collect();
    let worker_rows: Vec<_> = r
        .workers
        .iter()
        .zip(lcores)
        .map(|(w, lcore)| {
            let mut v = counters(&w.total());
            v["lcore"] = (*lcore).into();
            v["ports"] = w.ports.iter().map(counters).collect();
            for (name, n) in w.lcore.named() {
                v[name] = n.into();
            }
            let mut inspect = serde_json::Map::new();
            for (name, n) in w.inspect.named() {
                inspect.insert(name.into(), n.into());
            }
            v["inspection"] = serde_json::Value::Object(inspect);
            v
        })
        .collect();
    let slow_rows: Vec<_> = r
        .slow
        .iter()
        .map(|c| {
            let mut m = serde_json::Map::new();
            for (name, n) in c.named() {
                m.insert(name.into(), n.into());
            }
            serde_json::Value::Object(m)
        })
        .collect();
    serde_json::to_string_pretty(&serde_json::json!({
        "elapsed_seconds": elapsed.as_secs_f64(),
        "steering": steering,
        "lcores_sharing_cpus": sharing,
        "ports": port_rows,
        "workers": worker_rows,
        "slow_path": slow_rows,
    }))
    .expect("a JSON value always serialises")
}
