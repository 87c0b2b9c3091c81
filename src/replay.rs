//! `tlsgate replay`: the real data plane on the net_pcap PMD. Port `in` reads
//! the capture, port `out` writes what the appliance forwards; the replay stops
//! by itself once every packet of the capture has been received and each one
//! forwarded or dropped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tlsgate_config::{ConfigError, Settings};
use tlsgate_dataplane::runtime::StartOptions;

use crate::control::{run_until, Failure, Output};

/// How long the replay waits with nothing moving before it decides that the
/// driver will deliver no more (e.g. frames the driver itself refused).
const STALL: Duration = Duration::from_secs(2);

/// `tlsgate replay --pcap IN [--out OUT]`.
pub fn replay(input: &Path, out: Option<&Path>, output: Output) -> Result<(), Failure> {
    let arg_err = |field: &str, msg: String| Failure::Config(ConfigError::at(None, None, None, Some(field), msg));
    let scratch = Scratch::new().map_err(|e| Failure::Runtime(format!("cannot make a scratch directory: {e}")))?;
    let shown = input;
    let gunzipped;
    let input = if input.extension().is_some_and(|e| e == "gz") {
        gunzipped = scratch.path("input.pcap");
        gunzip(input, &gunzipped).map_err(|e| arg_err("--pcap", format!("{}: {e}", input.display())))?;
        gunzipped.as_path()
    } else {
        input
    };
    let expected = count_packets(input).map_err(|e| arg_err("--pcap", format!("{}: {e}", shown.display())))?;
    let out_path = match out {
        Some(p) => p.to_path_buf(),
        None => scratch.path("forwarded.pcap"),
    };
    for (flag, p) in [("--pcap", input), ("--out", out_path.as_path())] {
        let s = p.to_string_lossy();
        if s.contains(',') || s.contains('=') {
            return Err(arg_err(flag, format!("{s:?}: a path for net_pcap may not contain ',' or '='")));
        }
    }
    let empty = scratch.path("empty.pcap");
    std::fs::write(&empty, EMPTY_PCAP).map_err(|e| Failure::Runtime(format!("{}: {e}", empty.display())))?;
    let settings = Settings::from_parts(
        vec![
            "--no-huge".into(),
            "--no-shconf".into(),
            "--no-telemetry".into(),
            "-m".into(),
            "256".into(),
            "--no-pci".into(),
            format!(
                "--vdev=net_pcap_in,rx_pcap={},tx_pcap={}",
                input.display(),
                scratch.path("toward-in.pcap").display()
            ),
            format!("--vdev=net_pcap_out,rx_pcap={},tx_pcap={}", empty.display(), out_path.display()),
        ],
        vec![("net_pcap_in".into(), "net_pcap_out".into())],
        vec![1],
    )
    .map_err(Failure::Config)?;

    eprintln!("tlsgate: replaying {} ({expected} packets) -> {}", shown.display(), out_path.display());
    let mut last_progress = (0u64, Instant::now());
    let result = run_until(&settings, StartOptions { rx_timestamp: false }, &output, |dp| {
        let mut rx = 0;
        let mut settled = 0;
        for w in dp.counters() {
            let t = w.total();
            rx += t.rx_packets;
            settled += t.tx_packets + t.dropped_total();
        }
        if rx >= expected && settled >= rx {
            return true;
        }
        if rx != last_progress.0 {
            last_progress = (rx, Instant::now());
            return false;
        }
        // Nothing new for a while: the driver has delivered all it will.
        last_progress.1.elapsed() > STALL && settled >= rx
    });
    result?;
    print_flows(&out_path);
    Ok(())
}

