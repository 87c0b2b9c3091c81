//! `tlsgate doctor --config FILE`: whether a `tlsgate run` with these
//! settings would start on this machine, and what to fix if not, one line a
//! check: the settings and the policy, hugepages, the PCI devices' drivers and
//! the IOMMU, the lcores, the CA certificates' dates, the log and metrics
//! destinations. `ok`, `warn` (it would start, but not as well as it could)
//! or `FAIL`; the exit status is 0 only without a `FAIL`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};

use tlsgate_config::policy::Policy;
use tlsgate_config::Settings;
use tlsgate_slowpath::lcore::check_policy_objects;

use crate::control::Failure;

/// What one check found.
enum Finding {
    Ok(String),
    Warn(String),
    Fail(String),
}

/// Runs every check, prints one line each, and fails if any failed.
pub fn doctor(config: &Path) -> Result<(), Failure> {
    let mut findings = Vec::new();
    let settings = match Settings::load(config) {
        Ok(s) => {
            findings.push(("settings", Finding::Ok(format!("{} is valid", config.display()))));
            s
        }
        Err(e) => {
            println!("FAIL settings: {e}");
            return Err(Failure::Runtime("doctor: the settings are not valid".into()));
        }
    };
    findings.push(("policy", policy(&settings)));
    findings.extend(hugepages(&settings.eal.args).into_iter().map(|f| ("hugepages", f)));
    findings.extend(pci(&settings.eal.args).into_iter().map(|f| ("pci", f)));
    findings.push(("lcores", lcores(&settings)));
    let args = settings.eal_args();
    findings.push((
        "dpdk",
        match tlsgate_dataplane::dpdk::preflight(&args) {
            Ok(()) => Finding::Ok(format!("{} is free", tlsgate_dataplane::dpdk::runtime_dir(&args).display())),
            Err(e) => Finding::Fail(e.to_string()),
        },
    ));
    findings.extend(outputs(&settings).into_iter().map(|f| ("logs", f)));
    if let Some(f) = metrics(&settings) {
        findings.push(("metrics", f));
    }
    let mut failed = 0;
    for (what, f) in &findings {
        match f {
            Finding::Ok(m) => println!("ok   {what}: {m}"),
            Finding::Warn(m) => println!("warn {what}: {m}"),
            Finding::Fail(m) => {
                failed += 1;
                println!("FAIL {what}: {m}");
            }
        }
    }
    if failed > 0 {
        return Err(Failure::Runtime(format!("doctor: {failed} check(s) failed: `tlsgate run` would not start")));
    }
    println!("tlsgate run --config {} would start", config.display());
    Ok(())
}

/// The policy loads, its keys are private and match, its CAs are CAs and in date.
fn policy(settings: &Settings) -> Finding {
    let Some(path) = settings.policy_path() else {
        return Finding::Warn("no policy file: tlsgate is a plain bridge".into());
    };
    let p = match Policy::load(&path) {
        Ok(p) => p,
        Err(e) => return Finding::Fail(e.to_string()),
    };
    if let Err(e) = check_policy_objects(&p) {
        return Finding::Fail(format!("{}: {e}", path.display()));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    for ca in p.cas() {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&ca.cert_der) {
            let (from, until) = (cert.validity().not_before.timestamp(), cert.validity().not_after.timestamp());
            if now < from || now > until {
                return Finding::Fail(format!(
                    "ca {:?} is valid from {} to {} only: clients refuse what it signs now; issue a new one",
                    ca.name,
                    cert.validity().not_before,
                    cert.validity().not_after
                ));
            }
            if until - now < 30 * 86_400 {
                return Finding::Warn(format!("ca {:?} expires on {}: renew it", ca.name, cert.validity().not_after));
            }
        }
    }
    Finding::Ok(format!("{} is valid ({} rules, {} CAs)", path.display(), p.rules().len(), p.cas().len()))
}

fn read_u64(p: &str) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// Hugepages reserved (and mounted, unless the EAL runs in memory).
fn hugepages(args: &[String]) -> Vec<Finding> {
    if args.iter().any(|a| a == "--no-huge") {
        return vec![Finding::Warn("not used (--no-huge): fine for tests, slow for traffic".into())];
    }
    let mut reserved = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/sys/kernel/mm/hugepages") {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let base = e.path();
            let n = read_u64(&base.join("nr_hugepages").to_string_lossy()).unwrap_or(0);
            let free = read_u64(&base.join("free_hugepages").to_string_lossy()).unwrap_or(0);
            if n > 0 {
                reserved.push(format!("{n} of {} ({free} free)", name.trim_start_matches("hugepages-")));
            }
        }
    }
    let mut out = Vec::new();
    if reserved.is_empty() {
        out.push(Finding::Fail(
            "none reserved: echo 1024 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (or hugepagesz=1G \
             hugepages=4 on the kernel command line)"
                .into(),
        ));
    } else {
        out.push(Finding::Ok(format!("reserved: {}", reserved.join(", "))));
    }
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mounted: Vec<&str> = mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    if !mounted.is_empty() {
        out.push(Finding::Ok(format!("mounted at {}", mounted.join(", "))));
    } else if args.iter().any(|a| a == "--in-memory") {
        out.push(Finding::Ok("not mounted, and not needed (--in-memory)".into()));
    } else {
        out.push(Finding::Fail(
            "hugetlbfs is not mounted: mount -t hugetlbfs nodev /dev/hugepages (systemd's dev-hugepages.mount), \
             or run the EAL with --in-memory"
                .into(),
        ));
    }
    out
}

