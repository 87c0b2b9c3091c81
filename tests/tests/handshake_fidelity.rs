//! What the event log says of captures tlsgate's generator did not make, with
//! the plainest policy there is (`default_action = "do-not-decrypt"`, every
//! session decided at its ClientHello): each event still carries the
//! session's own handshake facts, as Zeek's ground truth has them, and its
//! JA4 as FoxIO's reference implementation computes it.

use std::collections::HashMap;
use std::path::Path;

use tlsgate_tests::{
    dpdk_lock, pcap_frames, replay_with, testdata, zeek_ssl_log as ground_truth, zeek_version, Scratch,
};

const PLAIN: &str = "[policy]\ndefault_action = \"do-not-decrypt\"\n";

/// Replays `pcap` with the plain policy and `args`; returns (events, output frames).
fn replay(pcap: &Path, args: &[&str]) -> (Vec<serde_json::Value>, Vec<Vec<u8>>) {
    replay_policy(pcap, PLAIN, args)
}

/// The same with `policy`.
fn replay_policy(pcap: &Path, policy: &str, args: &[&str]) -> (Vec<serde_json::Value>, Vec<Vec<u8>>) {
    let _g = dpdk_lock();
    let dir = Scratch::new("fidelity");
    let pol = dir.path("policy.toml");
    std::fs::write(&pol, policy).unwrap();
    let r = replay_with(pcap, Some(&pol), &dir, args);
    (r.events, r.frames)
}

fn event_of<'a>(evs: &'a [serde_json::Value], row: &HashMap<String, String>) -> &'a serde_json::Value {
    let port: u64 = row["id.orig_p"].parse().unwrap();
    evs.iter()
        .find(|e| e["src_port"] == port && e["src_ip"] == row["id.orig_h"].as_str())
        .unwrap_or_else(|| panic!("{}: no event for the ground-truth session: {evs:?}", row["traces_used_by_test"]))
}

#[test]
fn a_session_decided_at_its_client_hello_still_logs_its_own_handshake() {
    let mut checked = 0;
    for row in ground_truth() {
        let pcap = testdata().join("zeek").join(&row["traces_used_by_test"]);
        let (evs, frames) = replay(&pcap, &[]);
        let ev = event_of(&evs, &row);
        let ctx = format!("{}: {ev}", pcap.display());
        // Decided at the ClientHello, on no server facts ...
        assert_eq!(ev["policy"]["reason_code"], "default_action", "{ctx}");
        assert_eq!(ev["policy"]["server_identity"], "unknown", "{ctx}");
        // ... and yet the session's own facts are there.
        assert_eq!(ev["tls"]["version"], zeek_version(&row["version"]), "{ctx}");
        assert_eq!(ev["tls"]["cipher_suite"], row["cipher"].as_str(), "{ctx}");
        assert_eq!(ev["tls"]["session_resumed"], row["resumed"] == "T", "{ctx}");
        let fps = &row["cert_chain_fps"];
        // Every handshake read to its end, tls-fragmented-handshake's 340 KB
        // certificate too (a server message past the buffer, within the
        // worker's large-message budget).
        assert!(ev["tls"]["facts_incomplete"].is_null(), "{ctx}");
        if fps != "(empty)" && fps != "-" {
            let leaf = fps.split(',').next().unwrap();
            assert_eq!(ev["tls"]["fingerprint_sha256"].as_str().unwrap().replace(':', ""), leaf, "{ctx}");
            assert_eq!(ev["tls"]["certificate_source"], "handshake", "{ctx}");
            assert!(ev["policy"]["cert_status"].is_array(), "{ctx}");
        }
        // Reading on never touched a byte.
        assert_eq!(frames, pcap_frames(&pcap), "{ctx}");
        checked += 1;
    }
    assert!(checked >= 6, "ground truth rows checked: {checked}");

    // The 340 KB certificate names 10,000 hosts: the event lists 100 and
    // the count, so that one line stays a few kilobytes.
    let pcap = testdata().join("zeek/tls-fragmented-handshake.pcap.gz");
    let row = ground_truth().into_iter().find(|r| r["traces_used_by_test"] == "tls-fragmented-handshake.pcap.gz");
    let row = row.expect("the fragmented handshake's ground truth");
    let (evs, _) = replay(&pcap, &[]);
    let ev = event_of(&evs, &row);
    let leaf = row["cert_chain_fps"].split(',').next().unwrap().to_string();
    assert_eq!(ev["tls"]["fingerprint_sha256"].as_str().unwrap().replace(':', ""), leaf, "{ev}");
    assert_eq!(ev["tls"]["subject"], "CN=Bro", "{ev}");
    assert_eq!(ev["tls"]["san"].as_array().map(Vec::len), Some(100), "{ev}");
    assert_eq!(ev["tls"]["san"][0], "1.alt.helloiamadomain.example", "{ev}");
    assert_eq!(ev["tls"]["san_total"], 10_000, "{ev}");
    assert!(ev.to_string().len() < 16 * 1024, "{} bytes", ev.to_string().len());

    // An SSLv2 server's certificate travels in its SERVER-HELLO.
    let (evs, _) = replay(&testdata().join("zeek/ssl-v2.pcap"), &[]);
    let ev = &evs[0];
    assert_eq!(ev["tls"]["version"], "SSLv2", "{ev}");
    assert!(ev["tls"]["subject"].as_str().is_some_and(|s| s.contains("CN=plesk")), "{ev}");
    assert_eq!(ev["tls"]["certificate_source"], "handshake", "{ev}");
}

