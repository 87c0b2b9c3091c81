//! The mirror port read by a real consumer: curl fetches pages through
//! tlsgate (decrypt-resign, af_packet), every decrypted session goes out of
//! a third port as a synthetic TCP stream, tcpdump on the other end of that
//! link writes what arrives, and `tshark --export-objects http` finds every
//! response body exactly as curl received it; the same streams as the
//! decrypted pcap file.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tlsgate_core::packet::TcpFrame;
use tlsgate_tests::netns::{
    payload, sha256_hex, start_https_server, start_tlsgate, stop_and_read_events, MirrorLink, Topology,
};
use tlsgate_tests::{dpdk_lock, pcap_frames, run_with_limit, text, Scratch};

/// The MAC the mirrored frames are sent to.
const IDS_MAC: &str = "02:1d:5e:00:00:01";

fn openssl(dir: &Path, args: &[&str]) {
    let o = run_with_limit(Command::new("openssl").current_dir(dir).args(args), Duration::from_secs(30));
    assert!(o.status.success(), "openssl {args:?}: {}", text(&o));
}

#[test]
fn decrypted_sessions_on_the_mirror_port_give_tshark_every_object_as_curl_got_it() {
    let _g = dpdk_lock();
    let topo = Topology::new(23);
    let scratch = Scratch::new("e2e-mirror");
    let dir = scratch.0.clone();
    // The resigning CA, and the server's own certificate.
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=Mirror Test CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.pem",
            "-subj",
            "/CN=shop.test",
            "-days",
            "30",
            "-addext",
            "subjectAltName=DNS:shop.test",
        ],
    );
    let _ = Command::new("chmod").arg("600").arg(dir.join("ca.key")).status();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    let pages: Vec<(&str, Vec<u8>)> =
        vec![("index.html", b"<html>mirrored</html>\n".to_vec()), ("data.bin", payload(300 << 10, 17))];
    for (name, body) in &pages {
        std::fs::write(www.join(name), body).unwrap();
    }
    std::fs::write(
        dir.join("policy.toml"),
        "[policy]\ndefault_action = \"do-not-decrypt\"\n[[ca]]\nname = \"mirror\"\ncert = \"ca.pem\"\nkey = \"ca.key\"\n\
         [[rule]]\nname = \"inspect-shop\"\naction = \"decrypt-resign\"\nca = \"mirror\"\nsni = [\"shop.test\"]\n",
    )
    .unwrap();

    // The mirror link: tlsgate on one end, tcpdump (the IDS) on the other, both in the middle namespace.
    let mirror_pcap = dir.join("mirror.pcap");
    let link = MirrorLink::new(&topo, "m", &mirror_pcap);
    let mirror_if = link.tlsgate_if.clone();

    let settings = topo
        .settings_with_slow_path(1, 1)
        .replace("qpairs=2\"]", &format!("qpairs=2\", \"--vdev=net_af_packet2,iface={mirror_if}\"]"));
    assert!(settings.contains("net_af_packet2"), "{settings}");
    let settings = settings.replace("[slowpath]\n", "[slowpath]\ndecrypted_pcap = \"decrypted.pcap\"\n");
    let cfg = dir.join("tlsgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "policy = \"policy.toml\"\nevents = \"events.json\"\n[mirror]\nport = \"net_af_packet2\"\nmac = \"{IDS_MAC}\"\n{settings}"
        ),
    )
    .unwrap();
    let counters = dir.join("counters.json");
    let mut gate = start_tlsgate(&topo, &cfg, &["--counters-json", counters.to_str().unwrap()]);
    let _server = start_https_server(&topo, &www, &dir.join("server.pem"), &dir.join("server.key"), 120, &[]);

    let fetch = |name: &str| {
        let out = dir.join(format!("got-{name}"));
        let o = run_with_limit(
            topo.exec(&topo.cli, "curl")
                .args(["-sS", "-k", "--max-time", "5", "-o"])
                .arg(&out)
                .arg("--resolve")
                .arg(format!("shop.test:443:{}", topo.srv_ip))
                .arg(format!("https://shop.test/{name}")),
            Duration::from_secs(10),
        );
        (o, out)
    };
    let start = Instant::now();
    loop {
        let (o, _) = fetch("index.html");
        if o.status.success() {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut got = Vec::new();
    for (name, body) in &pages {
        let (o, out) = fetch(name);
        assert!(o.status.success(), "{name}: {}", text(&o));
        let b = std::fs::read(&out).unwrap();
        assert_eq!(sha256_hex(&b), sha256_hex(body), "{name} reached curl intact");
        got.push((name.to_string(), b));
    }
    let (_, events) = stop_and_read_events(&mut gate, &dir.join("events.json"));
    let decrypted: Vec<_> = events.iter().filter(|e| e["policy"]["reason_code"] == "decrypted").collect();
    assert!(decrypted.len() >= 3, "{events:?}");
    for e in &decrypted {
        // TLS 1.3 both ways: the client's Finished and request at least; the server's flight, ticket(s) and answer.
        assert_eq!(e["decrypt"]["mode"], "takeover", "{e}");
        assert!(e["decrypt"]["records_to_server"].as_u64() >= Some(2), "{e}");
        assert!(e["decrypt"]["records_to_client"].as_u64() >= Some(3), "{e}");
    }

    // What arrived on the mirror: to the IDS's MAC, and what tshark carves from it.
    let frames = link.frames();
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&counters).unwrap()).unwrap();
    assert!(!frames.is_empty(), "nothing arrived on the mirror; counters: {}", c["slow_path"]);
    let mac: Vec<u8> = IDS_MAC.split(':').map(|h| u8::from_str_radix(h, 16).unwrap()).collect();
    let mirrored: Vec<&Vec<u8>> = frames.iter().filter(|f| TcpFrame::parse(f).is_some()).collect();
    assert!(mirrored.iter().all(|f| f[..6] == mac[..]), "every mirrored frame goes to the IDS's MAC");
    // The same streams as the decrypted pcap file (the destination MAC aside).
    let file: Vec<Vec<u8>> = pcap_frames(&dir.join("decrypted.pcap")).into_iter().map(|f| f[6..].to_vec()).collect();
    let wire: Vec<Vec<u8>> = mirrored.iter().map(|f| f[6..].to_vec()).collect();
    assert_eq!(wire, file, "the mirror carries the decrypted pcap's frames");
    let objects = dir.join("objects");
    let o = run_with_limit(
        Command::new("tshark")
            .arg("-r")
            .arg(&mirror_pcap)
            .args(["-q", "--export-objects"])
            .arg(format!("http,{}", objects.display())),
        Duration::from_secs(60),
    );
    assert!(o.status.success(), "{}", text(&o));
    for (name, body) in &got {
        let carved = std::fs::read(objects.join(name)).unwrap_or_else(|e| panic!("tshark carved no {name}: {e}"));
        assert_eq!(sha256_hex(&carved), sha256_hex(body), "{name} on the mirror as curl got it");
    }
    assert_eq!(c["slow_path"][0]["mirrored"].as_u64(), Some(file.len() as u64), "{c}");
    assert_eq!(c["slow_path"][0]["mirror_dropped"].as_u64(), Some(0), "{c}");
}
