//! Passive and key-log decryption of sessions made by real stacks (OpenSSL
//! and GnuTLS, captured on loopback by tcpdump), one session per cipher suite,
//! each read back by `tlsgate replay` and compared with what the client sent
//! and received; and pcapFS's capture, whose decrypted HTTP body `tshark`
//! exports byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tlsgate_core::packet::{tcp_flags, TcpFrame};
use tlsgate_tests::capture::{Capture, Reaped};
use tlsgate_tests::{dpdk_lock, pcap_frames, run_with_limit, testdata, text, tlsgate, Scratch};

const ADDR: &str = "127.0.0.83";
/// gnutls-serv listens on every address: a port no other test uses.
const PORT: u16 = 4483;
/// The resumption test's own server, beside the suites' one.
const RESUME_ADDR: &str = "127.0.0.84";
const RESUME_PORT: u16 = 4484;
const REQUEST: &[u8] = b"GET /passive HTTP/1.0\r\nHost: lab.test\r\n\r\n";

/// One session to make: OpenSSL with these s_server/s_client arguments, or
/// GnuTLS with this priority string; `rsa`: RSA key exchange, which the
/// imported key reads.
struct Case {
    name: &'static str,
    openssl: &'static [&'static str],
    gnutls: Option<&'static str>,
    rsa: bool,
}

