//! The handshake observer against real captures (Zeek's TLS traces and
//! pcapFS's feature test), checked against Zeek's own ssl.log / x509.log rows
//! and pcapFS's expected certificates. See shared/testdata/README.md.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use pcap_file::pcap::PcapReader;
use tlsgate_config::facts::{
    cipher_suite_name, CertStatus, ClientHelloFacts, DistinguishedName, ServerHelloFacts, TlsVersion,
};
use tlsgate_core::tls::{
    certificate_facts, CertVerifier, Direction, HandshakeObserver, LargeMessages, ObserverEvent, ObserverLimits,
};

const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/testdata/public");

fn testdata(rel: &str) -> PathBuf {
    Path::new(TESTDATA).join(rel)
}

/// An address and port.
type Endpoint = (IpAddr, u16);

/// One TCP connection of a capture and what the observer made of it.
#[derive(Debug)]
struct Flow {
    client: (IpAddr, u16),
    server: (IpAddr, u16),
    events: Vec<ObserverEvent>,
    /// Payload segments per direction, as (seq, bytes), in capture order.
    segments: Vec<(Direction, u32, Vec<u8>)>,
    initial_seq: Vec<(Direction, u32)>,
}

impl Flow {
    fn client_hellos(&self) -> Vec<&ClientHelloFacts> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ObserverEvent::ClientHello(c) => Some(&**c),
                _ => None,
            })
            .collect()
    }

    fn server_hello(&self) -> Option<&ServerHelloFacts> {
        self.events.iter().find_map(|e| match e {
            ObserverEvent::ServerHello(s) => Some(s),
            _ => None,
        })
    }

    fn chain(&self) -> Option<&Vec<Vec<u8>>> {
        self.events.iter().find_map(|e| match e {
            ObserverEvent::Certificate { chain } => Some(chain),
            _ => None,
        })
    }

    fn has(&self, event: &ObserverEvent) -> bool {
        self.events.contains(event)
    }
}

/// The fragmented-handshake trace carries a 340 KB Certificate message: it
/// needs a larger limit than the default 64 KiB (which reports an overflow).
fn large() -> ObserverLimits {
    ObserverLimits { max_buffer: 512 * 1024, ..ObserverLimits::default() }
}

/// Reads a capture with the default limits.
fn run_capture(rel: &str) -> Vec<Flow> {
    run_capture_with(rel, ObserverLimits::default())
}

/// Reads a (possibly gzip'd) pcap of Ethernet frames, splits TCP flows by
/// 5-tuple and feeds each flow's payloads to its own observer.
fn run_capture_with(rel: &str, limits: ObserverLimits) -> Vec<Flow> {
    let mut raw = Vec::new();
    File::open(testdata(rel)).unwrap().read_to_end(&mut raw).unwrap();
    if rel.ends_with(".gz") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice()).read_to_end(&mut out).unwrap();
        raw = out;
    }
    let mut reader = PcapReader::new(raw.as_slice()).unwrap();
    let mut flows: Vec<Flow> = Vec::new();
    let mut observers: Vec<HandshakeObserver> = Vec::new();
    let mut index: HashMap<(Endpoint, Endpoint), usize> = HashMap::new();
    while let Some(packet) = reader.next_packet() {
        let packet = packet.unwrap();
        let Ok(sliced) = SlicedPacket::from_ethernet(&packet.data) else { continue };
        let (src, dst) = match &sliced.net {
            Some(NetSlice::Ipv4(ip)) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
            Some(NetSlice::Ipv6(ip)) => {
                (IpAddr::from(ip.header().source_addr()), IpAddr::from(ip.header().destination_addr()))
            }
            _ => continue,
        };
        let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else { continue };
        let from = (src, tcp.source_port());
        let to = (dst, tcp.destination_port());
        let key = if from < to { (from, to) } else { (to, from) };
        let i = *index.entry(key).or_insert_with(|| {
            let client_is_src = if tcp.syn() {
                !tcp.ack()
            } else if [443, 4433].contains(&to.1) {
                true
            } else {
                ![443, 4433].contains(&from.1)
            };
            let (client, server) = if client_is_src { (from, to) } else { (to, from) };
            flows.push(Flow { client, server, events: Vec::new(), segments: Vec::new(), initial_seq: Vec::new() });
            observers.push(HandshakeObserver::new(limits));
            flows.len() - 1
        });
        let flow = &mut flows[i];
        let observer = &mut observers[i];
        let dir = if from == flow.client { Direction::ToServer } else { Direction::ToClient };
        if tcp.syn() {
            let next = tcp.sequence_number().wrapping_add(1);
            observer.set_initial_seq(dir, next);
            flow.initial_seq.push((dir, next));
        }
        let payload = tcp.payload();
        if !payload.is_empty() {
            observer.on_segment(dir, tcp.sequence_number(), payload);
            flow.segments.push((dir, tcp.sequence_number(), payload.to_vec()));
        }
        while let Some(event) = observer.poll_event() {
            flow.events.push(event);
        }
        assert!(observer.buffered() <= 2 * limits.max_buffer + 18432);
    }
    flows
}

