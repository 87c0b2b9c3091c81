//! Real QUIC handshakes, from quinn's protocol state machine (quinn-proto,
//! sans-IO, its TLS rustls's): a [`Peer`] is one endpoint, client or server,
//! that a caller feeds datagrams and asks for the ones it sends. Two peers
//! joined in memory make captures ([`session_frames`]: Initials over several
//! packets, a Retry, coalesced packets, as quinn sends them); one peer on a
//! UDP socket is a live client or server for the end-to-end tests.
//!
//! The application on top is the smallest that shows a page came: the client
//! opens a bidirectional stream, sends a request and reads to the stream's
//! end; the server answers each stream with its page.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn_proto::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn_proto::{
    ClientConfig, ConnectionHandle, DatagramEvent, Dir, Endpoint, EndpointConfig, Event, ServerConfig, StreamEvent,
    StreamId,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::pcap_out::Frame;

/// What a peer does.
pub enum Role {
    /// Connects to `server` for `sni`, offering `alpn`, trusting `roots`;
    /// sends `request` on one stream.
    Client {
        /// The server's address.
        server: SocketAddr,
        /// The name it asks for.
        sni: String,
        /// ALPN protocols offered.
        alpn: Vec<Vec<u8>>,
        /// CA certificates it trusts.
        roots: Vec<CertificateDer<'static>>,
        /// What it sends on its stream.
        request: Vec<u8>,
    },
    /// Answers every stream with `page`.
    Server {
        /// Its certificate chain.
        chain: Vec<CertificateDer<'static>>,
        /// Its key.
        key: PrivateKeyDer<'static>,
        /// ALPN protocols it accepts.
        alpn: Vec<Vec<u8>>,
        /// Sends a Retry to every client without a token first.
        retry: bool,
        /// Its answer.
        page: Vec<u8>,
        /// Speaks HTTP/3 (RFC 9114): a control stream with its SETTINGS, and
        /// each request answered with a HEADERS frame (`:status 200`,
        /// `content-type: text/html; charset=utf-8`) and a DATA frame.
        http3: bool,
    },
}

