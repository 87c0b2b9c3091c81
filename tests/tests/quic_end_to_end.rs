//! QUIC end to end: quinn's client and server (quinn-proto on UDP sockets,
//! `quic-peer`) in two network namespaces, tlsgate between them on
//! af_packet with a slow path, the server sending a Retry to every new client.
//! Do-not-decrypt gets the page over QUIC; block gets nothing; block-with-
//! reset answers with an ICMP port unreachable, which the client's kernel
//! reports at once; a decrypt rule cannot be carried out on QUIC, so that
//! session gets nothing either (`undecryptable_quic`), and the same client
//! over TCP (curl) is decrypted by the same rule: the fallback browsers make.

use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};
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
name = "reset-bet"
action = "block-with-reset"
sni = ["www.bet.test"]

[[rule]]
name = "inspect-shop"
action = "decrypt-resign"
ca = "corp"
sni = ["www.shop.test"]
"#;

#[test]
fn quinn_over_tlsgate_gets_each_verdict_and_a_decrypt_rule_sends_it_to_tcp() {
    let _g = dpdk_lock();
    let topo = Topology::new(12);
    let dir = Scratch::new("e2e-quic");
    let web = Pki::new("Web Root CA");
    let corp = Pki::new("Corp Inspection CA");
    let leaf = web.issue(
        &["www.open.test", "www.casino.test", "www.bet.test", "www.shop.test"],
        "Shop Inc",
        1_700_000_000,
        2_000_000_000,
    );
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
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>over TCP through tlsgate</html>\n").unwrap();
    let cfg = dir.path("tlsgate.toml");
    let settings =
        format!("policy = \"policy.toml\"\nevents = \"events.json\"\n{}", topo.settings_with_slow_path(2, 1));
    std::fs::write(&cfg, settings).unwrap();
    let mut gate = start_tlsgate(&topo, &cfg, &[]);
    let server = format!("{}:443", topo.srv_ip);
    let quic_server = topo
        .exec(&topo.srv, bin("quic-peer").to_str().unwrap())
        .args(["server", &server])
        .arg(dir.path("leaf.pem"))
        .arg(dir.path("leaf.key"))
        .args(["180", "retry"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _quic_server = Reaper(Some(quic_server));
    let _tcp_server = start_https_server(&topo, &www, &dir.path("leaf.pem"), &dir.path("leaf.key"), 180, &[]);
    let quic = |name: &str, seconds: u64| -> Output {
        let mut c = topo.exec(&topo.cli, bin("quic-peer").to_str().unwrap());
        c.args(["client", &server, name]).arg(dir.path("webca.pem")).arg(seconds.to_string());
        run_with_limit(&mut c, Duration::from_secs(seconds + 10))
    };

    // Do-not-decrypt: the page over QUIC (retried while everything comes up).
    let start = Instant::now();
    loop {
        let o = quic("www.open.test", 3);
        if o.status.success() {
            assert_eq!(String::from_utf8_lossy(&o.stdout), "<html>over QUIC through tlsgate</html>\n");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "no page over QUIC through tlsgate: {}", text(&o));
    }
    // Block: nothing.
    let o = quic("www.casino.test", 4);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // Block with reset: the ICMP port unreachable ends it at once.
    let t = Instant::now();
    let o = quic("www.bet.test", 10);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert!(t.elapsed() < Duration::from_secs(5), "refused at once, not after a timeout");
    // Decrypt over QUIC cannot be done: blocked; over TCP the same rule decrypts it.
    let o = quic("www.shop.test", 4);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl").args(["-sS", "--max-time", "20", "--cacert"]).arg(dir.path("corpca.pem")).args([
            "--resolve",
            &format!("www.shop.test:443:{}", topo.srv_ip),
            "https://www.shop.test/index.html",
        ]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "over TCP, decrypted (curl trusts only tlsgate's CA): {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "<html>over TCP through tlsgate</html>\n");

    let (log, evs) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let quic_of = |sni: &str| -> Vec<&serde_json::Value> {
        evs.iter().filter(|e| e["event_type"] == "quic" && e["quic"]["sni"] == sni).collect()
    };
    let open = quic_of("www.open.test");
    let last = open.last().unwrap_or_else(|| panic!("no quic event for www.open.test:\n{log}"));
    assert_eq!(last["policy"]["actual_action"], "do-not-decrypt", "{last}");
    assert_eq!(last["quic"]["alpn"], serde_json::json!(["h3"]));
    assert!(last["quic"]["ja4"].as_str().unwrap().starts_with("q13d"), "{last}");
    assert!(
        last["quic"]["cipher_suite"].as_str().unwrap().starts_with("TLS_AES_"),
        "read on to the server's Initial: {last}"
    );
    for (sni, action, reason) in [
        ("www.casino.test", "block", "rule_matched"),
        ("www.bet.test", "block-with-reset", "rule_matched"),
        ("www.shop.test", "block", "undecryptable_quic"),
    ] {
        let e = quic_of(sni);
        assert!(!e.is_empty(), "no quic event for {sni}:\n{log}");
        assert!(
            e.iter().all(|e| e["policy"]["actual_action"] == action && e["policy"]["reason_code"] == reason),
            "{e:?}"
        );
    }
    let tcp: Vec<_> = evs.iter().filter(|e| e["event_type"] == "tls" && e["tls"]["sni"] == "www.shop.test").collect();
    assert_eq!(tcp.len(), 1, "{log}");
    assert_eq!(tcp[0]["policy"]["actual_action"], "decrypt-resign", "{}", tcp[0]);
    assert_eq!(tcp[0]["policy"]["reason_code"], "decrypted", "{}", tcp[0]);
}