/// Re-feeds a flow's segments in groups of `group`, each group in reverse
/// order (so each direction's segments arrive out of order).
fn replay_reversed(flow: &Flow, group: usize, limits: ObserverLimits) -> Vec<ObserverEvent> {
    let mut o = HandshakeObserver::new(limits);
    for (dir, seq) in &flow.initial_seq {
        o.set_initial_seq(*dir, *seq);
    }
    for chunk in flow.segments.chunks(group) {
        for (dir, seq, payload) in chunk.iter().rev() {
            o.on_segment(*dir, *seq, payload);
        }
    }
    std::iter::from_fn(|| o.poll_event()).collect()
}

fn sha256_hex(der: &[u8]) -> String {
    let facts = certificate_facts(der).unwrap();
    facts.sha256.iter().map(|b| format!("{b:02x}")).collect()
}

/// Rows of a Zeek ground-truth TSV as column name -> value maps.
fn tsv(rel: &str) -> Vec<HashMap<String, String>> {
    let text = std::fs::read_to_string(testdata(rel)).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| header.iter().map(|h| h.to_string()).zip(l.split('\t').map(str::to_string)).collect())
        .collect()
}

fn zeek_version(v: &str) -> Option<TlsVersion> {
    Some(match v {
        "SSLv2" => TlsVersion::Ssl2,
        "SSLv3" => TlsVersion::Ssl3,
        "TLSv10" => TlsVersion::Tls10,
        "TLSv11" => TlsVersion::Tls11,
        "TLSv12" => TlsVersion::Tls12,
        "TLSv13" => TlsVersion::Tls13,
        _ => return None,
    })
}

/// Zeek's `CN=a,O=b` (most specific first) as attributes in certificate order.
fn zeek_dn(s: &str) -> Vec<(String, String)> {
    let mut attrs: Vec<(String, String)> = s
        .split(',')
        .map(|part| {
            let (k, v) = part.split_once('=').unwrap();
            (k.to_string(), v.to_string())
        })
        .collect();
    attrs.reverse();
    attrs
}

#[test]
fn ssl_log_ground_truth() {
    let mut checked = 0;
    let mut captures: HashMap<String, Vec<Flow>> = HashMap::new();
    for row in tsv("zeek/ssl-ground-truth.tsv") {
        let trace = &row["traces_used_by_test"];
        let flows =
            captures.entry(trace.clone()).or_insert_with(|| run_capture_with(&format!("zeek/{trace}"), large()));
        let client = (row["id.orig_h"].parse::<IpAddr>().unwrap(), row["id.orig_p"].parse::<u16>().unwrap());
        let server = (row["id.resp_h"].parse::<IpAddr>().unwrap(), row["id.resp_p"].parse::<u16>().unwrap());
        let flow = flows.iter().find(|f| f.client == client && f.server == server).unwrap_or_else(|| {
            panic!("{trace}: no flow {client:?} -> {server:?}");
        });
        let what = format!("{trace} {client:?}: {:?}", flow.events);
        let sh = flow.server_hello().expect(&what);
        assert_eq!(sh.version, zeek_version(&row["version"]), "{what}");
        assert_eq!(cipher_suite_name(sh.cipher_suite), Some(row["cipher"].as_str()), "{what}");
        assert_eq!(sh.resumed, row["resumed"] == "T", "{what}");
        let ch = flow.client_hellos();
        let sni = ch.first().expect(&what).sni.clone().unwrap_or_else(|| "-".to_string());
        assert_eq!(sni, row["server_name"], "{what}");
        let fps = row["cert_chain_fps"].as_str();
        match flow.chain() {
            Some(chain) => {
                let ours: Vec<String> = chain.iter().map(|c| sha256_hex(c)).collect();
                assert_eq!(ours.join(","), fps, "{what}");
            }
            None => assert!(fps == "-" || fps.is_empty(), "{what}"),
        }
        checked += 1;
    }
    assert_eq!(checked, 6);
}