/// One QUIC endpoint and its connections.
pub struct Peer {
    endpoint: Endpoint,
    connections: Vec<(ConnectionHandle, quinn_proto::Connection)>,
    retry: bool,
    page: Vec<u8>,
    request: Vec<u8>,
    http3: bool,
    /// What each stream has read so far.
    reads: Vec<(StreamId, Vec<u8>)>,
    /// The client's answer, once its stream ended.
    pub response: Option<Vec<u8>>,
    /// Why a connection closed, if one did.
    pub lost: Option<String>,
    buf: Vec<u8>,
    out: Vec<(SocketAddr, Vec<u8>)>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Peer {
    /// A peer in `role`; a client connects at `now`.
    pub fn new(role: Role, now: Instant) -> Result<Peer, String> {
        let peer = |endpoint, retry, page, request, http3| Peer {
            endpoint,
            connections: Vec::new(),
            retry,
            page,
            request,
            http3,
            reads: Vec::new(),
            response: None,
            lost: None,
            buf: Vec::with_capacity(1500),
            out: Vec::new(),
        };
        match role {
            Role::Client { server, sni, alpn, roots, request } => {
                let mut store = rustls::RootCertStore::empty();
                for r in roots {
                    store.add(r).map_err(|e| format!("CA certificate: {e}"))?;
                }
                // X25519MLKEM768 first, as browsers send it: the ClientHello then
                // spans two Initial packets.
                use rustls::crypto::aws_lc_rs::kx_group;
                let mut client_provider = rustls::crypto::aws_lc_rs::default_provider();
                client_provider.kx_groups = vec![kx_group::X25519MLKEM768, kx_group::X25519, kx_group::SECP256R1];
                let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(client_provider))
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(store)
                    .with_no_client_auth();
                tls.alpn_protocols = alpn;
                let quic = QuicClientConfig::try_from(tls).map_err(|e| e.to_string())?;
                let mut endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), None, false, None);
                let (h, c) = endpoint
                    .connect(now, ClientConfig::new(Arc::new(quic)), server, &sni)
                    .map_err(|e| format!("connect: {e}"))?;
                let mut p = peer(endpoint, false, Vec::new(), request, false);
                p.connections.push((h, c));
                Ok(p)
            }
            Role::Server { chain, key, alpn, retry, page, http3 } => {
                let mut tls = rustls::ServerConfig::builder_with_provider(provider())
                    .with_protocol_versions(&[&rustls::version::TLS13])
                    .map_err(|e| e.to_string())?
                    .with_no_client_auth()
                    .with_single_cert(chain, key)
                    .map_err(|e| format!("server certificate: {e}"))?;
                tls.alpn_protocols = alpn;
                tls.max_early_data_size = u32::MAX;
                let quic = QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
                let config = ServerConfig::with_crypto(Arc::new(quic));
                let endpoint = Endpoint::new(Arc::new(EndpointConfig::default()), Some(Arc::new(config)), false, None);
                Ok(peer(endpoint, retry, page, Vec::new(), http3))
            }
        }
    }

    /// A datagram from `from`.
    pub fn on_datagram(&mut self, now: Instant, from: SocketAddr, local: Option<IpAddr>, data: &[u8]) {
        self.buf.clear();
        let event = self.endpoint.handle(now, from, local, None, data.into(), &mut self.buf);
        match event {
            Some(DatagramEvent::ConnectionEvent(h, ev)) => {
                if let Some((_, c)) = self.connections.iter_mut().find(|(ch, _)| *ch == h) {
                    c.handle_event(ev);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if self.retry && !incoming.remote_address_validated() && incoming.may_retry() {
                    if let Ok(t) = self.endpoint.retry(incoming, &mut self.buf) {
                        self.out.push((t.destination, self.buf[..t.size].to_vec()));
                    }
                } else {
                    match self.endpoint.accept(incoming, now, &mut self.buf, None) {
                        Ok((h, c)) => self.connections.push((h, c)),
                        Err(e) => {
                            if let Some(t) = e.response {
                                self.out.push((t.destination, self.buf[..t.size].to_vec()));
                            }
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => self.out.push((t.destination, self.buf[..t.size].to_vec())),
            None => {}
        }
        self.drive(now);
    }

    /// Timers that fired by `now`.
    pub fn on_timeout(&mut self, now: Instant) {
        for (_, c) in &mut self.connections {
            if c.poll_timeout().is_some_and(|t| t <= now) {
                c.handle_timeout(now);
            }
        }
        self.drive(now);
    }

    /// When the next timer fires.
    pub fn next_timeout(&mut self) -> Option<Instant> {
        self.connections.iter_mut().filter_map(|(_, c)| c.poll_timeout()).min()
    }

    /// The datagrams to send, with their destinations.
    pub fn take_transmits(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::mem::take(&mut self.out)
    }

    /// Whether every connection has closed.
    pub fn closed(&self) -> bool {
        self.connections.iter().all(|(_, c)| c.is_closed() || c.is_drained())
    }

    fn drive(&mut self, now: Instant) {
        for (h, c) in &mut self.connections {
            while let Some(ev) = c.poll() {
                match ev {
                    Event::Connected if !self.request.is_empty() => {
                        if let Some(id) = c.streams().open(Dir::Bi) {
                            let _ = c.send_stream(id).write(&self.request);
                            let _ = c.send_stream(id).finish();
                            self.reads.push((id, Vec::new()));
                        }
                    }
                    Event::Connected if self.http3 => {
                        // The control stream: its type, then an empty SETTINGS frame.
                        if let Some(id) = c.streams().open(Dir::Uni) {
                            let _ = c.send_stream(id).write(&[0x00, 0x04, 0x00]);
                        }
                    }
                    Event::Stream(StreamEvent::Opened { dir }) => {
                        while let Some(id) = c.streams().accept(dir) {
                            self.reads.push((id, Vec::new()));
                        }
                    }
                    Event::ConnectionLost { reason } => self.lost = Some(reason.to_string()),
                    _ => {}
                }
            }
            // What every stream has; a finished one is answered (server) or kept (client).
            let mut finished = Vec::new();
            for (id, buf) in &mut self.reads {
                let mut recv = c.recv_stream(*id);
                let Ok(mut chunks) = recv.read(true) else { continue };
                loop {
                    match chunks.next(usize::MAX) {
                        Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                        Ok(None) => {
                            finished.push(*id);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let _ = chunks.finalize();
            }
            for id in finished {
                let Some(at) = self.reads.iter().position(|(i, _)| *i == id) else { continue };
                let (_, data) = self.reads.remove(at);
                if id.dir() == Dir::Uni {
                    // A client's control or QPACK stream: read and let go.
                } else if self.request.is_empty() {
                    let answer = if self.http3 { http3_response(&self.page) } else { self.page.clone() };
                    let _ = c.send_stream(id).write(&answer);
                    let _ = c.send_stream(id).finish();
                } else {
                    self.response = Some(data);
                    c.close(now, 0u32.into(), b"done"[..].into());
                }
            }
            while let Some(ev) = c.poll_endpoint_events() {
                if let Some(back) = self.endpoint.handle_event(*h, ev) {
                    c.handle_event(back);
                }
            }
            loop {
                self.buf.clear();
                let Some(t) = c.poll_transmit(now, 1, &mut self.buf) else { break };
                self.out.push((t.destination, self.buf[..t.size].to_vec()));
            }
        }
    }
}

/// An HTTP/3 response: a HEADERS frame whose field section (QPACK, static
/// table only: no dynamic table to announce) is `:status 200` (index 25)
/// and `content-type: text/html; charset=utf-8` (index 52), then `body` in
/// a DATA frame.
fn http3_response(body: &[u8]) -> Vec<u8> {
    let headers = [0x00, 0x00, 0xc0 | 25, 0xc0 | 52];
    let mut out = vec![0x01, headers.len() as u8];
    out.extend_from_slice(&headers);
    out.push(0x00);
    // A QUIC variable-length integer of 8 bytes holds any length.
    out.extend_from_slice(&(0xc000_0000_0000_0000 | body.len() as u64).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// How a generated session looks.
pub struct SessionShape {
    /// The client's address.
    pub client: SocketAddr,
    /// The server's address.
    pub server: SocketAddr,
    /// The name the client asks for.
    pub sni: String,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
    /// The server sends a Retry first.
    pub retry: bool,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_unix_ns: u64,
}

/// A whole QUIC session between a quinn client and a quinn server, joined in
/// memory: every datagram either sent, as Ethernet/IPv4/UDP frames 1 ms
/// apart, until both have closed. Returns the frames and the page the client got.
pub fn session_frames(
    shape: &SessionShape,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<CertificateDer<'static>>,
) -> Result<(Vec<Frame>, Vec<u8>), String> {
    let start = Instant::now();
    let mut now = start;
    let page = b"<html>over QUIC</html>\n".to_vec();
    let server_role =
        Role::Server { chain, key, alpn: shape.alpn.clone(), retry: shape.retry, page: page.clone(), http3: false };
    let mut server = Peer::new(server_role, now)?;
    let client_role = Role::Client {
        server: shape.server,
        sni: shape.sni.clone(),
        alpn: shape.alpn.clone(),
        roots,
        request: b"GET /\r\n".to_vec(),
    };
    let mut client = Peer::new(client_role, now)?;
    client.drive(now);
    let mut frames = Vec::new();
    for _ in 0..2000 {
        let mut moved = false;
        for (from_client, datagrams) in [(true, client.take_transmits()), (false, server.take_transmits())] {
            for (_, d) in datagrams {
                moved = true;
                let (src, dst) = if from_client { (shape.client, shape.server) } else { (shape.server, shape.client) };
                let t = shape.start_unix_ns + (now - start).as_nanos() as u64;
                frames.push(Frame { unix_ns: t, data: udp_frame(src, dst, &d)? });
                now += Duration::from_millis(1);
                if from_client {
                    server.on_datagram(now, src, Some(dst.ip()), &d);
                } else {
                    client.on_datagram(now, src, Some(dst.ip()), &d);
                }
            }
        }
        if client.response.is_some() && client.closed() && server.closed() {
            break;
        }
        if !moved {
            let next = [client.next_timeout(), server.next_timeout()].into_iter().flatten().min();
            match next {
                Some(t) => now = now.max(t),
                None => break,
            }
            client.on_timeout(now);
            server.on_timeout(now);
        }
    }
    let got = client.response.ok_or_else(|| format!("no page over QUIC ({:?})", client.lost))?;
    Ok((frames, got))
}

/// An Ethernet/IPv4/UDP frame carrying `payload` from `src` to `dst`.
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, payload: &[u8]) -> Result<Vec<u8>, String> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else { return Err("IPv4 addresses only".into()) };
    let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(s.octets(), d.octets(), 64)
        .udp(src.port(), dst.port());
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).map_err(|e| e.to_string())?;
    Ok(out)
}
