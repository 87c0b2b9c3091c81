//! A SYN flood cannot switch the policy off: with the flow table filled
//! many times over by flows that sent a SYN and nothing else, real sessions
//! are still decided as the policy says (the table forgets the oldest
//! embryonic flows to make room), and a session the table forgot while it
//! was young is inspected when it comes back (while the table is forgetting
//! flows, one first seen mid-stream is inspected), not bypassed.
//! Sans-IO: generated frames through one worker's inspector.

use std::net::IpAddr;
use std::sync::Arc;

use tlsgate_config::policy::Policy;
use tlsgate_config::{FlowSettings, Midstream};
use tlsgate_core::inspect::{DropReason, Inspector, Output, Verdict};
use tlsgate_core::packet::TcpFrame;
use tlsgate_perf::handshake::{tls_session, Pki, SessionSpec};
use tlsgate_tests::Scratch;

const START_NS: u64 = 1_767_225_600 * 1_000_000_000;

fn policy(dir: &Scratch) -> Arc<Policy> {
    let text = "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-casino\"\naction = \"block\"\nsni = [\"casino.test\"]\n";
    std::fs::write(dir.path("policy.toml"), text).unwrap();
    Arc::new(Policy::load(&dir.path("policy.toml")).unwrap())
}

/// A bare SYN from `port` to the server.
fn syn(port: u16) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([203, 0, 113, 66], [198, 51, 100, 20], 64)
        .tcp(port, 443, 7, 64240)
        .syn()
        .write(&mut v, &[])
        .unwrap();
    v
}

fn session(pki: &Pki, port: u16, sni: &str, start_ns: u64) -> Vec<tlsgate_perf::pcap_out::Frame> {
    let leaf = pki.issue(&[sni], "Flood", 1_700_000_000, 1_900_000_000);
    let client: IpAddr = "192.0.2.10".parse().unwrap();
    let server: IpAddr = "198.51.100.20".parse().unwrap();
    let mut spec = SessionSpec::new((client, port), (server, 443), Some(sni), vec![leaf.cert_der], leaf.key_der);
    spec.start_unix_ns = start_ns;
    tls_session(&spec).unwrap()
}

fn ingress(frame: &[u8]) -> usize {
    usize::from(TcpFrame::parse(frame).unwrap().dst_port != 443)
}

/// One worker's inspector with a table of 64 flows, under the policy above.
fn small_table(tag: &str) -> (Scratch, Pki, Inspector) {
    small_table_with(tag, FlowSettings { capacity: 64, ..FlowSettings::default() })
}

fn small_table_with(tag: &str, flows: FlowSettings) -> (Scratch, Pki, Inspector) {
    let dir = Scratch::new(tag);
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let ins = Inspector::new(0, policy(&dir), &flows, ports).unwrap();
    (dir, Pki::new("Flood CA"), ins)
}

#[test]
fn a_table_full_of_syns_still_decides_every_real_session() {
    let (_dir, pki, mut ins) = small_table("syn-flood");
    let mut out = Output::default();
    let mut t = START_NS;

    // A session's SYN, then a flood of ten tables' worth, then the rest of it.
    let young = session(&pki, 40100, "casino.test", t);
    for f in &young[..1] {
        ins.on_packet(&f.data, ingress(&f.data), t, &mut out);
    }
    for port in 0..640u16 {
        t += 1_000;
        assert_eq!(ins.on_packet(&syn(10_000 + port), 0, t, &mut out), Verdict::Forward);
    }
    assert_eq!(ins.flows(), 64, "the table stays full of the flood");
    let mut verdicts = Vec::new();
    for f in &young[1..] {
        t += 1_000;
        verdicts.push(ins.on_packet(&f.data, ingress(&f.data), t, &mut out));
    }
    assert!(
        verdicts.iter().any(|v| matches!(v, Verdict::Drop(_))),
        "forgotten while young, still blocked: {verdicts:?}"
    );

    // Real sessions after the flood: each decided by the policy.
    for (i, sni) in ["casino.test", "news.test", "casino.test"].into_iter().enumerate() {
        let frames = session(&pki, 40200 + i as u16, sni, t);
        for f in &frames {
            t += 1_000;
            ins.on_packet(&f.data, ingress(&f.data), t, &mut out);
        }
    }
    let decided: Vec<(u64, &str)> =
        out.events.iter().map(|e| (e.flow.src_port as u64, e.outcome.carried_out.name())).collect();
    assert_eq!(
        decided,
        vec![(40100, "block"), (40200, "block"), (40201, "do-not-decrypt"), (40202, "block")],
        "{:?}",
        out.events.iter().map(|e| e.outcome.reason()).collect::<Vec<_>>()
    );
    let c = ins.counters();
    assert!(c.evicted >= 640 - 63, "{c:?}");
    assert_eq!(c.table_full, 0, "when_full never applied: there was always a SYN to forget");
    assert_eq!(c.midstream, 0, "the forgotten session was not taken for mid-stream");
}

