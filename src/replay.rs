//! `tlsgate replay`: the real data plane on the net_pcap PMD. Port `in` reads
//! the capture, port `out` writes what the appliance forwards; the replay stops
//! by itself once every packet of the capture has been received and each one
//! forwarded or dropped.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use std::sync::Arc;

use tlsgate_config::policy::Policy;
use tlsgate_config::{Checksums, ConfigError, HandshakeEvents, Midstream, Settings};
use tlsgate_dataplane::runtime::StartOptions;

use crate::control::{run_until, Failure, Output};

/// How long the replay waits with nothing moving before it decides that the
/// driver will deliver no more (e.g. frames the driver itself refused).
const STALL: Duration = Duration::from_secs(2);

/// How a replay reads the capture's handshakes (the settings a `tlsgate run` takes from its file).
pub struct How {
    /// `[events] handshake`.
    pub handshake: HandshakeEvents,
    /// `[flows] handshake_buffer`, if not the default.
    pub handshake_buffer: Option<u32>,
    /// `[flows.normalize] checksums = "verify"` (else `ignore`).
    pub verify_checksums: bool,
    /// `[dns] strip_ech`.
    pub strip_ech: bool,
    /// `--keylog`: sessions to decrypt with an NSS key log.
    pub keylog: Option<PathBuf>,
    /// `--decrypted`: where decrypted sessions are written.
    pub decrypted: Option<PathBuf>,
}

/// `tlsgate replay --pcap IN [--out OUT]`.
pub fn replay(
    input: &Path,
    out: Option<&Path>,
    policy: Option<&Path>,
    how: How,
    mut output: Output,
) -> Result<(), Failure> {
    let policy = match policy {
        Some(p) => Some(Arc::new(Policy::load(p).map_err(Failure::Config)?)),
        None => None,
    };
    let keylog = match &how.keylog {
        Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
            Failure::Config(ConfigError::at(None, None, None, Some("--keylog"), format!("{}: {e}", p.display())))
        })?),
        None => None,
    };
    let passive = policy.as_ref().is_some_and(|p| !p.passive_keys().is_empty());
    let reading = keylog.is_some() || passive || how.decrypted.is_some();
    let arg_err = |field: &str, msg: String| Failure::Config(ConfigError::at(None, None, None, Some(field), msg));
    if let Some(d) = &how.decrypted {
        let same = |a: &Path, b: &Path| match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(d, input) || out.is_some_and(|o| same(d, o)) {
            return Err(arg_err("--decrypted", format!("{}: the capture read or written already", d.display())));
        }
    }
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
    let reframed = scratch.path("ethernet.pcap");
    let input =
        match as_ethernet(input, &reframed).map_err(|e| arg_err("--pcap", format!("{}: {e}", shown.display())))? {
            Some(note) => {
                eprintln!("tlsgate: {}: {note}", shown.display());
                reframed.as_path()
            }
            None => input,
        };
    let times = packet_times(input).map_err(|e| arg_err("--pcap", format!("{}: {e}", shown.display())))?;
    let expected = times.len() as u64;
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
    // A capture often starts after some handshakes did: watch those flows too.
    let mut settings = settings;
    settings.flows.midstream = Midstream::Inspect;
    settings.events.handshake = how.handshake;
    settings.flows.normalize.checksums = if how.verify_checksums { Checksums::Verify } else { Checksums::Ignore };
    if let Some(bytes) = how.handshake_buffer {
        settings.flows.handshake_buffer = bytes;
        settings.validate(None).map_err(Failure::Config)?;
    }
    let with_policy = policy.is_some();
    if how.strip_ech && !with_policy {
        let msg = "--strip-ech needs --policy: DNS answers are read by the inspector";
        return Err(Failure::Config(ConfigError::at(None, None, None, Some("--strip-ech"), msg)));
    }
    // After validation: the replay's policy comes apart from its settings.
    settings.dns.strip_ech = how.strip_ech;

    // The reading pass matches sessions to their events: it needs them even when not asked for.
    if reading && output.events.is_none() {
        output.events = Some(scratch.path("events.json"));
    }
    let events_from = output.events.as_ref().and_then(|p| std::fs::metadata(p).ok()).map_or(0, |m| m.len());
    eprintln!("tlsgate: replaying {} ({expected} packets) -> {}", shown.display(), out_path.display());
    let mut last_progress = (0u64, Instant::now());
    let result = run_until(
        &settings,
        StartOptions { policy: policy.clone(), replay_times: Some(times.into()), slow_path: None },
        &output,
        |dp| {
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
        },
    );
    let summary = result?;
    let toward_in = scratch.path("toward-in.pcap");
    merge_into(&out_path, &toward_in, &scratch.path("merged.pcap"))
        .map_err(|e| Failure::Runtime(format!("merging the resets into {}: {e}", out_path.display())))?;
    if with_policy {
        summary.print();
    }
    print_flows(&out_path);
    if let (true, Some(events)) = (reading, &output.events) {
        let how = crate::decrypt::Reading { keylog, policy: policy.as_deref(), decrypted: how.decrypted.as_deref() };
        let lines = crate::decrypt::read(input, events, events_from, how).map_err(Failure::Runtime)?;
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}