/// The PCI devices the EAL is allowed (`-a`, `--allow`) exist and are bound
/// to a driver DPDK can use; vfio-pci wants an IOMMU (or its no-IOMMU mode).
fn pci(args: &[String]) -> Vec<Finding> {
    let mut devices = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = match a.as_str() {
            "-a" | "--allow" | "-w" | "--pci-whitelist" => it.next().cloned(),
            s => {
                s.strip_prefix("--allow=").or_else(|| s.strip_prefix("-a")).filter(|v| !v.is_empty()).map(str::to_owned)
            }
        };
        if let Some(v) = v {
            devices.push(v.split(',').next().unwrap_or_default().to_string());
        }
    }
    if devices.is_empty() {
        return Vec::new();
    }
    let iommu = std::fs::read_dir("/sys/kernel/iommu_groups").map(|d| d.count()).unwrap_or(0) > 0;
    let noiommu = std::fs::read_to_string("/sys/module/vfio/parameters/enable_unsafe_noiommu_mode")
        .is_ok_and(|v| v.trim() == "Y");
    let mut out = Vec::new();
    for dev in devices {
        let full = if dev.matches(':').count() == 1 { format!("0000:{dev}") } else { dev.clone() };
        let sys = PathBuf::from("/sys/bus/pci/devices").join(&full);
        if !sys.exists() {
            out.push(Finding::Fail(format!("{dev}: no such PCI device (lspci -D lists them)")));
            continue;
        }
        let driver = std::fs::read_link(sys.join("driver"))
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        match driver.as_deref() {
            Some("vfio-pci") if !iommu && !noiommu => out.push(Finding::Fail(format!(
                "{dev} is bound to vfio-pci but there is no IOMMU: intel_iommu=on iommu=pt on the kernel command \
                 line (or echo Y > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)"
            ))),
            Some(d @ ("vfio-pci" | "uio_pci_generic" | "igb_uio")) => {
                out.push(Finding::Ok(format!("{dev} is bound to {d}")))
            }
            // mlx5 and friends run on their kernel driver (bifurcated).
            Some(d @ ("mlx5_core" | "mlx4_core")) => out.push(Finding::Ok(format!("{dev} runs on {d} (bifurcated)"))),
            other => out.push(Finding::Fail(format!(
                "{dev} is bound to {}: modprobe vfio-pci; dpdk-devbind.py --bind=vfio-pci {full}",
                other.unwrap_or("no driver")
            ))),
        }
    }
    out
}

/// Enough CPUs for the lcores, and the workers' CPUs isolated.
fn lcores(settings: &Settings) -> Finding {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = settings.workers.lcores.get_ref().len() + settings.slowpath.lcores.get_ref().len();
    let isolated = std::fs::read_to_string("/sys/devices/system/cpu/isolated").unwrap_or_default();
    if workers + 1 > cpus {
        return Finding::Warn(format!(
            "{workers} worker and slow-path lcore(s) and the control lcore on {cpus} CPU(s): they share CPUs (idle \
             workers sleep, so it works, but a busy one waits for the CPU)"
        ));
    }
    if isolated.trim().is_empty() {
        return Finding::Warn(format!(
            "{workers} lcore(s) on {cpus} CPUs, none isolated: isolcpus= on the kernel command line keeps the \
             kernel's work off the workers' CPUs"
        ));
    }
    Finding::Ok(format!("{workers} lcore(s) on {cpus} CPUs; isolated: {}", isolated.trim()))
}

/// The event log, key log and decrypted pcap can be written where they go.
fn outputs(settings: &Settings) -> Vec<Finding> {
    let files = [
        ("event log", settings.events_path()),
        ("key log", settings.keylog_path()),
        ("decrypted pcap", settings.decrypted_pcap_path()),
    ];
    let mut out = Vec::new();
    for (what, path) in files {
        let Some(path) = path.filter(|p| p != Path::new("-")) else { continue };
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let probe = dir.join(format!(".tlsgate-doctor-{}", std::process::id()));
        match std::fs::File::create(&probe) {
            Ok(_) => {
                let _ = std::fs::remove_file(&probe);
                out.push(Finding::Ok(format!("the {what} can be written in {}", dir.display())));
            }
            Err(e) => out.push(Finding::Fail(format!(
                "the {what} {} cannot be written: {e} (mkdir -p {} and make it writable)",
                path.display(),
                dir.display()
            ))),
        }
    }
    out
}

/// The metrics address is free.
fn metrics(settings: &Settings) -> Option<Finding> {
    let addr = settings.metrics.address()?;
    Some(match TcpListener::bind(addr) {
        Ok(_) => Finding::Ok(format!("{addr} is free")),
        Err(e) => Finding::Fail(format!("{addr}: {e} (another tlsgate, or another exporter, listens there)")),
    })
}
