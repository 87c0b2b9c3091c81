//! Packet codecs for the packet path: the flow hash, the checked TCP/IP view
//! ([`TcpFrame`]) and its options, and the resets block-with-reset sends.
//!
//! [`flow_hash`] is the software dispatch step's hash: it reads addresses and
//! ports at fixed offsets (after up to two VLAN tags) and folds them so that both
//! directions of a flow hash the same. It is written by hand rather than through
//! a full header parser because it runs on every packet when the NIC has no RSS,
//! and a full parse would cost more than the forwarding itself.

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// A symmetric hash of a frame's flow: `hash(a->b) == hash(b->a)`.
///
/// TCP and UDP packets that are not fragments hash addresses and ports; other
/// IP packets (fragments included) hash addresses only; non-IP frames give
/// `None` (they carry no flow and stay on the worker that received them).
#[inline]
pub fn flow_hash(frame: &[u8]) -> Option<u32> {
    let (ethertype, l3) = skip_vlans(frame)?;
    match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = frame.get(l3..l3 + 20)?;
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let a = u32::from_be_bytes([ip[12], ip[13], ip[14], ip[15]]);
            let b = u32::from_be_bytes([ip[16], ip[17], ip[18], ip[19]]);
            let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            let ports =
                if !frag && (ip[9] == IPPROTO_TCP || ip[9] == IPPROTO_UDP) { port_pair(frame, l3 + ihl) } else { 0 };
            Some(mix(a ^ b, ports))
        }
        ETHERTYPE_IPV6 => {
            let ip = frame.get(l3..l3 + 40)?;
            let mut x = 0u32;
            for w in ip[8..40].chunks_exact(4) {
                x ^= u32::from_be_bytes([w[0], w[1], w[2], w[3]]);
            }
            // Extension headers are not walked: their flows hash by address only.
            let ports = if ip[6] == IPPROTO_TCP || ip[6] == IPPROTO_UDP { port_pair(frame, l3 + 40) } else { 0 };
            Some(mix(x, ports))
        }
        _ => None,
    }
}

/// The ethertype after any VLAN/QinQ tags, and the offset of the L3 header.
#[inline]
pub fn skip_vlans(frame: &[u8]) -> Option<(u16, usize)> {
    let mut off = ETH_HLEN - 2;
    for _ in 0..3 {
        let et = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
        match et {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => off += 4,
            _ => return Some((et, off + 2)),
        }
    }
    None
}

#[inline]
fn port_pair(frame: &[u8], l4: usize) -> u32 {
    match frame.get(l4..l4 + 4) {
        Some(p) => (u16::from_be_bytes([p[0], p[1]]) ^ u16::from_be_bytes([p[2], p[3]])) as u32,
        None => 0,
    }
}

#[inline]
fn mix(addrs: u32, ports: u32) -> u32 {
    // Fibonacci hashing spreads the xor-folded key over the high bits.
    let k = ((addrs as u64) << 16) ^ ports as u64;
    (k.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as u32
}

/// Which of `n` workers owns a hash (uniform without a division).
#[inline]
pub fn worker_for(hash: u32, n: usize) -> usize {
    ((hash as u64 * n as u64) >> 32) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp4(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, vlan: bool) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&[0u8; 16]);
        f
    }

    #[test]
    fn both_directions_hash_alike() {
        let a = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 40000, 443, false);
        let b = tcp4([10, 0, 0, 2], [10, 0, 0, 1], 443, 40000, false);
        assert_eq!(flow_hash(&a), flow_hash(&b));
        assert!(flow_hash(&a).is_some());
    }

    #[test]
    fn vlan_tag_is_skipped() {
        let plain = tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, false);
        let tagged = tcp4([1, 2, 3, 4], [5, 6, 7, 8], 1, 2, true);
        assert_eq!(flow_hash(&plain), flow_hash(&tagged));
    }

    #[test]
    fn different_flows_spread_over_workers() {
        let mut seen = [0usize; 4];
        for p in 0..4000u16 {
            let f = tcp4([10, 0, 0, 1], [10, 0, 0, 2], 10000 + p, 443, false);
            seen[worker_for(flow_hash(&f).unwrap(), 4)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }

    #[test]
    fn short_and_non_ip_frames_give_none() {
        assert_eq!(flow_hash(&[]), None);
        assert_eq!(flow_hash(&[0u8; 13]), None);
        let mut arp = vec![0u8; 42];
        arp[12] = 0x08;
        arp[13] = 0x06;
        assert_eq!(flow_hash(&arp), None);
        let truncated = &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, false)[..30];
        assert_eq!(flow_hash(truncated), None);
    }

    #[test]
    fn truncated_ports_still_hash_addresses() {
        let f = &tcp4([1, 1, 1, 1], [2, 2, 2, 2], 1, 2, false)[..34];
        assert!(flow_hash(f).is_some());
    }
}