/// Adds the frames tlsgate sent back toward the capture's side (the resets of
/// block-with-reset toward whoever sent the packet that was blocked) to OUT,
/// merged by the time they were written, so that OUT holds everything the
/// appliance sent.
fn merge_into(out: &Path, extra: &Path, tmp: &Path) -> Result<(), String> {
    use pcap_file::pcap::{PcapReader, PcapWriter};
    let open = |p: &Path| -> Result<PcapReader<BufReader<File>>, String> {
        PcapReader::new(BufReader::new(File::open(p).map_err(|e| e.to_string())?)).map_err(|e| e.to_string())
    };
    let mut b = match open(extra) {
        Ok(r) => r,
        Err(_) => return Ok(()),
    };
    let mut nb = b.next_packet().transpose().map_err(|e| e.to_string())?.map(|p| p.into_owned());
    if nb.is_none() {
        return Ok(());
    }
    let mut a = open(out)?;
    let header = a.header();
    let w = std::io::BufWriter::new(File::create(tmp).map_err(|e| e.to_string())?);
    let mut w = PcapWriter::with_header(w, header).map_err(|e| e.to_string())?;
    let mut na = a.next_packet().transpose().map_err(|e| e.to_string())?.map(|p| p.into_owned());
    loop {
        let take_a = match (&na, &nb) {
            (Some(x), Some(y)) => x.timestamp <= y.timestamp,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_a {
            if let Some(p) = na.take() {
                w.write_packet(&p).map_err(|e| e.to_string())?;
            }
            na = a.next_packet().transpose().map_err(|e| e.to_string())?.map(|p| p.into_owned());
        } else {
            if let Some(p) = nb.take() {
                w.write_packet(&p).map_err(|e| e.to_string())?;
            }
            nb = b.next_packet().transpose().map_err(|e| e.to_string())?.map(|p| p.into_owned());
        }
    }
    drop(w);
    std::fs::rename(tmp, out).or_else(|_| std::fs::copy(tmp, out).map(|_| ())).map_err(|e| e.to_string())
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
    rows.sort_by_key(|r| std::cmp::Reverse(r.1 .1));
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

/// A capture whose frames are not Ethernet (BSD loopback, raw IP, Linux
/// cooked capture) is written to `to` as Ethernet frames, each IP packet
/// behind a made-up Ethernet header, for the data plane sees only Ethernet
/// (frames that carry no IP are left out). Returns what was done, or `None`
/// when the capture is Ethernet already (and `to` is not written).
fn as_ethernet(from: &Path, to: &Path) -> Result<Option<String>, String> {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    use pcap_file::pcapng::Block;
    use pcap_file::{DataLink, TsResolution};
    use std::borrow::Cow;

    let raw = std::fs::read(from).map_err(|e| format!("cannot open: {e}"))?;
    // (link type, timestamp, original length, bytes) of every packet, in order.
    let mut packets: Vec<(DataLink, Duration, u32, Vec<u8>)> = Vec::new();
    if raw.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&raw[..]).map_err(|e| format!("bad pcapng: {e}"))?;
        let mut links = Vec::new();
        while let Some(b) = r.next_block() {
            match b.map_err(|e| format!("bad pcapng block: {e}"))? {
                Block::InterfaceDescription(i) => links.push(i.linktype),
                Block::EnhancedPacket(p) => {
                    let link = links.get(p.interface_id as usize).copied().unwrap_or(DataLink::ETHERNET);
                    packets.push((link, p.timestamp, p.original_len, p.data.to_vec()));
                }
                Block::SimplePacket(p) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    let at = packets.last().map_or(Duration::ZERO, |p| p.1);
                    packets.push((link, at, p.original_len, p.data.to_vec()));
                }
                _ => {}
            }
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&raw[..]).map_err(|e| format!("not a pcap file: {e}"))?;
        let link = r.header().datalink;
        while let Some(p) = r.next_packet() {
            let p = p.map_err(|e| format!("bad pcap record: {e}"))?;
            packets.push((link, p.timestamp, p.orig_len, p.data.to_vec()));
        }
    }
    if packets.iter().all(|p| p.0 == DataLink::ETHERNET) {
        return Ok(None);
    }
    let header =
        PcapHeader { datalink: DataLink::ETHERNET, ts_resolution: TsResolution::NanoSecond, ..Default::default() };
    let file = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let mut w = PcapWriter::with_header(std::io::BufWriter::new(file), header).map_err(|e| e.to_string())?;
    let (mut kept, mut left_out) = (0usize, 0usize);
    for (link, timestamp, orig_len, data) in packets {
        if link == DataLink::ETHERNET {
            w.write_packet(&PcapPacket { timestamp, orig_len, data: Cow::Owned(data) }).map_err(|e| e.to_string())?;
            kept += 1;
            continue;
        }
        let Some((ethertype, ip)) = ip_packet(link, &data) else {
            left_out += 1;
            continue;
        };
        let mut frame = Vec::with_capacity(14 + ip.len());
        frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(ip);
        let orig_len = orig_len.saturating_sub(data.len().saturating_sub(ip.len()) as u32) + 14;
        let packet = PcapPacket { timestamp, orig_len, data: Cow::Owned(frame) };
        w.write_packet(&packet).map_err(|e| e.to_string())?;
        kept += 1;
    }
    Ok(Some(format!("not all Ethernet: {kept} frames replayed as Ethernet ({left_out} without IP left out)")))
}

