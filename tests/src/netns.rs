//! Network namespaces for end-to-end tests: a client and a server namespace,
//! each joined by a veth pair to a middle namespace where tlsgate bridges the
//! two inner ends on the af_packet PMD:
//!
//! ```text
//!  [cli: c0 10.77.x.1] -- c1 [mid: tlsgate af_packet c1 <-> s1] s1 -- [srv: s0 10.77.x.2]
//! ```
//!
//! Everything is named after the test process, and removed on drop, also when
//! the test fails (panics unwind through the guard).

use std::process::{Child, Command, Output, Stdio};

use sha2::{Digest, Sha256};

/// The three namespaces and their links.
pub struct Topology {
    /// Client namespace.
    pub cli: String,
    /// Middle namespace (tlsgate runs here).
    pub mid: String,
    /// Server namespace.
    pub srv: String,
    /// Interface in `mid` facing the client.
    pub mid_cli_if: String,
    /// Interface in `mid` facing the server.
    pub mid_srv_if: String,
    /// Client address.
    pub cli_ip: String,
    /// Server address.
    pub srv_ip: String,
}

fn sh(args: &[&str]) -> Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{}: {e}", args[0]))
}

fn must(args: &[&str]) {
    let o = sh(args);
    assert!(o.status.success(), "{:?} failed: {}", args, String::from_utf8_lossy(&o.stderr));
}

impl Topology {
    /// Builds the namespaces. `tag` keeps concurrent tests apart.
    pub fn new(tag: u8) -> Topology {
        let id = std::process::id() % 10000;
        let n = |role: &str| format!("tg{role}{tag}x{id}");
        let t = Topology {
            cli: n("c"),
            mid: n("m"),
            srv: n("s"),
            mid_cli_if: format!("tgc1{tag}x{id}"),
            mid_srv_if: format!("tgs1{tag}x{id}"),
            cli_ip: format!("10.77.{tag}.1"),
            srv_ip: format!("10.77.{tag}.2"),
        };
        t.build();
        t
    }

