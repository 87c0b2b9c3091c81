//! A generator of inline evasions: for each technique, an evil flow (a
//! ClientHello for a blocked name, delivered so that a naive observer
//! misreads it) and its benign twin (the same delivery, legitimately, for an
//! allowed name). Frames are built byte by byte here (not by the appliance's
//! own code), with checksums computed unless a case spoils them on purpose.
//!
//! The flows: client 10.1.0.1 (or fd00::1) port 40000+ to server 10.1.0.2
//! (fd00::2) port 443; three-way handshake, then the ClientHello.

/// The name a policy blocks.
pub const BLOCKED: &str = "blocked.example";
/// The name it lets through.
pub const ALLOWED: &str = "allowed.example";

/// One technique: the evil flow and its twin, frames in wire order.
pub struct Case {
    /// Its name (a test's label).
    pub name: &'static str,
    /// Frames carrying a ClientHello for [`BLOCKED`].
    pub evil: Vec<Vec<u8>>,
    /// The same technique, used legitimately, for [`ALLOWED`].
    pub twin: Vec<Vec<u8>>,
    /// Whether the evil flow's ClientHello can be read at all (an
    /// overlapping-fragment datagram is discarded whole: nothing to judge).
    pub evil_readable: bool,
}

const CLIENT_ISN: u32 = 0x1000_0000;
const SERVER_ISN: u32 = 0x7000_0000;

