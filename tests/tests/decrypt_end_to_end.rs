//! End to end through the slow path: real clients (curl, openssl s_client)
//! and servers (a Python HTTPS server, nghttpd for HTTP/2, openssl s_server)
//! in two network namespaces, joined only through tlsgate (af_packet, two
//! workers and one slow-path lcore). tlsgate takes each decrypted connection
//! over mid-stream and relays the plaintext between its own TLS sessions;
//! every check is made from the client's side, then against the event log,
//! the key log and the decrypted-traffic pcap.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use tlsgate_tests::netns::{payload, sha256_hex, start_tlsgate, Reaper, Topology};
use tlsgate_tests::{bin, dpdk_lock, pcap_frames, repo, run_with_limit, signal, text, wait_with_limit, Scratch};

/// Runs `openssl ARGS` in `dir`, failing the test if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let o = run_with_limit(Command::new("openssl").current_dir(dir).args(args), Duration::from_secs(30));
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

/// A P-256 key and a CSR for `subject`.
fn leaf_request(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
        ],
    );
}

/// `name`.pem for `name`.csr, signed by `ca`, valid for the SAN names given.
fn sign(dir: &Path, name: &str, ca: &str, dns: &[&str]) {
    let san: Vec<String> = dns.iter().map(|d| format!("DNS:{d}")).collect();
    let ext = format!(
        "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature\n",
        san.join(",")
    );
    std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-days",
            "20",
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ],
    );
}

/// A self-signed certificate; a CA when `ca`.
fn self_signed(dir: &Path, name: &str, subject: &str, ca: bool, san: Option<&str>) {
    let mut args = vec![
        "req".to_string(),
        "-x509".into(),
        "-newkey".into(),
        "ec".into(),
        "-pkeyopt".into(),
        "ec_paramgen_curve:P-256".into(),
        "-nodes".into(),
        "-days".into(),
        "30".into(),
        "-subj".into(),
        subject.into(),
        "-keyout".into(),
        format!("{name}.key"),
        "-out".into(),
        format!("{name}.pem"),
    ];
    if ca {
        args.extend(["-addext".into(), "basicConstraints=critical,CA:TRUE".into()]);
        args.extend(["-addext".into(), "keyUsage=critical,keyCertSign,cRLSign".into()]);
    }
    if let Some(san) = san {
        args.extend(["-addext".into(), format!("subjectAltName={san}")]);
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    openssl(dir, &refs);
}

/// The PKI of the test: a public root the policy trusts (`webca`), tlsgate's
/// resigning CA (`corpca`), and the servers' certificates.
fn make_pki(dir: &Path) {
    self_signed(dir, "webca", "/CN=Web Root CA", true, None);
    self_signed(dir, "corpca", "/O=Corp/CN=Corp Inspection CA", true, None);
    leaf_request(dir, "shop", "/O=Shop Inc/CN=www.shop.test");
    sign(
        dir,
        "shop",
        "webca",
        &["www.shop.test", "h2.shop.test", "pinned.shop.test", "probe.shop.test", "rude.shop.test", "ech.shop.test"],
    );
    leaf_request(dir, "mtls", "/CN=mtls.test");
    sign(dir, "mtls", "webca", &["mtls.test"]);
    leaf_request(dir, "intranet", "/O=Corp/CN=intranet.test");
    sign(dir, "intranet", "webca", &["intranet.test"]);
    leaf_request(dir, "intranet2", "/O=Corp/CN=intranet.test");
    sign(dir, "intranet2", "webca", &["intranet.test"]);
    self_signed(dir, "self", "/CN=self.test", false, Some("DNS:self.test"));
    let chain = [std::fs::read(dir.join("shop.pem")).unwrap(), std::fs::read(dir.join("webca.pem")).unwrap()].concat();
    std::fs::write(dir.join("shopchain.pem"), chain).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "key") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
}

