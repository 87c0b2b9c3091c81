//! The server identity probe: a short TLS handshake of the slow path's own
//! with a server, to read the certificate it presents (which TLS 1.3 hides
//! from a passive observer). Its own TCP connection from the client's
//! address: SYN, then a takeover endpoint from the SYN-ACK on, a rustls
//! client whose verifier keeps the chain and ends the handshake there, then
//! a reset. Sans-IO, like the rest of the slow path.

use std::sync::{Arc, Mutex};

use rustls::client::danger::ServerCertVerified;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection};

use crate::tcp::{flags, Limits, Segment, Takeover, TcpEndpoint};
use crate::verify::{ChainJudge, UpstreamVerifier};

/// A probe gives up after this long.
pub const PROBE_TIMEOUT_NS: u64 = 5_000_000_000;

/// One probe.
pub struct Probe {
    isn: u32,
    tcp: Option<TcpEndpoint>,
    tls: ClientConnection,
    seen: Arc<Mutex<Option<Vec<Vec<u8>>>>>,
    syn_pending: bool,
    syn_sent_ns: u64,
    deadline_ns: u64,
    scratch: Vec<u8>,
    done: bool,
}

/// How a probe ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// The server's chain, leaf first.
    Chain(Vec<Vec<u8>>),
    /// No certificate: why.
    Failed(String),
}

impl Probe {
    /// A probe with initial sequence number `isn` for a server reached as
    /// `sni` (its address when there is none), offering `alpn`.
    pub fn new(isn: u32, sni: Option<&str>, addr: std::net::IpAddr, alpn: &[String], now_ns: u64) -> Probe {
        let seen = Arc::new(Mutex::new(None));
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = Arc::new(UpstreamVerifier::new(KeepChain { seen: seen.clone() }, provider.clone()));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map(|b| b.dangerous().with_custom_certificate_verifier(verifier).with_no_client_auth())
            .unwrap_or_else(|_| unreachable_config());
        config.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        let name = sni
            .and_then(|s| ServerName::try_from(s.to_owned()).ok())
            .unwrap_or_else(|| ServerName::IpAddress(addr.into()));
        let tls = match ClientConnection::new(Arc::new(config), name) {
            Ok(c) => c,
            // A valid config and name cannot fail here; an invalid SNI fell back to the address.
            Err(_) => ClientConnection::new(Arc::new(unreachable_config()), ServerName::IpAddress(addr.into()))
                .expect("a client for an address always builds"),
        };
        Probe {
            isn,
            tcp: None,
            tls,
            seen,
            syn_pending: true,
            syn_sent_ns: now_ns,
            deadline_ns: now_ns.saturating_add(PROBE_TIMEOUT_NS),
            scratch: Vec::new(),
            done: false,
        }
    }

    /// A segment from the server.
    pub fn on_segment(&mut self, seg: &Segment, now_ns: u64) {
        if self.done {
            return;
        }
        match &mut self.tcp {
            Some(tcp) => tcp.on_segment(seg, now_ns),
            None => {
                let syn_ack = flags::SYN | flags::ACK;
                if seg.flags & syn_ack == syn_ack && seg.ack == self.isn.wrapping_add(1) {
                    let t = Takeover {
                        snd_nxt: self.isn.wrapping_add(1),
                        snd_una: self.isn.wrapping_add(1),
                        rcv_nxt: seg.seq.wrapping_add(1),
                        peer_window: u32::from(seg.window),
                        peer_mss: 536,
                        our_wscale: 0,
                        peer_wscale: 0,
                        sack_permitted: false,
                        timestamps: None,
                    };
                    self.tcp = Some(TcpEndpoint::takeover(t, Limits::default(), now_ns));
                } else if seg.flags & flags::RST != 0 {
                    self.done = true;
                }
            }
        }
    }

    /// Moves bytes between TCP and rustls; returns how the probe ended, once.
    pub fn drive(&mut self, now_ns: u64) -> Option<ProbeResult> {
        if self.done {
            return None;
        }
        if let Some(chain) = take_chain(&self.seen) {
            return Some(self.end(ProbeResult::Chain(chain)));
        }
        if now_ns > self.deadline_ns {
            return Some(self.end(ProbeResult::Failed("no certificate within 5 s".into())));
        }
        let Some(tcp) = &mut self.tcp else {
            // Retransmit the SYN once a second until the deadline.
            if now_ns.saturating_sub(self.syn_sent_ns) > 1_000_000_000 {
                self.syn_pending = true;
                self.syn_sent_ns = now_ns;
            }
            return None;
        };
        if tcp.readable() > 0 {
            self.scratch.clear();
            tcp.recv(&mut self.scratch);
            let mut slice = &self.scratch[..];
            while !slice.is_empty() {
                if self.tls.read_tls(&mut slice).is_err() {
                    break;
                }
                if self.tls.process_new_packets().is_err() {
                    break;
                }
            }
        }
        if let Some(chain) = take_chain(&self.seen) {
            return Some(self.end(ProbeResult::Chain(chain)));
        }
        let mut out = Vec::new();
        while self.tls.wants_write() {
            if self.tls.write_tls(&mut out).is_err() {
                break;
            }
        }
        if !out.is_empty() {
            tcp.send(&out);
        }
        if tcp.poll_timeout().is_some_and(|t| t <= now_ns) {
            tcp.on_timeout(now_ns);
        }
        if tcp.peer_closed() {
            return Some(self.end(ProbeResult::Failed("the server closed before its certificate".into())));
        }
        None
    }

