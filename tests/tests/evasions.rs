//! Classic inline evasions cannot slip a blocked ClientHello past the
//! appliance, and their benign twins pass untouched (every frame forwarded
//! as it came) and are logged with their real SNI. The cases come from the
//! tests' own generator (`tlsgate_tests::evasion`): IP fragments (IPv4,
//! IPv6, overlapping), IPv6 extension headers, TCP Fast Open, decoys the
//! server drops (bad checksum, no ACK, ACK of unsent data, TCP-MD5, PAWS-old,
//! out of window), an out-of-window RST, a conflicting retransmission, and
//! QinQ with IPv4 options and padding. Sans-IO through one worker's
//! inspector, and through the real binary (net_pcap replay, checksums verified).

use std::sync::Arc;

use tlsgate_config::policy::Policy;
use tlsgate_config::{FlowSettings, HandshakeEvents};
use tlsgate_core::inspect::{Inspector, Output, Verdict};
use tlsgate_core::outcome::FlowEnd;
use tlsgate_perf::pcap_out::{write_pcap, Frame};
use tlsgate_tests::evasion::{cases, Case, ALLOWED, BLOCKED};
use tlsgate_tests::{dpdk_lock, replay_with, Scratch};

const START_NS: u64 = 1_767_225_600 * 1_000_000_000;

const POLICY: &str = "[policy]\ndefault_action = \"do-not-decrypt\"\n\n\
    [[rule]]\nname = \"no-blocked\"\naction = \"block\"\nsni = [\"blocked.example\"]\n";

fn policy(dir: &Scratch) -> Arc<Policy> {
    std::fs::write(dir.path("policy.toml"), POLICY).unwrap();
    Arc::new(Policy::load(&dir.path("policy.toml")).unwrap())
}

