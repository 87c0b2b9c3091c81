//! The data plane in real DPDK processes: the wrapper checks, the worker loop
//! on net_ring loopback ports, and `tlsgate run` on net_null with several
//! workers (counters add up; SIGINT and SIGTERM stop it cleanly).

use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_tests::{bin, dpdk_lock, run_with_limit, signal, text, tlsgate, wait_with_limit, Scratch};

#[test]
fn dpdk_wrappers() {
    let _g = dpdk_lock();
    let o = run_with_limit(Command::new(bin("dpdk-check")).arg("wrappers"), Duration::from_secs(60));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn net_ring_bridge_two_workers_keeps_flows_on_their_worker() {
    let _g = dpdk_lock();
    let o = run_with_limit(
        Command::new(bin("dpdk-check")).args(["ring-bridge", "--workers", "2"]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn net_ring_bridge_one_worker() {
    let _g = dpdk_lock();
    let o = run_with_limit(
        Command::new(bin("dpdk-check")).args(["ring-bridge", "--workers", "1"]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
}

fn null_settings(workers: usize) -> String {
    let lcores: Vec<String> = (1..=workers).map(|l| l.to_string()).collect();
    format!(
        r#"[eal]
args = ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "-m", "512",
        "--vdev=net_null0,size=64", "--vdev=net_null1,size=128"]

[[pair]]
a = "net_null0"
b = "net_null1"

[workers]
lcores = [{}]
"#,
        lcores.join(", ")
    )
}

/// Runs `tlsgate run` for a while, stops it with `sig`, returns (output, counters).
fn run_null(workers: usize, sig: &str) -> (std::process::Output, serde_json::Value) {
    let dir = Scratch::new(&format!("null{workers}{sig}"));
    let cfg = dir.path("null.toml");
    std::fs::write(&cfg, null_settings(workers)).unwrap();
    run_and_stop(&dir, &cfg, sig)
}

/// Runs `tlsgate run --config cfg` for 1.5 s, stops it with `sig`, returns
/// (output, counters written at the stop).
fn run_and_stop(dir: &Scratch, cfg: &std::path::Path, sig: &str) -> (std::process::Output, serde_json::Value) {
    let json = dir.path("counters.json");
    let child = Command::new(tlsgate())
        .args(["run", "--config"])
        .arg(cfg)
        .args(["--stats-interval", "0.3", "--counters-json"])
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    signal(&child, sig);
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let counters: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).unwrap_or_else(|e| panic!("{e}\n{}", text(&o)))).unwrap();
    (o, counters)
}

fn n(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

#[test]
fn null_forwarding_with_two_workers_counts_add_up() {
    let _g = dpdk_lock();
    let (o, c) = run_null(2, "TERM");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("tlsgate stopped after"), "{}", text(&o));
    assert!(stdout.lines().filter(|l| l.contains("Mpps")).count() >= 2, "rate lines printed:\n{stdout}");
    let ports = c["ports"].as_array().unwrap();
    let workers = c["workers"].as_array().unwrap();
    assert_eq!(ports.len(), 2);
    assert_eq!(workers.len(), 2);
    // Every packet received is sent on the other port or dropped with a reason.
    let (rx0, rx1) = (n(&ports[0], "rx_packets"), n(&ports[1], "rx_packets"));
    let (tx0, tx1) = (n(&ports[0], "tx_packets"), n(&ports[1], "tx_packets"));
    let dropped: u64 = ports.iter().map(|p| n(p, "dropped")).sum();
    assert!(rx0 > 100_000 && rx1 > 100_000, "both ports carried traffic: {c}");
    assert_eq!(rx0 + rx1, tx0 + tx1 + dropped, "conservation: {c}");
    // net_null0 makes 64-byte frames, net_null1 128-byte ones: bytes follow packets across.
    assert_eq!(n(&ports[0], "rx_bytes"), rx0 * 64);
    assert_eq!(n(&ports[1], "rx_bytes"), rx1 * 128);
    // Per-worker counters sum to the per-port ones, and both workers worked.
    for k in ["rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "dropped"] {
        let by_port: u64 = ports.iter().map(|p| n(p, k)).sum();
        let by_worker: u64 = workers.iter().map(|w| n(w, k)).sum();
        assert_eq!(by_port, by_worker, "{k}: {c}");
    }
    for w in workers {
        assert!(n(w, "rx_packets") > 10_000, "every worker forwards: {c}");
    }
    // The driver agrees with the workers about what was received.
    assert_eq!(n(&ports[0]["driver"], "ipackets"), rx0, "{c}");
}

#[test]
fn null_forwarding_stops_on_sigint_with_one_worker() {
    let _g = dpdk_lock();
    let (o, c) = run_null(1, "INT");
    assert!(String::from_utf8_lossy(&o.stdout).contains("lcore 1"), "{}", text(&o));
    let p = &c["ports"][0];
    assert_eq!(n(p, "rx_packets"), n(&c["ports"][1], "tx_packets") + n(p, "dropped"), "{c}");
    assert_eq!(c["steering"], "single worker");
}

/// Runs `tlsgate run` on two net_tap ports (which spread flows by RSS but have
/// no redirection table to program) with two workers, with or without a
/// slow-path lcore, and returns the steering it chose.
fn steering(pmd: &str, slow_path: bool) -> String {
    let (_, c) = run_null_or_tap(pmd, slow_path, if slow_path { "(0-3)@(0-1)" } else { "(0-2)@(0-1)" }, "");
    c["steering"].as_str().unwrap_or_else(|| panic!("no steering in {c}")).to_owned()
}

/// `tlsgate run` on two ports of `pmd`, workers on lcores 1 and 2 (and a
/// slow-path lcore 3), `--lcores` placing them, `extra` settings after the
/// rest; stopped by SIGTERM. Its output and final counters.
fn run_null_or_tap(pmd: &str, slow_path: bool, lcores: &str, extra: &str) -> (std::process::Output, serde_json::Value) {
    let dir = Scratch::new(&format!("steer{pmd}{slow_path}"));
    let cfg = dir.path("steer.toml");
    let policy = dir.path("policy.toml");
    std::fs::write(&policy, "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let tag = std::process::id() % 10_000;
    let slow = if slow_path { "\n[slowpath]\nlcores = [3]\n" } else { "" };
    let (a, b) = match pmd {
        "tap" => (format!("net_tap0,iface=tgs{tag}a"), format!("net_tap1,iface=tgs{tag}b")),
        _ => (format!("net_{pmd}0"), format!("net_{pmd}1")),
    };
    std::fs::write(
        &cfg,
        format!(
            r#"policy = "policy.toml"

[eal]
args = ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "-m", "512", "--lcores={lcores}",
        "--vdev={a}", "--vdev={b}"]

[[pair]]
a = "net_{pmd}0"
b = "net_{pmd}1"

[workers]
lcores = [1, 2]
{slow}
{extra}"#
        ),
    )
    .unwrap();
    run_and_stop(&dir, &cfg, "TERM")
}

#[test]
fn rss_leaves_the_slow_path_queues_out_or_steering_falls_back_to_software() {
    let _g = dpdk_lock();
    // Without a slow path every queue is a worker's: RSS spreads flows over all.
    assert_eq!(steering("tap", false), "symmetric RSS");
    // With one, RSS would hand flows to the slow lcore's queue too; net_tap has
    // no redirection table to keep them off it, so workers steer in software.
    assert_eq!(steering("tap", true), "software dispatch");
    // net_null has a table tlsgate may write: RSS stays, restricted to the
    // workers' queues (the table itself is checked by `dpdk-check wrappers`).
    assert_eq!(steering("null", true), "symmetric RSS");
}

#[test]
fn mbufs_come_from_a_lock_free_stack_unless_the_settings_name_a_handler() {
    let _g = dpdk_lock();
    let (o, _) = run_null_or_tap("null", true, "(0-3)@(0-1)", "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("; mbufs on lf_stack"), "{}", text(&o));
    let (o, _) = run_null_or_tap("null", true, "(0-3)@(0-1)", "[mempool]\nhandler = \"ring_mp_mc\"\n");
    assert!(String::from_utf8_lossy(&o.stderr).contains("; mbufs on ring_mp_mc"), "{}", text(&o));
    // A handler this DPDK does not have: refused at start, by name.
    let dir = Scratch::new("badhandler");
    let cfg = dir.path("bad.toml");
    std::fs::write(
        &cfg,
        r#"[eal]
args = ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "-m", "256", "--lcores=(0-1)@(0-1)",
        "--vdev=net_null0", "--vdev=net_null1"]

[[pair]]
a = "net_null0"
b = "net_null1"

[workers]
lcores = [1]

[mempool]
handler = "no_such_handler"
"#,
    )
    .unwrap();
    let o = run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(&cfg), Duration::from_secs(30));
    assert!(!o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("handler \"no_such_handler\""), "{}", text(&o));
}

#[test]
fn lcores_that_share_a_cpu_are_named_and_told_to_yield() {
    let _g = dpdk_lock();
    // Both workers on CPU 1, the slow-path lcore on CPU 0 beside the main
    // lcore (which polls nothing): the workers share.
    let (o, c) = run_null_or_tap("null", true, "0@0,(1-2)@1,3@0", "");
    assert_eq!(c["lcores_sharing_cpus"], serde_json::json!([1, 2]), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("lcores [1, 2] share CPUs, so they yield when idle"), "{err}");
    // A CPU each: nobody shares, nothing said.
    let (o, c) = run_null_or_tap("null", false, "0@0,1@1,2@0", "");
    assert_eq!(c["lcores_sharing_cpus"], serde_json::json!([]), "{}", text(&o));
    assert!(!String::from_utf8_lossy(&o.stderr).contains("share CPUs"), "{}", text(&o));
}