/// The IP packet a frame of link type `link` carries, with its ethertype.
fn ip_packet(link: pcap_file::DataLink, data: &[u8]) -> Option<(u16, &[u8])> {
    use pcap_file::DataLink;
    const IPV4: u16 = 0x0800;
    const IPV6: u16 = 0x86dd;
    let by_version = |ip: &[u8]| match ip.first()? >> 4 {
        4 => Some(IPV4),
        6 => Some(IPV6),
        _ => None,
    };
    let (ethertype, ip) = match link {
        // BSD loopback: a 4-byte address family (host or network order); the IP version tells.
        DataLink::NULL | DataLink::LOOP => {
            let ip = data.get(4..)?;
            (by_version(ip)?, ip)
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => (by_version(data)?, data),
        // Linux cooked capture: the protocol at bytes 14-15 (v1), 0-1 (v2).
        DataLink::LINUX_SLL => (u16::from_be_bytes([*data.get(14)?, *data.get(15)?]), data.get(16..)?),
        DataLink::LINUX_SLL2 => (u16::from_be_bytes([*data.first()?, *data.get(1)?]), data.get(20..)?),
        _ => return None,
    };
    matches!(ethertype, IPV4 | IPV6).then_some((ethertype, ip))
}

/// Decompresses a gzip file.
fn gunzip(from: &Path, to: &Path) -> Result<(), String> {
    let f = File::open(from).map_err(|e| format!("cannot open: {e}"))?;
    let mut d = flate2::read::GzDecoder::new(BufReader::new(f));
    let mut out = File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    std::io::copy(&mut d, &mut out).map_err(|e| format!("not a valid gzip file: {e}"))?;
    Ok(())
}

/// The timestamps (ns since the Unix epoch) of the packets in a pcap or
/// pcapng file, in file order.
pub fn packet_times(path: &Path) -> Result<Vec<u64>, String> {
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut r = BufReader::new(f);
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|_| "not a pcap file (too short)".to_string())?;
    let f = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut times = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut rd = pcap_file::pcapng::PcapNgReader::new(BufReader::new(f)).map_err(|e| format!("bad pcapng: {e}"))?;
        // Each interface's timestamp resolution (if_tsresol; microseconds when absent):
        // pcap-file hands over the raw count as if it were nanoseconds.
        let mut resolutions: Vec<u8> = Vec::new();
        while let Some(b) = rd.next_block() {
            match b.map_err(|e| format!("bad pcapng block: {e}"))? {
                pcap_file::pcapng::Block::InterfaceDescription(idb) => {
                    let r = idb.options.iter().find_map(|o| match o {
                        pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption::IfTsResol(r) => {
                            Some(*r)
                        }
                        _ => None,
                    });
                    resolutions.push(r.unwrap_or(6));
                }
                pcap_file::pcapng::Block::EnhancedPacket(p) => {
                    let r = resolutions.get(p.interface_id as usize).copied().unwrap_or(6);
                    times.push(units_to_ns(p.timestamp.as_nanos() as u64, r));
                }
                // A simple packet block has no time: keep the previous one.
                pcap_file::pcapng::Block::SimplePacket(_) => times.push(times.last().copied().unwrap_or(0)),
                _ => {}
            }
        }
    } else {
        let mut rd =
            pcap_file::pcap::PcapReader::new(BufReader::new(f)).map_err(|e| format!("not a pcap file: {e}"))?;
        while let Some(p) = rd.next_packet() {
            let p = p.map_err(|e| format!("bad pcap record after {} packets: {e}", times.len()))?;
            times.push(p.timestamp.as_nanos() as u64);
        }
    }
    Ok(times)
}

/// A pcapng timestamp of `raw` units of `if_tsresol` = `r` (10^-r s, or
/// 2^-(r & 0x7f) s when the top bit is set) in nanoseconds.
fn units_to_ns(raw: u64, r: u8) -> u64 {
    if r & 0x80 != 0 {
        ((u128::from(raw) * 1_000_000_000) >> u32::from((r & 0x7f).min(63))) as u64
    } else if r <= 9 {
        raw.saturating_mul(10u64.pow(9 - u32::from(r)))
    } else {
        raw / 10u64.pow(u32::from(r.min(19)) - 9)
    }
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
