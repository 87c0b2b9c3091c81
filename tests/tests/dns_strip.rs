//! `[dns] strip_ech` end to end: BIND 9 (Debian's `bind9`) serving HTTPS and
//! SVCB records with `ech=` in one network namespace, `dig` asking from
//! another, tlsgate between them on af_packet. The answers dig prints have
//! no ECH configuration left (and no `mandatory=ech` to make a record void),
//! the rest of each record as BIND sent it; answers without ECH are untouched,
//! as is DNS over TCP (which the stripping does not cover).

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tlsgate_tests::netns::{start_tlsgate, stop_and_read_events, Reaper, Topology};
use tlsgate_tests::{dpdk_lock, ech_config_list, run_with_limit, text, Scratch};

/// What dig prints in its answer section (+short), asking `name`/`rtype` over UDP (or TCP).
fn dig(topo: &Topology, name: &str, rtype: &str, tcp: bool) -> Result<String, String> {
    let mut c = topo.exec(&topo.cli, "dig");
    c.args([&format!("@{}", topo.srv_ip), name, rtype, "+short", "+norecurse", "+time=1", "+tries=1"]);
    if tcp {
        c.arg("+tcp");
    }
    let o = run_with_limit(&mut c, Duration::from_secs(10));
    let out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if o.status.success() && !out.is_empty() && !out.contains("timed out") {
        Ok(out)
    } else {
        Err(text(&o))
    }
}