const fn ossl(name: &'static str, openssl: &'static [&'static str], rsa: bool) -> Case {
    Case { name, openssl, gnutls: None, rsa }
}

const fn gnutls(name: &'static str, priority: &'static str) -> Case {
    Case { name, openssl: &[], gnutls: Some(priority), rsa: true }
}

const CASES: &[Case] = &[
    ossl("AES128-SHA", &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0"], true),
    ossl("AES256-SHA", &["-tls1_2", "-cipher", "AES256-SHA:@SECLEVEL=0"], true),
    ossl("AES128-SHA without encrypt-then-MAC", &["-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0", "-no_etm"], true),
    ossl("AES128-SHA256", &["-tls1_2", "-cipher", "AES128-SHA256"], true),
    ossl("AES256-SHA256", &["-tls1_2", "-cipher", "AES256-SHA256"], true),
    ossl("AES128-GCM-SHA256", &["-tls1_2", "-cipher", "AES128-GCM-SHA256"], true),
    ossl("AES256-GCM-SHA384", &["-tls1_2", "-cipher", "AES256-GCM-SHA384"], true),
    ossl("AES128-CCM", &["-tls1_2", "-cipher", "AES128-CCM"], true),
    ossl("AES256-CCM", &["-tls1_2", "-cipher", "AES256-CCM"], true),
    ossl("AES128-CCM8", &["-tls1_2", "-cipher", "AES128-CCM8:@SECLEVEL=0"], true),
    ossl("AES256-CCM8", &["-tls1_2", "-cipher", "AES256-CCM8:@SECLEVEL=0"], true),
    ossl("NULL-MD5", &["-tls1_2", "-cipher", "NULL-MD5:@SECLEVEL=0"], true),
    ossl("NULL-SHA", &["-tls1_2", "-cipher", "NULL-SHA:@SECLEVEL=0"], true),
    ossl("NULL-SHA256", &["-tls1_2", "-cipher", "NULL-SHA256:@SECLEVEL=0"], true),
    ossl("TLS 1.0 AES128-SHA", &["-tls1", "-cipher", "AES128-SHA:@SECLEVEL=0"], true),
    ossl("TLS 1.1 AES256-SHA", &["-tls1_1", "-cipher", "AES256-SHA:@SECLEVEL=0"], true),
    // Debian's OpenSSL has no 3DES or RC4 suites; GnuTLS still does.
    gnutls("3DES-CBC-SHA", "NONE:+VERS-TLS1.2:+3DES-CBC:+RSA:+SHA1:+COMP-NULL:+SIGN-ALL"),
    gnutls("TLS 1.0 3DES-CBC-SHA", "NONE:+VERS-TLS1.0:+3DES-CBC:+RSA:+SHA1:+COMP-NULL:+SIGN-ALL"),
    gnutls("RC4-SHA", "NONE:+VERS-TLS1.2:+ARCFOUR-128:+RSA:+SHA1:+COMP-NULL:+SIGN-ALL"),
    gnutls("RC4-MD5", "NONE:+VERS-TLS1.2:+ARCFOUR-128:+RSA:+MD5:+COMP-NULL:+SIGN-ALL"),
    // Without the extended master secret: the master secret from the randoms alone.
    gnutls(
        "AES128-SHA without extended master secret",
        "NONE:+VERS-TLS1.2:+AES-128-CBC:+RSA:+SHA1:+COMP-NULL:+SIGN-ALL:%NO_SESSION_HASH",
    ),
    gnutls(
        "AES256-GCM-SHA384 without extended master secret",
        "NONE:+VERS-TLS1.2:+AES-256-GCM:+RSA:+AEAD:+COMP-NULL:+SIGN-ALL:%NO_SESSION_HASH",
    ),
    // Only a key log opens these.
    ossl("ECDHE-RSA-AES256-GCM-SHA384", &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-GCM-SHA384"], false),
    ossl("ECDHE-RSA-CHACHA20-POLY1305", &["-tls1_2", "-cipher", "ECDHE-RSA-CHACHA20-POLY1305"], false),
    ossl("ECDHE-RSA-AES128-SHA256", &["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA256"], false),
    ossl("ECDHE-RSA-AES256-SHA384", &["-tls1_2", "-cipher", "ECDHE-RSA-AES256-SHA384"], false),
    ossl("DHE-RSA-AES128-CCM8", &["-tls1_2", "-cipher", "DHE-RSA-AES128-CCM8:@SECLEVEL=0"], false),
    ossl("TLS_AES_128_GCM_SHA256", &["-tls1_3", "-ciphersuites", "TLS_AES_128_GCM_SHA256"], false),
    ossl("TLS_AES_256_GCM_SHA384", &["-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"], false),
    ossl("TLS_CHACHA20_POLY1305_SHA256", &["-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"], false),
    ossl("TLS_AES_128_CCM_SHA256", &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_SHA256"], false),
    ossl("TLS_AES_128_CCM_8_SHA256", &["-tls1_3", "-ciphersuites", "TLS_AES_128_CCM_8_SHA256"], false),
];

/// An RSA-2048 server certificate and key (mode 600, as policies require).
fn rsa_server_certificate(dir: &Scratch) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.path("cert.pem"), dir.path("key.pem"));
    let o = run_with_limit(
        Command::new("openssl")
            .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .args(["-subj", "/CN=lab.test", "-addext", "subjectAltName=DNS:lab.test", "-days", "30"]),
        Duration::from_secs(30),
    );
    assert!(o.status.success(), "{}", text(&o));
    let _ = Command::new("chmod").arg("600").arg(&key).status();
    (cert, key)
}

/// Runs `client` with REQUEST on its stdin; returns what it printed.
fn run_client(mut client: Command) -> Vec<u8> {
    let mut child = client.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("client");
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(REQUEST);
        // Let the response arrive before stdin's end makes the client say goodbye.
        std::thread::sleep(Duration::from_millis(400));
    }
    tlsgate_tests::wait_with_limit(child, Duration::from_secs(10)).stdout
}

/// Makes one session per case, captured; returns the capture, the key log
/// and what each client received.
fn make_sessions(dir: &Scratch, cert: &Path, key: &Path) -> (PathBuf, PathBuf, Vec<Vec<u8>>) {
    let capture = Capture::start(&dir.path("sessions.pcap"), ADDR, PORT);
    let keylog = dir.path("keys.log");
    let mut received = Vec::new();
    for case in CASES {
        let server = match case.gnutls {
            None => Command::new("openssl")
                .args(["s_server", "-accept", &format!("{ADDR}:{PORT}"), "-naccept", "1", "-www"])
                .arg("-cert")
                .arg(cert)
                .arg("-key")
                .arg(key)
                .args(case.openssl)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
            Some(priority) => Command::new("gnutls-serv")
                .args(["--http", "-p", &PORT.to_string(), "--priority", priority])
                .arg("--x509certfile")
                .arg(cert)
                .arg("--x509keyfile")
                .arg(key)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn(),
        };
        let _server = Reaped(server.expect("server"));
        std::thread::sleep(Duration::from_millis(400));
        let client = match case.gnutls {
            None => {
                let mut c = Command::new("openssl");
                c.args(["s_client", "-connect", &format!("{ADDR}:{PORT}"), "-quiet", "-keylogfile"])
                    .arg(&keylog)
                    .args(case.openssl);
                c
            }
            Some(priority) => {
                let mut c = Command::new("gnutls-cli");
                c.args(["--insecure", "-p", &PORT.to_string(), ADDR, "--priority", priority])
                    .env("SSLKEYLOGFILE", &keylog);
                c
            }
        };
        let got = run_client(client);
        let text = String::from_utf8_lossy(&got);
        assert!(text.contains("HTTP/1.0 200"), "{}: the client got no page: {text}", case.name);
        received.push(got);
    }
    (capture.finish(), keylog, received)
}

/// A connection in a capture: its client port, and how many connections
/// from that port came before it (the kernel may give a new loopback
/// connection a port an earlier one used, its TIME_WAIT being on the server).
type Conn = (u16, usize);

/// Each session, in the capture's order (their SYNs; a SYN sent again is the
/// same session).
fn client_ports(capture: &Path) -> Vec<Conn> {
    let mut syns: Vec<(u16, u32)> = Vec::new();
    for f in pcap_frames(capture) {
        if let Some(t) = TcpFrame::parse(&f) {
            if t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK) && !syns.contains(&(t.src_port, t.seq)) {
                syns.push((t.src_port, t.seq));
            }
        }
    }
    syns.iter().enumerate().map(|(i, &(port, _))| (port, syns[..i].iter().filter(|s| s.0 == port).count())).collect()
}

