//! The worker's side of decryption, sans-IO: real rustls sessions from the
//! generator, fed frame by frame through an inspector that has a slow path.
//! A decrypt decision at the ClientHello hands the flow over (with the TCP
//! state the wire showed); what the slow path says back (ended, excluded,
//! refused) changes how the worker treats the flow and the next sessions.

use std::net::IpAddr;
use std::sync::Arc;

use tlsgate_config::policy::{Action, FinalAction, Policy};
use tlsgate_config::{FlowSettings, Midstream, SlowPathSettings};
use tlsgate_core::escalate::SlowUpdate;
use tlsgate_core::identity::{ExclusionKey, ExclusionReason};
use tlsgate_core::inspect::{Inspector, Output, Verdict};
use tlsgate_core::outcome::{Cause, NotTakenOver, SlowPathFull};
use tlsgate_core::packet::TcpFrame;
use tlsgate_perf::handshake::{tls_session, Pki, SessionSpec};
use tlsgate_tests::Scratch;

const DAY: i64 = 86_400;
/// The generator's sessions start on 2026-01-01.
const START: i64 = 1_767_225_600;

fn policy(dir: &Scratch, pki: &Pki) -> Arc<Policy> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.path("ca.pem"), pki.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("ca.key"), pki.ca_key_pem()).unwrap();
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let text = r#"[policy]
default_action = "do-not-decrypt"

[[ca]]
name = "corp"
cert = "ca.pem"
key = "ca.key"

[[rule]]
name = "inspect-shop"
action = "decrypt-resign"
ca = "corp"
sni = ["shop.test"]
"#;
    std::fs::write(dir.path("policy.toml"), text).unwrap();
    Arc::new(Policy::load(&dir.path("policy.toml")).unwrap())
}

fn inspector(policy: Arc<Policy>, flows: &FlowSettings) -> Inspector {
    let ports: Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    Inspector::new(0, policy, flows, ports).unwrap().with_slow_path(1, &SlowPathSettings::default())
}

fn session(pki: &Pki, port: u16, sni: &str) -> Vec<tlsgate_perf::pcap_out::Frame> {
    let leaf = pki.issue(&[sni], "Shop", START - DAY, START + 30 * DAY);
    let client: IpAddr = "192.0.2.10".parse().unwrap();
    let server: IpAddr = "198.51.100.20".parse().unwrap();
    let spec = SessionSpec::new((client, port), (server, 443), Some(sni), vec![leaf.cert_der], leaf.key_der);
    tls_session(&spec).unwrap()
}

/// Ingress port index of a frame: the client's go in by port 0.
fn ingress(frame: &[u8]) -> usize {
    let t = TcpFrame::parse(frame).unwrap();
    usize::from(t.dst_port != 443)
}

#[test]
fn a_decrypt_decision_hands_the_flow_over_with_what_the_wire_showed() {
    let dir = Scratch::new("escalation");
    let pki = Pki::new("Corp CA");
    let mut ins = inspector(policy(&dir, &pki), &FlowSettings::default());
    let frames = session(&pki, 40001, "shop.test");
    let mut out = Output::default();
    let verdicts: Vec<Verdict> =
        frames.iter().map(|f| ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out)).collect();
    // SYN, SYN-ACK, ACK pass; the ClientHello and everything after go to slow-path lcore 0.
    assert_eq!(&verdicts[..3], &[Verdict::Forward; 3]);
    assert!(verdicts[3..].iter().all(|v| *v == Verdict::Escalate(0)), "{verdicts:?}");
    assert_eq!(out.escalations.len(), 1);
    let (lcore, esc) = &out.escalations[0];
    assert_eq!(*lcore, 0);
    let hello = TcpFrame::parse(&frames[3].data).unwrap();
    assert_eq!(esc.tcp.client_seq, hello.seq, "takeover starts at the ClientHello's first byte");
    assert_eq!(esc.tcp.server_seq, hello.ack);
    let syn = esc.tcp.client.syn.expect("the client's SYN options");
    assert!(syn.mss.is_some());
    assert!(esc.tcp.server.syn.is_some(), "the server's SYN-ACK options");
    assert_eq!(esc.client_port, 0);
    assert_eq!(esc.facts.client_hello.as_ref().unwrap().sni.as_deref(), Some("shop.test"));
    assert_eq!(ins.counters().escalated, 1);
    assert!(out.events.is_empty(), "the slow path writes the event");

    // The slow path ends the session: late packets of the flow are dropped.
    ins.on_slow_update(SlowUpdate::Ended { key: esc.key }, frames[5].unix_ns);
    let late = &frames[frames.len() - 1];
    assert!(matches!(ins.on_packet(&late.data, ingress(&late.data), late.unix_ns, &mut out), Verdict::Drop(_)));
}

