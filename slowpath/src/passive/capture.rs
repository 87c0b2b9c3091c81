//! Passive reading of whole frames: TCP flows tracked and put back in order,
//! each TLS session read by a [`PassiveSession`], its plaintext written as a
//! synthetic TCP stream (the decrypted pcap, the mirror port). Sans-IO:
//! frames and their times in, frames and session reports out.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use tlsgate_core::packet::{tcp_flags, Addr, TcpFrame};
use tlsgate_core::tls::reassembly::StreamReassembler;

use super::{Keys, PassiveSession, Plaintext, Report, ServerKey};
use crate::export::{DecryptedStream, Frames};
use crate::wire::FlowTemplate;

/// Bytes each direction's reassembler holds out of order, by default.
const REASSEMBLY_CAP: usize = 1 << 20;

/// One TLS session read, for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionReport {
    /// The client's address and port.
    pub client: (IpAddr, u16),
    /// The server's.
    pub server: (IpAddr, u16),
    /// Time of the flow's first frame, ns.
    pub first_ns: u64,
    /// What reading it came to.
    pub report: Report,
}

/// Frames in, sessions read.
pub struct CaptureReader {
    keys: Keys,
    flows: HashMap<FlowKey, Flow>,
    max_flows: usize,
    done: Vec<SessionReport>,
    /// Flows not tracked because the table was full.
    pub flows_not_tracked: u64,
    /// When set, imported server keys read only these (client, server) flows.
    passive_only_for: Option<HashSet<(Endpoint, Endpoint)>>,
    /// Each direction's reassembly window.
    window: usize,
}

/// An address and port.
pub type Endpoint = (IpAddr, u16);

/// (lower address and port, higher address and port).
type FlowKey = ((Addr, u16), (Addr, u16));

struct Flow {
    first_ns: u64,
    /// Time of its last frame.
    last_ns: u64,
    /// Whether the lower endpoint of the key is the client; unknown until a SYN or a ClientHello.
    client_is_low: Option<bool>,
    /// Reassembly of what the low endpoint sent, and the high one.
    streams: [StreamReassembler; 2],
    /// A flow template per side, as if that side were the client.
    templates: [Option<FlowTemplate>; 2],
    session: PassiveSession,
    decrypted: Option<DecryptedStream>,
    fin: [bool; 2],
    ipv6: bool,
    key: FlowKey,
    /// Not TLS: no ClientHello began the client's stream.
    tls: bool,
    /// Bytes of the client's stream read so far.
    client_bytes: u64,
}

impl CaptureReader {
    /// A reader with these keys, tracking at most `max_flows` flows at once.
    pub fn new(keys: Keys, max_flows: usize) -> CaptureReader {
        CaptureReader {
            keys,
            flows: HashMap::new(),
            max_flows,
            done: Vec::new(),
            flows_not_tracked: 0,
            passive_only_for: None,
            window: REASSEMBLY_CAP,
        }
    }

    /// Each direction holds at most `window` bytes out of order (a stream
    /// reordered further is not read on).
    pub fn with_window(mut self, window: usize) -> CaptureReader {
        self.window = window;
        self
    }

    /// Imported server keys are used only on these (client, server) flows (the
    /// policy's passive decisions); the key log still opens any session.
    pub fn passive_only_for(&mut self, flows: HashSet<(Endpoint, Endpoint)>) {
        self.passive_only_for = Some(flows);
    }