/// The plaintext of a decrypted capture: by connection, (to the server, to the client).
fn plaintext(decrypted: &Path, server_port: u16) -> BTreeMap<Conn, (Vec<u8>, Vec<u8>)> {
    let mut out: BTreeMap<Conn, (Vec<u8>, Vec<u8>)> = BTreeMap::new();
    // Per client port, the connection its frames belong to now (each SYN starts the next).
    let mut current: BTreeMap<u16, usize> = BTreeMap::new();
    for f in pcap_frames(decrypted) {
        let t = TcpFrame::parse(&f).expect("decrypted frames are TCP");
        let to_server = t.dst_port == server_port;
        let port = if to_server { t.src_port } else { t.dst_port };
        if to_server && t.has(tcp_flags::SYN) && !t.has(tcp_flags::ACK) {
            let seen = out.keys().filter(|k| k.0 == port).count();
            current.insert(port, seen);
            out.entry((port, seen)).or_default();
        }
        let conn = (port, current.get(&port).copied().unwrap_or(0));
        let entry = out.entry(conn).or_default();
        if to_server {
            entry.0.extend_from_slice(t.payload());
        } else {
            entry.1.extend_from_slice(t.payload());
        }
    }
    out
}

fn replay(dir: &Scratch, tag: &str, capture: &Path, args: &[&std::ffi::OsStr]) -> (Vec<Value>, PathBuf, String) {
    let (events, decrypted) = (dir.path(&format!("{tag}.json")), dir.path(&format!("{tag}.pcap")));
    let o = run_with_limit(
        Command::new(tlsgate())
            .args(["replay", "--pcap"])
            .arg(capture)
            .arg("--events")
            .arg(&events)
            .arg("--decrypted")
            .arg(&decrypted)
            .args(args),
        Duration::from_secs(120),
    );
    assert!(o.status.success(), "{}", text(&o));
    let events = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    (events, decrypted, String::from_utf8_lossy(&o.stdout).to_string())
}

/// A policy whose one rule reads sessions to `cert` passively with `key`.
fn passive_policy(dir: &Scratch, cert: &Path, key: &Path) -> PathBuf {
    let policy = dir.path("policy.toml");
    std::fs::write(
        &policy,
        format!(
            "[policy]\ndefault_action = \"do-not-decrypt\"\n[[known_key]]\nname = \"lab\"\ncert = {:?}\nkey = {:?}\n\
             [[rule]]\nname = \"lab-passive\"\naction = \"decrypt-known-key\"\nknown_key = \"lab\"\nmode = \"passive\"\n",
            cert.display().to_string(),
            key.display().to_string()
        ),
    )
    .unwrap();
    policy
}

