//! The control thread (main lcore): starts the EAL and the data plane, prints
//! rates while it runs, stops on SIGINT/SIGTERM (or when a replay is done) and
//! prints the final counters.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_config::{ConfigError, Settings};
use tlsgate_dataplane::dpdk::{telemetry, Eal, EalError};
use tlsgate_dataplane::runtime::{Dataplane, StartError, StartOptions};
use tlsgate_dataplane::stats::{SlowPathCounters, WorkerCounters};

use tlsgate_config::policy::Policy;
use tlsgate_core::escalate::SlowRecord;
use tlsgate_core::event::SessionEvent;
use tlsgate_slowpath::lcore::{check_policy_objects, Interceptor};

use crate::events::{EventLog, Summary};
use crate::plaintext::PlaintextOut;
use crate::report::{counters_json, print_final, RateLine};
use tlsgate_dataplane::metrics::{snapshot, MetricsServer, Tally};

/// Why a command failed, and the exit status it gives.
#[derive(Debug)]
pub enum Failure {
    /// Bad settings or arguments: exit 2.
    Config(ConfigError),
    /// EAL would not start: exit 1.
    Eal(EalError),
    /// Ports or workers would not start: exit 1.
    Start(StartError),
    /// Anything else at run time: exit 1.
    Runtime(String),
}

impl Failure {
    /// Process exit status.
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Config(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Config(e) => write!(f, "{e}"),
            Failure::Eal(e) => write!(f, "{e}"),
            Failure::Start(e) => write!(f, "{e}"),
            Failure::Runtime(e) => f.write_str(e),
        }
    }
}

/// What the operator asked to see besides the final table.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Seconds between rate lines.
    pub stats_interval: Option<f64>,
    /// Where to write the final counters as JSON.
    pub counters_json: Option<PathBuf>,
    /// Where to append session events (JSON lines).
    pub events: Option<PathBuf>,
    /// Set (by SIGUSR1) when the log files are to be reopened.
    pub reopen: Option<Arc<AtomicBool>>,
}

/// `tlsgate run --config FILE`.
pub fn run(config: &Path, mut out: Output) -> Result<(), Failure> {
    let settings = Settings::load(config).map_err(Failure::Config)?;
    let policy = match settings.policy_path() {
        Some(p) => {
            let policy = Policy::load(&p).map_err(Failure::Config)?;
            check_policy_objects(&policy).map_err(|e| Failure::Config(ConfigError::file(&p, e)))?;
            publish_policy(&p, &policy);
            Some(Arc::new(policy))
        }
        None => {
            telemetry::publish(
                "/tlsgate/policy",
                vec![("file".into(), telemetry::TelValue::Text("none: a plain bridge".into()))],
            );
            None
        }
    };
    if out.events.is_none() {
        out.events = settings.events_path();
    }
    let stop = stop_flag()?;
    let hangup = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hangup.clone())
        .map_err(|e| Failure::Runtime(format!("cannot install a handler for SIGHUP: {e}")))?;
    let reopen = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGUSR1, reopen.clone())
        .map_err(|e| Failure::Runtime(format!("cannot install a handler for SIGUSR1: {e}")))?;
    out.reopen = Some(reopen);
    let policy_path = settings.policy_path();
    let slow_path = (!settings.slowpath.lcores.get_ref().is_empty()).then(|| {
        Arc::new(
            Interceptor::new(
                &settings.slowpath,
                &settings.flows,
                settings.keylog_path().is_some(),
                settings.decrypted_pcap_path().is_some(),
            )
            .with_mirror(settings.mirror.port.is_some()),
        ) as Arc<dyn tlsgate_dataplane::runtime::SlowPath>
    });
    let opts = StartOptions { policy, replay_times: None, slow_path };
    run_until(&settings, opts, &out, |dp| {
        if hangup.swap(false, Ordering::Relaxed) {
            reload(dp, policy_path.as_deref());
        }
        stop.load(Ordering::Relaxed)
    })?;
    Ok(())
}

