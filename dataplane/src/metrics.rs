//! Prometheus metrics on `[metrics] listen`: the text exposition format 0.0.4,
//! or OpenMetrics 1.0 when the scraper's `Accept` asks for it, at `/metrics`.
//!
//! Off the packet path: the control thread, which already reads the
//! counters the lcores publish (atomics each lcore writes and nobody locks)
//! and writes every event, makes a [`Snapshot`] of them a few times a second;
//! a thread of its own, pinned to a CPU no worker uses, answers each scrape
//! from the latest snapshot. A scrape reads nothing a worker writes, so no
//! scrape, however many or slow, can slow a worker. The server holds at most
//! [`MAX_CONNECTIONS`] connections at once, each for at most [`DEADLINE`]
//! (beyond that many, the oldest is closed), so a flood of them is bounded
//! in memory and in time, and a scraper that completes its request promptly
//! is answered through one.
//!
//! Sessions by action and reason code, and per rule, are counted from the
//! events themselves as they are written, so that they equal what the event
//! log says. The latencies (from a flow's first packet to its decision; the
//! slow path's handshakes and first plaintext byte) are HdrHistograms each
//! lcore records as it makes its events and publishes every
//! [`LATENCY_PUBLISH_NS`] (trying a lock it shares with nobody but the
//! snapshot maker, never waiting for it); the snapshot merges them.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::stats::{DropReason, InspectCounters, LcoreCounters, PortCounters, SlowPathCounters, WorkerCounters};
use hdrhistogram::Histogram;
use tlsgate_core::event::SessionEvent;

/// How often an lcore adds its latencies to its published copy.
pub const LATENCY_PUBLISH_NS: u64 = 100_000_000;

/// Connections the metrics server holds at once.
pub const MAX_CONNECTIONS: usize = 64;

/// How long a connection may take, from accept to the last byte of the answer.
pub const DEADLINE: Duration = Duration::from_secs(5);

/// Upper bounds of the latency histograms' buckets, in seconds.
const BUCKETS: [f64; 17] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How a metric family is typed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

/// One metric family: its samples, each with its labels.
#[derive(Clone, Debug)]
pub struct Family {
    /// Name (counters end in `_total`).
    pub name: String,
    /// What it measures.
    pub help: String,
    /// Its type.
    pub kind: Kind,
    /// (labels, value); for a histogram, the sample names' suffixes are in
    /// the labels' last pair `("__suffix", ...)`.
    pub samples: Vec<(Vec<(String, String)>, f64)>,
}

/// Everything a scrape shows.
pub type Snapshot = Arc<Vec<Family>>;

/// One latency's HdrHistogram (ns, 1 µs to an hour, 2 significant digits:
/// 27 KiB, so that an lcore merges it into its published copy in
/// microseconds) and its exact sum.
#[derive(Clone)]
pub struct Latency {
    h: Histogram<u64>,
    sum_ns: u128,
}

impl Default for Latency {
    fn default() -> Self {
        Latency { h: Histogram::new_with_bounds(1_000, 3_600_000_000_000, 2).expect("valid bounds"), sum_ns: 0 }
    }
}

impl Latency {
    fn record(&mut self, ns: u64) {
        let ns = ns.max(1);
        if self.h.record(ns).is_ok() {
            self.sum_ns += u128::from(ns);
        }
    }

    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.h.len()
    }

    fn add(&mut self, other: &Latency) {
        // Same bounds on both sides, so this cannot fail.
        if self.h.add(&other.h).is_ok() {
            self.sum_ns += other.sum_ns;
        }
    }

    fn clear(&mut self) {
        self.h.reset();
        self.sum_ns = 0;
    }

    /// As a Prometheus histogram family.
    fn family(&self, name: &str, help: &str) -> Family {
        let mut f = family(name, help, Kind::Histogram);
        for b in BUCKETS {
            let n = self.h.count_between(0, (b * 1e9) as u64);
            f.samples.push((vec![("le".into(), format!("{b}")), ("__suffix".into(), "_bucket".into())], n as f64));
        }
        let total = self.h.len() as f64;
        f.samples.push((vec![("le".into(), "+Inf".into()), ("__suffix".into(), "_bucket".into())], total));
        f.samples.push((vec![("__suffix".into(), "_sum".into())], self.sum_ns as f64 / 1e9));
        f.samples.push((vec![("__suffix".into(), "_count".into())], total));
        f
    }
}

