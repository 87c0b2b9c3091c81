//! `tlsgate replay --policy`: the real binary on the shared captures, its
//! event log checked against the captures' ground truth (Zeek's ssl.log and
//! x509.log rows), and its output capture checked for what each verdict lets
//! through.

use std::path::Path;
use tlsgate_tests::{dpdk_lock, pcap_frames, testdata, zeek_ssl_log as ground_truth, zeek_version, Scratch};

/// Replays `pcap` with `policy` (TOML text); returns (events, output frames, stdout).
fn replay(pcap: &Path, policy: &str) -> (Vec<serde_json::Value>, Vec<Vec<u8>>, String) {
    let _g = dpdk_lock();
    let dir = Scratch::new("policy-replay");
    let pol = dir.path("policy.toml");
    std::fs::write(&pol, policy).unwrap();
    let r = tlsgate_tests::replay(pcap, Some(&pol), &dir);
    let stdout = r.stdout();
    (r.events, r.frames, stdout)
}

/// Logs everything, and (by a rule on the negotiated version, which never
/// matches these captures) holds every decision until the server has spoken,
/// so that each event carries the server's facts too.
const MONITOR_ONLY: &str = r#"
[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "log-all"
action = "monitor"

[[rule]]
name = "no-ssl3"
action = "block"
versions = ["ssl3.0"]
"#;

#[test]
fn events_match_the_ground_truth_of_the_shared_captures() {
    let mut checked = 0;
    for row in ground_truth() {
        let pcap = testdata().join("zeek").join(&row["traces_used_by_test"]);
        let (evs, frames, _) = replay(&pcap, MONITOR_ONLY);
        let port: u64 = row["id.orig_p"].parse().unwrap();
        let ev = evs
            .iter()
            .find(|e| e["src_port"] == port && e["src_ip"] == row["id.orig_h"].as_str())
            .unwrap_or_else(|| panic!("{}: no event for the ground-truth session: {evs:?}", pcap.display()));
        let ctx = format!("{}: {ev}", pcap.display());
        assert_eq!(ev["dest_ip"], row["id.resp_h"].as_str(), "{ctx}");
        assert_eq!(ev["dest_port"].as_u64().unwrap().to_string(), row["id.resp_p"], "{ctx}");
        assert_eq!(ev["tls"]["version"], zeek_version(&row["version"]), "{ctx}");
        assert_eq!(ev["tls"]["cipher_suite"], row["cipher"].as_str(), "{ctx}");
        let sni = &row["server_name"];
        if sni != "-" {
            assert_eq!(ev["tls"]["sni"], sni.as_str(), "{ctx}");
        }
        assert_eq!(ev["tls"]["session_resumed"], row["resumed"] == "T", "{ctx}");
        let fps = &row["cert_chain_fps"];
        // tls-fragmented-handshake's 340 KB certificate message too.
        assert_ne!(ev["policy"]["reason_code"], "handshake_too_large", "{ctx}");
        if fps != "(empty)" && fps != "-" {
            let leaf = fps.split(',').next().unwrap();
            let ours = ev["tls"]["fingerprint_sha256"].as_str().unwrap().replace(':', "");
            assert_eq!(ours, leaf, "{ctx}");
        }
        assert_eq!(ev["policy"]["monitor_rules"][0], "log-all", "{ctx}");
        assert_eq!(ev["policy"]["actual_action"], "do-not-decrypt", "{ctx}");
        // do-not-decrypt forwards everything, byte for byte.
        assert_eq!(frames, pcap_frames(&pcap), "{ctx}");
        checked += 1;
    }
    assert!(checked >= 6, "ground truth rows checked: {checked}");
}

#[test]
fn special_handshakes_in_the_shared_captures() {
    let zeek = testdata().join("zeek");
    let (evs, _, _) = replay(&zeek.join("ssl-v2.pcap"), MONITOR_ONLY);
    assert_eq!(evs[0]["tls"]["version"], "SSLv2", "{evs:?}");
    assert_eq!(evs[0]["policy"]["reason_code"], "undecryptable_sslv2", "{evs:?}");

    let (evs, _, _) = replay(&zeek.join("tls13-ech.pcap"), MONITOR_ONLY);
    let ech = evs.iter().find(|e| e["tls"]["ech"] == true).expect("an ECH session");
    assert_eq!(ech["tls"]["sni"], "cloudflare-ech.com");
    assert_eq!(ech["tls"]["sni_is_outer"], true, "{ech}");
    // An ech condition matches it.
    let (evs, _, _) = replay(
        &zeek.join("tls13-ech.pcap"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-ech\"\naction = \"block\"\nech = true\n",
    );
    let blocked = evs.iter().find(|e| e["tls"]["ech"] == true).expect("an ECH session");
    assert_eq!(blocked["policy"]["rule"], "no-ech", "{blocked}");
    assert_eq!(ech["tls"]["version"], "TLS 1.3");
    // TLS 1.3 hides the certificate: a certificate condition cannot match, and the event says why.
    let policy = r#"
[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "cert-rule"
action = "block"
subject = ["CN=cloudflare-ech.com"]
"#;
    let (evs, _, _) = replay(&zeek.join("tls13-ech.pcap"), policy);
    let e = evs.iter().find(|e| e["tls"]["version"] == "TLS 1.3").expect("a TLS 1.3 session");
    assert_eq!(e["policy"]["actual_action"], "do-not-decrypt", "{e}");
    assert!(e["policy"]["missing_facts"].as_array().unwrap().iter().any(|f| f == "certificate"), "{e}");

    let (evs, _, _) = replay(&zeek.join("client-certificate.pcap"), MONITOR_ONLY);
    assert!(evs.iter().any(|e| e["tls"]["client_certificate_requested"] == true), "{evs:?}");
}

#[test]
fn expired_certificate_status_is_judged_at_the_capture_time_and_blocks() {
    let zeek = testdata().join("zeek");
    let policy = r#"
[policy]
default_action = "do-not-decrypt"

[[rule]]
name = "no-expired"
action = "block-with-reset"
cert_status = { expired = true }
"#;
    let pcap = zeek.join("tls-expired-cert.pcap");
    let (evs, frames, stdout) = replay(&pcap, policy);
    let e = evs.iter().find(|e| e["policy"]["rule"] == "no-expired").unwrap_or_else(|| panic!("{evs:?}\n{stdout}"));
    assert_eq!(e["policy"]["actual_action"], "block-with-reset");
    assert!(e["policy"]["cert_status"].as_array().unwrap().iter().any(|s| s == "expired"), "{e}");
    // What passed: the capture up to the certificate, then two resets; nothing of the flow after.
    let input = pcap_frames(&pcap);
    let rsts: Vec<_> = frames
        .iter()
        .filter_map(|f| etherparse::SlicedPacket::from_ethernet(f).ok())
        .filter_map(|p| match p.transport {
            Some(etherparse::TransportSlice::Tcp(t)) if t.rst() => Some((t.source_port(), t.destination_port())),
            _ => None,
        })
        .collect();
    let rsts_in_input = input
        .iter()
        .filter_map(|f| etherparse::SlicedPacket::from_ethernet(f).ok())
        .filter(|p| matches!(&p.transport, Some(etherparse::TransportSlice::Tcp(t)) if t.rst()))
        .count();
    assert_eq!(rsts.len(), rsts_in_input + 2, "two resets made: {rsts:?}");
    assert!(frames.len() < input.len() + 2, "packets after the decision are dropped");
}

#[test]
fn block_drops_everything_after_the_clienthello_in_both_directions() {
    let zeek = testdata().join("zeek");
    let policy = r#"
[policy]
default_action = "block"
"#;
    let pcap = zeek.join("tls1.2.pcap");
    let (evs, frames, stdout) = replay(&pcap, policy);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["policy"]["actual_action"], "block");
    assert!(evs[0]["policy"]["rule"].is_null());
    assert!(stdout.contains("by action"), "{stdout}");
    // Everything up to (not including) the ClientHello passed: the 3-way handshake.
    let input = pcap_frames(&pcap);
    let ch =
        input.iter().position(|f| f.windows(3).any(|w| w == [0x16, 0x03, 0x01] || w == [0x16, 0x03, 0x03])).unwrap();
    assert_eq!(frames.len(), ch, "only the frames before the ClientHello pass");
    assert_eq!(&frames[..], &input[..ch]);
}

#[test]
fn the_demo_decides_each_session_as_its_policy_says() {
    let _g = dpdk_lock();
    let dir = Scratch::new("demo");
    let demo = tlsgate_tests::repo().join("demo");
    for f in std::fs::read_dir(&demo).unwrap().flatten() {
        std::fs::copy(f.path(), dir.path(&f.file_name().to_string_lossy())).unwrap();
    }
    for key in ["resign-ca.key", "intranet.key"] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let r = tlsgate_tests::replay(&dir.path("demo.pcap"), Some(&dir.path("policy.toml")), &dir);
    let evs = &r.events;
    let by_port = |p: u16| r.event_from_port(p);
    let want = [
        (50001, "do-not-decrypt", "do-not-decrypt", None),
        (50002, "block-with-reset", "block-with-reset", Some("no-gambling")),
        (50003, "block", "block", Some("no-malware-c2")),
        (50004, "block", "block", Some("expired-certificates")),
        (50005, "do-not-decrypt", "do-not-decrypt", Some("banking-privacy")),
        (50006, "decrypt-known-key", "do-not-decrypt", Some("intranet-known-key")),
        (50007, "decrypt-resign", "do-not-decrypt", Some("inspect-webmail")),
        (50008, "decrypt-resign", "do-not-decrypt", Some("inspect-webmail")),
        (50009, "do-not-decrypt", "do-not-decrypt", None),
        (50010, "do-not-decrypt", "do-not-decrypt", None),
    ];
    assert_eq!(evs.len(), want.len(), "{evs:?}");
    for (port, expected, actual, rule) in want {
        let e = by_port(port);
        assert_eq!(e["policy"]["expected_action"], expected, "{e}");
        assert_eq!(e["policy"]["actual_action"], actual, "{e}");
        assert_eq!(e["policy"]["rule"].as_str(), rule, "{e}");
        assert_eq!(e["policy"]["monitor_rules"][0], "log-everything", "{e}");
    }
    assert_eq!(by_port(50008)["policy"]["reason_code"], "undecryptable_client_auth");
    assert_eq!(by_port(50010)["event_type"], "flow");
    let stdout = r.stdout();
    assert!(stdout.contains("inspection: not_tcp 0, flows 10"), "{stdout}");
    assert!(
        stdout.contains("verdict_do_not_decrypt 7, verdict_block 2, verdict_block_with_reset 1, decrypt_asked 3"),
        "{stdout}"
    );
}

/// Decrypt decisions on sessions the decrypting path could not terminate:
/// RC4 (unsupported cipher) and a TLS 1.3 PSK resumption (session not cached).
#[test]
fn decrypt_decisions_on_undecryptable_sessions_take_their_action() {
    let zeek = testdata().join("zeek");
    let dir = Scratch::new("undecryptable");
    let root = tlsgate_perf::handshake::Pki::new("Resign CA");
    std::fs::write(dir.path("ca.pem"), root.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("ca.key"), root.ca_key_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let policy = r#"
[policy]
default_action = "do-not-decrypt"

[policy.undecryptable]
unsupported_cipher = "block"
session_not_cached = "block-with-reset"

[[ca]]
name = "resign"
cert = "ca.pem"
key = "ca.key"

[[rule]]
name = "decrypt-all"
action = "decrypt-resign"
ca = "resign"
"#;
    std::fs::write(dir.path("policy.toml"), policy).unwrap();
    let _g = dpdk_lock();
    let r = tlsgate_tests::replay(&zeek.join("tls1.2.pcap"), Some(&dir.path("policy.toml")), &dir);
    let e = &r.events[0];
    assert_eq!(e["policy"]["expected_action"], "decrypt-resign", "{e}");
    assert_eq!(e["policy"]["actual_action"], "block", "{e}");
    assert_eq!(e["policy"]["reason_code"], "undecryptable_unsupported_cipher", "{e}");
    let r = tlsgate_tests::replay(&zeek.join("tls13_psk_succesfull.pcap"), Some(&dir.path("policy.toml")), &dir);
    let e = r.events.iter().find(|e| e["tls"]["session_resumed"] == true).unwrap_or_else(|| panic!("{:?}", r.events));
    assert_eq!(e["policy"]["actual_action"], "block-with-reset", "{e}");
    assert_eq!(e["policy"]["reason_code"], "undecryptable_session_not_cached", "{e}");
}