    /// The next segment to send to the server.
    pub fn poll_transmit(&mut self, now_ns: u64) -> Option<Segment> {
        if std::mem::take(&mut self.syn_pending) && self.tcp.is_none() && !self.done {
            return Some(Segment {
                seq: self.isn,
                ack: 0,
                flags: flags::SYN,
                window: 65535,
                timestamps: None,
                sack: Vec::new(),
                payload: Vec::new(),
            });
        }
        self.tcp.as_mut()?.poll_transmit(now_ns)
    }

    /// Whether the probe is over (its reset is then the last segment).
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn end(&mut self, r: ProbeResult) -> ProbeResult {
        self.done = true;
        if let Some(tcp) = &mut self.tcp {
            tcp.abort();
        }
        r
    }
}

fn take_chain(seen: &Mutex<Option<Vec<Vec<u8>>>>) -> Option<Vec<Vec<u8>>> {
    seen.lock().unwrap_or_else(|p| p.into_inner()).take()
}

/// A configuration that cannot fail to build (the default provider supports both versions).
fn unreachable_config() -> ClientConfig {
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("the default provider supports the default versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Keeps the chain the server presents and ends the handshake there.
#[derive(Debug)]
struct KeepChain {
    seen: Arc<Mutex<Option<Vec<Vec<u8>>>>>,
}

impl ChainJudge for KeepChain {
    fn judge(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let chain = std::iter::once(end_entity).chain(intermediates).map(|c| c.to_vec()).collect();
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain);
        // What was wanted is known: no reason to finish the handshake.
        Err(rustls::Error::General("probe: certificate read".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    use tlsgate_perf::handshake::Pki;

    /// The probe against a real rustls server on a TCP endpoint of its own.
    #[test]
    fn a_probe_reads_a_tls13_servers_certificate_then_resets() {
        let pki = Pki::new("Root");
        let leaf = pki.issue(&["hidden.test"], "Hidden", 1_700_000_000, 2_000_000_000);
        let cfg = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(leaf.key_der.clone().into()),
            )
            .unwrap();
        let mut server_tls = ServerConnection::new(Arc::new(cfg)).unwrap();
        let addr = "198.51.100.7".parse().unwrap();
        let mut p = Probe::new(1000, Some("hidden.test"), addr, &["h2".into()], 0);
        let syn = p.poll_transmit(0).expect("a SYN first");
        assert_eq!(syn.flags, flags::SYN);
        // The server's stack answers the SYN.
        let s_isn = 0xfffffff0u32;
        let t = Takeover {
            snd_nxt: s_isn.wrapping_add(1),
            snd_una: s_isn.wrapping_add(1),
            rcv_nxt: 1001,
            peer_window: 65535,
            peer_mss: 536,
            our_wscale: 0,
            peer_wscale: 0,
            sack_permitted: false,
            timestamps: None,
        };
        let mut server = TcpEndpoint::takeover(t, Limits::default(), 0);
        let syn_ack = Segment {
            seq: s_isn,
            ack: 1001,
            flags: flags::SYN | flags::ACK,
            window: 65535,
            timestamps: None,
            sack: Vec::new(),
            payload: Vec::new(),
        };
        p.on_segment(&syn_ack, 1);
        let mut result = None;
        let mut reset_seen = false;
        for ms in 2..2000u64 {
            let now = ms * 1_000_000;
            if let Some(r) = p.drive(now) {
                result = Some(r);
            }
            while let Some(seg) = p.poll_transmit(now) {
                reset_seen |= seg.flags & flags::RST != 0;
                server.on_segment(&seg, now);
            }
            let mut buf = Vec::new();
            server.recv(&mut buf);
            let mut slice = &buf[..];
            while !slice.is_empty() && server_tls.read_tls(&mut slice).is_ok() {
                let _ = server_tls.process_new_packets();
            }
            let mut out = Vec::new();
            while server_tls.wants_write() && server_tls.write_tls(&mut out).is_ok() {}
            server.send(&out);
            while let Some(seg) = server.poll_transmit(now) {
                p.on_segment(&seg, now);
            }
            if result.is_some() && reset_seen {
                break;
            }
        }
        assert_eq!(result, Some(ProbeResult::Chain(vec![leaf.cert_der.clone()])));
        assert!(reset_seen, "the probe's connection is reset once the certificate is read");
        assert!(p.is_done());
    }
}