/// The latencies an lcore measures of the sessions it logs: a worker, the
/// decision's; a slow-path lcore, its handshakes' and first plaintext's.
/// Recorded as each event is made, so that events lost on a full ring are
/// in the histograms still.
#[derive(Clone, Default)]
pub struct Latencies {
    decision: Latency,
    server_handshake: Latency,
    client_handshake: Latency,
    first_plaintext: Latency,
}

impl Latencies {
    /// Records what `ev` measured.
    pub fn record(&mut self, ev: &SessionEvent) {
        if ev.started_ns > 0 && ev.timestamp_ns >= ev.started_ns {
            self.decision.record(ev.timestamp_ns - ev.started_ns);
        }
        if let Some(d) = &ev.decrypt {
            for (l, v) in [
                (&mut self.server_handshake, d.server_handshake_ns),
                (&mut self.client_handshake, d.client_handshake_ns),
                (&mut self.first_plaintext, d.first_plaintext_ns),
            ] {
                if let Some(ns) = v {
                    l.record(ns);
                }
            }
        }
    }

    /// Adds `other`'s values.
    pub fn add(&mut self, other: &Latencies) {
        self.decision.add(&other.decision);
        self.server_handshake.add(&other.server_handshake);
        self.client_handshake.add(&other.client_handshake);
        self.first_plaintext.add(&other.first_plaintext);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.decision.count() == 0
            && self.server_handshake.count() == 0
            && self.client_handshake.count() == 0
            && self.first_plaintext.count() == 0
    }

    /// The decision latencies.
    pub fn decision(&self) -> &Latency {
        &self.decision
    }

    fn clear(&mut self) {
        self.decision.clear();
        self.server_handshake.clear();
        self.client_handshake.clear();
        self.first_plaintext.clear();
    }
}

/// An lcore's latencies as published: what it recorded up to its last
/// publication. The lcore only ever tries the lock; when a scrape holds it,
/// the lcore keeps its values and adds them at its next publication, so a
/// scrape never makes an lcore wait.
#[derive(Default)]
pub struct SharedLatencies(Mutex<Latencies>);

impl SharedLatencies {
    /// Adds `local` (the owning lcore's values since its last publication)
    /// and empties it; when the lock is taken, leaves `local` for next time.
    pub fn publish(&self, local: &mut Latencies) {
        if local.is_empty() {
            return;
        }
        if let Ok(mut shared) = self.0.try_lock() {
            shared.add(local);
            local.clear();
        }
    }

    /// Adds what is published to `total` (any thread but the owner's).
    pub fn add_to(&self, total: &mut Latencies) {
        if let Ok(shared) = self.0.lock() {
            total.add(&shared);
        }
    }
}

/// Session counts from the events, as the control thread writes them (so
/// that they equal what the event log says).
#[derive(Default)]
pub struct Tally {
    sessions: BTreeMap<(String, String), u64>,
    rules: BTreeMap<String, u64>,
    monitors: BTreeMap<String, u64>,
    dns_rewritten: u64,
}

