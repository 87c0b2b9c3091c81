//! The control thread (main lcore): starts the EAL and the data plane, prints
//! rates while it runs, stops on SIGINT/SIGTERM (or when a replay is done) and
//! prints the final counters.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tlsgate_config::{ConfigError, Settings};
use tlsgate_dataplane::dpdk::{Eal, EalError};
use tlsgate_dataplane::runtime::{Dataplane, StartError, StartOptions};

use crate::report::{counters_json, print_final, RateLine};

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
}

/// `tlsgate run --config FILE`.
pub fn run(config: &Path, out: Output) -> Result<(), Failure> {
    let settings = Settings::load(config).map_err(Failure::Config)?;
    let stop = stop_flag()?;
    run_until(&settings, StartOptions::default(), &out, |_| stop.load(Ordering::Relaxed))
}

/// Starts the data plane from `settings` and runs until `done` says so (it is
/// asked every 10 ms with the data plane), then stops it and prints counters.
pub fn run_until(
    settings: &Settings,
    opts: StartOptions,
    out: &Output,
    mut done: impl FnMut(&Dataplane) -> bool,
) -> Result<(), Failure> {
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
    let eal = Eal::init(&settings.eal_args()).map_err(Failure::Eal)?;
    let dp = Dataplane::start(&eal, settings, opts).map_err(Failure::Start)?;
    let names: Vec<String> = dp.ports().iter().map(|p| p.name().to_owned()).collect();
    let lcores = settings.workers.lcores.get_ref().clone();
    eprintln!(
        "tlsgate: bridging {} with {} worker(s) on lcores {:?} ({})",
        settings
            .pairs
            .iter()
            .map(|p| format!("{} <-> {}", p.a.get_ref(), p.b.get_ref()))
            .collect::<Vec<_>>()
            .join(", "),
        lcores.len(),
        lcores,
        dp.steering().name()
    );
    let started = Instant::now();
    let mut rates = out.stats_interval.map(|s| RateLine::new(Duration::from_secs_f64(s)));
    while !done(&dp) {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(r) = &mut rates {
            r.tick(&dp.counters());
        }
    }
    let dp_steering = dp.steering().name();
    let report = dp.stop();
    let elapsed = started.elapsed();
    print_final(&names, &lcores, &report, elapsed);
    drop(eal);
    if let Some(path) = &out.counters_json {
        let json = counters_json(&names, &lcores, &report, elapsed, dp_steering);
        std::fs::write(path, json).map_err(|e| Failure::Runtime(format!("{}: {e}", path.display())))?;
    }
    if report.exit_codes.iter().any(|&c| c != 0) {
        return Err(Failure::Runtime("a worker failed (see above); counters are as it left them".into()));
    }
    Ok(())
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
