//! End to end: a client and a server in two network namespaces, joined only
//! through tlsgate (af_packet PMD, two workers) in a third. curl fetches a
//! page, then 20 MB each way, checked by SHA-256 on both ends.

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tlsgate_tests::netns::{payload, sha256_hex, start_tlsgate, Reaper, Topology};
use tlsgate_tests::{dpdk_lock, repo, run_with_limit, signal, text, wait_with_limit, Scratch};

#[test]
fn curl_through_tlsgate_on_af_packet_gets_its_page_and_20mb_each_way() {
    let _g = dpdk_lock();
    let topo = Topology::new(1);
    let dir = Scratch::new("e2e");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>tlsgate end-to-end page</html>\n").unwrap();
    let down = payload(20 << 20, 7);
    let up = payload(20 << 20, 11);
    std::fs::write(www.join("down.bin"), &down).unwrap();
    let up_file = dir.path("up.bin");
    std::fs::write(&up_file, &up).unwrap();

    // With nothing bridging the middle, the client cannot reach the server.
    let o =
        run_with_limit(topo.exec(&topo.cli, "ping").args(["-c", "1", "-W", "1", &topo.srv_ip]), Duration::from_secs(5));
    assert!(!o.status.success(), "the namespaces must be joined only through tlsgate: {}", text(&o));

    let cfg = dir.path("e2e.toml");
    std::fs::File::create(&cfg).unwrap().write_all(topo.settings(2).as_bytes()).unwrap();
    let json = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", json.to_str().unwrap()]);
    let server = topo
        .exec(&topo.srv, "python3")
        .arg(repo().join("tests/e2e/http_server.py"))
        .args(["--bind", &topo.srv_ip, "--port", "8080", "--lifetime", "240", "--dir"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reaper(Some(server));
    let base = format!("http://{}:8080", topo.srv_ip);

    // The page, once tlsgate and the server are up (bounded retries).
    let start = Instant::now();
    let page = loop {
        let o = run_with_limit(
            topo.exec(&topo.cli, "curl").args(["-s", "--max-time", "2", &format!("{base}/index.html")]),
            Duration::from_secs(5),
        );
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate within 30 s: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(page, "<html>tlsgate end-to-end page</html>\n");

    // 20 MB server -> client.
    let got = dir.path("got.bin");
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl").args(["-sS", "--max-time", "120", "-o"]).arg(&got).arg(format!("{base}/down.bin")),
        Duration::from_secs(130),
    );
    assert!(o.status.success(), "download: {}", text(&o));
    let got = std::fs::read(&got).unwrap();
    assert_eq!(got.len(), down.len(), "download length");
    assert_eq!(sha256_hex(&got), sha256_hex(&down), "download intact");

    // 20 MB client -> server: the server answers with the SHA-256 of what arrived.
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl")
            .args(["-sS", "--max-time", "120", "-T"])
            .arg(&up_file)
            .arg(format!("{base}/upload")),
        Duration::from_secs(130),
    );
    assert!(o.status.success(), "upload: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), sha256_hex(&up), "upload intact");

    // Stop tlsgate; its counters show both directions crossed it.
    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let bytes = |i: usize, k: &str| c["ports"][i][k].as_u64().unwrap();
    assert!(bytes(0, "rx_bytes") > 20 << 20, "client side carried the upload: {c}");
    assert!(bytes(1, "rx_bytes") > 20 << 20, "server side carried the download: {c}");
    assert_eq!(c["steering"], "software dispatch", "af_packet has no RSS: {c}");
}

/// The policy's verdicts as the client sees them: a page for do-not-decrypt,
/// an immediate reset for block-with-reset, and a handshake that never
/// completes (no application byte crosses) for block.
#[test]
fn curl_sees_each_verdict_of_the_policy() {
    let _g = dpdk_lock();
    let topo = Topology::new(2);
    let dir = Scratch::new("e2e-policy");
    let (key, cert) = (dir.path("server.key"), dir.path("server.pem"));
    let o = run_with_limit(
        std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "30"])
            .args(["-subj", "/CN=ok.test", "-addext", "subjectAltName=DNS:ok.test,DNS:reset.test,DNS:drop.test"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "{}", text(&o));
    let policy = dir.path("policy.toml");
    std::fs::write(
        &policy,
        r#"[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "see-everything"
action = "monitor"

[[rule]]
name = "reset-this"
action = "block-with-reset"
sni = ["reset.test"]

[[rule]]
name = "drop-this"
action = "block"
sni = ["drop.test"]
"#,
    )
    .unwrap();
    let events = dir.path("events.json");
    let cfg = dir.path("e2e.toml");
    std::fs::write(
        &cfg,
        format!("policy = \"{}\"\nevents = \"{}\"\n{}", policy.display(), events.display(), topo.settings(1)),
    )
    .unwrap();
    let mut gate = start_tlsgate(&topo, &cfg, &[]);
    let server = topo
        .exec(&topo.srv, "openssl")
        .args(["s_server", "-quiet", "-www", "-accept", "4433", "-key"])
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reaper(Some(server));
    let curl = |name: &str, max: &str| {
        run_with_limit(
            topo.exec(&topo.cli, "curl")
                .args(["-sS", "-k", "--max-time", max, "--resolve"])
                .arg(format!("{name}:4433:{}", topo.srv_ip))
                .arg(format!("https://{name}:4433/")),
            Duration::from_secs(20),
        )
    };

    // do-not-decrypt: the page (retried while tlsgate and the server come up).
    let start = Instant::now();
    let page = loop {
        let o = curl("ok.test", "3");
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(page.contains("s_server"), "{page}");

    // block-with-reset: refused at once, by a reset.
    let t = Instant::now();
    let o = curl("reset.test", "10");
    assert!(!o.status.success(), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(3), "the reset should end it at once: {:?}", t.elapsed());
    let err = String::from_utf8_lossy(&o.stderr).to_lowercase();
    assert!(err.contains("reset"), "curl should see a reset: {err}");

    // SIGHUP with a broken policy: refused, the one in force stays.
    std::fs::write(&policy, "[policy]\ndefault_action = \"sometimes\"\n").unwrap();
    signal(gate.0.as_ref().unwrap(), "HUP");
    std::thread::sleep(Duration::from_millis(500));
    assert!(curl("ok.test", "5").status.success(), "a broken policy must not be put in force");
    // SIGHUP with a valid policy: new sessions are judged by it.
    std::fs::write(
        &policy,
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"now-ok-is-reset\"\naction = \"block-with-reset\"\nsni = [\"ok.test\"]\n\n[[rule]]\nname = \"drop-this\"\naction = \"block\"\nsni = [\"drop.test\"]\n",
    )
    .unwrap();
    signal(gate.0.as_ref().unwrap(), "HUP");
    std::thread::sleep(Duration::from_millis(500));
    let o = curl("ok.test", "10");
    assert!(!o.status.success(), "after the reload ok.test is reset: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).to_lowercase().contains("reset"), "{}", text(&o));

    // block (last: openssl s_server serves one connection at a time, and the
    // blocked one never completes): the handshake stalls and nothing arrives.
    let o = curl("drop.test", "3");
    assert_eq!(o.status.code(), Some(28), "curl times out: {}", text(&o));
    assert!(o.stdout.is_empty());

    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(&events).unwrap();
    let evs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let find = |sni: &str| {
        evs.iter().find(|e| e["tls"]["sni"] == sni).unwrap_or_else(|| panic!("no event for {sni} in:\n{log}")).clone()
    };
    let ok = find("ok.test");
    assert_eq!(ok["policy"]["actual_action"], "do-not-decrypt");
    assert_eq!(ok["policy"]["monitor_rules"][0], "see-everything");
    assert_eq!(find("reset.test")["policy"]["actual_action"], "block-with-reset");
    assert_eq!(find("reset.test")["policy"]["rule"], "reset-this");
    assert_eq!(find("drop.test")["policy"]["actual_action"], "block");
    assert_eq!(ok["dest_port"], 4433);
    assert_eq!(ok["src_ip"], topo.cli_ip.as_str());
    assert!(evs.iter().any(|e| e["policy"]["rule"] == "now-ok-is-reset"), "{log}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("policy not reloaded") && stderr.contains("policy reloaded from"), "{stderr}");
}