impl Tally {
    /// Counts one event.
    pub fn record(&mut self, ev: &SessionEvent) {
        if ev.dns.is_some() {
            self.dns_rewritten += 1;
            return;
        }
        let o = &ev.outcome;
        *self.sessions.entry((o.carried_out.name().to_string(), o.cause.code().to_string())).or_default() += 1;
        if let Some(rule) = &o.rule {
            *self.rules.entry(rule.clone()).or_default() += 1;
        }
        for m in &o.monitor_rules {
            *self.monitors.entry(m.clone()).or_default() += 1;
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn family(name: &str, help: &str, kind: Kind) -> Family {
    Family { name: name.into(), help: help.into(), kind, samples: Vec::new() }
}

/// The snapshot of the counters the lcores published and of what the
/// sessions' events say: counted as written (`Tally`), timed as made (`Latencies`).
pub fn snapshot(
    ports: &[String],
    workers: &[WorkerCounters],
    worker_lcores: &[u32],
    slow: &[SlowPathCounters],
    slow_lcores: &[u32],
    (tally, latencies): (&Tally, &Latencies),
    uptime: Duration,
) -> Snapshot {
    let mut out = Vec::new();
    let mut up = family("tlsgate_up", "1 while tlsgate runs", Kind::Gauge);
    up.samples.push((Vec::new(), 1.0));
    out.push(up);
    let mut t = family("tlsgate_uptime_seconds", "Seconds since the data plane started", Kind::Gauge);
    t.samples.push((Vec::new(), uptime.as_secs_f64()));
    out.push(t);

    // Ports, summed over the workers.
    let mut per_port = vec![PortCounters::default(); ports.len()];
    for w in workers {
        for (i, p) in w.ports.iter().enumerate().take(ports.len()) {
            per_port[i].add(p);
        }
    }
    let mut packets =
        family("tlsgate_port_packets_total", "Packets received (rx) and sent (tx) by each port", Kind::Counter);
    let mut bytes = family("tlsgate_port_bytes_total", "Bytes received (rx) and sent (tx) by each port", Kind::Counter);
    let mut dropped =
        family("tlsgate_port_dropped_total", "Packets received by each port and dropped, by reason", Kind::Counter);
    for (name, c) in ports.iter().zip(&per_port) {
        for (dir, p, b) in [("rx", c.rx_packets, c.rx_bytes), ("tx", c.tx_packets, c.tx_bytes)] {
            packets.samples.push((labels(&[("port", name), ("direction", dir)]), p as f64));
            bytes.samples.push((labels(&[("port", name), ("direction", dir)]), b as f64));
        }
        for r in DropReason::ALL {
            dropped.samples.push((labels(&[("port", name), ("reason", r.name())]), c.dropped[r as usize] as f64));
        }
    }
    out.extend([packets, bytes, dropped]);

    // Every inspection, worker-loop and slow-path counter, per lcore, named
    // as declared (a `_now` is a gauge: how many at the moment).
    let lcore = |lcores: &[u32], i: usize| lcores.get(i).map_or(i.to_string(), |l| l.to_string());
    let per_lcore = |out: &mut Vec<Family>,
                     prefix: &str,
                     label: &str,
                     names: &[&str],
                     help: &[&str],
                     rows: Vec<(String, Vec<u64>)>| {
        for (k, (name, help)) in names.iter().zip(help).enumerate() {
            let gauge = name.ends_with("_now");
            let full = if gauge { format!("{prefix}{name}") } else { format!("{prefix}{name}_total") };
            let mut f = family(&full, help.trim(), if gauge { Kind::Gauge } else { Kind::Counter });
            for (l, values) in &rows {
                f.samples.push((labels(&[(label, l)]), values[k] as f64));
            }
            out.push(f);
        }
    };
    let rows =
        workers.iter().enumerate().map(|(i, w)| (lcore(worker_lcores, i), w.inspect.to_array().to_vec())).collect();
    per_lcore(&mut out, "tlsgate_inspect_", "worker", &InspectCounters::NAMES, &InspectCounters::HELP, rows);
    let rows =
        workers.iter().enumerate().map(|(i, w)| (lcore(worker_lcores, i), w.lcore.to_array().to_vec())).collect();
    per_lcore(&mut out, "tlsgate_worker_", "worker", &LcoreCounters::NAMES, &LcoreCounters::HELP, rows);
    let rows = slow.iter().enumerate().map(|(i, c)| (lcore(slow_lcores, i), c.to_array().to_vec())).collect();
    per_lcore(&mut out, "tlsgate_slowpath_", "slowpath", &SlowPathCounters::NAMES, &SlowPathCounters::HELP, rows);

    // Sessions, from the events.
    let mut sessions = family(
        "tlsgate_sessions_total",
        "Sessions logged, by the action carried out and the reason code",
        Kind::Counter,
    );
    for ((action, reason), n) in &tally.sessions {
        sessions.samples.push((labels(&[("action", action), ("reason_code", reason)]), *n as f64));
    }
    let mut rules = family("tlsgate_rule_sessions_total", "Sessions decided by each rule", Kind::Counter);
    for (rule, n) in &tally.rules {
        rules.samples.push((labels(&[("rule", rule)]), *n as f64));
    }
    let mut monitors = family("tlsgate_rule_monitor_hits_total", "Sessions each monitor rule held for", Kind::Counter);
    for (rule, n) in &tally.monitors {
        monitors.samples.push((labels(&[("rule", rule)]), *n as f64));
    }
    let mut dns = family("tlsgate_dns_rewritten_total", "DNS answers logged as rewritten without ECH", Kind::Counter);
    dns.samples.push((Vec::new(), tally.dns_rewritten as f64));
    out.extend([sessions, rules, monitors, dns]);

    out.push(latencies.decision.family(
        "tlsgate_decision_latency_seconds",
        "Time from a flow's first packet to its decision (sessions the workers decided)",
    ));
    out.push(latencies.server_handshake.family(
        "tlsgate_slowpath_server_handshake_seconds",
        "Decrypted sessions: from the takeover to the server's certificate (the handshake toward the server)",
    ));
    out.push(latencies.client_handshake.family(
        "tlsgate_slowpath_client_handshake_seconds",
        "Decrypted sessions: from the server's certificate to both handshakes complete (toward the client)",
    ));
    out.push(latencies.first_plaintext.family(
        "tlsgate_slowpath_first_plaintext_seconds",
        "Decrypted sessions: from the takeover to the first plaintext byte relayed",
    ));
    Arc::new(out)
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

/// The snapshot as text: Prometheus 0.0.4, or OpenMetrics 1.0.
pub fn render(s: &[Family], openmetrics: bool) -> String {
    let mut out = String::with_capacity(64 * 1024);
    for f in s {
        // OpenMetrics names a counter family without its `_total`.
        let family_name = match (openmetrics, f.kind) {
            (true, Kind::Counter) => f.name.strip_suffix("_total").unwrap_or(&f.name),
            _ => &f.name,
        };
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(out, "# HELP {family_name} {}", escape(&f.help));
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        for (labels, value) in &f.samples {
            let suffix = labels.iter().find(|(k, _)| k == "__suffix").map_or("", |(_, v)| v.as_str());
            let shown: Vec<String> =
                labels.iter().filter(|(k, _)| k != "__suffix").map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let name = format!("{}{suffix}", f.name);
            if shown.is_empty() {
                let _ = writeln!(out, "{name} {value}");
            } else {
                let _ = writeln!(out, "{name}{{{}}} {value}", shown.join(","));
            }
        }
    }
    if openmetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// The metrics endpoint: a listening socket and the thread that answers it.
pub struct MetricsServer {
    latest: Arc<Mutex<Snapshot>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl MetricsServer {
    /// Listens on `addr` (the error says why it cannot: an address in use,
    /// say) and starts answering scrapes, on CPU `cpu` if given.
    pub fn start(addr: SocketAddr, cpu: Option<usize>) -> Result<MetricsServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("metrics: cannot listen on {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| format!("metrics: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| format!("metrics: {e}"))?;
        let latest: Arc<Mutex<Snapshot>> = Arc::new(Mutex::new(Arc::new(Vec::new())));
        let stop = Arc::new(AtomicBool::new(false));
        let (l, s) = (latest.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("tlsgate-metrics".into())
            .spawn(move || {
                if let Some(cpu) = cpu {
                    core_affinity::set_for_current(core_affinity::CoreId { id: cpu });
                }
                serve(&listener, &l, &s)
            })
            .map_err(|e| format!("metrics: cannot start its thread: {e}"))?;
        Ok(MetricsServer { latest, stop, thread: Some(thread), addr })
    }

    /// What the next scrapes show.
    pub fn publish(&self, s: Snapshot) {
        if let Ok(mut l) = self.latest.lock() {
            *l = s;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One scrape in progress: the request read so far, then the answer written so far.
struct Conn {
    stream: TcpStream,
    opened: Instant,
    request: Vec<u8>,
    /// The answer's head and body, and how much of them is written.
    answer: Option<(Vec<u8>, Arc<String>, usize)>,
}

/// What the latest snapshot renders to, in each format, made once per snapshot.
#[derive(Default)]
struct Rendered {
    of: Option<Snapshot>,
    text: Option<Arc<String>>,
    openmetrics: Option<Arc<String>>,
}

impl Rendered {
    fn body(&mut self, latest: &Mutex<Snapshot>, openmetrics: bool) -> Arc<String> {
        let snapshot = latest.lock().map(|s| s.clone()).unwrap_or_default();
        if !self.of.as_ref().is_some_and(|of| Arc::ptr_eq(of, &snapshot)) {
            *self = Rendered { of: Some(snapshot.clone()), ..Rendered::default() };
        }
        let slot = if openmetrics { &mut self.openmetrics } else { &mut self.text };
        slot.get_or_insert_with(|| Arc::new(render(&snapshot, openmetrics))).clone()
    }
}

/// Accepts and answers until told to stop: every socket non-blocking, at
/// most [`MAX_CONNECTIONS`] held (a new one closes the oldest), each closed
/// at its [`DEADLINE`], however slowly its peer sends or reads.
fn serve(listener: &TcpListener, latest: &Mutex<Snapshot>, stop: &AtomicBool) {
    let mut conns: VecDeque<Conn> = VecDeque::new();
    let mut rendered = Rendered::default();
    while !stop.load(Ordering::Relaxed) {
        let mut busy = false;
        while let Ok((stream, _)) = listener.accept() {
            busy = true;
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if conns.len() >= MAX_CONNECTIONS {
                conns.pop_front();
            }
            conns.push_back(Conn { stream, opened: Instant::now(), request: Vec::new(), answer: None });
        }
        let mut i = 0;
        while i < conns.len() {
            match progress(&mut conns[i], latest, &mut rendered) {
                Progress::Waiting if conns[i].opened.elapsed() < DEADLINE => i += 1,
                Progress::Moved => {
                    busy = true;
                    i += 1;
                }
                _ => {
                    conns.remove(i);
                }
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

enum Progress {
    /// Nothing to do until the peer sends or reads.
    Waiting,
    /// Bytes moved.
    Moved,
    /// Answered, or the peer went away.
    Done,
}

/// Reads what the peer sent (the request, at most 8 KiB) and writes what it will take of the answer.
fn progress(c: &mut Conn, latest: &Mutex<Snapshot>, rendered: &mut Rendered) -> Progress {
    let mut moved = false;
    if c.answer.is_none() {
        let mut buf = [0u8; 2048];
        loop {
            match c.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    moved = true;
                    c.request.extend_from_slice(&buf[..n]);
                    if c.request.len() >= 8192 {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if !c.request.windows(4).any(|w| w == b"\r\n\r\n") {
                        return if moved { Progress::Moved } else { Progress::Waiting };
                    }
                    break;
                }
                Err(_) => return Progress::Done,
            }
            if c.request.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        if c.request.is_empty() {
            return Progress::Done;
        }
        c.answer = Some(answer(&c.request, latest, rendered));
    }
    let Some((head, body, written)) = &mut c.answer else { return Progress::Done };
    loop {
        let (part, at) =
            if *written < head.len() { (head.as_slice(), *written) } else { (body.as_bytes(), *written - head.len()) };
        if at >= part.len() {
            let _ = c.stream.shutdown(std::net::Shutdown::Write);
            return Progress::Done;
        }
        match c.stream.write(&part[at..]) {
            Ok(0) => return Progress::Done,
            Ok(n) => {
                moved = true;
                *written += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return if moved { Progress::Moved } else { Progress::Waiting };
            }
            Err(_) => return Progress::Done,
        }
    }
}

/// The answer to `request`: its head and its body.
fn answer(request: &[u8], latest: &Mutex<Snapshot>, rendered: &mut Rendered) -> (Vec<u8>, Arc<String>, usize) {
    let text = String::from_utf8_lossy(request);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let accept = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("accept"))
        .map(|(_, v)| v.to_ascii_lowercase())
        .unwrap_or_default();
    let (status, kind, body) = if method != "GET" {
        ("405 Method Not Allowed", "text/plain", Arc::new("only GET\n".to_string()))
    } else if path != "/metrics" && !path.starts_with("/metrics?") {
        ("404 Not Found", "text/plain", Arc::new("tlsgate serves /metrics\n".to_string()))
    } else if accept.contains("application/openmetrics-text") {
        ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", rendered.body(latest, true))
    } else {
        ("200 OK", "text/plain; version=0.0.4; charset=utf-8", rendered.body(latest, false))
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    (head.into_bytes(), body, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_type_and_name_every_sample() {
        let mut tally = Tally::default();
        tally.sessions.insert(("block".into(), "rule_matched".into()), 3);
        tally.rules.insert("no-\"casino\"".into(), 3);
        let mut latencies = Latencies::default();
        latencies.decision.record(300_000);
        let s = snapshot(
            &["p0".into()],
            &[WorkerCounters::new(1)],
            &[1],
            &[],
            &[],
            (&tally, &latencies),
            Duration::from_secs(2),
        );
        let text = render(&s, false);
        assert!(text.contains("# TYPE tlsgate_sessions_total counter\n"), "{text}");
        assert!(text.contains("tlsgate_sessions_total{action=\"block\",reason_code=\"rule_matched\"} 3\n"));
        assert!(text.contains("tlsgate_rule_sessions_total{rule=\"no-\\\"casino\\\"\"} 3\n"));
        assert!(text.contains("tlsgate_decision_latency_seconds_bucket{le=\"0.00025\"} 0\n"));
        assert!(text.contains("tlsgate_decision_latency_seconds_bucket{le=\"0.0005\"} 1\n"));
        assert!(text.contains("tlsgate_decision_latency_seconds_count 1\n"));
        assert!(text.contains("tlsgate_port_packets_total{port=\"p0\",direction=\"rx\"} 0\n"));
        assert!(text.contains("tlsgate_inspect_sessions_total{worker=\"1\"} 0\n"));
        // Every sample line belongs to the family typed just before it.
        let mut family = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                family = rest.split_whitespace().next().unwrap().to_string();
            } else if !line.starts_with('#') {
                assert!(line.starts_with(&family), "{line} outside {family}");
            }
        }
        let om = render(&s, true);
        assert!(om.contains("# TYPE tlsgate_sessions counter\n") && om.ends_with("# EOF\n"), "{om}");
        assert!(om.contains("tlsgate_sessions_total{action=\"block\",reason_code=\"rule_matched\"} 3\n"));
    }
    fn get(addr: SocketAddr) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut body = String::new();
        c.read_to_string(&mut body).unwrap();
        body
    }

    #[test]
    fn a_flood_of_idle_connections_is_bounded_and_a_prompt_scrape_gets_through() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), None).unwrap();
        let tally = Tally::default();
        let latencies = Latencies::default();
        server.publish(snapshot(&[], &[], &[], &[], &[], (&tally, &latencies), Duration::ZERO));
        let idle: Vec<TcpStream> = (0..MAX_CONNECTIONS * 3).map(|_| TcpStream::connect(server.addr).unwrap()).collect();
        let answer = get(server.addr);
        assert!(answer.starts_with("HTTP/1.1 200 OK\r\n") && answer.contains("\ntlsgate_up 1\n"), "{answer}");
        // The oldest were closed to make room: they read end of file.
        let mut first = &idle[0];
        first.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 1];
        assert_eq!(first.read(&mut b).unwrap(), 0);
        // A request sent a byte at a time is answered too.
        let mut slow = TcpStream::connect(server.addr).unwrap();
        for byte in b"GET /nothing HTTP/1.0\r\n\r\n" {
            slow.write_all(&[*byte]).unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        let mut text = String::new();
        slow.read_to_string(&mut text).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"), "{text}");
    }

    #[test]
    fn an_lcore_keeps_its_latencies_while_the_published_copy_is_read() {
        let shared = SharedLatencies::default();
        let mut local = Latencies::default();
        local.decision.record(2_000_000);
        {
            let _reader = shared.0.lock().unwrap();
            shared.publish(&mut local);
            assert_eq!(local.decision().count(), 1, "kept for the next publication");
        }
        shared.publish(&mut local);
        assert!(local.is_empty());
        let mut total = Latencies::default();
        shared.add_to(&mut total);
        shared.add_to(&mut total);
        assert_eq!(total.decision().count(), 2);
    }
}

#[cfg(test)]
mod readme {
    use super::*;

    /// The README's table of metrics, as the snapshot makes them.
    fn table() -> String {
        let s = snapshot(
            &["PORT".into()],
            &[WorkerCounters::new(1)],
            &[1],
            &[SlowPathCounters::default()],
            &[2],
            (&Tally::default(), &Latencies::default()),
            Duration::ZERO,
        );
        let mut t = String::from("| metric | type | labels | what it measures |\n|---|---|---|---|\n");
        for f in s.iter() {
            let mut names: Vec<&str> = Vec::new();
            for (labels, _) in &f.samples {
                for (k, _) in labels {
                    if k != "__suffix" && k != "le" && !names.contains(&k.as_str()) {
                        names.push(k);
                    }
                }
            }
            let labels = match (f.name.as_str(), names.is_empty()) {
                ("tlsgate_sessions_total", _) => "`action`, `reason_code`".to_string(),
                ("tlsgate_rule_sessions_total" | "tlsgate_rule_monitor_hits_total", _) => "`rule`".to_string(),
                (_, true) => String::new(),
                _ => names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
            };
            let kind = match f.kind {
                Kind::Counter => "counter",
                Kind::Gauge => "gauge",
                Kind::Histogram => "histogram (`le`)",
            };
            t.push_str(&format!("| `{}` | {kind} | {labels} | {} |\n", f.name, f.help.replace('|', "\\|")));
        }
        t
    }

    /// `TLSGATE_PRINT_METRICS_TABLE=1 cargo test --release -p tlsgate-dataplane --lib readme` prints it.
    #[test]
    fn the_readme_lists_every_metric_as_the_snapshot_makes_it() {
        let t = table();
        if std::env::var_os("TLSGATE_PRINT_METRICS_TABLE").is_some() {
            println!("{t}");
        }
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(&t),
            "README.md's metrics table is not the one the code makes; print it with TLSGATE_PRINT_METRICS_TABLE=1"
        );
    }
}