/// TCP flag bits.
pub mod tcp_flags {
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

/// An IP address as stored in flow keys: IPv4 mapped into the low 4 bytes.
pub type Addr = [u8; 16];

/// A TCP segment inside an Ethernet frame, checked once: it borrows the
/// frame, and every offset it keeps was proven to lie inside it, so that no
/// accessor can go out of bounds afterwards (smoltcp's shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpFrame<'a> {
    /// The whole frame.
    bytes: &'a [u8],
    /// Outer VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (see [`tcp_flags`]).
    pub flags: u8,
    /// Window field (unscaled).
    pub window: u16,
    /// Offset of the IP header in the frame.
    l3: usize,
    /// Offset of the TCP header.
    l4: usize,
    /// Offset of the payload.
    payload: usize,
    /// End of the payload (IP total length; Ethernet padding excluded).
    end: usize,
}

impl<'a> TcpFrame<'a> {
    /// Parses a frame; `None` unless it is an unfragmented TCP segment over
    /// IPv4 or IPv6 (no IPv6 extension headers) with consistent lengths.
    pub fn parse(frame: &'a [u8]) -> Option<TcpFrame<'a>> {
        let (ethertype, l3) = skip_vlans(frame)?;
        let vlan = if l3 > ETH_HLEN {
            let tci = u16::from_be_bytes([*frame.get(14)?, *frame.get(15)?]);
            Some(tci & 0x0fff)
        } else {
            None
        };
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        let (ipv6, l4, end) = match ethertype {
            ETHERTYPE_IPV4 => {
                let ip = frame.get(l3..l3 + 20)?;
                if ip[0] >> 4 != 4 || ip[9] != IPPROTO_TCP {
                    return None;
                }
                let ihl = ((ip[0] & 0x0f) as usize) * 4;
                let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
                let frag = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
                if ihl < 20 || frag || total < ihl || l3 + total > frame.len() {
                    return None;
                }
                src[12..].copy_from_slice(&ip[12..16]);
                dst[12..].copy_from_slice(&ip[16..20]);
                (false, l3 + ihl, l3 + total)
            }
            ETHERTYPE_IPV6 => {
                let ip = frame.get(l3..l3 + 40)?;
                if ip[0] >> 4 != 6 || ip[6] != IPPROTO_TCP {
                    return None;
                }
                let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
                if l3 + 40 + plen > frame.len() {
                    return None;
                }
                src.copy_from_slice(&ip[8..24]);
                dst.copy_from_slice(&ip[24..40]);
                (true, l3 + 40, l3 + 40 + plen)
            }
            _ => return None,
        };
        let tcp = frame.get(l4..l4 + 20)?;
        let doff = ((tcp[12] >> 4) as usize) * 4;
        if doff < 20 || l4 + doff > end {
            return None;
        }
        Some(TcpFrame {
            bytes: frame,
            vlan,
            ipv6,
            src,
            dst,
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            ack: u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]),
            flags: tcp[13],
            window: u16::from_be_bytes([tcp[14], tcp[15]]),
            l3,
            l4,
            payload: l4 + doff,
            end,
        })
    }

    /// Payload length.
    pub fn payload_len(&self) -> usize {
        self.end - self.payload
    }

    /// The whole frame.
    pub fn frame(&self) -> &'a [u8] {
        self.bytes
    }

    /// The link-layer header (Ethernet and any VLAN tags).
    pub fn link_header(&self) -> &'a [u8] {
        self.bytes.get(..self.l3).unwrap_or_default()
    }

    /// The TCP payload (Ethernet padding excluded).
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(self.payload..self.end).unwrap_or_default()
    }

    /// Bytes from the IP header to the end of the payload.
    pub fn ip_len(&self) -> usize {
        self.end - self.l3
    }

    /// The TCP options. Malformed options end the walk: what was read
    /// before them is kept.
    pub fn options(&self) -> TcpOptions {
        TcpOptions::parse(self.bytes.get(self.l4 + 20..self.payload).unwrap_or_default())
    }

    /// Whether flag `f` is set.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }
}

/// The TCP options the slow path needs to take a connection over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpOptions {
    /// Maximum segment size (SYN only).
    pub mss: Option<u16>,
    /// Window scale shift (SYN only).
    pub wscale: Option<u8>,
    /// SACK permitted (SYN only).
    pub sack_permitted: bool,
    /// Timestamps: (TSval, TSecr).
    pub timestamps: Option<(u32, u32)>,
}

impl TcpOptions {
    /// Parses the options area of a TCP header.
    fn parse(opts: &[u8]) -> TcpOptions {
        let mut o = TcpOptions::default();
        let mut i = 0;
        while i < opts.len() {
            let kind = opts[i];
            match kind {
                0 => break,
                1 => {
                    i += 1;
                    continue;
                }
                _ => {}
            }
            let Some(&len) = opts.get(i + 1) else { break };
            let len = len as usize;
            if len < 2 || i + len > opts.len() {
                break;
            }
            let body = &opts[i + 2..i + len];
            match (kind, body.len()) {
                (2, 2) => o.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                (3, 1) => o.wscale = Some(body[0].min(14)),
                (4, 0) => o.sack_permitted = true,
                (8, 8) => {
                    let v = u32::from_be_bytes([body[0], body[1], body[2], body[3]]);
                    let e = u32::from_be_bytes([body[4], body[5], body[6], body[7]]);
                    o.timestamps = Some((v, e));
                }
                _ => {}
            }
            i += len;
        }
        o
    }
}

