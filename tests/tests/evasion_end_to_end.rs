//! The normaliser's model of a receiver, checked against a real one: a
//! client built from raw frames (tests/e2e/raw_client.py, its ClientHello
//! made by Python's ssl) sends, through tlsgate on af_packet, to Linux and
//! `openssl s_server` in network namespaces:
//! - each decoy tlsgate does not judge (bad checksum, no ACK, ACK of unsent
//!   data, TCP-MD5, PAWS-old, past the window; forwarded here with
//!   `unjudged = "forward"`): the server's stack drops it too (no answer),
//!   then takes the real ClientHello that follows (an answer), while a proper
//!   copy in the decoy's place is answered (the control);
//! - a ClientHello in IP fragments, out of order: for an allowed name the
//!   server reassembles it and answers; for a blocked name nothing reaches it.
//!
//! On net_af_packet the kernel's packet fanout reassembles IP fragments
//! before the PMD reads them (DPDK asks for PACKET_FANOUT_FLAG_DEFRAG), so
//! here tlsgate judges the datagram whole as the kernel hands it over; its
//! own reassembly (of fragments as a NIC delivers them) is tested on the
//! generator's evasions through net_pcap (`evasions.rs`).

use std::process::Stdio;
use std::time::{Duration, Instant};

use tlsgate_tests::capture::server_certificate;
use tlsgate_tests::netns::{start_tlsgate, Reaper, Topology};
use tlsgate_tests::{dpdk_lock, repo, run_with_limit, signal, text, wait_with_limit, Scratch};

const POLICY: &str = "[policy]\ndefault_action = \"do-not-decrypt\"\n\n\
    [[rule]]\nname = \"no-blocked\"\naction = \"block\"\nsni = [\"blocked.example\"]\n";

fn mac_of(topo: &Topology, ns: &str, dev: &str) -> String {
    let o = run_with_limit(topo.exec(ns, "cat").arg(format!("/sys/class/net/{dev}/address")), Duration::from_secs(5));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

#[test]
fn a_real_stack_drops_what_tlsgate_does_not_judge_and_takes_its_fragments() {
    let _g = dpdk_lock();
    let topo = Topology::new(9);
    let dir = Scratch::new("e2e-evasion");
    let (cert, key) = server_certificate(&dir, "allowed.example");
    std::fs::write(dir.path("policy.toml"), POLICY).unwrap();
    let events = dir.path("events.json");
    let cfg = dir.path("e2e.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"{}\"\nevents = \"{}\"\n{}\n[flows.normalize]\nunjudged = \"forward\"\n",
            dir.path("policy.toml").display(),
            events.display(),
            topo.settings(2)
        ),
    )
    .unwrap();
    // The server checks checksums as a NIC-backed stack would (veth would
    // otherwise mark frames from its peer as already checked).
    let _ = run_with_limit(topo.exec(&topo.srv, "ethtool").args(["-K", "s0", "rx", "off"]), Duration::from_secs(5));
    // The raw client's address belongs to no interface: the server reaches it by a neighbour entry.
    let raw_ip = topo.cli_ip.replace(".1", ".3");
    let cli_mac = mac_of(&topo, &topo.cli, "c0");
    let srv_mac = mac_of(&topo, &topo.srv, "s0");
    let o = run_with_limit(
        topo.exec(&topo.srv, "ip").args(["neigh", "replace", &raw_ip, "lladdr", &cli_mac, "dev", "s0"]),
        Duration::from_secs(5),
    );
    assert!(o.status.success(), "{}", text(&o));
    let counters = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", counters.to_str().unwrap()]);
    let server = topo
        .exec(&topo.srv, "openssl")
        .args(["s_server", "-quiet", "-accept", "443", "-key"])
        .arg(&key)
        .arg("-cert")
        .arg(&cert)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reaper(Some(server));

    let run = |mode: &str, sni: &str, sport: u16| -> serde_json::Value {
        let o = run_with_limit(
            topo.exec(&topo.cli, "python3")
                .arg(repo().join("tests/e2e/raw_client.py"))
                .args(["--iface", "c0", "--src", &raw_ip, "--dst", &topo.srv_ip, "--dst-mac", &srv_mac])
                .args(["--sport", &sport.to_string(), "--sni", sni, "--mode", mode]),
            Duration::from_secs(30),
        );
        assert!(o.status.success(), "{mode}: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{mode}: {e}: {}", text(&o)))
    };
    // Up: a plain ClientHello is answered (retried while tlsgate starts).
    let start = Instant::now();
    let mut port = 42000;
    loop {
        port += 1;
        let r = run("plain", "allowed.example", port);
        if r["answered"] == true {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(40), "no answer through tlsgate: {r}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut sessions = vec![(port, "allowed.example", "do-not-decrypt")];
    // The control: a "decoy" that is a proper copy is answered, so an
    // unanswered decoy below was dropped by the server, not lost.
    port += 1;
    let r = run("decoy-copy", "allowed.example", port);
    assert_eq!(r["decoy_answered"], true, "a proper copy is answered: {r}");
    sessions.push((port, "allowed.example", "do-not-decrypt"));
    for decoy in ["badsum", "noack", "ackunsent", "md5", "paws", "window"] {
        port += 1;
        let r = run(&format!("decoy-{decoy}"), "allowed.example", port);
        assert_eq!(r["decoy_answered"], false, "the server took the {decoy} decoy tlsgate does not judge: {r}");
        assert_eq!(r["answered"], true, "the real ClientHello after the {decoy} decoy: {r}");
        sessions.push((port, "allowed.example", "do-not-decrypt"));
    }
    port += 1;
    let r = run("fragments", "allowed.example", port);
    assert_eq!(r["answered"], true, "the server reassembles the fragments tlsgate forwards: {r}");
    sessions.push((port, "allowed.example", "do-not-decrypt"));
    // Last: s_server serves one connection at a time, and this one never completes.
    port += 1;
    let r = run("fragments", "blocked.example", port);
    assert_eq!(r["answered"], false, "a blocked ClientHello in fragments reached the server: {r}");
    sessions.push((port, "blocked.example", "block"));

    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(&events).unwrap();
    let evs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (port, sni, action) in sessions {
        let e = evs
            .iter()
            .find(|e| e["src_port"] == port)
            .unwrap_or_else(|| panic!("no event for client port {port} in:\n{log}"));
        assert_eq!(e["tls"]["sni"], sni, "{e}");
        assert_eq!(e["policy"]["actual_action"], action, "{e}");
    }
    // Every decoy was counted as the kind the normaliser found it.
    let c: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&counters).unwrap()).unwrap();
    let sum = |name: &str| {
        c["workers"].as_array().unwrap().iter().map(|w| w["inspection"][name].as_u64().unwrap_or(0)).sum::<u64>()
    };
    for kind in ["bad_checksum", "no_ack", "ack_of_unsent", "tcp_md5", "paws_old", "out_of_window"] {
        assert_eq!(sum(&format!("unjudged_{kind}")), 1, "{kind}: {c}");
    }
    let decoys = evs.iter().filter(|e| e.get("evasion").is_some()).count();
    assert!(decoys >= 6, "each decoy session lists what it met under evasion:\n{log}");
}