#[test]
fn a_session_blocked_at_its_client_hello_logs_the_servers_answer_in_a_replay() {
    // Inline the server never gets a blocked ClientHello; a capture holds its
    // answer all the same, and the replay reads it for the event while every
    // packet from the ClientHello on is dropped as inline.
    for action in ["block", "block-with-reset"] {
        let policy = format!("[policy]\ndefault_action = \"{action}\"\n");
        let mut checked = 0;
        for row in ground_truth() {
            let pcap = testdata().join("zeek").join(&row["traces_used_by_test"]);
            let (evs, frames) = replay_policy(&pcap, &policy, &[]);
            let ev = event_of(&evs, &row);
            let ctx = format!("{action}: {}: {ev}", pcap.display());
            assert_eq!(ev["policy"]["actual_action"], action, "{ctx}");
            assert_eq!(ev["tls"]["version"], zeek_version(&row["version"]), "{ctx}");
            assert_eq!(ev["tls"]["cipher_suite"], row["cipher"].as_str(), "{ctx}");
            let fps = &row["cert_chain_fps"];
            if fps != "(empty)" && fps != "-" {
                let leaf = fps.split(',').next().unwrap();
                assert_eq!(ev["tls"]["fingerprint_sha256"].as_str().unwrap().replace(':', ""), leaf, "{ctx}");
            }
            assert!(frames.len() < pcap_frames(&pcap).len(), "{ctx}: nothing dropped");
            checked += 1;
        }
        assert!(checked >= 6, "{action}: ground truth rows checked: {checked}");
    }
}

#[test]
fn decision_mode_logs_what_the_decision_was_taken_on() {
    let pcap = testdata().join("zeek/tls1.2.pcap");
    let (evs, _) = replay(&pcap, &["--handshake", "decision"]);
    let ev = &evs[0];
    assert_eq!(ev["policy"]["reason_code"], "default_action", "{ev}");
    assert!(ev["tls"]["ja4"].is_string(), "{ev}");
    assert!(ev["tls"]["version"].is_null() && ev["tls"]["fingerprint_sha256"].is_null(), "{ev}");
    let (evs, _) = replay(&pcap, &["--handshake", "full"]);
    assert_eq!(evs[0]["tls"]["version"], "TLS 1.2", "{}", evs[0]);
    assert!(evs[0]["tls"]["fingerprint_sha256"].is_string(), "{}", evs[0]);
    // The event is dated at the decision, as in decision mode.
    assert_eq!(evs[0]["timestamp"], ev["timestamp"]);
}

/// FoxIO's expected values: (capture, client address, client port, JA4) of every TCP stream.
fn foxio_tcp() -> Vec<(String, String, String, String)> {
    tlsgate_tests::foxio_streams("tcp").into_iter().map(|f| (f.capture, f.src, f.src_port.to_string(), f.ja4)).collect()
}

#[test]
fn ja4_of_every_tcp_stream_is_what_foxio_computes() {
    let streams = foxio_tcp();
    assert!(streams.len() > 100, "FoxIO's expected values: {}", streams.len());
    let mut by_capture: HashMap<&str, Vec<&(String, String, String, String)>> = HashMap::new();
    for s in &streams {
        by_capture.entry(s.0.as_str()).or_default().push(s);
    }
    let mut wrong = Vec::new();
    for (capture, expected) in by_capture {
        let (evs, _) = replay(&testdata().join("ja4/pcap").join(capture), &[]);
        for (_, src, port, ja4) in expected {
            let port: u64 = port.parse().unwrap();
            let got = evs.iter().find(|e| e["src_ip"] == src.as_str() && e["src_port"] == port);
            let got = got.and_then(|e| e["tls"]["ja4"].as_str());
            if got != Some(ja4.as_str()) {
                wrong.push(format!("{capture} {src}:{port}: FoxIO {ja4}, tlsgate {got:?}"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} streams differ:\n{}", wrong.len(), streams.len(), wrong.join("\n"));
}
