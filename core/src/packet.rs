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
            let ports = match ip[6] {
                IPPROTO_TCP | IPPROTO_UDP => port_pair(frame, l3 + 40),
                // Extension headers before TCP (rare): walked, so that the
                // segment hashes as its flow's other segments do.
                IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH | IPV6_FRAGMENT => match classify(frame) {
                    Layer::Tcp(t) => (t.src_port ^ t.dst_port) as u32,
                    _ => 0,
                },
                _ => 0,
            };
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

/// What a frame carries, as the inspector sorts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layer<'a> {
    /// A whole TCP segment.
    Tcp(TcpFrame<'a>),
    /// A fragment of an IP datagram that may carry TCP or UDP.
    Fragment(IpFragment<'a>),
    /// A whole UDP datagram.
    Udp(UdpFrame<'a>),
    /// Anything else (not IP, not TCP, malformed), forwarded untouched.
    Other,
}

/// IPv6 extension headers walked on the way to the upper-layer header.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;

/// Sorts a frame: a TCP segment (VLAN/QinQ tags skipped, IPv4 options and
/// IPv6 extension headers walked, Ethernet padding excluded), a fragment,
/// or anything else. Every offset is checked against the frame.
#[inline]
pub fn classify(frame: &[u8]) -> Layer<'_> {
    // `?` as an early `Layer::Other`: the result is built in place, not
    // wrapped in an Option and copied out of it (this runs on every packet).
    macro_rules! ok {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Layer::Other,
            }
        };
    }
    let (ethertype, l3) = ok!(skip_vlans(frame));
    let vlan = if l3 > ETH_HLEN {
        let tci = u16::from_be_bytes([*ok!(frame.get(14)), *ok!(frame.get(15))]);
        Some(tci & 0x0fff)
    } else {
        None
    };
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    let (ipv6, l4, end) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ip = ok!(frame.get(l3..l3 + 20));
            if ip[0] >> 4 != 4 {
                return Layer::Other;
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
            if ihl < 20 || total < ihl || l3 + total > frame.len() {
                return Layer::Other;
            }
            src[12..].copy_from_slice(&ip[12..16]);
            dst[12..].copy_from_slice(&ip[16..20]);
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                if ip[9] != IPPROTO_TCP && ip[9] != IPPROTO_UDP {
                    return Layer::Other;
                }
                let key = FragmentKey { src, dst, id: u16::from_be_bytes([ip[4], ip[5]]) as u32, ipv6: false };
                return Layer::Fragment(IpFragment {
                    bytes: frame,
                    key,
                    offset: u32::from(frag & 0x1fff) * 8,
                    more: frag & 0x2000 != 0,
                    l3,
                    unfragmentable: l3 + ihl,
                    next_header_at: 9,
                    next_header: ip[9],
                    data: l3 + ihl,
                    end: l3 + total,
                });
            }
            if ip[9] == IPPROTO_UDP {
                return udp(frame, vlan, false, src, dst, l3, l3 + ihl, l3 + total);
            }
            if ip[9] != IPPROTO_TCP {
                return Layer::Other;
            }
            (false, l3 + ihl, l3 + total)
        }
        ETHERTYPE_IPV6 => {
            let ip = ok!(frame.get(l3..l3 + 40));
            if ip[0] >> 4 != 6 {
                return Layer::Other;
            }
            let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
            let end = l3 + 40 + plen;
            if end > frame.len() {
                return Layer::Other;
            }
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            // Walk the extension headers: each names the next; the walk is
            // bounded by the payload, which every header takes 8 bytes of at least.
            let mut next = ip[6];
            let mut next_at = l3 + 6;
            let mut at = l3 + 40;
            loop {
                match next {
                    IPPROTO_TCP => break,
                    IPPROTO_UDP => return udp(frame, vlan, true, src, dst, l3, at, end),
                    IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH => {
                        let h = ok!(frame.get(at..at + 2).filter(|_| at + 8 <= end));
                        let len = if next == IPV6_AUTH { (h[1] as usize + 2) * 4 } else { (h[1] as usize + 1) * 8 };
                        next = h[0];
                        next_at = at;
                        at += len;
                    }
                    IPV6_FRAGMENT => {
                        let h = ok!(frame.get(at..at + 8).filter(|_| at + 8 <= end));
                        let off_m = u16::from_be_bytes([h[2], h[3]]);
                        let (offset, more) = (u32::from(off_m >> 3) * 8, off_m & 1 != 0);
                        if offset == 0 && !more {
                            // An atomic fragment (RFC 6946): a whole datagram.
                            next = h[0];
                            next_at = at;
                            at += 8;
                            continue;
                        }
                        // The fragmentable part may start with more extension headers.
                        if !matches!(h[0], IPPROTO_TCP | IPPROTO_UDP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_AUTH) {
                            return Layer::Other;
                        }
                        let key =
                            FragmentKey { src, dst, id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]), ipv6: true };
                        return Layer::Fragment(IpFragment {
                            bytes: frame,
                            key,
                            offset,
                            more,
                            l3,
                            unfragmentable: at,
                            next_header_at: next_at - l3,
                            next_header: h[0],
                            data: at + 8,
                            end,
                        });
                    }
                    _ => return Layer::Other,
                }
            }
            (true, at, end)
        }
        _ => return Layer::Other,
    };
    let tcp = ok!(frame.get(l4..l4 + 20));
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < 20 || l4 + doff > end {
        return Layer::Other;
    }
    Layer::Tcp(TcpFrame {
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

/// A UDP datagram's view, checked once like [`TcpFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpFrame<'a> {
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
    l3: usize,
    l4: usize,
    end: usize,
}

impl<'a> UdpFrame<'a> {
    /// The UDP payload.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(self.l4 + 8..self.end).unwrap_or_default()
    }

    /// The whole frame.
    pub fn frame(&self) -> &'a [u8] {
        self.bytes
    }

    /// The frame's IP packet (header on).
    pub fn ip_packet(&self) -> &'a [u8] {
        self.bytes.get(self.l3..self.end).unwrap_or_default()
    }

    /// The link-layer header.
    pub fn link_header(&self) -> &'a [u8] {
        self.bytes.get(..self.l3).unwrap_or_default()
    }

    /// Whether the UDP checksum holds, as the receiver checks it (IPv4's
    /// optional 0 holds; IPv6 has no optional checksum).
    pub fn checksum_ok(&self) -> bool {
        let Some(datagram) = self.bytes.get(self.l4..self.end) else { return false };
        if !self.ipv6 && datagram[6..8] == [0, 0] {
            return true;
        }
        fold(self.pseudo_sum(datagram.len()) + sum(0, datagram)) == 0xffff
    }

    fn pseudo_sum(&self, udp_len: usize) -> u64 {
        let (src, dst) = if self.ipv6 { (&self.src[..], &self.dst[..]) } else { (&self.src[12..], &self.dst[12..]) };
        sum(sum(0, src), dst) + u64::from(IPPROTO_UDP) + udp_len as u64
    }

    /// The same frame with `payload` as the UDP payload: the IP and UDP
    /// lengths, the IPv4 header checksum and the UDP checksum made for it
    /// (an IPv4 datagram sent without a checksum stays without). Link-layer
    /// padding after the datagram is not kept.
    pub fn with_payload(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let udp_len = u16::try_from(8 + payload.len()).ok()?;
        let mut out = Vec::with_capacity(self.l4 + 8 + payload.len());
        out.extend_from_slice(self.bytes.get(..self.l4 + 8)?);
        out.extend_from_slice(payload);
        let ip_len = self.l4 - self.l3 + usize::from(udp_len);
        if self.ipv6 {
            let plen = u16::try_from(ip_len - 40).ok()?;
            out[self.l3 + 4..self.l3 + 6].copy_from_slice(&plen.to_be_bytes());
        } else {
            let total = u16::try_from(ip_len).ok()?;
            out[self.l3 + 2..self.l3 + 4].copy_from_slice(&total.to_be_bytes());
            out[self.l3 + 10..self.l3 + 12].copy_from_slice(&[0, 0]);
            let c = !fold(sum(0, &out[self.l3..self.l4]));
            out[self.l3 + 10..self.l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let had_checksum = self.ipv6 || self.bytes[self.l4 + 6..self.l4 + 8] != [0, 0];
        out[self.l4 + 4..self.l4 + 6].copy_from_slice(&udp_len.to_be_bytes());
        out[self.l4 + 6..self.l4 + 8].copy_from_slice(&[0, 0]);
        if had_checksum {
            let c = !fold(self.pseudo_sum(usize::from(udp_len)) + sum(0, &out[self.l4..]));
            // A computed 0 is sent as all ones (RFC 768).
            let c = if c == 0 { 0xffff } else { c };
            out[self.l4 + 6..self.l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        Some(out)
    }
}

#[allow(clippy::too_many_arguments)]
#[inline]
fn udp(
    frame: &[u8],
    vlan: Option<u16>,
    ipv6: bool,
    src: Addr,
    dst: Addr,
    l3: usize,
    l4: usize,
    end: usize,
) -> Layer<'_> {
    let Some(h) = frame.get(l4..l4 + 8).filter(|_| l4 + 8 <= end) else { return Layer::Other };
    let len = u16::from_be_bytes([h[4], h[5]]) as usize;
    // The UDP length bounds the payload (a jumbogram's 0 is not taken).
    if len < 8 || l4 + len > end {
        return Layer::Other;
    }
    Layer::Udp(UdpFrame {
        bytes: frame,
        vlan,
        ipv6,
        src,
        dst,
        src_port: u16::from_be_bytes([h[0], h[1]]),
        dst_port: u16::from_be_bytes([h[2], h[3]]),
        l3,
        l4,
        end: l4 + len,
    })
}

/// An ICMP (IPv4) or ICMPv6 port unreachable for the datagram `u`, from its
/// destination back to its sender, quoting it as RFC 792 / RFC 4443 ask
/// (the IP header and the first 8 bytes; for ICMPv6 as much as fits in 1280).
pub fn build_port_unreachable(u: &UdpFrame) -> Vec<u8> {
    let frame = u.bytes;
    let mut out = Vec::with_capacity(u.l3 + 96);
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..u.l3]);
    let ip = u.ip_packet();
    if u.ipv6 {
        let quoted = &ip[..ip.len().min(1280 - 48)];
        let b = etherparse::PacketBuilder::ipv6(u.dst, u.src, 64)
            .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(etherparse::icmpv6::DestUnreachableCode::Port));
        let _ = b.write(&mut out, quoted);
    } else {
        let ihl = usize::from(ip.first().map_or(5, |b| b & 0x0f)) * 4;
        let quoted = &ip[..ip.len().min(ihl + 8)];
        let s4 = [u.dst[12], u.dst[13], u.dst[14], u.dst[15]];
        let d4 = [u.src[12], u.src[13], u.src[14], u.src[15]];
        let b = etherparse::PacketBuilder::ipv4(s4, d4, 64)
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(etherparse::icmpv4::DestUnreachableHeader::Port));
        let _ = b.write(&mut out, quoted);
    }
    out
}

