//! The capture generator. `tlsgate-gen handshakes` writes a pcap of many real
//! TLS sessions (rustls on both ends) over many TCP flows: a handful of
//! servers and SNIs, mixed TLS 1.2 and 1.3, little application data, sessions
//! overlapping in time. It is the input of the handshake-inspection benchmark.
//!
//! Up to 20,000 sessions (or `--distinct`) are run for real; any more reuse
//! their TLS bytes on other client addresses, ports and times (every frame is built
//! afresh, with its own checksums).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Instant;

use clap::{Parser, Subcommand};
use tlsgate_perf::handshake::{
    record_session, session_frames, tls_session, write_pcap, Flight, Frame, Leaf, Pki, SessionSpec, TlsVersionChoice,
    DEFAULT_START_UNIX_S,
};
use tlsgate_perf::traffic::IMIX;

#[derive(Parser)]
#[command(name = "tlsgate-gen", about = "tlsgate capture generator")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Many real TLS handshakes over many flows, as one pcap.
    Handshakes {
        /// The pcap file to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of TLS sessions (TCP connections).
        #[arg(long, default_value_t = 1000)]
        sessions: usize,
        /// Seed for the choice of servers, versions, addresses and timing.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Distinct sessions to run with rustls; the others replay their bytes
        /// on other flows. Default: min(sessions, 20000).
        #[arg(long)]
        distinct: Option<usize>,
    },
    /// A few long sessions (bulk data after the handshake), as one pcap: the
    /// packets of decided flows, for measuring what a decided flow costs.
    Bulk {
        /// The pcap file to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of TLS sessions.
        #[arg(long, default_value_t = 8)]
        sessions: usize,
        /// Bytes each session's server sends after the handshake.
        #[arg(long, default_value_t = 4 << 20)]
        bytes: usize,
    },
    /// Segments of many established TCP connections (no handshakes, no
    /// SYN): once each flow is known, the packets of decided flows at scale,
    /// for measuring the flow table beyond the caches.
    Flows {
        /// The pcap file to write.
        #[arg(long)]
        out: PathBuf,
        /// Distinct connections (at most 65,536).
        #[arg(long, default_value_t = 65_536)]
        flows: usize,
        /// Frames in all, spread over the connections in turn.
        #[arg(long, default_value_t = 1 << 20)]
        frames: usize,
    },
    /// Many real QUIC sessions (quinn's client and server), one flow each, as
    /// one pcap: the input of the QUIC classification benchmark.
    Quic {
        /// The pcap file to write.
        #[arg(long)]
        out: PathBuf,
        /// Number of QUIC sessions (each its own client port).
        #[arg(long, default_value_t = 500)]
        sessions: usize,
        /// Every Nth session is answered with a Retry first (0: none).
        #[arg(long, default_value_t = 4)]
        retry_every: usize,
    },
    /// The demo: a short capture with one session for each kind of decision
    /// in demo/policy.toml, and the PKI files that policy names.
    Demo {
        /// Folder to write demo.pcap, root.pem, resign-ca.{pem,key}, intranet.{pem,key} into.
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Demo { dir } => {
            if let Err(e) = demo(&dir) {
                eprintln!("tlsgate-gen: {e}");
                std::process::exit(1);
            }
        }
        Cmd::Quic { out, sessions, retry_every } => match quic(sessions, retry_every) {
            Ok(frames) => {
                if let Err(e) = write_pcap(&out, &frames) {
                    eprintln!("tlsgate-gen: writing {}: {e}", out.display());
                    std::process::exit(1);
                }
                println!("wrote {} frames of {sessions} QUIC sessions to {}", frames.len(), out.display());
            }
            Err(e) => {
                eprintln!("tlsgate-gen: {e}");
                std::process::exit(1);
            }
        },
        Cmd::Flows { out, flows, frames } => {
            let start = 1_767_225_600_000_000_000u64;
            let frames: Vec<Frame> = tlsgate_perf::traffic::tcp_frames(frames, flows.clamp(1, 65_536), &IMIX)
                .into_iter()
                .enumerate()
                .map(|(i, data)| Frame { unix_ns: start + i as u64 * 1_000, data })
                .collect();
            if let Err(e) = write_pcap(&out, &frames) {
                eprintln!("tlsgate-gen: writing {}: {e}", out.display());
                std::process::exit(1);
            }
            println!("wrote {} frames of {flows} connections to {}", frames.len(), out.display());
        }
        Cmd::Bulk { out, sessions, bytes } => {
            let pki = Pki::new("Bulk Root");
            let leaf = pki.issue(&["bulk.test"], "Bulk", 1_700_000_000, 1_900_000_000);
            let mut frames = Vec::new();
            for i in 0..sessions {
                let client = (IpAddr::from([10, 9, 0, 1 + i as u8]), 40_000 + i as u16);
                let server = (IpAddr::from([10, 9, 1, 1]), 443);
                let mut spec = SessionSpec::new(
                    client,
                    server,
                    Some("bulk.test"),
                    vec![leaf.cert_der.clone()],
                    leaf.key_der.clone(),
                );
                spec.app_data = (200, bytes);
                spec.start_unix_ns += i as u64 * 1_000_000;
                match tls_session(&spec) {
                    Ok(f) => frames.extend(f),
                    Err(e) => {
                        eprintln!("tlsgate-gen: {e}");
                        std::process::exit(1);
                    }
                }
            }
            if let Err(e) = write_pcap(&out, &frames) {
                eprintln!("tlsgate-gen: writing {}: {e}", out.display());
                std::process::exit(1);
            }
            println!("wrote {} frames of {sessions} sessions to {}", frames.len(), out.display());
        }
        Cmd::Handshakes { out, sessions, seed, distinct } => {
            let started = Instant::now();
            let distinct = distinct.unwrap_or(MAX_DEFAULT_DISTINCT).clamp(1, sessions.max(1));
            match handshakes(sessions, distinct, seed) {
                Ok(frames) => {
                    if let Err(e) = write_pcap(&out, &frames) {
                        eprintln!("tlsgate-gen: writing {}: {e}", out.display());
                        std::process::exit(1);
                    }
                    println!(
                        "wrote {} frames of {} sessions ({} distinct handshakes) to {} in {:.2} s",
                        frames.len(),
                        sessions,
                        distinct.min(sessions),
                        out.display(),
                        started.elapsed().as_secs_f64()
                    );
                }
                Err(e) => {
                    eprintln!("tlsgate-gen: {e}");
                    std::process::exit(1);
                }
            }
        }
    }
}