const POLICY: &str = r#"[policy]
default_action = "do-not-decrypt"

[policy.undecryptable]
client_auth = "do-not-decrypt"

[trust]
ca_files = ["webca.pem"]

[[ca]]
name = "corp"
cert = "corpca.pem"
key = "corpca.key"

[[known_key]]
name = "intranet"
cert = "intranet.pem"
key = "intranet.key"

[[rule]]
name = "watch"
action = "monitor"

[[rule]]
name = "intranet-known-key"
action = "decrypt-known-key"
known_key = "intranet"
sni = ["intranet.test"]

[[rule]]
name = "expired-probe-servers"
action = "block"
sni = ["probe.shop.test"]
cert_status = { expired = true }

[[rule]]
name = "inspect"
action = "decrypt-resign"
ca = "corp"
sni = ["*.shop.test", "mtls.test", "self.test"]
"#;

/// The servers, each killed on drop.
#[allow(dead_code)]
struct Servers(Vec<Reaper>);

fn start_servers(topo: &Topology, dir: &Path, www: &Path) -> Servers {
    let mut v = Vec::new();
    let py = topo
        .exec(&topo.srv, "python3")
        .arg(repo().join("tests/e2e/http_server.py"))
        .args(["--bind", &topo.srv_ip, "--port", "8443", "--lifetime", "300", "--dir"])
        .arg(www)
        .arg("--cert")
        .arg(dir.join("shopchain.pem"))
        .arg("--key")
        .arg(dir.join("shop.key"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    v.push(Reaper(Some(py)));
    let h2 = topo
        .exec(&topo.srv, "nghttpd")
        .arg("-d")
        .arg(www)
        .arg("8444")
        .arg(dir.join("shop.key"))
        .arg(dir.join("shopchain.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    v.push(Reaper(Some(h2)));
    for (port, name, extra) in [
        ("4435", "mtls", &["-verify", "1"][..]),
        ("4436", "self", &[][..]),
        ("4437", "intranet", &[][..]),
        ("4438", "intranet2", &[][..]),
    ] {
        let c = topo
            .exec(&topo.srv, "openssl")
            .args(["s_server", "-quiet", "-www", "-accept", port, "-key"])
            .arg(dir.join(format!("{name}.key")))
            .arg("-cert")
            .arg(dir.join(format!("{name}.pem")))
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        v.push(Reaper(Some(c)));
    }
    Servers(v)
}

/// The client's view.
/// A scratch folder with the PKI and a web root holding index.html: (the
/// scratch, kept while the test runs; its folder; the web root).
fn site(name: &str) -> (Scratch, std::path::PathBuf, std::path::PathBuf) {
    let scratch = Scratch::new(name);
    let dir = scratch.0.clone();
    make_pki(&dir);
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>behind tlsgate</html>\n").unwrap();
    (scratch, dir, www)
}

/// `tlsgate run` in the rig with POLICY, `settings`, the event log in
/// events.json and the final counters in the returned path.
fn start_gate(topo: &Topology, dir: &std::path::Path, settings: &str) -> (Reaper, std::path::PathBuf) {
    std::fs::write(dir.join("policy.toml"), POLICY).unwrap();
    let cfg = dir.join("tlsgate.toml");
    std::fs::write(&cfg, format!("policy = \"policy.toml\"\nevents = \"events.json\"\n{settings}")).unwrap();
    let json = dir.join("counters.json");
    (start_tlsgate(topo, &cfg, &["--counters-json", json.to_str().unwrap()]), json)
}

struct Client<'a> {
    topo: &'a Topology,
    dir: &'a Path,
}

impl Client<'_> {
    /// Resign's page, retried while everything comes up (30 s at most).
    fn first_page(&self) {
        let start = Instant::now();
        loop {
            let o = self.curl("www.shop.test", 8443, "/index.html", "corpca", &["--max-time", "3"]);
            if o.status.success() {
                assert_eq!(String::from_utf8_lossy(&o.stdout), "<html>behind tlsgate</html>\n");
                return;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate: {}", text(&o));
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// curl to `https://NAME:PORT/PATH`, trusting `ca`.pem only.
    fn curl(&self, name: &str, port: u16, path: &str, ca: &str, extra: &[&str]) -> Output {
        run_with_limit(
            self.topo
                .exec(&self.topo.cli, "curl")
                .args(["-sS", "--max-time", "60", "--cacert"])
                .arg(self.dir.join(format!("{ca}.pem")))
                .arg("--resolve")
                .arg(format!("{name}:{port}:{}", self.topo.srv_ip))
                .args(extra)
                .arg(format!("https://{name}:{port}{path}")),
            Duration::from_secs(70),
        )
    }

    /// The certificate the client is shown, as `openssl x509 -text` prints it,
    /// and whether it verified against `ca`.pem.
    fn shown(&self, name: &str, port: u16, ca: &str) -> (String, Vec<u8>, bool) {
        let o = run_with_limit(
            self.topo
                .exec(&self.topo.cli, "openssl")
                .args(["s_client", "-connect", &format!("{}:{port}", self.topo.srv_ip), "-servername", name])
                .arg("-CAfile")
                .arg(self.dir.join(format!("{ca}.pem")))
                .stdin(Stdio::null()),
            Duration::from_secs(20),
        );
        let out = String::from_utf8_lossy(&o.stdout).to_string();
        let verified = out.contains("Verify return code: 0 (ok)");
        let pem_start =
            out.find("-----BEGIN CERTIFICATE-----").unwrap_or_else(|| panic!("no certificate: {}", text(&o)));
        let pem_end = out.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
        let pem = &out[pem_start..pem_end];
        let leaf = self.dir.join("shown.pem");
        std::fs::write(&leaf, pem).unwrap();
        let t = run_with_limit(
            Command::new("openssl").args(["x509", "-noout", "-text", "-nameopt", "RFC2253", "-in"]).arg(&leaf),
            Duration::from_secs(10),
        );
        let d = run_with_limit(
            Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(&leaf),
            Duration::from_secs(10),
        );
        (String::from_utf8_lossy(&t.stdout).to_string(), d.stdout, verified)
    }
}

fn probes_learned(counters: &Path) -> u64 {
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(counters).unwrap()).unwrap();
    c["slow_path"][0]["probes_learned"].as_u64().unwrap_or(0)
}

fn der_of(pem: &Path) -> Vec<u8> {
    run_with_limit(Command::new("openssl").args(["x509", "-outform", "DER", "-in"]).arg(pem), Duration::from_secs(10))
        .stdout
}

#[test]
fn decrypt_resign_and_known_key_through_tlsgate_with_real_clients_and_servers() {
    let _g = dpdk_lock();
    let topo = Topology::new(5);
    let (_scratch, dir, www) = site("e2e-decrypt");
    let down = payload(20 << 20, 3);
    let up = payload(20 << 20, 5);
    let small = payload(1 << 20, 9);
    std::fs::write(www.join("down.bin"), &down).unwrap();
    std::fs::write(www.join("small.bin"), &small).unwrap();
    let up_file = dir.join("up.bin");
    std::fs::write(&up_file, &up).unwrap();
    let settings = topo
        .settings_with_slow_path(2, 1)
        .replace("[slowpath]\n", "[slowpath]\nkeylog = \"keys.log\"\ndecrypted_pcap = \"decrypted.pcap\"\n");
    let (mut gate, json) = start_gate(&topo, &dir, &settings);
    let _servers = start_servers(&topo, &dir, &www);
    let client = Client { topo: &topo, dir: &dir };

    // Resign, HTTP/1.1, TLS 1.3: the page.
    client.first_page();
    // The certificate the client sees: issued by our CA, the server's subject and SAN.
    let (cert, _, verified) = client.shown("www.shop.test", 8443, "corpca");
    assert!(verified, "the re-signed certificate verifies against the resigning CA:\n{cert}");
    assert!(cert.contains("Issuer: CN=Corp Inspection CA,O=Corp"), "{cert}");
    assert!(cert.contains("Subject: CN=www.shop.test,O=Shop Inc"), "{cert}");
    assert!(
        cert.contains("DNS:www.shop.test, DNS:h2.shop.test, DNS:pinned.shop.test, DNS:probe.shop.test"),
        "the SAN is copied:\n{cert}"
    );

    // TLS 1.2 on both sides.
    let o = client.curl("www.shop.test", 8443, "/index.html", "corpca", &["--tls-max", "1.2", "-w", "%{ssl_version}"]);
    assert!(o.status.success(), "TLS 1.2: {}", text(&o));

    // HTTP/2: the ALPN the server chose reaches the client.
    let o = client.curl("h2.shop.test", 8444, "/index.html", "corpca", &["--http2", "-w", "\n%{http_version}"]);
    assert!(o.status.success(), "h2: {}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("\n2"), "curl spoke HTTP/2: {}", text(&o));

    // 20 MiB each way, intact.
    let got = dir.join("got.bin");
    let o = client.curl("www.shop.test", 8443, "/down.bin", "corpca", &["-o", got.to_str().unwrap()]);
    assert!(o.status.success(), "download: {}", text(&o));
    assert_eq!(sha256_hex(&std::fs::read(&got).unwrap()), sha256_hex(&down), "download intact");
    let o = client.curl("www.shop.test", 8443, "/upload", "corpca", &["-T", up_file.to_str().unwrap()]);
    assert!(o.status.success(), "upload: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), sha256_hex(&up), "upload intact");

    // 100 sessions at once, each intact.
    let mut args: Vec<String> = vec!["-Z".into(), "--parallel-max".into(), "100".into()];
    for i in 0..100 {
        args.push("-o".into());
        args.push(dir.join(format!("p{i}.bin")).to_string_lossy().into_owned());
        args.push(format!("https://www.shop.test:8443/small.bin?{i}"));
    }
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl")
            .args(["-sS", "--max-time", "90", "--cacert"])
            .arg(dir.join("corpca.pem"))
            .arg("--resolve")
            .arg(format!("www.shop.test:8443:{}", topo.srv_ip))
            .args(&args),
        Duration::from_secs(100),
    );
    assert!(o.status.success(), "100 parallel sessions: {}", text(&o));
    for i in 0..100 {
        let got = std::fs::read(dir.join(format!("p{i}.bin"))).unwrap_or_default();
        assert_eq!(sha256_hex(&got), sha256_hex(&small), "parallel session {i} intact");
    }

    // Clients that misbehave after their ClientHello (garbage, a reset, a
    // stall, a flood) while a well-behaved one goes on: it gets its page, and
    // so does the next one.
    let rude: Vec<Reaper> = ["garbage", "reset", "stall", "flood"]
        .iter()
        .map(|mode| {
            let c = topo
                .exec(&topo.cli, "python3")
                .arg(repo().join("tests/e2e/rude_client.py"))
                .args(["--connect", &format!("{}:8443", topo.srv_ip), "--sni", "rude.shop.test", "--mode", mode])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            Reaper(Some(c))
        })
        .collect();
    let o = client.curl("www.shop.test", 8443, "/index.html", "corpca", &[]);
    assert!(o.status.success(), "a session beside misbehaving ones: {}", text(&o));
    for mut r in rude {
        if let Some(c) = r.0.take() {
            let o = wait_with_limit(c, Duration::from_secs(30));
            assert!(o.status.success(), "the misbehaving client ran to its end: {}", text(&o));
        }
    }
    let o = client.curl("www.shop.test", 8443, "/index.html", "corpca", &[]);
    assert!(o.status.success(), "a session after misbehaving ones: {}", text(&o));

    // A ClientHello over several segments (a 200-byte MSS): held back until
    // whole, then decrypted.
    let small_mss = |sni: &str, port: u16, ca: &str, path: &str| {
        run_with_limit(
            topo.exec(&topo.cli, "python3")
                .arg(repo().join("tests/e2e/rude_client.py"))
                .args(["--connect", &format!("{}:{port}", topo.srv_ip), "--sni", sni, "--mode", "small-mss"])
                .arg("--cafile")
                .arg(dir.join(format!("{ca}.pem")))
                .args(["--path", path]),
            Duration::from_secs(40),
        )
    };
    let o = small_mss("www.shop.test", 8443, "corpca", "/index.html");
    assert!(o.status.success(), "a ClientHello in several segments, decrypted: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "<html>behind tlsgate</html>\n");

    // Known key: the client sees exactly the server's own certificate.
    let (cert, der, verified) = client.shown("intranet.test", 4437, "webca");
    assert!(verified, "{cert}");
    assert_eq!(der, der_of(&dir.join("intranet.pem")), "the imported certificate, byte for byte");
    // A server that presents another certificate for the name: that session is
    // closed; the next one is judged on the new certificate and passes undecrypted.
    let first = client.curl("intranet.test", 4438, "/", "webca", &[]);
    assert!(!first.status.success(), "the session with a changed certificate is closed: {}", text(&first));
    let (_, der, verified) = client.shown("intranet.test", 4438, "webca");
    assert!(verified);
    assert_eq!(der, der_of(&dir.join("intranet2.pem")), "the next session reaches the server untouched");

    // ... and one that is not decrypted reaches the server as it was sent.
    let o = small_mss("intranet.test", 4438, "webca", "/");
    assert!(o.status.success(), "a ClientHello in several segments, passed on: {}", text(&o));

    // An untrusted server certificate: re-signed by the untrusted CA, so the
    // client trusting our CA fails verification as it would have.
    let o = client.curl("self.test", 4436, "/", "corpca", &[]);
    assert_eq!(o.status.code(), Some(60), "curl refuses the certificate: {}", text(&o));
    let (cert, _, _) = client.shown("self.test", 4436, "corpca");
    assert!(cert.contains("Issuer: CN=tlsgate untrusted CA"), "{cert}");

    // A server that asks for a client certificate: not decrypted; the session
    // ends, and the next one to that server passes undecrypted.
    let o = client.curl("mtls.test", 4435, "/", "corpca", &[]);
    assert!(!o.status.success(), "{}", text(&o));
    let o = client.curl("mtls.test", 4435, "/", "webca", &[]);
    assert!(o.status.success(), "the next session is bypassed: {}", text(&o));

    // A decision that needs the server's certificate at the ClientHello, and
    // TLS 1.3 hides it: the first session passes undecrypted, the slow path
    // probes the server, and a later session is decrypted.
    let o = client.curl("probe.shop.test", 8443, "/index.html", "webca", &[]);
    assert!(o.status.success(), "the first session passes untouched: {}", text(&o));
    let start = Instant::now();
    loop {
        let o = client.curl("probe.shop.test", 8443, "/index.html", "corpca", &[]);
        if o.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "never decrypted after the probe: {}", text(&o));
        std::thread::sleep(Duration::from_millis(200));
    }

    // A client that rejects the forged certificate (it trusts only the public
    // root, as a pinning client would): its SNI is bypassed from then on.
    let o = client.curl("pinned.shop.test", 8443, "/index.html", "webca", &[]);
    assert_eq!(o.status.code(), Some(60), "{}", text(&o));
    let o = client.curl("pinned.shop.test", 8443, "/index.html", "webca", &[]);
    assert!(o.status.success(), "the next session is bypassed: {}", text(&o));

    // A client offering Encrypted Client Hello (rustls's; public name
    // ech.shop.test, its real name sealed): the re-signed session cannot
    // accept ECH, so the client verifies tlsgate's copy for the public name
    // and aborts with alert ech_required (exit 3). Its next ECH session to the
    // server passes undecrypted: trusting only the public root, it verifies
    // the server's own certificate (and aborts again, this server having no
    // ECH key either). Sessions without ECH to that server are still decrypted.
    let ech = |ca: &str| {
        let mut c = topo.exec(&topo.cli, bin("ech-client").to_str().unwrap());
        c.arg(format!("{}:8443", topo.srv_ip)).args(["secret.shop.test", "ech.shop.test"]);
        run_with_limit(c.arg(dir.join(format!("{ca}.pem"))), Duration::from_secs(30))
    };
    let o = ech("corpca");
    assert_eq!(o.status.code(), Some(3), "ECH rejected after tlsgate's copy verified: {}", text(&o));
    let o = ech("webca");
    assert_eq!(o.status.code(), Some(3), "the server's own certificate verified: {}", text(&o));
    let o = client.curl("www.shop.test", 8443, "/index.html", "corpca", &[]);
    assert!(o.status.success(), "a session without ECH is decrypted: {}", text(&o));

    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));

    let log = std::fs::read_to_string(dir.join("events.json")).unwrap();
    let evs: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |sni: &str, port: u16| -> Vec<&serde_json::Value> {
        evs.iter().filter(|e| e["tls"]["sni"] == sni && e["dest_port"] == port).collect()
    };
    let shop = of("www.shop.test", 8443);
    assert!(shop.len() >= 105, "{} sessions to www.shop.test:\n{log}", shop.len());
    for e in &shop {
        assert_eq!(e["policy"]["actual_action"], "decrypt-resign", "{e}");
        assert_eq!(e["decrypt"]["shown_certificate"], "forged", "{e}");
        assert_eq!(e["tls"]["subject"], "O=Shop Inc, CN=www.shop.test", "upstream facts: {e}");
        assert_eq!(e["policy"]["monitor_rules"][0], "watch");
    }
    assert!(
        shop.iter().any(|e| e["decrypt"]["client_version"] == "TLS 1.2" && e["tls"]["version"] == "TLS 1.2"),
        "{:?}",
        shop.iter().map(|e| (&e["decrypt"], &e["tls"]["version"])).take(4).collect::<Vec<_>>()
    );
    assert!(shop.iter().any(|e| e["decrypt"]["bytes_to_client"].as_u64().unwrap() >= 20 << 20));
    assert!(shop.iter().any(|e| e["decrypt"]["bytes_to_server"].as_u64().unwrap() >= 20 << 20));
    // Each of tlsgate's two TCP connections says how it went: 20 MiB to the
    // client took at least as many segments as MSS-sized pieces; what the
    // client sent is what the server got, so the counts match across.
    let big = shop.iter().find(|e| e["decrypt"]["bytes_to_client"].as_u64().unwrap() >= 20 << 20).unwrap();
    let tcp = &big["decrypt"]["tcp"];
    let n = |side: &str, k: &str| tcp[side][k].as_u64().unwrap_or_else(|| panic!("decrypt.tcp.{side}.{k}: {big}"));
    assert!(n("client", "segments_sent") >= (20 << 20) / 1460, "{big}");
    assert!(n("server", "segments_received") >= (20 << 20) / 1460, "{big}");
    for side in ["client", "server"] {
        for k in ["retransmissions", "timeouts", "out_of_order", "out_of_order_dropped", "zero_window_probes"] {
            assert!(tcp[side][k].is_u64(), "decrypt.tcp.{side}.{k}: {big}");
        }
    }
    // Every session ended by its peers: closed, or (the Python clients, whose
    // server sends no close_notify) by the client's alert at the bare FIN.
    let unclosed: Vec<_> = shop
        .iter()
        .filter(|e| {
            let ended = e["decrypt"]["ended"].as_str().unwrap();
            !(ended.contains("closed") || ended.contains("the client sent alert DecodeError"))
        })
        .collect();
    assert!(unclosed.is_empty(), "{unclosed:?}");
    let h2 = of("h2.shop.test", 8444);
    assert_eq!(h2[0]["decrypt"]["alpn"], "h2", "{}", h2[0]);
    let kk = of("intranet.test", 4437);
    assert!(kk.iter().all(|e| e["policy"]["actual_action"] == "decrypt-known-key"), "{log}");
    let changed = of("intranet.test", 4438);
    assert_eq!(changed[0]["policy"]["reason_code"], "known_key_certificate_changed", "{}", changed[0]);
    assert_eq!(changed.last().unwrap()["policy"]["actual_action"], "do-not-decrypt");
    assert!(changed.last().unwrap()["policy"]["rule"].is_null(), "the known-key rule no longer matches");
    let untrusted = of("self.test", 4436);
    assert_eq!(untrusted[0]["decrypt"]["shown_certificate"], "forged-untrusted");
    assert!(untrusted[0]["policy"]["cert_status"].as_array().unwrap().contains(&"self-signed".into()));
    let mtls = of("mtls.test", 4435);
    assert_eq!(mtls[0]["policy"]["reason_code"], "undecryptable_client_auth", "{}", mtls[0]);
    assert_eq!(mtls[1]["policy"]["reason_code"], "excluded_undecryptable", "{}", mtls[1]);
    assert_eq!(mtls[1]["policy"]["actual_action"], "do-not-decrypt");
    let rude = of("rude.shop.test", 8443);
    assert_eq!(rude.len(), 4, "each misbehaving session has its event:\n{log}");
    assert!(rude.iter().all(|e| e["decrypt"]["ended"].is_string()), "{log}");
    let probed = of("probe.shop.test", 8443);
    assert_eq!(probed[0]["policy"]["reason_code"], "server_identity_unknown", "{}", probed[0]);
    assert_eq!(probed[0]["policy"]["actual_action"], "do-not-decrypt");
    assert_eq!(probed.last().unwrap()["policy"]["actual_action"], "decrypt-resign", "{log}");
    assert!(probes_learned(&json) >= 1);
    let ech = of("ech.shop.test", 8443);
    assert_eq!(ech.len(), 2, "{log}");
    assert_eq!(ech[0]["tls"]["ech"], true, "{}", ech[0]);
    assert_eq!(ech[0]["tls"]["sni_is_outer"], true, "{}", ech[0]);
    assert_eq!(ech[0]["policy"]["reason_code"], "undecryptable_ech", "{}", ech[0]);
    assert_eq!(ech[1]["policy"]["reason_code"], "excluded_ech", "{}", ech[1]);
    assert_eq!(ech[1]["policy"]["actual_action"], "do-not-decrypt", "{}", ech[1]);
    let pinned = of("pinned.shop.test", 8443);
    assert_eq!(pinned[0]["policy"]["reason_code"], "client_rejected_certificate", "{}", pinned[0]);
    assert_eq!(pinned[1]["policy"]["reason_code"], "excluded_pinned", "{}", pinned[1]);

    // The key log has both sessions' secrets; the decrypted pcap has the plaintext.
    let keys = std::fs::read_to_string(dir.join("keys.log")).unwrap();
    assert!(keys.lines().any(|l| l.starts_with("CLIENT_HANDSHAKE_TRAFFIC_SECRET ")), "TLS 1.3 lines");
    assert!(keys.lines().any(|l| l.starts_with("CLIENT_RANDOM ")), "TLS 1.2 lines");
    assert!(!keys.contains("PRIVATE KEY"));
    let frames = pcap_frames(&dir.join("decrypted.pcap"));
    let needle = b"GET /index.html HTTP/1.1";
    assert!(frames.iter().any(|f| f.windows(needle.len()).any(|w| w == needle)), "plaintext in the decrypted pcap");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert!(c["slow_path"][0]["sessions_decrypted"].as_u64().unwrap() >= 100, "{c}");
    // af_packet fans flows out over the slow-path lcore's queue too; a worker
    // polls it, so every packet received was received by a worker and none
    // took a hop through the slow path.
    assert_eq!(c["slow_path"][0]["packets_handed_to_workers"], 0, "{c}");
    for port in c["ports"].as_array().unwrap() {
        assert_eq!(port["rx_packets"], port["driver"]["ipackets"], "{port}");
    }
}

/// A finished session lingers for a moment (to answer a retransmitted FIN)
/// but no longer holds one of `slowpath.sessions`: with room for 4, a dozen
/// sessions one after another, all within the linger, are all decrypted.
/// Beside them a client stalls after its ClientHello: its session is reset
/// at the handshake deadline (1 s), long before the client gives up.
#[test]
fn finished_sessions_do_not_hold_session_slots_while_they_linger() {
    let _g = dpdk_lock();
    let topo = Topology::new(6);
    let (_scratch, dir, www) = site("e2e-linger");
    let settings = topo.settings_with_slow_path(1, 1).replace("[slowpath]\n", "[slowpath]\nsessions = 4\n")
        + "\n[flows]\ninspecting_timeout = 1\n";
    let (mut gate, json) = start_gate(&topo, &dir, &settings);
    let _servers = start_servers(&topo, &dir, &www);
    let client = Client { topo: &topo, dir: &dir };
    client.first_page();
    let stall = topo
        .exec(&topo.cli, "python3")
        .arg(repo().join("tests/e2e/rude_client.py"))
        .args(["--connect", &format!("{}:8443", topo.srv_ip), "--sni", "stall.shop.test", "--mode", "stall"])
        .args(["--seconds", "6"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stall = Reaper(Some(stall));
    let stalled_at = Instant::now();
    let burst = Instant::now();
    for i in 0..12 {
        let o = client.curl("www.shop.test", 8443, "/index.html", "corpca", &[]);
        assert!(o.status.success(), "session {i} after {:?}: {}", burst.elapsed(), text(&o));
    }
    let took = burst.elapsed();
    // Before the stalling client gives up (6 s), its session has ended: the
    // event is in the log (written as it comes).
    std::thread::sleep(Duration::from_millis(3500).saturating_sub(stalled_at.elapsed()));
    let early = std::fs::read_to_string(dir.join("events.json")).unwrap_or_default();
    assert!(stalled_at.elapsed() < Duration::from_millis(5500), "the sessions took too long: {took:?}");
    let stalled: Vec<serde_json::Value> = early
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["tls"]["sni"] == "stall.shop.test")
        .collect();
    assert_eq!(stalled.len(), 1, "the stalled session ended at its deadline:\n{early}");
    let ended = stalled[0]["decrypt"]["ended"].as_str().unwrap_or_default();
    assert!(ended.contains("did not complete in time"), "{}", stalled[0]);
    let o = wait_with_limit(stall.0.take().unwrap(), Duration::from_secs(30));
    assert!(o.status.success(), "the stalling client ran to its end: {}", text(&o));
    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let log = std::fs::read_to_string(dir.join("events.json")).unwrap();
    let shop: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["tls"]["sni"] == "www.shop.test")
        .collect();
    let decrypted = shop.iter().filter(|e| e["policy"]["actual_action"] == "decrypt-resign").count();
    assert!(decrypted >= 13, "{decrypted} decrypted; the dozen took {took:?}:\n{log}");
    assert!(shop.iter().all(|e| e["policy"]["reason_code"] != "slowpath_full"), "{log}");
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(c["slow_path"][0]["flows_refused"], 0, "{c}");
}
