//! TLS after a cleartext prelude, from real clients: OpenSSL's
//! `s_client -starttls` for each protocol against a server that speaks the
//! prelude and then TLS (Python's ssl), captured on loopback with tcpdump and
//! replayed through tlsgate. The policy applies to the TLS session that
//! follows, and the event names the prelude; a refused STARTTLS is a flow
//! that is not TLS, with its own reason code.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_tests::capture::{server_certificate, wait_for, Capture, Reaped};
use tlsgate_tests::{dpdk_lock, replay, repo, run_with_limit, text, Scratch};

/// Loopback addresses of the tests' own (one per test: they run at once).
const ADDR_ACCEPTED: &str = "127.0.0.77";
const ADDR_REFUSED: &str = "127.0.0.78";

const PROTOCOLS: [(&str, u16); 8] = [
    ("smtp", 25),
    ("imap", 143),
    ("pop3", 110),
    ("ftp", 21),
    ("xmpp", 5222),
    ("irc", 6667),
    ("postgres", 5432),
    ("ldap", 389),
];

/// One `openssl s_client -starttls PROTOCOL` session, captured; returns the capture.
fn capture(dir: &Scratch, protocol: &str, port: u16, refuse: bool) -> PathBuf {
    let addr = if refuse { ADDR_REFUSED } else { ADDR_ACCEPTED };
    let (cert, key) = server_certificate(dir, "starttls.test");
    let capture = Capture::start(&dir.path(&format!("{protocol}.pcap")), addr, port);
    let server_log = dir.path("server.log");
    let mut server = Command::new("python3");
    server
        .arg(repo().join("tests/e2e/starttls_server.py"))
        .args(["--protocol", protocol, "--addr", addr, "--port", &port.to_string()])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .stdout(std::fs::File::create(&server_log).unwrap())
        .stderr(Stdio::inherit());
    if refuse {
        server.arg("--refuse");
    }
    let server = Reaped(server.spawn().expect("python3"));
    wait_for(&server_log, "listening");
    let o = run_with_limit(
        Command::new("openssl")
            .args(["s_client", "-starttls", protocol, "-connect", &format!("{addr}:{port}")])
            .args(["-servername", "starttls.test"]),
        Duration::from_secs(20),
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert_eq!(shown.contains("BEGIN CERTIFICATE"), !refuse, "{protocol}: {}", text(&o));
    drop(server);
    capture.finish()
}

fn events(pcap: &Path, policy: &str, dir: &Scratch) -> (Vec<serde_json::Value>, usize) {
    let _g = dpdk_lock();
    let pol = dir.path("policy.toml");
    std::fs::write(&pol, policy).unwrap();
    let r = replay(pcap, Some(&pol), dir);
    (r.events, r.frames.len())
}

const PLAIN: &str = "[policy]\ndefault_action = \"do-not-decrypt\"\n";
const BLOCK_SNI: &str = r#"
[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "no-starttls-test"
action = "block"
sni = ["starttls.test"]
"#;

#[test]
fn each_starttls_protocol_leads_to_a_tls_session_the_policy_judges() {
    for (protocol, port) in PROTOCOLS {
        let dir = Scratch::new("starttls");
        let pcap = capture(&dir, protocol, port, false);
        let (evs, forwarded) = events(&pcap, PLAIN, &dir);
        let tls: Vec<_> = evs.iter().filter(|e| e["event_type"] == "tls").collect();
        assert_eq!(tls.len(), 1, "{protocol}: {evs:?}");
        let e = tls[0];
        assert_eq!(e["tls"]["starttls"], protocol, "{e}");
        assert_eq!(e["tls"]["sni"], "starttls.test", "{e}");
        assert_eq!(e["tls"]["version"], "TLS 1.3", "{e}");
        assert!(e["tls"]["ja4"].as_str().is_some_and(|j| j.starts_with("t13d")), "{e}");
        assert_eq!(e["dest_port"], port, "{e}");

        // A rule on the SNI judges the TLS session after the prelude.
        let (evs, blocked) = events(&pcap, BLOCK_SNI, &dir);
        let e = evs.iter().find(|e| e["event_type"] == "tls").unwrap_or_else(|| panic!("{protocol}: {evs:?}"));
        assert_eq!(e["policy"]["rule"], "no-starttls-test", "{e}");
        assert_eq!(e["policy"]["actual_action"], "block", "{e}");
        assert!(blocked < forwarded, "{protocol}: block let {blocked} of {forwarded} frames through");
    }
}

#[test]
fn a_refused_starttls_is_a_flow_that_is_not_tls() {
    for (protocol, port) in PROTOCOLS {
        let dir = Scratch::new("starttls-refused");
        let pcap = capture(&dir, protocol, port, true);
        let (evs, _) = events(&pcap, PLAIN, &dir);
        assert_eq!(evs.len(), 1, "{protocol}: {evs:?}");
        let e = &evs[0];
        assert_eq!(e["event_type"], "flow", "{e}");
        assert_eq!(e["tls"]["starttls"], protocol, "{e}");
        assert_eq!(e["policy"]["reason_code"], "prelude_without_tls", "{e}");
        let reason = e["policy"]["reason"].as_str().unwrap();
        assert!(reason.contains("refused") || reason.contains("cleartext"), "{e}");
    }
}