#[test]
fn x509_log_ground_truth() {
    let mut certs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut checked = 0;
    for row in tsv("zeek/x509-ground-truth.tsv") {
        let trace = &row["traces_used_by_test"];
        if !certs.contains_key(&row["fingerprint"]) {
            for flow in run_capture_with(&format!("zeek/{trace}"), large()) {
                for der in flow.chain().into_iter().flatten() {
                    certs.insert(sha256_hex(der), der.clone());
                }
            }
        }
        let fp = &row["fingerprint"];
        let der = certs.get(fp).unwrap_or_else(|| panic!("{trace}: no certificate {fp}"));
        let facts = certificate_facts(der).unwrap();
        assert_eq!(facts.serial.replace(':', ""), row["certificate.serial"], "{fp}");
        assert_eq!(facts.subject.attributes, zeek_dn(&row["certificate.subject"]), "{fp}");
        assert_eq!(facts.issuer.attributes, zeek_dn(&row["certificate.issuer"]), "{fp}");
        assert_eq!(facts.not_before, row["certificate.not_valid_before"].parse::<f64>().unwrap() as i64, "{fp}");
        assert_eq!(facts.not_after, row["certificate.not_valid_after"].parse::<f64>().unwrap() as i64, "{fp}");
        assert_eq!(facts.signature_algorithm, row["certificate.sig_alg"], "{fp}");
        assert_eq!(facts.key_type, row["certificate.key_type"], "{fp}");
        assert_eq!(facts.key_bits.to_string(), row["certificate.key_length"], "{fp}");
        let san = if facts.san_dns.is_empty() { "-".to_string() } else { facts.san_dns.join(",") };
        assert_eq!(san, row["san.dns"], "{fp}");
        checked += 1;
    }
    assert_eq!(checked, 11);
}

#[test]
fn serial_and_dn_text_forms() {
    let flows = run_capture("zeek/ecdhe.pcap");
    let chain = flows.iter().find_map(Flow::chain).unwrap();
    let leaf = certificate_facts(&chain[0]).unwrap();
    assert_eq!(leaf.serial, "1E:58:FD:C1:2D:E4:C7:03");
    assert_eq!(leaf.subject.to_string(), "C=US, ST=California, L=Mountain View, O=Google Inc, CN=*.google.com");
    assert_eq!(leaf.subject.values("cn").collect::<Vec<_>>(), vec!["*.google.com"]);
    assert_eq!(DistinguishedName::default().to_string(), "");
    assert!(leaf.san_dns.contains(&"youtube.com".to_string()));
    assert!(leaf.san_ip.is_empty());
}

#[test]
fn sslv2_client_hello() {
    let flows = run_capture("zeek/ssl-v2.pcap");
    let ch: Vec<&ClientHelloFacts> = flows.iter().flat_map(Flow::client_hellos).collect();
    assert!(!ch.is_empty(), "{flows:?}");
    let first = ch[0];
    assert!(first.sslv2, "{first:?}");
    // Version 0x0002 and only SSLv2 cipher specs (none below 0x010000).
    assert_eq!(first.versions, vec![TlsVersion::Ssl2]);
    assert!(first.cipher_suites.is_empty());
    assert!(first.ja4.starts_with("ts2i0000"), "{}", first.ja4);
    // The server answers in SSLv2 too.
    assert!(flows[0]
        .events
        .iter()
        .any(|e| matches!(e, ObserverEvent::ServerHello(s) if s.version == Some(TlsVersion::Ssl2))));
}

