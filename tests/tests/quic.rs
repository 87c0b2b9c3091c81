//! QUIC sessions decided by the policy, through the real binary on FoxIO's
//! captures of real browsers: every QUIC stream FoxIO lists has a `quic`
//! event with its SNI and JA4 as FoxIO computes them; a block rule on an SNI
//! lets none of that flow's later datagrams through; a decrypt rule cannot
//! be carried out on QUIC and takes `undecryptable.quic` (default block: the
//! browser falls back to TCP); everything else is forwarded, and read on to
//! the server's Initial for the ServerHello's cipher suite.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use tlsgate_perf::handshake::Pki;
use tlsgate_tests::{dpdk_lock, foxio_streams, replay, testdata, Scratch};

/// FoxIO's udp streams: capture -> [(client address, client port, SNI, JA4)].
fn foxio_quic() -> HashMap<String, Vec<(String, u64, String, String)>> {
    let mut out: HashMap<String, Vec<_>> = HashMap::new();
    for f in foxio_streams("udp") {
        out.entry(f.capture).or_default().push((f.src, f.src_port, f.sni, f.ja4));
    }
    out
}

/// The UDP source port of an Ethernet frame carrying IPv4 or IPv6 UDP, if it does.
fn udp_ports(f: &[u8]) -> Option<(u16, u16)> {
    let p = etherparse::SlicedPacket::from_ethernet(f).ok()?;
    match p.transport? {
        etherparse::TransportSlice::Udp(u) => Some((u.source_port(), u.destination_port())),
        _ => None,
    }
}