/// One server the clients talk to: its address, the name clients ask for
/// (`None`: they connect by IP, without SNI) and the certificate it presents.
struct Server {
    addr: IpAddr,
    sni: Option<&'static str>,
    chain: Vec<Vec<u8>>,
    key_der: Vec<u8>,
}

/// A recorded session ready to be replayed: its spec and its TLS bytes.
struct Template {
    spec: SessionSpec,
    flights: Vec<Flight>,
}

/// Sessions run for real unless `--distinct` says otherwise (some 4 s in a
/// release build); beyond that, sessions replay recorded ones.
const MAX_DEFAULT_DISTINCT: usize = 20_000;

/// Mean time between session starts; with ~15-25 frames 50 µs apart per
/// session, some 30-50 sessions are open at once.
const SESSION_GAP_NS: u64 = 25_000;

fn handshakes(sessions: usize, distinct: usize, seed: u64) -> Result<Vec<Frame>, String> {
    let servers = servers();
    let mut rng = Rng(seed);
    let mut templates = Vec::with_capacity(distinct.min(sessions));
    for _ in 0..distinct.min(sessions) {
        let server = &servers[rng.below(servers.len())];
        let client = (client_addr(server.addr, 0), client_port(0, &mut rng));
        let mut spec =
            SessionSpec::new(client, (server.addr, 443), server.sni, server.chain.clone(), server.key_der.clone());
        spec.version = if rng.below(100) < 60 { TlsVersionChoice::Tls13 } else { TlsVersionChoice::Tls12 };
        spec.alpn = match rng.below(4) {
            0 => vec![],
            1 => vec!["http/1.1".to_owned()],
            _ => vec!["h2".to_owned(), "http/1.1".to_owned()],
        };
        spec.app_data = (40 + rng.below(300), 100 + rng.below(1200));
        spec.request_client_cert = rng.below(100) < 3;
        let flights = record_session(&spec).map_err(|e| format!("session to {:?}: {e}", server.sni))?;
        templates.push(Template { spec, flights });
    }

    let mut frames = Vec::new();
    let mut start = DEFAULT_START_UNIX_S * 1_000_000_000;
    for i in 0..sessions {
        let template = &templates[i % templates.len()];
        let mut spec = template.spec.clone();
        spec.client = (client_addr(spec.server.0, i), client_port(i, &mut rng));
        spec.mss = [1460, 1460, 1460, 1440, 1220, 536][rng.below(6)];
        spec.start_unix_ns = start;
        start += SESSION_GAP_NS / 2 + rng.below(SESSION_GAP_NS as usize) as u64;
        frames.extend(session_frames(&spec, &template.flights)?);
    }
    frames.sort_by_key(|f| f.unix_ns);
    Ok(frames)
}