#[test]
fn hello_retry_request() {
    let flows = run_capture("zeek/hrr.pcap");
    let flow = flows.iter().find(|f| f.has(&ObserverEvent::HelloRetryRequest)).expect("an HRR");
    let what = format!("{:?}", flow.events);
    assert_eq!(flow.client_hellos().len(), 2, "{what}");
    let sh = flow.server_hello().expect(&what);
    assert!(sh.hello_retry, "{what}");
    assert_eq!(sh.version, Some(TlsVersion::Tls13));
    assert!(flow.has(&ObserverEvent::HandshakeDone(Direction::ToClient)));
    let order: Vec<&str> = flow
        .events
        .iter()
        .filter_map(|e| match e {
            ObserverEvent::ClientHello(_) => Some("CH"),
            ObserverEvent::HelloRetryRequest => Some("HRR"),
            ObserverEvent::ServerHello(_) => Some("SH"),
            _ => None,
        })
        .collect();
    assert_eq!(order, vec!["CH", "HRR", "CH", "SH"]);
}

#[test]
fn encrypted_client_hello() {
    let flows = run_capture("zeek/tls13-ech.pcap");
    let hellos: Vec<&ClientHelloFacts> = flows.iter().flat_map(Flow::client_hellos).collect();
    assert!(hellos.len() >= 2);
    for ch in hellos {
        assert!(ch.ech, "{ch:?}");
        assert_eq!(ch.sni.as_deref(), Some("cloudflare-ech.com"));
        assert!(ch.versions.contains(&TlsVersion::Tls13));
        assert!(ch.ja4.starts_with("t13d"), "{}", ch.ja4);
    }
}

#[test]
fn client_certificate_request() {
    let flows = run_capture("zeek/client-certificate.pcap");
    assert!(flows.iter().any(|f| f.has(&ObserverEvent::CertificateRequest)), "{flows:?}");
}

#[test]
fn tls13_psk_resumption() {
    let flows = run_capture("zeek/tls13_psk_succesfull.pcap");
    let resumed: Vec<&ServerHelloFacts> = flows.iter().filter_map(Flow::server_hello).filter(|s| s.resumed).collect();
    assert!(!resumed.is_empty(), "{flows:?}");
    assert!(resumed.iter().all(|s| s.version == Some(TlsVersion::Tls13)));
    assert!(flows.iter().flat_map(Flow::client_hellos).any(|c| c.resumption_offered));
}

#[test]
fn expired_certificate_status() {
    let flows = run_capture("zeek/tls-expired-cert.pcap");
    let chain = flows.iter().find_map(Flow::chain).expect("a certificate chain").clone();
    let leaf = certificate_facts(&chain[0]).unwrap();
    let after = leaf.not_after + 86_400;
    // Without anchors: expired, and no trusted issuer.
    let mut verifier = CertVerifier::new(&[], &[]).unwrap();
    let status = verifier.status(&chain, None, after);
    assert!(status.contains(CertStatus::Expired), "{:?}", status.names());
    assert!(
        status.contains(CertStatus::InvalidIssuer) || status.contains(CertStatus::SelfSigned),
        "{:?}",
        status.names()
    );
    assert!(!status.contains(CertStatus::Valid));
    // Within its validity it is not expired; the cached verdict is reused.
    let during = verifier.status(&chain, None, leaf.not_before + 10);
    assert!(!during.contains(CertStatus::Expired) && !during.contains(CertStatus::NotYetValid));
    assert_eq!(verifier.cached(), 1);
    let before = verifier.status(&chain, None, leaf.not_before - 10);
    assert!(before.contains(CertStatus::NotYetValid));
    // With the chain's own root (if it carries one) as anchor.
    let root = chain.iter().skip(1).find(|c| {
        let f = certificate_facts(c).unwrap();
        f.subject == f.issuer
    });
    if let Some(root) = root {
        let mut verifier = CertVerifier::new(std::slice::from_ref(root), &[]).unwrap();
        let status = verifier.status(&chain, None, after);
        assert!(status.contains(CertStatus::Expired), "{:?}", status.names());
        assert!(!status.contains(CertStatus::InvalidIssuer), "{:?}", status.names());
    }
}

