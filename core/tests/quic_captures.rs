//! The QUIC Initial observer on FoxIO's captures of real browsers (Chrome
//! and others talking HTTP/3 to Google, Cloudflare ...): every UDP stream
//! FoxIO lists is read from its Initial packets (keys derived, header
//! protection removed, decrypted, CRYPTO frames reassembled across packets),
//! and its SNI and JA4 are what FoxIO's reference tool computes.

use std::collections::HashMap;
use std::path::PathBuf;

use tlsgate_core::quic::{QuicLimits, QuicObserver};
use tlsgate_core::tls::client_hello::fill_fingerprints;
use tlsgate_core::tls::ObserverEvent;

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/testdata/public").join(rel)
}

/// FoxIO's udp streams: (capture, client address, client port, SNI, JA4).
fn expected() -> Vec<(String, String, u16, String, String)> {
    let mut out = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(testdata("ja4/expected")).unwrap().flatten().map(|e| e.path()).collect();
    names.sort();
    for snap in names {
        let capture = snap.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&snap).unwrap();
        let mut s: HashMap<String, String> = HashMap::new();
        let mut flush = |s: &mut HashMap<String, String>| {
            if s.get("transport").map(String::as_str) == Some("udp") && s.contains_key("ja4") {
                let port = s["src_port"].parse().unwrap();
                let sni = s.get("tls_server_name").cloned().unwrap_or_default();
                out.push((capture.clone(), s["src"].clone(), port, sni, s["ja4"].clone()));
            }
            s.clear();
        };
        for line in text.lines() {
            if line.starts_with("- stream:") {
                flush(&mut s);
            } else if let Some((k, v)) = line.trim_start().split_once(": ") {
                if line.starts_with("  ") && !line.starts_with("   ") {
                    s.insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
        }
        flush(&mut s);
    }
    out
}

/// The UDP datagrams of a capture: (source address, source port, destination port, payload).
fn datagrams(capture: &str) -> Vec<(String, u16, u16, Vec<u8>)> {
    let raw = std::fs::read(testdata("ja4/pcap").join(capture)).unwrap();
    let mut frames: Vec<(u32, Vec<u8>)> = Vec::new();
    if raw.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&raw[..]).unwrap();
        let mut links = Vec::new();
        while let Some(block) = r.next_block() {
            match block.unwrap() {
                pcap_file::pcapng::Block::InterfaceDescription(idb) => links.push(u32::from(idb.linktype)),
                pcap_file::pcapng::Block::EnhancedPacket(p) => {
                    let link = links.get(p.interface_id as usize).copied().unwrap_or(1);
                    frames.push((link, p.data.to_vec()));
                }
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&raw[..]).unwrap();
        let link = u32::from(r.header().datalink);
        while let Some(p) = r.next_packet() {
            frames.push((link, p.unwrap().data.to_vec()));
        }
    }
    let mut out = Vec::new();
    for (link, f) in frames {
        let ip = match link {
            113 => f.get(16..),
            0 => f.get(4..),
            _ => Some(&f[..]),
        };
        let sliced = match (link, ip) {
            (1, _) => etherparse::SlicedPacket::from_ethernet(&f).ok(),
            (_, Some(ip)) => etherparse::SlicedPacket::from_ip(ip).ok(),
            _ => None,
        };
        let Some(p) = sliced else { continue };
        let src = match &p.net {
            Some(etherparse::NetSlice::Ipv4(v4)) => v4.header().source_addr().to_string(),
            Some(etherparse::NetSlice::Ipv6(v6)) => v6.header().source_addr().to_string(),
            _ => continue,
        };
        if let Some(etherparse::TransportSlice::Udp(u)) = &p.transport {
            out.push((src, u.source_port(), u.destination_port(), u.payload().to_vec()));
        }
    }
    out
}

#[test]
fn sni_and_ja4_of_every_quic_stream_are_what_foxio_computes() {
    let streams = expected();
    assert!(streams.len() >= 40, "FoxIO's udp streams: {}", streams.len());
    let mut by_capture: HashMap<&str, Vec<_>> = HashMap::new();
    for s in &streams {
        by_capture.entry(s.0.as_str()).or_default().push(s);
    }
    let mut wrong = Vec::new();
    for (capture, expected) in by_capture {
        let all = datagrams(capture);
        for (_, src, port, sni, ja4) in expected {
            // The flow: the client's datagrams to 443 from (src, port), and the server's back.
            let mut o = QuicObserver::new(QuicLimits::default());
            let mut hello = None;
            for (from, sport, dport, payload) in &all {
                let from_client = from == src && sport == port;
                let to_client = *dport == *port && *sport == 443;
                if !from_client && !to_client {
                    continue;
                }
                o.on_datagram(from_client, payload);
                while let Some(ev) = o.poll_event() {
                    if let ObserverEvent::ClientHello(ch) = ev {
                        hello.get_or_insert(ch);
                    }
                }
                if hello.is_some() {
                    break;
                }
            }
            let Some(mut ch) = hello else {
                wrong.push(format!("{capture} {src}:{port}: no ClientHello read"));
                continue;
            };
            fill_fingerprints(&mut ch);
            let got_sni = ch.sni.clone().unwrap_or_default();
            if got_sni != *sni || ch.ja4 != *ja4 {
                wrong.push(format!("{capture} {src}:{port}: FoxIO {sni} {ja4}, tlsgate {got_sni} {}", ch.ja4));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} streams differ:\n{}", wrong.len(), streams.len(), wrong.join("\n"));
}
