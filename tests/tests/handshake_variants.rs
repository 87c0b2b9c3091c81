//! Handshakes the generator's rustls never makes, built byte by byte as
//! their specifications (and the stacks that sent them) lay them out, carried
//! in real TCP connections and replayed: an SSLv2-format ClientHello answered
//! in TLS, TLS 1.3 drafts and versions nobody knows, a session ticket accepted
//! without a session ID to echo, a ClientHello sent twice.

use std::net::IpAddr;

use tlsgate_perf::handshake::{write_pcap, Pki};
use tlsgate_perf::pcap_out::{conversation_frames, Flight, TcpShape};
use tlsgate_tests::{dpdk_lock, replay, testdata, Scratch};

fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut r = vec![kind, 3, 1];
    r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    r.extend_from_slice(payload);
    r
}

fn handshake(kind: u8, body: &[u8]) -> Vec<u8> {
    let len = body.len() as u32;
    let mut m = vec![kind, (len >> 16) as u8, (len >> 8) as u8, len as u8];
    m.extend_from_slice(body);
    m
}

fn extension(kind: u16, data: &[u8]) -> Vec<u8> {
    let mut e = kind.to_be_bytes().to_vec();
    e.extend_from_slice(&(data.len() as u16).to_be_bytes());
    e.extend_from_slice(data);
    e
}

fn sni(name: &str) -> Vec<u8> {
    let mut entry = vec![0u8];
    entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
    entry.extend_from_slice(name.as_bytes());
    let mut v = (entry.len() as u16).to_be_bytes().to_vec();
    v.extend(entry);
    v
}

fn with_len16(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u16).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn client_hello(legacy: u16, session_id: &[u8], suites: &[u16], extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut b = legacy.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x11; 32]);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend(with_len16(&suites.iter().flat_map(|s| s.to_be_bytes()).collect::<Vec<u8>>()));
    b.extend_from_slice(&[1, 0]);
    b.extend(with_len16(&extensions.concat()));
    handshake(1, &b)
}

fn server_hello(legacy: u16, session_id: &[u8], suite: u16, extensions: &[Vec<u8>]) -> Vec<u8> {
    let mut b = legacy.to_be_bytes().to_vec();
    b.extend_from_slice(&[0x22; 32]);
    b.push(session_id.len() as u8);
    b.extend_from_slice(session_id);
    b.extend_from_slice(&suite.to_be_bytes());
    b.push(0);
    if !extensions.is_empty() {
        b.extend(with_len16(&extensions.concat()));
    }
    handshake(2, &b)
}

fn certificate(der: &[u8]) -> Vec<u8> {
    let mut entry = (der.len() as u32).to_be_bytes()[1..].to_vec();
    entry.extend_from_slice(der);
    let mut body = (entry.len() as u32).to_be_bytes()[1..].to_vec();
    body.extend(entry);
    handshake(11, &body)
}

/// Replays a connection carrying `flights` (client first) to port 443 with a
/// policy that holds every decision for the server's facts.
fn events(flights: Vec<(bool, Vec<u8>)>, port: u16) -> Vec<serde_json::Value> {
    events_to(flights, port, 443)
}

