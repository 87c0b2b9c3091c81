//! Between frames and the TCP endpoints: a decrypted flow's addresses as a
//! template that makes frames toward either end, and segments read out of
//! frames. Sans-IO, like everything the slow path's lcores drive.

use tlsgate_core::packet::{internet_checksum, tcp_flags, Addr, TcpFrame};

use crate::tcp::{flags, Segment};

/// How a decrypted flow's frames look: the link-layer header as the client's
/// frames carry it (MACs, VLAN tags, EtherType), and both endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTemplate {
    /// Link-layer header of a frame toward the server (as the client sent it).
    l2_to_server: Vec<u8>,
    /// The same toward the client (MACs swapped).
    l2_to_client: Vec<u8>,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// The client's address.
    pub client_ip: Addr,
    /// The server's address.
    pub server_ip: Addr,
    /// The client's port.
    pub client_port: u16,
    /// The server's port.
    pub server_port: u16,
}

/// Hop limit of the frames the slow path makes.
const TTL: u8 = 64;

impl FlowTemplate {
    /// From a frame the client sent (parsed as `t`).
    pub fn from_client_frame(t: &TcpFrame) -> FlowTemplate {
        let l2 = t.link_header().to_vec();
        let mut swapped = l2.clone();
        swapped[0..6].copy_from_slice(&l2[6..12]);
        swapped[6..12].copy_from_slice(&l2[0..6]);
        FlowTemplate {
            l2_to_server: l2,
            l2_to_client: swapped,
            ipv6: t.ipv6,
            client_ip: t.src,
            server_ip: t.dst,
            client_port: t.src_port,
            server_port: t.dst_port,
        }
    }

    /// The whole frame carrying `seg` toward the client (else toward the server).
    pub fn frame(&self, to_client: bool, seg: &Segment) -> Vec<u8> {
        let (l2, src, dst) = self.ends(to_client);
        build_frame(l2, self.ipv6, src, dst, seg)
    }

    /// The headers of the frame carrying `seg`'s header fields and `payload`
    /// (read in place: one or two slices), written over `out`; the payload
    /// follows them in the frame, copied once, where it is sent.
    pub fn headers_into(&self, to_client: bool, seg: &Segment, payload: [&[u8]; 2], out: &mut Vec<u8>) {
        let (l2, src, dst) = self.ends(to_client);
        headers_into(l2, self.ipv6, src, dst, seg, payload, out);
    }

    /// Link-layer header, source and destination toward the client (else the server).
    fn ends(&self, to_client: bool) -> (&[u8], (Addr, u16), (Addr, u16)) {
        let (client, server) = ((self.client_ip, self.client_port), (self.server_ip, self.server_port));
        if to_client {
            (&self.l2_to_client, server, client)
        } else {
            (&self.l2_to_server, client, server)
        }
    }
}

/// An Ethernet frame: `l2` (up to and including the EtherType), then IP and TCP made from `seg`.
pub fn build_frame(l2: &[u8], ipv6: bool, src: (Addr, u16), dst: (Addr, u16), seg: &Segment) -> Vec<u8> {
    let mut out = Vec::new();
    frame_into(l2, ipv6, src, dst, seg, &mut out);
    out
}

/// [`build_frame`] written over `out`. The headers are written by hand, not
/// by a packet builder: this runs for every segment of every decrypted
/// session, and a builder's per-frame option list and byte-wise checksum
/// were a tenth of the slow path's time in bulk transfers. IPv4: no options,
/// DF set, ID 0; TCP: a timestamps option when the segment has one (kind 8,
/// then two end-of-options bytes to the next 32-bit boundary).
pub fn frame_into(l2: &[u8], ipv6: bool, src: (Addr, u16), dst: (Addr, u16), seg: &Segment, out: &mut Vec<u8>) {
    headers_into(l2, ipv6, src, dst, seg, [&seg.payload, &[]], out);
    out.extend_from_slice(&seg.payload);
}