/// A segment of an established connection (ACK, some payload) from `port`:
/// what every long-lived connection sends after tlsgate starts.
fn midstream(port: u16, seq: u32) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 0, 2, 10], [198, 51, 100, 20], 64)
        .tcp(port, 443, seq, 64240)
        .ack(1)
        .write(&mut v, &[0x17; 200])
        .unwrap();
    v
}

#[test]
fn mid_stream_connections_are_remembered_and_forgotten_first() {
    let (_dir, pki, mut ins) = small_table("midstream-flood");
    let mut out = Output::default();
    let mut t = START_NS;

    // Ten connections older than tlsgate, a hundred segments each: each is
    // taken for mid-stream once, then known (a lookup a packet, no checksum,
    // no second count).
    for round in 0..100u32 {
        for port in 0..10u16 {
            t += 1_000;
            assert_eq!(ins.on_packet(&midstream(20_000 + port, round * 200), 0, t, &mut out), Verdict::Forward);
        }
    }
    assert_eq!((ins.counters().midstream, ins.flows()), (10, 10));

    // A flood of them fills the table (what finds it full is not remembered) ...
    for port in 0..640u16 {
        t += 1_000;
        assert_eq!(ins.on_packet(&midstream(30_000 + port, 0), 0, t, &mut out), Verdict::Forward);
    }
    assert_eq!(ins.flows(), 64);
    // ... and costs real sessions nothing: each is decided by the policy, on
    // a new 5-tuple or on one the table knew as mid-stream (its SYN starts a
    // session), and a mid-stream entry is forgotten for each new one.
    let known = 30_000;
    for (port, sni) in [(40_300, "casino.test"), (40_301, "news.test"), (known, "casino.test")] {
        for f in &session(&pki, port, sni, t) {
            t += 1_000;
            ins.on_packet(&f.data, ingress(&f.data), t, &mut out);
        }
    }
    let decided: Vec<(u64, &str)> =
        out.events.iter().map(|e| (e.flow.src_port as u64, e.outcome.carried_out.name())).collect();
    assert_eq!(decided, vec![(40_300, "block"), (40_301, "do-not-decrypt"), (known as u64, "block")]);
    let c = ins.counters();
    assert_eq!(c.table_full, 0, "{c:?}");
    assert_eq!(c.evicted, 2, "one for each new 5-tuple; the known one took its own slot: {c:?}");
    // Forgetting a mid-stream connection does not make later ones suspect:
    // a new one is still forwarded uninspected.
    t += 1_000;
    assert_eq!(ins.on_packet(&midstream(50_000, 0), 0, t, &mut out), Verdict::Forward);
    assert_eq!(ins.counters().midstream, 10 + 640 + 1);
}

#[test]
fn blocked_mid_stream_connections_are_remembered_and_dropped_until_a_syn() {
    let flows = FlowSettings { capacity: 64, midstream: Midstream::Block, ..FlowSettings::default() };
    let (_dir, pki, mut ins) = small_table_with("midstream-block", flows);
    let mut out = Output::default();
    let mut t = START_NS;
    // Ten connections older than tlsgate, a hundred segments each: every
    // segment dropped, each connection counted and remembered once.
    for round in 0..100u32 {
        for port in 0..10u16 {
            t += 1_000;
            let v = ins.on_packet(&midstream(20_000 + port, round * 200), 0, t, &mut out);
            assert_eq!(v, Verdict::Drop(DropReason::Midstream), "round {round} port {port}");
        }
    }
    assert_eq!((ins.counters().midstream, ins.flows()), (10, 10));
    // A SYN on one of their 5-tuples starts a session, decided by the policy.
    for f in &session(&pki, 20_003, "news.test", t) {
        t += 1_000;
        ins.on_packet(&f.data, ingress(&f.data), t, &mut out);
    }
    let decided: Vec<(u64, &str)> =
        out.events.iter().map(|e| (e.flow.src_port as u64, e.outcome.carried_out.name())).collect();
    assert_eq!(decided, vec![(20_003, "do-not-decrypt")]);
}