/// Which datagram a fragment belongs to (RFC 791 / RFC 8200: addresses and
/// identification; the protocol is TCP for every fragment kept).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FragmentKey {
    /// Source address.
    pub src: Addr,
    /// Destination address.
    pub dst: Addr,
    /// Identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// IPv6 (else IPv4).
    pub ipv6: bool,
}

/// One IP fragment, checked once like [`TcpFrame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpFragment<'a> {
    bytes: &'a [u8],
    /// Its datagram.
    pub key: FragmentKey,
    /// Where its data goes in the datagram's fragmentable part, in bytes.
    pub offset: u32,
    /// More fragments follow (MF / M flag).
    pub more: bool,
    /// Offset of the IP header.
    l3: usize,
    /// End of the part every fragment repeats: the IPv4 header, or the IPv6
    /// header and the extension headers before the Fragment header.
    unfragmentable: usize,
    /// Offset from `l3` of the Next Header (or Protocol) byte that names
    /// the Fragment header (IPv6) or the protocol (IPv4).
    next_header_at: usize,
    /// What the fragmentable part starts with.
    next_header: u8,
    /// Offset of the fragment's data.
    data: usize,
    /// End of its data.
    end: usize,
}

impl<'a> IpFragment<'a> {
    /// The whole frame.
    pub fn frame(&self) -> &'a [u8] {
        self.bytes
    }

    /// The fragment's data.
    pub fn data(&self) -> &'a [u8] {
        self.bytes.get(self.data..self.end).unwrap_or_default()
    }

    /// Whether its IPv4 header checksum holds (IPv6 has none).
    pub fn header_checksum_ok(&self) -> bool {
        self.key.ipv6 || self.bytes.get(self.l3..self.unfragmentable).is_some_and(|h| fold(sum(0, h)) == 0xffff)
    }

    /// The datagram this fragment (the one at offset 0) heads, rebuilt with
    /// `data` as its whole fragmentable part: the link layer and the
    /// unfragmentable headers as this fragment has them, lengths fixed, the
    /// Fragment header (or MF and offset) gone.
    pub fn reassemble(&self, data: &[u8]) -> Option<Vec<u8>> {
        let head = self.bytes.get(..self.unfragmentable)?;
        let mut out = Vec::with_capacity(head.len() + data.len());
        out.extend_from_slice(head);
        out.extend_from_slice(data);
        let ip = out.get_mut(self.l3..)?;
        if self.key.ipv6 {
            let plen = u16::try_from(self.unfragmentable - self.l3 - 40 + data.len()).ok()?;
            ip[4..6].copy_from_slice(&plen.to_be_bytes());
            *ip.get_mut(self.next_header_at)? = self.next_header;
        } else {
            let ihl = self.unfragmentable - self.l3;
            let total = u16::try_from(ihl + data.len()).ok()?;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[6] &= 0x40; // DF kept; MF and the offset cleared
            ip[7] = 0;
            ip[10] = 0;
            ip[11] = 0;
            let c = !fold(sum(0, &ip[..ihl]));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
        }
        Some(out)
    }
}