/// The headers of [`frame_into`]'s frame for `seg`'s header fields and
/// `payload` (its bytes in order, in two slices as a ring holds them; `seg`'s
/// own payload is not read), without the payload.
pub fn headers_into(
    l2: &[u8],
    ipv6: bool,
    src: (Addr, u16),
    dst: (Addr, u16),
    seg: &Segment,
    payload: [&[u8]; 2],
    out: &mut Vec<u8>,
) {
    let opts = if seg.timestamps.is_some() { 12 } else { 0 };
    let tcp_len = 20 + opts + payload[0].len() + payload[1].len();
    out.clear();
    out.reserve(l2.len() + 40 + tcp_len);
    out.extend_from_slice(l2);
    let ip_at = out.len();
    if ipv6 {
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&(tcp_len as u16).to_be_bytes());
        out.extend_from_slice(&[IPPROTO_TCP, TTL]);
        out.extend_from_slice(&src.0);
        out.extend_from_slice(&dst.0);
    } else {
        out.extend_from_slice(&[0x45, 0]);
        out.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0x40, 0, TTL, IPPROTO_TCP, 0, 0]);
        out.extend_from_slice(&src.0[12..]);
        out.extend_from_slice(&dst.0[12..]);
        let c = internet_checksum(&[&out[ip_at..]]);
        out[ip_at + 10..ip_at + 12].copy_from_slice(&c.to_be_bytes());
    }
    let tcp_at = out.len();
    out.extend_from_slice(&src.1.to_be_bytes());
    out.extend_from_slice(&dst.1.to_be_bytes());
    out.extend_from_slice(&seg.seq.to_be_bytes());
    let ack = if seg.flags & flags::ACK != 0 { seg.ack } else { 0 };
    out.extend_from_slice(&ack.to_be_bytes());
    let f = seg.flags & (flags::FIN | flags::SYN | flags::RST | flags::PSH | flags::ACK);
    out.extend_from_slice(&[(((20 + opts) / 4) << 4) as u8, f]);
    out.extend_from_slice(&seg.window.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    if let Some((val, ecr)) = seg.timestamps {
        out.extend_from_slice(&[8, 10]);
        out.extend_from_slice(&val.to_be_bytes());
        out.extend_from_slice(&ecr.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
    }
    let (s, d) = if ipv6 { (&src.0[..], &dst.0[..]) } else { (&src.0[12..], &dst.0[12..]) };
    let len = (tcp_len as u32).to_be_bytes();
    let pseudo: &[u8] =
        if ipv6 { &[len[0], len[1], len[2], len[3], 0, 0, 0, IPPROTO_TCP] } else { &[0, IPPROTO_TCP, len[2], len[3]] };
    // The payload's first slice may end at an odd byte (a ring wraps anywhere).
    let c = internet_checksum(&[s, d, pseudo, &out[tcp_at..], payload[0], payload[1]]);
    out[tcp_at + 16..tcp_at + 18].copy_from_slice(&c.to_be_bytes());
}

const IPPROTO_TCP: u8 = 6;

/// The segment a frame carries, for a TCP endpoint.
pub fn segment_of(t: &TcpFrame) -> Segment {
    let mut seg = Segment::default();
    header_into(t, &mut seg);
    seg.payload.extend_from_slice(t.payload());
    seg
}

/// The segment's header fields into `seg`, its payload left empty (for an
/// endpoint that reads the payload in place, out of the frame).
pub fn header_into(t: &TcpFrame, seg: &mut Segment) {
    seg.seq = t.seq;
    seg.ack = t.ack;
    seg.flags = t.flags & (tcp_flags::FIN | tcp_flags::SYN | tcp_flags::RST | tcp_flags::PSH | tcp_flags::ACK);
    seg.window = t.window;
    seg.timestamps = t.options().timestamps;
    seg.sack.clear();
    seg.payload.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_frame(vlan: bool) -> Vec<u8> {
        let seg = Segment {
            seq: 1000,
            ack: 5000,
            flags: flags::ACK | flags::PSH,
            window: 512,
            timestamps: Some((7, 9)),
            sack: Vec::new(),
            payload: b"hello".to_vec(),
        };
        let mut l2 = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        if vlan {
            l2.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        l2.extend_from_slice(&[0x08, 0x00]);
        let mut c = [0u8; 16];
        c[12..].copy_from_slice(&[10, 0, 0, 1]);
        let mut s = [0u8; 16];
        s[12..].copy_from_slice(&[10, 0, 0, 2]);
        build_frame(&l2, false, (c, 40000), (s, 443), &seg)
    }

    #[test]
    fn frames_toward_the_client_swap_macs_addresses_and_ports_and_keep_the_vlan() {
        for vlan in [false, true] {
            let f = client_frame(vlan);
            let t = TcpFrame::parse(&f).expect("a TCP frame");
            let seg = segment_of(&t);
            assert_eq!((seg.seq, seg.ack, seg.window, seg.timestamps), (1000, 5000, 512, Some((7, 9))));
            assert_eq!(seg.payload, b"hello");
            let tpl = FlowTemplate::from_client_frame(&t);
            let back = tpl.frame(true, &seg);
            let b = TcpFrame::parse(&back).expect("a TCP frame");
            assert_eq!((b.src, b.dst, b.src_port, b.dst_port), (t.dst, t.src, 443, 40000));
            assert_eq!(&back[0..6], &f[6..12]);
            assert_eq!(&back[6..12], &f[0..6]);
            assert_eq!(b.vlan, t.vlan);
            assert_eq!(segment_of(&b), seg);
            // Toward the server it is the client's frame again.
            assert_eq!(tpl.frame(false, &seg), f);
        }
    }

    /// The frames etherparse's packet builder makes, as the reference.
    fn etherparse_frame(l2: &[u8], ipv6: bool, src: (Addr, u16), dst: (Addr, u16), seg: &Segment) -> Vec<u8> {
        use etherparse::{PacketBuilder, TcpOptionElement};
        let builder = if ipv6 {
            PacketBuilder::ipv6(src.0, dst.0, TTL)
        } else {
            let v4 = |a: Addr| [a[12], a[13], a[14], a[15]];
            PacketBuilder::ipv4(v4(src.0), v4(dst.0), TTL)
        };
        let mut tcp = builder.tcp(src.1, dst.1, seg.seq, seg.window);
        for (flag, set) in [(flags::ACK, 0), (flags::SYN, 1), (flags::FIN, 2), (flags::RST, 3), (flags::PSH, 4)] {
            if seg.flags & flag != 0 {
                tcp = match set {
                    0 => tcp.ack(seg.ack),
                    1 => tcp.syn(),
                    2 => tcp.fin(),
                    3 => tcp.rst(),
                    _ => tcp.psh(),
                };
            }
        }
        let mut out = l2.to_vec();
        match seg.timestamps {
            Some((val, ecr)) => {
                tcp.options(&[TcpOptionElement::Timestamp(val, ecr)]).unwrap().write(&mut out, &seg.payload)
            }
            None => tcp.write(&mut out, &seg.payload),
        }
        .unwrap();
        out
    }

    #[test]
    fn hand_written_frames_are_byte_for_byte_what_etherparse_builds() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out = Vec::new();
        for i in 0..2000 {
            let r = next();
            let ipv6 = r & 1 == 1;
            let mut l2 = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
            if r & 2 != 0 {
                l2.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
            }
            l2.extend_from_slice(if ipv6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
            let mut a = [0u8; 16];
            let mut b = [0u8; 16];
            a.iter_mut().chain(b.iter_mut()).for_each(|x| *x = next() as u8);
            let seg = Segment {
                seq: next() as u32,
                ack: next() as u32,
                flags: (next() as u8) & (flags::FIN | flags::SYN | flags::RST | flags::PSH | flags::ACK),
                window: next() as u16,
                timestamps: (r & 4 != 0).then(|| (next() as u32, next() as u32)),
                sack: Vec::new(),
                payload: (0..(next() % 1461) as usize).map(|_| next() as u8).collect(),
            };
            let src = (a, next() as u16);
            let dst = (b, next() as u16);
            let want = etherparse_frame(&l2, ipv6, src, dst, &seg);
            frame_into(&l2, ipv6, src, dst, &seg, &mut out);
            assert_eq!(out, want, "frame {i}: {seg:?} ipv6 {ipv6}");
            let t = TcpFrame::parse(&out).expect("a TCP frame");
            assert!(t.checksums_ok(), "frame {i}");
            assert_eq!(segment_of(&t).payload, seg.payload);
            // Headers for a payload read in place, cut anywhere (odd cuts too):
            // with the two parts after them, the same frame.
            let cut = next() as usize % (seg.payload.len() + 1);
            let (p, q) = seg.payload.split_at(cut);
            let header_only = Segment { payload: b"not read".to_vec(), ..seg.clone() };
            headers_into(&l2, ipv6, src, dst, &header_only, [p, q], &mut out);
            out.extend_from_slice(p);
            out.extend_from_slice(q);
            assert_eq!(out, want, "frame {i}, its payload cut at {cut}");
        }
    }
}