/// A connection's tls event: the n-th from its client port.
fn event_of(events: &[Value], (port, nth): Conn) -> &Value {
    events.iter().filter(|e| e["src_port"] == port && e["event_type"] == "tls").nth(nth).unwrap_or_else(|| {
        let seen: Vec<String> = events.iter().map(|e| format!("{}:{}", e["event_type"], e["src_port"])).collect();
        panic!("no tls event {nth} from port {port}; events: {seen:?}")
    })
}

#[test]
fn every_cipher_suite_is_read_passively_or_with_the_key_log_as_real_stacks_spoke_it() {
    let dir = Scratch::new("passive-suites");
    let (cert, key) = rsa_server_certificate(&dir);
    let (capture, keylog, received) = make_sessions(&dir, &cert, &key);
    let ports = client_ports(&capture);
    assert_eq!(ports.len(), CASES.len(), "one connection per case: {ports:?}");
    let policy = passive_policy(&dir, &cert, &key);
    let _dpdk = dpdk_lock();
    // The policy's passive rule, no key log: RSA key exchange only.
    let (events, decrypted, _) = replay(&dir, "passive", &capture, &["--policy".as_ref(), policy.as_os_str()]);
    let plain = plaintext(&decrypted, PORT);
    for ((case, port), got) in CASES.iter().zip(&ports).zip(&received) {
        let e = event_of(&events, *port);
        if case.rsa {
            assert_eq!(e["policy"]["reason_code"], "read_passively", "{}: {e}", case.name);
            assert_eq!(e["decrypt"]["mode"], "passive", "{}: {e}", case.name);
            // Read, not taken over: no TCP connection of tlsgate's to speak of.
            assert!(e["decrypt"].get("tcp").is_none(), "{}: {e}", case.name);
            assert_eq!(e["decrypt"]["records_failed"], 0, "{}: {e}", case.name);
            let ems = !case.name.contains("without extended master secret");
            assert_eq!(e["decrypt"]["extended_master_secret"], ems, "{}: {e}", case.name);
            let (to_server, to_client) = plain.get(port).unwrap_or_else(|| panic!("{}: nothing decrypted", case.name));
            assert_eq!(to_server, REQUEST, "{}", case.name);
            check_response(case, to_client, got);
        } else {
            assert_eq!(e["policy"]["reason_code"], "undecryptable_not_passively_decryptable", "{}: {e}", case.name);
            assert!(!plain.contains_key(port), "{}", case.name);
        }
    }
    // The key log, no policy: every session.
    let (events, decrypted, stdout) = replay(&dir, "keylog", &capture, &["--keylog".as_ref(), keylog.as_os_str()]);
    let plain = plaintext(&decrypted, PORT);
    for ((case, port), got) in CASES.iter().zip(&ports).zip(&received) {
        let e = event_of(&events, *port);
        assert_eq!(e["decrypt"]["mode"], "keylog", "{}: {e}\n{stdout}", case.name);
        assert_eq!(e["decrypt"]["records_failed"], 0, "{}: {e}", case.name);
        // At least the Finished each way, the request and the response.
        assert!(e["decrypt"]["records_to_server"].as_u64() >= Some(2), "{}: {e}", case.name);
        assert!(e["decrypt"]["records_to_client"].as_u64() >= Some(2), "{}: {e}", case.name);
        let (to_server, to_client) = plain.get(port).unwrap_or_else(|| panic!("{}: nothing decrypted", case.name));
        assert_eq!(to_server, REQUEST, "{}", case.name);
        check_response(case, to_client, got);
    }
}

/// OpenSSL's `-quiet` client prints exactly what it received; GnuTLS's prints
/// its own lines around it.
fn check_response(case: &Case, decrypted: &[u8], client_got: &[u8]) {
    assert!(decrypted.starts_with(b"HTTP/1.0 200"), "{}: {:?}", case.name, String::from_utf8_lossy(decrypted));
    if case.gnutls.is_none() {
        assert_eq!(decrypted, client_got, "{}", case.name);
    } else {
        assert!(client_got.windows(decrypted.len()).any(|w| w == decrypted), "{}", case.name);
    }
}

