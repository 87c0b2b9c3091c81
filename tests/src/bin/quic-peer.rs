//! A QUIC client or server on a UDP socket: quinn's protocol state machine
//! (quinn-proto, as `tlsgate_perf::quic::Peer` drives it), for the end-to-end
//! tests in network namespaces.
//!
//! ```text
//! quic-peer server IP:PORT CERT.pem KEY.pem SECONDS [retry] [h3]
//! quic-peer client IP:PORT NAME CA.pem SECONDS
//! ```
//!
//! The server answers every stream with its page for SECONDS (with `h3`, as
//! an HTTP/3 server: browsers can load it). The client asks
//! once and prints the page (exit 0); it exits 3 if nothing came in SECONDS,
//! 4 if the connection was closed with an error, 5 if an ICMP port
//! unreachable came back (the socket is connected, so the kernel reports it).

use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tlsgate_perf::quic::{Peer, Role};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!(
            "usage: quic-peer server IP:PORT CERT.pem KEY.pem SECONDS [retry] [h3] | client IP:PORT NAME CA.pem SECONDS"
        );
        std::process::exit(2)
    };
    let (Some(mode), Some(addr)) = (args.get(1), args.get(2).and_then(|a| a.parse::<SocketAddr>().ok())) else {
        usage()
    };
    let seconds: u64 = args.get(5).and_then(|s| s.parse().ok()).unwrap_or_else(|| usage());
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let now = Instant::now();
    let (socket, mut peer) = match mode.as_str() {
        "server" => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&args[3]).expect("certificate file").flatten().collect();
            let key = PrivateKeyDer::from_pem_file(&args[4]).expect("key file");
            let role = Role::Server {
                chain,
                key,
                alpn: vec![b"h3".to_vec()],
                retry: args[6..].iter().any(|a| a == "retry"),
                page: b"<html>over QUIC through tlsgate</html>\n".to_vec(),
                http3: args[6..].iter().any(|a| a == "h3"),
            };
            (UdpSocket::bind(addr).expect("bind"), Peer::new(role, now).expect("server"))
        }
        "client" => {
            let roots: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(&args[4]).expect("CA file").flatten().collect();
            let socket = UdpSocket::bind("0.0.0.0:0").expect("bind");
            socket.connect(addr).expect("connect");
            let role = Role::Client {
                server: addr,
                sni: args[3].clone(),
                alpn: vec![b"h3".to_vec()],
                roots,
                request: b"GET /\r\n".to_vec(),
            };
            (socket, Peer::new(role, now).expect("client"))
        }
        _ => usage(),
    };
    let client = mode == "client";
    let local = socket.local_addr().ok().map(|a| a.ip()).filter(|ip| !ip.is_unspecified());
    peer.on_timeout(Instant::now());
    let mut buf = vec![0u8; 65_536];
    while Instant::now() < deadline {
        for (to, d) in peer.take_transmits() {
            let sent = if client { socket.send(&d) } else { socket.send_to(&d, to) };
            if let Err(e) = sent {
                if client && e.kind() == ErrorKind::ConnectionRefused {
                    println!("refused: ICMP port unreachable");
                    std::process::exit(5);
                }
            }
        }
        if client {
            if let Some(page) = &peer.response {
                print!("{}", String::from_utf8_lossy(page));
                std::process::exit(0);
            }
            if let Some(why) = &peer.lost {
                println!("closed: {why}");
                std::process::exit(4);
            }
        }
        let wait = peer
            .next_timeout()
            .map_or(Duration::from_millis(50), |t| t.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(1), Duration::from_millis(50));
        socket.set_read_timeout(Some(wait)).expect("read timeout");
        let got = if client { socket.recv(&mut buf).map(|n| (n, addr)) } else { socket.recv_from(&mut buf) };
        match got {
            Ok((n, from)) => peer.on_datagram(Instant::now(), from, local, &buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                println!("refused: ICMP port unreachable");
                std::process::exit(5);
            }
            Err(_) => peer.on_timeout(Instant::now()),
        }
    }
    if client {
        println!("timed out: no page in {seconds} s");
        std::process::exit(3);
    }
}