/// SIGHUP: loads the policy file again and, if it is valid, puts it in force;
/// if not, says why and keeps the policy in force.
fn reload(dp: &Dataplane, path: Option<&Path>) {
    let Some(path) = path else {
        eprintln!("tlsgate: SIGHUP ignored: the settings name no policy file");
        return;
    };
    match Policy::load(path).map_err(|e| e.to_string()).and_then(|p| {
        check_policy_objects(&p).map_err(|e| format!("{}: {e}", path.display()))?;
        let rules = p.rules().len();
        publish_policy(path, &p);
        dp.reload_policy(Arc::new(p)).map(|()| rules)
    }) {
        Ok(rules) => {
            eprintln!(
                "tlsgate: policy reloaded from {} ({rules} rules); new sessions are judged by it, flows keep their verdicts",
                path.display()
            );
            sd_notify(&format!("STATUS=policy reloaded ({rules} rules)"));
        }
        Err(e) => eprintln!("tlsgate: policy not reloaded, the one in force stays: {e}"),
    }
}

/// `tlsgate policy check FILE`: validates and prints what the policy will do.
pub fn policy_check(file: &Path) -> Result<(), Failure> {
    let policy = Policy::load(file).map_err(Failure::Config)?;
    println!("{}: valid", file.display());
    println!("{}", policy.summary());
    Ok(())
}