/// Prints the flows the appliance forwarded: what passed through, by flow.
fn print_flows(path: &Path) {
    let Ok(f) = File::open(path) else { return };
    let Ok(mut rd) = pcap_file::pcap::PcapReader::new(BufReader::new(f)) else { return };
    let mut flows: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    let mut other = (0u64, 0u64);
    while let Some(Ok(p)) = rd.next_packet() {
        let len = p.orig_len as u64;
        match flow_name(&p.data) {
            Some(k) => {
                let e = flows.entry(k).or_default();
                e.0 += 1;
                e.1 += len;
            }
            None => {
                other.0 += 1;
                other.1 += len;
            }
        }
    }
    println!("passed through: {} flow(s)", flows.len());
    println!("  {:<58} {:>8} {:>10}", "flow (client <-> server port)", "packets", "bytes");
    let mut rows: Vec<_> = flows.into_iter().collect();
    rows.sort_by(|a, b| b.1 .1.cmp(&a.1 .1));
    for (k, (n, b)) in rows.iter().take(20) {
        println!("  {k:<58} {n:>8} {b:>10}");
    }
    if rows.len() > 20 {
        println!("  ... and {} more", rows.len() - 20);
    }
    if other.0 > 0 {
        println!("  {:<58} {:>8} {:>10}", "(not TCP/UDP over IP)", other.0, other.1);
    }
}

/// `proto src:port <-> dst:port`, the same for both directions.
fn flow_name(frame: &[u8]) -> Option<String> {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let (src, dst): (std::net::IpAddr, std::net::IpAddr) = match p.net? {
        NetSlice::Ipv4(ip) => (ip.header().source_addr().into(), ip.header().destination_addr().into()),
        NetSlice::Ipv6(ip) => (ip.header().source_addr().into(), ip.header().destination_addr().into()),
    };
    let (proto, sp, dp) = match p.transport? {
        TransportSlice::Tcp(t) => ("tcp", t.source_port(), t.destination_port()),
        TransportSlice::Udp(u) => ("udp", u.source_port(), u.destination_port()),
        _ => return None,
    };
    let a = format!("{}:{sp}", fmt_ip(src));
    let b = format!("{}:{dp}", fmt_ip(dst));
    // Name the flow by its server side (the lower port) last, whichever way the packet went.
    Some(if sp < dp { format!("{proto} {b} <-> {a}") } else { format!("{proto} {a} <-> {b}") })
}

fn fmt_ip(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    }
}

/// Decompresses a gzip file.
fn gunzip(from: &Path, to: &Path) -> Result<(), String> {
    let f = File::open(from).map_err(|e| format!("cannot open: {e}"))?;
    let mut d = flate2::read::GzDecoder::new(BufReader::new(f));
    let mut out = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::io::copy(&mut d, &mut out).map_err(|e| format!("not a valid gzip file: {e}"))?;
    Ok(())
}

/// Counts the packets in a pcap or pcapng file.
pub fn count_packets(path: &Path) -> Result<u64, String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut r = BufReader::new(f);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|_| "not a pcap file (too short)".to_string())?;
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut n = 0u64;
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut rd = pcap_file::pcapng::PcapNgReader::new(BufReader::new(f)).map_err(|e| format!("bad pcapng: {e}"))?;
        while let Some(b) = rd.next_block() {
            match b.map_err(|e| format!("bad pcapng block: {e}"))? {
                pcap_file::pcapng::Block::EnhancedPacket(_) | pcap_file::pcapng::Block::SimplePacket(_) => n += 1,
                _ => {}
            }
        }
    } else {
        let mut rd =
            pcap_file::pcap::PcapReader::new(BufReader::new(f)).map_err(|e| format!("not a pcap file: {e}"))?;
        while let Some(p) = rd.next_packet() {
            p.map_err(|e| format!("bad pcap record after {n} packets: {e}"))?;
            n += 1;
        }
    }
    Ok(n)
}

/// A pcap global header with no packets (Ethernet, snaplen 262144).
const EMPTY_PCAP: [u8; 24] = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 1, 0, 0, 0];

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> std::io::Result<Scratch> {
        let base = std::env::temp_dir().join(format!("tlsgate-replay-{}", std::process::id()));
        std::fs::create_dir_all(&base)?;
        Ok(Scratch(base))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