/// A TLS 1.2 ClientHello record for `name`, with `pad` bytes of padding
/// extension before the SNI (so that the name lies that far in).
pub fn client_hello(name: &str, pad: usize) -> Vec<u8> {
    let mut ext = Vec::new();
    // padding (21)
    ext.extend_from_slice(&21u16.to_be_bytes());
    ext.extend_from_slice(&(pad as u16).to_be_bytes());
    ext.extend(std::iter::repeat_n(0u8, pad));
    // server_name (0)
    let n = name.as_bytes();
    ext.extend_from_slice(&0u16.to_be_bytes());
    ext.extend_from_slice(&((n.len() + 5) as u16).to_be_bytes());
    ext.extend_from_slice(&((n.len() + 3) as u16).to_be_bytes());
    ext.push(0);
    ext.extend_from_slice(&(n.len() as u16).to_be_bytes());
    ext.extend_from_slice(n);
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    let suites = [0xc02fu16, 0xc030, 0x009c];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // null compression
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![22, 3, 1];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// TCP flags.
pub mod flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// One segment to build.
#[derive(Clone)]
pub struct Seg {
    /// From the client.
    pub from_client: bool,
    /// Flags.
    pub flags: u8,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Window.
    pub window: u16,
    /// Raw TCP options (padded to 4 bytes here).
    pub options: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Spoil the TCP checksum.
    pub bad_checksum: bool,
}

/// How segments are framed.
#[derive(Clone, Copy, Default)]
pub struct Framing {
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Client port.
    pub port: u16,
    /// IPv6 extension headers before TCP (hop-by-hop, destination options).
    pub ext_headers: bool,
    /// QinQ tags, IPv4 options, Ethernet padding.
    pub tagged: bool,
}

fn csum(parts: &[&[u8]]) -> u16 {
    let mut acc = 0u64;
    for p in parts {
        let mut it = p.chunks_exact(2);
        for w in &mut it {
            acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [b] = it.remainder() {
            acc += u64::from(*b) << 8;
        }
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

const C4: [u8; 4] = [10, 1, 0, 1];
const S4: [u8; 4] = [10, 1, 0, 2];
const C6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const S6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

impl Seg {
    /// The TCP header and payload, checksummed for `f`'s addresses.
    fn tcp(&self, f: Framing) -> Vec<u8> {
        let (sp, dp) = if self.from_client { (f.port, 443) } else { (443, f.port) };
        let mut opts = self.options.clone();
        while !opts.len().is_multiple_of(4) {
            opts.push(1);
        }
        let mut t = Vec::new();
        t.extend_from_slice(&sp.to_be_bytes());
        t.extend_from_slice(&dp.to_be_bytes());
        t.extend_from_slice(&self.seq.to_be_bytes());
        t.extend_from_slice(&self.ack.to_be_bytes());
        t.push((((20 + opts.len()) / 4) as u8) << 4);
        t.push(self.flags);
        t.extend_from_slice(&self.window.to_be_bytes());
        t.extend_from_slice(&[0, 0, 0, 0]);
        t.extend_from_slice(&opts);
        t.extend_from_slice(&self.payload);
        let len = (t.len() as u32).to_be_bytes();
        let c = if f.ipv6 {
            let (s, d) = if self.from_client { (C6, S6) } else { (S6, C6) };
            csum(&[&s, &d, &len, &[0, 0, 0, 6], &t])
        } else {
            let (s, d) = if self.from_client { (C4, S4) } else { (S4, C4) };
            csum(&[&s, &d, &[0, 6], &len[2..], &t])
        };
        let c = if self.bad_checksum { c ^ 0x5555 } else { c };
        t[16..18].copy_from_slice(&c.to_be_bytes());
        t
    }

    /// The whole frame.
    pub fn frame(&self, f: Framing) -> Vec<u8> {
        ip_frame(f, self.from_client, 6, &self.tcp(f), None)
    }

    /// The frame as IP fragments of `step` bytes of its TCP segment (a
    /// multiple of 8), in the order given by `order` (indexes).
    pub fn fragments(&self, f: Framing, step: usize, order: &[usize]) -> Vec<Vec<u8>> {
        let tcp = self.tcp(f);
        let pieces: Vec<_> = tcp.chunks(step).collect();
        let n = pieces.len();
        order
            .iter()
            .map(|&i| fragment_frame(f, self.from_client, i * step, i + 1 < n, pieces[i], u32::from(f.port)))
            .collect()
    }
}

/// One IP fragment of a TCP segment.
pub fn fragment_frame(f: Framing, from_client: bool, offset: usize, more: bool, data: &[u8], id: u32) -> Vec<u8> {
    ip_frame(f, from_client, 6, data, Some((offset, more, id)))
}

fn ip_frame(f: Framing, from_client: bool, proto: u8, l4: &[u8], frag: Option<(usize, bool, u32)>) -> Vec<u8> {
    let mut out = Vec::new();
    let (dmac, smac) = if from_client { ([2u8; 6], [1u8; 6]) } else { ([1u8; 6], [2u8; 6]) };
    out.extend_from_slice(&dmac);
    out.extend_from_slice(&smac);
    if f.tagged {
        out.extend_from_slice(&[0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00, 0x0a]);
    }
    if f.ipv6 {
        out.extend_from_slice(&[0x86, 0xdd]);
        let mut ext = Vec::new();
        let mut first = proto;
        let mut chain: Vec<(u8, Vec<u8>)> = Vec::new();
        if f.ext_headers {
            // hop-by-hop with a PadN option, destination options likewise (8 bytes each)
            chain.push((0, vec![1, 4, 0, 0, 0, 0]));
            chain.push((60, vec![1, 4, 0, 0, 0, 0]));
        }
        if let Some((offset, more, id)) = frag {
            let mut h = Vec::new();
            h.extend_from_slice(&(((offset / 8) as u16) << 3 | more as u16).to_be_bytes());
            h.extend_from_slice(&id.to_be_bytes());
            chain.push((44, h));
        }
        if let Some((kind, _)) = chain.first() {
            first = *kind;
        }
        for (i, (_, body)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(proto, |(k, _)| *k);
            ext.push(next);
            ext.push(if chain[i].0 == 44 { 0 } else { ((body.len() + 2) / 8 - 1) as u8 });
            ext.extend_from_slice(body);
        }
        let (s, d) = if from_client { (C6, S6) } else { (S6, C6) };
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        out.push(first);
        out.push(64);
        out.extend_from_slice(&s);
        out.extend_from_slice(&d);
        out.extend_from_slice(&ext);
        out.extend_from_slice(l4);
    } else {
        out.extend_from_slice(&[0x08, 0x00]);
        let options: &[u8] = if f.tagged { &[0x01, 0x01, 0x01, 0x00] } else { &[] }; // NOP NOP NOP EOL
        let ihl = 20 + options.len();
        let (s, d) = if from_client { (C4, S4) } else { (S4, C4) };
        let mut h = vec![0x40 | (ihl / 4) as u8, 0];
        h.extend_from_slice(&((ihl + l4.len()) as u16).to_be_bytes());
        let (id, fo) = match frag {
            Some((offset, more, id)) => (id as u16, (offset / 8) as u16 | if more { 0x2000 } else { 0 }),
            None => (1, 0x4000),
        };
        h.extend_from_slice(&id.to_be_bytes());
        h.extend_from_slice(&fo.to_be_bytes());
        h.extend_from_slice(&[64, proto, 0, 0]);
        h.extend_from_slice(&s);
        h.extend_from_slice(&d);
        h.extend_from_slice(options);
        let c = csum(&[&h]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(l4);
    }
    if f.tagged && out.len() < 60 {
        out.resize(60, 0); // Ethernet padding
    }
    out
}

fn seg(from_client: bool, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Seg {
    Seg {
        from_client,
        flags,
        seq,
        ack,
        window: 64240,
        options: Vec::new(),
        payload: payload.to_vec(),
        bad_checksum: false,
    }
}

/// The three-way handshake (SYN options: MSS, and `extra`).
fn handshake(extra: &[u8], server_window: u16) -> Vec<Seg> {
    let mut opts = vec![2, 4, 0x05, 0xb4];
    opts.extend_from_slice(extra);
    let mut syn = seg(true, flags::SYN, CLIENT_ISN, 0, b"");
    syn.options = opts.clone();
    let mut syn_ack = seg(false, flags::SYN | flags::ACK, SERVER_ISN, CLIENT_ISN + 1, b"");
    syn_ack.options = opts;
    syn_ack.window = server_window;
    let ack = seg(true, flags::ACK, CLIENT_ISN + 1, SERVER_ISN + 1, b"");
    vec![syn, syn_ack, ack]
}

fn data(payload: &[u8]) -> Seg {
    seg(true, flags::ACK | flags::PSH, CLIENT_ISN + 1, SERVER_ISN + 1, payload)
}

fn frames(segs: &[Seg], f: Framing) -> Vec<Vec<u8>> {
    segs.iter().map(|s| s.frame(f)).collect()
}

fn timestamps(tsval: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&0u32.to_be_bytes());
    o
}

/// Every case, each flow on its own client port (from `base_port`).
pub fn cases(base_port: u16) -> Vec<Case> {
    let mut out = Vec::new();
    let mut port = base_port;
    let mut next = || {
        port += 2;
        (Framing { port, ..Framing::default() }, Framing { port: port + 1, ..Framing::default() })
    };
    let hello = |name: &str| client_hello(name, 200);

    // IPv4 fragments, out of order.
    let (e, t) = next();
    let frag = |f: Framing, name: &str| {
        let mut v = frames(&handshake(&[], 64240), f);
        v.extend(data(&hello(name)).fragments(f, 64, &[2, 0, 4, 1, 3]));
        v
    };
    out.push(Case { name: "ipv4_fragments", evil: frag(e, BLOCKED), twin: frag(t, ALLOWED), evil_readable: true });

    // IPv6: fragments, and extension headers.
    let (e, t) = next();
    let (e, t) = (Framing { ipv6: true, ..e }, Framing { ipv6: true, ..t });
    out.push(Case { name: "ipv6_fragments", evil: frag(e, BLOCKED), twin: frag(t, ALLOWED), evil_readable: true });
    let (e, t) = next();
    let ext = |f: Framing, name: &str| {
        let f = Framing { ipv6: true, ext_headers: true, ..f };
        let mut segs = handshake(&[], 64240);
        segs.push(data(&hello(name)));
        frames(&segs, f)
    };
    out.push(Case {
        name: "ipv6_extension_headers",
        evil: ext(e, BLOCKED),
        twin: ext(t, ALLOWED),
        evil_readable: true,
    });

    // Fragments that overlap: a second copy of the fragment holding the SNI,
    // with the blocked name where the allowed one was (a receiver that took
    // the later copy would read the blocked name). RFC 5722: the datagram is
    // discarded. The twin: the same without the copy.
    let (e, t) = next();
    let overlap = |f: Framing, evil: bool| {
        let mut v = frames(&handshake(&[], 64240), f);
        let good = data(&hello(ALLOWED)).fragments(f, 64, &[0, 1, 2, 3, 4]);
        let bad = data(&hello(BLOCKED)).fragments(f, 64, &[0, 1, 2, 3, 4]);
        let at = (1..good.len()).find(|&i| good[i] != bad[i]).expect("the name lies in one fragment");
        v.push(good[at].clone());
        if evil {
            v.push(bad[at].clone());
        }
        v.extend((0..good.len()).filter(|&i| i != at).map(|i| good[i].clone()));
        v
    };
    out.push(Case {
        name: "overlapping_fragments",
        evil: overlap(e, true),
        twin: overlap(t, false),
        evil_readable: false,
    });

    // TCP Fast Open: the ClientHello in the SYN (with a TFO cookie option).
    let (e, t) = next();
    let tfo = |f: Framing, name: &str| {
        let mut segs = handshake(&[34, 10, 1, 2, 3, 4, 5, 6, 7, 8], 64240);
        let len = hello(name).len() as u32;
        segs[0].payload = hello(name);
        segs[1].ack = CLIENT_ISN + 1 + len;
        segs[2].seq = CLIENT_ISN + 1 + len;
        frames(&segs, f)
    };
    out.push(Case { name: "tcp_fast_open", evil: tfo(e, BLOCKED), twin: tfo(t, ALLOWED), evil_readable: true });

    // Decoys the server drops, at the ClientHello's place, before it: the
    // evil flow's decoy carries the allowed name, its real hello the blocked
    // one; the twin's "decoy" is a proper copy of its (allowed) hello.
    type Spoil = fn(&mut Seg);
    let decoys: [(&'static str, Spoil); 5] = [
        ("decoy_bad_checksum", |s| s.bad_checksum = true),
        ("decoy_without_ack", |s| s.flags = flags::PSH),
        ("decoy_acking_unsent_data", |s| s.ack = SERVER_ISN + 100_000),
        ("decoy_with_tcp_md5", |s| {
            let mut o = vec![19, 18];
            o.extend_from_slice(&[0xaa; 16]);
            s.options = o;
        }),
        ("decoy_paws_old", |s| s.options = timestamps(100)),
    ];
    for (name, spoil) in decoys {
        let (e, t) = next();
        let paws = name == "decoy_paws_old";
        let flow = |f: Framing, evil: bool| {
            let syn_ts = if paws { timestamps(5000) } else { Vec::new() };
            let mut segs = handshake(&syn_ts, 64240);
            if paws {
                segs[1].options.extend_from_slice(&timestamps(9000));
                segs[2].options = timestamps(5001);
            }
            let mut decoy = data(&hello(ALLOWED));
            if paws {
                decoy.options = timestamps(5002);
            }
            if evil {
                spoil(&mut decoy);
            }
            let mut real = data(&hello(if evil { BLOCKED } else { ALLOWED }));
            if paws {
                real.options = timestamps(5003);
            }
            segs.push(decoy);
            segs.push(real);
            frames(&segs, f)
        };
        out.push(Case { name, evil: flow(e, true), twin: flow(t, false), evil_readable: true });
    }

    // A decoy past the receive window: the server's SYN-ACK offers 100 bytes;
    // the evil client sends the hello's tail (allowed name) beyond them first,
    // then the blocked hello's head, and (the window opened) its tail.
    let (e, t) = next();
    let window = |f: Framing, evil: bool| {
        let mut segs = handshake(&[], 100);
        let real = hello(if evil { BLOCKED } else { ALLOWED });
        let decoy = hello(ALLOWED);
        if evil {
            let mut s = data(&decoy[150..]);
            s.seq = CLIENT_ISN + 1 + 150;
            segs.push(s);
        }
        segs.push(data(&real[..100]));
        let mut ack = seg(false, flags::ACK, SERVER_ISN + 1, CLIENT_ISN + 1 + 100, b"");
        ack.window = 64240;
        segs.push(ack);
        let mut tail = data(&real[100..]);
        tail.seq = CLIENT_ISN + 1 + 100;
        segs.push(tail);
        frames(&segs, f)
    };
    out.push(Case { name: "decoy_out_of_window", evil: window(e, true), twin: window(t, false), evil_readable: true });

    // A RST off the next sequence number (a naive observer stops watching),
    // then the hello. The twin: a pure ACK there.
    let (e, t) = next();
    let rst = |f: Framing, evil: bool| {
        let mut segs = handshake(&[], 64240);
        segs.push(if evil {
            seg(true, flags::RST, CLIENT_ISN + 1 + 5000, 0, b"")
        } else {
            seg(true, flags::ACK, CLIENT_ISN + 1, SERVER_ISN + 1, b"")
        });
        segs.push(data(&hello(if evil { BLOCKED } else { ALLOWED })));
        frames(&segs, f)
    };
    out.push(Case { name: "rst_out_of_window", evil: rst(e, true), twin: rst(t, false), evil_readable: true });

    // A conflicting retransmission while the hello is incomplete: its first
    // segment (holding the name) sent twice, the second copy with the blocked
    // name. The twin: an identical retransmission.
    let (e, t) = next();
    let conflict = |f: Framing, evil: bool| {
        let mut segs = handshake(&[], 64240);
        let good = hello(ALLOWED);
        let bad = hello(BLOCKED);
        let cut = good.len() - 10;
        segs.push(data(&good[..cut]));
        segs.push(data(if evil { &bad[..cut] } else { &good[..cut] }));
        let mut tail = data(&good[cut..]);
        tail.seq = CLIENT_ISN + 1 + cut as u32;
        segs.push(tail);
        frames(&segs, f)
    };
    out.push(Case {
        name: "conflicting_retransmission",
        evil: conflict(e, true),
        twin: conflict(t, false),
        evil_readable: true,
    });

    // A decoy the server never gets (its TTL runs out past the appliance),
    // then the real hello at the same place: judged on the decoy, the flow
    // is forwarded, and the real hello, with other bytes, is dropped. The
    // twin: an identical retransmission.
    let (e, t) = next();
    let ttl = |f: Framing, evil: bool| {
        let mut segs = handshake(&[], 64240);
        segs.push(data(&hello(ALLOWED)));
        segs.push(data(&hello(if evil { BLOCKED } else { ALLOWED })));
        frames(&segs, f)
    };
    out.push(Case {
        name: "decoy_the_server_never_gets",
        evil: ttl(e, true),
        twin: ttl(t, false),
        evil_readable: true,
    });

    // QinQ tags, IPv4 options and Ethernet padding: nothing evasive, read right.
    let (e, t) = next();
    let tagged = |f: Framing, name: &str| {
        let f = Framing { tagged: true, ..f };
        let mut segs = handshake(&[], 64240);
        segs.push(data(&hello(name)));
        frames(&segs, f)
    };
    out.push(Case {
        name: "qinq_ip_options_padding",
        evil: tagged(e, BLOCKED),
        twin: tagged(t, ALLOWED),
        evil_readable: true,
    });
    out
}