/// Starts the data plane from `settings` and runs until `done` says so (it is
/// asked every 10 ms with the data plane), then stops it and prints counters.
pub fn run_until(
    settings: &Settings,
    opts: StartOptions,
    out: &Output,
    mut done: impl FnMut(&Dataplane) -> bool,
) -> Result<Summary, Failure> {
    if let Some(s) = out.stats_interval {
        if !(s.is_finite() && s > 0.0) {
            return Err(Failure::Config(ConfigError::at(
                None,
                None,
                None,
                Some("--stats-interval"),
                "must be a positive number of seconds",
            )));
        }
    }
    let mut log = EventLog::open(out.events.as_deref()).map_err(|e| {
        Failure::Runtime(format!(
            "cannot open the event log {}: {e}",
            out.events.as_deref().unwrap_or(Path::new("")).display()
        ))
    })?;
    if let Some(socket) = &settings.events.syslog {
        log = log
            .with_syslog(socket)
            .map_err(|e| Failure::Runtime(format!("cannot reach syslog at {}: {e}", socket.display())))?;
    }
    let mut plain = PlaintextOut::open(settings.keylog_path().as_deref(), settings.decrypted_pcap_path().as_deref())
        .map_err(Failure::Runtime)?;
    let mut reopen_error: Option<String> = None;
    // The metrics endpoint before anything else starts: an address in use
    // stops the start with one line, and nothing half started.
    let metrics = match settings.metrics.address() {
        Some(addr) => Some(MetricsServer::start(addr, metrics_cpu(settings)).map_err(Failure::Runtime)?),
        None => None,
    };
    if let Some(m) = &metrics {
        log.summary.metrics = Some(Tally::default());
        eprintln!("tlsgate: metrics on http://{}/metrics", m.addr);
    }
    let eal = Eal::init(&settings.eal_args()).map_err(Failure::Eal)?;
    let mut dp = Dataplane::start(&eal, settings, opts).map_err(Failure::Start)?;
    let mut write_error: Option<String> = None;
    let mut write = |log: &mut EventLog, ev: &SessionEvent| {
        if let Err(e) = log.write(ev) {
            write_error.get_or_insert_with(|| format!("writing the event log: {e}"));
        }
    };
    let mut plain_error: Option<String> = None;
    let mut take_record = |log: &mut EventLog, plain: &mut PlaintextOut, r: &SlowRecord| match r {
        SlowRecord::Event(ev) => {
            if let Err(e) = log.write(ev) {
                plain_error.get_or_insert_with(|| format!("writing the event log: {e}"));
            }
        }
        SlowRecord::KeyLog(lines) => {
            if let Err(e) = plain.keylog(lines) {
                plain_error.get_or_insert_with(|| format!("writing the key log: {e}"));
            }
        }
        SlowRecord::Decrypted(frames) => {
            if let Err(e) = plain.frames(frames) {
                plain_error.get_or_insert_with(|| format!("writing the decrypted pcap: {e}"));
            }
        }
    };
    let names: Vec<String> = dp.ports().iter().map(|p| p.name().to_owned()).collect();
    let lcores = settings.workers.lcores.get_ref().clone();
    let slow_lcores = dp.slow_lcores().to_vec();
    let slow_text = if slow_lcores.is_empty() {
        String::new()
    } else {
        format!(", decrypting on slow-path lcores {slow_lcores:?}")
    };
    let sharing = dp.lcores_sharing_cpus();
    let sharing_text = if sharing.is_empty() {
        String::new()
    } else {
        format!("; lcores {sharing:?} share CPUs, so they yield when idle instead of spinning (give each its own core)")
    };
    eprintln!(
        "tlsgate: bridging {} with {} worker(s) on lcores {:?} ({}){slow_text}{sharing_text}; mbufs on {}",
        settings
            .pairs
            .iter()
            .map(|p| format!("{} <-> {}", p.a.get_ref(), p.b.get_ref()))
            .collect::<Vec<_>>()
            .join(", "),
        lcores.len(),
        lcores,
        dp.steering().name(),
        dp.pool_handler()
    );
    let started = Instant::now();
    for (cmd, help) in TELEMETRY {
        if let Err(e) = telemetry::register(cmd, help) {
            eprintln!("tlsgate: {e}");
        }
    }
    // The workers are up and forwarding: a service manager may count us started.
    sd_notify(&format!("READY=1\nSTATUS=bridging with {} worker(s)", lcores.len()));
    let mut rates = out.stats_interval.map(|s| RateLine::new(Duration::from_secs_f64(s)));
    let mut published: Option<Instant> = None;
    while !done(&dp) {
        std::thread::sleep(Duration::from_millis(10));
        dp.drain_events(|ev| write(&mut log, &ev));
        dp.drain_slow_records(|r| take_record(&mut log, &mut plain, &r));
        let _ = plain.flush();
        let _ = log.flush();
        // SIGUSR1 (logrotate's postrotate): everything drained so far is in the old files.
        if out.reopen.as_ref().is_some_and(|r| r.swap(false, Ordering::Relaxed)) {
            let reopened = log.reopen().map_err(|e| e.to_string()).and_then(|()| plain.reopen());
            match reopened {
                Ok(()) => eprintln!("tlsgate: log files reopened"),
                Err(e) => {
                    reopen_error.get_or_insert_with(|| format!("reopening the log files: {e}"));
                }
            }
        }
        if let Some(r) = &mut rates {
            r.tick(&dp.counters());
        }
        // Fresh snapshots for the scrapes and the telemetry socket four times a second.
        if published.is_none_or(|t| t.elapsed() >= METRICS_EVERY) {
            let (workers, slow) = (dp.counters(), dp.slow_counters());
            if let (Some(m), Some(tally)) = (&metrics, &log.summary.metrics) {
                let latencies = dp.latencies();
                m.publish(snapshot(
                    &names,
                    &workers,
                    &lcores,
                    &slow,
                    &slow_lcores,
                    (tally, &latencies),
                    started.elapsed(),
                ));
            }
            publish_telemetry(&workers, &slow, log.summary.sessions, started.elapsed());
            published = Some(Instant::now());
        }
    }
    let dp_steering = dp.steering().name();
    let dp_sharing = dp.lcores_sharing_cpus().to_vec();
    sd_notify("STOPPING=1");
    let report = dp.stop();
    for ev in &report.events {
        write(&mut log, ev);
    }
    for r in &report.slow_records {
        take_record(&mut log, &mut plain, r);
    }
    let _ = log.flush();
    if let Err(e) = plain.finish() {
        plain_error.get_or_insert_with(|| format!("closing the plaintext outputs: {e}"));
    }
    let elapsed = started.elapsed();
    print_final(&names, &lcores, &report, elapsed);
    drop(eal);
    if let Some(path) = &out.counters_json {
        let json = counters_json(&names, &lcores, &report, elapsed, (dp_steering, &dp_sharing));
        std::fs::write(path, json).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
    }
    if report.exit_codes.iter().any(|&c| c != 0) {
        return Err(Failure::Runtime("a worker failed (see above); counters are as it left them".into()));
    }
    if let Some(e) = write_error.or(plain_error).or(reopen_error) {
        return Err(Failure::Runtime(e));
    }
    Ok(log.summary)
}

/// Tells the service manager (systemd's `Type=notify`) how things stand:
/// a datagram to `$NOTIFY_SOCKET` (a path, or `@` and an abstract name), if
/// one is set; nothing otherwise.
pub fn sd_notify(state: &str) {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes()),
        None => SocketAddr::from_pathname(&path),
    };
    if let (Ok(sock), Ok(addr)) = (UnixDatagram::unbound(), addr) {
        let _ = sock.send_to_addr(state.as_bytes(), &addr);
    }
}

