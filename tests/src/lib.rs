//! Helpers for tlsgate's cross-crate integration tests: where the built
//! binaries and the shared captures are, running a child with a time limit,
//! reading pcaps, and network namespaces that clean up after themselves.
//!
//! Every DPDK test runs a binary as a child process: DPDK allows one EAL per
//! process, and a child that crashes cannot take the test runner with it.
#![forbid(unsafe_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The directory holding the workspace's built binaries (this test's own
/// profile: `target/release` under `cargo test --release`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> -> target/<profile>; a binary of this crate lives in target/<profile>.
    let dir = exe.parent().expect("a binary lives in a directory");
    if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>/deps has a parent").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary, with a clear message if it was not built.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built: run `cargo build --release --workspace` (scripts/test does) before the tests",
        p.display()
    );
    p
}

/// The tlsgate binary.
pub fn tlsgate() -> PathBuf {
    bin("tlsgate")
}

/// The shared test captures (`../shared/testdata/public` beside the checkout).
pub fn testdata() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for cand in [root.join("../shared/testdata/public"), root.join("shared/testdata/public")] {
        if cand.is_dir() {
            return cand;
        }
    }
    panic!("shared test captures not found beside the checkout (../shared/testdata/public)");
}

/// Zeek's ssl.log rows for the shared captures (`zeek/ssl-ground-truth.tsv`), column name to value.
pub fn zeek_ssl_log() -> Vec<std::collections::HashMap<String, String>> {
    let text = std::fs::read_to_string(testdata().join("zeek/ssl-ground-truth.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split('\t').map(str::to_string)).collect()).collect()
}

/// A version as tlsgate's events name it, from Zeek's name (`TLSv12`).
pub fn zeek_version(v: &str) -> &str {
    match v {
        "TLSv10" => "TLS 1.0",
        "TLSv11" => "TLS 1.1",
        "TLSv12" => "TLS 1.2",
        "TLSv13" => "TLS 1.3",
        other => other,
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repo root")
}

/// DPDK tests in one test binary take turns: each data plane busy-polls, and
/// the machine has two CPUs.
pub fn dpdk_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run_with_limit(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    wait_with_limit(child, limit)
}

/// Waits for `child`, killing it after `limit`; stdout/stderr must be piped.
pub fn wait_with_limit(mut child: Child, limit: Duration) -> Output {
    let mut out = child.stdout.take().expect("stdout piped");
    let mut err = child.stderr.take().expect("stderr piped");
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Output { status, stdout: t_out.join().unwrap_or_default(), stderr: t_err.join().unwrap_or_default() }
}

/// Sends SIGTERM (or another signal) to a child process.
pub fn signal(child: &Child, sig: &str) {
    let _ = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
}

/// Every frame of a pcap/pcapng file (gzip allowed), in order.
pub fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let mut raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if path.extension().is_some_and(|e| e == "gz") {
        let mut d = flate2::read::GzDecoder::new(&raw[..]);
        let mut v = Vec::new();
        d.read_to_end(&mut v).expect("gunzip");
        raw = v;
    }
    let mut frames = Vec::new();
    if raw.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&raw[..]).expect("pcapng");
        while let Some(b) = r.next_block() {
            match b.expect("pcapng block") {
                pcap_file::pcapng::Block::EnhancedPacket(p) => frames.push(p.data.to_vec()),
                pcap_file::pcapng::Block::SimplePacket(p) => frames.push(p.data.to_vec()),
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&raw[..]).expect("pcap");
        while let Some(p) = r.next_packet() {
            frames.push(p.expect("pcap record").data.to_vec());
        }
    }
    frames
}

/// Text of a process's output streams, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A scratch directory removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named after `tag`, this process and a sequence number
    /// (tests in one process run concurrently).
    pub fn new(tag: &str) -> Scratch {
        static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("tlsgate-test-{tag}-{}-{seq}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(p)
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What `tlsgate replay` gave.
pub struct Replayed {
    /// The process's output.
    pub output: Output,
    /// The event log, one JSON value per line.
    pub events: Vec<serde_json::Value>,
    /// The frames of the output capture.
    pub frames: Vec<Vec<u8>>,
}

impl Replayed {
    /// The event of the session whose client port is `port`.
    pub fn event_from_port(&self, port: u16) -> &serde_json::Value {
        self.events
            .iter()
            .find(|e| e["src_port"] == port)
            .unwrap_or_else(|| panic!("no event for client port {port}: {:?}", self.events))
    }

    /// The process's stdout.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).to_string()
    }
}

/// Runs `tlsgate replay` on `pcap` (deciding by `policy` if given), with its
/// output capture and event log in `dir`; fails the test with the process's
/// output if it does not succeed.
pub fn replay(pcap: &Path, policy: Option<&Path>, dir: &Scratch) -> Replayed {
    replay_with(pcap, policy, dir, &[])
}

/// [`replay`] with more `tlsgate replay` arguments (`--handshake decision`, ...).
pub fn replay_with(pcap: &Path, policy: Option<&Path>, dir: &Scratch, args: &[&str]) -> Replayed {
    let (out, events) = (dir.path("out.pcap"), dir.path("events.json"));
    let _ = std::fs::remove_file(&events);
    let mut cmd = Command::new(tlsgate());
    cmd.args(["replay", "--pcap"]).arg(pcap).arg("--out").arg(&out).arg("--events").arg(&events).args(args);
    if let Some(p) = policy {
        cmd.arg("--policy").arg(p);
    }
    let output = run_with_limit(&mut cmd, Duration::from_secs(120));
    assert!(output.status.success(), "{}: {}", pcap.display(), text(&output));
    let events = std::fs::read_to_string(&events)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each event line is JSON"))
        .collect();
    Replayed { output, events, frames: pcap_frames(&out) }
}

/// One stream of FoxIO's expected values (`ja4/expected/CAPTURE.snap`).
#[derive(Debug, Clone)]
pub struct FoxioStream {
    /// The capture it is in (under `ja4/pcap/`).
    pub capture: String,
    /// Client address and port.
    pub src: String,
    /// Client port.
    pub src_port: u64,
    /// `tls_server_name`, if any.
    pub sni: String,
    /// FoxIO's JA4.
    pub ja4: String,
}

/// FoxIO's expected values for every stream over `transport` (`tcp`, `udp`) that has a JA4.
pub fn foxio_streams(transport: &str) -> Vec<FoxioStream> {
    let dir = testdata().join("ja4/expected");
    let mut names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    names.sort();
    let mut out = Vec::new();
    for snap in names {
        let capture = snap.file_stem().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&snap).unwrap();
        let mut s: std::collections::HashMap<String, String> = Default::default();
        let mut flush = |s: &mut std::collections::HashMap<String, String>| {
            if s.get("transport").map(String::as_str) == Some(transport) && s.contains_key("ja4") {
                out.push(FoxioStream {
                    capture: capture.clone(),
                    src: s["src"].clone(),
                    src_port: s["src_port"].parse().unwrap(),
                    sni: s.get("tls_server_name").cloned().unwrap_or_default(),
                    ja4: s["ja4"].clone(),
                });
            }
            s.clear();
        };
        // The snapshots are YAML lists of flat maps: `- stream: N`, then `  key: value`.
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

pub mod capture;
pub mod evasion;
pub mod netns;

/// An ECHConfigList (draft-ietf-tls-esni-18 §4, version 0xfe0d) with one
/// configuration for `public_name`: X25519 (its public key the curve's base
/// point), HKDF-SHA256, AES-128-GCM. Its private key is known to no server,
/// which is the point: the tests need clients that offer ECH and servers
/// that cannot accept it, and DNS answers that carry it.
pub fn ech_config_list(public_name: &str) -> Vec<u8> {
    let mut contents = vec![7]; // config_id
    contents.extend_from_slice(&0x0020u16.to_be_bytes()); // KEM: DHKEM(X25519, HKDF-SHA256)
    let mut key = [0u8; 32];
    key[0] = 9;
    contents.extend_from_slice(&32u16.to_be_bytes());
    contents.extend_from_slice(&key);
    contents.extend_from_slice(&4u16.to_be_bytes()); // one cipher suite
    contents.extend_from_slice(&0x0001u16.to_be_bytes()); // HKDF-SHA256
    contents.extend_from_slice(&0x0001u16.to_be_bytes()); // AES-128-GCM
    contents.push(0); // maximum_name_length
    contents.push(public_name.len() as u8);
    contents.extend_from_slice(public_name.as_bytes());
    contents.extend_from_slice(&0u16.to_be_bytes()); // no extensions
    let mut config = 0xfe0du16.to_be_bytes().to_vec();
    config.extend_from_slice(&(contents.len() as u16).to_be_bytes());
    config.extend_from_slice(&contents);
    let mut list = (config.len() as u16).to_be_bytes().to_vec();
    list.extend_from_slice(&config);
    list
}