    fn build(&self) {
        for ns in [&self.cli, &self.mid, &self.srv] {
            let _ = sh(&["ip", "netns", "del", ns]);
            must(&["ip", "netns", "add", ns]);
            must(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        for (outer_ns, outer_if, inner_if, ip) in
            [(&self.cli, "c0", &self.mid_cli_if, &self.cli_ip), (&self.srv, "s0", &self.mid_srv_if, &self.srv_ip)]
        {
            let tmp = format!("{inner_if}t");
            must(&["ip", "link", "add", &tmp, "type", "veth", "peer", "name", inner_if, "netns", &self.mid]);
            must(&["ip", "link", "set", &tmp, "netns", outer_ns]);
            must(&["ip", "-n", outer_ns, "link", "set", &tmp, "name", outer_if]);
            must(&["ip", "-n", outer_ns, "addr", "add", &format!("{ip}/24"), "dev", outer_if]);
            must(&["ip", "-n", outer_ns, "link", "set", outer_if, "up"]);
            must(&["ip", "-n", &self.mid, "link", "set", inner_if, "up"]);
            // The appliance must see what a wire carries: full checksums and
            // MTU-sized frames, not offloaded partial sums or 64 KB segments.
            for (ns, dev) in [(outer_ns.as_str(), outer_if), (self.mid.as_str(), inner_if.as_str())] {
                let _ = sh(&[
                    "ip", "netns", "exec", ns, "ethtool", "-K", dev, "tx", "off", "tso", "off", "gso", "off", "gro",
                    "off",
                ]);
            }
            let _ = sh(&[
                "ip",
                "netns",
                "exec",
                &self.mid,
                "sysctl",
                "-qw",
                &format!("net.ipv6.conf.{inner_if}.disable_ipv6=1"),
            ]);
        }
    }

    /// A command to run inside namespace `ns`.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// tlsgate settings bridging the middle namespace's two interfaces.
    pub fn settings(&self, workers: usize) -> String {
        self.settings_with_slow_path(workers, 0)
    }

    /// As [`Topology::settings`], with `slow` slow-path lcores after the
    /// workers (each has its own queue pair: af_packet gets that many more).
    pub fn settings_with_slow_path(&self, workers: usize, slow: usize) -> String {
        let lcores: Vec<String> = (1..=workers).map(|l| l.to_string()).collect();
        let slow_lcores: Vec<String> = (workers + 1..=workers + slow).map(|l| l.to_string()).collect();
        format!(
            r#"[eal]
args = ["--no-huge", "--no-shconf", "--no-pci", "--no-telemetry", "-m", "512", "--log-level=warning",
        "--vdev=net_af_packet0,iface={c},qpairs={w}", "--vdev=net_af_packet1,iface={s},qpairs={w}"]

[[pair]]
a = "net_af_packet0"
b = "net_af_packet1"

[workers]
lcores = [{lc}]

[slowpath]
lcores = [{sl}]
"#,
            c = self.mid_cli_if,
            s = self.mid_srv_if,
            w = workers + slow,
            lc = lcores.join(", "),
            sl = slow_lcores.join(", ")
        )
    }
}

/// Kills a child on drop (a failed assertion must not leave servers behind).
pub struct Reaper(pub Option<Child>);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `tlsgate run --config CFG EXTRA...` in the middle namespace, killed on drop.
pub fn start_tlsgate(topo: &Topology, cfg: &std::path::Path, extra: &[&str]) -> Reaper {
    let gate = topo
        .exec(&topo.mid, crate::tlsgate().to_str().unwrap())
        .args(["run", "--config"])
        .arg(cfg)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    Reaper(Some(gate))
}

/// `tests/e2e/http_server.py` serving `www` over HTTPS (`cert`, `key`) on the
/// server namespace's port 443 for `seconds`, with `extra` arguments
/// (`--alt-svc ...`); killed on drop.
pub fn start_https_server(
    topo: &Topology,
    www: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
    seconds: u32,
    extra: &[&str],
) -> Reaper {
    let server = topo
        .exec(&topo.srv, "python3")
        .arg(crate::repo().join("tests/e2e/http_server.py"))
        .args(["--bind", &topo.srv_ip, "--port", "443", "--lifetime", &seconds.to_string(), "--dir"])
        .arg(www)
        .arg("--cert")
        .arg(cert)
        .arg("--key")
        .arg(key)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http_server.py");
    Reaper(Some(server))
}

/// Stops the tlsgate of `gate` with SIGTERM (it must exit cleanly) and
/// reads the event log it wrote: the text, and each line as JSON.
pub fn stop_and_read_events(gate: &mut Reaper, events: &std::path::Path) -> (String, Vec<serde_json::Value>) {
    let child = gate.0.take().expect("tlsgate still running");
    crate::signal(&child, "TERM");
    let o = crate::wait_with_limit(child, std::time::Duration::from_secs(30));
    assert!(o.status.success(), "{}", crate::text(&o));
    let log = std::fs::read_to_string(events).unwrap_or_default();
    let evs = log.lines().map(|l| serde_json::from_str(l).expect("an event is a JSON line")).collect();
    (log, evs)
}

/// 20 MiB of pseudo-random bytes (xorshift; deterministic, incompressible).
pub fn payload(len: usize, seed: u64) -> Vec<u8> {
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

pub fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}

/// A link for a mirror port, in the middle namespace: tlsgate sends on one
/// end (`tlsgate_if`, for an af_packet vdev), tcpdump writes what arrives on
/// the other into a pcap (TCP only); IPv6 is off there, so that nothing else speaks.
pub struct MirrorLink {
    /// The end tlsgate sends on.
    pub tlsgate_if: String,
    pcap: std::path::PathBuf,
    dump: Option<Child>,
}

impl MirrorLink {
    /// Makes the link (`tag`: two letters naming it) and starts tcpdump writing `pcap`.
    pub fn new(topo: &Topology, tag: &str, pcap: &std::path::Path) -> MirrorLink {
        let id = std::process::id() % 10000;
        let (a, b) = (format!("tg{tag}A{id}"), format!("tg{tag}B{id}"));
        must(&["ip", "-n", &topo.mid, "link", "add", &a, "type", "veth", "peer", "name", &b]);
        must(&["ip", "netns", "exec", &topo.mid, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        must(&["ip", "-n", &topo.mid, "link", "set", &a, "up"]);
        must(&["ip", "-n", &topo.mid, "link", "set", &b, "up"]);
        let dump = topo
            .exec(&topo.mid, "tcpdump")
            .args(["-i", &b, "-U", "--immediate-mode", "-B", "32768", "-Z", "root", "tcp", "-w"])
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tcpdump (scripts/setup installs it)");
        // tcpdump listens within a moment; what tlsgate sends comes later still.
        std::thread::sleep(std::time::Duration::from_millis(300));
        MirrorLink { tlsgate_if: a, pcap: pcap.to_path_buf(), dump: Some(dump) }
    }

    /// Stops tcpdump (it writes out what it holds) and returns the frames that arrived.
    pub fn frames(mut self) -> Vec<Vec<u8>> {
        std::thread::sleep(std::time::Duration::from_millis(300));
        if let Some(mut d) = self.dump.take() {
            crate::signal(&d, "INT");
            let _ = d.wait();
        }
        crate::pcap_frames(&self.pcap)
    }
}

impl Drop for MirrorLink {
    fn drop(&mut self) {
        if let Some(d) = &mut self.dump {
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.mid, &self.srv] {
            // Deleting a namespace deletes the veth ends inside it (and so their peers).
            let _ = sh(&["ip", "netns", "del", ns]);
        }
    }
}