/// An [`Addr`] as a standard address.
pub fn to_ip(a: &Addr, ipv6: bool) -> std::net::IpAddr {
    if ipv6 {
        std::net::IpAddr::V6(std::net::Ipv6Addr::from(*a))
    } else {
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    }
}

/// A RST for the packet `t` (which is being dropped): toward its receiver
/// (same addresses, seq = its seq, which the receiver expects next since the
/// packet never arrives) or toward its sender (addresses swapped, seq = its
/// ack, the next byte the sender expects). Both are exactly in window, so
/// stacks that follow RFC 5961 accept them. VLAN tags are kept.
pub fn build_reset(t: &TcpFrame, toward_sender: bool) -> Vec<u8> {
    let frame = t.bytes;
    let mut out = Vec::with_capacity(t.l3 + 60);
    let (dst_mac, src_mac) = (&frame[0..6], &frame[6..12]);
    if toward_sender {
        out.extend_from_slice(src_mac);
        out.extend_from_slice(dst_mac);
    } else {
        out.extend_from_slice(dst_mac);
        out.extend_from_slice(src_mac);
    }
    out.extend_from_slice(&frame[12..t.l3]);
    let mut seg_len = t.payload_len() as u32;
    if t.has(tcp_flags::SYN) {
        seg_len += 1;
    }
    if t.has(tcp_flags::FIN) {
        seg_len += 1;
    }
    let (src, dst, sp, dp, seq, ack) = if toward_sender {
        (t.dst, t.src, t.dst_port, t.src_port, t.ack, t.seq.wrapping_add(seg_len))
    } else {
        (t.src, t.dst, t.src_port, t.dst_port, t.seq, t.ack)
    };
    let builder = if t.ipv6 {
        etherparse::PacketBuilder::ipv6(src, dst, 64)
    } else {
        let s4 = [src[12], src[13], src[14], src[15]];
        let d4 = [dst[12], dst[13], dst[14], dst[15]];
        etherparse::PacketBuilder::ipv4(s4, d4, 64)
    };
    // Writing into a Vec cannot fail, and a 20-byte header is always in range.
    let _ = builder.tcp(sp, dp, seq, 0).rst().ack(ack).write(&mut out, &[]);
    out
}

#[cfg(test)]
mod tcp_frame_tests {
    use super::*;

    fn frame(vlan: bool, v6: bool, payload: &[u8]) -> Vec<u8> {
        let b = etherparse::PacketBuilder::ethernet2([1; 6], [2; 6]);
        let mut out = Vec::new();
        if v6 {
            let b = if vlan {
                b.single_vlan(7.try_into().unwrap()).ipv6([1; 16], [2; 16], 64)
            } else {
                b.ipv6([1; 16], [2; 16], 64)
            };
            b.tcp(1234, 443, 1000, 500).syn().write(&mut out, payload).unwrap();
        } else {
            let b = if vlan {
                b.single_vlan(7.try_into().unwrap()).ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            } else {
                b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            };
            b.tcp(1234, 443, 1000, 500).ack(77).write(&mut out, payload).unwrap();
        }
        out
    }

    #[test]
    fn parses_v4_v6_and_vlan() {
        let f = frame(false, false, b"hello");
        let t = TcpFrame::parse(&f).unwrap();
        assert_eq!((t.src_port, t.dst_port, t.seq, t.ack, t.vlan), (1234, 443, 1000, 77, None));
        assert_eq!(&f[t.payload..t.end], b"hello");
        assert!(t.has(tcp_flags::ACK) && !t.has(tcp_flags::SYN));
        assert_eq!(to_ip(&t.src, false).to_string(), "10.0.0.1");
        let f = frame(true, true, b"xy");
        let t = TcpFrame::parse(&f).unwrap();
        assert!(t.ipv6 && t.has(tcp_flags::SYN));
        assert_eq!(t.vlan, Some(7));
        assert_eq!(&f[t.payload..t.end], b"xy");
    }

    #[test]
    fn padding_is_not_payload_and_truncation_is_refused() {
        let mut f = frame(false, false, b"");
        f.extend_from_slice(&[0; 6]); // Ethernet padding to 60 bytes
        let t = TcpFrame::parse(&f).unwrap();
        assert_eq!(t.payload_len(), 0);
        let f = frame(false, false, b"0123456789");
        for cut in 0..f.len() {
            assert!(TcpFrame::parse(&f[..cut]).is_none(), "cut at {cut}");
        }
    }
}