#[test]
fn server_mismatch_follows_sni() {
    let flows = run_capture("zeek/ecdsa-cert.pcap");
    let chain = flows.iter().find_map(Flow::chain).unwrap().clone();
    let leaf = certificate_facts(&chain[0]).unwrap();
    let now = leaf.not_before + 1000;
    let mut verifier = CertVerifier::new(&[], &[]).unwrap();
    assert!(!verifier.status(&chain, Some("www.pantz.org"), now).contains(CertStatus::ServerMismatch));
    assert!(!verifier.status(&chain, None, now).contains(CertStatus::ServerMismatch));
    assert!(verifier.status(&chain, Some("example.com"), now).contains(CertStatus::ServerMismatch));
    assert!(verifier.status(&chain, None, now).contains(CertStatus::InvalidIssuer));
    assert_eq!(verifier.cached(), 1);
    // The chain's top certificate as anchor: the ECDSA chain verifies.
    let top = chain.last().unwrap().clone();
    let mut trusting = CertVerifier::new(&[top], &[]).unwrap();
    let status = trusting.status(&chain, Some("pantz.org"), now);
    assert_eq!(status.names(), vec!["valid"]);
    // Garbage and empty chains are invalid certificates.
    let broken = trusting.status(&[b"not a certificate".to_vec()], None, now);
    assert!(broken.contains(CertStatus::InvalidCertificate));
    assert!(trusting.status(&[], None, now).contains(CertStatus::InvalidCertificate));
}

#[test]
fn fragmented_handshake_and_reordering() {
    // 340 KB of Certificate in 16 KB records: past the default limit ...
    let flows = run_capture("zeek/tls-fragmented-handshake.pcap.gz");
    assert!(flows.iter().any(|f| f.has(&ObserverEvent::Overflow(Direction::ToClient))), "{flows:?}");
    // ... read whole with a larger one.
    let flows = run_capture_with("zeek/tls-fragmented-handshake.pcap.gz", large());
    let flow = flows.iter().find(|f| f.chain().is_some()).expect("a chain");
    let chain = flow.chain().unwrap().clone();
    assert_eq!(chain.len(), 1);
    // The same events when segments come out of order.
    let replayed = replay_reversed(flow, 16, large());
    let replayed_chain = replayed.iter().find_map(|e| match e {
        ObserverEvent::Certificate { chain } => Some(chain.clone()),
        _ => None,
    });
    assert_eq!(replayed_chain, Some(chain));
    for flows in
        ["zeek/tls1.2.pcap", "zeek/ecdhe.pcap", "zeek/hrr.pcap", "zeek/client-certificate.pcap"].map(run_capture)
    {
        for flow in &flows {
            let mut ours: Vec<&ObserverEvent> = flow.events.iter().collect();
            let replayed = replay_reversed(flow, usize::MAX, ObserverLimits::default());
            let mut theirs: Vec<&ObserverEvent> = replayed.iter().collect();
            // Events of the two directions may interleave differently.
            let key = |e: &&ObserverEvent| format!("{e:?}");
            ours.sort_by_key(key);
            theirs.sort_by_key(key);
            assert_eq!(ours, theirs);
        }
    }
}

/// Feeds `flow`'s first `upto` segments, in capture order, to `o`.
fn feed(flow: &Flow, o: &mut HandshakeObserver, upto: usize) -> Vec<ObserverEvent> {
    for (dir, seq) in &flow.initial_seq {
        o.set_initial_seq(*dir, *seq);
    }
    for (dir, seq, payload) in flow.segments.iter().take(upto) {
        o.on_segment(*dir, *seq, payload);
    }
    std::iter::from_fn(|| o.poll_event()).collect()
}