#[test]
fn pcapfs_capture_decrypted_in_replay_gives_tshark_the_http_object() {
    let dir = Scratch::new("passive-pcapfs");
    let base = testdata().join("pcapfs/feature_test");
    let key = dir.path("server.key");
    std::fs::copy(base.join("keyfiles/server_private.key"), &key).unwrap();
    let _ = Command::new("chmod").arg("600").arg(&key).status();
    let policy = passive_policy(&dir, &base.join("expected_output/tls/1-193_TLSCertificate.pem"), &key);
    let _dpdk = dpdk_lock();
    let keylog = base.join("keyfiles/master_and_premaster.key");
    let (events, decrypted, stdout) = replay(
        &dir,
        "both",
        &base.join("feature_test.pcap"),
        &["--policy".as_ref(), policy.as_os_str(), "--keylog".as_ref(), keylog.as_os_str()],
    );
    assert!(stdout.contains("decrypted: 3 of 3 TLS session(s) (2 passive, 1 key log)"), "{stdout}");
    let modes: Vec<&str> = events.iter().filter_map(|e| e["decrypt"]["mode"].as_str()).collect();
    assert_eq!(modes, ["keylog", "passive", "passive"]);
    // tshark follows the synthetic stream and carves the page s_server sent.
    let objects = dir.path("objects");
    let o = run_with_limit(
        Command::new("tshark")
            .arg("-r")
            .arg(&decrypted)
            .args(["-q", "--export-objects"])
            .arg(format!("http,{}", objects.display())),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    let carved = std::fs::read(objects.join("%2f")).expect("tshark exported the GET / response body");
    assert_eq!(carved, std::fs::read(base.join("expected_output/http/4-117")).unwrap());
}

#[test]
fn resumed_sessions_are_read_with_the_master_secret_of_the_session_they_resume() {
    let dir = Scratch::new("passive-resume");
    let (cert, key) = rsa_server_certificate(&dir);
    let capture = Capture::start(&dir.path("resume.pcap"), RESUME_ADDR, RESUME_PORT);
    let mut received = Vec::new();
    // By session ID (the server keeps no tickets), then by ticket.
    for server_args in [&["-no_ticket"][..], &[][..]] {
        let server = Command::new("openssl")
            .args(["s_server", "-accept", &format!("{RESUME_ADDR}:{RESUME_PORT}"), "-naccept", "2", "-www", "-tls1_2"])
            .args(["-cipher", "AES128-GCM-SHA256", "-cert"])
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(server_args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        let _server = Reaped(server);
        std::thread::sleep(Duration::from_millis(400));
        let session = dir.path("session.pem");
        for flag in ["-sess_out", "-sess_in"] {
            let mut c = Command::new("openssl");
            c.args(["s_client", "-connect", &format!("{RESUME_ADDR}:{RESUME_PORT}"), "-quiet", "-tls1_2"])
                .arg(flag)
                .arg(&session);
            received.push(run_client(c));
        }
    }
    let capture = capture.finish();
    let ports = client_ports(&capture);
    assert_eq!(ports.len(), 4);
    let policy = passive_policy(&dir, &cert, &key);
    let _dpdk = dpdk_lock();
    let (events, decrypted, _) = replay(&dir, "resume-read", &capture, &["--policy".as_ref(), policy.as_os_str()]);
    let plain = plaintext(&decrypted, RESUME_PORT);
    for (i, (port, got)) in ports.iter().zip(&received).enumerate() {
        let e = event_of(&events, *port);
        assert_eq!(e["decrypt"]["mode"], "passive", "session {i}: {e}");
        assert_eq!(e["decrypt"]["resumed"], i % 2 == 1, "session {i}: {e}");
        assert_eq!(plain[port].0, REQUEST, "session {i}");
        assert_eq!(&plain[port].1, got, "session {i}");
    }
}

#[test]
fn a_passive_rule_on_a_live_flow_reads_it_while_the_client_sees_the_server_itself() {
    use tlsgate_tests::netns::{start_tlsgate, stop_and_read_events, MirrorLink, Topology};
    let _g = dpdk_lock();
    let topo = Topology::new(24);
    let dir = Scratch::new("passive-live");
    let (cert, key) = rsa_server_certificate(&dir);
    let policy = passive_policy(&dir, &cert, &key);
    // A mirror link beside: tlsgate on one end, tcpdump on the other.
    let link = MirrorLink::new(&topo, "p", &dir.path("mirror.pcap"));
    let mirror_if = link.tlsgate_if.clone();
    let settings = topo
        .settings_with_slow_path(1, 1)
        .replace("qpairs=2\"]", &format!("qpairs=2\", \"--vdev=net_af_packet2,iface={mirror_if}\"]"))
        .replace("[slowpath]\n", "[slowpath]\ndecrypted_pcap = \"decrypted.pcap\"\n");
    let cfg = dir.path("tlsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = {:?}\nevents = \"events.json\"\n[mirror]\nport = \"net_af_packet2\"\n{settings}",
            policy.display().to_string()
        ),
    )
    .unwrap();
    let counters = dir.path("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", counters.to_str().unwrap()]);
    let server = topo
        .exec(&topo.srv, "openssl")
        .args([
            "s_server",
            "-accept",
            &format!("{}:443", topo.srv_ip),
            "-www",
            "-tls1_2",
            "-cipher",
            "AES128-GCM-SHA256",
        ])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server");
    let _server = Reaped(server);
    let connect = format!("{}:443", topo.srv_ip);
    // The certificate the client is shown: the server's own, byte for byte (retried while things come up).
    let start = std::time::Instant::now();
    let shown = loop {
        let o = run_with_limit(
            topo.exec(&topo.cli, "openssl").args(["s_client", "-connect", &connect, "-showcerts"]),
            Duration::from_secs(10),
        );
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        if text.contains("BEGIN CERTIFICATE") {
            break text;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no handshake through tlsgate: {text}");
        std::thread::sleep(Duration::from_millis(300));
    };
    let own = std::fs::read_to_string(&cert).unwrap();
    let body = |pem: &str| -> String {
        let b = pem.split("-----BEGIN CERTIFICATE-----").nth(1).unwrap_or_default();
        b.split("-----END CERTIFICATE-----").next().unwrap_or_default().split_whitespace().collect()
    };
    assert_eq!(body(&shown), body(&own), "the client sees the server's own certificate");
    let mut c = topo.exec(&topo.cli, "openssl");
    c.args(["s_client", "-connect", &connect, "-quiet"]);
    let page = run_client(c);
    assert!(String::from_utf8_lossy(&page).contains("HTTP/1.0 200"), "{}", String::from_utf8_lossy(&page));
    std::thread::sleep(Duration::from_millis(500));
    let (_, events) = stop_and_read_events(&mut gate, &dir.path("events.json"));
    let read: Vec<&Value> = events.iter().filter(|e| e["decrypt"]["bytes_to_server"] == REQUEST.len()).collect();
    assert_eq!(read.len(), 1, "{events:?}");
    let e = read[0];
    assert_eq!(e["policy"]["reason_code"], "read_passively", "{e}");
    assert_eq!(e["policy"]["actual_action"], "do-not-decrypt", "{e}");
    assert_eq!(e["decrypt"]["mode"], "passive", "{e}");
    assert_eq!(e["decrypt"]["bytes_to_client"], page.len(), "{e}");
    assert_eq!(e["decrypt"]["records_failed"], 0, "{e}");
    assert!(e["decrypt"]["reason_code"].is_null(), "{e}");
    // The plaintext in the decrypted pcap, as the client sent and got it.
    let mut to_server = Vec::new();
    let mut to_client = Vec::new();
    for f in pcap_frames(&dir.path("decrypted.pcap")) {
        let t = TcpFrame::parse(&f).expect("TCP");
        if t.dst_port == 443 {
            to_server.extend_from_slice(t.payload());
        } else {
            to_client.extend_from_slice(t.payload());
        }
    }
    assert_eq!(to_server, REQUEST);
    assert_eq!(to_client, page);
    // And the same frames on the mirror port.
    let file: Vec<Vec<u8>> = pcap_frames(&dir.path("decrypted.pcap"));
    assert_eq!(link.frames(), file, "the mirror carries the decrypted pcap's frames");
    let c: Value = serde_json::from_slice(&std::fs::read(&counters).unwrap()).unwrap();
    assert!(c["slow_path"][0]["passive_copies"].as_u64() > Some(10), "{c}");
    // The -showcerts session and the page's, both read (the first carried no data).
    assert_eq!(c["slow_path"][0]["sessions_read_passively"], 2, "{c}");
    assert_eq!(c["slow_path"][0]["flows_taken_over"], 0, "{c}");
}

#[test]
fn ssl3_sessions_from_tlslite_are_read_passively() {
    // tlslite-ng (scripts/setup puts it in target/pyenv): Debian's OpenSSL and GnuTLS no longer speak SSL 3.0.
    const SSL3_ADDR: &str = "127.0.0.85";
    const SSL3_PORT: u16 = 4485;
    let dir = Scratch::new("passive-ssl3");
    let (cert, key) = rsa_server_certificate(&dir);
    let python = tlsgate_tests::repo().join("target/pyenv/bin/python");
    let script = tlsgate_tests::repo().join("tests/e2e/tlslite_session.py");
    let capture = Capture::start(&dir.path("ssl3.pcap"), SSL3_ADDR, SSL3_PORT);
    let mut exchanged = Vec::new();
    let ciphers = ["aes128", "3des", "rc4", "rc4-md5"];
    for cipher in ciphers {
        let o = run_with_limit(
            Command::new(&python)
                .arg(&script)
                .args([SSL3_ADDR, &SSL3_PORT.to_string()])
                .arg(&cert)
                .arg(&key)
                .args(["ssl3", cipher]),
            Duration::from_secs(60),
        );
        assert!(o.status.success(), "{cipher}: {}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let mut lines =
            out.lines().map(|l| (0..l.len()).step_by(2).map(|i| u8::from_str_radix(&l[i..i + 2], 16).unwrap()));
        let (request, page): (Vec<u8>, Vec<u8>) = (lines.next().unwrap().collect(), lines.next().unwrap().collect());
        assert!(page.starts_with(b"HTTP/1.0 200"), "{cipher}");
        exchanged.push((request, page));
    }
    let capture = capture.finish();
    let ports = client_ports(&capture);
    assert_eq!(ports.len(), ciphers.len());
    let policy = passive_policy(&dir, &cert, &key);
    let _dpdk = dpdk_lock();
    let (events, decrypted, _) = replay(&dir, "ssl3-read", &capture, &["--policy".as_ref(), policy.as_os_str()]);
    let plain = plaintext(&decrypted, SSL3_PORT);
    for ((cipher, port), (request, page)) in ciphers.iter().zip(&ports).zip(&exchanged) {
        let e = event_of(&events, *port);
        assert_eq!(e["decrypt"]["version"], "SSLv3", "{cipher}: {e}");
        assert_eq!(e["decrypt"]["mode"], "passive", "{cipher}: {e}");
        assert_eq!(e["decrypt"]["records_failed"], 0, "{cipher}: {e}");
        assert_eq!(&plain[port].0, request, "{cipher}");
        assert_eq!(&plain[port].1, page, "{cipher}");
    }
}

/// TLS 1.3 0-RTT from OpenSSL, read with the key log: data the server took
/// comes first in the plaintext; data it refused (a server that cannot
/// resume the session, or one that asks for another key share first) is
/// counted, not exported, and the rest of the session is read.
#[test]
fn tls13_early_data_taken_or_refused_is_read_with_the_key_log() {
    const EARLY_ADDR: &str = "127.0.0.86";
    const EARLY_PORT: u16 = 4486;
    const EARLY: &[u8] = b"EARLY DATA: GET /zero-rtt\n";
    let dir = Scratch::new("passive-early");
    let (cert, key) = rsa_server_certificate(&dir);
    let early = dir.path("early.txt");
    std::fs::write(&early, EARLY).unwrap();
    let keylog = dir.path("keys.log");
    let session = dir.path("session.pem");
    let capture = Capture::start(&dir.path("early.pcap"), EARLY_ADDR, EARLY_PORT);
    // One server per session, its stdin held open (it stops at its end).
    let serve = |extra: &[&str]| {
        let child = Command::new("openssl")
            .args(["s_server", "-accept", &format!("{EARLY_ADDR}:{EARLY_PORT}"), "-naccept", "1", "-tls1_3"])
            .arg("-cert")
            .arg(&cert)
            .arg("-key")
            .arg(&key)
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl s_server");
        std::thread::sleep(Duration::from_millis(400));
        Reaped(child)
    };
    let client = |extra: &[&std::ffi::OsStr]| {
        let mut c = Command::new("openssl");
        // -brief, not -quiet: the client leaves at its stdin's end (the echo
        // server would never close first).
        c.args(["s_client", "-connect", &format!("{EARLY_ADDR}:{EARLY_PORT}"), "-brief", "-tls1_3", "-keylogfile"])
            .arg(&keylog)
            .args(extra);
        run_client(c);
    };
    let resume: [&std::ffi::OsStr; 4] =
        ["-sess_in".as_ref(), session.as_os_str(), "-early_data".as_ref(), early.as_os_str()];
    // A session whose ticket allows early data, then one that sends it and
    // is taken (same server process: it knows the ticket).
    let server = serve(&["-early_data", "-no_anti_replay", "-naccept", "2"]);
    client(&["-sess_out".as_ref(), session.as_os_str()]);
    client(&resume);
    drop(server);
    // Refused: a new server process cannot open the ticket (full handshake).
    let server = serve(&[]);
    client(&resume);
    drop(server);
    // Refused by a HelloRetryRequest (the server wants another group).
    let server = serve(&["-groups", "P-256"]);
    client(&resume);
    drop(server);
    let capture = capture.finish();
    let ports = client_ports(&capture);
    assert_eq!(ports.len(), 4, "{ports:?}");

    let _dpdk = dpdk_lock();
    let (events, decrypted, stdout) = replay(&dir, "early-read", &capture, &["--keylog".as_ref(), keylog.as_os_str()]);
    assert!(stdout.contains("decrypted: 4 of 4"), "{stdout}");
    let plain = plaintext(&decrypted, EARLY_PORT);
    let expect = [(None, REQUEST.to_vec()), (Some("accepted"), [EARLY, REQUEST].concat())];
    let refused = (Some("refused"), REQUEST.to_vec());
    for (i, (port, (early_data, to_server))) in ports.iter().zip(expect.iter().chain([&refused, &refused])).enumerate()
    {
        let e = event_of(&events, *port);
        let d = &e["decrypt"];
        assert_eq!(d["mode"], "keylog", "session {i}: {e}");
        assert_eq!(d["records_failed"], 0, "session {i}: {e}");
        assert_eq!(d["records_not_decrypted"], 0, "session {i}: {e}");
        assert_eq!(d["early_data"].as_str(), *early_data, "session {i}: {e}");
        // Only the session whose early data was taken resumed (the other
        // servers could not open the ticket).
        assert_eq!(d["resumed"], i == 1, "session {i}: {e}");
        assert_eq!(&plain[port].0, to_server, "session {i}: {e}");
        if *early_data == Some("refused") {
            assert_eq!(d["early_data_refused_bytes"], EARLY.len(), "session {i}: {e}");
        }
    }

    // Without the early secret in the key log, the early records are
    // counted as not decrypted and the rest is read.
    let text = std::fs::read_to_string(&keylog).unwrap();
    let without: String =
        text.lines().filter(|l| !l.starts_with("CLIENT_EARLY_TRAFFIC_SECRET")).map(|l| format!("{l}\n")).collect();
    let keylog2 = dir.path("keys-without-early.log");
    std::fs::write(&keylog2, without).unwrap();
    let (events, decrypted, _) = replay(&dir, "early-unread", &capture, &["--keylog".as_ref(), keylog2.as_os_str()]);
    let plain = plaintext(&decrypted, EARLY_PORT);
    let e = event_of(&events, ports[1]);
    assert_eq!(e["decrypt"]["early_data"], "not_decrypted", "{e}");
    assert_eq!(e["decrypt"]["records_failed"], 0, "{e}");
    assert_eq!(plain[&ports[1]].0, REQUEST, "{e}");
}
