//! Log rotation: `logrotate -f` with the config in `contrib/logrotate/`
//! (its paths and its signal pointed at this test's tlsgate) while tlsgate
//! decrypts and forwards sessions in the namespace rig. SIGUSR1 reopens the
//! event log, the key log and the decrypted pcap: every event is in the
//! rotated file or the new one, none lost or doubled; both key logs have
//! secrets; both pcaps read as captures, each with its own header. Each
//! event also goes to syslog (RFC 5424 over a local datagram socket).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_perf::handshake::Pki;
use tlsgate_tests::netns::{start_https_server, start_tlsgate, stop_and_read_events, Topology};
use tlsgate_tests::{dpdk_lock, pcap_frames, repo, run_with_limit, text, Scratch};

#[test]
fn logrotate_and_sigusr1_lose_no_event_and_reopen_every_log() {
    let _g = dpdk_lock();
    let topo = Topology::new(15);
    let dir = Scratch::new("e2e-logrotate");
    let web = Pki::new("Web Root CA");
    let corp = Pki::new("Corp Inspection CA");
    let leaf = web.issue(&["www.shop.test", "www.open.test"], "Shop Inc", 1_700_000_000, 2_000_000_000);
    for (name, body) in [
        ("webca.pem", web.ca_cert_pem()),
        ("corpca.pem", corp.ca_cert_pem()),
        ("corpca.key", corp.ca_key_pem()),
        ("leaf.pem", format!("{}{}", leaf.cert_pem, web.ca_cert_pem())),
        ("leaf.key", leaf.key_pem.clone()),
    ] {
        std::fs::write(dir.path(name), body).unwrap();
    }
    std::fs::set_permissions(dir.path("corpca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.path("policy.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[trust]\nca_files = [\"webca.pem\"]\n\n[[ca]]\nname = \"corp\"\n\
         cert = \"corpca.pem\"\nkey = \"corpca.key\"\n\n[[rule]]\nname = \"inspect\"\naction = \"decrypt-resign\"\nca = \"corp\"\n\
         sni = [\"www.shop.test\"]\n",
    )
    .unwrap();
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>rotated</html>\n").unwrap();
    let settings = topo
        .settings_with_slow_path(2, 1)
        .replace("[slowpath]\n", "[slowpath]\nkeylog = \"keys.log\"\ndecrypted_pcap = \"decrypted.pcap\"\n");
    let cfg = dir.path("tlsgate.toml");
    // Each event to syslog too (RFC 5424 on a datagram socket: this test's, not /dev/log).
    let syslog = std::os::unix::net::UnixDatagram::bind(dir.path("syslog.sock")).unwrap();
    syslog.set_nonblocking(true).unwrap();
    let events = format!("[events]\npath = \"events.json\"\nsyslog = \"{}\"\n", dir.path("syslog.sock").display());
    std::fs::write(&cfg, format!("policy = \"policy.toml\"\n{settings}\n{events}")).unwrap();
    let json = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", json.to_str().unwrap()]);
    let pid = gate.0.as_ref().unwrap().id();
    let _server = start_https_server(&topo, &www, &dir.path("leaf.pem"), &dir.path("leaf.key"), 120, &[]);
    let curl = |name: &str, ca: &str| {
        run_with_limit(
            topo.exec(&topo.cli, "curl").args(["-sS", "--max-time", "10", "--cacert"]).arg(dir.path(ca)).args([
                "--resolve",
                &format!("{name}:443:{}", topo.srv_ip),
                &format!("https://{name}/index.html"),
            ]),
            Duration::from_secs(20),
        )
    };
    let start = Instant::now();
    while !curl("www.open.test", "webca.pem").status.success() {
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate");
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut sessions = 1;
    let mut both = || {
        let o = curl("www.shop.test", "corpca.pem");
        assert!(o.status.success(), "decrypted: {}", text(&o));
        assert!(curl("www.open.test", "webca.pem").status.success());
        sessions += 2;
    };
    both();
    both();
    // Until tlsgate has written them (the decrypted sessions' events come when they end).
    let lines = |p: &str| std::fs::read_to_string(dir.path(p)).map(|s| s.lines().count()).unwrap_or(0);
    let start = Instant::now();
    while lines("events.json") < 5 && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(200));
    }

    // contrib's logrotate config, pointed at this test's files and tlsgate.
    let conf = std::fs::read_to_string(repo().join("contrib/logrotate/tlsgate"))
        .unwrap()
        .replace("/var/log/tlsgate", dir.0.to_str().unwrap())
        .replace(
            "systemctl kill --signal=USR1 tlsgate.service 2>/dev/null || pkill -USR1 -x tlsgate || true",
            &format!("kill -USR1 {pid}"),
        );
    assert!(conf.contains(&format!("kill -USR1 {pid}")), "{conf}");
    std::fs::write(dir.path("logrotate.conf"), conf).unwrap();
    let o = run_with_limit(
        Command::new("logrotate").arg("-f").arg("-s").arg(dir.path("logrotate.state")).arg(dir.path("logrotate.conf")),
        Duration::from_secs(20),
    );
    assert!(o.status.success(), "logrotate: {}", text(&o));
    assert!(
        dir.path("events.json.1").exists() && dir.path("keys.log.1").exists() && dir.path("decrypted.pcap.1").exists()
    );
    // Until tlsgate has reopened (the new files exist again).
    let start = Instant::now();
    while !(dir.path("events.json").exists() && dir.path("decrypted.pcap").exists()) {
        assert!(start.elapsed() < Duration::from_secs(10), "tlsgate did not reopen its logs");
        std::thread::sleep(Duration::from_millis(100));
    }
    both();
    both();
    let (after, _) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let before = std::fs::read_to_string(dir.path("events.json.1")).unwrap();
    let all: Vec<serde_json::Value> =
        before.lines().chain(after.lines()).map(|l| serde_json::from_str(l).expect("whole JSON lines")).collect();
    assert!(before.lines().count() >= 5 && after.lines().count() >= 4, "before:\n{before}\nafter:\n{after}");
    assert_eq!(all.len(), sessions, "every session once, in one file or the other");
    // Decrypted sessions carry how long their steps took.
    let decrypted: Vec<_> = all.iter().filter(|e| e["policy"]["reason_code"] == "decrypted").collect();
    assert_eq!(decrypted.len(), 4, "{all:?}");
    for e in &decrypted {
        for k in ["server_handshake_ms", "client_handshake_ms", "first_plaintext_ms"] {
            assert!(e["decrypt"][k].as_f64().is_some_and(|ms| ms > 0.0 && ms < 10_000.0), "{k}: {e}");
        }
    }
    let mut ids: Vec<_> = all.iter().map(|e| e["flow_id"].as_u64().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), sessions, "no event twice");
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = syslog.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert_eq!(messages.len(), sessions, "one syslog message per event");
    for m in &messages {
        // <PRI>1 TIMESTAMP HOST APP PROCID MSGID SD MSG
        let parts: Vec<&str> = m.splitn(8, ' ').collect();
        assert_eq!((parts[0], parts[3], parts[5], parts[6]), ("<134>1", "tlsgate", "event", "-"), "{m}");
        assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "RFC 3339 time: {m}");
        let e: serde_json::Value = serde_json::from_str(parts[7]).expect("the event's JSON");
        assert!(ids.contains(&e["flow_id"].as_u64().unwrap()));
    }
    for k in ["keys.log.1", "keys.log"] {
        let keys = std::fs::read_to_string(dir.path(k)).unwrap();
        assert!(keys.lines().any(|l| l.starts_with("CLIENT_HANDSHAKE_TRAFFIC_SECRET ")), "{k}: {keys}");
    }
    for p in ["decrypted.pcap.1", "decrypted.pcap"] {
        let frames = pcap_frames(&dir.path(p));
        let needle = b"GET /index.html";
        assert!(frames.iter().any(|f| f.windows(needle.len()).any(|w| w == needle)), "{p}: plaintext");
    }
}

#[test]
fn events_dash_go_to_standard_output_for_a_supervisor() {
    let _g = dpdk_lock();
    let dir = Scratch::new("events-stdout");
    std::fs::write(dir.path("p.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let o = run_with_limit(
        Command::new(tlsgate_tests::tlsgate())
            .args(["replay", "--pcap"])
            .arg(repo().join("demo/demo.pcap"))
            .arg("--policy")
            .arg(dir.path("p.toml"))
            .arg("--out")
            .arg(dir.path("out.pcap"))
            .args(["--events", "-"]),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let events: Vec<serde_json::Value> =
        out.lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    assert!(events.len() >= 5, "{out}");
    assert!(events.iter().all(|e| e["policy"]["reason_code"].is_string()));
    assert!(!dir.path("-").exists() && !repo().join("-").exists(), "no file named -");
}
