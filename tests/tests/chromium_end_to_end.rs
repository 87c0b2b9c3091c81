//! Chromium (Debian's, headless) through tlsgate in network namespaces,
//! over QUIC to an HTTP/3 server (quinn, `quic-peer ... h3`) and over TCP to
//! an HTTPS server, both on the server's port 443, tlsgate's and the web's
//! CAs trusted in Chromium's NSS database as an enterprise would install them:
//! - do-not-decrypt: forced onto QUIC, Chromium gets its page over HTTP/3;
//! - block: forced onto QUIC, it gets nothing;
//! - decrypt-resign: Chromium loads a page over TCP (decrypted), learns from
//!   its Alt-Svc header that HTTP/3 is offered, tries QUIC for its next
//!   request; tlsgate blocks that as undecryptable (`undecryptable_quic`),
//!   Chromium falls back to TCP, and that request is decrypted too.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tlsgate_perf::handshake::Pki;
use tlsgate_tests::netns::{start_https_server, start_tlsgate, stop_and_read_events, Reaper, Topology};
use tlsgate_tests::{bin, dpdk_lock, run_with_limit, text, Scratch};

const POLICY: &str = r#"[policy]
default_action = "do-not-decrypt"

[trust]
ca_files = ["webca.pem"]

[[ca]]
name = "corp"
cert = "corpca.pem"
key = "corpca.key"

[[rule]]
name = "no-casino"
action = "block"
sni = ["www.casino.test"]

[[rule]]
name = "inspect-shop"
action = "decrypt-resign"
ca = "corp"
sni = ["www.shop.test"]
"#;

/// Headless Chromium in the client namespace loading `url` (its host mapped
/// to the server), optionally forced onto QUIC; returns what it printed (the
/// DOM after the page's scripts ran).
fn chromium(topo: &Topology, dir: &Path, host: &str, url: &str, force_quic: bool) -> Output {
    let mut c = topo.exec(&topo.cli, "chromium");
    c.env("HOME", dir.join("home")).args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-quic",
        "--virtual-time-budget=8000",
    ]);
    // A fresh profile each time: nothing learned before (Alt-Svc, QUIC marked broken).
    let profile = dir.join(format!("profile-{host}-{force_quic}"));
    c.arg(format!("--user-data-dir={}", profile.display()));
    c.arg(format!("--host-resolver-rules=MAP {host} {}", topo.srv_ip));
    if force_quic {
        c.arg(format!("--origin-to-force-quic-on={host}:443"));
    }
    c.args(["--dump-dom", url]);
    run_with_limit(&mut c, Duration::from_secs(60))
}

fn certutil(args: &[&str]) {
    let o = run_with_limit(Command::new("certutil").args(args), Duration::from_secs(20));
    assert!(o.status.success(), "certutil {args:?}: {}", text(&o));
}