#[test]
fn an_excluded_server_is_handled_at_the_client_hello_by_the_exclusion() {
    let dir = Scratch::new("escalation-excluded");
    let pki = Pki::new("Corp CA");
    let mut ins = inspector(policy(&dir, &pki), &FlowSettings::default());
    let frames = session(&pki, 40002, "shop.test");
    ins.on_slow_update(
        SlowUpdate::Excluded {
            key: ExclusionKey::Sni("shop.test".into()),
            action: FinalAction::BlockWithReset,
            reason: ExclusionReason::ClientRejectedCertificate,
        },
        frames[0].unix_ns,
    );
    let mut out = Output::default();
    let verdicts: Vec<Verdict> =
        frames.iter().map(|f| ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out)).collect();
    assert!(out.escalations.is_empty());
    assert!(matches!(verdicts[3], Verdict::Drop(_)), "{verdicts:?}");
    assert_eq!(out.resets.len(), 2, "block-with-reset resets both ends");
    let ev = &out.events[0];
    assert_eq!(ev.outcome.carried_out, Action::BlockWithReset);
    assert!(matches!(ev.outcome.asked, Action::DecryptResign { .. }));
    assert_eq!(ev.outcome.cause, Cause::Excluded(ExclusionReason::ClientRejectedCertificate));
    assert_eq!(ev.outcome.cause.code(), "excluded_pinned");
    assert_eq!(ins.counters().excluded, 1);
}

#[test]
fn a_flow_picked_up_mid_stream_is_not_taken_over_and_the_event_says_why() {
    let dir = Scratch::new("escalation-midstream");
    let pki = Pki::new("Corp CA");
    let flows = FlowSettings { midstream: Midstream::Inspect, ..FlowSettings::default() };
    let mut ins = inspector(policy(&dir, &pki), &flows);
    let frames = session(&pki, 40003, "shop.test");
    let mut out = Output::default();
    // Without the three-way handshake there are no options to take over with.
    for f in &frames[3..] {
        assert_eq!(ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out), Verdict::Forward);
    }
    assert!(out.escalations.is_empty());
    let ev = &out.events[0];
    assert_eq!(ev.outcome.carried_out, Action::DoNotDecrypt);
    assert_eq!(ev.outcome.cause, Cause::NotTakenOver(NotTakenOver::Midstream), "{}", ev.outcome.reason());
}

#[test]
fn a_refused_flow_is_carried_out_as_when_full_says() {
    let dir = Scratch::new("escalation-refused");
    let pki = Pki::new("Corp CA");
    let mut ins = inspector(policy(&dir, &pki), &FlowSettings::default());
    let frames = session(&pki, 40004, "shop.test");
    let mut out = Output::default();
    for f in &frames[..4] {
        ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out);
    }
    let (_, esc) = out.escalations.pop().unwrap();
    ins.on_slow_update(SlowUpdate::Refused { key: esc.key, action: FinalAction::DoNotDecrypt }, frames[4].unix_ns);
    for f in &frames[4..] {
        assert_eq!(ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out), Verdict::Forward);
    }
    // A full ring at escalation: the worker decides at once.
    let frames = session(&pki, 40005, "shop.test");
    for f in &frames[..4] {
        ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out);
    }
    let (_, esc) = out.escalations.pop().unwrap();
    let mut out2 = Output::default();
    assert_eq!(ins.escalation_refused(esc, frames[3].unix_ns, &mut out2), Verdict::Forward);
    assert_eq!(out2.events[0].outcome.cause, Cause::SlowPathFull(SlowPathFull::RingFull));
    assert_eq!(out2.events[0].outcome.cause.code(), "slowpath_full");
    assert_eq!(ins.counters().escalation_refused, 1);
}