/// tlsgate's commands on the EAL's telemetry socket.
const TELEMETRY: [(&str, &str); 3] = [
    ("/tlsgate/stats", "tlsgate's totals: ports, drops by reason, inspection, slow path. Takes no parameters."),
    ("/tlsgate/flows", "Flows the workers tracked, forgot, expired, per worker. Takes no parameters."),
    ("/tlsgate/policy", "The decryption policy in force: its file, default action and rules. Takes no parameters."),
];

/// The counters as `/tlsgate/stats` and `/tlsgate/flows` answer them.
fn publish_telemetry(workers: &[WorkerCounters], slow: &[SlowPathCounters], logged: u64, uptime: Duration) {
    use telemetry::TelValue::U64;
    use tlsgate_dataplane::stats::{DropReason, InspectCounters, PortCounters};
    let mut total = PortCounters::default();
    let mut inspect = InspectCounters::default();
    for w in workers {
        total.add(&w.total());
        inspect.add(&w.inspect);
    }
    let mut stats = vec![
        ("uptime_s".to_string(), U64(uptime.as_secs())),
        ("rx_packets".into(), U64(total.rx_packets)),
        ("rx_bytes".into(), U64(total.rx_bytes)),
        ("tx_packets".into(), U64(total.tx_packets)),
        ("tx_bytes".into(), U64(total.tx_bytes)),
        ("dropped".into(), U64(total.dropped_total())),
        ("events_logged".into(), U64(logged)),
    ];
    stats.extend(DropReason::ALL.iter().map(|r| (format!("dropped_{}", r.name()), U64(total.dropped[*r as usize]))));
    stats.extend(inspect.named().map(|(n, v)| (n.to_string(), U64(v))));
    let mut s = SlowPathCounters::default();
    for c in slow {
        s.add(c);
    }
    stats.extend(s.named().map(|(n, v)| (format!("slowpath_{n}"), U64(v))));
    telemetry::publish("/tlsgate/stats", stats);
    let keys = ["flows", "quic_flows", "quic_reconnects", "midstream", "evicted", "expired", "table_full"];
    let mut flows: Vec<(String, telemetry::TelValue)> =
        inspect.named().filter(|(n, _)| keys.contains(n)).map(|(n, v)| (n.to_string(), U64(v))).collect();
    for (i, w) in workers.iter().enumerate() {
        flows.push((format!("worker{i}_flows"), U64(w.inspect.flows)));
        flows.push((format!("worker{i}_quic_flows"), U64(w.inspect.quic_flows)));
    }
    telemetry::publish("/tlsgate/flows", flows);
}

/// The policy as `/tlsgate/policy` answers it.
fn publish_policy(path: &Path, p: &Policy) {
    use telemetry::TelValue::{Text, U64};
    let mut v = vec![
        ("file".to_string(), Text(path.display().to_string())),
        ("default_action".into(), Text(p.default_action().name().to_string())),
        ("rules".into(), U64(p.rules().len() as u64)),
    ];
    for (i, r) in p.rules().iter().enumerate().take(250) {
        let state = if r.enabled { "" } else { " (disabled)" };
        v.push((format!("rule{}", i + 1), Text(format!("{}: {}{state}", r.name, r.action.name()))));
    }
    telemetry::publish("/tlsgate/policy", v);
}

/// How often the metrics' snapshot is made anew.
const METRICS_EVERY: Duration = Duration::from_millis(250);

/// The CPU the metrics thread runs on: the lowest that no worker or
/// slow-path lcore uses (by default an lcore runs on the CPU of its number).
fn metrics_cpu(settings: &Settings) -> Option<usize> {
    let busy: Vec<usize> = settings
        .workers
        .lcores
        .get_ref()
        .iter()
        .chain(settings.slowpath.lcores.get_ref())
        .map(|&l| l as usize)
        .collect();
    core_affinity::get_core_ids()?.into_iter().map(|c| c.id).find(|id| !busy.contains(id))
}

/// A flag that SIGINT and SIGTERM set.
fn stop_flag() -> Result<Arc<AtomicBool>, Failure> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|e| Failure::Runtime(format!("cannot install a handler for signal {sig}: {e}")))?;
    }
    Ok(flag)
}