#[test]
fn quic_sessions_are_logged_as_foxio_reads_them_and_decided_by_the_policy() {
    let _dpdk = dpdk_lock();
    let dir = Scratch::new("quic");
    let ca = Pki::new("QUIC Test CA");
    std::fs::write(dir.path("ca.pem"), ca.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("ca.key"), ca.ca_key_pem()).unwrap();
    std::fs::set_permissions(dir.path("ca.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(
        dir.path("policy.toml"),
        r#"[policy]
default_action = "do-not-decrypt"

[[ca]]
name = "resigner"
cert = "ca.pem"
key = "ca.key"

[[rule]]
name = "no-google"
action = "block"
sni = ["www.google.com"]

[[rule]]
name = "resign-cloudflare"
action = "decrypt-resign"
ca = "resigner"
sni = ["*.cloudflare.com", "cloudflare-quic.com"]
"#,
    )
    .unwrap();
    let streams = foxio_quic();
    assert!(streams.values().map(Vec::len).sum::<usize>() >= 40);
    let (mut blocked, mut undecryptable, mut forwarded, mut with_server_hello) = (0, 0, 0, 0);
    for (capture, expected) in &streams {
        let r = replay(&testdata().join("ja4/pcap").join(capture), Some(&dir.path("policy.toml")), &dir);
        for (src, port, sni, ja4) in expected {
            let e = r
                .events
                .iter()
                .find(|e| e["src_ip"] == src.as_str() && e["src_port"] == *port && e["event_type"] == "quic")
                .unwrap_or_else(|| panic!("{capture}: no quic event for {src}:{port}: {}", r.stdout()));
            assert_eq!(e["proto"], "UDP", "{e}");
            // pcapng timestamps in the interfaces' own resolution (FoxIO captured these in 2023-2024).
            assert!(e["timestamp"].as_str().is_some_and(|t| t.starts_with("202")), "{e}");
            assert_eq!(e["quic"]["sni"], sni.as_str(), "{capture}: {e}");
            assert_eq!(e["quic"]["ja4"], ja4.as_str(), "{capture}: {e}");
            assert_eq!(e["quic"]["version"], "1", "{e}");
            let out_of_flow = r.frames.iter().filter(|f| udp_ports(f).is_some_and(|(s, _)| u64::from(s) == *port));
            let passed = out_of_flow.count();
            match sni.as_str() {
                "www.google.com" => {
                    assert_eq!(e["policy"]["actual_action"], "block", "{e}");
                    assert_eq!(e["policy"]["rule"], "no-google", "{e}");
                    assert_eq!(passed, 0, "{capture}: a blocked QUIC flow's datagrams passed");
                    blocked += 1;
                }
                s if s.ends_with("cloudflare.com") || s == "cloudflare-quic.com" => {
                    assert_eq!(e["policy"]["expected_action"], "decrypt-resign", "{e}");
                    assert_eq!(e["policy"]["actual_action"], "block", "{e}");
                    assert_eq!(e["policy"]["reason_code"], "undecryptable_quic", "{e}");
                    undecryptable += 1;
                }
                _ => {
                    assert_eq!(e["policy"]["actual_action"], "do-not-decrypt", "{e}");
                    assert!(passed > 0, "{capture}: a do-not-decrypt QUIC flow was not forwarded");
                    forwarded += 1;
                    // Read on to the server's Initial: its ServerHello's cipher suite.
                    if let Some(c) = e["quic"].get("cipher_suite") {
                        assert_eq!(c, "TLS_AES_128_GCM_SHA256", "{e}");
                        with_server_hello += 1;
                    }
                }
            }
        }
    }
    assert!(blocked > 0 && forwarded > 0, "blocked {blocked}, forwarded {forwarded}");
    assert!(undecryptable > 0, "no cloudflare QUIC stream in the captures");
    assert!(with_server_hello > 0, "no forwarded QUIC session showed its server's Initial");
}

/// The UDP datagrams of a capture as Ethernet frames (addresses and ports
/// kept): FoxIO's captures are of several link types.
fn udp_frames(capture: &str) -> Vec<Vec<u8>> {
    let raw = std::fs::read(testdata().join("ja4/pcap").join(capture)).unwrap();
    let mut r = pcap_file::pcapng::PcapNgReader::new(&raw[..]).unwrap();
    let mut links = Vec::new();
    let mut out = Vec::new();
    while let Some(block) = r.next_block() {
        match block.unwrap() {
            pcap_file::pcapng::Block::InterfaceDescription(idb) => links.push(u32::from(idb.linktype)),
            pcap_file::pcapng::Block::EnhancedPacket(p) => {
                let link = links.get(p.interface_id as usize).copied().unwrap_or(1);
                let data = p.data.to_vec();
                let sliced = if link == 1 {
                    etherparse::SlicedPacket::from_ethernet(&data).ok()
                } else {
                    etherparse::SlicedPacket::from_ip(&data).ok()
                };
                let Some(s) = sliced else { continue };
                let (Some(etherparse::NetSlice::Ipv4(ip)), Some(etherparse::TransportSlice::Udp(u))) =
                    (&s.net, &s.transport)
                else {
                    continue;
                };
                let mut f = Vec::new();
                etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
                    .ipv4(ip.header().source(), ip.header().destination(), 64)
                    .udp(u.source_port(), u.destination_port())
                    .write(&mut f, u.payload())
                    .unwrap();
                out.push(f);
            }
            _ => {}
        }
    }
    out
}

#[test]
fn a_flood_of_initials_cannot_switch_quic_inspection_off() {
    use tlsgate_core::inspect::{Inspector, Output, Verdict};
    let dir = Scratch::new("quic-flood");
    std::fs::write(dir.path("p.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-google\"\naction = \"block\"\nsni = [\"www.google.com\"]\n").unwrap();
    let policy = std::sync::Arc::new(tlsgate_config::policy::Policy::load(&dir.path("p.toml")).unwrap());
    let flows = tlsgate_config::FlowSettings { capacity: 64, ..Default::default() };
    let ports: std::sync::Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let mut ins = Inspector::new(0, policy, &flows, ports).unwrap();
    let mut out = Output::default();
    let mut now = 1_700_000_000_000_000_000u64;
    // Ten tables' worth of Initials that never decrypt, each its own flow.
    for i in 0..160u16 {
        let mut payload = vec![0xc0, 0, 0, 0, 1, 8];
        payload.extend_from_slice(&u64::from(i).to_be_bytes());
        payload.extend_from_slice(&[0, 0, 0x44, 0xd0]);
        payload.resize(1200, 0x5a);
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
            .ipv4([203, 0, 113, 9], [198, 51, 100, 1], 64)
            .udp(20_000 + i, 443)
            .write(&mut f, &payload)
            .unwrap();
        now += 1000;
        assert_eq!(ins.on_packet(&f, 0, now, &mut out), Verdict::Forward);
    }
    // Then a real browser's session, blocked by the policy.
    let mut verdicts = Vec::new();
    for f in udp_frames("quic-tls-handshake.pcapng") {
        now += 1000;
        verdicts.push(ins.on_packet(&f, 0, now, &mut out));
    }
    assert!(verdicts.iter().any(|v| matches!(v, Verdict::Drop(_))), "{verdicts:?}");
    assert!(
        ins.counters().evicted > 0 && ins.counters().table_full == 0,
        "{:?}",
        ins.counters().named().collect::<Vec<_>>()
    );
    let e = out.events.iter().map(|e| e.to_json()).find(|e| e["quic"]["sni"] == "www.google.com").expect("its event");
    assert_eq!(e["policy"]["actual_action"], "block", "{e}");
}

/// A session between quinn's client and server (quinn-proto, joined in
/// memory), as frames.
fn quinn_session(sni: &str, alpn: &[&str], retry: bool) -> Vec<tlsgate_perf::pcap_out::Frame> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let pki = Pki::new("QUIC Test CA");
    let leaf = pki.issue(&[sni], "Shop Inc", 1_700_000_000, 2_000_000_000);
    let shape = tlsgate_perf::quic::SessionShape {
        client: "198.51.100.7:50123".parse().unwrap(),
        server: "203.0.113.80:443".parse().unwrap(),
        sni: sni.into(),
        alpn: alpn.iter().map(|a| a.as_bytes().to_vec()).collect(),
        retry,
        start_unix_ns: 1_767_225_600_000_000_000,
    };
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
    let (frames, page) = tlsgate_perf::quic::session_frames(
        &shape,
        vec![CertificateDer::from(leaf.cert_der.clone())],
        key,
        vec![CertificateDer::from(pki.ca_cert_der())],
    )
    .unwrap();
    assert_eq!(page, b"<html>over QUIC</html>\n", "the session itself worked");
    frames
}

#[test]
fn quinn_sessions_with_several_initials_and_a_retry_are_read_and_decided() {
    use tlsgate_core::inspect::{Inspector, Output, Verdict};
    let dir = Scratch::new("quic-quinn");
    std::fs::write(
        dir.path("p.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-casino\"\naction = \"block\"\n\
         sni = [\"www.casino.test\"]\ntransport = [\"quic\"]\n",
    )
    .unwrap();
    let policy = std::sync::Arc::new(tlsgate_config::policy::Policy::load(&dir.path("p.toml")).unwrap());
    let ports: std::sync::Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    for (sni, retry, blocked) in
        [("www.shop.test", false, false), ("www.shop.test", true, false), ("www.casino.test", true, true)]
    {
        let frames = quinn_session(sni, &["h3", "h3-29"], retry);
        // quinn's ClientHello (with its post-quantum key share) spans two Initial packets.
        let client_initials = frames
            .iter()
            .filter(|f| f.data.len() > 42 && f.data[36..38] == [1, 187] && f.data[42] & 0xf0 == 0xc0)
            .count();
        assert!(client_initials >= 2 + usize::from(retry), "{client_initials} client Initials ({sni}, retry {retry})");
        let mut ins =
            Inspector::new(0, policy.clone(), &tlsgate_config::FlowSettings::default(), ports.clone()).unwrap();
        let mut out = Output::default();
        let mut verdicts = Vec::new();
        let mut released = Vec::new();
        for f in &frames {
            let to_server = f.data[36..38] == [1, 187];
            verdicts.push(ins.on_packet(&f.data, usize::from(!to_server), f.unix_ns, &mut out));
            released.append(&mut out.released);
        }
        let held: Vec<&[u8]> = frames
            .iter()
            .zip(&verdicts)
            .filter(|(_, v)| **v == Verdict::Drop(tlsgate_core::inspect::DropReason::QuicHeld))
            .map(|(f, _)| &f.data[..])
            .collect();
        let c = ins.counters();
        assert_eq!(c.quic_flows, 1, "{:?}", c.named().collect::<Vec<_>>());
        assert_eq!(c.quic_undecodable, 0);
        let e = out.events.iter().map(|e| e.to_json()).find(|e| e["event_type"] == "quic").expect("a quic event");
        assert_eq!(e["quic"]["sni"], sni, "{e}");
        assert_eq!(e["quic"]["version"], "1");
        assert_eq!(e["quic"]["alpn"], serde_json::json!(["h3", "h3-29"]));
        assert!(e["quic"]["ja4"].as_str().unwrap().starts_with("q13d"), "{e}");
        if blocked {
            assert_eq!(e["policy"]["actual_action"], "block", "{e}");
            assert_eq!(e["policy"]["rule"], "no-casino");
            // Nothing goes through, the first part of the ClientHello (held) included.
            assert!(verdicts.iter().all(|v| matches!(v, Verdict::Drop(_))), "{verdicts:?}");
            assert!(!held.is_empty() && released.is_empty());
        } else {
            assert_eq!(e["policy"]["actual_action"], "do-not-decrypt", "{e}");
            // The ClientHello's first Initial is held until the rest came and
            // the flow passed, then sent on ahead of it; all else is forwarded.
            assert!(!held.is_empty(), "{verdicts:?}");
            assert_eq!(released, held, "what was held goes on, byte for byte");
            assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Forward).count() + held.len(), frames.len());
            // Read on to the server's Initial: its ServerHello's cipher suite
            // (rustls's server prefers AES-256 where the client offers it first).
            assert_eq!(e["quic"]["cipher_suite"], "TLS_AES_256_GCM_SHA384", "{e}");
        }
    }
}