#[test]
fn a_large_server_message_draws_on_a_shared_budget() {
    let flows = run_capture_with("zeek/tls-fragmented-handshake.pcap.gz", large());
    let flow = flows.iter().find(|f| f.chain().is_some()).expect("a chain");
    let chain = flow.chain().unwrap().clone();
    let all = flow.segments.len();
    let observer =
        |large: &LargeMessages| HandshakeObserver::new(ObserverLimits::default()).with_large_messages(large.clone());
    let chain_of = |events: &[ObserverEvent]| {
        events.iter().find_map(|e| match e {
            ObserverEvent::Certificate { chain } => Some(chain.clone()),
            _ => None,
        })
    };

    // With the default 64 KiB buffer and room in the budget: read whole, and
    // the room given back once the message is read.
    let budget = LargeMessages::new(1 << 20, 500_000);
    let mut o = observer(&budget);
    assert_eq!(chain_of(&feed(flow, &mut o, all)), Some(chain.clone()));
    assert_eq!((budget.room(), budget.granted(), budget.refused()), (500_000, 1, 0));

    // Two at once do not fit in 500,000 bytes: the second overflows as before
    // (and is counted), the first goes on; its room comes back with it.
    let mut first = observer(&budget);
    let mut taken = 0;
    while budget.room() == 500_000 && taken < all {
        taken += 1;
        first = observer(&budget);
        feed(flow, &mut first, taken);
    }
    assert!(budget.room() < 500_000, "the first holds budget mid-message");
    let mut second = observer(&budget);
    let events = feed(flow, &mut second, all);
    assert!(events.contains(&ObserverEvent::Overflow(Direction::ToClient)), "{events:?}");
    assert_eq!(budget.refused(), 1);
    drop(first);
    assert_eq!(budget.room(), 500_000, "a dropped observer gives its room back");
    let mut third = observer(&budget);
    assert_eq!(chain_of(&feed(flow, &mut third, all)), Some(chain));

    // Past the limit, no budget is asked for (nothing counted as refused).
    let small = LargeMessages::new(100_000, 1 << 20);
    let mut o = observer(&small);
    assert!(feed(flow, &mut o, all).contains(&ObserverEvent::Overflow(Direction::ToClient)));
    assert_eq!((small.room(), small.granted(), small.refused()), (1 << 20, 0, 0));

    // Only a server's messages: a client's are held to the buffer. A record
    // starting a 4,096-byte message, with a 1,024-byte buffer:
    let start = |kind: u8| vec![22, 3, 3, 0, 8, kind, 0, 0x10, 0, 0, 0, 0, 0];
    let budget = LargeMessages::new(1 << 20, 1 << 20);
    let mut o = HandshakeObserver::new(ObserverLimits { max_buffer: 1024, ..ObserverLimits::default() })
        .with_large_messages(budget.clone());
    o.on_segment(Direction::ToClient, 1, &start(11));
    assert_eq!(o.poll_event(), None, "the server's Certificate is waited for");
    assert_eq!(budget.room(), (1 << 20) - 4096);
    o.on_segment(Direction::ToServer, 1, &start(1));
    assert_eq!(o.poll_event(), Some(ObserverEvent::Overflow(Direction::ToServer)));
    drop(o);
    assert_eq!(budget.room(), 1 << 20);
}

#[test]
fn pcapfs_feature_test() {
    let flows = run_capture("pcapfs/feature_test/feature_test.pcap");
    let tls: Vec<&Flow> = flows.iter().filter(|f| f.server_hello().is_some()).collect();
    assert_eq!(tls.len(), 3, "{flows:?}");
    for flow in &tls {
        let sh = flow.server_hello().unwrap();
        assert_eq!(sh.version, Some(TlsVersion::Tls12));
        let name = cipher_suite_name(sh.cipher_suite).unwrap();
        assert!(name.starts_with("TLS_RSA_WITH_"), "{name}");
        assert!(flow.has(&ObserverEvent::HandshakeDone(Direction::ToClient)));
        assert!(flow.has(&ObserverEvent::HandshakeDone(Direction::ToServer)));
    }
    let ours: Vec<Vec<u8>> = tls.iter().filter_map(|f| f.chain()).map(|c| c[0].clone()).collect();
    let dir = testdata("pcapfs/feature_test/expected_output/tls");
    let mut expected = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("pem") {
            continue;
        }
        let pem = std::fs::read(&path).unwrap();
        let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        assert!(ours.contains(&pem.contents), "{} not seen", path.display());
        expected += 1;
    }
    assert_eq!(expected, 3);
}