/// A ClientHello over several segments (as post-quantum key shares make it):
/// its first segments are held back. Decrypted: they go to the slow path
/// with the flow; not: they go on to the server, in order, as they were.
#[test]
fn a_client_hello_over_several_segments_is_held_back_until_it_is_whole() {
    let dir = Scratch::new("escalation-held");
    let pki = Pki::new("Corp CA");
    let mut ins = inspector(policy(&dir, &pki), &FlowSettings::default());
    let small = |port: u16, sni: &str| {
        let leaf = pki.issue(&[sni], "Shop", START - DAY, START + 30 * DAY);
        let client: IpAddr = "192.0.2.10".parse().unwrap();
        let server: IpAddr = "198.51.100.20".parse().unwrap();
        let mut spec = SessionSpec::new((client, port), (server, 443), Some(sni), vec![leaf.cert_der], leaf.key_der);
        spec.mss = 120;
        tls_session(&spec).unwrap()
    };
    let client_data = |frames: &[tlsgate_perf::pcap_out::Frame]| -> Vec<usize> {
        (0..frames.len())
            .filter(|&i| {
                let t = TcpFrame::parse(&frames[i].data).unwrap();
                t.dst_port == 443 && t.payload_len() > 0
            })
            .collect()
    };

    // Decrypted: every segment of the ClientHello but the last is held, and handed over with the flow.
    let frames = small(40010, "shop.test");
    let hello = client_data(&frames);
    let mut out = Output::default();
    let mut verdicts = Vec::new();
    for f in &frames {
        verdicts.push(ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out));
        if !out.escalations.is_empty() {
            break;
        }
    }
    let (_, esc) = out.escalations.pop().unwrap_or_else(|| {
        panic!("not escalated: {verdicts:?} {:?}", out.events.iter().map(|e| e.outcome.reason()).collect::<Vec<_>>())
    });
    assert!(esc.held.len() >= 2, "the ClientHello spans {} held segments", esc.held.len());
    let last = verdicts.len() - 1;
    let held_ones = hello.iter().filter(|&&i| i < last);
    assert!(held_ones.clone().all(|&i| matches!(verdicts[i], Verdict::Drop(_))), "{verdicts:?}");
    assert_eq!(*verdicts.last().unwrap(), Verdict::Escalate(0));
    assert_eq!(esc.held[0], frames[hello[0]].data, "held as they came");
    assert_eq!(esc.tcp.client_seq, TcpFrame::parse(&frames[hello[0]].data).unwrap().seq, "taken over from the first");
    assert!(out.released.is_empty());

    // Not decrypted: released toward the server, the completing segment last, byte for byte.
    let frames = small(40011, "other.test");
    let hello = client_data(&frames);
    let mut out = Output::default();
    let mut released_at = None;
    for (i, f) in frames.iter().enumerate() {
        let v = ins.on_packet(&f.data, ingress(&f.data), f.unix_ns, &mut out);
        if !out.released.is_empty() && released_at.is_none() {
            released_at = Some(i);
            assert!(matches!(v, Verdict::Drop(_)), "the completing segment goes out behind the held ones");
            let want: Vec<&Vec<u8>> = hello.iter().filter(|&&j| j <= i).map(|&j| &frames[j].data).collect();
            assert_eq!(out.released.iter().collect::<Vec<_>>(), want);
        }
    }
    assert!(released_at.is_some_and(|i| i > hello[0]), "held, then released");
    assert_eq!(out.events[0].outcome.carried_out, Action::DoNotDecrypt);
}
