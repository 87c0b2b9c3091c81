//! `tlsgate doctor --config FILE`: exit 0 and `ok`/`warn` lines for settings a
//! run starts with; for each thing that would stop a run, a `FAIL` line that
//! says what to do, and exit 1; bad settings, as `tlsgate run` reports them.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::Duration;

use tlsgate_perf::handshake::Pki;
use tlsgate_tests::{dpdk_lock, run_with_limit, text, tlsgate, Scratch};

fn doctor(cfg: &std::path::Path) -> (Output, String) {
    let o = run_with_limit(Command::new(tlsgate()).args(["doctor", "--config"]).arg(cfg), Duration::from_secs(30));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    (o, out)
}

const EAL: &str = "[eal]\nargs = [\"--no-huge\", \"--no-shconf\", \"--no-pci\", \"--no-telemetry\", \"-m\", \"256\", \
                   \"--vdev=net_null0\", \"--vdev=net_null1\"]\n\n[[pair]]\na = \"net_null0\"\nb = \"net_null1\"\n\n\
                   [workers]\nlcores = [1]\n";

#[test]
fn doctor_passes_what_runs_and_names_the_fix_for_what_would_not() {
    let _g = dpdk_lock();
    let dir = Scratch::new("doctor");
    let pki = Pki::new("Doctor CA");
    std::fs::write(dir.path("ca.pem"), pki.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("ca.key"), pki.ca_key_pem()).unwrap();
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.path("policy.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[ca]]\nname = \"corp\"\ncert = \"ca.pem\"\nkey = \"ca.key\"\n",
    )
    .unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let good = dir.path("good.toml");
    std::fs::write(
        &good,
        format!(
            "policy = \"policy.toml\"\nevents = \"events.json\"\n\n[metrics]\nlisten = \"127.0.0.1:{free}\"\n\n{EAL}"
        ),
    )
    .unwrap();
    let (o, out) = doctor(&good);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for line in [
        "ok   settings:",
        "ok   policy:",
        "warn hugepages: not used (--no-huge)",
        "ok   logs: the event log",
        "ok   metrics:",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(out.ends_with("would start\n"), "{out}");
    assert!(!dir.path("events.json").exists(), "doctor writes no log");
    // And it does start: the same settings run, until SIGTERM.
    let child = Command::new(tlsgate())
        .args(["run", "--config"])
        .arg(&good)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    tlsgate_tests::signal(&child, "TERM");
    let o = tlsgate_tests::wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));

    // Everything that would stop a run.
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let bad = dir.path("bad.toml");
    let eal = EAL
        .replace("\"--no-pci\", ", "\"-a\", \"0000:99:1f.7\", ")
        .replace("\"--no-huge\", \"--no-shconf\", ", "\"--in-memory\", ");
    std::fs::write(
        &bad,
        format!(
            "policy = \"policy.toml\"\nevents = \"/proc/tlsgate-nowhere/events.json\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n{eal}"
        ),
    )
    .unwrap();
    let (o, out) = doctor(&bad);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    for line in [
        "FAIL policy: ",
        "chmod 600",
        "FAIL pci: 0000:99:1f.7: no such PCI device",
        "FAIL logs: the event log /proc/tlsgate-nowhere/events.json cannot be written",
        &format!("FAIL metrics: 127.0.0.1:{port}"),
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    // Hugepages as this machine has them.
    let reserved: u64 = std::fs::read_dir("/sys/kernel/mm/hugepages")
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("nr_hugepages")).ok()?.trim().parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    let expect = if reserved > 0 { "ok   hugepages: reserved: " } else { "FAIL hugepages: none reserved: echo 1024 >" };
    assert!(out.contains(expect), "{expect}: {out}");
    assert!(
        out.contains("ok   hugepages: not mounted, and not needed (--in-memory)")
            || out.contains("ok   hugepages: mounted at"),
        "{out}"
    );
    drop(taken);

    // Bad settings: as `tlsgate run` says them, exit 1 here too (nothing runs).
    std::fs::write(dir.path("broken.toml"), "[workers]\nturbo = 1\n").unwrap();
    let (o, out) = doctor(&dir.path("broken.toml"));
    assert_eq!(o.status.code(), Some(1));
    assert!(out.starts_with("FAIL settings:") && out.contains("turbo"), "{out}");
}