    /// One frame captured at `ns`; decrypted frames are appended to `out`.
    pub fn frame(&mut self, ns: u64, frame: &[u8], out: &mut Frames) {
        let Some(t) = TcpFrame::parse(frame) else { return };
        let low_sent = (t.src, t.src_port) <= (t.dst, t.dst_port);
        let key = if low_sent {
            ((t.src, t.src_port), (t.dst, t.dst_port))
        } else {
            ((t.dst, t.dst_port), (t.src, t.src_port))
        };
        let side = usize::from(!low_sent);
        let syn = t.has(tcp_flags::SYN);
        // A new connection on a finished flow's ports: the old session ends.
        if syn && !t.has(tcp_flags::ACK) {
            if let Some(f) = self.flows.get(&key) {
                if f.fin.iter().any(|&x| x) || f.streams.iter().any(|s| s.stream_start().is_some()) {
                    if let Some(f) = self.flows.remove(&key) {
                        self.close(f, ns, out);
                    }
                }
            }
        }
        if !self.flows.contains_key(&key) {
            if self.flows.len() >= self.max_flows {
                self.flows_not_tracked += 1;
                return;
            }
            let flow = Flow {
                first_ns: ns,
                last_ns: ns,
                client_is_low: None,
                streams: [StreamReassembler::new(self.window), StreamReassembler::new(self.window)],
                templates: [None, None],
                session: PassiveSession::new(),
                decrypted: None,
                fin: [false; 2],
                ipv6: t.ipv6,
                key,
                tls: true,
                client_bytes: 0,
            };
            self.flows.insert(key, flow);
        }
        let Some(flow) = self.flows.get_mut(&key) else { return };
        flow.last_ns = ns;
        if flow.templates[side].is_none() {
            flow.templates[side] = Some(FlowTemplate::from_client_frame(&t));
        }
        if syn {
            flow.streams[side].set_next_seq(t.data_seq());
            if flow.client_is_low.is_none() {
                // The SYN's sender is the client; the SYN-ACK's the server.
                flow.client_is_low = Some(low_sent != t.has(tcp_flags::ACK));
            }
        }
        let payload = t.payload();
        if flow.client_is_low.is_none() && looks_like_client_hello(payload) {
            flow.client_is_low = Some(low_sent);
        }
        // A stream that cannot be held in order any more is not read further.
        if flow.streams[side].push(t.data_seq(), payload).is_err() {
            flow.tls = false;
        }
        let mut plain = Plaintext::new();
        if let (Some(client_is_low), Some(only)) = (flow.client_is_low, &self.passive_only_for) {
            let ip = |a: &Addr| to_ip(a, flow.ipv6);
            let (low, high) = ((ip(&flow.key.0 .0), flow.key.0 .1), (ip(&flow.key.1 .0), flow.key.1 .1));
            let ends = if client_is_low { (low, high) } else { (high, low) };
            flow.session.use_server_keys = only.contains(&ends);
        }
        if let Some(client_is_low) = flow.client_is_low {
            for s in 0..2 {
                let from_client = (s == 0) == client_is_low;
                let bytes = flow.streams[s].contiguous();
                if bytes.is_empty() {
                    continue;
                }
                // TLS or not is told by the client stream's first bytes (a ClientHello may span segments).
                if from_client && flow.client_bytes == 0 {
                    flow.tls &= looks_like_client_hello(bytes) || bytes.len() < 6;
                }
                if from_client {
                    flow.client_bytes += bytes.len() as u64;
                }
                let n = bytes.len();
                if flow.tls {
                    flow.session.feed(&mut self.keys, from_client, bytes, &mut plain);
                }
                flow.streams[s].consume(n);
                flow.streams[s].forget_read();
            }
        }
        if !plain.is_empty() {
            flow.emit(ns, &plain, out);
        }
        if t.has(tcp_flags::FIN) || t.has(tcp_flags::RST) {
            flow.fin[side] = true;
            if t.has(tcp_flags::RST) || flow.fin.iter().all(|&x| x) {
                if let Some(f) = self.flows.remove(&key) {
                    self.close(f, ns, out);
                }
            }
        }
    }

    /// Adds an imported server key (once per certificate).
    pub fn add_server_key(&mut self, key: ServerKey) {
        if !self.keys.server_keys.iter().any(|k| k.cert_sha256 == key.cert_sha256) {
            self.keys.server_keys.push(key);
        }
    }

    /// Whether a key for this certificate is held.
    pub fn has_server_key(&self, cert_sha256: &[u8; 32]) -> bool {
        self.keys.server_keys.iter().any(|k| &k.cert_sha256 == cert_sha256)
    }

    /// Imported keys may read this (client, server) flow too (see [`CaptureReader::passive_only_for`]).
    pub fn allow(&mut self, flow: (Endpoint, Endpoint)) {
        self.passive_only_for.get_or_insert_with(HashSet::new).insert(flow);
    }