#[test]
fn chromium_gets_http3_through_tlsgate_and_falls_back_to_tcp_where_a_rule_decrypts() {
    let _g = dpdk_lock();
    let topo = Topology::new(13);
    let dir = Scratch::new("e2e-chromium");
    let web = Pki::new("Web Root CA");
    let corp = Pki::new("Corp Inspection CA");
    let names = ["www.open.test", "www.casino.test", "www.shop.test"];
    let leaf = web.issue(&names, "Shop Inc", 1_700_000_000, 2_000_000_000);
    for (name, body) in [
        ("webca.pem", web.ca_cert_pem()),
        ("corpca.pem", corp.ca_cert_pem()),
        ("corpca.key", corp.ca_key_pem()),
        ("leaf.pem", format!("{}{}", leaf.cert_pem, web.ca_cert_pem())),
        ("leaf.key", leaf.key_pem.clone()),
        ("policy.toml", POLICY.to_string()),
    ] {
        std::fs::write(dir.path(name), body).unwrap();
    }
    for k in ["corpca.key", "leaf.key"] {
        std::fs::set_permissions(dir.path(k), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    // Both CAs in Chromium's NSS database, as an enterprise installs its inspection CA.
    let nssdb = dir.path("home/.pki/nssdb");
    std::fs::create_dir_all(&nssdb).unwrap();
    let db = format!("sql:{}", nssdb.display());
    certutil(&["-d", &db, "-N", "--empty-password"]);
    for ca in ["webca", "corpca"] {
        certutil(&["-d", &db, "-A", "-t", "C,,", "-n", ca, "-i", dir.path(&format!("{ca}.pem")).to_str().unwrap()]);
    }
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(
        www.join("index.html"),
        "<html><body><p id=a>first</p><script>fetch('/second.html').then(r => r.text())\
         .then(t => { document.getElementById('a').textContent = t; })</script></body></html>\n",
    )
    .unwrap();
    std::fs::write(www.join("second.html"), "second, over TCP through tlsgate").unwrap();

    let cfg = dir.path("tlsgate.toml");
    let settings =
        format!("policy = \"policy.toml\"\nevents = \"events.json\"\n{}", topo.settings_with_slow_path(2, 1));
    std::fs::write(&cfg, settings).unwrap();
    let mut gate = start_tlsgate(&topo, &cfg, &[]);
    let h3 = topo
        .exec(&topo.srv, bin("quic-peer").to_str().unwrap())
        .args(["server", &format!("{}:443", topo.srv_ip)])
        .arg(dir.path("leaf.pem"))
        .arg(dir.path("leaf.key"))
        .args(["240", "h3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _h3 = Reaper(Some(h3));
    let _https = start_https_server(
        &topo,
        &www,
        &dir.path("leaf.pem"),
        &dir.path("leaf.key"),
        240,
        &["--alt-svc", "h3=\":443\"; ma=600"],
    );

    // Do-not-decrypt, over QUIC (retried while everything comes up).
    let start = Instant::now();
    loop {
        let o = chromium(&topo, &dir.0, "www.open.test", "https://www.open.test/", true);
        if String::from_utf8_lossy(&o.stdout).contains("over QUIC through tlsgate") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "no page over HTTP/3 through tlsgate: {}", text(&o));
        std::thread::sleep(Duration::from_secs(1));
    }
    // Block, over QUIC: nothing.
    let o = chromium(&topo, &dir.0, "www.casino.test", "https://www.casino.test/", true);
    assert!(!String::from_utf8_lossy(&o.stdout).contains("over QUIC"), "{}", text(&o));
    // Decrypt: the page over TCP, then the next request tried over QUIC, blocked, and made over TCP.
    let o = chromium(&topo, &dir.0, "www.shop.test", "https://www.shop.test/index.html", false);
    assert!(String::from_utf8_lossy(&o.stdout).contains("second, over TCP through tlsgate"), "{}", text(&o));

    let (log, evs) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let of = |kind: &str, sni: &str| -> Vec<&serde_json::Value> {
        let key = if kind == "quic" { "quic" } else { "tls" };
        evs.iter().filter(|e| e["event_type"] == kind && e[key]["sni"] == sni).collect()
    };
    let open = of("quic", "www.open.test");
    assert!(open.iter().any(|e| e["policy"]["actual_action"] == "do-not-decrypt"), "{log}");
    assert!(open.iter().all(|e| e["quic"]["ja4"].as_str().unwrap().starts_with("q13d")), "{open:?}");
    let casino = of("quic", "www.casino.test");
    assert!(!casino.is_empty() && casino.iter().all(|e| e["policy"]["actual_action"] == "block"), "{log}");
    let shop_quic = of("quic", "www.shop.test");
    assert!(!shop_quic.is_empty(), "Chromium tried HTTP/3 after the Alt-Svc:\n{log}");
    for e in &shop_quic {
        assert_eq!(e["policy"]["reason_code"], "undecryptable_quic", "{e}");
        assert_eq!(e["policy"]["actual_action"], "block", "{e}");
    }
    let shop_tcp = of("tls", "www.shop.test");
    assert!(shop_tcp.len() >= 2, "the page and the request after the fallback:\n{log}");
    for e in &shop_tcp {
        assert_eq!(e["policy"]["actual_action"], "decrypt-resign", "{e}");
        assert_eq!(e["policy"]["reason_code"], "decrypted", "{e}");
    }
}