/// The servers: five named ones (one of them on IPv6, one presenting a
/// self-signed certificate) and one reached by IP only.
fn servers() -> Vec<Server> {
    let now = DEFAULT_START_UNIX_S as i64;
    let year = 365 * 86_400;
    let pki = Pki::new("tlsgate-gen Root CA");
    let named = [
        ("www.example.com", IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1))),
        ("api.example.net", IpAddr::V4(Ipv4Addr::new(10, 2, 0, 2))),
        ("mail.example.org", IpAddr::V4(Ipv4Addr::new(10, 2, 0, 3))),
        ("cdn.example.com", IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 4))),
    ];
    let mut out: Vec<Server> = named
        .iter()
        .map(|&(name, addr)| {
            let leaf = pki.issue(&[name], "Example Services", now - year, now + year);
            Server { addr, sni: Some(name), chain: vec![leaf.cert_der, pki.ca_cert_der()], key_der: leaf.key_der }
        })
        .collect();
    let self_signed = Leaf::self_signed(&["login.bank.example"], now - year, now + year);
    out.push(Server {
        addr: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 5)),
        sni: Some("login.bank.example"),
        chain: vec![self_signed.cert_der],
        key_der: self_signed.key_der,
    });
    let by_ip = pki.issue(&["10.2.0.6"], "Example Services", now - year, now + year);
    out.push(Server {
        addr: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 6)),
        sni: None,
        chain: vec![by_ip.cert_der, pki.ca_cert_der()],
        key_der: by_ip.key_der,
    });
    out
}

/// The address of client number `i`, of the server's family: in 10.64.0.0/10
/// or 2001:db8:1::/64, 64 clients per address.
fn client_addr(server: IpAddr, i: usize) -> IpAddr {
    let host = (i / 64) as u32 % 0x003f_fffe + 1;
    match server {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(0x0a40_0000 + host)),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (host >> 16) as u16, host as u16)),
    }
}

/// The port of client number `i`: the 64 clients sharing an address get
/// ports in distinct blocks of 1000.
fn client_port(i: usize, rng: &mut Rng) -> u16 {
    (1024 + (i % 64) * 1000 + rng.below(1000)) as u16
}

