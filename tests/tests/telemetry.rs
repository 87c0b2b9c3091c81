//! tlsgate's commands on the EAL's telemetry socket: `tlsgate run` on
//! net_null with telemetry on (as the documented configuration leaves it);
//! a client of the socket (`tests/e2e/telemetry_client.py`, speaking the v2
//! protocol as `dpdk-telemetry.py` does) finds `/tlsgate/stats`,
//! `/tlsgate/flows` and `/tlsgate/policy` listed beside DPDK's own, and
//! their answers agree with the ethdev stats and the policy file.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_tests::{dpdk_lock, repo, run_with_limit, signal, text, tlsgate, wait_with_limit, Scratch};

#[test]
fn the_telemetry_socket_answers_tlsgates_commands_beside_dpdks() {
    let _g = dpdk_lock();
    let dir = Scratch::new("telemetry");
    let prefix = format!("tgtel{}", std::process::id());
    std::fs::write(
        dir.path("policy.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-casino\"\naction = \"block\"\nsni = [\"casino.test\"]\n",
    )
    .unwrap();
    let cfg = dir.path("t.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"policy.toml\"\n\n[eal]\nargs = [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix={prefix}\", \
             \"--vdev=net_null0\", \"--vdev=net_null1\"]\n\n[[pair]]\na = \"net_null0\"\nb = \"net_null1\"\n\n[workers]\nlcores = [1]\n"
        ),
    )
    .unwrap();
    let child = Command::new(tlsgate())
        .args(["run", "--config"])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ask = |cmds: &[&str]| -> Vec<serde_json::Value> {
        let o = run_with_limit(
            Command::new("python3").arg(repo().join("tests/e2e/telemetry_client.py")).arg(&prefix).args(cmds),
            Duration::from_secs(15),
        );
        String::from_utf8_lossy(&o.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    };
    // Until the socket is up and the first counters are published.
    let start = Instant::now();
    let answers = loop {
        let a = ask(&["/", "/tlsgate/stats", "/ethdev/stats,0", "/tlsgate/flows", "/tlsgate/policy"]);
        if a.len() == 6 && a[2]["/tlsgate/stats"]["rx_packets"].as_u64().unwrap_or(0) > 0 {
            break a;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no telemetry answer: {a:?}");
        std::thread::sleep(Duration::from_millis(300));
    };
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    assert!(answers[0]["version"].as_str().unwrap().starts_with("DPDK 22.11"), "{}", answers[0]);
    let listed = answers[1]["/"].as_array().unwrap();
    for c in ["/tlsgate/stats", "/tlsgate/flows", "/tlsgate/policy", "/ethdev/stats"] {
        assert!(listed.iter().any(|l| l == c), "{c} is not listed: {listed:?}");
    }
    let stats = &answers[2]["/tlsgate/stats"];
    for k in ["rx_packets", "tx_packets", "dropped", "dropped_policy", "sessions", "slowpath_sessions_decrypted"] {
        assert!(stats[k].is_u64(), "{k}: {stats}");
    }
    // Asked after tlsgate's, the ethdev counters of port 0 are at least what tlsgate had received.
    let ethdev = &answers[3]["/ethdev/stats"];
    assert!(ethdev["ipackets"].as_u64().unwrap() > 0, "{ethdev}");
    assert!(answers[4]["/tlsgate/flows"]["worker0_flows"].is_u64(), "{}", answers[4]);
    let policy = &answers[5]["/tlsgate/policy"];
    assert_eq!(policy["default_action"], "do-not-decrypt", "{policy}");
    assert_eq!(policy["rules"], 1);
    assert_eq!(policy["rule1"], "no-casino: block");
    assert!(policy["file"].as_str().unwrap().ends_with("policy.toml"));
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}

/// A second tlsgate on the file prefix of a running one: one line that says
/// which process holds what and how to give this one its own, exit 1, and
/// nothing started (no DPDK lines at all); with `--in-memory` the runtime
/// directory is not needed but the telemetry socket is, and the line says so.
#[test]
fn a_taken_runtime_directory_or_telemetry_socket_is_one_line_at_start() {
    let _g = dpdk_lock();
    let dir = Scratch::new("telemetry-taken");
    let prefix = format!("tgtaken{}", std::process::id());
    let config = |extra: &str| {
        format!(
            "[eal]\nargs = [\"--no-huge\", \"-m\", \"256\", \"--no-pci\", \"--file-prefix={prefix}\", {extra}\
             \"--vdev=net_null0\", \"--vdev=net_null1\"]\n\n[[pair]]\na = \"net_null0\"\nb = \"net_null1\"\n\n\
             [workers]\nlcores = [1]\n"
        )
    };
    std::fs::write(dir.path("first.toml"), config("")).unwrap();
    std::fs::write(dir.path("second.toml"), config("\"--in-memory\", ")).unwrap();
    let first = Command::new(tlsgate())
        .args(["run", "--config"])
        .arg(dir.path("first.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let socket = format!("/var/run/dpdk/{prefix}/dpdk_telemetry.v2");
    let start = Instant::now();
    while !std::path::Path::new(&socket).exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "the first tlsgate made no telemetry socket");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    let again = |file: &str| {
        run_with_limit(Command::new(tlsgate()).args(["run", "--config"]).arg(dir.path(file)), Duration::from_secs(30))
    };
    let same = again("first.toml");
    let in_memory = again("second.toml");
    signal(&first, "TERM");
    let o = wait_with_limit(first, Duration::from_secs(30));
    assert!(o.status.success(), "the first tlsgate: {}", text(&o));
    for (o, says) in [(&same, "runs with file prefix"), (&in_memory, "telemetry socket")] {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{}", text(o));
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(says) && err.contains("--file-prefix"), "{err}");
    }
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
}