#[test]
fn a_new_quic_connection_on_a_forwarded_flows_five_tuple_is_judged_anew() {
    use tlsgate_core::inspect::{Inspector, Output, Verdict};
    let dir = Scratch::new("quic-reuse");
    std::fs::write(
        dir.path("p.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-casino\"\naction = \"block\"\n\
         sni = [\"www.casino.test\"]\n",
    )
    .unwrap();
    let policy = std::sync::Arc::new(tlsgate_config::policy::Policy::load(&dir.path("p.toml")).unwrap());
    let ports: std::sync::Arc<[String]> = vec!["a".to_string(), "b".to_string()].into();
    let mut ins = Inspector::new(0, policy, &tlsgate_config::FlowSettings::default(), ports).unwrap();
    let mut out = Output::default();
    // A benign connection, then, from the same client port, one to a blocked name.
    let benign = quinn_session("www.shop.test", &["h3"], false);
    let evil = quinn_session("www.casino.test", &["h3"], false);
    let mut verdicts = Vec::new();
    let mut t = 0;
    let mut released = 0;
    for (i, f) in benign.iter().chain(&evil).enumerate() {
        let to_server = f.data[36..38] == [1, 187];
        t = t.max(f.unix_ns) + 1000;
        let v = ins.on_packet(&f.data, usize::from(!to_server), t, &mut out);
        released += out.released.drain(..).count();
        verdicts.push((i >= benign.len(), to_server, v));
    }
    let benign_verdicts: Vec<_> = verdicts.iter().filter(|(evil, ..)| !evil).map(|(_, _, v)| *v).collect();
    let benign_held = benign_verdicts.iter().filter(|v| matches!(v, Verdict::Drop(_))).count();
    assert_eq!(benign_held, released, "the benign connection passes whole: {benign_verdicts:?}");
    // The evil connection's first Initial is judged: it and everything after are dropped.
    assert!(verdicts.iter().filter(|(evil, ..)| *evil).all(|(_, _, v)| matches!(v, Verdict::Drop(_))), "{verdicts:?}");
    assert_eq!((ins.counters().quic_flows, ins.counters().quic_reconnects), (2, 1));
    let evs: Vec<_> = out.events.iter().map(|e| e.to_json()).collect();
    assert_eq!(evs.len(), 2, "{evs:?}");
    assert_eq!(evs[0]["quic"]["sni"], "www.shop.test");
    assert_eq!(evs[1]["quic"]["sni"], "www.casino.test");
    assert_eq!(evs[1]["policy"]["actual_action"], "block");
}
