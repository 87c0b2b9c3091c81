//! Session resumption from real stacks, captured on loopback and replayed:
//! OpenSSL by session ID and by session ticket, GnuTLS by ticket (TLS 1.2)
//! and by PSK (TLS 1.3). The resumed session says so, and its certificate
//! facts (it shows none) come from the server identity cache, marked as such.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tlsgate_tests::capture::{server_certificate, Capture, Reaped};
use tlsgate_tests::{dpdk_lock, replay, run_with_limit, text, Scratch};

const ADDR: &str = "127.0.0.79";
const PORT: u16 = 4433;

/// Two OpenSSL sessions, the second resuming the first (`server_args`: `-no_ticket` for session IDs).
fn openssl_pair(dir: &Scratch, server_args: &[&str]) -> PathBuf {
    let (cert, key) = server_certificate(dir, "resume.test");
    let capture = Capture::start(&dir.path("openssl.pcap"), ADDR, PORT);
    let server = Command::new("openssl")
        .args(["s_server", "-accept", &format!("{ADDR}:{PORT}"), "-naccept", "2", "-quiet", "-tls1_2"])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .args(server_args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = Reaped(server);
    std::thread::sleep(Duration::from_millis(500));
    let session = dir.path("session.pem");
    let mut outputs = Vec::new();
    for flag in ["-sess_out", "-sess_in"] {
        let o = run_with_limit(
            Command::new("openssl")
                .args(["s_client", "-connect", &format!("{ADDR}:{PORT}"), "-tls1_2", "-servername", "resume.test"])
                .arg(flag)
                .arg(&session),
            Duration::from_secs(10),
        );
        outputs.push(String::from_utf8_lossy(&o.stdout).to_string());
    }
    assert!(outputs[1].contains("Reused, TLSv1.2"), "the second session did not resume: {}", outputs[1]);
    capture.finish()
}

/// `gnutls-cli --resume`: a session, then another resuming it.
fn gnutls_pair(dir: &Scratch, priority: &str) -> PathBuf {
    let (cert, key) = server_certificate(dir, "resume.test");
    let capture = Capture::start(&dir.path("gnutls.pcap"), ADDR, PORT);
    let server = Command::new("gnutls-serv")
        .arg("--x509certfile")
        .arg(&cert)
        .arg("--x509keyfile")
        .arg(&key)
        .args(["-p", &PORT.to_string(), "-a"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("gnutls-serv");
    let _server = Reaped(server);
    std::thread::sleep(Duration::from_millis(700));
    let o = run_with_limit(
        Command::new("gnutls-cli")
            .args(["--insecure", "--sni-hostname", "resume.test", "--priority", priority, "--resume"])
            .args(["-p", &PORT.to_string(), ADDR]),
        Duration::from_secs(15),
    );
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("This is a resumed session"), "{}", text(&o));
    capture.finish()
}

fn events(pcap: &std::path::Path, dir: &Scratch) -> Vec<serde_json::Value> {
    let _g = dpdk_lock();
    let pol = dir.path("policy.toml");
    std::fs::write(&pol, "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let mut evs = replay(pcap, Some(&pol), dir).events;
    evs.sort_by_key(|e| e["timestamp"].as_str().unwrap_or_default().to_string());
    evs
}

fn check_tls12_resumption(evs: &[serde_json::Value], how: &str) {
    assert_eq!(evs.len(), 2, "{how}: {evs:?}");
    let (first, second) = (&evs[0], &evs[1]);
    assert_eq!(first["tls"]["session_resumed"], false, "{how}: {first}");
    assert_eq!(first["tls"]["certificate_source"], "handshake", "{how}: {first}");
    assert_eq!(second["tls"]["session_resumed"], true, "{how}: {second}");
    assert_eq!(second["tls"]["version"], "TLS 1.2", "{how}: {second}");
    // No certificate on the wire; the facts are the cache's, and say so.
    assert_eq!(second["tls"]["subject"], "CN=resume.test", "{how}: {second}");
    assert_eq!(second["tls"]["certificate_source"], "cache", "{how}: {second}");
}

#[test]
fn resumed_sessions_say_so_and_take_their_certificate_from_the_cache() {
    let dir = Scratch::new("resume-id");
    let pcap = openssl_pair(&dir, &["-no_ticket"]);
    check_tls12_resumption(&events(&pcap, &dir), "OpenSSL, session ID");

    let dir = Scratch::new("resume-ticket");
    let pcap = openssl_pair(&dir, &[]);
    check_tls12_resumption(&events(&pcap, &dir), "OpenSSL, session ticket");

    let dir = Scratch::new("resume-gnutls");
    let pcap = gnutls_pair(&dir, "NORMAL:-VERS-TLS1.3");
    check_tls12_resumption(&events(&pcap, &dir), "GnuTLS, session ticket");

    // TLS 1.3: a PSK accepted; TLS 1.3 never shows the certificate in clear.
    let dir = Scratch::new("resume-tls13");
    let pcap = gnutls_pair(&dir, "NORMAL");
    let evs = events(&pcap, &dir);
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0]["tls"]["session_resumed"], false, "{}", evs[0]);
    assert_eq!(evs[1]["tls"]["session_resumed"], true, "{}", evs[1]);
    assert_eq!(evs[1]["tls"]["version"], "TLS 1.3", "{}", evs[1]);
}