fn events_to(flights: Vec<(bool, Vec<u8>)>, port: u16, server_port: u16) -> Vec<serde_json::Value> {
    let dir = Scratch::new("variants");
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let shape = TcpShape {
        client: (ip("192.0.2.7"), port),
        server: (ip("198.51.100.7"), server_port),
        vlan: None,
        mss: 1460,
        reorder: false,
        retransmit: false,
        start_unix_ns: 1_767_225_600 * 1_000_000_000,
    };
    let flights: Vec<Flight> = flights.into_iter().map(|(from_client, bytes)| Flight { from_client, bytes }).collect();
    let frames = conversation_frames(&shape, &flights);
    let pcap = dir.path("variant.pcap");
    write_pcap(&pcap, &frames).unwrap();
    std::fs::write(
        dir.path("policy.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n\n[[rule]]\nname = \"no-ssl3\"\naction = \"block\"\nversions = [\"ssl3.0\"]\n",
    )
    .unwrap();
    let _g = dpdk_lock();
    replay(&pcap, Some(&dir.path("policy.toml")), &dir).events
}

const SUPPORTED_VERSIONS: u16 = 0x002b;
const KEY_SHARE: u16 = 0x0033;
const SESSION_TICKET: u16 = 0x0023;

#[test]
fn an_sslv2_client_hello_answered_in_tls_is_a_tls_session() {
    // SSLv2 CLIENT-HELLO offering up to TLS 1.0, with TLS suites in 3-byte form.
    let mut body = vec![1, 0x03, 0x01, 0, 6, 0, 0, 0, 16];
    body.extend_from_slice(&[0x00, 0x00, 0x2f, 0x00, 0x00, 0x35]);
    body.extend_from_slice(&[0x55; 16]);
    let mut hello = vec![0x80 | (body.len() >> 8) as u8, body.len() as u8];
    hello.extend(body);
    let leaf = Pki::new("Old CA").issue(&["legacy.test"], "Legacy", 1_700_000_000, 1_900_000_000);
    let mut flight = server_hello(0x0301, &[7; 32], 0x002f, &[]);
    flight.extend(certificate(&leaf.cert_der));
    flight.extend(handshake(14, &[]));
    let evs = events(vec![(true, hello), (false, record(22, &flight)), (true, record(20, &[1]))], 41001);
    assert_eq!(evs.len(), 1, "{evs:?}");
    let e = &evs[0];
    assert_eq!(e["tls"]["version"], "TLS 1.0", "the session is what the server answered: {e}");
    assert_eq!(e["tls"]["sslv2_client_hello"], true, "{e}");
    assert_eq!(e["tls"]["subject"], "CN=legacy.test, O=Legacy", "{e}");
    assert_eq!(e["policy"]["reason_code"], "default_action", "{e}");
}

#[test]
fn tls13_drafts_and_unknown_versions_are_named_not_dropped() {
    for (wire, name, port) in [
        (0x7f17u16, "TLS 1.3 draft-23", 41011),
        (0x7f1c, "TLS 1.3 draft-28", 41012),
        (0xfb1a, "TLS 1.3 draft-26-fb", 41013),
        (0x7f0e, "TLS 1.3 draft-<16", 41014),
    ] {
        let versions = [&[2u8][..], &wire.to_be_bytes()].concat();
        let ch = client_hello(
            0x0303,
            &[],
            &[0x1301],
            &[extension(0, &sni("draft.test")), extension(SUPPORTED_VERSIONS, &versions)],
        );
        let sh = server_hello(
            0x0303,
            &[],
            0x1301,
            &[extension(SUPPORTED_VERSIONS, &wire.to_be_bytes()), extension(KEY_SHARE, &[0, 0x1d, 0, 0])],
        );
        let evs =
            events(vec![(true, record(22, &ch)), (false, [record(22, &sh), record(23, &[0xee; 60])].concat())], port);
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0]["tls"]["version"], name, "{}", evs[0]);
        assert_eq!(evs[0]["tls"]["client_versions"][0], name, "{}", evs[0]);
    }
    // A version no one has defined: named in hex, the session still logged.
    let ch = client_hello(0x0303, &[], &[0x1301], &[extension(SUPPORTED_VERSIONS, &[4, 0x03, 0x05, 0x03, 0x04])]);
    let sh = server_hello(0x0303, &[], 0x1301, &[extension(SUPPORTED_VERSIONS, &[0x03, 0x05])]);
    let evs =
        events(vec![(true, record(22, &ch)), (false, [record(22, &sh), record(23, &[0xee; 60])].concat())], 41015);
    assert_eq!(evs[0]["tls"]["version"], "0x0305", "{}", evs[0]);
    assert_eq!(evs[0]["tls"]["client_versions"], serde_json::json!(["0x0305", "TLS 1.3"]), "{}", evs[0]);
}