/// The generator's client frames come from MAC 01:01:...
fn from_client(frame: &[u8]) -> bool {
    frame[6..12] == [1; 6]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A flow through a fresh inspector: the frames forwarded (in the order they
/// went out) and the session events.
fn run(
    policy: &Arc<Policy>,
    frames: &[Vec<u8>],
    events: HandshakeEvents,
) -> (Vec<Vec<u8>>, Vec<serde_json::Value>, String) {
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let mut ins =
        Inspector::new(0, policy.clone(), &FlowSettings::default(), ports).unwrap().with_handshake_events(events);
    let mut out = Output::default();
    let mut forwarded = Vec::new();
    let mut now = START_NS;
    for f in frames {
        now += 1_000_000;
        let v = ins.on_packet(f, usize::from(!from_client(f)), now, &mut out);
        forwarded.append(&mut out.released);
        if v == Verdict::Forward {
            forwarded.push(f.clone());
        }
        out.resets.clear();
    }
    ins.finish(now + 1_000_000, FlowEnd::EndOfCapture, &mut out);
    let counters: String = ins.counters().named().filter(|(_, n)| *n > 0).map(|(k, n)| format!("{k}={n} ")).collect();
    (forwarded, out.events.iter().map(|e| e.to_json()).collect(), counters)
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

/// Cases where the first bytes judged carry the allowed name, and the
/// blocked name comes later at the same place: judged on the first.
fn judged_first(case: &Case) -> bool {
    matches!(case.name, "conflicting_retransmission" | "decoy_the_server_never_gets")
}

/// What every case must show: the evil flow blocked (or, where nothing of it
/// can be read, nothing of it forwarded), no byte of the blocked name ever
/// forwarded toward the server; the twin forwarded frame for frame, its
/// event naming the allowed SNI.
fn check(
    case: &Case,
    evil: (Vec<Vec<u8>>, Vec<serde_json::Value>, String),
    twin: (Vec<Vec<u8>>, Vec<serde_json::Value>, String),
) {
    let name = case.name;
    let (fwd, events, counters) = evil;
    for f in fwd.iter().filter(|f| from_client(f)) {
        assert!(!contains(f, BLOCKED.as_bytes()), "{name}: the blocked name reached the server ({counters})");
    }
    if judged_first(case) {
        // The judged bytes (the allowed name) are what the server gets.
        assert_eq!(events.len(), 1, "{name}: {events:?}");
        assert_eq!(events[0]["tls"]["sni"], ALLOWED, "{name}");
        assert!(counters.contains("conflicting_retransmissions=1"), "{name}: {counters}");
    } else if case.evil_readable {
        assert_eq!(events.len(), 1, "{name}: {events:?} ({counters})");
        let e = &events[0];
        assert_eq!(e["tls"]["sni"], BLOCKED, "{name}: {e} ({counters})");
        assert_eq!(e["policy"]["actual_action"], "block", "{name}: {e}");
        assert_eq!(e["policy"]["rule"], "no-blocked", "{name}: {e}");
    } else {
        assert!(events.iter().all(|e| e["tls"]["sni"].is_null()), "{name}: {events:?}");
        assert!(counters.contains("fragment_overlaps=1"), "{name}: {counters}");
    }
    let (fwd, events, counters) = twin;
    assert_eq!(sorted(fwd), sorted(case.twin.clone()), "{name}: the twin was not forwarded untouched ({counters})");
    assert_eq!(events.len(), 1, "{name}: {events:?}");
    let e = &events[0];
    assert_eq!(e["tls"]["sni"], ALLOWED, "{name} twin: {e} ({counters})");
    assert_eq!(e["policy"]["actual_action"], "do-not-decrypt", "{name} twin: {e}");
    assert!(e.get("evasion").is_none(), "{name} twin: {e}");
}

#[test]
fn every_evasion_is_judged_on_what_the_server_takes() {
    let dir = Scratch::new("evasions");
    let policy = policy(&dir);
    let all = cases(41000);
    assert!(all.len() >= 14);
    // Events at the decision: a decided flow guards the bytes it was judged
    // on; in full: it is still read on (to the server's first flight).
    for events in [HandshakeEvents::Full, HandshakeEvents::Decision] {
        for case in &all {
            let evil = run(&policy, &case.evil, events);
            let twin = run(&policy, &case.twin, events);
            check(case, evil, twin);
        }
    }
}

#[test]
fn unjudged_segments_can_be_forwarded_instead() {
    // `unjudged = "forward"`: the decoys reach the server (which drops them)
    // but are still never judged.
    let dir = Scratch::new("evasions-forward");
    let policy = policy(&dir);
    let mut flows = FlowSettings::default();
    flows.normalize.unjudged = tlsgate_config::Unjudged::Forward;
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    for case in cases(42000).iter().filter(|c| c.name.starts_with("decoy_") && !judged_first(c)) {
        let mut ins = Inspector::new(0, policy.clone(), &flows, ports.clone()).unwrap();
        let mut out = Output::default();
        let mut forwarded = 0;
        for (i, f) in case.evil.iter().enumerate() {
            if ins.on_packet(f, usize::from(!from_client(f)), START_NS + i as u64, &mut out) == Verdict::Forward {
                forwarded += 1;
            }
        }
        ins.finish(START_NS + 1_000_000_000, FlowEnd::EndOfCapture, &mut out);
        assert_eq!(out.events.len(), 1, "{}", case.name);
        let e = out.events[0].to_json();
        assert_eq!(e["tls"]["sni"], BLOCKED, "{}: {e}", case.name);
        assert_eq!(e["policy"]["actual_action"], "block", "{}", case.name);
        assert!(e["evasion"].as_object().is_some_and(|o| !o.is_empty()), "{}: {e}", case.name);
        // The handshake and the decoy went on; the blocked hello did not.
        assert_eq!(forwarded, case.evil.len() - 1, "{}", case.name);
    }
}

#[test]
fn the_real_binary_forwards_the_twins_untouched_and_blocks_the_evil() {
    let _dpdk = dpdk_lock();
    let dir = Scratch::new("evasions-replay");
    policy(&dir);
    let all = cases(43000);
    let mut frames = Vec::new();
    let mut t = START_NS;
    for case in &all {
        for f in case.evil.iter().chain(&case.twin) {
            t += 1_000_000;
            frames.push(Frame { unix_ns: t, data: f.clone() });
        }
    }
    let pcap = dir.path("evasions.pcap");
    write_pcap(&pcap, &frames).unwrap();
    // Seeds for the fuzz targets: TLSGATE_KEEP_CAPTURES=fuzz/captures, then fuzz/seed.py fuzz/captures.
    if let Some(keep) = std::env::var_os("TLSGATE_KEEP_CAPTURES") {
        let _ = std::fs::create_dir_all(&keep);
        let _ = std::fs::copy(&pcap, std::path::Path::new(&keep).join("evasions.pcap"));
    }
    let r = replay_with(&pcap, Some(&dir.path("policy.toml")), &dir, &["--checksums", "verify"]);
    for f in r.frames.iter().filter(|f| from_client(f)) {
        assert!(!contains(f, BLOCKED.as_bytes()), "the blocked name reached the server: {}", r.stdout());
    }
    // The twins' frames all came out as they went in.
    let out: std::collections::HashSet<&Vec<u8>> = r.frames.iter().collect();
    for case in &all {
        for f in &case.twin {
            assert!(out.contains(f), "{}: a twin's frame was not forwarded untouched", case.name);
        }
        let twin_port = client_port(&case.twin);
        let e = r.event_from_port(twin_port);
        assert_eq!(e["tls"]["sni"], ALLOWED, "{}: {e}", case.name);
        if case.evil_readable && !judged_first(case) {
            let e = r.event_from_port(client_port(&case.evil));
            assert_eq!(e["policy"]["actual_action"], "block", "{}: {e}", case.name);
        }
    }
}

/// The client port of a generated flow (its SYN, whole, comes first).
fn client_port(frames: &[Vec<u8>]) -> u16 {
    let t = tlsgate_core::packet::TcpFrame::parse(&frames[0]).expect("a flow starts with a whole SYN");
    t.src_port
}

#[test]
fn a_flood_of_incomplete_fragments_cannot_switch_reassembly_off() {
    // Five times the fragment table's capacity in datagrams that never
    // complete, then fragmented sessions: still reassembled and judged.
    let dir = Scratch::new("evasions-fragment-flood");
    let policy = policy(&dir);
    let mut flows = FlowSettings::default();
    flows.fragments.capacity = 256;
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let mut ins = Inspector::new(0, policy.clone(), &flows, ports).unwrap();
    let mut out = Output::default();
    let mut now = START_NS;
    let f = tlsgate_tests::evasion::Framing { port: 999, ..Default::default() };
    for id in 0..5 * 256 {
        now += 1_000;
        let frag = tlsgate_tests::evasion::fragment_frame(f, true, 0, true, &[0u8; 64], 100_000 + id);
        assert_eq!(
            ins.on_packet(&frag, 0, now, &mut out),
            Verdict::Drop(tlsgate_core::inspect::DropReason::FragmentHeld)
        );
    }
    let all = cases(44000);
    for case in all.iter().filter(|c| c.name.ends_with("_fragments") && c.evil_readable) {
        for flow in [&case.evil, &case.twin] {
            for frame in flow {
                now += 1_000;
                let _ = ins.on_packet(frame, usize::from(!from_client(frame)), now, &mut out);
                out.released.clear();
            }
        }
    }
    ins.finish(now, FlowEnd::EndOfCapture, &mut out);
    let c = ins.counters();
    assert!(c.fragments_evicted >= 4 * 256, "{:?}", c.named().collect::<Vec<_>>());
    let events: Vec<_> = out.events.iter().map(|e| e.to_json()).collect();
    let blocked = events.iter().filter(|e| e["tls"]["sni"] == BLOCKED && e["policy"]["actual_action"] == "block");
    let allowed =
        events.iter().filter(|e| e["tls"]["sni"] == ALLOWED && e["policy"]["actual_action"] == "do-not-decrypt");
    assert_eq!((blocked.count(), allowed.count()), (2, 2), "{events:?}");
}
