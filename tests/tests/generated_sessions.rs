//! Real handshakes made by the generator (rustls clients and servers, rcgen
//! certificates) written as pcap, replayed through the real binary with a
//! policy that has a rule for every kind of case: each session's event says
//! the action, the rule and the reason the policy should give it. Covers the
//! certificate statuses, the actions, the undecryptable reasons, and the
//! conditions, over segments split small, reordered and retransmitted.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use tlsgate_perf::handshake::{tls_session, write_pcap, Frame, Leaf, Patch, Pki, SessionSpec, TlsVersionChoice};
use tlsgate_tests::{dpdk_lock, replay, Scratch};

const DAY: i64 = 86_400;
/// 2026-01-01, the generator's default capture time.
const NOW: i64 = 1_767_225_600;

struct Case {
    port: u16,
    expected: &'static str,
    actual: &'static str,
    rule: Option<&'static str>,
    reason_code: &'static str,
    status_has: Option<&'static str>,
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn write_secret(path: &std::path::Path, pem: &str) {
    std::fs::write(path, pem).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn every_action_status_and_undecryptable_reason() {
    let dir = Scratch::new("generated");
    let root = Pki::new("Test Root");
    let rogue = Pki::new("Rogue CA");
    let leaf = |pki: &Pki, names: &[&str], org: &str, nb: i64, na: i64| pki.issue(names, org, nb, na);
    let valid =
        leaf(&root, &["valid.test", "shop.test", "www.wild.test"], "Valid Org", NOW - 300 * DAY, NOW + 300 * DAY);
    let expired = leaf(&root, &["expired.test"], "Old Org", NOW - 600 * DAY, NOW - 10 * DAY);
    let expired_other = leaf(&root, &["expired.test"], "Old Org", NOW - 700 * DAY, NOW - 20 * DAY);
    let future = leaf(&root, &["future.test"], "Future Org", NOW + 10 * DAY, NOW + 600 * DAY);
    let revoked = leaf(&root, &["revoked.test"], "Revoked Org", NOW - 10 * DAY, NOW + 300 * DAY);
    let rogue_leaf = leaf(&rogue, &["rogue.test"], "Rogue Org", NOW - 10 * DAY, NOW + 300 * DAY);
    let intranet = leaf(&root, &["intranet.test"], "Intranet", NOW - 10 * DAY, NOW + 300 * DAY);
    let selfsigned = Leaf::self_signed(&["self.test"], NOW - 10 * DAY, NOW + 300 * DAY);
    let mut bad_sig = leaf(&root, &["badsig.test"], "Bad Sig Org", NOW - 10 * DAY, NOW + 300 * DAY);
    let n = bad_sig.cert_der.len();
    bad_sig.cert_der[n - 3] ^= 0x55; // inside the signature value

    std::fs::write(dir.path("root.pem"), root.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("crl.pem"), root.crl_pem(&[&revoked])).unwrap();
    std::fs::write(dir.path("resign-ca.pem"), rogue.ca_cert_pem()).unwrap();
    write_secret(&dir.path("resign-ca.key"), &rogue.ca_key_pem());
    std::fs::write(dir.path("intranet.pem"), &intranet.cert_pem).unwrap();
    write_secret(&dir.path("intranet.key"), &intranet.key_pem);
    std::fs::write(dir.path("expired.pem"), &expired.cert_pem).unwrap();

    let policy = r#"
[policy]
default_action = "do-not-decrypt"

[policy.undecryptable]
compressed = "block"
unknown_cipher = "block-with-reset"
client_auth = "block"

[trust]
ca_files = ["root.pem"]
crl_files = ["crl.pem"]

[[ca]]
name = "resigner"
cert = "resign-ca.pem"
key = "resign-ca.key"

[[known_key]]
name = "intranet"
cert = "intranet.pem"
key = "intranet.key"

[[certificate]]
name = "the-expired-one"
file = "expired.pem"

[[rule]]
name = "log-everything"
action = "monitor"

[[rule]]
name = "vlan-42"
action = "block"
vlan = [42]

[[rule]]
name = "v6-clients"
action = "block-with-reset"
source_networks = ["2001:db8:1::/48"]

[[rule]]
name = "odd-port"
action = "block"
dest_ports = ["8443-8444"]

[[rule]]
name = "known-intranet"
action = "decrypt-known-key"
known_key = "intranet"
sni = ["intranet.test"]

[[rule]]
name = "resign-shop"
action = "decrypt-resign"
ca = "resigner"
sni = ["shop.test"]

[[rule]]
name = "by-certificate"
action = "block"
certificate = ["the-expired-one"]
versions = ["tls1.2"]

[[rule]]
name = "expired"
action = "block-with-reset"
cert_status = { expired = true }

[[rule]]
name = "not-yet-valid"
action = "block"
cert_status = { not-yet-valid = true }

[[rule]]
name = "self-signed"
action = "block"
cert_status = { self-signed = true }

[[rule]]
name = "revoked"
action = "block"
cert_status = { revoked = true }

[[rule]]
name = "rogue-issuer"
action = "block"
issuer = ["CN=Rogue CA"]

[[rule]]
name = "bad-signature"
action = "block"
cert_status = { invalid-signature = true }

[[rule]]
name = "mismatch"
action = "block"
cert_status = { server-mismatch = true }

[[rule]]
name = "wildcard-sni-tls12-chacha"
action = "block"
sni = ["*.wild.test"]
cipher_suites = ["TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"]

[[rule]]
name = "trusted-orgs"
action = "do-not-decrypt"
subject = ["O=Valid Org"]
cert_status = { valid = true }
"#;
    std::fs::write(dir.path("policy.toml"), policy).unwrap();

    let server = (ip("10.9.0.1"), 443);
    let mut frames: Vec<Frame> = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let mut t = NOW as u64 * 1_000_000_000;
    let mut add = |spec: SessionSpec, case: Case| {
        let mut spec = spec;
        spec.start_unix_ns = t;
        t += 50_000_000;
        frames.extend(tls_session(&spec).unwrap_or_else(|e| panic!("session for port {}: {e}", case.port)));
        cases.push(case);
    };
    let chain = |l: &Leaf| vec![l.cert_der.clone()];
    let spec = |port: u16, sni: &str, l: &Leaf| {
        SessionSpec::new((ip("10.1.0.7"), port), server, Some(sni), chain(l), l.key_der.clone())
    };
    let case = |port, expected, actual, rule, reason_code, status_has| Case {
        port,
        expected,
        actual,
        rule,
        reason_code,
        status_has,
    };

    // Certificate statuses (TLS 1.2: the certificate is visible).
    let tls12 = |mut s: SessionSpec| {
        s.version = TlsVersionChoice::Tls12;
        s
    };
    add(
        tls12(spec(1001, "valid.test", &valid)),
        case(1001, "do-not-decrypt", "do-not-decrypt", Some("trusted-orgs"), "rule_matched", Some("valid")),
    );
    add(
        tls12(spec(1002, "expired.test", &expired_other)),
        case(1002, "block-with-reset", "block-with-reset", Some("expired"), "rule_matched", Some("expired")),
    );
    add(
        tls12(spec(1003, "future.test", &future)),
        case(1003, "block", "block", Some("not-yet-valid"), "rule_matched", Some("not-yet-valid")),
    );
    add(
        tls12(spec(1004, "self.test", &selfsigned)),
        case(1004, "block", "block", Some("self-signed"), "rule_matched", Some("self-signed")),
    );
    add(
        tls12(spec(1005, "revoked.test", &revoked)),
        case(1005, "block", "block", Some("revoked"), "rule_matched", Some("revoked")),
    );
    add(
        tls12(spec(1006, "rogue.test", &rogue_leaf)),
        case(1006, "block", "block", Some("rogue-issuer"), "rule_matched", Some("invalid-issuer")),
    );
    add(
        tls12(spec(1007, "badsig.test", &bad_sig)),
        case(1007, "block", "block", Some("bad-signature"), "rule_matched", Some("invalid-signature")),
    );
    add(
        tls12(spec(1008, "other.test", &valid)),
        case(1008, "block", "block", Some("mismatch"), "rule_matched", Some("server-mismatch")),
    );
    // A certificate object, with the version condition.
    let mut s = tls12(spec(1009, "expired.test", &expired));
    // Another address: the server identity cache learned 10.9.0.1's
    // expired.test from session 1002, another certificate.
    s.server = (ip("10.9.0.9"), 443);
    s.mss = 7;
    s.reorder = true;
    s.retransmit = true;
    add(s, case(1009, "block", "block", Some("by-certificate"), "rule_matched", Some("expired")));
    // Decrypt actions: carried out as do-not-decrypt, or their undecryptable action.
    add(
        spec(1010, "shop.test", &valid),
        case(1010, "decrypt-resign", "do-not-decrypt", Some("resign-shop"), "no_slowpath", None),
    );
    add(
        spec(1011, "intranet.test", &intranet),
        case(1011, "decrypt-known-key", "do-not-decrypt", Some("known-intranet"), "no_slowpath", None),
    );
    let mut s = tls12(spec(1012, "shop.test", &valid));
    s.patch = Some(Patch::ServerCompression(1));
    add(s, case(1012, "decrypt-resign", "block", Some("resign-shop"), "undecryptable_compressed", None));
    let mut s = tls12(spec(1013, "shop.test", &valid));
    s.patch = Some(Patch::ServerCipher(0x0a0a));
    add(s, case(1013, "decrypt-resign", "block-with-reset", Some("resign-shop"), "undecryptable_unknown_cipher", None));
    let mut s = tls12(spec(1014, "shop.test", &valid));
    s.request_client_cert = true;
    add(s, case(1014, "decrypt-resign", "block", Some("resign-shop"), "undecryptable_client_auth", None));
    // Flow conditions.
    let mut s = spec(1015, "valid.test", &valid);
    s.vlan = Some(42);
    add(s, case(1015, "block", "block", Some("vlan-42"), "rule_matched", None));
    let s = SessionSpec::new(
        (ip("2001:db8:1::5"), 1016),
        (ip("2001:db8:2::1"), 443),
        Some("valid.test"),
        chain(&valid),
        valid.key_der.clone(),
    );
    add(s, case(1016, "block-with-reset", "block-with-reset", Some("v6-clients"), "rule_matched", None));
    let s = SessionSpec::new(
        (ip("10.1.0.7"), 1017),
        (ip("10.9.0.1"), 8443),
        Some("valid.test"),
        chain(&valid),
        valid.key_der.clone(),
    );
    add(s, case(1017, "block", "block", Some("odd-port"), "rule_matched", None));
    // SNI wildcard and the negotiated cipher.
    let mut s = tls12(spec(1018, "www.wild.test", &valid));
    s.cipher_suites =
        Some(vec![rustls::crypto::aws_lc_rs::cipher_suite::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256]);
    add(s, case(1018, "block", "block", Some("wildcard-sni-tls12-chacha"), "rule_matched", None));
    // TLS 1.3: the certificate is never seen; certificate rules cannot match.
    // (A server the identity cache has not seen: 10.9.0.1 was learned from session 1001.)
    let mut s = spec(1019, "valid.test", &valid);
    s.server = (ip("10.9.0.19"), 443);
    add(s, case(1019, "do-not-decrypt", "do-not-decrypt", None, "default_action", None));

    frames.sort_by_key(|f| f.unix_ns);
    let pcap = dir.path("generated.pcap");
    write_pcap(&pcap, &frames).unwrap();

    let _g = dpdk_lock();
    let r = replay(&pcap, Some(&dir.path("policy.toml")), &dir);
    let (evs, log) = (&r.events, format!("{:#?}", r.events));
    assert_eq!(evs.len(), cases.len(), "one event per session:\n{log}");
    for c in &cases {
        let e = r.event_from_port(c.port);
        let p = &e["policy"];
        let ctx = format!("port {}: {e}", c.port);
        assert_eq!(p["expected_action"], c.expected, "{ctx}");
        assert_eq!(p["actual_action"], c.actual, "{ctx}");
        match c.rule {
            Some(r) => assert_eq!(p["rule"], r, "{ctx}"),
            None => assert!(p["rule"].is_null(), "{ctx}"),
        }
        assert_eq!(p["reason_code"], c.reason_code, "{ctx}");
        assert!(!p["reason"].as_str().unwrap().is_empty(), "{ctx}");
        if let Some(st) = c.status_has {
            assert!(p["cert_status"].as_array().unwrap().iter().any(|s| s == st), "{ctx}");
        }
        assert_eq!(p["monitor_rules"][0], "log-everything", "{ctx}");
    }
    // TLS 1.3 hides the certificate: the certificate rules did not match for want of it.
    let missing = &r.event_from_port(1019)["policy"]["missing_facts"];
    assert!(missing.as_array().is_some_and(|m| !m.is_empty()), "{missing}");
}

/// Bad traffic through the real binary: garbage on port 443, a certificate
/// message claiming 1 MB, a handshake cut short, and a server answering a
/// decrypt-bound ClientHello with garbage. Each ends as a logged reason with
/// the flow handled by policy; the process neither panics nor grows.
#[test]
fn bad_traffic_becomes_reasons_not_failures() {
    use tlsgate_perf::handshake::{record_session, tcp_conversation};
    let dir = Scratch::new("bad-traffic");
    let root = Pki::new("Test Root");
    let l = root.issue(&["broken.test"], "Broken", NOW - DAY, NOW + DAY);
    let client_hello = |sni: &str| {
        let spec = SessionSpec::new(
            (ip("10.1.0.7"), 1),
            (ip("10.9.0.1"), 443),
            Some(sni),
            vec![l.cert_der.clone()],
            l.key_der.clone(),
        );
        let flights = record_session(&spec).unwrap();
        assert!(flights[0].from_client);
        flights[0].bytes.clone()
    };
    let server = (ip("10.9.0.1"), 443);
    let mut t = NOW as u64 * 1_000_000_000;
    let mut frames = Vec::new();
    let mut next = |port: u16, req: &[u8], resp: &[u8]| {
        t += 100_000_000;
        tcp_conversation((ip("10.1.0.8"), port), server, req, resp, 1460, t)
    };
    // Garbage both ways on 443.
    frames.extend(next(2001, b"\x00\x01\x02 this is no TLS at all", b"nor is this"));
    // A ClientHello, then a Certificate message that claims 2 MiB, past
    // `flows.server_message_limit` (and 1 MiB follows).
    let mut huge = Vec::new();
    let mut first = true;
    while huge.len() < (1 << 20) + 64 {
        let mut body = vec![0u8; 16_000];
        if first {
            body[..4].copy_from_slice(&[11, 0x20, 0x00, 0x00]);
            first = false;
        }
        huge.extend_from_slice(&[0x16, 0x03, 0x03]);
        huge.extend_from_slice(&(body.len() as u16).to_be_bytes());
        huge.extend_from_slice(&body);
    }
    frames.extend(next(2002, &client_hello("big.test"), &huge));
    // A ClientHello, then half a record, then FIN.
    frames.extend(next(2003, &client_hello("cut.test"), &[0x16, 0x03, 0x03, 0x00, 0x40, 0x02, 0x00]));
    // A decrypt-bound ClientHello answered with an impossible record.
    frames.extend(next(2004, &client_hello("broken.test"), &[0x16, 0x03, 0x03, 0xff, 0xff, 0x02, 0x00, 0x00]));
    frames.sort_by_key(|f| f.unix_ns);
    let pcap = dir.path("bad.pcap");
    write_pcap(&pcap, &frames).unwrap();
    std::fs::write(dir.path("ca.pem"), root.ca_cert_pem()).unwrap();
    write_secret(&dir.path("ca.key"), &root.ca_key_pem());
    std::fs::write(
        dir.path("policy.toml"),
        r#"
[policy]
default_action = "do-not-decrypt"

[policy.undecryptable]
handshake_error = "block"

[[ca]]
name = "resigner"
cert = "ca.pem"
key = "ca.key"

[[rule]]
name = "resign-broken"
action = "decrypt-resign"
ca = "resigner"
sni = ["broken.test"]

[[rule]]
name = "needs-the-certificate"
action = "block"
cert_status = { revoked = true }
"#,
    )
    .unwrap();

    let _g = dpdk_lock();
    let r = replay(&pcap, Some(&dir.path("policy.toml")), &dir);
    let by_port = |p: u16| r.event_from_port(p).clone();
    let code = |e: &serde_json::Value| e["policy"]["reason_code"].as_str().unwrap().to_string();

    let garbage = by_port(2001);
    assert_eq!(garbage["event_type"], "flow", "{garbage}");
    assert_eq!(code(&garbage), "not_tls", "{garbage}");
    assert_eq!(garbage["policy"]["actual_action"], "do-not-decrypt");

    let big = by_port(2002);
    assert_eq!(code(&big), "handshake_too_large", "{big}");
    assert_eq!(big["tls"]["sni"], "big.test");

    let cut = by_port(2003);
    assert_eq!(code(&cut), "flow_ended_before_handshake", "{cut}");
    assert_eq!(cut["policy"]["flow_ended"], "closed", "{cut}");

    let broken = by_port(2004);
    assert_eq!(broken["policy"]["expected_action"], "decrypt-resign", "{broken}");
    assert_eq!(broken["policy"]["actual_action"], "block", "{broken}");
    assert_eq!(code(&broken), "handshake_malformed", "{broken}");

    let stdout = r.stdout();
    assert!(stdout.contains("not_tls 1") && stdout.contains("overflow 1"), "{stdout}");
}

/// The statuses a working server rarely shows: a certificate that does not
/// parse (its DER corrupted on the wire) and a CRL that names the issuer but
/// is not signed by it; and the flow conditions on client ports and ingress.
#[test]
fn invalid_certificate_invalid_crl_and_flow_conditions() {
    use tlsgate_perf::handshake::{record_session, session_frames};
    let dir = Scratch::new("odd-statuses");
    let root = Pki::new("Test Root");
    let impostor = Pki::new("Test Root"); // same name, other key: its CRL does not verify
    let good = root.issue(&["crl.test"], "Org", NOW - DAY, NOW + DAY);
    let broken = root.issue(&["broken-der.test"], "Org", NOW - DAY, NOW + DAY);
    std::fs::write(dir.path("root.pem"), root.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("crl.pem"), impostor.crl_pem(&[])).unwrap();
    std::fs::write(
        dir.path("policy.toml"),
        r#"
[policy]
default_action = "do-not-decrypt"

[trust]
ca_files = ["root.pem"]
crl_files = ["crl.pem"]

[[rule]]
name = "ports-and-ingress"
action = "block"
source_ports = ["3000-3001"]
ingress = ["net_pcap_in"]

[[rule]]
name = "unparseable"
action = "block"
cert_status = { invalid-certificate = true }

[[rule]]
name = "bad-crl"
action = "block-with-reset"
cert_status = { invalid-crl = true }
"#,
    )
    .unwrap();
    let server = (ip("10.9.0.1"), 443);
    let spec = |port: u16, sni: &str, l: &Leaf, t: u64| {
        let mut s =
            SessionSpec::new((ip("10.1.0.9"), port), server, Some(sni), vec![l.cert_der.clone()], l.key_der.clone());
        s.version = TlsVersionChoice::Tls12;
        s.start_unix_ns = t;
        s
    };
    let t0 = NOW as u64 * 1_000_000_000;
    let mut frames = tls_session(&spec(3000, "crl.test", &good, t0)).unwrap();
    frames.extend(tls_session(&spec(4001, "crl.test", &good, t0 + 100_000_000)).unwrap());
    // Corrupt the certificate on the wire: its outer SEQUENCE tag becomes a SET.
    let s = spec(4002, "broken-der.test", &broken, t0 + 200_000_000);
    let mut flights = record_session(&s).unwrap();
    let der = &broken.cert_der;
    let server_flight = flights.iter_mut().find(|f| !f.from_client).unwrap();
    let at = server_flight.bytes.windows(der.len()).position(|w| w == &der[..]).expect("the leaf in clear (TLS 1.2)");
    server_flight.bytes[at] = 0x31;
    frames.extend(session_frames(&s, &flights).unwrap());
    frames.sort_by_key(|f| f.unix_ns);
    let pcap = dir.path("odd.pcap");
    write_pcap(&pcap, &frames).unwrap();

    let _g = dpdk_lock();
    let r = replay(&pcap, Some(&dir.path("policy.toml")), &dir);
    let p = |port: u16| r.event_from_port(port)["policy"].clone();
    assert_eq!(p(3000)["rule"], "ports-and-ingress", "{}", p(3000));
    assert_eq!(p(4001)["rule"], "bad-crl", "{}", p(4001));
    assert_eq!(p(4001)["actual_action"], "block-with-reset");
    assert!(p(4001)["cert_status"].as_array().unwrap().iter().any(|s| s == "invalid-crl"), "{}", p(4001));
    assert_eq!(p(4002)["rule"], "unparseable", "{}", p(4002));
    assert!(p(4002)["cert_status"].as_array().unwrap().iter().any(|s| s == "invalid-certificate"));
}

/// The server identity cache: a TLS 1.2 handshake shows the server's
/// certificate, and the next session to that server (even TLS 1.3, which
/// hides it) is judged on it at its ClientHello.
#[test]
fn the_server_identity_cache_judges_the_next_session_at_its_client_hello() {
    let dir = Scratch::new("identity-cache");
    let root = Pki::new("Test Root");
    let expired = root.issue(&["old.test"], "Old Org", NOW - 400 * DAY, NOW - DAY);
    let late = root.issue(&["late.test"], "Late Org", NOW - DAY, NOW + DAY);
    let fresh = root.issue(&["new.test"], "New Org", NOW - DAY, NOW + DAY);
    std::fs::write(dir.path("root.pem"), root.ca_cert_pem()).unwrap();
    std::fs::write(dir.path("ca.pem"), root.ca_cert_pem()).unwrap();
    write_secret(&dir.path("ca.key"), &root.ca_key_pem());
    std::fs::write(
        dir.path("policy.toml"),
        r#"
[policy]
default_action = "do-not-decrypt"

[trust]
ca_files = ["root.pem"]

[[ca]]
name = "resigner"
cert = "ca.pem"
key = "ca.key"

[[rule]]
name = "expired"
action = "block"
cert_status = { expired = true }

[[rule]]
name = "decrypt-late-org"
action = "decrypt-resign"
ca = "resigner"
subject = ["O=Late Org"]
"#,
    )
    .unwrap();
    let mut t = NOW as u64 * 1_000_000_000;
    let mut frames = Vec::new();
    let mut add = |port: u16, server: &str, sni: &str, leaf: &Leaf, v: TlsVersionChoice| {
        let mut s = SessionSpec::new(
            (ip("10.1.0.5"), port),
            (ip(server), 443),
            Some(sni),
            vec![leaf.cert_der.clone()],
            leaf.key_der.clone(),
        );
        s.version = v;
        s.start_unix_ns = t;
        t += 200_000_000;
        frames.extend(tls_session(&s).unwrap());
    };
    add(5001, "10.9.0.1", "old.test", &expired, TlsVersionChoice::Tls12); // learns
    add(5002, "10.9.0.1", "old.test", &expired, TlsVersionChoice::Tls13); // judged from the cache
    add(5003, "10.9.0.3", "new.test", &fresh, TlsVersionChoice::Tls13); // never seen: unknown
    add(5004, "10.9.0.2", "late.test", &late, TlsVersionChoice::Tls12); // decrypt decided too late
    add(5005, "10.9.0.2", "late.test", &late, TlsVersionChoice::Tls12); // decided at the ClientHello
    frames.sort_by_key(|f| f.unix_ns);
    let pcap = dir.path("cache.pcap");
    write_pcap(&pcap, &frames).unwrap();

    let _g = dpdk_lock();
    let r = replay(&pcap, Some(&dir.path("policy.toml")), &dir);
    let p = |port: u16| r.event_from_port(port)["policy"].clone();
    assert_eq!(p(5001)["rule"], "expired", "{}", p(5001));
    assert_eq!(p(5001)["server_identity"], "handshake");
    assert_eq!(p(5002)["rule"], "expired", "TLS 1.3 judged on the cached certificate: {}", p(5002));
    assert_eq!(p(5002)["server_identity"], "cache");
    assert_eq!(p(5002)["actual_action"], "block");
    assert_eq!(p(5003)["server_identity"], "unknown", "{}", p(5003));
    assert!(p(5003)["rule"].is_null());
    assert_eq!(p(5004)["expected_action"], "decrypt-resign", "{}", p(5004));
    assert_eq!(p(5004)["reason_code"], "server_identity_unknown", "{}", p(5004));
    assert_eq!(p(5005)["expected_action"], "decrypt-resign", "{}", p(5005));
    assert_eq!(p(5005)["server_identity"], "cache");
    assert_eq!(p(5005)["reason_code"], "no_slowpath", "{}", p(5005));
}