    /// Forgets a flow no longer allowed (its event was written).
    pub fn disallow(&mut self, flow: &(Endpoint, Endpoint)) {
        if let Some(s) = &mut self.passive_only_for {
            s.remove(flow);
        }
    }

    /// The sessions whose flows ended since the last call.
    pub fn take_done(&mut self) -> Vec<SessionReport> {
        std::mem::take(&mut self.done)
    }

    /// Ends the flows with no frame for `idle_ns` (`watched` ones: `watched_idle_ns`).
    pub fn expire(&mut self, ns: u64, idle_ns: u64, watched_idle_ns: u64, out: &mut Frames) {
        let only = self.passive_only_for.as_ref();
        let stale: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| {
                let watched = f.endpoints().is_some_and(|e| only.is_some_and(|o| o.contains(&e)));
                let limit = if watched { watched_idle_ns } else { idle_ns };
                ns.saturating_sub(f.last_ns) > limit
            })
            .map(|(k, _)| *k)
            .collect();
        for k in stale {
            if let Some(f) = self.flows.remove(&k) {
                self.close(f, ns, out);
            }
        }
    }

    /// Ends every flow still open; the sessions go to [`CaptureReader::take_done`].
    pub fn close_all(&mut self, ns: u64, out: &mut Frames) {
        let mut left: Vec<Flow> = self.flows.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.first_ns);
        for f in left {
            self.close(f, ns, out);
        }
    }

    /// Ends every flow still open (the capture ended); returns the sessions read.
    pub fn finish(mut self, ns: u64, out: &mut Frames) -> Vec<SessionReport> {
        let mut left: Vec<Flow> = self.flows.drain().map(|(_, f)| f).collect();
        left.sort_by_key(|f| f.first_ns);
        for f in left {
            self.close(f, ns, out);
        }
        self.done.sort_by_key(|r| r.first_ns);
        self.done
    }

    fn close(&mut self, mut f: Flow, ns: u64, out: &mut Frames) {
        f.session.finish();
        f.session.remember_ticket(&mut self.keys);
        if let Some(d) = &mut f.decrypted {
            d.finish(ns, out);
        }
        let Some(client_is_low) = f.client_is_low else { return };
        if !f.tls || !f.session_started() {
            return;
        }
        let ip = |a: &Addr| to_ip(a, f.ipv6);
        let (low, high) = ((ip(&f.key.0 .0), f.key.0 .1), (ip(&f.key.1 .0), f.key.1 .1));
        let (client, server) = if client_is_low { (low, high) } else { (high, low) };
        self.done.push(SessionReport { client, server, first_ns: f.first_ns, report: f.session.report().clone() });
    }
}

impl Flow {
    /// (client, server), once the client is known.
    fn endpoints(&self) -> Option<(Endpoint, Endpoint)> {
        let client_is_low = self.client_is_low?;
        let ip = |a: &Addr| to_ip(a, self.ipv6);
        let (low, high) = ((ip(&self.key.0 .0), self.key.0 .1), (ip(&self.key.1 .0), self.key.1 .1));
        Some(if client_is_low { (low, high) } else { (high, low) })
    }

    /// The client's stream began with a ClientHello.
    fn session_started(&self) -> bool {
        self.session.hello.client_random.is_some()
    }

    fn emit(&mut self, ns: u64, plain: &Plaintext, out: &mut Frames) {
        let Some(client_is_low) = self.client_is_low else { return };
        let side = usize::from(!client_is_low);
        let Some(template) = self.templates[side].clone() else { return };
        let stream = self.decrypted.get_or_insert_with(|| DecryptedStream::new(template, ns, out));
        for (from_client, bytes) in plain {
            stream.data(*from_client, bytes, ns, out);
        }
    }
}

/// A TLS handshake record holding a ClientHello (or its first bytes).
fn looks_like_client_hello(b: &[u8]) -> bool {
    b.len() >= 6 && b[0] == 22 && b[1] == 3 && b[5] == 1
}

fn to_ip(a: &Addr, ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::from(*a)
    } else {
        IpAddr::from([a[12], a[13], a[14], a[15]])
    }
}