#[test]
fn every_capture_is_read_without_errors() {
    let traces = [
        "zeek/client-certificate.pcap",
        "zeek/ecdhe.pcap",
        "zeek/ecdsa-cert.pcap",
        "zeek/hrr.pcap",
        "zeek/ssl-v2.pcap",
        "zeek/tls-expired-cert.pcap",
        "zeek/tls-fragmented-handshake.pcap.gz",
        "zeek/tls1.2.pcap",
        "zeek/tls13-ech.pcap",
        "zeek/tls13_psk_succesfull.pcap",
        "pcapfs/feature_test/feature_test.pcap",
    ];
    let mut verifier = CertVerifier::new(&[], &[]).unwrap();
    for trace in traces {
        for flow in run_capture_with(trace, large()) {
            for e in &flow.events {
                assert!(
                    !matches!(
                        e,
                        ObserverEvent::Malformed { .. } | ObserverEvent::Overflow(_) | ObserverEvent::NotTls(_)
                    ),
                    "{trace} {:?}: {e:?}",
                    flow.client
                );
            }
            if let Some(chain) = flow.chain() {
                for der in chain {
                    certificate_facts(der).unwrap();
                }
                let sni = flow.client_hellos().first().and_then(|c| c.sni.clone());
                let _ = verifier.status(chain, sni.as_deref(), 1_700_000_000);
            }
        }
    }
}

/// JA3 and JA4 of a real ClientHello, pinned after computing both by hand
/// (an independent script over the same bytes gives the same strings).
#[test]
fn ja3_and_ja4_of_a_real_client_hello() {
    let flows = run_capture("zeek/tls1.2.pcap");
    let ch = flows.iter().flat_map(Flow::client_hellos).next().unwrap();
    assert_eq!(
        ch.ja3_string,
        "771,49200-49196-49192-49188-49172-49162-49186-49185-163-159-107-106-57-56-136-135-49202-49198-49194-\
         49190-49167-49157-157-61-53-132-49170-49160-49180-49179-22-19-49165-49155-10-49199-49195-49191-49187-\
         49171-49161-49183-49182-162-158-103-64-51-50-154-153-69-68-49201-49197-49193-49189-49166-49156-156-60-\
         47-150-65-7-49169-49159-49164-49154-5-4-21-18-9-20-17-8-6-3-255,11-10-35-13-15,\
         14-13-25-11-12-24-9-10-22-23-8-6-7-20-21-4-5-18-19-1-2-3-15-16-17,0-1-2"
    );
    assert_eq!(ch.ja3, "bd9c99b3a0f752c3ab8b052a79e9de3e");
    assert_eq!(ch.ja4, "t12i800500_15c493246000_3eafcbe19126");
}

#[test]
fn oversized_self_issued_leaf() {
    // The fragmented-handshake server presents one 340 KB certificate, CN=Bro
    // issued by CN=Bro. webpki cannot read DER that large: unverified (it
    // parses, but cannot be judged), its dates still judged from x509-parser's reading.
    let flows = run_capture_with("zeek/tls-fragmented-handshake.pcap.gz", large());
    let chain = flows.iter().find_map(Flow::chain).unwrap().clone();
    let leaf = certificate_facts(&chain[0]).unwrap();
    assert_eq!(leaf.subject, leaf.issuer);
    assert!(leaf.san_dns.len() > 1000);
    let mut verifier = CertVerifier::new(&[], &[]).unwrap();
    let status = verifier.status(&chain, Some("104.236.167.107"), leaf.not_before + 60);
    assert_eq!(status.names(), vec!["unverified"]);
    let later = verifier.status(&chain, None, leaf.not_after + 1);
    assert_eq!(later.names(), vec!["expired", "unverified"]);
}