#[test]
fn dig_through_tlsgate_gets_bind9s_https_and_svcb_records_without_ech() {
    let _g = dpdk_lock();
    let topo = Topology::new(11);
    let dir = Scratch::new("e2e-dns");
    let list = ech_config_list("ech.shop.test");
    let raw = dir.path("ech.bin");
    std::fs::write(&raw, &list).unwrap();
    let b64 = run_with_limit(std::process::Command::new("base64").arg("-w0").arg(&raw), Duration::from_secs(5));
    let ech = String::from_utf8(b64.stdout).unwrap();
    assert!(ech.len() > 40, "base64 of the ECHConfigList");
    let zone = format!(
        "$TTL 300\n@ IN SOA ns.shop.test. admin.shop.test. 1 3600 600 86400 300\n@ IN NS ns.shop.test.\n\
         ns IN A {srv}\nwww IN A {srv}\n\
         www IN HTTPS 1 . alpn=\"h2,h3\" ech=\"{ech}\" ipv4hint={srv}\n\
         svc IN SVCB 1 www.shop.test. mandatory=ech ech=\"{ech}\" port=8443\n\
         plain IN HTTPS 1 . alpn=\"h2\"\n",
        srv = topo.srv_ip
    );
    std::fs::write(dir.path("shop.zone"), zone).unwrap();
    let conf = format!(
        "options {{ directory \"{d}\"; pid-file \"{d}/named.pid\"; listen-on port 53 {{ {srv}; }};\n\
         listen-on-v6 {{ none; }}; recursion no; dnssec-validation no; allow-query {{ any; }}; }};\n\
         controls {{ }};\nzone \"shop.test\" {{ type primary; file \"{d}/shop.zone\"; }};\n",
        d = dir.0.display(),
        srv = topo.srv_ip
    );
    let conf_path = dir.path("named.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let named = topo
        .exec(&topo.srv, "named")
        .args(["-g", "-c"])
        .arg(&conf_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _named = Reaper(Some(named));

    std::fs::write(dir.path("policy.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let cfg = dir.path("tlsgate.toml");
    let settings = format!(
        "policy = \"policy.toml\"\nevents = \"events.json\"\n\n[dns]\nstrip_ech = true\n\n{}",
        topo.settings(2)
    );
    std::fs::File::create(&cfg).unwrap().write_all(settings.as_bytes()).unwrap();
    let json = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", json.to_str().unwrap()]);

    // The A record, once BIND and tlsgate are up (bounded retries).
    let start = Instant::now();
    loop {
        match dig(&topo, "www.shop.test", "A", false) {
            Ok(a) => {
                assert_eq!(a, topo.srv_ip);
                break;
            }
            Err(e) => assert!(start.elapsed() < Duration::from_secs(30), "no answer through tlsgate: {e}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }

    // Over TCP, untouched: the records really carry ECH.
    let tcp = dig(&topo, "www.shop.test", "HTTPS", true).unwrap();
    assert!(tcp.contains(&format!("ech={ech}")), "{tcp}");
    let https = dig(&topo, "www.shop.test", "HTTPS", false).unwrap();
    assert_eq!(https, format!("1 . alpn=\"h2,h3\" ipv4hint={}", topo.srv_ip));
    let svcb = dig(&topo, "svc.shop.test", "SVCB", false).unwrap();
    assert_eq!(svcb, "1 www.shop.test. port=8443");
    let plain = dig(&topo, "plain.shop.test", "HTTPS", false).unwrap();
    assert_eq!(plain, "1 . alpn=\"h2\"");

    let (log, evs) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let dns: Vec<&serde_json::Value> = evs.iter().filter(|e| e["event_type"] == "dns").collect();
    assert_eq!(dns.len(), 2, "one event per rewritten answer:\n{log}");
    for (e, (name, rtype)) in dns.iter().zip([("www.shop.test", "HTTPS"), ("svc.shop.test", "SVCB")]) {
        assert_eq!(e["dns"]["rrname"], name, "{e}");
        assert_eq!(e["dns"]["rrtype"], rtype, "{e}");
        assert_eq!(e["dns"]["ech_removed"], 1, "{e}");
        assert_eq!(e["dns"]["rcode"], "NOERROR", "{e}");
        assert_eq!(e["proto"], "UDP");
        assert_eq!(e["src_ip"], topo.srv_ip.as_str());
        assert_eq!(e["src_port"], 53);
        assert_eq!(e["policy"]["reason_code"], "dns_ech_stripped", "{e}");
    }
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let sum = |name: &str| -> u64 {
        c["workers"].as_array().unwrap().iter().map(|w| w["inspection"][name].as_u64().unwrap_or(0)).sum()
    };
    assert_eq!(sum("dns_ech_stripped"), 2, "{c}");
    assert_eq!(sum("dns_ech_removed"), 2, "{c}");
    assert!(sum("dns_answers") >= 4, "{c}");
    assert_eq!(sum("dns_untouched_malformed"), 0, "{c}");
}

/// A DNS answer for `name` with one HTTPS record carrying `ech`, from `server` to a client.
fn https_answer(name: &str, ech: &[u8]) -> Vec<u8> {
    let mut m = vec![0x51, 0x52, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    for l in name.split('.') {
        m.push(l.len() as u8);
        m.extend_from_slice(l.as_bytes());
    }
    m.extend_from_slice(&[0, 0, 65, 0, 1]);
    let mut rdata = vec![0, 1, 0]; // priority 1, target "."
    rdata.extend_from_slice(&[0, 1, 0, 3, 2, b'h', b'3']); // alpn=h3
    rdata.extend_from_slice(&5u16.to_be_bytes());
    rdata.extend_from_slice(&(ech.len() as u16).to_be_bytes());
    rdata.extend_from_slice(ech);
    m.extend_from_slice(&[0xc0, 12, 0, 65, 0, 1, 0, 0, 1, 44]);
    m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    m.extend_from_slice(&rdata);
    m
}

#[test]
fn replay_strips_ech_from_ipv4_and_ipv6_answers_with_their_checksums_remade() {
    use tlsgate_perf::pcap_out::{write_pcap, Frame};
    let dir = Scratch::new("dns-replay");
    let ech = ech_config_list("ech.shop.test");
    let answer = https_answer("www.shop.test", &ech);
    let mut v4 = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv4([192, 0, 2, 53], [198, 51, 100, 7], 64)
        .udp(53, 40_001)
        .write(&mut v4, &answer)
        .unwrap();
    let mut v6 = Vec::new();
    etherparse::PacketBuilder::ethernet2([2; 6], [4; 6])
        .ipv6(
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x53],
            [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
            64,
        )
        .udp(53, 40_002)
        .write(&mut v6, &answer)
        .unwrap();
    let frames: Vec<Frame> = [&v4, &v6]
        .iter()
        .enumerate()
        .map(|(i, d)| Frame { unix_ns: 1_767_225_600_000_000_000 + i as u64, data: d.to_vec() })
        .collect();
    let pcap = dir.path("dns.pcap");
    write_pcap(&pcap, &frames).unwrap();
    std::fs::write(dir.path("p.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let r = tlsgate_tests::replay_with(&pcap, Some(&dir.path("p.toml")), &dir, &["--strip-ech"]);
    assert_eq!(r.frames.len(), 2, "{}", text(&r.output));
    for f in &r.frames {
        let p = etherparse::SlicedPacket::from_ethernet(f).unwrap();
        let Some(etherparse::TransportSlice::Udp(u)) = p.transport else { panic!("UDP") };
        let payload = u.payload();
        // The ech parameter gone, its 4-byte key and length with it.
        assert_eq!(payload.len(), answer.len() - 4 - ech.len(), "{payload:02x?}");
        let s = tlsgate_core::dns::strip_ech(payload).unwrap();
        assert_eq!((s.qname.as_str(), s.svcb_records, s.removed), ("www.shop.test", 1, 0));
        // The checksums the receiver checks, as etherparse computes them: the
        // IPv4 header's, and UDP's over its pseudo-header.
        let udp = u.to_header();
        let expected = match &p.net {
            Some(etherparse::InternetSlice::Ipv4(ip)) => {
                let h = ip.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 header checksum remade");
                udp.calc_checksum_ipv4(&h, payload).unwrap()
            }
            Some(etherparse::InternetSlice::Ipv6(ip)) => {
                udp.calc_checksum_ipv6(&ip.header().to_header(), payload).unwrap()
            }
            _ => panic!("IP"),
        };
        assert_eq!(udp.checksum, expected, "UDP checksum remade");
    }
    let dns: Vec<_> = r.events.iter().filter(|e| e["event_type"] == "dns").collect();
    assert_eq!(dns.len(), 2, "{:?}", r.events);
    assert!(dns.iter().all(|e| e["dns"]["ech_removed"] == 1 && e["dns"]["rrtype"] == "HTTPS"));
    // Without --strip-ech: untouched.
    let r = tlsgate_tests::replay_with(&pcap, Some(&dir.path("p.toml")), &dir, &[]);
    assert_eq!(r.frames, vec![v4, v6]);
}
