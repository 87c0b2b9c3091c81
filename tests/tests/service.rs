//! tlsgate as a systemd service: `contrib/systemd/tlsgate.service` passes
//! `systemd-analyze verify`, and `tlsgate run` tells the service manager it
//! is ready once its workers forward (sd_notify `READY=1` on `$NOTIFY_SOCKET`,
//! as `Type=notify` wants), and that it is stopping on SIGTERM.

use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tlsgate_tests::{dpdk_lock, repo, run_with_limit, signal, text, tlsgate, wait_with_limit, Scratch};

#[test]
fn run_notifies_ready_once_forwarding_and_stopping_on_sigterm() {
    let _g = dpdk_lock();
    let dir = Scratch::new("sd-notify");
    let sock = UnixDatagram::bind(dir.path("notify.sock")).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let cfg = dir.path("t.toml");
    std::fs::write(
        &cfg,
        "[eal]\nargs = [\"--no-huge\", \"--no-shconf\", \"--no-pci\", \"--no-telemetry\", \"-m\", \"256\", \
         \"--vdev=net_null0\", \"--vdev=net_null1\"]\n\n[[pair]]\na = \"net_null0\"\nb = \"net_null1\"\n\n[workers]\nlcores = [1]\n",
    )
    .unwrap();
    let json = dir.path("counters.json");
    let child = Command::new(tlsgate())
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--counters-json")
        .arg(&json)
        .env("NOTIFY_SOCKET", dir.path("notify.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    let start = Instant::now();
    while !got.iter().any(|m: &String| m.starts_with("READY=1")) {
        assert!(start.elapsed() < Duration::from_secs(30), "no READY=1: {got:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            got.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    assert!(got[0].contains("STATUS=bridging with 1 worker(s)"), "{got:?}");
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    while let Ok(n) = sock.recv(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(got.iter().any(|m| m == "STOPPING=1"), "{got:?}");
    // Ready meant forwarding: the workers had packets by then and after.
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(c["ports"][0]["rx_packets"].as_u64().unwrap_or(0) > 0, "{c}");
}

#[test]
fn the_systemd_unit_verifies_and_is_a_notify_service_that_reloads_by_sighup() {
    let unit = std::fs::read_to_string(repo().join("contrib/systemd/tlsgate.service")).unwrap();
    for line in
        ["Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure", "RestartPreventExitStatus=2"]
    {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // As installed, with the binary where this build has it (the man page is the package's).
    let dir = Scratch::new("unit");
    let local = unit
        .replace("/usr/bin/tlsgate", tlsgate().to_str().unwrap())
        .lines()
        .filter(|l| !l.starts_with("Documentation="))
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(dir.path("tlsgate.service"), local).unwrap();
    let o = run_with_limit(
        Command::new("systemd-analyze").arg("verify").arg(dir.path("tlsgate.service")),
        Duration::from_secs(30),
    );
    assert!(o.status.success() && o.stderr.is_empty(), "{}", text(&o));
}