/// SplitMix64: small, seeded, good enough to pick servers and ports.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform-enough in `0..n` (`n` > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Writes the demo capture and the PKI files its policy names.
fn demo(dir: &std::path::Path) -> Result<(), String> {
    use tlsgate_perf::handshake::{tcp_conversation, tls_session};
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let w = |name: &str, text: &str| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    let now = DEFAULT_START_UNIX_S as i64;
    let day = 86_400;
    let root = Pki::new("Demo Root CA");
    let resign = Pki::new("Corp Inspection CA");
    let leaf = |names: &[&str], org: &str| root.issue(names, org, now - 200 * day, now + 200 * day);
    let casino = leaf(&["www.casino.test"], "Casino");
    let c2 = leaf(&["c2.malware.test"], "Nobody");
    let old = root.issue(&["old.example.test"], "Example", now - 800 * day, now - 30 * day);
    let bank = leaf(&["online.bank.test"], "Bank");
    let intranet = leaf(&["intranet.corp.test"], "Corp");
    let mail = leaf(&["mail.example.test"], "Example");
    let news = leaf(&["news.example.test"], "Example");
    w("root.pem", &root.ca_cert_pem())?;
    w("resign-ca.pem", &resign.ca_cert_pem())?;
    w("resign-ca.key", &resign.ca_key_pem())?;
    w("intranet.pem", &intranet.cert_pem)?;
    w("intranet.key", &intranet.key_pem)?;

    let client = |i: u8| (IpAddr::V4(Ipv4Addr::new(192, 168, 10, 20 + i)), 50_000 + i as u16);
    let server = |i: u8| (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10 + i)), 443);
    let mut frames: Vec<Frame> = Vec::new();
    let mut t = DEFAULT_START_UNIX_S * 1_000_000_000;
    let sessions: Vec<(u8, &str, &Leaf, TlsVersionChoice, bool)> = vec![
        (1, "news.example.test", &news, TlsVersionChoice::Tls13, false),
        (2, "www.casino.test", &casino, TlsVersionChoice::Tls13, false),
        (3, "c2.malware.test", &c2, TlsVersionChoice::Tls12, false),
        (4, "old.example.test", &old, TlsVersionChoice::Tls12, false),
        (5, "online.bank.test", &bank, TlsVersionChoice::Tls13, false),
        (6, "intranet.corp.test", &intranet, TlsVersionChoice::Tls12, false),
        (7, "mail.example.test", &mail, TlsVersionChoice::Tls13, false),
        (8, "mail.example.test", &mail, TlsVersionChoice::Tls12, true),
        (9, "news.example.test", &news, TlsVersionChoice::Tls12, false),
    ];
    for (i, sni, leaf, version, client_auth) in sessions {
        let mut spec =
            SessionSpec::new(client(i), server(i), Some(sni), vec![leaf.cert_der.clone()], leaf.key_der.clone());
        spec.version = version;
        spec.request_client_cert = client_auth;
        spec.start_unix_ns = t;
        spec.app_data = (300, 3000);
        t += 150_000_000;
        frames.extend(tls_session(&spec)?);
    }
    frames.extend(tcp_conversation(
        client(10),
        (IpAddr::V4(Ipv4Addr::new(203, 0, 113, 80)), 80),
        b"GET / HTTP/1.1\r\nHost: plain.example.test\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        1460,
        t,
    ));
    frames.sort_by_key(|f| f.unix_ns);
    write_pcap(&dir.join("demo.pcap"), &frames).map_err(|e| e.to_string())?;
    println!("wrote {} frames to {}", frames.len(), dir.join("demo.pcap").display());
    Ok(())
}

/// `sessions` quinn sessions to a few servers and names, one client port each,
/// started 1 ms apart (each runs in memory, its packets 1 ms apart).
fn quic(sessions: usize, retry_every: usize) -> Result<Vec<Frame>, String> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let pki = Pki::new("QUIC Root");
    let names = ["www.shop.test", "cdn.shop.test", "api.bank.test", "video.stream.test"];
    let leaf = pki.issue(&names, "QUIC Servers", 1_700_000_000, 1_900_000_000);
    let mut frames = Vec::new();
    for i in 0..sessions {
        let shape = tlsgate_perf::quic::SessionShape {
            client: std::net::SocketAddr::from((
                [10, 20, (i / 250) as u8, 1 + (i % 250) as u8],
                40_000 + (i % 20_000) as u16,
            )),
            server: std::net::SocketAddr::from(([10, 21, 0, 1 + (i % 4) as u8], 443)),
            sni: names[i % names.len()].into(),
            alpn: vec![b"h3".to_vec()],
            retry: retry_every > 0 && i % retry_every == 0,
            start_unix_ns: DEFAULT_START_UNIX_S * 1_000_000_000 + i as u64 * 1_000_000,
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone()));
        let chain = vec![CertificateDer::from(leaf.cert_der.clone())];
        let roots = vec![CertificateDer::from(pki.ca_cert_der())];
        let (f, _) = tlsgate_perf::quic::session_frames(&shape, chain, key, roots)?;
        frames.extend(f);
    }
    frames.sort_by_key(|f| f.unix_ns);
    Ok(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replayed_sessions_are_distinct_flows_in_time_order() {
        let frames = handshakes(60, 12, 3).unwrap();
        assert!(frames.windows(2).all(|w| w[0].unix_ns <= w[1].unix_ns));
        let mut flows = std::collections::HashSet::new();
        for f in &frames {
            let p = etherparse::SlicedPacket::from_ethernet(&f.data).unwrap();
            let Some(etherparse::TransportSlice::Tcp(tcp)) = p.transport else { panic!("not TCP") };
            if tcp.syn() && !tcp.ack() {
                let src = match p.net {
                    Some(etherparse::NetSlice::Ipv4(ip)) => IpAddr::V4(ip.header().source_addr()),
                    Some(etherparse::NetSlice::Ipv6(ip)) => IpAddr::V6(ip.header().source_addr()),
                    _ => panic!("not IP"),
                };
                flows.insert((src, tcp.source_port()));
            }
        }
        assert_eq!(flows.len(), 60);
    }
}