/// The ones' complement sum of `bytes` (as 16-bit big-endian words, an odd
/// last byte padded), added to `acc`, unfolded.
///
/// Read as little-endian 32-bit words into a 64-bit sum, which the compiler
/// turns into vector adds (four to eight bytes a cycle more than 16-bit
/// big-endian words): a 32-bit word is its two 16-bit halves modulo 0xffff,
/// and a ones' complement sum of byte-swapped words is the byte-swapped sum
/// (RFC 1071, 2(B)), swapped back once at the end.
fn sum(acc: u64, bytes: &[u8]) -> u64 {
    let mut quads = bytes.chunks_exact(4);
    let mut le = 0u64;
    for q in &mut quads {
        le += u64::from(u32::from_le_bytes([q[0], q[1], q[2], q[3]]));
    }
    let mut pairs = quads.remainder().chunks_exact(2);
    for p in &mut pairs {
        le += u64::from(u16::from_le_bytes([p[0], p[1]]));
    }
    if let [last] = pairs.remainder() {
        le += u64::from(*last);
    }
    acc + u64::from(fold(le).swap_bytes())
}

/// The Internet checksum (RFC 1071) of the concatenation of `parts`, of any
/// lengths: a part that starts at an odd offset is summed as if it started
/// at an even one and its sum byte-swapped (RFC 1071, 2(B)). A payload read
/// in place out of a ring may be cut at any byte.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut acc = 0u64;
    let mut odd = false;
    for p in parts {
        let s = fold(sum(0, p));
        acc += u64::from(if odd { s.swap_bytes() } else { s });
        odd ^= p.len() % 2 == 1;
    }
    !fold(acc)
}

fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

impl<'a> TcpFrame<'a> {
    /// Parses a frame; `None` unless it is a TCP segment over IPv4 or IPv6
    /// (extension headers walked), not a fragment, with consistent lengths.
    #[inline]
    pub fn parse(frame: &'a [u8]) -> Option<TcpFrame<'a>> {
        match classify(frame) {
            Layer::Tcp(t) => Some(t),
            _ => None,
        }
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

    /// Whether the IPv4 header checksum and the TCP checksum hold, as the
    /// receiving stack checks them.
    pub fn checksums_ok(&self) -> bool {
        let Some(segment) = self.bytes.get(self.l4..self.end) else { return false };
        let mut acc = sum(0, segment);
        if self.ipv6 {
            acc = sum(acc, &self.src);
            acc = sum(acc, &self.dst);
        } else {
            let Some(header) = self.bytes.get(self.l3..self.l4) else { return false };
            if fold(sum(0, header)) != 0xffff {
                return false;
            }
            acc = sum(acc, &self.src[12..]);
            acc = sum(acc, &self.dst[12..]);
        }
        acc += u64::from(IPPROTO_TCP) + segment.len() as u64;
        fold(acc) == 0xffff
    }

    /// The sequence number after this segment (payload, SYN and FIN count).
    pub fn seq_end(&self) -> u32 {
        let flags = u32::from(self.has(tcp_flags::SYN)) + u32::from(self.has(tcp_flags::FIN));
        self.seq.wrapping_add(self.payload_len() as u32 + flags)
    }

    /// The sequence number of the first payload byte (a SYN takes one).
    pub fn data_seq(&self) -> u32 {
        self.seq.wrapping_add(u32::from(self.has(tcp_flags::SYN)))
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
    /// A TCP-MD5 signature (RFC 2385).
    pub md5: bool,
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
                (19, 16) => o.md5 = true,
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

    /// RFC 1071's definition, word by word.
    fn sum_by_words(mut acc: u64, bytes: &[u8]) -> u64 {
        let mut words = bytes.chunks_exact(2);
        for w in &mut words {
            acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
        }
        if let [last] = words.remainder() {
            acc += u64::from(*last) << 8;
        }
        acc
    }

    #[test]
    fn the_fast_sum_is_the_internet_checksum() {
        // RFC 1071's example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        assert_eq!(fold(sum(0, &[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])), 0xddf2);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut bytes = Vec::new();
        for len in 0..2100 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(if len % 7 == 0 { 0xff } else { x as u8 });
            let acc = x >> 40;
            assert_eq!(fold(sum(acc, &bytes)), fold(sum_by_words(acc, &bytes)), "{len} bytes");
        }
        assert_eq!(fold(sum(0, &[0xff; 1500])), fold(sum_by_words(0, &[0xff; 1500])));
        assert_eq!(internet_checksum(&[&[], &[0; 3]]), 0xffff);
    }

    #[test]
    fn parts_of_any_length_sum_as_their_concatenation() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let parts: Vec<Vec<u8>> =
                (0..next() % 5).map(|_| (0..next() % 40).map(|_| next() as u8).collect()).collect();
            let whole: Vec<u8> = parts.concat();
            let refs: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            assert_eq!(internet_checksum(&refs), !fold(sum_by_words(0, &whole)), "{parts:?}");
        }
    }

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