#[test]
fn a_ticket_accepted_without_a_session_id_is_a_resumption() {
    // RFC 5077 3.4: the client may send an empty session ID with its ticket;
    // the server's ChangeCipherSpec right after its ServerHello says it resumed.
    let ch = client_hello(
        0x0303,
        &[],
        &[0xc02f],
        &[extension(0, &sni("ticket.test")), extension(SESSION_TICKET, &[0xab; 128])],
    );
    let mut flight = record(22, &server_hello(0x0303, &[], 0xc02f, &[extension(SESSION_TICKET, &[])]));
    flight.extend(record(22, &handshake(4, &[0, 0, 0, 60, 0, 4, 1, 2, 3, 4])));
    flight.extend(record(20, &[1]));
    flight.extend(record(22, &[0x99; 40]));
    let evs = events(
        vec![(true, record(22, &ch)), (false, flight), (true, [record(20, &[1]), record(22, &[0x98; 40])].concat())],
        41021,
    );
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["tls"]["session_resumed"], true, "{}", evs[0]);
    assert_eq!(evs[0]["tls"]["sni"], "ticket.test");

    // The same ServerHello followed by a certificate is a full handshake.
    let leaf = Pki::new("Ticket CA").issue(&["ticket.test"], "Ticket", 1_700_000_000, 1_900_000_000);
    let mut flight = server_hello(0x0303, &[], 0xc02f, &[extension(SESSION_TICKET, &[])]);
    flight.extend(certificate(&leaf.cert_der));
    flight.extend(handshake(14, &[]));
    let evs = events(vec![(true, record(22, &ch)), (false, record(22, &flight))], 41022);
    assert_eq!(evs[0]["tls"]["session_resumed"], false, "{}", evs[0]);
}

#[test]
fn a_client_hello_sent_twice_and_a_hello_retry_make_one_event_with_the_first_facts() {
    let first = client_hello(0x0303, &[], &[0xc02f], &[extension(0, &sni("first.test"))]);
    let second = client_hello(0x0303, &[], &[0xc02f], &[extension(0, &sni("second.test"))]);
    let leaf = Pki::new("Twice CA").issue(&["first.test"], "Twice", 1_700_000_000, 1_900_000_000);
    let mut flight = server_hello(0x0303, &[], 0xc02f, &[]);
    flight.extend(certificate(&leaf.cert_der));
    flight.extend(handshake(14, &[]));
    let evs =
        events(vec![(true, [record(22, &first), record(22, &second)].concat()), (false, record(22, &flight))], 41031);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["tls"]["sni"], "first.test", "{}", evs[0]);
    assert_eq!(evs[0]["tls"]["version"], "TLS 1.2", "{}", evs[0]);

    // Zeek's HelloRetryRequest capture (two ClientHellos, one session).
    let dir = Scratch::new("hrr");
    std::fs::write(dir.path("p.toml"), "[policy]\ndefault_action = \"do-not-decrypt\"\n").unwrap();
    let _g = dpdk_lock();
    let evs = replay(&testdata().join("zeek/hrr.pcap"), Some(&dir.path("p.toml")), &dir).events;
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["tls"]["hello_retry"], true, "{}", evs[0]);
    assert_eq!(evs[0]["tls"]["version"], "TLS 1.3", "{}", evs[0]);
}

#[test]
fn endless_preludes_and_hellos_are_bounded_and_logged() {
    // An SMTP client that never asks for TLS: judged as not TLS once past the limits.
    let noops = b"NOOP\r\n".repeat(5000);
    let evs = events_to(vec![(false, b"220 mail ESMTP\r\n".to_vec()), (true, noops)], 41041, 25);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["event_type"], "flow", "{}", evs[0]);
    assert_eq!(evs[0]["tls"]["starttls"], "smtp", "{}", evs[0]);
    assert_eq!(evs[0]["policy"]["reason_code"], "prelude_without_tls", "{}", evs[0]);
    assert!(evs[0]["policy"]["reason"].as_str().unwrap().contains("limits"), "{}", evs[0]);

    // A ClientHello sent a thousand times: one event, on the first.
    let hello = record(22, &client_hello(0x0303, &[], &[0xc02f], &[extension(0, &sni("again.test"))]));
    let evs =
        events(vec![(true, hello.repeat(1000)), (false, record(22, &server_hello(0x0303, &[], 0xc02f, &[])))], 41042);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["tls"]["sni"], "again.test", "{}", evs[0]);
}

#[test]
fn a_client_hello_larger_than_the_buffer_is_blocked_not_defaulted() {
    // A ClientHello of 70 KB (a padding extension): no rule can read it.
    let big =
        client_hello(0x0303, &[], &[0xc02f], &[extension(0, &sni("big.test")), extension(0x0015, &vec![0; 70_000])]);
    let records: Vec<u8> = big.chunks(16_000).flat_map(|c| record(22, c)).collect();
    let evs = events(vec![(true, records)], 41051);
    assert_eq!(evs.len(), 1, "{evs:?}");
    assert_eq!(evs[0]["policy"]["actual_action"], "block", "{}", evs[0]);
    assert_eq!(evs[0]["policy"]["reason_code"], "handshake_too_large", "{}", evs[0]);
}
