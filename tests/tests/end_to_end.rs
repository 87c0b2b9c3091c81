//! End to end: a client and a server in two network namespaces, joined only
//! through tlsgate (af_packet PMD, two workers) in a third. curl fetches a
//! page, then 20 MB each way, checked by SHA-256 on both ends.

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tlsgate_tests::netns::Topology;
use tlsgate_tests::{dpdk_lock, repo, run_with_limit, signal, text, tlsgate, wait_with_limit, Scratch};

/// Kills a child on drop (a failed assertion must not leave servers behind).
struct Reaper(Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// 20 MiB of pseudo-random bytes (xorshift; deterministic, incompressible).
fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn curl_through_tlsgate_on_af_packet_gets_its_page_and_20mb_each_way() {
    let _g = dpdk_lock();
    let topo = Topology::new(1);
    let dir = Scratch::new("e2e");
    let www = dir.path("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "<html>tlsgate end-to-end page</html>\n").unwrap();
    let down = payload(20 << 20, 7);
    let up = payload(20 << 20, 11);
    std::fs::write(www.join("down.bin"), &down).unwrap();
    let up_file = dir.path("up.bin");
    std::fs::write(&up_file, &up).unwrap();

    // With nothing bridging the middle, the client cannot reach the server.
    let o =
        run_with_limit(topo.exec(&topo.cli, "ping").args(["-c", "1", "-W", "1", &topo.srv_ip]), Duration::from_secs(5));
    assert!(!o.status.success(), "the namespaces must be joined only through tlsgate: {}", text(&o));

    let cfg = dir.path("e2e.toml");
    std::fs::File::create(&cfg).unwrap().write_all(topo.settings(2).as_bytes()).unwrap();
    let json = dir.path("counters.json");
    let gate = topo
        .exec(&topo.mid, tlsgate().to_str().unwrap())
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--counters-json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut gate = Reaper(Some(gate));
    let server = topo
        .exec(&topo.srv, "python3")
        .arg(repo().join("tests/e2e/http_server.py"))
        .args(["--bind", &topo.srv_ip, "--port", "8080", "--lifetime", "240", "--dir"])
        .arg(&www)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _server = Reaper(Some(server));
    let base = format!("http://{}:8080", topo.srv_ip);

    // The page, once tlsgate and the server are up (bounded retries).
    let start = Instant::now();
    let page = loop {
        let o = run_with_limit(
            topo.exec(&topo.cli, "curl").args(["-s", "--max-time", "2", &format!("{base}/index.html")]),
            Duration::from_secs(5),
        );
        if o.status.success() {
            break String::from_utf8_lossy(&o.stdout).to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no page through tlsgate within 30 s: {}", text(&o));
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(page, "<html>tlsgate end-to-end page</html>\n");

    // 20 MB server -> client.
    let got = dir.path("got.bin");
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl").args(["-sS", "--max-time", "120", "-o"]).arg(&got).arg(format!("{base}/down.bin")),
        Duration::from_secs(130),
    );
    assert!(o.status.success(), "download: {}", text(&o));
    let got = std::fs::read(&got).unwrap();
    assert_eq!(got.len(), down.len(), "download length");
    assert_eq!(sha256_hex(&got), sha256_hex(&down), "download intact");

    // 20 MB client -> server: the server answers with the SHA-256 of what arrived.
    let o = run_with_limit(
        topo.exec(&topo.cli, "curl")
            .args(["-sS", "--max-time", "120", "-T"])
            .arg(&up_file)
            .arg(format!("{base}/upload")),
        Duration::from_secs(130),
    );
    assert!(o.status.success(), "upload: {}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), sha256_hex(&up), "upload intact");

    // Stop tlsgate; its counters show both directions crossed it.
    let child = gate.0.take().unwrap();
    signal(&child, "TERM");
    let o = wait_with_limit(child, Duration::from_secs(30));
    assert!(o.status.success(), "{}", text(&o));
    let c: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let bytes = |i: usize, k: &str| c["ports"][i][k].as_u64().unwrap();
    assert!(bytes(0, "rx_bytes") > 20 << 20, "client side carried the upload: {c}");
    assert!(bytes(1, "rx_bytes") > 20 << 20, "server side carried the download: {c}");
    assert_eq!(c["steering"], "software dispatch", "af_packet has no RSS: {c}");
}
